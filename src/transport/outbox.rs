//! The bounded per-connection outbound queue: the only transport type the
//! rest of the server touches. Broadcast pushes without ever waiting; the
//! connection's writer drains it.

use crate::sync::Unpoisoned;
use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpStream;
use tokio::sync::Notify;

pub(crate) use super::payload::Payload;
use super::replay::Replay;

/// One queued frame.
#[derive(Debug, Clone)]
pub(crate) struct OutFrame {
    /// What to send.
    pub payload: Payload,
    /// A coalescable event (typing, read receipts) that may be dropped first
    /// when the queue is full.
    pub droppable: bool,
    /// Counts toward the stateful-reconnect sequence (invocations and
    /// completions; not pings, closes or the handshake answer).
    pub sequenced: bool,
}

/// Why a connection is being closed from outside its own session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// Its queue overflowed with frames that may not be dropped.
    SlowConsumer,
    /// Nothing was heard from the client within the timeout.
    ClientTimeout,
    /// The server is draining.
    ServerShutdown,
    /// Its access token expired.
    TokenExpired,
    /// The client sent a message larger than the limit.
    MessageTooLarge,
    /// The client did not complete the handshake in time.
    HandshakeTimeout,
    /// The server is draining and hands this stateful session to another
    /// instance: the socket is dropped without a Close, so the client resumes.
    Handoff,
    /// Events owed to the connection may be lost (Redis lost or trimmed
    /// them before they were read): the client must reconnect and refetch.
    ContinuityLost,
    /// The client sent no invocation for its hub's inactivity timeout
    /// (pings do not count): a session timeout (seed 003 FR-035).
    Inactive,
    /// The client resumed its stateful session on a new socket before this
    /// one's end was noticed: this transport ends without a Close and the
    /// session parks for the new one (ASP.NET Core cancels the previous
    /// transport the same way).
    Superseded,
}

/// Why a push did not enqueue the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// A droppable frame met a full queue and was dropped.
    Dropped,
    /// A frame that may not be dropped met a full queue: the outbox is now
    /// kicked with [`Kick::SlowConsumer`].
    Overflow,
    /// The connection is closing or closed.
    Closed,
}

/// A count of bytes written of one frame (less than the frame's length,
/// which is far below 4 GiB), as [`State::front_written`] keeps it.
fn written_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Limits of one outbox.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most frames queued.
    pub max_frames: usize,
    /// Most bytes queued.
    pub max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<OutFrame>,
    bytes: usize,
    /// Set once; the writer finishes after what is queued.
    ending: bool,
    kicked: Option<Kick>,
    /// Frames written but not yet acknowledged, for stateful reconnect.
    replay: Option<Replay>,
    /// While set, only this many frames at the front may be taken: a
    /// history join holds what arrives after it until its replay is in
    /// front (see [`Outbox::hold`]).
    held: Option<usize>,
    /// The WebSocket's TCP socket while one is attached (see
    /// [`Outbox::attach`]): frames are then written from here, by whoever
    /// pushes them, and only what the socket would not take waits in `queue`.
    socket: Option<Arc<TcpStream>>,
    /// `socket`'s descriptor, read with the rest of the state: reaching it
    /// through the stream was a cache miss per delivery to a quiet
    /// connection. Meaningful only while `socket` is set.
    socket_fd: RawFd,
    /// Bytes of the front frame already written to `socket`: the rest must
    /// go before anything else, or the stream of frames would be torn. A
    /// `u32` (a frame is an entry of Redis, at most 512 MB) so that
    /// `socket_fd` fits beside it in what a `usize` took.
    front_written: u32,
    /// A write to `socket` failed: the connection's task ends it.
    failed: bool,
    /// A frame was queued since the last keep-alive check (see
    /// [`Outbox::keepalive_due`]). With `quiet`, two bytes that fit in the
    /// struct's padding: a count of frames and a mark on the connection
    /// would cost 16 bytes per connection.
    sent: bool,
    /// Keep-alive checkpoints passed since the last frame was queued.
    quiet: u8,
}

impl State {
    /// Empties the queue, keeping a front frame that is half written (its
    /// rest must still go out before the Close).
    fn clear(&mut self) {
        let keep = if self.front_written > 0 { self.queue.pop_front() } else { None };
        self.queue.clear();
        self.bytes = 0;
        if let Some(f) = keep {
            self.bytes = f.payload.len();
            self.queue.push_back(f);
        }
        self.held = self.held.map(|_| 0);
    }

    /// Frees the queue's buffer when it is empty and nothing is held.
    fn release_capacity(&mut self) {
        if self.queue.is_empty() && self.held.is_none() && self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
    }

