//! The admin page at `/admin/`: one HTML file with its script inline,
//! embedded in the binary (no build step, nothing to fetch but the API).
//!
//! With `SIDECAR_ADMIN_TOKEN` set, a browser cannot send a bearer header
//! when it navigates, so `/admin/` without the header answers 401 with a
//! small form instead of the page: it keeps the token in sessionStorage,
//! fetches `/admin/` again with the header and writes the page it gets
//! into the document. The page then sends the same header with every API
//! call. Neither page carries data: everything comes from the API.

use hyper::{Response, StatusCode};

use super::error::{text, Body};

const PAGE: &str = include_str!("assets/admin.html");
const LOGIN: &str = include_str!("assets/admin_login.html");

/// Inline scripts and styles only; data from this origin only; no frames,
/// no forms posted anywhere, no base URL tricks. Room names and user ids
/// come from clients: the page only ever sets them as text.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
                   img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page (200).
pub(super) fn page() -> Response<Body> {
    html(StatusCode::OK, PAGE)
}

/// The token form (401).
pub(super) fn login() -> Response<Body> {
    let mut response = html(StatusCode::UNAUTHORIZED, LOGIN);
    response
        .headers_mut()
        .insert("www-authenticate", hyper::header::HeaderValue::from_static("Bearer realm=\"admin\""));
    response
}

fn html(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .header("content-security-policy", CSP)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(text(body))
        .expect("static headers are valid")
}
