//! `transport::Error`: a request that cannot become the transport it asks for.

/// Why a transport request was refused; `http/error.rs` turns it into a status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Error {
    /// A WebSocket request without the headers RFC 6455 requires.
    #[error("not a valid WebSocket upgrade request: {0}")]
    BadUpgrade(&'static str),
}
