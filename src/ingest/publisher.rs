//! `Publisher`: puts an envelope on the bus. With Redis, XADD to the
//! event's stream so every instance delivers it; without, straight into the
//! local pipeline (the in-process bus). Used by `POST /internal/events` and
//! by the hub's SendTyping.
//!
//! When Redis is configured but does not answer, the event is delivered to
//! this instance's own clients instead of being refused: the HTTP path is
//! the publisher's fallback when Redis fails (seed 000), so it must keep
//! working while Redis is down. If the XADD did land after all, the
//! idempotency window delivers the event once.

use std::sync::Arc;

use crate::config::{MissingField, RouteTable};
use crate::envelope::Envelope;
use crate::pipeline::{Ack, Input, InputSender};

use super::RedisConn;

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
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
}

impl PublishError {
    /// True when the publisher, not the sidecar or Redis, is at fault.
    pub fn is_publisher_fault(&self) -> bool {
        matches!(self, PublishError::NoRoute(_) | PublishError::MissingArgument { .. })
    }
}

/// A cheap, clonable handle to the bus.
#[derive(Clone)]
pub struct Publisher {
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
        /// When the last XADD failed: for a second after a failure, events
        /// go straight to local delivery instead of waiting on Redis again.
        failed_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    },
}

impl Publisher {
    /// Publishes into the local pipeline.
    pub fn memory(routes: Arc<RouteTable>, input: InputSender) -> Publisher {
        Publisher { routes, bus: Bus::Memory(input) }
    }

    /// Publishes with XADD, trimming each stream to about `maxlen` entries;
    /// falls back to `local` when Redis fails.
    pub fn redis(routes: Arc<RouteTable>, conn: RedisConn, maxlen: usize, local: InputSender) -> Publisher {
        Publisher { routes, bus: Bus::Redis { conn, maxlen, local, failed_at: Arc::default() } }
    }

    /// Puts `envelope` on the bus. In memory mode this waits for room in the
    /// pipeline queue, which is the in-process form of back-pressure.
    pub async fn publish(&self, envelope: Envelope) -> Result<(), PublishError> {
        let route = self
            .routes
            .route(&envelope.event_type)
            .ok_or_else(|| PublishError::NoRoute(envelope.event_type.clone()))?;
        if let Some(missing) = route.arguments.missing_field(&envelope.payload) {
            return Err(PublishError::MissingArgument { event_type: route.event_type.clone(), missing });
        }
        let source: Arc<str> = Arc::from(route.stream.as_str());
        let (conn, maxlen, local, failed_at) = match &self.bus {
            Bus::Memory(tx) => return send_local(tx, envelope, source).await,
            Bus::Redis { conn, maxlen, local, failed_at } => (conn, *maxlen, local, failed_at),
        };
        let recently_failed = failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1));
        if recently_failed {
            return send_local(local, envelope, source).await;
        }
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&route.stream).arg("MAXLEN").arg("~").arg(maxlen).arg("*");
        for (k, v) in envelope.to_stream_fields() {
            cmd.arg(k).arg(v);
        }
        match cmd.query_async::<String>(&mut conn.clone()).await {
            Ok(_) => {
                *failed_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(())
            }
            Err(e) => {
                *failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
                tracing::warn!(error = %e, event_id = %envelope.event_id, stream = %route.stream,
                    "XADD failed: delivering to this instance's clients only");
                send_local(local, envelope, source).await
            }
        }
    }
}

async fn send_local(tx: &InputSender, envelope: Envelope, source: Arc<str>) -> Result<(), PublishError> {
    let input = Input { envelope, ack: Ack::none(), source, entry_id: None, received: std::time::Instant::now() };
    tx.send(input).await.map_err(|_| PublishError::Closed)
}
