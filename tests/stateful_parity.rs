//! Stateful reconnect against ASP.NET Core's behaviour (the official
//! clients' `MessageBuffer`, the server's `MessageBuffer.cs`,
//! `HubConnectionContext` and `HttpConnectionDispatcher`), in the cases the
//! other files leave out: Acks trimming the server's buffer, a client's
//! resend after the resume, a Sequence below what the server processed,
//! the buffer overflowing, the disconnect timeout, another hub or user,
//! MessagePack, and the oldest and newest official clients that resume.
//! Raw frames where the official client cannot produce the case.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use rmpv::Value as Mp;
use serde_json::{json, Value};
use support::http::request;
use support::raw::RawWs;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const RS: char = '\u{1e}';

/// A hub message as the test reads it, whatever the protocol: JSON as it
/// is; MessagePack as `{"type", "sequenceId" | "invocationId" | "n"}`.
type Msg = Value;

/// Negotiates stateful reconnect on `hub` (with `query`, e.g. an
/// `access_token`); the connection token.
async fn negotiate(s: &Sidecar, hub: &str, query: &str) -> String {
    let path = format!("{hub}/negotiate?negotiateVersion=1&useStatefulReconnect=true{query}");
    let (status, body) = request(s.port, "POST", &path, &[], b"").await.expect("negotiate");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["useStatefulReconnect"], true, "granted: {v}");
    v["connectionToken"].as_str().expect("token").to_string()
}

/// Which hub protocol a raw socket speaks.
#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Json,
    MessagePack,
}

/// A raw stateful socket: the token it resumes with and its protocol.
struct Client {
    ws: RawWs,
    proto: Proto,
}

impl Client {
    /// Opens the WebSocket for `token` and does a version-2 handshake.
    async fn open(s: &Sidecar, hub: &str, token: &str, query: &str, proto: Proto) -> Client {
        let ws = RawWs::connect(s.port, &format!("{hub}?id={token}{query}")).await.expect("connect");
        let mut c = Client { ws, proto };
        let name = if proto == Proto::Json { "json" } else { "messagepack" };
        c.ws.send(&format!("{{\"protocol\":\"{name}\",\"version\":2}}{RS}")).await;
        assert_eq!(c.ws.recv().await.as_deref(), Some("{}\u{1e}"), "handshake");
        c
    }

    /// Takes up the parked session for `token` (no handshake: a resume).
    async fn resume(s: &Sidecar, hub: &str, token: &str, query: &str, proto: Proto) -> Result<Client, u16> {
        RawWs::connect(s.port, &format!("{hub}?id={token}{query}")).await.map(|ws| Client { ws, proto })
    }

    async fn send_json(&mut self, v: Value) {
        self.ws.send(&format!("{v}{RS}")).await;
    }

    async fn send_mp(&mut self, v: Mp) {
        let frame = support::msgpack::frame(&v);
        futures_util::SinkExt::send(&mut self.ws.ws, Message::binary(frame)).await.expect("send");
    }

    /// An invocation of `target` with one string argument.
    async fn invoke(&mut self, id: &str, target: &str, arg: &str) {
        match self.proto {
            Proto::Json => self.send_json(json!({"type":1,"invocationId":id,"target":target,"arguments":[arg]})).await,
            Proto::MessagePack => {
                let items = vec![
                    1.into(),
                    Mp::Map(vec![]),
                    id.into(),
                    target.into(),
                    Mp::Array(vec![arg.into()]),
                    Mp::Array(vec![]),
                ];
                self.send_mp(Mp::Array(items)).await
            }
        }
    }

    /// An Ack (8) or Sequence (9) with `id`.
    async fn numbered(&mut self, ty: u64, id: u64) {
        match self.proto {
            Proto::Json => self.send_json(json!({"type": ty, "sequenceId": id})).await,
            Proto::MessagePack => self.send_mp(Mp::Array(vec![ty.into(), id.into()])).await,
        }
    }

