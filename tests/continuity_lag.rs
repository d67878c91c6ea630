//! Continuity when one instance falls behind its streams (CONTRACT sections
//! 5 and 14): while it cannot read (stopped, or its link to Redis cut),
//! publishers go on appending, and what they append may be trimmed
//! (`MAXLEN`) before it reads it. A client of that instance that stays
//! Connected must get every event it was owed, or be closed with
//! `allowReconnect: true` (the app refetches), and the close is counted.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn seq(m: &Value) -> u64 {
    m["args"][0]["sequence_number"].as_u64().expect("sequence number")
}

/// XADD of a chat event for room `r` numbered `n`, trimming the stream to
/// `maxlen` entries (`approx`: `MAXLEN ~`, as the sidecar and the
/// publisher package append).
fn xadd_trimmed(conn: &mut redis::Connection, n: u64, maxlen: usize, approx: bool) {
    let env = envelope("chat_message", "r", chat_payload("r", n));
    let mut cmd = redis::cmd("XADD");
    cmd.arg("events:chat").arg("MAXLEN");
    if approx {
        cmd.arg("~");
    }
    let _: String = cmd.arg(maxlen).arg("*").arg("data").arg(env.to_string()).query(conn).expect("XADD");
}

/// `sidecar_continuity_closes_total{cause}` of `s`, 0 while absent.
async fn continuity_closes(s: &Sidecar, cause: &str) -> f64 {
    let (_, text) = support::http::request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    let prefix = format!("sidecar_continuity_closes_total{{cause=\"{cause}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0.0)
}

/// What client `name` got until it was told to reconnect (a `reconnecting`
/// or `close` event), or until `quiet` passed without anything for it:
/// the sequence numbers, and whether it was told.
async fn received_until_told(d: &mut Driver, name: &str, quiet: Duration) -> (Vec<u64>, bool) {
    let mut got = Vec::new();
    loop {
        let next = d
            .wait_for(quiet, |v| {
                v["name"] == name && (v["event"] == "message" || v["event"] == "reconnecting" || v["event"] == "close")
            })
            .await;
        match next {
            Some(v) if v["event"] == "message" => got.push(seq(&v)),
            Some(_) => return (got, true),
            None => return (got, false),
        }
    }
}

/// A client of the sidecar at `url` joined to room `r`, with automatic
/// reconnect, that has received events 0..5.
async fn joined_client(redis: &Redis, url: &str) -> Driver {
    let mut d = Driver::start().await;
    d.connect("c", url, &["ReceiveMessage"], json!({"reconnect": true})).await.expect("connects");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    let mut conn = redis.conn();
    for n in 0..5 {
        xadd_trimmed(&mut conn, n, 10_000, true);
    }
    for n in 0..5 {
        assert_eq!(d.message("c", "ReceiveMessage", WAIT).await.map(|m| seq(&m)), Some(n), "before the lag");
    }
    d
}

/// The instance is stopped (SIGSTOP) while 200 events are appended with
/// `MAXLEN 20`: 180 are trimmed before it can read them. XREADGROUP then
/// starts at the first entry left, so the read alone shows no gap; the
/// client must be closed (and the close counted), not left Connected
/// without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_trimmed_while_an_instance_is_stopped_close_its_clients() {
    let redis = Redis::start().await;
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_DRAIN_WINDOW_SECONDS", "1".into())]).await;
    let mut d = joined_client(&redis, &s.hub("/hubs/chat")).await;
    let pid = stop(&s).await;
    let mut conn = redis.conn();
    for n in 5..205 {
        xadd_trimmed(&mut conn, n, 20, false);
    }
    signal("-CONT", &pid);

    told_of_the_trim(&mut d, &s, 200, Duration::from_secs(8)).await;
}

/// The same through a cut link: the instance's connections to Redis drop
/// and new ones are refused for a while (Redis itself runs on), as the
/// sidecar's own POSTs and the publisher package trim (`MAXLEN ~`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_trimmed_while_an_instance_is_cut_off_close_its_clients() {
    let redis = Redis::start().await;
    let link = Proxy::start(redis.port).await;
    let url = format!("redis://127.0.0.1:{}", link.port);
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", url), ("SIDECAR_DRAIN_WINDOW_SECONDS", "1".into())]).await;
    let mut d = joined_client(&redis, &s.hub("/hubs/chat")).await;
    // Nothing listens on a port just freed: new connections are refused.
    link.retarget(free_port());
    link.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = redis.conn();
    for n in 5..1205 {
        xadd_trimmed(&mut conn, n, 300, true);
    }
    link.retarget(redis.port);

    told_of_the_trim(&mut d, &s, 1200, Duration::from_secs(10)).await;
}

/// After `published` events of which the trim took some before `s` read
/// them: client "c" got fewer, was told (a Close), and the close is counted.
async fn told_of_the_trim(d: &mut Driver, s: &Sidecar, published: usize, within: Duration) {
    let (got, told) = received_until_told(d, "c", within).await;
    assert!(got.len() < published, "the trim took events before the instance read them: {got:?}");
    assert!(told, "the client stayed Connected having missed {} events (got {got:?})", published - got.len());
    assert!(continuity_closes(s, "stream_trimmed").await >= 1.0, "the close is counted");
}

