//! The continuity checker (CONTRACT section 14): for every client and every
//! event published for its room, the event was received exactly once, or
//! it was published while that client was not Connected; never twice; in
//! room order.
//!
//! A client is Connected from the moment a join of its room completed (the
//! first one, or the re-join after `reconnected`) until its next
//! `reconnecting` or `close`. A stateful resume fires neither, so a resumed
//! client stays Connected throughout and is owed every event. Publish and
//! join times come from two processes' wall clocks on this machine; an
//! event published within [`TOLERANCE_MS`] of a transition is excused.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use super::affinity::Stats;

/// The slack around each transition, in ms.
pub const TOLERANCE_MS: f64 = 300.0;

/// How soon after a missed event a Close from the server must come for
/// the client to count as told ([`Expect::close_tells`]): the drain
/// window the closes are spread over, plus the 5 s a reader may take to
/// find Redis again and see the hole.
pub const TOLD_WITHIN_MS: f64 = (super::continuity::DRAIN_WINDOW_SECONDS * 1000 + 5000) as f64;

/// One client of the scenario.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    pub name: String,
    pub room: String,
    /// Built with `withStatefulReconnect()` (and automatic reconnect).
    pub stateful: bool,
}

/// One publish attempt.
#[derive(Clone, Debug)]
pub struct Published {
    pub room: String,
    pub seq: u64,
    /// Wall-clock ms just before the XADD.
    pub at: f64,
    /// The XADD answered OK (otherwise the event may or may not exist).
    pub sure: bool,
}

/// What the checker found for one client.
#[derive(Debug, Default)]
pub struct ClientReport {
    pub name: String,
    pub room: String,
    pub stateful: bool,
    /// Messages received, duplicates included.
    pub received: usize,
    /// Events owed while Connected (tolerance applied).
    pub owed: usize,
    /// Owed while Connected and never received.
    pub missed_connected: Vec<u64>,
    /// Of those, the ones a Close from the server followed within
    /// [`TOLD_WITHIN_MS`]: the client was told to refetch.
    pub missed_then_told: Vec<u64>,
    /// Published (surely) after the first join and never received.
    pub missed_total: Vec<u64>,
    /// Received more than once.
    pub duplicates: Vec<u64>,
    /// Received for the first time after a later one of the room.
    pub out_of_order: Vec<u64>,
    /// Received but never published for this room.
    pub unexpected: Vec<String>,
    /// Connected intervals, ms from the scenario start (end None: still).
    pub intervals: Vec<(f64, Option<f64>)>,
    /// Full reconnects (`reconnected`).
    pub reconnects: usize,
    /// Stateful resumes attempted, completed, and refused (followed by
    /// `reconnecting`/`close` instead).
    pub resumes: (usize, usize, usize),
    pub rejoin_failures: usize,
    /// The error of each `reconnecting`/`close`, as the client saw it.
    pub reasons: Vec<String>,
    pub ended_connected: bool,
    publish_times: HashMap<u64, f64>,
}

/// What a test demands beyond the rule every test holds (no silent miss
/// while Connected, no duplicate, room order, everyone Connected at the end).
#[derive(Clone, Copy, Debug, Default)]
pub struct Expect {
    /// Stateful clients miss nothing at all after their first join.
    pub stateful_miss_none: bool,
    /// Nobody misses anything after their first join.
    pub everyone_miss_none: bool,
    /// A miss while Connected is not silent when a Close from the server
    /// ends that connection soon after (CONTRACT section 14: "or it makes
    /// the client know"), as when owed entries are gone.
    pub close_tells: bool,
}

/// The verdict on a whole scenario.
pub struct Report {
    pub clients: Vec<ClientReport>,
    pub published: usize,
    pub unsure: usize,
    pub proxy: Stats,
    pub notes: Vec<String>,
}

/// Judges `events` (the driver's output, in arrival order) against
/// `published`.
pub fn check(
    specs: &[ClientSpec],
    published: &[Published],
    events: &[Value],
    t0: f64,
    proxy: Stats,
    notes: Vec<String>,
) -> Report {
    let clients = specs.iter().map(|spec| check_client(spec, published, events, t0)).collect();
    Report { clients, published: published.len(), unsure: published.iter().filter(|p| !p.sure).count(), proxy, notes }
}