    /// Every message that arrives until `quiet` passes without one; stops
    /// at the socket's end.
    async fn drain(&mut self, quiet: Duration) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(quiet, self.ws.ws.next()).await {
            match m {
                Message::Text(t) => out.extend(
                    t.split(RS).filter(|r| !r.is_empty()).map(|r| serde_json::from_str::<Value>(r).expect("JSON")),
                ),
                Message::Binary(b) => out.extend(support::msgpack::messages(&b).into_iter().map(mp_to_json)),
                Message::Close(_) => break,
                _ => {}
            }
        }
        out
    }

    /// Messages until one satisfies `pred` (included), within the wait.
    async fn until(&mut self, pred: impl Fn(&Msg) -> bool) -> Vec<Msg> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut out = Vec::new();
        while tokio::time::Instant::now() < deadline {
            let got = self.drain(Duration::from_millis(100)).await;
            let done = got.iter().any(&pred);
            out.extend(got);
            if done {
                return out;
            }
        }
        panic!("nothing matched within the wait; got {out:?}");
    }
}

/// The fields these tests read, from a MessagePack hub message.
fn mp_to_json(items: Vec<Mp>) -> Msg {
    let ty = items[0].as_u64().expect("type");
    match ty {
        // [1, headers, invocationId, target, [args], streamIds]
        1 => {
            let n = match &items[4] {
                Mp::Array(args) => mp_sequence_number(&args[0]),
                _ => None,
            };
            json!({"type": 1, "target": items[3].as_str(), "n": n})
        }
        // [3, headers, invocationId, resultKind, result?]
        3 => json!({"type": 3, "invocationId": items[2].as_str()}),
        8 | 9 => json!({"type": ty, "sequenceId": items[1].as_u64()}),
        _ => json!({"type": ty}),
    }
}

fn mp_sequence_number(arg: &Mp) -> Option<u64> {
    let Mp::Map(p) = arg else { return None };
    p.iter().find(|(k, _)| k.as_str() == Some("sequence_number")).and_then(|(_, v)| v.as_u64())
}

/// The chat event's sequence number, whichever protocol carried it.
fn event_n(m: &Msg) -> Option<u64> {
    if m["type"] != 1 {
        return None;
    }
    m["n"].as_u64().or_else(|| m["arguments"][0]["sequence_number"].as_u64())
}

fn events(ms: &[Msg]) -> Vec<u64> {
    ms.iter().filter_map(event_n).collect()
}

/// Publishes chat events `range` to `room` through the admin port.
async fn publish(s: &Sidecar, room: &str, range: std::ops::Range<u64>) {
    for n in range {
        let env = envelope("chat_message", room, chat_payload(room, n));
        let (status, body) = s.post_event(env.to_string().as_bytes()).await;
        assert_eq!(status, 202, "{body}");
    }
}

/// A resume that waits for the server to have seen the old socket's end
/// is not needed (the sidecar supersedes the old transport), but the events
/// published "while away" must find the session parked: give it a moment.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// A client joined to `room`, the join's Completion read (sequence id 1).
async fn joined(s: &Sidecar, proto: Proto, room: &str) -> (Client, String) {
    let token = negotiate(s, "/hubs/chat", "").await;
    let mut c = Client::open(s, "/hubs/chat", &token, "", proto).await;
    c.invoke("j", "JoinRoom", room).await;
    c.until(|m| m["type"] == 3).await;
    (c, token)
}

// === The server's buffer, trimmed by the client's Acks ===

/// HubProtocol.md: Ack(n) lets the server drop every message up to n; on
/// resume it sends Sequence(first unacknowledged) and the rest, then what
/// was published meanwhile, in order (MessageBuffer.cs `ResendAsync`).
async fn acks_trim_what_a_resume_resends(proto: Proto) {
    let s = Sidecar::start(&[]).await;
    let (mut c, token) = joined(&s, proto, "r").await;
    publish(&s, "r", 0..5).await;
    let got = c.until(|m| event_n(m) == Some(4)).await;
    assert_eq!(events(&got), [0, 1, 2, 3, 4]);
    // Completion = 1, events 0..5 = 2..=6; acknowledge up to event 2 (id 4).
    c.numbered(8, 4).await;
    settle().await;
    drop(c);
    settle().await;
    publish(&s, "r", 5..8).await;
    let mut c = Client::resume(&s, "/hubs/chat", &token, "", proto).await.expect("resumed");
    let got = c.until(|m| event_n(m) == Some(7)).await;
    assert_eq!(got[0], json!({"type": 9, "sequenceId": 5}), "first a Sequence of the oldest unacked: {got:?}");
    assert_eq!(events(&got), [3, 4, 5, 6, 7], "unacked, then the missed ones, once, in order");
    // The session goes on: the client's numbering continues (the join was 1).
    c.numbered(9, 2).await;
    c.invoke("k", "JoinRoom", "r2").await;
    let got = c.until(|m| m["type"] == 3).await;
    assert_eq!(got.iter().filter(|m| m["type"] == 3).count(), 1, "{got:?}");
}

