//! The one XADD the sidecar itself issues: an envelope's flat fields at the
//! end of its stream, trimmed with `MAXLEN ~`. The publisher and the spool's
//! flusher both append this way, so a spooled event lands exactly as it
//! would have without the outage.

use redis::{RedisError, RetryMethod};

use crate::envelope::Envelope;

use super::RedisConn;

/// XADD of `envelope` to `stream`, capped at about `maxlen` entries;
/// returns the new entry's id.
pub(super) async fn append(
    conn: &RedisConn,
    stream: &str,
    maxlen: usize,
    envelope: &Envelope,
) -> Result<String, RedisError> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("MAXLEN").arg("~").arg(maxlen).arg("*");
    for (k, v) in envelope.to_stream_fields() {
        cmd.arg(k).arg(v);
    }
    cmd.query_async::<String>(&mut conn.clone()).await
}

/// True when the failure means "Redis does not answer now" (connection
/// refused or dropped, a timeout, loading, a failover, out of memory), so the
/// same XADD will succeed later and the event is worth keeping. False for a
/// refusal that retrying cannot fix (a key of another type, an ACL denial):
/// holding such an event would block every one behind it.
pub(crate) fn is_unavailable(e: &RedisError) -> bool {
    if e.code() == Some("OOM") {
        return true;
    }
    !matches!(e.retry_method(), RetryMethod::NoRetry)
}
