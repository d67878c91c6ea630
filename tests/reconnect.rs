//! Coming back: stateful reconnect after a dropped socket, automatic
//! reconnect after a sidecar restart, and the drain on SIGTERM.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn seq(m: &Value) -> u64 {
    m["args"][0]["sequence_number"].as_u64().expect("sequence number")
}

/// A stateful client, through a proxy, gets events 0..20; `drop_socket`
/// ends its socket; 20..60 are published (with a pause), and it must get
/// each of them once, in order, its hub connection never closing. Gives
/// back the sidecar (and what it needs) for further checks.
async fn resumes_exactly_once(drop_socket: fn(&Proxy)) -> (Redis, Sidecar, Driver) {
    let redis = Redis::start().await;
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url())]).await;
    let proxy = Proxy::start(s.port).await;
    let mut d = Driver::start().await;
    let url = format!("{}/hubs/chat", proxy.url());
    d.connect("c", &url, &["ReceiveMessage"], json!({"statefulReconnect": true})).await.expect("connects");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    for n in 0..20 {
        redis.xadd_flat("events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
    }
    for n in 0..20 {
        assert_eq!(seq(&d.message("c", "ReceiveMessage", WAIT).await.expect("before the drop")), n);
    }
    drop_socket(&proxy);
    for n in 20..60 {
        redis.xadd_flat("events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
        if n == 30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut got = Vec::new();
    while got.len() < 40 {
        let m = d.message("c", "ReceiveMessage", WAIT).await.unwrap_or_else(|| panic!("after the drop only {got:?}"));
        got.push(seq(&m));
    }
    assert_eq!(got, (20..60).collect::<Vec<_>>(), "in order, none lost or doubled");
    assert!(d.message("c", "ReceiveMessage", Duration::from_millis(500)).await.is_none(), "nothing doubled");
    assert!(
        d.wait_for(Duration::from_millis(10), |v| v["event"] == "close").await.is_none(),
        "the hub connection never closed"
    );
    assert_eq!(d.invoke("c", "LeaveRoom", json!(["r"])).await, Ok(Value::Null), "invocations work after the resume");
    (redis, s, d)
}

#[tokio::test]
async fn stateful_reconnect_resends_what_was_missed_exactly_once() {
    resumes_exactly_once(Proxy::cut).await;
}

/// The client resumes about a millisecond after its socket dies, often
/// before the server has read the old socket's end; here the server's side
/// stays open and silent, so the resume always comes first. ASP.NET Core
/// cancels the previous transport then; a "connection in use" answer would
/// end the client's connection instead.
#[tokio::test]
async fn a_resume_that_outruns_the_old_sockets_end_takes_the_session_over() {
    let (_redis, s, _d) = resumes_exactly_once(Proxy::cut_clients).await;
    let (_, text) = support::http::request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    assert!(
        text.contains("sidecar_connections{hub=\"chat\",transport=\"websockets\"} 1\n"),
        "one connection, not the old one beside it: {text}"
    );
}

#[tokio::test]
async fn automatic_reconnect_after_a_sidecar_restart() {
    let redis = Redis::start().await;
    let (port, admin) = (free_port(), free_port());
    let env = [("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_INSTANCE_ID", "auto".to_string())];
    let mut s = Sidecar::start_on(port, admin, &env).await;
    let mut d = Driver::start().await;
    d.connect("c", &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({"reconnect": true})).await.expect("connects");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    assert_eq!(s.stop().await, Some(0));
    d.wait_for(WAIT, |v| v["event"] == "reconnecting").await.expect("the client starts reconnecting");
    let s = Sidecar::start_on(port, admin, &env).await;
    d.wait_for(Duration::from_secs(20), |v| v["event"] == "reconnected")
        .await
        .expect("the client comes back by itself");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("re-joins");
    let e = envelope("chat_message", "r", chat_payload("r", 1));
    redis.xadd_flat("events:chat", &e);
    assert_eq!(d.message("c", "ReceiveMessage", WAIT).await.expect("new events arrive")["args"][0], e["payload"]);
    drop(s);
}

#[tokio::test]
async fn sigterm_tells_every_client_to_reconnect_and_exits() {
    let mut s = Sidecar::start(&[("SIDECAR_DRAIN_WINDOW_SECONDS", "1".into())]).await;
    let mut d = Driver::start().await;
    for (name, transport) in [("ws", "WebSockets"), ("sse", "ServerSentEvents"), ("lp", "LongPolling")] {
        d.connect(name, &s.hub("/hubs/chat"), &[], json!({"transport": transport})).await.expect("connects");
    }
    let started = std::time::Instant::now();
    assert_eq!(s.stop().await, Some(0), "exits cleanly");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    for name in ["ws", "sse", "lp"] {
        let close =
            d.wait_for(WAIT, |v| v["event"] == "close" && v["name"] == name).await.expect("every client is closed");
        // A Close without an error (ASP.NET Core's `{"type":7,"allowReconnect":true}`):
        // the client stops without one; a dropped socket would give it an error.
        assert!(close["error"].is_null(), "{name}: {close}");
    }
}

/// The settings of one instance `id` on `redis`, with a 1 s drain window.
fn instance_env(redis: &Redis, id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SIDECAR_REDIS_URL", redis.url()),
        ("SIDECAR_INSTANCE_ID", id.to_string()),
        ("SIDECAR_DRAIN_WINDOW_SECONDS", "1".to_string()),
    ]
}

/// CONTRACT section 14: a stateful session outlives its instance. The
/// instance drains (SIGTERM) while events flow; the client's resume reaches
/// another instance, which takes the session over and delivers every event
/// once, in order, including those published while the client was away.
/// Instances `<name>-a` and `<name>-b` on `redis` (a drain window of 1 s,
/// and `extra`), and a client `c` (`options`) in room `r` through a proxy
/// to `a`.
async fn client_on_a(
    redis: &Redis,
    name: &str,
    extra: &[(&'static str, String)],
    options: Value,
) -> (Sidecar, Sidecar, Proxy, Driver) {
    let env = |id: String| {
        let mut env = instance_env(redis, &id);
        env.extend(extra.iter().cloned());
        env
    };
    let a = Sidecar::start(&env(format!("{name}-a"))).await;
    let b = Sidecar::start(&env(format!("{name}-b"))).await;
    let proxy = Proxy::start(a.port).await;
    let mut d = Driver::start().await;
    let url = format!("{}/hubs/chat", proxy.url());
    d.connect("c", &url, &["ReceiveMessage"], options).await.expect("connects");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    (a, b, proxy, d)
}

/// The client `c` never left Connected: it resumed, it did not reconnect.
async fn assert_still_connected(d: &mut Driver) {
    assert!(
        d.wait_for(Duration::from_millis(10), |v| v["event"] == "close" || v["event"] == "reconnecting")
            .await
            .is_none(),
        "the client stayed Connected: a resume, not a reconnect"
    );
}

/// Publishes 120 chat events to room `r`, 15 ms apart, from a task.
fn publish_120(redis: &Redis) -> tokio::task::JoinHandle<()> {
    let url = redis.url();
    tokio::spawn(async move {
        let mut conn = redis::Client::open(url).expect("url").get_connection().expect("redis");
        for n in 0..120u64 {
            xadd_data_on(&mut conn, "events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    })
}

/// `c` got the 120 events once each, in order, never left Connected, and
/// its session works on `now_on`, which counts one resumed handoff.
async fn all_120_once_and_still_connected(d: &mut Driver, now_on: &Sidecar) {
    let mut got = Vec::new();
    while got.len() < 120 {
        let Some(m) = d.message("c", "ReceiveMessage", WAIT).await else { break };
        got.push(seq(&m));
    }
    assert_eq!(got, (0..120).collect::<Vec<_>>(), "every event once, in order, across the instances");
    assert!(d.message("c", "ReceiveMessage", Duration::from_millis(500)).await.is_none(), "nothing doubled");
    assert_still_connected(d).await;
    assert_eq!(
        d.invoke("c", "LeaveRoom", json!(["r"])).await,
        Ok(Value::Null),
        "the session works on its new instance"
    );
    let (_, metrics) = support::http::request(now_on.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    assert!(metrics.contains("sidecar_session_handoffs_total{outcome=\"resumed\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_stateful_session_resumes_on_another_instance_after_a_drain() {
    resumes_elsewhere_after_a_drain("handoff", json!({"statefulReconnect": true})).await;
}

/// A stateful client (`options`) on instance A while 120 events are
/// published; A drains and its client's next socket reaches B: every event
/// once, in order, never leaving Connected.
async fn resumes_elsewhere_after_a_drain(id: &str, options: Value) {
    let redis = Redis::start().await;
    let (mut a, b, proxy, mut d) = client_on_a(&redis, id, &[], options).await;
    let publisher = publish_120(&redis);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.retarget(b.port);
    assert_eq!(a.stop().await, Some(0), "the drained instance exits cleanly");
    publisher.await.expect("publisher");
    all_120_once_and_still_connected(&mut d, &b).await;
}

/// CONTRACT section 14: after a network drop the client resumes on
/// whichever instance its reconnect reaches. Behind a Service without
/// session affinity that is often another one: it asks for the session,
/// and the instance holding it (parked, or still serving a socket it has
/// not seen die) hands it over with what it missed.
async fn resumes_on_another_instance_after_a_drop(drop_socket: fn(&Proxy)) {
    let redis = Redis::start().await;
    let (a, b, proxy, mut d) = client_on_a(&redis, "drop", &[], json!({"statefulReconnect": true})).await;
    let publisher = publish_120(&redis);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.retarget(b.port);
    drop_socket(&proxy);
    publisher.await.expect("publisher");
    all_120_once_and_still_connected(&mut d, &b).await;
    let (_, metrics) = support::http::request(a.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    assert!(metrics.contains("sidecar_connections{hub=\"chat\",transport=\"websockets\"} 0"), "gone from A: {metrics}");
}

#[tokio::test]
async fn after_a_network_drop_a_stateful_session_resumes_on_another_instance() {
    resumes_on_another_instance_after_a_drop(Proxy::cut).await;
}

#[tokio::test]
async fn a_session_its_instance_still_serves_moves_to_where_its_client_resumed() {
    resumes_on_another_instance_after_a_drop(Proxy::cut_clients).await;
}

/// A taken-over session stays in presence (CONTRACT sections 11, 14, 15):
/// Ann's stateful session on the discussion hub moves from a draining
/// instance to another; Bob, on that other instance, never sees her leave,
/// GetPresence keeps listing her, and the participant count stays 2, also
/// after the drained instance's own entries have expired (a presence TTL
/// of 2 s here, waited past).
#[tokio::test]
async fn a_taken_over_session_stays_present() {
    let redis = Redis::start().await;
    let env = |id: &str| {
        let mut env = jwt_env();
        env.extend([
            ("SIDECAR_REDIS_URL", redis.url()),
            ("SIDECAR_INSTANCE_ID", id.to_string()),
            ("SIDECAR_DRAIN_WINDOW_SECONDS", "1".to_string()),
            ("SIDECAR_PRESENCE_TTL_SECONDS", "2".to_string()),
            ("SIDECAR_ROUTES", "protocol/routes-discussion.toml".to_string()),
            ("SIDECAR_STREAMS", "events:discussion".to_string()),
        ]);
        env
    };
    let mut a = Sidecar::start(&env("presence-a")).await;
    let b = Sidecar::start(&env("presence-b")).await;
    let proxy = Proxy::start(a.port).await;
    let mut d = Driver::start().await;
    let methods = ["ParticipantCount", "UserJoined", "UserLeft"];
    let ann = json!({"statefulReconnect": true, "accessToken": token("ann", "Ann")});
    d.connect("ann", &format!("{}/hubs/discussion", proxy.url()), &methods, ann).await.expect("ann connects");
    d.invoke("ann", "JoinDiscussion", json!(["d-1"])).await.expect("ann joins");
    let bob = json!({"accessToken": token("bob", "Bob")});
    d.connect("bob", &b.hub("/hubs/discussion"), &methods, bob).await.expect("bob connects");
    d.invoke("bob", "JoinDiscussion", json!(["d-1"])).await.expect("bob joins");
    let two = json!({"room_id": "d-1", "count": 2, "online": 2, "away": 0});
    let counted = |v: &Value| v["name"] == "bob" && v["method"] == "ParticipantCount" && v["args"][1] == two;
    d.wait_for(WAIT, counted).await.expect("Bob sees two participants before the drain");
    d.drain_messages("bob", Duration::from_millis(300)).await; // the joins' UserJoined

    proxy.retarget(b.port);
    assert_eq!(a.stop().await, Some(0), "the drained instance exits cleanly");
    let users = |p: &Value| {
        let mut u: Vec<String> = p["users"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["user_id"].as_str().map(String::from))
            .collect();
        u.sort();
        u
    };
    // Past the drained instance's exit plus its entries' TTL (2 s) and a
    // sweep: Ann is present through the instance she resumed on.
    let until = std::time::Instant::now() + Duration::from_secs(6);
    let mut seen = Vec::new();
    while std::time::Instant::now() < until {
        let p = d.invoke("bob", "GetPresence", json!(["d-1"])).await.expect("presence");
        assert_eq!(users(&p), ["ann", "bob"], "Ann never leaves presence: {p}");
        seen.extend(d.drain_messages("bob", Duration::from_millis(250)).await);
    }
    let (_, metrics) = support::http::request(b.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    assert!(metrics.contains("sidecar_session_handoffs_total{outcome=\"resumed\"} 1"), "{metrics}");
    assert!(
        !seen.iter().any(|m| m["method"] == "UserLeft" || m["method"] == "UserJoined"),
        "no leave or join for a session that moved: {seen:?}"
    );
    for m in seen.iter().filter(|m| m["method"] == "ParticipantCount") {
        assert_eq!(m["args"][1], two, "every count after the handoff says two: {m}");
    }
    assert_eq!(
        d.invoke("ann", "GetPresence", json!(["d-1"])).await.map(|p| users(&p)),
        Ok(vec!["ann".to_string(), "bob".to_string()]),
        "Ann's session works on its new instance"
    );
}

/// A session that moved to another instance while its old one lives on
/// leaves presence when it ends (CONTRACT section 11: the last connection
/// to leave publishes `user_left`). Ann's stateful session drops on `a`
/// and resumes on `b` (no session affinity: `a` releases it); `a` keeps
/// running. When Ann stops, Bob sees her leave within the presence TTL
/// (2 s) and a sweep, and GetPresence lists him alone: `a` must not keep
/// refreshing the entries of a session it no longer holds, which kept
/// them (and its memory of them) for as long as `a` ran.
#[tokio::test]
async fn a_session_released_to_another_instance_leaves_presence_when_it_ends() {
    let redis = Redis::start().await;
    let env = |id: &str| {
        let mut env = jwt_env();
        env.extend(instance_env(&redis, id));
        env.push(("SIDECAR_PRESENCE_TTL_SECONDS", "2".to_string()));
        env
    };
    let a = Sidecar::start(&env("released-a")).await;
    let b = Sidecar::start(&env("released-b")).await;
    let proxy = Proxy::start(a.port).await;
    let mut d = Driver::start().await;
    let methods = ["UserJoined", "UserLeft"];
    let ann = json!({"statefulReconnect": true, "accessToken": token("ann", "Ann")});
    d.connect("ann", &format!("{}/hubs/chat", proxy.url()), &methods, ann).await.expect("ann connects");
    d.invoke("ann", "JoinRoom", json!(["r"])).await.expect("ann joins");
    let bob = json!({"accessToken": token("bob", "Bob")});
    d.connect("bob", &b.hub("/hubs/chat"), &methods, bob).await.expect("bob connects");
    d.invoke("bob", "JoinRoom", json!(["r"])).await.expect("bob joins");
    d.drain_messages("bob", Duration::from_millis(300)).await;

    proxy.retarget(b.port);
    proxy.cut();
    metric_appears(&b, "sidecar_session_handoffs_total{outcome=\"resumed\"} 1").await;
    assert_still_connected(&mut d).await;
    d.stop("ann").await;
    let left = d
        .wait_for(Duration::from_secs(8), |v| v["name"] == "bob" && v["method"] == "UserLeft")
        .await
        .expect("Bob sees Ann leave once her session ends on the instance it moved to");
    assert_eq!(left["args"][0]["user_id"], "ann", "{left}");
    let p = d.invoke("bob", "GetPresence", json!(["r"])).await.expect("presence");
    assert_eq!(p["count"], 1, "only Bob is left: {p}");
    drop(a);
}

/// Polls `s`'s /metrics until a line contains `needle`.
async fn metric_appears(s: &Sidecar, needle: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, text) = support::http::request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
        if text.contains(needle) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{needle} not in the metrics of :{}: {text}", s.admin_port);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A batch held for a stateful session when its instance drains
/// (`delivery = "batch"`, seed 003 FR-005) reaches it once, on the instance
/// it resumes on. The draining instance `a` holds responses 2 and 3 in a
/// 5 s window; `b`'s window is `b_window_ms`. With a short one, `b` has sent
/// its own copy to nobody before the resume: only `a`'s flush into the
/// snapshot can bring them (the loss this guards against). With a long one,
/// `b` still holds its copy at the takeover: it must not also reach the
/// session live (a duplicate).
async fn a_held_batch_crosses_the_handoff(b_window_ms: u64) {
    let redis = Redis::start().await;
    let env = |id: &str, window: u64| {
        vec![
            ("SIDECAR_REDIS_URL", redis.url()),
            ("SIDECAR_INSTANCE_ID", id.to_string()),
            ("SIDECAR_DRAIN_WINDOW_SECONDS", "1".to_string()),
            ("SIDECAR_BATCH_WINDOW_MS", window.to_string()),
            ("SIDECAR_ROUTES", "protocol/routes-discussion.toml".to_string()),
            ("SIDECAR_STREAMS", "events:discussion".to_string()),
        ]
    };
    let mut a = Sidecar::start(&env("batch-a", 5000)).await;
    let b = Sidecar::start(&env("batch-b", b_window_ms)).await;
    let proxy = Proxy::start(a.port).await;
    let mut d = Driver::start().await;
    let url = format!("{}/hubs/discussion", proxy.url());
    d.connect("c", &url, &["ResponsesPosted"], json!({"statefulReconnect": true})).await.expect("connects");
    d.invoke("c", "JoinDiscussion", json!(["d-1"])).await.expect("joins");
    let response = |n: u64| json!({"response_id": format!("r-{n}"), "author_id": "cid", "content": format!("response {n}"), "created_at": now()});
    let ids = |m: &Value| -> Vec<String> {
        m["args"][1]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["response_id"].as_str().map(String::from))
            .collect()
    };
    redis.xadd_data("events:discussion", &envelope("response_posted", "d-1", response(1)));
    let first = d.message("c", "ResponsesPosted", WAIT).await.expect("the first response at once");
    assert_eq!(ids(&first), ["r-1"]);
    redis.xadd_data("events:discussion", &envelope("response_posted", "d-1", response(2)));
    redis.xadd_data("events:discussion", &envelope("response_posted", "d-1", response(3)));
    let consumed = "sidecar_events_consumed_total{stream=\"events:discussion\",event_type=\"response_posted\"} 3";
    metric_appears(&a, consumed).await;
    metric_appears(&b, consumed).await;
    let published = std::time::Instant::now();
    if b_window_ms < 1000 {
        // Let b's short window end (its batch goes to no member of b).
        tokio::time::sleep(Duration::from_millis(3 * b_window_ms)).await;
    }

    proxy.retarget(b.port);
    assert_eq!(a.stop().await, Some(0), "the drained instance exits cleanly");
    metric_appears(&b, "sidecar_session_handoffs_total{outcome=\"resumed\"} 1").await;
    // Everything, until both windows (5 s, or b's) have surely ended.
    let mut got = ids(&first);
    let until = published + Duration::from_millis(5000.max(b_window_ms) + 1500);
    while std::time::Instant::now() < until {
        if let Some(m) = d.message("c", "ResponsesPosted", Duration::from_millis(200)).await {
            got.extend(ids(&m));
        }
    }
    assert_eq!(got, ["r-1", "r-2", "r-3"], "the held responses once each, in order, across the handoff");
    assert_still_connected(&mut d).await;
}

#[tokio::test]
async fn a_held_batch_is_not_lost_in_a_handoff() {
    a_held_batch_crosses_the_handoff(200).await;
}

#[tokio::test]
async fn a_held_batch_is_not_doubled_in_a_handoff() {
    a_held_batch_crosses_the_handoff(5000).await;
}

/// A publisher's retry (the same `event_id` appended again) in the stretch
/// a taken-over session replays from the stream reaches its client once
/// (CONTRACT section 5), as it reaches the clients of the live path once.
/// Instance `a` drains; the client's resume reaches `b` 3 s later (a slow
/// path), so what was published meanwhile is replayed by `b`'s catch-up.
/// With `live_first`, the first copy reached the client live on `a` before
/// the drain and only the retry falls in the replayed stretch; without, both
/// do. Either way each event arrives once, in order, the client never
/// leaving Connected.
async fn a_retry_in_the_replayed_stretch_arrives_once(live_first: bool) {
    let redis = Redis::start().await;
    let env = |id: &str| instance_env(&redis, id);
    let mut a = Sidecar::start(&env("dup-a")).await;
    let b = Sidecar::start(&env("dup-b")).await;
    let proxy = Proxy::start(a.port).await;
    let mut d = Driver::start().await;
    let url = format!("{}/hubs/chat", proxy.url());
    d.connect("c", &url, &["ReceiveMessage"], json!({"statefulReconnect": true})).await.expect("connects");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    let mut conn = redis.conn();
    for n in 0..5 {
        xadd_data_on(&mut conn, "events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
    }
    // Event 5, which the publisher will send twice.
    let retried = envelope("chat_message", "r", chat_payload("r", 5));
    if live_first {
        xadd_data_on(&mut conn, "events:chat", &retried);
    }
    let until = if live_first { 6 } else { 5 };
    for n in 0..until {
        assert_eq!(d.message("c", "ReceiveMessage", WAIT).await.map(|m| seq(&m)), Some(n), "before the drain");
    }

    proxy.retarget(b.port);
    proxy.delay_new(Duration::from_secs(3));
    let publish = async {
        // After `a` has cut the session (at once on SIGTERM).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut conn = redis.conn();
        if !live_first {
            xadd_data_on(&mut conn, "events:chat", &retried);
        }
        xadd_data_on(&mut conn, "events:chat", &retried);
        for n in 6..10 {
            xadd_data_on(&mut conn, "events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
        }
    };
    let (code, ()) = tokio::join!(a.stop(), publish);
    assert_eq!(code, Some(0), "the drained instance exits cleanly");
    metric_appears(&b, "sidecar_session_handoffs_total{outcome=\"resumed\"} 1").await;
    for n in 10..15 {
        xadd_data_on(&mut conn, "events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
    }

    let mut got = Vec::new();
    while let Some(m) = d.message("c", "ReceiveMessage", Duration::from_secs(2)).await {
        got.push(seq(&m));
    }
    assert_eq!(got, (until..15).collect::<Vec<_>>(), "each event once, in order, the retry of 5 not again");
    assert_still_connected(&mut d).await;
}

#[tokio::test]
async fn a_retry_replayed_with_its_first_copy_after_a_handoff_arrives_once() {
    a_retry_in_the_replayed_stretch_arrives_once(false).await;
}

#[tokio::test]
async fn a_retry_of_an_event_delivered_before_a_handoff_is_not_replayed() {
    a_retry_in_the_replayed_stretch_arrives_once(true).await;
}

/// The replay of a taken-over session meets events that went stale only
/// because they were read late (maximum age 2 s; the resume reaches `b` 3 s
/// after they were appended fresh): they were owed and cannot be sent, so
/// the resume is refused and the client reconnects afresh (it refetches),
/// instead of resuming Connected without them.
#[tokio::test]
async fn a_replay_of_events_read_too_late_refuses_the_resume() {
    let redis = Redis::start().await;
    let extra = [("SIDECAR_MAX_EVENT_AGE_SECONDS", "2".to_string())];
    let options = json!({"statefulReconnect": true, "reconnect": true});
    let (mut a, b, proxy, mut d) = client_on_a(&redis, "late", &extra, options).await;
    redis.xadd_data("events:chat", &envelope("chat_message", "r", chat_payload("r", 0)));
    assert_eq!(d.message("c", "ReceiveMessage", WAIT).await.map(|m| seq(&m)), Some(0));

    proxy.retarget(b.port);
    proxy.delay_new(Duration::from_secs(3));
    let publish = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut conn = redis.conn();
        for n in 1..4 {
            xadd_data_on(&mut conn, "events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
        }
    };
    let (code, ()) = tokio::join!(a.stop(), publish);
    assert_eq!(code, Some(0), "the drained instance exits cleanly");
    metric_appears(&b, "sidecar_session_handoffs_total{outcome=\"refused\"} 1").await;
    let told = d.wait_for(WAIT, |v| v["name"] == "c" && (v["event"] == "reconnecting" || v["event"] == "close")).await;
    assert!(told.is_some(), "the client is told: it reconnects afresh");
}

/// A connection accepted just before SIGTERM that completes its handshake
/// once the drain has begun (the drain's list of connections taken
/// without it) is told to reconnect as the others are (CONTRACT section 8:
/// a Close with `allowReconnect: true`), within the drain window, and the
/// process does not wait for it until its shutdown deadline. It used to be
/// served, unclosed, until the deadline (25 s), then reset without a Close.
#[tokio::test]
async fn a_connection_whose_handshake_completes_during_the_drain_is_told_to_reconnect() {
    let mut s = Sidecar::start(&[("SIDECAR_DRAIN_WINDOW_SECONDS", "1".into())]).await;
    let mut ws = support::raw::RawWs::connect(s.port, "/hubs/chat").await.expect("upgraded");
    let started = std::time::Instant::now();
    s.terminate();
    let deadline = std::time::Instant::now() + WAIT;
    // Unready (503), or the admin port already closed.
    while matches!(support::http::request(s.admin_port, "GET", "/readyz", &[], b"").await, Ok((200, _))) {
        assert!(std::time::Instant::now() < deadline, "/readyz still answers 200 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The drain lists the connections right after it goes unready.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send("{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
    assert_eq!(ws.recv_type(7).await, Some(json!({"type": 7, "allowReconnect": true})), "told to reconnect");
    while s.running() {
        assert!(started.elapsed() < Duration::from_secs(10), "still draining after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `sig` to `s` and, for SIGSTOP, waits until every thread of it is
/// stopped (`kill` returns once the signal is sent).
async fn signal(s: &Sidecar, sig: &str) {
    let pid = s.pid().expect("running").to_string();
    assert!(std::process::Command::new("kill").args([sig, &pid]).status().expect("kill").success(), "kill {sig}");
    if sig != "-STOP" {
        return;
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let states: Vec<Option<char>> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|dir| {
                dir.flatten()
                    .map(|t| std::fs::read_to_string(t.path().join("stat")).unwrap_or_default())
                    .map(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()))
                    .collect()
            })
            .unwrap_or_default();
        if !states.is_empty() && states.iter().all(|s| *s == Some('T')) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{pid} did not stop: {states:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// CONTRACT sections 8 and 14, SIGTERM arriving during a resume: the
/// resume of a stateful session reaches `b` after a network drop, and
/// while `b` waits for the instance holding the session (`a`, slow to
/// answer: stopped here) to hand it over, `b` is told to drain. The
/// session `b` then takes over came after its drain listed the sessions it
/// hands off: it must be handed on as those are, so the client resumes on
/// `c` and gets every event once, in order, never leaving Connected, and
/// `b` exits within its drain. It used to stay on `b`, whose pipeline had
/// stopped, Connected and deaf until `b`'s shutdown deadline (25 s); and
/// then to refuse the resume when its reader had not yet passed the
/// session's positions, having stopped reading as its drain began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_over_during_the_drain_is_handed_on() {
    let redis = Redis::start().await;
    let (a, mut b, proxy, mut d) = client_on_a(&redis, "late", &[], json!({"statefulReconnect": true})).await;
    let c = Sidecar::start(&instance_env(&redis, "late-c")).await;
    for n in 0..10 {
        redis.xadd_data("events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
    }
    for n in 0..10 {
        assert_eq!(d.message("c", "ReceiveMessage", WAIT).await.map(|m| seq(&m)), Some(n), "before the drop");
    }
    // The resume's ask for the session, seen here: noted as being released
    // (as `a` would note it), so that `b` waits for the snapshot.
    let mut asks = redis::Client::open(redis.url()).expect("url").get_connection().expect("redis");
    let mut marks = redis.conn();
    let ask = tokio::task::spawn_blocking(move || {
        let mut sub = asks.as_pubsub();
        sub.subscribe("signalr-sidecar:session-release").expect("subscribe");
        let token: String = sub.get_message().expect("the resume asks").get_payload().expect("token");
        let key = format!("signalr-sidecar:session:{token}:releasing");
        let _: () = redis::cmd("SET").arg(key).arg(1).arg("PX").arg(5000).query(&mut marks).expect("SET");
    });
    tokio::time::sleep(Duration::from_millis(200)).await; // subscribed
    proxy.retarget(b.port);
    signal(&a, "-STOP").await;
    proxy.cut();
    tokio::time::timeout(WAIT, ask).await.expect("the resume reached b").expect("ask seen");
    let drained = std::time::Instant::now();
    b.terminate();
    while matches!(support::http::request(b.admin_port, "GET", "/readyz", &[], b"").await, Ok((200, _))) {
        assert!(drained.elapsed() < WAIT, "b still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Events `a` reads as it wakes, before or while it saves the session:
    // `b`'s reader must pass them before it can take the session over.
    for n in 10..15 {
        redis.xadd_data("events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.retarget(c.port);
    signal(&a, "-CONT").await;
    for n in 15..30 {
        redis.xadd_data("events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every event once, in order, never leaving Connected: `b` keeps
    // reading while its takeover waits for its reader to pass the session's
    // positions, then hands the session on. It used to stop reading at once
    // (no connection of its own) and, its reader short of what `a` had put
    // in the snapshot, refuse the resume after 2 s: 404, a fresh reconnect.
    let mut got = Vec::new();
    while got.len() < 20 {
        match d.message("c", "ReceiveMessage", WAIT).await {
            Some(m) => got.push(seq(&m)),
            None => break,
        }
    }
    assert_eq!(got, (10..30).collect::<Vec<_>>(), "every event once, in order, after the drop");
    assert_still_connected(&mut d).await;
    while b.running() {
        assert!(drained.elapsed() < Duration::from_secs(10), "b still draining after {:?}", drained.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CONTRACT sections 5 and 14: a publisher's retry (the same `event_id`
/// appended again, within the idempotency window) of an event a stateful
/// session got on its old instance reaches it once, also when the
/// instance it resumes on started after the first copy (a rollout's
/// replacement, whose groups begin at the streams' ends): the new instance
/// learns the event ids its streams already held. It used to deliver the
/// retry a second time.
#[tokio::test]
async fn a_retry_read_by_an_instance_started_after_its_first_copy_is_still_a_duplicate() {
    let redis = Redis::start().await;
    let env = |id: &str| instance_env(&redis, id);
    let mut a = Sidecar::start(&env("retry-a")).await;
    let proxy = Proxy::start(a.port).await;
    let mut d = Driver::start().await;
    let url = format!("{}/hubs/chat", proxy.url());
    d.connect("c", &url, &["ReceiveMessage"], json!({"statefulReconnect": true})).await.expect("connects");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    let events: Vec<Value> = (0..3).map(|n| envelope("chat_message", "r", chat_payload("r", n))).collect();
    for e in &events {
        redis.xadd_data("events:chat", e);
    }
    for n in 0..3 {
        assert_eq!(d.message("c", "ReceiveMessage", WAIT).await.map(|m| seq(&m)), Some(n), "on a");
    }
    let b = Sidecar::start(&env("retry-b")).await;
    proxy.retarget(b.port);
    assert_eq!(a.stop().await, Some(0));
    redis.xadd_data("events:chat", &events[1]);
    redis.xadd_data("events:chat", &envelope("chat_message", "r", chat_payload("r", 3)));
    assert_eq!(d.message("c", "ReceiveMessage", WAIT).await.map(|m| seq(&m)), Some(3), "the retry of #1 dropped");
    assert!(d.message("c", "ReceiveMessage", Duration::from_millis(500)).await.is_none(), "nothing doubled");
    assert_still_connected(&mut d).await;
}

/// The handoff over MessagePack: the snapshot keeps the binary frames and
/// the protocol, and the instance that takes the session over numbers and
/// frames what it missed in MessagePack as well.
#[tokio::test]
async fn a_messagepack_stateful_session_resumes_on_another_instance_after_a_drain() {
    resumes_elsewhere_after_a_drain("handoff-mp", json!({"statefulReconnect": true, "protocol": "msgpack"})).await;
}
