//! `HubSession` in process: records in through `receive`, frames out of
//! its outbox, on a `Hubs` with the in-process bus and presence.

use serde_json::{json, Value};

use super::*;
use crate::codec::{CloseMessage, Completion, HubMessage, Protocol};
use crate::fanout::{Frame, Target};
use crate::hub::testkit::{self, handshake, invoke, kit, messages, record, texts, user, CHAT, JSON_HANDSHAKE};
use crate::telemetry::labels::Transport;
use crate::transport::{Ended, Flow, Kick, Payload, Session};

fn done(id: &str) -> HubMessage {
    HubMessage::Completion(Completion { invocation_id: id.into(), outcome: Ok(Value::Null) })
}

fn failed(id: &str, error: &str) -> HubMessage {
    HubMessage::Completion(Completion { invocation_id: id.into(), outcome: Err(error.into()) })
}

fn protocol_error() -> HubMessage {
    HubMessage::Close(CloseMessage { error: Some("Connection closed with an error.".into()), allow_reconnect: true })
}

fn frame(text: &str) -> Frame {
    Frame { by_slot: [Some(Payload::text(text.into())), None], droppable: false }
}

/// The metric lines of `render` that name `family` and contain every label.
fn metric(hubs: &Hubs, family: &str, labels: &[&str]) -> Option<String> {
    hubs.metrics
        .render()
        .lines()
        .find(|l| l.starts_with(family) && labels.iter().all(|x| l.contains(x)))
        .map(str::to_string)
}

// --- the handshake ---

#[tokio::test]
async fn a_json_handshake_is_answered_and_enters_fan_out() {
    let k = kit(&[]);
    let mut s = k.session(CHAT, Transport::WebSockets, false);
    assert!(!s.is_open());
    assert_eq!(k.hubs.registry.len(), 0, "not in fan-out before the handshake");
    assert_eq!(s.receive(JSON_HANDSHAKE).await, Flow::Continue);
    assert_eq!(texts(&s.outbox()), ["{}"]);
    assert!(s.is_open() && !s.is_binary());
    assert_eq!(s.protocol(), Some(Protocol::Json));
    assert_eq!(k.hubs.registry.len(), 1);
    assert!(metric(&k.hubs, "sidecar_connections", &["hub=\"chat\"", "transport=\"websockets\""])
        .is_some_and(|l| l.ends_with(" 1")));
}

#[tokio::test]
async fn a_handshake_split_over_two_messages_is_put_together() {
    let k = kit(&[]);
    let mut s = k.session(CHAT, Transport::WebSockets, false);
    let (a, b) = JSON_HANDSHAKE.split_at(10);
    assert_eq!(s.receive(a).await, Flow::Continue);
    assert!(texts(&s.outbox()).is_empty() && !s.is_open());
    assert_eq!(s.receive(b).await, Flow::Continue);
    assert_eq!(texts(&s.outbox()), ["{}"]);
}

#[tokio::test]
async fn messages_after_the_handshake_in_the_same_packet_are_handled() {
    let k = kit(&[]);
    let mut s = k.session(CHAT, Transport::WebSockets, false);
    let mut packet = JSON_HANDSHAKE.to_vec();
    packet.extend(invoke("1", "JoinRoom", json!(["r1"])));
    assert_eq!(s.receive(&packet).await, Flow::Continue);
    let out = texts(&s.outbox());
    assert_eq!(out[0], "{}");
    assert_eq!(Protocol::Json.decode(out[1].as_bytes()).expect("json"), done("1"));
    assert_eq!(k.hubs.registry.groups_of(s.conn()), [Box::<str>::from("r1")]);
}

#[tokio::test]
async fn version_0_is_accepted_as_asp_net_core_accepts_it() {
    let k = kit(&[]);
    let mut s = k.session(CHAT, Transport::WebSockets, false);
    assert_eq!(s.receive(b"{\"protocol\":\"json\",\"version\":0}\x1e").await, Flow::Continue);
    assert_eq!(texts(&s.outbox()), ["{}"]);
}

