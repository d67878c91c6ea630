//! The discussion platform (CONTRACT section 15, seed 003) under what a
//! production deployment does to it: two or three instances on one Redis,
//! clients of both discussion hubs spread over them (the official client,
//! JSON and MessagePack, WebSockets, Server-Sent Events and Long Polling),
//! and a SIGKILLed instance, a rolling restart (SIGTERM one, start its
//! replacement) or a Redis restart. Each test checks, once things settle,
//! what the contract promises a user of the platform: missed updates
//! replayed once and in order across an instance change, bursts neither
//! lost nor doubled while a batch is held by a draining instance, presence
//! and typing rosters that converge to the truth within the contract's
//! times, notifications and announcements on every tab.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const DISCUSSION: &str = "/hubs/discussion";
const NOTIFICATIONS: &str = "/hubs/notification";
const STREAM: &str = "events:discussion";
const NOTIFY_STREAM: &str = "events:notification";
const DISCUSSION_METHODS: [&str; 5] = ["ResponsesPosted", "TypingRoster", "ParticipantCount", "UserJoined", "UserLeft"];
/// The presence TTL the instances here run with (CONTRACT section 11).
const TTL: Duration = Duration::from_secs(3);

/// An instance of the shipped discussion routing file on `redis`, named
/// `id`, with a short presence TTL and drain window so a test sees them
/// end.
async fn instance(redis: &Redis, id: &str) -> Sidecar {
    let mut env = jwt_env();
    env.push(("SIDECAR_REDIS_URL", redis.url()));
    env.push(("SIDECAR_ROUTES", "protocol/routes-discussion.toml".into()));
    env.push(("SIDECAR_STREAMS", format!("{STREAM},{NOTIFY_STREAM}")));
    env.push(("SIDECAR_INSTANCE_ID", id.into()));
    env.push(("SIDECAR_PRESENCE_TTL_SECONDS", TTL.as_secs().to_string()));
    env.push(("SIDECAR_DRAIN_WINDOW_SECONDS", "2".into()));
    Sidecar::start(&env).await
}

/// Connection options for `user` over `transport` and `protocol`.
fn opts(user: &str, transport: &str, protocol: &str) -> Value {
    json!({"accessToken": token(user, &user.to_uppercase()), "transport": transport, "protocol": protocol})
}

/// Connects `name` as `user` to the discussion hub at `base` and joins
/// `room` naming `last`; returns the join's answer.
async fn join(d: &mut Driver, base: &str, name: &str, user: &str, how: (&str, &str), last: Value) -> Value {
    let url = format!("{base}{DISCUSSION}");
    d.connect(name, &url, &DISCUSSION_METHODS, opts(user, how.0, how.1))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    d.invoke(name, "JoinDiscussion", json!(["d1", last])).await.unwrap_or_else(|e| panic!("{name} joins: {e}"))
}

/// A `response_posted` of discussion d1 numbered `n`.
fn response(n: u64) -> Value {
    let payload = json!({"response_id": format!("r-{n}"), "author_id": "author", "content": format!("response {n}"),
        "created_at": now(), "n": n});
    envelope("response_posted", "d1", payload)
}

/// Publishes responses 0, 1, 2... to d1 every `every` until stopped; the
/// number published is what [`Publisher::stop`] returns.
struct Publisher {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(redis: &Redis, every: Duration) -> Publisher {
        let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, c, url) = (stop.clone(), count.clone(), redis.url());
        let task = tokio::task::spawn_blocking(move || {
            let mut conn = redis::Client::open(url).expect("url").get_connection().expect("redis");
            while !s.load(Ordering::SeqCst) {
                xadd_data_on(&mut conn, STREAM, &response(c.load(Ordering::SeqCst)));
                c.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(every);
            }
        });
        Publisher { stop, count, task }
    }

    fn published(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("publisher");
        self.count.load(Ordering::SeqCst)
    }
}

/// What one reader (a client and the connections that took its place)
/// received: the responses' numbers in arrival order, and the last
/// position it saw (what the page would rejoin with).
#[derive(Default, Debug)]
struct Chain {
    ids: Vec<u64>,
    last: Option<String>,
}

