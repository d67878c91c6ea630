//! `hub::Error`: why a client invocation failed.

use crate::ingest::PublishError;

/// Why an invocation failed. The message is what the client's Completion
/// carries; [`Error::is_client_fault`] picks the log level.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such server method on this hub.
    #[error("Unknown hub method '{0}'")]
    UnknownMethod(String),
    /// The arguments do not fit the method.
    #[error("{0}")]
    BadArguments(String),
    /// The method exists but this build does not offer it yet.
    #[error("{0} is not available on this server")]
    Unavailable(String),
    /// Streaming invocations and stream arguments are not offered.
    #[error("Streaming is not supported by this server")]
    StreamingUnsupported,
    /// The group is closed to this connection.
    #[error("{0}")]
    Denied(String),
    /// A rate or connection limit was reached.
    #[error("{0}")]
    Limited(String),
    /// Publishing to the bus failed.
    #[error("The event could not be published: {0}")]
    Publish(#[from] PublishError),
}

impl Error {
    /// True when the client is at fault (logged at debug), false for the
    /// server or Redis (logged at warn).
    pub fn is_client_fault(&self) -> bool {
        !matches!(self, Error::Publish(_))
    }

    /// A short, low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::UnknownMethod(_) => "unknown_method",
            Error::BadArguments(_) => "bad_arguments",
            Error::Unavailable(_) => "unavailable",
            Error::StreamingUnsupported => "streaming",
            Error::Denied(_) => "denied",
            Error::Limited(_) => "rate_limited",
            Error::Publish(_) => "publish_failed",
        }
    }
}
