//! Stateful reconnect (HubProtocol.md, "Ack" and "Sequence"): numbering of
//! the client's sequenced messages so resent ones are not processed twice,
//! and the sessions waiting for their client to come back.
//!
//! The server's own side (numbering what it sends and keeping it until
//! acknowledged) lives in the outbox's replay buffer.

use crate::sync::Unpoisoned;
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::HubSession;
use crate::config::HubId;
use crate::transport::{Kick, Outbox};

/// Numbers the client's sequenced messages (ids start at 1).
#[derive(Debug)]
pub(super) struct Incoming {
    /// The id the next sequenced message will have.
    next: u64,
    /// The highest id processed.
    received: u64,
    /// The highest id acknowledged to the client.
    acked: u64,
}

/// A `Sequence` that names messages the client never sent: the two sides'
/// numbering no longer agrees, so the connection cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Sequence ID {got} greater than amount of messages we've received ({next} expected next).")]
pub(super) struct SequenceError {
    /// The id the client named.
    pub got: u64,
    /// The id the server expected next.
    pub next: u64,
}

impl Default for Incoming {
    fn default() -> Self {
        Incoming { next: 1, received: 0, acked: 0 }
    }
}

impl Incoming {
    /// The client says its next sequenced message has id `id` (it is
    /// resending). An id beyond the next one expected, or 0, is refused, as
    /// ASP.NET Core's `MessageBuffer.ResetSequence` refuses it.
    pub(super) fn reset(&mut self, id: u64) -> Result<(), SequenceError> {
        if id == 0 || id > self.next {
            return Err(SequenceError { got: id, next: self.next });
        }
        self.next = id;
        Ok(())
    }

    /// Numbers one sequenced message; false when it was processed already.
    /// `next` never passes `received + 1` (reset only moves it back), so it
    /// cannot overflow before 2^64 real messages.
    pub(super) fn accept(&mut self) -> bool {
        let id = self.next;
        self.next = id.saturating_add(1);
        if id <= self.received {
            return false;
        }
        self.received = id;
        true
    }

    /// The numbering as (next, received, acked), for a handoff.
    pub(super) fn export(&self) -> (u64, u64, u64) {
        (self.next, self.received, self.acked)
    }

    /// The numbering handed over by another instance.
    pub(super) fn import((next, received, acked): (u64, u64, u64)) -> Incoming {
        Incoming { next: next.max(1), received, acked: acked.min(received) }
    }

    /// The id to acknowledge, if anything new arrived since the last Ack.
    pub(super) fn ack_due(&mut self) -> Option<u64> {
        (self.received > self.acked).then(|| {
            self.acked = self.received;
            self.received
        })
    }
}

/// Sessions whose WebSocket dropped without a Close, kept for their token
/// until the client comes back or the window passes. They stay in fan-out,
/// so events keep queueing for them.
///
/// Also the stateful sessions still being served, by token: the client
/// resumes about a millisecond after its socket dies, often before this
/// side has read the end of the old one. ASP.NET Core then cancels the
/// previous transport and waits for it (`HttpConnectionDispatcher`,
/// `CancelPreviousPoll`); [`Parked::take_for_resume`] does the same, where a
/// "connection in use" answer would end the client's connection.
#[derive(Default)]
pub(crate) struct Parked {
    sessions: Mutex<HashMap<String, (HubSession, Instant)>>,
    serving: Mutex<Serving>,
    /// Told whenever a served session ends (parked or finished).
    ended: Notify,
}

/// The stateful sessions being served, by token, each with a ticket so that
/// only its own end removes it (a resume of the same token may have begun).
#[derive(Default)]
struct Serving {
    by_token: HashMap<String, (HubId, NonZeroU64, Arc<Outbox>, u64)>,
    next_ticket: u64,
}

impl Parked {
    /// Keeps `session` for `token`.
    pub(crate) fn park(&self, token: String, session: HubSession) {
        self.lock().insert(token, (session, Instant::now()));
    }

    /// Notes a stateful session served on `outbox` for `token`; the ticket
    /// goes back to [`Parked::served`] when the transport has ended.
    pub(crate) fn serving(&self, token: &str, hub: HubId, conn: u64, outbox: Arc<Outbox>) -> NonZeroU64 {
        let mut serving = self.serving.locked();
        serving.next_ticket = serving.next_ticket.saturating_add(1);
        let ticket = NonZeroU64::new(serving.next_ticket).unwrap_or(NonZeroU64::MIN);
        serving.by_token.insert(token.to_string(), (hub, ticket, outbox, conn));
        ticket
    }

    /// The fan-out id and outbox of the stateful session served for
    /// `token`, if one is.
    pub(crate) fn served_session(&self, token: &str) -> Option<(u64, Arc<Outbox>)> {
        self.serving.locked().by_token.get(token).map(|(_, _, outbox, conn)| (*conn, outbox.clone()))
    }

    /// Whether a session that can resume is parked for `token`.
    pub(crate) fn holds_resumable(&self, token: &str) -> bool {
        self.lock().get(token).is_some_and(|(s, _)| s.can_resume())
    }

