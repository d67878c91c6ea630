//! `hub::Error`: why a client invocation failed.

use crate::fault::{Blame, Fault};
use crate::ingest::PublishError;
use crate::presence::PresenceError;

/// Why an invocation failed. The message is what the client's Completion
/// carries; its [`Fault`] picks the log level.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No such server method on this hub.
    #[error("Unknown hub method '{0}'")]
    UnknownMethod(String),
    /// The arguments do not fit the method.
    #[error("{0}")]
    BadArguments(String),
    /// Stream arguments (this many) were sent: no server method takes
    /// any. ASP.NET Core's DefaultHubDispatcher words.
    #[error("Client sent {0} stream(s), Hub method expects 0.")]
    StreamingUnsupported(usize),
    /// The group is closed to this connection.
    #[error("{0}")]
    Denied(String),
    /// A rate or connection limit was reached.
    #[error("{0}")]
    Limited(String),
    /// A browser-push method failed.
    #[error("{0}")]
    Push(#[from] crate::push::Error),
    /// Publishing to the bus failed.
    #[error("The event could not be published: {0}")]
    Publish(#[from] PublishError),
    /// The presence store (Redis) failed: not the client's doing.
    #[error("Presence is unavailable: {0}")]
    Presence(#[from] PresenceError),
}

impl Blame for Error {
    fn fault(&self) -> Fault {
        match self {
            Error::Publish(e) => e.fault(),
            Error::Presence(_) => Fault::Redis,
            Error::Push(e) => e.fault(),
            _ => Fault::Client,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Error::UnknownMethod(_) => "unknown_method",
            Error::BadArguments(_) => "bad_arguments",
            Error::StreamingUnsupported(_) => "streaming",
            Error::Denied(_) => "denied",
            Error::Limited(_) => "rate_limited",
            Error::Push(e) => e.reason(),
            Error::Publish(_) => "publish_failed",
            Error::Presence(_) => "presence_failed",
        }
    }
}
