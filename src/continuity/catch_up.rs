//! What a taken-over session missed: for each stream, the entries after
//! the position its old instance had reached for it, up to the position
//! this instance's fan-out had reached when the session entered it, kept
//! when routed to the session (its hub, and its group, its user or `*`),
//! fresh, and encoded for its protocol. Stream order per stream; streams
//! interleaved by entry id.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;

use crate::config::RouteTable;
use crate::envelope::Schemas;
use crate::fanout::{Positions, Target};
use crate::hub::{Addressee, BoxFuture, CatchUp, HandoffError};
use crate::ingest::{entries_between, RedisConn, StreamId};
use crate::pipeline::{encode_one, target_of, Freshness};
use crate::transport::Payload;

/// Replays from the streams themselves.
pub(crate) struct StreamCatchUp {
    conn: RedisConn,
    routes: Arc<RouteTable>,
    schemas: Arc<Schemas>,
    freshness: Freshness,
    max_entries: usize,
}

impl StreamCatchUp {
    /// A reader on `conn`; refuses a replay of more than `max_entries` per stream.
    pub(crate) fn new(
        conn: RedisConn,
        routes: Arc<RouteTable>,
        schemas: Arc<Schemas>,
        freshness: Freshness,
        max_entries: usize,
    ) -> StreamCatchUp {
        StreamCatchUp { conn, routes, schemas, freshness, max_entries }
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
                    if !addressed(target_of(route.hub, &envelope.room_id), &who)
                        || self.freshness.check(envelope.timestamp, Utc::now()).is_none()
                    {
                        continue;
                    }
                    let position = id.to_string();
                    if let Some(frame) = encode_one(route, &envelope, Some(&position), who.protocol) {
                        found.push((id, frame));
                    }
                }
            }
            found.sort_by_key(|(id, _)| *id);
            Ok(found.into_iter().map(|(_, f)| f).collect())
        })
    }
}
