//! Presence (CONTRACT section 11): who is in a room of a presence hub, on
//! any instance. A user is present while at least one of its connections
//! has joined the room; the first join and the last leave are transitions,
//! reported exactly once across tabs and instances (the hub turns them into
//! `user_joined` / `user_left` events). With Redis the state is shared and
//! each connection's entry expires unless its instance keeps refreshing it,
//! so a crashed instance's users vanish within the TTL; without Redis it
//! lives in this process.

mod memory;
mod redis_store;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use memory::MemoryPresence;
pub(crate) use redis_store::RedisPresence;

/// Why a presence operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PresenceError {
    /// Redis refused or did not answer.
    #[error("presence store: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A user's presence in one room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PresentUser {
    /// The user id.
    pub user_id: String,
    /// Display name.
    pub username: String,
    /// `online` or `away`.
    pub state: String,
}

/// A user became present in a room, or stopped being present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The user's first connection joined.
    Joined {
        /// Hub index.
        hub: usize,
        /// Room.
        room: String,
        /// Who.
        user: PresentUser,
    },
    /// The user's last connection left (or expired).
    Left {
        /// Hub index.
        hub: usize,
        /// Room.
        room: String,
        /// Who.
        user: PresentUser,
    },
}

/// One connection's place in a room, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Member {
    /// Hub index.
    pub hub: usize,
    /// Room.
    pub room: String,
    /// User id.
    pub user_id: String,
    /// A connection id unique across instances.
    pub connection: String,
}

/// The presence store in use.
pub(crate) enum Presence {
    /// In this process (no Redis).
    Memory(MemoryPresence),
    /// In Redis, shared by every instance.
    Redis(Box<RedisPresence>),
}

impl Presence {
    /// Adds a connection to a room; `Joined` if it is the user's first.
    pub(crate) async fn join(&self, member: &Member, username: &str) -> Result<Vec<Transition>, PresenceError> {
        match self {
            Presence::Memory(m) => Ok(m.join(member, username)),
            Presence::Redis(r) => r.join(member, username).await,
        }
    }

    /// Removes a connection from a room; `Left` if it was the user's last.
    pub(crate) async fn leave(&self, member: &Member) -> Result<Vec<Transition>, PresenceError> {
        match self {
            Presence::Memory(m) => Ok(m.leave(member)),
            Presence::Redis(r) => r.leave(member).await,
        }
    }

    /// Sets a user's state (`online` / `away`) in a room it is present in.
    pub(crate) async fn set_state(
        &self,
        hub: usize,
        room: &str,
        user_id: &str,
        state: &str,
    ) -> Result<(), PresenceError> {
        match self {
            Presence::Memory(m) => {
                m.set_state(hub, room, user_id, state);
                Ok(())
            }
            Presence::Redis(r) => r.set_state(hub, room, user_id, state).await,
        }
    }

    /// Who is present in a room.
    pub(crate) async fn users(&self, hub: usize, room: &str) -> Result<Vec<PresentUser>, PresenceError> {
        match self {
            Presence::Memory(m) => Ok(m.users(hub, room)),
            Presence::Redis(r) => r.users(hub, room).await,
        }
    }

    /// Keeps this instance's entries alive and expires everyone else's
    /// overdue ones; returns the users that left by expiry.
    pub(crate) async fn tick(&self) -> Result<Vec<Transition>, PresenceError> {
        match self {
            Presence::Memory(_) => Ok(Vec::new()),
            Presence::Redis(r) => r.tick().await,
        }
    }

    /// How often [`Presence::tick`] should run.
    pub(crate) fn tick_interval(&self) -> Option<Duration> {
        match self {
            Presence::Memory(_) => None,
            Presence::Redis(r) => Some(r.tick_interval()),
        }
    }
}

impl crate::fault::Blame for PresenceError {
    fn fault(&self) -> crate::fault::Fault {
        crate::fault::Fault::Redis
    }

    fn reason(&self) -> &'static str {
        "presence_store"
    }
}
