//! Events appended to Redis Streams reach the official SignalR client over
//! WebSockets: both encodings, groups, order, dead letters, restarts, and
//! two instances on one Redis.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::http::request;
use support::raw::RawWs;
use support::*;

async fn setup() -> (Redis, Sidecar, Driver) {
    let redis = Redis::start().await;
    let sidecar = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url())]).await;
    (redis, sidecar, Driver::start().await)
}

async fn join(d: &mut Driver, name: &str, url: &str, room: &str) {
    d.connect(name, url, &["ReceiveMessage", "UserTyping"], json!({})).await.expect("connects");
    assert_eq!(d.invoke(name, "JoinRoom", json!([room])).await, Ok(Value::Null));
}

/// The XPENDING summary of `events:chat` for `group`, polled every 50 ms
/// (at most `tries` times) until nothing is pending: the acker settles in
/// batches a few milliseconds after delivery (ingest/acker.rs).
async fn pending_once_settled(conn: &mut redis::Connection, group: &str, tries: usize) -> Vec<redis::Value> {
    let mut items = Vec::new();
    for _ in 0..tries {
        let summary: redis::Value = redis::cmd("XPENDING").arg("events:chat").arg(group).query(conn).expect("XPENDING");
        let redis::Value::Array(now) = summary else { panic!("XPENDING summary: {summary:?}") };
        items = now;
        if items.first() == Some(&redis::Value::Int(0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    items
}

#[tokio::test]
async fn both_stream_encodings_reach_a_room_member_and_nobody_else() {
    let (redis, sidecar, mut d) = setup().await;
    let chat = sidecar.hub("/hubs/chat");
    join(&mut d, "member", &chat, "room-1").await;
    join(&mut d, "other", &chat, "room-2").await;

    let flat = envelope("chat_message", "room-1", chat_payload("room-1", 1));
    redis.xadd_flat("events:chat", &flat);
    let got = d.message("member", "ReceiveMessage", WAIT).await.expect("flat entry delivered");
    assert_eq!(got["args"], json!([flat["payload"]]));

    let data = envelope("chat_message", "room-1", chat_payload("room-1", 2));
    redis.xadd_data("events:chat", &data);
    let got = d.message("member", "ReceiveMessage", WAIT).await.expect("data entry delivered");
    assert_eq!(got["args"], json!([data["payload"]]));

    assert!(
        d.message("other", "ReceiveMessage", Duration::from_millis(300)).await.is_none(),
        "a non-member receives nothing"
    );
}

#[tokio::test]
async fn leaving_a_room_stops_delivery() {
    let (redis, sidecar, mut d) = setup().await;
    join(&mut d, "a", &sidecar.hub("/hubs/chat"), "r").await;
    redis.xadd_flat("events:chat", &envelope("chat_message", "r", chat_payload("r", 1)));
    d.message("a", "ReceiveMessage", WAIT).await.expect("delivered while a member");
    assert_eq!(d.invoke("a", "LeaveRoom", json!(["r"])).await, Ok(Value::Null));
    redis.xadd_flat("events:chat", &envelope("chat_message", "r", chat_payload("r", 2)));
    assert!(d.message("a", "ReceiveMessage", Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn a_thousand_events_arrive_in_order_none_lost_or_doubled() {
    let (redis, sidecar, mut d) = setup().await;
    join(&mut d, "a", &sidecar.hub("/hubs/chat"), "r").await;
    let mut conn = redis.conn();
    let mut pipe = redis::pipe();
    for n in 0..1000u64 {
        let env = envelope("chat_message", "r", chat_payload("r", n));
        pipe.cmd("XADD").arg("events:chat").arg("*").arg("data").arg(env.to_string()).ignore();
    }
    let () = pipe.query(&mut conn).expect("XADD x1000");
    let mut seen = Vec::new();
    while seen.len() < 1000 {
        let m = d
            .message("a", "ReceiveMessage", WAIT)
            .await
            .unwrap_or_else(|| panic!("only {} of 1000 arrived", seen.len()));
        seen.push(m["args"][0]["sequence_number"].as_u64().expect("sequence number"));
    }
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    assert!(d.message("a", "ReceiveMessage", Duration::from_millis(300)).await.is_none(), "nothing doubled");
}

#[tokio::test]
async fn an_invalid_entry_is_dead_lettered_and_the_next_one_still_arrives() {
    let (redis, sidecar, mut d) = setup().await;
    join(&mut d, "a", &sidecar.hub("/hubs/chat"), "r").await;
    redis.xadd(
        "events:chat",
        &[("event_type", "chat_message".into()), ("room_id", "r".into()), ("payload", "{not json".into())],
    );
    let mut missing_field = envelope("chat_message", "r", chat_payload("r", 0));
    missing_field["payload"].as_object_mut().expect("object").remove("content");
    redis.xadd_flat("events:chat", &missing_field);
    redis.xadd("events:chat", &[("garbage", "x".into())]);
    redis.xadd_flat("events:chat", &envelope("no_such_type", "r", json!({})));
    let good = envelope("chat_message", "r", chat_payload("r", 7));
    redis.xadd_flat("events:chat", &good);
    let got = d.message("a", "ReceiveMessage", WAIT).await.expect("the valid entry arrives");
    assert_eq!(got["args"][0], good["payload"]);

    let mut conn = redis.conn();
    let mut dead: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for _ in 0..100 {
        let reply: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg("events:chat:dead").arg("-").arg("+").query(&mut conn).expect("XRANGE");
        dead = reply
            .ids
            .into_iter()
            .map(|e| {
                let fields = e
                    .map
                    .iter()
                    .map(|(k, v)| (k.clone(), redis::from_redis_value_ref::<String>(v).expect("text")))
                    .collect();
                (e.id, fields)
            })
            .collect();
        if dead.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 4, "every invalid entry is dead-lettered: {dead:?}");
    let field = |i: usize, k: &str| dead[i].1.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert!(field(0, "reason").expect("reason").contains("payload"), "{dead:?}");
    assert_eq!(field(0, "payload").as_deref(), Some("{not json"), "original fields are kept");
    assert!(field(1, "reason").expect("reason").contains("content"), "{dead:?}");
    assert_eq!(field(2, "garbage").as_deref(), Some("x"));
    assert_eq!(field(3, "reason").as_deref(), Some("no route for event_type 'no_such_type'"));
    assert_eq!(field(3, "event_type").as_deref(), Some("no_such_type"), "settled in the pipeline, fields kept too");
    // The acker writes a batch's dead letters, then acknowledges them: wait
    // for the acknowledgements rather than race them.
    let group = format!("signalr-sidecar:test-{}", sidecar.port);
    let items = pending_once_settled(&mut conn, &group, 100).await;
    assert_eq!(items.first(), Some(&redis::Value::Int(0)), "every entry acknowledged: {items:?}");
}

/// CONTRACT section 14: a connection is owed events from its join on. A
/// restarted instance that keeps its name starts its group afresh: what was
/// appended while it was down went to the clients connected elsewhere, and
/// delivering it now would be a duplicate for them.
#[tokio::test]
async fn a_restart_with_the_same_name_does_not_replay_the_backlog() {
    let redis = Redis::start().await;
    let (port, admin) = (free_port(), free_port());
    let env = [("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_INSTANCE_ID", "restart-test".to_string())];
    let mut sidecar = Sidecar::start_on(port, admin, &env).await;
    let mut d = Driver::start().await;
    join(&mut d, "a", &sidecar.hub("/hubs/chat"), "r").await;
    redis.xadd_flat("events:chat", &envelope("chat_message", "r", chat_payload("r", 0)));
    d.message("a", "ReceiveMessage", WAIT).await.expect("delivered before the restart");

    assert_eq!(sidecar.stop().await, Some(0), "SIGTERM exits cleanly");
    d.wait_for(WAIT, |v| v["event"] == "close" && v["name"] == "a").await.expect("the client sees the close");
    for n in 1..=20 {
        redis.xadd_flat("events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
    }
    let sidecar = Sidecar::start_on(port, admin, &env).await;
    join(&mut d, "b", &sidecar.hub("/hubs/chat"), "r").await;
    redis.xadd_flat("events:chat", &envelope("chat_message", "r", chat_payload("r", 21)));
    let m = d.message("b", "ReceiveMessage", WAIT).await.expect("the event after the join");
    assert_eq!(m["args"][0]["sequence_number"], 21, "the backlog of the old process is not replayed");
    // Acknowledgements go in batches a few milliseconds after delivery
    // (ingest/acker.rs): a second is plenty; a backlog left pending would
    // never reach zero.
    let items = pending_once_settled(&mut redis.conn(), "signalr-sidecar:restart-test", 20).await;
    assert_eq!(items.first(), Some(&redis::Value::Int(0)), "nothing left pending: {items:?}");
}

#[tokio::test]
async fn two_instances_on_one_redis_each_deliver_every_event_to_their_own_clients() {
    let redis = Redis::start().await;
    let a = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url())]).await;
    let b = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url())]).await;
    let mut d = Driver::start().await;
    join(&mut d, "on-a", &a.hub("/hubs/chat"), "r").await;
    join(&mut d, "on-b", &b.hub("/hubs/chat"), "r").await;
    for n in 0..50 {
        redis.xadd_flat("events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
    }
    for name in ["on-a", "on-b"] {
        for n in 0..50u64 {
            let m = d.message(name, "ReceiveMessage", WAIT).await.unwrap_or_else(|| panic!("{name} missed {n}"));
            assert_eq!(m["args"][0]["sequence_number"], n);
        }
    }
}

#[tokio::test]
async fn user_and_broadcast_targets_on_the_notification_and_ticket_hubs() {
    let (redis, sidecar, mut d) = setup().await;
    d.connect("t", &sidecar.hub("/hubs/ticket"), &["TicketStatusChanged"], json!({})).await.expect("connects");
    assert_eq!(d.invoke("t", "SubscribeTicket", json!(["ticket-9"])).await, Ok(Value::Null));
    let status = json!({"request_id": "ticket-9", "old_status": "open", "new_status": "closed", "changed_by": "u", "changed_at": now()});
    redis.xadd_flat("events:ticket", &envelope("status_change", "ticket-9", status.clone()));
    assert_eq!(d.message("t", "TicketStatusChanged", WAIT).await.expect("delivered")["args"][0], status);

    d.connect("n", &sidecar.hub("/hubs/notification"), &["ReceiveNotification"], json!({})).await.expect("connects");
    let note = json!({"id": "n1", "user_id": "u1", "title": "hi", "message": "all", "created_at": now()});
    redis.xadd_flat("events:notification", &envelope("notification", "*", note.clone()));
    assert_eq!(d.message("n", "ReceiveNotification", WAIT).await.expect("broadcast")["args"][0], note);
    // Without authentication no connection has a user, so `user:` reaches nobody.
    redis.xadd_flat("events:notification", &envelope("notification", "user:u1", note));
    assert!(d.message("n", "ReceiveNotification", Duration::from_millis(300)).await.is_none());
}

/// Adds the ACL user `sidecar` with the password `s3cret`.
fn acl_user(admin: &mut redis::Connection) {
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "sidecar", "on", ">s3cret", "~*", "&*", "+@all"][..])
        .query(admin)
        .expect("ACL SETUSER");
}

