//! Builds a route's invocation arguments from an event, once per event (the
//! codec then encodes them once per protocol): the routing file's
//! `arguments` say what each position holds. Arguments borrow from the
//! envelope where they can, so the default `[payload]` copies nothing.

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::codec::{Protocol, WriteJson};
use crate::config::{ArgumentSource, Arguments, MissingField};
use crate::envelope::{format_timestamp, Envelope, Payload};
use crate::fanout::Payload as FramePayload;

/// One argument of an outgoing invocation.
#[derive(Debug, PartialEq)]
pub(super) enum Argument<'a> {
    /// A value inside the envelope (a payload or metadata field).
    Value(&'a Value),
    /// The payload: its text as the publisher sent it (if kept), its
    /// object built only for an encoding that needs one.
    Object(&'a Payload),
    /// A string field of the envelope (room, event type, id).
    Text(&'a str),
    /// Made for this event: the timestamp text, the whole envelope.
    Owned(Value),
    /// An absent metadata field.
    Null,
    /// One value per event of a batch (`delivery = "batch"`), in order.
    List(Vec<Argument<'a>>),
}

impl Serialize for Argument<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Argument::Value(v) => v.serialize(serializer),
            Argument::Object(payload) => payload.serialize(serializer),
            Argument::Text(s) => serializer.serialize_str(s),
            Argument::Owned(v) => v.serialize(serializer),
            Argument::Null => serializer.serialize_unit(),
            Argument::List(items) => serializer.collect_seq(items),
        }
    }
}

/// Arguments as the JSON protocol writes them: a payload whose text was
/// kept goes out as those bytes, not serialized again from its object.
impl WriteJson for Argument<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Argument::Object(payload) => match payload.raw() {
                Some(raw) => out.extend_from_slice(raw.as_bytes()),
                None => to_json(out, payload),
            },
            Argument::List(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_json(out);
                }
                out.push(b']');
            }
            other => to_json(out, other),
        }
    }

    fn json_len_hint(&self) -> usize {
        match self {
            Argument::Object(payload) => payload.raw().map_or(64, str::len),
            Argument::Text(text) => text.len() + 2,
            Argument::List(items) => 2 + items.iter().map(|i| i.json_len_hint() + 1).sum::<usize>(),
            _ => 16,
        }
    }
}

fn to_json(out: &mut Vec<u8>, value: &impl Serialize) {
    // Writing JSON values, maps and strings to a Vec cannot fail.
    if let Err(e) = serde_json::to_writer(out, value) {
        tracing::error!(error = %e, "an argument could not be written as JSON");
    }
}

/// Encodes `method(arguments...)` for one protocol, as the frame every
/// recipient shares: JSON splices kept payload texts in (written once,
/// behind room for the frame's header), MessagePack transcodes the payload
/// objects.
pub(super) fn encode(protocol: Protocol, method: &str, arguments: &[Argument<'_>]) -> Option<FramePayload> {
    match protocol {
        Protocol::Json => FramePayload::text_written(Protocol::json_invocation_len_hint(method, arguments), |out| {
            Protocol::write_json_invocation(out, method, arguments)
        }),
        Protocol::MessagePack => Some(FramePayload::binary(&protocol.encode_invocation(method, arguments))),
    }
}

/// The arguments `spec` asks for, in order; refuses (never sends a
/// half-shaped call) when the payload lacks a named field. `position` is
/// the event's stream entry id, when it came from a stream.
pub(super) fn shape<'a>(
    spec: &Arguments,
    envelope: &'a Envelope,
    position: Option<&'a str>,
) -> Result<Vec<Argument<'a>>, MissingField> {
    spec.sources()
        .iter()
        .enumerate()
        .map(|(i, source)| {
            Ok(match source {
                ArgumentSource::Payload => Argument::Object(&envelope.payload),
                ArgumentSource::PayloadField(path) => Argument::Value(
                    path.lookup(envelope.payload.object())
                        .ok_or_else(|| MissingField { position: i + 1, path: path.as_str().to_string() })?,
                ),
                ArgumentSource::RoomId => Argument::Text(&envelope.room_id),
                ArgumentSource::EventType => Argument::Text(&envelope.event_type),
                ArgumentSource::EventId => Argument::Text(&envelope.event_id),
                ArgumentSource::Timestamp => Argument::Owned(format_timestamp(&envelope.timestamp).into()),
                ArgumentSource::MetadataField(path) => {
                    envelope.metadata.as_ref().and_then(|m| path.lookup(m)).map_or(Argument::Null, Argument::Value)
                }
                ArgumentSource::Envelope => Argument::Owned(envelope.to_json()),
                ArgumentSource::Position => position.map_or(Argument::Null, Argument::Text),
            })
        })
        .collect()
}

