//! An ingress with session affinity on loopback, in front of N sidecar
//! instances, as a Kubernetes ingress with sticky sessions behaves:
//! `POST .../negotiate` goes round-robin to a live instance, and the proxy
//! learns from the answer which instance issued the `connectionToken` (the
//! `connectionId` for negotiateVersion 0); every later request carrying
//! `id=<token>` goes to that instance while it lives, and round-robin to
//! another live one otherwise (if that one accepts it, the token sticks
//! there from then on). Requests without `id` go round-robin.
//!
//! Node's fetch keeps connections alive and sends several clients'
//! requests on one of them, so requests are parsed one at a time and each
//! gets a fresh backend connection, routed on its own target. A WebSocket
//! upgrade answered 101 turns the pair into a byte tunnel. Bodies are
//! relayed as they arrive (Content-Length, chunked, or until close), so
//! Server-Sent Events and long polls pass through too.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The largest request or response head, or chunk-size line, accepted.
const MAX_HEAD: usize = 64 * 1024;

/// How the proxy routed requests so far, for test reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Negotiate answers whose token was learned.
    pub learned: u64,
    /// Requests with a known token sent to the instance that issued it.
    pub sticky: u64,
    /// Requests with a known token whose instance is gone, sent elsewhere.
    pub moved: u64,
    /// Of those, the ones the other instance answered 404 (unknown token:
    /// a stateful resume refused there).
    pub moved_404: u64,
    /// Requests with an `id` the proxy never saw issued.
    pub unknown: u64,
    /// Requests answered 502 because no instance was reachable.
    pub unrouted: u64,
    /// Requests sent again to another instance after one failed before
    /// answering.
    pub retried: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    port: u16,
    alive: bool,
}

struct Shared {
    slots: Mutex<Vec<Slot>>,
    next: AtomicUsize,
    /// Token -> the port of the instance that issued it.
    tokens: Mutex<HashMap<String, u16>>,
    stats: Mutex<Stats>,
}

/// The proxy; its listener and every connection it carries stop on drop.
pub struct Affinity {
    pub port: u16,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Affinity {
    /// Listens on a free loopback port in front of the instances on `ports`
    /// (slot i is `ports[i]`), all alive.
    pub async fn start(ports: &[u16]) -> Affinity {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            slots: Mutex::new(ports.iter().map(|&port| Slot { port, alive: true }).collect()),
            next: AtomicUsize::new(0),
            tokens: Mutex::new(HashMap::new()),
            stats: Mutex::new(Stats::default()),
        });
        let (stop, _) = watch::channel(false);
        let (accept_shared, accept_stop) = (shared.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let shared = accept_shared.clone();
                let mut stopped = accept_stop.subscribe();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(&shared, client) => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Affinity { port, shared, stop, task }
    }

    /// Marks slot `i` alive or dead: a dead instance gets no request, as a
    /// pod removed from the endpoints (SIGTERM, failing readiness).
    pub fn set_alive(&self, i: usize, alive: bool) {
        self.shared.slots.lock().expect("slots")[i].alive = alive;
    }

    /// Points slot `i` at another port: its instance was replaced. Tokens
    /// issued by the old one no longer stick (the pod that issued them is
    /// gone, whatever the new one is called).
    pub fn set_port(&self, i: usize, port: u16) {
        self.shared.slots.lock().expect("slots")[i].port = port;
    }

    /// Routing counts so far.
    pub fn stats(&self) -> Stats {
        *self.shared.stats.lock().expect("stats")
    }

    /// The proxied base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Affinity {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// What a request target asks of the router.
enum Route {
    Negotiate,
    Token(String),
    Any,
}

impl Route {
    fn of(target: &str) -> Route {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path.ends_with("/negotiate") {
            return Route::Negotiate;
        }
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("id="))
            .map(|id| Route::Token(percent_decode(id)))
            .unwrap_or(Route::Any)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Shared {
    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().expect("stats"));
    }

    fn live(&self, port: u16) -> bool {
        self.slots.lock().expect("slots").iter().any(|s| s.alive && s.port == port)
    }

