//! SignalR session semantics on top of any transport: the handshake, hub
//! messages, server methods from the routing file, keep-alive, and how a
//! connection is told to go.

mod authorize;
mod close;
mod error;
mod handoff;
mod invocation;
mod keepalive;
mod limits;
mod reconnect;
mod session;
mod tokens;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use authorize::Authorizer;
pub use error::Error;
pub use handoff::{
    take_over, Addressee, BoxFuture, CatchUp, Frame, Handoff, HandoffError, SessionSnapshot, SessionStore,
};
pub use keepalive::run_keepalive;
pub use limits::RateLimiter;
pub use reconnect::Parked;
pub use session::{HubSession, Identity};
pub use tokens::{
    new_id as new_connection_id, Attached, Negotiated, TokenError, Tokens, TransportKind as TokenTransport,
};

use crate::codec::{AvailableTransport, NegotiateResponse, TransferFormat, TransportKind};
use crate::config::{HubId, LimitsConfig, RouteTable, ServerConfig};
use crate::fanout::Registry;
use crate::ingest::Publisher;
use crate::presence::{Presence, Transition};
use crate::telemetry::Metrics;
use crate::transport::{Limits, WsSettings};

/// Per-connection limits and timings, from the server settings.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Largest client message.
    pub max_message_bytes: usize,
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
    pub fn from_config(c: &ServerConfig, limits: &LimitsConfig, instance_id: &str) -> HubSettings {
        HubSettings {
            max_message_bytes: c.max_message_bytes,
            outbox: Limits { max_frames: c.outbox_max_frames, max_bytes: c.outbox_max_bytes },
            ws: WsSettings {
                read_buffer_bytes: c.ws_read_buffer_bytes,
                max_message_bytes: c.max_message_bytes,
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
type Cut = (Vec<Box<str>>, crate::fanout::Positions);

/// What every session shares: the routing table, the registry, the bus.
pub struct Hubs {
    /// The routing table.
    pub routes: Arc<RouteTable>,
    /// Open connections and groups.
    pub registry: Arc<Registry>,
    /// The bus, for SendTyping.
    pub publisher: Publisher,
    /// Metric handles.
    pub metrics: Arc<Metrics>,
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
    /// Sessions taken out of fan-out for a handoff, until their task saves them.
    handing_off: std::sync::Mutex<std::collections::HashMap<u64, Cut>>,
    next_conn: AtomicU64,
    clock: Instant,
}

impl Hubs {
    /// Builds the shared hub state.
    pub fn new(
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
            handing_off: std::sync::Mutex::default(),
            next_conn: AtomicU64::new(1),
            clock: Instant::now(),
        }
    }

    /// Lets stateful sessions move to another instance on a drain.
    pub fn with_handoff(mut self, handoff: Handoff) -> Hubs {
        self.handoff = Some(handoff);
        self
    }

    /// Whether a new connection from `peer` for `identity` fits the limits
    /// (per source address, per instance, per user). Counted when refused.
    pub fn admit(&self, identity: &Identity, peer: Option<std::net::IpAddr>) -> Result<(), Error> {
        let limits = &self.settings.limits;
        let refuse = |limit: &'static str, message: String| {
            self.metrics.limited.get_or_create(&vec![("limit", limit.to_string())]).inc();
            Err(Error::Limited(message))
        };
        if peer.is_some_and(|ip| !self.connection_limiter.allow(&ip)) {
            return refuse("connections_per_ip", "Too many new connections from this address".into());
        }
        if self.registry.len() >= limits.max_connections {
            return refuse("max_connections", "This server has no room for more connections".into());
        }
        if let Some(user) = &identity.user_id {
            if self.registry.user_connections(user) >= limits.max_connections_per_user {
                return refuse(
                    "connections_per_user",
                    format!("At most {} connections per user", limits.max_connections_per_user),
                );
            }
        }
        Ok(())
    }

    /// Publishes presence transitions as `user_joined` / `user_left` events
    /// (through the bus, so every instance delivers them).
    pub async fn publish_presence(&self, transitions: Vec<Transition>) {
        for t in transitions {
            let (event_type, hub, room, user) = match t {
                Transition::Joined { hub, room, user } => ("user_joined", hub, room, user),
                Transition::Left { hub, room, user } => ("user_left", hub, room, user),
            };
            if self.routes.route(event_type).is_none_or(|r| r.hub != hub) {
                tracing::debug!(event_type, "no route for the presence event on this hub; not published");
                continue;
            }
            // These fields are config::PRESENCE_PAYLOAD_FIELDS: the routing
            // file's `arguments` for these routes are checked against them.
            let mut payload = serde_json::Map::new();
            payload.insert("user_id".into(), user.user_id.into());
            payload.insert("username".into(), user.username.into());
            payload.insert("room_id".into(), room.clone().into());
            let mut metadata = serde_json::Map::new();
            metadata.insert("source_instance".into(), self.settings.instance_id.clone().into());
            let envelope = crate::envelope::Envelope {
                event_id: uuid::Uuid::new_v4().to_string(),
                event_type: event_type.to_string(),
                timestamp: chrono::Utc::now(),
                room_id: room,
                payload,
                metadata: Some(metadata),
            };
            if let Err(e) = self.publisher.publish(envelope).await {
                tracing::warn!(event_type, error = %e, "presence event not published");
            }
        }
    }

    /// Answers `POST {hub}/negotiate`: issues an id and a token and lists
    /// the transports.
    pub fn negotiate(&self, hub: HubId, requested_version: u32, stateful_requested: bool) -> NegotiateResponse {
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

    fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// A WebSocket connection's whole life, boxed: one allocation that every
/// idle connection keeps, so it holds only the waiting state.
pub type WebSocketTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs one WebSocket connection of `hub` from handshake to cleanup. A plain
/// function, not `async`: the arguments are moved into the session here
/// instead of being kept for the connection's life in the future.
pub fn run_websocket(
    hubs: Arc<Hubs>,
    hub: HubId,
    negotiated: Negotiated,
    token: Option<String>,
    identity: Identity,
    upgraded: hyper::upgrade::Upgraded,
) -> WebSocketTask {
    let session = HubSession::new(
        hubs.clone(),
        hub,
        negotiated.connection_id,
        token,
        identity,
        "websockets",
        negotiated.stateful,
    );
    websocket_task(hubs, session, negotiated.early, upgraded)
}

/// Gives a parked stateful session its new WebSocket: it resends what the
/// client has not acknowledged, then carries on.
pub fn resume_websocket(hubs: Arc<Hubs>, mut session: HubSession, upgraded: hyper::upgrade::Upgraded) -> WebSocketTask {
    session.resume();
    tracing::debug!(connection_id = %session.connection_id, "stateful reconnect: resumed");
    websocket_task(hubs, session, Vec::new(), upgraded)
}

fn websocket_task(
    hubs: Arc<Hubs>,
    session: HubSession,
    early: Vec<bytes::Bytes>,
    upgraded: hyper::upgrade::Upgraded,
) -> WebSocketTask {
    match crate::transport::websocket_stream(upgraded, &hubs.settings.ws) {
        Some(ws) => Box::pin(serve_websocket_session(hubs, Box::new(session), early, ws)),
        None => {
            tracing::error!(connection_id = %session.connection_id, "the WebSocket layer did not start: connection closed");
            Box::pin(session.finish(crate::transport::Ended::WriteFailed))
        }
    }
}

/// A plain function returning an `async` block, not an `async fn`: the
/// block keeps each value it owns once, where an `async fn` would keep a
/// by-value argument twice (the argument and the local it moves into), and
/// every idle connection pays for its future. The session is boxed so that
/// moving it into the parked table later does not copy it out of the future.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn serve_websocket_session(
    hubs: Arc<Hubs>,
    mut session: Box<HubSession>,
    early: Vec<bytes::Bytes>,
    mut ws: crate::transport::WsStream,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let outbox = session.outbox();
        for body in early {
            crate::transport::receive(&mut *session, &outbox, &body).await;
        }
        let ended = crate::transport::serve_websocket(&mut ws, &mut *session, &outbox, &hubs.settings.ws).await;
        let _ = ended;
        if outbox.kicked() == Some(crate::transport::Kick::Handoff) {
            // Saved before the socket goes, so the client's immediate
            // resume finds the session on whichever instance it reaches.
            let cut = hubs.take_handing_off(session.conn());
            let (groups, positions) = cut.unwrap_or_else(|| session.detach());
            Box::pin(handoff::hand_off(&hubs, *session, groups, positions)).await;
            drop(ws);
            return;
        }
        drop(ws);
        // A socket that dropped without a Close may come back with the same
        // token (stateful reconnect): keep the session, and its groups, for it.
        match (ended, session.token().map(str::to_string)) {
            (crate::transport::Ended::ByClient | crate::transport::Ended::WriteFailed, Some(token))
                if session.can_resume() =>
            {
                tracing::debug!(connection_id = %session.connection_id, "stateful reconnect: waiting for the client");
                hubs.parked.park(token, *session);
            }
            _ => Box::pin(session.finish(ended)).await,
        }
    }
}

/// Runs one Server-Sent Events connection; `body` feeds the response.
pub async fn run_sse(
    hubs: Arc<Hubs>,
    hub: HubId,
    connection_id: String,
    token: String,
    identity: Identity,
    ends: crate::transport::PollingEnds,
    body: tokio::sync::mpsc::Sender<bytes::Bytes>,
) {
    let mut session =
        HubSession::new(hubs.clone(), hub, connection_id, Some(token), identity, "serversentevents", false);
    let outbox = session.outbox();
    let handshake_timeout = hubs.settings.ws.handshake_timeout;
    let ended = crate::transport::serve_sse(&mut session, &outbox, ends, body, handshake_timeout).await;
    Box::pin(session.finish(ended)).await;
}

/// Runs one Long Polling connection.
pub async fn run_long_polling(
    hubs: Arc<Hubs>,
    hub: HubId,
    connection_id: String,
    token: String,
    identity: Identity,
    ends: crate::transport::PollingEnds,
) {
    // The token outlives the session: an ended connection still answers
    // its client's next poll for a while, as in ASP.NET Core.
    let mut session = HubSession::new(hubs.clone(), hub, connection_id, None, identity, "longpolling", false);
    let outbox = session.outbox();
    let poll_timeout = hubs.settings.long_poll_timeout;
    let handshake_timeout = hubs.settings.ws.handshake_timeout;
    let (ended, ending) =
        crate::transport::serve_long_polling(&mut session, &outbox, ends, poll_timeout, handshake_timeout).await;
    Box::pin(session.finish(ended)).await;
    ending.run(crate::transport::ENDED_KEPT).await;
    hubs.tokens.release(&token);
}

/// Keeps this instance's presence entries alive and publishes `user_left`
/// for users of instances that died, until `stop`.
pub async fn run_presence(hubs: Arc<Hubs>, stop: tokio_util::sync::CancellationToken) {
    let Some(every) = hubs.presence.tick_interval() else { return };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match hubs.presence.tick().await {
            Ok(transitions) => hubs.publish_presence(transitions).await,
            Err(e) => tracing::warn!(error = %e, "presence refresh failed"),
        }
    }
}

