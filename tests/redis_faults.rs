//! Redis faults beyond a clean stop (CONTRACT sections 8 and 14): a Redis
//! that hangs (SIGSTOP) with its sockets open, one out of memory under
//! `noeviction`, every client connection killed at once (`CLIENT KILL TYPE
//! normal`), and `CLIENT PAUSE`. For every client, every event published
//! for its room is delivered once, in order, or the client was not
//! Connected (the continuity checker); for every publisher, a clear answer:
//! `202` only for an event every instance's clients then receive, else a
//! status with the reason. The scenario kit's tests run one at a time
//! (each starts five processes and 30 clients; the machine has two cores).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::continuity::Scenario;
use support::continuity_check::Expect;
use support::{chat_payload, envelope, Driver, Redis, Sidecar};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TAIL: Duration = Duration::from_secs(2);

/// The room the POSTed events go to: no scenario client is in it, so the
/// checker's rooms stay the publisher's alone.
const POSTED_ROOM: &str = "posted";

/// One `/readyz` answer of one instance, ms after the fault began.
#[derive(Debug, Clone)]
struct ReadySample {
    at_ms: f64,
    slot: usize,
    status: u16,
    body: String,
}

/// Polls `/readyz` of every admin port every 100 ms until dropped.
struct ReadyProbe {
    samples: Arc<Mutex<Vec<ReadySample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadyProbe {
    fn start(admin_ports: Vec<u16>, t0: Instant) -> ReadyProbe {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                for (slot, &port) in admin_ports.iter().enumerate() {
                    let asked = t0.elapsed().as_secs_f64() * 1000.0;
                    let answer = tokio::time::timeout(
                        Duration::from_secs(2),
                        support::http::request(port, "GET", "/readyz", &[], b""),
                    )
                    .await;
                    let (status, body) = match answer {
                        Ok(Ok((status, body))) => (status, body),
                        _ => (0, "no answer within 2 s".into()),
                    };
                    out.lock().expect("samples").push(ReadySample { at_ms: asked, slot, status, body });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        ReadyProbe { samples, task }
    }

    fn samples(&self) -> Vec<ReadySample> {
        self.samples.lock().expect("samples").clone()
    }
}

impl Drop for ReadyProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One POST to `/internal/events` and its answer.
#[derive(Debug, Clone)]
struct Post {
    seq: u64,
    slot: usize,
    sent_ms: f64,
    took_ms: f64,
    status: u16,
    body: Value,
}

impl Post {
    /// Answered 202: the event is owed to every client in its room.
    fn accepted(&self) -> bool {
        self.status == 202
    }
}

/// POSTs event `seq` of [`POSTED_ROOM`] to `admin_port`, giving up after 30 s.
async fn post(admin_port: u16, slot: usize, seq: u64, t0: Instant) -> Post {
    let event = envelope("chat_message", POSTED_ROOM, chat_payload(POSTED_ROOM, seq));
    let sent = Instant::now();
    let sent_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        support::http::request(
            admin_port,
            "POST",
            "/internal/events",
            &[("content-type", "application/json")],
            event.to_string().as_bytes(),
        ),
    )
    .await;
    let (status, body) = match answer {
        Ok(Ok((status, body))) => (status, serde_json::from_str(&body).unwrap_or(Value::String(body))),
        Ok(Err(e)) => (0, Value::String(format!("connection failed: {e}"))),
        Err(_) => (0, Value::String("no answer within 30 s".into())),
    };
    Post { seq, slot, sent_ms, took_ms: sent.elapsed().as_secs_f64() * 1000.0, status, body }
}

/// What a publisher may be told (CONTRACT section 14, README "POST
/// /internal/events"): 202 `accepted` or `queued`, or a refusal (503, 502)
/// whose body says why. Anything else (no answer, a bare status) leaves
/// the publisher guessing.
fn assert_clear_answer(p: &Post) {
    match p.status {
        202 => assert!(
            p.body == json!({"status": "accepted"}) || p.body == json!({"status": "queued"}),
            "POST #{} answered 202 with {}",
            p.seq,
            p.body
        ),
        502 | 503 => {
            let text = p.body.to_string();
            assert!(text.len() > 10, "POST #{} answered {} without a reason: {text}", p.seq, p.status);
        }
        other => panic!("POST #{} to slot {} got {other}: {} after {:.0} ms", p.seq, p.slot, p.body, p.took_ms),
    }
}

/// Watchers of [`POSTED_ROOM`], one per instance, plain, on WebSockets,
/// Server-Sent Events and Long Polling in turn, straight to the instance.
async fn posted_room_watchers(s: &Scenario) -> (Driver, Vec<String>) {
    let mut d = Driver::start().await;
    let transports = ["WebSockets", "ServerSentEvents", "LongPolling"];
    let mut names = Vec::new();
    for (slot, instance) in s.instances.iter().enumerate() {
        let instance = instance.as_ref().expect("running");
        let name = format!("w{slot}");
        let transport = transports[slot % transports.len()];
        d.connect(&name, &instance.hub("/hubs/chat"), &["ReceiveMessage"], json!({"transport": transport}))
            .await
            .unwrap_or_else(|e| panic!("{name} ({transport}) connects: {e}"));
        assert_eq!(d.invoke(&name, "JoinRoom", json!([POSTED_ROOM])).await, Ok(Value::Null), "{name} joins");
        names.push(name);
    }
    (d, names)
}

/// Every watcher received every POST answered 202 exactly once, and the
/// ones POSTed to the same instance in the order POSTed; nothing else.
async fn assert_posted_delivered(d: &mut Driver, watchers: &[String], posts: &[Post]) {
    let accepted: Vec<&Post> = posts.iter().filter(|p| p.accepted()).collect();
    for name in watchers {
        let got: Vec<u64> = d
            .drain_messages(name, Duration::from_millis(500))
            .await
            .iter()
            .filter_map(|m| m["args"][0]["sequence_number"].as_u64())
            .collect();
        for p in &accepted {
            let n = got.iter().filter(|&&s| s == p.seq).count();
            assert_eq!(
                n, 1,
                "{name} received POST #{} (answered {} {}) {n} times: got {got:?}",
                p.seq, p.status, p.body
            );
        }
        for seq in &got {
            let p = posts.iter().find(|p| p.seq == *seq);
            assert!(p.is_some_and(|p| p.accepted() || p.status == 0), "{name} received #{seq}, refused: {p:?}");
        }
        for slot in 0..support::continuity::INSTANCES {
            let sent: Vec<u64> = accepted.iter().filter(|p| p.slot == slot).map(|p| p.seq).collect();
            let arrived: Vec<u64> = got.iter().copied().filter(|s| sent.contains(s)).collect();
            assert_eq!(arrived, sent, "{name}: the events POSTed to slot {slot}, in the order POSTed");
        }
    }
}

/// The runs of one instance's `/readyz`: (status, from ms, to ms).
fn ready_runs(samples: &[ReadySample], slot: usize) -> Vec<(u16, f64, f64)> {
    let mut runs: Vec<(u16, f64, f64)> = Vec::new();
    for s in samples.iter().filter(|s| s.slot == slot) {
        match runs.last_mut() {
            Some(run) if run.0 == s.status => run.2 = s.at_ms,
            _ => runs.push((s.status, s.at_ms, s.at_ms)),
        }
    }
    runs
}

/// Redis hangs for `hang` while 30 clients on three instances (plain and
/// stateful, every transport) receive 50 events/s, and a publisher POSTs
/// one event a second to the instances in turn. Returns what `/readyz`
/// said, for the caller's expectations.
async fn hung_redis(hang: Duration, env: &[(&str, &str)], redis_setup: &[&[&str]]) -> Vec<ReadySample> {
    let mut s = Scenario::start_on(
        env,
        &["WebSockets", "WebSockets", "ServerSentEvents", "ServerSentEvents", "LongPolling", "LongPolling"],
    )
    .await;
    let (mut d, watchers) = posted_room_watchers(&s).await;
    let admin: Vec<u16> = s.instances.iter().map(|i| i.as_ref().expect("running").admin_port).collect();
    for cmd in redis_setup {
        redis_cmd(&s.redis, cmd).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    }
    s.start_load();
    s.run_for(Duration::from_secs(2)).await;

    let t0 = Instant::now();
    let probe = ReadyProbe::start(admin.clone(), t0);
    s.redis.hang();
    let mut posting = Vec::new();
    let mut seq = 0;
    while t0.elapsed() < hang {
        let slot = seq as usize % admin.len();
        posting.push(tokio::spawn(post(admin[slot], slot, seq, t0)));
        seq += 1;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    s.redis.resume();
    let resumed_ms = t0.elapsed().as_secs_f64() * 1000.0;
    // After: the readers catch up, then a POST to each instance.
    s.run_for(Duration::from_secs(3)).await;
    for (slot, &port) in admin.iter().enumerate() {
        posting.push(tokio::spawn(post(port, slot, seq, t0)));
        seq += 1;
    }
    s.run_for(Duration::from_secs(3)).await;
    let mut posts = Vec::new();
    for p in posting {
        posts.push(p.await.expect("post task"));
    }
    let samples = probe.samples();
    drop(probe);
    let report = s.finish(TAIL).await;

    println!("Redis hung {hang:?}, resumed at {resumed_ms:.0} ms");
    for p in &posts {
        println!(
            "  POST #{} to slot {} at {:.0} ms: {} {} after {:.0} ms",
            p.seq, p.slot, p.sent_ms, p.status, p.body, p.took_ms
        );
    }
    for slot in 0..admin.len() {
        println!("  slot {slot} /readyz: {:?}", ready_runs(&samples, slot));
    }
    // A Redis that hung lost nothing: nobody may miss an event, and
    // closing clients to tell them (which the contract allows when entries
    // are gone) would be a reconnect storm for nothing.
    report.assert(Expect { everyone_miss_none: true, ..Expect::default() });
    for p in &posts {
        assert_clear_answer(p);
    }
    assert_posted_delivered(&mut d, &watchers, &posts).await;
    for slot in 0..admin.len() {
        let last = samples.iter().rev().find(|x| x.slot == slot).expect("sampled");
        assert_eq!((last.status, last.body.trim()), (200, "ready"), "slot {slot} ready again at the end");
    }
    samples
}

/// A 3 s hang (shorter than a reply's time limit): nobody misses an event,
/// nobody gets one twice or out of order, nobody is disconnected; every
/// POST gets a clear answer and every 202 is delivered once; all ready at
/// the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung_for_3s() {
    let _serial = SERIAL.lock().await;
    hung_redis(Duration::from_secs(3), &[], &[]).await;
}

/// A 15 s hang: as for 3 s, and each instance's `/readyz` turns 503
/// within [`UNREADY_WITHIN_MS`] of the hang (Redis is not reachable, CONTRACT
/// section 8: a Kubernetes probe must see it) and 200 again within 5 s of
/// its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung_for_15s() {
    let _serial = SERIAL.lock().await;
    hung_redis_for_15s(&[], &[]).await;
}

