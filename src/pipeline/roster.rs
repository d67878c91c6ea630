//! The typing roster of seed 003 (FR-017 to FR-021, NFR-017): per room of
//! a hub, who is typing, sent as one state `{room_id, count, users}`
//! instead of one indicator per user. A user is one entry however many
//! tabs type (keyed by user id); they leave the roster on their stop, on
//! an event that ends their typing (`ends_typing`, e.g. their response
//! posted), or a timeout after their last start. A room's roster goes out
//! at once on its first change, then at most once per window: changes
//! inside a window collapse into the state at its end, sent only if it
//! differs from what clients last got, or if it went out [`REPEAT_AFTER`]
//! ago and a typist is still at it (a client that joined or reconnected
//! since sees who is typing, seed 003's tabs edge case and FR-036).
//!
//! One task owns it (the pipeline's), so it needs no locks; its timers are
//! one heap entry per room and wake-up (not per keystroke), and a room is
//! forgotten once nobody types and its window has closed. Each instance
//! sees every event and keeps its own rosters for its own clients.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::coalesce::REPEAT_AFTER;
use crate::envelope::Envelope;

/// Most users listed in one roster (the first to start); `count` is all
/// of them. Bounds the frame a publisher's flood of user ids could build.
pub(super) const MAX_LISTED: usize = 50;

/// The `event_type` of the roster envelopes (what an `event_type` argument
/// of a roster route receives).
pub(super) const ROSTER_EVENT_TYPE: &str = "typing_roster";

/// A room of a hub.
pub(super) type RoomKey = (usize, String);

struct Typist {
    user_id: String,
    username: String,
    /// Removed at this instant without a new start.
    until: Instant,
}

#[derive(Default)]
struct Room {
    /// In order of their first start: a stable list for "Ann and Bob are typing".
    typists: Vec<Typist>,
    /// What clients were last sent: (user id, username) each.
    sent: Vec<(String, String)>,
    /// When it was sent.
    sent_at: Option<Instant>,
    /// No roster goes out before this; a change meanwhile waits for it.
    window_until: Option<Instant>,
    /// The roster changed inside the open window.
    dirty: bool,
    /// The wake-up queued for this room; older heap entries are stale.
    wake: Option<Instant>,
}

impl Room {
    fn state(&self) -> Vec<(String, String)> {
        self.typists.iter().map(|t| (t.user_id.clone(), t.username.clone())).collect()
    }

    fn next_wake(&self) -> Option<Instant> {
        let expiry = self.typists.iter().map(|t| t.until).min();
        [expiry, self.window_until].into_iter().flatten().min()
    }
}

/// Every room's roster.
pub(super) struct Rosters {
    window: Duration,
    timeout: Duration,
    rooms: HashMap<RoomKey, Room, ahash::RandomState>,
    timers: BinaryHeap<Reverse<(Instant, RoomKey)>>,
}

impl Rosters {
    /// At most one roster per room per `window`; a typist leaves after
    /// `timeout` without a new start.
    pub(super) fn new(window: Duration, timeout: Duration) -> Rosters {
        Rosters { window, timeout, rooms: HashMap::default(), timers: BinaryHeap::new() }
    }

    /// No room has a roster: a message takes nobody off one.
    pub(super) fn is_idle(&self) -> bool {
        self.rooms.is_empty()
    }

    /// A user started (`typing`) or stopped typing in a room; the roster
    /// to send now, if the change is one clients must see now.
    pub(super) fn observe(
        &mut self,
        key: RoomKey,
        user_id: &str,
        username: &str,
        typing: bool,
        now: Instant,
    ) -> Option<Envelope> {
        let room = match self.rooms.get_mut(&key) {
            Some(room) => room,
            None if !typing => return None,
            None => self.rooms.entry(key.clone()).or_default(),
        };
        let at = room.typists.iter().position(|t| t.user_id == user_id);
        let mut repeat = false;
        match (at, typing) {
            (Some(i), true) => {
                let t = &mut room.typists[i];
                t.until = now + self.timeout;
                if t.username == username {
                    // One more keystroke: only the timeout moves, unless what
                    // clients have is old enough to be sent again for those
                    // that joined since.
                    if room.sent_at.is_some_and(|at| now.duration_since(at) < REPEAT_AFTER) {
                        return None;
                    }
                    repeat = true;
                } else {
                    t.username = username.to_string();
                }
            }
            (None, true) => room.typists.push(Typist {
                user_id: user_id.to_string(),
                username: username.to_string(),
                until: now + self.timeout,
            }),
            (Some(i), false) => {
                room.typists.remove(i);
            }
            (None, false) => return None,
        }
        let out = changed(room, &key, self.window, now, repeat);
        self.schedule(key);
        out
    }

