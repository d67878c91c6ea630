//! `push::Error`: why registering a subscription or sending a push failed.

use crate::fault::{Blame, Fault};

/// Why a browser-push operation failed. The messages of the client faults
/// reach the caller's Completion.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Browser push is off: no VAPID key is configured.
    #[error("Browser push is not available on this server")]
    NotConfigured,
    /// Subscriptions belong to users; this connection has none.
    #[error("registering a push subscription needs an authenticated user")]
    NoUser,
    /// The subscription is not a usable `PushSubscription`.
    #[error("invalid push subscription: {0}")]
    BadSubscription(String),
    /// The user has as many subscriptions as allowed.
    #[error("at most {0} push subscriptions per user")]
    TooMany(usize),
    /// The subscription store (Redis) failed.
    #[error("push subscription store: {0}")]
    Redis(#[from] redis::RedisError),
}

impl Blame for Error {
    fn fault(&self) -> Fault {
        match self {
            Error::Redis(_) => Fault::Redis,
            _ => Fault::Client,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Error::NotConfigured => "unavailable",
            Error::NoUser => "denied",
            Error::BadSubscription(_) => "bad_arguments",
            Error::TooMany(_) => "limited",
            Error::Redis(_) => "push_store_failed",
        }
    }
}
