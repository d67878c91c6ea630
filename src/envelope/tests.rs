use std::path::Path;
use std::sync::Arc;

use super::*;

fn schemas() -> Schemas {
    Schemas::load(Path::new("protocol/schemas")).expect("the shipped schemas load")
}

const ID: &str = "6f1c2a8e-1a2b-4c3d-8e9f-0a1b2c3d4e5f";

fn chat_payload() -> Value {
    serde_json::json!({
        "id": "m1", "request_id": "r1", "sender_id": "u1", "content": "hello",
        "sequence_number": 1, "is_screenshot": false, "created_at": "2026-01-16T10:00:00Z",
        "extra_field": {"kept": true}
    })
}

#[test]
fn flat_and_data_encodings_decode_to_the_same_envelope() {
    let s = schemas();
    let payload = chat_payload().to_string();
    let flat: Vec<(&str, &[u8])> = vec![
        ("event_id", ID.as_bytes()),
        ("event_type", b"chat_message"),
        ("timestamp", b"2026-01-16T10:00:00Z"),
        ("room_id", b"room-1"),
        ("payload", payload.as_bytes()),
    ];
    let a = Envelope::from_stream_fields(flat, &s).expect("flat decodes");
    let whole = a.to_json().to_string();
    let b = Envelope::from_stream_fields([("data", whole.as_bytes())], &s).expect("data decodes");
    assert_eq!(a, b);
    assert_eq!(a.payload.object()["extra_field"]["kept"], true, "unknown fields pass through");
}

#[test]
fn schema_errors_name_the_field() {
    let s = schemas();
    let mut v = serde_json::json!({
        "event_id": ID, "event_type": "chat_message", "timestamp": "2026-01-16T10:00:00Z",
        "room_id": "", "payload": chat_payload()
    });
    let err = Envelope::from_json(v.to_string().as_bytes(), &s).unwrap_err().to_string();
    assert!(err.starts_with("/room_id:"), "{err}");
    v["room_id"] = "r".into();
    v["payload"].as_object_mut().expect("object").remove("content");
    let err = Envelope::from_json(v.to_string().as_bytes(), &s).unwrap_err().to_string();
    assert!(err.contains("\"content\" is a required property"), "{err}");
    v["event_id"] = "not-a-uuid".into();
    let err = Envelope::from_json(v.to_string().as_bytes(), &s).unwrap_err().to_string();
    assert!(err.starts_with("/event_id:"), "{err}");
}

#[test]
fn garbage_is_refused_with_a_reason() {
    let s = schemas();
    assert!(matches!(Envelope::from_json(b"{nope", &s), Err(EnvelopeError::NotJson(_))));
    let fields: Vec<(&str, &[u8])> = vec![("foo", b"bar")];
    assert_eq!(Envelope::from_stream_fields(fields, &s), Err(EnvelopeError::UnknownEncoding));
    let fields: Vec<(&str, &[u8])> = vec![("event_type", b"x"), ("payload", b"{bad")];
    assert!(matches!(Envelope::from_stream_fields(fields, &s), Err(EnvelopeError::NotJson(_))));
}

#[test]
fn a_type_without_a_schema_only_needs_an_object_payload() {
    let s = schemas();
    let v = serde_json::json!({
        "event_id": ID, "event_type": "poll_closed", "timestamp": "2026-01-16T10:00:00Z",
        "room_id": "d1", "payload": {"anything": 1}, "metadata": null
    });
    let e = Envelope::from_json(v.to_string().as_bytes(), &s).expect("valid");
    assert_eq!(e.metadata, None);
}

