//! The rooms' history for missed updates (CONTRACT section 15, seed 003
//! FR-025, its Missed Update entity kept 24 hours), in Redis.
//!
//! The pipeline hands each event of a route that carries `position` to the
//! [`writer`] before fanning it out; the writer adds it to its room's sorted
//! set (see [`layout`]) and records which stretch of the stream this
//! instance has written. A `history` join ([`reader`], for the hub's
//! `RoomHistory`) waits for the writer to catch up with the join's cut,
//! proves with those stretches that the history holds every event between
//! its client's position and the cut, and reads them in one range query.
//! Without Redis there is no history: such joins answer `recovered: false`.

mod coverage;
mod layout;
mod reader;
mod writer;

use crate::sync::Unpoisoned;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::RouteTable;
use crate::envelope::Schemas;
use crate::fanout::Registry;
use crate::hub::RoomHistory;
use crate::ingest::{RedisConn, StreamId};
use crate::pipeline::{Cuts, HistorySink};
use crate::telemetry::Metrics;

pub(crate) use writer::HistoryWriter;

/// Events waiting for the writer; beyond this the pipeline does not wait:
/// the event is left out and this instance's stretch restarts after it.
const QUEUE: usize = 10_000;

/// One hub's history: the stream its history routes come from, its window.
#[derive(Debug, Clone)]
struct HubHistory {
    name: String,
    stream: Arc<str>,
    window: Duration,
}

/// This instance's current run in one stream: the history events after
/// `from` up to what the writer last confirmed are all written.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Where the run began (names its coverage field).
    started: StreamId,
    /// Exclusive start of the stretch written whole.
    from: StreamId,
    /// The last cut the writer confirmed.
    to: StreamId,
}

/// What the writer, the reader and the pipeline's sink share.
struct Shared {
    conn: RedisConn,
    prefix: String,
    instance: String,
    routes: Arc<RouteTable>,
    /// Indexed by hub id; `None` for hubs without history.
    hubs: Vec<Option<HubHistory>>,
    registry: Arc<Registry>,
    schemas: Arc<Schemas>,
    metrics: Arc<Metrics>,
    /// Events handed to the writer, and those it has finished with.
    sent: AtomicU64,
    done: watch::Sender<u64>,
    runs: Mutex<HashMap<Arc<str>, Run>>,
}

impl Shared {
    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Run>> {
        // Each update is one assignment: a poisoned map is still consistent.
        self.runs.locked()
    }

    /// The longest window of the hubs fed by `stream`.
    fn window_of(&self, stream: &str) -> Duration {
        self.hubs.iter().flatten().filter(|h| &*h.stream == stream).map(|h| h.window).max().unwrap_or_default()
    }

    /// Everything of `stream` up to `at` may be missing: the run restarts there.
    fn restart(&self, stream: &str, at: StreamId) {
        if let Some(run) = self.runs().get_mut(stream) {
            run.from = run.from.max(at);
            run.to = run.to.max(at);
        }
    }
}

/// The history of every hub whose routes carry `position`.
pub(crate) struct History {
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::Receiver<writer::Item>>>,
}

impl History {
    /// The history for `routes`, and the sink the pipeline hands events to,
    /// or `None` when no route carries `position`. Keys start with
    /// `prefix`; `instance` names this instance's coverage fields. The
    /// writer stops once the sink is dropped (the pipeline has drained).
    pub(crate) fn new(
        conn: RedisConn,
        routes: Arc<RouteTable>,
        prefix: &str,
        instance: &str,
        registry: Arc<Registry>,
        schemas: Arc<Schemas>,
        metrics: Arc<Metrics>,
    ) -> Option<(History, Arc<dyn HistorySink>)> {
        let hubs: Vec<Option<HubHistory>> = routes
            .hubs
            .iter()
            .map(|hub| {
                let window = hub.options.history?;
                let route = routes.routes().find(|r| r.hub == hub.id && r.arguments.has_position())?;
                Some(HubHistory { name: hub.name.clone(), stream: Arc::from(route.stream.as_str()), window })
            })
            .collect();
        if hubs.iter().all(Option::is_none) {
            return None;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            conn,
            prefix: prefix.to_string(),
            instance: instance.to_string(),
            routes,
            hubs,
            registry,
            schemas,
            metrics,
            sent: AtomicU64::new(0),
            done: watch::Sender::new(0),
            runs: Mutex::default(),
        });
        let sink: Arc<dyn HistorySink> = Arc::new(HistoryWriter { shared: shared.clone(), queue: tx });
        Some((History { shared, queue: Mutex::new(Some(rx)) }, sink))
    }

    /// What `history` joins read; `cuts` reaches the pipeline that serves
    /// their cuts (see [`crate::pipeline::Cuts`]).
    pub(crate) fn reader(&self, cuts: Cuts) -> Arc<dyn RoomHistory> {
        Arc::new(reader::RedisHistory { shared: self.shared.clone(), cuts })
    }

    /// This instance's reader of `stream` starts at `at` (its group's
    /// start): the history events after it are written by this run.
    pub(crate) fn begin(&self, stream: &str, at: StreamId) {
        if self.shared.hubs.iter().flatten().any(|h| &*h.stream == stream) {
            self.shared.runs().insert(Arc::from(stream), Run { started: at, from: at, to: at });
        }
    }

    /// Entries of `stream` were lost before this instance read them (Redis
    /// restarted empty, the stream was trimmed past the reader): the
    /// history before this instance's position proves nothing any more.
    pub(crate) fn lost(&self, stream: &str) {
        let at = self.shared.registry.positions().into_iter().find(|(s, _)| &**s == stream);
        if let Some(at) = at.and_then(|(_, id)| id.parse().ok()) {
            self.shared.restart(stream, at);
        }
    }

    /// The writer's task: runs until the pipeline has drained (its sink is
    /// dropped), then publishes its last stretch. Call once.
    pub(crate) async fn run_writer(&self) {
        let queue = self.queue.locked().take();
        if let Some(queue) = queue {
            writer::run(self.shared.clone(), queue).await;
        }
    }
}
