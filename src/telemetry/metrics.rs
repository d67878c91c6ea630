//! Every Prometheus family, registered once with its help text and buckets
//! (CONTRACT section 8), from one table: each row names the field, its type
//! (and so its label set), the metric name and the help, which is also the
//! field's doc. Hot paths hold resolved handles and add once per event,
//! never once per recipient.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::labels::{
    AuthFailure, Connection, Consumed, Continuity, ContinuityCause, Disconnect, DisconnectReason, DropReason, Dropped,
    Handoff, HandoffOutcome, HistoryEvent, HistoryEventOutcome, HistoryJoin, HistoryJoinOutcome, Invocation, Limit,
    Limited, OneLabel, Push, PushOutcome, Spool, SpoolOutcome, Stream, Transport,
};
use super::PerValue;

/// Latency buckets: fine enough to tell 1 ms from 5 ms, wide enough for 5 s.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// How a row's metric is made and registered.
trait Row {
    fn fresh() -> Self;
    fn register(&self, registry: &mut Registry, name: &'static str, help: &'static str);
}

impl Row for Counter {
    fn fresh() -> Self {
        Counter::default()
    }
    fn register(&self, registry: &mut Registry, name: &'static str, help: &'static str) {
        registry.register(name, help, self.clone());
    }
}

impl Row for Gauge {
    fn fresh() -> Self {
        Gauge::default()
    }
    fn register(&self, registry: &mut Registry, name: &'static str, help: &'static str) {
        registry.register(name, help, self.clone());
    }
}

/// Every histogram of the sidecar measures a latency.
impl Row for Histogram {
    fn fresh() -> Self {
        Histogram::new(LATENCY_BUCKETS)
    }
    fn register(&self, registry: &mut Registry, name: &'static str, help: &'static str) {
        registry.register(name, help, self.clone());
    }
}

impl<S, M> Row for Family<S, M>
where
    S: prometheus_client::encoding::EncodeLabelSet
        + Clone
        + std::hash::Hash
        + Eq
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    M: prometheus_client::encoding::EncodeMetric
        + prometheus_client::metrics::TypedMetric
        + Default
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    fn fresh() -> Self {
        Family::default()
    }
    fn register(&self, registry: &mut Registry, name: &'static str, help: &'static str) {
        registry.register(name, help, self.clone());
    }
}

impl<S, M> Row for PerValue<S, M>
where
    S: OneLabel,
    M: prometheus_client::encoding::EncodeMetric
        + prometheus_client::metrics::TypedMetric
        + Default
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    fn fresh() -> Self {
        PerValue::default()
    }
    fn register(&self, registry: &mut Registry, name: &'static str, help: &'static str) {
        registry.register(name, help, self.family().clone());
    }
}

