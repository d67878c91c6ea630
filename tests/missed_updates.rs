//! Missed updates on the discussion platform (CONTRACT section 15, seed 003
//! FR-025) with the official client and a real Redis: every event of a
//! history route carries its position; `JoinDiscussion(id, lastPosition)`
//! replays what the client missed, in order, then continues live with no
//! gap and no duplicate; a position the history cannot vouch for answers
//! `recovered: false`.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const HUB: &str = "/hubs/discussion";
const STREAM: &str = "events:discussion";

fn discussion_env(redis: Option<&Redis>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("SIDECAR_ROUTES", "protocol/routes-discussion.toml".to_string()),
        ("SIDECAR_STREAMS", STREAM.to_string()),
    ];
    if let Some(r) = redis {
        env.push(("SIDECAR_REDIS_URL", r.url()));
    }
    env
}

/// A `response_posted` of seed 003 (batched: `ResponsesPosted(id,
/// [response, ...], [position, ...])`), numbered `n`.
fn response(room: &str, n: u64) -> Value {
    let payload = json!({
        "response_id": format!("r-{n}"), "author_id": "author", "content": format!("response {n}"),
        "created_at": now(), "n": n
    });
    envelope("response_posted", room, payload)
}

/// Connects `name` to the discussion hub and joins `room` naming `last`;
/// returns the join's Completion.
async fn join(d: &mut Driver, s: &Sidecar, name: &str, room: &str, last: Value) -> Value {
    join_over(d, s, name, room, last, "WebSockets").await
}

/// [`join`] over a given transport.
async fn join_over(d: &mut Driver, s: &Sidecar, name: &str, room: &str, last: Value, transport: &str) -> Value {
    let options = json!({"transport": transport});
    d.connect(name, &s.hub(HUB), &["ResponsesPosted", "ResponseEdited"], options).await.expect("connects");
    d.invoke(name, "JoinDiscussion", json!([room, last])).await.expect("joins")
}

/// `(n, position)` of every response `name` got, batches unrolled, in
/// order, waiting until `count`.
async fn received(d: &mut Driver, name: &str, count: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while out.len() < count {
        let Some(m) = d.message(name, "ResponsesPosted", WAIT).await else { break };
        let (responses, positions) = (m["args"][1].as_array(), m["args"][2].as_array());
        let (Some(responses), Some(positions)) = (responses, positions) else { panic!("a batch: {m}") };
        assert_eq!(responses.len(), positions.len(), "a position per response: {m}");
        for (r, p) in responses.iter().zip(positions) {
            let n = r["n"].as_u64().expect("payload n");
            out.push((n, p.as_str().unwrap_or_else(|| panic!("a position: {m}")).to_string()));
        }
    }
    out
}

fn ids(got: &[(u64, String)]) -> Vec<u64> {
    got.iter().map(|(n, _)| *n).collect()
}