    /// Whether a roster of `room` of `hub` is kept (someone types, or its window is open).
    pub(super) fn in_room(&self, hub: usize, room: &str) -> bool {
        !self.rooms.is_empty() && self.rooms.contains_key(&(hub, room.to_string()))
    }

    /// Rosters due by `now`: typists past their timeout leave, and windows
    /// that close with a change send the state at their end.
    pub(super) fn due(&mut self, now: Instant) -> Vec<(usize, Envelope)> {
        let mut out = Vec::new();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.timers.pop() else { break };
            let Some(room) = self.rooms.get_mut(&key) else { continue };
            if room.wake != Some(at) {
                continue; // rescheduled since
            }
            room.wake = None;
            let before = room.typists.len();
            room.typists.retain(|t| t.until > now);
            let expired = room.typists.len() != before;
            let closed = room.window_until.is_some_and(|w| w <= now);
            if closed {
                room.window_until = None;
            }
            if expired || (closed && room.dirty) {
                if let Some(e) = changed(room, &key, self.window, now, false) {
                    out.push((key.0, e));
                }
            }
            if room.typists.is_empty() && room.window_until.is_none() {
                self.rooms.remove(&key);
            } else {
                self.schedule(key);
            }
        }
        out
    }

    /// When the next timeout or window end is due.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Rooms remembered (typing now, or inside a window).
    #[cfg(test)]
    pub(crate) fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Queues the room's next wake-up if it is earlier than the one queued.
    fn schedule(&mut self, key: RoomKey) {
        let Some(room) = self.rooms.get_mut(&key) else { return };
        let Some(next) = room.next_wake() else {
            room.wake = None;
            return;
        };
        if room.wake.is_some_and(|w| w <= next) {
            return; // that wake-up comes first and reschedules
        }
        room.wake = Some(next);
        self.timers.push(Reverse((next, key)));
    }
}

/// The room's roster changed (or is to be sent again: `repeat`): the
/// envelope to send now, or nothing while a window is open (marked dirty,
/// unless it is a mere repeat) or when clients already have this state and
/// no repeat is asked for.
fn changed(room: &mut Room, key: &RoomKey, window: Duration, now: Instant, repeat: bool) -> Option<Envelope> {
    if room.window_until.is_some_and(|w| now < w) {
        room.dirty |= !repeat;
        return None;
    }
    room.dirty = false;
    let state = room.state();
    if state == room.sent && !repeat {
        return None;
    }
    room.window_until = Some(now + window);
    room.sent_at = Some(now);
    let envelope = roster_envelope(&key.1, &state);
    room.sent = state;
    Some(envelope)
}

/// `{room_id, count, users: [{user_id, username}]}` as the payload of an
/// envelope the route's arguments are shaped from.
fn roster_envelope(room: &str, state: &[(String, String)]) -> Envelope {
    let users: Vec<Value> =
        state.iter().take(MAX_LISTED).map(|(id, name)| json!({"user_id": id, "username": name})).collect();
    let mut payload = Map::new();
    payload.insert("room_id".into(), room.into());
    payload.insert("count".into(), state.len().into());
    payload.insert("users".into(), users.into());
    Envelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: ROSTER_EVENT_TYPE.into(),
        timestamp: chrono::Utc::now(),
        room_id: room.to_string(),
        payload: payload.into(),
        metadata: None,
    }
}

#[cfg(test)]
mod frames;
#[cfg(test)]
mod tests;
