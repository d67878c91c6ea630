//! The README's first examples (*Try it without Redis*, *Point it at
//! Redis*), run as a newcomer runs them: the shell lines copied out of
//! README.md, only the ports changed to this test's, each run more than once
//! (a newcomer tries again), with the official client in the room.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

/// The first ```sh block after the heading `heading` in README.md.
fn readme_block(heading: &str) -> String {
    let readme = std::fs::read_to_string(procs::root().join("README.md")).expect("README.md");
    let section = readme.split(heading).nth(1).unwrap_or_else(|| panic!("README.md lacks {heading:?}"));
    let block = section.split("```sh\n").nth(1).expect("a sh block after the heading");
    block.split("\n```").next().expect("the block's end").to_string()
}

/// The block's lines from the first that starts with `first` to the end of
/// the command (the last line not ending in a backslash or inside quotes:
/// the whole `curl ... -d '...'` or `redis-cli XADD ... \` command).
fn command(block: &str, first: &str) -> String {
    let start = block.find(first).unwrap_or_else(|| panic!("no line starting {first:?} in:\n{block}"));
    let mut out = String::new();
    let mut quotes = 0usize;
    for line in block[start..].lines() {
        out.push_str(line);
        out.push('\n');
        quotes += line.matches('\'').count();
        if quotes.is_multiple_of(2) && !line.ends_with('\\') {
            break;
        }
    }
    out
}

/// Runs `script` with bash; its standard output.
fn bash(script: &str) -> String {
    let out = std::process::Command::new("bash").arg("-c").arg(script).output().expect("bash");
    assert!(out.status.success(), "{script}\nfailed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn joined_client(s: &Sidecar) -> Driver {
    let mut d = Driver::start().await;
    d.connect("c", &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({})).await.expect("connects");
    d.invoke("c", "JoinRoom", json!(["room-1"])).await.expect("joins");
    d
}

#[tokio::test]
async fn the_in_process_example_delivers_every_time_it_is_run() {
    let s = Sidecar::start(&[]).await;
    let mut d = joined_client(&s).await;
    let post = command(&readme_block("### Try it without Redis"), "curl ")
        .replace("localhost:9090", &format!("127.0.0.1:{}", s.admin_port));
    for run in 1..=2 {
        let answer = bash(&post);
        assert!(answer.starts_with("HTTP/1.1 202"), "run {run}: {answer}");
        let got = d.message("c", "ReceiveMessage", Duration::from_secs(5)).await;
        assert!(got.is_some(), "run {run} of the README's POST reached no client (202: {answer})");
    }
}

#[tokio::test]
async fn the_redis_example_and_then_the_same_post_both_deliver() {
    let redis = Redis::start().await;
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url())]).await;
    let mut d = joined_client(&s).await;
    let port = redis.url().rsplit(':').next().expect("a port").trim_matches('/').to_string();
    let xadd = command(&readme_block("### Point it at Redis"), "redis-cli ").replacen(
        "redis-cli ",
        &format!("redis-cli -p {port} "),
        1,
    );
    let post = command(&readme_block("### Try it without Redis"), "curl ")
        .replace("localhost:9090", &format!("127.0.0.1:{}", s.admin_port));
    // "The same POST to /internal/events then appends to the event's stream
    // (XADD) so that every instance delivers it."
    for (what, script) in [("XADD", &xadd), ("XADD again", &xadd), ("POST", &post)] {
        let answer = bash(script);
        let got = d.message("c", "ReceiveMessage", Duration::from_secs(5)).await;
        assert!(got.is_some(), "the README's {what} reached no client (answer: {answer})");
    }
}
