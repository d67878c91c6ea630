//! The context every session shares (`Hubs`): routing table, fan-out,
//! bus, limits, tokens and parked sessions; admission of new connections
//! and the answer to negotiate.

use crate::sync::Unpoisoned;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Error;
use super::{Authorizer, Handoff, Identity, Parked, RateLimiter, Tokens};
use crate::codec::{AvailableTransport, NegotiateResponse, TransferFormat, TransportKind};
use crate::config::{HubId, LimitsConfig, RouteTable, ServerConfig};
use crate::fanout::Registry;
use crate::ingest::Publisher;
use crate::presence::Presence;
use crate::telemetry::labels::Limit;
use crate::telemetry::Metrics;
use crate::transport::{Limits, WsSettings};

/// Per-connection limits and timings, from the server settings.
#[derive(Debug, Clone)]
pub(crate) struct HubSettings {
    /// Largest client hub message.
    pub max_message_bytes: usize,
    /// Largest WebSocket message or POST body, which may carry many hub
    /// messages.
    pub max_transport_message_bytes: usize,
    /// Outbound queue limits.
    pub outbox: Limits,
    /// WebSocket settings.
    pub ws: WsSettings,
    /// Server ping interval.
    pub keepalive: Duration,
    /// Silence after which a client is dropped.
    pub client_timeout: Duration,
    /// Unused negotiations are forgotten after this.
    pub negotiate_timeout: Duration,
    /// A long poll with nothing to send is answered empty after this.
    pub long_poll_timeout: Duration,
    /// Whether clients may negotiate stateful reconnect.
    pub stateful_reconnect: bool,
    /// Unacknowledged bytes kept per stateful connection.
    pub replay_max_bytes: usize,
    /// This instance, for `metadata.source_instance`.
    pub instance_id: String,
    /// Connection and invocation limits.
    pub limits: LimitsConfig,
}

impl HubSettings {
    /// Derives the hub settings from the server configuration.
    pub(crate) fn from_config(c: &ServerConfig, limits: &LimitsConfig, instance_id: &str) -> HubSettings {
        HubSettings {
            max_message_bytes: c.max_message_bytes,
            max_transport_message_bytes: c.max_transport_message_bytes,
            outbox: Limits { max_frames: c.outbox_max_frames, max_bytes: c.outbox_max_bytes },
            ws: WsSettings {
                read_buffer_bytes: c.ws_read_buffer_bytes,
                max_transport_message_bytes: c.max_transport_message_bytes,
                handshake_timeout: c.handshake_timeout,
                write_timeout: c.client_timeout.min(Duration::from_secs(10)),
            },
            keepalive: c.keepalive,
            client_timeout: c.client_timeout,
            negotiate_timeout: c.negotiate_timeout,
            long_poll_timeout: c.long_poll_timeout,
            stateful_reconnect: c.stateful_reconnect,
            replay_max_bytes: c.stateful_reconnect_buffer_bytes,
            instance_id: instance_id.to_string(),
            limits: limits.clone(),
        }
    }
}

/// A connection's groups and the fan-out positions when it left fan-out.
pub(super) type Cut = (Vec<Box<str>>, crate::fanout::Positions);

/// What every session shares: the routing table, the registry, the bus.
pub(crate) struct Hubs {
    /// The routing table.
    pub routes: Arc<RouteTable>,
    /// Open connections and groups.
    pub registry: Arc<Registry>,
    /// The bus, for SendTyping.
    pub publisher: Publisher,
    /// Metric handles.
    pub metrics: Arc<Metrics>,
    /// Each hub's label values, shared by all its sessions' series.
    pub labels: super::HubLabels,
    /// Limits and timings.
    pub settings: HubSettings,
    /// Negotiated connection tokens.
    pub tokens: Tokens,
    /// Stateful sessions waiting for their client to reconnect.
    pub parked: Parked,
    /// Join policies and their webhook cache.
    pub authorizer: Authorizer,
    /// Who is in which room of a presence hub, on any instance.
    pub presence: Presence,
    /// Invocations per user (per connection without authentication).
    pub invocation_limiter: RateLimiter<Arc<str>>,
    /// New connections per source address.
    pub connection_limiter: RateLimiter<std::net::IpAddr>,
    /// Where stateful sessions go when this instance drains (with Redis).
    pub handoff: Option<Handoff>,
    /// Browser push subscriptions, when a VAPID key is configured.
    pub push: Option<Arc<crate::push::Registrar>>,
    /// The rooms' history for `history` joins (with Redis).
    pub history: Option<Arc<dyn super::RoomHistory>>,
    /// Inactivity timeouts and idleness for away presence, per hub.
    pub activity: super::Activity,
    /// The pipeline's cuts: a stateful session leaves fan-out on a handoff,
    /// and enters it on a takeover, with no batch of its rooms held back.
    pub cuts: Option<crate::fanout::Cuts>,
    /// Sessions taken out of fan-out for a handoff, until their task saves them.
    pub(super) handing_off: std::sync::Mutex<std::collections::HashMap<u64, Cut>>,
    /// Takeovers under way: the drain keeps ingest running for them.
    pub takeovers: super::takeovers::Takeovers,
    next_conn: AtomicU64,
    /// Tokio's clock (the system clock outside tests), so that tests with
    /// paused time can step the keep-alive and the client timeout.
    clock: tokio::time::Instant,
}

