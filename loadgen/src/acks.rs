//! The Acks of a stateful client (`--stateful`), as `@microsoft/signalr`
//! sends them after `withStatefulReconnect()`: every sequenced message
//! received (types 1 to 5) is counted from 1; the first one not yet
//! acknowledged starts a one-shot timer of one second, and when it fires
//! the client sends `Ack(count)`. So at most one Ack a second per
//! connection, and none while nothing new arrives (the JS client's
//! `MessageBuffer._ackTimer`). Without Acks the server's replay buffer of
//! the connection would only grow, which is the cost this measures.

use std::time::Duration;

use tokio::time::Instant;

/// The JS client's debounce of its Acks.
pub const ACK_DELAY: Duration = Duration::from_secs(1);

/// What one stateful connection received and acknowledged.
#[derive(Debug, Default)]
pub struct Acks {
    /// Sequenced messages received: the id of the latest one.
    received: u64,
    /// The id in the last Ack sent.
    acked: u64,
    /// When the pending Ack is due; None while everything is acknowledged.
    due: Option<Instant>,
}

impl Acks {
    /// Counts one sequenced message received at `now`.
    pub fn received(&mut self, now: Instant) {
        self.received += 1;
        if self.due.is_none() {
            self.due = Some(now + ACK_DELAY);
        }
    }

    /// When the next Ack is due, if one is.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The id to send in an Ack now: the latest received, once it is due.
    pub fn take(&mut self, now: Instant) -> Option<u64> {
        match self.due {
            Some(at) if at <= now => {
                self.due = None;
                (self.received > self.acked).then(|| {
                    self.acked = self.received;
                    self.received
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ack_a_second_with_the_latest_count() {
        let t0 = Instant::now();
        let mut a = Acks::default();
        assert_eq!(a.due(), None, "nothing received, nothing due");
        a.received(t0);
        a.received(t0 + Duration::from_millis(400));
        assert_eq!(a.due(), Some(t0 + ACK_DELAY), "the first unacknowledged message starts the timer");
        assert_eq!(a.take(t0 + Duration::from_millis(999)), None, "not before a second");
        a.received(t0 + Duration::from_millis(999));
        assert_eq!(a.take(t0 + ACK_DELAY), Some(3), "cumulative: the latest count");
        assert_eq!(a.due(), None, "then quiet until something new arrives");
        assert_eq!(a.take(t0 + Duration::from_secs(5)), None);
        let t1 = t0 + Duration::from_secs(7);
        a.received(t1);
        assert_eq!(a.due(), Some(t1 + ACK_DELAY));
        assert_eq!(a.take(t1 + ACK_DELAY), Some(4));
    }
}
