//! The registry's bookkeeping: groups and users per hub, protocol slots,
//! and the positions a connection enters and leaves fan-out at.

use super::*;
use crate::fanout::{Frame, Payload, Target};

fn entry(id: ConnId, hub: usize, user: Option<&str>, slot: usize, transport: &'static str) -> Arc<ConnEntry> {
    Arc::new(ConnEntry { slot, transport, ..ConnEntry::for_test(id, hub, user, 16) })
}

fn groups(names: &[&str]) -> Vec<Box<str>> {
    names.iter().map(|g| Box::from(*g)).collect()
}

fn frame() -> Frame {
    Frame { by_slot: [Some(Payload::text("j".into())), Some(Payload::binary(b"m"))], droppable: false }
}

fn stream(name: &str) -> Arc<str> {
    Arc::from(name)
}

#[test]
fn a_connection_enters_with_its_groups_at_the_positions_of_that_instant() {
    let reg = Registry::new(1, 2);
    reg.advance(&stream("s1"), "1-1");
    let e = entry(1, 0, Some("u"), 0, "websockets");
    let at = reg.add_with_groups(e.clone(), &groups(&["a", "b", "c"]));
    assert_eq!(at, [(stream("s1"), "1-1".to_string())]);
    assert_eq!(reg.groups_of(1), groups(&["a", "b"]), "at most max_groups");
    reg.add_with_groups(entry(2, 0, None, 0, "websockets"), &groups(&["a", "a"]));
    assert_eq!(reg.groups_of(2), groups(&["a"]), "a group once");
    assert_eq!(reg.deliver(Target::Group { hub: 0, group: "a" }, &frame()).queued, 2);
    assert_eq!(reg.deliver(Target::Group { hub: 0, group: "c" }, &frame()).queued, 0);
    assert_eq!(reg.deliver(Target::User { hub: 0, user: "u" }, &frame()).queued, 1);
    assert_eq!(e.outbox.len(), 2);
}

#[test]
fn detach_takes_a_connection_out_with_its_groups_and_the_positions() {
    let reg = Registry::new(1, 10);
    let e = entry(1, 0, Some("u"), 0, "websockets");
    reg.add_with_groups(e.clone(), &groups(&["a", "b"]));
    reg.deliver_at(Target::Group { hub: 0, group: "a" }, &frame(), Some((&stream("s1"), "1-5".into())));
    let (left, at) = reg.detach(1);
    assert_eq!(left, groups(&["a", "b"]));
    assert_eq!(at, [(stream("s1"), "1-5".to_string())], "the entry it has is the one it left at");
    assert!(reg.is_empty() && reg.user_connections("u") == 0);
    let d = reg.deliver_at(Target::Group { hub: 0, group: "a" }, &frame(), Some((&stream("s1"), "1-6".into())));
    assert_eq!(d.queued, 0);
    assert_eq!(e.outbox.len(), 1, "nothing after the cut");
    assert_eq!(reg.detach(1), (Vec::new(), vec![(stream("s1"), "1-6".to_string())]), "a second detach finds nothing");
}

#[test]
fn each_stream_keeps_its_own_position() {
    let reg = Registry::new(1, 10);
    reg.advance(&stream("a"), "1-0");
    reg.advance(&stream("b"), "7-0");
    reg.advance(&stream("a"), "2-0");
    let mut at = reg.positions();
    at.sort();
    assert_eq!(at, [(stream("a"), "2-0".to_string()), (stream("b"), "7-0".to_string())]);
    // A delivery to nobody still moves its stream.
    reg.deliver_at(Target::All { hub: 0 }, &frame(), Some((&stream("b"), "8-0".into())));
    assert!(reg.positions().contains(&(stream("b"), "8-0".to_string())));
}

#[test]
fn protocol_slots_in_use_are_counted() {
    let reg = Registry::new(1, 10);
    assert!(!reg.slot_in_use(0) && !reg.slot_in_use(1));
    reg.add(entry(1, 0, None, 1, "websockets"));
    reg.add_with_groups(entry(2, 0, None, 1, "websockets"), &[]);
    assert!(!reg.slot_in_use(0) && reg.slot_in_use(1));
    reg.remove(1);
    assert!(reg.slot_in_use(1), "one binary connection is left");
    reg.detach(2);
    assert!(!reg.slot_in_use(1), "events need no MessagePack encoding now");
}

#[test]
fn each_connection_gets_the_encoding_of_its_protocol() {
    let reg = Registry::new(1, 10);
    let json = entry(1, 0, None, 0, "websockets");
    let binary = entry(2, 0, None, 1, "websockets");
    reg.add(json.clone());
    reg.add(binary.clone());
    let only_json = Frame { by_slot: [Some(Payload::text("j".into())), None], droppable: false };
    assert_eq!(reg.deliver(Target::All { hub: 0 }, &only_json).queued, 1, "no encoding, no frame");
    reg.deliver(Target::All { hub: 0 }, &frame());
    assert_eq!(json.outbox.take(10).frames.iter().map(|p| p.as_bytes().to_vec()).collect::<Vec<_>>(), [b"j", b"j"]);
    assert_eq!(binary.outbox.take(10).frames.iter().map(|p| p.as_bytes().to_vec()).collect::<Vec<_>>(), [b"m"]);
}

#[test]
fn users_are_counted_across_hubs_and_connections_by_hub_and_transport() {
    let reg = Registry::new(2, 10);
    reg.add(entry(1, 0, Some("u"), 0, "websockets"));
    reg.add(entry(2, 1, Some("u"), 0, "longpolling"));
    reg.add(entry(3, 1, Some("v"), 0, "longpolling"));
    assert_eq!((reg.user_connections("u"), reg.user_connections("v"), reg.user_connections("w")), (2, 1, 0));
    let counts = reg.count_by_hub_transport();
    assert_eq!((counts.get(&(0, "websockets")), counts.get(&(1, "longpolling"))), (Some(&1), Some(&2)));
    assert_eq!(reg.deliver(Target::User { hub: 1, user: "u" }, &frame()).queued, 1, "a user target stays in its hub");
    assert_eq!(reg.snapshot().len(), 3);
    let mut seen = Vec::new();
    reg.for_each(|e| seen.push(e.id));
    seen.sort_unstable();
    assert_eq!(seen, [1, 2, 3]);
}

#[test]
fn unknown_connections_are_answered_not_panicked_on() {
    let reg = Registry::new(1, 10);
    assert_eq!(reg.join(9, "a"), Err(JoinError::Closed));
    assert!(!reg.leave(9, "a"));
    assert!(reg.groups_of(9).is_empty());
    assert!(reg.remove(9).is_empty());
    reg.add(entry(1, 0, None, 0, "websockets"));
    assert_eq!(reg.join(1, "a"), Ok(true));
    assert_eq!(reg.join(1, "a"), Ok(false), "already in it");
    assert!(!reg.leave(1, "b"), "not in it");
    assert!(reg.leave(1, "a"));
    assert!(!reg.leave(1, "a"));
    assert_eq!(reg.deliver(Target::Group { hub: 5, group: "a" }, &frame()).queued, 0, "no such hub");
}

#[test]
fn a_closed_outbox_is_skipped_without_counting() {
    let reg = Registry::new(1, 10);
    let e = entry(1, 0, None, 0, "websockets");
    reg.add(e.clone());
    e.outbox.finish();
    let d = reg.deliver(Target::All { hub: 0 }, &frame());
    assert_eq!((d.queued, d.dropped, d.overflowed), (0, 0, 0));
}
