//! Batched bursts of seed 003 (FR-005): a `delivery = "batch"` route sends
//! the first event of a room at once, and the events of the next window
//! together, as one invocation carrying the list, in stream order; a batch
//! sent at a window's end opens the next window, so a steady burst gets
//! one invocation per window, and a window that ends with nothing held
//! lets the next event go at once again.
//!
//! Batches are kept per (hub, room, event type). Each held event keeps its
//! [`Ack`] until its batch goes out, so a crash loses nothing a Redis
//! claim cannot give again. The pipeline sends a room's held batches before
//! any immediate event to that room ([`Batches::take_room`]), so a
//! connection sees one room's events in stream order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use super::ack::Ack;
use crate::envelope::Envelope;

/// A room of a hub.
type RoomKey = (usize, String);

/// Events held for one batch, oldest first, each with its ack and its
/// stream position (an argument of routes that carry `position`).
pub(super) type Held = Vec<(Envelope, Ack, Option<String>)>;

struct Batch {
    event_type: String,
    window_until: Instant,
    held: Held,
}

/// What became of an offered event.
pub(super) enum Offer {
    /// No window was open: send it now, alone (a list of one).
    Send(Envelope, Ack, Option<String>),
    /// Held for the window's end.
    Held,
}

/// The open batch windows.
pub(super) struct Batches {
    window: Duration,
    rooms: HashMap<RoomKey, Vec<Batch>, ahash::RandomState>,
    timers: BinaryHeap<Reverse<(Instant, RoomKey)>>,
}

impl Batches {
    /// Windows of `window`.
    pub(super) fn new(window: Duration) -> Batches {
        Batches { window, rooms: HashMap::default(), timers: BinaryHeap::new() }
    }

    /// Offers an event of a batch route of `hub`, with its stream position.
    pub(super) fn offer(
        &mut self,
        hub: usize,
        envelope: Envelope,
        ack: Ack,
        position: Option<String>,
        now: Instant,
    ) -> Offer {
        let key = (hub, envelope.room_id.clone());
        let batches = self.rooms.entry(key.clone()).or_default();
        if let Some(b) = batches.iter_mut().find(|b| b.event_type == envelope.event_type) {
            b.held.push((envelope, ack, position));
            return Offer::Held;
        }
        let until = now + self.window;
        batches.push(Batch { event_type: envelope.event_type.clone(), window_until: until, held: Vec::new() });
        self.timers.push(Reverse((until, key)));
        Offer::Send(envelope, ack, position)
    }

    /// Takes what a room holds, for an event that must not overtake it.
    /// The windows stay open: the burst goes on being batched.
    pub(super) fn take_room(&mut self, hub: usize, room: &str) -> Vec<Held> {
        // A lookup by a borrowed tuple needs an owned key; rooms with
        // nothing held are the common case, so check cheaply first.
        if self.rooms.is_empty() {
            return Vec::new();
        }
        match self.rooms.get_mut(&(hub, room.to_string())) {
            Some(batches) => {
                batches.iter_mut().filter(|b| !b.held.is_empty()).map(|b| std::mem::take(&mut b.held)).collect()
            }
            None => Vec::new(),
        }
    }

    /// Takes what every room holds (a handoff's cut): the windows stay open.
    pub(super) fn take_every_room(&mut self) -> Vec<Held> {
        self.rooms
            .values_mut()
            .flat_map(|batches| batches.iter_mut())
            .filter(|b| !b.held.is_empty())
            .map(|b| std::mem::take(&mut b.held))
            .collect()
    }

    /// Whether a batch window of `room` of `hub` is open.
    pub(super) fn in_room(&self, hub: usize, room: &str) -> bool {
        !self.rooms.is_empty() && self.rooms.contains_key(&(hub, room.to_string()))
    }

