//! Status codes of the polling transports for requests the official client
//! never makes, as ASP.NET Core answers them; the server stays healthy.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::http::{request, request_with_head};
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

/// Opens a Long Polling connection on the raw protocol and completes its
/// handshake; returns its path.
async fn open_long_polling(s: &Sidecar) -> String {
    let path = format!("/hubs/chat?id={}", token(s).await);
    assert_eq!(request(s.port, "GET", &path, &[], b"").await.expect("first poll"), (200, String::new()));
    let handshake = "{\"protocol\":\"json\",\"version\":1}\u{1e}";
    assert_eq!(request(s.port, "POST", &path, &[], handshake.as_bytes()).await.expect("handshake").0, 200);
    assert_eq!(request(s.port, "GET", &path, &[], b"").await.expect("poll"), (200, "{}\u{1e}".to_string()));
    path
}

/// ASP.NET Core answers the poll that carries the Close with 200, keeps the
/// connection inactive, answers the next poll 204 (and a DELETE 202), and
/// only then forgets it. A 404 there makes clients report an error instead
/// of the server's Close.
#[tokio::test]
async fn an_ended_long_polling_connection_answers_204_then_is_forgotten() {
    let s = Sidecar::start(&[]).await;
    let path = open_long_polling(&s).await;
    assert_eq!(request(s.port, "POST", &path, &[], b"{\"type\":7}\x1e").await.expect("close").0, 200);
    assert_eq!(request(s.port, "GET", &path, &[], b"").await.expect("poll"), (200, "{\"type\":7}\u{1e}".to_string()));
    assert_eq!(request(s.port, "POST", &path, &[], b"{\"type\":6}\x1e").await.expect("send").0, 404, "nobody reads");
    assert_eq!(request(s.port, "GET", &path, &[], b"").await.expect("poll after the close").0, 204);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(request(s.port, "GET", &path, &[], b"").await.expect("then").0, 404, "forgotten after the 204");

    let path = open_long_polling(&s).await;
    assert_eq!(request(s.port, "POST", &path, &[], b"{\"type\":7}\x1e").await.expect("close").0, 200);
    assert_eq!(request(s.port, "GET", &path, &[], b"").await.expect("poll").0, 200);
    assert_eq!(request(s.port, "DELETE", &path, &[], b"").await.expect("delete after the close").0, 202);
}

/// A connection closed from outside while no poll waits keeps its Close for
/// the next poll (here the client timeout; Long Polling counts polls).
#[tokio::test]
async fn a_close_while_no_poll_waits_is_kept_for_the_next_poll() {
    let s =
        Sidecar::start(&[("SIDECAR_KEEPALIVE_SECONDS", "1".into()), ("SIDECAR_CLIENT_TIMEOUT_SECONDS", "2".into())])
            .await;
    let path = open_long_polling(&s).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, body) = request(s.port, "GET", &path, &[], b"").await.expect("poll after the timeout");
    assert_eq!(status, 200, "{body}");
    let records: Vec<Value> =
        body.split('\u{1e}').filter(|r| !r.is_empty()).map(|r| serde_json::from_str(r).expect("JSON")).collect();
    let close = records.last().expect("a record");
    assert_eq!((close["type"].clone(), close["allowReconnect"].clone()), (json!(7), json!(true)), "{close}");
    assert_eq!(request(s.port, "GET", &path, &[], b"").await.expect("next poll").0, 204);
}

/// ASP.NET Core never pings a Long Polling connection (its polls are its
/// keep-alive): an idle poll waits for its timeout and is answered 200,
/// empty, as text; every poll carries the no-cache headers.
#[tokio::test]
async fn an_idle_long_poll_is_not_pinged_and_times_out_empty() {
    let s = Sidecar::start(&[
        ("SIDECAR_KEEPALIVE_SECONDS", "1".into()),
        ("SIDECAR_CLIENT_TIMEOUT_SECONDS", "10".into()),
        ("SIDECAR_LONG_POLL_TIMEOUT_SECONDS", "3".into()),
    ])
    .await;
    let path = open_long_polling(&s).await;
    let started = std::time::Instant::now();
    let (status, head, body) = request_with_head(s.port, "GET", &path, &[], b"").await.expect("poll");
    let waited = started.elapsed();
    assert_eq!((status, String::from_utf8_lossy(&body).to_string()), (200, String::new()), "no ping");
    assert!(waited >= Duration::from_millis(2500), "held until the poll timeout: {waited:?}");
    for header in [
        "content-type: text/plain",
        "cache-control: no-cache, no-store",
        "pragma: no-cache",
        "expires: thu, 01 jan 1970 00:00:00 gmt",
    ] {
        assert!(head.contains(header), "{header} missing from\n{head}");
    }
}