#[tokio::test]
async fn refused_handshakes_name_the_reason_and_stay_out_of_fan_out() {
    let cases: [(&[u8], &str); 3] = [
        (b"{\"protocol\":\"json\",\"version\":3}\x1e", "The server does not support version 3 of the 'json' protocol."),
        (b"{\"protocol\":\"xml\",\"version\":1}\x1e", "The protocol 'xml' is not supported."),
        (b"{\"protocol\":\x1e", "An unexpected error occurred during connection handshake."),
    ];
    for (handshake, error) in cases {
        let k = kit(&[]);
        let mut s = k.session(CHAT, Transport::WebSockets, false);
        assert_eq!(s.receive(handshake).await, Flow::Stop, "{error}");
        let out = texts(&s.outbox());
        assert_eq!(out.len(), 1);
        let answer: Value = serde_json::from_str(&out[0]).expect("json");
        assert_eq!(answer, json!({ "error": error }));
        assert!(!s.is_open());
        assert!(k.hubs.registry.is_empty());
    }
}

#[tokio::test]
async fn a_handshake_past_the_message_limit_is_canceled() {
    let k = kit(&[("SIDECAR_MAX_MESSAGE_BYTES", "256")]);
    let mut s = k.session(CHAT, Transport::WebSockets, false);
    assert_eq!(s.receive(&[b' '; 200]).await, Flow::Continue, "still within the limit");
    assert_eq!(s.receive(&[b' '; 100]).await, Flow::Stop);
    assert_eq!(texts(&s.outbox()), ["{\"error\":\"Handshake was canceled.\"}"]);
}

#[tokio::test]
async fn messagepack_is_refused_on_server_sent_events() {
    let k = kit(&[]);
    let mut s = k.session(CHAT, Transport::ServerSentEvents, false);
    assert_eq!(s.receive(b"{\"protocol\":\"messagepack\",\"version\":1}\x1e").await, Flow::Stop);
    let out = texts(&s.outbox());
    assert!(out[0].contains("Cannot use the 'messagepack' protocol on the current transport."), "{out:?}");
}

#[tokio::test]
async fn a_messagepack_session_speaks_binary_from_its_handshake_answer_on() {
    let k = kit(&[]);
    let mut s = k.session(CHAT, Transport::WebSockets, false);
    assert_eq!(s.receive(b"{\"protocol\":\"messagepack\",\"version\":1}\x1e").await, Flow::Continue);
    let batch = s.outbox().take(10);
    // The answer is JSON, in the binary frames the transfer format asks for.
    assert!(matches!(&batch.frames[..], [p] if p.is_binary() && p.as_bytes() == b"{}\x1e"), "{:?}", batch.frames);
    assert!(s.is_binary());
    // [1, {}, "7", "JoinRoom", ["r1"]] with its length prefix.
    let call = rmpv::Value::Array(vec![
        1.into(),
        rmpv::Value::Map(Vec::new()),
        "7".into(),
        "JoinRoom".into(),
        rmpv::Value::Array(vec!["r1".into()]),
    ]);
    let mut body = Vec::new();
    rmpv::encode::write_value(&mut body, &call).expect("encodes");
    let mut message = vec![u8::try_from(body.len()).expect("short")];
    message.extend(body);
    assert_eq!(s.receive(&message).await, Flow::Continue);
    let batch = s.outbox().take(10);
    let [p] = &batch.frames[..] else { panic!("one frame: {:?}", batch.frames) };
    assert!(p.is_binary());
    let b = p.as_bytes();
    assert_eq!(usize::from(b[0]), b.len() - 1, "length prefix");
    assert_eq!(Protocol::MessagePack.decode(&b[1..]).expect("msgpack"), done("7"));
    assert_eq!(k.hubs.registry.groups_of(s.conn()).len(), 1);
}

// --- server methods ---

#[tokio::test]
async fn join_room_puts_the_connection_in_the_group() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    assert_eq!(s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await, Flow::Continue);
    assert_eq!(messages(&s.outbox()), [done("1")]);
    assert_eq!(k.hubs.registry.groups_of(s.conn()), [Box::<str>::from("r1")]);
    let d = k.hubs.registry.deliver(Target::Group { hub: CHAT, group: "r1" }, &frame("event\x1e"));
    assert_eq!(d.queued, 1);
    assert_eq!(texts(&s.outbox()), ["event"]);
    assert_eq!(k.hubs.registry.deliver(Target::Group { hub: CHAT, group: "r2" }, &frame("x\x1e")).queued, 0);
    assert!(metric(&k.hubs, "sidecar_invocations", &["method=\"JoinRoom\"", "outcome=\"ok\""]).is_some());
}

#[tokio::test]
async fn method_names_match_in_any_case() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    s.receive(&invoke("1", "joinroom", json!(["r1"]))).await;
    assert_eq!(messages(&s.outbox()), [done("1")]);
    assert_eq!(k.hubs.registry.groups_of(s.conn()).len(), 1);
}