impl Chain {
    /// Adds one `ResponsesPosted` (a batch: lists of payloads and positions).
    fn add(&mut self, m: &Value) {
        let (Some(responses), Some(positions)) = (m["args"][1].as_array(), m["args"][2].as_array()) else {
            panic!("a batch with positions: {m}")
        };
        assert_eq!(responses.len(), positions.len(), "a position per response: {m}");
        for (r, p) in responses.iter().zip(positions) {
            self.ids.push(r["n"].as_u64().unwrap_or_else(|| panic!("n: {m}")));
            self.last = Some(p.as_str().unwrap_or_else(|| panic!("a position: {m}")).to_string());
        }
    }

    /// Takes every response `name` received that the driver has read.
    async fn take(&mut self, d: &mut Driver, name: &str) {
        while let Some(m) = d.wait_for(Duration::ZERO, |v| is_message(v, name, "ResponsesPosted")).await {
            self.add(&m);
        }
    }

    /// Reads `name`'s responses until its last one is `upto - 1`.
    async fn take_until(&mut self, d: &mut Driver, name: &str, upto: u64) {
        let deadline = Instant::now() + WAIT;
        self.take(d, name).await;
        while self.ids.last().is_none_or(|&n| n + 1 < upto) && Instant::now() < deadline {
            if let Some(m) = d.message(name, "ResponsesPosted", Duration::from_millis(200)).await {
                self.add(&m);
            }
        }
    }

    /// Exactly `0..upto`, once each, in order.
    fn assert_complete(&self, who: &str, upto: u64) {
        let want: Vec<u64> = (0..upto).collect();
        if self.ids != want {
            let dups: Vec<u64> = self.ids.windows(2).filter(|w| w[1] <= w[0]).map(|w| w[1]).collect();
            let missing: Vec<u64> = want.iter().filter(|n| !self.ids.contains(n)).copied().collect();
            panic!("{who}: every response once, in order: {} of {upto}, out of order or twice {dups:?}, missing {missing:?}",
                self.ids.len());
        }
    }
}

/// Reads into the driver's queue every line Node has printed so far (300
/// ms of reading): a zero timeout only sees lines the runtime has already
/// noticed, so a list taken with one after a sleep can end early.
async fn read_all(d: &mut Driver) {
    d.wait_for(Duration::from_millis(300), |_| false).await;
}

fn is_message(v: &Value, name: &str, method: &str) -> bool {
    v["event"] == "message" && v["name"] == name && v["method"] == method
}

/// Waits for `name`'s connection to close (the instance died or drained).
async fn closed(d: &mut Driver, name: &str, within: Duration) -> Value {
    d.wait_for(within, |v| v["event"] == "close" && v["name"] == name)
        .await
        .unwrap_or_else(|| panic!("{name} was not closed within {within:?}"))
}

/// The lines of `s`'s metrics that start with `name` and do not end in 0.
async fn metric_lines(s: &Sidecar, name: &str) -> Vec<String> {
    let text = support::http::request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics").1;
    text.lines().filter(|l| l.starts_with(name) && !l.ends_with(" 0")).map(str::to_string).collect()
}

/// The page's reconnect handler: `name` ended; a new connection `next`
/// joins d1 again on `s` with the last position `chain` saw, which the
/// server must recover, and takes `name`'s place.
async fn rejoin(d: &mut Driver, chain: &mut Chain, name: &str, next: &str, s: &Sidecar, how: (&str, &str)) {
    let base = s.url();
    closed(d, name, WAIT).await;
    chain.take(d, name).await;
    let last = chain.last.clone().map(Value::from).unwrap_or(Value::Null);
    let back = join(d, &base, next, next, how, last.clone()).await;
    if back["recovered"] != true {
        let outcomes = metric_lines(s, "sidecar_history_joins_total").await;
        panic!("{next} rejoins with {last} after {name} ended: {back}; {outcomes:?}");
    }
}

