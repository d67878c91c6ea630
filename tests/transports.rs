//! Every transport x protocol pair the official client supports: connect,
//! join, receive events in order, invoke a method.

mod support;

use serde_json::{json, Value};
use support::*;

async fn round_trip(transport: &str, protocol: &str) {
    let redis = Redis::start().await;
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url())]).await;
    let mut d = Driver::start().await;
    let opts = json!({"transport": transport, "protocol": protocol});
    d.connect("c", &s.hub("/hubs/chat"), &["ReceiveMessage"], opts)
        .await
        .unwrap_or_else(|e| panic!("{transport}/{protocol}: {e}"));
    assert_eq!(d.invoke("c", "JoinRoom", json!(["r"])).await, Ok(Value::Null), "{transport}/{protocol}");
    let sent: Vec<Value> = (0..50).map(|n| envelope("chat_message", "r", chat_payload("r", n))).collect();
    for e in &sent {
        redis.xadd_flat("events:chat", e);
    }
    for e in &sent {
        let got =
            d.message("c", "ReceiveMessage", WAIT).await.unwrap_or_else(|| panic!("{transport}/{protocol}: missing"));
        assert_eq!(got["args"][0], e["payload"], "{transport}/{protocol}");
    }
    let err = d.invoke("c", "JoinRoom", json!([])).await.expect_err("bad arguments");
    assert!(err.contains("JoinRoom expects one argument"), "{transport}/{protocol}: {err}");
    d.stop("c").await;
}

#[tokio::test]
async fn websockets_json() {
    round_trip("WebSockets", "json").await;
}

#[tokio::test]
async fn websockets_messagepack() {
    round_trip("WebSockets", "msgpack").await;
}

#[tokio::test]
async fn server_sent_events_json() {
    round_trip("ServerSentEvents", "json").await;
}

#[tokio::test]
async fn long_polling_json() {
    round_trip("LongPolling", "json").await;
}

#[tokio::test]
async fn long_polling_messagepack() {
    round_trip("LongPolling", "msgpack").await;
}
