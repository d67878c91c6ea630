//! `deliver`: one encoded frame, shared by reference, pushed into every
//! target outbox without waiting on any of them.

use std::sync::Arc;

use super::registry::{Inner, Registry};
use super::{ConnEntry, Payload};
use crate::transport::outbox::{send_claims, Claimed, OutFrame, PushError};

/// Largest fan-out whose frames the fan-out writes to idle sockets itself
/// (one `send()` per delivery on its own thread, no task woken). Above it
/// the connections' tasks write them: thousands of sends in a row on one
/// thread cap a broadcast at what one core sends, where the tasks spread
/// them over every core and batch the frames of a busy connection.
pub(crate) const DIRECT_FANOUT_MAX: usize = 64;

/// How many protocol encodings a frame can carry.
pub(crate) const MAX_SLOTS: usize = 2;

/// Who receives a frame, within one hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// Every connection of the hub.
    All {
        /// The hub.
        hub: usize,
    },
    /// The connections in a group.
    Group {
        /// The hub.
        hub: usize,
        /// The group name.
        group: &'a str,
    },
    /// The connections of one user.
    User {
        /// The hub.
        hub: usize,
        /// The user id.
        user: &'a str,
    },
}

impl Target<'_> {
    /// The hub, and the group or user it names (neither: every connection).
    pub(crate) fn parts(&self) -> (usize, Option<&str>, Option<&str>) {
        match *self {
            Target::All { hub } => (hub, None, None),
            Target::Group { hub, group } => (hub, Some(group), None),
            Target::User { hub, user } => (hub, None, Some(user)),
        }
    }
}

/// One event, encoded once per protocol in use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Frame {
    /// Encodings indexed by protocol slot; `None` where nobody needs it.
    pub by_slot: [Option<Payload>; MAX_SLOTS],
    /// Whether a full outbox may drop it (coalescable events).
    pub droppable: bool,
}

/// What one delivery did, counted once per event rather than per recipient.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Outboxes the frame went into.
    pub queued: usize,
    /// Droppable frames not queued, plus queued ones evicted, because an outbox was full.
    pub dropped: usize,
    /// Connections closed as slow consumers by this delivery.
    pub overflowed: usize,
}

impl Registry {
    /// Pushes `frame` into every outbox `target` names. Never waits: a full
    /// outbox drops droppable frames, and otherwise kicks its connection.
    #[cfg(test)]
    pub(crate) fn deliver(&self, target: Target<'_>, frame: &Frame) -> Delivery {
        self.deliver_at(target, frame, None)
    }

    /// [`Registry::deliver`] for a stream entry: the stream's position moves
    /// to `at` before the fan-out's lock is released.
    pub(crate) fn deliver_at(&self, target: Target<'_>, frame: &Frame, at: Option<(&Arc<str>, String)>) -> Delivery {
        let inner = self.read();
        let report = self.push_all(&inner, target, frame);
        if let Some((stream, id)) = at {
            self.advance(stream, &id);
        }
        drop(inner);
        report
    }

    fn push_all(&self, inner: &Inner, target: Target<'_>, frame: &Frame) -> Delivery {
        let (hub, group, user) = target.parts();
        let mut report = Delivery::default();
        let Some(members) = inner.members(hub, group, user) else {
            return report;
        };
        let direct = members.len() <= DIRECT_FANOUT_MAX;
        if direct {
            self.push_direct(members.values(), frame, &mut report);
            return report;
        }
        // The tasks of a large fan-out are woken on the connections' runtime.
        let wakes = self.wake_sender();
        let mut unwoken = Vec::new();
        for entry in members.values() {
            let Some(payload) = &frame.by_slot[entry.slot] else {
                continue;
            };
            let out = OutFrame { payload: payload.clone(), droppable: frame.droppable, sequenced: true };
            let pushed = if wakes.is_some() {
                entry.outbox.try_push_unwoken(out).map(|(evicted, wake)| {
                    if wake {
                        unwoken.push(entry.outbox.clone());
                    }
                    evicted
                })
            } else {
                entry.outbox.try_push_batched(out)
            };
            report.count(pushed);
        }
        if let Some(wakes) = wakes {
            super::wakes::wake_later(wakes, unwoken);
        }
        report
    }

    /// A small fan-out: every idle member's socket is written from here,
    /// all in one batch of sends (one system call where the kernel allows
    /// it); the rest are queued for their tasks.
    fn push_direct<'a>(&self, members: impl Iterator<Item = &'a Arc<ConnEntry>>, frame: &Frame, report: &mut Delivery) {
        let mut claims = Vec::new();
        let mut busy = Vec::new();
        for entry in members {
            let Some(payload) = &frame.by_slot[entry.slot] else {
                continue;
            };
            let out = OutFrame { payload: payload.clone(), droppable: frame.droppable, sequenced: true };
            match entry.outbox.try_claim(out) {
                Ok(Claimed::Claim(claim)) => claims.push(claim),
                Ok(Claimed::Queued(evicted)) => report.count(Ok(evicted)),
                Ok(Claimed::Busy(out)) => busy.push((entry, out)),
                Err(e) => report.count(Err(e)),
            }
        }
        report.queued += claims.len();
        report.dropped += send_claims(&mut claims);
        // Outboxes another thread held: pushed now that no claim is held.
        for (entry, out) in busy {
            report.count(entry.outbox.try_push(out));
        }
    }
}