/// CONTRACT section 15, missed updates: a client whose instance is killed,
/// or drained in a rolling restart, joins again through another instance
/// with the last position it saw and gets every response after it once, in
/// order, then live, while responses keep coming; on every transport and
/// both protocols.
#[tokio::test]
async fn a_rejoin_with_the_last_position_gets_every_missed_response_once_across_a_kill_and_a_rollout() {
    let redis = Redis::start().await;
    let mut a = instance(&redis, "mu-a").await;
    let mut b = instance(&redis, "mu-b").await;
    let c = instance(&redis, "mu-c").await;
    let mut d = Driver::start().await;
    let ws = ("WebSockets", "json");
    let lp = ("LongPolling", "msgpack");
    let sse = ("ServerSentEvents", "json");
    let mp = ("WebSockets", "msgpack");
    for (name, s, how) in [("ws", &a, ws), ("lp", &b, lp), ("sse", &a, sse), ("mp", &c, mp)] {
        let first = join(&mut d, &s.url(), name, name, how, Value::Null).await;
        assert_eq!(first["recovered"], false, "{first}");
    }
    let mut chains: [Chain; 4] = Default::default();
    let publisher = Publisher::start(&redis, Duration::from_millis(7));
    while publisher.published() < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A crash: ws and sse were on a.
    a.kill().await;
    rejoin(&mut d, &mut chains[0], "ws", "ws-2", &b, ws).await;
    rejoin(&mut d, &mut chains[2], "sse", "sse-2", &c, sse).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A rollout: e replaces b (started first, as with maxSurge), b drains;
    // ws-2 and lp were on b.
    let e = instance(&redis, "mu-e").await;
    b.terminate();
    rejoin(&mut d, &mut chains[0], "ws-2", "ws-3", &e, ws).await;
    rejoin(&mut d, &mut chains[1], "lp", "lp-2", &e, lp).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let upto = publisher.stop().await;
    assert_eq!(b.stop().await, Some(0), "the drained instance exits cleanly");

    for (chain, (who, name)) in chains.iter_mut().zip([("ws", "ws-3"), ("lp", "lp-2"), ("sse", "sse-2"), ("mp", "mp")])
    {
        chain.take_until(&mut d, name, upto).await;
        chain.assert_complete(who, upto);
    }
    assert!(d.message("mp", "ResponsesPosted", Duration::from_millis(700)).await.is_none(), "nothing twice");
}

/// Publishes responses `from..to` to d1 at once (one burst).
fn burst(redis: &Redis, from: u64, to: u64) {
    let mut conn = redis.conn();
    for n in from..to {
        xadd_data_on(&mut conn, STREAM, &response(n));
    }
}

/// CONTRACT section 15, bursts: the first response of a burst goes at
/// once and the rest are held for the batch window; the instance holding
/// them is drained (SIGTERM) inside that window while the burst goes on.
/// Its clients, told to reconnect, rejoin on the other instance with the
/// last position they saw: between what they got before and the replay,
/// every response once, in order; a client of the other instance gets
/// each once as well.
#[tokio::test]
async fn a_burst_held_by_a_draining_instance_is_neither_lost_nor_doubled() {
    burst_through(false).await;
}

/// As [`a_burst_held_by_a_draining_instance_is_neither_lost_nor_doubled`],
/// the instance holding the batch SIGKILLed instead.
#[tokio::test]
async fn a_burst_held_by_a_killed_instance_is_neither_lost_nor_doubled() {
    burst_through(true).await;
}

