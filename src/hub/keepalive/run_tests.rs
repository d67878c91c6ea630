//! The keep-alive task on a `Hubs`, with tokio's clock paused: pings per
//! interval, the client timeout once the client has pinged, token expiry.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::run_keepalive;
use crate::hub::testkit::{handshake, kit, record, texts, user, Kit, CHAT};
use crate::hub::{HubSession, Identity};
use crate::telemetry::labels::Transport;
use crate::transport::{Kick, Payload, Session};

const PING: &str = "{\"type\":6}";

/// Keep-alive every second, clients dropped after two silent seconds.
fn fast() -> Kit {
    kit(&[("SIDECAR_KEEPALIVE_SECONDS", "1"), ("SIDECAR_CLIENT_TIMEOUT_SECONDS", "2")])
}

fn start(k: &Kit) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_keepalive(k.hubs.clone(), stop.clone()));
    (stop, task)
}

fn pings(s: &HubSession) -> usize {
    texts(&s.outbox()).iter().filter(|t| *t == PING).count()
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn each_connection_is_pinged_once_per_interval_in_its_protocol() {
    let k = fast();
    let json = k.open(false).await;
    let mut binary = k.session(CHAT, Transport::WebSockets, false);
    binary.receive(b"{\"protocol\":\"messagepack\",\"version\":1}\x1e").await;
    binary.outbox().take(10);
    let (stop, task) = start(&k);
    sleep_ms(3_500).await;
    assert_eq!(pings(&json), 3);
    let frames = binary.outbox().take(100).frames;
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| f.as_bytes() == [0x02, 0x91, 0x06]), "[6] with its length prefix: {frames:?}");
    stop.cancel();
    task.await.expect("the task ends when stopped");
}

#[tokio::test(start_paused = true)]
async fn with_the_default_interval_every_connection_is_pinged_once_in_15_seconds() {
    let k = kit(&[]);
    let sessions: Vec<HubSession> = {
        let mut v = Vec::new();
        for _ in 0..20 {
            v.push(k.open(false).await);
        }
        v
    };
    let mut polling = k.session(CHAT, Transport::LongPolling, false);
    handshake(&mut polling).await;
    let (stop, _task) = start(&k);
    // The handshake answer was sent at 0: the first ping comes an interval
    // after it, by its first checkpoint past 15 s (a quarter interval, 3.75 s).
    sleep_ms(14_950).await;
    assert!(sessions.iter().all(|s| pings(s) == 0), "nothing before an interval without frames");
    sleep_ms(4_850).await;
    let counts: Vec<usize> = sessions.iter().map(pings).collect();
    assert!(counts.iter().all(|&n| n == 1), "spread over the interval, once each: {counts:?}");
    sleep_ms(15_000).await;
    let counts: Vec<usize> = sessions.iter().map(pings).collect();
    assert!(counts.iter().all(|&n| n == 1), "then once per interval: {counts:?}");
    assert_eq!(pings(&polling), 0, "Long Polling's polls keep it alive; a ping would only end a poll early");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_dropped_only_after_its_first_ping() {
    let k = fast();
    let mut s = k.open(false).await;
    let (stop, _task) = start(&k);
    sleep_ms(10_000).await;
    assert_eq!(s.outbox().kicked(), None, "a client that never pinged is never timed out");
    assert!(pings(&s) >= 9);
    s.receive(&record(json!({"type": 6}))).await; // t = 10 s
    sleep_ms(1_500).await;
    assert_eq!(s.outbox().kicked(), None);
    sleep_ms(2_000).await; // t = 13.5 s: silent for 3.5 s, checked at 13 s
    assert_eq!(s.outbox().kicked(), Some(Kick::ClientTimeout));
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_client_that_keeps_pinging_stays() {
    let k = fast();
    let mut s = k.open(false).await;
    let (stop, _task) = start(&k);
    for _ in 0..10 {
        s.receive(&record(json!({"type": 6}))).await;
        sleep_ms(1_500).await;
    }
    assert_eq!(s.outbox().kicked(), None);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_silent_long_polling_client_is_dropped_without_pinging() {
    let k = fast();
    let mut s = k.session(CHAT, Transport::LongPolling, false);
    handshake(&mut s).await;
    let (stop, _task) = start(&k);
    sleep_ms(1_500).await;
    s.touch(); // a poll arrived at 1.5 s
    sleep_ms(1_000).await;
    assert_eq!(s.outbox().kicked(), None);
    sleep_ms(2_000).await;
    assert_eq!(s.outbox().kicked(), Some(Kick::ClientTimeout));
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_closes_its_connection_at_the_next_check() {
    let k = fast();
    let expired = Identity { expires_at_ms: Some(1), ..user("u1", "Ann") };
    let later = Identity { expires_at_ms: Some(u64::MAX), ..user("u2", "Bob") };
    let mut a = k.session_as(CHAT, Transport::WebSockets, false, expired);
    let mut b = k.session_as(CHAT, Transport::WebSockets, false, later);
    handshake(&mut a).await;
    handshake(&mut b).await;
    let (stop, _task) = start(&k);
    sleep_ms(1_100).await;
    assert_eq!(a.outbox().kicked(), Some(Kick::TokenExpired));
    assert_eq!(b.outbox().kicked(), None);
    stop.cancel();
}

/// Pings seen in `outbox` until a ping arrives, stepping 10 ms at a time;
/// returns how long that took (at most `limit_ms`).
async fn until_pinged(s: &HubSession, limit_ms: u64) -> Option<u64> {
    for waited in (10..=limit_ms).step_by(10) {
        sleep_ms(10).await;
        if pings(s) > 0 {
            return Some(waited);
        }
    }
    None
}

#[tokio::test(start_paused = true)]
async fn a_connection_sent_something_every_interval_is_not_pinged_and_an_idle_one_is_once_per_interval() {
    let k = fast();
    let busy = k.open(false).await;
    let idle = k.open(false).await;
    let (stop, _task) = start(&k);
    sleep_ms(1_500).await;
    let (busy_before, idle_before) = (pings(&busy), pings(&idle));
    for _ in 0..10 {
        busy.outbox().push_critical(Payload::text("{\"type\":1}\u{1e}".into())).expect("room");
        sleep_ms(900).await; // a frame more often than the 1 s interval
    }
    assert_eq!(pings(&busy), 0, "no ping while frames flow");
    assert_eq!(pings(&idle), 9, "once per interval for the 9 s");
    assert!(busy_before <= 1 && idle_before <= 1, "before: {busy_before}, {idle_before}");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn after_its_last_frame_a_connection_is_pinged_within_an_interval_and_a_checkpoint() {
    let k = fast();
    let s = k.open(false).await;
    let (stop, _task) = start(&k);
    for start_ms in [2_330, 1_070, 1_610] {
        sleep_ms(start_ms).await;
        pings(&s);
        s.outbox().push_critical(Payload::text("{\"type\":1}\u{1e}".into())).expect("room");
        let waited = until_pinged(&s, 3_000).await.expect("pinged");
        // An interval (1 s), at most a checkpoint (250 ms) and a tick (250 ms) more.
        assert!((1_000..=1_500).contains(&waited), "pinged {waited} ms after the frame");
    }
    stop.cancel();
}