    /// Numbers a sequenced frame as it starts going out.
    fn record(&mut self, f: &OutFrame) {
        if let (Some(r), true) = (self.replay.as_mut(), f.sequenced) {
            r.record(f.payload.clone());
        }
    }

    /// Writes queued frames to the socket until it would block, the queue
    /// (or its part before a hold) is empty, or the socket fails.
    fn write_queue(&mut self, socket: &TcpStream) -> Flushed {
        const SLICES: usize = 64;
        loop {
            let writable = self.queue.len().min(self.held.unwrap_or(usize::MAX));
            if writable == 0 {
                return Flushed::Done(self.end());
            }
            let mut slices = [IoSlice::new(&[]); SLICES];
            let n = writable.min(SLICES);
            for (i, f) in self.queue.iter().take(n).enumerate() {
                let wire = f.payload.wire();
                slices[i] = IoSlice::new(if i == 0 { &wire[self.front_written as usize..] } else { wire });
            }
            match socket.try_write_vectored(&slices[..n]) {
                Ok(written) => self.consume(written),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Flushed::Blocked,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "websocket write failed");
                    self.failed = true;
                    return Flushed::Failed;
                }
            }
        }
    }

    /// Writes one frame to the socket while the queue is empty: queued only
    /// if the socket did not take all of it (the rest goes first later), or
    /// if the write failed (a stateful session resends it after a resume).
    fn write_alone(&mut self, socket: &TcpStream, frame: OutFrame) -> Flushed {
        let result = try_write(socket, frame.payload.wire());
        self.wrote_alone(frame, result)
    }

    /// What [`State::write_alone`] does once the write has answered,
    /// whoever made it (a batch of sends writes many sockets at once).
    fn wrote_alone(&mut self, frame: OutFrame, result: std::io::Result<usize>) -> Flushed {
        debug_assert!(self.queue.is_empty() && self.front_written == 0);
        match result {
            Ok(n) if n == frame.payload.wire().len() => {
                self.record(&frame);
                return Flushed::Done(self.end());
            }
            Ok(n) => {
                if n > 0 {
                    self.record(&frame);
                }
                self.front_written = written_u32(n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::debug!(error = %e, "websocket write failed");
                self.failed = true;
            }
        }
        self.bytes += frame.payload.len();
        self.queue.push_back(frame);
        if self.failed {
            Flushed::Failed
        } else {
            Flushed::Blocked
        }
    }

    /// The socket a pushed frame goes to at once: one is attached, and
    /// nothing waits to go before the frame.
    fn direct_socket(&self) -> Option<&Arc<TcpStream>> {
        if self.queue.is_empty() && self.held.is_none() && !self.failed {
            self.socket.as_ref()
        } else {
            None
        }
    }

    /// Moves the queue past `written` bytes the socket took.
    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.queue.front() else { return };
            let rest = front.payload.wire().len() - self.front_written as usize;
            if self.front_written == 0 {
                let f = front.clone();
                self.record(&f);
            }
            if written < rest {
                self.front_written += written_u32(written);
                return;
            }
            written -= rest;
            self.front_written = 0;
            if let Some(f) = self.queue.pop_front() {
                self.bytes -= f.payload.len();
                if let Some(h) = self.held.as_mut() {
                    *h -= 1;
                }
            }
        }
    }

    /// How the connection ends, once the queue is empty.
    fn end(&self) -> Option<End> {
        match (self.kicked, self.ending, self.queue.is_empty()) {
            (Some(k), _, true) => Some(End::Kicked(k)),
            (None, true, true) => Some(End::Finished),
            _ => None,
        }
    }
}

/// Who writes a pushed frame to an attached socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// The pusher, at once, when nothing waits.
    Now,
    /// The connection's task, with whatever else is queued by then.
    ByTask,
}

/// What writing an attached socket's queue came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything writable went; the connection ends now if `Some`.
    Done(Option<End>),
    /// The socket's send buffer is full: wait until it is writable.
    Blocked,
    /// The socket failed.
    Failed,
}

/// What the writer takes out in one go.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Frames to write, in order.
    pub frames: Vec<Payload>,
    /// Set when the connection must end after these frames.
    pub end: Option<End>,
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The session queued its own Close frame (or needs none).
    Finished,
    /// Closed from outside; the session supplies the Close frame.
    Kicked(Kick),
}

/// A connection's outbound queue.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    limits: Limits,
}

impl Outbox {
    /// An empty outbox with the given limits.
    pub(crate) fn new(limits: Limits) -> Outbox {
        Outbox { state: Mutex::new(State::default()), notify: Notify::new(), limits }
    }