/// The arguments of one invocation for a batch of events of one route and
/// room: a source every event of the batch shares (`room_id`,
/// `event_type`) is sent once, as for a single event; every other source
/// becomes the list of its values, one per event, in order. With the
/// default `[payload]` that is one argument, the list of payloads.
/// `positions` are the events' stream entry ids, one per event (a missing
/// one is sent as null).
pub(super) fn shape_batch<'a>(
    spec: &Arguments,
    events: &'a [Envelope],
    positions: &[Option<&'a str>],
) -> Result<Vec<Argument<'a>>, MissingField> {
    let shaped: Vec<Vec<Argument<'a>>> = events
        .iter()
        .enumerate()
        .map(|(i, e)| shape(spec, e, positions.get(i).copied().flatten()))
        .collect::<Result<_, _>>()?;
    let mut columns: Vec<Vec<Argument<'a>>> = spec.sources().iter().map(|_| Vec::with_capacity(events.len())).collect();
    for row in shaped {
        for (column, argument) in columns.iter_mut().zip(row) {
            column.push(argument);
        }
    }
    Ok(spec
        .sources()
        .iter()
        .zip(columns)
        .map(|(source, mut column)| match source {
            ArgumentSource::RoomId | ArgumentSource::EventType if !column.is_empty() => column.swap_remove(0),
            _ => Argument::List(column),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::codec::RECORD_SEPARATOR;

    use super::*;

    fn spec(texts: &[&str]) -> Arguments {
        Arguments::new(texts.iter().map(|t| ArgumentSource::parse(t).expect("valid source")).collect())
    }

    fn event() -> Envelope {
        let payload = json!({"request_id": "req-1", "sender": {"name": "Ann", "id": 7}, "content": "hi"});
        Envelope {
            event_id: "e-1".into(),
            event_type: "chat_message".into(),
            timestamp: crate::envelope::parse_timestamp("2026-01-02T03:04:05.123456Z").expect("time"),
            room_id: "room-1".into(),
            payload: payload.as_object().cloned().expect("object").into(),
            metadata: Some(json!({"trace_id": "t-1"}).as_object().cloned().expect("object")),
        }
    }

    fn as_json(args: &[Argument<'_>]) -> Value {
        serde_json::to_value(args).expect("arguments serialize")
    }

    #[test]
    fn every_source_takes_its_part_of_the_envelope() {
        let e = event();
        let args = shape(
            &spec(&[
                "room_id",
                "payload.request_id",
                "payload.sender.name",
                "event_type",
                "event_id",
                "timestamp",
                "metadata.trace_id",
                "metadata.absent",
                "position",
            ]),
            &e,
            Some("1700000000000-3"),
        )
        .expect("shaped");
        assert_eq!(
            as_json(&args),
            json!([
                "room-1",
                "req-1",
                "Ann",
                "chat_message",
                "e-1",
                "2026-01-02T03:04:05.123456Z",
                "t-1",
                null,
                "1700000000000-3"
            ])
        );
        let whole = shape(&spec(&["envelope"]), &e, None).expect("shaped");
        assert_eq!(as_json(&whole), json!([e.to_json()]));
    }

    #[test]
    fn the_default_borrows_the_payload_and_encodes_as_before() {
        let e = event();
        let args = shape(&Arguments::default(), &e, None).expect("shaped");
        assert_eq!(args, [Argument::Object(&e.payload)]);
        for protocol in Protocol::ALL {
            assert_eq!(
                protocol.encode_invocation("ReceiveMessage", &args),
                protocol.encode_invocation("ReceiveMessage", &[&e.payload]),
                "{protocol:?}: same bytes as a route without arguments always sent"
            );
        }
    }

    #[test]
    fn json_frames_carry_the_publishers_payload_text_and_messagepack_the_object() {
        let text = r#"{"z": 1, "a": {"b": [1, 2.5, "x\u00e9"]}}"#;
        let mut e = event();
        e.payload = Payload::from_text(text).expect("an object");
        let args = shape(&spec(&["room_id", "payload"]), &e, None).expect("shaped");
        // The message of the frame every recipient shares, without its record separator.
        let message = |args: &[Argument<'_>]| {
            let frame = encode(Protocol::Json, "M", args).expect("JSON is text");
            frame.as_bytes().strip_suffix(&[RECORD_SEPARATOR]).expect("one record").to_vec()
        };
        let json = message(&args);
        let want = format!(r#"{{"type":1,"target":"M","arguments":["room-1",{text}]}}"#);
        assert_eq!(json, want.as_bytes(), "the bytes as sent, key order and spacing kept");
        let batch = shape_batch(&Arguments::default(), std::slice::from_ref(&e), &[]).expect("shaped");
        let json = message(&batch);
        assert!(String::from_utf8_lossy(&json).contains(&format!("[[{text}]]")), "spliced inside a batch too");
        let made = Envelope { payload: e.payload.object().clone().into(), ..e.clone() };
        let plain = shape(&spec(&["room_id", "payload"]), &made, None).expect("shaped");
        assert_eq!(
            encode(Protocol::MessagePack, "M", &args),
            encode(Protocol::MessagePack, "M", &plain),
            "MessagePack encodes the object either way"
        );
        let reread: Value = serde_json::from_slice(&message(&plain)).expect("JSON");
        assert_eq!(reread["arguments"][1], serde_json::from_str::<Value>(text).expect("JSON"), "same object");
    }

    #[test]
    fn a_missing_payload_field_shapes_nothing() {
        let e = event();
        assert_eq!(
            shape(&spec(&["room_id", "payload.sender.email"]), &e, None),
            Err(MissingField { position: 2, path: "sender.email".into() })
        );
    }

    #[test]
    fn msgpack_carries_each_argument_in_its_position() {
        let e = event();
        let args =
            shape(&spec(&["room_id", "payload.sender", "metadata.absent", "position"]), &e, None).expect("shaped");
        let bytes = Protocol::MessagePack.encode_invocation("M", &args);
        // Skip the one-byte length prefix (the message is short).
        let value = rmpv::decode::read_value(&mut &bytes[1..]).expect("msgpack");
        let arguments = value.as_array().and_then(|a| a.get(4)).and_then(|a| a.as_array()).expect("arguments");
        let decoded: Value = rmpv::ext::from_value(rmpv::Value::Array(arguments.clone())).expect("json");
        assert_eq!(decoded, json!(["room-1", {"name": "Ann", "id": 7}, null, null]), "no position without a stream");
    }

    #[test]
    fn a_batch_sends_shared_sources_once_and_lists_the_rest_in_order() {
        let mut second = event();
        second.event_id = "e-2".into();
        second.payload.object_mut().insert("request_id".into(), "req-2".into());
        let events = [event(), second];
        let list = shape_batch(&Arguments::default(), &events, &[]).expect("shaped");
        assert_eq!(as_json(&list), json!([[events[0].payload, events[1].payload]]), "one argument: the payloads");
        let spec4 = spec(&["room_id", "payload.request_id", "event_type", "event_id", "position"]);
        let args = shape_batch(&spec4, &events, &[Some("1-0"), Some("1-1")]).expect("shaped");
        assert_eq!(
            as_json(&args),
            json!(["room-1", ["req-1", "req-2"], "chat_message", ["e-1", "e-2"], ["1-0", "1-1"]]),
            "a position per event"
        );
        for protocol in Protocol::ALL {
            assert!(!protocol.encode_invocation("M", &args).is_empty());
        }
        let mut lacking = event();
        lacking.payload.object_mut().remove("request_id");
        assert!(shape_batch(&spec(&["payload.request_id"]), &[event(), lacking], &[]).is_err());
    }
}