/// The reader's own connection speaks the URL's handshake: an ACL user
/// with a password, and a database other than 0 (the default user here
/// has another password, so a reader that skipped AUTH would be refused).
#[tokio::test]
async fn a_url_with_a_user_a_password_and_a_database_is_honoured() {
    let redis = Redis::start().await;
    let mut admin = redis.conn();
    acl_user(&mut admin);
    let () = redis::cmd("CONFIG").arg(&["SET", "requirepass", "other"][..]).query(&mut admin).expect("requirepass");
    let url = format!("redis://sidecar:s3cret@127.0.0.1:{}/3", redis.port);
    let sidecar = Sidecar::start(&[("SIDECAR_REDIS_URL", url.clone())]).await;
    let mut d = Driver::start().await;
    join(&mut d, "a", &sidecar.hub("/hubs/chat"), "r").await;

    let data = envelope("chat_message", "r", chat_payload("r", 1));
    let mut db3 = redis::Client::open(url.as_str()).expect("url").get_connection().expect("connect as sidecar");
    xadd_data_on(&mut db3, "events:chat", &data);
    let got = d.message("a", "ReceiveMessage", WAIT).await.expect("delivered from database 3");
    assert_eq!(got["args"], json!([data["payload"]]));
    let len: usize = redis::cmd("XLEN").arg("events:chat").query(&mut admin).expect("XLEN");
    assert_eq!(len, 0, "database 0 was not written");
}

