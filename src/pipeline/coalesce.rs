//! Coalescing of high-frequency events (typing, read receipts) per
//! (hub, room, user) in a short window (CONTRACT section 6): the first
//! event goes out at once (leading edge); later ones in the window collapse
//! into the latest, sent when the window closes if it differs from what was
//! sent (trailing edge). A state equal to the last one sent is not sent
//! again for [`REPEAT_AFTER`], so a typist's keystrokes (one `typing_start`
//! each, a few hundred milliseconds apart, each opening a window of its
//! own) become one frame per [`REPEAT_AFTER`], not one per keystroke (seed
//! 000 SC-004), while a client that joined the room after the first one
//! still sees the indicator within that time.
//!
//! One exception to the window, for typing: when a stop went out after a
//! quiet spell (the typist's client debounced) and the typist resumes
//! within the window, the start goes out at once instead of at the
//! trailing edge, so a resumed indicator never waits up to a window. That
//! happens once per quiet spell; a rapidly alternating key still gets one
//! frame per window. Memory: one slot per key active within that time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::envelope::{Envelope, Payload};

/// Who an event is about: hub, room, user.
pub(super) type Key = (usize, String, String);

/// How long a state equal to the last one sent is not sent again. Longer
/// saves frames of a steady typist; shorter shows a typist sooner to a
/// client that joined after the state first went out.
pub(super) const REPEAT_AFTER: Duration = Duration::from_secs(2);

/// What one window holds: a user's state of one kind, `None` for the
/// typing indicator (starts and stops replace each other), or the event
/// type of another coalesced route (a read receipt). Two kinds never share
/// a window: a read receipt held behind a typing stop would be replaced by
/// it and never sent.
pub(super) type StateKey = (Key, Option<String>);

struct Slot {
    window_until: Instant,
    /// The slot (and what was last sent) is forgotten after this.
    remember_until: Instant,
    /// What was last sent: event type and payload.
    last_sent: (String, Payload),
    /// When it was sent.
    sent_at: Instant,
    pending: Option<Envelope>,
    merged: u64,
    /// When the last event about the key was offered.
    last_offered: Instant,
    /// The window was opened by a stop sent after a quiet spell: a start
    /// inside it is a typist resuming and goes out at once.
    resumable: bool,
}

impl Slot {
    /// Whether `e` is the state last sent.
    fn sent(&self, e: &Envelope) -> bool {
        self.last_sent.0 == e.event_type && self.last_sent.1 == e.payload
    }
}

/// The coalescing windows, one per `K` (the pipeline's [`StateKey`]).
pub(super) struct Coalescer<K = Key> {
    window: Duration,
    remember: Duration,
    slots: HashMap<K, Slot, ahash::RandomState>,
    timers: BinaryHeap<Reverse<(Instant, K)>>,
    /// Windows holding a state for their trailing edge.
    held: usize,
}

/// What became of an offered event.
#[derive(Debug, PartialEq)]
pub(super) enum Offer {
    /// Send it now (leading edge).
    Send(Envelope),
    /// Held: it replaced the pending state of an open window.
    Held,
    /// Not sent: the same state went out recently.
    Unchanged,
}

impl<K: Clone + Eq + Hash + Ord> Coalescer<K> {
    /// Windows of `window`; the last state sent is remembered for `remember`.
    pub(super) fn new(window: Duration, remember: Duration) -> Coalescer<K> {
        Coalescer {
            window,
            remember: remember.max(window),
            slots: HashMap::default(),
            timers: BinaryHeap::new(),
            held: 0,
        }
    }

    /// Offers an event; it goes out at once when no window is open, or
    /// when it `starts` typing inside a window a post-quiet stop opened.
    pub(super) fn offer(&mut self, key: K, envelope: Envelope, starts: bool, now: Instant) -> Offer {
        let quiet = match self.slots.get_mut(&key) {
            Some(slot) if now < slot.window_until && !(starts && slot.resumable) => {
                slot.last_offered = now;
                if slot.pending.replace(envelope).is_some() {
                    slot.merged += 1;
                } else {
                    self.held += 1;
                }
                return Offer::Held;
            }
            Some(slot) if slot.sent(&envelope) && now.duration_since(slot.sent_at) < REPEAT_AFTER => {
                slot.last_offered = now;
                slot.remember_until = now + self.remember;
                return Offer::Unchanged;
            }
            Some(slot) => now >= slot.window_until && now.duration_since(slot.last_offered) >= self.window,
            None => true,
        };
        // A start that resumes inside a window replaces what it held.
        self.open(key, &envelope, quiet && !starts, now);
        Offer::Send(envelope)
    }