    /// Takes the session parked for `token`, on whichever hub.
    pub(crate) fn take_any(&self, token: &str) -> Option<HubSession> {
        self.lock().remove(token).map(|(s, _)| s)
    }

    /// The session served under `ticket` has ended: parked, handed off or
    /// finished. Call after parking it, so whoever waits finds it.
    pub(crate) fn served(&self, token: &str, ticket: NonZeroU64) {
        let mut serving = self.serving.locked();
        if serving.by_token.get(token).is_some_and(|(_, t, _, _)| *t == ticket) {
            serving.by_token.remove(token);
        }
        drop(serving);
        self.ended.notify_waiters();
    }

    /// The session a resume for `token` takes up: the one parked for it, or
    /// the one still served on its old socket, whose transport is ended
    /// here as if that socket had dropped (and taken once it has parked).
    /// `None` when neither is here, or the served one did not park within
    /// `wait` (it finished instead: the caller answers as for any unknown
    /// or used token).
    pub(crate) async fn take_for_resume(&self, token: &str, hub: HubId, wait: Duration) -> Option<HubSession> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if let Some(session) = self.take(token, hub) {
                return Some(session);
            }
            let served = self.serving.locked().by_token.get(token).map(|(h, _, outbox, _)| (*h, outbox.clone()));
            match served {
                // Only the first reason counts: a session closing for
                // another one finishes instead, and no take finds it.
                Some((h, outbox)) if h == hub => outbox.kick(Kick::Superseded),
                _ => return None,
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                tracing::warn!("stateful reconnect: the previous transport did not end in {wait:?}");
                return None;
            }
        }
    }

    /// Waits until the session served on fan-out id `conn` for `token` has
    /// ended (parked, handed off or finished; at once if it is not served),
    /// at most `wait`; false when it is still served then.
    pub(crate) async fn served_ended(&self, token: &str, conn: u64, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.serving.locked().by_token.get(token).is_none_or(|(_, _, _, c)| *c != conn) {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return false;
            }
        }
    }

    /// Takes the session parked for `token` if it is fan-out id `conn`.
    pub(crate) fn take_conn(&self, token: &str, conn: u64) -> Option<HubSession> {
        let mut sessions = self.lock();
        if sessions.get(token).is_none_or(|(s, _)| s.conn() != conn) {
            return None;
        }
        sessions.remove(token).map(|(s, _)| s)
    }

    /// Takes the session parked for `token` on `hub`.
    pub(crate) fn take(&self, token: &str, hub: HubId) -> Option<HubSession> {
        let mut sessions = self.lock();
        if sessions.get(token).is_none_or(|(s, _)| s.hub() != hub) {
            return None;
        }
        sessions.remove(token).map(|(s, _)| s)
    }

    /// Removes and returns the sessions parked longer than `window`.
    pub(crate) fn expired(&self, window: Duration) -> Vec<HubSession> {
        let mut sessions = self.lock();
        let old: Vec<String> =
            sessions.iter().filter(|(_, (_, at))| at.elapsed() > window).map(|(t, _)| t.clone()).collect();
        old.iter().filter_map(|t| sessions.remove(t)).map(|(s, _)| s).collect()
    }

    /// Removes and returns the parked sessions whose outbox was kicked for
    /// `why` (a drain's handoff that found them parked).
    pub(crate) fn take_kicked(&self, why: Kick) -> Vec<HubSession> {
        let mut sessions = self.lock();
        let kicked: Vec<String> =
            sessions.iter().filter(|(_, (s, _))| s.outbox().kicked() == Some(why)).map(|(t, _)| t.clone()).collect();
        kicked.iter().filter_map(|t| sessions.remove(t)).map(|(s, _)| s).collect()
    }

    /// Removes every parked session (shutdown).
    pub(crate) fn drain(&self) -> Vec<HubSession> {
        self.lock().drain().map(|(_, (s, _))| s).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (HubSession, Instant)>> {
        self.sessions.locked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resent_messages_are_skipped() {
        let mut i = Incoming::default();
        assert!(i.accept() && i.accept());
        assert_eq!(i.ack_due(), Some(2));
        assert_eq!(i.ack_due(), None);
        i.reset(2).expect("a resend from id 2");
        assert!(!i.accept(), "id 2 again");
        assert!(i.accept(), "id 3 is new");
        assert_eq!(i.ack_due(), Some(3));
    }

    #[test]
    fn a_sequence_beyond_what_was_received_is_refused() {
        let mut i = Incoming::default();
        assert!(i.accept());
        assert_eq!(i.reset(u64::MAX), Err(SequenceError { got: u64::MAX, next: 2 }));
        assert_eq!(i.reset(3), Err(SequenceError { got: 3, next: 2 }));
        assert_eq!(i.reset(0), Err(SequenceError { got: 0, next: 2 }));
        assert_eq!(i.reset(2), Ok(()), "nothing to resend");
        assert!(i.accept(), "id 2 is new and still answered");
        assert!(i.accept(), "and id 3");
    }
}
