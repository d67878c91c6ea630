//! The connection a stream reader blocks on in XREADGROUP.
//!
//! Against one server over plain TCP (the sidecar beside its Redis, the
//! common case) it is a socket of the reader's own: the command is encoded
//! once, written as it is for every read, and the reply parsed from the
//! socket's bytes into entries (`resp`), in the reader's task. Through the
//! `redis` crate each event cost a `Value` tree and a hand-over from the
//! connection's task (bench/gaps.md, section 1). TLS, Unix sockets and
//! clusters keep the crate's connection, which knows their handshakes and
//! slot routing.
//!
//! With a read window (`SIDECAR_READ_WINDOW_MS`) our own socket holds the
//! window in Redis: while entries flow, each read is written behind a
//! `BLPOP` on a key nothing writes (`<group>:window`) that times out after
//! the window, so Redis runs the read when the window ends and the reader
//! wakes once per read, for its reply. Held in the sidecar instead, each
//! read was two wake-ups (the window's timer, then the reply), and a
//! wake-up costs more on a VM than the work of the events it brings.

use std::pin::Pin;
use std::time::Duration;

use redis::{ConnectionAddr, RedisError, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::replies::{self, Read};
use super::resp::{self, ParseError};
use super::{RedisConn, StreamId};
use crate::config::RedisConfig;

/// How long a reply may take beyond the read's own block before the
/// connection is taken for dead (a Redis gone without a reset).
const REPLY_MARGIN: Duration = Duration::from_secs(10);
/// How long connecting (and the AUTH/SELECT handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A reply buffer grown past this by a large batch is let go after it.
const KEEP_BUFFER_BYTES: usize = 1 << 20;
/// How long past its end a window held in Redis may run before the reader
/// cuts it short (CLIENT UNBLOCK from its other connection), as a multiple
/// of the window. Redis checks a blocked command's timeout when it wakes,
/// for a command or its own timer (10 times a second by default): under a
/// steady flow of events that is within a millisecond or two of the
/// window's end, but when the flow stops short an idle Redis would hold the
/// last events up to 100 ms.
const HOLD_OVERRUN: u32 = 1;
/// XREADGROUP commands written at once on our own socket. Redis runs a
/// client's commands in order, the next as soon as the one before it is
/// answered, so a queued read is the one the reader would have written a
/// moment later, and it blocks in Redis before the reader has even looked
/// at the reply before it. One write per eight reads: each write was a
/// loopback send that also woke Redis (~6 % of the sidecar's CPU in the
/// benchmark's scenario c, at one read per event). With a read window
/// (`SIDECAR_READ_WINDOW_MS`) reads are written one at a time: a queued read
/// would answer each entry as it arrives, which the window is there to avoid.
const READS_AHEAD: usize = 8;

/// Why a read failed. The reader backs off and reads again (a new socket
/// if the old one failed), or recreates its group on `NOGROUP`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// From the crate's connection.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// Redis answered with an error line (`NOGROUP No such key ...`).
    #[error("{0}")]
    Server(String),
    /// Connecting, writing or reading failed.
    #[error("redis connection: {0}")]
    Io(#[from] std::io::Error),
    /// Redis closed the connection.
    #[error("redis closed the connection")]
    Closed,
    /// No reply in time.
    #[error("no reply from redis within {0:?}")]
    Timeout(Duration),
    /// Bytes this reader does not understand.
    #[error("unexpected reply from redis: {0}")]
    Protocol(&'static str),
}

impl ReadError {
    /// The error's code as Redis names it (`NOGROUP`), when Redis sent one.
    pub(super) fn code(&self) -> Option<&str> {
        match self {
            ReadError::Redis(e) => e.code(),
            ReadError::Server(line) => line.split(' ').next(),
            _ => None,
        }
    }
}

/// What a reader asks for, every time the same.
pub(super) struct ReadCommand<'a> {
    pub group: &'a str,
    pub consumer: &'a str,
    pub count: usize,
    pub block: Duration,
    pub stream: &'a str,
}

/// A reader's XREADGROUP connection.
pub(super) enum ReadConn {
    /// One server over TCP: our own socket.
    Own(Box<OwnConn>),
    /// Anything else: the crate's connection, the command it sends, and
    /// the history read's arguments ([`ReadConn::read_pending`]).
    Crate(RedisConn, redis::Cmd, Vec<Vec<u8>>),
}

impl ReadConn {
    /// Connects for `read`. `unblock` is the connection that cuts short a
    /// window held in Redis that runs late.
    pub(super) async fn open(
        config: &RedisConfig,
        read: ReadCommand<'_>,
        unblock: RedisConn,
    ) -> Result<ReadConn, ReadError> {
        let block_ms = read.block.as_millis().to_string();
        let count = read.count.to_string();
        let args: [&[u8]; 11] = [
            b"XREADGROUP",
            b"GROUP",
            read.group.as_bytes(),
            read.consumer.as_bytes(),
            b"COUNT",
            count.as_bytes(),
            b"BLOCK",
            block_ms.as_bytes(),
            b"STREAMS",
            read.stream.as_bytes(),
            b">",
        ];
        // This consumer's own entries after an id (XREADGROUP with an id
        // instead of `>`), the id added when asked.
        let history: Vec<Vec<u8>> = [&args[..6], &args[8..10]].concat().into_iter().map(<[u8]>::to_vec).collect();
        let single = !config.cluster && config.urls.len() == 1;
        if single {
            let info = redis::Client::open(config.urls[0].as_str())?.get_connection_info().clone();
            if let ConnectionAddr::Tcp(host, port) = info.addr() {
                let settings = info.redis_settings();
                let ahead = if config.read_window.is_zero() { READS_AHEAD } else { 1 };
                let hold = (!config.read_window.is_zero()).then(|| {
                    let key = format!("{}:window", read.group);
                    let seconds = format!("{:.3}", config.read_window.as_secs_f64());
                    let mut commands = resp::command(&[b"BLPOP", key.as_bytes(), seconds.as_bytes()]);
                    commands.extend(resp::command(&args));
                    Hold { commands, window: config.read_window, unblock, client_id: None }
                });
                let mut own = OwnConn {
                    host: host.clone(),
                    port: *port,
                    username: settings.username().map(str::to_owned),
                    password: settings.password().map(str::to_owned),
                    db: settings.db(),
                    commands: resp::command(&args).repeat(ahead),
                    ahead,
                    reply_within: read.block + REPLY_MARGIN,
                    overdue: Box::pin(tokio::time::sleep(read.block + REPLY_MARGIN)),
                    socket: None,
                    in_flight: 0,
                    buf: Vec::new(),
                    hold,
                    held: false,
                    id: None,
                    abandoned: None,
                    history,
                };
                own.socket = Some(own.connect().await?);
                return Ok(ReadConn::Own(Box::new(own)));
            }
        }
        let mut cmd = redis::Cmd::new();
        for arg in args {
            cmd.arg(arg);
        }
        Ok(ReadConn::Crate(super::connect(config, None).await?, cmd, history))
    }

    /// The entries Redis handed this consumer after `after` and the
    /// reader never saw: after a read failed, reads written on the socket
    /// it gave up on may still have been answered in Redis (a Redis that
    /// hung past the reply's time limit runs them when it wakes), which
    /// moves the group past entries into this consumer's pending list, and
    /// the next `>` read skips them. Read before any new entry, they are
    /// delivered in stream order instead of 30 s later by the claimer,
    /// after the ones behind them (or counted as a hole by `tally`).
    pub(super) async fn read_pending(&mut self, after: StreamId) -> Result<Read, ReadError> {
        match self {
            ReadConn::Own(own) => own.read_pending(after).await,
            ReadConn::Crate(conn, _, history) => {
                let mut cmd = redis::Cmd::new();
                for arg in history.iter() {
                    cmd.arg(arg.as_slice());
                }
                let reply: Value = cmd.arg(after.to_string()).query_async(conn).await?;
                Ok(replies::from_read_reply(reply))
            }
        }
    }

    /// Whether this connection holds a read window in Redis (see the
    /// module's doc); the reader holds it itself otherwise.
    pub(super) fn holds_window(&self) -> bool {
        matches!(self, ReadConn::Own(own) if own.hold.as_ref().is_some_and(|h| h.client_id.is_some()))
    }

    /// Blocks for the next entries (none when the block timed out); with
    /// `hold` (and [`holds_window`](Self::holds_window)), not before the
    /// read window has passed.
    pub(super) async fn read(&mut self, hold: bool) -> Result<Read, ReadError> {
        match self {
            ReadConn::Own(own) => own.read(hold).await,
            ReadConn::Crate(conn, cmd, _) => {
                let reply: Value = cmd.query_async(conn).await?;
                Ok(replies::from_read_reply(reply))
            }
        }
    }
}

/// Our own socket to one Redis server, reconnected on the read after one
/// that failed (or was cancelled midway, which leaves the socket gone).
/// Reads are written [`READS_AHEAD`] at a time (one with a read window);
/// whatever a dropped socket still had queued in Redis goes with it, and an
/// entry Redis had already answered with stays pending for this consumer,
/// as with a single read cut off midway: the claim of idle entries
/// (`claim.rs`) delivers it.
pub(super) struct OwnConn {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    /// The XREADGROUP command, `ahead` times.
    commands: Vec<u8>,
    /// Reads written at once: [`READS_AHEAD`], or one with a read window.
    ahead: usize,
    reply_within: Duration,
    /// Fires when a reply may be overdue: one timer, moved on only when it
    /// fires, instead of one set and cleared for every read (~900
    /// instructions a read, and a read per event without a window).
    overdue: Pin<Box<Sleep>>,
    socket: Option<TcpStream>,
    /// Reads written on `socket` and not answered yet.
    in_flight: usize,
    buf: Vec<u8>,
    /// Holds the read window in Redis, when there is one.
    hold: Option<Hold>,
    /// The read in flight is behind a hold whose reply comes first.
    held: bool,
    /// This socket as Redis knows it (none if CLIENT ID is refused).
    id: Option<ClientRef>,
    /// A socket given up on with reads still queued in Redis: killed from
    /// the next socket before it reads, so those reads cannot take entries
    /// once the reader has moved on.
    abandoned: Option<ClientRef>,
    /// The history read's arguments, without its id.
    history: Vec<Vec<u8>>,
}

/// One of this reader's sockets as Redis knows it: its client id and its
/// address. A kill names both (`CLIENT KILL ID .. ADDR ..`), so it can hit
/// nobody else: a Redis restarted meanwhile numbers its clients afresh, and
/// behind a NAT the address differs and the kill does nothing (the reader
/// then relies on its pending read and the tally, `redis_streams`).
#[derive(Debug, Clone)]
struct ClientRef {
    id: i64,
    addr: String,
}

/// A read window held in Redis: a BLPOP that times out after the window,
/// with the read queued behind it.
struct Hold {
    /// The BLPOP and the XREADGROUP, written together.
    commands: Vec<u8>,
    window: Duration,
    /// Cuts short a hold that runs late.
    unblock: RedisConn,
    /// This socket's client id in Redis, for CLIENT UNBLOCK; none while
    /// holding is off (CLIENT ID refused, or before the first connect).
    client_id: Option<i64>,
}

impl Hold {
    /// Asks Redis to end the hold now (as if it had timed out): an idle
    /// Redis checks the timeout only on its next tick.
    async fn cut_short(&mut self) {
        let Some(id) = self.client_id else { return };
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("UNBLOCK").arg(id);
        match tokio::time::timeout(CONNECT_TIMEOUT, cmd.query_async::<i64>(&mut self.unblock)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "CLIENT UNBLOCK refused: the read window is held in the sidecar from now on");
                self.client_id = None;
            }
            Err(_) => tracing::debug!("CLIENT UNBLOCK got no reply in time"),
        }
    }
}

