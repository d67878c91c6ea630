//! What the client port's handlers share, and the checks every request
//! goes through first: who is asking (authentication), whether a new
//! connection fits (admission), and from which address.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper::{Method, Request};
use tokio_util::task::TaskTracker;

use super::super::error::HttpError;
use super::super::query::param;
use super::super::PeerAddr;
use crate::auth::{token_from, AuthError, Authenticator};
use crate::hub::{Hubs, Identity};
use crate::telemetry::labels::AuthFailure;

/// What the client port's handlers share.
pub(crate) struct ClientState {
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
    pub(super) fn authenticate(&self, req: &Request<Incoming>) -> Result<Identity, HttpError> {
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
                self.hubs.metrics.auth_failures.get_or_create(&AuthFailure { reason: e.reason() }).inc();
                Err(HttpError::Unauthorized(e))
            }
        }
    }

    /// Whether a new connection fits the limits.
    pub(super) fn admit(&self, identity: &Identity, req: &Request<Incoming>) -> Result<(), HttpError> {
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
pub(crate) struct Cors {
    /// Allowed origins; `*` allows any but `null` (echoing it, since SignalR sends credentials).
    pub origins: Vec<String>,
}

impl Cors {
    /// The tower-http layer for this policy.
    pub(crate) fn layer(&self) -> tower_http::cors::CorsLayer {
        use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
        let origin = if self.origins.iter().any(|o| o == "*") {
            // Any origin but `null` (a sandboxed frame, a file): SignalR sends
            // credentials, and those must not be lent to a page of no origin.
            AllowOrigin::predicate(|origin: &HeaderValue, _| origin.as_bytes() != b"null")
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
