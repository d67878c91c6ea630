//! The one JSON line a run prints, and the /proc readings of the servers
//! under test that go into it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::client::Shared;
use crate::publisher::Published;
use crate::stats::{self, Tally};
use crate::sys::{self, Cpu};
use crate::typing::TypingPublished;
use crate::Args;

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Prints (and writes to `--out`) a line saying why the run could not start.
pub fn error_line(args: &Args, msg: &str) {
    let line = json!({"label": args.label, "error": msg}).to_string();
    println!("{line}");
    if let Some(out) = &args.out {
        let _ = std::fs::write(out, format!("{line}\n"));
    }
}

/// The server processes under test and their readings.
pub struct Servers {
    pids: Vec<String>,
    /// Redis (`--redis-pid`): its CPU in the window, work every instance
    /// adds to the machine the servers share.
    redis_pid: Option<String>,
    rss_before_kb: u64,
    cpu_start: Cpu,
    window_start: Snapshot,
    window_end: Snapshot,
    rss_end_kb: u64,
    hwm_kb: Vec<u64>,
}

/// CPU readings taken at each end of the window.
#[derive(Default)]
struct Snapshot {
    servers: Cpu,
    /// The servers' threads by name, summed over the processes.
    threads: BTreeMap<String, Cpu>,
    redis: Option<Cpu>,
    /// The machine's busy and stolen seconds (`sys::machine_cpu`).
    machine: Option<(f64, f64)>,
}

impl Servers {
    pub fn new(pids: Vec<String>, redis_pid: Option<String>) -> Servers {
        Servers {
            pids,
            redis_pid,
            rss_before_kb: 0,
            cpu_start: Cpu::default(),
            window_start: Snapshot::default(),
            window_end: Snapshot::default(),
            rss_end_kb: 0,
            hwm_kb: Vec::new(),
        }
    }

    fn cpu(&self) -> Cpu {
        self.pids.iter().filter_map(|p| sys::cpu(p)).fold(Cpu::default(), |a, c| a.add(&c))
    }

    fn snapshot(&self) -> Snapshot {
        let mut threads = BTreeMap::<String, Cpu>::new();
        for (name, cpu) in self.pids.iter().flat_map(|p| sys::thread_cpu(p)) {
            let sum = threads.entry(name).or_default();
            *sum = sum.add(&cpu);
        }
        Snapshot {
            servers: self.cpu(),
            threads,
            redis: self.redis_pid.as_deref().and_then(sys::cpu),
            machine: sys::machine_cpu(),
        }
    }

    fn rss_kb(&self) -> u64 {
        self.pids.iter().filter_map(|p| sys::status_kb(p, "VmRSS")).sum()
    }

    /// Reads memory and CPU before any client connects.
    pub fn before(&mut self) -> Result<(), String> {
        if let Some(p) = self.pids.iter().find(|p| sys::status_kb(p, "VmRSS").is_none()) {
            return Err(format!("--server-pid {p}: no such process"));
        }
        if let Some(p) = self.redis_pid.as_ref().filter(|p| sys::cpu(p).is_none()) {
            return Err(format!("--redis-pid {p}: no such process"));
        }
        self.rss_before_kb = self.rss_kb();
        self.cpu_start = self.cpu();
        Ok(())
    }

    pub fn window_start(&mut self) {
        self.window_start = self.snapshot();
    }

    pub fn window_end(&mut self) {
        self.window_end = self.snapshot();
        self.rss_end_kb = self.rss_kb();
        self.hwm_kb = self.pids.iter().map(|p| sys::status_kb(p, "VmHWM").unwrap_or(0)).collect();
    }

    fn json(&self, window_s: f64, delivered: u64, joined: u64) -> Value {
        if self.pids.is_empty() {
            return Value::Null;
        }
        let w = self.window_end.servers.since(&self.window_start.servers);
        let per_conn = |kb: u64| (kb * 1024).checked_div(joined);
        let per_delivery = |cpu: &Cpu| (delivered > 0).then(|| round(cpu.total() * 1e6 / delivered as f64, 2));
        // Threads alive at both ends of the window (pool threads come and go).
        let threads: serde_json::Map<String, Value> = self
            .window_end
            .threads
            .iter()
            .filter_map(|(name, end)| {
                let t = end.since(self.window_start.threads.get(name)?);
                Some((name.clone(), json!({"cpu_s": round(t.total(), 3), "us_per_delivery": per_delivery(&t)})))
            })
            .collect();
        json!({
            "pids": self.pids,
            "cpu_s": round(w.total(), 2),
            "cpu_user_s": round(w.user_s, 2),
            "cpu_system_s": round(w.system_s, 2),
            "cpu_pct": round(w.total() / window_s * 100.0, 1),
            "cpu_s_run": round(self.cpu().since(&self.cpu_start).total(), 2),
            "us_per_delivery": per_delivery(&w),
            "threads": threads,
            "rss_kb_before": self.rss_before_kb,
            "rss_kb": self.rss_end_kb,
            "hwm_kb": self.hwm_kb.iter().sum::<u64>(),
            "hwm_kb_each": self.hwm_kb,
            "bytes_per_conn": per_conn(self.rss_end_kb),
            "bytes_per_conn_marginal": per_conn(self.rss_end_kb.saturating_sub(self.rss_before_kb)),
        })
    }

