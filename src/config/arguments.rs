//! A route's `arguments`: what each position of the client method's
//! argument list holds, so a deployment can keep the signatures its old hub
//! sent (`SendAsync("UserTyping", roomId, payload)`) without code.
//!
//! The spec is data and is checked when the routing file loads; building
//! the arguments from an event is the pipeline's job (`pipeline::shape`).
//! Only a payload field can be missing from an event: the other sources
//! always exist (an absent metadata field is sent as null, since metadata
//! is optional and the sidecar's own events carry little of it).

use std::fmt;

use serde_json::{Map, Value};

/// Why an `arguments` element of the routing file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    /// Not one of the sources the README's table lists.
    #[error(
        "'{0}' is not an argument source (payload, payload.<field>, room_id, event_type, event_id, timestamp, metadata.<field>, envelope, position)"
    )]
    UnknownSource(String),
    /// A field path with an empty or badly spelled segment.
    #[error("'{0}': a field path is names of letters, digits, '_' or '-', joined by '.' (e.g. payload.sender.name)")]
    BadPath(String),
    /// The route of an event the sidecar makes itself names a payload
    /// field those events never have: they could never be delivered.
    #[error("argument {named} names a field the sidecar's own events of this type lack (their payload is {payload})")]
    OutsideOwnPayload {
        /// The offending sources, as written.
        named: String,
        /// The fields the sidecar's payload has.
        payload: String,
    },
}

/// A path into a JSON object, such as `sender.name`: one name per level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
}

impl FieldPath {
    /// Parses `a.b.c`; `whole` is the element as written, for the error.
    fn parse(path: &str, whole: &str) -> Result<FieldPath, ArgumentError> {
        let valid = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let segments: Vec<&str> = path.split('.').collect();
        if !segments.iter().all(valid) {
            return Err(ArgumentError::BadPath(whole.to_string()));
        }
        Ok(FieldPath { text: path.to_string(), segments: segments.into_iter().map(String::from).collect() })
    }

    /// The value at this path, if every level is an object that has it.
    pub fn lookup<'a>(&self, object: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.segments.split_first()?;
        rest.iter().try_fold(object.get(first)?, |value, name| value.as_object()?.get(name))
    }

    /// The top-level field it starts at.
    pub fn top(&self) -> &str {
        self.segments.first().map(String::as_str).unwrap_or_default()
    }

    /// The path as written, e.g. `sender.name`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Where one argument of an invocation comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgumentSource {
    /// `payload`: the whole payload object (today's only argument).
    Payload,
    /// `payload.<path>`: one field of the payload; an event without it is invalid.
    PayloadField(FieldPath),
    /// `room_id`: the envelope's target, as a string.
    RoomId,
    /// `event_type`.
    EventType,
    /// `event_id`.
    EventId,
    /// `timestamp`: ISO 8601 in UTC with microseconds.
    Timestamp,
    /// `metadata.<path>`: one metadata field, or null when absent.
    MetadataField(FieldPath),
    /// `envelope`: the whole envelope as one object.
    Envelope,
    /// `position`: the event's place in its stream (the entry id), which a
    /// client hands back to a `history` join to get what it missed; null
    /// without Redis. A route that carries it keeps its events in the
    /// room's history (CONTRACT section 15, missed updates).
    Position,
}

impl ArgumentSource {
    /// Parses one element of a route's `arguments`.
    pub fn parse(text: &str) -> Result<ArgumentSource, ArgumentError> {
        Ok(match text {
            "payload" => ArgumentSource::Payload,
            "room_id" => ArgumentSource::RoomId,
            "event_type" => ArgumentSource::EventType,
            "event_id" => ArgumentSource::EventId,
            "timestamp" => ArgumentSource::Timestamp,
            "envelope" => ArgumentSource::Envelope,
            "position" => ArgumentSource::Position,
            _ => {
                if let Some(path) = text.strip_prefix("payload.") {
                    ArgumentSource::PayloadField(FieldPath::parse(path, text)?)
                } else if let Some(path) = text.strip_prefix("metadata.") {
                    ArgumentSource::MetadataField(FieldPath::parse(path, text)?)
                } else {
                    return Err(ArgumentError::UnknownSource(text.to_string()));
                }
            }
        })
    }
}

impl fmt::Display for ArgumentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgumentSource::Payload => f.write_str("payload"),
            ArgumentSource::PayloadField(p) => write!(f, "payload.{}", p.as_str()),
            ArgumentSource::RoomId => f.write_str("room_id"),
            ArgumentSource::EventType => f.write_str("event_type"),
            ArgumentSource::EventId => f.write_str("event_id"),
            ArgumentSource::Timestamp => f.write_str("timestamp"),
            ArgumentSource::MetadataField(p) => write!(f, "metadata.{}", p.as_str()),
            ArgumentSource::Envelope => f.write_str("envelope"),
            ArgumentSource::Position => f.write_str("position"),
        }
    }
}

/// A payload field an event lacks although its route's arguments name it:
/// the event is never delivered half-shaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payload has no field '{path}' (argument {position} of the route)")]
pub struct MissingField {
    /// 1-based position in the route's `arguments`.
    pub position: usize,
    /// The path, e.g. `sender.name`.
    pub path: String,
}

/// The argument list of a route: `[payload]` when the file says nothing,
/// which is what every route sent before the option existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arguments(Vec<ArgumentSource>);

impl Default for Arguments {
    fn default() -> Self {
        Arguments(vec![ArgumentSource::Payload])
    }
}

impl Arguments {
    /// Wraps parsed sources, in order.
    pub fn new(sources: Vec<ArgumentSource>) -> Arguments {
        Arguments(sources)
    }

    /// The sources, one per argument position.
    pub fn sources(&self) -> &[ArgumentSource] {
        &self.0
    }