/// A burst whose batch `a` holds when it is drained or, with `kill`, killed.
async fn burst_through(kill: bool) {
    let redis = Redis::start().await;
    let mut a = instance(&redis, "bu-a").await;
    let b = instance(&redis, "bu-b").await;
    let mut d = Driver::start().await;
    let ws = ("WebSockets", "json");
    let lp = ("LongPolling", "msgpack");
    join(&mut d, &a.url(), "ws", "ws", ws, Value::Null).await;
    join(&mut d, &a.url(), "lp", "lp", lp, Value::Null).await;
    join(&mut d, &b.url(), "stay", "stay", ("ServerSentEvents", "json"), Value::Null).await;
    let mut chains: [Chain; 3] = Default::default();

    burst(&redis, 0, 1);
    chains[0].take_until(&mut d, "ws", 1).await;
    chains[1].take_until(&mut d, "lp", 1).await;
    // The first went out alone: the window is open, the next are held.
    burst(&redis, 1, 6);
    tokio::time::sleep(Duration::from_millis(100)).await;
    if kill {
        a.kill().await;
    } else {
        a.terminate();
    }
    burst(&redis, 6, 12);
    rejoin(&mut d, &mut chains[0], "ws", "ws-2", &b, ws).await;
    rejoin(&mut d, &mut chains[1], "lp", "lp-2", &b, lp).await;
    burst(&redis, 12, 15);
    if !kill {
        assert_eq!(a.stop().await, Some(0), "the drained instance exits cleanly");
    }

    for (chain, (who, name)) in chains.iter_mut().zip([("ws", "ws-2"), ("lp", "lp-2"), ("stay", "stay")]) {
        chain.take_until(&mut d, name, 15).await;
        chain.assert_complete(who, 15);
    }
    for name in ["ws-2", "lp-2", "stay"] {
        let more = d.message(name, "ResponsesPosted", Duration::from_millis(700)).await;
        assert!(more.is_none(), "{name}: nothing twice: {more:?}");
    }
}

/// The user ids of a `GetPresence` answer, sorted.
async fn present(d: &mut Driver, asker: &str) -> Vec<String> {
    let p = d.invoke(asker, "GetPresence", json!(["d1"])).await.expect("presence");
    let users = p["users"].as_array().cloned().unwrap_or_default();
    let mut ids: Vec<String> = users.iter().filter_map(|u| u["user_id"].as_str().map(str::to_string)).collect();
    ids.sort();
    assert_eq!(p["count"], ids.len(), "the count is the users listed: {p}");
    ids
}

/// Waits for a `ParticipantCount` of d1 to `name` saying `count`; the
/// counts before it (the way there) are passed over. Returns when it came.
async fn count_reaches(d: &mut Driver, name: &str, count: u64, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(m) = d.message(name, "ParticipantCount", Duration::from_millis(100)).await {
            assert_eq!(m["args"][0], "d1", "{m}");
            if m["args"][1]["count"] == count {
                return Instant::now();
            }
            last = m["args"][1].clone();
        }
    }
    panic!("{name}: no ParticipantCount of {count} within {within:?} (last {last})");
}

/// Every `UserJoined` (true) and `UserLeft` (false) `name` got so far, as
/// (user id, joined), in order.
async fn transitions(d: &mut Driver, name: &str) -> Vec<(String, bool)> {
    read_all(d).await;
    let mut out = Vec::new();
    while let Some(m) = d
        .wait_for(Duration::ZERO, |v| {
            v["event"] == "message" && v["name"] == name && (v["method"] == "UserJoined" || v["method"] == "UserLeft")
        })
        .await
    {
        let user = m["args"][1]["user_id"].as_str().unwrap_or_else(|| panic!("a user: {m}")).to_string();
        out.push((user, m["method"] == "UserJoined"));
    }
    out
}

