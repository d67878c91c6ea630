//! What community SignalR clients (Python, Java, Go, Swift, ...) do that no
//! official JavaScript client does, spoken on the raw protocol: they follow
//! ASP.NET Core's server, so the sidecar must answer exactly as it does
//! (CONTRACT section 13).

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rmpv::Value as Mp;
use serde_json::{json, Value};
use support::http::{request, request_bytes};
use support::raw::RawWs;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const RS: char = '\u{1e}';

/// `POST {hub}/negotiate` without `negotiateVersion`, as clients written
/// against ASP.NET Core 2.1 do.
async fn negotiate_v0(s: &Sidecar) -> String {
    let (status, body) = request(s.port, "POST", "/hubs/chat/negotiate", &[], b"").await.expect("negotiate");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["negotiateVersion"], 0);
    assert!(v.get("connectionToken").is_none(), "version 0 shows no token: {v}");
    v["connectionId"].as_str().expect("connectionId").to_string()
}

fn chat_event(room: &str) -> Value {
    envelope("chat_message", room, chat_payload(room, 1))
}

async fn publish(s: &Sidecar, event: &Value) {
    let (status, body) = s.post_event(event.to_string().as_bytes()).await;
    assert_eq!(status, 202, "{body}");
}

/// JSON records of a text body.
fn records(text: &str) -> Vec<Value> {
    text.split(RS).filter(|r| !r.trim().is_empty()).map(|r| serde_json::from_str(r).expect("a JSON record")).collect()
}

// === MessagePack ===

fn mp_join(room: &str) -> Vec<u8> {
    support::msgpack::frame(&Mp::Array(vec![
        1.into(),
        Mp::Map(vec![]),
        "1".into(),
        "JoinRoom".into(),
        Mp::Array(vec![room.into()]),
        Mp::Array(vec![]),
    ]))
}

/// Checks a server Invocation element by element against HubProtocol.md
/// and ASP.NET Core's MessagePack writer: six elements, StreamIds last.
fn assert_mp_invocation(items: &[Mp], target: &str, payload: &Value) {
    assert_eq!(items.len(), 6, "an Invocation has 6 elements: {items:?}");
    assert_eq!(items[0].as_u64(), Some(1), "type");
    assert_eq!(items[1], Mp::Map(vec![]), "headers");
    assert_eq!(items[2], Mp::Nil, "no invocation id: the server expects no answer");
    assert_eq!(items[3].as_str(), Some(target), "target");
    let Mp::Array(args) = &items[4] else { panic!("arguments array: {items:?}") };
    let arg: Value = rmpv::ext::from_value(args[0].clone()).expect("payload as JSON");
    assert_eq!((args.len(), &arg), (1, payload), "arguments");
    assert_eq!(items[5], Mp::Array(vec![]), "StreamIds, empty");
}

/// The Completion of a hub method that returns nothing: `[3, {}, id, 3, nil]`.
/// ASP.NET Core's dispatcher sends `CompletionMessage.WithResult(id, null)`
/// for it (HasResult), so the result kind is 3 with nil, not the void kind 2.
fn assert_mp_void_completion(items: &[Mp], id: &str) {
    assert_eq!(items.len(), 5, "a Completion with a (nil) result has 5 elements: {items:?}");
    assert_eq!(items[0].as_u64(), Some(3));
    assert_eq!(items[1], Mp::Map(vec![]));
    assert_eq!(items[2].as_str(), Some(id));
    assert_eq!(items[3].as_u64(), Some(3), "result kind: non-void");
    assert_eq!(items[4], Mp::Nil, "the result: nil");
}

// === WebSockets ===

#[tokio::test]
async fn version_0_clients_connect_join_and_receive_over_websockets_with_json() {
    let s = Sidecar::start(&[]).await;
    let id = negotiate_v0(&s).await;
    let mut ws = RawWs::connect(s.port, &format!("/hubs/chat?id={id}")).await.expect("the connectionId is the token");
    ws.send(&format!("{{\"protocol\":\"json\",\"version\":0}}{RS}")).await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"), "handshake version 0 is accepted");
    ws.send(&format!("{}{RS}", json!({"type":1,"invocationId":"1","target":"JoinRoom","arguments":["v0-ws"]}))).await;
    let done = ws.recv_type(3).await.expect("a Completion");
    assert_eq!((done["invocationId"].clone(), done.get("error")), (json!("1"), None), "{done}");
    let event = chat_event("v0-ws");
    publish(&s, &event).await;
    let inv = ws.recv_type(1).await.expect("the event");
    assert_eq!(
        (inv["target"].clone(), inv["arguments"][0].clone()),
        (json!("ReceiveMessage"), event["payload"].clone())
    );
}

