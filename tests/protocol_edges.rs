//! Bad input at the protocol layer gets a clear answer and touches nobody
//! else; the in-process bus, skipNegotiation and SendTyping work without Redis.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::http::request;
use support::raw::RawWs;
use support::*;

const HANDSHAKE: &str = "{\"protocol\":\"json\",\"version\":1}\u{1e}";

async fn negotiate(s: &Sidecar, hub: &str) -> Value {
    let (status, body) =
        request(s.port, "POST", &format!("{hub}/negotiate?negotiateVersion=1"), &[], b"").await.expect("negotiate");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test]
async fn negotiate_answers_like_aspnet_core() {
    let s = Sidecar::start(&[]).await;
    let v1 = negotiate(&s, "/hubs/chat").await;
    assert_eq!(v1["negotiateVersion"], 1);
    assert!(v1["connectionToken"].as_str().is_some_and(|t| !t.is_empty()));
    assert_ne!(v1["connectionToken"], v1["connectionId"]);
    assert_eq!(v1["availableTransports"][0]["transport"], "WebSockets");
    let (status, body) = request(s.port, "POST", "/hubs/chat/negotiate", &[], b"").await.expect("v0");
    let v0: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!((status, v0["negotiateVersion"].clone(), v0.get("connectionToken")), (200, json!(0), None));
    assert_eq!(request(s.port, "GET", "/hubs/chat/negotiate", &[], b"").await.expect("get"), (405, String::new()));
    // Query keys in any case; a version that is not an integer, or below 0,
    // is refused in a 200 body (ProcessNegotiate).
    let (_, body) = request(s.port, "POST", "/hubs/chat/negotiate?NEGOTIATEVERSION=1", &[], b"").await.expect("v1");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON")["negotiateVersion"], 1, "{body}");
    for (asked, error) in [
        ("one", "The client requested a non-integer protocol version."),
        ("-1", "The client requested version '-1', but the server does not support this version."),
        // Given twice, the version is its values joined ("1,1"), as
        // ASP.NET Core's StringValues reads it: no integer.
        ("1&negotiateVersion=1", "The client requested a non-integer protocol version."),
    ] {
        let (status, body) =
            request(s.port, "POST", &format!("/hubs/chat/negotiate?negotiateVersion={asked}"), &[], b"")
                .await
                .expect("negotiate");
        assert_eq!((status, serde_json::from_str::<Value>(&body).expect("JSON")), (200, json!({ "error": error })));
    }
    assert_eq!(request(s.port, "POST", "/hubs/nope/negotiate", &[], b"").await.expect("unknown").0, 404);
    assert_eq!(
        request(s.port, "GET", "/metrics", &[], b"").await.expect("metrics").0,
        404,
        "the admin port is not served on the client port"
    );
    assert_eq!(request(s.port, "POST", "/internal/events", &[], b"{}").await.expect("events").0, 404);
}

