//! Invocations as activity (CONTRACT section 15, seed 003 FR-034, FR-035):
//! a hub's `inactivity_timeout_seconds` closes a connection that sent no
//! invocation for that long, and its `away_after_seconds` marks it idle in
//! presence once its user sent none from any of its connections on the hub
//! (here) for that long, until the user's next invocation (its user turns
//! away once all its connections in a room are idle). Pings keep a connection alive; they are
//! not activity.
//!
//! Away is the user's across instances too: an invocation here is shared
//! with the other instances (at most once per user and a tenth of the
//! hub's away time, [`share_every`]) through [`Activity::share_through`],
//! and what they share is applied by [`Activity::remote`], so a user busy
//! in a tab on one instance is not turned away in another's rooms, and
//! comes online there again with an invocation anywhere.
//!
//! Both are checked on the keep-alive's shared once-a-second pass, never
//! by a timer per connection. Presence writes leave the pass as notices,
//! done in order by one task (`participants`), so the keep-alive never
//! waits on Redis and the last notice of a connection is the one that
//! holds.

use crate::sync::Unpoisoned;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::config::{HubId, RouteTable};
use crate::fanout::{ConnEntry, ConnId, Registry};
use crate::transport::Kick;

/// What the presence task is asked to do for one connection.
pub(super) enum Notice {
    /// Mark the connection idle (`true`) or active (`false`) in every room
    /// it is in.
    Idle {
        /// The connection.
        conn: ConnId,
        /// Its hub.
        hub: HubId,
        /// Its user.
        user: Arc<str>,
        /// Its public id (presence entries are named by it).
        connection_id: Arc<str>,
        /// Idle, or active again.
        idle: bool,
    },
    /// `SetPresence` on a hub with automatic away: done in turn with the
    /// notices before it, so an older notice cannot undo it.
    Explicit {
        /// Its hub.
        hub: HubId,
        /// The caller's rooms.
        rooms: Vec<Box<str>>,
        /// The caller's user.
        user: String,
        /// `online` or `away`.
        state: String,
        /// Told when done, with the outcome.
        done: oneshot::Sender<Result<(), crate::presence::PresenceError>>,
    },
}

/// A user active on a hub here, for the other instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActiveUser {
    /// The hub.
    pub hub: HubId,
    /// The user.
    pub user: Arc<str>,
}

/// How often at most a user's activity on a hub whose away time is
/// `away_ms` is shared: a tenth of it (50 ms to 30 s), so the other
/// instances turn a user away at most that much early. An invocation after
/// a longer quiet is shared at once, so "online again" is never held back.
pub(crate) fn share_every(away_ms: u64) -> u64 {
    (away_ms / 10).clamp(50, 30_000)
}

/// When each (hub, user) was last shared; pruned as it grows.
#[derive(Default)]
struct SharedAt {
    at: HashMap<(HubId, Arc<str>), u64, ahash::RandomState>,
    prune_above: usize,
}

/// The per-hub limits and the notice queue.
pub(crate) struct Activity {
    inactivity_ms: Vec<Option<u64>>,
    away_ms: Vec<Option<u64>>,
    notices: mpsc::UnboundedSender<Notice>,
    queue: Mutex<Option<mpsc::UnboundedReceiver<Notice>>>,
    /// Where activity for the other instances goes (with Redis only).
    share: OnceLock<mpsc::UnboundedSender<ActiveUser>>,
    shared_at: Mutex<SharedAt>,
}

impl Activity {
    /// The limits the routing file sets per hub (the queue holds at most
    /// about one notice per connection: one per change of its idleness).
    pub(crate) fn new(routes: &RouteTable) -> Activity {
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
        let (notices, queue) = mpsc::unbounded_channel();
        Activity {
            inactivity_ms: routes.hubs.iter().map(|h| ms(h.options.inactivity_timeout)).collect(),
            away_ms: routes.hubs.iter().map(|h| ms(h.options.away_after.filter(|_| h.presence))).collect(),
            notices,
            queue: Mutex::new(Some(queue)),
            share: OnceLock::new(),
            shared_at: Mutex::new(SharedAt::default()),
        }
    }