/// The 15 s hang with `CLIENT KILL` denied to the sidecar's Redis user (a
/// managed Redis often denies `@admin`): the reads given up on cannot be
/// ended, and the reader's read of its own pending entries, after Redis
/// woke and dropped the old socket, still finds what they took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung_for_15s_with_client_kill_denied() {
    let _serial = SERIAL.lock().await;
    hung_redis_for_15s(&[], &[&["ACL", "SETUSER", "default", "-client|kill"]]).await;
}

/// The 15 s hang with a read window held in Redis (one `BLPOP` and one
/// read queued at a time instead of eight reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung_for_15s_with_a_read_window() {
    let _serial = SERIAL.lock().await;
    hung_redis_for_15s(&[("SIDECAR_READ_WINDOW_MS", "20")], &[]).await;
}

async fn hung_redis_for_15s(env: &[(&str, &str)], redis_setup: &[&[&str]]) {
    let hang = Duration::from_secs(15);
    let samples = hung_redis(hang, env, redis_setup).await;
    let hang_ms = hang.as_secs_f64() * 1000.0;
    for slot in 0..support::continuity::INSTANCES {
        let first_unready = samples.iter().find(|x| x.slot == slot && x.status == 503);
        let first_unready = first_unready.unwrap_or_else(|| panic!("slot {slot}: /readyz never 503 in a 15 s hang"));
        assert!(
            first_unready.at_ms <= UNREADY_WITHIN_MS,
            "slot {slot}: /readyz 503 only {:.0} ms into the hang ({})",
            first_unready.at_ms,
            first_unready.body
        );
        assert!(first_unready.body.contains("redis"), "slot {slot}: the reason names Redis: {}", first_unready.body);
        let ready_again = samples.iter().find(|x| x.slot == slot && x.at_ms > hang_ms && x.status == 200);
        let ready_again = ready_again.unwrap_or_else(|| panic!("slot {slot}: /readyz not 200 after the hang"));
        assert!(ready_again.at_ms <= hang_ms + 5000.0, "slot {slot}: ready again only at {:.0} ms", ready_again.at_ms);
    }
}