/// CONTRACT sections 11 and 15, presence: with users spread over three
/// instances, one is killed (its users who have no other tab leave, with
/// one `UserLeft`, within the presence TTL, and the count follows within
/// the second counts are throttled to) and one drains (a user who does not
/// come back leaves; one whose page rejoins elsewhere is present). Nobody
/// who still has a connection is ever reported gone.
#[tokio::test]
async fn presence_converges_after_an_instance_is_killed_and_another_drained() {
    let redis = Redis::start().await;
    let mut a = instance(&redis, "pr-a").await;
    let mut b = instance(&redis, "pr-b").await;
    let c = instance(&redis, "pr-c").await;
    let mut d = Driver::start().await;
    join(&mut d, &c.url(), "wendy", "wendy", ("WebSockets", "json"), Value::Null).await;
    join(&mut d, &a.url(), "ann", "ann", ("WebSockets", "json"), Value::Null).await;
    join(&mut d, &a.url(), "bob-1", "bob", ("WebSockets", "msgpack"), Value::Null).await;
    join(&mut d, &c.url(), "bob-2", "bob", ("LongPolling", "json"), Value::Null).await;
    join(&mut d, &b.url(), "cid", "cid", ("ServerSentEvents", "json"), Value::Null).await;
    join(&mut d, &b.url(), "dan", "dan", ("WebSockets", "msgpack"), Value::Null).await;
    count_reaches(&mut d, "wendy", 5, WAIT).await;
    assert_eq!(present(&mut d, "wendy").await, ["ann", "bob", "cid", "dan", "wendy"]);

    a.kill().await;
    let killed = Instant::now();
    count_reaches(&mut d, "wendy", 4, TTL + Duration::from_millis(1500)).await;
    assert!(
        killed.elapsed() <= TTL + Duration::from_secs(1),
        "the count within the TTL and a second: {:?}",
        killed.elapsed()
    );
    assert_eq!(present(&mut d, "wendy").await, ["bob", "cid", "dan", "wendy"]);

    b.terminate();
    let drained = Instant::now();
    closed(&mut d, "dan", WAIT).await;
    join(&mut d, &c.url(), "dan-2", "dan", ("ServerSentEvents", "json"), Value::Null).await;
    closed(&mut d, "cid", WAIT).await;
    count_reaches(&mut d, "wendy", 3, Duration::from_secs(2) + TTL + Duration::from_millis(1500)).await;
    assert!(drained.elapsed() <= Duration::from_secs(2) + TTL + Duration::from_secs(1), "{:?}", drained.elapsed());
    assert_eq!(b.stop().await, Some(0));
    // Settled: stays so.
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    assert_eq!(present(&mut d, "wendy").await, ["bob", "dan", "wendy"]);
    let seen = transitions(&mut d, "wendy").await;
    let of = |u: &str| seen.iter().filter(|(who, _)| who == u).map(|(_, j)| *j).collect::<Vec<bool>>();
    assert_eq!(of("ann"), [true, false], "ann joined, then left once: {seen:?}");
    assert_eq!(of("cid"), [true, false], "cid joined, then left once: {seen:?}");
    assert_eq!(of("bob"), [true], "bob never left: {seen:?}");
    assert_eq!(of("dan").last(), Some(&true), "dan is back: {seen:?}");
}

/// The typing rosters `name` got so far: (arrival on the client's clock,
/// user ids).
async fn rosters(d: &mut Driver, name: &str) -> Vec<(f64, Vec<String>)> {
    read_all(d).await;
    let mut out = Vec::new();
    while let Some(m) = d.wait_for(Duration::ZERO, |v| is_message(v, name, "TypingRoster")).await {
        let r = &m["args"][0];
        assert_eq!(r["room_id"], "d1", "{m}");
        let users = r["users"].as_array().unwrap_or_else(|| panic!("users: {m}"));
        let ids: Vec<String> = users.iter().filter_map(|u| u["user_id"].as_str().map(str::to_string)).collect();
        assert_eq!(r["count"], ids.len(), "{m}");
        out.push((m["at"].as_f64().expect("at"), ids));
    }
    out
}

