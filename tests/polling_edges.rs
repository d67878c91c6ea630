//! Status codes of the polling transports for requests the official client
//! never makes, as ASP.NET Core answers them; the server stays healthy.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::http::request;
use support::raw::RawWs;
use support::*;

async fn token(s: &Sidecar) -> String {
    let (_, body) =
        request(s.port, "POST", "/hubs/chat/negotiate?negotiateVersion=1", &[], b"").await.expect("negotiate");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let kinds: Vec<&str> =
        v["availableTransports"].as_array().expect("list").iter().filter_map(|t| t["transport"].as_str()).collect();
    assert_eq!(kinds, ["WebSockets", "ServerSentEvents", "LongPolling"]);
    v["connectionToken"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn long_polling_status_codes() {
    let s = Sidecar::start(&[]).await;
    assert_eq!(request(s.port, "GET", "/hubs/chat?id=unknown", &[], b"").await.expect("poll").0, 404);
    assert_eq!(request(s.port, "POST", "/hubs/chat?id=unknown", &[], b"x").await.expect("send").0, 404);
    assert_eq!(request(s.port, "DELETE", "/hubs/chat?id=unknown", &[], b"").await.expect("delete").0, 404);

    let t = token(&s).await;
    let path = format!("/hubs/chat?id={t}");
    assert_eq!(
        request(s.port, "GET", &path, &[], b"").await.expect("first poll"),
        (200, String::new()),
        "the first poll returns at once"
    );
    let handshake = "{\"protocol\":\"json\",\"version\":1}\u{1e}";
    assert_eq!(request(s.port, "POST", &path, &[], handshake.as_bytes()).await.expect("handshake").0, 200);
    assert_eq!(request(s.port, "GET", &path, &[], b"").await.expect("poll"), (200, "{}\u{1e}".to_string()));

    // Two polls at once: the newer one answers the older with 204.
    let port = s.port;
    let p2 = path.clone();
    let older = tokio::spawn(async move { request(port, "GET", &p2, &[], b"").await.expect("older poll") });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p3 = path.clone();
    let newer = tokio::spawn(async move { request(port, "GET", &p3, &[], b"").await.expect("newer poll") });
    assert_eq!(older.await.expect("task").0, 204);
    let invoke = "{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinRoom\",\"arguments\":[\"r\"]}\u{1e}";
    assert_eq!(request(s.port, "POST", &path, &[], invoke.as_bytes()).await.expect("send").0, 200);
    let (status, body) = newer.await.expect("task");
    assert_eq!(status, 200);
    assert!(body.contains("\"invocationId\":\"1\""), "{body}");

    assert_eq!(
        request(s.port, "GET", &path, &[("accept", "text/event-stream")], b"").await.expect("sse").0,
        400,
        "cannot change transports"
    );
    assert_eq!(request(s.port, "DELETE", &path, &[], b"").await.expect("delete").0, 202);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        request(s.port, "GET", &path, &[], b"").await.expect("poll after delete").0,
        404,
        "a closed connection is unknown"
    );
    assert_eq!(request(s.admin_port, "GET", "/healthz", &[], b"").await.expect("healthz").0, 200);
}

#[tokio::test]
async fn websocket_and_sse_status_codes() {
    let s = Sidecar::start(&[]).await;
    let t = token(&s).await;
    let mut ws = RawWs::connect(s.port, &format!("/hubs/chat?id={t}")).await.expect("connects");
    ws.send("{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    let path = format!("/hubs/chat?id={t}");
    assert_eq!(
        request(s.port, "POST", &path, &[], b"{}").await.expect("post").0,
        405,
        "POST to a WebSocket connection"
    );
    assert_eq!(request(s.port, "DELETE", &path, &[], b"").await.expect("delete").0, 400);
    assert_eq!(request(s.port, "GET", &path, &[], b"").await.expect("poll").0, 400, "a poll on a WebSocket connection");

    // An SSE stream is open; a GET without the event-stream Accept header is
    // a long poll, which this connection cannot switch to.
    let t = token(&s).await;
    let mut d = Driver::start().await;
    d.connect("sse", &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({"transport": "ServerSentEvents"}))
        .await
        .expect("sse connects");
    let sse_path = format!("/hubs/chat?id={t}");
    let port = s.port;
    let stream =
        tokio::spawn(async move { request(port, "GET", &sse_path, &[("accept", "text/event-stream")], b"").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(request(s.port, "GET", &format!("/hubs/chat?id={t}"), &[], b"").await.expect("poll").0, 400);
    assert_eq!(
        request(s.port, "GET", &format!("/hubs/chat?id={t}"), &[("accept", "text/event-stream")], b"")
            .await
            .expect("second")
            .0,
        409
    );
    stream.abort();
    assert_eq!(d.invoke("sse", "JoinRoom", json!(["r"])).await, Ok(Value::Null), "the real SSE client is untouched");
}