/// How soon into a hang `/readyz` must say so. The contract gives no
/// figure; a reader gives up on a reply after its block (1 s) plus 10 s,
/// which a Kubernetes probe (every 10 s by default) sees within one period.
const UNREADY_WITHIN_MS: f64 = 12_000.0;

/// Runs a Redis command on a connection of the test's own.
fn redis_cmd(redis: &Redis, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut redis.conn())
}

/// The scenario with POSTs too: 30 clients under load, one watcher of
/// [`POSTED_ROOM`] per instance, and `fault` run `times` times with a
/// POST to each instance right after each; then every client must have
/// received every event once, in order, Connected throughout, and every
/// POST answered 202 must have reached every watcher once.
async fn under_load(fault: &[&str], times: usize, between: Duration) {
    let mut s = Scenario::start_on(&[], &["WebSockets", "ServerSentEvents", "LongPolling"]).await;
    let (mut d, watchers) = posted_room_watchers(&s).await;
    let admin: Vec<u16> = s.instances.iter().map(|i| i.as_ref().expect("running").admin_port).collect();
    s.start_load();
    s.run_for(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    let mut posting = Vec::new();
    let mut seq = 0;
    for _ in 0..times {
        let answer = redis_cmd(&s.redis, fault);
        assert!(answer.is_ok(), "{fault:?}: {answer:?}");
        for (slot, &port) in admin.iter().enumerate() {
            posting.push(tokio::spawn(post(port, slot, seq, t0)));
            seq += 1;
        }
        s.run_for(between).await;
    }
    s.run_for(Duration::from_secs(2)).await;
    let mut posts = Vec::new();
    for p in posting {
        posts.push(p.await.expect("post task"));
    }
    let report = s.finish(TAIL).await;
    println!("{fault:?} x {times}");
    for p in &posts {
        println!(
            "  POST #{} to slot {} at {:.0} ms: {} {} after {:.0} ms",
            p.seq, p.slot, p.sent_ms, p.status, p.body, p.took_ms
        );
    }
    println!("{report}");
    for p in &posts {
        assert_clear_answer(p);
        assert!(p.accepted(), "a POST while Redis answers is accepted or queued: {p:?}");
    }
    assert_posted_delivered(&mut d, &watchers, &posts).await;
    // Nothing in Redis was lost: nobody may miss a single event.
    report.assert(Expect { everyone_miss_none: true, ..Expect::default() });
}

/// `CLIENT KILL TYPE normal` three times while events flow: every
/// connection of every instance (readers with reads queued, the acker,
/// the publisher) drops at once. Nothing in Redis is lost, so every client
/// gets every event once, in order, and stays Connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redis_connection_killed_while_events_flow() {
    let _serial = SERIAL.lock().await;
    under_load(&["CLIENT", "KILL", "TYPE", "normal"], 3, Duration::from_millis(2500)).await;
}

