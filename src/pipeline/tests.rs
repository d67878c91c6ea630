//! The pipeline in process: inputs injected, frames read from outboxes
//! registered in fan-out, outcomes read from each input's `Ack`. Time is
//! the pipeline's own `Instant`s, passed to `fire` (its timers run on the
//! system clock, which tokio's paused time does not move).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::codec::{HubMessage, Protocol, RECORD_SEPARATOR};
use crate::config::RouteTable;
use crate::fanout::{ConnEntry, Limits, Outbox};

const CHAT: usize = 0;
const NOTIFICATION: usize = 2;

fn shipped() -> Arc<RouteTable> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/routes.toml");
    Arc::new(RouteTable::load(&path).expect("the shipped routing file loads"))
}

fn delivery() -> DeliveryConfig {
    DeliveryConfig {
        ingest_queue_capacity: 64,
        max_event_age: Duration::from_secs(300),
        max_clock_skew: Duration::from_secs(5),
        dedupe_window: Duration::from_secs(300),
        dedupe_max_entries: 1000,
        max_groups_per_connection: 100,
        coalesce_window: Duration::from_millis(100),
        typing_timeout: Duration::from_secs(5),
        batch_window: Duration::from_millis(500),
        roster_window: Duration::from_millis(500),
    }
}

struct Rig {
    pipeline: Pipeline,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    next_conn: u64,
}

fn rig() -> Rig {
    rig_on(shipped(), delivery())
}

fn rig_on(routes: Arc<RouteTable>, config: DeliveryConfig) -> Rig {
    let registry = Arc::new(Registry::new(routes.hubs.len(), 100));
    let metrics = Arc::new(Metrics::new());
    let pipeline = Pipeline::new(routes, registry.clone(), metrics.clone(), &config);
    Rig { pipeline, registry, metrics, next_conn: 1 }
}

impl Rig {
    /// A JSON connection of `hub` in `groups`, as `user`.
    fn conn(&mut self, hub: usize, user: Option<&str>, groups: &[&str]) -> Arc<Outbox> {
        self.conn_in(hub, user, groups, Protocol::Json)
    }

    fn conn_in(&mut self, hub: usize, user: Option<&str>, groups: &[&str], protocol: Protocol) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox::new(Limits { max_frames: 100, max_bytes: 1 << 20 }));
        let entry = Arc::new(ConnEntry {
            outbox: outbox.clone(),
            slot: protocol.slot(),
            ..ConnEntry::for_test(self.next_conn, hub, user, 16)
        });
        self.next_conn += 1;
        let groups: Vec<Box<str>> = groups.iter().map(|g| Box::from(*g)).collect();
        self.registry.add_with_groups(entry, &groups);
        outbox
    }

    /// Processes `envelope` from `events:chat`; returns its outcome.
    fn process(&mut self, envelope: Envelope) -> Outcome {
        self.process_at(envelope, None)
    }

    /// Processes `envelope` as if read from `events:chat` at `entry_id`.
    fn process_at(&mut self, envelope: Envelope, entry_id: Option<&str>) -> Outcome {
        let (ack, outcome) = recorded();
        let source: Arc<str> = Arc::from("events:chat");
        let at = entry_id.map(|id| (source.clone(), id.to_string()));
        self.pipeline.process_decoded(envelope, ack, &source, at, Instant::now());
        let outcome = outcome.lock().expect("lock").take();
        outcome.expect("every processed event is resolved")
    }

    fn metric(&self, family: &str, label: &str) -> Option<String> {
        self.metrics.render().lines().find(|l| l.starts_with(family) && l.contains(label)).map(str::to_string)
    }
}

/// An ack that keeps its outcome.
fn recorded() -> (Ack, Arc<Mutex<Option<Outcome>>>) {
    let outcome = Arc::new(Mutex::new(None));
    let slot = outcome.clone();
    (Ack::new(move |o| *slot.lock().expect("lock") = Some(o)), outcome)
}

/// `envelope` as the in-process bus hands it over.
fn input(envelope: Envelope) -> (Input, Arc<Mutex<Option<Outcome>>>) {
    let (ack, outcome) = recorded();
    let event = Event { envelope, ack, source: Arc::from("events:chat"), received: Instant::now() };
    (Input::Event(event), outcome)
}

fn event(event_type: &str, room: &str, payload: Value) -> Envelope {
    Envelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: event_type.into(),
        timestamp: Utc::now(),
        room_id: room.into(),
        payload: payload.as_object().cloned().expect("an object").into(),
        metadata: None,
    }
}

