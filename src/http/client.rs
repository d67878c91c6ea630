//! The client port: `POST {hub}/negotiate` and the hub paths themselves,
//! dispatched to the transport the request asks for. Nothing here can
//! publish events or read metrics.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use tokio_util::task::TaskTracker;

use super::error::{text, Body, HttpError};
use super::polling;
use super::query::param;
use super::PeerAddr;
use crate::auth::{token_from, AuthError, Authenticator};
use crate::config::HubDef;
use crate::hub::{self, Attached, Hubs, Identity, TokenTransport};
use crate::transport;

/// What the client port's handlers share.
pub struct ClientState {
    /// Hubs and their sessions.
    pub hubs: Arc<Hubs>,
    /// Owner of the connection tasks that outlive their HTTP request.
    pub tasks: TaskTracker,
    /// Token checks, when `SIDECAR_AUTH=jwt`.
    pub auth: Option<Arc<Authenticator>>,
    /// Header carrying the client's address behind a proxy (`SIDECAR_CLIENT_IP_HEADER`).
    pub client_ip_header: Option<String>,
}

impl ClientState {
    /// Who sent `req`: a verified token's claims with `SIDECAR_AUTH=jwt`
    /// (401 without a valid one), nobody in particular without.
    fn authenticate(&self, req: &Request<Incoming>) -> Result<Identity, HttpError> {
        let Some(auth) = &self.auth else {
            return Ok(Identity::default());
        };
        let query_token = param(req.uri().query(), "access_token");
        let header = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let verified =
            token_from(query_token.as_deref(), header).ok_or(AuthError::Missing).and_then(|t| auth.verify(&t));
        match verified {
            Ok(claims) => Ok(Identity {
                user_id: Some(Arc::from(claims.user_id.as_str())),
                name: claims.name,
                expires_at_ms: claims
                    .expires_at
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64),
                claims: Some(Arc::new(claims.claims)),
            }),
            Err(e) => {
                self.hubs.metrics.auth_failures.get_or_create(&vec![("reason", e.reason().to_string())]).inc();
                Err(HttpError::Unauthorized(e))
            }
        }
    }

    /// Whether a new connection fits the limits.
    fn admit(&self, identity: &Identity, req: &Request<Incoming>) -> Result<(), HttpError> {
        self.hubs.admit(identity, self.client_ip(req)).map_err(HttpError::Limited)
    }

    /// The client's address: the last one a trusted proxy appended to the
    /// configured header (behind an ingress every TCP peer is the ingress),
    /// else the TCP peer. Earlier entries are the client's own claims and are
    /// never trusted.
    fn client_ip(&self, req: &Request<Incoming>) -> Option<std::net::IpAddr> {
        let forwarded = self.client_ip_header.as_deref().and_then(|name| {
            let value = req.headers().get_all(name).iter().next_back()?.to_str().ok()?;
            value.rsplit(',').next()?.trim().parse().ok()
        });
        forwarded.or_else(|| req.extensions().get::<PeerAddr>().map(|p| p.0.ip()))
    }
}

/// CORS policy for browser clients on another origin.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Allowed origins; `*` allows any (echoing it, since SignalR sends credentials).
    pub origins: Vec<String>,
}

impl Cors {
    /// The tower-http layer for this policy.
    pub fn layer(&self) -> tower_http::cors::CorsLayer {
        use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
        let origin = if self.origins.iter().any(|o| o == "*") {
            AllowOrigin::mirror_request()
        } else {
            AllowOrigin::list(self.origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        };
        CorsLayer::new()
            .allow_origin(origin)
            .allow_credentials(true)
            .allow_headers(AllowHeaders::mirror_request())
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
    }
}

/// Handles one client-port request.
pub async fn handle(state: Arc<ClientState>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
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
    let token = param(req.uri().query(), "id");
    if req.method() == Method::GET && is_websocket(&req) {
        return websocket(state, &hub, token, identity, req).await;
    }
    let token = token.ok_or_else(|| HttpError::BadRequest("Connection ID required".into()))?;
    match *req.method() {
        Method::GET if accepts_event_stream(&req) => {
            state.admit(&identity, &req)?;
            polling::sse(state, &hub, token, identity)
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

/// Accepts the upgrade: with `id`, the negotiated connection; without it,
/// a new one (`skipNegotiation`).
async fn websocket(
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
    let mut parked = token.as_deref().and_then(|t| state.hubs.parked.take(t, hub.id));
    // A token this instance never issued may be a stateful session another
    // instance handed off while draining (CONTRACT section 14).
    if let (None, Some(t)) = (&parked, &token) {
        if !state.hubs.tokens.knows(t) {
            parked = hub::take_over(&state.hubs, t, hub.id, &identity).await;
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
    match (parked, attached) {
        (Some(session), _) => state.tasks.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => hub::resume_websocket(hubs, session, upgraded).await,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    session.finish(transport::Ended::ByClient).await;
                }
            }
        }),
        (None, attached) => {
            let negotiated = attached.unwrap_or_else(hub::Negotiated::unnegotiated);
            let hub_id = hub.id;
            state.tasks.spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => hub::run_websocket(hubs, hub_id, negotiated, token, identity, upgraded).await,
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
