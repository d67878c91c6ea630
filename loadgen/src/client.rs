//! One simulated SignalR client: TCP from its source address, negotiate,
//! the WebSocket upgrade on the same connection, the handshake, a blocking
//! `JoinRoom`, then every delivery read and timed until the run ends, with
//! a Ping every 15 s as the official clients send. A stateful client
//! (`--stateful`) also negotiates stateful reconnect, shakes hands with
//! version 2 and acknowledges what it receives (see `acks`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::acks::Acks;
use crate::stats::{self, Order};
use crate::typing::Board;
use crate::wire::{Arg, Decoder, Incoming, Protocol};
use crate::{negotiate, sys};

type Ws = WebSocketStream<TcpStream>;

/// Distinct error texts kept; the rest count as "(other)".
const MAX_ERROR_KINDS: usize = 24;

/// One server instance the clients are spread over.
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` for the Host header and the WebSocket URL.
    pub host: String,
}

/// Which hub protocol each client speaks.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolMix {
    Json,
    Messagepack,
    /// Even-numbered clients JSON, odd-numbered MessagePack.
    Mixed,
}

impl ProtocolMix {
    fn for_client(self, idx: usize) -> Protocol {
        match self {
            ProtocolMix::Json => Protocol::Json,
            ProtocolMix::Messagepack => Protocol::MessagePack,
            ProtocolMix::Mixed if idx.is_multiple_of(2) => Protocol::Json,
            ProtocolMix::Mixed => Protocol::MessagePack,
        }
    }
}

/// Settings and counters every client task shares.
pub struct Shared {
    pub targets: Vec<Target>,
    pub hub: String,
    pub rooms: Vec<String>,
    pub protocol: ProtocolMix,
    /// Clients negotiate stateful reconnect and send Acks.
    pub stateful: bool,
    pub connect_timeout: Duration,
    pub keepalive: Option<Duration>,
    pub ws_config: WebSocketConfig,
    /// Client method chat messages arrive as (`ReceiveMessage`).
    pub message_method: String,
    /// Client method typing indicators arrive as (`UserTyping`).
    pub typing_method: String,
    /// Burst starts of the typists, in a typing trace.
    pub typing: Option<Arc<Board>>,
    pub joined: AtomicU64,
    pub failed: AtomicU64,
    pub join_failed: AtomicU64,
    pub disconnects: AtomicU64,
    /// Acks sent by stateful clients.
    pub acks_sent: AtomicU64,
    /// Set once the results are being gathered: ends are no longer counted.
    pub stopping: AtomicBool,
    /// Clients that completed their join, per room (deliveries owed).
    pub room_members: Vec<AtomicU64>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        targets: Vec<Target>,
        hub: String,
        rooms: Vec<String>,
        protocol: ProtocolMix,
        stateful: bool,
        connect_timeout: Duration,
        keepalive: Option<Duration>,
        ws_config: WebSocketConfig,
        message_method: String,
        typing_method: String,
        typing: Option<Arc<Board>>,
    ) -> Shared {
        let room_members = rooms.iter().map(|_| AtomicU64::new(0)).collect();
        Shared {
            targets,
            hub,
            rooms,
            protocol,
            stateful,
            connect_timeout,
            keepalive,
            ws_config,
            message_method,
            typing_method,
            typing,
            joined: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            join_failed: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            acks_sent: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            room_members,
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Error kinds seen, with counts.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn note(&self, what: String) {
        let mut what: String = what.chars().take(160).collect();
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if !errors.contains_key(&what) && errors.len() >= MAX_ERROR_KINDS {
            what = "(other)".into();
        }
        *errors.entry(what).or_insert(0) += 1;
    }

    fn fail(&self, stage: &str, msg: String) {
        self.failed.fetch_add(1, Relaxed);
        if stage == "join" {
            self.join_failed.fetch_add(1, Relaxed);
        }
        self.note(format!("{stage}: {msg}"));
    }
}

/// Runs client `idx` until the process ends.
pub async fn run(sh: Arc<Shared>, idx: usize, source: Option<IpAddr>) {
    let room = idx % sh.rooms.len();
    let target = &sh.targets[idx % sh.targets.len()];
    let protocol = sh.protocol.for_client(idx);
    let setup = tokio::time::timeout(sh.connect_timeout, connect(&sh, target, room, protocol, source)).await;
    let (ws, decoder, acks) = match setup {
        Ok(Ok(v)) => v,
        Ok(Err((stage, msg))) => return sh.fail(stage, msg),
        Err(_) => return sh.fail("timeout", format!("setup took over {:?}", sh.connect_timeout)),
    };
    sh.room_members[room].fetch_add(1, Relaxed);
    sh.joined.fetch_add(1, Relaxed);
    let reason = receive(ws, decoder, acks, &sh, room, protocol).await;
    if !sh.stopping.load(Relaxed) {
        sh.disconnects.fetch_add(1, Relaxed);
        sh.note(format!("disconnect: {reason}"));
    }
}

type Setup<T> = Result<T, (&'static str, String)>;

async fn connect(
    sh: &Shared,
    target: &Target,
    room: usize,
    protocol: Protocol,
    source: Option<IpAddr>,
) -> Setup<(Ws, Decoder, Option<Acks>)> {
    let mut tcp = sys::connect(target.addr, source).await.map_err(|e| ("tcp", e.to_string()))?;
    let neg = negotiate::negotiate(&mut tcp, &target.host, &sh.hub, sh.stateful).await.map_err(|e| ("negotiate", e))?;
    if !neg.reusable {
        tcp = sys::connect(target.addr, source).await.map_err(|e| ("tcp", e.to_string()))?;
    }
    let url = format!("ws://{}{}?id={}", target.host, sh.hub, negotiate::encode_query(&neg.token));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(sh.ws_config))
        .await
        .map_err(|e| ("websocket", e.to_string()))?;
    let mut decoder = Decoder::new(protocol);
    // The grant was checked by negotiate: stateful here means granted.
    let mut acks = sh.stateful.then(Acks::default);
    let version = if sh.stateful { 2 } else { 1 };
    ws.send(protocol.handshake(version)).await.map_err(|e| ("handshake", e.to_string()))?;
    let answer = until(&mut ws, &mut decoder, &mut acks, |m| match m {
        Incoming::Handshake(h) => Some(serde_json::from_slice::<serde_json::Value>(h).map_err(|e| e.to_string())),
        _ => None,
    })
    .await
    .map_err(|e| ("handshake", e))?
    .map_err(|e| ("handshake", format!("bad response: {e}")))?;
    if let Some(err) = answer.get("error") {
        return Err(("handshake", format!("refused: {err}")));
    }
    ws.send(protocol.invocation("1", "JoinRoom", &sh.rooms[room])).await.map_err(|e| ("join", e.to_string()))?;
    let completion = until(&mut ws, &mut decoder, &mut acks, |m| match m {
        Incoming::Completion { id, error } if id == b"1" => Some(error),
        Incoming::Close(e) => Some(Some(format!("closed: {e:?}"))),
        _ => None,
    })
    .await
    .map_err(|e| ("join", e))?;
    match completion {
        Some(err) => Err(("join", err)),
        None => Ok((ws, decoder, acks)),
    }
}

/// Reads until `pick` returns something for a message, counting the
/// sequenced ones of a stateful client (the join's Completion is one).
async fn until<T>(
    ws: &mut Ws,
    decoder: &mut Decoder,
    acks: &mut Option<Acks>,
    mut pick: impl FnMut(Incoming<'_>) -> Option<T>,
) -> Result<T, String> {
    let mut found = None;
    while found.is_none() {
        let data = match ws.next().await {
            Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
            Some(Ok(Message::Binary(b))) => b.to_vec(),
            Some(Ok(Message::Close(c))) => return Err(format!("closed by the server: {c:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection ended".into()),
        };
        decoder.feed(&data, |m| {
            if let (Some(a), true) = (acks.as_mut(), m.is_sequenced()) {
                a.received(tokio::time::Instant::now());
            }
            found = pick(m);
            found.is_none()
        })?;
    }
    found.ok_or_else(|| "nothing found".into())
}

/// What one joined client keeps.
struct Conn<'a> {
    sh: &'a Shared,
    room: usize,
    last_seq: u64,
    /// Per typist of the room: an indicator is showing.
    showing: Vec<bool>,
    closed: Option<String>,
    /// A stateful client's count of sequenced messages and pending Ack.
    acks: Option<Acks>,
}

impl Conn<'_> {
    fn handle(&mut self, m: Incoming<'_>) -> bool {
        if let (Some(a), true) = (self.acks.as_mut(), m.is_sequenced()) {
            a.received(tokio::time::Instant::now());
        }
        match m {
            Incoming::Invocation { target, arg } if target == self.sh.message_method.as_bytes() => self.message(arg),
            Incoming::Invocation { target, arg } if target == self.sh.typing_method.as_bytes() => self.typing(arg),
            Incoming::Close(e) => {
                self.closed = Some(format!("Close message ({})", e.unwrap_or_default()));
                return false;
            }
            _ => {}
        }
        true
    }

    fn message(&mut self, arg: Arg<'_>) {
        let now = sys::wall_ns();
        let order = match arg.u64("sequence_number") {
            None => Order::Next,
            Some(s) if s == self.last_seq + 1 => Order::Next,
            Some(s) if s <= self.last_seq => Order::Repeat,
            Some(s) => Order::Skipped(s - self.last_seq - 1),
        };
        if let Some(s) = arg.u64("sequence_number") {
            self.last_seq = self.last_seq.max(s);
        }
        stats::delivery(now, arg.u64("sent_ns"), order);
    }

    fn typing(&mut self, arg: Arg<'_>) {
        let now = sys::wall_ns();
        let Some(board) = &self.sh.typing else { return stats::typing_frame(now, None) };
        let on = arg.bool("is_typing").unwrap_or(false);
        let first = match arg.str("user_id").and_then(|u| board.typist(u, self.room)) {
            Some((global, local)) => {
                let was = std::mem::replace(&mut self.showing[local], on);
                (on && !was).then(|| board.burst_start(global))
            }
            None => None,
        };
        stats::typing_frame(now, first);
    }
}

async fn receive(
    mut ws: Ws,
    mut decoder: Decoder,
    acks: Option<Acks>,
    sh: &Shared,
    room: usize,
    protocol: Protocol,
) -> String {
    let typists = sh.typing.as_ref().map_or(0, |b| b.per_room);
    let mut conn = Conn { sh, room, last_seq: 0, showing: vec![false; typists], closed: None, acks };
    let period = sh.keepalive.unwrap_or(Duration::from_secs(86_400));
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // One timer per connection, re-armed when an Ack becomes due.
    let ack_timer = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(ack_timer);
    let mut ack_armed = false;
    loop {
        if let (false, Some(at)) = (ack_armed, conn.acks.as_ref().and_then(Acks::due)) {
            ack_timer.as_mut().reset(at);
            ack_armed = true;
        }
        tokio::select! {
            m = ws.next() => {
                let fed = match &m {
                    Some(Ok(Message::Text(t))) => decoder.feed(t.as_bytes(), |m| conn.handle(m)),
                    Some(Ok(Message::Binary(b))) => decoder.feed(b, |m| conn.handle(m)),
                    Some(Ok(Message::Close(c))) => return format!("WebSocket close {c:?}"),
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => return format!("WebSocket error: {e}"),
                    None => return "connection ended".into(),
                };
                if let Err(e) = fed {
                    return format!("framing: {e}");
                }
                if let Some(reason) = conn.closed.take() {
                    return reason;
                }
            }
            _ = keepalive.tick(), if sh.keepalive.is_some() => {
                if let Err(e) = ws.send(protocol.ping()).await {
                    return format!("ping failed: {e}");
                }
            }
            () = &mut ack_timer, if ack_armed => {
                ack_armed = false;
                if let Some(id) = conn.acks.as_mut().and_then(|a| a.take(tokio::time::Instant::now())) {
                    if let Err(e) = ws.send(protocol.ack(id)).await {
                        return format!("ack failed: {e}");
                    }
                    sh.acks_sent.fetch_add(1, Relaxed);
                }
            }
        }
    }
}