fn typing(on: bool) -> Envelope {
    let kind = if on { "typing_start" } else { "typing_stop" };
    event(kind, "r1", json!({"user_id": "u1", "username": "Ann", "is_typing": on}))
}

/// Every JSON invocation queued, as (target, arguments).
fn calls(outbox: &Outbox) -> Vec<(String, Vec<Value>)> {
    let batch = outbox.take(usize::MAX);
    batch
        .frames
        .iter()
        .flat_map(|p| p.as_bytes().split(|b| *b == RECORD_SEPARATOR).filter(|r| !r.is_empty()).map(<[u8]>::to_vec))
        .map(|r| match Protocol::Json.decode(&r).expect("valid JSON") {
            HubMessage::Invocation(inv) => (inv.target, inv.arguments),
            other => panic!("not an invocation: {other:?}"),
        })
        .collect()
}

fn targets(outbox: &Outbox) -> Vec<String> {
    calls(outbox).into_iter().map(|(t, _)| t).collect()
}

// --- routing ---

#[test]
fn a_routed_event_reaches_its_group_and_is_acknowledged_as_delivered() {
    let mut r = rig();
    let member = r.conn(CHAT, None, &["r1"]);
    let other = r.conn(CHAT, None, &["r2"]);
    let outcome = r.process(event("chat_message", "r1", json!({"text": "hi"})));
    assert_eq!(outcome, Outcome::Delivered);
    assert_eq!(calls(&member), [("ReceiveMessage".to_string(), vec![json!({"text": "hi"})])]);
    assert!(other.is_empty());
    assert!(r.metric("sidecar_events_delivered", "").is_some_and(|l| l.ends_with(" 1")));
    assert!(r.metric("sidecar_events_consumed", "event_type=\"chat_message\"").is_some());
}

#[test]
fn room_ids_name_a_group_a_user_or_the_whole_hub() {
    let mut r = rig();
    let ann = r.conn(NOTIFICATION, Some("u1"), &[]);
    let ann_tab = r.conn(NOTIFICATION, Some("u1"), &[]);
    let bob = r.conn(NOTIFICATION, Some("u2"), &[]);
    let chat = r.conn(CHAT, Some("u1"), &[]);
    assert_eq!(r.process(event("notification", "user:u1", json!({"n": 1}))), Outcome::Delivered);
    assert_eq!(
        (targets(&ann), targets(&ann_tab)),
        (vec!["ReceiveNotification".into()], vec!["ReceiveNotification".into()])
    );
    assert!(bob.is_empty() && chat.is_empty(), "another user, and the same user on another hub");
    r.process(event("notification", "*", json!({"n": 2})));
    assert_eq!(
        [ann.len(), ann_tab.len(), bob.len(), chat.len()],
        [1, 1, 1, 0],
        "* is every connection of the route's hub"
    );
}

#[test]
fn an_event_nobody_listens_to_is_still_delivered() {
    let mut r = rig();
    assert_eq!(r.process(event("chat_message", "empty-room", json!({}))), Outcome::Delivered);
}

#[test]
fn messagepack_connections_get_the_same_call_in_binary() {
    let mut r = rig();
    let json_conn = r.conn(CHAT, None, &["r1"]);
    let binary = r.conn_in(CHAT, None, &["r1"], Protocol::MessagePack);
    r.process(event("chat_message", "r1", json!({"text": "hi"})));
    assert_eq!(targets(&json_conn), ["ReceiveMessage"]);
    let frames = binary.take(10).frames;
    let [p] = &frames[..] else { panic!("one frame: {frames:?}") };
    assert!(p.is_binary());
    let b = p.as_bytes();
    match Protocol::MessagePack.decode(&b[1..]).expect("msgpack") {
        HubMessage::Invocation(inv) => {
            assert_eq!((inv.target.as_str(), inv.arguments), ("ReceiveMessage", vec![json!({"text": "hi"})]))
        }
        other => panic!("not an invocation: {other:?}"),
    }
}

#[test]
fn an_event_without_a_route_is_invalid() {
    let mut r = rig();
    let member = r.conn(CHAT, None, &["r1"]);
    assert_eq!(r.process(event("nope", "r1", json!({}))), Outcome::Invalid("no route for event_type 'nope'".into()));
    assert!(member.is_empty());
    assert!(r.metric("sidecar_events_dropped", "reason=\"no_route\"").is_some());
    assert!(r.metric("sidecar_events_consumed", "event_type=\"unrouted\"").is_some(), "no label from the publisher");
}

