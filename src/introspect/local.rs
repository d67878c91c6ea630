//! This instance's side of every question: answered from the fan-out
//! registry and the metric handles already in memory, with no I/O.

use std::sync::Arc;
use std::time::Instant;

use super::model::{
    Answer, AnswerBody, InstanceInfo, InstanceState, Member, Query, RoomCount, StreamLag, UserConnection,
};
use crate::fanout::{ConnView, Registry};
use crate::telemetry::labels::Stream;
use crate::telemetry::Metrics;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Reads the instance's lifecycle state (the readiness latch lives in
/// `http`, which this module may not import; `app` wires it).
pub(crate) type StateFn = Arc<dyn Fn() -> InstanceState + Send + Sync>;

/// What this instance knows about itself.
pub(crate) struct Local {
    /// `SIDECAR_INSTANCE_ID`.
    pub instance_id: String,
    /// Hub `(name, path)` in routing-table order (the registry's indices).
    pub hubs: Vec<(String, String)>,
    /// Streams this instance reads (empty on the in-process bus).
    pub streams: Vec<String>,
    /// The connections.
    pub registry: Arc<Registry>,
    /// The `sidecar_stream_lag` / `sidecar_stream_pending` gauges that the
    /// reader refreshes from XINFO GROUPS: read here, so ingest needs no
    /// knowledge of this module.
    pub metrics: Arc<Metrics>,
    /// Starting, ready, unready or draining.
    pub state: StateFn,
    started: Instant,
    started_at: String,
}

impl Local {
    /// Describes this instance, started now.
    pub(crate) fn new(
        instance_id: String,
        hubs: Vec<(String, String)>,
        streams: Vec<String>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        state: StateFn,
    ) -> Local {
        let started_at = rfc3339(crate::fanout::unix_ms());
        Local { instance_id, hubs, streams, registry, metrics, state, started: Instant::now(), started_at }
    }

    /// The index of hub `name`.
    pub(crate) fn hub_index(&self, name: &str) -> Option<usize> {
        self.hubs.iter().position(|(n, _)| n == name)
    }

    /// This instance's summary.
    pub(crate) fn info(&self) -> InstanceInfo {
        let per_hub = self.registry.connections_per_hub();
        let hubs = self.hubs.iter().zip(&per_hub).map(|((name, _), n)| (name.clone(), *n)).collect();
        InstanceInfo {
            instance: self.instance_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            state: (self.state)(),
            connections: per_hub.iter().sum(),
            hubs,
            streams: self
                .streams
                .iter()
                .map(|s| StreamLag {
                    stream: s.clone(),
                    lag: gauge(&self.metrics.stream_lag, s),
                    pending: gauge(&self.metrics.stream_pending, s),
                })
                .collect(),
        }
    }

    /// Answers `query` from this instance's memory.
    pub(crate) fn answer(&self, query: &Query) -> Answer {
        let body = match query {
            Query::Instance => AnswerBody::Instance,
            Query::Rooms { hub, prefix, after, limit } => {
                let (rooms, more) = match self.hub_index(hub) {
                    Some(h) => self.registry.rooms_page(h, prefix, after.as_deref(), *limit),
                    None => (Vec::new(), false),
                };
                let rooms = rooms.into_iter().map(|(name, connections)| RoomCount { name, connections }).collect();
                AnswerBody::Rooms { rooms, more }
            }
            Query::Members { hub, room, after, limit } => {
                let (total, page, more) = match self.hub_index(hub) {
                    Some(h) => {
                        // The asker checked the cursor; a garbled one starts over.
                        let after = after.as_deref().and_then(|a| uuid::Uuid::try_parse(a).ok());
                        self.registry.members_page(h, room, after, *limit)
                    }
                    None => (0, Vec::new(), false),
                };
                AnswerBody::Members { total, members: page.iter().map(|v| self.member(v)).collect(), more }
            }
            Query::User { user } => AnswerBody::User {
                connections: self
                    .registry
                    .user_connections_with_rooms(user)
                    .into_iter()
                    .map(|(v, rooms)| UserConnection {
                        connection_id: v.connection_id.simple().to_string(),
                        hub: self.hubs.get(v.hub).map(|(n, _)| n.clone()).unwrap_or_default(),
                        instance: self.instance_id.clone(),
                        transport: v.transport.to_string(),
                        since: rfc3339(v.since_ms),
                        rooms,
                    })
                    .collect(),
            },
        };
        Answer { instance: self.info(), body }
    }

    fn member(&self, v: &ConnView) -> Member {
        Member {
            connection_id: v.connection_id.simple().to_string(),
            user: v.user.as_deref().map(str::to_string),
            instance: self.instance_id.clone(),
            transport: v.transport.to_string(),
            since: rfc3339(v.since_ms),
        }
    }
}

/// A stream's gauge, if the reader has set it.
fn gauge(family: &Family<Stream, Gauge>, stream: &str) -> Option<i64> {
    family.get(&Stream { stream: Arc::from(stream) }).map(|g| g.get())
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds.
fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