fn check_client(spec: &ClientSpec, published: &[Published], events: &[Value], t0: f64) -> ClientReport {
    let mut c = ClientReport {
        name: spec.name.clone(),
        room: spec.room.clone(),
        stateful: spec.stateful,
        ..Default::default()
    };
    // (start, end, ended by a Close from the server)
    let mut intervals: Vec<(f64, f64, bool)> = Vec::new();
    let mut open: Option<f64> = None;
    let mut resuming = false;
    let mut arrivals: Vec<u64> = Vec::new();
    for e in events.iter().filter(|e| e["name"] == spec.name.as_str()) {
        let at = e["at"].as_f64().unwrap_or(f64::NAN);
        match e["event"].as_str().unwrap_or("") {
            "message" => {
                let payload = &e["args"][0];
                match (payload["sequence_number"].as_u64(), payload["request_id"].as_str()) {
                    (Some(seq), Some(room)) if room == spec.room => arrivals.push(seq),
                    _ => c.unexpected.push(payload.to_string()),
                }
            }
            "joined" => {
                open.get_or_insert(at);
            }
            "reconnecting" | "close" => {
                c.reasons.push(format!(
                    "{}: {}",
                    e["event"].as_str().unwrap_or(""),
                    e["error"].as_str().unwrap_or("no error")
                ));
                // The TS client reports a Close message as no error, or as
                // "Server returned an error on close: ..."; a dropped socket
                // as the WebSocket's close status.
                let told = e["error"].as_str().is_none_or(|m| m.starts_with("Server returned an error on close"));
                if let Some(s) = open.take() {
                    intervals.push((s, at, told));
                }
                if std::mem::take(&mut resuming) {
                    c.resumes.2 += 1;
                }
            }
            "resuming" => {
                c.resumes.0 += 1;
                resuming = true;
            }
            "resumed" => {
                c.resumes.1 += 1;
                resuming = false;
            }
            "reconnected" => c.reconnects += 1,
            "rejoin_failed" => c.rejoin_failures += 1,
            _ => {}
        }
    }
    c.ended_connected = open.is_some();
    if let Some(s) = open {
        intervals.push((s, f64::INFINITY, false));
    }
    c.intervals = intervals.iter().map(|&(s, e, _)| (s - t0, e.is_finite().then_some(e - t0))).collect();
    c.received = arrivals.len();

    let mut counts: HashMap<u64, usize> = HashMap::new();
    let mut highest: Option<u64> = None;
    for &seq in &arrivals {
        let n = counts.entry(seq).or_default();
        *n += 1;
        if *n == 1 && highest.is_some_and(|h| seq < h) {
            c.out_of_order.push(seq);
        }
        highest = highest.max(Some(seq));
    }
    let first_join = intervals.first().map(|i| i.0).unwrap_or(f64::INFINITY);
    let mine: Vec<&Published> = published.iter().filter(|p| p.room == spec.room).collect();
    for p in &mine {
        c.publish_times.insert(p.seq, p.at - t0);
        let n = counts.get(&p.seq).copied().unwrap_or(0);
        if n > 1 {
            c.duplicates.push(p.seq);
        }
        if !p.sure {
            continue;
        }
        if let Some(&(_, end, told)) =
            intervals.iter().find(|&&(s, e, _)| p.at >= s + TOLERANCE_MS && p.at <= e - TOLERANCE_MS)
        {
            c.owed += 1;
            if n == 0 {
                c.missed_connected.push(p.seq);
                if told && end - p.at <= TOLD_WITHIN_MS {
                    c.missed_then_told.push(p.seq);
                }
            }
        }
        if p.at >= first_join + TOLERANCE_MS && n == 0 {
            c.missed_total.push(p.seq);
        }
    }
    for seq in counts.keys() {
        if !mine.iter().any(|p| p.seq == *seq) {
            c.unexpected.push(format!("{} #{seq} never published", spec.room));
        }
    }
    c
}

impl ClientReport {
    /// Why this client fails `expect`, one phrase each; empty when it passes.
    pub fn failures(&self, expect: Expect) -> Vec<String> {
        let mut f = Vec::new();
        let silent = self.silent(expect);
        if !silent.is_empty() {
            f.push(format!("silently missed {} while Connected", silent.len()));
        }
        if !self.duplicates.is_empty() {
            f.push(format!("{} duplicates", self.duplicates.len()));
        }
        if !self.out_of_order.is_empty() {
            f.push(format!("{} out of order", self.out_of_order.len()));
        }
        if !self.unexpected.is_empty() {
            f.push(format!("{} unexpected", self.unexpected.len()));
        }
        if !self.ended_connected {
            f.push("not Connected at the end".into());
        }
        let must_miss_none = expect.everyone_miss_none || (expect.stateful_miss_none && self.stateful);
        if must_miss_none && !self.missed_total.is_empty() {
            f.push(format!("missed {} in total", self.missed_total.len()));
        }
        f
    }

    /// The misses while Connected that `expect` does not excuse.
    pub fn silent(&self, expect: Expect) -> Vec<u64> {
        let told = |s: &u64| expect.close_tells && self.missed_then_told.contains(s);
        self.missed_connected.iter().copied().filter(|s| !told(s)).collect()
    }