#[test]
fn a_stale_event_is_dropped_and_a_future_one_delivered() {
    let mut r = rig();
    let member = r.conn(CHAT, None, &["r1"]);
    let stale =
        Envelope { timestamp: Utc::now() - chrono::Duration::seconds(301), ..event("chat_message", "r1", json!({})) };
    assert_eq!(r.process(stale), Outcome::Dropped("stale"));
    assert!(member.is_empty());
    let ahead =
        Envelope { timestamp: Utc::now() + chrono::Duration::hours(1), ..event("chat_message", "r1", json!({})) };
    assert_eq!(r.process(ahead), Outcome::Delivered, "a clock ahead of ours counts as now");
    assert_eq!(member.len(), 1);
}

#[test]
fn a_duplicate_event_id_is_dropped() {
    let mut r = rig();
    let member = r.conn(CHAT, None, &["r1"]);
    let e = event("chat_message", "r1", json!({"text": "once"}));
    assert_eq!(r.process(e.clone()), Outcome::Delivered);
    assert_eq!(r.process(e.clone()), Outcome::Dropped("duplicate"));
    assert_eq!(r.process(Envelope { room_id: "r2".into(), ..e }), Outcome::Dropped("duplicate"), "the id is the key");
    assert_eq!(member.len(), 1);
}

// --- route arguments ---

const SHAPED: &str = r#"
[[hub]]
name = "a"
path = "/a"

[[route]]
event_type = "said"
hub = "a"
method = "Said"
stream = "events:a"
delivery = "immediate"
arguments = ["room_id", "payload.sender.name", "metadata.trace", "event_type"]

[[route]]
event_type = "moved"
hub = "a"
method = "Moved"
stream = "events:a"
delivery = "coalesce"
arguments = ["payload.position", "metadata.coalesced_count"]
"#;

fn shaped() -> Rig {
    rig_on(Arc::new(RouteTable::parse("shaped.toml", SHAPED).expect("valid routes")), delivery())
}

#[test]
fn route_arguments_shape_the_call() {
    let mut r = shaped();
    let member = r.conn(0, None, &["r1"]);
    r.process(event("said", "r1", json!({"sender": {"name": "Ann"}, "text": "hi"})));
    assert_eq!(calls(&member), [("Said".to_string(), vec![json!("r1"), json!("Ann"), Value::Null, json!("said")])]);
    let mut traced = event("said", "r1", json!({"sender": {"name": "Bob"}}));
    traced.metadata = Some(json!({"trace": "t-1"}).as_object().cloned().expect("map"));
    r.process(traced);
    assert_eq!(calls(&member)[0].1[2], json!("t-1"));
}

#[test]
fn an_event_without_a_named_argument_is_invalid() {
    let mut r = shaped();
    let member = r.conn(0, None, &["r1"]);
    let outcome = r.process(event("said", "r1", json!({"sender": {}})));
    assert_eq!(
        outcome,
        Outcome::Invalid("route 'said': payload has no field 'sender.name' (argument 2 of the route)".into())
    );
    assert!(member.is_empty());
    assert!(r.metric("sidecar_events_dropped", "reason=\"missing_argument\"").is_some());
}

#[test]
fn a_trailing_edge_says_how_many_events_it_stands_for() {
    let mut r = shaped();
    let member = r.conn(0, None, &["r1"]);
    let t0 = Instant::now();
    let moved = |p: i64| event("moved", "r1", json!({"user_id": "u1", "position": p}));
    assert_eq!(r.process(moved(1)), Outcome::Delivered);
    assert_eq!(r.process(moved(2)), Outcome::Dropped("coalesced"));
    assert_eq!(r.process(moved(3)), Outcome::Dropped("coalesced"));
    assert_eq!(calls(&member), [("Moved".to_string(), vec![json!(1), Value::Null])]);
    r.pipeline.fire(t0 + Duration::from_millis(150));
    assert_eq!(calls(&member), [("Moved".to_string(), vec![json!(3), json!(2)])]);
}

// --- typing and coalescing ---