/// A wrong password is a refusal waiting cannot mend: the start stops,
/// naming the setting, instead of waiting for Redis forever (README,
/// *Operations*). Redis answers it with WRONGPASS, which the redis crate
/// classes as worth a reconnect. The message names the URL without its
/// password: it goes to the logs, and a wrong password is often a nearly
/// right one (or the right one for another user).
#[tokio::test]
async fn a_wrong_password_stops_the_start() {
    let redis = Redis::start().await;
    let mut admin = redis.conn();
    acl_user(&mut admin);
    let secret = "nearly-Right-pw-417";
    for url in [
        format!("redis://sidecar:{secret}@127.0.0.1:{}", redis.port),
        format!("redis://:{secret}@127.0.0.1:{}", redis.port),
    ] {
        let (code, stderr) = Sidecar::refused(&[("SIDECAR_REDIS_URL", url.clone())]).await;
        assert_eq!(code, Some(64), "{url}: still waiting after 10 s, or another exit: {stderr}");
        assert!(stderr.contains("SIDECAR_REDIS_URL"), "{url}: {stderr}");
        assert!(!stderr.contains(secret), "{url}: the password is in the message: {stderr}");
        assert!(stderr.contains(&format!("@127.0.0.1:{}", redis.port)), "{url}: no server named: {stderr}");
    }
}

