//! Coalescing of high-frequency events (typing, read receipts) per
//! (hub, room, user) in a short window (CONTRACT section 6): the first
//! event goes out at once (leading edge); later ones in the window collapse
//! into the latest, sent when the window closes if it differs from what was
//! sent (trailing edge). A state equal to the last one sent is not sent
//! again while it is remembered (for the typing timeout), so a typist's
//! keystrokes become one indicator, not one frame per keystroke. Memory:
//! one slot per key active within that time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::envelope::Envelope;

/// Who an event is about: hub, room, user.
pub type Key = (usize, String, String);

struct Slot {
    window_until: Instant,
    /// The slot (and what was last sent) is forgotten after this.
    remember_until: Instant,
    /// What was last sent: event type and payload.
    last_sent: (String, Map<String, Value>),
    pending: Option<Envelope>,
    merged: u64,
}

/// The coalescing windows.
pub struct Coalescer {
    window: Duration,
    remember: Duration,
    slots: HashMap<Key, Slot>,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
}

/// What became of an offered event.
#[derive(Debug, PartialEq)]
pub enum Offer {
    /// Send it now (leading edge).
    Send(Envelope),
    /// Held: it replaced the pending state of an open window.
    Held,
    /// Not sent: the same state went out recently.
    Unchanged,
}

impl Coalescer {
    /// Windows of `window`; the last state sent is remembered for `remember`.
    pub fn new(window: Duration, remember: Duration) -> Coalescer {
        Coalescer { window, remember: remember.max(window), slots: HashMap::new(), timers: BinaryHeap::new() }
    }

    /// Offers an event; it goes out at once when no window is open.
    pub fn offer(&mut self, key: Key, envelope: Envelope, now: Instant) -> Offer {
        match self.slots.get_mut(&key) {
            Some(slot) if now < slot.window_until => {
                if slot.pending.replace(envelope).is_some() {
                    slot.merged += 1;
                }
                Offer::Held
            }
            Some(slot) if slot.last_sent.0 == envelope.event_type && slot.last_sent.1 == envelope.payload => {
                slot.remember_until = now + self.remember;
                Offer::Unchanged
            }
            _ => {
                self.open(key, &envelope, now);
                Offer::Send(envelope)
            }
        }
    }

    /// Records an event the server sends regardless of windows (a typing
    /// state it clears itself), so a held older state is not sent after it.
    /// Returns how many held events it made obsolete.
    pub fn force(&mut self, key: Key, envelope: &Envelope, now: Instant) -> u64 {
        let dropped = self.slots.get(&key).map(|s| s.merged + u64::from(s.pending.is_some())).unwrap_or(0);
        self.open(key, envelope, now);
        dropped
    }

    /// Trailing edges due by `now`, each with how many events it stands for;
    /// also how many held events were dropped as already sent.
    pub fn due(&mut self, now: Instant) -> (Vec<(Envelope, u64)>, u64) {
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
            let merged = std::mem::take(&mut slot.merged) + 1;
            if slot.last_sent.0 == pending.event_type && slot.last_sent.1 == pending.payload {
                dropped += merged;
                slot.remember_until = slot.remember_until.max(now + self.remember);
                self.timers.push(Reverse((slot.remember_until, key)));
            } else {
                self.open(key, &pending, now);
                out.push((pending, merged));
            }
        }
        (out, dropped)
    }

    /// When the next window closes.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    fn open(&mut self, key: Key, sent: &Envelope, now: Instant) {
        let until = now + self.window;
        let slot = Slot {
            window_until: until,
            remember_until: now + self.remember,
            last_sent: (sent.event_type.clone(), sent.payload.clone()),
            pending: None,
            merged: 0,
        };
        self.slots.insert(key.clone(), slot);
        self.timers.push(Reverse((until, key)));
    }
}

#[cfg(test)]
mod tests {
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
            payload,
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
        assert!(matches!(c.offer(key(), typing(true), t0), Offer::Send(_)));
        assert_eq!(c.offer(key(), typing(false), t0 + Duration::from_millis(10)), Offer::Held);
        assert_eq!(c.offer(key(), typing(true), t0 + Duration::from_millis(20)), Offer::Held);
        assert_eq!(c.offer(key(), typing(false), t0 + Duration::from_millis(30)), Offer::Held);
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_millis(100)));
        let (sent, dropped) = c.due(t0 + Duration::from_millis(100));
        assert_eq!((sent.len(), sent[0].0.payload["is_typing"].clone(), sent[0].1, dropped), (1, false.into(), 3, 0));
    }

    #[test]
    fn an_unchanged_state_is_not_sent_again() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_millis(100), Duration::from_secs(5));
        c.offer(key(), typing(true), t0);
        c.offer(key(), typing(true), t0 + Duration::from_millis(50));
        let (sent, dropped) = c.due(t0 + Duration::from_millis(100));
        assert_eq!((sent.len(), dropped), (0, 1));
        // Keystrokes after the window: the same state is not sent again...
        for ms in [300, 500, 4000] {
            assert_eq!(c.offer(key(), typing(true), t0 + Duration::from_millis(ms)), Offer::Unchanged, "{ms} ms");
        }
        // ...a change is, at once...
        assert!(matches!(c.offer(key(), typing(false), t0 + Duration::from_millis(4100)), Offer::Send(_)));
        // ...and once forgotten, the same state goes out again.
        assert!(c.due(t0 + Duration::from_secs(10)).0.is_empty());
        assert!(matches!(c.offer(key(), typing(false), t0 + Duration::from_secs(10)), Offer::Send(_)));
    }
}