#[tokio::test]
async fn leave_room_takes_it_out_again() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    s.receive(&invoke("2", "LeaveRoom", json!(["r1"]))).await;
    s.receive(&invoke("3", "LeaveRoom", json!(["never-joined"]))).await;
    assert_eq!(messages(&s.outbox()), [done("1"), done("2"), done("3")]);
    assert!(k.hubs.registry.groups_of(s.conn()).is_empty());
    assert_eq!(k.hubs.registry.deliver(Target::Group { hub: CHAT, group: "r1" }, &frame("x\x1e")).queued, 0);
}

#[tokio::test]
async fn bad_arguments_get_a_completion_error_and_join_nothing() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    let expected = "An unexpected error occurred invoking 'JoinRoom' on the server. HubException: JoinRoom expects \
                    one argument: a non-empty group name of at most 512 characters, not \"*\" and not starting with \
                    \"user:\"";
    let too_long = "g".repeat(513);
    let bad =
        [json!([42]), json!([]), json!(["a", "b"]), json!([""]), json!([too_long]), json!(["*"]), json!(["user:u1"])];
    for (i, args) in bad.into_iter().enumerate() {
        let id = i.to_string();
        assert_eq!(s.receive(&invoke(&id, "JoinRoom", args)).await, Flow::Continue);
        assert_eq!(messages(&s.outbox()), [failed(&id, expected)]);
    }
    assert!(k.hubs.registry.groups_of(s.conn()).is_empty());
    assert!(metric(&k.hubs, "sidecar_invocations", &["outcome=\"bad_arguments\""]).is_some_and(|l| l.ends_with(" 7")));
}

#[tokio::test]
async fn an_unknown_method_completes_with_method_does_not_exist() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    assert_eq!(s.receive(&invoke("9", "Nope", json!([]))).await, Flow::Continue);
    assert_eq!(
        messages(&s.outbox()),
        [failed("9", "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist.")]
    );
    assert!(metric(&k.hubs, "sidecar_invocations", &["method=\"unknown\"", "outcome=\"unknown_method\""]).is_some());
}

#[tokio::test]
async fn a_method_of_another_hub_is_unknown_here() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    s.receive(&invoke("1", "SubscribeTicket", json!(["t1"]))).await;
    let out = messages(&s.outbox());
    assert!(
        matches!(&out[..], [HubMessage::Completion(Completion { outcome: Err(e), .. })] if e.contains("Method does not exist"))
    );
}

#[tokio::test]
async fn a_non_blocking_invocation_runs_without_a_completion() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    let call = record(json!({"type": 1, "target": "JoinRoom", "arguments": ["r1"]}));
    assert_eq!(s.receive(&call).await, Flow::Continue);
    let empty_id = record(json!({"type": 1, "invocationId": "", "target": "JoinRoom", "arguments": ["r2"]}));
    assert_eq!(s.receive(&empty_id).await, Flow::Continue);
    let failing = record(json!({"type": 1, "target": "Nope", "arguments": []}));
    assert_eq!(s.receive(&failing).await, Flow::Continue);
    assert!(texts(&s.outbox()).is_empty(), "no Completion for a call nobody waits on");
    assert_eq!(k.hubs.registry.groups_of(s.conn()).len(), 2);
}

#[tokio::test]
async fn invocations_past_the_rate_limit_are_refused() {
    let k = kit(&[("SIDECAR_RATE_LIMIT_BURST", "2"), ("SIDECAR_RATE_LIMIT_PER_MINUTE", "1")]);
    let mut s = k.open(false).await;
    for (id, room) in [("1", "r1"), ("2", "r2"), ("3", "r3")] {
        s.receive(&invoke(id, "JoinRoom", json!([room]))).await;
    }
    let limited = "An unexpected error occurred invoking 'JoinRoom' on the server. HubException: Too many \
                   invocations: the limit is 1 per minute";
    assert_eq!(messages(&s.outbox()), [done("1"), done("2"), failed("3", limited)]);
    assert_eq!(k.hubs.registry.groups_of(s.conn()).len(), 2, "the refused join did nothing");
    assert!(metric(&k.hubs, "sidecar_limited", &["limit=\"invocations\""]).is_some_and(|l| l.ends_with(" 1")));
    // Without authentication the budget is the connection's own.
    let mut other = k.open(false).await;
    other.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    assert_eq!(messages(&other.outbox()), [done("1")]);
}

