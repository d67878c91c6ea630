//! Conformance vectors from `protocol/vectors/json-hub-protocol.json`.

use super::*;
use crate::codec::RecordBuffer;

fn vectors() -> Value {
    serde_json::from_str(include_str!("../../../protocol/vectors/json-hub-protocol.json"))
        .expect("the vector file is JSON")
}

/// The encoded record without its separator, byte for byte: the key order
/// is part of what is checked (ASP.NET Core writes `type` first).
fn exact(bytes: &[u8]) -> String {
    let body = bytes.strip_suffix(&[RECORD_SEPARATOR]).expect("a record ends with 0x1E");
    String::from_utf8(body.to_vec()).expect("utf-8")
}

#[test]
fn decode_vectors() {
    let all = vectors();
    for case in all["decode"].as_array().expect("decode cases") {
        let name = case["name"].as_str().expect("name");
        let record = case["record"].as_str().expect("record");
        match (decode(record.as_bytes()), case.get("encoded"), case.get("error")) {
            (Ok(msg), Some(encoded), None) => {
                assert_eq!(exact(&encode(&msg)), encoded.as_str().expect("str"), "{name}")
            }
            (Err(e), None, Some(error)) => {
                assert_eq!(e.to_string(), error.as_str().expect("str"), "{name}")
            }
            (got, _, _) => panic!("{name}: unexpected {got:?}"),
        }
    }
}

#[test]
fn frame_vectors() {
    let all = vectors();
    for case in all["frames"].as_array().expect("frame cases") {
        let name = case["name"].as_str().expect("name");
        let mut buf = RecordBuffer::new(1024);
        let mut got = Vec::new();
        for chunk in case["chunks"].as_array().expect("chunks") {
            buf.push::<Error>(chunk.as_str().expect("str").as_bytes(), |r| {
                got.push(String::from_utf8(r.to_vec()).expect("utf-8"));
                Ok(())
            })
            .expect("within the limit");
        }
        let want: Vec<String> = serde_json::from_value(case["records"].clone()).expect("records");
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn server_invocation_serializes_the_payload_once_in_place() {
    let payload = serde_json::json!({"content": "hi \u{1e} there", "n": 1});
    let out = encode_invocation("ReceiveMessage", &[&payload]);
    let text = String::from_utf8(out).expect("utf-8");
    assert_eq!(
        text,
        "{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[{\"content\":\"hi \\u001e there\",\"n\":1}]}\u{1e}"
    );
}

#[test]
fn an_empty_invocation_id_is_a_non_blocking_call() {
    let record = br#"{"type":1,"invocationId":"","target":"JoinRoom","arguments":["r"]}"#;
    match decode(record) {
        Ok(HubMessage::Invocation(inv)) => assert_eq!(inv.invocation_id, None, "no Completion is owed"),
        other => panic!("{other:?}"),
    }
}

/// A key given twice: the last one counts, as in ASP.NET Core's reader
/// (the connection was closed for it); a record broken otherwise keeps
/// its error.
#[test]
fn a_repeated_key_counts_its_last_value() {
    let m = decode(br#"{"type":7,"type":6}"#).expect("decodes");
    assert_eq!(m, HubMessage::Ping);
    let m = decode(br#"{"type":1,"target":"A","arguments":[1],"target":"B","arguments":[2]}"#).expect("decodes");
    let HubMessage::Invocation(inv) = m else { panic!("an invocation: {m:?}") };
    assert_eq!((inv.target.as_str(), inv.arguments), ("B", vec![serde_json::json!(2)]));
    assert!(matches!(decode(br#"{"type":"1","type":"2"}"#), Err(Error::Malformed(_))));
    assert!(matches!(decode(br#"{"type":6,"#), Err(Error::Malformed(e)) if e.contains("EOF")));
}
