//! TLS on the client port (issue 20): the official client over `https://`
//! negotiate and `wss://`, Server-Sent Events and Long Polling over https;
//! failed handshakes and plain HTTP that harm no other connection; a renewed
//! certificate served without a restart, laid out as a Kubernetes Secret
//! volume swaps it; and start-up errors that name the setting.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::certs::{self, Leaf, TestCa};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A directory laid out as the kubelet mounts a Secret: `tls.crt` and
/// `tls.key` are symlinks into `..data`, itself a symlink to a timestamped
/// directory; an update writes a new directory and renames a new `..data`
/// over the old one in one step.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(leaf: &Leaf) -> SecretVolume {
        let mut v = SecretVolume { dir: certs::temp_dir("tls"), version: 0 };
        v.update(&leaf.cert_pem, &leaf.key_pem);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), v.dir.join(name)).expect("symlink");
        }
        v
    }

    /// Atomically replaces both files, as a Secret update does.
    fn update(&mut self, cert: &str, key: &str) {
        self.version += 1;
        let version = format!("..2026_01_01_00_00_0{}.{}", self.version, std::process::id());
        let dir = self.dir.join(&version);
        std::fs::create_dir(&dir).expect("version dir");
        std::fs::write(dir.join("tls.crt"), cert).expect("write cert");
        std::fs::write(dir.join("tls.key"), key).expect("write key");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).expect("symlink");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SIDECAR_TLS_CERT_FILE", self.cert().display().to_string()),
            ("SIDECAR_TLS_KEY_FILE", self.key().display().to_string()),
        ]
    }
}

impl Drop for SecretVolume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Node driver that trusts `ca`.
async fn driver(ca_file: &Path) -> Driver {
    Driver::start_with_env(&[("NODE_EXTRA_CA_CERTS", ca_file.display().to_string())]).await
}

fn https_hub(s: &Sidecar) -> String {
    format!("https://127.0.0.1:{}/hubs/chat", s.port)
}

async fn post_chat(s: &Sidecar, room: &str, n: u64) -> Value {
    let e = envelope("chat_message", room, chat_payload(room, n));
    assert_eq!(s.post_event(e.to_string().as_bytes()).await.0, 202, "the admin port stays plain HTTP");
    e
}

async fn join(d: &mut Driver, name: &str, url: &str, opts: Value, room: &str) {
    d.connect(name, url, &["ReceiveMessage"], opts).await.unwrap_or_else(|e| panic!("{name} connects over TLS: {e}"));
    assert_eq!(d.invoke(name, "JoinRoom", json!([room])).await, Ok(Value::Null), "{name} joins");
}

async fn receives(d: &mut Driver, name: &str, event: &Value) {
    let got = d.message(name, "ReceiveMessage", WAIT).await.unwrap_or_else(|| panic!("{name} got no event"));
    assert_eq!(got["args"][0], event["payload"], "{name}");
}