    /// Queues a frame without waiting. A full queue first gives up its oldest
    /// droppable frames (a droppable frame itself is dropped only when they
    /// cannot make room for it); when that is not enough for a frame that
    /// may not be dropped, the outbox is kicked as a slow consumer.
    /// Returns how many queued droppable frames were evicted.
    pub(crate) fn try_push(&self, frame: OutFrame) -> Result<usize, PushError> {
        self.push(frame, Write::Now)
    }

    /// [`Outbox::try_push`] for one of many recipients of a large fan-out:
    /// the frame is queued and the connection's task writes it, so the
    /// sends spread over the runtime's threads and a connection that gets
    /// frames faster than one at a time sends several in one `writev`.
    pub(crate) fn try_push_batched(&self, frame: OutFrame) -> Result<usize, PushError> {
        self.push(frame, Write::ByTask)
    }

    /// [`Outbox::try_push_batched`] that leaves waking the connection's
    /// task to the caller: true when it must call [`Outbox::wake`] later (the
    /// frame is the first in the queue). A fan-out on a thread outside the
    /// connections' runtime pushes its frames and has the wake-ups done on
    /// one of that runtime's workers (`fanout/wakes.rs`).
    pub(crate) fn try_push_unwoken(&self, frame: OutFrame) -> Result<(usize, bool), PushError> {
        self.push_inner(frame, Write::ByTask, false)
    }

    fn push(&self, frame: OutFrame, write: Write) -> Result<usize, PushError> {
        self.push_inner(frame, write, true).map(|(evicted, _)| evicted)
    }

    /// Queues (or writes) `frame`; with `wake` false, a first queued frame
    /// is reported instead of waking the task.
    fn push_inner(&self, frame: OutFrame, write: Write, wake: bool) -> Result<(usize, bool), PushError> {
        let mut s = self.lock();
        let evicted = self.admit(&mut s, &frame)?;
        if write == Write::Now {
            if let Some(socket) = s.direct_socket().cloned() {
                // The common case: nothing waits, so this frame goes to the
                // socket now, without waking the connection's task, and
                // without passing through the queue (which would keep its
                // memory for the connection's life).
                s.sent = true;
                match s.write_alone(&socket, frame) {
                    Flushed::Done(_) => return Ok((evicted, false)),
                    Flushed::Blocked | Flushed::Failed => {
                        drop(s);
                        self.notify.notify_one();
                        return Ok((evicted, false));
                    }
                }
            }
        }
        let first = self.enqueue(s, frame, wake);
        Ok((evicted, first && !wake))
    }

    /// Makes room for `frame` under the limits. A full queue first gives up
    /// its oldest droppable frames (a droppable `frame` is dropped itself
    /// only when they cannot make room for it); when that is not enough the
    /// outbox is kicked as a slow consumer. Returns how many queued frames
    /// were evicted.
    fn admit(&self, s: &mut State, frame: &OutFrame) -> Result<usize, PushError> {
        if s.ending || s.kicked.is_some() {
            return Err(PushError::Closed);
        }
        let len = frame.payload.len();
        let fits = |s: &State| s.queue.len() < self.limits.max_frames && s.bytes + len <= self.limits.max_bytes;
        let mut evicted = 0;
        if !fits(s) {
            if frame.droppable && !self.fits_without_droppable(s, len) {
                return Err(PushError::Dropped);
            }
            // A droppable frame takes the place of older ones: it carries
            // the latest state of its (room, user), so a slow client that
            // catches up shows that (a typist's stop, the server's clear)
            // rather than a state long gone that nothing would ever clear.
            while !fits(s) {
                // A half-written front frame is not the queue's to drop.
                let skip = usize::from(s.front_written > 0);
                let Some(pos) = s.queue.iter().skip(skip).position(|f| f.droppable).map(|p| p + skip) else {
                    s.kicked = Some(Kick::SlowConsumer);
                    s.clear();
                    self.notify.notify_one();
                    return Err(PushError::Overflow);
                };
                if let Some(old) = s.queue.remove(pos) {
                    s.bytes -= old.payload.len();
                    evicted += 1;
                    if let Some(h) = s.held.as_mut().filter(|h| pos < **h) {
                        *h -= 1;
                    }
                }
            }
        }
        Ok(evicted)
    }

