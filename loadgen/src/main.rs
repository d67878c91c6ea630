//! `signalr-loadgen`: N SignalR WebSocket clients (JSON, MessagePack, or
//! both) spread over R rooms and over one or more sidecar instances, an
//! XADD publisher at E events/s (or the typing trace), and the results of
//! the run as one JSON line: publish-to-receive latency from an
//! HdrHistogram, deliveries/s, losses and duplicates, and the servers' CPU
//! time and memory from /proc.
//!
//! Phases: ramp the clients at `--connect-rate`; warm up (`--warmup` s,
//! events flow, nothing counted); measure (`--duration` s); stop
//! publishing; drain (up to `--drain` s for measured events in flight);
//! report. With `--rate 0` and no typing trace it is an idle run: the
//! clients hold their connections and the servers' memory is read.
//!
//! # Layout
//! - `client`: one simulated client and the counters all clients share.
//! - `acks`: the Acks of a stateful client (`--stateful`).
//! - `negotiate`: the negotiate request on the raw connection.
//! - `wire`: the hub protocols, client side (JSON and MessagePack).
//! - `msgpack`: the MessagePack reader `wire` needs.
//! - `publisher`: chat messages at a fixed rate (XADD).
//! - `typing`: the typing trace's typists and what they publish.
//! - `probe`: the Redis hop alone (a blocked XREAD reader), with `--redis-probe`.
//! - `stats`: latency histograms and delivery counters per thread.
//! - `report`: the JSON line.
//! - `sys`: descriptor limit, source sockets, clock, /proc.

mod acks;
mod client;
mod msgpack;
mod negotiate;
mod probe;
mod publisher;
mod report;
mod stats;
mod sys;
mod trace;
mod typing;
mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use client::{ProtocolMix, Shared, Target};

/// Connections per loopback source address (each has ~28k ephemeral
/// ports per server port with the default range).
const CONNS_PER_SOURCE: usize = 25_000;

#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "Load generator for signalr-sidecar: SignalR clients, a Redis Streams publisher, latency and cost"
)]
pub struct Args {
    /// Sidecar base URL; repeat (or comma-separate) for several instances:
    /// client i connects to URL i mod n.
    #[arg(long = "url", value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub urls: Vec<String>,
    /// Hub path.
    #[arg(long, default_value = "/hubs/chat")]
    pub hub: String,
    /// Hub protocol of the clients.
    #[arg(long, value_enum, default_value = "json")]
    pub protocol: ProtocolMix,
    /// Clients negotiate stateful reconnect, as `@microsoft/signalr` with
    /// `withStatefulReconnect()`: `useStatefulReconnect=true`, handshake
    /// version 2, and an Ack of the sequenced messages received at most
    /// once a second per connection.
    #[arg(long)]
    pub stateful: bool,
    /// Client connections.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Rooms; client i joins room i mod R.
    #[arg(long, default_value_t = 50)]
    pub rooms: usize,
    /// Chat messages per second (0 without a typing trace: an idle run).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Measurement window, seconds (an idle run's hold).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Warm-up before the window, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
    /// Longest wait after the window for measured events in flight, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Redis the sidecar reads.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Stream to XADD to.
    #[arg(long, default_value = "events:chat")]
    pub stream: String,
    /// `MAXLEN ~` on each XADD (0: none).
    #[arg(long, default_value_t = 0)]
    pub maxlen: u64,
    /// Length of a chat message's `content`.
    #[arg(long, default_value_t = 200)]
    pub content_bytes: usize,
    /// New connections per second while ramping.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Limit for one client's connect, negotiate, handshake and join, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub connect_timeout: f64,
    /// Loopback source addresses 127.0.0.1..N (0: one per 25,000 connections).
    #[arg(long, default_value_t = 0)]
    pub source_ips: usize,
    /// The first source address is 127.0.0.(1 + this): parallel generators
    /// take distinct addresses.
    #[arg(long, default_value_t = 0)]
    pub source_offset: usize,
    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Server process(es) to read CPU time and memory from (/proc).
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// The Redis server's process, to read its CPU time in the window.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Client Ping period, seconds (0: none); the official clients use 15.
    #[arg(long, default_value_t = 15.0)]
    pub keepalive: f64,
    /// WebSocket read buffer per client, bytes.
    #[arg(long, default_value_t = 4096)]
    pub ws_read_buffer: usize,
    /// Room names are <prefix>0 .. <prefix>R-1.
    #[arg(long, default_value = "room-")]
    pub room_prefix: String,
    /// Client method of chat messages.
    #[arg(long, default_value = "ReceiveMessage")]
    pub message_method: String,
    /// Client method of typing indicators.
    #[arg(long, default_value = "UserTyping")]
    pub typing_method: String,
    /// Typing trace instead of the chat publisher (see `typing`).
    #[arg(long)]
    pub typing_trace: bool,
    /// Typists per room in the typing trace.
    #[arg(long, default_value_t = 10)]
    pub typists_per_room: usize,
    /// Seed of the typing trace.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also time the Redis hop alone: a reader blocked on the stream.
    #[arg(long)]
    pub redis_probe: bool,
    /// Free-form scenario name copied into the results.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Also write the JSON line to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit 3 unless every client joined, something was delivered, and
    /// nothing was lost or duplicated.
    #[arg(long)]
    pub strict: bool,
}

