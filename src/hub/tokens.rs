//! Connection tokens handed out by negotiate, and which of them are in use:
//! an unknown token is 404, a token already connected is 409 (as in
//! ASP.NET Core). Tokens only exist on the instance that issued them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::HubId;

/// Why a token cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Never issued here, expired, or for another hub.
    #[error("No Connection with that ID")]
    Unknown,
    /// A transport is connected with it already.
    #[error("Connection already in use")]
    InUse,
}

#[derive(Debug)]
struct Slot {
    connection_id: String,
    hub: HubId,
    issued: Instant,
    connected: bool,
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
    pub fn issue(&self, hub: HubId) -> (String, String) {
        let (connection_id, token) = (new_id(), new_id());
        self.lock().insert(
            token.clone(),
            Slot {
                connection_id: connection_id.clone(),
                hub,
                issued: Instant::now(),
                connected: false,
            },
        );
        (connection_id, token)
    }

    /// Marks a token connected; returns its connection id.
    pub fn connect(&self, token: &str, hub: HubId) -> Result<String, TokenError> {
        let mut slots = self.lock();
        let slot = slots
            .get_mut(token)
            .filter(|s| s.hub == hub)
            .ok_or(TokenError::Unknown)?;
        if slot.connected {
            return Err(TokenError::InUse);
        }
        slot.connected = true;
        Ok(slot.connection_id.clone())
    }

    /// Whether the token is known.
    pub fn contains(&self, token: &str) -> bool {
        self.lock().contains_key(token)
    }

    /// Forgets a token when its connection ends.
    pub fn release(&self, token: &str) {
        self.lock().remove(token);
    }

    /// Forgets tokens negotiated longer than `ttl` ago and never connected.
    pub fn sweep(&self, ttl: Duration) {
        let now = Instant::now();
        self.lock()
            .retain(|_, s| s.connected || now.duration_since(s.issued) < ttl);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_connects_once_and_only_to_its_hub() {
        let t = Tokens::default();
        let (id, token) = t.issue(0);
        assert_eq!(t.connect(&token, 1), Err(TokenError::Unknown));
        assert_eq!(t.connect(&token, 0), Ok(id));
        assert_eq!(t.connect(&token, 0), Err(TokenError::InUse));
        t.release(&token);
        assert_eq!(t.connect(&token, 0), Err(TokenError::Unknown));
        assert_eq!(t.connect("nope", 0), Err(TokenError::Unknown));
    }

    #[test]
    fn unused_tokens_expire() {
        let t = Tokens::default();
        let (_, token) = t.issue(0);
        t.sweep(Duration::ZERO);
        assert_eq!(t.connect(&token, 0), Err(TokenError::Unknown));
    }
}
