//! Connections, and the two-way maps group <-> connections and
//! user <-> connections, per hub.

use crate::sync::{Unpoisoned, UnpoisonedRw};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{Outbox, UserWatch, MAX_SLOTS};

mod shards;
#[cfg(test)]
pub(crate) use shards::shard_of;
use shards::ConnShards;
pub(crate) use shards::SHARDS;

/// A process-unique connection number (cheaper than the SignalR id string).
pub(crate) type ConnId = u64;

/// [`ConnEntry::expires_at_ms`] of a connection whose token never expires
/// (or that has none).
pub(crate) const NEVER: u64 = u64::MAX;

/// What fan-out knows about one connection.
#[derive(Debug)]
pub(crate) struct ConnEntry {
    /// Its number.
    pub id: ConnId,
    /// The hub it connected to.
    pub hub: usize,
    /// The authenticated user, if any.
    pub user: Option<Arc<str>>,
    /// Index of its protocol's encoding in a [`super::Frame`].
    pub slot: usize,
    /// Its transport's name, for metrics.
    pub transport: &'static str,
    /// Its outbound queue.
    pub outbox: Arc<Outbox>,
    /// Milliseconds (on the keep-alive clock) when the client was last heard.
    pub last_seen_ms: AtomicU64,
    /// Whether the client timeout applies: ASP.NET Core starts it at the
    /// client's first Ping, so clients that never ping (1.0-era and many
    /// community clients) are never dropped for silence. Long Polling sets
    /// it from the start: its polls are what shows the client is there.
    pub timeout_armed: AtomicBool,
    /// When its access token expires (Unix milliseconds); [`NEVER`] when
    /// it does not. Atomic: a stateful session that resumes with a fresh
    /// token lives by that one.
    pub expires_at_ms: AtomicU64,
    /// Its SignalR connection id, for the operators' introspection API
    /// (`query.rs`). Negotiate issues 32 hex digits (a UUID), so it is kept
    /// in 16 bytes, not as a string: per-connection memory is a benchmark
    /// target. Nil for an id that is not a UUID (none is issued today).
    pub connection_id: uuid::Uuid,
    /// When it entered fan-out on this instance (Unix milliseconds).
    pub since_ms: u64,
    /// What the client does, as opposed to what it merely keeps alive.
    pub activity: Activity,
}

#[cfg(test)]
impl ConnEntry {
    /// A JSON WebSocket connection of `hub` with an outbox of `max_frames`,
    /// for tests; they override what they need with `..`.
    pub(crate) fn for_test(id: ConnId, hub: usize, user: Option<&str>, max_frames: usize) -> ConnEntry {
        ConnEntry {
            id,
            hub,
            user: user.map(Into::into),
            slot: 0,
            transport: "websockets",
            outbox: Arc::new(Outbox::new(crate::transport::outbox::Limits { max_frames, max_bytes: 1 << 20 })),
            last_seen_ms: AtomicU64::new(0),
            timeout_armed: false.into(),
            expires_at_ms: NEVER.into(),
            connection_id: uuid::Uuid::nil(),
            since_ms: 0,
            activity: Default::default(),
        }
    }
}

/// A connection's activity, for the inactivity timeout and away presence
/// (CONTRACT section 15): pings are not activity, invocations are.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Milliseconds (on the keep-alive clock) of its last invocation, or of
    /// its handshake before the first.
    pub last_invoked_ms: AtomicU64,
    /// Marked idle in presence (no invocation for `away_after_seconds`).
    pub idle: AtomicBool,
    /// Milliseconds of the last invocation of any connection of its user on
    /// its hub here: away is the user's (CONTRACT section 15), so a tab the
    /// user left open is not away while they invoke in another.
    pub user_invoked_ms: AtomicU64,
}

/// Why a join was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum JoinError {
    /// The connection is gone.
    #[error("the connection is closed")]
    Closed,
    /// The connection is in too many groups already.
    #[error("a connection may join at most {0} groups")]
    TooManyGroups(usize),
}

