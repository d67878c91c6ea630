//! The skip decision (`skip.rs`): entries for rooms without a local
//! connection are acknowledged undecoded, and what needs every entry is not.

use std::path::Path;

use super::*;
use crate::envelope::{EntryFields, Fields, Pending, Schemas};
use crate::pipeline::skip::route_may_skip;

fn schemas() -> Arc<Schemas> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/schemas");
    Arc::new(Schemas::load(&dir).expect("the shipped schemas load"))
}

fn routes_file(name: &str) -> Arc<RouteTable> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    Arc::new(RouteTable::load(&path).expect("the routing file loads"))
}

/// A flat stream entry, pending as ingest hands it over.
fn pending(event_id: &str, event_type: &str, room: &str, payload: &str) -> Pending {
    let now = crate::envelope::format_timestamp(&Utc::now());
    let fields: Fields = Arc::new(EntryFields::from_pairs([
        ("event_id", event_id.as_bytes()),
        ("event_type", event_type.as_bytes()),
        ("timestamp", now.as_bytes()),
        ("room_id", room.as_bytes()),
        ("payload", payload.as_bytes()),
    ]));
    Pending::new(&fields, &schemas()).expect("a valid head")
}

const CHAT_PAYLOAD: &str = r#"{"id":"m1","request_id":"r1","sender_id":"u1","content":"hi","sequence_number":1,"is_screenshot":false,"created_at":"2026-01-16T10:00:00Z"}"#;

impl Rig {
    fn process_pending(&mut self, pending: Pending, entry_id: &str) -> Outcome {
        let outcome = Arc::new(Mutex::new(None));
        let slot = outcome.clone();
        self.pipeline.process(Input {
            event: Event::Pending(pending),
            ack: Ack::new(move |o| *slot.lock().expect("lock") = Some(o)),
            source: Arc::from("events:chat"),
            entry_id: Some(entry_id.to_string()),
            received: Instant::now(),
        });
        let outcome = outcome.lock().expect("lock").take();
        outcome.expect("every processed event is resolved")
    }

    fn skipped(&self) -> String {
        self.metric("sidecar_events_skipped_total", "").unwrap_or_default()
    }
}

fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[test]
fn an_entry_for_a_room_without_local_connections_is_skipped_undecoded() {
    let mut r = rig();
    let member = r.conn(CHAT, None, &["r1"]);
    // A payload that is not even JSON: skipped entries are never decoded.
    assert_eq!(r.process_pending(pending(&id(), "chat_message", "r2", "{nope"), "1-0"), Outcome::Dropped("skipped"));
    assert_eq!(r.skipped(), "sidecar_events_skipped_total 1");
    assert_eq!(r.registry.positions(), vec![(Arc::from("events:chat"), "1-0".to_string())], "its position moved");
    assert!(r.metric("sidecar_events_consumed_total", "event_type=\"chat_message\"").is_some(), "still consumed");
    // The same entry for the member's room is decoded, and refused.
    let refused = r.process_pending(pending(&id(), "chat_message", "r1", "{nope"), "2-0");
    assert!(
        matches!(&refused, Outcome::Invalid(reason) if reason.starts_with("not JSON: field 'payload'")),
        "{refused:?}"
    );
    assert_eq!(r.process_pending(pending(&id(), "chat_message", "r1", CHAT_PAYLOAD), "3-0"), Outcome::Delivered);
    assert_eq!(calls(&member).len(), 1);
    assert_eq!(r.skipped(), "sidecar_events_skipped_total 1");
    // A user with no connection here, then one with.
    let user = r.conn(NOTIFICATION, Some("u7"), &[]);
    let note = r#"{"id":"n1","user_id":"u7","title":"t","message":"m","created_at":"2026-01-16T10:00:00Z"}"#;
    assert_eq!(r.process_pending(pending(&id(), "notification", "user:u8", note), "4-0"), Outcome::Dropped("skipped"));
    assert_eq!(r.process_pending(pending(&id(), "notification", "user:u7", note), "5-0"), Outcome::Delivered);
    assert_eq!(user.len(), 1);
}

#[test]
fn a_skipped_id_is_remembered_by_the_idempotency_window() {
    let mut r = rig();
    let event_id = id();
    assert_eq!(
        r.process_pending(pending(&event_id, "chat_message", "r2", CHAT_PAYLOAD), "1-0"),
        Outcome::Dropped("skipped")
    );
    let member = r.conn(CHAT, None, &["r2"]);
    // The publisher's retry, after a connection joined the room here.
    assert_eq!(
        r.process_pending(pending(&event_id, "chat_message", "r2", CHAT_PAYLOAD), "2-0"),
        Outcome::Dropped("duplicate")
    );
    assert!(member.is_empty());
}

#[test]
fn broadcasts_typing_and_invalid_heads_are_never_skipped() {
    let mut r = rig();
    r.conn(CHAT, None, &["r1"]);
    assert_eq!(r.process_pending(pending(&id(), "chat_message", "*", CHAT_PAYLOAD), "1-0"), Outcome::Delivered);
    let typing = r#"{"user_id":"u1","username":"Ann","is_typing":true}"#;
    assert_ne!(r.process_pending(pending(&id(), "typing_start", "r2", typing), "2-0"), Outcome::Dropped("skipped"));
    // Someone types in r2 here: a message there may end it, so it is decoded.
    assert_eq!(r.process_pending(pending(&id(), "chat_message", "r2", CHAT_PAYLOAD), "3-0"), Outcome::Delivered);
    assert_eq!(r.skipped(), "sidecar_events_skipped_total 0");
    // A head that fails the envelope's checks is not pending at all.
    let fields: Fields = Arc::new(EntryFields::from_pairs([
        ("event_id", &b"not-a-uuid"[..]),
        ("event_type", &b"chat_message"[..]),
        ("timestamp", &b"2026-01-16T10:00:00Z"[..]),
        ("room_id", &b"r2"[..]),
        ("payload", &b"{}"[..]),
    ]));
    assert!(Pending::new(&fields, &schemas()).is_none());
}

#[test]
fn routes_that_need_every_entry_are_not_skippable() {
    let shipped = shipped();
    let route = |t: &Arc<RouteTable>, e: &str| t.route(e).cloned().expect("routed");
    assert!(route_may_skip(&route(&shipped, "chat_message"), "r1"));
    assert!(!route_may_skip(&route(&shipped, "chat_message"), "*"), "a broadcast");
    assert!(!route_may_skip(&route(&shipped, "typing_start"), "r1"), "coalesced");
    let push = routes_file("tests/fixtures/routes-push.toml");
    assert!(!route_may_skip(&route(&push, "notification"), "user:u1"), "browser push");
    let discussion = routes_file("protocol/routes-discussion.toml");
    assert!(!route_may_skip(&route(&discussion, "response_posted"), "d1"), "history (batch)");
    assert!(!route_may_skip(&route(&discussion, "response_edited"), "d1"), "history");
    assert!(!route_may_skip(&route(&discussion, "typing_started"), "d1"), "roster");
    assert!(route_may_skip(&route(&discussion, "user_joined"), "d1"));
}
