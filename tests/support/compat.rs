//! The client compatibility matrix: `tests/client/compat.mjs` once per
//! official client version, all at once, each combination publishing its
//! event as soon as it has joined its room.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::{chat_payload, envelope, Sidecar};

/// The client majors `compat.mjs` knows (its `CLIENTS`), oldest first.
pub const CLIENTS: [&str; 8] = ["1", "3", "5", "6", "7", "8", "9", "10"];
/// Every transport, in the order of the table.
pub const TRANSPORTS: [&str; 3] = ["WebSockets", "ServerSentEvents", "LongPolling"];
/// Every hub protocol, in the order of the table.
pub const PROTOCOLS: [&str; 2] = ["json", "msgpack"];

/// Whether a client can run `protocol` over `transport` at all: Server-Sent
/// Events carry text only, so no client sends MessagePack over them.
pub fn supported(transport: &str, protocol: &str) -> bool {
    !(transport == "ServerSentEvents" && protocol == "msgpack")
}

/// One row of the matrix.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The client major (a key of `CLIENTS`).
    pub client: String,
    /// The hub client package ("" when the client never reported).
    pub package: String,
    /// Its installed version ("" when the client never reported).
    pub version: String,
    /// The MessagePack package and version, for MessagePack rows.
    pub msgpack: Option<(String, String)>,
    /// The transport asked for (a key of the client's `HttpTransportType`).
    pub transport: String,
    /// "json" or "msgpack".
    pub protocol: String,
    /// None when the client connected, joined and received the event
    /// published into its room; otherwise what went wrong.
    pub error: Option<String>,
}

/// Everything the run needs to know about one combination.
struct Pending {
    payload: Option<Value>,
    outcome: Option<Outcome>,
}

fn key(client: &str, transport: &str, protocol: &str) -> String {
    format!("{client}/{transport}/{protocol}")
}

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or("").to_string()
}

/// Runs every client of `CLIENTS` against `/hubs/chat` of `sidecar`,
/// publishing through its admin port; returns one outcome per supported
/// combination, in table order. Never panics on a client's failure: that
/// is a row with an error.
pub async fn run_matrix(sidecar: &Sidecar, limit: Duration) -> Vec<Outcome> {
    let prefix = format!("compat-{}", &super::uuid()[..8]);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Value)>();
    let mut stderrs = Vec::new();
    let mut children = Vec::new();
    for client in CLIENTS {
        let mut child = Command::new("node")
            .arg(super::procs::root().join("tests/client/compat.mjs"))
            .args([client, &sidecar.hub("/hubs/chat"), &prefix])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed, with tests/client installed by npm ci");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                let _ = tx.send((client.to_string(), v));
            }
        });
        let mut stderr = child.stderr.take().expect("stderr");
        stderrs.push((
            client,
            tokio::spawn(async move {
                let mut s = String::new();
                let _ = stderr.read_to_string(&mut s).await;
                s
            }),
        ));
        children.push(child);
    }
    drop(tx);

    let mut rows: HashMap<String, Pending> = HashMap::new();
    let mut stray = Vec::new();
    let collect = async {
        while let Some((client, v)) = rx.recv().await {
            let (transport, protocol) = (text(&v, "transport"), text(&v, "protocol"));
            let kind = v["kind"].as_str().unwrap_or("");
            if kind != "joined" && kind != "result" {
                stray.push(format!("client {client}: {v}"));
                continue;
            }
            let row =
                rows.entry(key(&client, &transport, &protocol)).or_insert(Pending { payload: None, outcome: None });
            if kind == "joined" {
                let room = text(&v, "room");
                let payload = chat_payload(&room, 1);
                let (status, body) =
                    sidecar.post_event(envelope("chat_message", &room, payload.clone()).to_string().as_bytes()).await;
                assert_eq!(status, 202, "the admin port takes the event for {room}: {body}");
                row.payload = Some(payload);
            } else {
                let mut error = v["error"].as_str().map(str::to_string);
                if v["ok"] == true && v["received"] != Value::Array(vec![row.payload.clone().unwrap_or_default()]) {
                    error = Some(format!("ReceiveMessage carried {} instead of the event published", v["received"]));
                }
                let msgpack = v["msgpackPackage"]
                    .as_str()
                    .map(|p| (p.to_string(), v["msgpackVersion"].as_str().unwrap_or("").to_string()));
                row.outcome = Some(Outcome {
                    client: client.clone(),
                    package: text(&v, "package"),
                    version: text(&v, "version"),
                    msgpack,
                    transport,
                    protocol,
                    error,
                });
            }
        }
    };
    let finished = tokio::time::timeout(limit, collect).await.is_ok();
    for child in &mut children {
        let _ = child.start_kill();
    }
    let mut stderr_of = HashMap::new();
    for (client, task) in stderrs {
        stderr_of.insert(client, task.await.unwrap_or_default());
    }

    let mut out = Vec::new();
    for client in CLIENTS {
        for transport in TRANSPORTS {
            for protocol in PROTOCOLS.into_iter().filter(|p| supported(transport, p)) {
                let outcome = rows.remove(&key(client, transport, protocol)).and_then(|p| p.outcome);
                out.push(outcome.unwrap_or_else(|| Outcome {
                    client: client.to_string(),
                    package: String::new(),
                    version: String::new(),
                    msgpack: None,
                    transport: transport.to_string(),
                    protocol: protocol.to_string(),
                    error: Some(format!(
                        "no result{}; compat.mjs printed {:?} and on stderr: {}",
                        if finished { "" } else { " within the time limit" },
                        stray,
                        stderr_of.get(client).map(String::as_str).unwrap_or("").trim()
                    )),
                }));
            }
        }
    }
    out
}
