//! Conformance vectors from `protocol/vectors/json-hub-protocol.json`.

use super::*;
use crate::codec::RecordBuffer;

fn vectors() -> Value {
    serde_json::from_str(include_str!("../../../protocol/vectors/json-hub-protocol.json"))
        .expect("the vector file is JSON")
}

/// Re-encodes without the separator, with object keys sorted (serde_json's
/// default map), so the vectors do not depend on field order.
fn canonical(bytes: &[u8]) -> String {
    let body = bytes.strip_suffix(&[RECORD_SEPARATOR]).expect("a record ends with 0x1E");
    let v: Value = serde_json::from_slice(body).expect("encoded records are JSON");
    if v["type"] == 1 {
        return String::from_utf8(body.to_vec()).expect("utf-8");
    }
    serde_json::to_string(&v).expect("serializes")
}

#[test]
fn decode_vectors() {
    let all = vectors();
    for case in all["decode"].as_array().expect("decode cases") {
        let name = case["name"].as_str().expect("name");
        let record = case["record"].as_str().expect("record");
        match (decode(record.as_bytes()), case.get("encoded"), case.get("error")) {
            (Ok(msg), Some(encoded), None) => {
                assert_eq!(canonical(&encode(&msg)), encoded.as_str().expect("str"), "{name}")
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