/// A Redis that wants a password and is given none (the URL lacks it)
/// answers every command NOAUTH: as with a wrong password, the start stops
/// with exit code 64 naming the setting (README, *Settings*), not with a
/// failure of the running service (exit 1, "ensuring the consumer groups").
#[tokio::test]
async fn a_missing_password_stops_the_start_naming_the_setting() {
    let redis = Redis::start().await;
    let mut admin = redis.conn();
    let () = redis::cmd("CONFIG").arg(&["SET", "requirepass", "s3cret"][..]).query(&mut admin).expect("CONFIG SET");
    let (code, stderr) = Sidecar::refused(&[("SIDECAR_REDIS_URL", redis.url())]).await;
    assert_eq!(code, Some(64), "still waiting after 10 s, or another exit: {stderr}");
    assert!(stderr.contains("SIDECAR_REDIS_URL"), "{stderr}");
}

#[tokio::test]
async fn a_read_window_holds_what_follows_an_event_and_never_an_event_after_quiet() {
    let redis = Redis::start().await;
    // Long enough that "at once" (under half of it) and "held" (most of it)
    // stay apart on a loaded machine running the other tests beside this one.
    let window = Duration::from_millis(1000);
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_READ_WINDOW_MS", "1000".into())]).await;
    let mut d = Driver::start().await;
    join(&mut d, "m", &s.hub("/hubs/chat"), "r").await;
    let publish = |n: u64| publish_chat(&redis, n);

    // Nothing read for a while: the reader is blocked in XREADGROUP, so the
    // first event goes out at once.
    tokio::time::sleep(window + Duration::from_millis(200)).await;
    let sent = std::time::Instant::now();
    publish(1);
    assert_eq!(sequence(d.message("m", "ReceiveMessage", WAIT).await.expect("first")), 1);
    assert!(sent.elapsed() < window / 2, "the first event waited {:?}", sent.elapsed());

    // Its read opened the window: what follows waits for it to close, and
    // then comes in one read, in order.
    let sent = std::time::Instant::now();
    publish(2);
    publish(3);
    assert_eq!(sequence(d.message("m", "ReceiveMessage", WAIT).await.expect("second")), 2);
    let held = sent.elapsed();
    assert!(held >= window * 7 / 10 && held < window * 4, "held {held:?} by a window of {window:?}");
    assert_eq!(sequence(d.message("m", "ReceiveMessage", WAIT).await.expect("third")), 3);

    // Quiet longer than the window: at once again.
    tokio::time::sleep(window + Duration::from_millis(200)).await;
    let sent = std::time::Instant::now();
    publish(4);
    assert_eq!(sequence(d.message("m", "ReceiveMessage", WAIT).await.expect("fourth")), 4);
    assert!(sent.elapsed() < window / 2, "an event after quiet waited {:?}", sent.elapsed());
}

