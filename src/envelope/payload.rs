//! An event's payload: the publisher's JSON text, and the object parsed from
//! it only when something needs one.
//!
//! JSON clients get the text spliced into their frames as it came, and the
//! routing decisions most events need (`user_id`, `sender_id`) read one
//! top-level string straight from it. The object (a `serde_json` map) is
//! built on first use: for MessagePack clients, `payload.` argument paths,
//! typing state and web push. Building it, checking it against a schema
//! and dropping it was about a third of an event's instructions
//! (bench/gaps.md, section 1).

use std::fmt;
use std::sync::OnceLock;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::payload_check::{scan, Found, Index, Scan};

/// The payload of an [`super::Envelope`]: its text as received (for events
/// decoded from a publisher) and its object, built on first use.
#[derive(Clone, Default)]
pub struct Payload {
    /// The publisher's text; `None` for the events the sidecar makes and
    /// once the object was changed. Boxed with its index: an envelope stays
    /// small.
    text: Option<Box<Text>>,
    /// Boxed for the same reason.
    object: OnceLock<Box<Map<String, Value>>>,
}

#[derive(Clone)]
struct Text {
    /// One JSON object, checked by `scan` (surrounding whitespace trimmed).
    raw: Box<str>,
    /// Where its top-level members are (`None` if a key has escapes).
    index: Option<Index>,
}

impl Payload {
    /// A payload from JSON text, kept as it is; `None` unless the text is
    /// an object.
    pub fn from_text(text: &str) -> Option<Payload> {
        let text = trim(text);
        match scan(text, None) {
            Ok((Scan::Passed, index)) => Some(Payload::from_checked_text(text, index)),
            _ => None,
        }
    }

    /// A payload known only as text that `scan` found to be a JSON object
    /// `serde_json` parses into a map (same syntax, number range and depth),
    /// so building the object later cannot fail; `index` is what the scan
    /// found of its members.
    pub(super) fn from_checked_text(raw: &str, index: Option<Index>) -> Payload {
        Payload { text: Some(Box::new(Text { raw: raw.into(), index })), object: OnceLock::new() }
    }

    /// A payload whose object is already built, keeping its text.
    pub(super) fn from_text_and_object(raw: &str, object: Map<String, Value>) -> Payload {
        Payload {
            text: Some(Box::new(Text { raw: raw.into(), index: None })),
            object: OnceLock::from(Box::new(object)),
        }
    }

    /// The publisher's text (one JSON object), to be spliced into JSON
    /// frames unchanged.
    pub fn raw(&self) -> Option<&str> {
        self.text.as_ref().map(|t| &*t.raw)
    }

    /// The payload as an object, parsed from its text on first use.
    pub fn object(&self) -> &Map<String, Value> {
        self.object.get_or_init(|| Box::new(self.parse()))
    }

    fn parse(&self) -> Map<String, Value> {
        // The text was checked to parse (`from_checked_text`).
        self.raw().and_then(|raw| serde_json::from_str(raw).ok()).unwrap_or_default()
    }

    /// The object, to change: the publisher's text no longer says the same
    /// and is let go.
    pub fn object_mut(&mut self) -> &mut Map<String, Value> {
        let object = std::mem::take(&mut self.object).into_inner().unwrap_or_else(|| Box::new(self.parse()));
        self.text = None;
        self.object = OnceLock::from(object);
        match self.object.get_mut() {
            Some(object) => object,
            None => unreachable!("set on the line above"),
        }
    }

    /// A top-level string field (`user_id`, `sender_id`): found through the
    /// text's index while there is one, without building the object.
    pub fn str_field(&self, field: &str) -> Option<&str> {
        if let Some(Text { raw, index: Some(index) }) = self.text.as_deref() {
            match index.string(raw, field) {
                Found::Plain(text) => return Some(text),
                Found::Other => return None,
                // Escapes in the string: the object unescapes it.
                Found::Escaped => {}
            }
        }
        self.object().get(field).and_then(Value::as_str)
    }
}

impl From<Map<String, Value>> for Payload {
    fn from(object: Map<String, Value>) -> Payload {
        Payload { text: None, object: OnceLock::from(Box::new(object)) }
    }
}

/// Equal when the objects are, however their texts were spaced.
impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        match (self.raw(), other.raw()) {
            (Some(a), Some(b)) if a == b => true,
            _ => self.object() == other.object(),
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.raw(), self.object.get()) {
            (Some(raw), _) => write!(f, "Payload({raw})"),
            (None, object) => write!(f, "Payload({object:?})"),
        }
    }
}

/// JSON text without the whitespace around it.
pub(super) fn trim(text: &str) -> &str {
    text.trim_matches([' ', '\t', '\n', '\r'])
}

/// Serialized as its object (MessagePack, the envelope as JSON).
impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.object().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Payload {
        Payload::from_text(t).expect("an object")
    }

    #[test]
    fn a_string_field_is_read_from_the_text_without_building_the_object() {
        let p = text(r#"{"a":{"sender_id":"inner"},"sender_id":"u1","n":2,"sender_id":"u2"}"#);
        assert_eq!(p.str_field("sender_id"), Some("u2"), "the last one, as a parsed object keeps");
        assert_eq!(p.str_field("n"), None, "not a string");
        assert_eq!(p.str_field("missing"), None);
        assert!(p.object.get().is_none(), "nothing was built");
        let escaped = text(r#"{"user_id":"a\"b","k\u0065y":"v"}"#);
        assert_eq!(escaped.str_field("user_id"), Some("a\"b"), "unescaped by the object");
        assert_eq!(text(r#"{"k\u0065y":"v"}"#).str_field("key"), Some("v"), "an escaped key");
        assert_eq!(text(r#"{"a":"é","b":"x"}"#).str_field("b"), Some("x"), "after a multi-byte character");
    }

    #[test]
    fn texts_spaced_differently_are_equal_and_a_change_lets_the_text_go() {
        let (a, b) = (text(r#"{"x": 1, "y": [true]}"#), text(r#"{"y":[true],"x":1}"#));
        assert_eq!(a, b);
        let mut c = a.clone();
        c.object_mut().insert("z".into(), Value::Null);
        assert!(c.raw().is_none(), "the text no longer says the same");
        assert_ne!(a, c);
        assert_eq!(serde_json::to_value(&c).expect("serializes")["z"], Value::Null);
    }
}
