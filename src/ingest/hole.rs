//! Holes: events a reader can no longer read because Redis lost them (a
//! restart without persistence) or trimmed them before this instance read
//! them. Ingest cannot tell which connections were owed them, so it says
//! which stream and why, and the server closes the connections that may
//! have been (CONTRACT section 14: the client must know).

use std::sync::Arc;

use crate::telemetry::labels::ContinuityCause;

/// Why owed entries may be gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoleCause {
    /// The stream no longer holds the last entry this instance read (Redis
    /// restarted empty, or the stream was deleted).
    StreamLost,
    /// Entries after this instance's position were trimmed or deleted
    /// before it read them.
    StreamTrimmed,
}

impl HoleCause {
    /// The `cause` of `sidecar_continuity_closes`.
    pub(crate) fn cause(self) -> ContinuityCause {
        match self {
            HoleCause::StreamLost => ContinuityCause::StreamLost,
            HoleCause::StreamTrimmed => ContinuityCause::StreamTrimmed,
        }
    }

    /// The cause as the logs write it.
    pub(crate) fn label(self) -> &'static str {
        self.cause().as_str()
    }
}

/// A hole in one stream.
#[derive(Debug, Clone)]
pub(crate) struct Hole {
    /// The stream.
    pub stream: Arc<str>,
    /// Why.
    pub cause: HoleCause,
}

/// Who is told about holes (the app closes the affected connections).
pub(crate) type OnHole = Arc<dyn Fn(Hole) + Send + Sync>;
