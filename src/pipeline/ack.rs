//! The outcome of one event, reported back to whoever produced it: the
//! Redis reader acknowledges or dead-letters on it, HTTP ignores it.

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// In the outbox of every local connection it targets (possibly none).
    Delivered,
    /// Deliberately not delivered (duplicate, stale, coalesced away); acknowledge.
    Dropped(&'static str),
    /// It can never be delivered; acknowledge and dead-letter with the reason.
    Invalid(String),
    /// The ack was dropped unresolved (the pipeline stopped mid-way):
    /// acknowledge nothing, the entry stays pending for a later claim; its
    /// producer only forgets what it kept for it.
    Unsettled,
}

type Callback = Box<dyn FnOnce(Outcome) + Send + 'static>;

/// A one-shot completion handle that travels with an event. It carries only
/// what its producer needs to find the entry again (the Redis reader keeps
/// the entry's raw fields on its side, for a dead letter). If it is dropped
/// unresolved (the process stops mid-way), it reports
/// [`Outcome::Unsettled`]: nothing is acknowledged and Redis keeps the entry
/// pending for a later claim.
pub(crate) struct Ack(Option<Callback>);

impl Ack {
    /// An ack nobody listens to (in-process publishing).
    pub(crate) fn none() -> Ack {
        Ack(None)
    }

    /// An ack that calls `f` with the outcome.
    pub(crate) fn new(f: impl FnOnce(Outcome) + Send + 'static) -> Ack {
        Ack(Some(Box::new(f)))
    }

    /// Reports the outcome.
    pub(crate) fn resolve(mut self, outcome: Outcome) {
        if let Some(f) = self.0.take() {
            f(outcome)
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Outcome::Unsettled)
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Ack(pending)" } else { "Ack(none)" })
    }
}
