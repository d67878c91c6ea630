//! The queue from ingest to the pipeline, bounded in events: a stream
//! read's entries travel as one message (one hand-over per read, not per
//! entry) but take room for each of them, so the bound means what its
//! setting says (`SIDECAR_INGEST_QUEUE_CAPACITY`, events) whatever the
//! reads bring.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::Input;

/// The pipeline is gone (shutting down): nothing more is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline has stopped")]
pub(crate) struct Closed;

/// The sending side: ingest waits for room in it, which is what pauses the
/// Redis reader when the sidecar falls behind.
#[derive(Clone)]
pub(crate) struct InputSender {
    tx: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
    capacity: usize,
}

/// The pipeline's side.
pub(crate) struct InputReceiver {
    rx: mpsc::UnboundedReceiver<Queued>,
    room: Arc<Semaphore>,
}

/// An input and the room it holds until the pipeline is done with it.
pub(crate) struct Queued {
    /// What ingest handed over.
    pub input: Input,
    _room: OwnedSemaphorePermit,
}

/// Creates the queue, with room for `capacity` events.
pub(crate) fn channel(capacity: usize) -> (InputSender, InputReceiver) {
    let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
    let room = Arc::new(Semaphore::new(capacity));
    let (tx, rx) = mpsc::unbounded_channel();
    (InputSender { tx, room: room.clone(), capacity }, InputReceiver { rx, room })
}

impl InputSender {
    /// Queues `input` once there is room for its events (a read larger than
    /// the whole queue waits for all of it). `Ok(true)` when it had to wait.
    pub(crate) async fn send(&self, input: Input) -> Result<bool, Closed> {
        let events = u32::try_from(input.events().clamp(1, self.capacity)).unwrap_or(u32::MAX);
        let (room, waited) = match self.room.clone().try_acquire_many_owned(events) {
            Ok(room) => (room, false),
            Err(TryAcquireError::NoPermits) => {
                (self.room.clone().acquire_many_owned(events).await.map_err(|_| Closed)?, true)
            }
            Err(TryAcquireError::Closed) => return Err(Closed),
        };
        self.tx.send(Queued { input, _room: room }).map_err(|_| Closed)?;
        Ok(waited)
    }
}

impl InputReceiver {
    /// The next input, `None` once the queue is closed and empty.
    pub(crate) async fn recv(&mut self) -> Option<Queued> {
        self.rx.recv().await
    }

    /// The next input if one is queued (tests read the in-process bus so).
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Option<Input> {
        self.rx.try_recv().ok().map(|queued| queued.input)
    }

    /// Takes nothing more (senders get [`Closed`], waiting ones too);
    /// what is queued can still be received.
    pub(crate) fn close(&mut self) {
        self.room.close();
        self.rx.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::pipeline::{Ack, Event};

    fn one() -> Input {
        let envelope = crate::envelope::Envelope {
            event_id: uuid::Uuid::new_v4().to_string(),
            event_type: "chat_message".into(),
            timestamp: chrono::Utc::now(),
            room_id: "r1".into(),
            payload: serde_json::Map::new().into(),
            metadata: None,
        };
        Input::Event(Event { envelope, ack: Ack::none(), source: Arc::from("s"), received: Instant::now() })
    }

    #[tokio::test]
    async fn room_is_counted_in_events_and_given_back_once_processed() {
        let (tx, mut rx) = channel(2);
        assert_eq!(tx.send(one()).await, Ok(false));
        assert_eq!(tx.send(one()).await, Ok(false));
        let third = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(one()).await }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "the queue is full: the third waits");
        let first = rx.recv().await.expect("queued");
        drop(first);
        assert_eq!(third.await.expect("joins"), Ok(true), "it had to wait for room");
        rx.close();
        assert_eq!(tx.send(one()).await, Err(Closed));
        assert!(rx.recv().await.is_some() && rx.recv().await.is_some(), "what was queued is still received");
        assert!(rx.recv().await.is_none());
    }
}