/// CONTRACT section 15, typing roster: ann types through an instance that
/// is then killed, bob through one that is drained; on the survivor each
/// leaves every watcher's roster within 5 s of their last keystroke (plus
/// the 500 ms a roster may wait for its window), and the roster ends empty.
#[tokio::test]
async fn typists_whose_instance_dies_or_drains_leave_the_roster_in_time() {
    let redis = Redis::start().await;
    let mut a = instance(&redis, "ty-a").await;
    let b = instance(&redis, "ty-b").await;
    let mut c = instance(&redis, "ty-c").await;
    let mut d = Driver::start().await;
    join(&mut d, &a.url(), "ann", "ann", ("WebSockets", "json"), Value::Null).await;
    join(&mut d, &c.url(), "bob", "bob", ("LongPolling", "msgpack"), Value::Null).await;
    join(&mut d, &b.url(), "w-json", "wendy", ("WebSockets", "json"), Value::Null).await;
    join(&mut d, &b.url(), "w-mp", "walt", ("WebSockets", "msgpack"), Value::Null).await;
    let mut last = [0.0f64; 2];
    for _ in 0..4 {
        for (i, who) in ["ann", "bob"].into_iter().enumerate() {
            d.invoke(who, "SendTyping", json!(["d1", true])).await.expect("typing");
            last[i] = now_ms();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    a.kill().await;
    c.terminate();
    tokio::time::sleep(Duration::from_millis(7000)).await;
    for watcher in ["w-json", "w-mp"] {
        let seen = rosters(&mut d, watcher).await;
        assert!(seen.iter().any(|(_, u)| u == &["ann", "bob"]), "{watcher} saw both typing: {seen:?}");
        for (i, who) in ["ann", "bob"].into_iter().enumerate() {
            let gone = seen.iter().find(|(at, u)| *at > last[i] && !u.iter().any(|x| x == who));
            let (at, _) = gone.unwrap_or_else(|| panic!("{watcher}: {who} never left the roster: {seen:?}"));
            let after = at - last[i];
            assert!(after <= 5700.0, "{watcher}: {who} left {after} ms after their last keystroke: {seen:?}");
        }
        assert_eq!(seen.last().map(|(_, u)| u.len()), Some(0), "{watcher}: the roster ends empty: {seen:?}");
    }
    assert_eq!(c.stop().await, Some(0));
}

/// Publishes, every `every`, reply notification n to `user:ann` and
/// announcement n to everyone, until stopped.
fn notify_loop(redis: &Redis, every: Duration) -> Publisher {
    let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let (s, c, url) = (stop.clone(), count.clone(), redis.url());
    let task = tokio::task::spawn_blocking(move || {
        let mut conn = redis::Client::open(url).expect("url").get_connection().expect("redis");
        while !s.load(Ordering::SeqCst) {
            let n = c.load(Ordering::SeqCst);
            let reply = json!({"notification_id": format!("n-{n}"), "user_id": "ann", "discussion_id": "d1",
                "response_id": "r-1", "from_user_id": "bob", "from_username": "Bob", "n": n, "created_at": now()});
            xadd_data_on(&mut conn, NOTIFY_STREAM, &envelope("reply_notification", "user:ann", reply));
            let news = json!({"announcement_id": format!("a-{n}"), "title": "Maintenance", "message": "at 22:00",
                "severity": "info", "n": n, "created_at": now()});
            xadd_data_on(&mut conn, NOTIFY_STREAM, &envelope("announcement", "*", news));
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(every);
        }
    });
    Publisher { stop, count, task }
}

/// The numbers of the notifications (`ReceiveNotification`) and
/// announcements `name` got, in order, and how many times it reconnected
/// (a stateful tab's resumes are printed, for a failure's message).
async fn notified(d: &mut Driver, name: &str) -> (Vec<u64>, Vec<u64>, usize) {
    let (mut replies, mut news, mut reconnects) = (Vec::new(), Vec::new(), 0);
    let mut events = Vec::new();
    read_all(d).await;
    while let Some(v) = d.wait_for(Duration::ZERO, |v| v["name"] == name).await {
        match (v["event"].as_str(), v["method"].as_str()) {
            (Some("message"), Some("ReceiveNotification")) => replies.push(v["args"][1]["n"].as_u64().expect("n")),
            (Some("message"), Some("Announcement")) => news.push(v["args"][0]["n"].as_u64().expect("n")),
            (Some("reconnected"), _) => reconnects += 1,
            (Some("close"), _) => panic!("{name} gave up: {v}"),
            _ => {}
        }
        if v["event"] != "message" {
            events.push(format!("{} after {} at {}", v["event"], replies.len(), v["at"]));
        }
    }
    if !events.is_empty() {
        eprintln!("{name}: {events:?}");
    }
    (replies, news, reconnects)
}

/// Gaps in an increasing list (each a stretch the client was not
/// connected for); panics on anything received twice or out of order.
fn gaps(name: &str, what: &str, got: &[u64]) -> usize {
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{name}: {what} once each, in order: {got:?}");
    got.windows(2).filter(|w| w[1] != w[0] + 1).count()
}

/// CONTRACT sections 14 and 15: ann's tabs (stateful WebSockets in JSON
/// and MessagePack, Long Polling) and bob's (Server-Sent Events) are on the
/// notification hub behind an ingress while all three instances are
/// replaced one by one. Stateful tabs resume and get every notification
/// and announcement once, in order; the others reconnect, get nothing
/// twice, miss only while reconnecting (they know), and get everything
/// once the rollout is over. Bob gets no notification of ann's.
#[tokio::test]
async fn notifications_and_announcements_reach_every_tab_through_a_rolling_restart() {
    let redis = Redis::start().await;
    let mut fleet = [instance(&redis, "no-a").await, instance(&redis, "no-b").await, instance(&redis, "no-c").await];
    let ingress = support::affinity::Affinity::start(&fleet.iter().map(|s| s.port).collect::<Vec<_>>()).await;
    let url = format!("{}{NOTIFICATIONS}", ingress.url());
    let mut d = Driver::start().await;
    let tabs = [
        ("ann-ws", "ann", "WebSockets", "json", true),
        ("ann-mp", "ann", "WebSockets", "msgpack", true),
        ("ann-lp", "ann", "LongPolling", "json", false),
        ("bob-sse", "bob", "ServerSentEvents", "json", false),
    ];
    for (name, user, transport, protocol, stateful) in tabs {
        let mut o = opts(user, transport, protocol);
        o["reconnect"] = json!(true);
        o["statefulReconnect"] = json!(stateful);
        d.connect(name, &url, &["ReceiveNotification", "Announcement"], o).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let publisher = notify_loop(&redis, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (slot, id) in ["no-d", "no-e", "no-f"].into_iter().enumerate() {
        let next = instance(&redis, id).await;
        ingress.set_port(slot, next.port);
        let mut old = std::mem::replace(&mut fleet[slot], next);
        assert_eq!(old.stop().await, Some(0), "{id} replaced its predecessor, drained");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let settled = publisher.published();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let upto = publisher.stop().await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    let all: Vec<u64> = (0..upto).collect();
    for (name, user, _, _, stateful) in tabs {
        let (replies, news, reconnects) = notified(&mut d, name).await;
        let after = |got: &[u64]| got.iter().filter(|&&n| n >= settled).count() as u64;
        assert_eq!(after(&news), upto - settled, "{name}: every announcement after the rollout: {news:?}");
        if user == "bob" {
            assert!(replies.is_empty(), "{name}: none of ann's notifications: {replies:?}");
        } else {
            assert_eq!(after(&replies), upto - settled, "{name}: every notification after the rollout: {replies:?}");
        }
        if stateful {
            assert_eq!(replies, all, "{name}: a stateful tab resumes with every notification once, in order");
            assert_eq!(news, all, "{name}: and every announcement");
        } else {
            for (what, got) in [("notifications", &replies), ("announcements", &news)] {
                let holes = gaps(name, what, got);
                assert!(holes <= reconnects, "{name}: {holes} gaps in its {what} but {reconnects} reconnects: {got:?}");
            }
        }
    }
}

/// Stops Redis for `down` and starts it again, with its data (a Redis with
/// persistence) or empty; then, as the pages would, rejoins every one of
/// `clients` that was closed meanwhile. Returns when Redis is back.
async fn restart_redis(
    d: &mut Driver,
    redis: &mut Redis,
    down: Duration,
    keep_data: bool,
    clients: &[(&str, &Sidecar)],
) {
    redis.stop(keep_data).await;
    tokio::time::sleep(down).await;
    redis.restart().await;
    tokio::time::sleep(TTL).await;
    read_all(d).await;
    for (name, s) in clients {
        if d.wait_for(Duration::ZERO, |v| v["event"] == "close" && v["name"] == *name).await.is_some() {
            join(d, &s.url(), &format!("{name}-again"), name, ("WebSockets", "json"), Value::Null).await;
        }
    }
}

/// CONTRACT sections 11 and 15, presence through a Redis restart: users
/// whose connections stay (or whose pages rejoin after a Close) are
/// present again within the TTL once Redis answers, whether Redis came
/// back with its data after an outage longer than an entry lives, or
/// empty.
#[tokio::test]
async fn presence_converges_after_redis_restarts() {
    let mut redis = Redis::start().await;
    let a = instance(&redis, "rr-a").await;
    let b = instance(&redis, "rr-b").await;
    let mut d = Driver::start().await;
    join(&mut d, &a.url(), "wendy", "wendy", ("WebSockets", "json"), Value::Null).await;
    join(&mut d, &b.url(), "ann", "ann", ("LongPolling", "msgpack"), Value::Null).await;
    join(&mut d, &a.url(), "bob", "bob", ("ServerSentEvents", "json"), Value::Null).await;
    count_reaches(&mut d, "wendy", 3, WAIT).await;
    let clients = [("wendy", &a), ("ann", &b), ("bob", &a)];
    let everyone = ["ann", "bob", "wendy"];

    for (down, keep_data) in [(TTL, true), (Duration::from_secs(1), false)] {
        restart_redis(&mut d, &mut redis, down, keep_data, &clients).await;
        let asker = if d.invoke("wendy", "GetPresence", json!(["d1"])).await.is_ok() { "wendy" } else { "wendy-again" };
        let started = Instant::now();
        loop {
            let now = present(&mut d, asker).await;
            if now == everyone {
                break;
            }
            let waited = started.elapsed();
            assert!(waited < TTL, "kept data {keep_data}: still {now:?} {waited:?} after Redis came back and settled");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// CONTRACT section 15, missed updates through a Redis restart: a reader
/// that left before it, rejoining on another instance with its last
/// position, gets every response it missed once, in order, when Redis came
/// back with its data; when Redis came back empty (the responses published
/// before the restart are gone) it is told `recovered: false`, with no
/// partial replay, and goes on live.
#[tokio::test]
async fn missed_updates_through_a_redis_restart_are_replayed_or_refused_whole() {
    for keep_data in [true, false] {
        let mut redis = Redis::start().await;
        let a = instance(&redis, "rx-a").await;
        let b = instance(&redis, "rx-b").await;
        let mut d = Driver::start().await;
        let ws = ("WebSockets", "json");
        join(&mut d, &a.url(), "r", "r", ws, Value::Null).await;
        let mut chain = Chain::default();
        burst(&redis, 0, 3);
        chain.take_until(&mut d, "r", 3).await;
        d.stop("r").await;
        burst(&redis, 3, 6);
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.stop(keep_data).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        redis.restart().await;
        // Both instances read again (a NOGROUP after an empty restart is
        // found by the next read), then more responses.
        tokio::time::sleep(Duration::from_secs(2)).await;
        burst(&redis, 6, 9);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let last = json!(chain.last.clone());
        let back = join(&mut d, &b.url(), "r-2", "r", ("LongPolling", "msgpack"), last.clone()).await;
        if keep_data {
            assert_eq!(
                back["recovered"],
                true,
                "Redis kept its data: {last} recovers: {back}; {:?}",
                metric_lines(&b, "sidecar_history_joins_total").await
            );
            chain.take_until(&mut d, "r-2", 9).await;
            chain.assert_complete("r after a restart with the data kept", 9);
        } else {
            assert_eq!(back["recovered"], false, "3, 4 and 5 are gone: {back}");
            let replayed = d.message("r-2", "ResponsesPosted", Duration::from_millis(700)).await;
            assert!(replayed.is_none(), "no partial replay: {replayed:?}");
            burst(&redis, 9, 10);
            let mut live = Chain::default();
            live.take_until(&mut d, "r-2", 10).await;
            assert_eq!(live.ids, [9], "live after a join not recovered");
        }
    }
}