#[test]
fn typing_is_coalesced_within_the_window() {
    let mut r = rig();
    let member = r.conn(CHAT, None, &["r1"]);
    let t0 = Instant::now();
    assert_eq!(r.process(typing(true)), Outcome::Delivered, "leading edge");
    assert_eq!(r.process(typing(true)), Outcome::Dropped("coalesced"));
    assert_eq!(r.process(typing(false)), Outcome::Dropped("coalesced"));
    let first = calls(&member);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1[0]["is_typing"], json!(true));
    r.pipeline.fire(t0 + Duration::from_millis(50));
    assert!(member.is_empty(), "the window is still open");
    r.pipeline.fire(t0 + Duration::from_millis(150));
    let trailing = calls(&member);
    assert_eq!(trailing.len(), 1, "the latest state at the trailing edge");
    assert_eq!((trailing[0].0.as_str(), trailing[0].1[0]["is_typing"].clone()), ("UserTyping", json!(false)));
    // Three offered, two frames: the held start was merged into the stop.
    assert!(
        r.metric("sidecar_events_coalesced", "").is_some_and(|l| l.ends_with(" 1")),
        "{:?}",
        r.metric("sidecar_events_coalesced", "")
    );
}

#[test]
fn each_event_a_window_absorbs_is_counted_once() {
    // N keystrokes of one state: the first goes out, the other N - 1 are
    // the state already sent, dropped when the window closes.
    for n in [2u64, 3, 5, 10] {
        let mut r = rig();
        let member = r.conn(CHAT, None, &["r1"]);
        let t0 = Instant::now();
        for _ in 0..n {
            r.process(typing(true));
        }
        r.pipeline.fire(t0 + Duration::from_millis(150));
        assert_eq!(calls(&member).len(), 1, "one frame");
        let counted = r.metric("sidecar_events_coalesced", "");
        assert!(counted.as_deref().is_some_and(|l| l.ends_with(&format!(" {}", n - 1))), "{n}: {counted:?}");
    }
}

#[test]
fn a_typing_frame_may_be_dropped_by_a_full_outbox() {
    let mut r = rig();
    let member = r.conn(CHAT, None, &["r1"]);
    r.process(typing(true));
    let batch = member.take(10);
    assert_eq!(batch.frames.len(), 1);
    // Coalescable routes are droppable: a full queue gives them up first.
    for _ in 0..100 {
        member.push_critical(crate::fanout::Payload::text("x".into())).expect("room");
    }
    r.process(event("typing_stop", "r1", json!({"user_id": "u2", "username": "Bob", "is_typing": false})));
    assert!(!member.is_closed(), "a dropped typing frame does not kick the connection");
    assert!(r.metric("sidecar_events_dropped", "reason=\"outbox_full\"").is_some_and(|l| l.ends_with(" 1")));
}

#[test]
fn a_quiet_typist_gets_a_server_stop_after_the_timeout() {
    let mut r = rig();
    let member = r.conn(CHAT, None, &["r1"]);
    let t0 = Instant::now();
    r.process(typing(true));
    calls(&member);
    r.pipeline.fire(t0 + Duration::from_millis(4_900));
    assert!(member.is_empty());
    r.pipeline.fire(t0 + Duration::from_millis(5_100));
    let stop = calls(&member);
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0].0, "UserTyping");
    assert_eq!(stop[0].1[0], json!({"user_id": "u1", "username": "Ann", "is_typing": false}));
    r.pipeline.fire(t0 + Duration::from_secs(60));
    assert!(member.is_empty(), "one stop only");
}

#[test]
fn a_typist_who_stops_needs_no_server_stop() {
    let mut r = rig();
    let member = r.conn(CHAT, None, &["r1"]);
    let t0 = Instant::now();
    r.process(typing(true));
    r.process(typing(false));
    r.pipeline.fire(t0 + Duration::from_millis(150));
    let states: Vec<Value> = calls(&member).into_iter().map(|(_, a)| a[0]["is_typing"].clone()).collect();
    assert_eq!(states, [json!(true), json!(false)]);
    r.pipeline.fire(t0 + Duration::from_secs(10));
    assert!(member.is_empty(), "the client's stop cleared the typist");
}

#[test]
fn a_message_from_a_typist_sends_the_stop_at_once() {
    let mut r = rig();
    let member = r.conn(CHAT, None, &["r1"]);
    let t0 = Instant::now();
    r.process(typing(true));
    calls(&member);
    assert_eq!(r.process(event("chat_message", "r1", json!({"sender_id": "u1", "text": "hi"}))), Outcome::Delivered);
    let out = calls(&member);
    assert_eq!(out.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["ReceiveMessage", "UserTyping"]);
    assert_eq!(out[1].1[0]["is_typing"], json!(false));
    r.pipeline.fire(t0 + Duration::from_secs(10));
    assert!(member.is_empty(), "no second stop at the timeout");
    // A message from someone who was not typing sends no stop.
    r.process(event("chat_message", "r1", json!({"sender_id": "u9", "text": "yo"})));
    assert_eq!(targets(&member), ["ReceiveMessage"]);
}