    /// Records an event the server sends regardless of windows (a typing
    /// state it clears itself), so a held older state is not sent after it.
    /// Returns how many held events it made obsolete.
    pub(super) fn force(&mut self, key: K, envelope: &Envelope, now: Instant) -> u64 {
        let dropped = self.slots.get(&key).map(|s| s.merged + u64::from(s.pending.is_some())).unwrap_or(0);
        self.open(key, envelope, true, now);
        dropped
    }

    /// Takes the state `key`'s open window holds for its trailing edge, if
    /// it differs from what was sent (a typing stop that a message from the
    /// typist makes due at once); the window stays open.
    pub(super) fn take_held(&mut self, key: &K) -> Option<Envelope> {
        let slot = self.slots.get_mut(key)?;
        if slot.pending.as_ref().is_some_and(|p| !slot.sent(p)) {
            self.held -= 1;
            slot.pending.take()
        } else {
            None
        }
    }

    /// Whether any window holds a state for its trailing edge.
    pub(super) fn holds_any(&self) -> bool {
        self.held > 0
    }

    /// Trailing edges due by `now`, each with how many events it stands for;
    /// also how many held events were dropped as already sent.
    pub(super) fn due(&mut self, now: Instant) -> (Vec<(Envelope, u64)>, u64) {
        let mut out = Vec::new();
        let mut dropped = 0;
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, key))) = self.timers.pop() else { break };
            let Some(slot) = self.slots.get_mut(&key) else { continue };
            if slot.window_until > now {
                continue; // a newer window; its own timer is queued
            }
            let Some(pending) = slot.pending.take() else {
                if slot.remember_until <= now {
                    self.slots.remove(&key);
                } else {
                    self.timers.push(Reverse((slot.remember_until, key)));
                }
                continue;
            };
            self.held -= 1;
            let merged = std::mem::take(&mut slot.merged) + 1;
            if slot.sent(&pending) {
                // Nothing new to send, but the key is still busy: the next
                // window follows at once, so a flickering key gets at most
                // one frame per window.
                dropped += merged;
                slot.window_until = now + self.window;
                slot.remember_until = slot.remember_until.max(now + self.remember);
                slot.resumable = false;
                self.timers.push(Reverse((slot.window_until, key)));
            } else {
                self.open(key, &pending, false, now);
                out.push((pending, merged));
            }
        }
        (out, dropped)
    }

    /// When the next window closes.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    fn open(&mut self, key: K, sent: &Envelope, resumable: bool, now: Instant) {
        let until = now + self.window;
        let slot = Slot {
            window_until: until,
            remember_until: now + self.remember,
            last_sent: (sent.event_type.clone(), sent.payload.clone()),
            sent_at: now,
            pending: None,
            merged: 0,
            last_offered: now,
            resumable,
        };
        if self.slots.insert(key.clone(), slot).is_some_and(|old| old.pending.is_some()) {
            self.held -= 1;
        }
        self.timers.push(Reverse((until, key)));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    fn typing(on: bool) -> Envelope {
        let mut payload = Map::new();
        payload.insert("user_id".into(), "u".into());
        payload.insert("is_typing".into(), on.into());
        Envelope {
            event_id: uuid::Uuid::new_v4().to_string(),
            event_type: if on { "typing_start" } else { "typing_stop" }.into(),
            timestamp: chrono::Utc::now(),
            room_id: "r".into(),
            payload: payload.into(),
            metadata: None,
        }
    }

    fn key() -> Key {
        (0, "r".into(), "u".into())
    }

    #[test]
    fn leading_edge_then_latest_state_at_the_trailing_edge() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_millis(100), Duration::from_secs(5));
        assert!(matches!(c.offer(key(), typing(true), true, t0), Offer::Send(_)));
        assert_eq!(c.offer(key(), typing(false), false, t0 + Duration::from_millis(10)), Offer::Held);
        assert_eq!(c.offer(key(), typing(true), true, t0 + Duration::from_millis(20)), Offer::Held);
        assert_eq!(c.offer(key(), typing(false), false, t0 + Duration::from_millis(30)), Offer::Held);
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_millis(100)));
        let (sent, dropped) = c.due(t0 + Duration::from_millis(100));
        assert_eq!(
            (sent.len(), sent[0].0.payload.object()["is_typing"].clone(), sent[0].1, dropped),
            (1, false.into(), 3, 0)
        );
    }

    #[test]
    fn an_unchanged_state_is_not_sent_again() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_millis(100), Duration::from_secs(5));
        c.offer(key(), typing(true), true, t0);
        c.offer(key(), typing(true), true, t0 + Duration::from_millis(50));
        let (sent, dropped) = c.due(t0 + Duration::from_millis(100));
        assert_eq!((sent.len(), dropped), (0, 1));
        let repeat = REPEAT_AFTER.as_millis() as u64;
        // Keystrokes after the window: the same state is not sent again...
        for ms in [300, 500, repeat - 1] {
            assert_eq!(c.offer(key(), typing(true), true, t0 + Duration::from_millis(ms)), Offer::Unchanged, "{ms} ms");
        }
        // ...until REPEAT_AFTER after it went out (a client that joined
        // since sees the typist), then not for as long again...
        assert!(matches!(c.offer(key(), typing(true), true, t0 + Duration::from_millis(repeat)), Offer::Send(_)));
        for ms in [repeat + 300, 2 * repeat - 1] {
            assert_eq!(c.offer(key(), typing(true), true, t0 + Duration::from_millis(ms)), Offer::Unchanged, "{ms} ms");
        }
        // ...a change is, at once...
        assert!(matches!(c.offer(key(), typing(false), false, t0 + Duration::from_millis(2 * repeat)), Offer::Send(_)));
        // ...and once forgotten, the same state goes out again.
        assert!(c.due(t0 + Duration::from_secs(10)).0.is_empty());
        assert!(matches!(c.offer(key(), typing(false), false, t0 + Duration::from_secs(10)), Offer::Send(_)));
    }

    #[test]
    fn a_typist_resuming_after_a_quiet_stop_is_shown_at_once() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = Coalescer::new(Duration::from_millis(100), Duration::from_secs(5));
        assert!(matches!(c.offer(key(), typing(true), true, t0), Offer::Send(_)));
        // The debounce stop after two quiet seconds goes out at once...
        assert!(matches!(c.offer(key(), typing(false), false, ms(2000)), Offer::Send(_)));
        // ...and so does the start 30 ms later, inside the stop's window.
        assert!(matches!(c.offer(key(), typing(true), true, ms(2030)), Offer::Send(_)));
        // Only once: the next flicker in the window is held as usual.
        assert_eq!(c.offer(key(), typing(false), false, ms(2040)), Offer::Held);
        assert_eq!(c.offer(key(), typing(true), true, ms(2050)), Offer::Held);
        let (sent, dropped) = c.due(ms(2130));
        assert_eq!((sent.len(), dropped), (0, 2), "the held start equals what was sent");
        // The key stayed busy, so a stop right after is held for a window.
        assert_eq!(c.offer(key(), typing(false), false, ms(2140)), Offer::Held);
    }

    #[test]
    fn a_rapidly_alternating_key_resumes_once_then_gets_one_frame_per_window() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut frames = 0;
        for i in 0..100u64 {
            let now = t0 + Duration::from_millis(10 * i);
            let (trailing, _) = c.due(now);
            frames += trailing.len();
            let on = i % 2 == 1;
            frames += usize::from(matches!(c.offer(key(), typing(on), on, now), Offer::Send(_)));
        }
        frames += c.due(t0 + Duration::from_secs(2)).0.len();
        // The leading stop, the resumed start, then at most one per window.
        assert!(frames <= 2 + 10, "{frames} frames");
    }

    #[test]
    fn a_held_stop_can_be_taken_early_and_is_counted_until_then() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = Coalescer::new(Duration::from_millis(100), Duration::from_secs(5));
        assert!(!c.holds_any());
        assert!(matches!(c.offer(key(), typing(true), true, t0), Offer::Send(_)));
        assert_eq!(c.offer(key(), typing(false), false, ms(10)), Offer::Held);
        assert!(c.holds_any());
        let held = c.take_held(&key()).expect("the held stop");
        assert_eq!(held.payload.object()["is_typing"], false);
        assert!(!c.holds_any());
        assert_eq!(c.force(key(), &held, ms(20)), 0, "nothing else was held");
        assert!(c.due(ms(200)).0.is_empty(), "and nothing is sent at the window's end");
        // A held state equal to what was sent is not taken.
        assert!(matches!(c.offer(key(), typing(true), true, ms(220)), Offer::Send(_)));
        assert_eq!(c.offer(key(), typing(false), false, ms(230)), Offer::Held);
        assert_eq!(c.offer(key(), typing(true), true, ms(240)), Offer::Held);
        assert!(c.take_held(&key()).is_none());
        assert!(c.holds_any());
        assert_eq!(c.due(ms(400)), (vec![], 2));
        assert!(!c.holds_any());
    }
}
