//! Pushes whose writes are batched: the fan-out claims each idle outbox a
//! frame goes to (its lock held, so nothing else is written to that socket
//! meanwhile), then sends to all of their sockets in one system call
//! (`transport::send_batch`), then settles each outbox as a push that wrote
//! the frame itself would have.

use std::io;
use std::os::fd::RawFd;
use std::sync::{MutexGuard, TryLockError};

use super::{try_write, Flushed, OutFrame, Outbox, PushError, State};
use crate::transport::send_batch;

/// What [`Outbox::try_claim`] did with a frame.
pub(crate) enum Claimed<'a> {
    /// Queued for the connection's task (or evicted others to fit): the
    /// push is done. How many queued frames were evicted.
    Queued(usize),
    /// The frame goes straight to the socket: the caller sends it (see
    /// [`send_claims`]).
    Claim(Claim<'a>),
    /// Another thread holds the outbox right now: push the frame with
    /// [`Outbox::try_push`] once the claims are settled (a claim never waits
    /// for a lock while it holds others, so two fan-outs cannot deadlock).
    Busy(OutFrame),
}

/// A frame to be written to an idle socket, with its outbox held.
pub(crate) struct Claim<'a> {
    outbox: &'a Outbox,
    state: MutexGuard<'a, State>,
    frame: Option<OutFrame>,
    evicted: usize,
    /// The send left something for the connection's task.
    wake: bool,
}

impl Outbox {
    /// [`Outbox::try_push`] for a fan-out that batches its sends: when the
    /// frame would be written to the socket at once, the outbox is claimed
    /// instead, and the write left to [`send_claims`].
    pub(crate) fn try_claim(&self, frame: OutFrame) -> Result<Claimed<'_>, PushError> {
        let mut s = match self.state.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(Claimed::Busy(frame)),
        };
        let evicted = self.admit(&mut s, &frame)?;
        if s.direct_socket().is_some() {
            s.sent = true;
            Ok(Claimed::Claim(Claim { outbox: self, state: s, frame: Some(frame), evicted, wake: false }))
        } else {
            self.enqueue(s, frame, true);
            Ok(Claimed::Queued(evicted))
        }
    }
}

impl Claim<'_> {
    fn wire(&self) -> &[u8] {
        self.frame.as_ref().map_or(&[], |f| f.payload.wire())
    }

    /// The socket's descriptor and the bytes for it, for a batched send.
    fn send(&self) -> (RawFd, &[u8]) {
        (self.state.socket_fd, self.wire())
    }

    /// The send on its own, through the runtime's socket.
    fn write(&mut self) -> io::Result<usize> {
        match self.state.socket.as_deref() {
            Some(socket) => try_write(socket, self.wire()),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Records what the send did, as a push that wrote it would have.
    fn settle(&mut self, result: io::Result<usize>) {
        if let Some(frame) = self.frame.take() {
            self.wake = !matches!(self.state.wrote_alone(frame, result), Flushed::Done(_));
        }
    }
}

/// Sends every claimed frame, in one system call where the kernel allows
/// it, and releases the outboxes: what a socket did not take is queued and
/// its connection's task woken to finish it. Returns how many queued frames
/// the claims evicted.
pub(crate) fn send_claims(claims: &mut Vec<Claim<'_>>) -> usize {
    send_batch::send_each(claims, Claim::send, Claim::write, Claim::settle);
    let mut evicted = 0;
    for claim in claims.drain(..) {
        let Claim { outbox, state, evicted: e, wake, .. } = claim;
        evicted += e;
        drop(state);
        if wake {
            outbox.notify.notify_one();
        }
    }
    evicted
}
