//! The discussion page of `examples/discussion/` in headless Chromium with
//! the official browser client, on the shipped discussion routing file:
//! two pages (Ann and Bob) talk through the sidecar. Typing in one shows
//! the roster in the other ("3 people are typing…" with two typists from
//! the backend), a posted response appears in both, a burst arrives whole
//! and in order, the participant count and its online / away split come
//! from the sidecar's ParticipantCount, and after a network drop the page
//! shows its reconnecting banner, joins again with the last position it
//! saw, and the sidecar replays what was posted while it was away (once
//! each, in order, events no refetch could bring); with a position older
//! than the sidecar's history the answer is `recovered: false` and the page
//! refetches from its backend and says so. An announcement reaches both
//! through the notification hub. The test reads the DOM (and the page's
//! sync counters) at each step; the screenshots it takes are kept under
//! `target/discussion-page/` for a human to look at.

mod support;

use serde_json::Value;
use support::*;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn two_pages_talk_through_the_sidecar() {
    let redis = Redis::start().await;
    let mut env = jwt_env();
    env.push(("SIDECAR_REDIS_URL", redis.url()));
    env.push(("SIDECAR_ROUTES", "protocol/routes-discussion.toml".into()));
    env.push(("SIDECAR_STREAMS", "events:discussion,events:notification".into()));
    env.push(("SIDECAR_CORS_ORIGINS", "*".into()));
    let s = Sidecar::start(&env).await;
    let shots = root().join("target/discussion-page");
    std::fs::create_dir_all(&shots).expect("screenshot directory");

    let out = tokio::process::Command::new("node")
        .arg(root().join("tests/client/discussion_page.mjs"))
        .arg(s.url())
        .arg(format!("http://127.0.0.1:{}", s.admin_port))
        .arg(JWT_SECRET)
        .arg(&shots)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line =
        stdout.lines().last().unwrap_or_else(|| panic!("no output; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    let result: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    assert_eq!(result["ok"], true, "{result:#}");
    let steps = &result["steps"];
    assert_eq!(steps["pageErrors"], Value::Null, "no script errors: {steps}");

    assert_eq!(steps["joined"]["participants"], "2 participants");
    assert_eq!(steps["states"]["presenceStates"], "2 online · 0 away", "ParticipantCount's split");
    assert_eq!(steps["oneTyping"]["typing"], "Bob is typing…");
    assert_eq!(steps["threeTyping"]["typing"], "3 people are typing…");
    assert_eq!(steps["bobSeesOthers"]["typing"], "Cid and Dan are typing…", "a page never lists its own user");
    assert_eq!(steps["posted"]["typing"], "Cid and Dan are typing…", "Bob left the roster when he posted");
    for at in ["posted", "postedAtBob"] {
        let responses = steps[at]["responses"].as_array().expect("responses");
        assert!(responses.contains(&"Bob: Hello from Bob".into()), "{at}: {responses:?}");
    }
    let ann = steps["final"]["ann"]["responses"].as_array().expect("responses").clone();
    let burst: Vec<&Value> = ann.iter().filter(|r| r.as_str().is_some_and(|r| r.starts_with("Cid: burst"))).collect();
    assert_eq!(
        burst,
        ["Cid: burst 1", "Cid: burst 2", "Cid: burst 3", "Cid: burst 4", "Cid: burst 5"],
        "in order, once each"
    );
    assert_eq!(steps["reconnecting"]["banner"], "Connection lost, reconnecting…");
    assert_eq!(steps["reconnected"]["banner"], "");
    assert_eq!(steps["reconnected"]["typing"], "", "no stale indicator after a reconnect");

    // Missed updates (FR-025): the page had a position before the drop...
    let position = |v: &Value| {
        let p = v.as_str().unwrap_or_else(|| panic!("a position: {v}"));
        let (ms, seq) = p.split_once('-').unwrap_or_else(|| panic!("<ms>-<seq>: {p}"));
        (ms.parse::<u64>().expect("ms"), seq.parse::<u64>().expect("seq"))
    };
    let before = position(&steps["beforeCut"]["lastPosition"]);
    assert!(before > (0, 0), "{before:?}");
    // ...and the sidecar replayed the four responses it missed: no refetch
    // ran (the three sent straight to the sidecar are in no backend store).
    assert_eq!(
        steps["reconnected"]["syncState"],
        serde_json::json!({"replays": 1, "refetches": 0, "replayed": 4, "last": "replayed"}),
        "{:#}",
        steps["reconnected"]
    );
    assert_eq!(steps["reconnected"]["sync"], "Back online: 4 missed responses replayed");
    assert!(position(&steps["reconnected"]["lastPosition"]) > before, "the bookmark moved on");
    let missed = |responses: &Value| -> Vec<String> {
        responses
            .as_array()
            .expect("responses")
            .iter()
            .filter_map(Value::as_str)
            .filter(|r| r.starts_with("Eve: missed") || r.starts_with("Dan: posted while"))
            .map(String::from)
            .collect()
    };
    let replayed = ["Dan: posted while Ann was away", "Eve: missed 1", "Eve: missed 2", "Eve: missed 3"];
    assert_eq!(missed(&steps["reconnected"]["responses"]), replayed, "once each, in order, at Ann's");
    assert_eq!(missed(&steps["final"]["ann"]["responses"]), replayed, "and still once each at the end");
    assert_eq!(missed(&steps["final"]["bob"]["responses"]), replayed, "Bob came back the same way");
    assert_eq!(steps["bobReplayed"]["syncState"]["refetches"], 0);

    // A position older than the history: recovered false, the page refetches.
    assert_eq!(steps["refetched"]["syncState"]["refetches"], 1, "{:#}", steps["refetched"]);
    assert_eq!(steps["refetched"]["syncState"]["last"], "refetched");
    assert_eq!(steps["refetched"]["syncState"]["replays"], 1, "no second replay");
    assert_eq!(
        steps["refetched"]["sync"],
        "Back online: missed updates could not be replayed, reloaded the discussion"
    );
    let second = |v: &Value| {
        v.as_array().expect("responses").iter().filter(|r| *r == "Dan: posted during the second drop").count()
    };
    assert_eq!(second(&steps["final"]["ann"]["responses"]), 1, "refetched once");
    assert_eq!(second(&steps["final"]["bob"]["responses"]), 1, "replayed once at Bob's");
    assert_eq!(steps["bobSecond"]["syncState"]["refetches"], 0, "Bob's position was fine: replayed");
    assert_eq!(steps["final"]["bob"]["notifications"], serde_json::json!(["📣 Maintenance: tonight at 22:00"]));

    let files = result["screenshots"].as_array().expect("screenshots");
    assert_eq!(files.len(), 7, "{files:?}");
    for f in files {
        let bytes = std::fs::read(f.as_str().expect("path")).expect("the screenshot exists");
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{f}: {} bytes", bytes.len());
    }
}