#[tokio::test]
async fn version_0_clients_connect_join_and_receive_over_websockets_with_messagepack() {
    let s = Sidecar::start(&[]).await;
    let id = negotiate_v0(&s).await;
    let mut ws = RawWs::connect(s.port, &format!("/hubs/chat?id={id}")).await.expect("the connectionId is the token");
    ws.send(&format!("{{\"protocol\":\"messagepack\",\"version\":0}}{RS}")).await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    ws.ws.send(Message::binary(mp_join("v0-mp"))).await.expect("send");
    let mut seen = Vec::new();
    let event = chat_event("v0-mp");
    let mut published = false;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(WAIT, ws.ws.next()).await {
        let Message::Binary(bytes) = msg else { continue };
        for items in support::msgpack::messages(&bytes) {
            match items[0].as_u64() {
                Some(3) => {
                    assert_mp_void_completion(&items, "1");
                    publish(&s, &event).await;
                    published = true;
                }
                Some(1) => {
                    assert!(published, "the event comes after the join");
                    assert_mp_invocation(&items, "ReceiveMessage", &event["payload"]);
                    return;
                }
                _ => seen.push(items),
            }
        }
    }
    panic!("no Completion and event; other messages: {seen:?}");
}

/// Reads binary WebSocket messages until a hub message satisfies `want`;
/// `None` when the socket ends first.
async fn mp_until(ws: &mut RawWs, want: impl Fn(&[Mp]) -> bool) -> Option<Vec<Mp>> {
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(WAIT, ws.ws.next()).await {
        let Message::Binary(bytes) = msg else { continue };
        if let Some(found) = support::msgpack::messages(&bytes).into_iter().find(|m| want(m)) {
            return Some(found);
        }
    }
    None
}

/// ASP.NET Core's MessagePack reader binds arguments to the method's
/// parameters; an argument it cannot bind (binary data, an extension such
/// as the timestamp a .NET client writes for a `DateTime`, a map keyed by
/// numbers) is an `InvocationBindingFailureMessage`: a Completion with an
/// error, and the connection goes on. It is not a protocol error.
#[tokio::test]
async fn a_messagepack_argument_that_cannot_be_bound_gets_a_completion_error_not_a_close() {
    let s = Sidecar::start(&[]).await;
    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send(&format!("{{\"protocol\":\"messagepack\",\"version\":1}}{RS}")).await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    let call = |id: &str, target: &str, args: Vec<Mp>| {
        support::msgpack::frame(&Mp::Array(vec![
            1.into(),
            Mp::Map(vec![]),
            id.into(),
            target.into(),
            Mp::Array(args),
            Mp::Array(vec![]),
        ]))
    };
    let odd = [
        ("1", "JoinRoom", vec![Mp::Binary(b"room".to_vec())]),
        ("2", "SendTyping", vec!["room".into(), Mp::Ext(-1, vec![0, 0, 0, 1])]),
        ("3", "JoinRoom", vec![Mp::Map(vec![(Mp::from(1), Mp::from(2))])]),
        // The non-blocking one is not answered, as any failed one.
        ("", "JoinRoom", vec![Mp::Binary(b"room".to_vec())]),
    ];
    for (id, target, args) in odd {
        ws.ws.send(Message::binary(call(id, target, args))).await.expect("send");
    }
    for (id, target) in [("1", "JoinRoom"), ("2", "SendTyping"), ("3", "JoinRoom")] {
        let done = mp_until(&mut ws, |m| m[0].as_u64() == Some(3) || m[0].as_u64() == Some(7))
            .await
            .unwrap_or_else(|| panic!("the socket ended before the Completion of {id}"));
        let failed = format!("Failed to invoke '{target}' due to an error on the server.");
        assert_eq!(
            done,
            vec![Mp::from(3), Mp::Map(vec![]), Mp::from(id), Mp::from(1), Mp::from(failed.as_str())],
            "a Completion with ASP.NET Core's binding error, not a Close"
        );
    }
    ws.ws.send(Message::binary(mp_join("after-odd-arguments"))).await.expect("send");
    let done = mp_until(&mut ws, |m| m[0].as_u64() == Some(3) || m[0].as_u64() == Some(7)).await.expect("open");
    assert_mp_void_completion(&done, "1");
}