#[tokio::test]
async fn a_user_shares_one_invocation_budget_across_connections() {
    let k = kit(&[("SIDECAR_RATE_LIMIT_BURST", "1"), ("SIDECAR_RATE_LIMIT_PER_MINUTE", "1")]);
    let mut a = k.session_as(CHAT, Transport::WebSockets, false, user("u1", "Ann"));
    let mut b = k.session_as(CHAT, Transport::WebSockets, false, user("u1", "Ann"));
    handshake(&mut a).await;
    handshake(&mut b).await;
    a.receive(&invoke("1", "LeaveRoom", json!(["r"]))).await;
    b.receive(&invoke("1", "LeaveRoom", json!(["r"]))).await;
    assert_eq!(messages(&a.outbox()), [done("1")]);
    assert!(
        matches!(&messages(&b.outbox())[..], [HubMessage::Completion(Completion { outcome: Err(e), .. })] if e.contains("Too many invocations"))
    );
}

#[tokio::test]
async fn a_connection_in_too_many_groups_is_denied() {
    let k = kit(&[("SIDECAR_MAX_GROUPS_PER_CONNECTION", "1")]);
    let mut s = k.open(false).await;
    s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    s.receive(&invoke("2", "JoinRoom", json!(["r1"]))).await;
    s.receive(&invoke("3", "JoinRoom", json!(["r2"]))).await;
    let denied = "An unexpected error occurred invoking 'JoinRoom' on the server. HubException: a connection may \
                  join at most 1 groups";
    assert_eq!(messages(&s.outbox()), [done("1"), done("2"), failed("3", denied)], "joining twice is no error");
}

#[tokio::test]
async fn stream_invocations_are_refused_in_asp_net_cores_words() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    let stream =
        |id: &str, target: &str| record(json!({"type": 4, "invocationId": id, "target": target, "arguments": ["r1"]}));
    s.receive(&stream("1", "JoinRoom")).await;
    s.receive(&stream("2", "Nope")).await;
    assert_eq!(
        messages(&s.outbox()),
        [
            failed(
                "1",
                "The client attempted to invoke the non-streaming 'JoinRoom' method with a streaming invocation."
            ),
            failed("2", "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist."),
        ]
    );
    assert!(k.hubs.registry.groups_of(s.conn()).is_empty());
}

#[tokio::test]
async fn stream_arguments_are_refused() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    let call =
        record(json!({"type": 1, "invocationId": "1", "target": "JoinRoom", "arguments": ["r1"], "streamIds": ["s1"]}));
    s.receive(&call).await;
    assert_eq!(
        messages(&s.outbox()),
        [failed(
            "1",
            "An unexpected error occurred invoking 'JoinRoom' on the server. HubException: Client sent 1 stream(s), \
             Hub method expects 0."
        )]
    );
}

#[tokio::test]
async fn send_typing_publishes_a_typing_event_on_the_bus() {
    let mut k = kit(&[]);
    let mut s = k.open(false).await;
    s.receive(&invoke("1", "SendTyping", json!(["r1", true]))).await;
    s.receive(&invoke("2", "SendTyping", json!(["r1", false]))).await;
    assert_eq!(messages(&s.outbox()), [done("1"), done("2")]);
    let events = k.published();
    let kinds: Vec<_> = events.iter().map(|e| (e.event_type.as_str(), e.room_id.as_str())).collect();
    assert_eq!(kinds, [("typing_start", "r1"), ("typing_stop", "r1")]);
    // Without authentication the connection id stands in for the user.
    let start = &events[0];
    assert_eq!(start.payload.object()["user_id"], json!(s.connection_id));
    assert_eq!(start.payload.object()["username"], json!(s.connection_id));
    assert_eq!(start.payload.object()["is_typing"], json!(true));
    assert_eq!(start.metadata.as_ref().map(|m| m["source_instance"].clone()), Some(json!("test-instance")));
    assert_ne!(events[0].event_id, events[1].event_id);
}