    /// Whether a frame of `len` bytes would fit once every queued droppable
    /// frame (but a half-written front one) is gone.
    fn fits_without_droppable(&self, s: &State, len: usize) -> bool {
        let skip = usize::from(s.front_written > 0);
        let (frames, bytes) =
            s.queue.iter().skip(skip).filter(|f| f.droppable).fold((0, 0), |(n, b), f| (n + 1, b + f.payload.len()));
        s.queue.len() - frames < self.limits.max_frames && s.bytes - bytes + len <= self.limits.max_bytes
    }

    /// Puts an admitted frame in the queue for the connection's task, and
    /// wakes the task (if `wake`) when it is the first. True when it is.
    fn enqueue(&self, mut s: MutexGuard<'_, State>, frame: OutFrame, wake: bool) -> bool {
        s.bytes += frame.payload.len();
        s.queue.push_back(frame);
        s.sent = true;
        let first = s.queue.len() == 1;
        drop(s);
        if first && wake {
            self.notify.notify_one();
        }
        first
    }

    /// Queues the last frames of a connection that is ending or was kicked
    /// (its SignalR Close, the WebSocket Close), which [`Outbox::try_push`]
    /// refuses by then.
    pub(crate) fn push_final(&self, payload: Payload) {
        let mut s = self.lock();
        s.bytes += payload.len();
        s.queue.push_back(OutFrame { payload, droppable: false, sequenced: false });
        s.sent = true;
        drop(s);
        self.notify.notify_one();
    }

    /// Gives the outbox the connection's TCP socket (plain WebSockets; TLS
    /// and the other transports have none: their task takes frames with
    /// [`Outbox::take`]). `first` (a resumed session's Sequence and resent
    /// frames) goes before anything queued. The task then calls
    /// [`Outbox::flush`].
    pub(crate) fn attach(&self, socket: Option<Arc<TcpStream>>, first: Vec<Payload>) {
        let mut s = self.lock();
        s.sent |= !first.is_empty();
        for payload in first.into_iter().rev() {
            s.bytes += payload.len();
            s.queue.push_front(OutFrame { payload, droppable: false, sequenced: false });
            if let Some(h) = s.held.as_mut() {
                *h += 1;
            }
        }
        s.socket_fd = socket.as_ref().map_or(-1, |socket| socket.as_raw_fd());
        s.socket = socket;
        s.front_written = 0;
        s.failed = false;
        drop(s);
        self.notify.notify_one();
    }

    /// Takes the socket back when the connection's socket is gone. A frame
    /// it was half way through is dropped from the queue: it was numbered
    /// when it started, so a resumed session resends it whole. Unsequenced
    /// frames (pings, Acks, Pongs, Close frames) belonged to that socket and
    /// go with it: a resumed session starts with its own Sequence.
    pub(crate) fn detach(&self) {
        let mut s = self.lock();
        s.socket = None;
        if s.front_written > 0 {
            s.front_written = 0;
            s.queue.pop_front();
        }
        let held = s.held.unwrap_or(0);
        let mut kept_before_hold = 0;
        let mut i = 0;
        s.queue.retain(|f| {
            let keep = f.sequenced;
            kept_before_hold += usize::from(keep && i < held);
            i += 1;
            keep
        });
        if let Some(h) = s.held.as_mut() {
            *h = kept_before_hold;
        }
        s.bytes = s.queue.iter().map(|f| f.payload.len()).sum();
    }

    /// Writes what waits to the attached socket (see [`Outbox::attach`]).
    pub(crate) fn flush(&self) -> Flushed {
        let mut s = self.lock();
        if s.failed {
            return Flushed::Failed;
        }
        match s.socket.clone() {
            Some(socket) => s.write_queue(&socket),
            None => Flushed::Failed,
        }
    }

    /// Queues a sequenced frame of the session itself (a completion). Same
    /// rules as [`Outbox::try_push`].
    pub(crate) fn push_critical(&self, payload: Payload) -> Result<(), PushError> {
        self.try_push(OutFrame { payload, droppable: false, sequenced: true }).map(|_| ())
    }

    /// Queues a frame outside the reconnect sequence (handshake answer,
    /// ping, Close, Ack, Sequence).
    pub(crate) fn push_unsequenced(&self, payload: Payload) -> Result<(), PushError> {
        self.try_push(OutFrame { payload, droppable: false, sequenced: false }).map(|_| ())
    }

