//! `POST /internal/events` while Redis is unreachable (CONTRACT section 14):
//! the event waits in a bounded spool, answered `queued`, reaches nobody
//! meanwhile, and once Redis answers it is appended to its stream, so the
//! clients of every instance receive it once, in order. A full spool answers
//! 503; an event that goes stale while spooled is dropped and counted.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::http::{request, request_with_head};
use support::*;

async fn instance(redis: &Redis, id: &str, extra: &[(&'static str, String)]) -> Sidecar {
    let mut env = vec![("SIDECAR_REDIS_URL", redis.url()), ("SIDECAR_INSTANCE_ID", id.to_string())];
    env.extend(extra.iter().cloned());
    Sidecar::start(&env).await
}

async fn watcher(d: &mut Driver, s: &Sidecar, name: &str, room: &str) {
    d.connect(name, &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({})).await.expect("connects");
    assert_eq!(d.invoke(name, "JoinRoom", json!([room])).await, Ok(Value::Null), "{name} joins");
}

/// POSTs `event` and returns (status, body as JSON or the text).
async fn post(s: &Sidecar, event: &Value) -> (u16, Value) {
    let (status, body) = s.post_event(event.to_string().as_bytes()).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// The value of the metric line starting with `name` (labels included).
async fn metric(s: &Sidecar, name: &str) -> Option<f64> {
    let (_, text) = request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until the metric reads `want`.
async fn metric_reaches(s: &Sidecar, name: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = metric(s, name).await;
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {got:?}, expected {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The event_ids of a stream, oldest first.
fn stream_ids(redis: &Redis, stream: &str) -> Vec<String> {
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(&mut redis.conn()).expect("XRANGE");
    entries
        .into_iter()
        .filter_map(|(_, fields)| fields.into_iter().find(|(k, _)| k == "event_id").map(|(_, v)| v))
        .collect()
}

/// Waits until `stream` holds `want` entries.
async fn stream_reaches(redis: &Redis, stream: &str, want: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let ids = stream_ids(redis, stream);
        if ids.len() >= want {
            return ids;
        }
        assert!(Instant::now() < deadline, "{stream} holds {} entries, expected {want}", ids.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn seq(m: &Value) -> u64 {
    m["args"][0]["sequence_number"].as_u64().expect("sequence_number")
}

#[tokio::test]
async fn events_posted_while_redis_is_down_reach_every_instance_once_in_order() {
    let mut redis = Redis::start().await;
    let a = instance(&redis, "spool-a", &[]).await;
    let b = instance(&redis, "spool-b", &[]).await;
    let mut d = Driver::start().await;
    watcher(&mut d, &a, "on-a", "r").await;
    watcher(&mut d, &b, "on-b", "r").await;

    let first = envelope("chat_message", "r", chat_payload("r", 0));
    assert_eq!(post(&a, &first).await, (202, json!({"status": "accepted"})), "Redis answers: XADD");
    for name in ["on-a", "on-b"] {
        assert_eq!(seq(&d.message(name, "ReceiveMessage", WAIT).await.expect(name)), 0, "{name}");
    }

    redis.stop(true).await;
    for n in 1..=5 {
        let e = envelope("chat_message", "r", chat_payload("r", n));
        assert_eq!(post(&a, &e).await, (202, json!({"status": "queued"})), "event {n} while Redis is down");
    }
    assert_eq!(metric(&a, "sidecar_spool_depth").await, Some(5.0));
    assert_eq!(metric(&a, "sidecar_spool_events_total{outcome=\"spooled\"}").await, Some(5.0));
    for name in ["on-a", "on-b"] {
        let early = d.message(name, "ReceiveMessage", Duration::from_millis(1500)).await;
        assert!(early.is_none(), "{name} received a spooled event before it reached the stream: {early:?}");
    }

    redis.restart().await;
    for name in ["on-a", "on-b"] {
        let mut got = Vec::new();
        while got.len() < 5 {
            let m = d
                .message(name, "ReceiveMessage", Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("{name} received only {got:?} after Redis came back"));
            got.push(seq(&m));
        }
        assert_eq!(got, vec![1, 2, 3, 4, 5], "{name}: every spooled event, in the order POSTed");
    }
    for name in ["on-a", "on-b"] {
        let extra = d.drain_messages(name, Duration::from_millis(700)).await;
        assert!(extra.is_empty(), "{name}: nothing twice: {extra:?}");
    }
    metric_reaches(&a, "sidecar_spool_depth", 0.0, WAIT).await;
    assert_eq!(metric(&a, "sidecar_spool_events_total{outcome=\"flushed\"}").await, Some(5.0));

    let after = envelope("chat_message", "r", chat_payload("r", 6));
    assert_eq!(post(&a, &after).await, (202, json!({"status": "accepted"})), "the spool is empty: XADD again");
    for name in ["on-a", "on-b"] {
        assert_eq!(seq(&d.message(name, "ReceiveMessage", WAIT).await.expect(name)), 6, "{name}");
    }
}

#[tokio::test]
async fn a_full_spool_answers_503_and_keeps_what_it_holds() {
    let mut redis = Redis::start().await;
    let s = instance(&redis, "spool-full", &[("SIDECAR_SPOOL_MAX_EVENTS", "3".into())]).await;
    redis.stop(false).await;
    let events: Vec<Value> = (1..=4).map(|n| envelope("chat_message", "r", chat_payload("r", n))).collect();
    for e in &events[..3] {
        assert_eq!(post(&s, e).await, (202, json!({"status": "queued"})));
    }
    let (status, head, body) = request_with_head(
        s.admin_port,
        "POST",
        "/internal/events",
        &[("content-type", "application/json")],
        events[3].to_string().as_bytes(),
    )
    .await
    .expect("admin port answers");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("spool of POSTed events is full (3 events)"), "{body}");
    assert!(head.contains("\r\nretry-after: 2"), "{head}");
    assert_eq!(metric(&s, "sidecar_spool_events_total{outcome=\"refused\"}").await, Some(1.0));
    assert_eq!(metric(&s, "sidecar_spool_depth").await, Some(3.0));

    // Redis comes back empty: the three held events are appended, in order.
    redis.restart().await;
    let ids = stream_reaches(&redis, "events:chat", 3, Duration::from_secs(15)).await;
    let posted: Vec<&str> = events[..3].iter().map(|e| e["event_id"].as_str().expect("id")).collect();
    assert_eq!(ids, posted);
    metric_reaches(&s, "sidecar_spool_depth", 0.0, WAIT).await;
    assert_eq!(post(&s, &events[3]).await, (202, json!({"status": "accepted"})), "room again");
}

#[tokio::test]
async fn an_event_that_goes_stale_in_the_spool_is_dropped_and_counted() {
    let mut redis = Redis::start().await;
    let s = instance(&redis, "spool-stale", &[]).await;
    redis.stop(false).await;
    // Fresh when POSTed, stale a few seconds later (the maximum age is 300 s).
    let mut old = envelope("chat_message", "r", chat_payload("r", 1));
    old["timestamp"] = json!(
        (chrono::Utc::now() - chrono::Duration::seconds(296)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    assert_eq!(post(&s, &old).await, (202, json!({"status": "queued"})));
    metric_reaches(&s, "sidecar_events_dropped_total{reason=\"spool_stale\"}", 1.0, Duration::from_secs(15)).await;
    assert_eq!(metric(&s, "sidecar_spool_depth").await, Some(0.0));

    let fresh = envelope("chat_message", "r", chat_payload("r", 2));
    assert_eq!(post(&s, &fresh).await, (202, json!({"status": "queued"})));
    redis.restart().await;
    let ids = stream_reaches(&redis, "events:chat", 1, Duration::from_secs(15)).await;
    assert_eq!(ids, vec![fresh["event_id"].as_str().expect("id").to_string()], "the stale one is never appended");
    metric_reaches(&s, "sidecar_spool_events_total{outcome=\"flushed\"}", 1.0, WAIT).await;
    assert_eq!(metric(&s, "sidecar_events_dropped_total{reason=\"spool_stale\"}").await, Some(1.0));
}

#[tokio::test]
async fn what_is_queued_at_a_sigterm_still_reaches_every_instance_if_redis_returns_before_the_deadline() {
    // CONTRACT section 14: a `queued` event reaches every instance's
    // clients once Redis answers again, even if its instance is stopping.
    let mut redis = Redis::start().await;
    let mut a = instance(&redis, "spool-term-a", &[("SIDECAR_SHUTDOWN_TIMEOUT_SECONDS", "20".to_string())]).await;
    let b = instance(&redis, "spool-term-b", &[]).await;
    let mut d = Driver::start().await;
    watcher(&mut d, &b, "on-b", "r").await;
    redis.stop(true).await;
    for n in 1..=3 {
        let e = envelope("chat_message", "r", chat_payload("r", n));
        assert_eq!(post(&a, &e).await, (202, json!({"status": "queued"})), "event {n} while Redis is down");
    }
    a.terminate();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.running(), "still trying to append what it queued");
    redis.restart().await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = d.message("on-b", "ReceiveMessage", Duration::from_secs(20)).await;
        got.push(seq(&m.unwrap_or_else(|| panic!("on-b received only {got:?}"))));
    }
    assert_eq!(got, vec![1, 2, 3], "every queued event, in order");
    assert_eq!(a.stop().await, Some(0), "then a clean exit");
}

#[tokio::test]
async fn what_the_spool_still_holds_at_exit_is_logged_with_its_count() {
    let mut redis = Redis::start().await;
    let log = std::env::temp_dir().join(format!("sidecar-spool-exit-{}.log", free_port()));
    let env = [
        ("SIDECAR_REDIS_URL", redis.url()),
        ("SIDECAR_INSTANCE_ID", "spool-exit".to_string()),
        ("SIDECAR_LOG_FORMAT", "json".to_string()),
        ("SIDECAR_DRAIN_WINDOW_SECONDS", "0".to_string()),
        ("SIDECAR_SHUTDOWN_TIMEOUT_SECONDS", "4".to_string()),
    ];
    let mut s = Sidecar::start_logged(&env, &log).await;
    redis.stop(false).await;
    for n in 1..=2 {
        let e = envelope("chat_message", "r", chat_payload("r", n));
        assert_eq!(post(&s, &e).await, (202, json!({"status": "queued"})));
    }
    let started = Instant::now();
    assert_eq!(s.stop().await, Some(0), "a clean exit");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "the last attempts end before the shutdown deadline: {took:?}");
    assert!(took >= Duration::from_secs(2), "Redis was given until near the deadline: {took:?}");
    let text = std::fs::read_to_string(&log).expect("log");
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"].as_str().is_some_and(|m| m.contains("could not be appended")))
        .unwrap_or_else(|| panic!("no log line about the events left in the spool:\n{text}"));
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["events"], 2, "{line}");
    let _ = std::fs::remove_file(log);
}

#[tokio::test]
async fn a_refusal_retrying_cannot_fix_is_502_not_queued() {
    let redis = Redis::start().await;
    let s = instance(&redis, "spool-refused", &[]).await;
    let () = redis::cmd("SET").arg("events:ticket").arg("not a stream").query(&mut redis.conn()).expect("SET");
    let e = envelope(
        "status_change",
        "t1",
        json!({"request_id": "t1", "old_status": "open", "new_status": "closed", "changed_by": "u1", "changed_at": now()}),
    );
    let (status, body) = post(&s, &e).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.as_str().is_some_and(|b| b.contains("WRONGTYPE")), "{body}");
    assert_eq!(metric(&s, "sidecar_spool_depth").await, Some(0.0), "not held: it would block every later event");
    let chat = envelope("chat_message", "r", chat_payload("r", 1));
    assert_eq!(post(&s, &chat).await, (202, json!({"status": "accepted"})), "other streams are unaffected");
}