#[tokio::test]
async fn send_typing_names_its_user_and_checks_its_arguments() {
    let mut k = kit(&[]);
    let mut s = k.session_as(CHAT, Transport::WebSockets, false, user("u1", "Ann"));
    handshake(&mut s).await;
    s.receive(&invoke("1", "SendTyping", json!(["r1", true]))).await;
    s.receive(&invoke("2", "SendTyping", json!(["r1", "yes"]))).await;
    s.receive(&invoke("3", "SendTyping", json!(["", true]))).await;
    let bad = "An unexpected error occurred invoking 'SendTyping' on the server. HubException: SendTyping expects \
               (roomId: string, isTyping: boolean), roomId a non-empty group name of at most 512 characters, not \
               \"*\" and not starting with \"user:\"";
    assert_eq!(messages(&s.outbox()), [done("1"), failed("2", bad), failed("3", bad)]);
    let events = k.published();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].payload.object()["user_id"].clone(), events[0].payload.object()["username"].clone()),
        (json!("u1"), json!("Ann"))
    );
}

// --- presence ---

#[tokio::test]
async fn a_users_first_join_and_last_leave_are_published_once() {
    let mut k = kit(&[]);
    let mut a = k.session_as(CHAT, Transport::WebSockets, false, user("u1", "Ann"));
    let mut b = k.session_as(CHAT, Transport::WebSockets, false, user("u1", "Ann"));
    handshake(&mut a).await;
    handshake(&mut b).await;
    a.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    b.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    let joined = k.published();
    assert_eq!(joined.len(), 1, "a second tab is no new presence");
    assert_eq!((joined[0].event_type.as_str(), joined[0].room_id.as_str()), ("user_joined", "r1"));
    assert_eq!(
        joined[0].payload,
        json!({"user_id": "u1", "username": "Ann", "room_id": "r1"}).as_object().cloned().expect("map").into()
    );
    a.receive(&invoke("2", "LeaveRoom", json!(["r1"]))).await;
    assert!(k.published().is_empty(), "the other tab is still there");
    b.finish(Ended::ByClient).await;
    let left: Vec<_> = k.published().into_iter().map(|e| e.event_type).collect();
    assert_eq!(left, ["user_left"]);
}

#[tokio::test]
async fn get_and_set_presence_read_and_change_the_room() {
    let k = kit(&[]);
    let mut s = k.session_as(CHAT, Transport::WebSockets, false, user("u1", "Ann"));
    handshake(&mut s).await;
    s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    s.receive(&invoke("2", "GetPresence", json!(["r1"]))).await;
    s.receive(&invoke("3", "SetPresence", json!(["away"]))).await;
    s.receive(&invoke("4", "GetPresence", json!(["r1"]))).await;
    s.receive(&invoke("5", "SetPresence", json!(["busy"]))).await;
    s.receive(&invoke("6", "GetPresence", json!(["empty-room"]))).await;
    let present = |state: &str| json!({"room_id": "r1", "count": 1, "users": [{"user_id": "u1", "username": "Ann", "state": state}]});
    let results: Vec<Result<Value, String>> = messages(&s.outbox())
        .into_iter()
        .map(|m| match m {
            HubMessage::Completion(c) => c.outcome,
            other => panic!("not a completion: {other:?}"),
        })
        .collect();
    assert_eq!(results[1], Ok(present("online")));
    assert_eq!(results[2], Ok(Value::Null));
    assert_eq!(results[3], Ok(present("away")));
    assert!(results[4].as_ref().is_err_and(|e| e.contains("SetPresence expects one argument: \"online\" or \"away\"")));
    assert_eq!(results[5], Ok(json!({"room_id": "empty-room", "count": 0, "users": []})));
}

#[tokio::test]
async fn without_a_user_nothing_is_present() {
    let mut k = kit(&[]);
    let mut s = k.open(false).await;
    s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    s.receive(&invoke("2", "GetPresence", json!(["r1"]))).await;
    assert!(k.published().is_empty());
    let out = messages(&s.outbox());
    assert_eq!(
        out[1],
        HubMessage::Completion(Completion {
            invocation_id: "2".into(),
            outcome: Ok(json!({"room_id": "r1", "count": 0, "users": []}))
        })
    );
}

#[tokio::test]
async fn a_hub_without_presence_publishes_none() {
    let mut k = kit(&[]);
    let mut s = k.session_as(testkit::TICKET, Transport::WebSockets, false, user("u1", "Ann"));
    handshake(&mut s).await;
    s.receive(&invoke("1", "SubscribeTicket", json!(["t1"]))).await;
    assert_eq!(messages(&s.outbox()), [done("1")]);
    assert!(k.published().is_empty());
}

// --- other client messages ---

#[tokio::test]
async fn a_malformed_message_closes_with_a_protocol_error() {
    for bad in [&b"not json\x1e"[..], b"{\"type\":1,\"arguments\":[]}\x1e", b"{\"type\":8}\x1e"] {
        let k = kit(&[]);
        let mut s = k.open(false).await;
        assert_eq!(s.receive(bad).await, Flow::Stop, "{}", String::from_utf8_lossy(bad));
        assert_eq!(messages(&s.outbox()), [protocol_error()]);
    }
}

