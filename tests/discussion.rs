//! The discussion platform of seed 003 end to end, on its shipped routing
//! file (`protocol/routes-discussion.toml`) with a real Redis and the
//! official client: the typing roster (FR-017 to FR-021, NFR-017), batched
//! bursts of responses (FR-005), notifications to a user's tabs (FR-006 to
//! FR-008) and platform-wide announcements (FR-032).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const DISCUSSION: [&str; 8] = [
    "TypingRoster",
    "ResponsesPosted",
    "ResponseEdited",
    "ResponseDeleted",
    "AnalysisUpdated",
    "UserJoined",
    "UserLeft",
    "UserTyping",
];
const NOTIFICATION: [&str; 2] = ["ReceiveNotification", "Announcement"];

async fn start() -> (Redis, Sidecar) {
    let redis = Redis::start().await;
    let mut env = jwt_env();
    env.push(("SIDECAR_REDIS_URL", redis.url()));
    env.push(("SIDECAR_ROUTES", "protocol/routes-discussion.toml".into()));
    env.push(("SIDECAR_STREAMS", "events:discussion,events:notification".into()));
    let s = Sidecar::start(&env).await;
    (redis, s)
}

/// Connects `name` as user `user` to the discussion hub and joins `d-1`.
async fn reader(d: &mut Driver, s: &Sidecar, name: &str, user: &str, protocol: &str) {
    let extra = json!({"accessToken": token(user, &user.to_uppercase()), "protocol": protocol});
    d.connect(name, &s.hub("/hubs/discussion"), &DISCUSSION, extra).await.expect("connects");
    let joined = d.invoke(name, "JoinDiscussion", json!(["d-1"])).await.expect("joins");
    assert_eq!(joined["recovered"], false, "a first join has nothing to recover: {joined}");
}

/// An event's arguments without its trailing position (missed updates,
/// CONTRACT 15), after checking it is there: one per event of a batch.
fn positioned(m: &Value) -> Value {
    let mut args = m["args"].as_array().cloned().unwrap_or_default();
    let position = args.pop().unwrap_or_default();
    let ok = match &position {
        Value::String(_) => true,
        Value::Array(list) => list.iter().all(Value::is_string) && Some(list.len()) == args[1].as_array().map(Vec::len),
        _ => false,
    };
    assert!(ok, "a position per event: {m}");
    Value::Array(args)
}

fn response(id: &str, author: &str) -> Value {
    json!({"response_id": id, "author_id": author, "author_name": author.to_uppercase(), "content": format!("text of {id}"), "created_at": now()})
}

/// The next roster `name` receives: (count, user ids, the time it arrived).
async fn roster(d: &mut Driver, name: &str) -> (u64, Vec<String>, f64) {
    let m = d.message(name, "TypingRoster", WAIT).await.unwrap_or_else(|| panic!("{name}: no roster"));
    let r = &m["args"][0];
    assert_eq!(m["args"].as_array().map(Vec::len), Some(1), "one argument, the roster: {m}");
    assert_eq!(r["room_id"], "d-1", "{m}");
    let users: Vec<String> =
        r["users"].as_array().expect("users").iter().map(|u| u["user_id"].as_str().expect("id").to_string()).collect();
    (r["count"].as_u64().expect("count"), users, m["at"].as_f64().expect("at"))
}

