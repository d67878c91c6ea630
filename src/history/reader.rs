//! What a `history` join reads: the room's events between its client's
//! position and the join's cut, once the writer has caught up with the cut
//! and the written stretches prove none is missing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value;

use super::coverage::{covers, Stretch};
use super::layout::{coverage_key, parse_member, parse_stretch, room_key};
use super::{HubHistory, Shared};
use crate::codec::Protocol;
use crate::config::{Delivery, HubId};
use crate::envelope::Envelope;
use crate::fanout::Positions;
use crate::hub::{BoxFuture, NotRecovered, RoomHistory};
use crate::ingest::StreamId;
use crate::pipeline::{encode_replay, Cuts};
use crate::transport::Payload;

/// Most events one replay carries; beyond, the client refetches.
const MAX_REPLAY: usize = 10_000;
/// How long a join waits for the writer to write everything up to its cut.
const WRITER_WAIT: Duration = Duration::from_secs(2);
/// How long a join whose stretch of the stream is not yet vouched for waits
/// for the other instances to publish theirs. Each publishes its stretch
/// once per writer tick, so what an instance started less than a tick ago
/// (a rolling restart's new pod, where the drained pod's clients land) did
/// not write itself is vouched for by the live ones within a tick. Longer
/// than a tick, so one late publication still counts.
const COVERAGE_WAIT: Duration = Duration::from_millis(1500);
/// How often the coverage is read again meanwhile.
const COVERAGE_POLL: Duration = Duration::from_millis(100);

/// The history in Redis, as the hub reads it.
pub(super) struct RedisHistory {
    pub(super) shared: Arc<Shared>,
    pub(super) cuts: Cuts,
}

impl RedisHistory {
    fn hub(&self, hub: HubId) -> Option<&HubHistory> {
        self.shared.hubs.get(hub).and_then(Option::as_ref)
    }

    /// Where the hub's stream stands in `positions`.
    fn at(&self, hub: &HubHistory, positions: &Positions) -> Option<StreamId> {
        positions.iter().find(|(s, _)| *s == hub.stream).and_then(|(_, id)| id.parse().ok())
    }

    /// Waits until the writer has finished with every event queued so far.
    async fn writer_caught_up(&self) -> bool {
        let target = self.shared.sent.load(Ordering::Acquire);
        let mut done = self.shared.done.subscribe();
        tokio::time::timeout(WRITER_WAIT, done.wait_for(|d| *d >= target)).await.is_ok_and(|r| r.is_ok())
    }

    /// This instance's stretch up to the cut, and every run's published one.
    async fn stretches(&self, stream: &Arc<str>, upto: StreamId) -> Result<Vec<Stretch>, NotRecovered> {
        let own = self.shared.runs().get(stream).map(|r| Stretch { from: r.from, to: upto });
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(coverage_key(&self.shared.prefix, stream))
            .query_async(&mut self.shared.conn.clone())
            .await
            .map_err(|e| NotRecovered::Unavailable(e.to_string()))?;
        Ok(own
            .into_iter()
            .chain(fields.values().filter_map(|v| parse_stretch(v)).map(|(from, to)| Stretch { from, to }))
            .collect())
    }