#[tokio::test]
async fn acks_trim_what_a_resume_resends_json() {
    acks_trim_what_a_resume_resends(Proto::Json).await;
}

#[tokio::test]
async fn acks_trim_what_a_resume_resends_messagepack() {
    acks_trim_what_a_resume_resends(Proto::MessagePack).await;
}

/// With everything acknowledged the resume's Sequence names the next id
/// (MessageBuffer.cs: total + 1) and nothing is resent; what follows is
/// numbered on from there.
#[tokio::test]
async fn a_resume_with_everything_acked_resends_nothing() {
    let s = Sidecar::start(&[]).await;
    let (mut c, token) = joined(&s, Proto::Json, "r").await;
    publish(&s, "r", 0..2).await;
    c.until(|m| event_n(m) == Some(1)).await;
    c.numbered(8, 3).await;
    settle().await;
    drop(c);
    settle().await;
    let mut c = Client::resume(&s, "/hubs/chat", &token, "", Proto::Json).await.expect("resumed");
    assert_eq!(c.drain(Duration::from_millis(300)).await, [json!({"type": 9, "sequenceId": 4})]);
    publish(&s, "r", 2..3).await;
    let got = c.until(|m| event_n(m) == Some(2)).await;
    assert_eq!(events(&got), [2]);
    // Numbered 4: acknowledging it is no error, 5 would be.
    c.numbered(8, 4).await;
    c.numbered(9, 2).await;
    c.invoke("k", "LeaveRoom", "r").await;
    let got = c.until(|m| m["type"] == 3 || m["type"] == 7).await;
    assert!(got.iter().all(|m| m["type"] != 7), "{got:?}");
}

// === The client's resend after a resume ===

/// The client resends what the server had not acknowledged when the socket
/// dropped (TS `_resend`); the server's MessageBuffer numbers each message
/// and skips those already processed. Here the client goes back further
/// than the server's Acks (a Sequence below what it already processed):
/// nothing runs twice, no Completion comes twice, and the next new message
/// is processed.
#[tokio::test]
async fn a_resent_invocation_runs_once_and_its_completion_comes_once() {
    let s = Sidecar::start(&[]).await;
    let token = negotiate(&s, "/hubs/chat", "").await;
    let mut c = Client::open(&s, "/hubs/chat", &token, "", Proto::Json).await;
    c.invoke("1", "JoinRoom", "r").await;
    c.invoke("2", "LeaveRoom", "r").await;
    let got = c.until(|m| m["type"] == 3 && m["invocationId"] == "2").await;
    assert!(got.iter().any(|m| m["type"] == 8 && m["sequenceId"] == 2), "the server acked both: {got:?}");
    drop(c);
    settle().await;
    let mut c = Client::resume(&s, "/hubs/chat", &token, "", Proto::Json).await.expect("resumed");
    let first = c.drain(Duration::from_millis(300)).await;
    // Both Completions (ids 1 and 2) were never acknowledged: resent, with
    // their numbering, for the client to skip.
    assert_eq!(first[0], json!({"type": 9, "sequenceId": 1}), "{first:?}");
    assert_eq!(first.iter().filter(|m| m["type"] == 3).count(), 2, "{first:?}");
    c.numbered(8, 2).await;
    // The client resends from 1 although the server processed 1 and 2.
    c.numbered(9, 1).await;
    c.invoke("1", "JoinRoom", "r").await;
    c.invoke("2", "LeaveRoom", "r").await;
    c.invoke("3", "JoinRoom", "other").await;
    let got = c.until(|m| m["type"] == 3 && m["invocationId"] == "3").await;
    let completions: Vec<_> = got.iter().filter(|m| m["type"] == 3).map(|m| m["invocationId"].clone()).collect();
    assert_eq!(completions, ["3"], "the resent 1 and 2 were not run again: {got:?}");
    // Had the resent JoinRoom run again (after its LeaveRoom), "r" would reach it.
    publish(&s, "r", 0..1).await;
    publish(&s, "other", 10..11).await;
    let got = c.until(|m| event_n(m) == Some(10)).await;
    assert_eq!(events(&got), [10], "not in room r: {got:?}");
}