    /// Batches whose window ends by `now`, each with its hub.
    pub(super) fn due(&mut self, now: Instant) -> Vec<(usize, Held)> {
        let mut out = Vec::new();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, key))) = self.timers.pop() else { break };
            let Some(batches) = self.rooms.get_mut(&key) else { continue };
            let mut reopened = None;
            batches.retain_mut(|b| {
                if b.window_until > now {
                    return true;
                }
                if b.held.is_empty() {
                    return false; // quiet: the next event goes at once
                }
                out.push((key.0, std::mem::take(&mut b.held)));
                b.window_until = now + self.window;
                reopened = Some(b.window_until);
                true
            });
            if let Some(until) = reopened {
                self.timers.push(Reverse((until, key)));
            } else if batches.is_empty() {
                self.rooms.remove(&key);
            }
        }
        out
    }

    /// Everything held, at shutdown: nothing consumed is left undelivered.
    pub(super) fn take_all(&mut self) -> Vec<(usize, Held)> {
        self.timers.clear();
        self.rooms
            .drain()
            .flat_map(|((hub, _), batches)| {
                batches.into_iter().filter(|b| !b.held.is_empty()).map(move |b| (hub, b.held))
            })
            .collect()
    }

    /// When the next window ends.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, room: &str, n: u64) -> Envelope {
        let payload = serde_json::json!({"n": n});
        Envelope {
            event_id: format!("e-{n}"),
            event_type: event_type.into(),
            timestamp: chrono::Utc::now(),
            room_id: room.into(),
            payload: payload.as_object().cloned().expect("object").into(),
            metadata: None,
        }
    }

    fn numbers(held: &Held) -> Vec<u64> {
        held.iter().map(|(e, _, _)| e.payload.object()["n"].as_u64().expect("n")).collect()
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn the_first_goes_at_once_the_rest_of_the_window_together_in_order() {
        let t0 = Instant::now();
        let mut b = Batches::new(Duration::from_millis(500));
        assert!(
            matches!(b.offer(0, event("r", "d", 1), Ack::none(), None, t0), Offer::Send(e, _, _) if e.event_id == "e-1")
        );
        for n in 2..=5 {
            assert!(matches!(b.offer(0, event("r", "d", n), Ack::none(), None, ms(t0, 100 * n)), Offer::Held));
        }
        assert!(b.due(ms(t0, 499)).is_empty());
        let out = b.due(ms(t0, 500));
        assert_eq!(out.len(), 1);
        assert_eq!(numbers(&out[0].1), [2, 3, 4, 5]);
        // The batch opened the next window: a steady burst stays batched...
        assert!(matches!(b.offer(0, event("r", "d", 6), Ack::none(), None, ms(t0, 600)), Offer::Held));
        assert_eq!(numbers(&b.due(ms(t0, 1000))[0].1), [6]);
        // ...and a window that ends empty lets the next event go at once.
        assert!(b.due(ms(t0, 1500)).is_empty());
        assert!(matches!(b.offer(0, event("r", "d", 7), Ack::none(), None, ms(t0, 1600)), Offer::Send(..)));
    }

    #[test]
    fn rooms_hubs_and_event_types_batch_apart() {
        let t0 = Instant::now();
        let mut b = Batches::new(Duration::from_millis(500));
        assert!(matches!(b.offer(0, event("r", "d", 1), Ack::none(), None, t0), Offer::Send(..)));
        assert!(matches!(b.offer(0, event("r", "e", 2), Ack::none(), None, t0), Offer::Send(..)), "another room");
        assert!(matches!(b.offer(1, event("r", "d", 3), Ack::none(), None, t0), Offer::Send(..)), "another hub");
        assert!(matches!(b.offer(0, event("s", "d", 4), Ack::none(), None, t0), Offer::Send(..)), "another type");
    }

    #[test]
    fn a_rooms_held_events_can_be_taken_early_and_the_window_stays() {
        let t0 = Instant::now();
        let mut b = Batches::new(Duration::from_millis(500));
        b.offer(0, event("r", "d", 1), Ack::none(), None, t0);
        b.offer(0, event("r", "d", 2), Ack::none(), None, ms(t0, 10));
        b.offer(0, event("s", "d", 1), Ack::none(), None, ms(t0, 10));
        b.offer(0, event("s", "d", 2), Ack::none(), None, ms(t0, 20));
        assert!(b.take_room(0, "other").is_empty());
        let taken = b.take_room(0, "d");
        assert_eq!(taken.iter().map(numbers).collect::<Vec<_>>(), [vec![2], vec![2]]);
        assert!(b.take_room(0, "d").is_empty(), "taken once");
        b.offer(0, event("r", "e", 1), Ack::none(), None, ms(t0, 20));
        b.offer(0, event("r", "e", 2), Ack::none(), None, ms(t0, 20));
        b.offer(1, event("r", "d", 1), Ack::none(), None, ms(t0, 20));
        b.offer(1, event("r", "d", 2), Ack::none(), None, ms(t0, 20));
        assert_eq!(b.take_every_room().iter().map(numbers).collect::<Vec<_>>(), [vec![2], vec![2]], "every room's");
        assert!(b.take_every_room().is_empty(), "taken once");
        assert!(matches!(b.offer(0, event("r", "d", 3), Ack::none(), None, ms(t0, 30)), Offer::Held), "still batching");
        assert_eq!(numbers(&b.due(ms(t0, 500))[0].1), [3]);
    }

    #[test]
    fn a_held_event_is_acknowledged_when_its_batch_goes_out() {
        let t0 = Instant::now();
        let mut b = Batches::new(Duration::from_millis(500));
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = acked.clone();
        b.offer(0, event("r", "d", 1), Ack::none(), None, t0);
        b.offer(
            0,
            event("r", "d", 2),
            Ack::new(move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst)),
            None,
            t0,
        );
        assert!(!acked.load(std::sync::atomic::Ordering::SeqCst));
        let all = b.take_all();
        assert_eq!(all.len(), 1);
        for (_, held) in all {
            for (_, ack, _) in held {
                ack.resolve(super::super::Outcome::Delivered);
            }
        }
        assert!(acked.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(b.next_deadline(), None);
    }
}