    /// Redis's CPU and the machine's load in the window: what the servers
    /// shared their cores with.
    fn neighbours_json(&self, window_s: f64, events: u64) -> (Value, Value) {
        let (a, b) = (&self.window_start, &self.window_end);
        let redis = a.redis.zip(b.redis).map(|(a, b)| {
            let r = b.since(&a);
            json!({"cpu_s": round(r.total(), 3),
                   "us_per_event": (events > 0).then(|| round(r.total() * 1e6 / events as f64, 2))})
        });
        let machine = a.machine.zip(b.machine).map(|((busy0, steal0), (busy1, steal1))| {
            json!({"busy_cores": round((busy1 - busy0) / window_s, 3),
                   "steal_cores": round((steal1 - steal0) / window_s, 3)})
        });
        (json!(redis), json!(machine))
    }
}

/// Everything a run measured.
pub struct Run<'a> {
    pub args: &'a Args,
    pub sh: &'a Shared,
    pub threads: usize,
    pub nofile: u64,
    pub sources: usize,
    pub connect_s: f64,
    pub window_s: f64,
    pub drain_s: f64,
    pub disconnects: u64,
    pub chat: &'a Published,
    pub typing: Option<&'a TypingPublished>,
    pub tally: &'a Tally,
    pub server: &'a Servers,
    pub self_cpu: Option<Cpu>,
    /// Latency of the Redis hop alone (`--redis-probe`).
    pub redis_hop: Option<&'a hdrhistogram::Histogram<u64>>,
}

impl Run<'_> {
    /// The JSON line, and whether the run was clean (every client joined,
    /// something delivered, nothing lost, repeated or failed to publish).
    pub fn render(&self) -> (String, bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let (a, t, c) = (self.args, self.tally, self.chat);
        let joined = self.sh.joined.load(Relaxed);
        let missing = c.expected.saturating_sub(t.measured);
        let delivered = t.in_window + t.typing_frames;
        let typing = self.typing.map(|p| {
            let reduction = match p.naive_frames {
                0 => None,
                n => Some(round((1.0 - t.typing_frames as f64 / n as f64) * 100.0, 1)),
            };
            json!({
                "typists": a.rooms * a.typists_per_room,
                "typing_events_published": p.typing_events,
                "typing_events_measured": p.typing_measured,
                "typing_events_per_sec": round(p.typing_measured as f64 / self.window_s, 1),
                "naive_frames": p.naive_frames,
                "frames_received": t.typing_frames,
                "frames_received_total": t.typing_frames_total,
                "frame_reduction_pct": reduction,
                "bursts_measured": p.bursts_measured,
                "first_indicator_ms": stats::summary(&t.first_indicator),
            })
        });
        let mut line = json!({
            "label": a.label,
            "protocol": format!("{:?}", a.protocol).to_lowercase(),
            "instances": self.sh.targets.len(),
            "connections": a.connections,
            "rooms": a.rooms,
            "rate": a.rate,
            "warmup_s": a.warmup,
            "window_s": round(self.window_s, 3),
            "joined": joined,
            "connect_failures": self.sh.failed.load(Relaxed),
            "join_failures": self.sh.join_failed.load(Relaxed),
            "connect_s": round(self.connect_s, 2),
            "disconnects": self.disconnects,
            "errors": self.sh.errors(),
            "events_published": c.events,
            "events_measured": c.measured,
            "publish_rate": round(c.measured as f64 / self.window_s, 1),
            "publish_errors": c.errors,
            "publish_first_error": c.first_error,
            "expected_deliveries": c.expected,
            "received_deliveries": t.measured,
            "missing": missing,
            "missing_pct": if c.expected > 0 { round(missing as f64 * 100.0 / c.expected as f64, 3) } else { 0.0 },
            "duplicates": t.repeats,
            "skipped": t.skipped,
            "unparsed": t.unparsed,
            "clock_negative": t.negative,
            "received_total": t.total,
            "delivered_per_sec": round(t.in_window as f64 / self.window_s, 1),
            "offered_per_sec": round(c.expected as f64 / self.window_s, 1),
            "drain_s": round(self.drain_s, 2),
            "latency_ms": stats::summary(&t.latency),
            "typing": typing,
            "redis_hop_ms": self.redis_hop.map(stats::summary),
            "server": self.server.json(self.window_s, delivered, joined),
            "loadgen": {
                "threads": self.threads,
                "nofile": self.nofile,
                "source_ips": self.sources,
                "cpu_pct": self.self_cpu.map(|c| round(c.total() / self.window_s * 100.0, 1)),
            },
            "finished_at": sys::iso8601(sys::wall_ns()),
        });
        (line["redis"], line["machine"]) = self.server.neighbours_json(self.window_s, c.measured);
        // Beside the protocol (one json! more would pass the macro's recursion limit).
        line["stateful"] = json!(a.stateful);
        line["acks_sent"] = json!(a.stateful.then(|| self.sh.acks_sent.load(Relaxed)));
        let healthy = joined == a.connections as u64
            && t.total + t.typing_frames_total > 0
            && missing == 0
            && t.repeats == 0
            && c.errors == 0
            && self.disconnects == 0;
        (line.to_string(), healthy)
    }
}
