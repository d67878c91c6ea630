//! Missed updates (CONTRACT section 15, seed 003 FR-025): a `join` method
//! with `history = true` takes `(roomId, lastPosition)` and puts the room's
//! events after that position before the live ones, with no gap and no
//! duplicate, then answers `{"recovered": true|false, "position": ...}`.
//!
//! The cut: the connection's outbox is held, then the connection enters
//! the group and reads fan-out's positions in one step, taken in the
//! pipeline's task once the room has nothing held back there (so every
//! event up to the positions went out before it joined, and every later
//! one reaches it live); the history between `lastPosition` and that cut
//! is read, and put in front of whatever arrived live meanwhile. `recovered: false` (the
//! position is older than the kept history, the history cannot prove it
//! holds every event since, this instance has not reached the position,
//! or the connection was in the room already and events came since) tells
//! the client to refetch; the join itself has happened either way. Where the history lives is not the hub's
//! business: [`RoomHistory`] is provided by the `history` module.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::handoff::BoxFuture;
use super::{Error, Hubs};
use crate::codec::Protocol;
use crate::config::{HubDef, HubId};
use crate::fanout::{ConnId, JoinError, Outbox, Positions};
use crate::telemetry::labels::HistoryJoinOutcome;
use crate::transport::Payload;

/// Why a join's missed events cannot be replayed: the client refetches.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotRecovered {
    /// The position is older than the history kept for the hub.
    #[error("the position is older than the kept history")]
    TooOld,
    /// The history cannot prove it holds every event since the position
    /// (no instance was indexing part of that time, or Redis lost it).
    #[error("the history does not cover everything since the position")]
    NotCovered,
    /// More missed events than a replay carries.
    #[error("more than {0} missed events")]
    TooLong(usize),
    /// This instance's fan-out did not reach the position in time (it is
    /// behind the instance the client came from, or the position was never
    /// handed out): the live path would deliver again what the client has.
    #[error("this instance has not reached the position")]
    Behind,
    /// The connection was in the room already and events came since the
    /// position: which of them it was sent live, no record says.
    #[error("already in the room, with events since the position")]
    AlreadyJoined,
    /// Redis failed, or this instance has no position in the stream yet.
    #[error("history unavailable: {0}")]
    Unavailable(String),
}

impl NotRecovered {
    /// The `outcome` label of `sidecar_history_joins`.
    pub(crate) fn outcome(&self) -> HistoryJoinOutcome {
        match self {
            NotRecovered::TooOld => HistoryJoinOutcome::TooOld,
            NotRecovered::NotCovered => HistoryJoinOutcome::NotCovered,
            NotRecovered::TooLong(_) => HistoryJoinOutcome::TooLong,
            NotRecovered::Behind => HistoryJoinOutcome::Behind,
            NotRecovered::AlreadyJoined => HistoryJoinOutcome::AlreadyJoined,
            NotRecovered::Unavailable(_) => HistoryJoinOutcome::Unavailable,
        }
    }
}

/// The rooms' history, as a history join needs it.
pub(crate) trait RoomHistory: Send + Sync {
    /// Runs `step` at a cut of `room` on `hub`: between two events of the
    /// pipeline, with nothing of the room held back. False (and `step`
    /// never runs) when the pipeline has stopped.
    fn at_cut<'a>(&'a self, hub: HubId, room: &'a str, step: Box<dyn FnOnce() + Send>) -> BoxFuture<'a, bool>;
    /// Whether this instance's fan-out (at `local`) has passed `after` in
    /// the stream of `hub`'s history: if not, the live path would deliver
    /// again events the client has seen.
    fn reached(&self, hub: HubId, after: &str, local: &Positions) -> bool;
    /// The position a join made at the cut `upto` gives its client, which a
    /// later join may name.
    fn position(&self, hub: HubId, upto: &Positions) -> Option<String>;
    /// The events of `room` on `hub` after `after` up to the cut `upto`, in
    /// order, encoded for `protocol`.
    fn missed<'a>(
        &'a self,
        hub: HubId,
        room: &'a str,
        after: &'a str,
        upto: &'a Positions,
        protocol: Protocol,
    ) -> BoxFuture<'a, Result<Vec<Payload>, NotRecovered>>;
}

/// How long a join waits for this instance's fan-out to reach the client's
/// position (a client that moved from an instance ahead of this one).
const REACH_WAIT: Duration = Duration::from_secs(2);

/// `(roomId)` or `(roomId, lastPosition)`, the position a string or null;
/// `valid_room` is the hub's rule for a group name, `room_rule` its words.
pub(super) fn arguments<'a>(
    method: &str,
    args: &'a [Value],
    valid_room: fn(&str) -> bool,
    room_rule: &str,
) -> Result<(&'a str, Option<&'a str>), Error> {
    let bad = || {
        Error::BadArguments(format!(
            "{method} expects (roomId: {room_rule}, lastPosition?: string like \"1700000000000-0\" or null)"
        ))
    };
    let (room, last) = match args {
        [Value::String(r)] | [Value::String(r), Value::Null] => (r.as_str(), None),
        [Value::String(r), Value::String(p)] => (r.as_str(), Some(p.as_str())),
        _ => return Err(bad()),
    };
    if !valid_room(room) {
        return Err(bad());
    }
    if last.is_some_and(|p| !valid_position(p)) {
        return Err(bad());
    }
    Ok((room, last))
}