    /// Whether the event's stream position is one of the arguments (the
    /// route keeps its events in the room's history).
    pub fn has_position(&self) -> bool {
        self.0.contains(&ArgumentSource::Position)
    }

    /// The first payload field named here that the payload lacks; `None`
    /// means an event with this payload can be shaped. `payload` is asked
    /// for only when a field is named (an object may be built for it).
    pub fn missing_field<'a>(&self, payload: impl FnOnce() -> &'a Map<String, Value>) -> Option<MissingField> {
        let mut named = self
            .0
            .iter()
            .enumerate()
            .filter_map(|(i, source)| match source {
                ArgumentSource::PayloadField(path) => Some((i, path)),
                _ => None,
            })
            .peekable();
        named.peek()?;
        let payload = payload();
        named.find_map(|(i, path)| {
            path.lookup(payload).is_none().then(|| MissingField { position: i + 1, path: path.as_str().to_string() })
        })
    }

    /// Checks that every payload field named here is one of `fields`, the
    /// flat payload of an event the sidecar makes itself.
    pub fn fit_own_payload(&self, fields: &[&str]) -> Result<(), ArgumentError> {
        let outside: Vec<String> = self
            .0
            .iter()
            .filter(|source| match source {
                ArgumentSource::PayloadField(path) => path.segments.len() > 1 || !fields.contains(&path.top()),
                _ => false,
            })
            .map(ToString::to_string)
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        Err(ArgumentError::OutsideOwnPayload { named: outside.join(", "), payload: fields.join(", ") })
    }
}

/// The payload of the typing events the sidecar makes itself (SendTyping
/// and the typing stop it sends after the timeout or on a message).
pub const TYPING_PAYLOAD_FIELDS: [&str; 3] = ["user_id", "username", "is_typing"];

/// The payload of the `user_joined` / `user_left` events the sidecar makes
/// on presence hubs (CONTRACT section 11).
pub const PRESENCE_PAYLOAD_FIELDS: [&str; 3] = ["user_id", "username", "room_id"];

/// The payload of a typing roster (a `delivery = "roster"` route): what its
/// client method receives in place of the typing event's payload.
pub const ROSTER_PAYLOAD_FIELDS: [&str; 3] = ["room_id", "count", "users"];

/// The payload of the `participant_count` events the sidecar makes on
/// presence hubs that route them (CONTRACT section 15).
pub const PARTICIPANT_COUNT_PAYLOAD_FIELDS: [&str; 4] = ["room_id", "count", "online", "away"];

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse_all(texts: &[&str]) -> Result<Arguments, ArgumentError> {
        texts.iter().map(|t| ArgumentSource::parse(t)).collect::<Result<_, _>>().map(Arguments::new)
    }

    #[test]
    fn every_source_parses_and_prints_as_written() {
        let texts = [
            "payload",
            "payload.user_id",
            "payload.sender.name",
            "room_id",
            "event_type",
            "event_id",
            "timestamp",
            "metadata.trace_id",
            "envelope",
            "position",
        ];
        let args = parse_all(&texts).expect("valid");
        let printed: Vec<String> = args.sources().iter().map(ToString::to_string).collect();
        assert_eq!(printed, texts);
        assert_eq!(args.sources()[2], ArgumentSource::PayloadField(FieldPath::parse("sender.name", "").expect("path")));
    }

    #[test]
    fn unknown_sources_and_bad_paths_are_refused() {
        for bad in ["paylod", "room", "Payload", "metadata", "payload.", "payload..x", "payload.a b", ".x", ""] {
            assert!(ArgumentSource::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(matches!(ArgumentSource::parse("roomId"), Err(ArgumentError::UnknownSource(_))));
        assert_eq!(
            ArgumentSource::parse("payload.sender..name"),
            Err(ArgumentError::BadPath("payload.sender..name".into()))
        );
    }

    #[test]
    fn the_default_is_the_payload_alone() {
        assert_eq!(Arguments::default().sources(), [ArgumentSource::Payload]);
    }

    #[test]
    fn a_missing_or_unreachable_field_is_named_with_its_position() {
        let args = parse_all(&["room_id", "payload.request_id", "payload.sender.name"]).expect("valid");
        let missing = |v: serde_json::Value| {
            let payload = v.as_object().cloned().expect("object");
            args.missing_field(|| &payload)
        };
        assert_eq!(missing(json!({"request_id": 1, "sender": {"name": "Ann"}})), None);
        // A null field exists: it is sent as null.
        assert_eq!(missing(json!({"request_id": null, "sender": {"name": "Ann"}})), None);
        assert_eq!(
            missing(json!({"sender": {"name": "Ann"}})),
            Some(MissingField { position: 2, path: "request_id".into() })
        );
        let not_an_object = missing(json!({"request_id": 1, "sender": "Ann"}));
        assert_eq!(
            not_an_object.map(|m| m.to_string()).as_deref(),
            Some("payload has no field 'sender.name' (argument 3 of the route)")
        );
    }

    #[test]
    fn fields_outside_a_flat_payload_are_refused() {
        let fits = parse_all(&["payload.user_id", "payload.is_typing", "room_id", "payload"]).expect("valid");
        assert_eq!(fits.fit_own_payload(&TYPING_PAYLOAD_FIELDS), Ok(()));
        let args =
            parse_all(&["payload.user_id", "payload.request_id", "payload.user_id.x", "room_id"]).expect("valid");
        assert_eq!(
            args.fit_own_payload(&TYPING_PAYLOAD_FIELDS),
            Err(ArgumentError::OutsideOwnPayload {
                named: "payload.request_id, payload.user_id.x".into(),
                payload: "user_id, username, is_typing".into()
            })
        );
    }
}
