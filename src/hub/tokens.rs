//! Connection tokens handed out by negotiate, and what each is connected
//! with. The status codes follow ASP.NET Core: an unknown token is 404, a
//! second request for a token already in use is 409, a request for another
//! transport than the one in use is 400. Tokens only exist on the instance
//! that issued them (README: sticky sessions).

use crate::sync::Unpoisoned;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::HubId;
use crate::transport::PollingHandle;

/// Why a token cannot be used for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// Never issued here, expired, closed, or for another hub.
    #[error("No Connection with that ID")]
    Unknown,
    /// The same transport is connected with it already.
    #[error("Connection already in use")]
    InUse,
    /// The token is connected with another transport.
    #[error("Cannot change transports mid-connection")]
    OtherTransport,
    /// POST to a WebSocket connection.
    #[error("POST requests are not allowed for WebSocket connections.")]
    PostToWebSocket,
    /// DELETE on a connection that is not Long Polling.
    #[error("Cannot terminate this connection using the DELETE endpoint.")]
    DeleteNotLongPolling,
    /// More sent before the connection started than it may keep.
    #[error("Too much data sent before the connection started.")]
    EarlyTooLarge,
    /// Connections that have not started hold all the data this instance
    /// keeps for them: a flood of negotiates with POSTs, refused before it
    /// takes the memory.
    #[error("Too much data is waiting for connections to start; try again.")]
    EarlyFull,
}

/// The transport a token is connected with.
#[derive(Debug, Clone)]
pub(crate) enum Attached {
    /// A WebSocket task owns the connection.
    WebSocket,
    /// A Server-Sent Events stream; POSTs go through the handle.
    ServerSentEvents(PollingHandle),
    /// Long Polling; polls, POSTs and DELETE go through the handle.
    LongPolling(PollingHandle),
}

#[derive(Debug)]
struct Slot {
    /// Until a transport attaches, which takes it (a slot is attached once
    /// and for good, so its copy would only hold memory).
    connection_id: String,
    hub: HubId,
    issued: Instant,
    stateful: bool,
    attached: Option<Attached>,
    /// POST bodies that arrived before any transport attached, kept for the
    /// connection as ASP.NET Core keeps them in its pipe.
    early: Vec<Bytes>,
}

/// A negotiated connection a transport has just attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// The public connection id.
    pub connection_id: String,
    /// Whether stateful reconnect was negotiated.
    pub stateful: bool,
    /// What the client POSTed before this transport attached, in order.
    pub early: Vec<Bytes>,
}

impl Negotiated {
    /// A connection that skipped negotiate (WebSockets only).
    pub(crate) fn unnegotiated() -> Negotiated {
        Negotiated { connection_id: new_id(), stateful: false, early: Vec::new() }
    }
}

/// POST bodies kept for a connection before its transport attaches; fewer
/// than a polling connection's inbound queue, so handing them over never waits.
pub(super) const MAX_EARLY_BODIES: usize = 8;

/// Bytes kept for one connection before its transport attaches: ASP.NET
/// Core's transport buffer (`TransportMaxBufferSize`, 64 KB), past which
/// its POST would wait for the application to read. A handshake and a few
/// invocations take a fraction of it.
pub(crate) const MAX_EARLY_BYTES: usize = 64 * 1024;

/// Bytes kept for all connections that have not started: what a flood of
/// negotiates, each with a POST and never a poll, can hold (they are swept
/// with their tokens).
pub(crate) const MAX_EARLY_TOTAL: usize = 16 << 20;

/// The token table of this instance. It holds an entry for every open
/// connection, so its buckets are kept small: a boxed key and a boxed slot
/// (32 B a bucket instead of 128; a table is up to half empty after it
/// grows, and at 16,667 connections the inline slots took ~250 B each).
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    slots: Mutex<HashMap<Box<str>, Box<Slot>>>,
    /// The bytes of every slot's `early`, changed under `slots`' lock.
    early_total: AtomicUsize,
}

fn early_bytes(slot: &Slot) -> usize {
    slot.early.iter().map(Bytes::len).sum()
}

