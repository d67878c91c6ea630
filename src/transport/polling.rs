//! What the HTTP handlers of the two polling-style transports (Server-Sent
//! Events and Long Polling) hold to reach their connection's task: client
//! messages arrive in POST bodies, and long polls ask for what is queued.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What a long poll is answered with.
#[derive(Debug)]
pub(crate) enum PollReply {
    /// 200 with these bytes (empty when the poll timed out with nothing to send).
    Data(Bytes),
    /// 204: the connection is over (or a newer poll replaced this one).
    Gone,
}

/// One waiting long poll.
#[derive(Debug)]
pub(crate) struct PollRequest {
    /// Where the answer goes.
    pub reply: oneshot::Sender<PollReply>,
}

/// The HTTP side's handle on an SSE or Long Polling connection task.
#[derive(Debug, Clone)]
pub(crate) struct PollingHandle {
    /// POST bodies, in order.
    pub inbound: mpsc::Sender<Bytes>,
    /// Long polls (absent for Server-Sent Events).
    pub polls: Option<mpsc::Sender<PollRequest>>,
    /// Ends the connection (DELETE, or the SSE stream going away).
    pub stop: CancellationToken,
}

/// The connection task's ends of a [`PollingHandle`].
#[derive(Debug)]
pub(crate) struct PollingEnds {
    /// POST bodies.
    pub inbound: mpsc::Receiver<Bytes>,
    /// Long polls.
    pub polls: mpsc::Receiver<PollRequest>,
    /// Fires when the client ends the connection.
    pub stop: CancellationToken,
}

/// POST bodies that may wait for the connection task before POSTs block.
const INBOUND_QUEUE: usize = 16;

/// Creates a handle and the ends its connection task owns.
pub(crate) fn polling_channel(long_polling: bool) -> (PollingHandle, PollingEnds) {
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    let (poll_tx, poll_rx) = mpsc::channel(4);
    let stop = CancellationToken::new();
    let handle = PollingHandle { inbound: in_tx, polls: long_polling.then_some(poll_tx), stop: stop.clone() };
    (handle, PollingEnds { inbound: in_rx, polls: poll_rx, stop })
}
