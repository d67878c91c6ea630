//! A route's `arguments` (issue 21) through the real sidecar and the
//! official client, JSON and MessagePack: what each position holds, whoever
//! made the event (a publisher, SendTyping, the sidecar's own typing stop,
//! presence), and what becomes of an event that lacks a named field or a
//! routing file that names a source that does not exist.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::http::request;
use support::*;

/// The test's routing file: every route shapes its arguments.
const ROUTES: &str = r#"
[[hub]]
name = "chat"
path = "/hubs/chat"
presence = true

  [[hub.method]]
  name = "JoinRoom"
  action = "join"

  [[hub.method]]
  name = "SendTyping"
  action = "typing"

[[route]]
event_type = "chat_message"
hub = "chat"
method = "ReceiveMessage"
stream = "events:chat"
delivery = "immediate"
arguments = ["room_id", "payload.sender.name", "payload"]

[[route]]
event_type = "typing_start"
hub = "chat"
method = "UserTyping"
stream = "events:chat"
delivery = "coalesce"
arguments = ["room_id", "payload"]

[[route]]
event_type = "typing_stop"
hub = "chat"
method = "UserTyping"
stream = "events:chat"
delivery = "coalesce"
arguments = ["room_id", "payload"]

[[route]]
event_type = "user_joined"
hub = "chat"
method = "UserJoined"
stream = "events:chat"
delivery = "immediate"
arguments = ["payload.user_id", "room_id"]

[[route]]
event_type = "user_left"
hub = "chat"
method = "UserLeft"
stream = "events:chat"
delivery = "immediate"
arguments = ["payload.user_id", "room_id"]

[[route]]
event_type = "status_change"
hub = "chat"
method = "StatusChanged"
stream = "events:chat"
delivery = "immediate"
arguments = ["event_type", "event_id", "timestamp", "metadata.trace_id", "metadata.absent", "envelope"]
"#;

const METHODS: [&str; 5] = ["ReceiveMessage", "UserTyping", "StatusChanged", "UserJoined", "UserLeft"];

/// Writes a routing file for one test; its path.
fn routes_file(text: &str) -> String {
    let path = std::env::temp_dir().join(format!("routes-arguments-{}.toml", free_port()));
    std::fs::write(&path, text).expect("write routes");
    path.display().to_string()
}

/// Connects `name` with `extra` options and joins `room-1`.
async fn member(d: &mut Driver, s: &Sidecar, name: &str, extra: Value) {
    d.connect(name, &s.hub("/hubs/chat"), &METHODS, extra).await.expect("connects");
    assert_eq!(d.invoke(name, "JoinRoom", json!(["room-1"])).await, Ok(Value::Null));
}

fn chat_from(n: u64, sender: Value) -> Value {
    let mut p = chat_payload("room-1", n);
    p["sender"] = sender;
    p
}

#[tokio::test]
async fn two_and_three_arguments_reach_json_and_messagepack_clients() {
    let redis = Redis::start().await;
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_ROUTES", routes_file(ROUTES))]).await;
    let mut d = Driver::start().await;
    member(&mut d, &s, "json", json!({})).await;
    member(&mut d, &s, "msgpack", json!({"protocol": "msgpack"})).await;

    let chat = chat_from(1, json!({"id": "agent-1", "name": "Ann"}));
    redis.xadd_flat("events:chat", &envelope("chat_message", "room-1", chat.clone()));
    let typing = json!({"user_id": "ann", "username": "Ann", "is_typing": true});
    redis.xadd_data("events:chat", &envelope("typing_start", "room-1", typing.clone()));
    let status_payload = json!({"request_id": "room-1", "old_status": "open", "new_status": "closed", "changed_by": "u", "changed_at": now()});
    let mut status = envelope("status_change", "room-1", status_payload);
    status["metadata"] = json!({"trace_id": "trace-1"});
    redis.xadd_flat("events:chat", &status);

    for name in ["json", "msgpack"] {
        let m = d.message(name, "ReceiveMessage", WAIT).await.unwrap_or_else(|| panic!("{name}: no message"));
        assert_eq!(m["args"], json!(["room-1", "Ann", chat]), "{name}: room, a nested field, the payload");
        let t = d.message(name, "UserTyping", WAIT).await.unwrap_or_else(|| panic!("{name}: no typing"));
        assert_eq!(t["args"], json!(["room-1", typing]), "{name}: the old hub's (roomId, payload)");
        let st = d.message(name, "StatusChanged", WAIT).await.unwrap_or_else(|| panic!("{name}: no status"));
        assert_eq!(
            st["args"],
            json!(["status_change", status["event_id"], status["timestamp"], "trace-1", null, status]),
            "{name}: envelope fields, an absent metadata field as null, the whole envelope"
        );
    }
}