/// A random URL-safe id, as long as ASP.NET's.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Tokens {
    /// Issues a connection id and token for `hub`. With negotiate version 0
    /// the id is the token (the client never sees another one), as ASP.NET
    /// Core's `HttpConnectionManager` does.
    pub(crate) fn issue(&self, hub: HubId, stateful: bool, negotiate_version: u32) -> (String, String) {
        let connection_id = new_id();
        let token = if negotiate_version == 0 { connection_id.clone() } else { new_id() };
        let slot = Slot {
            connection_id: connection_id.clone(),
            hub,
            issued: Instant::now(),
            stateful,
            attached: None,
            early: Vec::new(),
        };
        self.lock().insert(token.as_str().into(), Box::new(slot));
        (connection_id, token)
    }

    /// Takes on a token another instance issued, for a stateful session
    /// taken over here (attached to its WebSocket at once).
    pub(crate) fn adopt(&self, token: &str, hub: HubId, connection_id: &str) {
        let slot = Slot {
            connection_id: connection_id.to_string(),
            hub,
            issued: Instant::now(),
            stateful: true,
            attached: Some(Attached::WebSocket),
            early: Vec::new(),
        };
        self.lock().insert(token.into(), Box::new(slot));
    }

    /// Whether this instance knows `token` (issued or adopted here).
    pub(crate) fn knows(&self, token: &str) -> bool {
        self.lock().contains_key(token)
    }

    /// Attaches a transport to a negotiated token; returns its connection id.
    /// `make` builds the attachment only when the token is free.
    pub(crate) fn attach(
        &self,
        token: &str,
        hub: HubId,
        kind: TransportKind,
        make: impl FnOnce() -> Attached,
    ) -> Result<Negotiated, TokenError> {
        let mut slots = self.lock();
        let slot = slots.get_mut(token).filter(|s| s.hub == hub).ok_or(TokenError::Unknown)?;
        match &slot.attached {
            None => {
                slot.attached = Some(make());
                self.early_total.fetch_sub(early_bytes(slot), Ordering::Relaxed);
                Ok(Negotiated {
                    connection_id: std::mem::take(&mut slot.connection_id),
                    stateful: slot.stateful,
                    early: std::mem::take(&mut slot.early),
                })
            }
            Some(a) if kind_of(a) == kind => Err(TokenError::InUse),
            Some(_) => Err(TokenError::OtherTransport),
        }
    }

    /// The attachment of a token in use.
    pub(crate) fn attached(&self, token: &str, hub: HubId) -> Result<Attached, TokenError> {
        let slots = self.lock();
        let slot = slots.get(token).filter(|s| s.hub == hub).ok_or(TokenError::Unknown)?;
        slot.attached.clone().ok_or(TokenError::Unknown)
    }

    /// Keeps a POST body for a negotiated connection no transport has
    /// attached to yet (a client may send its handshake before its first
    /// poll). At most `max_bytes` (and [`MAX_EARLY_BYTES`]) in all are kept
    /// for one connection, [`MAX_EARLY_TOTAL`] for all of them.
    pub(crate) fn keep_early(&self, token: &str, hub: HubId, body: Bytes, max_bytes: usize) -> Result<(), TokenError> {
        let mut slots = self.lock();
        let slot = slots.get_mut(token).filter(|s| s.hub == hub && s.attached.is_none()).ok_or(TokenError::Unknown)?;
        let kept = early_bytes(slot);
        if kept + body.len() > max_bytes.min(MAX_EARLY_BYTES) || slot.early.len() >= MAX_EARLY_BODIES {
            return Err(TokenError::EarlyTooLarge);
        }
        if self.early_total.load(Ordering::Relaxed) + body.len() > MAX_EARLY_TOTAL {
            return Err(TokenError::EarlyFull);
        }
        self.early_total.fetch_add(body.len(), Ordering::Relaxed);
        slot.early.push(body);
        Ok(())
    }

    /// Whether the token is issued and not yet attached (a first long poll).
    pub(crate) fn is_fresh(&self, token: &str, hub: HubId) -> bool {
        self.lock().get(token).is_some_and(|s| s.hub == hub && s.attached.is_none())
    }

    /// Forgets a token when its connection ends.
    pub(crate) fn release(&self, token: &str) {
        if let Some(slot) = self.lock().remove(token) {
            self.early_total.fetch_sub(early_bytes(&slot), Ordering::Relaxed);
        }
    }

    /// Forgets tokens negotiated longer than `ttl` ago and never attached.
    pub(crate) fn sweep(&self, ttl: Duration) {
        let now = Instant::now();
        self.lock().retain(|_, s| {
            let keep = s.attached.is_some() || now.duration_since(s.issued) < ttl;
            if !keep {
                self.early_total.fetch_sub(early_bytes(s), Ordering::Relaxed);
            }
            keep
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Box<Slot>>> {
        self.slots.locked()
    }
}

/// A transport, for comparing attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportKind {
    /// WebSockets.
    WebSocket,
    /// Server-Sent Events.
    ServerSentEvents,
    /// Long Polling.
    LongPolling,
}

fn kind_of(a: &Attached) -> TransportKind {
    match a {
        Attached::WebSocket => TransportKind::WebSocket,
        Attached::ServerSentEvents(_) => TransportKind::ServerSentEvents,
        Attached::LongPolling(_) => TransportKind::LongPolling,
    }
}

impl crate::fault::Blame for TokenError {
    fn fault(&self) -> crate::fault::Fault {
        crate::fault::Fault::Client
    }

    fn reason(&self) -> &'static str {
        match self {
            TokenError::Unknown => "unknown_token",
            TokenError::InUse => "token_in_use",
            TokenError::OtherTransport => "other_transport",
            TokenError::PostToWebSocket => "post_to_websocket",
            TokenError::DeleteNotLongPolling => "delete_not_long_polling",
            TokenError::EarlyTooLarge => "early_too_large",
            TokenError::EarlyFull => "early_full",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_attaches_once_and_only_to_its_hub() {
        let t = Tokens::default();
        let (id, token) = t.issue(0, false, 1);
        assert_ne!(id, token, "version 1 has a token of its own");
        let ws = || Attached::WebSocket;
        assert_eq!(t.attach(&token, 1, TransportKind::WebSocket, ws), Err(TokenError::Unknown));
        assert_eq!(
            t.attach(&token, 0, TransportKind::WebSocket, ws),
            Ok(Negotiated { connection_id: id, stateful: false, early: Vec::new() })
        );
        assert_eq!(t.attach(&token, 0, TransportKind::WebSocket, ws), Err(TokenError::InUse));
        assert_eq!(t.attach(&token, 0, TransportKind::LongPolling, ws), Err(TokenError::OtherTransport));
        t.release(&token);
        assert_eq!(t.attach(&token, 0, TransportKind::WebSocket, ws), Err(TokenError::Unknown));
    }

    #[test]
    fn unused_tokens_expire() {
        let t = Tokens::default();
        let (_, token) = t.issue(0, false, 1);
        t.sweep(Duration::ZERO);
        assert!(!t.is_fresh(&token, 0));
    }

    #[test]
    fn version_0_uses_the_connection_id_as_the_token() {
        let t = Tokens::default();
        let (id, token) = t.issue(0, false, 0);
        assert_eq!(id, token);
        let attached = t.attach(&id, 0, TransportKind::WebSocket, || Attached::WebSocket).expect("the id is the token");
        assert_eq!(attached.connection_id, id);
    }

    #[test]
    fn an_adopted_token_is_attached_to_its_websocket_at_once() {
        let t = Tokens::default();
        t.adopt("tok", 2, "conn-1");
        assert!(t.knows("tok"));
        assert!(!t.is_fresh("tok", 2), "attached already");
        assert!(matches!(t.attached("tok", 2), Ok(Attached::WebSocket)));
        assert_eq!(t.attached("tok", 1).map(|_| ()), Err(TokenError::Unknown), "another hub");
        let ws = || Attached::WebSocket;
        assert_eq!(t.attach("tok", 2, TransportKind::WebSocket, ws), Err(TokenError::InUse));
        assert_eq!(t.attach("tok", 2, TransportKind::LongPolling, ws), Err(TokenError::OtherTransport));
        t.sweep(Duration::ZERO);
        assert!(t.knows("tok"), "an attached token is never swept");
    }

    #[test]
    fn a_token_is_fresh_until_a_transport_attaches() {
        let t = Tokens::default();
        let (_, token) = t.issue(0, true, 1);
        assert!(t.is_fresh(&token, 0));
        assert!(!t.is_fresh(&token, 1));
        assert_eq!(t.attached(&token, 0).map(|_| ()), Err(TokenError::Unknown), "nothing attached yet");
        let n = t.attach(&token, 0, TransportKind::WebSocket, || Attached::WebSocket).expect("attach");
        assert!(n.stateful, "stateful reconnect comes from negotiate");
        assert!(!t.is_fresh(&token, 0));
        assert!(!t.is_fresh("never-issued", 0));
    }

    #[test]
    fn at_most_a_few_early_bodies_are_kept_however_small() {
        let t = Tokens::default();
        let (_, token) = t.issue(0, false, 1);
        for _ in 0..MAX_EARLY_BODIES {
            t.keep_early(&token, 0, Bytes::from_static(b"x"), 1 << 20).expect("kept");
        }
        assert_eq!(t.keep_early(&token, 0, Bytes::from_static(b"x"), 1 << 20), Err(TokenError::EarlyTooLarge));
        assert_eq!(t.keep_early("unknown", 0, Bytes::from_static(b"x"), 1 << 20), Err(TokenError::Unknown));
        let n = t.attach(&token, 0, TransportKind::LongPolling, || Attached::WebSocket).expect("attach");
        assert_eq!(n.early.len(), MAX_EARLY_BODIES, "handed over in one go");
    }

    #[test]
    fn a_connection_keeps_at_most_64_kib_and_all_of_them_at_most_16_mib() {
        let t = Tokens::default();
        let (_, one) = t.issue(0, false, 1);
        let big = Bytes::from(vec![b' '; MAX_EARLY_BYTES + 1]);
        assert_eq!(t.keep_early(&one, 0, big, 2 << 20), Err(TokenError::EarlyTooLarge), "one connection's cap");
        let chunk = Bytes::from(vec![b' '; MAX_EARLY_BYTES]);
        let mut tokens = Vec::new();
        for _ in 0..MAX_EARLY_TOTAL / MAX_EARLY_BYTES {
            let (_, token) = t.issue(0, false, 1);
            t.keep_early(&token, 0, chunk.clone(), 2 << 20).expect("within the total");
            tokens.push(token);
        }
        assert_eq!(t.keep_early(&one, 0, Bytes::from_static(b"x"), 2 << 20), Err(TokenError::EarlyFull));
        // Attached, released or swept: the bytes are free again.
        t.attach(&tokens[0], 0, TransportKind::LongPolling, || Attached::WebSocket).expect("attach");
        t.release(&tokens[1]);
        t.keep_early(&one, 0, chunk.clone(), 2 << 20).expect("room again");
        assert_eq!(t.keep_early(&one, 0, Bytes::from_static(b"x"), 2 << 20), Err(TokenError::EarlyTooLarge));
        let (_, two) = t.issue(0, false, 1);
        t.keep_early(&two, 0, chunk.clone(), 2 << 20).expect("the released one's room");
        assert_eq!(t.keep_early(&two, 0, Bytes::from_static(b"x"), 2 << 20), Err(TokenError::EarlyTooLarge));
        t.sweep(Duration::ZERO);
        assert_eq!(t.early_total.load(Ordering::Relaxed), 0, "swept with their tokens");
    }

    #[test]
    fn posts_before_the_first_poll_are_kept_for_the_connection() {
        let t = Tokens::default();
        let (_, token) = t.issue(0, false, 1);
        t.keep_early(&token, 0, Bytes::from_static(b"hs"), 4).expect("kept");
        assert_eq!(t.keep_early(&token, 0, Bytes::from_static(b"abc"), 4), Err(TokenError::EarlyTooLarge));
        assert_eq!(t.keep_early(&token, 1, Bytes::from_static(b"x"), 4), Err(TokenError::Unknown), "other hub");
        let n = t.attach(&token, 0, TransportKind::LongPolling, || Attached::WebSocket).expect("attach");
        assert_eq!(n.early, vec![Bytes::from_static(b"hs")]);
        assert_eq!(t.keep_early(&token, 0, Bytes::from_static(b"x"), 4), Err(TokenError::Unknown), "attached now");
    }
}
