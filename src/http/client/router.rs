//! The client port's routes: `POST {hub}/negotiate` and the hub paths,
//! dispatched to the transport the request asks for.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONNECTION, UPGRADE};
use hyper::{Method, Request, Response};

use super::super::error::{text, Body, HttpError};
use super::super::query::param;
use super::super::ConnAbort;
use super::state::ClientState;
use super::{polling, websocket};

/// Handles one client-port request.
pub(crate) async fn handle(state: Arc<ClientState>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(route(&state, req).await.unwrap_or_else(HttpError::into_response))
}

async fn route(state: &ClientState, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
    let path = req.uri().path();
    if let Some(hub) = negotiate_prefix(path).and_then(|p| state.hubs.routes.hub_by_path(p)) {
        if req.method() != Method::POST {
            return Err(HttpError::MethodNotAllowed("POST"));
        }
        state.authenticate(&req)?;
        let query = req.uri().query();
        let version = negotiate_version(param(query, "negotiateVersion").as_deref())?;
        let stateful = param(query, "useStatefulReconnect").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let body = state.hubs.negotiate(hub.id, version, stateful).to_json();
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(text(body))
            .expect("static headers are valid"));
    }
    let hub = state.hubs.routes.hub_by_path(path).ok_or(HttpError::NotFound)?.clone();
    if !matches!(*req.method(), Method::GET | Method::POST | Method::DELETE) {
        return Err(HttpError::MethodNotAllowed("GET, POST, DELETE"));
    }
    let identity = state.authenticate(&req)?;
    // An empty `id=` is no id, as ASP.NET Core tests it (`StringValues.
    // IsNullOrEmpty`): a WebSocket starts a new connection, anything else is
    // 400 "Connection ID required" rather than 404 for an unknown token.
    let token = param(req.uri().query(), "id").filter(|id| !id.is_empty());
    if req.method() == Method::GET && is_websocket(&req) {
        return websocket::upgrade(state, &hub, token, identity, req).await;
    }
    let token = token.ok_or_else(|| HttpError::BadRequest("Connection ID required".into()))?;
    match *req.method() {
        Method::GET if accepts_event_stream(&req) => {
            state.admit(&identity, &req)?;
            // Every connection the server accepts carries one (http/mod.rs).
            let abort = req.extensions().get::<ConnAbort>().map(|a| a.0.clone()).unwrap_or_default();
            polling::sse(state, &hub, token, identity, abort)
        }
        Method::GET => {
            if state.hubs.tokens.is_fresh(&token, hub.id) {
                state.admit(&identity, &req)?;
            }
            polling::poll(state, &hub, token, identity).await
        }
        Method::POST => polling::send(state, &hub, &token, req).await,
        Method::DELETE => polling::delete(state, &hub, &token),
        _ => Err(HttpError::MethodNotAllowed("GET, POST, DELETE")),
    }
}

/// The negotiate version a client asks for (0 without one), refused as
/// ASP.NET Core's `ProcessNegotiate` refuses it; versions above 1 get 1.
fn negotiate_version(asked: Option<&str>) -> Result<u32, HttpError> {
    let Some(asked) = asked else { return Ok(0) };
    match asked.trim().parse::<i32>() {
        Err(_) => Err(HttpError::Negotiate("The client requested a non-integer protocol version.".into())),
        Ok(v) if v < 0 => Err(HttpError::Negotiate(format!(
            "The client requested version '{v}', but the server does not support this version."
        ))),
        Ok(v) => Ok(v.unsigned_abs()),
    }
}

/// The hub path of `{hub}/negotiate`, matched as ASP.NET Core's endpoint
/// routing matches it: any letter case, one trailing `/` ignored.
fn negotiate_prefix(path: &str) -> Option<&str> {
    const SUFFIX: &str = "/negotiate";
    let path = path.strip_suffix('/').unwrap_or(path);
    let cut = path.len().checked_sub(SUFFIX.len())?;
    path.get(cut..)?.eq_ignore_ascii_case(SUFFIX).then(|| &path[..cut])
}

fn accepts_event_stream(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("text/event-stream")))
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    let has = |name, want: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
    };
    has(UPGRADE, "websocket") && has(CONNECTION, "upgrade")
}