    /// The backend for `route`, connected: the issuing instance for a known
    /// token while it accepts connections, else the next live one that does;
    /// never one in `failed`. True when a known token had to move.
    async fn pick(&self, route: &Route, failed: &[u16]) -> Option<(u16, TcpStream, bool)> {
        let mut moved = false;
        if let Route::Token(token) = route {
            let issued = self.tokens.lock().expect("tokens").get(token).copied();
            match issued {
                Some(port) if self.live(port) && !failed.contains(&port) => {
                    if let Some(stream) = connect(port).await {
                        self.bump(|s| s.sticky += 1);
                        return Some((port, stream, false));
                    }
                    moved = true;
                }
                Some(_) => moved = true,
                None => self.bump(|s| s.unknown += 1),
            }
            if moved {
                self.bump(|s| s.moved += 1);
            }
        }
        let slots = self.slots.lock().expect("slots").clone();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..slots.len() {
            let slot = slots[(start + k) % slots.len()];
            if slot.alive && !failed.contains(&slot.port) {
                if let Some(stream) = connect(slot.port).await {
                    return Some((slot.port, stream, moved));
                }
            }
        }
        self.bump(|s| s.unrouted += 1);
        None
    }

    /// Remembers which instance issued the token in a negotiate answer.
    fn learn(&self, body: &[u8], port: u16) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return };
        let token = v["connectionToken"].as_str().or_else(|| v["connectionId"].as_str());
        if let Some(token) = token {
            self.tokens.lock().expect("tokens").insert(token.to_string(), port);
            self.bump(|s| s.learned += 1);
        }
    }
}

async fn connect(port: u16) -> Option<TcpStream> {
    let stream =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(("127.0.0.1", port))).await.ok()?.ok()?;
    let _ = stream.set_nodelay(true);
    Some(stream)
}

/// One end of the proxy: a socket and the bytes read from it not yet used.
struct End {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl End {
    fn new(stream: TcpStream) -> End {
        End { stream, buf: Vec::new() }
    }