/// ASP.NET Core's MessagePack reader reads an Invocation's id as a string
/// or nil; anything else ("Reading 'invocationId' as String failed.") is a
/// protocol error that closes the connection with an error. The client
/// learns it, instead of waiting for a Completion that never comes.
#[tokio::test]
async fn a_messagepack_invocation_id_that_is_not_a_string_closes_with_an_error() {
    let s = Sidecar::start(&[]).await;
    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send(&format!("{{\"protocol\":\"messagepack\",\"version\":1}}{RS}")).await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    let call = support::msgpack::frame(&Mp::Array(vec![
        1.into(),
        Mp::Map(vec![]),
        7.into(),
        "JoinRoom".into(),
        Mp::Array(vec!["r".into()]),
        Mp::Array(vec![]),
    ]));
    ws.ws.send(Message::binary(call)).await.expect("send");
    let answer = mp_until(&mut ws, |m| m[0].as_u64() == Some(3) || m[0].as_u64() == Some(7)).await.expect("an answer");
    assert_eq!(answer, vec![Mp::from(7), Mp::from("Connection closed with an error."), Mp::Boolean(true)]);
}

/// ASP.NET Core's WebSocket transport ends with status 1000; a close frame
/// without a code reaches the JavaScript client as 1005 ("WebSocket closed
/// with status code: 1005") and makes the .NET client throw.
#[tokio::test]
async fn the_websocket_closes_with_status_1000_after_a_signalr_close() {
    let s = Sidecar::start(&[]).await;
    let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
    ws.send(&format!("{{\"protocol\":\"json\",\"version\":1}}{RS}")).await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    ws.send(&format!("{{\"type\":7}}{RS}")).await;
    assert_eq!(ws.recv_type(7).await, Some(json!({"type": 7})), "the server's Close answers the client's");
    assert_eq!(ws.close_code().await, Some(1000));
}

// === Long Polling ===

/// A Long Polling connection on the raw protocol.
struct Poller {
    port: u16,
    path: String,
}

impl Poller {
    async fn post(&self, body: &[u8]) -> u16 {
        request_bytes(self.port, "POST", &self.path, &[], body).await.expect("POST").0
    }

    async fn poll(&self) -> (u16, Vec<u8>) {
        request_bytes(self.port, "GET", &self.path, &[], b"").await.expect("poll")
    }

    /// Polls until a non-empty body arrives.
    async fn poll_data(&self) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self.poll().await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            if !body.is_empty() {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "nothing arrived");
        }
    }
}

#[tokio::test]
async fn a_send_before_the_first_poll_is_kept_and_version_0_long_polling_works_with_json() {
    let s = Sidecar::start(&[]).await;
    let id = negotiate_v0(&s).await;
    let lp = Poller { port: s.port, path: format!("/hubs/chat?id={id}") };
    // The handshake before any poll: ASP.NET Core keeps it for the connection.
    assert_eq!(lp.post(format!("{{\"protocol\":\"json\",\"version\":0}}{RS}").as_bytes()).await, 200);
    let (status, first) = lp.poll().await;
    assert_eq!((status, first.len()), (200, 0), "the first poll starts the connection and is answered at once");
    assert_eq!(lp.poll_data().await, b"{}\x1e", "the early handshake was answered");
    let join = json!({"type":1,"invocationId":"1","target":"JoinRoom","arguments":["v0-lp"]});
    assert_eq!(lp.post(format!("{join}{RS}").as_bytes()).await, 200);
    let done = records(&String::from_utf8_lossy(&lp.poll_data().await));
    assert_eq!((done[0]["type"].clone(), done[0].get("error")), (json!(3), None), "{done:?}");
    let event = chat_event("v0-lp");
    publish(&s, &event).await;
    let got = records(&String::from_utf8_lossy(&lp.poll_data().await));
    assert_eq!(
        (got[0]["target"].clone(), got[0]["arguments"][0].clone()),
        (json!("ReceiveMessage"), event["payload"].clone())
    );
}

