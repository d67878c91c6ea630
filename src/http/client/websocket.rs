//! The WebSocket upgrade: a new connection, a negotiated one, a stateful
//! session resuming here, or one taken over from another instance.

use hyper::body::Incoming;
use hyper::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};

use super::super::error::{text, Body, HttpError};
use super::state::ClientState;
use crate::config::HubDef;
use crate::hub::{self, Attached, Identity, TokenError, TokenTransport};
use crate::transport;

/// How long a resume waits for the transport it supersedes to end (a
/// write to a dead socket ends at the write timeout at the latest).
const SUPERSEDE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Accepts the upgrade: with `id`, the negotiated connection; without it,
/// a new one (`skipNegotiation`; the router takes an empty `id=` for none).
pub(super) async fn upgrade(
    state: &ClientState,
    hub: &HubDef,
    token: Option<String>,
    identity: Identity,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let accept = transport::accept_key(req.headers().get(SEC_WEBSOCKET_KEY).map(|v| v.as_bytes()))?;
    // One order for every request: a stateful session waiting for this very
    // reconnect resumes (it was admitted when it started); anything else is
    // admitted before it may take a token, so a refusal never touches a
    // token that another connection holds.
    // A resume that outran the end of its old socket ends that transport
    // here and takes the session, as ASP.NET Core cancels the previous one.
    let mut parked = match &token {
        Some(t) => state.hubs.parked.take_for_resume(t, hub.id, SUPERSEDE_WAIT).await,
        None => None,
    };
    // A session told to go while its client was away (its outbox overflowed,
    // its events were lost, its token expired) would resume only to carry
    // the Close: refused instead, as one whose buffer lost frames is, and the
    // client reconnects afresh at once. The TS client answers a Close by
    // opening a stray socket that races its own automatic reconnect.
    if let Some(session) = parked.take_if(|s| s.told_to_go()) {
        Box::pin(session.finish(transport::Ended::ByClient)).await;
        return Err(TokenError::Unknown.into());
    }
    // A token this instance never issued may be a stateful session another
    // instance handed off while draining (CONTRACT section 14).
    if let (None, Some(t)) = (&parked, &token) {
        if !state.hubs.tokens.knows(t) {
            parked = hub::take_over(&state.hubs, &state.tasks, t, hub.id, &identity).await;
        }
    }
    let attached = match (&parked, &token) {
        (Some(_), _) => None,
        (None, Some(t)) => {
            state.admit(&identity, &req)?;
            Some(state.hubs.tokens.attach(t, hub.id, TokenTransport::WebSocket, || Attached::WebSocket)?)
        }
        (None, None) => {
            state.admit(&identity, &req)?;
            Some(hub::Negotiated::unnegotiated())
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let hubs = state.hubs.clone();
    // The upgrade waits in a task of its own, which spawns the connection's
    // task once it has the socket, and ends. Tokio sizes a task's cell for
    // its future's largest state, for the task's life: one task awaiting the
    // upgrade and then the connection kept everything the upgrade needed
    // (the upgrade handle, the hub context, the token, the identity: a
    // 240 B future, a 384 B cell) for as long as the connection lived. The
    // connection's own task is the boxed `ConnectionTask`, 16 B: a 128 B cell.
    let tasks = state.tasks.clone();
    match (parked, attached) {
        (Some(session), _) => state.tasks.spawn(async move {
            match on_upgrade.await.map(transport::websocket_socket) {
                Ok(ws) => {
                    tasks.spawn(hub::resume_websocket(hubs, session, identity, ws));
                }
                // The client went away between its request and the
                // socket: the session waits for its next resume, as it
                // would had the socket dropped a moment later.
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade of a resume failed");
                    match token {
                        Some(token) => hub::abandoned(&hubs, session, token).await,
                        None => session.finish(transport::Ended::ByClient).await,
                    }
                }
            }
        }),
        (None, attached) => {
            let negotiated = attached.unwrap_or_else(hub::Negotiated::unnegotiated);
            let hub_id = hub.id;
            state.tasks.spawn(async move {
                match on_upgrade.await.map(transport::websocket_socket) {
                    Ok(ws) => {
                        let start = hub::Start { hub: hub_id, negotiated, token, identity };
                        tasks.spawn(hub::run(hubs, start, hub::Carrier::WebSocket(ws)));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "websocket upgrade failed");
                        if let Some(t) = token {
                            hubs.tokens.release(&t);
                        }
                    }
                }
            })
        }
    };
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "Upgrade")
        .header(SEC_WEBSOCKET_ACCEPT, accept)
        .body(text(""))
        .expect("static headers are valid"))
}
