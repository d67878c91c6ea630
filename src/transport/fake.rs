//! A stand-in for the hub's session in the transports' tests: it records
//! what the client sent, opens on `open`, queues `close` and stops on
//! `bye`, and names the kick in its Close frame.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{Flow, Kick, Limits, Outbox, Payload, Session};

/// What a test can see of a [`FakeSession`] once the transport owns it.
#[derive(Clone, Default)]
pub(crate) struct Seen {
    /// Every client message, in order.
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
    /// How often the transport said the client is still there.
    pub touched: Arc<AtomicUsize>,
}

impl Seen {
    pub(crate) fn received(&self) -> Vec<String> {
        self.received.lock().expect("lock").iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect()
    }

    pub(crate) fn touched(&self) -> usize {
        self.touched.load(Ordering::SeqCst)
    }
}

pub(crate) struct FakeSession {
    pub open: bool,
    pub outbox: Arc<Outbox>,
    pub seen: Seen,
}

impl FakeSession {
    /// A session and its outbox; `open` as if the handshake were done.
    pub(crate) fn new(open: bool) -> FakeSession {
        let outbox = Arc::new(Outbox::new(Limits { max_frames: 64, max_bytes: 1 << 20 }));
        FakeSession { open, outbox, seen: Seen::default() }
    }
}

impl Session for FakeSession {
    async fn receive(&mut self, data: &[u8]) -> Flow {
        self.seen.received.lock().expect("lock").push(data.to_vec());
        match data {
            b"open" => self.open = true,
            b"bye" => {
                let _ = self.outbox.push_unsequenced(Payload::text("close".into()));
                return Flow::Stop;
            }
            _ => {}
        }
        Flow::Continue
    }

    fn close_frame(&self, why: Kick) -> Option<Payload> {
        (why != Kick::Handoff).then(|| Payload::text(format!("kicked:{why:?}")))
    }

    fn is_open(&self) -> bool {
        self.open
    }

    fn first_frames(&mut self) -> Vec<Payload> {
        Vec::new()
    }

    fn touch(&self) {
        self.seen.touched.fetch_add(1, Ordering::SeqCst);
    }
}
