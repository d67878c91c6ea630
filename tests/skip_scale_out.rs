//! Linear scale-out (issue 19): every instance reads every stream entry,
//! and an instance with no connection in an entry's room acknowledges it
//! without decoding it (`sidecar_events_skipped_total`), while the instance
//! that has the room's connections delivers every event. Browser push,
//! which needs every entry whoever is connected where, still sends once.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::push_service::{vapid_key, Browser, PushService};
use support::*;

async fn instance(redis: &Redis, id: &str, extra: &[(&'static str, String)]) -> Sidecar {
    let mut env = jwt_env();
    env.push(("SIDECAR_REDIS_URL", redis.url()));
    env.push(("SIDECAR_INSTANCE_ID", id.to_string()));
    env.extend(extra.iter().cloned());
    Sidecar::start(&env).await
}

/// The value of an unlabelled counter, or of the sum of a family's series
/// whose labels contain `label`.
async fn metric(s: &Sidecar, family: &str, label: &str) -> u64 {
    let (_, body) = http::request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    body.lines()
        .filter(|l| l.starts_with(family) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn until_metric(s: &Sidecar, family: &str, label: &str, at_least: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = metric(s, family, label).await;
        if v >= at_least || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn join(d: &mut Driver, name: &str, url: &str, user: &str, room: &str) {
    d.connect(name, url, &["ReceiveMessage", "UserJoined"], json!({"accessToken": token(user, user)}))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(d.invoke(name, "JoinRoom", json!([room])).await, Ok(Value::Null), "{name}");
}

async fn sequence(d: &mut Driver, name: &str, n: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let m = d.message(name, "ReceiveMessage", WAIT).await.unwrap_or_else(|| panic!("{name} got {seen:?}"));
        seen.push(m["args"][0]["sequence_number"].as_u64().expect("n"));
    }
    assert!(d.message(name, "ReceiveMessage", Duration::from_millis(300)).await.is_none(), "{name}: nothing more");
    seen
}

#[tokio::test]
async fn an_instance_skips_the_rooms_it_has_no_connection_for_and_the_other_delivers_them() {
    let redis = Redis::start().await;
    let a = instance(&redis, "skip-a", &[]).await;
    let b = instance(&redis, "skip-b", &[]).await;
    let mut d = Driver::start().await;
    join(&mut d, "on-a", &a.hub("/hubs/chat"), "u1", "room-a").await;
    join(&mut d, "on-b", &b.hub("/hubs/chat"), "u2", "room-b").await;
    let (a_before, b_before) =
        (metric(&a, "sidecar_events_skipped_total", "").await, metric(&b, "sidecar_events_skipped_total", "").await);

    // Both encodings: the flat fields, and one `data` field.
    for n in 0..40u64 {
        let event = envelope("chat_message", "room-a", chat_payload("room-a", n));
        if n % 2 == 0 {
            redis.xadd_flat("events:chat", &event)
        } else {
            redis.xadd_data("events:chat", &event)
        };
    }
    for n in 0..5u64 {
        redis.xadd_data("events:chat", &envelope("chat_message", "room-b", chat_payload("room-b", n)));
    }
    assert_eq!(sequence(&mut d, "on-a", 40).await, (0..40).collect::<Vec<_>>(), "A delivers every event of room-a");
    assert_eq!(sequence(&mut d, "on-b", 5).await, (0..5).collect::<Vec<_>>(), "B delivers every event of room-b");

    let consumed = "sidecar_events_consumed_total";
    assert_eq!(until_metric(&b, consumed, "event_type=\"chat_message\"", 45).await, 45, "B read every entry");
    assert_eq!(until_metric(&a, consumed, "event_type=\"chat_message\"", 45).await, 45, "A read every entry");
    // A late user_joined of the other room's join may land in the window.
    let b_skipped = until_metric(&b, "sidecar_events_skipped_total", "", b_before + 40).await - b_before;
    let a_skipped = until_metric(&a, "sidecar_events_skipped_total", "", a_before + 5).await - a_before;
    assert!((40..=41).contains(&b_skipped), "B skipped room-a's entries: {b_skipped}");
    assert!((5..=6).contains(&a_skipped), "A skipped room-b's entries only: {a_skipped}");
    // Skipped entries are acknowledged: nothing is left pending in either group.
    let pending = |group: &str| -> u64 {
        let reply: Vec<redis::Value> =
            redis::cmd("XPENDING").arg("events:chat").arg(group).query(&mut redis.conn()).expect("XPENDING");
        match reply.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        }
    };
    let groups: Vec<Vec<redis::Value>> =
        redis::cmd("XINFO").arg("GROUPS").arg("events:chat").query(&mut redis.conn()).expect("XINFO");
    assert_eq!(groups.len(), 2, "one group per instance");
    let names: Vec<String> = groups
        .iter()
        .filter_map(|g| match (g.first(), g.get(1)) {
            (Some(redis::Value::BulkString(k)), Some(redis::Value::BulkString(v))) if k == b"name" => {
                Some(String::from_utf8_lossy(v).into_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(names.len(), 2, "{groups:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while names.iter().map(|g| pending(g)).sum::<u64>() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "entries left pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A connection that joins room-a on B now gets the next events there.
    join(&mut d, "late-on-b", &b.hub("/hubs/chat"), "u3", "room-a").await;
    redis.xadd_flat("events:chat", &envelope("chat_message", "room-a", chat_payload("room-a", 100)));
    assert_eq!(sequence(&mut d, "late-on-b", 1).await, [100]);
    assert_eq!(sequence(&mut d, "on-a", 1).await, [100]);
}

#[tokio::test]
async fn a_push_for_a_user_connected_nowhere_is_sent_once_and_never_skipped() {
    let redis = Redis::start().await;
    let service = PushService::start().await;
    let (key, _) = vapid_key(&std::env::temp_dir());
    let push = [
        ("SIDECAR_ROUTES", "tests/fixtures/routes-push.toml".to_string()),
        ("SIDECAR_STREAMS", "events:notification".to_string()),
        ("SIDECAR_VAPID_PRIVATE_KEY_FILE", key.display().to_string()),
        ("SIDECAR_VAPID_SUBJECT", "mailto:ops@example.com".to_string()),
        ("SIDECAR_PUSH_ALLOW_LOOPBACK", "true".to_string()),
    ];
    let a = instance(&redis, "push-a", &push).await;
    let b = instance(&redis, "push-b", &push).await;
    let mut d = Driver::start().await;
    let laptop = Browser::subscribe(service.endpoint("laptop"));
    d.connect(
        "tab",
        &a.hub("/hubs/notification"),
        &["ReceiveNotification"],
        json!({"accessToken": token("u1", "Ann")}),
    )
    .await
    .expect("connect");
    d.invoke("tab", "RegisterPush", json!([laptop.subscription()])).await.expect("RegisterPush");
    d.stop("tab").await;
    // Its liveness entry goes with the session.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let live: Vec<String> =
            redis::cmd("ZRANGE").arg("push:live:{u1}").arg(0).arg(-1).query(&mut redis.conn()).expect("ZRANGE");
        if live.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "u1 still live: {live:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let payload =
        json!({"id": uuid(), "user_id": "u1", "title": "New reply", "message": "Ann replied", "created_at": now()});
    redis.xadd_flat("events:notification", &envelope("notification", "user:u1", payload));
    assert_eq!(service.wait_for(1, WAIT).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(service.received().len(), 1, "one push across both instances");
    for s in [&a, &b] {
        assert_eq!(metric(s, "sidecar_events_skipped_total", "").await, 0, "a push route is never skipped");
    }
    let _ = std::fs::remove_file(key);
}
