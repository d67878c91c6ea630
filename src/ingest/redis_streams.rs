//! The Redis Streams reader (CONTRACT sections 5 and 14): one consumer
//! group per instance, started at `$` (a process has no connection owed
//! older entries); one reader task per stream (which also keeps every
//! XREADGROUP within one cluster slot); XACK only after the pipeline reports
//! the outcome. Each reader knows the last entry it handed on, so a lost
//! group comes back where delivery stopped, and a hole (entries gone before
//! they were read) is reported instead of skipped: a lost stream when the
//! group is recreated, trimmed or deleted entries by counting (`tally`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{RedisResult, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::acker::{self, Note};
use super::hole::{Hole, HoleCause, OnHole};
use super::intake::{hand_over, Shared};
use super::read_conn::{ReadCommand, ReadConn, ReadError};
use super::replies;
use super::seen::{self, Recent};
use super::tally::{StreamCount, Tally};
use super::{claim, RedisConn, StreamId};
use crate::config::RedisConfig;
use crate::envelope::Schemas;
use crate::pipeline::{Input, InputSender};
use crate::telemetry::events::Dropped;
use crate::telemetry::labels::DropReason;
use crate::telemetry::Metrics;

/// How often a reader takes the stream's count (one XINFO STREAM, never
/// one per read) to check it was handed every entry (`tally.rs`): a hole is
/// reported within about this long of the reader reading past it.
const TRIM_CHECK_EVERY: Duration = Duration::from_secs(2);

/// The Redis ingest source, ready to start.
pub(crate) struct RedisIngest {
    shared: Arc<Shared>,
    conn: RedisConn,
    streams: Vec<Arc<str>>,
    settled_rx: mpsc::UnboundedReceiver<Note>,
    recent: Recent,
}

/// What `app` keeps of a running Redis ingest.
pub(crate) struct RedisIngestHandles {
    /// True while Redis answers; `/readyz` reads it.
    pub redis_up: Arc<AtomicBool>,
    /// Where each stream's group started.
    pub positions: Vec<(Arc<str>, StreamId)>,
}

impl RedisIngest {
    /// Prepares the reader. `conn` is used for everything but blocking reads;
    /// `on_hole` hears of entries lost before they were read; `checks_all`
    /// is set while this instance is the one that checks every entry;
    /// `recent` is how far back the idempotency window learns the event
    /// ids the streams held before the groups started.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: RedisConfig,
        instance_id: &str,
        streams: &[String],
        conn: RedisConn,
        schemas: Arc<Schemas>,
        input: InputSender,
        metrics: Arc<Metrics>,
        on_hole: OnHole,
        checks_all: crate::pipeline::ChecksAll,
        recent: Recent,
    ) -> RedisIngest {
        let (settled, settled_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            group: config.group_name(instance_id),
            consumer: instance_id.to_string(),
            config,
            schemas,
            input,
            metrics,
            settled,
            redis_up: Arc::new(AtomicBool::new(true)),
            on_hole,
            checks_all,
        });
        let streams = streams.iter().map(|s| Arc::from(s.as_str())).collect();
        RedisIngest { shared, conn, streams, settled_rx, recent }
    }

    /// Starts this instance's group on every stream at its end (the
    /// readiness latch waits for this), hands the pipeline the event ids
    /// each stream received within the idempotency window before that
    /// (`seen.rs`), then starts the readers, the acker and the claimer on
    /// `tasks`. Readers stop when `stop` fires; the acker
    /// stops once every outstanding ack is settled.
    pub(crate) async fn start(
        self,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<RedisIngestHandles, ReadError> {
        let RedisIngest { shared, conn, streams, settled_rx, recent } = self;
        let mut positions = Vec::with_capacity(streams.len());
        for stream in &streams {
            positions.push(start_group(&mut conn.clone(), stream, &shared.group, &shared.consumer).await?);
        }
        for (stream, position) in streams.iter().zip(&positions) {
            // Before the readers start, so it is judged before any entry.
            match seen::recent_event_ids(&mut conn.clone(), stream, *position, recent).await {
                Ok(ids) if ids.is_empty() => {}
                Ok(ids) => {
                    tracing::debug!(stream = %stream, event_ids = ids.len(), "idempotency window: event ids the stream held before this instance");
                    // Err only when the pipeline has stopped (shutting down).
                    let _ = shared.input.send(Input::Seen(ids)).await;
                }
                Err(e) => {
                    tracing::warn!(stream = %stream, error = %e, "the event ids the stream held before this instance are unknown: a retry of one may be delivered again")
                }
            }
        }
        tracing::info!(group = %shared.group, streams = ?streams, "consumer group ready");
        shared.metrics.redis_up.set(1);
        let handles = RedisIngestHandles {
            redis_up: shared.redis_up.clone(),
            positions: streams.iter().cloned().zip(positions.iter().copied()).collect(),
        };
        let (group, maxlen) = (shared.group.clone(), shared.config.dead_letter_maxlen);
        tasks.spawn(acker::run(conn.clone(), group, maxlen, shared.metrics.clone(), settled_rx));
        tasks.spawn(claim::run(conn.clone(), shared.clone(), streams.clone(), stop.clone()));
        for (stream, position) in streams.into_iter().zip(positions) {
            let read = ReadCommand {
                group: &shared.group,
                consumer: &shared.consumer,
                count: shared.config.read_count,
                block: shared.config.read_block,
                stream: &stream,
            };
            let reader = ReadConn::open(&shared.config, read, conn.clone()).await?;
            tasks.spawn(read_stream(reader, conn.clone(), shared.clone(), stream, position, stop.clone()));
        }
        Ok(handles)
    }
}

