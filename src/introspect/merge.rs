//! Many instances' answers -> one response.
//!
//! Paging stays exact across instances: each instance returns its first
//! `limit` items after the cursor, in order. Any item among the first
//! `limit` of the union is among the first `limit` of every instance that
//! holds it (otherwise that instance would hold `limit` smaller items, all
//! in the union, pushing it out), so the merged page and its counts are
//! the deployment's.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{
    Answer, AnswerBody, Cluster, HubSummary, HubsResponse, InstanceInfo, InstancesResponse, Member, MembersResponse,
    RoomCount, RoomsResponse, UserConnection, UserResponse,
};

/// Every instance's summary, sorted by id.
pub(super) fn instances(answers: Vec<Answer>, cluster: Cluster) -> InstancesResponse {
    let mut instances: Vec<InstanceInfo> = answers.into_iter().map(|a| a.instance).collect();
    instances.sort_by(|a, b| a.instance.cmp(&b.instance));
    InstancesResponse { instances, cluster }
}

/// The hubs of this instance's routing file with connections summed.
pub(super) fn hubs(local: &[(String, String)], answers: &[Answer], cluster: Cluster) -> HubsResponse {
    let hubs = local
        .iter()
        .map(|(name, path)| HubSummary {
            name: name.clone(),
            path: path.clone(),
            connections: answers.iter().filter_map(|a| a.instance.hubs.get(name)).sum(),
        })
        .collect();
    HubsResponse { hubs, cluster }
}

/// One page of rooms over every instance.
pub(super) fn rooms(hub: &str, prefix: &str, limit: usize, answers: Vec<Answer>, cluster: Cluster) -> RoomsResponse {
    let mut all: BTreeMap<String, usize> = BTreeMap::new();
    let mut more = false;
    for a in answers {
        if let AnswerBody::Rooms { rooms, more: m } = a.body {
            more |= m;
            for r in rooms {
                *all.entry(r.name).or_default() += r.connections;
            }
        }
    }
    more |= all.len() > limit;
    let rooms: Vec<RoomCount> =
        all.into_iter().take(limit).map(|(name, connections)| RoomCount { name, connections }).collect();
    let next_cursor = if more { rooms.last().map(|r| r.name.clone()) } else { None };
    RoomsResponse { hub: hub.to_string(), prefix: prefix.to_string(), rooms, next_cursor, cluster }
}

/// One page of a room's members over every instance.
pub(super) fn members(hub: &str, room: &str, limit: usize, answers: Vec<Answer>, cluster: Cluster) -> MembersResponse {
    let mut all: Vec<Member> = Vec::new();
    let mut connections = 0;
    let mut more = false;
    for a in answers {
        if let AnswerBody::Members { total, members, more: m } = a.body {
            connections += total;
            more |= m;
            all.extend(members);
        }
    }
    all.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
    more |= all.len() > limit;
    all.truncate(limit);
    let next_cursor = if more { all.last().map(|m| m.connection_id.clone()) } else { None };
    MembersResponse { hub: hub.to_string(), room: room.to_string(), connections, members: all, next_cursor, cluster }
}

