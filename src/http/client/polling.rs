//! The HTTP side of Server-Sent Events and Long Polling: the event stream
//! GET, polls, POSTed client messages and DELETE. Each connection has one
//! task (spawned on the first GET) that owns its session; these handlers
//! only talk to it through its `PollingHandle`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::super::error::{text, Body, HttpError};
use super::state::ClientState;
use crate::config::HubDef;
use crate::hub::{self, Attached, Identity, TokenError, TokenTransport};
use crate::transport::{self, PollReply, PollRequest, SSE_PREAMBLE};

/// `GET {hub}?id=` with `Accept: text/event-stream`: opens the stream.
/// `abort` drops the HTTP connection should the client stop reading.
pub(super) fn sse(
    state: &ClientState,
    hub: &HubDef,
    token: String,
    identity: Identity,
    abort: CancellationToken,
) -> Result<Response<Body>, HttpError> {
    let (handle, ends) = transport::polling_channel(false);
    let inbound = handle.inbound.clone();
    let connection_id = state
        .hubs
        .tokens
        .attach(&token, hub.id, TokenTransport::ServerSentEvents, || Attached::ServerSentEvents(handle))?;
    hand_over_early(&inbound, connection_id.early);
    let (body_tx, body_rx) = mpsc::channel::<Bytes>(transport::SSE_BODY_CHUNKS);
    let _ = body_tx.try_send(Bytes::from_static(SSE_PREAMBLE));
    let body = transport::SseBody { chunks: body_tx, abort };
    let negotiated = hub::Negotiated { connection_id: connection_id.connection_id, stateful: false, early: Vec::new() };
    let start = hub::Start { hub: hub.id, negotiated, token: Some(token), identity };
    state.tasks.spawn(hub::run(state.hubs.clone(), start, hub::Carrier::ServerSentEvents { ends, body }));
    let frames = stream::unfold(body_rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(Frame::data(b)), rx)) });
    // ASP.NET Core's ServerSentEventsServerTransport headers, and nginx's
    // switch to turn off its buffering.
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache,no-store")
        .header("pragma", "no-cache")
        .header("content-encoding", "identity")
        .header("x-accel-buffering", "no")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("static headers are valid"))
}

/// `GET {hub}?id=` otherwise: a long poll. The first one starts the
/// connection and is answered at once, as ASP.NET Core does.
pub(super) async fn poll(
    state: &ClientState,
    hub: &HubDef,
    token: String,
    identity: Identity,
) -> Result<Response<Body>, HttpError> {
    if state.hubs.tokens.is_fresh(&token, hub.id) {
        let (handle, ends) = transport::polling_channel(true);
        let inbound = handle.inbound.clone();
        let connection_id =
            state.hubs.tokens.attach(&token, hub.id, TokenTransport::LongPolling, || Attached::LongPolling(handle))?;
        hand_over_early(&inbound, connection_id.early);
        let negotiated =
            hub::Negotiated { connection_id: connection_id.connection_id, stateful: false, early: Vec::new() };
        let start = hub::Start { hub: hub.id, negotiated, token: Some(token), identity };
        state.tasks.spawn(hub::run(state.hubs.clone(), start, hub::Carrier::LongPolling { ends }));
        return Ok(octets(Bytes::new()));
    }
    let polls = match state.hubs.tokens.attached(&token, hub.id)? {
        Attached::LongPolling(h) => h.polls.ok_or(TokenError::Unknown)?,
        _ => return Err(TokenError::OtherTransport.into()),
    };
    let (reply, answer) = oneshot::channel();
    polls.send(PollRequest { reply }).await.map_err(|_| TokenError::Unknown)?;
    match answer.await {
        // The poll timed out with nothing to send: ASP.NET Core answers
        // 200, empty, as text.
        Ok(PollReply::Data(bytes)) if bytes.is_empty() => Ok(poll_response(StatusCode::OK, "text/plain", bytes)),
        Ok(PollReply::Data(bytes)) => Ok(octets(bytes)),
        Ok(PollReply::Gone) | Err(_) => Ok(no_content()),
    }
}

