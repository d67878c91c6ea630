//! The continuity scenario kit (CONTRACT section 14): Redis, three sidecar
//! instances behind an ingress with session affinity ([`Affinity`]), 30
//! official clients in 10 rooms (half with automatic reconnect only, half
//! with stateful reconnect as well), a steady publisher, and a record of
//! what every client received and when it was Connected, for
//! [`super::continuity_check`] to judge after a fault.
//!
//! Clocks: the publisher stamps each XADD and the Node driver stamps each
//! event with wall-clock milliseconds of this machine, so the two can be
//! compared (within the checker's tolerance).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

use super::affinity::Affinity;
use super::continuity_check::{check, ClientSpec, Published, Report};
use super::{Redis, Sidecar};

/// Instances behind the proxy.
pub const INSTANCES: usize = 3;
/// Official clients, in one Node process.
pub const CLIENTS: usize = 30;
/// Rooms; client `i` is in room `i / 3`, so each room has both kinds.
pub const ROOMS: usize = 10;
/// Published chat_message events per second, spread over the rooms in turn.
pub const RATE: u64 = 50;
/// The drain window given to every instance (SIDECAR_DRAIN_WINDOW_SECONDS).
pub const DRAIN_WINDOW_SECONDS: u64 = 2;

/// The stream the publisher writes.
pub const STREAM: &str = "events:chat";

/// A room's name.
pub fn room(r: usize) -> String {
    format!("room-{r}")
}

/// The consumer group an instance reads through (CONTRACT section 5).
pub fn group_of(instance_id: &str) -> String {
    format!("signalr-sidecar:{instance_id}")
}

/// Where to write instance logs and the driver's stderr, when asked
/// (`CONTINUITY_LOG_DIR=/tmp/x cargo test --test continuity`).
fn log_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("CONTINUITY_LOG_DIR")?);
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// Redis, the instances, the proxy, the clients and the publisher of one
/// scenario. Everything stops on drop.
pub struct Scenario {
    pub redis: Redis,
    /// The instance in each proxy slot (None while killed).
    pub instances: Vec<Option<Sidecar>>,
    /// The SIDECAR_INSTANCE_ID of each slot's current instance.
    pub ids: Vec<String>,
    pub proxy: Affinity,
    fleet: Fleet,
    specs: Vec<ClientSpec>,
    publisher: Option<Publisher>,
    extra_env: Vec<(String, String)>,
    generation: usize,
    /// Wall-clock ms at the start, so reports show times from it.
    pub t0: f64,
    /// What happened, for the report.
    pub notes: Vec<String>,
}

impl Scenario {
    /// Starts everything and connects every client (each joined to its
    /// room), with `extra_env` given to every instance. Panics if a client
    /// cannot connect: no fault has happened yet.
    pub async fn start(extra_env: &[(&str, &str)]) -> Scenario {
        Scenario::start_on(extra_env, &["WebSockets"]).await
    }

