//! Presence (CONTRACT section 11): who is in a room of a presence hub, on
//! any instance. A user is present while at least one of its connections
//! has joined the room; the first join and the last leave are transitions,
//! reported exactly once across tabs and instances (the hub turns them into
//! `user_joined` / `user_left` events). With Redis the state is shared and
//! each connection's entry expires unless its instance keeps refreshing it,
//! so a crashed instance's users vanish within the TTL; without Redis it
//! lives in this process.
//!
//! States (CONTRACT section 15): a user is `away` in a room while every one
//! of its connections there is idle (the hub marks a connection idle after
//! the hub's `away_after_seconds` without an invocation), `online`
//! otherwise; `SetPresence` sets it outright until the next change. Every
//! operation that changes who is in a room, or a state, marks the room, so
//! the hub can push participant counts.

mod activity_bus;
mod memory;
mod redis_store;

use crate::sync::Unpoisoned;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub(crate) use activity_bus::{activity_channel, publish_activity, SharedActivity};
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

/// Which store holds the presence state.
enum Store {
    /// In this process (no Redis).
    Memory(MemoryPresence),
    /// In Redis, shared by every instance.
    Redis(Box<RedisPresence>),
}

/// What a store operation changed, besides joins and leaves: whether a
/// user's state (online / away) changed with it.
pub(crate) type StateChanged = bool;

/// The presence store in use, and the rooms whose participants changed
/// since the hub last looked (participant counts, CONTRACT section 15).
pub(crate) struct Presence {
    store: Store,
    changed: Mutex<HashSet<(usize, String)>>,
    notify: Notify,
}

impl Presence {
    /// Presence in this process.
    pub(crate) fn memory() -> Presence {
        Presence::with(Store::Memory(MemoryPresence::default()))
    }

    /// Presence in Redis.
    pub(crate) fn redis(store: RedisPresence) -> Presence {
        Presence::with(Store::Redis(Box::new(store)))
    }

    fn with(store: Store) -> Presence {
        Presence { store, changed: Mutex::default(), notify: Notify::new() }
    }

    /// Adds a connection to a room; `Joined` if it is the user's first.
    pub(crate) async fn join(&self, member: &Member, username: &str) -> Result<Vec<Transition>, PresenceError> {
        let (t, state) = match &self.store {
            Store::Memory(m) => m.join(member, username),
            Store::Redis(r) => r.join(member, username).await?,
        };
        self.note(member.hub, &member.room, &t, state);
        Ok(t)
    }

    /// Removes a connection from a room; `Left` if it was the user's last.
    pub(crate) async fn leave(&self, member: &Member) -> Result<Vec<Transition>, PresenceError> {
        let (t, state) = match &self.store {
            Store::Memory(m) => m.leave(member),
            Store::Redis(r) => r.leave(member).await?,
        };
        self.note(member.hub, &member.room, &t, state);
        Ok(t)
    }

    /// Stops keeping `member`'s entry alive without removing it: a session
    /// that moved to another instance (a handoff) leaves its entries to
    /// expire a TTL later, by when the instance it moved to has added its
    /// own, so the user never looks gone. Without this the entries would be
    /// refreshed, and remembered, for as long as this instance runs: the
    /// user would never leave (no `user_left`) and the memory never return.
    pub(crate) fn forget(&self, member: &Member) {
        match &self.store {
            // Handoffs go through Redis: no other instance shares this store.
            Store::Memory(_) => {}
            Store::Redis(r) => r.forget(member),
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
        match &self.store {
            Store::Memory(m) => m.set_state(hub, room, user_id, state),
            Store::Redis(r) => r.set_state(hub, room, user_id, state).await?,
        }
        self.mark(hub, room);
        Ok(())
    }

    /// Marks one connection of a room idle (no invocation for the hub's
    /// `away_after_seconds`) or active again; the user is `away` while all
    /// its connections in the room are idle, `online` otherwise.
    pub(crate) async fn set_idle(&self, member: &Member, idle: bool) -> Result<(), PresenceError> {
        let state = match &self.store {
            Store::Memory(m) => m.set_idle(member, idle),
            Store::Redis(r) => r.set_idle(member, idle).await?,
        };
        if state {
            self.mark(member.hub, &member.room);
        }
        Ok(())
    }

    /// Who is present in a room.
    pub(crate) async fn users(&self, hub: usize, room: &str) -> Result<Vec<PresentUser>, PresenceError> {
        match &self.store {
            Store::Memory(m) => Ok(m.users(hub, room)),
            Store::Redis(r) => r.users(hub, room).await,
        }
    }

    /// Takes the right to publish a room's participant count for `every`:
    /// at most one instance wins it at a time, so clients get at most one
    /// count per room per `every` from the whole deployment.
    pub(crate) async fn claim_count(&self, hub: usize, room: &str, every: Duration) -> Result<bool, PresenceError> {
        match &self.store {
            Store::Memory(_) => Ok(true),
            Store::Redis(r) => r.claim_count(hub, room, every).await,
        }
    }

    /// Takes the rooms whose participants or their states changed.
    pub(crate) fn take_changed(&self) -> Vec<(usize, String)> {
        self.lock_changed().drain().collect()
    }

    /// Resolves when some room has changed since the last [`Presence::take_changed`].
    pub(crate) async fn changed(&self) {
        self.notify.notified().await
    }

    /// Keeps this instance's entries alive and expires everyone else's
    /// overdue ones; returns the users that left by expiry.
    pub(crate) async fn tick(&self) -> Result<Vec<Transition>, PresenceError> {
        match &self.store {
            Store::Memory(_) => Ok(Vec::new()),
            Store::Redis(r) => {
                let (t, rooms) = r.tick().await?;
                for (hub, room) in rooms {
                    self.mark(hub, &room);
                }
                for t in &t {
                    let (Transition::Joined { hub, room, .. } | Transition::Left { hub, room, .. }) = t;
                    self.mark(*hub, room);
                }
                Ok(t)
            }
        }
    }

    /// How often [`Presence::tick`] should run.
    pub(crate) fn tick_interval(&self) -> Option<Duration> {
        match &self.store {
            Store::Memory(_) => None,
            Store::Redis(r) => Some(r.tick_interval()),
        }
    }

    /// Records what an operation on `room` changed.
    fn note(&self, hub: usize, room: &str, transitions: &[Transition], state: StateChanged) {
        if state {
            self.mark(hub, room);
        }
        for t in transitions {
            let (Transition::Joined { hub, room, .. } | Transition::Left { hub, room, .. }) = t;
            self.mark(*hub, room);
        }
    }

    fn mark(&self, hub: usize, room: &str) {
        let fresh = self.lock_changed().insert((hub, room.to_string()));
        if fresh {
            self.notify.notify_one();
        }
    }

    fn lock_changed(&self) -> std::sync::MutexGuard<'_, HashSet<(usize, String)>> {
        // One insert or drain at a time: a poisoned set is still consistent.
        self.changed.locked()
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