/// Tells every connection to reconnect elsewhere (Close with
/// `allowReconnect: true`), spread evenly over `window` so clients do not
/// all come back at once. Events keep flowing to the connections not yet
/// closed: the caller stops ingest only after this returns.
pub async fn drain(hubs: &Hubs, window: Duration) {
    for session in hubs.parked.drain() {
        if hubs.handoff.is_some() && session.can_resume() {
            let (groups, positions) = session.detach();
            handoff::hand_off(hubs, session, groups, positions).await;
        } else {
            session.finish(crate::transport::Ended::Kicked(crate::transport::Kick::ServerShutdown)).await;
        }
    }
    let all = hubs.registry.snapshot();
    if !all.is_empty() {
        tracing::info!(connections = all.len(), window_s = window.as_secs_f64(), "closing connections");
    }
    if hubs.handoff.is_none() {
        return kick_spread(&all, |_| crate::transport::Kick::ServerShutdown, window).await;
    }
    // Stateful sessions leave fan-out at the moment they are told to go, so
    // the instance their client resumes on knows exactly what they missed.
    kick_spread(
        &all,
        |entry| {
            if !entry.outbox.is_stateful() {
                return crate::transport::Kick::ServerShutdown;
            }
            let cut = hubs.registry.detach(entry.id);
            hubs.handing_off.lock().unwrap_or_else(|p| p.into_inner()).insert(entry.id, cut);
            crate::transport::Kick::Handoff
        },
        window,
    )
    .await;
}