fn main() {
    let args = Args::parse();
    let nofile = sys::raise_nofile(1 << 20);
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        n => n,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("signalr-loadgen: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(run(args, threads, nofile));
    // The kernel closes the clients' sockets faster than 100k tasks would.
    std::process::exit(code);
}

/// `host:port` of an http:// or ws:// URL.
fn host_port(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| format!("--url {url}: only http:// and ws:// are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Ok((h.to_string(), p.parse().map_err(|_| format!("--url {url}: bad port"))?)),
        _ if !authority.is_empty() => Ok((authority.to_string(), 80)),
        _ => Err(format!("--url {url}: no host")),
    }
}

async fn resolve(url: &str) -> Result<Target, String> {
    let (host, port) = host_port(url)?;
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host((host.as_str(), port)).await.map_err(|e| format!("{host}: {e}"))?.collect();
    let addr = *addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).ok_or(format!("{host}: no address"))?;
    Ok(Target { addr, host: format!("{host}:{port}") })
}

async fn run(args: Args, threads: usize, nofile: u64) -> i32 {
    let fail = |msg: String| {
        report::error_line(&args, &msg);
        2
    };
    if args.connections == 0 || args.rooms == 0 || args.urls.is_empty() {
        return fail("--connections, --rooms and --url need at least one each".into());
    }
    if args.connections as u64 + 64 > nofile {
        eprintln!("[loadgen] warning: descriptor limit {nofile} is below {} connections", args.connections);
    }
    let mut targets = Vec::new();
    for url in &args.urls {
        match resolve(url).await {
            Ok(t) => targets.push(t),
            Err(e) => return fail(e),
        }
    }
    let loopback = targets.iter().all(|t| t.addr.is_ipv4() && t.addr.ip().is_loopback());
    let n_sources = match args.source_ips {
        0 if loopback => args.connections.div_ceil(CONNS_PER_SOURCE * targets.len()),
        0 => 1,
        n => n,
    };
    let sources: Vec<Option<IpAddr>> = match (n_sources, args.source_offset) {
        (0 | 1, 0) => vec![None],
        (n, first) => (first..(first + n.max(1)).min(254))
            .map(|i| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8))))
            .collect(),
    };
    let pids: Vec<String> = args.server_pids.iter().map(u32::to_string).collect();
    let mut server = report::Servers::new(pids, args.redis_pid.map(|p| p.to_string()));
    if let Err(e) = server.before() {
        return fail(e);
    }

    let publishing = args.rate > 0.0 || args.typing_trace;
    let redis = if publishing {
        let client = match redis::Client::open(args.redis.as_str()) {
            Ok(c) => c,
            Err(e) => return fail(format!("--redis {}: {e}", args.redis)),
        };
        match tokio::time::timeout(Duration::from_secs(10), client.get_multiplexed_async_connection()).await {
            Ok(Ok(c)) => Some(c),
            Ok(Err(e)) => return fail(format!("redis {}: {e}", args.redis)),
            Err(_) => return fail(format!("redis {}: no answer in 10 s", args.redis)),
        }
    } else {
        None
    };

    let rooms: Vec<String> = (0..args.rooms).map(|r| format!("{}{r}", args.room_prefix)).collect();
    let board = args.typing_trace.then(|| Arc::new(typing::Board::new(args.rooms, args.typists_per_room)));
    let sh = Arc::new(Shared::new(
        targets,
        args.hub.clone(),
        rooms,
        args.protocol,
        args.stateful,
        Duration::from_secs_f64(args.connect_timeout),
        (args.keepalive > 0.0).then(|| Duration::from_secs_f64(args.keepalive)),
        WebSocketConfig::default()
            .read_buffer_size(args.ws_read_buffer)
            .write_buffer_size(0)
            .max_message_size(Some(16 << 20))
            .max_frame_size(Some(16 << 20)),
        args.message_method.clone(),
        args.typing_method.clone(),
        board.clone(),
    ));

    // ---- ramp
    eprintln!(
        "[loadgen] {} {:?}{} clients -> {} instance(s), {} rooms, {} source address(es), {threads} threads, nofile {nofile}",
        args.connections,
        args.protocol,
        if args.stateful { " stateful" } else { "" },
        sh.targets.len(),
        args.rooms,
        sources.len()
    );
    let ramp = Instant::now();
    let spawner = {
        let (sh, sources, n, rate) = (sh.clone(), sources.clone(), args.connections, args.connect_rate.max(1.0));
        tokio::spawn(async move {
            for i in 0..n {
                let due = Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_sub(ramp.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                tokio::spawn(client::run(sh.clone(), i, sources[i % sources.len()]));
            }
        })
    };
    let limit =
        Duration::from_secs_f64(args.connections as f64 / args.connect_rate.max(1.0) + args.connect_timeout + 5.0);
    let mut last_note = Instant::now();
    loop {
        let settled = sh.joined.load(Relaxed) + sh.failed.load(Relaxed);
        if settled >= args.connections as u64 {
            break;
        }
        if ramp.elapsed() > limit {
            eprintln!("[loadgen] ramp limit reached: {settled} of {} clients settled", args.connections);
            break;
        }
        if last_note.elapsed() > Duration::from_secs(5) {
            eprintln!("[loadgen] ramp: {} joined, {} failed", sh.joined.load(Relaxed), sh.failed.load(Relaxed));
            last_note = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = spawner.await;
    let connect_s = ramp.elapsed().as_secs_f64();
    let joined = sh.joined.load(Relaxed);
    eprintln!("[loadgen] ramp done in {connect_s:.1} s: {joined} joined, {} failed", sh.failed.load(Relaxed));
    if joined == 0 {
        return fail(format!("no client could connect and join: {:?}", sh.errors()));
    }

    // ---- warm-up, window, drain
    let stop = Arc::new(AtomicBool::new(false));
    let sink = publisher::Sink { stream: args.stream.clone(), maxlen: args.maxlen };
    enum Job {
        Chat(tokio::task::JoinHandle<publisher::Published>),
        Typing(tokio::task::JoinHandle<typing::TypingPublished>),
    }
    let job = redis.map(|con| match &board {
        Some(b) => Job::Typing(tokio::spawn(typing::run(
            con,
            sink.clone(),
            b.clone(),
            args.seed,
            args.content_bytes,
            sh.clone(),
            stop.clone(),
        ))),
        None => Job::Chat(tokio::spawn(publisher::run(
            con,
            sink.clone(),
            args.rate,
            args.content_bytes,
            sh.clone(),
            stop.clone(),
        ))),
    });
    let probe = (publishing && args.redis_probe)
        .then(|| redis::Client::open(args.redis.as_str()).ok())
        .flatten()
        .map(|c| tokio::spawn(probe::run(c, args.stream.clone(), stop.clone())));
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    server.window_start();
    let self0 = sys::cpu("self");
    let window = Instant::now();
    stats::open_window(sys::wall_ns());
    eprintln!("[loadgen] measuring for {} s", args.duration);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    stats::close_window(sys::wall_ns());
    let window_s = window.elapsed().as_secs_f64();
    server.window_end();
    let self_cpu = sys::cpu("self").zip(self0).map(|(b, a)| b.since(&a));
    let disconnects = sh.disconnects.load(Relaxed);

    stop.store(true, Relaxed);
    let (chat, typing) = match job {
        Some(Job::Chat(h)) => (h.await.unwrap_or_default(), None),
        Some(Job::Typing(h)) => {
            let mut t = h.await.unwrap_or_default();
            (std::mem::take(&mut t.chat), Some(t))
        }
        None => (publisher::Published::default(), None),
    };
    let redis_hop = match probe {
        Some(h) => match h.await {
            Ok(Ok(hist)) => Some(hist),
            Ok(Err(e)) => {
                eprintln!("[loadgen] redis probe: {e}");
                None
            }
            Err(_) => None,
        },
        None => None,
    };
    let drain = Instant::now();
    while drain.elapsed().as_secs_f64() < args.drain && stats::merged().measured < chat.expected {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if typing.is_some() {
        // Trailing edges and server-side stops come up to a window later.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let drain_s = drain.elapsed().as_secs_f64();
    sh.stopping.store(true, Relaxed);

    let tally = stats::merged();
    let run = report::Run {
        args: &args,
        sh: &sh,
        threads,
        nofile,
        sources: sources.len(),
        connect_s,
        window_s,
        drain_s,
        disconnects,
        chat: &chat,
        typing: typing.as_ref(),
        tally: &tally,
        server: &server,
        self_cpu,
        redis_hop: redis_hop.as_ref(),
    };
    let (line, healthy) = run.render();
    println!("{line}");
    if let Some(out) = &args.out {
        if let Err(e) = std::fs::write(out, format!("{line}\n")) {
            eprintln!("[loadgen] cannot write {}: {e}", out.display());
            return 1;
        }
    }
    if args.strict && !healthy {
        eprintln!("[loadgen] --strict: the run lost, duplicated or delivered nothing, or clients failed");
        return 3;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(host_port("http://127.0.0.1:8080/x"), Ok(("127.0.0.1".into(), 8080)));
        assert_eq!(host_port("ws://h"), Ok(("h".into(), 80)));
        assert!(host_port("https://h").is_err());
    }
}