#[tokio::test]
async fn an_event_missing_a_named_field_is_dead_lettered_and_never_half_delivered() {
    let redis = Redis::start().await;
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_ROUTES", routes_file(ROUTES))]).await;
    let mut d = Driver::start().await;
    member(&mut d, &s, "json", json!({})).await;
    member(&mut d, &s, "msgpack", json!({"protocol": "msgpack"})).await;

    let without = envelope("chat_message", "room-1", chat_payload("room-1", 1));
    redis.xadd_flat("events:chat", &without);
    let not_an_object = envelope("chat_message", "room-1", chat_from(2, json!(null)));
    redis.xadd_data("events:chat", &not_an_object);
    let good = chat_from(3, json!({"name": "Bob"}));
    redis.xadd_flat("events:chat", &envelope("chat_message", "room-1", good.clone()));

    for name in ["json", "msgpack"] {
        let m = d.message(name, "ReceiveMessage", WAIT).await.unwrap_or_else(|| panic!("{name}: the good one"));
        assert_eq!(m["args"], json!(["room-1", "Bob", good]), "{name}: the first call is the good event");
    }
    for name in ["json", "msgpack"] {
        let rest = d.drain_messages(name, Duration::from_millis(300)).await;
        assert!(rest.is_empty(), "{name} received more: {rest:?}");
    }

    let dead = dead_letters(&redis, "events:chat", 2).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let reason = "route 'chat_message': payload has no field 'sender.name' (argument 2 of the route)";
    assert_eq!(dead[0]["reason"], reason);
    assert_eq!(dead[0]["event_id"], without["event_id"], "the original fields are kept");
    assert_eq!(dead[1]["reason"], reason);
    assert_eq!(dead[1]["data"], not_an_object.to_string());

    // A POST is refused at the door, with Redis or without: nothing published.
    let (status, body) = s.post_event(without.to_string().as_bytes()).await;
    assert_eq!((status, body.as_str()), (400, reason));
    let (_, metrics) = request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    assert!(metrics.contains("sidecar_events_dropped_total{reason=\"missing_argument\"} 2"), "{metrics}");
    let len: usize = redis::cmd("XLEN").arg("events:chat").query(&mut redis.conn()).expect("XLEN");
    assert_eq!(len, 3, "the refused POST never reached the stream");
}