/// `<ms>-<seq>` (or `<ms>`), both decimal.
fn valid_position(p: &str) -> bool {
    let (ms, seq) = p.split_once('-').unwrap_or((p, "0"));
    [ms, seq].iter().all(|n| !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Releases a held outbox on every path, with the replay when there is one.
struct Held(Arc<Outbox>, Vec<Payload>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.release(std::mem::take(&mut self.1));
    }
}

/// Joins `group` at a cut and replays what the client missed since `last`.
/// Returns whether the connection newly joined, and the Completion's result.
pub(super) async fn join(
    hubs: &Hubs,
    hub: &HubDef,
    conn: ConnId,
    group: &str,
    last: Option<&str>,
) -> Result<(bool, Value), JoinError> {
    let entry = hubs.registry.entry(conn).ok_or(JoinError::Closed)?;
    let count = |outcome: HistoryJoinOutcome| hubs.metrics.history_joins.get(outcome).inc();
    let Some(history) = hubs.history.as_deref() else {
        // The in-process bus has no positions: nothing can be replayed.
        let joined = hubs.registry.join(conn, group)?;
        count(HistoryJoinOutcome::Unavailable);
        return Ok((joined, json!({"recovered": false, "position": null})));
    };
    // Whether this instance's fan-out has reached the client's position:
    // waited for a little (a client that moved from an instance ahead).
    let mut reached = true;
    if let Some(after) = last {
        let waited = tokio::time::Instant::now();
        loop {
            reached = history.reached(hub.id, after, &hubs.registry.positions());
            if reached || waited.elapsed() >= REACH_WAIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    entry.outbox.hold();
    let mut held = Held(entry.outbox.clone(), Vec::new());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (registry, room) = (hubs.registry.clone(), group.to_string());
    let step = Box::new(move || {
        let _ = tx.send(registry.join_at(conn, &room));
    });
    let at_cut = history.at_cut(hub.id, group, step).await;
    let (joined, upto) = match rx.await {
        Ok(cut) => cut?,
        // The pipeline has stopped (shutting down): a plain join.
        Err(_) => hubs.registry.join_at(conn, group)?,
    };
    let position = history.position(hub.id, &upto);
    let recovered = match last {
        _ if !at_cut => {
            count(HistoryJoinOutcome::Unavailable);
            false
        }
        None => {
            count(HistoryJoinOutcome::NoPosition);
            false
        }
        Some(after) => {
            let protocol = Protocol::ALL.into_iter().find(|p| p.slot() == entry.slot).unwrap_or(Protocol::Json);
            let started = std::time::Instant::now();
            let missed = match reached {
                true => history.missed(hub.id, group, after, &upto, protocol).await,
                false => Err(NotRecovered::Behind),
            };
            // Already in the group: nothing missed is the only answer that
            // proves the connection has every event since the position.
            let missed = missed.and_then(|frames| match joined || frames.is_empty() {
                true => Ok(frames),
                false => Err(NotRecovered::AlreadyJoined),
            });
            match missed {
                Ok(frames) => {
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    tracing::debug!(room = group, after, frames = frames.len(), ms, "history join: replayed");
                    held.1 = frames;
                    count(HistoryJoinOutcome::Recovered);
                    true
                }
                Err(e) => {
                    tracing::debug!(room = group, after, reason = %e, "history join: not recovered");
                    count(e.outcome());
                    false
                }
            }
        }
    };
    drop(held);
    Ok((joined, json!({"recovered": recovered, "position": position})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_join_takes_a_room_and_an_optional_position() {
        let valid = |r: &str| !r.is_empty() && r != "*";
        let ok = |v: Value| {
            arguments("Join", v.as_array().expect("array"), valid, "a room")
                .map(|(r, p)| (r.to_string(), p.map(String::from)))
        };
        assert_eq!(ok(json!(["r"])).expect("room"), ("r".into(), None));
        assert_eq!(ok(json!(["r", null])).expect("null"), ("r".into(), None));
        assert_eq!(ok(json!(["r", "1700000000000-3"])).expect("pos"), ("r".into(), Some("1700000000000-3".into())));
        assert_eq!(ok(json!(["r", "1700000000000"])).expect("ms only"), ("r".into(), Some("1700000000000".into())));
        for bad in [
            json!([]),
            json!([""]),
            json!(["r", 5]),
            json!(["r", "x-1"]),
            json!(["r", "1-"]),
            json!(["r", "p", 1]),
            json!(["*"]),
        ] {
            assert!(ok(bad.clone()).is_err(), "{bad} was accepted");
        }
    }
}