#[tokio::test]
async fn a_message_past_the_size_limit_is_closed_as_too_large() {
    let k = kit(&[("SIDECAR_MAX_MESSAGE_BYTES", "256")]);
    let mut s = k.open(false).await;
    assert_eq!(s.receive(&invoke("1", "JoinRoom", json!(["g".repeat(300)]))).await, Flow::Stop);
    // Kicked, so the transport writes the kick's Close and counts the reason.
    assert_eq!(s.outbox().kicked(), Some(crate::transport::Kick::MessageTooLarge));
    let close = super::super::close::for_kick(crate::transport::Kick::MessageTooLarge).map(HubMessage::Close);
    assert_eq!(close, Some(protocol_error()), "the Close a protocol error gets");
}

#[tokio::test]
async fn an_unknown_message_type_is_skipped() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    let mut packet = record(json!({"type": 99, "anything": true}));
    packet.extend(invoke("1", "JoinRoom", json!(["r1"])));
    assert_eq!(s.receive(&packet).await, Flow::Continue);
    assert_eq!(messages(&s.outbox()), [done("1")]);
}

#[tokio::test]
async fn messages_the_server_has_no_use_for_are_ignored() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    for m in [
        json!({"type": 2, "invocationId": "1", "item": 1}),
        json!({"type": 3, "invocationId": "1", "result": 1}),
        json!({"type": 5, "invocationId": "1"}),
        json!({"type": 9, "sequenceId": 5}),
    ] {
        assert_eq!(s.receive(&record(m.clone())).await, Flow::Continue, "{m}");
    }
    assert!(texts(&s.outbox()).is_empty());
}

#[tokio::test]
async fn a_close_from_the_client_ends_the_session() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    assert_eq!(s.receive(&record(json!({"type": 7}))).await, Flow::Stop);
    assert_eq!(messages(&s.outbox()), [HubMessage::Close(CloseMessage::default())]);
}

#[tokio::test]
async fn the_first_ping_arms_the_client_timeout() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    let armed = || k.hubs.registry.snapshot()[0].timeout_armed.load(Ordering::Relaxed);
    assert!(!armed(), "ASP.NET Core starts the client timeout at the first Ping");
    assert_eq!(s.receive(&record(json!({"type": 6}))).await, Flow::Continue);
    assert!(armed());
    assert!(texts(&s.outbox()).is_empty(), "a Ping is not answered");
}

#[tokio::test]
async fn long_polling_is_timed_from_the_start() {
    let k = kit(&[]);
    let mut s = k.session(CHAT, Transport::LongPolling, false);
    handshake(&mut s).await;
    assert!(k.hubs.registry.snapshot()[0].timeout_armed.load(Ordering::Relaxed));
}

// --- stateful reconnect ---

#[tokio::test]
async fn a_stateful_session_acknowledges_what_it_received() {
    let k = kit(&[]);
    let mut s = k.open(true).await;
    s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    assert_eq!(messages(&s.outbox()), [done("1"), HubMessage::Ack { sequence_id: 1 }]);
    // Pings are not numbered, so they need no Ack.
    s.receive(&record(json!({"type": 6}))).await;
    assert!(texts(&s.outbox()).is_empty());
    s.receive(&record(json!({"type": 1, "target": "LeaveRoom", "arguments": ["r1"]}))).await;
    assert_eq!(messages(&s.outbox()), [HubMessage::Ack { sequence_id: 2 }]);
}

#[tokio::test]
async fn a_sequence_beyond_what_was_received_closes_with_an_error() {
    let k = kit(&[]);
    let mut s = k.open(true).await;
    s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    texts(&s.outbox());
    assert_eq!(s.receive(&record(json!({"type": 9, "sequenceId": 5}))).await, Flow::Stop);
    assert_eq!(messages(&s.outbox()), [protocol_error()]);
}

