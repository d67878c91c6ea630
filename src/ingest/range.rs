//! Reading a stretch of a stream again, outside any consumer group: the
//! entries after one position up to another, decoded, with proof that
//! Redis still holds all of them (a stateful session taken over from
//! another instance replays what it missed from here).

use std::sync::Arc;

use redis::{RedisResult, Value};

use super::replies;
use super::{RedisConn, StreamId};
use crate::envelope::{Envelope, Schemas};

/// Why a stretch cannot be replayed whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RangeError {
    /// Entries after `after` were trimmed or lost: a replay would have a hole.
    #[error("stream '{stream}' no longer holds every entry after {after}")]
    Gone {
        /// The stream.
        stream: String,
        /// The position the stretch starts after.
        after: StreamId,
    },
    /// More entries than a replay may carry.
    #[error("stream '{stream}' has more than {max} entries to replay")]
    TooLong {
        /// The stream.
        stream: String,
        /// The limit.
        max: usize,
    },
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The entries of `stream` after `after` up to `upto` (both positions as
/// the fan-out recorded them), decoded; invalid entries are skipped (their
/// reader dead-lettered them). At most `max` entries.
pub(crate) async fn entries_between(
    conn: &mut RedisConn,
    stream: &str,
    after: StreamId,
    upto: StreamId,
    max: usize,
    schemas: &Arc<Schemas>,
) -> Result<Vec<(StreamId, Envelope)>, RangeError> {
    if upto <= after {
        return Ok(Vec::new());
    }
    if !holds_everything_after(conn, stream, after).await? {
        return Err(RangeError::Gone { stream: stream.to_string(), after });
    }
    let reply: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg(format!("({after}"))
        .arg(upto.to_string())
        .arg("COUNT")
        .arg(max + 1)
        .query_async(conn)
        .await?;
    let read = replies::from_range_reply(reply);
    if read.len() > max {
        return Err(RangeError::TooLong { stream: stream.to_string(), max });
    }
    let decoded = read.ids.iter().enumerate().filter_map(|(i, &id)| {
        let fields = read.block.fields(i).to_owned();
        Envelope::from_stream_fields(fields.iter(), schemas).ok().map(|e| (id, e))
    });
    Ok(decoded.collect())
}

/// Whether nothing after `after` was deleted or trimmed (Redis 7's
/// `max-deleted-entry-id`), and the stream still has `after` itself or
/// anything older (a stream recreated empty holds neither).
async fn holds_everything_after(conn: &mut RedisConn, stream: &str, after: StreamId) -> RedisResult<bool> {
    let info: RedisResult<Value> = redis::cmd("XINFO").arg("STREAM").arg(stream).query_async(conn).await;
    let fields = match info {
        Ok(v) => replies::pairs(v),
        Err(e) if e.code() == Some("ERR") => return Ok(after == StreamId::ZERO),
        Err(e) => return Err(e),
    };
    let id_of = |name: &str| {
        fields.iter().find(|(k, _)| k == name).and_then(|(_, v)| replies::text(v.clone())).and_then(|t| t.parse().ok())
    };
    let max_deleted: StreamId = id_of("max-deleted-entry-id").unwrap_or(StreamId::ZERO);
    if max_deleted > after {
        return Ok(false);
    }
    let reply: Value =
        redis::cmd("XRANGE").arg(stream).arg("-").arg(after.to_string()).arg("COUNT").arg(1).query_async(conn).await?;
    Ok(after == StreamId::ZERO || !replies::from_range_reply(reply).is_empty())
}

impl crate::fault::Blame for RangeError {
    fn fault(&self) -> crate::fault::Fault {
        match self {
            RangeError::Redis(_) | RangeError::Gone { .. } => crate::fault::Fault::Redis,
            RangeError::TooLong { .. } => crate::fault::Fault::Client,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            RangeError::Gone { .. } => "gone",
            RangeError::TooLong { .. } => "too_long",
            RangeError::Redis(_) => "redis",
        }
    }
}