/// The event stream starts as ASP.NET Core's: its headers, then the
/// comment `:\r\n`.
#[tokio::test]
async fn the_event_stream_starts_with_aspnet_cores_headers_and_comment() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Sidecar::start(&[]).await;
    let t = token(&s).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.expect("connect");
    let head = format!("GET /hubs/chat?id={t} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.len() < 16 {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("in time").expect("read");
        assert!(n > 0, "closed");
        seen.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    for header in [
        "content-type: text/event-stream",
        "cache-control: no-cache,no-store",
        "pragma: no-cache",
        "content-encoding: identity",
    ] {
        assert!(head.contains(header), "{header} missing from\n{head}");
    }
    assert!(body.starts_with("3\r\n:\r\n\r\n"), "the first chunk is the comment ':\\r\\n': {body:?}");
}

/// Details ASP.NET Core's HttpConnectionDispatcher answers so: the `id`
/// key in any case, DELETE on a connection no transport has started is 400,
/// and 409 comes with no body.
#[tokio::test]
async fn query_keys_in_any_case_and_delete_before_a_transport() {
    let s = Sidecar::start(&[]).await;
    let t = token(&s).await;
    assert_eq!(request(s.port, "DELETE", &format!("/hubs/chat?id={t}"), &[], b"").await.expect("delete").0, 400);
    let path = format!("/hubs/chat?ID={t}");
    assert_eq!(request(s.port, "GET", &path, &[], b"").await.expect("first poll"), (200, String::new()));
    let port = s.port;
    let p2 = path.clone();
    let waiting = tokio::spawn(async move { request(port, "GET", &p2, &[], b"").await.expect("poll") });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        request(s.port, "GET", &path, &[("accept", "text/event-stream")], b"").await.expect("sse"),
        (400, "Cannot change transports mid-connection".to_string())
    );
    assert_eq!(request(s.port, "DELETE", &path, &[], b"").await.expect("delete").0, 202);
    assert_eq!(waiting.await.expect("task").0, 204);

    let t = token(&s).await;
    let mut ws = RawWs::connect(s.port, &format!("/hubs/chat?Id={t}")).await.expect("the key in any case");
    ws.send("{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));

    let t = token(&s).await;
    let sse_path = format!("/hubs/chat?id={t}");
    let p3 = sse_path.clone();
    let stream = tokio::spawn(async move { request(port, "GET", &p3, &[("accept", "text/event-stream")], b"").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        request(s.port, "GET", &sse_path, &[("accept", "text/event-stream")], b"").await.expect("second"),
        (409, String::new()),
        "409 with no body"
    );
    stream.abort();
}

/// Sends a poll and closes the socket after `after`, without reading an
/// answer, as `curl -m 1` does.
async fn abandon_poll(port: u16, path: &str, after: Duration) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    tokio::time::sleep(after).await;
    drop(stream);
}

/// The records of a poll's body, parsed.
fn records(body: &str) -> Vec<Value> {
    body.split('\u{1e}').filter(|r| !r.is_empty()).map(|r| serde_json::from_str(r).expect("JSON")).collect()
}