#[tokio::test]
async fn a_window_over_a_steady_flow_is_held_in_redis_and_cut_short_when_redis_sleeps_past_it() {
    let redis = Redis::start().await;
    // Redis checks a blocked command's timeout when it wakes: once a second
    // here when idle, so a hold left to Redis alone would run late.
    let mut admin = redis.conn();
    let () = redis::cmd("CONFIG").arg(&["SET", "hz", "1"][..]).query(&mut admin).expect("CONFIG SET hz");
    let window = Duration::from_millis(150);
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_READ_WINDOW_MS", "150".into())]).await;
    let mut d = Driver::start().await;
    join(&mut d, "m", &s.hub("/hubs/chat"), "r").await;
    let publish = |n: u64| publish_chat(&redis, n);

    // One event, then two inside its window: they come in one read, which
    // says events flow faster than one a window.
    publish(1);
    assert_eq!(sequence(d.message("m", "ReceiveMessage", WAIT).await.expect("first")), 1);
    publish(2);
    publish(3);
    assert_eq!(sequence(d.message("m", "ReceiveMessage", WAIT).await.expect("second")), 2);
    assert_eq!(sequence(d.message("m", "ReceiveMessage", WAIT).await.expect("third")), 3);

    // The next read waits in Redis, behind a BLPOP on the group's key.
    let blocked = || -> bool {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut redis.conn()).expect("CLIENT LIST");
        list.lines().any(|l| l.contains("cmd=blpop"))
    };
    let looked = std::time::Instant::now();
    while !blocked() && looked.elapsed() < window / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(blocked(), "no read held in Redis right after a read of two entries");

    // The flow stops: the one event published inside that hold comes when
    // the window ends, or at most a window later (the reader cuts the hold
    // short), not at Redis's next tick up to a second away.
    let sent = std::time::Instant::now();
    publish(4);
    assert_eq!(sequence(d.message("m", "ReceiveMessage", WAIT).await.expect("fourth")), 4);
    let took = sent.elapsed();
    assert!(took < window * 3, "an event held {took:?} by a window of {window:?}");
    // Nothing else is held or lost, and the reader is back to an ordinary
    // blocking read.
    tokio::time::sleep(window * 3).await;
    assert!(!blocked(), "a hold left in Redis after the flow stopped");
    let sent = std::time::Instant::now();
    publish(5);
    assert_eq!(sequence(d.message("m", "ReceiveMessage", WAIT).await.expect("fifth")), 5);
    assert!(sent.elapsed() < window, "an event after quiet waited {:?}", sent.elapsed());
}

