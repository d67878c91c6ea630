//! Keep-alive pings, the client timeout, frames split anywhere, and
//! entries left pending by a crash.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::raw::RawWs;
use support::*;

/// ASP.NET Core starts the client timeout at the client's first Ping
/// (`DefaultHubDispatcher`: `PingMessage` -> `StartClientTimeout`).
#[tokio::test]
async fn pings_flow_and_a_silent_client_is_dropped_once_it_has_pinged() {
    let s =
        Sidecar::start(&[("SIDECAR_KEEPALIVE_SECONDS", "1".into()), ("SIDECAR_CLIENT_TIMEOUT_SECONDS", "3".into())])
            .await;
    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send("{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    ws.send("{\"type\":6}\u{1e}").await;
    let started = Instant::now();
    assert!(ws.recv_type(6).await.is_some(), "a ping arrives");
    let close = ws.recv_type(7).await.expect("a Close after the client timeout");
    let waited = started.elapsed();
    // ASP.NET Core's Close for a client timeout (the exception's detail only
    // with EnableDetailedErrors).
    assert_eq!(close, json!({"type": 7, "error": "Connection closed with an error.", "allowReconnect": true}));
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(6), "{waited:?}");
}

/// Clients of the 1.0 era and many community clients never ping: ASP.NET
/// Core never drops them for silence, and neither does the sidecar.
#[tokio::test]
async fn a_client_that_never_pings_is_not_timed_out() {
    let s =
        Sidecar::start(&[("SIDECAR_KEEPALIVE_SECONDS", "1".into()), ("SIDECAR_CLIENT_TIMEOUT_SECONDS", "2".into())])
            .await;
    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send("{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    ws.send("{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinRoom\",\"arguments\":[\"r\"]}\u{1e}").await;
    let done = ws.recv_type(3).await.expect("still open after twice the client timeout without a ping");
    assert_eq!(done["invocationId"], "1");
}

#[tokio::test]
async fn a_client_that_pings_is_kept() {
    let s =
        Sidecar::start(&[("SIDECAR_KEEPALIVE_SECONDS", "1".into()), ("SIDECAR_CLIENT_TIMEOUT_SECONDS", "2".into())])
            .await;
    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send("{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
    ws.recv().await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        ws.send("{\"type\":6}\u{1e}").await;
    }
    ws.send("{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinRoom\",\"arguments\":[\"r\"]}\u{1e}").await;
    let done = ws.recv_type(3).await.expect("still open after 3.6 s of pings");
    assert_eq!(done["invocationId"], "1");
}

#[tokio::test]
async fn records_split_anywhere_across_websocket_messages() {
    let s = Sidecar::start(&[]).await;
    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    let all = "{\"protocol\":\"json\",\"version\":1}\u{1e}{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinRoom\",\"arguments\":[\"r\"]}\u{1e}{\"type\":6}\u{1e}{\"type\":1,\"invocationId\":\"2\",\"target\":\"LeaveRoom\",\"arguments\":[\"r\"]}\u{1e}";
    // Handshake and first invocation share a message; every later record is
    // cut in the middle and across the separator.
    for piece in [&all[..40], &all[40..95], &all[95..96], &all[96..130], &all[130..]] {
        ws.send(piece).await;
    }
    let first = ws.recv_type(3).await.expect("completion 1");
    let second = ws.recv_type(3).await.expect("completion 2");
    assert_eq!((first["invocationId"].clone(), second["invocationId"].clone()), (json!("1"), json!("2")));
}

/// Entries a crashed process read but never acknowledged were for its own
/// connections, which ended with it (CONTRACT section 14): its restart
/// settles them without delivering them to the connections that come after.
#[tokio::test]
async fn entries_left_pending_by_a_crash_are_settled_at_start_not_delivered_to_newcomers() {
    let redis = Redis::start().await;
    let group = "signalr-sidecar:crashed";
    let mut conn = redis.conn();
    redis.create_group("events:chat", group);
    let sent: Vec<_> = (0..5).map(|n| envelope("chat_message", "r", chat_payload("r", n))).collect();
    for e in &sent {
        redis.xadd_flat("events:chat", e);
    }
    // The crashed instance had read them (they are in its pending list) but never acknowledged.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg("crashed")
        .arg("STREAMS")
        .arg("events:chat")
        .arg(">")
        .query(&mut conn)
        .expect("read");
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_INSTANCE_ID", "crashed".into())]).await;
    let summary: redis::Value =
        redis::cmd("XPENDING").arg("events:chat").arg(group).query(&mut conn).expect("XPENDING");
    assert!(
        matches!(&summary, redis::Value::Array(items) if items.first() == Some(&redis::Value::Int(0))),
        "nothing pending once ready: {summary:?}"
    );
    let mut d = Driver::start().await;
    d.connect("a", &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({})).await.expect("connects");
    d.invoke("a", "JoinRoom", json!(["r"])).await.expect("joins");
    let after = envelope("chat_message", "r", chat_payload("r", 99));
    redis.xadd_flat("events:chat", &after);
    let m = d.message("a", "ReceiveMessage", WAIT).await.expect("the event after the join");
    assert_eq!(m["args"][0], after["payload"], "the crashed process's entries are not delivered");
    assert!(d.drain_messages("a", Duration::from_millis(300)).await.is_empty());
}