/// A user's connections over every instance, with the instances holding them.
pub(super) fn user(user: &str, answers: Vec<Answer>, cluster: Cluster) -> UserResponse {
    let mut connections: Vec<UserConnection> = Vec::new();
    let mut instances: Vec<InstanceInfo> = Vec::new();
    for a in answers {
        if let AnswerBody::User { connections: c } = a.body {
            if !c.is_empty() {
                instances.push(a.instance);
                connections.extend(c);
            }
        }
    }
    connections.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
    instances.sort_by(|a, b| a.instance.cmp(&b.instance));
    let rooms: BTreeSet<&String> = connections.iter().flat_map(|c| &c.rooms).collect();
    let rooms = rooms.into_iter().cloned().collect();
    UserResponse { user: user.to_string(), connections, rooms, instances, cluster }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::introspect::model::InstanceState;

    fn info(id: &str) -> InstanceInfo {
        InstanceInfo {
            instance: id.into(),
            version: "0".into(),
            started_at: "1970-01-01T00:00:00.000Z".into(),
            uptime_seconds: 0,
            state: InstanceState::Ready,
            connections: 0,
            hubs: BTreeMap::from([("chat".to_string(), 2)]),
            streams: Vec::new(),
        }
    }

    fn cluster() -> Cluster {
        Cluster { asked: "a".into(), answered: vec![], missing: vec![], error: None, elapsed_ms: 0.0 }
    }

    /// What one instance answers for a rooms page, computed as it would.
    fn rooms_answer(id: &str, held: &[(&str, usize)], after: Option<&str>, limit: usize) -> Answer {
        let mut found: Vec<_> = held.iter().filter(|(n, _)| after.is_none_or(|a| *n > a)).collect();
        found.sort();
        let more = found.len() > limit;
        let rooms = found.into_iter().take(limit).map(|(n, c)| RoomCount { name: n.to_string(), connections: *c });
        Answer { instance: info(id), body: AnswerBody::Rooms { rooms: rooms.collect(), more } }
    }

    #[test]
    fn paging_rooms_over_instances_visits_each_room_once_with_its_total() {
        let a = [("r1", 1), ("r3", 2), ("r5", 1), ("r6", 4)];
        let b = [("r2", 5), ("r3", 1), ("r4", 1), ("r6", 1)];
        let c = [("r0", 1), ("r7", 3)];
        let mut cursor: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let answers = vec![
                rooms_answer("a", &a, cursor.as_deref(), 2),
                rooms_answer("b", &b, cursor.as_deref(), 2),
                rooms_answer("c", &c, cursor.as_deref(), 2),
            ];
            let page = rooms("chat", "", 2, answers, cluster());
            assert!(page.rooms.len() <= 2);
            seen.extend(page.rooms.into_iter().map(|r| (r.name, r.connections)));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let expected: Vec<(String, usize)> =
            [("r0", 1), ("r1", 1), ("r2", 5), ("r3", 3), ("r4", 1), ("r5", 1), ("r6", 5), ("r7", 3)]
                .iter()
                .map(|(n, c)| (n.to_string(), *c))
                .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn members_are_sorted_counted_and_cut_at_the_limit() {
        let m = |id: &str, inst: &str| Member {
            connection_id: id.into(),
            user: None,
            instance: inst.into(),
            transport: "websockets".into(),
            since: "x".into(),
        };
        let answers = vec![
            Answer {
                instance: info("a"),
                body: AnswerBody::Members { total: 2, members: vec![m("1", "a"), m("4", "a")], more: false },
            },
            Answer {
                instance: info("b"),
                body: AnswerBody::Members { total: 2, members: vec![m("2", "b"), m("3", "b")], more: false },
            },
        ];
        let page = members("chat", "r", 3, answers, cluster());
        assert_eq!(page.connections, 4);
        assert_eq!(page.members.iter().map(|m| m.connection_id.as_str()).collect::<Vec<_>>(), ["1", "2", "3"]);
        assert_eq!(page.next_cursor.as_deref(), Some("3"));
    }

    #[test]
    fn a_user_lists_only_the_instances_holding_it_and_the_union_of_rooms() {
        let conn = |id: &str, inst: &str, rooms: &[&str]| UserConnection {
            connection_id: id.into(),
            hub: "chat".into(),
            instance: inst.into(),
            transport: "websockets".into(),
            since: "x".into(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
        };
        let answers = vec![
            Answer { instance: info("b"), body: AnswerBody::User { connections: vec![conn("2", "b", &["r2", "r1"])] } },
            Answer { instance: info("c"), body: AnswerBody::User { connections: vec![] } },
            Answer { instance: info("a"), body: AnswerBody::User { connections: vec![conn("1", "a", &["r1"])] } },
        ];
        let u = user("alice", answers, cluster());
        assert_eq!(u.connections.len(), 2);
        assert_eq!(u.rooms, ["r1", "r2"]);
        assert_eq!(u.instances.iter().map(|i| i.instance.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let h = hubs(
            &[("chat".into(), "/hubs/chat".into())],
            &[
                Answer { instance: info("a"), body: AnswerBody::Instance },
                Answer { instance: info("b"), body: AnswerBody::Instance },
            ],
            cluster(),
        );
        assert_eq!(h.hubs[0].connections, 4);
    }
}