    /// One keep-alive check: `checks` of the connection's checkpoints
    /// passed since the previous call, and `per_interval` of them make a
    /// keep-alive interval. True when nothing was queued for `per_interval`
    /// checkpoints in a row: the caller sends a ping with
    /// [`Outbox::push_ping`]. As ASP.NET Core's `KeepAliveTick`, a
    /// connection that was sent anything lately is not pinged; an idle one
    /// is, once per interval.
    pub(crate) fn keepalive_due(&self, checks: u8, per_interval: u8) -> bool {
        let mut s = self.lock();
        if std::mem::take(&mut s.sent) {
            // Sent somewhere since the previous check: counted as sent at
            // this one, so the client never waits longer than an interval
            // and a checkpoint's gap (plus a tick) for a frame.
            s.quiet = 0;
            return false;
        }
        s.quiet = s.quiet.saturating_add(checks);
        if s.quiet < per_interval {
            return false;
        }
        s.quiet -= per_interval;
        true
    }

    /// Queues a keep-alive ping, which does not count as a frame sent for
    /// [`Outbox::keepalive_due`]: an idle connection is pinged once per
    /// interval, not once per interval and a checkpoint.
    pub(crate) fn push_ping(&self, payload: Payload) {
        if self.push_unsequenced(payload).is_ok() {
            // Whatever was queued between the two locks was queued right
            // after the ping: the next ping comes an interval after both.
            let mut s = self.lock();
            s.sent = false;
            // An idle connection's ping went through the queue: give its
            // memory back at once rather than at the next interval.
            s.release_capacity();
        }
    }

    /// Gives the queue's memory back when nothing waits in it and nothing
    /// is held. A frame written at once still passes through the queue,
    /// which then keeps its capacity (4 frames of 48 B: 192 B, a 208 B
    /// malloc chunk) for the connection's life; called once per keep-alive
    /// interval, so a busy connection does not free and allocate it per
    /// frame.
    pub(crate) fn shrink(&self) {
        self.lock().release_capacity();
    }