/// The registry's maps: every event looks up its room's (or user's)
/// members, so they hash with aHash (random keys per process, as std's
/// SipHash, at a fraction of its cost; see Cargo.toml).
pub(super) type Map<K, V> = HashMap<K, V, ahash::RandomState>;

pub(super) type Members = Map<ConnId, Arc<ConnEntry>>;

#[derive(Default)]
pub(super) struct HubIndex {
    pub(super) all: Members,
    pub(super) groups: Map<Box<str>, Members>,
    pub(super) users: Map<Arc<str>, Members>,
}

pub(super) struct Conn {
    pub(super) entry: Arc<ConnEntry>,
    pub(super) groups: Vec<Box<str>>,
}

pub(super) struct Inner {
    pub(super) conns: ConnShards,
    pub(super) hubs: Vec<HubIndex>,
}

/// Where fan-out stands in each stream: the id of the last entry whose
/// frames were pushed (or that needed none). A connection taken out of
/// fan-out has every entry up to these in its outbox (if addressed to it)
/// and none after: the cut a stateful session hands to another instance.
pub(crate) type Positions = Vec<(Arc<str>, String)>;

/// What [`Registry::add_open`] tells the connection it added.
#[derive(Debug)]
pub(crate) struct Added {
    /// The positions when it entered fan-out.
    pub positions: Positions,
    /// The drain had listed the connections it tells to go before this one
    /// came: nobody else will tell it.
    pub after_drain: bool,
}

/// Every open connection of this instance.
pub(crate) struct Registry {
    inner: RwLock<Inner>,
    positions: std::sync::Mutex<Map<Arc<str>, String>>,
    slots_in_use: [AtomicUsize; MAX_SLOTS],
    max_groups: usize,
    user_watch: std::sync::OnceLock<Arc<UserWatch>>,
    /// Where large fan-outs have their wake-ups done (`wakes.rs`); unset,
    /// the fan-out wakes the tasks itself.
    wakes: std::sync::OnceLock<super::wakes::WakeSender>,
    /// Set, under the write lock, when the drain lists the connections it
    /// tells to go ([`Registry::close_to_new`]); read under it by every add.
    closed: AtomicBool,
}

