//! The stateful-reconnect buffer (HubProtocol.md, "Ack" and "Sequence"):
//! every sequenced frame taken for writing, numbered from 1, kept until the
//! client acknowledges it, so a resumed connection (on this instance or,
//! handed over, on another) resends what the client may not have.

use std::collections::VecDeque;

use super::payload::Payload;

/// Numbered frames not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Replay {
    next_seq: u64,
    frames: VecDeque<(u64, Payload)>,
    bytes: usize,
    max_bytes: usize,
    /// Set when frames had to be dropped unacknowledged: a resume would
    /// lose them, so it is refused and the client reconnects afresh.
    broken: bool,
}

impl Replay {
    /// An empty buffer of at most `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> Replay {
        Replay { next_seq: 1, frames: VecDeque::new(), bytes: 0, max_bytes, broken: false }
    }

    /// A buffer handed over by another instance.
    pub(crate) fn restored(max_bytes: usize, next_seq: u64, frames: Vec<(u64, Payload)>) -> Replay {
        let bytes = frames.iter().map(|(_, p)| p.len()).sum();
        Replay { next_seq, frames: frames.into(), bytes, max_bytes, broken: false }
    }

    /// Numbers and keeps one frame as it goes out.
    pub(crate) fn record(&mut self, p: Payload) {
        self.bytes += p.len();
        self.frames.push_back((self.next_seq, p));
        self.next_seq += 1;
        while self.bytes > self.max_bytes {
            match self.frames.pop_front() {
                Some((_, old)) => {
                    self.bytes -= old.len();
                    self.broken = true;
                }
                None => break,
            }
        }
    }

    /// Drops what the client acknowledged (`Ack` is cumulative). False for an
    /// id the server never sent: the two sides' numbering disagrees.
    pub(crate) fn ack(&mut self, sequence_id: u64) -> bool {
        if sequence_id >= self.next_seq {
            return false;
        }
        while self.frames.front().is_some_and(|(seq, _)| *seq <= sequence_id) {
            if let Some((_, p)) = self.frames.pop_front() {
                self.bytes -= p.len();
            }
        }
        true
    }

    /// The id of the first frame to resend and the frames, oldest first;
    /// `None` when frames were lost.
    pub(crate) fn resume(&self) -> Option<(u64, Vec<Payload>)> {
        if self.broken {
            return None;
        }
        let first = self.frames.front().map(|(seq, _)| *seq).unwrap_or(self.next_seq);
        Some((first, self.frames.iter().map(|(_, p)| p.clone()).collect()))
    }

    /// The next id and the numbered frames, for a handoff; `None` when
    /// frames were lost.
    pub(crate) fn frames(&self) -> Option<(u64, Vec<(u64, Payload)>)> {
        (!self.broken).then(|| (self.next_seq, self.frames.iter().cloned().collect()))
    }
}