#[tokio::test]
async fn the_typing_stop_the_sidecar_makes_has_the_same_signature() {
    let s = Sidecar::start(&[("SIDECAR_ROUTES", routes_file(ROUTES)), ("SIDECAR_TYPING_TIMEOUT_SECONDS", "2".into())])
        .await;
    let mut d = Driver::start().await;
    member(&mut d, &s, "w", json!({"protocol": "msgpack"})).await;
    member(&mut d, &s, "t", json!({})).await;

    // Cleared after the timeout.
    assert_eq!(d.invoke("t", "SendTyping", json!(["room-1", true])).await, Ok(Value::Null));
    let on = d.message("w", "UserTyping", WAIT).await.expect("typing");
    assert_eq!((on["args"][0].clone(), on["args"][1]["is_typing"].clone()), (json!("room-1"), json!(true)));
    let typist = on["args"][1]["user_id"].as_str().expect("user id").to_string();
    let off = d.message("w", "UserTyping", WAIT).await.expect("cleared by the server");
    assert_eq!(off["args"], json!(["room-1", {"user_id": typist, "username": typist, "is_typing": false}]));

    // Cleared at once by the typist's message.
    assert_eq!(d.invoke("t", "SendTyping", json!(["room-1", true])).await, Ok(Value::Null));
    d.message("w", "UserTyping", WAIT).await.expect("typing again");
    let mut chat = chat_from(1, json!({"name": "T"}));
    chat["sender_id"] = json!(typist);
    let posted = Instant::now();
    assert_eq!(s.post_event(envelope("chat_message", "room-1", chat).to_string().as_bytes()).await.0, 202);
    d.message("w", "ReceiveMessage", WAIT).await.expect("chat");
    let stop = d.message("w", "UserTyping", Duration::from_secs(1)).await.expect("cleared by the message");
    assert!(posted.elapsed() < Duration::from_millis(1500), "not the 2 s timeout: {:?}", posted.elapsed());
    assert_eq!(stop["args"], json!(["room-1", {"user_id": typist, "username": typist, "is_typing": false}]));

    // On the in-process bus a POST missing a named field gets its 400 too.
    let (status, body) =
        s.post_event(envelope("chat_message", "room-1", chat_payload("room-1", 2)).to_string().as_bytes()).await;
    assert_eq!(status, 400);
    assert!(body.contains("payload has no field 'sender.name'"), "{body}");
}

#[tokio::test]
async fn presence_events_have_the_routes_arguments() {
    let mut env = jwt_env();
    env.push(("SIDECAR_ROUTES", routes_file(ROUTES)));
    let s = Sidecar::start(&env).await;
    let mut d = Driver::start().await;
    member(&mut d, &s, "w", json!({"accessToken": token("u1", "Ann"), "protocol": "msgpack"})).await;
    member(&mut d, &s, "v", json!({"accessToken": token("u2", "Bob")})).await;
    let joined = d
        .wait_for(WAIT, |v| v["name"] == "w" && v["method"] == "UserJoined" && v["args"][0] == "u2")
        .await
        .expect("u2 joined");
    assert_eq!(joined["args"], json!(["u2", "room-1"]));
    d.stop("v").await;
    let left = d.message("w", "UserLeft", WAIT).await.expect("u2 left");
    assert_eq!(left["args"], json!(["u2", "room-1"]));
}

#[tokio::test]
async fn a_bad_arguments_entry_stops_the_start_with_the_file_line_and_reason() {
    let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).expect("needle") + 1;
    let typing_lacks = ROUTES.replacen(
        "arguments = [\"room_id\", \"payload\"]\n\n[[route]]\nevent_type = \"user_joined\"",
        "arguments = [\"room_id\", \"payload.request_id\"]\n\n[[route]]\nevent_type = \"user_joined\"",
        1,
    );
    let cases = [
        (
            ROUTES.replace("\"payload.sender.name\"", "\"payload.sender..name\""),
            "payload.sender..name",
            "route 'chat_message': argument 2: 'payload.sender..name': a field path is",
        ),
        (
            ROUTES.replace("\"metadata.absent\"", "\"trace\""),
            "\"trace\"",
            "route 'status_change': argument 5: 'trace' is not an argument source (payload, payload.<field>,",
        ),
        (
            typing_lacks.clone(),
            "payload.request_id",
            "route 'typing_stop': argument payload.request_id names a field the sidecar's own events of this type lack",
        ),
    ];
    for (text, needle, reason) in cases {
        assert_ne!(text, ROUTES, "the case changes the file");
        let path = routes_file(&text);
        // The shape error names the element's line; the sidecar-event error
        // names the route's `[[route]]` line, just above its event_type.
        let line = if needle == "payload.request_id" {
            line_of(&text, "event_type = \"typing_stop\"") - 1
        } else {
            line_of(&text, needle)
        };
        let (code, stderr) = Sidecar::refused(&[("SIDECAR_ROUTES", path.clone())]).await;
        assert_eq!(code, Some(64), "{stderr}");
        let expected = format!("SIDECAR_ROUTES: {path}:{line}: {reason}");
        assert!(stderr.contains(&expected), "expected {expected:?} in {stderr:?}");
    }
}