    fn seqs_with_times(&self, seqs: &[u64]) -> String {
        let shown: Vec<String> = seqs
            .iter()
            .take(12)
            .map(|s| match self.publish_times.get(s) {
                Some(t) => format!("#{s}@{:.2}s", t / 1000.0),
                None => format!("#{s}"),
            })
            .collect();
        let more = if seqs.len() > 12 { format!(" (+{} more)", seqs.len() - 12) } else { String::new() };
        format!("[{}]{more}", shown.join(" "))
    }
}

impl Report {
    /// Every failing client with its reasons.
    pub fn failures(&self, expect: Expect) -> Vec<(&ClientReport, Vec<String>)> {
        self.clients.iter().map(|c| (c, c.failures(expect))).filter(|(_, f)| !f.is_empty()).collect()
    }

    /// Prints the summary and panics with the details of every failing
    /// client.
    pub fn assert(&self, expect: Expect) {
        println!("{self}");
        let failures = self.failures(expect);
        if failures.is_empty() {
            return;
        }
        let mut msg = format!("{} of {} clients fail {expect:?}:\n", failures.len(), self.clients.len());
        for (c, why) in &failures {
            msg += &format!("  {}: {}\n", c.name, why.join(", "));
            msg += &self.detail(c);
        }
        msg += &format!("{self}");
        panic!("{msg}");
    }

    fn detail(&self, c: &ClientReport) -> String {
        let intervals: Vec<String> = c
            .intervals
            .iter()
            .map(|(s, e)| match e {
                Some(e) => format!("{:.2}-{:.2}s", s / 1000.0, e / 1000.0),
                None => format!("{:.2}s-end", s / 1000.0),
            })
            .collect();
        let mut d = format!(
            "      {} room {}, received {}, owed while Connected {}, Connected {}, reconnects {}, resumes {}/{} (refused {})\n",
            if c.stateful { "stateful" } else { "plain" },
            c.room,
            c.received,
            c.owed,
            intervals.join(" "),
            c.reconnects,
            c.resumes.1,
            c.resumes.0,
            c.resumes.2,
        );
        for (label, seqs) in [
            ("missed while Connected", &c.missed_connected),
            ("  of which a Close followed in time", &c.missed_then_told),
            ("missed in total", &c.missed_total),
            ("duplicates", &c.duplicates),
            ("out of order", &c.out_of_order),
        ] {
            if !seqs.is_empty() {
                d += &format!("      {label}: {}\n", c.seqs_with_times(seqs));
            }
        }
        if !c.unexpected.is_empty() {
            d += &format!("      unexpected: {:?}\n", c.unexpected.iter().take(3).collect::<Vec<_>>());
        }
        d
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "published {} events ({} XADDs failed or unanswered)", self.published, self.unsure)?;
        for stateful in [false, true] {
            let group: Vec<&ClientReport> = self.clients.iter().filter(|c| c.stateful == stateful).collect();
            let sum = |g: fn(&ClientReport) -> usize| group.iter().map(|c| g(c)).sum::<usize>();
            let hit = |g: fn(&ClientReport) -> usize| group.iter().filter(|c| g(c) > 0).count();
            writeln!(
                f,
                "{:8} clients: {} | missed while Connected {} ({} clients; a Close followed in time for {}) | missed in total {} ({} clients) | duplicates {} ({} clients) | out of order {} | not Connected at end {} | reconnects {} | resumes {}/{} refused {}",
                if stateful { "stateful" } else { "plain" },
                group.len(),
                sum(|c| c.missed_connected.len()),
                hit(|c| c.missed_connected.len()),
                sum(|c| c.missed_then_told.len()),
                sum(|c| c.missed_total.len()),
                hit(|c| c.missed_total.len()),
                sum(|c| c.duplicates.len()),
                hit(|c| c.duplicates.len()),
                sum(|c| c.out_of_order.len()),
                group.iter().filter(|c| !c.ended_connected).count(),
                sum(|c| c.reconnects),
                sum(|c| c.resumes.1),
                sum(|c| c.resumes.0),
                sum(|c| c.resumes.2),
            )?;
        }
        let mut reasons: Vec<(String, usize)> = Vec::new();
        for r in self.clients.iter().flat_map(|c| &c.reasons) {
            match reasons.iter_mut().find(|(k, _)| k == r) {
                Some((_, n)) => *n += 1,
                None => reasons.push((r.clone(), 1)),
            }
        }
        for (r, n) in reasons {
            writeln!(f, "  {n} x {r}")?;
        }
        let p = self.proxy;
        writeln!(
            f,
            "proxy: tokens learned {}, sticky {}, moved (instance gone) {} (answered 404: {}), unknown id {}, unrouted {}, retried {}",
            p.learned, p.sticky, p.moved, p.moved_404, p.unknown, p.unrouted, p.retried
        )?;
        for n in &self.notes {
            writeln!(f, "  {n}")?;
        }
        Ok(())
    }
}