#[tokio::test]
async fn the_typing_roster_counts_users_once_throttles_and_clears() {
    let (redis, s) = start().await;
    let mut d = Driver::start().await;
    reader(&mut d, &s, "reader", "rita", "json").await;
    reader(&mut d, &s, "reader-mp", "rolf", "msgpack").await;
    reader(&mut d, &s, "ann-tab-1", "ann", "json").await;
    reader(&mut d, &s, "ann-tab-2", "ann", "json").await;
    reader(&mut d, &s, "bob", "bob", "json").await;

    // Ann starts in one tab: shown at once (FR-018).
    d.invoke("ann-tab-1", "SendTyping", json!(["d-1", true])).await.expect("typing");
    let (count, users, first_at) = roster(&mut d, "reader").await;
    assert_eq!((count, users), (1, vec!["ann".to_string()]));
    let m = d.message("reader-mp", "TypingRoster", WAIT).await.expect("msgpack roster");
    assert_eq!(m["args"][0]["users"], json!([{"user_id": "ann", "username": "ANN"}]), "MessagePack: the same roster");
    // Her second tab and Bob within the window: one roster at its end,
    // Ann once (FR-019, the seed's edge case of several tabs).
    d.invoke("ann-tab-2", "SendTyping", json!(["d-1", true])).await.expect("typing");
    d.invoke("bob", "SendTyping", json!(["d-1", true])).await.expect("typing");
    let (count, users, second_at) = roster(&mut d, "reader").await;
    assert_eq!((count, users), (2, vec!["ann".to_string(), "bob".to_string()]));
    assert!(second_at - first_at >= 450.0, "at most one roster per 500 ms (NFR-017): {} ms", second_at - first_at);

    // Ann's response is posted: she leaves the roster (FR-021) and the
    // response arrives as a batch of one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let posted = response("r-1", "ann");
    redis.xadd_data("events:discussion", &envelope("response_posted", "d-1", posted.clone()));
    let m = d.message("reader", "ResponsesPosted", WAIT).await.expect("the response");
    assert_eq!(positioned(&m), json!(["d-1", [posted]]));
    let (count, users, _) = roster(&mut d, "reader").await;
    assert_eq!((count, users), (1, vec!["bob".to_string()]));

    // Bob stops: an empty roster, at once after the window.
    tokio::time::sleep(Duration::from_millis(600)).await;
    d.invoke("bob", "SendTyping", json!(["d-1", false])).await.expect("typing");
    assert_eq!(roster(&mut d, "reader").await.0, 0);

    // A publisher's typing_started with no stop: cleared 5 s after it (FR-020).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let started = Instant::now();
    let typing = json!({"user_id": "cid", "username": "Cid", "is_typing": true});
    redis.xadd_data("events:discussion", &envelope("typing_started", "d-1", typing));
    assert_eq!(roster(&mut d, "reader").await.0, 1);
    let (count, _, _) = roster(&mut d, "reader").await;
    let waited = started.elapsed();
    assert_eq!(count, 0);
    assert!((Duration::from_millis(4800)..Duration::from_millis(7000)).contains(&waited), "cleared after {waited:?}");

    let all = d.drain_messages("reader", Duration::from_millis(300)).await;
    assert!(all.iter().all(|m| m["method"] != "UserTyping"), "no per-user indicator on this hub: {all:?}");
}

