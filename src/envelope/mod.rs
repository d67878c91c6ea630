//! The event envelope of seed 004, decoded from either stream encoding or
//! from an HTTP body, and checked against the JSON Schemas in `protocol/`.
//!
//! This module checks shape only: freshness, duplicates and routing belong
//! to the pipeline.

mod block;
mod checks;
mod fields;
mod head;
mod payload;
mod payload_check;
mod schema;
mod time;
mod wire;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub use block::{EntryBlock, FieldsRef, Spans};
pub use fields::{EntryFields, FieldList};
pub use head::{Head, Pending};
pub use payload::Payload;
pub use schema::{SchemaError, Schemas};
pub use time::parse_timestamp;
use wire::Wire;

/// Why an envelope was refused. The text is what goes into the dead-letter
/// entry's `reason` and the HTTP 400 body.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The bytes are not JSON, or a JSON field holds something else.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The envelope or its payload breaks its JSON Schema.
    #[error("{0}")]
    Schema(String),
    /// A stream entry has neither a `data` field nor the flat fields.
    #[error("stream entry has neither a 'data' field nor an 'event_type' field")]
    UnknownEncoding,
    /// `timestamp` passed the schema but is not a real instant.
    #[error("timestamp '{0}' is not a valid ISO 8601 time")]
    BadTimestamp(String),
}

/// One event, as publishers send it. Equal events have the same fields and
/// payload, however its text was spaced.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// UUID, the idempotency key.
    pub event_id: String,
    /// Picks the route.
    pub event_type: String,
    /// When the publisher created it.
    pub timestamp: DateTime<Utc>,
    /// The group, `user:<id>` or `*`.
    pub room_id: String,
    /// Event-specific data, passed to clients unchanged: JSON frames
    /// splice the publisher's text in, the object is built only for what
    /// needs one.
    pub payload: Payload,
    /// Tracing and coalescing information.
    pub metadata: Option<Map<String, Value>>,
}

/// The flat field names of CONTRACT section 4.
const FLAT_FIELDS: [&str; 6] = ["event_id", "event_type", "timestamp", "room_id", "payload", "metadata"];

impl Envelope {
    /// Decodes and validates a whole envelope given as JSON text.
    pub fn from_json(bytes: &[u8], schemas: &Schemas) -> Result<Envelope, EnvelopeError> {
        // Straight into the typed fields; anything that does not fit (a
        // missing field, a number for a string) goes the slow way below,
        // which names the error as the schema does.
        if let Ok(wire) = serde_json::from_slice::<Wire<'_>>(bytes) {
            if let Some(envelope) = Envelope::from_wire(wire, schemas, false)? {
                return Ok(envelope);
            }
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        Envelope::from_value(value, schemas)
    }

    /// A flat entry whose head passed the envelope's checks already
    /// (`Pending`): its strings move in instead of being read and checked
    /// again. `None`: decode the entry the slow way.
    fn from_flat_head(
        head: Head<'_>,
        fields: &EntryFields,
        schemas: &Schemas,
    ) -> Result<Option<Envelope>, EnvelopeError> {
        match Wire::from_flat_head(head, fields) {
            Some(wire) => Envelope::from_wire(wire, schemas, true),
            None => Ok(None),
        }
    }

    /// The fast way: the envelope's checks as code (the head's skipped when
    /// `head_checked`: they passed already), the payload's schema (if its
    /// type has one) on the payload alone. `None` when a check fails or the
    /// envelope schema is not the shipped one: the caller then decodes the
    /// slow way, whose errors are the schema's.
    fn from_wire(wire: Wire<'_>, schemas: &Schemas, head_checked: bool) -> Result<Option<Envelope>, EnvelopeError> {
        let metadata = match wire.metadata {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Ok(None),
        };
        let head_valid = || {
            checks::is_uuid(&wire.event_id)
                && checks::has_chars(&wire.event_type, 1, 128)
                && checks::is_timestamp_text(&wire.timestamp)
                && checks::has_chars(&wire.room_id, 1, 512)
        };
        let valid = schemas.envelope_is_shipped()
            && (head_checked || head_valid())
            && metadata.as_ref().is_none_or(checks::metadata_fits);
        if !valid {
            return Ok(None);
        }
        let timestamp =
            parse_timestamp(&wire.timestamp).ok_or_else(|| EnvelopeError::BadTimestamp(wire.timestamp.to_string()))?;
        let Some(payload) = schemas.checked_payload(&wire.event_type, wire.payload)? else { return Ok(None) };
        Ok(Some(Envelope {
            event_id: wire.event_id.into_owned(),
            event_type: wire.event_type.into_owned(),
            timestamp,
            room_id: wire.room_id.into_owned(),
            payload,
            metadata,
        }))
    }

