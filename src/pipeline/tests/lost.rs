//! Events read too late (`lost.rs`): a stale event whose stream entry was
//! appended longer ago than the maximum age names the connections of its
//! room, once each, to be closed; a publisher's stale event, one without an
//! entry, or a typing state names nobody.

use super::*;

/// An entry id appended `ago` before now.
fn entry_id(ago: chrono::Duration) -> String {
    format!("{}-0", (Utc::now() - ago).timestamp_millis())
}

fn stale(event_type: &str, room: &str, payload: Value) -> Envelope {
    Envelope { timestamp: Utc::now() - chrono::Duration::seconds(400), ..event(event_type, room, payload) }
}

#[test]
fn an_event_read_after_its_entry_went_stale_names_its_rooms_connections_once() {
    let mut r = rig();
    let (lost, mut lost_rx) = lost_channel();
    r.pipeline = std::mem::replace(&mut r.pipeline, rig().pipeline).with_lost(lost);
    let a = r.conn(CHAT, None, &["r1"]);
    let b = r.conn(CHAT, None, &["r1", "r2"]);
    let _elsewhere = r.conn(CHAT, None, &["r3"]);
    let old = entry_id(chrono::Duration::seconds(400));
    for room in ["r1", "r2", "r1"] {
        let outcome = r.process_at(stale("chat_message", room, json!({})), Some(&old));
        assert_eq!(outcome, Outcome::Dropped("stale"), "the drop stands");
    }
    assert!(lost_rx.try_recv().is_err(), "nothing before the read is done with");
    r.pipeline.send_lost();
    let named: Vec<_> = lost_rx.try_recv().expect("one batch").iter().map(|c| c.id).collect();
    assert_eq!(named, [1, 2], "the members of r1 and r2, each once");
    assert!(a.is_empty() && b.is_empty(), "nothing delivered");
    r.pipeline.send_lost();
    assert!(lost_rx.try_recv().is_err(), "forgotten once sent");
    assert!(r.metric("sidecar_events_dropped_total", "stale").is_some_and(|l| l.ends_with(" 3")));
}

#[test]
fn a_publishers_old_event_or_a_typing_state_names_nobody() {
    let mut r = rig();
    let (lost, mut lost_rx) = lost_channel();
    r.pipeline = std::mem::replace(&mut r.pipeline, rig().pipeline).with_lost(lost);
    r.conn(CHAT, None, &["r1"]);
    // Appended a second ago: the publisher's old event.
    let recent = entry_id(chrono::Duration::seconds(1));
    assert_eq!(r.process_at(stale("chat_message", "r1", json!({})), Some(&recent)), Outcome::Dropped("stale"));
    // Not from a stream entry: nothing says when it was appended.
    assert_eq!(r.process(stale("chat_message", "r1", json!({}))), Outcome::Dropped("stale"));
    // A typing state a slow client may lose anyway.
    let old = entry_id(chrono::Duration::seconds(400));
    let typing = stale("typing_start", "r1", json!({"user_id": "u1", "room_id": "r1"}));
    assert_eq!(r.process_at(typing, Some(&old)), Outcome::Dropped("stale"));
    r.pipeline.send_lost();
    assert!(lost_rx.try_recv().is_err());
}
