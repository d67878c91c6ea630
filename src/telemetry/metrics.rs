//! Every Prometheus family, registered once with its help text, unit and
//! buckets (CONTRACT section 8). Hot paths hold resolved handles and add
//! once per event, never once per recipient.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label pairs; a small Vec keeps the label sets typed without a derive.
pub type Labels = Vec<(&'static str, String)>;

/// Latency buckets: fine enough to tell 1 ms from 5 ms, wide enough for 5 s.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The metric families of the sidecar.
pub struct Metrics {
    registry: Registry,
    /// Open connections by hub and transport.
    pub connections: Family<Labels, Gauge>,
    /// Entries read from a stream (or POSTed in-process), by stream and event_type.
    pub events_consumed: Family<Labels, Counter>,
    /// Frames queued to connections.
    pub events_delivered: Counter,
    /// Event `timestamp` to frames queued for the sockets, per event.
    pub event_delivery_seconds: Histogram,
    /// Time of one event's fan-out.
    pub broadcast_seconds: Histogram,
    /// Events merged by coalescing.
    pub events_coalesced: Counter,
    /// Stream entries passed over undecoded: no connection of this instance
    /// was in their room (or was their user), and nothing else here needs them.
    pub events_skipped: Counter,
    /// Events that went out in one invocation with others (`delivery = "batch"`).
    pub events_batched: Counter,
    /// Events or frames dropped, by reason.
    pub events_dropped: Family<Labels, Counter>,
    /// Entries in each stream not yet delivered to this instance's group.
    pub stream_lag: Family<Labels, Gauge>,
    /// Entries delivered to this instance's group but not acknowledged.
    pub stream_pending: Family<Labels, Gauge>,
    /// Connections closed because their outbound queue overflowed.
    pub slow_consumer_disconnects: Counter,
    /// 1 while Redis answers, 0 when it does not (absent without Redis).
    pub redis_up: Gauge,
    /// Invalid entries copied to a dead-letter stream, by stream.
    pub dead_letters: Family<Labels, Counter>,
    /// Client invocations by hub, method and outcome.
    pub invocations: Family<Labels, Counter>,
    /// Time an ingest source waited for room in the pipeline queue.
    pub ingest_wait_seconds: Histogram,
    /// Connections closed, by reason.
    pub disconnects: Family<Labels, Counter>,
    /// Requests or invocations refused by a limit, by limit.
    pub limited: Family<Labels, Counter>,
    /// Failed token checks, by reason.
    pub auth_failures: Family<Labels, Counter>,
    /// Connections closed because owed events may be gone, by cause.
    pub continuity_closes: Family<Labels, Counter>,
    /// Stateful sessions handed between instances, by outcome.
    pub session_handoffs: Family<Labels, Counter>,
    /// POSTed events waiting in the spool for Redis to answer.
    pub spool_depth: Gauge,
    /// POSTed events through the spool, by outcome: `spooled`, `flushed`
    /// (appended to their stream), `refused` (the spool was full: 503).
    /// Drops are in `events_dropped` (`spool_*` reasons).
    pub spool_events: Family<Labels, Counter>,
    /// Notifications through browser push, by outcome (see [`PUSH_OUTCOMES`]).
    pub push: Family<Labels, Counter>,
    /// History joins (missed updates, CONTRACT 15) by outcome: `recovered`,
    /// or why not (`no_position`, `too_old`, `not_covered`, `too_long`,
    /// `unavailable`).
    pub history_joins: Family<Labels, Counter>,
    /// Events of history routes kept in the rooms' history, by outcome:
    /// `written`, `failed` (Redis refused), `dropped` (the writer's queue was full).
    pub history_events: Family<Labels, Counter>,
}

/// The outcomes of `sidecar_push_notifications_total`: per notification
/// `online` (a live connection somewhere: in the app only),
/// `no_subscription`, `queue_full` (dropped before the sender); per
/// subscription `taken` (another instance sends it), `sent`, `retried`
/// (one per retry), `expired` (404/410: the subscription was removed),
/// `rejected` (another 4xx, not retried), `failed` (retries exhausted),
/// `error` (Redis or encryption failed).
pub const PUSH_OUTCOMES: [&str; 10] =
    ["online", "no_subscription", "queue_full", "taken", "sent", "retried", "expired", "rejected", "failed", "error"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            connections: Family::default(),
            events_consumed: Family::default(),
            events_delivered: Counter::default(),
            event_delivery_seconds: latency_histogram(),
            broadcast_seconds: latency_histogram(),
            events_coalesced: Counter::default(),
            events_skipped: Counter::default(),
            events_batched: Counter::default(),
            events_dropped: Family::default(),
            stream_lag: Family::default(),
            stream_pending: Family::default(),
            slow_consumer_disconnects: Counter::default(),
            redis_up: Gauge::default(),
            dead_letters: Family::default(),
            invocations: Family::default(),
            ingest_wait_seconds: latency_histogram(),
            disconnects: Family::default(),
            limited: Family::default(),
            auth_failures: Family::default(),
            continuity_closes: Family::default(),
            session_handoffs: Family::default(),
            spool_depth: Gauge::default(),
            spool_events: Family::default(),
            push: Family::default(),
            history_joins: Family::default(),
            history_events: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("sidecar_connections", "Open client connections by hub and transport", m.connections.clone());
        r.register(
            "sidecar_events_consumed",
            "Events read from the bus by stream and event_type",
            m.events_consumed.clone(),
        );
        r.register("sidecar_events_delivered", "Frames queued to client connections", m.events_delivered.clone());
        r.register(
            "sidecar_event_delivery_seconds",
            "Event timestamp to frames queued for the sockets",
            m.event_delivery_seconds.clone(),
        );
        r.register(
            "sidecar_broadcast_seconds",
            "Time to fan one event out to its connections",
            m.broadcast_seconds.clone(),
        );
        r.register(
            "sidecar_events_coalesced",
            "Events merged into a later one by coalescing",
            m.events_coalesced.clone(),
        );
        r.register(
            "sidecar_events_skipped",
            "Stream entries passed over undecoded: no connection of this instance was in their room",
            m.events_skipped.clone(),
        );
        r.register(
            "sidecar_events_batched",
            "Events sent in one invocation with others by a batch route",
            m.events_batched.clone(),
        );
        r.register("sidecar_events_dropped", "Events or frames dropped, by reason", m.events_dropped.clone());
        r.register(
            "sidecar_stream_lag",
            "Entries of a stream not yet read by this instance's group",
            m.stream_lag.clone(),
        );
        r.register(
            "sidecar_stream_pending",
            "Entries read by this instance's group and not acknowledged",
            m.stream_pending.clone(),
        );
        r.register(
            "sidecar_slow_consumer_disconnects",
            "Connections closed because their outbound queue overflowed",
            m.slow_consumer_disconnects.clone(),
        );
        r.register("sidecar_redis_up", "1 while Redis answers, 0 while it does not", m.redis_up.clone());
        r.register("sidecar_dead_letters", "Invalid entries copied to a dead-letter stream", m.dead_letters.clone());
        r.register("sidecar_invocations", "Client invocations by hub, method and outcome", m.invocations.clone());
        r.register(
            "sidecar_ingest_wait_seconds",
            "Time an ingest source waited for room in the pipeline queue",
            m.ingest_wait_seconds.clone(),
        );
        r.register("sidecar_disconnects", "Client connections closed, by reason", m.disconnects.clone());
        r.register("sidecar_limited", "Requests or invocations refused by a limit", m.limited.clone());
        r.register("sidecar_auth_failures", "Failed token checks, by reason", m.auth_failures.clone());
        r.register(
            "sidecar_continuity_closes",
            "Connections closed (allowReconnect) because events owed to them may be gone, by cause",
            m.continuity_closes.clone(),
        );
        r.register(
            "sidecar_session_handoffs",
            "Stateful sessions saved for, resumed on, or refused by another instance",
            m.session_handoffs.clone(),
        );
        r.register("sidecar_spool_depth", "POSTed events waiting for Redis in the spool", m.spool_depth.clone());
        r.register(
            "sidecar_spool_events",
            "POSTed events through the spool, by outcome (spooled, flushed, refused)",
            m.spool_events.clone(),
        );
        r.register(
            "sidecar_push_notifications",
            "Notifications through browser push (Web Push), by outcome",
            m.push.clone(),
        );
        for outcome in PUSH_OUTCOMES {
            m.push.get_or_create(&vec![("outcome", outcome.to_string())]).inc_by(0);
        }
        r.register(
            "sidecar_history_joins",
            "Joins naming a last position (missed updates), by outcome",
            m.history_joins.clone(),
        );
        r.register(
            "sidecar_history_events",
            "Events kept in the rooms' history for missed updates, by outcome",
            m.history_events.clone(),
        );
        // Counted only during a Redis outage: present from the start, so a
        // rate over them is defined before the first outage.
        for outcome in ["spooled", "flushed", "refused"] {
            m.spool_events.get_or_create(&vec![("outcome", outcome.to_string())]).inc_by(0);
        }
        Metrics { registry, ..m }
    }

    /// Counts a dropped event or frame.
    pub fn dropped(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.events_dropped.get_or_create(&vec![("reason", reason.to_string())]).inc_by(n);
        }
    }

    /// Counts `n` POSTed events through the spool with `outcome`.
    pub fn spool(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            self.spool_events.get_or_create(&vec![("outcome", outcome.to_string())]).inc_by(n);
        }
    }

    /// Counts `n` notifications (or subscriptions) through browser push with `outcome`.
    pub fn push(&self, outcome: &'static str, n: u64) {
        self.push.get_or_create(&vec![("outcome", outcome.to_string())]).inc_by(n);
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
