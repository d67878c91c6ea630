//! What the instances before this one delivered: the `event_id`s a stream
//! received within the idempotency window before this instance's group on
//! it existed (CONTRACT section 5: an `event_id` within 5 minutes is
//! delivered once). A new instance (a rollout's replacement) starts its
//! groups at the streams' ends; without these, a publisher's retry of an
//! event the old instances delivered would reach the clients that moved
//! over (stateful sessions among them, in the middle of their session) a
//! second time.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{RedisResult, Value};

use super::{replies, RedisConn, StreamId};
use crate::envelope::Pending;

/// Entries read per XREVRANGE.
const PAGE: usize = 1000;

/// How far back a new instance learns the event ids its streams hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recent {
    /// The idempotency window (`dedupe_window_seconds`).
    pub window: Duration,
    /// At most this many ids per stream (`dedupe_max_entries`).
    pub max_entries: usize,
}

/// The event ids of `stream` up to `upto` (where the group started) and
/// appended within `recent.window` of now, newest first, each with when it
/// was appended (its entry id's milliseconds, as an instant of this
/// clock). An entry whose head cannot be read is left out: the instances
/// before dead-lettered it.
pub(super) async fn recent_event_ids(
    conn: &mut RedisConn,
    stream: &str,
    upto: StreamId,
    recent: Recent,
) -> RedisResult<Vec<(String, Instant)>> {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let since = StreamId { ms: now_ms.saturating_sub(recent.window.as_millis() as u64), seq: 0 };
    let mut found = Vec::new();
    if upto < since {
        return Ok(found);
    }
    let now = Instant::now();
    let mut end = upto.to_text();
    loop {
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg(&end)
            .arg(since.to_text())
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await?;
        let read = replies::from_range_reply(reply);
        for (i, id) in read.ids.iter().enumerate() {
            if let Ok(pending) = Pending::read(read.block.fields(i)) {
                let age = Duration::from_millis(now_ms.saturating_sub(id.ms));
                found.push((pending.head().event_id.to_string(), now.checked_sub(age).unwrap_or(now)));
            }
        }
        match read.ids.last() {
            Some(last) if read.len() == PAGE && found.len() < recent.max_entries => end = format!("({last}"),
            _ => break,
        }
    }
    found.truncate(recent.max_entries);
    Ok(found)
}