#[tokio::test]
async fn version_0_long_polling_works_with_messagepack() {
    let s = Sidecar::start(&[]).await;
    let id = negotiate_v0(&s).await;
    let lp = Poller { port: s.port, path: format!("/hubs/chat?id={id}") };
    assert_eq!(lp.poll().await.0, 200);
    assert_eq!(lp.post(format!("{{\"protocol\":\"messagepack\",\"version\":0}}{RS}").as_bytes()).await, 200);
    assert_eq!(lp.poll_data().await, b"{}\x1e");
    assert_eq!(lp.post(&mp_join("v0-lp-mp")).await, 200);
    assert_mp_void_completion(&support::msgpack::messages(&lp.poll_data().await)[0], "1");
    let event = chat_event("v0-lp-mp");
    publish(&s, &event).await;
    assert_mp_invocation(&support::msgpack::messages(&lp.poll_data().await)[0], "ReceiveMessage", &event["payload"]);
}

#[tokio::test]
async fn too_much_sent_before_the_first_poll_is_refused_and_an_unknown_token_is_404() {
    // What waits for the first poll is bounded by one POST's limit (the
    // transport's, SIDECAR_MAX_TRANSPORT_MESSAGE_BYTES).
    let env = [("SIDECAR_MAX_MESSAGE_BYTES", "1024".into()), ("SIDECAR_MAX_TRANSPORT_MESSAGE_BYTES", "4096".into())];
    let s = Sidecar::start(&env).await;
    let id = negotiate_v0(&s).await;
    let lp = Poller { port: s.port, path: format!("/hubs/chat?id={id}") };
    assert_eq!(lp.post(&[b' '; 3000]).await, 200);
    assert_eq!(lp.post(&[b' '; 3000]).await, 413, "more than a POST's limit in all is not kept");
    let nobody = Poller { port: s.port, path: "/hubs/chat?id=nobody".into() };
    assert_eq!(nobody.post(b"{}").await, 404);
}

#[tokio::test]
async fn what_waits_for_the_first_poll_is_held_to_64_kib_a_connection() {
    // ASP.NET Core's transport buffer (64 KB) bounds what a connection
    // holds before its application reads; the POST limit (2 MiB by
    // default) alone let a flood of negotiates with POSTs and no poll hold
    // 2 MiB each for half a minute.
    let pings = |kib: usize| format!("{{\"type\":6}}{RS}").repeat(kib * 1024 / 11).into_bytes();
    let s = Sidecar::start(&[]).await;
    let id = negotiate_v0(&s).await;
    let lp = Poller { port: s.port, path: format!("/hubs/chat?id={id}") };
    assert_eq!(lp.post(&pings(70)).await, 413, "more than 64 KiB before the first poll");
    assert_eq!(lp.post(format!("{{\"protocol\":\"json\",\"version\":1}}{RS}").as_bytes()).await, 200);
    assert_eq!(lp.post(&pings(60)).await, 200, "up to 64 KiB in all");
    assert_eq!(lp.post(&pings(8)).await, 413);
    let (status, _) = lp.poll().await;
    assert_eq!(status, 200, "the first poll starts the connection");
    assert_eq!(lp.poll_data().await, b"{}\x1e", "the early handshake was answered");
    // Started, a connection takes a POST up to its transport limit.
    assert_eq!(lp.post(&pings(70)).await, 200);
    let join = json!({"type":1,"invocationId":"1","target":"JoinRoom","arguments":["early"]});
    assert_eq!(lp.post(format!("{join}{RS}").as_bytes()).await, 200);
    let done = records(&String::from_utf8_lossy(&lp.poll_data().await));
    assert_eq!((done[0]["type"].clone(), done[0].get("error")), (json!(3), None), "still open: {done:?}");
}

// === Server-Sent Events ===

/// An open event stream and what it has carried so far.
struct EventStream {
    stream: tokio::net::TcpStream,
    seen: String,
}