/// MessageBuffer.cs `ResetSequence`: a Sequence above what the server
/// received is refused (`community_clients.rs`); one at exactly the next id
/// (nothing to resend) is fine, and the numbering goes on from it.
#[tokio::test]
async fn a_sequence_at_the_next_id_resends_nothing_and_numbering_goes_on() {
    let s = Sidecar::start(&[]).await;
    let token = negotiate(&s, "/hubs/chat", "").await;
    let mut c = Client::open(&s, "/hubs/chat", &token, "", Proto::Json).await;
    c.invoke("1", "JoinRoom", "r").await;
    c.until(|m| m["type"] == 3).await;
    drop(c);
    settle().await;
    let mut c = Client::resume(&s, "/hubs/chat", &token, "", Proto::Json).await.expect("resumed");
    c.numbered(9, 2).await;
    c.invoke("2", "LeaveRoom", "r").await;
    let got = c.until(|m| m["type"] == 3 && m["invocationId"] == "2").await;
    assert!(got.iter().all(|m| m["type"] != 7), "no Close: {got:?}");
    assert!(got.iter().any(|m| m["type"] == 8 && m["sequenceId"] == 2), "acked as id 2: {got:?}");
}

// === The buffer's limit ===

/// README ("Coming back"): past `SIDECAR_STATEFUL_RECONNECT_BUFFER_BYTES` of
/// unacknowledged messages the resume is refused (404) and the client
/// reconnects afresh. ASP.NET Core holds the writes back instead; either
/// way the client never resumes onto a gap. A resume accepted here would
/// get no Sequence (the buffer cannot say where it starts), and the
/// official client drops everything until a Sequence: Connected and deaf.
#[tokio::test]
async fn a_resume_after_the_buffer_overflowed_is_refused() {
    let s = Sidecar::start(&[("SIDECAR_STATEFUL_RECONNECT_BUFFER_BYTES", "2000".into())]).await;
    let (mut c, token) = joined(&s, Proto::Json, "r").await;
    // Never acknowledged: about 300 bytes each, well past 2000.
    publish(&s, "r", 0..20).await;
    let got = c.until(|m| event_n(m) == Some(19)).await;
    assert_eq!(events(&got), (0..20).collect::<Vec<_>>(), "delivered while connected");
    drop(c);
    settle().await;
    assert_resume_refused(&s, &token, "a resume onto lost frames").await;
}

/// The bound is on what is unacknowledged (README): once the client's Ack
/// covers every frame the buffer had to drop, nothing is missing any more
/// and the session resumes again. The official client acks once a second,
/// so a burst past the bound within that second is routine.
#[tokio::test]
async fn a_buffer_that_overflowed_resumes_again_once_the_client_acked_past_it() {
    let s = Sidecar::start(&[("SIDECAR_STATEFUL_RECONNECT_BUFFER_BYTES", "2000".into())]).await;
    let (mut c, token) = joined(&s, Proto::Json, "r").await;
    publish(&s, "r", 0..20).await;
    c.until(|m| event_n(m) == Some(19)).await;
    // The join's Completion is 1, the events 2..=21.
    c.numbered(8, 21).await;
    settle().await;
    drop(c);
    settle().await;
    publish(&s, "r", 20..22).await;
    let mut c = Client::resume(&s, "/hubs/chat", &token, "", Proto::Json).await.expect("nothing is missing: resumed");
    let got = c.until(|m| event_n(m) == Some(21)).await;
    assert_eq!(got[0], json!({"type": 9, "sequenceId": 22}), "{got:?}");
    assert_eq!(events(&got), [20, 21]);
}

