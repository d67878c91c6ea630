//! Read-only questions about this instance's connections, for the
//! operators' introspection API (CONTRACT section 16): rooms and their
//! member counts, one room's members, one user's connections.
//!
//! Each takes the registry's read lock once, copies out at most `limit`
//! small records and lets go; deliveries take the same read lock, so they
//! never wait on these. Pages are ordered (room names, connection ids), so
//! an asker merging the pages of several instances can page the union.

use std::sync::Arc;

use super::registry::{ConnEntry, Members, Registry};

/// One connection as the introspection API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnView {
    /// Its SignalR connection id.
    pub connection_id: uuid::Uuid,
    /// Index of its hub in the routing table.
    pub hub: usize,
    /// The authenticated user, if any.
    pub user: Option<Arc<str>>,
    /// `websockets`, `serversentevents` or `longpolling`.
    pub transport: &'static str,
    /// When it entered fan-out here (Unix milliseconds).
    pub since_ms: u64,
}

/// A page of rooms: `(name, connections)` in name order, and whether this
/// instance has more after the last one.
pub(crate) type RoomsPage = (Vec<(String, usize)>, bool);

/// A page of one room's members in connection-id order: the room's size
/// here, the members, and whether there are more after the last one.
pub(crate) type MembersPage = (usize, Vec<ConnView>, bool);

/// Wall-clock now in Unix milliseconds (the `since` of a connection).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl ConnView {
    fn of(e: &ConnEntry) -> ConnView {
        ConnView {
            connection_id: e.connection_id,
            hub: e.hub,
            user: e.user.clone(),
            transport: e.transport,
            since_ms: e.since_ms,
        }
    }
}

impl Registry {
    /// Open connections per hub, in routing-table order.
    pub(crate) fn connections_per_hub(&self) -> Vec<usize> {
        self.read().hubs.iter().map(|h| h.all.len()).collect()
    }

    /// The first `limit` rooms of `hub` whose names start with `prefix` and
    /// sort after `after`, with their member counts.
    pub(crate) fn rooms_page(&self, hub: usize, prefix: &str, after: Option<&str>, limit: usize) -> RoomsPage {
        let inner = self.read();
        let Some(h) = inner.hubs.get(hub) else {
            return (Vec::new(), false);
        };
        let mut found: Vec<(&str, usize)> = h
            .groups
            .iter()
            .filter(|(name, _)| name.starts_with(prefix) && after.is_none_or(|a| &***name > a))
            .map(|(name, members)| (&**name, members.len()))
            .collect();
        let more = found.len() > limit;
        if more {
            found.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
            found.truncate(limit);
        }
        found.sort_unstable_by(|a, b| a.0.cmp(b.0));
        (found.into_iter().map(|(n, c)| (n.to_string(), c)).collect(), more)
    }

    /// The members of `room` on `hub` with connection ids after `after`,
    /// at most `limit`.
    pub(crate) fn members_page(&self, hub: usize, room: &str, after: Option<uuid::Uuid>, limit: usize) -> MembersPage {
        let inner = self.read();
        let Some(members) = inner.hubs.get(hub).and_then(|h| h.groups.get(room)) else {
            return (0, Vec::new(), false);
        };
        let (page, more) = page_of(members, after, limit);
        (members.len(), page, more)
    }

    /// Every connection of `user` on every hub, each with its rooms (sorted).
    pub(crate) fn user_connections_with_rooms(&self, user: &str) -> Vec<(ConnView, Vec<String>)> {
        let inner = self.read();
        let mut out: Vec<(ConnView, Vec<String>)> = inner
            .hubs
            .iter()
            .filter_map(|h| h.users.get(user))
            .flat_map(|m| m.values())
            .map(|e| {
                let mut rooms: Vec<String> = inner
                    .conns
                    .get(&e.id)
                    .map(|c| c.groups.iter().map(|g| g.to_string()).collect())
                    .unwrap_or_default();
                rooms.sort_unstable();
                (ConnView::of(e), rooms)
            })
            .collect();
        out.sort_unstable_by_key(|(v, _)| v.connection_id);
        out
    }
}