    /// As [`Scenario::start`], client `i` on `transports[i % len]` (the TS
    /// client resumes stateful sessions on WebSockets only: elsewhere a
    /// stateful client behaves as a plain one); `LongPolling/msgpack` names
    /// the hub protocol too (JSON when none is named).
    pub async fn start_on(extra_env: &[(&str, &str)], transports: &[&str]) -> Scenario {
        let t0 = super::now_ms();
        let redis = Redis::start().await;
        let extra_env: Vec<(String, String)> = extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let ids: Vec<String> = (0..INSTANCES).map(|i| format!("ct{i}")).collect();
        let url = redis.url();
        let started = futures_util::future::join_all(ids.iter().map(|id| spawn_instance(&url, id, &extra_env))).await;
        let ports: Vec<u16> = started.iter().map(|s| s.port).collect();
        let proxy = Affinity::start(&ports).await;
        let mut fleet = Fleet::start().await;
        let specs: Vec<ClientSpec> = (0..CLIENTS)
            .map(|i| ClientSpec { name: format!("c{i:02}"), room: room(i / 3), stateful: i % 2 == 1 })
            .collect();
        let url = format!("{}/hubs/chat", proxy.url());
        let commands = specs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let given = transports[i % transports.len()];
                let (transport, protocol) = given.split_once('/').unwrap_or((given, "json"));
                json!({"cmd": "connect", "name": c.name, "url": url, "methods": ["ReceiveMessage"],
                       "transport": transport, "protocol": protocol,
                       "reconnect": true, "statefulReconnect": c.stateful, "rooms": [c.room]})
            })
            .collect();
        for (c, r) in specs.iter().zip(fleet.call_all(commands).await) {
            if let Err(e) = r {
                panic!("client {} did not connect before any fault: {e}", c.name);
            }
        }
        Scenario {
            redis,
            instances: started.into_iter().map(Some).collect(),
            ids,
            proxy,
            fleet,
            specs,
            publisher: None,
            extra_env,
            generation: 0,
            t0,
            notes: Vec::new(),
        }
    }

    /// Starts publishing [`RATE`] events per second.
    pub fn start_load(&mut self) {
        self.publisher = Some(Publisher::start(self.redis.url(), RATE));
    }

    /// Lets the load run.
    pub async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    fn note(&mut self, what: String) {
        let t = (super::now_ms() - self.t0) / 1000.0;
        self.notes.push(format!("t={t:.2}s {what}"));
    }

    /// Replaces the instance of `slot` as a rollout does: out of the
    /// proxy, SIGTERM; a replacement with a new instance id starts at the
    /// same time (a Deployment), or with the same id once the old one has
    /// exited (a StatefulSet); into the proxy when ready.
    pub async fn replace(&mut self, slot: usize, same_id: bool) {
        self.generation += 1;
        let id = if same_id { self.ids[slot].clone() } else { format!("ct{slot}-g{}", self.generation) };
        self.proxy.set_alive(slot, false);
        let mut old = self.instances[slot].take().expect("the slot's instance runs");
        let begun = Instant::now();
        let url = self.redis.url();
        let (code, new) = if same_id {
            let code = old.stop().await;
            (code, spawn_instance(&url, &id, &self.extra_env).await)
        } else {
            tokio::join!(old.stop(), spawn_instance(&url, &id, &self.extra_env))
        };
        let old_id = std::mem::replace(&mut self.ids[slot], id.clone());
        self.proxy.set_port(slot, new.port);
        self.proxy.set_alive(slot, true);
        self.instances[slot] = Some(new);
        self.note(format!(
            "slot {slot}: {old_id} stopped (exit {code:?}), {id} ready, after {:.1}s",
            begun.elapsed().as_secs_f64()
        ));
    }

    /// A rolling restart of every instance, one after the other, with a
    /// second between them.
    pub async fn rolling_restart(&mut self, same_ids: bool) {
        for slot in 0..INSTANCES {
            self.replace(slot, same_ids).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// SIGKILL of the instance of `slot`; the proxy finds out by failing
    /// to connect, as an ingress does.
    pub async fn kill(&mut self, slot: usize) {
        if let Some(mut s) = self.instances[slot].take() {
            s.kill().await;
        }
        let id = self.ids[slot].clone();
        self.note(format!("slot {slot}: {id} killed (SIGKILL)"));
    }

    /// `XGROUP DESTROY` of the group of `slot`'s instance, the stream kept,
    /// and in the same MULTI one event per room: they exist before the
    /// instance can notice, so a group recreated at `$` skips them.
    pub async fn destroy_group(&mut self, slot: usize) {
        let group = group_of(&self.ids[slot]);
        let (done, result) = oneshot::channel();
        let publisher = self.publisher.as_ref().expect("destroy_group needs the load running");
        publisher
            .inject
            .send(Inject::DestroyGroupThenPublish { group: group.clone(), events: ROOMS, done })
            .expect("publisher");
        match result.await.expect("publisher answers") {
            Ok(()) => self.note(format!("group {group} destroyed, then {ROOMS} events published in the same MULTI")),
            Err(e) => panic!("XGROUP DESTROY {group}: {e}"),
        }
    }

    /// redis-server killed and, `down` later, started empty on its port.
    pub async fn restart_redis_empty(&mut self, down: Duration) {
        self.note("redis-server killed".into());
        self.redis.restart_empty(down).await;
        self.note("redis-server started empty".into());
    }

    /// Every metric sample line, of every running instance, whose name
    /// contains all of `words` (a loose look: names are the lead's to pick).
    pub async fn metric_lines(&self, words: &[&str]) -> Vec<String> {
        let mut lines = Vec::new();
        for (slot, s) in self.instances.iter().enumerate() {
            let Some(s) = s else { continue };
            let Ok((200, body)) = super::http::request(s.admin_port, "GET", "/metrics", &[], b"").await else {
                continue;
            };
            for line in body.lines().filter(|l| !l.starts_with('#')) {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                if words.iter().all(|w| name.contains(w)) {
                    lines.push(format!("{} {line}", self.ids[slot]));
                }
            }
        }
        lines
    }

    /// Stops the publisher, waits `tail` for deliveries in flight, and
    /// judges what every client received.
    pub async fn finish(mut self, tail: Duration) -> Report {
        let published = self.publisher.take().map(Publisher::finish).unwrap_or_default();
        self.note(format!("publisher stopped after {} events", published.len()));
        tokio::time::sleep(tail).await;
        let events = self.fleet.events();
        check(&self.specs, &published, &events, self.t0, self.proxy.stats(), std::mem::take(&mut self.notes))
    }
}

/// An instance with the scenario's settings, its log in the log
/// directory when one is set.
async fn spawn_instance(redis_url: &str, id: &str, extra: &[(String, String)]) -> Sidecar {
    let mut env: Vec<(&str, String)> = vec![
        ("SIDECAR_REDIS_URL", redis_url.to_string()),
        ("SIDECAR_INSTANCE_ID", id.to_string()),
        ("SIDECAR_DRAIN_WINDOW_SECONDS", DRAIN_WINDOW_SECONDS.to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.clone())));
    match log_dir() {
        Some(dir) => {
            let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
            Sidecar::start_logged(&env, &dir.join(format!("{n:03}-{id}.log"))).await
        }
        None => Sidecar::start(&env).await,
    }
}

