//! The skip decision (`skip.rs`): entries for rooms without a local
//! connection are acknowledged undecoded, and what needs every entry is not.

use std::path::Path;

use super::*;
use crate::envelope::{EntryFields, Pending, Schemas};
use crate::pipeline::skip::route_may_skip;

fn schemas() -> Arc<Schemas> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/schemas");
    Arc::new(Schemas::load(&dir).expect("the shipped schemas load"))
}

fn routes_file(name: &str) -> Arc<RouteTable> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    Arc::new(RouteTable::load(&path).expect("the routing file loads"))
}

/// A flat stream entry, as ingest hands it over.
fn pending(event_id: &str, event_type: &str, room: &str, payload: &str) -> EntryFields {
    let now = crate::envelope::format_timestamp(&Utc::now());
    EntryFields::from_pairs([
        ("event_id", event_id.as_bytes()),
        ("event_type", event_type.as_bytes()),
        ("timestamp", now.as_bytes()),
        ("room_id", room.as_bytes()),
        ("payload", payload.as_bytes()),
    ])
}

const CHAT_PAYLOAD: &str = r#"{"id":"m1","request_id":"r1","sender_id":"u1","content":"hi","sequence_number":1,"is_screenshot":false,"created_at":"2026-01-16T10:00:00Z"}"#;

/// What became of an entry: acknowledged with its read (passed over), or
/// the outcome on its own ack.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    PassedOver,
    Settled(Outcome),
}

/// Records each entry's fate by index.
#[derive(Clone, Default)]
struct Fates(Arc<Mutex<Vec<Option<Fate>>>>);

impl Fates {
    fn set(&self, i: usize, fate: Fate) {
        let mut all = self.0.lock().expect("lock");
        if all.len() <= i {
            all.resize(i + 1, None);
        }
        assert!(all[i].replace(fate).is_none(), "entry {i} settled twice");
    }
}

impl Settle for Fates {
    fn acknowledge(&mut self, i: usize) {
        self.set(i, Fate::PassedOver);
    }

    fn ack(&mut self, i: usize, _fields: EntryFields) -> Ack {
        let fates = self.clone();
        Ack::new(move |o| fates.set(i, Fate::Settled(o)))
    }
}

impl Rig {
    /// Processes one read of `events:chat`; each entry's fate.
    fn read(&mut self, entries: Vec<(EntryFields, &str)>) -> Vec<Fate> {
        let fates = Fates::default();
        let n = entries.len();
        let mut read = Entries::new(Arc::from("events:chat"), schemas(), Box::new(fates.clone()), Default::default());
        for (fields, id) in entries {
            read.push(id, fields);
        }
        self.pipeline.process(Input::Entries(read));
        let all = fates.0.lock().expect("lock").clone();
        assert_eq!(all.len(), n, "every entry is settled");
        all.into_iter().map(|f| f.expect("every entry is settled")).collect()
    }