fn page_of(members: &Members, after: Option<uuid::Uuid>, limit: usize) -> (Vec<ConnView>, bool) {
    let mut found: Vec<&Arc<ConnEntry>> =
        members.values().filter(|e| after.is_none_or(|a| e.connection_id > a)).collect();
    let more = found.len() > limit;
    if more {
        found.select_nth_unstable_by_key(limit, |e| e.connection_id);
        found.truncate(limit);
    }
    found.sort_unstable_by_key(|e| e.connection_id);
    (found.into_iter().map(|e| ConnView::of(e)).collect(), more)
}

#[cfg(test)]
mod tests {

    use super::*;

    fn add(reg: &Registry, id: u64, hub: usize, user: Option<&str>, groups: &[&str]) -> uuid::Uuid {
        let connection_id = uuid::Uuid::new_v4();
        let entry = Arc::new(ConnEntry {
            slot: 0,
            transport: "websockets",
            connection_id,
            since_ms: 1_000 + id,
            ..ConnEntry::for_test(id, hub, user, 2)
        });
        let groups: Vec<Box<str>> = groups.iter().map(|g| (*g).into()).collect();
        reg.add_with_groups(entry, &groups);
        connection_id
    }

    #[test]
    fn rooms_are_paged_in_name_order_with_counts() {
        let reg = Registry::new(2, 10);
        add(&reg, 1, 0, None, &["b", "a", "x-1"]);
        add(&reg, 2, 0, None, &["b", "c"]);
        add(&reg, 3, 1, None, &["a"]);
        let (page, more) = reg.rooms_page(0, "", None, 2);
        assert_eq!(page, vec![("a".to_string(), 1), ("b".to_string(), 2)]);
        assert!(more);
        let (page, more) = reg.rooms_page(0, "", Some("b"), 2);
        assert_eq!(page, vec![("c".to_string(), 1), ("x-1".to_string(), 1)]);
        assert!(!more);
        assert_eq!(reg.rooms_page(0, "x-", None, 10).0, vec![("x-1".to_string(), 1)]);
        assert_eq!(reg.rooms_page(7, "", None, 10), (Vec::new(), false), "an unknown hub has no rooms");
        assert_eq!(reg.connections_per_hub(), vec![2, 1]);
    }

    #[test]
    fn members_are_paged_by_connection_id() {
        let reg = Registry::new(1, 10);
        let mut ids: Vec<_> = (1..=5).map(|n| add(&reg, n, 0, Some("u"), &["room"])).collect();
        ids.sort();
        let (total, page, more) = reg.members_page(0, "room", None, 3);
        assert_eq!((total, more), (5, true));
        assert_eq!(page.iter().map(|v| v.connection_id).collect::<Vec<_>>(), ids[..3]);
        let (_, rest, more) = reg.members_page(0, "room", Some(ids[2]), 3);
        assert_eq!(rest.iter().map(|v| v.connection_id).collect::<Vec<_>>(), ids[3..]);
        assert!(!more);
        assert_eq!(reg.members_page(0, "nowhere", None, 3), (0, Vec::new(), false));
    }

    #[test]
    fn a_users_connections_carry_their_rooms() {
        let reg = Registry::new(2, 10);
        let a = add(&reg, 1, 0, Some("alice"), &["r2", "r1"]);
        let b = add(&reg, 2, 1, Some("alice"), &[]);
        add(&reg, 3, 0, Some("bob"), &["r1"]);
        let mut found = reg.user_connections_with_rooms("alice");
        found.sort_by_key(|(v, _)| v.hub);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].0.connection_id, found[0].1.clone()), (a, vec!["r1".to_string(), "r2".to_string()]));
        assert_eq!((found[1].0.connection_id, found[1].0.hub, found[1].1.len()), (b, 1, 0));
        assert_eq!(found[0].0.since_ms, 1_001);
        assert!(reg.user_connections_with_rooms("nobody").is_empty());
    }
}