#[tokio::test]
async fn official_client_over_https_negotiate_wss_sse_and_long_polling() {
    let ca = TestCa::new("sidecar test CA");
    let leaf = ca.leaf("sidecar A");
    let volume = SecretVolume::new(&leaf);
    let ca_file = ca.write(&volume.dir);
    let s = Sidecar::start(&volume.env()).await;
    let mut d = driver(&ca_file).await;
    let hub = https_hub(&s);
    // https:// negotiate, then wss:// (the client derives it from the URL).
    join(&mut d, "ws", &hub, json!({"transport": "WebSockets"}), "r").await;
    // wss:// straight away, without negotiate.
    join(&mut d, "ws-direct", &hub, json!({"transport": "WebSockets", "skipNegotiation": true}), "r").await;
    join(&mut d, "ws-msgpack", &hub, json!({"transport": "WebSockets", "protocol": "msgpack"}), "r").await;
    join(&mut d, "sse", &hub, json!({"transport": "ServerSentEvents"}), "r").await;
    join(&mut d, "lp", &hub, json!({"transport": "LongPolling"}), "r").await;
    for n in 0..3 {
        let e = post_chat(&s, "r", n).await;
        for name in ["ws", "ws-direct", "ws-msgpack", "sse", "lp"] {
            receives(&mut d, name, &e).await;
        }
    }
    // The peer certificate is the one in the files, agreed on http/1.1.
    let tls = certs::connect(s.port, std::slice::from_ref(&ca.der), &[b"h2", b"http/1.1"]).await.expect("handshake");
    assert_eq!(certs::peer_leaf(&tls), leaf.der);
    assert_eq!(certs::alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
    for name in ["ws", "ws-direct", "ws-msgpack", "sse", "lp"] {
        d.stop(name).await;
    }
}

#[tokio::test]
async fn failed_handshakes_and_plain_http_harm_no_other_connection() {
    let ca = TestCa::new("sidecar test CA");
    let volume = SecretVolume::new(&ca.leaf("sidecar A"));
    let ca_file = ca.write(&volume.dir);
    let mut env = volume.env();
    env.push(("SIDECAR_HTTP_HEADER_TIMEOUT_SECONDS", "2".into()));
    let s = Sidecar::start(&env).await;
    let mut d = driver(&ca_file).await;
    let hub = https_hub(&s);
    join(&mut d, "ws", &hub, json!({"transport": "WebSockets"}), "r").await;
    join(&mut d, "sse", &hub, json!({"transport": "ServerSentEvents"}), "r").await;

    // A connection that never says anything holds no one else up, and is
    // closed after the header timeout (slowloris on the handshake).
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.expect("connect");
    // Plain HTTP on the TLS port: a 400 that says what to do.
    let (status, body) = support::http::request(s.port, "POST", "/hubs/chat/negotiate?negotiateVersion=1", &[], b"")
        .await
        .expect("a reply");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("https://"), "{body}");
    // Not TLS, not HTTP: closed.
    let mut junk = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.expect("connect");
    junk.write_all(b"\x16\x03\x01\x00\x10not a client hello at all").await.expect("write");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, junk.read_to_end(&mut rest)).await.expect("the server closes it");
    // A client that does not trust the certificate, and one that offers
    // only HTTP/2: both handshakes fail.
    let other = TestCa::new("another CA");
    certs::connect(s.port, std::slice::from_ref(&other.der), &[]).await.expect_err("untrusted certificate");
    certs::connect(s.port, std::slice::from_ref(&ca.der), &[b"h2"]).await.expect_err("no common protocol");
    // The Node client without the CA is refused too.
    let mut untrusting = Driver::start().await;
    untrusting.connect("x", &hub, &["ReceiveMessage"], json!({})).await.expect_err("certificate not trusted");

    // Everyone else carries on, and new clients get in.
    let e = post_chat(&s, "r", 1).await;
    receives(&mut d, "ws", &e).await;
    receives(&mut d, "sse", &e).await;
    join(&mut d, "lp", &hub, json!({"transport": "LongPolling"}), "r").await;
    let e = post_chat(&s, "r", 2).await;
    for name in ["ws", "sse", "lp"] {
        receives(&mut d, name, &e).await;
    }
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, silent.read(&mut buf)).await.expect("the silent connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "closed without a reply: {read:?}");
    assert!(started.elapsed() >= Duration::from_millis(1900), "not before the header timeout");
}

/// Handshakes until the server presents `want`, for up to `within`.
async fn served_within(port: u16, ca: &TestCa, want: &[u8], within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let tls = certs::connect(port, std::slice::from_ref(&ca.der), &[]).await.expect("handshake");
        if certs::peer_leaf(&tls) == want {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let ca = TestCa::new("sidecar test CA");
    let (a, b) = (ca.leaf("sidecar A"), ca.leaf("sidecar B"));
    let mut volume = SecretVolume::new(&a);
    let ca_file = ca.write(&volume.dir);
    let log = volume.dir.join("sidecar.log");
    let s = Sidecar::start_logged(&volume.env(), &log).await;
    let pid = s.pid();
    let tls = certs::connect(s.port, std::slice::from_ref(&ca.der), &[]).await.expect("handshake");
    assert_eq!(certs::peer_leaf(&tls), a.der);
    let mut d = driver(&ca_file).await;
    join(&mut d, "before", &https_hub(&s), json!({"transport": "WebSockets"}), "r").await;

    // The Secret is renewed: new connections get the new certificate.
    volume.update(&b.cert_pem, &b.key_pem);
    assert!(served_within(s.port, &ca, &b.der, Duration::from_secs(5)).await, "the renewed certificate is served");
    assert_eq!(s.pid(), pid, "no restart");
    // The connection made before carries on; a new one gets in.
    join(&mut d, "after", &https_hub(&s), json!({"transport": "ServerSentEvents"}), "r").await;
    let e = post_chat(&s, "r", 1).await;
    receives(&mut d, "before", &e).await;
    receives(&mut d, "after", &e).await;

    // A broken renewal (a key that is not the certificate's) keeps B and
    // says why in the log.
    let c = ca.leaf("sidecar C");
    volume.update(&c.cert_pem, &b.key_pem);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..3 {
        let tls = certs::connect(s.port, std::slice::from_ref(&ca.der), &[]).await.expect("still served");
        assert_eq!(certs::peer_leaf(&tls), b.der, "the previous certificate stays");
    }
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("still serving the previous certificate") && text.contains("does not match the key"),
        "the log says why: {text}"
    );
    // Fixed by the next renewal.
    volume.update(&c.cert_pem, &c.key_pem);
    assert!(served_within(s.port, &ca, &c.der, Duration::from_secs(5)).await, "the fixed certificate is served");
}

