//! Events this instance read too late to deliver (CONTRACT sections 5 and
//! 14). An event older than the maximum age (by `timestamp`) is dropped as
//! stale: a publisher's old event. But when the stream entry itself was
//! appended longer ago than that (its id's milliseconds are Redis's clock
//! when it was appended), the event was fresh when it was published and
//! this instance read it late: it was stopped, cut off from Redis or
//! behind. The drop stands (a stale event is never delivered), and the
//! connections it was for may have been owed it: they are closed with
//! `allowReconnect: true` (the app refetches) and counted, never left
//! Connected without it.
//!
//! The pipeline notes the rooms such events were for while it goes through
//! a read, then hands the connections of those rooms, once each, to
//! whoever closes them (`hub::close_lost`, spread over the drain window)
//! through a [`LostSender`]. Coalesced and roster events (typing, read
//! receipts) are states a slow client may lose anyway and close nobody. A
//! handoff's replay asks [`read_too_late`] too, and refuses the resume.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::{route, Pipeline};
use crate::config::{Delivery, EventRoute};
use crate::fanout::ConnEntry;

/// Where the pipeline sends the connections that may have missed an event
/// it read too late.
pub(crate) type LostSender = mpsc::UnboundedSender<Vec<Arc<ConnEntry>>>;

/// The other end of a [`LostSender`].
pub(crate) type LostReceiver = mpsc::UnboundedReceiver<Vec<Arc<ConnEntry>>>;

/// A channel for [`Pipeline::with_lost`].
pub(crate) fn lost_channel() -> (LostSender, LostReceiver) {
    mpsc::unbounded_channel()
}

/// Milliseconds since the Unix epoch when Redis appended the entry `id`
/// (`<ms>-<seq>`).
fn appended_ms(id: &str) -> Option<i64> {
    id.split_once('-')?.0.parse().ok()
}

/// Whether an event of `route`, found stale at `now`, from stream entry
/// `entry_id`, was read too late rather than published old: its entry was
/// appended longer ago than `max_age`, and it is not a state a slow client
/// may lose anyway (coalesced, roster). Whoever it was owed to must be told
/// (the live path closes them; a handoff's replay refuses the resume).
pub(crate) fn read_too_late(route: &EventRoute, entry_id: &str, max_age: Duration, now: DateTime<Utc>) -> bool {
    if matches!(route.delivery, Delivery::Coalesce | Delivery::Roster) {
        return false;
    }
    let Some(appended) = appended_ms(entry_id) else { return false };
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    now.timestamp_millis().saturating_sub(appended) > max_age_ms
}

impl Pipeline {
    /// An event of `route` to `room_id` from stream entry `entry_id` was
    /// dropped as stale at `now`. If the entry was appended longer ago than
    /// the maximum age, this instance read it late: its room's connections
    /// are to be closed once the read is done with.
    pub(super) fn note_if_read_late(&mut self, route: &EventRoute, room_id: &str, entry_id: &str, now: DateTime<Utc>) {
        if self.lost.is_none() || !read_too_late(route, entry_id, self.freshness.max_age, now) {
            return;
        }
        if !self.read_late.iter().any(|(hub, room)| *hub == route.hub && **room == *room_id) {
            self.read_late.push((route.hub, room_id.into()));
        }
    }

    /// Hands over the connections of the rooms noted by
    /// [`Pipeline::note_if_read_late`] (each connection once), and forgets them.
    pub(super) fn send_lost(&mut self) {
        if self.read_late.is_empty() {
            return;
        }
        let mut connections: Vec<Arc<ConnEntry>> = Vec::new();
        for (hub, room) in self.read_late.drain(..) {
            connections.extend(self.registry.members_of(route::target_of(hub, &room)));
        }
        connections.sort_unstable_by_key(|c| c.id);
        connections.dedup_by_key(|c| c.id);
        if connections.is_empty() {
            return;
        }
        if let Some(lost) = &self.lost {
            // The receiver goes only at shutdown, when every connection closes anyway.
            let _ = lost.send(connections);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{appended_ms, read_too_late};
    use crate::config::RouteTable;

    #[test]
    fn read_too_late_is_an_entry_older_than_the_maximum_age_of_an_event_owed() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/routes.toml");
        let routes = RouteTable::load(&path).expect("the shipped routing file loads");
        let (chat, typing) =
            (routes.route("chat_message").expect("routed"), routes.route("typing_start").expect("routed"));
        let now = chrono::Utc::now();
        let max_age = std::time::Duration::from_secs(300);
        let id = |ago_s: i64| format!("{}-0", (now - chrono::Duration::seconds(ago_s)).timestamp_millis());
        assert!(read_too_late(chat, &id(301), max_age, now));
        assert!(!read_too_late(chat, &id(299), max_age, now), "appended recently: the publisher's old event");
        assert!(!read_too_late(typing, &id(301), max_age, now), "a typing state may be lost");
        assert!(!read_too_late(chat, "not-an-id", max_age, now));
    }

    #[test]
    fn an_entry_id_gives_the_time_it_was_appended() {
        assert_eq!(appended_ms("1700000000123-4"), Some(1_700_000_000_123));
        assert_eq!(appended_ms("5-0"), Some(5));
        assert_eq!(appended_ms("nonsense"), None);
        assert_eq!(appended_ms("x-1"), None);
    }
}
