//! Connection tokens handed out by negotiate, and what each is connected
//! with. The status codes follow ASP.NET Core: an unknown token is 404, a
//! second request for a token already in use is 409, a request for another
//! transport than the one in use is 400. Tokens only exist on the instance
//! that issued them (README: sticky sessions).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::HubId;
use crate::transport::PollingHandle;

/// Why a token cannot be used for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
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
}

/// The transport a token is connected with.
#[derive(Debug, Clone)]
pub enum Attached {
    /// A WebSocket task owns the connection.
    WebSocket,
    /// A Server-Sent Events stream; POSTs go through the handle.
    ServerSentEvents(PollingHandle),
    /// Long Polling; polls, POSTs and DELETE go through the handle.
    LongPolling(PollingHandle),
}

#[derive(Debug)]
struct Slot {
    connection_id: String,
    hub: HubId,
    issued: Instant,
    stateful: bool,
    attached: Option<Attached>,
}

/// A negotiated connection a transport has just attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The public connection id.
    pub connection_id: String,
    /// Whether stateful reconnect was negotiated.
    pub stateful: bool,
}

/// The token table of this instance.
#[derive(Debug, Default)]
pub struct Tokens {
    slots: Mutex<HashMap<String, Slot>>,
}

/// A random URL-safe id, as long as ASP.NET's.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Tokens {
    /// Issues a connection id and token for `hub`.
    pub fn issue(&self, hub: HubId, stateful: bool) -> (String, String) {
        let (connection_id, token) = (new_id(), new_id());
        let slot = Slot { connection_id: connection_id.clone(), hub, issued: Instant::now(), stateful, attached: None };
        self.lock().insert(token.clone(), slot);
        (connection_id, token)
    }

    /// Attaches a transport to a negotiated token; returns its connection id.
    /// `make` builds the attachment only when the token is free.
    pub fn attach(
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
                Ok(Negotiated { connection_id: slot.connection_id.clone(), stateful: slot.stateful })
            }
            Some(a) if kind_of(a) == kind => Err(TokenError::InUse),
            Some(_) => Err(TokenError::OtherTransport),
        }
    }

    /// The attachment of a token in use.
    pub fn attached(&self, token: &str, hub: HubId) -> Result<Attached, TokenError> {
        let slots = self.lock();
        let slot = slots.get(token).filter(|s| s.hub == hub).ok_or(TokenError::Unknown)?;
        slot.attached.clone().ok_or(TokenError::Unknown)
    }

    /// Whether the token is issued and not yet attached (a first long poll).
    pub fn is_fresh(&self, token: &str, hub: HubId) -> bool {
        self.lock().get(token).is_some_and(|s| s.hub == hub && s.attached.is_none())
    }

    /// Forgets a token when its connection ends.
    pub fn release(&self, token: &str) {
        self.lock().remove(token);
    }

    /// Forgets tokens negotiated longer than `ttl` ago and never attached.
    pub fn sweep(&self, ttl: Duration) {
        let now = Instant::now();
        self.lock().retain(|_, s| s.attached.is_some() || now.duration_since(s.issued) < ttl);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A transport, for comparing attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_attaches_once_and_only_to_its_hub() {
        let t = Tokens::default();
        let (id, token) = t.issue(0, false);
        let ws = || Attached::WebSocket;
        assert_eq!(t.attach(&token, 1, TransportKind::WebSocket, ws), Err(TokenError::Unknown));
        assert_eq!(
            t.attach(&token, 0, TransportKind::WebSocket, ws),
            Ok(Negotiated { connection_id: id, stateful: false })
        );
        assert_eq!(t.attach(&token, 0, TransportKind::WebSocket, ws), Err(TokenError::InUse));
        assert_eq!(t.attach(&token, 0, TransportKind::LongPolling, ws), Err(TokenError::OtherTransport));
        t.release(&token);
        assert_eq!(t.attach(&token, 0, TransportKind::WebSocket, ws), Err(TokenError::Unknown));
    }

    #[test]
    fn unused_tokens_expire() {
        let t = Tokens::default();
        let (_, token) = t.issue(0, false);
        t.sweep(Duration::ZERO);
        assert!(!t.is_fresh(&token, 0));
    }
}