/// `CLIENT PAUSE 3000 ALL`, then `CLIENT PAUSE 3000 WRITE`, while events
/// flow: replies wait, nothing is lost; everyone gets everything once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pause_all_while_events_flow() {
    let _serial = SERIAL.lock().await;
    under_load(&["CLIENT", "PAUSE", "3000", "ALL"], 2, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pause_write_while_events_flow() {
    let _serial = SERIAL.lock().await;
    under_load(&["CLIENT", "PAUSE", "3000", "WRITE"], 2, Duration::from_secs(5)).await;
}

/// Redis at `maxmemory` with `noeviction`: XADD is refused with OOM. A
/// POST then gets a clear answer; each one answered 202 reaches the
/// clients of both instances once, in order, when memory is freed; the
/// readers keep reading (XREADGROUP is not refused: `/readyz` stays 200,
/// `sidecar_redis_up` 1) and deliver a POST at once after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_refuses_xadd() {
    let _serial = SERIAL.lock().await;
    let redis = Redis::start().await;
    let env = |id: &str| vec![("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_INSTANCE_ID", id.to_string())];
    let (env_a, env_b) = (env("oom-a"), env("oom-b"));
    let (a, b) = tokio::join!(Sidecar::start(&env_a), Sidecar::start(&env_b));
    let mut d = Driver::start().await;
    for (name, s, transport) in [("on-a", &a, "WebSockets"), ("on-b", &b, "ServerSentEvents")] {
        d.connect(name, &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({"transport": transport}))
            .await
            .expect("connects");
        assert_eq!(d.invoke(name, "JoinRoom", json!([POSTED_ROOM])).await, Ok(Value::Null));
    }
    let t0 = Instant::now();
    let mut posts = vec![post(a.admin_port, 0, 0, t0).await];
    assert_eq!(posts[0].body, json!({"status": "accepted"}), "before the fault");

    redis_cmd(&redis, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).expect("policy");
    redis_cmd(&redis, &["CONFIG", "SET", "maxmemory", "1"]).expect("maxmemory");
    let refused = redis_cmd(&redis, &["XADD", "events:chat", "*", "k", "v"]);
    assert!(refused.as_ref().is_err_and(|e| e.code() == Some("OOM")), "XADD refused with OOM: {refused:?}");
    for n in 1..=4 {
        let (slot, port) = if n % 2 == 1 { (0, a.admin_port) } else { (1, b.admin_port) };
        let p = post(port, slot, n, t0).await;
        println!("POST #{n} while OOM: {} {} after {:.0} ms", p.status, p.body, p.took_ms);
        assert_clear_answer(&p);
        posts.push(p);
    }
    // Two of the readers' blocking reads (1 s each) while full: a read
    // refused would turn /readyz 503 and sidecar_redis_up 0.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for s in [&a, &b] {
        let (status, body) = support::http::request(s.admin_port, "GET", "/readyz", &[], b"").await.expect("readyz");
        assert_eq!(status, 200, "Redis answers reads while full: still ready: {body}");
        let (_, metrics) = support::http::request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
        assert!(metrics.lines().any(|l| l == "sidecar_redis_up 1"), "the readers keep reading while Redis is full");
    }

    redis_cmd(&redis, &["CONFIG", "SET", "maxmemory", "0"]).expect("maxmemory off");
    tokio::time::sleep(Duration::from_secs(3)).await;
    posts.push(post(b.admin_port, 1, 5, t0).await);
    assert_eq!(posts[5].status, 202, "{:?}", posts[5]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let watchers = ["on-a".to_string(), "on-b".to_string()];
    assert_posted_delivered(&mut d, &watchers, &posts).await;
}
