//! The wake-ups of large fan-outs, done on a worker of the connections'
//! runtime.
//!
//! Why: the pipeline runs on the event lane, a thread of its own
//! (`app/lane.rs`). A fan-out of more than `DIRECT_FANOUT_MAX` leaves the
//! writes to the connections' tasks, and a task woken from a thread
//! outside its runtime goes through the runtime's shared queue, one lock
//! and one wake-up at a time: measured, a broadcast to 5,000 at 500k
//! deliveries/s had its p50 go from 100 to 230 ms. So the lane pushes the
//! frames (order and positions are settled there, as before) and hands the
//! outboxes to wake to this task, which wakes them from a worker, where
//! each wake-up is a push onto that worker's own queue.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::transport::outbox::Outbox;

/// Outboxes with frames their tasks have not been told about.
pub(crate) type Pending = Vec<Arc<Outbox>>;

/// Where a fan-out sends its outboxes to wake.
pub(crate) type WakeSender = mpsc::UnboundedSender<Pending>;

/// Wakes every outbox it is sent, until `stop` (then wakes what is left).
pub(crate) async fn run(mut rx: mpsc::UnboundedReceiver<Pending>, stop: CancellationToken) {
    // One wait for the whole loop, not one per batch.
    let mut stopped = std::pin::pin!(stop.cancelled());
    loop {
        let batch = tokio::select! {
            b = rx.recv() => b,
            _ = &mut stopped => break,
        };
        let Some(batch) = batch else { return };
        for outbox in batch {
            outbox.wake();
        }
    }
    rx.close();
    while let Ok(batch) = rx.try_recv() {
        batch.iter().for_each(|o| o.wake());
    }
}

/// Wakes `pending` through `sender`'s task, or here if the task is gone.
pub(crate) fn wake_later(sender: &WakeSender, pending: Pending) {
    if pending.is_empty() {
        return;
    }
    if let Err(mpsc::error::SendError(pending)) = sender.send(pending) {
        pending.iter().for_each(|o| o.wake());
    }
}
