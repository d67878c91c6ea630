//! A real Redis Cluster (3 masters, 3 replicas) on loopback: every stream is
//! read and delivered, and a master failover while events flow loses nothing,
//! graceful (`CLUSTER FAILOVER`) or after the master was SIGKILLed.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use tokio::process::{Child, Command};

struct Cluster {
    ports: Vec<u16>,
    _nodes: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port whose cluster bus port (+10000) is free too, and below the
/// ephemeral range like the port itself.
fn cluster_port() -> u16 {
    loop {
        let p = free_port();
        if u32::from(p) + 10000 < 32768 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!("sidecar-cluster-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ports: Vec<u16> = (0..6).map(|_| cluster_port()).collect();
        let mut nodes = Vec::new();
        for p in &ports {
            let node_dir = dir.join(p.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            nodes.push(
                Command::new("redis-server")
                    .args(["--port", &p.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"])
                    .args(["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0", "--dir"])
                    .arg(&node_dir)
                    .stdout(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("redis-server"),
            );
        }
        for p in &ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while redis::Client::open(format!("redis://127.0.0.1:{p}")).and_then(|c| c.get_connection()).is_err() {
                assert!(Instant::now() < deadline, "node {p} did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for p in &ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        let out = create.args(["--cluster-replicas", "1", "--cluster-yes"]).output().await.expect("redis-cli");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let c = Cluster { ports, _nodes: nodes, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.all_ok() {
            assert!(Instant::now() < deadline, "cluster not ok");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        c
    }

    fn node(&self, port: u16) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url").get_connection().expect("connect")
    }

    /// Every node sees a healthy cluster with three replicas attached.
    fn all_ok(&self) -> bool {
        self.ports.iter().all(|p| {
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut self.node(*p)).unwrap_or_default();
            let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut self.node(*p)).unwrap_or_default();
            info.contains("cluster_state:ok") && nodes.lines().filter(|l| l.contains("slave")).count() == 3
        })
    }

    /// Kills the node on `port` (SIGKILL: no goodbye) and waits until the
    /// others have promoted its replica and answer for every slot again.
    async fn kill_and_fail_over(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node of the cluster");
        // A replica takes over only once it has synchronised with its master.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.ports.iter().any(|p| {
            let info: String = redis::cmd("INFO").arg("replication").query(&mut self.node(*p)).unwrap_or_default();
            info.contains(&format!("master_port:{port}\r")) && info.contains("master_link_status:up")
        }) {
            assert!(Instant::now() < deadline, "node {port}'s replica never synchronised");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self._nodes[i].start_kill().expect("kill");
        let _ = self._nodes[i].wait().await;
        let others: Vec<u16> = self.ports.iter().copied().filter(|p| *p != port).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let dead = format!("127.0.0.1:{port}@");
            let ok = others.iter().all(|p| {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut self.node(*p)).unwrap_or_default();
                let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut self.node(*p)).unwrap_or_default();
                let flags = |l: &str| {
                    l.split(' ').nth(2).unwrap_or_default().split(',').map(str::to_string).collect::<Vec<_>>()
                };
                info.contains("cluster_state:ok")
                    && nodes.lines().any(|l| l.contains(&dead) && flags(l).iter().any(|f| f == "fail"))
                    && nodes
                        .lines()
                        .filter(|l| {
                            !l.contains(&dead) && flags(l).iter().any(|f| f == "master") && l.split(' ').count() > 8
                        })
                        .count()
                        == 3
            });
            if ok {
                return;
            }
            if Instant::now() >= deadline {
                let nodes: String =
                    redis::cmd("CLUSTER").arg("NODES").query(&mut self.node(others[0])).unwrap_or_default();
                let info: String =
                    redis::cmd("CLUSTER").arg("INFO").query(&mut self.node(others[0])).unwrap_or_default();
                panic!("no failover after node {port} was killed: {nodes}\n{info}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn urls(&self) -> String {
        self.ports[..3].iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    fn client(&self) -> redis::cluster::ClusterClient {
        redis::cluster::ClusterClient::new(
            self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>(),
        )
        .expect("cluster client")
    }

    /// The replica port of the master serving `key`.
    fn replica_of_master_for(&self, key: &str) -> u16 {
        let mut any = self.node(self.ports[0]);
        let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut any).expect("keyslot");
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut any).expect("nodes");
        let lines: Vec<Vec<&str>> = nodes.lines().map(|l| l.split(' ').collect()).collect();
        let master = lines
            .iter()
            .find(|f| f[2].contains("master") && f[8..].iter().any(|r| covers(r, slot)))
            .expect("a master for the slot");
        let replica = lines.iter().find(|f| f[3] == master[0]).expect("a replica");
        replica[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok()).expect("port")
    }
}

fn covers(range: &str, slot: i64) -> bool {
    match range.split_once('-') {
        Some((a, b)) => a.parse::<i64>().is_ok_and(|a| a <= slot) && b.parse::<i64>().is_ok_and(|b| slot <= b),
        None => range.parse::<i64>() == Ok(slot),
    }
}

/// XADD through the cluster, retrying through a failover as a publisher would.
fn xadd(conn: &mut redis::cluster::ClusterConnection, stream: &str, env: &Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r: redis::RedisResult<String> =
            redis::cmd("XADD").arg(stream).arg("*").arg("data").arg(env.to_string()).query(conn);
        match r {
            Ok(_) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "XADD kept failing: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[tokio::test]
async fn a_redis_cluster_delivers_every_stream_and_survives_a_failover() {
    let cluster = Cluster::start().await;
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", cluster.urls())]).await;
    let mut d = Driver::start().await;
    d.connect("chat", &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({})).await.expect("chat");
    d.invoke("chat", "JoinRoom", json!(["r"])).await.expect("join");
    d.connect("ticket", &s.hub("/hubs/ticket"), &["TicketStatusChanged"], json!({})).await.expect("ticket");
    d.invoke("ticket", "SubscribeTicket", json!(["t"])).await.expect("subscribe");
    d.connect("note", &s.hub("/hubs/notification"), &["ReceiveNotification", "RemoteSessionStarted"], json!({}))
        .await
        .expect("notification");

    let mut conn = cluster.client().get_connection().expect("cluster connection");
    let status =
        json!({"request_id": "t", "old_status": "a", "new_status": "b", "changed_by": "x", "changed_at": now()});
    let note = json!({"id": "n", "user_id": "u", "title": "t", "message": "m", "created_at": now()});
    let remote = json!({"request_id": "t", "session_id": "s"});
    xadd(&mut conn, "events:ticket", &envelope("status_change", "t", status));
    xadd(&mut conn, "events:notification", &envelope("notification", "*", note));
    xadd(&mut conn, "events:remote", &envelope("remote_session_start", "*", remote));
    d.message("ticket", "TicketStatusChanged", WAIT).await.expect("events:ticket delivered");
    d.message("note", "ReceiveNotification", WAIT).await.expect("events:notification delivered");
    d.message("note", "RemoteSessionStarted", WAIT).await.expect("events:remote delivered");

    let replica = cluster.replica_of_master_for("events:chat");
    for n in 0..200u64 {
        if n == 60 {
            let ok: String = redis::cmd("CLUSTER").arg("FAILOVER").query(&mut cluster.node(replica)).expect("failover");
            assert_eq!(ok, "OK");
        }
        xadd(&mut conn, "events:chat", &envelope("chat_message", "r", chat_payload("r", n)));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 200 {
        let m = d
            .message("chat", "ReceiveMessage", Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("only {} of 200 arrived", seen.len()));
        seen.push(m["args"][0]["sequence_number"].as_u64().expect("n"));
    }
    assert_eq!(seen, (0..200).collect::<Vec<_>>(), "none lost, none doubled, in order");
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut cluster.node(replica)).expect("role");
    assert_eq!(role.first(), Some(&redis::Value::BulkString(b"master".to_vec())), "the failover happened");
}

/// The introspection API on a Redis Cluster: the question goes out with
/// PUBLISH through the cluster connection, each instance subscribes on one
/// node (here different ones), and both see the whole deployment.
#[tokio::test]
async fn introspection_answers_for_every_instance_on_a_cluster() {
    let cluster = Cluster::start().await;
    let other_order = cluster.ports[..3].iter().rev().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>();
    let mut env = jwt_env();
    env.push(("SIDECAR_ADMIN_TOKEN", admin::ADMIN_TOKEN.into()));
    let s0 = Sidecar::start(&[env.clone(), vec![("SIDECAR_REDIS_URL", cluster.urls())]].concat()).await;
    let s1 = Sidecar::start(&[env, vec![("SIDECAR_REDIS_URL", other_order.join(","))]].concat()).await;
    admin::wait_for_answers(&s0, 2).await;
    admin::wait_for_answers(&s1, 2).await;
    let mut d = Driver::start().await;
    for (name, s) in [("a0", &s0), ("a1", &s1)] {
        d.connect(name, &s.hub("/hubs/chat"), &[], json!({"accessToken": token("alice", "alice")}))
            .await
            .expect("connects");
        d.invoke(name, "JoinRoom", json!(["shared"])).await.expect("JoinRoom");
    }
    for asked in [&s0, &s1] {
        let user = admin::api(asked, "/admin/api/users/alice").await;
        assert_eq!(user["connections"].as_array().map(Vec::len), Some(2), "{user}");
        assert_eq!(user["cluster"]["missing"], json!([]));
        let rooms = admin::api(asked, "/admin/api/hubs/chat/rooms").await;
        assert_eq!(rooms["rooms"], json!([{"name": "shared", "connections": 2}]));
    }
}

/// `XLEN` of `stream` through the cluster, waiting (up to `within`) for it
/// to reach `n`; then, after a settling pause, still `n`.
async fn stream_holds(cluster: &Cluster, stream: &str, n: usize, within: Duration) {
    let mut conn = cluster.client().get_connection().expect("cluster connection");
    let deadline = Instant::now() + within;
    loop {
        let len: usize = redis::cmd("XLEN").arg(stream).query(&mut conn).expect("XLEN");
        if len == n {
            break;
        }
        assert!(len < n && Instant::now() < deadline, "{stream} holds {len} entries, expected {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Dead letters on a cluster (CONTRACT sections 4 and 11): every instance
/// reads every entry, yet each invalid one is copied once, on a plain
/// stream name and on one with a hash tag (`{tenant}:events`, the way
/// cluster users pin related keys to one slot), whose dead-letter stream
/// and exactly-once marker must share a slot for the script to run.
#[tokio::test]
async fn invalid_entries_are_dead_lettered_once_on_a_cluster_whatever_the_stream_name() {
    let cluster = Cluster::start().await;
    let tagged = "{tenant}:events";
    let env = |id: &str| {
        vec![
            ("SIDECAR_REDIS_URL", cluster.urls()),
            ("SIDECAR_INSTANCE_ID", id.to_string()),
            ("SIDECAR_STREAMS", format!("events:chat,events:ticket,events:notification,events:remote,{tagged}")),
        ]
    };
    let (_a, _b) = (Sidecar::start(&env("dl-a")).await, Sidecar::start(&env("dl-b")).await);
    // Let both beat and elect (a claim tick) before the entries come.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut conn = cluster.client().get_connection().expect("cluster connection");
    let mut bad = envelope("chat_message", "nobody", chat_payload("nobody", 0));
    bad["payload"].as_object_mut().expect("object").remove("content");
    for stream in ["events:chat", tagged] {
        xadd(&mut conn, stream, &bad);
        let _: String = redis::cmd("XADD").arg(stream).arg("*").arg("garbage").arg("x").query(&mut conn).expect("XADD");
    }
    stream_holds(&cluster, "events:chat:dead", 2, WAIT).await;
    stream_holds(&cluster, &format!("{tagged}:dead"), 2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stream_holds(&cluster, "events:chat:dead", 2, Duration::ZERO).await;
    stream_holds(&cluster, &format!("{tagged}:dead"), 2, Duration::ZERO).await;
}

/// `SIDECAR_REDIS_CLUSTER=true` with one seed, and that seed's node dies:
/// its replica takes over, commands follow the cluster's map, and the
/// pub/sub every instance listens on (introspection's questions and
/// answers; resume asks and user activity ride the same kind) must follow
/// too, to a node the cluster names: with a single Redis nothing is left
/// to reach, with a cluster everything else still works.
#[tokio::test]
async fn pub_sub_moves_to_another_node_when_the_only_seed_dies() {
    let mut cluster = Cluster::start().await;
    let seed = cluster.ports[0];
    let mut env = jwt_env();
    env.push(("SIDECAR_ADMIN_TOKEN", admin::ADMIN_TOKEN.into()));
    env.push(("SIDECAR_REDIS_URL", format!("redis://127.0.0.1:{seed}")));
    env.push(("SIDECAR_REDIS_CLUSTER", "true".into()));
    let s0 = Sidecar::start(&env).await;
    let s1 = Sidecar::start(&env).await;
    admin::wait_for_answers(&s0, 2).await;
    cluster.kill_and_fail_over(seed).await;
    admin::wait_for_answers(&s0, 2).await;
    admin::wait_for_answers(&s1, 2).await;
}

/// One event a publisher sent, and what it was answered.
struct Sent {
    seq: u64,
    event_id: String,
    /// `xadd`, `post-a` or `post-b`.
    via: &'static str,
    /// The XADD's entry id or error, or the POST's status and body.
    answer: String,
}

/// XADD through the cluster, retrying on a new connection (the blocking
/// cluster client keeps asking a dead node) until Redis answers: the
/// entry's id, or the last error after 20 s.
fn xadd_through_failover(
    client: &redis::cluster::ClusterClient,
    conn: &mut Option<redis::cluster::ClusterConnection>,
    stream: &str,
    env: &Value,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::from("no connection");
    loop {
        if conn.is_none() {
            *conn = client.get_connection().map_err(|e| last = e.to_string()).ok();
        }
        if let Some(c) = conn.as_mut() {
            let added: redis::RedisResult<String> =
                redis::cmd("XADD").arg(stream).arg("*").arg("data").arg(env.to_string()).query(c);
            match added {
                Ok(id) => return id,
                Err(e) => {
                    last = e.to_string();
                    *conn = None;
                }
            }
        }
        if Instant::now() >= deadline {
            return format!("failed: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The events `stream` holds on the cluster, in stream order, as
/// (event_id, sequence number), in either encoding (the test's XADDs
/// write `data`, the sidecar's own flat fields). An event appended twice
/// (a publisher's retry) is there twice.
fn stream_events(cluster: &Cluster, stream: &str) -> Vec<(String, u64)> {
    let mut conn = cluster.client().get_connection().expect("cluster connection");
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(&mut conn).expect("XRANGE");
    entries
        .into_iter()
        .filter_map(|(_, fields)| {
            let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            let (event_id, payload): (String, Value) = match get("data") {
                Some(data) => {
                    let envelope: Value = serde_json::from_str(data).ok()?;
                    (envelope["event_id"].as_str()?.to_string(), envelope["payload"].clone())
                }
                None => (get("event_id")?.to_string(), serde_json::from_str(get("payload")?).ok()?),
            };
            Some((event_id, payload["sequence_number"].as_u64()?))
        })
        .collect()
}

/// The port of the master serving `key`.
fn master_of(cluster: &Cluster, key: &str) -> u16 {
    let replica = cluster.replica_of_master_for(key);
    let info: String = redis::cmd("INFO").arg("replication").query(&mut cluster.node(replica)).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("master_port:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("the replica's master")
}

/// The master of the stream's slot is SIGKILLed (no goodbye, unlike the
/// `CLUSTER FAILOVER` above) while events flow to clients on two instances,
/// published by XADD and by a POST to each instance, without a pause: its
/// replica is promoted and the publishing goes on. Every client, on every
/// transport, receives every event the stream then holds once, in stream
/// order, or is told (its connection closes: CONTRACT 14). B knows the
/// nodes in another order than A, so their connections find the new master
/// each their own way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_while_events_flow_to_two_instances_loses_no_clients_event() {
    let mut cluster = Cluster::start().await;
    let tag = free_port();
    let log = |id: &str| std::env::temp_dir().join(format!("sidecar-kill-{tag}-{id}.log"));
    let reversed = cluster.ports[..3].iter().rev().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>();
    let start = |id: &str| {
        let urls = if id == "a" { cluster.urls() } else { reversed.join(",") };
        let env = vec![("SIDECAR_REDIS_URL", urls), ("SIDECAR_INSTANCE_ID", format!("kill-{id}"))];
        let log = log(id);
        async move { Sidecar::start_logged(&env, &log).await }
    };
    let (a, b) = (start("a").await, start("b").await);
    let mut d = Driver::start().await;
    let clients = ["a-json", "a-msgpack", "a-sse", "b-json", "b-msgpack", "b-sse", "b-polling"];
    for name in clients {
        let s = if name.starts_with('a') { &a } else { &b };
        let options = match &name[2..] {
            "msgpack" => json!({"protocol": "msgpack"}),
            "sse" => json!({"transport": "ServerSentEvents"}),
            "polling" => json!({"transport": "LongPolling"}),
            _ => json!({}),
        };
        d.connect(name, &s.hub("/hubs/chat"), &["ReceiveMessage"], options).await.expect(name);
        d.invoke(name, "JoinRoom", json!(["r"])).await.expect("JoinRoom");
    }
    // The driver's output is read all along: a client whose lines nobody
    // reads stops reading its socket, and the sidecar drops it as slow.
    let (stop_reading, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = d.wait_for(Duration::from_millis(100), |_| false) => {}
                _ = &mut stopped => return d,
            }
        }
    });

    // Three publishers side by side until a while after the failover.
    let done = tokio_util::sync::CancellationToken::new();
    let next = {
        let seqs = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        move || {
            let seq = seqs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let env = envelope("chat_message", "r", chat_payload("r", seq));
            (seq, env["event_id"].as_str().expect("event_id").to_string(), env)
        }
    };
    let gap = Duration::from_millis(15);
    let xadder = {
        let (client, next, done) = (cluster.client(), next.clone(), done.clone());
        tokio::task::spawn_blocking(move || {
            let (mut conn, mut sent) = (None, Vec::new());
            while !done.is_cancelled() {
                let (seq, event_id, env) = next();
                let answer = xadd_through_failover(&client, &mut conn, "events:chat", &env);
                sent.push(Sent { seq, event_id, via: "xadd", answer });
                std::thread::sleep(gap);
            }
            sent
        })
    };
    let poster = |via: &'static str, port: u16| {
        let (next, done) = (next.clone(), done.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            while !done.is_cancelled() {
                let (seq, event_id, env) = next();
                let headers = [("content-type", "application/json")];
                let r = support::http::request(port, "POST", "/internal/events", &headers, env.to_string().as_bytes())
                    .await;
                sent.push(Sent { seq, event_id, via, answer: format!("{r:?}") });
                tokio::time::sleep(gap).await;
            }
            sent
        })
    };
    let posters = [poster("post-a", a.admin_port), poster("post-b", b.admin_port)];
    // Killed 0.5-2 s into the flow, a different moment each run.
    tokio::time::sleep(Duration::from_millis(500 + u64::from(tag) % 1500)).await;
    cluster.kill_and_fail_over(master_of(&cluster, "events:chat")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    done.cancel();
    let mut sent = xadder.await.expect("XADD publisher");
    for p in posters {
        sent.extend(p.await.expect("POST publisher"));
    }
    sent.sort_by_key(|s| s.seq);

    // What the stream holds once spooled POSTs are in (it stops growing),
    // each event once: the sidecar delivers a retried event once.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut held = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now_held = stream_events(&cluster, "events:chat");
        if now_held.len() == held.len() || Instant::now() >= deadline {
            break;
        }
        held = now_held;
    }
    let mut ids = std::collections::HashSet::new();
    let owed: Vec<u64> = held.iter().filter(|(id, _)| ids.insert(id.clone())).map(|(_, seq)| *seq).collect();

    // Until every client has the last of them, or was told.
    let _ = stop_reading.send(());
    let mut d = reader.await.expect("driver reader");
    let mut got: std::collections::HashMap<&str, Vec<u64>> = Default::default();
    let mut told: std::collections::HashMap<&str, Vec<Value>> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        while let Some(v) = d.wait_for(Duration::from_millis(200), |_| true).await {
            let Some(name) = clients.iter().copied().find(|c| v["name"] == *c) else { continue };
            match v["event"].as_str() {
                Some("message") => got.entry(name).or_default().extend(v["args"][0]["sequence_number"].as_u64()),
                Some("close" | "reconnecting") => told.entry(name).or_default().push(v),
                _ => {}
            }
        }
        let finished = clients.iter().all(|c| told.contains_key(c) || got.get(c).and_then(|g| g.last()) == owed.last());
        if finished || Instant::now() >= deadline {
            break;
        }
    }
    let mut failures = Vec::new();
    for name in clients {
        let received = got.remove(name).unwrap_or_default();
        if let Some(told) = told.get(name) {
            // Told: it refetches; still, nothing twice.
            let mut once = received.clone();
            once.sort_unstable();
            once.dedup();
            if once.len() != received.len() {
                failures.push(format!("{name} (told: {told:?}) received an event twice: {received:?}"));
            }
        } else if received != owed {
            let missed: Vec<u64> = owed.iter().filter(|n| !received.contains(n)).copied().collect();
            failures.push(format!(
                "{name} was never told, yet received {} events of {} (missed {missed:?}): {received:?}",
                received.len(),
                owed.len()
            ));
        }
    }
    // Events a publisher sent that the stream does not hold (an XADD that
    // failed, or a write the dead master answered and never passed on).
    let not_held: Vec<String> = sent
        .iter()
        .filter(|s| !ids.contains(&s.event_id))
        .map(|s| format!("{} by {} ({}): {}", s.seq, s.via, s.event_id, s.answer))
        .collect();
    assert!(
        failures.is_empty(),
        "{failures:#?}\nthe stream holds {owed:?}\nsent and not in the stream: {not_held:?}\nlogs: {} {}",
        log("a").display(),
        log("b").display()
    );
    drop((a, b));
    for id in ["a", "b"] {
        let _ = std::fs::remove_file(log(id));
    }
}