    /// From now on, users' activity on hubs that track away is handed to
    /// the returned queue for the other instances (`None` if already
    /// asked: one sharer per process).
    pub(crate) fn share_through(&self) -> Option<mpsc::UnboundedReceiver<ActiveUser>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.share.set(tx).ok().map(|()| rx)
    }

    /// Whether `hub` turns idle users away by itself.
    pub(crate) fn tracks_away(&self, hub: HubId) -> bool {
        self.away_ms.get(hub).is_some_and(Option::is_some)
    }

    /// The keep-alive's once-a-second look at one connection at `now_ms`:
    /// closes it past its hub's inactivity timeout (true), marks it idle
    /// past its hub's away time.
    pub(super) fn check(&self, entry: &ConnEntry, now_ms: u64) -> bool {
        let idle_for = now_ms.saturating_sub(entry.activity.last_invoked_ms.load(Ordering::Relaxed));
        if self.inactivity_ms.get(entry.hub).copied().flatten().is_some_and(|limit| idle_for > limit) {
            entry.outbox.kick(Kick::Inactive);
            return true;
        }
        // Away is the user's: no invocation from any of its connections here.
        let user_idle_for = now_ms.saturating_sub(entry.activity.user_invoked_ms.load(Ordering::Relaxed));
        let away = self.away_ms.get(entry.hub).copied().flatten();
        if away.is_some_and(|away| user_idle_for > away) && !entry.activity.idle.swap(true, Ordering::AcqRel) {
            self.notify(entry, true);
        }
        false
    }

    /// An invocation of `entry` at `now_ms`: it is active (again), and so
    /// is its user on every connection of the hub here (away is the user's)
    /// and, when `share` (not for `SetPresence`, which sets the state
    /// itself), on the other instances.
    pub(super) fn invoked(&self, entry: &ConnEntry, now_ms: u64, registry: &Registry, share: bool) {
        entry.activity.last_invoked_ms.store(now_ms, Ordering::Relaxed);
        self.wake(entry, now_ms);
        if let (Some(user), true) = (&entry.user, self.tracks_away(entry.hub)) {
            registry.for_each_of_user(entry.hub, user, |e| {
                if e.id != entry.id {
                    self.wake(e, now_ms);
                }
            });
            if share {
                self.share(entry.hub, user, now_ms);
            }
        }
    }

    /// Another instance saw `user` invoke on `hub`: its connections here
    /// are active (again) as of `now_ms`.
    pub(crate) fn remote(&self, hub: HubId, user: &str, now_ms: u64, registry: &Registry) {
        if self.tracks_away(hub) {
            registry.for_each_of_user(hub, user, |e| self.wake(e, now_ms));
        }
    }

    /// `e`'s user invoked at `now_ms`: a connection marked idle is active again.
    fn wake(&self, e: &ConnEntry, now_ms: u64) {
        e.activity.user_invoked_ms.fetch_max(now_ms, Ordering::Relaxed);
        if e.activity.idle.swap(false, Ordering::AcqRel) {
            self.notify(e, false);
        }
    }

    /// Hands the activity to the other instances unless it was shared less
    /// than [`share_every`] ago.
    fn share(&self, hub: HubId, user: &Arc<str>, now_ms: u64) {
        let (Some(tx), Some(away)) = (self.share.get(), self.away_ms.get(hub).copied().flatten()) else { return };
        let every = share_every(away);
        let mut shared = self.shared_at.locked();
        let key = (hub, user.clone());
        if shared.at.get(&key).is_some_and(|at| now_ms.saturating_sub(*at) < every) {
            return;
        }
        shared.at.insert(key, now_ms);
        if shared.at.len() > shared.prune_above {
            // Entries older than the longest interval decide nothing.
            shared.at.retain(|_, at| now_ms.saturating_sub(*at) < 30_000);
            shared.prune_above = (shared.at.len() * 2).max(1024);
        }
        drop(shared);
        let _ = tx.send(ActiveUser { hub, user: user.clone() });
    }

    /// Queues an explicit state for the presence task.
    pub(super) fn explicit(&self, notice: Notice) -> bool {
        self.notices.send(notice).is_ok()
    }

    fn notify(&self, entry: &ConnEntry, idle: bool) {
        let Some(user) = entry.user.clone() else { return };
        let notice = Notice::Idle {
            conn: entry.id,
            hub: entry.hub,
            user,
            // Issued as a UUID's 32 digits: the id presence names it by.
            connection_id: Arc::from(entry.connection_id.simple().to_string()),
            idle,
        };
        if self.notices.send(notice).is_err() {
            // The task has stopped (shutting down): try again next time.
            entry.activity.idle.store(!idle, Ordering::Release);
        }
    }

    /// The queue, for the one task that does the notices.
    pub(super) fn take_queue(&self) -> Option<mpsc::UnboundedReceiver<Notice>> {
        self.queue.locked().take()
    }
}

/// `SetPresence(state)` on a hub that tracks idleness: done by the presence
/// task in turn with the idleness notices queued before it (the one that
/// marked this very connection active, for one), then answered.
pub(super) async fn set_presence(
    hubs: &super::Hubs,
    hub: HubId,
    conn: ConnId,
    user: &str,
    state: &str,
) -> Result<serde_json::Value, super::Error> {
    let (done, outcome) = oneshot::channel();
    let rooms = hubs.registry.groups_of(conn);
    let notice = Notice::Explicit { hub, rooms: rooms.clone(), user: user.to_string(), state: state.to_string(), done };
    let set = match hubs.activity.explicit(notice) {
        true => outcome.await.ok(),
        false => None,
    };
    let set = match set {
        Some(result) => result.map_err(super::Error::Presence),
        // The presence task has stopped (shutting down): set it here.
        None => {
            for room in &rooms {
                hubs.presence.set_state(hub, room, user, state).await?;
            }
            Ok(())
        }
    };
    set?;
    // On a hub that turns users away by activity, an explicit away is
    // marked as idleness too: the user's next invocation makes it online
    // again, as after an automatic away (CONTRACT section 15: "online
    // again with the next"; seed 003 FR-034: status by activity).
    let away = state == "away";
    hubs.registry.for_each_of_user(hub, user, |e| e.activity.idle.store(away, Ordering::Release));
    Ok(serde_json::Value::Null)
}
