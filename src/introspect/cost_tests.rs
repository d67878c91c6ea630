// A measurement, not a check of behaviour (ignored by default; run with
// `cargo test --release --lib introspect::cost_tests -- --ignored --nocapture`):
// what one instance's share of an introspection answer costs when it holds
// a third of 100,000 connections (33,334 in 10,000 rooms, 5,000 users),
// computed from the registry and encoded as the JSON it PUBLISHes. With the
// Redis round trips (a PUBLISH out, one back: well under a millisecond on a
// LAN), this bounds the API's answer time without opening 100,000 sockets,
// which this machine's descriptor limit does not allow (bench/introspect.sh
// measures the real thing where it does).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fanout::{ConnEntry, Limits, Outbox, Registry};
use crate::introspect::model::Query;
use crate::introspect::{InstanceState, Local};
use crate::telemetry::Metrics;

const CONNECTIONS: u64 = 33_334;
const ROOMS: u64 = 10_000;
const USERS: u64 = 5_000;

fn instance() -> Local {
    let registry = Arc::new(Registry::new(1, 100));
    for id in 0..CONNECTIONS {
        let entry = Arc::new(ConnEntry {
            outbox: Arc::new(Outbox::new(Limits { max_frames: 16, max_bytes: 1 << 16 })),
            user: Some(format!("user-{}", id % USERS).into()),
            connection_id: uuid::Uuid::new_v4(),
            since_ms: 1_700_000_000_000 + id,
            ..ConnEntry::for_test(id, 0, None, 16)
        });
        let groups: Vec<Box<str>> =
            vec![format!("room-{}", id % ROOMS).into(), format!("room-{}", (id * 7 + 1) % ROOMS).into()];
        registry.add_with_groups(entry, &groups);
    }
    Local::new(
        "measure-1".into(),
        vec![("chat".into(), "/hubs/chat".into())],
        vec!["events:chat".into()],
        registry,
        Arc::new(Metrics::new()),
        Arc::new(|| InstanceState::Ready),
    )
}

fn time(local: &Local, query: &Query, rounds: usize) -> (Duration, Duration, usize) {
    let mut took = Vec::with_capacity(rounds);
    let mut bytes = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let answer = local.answer(query);
        bytes = serde_json::to_string(&answer).expect("encodes").len();
        took.push(started.elapsed());
    }
    took.sort();
    (took[rounds / 2], took[rounds - 1], bytes)
}

#[test]
#[ignore = "a measurement: cargo test --release --lib introspect::cost_tests -- --ignored --nocapture"]
fn one_instances_share_of_an_answer_at_a_third_of_100k_connections() {
    let local = instance();
    let queries = [
        ("instance", Query::Instance),
        ("rooms, first 100", Query::Rooms { hub: "chat".into(), prefix: String::new(), after: None, limit: 100 }),
        (
            "rooms, prefix room-1, 100",
            Query::Rooms { hub: "chat".into(), prefix: "room-1".into(), after: None, limit: 100 },
        ),
        (
            "rooms, last page",
            Query::Rooms { hub: "chat".into(), prefix: String::new(), after: Some("room-9990".into()), limit: 100 },
        ),
        (
            "members of room-1, 100",
            Query::Members { hub: "chat".into(), room: "room-1".into(), after: None, limit: 100 },
        ),
        ("user-42's connections", Query::User { user: "user-42".into() }),
    ];
    let mut worst = Duration::ZERO;
    for (name, query) in &queries {
        let (p50, max, bytes) = time(&local, query, 50);
        println!(
            "{name:28} p50 {:8.3} ms  max {:8.3} ms  answer {bytes} bytes",
            p50.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        worst = worst.max(p50);
    }
    // The deadline the asked instance waits is 80 ms; its own share must be
    // a small part of it even in a debug build.
    assert!(worst < Duration::from_millis(40), "an instance's share takes {worst:?}");
}