fn id_of(p: &str) -> (u64, u64) {
    let (ms, seq) = p.split_once('-').expect("ms-seq");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

#[tokio::test]
async fn a_join_with_the_last_position_replays_the_missed_events_then_continues_live_without_gap_or_duplicate() {
    // A WebSocket session writes nothing while it runs an invocation;
    // Server-Sent Events are written by another task, so live events can
    // race the replay there: both must hold the seam.
    for transport in ["WebSockets", "ServerSentEvents", "LongPolling"] {
        replay_then_live(transport).await;
    }
}

async fn replay_then_live(transport: &str) {
    let redis = Redis::start().await;
    let s = Sidecar::start(&discussion_env(Some(&redis))).await;
    let mut d = Driver::start().await;
    let first = join(&mut d, &s, "a", "d1", Value::Null).await;
    assert_eq!(first["recovered"], false, "nothing to recover without a position: {first}");
    assert!(first["position"].is_string(), "a bookmark even before any event: {first}");

    let mut conn = redis.conn();
    for n in 0..3 {
        xadd_data_on(&mut conn, STREAM, &response("d1", n));
        xadd_data_on(&mut conn, STREAM, &response("d2", 100 + n)); // another discussion
    }
    let seen = received(&mut d, "a", 3).await;
    assert_eq!(ids(&seen), [0, 1, 2]);
    assert!(seen.windows(2).all(|w| id_of(&w[0].1) < id_of(&w[1].1)), "positions grow: {seen:?}");
    let last = seen[2].1.clone();
    d.stop("a").await;

    // Missed while away: many responses (a replay long enough to race the
    // live ones), an edit, a typing event, the other room.
    for n in 3..503 {
        xadd_data_on(&mut conn, STREAM, &response("d1", n));
        xadd_data_on(&mut conn, STREAM, &response("d2", 100_000 + n));
    }
    let edit = json!({"response_id": "r-4", "author_id": "author", "content": "edited", "edited_at": now()});
    xadd_data_on(&mut conn, STREAM, &envelope("response_edited", "d1", edit));
    let typing = json!({"user_id": "u9", "username": "U9", "is_typing": true});
    xadd_data_on(&mut conn, STREAM, &envelope("typing_started", "d1", typing));

    // Publishing goes on while the client rejoins: the seam must hold.
    let url = redis.url();
    let publisher = tokio::task::spawn_blocking(move || {
        let mut conn = redis::Client::open(url).expect("url").get_connection().expect("redis");
        for n in 503..703 {
            xadd_data_on(&mut conn, STREAM, &response("d1", n));
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let back = join_over(&mut d, &s, "b", "d1", json!(last), transport).await;
    assert_eq!(back["recovered"], true, "{back}");
    publisher.await.expect("publisher");
    let got = received(&mut d, "b", 700).await;
    assert_eq!(ids(&got), (3..703).collect::<Vec<_>>(), "{transport}: every missed and live event once, in order");
    assert!(got.windows(2).all(|w| id_of(&w[0].1) < id_of(&w[1].1)), "positions grow");
    let edit = d.message("b", "ResponseEdited", WAIT).await.expect("the missed edit is replayed");
    assert_eq!(edit["args"][1]["content"], "edited");
    assert!(edit["args"][2].is_string(), "the edit carries its position");
    assert!(d.message("b", "ResponsesPosted", Duration::from_millis(700)).await.is_none(), "nothing twice");
    assert!(id_of(back["position"].as_str().expect("position")) > id_of(&last), "{back}");
}

/// The stream trimmed past a client's position (the publisher appends with
/// `MAXLEN ~`) loses nothing the discussion's history keeps: the join
/// replays from the history. Redis 7.0 leaves `max-deleted-entry-id` at
/// `0-0` on a trim, so a stream whose first entry is newer than the
/// position is not taken for a new one (Redis restarted empty) unless it
/// still holds every entry it was given.
#[tokio::test]
async fn a_stream_trimmed_past_a_position_still_replays_it_from_the_history() {
    let redis = Redis::start().await;
    let s = Sidecar::start(&discussion_env(Some(&redis))).await;
    let mut d = Driver::start().await;
    join(&mut d, &s, "a", "d1", Value::Null).await;
    let mut conn = redis.conn();
    for n in 0..3 {
        xadd_data_on(&mut conn, STREAM, &response("d1", n));
    }
    let last = received(&mut d, "a", 3).await[2].1.clone();
    d.stop("a").await;
    for n in 3..50 {
        xadd_data_on(&mut conn, STREAM, &response("d1", n));
    }
    let _: i64 = redis::cmd("XTRIM").arg(STREAM).arg("MAXLEN").arg(10).query(&mut conn).expect("trims");
    // Let this instance read and write the history up to the trim.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = join(&mut d, &s, "b", "d1", json!(last)).await;
    assert_eq!(back["recovered"], true, "{back}");
    assert_eq!(ids(&received(&mut d, "b", 47).await), (3..50).collect::<Vec<_>>(), "every missed event once, in order");
}

#[tokio::test]
async fn a_position_older_than_the_history_or_from_before_anyone_was_reading_is_not_recovered() {
    let redis = Redis::start().await;
    let routes = std::env::temp_dir().join(format!("routes-history-{}.toml", free_port()));
    let text = std::fs::read_to_string(procs::root().join("protocol/routes-discussion.toml")).expect("routes");
    std::fs::write(&routes, text.replace("history_seconds = 86400", "history_seconds = 2")).expect("write");
    let mut env = discussion_env(Some(&redis));
    env[0].1 = routes.display().to_string();
    let mut s = Sidecar::start(&env).await;
    let mut d = Driver::start().await;
    join(&mut d, &s, "a", "d1", Value::Null).await;
    redis.xadd_data(STREAM, &response("d1", 1));
    let old = received(&mut d, "a", 1).await[0].1.clone();

    // Older than the kept history (2 s here). (With nothing published
    // since, nothing was missed: that join would recover, rightly.)
    tokio::time::sleep(Duration::from_millis(2500)).await;
    redis.xadd_data(STREAM, &response("d9", 9));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = d.invoke("a", "JoinDiscussion", json!(["d2", old])).await.expect("joins");
    assert_eq!(late["recovered"], false, "{late}");
    assert!(d.invoke("a", "JoinDiscussion", json!(["d3", "1-0"])).await.expect("joins")["recovered"] == false);
    assert!(d.invoke("a", "JoinDiscussion", json!(["d4", "nonsense"])).await.is_err(), "not a position");

    // No instance was reading while these were published: nobody can vouch
    // that the history holds them.
    redis.xadd_data(STREAM, &response("d1", 2));
    let seen = received(&mut d, "a", 1).await[0].1.clone();
    d.stop("a").await;
    s.kill().await;
    redis.xadd_data(STREAM, &response("d1", 3));
    let s = Sidecar::start(&env).await;
    let gap = join(&mut d, &s, "b", "d1", json!(seen)).await;
    assert_eq!(gap["recovered"], false, "{gap}");
    assert!(d.message("b", "ResponsesPosted", Duration::from_millis(700)).await.is_none(), "no partial replay");
}

#[tokio::test]
async fn the_bookmark_of_a_join_before_the_streams_first_event_recovers_what_came_after() {
    // No stream yet: the join's position is the stream's beginning, `0-0`,
    // which is older than any window but hides nothing.
    let redis = Redis::start().await;
    let s = Sidecar::start(&discussion_env(Some(&redis))).await;
    let mut d = Driver::start().await;
    let first = join(&mut d, &s, "a", "d1", Value::Null).await;
    let bookmark = first["position"].as_str().unwrap_or_else(|| panic!("a bookmark: {first}")).to_string();
    d.stop("a").await;
    for n in 0..3 {
        redis.xadd_data(STREAM, &response("d1", n));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = join(&mut d, &s, "b", "d1", json!(bookmark)).await;
    assert_eq!(back["recovered"], true, "{bookmark} hides nothing: {back}");
    assert_eq!(ids(&received(&mut d, "b", 3).await), [0, 1, 2]);
}

#[tokio::test]
async fn a_join_is_not_recovered_where_this_instance_cannot_vouch_for_the_seam() {
    let redis = Redis::start().await;
    let s = Sidecar::start(&discussion_env(Some(&redis))).await;
    let mut d = Driver::start().await;
    join(&mut d, &s, "a", "d1", Value::Null).await;
    redis.xadd_data(STREAM, &response("d1", 1));
    let seen = received(&mut d, "a", 1).await[0].1.clone();
    d.stop("a").await;
    for n in 2..5 {
        redis.xadd_data(STREAM, &response("d1", n));
    }

    // In the room already (joined after 2, 3 and 4): which of the events
    // since `seen` it was sent, nothing says. Nothing since: recovered.
    let plain = join(&mut d, &s, "b", "d1", Value::Null).await;
    let again = d.invoke("b", "JoinDiscussion", json!(["d1", seen])).await.expect("joins");
    assert_eq!(again["recovered"], false, "2, 3 and 4 were never sent to it: {again}");
    let now = d.invoke("b", "JoinDiscussion", json!(["d1", plain["position"]])).await.expect("joins");
    assert_eq!(now["recovered"], true, "nothing since its own join: {now}");
    assert!(d.message("b", "ResponsesPosted", Duration::from_millis(500)).await.is_none(), "nothing replayed");

    // A position this instance never reached (a client from an instance
    // ahead, by more than the join waits for; here one never handed out).
    let ahead = format!("{}-0", id_of(&seen).0 + 3_600_000);
    let future = join(&mut d, &s, "c", "d1", json!(ahead)).await;
    assert_eq!(future["recovered"], false, "{future}");
    redis.xadd_data(STREAM, &response("d1", 5));
    assert_eq!(ids(&received(&mut d, "c", 1).await), [5], "live goes on after a join not recovered");
}

#[tokio::test]
async fn presence_events_carry_their_position_and_are_replayed_like_the_others() {
    // CONTRACT section 15: every event a discussion client receives carries
    // its position; a join with the last one replays what came after.
    // Presence is about authenticated users.
    let redis = Redis::start().await;
    let mut env = discussion_env(Some(&redis));
    env.extend(jwt_env());
    let s = Sidecar::start(&env).await;
    let mut d = Driver::start().await;
    let handlers = ["UserJoined", "UserLeft", "ResponsesPosted"];
    let as_user = |user: &str| json!({"accessToken": token(user, user)});
    d.connect("watch", &s.hub(HUB), &handlers, as_user("watcher")).await.expect("connects");
    d.invoke("watch", "JoinDiscussion", json!(["d1", null])).await.expect("joins");
    d.drain_messages("watch", Duration::from_millis(300)).await; // its own join
    d.connect("a", &s.hub(HUB), &handlers, as_user("ann")).await.expect("connects");
    let bookmark = d.invoke("a", "JoinDiscussion", json!(["d1", null])).await.expect("joins")["position"].clone();
    d.stop("a").await;
    d.connect("b", &s.hub(HUB), &handlers, as_user("bob")).await.expect("connects");
    d.invoke("b", "JoinDiscussion", json!(["d1", null])).await.expect("joins");
    let b_joined = |v: &Value| v["name"] == "watch" && v["method"] == "UserJoined";
    let mut live = Vec::new();
    while live.len() < 2 {
        let m = d.wait_for(WAIT, b_joined).await.unwrap_or_else(|| panic!("watch saw only {live:?}"));
        assert!(m["args"][2].is_string(), "a position: {m}");
        live.push(m["args"][2].clone());
    }

    d.connect("a2", &s.hub(HUB), &handlers, as_user("ann")).await.expect("connects");
    let back = d.invoke("a2", "JoinDiscussion", json!(["d1", bookmark])).await.expect("joins");
    assert_eq!(back["recovered"], true, "{back}");
    let mut replayed = Vec::new();
    while replayed.len() < 2 {
        let m = d.wait_for(WAIT, |v| v["name"] == "a2" && v["method"] == "UserJoined").await;
        replayed.push(m.unwrap_or_else(|| panic!("a2 got only {replayed:?}"))["args"][2].clone());
    }
    assert_eq!(replayed, live, "a's and b's joins, replayed at their positions");
}

#[tokio::test]
async fn a_user_or_everyone_is_not_a_discussion_that_can_be_joined_or_replayed() {
    // `user:<id>` and `*` are targets, not groups (CONTRACT section 3): a
    // history join of `user:bob` would replay bob's own events to anyone.
    let redis = Redis::start().await;
    let s = Sidecar::start(&discussion_env(Some(&redis))).await;
    let mut d = Driver::start().await;
    let handlers = ["ResponsesPosted", "AnalysisUpdated"];
    d.connect("eve", &s.hub(HUB), &handlers, json!({"transport": "WebSockets"})).await.expect("connects");
    let bookmark = d.invoke("eve", "JoinDiscussion", json!(["d1", null])).await.expect("joins")["position"].clone();
    let private = json!({"analysis_id": "a1", "version": 1, "updated_at": now(), "summary": "for bob only"});
    redis.xadd_data(STREAM, &envelope("analysis_updated", "user:bob", private));
    redis.xadd_data(STREAM, &response("d1", 1));
    received(&mut d, "eve", 1).await;
    for room in ["user:bob", "*"] {
        let refused = d.invoke("eve", "JoinDiscussion", json!([room, bookmark])).await;
        let error = refused.expect_err(&format!("joining {room} is refused"));
        assert!(error.contains("not \"*\" and not starting with \"user:\""), "the error names the rule: {error}");
        let typing = d.invoke("eve", "SendTyping", json!([room, true])).await;
        assert!(typing.is_err(), "typing into {room} is refused");
    }
    assert!(d.message("eve", "AnalysisUpdated", Duration::from_millis(700)).await.is_none(), "nothing of bob's");
    assert!(d.invoke("eve", "JoinDiscussion", json!(["d2", bookmark])).await.is_ok(), "the connection goes on");
}

#[tokio::test]
async fn positions_hold_across_instances_and_across_a_rolling_restart() {
    let redis = Redis::start().await;
    let mut one = Sidecar::start(&discussion_env(Some(&redis))).await;
    let mut two = Sidecar::start(&discussion_env(Some(&redis))).await;
    let mut d = Driver::start().await;
    join(&mut d, &one, "a", "d1", Value::Null).await;
    redis.xadd_data(STREAM, &response("d1", 0));
    let p = received(&mut d, "a", 1).await[0].1.clone();
    d.stop("a").await;
    for n in 1..4 {
        redis.xadd_data(STREAM, &response("d1", n));
    }
    // The client comes back through another instance.
    let moved = join(&mut d, &two, "b", "d1", json!(p)).await;
    assert_eq!(moved["recovered"], true, "{moved}");
    let got = received(&mut d, "b", 3).await;
    assert_eq!(ids(&got), [1, 2, 3]);
    let q = got[2].1.clone();
    d.stop("b").await;

    // A rolling restart: one goes; an event is published while only two
    // reads; three comes; two goes; another event. Three recovers both: the
    // first from two's stretch of the stream, the second from its own.
    assert_eq!(one.stop().await, Some(0));
    redis.xadd_data(STREAM, &response("d1", 4));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let three = Sidecar::start(&discussion_env(Some(&redis))).await;
    assert_eq!(two.stop().await, Some(0));
    redis.xadd_data(STREAM, &response("d1", 5));
    let restarted = join(&mut d, &three, "c", "d1", json!(q)).await;
    assert_eq!(restarted["recovered"], true, "{restarted}");
    assert_eq!(ids(&received(&mut d, "c", 2).await), [4, 5]);
}

#[tokio::test]
async fn without_redis_events_carry_a_null_position_and_joins_do_not_recover() {
    let s = Sidecar::start(&discussion_env(None)).await;
    let mut d = Driver::start().await;
    let joined = join(&mut d, &s, "a", "d1", json!("1700000000000-0")).await;
    assert_eq!(joined, json!({"recovered": false, "position": null}));
    let (status, body) = s.post_event(response("d1", 7).to_string().as_bytes()).await;
    assert_eq!(status, 202, "{body}");
    let m = d.message("a", "ResponsesPosted", WAIT).await.expect("delivered");
    assert_eq!(m["args"][0], "d1");
    assert_eq!(m["args"][1][0]["n"], 7);
    assert_eq!(m["args"][2], json!([null]), "no position without Redis");
}

/// Builds `events:discussion` with 1,000,000 entries (a Lua loop, 100,000
/// per call), 100 of them for discussion `bench` spread evenly, each also
/// in its room's history as the history writer keeps it, and the coverage
/// a long-running instance would have published; then times
/// `JoinDiscussion("bench", <position before the first of them>)`, which
/// replays the 100. Run: `cargo test --test missed_updates -- --ignored
/// --nocapture replay_of_100`. The figure is in BENCHMARKS.md.
#[tokio::test]
#[ignore = "a measurement: builds a 1,000,000-entry stream"]
async fn replay_of_100_missed_events_from_a_stream_of_1_000_000() {
    const BUILD: &str = r#"
local stream, prefix, ts = KEYS[1], ARGV[1], ARGV[2]
local first, count, last = tonumber(ARGV[3]), tonumber(ARGV[4]), ''
for n = first, first + count - 1 do
  local room = 'd' .. (n % 1000)
  if n % 10000 == 5000 then room = 'bench' end
  local json = '{"event_id":"00000000-0000-4000-8000-' .. string.format('%012d', n) ..
    '","event_type":"response_posted","timestamp":"' .. ts .. '","room_id":"' .. room ..
    '","payload":{"response_id":"r-' .. n .. '","author_id":"author","content":"response ' .. n ..
    '","created_at":"' .. ts .. '","n":' .. n .. '}}'
  last = redis.call('XADD', stream, '*', 'data', json)
  local ms, seq = string.match(last, '(%d+)-(%d+)')
  local key = prefix .. ':history:{discussion:' .. room .. '}'
  redis.call('ZADD', key, ms, string.format('%020d-%020d ', tonumber(ms), tonumber(seq)) .. json)
end
return last
"#;
    const TOTAL: u64 = 1_000_000;
    let redis = Redis::start().await;
    let mut conn = redis.conn();
    let built = std::time::Instant::now();
    let mut last = String::new();
    for chunk in 0..10u64 {
        last = redis::cmd("EVAL")
            .arg(BUILD)
            .arg(1)
            .arg(STREAM)
            .arg("signalr-sidecar")
            .arg(now())
            .arg(chunk * TOTAL / 10)
            .arg(TOTAL / 10)
            .query(&mut conn)
            .expect("build");
    }
    let _: i64 = redis::cmd("HSET")
        .arg(format!("signalr-sidecar:history-coverage:{STREAM}"))
        .arg("earlier-instance@0-0")
        .arg(format!("0-0 {last}"))
        .query(&mut conn)
        .expect("coverage");
    let len: u64 = redis::cmd("XLEN").arg(STREAM).query(&mut conn).expect("XLEN");
    assert_eq!(len, TOTAL);
    println!("built {len} entries in {:?}", built.elapsed());
    // The position just before the room's first event (entry 4999).
    let before: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(STREAM).arg("-").arg("+").arg("COUNT").arg(5000).query(&mut conn).expect("XRANGE");
    let after = before.ids[4999].id.clone();

    let key = "signalr-sidecar:history:{discussion:bench}";
    let mut redis_ms = Vec::new();
    for _ in 0..21 {
        let t = std::time::Instant::now();
        let members: Vec<Vec<u8>> =
            redis::cmd("ZRANGEBYSCORE").arg(key).arg("-inf").arg("+inf").query(&mut conn).expect("range");
        redis_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(members.len(), 100);
    }
    redis_ms.sort_by(|a, b| a.total_cmp(b));
    println!("redis alone: ZRANGEBYSCORE of the room's 100 events, median {:.3} ms", redis_ms[10]);

    let log = std::env::temp_dir().join(format!("replay-bench-{}.log", free_port()));
    let mut env = discussion_env(Some(&redis));
    env.push(("SIDECAR_LOG", "warn,signalr_sidecar::hub::missed=debug".into()));
    env.push(("SIDECAR_LOG_FORMAT", "json".into()));
    let s = Sidecar::start_logged(&env, &log).await;
    let mut d = Driver::start().await;
    let mut client_ms = Vec::new();
    for round in 0..21 {
        let name = format!("c{round}");
        d.connect(&name, &s.hub(HUB), &["ResponsesPosted"], json!({})).await.expect("connects");
        let t = std::time::Instant::now();
        let joined = d.invoke(&name, "JoinDiscussion", json!(["bench", after])).await.expect("joins");
        client_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(joined["recovered"], true, "{joined}");
        let got = received(&mut d, &name, 100).await;
        assert_eq!(ids(&got), (0..100).map(|k| k * 10_000 + 5000).collect::<Vec<_>>());
        d.stop(&name).await;
    }
    let text = std::fs::read_to_string(&log).expect("log");
    let mut server_ms: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["ms"].as_f64().or(v["fields"]["ms"].as_f64()))
        .collect();
    // The first join warms the connection pool and the schema caches.
    client_ms.remove(0);
    server_ms.remove(0);
    for v in [&mut client_ms, &mut server_ms] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let at = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "replay of 100 events from {TOTAL} entries, 20 joins: server median {:.2} ms, max {:.2} ms; client-observed join median {:.2} ms, max {:.2} ms",
        at(&server_ms, 0.5),
        at(&server_ms, 1.0),
        at(&client_ms, 0.5),
        at(&client_ms, 1.0)
    );
    assert!(at(&server_ms, 0.5) < 10.0, "target: under 10 ms");
}
