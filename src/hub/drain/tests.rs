//! The drain, the closes after a hole and those for events read too late,
//! with paused time: who is told to go, why, and how the closes are spread
//! over the window.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{close_for_hole, close_lost, drain};
use crate::hub::testkit::{handshake, invoke, kit, kit_with_handoff, messages, MemoryStore, NoReplay, CHAT, TICKET};
use crate::hub::HubSession;
use crate::sync::Unpoisoned;
use crate::telemetry::labels::{ContinuityCause, Transport};
use crate::transport::{Kick, Session};

fn kicked(sessions: &[HubSession], why: Kick) -> usize {
    sessions.iter().filter(|s| s.outbox().kicked() == Some(why)).count()
}

#[tokio::test(start_paused = true)]
async fn the_drain_closes_every_connection_spread_over_the_window() {
    let k = kit(&[]);
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(k.open(false).await);
    }
    let hubs = k.hubs.clone();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(async move { drain(&hubs, Duration::from_secs(1)).await });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(kicked(&sessions, Kick::ServerShutdown), 1, "ten steps of 100 ms, one connection each");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(kicked(&sessions, Kick::ServerShutdown), 2);
    task.await.expect("the drain returns");
    assert_eq!(kicked(&sessions, Kick::ServerShutdown), 3);
    assert_eq!(started.elapsed(), Duration::from_millis(200), "two pauses of 100 ms between three closes");
}

#[tokio::test(start_paused = true)]
async fn a_drained_connection_is_told_to_reconnect() {
    let k = kit(&[]);
    let s = k.open(false).await;
    drain(&k.hubs, Duration::ZERO).await;
    let close = s.close_frame(s.outbox().kicked().expect("kicked")).expect("a Close");
    assert_eq!(close.as_bytes(), b"{\"type\":7,\"allowReconnect\":true}\x1e");
}

#[tokio::test(start_paused = true)]
async fn parked_sessions_are_finished_by_the_drain() {
    let k = kit(&[]);
    let (token, s) = k.negotiated(true, Default::default()).await;
    k.hubs.parked.park(token.clone(), s);
    assert_eq!(k.hubs.registry.len(), 1, "a parked session stays in fan-out");
    drain(&k.hubs, Duration::ZERO).await;
    assert!(k.hubs.parked.take(&token, CHAT).is_none());
    assert!(k.hubs.registry.is_empty());
    assert!(!k.hubs.tokens.knows(&token));
}

#[tokio::test(start_paused = true)]
async fn a_hole_closes_the_connections_of_the_hubs_its_stream_feeds() {
    let k = kit(&[]);
    let mut chat = k.open(false).await;
    let mut ticket = k.session(TICKET, Transport::WebSockets, false);
    handshake(&mut ticket).await;
    chat.receive(&invoke("1", "JoinRoom", json!(["r1"]))).await;
    messages(&chat.outbox());
    close_for_hole(&k.hubs, &[CHAT], ContinuityCause::StreamTrimmed, Duration::ZERO).await;
    assert_eq!(chat.outbox().kicked(), Some(Kick::ContinuityLost));
    assert_eq!(ticket.outbox().kicked(), None);
    let rendered = k.hubs.metrics.render();
    assert!(
        rendered.lines().any(|l| l.starts_with("sidecar_continuity_closes")
            && l.contains("cause=\"stream_trimmed\"")
            && l.ends_with(" 1")),
        "{rendered}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hole_of_unknown_reach_closes_every_hub() {
    let k = kit(&[]);
    let chat = k.open(false).await;
    let mut ticket = k.session(TICKET, Transport::WebSockets, false);
    handshake(&mut ticket).await;
    close_for_hole(&k.hubs, &[], ContinuityCause::StreamLost, Duration::ZERO).await;
    assert_eq!(
        (chat.outbox().kicked(), ticket.outbox().kicked()),
        (Some(Kick::ContinuityLost), Some(Kick::ContinuityLost))
    );
}

#[tokio::test(start_paused = true)]
async fn connections_sent_as_lost_are_closed_once_and_counted_once() {
    let k = kit(&[]);
    let a = k.open(false).await;
    let b = k.open(false).await;
    let other = k.open(false).await;
    let entry = |s: &HubSession| k.hubs.registry.snapshot().into_iter().find(|e| Arc::ptr_eq(&e.outbox, &s.outbox()));
    let (ea, eb) = (entry(&a).expect("a in fan-out"), entry(&b).expect("b in fan-out"));
    let (lost, lost_rx) = tokio::sync::mpsc::unbounded_channel();
    // Two batches naming a twice; b is closing already (it reached its limit).
    b.outbox().kick(Kick::SlowConsumer);
    lost.send(vec![ea.clone(), eb]).expect("open");
    lost.send(vec![ea]).expect("open");
    drop(lost);
    close_lost(k.hubs.metrics.clone(), lost_rx, Duration::from_secs(1)).await;
    assert_eq!(a.outbox().kicked(), Some(Kick::ContinuityLost));
    assert_eq!(b.outbox().kicked(), Some(Kick::SlowConsumer), "the first reason stands");
    assert_eq!(other.outbox().kicked(), None);
    let rendered = k.hubs.metrics.render();
    assert!(
        rendered.lines().any(|l| l.starts_with("sidecar_continuity_closes")
            && l.contains("cause=\"instance_lagged\"")
            && l.ends_with(" 1")),
        "{rendered}"
    );
}

/// CONTRACT section 14, a socket that drops during the drain: a stateful
/// session whose socket dropped after the drain began and before its turn
/// came was parked, and the drain's kick found no transport to hand it off:
/// it waited out of fan-out for a client that resumed elsewhere and was
/// refused (404), and kept the drain waiting until its deadline. It is
/// handed off as the others are.
#[tokio::test(start_paused = true)]
async fn a_session_parked_during_the_drain_is_handed_off_on_its_turn() {
    let store = Arc::new(MemoryStore::default());
    let handoff = crate::hub::Handoff { store: store.clone(), catch_up: Arc::new(NoReplay::default()) };
    let k = kit_with_handoff(&[], handoff);
    let mut sessions = Vec::new();
    for _ in 0..2 {
        sessions.push(k.negotiated(true, Default::default()).await);
    }
    let hubs = k.hubs.clone();
    let task = tokio::spawn(async move { drain(&hubs, Duration::from_secs(1)).await });
    tokio::time::sleep(Duration::from_millis(1)).await;
    // One step of the spread has gone: the other session's socket drops now.
    let waiting = sessions.iter().position(|(_, s)| s.outbox().kicked().is_none()).expect("one not yet told");
    let (token, session) = sessions.swap_remove(waiting);
    let conn = session.conn();
    k.hubs.parked.park(token.clone(), session);
    task.await.expect("the drain returns");
    assert_eq!(*store.saved.locked(), std::slice::from_ref(&token), "handed off: saved for its client's resume");
    assert!(k.hubs.parked.take_any(&token).is_none(), "no longer parked");
    assert!(!k.hubs.registry.snapshot().iter().any(|e| e.id == conn), "out of this instance's fan-out");
}
