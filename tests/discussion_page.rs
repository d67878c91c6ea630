//! The discussion page of `examples/discussion/` in headless Chromium with
//! the official browser client, on the shipped discussion routing file:
//! two pages (Ann and Bob) talk through the sidecar. Typing in one shows
//! the roster in the other ("3 people are typing…" with two typists from
//! the backend), a posted response appears in both, a burst arrives whole
//! and in order, and after a network drop the page shows its reconnecting
//! banner and then what was posted while it was away; an announcement
//! reaches both through the notification hub. The test reads the
//! DOM at each step; the screenshots it takes are kept under
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
    assert!(ann.contains(&"Dan: posted while Ann was away".into()), "{ann:?}");
    assert_eq!(steps["final"]["bob"]["notifications"], serde_json::json!(["📣 Maintenance: tonight at 22:00"]));
    let bob = steps["final"]["bob"]["responses"].as_array().expect("responses");
    assert!(bob.contains(&"Dan: posted while Ann was away".into()), "Bob came back too: {bob:?}");

    let files = result["screenshots"].as_array().expect("screenshots");
    assert_eq!(files.len(), 5, "{files:?}");
    for f in files {
        let bytes = std::fs::read(f.as_str().expect("path")).expect("the screenshot exists");
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{f}: {} bytes", bytes.len());
    }
}