/// Runs the binary with `env` until it exits; returns (code, stderr).
async fn start_fails(env: &[(&str, String)]) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_signalr-sidecar"));
    cmd.current_dir(support::procs::root())
        .env_clear()
        .env("SIDECAR_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("SIDECAR_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("SIDECAR_INSTANCE_ID", "tls-start")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output()).await.expect("exits").expect("runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[tokio::test]
async fn start_refuses_unusable_tls_settings_naming_the_setting() {
    let ca = TestCa::new("sidecar test CA");
    let volume = SecretVolume::new(&ca.leaf("sidecar A"));
    let cert = volume.cert().display().to_string();
    let key = volume.key().display().to_string();

    let (code, err) = start_fails(&[("SIDECAR_TLS_CERT_FILE", cert.clone())]).await;
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("SIDECAR_TLS_KEY_FILE: must be set with SIDECAR_TLS_CERT_FILE"), "{err}");

    let missing = volume.dir.join("missing.crt").display().to_string();
    let (code, err) = start_fails(&[("SIDECAR_TLS_CERT_FILE", missing), ("SIDECAR_TLS_KEY_FILE", key.clone())]).await;
    assert_eq!(code, Some(64), "a file a setting names is a setting too: {err}");
    assert!(err.contains("SIDECAR_TLS_CERT_FILE: cannot read"), "{err}");

    // The certificate where the key should be.
    let (code, err) = start_fails(&[("SIDECAR_TLS_CERT_FILE", cert.clone()), ("SIDECAR_TLS_KEY_FILE", cert)]).await;
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("SIDECAR_TLS_KEY_FILE: ") && err.contains("no PEM private key"), "{err}");
}

/// A redis-server speaking only TLS on a free port, with `leaf` signed by
/// a private CA; killed on drop.
async fn tls_redis(leaf: &Leaf, dir: &Path) -> (tokio::process::Child, u16) {
    let (cert, key) = (dir.join("redis.crt"), dir.join("redis.key"));
    std::fs::write(&cert, &leaf.cert_pem).expect("write cert");
    std::fs::write(&key, &leaf.key_pem).expect("write key");
    let port = free_port();
    let child = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-auth-clients", "no", "--tls-cert-file"])
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "redis-server (TLS) did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, port)
}

#[tokio::test]
async fn a_redis_with_a_private_ca_is_read_over_rediss_with_its_ca_file() {
    let ca = TestCa::new("redis test CA");
    let dir = certs::temp_dir("redis-tls");
    let ca_file = ca.write(&dir);
    let (_redis, port) = tls_redis(&ca.leaf("redis"), &dir).await;
    let url = format!("rediss://127.0.0.1:{port}");
    // Without the CA its certificate cannot be checked: a setting to fix,
    // not a Redis to wait for.
    let (code, out) = Sidecar::refused(&[("SIDECAR_REDIS_URL", url.clone())]).await;
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("SIDECAR_REDIS_CA_FILE"), "the error names the setting that mends it: {out}");
    // With it: ready, and events go through that Redis to the clients.
    let s =
        Sidecar::start(&[("SIDECAR_REDIS_URL", url), ("SIDECAR_REDIS_CA_FILE", ca_file.display().to_string())]).await;
    let mut d = Driver::start().await;
    join(&mut d, "c", &s.hub("/hubs/chat"), json!({}), "r").await;
    for n in 0..3 {
        let e = post_chat(&s, "r", n).await;
        receives(&mut d, "c", &e).await;
    }
    d.stop("c").await;
    let _ = std::fs::remove_dir_all(&dir);
}
