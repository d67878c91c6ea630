//! What a taken-over session missed: for each stream, the entries after
//! the position its old instance had reached for it, up to the position
//! this instance's fan-out had reached when the session entered it, kept
//! when routed to the session (its hub, and its group, its user or `*`),
//! fresh, not a duplicate, and encoded for its protocol. Stream order per
//! stream; streams interleaved by entry id. A stale entry that was fresh
//! when appended (this instance read it too late, `pipeline::read_too_late`)
//! was owed and can no longer be sent: the resume is refused, and the
//! client reconnects afresh and refetches.
//!
//! Duplicates (CONTRACT section 5: an `event_id` within the idempotency
//! window is delivered once) are left out as this instance's live path
//! left them out: it has judged every entry of the stretch already, and
//! [`DuplicateEntries`] holds the ones it dropped (a publisher's retry of
//! an event the client got before the handoff, on its old instance, among
//! them). An `event_id` met twice in the stretch itself goes out once, its
//! first time, even if this instance forgot its verdict. Nothing is
//! recorded in the live path's idempotency table: it has seen every id of
//! the stretch, and a replayed id recorded there again could only drop a
//! later live event wrongly.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;

use crate::config::RouteTable;
use crate::envelope::Schemas;
use crate::fanout::{Positions, Target};
use crate::hub::{Addressee, BoxFuture, CatchUp, HandoffError};
use crate::ingest::{entries_between, RedisConn, StreamId};
use crate::pipeline::{encode_one, read_too_late, target_of, DuplicateEntries, Freshness};
use crate::transport::Payload;

/// Replays from the streams themselves.
pub(crate) struct StreamCatchUp {
    conn: RedisConn,
    routes: Arc<RouteTable>,
    schemas: Arc<Schemas>,
    freshness: Freshness,
    duplicates: Arc<DuplicateEntries>,
    max_entries: usize,
}

impl StreamCatchUp {
    /// A reader on `conn`; refuses a replay of more than `max_entries` per
    /// stream. `duplicates` are the live path's (`Pipeline::duplicates`).
    pub(crate) fn new(
        conn: RedisConn,
        routes: Arc<RouteTable>,
        schemas: Arc<Schemas>,
        freshness: Freshness,
        duplicates: Arc<DuplicateEntries>,
        max_entries: usize,
    ) -> StreamCatchUp {
        StreamCatchUp { conn, routes, schemas, freshness, duplicates, max_entries }
    }
}

fn parse(id: &str) -> StreamId {
    id.parse().unwrap_or(StreamId::ZERO)
}

fn local_map(local: &Positions) -> HashMap<&str, StreamId> {
    local.iter().map(|(s, id)| (&**s, parse(id))).collect()
}

fn addressed(target: Target<'_>, who: &Addressee<'_>) -> bool {
    match target {
        Target::All { hub } => hub == who.hub,
        Target::User { hub, user } => hub == who.hub && who.user == Some(user),
        Target::Group { hub, group } => hub == who.hub && who.groups.iter().any(|g| &**g == group),
    }
}

impl CatchUp for StreamCatchUp {
    fn covers(&self, from: &[(String, String)], local: &Positions) -> bool {
        let local = local_map(local);
        from.iter().all(|(stream, id)| local.get(stream.as_str()).is_some_and(|at| *at >= parse(id)))
    }

    fn missed<'a>(
        &'a self,
        from: &'a [(String, String)],
        to: &'a Positions,
        who: Addressee<'a>,
    ) -> BoxFuture<'a, Result<Vec<Payload>, HandoffError>> {
        Box::pin(async move {
            let upto = local_map(to);
            let mut conn = self.conn.clone();
            let mut found = Vec::new();
            for (stream, after) in from {
                let Some(until) = upto.get(stream.as_str()) else { continue };
                let entries = entries_between(&mut conn, stream, parse(after), *until, self.max_entries, &self.schemas)
                    .await
                    .map_err(|e| HandoffError::Gap(e.to_string()))?;
                for (id, envelope) in entries {
                    let Some(route) = self.routes.route(&envelope.event_type) else { continue };
                    if !addressed(target_of(route.hub, &envelope.room_id), &who) {
                        continue;
                    }
                    let position = id.to_string();
                    let now = Utc::now();
                    if self.freshness.check(envelope.timestamp, now).is_none() {
                        // Owed, and gone stale only because it was read late.
                        if read_too_late(route, &position, self.freshness.max_age, now) {
                            return Err(HandoffError::Gap(format!("entry {position} of '{stream}' was read too late")));
                        }
                        continue;
                    }
                    if self.duplicates.dropped(stream, &position) {
                        continue;
                    }
                    if let Some(frame) = encode_one(route, &envelope, Some(&position), who.protocol) {
                        found.push((id, envelope.event_id, frame));
                    }
                }
            }
            Ok(first_of_each(found))
        })
    }
}

/// The frames of `found` in entry id order, each `event_id` once: at its
/// first entry (as the live path's idempotency window keeps the first).
fn first_of_each(mut found: Vec<(StreamId, String, Payload)>) -> Vec<Payload> {
    found.sort_by_key(|(id, _, _)| *id);
    let mut seen = HashSet::with_capacity(found.len());
    found.into_iter().filter_map(|(_, event_id, frame)| seen.insert(event_id).then_some(frame)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_id_met_twice_in_a_replay_goes_out_at_its_first_entry() {
        let id = |ms: u64| StreamId { ms, seq: 0 };
        let frame = |text: &str| Payload::text(text.into());
        // Two streams, interleaved by id; "e1" twice (a retry), "e2" once.
        let found = vec![
            (id(3), "e1".to_string(), frame("e1 again")),
            (id(1), "e1".to_string(), frame("e1")),
            (id(2), "e2".to_string(), frame("e2")),
        ];
        assert_eq!(first_of_each(found), [frame("e1"), frame("e2")]);
    }
}