impl Hubs {
    fn take_handing_off(&self, conn: u64) -> Option<Cut> {
        self.handing_off.lock().unwrap_or_else(|p| p.into_inner()).remove(&conn)
    }
}

/// Closes (Close with `allowReconnect: true`) every connection of `hubs_fed`
/// that may have missed events of a stream with a hole, spread over
/// `window`, and refuses the resume of parked sessions: their client
/// reconnects afresh and refetches (CONTRACT section 14).
pub async fn close_for_hole(hubs: &Hubs, hubs_fed: &[HubId], cause: &'static str, window: Duration) {
    for session in hubs.parked.drain() {
        session.finish(crate::transport::Ended::Kicked(crate::transport::Kick::ContinuityLost)).await;
    }
    let affected: Vec<_> =
        hubs.registry.snapshot().into_iter().filter(|e| hubs_fed.is_empty() || hubs_fed.contains(&e.hub)).collect();
    hubs.metrics.continuity_closes.get_or_create(&vec![("cause", cause.to_string())]).inc_by(affected.len() as u64);
    tracing::warn!(connections = affected.len(), cause, "closing connections that may have missed events");
    kick_spread(&affected, |_| crate::transport::Kick::ContinuityLost, window).await;
}

/// Kicks `entries` (each for the reason `why` gives) in steps of 100 ms
/// spread over `window`.
async fn kick_spread(
    entries: &[Arc<crate::fanout::ConnEntry>],
    why: impl Fn(&crate::fanout::ConnEntry) -> crate::transport::Kick,
    window: Duration,
) {
    if entries.is_empty() {
        return;
    }
    let steps = (window.as_millis() / 100).max(1) as usize;
    let per_step = entries.len().div_ceil(steps);
    for (i, chunk) in entries.chunks(per_step).enumerate() {
        if i > 0 {
            tokio::time::sleep(window / steps as u32).await;
        }
        for entry in chunk {
            entry.outbox.kick(why(entry));
        }
    }
}
