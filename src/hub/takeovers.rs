//! Takeovers under way, which a draining instance waits for
//! ([`super::handoff::take_over`]).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Takeovers under way on this instance. A takeover waits for this
/// instance's reader to pass the session's positions, so a draining
/// instance keeps ingest running until none is left: with no connection of
/// its own it used to stop reading at once, and a resume that reached it
/// just before SIGTERM was refused (the client told, but the session lost).
#[derive(Debug, Default)]
pub(crate) struct Takeovers(AtomicUsize);

impl Takeovers {
    /// Whether a takeover is under way.
    pub(crate) fn any(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }

    /// Counts a takeover from now until the guard is dropped.
    pub(super) fn begin(&self) -> TakeoverUnderWay<'_> {
        self.0.fetch_add(1, Ordering::AcqRel);
        TakeoverUnderWay(self)
    }
}

/// Counts one takeover until dropped, whichever way it ends: by then a
/// session it restored is in the registry, which the drain waits on too.
pub(super) struct TakeoverUnderWay<'a>(&'a Takeovers);

impl Drop for TakeoverUnderWay<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}
