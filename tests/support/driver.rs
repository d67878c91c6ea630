//! The Node driver of the official SignalR client.

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// One Node process holding any number of named client connections.
pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// Events read while waiting for a reply, in arrival order.
    pending: VecDeque<Value>,
}

impl Driver {
    /// Starts `node tests/client/driver.mjs`.
    pub async fn start() -> Driver {
        Driver::start_with_env(&[]).await
    }

    /// Starts the driver with extra environment variables, e.g.
    /// `NODE_EXTRA_CA_CERTS` so Node trusts a test certificate authority.
    pub async fn start_with_env(env: &[(&str, String)]) -> Driver {
        let mut child = Command::new("node")
            .arg(super::procs::root().join("tests/client/driver.mjs"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed, with tests/client installed by npm ci");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Driver { child, stdin, lines, next_id: 1, pending: VecDeque::new() }
    }

    async fn read_line(&mut self, timeout: Duration) -> Option<Value> {
        match tokio::time::timeout(timeout, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                Some(serde_json::from_str(&line).unwrap_or_else(|_| panic!("driver printed non-JSON: {line}")))
            }
            Ok(_) => panic!("the Node driver exited"),
            Err(_) => None,
        }
    }

    /// Sends a command and waits for its reply: `Ok(result)` or `Err(error)`.
    pub async fn call(&mut self, mut cmd: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = json!(id);
        let line = format!("{cmd}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("driver stdin");
        loop {
            let v = self.read_line(Duration::from_secs(30)).await.expect("the driver replies within 30 s");
            if v.get("id") == Some(&json!(id)) {
                return if v["ok"] == true {
                    Ok(v["result"].clone())
                } else {
                    Err(v["error"].as_str().unwrap_or("").to_string())
                };
            }
            self.pending.push_back(v);
        }
    }

    /// Connects client `name` to `url`, listening for `methods`; extra
    /// options (transport, protocol, reconnect...) are merged in.
    pub async fn connect(&mut self, name: &str, url: &str, methods: &[&str], extra: Value) -> Result<Value, String> {
        let mut cmd = json!({"cmd": "connect", "name": name, "url": url, "methods": methods});
        if let (Some(o), Some(e)) = (cmd.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        self.call(cmd).await
    }

    /// `connection.invoke(method, ...args)`.
    pub async fn invoke(&mut self, name: &str, method: &str, args: Value) -> Result<Value, String> {
        self.call(json!({"cmd": "invoke", "name": name, "method": method, "args": args})).await
    }

    /// `connection.stop()`.
    pub async fn stop(&mut self, name: &str) {
        let _ = self.call(json!({"cmd": "stop", "name": name})).await;
    }

    /// The next event matching `pred`, within `timeout`. Non-matching
    /// events stay queued for later calls.
    pub async fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(pos) = self.pending.iter().position(&pred) {
            return self.pending.remove(pos);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.read_line(left).await?;
            if pred(&v) {
                return Some(v);
            }
            self.pending.push_back(v);
        }
    }

    /// The next message delivered to client `name` for `method`.
    pub async fn message(&mut self, name: &str, method: &str, timeout: Duration) -> Option<Value> {
        self.wait_for(timeout, |v| v["event"] == "message" && v["name"] == name && v["method"] == method).await
    }

    /// Every message received so far (and for `quiet` more) by `name`.
    pub async fn drain_messages(&mut self, name: &str, quiet: Duration) -> Vec<Value> {
        while let Some(v) = self.read_line(quiet).await {
            self.pending.push_back(v);
        }
        let (mine, rest): (Vec<Value>, Vec<Value>) =
            self.pending.drain(..).partition(|v| v["event"] == "message" && v["name"] == name);
        self.pending = rest.into();
        mine
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
