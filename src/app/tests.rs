//! `app::run` in process: the in-process bus, both listeners on port 0,
//! the shutdown a oneshot. HTTP through hyper's client, no binary, no Node.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::config::RawSettings;

const WAIT: Duration = Duration::from_secs(10);

fn config(extra: &[(&str, &str)]) -> Config {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut env: Vec<(String, String)> = [
        ("SIDECAR_INSTANCE_ID", "app-test".to_string()),
        ("SIDECAR_LISTEN", "127.0.0.1:0".to_string()),
        // Port 0 twice is refused as the same address, so another loopback address.
        ("SIDECAR_ADMIN_LISTEN", "127.0.0.2:0".to_string()),
        ("SIDECAR_ROUTES", format!("{root}/protocol/routes.toml")),
        ("SIDECAR_SCHEMAS_DIR", format!("{root}/protocol/schemas")),
        ("SIDECAR_DRAIN_WINDOW_SECONDS", "0".to_string()),
        ("SIDECAR_SHUTDOWN_TIMEOUT_SECONDS", "3".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut raw = RawSettings::default();
    raw.overlay_env(env);
    Config::from_raw(&raw).expect("valid test settings")
}

struct Running {
    at: Listening,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start(config: Config) -> Running {
    let routes = RouteTable::load(&config.routes_path).expect("routes");
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready, at) = oneshot::channel();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(run_with(config, routes, shutdown, move |at| {
        let _ = ready.send(at);
    }));
    let at = tokio::time::timeout(WAIT, at).await.expect("ready in time").expect("ready before any error");
    Running { at, stop, task }
}

impl Running {
    async fn shut_down(self) {
        self.stop.send(()).expect("still running");
        let result = tokio::time::timeout(WAIT, self.task).await.expect("run returns after the shutdown");
        result.expect("no panic").expect("a clean stop");
    }
}

/// One HTTP/1.1 request on a new connection: status and body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Result<(u16, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, body) = http(addr, "GET", path, b"").await.expect("answered");
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    let (status, body) = http(addr, "POST", path, body).await.expect("answered");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A Long Polling connection of the chat hub, handshake done.
async fn long_polling(client: SocketAddr) -> String {
    let (status, body) = post(client, "/hubs/chat/negotiate?negotiateVersion=1", b"").await;
    assert_eq!(status, 200, "{body}");
    let negotiated: Value = serde_json::from_str(&body).expect("json");
    let token = negotiated["connectionToken"].as_str().expect("a token").to_string();
    let path = format!("/hubs/chat?id={token}");
    assert_eq!(get(client, &path).await, (200, String::new()), "the first poll starts the connection");
    assert_eq!(post(client, &path, b"{\"protocol\":\"json\",\"version\":1}\x1e").await.0, 200);
    assert_eq!(get(client, &path).await, (200, "{}\u{1e}".to_string()));
    path
}

fn records(body: &str) -> Vec<Value> {
    body.split('\u{1e}').filter(|r| !r.is_empty()).map(|r| serde_json::from_str(r).expect("json")).collect()
}

#[tokio::test]
async fn the_sidecar_is_ready_until_its_shutdown_fires_and_then_returns() {
    let sidecar = start(config(&[])).await;
    let admin = sidecar.at.admin;
    assert_ne!(admin.port(), 0);
    assert_eq!(get(admin, "/readyz").await, (200, "ready\n".to_string()));
    assert_eq!(get(admin, "/healthz").await, (200, "ok\n".to_string()));
    let (status, metrics) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("sidecar_events_delivered"), "{metrics}");
    assert_eq!(get(sidecar.at.client, "/nowhere").await.0, 404);
    sidecar.shut_down().await;
    assert!(http(admin, "GET", "/readyz", b"").await.is_err(), "the admin port is closed after the stop");
}

#[tokio::test]
async fn an_event_posted_to_the_admin_port_reaches_a_long_polling_client() {
    let sidecar = start(config(&[])).await;
    let (client, admin) = (sidecar.at.client, sidecar.at.admin);
    let path = long_polling(client).await;
    let call = b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinRoom\",\"arguments\":[\"r1\"]}\x1e";
    assert_eq!(post(client, &path, call).await.0, 200);
    assert_eq!(records(&get(client, &path).await.1), [json!({"type": 3, "invocationId": "1", "result": null})]);

    let payload = json!({
        "id": uuid::Uuid::new_v4().to_string(), "request_id": "r1", "sender_id": "agent-1", "content": "hello",
        "sequence_number": 1, "is_screenshot": false, "created_at": chrono::Utc::now().to_rfc3339()
    });
    let envelope = json!({
        "event_id": uuid::Uuid::new_v4().to_string(), "event_type": "chat_message",
        "timestamp": chrono::Utc::now().to_rfc3339(), "room_id": "r1", "payload": payload
    });
    let (status, answer) = post(admin, "/internal/events", envelope.to_string().as_bytes()).await;
    assert_eq!((status, answer.as_str()), (202, "{\"status\":\"accepted\"}"));
    let delivered = records(&get(client, &path).await.1);
    assert_eq!(delivered, [json!({"type": 1, "target": "ReceiveMessage", "arguments": [payload]})]);

    let (status, _) = post(admin, "/internal/events", b"{\"event_type\":\"chat_message\"}").await;
    assert_eq!(status, 400, "a body that breaks the schema");
    sidecar.shut_down().await;
}

#[tokio::test]
async fn a_waiting_poll_is_told_to_reconnect_when_the_sidecar_stops() {
    let sidecar = start(config(&[])).await;
    let client = sidecar.at.client;
    let path = long_polling(client).await;
    let waiting = tokio::spawn(async move { get(client, &path).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "nothing to send yet");
    sidecar.shut_down().await;
    let (status, body) = tokio::time::timeout(WAIT, waiting).await.expect("answered").expect("no panic");
    assert_eq!((status, records(&body)), (200, vec![json!({"type": 7, "allowReconnect": true})]));
}

#[tokio::test]
async fn a_start_that_fails_names_the_setting() {
    let routes = || RouteTable::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/protocol/routes.toml")));
    let c = config(&[("SIDECAR_SCHEMAS_DIR", "/nonexistent/schemas")]);
    let e = run(c, routes().expect("routes"), std::future::pending()).await.expect_err("no schemas");
    assert!(format!("{e:#}").starts_with("SIDECAR_SCHEMAS_DIR"), "{e:#}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("bound").to_string();
    let c = config(&[("SIDECAR_LISTEN", addr.as_str())]);
    let e = run(c, routes().expect("routes"), std::future::pending()).await.expect_err("port in use");
    assert!(format!("{e:#}").starts_with("SIDECAR_LISTEN: cannot bind"), "{e:#}");
}