    /// Reads more into the buffer; false at end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The bytes up to and including `delim`; `None` at a clean end of
    /// stream before any byte of it.
    async fn until(&mut self, delim: &[u8]) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(pos) = self.buf.windows(delim.len()).position(|w| w == delim) {
                return Ok(Some(self.buf.drain(..pos + delim.len()).collect()));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
            }
        }
    }

    async fn line(&mut self) -> io::Result<Vec<u8>> {
        self.until(b"\r\n").await?.ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
    }

    /// Copies exactly `n` body bytes to `to`, keeping a copy in `keep`.
    async fn copy_n<W: AsyncWrite + Unpin>(
        &mut self,
        mut n: usize,
        to: &mut W,
        keep: &mut Option<Vec<u8>>,
    ) -> io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() && !self.fill().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let m = n.min(self.buf.len());
            to.write_all(&self.buf[..m]).await?;
            if let Some(k) = keep {
                k.extend_from_slice(&self.buf[..m]);
            }
            self.buf.drain(..m);
            n -= m;
        }
        Ok(())
    }

    /// Relays one message body framed as `framing` to `to`, as it arrives.
    async fn relay<W: AsyncWrite + Unpin>(
        &mut self,
        framing: Framing,
        to: &mut W,
        keep: &mut Option<Vec<u8>>,
    ) -> io::Result<()> {
        match framing {
            Framing::Empty => Ok(()),
            Framing::Length(n) => self.copy_n(n, to, keep).await,
            Framing::Chunked => loop {
                let line = self.line().await?;
                to.write_all(&line).await?;
                let text = String::from_utf8_lossy(&line);
                let size = text.trim_end().split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                if size == 0 {
                    loop {
                        let trailer = self.line().await?;
                        to.write_all(&trailer).await?;
                        if trailer == b"\r\n" {
                            return Ok(());
                        }
                    }
                }
                self.copy_n(size, to, keep).await?;
                let end = self.line().await?;
                to.write_all(&end).await?;
            },
            Framing::UntilClose => loop {
                to.write_all(&self.buf).await?;
                if let Some(k) = keep {
                    k.extend_from_slice(&self.buf);
                }
                self.buf.clear();
                if !self.fill().await? {
                    return Ok(());
                }
            },
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// The parts of a request or response head the proxy acts on.
struct Head {
    /// Method of a request; status code of a response.
    first: String,
    /// Target of a request.
    target: String,
    status: u16,
    chunked: bool,
    length: Option<usize>,
    close: bool,
}

impl Head {
    fn parse(raw: &[u8]) -> io::Result<Head> {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n");
        let start: Vec<&str> = lines.next().unwrap_or("").splitn(3, ' ').collect();
        if start.len() < 2 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad start line"));
        }
        let mut head = Head {
            first: start[0].to_string(),
            target: start[1].to_string(),
            status: start[1].parse().unwrap_or(0),
            chunked: false,
            length: None,
            close: false,
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
            match name.as_str() {
                "transfer-encoding" => head.chunked = value.contains("chunked"),
                "content-length" => head.length = value.parse().ok(),
                "connection" => head.close = value.split(',').any(|v| v.trim() == "close"),
                _ => {}
            }
        }
        Ok(head)
    }

    fn request_framing(&self) -> Framing {
        match (self.chunked, self.length) {
            (true, _) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::Empty,
        }
    }

    fn response_framing(&self, request: &Head) -> Framing {
        if request.first == "HEAD" || (100..200).contains(&self.status) || self.status == 204 || self.status == 304 {
            return Framing::Empty;
        }
        match (self.chunked, self.length) {
            (true, _) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::UntilClose,
        }
    }
}

const BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Serves one client connection, request by request, until either side
/// closes or a WebSocket tunnel ends.
async fn serve(shared: &Shared, client: TcpStream) -> io::Result<()> {
    let mut client = End::new(client);
    loop {
        let Some(raw) = client.until(b"\r\n\r\n").await? else { return Ok(()) };
        let request = Head::parse(&raw)?;
        let route = Route::of(&request.target);
        // A request without a body and without side effects is tried on the
        // next instance when one fails before answering (an instance dying
        // right now), as nginx's proxy_next_upstream does by default.
        let retryable = request.request_framing() == Framing::Empty
            && matches!(request.first.as_str(), "GET" | "HEAD" | "OPTIONS" | "DELETE");
        let mut failed = Vec::new();
        let (port, mut backend, moved, raw) = loop {
            let Some((port, backend, moved)) = shared.pick(&route, &failed).await else {
                client.stream.write_all(BAD_GATEWAY).await?;
                return Ok(());
            };
            let mut backend = End::new(backend);
            let sent = backend.stream.write_all(&raw).await;
            if sent.is_ok() {
                client.relay(request.request_framing(), &mut backend.stream, &mut None).await?;
            }
            match (sent, backend.until(b"\r\n\r\n").await) {
                (Ok(()), Ok(Some(head))) => break (port, backend, moved, head),
                _ if retryable => {
                    shared.bump(|s| s.retried += 1);
                    failed.push(port);
                }
                _ => {
                    client.stream.write_all(BAD_GATEWAY).await?;
                    return Ok(());
                }
            }
        };
        let response = Head::parse(&raw)?;
        if moved && response.status == 404 {
            shared.bump(|s| s.moved_404 += 1);
        }
        if let (true, Route::Token(token), 101 | 200) = (moved, &route, response.status) {
            // Accepted elsewhere (a session taken over): stick to its new
            // home, as an ingress re-pins its affinity cookie.
            shared.tokens.lock().expect("tokens").insert(token.clone(), port);
        }
        if matches!(route, Route::Negotiate) && response.status == 200 {
            // The whole answer is read and the token learned before the
            // client sees it, so its connect request cannot overtake this.
            let (mut whole, mut body) = (raw, Some(Vec::new()));
            let framing = response.response_framing(&request);
            backend.relay(framing, &mut whole, &mut body).await?;
            shared.learn(&body.unwrap_or_default(), port);
            client.stream.write_all(&whole).await?;
            if framing == Framing::UntilClose || request.close || response.close {
                return Ok(());
            }
            continue;
        }
        client.stream.write_all(&raw).await?;
        if response.status == 101 {
            client.stream.write_all(&backend.buf).await?;
            backend.stream.write_all(&client.buf).await?;
            let _ = tokio::io::copy_bidirectional(&mut client.stream, &mut backend.stream).await;
            return Ok(());
        }
        let framing = response.response_framing(&request);
        backend.relay(framing, &mut client.stream, &mut None).await?;
        if framing == Framing::UntilClose || request.close || response.close {
            return Ok(());
        }
    }
}
