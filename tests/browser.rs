//! The official client's browser build in headless Chromium (Debian's
//! package through puppeteer-core): negotiate, WebSockets with the token in
//! the `access_token` query string, join, receive; then the same page
//! forced onto Server-Sent Events, and onto Long Polling.

mod support;

use serde_json::Value;
use support::*;

async fn run_page(s: &Sidecar, transport: &str) -> Value {
    let out = tokio::process::Command::new("node")
        .arg(procs_root().join("tests/client/browser.mjs"))
        .arg(s.hub("/hubs/chat"))
        .arg(format!("http://127.0.0.1:{}", s.admin_port))
        .arg(transport)
        .arg("opaque-token-for-the-query-string")
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line =
        stdout.lines().last().unwrap_or_else(|| panic!("no output; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"))
}

fn procs_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn a_browser_page_receives_over_every_transport() {
    let s = Sidecar::start(&[("SIDECAR_CORS_ORIGINS", "*".into())]).await;
    for (transport, used, unused) in
        [("WebSockets", "websockets", "eventStreams"), ("ServerSentEvents", "eventStreams", "websockets")]
    {
        let result = run_page(&s, transport).await;
        assert_eq!(result["ok"], true, "{transport}: {result}");
        assert_eq!(result["received"]["content"], "hello from the browser test", "{result}");
        let urls = result[used].as_array().expect("urls");
        assert_eq!(urls.len(), 1, "{transport}: {result}");
        let url = urls[0].as_str().expect("url");
        assert!(url.contains("/hubs/chat?id="), "{url}");
        assert!(
            url.contains("access_token=opaque-token-for-the-query-string"),
            "the browser sends the token in the query: {url}"
        );
        assert_eq!(result[unused], serde_json::json!([]), "{result}");
    }
    // Long Polling: neither a WebSocket nor an event stream goes out.
    let result = run_page(&s, "LongPolling").await;
    assert_eq!(result["ok"], true, "LongPolling: {result}");
    assert_eq!(result["received"]["content"], "hello from the browser test", "{result}");
    assert_eq!((&result["websockets"], &result["eventStreams"]), (&serde_json::json!([]), &serde_json::json!([])));
}
