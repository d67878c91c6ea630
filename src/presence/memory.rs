//! Presence in this process, for the in-process bus.

use crate::sync::Unpoisoned;
use std::collections::HashMap;
use std::sync::Mutex;

use super::{Member, PresentUser, Transition};

#[derive(Default)]
struct Room {
    /// connection -> user
    members: HashMap<String, String>,
    /// user -> (connections, username, state)
    users: HashMap<String, (usize, String, String)>,
}

/// Rooms keyed by (hub, room).
#[derive(Default)]
pub(crate) struct MemoryPresence {
    rooms: Mutex<HashMap<(usize, String), Room>>,
}

impl MemoryPresence {
    pub(super) fn join(&self, m: &Member, username: &str) -> Vec<Transition> {
        let mut rooms = self.lock();
        let room = rooms.entry((m.hub, m.room.clone())).or_default();
        if room.members.insert(m.connection.clone(), m.user_id.clone()).is_some() {
            return Vec::new();
        }
        let entry = room.users.entry(m.user_id.clone()).or_insert((0, username.to_string(), "online".to_string()));
        entry.0 += 1;
        if entry.0 > 1 {
            return Vec::new();
        }
        let user = PresentUser { user_id: m.user_id.clone(), username: username.to_string(), state: "online".into() };
        vec![Transition::Joined { hub: m.hub, room: m.room.clone(), user }]
    }

    pub(super) fn leave(&self, m: &Member) -> Vec<Transition> {
        let mut rooms = self.lock();
        let key = (m.hub, m.room.clone());
        let Some(room) = rooms.get_mut(&key) else { return Vec::new() };
        let Some(user_id) = room.members.remove(&m.connection) else { return Vec::new() };
        let mut out = Vec::new();
        if let Some(entry) = room.users.get_mut(&user_id) {
            entry.0 -= 1;
            if entry.0 == 0 {
                if let Some((_, username, state)) = room.users.remove(&user_id) {
                    let user = PresentUser { user_id, username, state };
                    out.push(Transition::Left { hub: m.hub, room: m.room.clone(), user });
                }
            }
        }
        if room.members.is_empty() {
            rooms.remove(&key);
        }
        out
    }

    pub(super) fn set_state(&self, hub: usize, room: &str, user_id: &str, state: &str) {
        if let Some(entry) = self.lock().get_mut(&(hub, room.to_string())).and_then(|r| r.users.get_mut(user_id)) {
            entry.2 = state.to_string();
        }
    }

    pub(super) fn users(&self, hub: usize, room: &str) -> Vec<PresentUser> {
        let rooms = self.lock();
        let mut users: Vec<PresentUser> = rooms
            .get(&(hub, room.to_string()))
            .map(|r| {
                r.users
                    .iter()
                    .map(|(id, (_, name, state))| PresentUser {
                        user_id: id.clone(),
                        username: name.clone(),
                        state: state.clone(),
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
        assert_eq!(p.join(&m("u", "c1"), "U").len(), 1);
        assert!(p.join(&m("u", "c2"), "U").is_empty(), "second tab");
        assert!(p.join(&m("u", "c2"), "U").is_empty(), "same tab again");
        p.set_state(0, "r", "u", "away");
        assert_eq!(p.users(0, "r")[0].state, "away");
        assert!(p.leave(&m("u", "c1")).is_empty());
        let left = p.leave(&m("u", "c2"));
        assert!(matches!(&left[..], [Transition::Left { user, .. }] if user.user_id == "u"));
        assert!(p.users(0, "r").is_empty());
    }
}
