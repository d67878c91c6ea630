//! A real Redis Cluster (3 masters, 3 replicas) on loopback: every stream is
//! read and delivered, and a master failover while events flow loses nothing.

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
