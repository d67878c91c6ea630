//! Browser push (FR-009, CONTRACT section 15) end to end: the official
//! client registers a subscription, a real Redis carries the events and
//! the liveness, and a local push service decrypts every push with the
//! subscription's keys and checks the VAPID signature.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::push_service::{check_vapid, vapid_key, Browser, PushService};
use support::{Driver, Redis, Sidecar, WAIT};

const HUB: &str = "/hubs/notification";

/// Long enough for a push that should not happen to have happened.
const QUIET: Duration = Duration::from_millis(1500);

fn env(redis: Option<&Redis>, key: &std::path::Path) -> Vec<(&'static str, String)> {
    let mut env = support::jwt_env();
    env.extend([
        ("SIDECAR_ROUTES", "tests/fixtures/routes-push.toml".to_string()),
        ("SIDECAR_STREAMS", "events:notification".to_string()),
        ("SIDECAR_VAPID_PRIVATE_KEY_FILE", key.display().to_string()),
        ("SIDECAR_VAPID_SUBJECT", "mailto:ops@example.com".to_string()),
        ("SIDECAR_PUSH_ALLOW_LOOPBACK", "true".to_string()),
        ("SIDECAR_PUSH_TTL_SECONDS", "600".to_string()),
    ]);
    if let Some(r) = redis {
        env.push(("SIDECAR_REDIS_URL", r.url()));
    }
    env
}

fn notification(user: &str, title: &str) -> Value {
    support::envelope(
        "notification",
        &format!("user:{user}"),
        json!({"id": support::uuid(), "user_id": user, "title": title, "message": "Ann replied", "created_at": support::now()}),
    )
}

/// Connects `name` as `user` and registers `browsers`' subscriptions.
async fn register(d: &mut Driver, s: &Sidecar, name: &str, user: &str, browsers: &[&Browser]) {
    d.connect(name, &s.hub(HUB), &["ReceiveNotification"], json!({"accessToken": support::token(user, user)}))
        .await
        .expect("connect");
    for b in browsers {
        d.invoke(name, "RegisterPush", json!([b.subscription()])).await.expect("RegisterPush");
    }
}

