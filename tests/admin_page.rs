//! The admin page (issue 20) in headless Chromium: two instances with the
//! admin token set, official clients of two users in two rooms. The page
//! is opened as an operator opens it (the token form, then the page), its
//! DOM read and compared with the API's answers, screenshots taken and read
//! back (under target/admin-page/); then a client joins and the page shows
//! it without a reload.

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;

use serde_json::{json, Value};
use support::admin::{self, api, instance_id, ADMIN_TOKEN};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// `tests/client/admin_page.mjs`, one JSON command per line.
struct Page {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Page {
    async fn open(admin_url: &str, fragment: &str) -> (Page, Value) {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("node")
            .arg(root.join("tests/client/admin_page.mjs"))
            .args([admin_url, ADMIN_TOKEN, fragment])
            .arg(root.join("target/admin-page"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Not killed on drop: killed, node leaves its chromium running.
            // Dropping the page closes the script's stdin, and the script
            // then closes the browser and exits, after a failed test too.
            .spawn()
            .expect("node runs, with tests/client installed by npm ci");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut page = Page { _child: child, stdin, lines };
        let opened = page.read().await;
        (page, opened)
    }

    async fn read(&mut self) -> Value {
        let line = tokio::time::timeout(std::time::Duration::from_secs(40), self.lines.next_line())
            .await
            .expect("the page script answers within 40 s")
            .expect("stdout")
            .expect("the page script printed a line");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert_eq!(v["ok"], true, "{v}");
        v
    }

    async fn call(&mut self, cmd: Value) -> Value {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await.expect("stdin");
        self.read().await
    }
}

/// What the page shows must be what the API answers.
async fn assert_page_matches_api(s: &Sidecar, dom: &Value) {
    let instances = api(s, "/admin/api/instances").await;
    assert_eq!(dom["asked"], instances["cluster"]["asked"]);
    assert_eq!(dom["answered"], instances["cluster"]["answered"].as_array().map(Vec::len).unwrap_or(0));
    let api_instances: Vec<Value> = instances["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            let streams: BTreeMap<String, Value> = i["streams"]
                .as_array()
                .expect("streams")
                .iter()
                .map(|x| {
                    (
                        x["stream"].as_str().expect("stream").to_string(),
                        json!({"lag": x["lag"], "pending": x["pending"]}),
                    )
                })
                .collect();
            json!({"instance": i["instance"], "state": i["state"], "connections": i["connections"], "streams": streams})
        })
        .collect();
    assert_eq!(dom["instances"], json!(api_instances), "instances on the page");

    let hubs = api(s, "/admin/api/hubs").await;
    let api_hubs: Vec<Value> = hubs["hubs"]
        .as_array()
        .expect("hubs")
        .iter()
        .map(|h| json!({"name": h["name"], "connections": h["connections"]}))
        .collect();
    assert_eq!(dom["hubs"], json!(api_hubs), "hubs on the page");

    let rooms = api(s, "/admin/api/hubs/chat/rooms?limit=50").await;
    assert_eq!(dom["rooms"], rooms["rooms"], "rooms on the page");

    let room = api(s, "/admin/api/hubs/chat/rooms/room-a?limit=200").await;
    assert_eq!(dom["room"], "chat / room-a");
    assert_eq!(dom["roomConnections"], room["connections"]);
    let members: Vec<Value> = room["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| json!({"connection_id": m["connection_id"], "user": m["user"], "instance": m["instance"], "transport": m["transport"]}))
        .collect();
    assert_eq!(dom["members"], json!(members), "members on the page");

    let user = api(s, "/admin/api/users/alice").await;
    let conns: Vec<Value> = user["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| json!({"connection_id": c["connection_id"], "instance": c["instance"], "hub": c["hub"], "rooms": c["rooms"]}))
        .collect();
    assert_eq!(dom["userConnections"], json!(conns), "the user's connections on the page");
    let holders: Vec<Value> =
        user["instances"].as_array().expect("instances").iter().map(|i| i["instance"].clone()).collect();
    let shown: Vec<Value> =
        dom["userInstances"].as_array().expect("shown").iter().map(|i| i["instance"].clone()).collect();
    assert_eq!(shown, holders);
}

fn assert_png_is_a_page(png: &Value) {
    assert_eq!(png["width"], 1400, "{png}");
    assert!(png["height"].as_f64().unwrap_or(0.0) >= 600.0, "{png}");
    assert!(png["colours"].as_f64().unwrap_or(0.0) >= 8.0, "more than a blank or one-colour image: {png}");
    assert!(png["darkShare"].as_f64().unwrap_or(0.0) > 0.01, "text and the header are dark: {png}");
    assert!(png["colouredShare"].as_f64().unwrap_or(0.0) > 0.0, "the states are coloured: {png}");
}

#[tokio::test]
async fn the_admin_page_shows_what_the_api_answers_and_follows_it_live() {
    let redis = Redis::start().await;
    let s = admin::deployment(&redis, 2, &[]).await;
    let mut d = Driver::start().await;
    let tok = |u: &str| json!({"accessToken": token(u, u)});
    d.connect("a1", &s[0].hub("/hubs/chat"), &[], tok("alice")).await.expect("a1");
    d.connect("a2", &s[1].hub("/hubs/chat"), &[], tok("alice")).await.expect("a2");
    let mut lp = tok("bob");
    lp["transport"] = json!("LongPolling");
    d.connect("b1", &s[1].hub("/hubs/chat"), &[], lp).await.expect("b1");
    for (name, room) in [("a1", "room-a"), ("a1", "room-b"), ("a2", "room-a"), ("b1", "room-a")] {
        d.invoke(name, "JoinRoom", json!([room])).await.expect("JoinRoom");
    }

    let admin_url = format!("http://127.0.0.1:{}", s[0].admin_port);
    let (mut page, opened) = Page::open(&admin_url, "hub=chat&room=room-a&user=alice").await;
    assert_eq!(opened["loginStatus"], 401, "without the header /admin/ is the token form: {opened}");
    assert_eq!(opened["hasForm"], true);

    let first = page.call(json!({"cmd": "snapshot", "name": "first", "after": 1})).await;
    let dom = &first["dom"];
    assert_eq!(dom["status"], "", "no error shown: {dom}");
    assert_eq!(dom["answered"], 2, "{dom}");
    assert_eq!(dom["roomConnections"], 3);
    assert_eq!(dom["userConnections"].as_array().map(Vec::len), Some(2));
    assert_page_matches_api(&s[0], dom).await;
    assert_png_is_a_page(&first["png"]);

    // Live: carol joins on the other instance; the page follows, no reload.
    d.connect("c1", &s[1].hub("/hubs/chat"), &[], tok("carol")).await.expect("c1");
    d.invoke("c1", "JoinRoom", json!(["room-a"])).await.expect("JoinRoom");
    page.call(json!({"cmd": "wait", "selector": "#members-count", "text": "4"})).await;
    let polls = first["dom"]["polls"].as_u64().unwrap_or(0);
    let second = page.call(json!({"cmd": "snapshot", "name": "live", "after": polls + 1})).await;
    let dom = &second["dom"];
    assert_eq!(dom["loadedAt"], first["dom"]["loadedAt"], "the same page, not a reload");
    assert!(dom["members"]
        .as_array()
        .expect("members")
        .iter()
        .any(|m| m["user"] == "carol" && m["instance"] == instance_id(&s[1]).as_str()));
    assert_page_matches_api(&s[0], dom).await;
    assert_png_is_a_page(&second["png"]);
    page.stdin.write_all(b"{\"cmd\":\"quit\"}\n").await.expect("stdin");
}