impl Hubs {
    /// Builds the shared hub state.
    pub(crate) fn new(
        routes: Arc<RouteTable>,
        registry: Arc<Registry>,
        publisher: Publisher,
        metrics: Arc<Metrics>,
        settings: HubSettings,
        presence: Presence,
    ) -> Hubs {
        let limits = &settings.limits;
        let invocation_limiter =
            RateLimiter::new(f64::from(limits.invocations_per_minute) / 60.0, limits.invocation_burst);
        let connection_limiter =
            RateLimiter::new(f64::from(limits.connections_per_ip_per_second), limits.connection_burst_per_ip);
        Hubs {
            activity: super::Activity::new(&routes),
            labels: super::HubLabels::new(&routes),
            routes,
            registry,
            publisher,
            metrics,
            settings,
            tokens: Tokens::default(),
            parked: Parked::default(),
            invocation_limiter,
            connection_limiter,
            authorizer: Authorizer::default(),
            presence,
            handoff: None,
            push: None,
            history: None,
            cuts: None,
            handing_off: std::sync::Mutex::default(),
            takeovers: super::takeovers::Takeovers::default(),
            next_conn: AtomicU64::new(1),
            clock: tokio::time::Instant::now(),
        }
    }

    /// Lets webhook join policies ask the backend through `webhook`.
    pub(crate) fn with_webhook(mut self, webhook: std::sync::Arc<dyn super::Webhook>) -> Hubs {
        self.authorizer = Authorizer::with_webhook(webhook);
        self
    }

    /// Lets stateful sessions move to another instance on a drain.
    pub(crate) fn with_handoff(mut self, handoff: Handoff) -> Hubs {
        self.handoff = Some(handoff);
        self
    }

    /// Takes handoff and takeover cuts in the pipeline's task (see
    /// [`crate::fanout::Cuts`]), so no held batch is lost or doubled.
    pub(crate) fn with_cuts(mut self, cuts: crate::fanout::Cuts) -> Hubs {
        self.cuts = Some(cuts);
        self
    }

    /// Lets `history` joins replay what their client missed (with Redis).
    pub(crate) fn with_history(mut self, history: Arc<dyn super::RoomHistory>) -> Hubs {
        self.history = Some(history);
        self
    }

    /// Offers the browser-push methods (RegisterPush, ...).
    pub(crate) fn with_push(mut self, registrar: Arc<crate::push::Registrar>) -> Hubs {
        self.push = Some(registrar);
        self
    }

    /// Whether a new connection from `peer` for `identity` fits the limits
    /// (per source address, per instance, per user). Counted when refused.
    pub(crate) fn admit(&self, identity: &Identity, peer: Option<std::net::IpAddr>) -> Result<(), Error> {
        let limits = &self.settings.limits;
        let refuse = |limit: Limit, message: String| {
            self.metrics.limited.get(limit).inc();
            Err(Error::Limited(message))
        };
        if peer.is_some_and(|ip| !self.connection_limiter.allow(&ip)) {
            return refuse(Limit::ConnectionsPerIp, "Too many new connections from this address".into());
        }
        if self.registry.len() >= limits.max_connections {
            return refuse(Limit::MaxConnections, "This server has no room for more connections".into());
        }
        if let Some(user) = &identity.user_id {
            if self.registry.user_connections(user) >= limits.max_connections_per_user {
                return refuse(
                    Limit::ConnectionsPerUser,
                    format!("At most {} connections per user", limits.max_connections_per_user),
                );
            }
        }
        Ok(())
    }

    /// Answers `POST {hub}/negotiate`: issues an id and a token and lists
    /// the transports.
    pub(crate) fn negotiate(&self, hub: HubId, requested_version: u32, stateful_requested: bool) -> NegotiateResponse {
        let stateful = stateful_requested && self.settings.stateful_reconnect && requested_version >= 1;
        let (id, token) = self.tokens.issue(hub, stateful, requested_version.min(1));
        let transports = vec![
            AvailableTransport {
                transport: TransportKind::WebSockets,
                transfer_formats: vec![TransferFormat::Text, TransferFormat::Binary],
            },
            AvailableTransport {
                transport: TransportKind::ServerSentEvents,
                transfer_formats: vec![TransferFormat::Text],
            },
            AvailableTransport {
                transport: TransportKind::LongPolling,
                transfer_formats: vec![TransferFormat::Text, TransferFormat::Binary],
            },
        ];
        NegotiateResponse {
            use_stateful_reconnect: stateful,
            ..NegotiateResponse::new(requested_version, id, token, transports)
        }
    }

    /// Milliseconds since start, the clock of `last_seen_ms`.
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    pub(super) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

impl Hubs {
    pub(super) fn take_handing_off(&self, conn: u64) -> Option<Cut> {
        self.handing_off.locked().remove(&conn)
    }
}

#[cfg(test)]
mod tests;