impl EventStream {
    async fn open(port: u16, path: &str) -> EventStream {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        EventStream { stream, seen: String::new() }
    }

    /// Reads until a `data:` record satisfying `want` has arrived.
    async fn until(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = self
                .seen
                .split("data: ")
                .skip(1)
                .filter_map(|d| d.split(RS).next())
                .filter_map(|r| serde_json::from_str::<Value>(r).ok())
                .find(|v| want(v));
            if let Some(v) = found {
                return v;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .expect("a record within the wait")
                .expect("read");
            assert!(n > 0, "the stream ended: {}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

#[tokio::test]
async fn version_0_server_sent_events_work_with_json() {
    let s = Sidecar::start(&[]).await;
    let id = negotiate_v0(&s).await;
    let path = format!("/hubs/chat?id={id}");
    let mut sse = EventStream::open(s.port, &path).await;
    let post = |body: String| {
        let path = path.clone();
        async move { request(s.port, "POST", &path, &[], body.as_bytes()).await.expect("POST").0 }
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(post(format!("{{\"protocol\":\"json\",\"version\":0}}{RS}")).await, 200);
    sse.until(|v| v == &json!({})).await;
    assert_eq!(
        post(format!("{}{RS}", json!({"type":1,"invocationId":"1","target":"JoinRoom","arguments":["v0-sse"]}))).await,
        200
    );
    let done = sse.until(|v| v["type"] == 3).await;
    assert!(done.get("error").is_none(), "{done}");
    let event = chat_event("v0-sse");
    publish(&s, &event).await;
    let inv = sse.until(|v| v["type"] == 1).await;
    assert_eq!(inv["arguments"][0], event["payload"]);
}

/// Server-Sent Events carry text only: ASP.NET Core refuses a binary
/// protocol there in the handshake answer (the sidecar used to accept it
/// and write MessagePack into the event stream).
#[tokio::test]
async fn messagepack_over_server_sent_events_is_refused_in_the_handshake() {
    let s = Sidecar::start(&[]).await;
    let id = negotiate_v0(&s).await;
    let path = format!("/hubs/chat?id={id}");
    let mut sse = EventStream::open(s.port, &path).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let handshake = format!("{{\"protocol\":\"messagepack\",\"version\":1}}{RS}");
    assert_eq!(request(s.port, "POST", &path, &[], handshake.as_bytes()).await.expect("POST").0, 200);
    let answer = sse.until(|v| v.get("error").is_some()).await;
    assert_eq!(
        answer["error"],
        "Cannot use the 'messagepack' protocol on the current transport. The transport does not support 'Binary' transfer format."
    );
}

/// Every transport has a handshake deadline (ASP.NET Core's
/// HandshakeTimeout): a polling connection that never sends its handshake
/// is answered "Handshake was canceled." and ends, instead of staying open.
#[tokio::test]
async fn polling_connections_without_a_handshake_are_canceled() {
    let s = Sidecar::start(&[("SIDECAR_HANDSHAKE_TIMEOUT_SECONDS", "1".into())]).await;
    let id = negotiate_v0(&s).await;
    let mut sse = EventStream::open(s.port, &format!("/hubs/chat?id={id}")).await;
    let answer = sse.until(|v| v.get("error").is_some()).await;
    assert_eq!(answer, json!({"error": "Handshake was canceled."}));

    let id = negotiate_v0(&s).await;
    let lp = Poller { port: s.port, path: format!("/hubs/chat?id={id}") };
    assert_eq!(lp.poll().await.0, 200, "the first poll starts the connection");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lp.poll().await, (200, b"{\"error\":\"Handshake was canceled.\"}\x1e".to_vec()));
    assert_eq!(lp.poll().await.0, 204, "then it is over");
}

// === Stateful reconnect and the drain ===

/// Negotiates stateful reconnect on `s`'s chat hub and opens its WebSocket
/// with a JSON handshake of `version`; the socket and the token.
async fn stateful_socket(s: &Sidecar, version: u32) -> (RawWs, String) {
    let (_, body) =
        request(s.port, "POST", "/hubs/chat/negotiate?negotiateVersion=1&useStatefulReconnect=true", &[], b"")
            .await
            .expect("negotiate");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["useStatefulReconnect"], true);
    let token = v["connectionToken"].as_str().expect("token").to_string();
    let mut ws = RawWs::connect(s.port, &format!("/hubs/chat?id={token}")).await.expect("connect");
    ws.send(&format!("{{\"protocol\":\"json\",\"version\":{version}}}{RS}")).await;
    assert_eq!(ws.recv().await.as_deref(), Some("{}\u{1e}"));
    (ws, token)
}

#[tokio::test]
async fn a_sequence_beyond_what_the_client_sent_closes_with_an_error() {
    let s = Sidecar::start(&[]).await;
    let (mut ws, _) = stateful_socket(&s, 2).await;
    ws.send(&format!("{}{RS}", json!({"type":1,"invocationId":"1","target":"JoinRoom","arguments":["seq"]}))).await;
    assert_eq!(ws.recv_type(3).await.expect("answered")["invocationId"], "1");
    // The client claims it sent 2^64-1 messages: it sent one.
    ws.send(&format!("{{\"type\":9,\"sequenceId\":{}}}{RS}", u64::MAX)).await;
    ws.send(&format!("{}{RS}", json!({"type":1,"invocationId":"2","target":"JoinRoom","arguments":["seq"]}))).await;
    let close = ws.recv_type(7).await.expect("a Close, not a silent connection");
    // ASP.NET Core's MessageBuffer throws; the Close carries its generic
    // text (the detail only with EnableDetailedErrors) and lets the client
    // start afresh.
    assert_eq!(close, json!({"type": 7, "error": "Connection closed with an error.", "allowReconnect": true}));
}

#[tokio::test]
async fn a_version_1_handshake_turns_stateful_reconnect_off() {
    // ASP.NET Core's HubConnectionContext: a client that negotiated stateful
    // reconnect but names protocol version 1 (an older hub protocol) gets a
    // plain connection: no Ack of what it sends, no resume afterwards.
    let s = Sidecar::start(&[]).await;
    let (mut ws, token) = stateful_socket(&s, 1).await;
    for id in ["1", "2"] {
        ws.send(&format!("{}{RS}", json!({"type":1,"invocationId":id,"target":"JoinRoom","arguments":["v1"]}))).await;
    }
    let mut seen = Vec::new();
    while seen.iter().filter(|m: &&Value| m["type"] == 3).count() < 2 {
        let text = tokio::time::timeout(Duration::from_secs(5), ws.recv()).await.expect("answers").expect("open");
        for record in text.split('\u{1e}').filter(|r| !r.is_empty()) {
            seen.push(serde_json::from_str(record).expect("JSON record"));
        }
    }
    // A Ack would have come with (or before) the Completions it follows.
    ws.send(&format!("{{\"type\":6}}{RS}")).await;
    if let Ok(Some(text)) = tokio::time::timeout(Duration::from_millis(300), ws.recv()).await {
        seen.extend(text.split('\u{1e}').filter(|r| !r.is_empty()).map(|r| serde_json::from_str(r).expect("JSON")));
    }
    assert!(seen.iter().all(|m| m["type"] != 8 && m["type"] != 9), "no Ack or Sequence: {seen:?}");
    drop(ws);
    // Nothing was kept for a resume: the token is unknown once the socket is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match RawWs::connect(s.port, &format!("/hubs/chat?id={token}")).await {
            Err(404) => break,
            other => assert!(std::time::Instant::now() < deadline, "resume still taken: {:?}", other.err()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A resume whose client resets its socket right after the request (the
/// 101 never reaches it, or the upgrade fails under it) leaves the session
/// parked for the next resume, as a socket dropped a moment later would:
/// the session was ended there, and the client's next resume got 404.
#[tokio::test]
async fn a_resume_reset_before_its_socket_leaves_the_session_for_the_next() {
    let s = Sidecar::start(&[]).await;
    // The first socket stays open: the resume ends its transport first
    // (as a client resuming before the server saw its old socket die), a
    // wait in which the reset reaches the server before its 101.
    let (_first, token) = stateful_socket(&s, 2).await;
    let upgrade = format!(
        "GET /hubs/chat?id={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    for attempt in 0..30u64 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.expect("tcp connect");
        tcp.set_zero_linger().expect("linger");
        tcp.write_all(upgrade.as_bytes()).await.expect("request");
        // From at once to a few milliseconds: before, during and after the
        // server's answer.
        tokio::time::sleep(Duration::from_micros(attempt * 150)).await;
        drop(tcp);
    }
    // The session is parked again (or still being ended by the last reset
    // socket): the next resume takes it within the supersede wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut ws = loop {
        match RawWs::connect(s.port, &format!("/hubs/chat?id={token}")).await {
            Ok(ws) => break ws,
            Err(status) => {
                assert!(std::time::Instant::now() < deadline, "the session was lost: resume answered {status}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // The resumed session answers (the client's Sequence, then an invocation).
    ws.send(&format!("{{\"type\":9,\"sequenceId\":1}}{RS}")).await;
    ws.send(&format!("{}{RS}", json!({"type":1,"invocationId":"1","target":"JoinRoom","arguments":["r"]}))).await;
    assert_eq!(ws.recv_type(3).await.expect("answered")["invocationId"], "1");
}

#[tokio::test]
async fn the_drain_close_carries_no_error() {
    let mut s = Sidecar::start(&[("SIDECAR_DRAIN_WINDOW_SECONDS", "1".into())]).await;
    let mut json_ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connect");
    json_ws.send(&format!("{{\"protocol\":\"json\",\"version\":1}}{RS}")).await;
    assert_eq!(json_ws.recv().await.as_deref(), Some("{}\u{1e}"));
    let mut mp_ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connect");
    mp_ws.send(&format!("{{\"protocol\":\"messagepack\",\"version\":1}}{RS}")).await;
    assert_eq!(mp_ws.recv().await.as_deref(), Some("{}\u{1e}"));
    let pid = s.pid().expect("running");
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let close = json_ws.recv_type(7).await.expect("a Close");
    assert_eq!(close, json!({"type": 7, "allowReconnect": true}), "exactly ASP.NET Core's Close");
    loop {
        match tokio::time::timeout(WAIT, mp_ws.ws.next()).await.expect("a Close within the wait") {
            Some(Ok(Message::Binary(b))) => {
                let messages = support::msgpack::messages(&b);
                if let Some(close) = messages.iter().find(|m| m[0].as_u64() == Some(7)) {
                    assert_eq!(close, &vec![Mp::from(7), Mp::Nil, Mp::Boolean(true)], "[7, nil, true]");
                    break;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("the socket ended without a Close: {other:?}"),
        }
    }
    assert_eq!(s.stop().await, Some(0));
}

// === Admission never touches another connection's token ===

#[tokio::test]
async fn a_refused_websocket_upgrade_leaves_the_long_polling_connection_alone() {
    let s = Sidecar::start(&[("SIDECAR_MAX_CONNECTIONS", "1".into())]).await;
    let (_, body) =
        request(s.port, "POST", "/hubs/chat/negotiate?negotiateVersion=1", &[], b"").await.expect("negotiate");
    let token =
        serde_json::from_str::<Value>(&body).expect("JSON")["connectionToken"].as_str().expect("token").to_string();
    let lp = Poller { port: s.port, path: format!("/hubs/chat?id={token}") };
    assert_eq!(lp.poll().await.0, 200);
    assert_eq!(lp.post(format!("{{\"protocol\":\"json\",\"version\":1}}{RS}").as_bytes()).await, 200);
    assert_eq!(lp.poll_data().await, b"{}\x1e");
    // The one connection allowed is taken; an upgrade with its token is refused...
    let refused = RawWs::connect(s.port, &format!("/hubs/chat?id={token}")).await.err();
    assert!(matches!(refused, Some(400 | 409 | 429 | 503)), "refused: {refused:?}");
    // ...and the Long Polling connection goes on untouched.
    let join = json!({"type":1,"invocationId":"1","target":"JoinRoom","arguments":["lp-alone"]});
    assert_eq!(lp.post(format!("{join}{RS}").as_bytes()).await, 200, "its token is still its own");
    assert_eq!(records(&String::from_utf8_lossy(&lp.poll_data().await))[0]["type"], 3);
    let event = chat_event("lp-alone");
    publish(&s, &event).await;
    let got = records(&String::from_utf8_lossy(&lp.poll_data().await));
    assert_eq!(got[0]["arguments"][0], event["payload"]);
}