/// Creates the group at the stream's end (and the stream) and returns that
/// position. A group left by an earlier process of this instance (a pod
/// that keeps its name) is started afresh: its backlog and pending entries
/// were for connections that ended with that process, and the clients that
/// reconnected elsewhere have had them; reading them now would deliver
/// duplicates (CONTRACT section 14).
pub(super) async fn start_group(
    conn: &mut RedisConn,
    stream: &str,
    group: &str,
    consumer: &str,
) -> RedisResult<StreamId> {
    if !create_group(conn, stream, group, consumer, "$").await? {
        tracing::info!(stream = %stream, group = %group, "an earlier process of this instance left its group: starting it afresh at the stream's end");
        let _: i64 = redis::cmd("XGROUP").arg("DESTROY").arg(stream).arg(group).query_async(conn).await?;
        create_group(conn, stream, group, consumer, "$").await?;
    }
    group_position(conn, stream, group).await
}

/// XGROUP CREATE at `id` (MKSTREAM), with this instance's `consumer` in it
/// at once (XGROUP CREATECONSUMER): Redis 7.0 adds a consumer only when it
/// first gets an entry, and the orphan sweep judges a group by its
/// consumers' idle time, so a group whose instance died before reading
/// anything would never be judged. False when the group exists already.
async fn create_group(conn: &mut RedisConn, stream: &str, group: &str, consumer: &str, id: &str) -> RedisResult<bool> {
    let mut tries = 0;
    loop {
        tries += 1;
        let created: RedisResult<()> =
            redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(group).arg(id).arg("MKSTREAM").query_async(conn).await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => return Ok(false),
            Err(e) => return Err(e),
        }
        let added: RedisResult<i64> =
            redis::cmd("XGROUP").arg("CREATECONSUMER").arg(stream).arg(group).arg(consumer).query_async(conn).await;
        match added {
            Ok(_) => return Ok(true),
            // Another instance's orphan sweep saw the group without its
            // consumer in between (and this instance not yet beating):
            // made again.
            Err(e) if e.code() == Some("NOGROUP") && tries < 3 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The group's last delivered id, from XINFO GROUPS.
async fn group_position(conn: &mut RedisConn, stream: &str, group: &str) -> RedisResult<StreamId> {
    let groups: Vec<Value> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await?;
    for g in groups {
        let fields = replies::pairs(g);
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).and_then(|(_, v)| replies::text(v.clone()));
        if field("name").as_deref() == Some(group) {
            return Ok(field("last-delivered-id").and_then(|id| id.parse().ok()).unwrap_or(StreamId::ZERO));
        }
    }
    Ok(StreamId::ZERO)
}

/// What the stream still holds around `position`: whether the entry at it
/// is there, and the newest id deleted or trimmed (Redis 7).
async fn stream_state(conn: &mut RedisConn, stream: &str, position: StreamId) -> RedisResult<(bool, StreamId)> {
    let at = position.to_string();
    let reply: Value = redis::cmd("XRANGE").arg(stream).arg(&at).arg(&at).query_async(conn).await?;
    let holds = !replies::from_range_reply(reply).is_empty();
    let info: RedisResult<Value> = redis::cmd("XINFO").arg("STREAM").arg(stream).query_async(conn).await;
    let max_deleted = match info {
        Ok(v) => replies::pairs(v)
            .into_iter()
            .find(|(k, _)| k == "max-deleted-entry-id")
            .and_then(|(_, v)| replies::text(v))
            .and_then(|id| id.parse().ok())
            .unwrap_or(StreamId::ZERO),
        Err(e) if e.code() == Some("ERR") => StreamId::ZERO, // no such stream
        Err(e) => return Err(e),
    };
    Ok((holds, max_deleted))
}

/// The stream's count (`last-generated-id`, `entries-added`) from XINFO
/// STREAM; `None` without them (Redis before 7, or no such stream).
async fn stream_count(conn: &mut RedisConn, stream: &str) -> RedisResult<Option<StreamCount>> {
    let info: Value = match redis::cmd("XINFO").arg("STREAM").arg(stream).query_async(conn).await {
        Ok(v) => v,
        Err(e) if e.code() == Some("ERR") => return Ok(None), // no such stream
        Err(e) => return Err(e),
    };
    let (mut last, mut added) = (None, None);
    for (k, v) in replies::pairs(info) {
        match (k.as_str(), v) {
            ("last-generated-id", v) => last = replies::text(v).and_then(|id| id.parse().ok()),
            ("entries-added", Value::Int(n)) => added = u64::try_from(n).ok(),
            _ => {}
        }
    }
    Ok(last.zip(added).map(|(last, added)| StreamCount { last, added }))
}

/// Takes the stream's count for `tally` with the reader at `position`,
/// and reports a hole if the reader turns out to be short.
async fn take_count(conn: &mut RedisConn, shared: &Shared, stream: &Arc<str>, position: StreamId, tally: &mut Tally) {
    match stream_count(conn, stream).await {
        Ok(Some(count)) => {
            if let Some(missing) = tally.checkpoint(position, count) {
                report_hole(shared, stream, HoleCause::StreamTrimmed, position, missing.entries);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(stream = %stream, error = %e, "XINFO STREAM failed"),
    }
}

/// One stream's read loop, until `stop`: XREADGROUP on `reader`, the
/// occasional XRANGE, XINFO and XGROUP on `conn`. `position` is the last
/// entry handed to the pipeline (or where the group started).
async fn read_stream(
    mut reader: ReadConn,
    mut conn: RedisConn,
    shared: Arc<Shared>,
    stream: Arc<str>,
    mut position: StreamId,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    // Counted from where the group starts.
    let mut tally = Tally::default();
    take_count(&mut conn, &shared, &stream, position, &mut tally).await;
    let mut trim_checked = Instant::now();
    // A count is taken at once after Redis was away (or the group lost).
    let mut count_soon = false;
    // One wait for the whole loop (a new one per read registers with the
    // token and leaves it again each time).
    let mut stopped = std::pin::pin!(stop.cancelled());
    let window = shared.config.read_window;
    // While entries flow the window is counted from when a read is sent. Our
    // own socket holds it in Redis (`read_conn`); otherwise it is held here,
    // on one timer kept for the loop and armed before the read goes out: the
    // runtime's note to itself of a timer earlier than the one it last
    // parked on (an `eventfd` write) is then taken with the reply, in one
    // `epoll_wait`, not in one of its own after it (five system calls a read
    // instead of six, traced).
    let mut window_end = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let mut flowing = false;
    // The next read's window is held in Redis: only when the last read
    // brought more than one entry (events come faster than one a window).
    // At a slower flow a read held in Redis mostly waits past its window
    // for the next event and is cut short (CLIENT UNBLOCK), which costs
    // more than the wake-up it saves (two instances side by side at 60
    // events/s: 1.13 of the CPU); the window is held here then.
    let mut in_redis = false;
    // A read failed: before new entries, the ones reads given up on may
    // have taken (`ReadConn::read_pending`).
    let mut reclaim = false;
    loop {
        if reclaim {
            let pending = tokio::select! {
                r = reader.read_pending(position) => r,
                _ = &mut stopped => break,
            };
            match pending {
                Ok(entries) => {
                    // One read gives at most COUNT entries, and eight reads
                    // may have been left queued: read on until none is left.
                    reclaim = !entries.is_empty();
                    count_soon |= backoff.reset(&shared);
                    match hand_over_reclaimed(&shared, &stream, entries, &mut position, &mut tally).await {
                        Some(()) => {}
                        None => break,
                    }
                }
                // No group, so nothing pending either: the read recreates it.
                Err(e) if e.code() == Some("NOGROUP") => reclaim = false,
                Err(e) => {
                    tokio::select! {
                        _ = backoff.fail(&shared, &stream, &e) => {}
                        _ = &mut stopped => break,
                    }
                }
            }
            continue;
        }
        if flowing && !in_redis {
            window_end.as_mut().reset(tokio::time::Instant::now() + window);
        }
        let read = reader.read(in_redis);
        let result = tokio::select! {
            r = read => r,
            _ = &mut stopped => break,
        };
        let was_flowing = std::mem::replace(&mut flowing, false);
        in_redis = false;
        match result {
            Ok(entries) => {
                count_soon |= backoff.reset(&shared);
                // The window opens when a read brings entries and no backlog
                // (a full read means more is waiting: read again at once).
                let hold = !window.is_zero() && !entries.is_empty() && entries.len() < shared.config.read_count;
                in_redis = hold && entries.len() > 1 && reader.holds_window();
                if hold && !was_flowing && !in_redis {
                    // The first read after a quiet spell: the window starts now.
                    window_end.as_mut().reset(tokio::time::Instant::now() + window);
                }
                flowing = hold;
                let before = position;
                if let Some(last) = entries.last_id() {
                    position = last;
                }
                let missing = tally.read(&entries.ids);
                if !hand_over(&shared, &stream, entries).await {
                    break;
                }
                if let Some(missing) = missing {
                    report_hole(&shared, &stream, HoleCause::StreamTrimmed, before, missing.entries);
                    // Counting starts again at once, not a check later.
                    count_soon = true;
                }
                if (count_soon || trim_checked.elapsed() >= TRIM_CHECK_EVERY) && tally.wants_checkpoint() {
                    trim_checked = Instant::now();
                    count_soon = false;
                    take_count(&mut conn, &shared, &stream, position, &mut tally).await;
                }
                if hold && !in_redis && !window_end.is_elapsed() {
                    tokio::select! {
                        _ = &mut window_end => {}
                        _ = &mut stopped => break,
                    }
                }
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                count_soon = true;
                match recover_group(&mut conn, &shared, &stream, position).await {
                    Ok(true) => {}
                    // The stream's counts started again with it.
                    Ok(false) => tally.restart(),
                    Err(e) => backoff.fail(&shared, &stream, &e).await,
                }
            }
            Err(e) => {
                reclaim = true;
                tokio::select! {
                    _ = backoff.fail(&shared, &stream, &e) => {}
                    _ = &mut stopped => break,
                }
            }
        }
    }
    tracing::info!(stream = %stream, "reader stopped");
}

/// Hands on the entries [`ReadConn::read_pending`] found after `position`
/// (none, usually), counted like any read; `None` when the pipeline has
/// stopped.
async fn hand_over_reclaimed(
    shared: &Shared,
    stream: &Arc<str>,
    entries: super::replies::Read,
    position: &mut StreamId,
    tally: &mut Tally,
) -> Option<()> {
    let Some(last) = entries.last_id() else { return Some(()) };
    tracing::warn!(stream = %stream, group = %shared.group, entries = entries.len(), after = %position,
        "entries Redis handed to reads given up on: delivered now, in stream order");
    let before = std::mem::replace(position, last);
    let missing = tally.read(&entries.ids);
    if !hand_over(shared, stream, entries).await {
        return None;
    }
    if let Some(missing) = missing {
        report_hole(shared, stream, HoleCause::StreamTrimmed, before, missing.entries);
    }
    Some(())
}

/// The group is gone (Redis restarted without persistence, or someone
/// destroyed it): recreate it where delivery stopped, so nothing published
/// in between is skipped. If the stream no longer holds that entry, what
/// came after it may be gone too: a hole; and the stream may be a new one,
/// whose ids (from a new server's clock) can lie below that position, so
/// the group reads it from its start (a stream trimmed past the position
/// holds nothing before it; what else was delivered before is caught by
/// the idempotency window and the age check). True when the stream was
/// intact.
async fn recover_group(
    conn: &mut RedisConn,
    shared: &Shared,
    stream: &Arc<str>,
    position: StreamId,
) -> RedisResult<bool> {
    let (holds, max_deleted) = stream_state(conn, stream, position).await?;
    let intact = (holds || position == StreamId::ZERO) && max_deleted <= position;
    let from = if holds { position } else { StreamId::ZERO };
    create_group(conn, stream, &shared.group, &shared.consumer, &from.to_string()).await?;
    if intact {
        tracing::warn!(stream = %stream, group = %shared.group, from = %position, "consumer group lost: recreated where delivery stopped");
    } else {
        report_hole(shared, stream, HoleCause::StreamLost, position, 1);
    }
    Ok(intact)
}

/// Tells the app of a hole after `position` (`lost` entries at least, as
/// far as the reader can count them), which closes the connections that
/// may have been owed them.
fn report_hole(shared: &Shared, stream: &Arc<str>, cause: HoleCause, position: StreamId, lost: u64) {
    tracing::warn!(stream = %stream, group = %shared.group, after = %position, lost, cause = cause.label(), "entries were lost before this instance read them: closing the connections that may have been owed them");
    shared.metrics.record(Dropped::many(DropReason::GroupLost, 1));
    (shared.on_hole)(Hole { stream: stream.clone(), cause });
}

/// Exponential backoff for Redis errors, which also keeps `redis_up`.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Redis answered; true if it had not been answering.
    fn reset(&mut self, shared: &Shared) -> bool {
        let was_away = self.failures > 0;
        if was_away {
            tracing::info!("redis answers again");
            shared.metrics.redis_up.set(1);
            shared.redis_up.store(true, Ordering::Relaxed);
        }
        self.failures = 0;
        was_away
    }

    async fn fail(&mut self, shared: &Shared, stream: &str, e: &(dyn std::fmt::Display + Sync)) {
        self.failures += 1;
        shared.metrics.redis_up.set(0);
        shared.redis_up.store(false, Ordering::Relaxed);
        // At most a second: a reader kept away after Redis is back delays
        // every event by the rest of its wait.
        let delay = Duration::from_millis(50 * 2u64.pow(self.failures.min(5))).min(Duration::from_secs(1));
        tracing::warn!(stream = %stream, error = %e, retry_in_ms = delay.as_millis() as u64, "redis read failed");
        tokio::time::sleep(delay).await;
    }
}
