//! Writes the events of history routes into their rooms' sorted sets, in
//! batches, and keeps this instance's stretch of each stream: what it
//! confirms there is what a join on any instance may rely on.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::RedisResult;
use tokio::sync::mpsc;

use super::layout::{coverage_key, member, parse_stretch, room_key, stretch_value};
use super::Shared;
use crate::config::HubId;
use crate::envelope::Envelope;
use crate::ingest::StreamId;
use crate::pipeline::HistorySink;
use crate::telemetry::labels::HistoryEventOutcome;

/// Most events written in one batch.
const BATCH: usize = 512;
/// How often the coverage field is refreshed, and the writer wakes when idle.
const TICK: Duration = Duration::from_secs(1);
/// How often the coverage fields of runs past every window are removed.
const CLEANUP_EVERY: Duration = Duration::from_secs(60);
/// Kept past the window, so clocks a little apart never trim what another
/// instance still counts as inside it.
pub(super) const TRIM_MARGIN: Duration = Duration::from_secs(60);

/// One event on its way to its room's set.
pub(super) struct Item {
    stream: Arc<str>,
    id: StreamId,
    hub: HubId,
    envelope: Envelope,
}

/// The pipeline's [`HistorySink`]: queues without waiting.
pub(crate) struct HistoryWriter {
    pub(super) shared: Arc<Shared>,
    pub(super) queue: mpsc::Sender<Item>,
}

impl HistorySink for HistoryWriter {
    fn record(&self, stream: &Arc<str>, entry_id: &str, hub: HubId, envelope: &Envelope) {
        let Ok(id) = entry_id.parse::<StreamId>() else { return };
        if self.shared.hubs.get(hub).and_then(Option::as_ref).is_none() {
            return;
        }
        let item = Item { stream: stream.clone(), id, hub, envelope: envelope.clone() };
        match self.queue.try_send(item) {
            Ok(()) => {
                self.shared.sent.fetch_add(1, Ordering::AcqRel);
            }
            Err(_) => {
                // Left out: no join may count on this run before it.
                self.shared.restart(stream, id);
                count(&self.shared, HistoryEventOutcome::Dropped, 1);
            }
        }
    }
}

