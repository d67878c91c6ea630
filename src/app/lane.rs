//! The event lane: a thread of its own, with a single-threaded runtime, for
//! the work every event goes through (the Redis readers and the `redis`
//! crate's connection tasks under them, the pipeline and its fan-out, the
//! acknowledgements).
//!
//! Why: on the shared multi-threaded runtime each event crossed threads
//! several times (the Redis connection's task hands the reply to the
//! reader, the reader to the pipeline, the pipeline to the acker), and
//! each crossing to a parked worker is a `futex` wake-up and another
//! `epoll_wait`: measured, about 18 µs of CPU per event on this machine
//! (1,000 events/s to one client each: 112 µs per event on two workers
//! against 94 µs on one). On one thread those hand-overs are plain task
//! switches, while connections keep both cores of the main runtime.

use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The lane's runtime, running on its thread until the lane is dropped.
pub(super) struct Lane {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Lane {
    /// Starts the thread and its runtime.
    pub(super) fn start() -> std::io::Result<Lane> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("sidecar-events".into()).spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
            // Whatever still runs (only past the shutdown deadline) is dropped.
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
        Ok(Lane { handle, stop: Some(stop), thread: Some(thread) })
    }

    /// Where the lane's tasks are spawned: what they spawn in turn (a
    /// Redis connection's own task, through `TaskTracker::spawn`) stays on
    /// the lane.
    pub(super) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Lane {
    /// Stops the runtime once the app is done with it (every task it owns
    /// has finished, or the shutdown deadline passed) and waits for its
    /// thread.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