/// ASP.NET Core's endpoint routing ignores a trailing `/` and the case of
/// the path: a client built with `withUrl(".../hubs/chat/")` negotiates at
/// `/hubs/chat/negotiate` and connects to `/hubs/chat/?id=`.
#[tokio::test]
async fn hub_paths_match_with_a_trailing_slash_and_in_any_case() {
    let s = Sidecar::start(&[]).await;
    for (negotiate_path, connect_path) in [
        ("/hubs/chat/negotiate", "/hubs/chat/"),
        ("/Hubs/Chat/NEGOTIATE/", "/HUBS/chat"),
        ("/hubs/chat/negotiate", "/hubs/chat"),
    ] {
        let (status, body) = request(s.port, "POST", &format!("{negotiate_path}?negotiateVersion=1"), &[], b"")
            .await
            .expect("negotiate");
        assert_eq!(status, 200, "{negotiate_path}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        let token = v["connectionToken"].as_str().expect("token");
        let mut ws = RawWs::connect(s.port, &format!("{connect_path}?id={token}")).await.expect(connect_path);
        ws.send(HANDSHAKE).await;
        assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"), "{connect_path}");
    }
    assert_eq!(request(s.port, "POST", "/hubs/chatx/negotiate", &[], b"").await.expect("negotiate").0, 404);
    assert_eq!(request(s.port, "GET", "/hubs/chat/x?id=y", &[], b"").await.expect("poll").0, 404);
}

#[tokio::test]
async fn connection_tokens_unknown_and_reused() {
    let s = Sidecar::start(&[]).await;
    assert_eq!(RawWs::connect(s.port, "/hubs/chat?id=nope").await.err(), Some(404));
    let token = negotiate(&s, "/hubs/chat").await["connectionToken"].as_str().expect("token").to_string();
    assert_eq!(
        RawWs::connect(s.port, &format!("/hubs/ticket?id={token}")).await.err(),
        Some(404),
        "a token belongs to its hub"
    );
    let mut first = RawWs::connect(s.port, &format!("/hubs/chat?id={token}")).await.expect("first use");
    assert_eq!(RawWs::connect(s.port, &format!("/hubs/chat?id={token}")).await.err(), Some(409));
    first.send(HANDSHAKE).await;
    assert_eq!(first.recv().await.as_deref(), Some("{}\u{1e}"));
}

#[tokio::test]
async fn malformed_handshake_gets_an_error_and_a_close() {
    // ASP.NET Core's answers (HubConnectionContext.HandshakeAsync); the
    // protocol name matches in any case.
    let s = Sidecar::start(&[("SIDECAR_MAX_MESSAGE_BYTES", "1024".into())]).await;
    for (handshake, answer) in [
        ("{\"protocol\":\"xml\",\"version\":1}", "The protocol 'xml' is not supported."),
        ("{\"protocol\":\"Json\",\"version\":3}", "The server does not support version 3 of the 'Json' protocol."),
        ("not json", "An unexpected error occurred during connection handshake."),
        ("{\"protocol\":\"json\"}", "An unexpected error occurred during connection handshake."),
    ] {
        let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("skipNegotiation");
        ws.send(&format!("{handshake}\u{1e}")).await;
        let got = ws.recv().await.expect("a handshake answer");
        assert_eq!(got, format!("{}\u{1e}", json!({ "error": answer })), "{handshake}");
        assert_eq!(ws.recv().await, None, "then the socket closes");
    }
    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send(&" ".repeat(2000)).await;
    assert_eq!(ws.recv().await.as_deref(), Some("{\"error\":\"Handshake was canceled.\"}\u{1e}"), "too large");

    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send("{\"protocol\":\"JSON\",\"version\":1}\u{1e}").await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"), "names in any case");
}

#[tokio::test]
async fn bad_messages_close_only_their_own_connection() {
    let s = Sidecar::start(&[]).await;
    let mut d = Driver::start().await;
    d.connect("healthy", &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({})).await.expect("connects");
    d.invoke("healthy", "JoinRoom", json!(["r"])).await.expect("joins");

    // ASP.NET Core's Close for any failure reading the client's messages:
    // one text (the detail only with EnableDetailedErrors), and a reconnect
    // allowed (only the client's own Close or abort forbids it).
    let protocol_error = json!({"type": 7, "error": "Connection closed with an error.", "allowReconnect": true});
    for bad in ["{\"type\":1,", "{\"type\":1,\"arguments\":[]}"] {
        let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
        ws.send(HANDSHAKE).await;
        assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
        ws.send(&format!("{bad}\u{1e}")).await;
        assert_eq!(ws.recv_type(7).await.expect("a Close message"), protocol_error, "after {bad}");
    }

    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send(HANDSHAKE).await;
    ws.recv().await;
    ws.send(&format!(
        "{{\"type\":1,\"invocationId\":\"9\",\"target\":\"JoinRoom\",\"arguments\":[\"{}\"]}}\u{1e}",
        "x".repeat(40_000)
    ))
    .await;
    assert_eq!(ws.recv_type(7).await.expect("a Close for an oversize message"), protocol_error);

    let env = envelope("chat_message", "r", chat_payload("r", 1));
    assert_eq!(s.post_event(env.to_string().as_bytes()).await.0, 202);
    assert_eq!(d.message("healthy", "ReceiveMessage", WAIT).await.expect("still served")["args"][0], env["payload"]);
}

/// A message type this server does not know (one of a later protocol) is
/// ignored, as ASP.NET Core's JSON and MessagePack parsers ignore it.
#[tokio::test]
async fn unknown_message_types_are_ignored() {
    let s = Sidecar::start(&[]).await;
    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send(HANDSHAKE).await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    ws.send("{\"type\":42,\"future\":true}\u{1e}{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinRoom\",\"arguments\":[\"r\"]}\u{1e}")
        .await;
    let next = ws.recv().await.expect("an answer");
    let v: Value = serde_json::from_str(next.trim_end_matches('\u{1e}')).expect("one record");
    assert_eq!((v["type"].clone(), v["invocationId"].clone()), (json!(3), json!("1")), "no Close: {v}");
}

/// ASP.NET Core's JSON hub protocol: an empty invocationId is a
/// non-blocking call (no Completion, which the JavaScript client would
/// reject), an Invocation without `arguments` is a protocol error, and every
/// record is written with `type` first.
#[tokio::test]
async fn invocation_ids_and_arguments_are_bound_as_in_aspnet_core() {
    let s = Sidecar::start(&[]).await;
    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send(HANDSHAKE).await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    ws.send("{\"type\":1,\"invocationId\":\"\",\"target\":\"JoinRoom\",\"arguments\":[\"r\"]}\u{1e}").await;
    ws.send("{\"type\":1,\"invocationId\":\"2\",\"target\":\"JoinRoom\",\"arguments\":[\"r\"]}\u{1e}").await;
    assert_eq!(
        ws.recv().await.as_deref(),
        Some("{\"type\":3,\"invocationId\":\"2\",\"result\":null}\u{1e}"),
        "only the blocking call is answered, type first"
    );
    ws.send("{\"type\":4,\"invocationId\":\"4\",\"target\":\"JoinRoom\",\"arguments\":[\"r\"]}\u{1e}").await;
    let done = ws.recv_type(3).await.expect("a Completion");
    assert_eq!(
        done["error"],
        "The client attempted to invoke the non-streaming 'JoinRoom' method with a streaming invocation."
    );
    // Stream arguments: ASP.NET Core's DefaultHubDispatcher compares their
    // count with the method's stream parameters (none here).
    ws.send("{\"type\":1,\"invocationId\":\"5\",\"target\":\"JoinRoom\",\"arguments\":[\"r\"],\"streamIds\":[\"s1\",\"s2\"]}\u{1e}")
        .await;
    let done = ws.recv_type(3).await.expect("a Completion");
    assert_eq!(
        done["error"],
        "An unexpected error occurred invoking 'JoinRoom' on the server. HubException: Client sent 2 stream(s), Hub \
         method expects 0."
    );
    ws.send("{\"type\":1,\"invocationId\":\"3\",\"target\":\"JoinRoom\"}\u{1e}").await;
    assert_eq!(
        ws.recv().await.as_deref(),
        Some("{\"type\":7,\"error\":\"Connection closed with an error.\",\"allowReconnect\":true}\u{1e}")
    );
}

/// The limit is per hub message, as in ASP.NET Core: one WebSocket message
/// may carry several (the .NET client sends what it has buffered at once).
#[tokio::test]
async fn one_websocket_message_may_carry_several_messages_each_under_the_limit() {
    let s = Sidecar::start(&[("SIDECAR_MAX_MESSAGE_BYTES", "1024".into())]).await;
    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send(HANDSHAKE).await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    let call = |id: u32| {
        let arg = "x".repeat(700);
        format!("{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"NoSuchMethod\",\"arguments\":[\"{arg}\"]}}\u{1e}")
    };
    ws.send(&format!("{}{}", call(1), call(2))).await;
    for id in ["1", "2"] {
        let done = ws.recv_type(3).await.expect("a Completion, not a Close");
        assert_eq!(done["invocationId"], id, "{done}");
    }
}

/// Settings that let a burst of 2,000 invocations through: neither the
/// rate limit nor the outbound queue is what these tests look at.
fn burst_env() -> Vec<(&'static str, String)> {
    vec![
        ("SIDECAR_RATE_LIMIT_PER_MINUTE", "100000".into()),
        ("SIDECAR_RATE_LIMIT_BURST", "100000".into()),
        ("SIDECAR_OUTBOX_MAX_FRAMES", "8192".into()),
    ]
}

/// 2,000 blocking JoinRoom invocations of about 77 bytes each, back to back
/// (about 155 KB): what a .NET or Java client that buffered them sends as
/// one WebSocket message or one POST.
fn many_small_invocations() -> String {
    let batch: String = (0..2000)
        .map(|i| format!("{{\"type\":1,\"invocationId\":\"{i:04}\",\"target\":\"JoinRoom\",\"arguments\":[\"lp-room-a\"]}}\u{1e}"))
        .collect();
    assert!(batch.len() > 150_000, "{}", batch.len());
    batch
}

/// ASP.NET Core limits each hub message (`MaximumReceiveMessageSize`, 32 KB
/// by default), not the WebSocket message that carries them: one WebSocket
/// message of 2,000 small invocations (far over 32 KB, and over 4 x 32 KB)
/// is processed, and every invocation gets its Completion.
#[tokio::test]
async fn a_websocket_message_of_many_small_hub_messages_is_processed() {
    let s = Sidecar::start(&burst_env()).await;
    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send(HANDSHAKE).await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    ws.send(&many_small_invocations()).await;
    let mut done = std::collections::BTreeSet::new();
    while done.len() < 2000 {
        let text = ws.recv().await.unwrap_or_else(|| panic!("closed after {} Completions", done.len()));
        for record in text.split('\u{1e}').filter(|r| !r.is_empty()) {
            let v: Value = serde_json::from_str(record).expect("JSON");
            assert_eq!((v["type"].clone(), v.get("error")), (json!(3), None), "a Completion without error: {v}");
            assert!(done.insert(v["invocationId"].as_str().expect("an id").to_string()), "once: {v}");
        }
    }
}

#[tokio::test]
async fn blocking_invocations_always_get_a_completion() {
    let s = Sidecar::start(&[]).await;
    let mut d = Driver::start().await;
    d.connect("a", &s.hub("/hubs/chat"), &[], json!({})).await.expect("connects");
    let err = d.invoke("a", "NoSuchMethod", json!([])).await.expect_err("unknown method");
    // ASP.NET Core's texts (DefaultHubDispatcher): an unknown method is a
    // binding failure; a refusal reads as a method throwing HubException.
    assert!(
        err.ends_with(
            "Failed to invoke 'NoSuchMethod' due to an error on the server. HubException: Method does not exist."
        ),
        "{err}"
    );
    let err = d.invoke("a", "JoinRoom", json!([42])).await.expect_err("bad argument");
    assert!(err.contains("An unexpected error occurred invoking 'JoinRoom' on the server. HubException: "), "{err}");
    assert!(err.contains("JoinRoom expects one argument"), "{err}");
    assert_eq!(
        d.invoke("a", "joinroom", json!(["r"])).await,
        Ok(Value::Null),
        "method names ignore case, as in ASP.NET"
    );
}

#[tokio::test]
async fn the_in_process_bus_and_skip_negotiation() {
    let s = Sidecar::start(&[]).await;
    let mut d = Driver::start().await;
    d.connect("ws", &s.hub("/hubs/chat"), &["ReceiveMessage", "UserTyping"], json!({"skipNegotiation": true}))
        .await
        .expect("connects");
    d.invoke("ws", "JoinRoom", json!(["r"])).await.expect("joins");
    let env = envelope("chat_message", "r", chat_payload("r", 1));
    assert_eq!(s.post_event(env.to_string().as_bytes()).await, (202, r#"{"status":"accepted"}"#.to_string()));
    assert_eq!(d.message("ws", "ReceiveMessage", WAIT).await.expect("delivered")["args"][0], env["payload"]);

    let (status, body) = s.post_event(b"{not json").await;
    assert_eq!(status, 400);
    assert!(body.starts_with("not JSON"), "{body}");
    let mut bad = env.clone();
    bad["room_id"] = json!("");
    let (status, body) = s.post_event(bad.to_string().as_bytes()).await;
    assert_eq!((status, body.starts_with("/room_id")), (400, true), "{body}");

    assert_eq!(d.invoke("ws", "SendTyping", json!(["r", true])).await, Ok(Value::Null));
    let typing = d.message("ws", "UserTyping", WAIT).await.expect("typing delivered");
    assert_eq!(typing["args"][0]["is_typing"], true);
    assert!(typing["args"][0]["user_id"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(d.message("ws", "UserTyping", Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn health_readiness_and_metrics_on_the_admin_port() {
    let mut s = Sidecar::start(&[]).await;
    assert_eq!(request(s.admin_port, "GET", "/healthz", &[], b"").await.expect("healthz").0, 200);
    assert_eq!(request(s.admin_port, "GET", "/readyz", &[], b"").await.expect("readyz").0, 200);
    let (status, metrics) = request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    assert_eq!(status, 200);
    for name in [
        "sidecar_events_delivered_total",
        "sidecar_broadcast_seconds_bucket",
        "sidecar_slow_consumer_disconnects_total",
        "sidecar_redis_up",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    assert_eq!(s.stop().await, Some(0));
}