/// The Node driver with every client, read continuously: a driver whose
/// stdout is not read blocks, and its clients with it.
struct Fleet {
    _child: Child,
    stdin: ChildStdin,
    next_id: u64,
    events: Arc<Mutex<Vec<Value>>>,
    replies: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
}

impl Fleet {
    async fn start() -> Fleet {
        let stderr = match log_dir() {
            Some(dir) => Stdio::from(std::fs::File::create(dir.join("driver.stderr")).expect("log file")),
            None => Stdio::null(),
        };
        let mut child = Command::new("node")
            .arg(super::procs::root().join("tests/client/driver.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed, with tests/client installed by npm ci");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let events = Arc::new(Mutex::new(Vec::new()));
        let replies: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::new(Mutex::new(HashMap::new()));
        let (ev, rp) = (events.clone(), replies.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|_| panic!("driver printed non-JSON: {line}"));
                if v.get("event").is_some() {
                    ev.lock().expect("events").push(v);
                } else if let Some(tx) = v["id"].as_u64().and_then(|id| rp.lock().expect("replies").remove(&id)) {
                    let _ = tx.send(v);
                }
            }
        });
        Fleet { _child: child, stdin, next_id: 1, events, replies }
    }

    /// Sends every command at once and waits for every reply.
    async fn call_all(&mut self, commands: Vec<Value>) -> Vec<Result<Value, String>> {
        let mut waits = Vec::new();
        for mut cmd in commands {
            let id = self.next_id;
            self.next_id += 1;
            cmd["id"] = json!(id);
            let (tx, rx) = oneshot::channel();
            self.replies.lock().expect("replies").insert(id, tx);
            self.stdin.write_all(format!("{cmd}\n").as_bytes()).await.expect("driver stdin");
            waits.push(rx);
        }
        let mut out = Vec::new();
        for rx in waits {
            out.push(match tokio::time::timeout(Duration::from_secs(30), rx).await {
                Ok(Ok(v)) if v["ok"] == true => Ok(v["result"].clone()),
                Ok(Ok(v)) => Err(v["error"].as_str().unwrap_or("").to_string()),
                Ok(Err(_)) => Err("the driver exited".into()),
                Err(_) => Err("no reply within 30 s".into()),
            });
        }
        out
    }

    /// Every event printed so far, in arrival order.
    fn events(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }
}

