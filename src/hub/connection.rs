//! One connection's life on each transport, from handshake to cleanup:
//! the transport carries frames, the session handles messages, and how it
//! ended decides what follows (finish, park for a stateful resume, or hand
//! off to another instance).

use std::sync::Arc;

use super::{handoff, HubSession, Hubs, Identity, Negotiated};
use crate::config::HubId;
use crate::telemetry::labels::Transport;

/// A connection's whole life, boxed: one allocation that every idle
/// connection keeps, so it holds only the waiting state.
pub(crate) type ConnectionTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What carries a connection's frames.
// Lives only until run() takes it apart: boxing the stream would cost an
// allocation per connection for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Carrier {
    /// An upgraded WebSocket.
    WebSocket(crate::transport::WsSocket),
    /// A Server-Sent Events response body, with client messages in POSTs.
    ServerSentEvents {
        /// The POSTs and the stop signal.
        ends: crate::transport::PollingEnds,
        /// The response body.
        body: crate::transport::SseBody,
    },
    /// Long polls, with client messages in POSTs.
    LongPolling {
        /// The polls, the POSTs and the stop signal.
        ends: crate::transport::PollingEnds,
    },
}

/// Who a new connection is: its hub, what negotiate gave it, its token
/// (absent for `skipNegotiation`) and its authenticated identity.
pub(crate) struct Start {
    /// The hub.
    pub hub: HubId,
    /// The connection id, stateful flag and early POSTs.
    pub negotiated: Negotiated,
    /// The connection token, released when the connection ends.
    pub token: Option<String>,
    /// Who is connecting.
    pub identity: Identity,
}

/// Runs one new connection from handshake to cleanup, whatever carries it:
/// the one entry point of every transport. A plain function, not `async`:
/// the arguments move into the session here instead of being kept for the
/// connection's life in its future.
pub(crate) fn run(hubs: Arc<Hubs>, start: Start, carrier: Carrier) -> ConnectionTask {
    let Start { hub, negotiated, token, identity } = start;
    let (transport, stateful) = match &carrier {
        Carrier::WebSocket(_) => (Transport::WebSockets, negotiated.stateful),
        Carrier::ServerSentEvents { .. } => (Transport::ServerSentEvents, false),
        Carrier::LongPolling { .. } => (Transport::LongPolling, false),
    };
    match carrier {
        Carrier::WebSocket(socket) => {
            let session =
                HubSession::new(hubs.clone(), hub, negotiated.connection_id, token, identity, transport, stateful);
            Box::pin(serve_websocket_session(hubs, Box::new(session), negotiated.early, socket))
        }
        Carrier::ServerSentEvents { ends, body } => {
            let token = token.unwrap_or_default();
            let session =
                HubSession::new(hubs.clone(), hub, negotiated.connection_id, Some(token), identity, transport, false);
            Box::pin(run_sse(hubs, session, ends, body))
        }
        Carrier::LongPolling { ends } => {
            // The token outlives the session: an ended connection still
            // answers its client's next poll for a while, as in ASP.NET Core.
            let session =
                HubSession::new(hubs.clone(), hub, negotiated.connection_id, None, identity, transport, false);
            Box::pin(run_long_polling(hubs, session, token.unwrap_or_default(), ends))
        }
    }
}

/// Gives a parked stateful session its new WebSocket: it resends what the
/// client has not acknowledged, then carries on.
pub(crate) fn resume_websocket(
    hubs: Arc<Hubs>,
    mut session: HubSession,
    identity: Identity,
    ws: crate::transport::WsSocket,
) -> ConnectionTask {
    session.resume(identity);
    tracing::debug!(connection_id = %session.connection_id, "stateful reconnect: resumed");
    Box::pin(serve_websocket_session(hubs, Box::new(session), Vec::new(), ws))
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
    mut ws: crate::transport::WsSocket,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let outbox = session.outbox();
        // A stateful session is known by its token while served, so that a
        // resume that outruns the old socket's end can supersede it. Only
        // the ticket is kept across the connection's life (every idle
        // connection's future holds it).
        let ticket = match session.token() {
            Some(token) if session.is_stateful() => {
                Some(hubs.parked.serving(token, session.hub(), session.conn(), outbox.clone()))
            }
            _ => None,
        };
        for body in early {
            crate::transport::receive(&mut *session, &outbox, &body).await;
        }
        let ended = crate::transport::serve_websocket(&mut ws, &mut *session, &outbox, &hubs.settings.ws).await;
        let served = ticket.zip(session.token().map(str::to_string));
        Box::pin(after_websocket(&hubs, session, ended, ws)).await;
        if let Some((ticket, token)) = served {
            hubs.parked.served(&token, ticket);
        }
    }
}

/// What follows a WebSocket's end: hand the session off (a drain), park it
/// for its client's stateful reconnect, or finish it. The socket is dropped
/// here, at the moment that order needs.
async fn after_websocket(
    hubs: &Arc<Hubs>,
    session: Box<HubSession>,
    ended: crate::transport::Ended,
    ws: crate::transport::WsSocket,
) {
    use crate::transport::{Ended, Kick};
    let outbox = session.outbox();
    if outbox.kicked() == Some(Kick::Handoff) {
        // Saved before the socket goes, so the client's immediate resume
        // finds the session on whichever instance it reaches.
        Box::pin(handoff::hand_off_at_cut(hubs, *session)).await;
        drop(ws);
        return;
    }
    drop(ws);
    // Superseded by the client's own resume (however the transport then
    // ended): its old socket is gone, as if it had dropped.
    outbox.forgive(Kick::Superseded);
    let ended = if ended == Ended::Kicked(Kick::Superseded) { Ended::ByClient } else { ended };
    // A socket that dropped without a Close may come back with the same
    // token (stateful reconnect): keep the session, and its groups, for it.
    match (ended, session.token().map(str::to_string)) {
        (Ended::ByClient | Ended::WriteFailed, Some(token)) if session.can_resume() => {
            tracing::debug!(connection_id = %session.connection_id, "stateful reconnect: waiting for the client");
            hubs.parked.park(token, *session);
            // A drain's kick that came after the look above found no
            // transport: handed off here, or by the drain's own look after
            // its kicks, whichever takes it from the parked sessions first.
            if outbox.kicked() == Some(Kick::Handoff) {
                handoff::hand_off_parked_kicked(hubs).await;
            }
        }
        _ => Box::pin(session.finish(ended)).await,
    }
}

async fn run_sse(
    hubs: Arc<Hubs>,
    mut session: HubSession,
    ends: crate::transport::PollingEnds,
    body: crate::transport::SseBody,
) {
    let outbox = session.outbox();
    let (handshake_timeout, write_timeout) = (hubs.settings.ws.handshake_timeout, hubs.settings.ws.write_timeout);
    let ended = crate::transport::serve_sse(&mut session, &outbox, ends, body, handshake_timeout, write_timeout).await;
    Box::pin(session.finish(ended)).await;
}

async fn run_long_polling(
    hubs: Arc<Hubs>,
    mut session: HubSession,
    token: String,
    ends: crate::transport::PollingEnds,
) {
    let outbox = session.outbox();
    let poll_timeout = hubs.settings.long_poll_timeout;
    let handshake_timeout = hubs.settings.ws.handshake_timeout;
    let (ended, ending) =
        crate::transport::serve_long_polling(&mut session, &outbox, ends, poll_timeout, handshake_timeout).await;
    Box::pin(session.finish(ended)).await;
    ending.run(crate::transport::ENDED_KEPT).await;
    hubs.tokens.release(&token);
}