impl Registry {
    /// An empty registry for `hubs` hubs; a connection may join `max_groups` groups.
    pub(crate) fn new(hubs: usize, max_groups: usize) -> Registry {
        Registry {
            inner: RwLock::new(Inner {
                conns: ConnShards::default(),
                hubs: (0..hubs).map(|_| HubIndex::default()).collect(),
            }),
            slots_in_use: std::array::from_fn(|_| AtomicUsize::new(0)),
            max_groups,
            positions: std::sync::Mutex::default(),
            user_watch: std::sync::OnceLock::new(),
            wakes: std::sync::OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// From now on, large fan-outs hand the wake-ups of their connections'
    /// tasks to `sender`'s task (`wakes.rs`), for a fan-out that runs on a
    /// thread outside the connections' runtime.
    pub(crate) fn wake_through(&self, sender: super::wakes::WakeSender) {
        let _ = self.wakes.set(sender);
    }

    pub(super) fn wake_sender(&self) -> Option<&super::wakes::WakeSender> {
        self.wakes.get()
    }

    /// From now on, every connection of a user that opens or closes is
    /// recorded in the returned watch (the same one on every call).
    pub(crate) fn watch_users(&self) -> Arc<UserWatch> {
        self.user_watch.get_or_init(Arc::default).clone()
    }

    /// Users recorded in the watch and not yet taken (0 without a watch).
    #[cfg(test)]
    pub(crate) fn users_recorded(&self) -> usize {
        self.user_watch.get().map_or(0, |w| w.recorded())
    }

    fn user_changed(&self, user: Option<&Arc<str>>) {
        if let (Some(watch), Some(user)) = (self.user_watch.get(), user) {
            watch.mark(user);
        }
    }

    /// Records that every entry of `stream` up to `id` has been fanned out.
    /// Called under the fan-out's read lock by [`Registry::deliver`], so a
    /// [`Registry::detach`] never sees a position ahead of what was pushed.
    /// The id is copied into the string the position already has: moving
    /// it allocates nothing (every entry read moves it, skipped or not).
    pub(crate) fn advance(&self, stream: &Arc<str>, id: &str) {
        let mut positions = self.positions.locked();
        match positions.get_mut(stream) {
            Some(at) => {
                at.clear();
                at.push_str(id);
            }
            None => {
                positions.insert(stream.clone(), id.to_string());
            }
        }
    }

    /// The current positions.
    pub(crate) fn positions(&self) -> Positions {
        let positions = self.positions.locked();
        positions.iter().map(|(s, id)| (s.clone(), id.clone())).collect()
    }

    /// Adds a connection with its groups at once and returns the positions
    /// at that instant: everything after them reaches its outbox.
    #[cfg(test)]
    pub(crate) fn add_with_groups(&self, entry: Arc<ConnEntry>, groups: &[Box<str>]) -> Positions {
        self.add_open(entry, groups).positions
    }

    /// Adds a connection with its groups at once: the positions at that
    /// instant (everything after them reaches its outbox), and whether the
    /// drain had already listed the connections it tells to go, so that
    /// the caller must tell this one itself.
    pub(crate) fn add_open(&self, entry: Arc<ConnEntry>, groups: &[Box<str>]) -> Added {
        self.slots_in_use[entry.slot].fetch_add(1, Ordering::Relaxed);
        let mut inner = self.write();
        // Under the write lock, as the drain's list is taken: each
        // connection is either in that list or told it came after it.
        let after_drain = self.closed.load(Ordering::Relaxed);
        let hub = &mut inner.hubs[entry.hub];
        hub.all.insert(entry.id, entry.clone());
        if let Some(user) = &entry.user {
            hub.users.entry(user.clone()).or_default().insert(entry.id, entry.clone());
        }
        let mut joined: Vec<Box<str>> = Vec::new();
        for g in groups {
            if joined.len() < self.max_groups && !joined.contains(g) {
                hub.groups.entry(g.clone()).or_default().insert(entry.id, entry.clone());
                joined.push(g.clone());
            }
        }
        let user = entry.user.clone();
        inner.conns.insert(entry.id, Conn { entry, groups: joined });
        // Read under the write lock: a delivery that starts after the lock is
        // released reaches this connection and is past these positions.
        let positions = self.positions();
        drop(inner);
        self.user_changed(user.as_ref());
        Added { positions, after_drain }
    }

    /// Every open connection, for the drain to tell to go; from now on an
    /// added connection is told it came after this list ([`Added::after_drain`]).
    pub(crate) fn close_to_new(&self) -> Vec<Arc<ConnEntry>> {
        let inner = self.write();
        self.closed.store(true, Ordering::Relaxed);
        inner.conns.values().map(|c| c.entry.clone()).collect()
    }

    /// Takes a connection out of fan-out and returns its groups and the
    /// positions at that instant (see [`Positions`]).
    pub(crate) fn detach(&self, id: ConnId) -> (Vec<Box<str>>, Positions) {
        let mut inner = self.write();
        let positions = self.positions();
        let user = inner.conns.get(&id).and_then(|c| c.entry.user.clone());
        let groups = Self::remove_locked(&mut inner, &self.slots_in_use, id);
        drop(inner);
        self.user_changed(user.as_ref());
        (groups, positions)
    }

    /// Adds an open connection (after its handshake).
    #[cfg(test)]
    pub(crate) fn add(&self, entry: Arc<ConnEntry>) {
        self.add_with_groups(entry, &[]);
    }

    /// Removes a connection from everything; returns the groups it was in.
    pub(crate) fn remove(&self, id: ConnId) -> Vec<Box<str>> {
        let mut inner = self.write();
        let user = inner.conns.get(&id).and_then(|c| c.entry.user.clone());
        let groups = Self::remove_locked(&mut inner, &self.slots_in_use, id);
        drop(inner);
        self.user_changed(user.as_ref());
        groups
    }

    fn remove_locked(inner: &mut Inner, slots_in_use: &[AtomicUsize; MAX_SLOTS], id: ConnId) -> Vec<Box<str>> {
        let Some(conn) = inner.conns.remove(&id) else {
            return Vec::new();
        };
        slots_in_use[conn.entry.slot].fetch_sub(1, Ordering::Relaxed);
        let hub = &mut inner.hubs[conn.entry.hub];
        hub.all.remove(&id);
        if let Some(user) = &conn.entry.user {
            remove_member(&mut hub.users, user, id);
        }
        for g in &conn.groups {
            remove_member(&mut hub.groups, g, id);
        }
        conn.groups
    }

    /// Adds a connection to a group of its hub. `Ok(false)` if it was in it already.
    pub(crate) fn join(&self, id: ConnId, group: &str) -> Result<bool, JoinError> {
        let mut inner = self.write();
        let Inner { conns, hubs } = &mut *inner;
        let conn = conns.get_mut(&id).ok_or(JoinError::Closed)?;
        if conn.groups.iter().any(|g| &**g == group) {
            return Ok(false);
        }
        if conn.groups.len() >= self.max_groups {
            return Err(JoinError::TooManyGroups(self.max_groups));
        }
        conn.groups.push(group.into());
        let entry = conn.entry.clone();
        hubs[entry.hub].groups.entry(group.into()).or_default().insert(id, entry);
        Ok(true)
    }

    /// [`Registry::join`], and the positions at that instant: every entry
    /// after them that the group receives reaches the connection's outbox,
    /// none up to them does (a history join replays those from the room's
    /// history).
    pub(crate) fn join_at(&self, id: ConnId, group: &str) -> Result<(bool, Positions), JoinError> {
        let mut inner = self.write();
        let Inner { conns, hubs } = &mut *inner;
        let conn = conns.get_mut(&id).ok_or(JoinError::Closed)?;
        if conn.groups.iter().any(|g| &**g == group) {
            return Ok((false, self.positions()));
        }
        if conn.groups.len() >= self.max_groups {
            return Err(JoinError::TooManyGroups(self.max_groups));
        }
        conn.groups.push(group.into());
        let entry = conn.entry.clone();
        hubs[entry.hub].groups.entry(group.into()).or_default().insert(id, entry);
        Ok((true, self.positions()))
    }

    /// A connection's entry, if it is open.
    pub(crate) fn entry(&self, id: ConnId) -> Option<Arc<ConnEntry>> {
        self.read().conns.get(&id).map(|c| c.entry.clone())
    }

    /// Removes a connection from a group. False if it was not in it.
    pub(crate) fn leave(&self, id: ConnId, group: &str) -> bool {
        let mut inner = self.write();
        let Inner { conns, hubs } = &mut *inner;
        let Some(conn) = conns.get_mut(&id) else {
            return false;
        };
        let Some(pos) = conn.groups.iter().position(|g| &**g == group) else {
            return false;
        };
        conn.groups.swap_remove(pos);
        let hub = conn.entry.hub;
        remove_member(&mut hubs[hub].groups, group, id);
        true
    }

    /// The groups a connection is in.
    pub(crate) fn groups_of(&self, id: ConnId) -> Vec<Box<str>> {
        self.read().conns.get(&id).map(|c| c.groups.clone()).unwrap_or_default()
    }

    /// Whether a connection is in a group (what typing into it and asking
    /// its presence need, short of the join policy allowing the caller).
    pub(crate) fn in_group(&self, id: ConnId, group: &str) -> bool {
        self.read().conns.get(&id).is_some_and(|c| c.groups.iter().any(|g| &**g == group))
    }

    /// Runs `f` on each connection of `user` on `hub`.
    pub(crate) fn for_each_of_user(&self, hub: usize, user: &str, mut f: impl FnMut(&ConnEntry)) {
        if let Some(members) = self.read().members(hub, None, Some(user)) {
            members.values().for_each(|e| f(e));
        }
    }

    /// Whether any connection uses this protocol slot (so events need not be
    /// encoded for protocols nobody speaks).
    pub(crate) fn slot_in_use(&self, slot: usize) -> bool {
        self.slots_in_use[slot].load(Ordering::Relaxed) > 0
    }

    /// Open connections of `user` on every hub.
    pub(crate) fn user_connections(&self, user: &str) -> usize {
        self.read().hubs.iter().filter_map(|h| h.users.get(user)).map(|m| m.len()).sum()
    }

    /// Open connections of `user` on `hub` (the ones an event of that hub
    /// to `user:<id>` reaches).
    pub(crate) fn user_connections_on(&self, hub: usize, user: &str) -> usize {
        self.read().hubs.get(hub).and_then(|h| h.users.get(user)).map_or(0, |m| m.len())
    }

    /// Number of open connections.
    pub(crate) fn len(&self) -> usize {
        self.read().conns.len()
    }

    /// True when no connection is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every connection, for the keep-alive tick and the drain.
    pub(crate) fn snapshot(&self) -> Vec<Arc<ConnEntry>> {
        self.read().conns.values().map(|c| c.entry.clone()).collect()
    }

    /// A snapshot of the connections `target` names now: those an event
    /// sent to it would reach (and that may have been owed one that was lost).
    pub(crate) fn members_of(&self, target: super::Target<'_>) -> Vec<Arc<ConnEntry>> {
        let (hub, group, user) = target.parts();
        let inner = self.read();
        inner.members(hub, group, user).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Calls `f` for every connection under the read lock; `f` must not block.
    #[cfg(test)]
    pub(crate) fn for_each(&self, mut f: impl FnMut(&ConnEntry)) {
        for c in self.read().conns.values() {
            f(&c.entry);
        }
    }

    /// Calls `f` for every connection of shard `shard` ([`shards::shard_of`]) under
    /// the read lock; `f` must not block. The keep-alive tick visits only
    /// the shards whose checkpoints it passed.
    pub(crate) fn for_each_in_shard(&self, shard: usize, mut f: impl FnMut(&ConnEntry)) {
        for c in self.read().conns.shard(shard) {
            f(&c.entry);
        }
    }

    /// Connections per (hub, transport), for the `sidecar_connections` gauge.
    #[cfg(test)]
    pub(crate) fn count_by_hub_transport(&self) -> HashMap<(usize, &'static str), usize> {
        let mut out = HashMap::new();
        for c in self.read().conns.values() {
            *out.entry((c.entry.hub, c.entry.transport)).or_default() += 1;
        }
        out
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Every mutation leaves the maps consistent, so a poisoned lock is usable.
        self.inner.read_any()
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write_any()
    }
}

impl Inner {
    /// The members a target names, if any.
    pub(super) fn members(&self, hub: usize, group: Option<&str>, user: Option<&str>) -> Option<&Members> {
        let h = self.hubs.get(hub)?;
        match (group, user) {
            (Some(g), _) => h.groups.get(g),
            (None, Some(u)) => h.users.get(u),
            (None, None) => Some(&h.all),
        }
    }
}

fn remove_member<K: std::borrow::Borrow<str> + std::hash::Hash + Eq>(map: &mut Map<K, Members>, key: &str, id: ConnId) {
    if let Some(members) = map.get_mut(key) {
        members.remove(&id);
        if members.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests;
