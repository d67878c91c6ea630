//! A join's cut, taken inside the pipeline's task (missed updates, CONTRACT
//! section 15). A connection that joins a room and is owed the room's
//! events up to fan-out's position must not also get, live, an event the
//! pipeline still holds back (a batch waiting for its window) whose
//! position fan-out has already passed. So the join runs here, between two
//! events: the room's held batches go out first (to the members it already
//! has), then the join's own step runs, and every event after it reaches
//! the new member live.

use tokio::sync::{mpsc, oneshot};

/// One join waiting for its cut.
pub(crate) struct CutRequest {
    hub: usize,
    room: String,
    then: Box<dyn FnOnce() + Send>,
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
        let (tx, rx) = oneshot::channel();
        let then = Box::new(move || {
            let _ = tx.send(step());
        });
        self.0.send(CutRequest { hub, room: room.to_string(), then }).ok()?;
        rx.await.ok()
    }
}

impl super::Pipeline {
    /// Serves one cut: the room's held batches, then the join's step.
    pub(super) fn cut(&mut self, request: CutRequest) {
        self.flush_room(request.hub, &request.room);
        (request.then)();
    }
}
