//! Many instances on one Redis: every event reaches every subscriber once,
//! a killed instance's clients move on, presence across tabs and instances,
//! and the groups of instances that are gone are removed.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

async fn instance(redis: &Redis, id: &str, extra: &[(&'static str, String)]) -> Sidecar {
    let mut env = jwt_env();
    env.push(("SIDECAR_REDIS_URL", redis.url()));
    env.push(("SIDECAR_INSTANCE_ID", id.to_string()));
    env.extend(extra.iter().cloned());
    Sidecar::start(&env).await
}

async fn join(d: &mut Driver, name: &str, url: &str, user: &str, room: &str, extra: Value) {
    let mut opts = json!({"accessToken": token(user, &format!("User {user}"))});
    for (k, v) in extra.as_object().into_iter().flatten() {
        opts[k] = v.clone();
    }
    d.connect(name, url, &["ReceiveMessage", "UserJoined", "UserLeft"], opts)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(d.invoke(name, "JoinRoom", json!([room])).await, Ok(Value::Null), "{name}");
}

#[tokio::test]
async fn three_instances_deliver_once_each_and_survive_a_sigkill() {
    let redis = Redis::start().await;
    let a = instance(&redis, "a", &[]).await;
    let mut b = instance(&redis, "b", &[]).await;
    let c = instance(&redis, "c", &[]).await;
    let lb = Proxy::start(b.port).await; // the load balancer in front of b
    let mut d = Driver::start().await;
    join(&mut d, "on-a", &a.hub("/hubs/chat"), "u1", "r", json!({})).await;
    join(&mut d, "on-c", &c.hub("/hubs/chat"), "u2", "r", json!({})).await;
    let lb_url = format!("{}/hubs/chat", lb.url());
    join(&mut d, "on-b", &lb_url, "u3", "r", json!({"reconnect": true})).await;

    for n in 0..100u64 {
        if n == 40 {
            b.kill().await; // SIGKILL, mid-stream
            lb.retarget(a.port);
        }
        redis.xadd_flat("events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for name in ["on-a", "on-c"] {
        let mut seen = Vec::new();
        while seen.len() < 100 {
            let m = d
                .message(name, "ReceiveMessage", WAIT)
                .await
                .unwrap_or_else(|| panic!("{name} got only {}", seen.len()));
            seen.push(m["args"][0]["sequence_number"].as_u64().expect("n"));
        }
        assert_eq!(seen, (0..100).collect::<Vec<_>>(), "{name}: every event once, in order");
        assert!(
            d.message(name, "ReceiveMessage", Duration::from_millis(300)).await.is_none(),
            "{name}: nothing doubled"
        );
    }
    // b's client reconnects through the load balancer, now to a, and re-joins.
    d.wait_for(Duration::from_secs(20), |v| v["event"] == "reconnected" && v["name"] == "on-b")
        .await
        .expect("on-b comes back");
    assert_eq!(d.invoke("on-b", "JoinRoom", json!(["r"])).await, Ok(Value::Null));
    let after = envelope("chat_message", "r", chat_payload("r", 1000));
    redis.xadd_flat("events:chat", &after);
    let m = d
        .wait_for(WAIT, |v| {
            v["name"] == "on-b" && v["method"] == "ReceiveMessage" && v["args"][0]["sequence_number"] == 1000
        })
        .await;
    assert!(m.is_some(), "on-b receives new events after moving to another instance");
}

#[tokio::test]
async fn presence_across_tabs_and_instances() {
    let redis = Redis::start().await;
    let a = instance(&redis, "pa", &[]).await;
    let b = instance(&redis, "pb", &[]).await;
    let mut d = Driver::start().await;
    join(&mut d, "watcher", &a.hub("/hubs/chat"), "watcher", "r", json!({})).await;
    d.drain_messages("watcher", Duration::from_millis(300)).await; // its own UserJoined
    join(&mut d, "tab1", &a.hub("/hubs/chat"), "alice", "r", json!({})).await;
    join(&mut d, "tab2", &b.hub("/hubs/chat"), "alice", "r", json!({"transport": "LongPolling"})).await;
    let joined = d.message("watcher", "UserJoined", WAIT).await.expect("user_joined");
    assert_eq!(joined["args"][0], json!({"user_id": "alice", "username": "User alice", "room_id": "r"}));
    assert!(
        d.message("watcher", "UserJoined", Duration::from_millis(500)).await.is_none(),
        "one user_joined for two tabs"
    );

    let p = d.invoke("watcher", "GetPresence", json!(["r"])).await.expect("presence");
    assert_eq!(p["count"], 2, "{p}");
    assert_eq!(p["users"][0], json!({"user_id": "alice", "username": "User alice", "state": "online"}));
    d.invoke("tab2", "SetPresence", json!(["away"])).await.expect("away");
    let p = d.invoke("watcher", "GetPresence", json!(["r"])).await.expect("presence");
    assert_eq!(p["users"][0]["state"], "away", "{p}");
    assert!(d.invoke("tab2", "SetPresence", json!(["asleep"])).await.is_err());

    d.stop("tab1").await;
    assert!(d.message("watcher", "UserLeft", Duration::from_millis(600)).await.is_none(), "closing one tab: nothing");
    d.stop("tab2").await;
    let left = d.message("watcher", "UserLeft", WAIT).await.expect("user_left");
    assert_eq!(left["args"][0]["user_id"], "alice");
    assert!(d.message("watcher", "UserLeft", Duration::from_millis(500)).await.is_none(), "exactly one user_left");
    let p = d.invoke("watcher", "GetPresence", json!(["r"])).await.expect("presence");
    assert_eq!(p["count"], 1, "{p}");
}

#[tokio::test]
async fn a_crashed_instances_users_expire_within_the_ttl() {
    let redis = Redis::start().await;
    let ttl = [("SIDECAR_PRESENCE_TTL_SECONDS", "2".to_string())];
    let a = instance(&redis, "ea", &ttl).await;
    let mut b = instance(&redis, "eb", &ttl).await;
    let mut d = Driver::start().await;
    join(&mut d, "watcher", &a.hub("/hubs/chat"), "watcher", "r", json!({})).await;
    join(&mut d, "doomed", &b.hub("/hubs/chat"), "bob", "r", json!({})).await;
    d.message("watcher", "UserJoined", WAIT).await.expect("bob joined");
    assert_eq!(d.invoke("watcher", "GetPresence", json!(["r"])).await.expect("presence")["count"], 2);
    b.kill().await;
    let started = std::time::Instant::now();
    let left = d
        .wait_for(Duration::from_secs(6), |v| v["name"] == "watcher" && v["method"] == "UserLeft")
        .await
        .expect("bob leaves by expiry");
    assert_eq!(left["args"][0]["user_id"], "bob");
    assert!(started.elapsed() < Duration::from_millis(3500), "within the TTL: {:?}", started.elapsed());
    assert_eq!(d.invoke("watcher", "GetPresence", json!(["r"])).await.expect("presence")["count"], 1);
}

/// CONTRACT section 11: the users of an instance that died vanish, with
/// `user_left`, within `SIDECAR_PRESENCE_TTL_SECONDS` of its death, also in
/// the worst case, set up here on purpose: the instance dies just after
/// refreshing its entries, and the survivor's next sweep after they expire
/// comes late in its period. Entries used to live the whole TTL past their
/// refresh, so the sweep that found them overdue came up to a third of the
/// TTL after it.
#[tokio::test]
async fn a_killed_instances_users_leave_within_the_ttl_even_when_it_dies_just_after_a_refresh() {
    let redis = Redis::start().await;
    let ttl = Duration::from_secs(3);
    let env = [("SIDECAR_PRESENCE_TTL_SECONDS", ttl.as_secs().to_string())];
    let mut instances = [instance(&redis, "pa", &env).await, instance(&redis, "pb", &env).await];
    let mut d = Driver::start().await;
    join(&mut d, "on-pa", &instances[0].hub("/hubs/chat"), "ua", "r", json!({})).await;
    join(&mut d, "on-pb", &instances[1].hub("/hubs/chat"), "ub", "r", json!({})).await;

    // When each instance refreshes its entry (its score changes), seen from
    // Redis: the period and the phases of the two instances' ticks.
    let mut conn = redis.conn();
    let scores = |conn: &mut redis::Connection| -> [Option<f64>; 2] {
        let all: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg("presence:{chat:r}:conns")
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(conn)
            .expect("ZRANGE");
        ["pa/", "pb/"].map(|p| all.iter().find(|(m, _)| m.starts_with(p)).map(|(_, s)| *s))
    };
    let mut last = scores(&mut conn);
    let mut refreshes: [Vec<std::time::Instant>; 2] = [Vec::new(), Vec::new()];
    let deadline = std::time::Instant::now() + ttl * 2;
    while refreshes.iter().any(|r| r.len() < 2) {
        assert!(std::time::Instant::now() < deadline, "entries not refreshed: {refreshes:?}");
        tokio::time::sleep(Duration::from_millis(3)).await;
        let now = scores(&mut conn);
        for i in 0..2 {
            if now[i] != last[i] {
                refreshes[i].push(std::time::Instant::now());
            }
        }
        last = now;
    }
    let period = refreshes[0][1] - refreshes[0][0];
    // The victim is the one whose refresh the survivor's follows latest.
    let after = |from: std::time::Instant, to: std::time::Instant| {
        let d = if to >= from { (to - from).as_secs_f64() } else { period.as_secs_f64() - (from - to).as_secs_f64() };
        d.rem_euclid(period.as_secs_f64())
    };
    let b_then_a = after(refreshes[1][1], refreshes[0][1]);
    let victim = if b_then_a >= period.as_secs_f64() / 2.0 { 1 } else { 0 };
    let (victim_user, watcher) = if victim == 1 { ("ub", "on-pa") } else { ("ua", "on-pb") };

    // Kill the victim right after its next refresh.
    let before = scores(&mut conn)[victim];
    let deadline = std::time::Instant::now() + ttl;
    while scores(&mut conn)[victim] == before {
        assert!(std::time::Instant::now() < deadline, "no refresh of the victim");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    instances[victim].kill().await;
    let killed = std::time::Instant::now();
    let left = d
        .wait_for(ttl * 3, |v| v["name"] == watcher && v["method"] == "UserLeft")
        .await
        .expect("the victim's user leaves by expiry");
    let took = killed.elapsed();
    assert_eq!(left["args"][0]["user_id"], victim_user);
    // A little for the user_left's way through Redis to the client.
    assert!(
        took < ttl + Duration::from_millis(250),
        "user_left {took:?} after the kill, TTL {ttl:?} (period {period:?})"
    );
}

#[tokio::test]
async fn groups_of_instances_that_are_gone_are_removed_and_the_own_one_kept() {
    let redis = Redis::start().await;
    let mut conn = redis.conn();
    for group in ["signalr-sidecar:ghost", "other-app:keep"] {
        redis.create_group("events:chat", group);
        redis.xadd_flat("events:chat", &envelope("chat_message", "r", chat_payload("r", 0)));
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg("c1")
            .arg("STREAMS")
            .arg("events:chat")
            .arg(">")
            .query(&mut conn)
            .expect("read");
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let _s = instance(&redis, "live", &[("SIDECAR_ORPHAN_GROUP_IDLE_SECONDS", "2".into())]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let groups: Vec<redis::Value> =
            redis::cmd("XINFO").arg("GROUPS").arg("events:chat").query(&mut conn).expect("XINFO");
        let names: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
        let has = |n: &str| names.iter().any(|g| g.contains(n));
        if !has("signalr-sidecar:ghost") {
            assert!(has("signalr-sidecar:live"), "its own group stays: {names:?}");
            assert!(has("other-app:keep"), "another prefix is not ours to remove: {names:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the ghost group is still there: {names:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn live_instances_keep_their_groups_on_quiet_streams_and_a_dead_ones_go() {
    // Redis 7.0 resets a consumer's idle time only when it gets an entry: a
    // live reader of a quiet stream looks idle. Two live instances must not
    // take each other for gone; a killed one's group goes once its heartbeat
    // has stopped, and so does an old group that never got a consumer.
    let redis = Redis::start().await;
    let quick =
        [("SIDECAR_ORPHAN_GROUP_IDLE_SECONDS", "2".to_string()), ("SIDECAR_CLAIM_INTERVAL_SECONDS", "1".into())];
    let logs: Vec<_> =
        ["a", "b"].iter().map(|id| std::env::temp_dir().join(format!("orphans-{id}-{}.log", free_port()))).collect();
    let start = |id: &str, log: &std::path::Path| {
        let mut env = jwt_env();
        env.push(("SIDECAR_REDIS_URL", redis.url()));
        env.push(("SIDECAR_INSTANCE_ID", id.to_string()));
        env.extend(quick.iter().cloned());
        let log = log.to_path_buf();
        async move { Sidecar::start_logged(&env, &log).await }
    };
    let a = start("a", &logs[0]).await;
    let mut b = start("b", &logs[1]).await;
    redis.xadd_flat("events:chat", &envelope("chat_message", "r", chat_payload("r", 0)));
    redis.create_group("events:remote", "signalr-sidecar:never-read");
    // Three idle periods of quiet, a sweep a second.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = |i: usize| std::fs::read_to_string(&logs[i]).unwrap_or_default();
    for i in 0..2 {
        let text = log(i);
        let removed_live = text.lines().any(|l| {
            l.contains("removed the consumer group")
                && (l.contains("signalr-sidecar:a") || l.contains("signalr-sidecar:b"))
        });
        assert!(!removed_live && !text.contains("consumer group lost"), "a live instance's group was removed: {text}");
    }
    let groups = |stream: &str| -> String {
        let groups: Vec<redis::Value> =
            redis::cmd("XINFO").arg("GROUPS").arg(stream).query(&mut redis.conn()).expect("XINFO");
        format!("{groups:?}")
    };
    assert!(groups("events:chat").contains("signalr-sidecar:a") && groups("events:chat").contains("signalr-sidecar:b"));
    b.kill().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while groups("events:chat").contains("signalr-sidecar:b") || groups("events:remote").contains("never-read") {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed instance's group, or one no instance reads, is still there: {} {}",
            groups("events:chat"),
            groups("events:remote")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(groups("events:chat").contains("signalr-sidecar:a"), "the live one's stays");
    drop(a);
    for l in &logs {
        let _ = std::fs::remove_file(l);
    }
}

#[tokio::test]
async fn live_instances_keep_their_groups_when_their_redis_user_may_not_subscribe() {
    // A Redis ACL user without the introspection channels is allowed (the
    // README: introspection then answers for the asked instance only). Its
    // instances must still beat the live set, which is what keeps their
    // groups from being taken for those of instances that are gone.
    let redis = Redis::start().await;
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "sidecar", "on", ">s3cret", "~*", "resetchannels", "+@all"][..])
        .query(&mut redis.conn())
        .expect("ACL SETUSER");
    let url = format!("redis://sidecar:s3cret@127.0.0.1:{}", redis.port);
    let logs: Vec<_> = ["a", "b"]
        .iter()
        .map(|id| std::env::temp_dir().join(format!("acl-orphans-{id}-{}.log", free_port())))
        .collect();
    let start = |id: &str, log: &std::path::Path| {
        let mut env = jwt_env();
        env.push(("SIDECAR_REDIS_URL", url.clone()));
        env.push(("SIDECAR_INSTANCE_ID", id.to_string()));
        env.push(("SIDECAR_ORPHAN_GROUP_IDLE_SECONDS", "2".into()));
        env.push(("SIDECAR_CLAIM_INTERVAL_SECONDS", "1".into()));
        let log = log.to_path_buf();
        async move { Sidecar::start_logged(&env, &log).await }
    };
    let a = start("a", &logs[0]).await;
    let b = start("b", &logs[1]).await;
    // Three idle periods of quiet, a sweep a second.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            !text.contains("removed the consumer group") && !text.contains("consumer group lost"),
            "a live instance's group was removed: {text}"
        );
    }
    let groups: Vec<redis::Value> =
        redis::cmd("XINFO").arg("GROUPS").arg("events:chat").query(&mut redis.conn()).expect("XINFO");
    let groups = format!("{groups:?}");
    assert!(groups.contains("signalr-sidecar:a") && groups.contains("signalr-sidecar:b"), "{groups}");
    drop((a, b));
    for l in &logs {
        let _ = std::fs::remove_file(l);
    }
}
