//! The admin port: `/metrics`, `/healthz`, `/readyz` and
//! `POST /internal/events` (the HTTP bridge of CONTRACT section 9), and
//! `/admin/` (introspection, `admin_api.rs`).

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::error::{text, Body, HttpError};
use super::{admin_api, Readiness};
use crate::config::AdminToken;
use crate::envelope::Schemas;
use crate::ingest::{self, Publisher};
use crate::introspect::Introspect;
use crate::telemetry::Metrics;

/// Largest POSTed event.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// What the admin handlers share.
pub(crate) struct AdminState {
    /// Metric families to render.
    pub metrics: Arc<Metrics>,
    /// What `/readyz` answers.
    pub readiness: Arc<Readiness>,
    /// Schemas for POSTed envelopes.
    pub schemas: Arc<Schemas>,
    /// The bus POSTed events go to.
    pub publisher: Publisher,
    /// Answers `/admin/api/` for the whole deployment.
    pub introspect: Arc<Introspect>,
    /// `SIDECAR_ADMIN_TOKEN`: required by every `/admin/` request when set.
    pub admin_token: Option<AdminToken>,
}

/// A response with `body` as `content_type`.
fn plain(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(text(body))
        .expect("static headers are valid")
}

/// Handles one admin request while the sidecar waits for Redis at start:
/// alive (`/healthz` 200), not ready (`/readyz` 503, CONTRACT section 8),
/// metrics readable; anything else 503, as nothing else is up yet.
pub(crate) async fn handle_starting(
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let answer = plain;
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => answer(StatusCode::OK, "ok\n".into(), "text/plain"),
        (&Method::GET, "/metrics") => {
            answer(StatusCode::OK, metrics.render(), "application/openmetrics-text; version=1.0.0; charset=utf-8")
        }
        _ => {
            let why = readiness.check().err().unwrap_or("starting");
            answer(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"), "text/plain")
        }
    })
}

/// Handles one admin request.
pub(crate) async fn handle(state: Arc<AdminState>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(route(&state, req).await.unwrap_or_else(HttpError::into_response))
}

async fn route(state: &AdminState, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
    if admin_api::is_admin_path(req.uri().path()) {
        return Ok(admin_api::handle(&state.introspect, state.admin_token.as_ref(), &req).await);
    }
    let ok = plain;
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => Ok(ok(StatusCode::OK, "ok\n".into(), "text/plain")),
        (&Method::GET, "/readyz") => Ok(match state.readiness.check() {
            Ok(()) => ok(StatusCode::OK, "ready\n".into(), "text/plain"),
            Err(why) => ok(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"), "text/plain"),
        }),
        (&Method::GET, "/metrics") => {
            Ok(ok(StatusCode::OK, state.metrics.render(), "application/openmetrics-text; version=1.0.0; charset=utf-8"))
        }
        (&Method::POST, "/internal/events") => {
            let body = Limited::new(req.into_body(), MAX_EVENT_BYTES)
                .collect()
                .await
                .map_err(|_| HttpError::TooLarge)?
                .to_bytes();
            let published = ingest::http::accept(&body, &state.schemas, &state.publisher).await?;
            let answer = serde_json::json!({ "status": published.as_str() }).to_string();
            Ok(ok(StatusCode::ACCEPTED, answer, "application/json"))
        }
        (_, "/healthz" | "/readyz" | "/metrics") => Err(HttpError::MethodNotAllowed("GET")),
        (_, "/internal/events") => Err(HttpError::MethodNotAllowed("POST")),
        _ => Err(HttpError::NotFound),
    }
}