/// ASP.NET Core's `LongPollingServerTransport`: a poll whose request was
/// aborted consumes nothing, and what is queued goes to the next poll. A
/// poll the client gave up on (its socket closed) must not take frames
/// queued after it: the Completion of the next invocation and the event
/// that follows it reach the next polls, in order.
#[tokio::test]
async fn frames_queued_after_a_poll_was_abandoned_go_to_the_next_poll() {
    let s = Sidecar::start(&[("SIDECAR_LONG_POLL_TIMEOUT_SECONDS", "2".into())]).await;
    let path = open_long_polling(&s).await;
    let join = |id: &str| {
        format!("{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"JoinRoom\",\"arguments\":[\"lpa\"]}}\u{1e}")
    };
    assert_eq!(request(s.port, "POST", &path, &[], join("1").as_bytes()).await.expect("join").0, 200);
    let (status, body) = request(s.port, "GET", &path, &[], b"").await.expect("poll");
    assert_eq!(status, 200);
    assert!(body.contains("\"invocationId\":\"1\""), "{body}");

    abandon_poll(s.port, &path, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(request(s.port, "POST", &path, &[], join("2").as_bytes()).await.expect("join").0, 200);
    let event = envelope("chat_message", "lpa", chat_payload("lpa", 1));
    assert_eq!(s.post_event(event.to_string().as_bytes()).await.0, 202);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut seen = Vec::new();
    for _ in 0..2 {
        let (status, body) = request(s.port, "GET", &path, &[], b"").await.expect("poll");
        assert_eq!(status, 200, "{body}");
        seen.extend(records(&body));
    }
    let kinds: Vec<String> = seen
        .iter()
        .map(|r| match r["type"].as_u64() {
            Some(3) => format!("completion {}", r["invocationId"].as_str().unwrap_or("?")),
            Some(1) => format!("invocation {}", r["target"].as_str().unwrap_or("?")),
            _ => r.to_string(),
        })
        .collect();
    assert_eq!(kinds, ["completion 2", "invocation ReceiveMessage"], "nothing lost, in order: {seen:?}");
}

/// ASP.NET Core's HttpConnectionDispatcher tests the `id` with
/// `StringValues.IsNullOrEmpty`: an empty `id=` is no id. A poll, an event
/// stream, a POST or a DELETE without one is 400 "Connection ID required"
/// (GetConnectionAsync); a WebSocket upgrade without one starts a new
/// connection, as with skipNegotiation (GetOrCreateConnectionAsync).
#[tokio::test]
async fn an_empty_id_is_no_id() {
    let s = Sidecar::start(&[]).await;
    let required = (400, "Connection ID required".to_string());
    for path in ["/hubs/chat?id=", "/hubs/chat", "/hubs/chat?ID=&x=1"] {
        assert_eq!(request(s.port, "GET", path, &[], b"").await.expect("poll"), required, "GET {path}");
        assert_eq!(
            request(s.port, "GET", path, &[("accept", "text/event-stream")], b"").await.expect("sse"),
            required,
            "SSE {path}"
        );
        assert_eq!(request(s.port, "POST", path, &[], b"{}\x1e").await.expect("send"), required, "POST {path}");
        assert_eq!(request(s.port, "DELETE", path, &[], b"").await.expect("delete"), required, "DELETE {path}");
    }
    let mut ws = RawWs::connect(s.port, "/hubs/chat?id=").await.expect("a new connection, as without an id");
    ws.send("{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    ws.send("{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinRoom\",\"arguments\":[\"r\"]}\u{1e}").await;
    let completion = ws.recv_type(3).await.expect("a completion");
    assert_eq!((completion["invocationId"].clone(), completion.get("error")), (json!("1"), None), "{completion}");
}

/// ASP.NET Core limits each hub message, not the POST that carries them
/// (ProcessSend copies any body into the connection's pipe): a Long Polling
/// POST of 2,000 small invocations (about 155 KB, over 4 x 32 KB) is
/// accepted, and every invocation gets its Completion over the next polls.
#[tokio::test]
async fn a_post_of_many_small_hub_messages_is_accepted() {
    let s = Sidecar::start(&[
        ("SIDECAR_RATE_LIMIT_PER_MINUTE", "100000".into()),
        ("SIDECAR_RATE_LIMIT_BURST", "100000".into()),
        ("SIDECAR_OUTBOX_MAX_FRAMES", "8192".into()),
        ("SIDECAR_LONG_POLL_TIMEOUT_SECONDS", "2".into()),
    ])
    .await;
    let path = open_long_polling(&s).await;
    let batch: String = (0..2000)
        .map(|i| format!("{{\"type\":1,\"invocationId\":\"{i:04}\",\"target\":\"JoinRoom\",\"arguments\":[\"lp-room-a\"]}}\u{1e}"))
        .collect();
    assert!(batch.len() > 150_000, "{}", batch.len());
    assert_eq!(request(s.port, "POST", &path, &[], batch.as_bytes()).await.expect("send"), (200, String::new()));
    let mut done = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let (status, body) = request(s.port, "GET", &path, &[], b"").await.expect("poll");
        assert_eq!(status, 200, "{body}");
        for v in records(&body) {
            assert_eq!((v["type"].clone(), v.get("error")), (json!(3), None), "a Completion without error: {v}");
            assert!(done.insert(v["invocationId"].as_str().expect("an id").to_string()), "once: {v}");
        }
        if done.len() == 2000 {
            return;
        }
    }
    panic!("only {} Completions", done.len());
}

/// The POST body's own bound (`SIDECAR_MAX_TRANSPORT_MESSAGE_BYTES`) only
/// keeps memory bounded: a body over it is refused with 413 and the
/// connection goes on.
#[tokio::test]
async fn a_post_over_the_transport_limit_is_refused_and_the_connection_goes_on() {
    let s = Sidecar::start(&[
        ("SIDECAR_MAX_MESSAGE_BYTES", "1024".into()),
        ("SIDECAR_MAX_TRANSPORT_MESSAGE_BYTES", "4096".into()),
    ])
    .await;
    let path = open_long_polling(&s).await;
    let pings = "{\"type\":6}\u{1e}".repeat(400);
    assert!(pings.len() > 4096);
    assert_eq!(request(s.port, "POST", &path, &[], pings.as_bytes()).await.expect("send").0, 413);
    let join = "{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinRoom\",\"arguments\":[\"r\"]}\u{1e}";
    assert_eq!(request(s.port, "POST", &path, &[], join.as_bytes()).await.expect("send").0, 200);
    let (status, body) = request(s.port, "GET", &path, &[], b"").await.expect("poll");
    assert_eq!((status, records(&body)), (200, vec![json!({"type": 3, "invocationId": "1", "result": null})]));
}