#[test]
fn a_typists_stop_in_another_room_is_not_sent() {
    let mut r = rig();
    let member = r.conn(CHAT, None, &["r1", "r2"]);
    r.process(typing(true));
    calls(&member);
    r.process(event("chat_message", "r2", json!({"sender_id": "u1", "text": "elsewhere"})));
    assert_eq!(targets(&member), ["ReceiveMessage"], "typing is per room");
}

// --- positions ---

#[test]
fn the_fan_out_position_moves_with_every_entry() {
    let mut r = rig();
    let at = |r: &Rig| r.registry.positions();
    let member = r.conn(CHAT, None, &["r1"]);
    assert!(at(&r).is_empty());
    r.process_at(event("chat_message", "r1", json!({})), Some("1-1"));
    assert_eq!(at(&r), [(Arc::from("events:chat"), "1-1".to_string())]);
    assert_eq!(member.len(), 1);
    r.process_at(event("nope", "r1", json!({})), Some("1-2"));
    assert_eq!(at(&r)[0].1, "1-2", "an invalid entry moves it too");
    r.process_at(event("chat_message", "nobody-here", json!({})), Some("1-3"));
    assert_eq!(at(&r)[0].1, "1-3", "delivered to no one");
    r.process_at(typing(true), Some("1-4"));
    r.process_at(typing(true), Some("1-5"));
    assert_eq!(at(&r)[0].1, "1-5", "held by coalescing");
    let stale =
        Envelope { timestamp: Utc::now() - chrono::Duration::hours(1), ..event("chat_message", "r1", json!({})) };
    r.process_at(stale, Some("1-6"));
    assert_eq!(at(&r)[0].1, "1-6", "stale");
    r.process(event("chat_message", "r1", json!({})));
    assert_eq!(at(&r)[0].1, "1-6", "an event from no stream entry leaves it");
}

// --- the task ---

#[tokio::test]
async fn the_run_loop_closes_windows_on_its_own_timer() {
    let config = DeliveryConfig { coalesce_window: Duration::from_millis(20), ..delivery() };
    let mut r = rig_on(shipped(), config);
    let member = r.conn(CHAT, None, &["r1"]);
    let (tx, rx) = channel(8);
    let stop = CancellationToken::new();
    let task = tokio::spawn(r.pipeline.run(rx, stop.clone()));
    for on in [true, false] {
        tx.send(input(typing(on)).0).await.expect("running");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while member.len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let states: Vec<Value> = calls(&member).into_iter().map(|(_, a)| a[0]["is_typing"].clone()).collect();
    assert_eq!(states, [json!(true), json!(false)], "the trailing stop went out without another event");
    stop.cancel();
    task.await.expect("the pipeline stops");
}

#[tokio::test]
async fn a_stopped_pipeline_still_delivers_what_was_queued() {
    let mut r = rig();
    let member = r.conn(CHAT, None, &["r1"]);
    let (tx, rx) = channel(8);
    let mut outcomes = Vec::new();
    for n in 0..3 {
        let (i, o) = input(event("chat_message", "r1", json!({"n": n})));
        tx.send(i).await.expect("room");
        outcomes.push(o);
    }
    let stop = CancellationToken::new();
    stop.cancel();
    r.pipeline.run(rx, stop).await;
    assert_eq!(member.len(), 3);
    assert!(outcomes.iter().all(|o| *o.lock().expect("lock") == Some(Outcome::Delivered)));
    assert!(tx.send(input(event("chat_message", "r1", json!({}))).0).await.is_err(), "closed to new events");
}

#[tokio::test]
async fn the_pipeline_ends_when_every_sender_is_gone() {
    let r = rig();
    let (tx, rx) = channel(1);
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), r.pipeline.run(rx, CancellationToken::new()))
        .await
        .expect("returns at once");
}

#[test]
fn an_ack_nobody_listens_to_resolves_quietly() {
    Ack::none().resolve(Outcome::Delivered);
    assert_eq!(format!("{:?}", Ack::none()), "Ack(none)");
    assert_eq!(format!("{:?}", Ack::new(|_| {})), "Ack(pending)");
}

#[test]
fn an_ack_reports_once_and_a_dropped_one_reports_unsettled() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = |seen: &Arc<Mutex<Vec<Outcome>>>| {
        let seen = seen.clone();
        Ack::new(move |o| seen.lock().expect("lock").push(o))
    };
    record(&seen).resolve(Outcome::Delivered);
    drop(record(&seen));
    assert_eq!(*seen.lock().expect("lock"), [Outcome::Delivered, Outcome::Unsettled]);
}

mod lost;
mod skip;
