//! The envelope as its encodings carry it, decoded straight into typed
//! fields: strings borrowed from the entry's bytes, no intermediate JSON
//! object for the envelope itself.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{EntryFields, EnvelopeError, Head};

/// An envelope's fields, borrowed where the encoding allows.
#[derive(Deserialize)]
pub(super) struct Wire<'a> {
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    #[serde(borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(borrow)]
    pub timestamp: Cow<'a, str>,
    #[serde(borrow)]
    pub room_id: Cow<'a, str>,
    /// The payload's text, kept to be spliced into JSON frames: from the
    /// `data` encoding as serde_json found it, from the flat one as stored
    /// (its one check is the payload's pass, `payload_check`).
    #[serde(borrow, deserialize_with = "raw_text")]
    pub payload: &'a str,
    #[serde(default)]
    pub metadata: Option<Value>,
}

impl<'a> Wire<'a> {
    /// The flat encoding's fields (the last of a repeated name wins, as in
    /// the slow way). `None` when one is missing or unreadable: the slow way
    /// then names the problem.
    pub(super) fn from_flat(fields: &[(&'a str, &'a [u8])]) -> Result<Option<Wire<'a>>, EnvelopeError> {
        let last = |name: &str| fields.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let text = |name: &str| last(name).and_then(|b| std::str::from_utf8(b).ok()).map(Cow::Borrowed);
        let (Some(event_id), Some(event_type), Some(timestamp), Some(room_id)) =
            (text("event_id"), text("event_type"), text("timestamp"), text("room_id"))
        else {
            return Ok(None);
        };
        let Some((payload, metadata)) = payload_and_metadata(last("payload"), last("metadata")) else {
            return Ok(None);
        };
        Ok(Some(Wire { event_id, event_type, timestamp, room_id, payload, metadata }))
    }

    /// The flat encoding's fields when its head was read and checked
    /// already: the head's strings move in, the rest is read in one pass
    /// over the fields (the last of a repeated name wins, as in the head).
    pub(super) fn from_flat_head(head: Head<'a>, fields: &'a EntryFields) -> Option<Wire<'a>> {
        let (mut timestamp, mut payload, mut metadata) = (None, None, None);
        for (i, (name, _)) in fields.iter().enumerate() {
            match name {
                "timestamp" => timestamp = Some(i),
                "payload" => payload = Some(i),
                "metadata" => metadata = Some(i),
                _ => {}
            }
        }
        let metadata = match metadata {
            None => None,
            Some(i) => Some(serde_json::from_slice::<Value>(fields.get(i)?.1).ok()?),
        };
        Some(Wire {
            event_id: Cow::Borrowed(head.event_id),
            event_type: Cow::Borrowed(head.event_type),
            timestamp: Cow::Borrowed(fields.text(timestamp?)?),
            room_id: Cow::Borrowed(head.room_id),
            payload: fields.text(payload?)?,
            metadata,
        })
    }
}

/// The flat encoding's payload text and metadata object, if readable.
fn payload_and_metadata<'a>(payload: Option<&'a [u8]>, metadata: Option<&[u8]>) -> Option<(&'a str, Option<Value>)> {
    let payload = std::str::from_utf8(payload?).ok()?;
    let metadata = match metadata.map(serde_json::from_slice::<Value>) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(_)) => return None,
    };
    Some((payload, metadata))
}

/// A JSON value's text, borrowed from the input.
fn raw_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<&'de str, D::Error> {
    <&RawValue>::deserialize(deserializer).map(RawValue::get)
}