fn count(shared: &Shared, outcome: HistoryEventOutcome, n: u64) {
    if n > 0 {
        shared.metrics.history_events.get(outcome).inc_by(n);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs until the queue closes, then publishes the last stretch.
pub(super) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Item>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    let (mut published, mut cleaned) = (Instant::now(), Instant::now());
    loop {
        let open = tokio::select! {
            n = queue.recv_many(&mut batch, BATCH) => n > 0,
            _ = tick.tick() => true,
        };
        // The cut first, then the rest of the queue: every history event up
        // to the cut was queued before the cut moved past it.
        let cut: HashMap<Arc<str>, StreamId> =
            shared.registry.positions().into_iter().filter_map(|(s, id)| Some((s, id.parse().ok()?))).collect();
        while let Ok(item) = queue.try_recv() {
            batch.push(item);
        }
        let failed = write(&shared, &batch).await;
        confirm(&shared, &cut, &failed);
        let n = batch.len() as u64;
        count(&shared, HistoryEventOutcome::Written, n - failed.values().map(|(_, n)| *n).sum::<u64>());
        batch.clear();
        shared.done.send_modify(|d| *d += n);
        if !open || published.elapsed() >= TICK {
            published = Instant::now();
            if let Err(e) = publish(&shared).await {
                tracing::debug!(error = %e, "history coverage not published");
            }
        }
        if cleaned.elapsed() >= CLEANUP_EVERY {
            cleaned = Instant::now();
            if let Err(e) = cleanup(&shared).await {
                tracing::debug!(error = %e, "history coverage cleanup failed");
            }
        }
        if !open {
            tracing::info!("history writer stopped");
            return;
        }
    }
}

/// Writes a batch, one pipeline per room (one cluster slot each); returns,
/// per stream, the newest id that could not be written and how many failed.
async fn write(shared: &Shared, batch: &[Item]) -> HashMap<Arc<str>, (StreamId, u64)> {
    let mut by_room: HashMap<String, (Duration, Vec<&Item>)> = HashMap::new();
    for item in batch {
        let Some(hub) = shared.hubs.get(item.hub).and_then(Option::as_ref) else { continue };
        let key = room_key(&shared.prefix, &hub.name, &item.envelope.room_id);
        by_room.entry(key).or_insert_with(|| (hub.window, Vec::new())).1.push(item);
    }
    let now = now_ms();
    let writes = by_room.into_iter().map(|(key, (window, items))| async move {
        let keep = window + TRIM_MARGIN;
        let mut pipe = redis::pipe();
        for item in &items {
            pipe.cmd("ZADD")
                .arg(&key)
                .arg(item.id.ms)
                .arg(member(item.id, &item.envelope.to_json().to_string()))
                .ignore();
        }
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(format!("({}", now.saturating_sub(keep.as_millis() as u64)))
            .ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(keep.as_millis() as u64).ignore();
        let result: RedisResult<()> = pipe.query_async(&mut shared.conn.clone()).await;
        (result, items)
    });
    let mut failed: HashMap<Arc<str>, (StreamId, u64)> = HashMap::new();
    for (result, items) in futures_util::future::join_all(writes).await {
        if let Err(e) = result {
            tracing::warn!(error = %e, events = items.len(), "history not written: joins before this point will not recover");
            count(shared, HistoryEventOutcome::Failed, items.len() as u64);
            for item in items {
                let f = failed.entry(item.stream.clone()).or_insert((item.id, 0));
                f.0 = f.0.max(item.id);
                f.1 += 1;
            }
        }
    }
    failed
}

/// Moves this instance's runs: up to the cut when the batch was written,
/// past the cut (and past every lost event) when some of it was not.
fn confirm(shared: &Shared, cut: &HashMap<Arc<str>, StreamId>, failed: &HashMap<Arc<str>, (StreamId, u64)>) {
    let mut runs = shared.runs();
    for (stream, run) in runs.iter_mut() {
        let Some(at) = cut.get(stream) else { continue };
        match failed.get(stream) {
            Some((lost, _)) => {
                let restart = (*at).max(*lost);
                run.from = run.from.max(restart);
                run.to = run.to.max(restart);
            }
            None => run.to = run.to.max(*at),
        }
    }
}

/// Writes this instance's stretch of each stream to its coverage hash.
async fn publish(shared: &Shared) -> RedisResult<()> {
    let runs: Vec<(Arc<str>, super::Run)> = shared.runs().iter().map(|(s, r)| (s.clone(), *r)).collect();
    for (stream, run) in runs {
        if run.to <= run.from {
            continue;
        }
        let field = format!("{}@{}", shared.instance, run.started);
        let _: i64 = redis::cmd("HSET")
            .arg(coverage_key(&shared.prefix, &stream))
            .arg(field)
            .arg(stretch_value(run.from, run.to))
            .query_async(&mut shared.conn.clone())
            .await?;
    }
    Ok(())
}

/// Removes coverage fields whose stretch ended before every window: the
/// events they vouch for are trimmed.
async fn cleanup(shared: &Shared) -> RedisResult<()> {
    let streams: Vec<Arc<str>> = shared.runs().keys().cloned().collect();
    for stream in streams {
        let key = coverage_key(&shared.prefix, &stream);
        let fields: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(&mut shared.conn.clone()).await?;
        let oldest = now_ms().saturating_sub((shared.window_of(&stream) + TRIM_MARGIN).as_millis() as u64);
        let stale: Vec<&String> = fields
            .iter()
            .filter(|(_, v)| parse_stretch(v).is_none_or(|(_, to)| to.ms < oldest))
            .map(|(k, _)| k)
            .collect();
        if !stale.is_empty() {
            let _: i64 = redis::cmd("HDEL").arg(&key).arg(stale).query_async(&mut shared.conn.clone()).await?;
        }
    }
    Ok(())
}