impl OwnConn {
    async fn read(&mut self, hold: bool) -> Result<Read, ReadError> {
        let mut socket = match self.socket.take() {
            Some(socket) => socket,
            None => self.reconnect().await?,
        };
        let now = Instant::now();
        // A hold's window plus its overrun: when to cut it short.
        let mut cut_at = None;
        if self.in_flight == 0 {
            match self.hold.as_ref().filter(|h| hold && h.client_id.is_some()) {
                Some(h) => {
                    socket.write_all(&h.commands).await?;
                    (self.in_flight, self.held) = (1, true);
                    let cut = now + h.window * (1 + HOLD_OVERRUN);
                    self.overdue.as_mut().reset(cut);
                    cut_at = Some(cut);
                }
                None => {
                    socket.write_all(&self.commands).await?;
                    self.in_flight = self.ahead;
                }
            }
        }
        // Each read is answered within its block of the one before it.
        let (within, due) = (self.reply_within, now + self.reply_within);
        let reply = {
            let (buf, held) = (&mut self.buf, &mut self.held);
            // The hold's own answer first, if it was refused, then the read's.
            let mut reply = std::pin::pin!(async {
                let refused = match std::mem::take(held) {
                    true => reply(&mut socket, buf, resp::hold_reply).await?.err(),
                    false => None,
                };
                Ok::<_, ReadError>((refused, reply(&mut socket, buf, resp::read_reply).await))
            });
            loop {
                tokio::select! {
                    biased;
                    r = &mut reply => break r,
                    () = self.overdue.as_mut() => {
                        let now = Instant::now();
                        if cut_at.is_some_and(|at| now >= at) {
                            cut_at = None;
                            if let Some(h) = self.hold.as_mut() {
                                h.cut_short().await;
                            }
                        } else if now >= due {
                            return Err(ReadError::Timeout(within));
                        }
                        // Set for an earlier read (or the cut): this one is due later.
                        self.overdue.as_mut().reset(cut_at.unwrap_or(due));
                    }
                }
            }
        };
        if cut_at.is_some() {
            // Answered before the cut: moved on to the reply's due time. A
            // timer moved later stays where it was in tokio's wheel and is
            // moved only when that time comes, a wake-up; the next hold moves
            // it earlier again, which takes it out of there. Left at the
            // cut, the next hold's later cut cost a wake-up a read (traced).
            self.overdue.as_mut().reset(due);
        }
        let reply = match reply {
            Ok((refused, reply)) => {
                if let (Some(line), Some(hold)) = (refused, self.hold.as_mut()) {
                    tracing::warn!(error = %line, "the read window's BLPOP was refused: the window is held in the sidecar from now on");
                    hold.client_id = None;
                }
                reply
            }
            Err(e) => Err(e),
        };
        if self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf = Vec::new();
        }
        // An error line (`NOGROUP`) would be the answer to every read still
        // queued, read after the reader has dealt with the first: the socket
        // goes, and the next read starts afresh.
        if reply.is_ok() {
            self.in_flight -= 1;
            self.socket = Some(socket);
        }
        reply
    }

    /// See [`ReadConn::read_pending`]. With reads of this socket still in
    /// flight nothing can have been taken from under it: nothing to read.
    async fn read_pending(&mut self, after: StreamId) -> Result<Read, ReadError> {
        let mut socket = match self.socket.take() {
            Some(socket) if self.in_flight > 0 => {
                self.socket = Some(socket);
                return Ok(Read::default());
            }
            Some(socket) => socket,
            None => self.reconnect().await?,
        };
        let after = after.to_string();
        let mut args: Vec<&[u8]> = self.history.iter().map(Vec::as_slice).collect();
        args.push(after.as_bytes());
        socket.write_all(&resp::command(&args)).await?;
        let read = tokio::time::timeout(self.reply_within, reply(&mut socket, &mut self.buf, resp::read_reply))
            .await
            .map_err(|_| ReadError::Timeout(self.reply_within))??;
        self.socket = Some(socket);
        Ok(read)
    }

    /// A new socket after the last one failed or was dropped; reads that
    /// one left queued in Redis are ended first (see `abandoned`).
    async fn reconnect(&mut self) -> Result<TcpStream, ReadError> {
        if std::mem::take(&mut self.in_flight) > 0 {
            if let Some(id) = self.id.take() {
                self.abandoned = Some(id);
            }
        }
        self.held = false;
        let mut socket = self.connect().await?;
        if let Some(old) = self.abandoned.take() {
            let killed = tokio::time::timeout(CONNECT_TIMEOUT, kill(&mut socket, &mut self.buf, &old)).await;
            match killed.map_err(|_| ReadError::Timeout(CONNECT_TIMEOUT)).and_then(|r| r) {
                Ok(()) => {}
                Err(ReadError::Server(line)) => {
                    tracing::warn!(error = %line, "CLIENT KILL refused: reads left queued on a connection given up on may take entries from under this reader (they are then counted as a hole)");
                }
                Err(e) => {
                    self.abandoned = Some(old);
                    return Err(e);
                }
            }
        }
        Ok(socket)
    }

    async fn connect(&mut self) -> Result<TcpStream, ReadError> {
        let handshake = async {
            let mut socket = TcpStream::connect((self.host.as_str(), self.port)).await?;
            socket.set_nodelay(true)?;
            self.buf.clear();
            if let Some(password) = &self.password {
                let mut args: Vec<&[u8]> = vec![b"AUTH"];
                if let Some(user) = &self.username {
                    args.push(user.as_bytes());
                }
                args.push(password.as_bytes());
                ok(&mut socket, &mut self.buf, &args).await?;
            }
            if self.db != 0 {
                ok(&mut socket, &mut self.buf, &[b"SELECT", self.db.to_string().as_bytes()]).await?;
            }
            socket.write_all(&resp::command(&[b"CLIENT", b"ID"])).await?;
            self.id = match reply(&mut socket, &mut self.buf, resp::integer).await {
                Ok(id) => Some(ClientRef { id, addr: socket.local_addr()?.to_string() }),
                Err(ReadError::Server(line)) => {
                    if self.hold.is_some() {
                        tracing::warn!(error = %line, "CLIENT ID refused: the read window is held in the sidecar");
                    }
                    None
                }
                Err(e) => return Err(e),
            };
            if let Some(hold) = self.hold.as_mut() {
                hold.client_id = self.id.as_ref().map(|c| c.id);
            }
            Ok(socket)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, handshake).await.map_err(|_| ReadError::Timeout(CONNECT_TIMEOUT))?
    }
}

