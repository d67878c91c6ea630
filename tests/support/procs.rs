//! Processes the tests run: redis-server and the sidecar.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Where [`free_port`] looks: below the kernel's ephemeral range
/// (32768-60999 by default), so that no outgoing connection of this or
/// another test can be given the port between the check and the server's
/// own bind, as a port from `bind(0)` can (a CI run failed on exactly that:
/// "SIDECAR_LISTEN: cannot bind: Address already in use").
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A free TCP port on loopback, never handed out twice by one test process.
/// Each process starts at its own place in [`PORTS`] (from its pid), so
/// test binaries that run side by side do not walk the same ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = PORTS.end - PORTS.start;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(PORTS.start + offset) else { continue };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}")
}

/// The repository root, where the sidecar finds `protocol/`.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A private redis-server, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Child,
    /// Where [`Redis::stop`] saves the data a [`Redis::restart`] loads.
    data_dir: PathBuf,
}

impl Redis {
    /// Starts redis-server without persistence on a free port.
    pub async fn start() -> Redis {
        let port = free_port();
        // Nothing is written there unless `stop` asks for a save (`dir`
        // cannot be changed at run time: a protected setting).
        let data_dir = std::env::temp_dir().join(format!("sidecar-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let child = Redis::spawn(port, &data_dir).await;
        Redis { port, child, data_dir }
    }

    async fn spawn(port: u16, data_dir: &std::path::Path) -> Child {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        cmd.arg("--dir").arg(data_dir);
        let child = cmd
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (the test script installs it)");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis::Client::open(url.as_str()).and_then(|c| c.get_connection()).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child
    }

    /// Stops the server (Redis becomes unreachable: connections refused).
    /// With `keep_data`, it saves its data first, so that [`Redis::restart`]
    /// brings the streams and consumer groups back as a Redis with
    /// persistence would; without, the restart is empty.
    pub async fn stop(&mut self, keep_data: bool) {
        let mut conn = self.conn();
        if !keep_data {
            let _ = std::fs::remove_file(self.data_dir.join("dump.rdb"));
        }
        // No reply: the server exits.
        let _: redis::RedisResult<()> =
            redis::cmd("SHUTDOWN").arg(if keep_data { "SAVE" } else { "NOSAVE" }).query(&mut conn);
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("redis-server exits on SHUTDOWN")
            .expect("wait");
    }

    /// Starts a server on `port` (one a sidecar was told to use before it
    /// was there).
    pub async fn start_on(port: u16) -> Redis {
        let data_dir = std::env::temp_dir().join(format!("sidecar-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let child = Redis::spawn(port, &data_dir).await;
        Redis { port, child, data_dir }
    }

    /// Starts the server again on the same port, with the data the last
    /// [`Redis::stop`] kept, if it kept any.
    pub async fn restart(&mut self) {
        self.child = Redis::spawn(self.port, &self.data_dir).await;
    }

    /// Stops the server without saving and, `down` later, starts it empty
    /// on the same port: Redis restarted without persistence.
    pub async fn restart_empty(&mut self, down: Duration) {
        self.stop(false).await;
        tokio::time::sleep(down).await;
        self.restart().await;
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: the server hangs with every socket open (a VM paused, a
    /// stalled disk under `appendfsync always`): connects still succeed
    /// (the kernel's backlog), nothing is answered. [`Redis::resume`] ends it.
    pub fn hang(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Redis::hang`]: the server answers what queued meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("redis-server runs");
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// A blocking connection for test commands.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url()).expect("url").get_connection().expect("connect")
    }

    /// Creates a consumer group at the end of `stream` (and the stream).
    pub fn create_group(&self, stream: &str, group: &str) {
        let () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("$")
            .arg("MKSTREAM")
            .query(&mut self.conn())
            .expect("XGROUP CREATE");
    }

    /// XADD with the given fields.
    pub fn xadd(&self, stream: &str, fields: &[(&str, String)]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(v);
        }
        cmd.query(&mut self.conn()).expect("XADD")
    }

    /// XADD of an envelope in the flat encoding.
    pub fn xadd_flat(&self, stream: &str, env: &serde_json::Value) -> String {
        let mut fields = Vec::new();
        for key in ["event_id", "event_type", "timestamp", "room_id"] {
            fields.push((key, env[key].as_str().expect("string field").to_string()));
        }
        fields.push(("payload", env["payload"].to_string()));
        if let Some(m) = env.get("metadata") {
            fields.push(("metadata", m.to_string()));
        }
        self.xadd(stream, &fields)
    }

    /// XADD of an envelope in the `data` encoding.
    pub fn xadd_data(&self, stream: &str, env: &serde_json::Value) -> String {
        super::xadd_data_on(&mut self.conn(), stream, env)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The sidecar binary, killed on drop unless stopped.
pub struct Sidecar {
    pub port: u16,
    pub admin_port: u16,
    child: Option<Child>,
}

impl Sidecar {
    /// Starts the binary with `env` plus free ports, and waits for `/readyz`.
    pub async fn start(env: &[(&str, String)]) -> Sidecar {
        Sidecar::start_fresh(env, None).await
    }

    /// Starts with its log (standard output) written to `log`.
    pub async fn start_logged(env: &[(&str, String)], log: &std::path::Path) -> Sidecar {
        Sidecar::start_fresh(env, Some(log)).await
    }

    /// Starts on given ports (for a restart on the same address).
    pub async fn start_on(port: u16, admin_port: u16, env: &[(&str, String)]) -> Sidecar {
        Sidecar::spawn(port, admin_port, env, None).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// On ports of its own choosing a start that exits early is tried again
    /// on others (another process may have bound a port in the meantime);
    /// the binary prints why it exited to standard error each time.
    async fn start_fresh(env: &[(&str, String)], log: Option<&std::path::Path>) -> Sidecar {
        let mut last = String::new();
        for _ in 0..3 {
            match Sidecar::spawn(free_port(), free_port(), env, log).await {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("{last} (three tries, each on other ports)")
    }

    /// Runs the binary without waiting for it to be ready (see
    /// [`Sidecar::wait_ready`]).
    pub fn launch(env: &[(&str, String)]) -> Sidecar {
        Sidecar::command(free_port(), free_port(), env, None)
    }

    /// Waits (up to 20 s) for `/readyz` to answer 200; an error when the
    /// process exits first.
    pub async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = super::http::request(self.admin_port, "GET", "/readyz", &[], b"").await {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("the sidecar exited before it was ready ({status})"));
            }
            assert!(Instant::now() < deadline, "the sidecar did not become ready");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM and returns at once (the drain goes on).
    pub fn terminate(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Runs the binary and waits for `/readyz`; an error when it exits first.
    async fn spawn(
        port: u16,
        admin_port: u16,
        env: &[(&str, String)],
        log: Option<&std::path::Path>,
    ) -> Result<Sidecar, String> {
        let mut s = Sidecar::command(port, admin_port, env, log);
        s.wait_ready().await?;
        Ok(s)
    }

    fn command(port: u16, admin_port: u16, env: &[(&str, String)], log: Option<&std::path::Path>) -> Sidecar {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_signalr-sidecar"));
        cmd.current_dir(super::procs::root())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SIDECAR_LISTEN", format!("127.0.0.1:{port}"))
            .env("SIDECAR_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("SIDECAR_LOG", std::env::var("SIDECAR_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .env("SIDECAR_INSTANCE_ID", format!("test-{port}"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(path) = log {
            cmd.stdout(std::fs::File::create(path).expect("log file"));
        }
        let child = cmd.spawn().expect("the sidecar binary starts");
        Sidecar { port, admin_port, child: Some(child) }
    }

    /// Runs the binary with `env` (free ports added) when it is expected
    /// to refuse to start: its exit code and standard error, or `None` for
    /// the code if it is still running after 10 s (then it is killed).
    pub async fn refused(env: &[(&str, String)]) -> (Option<i32>, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_signalr-sidecar"));
        cmd.current_dir(super::procs::root())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SIDECAR_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("SIDECAR_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("the sidecar binary starts");
        match tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await {
            Ok(Ok(out)) => (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned()),
            _ => (None, String::new()),
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid().expect("running"))).expect("proc");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// The base URL of the client port.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A hub's URL.
    pub fn hub(&self, path: &str) -> String {
        format!("{}{}", self.url(), path)
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status code.
    pub async fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = child.id()?;
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let status = tokio::time::timeout(Duration::from_secs(40), child.wait()).await.ok()?.ok()?;
        status.code()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// POSTs one envelope to the admin port; returns (status, body).
    pub async fn post_event(&self, body: &[u8]) -> (u16, String) {
        super::http::request(self.admin_port, "POST", "/internal/events", &[("content-type", "application/json")], body)
            .await
            .expect("admin port answers")
    }
}

/// A TCP proxy on loopback whose live connections the test can cut, to
/// drop a socket under a client without a close handshake.
pub struct Proxy {
    pub port: u16,
    cut: tokio::sync::watch::Sender<u64>,
    cut_clients: tokio::sync::watch::Sender<u64>,
    target: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// Milliseconds each new connection waits before it is forwarded.
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards a free port to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (cut_clients, _) = tokio::sync::watch::channel(0u64);
        let (cut_tx, clients_tx) = (cut.clone(), cut_clients.clone());
        let target = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(target));
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (current, delay) = (target.clone(), delay_ms.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (mut cut_rx, mut clients_rx) = (cut_tx.subscribe(), clients_tx.subscribe());
                let target = current.load(std::sync::atomic::Ordering::SeqCst);
                let wait = Duration::from_millis(delay.load(std::sync::atomic::Ordering::SeqCst));
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        // Both sockets are dropped with no WebSocket close frame:
                        // to the client the connection just dies.
                        _ = cut_rx.changed() => {}
                        // The client's side dies; the server's stays open and
                        // silent, so the server notices nothing.
                        _ = clients_rx.changed() => {
                            drop(client);
                            let _ = cut_rx.changed().await;
                        }
                    }
                });
            }
        });
        Proxy { port, cut, cut_clients, target, delay_ms, task }
    }

    /// Holds each new connection `delay` before forwarding it (a slow
    /// network path); connections already forwarded are not affected.
    pub fn delay_new(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sends new connections to another port (a load balancer moving on).
    pub fn retarget(&self, port: u16) {
        self.target.store(port, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drops every live connection.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Drops the client's side of every live connection and keeps the
    /// server's open until [`Proxy::cut`] or the test's end: the client's
    /// network went away and the server has not noticed yet.
    pub fn cut_clients(&self) {
        self.cut_clients.send_modify(|n| *n += 1);
    }

    /// The proxied base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
