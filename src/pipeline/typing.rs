//! Server-side typing state (seed 003 FR-020/FR-021): a user's typing
//! indicator in a room is cleared with a typing-stop event after a quiet
//! period, and at once when a message from that user reaches the room.
//! Each instance sees every event, so each clears for its own clients.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::coalesce::Key;
use crate::config::RouteTable;
use crate::envelope::Envelope;

/// What a typing event type means.
#[derive(Debug, Clone)]
struct Kind {
    starts: bool,
    stop_event: String,
}

struct Typist {
    deadline: Instant,
    username: String,
    stop_event: String,
}

/// Who is typing where.
pub(super) struct TypingState {
    timeout: Duration,
    kinds: HashMap<String, Kind, ahash::RandomState>,
    typing: HashMap<Key, Typist, ahash::RandomState>,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
}

impl TypingState {
    /// Learns the typing event types from the routing file's `typing` methods.
    pub(super) fn new(routes: &RouteTable, timeout: Duration) -> TypingState {
        let mut kinds = HashMap::default();
        for hub in &routes.hubs {
            for (start, stop) in hub.typing_events() {
                kinds.insert(start.clone(), Kind { starts: true, stop_event: stop.clone() });
                kinds.insert(stop.clone(), Kind { starts: false, stop_event: stop.clone() });
            }
        }
        TypingState { timeout, kinds, typing: HashMap::default(), timers: BinaryHeap::new() }
    }

    /// Whether `event_type` is a typing start or stop of some hub.
    pub(super) fn knows(&self, event_type: &str) -> bool {
        self.kinds.contains_key(event_type)
    }

    /// Whether someone is typing in `room` of `hub` (few type at once: a scan).
    pub(super) fn in_room(&self, hub: usize, room: &str) -> bool {
        self.typing.keys().any(|(h, r, _)| *h == hub && r == room)
    }

    /// Notes a typing event (start or stop) about `key`; true when it says
    /// the user is typing (so a coalescer can show a resumed typist at once).
    pub(super) fn observe(&mut self, key: &Key, envelope: &Envelope, now: Instant) -> bool {
        let Some(kind) = self.kinds.get(&envelope.event_type) else { return false };
        let starts = kind.starts && envelope.payload.object().get("is_typing").and_then(Value::as_bool) != Some(false);
        if !starts {
            self.typing.remove(key);
            return false;
        }
        let username = envelope.payload_str("username").unwrap_or(&key.2).to_string();
        let deadline = now + self.timeout;
        self.typing.insert(key.clone(), Typist { deadline, username, stop_event: kind.stop_event.clone() });
        self.timers.push(Reverse((deadline, key.clone())));
        true
    }

    /// No typist is known: a message ends nobody's typing.
    pub(super) fn is_idle(&self) -> bool {
        self.typing.is_empty()
    }

    /// A message from `key`'s user reached the room: the stop to send, if
    /// that user was typing there.
    pub(super) fn message_sent(&mut self, key: &Key) -> Option<Envelope> {
        self.typing.remove(key).map(|t| stop(key, t, "message_sent"))
    }

    /// Typists quiet past the timeout, as stop events.
    pub(super) fn due(&mut self, now: Instant) -> Vec<(Key, Envelope)> {
        let mut out = Vec::new();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, key))) = self.timers.pop() else { break };
            if self.typing.get(&key).is_some_and(|t| t.deadline <= now) {
                if let Some(t) = self.typing.remove(&key) {
                    let env = stop(&key, t, "typing_timeout");
                    out.push((key, env));
                }
            }
        }
        out
    }

    /// When the next typist times out.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }
}

fn stop(key: &Key, t: Typist, why: &str) -> Envelope {
    let mut payload = Map::new();
    payload.insert("user_id".into(), key.2.clone().into());
    payload.insert("username".into(), t.username.into());
    payload.insert("is_typing".into(), false.into());
    let mut metadata = Map::new();
    metadata.insert("cleared_by".into(), why.into());
    Envelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: t.stop_event,
        timestamp: chrono::Utc::now(),
        room_id: key.1.clone(),
        payload: payload.into(),
        metadata: Some(metadata),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn start() -> Envelope {
        let payload = serde_json::json!({"user_id": "u", "username": "Ann", "is_typing": true});
        Envelope {
            event_id: "x".into(),
            event_type: "typing_start".into(),
            timestamp: chrono::Utc::now(),
            room_id: "r".into(),
            payload: payload.as_object().cloned().unwrap_or_default().into(),
            metadata: None,
        }
    }

    fn state() -> TypingState {
        let routes = RouteTable::load(Path::new("protocol/routes.toml")).expect("routes");
        TypingState::new(&routes, Duration::from_secs(5))
    }

    #[test]
    fn a_quiet_typist_is_cleared_after_the_timeout() {
        let (t0, key) = (Instant::now(), (0, "r".to_string(), "u".to_string()));
        let mut s = state();
        s.observe(&key, &start(), t0);
        assert!(s.due(t0 + Duration::from_secs(4)).is_empty());
        s.observe(&key, &start(), t0 + Duration::from_secs(4));
        assert!(s.due(t0 + Duration::from_secs(5)).is_empty(), "the second event restarted the clock");
        let stops = s.due(t0 + Duration::from_secs(9));
        assert_eq!(stops.len(), 1);
        assert_eq!(
            (stops[0].1.event_type.as_str(), stops[0].1.payload.object()["is_typing"].clone()),
            ("typing_stop", false.into())
        );
        assert_eq!(stops[0].1.payload.object()["username"], "Ann");
    }

    #[test]
    fn the_stop_has_the_payload_routes_are_checked_against() {
        let key = (0, "r".to_string(), "u".to_string());
        let mut s = state();
        s.observe(&key, &start(), Instant::now());
        let stop = s.message_sent(&key).expect("a stop");
        let mut fields: Vec<&str> = stop.payload.object().keys().map(String::as_str).collect();
        let mut expected = crate::config::TYPING_PAYLOAD_FIELDS.to_vec();
        fields.sort_unstable();
        expected.sort_unstable();
        assert_eq!(fields, expected, "config::TYPING_PAYLOAD_FIELDS must list what the sidecar sends");
    }

    #[test]
    fn a_message_clears_at_once() {
        let key = (0, "r".to_string(), "u".to_string());
        let mut s = state();
        s.observe(&key, &start(), Instant::now());
        assert!(s.message_sent(&key).is_some());
        assert!(s.message_sent(&key).is_none());
        assert!(s.due(Instant::now() + Duration::from_secs(10)).is_empty());
    }
}
