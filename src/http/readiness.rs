//! The readiness latch and lifecycle phase that `/readyz` reads.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Binding, ensuring the consumer group.
    Starting = 0,
    /// Serving.
    Running = 1,
    /// Shutting down: `/readyz` answers 503.
    Draining = 2,
}

/// Shared readiness state.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    phase: AtomicU8,
    redis_up: std::sync::OnceLock<Arc<AtomicBool>>,
    /// Starting, and Redis has not answered yet.
    waiting_for_redis: AtomicBool,
}

impl Readiness {
    /// Moves to `phase`.
    pub(crate) fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// Starting and waiting for Redis to answer (or no longer).
    pub(crate) fn waiting_for_redis(&self, waiting: bool) {
        self.waiting_for_redis.store(waiting, Ordering::SeqCst);
    }

    /// Makes readiness also depend on Redis answering.
    pub(crate) fn watch_redis(&self, up: Arc<AtomicBool>) {
        let _ = self.redis_up.set(up);
    }

    /// The current phase (the introspection API shows it per instance).
    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Draining,
        }
    }

    /// `Ok` when ready, else why not.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        match self.phase.load(Ordering::SeqCst) {
            0 if self.waiting_for_redis.load(Ordering::SeqCst) => Err("starting: waiting for Redis"),
            0 => Err("starting"),
            2 => Err("draining"),
            _ => match self.redis_up.get() {
                Some(up) if !up.load(Ordering::Relaxed) => Err("redis unreachable"),
                _ => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_running_and_redis_answers() {
        let r = Readiness::default();
        assert_eq!(r.check(), Err("starting"));
        r.set(Phase::Running);
        assert_eq!(r.check(), Ok(()), "without Redis nothing else is watched");
        let up = Arc::new(AtomicBool::new(false));
        r.watch_redis(up.clone());
        assert_eq!(r.check(), Err("redis unreachable"));
        up.store(true, Ordering::Relaxed);
        assert_eq!(r.check(), Ok(()));
        r.set(Phase::Draining);
        assert_eq!(r.check(), Err("draining"), "a drain wins over a healthy Redis");
    }
}