impl Delivery {
    /// Counts one recipient's push.
    fn count(&mut self, pushed: Result<usize, PushError>) {
        match pushed {
            Ok(evicted) => {
                self.queued += 1;
                self.dropped += evicted;
            }
            Err(PushError::Dropped) => self.dropped += 1,
            Err(PushError::Overflow) => self.overflowed += 1,
            Err(PushError::Closed) => {}
        }
    }
}

#[cfg(test)]
mod tests {

    use std::sync::Arc;

    use super::*;
    use crate::fanout::ConnEntry;

    fn conn(reg: &Registry, id: u64, user: Option<&str>) -> Arc<ConnEntry> {
        let entry = Arc::new(ConnEntry { slot: 0, transport: "websockets", ..ConnEntry::for_test(id, 0, user, 2) });
        reg.add(entry.clone());
        entry
    }

    fn frame(droppable: bool) -> Frame {
        Frame { by_slot: [Some(Payload::text("x".into())), None], droppable }
    }

    #[test]
    fn groups_users_and_all() {
        let reg = Registry::new(1, 10);
        let a = conn(&reg, 1, Some("u1"));
        let b = conn(&reg, 2, Some("u2"));
        reg.join(1, "room").expect("joins");
        assert_eq!(reg.deliver(Target::Group { hub: 0, group: "room" }, &frame(false)).queued, 1);
        assert_eq!(reg.deliver(Target::User { hub: 0, user: "u2" }, &frame(false)).queued, 1);
        assert_eq!(reg.deliver(Target::Group { hub: 0, group: "other" }, &frame(false)).queued, 0);
        assert_eq!((a.outbox.len(), b.outbox.len()), (1, 1));
        assert!(reg.leave(1, "room"));
        assert_eq!(reg.deliver(Target::Group { hub: 0, group: "room" }, &frame(false)).queued, 0);
        assert_eq!(reg.deliver(Target::All { hub: 0 }, &frame(false)).queued, 2);
    }

    #[test]
    fn a_slow_connection_is_kicked_and_the_others_still_receive() {
        let reg = Registry::new(1, 10);
        let slow = conn(&reg, 1, None);
        let fast = conn(&reg, 2, None);
        reg.join(1, "r").expect("joins");
        reg.join(2, "r").expect("joins");
        for _ in 0..2 {
            reg.deliver(Target::Group { hub: 0, group: "r" }, &frame(false));
            fast.outbox.take(10);
        }
        let d = reg.deliver(Target::Group { hub: 0, group: "r" }, &frame(false));
        assert_eq!((d.queued, d.overflowed), (1, 1));
        assert!(slow.outbox.is_closed());
        assert!(!fast.outbox.is_closed());
    }

    #[test]
    fn a_large_fan_out_queues_every_frame_and_leaves_the_wake_ups_to_the_wake_task() {
        let reg = Registry::new(1, 10);
        let n = DIRECT_FANOUT_MAX as u64 + 2;
        let conns: Vec<_> = (1..=n).map(|id| conn(&reg, id, None)).collect();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        reg.wake_through(tx);
        assert_eq!(reg.deliver(Target::All { hub: 0 }, &frame(false)).queued, n as usize);
        assert!(conns.iter().all(|c| c.outbox.len() == 1), "every frame is queued before any wake-up");
        let batch = rx.try_recv().expect("one batch of wake-ups");
        assert_eq!(batch.len(), n as usize, "each outbox whose queue was empty is to be woken");
        // A second frame finds the queues non-empty: nobody to wake.
        reg.deliver(Target::All { hub: 0 }, &frame(false));
        assert!(rx.try_recv().is_err());
        // Small fan-outs never go through the wake task.
        reg.join(1, "small").expect("joins");
        reg.deliver(Target::Group { hub: 0, group: "small" }, &frame(false));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn removal_cleans_every_index() {
        let reg = Registry::new(1, 1);
        conn(&reg, 1, Some("u"));
        reg.join(1, "a").expect("joins");
        assert_eq!(reg.join(1, "b"), Err(super::super::JoinError::TooManyGroups(1)));
        assert_eq!(reg.remove(1), vec![Box::<str>::from("a")]);
        assert!(reg.is_empty());
        assert_eq!(reg.deliver(Target::User { hub: 0, user: "u" }, &frame(false)).queued, 0);
    }
}