#[tokio::test]
async fn a_tab_that_joins_while_someone_types_sees_them_within_seconds() {
    // Seed 003's tabs edge case and FR-036: the roster only changes when
    // someone starts or stops, so without a repeat a tab that joins while
    // Ann keeps typing would never show her.
    let (_redis, s) = start().await;
    let mut d = Driver::start().await;
    reader(&mut d, &s, "watcher", "rita", "json").await;
    reader(&mut d, &s, "ann", "ann", "json").await;
    d.invoke("ann", "SendTyping", json!(["d-1", true])).await.expect("typing");
    assert_eq!(roster(&mut d, "watcher").await.1, vec!["ann".to_string()]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    reader(&mut d, &s, "late", "lea", "json").await;
    let joined = Instant::now();
    // Ann keeps typing, a keystroke every 300 ms.
    let mut seen = None;
    while joined.elapsed() < Duration::from_secs(4) && seen.is_none() {
        d.invoke("ann", "SendTyping", json!(["d-1", true])).await.expect("typing");
        seen = d.message("late", "TypingRoster", Duration::from_millis(300)).await;
    }
    let m = seen.expect("the late tab got a roster while Ann typed");
    assert_eq!(m["args"][0]["users"], json!([{"user_id": "ann", "username": "ANN"}]), "{m}");
    assert!(
        joined.elapsed() <= Duration::from_millis(3000),
        "within REPEAT_AFTER of the last roster: {:?}",
        joined.elapsed()
    );
}

#[tokio::test]
async fn a_burst_of_responses_arrives_as_one_list_in_order_and_before_a_later_edit() {
    let (redis, s) = start().await;
    let mut d = Driver::start().await;
    reader(&mut d, &s, "json", "rita", "json").await;
    reader(&mut d, &s, "msgpack", "rolf", "msgpack").await;

    let burst: Vec<Value> = (1..=6).map(|n| response(&format!("r-{n}"), "ann")).collect();
    let mut conn = redis.conn();
    for p in &burst {
        xadd_data_on(&mut conn, "events:discussion", &envelope("response_posted", "d-1", p.clone()));
    }
    for name in ["json", "msgpack"] {
        let first = d.message(name, "ResponsesPosted", WAIT).await.expect("the first at once");
        assert_eq!(positioned(&first), json!(["d-1", [burst[0]]]), "{name}");
        let rest = d.message(name, "ResponsesPosted", WAIT).await.expect("the rest together");
        assert_eq!(positioned(&rest), json!(["d-1", burst[1..]]), "{name}: one invocation, in order");
        let gap = rest["at"].as_f64().expect("at") - first["at"].as_f64().expect("at");
        assert!((300.0..1500.0).contains(&gap), "{name}: the window's end, {gap} ms later");
    }

    // An edit right behind a held response must not overtake it: the held
    // batch goes first. (Of two responses in a row, the second is held
    // whether or not the first opened a window.)
    let (r7, r8) = (response("r-7", "bob"), response("r-8", "bob"));
    for p in [&r7, &r8] {
        xadd_data_on(&mut conn, "events:discussion", &envelope("response_posted", "d-1", p.clone()));
    }
    let edit = json!({"response_id": "r-8", "author_id": "bob", "content": "edited", "edited_at": now()});
    xadd_data_on(&mut conn, "events:discussion", &envelope("response_edited", "d-1", edit.clone()));
    let got = d.drain_messages("json", Duration::from_millis(1200)).await;
    let mut seen = Vec::new();
    for m in got.iter().filter(|m| m["method"] != "UserJoined") {
        match m["method"].as_str() {
            Some("ResponsesPosted") => seen.extend(m["args"][1].as_array().cloned().unwrap_or_default()),
            Some("ResponseEdited") => seen.push(m["args"][1].clone()),
            other => panic!("unexpected {other:?}: {m}"),
        }
    }
    assert_eq!(seen, [r7, r8, edit], "one room's events in stream order");
}

#[tokio::test]
async fn notifications_reach_every_tab_of_their_user_and_announcements_everyone() {
    let (redis, s) = start().await;
    let mut d = Driver::start().await;
    for (name, user) in [("ann-1", "ann"), ("ann-2", "ann"), ("bob", "bob")] {
        let extra = json!({"accessToken": token(user, user)});
        d.connect(name, &s.hub("/hubs/notification"), &NOTIFICATION, extra).await.expect("connects");
    }
    let reply = json!({"notification_id": "n-1", "user_id": "ann", "discussion_id": "d-1", "response_id": "r-9",
        "from_user_id": "bob", "from_username": "Bob", "created_at": now()});
    redis.xadd_data("events:notification", &envelope("reply_notification", "user:ann", reply.clone()));
    let mention = json!({"notification_id": "n-2", "user_id": "bob", "discussion_id": "d-1", "response_id": "r-9",
        "from_user_id": "ann", "priority": "high", "created_at": now()});
    redis.xadd_data("events:notification", &envelope("mention_notification", "user:bob", mention.clone()));
    let activity = json!({"notification_id": "n-3", "user_id": "bob", "discussion_id": "d-1",
        "activity": "common_ground", "created_at": now()});
    redis.xadd_data("events:notification", &envelope("activity_notification", "user:bob", activity.clone()));
    let news = json!({"announcement_id": "a-1", "title": "Maintenance", "message": "at 22:00", "severity": "info", "created_at": now()});
    redis.xadd_data("events:notification", &envelope("announcement", "*", news.clone()));

    for name in ["ann-1", "ann-2"] {
        let m = d.message(name, "ReceiveNotification", WAIT).await.expect("the reply");
        assert_eq!(m["args"], json!(["reply_notification", reply]), "{name}");
    }
    let m = d.message("bob", "ReceiveNotification", WAIT).await.expect("the mention");
    assert_eq!(m["args"], json!(["mention_notification", mention]));
    let m = d.message("bob", "ReceiveNotification", WAIT).await.expect("the activity");
    assert_eq!(m["args"], json!(["activity_notification", activity]));
    for name in ["ann-1", "ann-2", "bob"] {
        let m = d.message(name, "Announcement", WAIT).await.expect("the announcement");
        assert_eq!(m["args"], json!([news]), "{name}");
    }
    for name in ["ann-1", "ann-2"] {
        let more = d.drain_messages(name, Duration::from_millis(300)).await;
        assert!(more.is_empty(), "{name}: nothing meant for Bob: {more:?}");
    }
}

#[tokio::test]
async fn every_discussion_event_reaches_that_discussions_members_only() {
    let (redis, s) = start().await;
    let mut d = Driver::start().await;
    reader(&mut d, &s, "member", "rita", "json").await;
    let extra = json!({"accessToken": token("olga", "Olga")});
    d.connect("elsewhere", &s.hub("/hubs/discussion"), &DISCUSSION, extra).await.expect("connects");
    assert!(d.invoke("elsewhere", "JoinDiscussion", json!(["d-2"])).await.is_ok());

    let edited = json!({"response_id": "r-1", "author_id": "ann", "content": "better", "edited_at": now()});
    let deleted = json!({"response_id": "r-2", "deleted_by": "mod-1", "deleted_at": now()});
    let analysis = json!({"analysis_id": "a-1", "version": 3, "summary": "two agreement zones", "updated_at": now()});
    let mut conn = redis.conn();
    for (ev, payload) in [("response_edited", &edited), ("response_deleted", &deleted), ("analysis_updated", &analysis)]
    {
        xadd_data_on(&mut conn, "events:discussion", &envelope(ev, "d-1", payload.clone()));
    }
    for (method, payload) in
        [("ResponseEdited", &edited), ("ResponseDeleted", &deleted), ("AnalysisUpdated", &analysis)]
    {
        let m = d.message("member", method, WAIT).await.unwrap_or_else(|| panic!("no {method}"));
        assert_eq!(positioned(&m), json!(["d-1", payload]), "{method}: the discussion, then the payload");
    }
    // A member of another discussion gets none of it (FR-031), only its own.
    let own = json!({"response_id": "r-3", "deleted_by": "mod-1", "deleted_at": now()});
    xadd_data_on(&mut conn, "events:discussion", &envelope("response_deleted", "d-2", own.clone()));
    let m = d.message("elsewhere", "ResponseDeleted", WAIT).await.expect("its own discussion's event");
    assert_eq!(positioned(&m), json!(["d-2", own]));
    let got = d.drain_messages("elsewhere", Duration::from_millis(300)).await;
    assert!(got.iter().all(|m| m["args"][0] == "d-2"), "{got:?}");
}

#[tokio::test]
async fn a_response_that_breaks_its_schema_is_refused_on_post() {
    let (_redis, s) = start().await;
    let mut bad = envelope("response_posted", "d-1", json!({"response_id": "r-1", "content": "no author"}));
    let (status, body) = s.post_event(bad.to_string().as_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("author_id"), "{body}");
    bad["payload"]["author_id"] = json!("ann");
    bad["payload"]["created_at"] = json!(now());
    let (status, body) = s.post_event(bad.to_string().as_bytes()).await;
    assert_eq!(status, 202, "{body}");
}