#[test]
fn an_operators_own_envelope_schema_is_run_as_a_schema() {
    let dir = std::env::temp_dir().join(format!("envelope-schema-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut schema: Value =
        serde_json::from_str(include_str!("../../protocol/schemas/envelope.json")).expect("shipped schema");
    schema["properties"]["room_id"]["maxLength"] = 3.into();
    std::fs::write(dir.join("envelope.json"), schema.to_string()).expect("write");
    let own = Schemas::load(&dir).expect("loads");
    let v = serde_json::json!({
        "event_id": ID, "event_type": "poll_closed", "timestamp": "2026-01-16T10:00:00Z",
        "room_id": "room-1", "payload": {}
    });
    let err = Envelope::from_json(v.to_string().as_bytes(), &own).unwrap_err().to_string();
    assert!(err.starts_with("/room_id:"), "the operator's limit applies: {err}");
    assert!(Envelope::from_json(v.to_string().as_bytes(), &schemas()).is_ok(), "the shipped schema allows it");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_typed_decode_and_the_schema_agree_on_metadata() {
    let s = schemas();
    let mut v = serde_json::json!({
        "event_id": ID, "event_type": "poll_closed", "timestamp": "2026-01-16 10:00:00.5+02:00",
        "room_id": "d1", "payload": {"a": 1}, "metadata": {"trace_id": "t", "coalesced_count": 2, "x": [1]},
        "unknown": true
    });
    let e = Envelope::from_json(v.to_string().as_bytes(), &s).expect("valid");
    assert_eq!(e.metadata.as_ref().and_then(|m| m.get("coalesced_count")), Some(&Value::from(2)));
    v["metadata"]["coalesced_count"] = (-1).into();
    let err = Envelope::from_json(v.to_string().as_bytes(), &s).unwrap_err().to_string();
    assert!(err.starts_with("/metadata/coalesced_count:"), "{err}");
    v["metadata"] = "text".into();
    let err = Envelope::from_json(v.to_string().as_bytes(), &s).unwrap_err().to_string();
    assert!(err.starts_with("/metadata:"), "{err}");
}

#[test]
fn a_flat_payload_is_kept_as_its_text_without_the_space_around_it_and_trailing_bytes_are_refused() {
    let s = schemas();
    let flat = |payload: &'static str| -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("event_id", ID.as_bytes()),
            ("event_type", b"custom_type"),
            ("timestamp", b"2026-01-16T10:00:00Z"),
            ("room_id", b"room-1"),
            ("payload", payload.as_bytes()),
        ]
    };
    let e = Envelope::from_stream_fields(flat(" {\"a\": [1, \"x\"]}\r\n"), &s).expect("decodes");
    assert_eq!(e.payload.raw(), Some("{\"a\": [1, \"x\"]}"), "spliced as sent, spacing inside kept");
    assert_eq!(e.payload.object()["a"][1], "x");
    for bad in ["{\"a\":1} x", "{\"n\":1e400}", "[1]", "{\"a\":\u{1e}1}"] {
        let err = Envelope::from_stream_fields(flat(bad), &s).expect_err(bad);
        assert!(matches!(err, EnvelopeError::NotJson(_) | EnvelopeError::Schema(_)), "{bad}: {err}");
    }
}

/// A flat entry: the head's fields, then the optional ones given.
fn flat_entry<'a>(timestamp: &'a [u8], rest: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
    let mut fields: Vec<(&str, &[u8])> = vec![
        ("event_id", ID.as_bytes()),
        ("event_type", b"chat_message"),
        ("timestamp", timestamp),
        ("room_id", b"room-1"),
    ];
    fields.extend_from_slice(rest);
    fields
}

#[test]
fn a_pending_entry_decodes_as_the_whole_entry_does() {
    let s = Arc::new(schemas());
    let good = chat_payload().to_string();
    let good = good.as_bytes();
    let at: &[u8] = b"2026-01-16T10:00:00Z";
    let mut repeated = vec![("room_id", &b"room-0"[..]), ("payload", b"{}")];
    repeated.extend(flat_entry(b"2026-01-16T09:00:00Z", &[("timestamp", at), ("payload", good)]));
    let cases = [
        // Decoded: plain, with metadata, with a null metadata, repeated fields (the last wins).
        flat_entry(at, &[("payload", good)]),
        flat_entry(at, &[("payload", good), ("metadata", br#"{"trace":"t"}"#)]),
        flat_entry(at, &[("payload", good), ("metadata", b"null")]),
        repeated,
        // Refused: the payload breaks its schema, is not JSON, is not text;
        // metadata that is not an object or not JSON; no payload; a date that is no day.
        flat_entry(at, &[("payload", br#"{"id":"m1"}"#)]),
        flat_entry(at, &[("payload", b"{not json")]),
        flat_entry(at, &[("payload", b"\xff\xfe")]),
        flat_entry(at, &[("payload", good), ("metadata", b"[1]")]),
        flat_entry(at, &[("payload", good), ("metadata", b"{")]),
        flat_entry(at, &[]),
        flat_entry(b"2026-02-30T10:00:00Z", &[("payload", good)]),
    ];
    for (i, pairs) in cases.into_iter().enumerate() {
        let fields = EntryFields::from_pairs(pairs);
        let whole = Envelope::from_stream_fields(fields.iter(), &s);
        let pending = Pending::read(fields.clone()).expect("a head that passes its checks");
        assert_eq!(pending.decode(&s), whole, "case {i}");
        assert_eq!(pending.into_fields(), fields, "case {i}: the fields are kept as read");
        assert_eq!(i < 4, whole.is_ok(), "case {i}: {whole:?}");
    }
}
