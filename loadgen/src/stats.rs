//! What the clients saw: latency histograms and delivery counters, one
//! tally per worker thread (an uncontended lock per delivery instead of
//! shared atomics both cores would fight over), merged at the end.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use hdrhistogram::Histogram;

/// Start of the measurement window (wall ns); 0 until the warm-up ends.
static WINDOW_START_NS: AtomicU64 = AtomicU64::new(0);
/// End of the measurement window (wall ns); u64::MAX while it is open.
static WINDOW_END_NS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Highest latency tracked exactly: 10 minutes, in µs.
const MAX_US: u64 = 600_000_000;

/// Opens the measurement window at `ns`.
pub fn open_window(ns: u64) {
    WINDOW_START_NS.store(ns, Relaxed);
}

/// Closes the measurement window at `ns`.
pub fn close_window(ns: u64) {
    WINDOW_END_NS.store(ns, Relaxed);
}

/// Whether an instant (wall ns) falls inside the measurement window. Both
/// the publisher (with the send stamp) and the clients (with the same
/// stamp read back) ask this, so they agree on which events are measured.
#[inline]
pub fn in_window(ns: u64) -> bool {
    let start = WINDOW_START_NS.load(Relaxed);
    start != 0 && ns >= start && ns < WINDOW_END_NS.load(Relaxed)
}

/// How a delivery's sequence number compares with its connection's last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The next one expected, or no sequence number at all.
    Next,
    /// Already seen (or older): a duplicate or a reordering.
    Repeat,
    /// Numbers were skipped: that many are lost or late.
    Skipped(u64),
}

/// What one worker thread saw.
pub struct Tally {
    /// Publish-to-receive latency (µs) of deliveries of measured events.
    pub latency: Histogram<u64>,
    /// Deliveries of events published inside the window.
    pub measured: u64,
    /// Deliveries (of any event) received while the window was open.
    pub in_window: u64,
    /// Every delivery, warm-up and drain included.
    pub total: u64,
    pub repeats: u64,
    pub skipped: u64,
    /// Deliveries without a readable send stamp.
    pub unparsed: u64,
    /// Deliveries stamped "after" they arrived (the clock stepped).
    pub negative: u64,
    /// Typing frames received while the window was open.
    pub typing_frames: u64,
    /// Every typing frame.
    pub typing_frames_total: u64,
    /// Latency (µs) from the first keystroke event of a burst to the first
    /// typing frame about it, for bursts started inside the window.
    pub first_indicator: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: histogram(),
            measured: 0,
            in_window: 0,
            total: 0,
            repeats: 0,
            skipped: 0,
            unparsed: 0,
            negative: 0,
            typing_frames: 0,
            typing_frames_total: 0,
            first_indicator: histogram(),
        }
    }

    fn add(&mut self, o: &Tally) {
        self.latency.add(&o.latency).expect("histograms share bounds");
        self.first_indicator.add(&o.first_indicator).expect("histograms share bounds");
        self.measured += o.measured;
        self.in_window += o.in_window;
        self.total += o.total;
        self.repeats += o.repeats;
        self.skipped += o.skipped;
        self.unparsed += o.unparsed;
        self.negative += o.negative;
        self.typing_frames += o.typing_frames;
        self.typing_frames_total += o.typing_frames_total;
    }
}

static REGISTRY: Mutex<Vec<Arc<Mutex<Tally>>>> = Mutex::new(Vec::new());

thread_local! {
    static LOCAL: RefCell<Option<Arc<Mutex<Tally>>>> = const { RefCell::new(None) };
}

fn with_tally<R>(f: impl FnOnce(&mut Tally) -> R) -> R {
    LOCAL.with(|slot| {
        let mut slot = slot.borrow_mut();
        let tally = slot.get_or_insert_with(|| {
            let t = Arc::new(Mutex::new(Tally::new()));
            REGISTRY.lock().unwrap_or_else(PoisonError::into_inner).push(t.clone());
            t
        });
        let mut t = tally.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut t)
    })
}

fn latency_us(now: u64, sent: u64) -> u64 {
    (now.saturating_sub(sent) / 1000).clamp(1, MAX_US)
}

/// Records one delivered chat message.
#[inline]
pub fn delivery(now: u64, sent: Option<u64>, order: Order) {
    with_tally(|t| {
        t.total += 1;
        match order {
            Order::Next => {}
            Order::Repeat => t.repeats += 1,
            Order::Skipped(n) => t.skipped += n,
        }
        if in_window(now) {
            t.in_window += 1;
        }
        match sent {
            None => t.unparsed += 1,
            Some(sent) if in_window(sent) => {
                t.measured += 1;
                if now < sent {
                    t.negative += 1;
                }
                t.latency.saturating_record(latency_us(now, sent));
            }
            Some(_) => {}
        }
    })
}

/// Records one typing frame; `burst_start` is the send stamp of the burst's
/// first keystroke event when this frame is the first indicator of it.
#[inline]
pub fn typing_frame(now: u64, burst_start: Option<u64>) {
    with_tally(|t| {
        t.typing_frames_total += 1;
        if in_window(now) {
            t.typing_frames += 1;
        }
        if let Some(sent) = burst_start.filter(|s| in_window(*s)) {
            t.first_indicator.saturating_record(latency_us(now, sent));
        }
    })
}

/// The sum of every thread's tally so far.
pub fn merged() -> Tally {
    let mut total = Tally::new();
    for t in REGISTRY.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        total.add(&t.lock().unwrap_or_else(PoisonError::into_inner));
    }
    total
}

/// Latency percentiles of a histogram in ms, as JSON.
pub fn summary(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
    serde_json::json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
        "mean": (h.mean()).round() / 1000.0,
    })
}