/// The table: `field: Type = "name", "help";` in exposition order, with
/// optional further doc lines before a row.
macro_rules! families {
    ($($(#[$doc:meta])* $field:ident: $ty:ty = $name:literal, $help:literal;)+) => {
        /// The metric families of the sidecar.
        pub struct Metrics {
            registry: Registry,
            $(
                #[doc = $help]
                #[doc = ""]
                $(#[$doc])*
                #[doc = concat!("(`", $name, "`)")]
                pub $field: $ty,
            )+
        }

        impl Metrics {
            /// Makes and registers every family.
            fn registered() -> Metrics {
                let mut registry = Registry::default();
                $(let $field = <$ty as Row>::fresh();
                $field.register(&mut registry, $name, $help);)+
                Metrics { registry, $($field,)+ }
            }
        }
    };
}

families! {
    connections: Family<Connection, Gauge> = "sidecar_connections", "Open client connections by hub and transport";
    /// Resolved once per (stream, event type) by the pipeline.
    events_consumed: Family<Consumed, Counter> =
        "sidecar_events_consumed", "Events read from the bus by stream and event_type";
    events_delivered: Counter = "sidecar_events_delivered", "Frames queued to client connections";
    event_delivery_seconds: Histogram =
        "sidecar_event_delivery_seconds", "Event timestamp to frames queued for the sockets";
    broadcast_seconds: Histogram = "sidecar_broadcast_seconds", "Time to fan one event out to its connections";
    events_coalesced: Counter = "sidecar_events_coalesced", "Events merged into a later one by coalescing";
    events_skipped: Counter = "sidecar_events_skipped",
        "Stream entries passed over undecoded: no connection of this instance was in their room or was their user";
    events_batched: Counter =
        "sidecar_events_batched", "Events sent in one invocation with others by a batch route";
    /// Counted (and logged) through [`super::events::Dropped`].
    events_dropped: PerValue<Dropped> = "sidecar_events_dropped", "Events or frames dropped, by reason";
    stream_lag: Family<Stream, Gauge> =
        "sidecar_stream_lag", "Entries of a stream not yet read by this instance's group";
    stream_pending: Family<Stream, Gauge> =
        "sidecar_stream_pending", "Entries read by this instance's group and not acknowledged";
    slow_consumer_disconnects: Counter =
        "sidecar_slow_consumer_disconnects", "Connections closed because their outbound queue overflowed";
    /// 0 without Redis (the in-process bus).
    redis_up: Gauge = "sidecar_redis_up", "1 while Redis answers, 0 while it does not";
    /// Counted (and logged) through [`super::events::DeadLettered`].
    dead_letters: Family<Stream, Counter> = "sidecar_dead_letters", "Invalid entries copied to a dead-letter stream";
    invocations: Family<Invocation, Counter> = "sidecar_invocations", "Client invocations by hub, method and outcome";
    ingest_wait_seconds: Histogram =
        "sidecar_ingest_wait_seconds", "Time an ingest source waited for room in the pipeline queue";
    /// Counted (and logged) through [`super::events::Disconnected`].
    disconnects: PerValue<Disconnect> = "sidecar_disconnects", "Client connections closed, by reason";
    limited: PerValue<Limited> = "sidecar_limited", "Requests or invocations refused by a limit";
    auth_failures: Family<AuthFailure, Counter> = "sidecar_auth_failures", "Failed token checks, by reason";
    /// Counted (and logged) through [`super::events::ContinuityClosed`].
    continuity_closes: PerValue<Continuity> = "sidecar_continuity_closes",
        "Connections closed (allowReconnect) because events owed to them may be gone, by cause";
    session_handoffs: PerValue<Handoff> = "sidecar_session_handoffs",
        "Stateful sessions saved for, resumed on, or refused by another instance";
    spool_depth: Gauge = "sidecar_spool_depth", "POSTed events waiting for Redis in the spool";
    /// Drops are in `events_dropped` (`spool_*` reasons). Every outcome is
    /// present from the start.
    spool_events: PerValue<Spool> =
        "sidecar_spool_events", "POSTed events through the spool, by outcome (spooled, flushed, refused)";
    /// Every outcome is present from the start.
    push: PerValue<Push> = "sidecar_push_notifications", "Notifications through browser push (Web Push), by outcome";
    history_joins: PerValue<HistoryJoin> =
        "sidecar_history_joins", "Joins naming a last position (missed updates), by outcome";
    history_events: PerValue<HistoryEvent> =
        "sidecar_history_events", "Events kept in the rooms' history for missed updates, by outcome";
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Metrics {
        let m = Metrics::registered();
        m.push.precreate(PushOutcome::ALL);
        // Counted only during a Redis outage: present from the start, so a
        // rate over them is defined before the first outage.
        m.spool_events.precreate(SpoolOutcome::ALL);
        // Counted only where `history` routes are: present from the start
        // too, so dashboards and alerts see zeros rather than no series.
        m.history_joins.precreate(HistoryJoinOutcome::ALL);
        m.history_events.precreate(HistoryEventOutcome::ALL);
        // Counted only after a fault: zeros from the start, so an alert on
        // them has a series to watch before the first one.
        m.continuity_closes.precreate(ContinuityCause::ALL);
        // Closed sets too: the first slow consumer, limit hit or handoff
        // is then an increase from zero, not a series that starts at one
        // (which `increase()` and `rate()` do not see).
        m.disconnects.precreate(DisconnectReason::ALL);
        m.limited.precreate(Limit::ALL);
        m.session_handoffs.precreate(HandoffOutcome::ALL);
        m
    }

    /// Zeros for the labelled series known at start: every hub on every
    /// transport, every routed (stream, event type) this instance reads,
    /// every drop reason, the dead letters of every stream it reads from
    /// Redis (`dead_letter_streams`, none on the in-process bus), and the
    /// successful calls of every server method of the routing file
    /// (`methods`: hub and method names; failures appear with their reason).
    /// Prometheus's own advice: a series that appears only with its first
    /// event leaves rates and alerts undefined until then, and a fresh
    /// instance's page would lack families the contract names.
    pub fn precreate_known<'a>(
        &self,
        hubs: impl IntoIterator<Item = &'a str>,
        consumed: impl IntoIterator<Item = (&'a str, &'a str)>,
        dead_letter_streams: impl IntoIterator<Item = &'a str>,
        methods: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        for hub in hubs {
            let hub: Arc<str> = Arc::from(hub);
            for transport in Transport::ALL {
                let _ = self.connections.get_or_create(&Connection { hub: hub.clone(), transport: *transport });
            }
        }
        for (stream, event_type) in consumed {
            let _ = self
                .events_consumed
                .get_or_create(&Consumed { stream: Arc::from(stream), event_type: Arc::from(event_type) });
        }
        self.events_dropped.precreate(DropReason::ALL);
        for stream in dead_letter_streams {
            let _ = self.dead_letters.get_or_create(&Stream { stream: Arc::from(stream) });
        }
        for (hub, method) in methods {
            let _ = self.invocations.get_or_create(&Invocation {
                hub: Arc::from(hub),
                method: Arc::from(method),
                outcome: "ok",
            });
        }
    }

    /// Counts `n` POSTed events through the spool with `outcome`.
    pub fn spool(&self, outcome: SpoolOutcome, n: u64) {
        if n > 0 {
            self.spool_events.get(outcome).inc_by(n);
        }
    }

    /// Counts one notification (or subscription) through browser push with `outcome`.
    pub fn push(&self, outcome: PushOutcome) {
        self.push.get(outcome).inc();
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests;