    fn process_pending(&mut self, fields: EntryFields, entry_id: &str) -> Fate {
        self.read(vec![(fields, entry_id)]).remove(0)
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
    // Not the instance that checks every entry (another one is).
    r.pipeline.checks_all().set(&Arc::from("events:chat"), false);
    let member = r.conn(CHAT, None, &["r1"]);
    // A payload that is not even JSON: skipped entries are never decoded.
    assert_eq!(r.process_pending(pending(&id(), "chat_message", "r2", "{nope"), "1-0"), Fate::PassedOver);
    assert_eq!(r.skipped(), "sidecar_events_skipped_total 1");
    assert_eq!(r.registry.positions(), vec![(Arc::from("events:chat"), "1-0".to_string())], "its position moved");
    assert!(r.metric("sidecar_events_consumed_total", "event_type=\"chat_message\"").is_some(), "still consumed");
    // The same entry for the member's room is decoded, and refused.
    let refused = r.process_pending(pending(&id(), "chat_message", "r1", "{nope"), "2-0");
    assert!(
        matches!(&refused, Fate::Settled(Outcome::Invalid(reason)) if reason.starts_with("not JSON: field 'payload'")),
        "{refused:?}"
    );
    assert_eq!(
        r.process_pending(pending(&id(), "chat_message", "r1", CHAT_PAYLOAD), "3-0"),
        Fate::Settled(Outcome::Delivered)
    );
    assert_eq!(calls(&member).len(), 1);
    assert_eq!(r.skipped(), "sidecar_events_skipped_total 1");
    // A user with no connection here, then one with.
    let user = r.conn(NOTIFICATION, Some("u7"), &[]);
    let note = r#"{"id":"n1","user_id":"u7","title":"t","message":"m","created_at":"2026-01-16T10:00:00Z"}"#;
    assert_eq!(r.process_pending(pending(&id(), "notification", "user:u8", note), "4-0"), Fate::PassedOver);
    assert_eq!(
        r.process_pending(pending(&id(), "notification", "user:u7", note), "5-0"),
        Fate::Settled(Outcome::Delivered)
    );
    assert_eq!(user.len(), 1);
}

#[test]
fn a_skipped_id_is_remembered_by_the_idempotency_window() {
    let mut r = rig();
    let event_id = id();
    assert_eq!(r.process_pending(pending(&event_id, "chat_message", "r2", CHAT_PAYLOAD), "1-0"), Fate::PassedOver);
    let member = r.conn(CHAT, None, &["r2"]);
    // The publisher's retry, after a connection joined the room here.
    assert_eq!(
        r.process_pending(pending(&event_id, "chat_message", "r2", CHAT_PAYLOAD), "2-0"),
        Fate::Settled(Outcome::Dropped("duplicate"))
    );
    assert!(member.is_empty());
    // A retry that is passed over too is a duplicate, not one more skipped.
    assert_eq!(r.process_pending(pending(&event_id, "chat_message", "r9", CHAT_PAYLOAD), "3-0"), Fate::PassedOver);
    assert!(r.metric("sidecar_events_dropped_total", "duplicate").is_some_and(|l| l.ends_with(" 2")));
    assert_eq!(r.skipped(), "sidecar_events_skipped_total 1");
}

#[test]
fn broadcasts_typing_and_invalid_heads_are_never_skipped() {
    let mut r = rig();
    r.conn(CHAT, None, &["r1"]);
    assert_eq!(
        r.process_pending(pending(&id(), "chat_message", "*", CHAT_PAYLOAD), "1-0"),
        Fate::Settled(Outcome::Delivered)
    );
    let typing = r#"{"user_id":"u1","username":"Ann","is_typing":true}"#;
    assert_ne!(r.process_pending(pending(&id(), "typing_start", "r2", typing), "2-0"), Fate::PassedOver);
    // Someone types in r2 here: a message there may end it, so it is decoded.
    assert_eq!(
        r.process_pending(pending(&id(), "chat_message", "r2", CHAT_PAYLOAD), "3-0"),
        Fate::Settled(Outcome::Delivered)
    );
    assert_eq!(r.skipped(), "sidecar_events_skipped_total 0");
    // A head that fails the envelope's checks is not pending at all.
    let fields = EntryFields::from_pairs([
        ("event_id", &b"not-a-uuid"[..]),
        ("event_type", &b"chat_message"[..]),
        ("timestamp", &b"2026-01-16T10:00:00Z"[..]),
        ("room_id", &b"r2"[..]),
        ("payload", &b"{}"[..]),
    ]);
    assert!(Pending::read(fields).is_err());
}

#[test]
fn the_checking_instance_dead_letters_a_bad_entry_nobody_receives() {
    // CONTRACT section 4: an invalid entry is dead-lettered even when no
    // instance has a connection in its room; the instance that checks
    // (alone, or elected) decodes what it passes over, and only for that.
    let mut r = rig();
    let refused = r.process_pending(pending(&id(), "chat_message", "nobody", "{nope"), "1-0");
    assert!(
        matches!(&refused, Fate::Settled(Outcome::Invalid(reason)) if reason.starts_with("not JSON: field 'payload'")),
        "{refused:?}"
    );
    let missing_content = r#"{"id": "m1"}"#;
    let refused = r.process_pending(pending(&id(), "chat_message", "nobody", missing_content), "2-0");
    assert!(matches!(&refused, Fate::Settled(Outcome::Invalid(_))), "{refused:?}");
    // A good one is still passed over, not delivered to anyone.
    assert_eq!(r.process_pending(pending(&id(), "chat_message", "nobody", CHAT_PAYLOAD), "3-0"), Fate::PassedOver);
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
    assert!(!route_may_skip(&route(&discussion, "user_joined"), "d1"), "history (presence carries its position)");
}

#[test]
fn one_read_is_settled_entry_by_entry_in_stream_order() {
    let mut r = rig();
    r.pipeline.checks_all().set(&Arc::from("events:chat"), false);
    let member = r.conn(CHAT, None, &["r1"]);
    let invalid_head = EntryFields::from_pairs([("event_type", &b"chat_message"[..]), ("payload", &b"{}"[..])]);
    let fates = r.read(vec![
        (pending(&id(), "chat_message", "r2", CHAT_PAYLOAD), "7-0"),
        (pending(&id(), "chat_message", "r1", CHAT_PAYLOAD), "7-1"),
        (invalid_head, "7-2"),
        (pending(&id(), "chat_message", "r3", "{nope"), "7-3"),
    ]);
    assert_eq!(fates[0], Fate::PassedOver);
    assert_eq!(fates[1], Fate::Settled(Outcome::Delivered));
    assert!(
        matches!(&fates[2], Fate::Settled(Outcome::Invalid(reason)) if reason.contains("event_id")),
        "{:?}",
        fates[2]
    );
    assert_eq!(fates[3], Fate::PassedOver);
    assert_eq!(calls(&member).len(), 1);
    assert_eq!(r.registry.positions(), vec![(Arc::from("events:chat"), "7-3".to_string())], "the read's last entry");
    assert_eq!(r.skipped(), "sidecar_events_skipped_total 2");
}
