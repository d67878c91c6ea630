//! Who calls a server method: one connection of a hub and the user on its
//! other end. Invocations take it whole instead of its parts, and the
//! session builds it from its own fields, so the two cannot disagree on who
//! a connection is (in presence, typing and rate limits).

use crate::config::HubDef;
use crate::fanout::ConnId;

use super::Identity;

/// A connection calling a server method.
#[derive(Debug, Clone, Copy)]
pub(super) struct Caller<'a> {
    /// The hub it is connected to.
    pub hub: &'a HubDef,
    /// Its number in fan-out.
    pub conn: ConnId,
    /// Its public SignalR connection id.
    pub connection_id: &'a str,
    /// Who is on the other end.
    pub identity: &'a Identity,
}

impl Caller<'_> {
    /// The user id, or without authentication the connection id, which
    /// stands in so typing and presence states still work in the default
    /// set-up.
    pub(super) fn user_or_connection(&self) -> &str {
        self.identity.user_id.as_deref().unwrap_or(self.connection_id)
    }

    /// Whether presence is kept for this caller: the hub asks for it and
    /// there is a user (without authentication there are none).
    pub(super) fn in_presence(&self) -> bool {
        self.hub.presence && self.identity.user_id.is_some()
    }

    /// This connection's presence entry in `room`.
    pub(super) fn member(&self, room: &str) -> crate::presence::Member {
        crate::presence::Member {
            hub: self.hub.id,
            room: room.to_string(),
            user_id: self.user_or_connection().to_string(),
            connection: self.connection_id.to_string(),
        }
    }
}
