//! Whether this instance has any connection a target names: with several
//! instances each reads every stream entry, and an entry nobody here
//! listens to is passed over before its payload is decoded.

use std::sync::Arc;

use super::registry::Registry;
use super::Target;

impl Registry {
    /// True when `target` names no connection of this instance; the
    /// stream's position then moves to `at` before the fan-out's lock is
    /// released, as a delivery to nobody would move it. A connection that
    /// joins later gets positions past this entry, so the entry is owed to
    /// nobody here: a join can never fall between the answer and the move.
    /// False (and nothing moves) when some connection would receive it.
    pub(crate) fn pass_if_unwatched(&self, target: Target<'_>, at: Option<(&Arc<str>, &str)>) -> bool {
        let (hub, group, user) = target.parts();
        let inner = self.read();
        if inner.members(hub, group, user).is_some_and(|m| !m.is_empty()) {
            return false;
        }
        if let Some((stream, id)) = at {
            self.advance(stream, id);
        }
        true
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::fanout::ConnEntry;

    fn conn(reg: &Registry, id: u64, user: Option<&str>) {
        reg.add(Arc::new(ConnEntry { slot: 0, transport: "websockets", ..ConnEntry::for_test(id, 0, user, 2) }));
    }

    #[test]
    fn only_targets_without_local_connections_are_passed_over() {
        let reg = Registry::new(2, 10);
        let stream: Arc<str> = Arc::from("events:chat");
        conn(&reg, 1, Some("u1"));
        reg.join(1, "room-a").expect("joins");
        assert!(!reg.pass_if_unwatched(Target::Group { hub: 0, group: "room-a" }, Some((&stream, "1-0"))));
        assert!(reg.positions().is_empty(), "a watched entry does not move the position here");
        assert!(!reg.pass_if_unwatched(Target::User { hub: 0, user: "u1" }, None));
        assert!(reg.pass_if_unwatched(Target::User { hub: 0, user: "u2" }, None));
        assert!(reg.pass_if_unwatched(Target::Group { hub: 1, group: "room-a" }, None), "another hub's room");
        assert!(reg.pass_if_unwatched(Target::Group { hub: 0, group: "room-b" }, Some((&stream, "2-0"))));
        assert_eq!(reg.positions(), vec![(stream.clone(), "2-0".to_string())], "a passed entry moves it");
        assert!(reg.leave(1, "room-a"));
        assert!(reg.pass_if_unwatched(Target::Group { hub: 0, group: "room-a" }, None), "after the last member left");
    }
}