    /// Waits (up to [`COVERAGE_WAIT`]) until the published stretches cover
    /// everything after `after` up to `upto`; false if they never do.
    async fn covered_later(&self, stream: &Arc<str>, after: StreamId, upto: StreamId) -> Result<bool, NotRecovered> {
        let deadline = tokio::time::Instant::now() + COVERAGE_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(COVERAGE_POLL).await;
            if covers(&self.stretches(stream, upto).await?, after, upto) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// What `stream` says of its beginning (XINFO STREAM, then its first
    /// entry).
    async fn stream_start(&self, stream: &str) -> Result<StreamStart, NotRecovered> {
        let unavailable = |e: redis::RedisError| NotRecovered::Unavailable(e.to_string());
        let mut conn = self.shared.conn.clone();
        let info: HashMap<String, Value> =
            redis::cmd("XINFO").arg("STREAM").arg(stream).query_async(&mut conn).await.map_err(unavailable)?;
        let deleted = info.get("max-deleted-entry-id").and_then(text).and_then(|id| id.parse::<StreamId>().ok());
        let count = |name: &str| match info.get(name) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let first: Vec<Value> = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let first_id = first.first().and_then(|entry| match entry {
            Value::Array(parts) => parts.first().and_then(text),
            _ => None,
        });
        Ok(StreamStart {
            none_deleted: deleted == Some(StreamId::ZERO),
            all_kept: count("entries-added").is_some_and(|added| Some(added) == count("length")),
            first: first_id.and_then(|id| id.parse::<StreamId>().ok()),
        })
    }

    /// Whether every entry `stream` ever had is from `oldest_kept` (ms) on,
    /// so none was trimmed from the rooms' history: the stream deleted
    /// nothing (Redis 7's `max-deleted-entry-id`) and its first entry is
    /// that recent. `0-0`, the position a join hands out while the stream
    /// has no entry, is then good however old it looks; any other position
    /// older than the window is too old (CONTRACT section 15).
    async fn beginning_kept(&self, stream: &str, oldest_kept: u64) -> Result<bool, NotRecovered> {
        let start = self.stream_start(stream).await?;
        Ok(start.none_deleted && start.first.is_none_or(|first| first.ms >= oldest_kept))
    }

    /// Whether the stream began after `after`: it still holds every entry
    /// it was ever given (`entries-added` is its length: nothing deleted,
    /// nothing trimmed, which Redis 7.0 does not show in
    /// `max-deleted-entry-id`) and its first is newer, so `after` was
    /// never one of its entries.
    /// It is a new stream (Redis restarted empty): what came after `after`
    /// in the old one is gone, whatever a stretch published before the
    /// instances noticed (the history writer may vouch for its old run once
    /// more, into the new Redis, before the reader finds its group gone)
    /// says.
    async fn began_after(&self, stream: &str, after: StreamId) -> Result<bool, NotRecovered> {
        let start = self.stream_start(stream).await?;
        Ok(start.all_kept && start.first.is_none_or(|first| first > after))
    }

    async fn read(
        &self,
        hub_id: HubId,
        room: &str,
        after: &str,
        upto: &Positions,
        protocol: Protocol,
    ) -> Result<Vec<Payload>, NotRecovered> {
        let hub = self.hub(hub_id).ok_or_else(|| NotRecovered::Unavailable("no history on this hub".into()))?;
        let after: StreamId = after.parse().map_err(|_| NotRecovered::Unavailable("not a position".into()))?;
        let upto =
            self.at(hub, upto).ok_or_else(|| NotRecovered::Unavailable("no position in the stream yet".into()))?;
        if after >= upto {
            return Ok(Vec::new());
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let oldest_kept = now.saturating_sub(hub.window.as_millis() as u64);
        let beginning_kept = || self.beginning_kept(&hub.stream, oldest_kept);
        if after.ms < oldest_kept && !(after == StreamId::ZERO && beginning_kept().await?) {
            return Err(NotRecovered::TooOld);
        }
        if after != StreamId::ZERO && self.began_after(&hub.stream, after).await? {
            return Err(NotRecovered::NotCovered);
        }
        if !self.writer_caught_up().await {
            return Err(NotRecovered::Unavailable("the history writer is behind".into()));
        }
        let key = room_key(&self.shared.prefix, &hub.name, room);
        let range = || {
            let mut range_cmd = redis::cmd("ZRANGEBYSCORE");
            range_cmd.arg(&key).arg(after.ms).arg(upto.ms).arg("LIMIT").arg(0).arg(MAX_REPLAY * 2);
            let mut conn = self.shared.conn.clone();
            async move { range_cmd.query_async::<Vec<Value>>(&mut conn).await }
        };
        let (stretches, members) = tokio::join!(self.stretches(&hub.stream, upto), range());
        let members = match covers(&stretches?, after, upto) {
            true => members,
            // Read again once covered: what proves the events written
            // must be read before the events themselves.
            false if self.covered_later(&hub.stream, after, upto).await? => range().await,
            false => return Err(NotRecovered::NotCovered),
        };
        let members = members.map_err(|e| NotRecovered::Unavailable(e.to_string()))?;
        if members.len() >= MAX_REPLAY * 2 {
            return Err(NotRecovered::TooLong(MAX_REPLAY));
        }
        let (mut ids, mut events): (Vec<String>, Vec<Envelope>) = (Vec::new(), Vec::new());
        let mut last = after;
        for m in &members {
            let Value::BulkString(bytes) = m else { continue };
            let Some((id, json)) = parse_member(bytes) else { continue };
            // Sorted by id: an id seen already is a copy another version wrote.
            if id <= last || id > upto {
                continue;
            }
            last = id;
            if events.len() == MAX_REPLAY {
                return Err(NotRecovered::TooLong(MAX_REPLAY));
            }
            if let Ok(envelope) = Envelope::from_json(json, &self.shared.schemas) {
                ids.push(id.to_string());
                events.push(envelope);
            }
        }
        Ok(self.encode(hub_id, &ids, &events, protocol))
    }

    /// The missed events as invocations, in order: one per event, except
    /// that consecutive events of one batch route go as one batch, as a
    /// burst did live.
    fn encode(&self, hub: HubId, ids: &[String], events: &[Envelope], protocol: Protocol) -> Vec<Payload> {
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some(first) = events.get(at) {
            let Some(route) = self.shared.routes.route(&first.event_type).filter(|r| r.hub == hub) else {
                at += 1;
                continue;
            };
            let run = match route.delivery {
                Delivery::Batch => events[at..].iter().take_while(|e| e.event_type == first.event_type).count(),
                _ => 1,
            };
            let positions: Vec<Option<&str>> = ids[at..at + run].iter().map(|id| Some(id.as_str())).collect();
            frames.extend(encode_replay(route, &events[at..at + run], &positions, protocol));
            at += run;
        }
        frames
    }
}

/// A reply's string, as text.
/// What a stream says of its beginning, for a join's checks.
struct StreamStart {
    /// `max-deleted-entry-id` is `0-0`: no entry deleted (Redis 7.0 leaves
    /// it so on a trim too).
    none_deleted: bool,
    /// `entries-added` equals its length: every entry it was ever given is
    /// still there.
    all_kept: bool,
    /// Its first entry, if it has one.
    first: Option<StreamId>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

impl RoomHistory for RedisHistory {
    fn at_cut<'a>(&'a self, hub: HubId, room: &'a str, step: Box<dyn FnOnce() + Send>) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.cuts.at_cut(hub, room, step).await.is_some() })
    }

    fn reached(&self, hub: HubId, after: &str, local: &Positions) -> bool {
        let (Some(h), Ok(after)) = (self.hub(hub), after.parse::<StreamId>()) else { return true };
        self.at(h, local).is_some_and(|at| at >= after)
    }

    fn position(&self, hub: HubId, upto: &Positions) -> Option<String> {
        let h = self.hub(hub)?;
        self.at(h, upto).map(|id| id.to_string())
    }

    fn missed<'a>(
        &'a self,
        hub: HubId,
        room: &'a str,
        after: &'a str,
        upto: &'a Positions,
        protocol: Protocol,
    ) -> BoxFuture<'a, Result<Vec<Payload>, NotRecovered>> {
        Box::pin(self.read(hub, room, after, upto, protocol))
    }
}
