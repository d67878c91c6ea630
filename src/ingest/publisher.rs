//! `Publisher`: puts an envelope on the bus. With Redis, XADD to the
//! event's stream so every instance delivers it; without, straight into the
//! local pipeline (the in-process bus). Used by `POST /internal/events`
//! ([`Publisher::publish_or_queue`]) and by the hub's SendTyping and
//! presence events ([`Publisher::publish`]).
//!
//! The two differ only while Redis is configured but does not answer:
//! - a POSTed event is kept in the [`Spool`] and appended once Redis answers,
//!   never delivered locally meanwhile: every instance then delivers it once
//!   from the stream (the idempotency window on `event_id`), where local
//!   delivery first would show it to this instance's clients before the
//!   others' and, after a restart, twice; the answer says `queued`;
//! - typing and presence events are delivered to this instance's own clients
//!   instead (see [`Publisher::publish`]).

use crate::sync::Unpoisoned;
use std::sync::Arc;

use crate::config::{MissingField, RouteTable};
use crate::envelope::Envelope;
use crate::pipeline::{Ack, Event, Input, InputSender};

use super::append::{append, is_unavailable};
use super::spool::{Spool, SpoolError};
use super::spool_flush::SpoolFlusher;
use super::RedisConn;

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// No route names this event type, so no stream either.
    #[error("no route for event_type '{0}'")]
    NoRoute(String),
    /// The payload lacks a field the route's `arguments` name: the event
    /// could never be delivered, so it is refused before it is published.
    #[error("route '{event_type}': {missing}")]
    MissingArgument {
        /// The route's event type.
        event_type: String,
        /// The field and its position.
        missing: MissingField,
    },
    /// The sidecar is shutting down.
    #[error("the sidecar is shutting down")]
    Closed,
    /// Redis does not answer and the spool holds its maximum
    /// (`SIDECAR_SPOOL_MAX_EVENTS`).
    #[error("Redis is unreachable and the spool of POSTed events is full ({0} events): retry later")]
    SpoolFull(usize),
    /// Redis answered the XADD with a refusal that retrying cannot fix
    /// (a key of another type, an ACL denial).
    #[error("Redis refused the XADD to {stream}: {source}")]
    Refused {
        /// The event's stream.
        stream: String,
        /// Redis's answer.
        #[source]
        source: redis::RedisError,
    },
}

impl From<SpoolError> for PublishError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::Closed => PublishError::Closed,
            SpoolError::Full(capacity) => PublishError::SpoolFull(capacity),
        }
    }
}

impl crate::fault::Blame for PublishError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            PublishError::NoRoute(_) | PublishError::MissingArgument { .. } => Fault::Publisher,
            PublishError::SpoolFull(_) | PublishError::Refused { .. } => Fault::Redis,
            PublishError::Closed => Fault::Internal,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            PublishError::NoRoute(_) => "no_route",
            PublishError::MissingArgument { .. } => "missing_argument",
            PublishError::SpoolFull(_) => "spool_full",
            PublishError::Refused { .. } => "refused",
            PublishError::Closed => "closed",
        }
    }
}

/// What became of a published event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Published {
    /// On the bus: appended to its stream, or in the in-process pipeline.
    Accepted,
    /// Redis does not answer: kept in the spool, appended once it does.
    Queued,
}

impl Published {
    /// The word the HTTP answer carries (`{"status": ...}`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Published::Accepted => "accepted",
            Published::Queued => "queued",
        }
    }
}

/// A cheap, clonable handle to the bus.
#[derive(Clone)]
pub(crate) struct Publisher {
    routes: Arc<RouteTable>,
    bus: Bus,
}

#[derive(Clone)]
enum Bus {
    Memory(InputSender),
    Redis {
        conn: RedisConn,
        maxlen: usize,
        local: InputSender,
        /// When the last XADD of [`Publisher::publish`] failed: for a second
        /// after a failure, its events go straight to local delivery instead
        /// of waiting on Redis again.
        failed_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
        /// POSTed events waiting for Redis.
        spool: Arc<Spool>,
    },
}

impl Publisher {
    /// Publishes into the local pipeline.
    pub(crate) fn memory(routes: Arc<RouteTable>, input: InputSender) -> Publisher {
        Publisher { routes, bus: Bus::Memory(input) }
    }

    /// A publisher on an in-process bus of `capacity` events, and what
    /// takes the next event off it: for tests of modules that may not name
    /// the pipeline.
    #[cfg(test)]
    pub(crate) fn memory_bus(
        routes: Arc<RouteTable>,
        capacity: usize,
    ) -> (Publisher, impl FnMut() -> Option<Envelope> + Send + 'static) {
        let (tx, mut rx) = crate::pipeline::channel(capacity);
        (Publisher::memory(routes, tx), move || rx.try_recv().and_then(Input::decoded))
    }

