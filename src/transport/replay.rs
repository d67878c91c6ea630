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
    /// The newest frame dropped unacknowledged (0: none). Until an Ack
    /// covers it a resume would lose frames, so it is refused and the
    /// client reconnects afresh; once one does, nothing is missing (the
    /// official clients ack once a second, so a burst past the bound is
    /// routine and must not end resumability for good).
    lost_through: u64,
}

impl Replay {
    /// An empty buffer of at most `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> Replay {
        Replay { next_seq: 1, frames: VecDeque::new(), bytes: 0, max_bytes, lost_through: 0 }
    }

    /// A buffer handed over by another instance.
    pub(crate) fn restored(max_bytes: usize, next_seq: u64, frames: Vec<(u64, Payload)>) -> Replay {
        let bytes = frames.iter().map(|(_, p)| p.len()).sum();
        Replay { next_seq, frames: frames.into(), bytes, max_bytes, lost_through: 0 }
    }

    /// Numbers and keeps one frame as it goes out.
    pub(crate) fn record(&mut self, p: Payload) {
        self.bytes += p.len();
        self.frames.push_back((self.next_seq, p));
        self.next_seq += 1;
        while self.bytes > self.max_bytes {
            match self.frames.pop_front() {
                Some((seq, old)) => {
                    self.bytes -= old.len();
                    self.lost_through = seq;
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
        if sequence_id >= self.lost_through {
            self.lost_through = 0;
        }
        true
    }

    /// False while a frame dropped unacknowledged is not acknowledged yet.
    pub(crate) fn is_intact(&self) -> bool {
        self.lost_through == 0
    }

    /// The id of the first frame to resend and the frames, oldest first;
    /// `None` when frames were lost.
    pub(crate) fn resume(&self) -> Option<(u64, Vec<Payload>)> {
        if !self.is_intact() {
            return None;
        }
        let first = self.frames.front().map(|(seq, _)| *seq).unwrap_or(self.next_seq);
        Some((first, self.frames.iter().map(|(_, p)| p.clone()).collect()))
    }

    /// The next id and the numbered frames, for a handoff; `None` when
    /// frames were lost.
    pub(crate) fn frames(&self) -> Option<(u64, Vec<(u64, Payload)>)> {
        self.is_intact().then(|| (self.next_seq, self.frames.iter().cloned().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Payload {
        Payload::text(s.to_string())
    }

    fn texts(frames: &[Payload]) -> Vec<String> {
        frames.iter().map(|f| String::from_utf8_lossy(f.as_bytes()).into_owned()).collect()
    }

    #[test]
    fn frames_are_numbered_from_1_and_acks_are_cumulative() {
        let mut r = Replay::new(1 << 10);
        assert_eq!(r.resume().map(|(first, f)| (first, f.len())), Some((1, 0)), "nothing sent yet");
        for s in ["a", "b", "c"] {
            r.record(p(s));
        }
        assert!(r.ack(2));
        let (first, frames) = r.resume().expect("intact");
        assert_eq!((first, texts(&frames)), (3, vec!["c".to_string()]));
        assert!(r.ack(1), "an older ack is no error");
        assert!(r.ack(3));
        assert_eq!(r.resume().map(|(first, f)| (first, f.len())), Some((4, 0)));
    }

    #[test]
    fn an_ack_beyond_what_was_sent_is_refused() {
        let mut r = Replay::new(1 << 10);
        r.record(p("a"));
        assert!(!r.ack(2));
        assert!(!r.ack(u64::MAX));
        assert_eq!(r.resume().map(|(_, f)| f.len()), Some(1), "a refused ack frees nothing");
    }

    #[test]
    fn a_buffer_that_lost_frames_cannot_resume_or_hand_off() {
        let mut r = Replay::new(3);
        for s in ["ab", "cd", "ef"] {
            r.record(p(s));
        }
        assert!(r.resume().is_none());
        assert!(r.frames().is_none());
        assert!(r.ack(1), "acks still count");
        assert!(r.resume().is_none(), "frame 2 was dropped and not acknowledged yet");
        assert!(r.ack(2), "an Ack past every dropped frame");
        let (first, frames) = r.resume().expect("nothing is missing any more");
        assert_eq!((first, texts(&frames)), (3, vec!["ef".to_string()]));
        assert!(r.frames().is_some(), "and it can be handed off");
    }

    #[test]
    fn a_restored_buffer_continues_the_numbering() {
        let mut r = Replay::restored(1 << 10, 8, vec![(6, p("f")), (7, p("g"))]);
        assert!(!r.ack(8), "8 was never sent");
        r.record(p("h"));
        let (next, frames) = r.frames().expect("intact");
        assert_eq!(next, 9);
        assert_eq!(frames.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [6, 7, 8]);
        assert!(r.ack(7));
        let (first, frames) = r.resume().expect("intact");
        assert_eq!((first, texts(&frames)), (8, vec!["h".to_string()]));
    }

    #[test]
    fn a_restored_buffer_keeps_its_byte_bound() {
        let mut r = Replay::restored(4, 3, vec![(1, p("ab")), (2, p("cd"))]);
        r.record(p("e"));
        assert!(r.resume().is_none(), "past 4 bytes the oldest frame is dropped");
    }
}