    /// Decodes a Redis Stream entry: one `data` field holding the whole
    /// envelope, or the flat fields with `payload` and `metadata` as JSON text.
    pub fn from_stream_fields<'a, I>(fields: I, schemas: &Schemas) -> Result<Envelope, EnvelopeError>
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        let fields: Vec<(&str, &[u8])> = fields.into_iter().collect();
        if let Some(wire) = Wire::from_flat(&fields)? {
            if let Some(envelope) = Envelope::from_wire(wire, schemas, false)? {
                return Ok(envelope);
            }
        }
        let mut object = Map::new();
        let mut data = None;
        for (name, bytes) in fields {
            if name == "data" {
                data = Some(bytes);
                continue;
            }
            if !FLAT_FIELDS.contains(&name) {
                continue;
            }
            let text = std::str::from_utf8(bytes)
                .map_err(|_| EnvelopeError::NotJson(format!("field '{name}' is not UTF-8")))?;
            let value = if name == "payload" || name == "metadata" {
                serde_json::from_str(text).map_err(|e| EnvelopeError::NotJson(format!("field '{name}': {e}")))?
            } else {
                Value::String(text.to_string())
            };
            object.insert(name.to_string(), value);
        }
        match data {
            Some(bytes) if !object.contains_key("event_type") => Envelope::from_json(bytes, schemas),
            _ if object.contains_key("event_type") => Envelope::from_value(Value::Object(object), schemas),
            _ => Err(EnvelopeError::UnknownEncoding),
        }
    }

    fn from_value(mut value: Value, schemas: &Schemas) -> Result<Envelope, EnvelopeError> {
        if value.get("metadata").is_some_and(Value::is_null) {
            value.as_object_mut().map(|o| o.remove("metadata"));
        }
        schemas.check_envelope(&value)?;
        // The shipped schema guarantees the shape below, but an operator may
        // replace it: every field is still checked, never assumed.
        let shape = |field: &str, what: &str| EnvelopeError::Schema(format!("/{field}: must be {what}"));
        let event_type =
            value.get("event_type").and_then(Value::as_str).ok_or_else(|| shape("event_type", "a string"))?;
        if let Some(payload) = value.get("payload") {
            schemas.check_payload(event_type, payload)?;
        }
        let Value::Object(mut o) = value else {
            return Err(shape("", "an object"));
        };
        let mut text = |k: &str| match o.remove(k) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            _ => Err(shape(k, "a non-empty string")),
        };
        let (event_id, event_type, raw_time, room_id) =
            (text("event_id")?, text("event_type")?, text("timestamp")?, text("room_id")?);
        let timestamp = parse_timestamp(&raw_time).ok_or(EnvelopeError::BadTimestamp(raw_time))?;
        let Some(Value::Object(payload)) = o.remove("payload") else {
            return Err(shape("payload", "an object"));
        };
        let metadata = match o.remove("metadata") {
            Some(Value::Object(m)) => Some(m),
            None => None,
            Some(_) => return Err(shape("metadata", "an object")),
        };
        Ok(Envelope { event_id, event_type, timestamp, room_id, payload: payload.into(), metadata })
    }

    /// The envelope as one JSON object (the `data` encoding and the HTTP body).
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("event_id".into(), self.event_id.clone().into());
        o.insert("event_type".into(), self.event_type.clone().into());
        o.insert("timestamp".into(), format_timestamp(&self.timestamp).into());
        o.insert("room_id".into(), self.room_id.clone().into());
        o.insert("payload".into(), Value::Object(self.payload.object().clone()));
        if let Some(m) = &self.metadata {
            o.insert("metadata".into(), Value::Object(m.clone()));
        }
        Value::Object(o)
    }

    /// The flat stream fields of CONTRACT section 4, for XADD.
    pub fn to_stream_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("event_id", self.event_id.clone()),
            ("event_type", self.event_type.clone()),
            ("timestamp", format_timestamp(&self.timestamp)),
            ("room_id", self.room_id.clone()),
            (
                "payload",
                self.payload
                    .raw()
                    .map_or_else(|| Value::Object(self.payload.object().clone()).to_string(), str::to_owned),
            ),
        ];
        if let Some(m) = &self.metadata {
            fields.push(("metadata", Value::Object(m.clone()).to_string()));
        }
        fields
    }

    /// A string field of the payload, such as `user_id` or `sender_id`.
    pub fn payload_str(&self, field: &str) -> Option<&str> {
        self.payload.str_field(field)
    }
}

/// ISO 8601 in UTC with microseconds, as the seeds' Python publishers write it.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests;
