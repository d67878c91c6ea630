//! The delivery-latency histogram agrees with what clients measure.

mod support;

use std::time::Duration;

use serde_json::json;
use support::http::request;
use support::*;

fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

/// Tolerance: the sidecar measures from the envelope's timestamp to the
/// frame queued for the socket; the client adds the socket, Node's event
/// loop and the driver's pipe. On loopback that is a few milliseconds.
const TOLERANCE_MS: f64 = 10.0;

#[tokio::test]
async fn the_delivery_histogram_agrees_with_client_latency() {
    let redis = Redis::start().await;
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url())]).await;
    let mut d = Driver::start().await;
    d.connect("c", &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({})).await.expect("connects");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    let (_, before) = request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    let (count0, sum0) = (
        sample(&before, "sidecar_event_delivery_seconds_count"),
        sample(&before, "sidecar_event_delivery_seconds_sum"),
    );
    let delivered0 = sample(&before, "sidecar_events_delivered_total");
    let mut conn = redis.conn();
    let mut client_total = 0.0;
    let n = 200;
    for i in 0..n {
        let e = envelope("chat_message", "r", chat_payload("r", i));
        let sent = now_ms();
        xadd_data_on(&mut conn, "events:chat", &e);
        let m = d.message("c", "ReceiveMessage", WAIT).await.expect("delivered");
        client_total += m["at"].as_f64().expect("at") - sent;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, text) = request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    let count = sample(&text, "sidecar_event_delivery_seconds_count") - count0;
    let sum_ms = (sample(&text, "sidecar_event_delivery_seconds_sum") - sum0) * 1000.0;
    assert_eq!(count as u64, n, "one observation per delivered event");
    let (sidecar_mean, client_mean) = (sum_ms / count, client_total / n as f64);
    assert!(
        sidecar_mean <= client_mean + 1.0 && client_mean - sidecar_mean <= TOLERANCE_MS,
        "sidecar mean {sidecar_mean:.3} ms vs client mean {client_mean:.3} ms"
    );
    assert_eq!((sample(&text, "sidecar_events_delivered_total") - delivered0) as u64, n);
    assert!(text.contains("sidecar_connections{hub=\"chat\",transport=\"websockets\"} 1"), "{text}");
    assert!(
        text.contains("sidecar_events_consumed_total{stream=\"events:chat\",event_type=\"chat_message\"} 200"),
        "{text}"
    );
}

#[tokio::test]
async fn a_fresh_instance_shows_every_family_the_contract_names() {
    // CONTRACT section 8's list, each with a sample before any client or
    // event: zeros for the labelled series known at start (hubs on every
    // transport, routed event types per stream read, drop reasons, streams).
    let families = [
        "sidecar_connections{hub=\"chat\",transport=\"websockets\"}",
        "sidecar_connections{hub=\"ticket\",transport=\"longpolling\"}",
        "sidecar_events_consumed_total{stream=\"events:chat\",event_type=\"chat_message\"}",
        "sidecar_events_consumed_total{stream=\"events:remote\",event_type=\"remote_session_end\"}",
        "sidecar_events_delivered_total",
        "sidecar_event_delivery_seconds_count",
        "sidecar_broadcast_seconds_count",
        "sidecar_events_coalesced_total",
        "sidecar_events_dropped_total{reason=\"stale\"}",
        "sidecar_stream_lag{stream=\"events:chat\"}",
        "sidecar_stream_pending{stream=\"events:notification\"}",
        "sidecar_slow_consumer_disconnects_total",
        "sidecar_redis_up",
    ];
    let redis = Redis::start().await;
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url())]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, page) = request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
        let missing: Vec<_> =
            families.iter().filter(|f| !page.lines().any(|l| l.starts_with(&format!("{f} ")))).collect();
        if missing.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "missing from a fresh instance: {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The families of README's *Observability > Metrics* table, as the
/// exposition names them (a counter's `_total` is its samples' suffix).
fn readme_families() -> Vec<String> {
    let readme = std::fs::read_to_string(procs::root().join("README.md")).expect("README.md");
    let section = readme.split("\n### Metrics").nth(1).expect("README.md has ### Metrics");
    let section = section.split("\n### ").next().expect("the section");
    let families: Vec<String> = section
        .lines()
        .filter_map(|row| row.strip_prefix("| `sidecar_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("sidecar_{}", name.strip_suffix("_total").unwrap_or(name)))
        .collect();
    assert!(families.len() >= 13, "{families:?}");
    families
}

/// The families of `wanted` with no sample on `page`.
fn without_samples<'a>(page: &str, wanted: &'a [String]) -> Vec<&'a String> {
    let sampled = |family: &str| {
        page.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.strip_prefix(family))
            .any(|rest| ["{", " ", "_total", "_bucket", "_count", "_sum"].iter().any(|suffix| rest.starts_with(suffix)))
    };
    wanted.iter().filter(|f| !sampled(f)).collect()
}

#[tokio::test]
async fn a_fresh_instance_shows_every_family_the_readme_lists() {
    // README: "a fresh instance's page has every family below", save the
    // ones it names as appearing later: failed token checks (by a reason
    // known only when one fails) and, without Redis, the per-stream ones.
    let families = readme_families();
    let redis = Redis::start().await;
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url())]).await;
    let later = ["sidecar_auth_failures"];
    let wanted: Vec<String> = families.iter().filter(|f| !later.contains(&f.as_str())).cloned().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, page) = request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
        let missing = without_samples(&page, &wanted);
        if missing.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "missing from a fresh instance with Redis: {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let s = Sidecar::start(&[]).await;
    let later = ["sidecar_auth_failures", "sidecar_stream_lag", "sidecar_stream_pending", "sidecar_dead_letters"];
    let wanted: Vec<String> = families.iter().filter(|f| !later.contains(&f.as_str())).cloned().collect();
    let (_, page) = request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    let missing = without_samples(&page, &wanted);
    assert!(missing.is_empty(), "missing from a fresh instance on the in-process bus: {missing:?}");
}