    /// Publishes with XADD, trimming each stream to about `maxlen` entries;
    /// while Redis fails, POSTed events wait in `spool` and typing and
    /// presence events go to `local`.
    pub(crate) fn redis(
        routes: Arc<RouteTable>,
        conn: RedisConn,
        maxlen: usize,
        local: InputSender,
        spool: Spool,
    ) -> Publisher {
        let spool = Arc::new(spool);
        Publisher { routes, bus: Bus::Redis { conn, maxlen, local, failed_at: Arc::default(), spool } }
    }

    /// The task that appends the spool once Redis answers (`None` on the
    /// in-process bus, which has no spool).
    pub(crate) fn spool_flusher(&self) -> Option<SpoolFlusher> {
        match &self.bus {
            Bus::Memory(_) => None,
            Bus::Redis { conn, maxlen, spool, .. } => {
                Some(SpoolFlusher { spool: spool.clone(), conn: conn.clone(), maxlen: *maxlen })
            }
        }
    }

    /// The event's stream, or why it can never be delivered (no route, a
    /// field its route's arguments need is missing).
    fn stream_of(&self, envelope: &Envelope) -> Result<Arc<str>, PublishError> {
        let route = self
            .routes
            .route(&envelope.event_type)
            .ok_or_else(|| PublishError::NoRoute(envelope.event_type.clone()))?;
        if let Some(missing) = route.arguments.missing_field(|| envelope.payload.object()) {
            return Err(PublishError::MissingArgument { event_type: route.event_type.clone(), missing });
        }
        Ok(Arc::from(route.stream.as_str()))
    }

    /// Puts a POSTed event on the bus, or in the spool while Redis does not
    /// answer (`Queued`). While anything is spooled, later events queue
    /// behind it, so they reach the stream in the order received. In memory
    /// mode this waits for room in the pipeline queue, the in-process form
    /// of back-pressure.
    pub(crate) async fn publish_or_queue(&self, envelope: Envelope) -> Result<Published, PublishError> {
        let stream = self.stream_of(&envelope)?;
        let (conn, maxlen, spool) = match &self.bus {
            Bus::Memory(tx) => return send_local(tx, envelope, stream).await.map(|()| Published::Accepted),
            Bus::Redis { conn, maxlen, spool, .. } => (conn, *maxlen, spool),
        };
        if !spool.is_empty() {
            spool.push(stream, envelope)?;
            return Ok(Published::Queued);
        }
        match append(conn, &stream, maxlen, &envelope).await {
            Ok(_) => Ok(Published::Accepted),
            Err(e) if is_unavailable(&e) => {
                tracing::warn!(error = %e, event_id = %envelope.event_id, stream = %stream,
                    "XADD failed: POSTed events wait in the spool until Redis answers");
                spool.push(stream, envelope)?;
                Ok(Published::Queued)
            }
            Err(source) => Err(PublishError::Refused { stream: stream.to_string(), source }),
        }
    }

    /// Puts a typing or presence event on the bus. While Redis does not
    /// answer, the event is delivered to this instance's own clients instead
    /// of being spooled: these events are ephemeral (a typing indicator is
    /// cleared after a few seconds anyway, presence is re-read on join), so
    /// showing them late to everyone is worth less than showing them now to
    /// some, and a duplicate is harmless. After a failed XADD the next
    /// second's events go local at once, then Redis is tried again. If the
    /// XADD did land after all, the idempotency window delivers it once.
    pub(crate) async fn publish(&self, envelope: Envelope) -> Result<(), PublishError> {
        let stream = self.stream_of(&envelope)?;
        let (conn, maxlen, local, failed_at) = match &self.bus {
            Bus::Memory(tx) => return send_local(tx, envelope, stream).await,
            Bus::Redis { conn, maxlen, local, failed_at, .. } => (conn, *maxlen, local, failed_at),
        };
        let recently_failed = failed_at.locked().is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1));
        if recently_failed {
            return send_local(local, envelope, stream).await;
        }
        match append(conn, &stream, maxlen, &envelope).await {
            Ok(_) => {
                *failed_at.locked() = None;
                Ok(())
            }
            Err(e) => {
                *failed_at.locked() = Some(std::time::Instant::now());
                tracing::warn!(error = %e, event_id = %envelope.event_id, stream = %stream,
                    "XADD failed: delivering to this instance's clients only");
                send_local(local, envelope, stream).await
            }
        }
    }
}

async fn send_local(tx: &InputSender, envelope: Envelope, source: Arc<str>) -> Result<(), PublishError> {
    let event = Event { envelope, ack: Ack::none(), source, received: std::time::Instant::now() };
    tx.send(Input::Event(event)).await.map(|_| ()).map_err(|_| PublishError::Closed)
}

#[cfg(test)]
mod tests;