/// A Redis user not allowed BLPOP (or CLIENT) still gets every event in
/// order with a read window: the reader holds the window itself instead.
#[tokio::test]
async fn a_window_redis_will_not_hold_is_held_by_the_reader_and_loses_nothing() {
    for denied in ["-blpop", "-client"] {
        let redis = Redis::start().await;
        let () = redis::cmd("ACL")
            .arg(&["SETUSER", "sidecar", "on", ">s3cret", "~*", "&*", "+@all", denied][..])
            .query(&mut redis.conn())
            .expect("ACL SETUSER");
        let url = format!("redis://sidecar:s3cret@127.0.0.1:{}", redis.port);
        let s = Sidecar::start(&[("SIDECAR_REDIS_URL", url), ("SIDECAR_READ_WINDOW_MS", "100".into())]).await;
        let mut d = Driver::start().await;
        join(&mut d, "m", &s.hub("/hubs/chat"), "r").await;
        let publish = |n: u64| publish_chat(&redis, n);
        // Bursts of three: every read after the first brings several
        // entries, so each would be held in Redis if it could.
        for burst in 0..4u64 {
            for n in 1..=3 {
                publish(burst * 3 + n);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        for n in 1..=12 {
            let got = d.message("m", "ReceiveMessage", WAIT).await.unwrap_or_else(|| panic!("{denied}: event {n}"));
            assert_eq!(sequence(got), n, "{denied}: in order");
        }
        assert!(d.message("m", "ReceiveMessage", Duration::from_millis(300)).await.is_none(), "{denied}: none twice");
    }
}

/// Chat message `n` to room `r` on `events:chat`, as the read-window tests publish them.
fn publish_chat(redis: &Redis, n: u64) -> String {
    redis.xadd_data("events:chat", &envelope("chat_message", "r", chat_payload("r", n)))
}

/// The sequence number of a chat message the driver received.
fn sequence(m: Value) -> u64 {
    m["args"][0]["sequence_number"].as_u64().expect("a chat message")
}

#[tokio::test]
async fn a_sidecar_started_before_redis_waits_unready_and_serves_once_redis_answers() {
    // CONTRACT section 8: `/readyz` is 503 while Redis is unreachable; a
    // pod that starts before its Redis must wait, not exit (a crash loop).
    let port = free_port();
    let mut s = Sidecar::launch(&[("SIDECAR_REDIS_URL", format!("redis://127.0.0.1:{port}"))]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !matches!(request(s.admin_port, "GET", "/healthz", &[], b"").await, Ok((200, _))) {
        assert!(s.running(), "the sidecar exited while Redis was unreachable");
        assert!(std::time::Instant::now() < deadline, "/healthz never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = request(s.admin_port, "GET", "/readyz", &[], b"").await.expect("readyz");
    assert_eq!((status, body.trim()), (503, "not ready: starting: waiting for Redis"));
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.is_err(), "no clients before the groups exist");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(s.running(), "still waiting");

    let redis = Redis::start_on(port).await;
    s.wait_ready().await.expect("ready once Redis answers");
    let mut d = Driver::start().await;
    join(&mut d, "a", &s.hub("/hubs/chat"), "r1").await;
    redis.xadd_data("events:chat", &envelope("chat_message", "r1", chat_payload("r1", 1)));
    assert!(d.message("a", "ReceiveMessage", WAIT).await.is_some(), "delivered");
}

#[tokio::test]
async fn readiness_answers_503_through_the_drain() {
    // CONTRACT section 8: `/readyz` answers 503 while draining; the admin
    // port stays up until the process ends (the last metrics, probes).
    let env = [("SIDECAR_DRAIN_WINDOW_SECONDS", "2".to_string())];
    let mut s = Sidecar::start(&env).await;
    // Enough connections that their Closes are spread over the window.
    let mut clients = Vec::new();
    for _ in 0..40 {
        let mut ws = RawWs::connect(s.port, "/hubs/chat").await.expect("connects");
        ws.send("{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
        ws.recv().await.expect("handshake answer");
        clients.push(ws);
    }
    s.terminate();
    let mut answered = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while s.running() && std::time::Instant::now() < deadline {
        if let Ok((status, body)) = request(s.admin_port, "GET", "/readyz", &[], b"").await {
            answered.push((status, body.trim().to_string()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last probe may race the exit: the admin port took the connection
    // and the process ended before reading the request (closed unanswered).
    if answered.last().is_some_and(|(status, _)| *status == 0) {
        answered.pop();
    }
    // The first may have come before the signal was handled.
    let draining = (503, "not ready: draining".to_string());
    let from = answered.iter().position(|a| *a == draining).unwrap_or_else(|| panic!("never draining: {answered:?}"));
    assert!(answered[from..].iter().all(|a| *a == draining), "{answered:?}");
    assert!(answered.len() - from >= 3, "answered through the drain: {answered:?}");
}

#[tokio::test]
async fn every_invalid_entry_is_dead_lettered_once_even_with_nobody_in_its_room() {
    // CONTRACT section 4, with skipping: no instance has a connection in
    // room "empty", so none would decode the entry for delivery; one
    // instance checks what all pass over. Every instance reads every entry,
    // and each that finds one invalid tries to copy it, yet each bad one has
    // one dead letter.
    let redis = Redis::start().await;
    let env = |id: &str| vec![("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_INSTANCE_ID", id.to_string())];
    let (a, b) = (Sidecar::start(&env("dl-a")).await, Sidecar::start(&env("dl-b")).await);
    // Let both elect (a claim tick) before the entries come.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut missing_field = envelope("chat_message", "empty", chat_payload("empty", 0));
    missing_field["payload"].as_object_mut().expect("object").remove("content");
    redis.xadd_flat("events:chat", &missing_field);
    let not_json_id = uuid();
    redis.xadd(
        "events:chat",
        &[
            ("event_id", not_json_id.clone()),
            ("event_type", "chat_message".into()),
            ("timestamp", chrono::Utc::now().to_rfc3339()),
            ("room_id", "empty".into()),
            ("payload", "{not json".into()),
        ],
    );
    redis.xadd("events:chat", &[("garbage", "x".into())]);
    redis.xadd_flat("events:chat", &envelope("chat_message", "empty", chat_payload("empty", 1)));
    let mut conn = redis.conn();
    let dead = |conn: &mut redis::Connection| -> Vec<String> {
        let reply: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg("events:chat:dead").arg("-").arg("+").query(conn).expect("XRANGE");
        reply
            .ids
            .into_iter()
            .map(|e| {
                let field = |k: &str| e.map.get(k).map(|v| redis::from_redis_value_ref::<String>(v).expect("text"));
                field("event_id").or(field("garbage")).unwrap_or_default()
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dead(&mut conn).len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One copy each; written by whichever instance came first, so in no
    // particular order across them.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let want = sorted(vec![missing_field["event_id"].as_str().expect("id").to_string(), not_json_id, "x".into()]);
    assert_eq!(sorted(dead(&mut conn)), want, "one dead letter each");
    // Both instances have settled everything; still one copy each.
    for s in [&a, &b] {
        let port = s.admin_port;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !support::http::request(port, "GET", "/metrics", &[], b"")
            .await
            .map(|(_, m)| {
                m.contains("sidecar_events_consumed_total{stream=\"events:chat\",event_type=\"chat_message\"} 3")
            })
            .unwrap_or(false)
        {
            assert!(std::time::Instant::now() < deadline, "instance on {port} did not read every entry");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sorted(dead(&mut conn)), want, "still one each");
}

#[tokio::test]
async fn an_instance_copies_the_bad_entries_it_decodes_while_the_checking_one_is_gone() {
    // The instance that checks every entry (the smallest id) is killed; the
    // other is not yet elected (its election runs every few seconds), but
    // an invalid entry for a room its client is in, and one with an invalid
    // head, are still dead-lettered: it decoded them.
    let redis = Redis::start().await;
    let env = |id: &str| vec![("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_INSTANCE_ID", id.to_string())];
    let mut a = Sidecar::start(&env("dl-a")).await;
    let b = Sidecar::start(&env("dl-b")).await;
    let mut d = Driver::start().await;
    join(&mut d, "on-b", &b.hub("/hubs/chat"), "watched").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill().await;
    let mut bad = envelope("chat_message", "watched", chat_payload("watched", 0));
    bad["payload"].as_object_mut().expect("object").remove("content");
    redis.xadd_flat("events:chat", &bad);
    redis.xadd("events:chat", &[("garbage", "y".into())]);
    let good = envelope("chat_message", "watched", chat_payload("watched", 1));
    redis.xadd_flat("events:chat", &good);
    let got = d.message("on-b", "ReceiveMessage", WAIT).await.expect("the good one arrives");
    assert_eq!(got["args"][0], good["payload"]);
    dead_letters_reach(&redis, 2, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn each_stream_has_its_checking_instance_when_deployments_share_a_prefix() {
    // Two deployments on one Redis with the default group prefix, reading
    // different streams: "aa" (the smallest id) reads only events:ticket, so
    // events:chat's bad entries nobody watches are checked by "bb".
    let redis = Redis::start().await;
    let _aa = Sidecar::start(&[
        ("SIDECAR_REDIS_URL", redis.url()),
        ("SIDECAR_INSTANCE_ID", "aa".into()),
        ("SIDECAR_STREAMS", "events:ticket".into()),
    ])
    .await;
    let _bb = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_INSTANCE_ID", "bb".into())]).await;
    // Both beat and elect (a claim tick) before the entry comes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut bad = envelope("chat_message", "nobody", chat_payload("nobody", 0));
    bad["payload"].as_object_mut().expect("object").remove("content");
    redis.xadd_flat("events:chat", &bad);
    dead_letters_reach(&redis, 1, Duration::from_secs(5)).await;
}

/// Waits (up to `within`) for `events:chat:dead` to hold `n` entries.
async fn dead_letters_reach(redis: &Redis, n: usize, within: Duration) {
    let mut conn = redis.conn();
    let deadline = std::time::Instant::now() + within;
    loop {
        let len: usize = redis::cmd("XLEN").arg("events:chat:dead").query(&mut conn).expect("XLEN");
        if len == n {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{len} dead letters of {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis comes back empty on a host whose clock is behind the old one's:
/// the new stream's ids are below where delivery stopped. The group
/// recreated at that old position left every new event unread, silently,
/// until the new clock passed it; a lost stream is read from its start
/// (CONTRACT 14: every owed event, or the client knows).
#[tokio::test]
async fn a_stream_lost_with_its_group_is_read_from_its_start_when_it_comes_back() {
    let redis = Redis::start().await;
    let log = std::env::temp_dir().join(format!("sidecar-lost-stream-{}.log", free_port()));
    let s = Sidecar::start_logged(&[("SIDECAR_REDIS_URL", redis.url())], &log).await;
    let mut d = Driver::start().await;
    join(&mut d, "before", &s.hub("/hubs/chat"), "r1").await;
    // An id far ahead of this clock: the old Redis's clock.
    let first = envelope("chat_message", "r1", chat_payload("r1", 1));
    let () = redis::cmd("XADD")
        .arg("events:chat")
        .arg("9999999999999-0")
        .arg("data")
        .arg(first.to_string())
        .query(&mut redis.conn())
        .expect("XADD with an id ahead");
    let m = d.message("before", "ReceiveMessage", WAIT).await.expect("the first event");
    assert_eq!(m["args"][0], first["payload"]);
    // Everything lost, as by a restart without persistence.
    let () = redis::cmd("FLUSHALL").query(&mut redis.conn()).expect("FLUSHALL");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("entries were lost") {
        assert!(tokio::time::Instant::now() < deadline, "the lost stream was not noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    join(&mut d, "after", &s.hub("/hubs/chat"), "r1").await;
    let second = envelope("chat_message", "r1", chat_payload("r1", 2));
    redis.xadd_data("events:chat", &second);
    let m = d.message("after", "ReceiveMessage", WAIT).await.expect("an event of the new stream");
    assert_eq!(m["args"][0], second["payload"]);
    let _ = std::fs::remove_file(log);
}