/// `POST {hub}?id=`: client messages for an SSE or Long Polling connection.
/// A negotiated connection no transport has attached to yet keeps what is
/// sent for its transport (ASP.NET Core accepts a send before the first poll).
pub(super) async fn send(
    state: &ClientState,
    hub: &HubDef,
    token: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let tokens = &state.hubs.tokens;
    let known = match tokens.attached(token, hub.id) {
        Ok(Attached::WebSocket) => return Err(TokenError::PostToWebSocket.into()),
        Ok(Attached::ServerSentEvents(h) | Attached::LongPolling(h)) => Some(h),
        Err(TokenError::Unknown) if tokens.is_fresh(token, hub.id) => None,
        Err(e) => return Err(e.into()),
    };
    // One POST may carry many hub messages (the .NET and Java clients send
    // all they have buffered), each held to the hub message limit by the
    // session, as ASP.NET Core holds them; the body's own bound only keeps
    // the memory one request takes bounded.
    let limit = state.hubs.settings.max_transport_message_bytes;
    let body = Limited::new(req.into_body(), limit).collect().await.map_err(|_| HttpError::TooLarge)?.to_bytes();
    let handle = match known {
        Some(h) => h,
        None => match tokens.keep_early(token, hub.id, body.clone(), limit) {
            Ok(()) => return Ok(sent()),
            // A transport attached while the body was read: it takes it.
            Err(TokenError::Unknown) => match tokens.attached(token, hub.id)? {
                Attached::WebSocket => return Err(TokenError::PostToWebSocket.into()),
                Attached::ServerSentEvents(h) | Attached::LongPolling(h) => h,
            },
            Err(e) => return Err(e.into()),
        },
    };
    match tokio::time::timeout(Duration::from_secs(10), handle.inbound.send(body)).await {
        Ok(Ok(())) => Ok(sent()),
        _ => Err(TokenError::Unknown.into()),
    }
}

/// Gives a new polling connection's task what was POSTed before it started.
/// The inbound queue is longer than the most bodies kept, so this never waits.
fn hand_over_early(inbound: &mpsc::Sender<Bytes>, early: Vec<Bytes>) {
    for body in early {
        if inbound.try_send(body).is_err() {
            tracing::warn!("a message sent before the connection started was lost: the inbound queue is full");
        }
    }
}

fn sent() -> Response<Body> {
    Response::builder().header("content-type", "text/plain").body(text("")).expect("static headers are valid")
}

/// `DELETE {hub}?id=`: ends a Long Polling connection (202).
pub(super) fn delete(state: &ClientState, hub: &HubDef, token: &str) -> Result<Response<Body>, HttpError> {
    // A negotiated connection without a transport yet is not Long Polling:
    // ASP.NET Core answers 400, as for the other transports.
    if state.hubs.tokens.is_fresh(token, hub.id) {
        return Err(TokenError::DeleteNotLongPolling.into());
    }
    match state.hubs.tokens.attached(token, hub.id)? {
        Attached::LongPolling(h) => {
            h.stop.cancel();
            Ok(Response::builder()
                .status(StatusCode::ACCEPTED)
                .header("content-type", "text/plain")
                .body(text(""))
                .expect("static headers are valid"))
        }
        _ => Err(TokenError::DeleteNotLongPolling.into()),
    }
}

fn octets(bytes: Bytes) -> Response<Body> {
    poll_response(StatusCode::OK, "application/octet-stream", bytes)
}

fn no_content() -> Response<Body> {
    poll_response(StatusCode::NO_CONTENT, "text/plain", Bytes::new())
}

/// A long poll's answer, with the headers ASP.NET Core puts on every poll
/// so that no cache or proxy keeps it (`AddNoCacheHeaders`).
fn poll_response(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-cache, no-store")
        .header("pragma", "no-cache")
        .header("expires", "Thu, 01 Jan 1970 00:00:00 GMT")
        .body(text(bytes))
        .expect("static headers are valid")
}
