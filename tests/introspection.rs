//! The introspection API (CONTRACT section 16, issue 20): three instances
//! on one Redis, official clients of several users in several rooms on
//! different instances and transports; whichever instance is asked answers
//! for the whole deployment. Also: a draining instance shows `draining`, a
//! dead one is named missing, the admin token guards `/admin/` and nothing
//! else, and without Redis the instance answers for itself.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::admin::{self, api, get, instance_id, ADMIN_TOKEN};
use support::*;

/// Connects `name` as `user` to `hub` on `s` with `transport`; its connection id.
async fn connect(d: &mut Driver, s: &Sidecar, name: &str, user: &str, hub: &str, transport: &str) -> String {
    let extra = json!({"accessToken": token(user, user), "transport": transport});
    let r = d.connect(name, &s.hub(hub), &[], extra).await.unwrap_or_else(|e| panic!("{name} connects: {e}"));
    r["connectionId"].as_str().expect("connection id").to_string()
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v.as_array().expect("array").iter().map(|x| x[key].as_str().expect("string").to_string()).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|x| x.as_str().expect("string").to_string()).collect()
}

#[tokio::test]
async fn any_instance_answers_for_the_whole_deployment() {
    let redis = Redis::start().await;
    let s = admin::deployment(&redis, 3, &[]).await;
    let mut d = Driver::start().await;
    let a1 = connect(&mut d, &s[0], "a1", "alice", "/hubs/chat", "WebSockets").await;
    let a2 = connect(&mut d, &s[1], "a2", "alice", "/hubs/chat", "ServerSentEvents").await;
    let b1 = connect(&mut d, &s[2], "b1", "bob", "/hubs/chat", "LongPolling").await;
    let _c1 = connect(&mut d, &s[1], "c1", "carol", "/hubs/chat", "WebSockets").await;
    let _d1 = connect(&mut d, &s[2], "d1", "dave", "/hubs/ticket", "WebSockets").await;
    for (name, rooms) in
        [("a1", &["room-a", "room-b"][..]), ("a2", &["room-a"]), ("b1", &["room-a", "room-c"]), ("c1", &["room-b"])]
    {
        for room in rooms {
            d.invoke(name, "JoinRoom", json!([room])).await.expect("JoinRoom");
        }
    }
    d.invoke("d1", "SubscribeTicket", json!(["T-1"])).await.expect("SubscribeTicket");
    let ids: BTreeMap<String, String> = s.iter().map(|x| (instance_id(x), instance_id(x))).collect();
    let all: Vec<String> = ids.keys().cloned().collect();

    for asked in &s {
        let who = instance_id(asked);
        // Every instance, as the asked one sees the deployment.
        let r = api(asked, "/admin/api/instances").await;
        assert_eq!(r["cluster"]["asked"], who.as_str());
        assert_eq!(strings(&r["cluster"]["answered"]), all, "{r}");
        assert_eq!(r["cluster"]["missing"], json!([]));
        assert_eq!(names(&r["instances"], "instance"), all, "sorted by id");
        let by_id: BTreeMap<String, &Value> = r["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| (i["instance"].as_str().expect("id").to_string(), i))
            .collect();
        for (k, want) in [(0, 1), (1, 2), (2, 2)] {
            let i = by_id[&instance_id(&s[k])];
            assert_eq!(i["connections"], want, "{i}");
            assert_eq!(i["state"], "ready");
            assert_eq!(i["version"], env!("CARGO_PKG_VERSION"));
            let chat = i["streams"]
                .as_array()
                .expect("streams")
                .iter()
                .find(|x| x["stream"] == "events:chat")
                .expect("events:chat");
            assert_eq!(chat["lag"], 0, "nothing was published, so no instance is behind: {i}");
        }
        assert_eq!(by_id[&instance_id(&s[2])]["hubs"], json!({"chat": 1, "ticket": 1, "notification": 0}));

        let hubs = api(asked, "/admin/api/hubs").await;
        let counts: BTreeMap<String, i64> = hubs["hubs"]
            .as_array()
            .expect("hubs")
            .iter()
            .map(|h| (h["name"].as_str().expect("name").into(), h["connections"].as_i64().expect("n")))
            .collect();
        assert_eq!(counts, BTreeMap::from([("chat".into(), 4), ("ticket".into(), 1), ("notification".into(), 0)]));

        // Rooms of a hub, counted over every instance, by name.
        let rooms = api(asked, "/admin/api/hubs/chat/rooms").await;
        assert_eq!(
            rooms["rooms"],
            json!([{"name": "room-a", "connections": 3}, {"name": "room-b", "connections": 2}, {"name": "room-c", "connections": 1}])
        );
        assert_eq!(rooms["next_cursor"], Value::Null);
        let only_b = api(asked, "/admin/api/hubs/chat/rooms?prefix=room-b").await;
        assert_eq!(only_b["rooms"], json!([{"name": "room-b", "connections": 2}]));
        let mut paged = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = api(asked, &format!("/admin/api/hubs/chat/rooms?limit=1&cursor={cursor}")).await;
            assert!(page["rooms"].as_array().expect("rooms").len() <= 1);
            paged.extend(names(&page["rooms"], "name"));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_string(),
                None => break,
            }
        }
        assert_eq!(paged, ["room-a", "room-b", "room-c"]);
        assert_eq!(
            api(asked, "/admin/api/hubs/ticket/rooms").await["rooms"],
            json!([{"name": "T-1", "connections": 1}])
        );

        // One room's members: who, on which instance, over which transport.
        let room = api(asked, "/admin/api/hubs/chat/rooms/room-a").await;
        assert_eq!(room["connections"], 3);
        let members: BTreeMap<String, (String, String, String)> = room["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                let field = |k: &str| m[k].as_str().expect(k).to_string();
                (field("connection_id"), (field("user"), field("instance"), field("transport")))
            })
            .collect();
        assert_eq!(
            members,
            BTreeMap::from([
                (a1.clone(), ("alice".into(), instance_id(&s[0]), "websockets".into())),
                (a2.clone(), ("alice".into(), instance_id(&s[1]), "serversentevents".into())),
                (b1.clone(), ("bob".into(), instance_id(&s[2]), "longpolling".into())),
            ])
        );
        for m in room["members"].as_array().expect("members") {
            let since = chrono::DateTime::parse_from_rfc3339(m["since"].as_str().expect("since")).expect("RFC 3339");
            let age = chrono::Utc::now().signed_duration_since(since);
            assert!(age >= chrono::Duration::zero() && age < chrono::Duration::seconds(120), "since {since}");
        }
        let first = api(asked, "/admin/api/hubs/chat/rooms/room-a?limit=2").await;
        let cursor = first["next_cursor"].as_str().expect("a second page").to_string();
        let second = api(asked, &format!("/admin/api/hubs/chat/rooms/room-a?limit=2&cursor={cursor}")).await;
        assert_eq!(second["next_cursor"], Value::Null);
        let mut seen: Vec<String> = names(&first["members"], "connection_id");
        seen.extend(names(&second["members"], "connection_id"));
        assert_eq!(
            seen.iter().cloned().collect::<BTreeSet<_>>(),
            members.keys().cloned().collect(),
            "pages cover the room once"
        );
        assert_eq!(seen.len(), 3);
        assert_eq!(api(asked, "/admin/api/hubs/chat/rooms/nowhere").await["connections"], 0);

        // "Where is alice connected, what rooms is she in, is that instance behind?"
        let alice = api(asked, "/admin/api/users/alice").await;
        let conns: BTreeMap<String, (String, Vec<String>)> = alice["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .map(|c| {
                (
                    c["connection_id"].as_str().expect("id").into(),
                    (c["instance"].as_str().expect("instance").into(), strings(&c["rooms"])),
                )
            })
            .collect();
        assert_eq!(
            conns,
            BTreeMap::from([
                (a1.clone(), (instance_id(&s[0]), vec!["room-a".to_string(), "room-b".to_string()])),
                (a2.clone(), (instance_id(&s[1]), vec!["room-a".to_string()])),
            ])
        );
        assert_eq!(alice["rooms"], json!(["room-a", "room-b"]));
        let mut holders = vec![instance_id(&s[0]), instance_id(&s[1])];
        holders.sort();
        assert_eq!(names(&alice["instances"], "instance"), holders, "sorted by id");
        for i in alice["instances"].as_array().expect("instances") {
            assert_eq!(i["state"], "ready");
            assert!(
                i["streams"]
                    .as_array()
                    .expect("streams")
                    .iter()
                    .any(|x| x["stream"] == "events:chat" && x["lag"].is_i64()),
                "{i}"
            );
        }
        let nobody = api(asked, "/admin/api/users/nobody").await;
        assert_eq!((nobody["connections"].clone(), nobody["instances"].clone()), (json!([]), json!([])));
    }

    // Errors are JSON, with the status the OpenAPI file gives.
    let (status, body) = get(&s[0], "/admin/api/hubs/nope/rooms", Some(ADMIN_TOKEN)).await;
    assert_eq!((status, body["error"].is_string()), (404, true), "{body}");
    for bad in [
        "/admin/api/hubs/chat/rooms?limit=0",
        "/admin/api/hubs/chat/rooms?limit=abc",
        "/admin/api/hubs/chat/rooms/room-a?cursor=zz",
    ] {
        let (status, body) = get(&s[0], bad, Some(ADMIN_TOKEN)).await;
        assert_eq!((status, body["error"].is_string()), (400, true), "{bad}: {body}");
    }
    let (status, _) = get(&s[0], "/admin/api/unknown", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 404);
    let (status, head, _) = http::request_with_head(
        s[0].admin_port,
        "DELETE",
        "/admin/api/hubs",
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        b"",
    )
    .await
    .expect("answers");
    assert_eq!(status, 405);
    assert!(head.contains("allow: get"), "{head}");

    // A room left, a connection gone: the next answer says so.
    d.invoke("a1", "LeaveRoom", json!(["room-b"])).await.expect("LeaveRoom");
    d.stop("c1").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let rooms = api(&s[2], "/admin/api/hubs/chat/rooms").await;
        if rooms["rooms"] == json!([{"name": "room-a", "connections": 3}, {"name": "room-c", "connections": 1}]) {
            break;
        }
        assert!(Instant::now() < deadline, "room-b still listed: {rooms}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_draining_instance_shows_draining_then_leaves() {
    let redis = Redis::start().await;
    // 40 connections closed one per 100 ms step of an 8 s window: about
    // 4 s of draining to observe.
    let extra =
        [("SIDECAR_DRAIN_WINDOW_SECONDS", "8".to_string()), ("SIDECAR_SHUTDOWN_TIMEOUT_SECONDS", "20".to_string())];
    let s = admin::deployment(&redis, 2, &extra).await;
    let mut d = Driver::start().await;
    for n in 0..40 {
        connect(&mut d, &s[1], &format!("c{n}"), &format!("user-{n}"), "/hubs/chat", "WebSockets").await;
    }
    let leaving = instance_id(&s[1]);
    let pid = s[1].pid().expect("running");
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = api(&s[0], "/admin/api/instances").await;
        let state = r["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .find(|i| i["instance"] == leaving.as_str())
            .map(|i| i["state"].clone());
        if state == Some(json!("draining")) {
            break;
        }
        assert!(Instant::now() < deadline, "never seen draining: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once it has exited it is neither answering nor missing: it left the set.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let r = api(&s[0], "/admin/api/instances").await;
        if strings(&r["cluster"]["answered"]) == [instance_id(&s[0])] && r["cluster"]["missing"] == json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "the stopped instance is still listed: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_dead_instance_is_named_missing_and_does_not_hold_the_answer() {
    let redis = Redis::start().await;
    let mut s = admin::deployment(&redis, 2, &[]).await;
    let dead = instance_id(&s[1]);
    s[1].kill().await;
    let started = Instant::now();
    let r = api(&s[0], "/admin/api/hubs").await;
    let took = started.elapsed();
    assert_eq!(r["cluster"]["missing"], json!([dead]), "{r}");
    assert_eq!(strings(&r["cluster"]["answered"]), [instance_id(&s[0])]);
    assert!(took < Duration::from_millis(500), "the deadline bounds the wait: {took:?}");
    let waited = r["cluster"]["elapsed_ms"].as_f64().expect("elapsed_ms");
    assert!((75.0..200.0).contains(&waited), "waited about the 80 ms deadline: {waited}");
    // After the heartbeat window (5 s) it is forgotten.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = api(&s[0], "/admin/api/hubs").await;
        if r["cluster"]["missing"] == json!([]) {
            assert!(r["cluster"]["elapsed_ms"].as_f64().expect("ms") < 75.0, "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "a dead instance stays missing: {r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_admin_token_guards_admin_and_nothing_else() {
    let redis = Redis::start().await;
    let s = admin::deployment(&redis, 1, &[]).await;
    let s = &s[0];
    for path in [
        "/admin/api/instances",
        "/admin/api/hubs",
        "/admin/api/hubs/chat/rooms",
        "/admin/api/users/alice",
        "/admin/api/openapi.yaml",
    ] {
        let (status, body) = get(s, path, None).await;
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(body["error"].is_string(), "{body}");
        let (status, _) = get(s, path, Some("introspection-test-token-0123456780")).await;
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, _) = get(s, path, Some("introspection-test-token-0123456789-and-more")).await;
        assert_eq!(status, 401, "{path} with a longer token");
        let (status, _) = get(s, path, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200, "{path} with the token");
    }
    // The page: without the header, the token form (401, HTML); with it, the page.
    let (status, head, body) =
        http::request_with_head(s.admin_port, "GET", "/admin/", &[], b"").await.expect("answers");
    assert_eq!(status, 401);
    assert!(head.contains("content-type: text/html") && head.contains("www-authenticate: bearer"), "{head}");
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("id=\"login\"") && !body.contains("instances-table"), "the form, not the page");
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (status, head, body) =
        http::request_with_head(s.admin_port, "GET", "/admin/", &[("authorization", &bearer)], b"")
            .await
            .expect("answers");
    assert_eq!(status, 200);
    assert!(head.contains("content-security-policy:"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("instances-table"));
    let (status, head, _) = http::request_with_head(s.admin_port, "GET", "/admin", &[], b"").await.expect("answers");
    assert_eq!((status, head.contains("location: /admin/")), (308, true));
    // What was open stays open.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let (status, _) = get(s, path, None).await;
        assert_eq!(status, 200, "{path} needs no admin token");
    }
    let event = envelope("chat_message", "room-x", chat_payload("room-x", 1));
    let (status, body) = s.post_event(event.to_string().as_bytes()).await;
    assert_eq!(status, 202, "POST /internal/events needs no admin token: {body}");

    // A weak token is refused at start, by name.
    let (code, stderr) = Sidecar::refused(&[("SIDECAR_ADMIN_TOKEN", "short".into())]).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("SIDECAR_ADMIN_TOKEN") && stderr.contains("at least 16"), "{stderr}");
    assert!(!stderr.contains("short"), "the error does not echo the token: {stderr}");
}

#[tokio::test]
async fn without_redis_an_instance_answers_for_itself_and_admin_is_open_without_a_token() {
    let s = Sidecar::start(&[]).await;
    let mut d = Driver::start().await;
    d.connect("x", &s.hub("/hubs/chat"), &[], json!({})).await.expect("connects");
    d.invoke("x", "JoinRoom", json!(["solo"])).await.expect("JoinRoom");
    let (status, r) = get(&s, "/admin/api/instances", None).await;
    assert_eq!(status, 200, "no SIDECAR_ADMIN_TOKEN: open");
    assert_eq!(strings(&r["cluster"]["answered"]), [instance_id(&s)]);
    assert_eq!((r["cluster"]["missing"].clone(), r["cluster"]["error"].clone()), (json!([]), Value::Null));
    assert_eq!(r["instances"][0]["streams"], json!([]), "the in-process bus has no stream lag");
    assert_eq!(r["instances"][0]["connections"], 1);
    let (_, room) = get(&s, "/admin/api/hubs/chat/rooms/solo", None).await;
    assert_eq!(room["connections"], 1);
    assert_eq!(room["members"][0]["user"], Value::Null, "no authentication: no user");
    let (status, _) = get(&s, "/admin/", None).await;
    assert_eq!(status, 200);
}
