//! The single mapping from each module's errors to an HTTP status and body.

use crate::fault::{Blame, Fault};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use crate::hub::TokenError;
use crate::ingest::http::HttpIngestError;
use crate::ingest::PublishError;
use crate::transport::Error as TransportError;

/// `Retry-After` of a 503 for a full spool: Redis is down, and the spool
/// empties within a second of its return, so a few seconds is a fair wait.
const SPOOL_FULL_RETRY_AFTER_SECONDS: &str = "2";

/// A response body.
pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// Why a request failed, at the HTTP edge.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// No hub or admin route at this path.
    #[error("Not Found")]
    NotFound,
    /// The path exists, the method does not.
    #[error("Method Not Allowed")]
    MethodNotAllowed(&'static str),
    /// A connection token problem.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// A transport request that is not what it claims.
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// A POSTed event.
    #[error("{0}")]
    Ingest(#[from] HttpIngestError),
    /// The body is larger than allowed.
    #[error("Payload Too Large")]
    TooLarge,
    /// No valid token (`SIDECAR_AUTH=jwt`).
    #[error("Unauthorized: {0}")]
    Unauthorized(crate::auth::AuthError),
    /// A rate or connection limit.
    #[error("{0}")]
    Limited(crate::hub::Error),
    /// A request this server does not serve (e.g. a transport not offered).
    #[error("{0}")]
    BadRequest(String),
    /// A negotiate request with a version this server cannot answer:
    /// ASP.NET Core answers 200 with the reason in the body's `error`.
    #[error("{0}")]
    Negotiate(String),
}

impl HttpError {
    /// The status code ASP.NET Core SignalR gives for the same case.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Token(TokenError::Unknown) => StatusCode::NOT_FOUND,
            HttpError::Token(TokenError::InUse) => StatusCode::CONFLICT,
            HttpError::Token(TokenError::OtherTransport | TokenError::DeleteNotLongPolling) => StatusCode::BAD_REQUEST,
            HttpError::Token(TokenError::PostToWebSocket) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Transport(_) | HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Ingest(HttpIngestError::Invalid(_)) => StatusCode::BAD_REQUEST,
            HttpError::Ingest(HttpIngestError::Publish(e)) if e.fault().is_callers() => StatusCode::BAD_REQUEST,
            HttpError::Ingest(HttpIngestError::Publish(PublishError::Refused { .. })) => StatusCode::BAD_GATEWAY,
            HttpError::Ingest(HttpIngestError::Publish(_)) | HttpError::Token(TokenError::EarlyFull) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            HttpError::TooLarge | HttpError::Token(TokenError::EarlyTooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Negotiate(_) => StatusCode::OK,
        }
    }

    /// Who caused it: the caller for every 4xx, else what the source says.
    pub(crate) fn fault(&self) -> Fault {
        match self {
            HttpError::Ingest(HttpIngestError::Publish(e)) => e.fault(),
            // A full early-data budget is a flood of clients, not a fault here.
            HttpError::Token(e) => crate::fault::Blame::fault(e),
            _ if self.status().is_server_error() => Fault::Internal,
            _ => Fault::Client,
        }
    }

    /// The response: the status and the message as plain text.
    pub(crate) fn into_response(self) -> Response<Body> {
        let status = self.status();
        self.fault().log(&self, &format!("request answered {}", status.as_u16()));
        if let HttpError::Negotiate(error) = &self {
            let body = serde_json::json!({ "error": error }).to_string();
            return Response::builder()
                .header("content-type", "application/json")
                .body(text(body))
                .expect("static headers are valid");
        }
        let mut builder = Response::builder().status(status).header("content-type", "text/plain; charset=utf-8");
        match &self {
            HttpError::MethodNotAllowed(allow) => builder = builder.header("allow", *allow),
            HttpError::Unauthorized(_) => builder = builder.header("www-authenticate", "Bearer"),
            HttpError::Ingest(HttpIngestError::Publish(PublishError::SpoolFull(_)))
            | HttpError::Token(TokenError::EarlyFull) => {
                builder = builder.header("retry-after", SPOOL_FULL_RETRY_AFTER_SECONDS)
            }
            _ => {}
        }
        // ASP.NET Core answers these two with the status alone.
        let body = match &self {
            HttpError::MethodNotAllowed(_) | HttpError::Token(TokenError::InUse) => String::new(),
            _ => self.to_string(),
        };
        builder.body(text(body)).expect("static headers are valid")
    }
}

/// A text body.
pub(super) fn text(s: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    Full::new(s.into()).boxed()
}
