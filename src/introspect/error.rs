//! `introspect::Error`: why a question could not be asked or answered.

/// Why a question failed, or could only be answered in part.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IntrospectError {
    /// The hub named in the path is not in the routing file (the asker's
    /// fault: 404).
    #[error("no hub named '{0}'")]
    UnknownHub(String),
    /// A page size outside 1..=max (the asker's fault: 400).
    #[error("limit must be between 1 and {max}, got {got}")]
    Limit {
        /// What was asked.
        got: String,
        /// The largest page.
        max: usize,
    },
    /// A cursor this API did not hand out (the asker's fault: 400).
    #[error("cursor '{0}' is not a connection id")]
    Cursor(String),
    /// Redis refused or is unreachable: only this instance answered.
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
    /// A question that cannot be encoded (internal).
    #[error("cannot encode the question: {0}")]
    Encode(#[source] serde_json::Error),
}

impl crate::fault::Blame for IntrospectError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            IntrospectError::UnknownHub(_) | IntrospectError::Limit { .. } | IntrospectError::Cursor(_) => {
                Fault::Client
            }
            IntrospectError::Redis(_) => Fault::Redis,
            IntrospectError::Encode(_) => Fault::Internal,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            IntrospectError::UnknownHub(_) => "unknown_hub",
            IntrospectError::Limit { .. } => "bad_limit",
            IntrospectError::Cursor(_) => "bad_cursor",
            IntrospectError::Redis(_) => "redis",
            IntrospectError::Encode(_) => "encode",
        }
    }
}