/// Ends `client`'s connection in Redis, if it is still there.
async fn kill(socket: &mut TcpStream, buf: &mut Vec<u8>, client: &ClientRef) -> Result<(), ReadError> {
    let id = client.id.to_string();
    socket
        .write_all(&resp::command(&[b"CLIENT", b"KILL", b"ID", id.as_bytes(), b"ADDR", client.addr.as_bytes()]))
        .await?;
    reply(socket, buf, resp::integer).await.map(|_| ())
}

/// Sends a command whose answer is a status (`+OK`); an error line fails.
async fn ok(socket: &mut TcpStream, buf: &mut Vec<u8>, args: &[&[u8]]) -> Result<(), ReadError> {
    socket.write_all(&resp::command(args)).await?;
    reply(socket, buf, |b| resp::status(b).map(|n| ((), n))).await
}

/// Reads until `parse` finds a whole reply in `buf`, and takes it out.
async fn reply<T>(
    socket: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<(T, usize), ParseError>,
) -> Result<T, ReadError> {
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Ok((value, used)) => {
                    buf.drain(..used);
                    return Ok(value);
                }
                Err(ParseError::Incomplete) => {}
                Err(ParseError::Server(line)) => {
                    // The error line is the whole reply.
                    buf.clear();
                    return Err(ReadError::Server(line));
                }
                Err(ParseError::Invalid(what)) => return Err(ReadError::Protocol(what)),
            }
        }
        buf.reserve(16 * 1024);
        if socket.read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers the first read late, within its time, and never the second.
    async fn slow_server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let port = listener.local_addr().expect("an address").port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accepts");
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b":7\r\n").await; // CLIENT ID
            let _ = socket.read(&mut buf).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
            let _ = socket.write_all(b"*-1\r\n").await; // the block ran out: no entries
            let _ = socket.read(&mut buf).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        port
    }

    #[tokio::test]
    async fn each_read_has_its_own_time_for_a_reply_and_a_silent_server_ends_it() {
        let port = slow_server().await;
        let within = Duration::from_millis(300);
        let mut conn = OwnConn {
            host: "127.0.0.1".into(),
            port,
            username: None,
            password: None,
            db: 0,
            commands: resp::command(&[b"XREADGROUP"]),
            ahead: 1,
            reply_within: within,
            overdue: Box::pin(tokio::time::sleep(within)),
            socket: None,
            in_flight: 0,
            buf: Vec::new(),
            hold: None,
            held: false,
            id: None,
            abandoned: None,
            history: Vec::new(),
        };
        assert_eq!(conn.read(false).await.expect("answered in time").len(), 0);
        // The timer was set for the first read and fires first at 300 ms:
        // the second, written at ~150 ms, still has until ~450.
        let started = Instant::now();
        let second = conn.read(false).await;
        let waited = started.elapsed();
        assert!(matches!(second, Err(ReadError::Timeout(t)) if t == within), "{second:?}");
        assert!(waited >= within && waited < Duration::from_secs(2), "gave up after {waited:?}");
        assert!(conn.socket.is_none(), "a connection that timed out is not read again");
    }
}
