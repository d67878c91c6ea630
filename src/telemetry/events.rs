//! Notable occurrences, each logged and counted in one place: one struct per
//! occurrence, recorded with [`Metrics::record`]. The log line's level and
//! the counter's label come from the same value, so the two cannot disagree
//! and no call site picks a level of its own.

use std::fmt::Display;
use std::sync::Arc;

use tracing::Level;

use super::labels::{ContinuityCause, DisconnectReason, DropReason, Stream, Transport};
use super::Metrics;

/// Something that both logs and counts.
pub trait Notable {
    /// Writes the log line and adds to the counter.
    fn record(self, metrics: &Metrics);
}

impl Metrics {
    /// Logs and counts `event`.
    pub fn record(&self, event: impl Notable) {
        event.record(self)
    }
}

/// Emits `message` with `fields` at a level chosen at run time (tracing's
/// macros take the level as a constant).
macro_rules! at_level {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::error!($($rest)+),
            Level::WARN => tracing::warn!($($rest)+),
            Level::INFO => tracing::info!($($rest)+),
            Level::DEBUG => tracing::debug!($($rest)+),
            _ => tracing::trace!($($rest)+),
        }
    };
}

/// A connection closed (`sidecar_disconnects_total`).
#[derive(Debug)]
pub struct Disconnected<'a> {
    /// Why.
    pub reason: DisconnectReason,
    /// Its public SignalR connection id.
    pub connection_id: &'a str,
    /// Its hub's name.
    pub hub: &'a str,
    /// Its transport.
    pub transport: Transport,
}

impl Notable for Disconnected<'_> {
    fn record(self, metrics: &Metrics) {
        metrics.disconnects.get(self.reason).inc();
        connection_event("connection closed", self.connection_id, self.hub, self.transport, self.reason.as_str());
    }
}

/// Logs a connection opening or closing; with traces on, also as a short
/// span carrying the event, so it shows in Jaeger.
pub fn connection_event(what: &'static str, connection_id: &str, hub: &str, transport: Transport, detail: &str) {
    let transport = transport.as_str();
    if super::tracing_enabled() {
        let span = tracing::info_span!("sidecar.connection", otel.name = what, connection_id = %connection_id, hub = %hub, transport);
        span.in_scope(|| tracing::info!(detail, "{what}"));
    } else {
        tracing::debug!(connection_id = %connection_id, hub = %hub, transport, detail, "{what}");
    }
}

/// `count` events or frames dropped (`sidecar_events_dropped_total`);
/// nothing is logged or counted when `count` is 0.
pub struct Dropped<'a> {
    /// Why.
    pub reason: DropReason,
    /// How many.
    pub count: u64,
    /// The event, when one event was dropped.
    pub event_id: Option<&'a str>,
    /// What the log line adds to the reason (a missing field, an age).
    pub detail: Option<&'a dyn Display>,
}

impl<'a> Dropped<'a> {
    /// One event dropped for `reason`.
    pub fn event(reason: DropReason, event_id: &'a str) -> Dropped<'a> {
        Dropped { reason, count: 1, event_id: Some(event_id), detail: None }
    }

    /// `count` events or frames dropped for `reason`.
    pub fn many(reason: DropReason, count: u64) -> Dropped<'a> {
        Dropped { reason, count, event_id: None, detail: None }
    }

    /// With `detail` in the log line.
    pub fn with_detail(self, detail: &'a dyn Display) -> Dropped<'a> {
        Dropped { detail: Some(detail), ..self }
    }
}

impl DropReason {
    /// The log line of a drop, and its level: a publisher's event that can
    /// never be delivered is worth a warning; the routine drops (the rules
    /// working as meant) and the losses whose task logs them with their own
    /// context (the spool's flusher, the hole's report) are at debug.
    fn line(self) -> (Level, &'static str) {
        match self {
            DropReason::MissingArgument => (Level::WARN, "event not delivered: a named argument is missing"),
            // Streams may carry event types meant for other consumers.
            DropReason::NoRoute => (Level::DEBUG, "event not delivered: no route for its event_type"),
            DropReason::Stale => (Level::DEBUG, "stale event dropped"),
            DropReason::Duplicate => (Level::DEBUG, "duplicate event dropped"),
            DropReason::OutboxFull => (Level::DEBUG, "frames dropped: outboxes full"),
            DropReason::SpoolStale | DropReason::SpoolRefused | DropReason::SpoolShutdown => {
                (Level::DEBUG, "spooled events dropped")
            }
            DropReason::GroupLost => (Level::DEBUG, "entries lost with the consumer group"),
        }
    }
}

impl Notable for Dropped<'_> {
    fn record(self, metrics: &Metrics) {
        if self.count == 0 {
            return;
        }
        metrics.events_dropped.get(self.reason).inc_by(self.count);
        let (level, message) = self.reason.line();
        let reason = self.reason.as_str();
        let detail = self.detail.map(tracing::field::display);
        at_level!(level, reason, count = self.count, event_id = self.event_id, detail, "{message}");
    }
}

/// Connections closed (allowReconnect) because events owed to them may be
/// gone (`sidecar_continuity_closes_total`), logged at warn: clients refetch.
#[derive(Debug)]
pub struct ContinuityClosed {
    /// Why events may be gone.
    pub cause: ContinuityCause,
    /// How many connections (counted even when 0, so the series exists).
    pub connections: u64,
}

impl Notable for ContinuityClosed {
    fn record(self, metrics: &Metrics) {
        metrics.continuity_closes.get(self.cause).inc_by(self.connections);
        tracing::warn!(
            connections = self.connections,
            cause = self.cause.as_str(),
            "closing connections that may have missed events"
        );
    }
}

/// An invalid entry copied to its stream's dead-letter stream
/// (`sidecar_dead_letters_total`), logged at warn: a publisher sent it.
#[derive(Debug)]
pub struct DeadLettered<'a> {
    /// The stream it was read from.
    pub stream: &'a Arc<str>,
    /// Its entry id.
    pub entry_id: &'a str,
    /// Why it can never be delivered.
    pub reason: &'a str,
}

impl Notable for DeadLettered<'_> {
    fn record(self, metrics: &Metrics) {
        metrics.dead_letters.get_or_create(&Stream { stream: self.stream.clone() }).inc();
        tracing::warn!(stream = %self.stream, entry_id = %self.entry_id, reason = %self.reason, "invalid entry: dead-lettered");
    }
}
