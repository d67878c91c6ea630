//! Who is at fault when something fails (PG's `ErrorSource`): every module
//! error says it, and the edges pick from it the log level, the status
//! class and whether a metric `reason` is the caller's doing.

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// A client sent something wrong or too much (logged at debug).
    Client,
    /// A publisher sent an event that cannot be delivered (logged at debug).
    Publisher,
    /// Redis refused or did not answer (logged at warn).
    Redis,
    /// The sidecar itself (logged at error).
    Internal,
}

impl Fault {
    /// Whether the caller, not the sidecar or Redis, caused it.
    pub(crate) fn is_callers(self) -> bool {
        matches!(self, Fault::Client | Fault::Publisher)
    }

    /// Logs `message` with `error` at the level this fault calls for.
    pub(crate) fn log(self, error: &dyn std::fmt::Display, message: &str) {
        match self {
            Fault::Client | Fault::Publisher => tracing::debug!(error = %error, fault = ?self, "{message}"),
            Fault::Redis => tracing::warn!(error = %error, fault = ?self, "{message}"),
            Fault::Internal => tracing::error!(error = %error, fault = ?self, "{message}"),
        }
    }
}

/// An error that can say who is at fault, and a short, low-cardinality
/// reason for metrics.
pub(crate) trait Blame {
    /// Who caused it.
    fn fault(&self) -> Fault;
    /// A label value for metrics (never built from input).
    fn reason(&self) -> &'static str;
}

// The leaf modules (codec, envelope) import nothing of the crate; their
// errors are blamed here.

impl Blame for crate::codec::Error {
    fn fault(&self) -> Fault {
        Fault::Client
    }

    fn reason(&self) -> &'static str {
        "protocol_error"
    }
}

impl Blame for crate::envelope::EnvelopeError {
    fn fault(&self) -> Fault {
        Fault::Publisher
    }

    fn reason(&self) -> &'static str {
        "invalid_envelope"
    }
}