/// Something the test asks the publisher to do between two ticks, with
/// the room numbering only the publisher knows.
enum Inject {
    DestroyGroupThenPublish { group: String, events: usize, done: oneshot::Sender<Result<(), String>> },
}

/// XADDs chat_message events at a steady rate from a thread of its own (so
/// the test's runtime cannot delay it), each room's numbered from 0.
struct Publisher {
    stop: Arc<AtomicBool>,
    inject: std::sync::mpsc::Sender<Inject>,
    thread: std::thread::JoinHandle<Vec<Published>>,
}

/// The publisher thread's state.
struct Feed {
    client: redis::Client,
    conn: Option<redis::Connection>,
    seqs: [u64; ROOMS],
    k: usize,
    published: Vec<Published>,
}

impl Feed {
    fn connection(&mut self) -> Option<&mut redis::Connection> {
        if self.conn.is_none() {
            let c = self.client.get_connection_with_timeout(Duration::from_millis(200)).ok();
            self.conn = c.filter(|c| c.set_read_timeout(Some(Duration::from_secs(1))).is_ok());
        }
        self.conn.as_mut()
    }

    /// The next event: its room, number and XADD.
    fn next(&mut self) -> (String, u64, redis::Cmd) {
        let r = self.k % ROOMS;
        self.k += 1;
        let (name, seq) = (room(r), self.seqs[r]);
        self.seqs[r] += 1;
        let env = super::envelope("chat_message", &name, super::chat_payload(&name, seq));
        let mut cmd = redis::cmd("XADD");
        cmd.arg(STREAM).arg("*").arg("data").arg(env.to_string());
        (name, seq, cmd)
    }

    fn publish_one(&mut self) {
        let (room, seq, cmd) = self.next();
        let at = super::now_ms();
        let sure = match self.connection() {
            Some(c) => cmd.query::<String>(c).is_ok(),
            None => false,
        };
        if !sure {
            self.conn = None;
        }
        self.published.push(Published { room, seq, at, sure });
    }

    fn destroy_then_publish(&mut self, group: &str, events: usize) -> Result<(), String> {
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("XGROUP").arg("DESTROY").arg(STREAM).arg(group);
        let mut burst = Vec::new();
        for _ in 0..events {
            let (room, seq, cmd) = self.next();
            pipe.add_command(cmd);
            burst.push((room, seq));
        }
        let at = super::now_ms();
        let conn = self.connection().ok_or("Redis unreachable")?;
        let result = pipe.query::<Vec<redis::Value>>(conn);
        let sure = result.is_ok();
        self.published.extend(burst.into_iter().map(|(room, seq)| Published { room, seq, at, sure }));
        match result.map_err(|e| e.to_string())?.first() {
            Some(redis::Value::Int(1)) => Ok(()),
            other => Err(format!("XGROUP DESTROY answered {other:?}: no such group")),
        }
    }
}

impl Publisher {
    fn start(url: String, rate: u64) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let (inject, injected) = std::sync::mpsc::channel::<Inject>();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let client = redis::Client::open(url).expect("redis url");
            let mut feed = Feed { client, conn: None, seqs: [0; ROOMS], k: 0, published: Vec::new() };
            let period = Duration::from_micros(1_000_000 / rate);
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                while let Ok(Inject::DestroyGroupThenPublish { group, events, done }) = injected.try_recv() {
                    let _ = done.send(feed.destroy_then_publish(&group, events));
                }
                feed.publish_one();
                next += period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else if now - next > Duration::from_secs(1) {
                    next = now;
                }
            }
            feed.published
        });
        Publisher { stop, inject, thread }
    }

    fn finish(self) -> Vec<Published> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("publisher thread")
    }
}