/// A resume that reaches another instance while the old one still serves
/// the session (it has not seen the socket die) whose buffer lost frames:
/// nothing can carry it on, so the resume is refused at once (404 within
/// the 200 ms an asker waits for a holder to speak up, README "Handoff on
/// request"), not after the 2 s wait for a snapshot that never comes,
/// during which the official client is Connected and deaf.
#[tokio::test]
async fn a_resume_elsewhere_of_a_served_session_past_its_buffer_is_refused_at_once() {
    let redis = Redis::start().await;
    let env = |id: &str| {
        vec![
            ("SIDECAR_REDIS_URL", redis.url()),
            ("SIDECAR_INSTANCE_ID", id.to_string()),
            ("SIDECAR_STATEFUL_RECONNECT_BUFFER_BYTES", "2000".to_string()),
        ]
    };
    let (a, b) = (Sidecar::start(&env("lost-a")).await, Sidecar::start(&env("lost-b")).await);
    let (mut c, token) = joined(&a, Proto::Json, "r").await;
    for n in 0..20 {
        redis.xadd_data("events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
    }
    c.until(|m| event_n(m) == Some(19)).await;
    // The old socket stays open: A still serves the session.
    let asked = std::time::Instant::now();
    let resumed = Client::resume(&b, "/hubs/chat", &token, "", Proto::Json).await;
    let took = asked.elapsed();
    assert_eq!(resumed.err(), Some(404));
    assert!(took < Duration::from_millis(1000), "refused after {took:?}");
    // And the session is not left on A, served to a socket its client left.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (_, metrics) = request(a.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
        if metrics.contains("sidecar_connections{hub=\"chat\",transport=\"websockets\"} 0") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still served on A: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(c);
}

/// The same with the official client (its Ack comes a second after what it
/// received, so a burst within that second is unacknowledged): told, it
/// reconnects afresh and gets what follows, where a resume onto the gap
/// left it Connected and deaf.
#[tokio::test]
async fn the_official_client_past_the_buffer_reconnects_afresh_and_hears_again() {
    let s = Sidecar::start(&[("SIDECAR_STATEFUL_RECONNECT_BUFFER_BYTES", "2000".into())]).await;
    let proxy = Proxy::start(s.port).await;
    let mut d = Driver::start().await;
    let url = format!("{}/hubs/chat", proxy.url());
    let extra = json!({"statefulReconnect": true, "reconnect": true});
    d.connect("c", &url, &["ReceiveMessage"], extra).await.expect("connects");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    publish(&s, "r", 0..20).await;
    for n in 0..20 {
        let m = d.message("c", "ReceiveMessage", WAIT).await.expect("before the cut");
        assert_eq!(m["args"][0]["sequence_number"], n);
    }
    proxy.cut();
    let told = d.wait_for(WAIT, |v| v["event"] == "reconnected" || v["event"] == "close").await;
    assert_eq!(told.map(|v| v["event"].clone()), Some(json!("reconnected")), "told, and back");
    hears_again(&mut d, &s, 20).await;
}

/// Official client `c`, reconnected afresh, joins room `r` again and gets
/// event `n` published then.
async fn hears_again(d: &mut Driver, s: &Sidecar, n: u64) {
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins again");
    publish(s, "r", n..n + 1).await;
    let m = d.message("c", "ReceiveMessage", WAIT).await.expect("hears again");
    assert_eq!(m["args"][0]["sequence_number"], n);
}

/// While the client is away its events queue in the connection's outbox;
/// past its bound (`SIDECAR_OUTBOX_MAX_FRAMES`) the client must be told
/// (CONTRACT section 14), never given a Sequence and a silent gap. The
/// resume is refused (404), as for a buffer that lost frames: taken up, it
/// carried only a Sequence and the Close, and the TS client answers a Close
/// by opening a stray WebSocket whose end, racing its automatic reconnect,
/// throws an uncaught "stopConnection ... still in the connecting state"
/// (it killed the Node process of the test below now and then).
#[tokio::test]
async fn more_events_than_the_session_holds_while_away_refuse_the_resume() {
    let s = Sidecar::start(&[("SIDECAR_OUTBOX_MAX_FRAMES", "8".into())]).await;
    let (mut c, token) = joined(&s, Proto::Json, "r").await;
    c.numbered(8, 1).await;
    settle().await;
    drop(c);
    settle().await;
    publish(&s, "r", 0..30).await;
    assert_resume_refused(&s, &token, "a resume onto an overflowed session").await;
}

/// The chat session of `token` on `s` cannot be resumed (404); accepted,
/// what it got then is in the failure.
async fn assert_resume_refused(s: &Sidecar, token: &str, what: &str) {
    match Client::resume(s, "/hubs/chat", token, "", Proto::Json).await {
        Err(status) => assert_eq!(status, 404),
        Ok(mut c) => {
            let got = c.drain(Duration::from_millis(1000)).await;
            panic!("{what} was accepted; it got {got:?}");
        }
    }
}

/// The same with the official client kept away (a slow network path)
/// while more events than its outbox holds arrive: told (its resume
/// refused), it reconnects afresh and hears again, never Connected with a
/// silent gap.
#[tokio::test]
async fn the_official_client_away_past_its_outbox_reconnects_afresh_and_hears_again() {
    let s = Sidecar::start(&[("SIDECAR_OUTBOX_MAX_FRAMES", "8".into())]).await;
    let proxy = Proxy::start(s.port).await;
    let mut d = Driver::start().await;
    let url = format!("{}/hubs/chat", proxy.url());
    let extra = json!({"statefulReconnect": true, "reconnect": true});
    d.connect("c", &url, &["ReceiveMessage"], extra).await.expect("connects");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    proxy.delay_new(Duration::from_millis(700));
    proxy.cut();
    settle().await;
    publish(&s, "r", 0..30).await;
    proxy.delay_new(Duration::ZERO);
    let mut heard = Vec::new();
    let told = loop {
        let v =
            d.wait_for(WAIT, |v| v["event"] == "reconnected" || v["event"] == "close" || v["event"] == "message").await;
        match v {
            Some(v) if v["event"] == "message" => heard.push(v["args"][0]["sequence_number"].as_u64().expect("n")),
            other => break other,
        }
    };
    assert_eq!(told.map(|v| v["event"].clone()), Some(json!("reconnected")), "told, and back; heard {heard:?}");
    assert_eq!(heard, (0..heard.len() as u64).collect::<Vec<_>>(), "no gap before being told");
    hears_again(&mut d, &s, 30).await;
}

// === When a resume is refused ===

/// A Close ends the session for good, whichever side sent it (ASP.NET
/// Core: the client's Close aborts the connection, which disables
/// reconnect; after the server's Close the connection is disposed). The
/// TS client still opens one stray WebSocket with the old token after a
/// Close: it must get 404, not a session. An Ack of a message never sent
/// and a Sequence of 0 end it with the server's Close (README,
/// "Differences from ASP.NET Core SignalR").
#[tokio::test]
async fn after_a_close_either_way_the_token_gets_404() {
    let s = Sidecar::start(&[]).await;
    let (mut c, token) = joined(&s, Proto::Json, "r").await;
    c.send_json(json!({"type": 7})).await;
    c.drain(Duration::from_millis(300)).await;
    drop(c);
    settle().await;
    assert_eq!(Client::resume(&s, "/hubs/chat", &token, "", Proto::Json).await.err(), Some(404), "client's Close");

    let (mut c, token) = joined(&s, Proto::Json, "r").await;
    c.numbered(8, 99).await;
    let got = c.until(|m| m["type"] == 7).await;
    assert_eq!(
        got.last(),
        Some(&json!({"type": 7, "error": "Connection closed with an error.", "allowReconnect": true}))
    );
    drop(c);
    settle().await;
    assert_eq!(Client::resume(&s, "/hubs/chat", &token, "", Proto::Json).await.err(), Some(404), "server's Close");

    // A Sequence of 0 names no message (README: closed, where ASP.NET Core
    // would skip the next message as a duplicate).
    let (mut c, _) = joined(&s, Proto::Json, "r").await;
    c.numbered(9, 0).await;
    let got = c.until(|m| m["type"] == 7).await;
    assert_eq!(
        got.last(),
        Some(&json!({"type": 7, "error": "Connection closed with an error.", "allowReconnect": true}))
    );
}

/// `DisconnectTimeout` in ASP.NET Core, `SIDECAR_CLIENT_TIMEOUT_SECONDS`
/// here (README): a session not resumed in time is gone, and its resume
/// gets 404, the client then reconnecting afresh.
#[tokio::test]
async fn a_resume_after_the_disconnect_timeout_gets_404() {
    let s =
        Sidecar::start(&[("SIDECAR_CLIENT_TIMEOUT_SECONDS", "2".into()), ("SIDECAR_KEEPALIVE_SECONDS", "1".into())])
            .await;
    let (c, token) = joined(&s, Proto::Json, "r").await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert_eq!(Client::resume(&s, "/hubs/chat", &token, "", Proto::Json).await.err(), Some(404));
}

/// The token names a session of the chat hub: a resume on another hub's
/// path does not take it (404), and leaves it for the right one.
#[tokio::test]
async fn a_resume_on_another_hub_gets_404_and_leaves_the_session() {
    let s = Sidecar::start(&[]).await;
    let (c, token) = joined(&s, Proto::Json, "r").await;
    drop(c);
    settle().await;
    assert_eq!(Client::resume(&s, "/hubs/ticket", &token, "", Proto::Json).await.err(), Some(404));
    publish(&s, "r", 0..2).await;
    let mut c = Client::resume(&s, "/hubs/chat", &token, "", Proto::Json).await.expect("still parked");
    let got = c.until(|m| event_n(m) == Some(1)).await;
    assert_eq!(got[0], json!({"type": 9, "sequenceId": 1}));
    assert_eq!(events(&got), [0, 1]);
}

/// HttpConnectionDispatcher only logs a user change on a request that
/// carries a connection on; the session keeps its user (README: the
/// sidecar does the same on the instance that holds it). So another
/// user's token resumes it, but user-addressed events still follow the
/// session's own user, not the token's.
#[tokio::test]
async fn a_resume_with_another_users_token_keeps_the_sessions_user() {
    let s = Sidecar::start(&jwt_env()).await;
    let alice = format!("&access_token={}", token("alice", "Alice"));
    let mallory = format!("&access_token={}", token("mallory", "Mallory"));
    let conn = negotiate(&s, "/hubs/notification", &alice).await;
    let c = Client::open(&s, "/hubs/notification", &conn, &alice, Proto::Json).await;
    drop(c);
    settle().await;
    let mut c = Client::resume(&s, "/hubs/notification", &conn, &mallory, Proto::Json).await.expect("resumed");
    for (user, title) in [("mallory", "for mallory"), ("alice", "for alice")] {
        let env = json!({"event_id": uuid(), "event_type": "notification", "timestamp": now(), "room_id": format!("user:{user}"),
            "payload": {"id": uuid(), "user_id": user, "title": title, "message": "m", "created_at": now()}});
        let (status, body) = s.post_event(env.to_string().as_bytes()).await;
        assert_eq!(status, 202, "{body}");
    }
    let got = c.until(|m| m["type"] == 1).await;
    let got = [got, c.drain(Duration::from_millis(300)).await].concat();
    let titles: Vec<_> = got.iter().filter(|m| m["type"] == 1).map(|m| m["arguments"][0]["title"].clone()).collect();
    assert_eq!(titles, ["for alice"], "{got:?}");
}

/// On another instance the README is stricter than ASP.NET Core: a session
/// handed over is refused (404) to a token of another user, and the
/// takeover is counted as refused.
#[tokio::test]
async fn a_resume_on_another_instance_with_another_users_token_gets_404() {
    let redis = Redis::start().await;
    let env = |id: &str| {
        let mut env = jwt_env();
        env.extend([("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_INSTANCE_ID", id.to_string())]);
        env
    };
    let (a, b) = (Sidecar::start(&env("user-a")).await, Sidecar::start(&env("user-b")).await);
    let alice = format!("&access_token={}", token("alice", "Alice"));
    let mallory = format!("&access_token={}", token("mallory", "Mallory"));
    let conn = negotiate(&a, "/hubs/notification", &alice).await;
    drop(Client::open(&a, "/hubs/notification", &conn, &alice, Proto::Json).await);
    settle().await;
    assert_eq!(Client::resume(&b, "/hubs/notification", &conn, &mallory, Proto::Json).await.err(), Some(404));
    let (_, metrics) = request(b.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    assert!(metrics.contains("sidecar_session_handoffs_total{outcome=\"refused\"} 1"), "{metrics}");
    // Neither a wrong hub path nor another user's token costs the session:
    // its own client still resumes there.
    assert_eq!(Client::resume(&b, "/hubs/chat", &conn, &alice, Proto::Json).await.err(), Some(404));
    assert!(Client::resume(&b, "/hubs/notification", &conn, &alice, Proto::Json).await.is_ok(), "the session was lost");
}

// === The official clients: oldest and newest that resume ===

/// `@microsoft/signalr` 8.0 introduced stateful reconnect; 10.0.11 is the
/// newest. Each, over MessagePack and JSON, resumes after a cut socket and
/// gets the events published while away once, in order, without closing.
async fn an_official_client_resumes(package: &str, version: &str, protocol: &str) {
    let s = Sidecar::start(&[]).await;
    let proxy = Proxy::start(s.port).await;
    let (msgpack, lib) = match package {
        "@microsoft/signalr" => ("@microsoft/signalr-protocol-msgpack".to_string(), package.to_string()),
        other => (other.replace("signalr-", "signalr-protocol-msgpack-"), other.to_string()),
    };
    let mut d = Driver::start_with_env(&[("SIGNALR_PACKAGE", lib), ("SIGNALR_MSGPACK_PACKAGE", msgpack)]).await;
    let url = format!("{}/hubs/chat", proxy.url());
    let extra = json!({"statefulReconnect": true, "protocol": protocol});
    let started = d.connect("c", &url, &["ReceiveMessage"], extra).await.expect("connects");
    assert_eq!(started["version"], version, "the client under test");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    publish(&s, "r", 0..5).await;
    for n in 0..5 {
        let m = d.message("c", "ReceiveMessage", WAIT).await.expect("before the cut");
        assert_eq!(m["args"][0]["sequence_number"], n);
    }
    proxy.cut();
    publish(&s, "r", 5..25).await;
    let mut got = Vec::new();
    while got.len() < 20 {
        let m = d.message("c", "ReceiveMessage", WAIT).await.unwrap_or_else(|| panic!("after the cut only {got:?}"));
        got.push(m["args"][0]["sequence_number"].as_u64().expect("n"));
    }
    assert_eq!(got, (5..25).collect::<Vec<_>>(), "{package} {protocol}: once, in order");
    assert!(d.message("c", "ReceiveMessage", Duration::from_millis(500)).await.is_none(), "nothing doubled");
    assert!(d.wait_for(Duration::from_millis(10), |v| v["event"] == "close").await.is_none(), "never closed");
    assert_eq!(d.invoke("c", "LeaveRoom", json!(["r"])).await, Ok(Value::Null));
}

/// The oldest client that resumes, handed from a draining instance to
/// another (CONTRACT section 14): every event published meanwhile, once,
/// in order, over MessagePack, without leaving Connected.
#[tokio::test]
async fn the_oldest_client_resumes_on_another_instance_after_a_drain() {
    let redis = Redis::start().await;
    let env = |id: &str| {
        vec![
            ("SIDECAR_REDIS_URL", redis.url()),
            ("SIDECAR_INSTANCE_ID", id.to_string()),
            ("SIDECAR_DRAIN_WINDOW_SECONDS", "1".to_string()),
        ]
    };
    let (mut a, b) = (Sidecar::start(&env("old-a")).await, Sidecar::start(&env("old-b")).await);
    let proxy = Proxy::start(a.port).await;
    let packages = [
        ("SIGNALR_PACKAGE", "signalr-8".to_string()),
        ("SIGNALR_MSGPACK_PACKAGE", "signalr-protocol-msgpack-8".to_string()),
    ];
    let mut d = Driver::start_with_env(&packages).await;
    let url = format!("{}/hubs/chat", proxy.url());
    let started =
        d.connect("c", &url, &["ReceiveMessage"], json!({"statefulReconnect": true, "protocol": "msgpack"})).await;
    assert_eq!(started.expect("connects")["version"], "8.0.29");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    let xadd = |range: std::ops::Range<u64>| {
        for n in range {
            redis.xadd_data("events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
        }
    };
    xadd(0..10);
    for n in 0..10 {
        let m = d.message("c", "ReceiveMessage", WAIT).await.expect("before the drain");
        assert_eq!(m["args"][0]["sequence_number"], n);
    }
    proxy.retarget(b.port);
    let publish_meanwhile = async {
        for n in 10..40 {
            xadd(n..n + 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (code, ()) = tokio::join!(a.stop(), publish_meanwhile);
    assert_eq!(code, Some(0), "the drained instance exits cleanly");
    xadd(40..50);
    let mut got = Vec::new();
    while got.len() < 40 {
        let m = d.message("c", "ReceiveMessage", WAIT).await.unwrap_or_else(|| panic!("after the drain only {got:?}"));
        got.push(m["args"][0]["sequence_number"].as_u64().expect("n"));
    }
    assert_eq!(got, (10..50).collect::<Vec<_>>(), "once, in order, across the instances");
    assert!(d.message("c", "ReceiveMessage", Duration::from_millis(500)).await.is_none(), "nothing doubled");
    let left = d.wait_for(Duration::from_millis(10), |v| v["event"] == "close" || v["event"] == "reconnecting").await;
    assert!(left.is_none(), "a resume, not a reconnect: {left:?}");
    let (_, metrics) = request(b.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    assert!(metrics.contains("sidecar_session_handoffs_total{outcome=\"resumed\"} 1"), "{metrics}");
}

#[tokio::test]
async fn the_oldest_client_that_resumes_8_0_json() {
    an_official_client_resumes("signalr-8", "8.0.29", "json").await;
}

#[tokio::test]
async fn the_oldest_client_that_resumes_8_0_messagepack() {
    an_official_client_resumes("signalr-8", "8.0.29", "msgpack").await;
}

#[tokio::test]
async fn the_newest_client_resumes_messagepack() {
    an_official_client_resumes("@microsoft/signalr", "10.0.11", "msgpack").await;
}
