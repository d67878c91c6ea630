//! `/admin/` on the admin port: the introspection API (JSON, described by
//! `protocol/admin-openapi.yaml`, served at `/admin/api/openapi.yaml`) and
//! the page (`admin_page.rs`), behind `SIDECAR_ADMIN_TOKEN` when set.
//!
//! Errors here are JSON (`{"error": "..."}`) for the operators' tools, not
//! the plain text of the SignalR paths; `status_of` is their one mapping.

use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::admin_page;
use super::error::{text, Body};
use crate::config::AdminToken;
use crate::fault::{Blame, Fault};
use crate::introspect::{Introspect, IntrospectError};

/// The OpenAPI description, served as is.
const OPENAPI: &str = include_str!("../../protocol/admin-openapi.yaml");

/// Why an `/admin/` request failed.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("a valid 'Authorization: Bearer <SIDECAR_ADMIN_TOKEN>' header is required")]
    Unauthorized,
    #[error("only GET is allowed here")]
    MethodNotAllowed,
    #[error("no such admin path")]
    NotFound,
    #[error("the path is not valid percent-encoded UTF-8")]
    BadPath,
    #[error(transparent)]
    Introspect(#[from] IntrospectError),
}

fn status_of(e: &AdminError) -> StatusCode {
    match e {
        AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
        AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        AdminError::NotFound | AdminError::Introspect(IntrospectError::UnknownHub(_)) => StatusCode::NOT_FOUND,
        AdminError::BadPath => StatusCode::BAD_REQUEST,
        AdminError::Introspect(e) if e.fault().is_callers() => StatusCode::BAD_REQUEST,
        AdminError::Introspect(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// True for the paths this file serves.
pub(super) fn is_admin_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// Serves one `/admin` request with `introspect`, guarded by `token` when set.
pub(super) async fn handle<B>(introspect: &Introspect, token: Option<&AdminToken>, req: &Request<B>) -> Response<Body> {
    let path = req.uri().path();
    if path == "/admin" {
        return Response::builder()
            .status(StatusCode::PERMANENT_REDIRECT)
            .header("location", "/admin/")
            .body(text(""))
            .expect("static headers are valid");
    }
    let page = path == "/admin/";
    let result = match authorized(token, req) {
        false if page => return admin_page::login(),
        false => Err(AdminError::Unauthorized),
        true if req.method() != Method::GET => Err(AdminError::MethodNotAllowed),
        true if page => return admin_page::page(),
        true => route(introspect, path, req.uri().query()).await,
    };
    result.unwrap_or_else(|e| error_response(&e))
}

async fn route(introspect: &Introspect, path: &str, query: Option<&str>) -> Result<Response<Body>, AdminError> {
    let rest = path.strip_prefix("/admin/api/").ok_or(AdminError::NotFound)?;
    let segments = rest.split('/').map(decode_segment).collect::<Option<Vec<String>>>().ok_or(AdminError::BadPath)?;
    let param = |name| super::query::param(query, name);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["openapi.yaml"] => Ok(respond(StatusCode::OK, "application/yaml", OPENAPI.to_string())),
        ["instances"] => json(&introspect.instances().await),
        ["hubs"] => json(&introspect.hubs().await),
        ["hubs", hub, "rooms"] => {
            let prefix = param("prefix").unwrap_or_default();
            let cursor = param("cursor").filter(|c| !c.is_empty());
            json(&introspect.rooms(hub, &prefix, cursor, param("limit").as_deref()).await?)
        }
        ["hubs", hub, "rooms", room] if !room.is_empty() => {
            let cursor = param("cursor").filter(|c| !c.is_empty());
            json(&introspect.members(hub, room, cursor.as_deref(), param("limit").as_deref()).await?)
        }
        ["users", user] if !user.is_empty() => json(&introspect.user(user).await),
        _ => Err(AdminError::NotFound),
    }
}

/// Whether the request may pass: no token configured, or the bearer
/// token matches it (compared in constant time).
fn authorized<B>(token: Option<&AdminToken>, req: &Request<B>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let presented = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer)
        .unwrap_or("");
    constant_time_eq(presented.as_bytes(), token.as_bytes())
}

/// Compares without an early exit: the time taken depends only on the
/// configured token's length, not on how much of it was guessed right.
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= presented.get(i).copied().unwrap_or(0) ^ e;
    }
    std::hint::black_box(diff) == 0
}

/// One path segment, percent-decoded (`+` stays `+` in a path).
fn decode_segment(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok())?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn json<T: Serialize>(value: &T) -> Result<Response<Body>, AdminError> {
    let body = serde_json::to_string(value).map_err(|e| AdminError::Introspect(IntrospectError::Encode(e)))?;
    Ok(respond(StatusCode::OK, "application/json", body))
}

fn error_response(e: &AdminError) -> Response<Body> {
    let status = status_of(e);
    let fault = match e {
        AdminError::Introspect(e) => e.fault(),
        _ if status.is_server_error() => Fault::Internal,
        _ => Fault::Client,
    };
    fault.log(e, &format!("admin request answered {}", status.as_u16()));
    let body = serde_json::json!({ "error": e.to_string() }).to_string();
    let mut response = respond(status, "application/json", body);
    let headers = response.headers_mut();
    match e {
        AdminError::Unauthorized => {
            headers.insert("www-authenticate", hyper::header::HeaderValue::from_static("Bearer realm=\"admin\""));
        }
        AdminError::MethodNotAllowed => {
            headers.insert("allow", hyper::header::HeaderValue::from_static("GET"));
        }
        _ => {}
    }
    response
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(text(body))
        .expect("static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_percent_and_keep_plus() {
        assert_eq!(decode_segment("a%2Fb+c").as_deref(), Some("a/b+c"));
        assert_eq!(decode_segment("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(decode_segment("bad%zz"), None);
        assert_eq!(decode_segment("cut%4"), None);
        assert_eq!(decode_segment("%FF"), None, "not UTF-8");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdef0", b"0123456789abcdef"), "longer");
        assert!(!constant_time_eq(b"0123456789abcde", b"0123456789abcdef"), "shorter");
        assert!(!constant_time_eq(b"", b"0123456789abcdef"));
    }

    fn asked_with(authorization: &str) -> Request<()> {
        Request::builder().uri("/admin/api/hubs").header("authorization", authorization).body(()).expect("request")
    }

    #[test]
    fn the_scheme_is_read_in_any_case() {
        let token = AdminToken::parse("0123456789abcdef").expect("valid");
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert!(authorized(Some(&token), &asked_with(&format!("{scheme} 0123456789abcdef"))), "{scheme}");
        }
        assert!(!authorized(Some(&token), &asked_with("Basic 0123456789abcdef")));
        assert!(!authorized(Some(&token), &asked_with("Bearer 0123456789abcdeX")));
        assert!(authorized(None, &asked_with("anything")));
    }

    #[test]
    fn only_admin_paths_are_taken() {
        assert!(is_admin_path("/admin") && is_admin_path("/admin/") && is_admin_path("/admin/api/hubs"));
        assert!(!is_admin_path("/administrator") && !is_admin_path("/metrics"));
    }
}
