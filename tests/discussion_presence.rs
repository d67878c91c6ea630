//! Inactivity and presence states on the discussion platform (CONTRACT
//! section 15, seed 003 FR-033 to FR-035), with the official client: a
//! connection that sends no invocation for the hub's timeout is closed with
//! a Close the client can show (pings do not count); a user none of whose
//! connections invoked anything for the hub's away time is away, online
//! again with the next invocation; participant counts reach the discussion
//! at most once a second, across instances and in process.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const HUB: &str = "/hubs/discussion";
const STREAM: &str = "events:discussion";
const METHODS: [&str; 3] = ["ParticipantCount", "UserJoined", "UserLeft"];

/// The shipped discussion routing file with `replace` applied, written for one test.
fn routes(replace: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(procs::root().join("protocol/routes-discussion.toml")).expect("routes");
    for (from, to) in replace {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    let path = std::env::temp_dir().join(format!("routes-presence-{}.toml", free_port()));
    std::fs::write(&path, text).expect("write routes");
    path.display().to_string()
}

fn env(routes: &str, redis: Option<&Redis>, id: &str) -> Vec<(&'static str, String)> {
    let mut env = jwt_env();
    env.push(("SIDECAR_ROUTES", routes.to_string()));
    env.push(("SIDECAR_STREAMS", STREAM.to_string()));
    env.push(("SIDECAR_INSTANCE_ID", id.to_string()));
    if let Some(r) = redis {
        env.push(("SIDECAR_REDIS_URL", r.url()));
    }
    env
}

async fn join(d: &mut Driver, s: &Sidecar, name: &str, user: &str, room: &str) {
    let opts = json!({"accessToken": token(user, &format!("User {user}"))});
    d.connect(name, &s.hub(HUB), &METHODS, opts).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    d.invoke(name, "JoinDiscussion", json!([room])).await.unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// The next ParticipantCount `name` gets for `room` whose payload matches
/// `want` (earlier, intermediate counts are passed over), while `active`
/// keep invoking every 300 ms.
async fn count(d: &mut Driver, name: &str, room: &str, want: Value, active: &[&str], within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        for a in active {
            d.invoke(a, "GetPresence", json!([room])).await.expect("active client invokes");
        }
        let got = d
            .wait_for(Duration::from_millis(300), |v| {
                v["event"] == "message" && v["name"] == name && v["method"] == "ParticipantCount"
            })
            .await;
        if let Some(m) = got {
            assert_eq!(m["args"][0], room, "{m}");
            if m["args"][1] == want {
                return Instant::now();
            }
            last = Some(m["args"][1].clone());
        }
    }
    panic!("{name}: no ParticipantCount {want} for {room} within {within:?} (last: {last:?})");
}

fn counts(count: u64, online: u64, away: u64, room: &str) -> Value {
    json!({"room_id": room, "count": count, "online": online, "away": away})
}

async fn state_of(d: &mut Driver, asker: &str, room: &str, user: &str) -> String {
    let p = d.invoke(asker, "GetPresence", json!([room])).await.expect("presence");
    let users = p["users"].as_array().cloned().unwrap_or_default();
    let u = users.iter().find(|u| u["user_id"] == user).unwrap_or_else(|| panic!("{user} in {p}"));
    u["state"].as_str().expect("state").to_string()
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_a_close_it_can_show_and_pings_do_not_count() {
    let routes = routes(&[("inactivity_timeout_seconds = 1800", "inactivity_timeout_seconds = 2")]);
    let s = Sidecar::start(&env(&routes, None, "idle")).await;
    let mut d = Driver::start().await;
    let started = Instant::now();
    // The idle client reconnects automatically on any other close.
    let opts = |user: &str| json!({"accessToken": token(user, user), "reconnect": true});
    d.connect("idle", &s.hub(HUB), &METHODS, opts("u1")).await.expect("connects");
    d.connect("busy", &s.hub(HUB), &METHODS, opts("u2")).await.expect("connects");
    d.invoke("idle", "JoinDiscussion", json!(["d1"])).await.expect("joins");

    // A raw client that only pings, five times a second.
    let path = format!("{HUB}?access_token={}", token("u3", "u3"));
    let mut raw = support::raw::RawWs::connect(s.port, &path).await.expect("raw connects");
    raw.send("{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
    assert!(raw.recv().await.is_some(), "handshake answer");
    let pinger = tokio::spawn(async move {
        loop {
            raw.send("{\"type\":6}\u{1e}").await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                close = raw.recv_type(7) => return close,
            }
        }
    });

    let mut busy_invocations = 0;
    let closed = loop {
        d.invoke("busy", "GetPresence", json!(["d1"])).await.expect("the busy client stays");
        busy_invocations += 1;
        if let Some(c) = d.wait_for(Duration::from_millis(400), |v| v["event"] == "close" && v["name"] == "idle").await
        {
            break c;
        }
        assert!(started.elapsed() < Duration::from_secs(6), "the idle client was not closed");
    };
    let after = started.elapsed();
    assert!(after >= Duration::from_secs(2) && after < Duration::from_secs(4), "closed after {after:?}");
    assert_eq!(
        closed["error"],
        "Server returned an error on close: Connection closed after a period of inactivity (session timeout)."
    );
    let close = tokio::time::timeout(Duration::from_secs(3), pinger).await.expect("raw closed").expect("task");
    let close = close.expect("a Close, not a dropped socket");
    // ASP.NET Core writes allowReconnect only when true.
    assert!(close.get("allowReconnect").is_none_or(|r| r == false), "no reconnect: {close}");
    assert!(close["error"].as_str().is_some_and(|e| e.contains("inactivity")), "{close}");

    // No automatic reconnect after a session timeout; the busy client is still there.
    let again = d.wait_for(Duration::from_millis(1500), |v| v["name"] == "idle" && v["event"] == "reconnecting").await;
    assert!(again.is_none(), "{again:?}");
    assert!(busy_invocations > 5);
    assert!(d.invoke("busy", "GetPresence", json!(["d1"])).await.is_ok(), "invocations keep a connection");
    let metrics = support::http::request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics").1;
    assert!(metrics.contains("sidecar_disconnects_total{reason=\"inactivity\"} 2"), "{metrics}");
}

/// Away after a second without an invocation, online with the next one,
/// the counts that follow; `redis` decides where presence lives.
async fn away_online_and_counts(redis: Option<&Redis>) {
    let routes = routes(&[("away_after_seconds = 300", "away_after_seconds = 1")]);
    let a = Sidecar::start(&env(&routes, redis, "pa")).await;
    // With Redis, alice's second tab is on another instance.
    let b = match redis {
        Some(_) => Some(Sidecar::start(&env(&routes, redis, "pb")).await),
        None => None,
    };
    let other = b.as_ref().unwrap_or(&a);
    let mut d = Driver::start().await;
    join(&mut d, &a, "bob", "bob", "d1").await;
    count(&mut d, "bob", "d1", counts(1, 1, 0, "d1"), &["bob"], WAIT).await;
    join(&mut d, &a, "tab1", "alice", "d1").await;
    join(&mut d, other, "tab2", "alice", "d1").await;
    count(&mut d, "bob", "d1", counts(2, 2, 0, "d1"), &["bob"], WAIT).await;

    // One tab idle, the other busy: alice is online.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        for n in ["bob", "tab2"] {
            d.invoke(n, "GetPresence", json!(["d1"])).await.expect("invokes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(state_of(&mut d, "bob", "d1", "alice").await, "online");
    // Both idle: away, and the count says so.
    count(&mut d, "bob", "d1", counts(2, 1, 1, "d1"), &["bob"], Duration::from_secs(5)).await;
    assert_eq!(state_of(&mut d, "bob", "d1", "alice").await, "away");
    // The next invocation, from either tab: online.
    d.invoke("tab1", "GetPresence", json!(["d1"])).await.expect("invokes");
    count(&mut d, "bob", "d1", counts(2, 2, 0, "d1"), &["bob", "tab1"], WAIT).await;
    assert_eq!(state_of(&mut d, "bob", "d1", "alice").await, "online");

    // SetPresence still sets the state outright...
    d.invoke("tab1", "SetPresence", json!(["away"])).await.expect("away");
    assert_eq!(state_of(&mut d, "bob", "d1", "alice").await, "away");
    // ...and, as after an automatic away, her next invocation makes her
    // online again (CONTRACT section 15, seed 003 FR-034: by activity).
    d.invoke("tab1", "GetPresence", json!(["d1"])).await.expect("invokes");
    count(&mut d, "bob", "d1", counts(2, 2, 0, "d1"), &["bob", "tab1"], WAIT).await;
    assert_eq!(state_of(&mut d, "bob", "d1", "alice").await, "online");

    // A burst of changes: at most one count per second, the last one right.
    d.drain_messages("bob", Duration::from_millis(1200)).await;
    let mut at = Vec::new();
    // With Redis, the guests come through both instances: both want to
    // publish the room's count, one per second between them.
    for k in 0..6 {
        let on = if k % 2 == 0 { &a } else { other };
        join(&mut d, on, &format!("guest{k}"), &format!("guest{k}"), "d1").await;
    }
    for k in 0..3 {
        d.stop(&format!("guest{k}")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        d.invoke("bob", "GetPresence", json!(["d1"])).await.expect("bob stays active");
        if let Some(m) = d.message("bob", "ParticipantCount", Duration::from_millis(200)).await {
            at.push(m["at"].as_f64().expect("client clock"));
            last = m["args"][1].clone();
        }
    }
    assert_eq!(last["count"], 5, "bob, alice and three guests: {last}");
    assert!(at.len() >= 2, "{at:?}");
    assert!(at.windows(2).all(|w| w[1] - w[0] >= 900.0), "at most one count a second: {at:?}");

    d.stop("tab1").await;
    d.stop("tab2").await;
    for k in 3..6 {
        d.stop(&format!("guest{k}")).await;
    }
    count(&mut d, "bob", "d1", counts(1, 1, 0, "d1"), &["bob"], WAIT).await;
}

#[tokio::test]
async fn away_online_and_participant_counts_across_instances() {
    let redis = Redis::start().await;
    away_online_and_counts(Some(&redis)).await;
}

#[tokio::test]
async fn away_online_and_participant_counts_in_process() {
    away_online_and_counts(None).await;
}

/// Away is the user's (CONTRACT section 15: "a user with no invocation for
/// a set time turns away, and online again with the next"): alice's tab in
/// d1 sits idle while she keeps invoking in another tab, in d2, which may
/// be on another instance; she is online in d1 until both are idle, and an
/// invocation in the other tab brings her back.
async fn busy_in_another_tab(redis: Option<&Redis>) {
    let routes = routes(&[("away_after_seconds = 300", "away_after_seconds = 1")]);
    let a = Sidecar::start(&env(&routes, redis, "pa")).await;
    let b = match redis {
        Some(_) => Some(Sidecar::start(&env(&routes, redis, "pb")).await),
        None => None,
    };
    let other = b.as_ref().unwrap_or(&a);
    let mut d = Driver::start().await;
    join(&mut d, &a, "bob", "bob", "d1").await;
    join(&mut d, &a, "tab1", "alice", "d1").await;
    join(&mut d, other, "tab2", "alice", "d2").await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        d.invoke("bob", "GetPresence", json!(["d1"])).await.expect("invokes");
        d.invoke("tab2", "GetPresence", json!(["d2"])).await.expect("invokes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(state_of(&mut d, "bob", "d1", "alice").await, "online", "busy in d2");
    // Idle in both: away in d1 too.
    let idle = Instant::now();
    while idle.elapsed() < Duration::from_millis(2500) {
        d.invoke("bob", "GetPresence", json!(["d1"])).await.expect("invokes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(state_of(&mut d, "bob", "d1", "alice").await, "away");
    // One invocation in the other tab: online in d1 again.
    d.invoke("tab2", "GetPresence", json!(["d2"])).await.expect("invokes");
    let back = Instant::now();
    loop {
        let state = state_of(&mut d, "bob", "d1", "alice").await;
        if state == "online" {
            break;
        }
        assert!(back.elapsed() < Duration::from_millis(900), "still {state} in d1 after the invocation in d2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_user_busy_in_another_tab_is_not_away_in_an_idle_ones_room() {
    busy_in_another_tab(None).await;
}

#[tokio::test]
async fn a_user_busy_in_a_tab_on_another_instance_is_not_away_in_an_idle_ones_room() {
    let redis = Redis::start().await;
    busy_in_another_tab(Some(&redis)).await;
}
