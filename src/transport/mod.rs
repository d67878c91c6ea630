//! Bytes between a socket and a connection. Transports know frames, never
//! events: they drain an [`Outbox`] into the socket and hand what the client
//! sends to a [`Session`] (the hub implements it), whatever carries it.

mod error;
mod long_polling;
mod opcode;
pub(crate) mod outbox;
mod payload;
mod polling;
mod replay;
pub(crate) mod send_batch;
mod sse;
mod websocket;

#[cfg(test)]
mod fake;

pub(crate) use error::Error;
pub(crate) use long_polling::{serve_long_polling, ENDED_KEPT};
pub(crate) use outbox::{Batch, End, Kick, Limits, Outbox, Payload};
pub(crate) use polling::{polling_channel, PollReply, PollRequest, PollingEnds, PollingHandle};
pub(crate) use sse::{serve_sse, SseBody, SSE_BODY_CHUNKS, SSE_PREAMBLE};
pub(crate) use websocket::{accept_key, serve_websocket, websocket_socket, WsSettings, WsSocket};

use std::future::Future;

/// Frames a streaming transport (WebSockets, Server-Sent Events) takes
/// from its outbox per write: enough to coalesce a burst into one flush,
/// few enough that one connection's backlog does not hold its task long.
/// (A long poll answers with up to its own, larger batch: one response.)
pub(crate) const WRITE_BATCH_FRAMES: usize = 256;

/// What a transport needs from the connection it carries.
pub(crate) trait Session: Send {
    /// Handles one transport message from the client. `Stop` ends the
    /// connection once the outbox has been written out.
    fn receive(&mut self, data: &[u8]) -> impl Future<Output = Flow> + Send;

    /// The message that tells the client why it is being closed, in the
    /// connection's protocol (a SignalR Close).
    fn close_frame(&self, why: Kick) -> Option<Payload>;

    /// Whether the handshake has completed.
    fn is_open(&self) -> bool;

    /// Frames to write before anything queued: for a resumed stateful
    /// connection, a Sequence and every unacknowledged message.
    fn first_frames(&mut self) -> Vec<Payload>;

    /// Records that the client is still there (a long poll arrived or was
    /// answered), for transports where the client sends no pings.
    fn touch(&self);
}

/// Whether a connection goes on after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep reading.
    Continue,
    /// End after writing what is queued.
    Stop,
}

/// How a connection ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The client closed it, or the socket went away.
    ByClient,
    /// The session ended it (a Close from the hub).
    BySession,
    /// Closed from outside.
    Kicked(Kick),
    /// A write did not finish in time, or failed.
    WriteFailed,
}

/// Frames of a batch to write, with the session's Close appended when the
/// connection was kicked, and how the connection ends after them (if it does).
pub(crate) fn closing_frames<S: Session>(session: &S, batch: Batch) -> (Vec<Payload>, Option<Ended>) {
    let mut frames = batch.frames;
    let end = match batch.end {
        Some(End::Kicked(k)) => {
            frames.extend(session.close_frame(k));
            Some(Ended::Kicked(k))
        }
        Some(End::Finished) => Some(Ended::BySession),
        None => None,
    };
    (frames, end)
}

/// Hands one POST body to the session; a `Stop` ends the connection after
/// the outbox is written.
pub(crate) async fn receive<S: Session>(session: &mut S, outbox: &Outbox, data: &[u8]) {
    if Box::pin(session.receive(data)).await == Flow::Stop {
        outbox.finish();
    }
}