#[tokio::test]
async fn messages_resent_after_a_sequence_are_not_run_twice() {
    let mut k = kit(&[]);
    let mut s = k.open(true).await;
    let typing = invoke("1", "SendTyping", json!(["r1", true]));
    s.receive(&typing).await;
    texts(&s.outbox());
    assert_eq!(s.receive(&record(json!({"type": 9, "sequenceId": 1}))).await, Flow::Continue);
    assert_eq!(s.receive(&typing).await, Flow::Continue);
    assert!(texts(&s.outbox()).is_empty(), "done already: no Completion, no Ack");
    s.receive(&invoke("2", "SendTyping", json!(["r1", false]))).await;
    assert_eq!(messages(&s.outbox()), [done("2"), HubMessage::Ack { sequence_id: 2 }]);
    assert_eq!(k.published().len(), 2, "one event per message, not per copy");
}

#[tokio::test]
async fn an_ack_of_a_frame_never_sent_closes() {
    let k = kit(&[]);
    let mut s = k.open(true).await;
    assert_eq!(s.receive(&record(json!({"type": 8, "sequenceId": 1}))).await, Flow::Stop);
    assert_eq!(messages(&s.outbox()), [protocol_error()]);
}

#[tokio::test]
async fn an_ack_frees_what_the_client_has() {
    let k = kit(&[]);
    let mut s = k.open(true).await;
    s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    s.receive(&invoke("2", "JoinRoom", json!(["r2"]))).await;
    texts(&s.outbox()); // written: numbered 1 and 2
    assert_eq!(s.receive(&record(json!({"type": 8, "sequenceId": 1}))).await, Flow::Continue);
    let (first, frames) = s.outbox().resume().expect("replay on");
    assert_eq!((first, frames.len()), (2, 1));
    assert_eq!(s.receive(&record(json!({"type": 8, "sequenceId": 3}))).await, Flow::Stop, "3 was never sent");
}

#[tokio::test]
async fn a_session_without_stateful_reconnect_keeps_nothing() {
    let k = kit(&[]);
    let mut s = k.open(false).await;
    s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    assert_eq!(messages(&s.outbox()), [done("1")], "no Ack without stateful reconnect");
    assert!(!s.can_resume());
    assert!(s.outbox().resume().is_none());
    assert_eq!(s.receive(&record(json!({"type": 8, "sequenceId": 50}))).await, Flow::Continue);
}

#[tokio::test]
async fn a_version_1_handshake_turns_stateful_reconnect_off() {
    let k = kit(&[]);
    let mut s = k.session(CHAT, Transport::WebSockets, true);
    assert_eq!(s.receive(JSON_HANDSHAKE).await, Flow::Continue);
    assert_eq!(texts(&s.outbox()), ["{}"]);
    s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    assert_eq!(messages(&s.outbox()), [done("1")], "no Ack for a version 1 client");
    assert!(!s.is_stateful() && !s.can_resume() && !s.outbox().is_stateful());
}

#[tokio::test]
async fn a_resumed_session_first_writes_a_sequence_and_what_was_not_acknowledged() {
    let k = kit(&[]);
    let mut s = k.open(true).await;
    assert!(s.can_resume());
    assert!(s.first_frames().is_empty(), "a fresh connection starts with nothing");
    s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    texts(&s.outbox());
    s.resume(Identity::default());
    let first: Vec<HubMessage> =
        s.first_frames().iter().map(|p| Protocol::Json.decode(&p.as_bytes()[..p.len() - 1]).expect("json")).collect();
    assert_eq!(first, [HubMessage::Sequence { sequence_id: 1 }, done("1")]);
    assert!(s.first_frames().is_empty(), "only once");
}

#[tokio::test]
async fn a_resume_takes_the_fresh_token_of_the_same_user_only() {
    let k = kit(&[]);
    let first = Identity { expires_at_ms: Some(1_000), ..user("u1", "Ann") };
    let mut s = k.session_as(CHAT, Transport::WebSockets, true, first);
    handshake(&mut s).await;
    let entry = s.entry.clone().expect("in fan-out");
    let expiry = || entry.expires_at_ms.load(Ordering::Relaxed);
    s.resume(Identity { expires_at_ms: Some(5_000), ..user("u2", "Bob") });
    assert_eq!((expiry(), s.identity.user_id.as_deref()), (1_000, Some("u1")), "another user's token is not taken");
    s.resume(Identity { expires_at_ms: Some(9_000), ..user("u1", "Ann") });
    assert_eq!(expiry(), 9_000, "the same user's fresh token is");
}