    /// The queue's capacity in frames, for tests of [`Outbox::shrink`].
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.lock().queue.capacity()
    }

    /// Marks the connection to end once what is queued has been written.
    pub(crate) fn finish(&self) {
        self.lock().ending = true;
        self.notify.notify_one();
    }

    /// Closes the connection from outside. The first reason wins.
    pub(crate) fn kick(&self, why: Kick) {
        self.kick_if_open(why);
    }

    /// [`Outbox::kick`], telling whether this kick is the one that closes
    /// the connection (it was neither kicked nor ending before), so a
    /// connection closed for a reason twice is counted once.
    pub(crate) fn kick_if_open(&self, why: Kick) -> bool {
        let mut s = self.lock();
        let first = s.kicked.is_none() && !s.ending;
        if first {
            s.kicked = Some(why);
            if why == Kick::SlowConsumer {
                s.clear();
            }
        }
        drop(s);
        self.notify.notify_one();
        first
    }

    /// Wakes the writer, e.g. to take the rest of a queue longer than one batch.
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }

    /// Undoes a kick for `why` once the transport it ended is gone, so the
    /// session may go on with another (a superseded stateful session).
    pub(crate) fn forgive(&self, why: Kick) {
        let mut s = self.lock();
        if s.kicked == Some(why) {
            s.kicked = None;
        }
    }

    /// Why the connection was closed from outside, if it was.
    pub(crate) fn kicked(&self) -> Option<Kick> {
        self.lock().kicked
    }

    /// Whether the connection is closing for any reason.
    pub(crate) fn is_closed(&self) -> bool {
        let s = self.lock();
        s.ending || s.kicked.is_some()
    }

    /// Holds back every frame queued from now on until [`Outbox::release`]:
    /// a join that replays a room's missed events enters fan-out first (so
    /// no live event is lost) and puts the replay before those live events
    /// once it has read it. Frames queued before the hold still go out.
    pub(crate) fn hold(&self) {
        let mut s = self.lock();
        if s.held.is_none() {
            s.held = Some(s.queue.len());
        }
    }

    /// Ends a [`Outbox::hold`]: `frames` (sequenced) go where the hold
    /// began, before everything queued since.
    pub(crate) fn release(&self, frames: Vec<Payload>) {
        let mut s = self.lock();
        let at = s.held.take().unwrap_or(0).min(s.queue.len());
        if s.kicked == Some(Kick::SlowConsumer) {
            return; // its queue was cleared: nothing more goes out
        }
        s.sent |= !frames.is_empty();
        for (i, payload) in frames.into_iter().enumerate() {
            s.bytes += payload.len();
            s.queue.insert(at + i, OutFrame { payload, droppable: false, sequenced: true });
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Takes every queued frame (at most `max`), and the end if one is due.
    pub(crate) fn take(&self, max: usize) -> Batch {
        let mut s = self.lock();
        let n = s.queue.len().min(max).min(s.held.unwrap_or(usize::MAX));
        if let Some(h) = s.held.as_mut() {
            *h -= n;
        }
        let mut frames = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(f) = s.queue.pop_front() else { break };
            s.bytes -= f.payload.len();
            s.record(&f);
            frames.push(f.payload);
        }
        if s.queue.is_empty() {
            // Most connections sit idle between deliveries: an empty queue
            // holds no memory (the next push allocates again).
            s.queue = VecDeque::new();
        }
        Batch { frames, end: s.end() }
    }

    /// Keeps sequenced frames after writing them, up to `max_bytes`, so a
    /// stateful reconnect can resend what the client did not acknowledge.
    pub(crate) fn enable_replay(&self, max_bytes: usize) {
        self.lock().replay = Some(Replay::new(max_bytes));
    }

    /// Replay state handed over by another instance: the next sequence id
    /// and the frames the client has not acknowledged.
    pub(crate) fn restore_replay(&self, max_bytes: usize, next_seq: u64, frames: Vec<(u64, Payload)>) {
        self.lock().replay = Some(Replay::restored(max_bytes, next_seq, frames));
    }

    /// Whether stateful reconnect keeps this connection's frames.
    pub(crate) fn is_stateful(&self) -> bool {
        self.lock().replay.is_some()
    }

    /// Whether a resume could resend every frame the client may lack:
    /// replay is on and never had to drop an unacknowledged frame. A
    /// session without it must not wait for a resume: taken up, it would
    /// start with no `Sequence`, and the official clients drop everything
    /// until one comes (Connected, and deaf).
    pub(crate) fn replay_intact(&self) -> bool {
        self.lock().replay.as_ref().is_some_and(Replay::is_intact)
    }

    /// The client acknowledged every frame up to `sequence_id`. False when it
    /// names a frame never sent (a protocol error).
    pub(crate) fn ack(&self, sequence_id: u64) -> bool {
        self.lock().replay.as_mut().is_none_or(|r| r.ack(sequence_id))
    }

    /// For a resumed connection: the sequence id of the first frame to
    /// resend, and the frames (unacknowledged ones, oldest first). `None`
    /// when the buffer lost frames, or replay is off.
    pub(crate) fn resume(&self) -> Option<(u64, Vec<Payload>)> {
        self.lock().replay.as_ref().and_then(Replay::resume)
    }

    /// For a session handed to another instance: numbers what is still
    /// queued as if written, and returns the next sequence id and every
    /// unacknowledged frame. `None` when the buffer lost frames.
    pub(crate) fn handoff(&self) -> Option<(u64, Vec<(u64, Payload)>)> {
        let mut s = self.lock();
        s.replay.as_ref()?;
        // A half-written front frame was numbered when it started.
        if s.front_written > 0 {
            s.front_written = 0;
            s.queue.pop_front();
        }
        while let Some(f) = s.queue.pop_front() {
            s.record(&f);
        }
        s.bytes = 0;
        s.replay.as_ref().and_then(Replay::frames)
    }

    /// Puts `frames` (sequenced) before everything queued: the events a
    /// taken-over session missed come before the live ones.
    pub(crate) fn prepend(&self, frames: Vec<Payload>) {
        let mut s = self.lock();
        let at = usize::from(s.front_written > 0); // never before a half-written frame
        s.sent |= !frames.is_empty();
        for payload in frames.into_iter().rev() {
            s.bytes += payload.len();
            s.queue.insert(at, OutFrame { payload, droppable: false, sequenced: true });
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Puts frames that [`Outbox::take`] handed out back at the front, in
    /// order, when nobody received them: a long poll whose client went away
    /// between the take and the answer. The next take starts with them, so
    /// the connection loses nothing and keeps its order. They were numbered
    /// for stateful reconnect when taken, so they are not numbered again;
    /// a slow consumer's queue was cleared, so nothing goes back to it.
    pub(crate) fn put_back(&self, frames: Vec<Payload>) {
        let mut s = self.lock();
        if s.kicked == Some(Kick::SlowConsumer) {
            return;
        }
        let at = usize::from(s.front_written > 0); // never before a half-written frame
        let n = frames.len();
        for payload in frames.into_iter().rev() {
            s.bytes += payload.len();
            s.queue.insert(at, OutFrame { payload, droppable: false, sequenced: false });
        }
        // They were taken from before the hold's mark: it moves with them.
        if let Some(h) = s.held.as_mut() {
            *h += n;
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Number of frames waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves when frames or an end may be waiting. Cancel-safe: a wake-up
    /// that arrives while nobody waits is kept for the next call.
    pub(crate) async fn ready(&self) {
        self.notify.notified().await
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent queue (every
        // mutation is a single step), so a poisoned lock is still usable.
        self.state.locked()
    }
}

/// A non-blocking write of `wire` to `socket`, retried when interrupted.
fn try_write(socket: &TcpStream, wire: &[u8]) -> std::io::Result<usize> {
    loop {
        match socket.try_write(wire) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

mod claim;
pub(crate) use claim::{send_claims, Claimed};

#[cfg(test)]
mod direct_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &str, droppable: bool) -> OutFrame {
        OutFrame { payload: Payload::text(s.to_string()), droppable, sequenced: true }
    }

    #[test]
    fn replay_keeps_unacknowledged_sequenced_frames() {
        let o = outbox(10);
        o.enable_replay(1 << 20);
        o.try_push(frame("a", false)).expect("room");
        o.push_unsequenced(Payload::text("ping".into())).expect("room");
        o.try_push(frame("b", false)).expect("room");
        assert_eq!(o.take(10).frames.len(), 3);
        assert!(o.ack(1));
        assert!(!o.ack(3), "frame 3 was never sent");
        let (first, frames) = o.resume().expect("replay on");
        let texts: Vec<_> = frames.iter().map(|p| String::from_utf8_lossy(p.as_bytes()).to_string()).collect();
        assert_eq!((first, texts), (2, vec!["b".to_string()]));
    }

    #[test]
    fn an_overflowing_replay_buffer_refuses_resume() {
        let o = outbox(10);
        o.enable_replay(2);
        for t in ["aa", "bb"] {
            o.try_push(frame(t, false)).expect("room");
        }
        o.take(10);
        assert!(o.resume().is_none());
        assert!(o.handoff().is_none(), "nor handed over");
    }

    fn outbox(max_frames: usize) -> Outbox {
        Outbox::new(Limits { max_frames, max_bytes: 1 << 20 })
    }

    #[test]
    fn a_full_queue_drops_droppable_frames_first() {
        let o = outbox(2);
        o.try_push(frame("typing", true)).expect("room");
        o.try_push(frame("chat1", false)).expect("room");
        assert_eq!(o.try_push(frame("typing2", true)), Ok(1), "the newer state takes the older one's place");
        assert_eq!(o.try_push(frame("chat2", false)), Ok(1), "evicts the queued typing frame");
        assert_eq!(o.try_push(frame("typing3", true)), Err(PushError::Dropped), "no droppable frame left to give up");
        let batch = o.take(10);
        let texts: Vec<_> = batch.frames.iter().map(|p| String::from_utf8_lossy(p.as_bytes()).to_string()).collect();
        assert_eq!(texts, ["chat1", "chat2"]);
    }

    #[test]
    fn overflow_of_critical_frames_kicks_the_connection() {
        let o = outbox(1);
        o.try_push(frame("a", false)).expect("room");
        assert_eq!(o.try_push(frame("b", false)), Err(PushError::Overflow));
        assert_eq!(o.try_push(frame("c", false)), Err(PushError::Closed));
        assert_eq!(o.take(10).end, Some(End::Kicked(Kick::SlowConsumer)));
    }

    #[test]
    fn finish_ends_after_the_queue() {
        let o = outbox(4);
        o.try_push(frame("close", false)).expect("room");
        o.finish();
        let b = o.take(10);
        assert_eq!((b.frames.len(), b.end), (1, Some(End::Finished)));
    }

    fn texts(b: &Batch) -> Vec<String> {
        b.frames.iter().map(|p| String::from_utf8_lossy(p.as_bytes()).to_string()).collect()
    }

    #[test]
    fn a_hold_keeps_later_frames_back_until_the_replay_is_in_front_of_them() {
        let o = outbox(10);
        o.try_push(frame("before", false)).expect("room");
        o.hold();
        o.try_push(frame("live1", false)).expect("room");
        assert_eq!(texts(&o.take(10)), ["before"], "what was queued before the hold goes");
        o.try_push(frame("live2", true)).expect("room");
        assert!(o.take(10).frames.is_empty(), "held");
        o.release(vec![Payload::text("missed1".into()), Payload::text("missed2".into())]);
        assert_eq!(texts(&o.take(10)), ["missed1", "missed2", "live1", "live2"]);
        o.try_push(frame("after", false)).expect("room");
        assert_eq!(texts(&o.take(10)), ["after"], "released for good");
    }

    #[test]
    fn an_eviction_before_the_hold_point_moves_it() {
        let o = outbox(3);
        o.try_push(frame("typing", true)).expect("room");
        o.try_push(frame("chat", false)).expect("room");
        o.hold();
        o.try_push(frame("live", false)).expect("room");
        assert_eq!(o.try_push(frame("live2", false)), Ok(1), "the typing frame is evicted");
        o.release(vec![Payload::text("missed".into())]);
        assert_eq!(texts(&o.take(10)), ["chat", "missed", "live", "live2"]);
    }

    #[test]
    fn a_ping_is_due_after_an_interval_without_frames_and_does_not_count_as_one() {
        let o = outbox(10);
        o.try_push(frame("a", false)).expect("room");
        assert!(!o.keepalive_due(1, 4), "a frame was queued");
        assert!(!o.keepalive_due(3, 4), "three checkpoints without one");
        assert!(o.keepalive_due(1, 4), "the fourth");
        o.push_ping(Payload::text("ping".into()));
        assert!(!o.keepalive_due(3, 4));
        assert!(o.keepalive_due(2, 4), "an interval after the ping, not after the ping as a frame");
        o.try_push(frame("b", false)).expect("room");
        assert!(!o.keepalive_due(4, 4), "a frame since the last check");
    }

    #[test]
    fn frames_put_back_go_first_in_order_and_are_not_numbered_twice() {
        let o = outbox(10);
        o.enable_replay(1 << 20);
        o.try_push(frame("a", false)).expect("room");
        o.try_push(frame("b", false)).expect("room");
        o.hold();
        o.try_push(frame("held", false)).expect("room");
        let taken = o.take(10);
        assert_eq!(texts(&taken), ["a", "b"]);
        o.try_push(frame("c", false)).expect("room");
        o.put_back(taken.frames);
        assert_eq!(texts(&o.take(10)), ["a", "b"], "the hold's mark moved with them");
        o.release(Vec::new());
        assert_eq!(texts(&o.take(10)), ["held", "c"]);
        let (first, resend) = o.resume().expect("replay on");
        let resend: Vec<_> = resend.iter().map(|p| String::from_utf8_lossy(p.as_bytes()).to_string()).collect();
        assert_eq!((first, resend), (1, vec!["a".into(), "b".into(), "held".into(), "c".into()]));
    }

    #[test]
    fn nothing_is_put_back_into_a_slow_consumers_cleared_queue() {
        let o = outbox(1);
        o.try_push(frame("a", false)).expect("room");
        let taken = o.take(10);
        o.try_push(frame("b", false)).expect("room");
        assert_eq!(o.try_push(frame("c", false)), Err(PushError::Overflow));
        o.put_back(taken.frames);
        let b = o.take(10);
        assert_eq!((b.frames.len(), b.end), (0, Some(End::Kicked(Kick::SlowConsumer))));
    }

    #[test]
    fn byte_limit_counts() {
        let o = Outbox::new(Limits { max_frames: 100, max_bytes: 8 });
        o.try_push(frame("12345", false)).expect("room");
        assert_eq!(o.try_push(frame("6789", true)), Err(PushError::Dropped));
    }
}

#[cfg(test)]
mod handoff_tests {
    use super::*;

    fn text(p: &Payload) -> String {
        String::from_utf8_lossy(p.as_bytes()).to_string()
    }

    #[test]
    fn a_handoff_numbers_what_is_still_queued_and_a_restore_resends_it_after_the_catch_up() {
        let o = Outbox::new(Limits { max_frames: 10, max_bytes: 1 << 20 });
        o.enable_replay(1 << 20);
        o.push_critical(Payload::text("a".into())).expect("room");
        o.take(10);
        o.push_critical(Payload::text("b".into())).expect("room");
        o.push_unsequenced(Payload::text("ping".into())).expect("room");
        let (next, frames) = o.handoff().expect("nothing lost");
        assert_eq!(next, 3);
        assert_eq!(frames.iter().map(|(n, p)| (*n, text(p))).collect::<Vec<_>>(), [(1, "a".into()), (2, "b".into())]);

        let taken = Outbox::new(Limits { max_frames: 10, max_bytes: 1 << 20 });
        taken.restore_replay(1 << 20, next, frames);
        taken.push_critical(Payload::text("live".into())).expect("room");
        taken.prepend(vec![Payload::text("missed".into())]);
        let (first, resend) = taken.resume().expect("restored");
        assert_eq!((first, resend.iter().map(text).collect::<Vec<_>>()), (1, vec!["a".into(), "b".into()]));
        let queued: Vec<_> = taken.take(10).frames.iter().map(text).collect();
        assert_eq!(queued, ["missed", "live"]);
        assert_eq!(taken.resume().expect("numbered").1.len(), 4, "missed is 3, live is 4");
    }
}
