//! The handle of a cut, taken inside the pipeline's task (which serves
//! them: `pipeline/cut.rs`) and asked for by the hub. A cut is a point in
//! fan-out's order of deliveries: a join's (missed updates,
//! CONTRACT section 15) and a handoff's (CONTRACT section 14). A connection
//! that joins a room and is owed the room's events up to fan-out's position
//! must not also get, live, an event the pipeline still holds back (a batch
//! waiting for its window) whose position fan-out has already passed. So
//! the join runs here, between two events: the room's held batches go out
//! first (to the members it already has), then the join's own step runs,
//! and every event after it reaches the new member live. A stateful session
//! handed to another instance leaves fan-out the same way, after the held
//! batches went out to it (its snapshot carries them), and the instance it
//! resumes on registers it after its own held batches of the session's
//! rooms went out to the others (the snapshot has them already).

use tokio::sync::{mpsc, oneshot};

/// Which held batches go out before a cut's step.
pub(crate) enum Scope {
    /// Those of these rooms (hub, room id; `user:<id>` and `*` included).
    Rooms(Vec<(usize, String)>),
    /// All of them.
    Everything,
}

/// One step waiting for its cut.
pub(crate) struct CutRequest {
    /// Which held batches go out first.
    pub(crate) scope: Scope,
    /// The step, run right after them.
    pub(crate) then: Box<dyn FnOnce() + Send>,
}

/// Where joins ask for a cut; clonable, cheap.
#[derive(Clone)]
pub(crate) struct Cuts(mpsc::UnboundedSender<CutRequest>);

/// The pipeline's end of [`Cuts`].
pub(crate) type CutQueue = mpsc::UnboundedReceiver<CutRequest>;

/// A pair: the handle joins use, the queue the pipeline serves.
pub(crate) fn cut_channel() -> (Cuts, CutQueue) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Cuts(tx), rx)
}

impl Cuts {
    /// Runs `step` in the pipeline's task once nothing of `room` on `hub`
    /// is held back, and returns what it returned; `None` when the
    /// pipeline has stopped (shutting down).
    pub(crate) async fn at_cut<R: Send + 'static>(
        &self,
        hub: usize,
        room: &str,
        step: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        self.request(Scope::Rooms(vec![(hub, room.to_string())]), step).await
    }

    /// Runs `step` in the pipeline's task once nothing of `rooms` (hub,
    /// room id) is held back; `None` when the pipeline has stopped (then
    /// `step` has not run).
    pub(crate) async fn at_cut_of<R: Send + 'static>(
        &self,
        rooms: Vec<(usize, String)>,
        step: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        self.request(Scope::Rooms(rooms), step).await
    }

    /// Runs `step` in the pipeline's task once nothing at all is held
    /// back; `None` when the pipeline has stopped (then `step` has not run).
    pub(crate) async fn at_cut_of_everything<R: Send + 'static>(
        &self,
        step: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        self.request(Scope::Everything, step).await
    }

    async fn request<R: Send + 'static>(&self, scope: Scope, step: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let then = Box::new(move || {
            let _ = tx.send(step());
        });
        self.0.send(CutRequest { scope, then }).ok()?;
        rx.await.ok()
    }
}