#[tokio::test]
async fn a_snapshot_carries_a_session_to_another_instance() {
    let k = kit(&[]);
    let (token, mut s) = k.negotiated(true, user("u1", "Ann")).await;
    let id = s.connection_id.clone();
    s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    texts(&s.outbox());
    let (groups, positions) = s.detach();
    assert!(k.hubs.registry.is_empty(), "out of fan-out");
    let snapshot = s.snapshot(&groups, &positions).expect("stateful and nothing lost");
    assert_eq!((snapshot.hub.as_str(), snapshot.connection_id.as_str()), ("chat", id.as_str()));
    assert_eq!((snapshot.groups.clone(), snapshot.next_seq), (vec!["r1".to_string()], 2));

    let other = kit(&[]);
    let (mut taken, groups, _) =
        HubSession::restore(other.hubs.clone(), CHAT, token.clone(), user("u1", "Ann"), &snapshot).expect("restores");
    assert_eq!(groups, [Box::<str>::from("r1")]);
    assert!(other.hubs.tokens.knows(&token));
    assert_eq!(other.hubs.registry.groups_of(taken.conn()), [Box::<str>::from("r1")]);
    assert_eq!(taken.connection_id, id);
    let first: Vec<HubMessage> = taken
        .first_frames()
        .iter()
        .map(|p| Protocol::Json.decode(&p.as_bytes()[..p.len() - 1]).expect("json"))
        .collect();
    assert_eq!(first, [HubMessage::Sequence { sequence_id: 1 }, done("1")]);
    // The client's numbering came along: its next message is its second.
    taken.receive(&invoke("2", "LeaveRoom", json!(["r1"]))).await;
    assert_eq!(messages(&taken.outbox()), [done("2"), HubMessage::Ack { sequence_id: 2 }]);
}

#[tokio::test]
async fn only_stateful_sessions_have_a_snapshot() {
    let k = kit(&[]);
    let s = k.open(false).await;
    let (groups, positions) = s.detach();
    assert!(s.snapshot(&groups, &positions).is_none());
    let before = k.session(CHAT, Transport::WebSockets, true);
    assert!(before.snapshot(&[], &Vec::new()).is_none(), "no handshake yet");
    assert!(!before.can_resume());
}

// --- how it ends ---

#[tokio::test]
async fn before_the_handshake_only_a_handshake_timeout_is_answered() {
    let k = kit(&[]);
    let s = k.session(CHAT, Transport::WebSockets, false);
    let timed_out = s.close_frame(Kick::HandshakeTimeout).expect("an answer");
    assert_eq!(timed_out.as_bytes(), b"{\"error\":\"Handshake was canceled.\"}\x1e");
    assert!(s.close_frame(Kick::ServerShutdown).is_none());
}

#[tokio::test]
async fn a_kicked_session_is_told_why_in_its_protocol() {
    let k = kit(&[]);
    let s = k.open(false).await;
    let close = |why| s.close_frame(why).map(|p| Protocol::Json.decode(&p.as_bytes()[..p.len() - 1]).expect("json"));
    assert_eq!(
        close(Kick::ServerShutdown),
        Some(HubMessage::Close(CloseMessage { error: None, allow_reconnect: true }))
    );
    assert_eq!(close(Kick::ClientTimeout), Some(protocol_error()));
    assert!(
        matches!(close(Kick::SlowConsumer), Some(HubMessage::Close(CloseMessage { error: Some(e), allow_reconnect: true })) if e.contains("fast enough"))
    );
    assert_eq!(close(Kick::Handoff), None, "the client must see a dropped socket to resume");
}

#[tokio::test]
async fn finish_leaves_fan_out_releases_the_token_and_counts_why() {
    let k = kit(&[]);
    let (token, mut s) = k.negotiated(false, Identity::default()).await;
    s.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    s.outbox().kick(Kick::SlowConsumer);
    s.finish(Ended::WriteFailed).await;
    assert!(k.hubs.registry.is_empty());
    assert!(!k.hubs.tokens.knows(&token));
    assert!(
        metric(&k.hubs, "sidecar_disconnects", &["reason=\"slow_consumer\""]).is_some(),
        "the kick is the cause, not the failed write"
    );
    assert!(metric(&k.hubs, "sidecar_connections", &["hub=\"chat\""]).is_some_and(|l| l.ends_with(" 0")));
}

#[tokio::test]
async fn a_session_that_never_opened_finishes_quietly() {
    let k = kit(&[]);
    let s = k.session(CHAT, Transport::WebSockets, false);
    s.finish(Ended::ByClient).await;
    assert!(metric(&k.hubs, "sidecar_disconnects", &["reason=\"client\""]).is_some());
    assert!(metric(&k.hubs, "sidecar_connections", &[]).is_none(), "never counted as open");
}
