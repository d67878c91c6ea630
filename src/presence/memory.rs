//! Presence in this process, for the in-process bus.

use crate::sync::Unpoisoned;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::{Member, PresentUser, StateChanged, Transition};

/// One user in one room.
struct User {
    connections: usize,
    username: String,
    state: String,
}

#[derive(Default)]
struct Room {
    /// connection -> user
    members: HashMap<String, String>,
    /// The connections marked idle.
    idle: HashSet<String>,
    /// Users whose idleness is tracked (a hub with `away_after_seconds`):
    /// for the others the state is `SetPresence`'s alone.
    tracked: HashSet<String>,
    users: HashMap<String, User>,
}

impl Room {
    /// Sets the user's state from its connections' idleness; true if it changed.
    fn recompute(&mut self, user_id: &str) -> StateChanged {
        if !self.tracked.contains(user_id) {
            return false;
        }
        let idle = self.members.iter().filter(|(c, u)| u.as_str() == user_id && self.idle.contains(*c)).count();
        let Some(user) = self.users.get_mut(user_id) else { return false };
        let want = if idle >= user.connections { "away" } else { "online" };
        if user.state == want {
            return false;
        }
        user.state = want.to_string();
        true
    }
}

/// Rooms keyed by (hub, room).
#[derive(Default)]
pub(crate) struct MemoryPresence {
    rooms: Mutex<HashMap<(usize, String), Room>>,
}

impl MemoryPresence {
    pub(super) fn join(&self, m: &Member, username: &str) -> (Vec<Transition>, StateChanged) {
        let mut rooms = self.lock();
        let room = rooms.entry((m.hub, m.room.clone())).or_default();
        if room.members.insert(m.connection.clone(), m.user_id.clone()).is_some() {
            return (Vec::new(), false);
        }
        let user = room.users.entry(m.user_id.clone()).or_insert(User {
            connections: 0,
            username: username.to_string(),
            state: "online".to_string(),
        });
        user.connections += 1;
        if user.connections > 1 {
            return (Vec::new(), room.recompute(&m.user_id));
        }
        let user = PresentUser { user_id: m.user_id.clone(), username: username.to_string(), state: "online".into() };
        (vec![Transition::Joined { hub: m.hub, room: m.room.clone(), user }], false)
    }

    pub(super) fn leave(&self, m: &Member) -> (Vec<Transition>, StateChanged) {
        let mut rooms = self.lock();
        let key = (m.hub, m.room.clone());
        let Some(room) = rooms.get_mut(&key) else { return (Vec::new(), false) };
        let Some(user_id) = room.members.remove(&m.connection) else { return (Vec::new(), false) };
        room.idle.remove(&m.connection);
        let mut out = Vec::new();
        let mut changed = false;
        if let Some(user) = room.users.get_mut(&user_id) {
            user.connections -= 1;
            if user.connections == 0 {
                room.tracked.remove(&user_id);
                if let Some(User { username, state, .. }) = room.users.remove(&user_id) {
                    let user = PresentUser { user_id, username, state };
                    out.push(Transition::Left { hub: m.hub, room: m.room.clone(), user });
                }
            } else {
                changed = room.recompute(&user_id);
            }
        }
        if room.members.is_empty() {
            rooms.remove(&key);
        }
        (out, changed)
    }

    pub(super) fn set_state(&self, hub: usize, room: &str, user_id: &str, state: &str) {
        if let Some(user) = self.lock().get_mut(&(hub, room.to_string())).and_then(|r| r.users.get_mut(user_id)) {
            user.state = state.to_string();
        }
    }

    pub(super) fn set_idle(&self, m: &Member, idle: bool) -> StateChanged {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&(m.hub, m.room.clone())) else { return false };
        if !room.members.contains_key(&m.connection) {
            return false;
        }
        room.tracked.insert(m.user_id.clone());
        if idle {
            room.idle.insert(m.connection.clone());
        } else {
            room.idle.remove(&m.connection);
        }
        room.recompute(&m.user_id)
    }

    pub(super) fn users(&self, hub: usize, room: &str) -> Vec<PresentUser> {
        let rooms = self.lock();
        let mut users: Vec<PresentUser> = rooms
            .get(&(hub, room.to_string()))
            .map(|r| {
                r.users
                    .iter()
                    .map(|(id, u)| PresentUser {
                        user_id: id.clone(),
                        username: u.username.clone(),
                        state: u.state.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        users
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, String), Room>> {
        self.rooms.locked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(user: &str, conn: &str) -> Member {
        Member { hub: 0, room: "r".into(), user_id: user.into(), connection: conn.into() }
    }

    #[test]
    fn two_tabs_one_join_one_leave() {
        let p = MemoryPresence::default();
        assert_eq!(p.join(&m("u", "c1"), "U").0.len(), 1);
        assert!(p.join(&m("u", "c2"), "U").0.is_empty(), "second tab");
        assert!(p.join(&m("u", "c2"), "U").0.is_empty(), "same tab again");
        p.set_state(0, "r", "u", "away");
        assert_eq!(p.users(0, "r")[0].state, "away");
        assert!(p.leave(&m("u", "c1")).0.is_empty());
        let (left, _) = p.leave(&m("u", "c2"));
        assert!(matches!(&left[..], [Transition::Left { user, .. }] if user.user_id == "u"));
        assert!(p.users(0, "r").is_empty());
    }

    #[test]
    fn a_user_is_away_while_every_tab_is_idle() {
        let p = MemoryPresence::default();
        p.join(&m("u", "c1"), "U");
        p.join(&m("u", "c2"), "U");
        assert!(!p.set_idle(&m("u", "c1"), true), "one tab idle, the other active: still online");
        assert!(p.set_idle(&m("u", "c2"), true), "both idle: away");
        assert_eq!(p.users(0, "r")[0].state, "away");
        assert!(p.set_idle(&m("u", "c1"), false), "an invocation: online again");
        assert!(p.set_idle(&m("u", "c1"), true));
        assert_eq!(p.join(&m("u", "c3"), "U"), (Vec::new(), true), "a new tab is active");
        assert_eq!(p.leave(&m("u", "c3")), (Vec::new(), true), "the active tab leaves: away");
        assert!(!p.set_idle(&m("x", "c9"), true), "not in the room: nothing");
    }

    #[test]
    fn without_idleness_tracking_the_state_is_set_presences_alone() {
        let p = MemoryPresence::default();
        p.join(&m("u", "c1"), "U");
        p.set_state(0, "r", "u", "away");
        assert_eq!(p.join(&m("u", "c2"), "U"), (Vec::new(), false), "a second tab changes nothing");
        assert_eq!(p.users(0, "r")[0].state, "away");
    }
}
