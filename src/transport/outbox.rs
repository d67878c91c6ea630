//! The bounded per-connection outbound queue: the only transport type the
//! rest of the server touches. Broadcast pushes without ever waiting; the
//! connection's writer drains it.

use crate::sync::Unpoisoned;
use std::collections::VecDeque;
use std::sync::Mutex;

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

    /// Queues a frame without waiting. A full queue first gives up droppable
    /// frames (the new one if it is droppable, else the oldest queued ones);
    /// when that is not enough the outbox is kicked as a slow consumer.
    /// Returns how many queued droppable frames were evicted.
    pub(crate) fn try_push(&self, frame: OutFrame) -> Result<usize, PushError> {
        let mut s = self.lock();
        if s.ending || s.kicked.is_some() {
            return Err(PushError::Closed);
        }
        let len = frame.payload.len();
        let fits = |s: &State| s.queue.len() < self.limits.max_frames && s.bytes + len <= self.limits.max_bytes;
        let mut evicted = 0;
        if !fits(&s) {
            if frame.droppable {
                return Err(PushError::Dropped);
            }
            while !fits(&s) {
                let Some(pos) = s.queue.iter().position(|f| f.droppable) else {
                    s.kicked = Some(Kick::SlowConsumer);
                    s.queue.clear();
                    s.bytes = 0;
                    s.held = s.held.map(|_| 0);
                    drop(s);
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
        s.bytes += len;
        s.queue.push_back(frame);
        let first = s.queue.len() == 1;
        drop(s);
        if first {
            self.notify.notify_one();
        }
        Ok(evicted)
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

    /// Marks the connection to end once what is queued has been written.
    pub(crate) fn finish(&self) {
        self.lock().ending = true;
        self.notify.notify_one();
    }

    /// Closes the connection from outside. The first reason wins.
    pub(crate) fn kick(&self, why: Kick) {
        let mut s = self.lock();
        if s.kicked.is_none() && !s.ending {
            s.kicked = Some(why);
            if why == Kick::SlowConsumer {
                s.queue.clear();
                s.bytes = 0;
                s.held = s.held.map(|_| 0);
            }
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Wakes the writer, e.g. to take the rest of a queue longer than one batch.
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
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
        let State { queue, replay, .. } = &mut *s;
        for f in queue.drain(..n) {
            if let (Some(r), true) = (replay.as_mut(), f.sequenced) {
                r.record(f.payload.clone());
            }
            frames.push(f.payload);
        }
        s.bytes = s.queue.iter().map(|f| f.payload.len()).sum();
        if s.queue.is_empty() {
            // Most connections sit idle between deliveries: an empty queue
            // holds no memory (the next push allocates again).
            s.queue = VecDeque::new();
        }
        let end = match (s.kicked, s.ending, s.queue.is_empty()) {
            (Some(k), _, true) => Some(End::Kicked(k)),
            (None, true, true) => Some(End::Finished),
            _ => None,
        };
        Batch { frames, end }
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
        let State { queue, replay, .. } = &mut *s;
        let replay = replay.as_mut()?;
        for f in queue.drain(..) {
            if f.sequenced {
                replay.record(f.payload);
            }
        }
        s.bytes = 0;
        s.replay.as_ref().and_then(Replay::frames)
    }

    /// Puts `frames` (sequenced) before everything queued: the events a
    /// taken-over session missed come before the live ones.
    pub(crate) fn prepend(&self, frames: Vec<Payload>) {
        let mut s = self.lock();
        for payload in frames.into_iter().rev() {
            s.bytes += payload.len();
            s.queue.push_front(OutFrame { payload, droppable: false, sequenced: true });
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent queue (every
        // mutation is a single step), so a poisoned lock is still usable.
        self.state.locked()
    }
}

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
        assert_eq!(o.try_push(frame("typing2", true)), Err(PushError::Dropped));
        assert_eq!(o.try_push(frame("chat2", false)), Ok(1), "evicts the queued typing frame");
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