/// No false alarm: an instance that keeps up while the stream is trimmed
/// hard behind it (`MAXLEN 5`) closes nobody: entries trimmed after they
/// were read were owed to no one. Runs past a few of the reader's checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_entries_already_read_closes_nobody() {
    let redis = Redis::start().await;
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url())]).await;
    let mut d = joined_client(&redis, &s.hub("/hubs/chat")).await;
    let mut conn = redis.conn();
    let mut got = Vec::new();
    for n in 5..85 {
        xadd_trimmed(&mut conn, n, 5, false);
        tokio::time::sleep(Duration::from_millis(70)).await;
        if n % 10 == 0 {
            got.extend(d.drain_messages("c", Duration::from_millis(1)).await.iter().map(seq));
        }
    }
    got.extend(d.drain_messages("c", Duration::from_millis(500)).await.iter().map(seq));
    assert_eq!(got, (5..85).collect::<Vec<_>>(), "every event, once, in order");
    assert!(
        d.wait_for(Duration::from_millis(10), |v| v["event"] == "reconnecting" || v["event"] == "close")
            .await
            .is_none(),
        "nobody closed"
    );
    assert_eq!(continuity_closes(&s, "stream_trimmed").await, 0.0);
}

/// Sends `sig` to process `pid`.
fn signal(sig: &str, pid: &str) {
    assert!(std::process::Command::new("kill").args([sig, pid]).status().expect("kill").success(), "kill {sig}");
}

/// Stops `s` (SIGSTOP) and waits until it is stopped; its pid, for the
/// SIGCONT.
async fn stop(s: &Sidecar) -> String {
    let pid = s.pid().expect("running").to_string();
    signal("-STOP", &pid);
    stopped(&pid).await;
    pid
}

/// Waits until every thread of process `pid` is stopped (state `T`):
/// `kill -STOP` returns once the signal is sent, and a thread running on
/// the other core may still read what comes in the next instant.
async fn stopped(pid: &str) {
    let state = |stat: &str| {
        // `tid (comm) state ...`; comm may hold spaces, the state follows its ')'.
        stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let tasks: Vec<Option<char>> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|dir| {
                dir.flatten()
                    .map(|t| state(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        if !tasks.is_empty() && tasks.iter().all(|s| *s == Some('T')) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "process {pid} did not stop: {tasks:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `sidecar_events_dropped_total{reason}` of `s`, 0 while absent.
async fn dropped(s: &Sidecar, reason: &str) -> f64 {
    let (_, text) = support::http::request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    let prefix = format!("sidecar_events_dropped_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0.0)
}

/// Events that go stale because the instance read them late (stopped for
/// longer than the maximum age, 2 s here, while they were appended fresh)
/// are still dropped as stale, and the client they were for is closed and
/// counted (`cause="instance_lagged"`), not left Connected without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_an_instance_reads_too_late_close_the_clients_they_were_for() {
    let redis = Redis::start().await;
    let env = [
        ("SIDECAR_REDIS_URL", redis.url()),
        ("SIDECAR_DRAIN_WINDOW_SECONDS", "1".to_string()),
        ("SIDECAR_MAX_EVENT_AGE_SECONDS", "2".to_string()),
    ];
    let s = Sidecar::start(&env).await;
    let mut d = joined_client(&redis, &s.hub("/hubs/chat")).await;
    let pid = stop(&s).await;
    let mut conn = redis.conn();
    for n in 5..10 {
        xadd_trimmed(&mut conn, n, 10_000, true);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal("-CONT", &pid);

    let (got, told) = received_until_told(&mut d, "c", Duration::from_secs(6)).await;
    assert_eq!(got, Vec::<u64>::new(), "stale when read: dropped");
    assert!(told, "the client stayed Connected having missed events 5..10");
    // Those read after the client left are passed over: nobody here wanted them.
    assert!(dropped(&s, "stale").await >= 1.0, "still counted as stale");
    assert!(continuity_closes(&s, "instance_lagged").await >= 1.0, "the close is counted");
}

/// A publisher's old event (its `timestamp` past the maximum age, its
/// entry appended now) is dropped and counted as stale, as before, and
/// closes nobody: the instance did not lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publishers_stale_event_is_dropped_and_closes_nobody() {
    let redis = Redis::start().await;
    let env = [("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_MAX_EVENT_AGE_SECONDS", "2".to_string())];
    let s = Sidecar::start(&env).await;
    let mut d = joined_client(&redis, &s.hub("/hubs/chat")).await;
    let mut old = envelope("chat_message", "r", chat_payload("r", 5));
    let ten_seconds_ago = chrono::Utc::now() - chrono::Duration::seconds(10);
    old["timestamp"] = json!(ten_seconds_ago.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    redis.xadd_data("events:chat", &old);
    redis.xadd_data("events:chat", &envelope("chat_message", "r", chat_payload("r", 6)));

    assert_eq!(d.message("c", "ReceiveMessage", WAIT).await.map(|m| seq(&m)), Some(6), "the old one dropped");
    assert!(
        d.wait_for(Duration::from_secs(2), |v| v["event"] == "reconnecting" || v["event"] == "close").await.is_none(),
        "nobody closed"
    );
    assert_eq!(dropped(&s, "stale").await, 1.0);
    assert_eq!(continuity_closes(&s, "instance_lagged").await, 0.0);
}