/// The instances with a live entry for `user` on the notification hub in Redis.
fn live_instances(redis: &Redis, user: &str) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(format!("push:live:{{{user}}}:notification"))
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .expect("ZRANGE")
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the sidecar's session of a stopped client has ended.
async fn no_connections(s: &Sidecar) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = support::http::request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
        let open: f64 = body
            .lines()
            .filter(|l| l.starts_with("sidecar_connections{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if open == 0.0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the session did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// POSTs an event to the HTTP bridge (the in-process bus).
async fn post(s: &Sidecar, event: &Value) {
    let headers = [("content-type", "application/json")];
    let body = event.to_string();
    let (status, answer) = support::http::request(s.admin_port, "POST", "/internal/events", &headers, body.as_bytes())
        .await
        .expect("POST");
    assert!(status < 300, "{status} {answer}");
}

async fn push_metric(s: &Sidecar, outcome: &str) -> u64 {
    let (_, body) = support::http::request(s.admin_port, "GET", "/metrics", &[], b"").await.expect("metrics");
    let prefix = format!("sidecar_push_notifications_total{{outcome=\"{outcome}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn an_offline_user_gets_exactly_one_push_per_subscription_decrypted_and_signed() {
    let redis = Redis::start().await;
    let service = PushService::start().await;
    let (key, public_key) = vapid_key(&std::env::temp_dir());
    let s = Sidecar::start(&env(Some(&redis), &key)).await;
    let mut d = Driver::start().await;
    let laptop = Browser::subscribe(service.endpoint("laptop"));
    let phone = Browser::subscribe(service.endpoint("phone"));

    d.connect("a", &s.hub(HUB), &["ReceiveNotification"], json!({"accessToken": support::token("u1", "Ann")}))
        .await
        .expect("connect");
    let served = d.invoke("a", "PushPublicKey", json!([])).await.expect("PushPublicKey");
    assert_eq!(served, json!(public_key), "browsers subscribe with the key the sidecar signs with");
    for b in [&laptop, &phone, &laptop] {
        d.invoke("a", "RegisterPush", json!([b.subscription()])).await.expect("RegisterPush");
    }
    let bad = laptop.subscription();
    let mut short_key = bad.clone();
    short_key["keys"]["auth"] = json!("AAAA");
    let err = d.invoke("a", "RegisterPush", json!([short_key])).await.expect_err("a 3-octet auth secret");
    assert!(err.contains("keys.auth must be 16 octets"), "{err}");
    let mut remote = bad.clone();
    remote["endpoint"] = json!("http://10.1.2.3/push");
    let err = d.invoke("a", "RegisterPush", json!([remote])).await.expect_err("plain http off loopback");
    assert!(err.contains("must be an https:// URL"), "{err}");
    let stored: usize = redis::cmd("HLEN").arg("push:subs:{u1}").query(&mut redis.conn()).expect("HLEN");
    assert_eq!(stored, 2, "one entry per endpoint, the laptop registered twice");

    // Offline: the last connection is gone on every instance.
    d.stop("a").await;
    until("u1's liveness entry to go", || live_instances(&redis, "u1").is_empty()).await;
    let event = notification("u1", "New reply");
    redis.xadd_data("events:notification", &event);

    let got = service.wait_for(2, WAIT).await;
    tokio::time::sleep(QUIET).await;
    let got_all = service.received();
    assert_eq!(got_all.len(), 2, "one push per subscription, no more: {got_all:?}");
    let mut paths: Vec<_> = got.iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/push/laptop", "/push/phone"]);
    for r in &got {
        let browser = if r.path == "/push/laptop" { &laptop } else { &phone };
        assert_eq!(r.headers.get("content-encoding").map(String::as_str), Some("aes128gcm"));
        assert_eq!(r.headers.get("ttl").map(String::as_str), Some("600"));
        assert_eq!(r.headers.get("content-length").map(String::as_str), Some(r.body.len().to_string().as_str()));
        let claims = check_vapid(&r.headers["authorization"], &public_key, &service.origin());
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let message: Value = serde_json::from_slice(&browser.decrypt(&r.body)).expect("the plaintext is JSON");
        assert_eq!(message["event_id"], event["event_id"]);
        assert_eq!(message["event_type"], "notification");
        assert_eq!(message["method"], "ReceiveNotification");
        assert_eq!(message["payload"], event["payload"]);
    }
    // A browser's keys do not open another browser's push.
    let laptop_body = &got.iter().find(|r| r.path == "/push/laptop").expect("laptop").body;
    assert!(std::panic::catch_unwind(|| phone.decrypt(laptop_body)).is_err());
    assert_eq!(push_metric(&s, "sent").await, 2);

    // UnregisterPush forgets one subscription: the next event reaches the other only.
    register(&mut d, &s, "b", "u1", &[]).await;
    assert_eq!(d.invoke("b", "UnregisterPush", json!([phone.endpoint])).await.expect("unregister"), json!(true));
    assert_eq!(d.invoke("b", "UnregisterPush", json!([phone.endpoint])).await.expect("again"), json!(false));
    d.stop("b").await;
    until("u1's liveness entry to go", || live_instances(&redis, "u1").is_empty()).await;
    redis.xadd_data("events:notification", &notification("u1", "Another reply"));
    service.wait_for(3, WAIT).await;
    tokio::time::sleep(QUIET).await;
    let paths: Vec<_> = service.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert_eq!(paths[2], "/push/laptop");
    let _ = std::fs::remove_file(key);
}

#[tokio::test]
async fn a_connected_user_gets_the_notification_in_the_app_only() {
    let redis = Redis::start().await;
    let service = PushService::start().await;
    let (key, _) = vapid_key(&std::env::temp_dir());
    let s = Sidecar::start(&env(Some(&redis), &key)).await;
    let mut d = Driver::start().await;
    let laptop = Browser::subscribe(service.endpoint("laptop"));
    register(&mut d, &s, "a", "u1", &[&laptop]).await;

    let event = notification("u1", "New reply");
    redis.xadd_data("events:notification", &event);
    let m = d.message("a", "ReceiveNotification", WAIT).await.expect("the app gets it");
    assert_eq!(m["args"][0], event["payload"]);
    tokio::time::sleep(QUIET).await;
    assert!(service.received().is_empty(), "no push to a connected user: {:?}", service.received());
    assert_eq!(push_metric(&s, "online").await, 1);
    assert_eq!(push_metric(&s, "sent").await, 0);
    let _ = std::fs::remove_file(key);
}

#[tokio::test]
async fn a_gone_subscription_is_removed_and_a_failing_one_retried_then_counted() {
    let redis = Redis::start().await;
    let service = PushService::start().await;
    let (key, _) = vapid_key(&std::env::temp_dir());
    let s = Sidecar::start(&env(Some(&redis), &key)).await;
    let mut d = Driver::start().await;
    let gone = Browser::subscribe(service.endpoint("gone"));
    let broken = Browser::subscribe(service.endpoint("broken"));
    service.answer("gone", 410);
    service.answer("broken", 500);
    register(&mut d, &s, "a", "u1", &[&gone, &broken]).await;
    d.stop("a").await;
    until("u1's liveness entry to go", || live_instances(&redis, "u1").is_empty()).await;

    redis.xadd_data("events:notification", &notification("u1", "New reply"));
    // 410 once; 500 on the first try and each of three retries (0.5 + 1 + 2 s apart).
    let got = service.wait_for(5, Duration::from_secs(15)).await;
    tokio::time::sleep(QUIET).await;
    let count = |p: &str| service.received().iter().filter(|r| r.path == p).count();
    assert_eq!((count("/push/gone"), count("/push/broken")), (1, 4), "{got:?}");
    let endpoints: Vec<String> = redis::cmd("HKEYS").arg("push:subs:{u1}").query(&mut redis.conn()).expect("HKEYS");
    assert_eq!(endpoints, vec![broken.endpoint.clone()], "410 removed its subscription; 500 did not");
    assert_eq!(push_metric(&s, "expired").await, 1);
    assert_eq!(push_metric(&s, "retried").await, 3);
    assert_eq!(push_metric(&s, "failed").await, 1);
    assert_eq!(push_metric(&s, "sent").await, 0);

    // The removed subscription gets nothing more.
    service.answer("broken", 201);
    redis.xadd_data("events:notification", &notification("u1", "Another"));
    service.wait_for(6, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!((count("/push/gone"), count("/push/broken")), (1, 5));
    assert_eq!(push_metric(&s, "sent").await, 1);
    let _ = std::fs::remove_file(key);
}

/// Two instances on one Redis, and user u1 who registered a laptop's
/// subscription on `a` and whose connection has gone since.
struct Gone {
    redis: Redis,
    service: PushService,
    key: std::path::PathBuf,
    a: Sidecar,
    b: Sidecar,
    d: Driver,
    laptop: Browser,
}

async fn registered_then_gone() -> Gone {
    let redis = Redis::start().await;
    let service = PushService::start().await;
    let (key, _) = vapid_key(&std::env::temp_dir());
    let a = Sidecar::start(&env(Some(&redis), &key)).await;
    let b = Sidecar::start(&env(Some(&redis), &key)).await;
    let mut d = Driver::start().await;
    let laptop = Browser::subscribe(service.endpoint("laptop"));
    register(&mut d, &a, "registering", "u1", &[&laptop]).await;
    d.stop("registering").await;
    until("u1's liveness entry to go", || live_instances(&redis, "u1").is_empty()).await;
    Gone { redis, service, key, a, b, d, laptop }
}

#[tokio::test]
async fn two_instances_on_one_redis_send_one_push_and_see_each_others_users() {
    let Gone { redis, service, key, a, b, mut d, laptop } = registered_then_gone().await;

    // Both instances read every event; one of them sends.
    let event = notification("u1", "New reply");
    redis.xadd_data("events:notification", &event);
    service.wait_for(1, WAIT).await;
    tokio::time::sleep(QUIET).await;
    let got = service.received();
    assert_eq!(got.len(), 1, "one push across instances: {got:?}");
    let message: Value = serde_json::from_slice(&laptop.decrypt(&got[0].body)).expect("json");
    assert_eq!(message["event_id"], event["event_id"]);
    assert_eq!(push_metric(&a, "sent").await + push_metric(&b, "sent").await, 1);
    assert_eq!(push_metric(&a, "taken").await + push_metric(&b, "taken").await, 1);

    // Connected on B only: A learns it from Redis and does not push.
    d.connect("on-b", &b.hub(HUB), &["ReceiveNotification"], json!({"accessToken": support::token("u1", "Ann")}))
        .await
        .expect("connect");
    until("B's liveness entry for u1", || live_instances(&redis, "u1").len() == 1).await;
    redis.xadd_data("events:notification", &notification("u1", "While online"));
    d.message("on-b", "ReceiveNotification", WAIT).await.expect("the app on B gets it");
    tokio::time::sleep(QUIET).await;
    assert_eq!(service.received().len(), 1, "no push while connected anywhere");
    assert_eq!(push_metric(&a, "online").await, 1, "A saw B's connection");
    assert_eq!(push_metric(&b, "online").await, 1);
    let _ = std::fs::remove_file(key);
}

#[tokio::test]
async fn a_user_connected_only_to_another_hub_is_pushed_to() {
    // Ann registered from the notification hub, then keeps only a
    // discussion page open: the notification's hub has no connection of
    // hers to show it in the app, here or on the other instance, so it
    // goes by push (it used to count as "online" and reach her nowhere).
    let Gone { redis, service, key, a, b, mut d, laptop } = registered_then_gone().await;
    d.connect("page", &a.hub("/hubs/discussion"), &[], json!({"accessToken": support::token("u1", "Ann")}))
        .await
        .expect("connect to the discussion hub");

    let event = notification("u1", "New reply");
    redis.xadd_data("events:notification", &event);
    let got = service.wait_for(1, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(service.received().len(), 1, "one push: {got:?}");
    let message: Value = serde_json::from_slice(&laptop.decrypt(&got[0].body)).expect("json");
    assert_eq!(message["event_id"], event["event_id"]);
    assert_eq!(push_metric(&a, "online").await + push_metric(&b, "online").await, 0);

    // With the notification hub open again (on B), the app shows it and nothing is pushed.
    d.connect("app", &b.hub(HUB), &["ReceiveNotification"], json!({"accessToken": support::token("u1", "Ann")}))
        .await
        .expect("connect");
    until("B's liveness entry for u1", || live_instances(&redis, "u1").len() == 1).await;
    redis.xadd_data("events:notification", &notification("u1", "While online"));
    d.message("app", "ReceiveNotification", WAIT).await.expect("the app on B gets it");
    tokio::time::sleep(QUIET).await;
    assert_eq!(service.received().len(), 1, "no push while the notification hub is connected");
    assert_eq!(push_metric(&a, "online").await, 1, "A saw B's connection through Redis");
    let _ = std::fs::remove_file(key);
}

#[tokio::test]
async fn without_redis_subscriptions_and_liveness_live_in_the_process() {
    let service = PushService::start().await;
    let (key, _) = vapid_key(&std::env::temp_dir());
    let s = Sidecar::start(&env(None, &key)).await;
    let mut d = Driver::start().await;
    let laptop = Browser::subscribe(service.endpoint("laptop"));
    register(&mut d, &s, "a", "u1", &[&laptop]).await;
    post(&s, &notification("u1", "Hi")).await;
    d.message("a", "ReceiveNotification", WAIT).await.expect("in the app");
    tokio::time::sleep(QUIET).await;
    assert!(service.received().is_empty(), "connected: no push");
    d.stop("a").await;
    no_connections(&s).await;
    post(&s, &notification("u1", "Hi again")).await;
    let got = service.wait_for(1, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(service.received().len(), 1, "{got:?}");
    let message: Value = serde_json::from_slice(&laptop.decrypt(&got[0].body)).expect("json");
    assert_eq!(message["payload"]["title"], "Hi again");
    let _ = std::fs::remove_file(key);
}

#[tokio::test]
async fn push_methods_need_a_user_and_a_key() {
    let (key, _) = vapid_key(&std::env::temp_dir());
    let mut no_auth = env(None, &key);
    no_auth.retain(|(k, _)| !k.starts_with("SIDECAR_AUTH") && !k.starts_with("SIDECAR_JWT"));
    let s = Sidecar::start(&no_auth).await;
    let mut d = Driver::start().await;
    d.connect("a", &s.hub(HUB), &[], json!({})).await.expect("connect");
    let browser = Browser::subscribe("https://push.example.net/x".into());
    let err = d.invoke("a", "RegisterPush", json!([browser.subscription()])).await.expect_err("no user");
    assert!(err.contains("needs an authenticated user"), "{err}");
    d.stop("a").await;
    drop(s);

    let mut off = env(None, &key);
    off.retain(|(k, _)| !k.starts_with("SIDECAR_VAPID"));
    let s = Sidecar::start(&off).await;
    d.connect("b", &s.hub(HUB), &[], json!({"accessToken": support::token("u1", "Ann")})).await.expect("connect");
    let err = d.invoke("b", "RegisterPush", json!([browser.subscription()])).await.expect_err("push off");
    assert!(err.contains("Browser push is not available"), "{err}");

    let mut bad = env(None, &key);
    bad.retain(|(k, _)| *k != "SIDECAR_VAPID_SUBJECT");
    let (code, stderr) = Sidecar::refused(&bad).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("SIDECAR_VAPID_SUBJECT: must be set with"), "{stderr}");
    let not_a_key = std::env::temp_dir().join(format!("not-a-key-{}.pem", support::uuid()));
    std::fs::write(&not_a_key, "hello").expect("write");
    let (code, stderr) = Sidecar::refused(&env(None, &not_a_key)).await;
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("SIDECAR_VAPID_PRIVATE_KEY_FILE"), "{stderr}");
    let _ = std::fs::remove_file(key);
    let _ = std::fs::remove_file(not_a_key);
}
