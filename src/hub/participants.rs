//! One task for the presence side of activity and for participant counts
//! (CONTRACT section 15, seed 003 FR-033, FR-034).
//!
//! It does the notices of [`super::activity`] in order (a connection idle
//! or active again in each of its rooms; `SetPresence` on hubs that track
//! idleness), and pushes each room's participant count when presence says
//! the room changed: a `participant_count` event with `{room_id, count,
//! online, away}`, through the bus like `user_joined`, on hubs that route
//! it. At most one per room per second for the whole deployment: the first
//! change goes out at once, later ones wait for the second to end and go
//! out as one count; an instance takes the room's one-second slot in
//! presence before publishing, and one that finds it taken tries again
//! when it ends, so the last change is always counted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::activity::Notice;
use super::Hubs;
use crate::config::PARTICIPANT_COUNT_EVENT;
use crate::envelope::Envelope;
use crate::presence::Member;

/// At most one count per room this often.
const EVERY: Duration = Duration::from_secs(1);

type Room = (usize, String);

/// Runs until `stop`.
pub(crate) async fn run_participants(hubs: Arc<Hubs>, stop: CancellationToken) {
    let Some(mut notices) = hubs.activity.take_queue() else { return };
    let counted: Vec<bool> = hubs
        .routes
        .hubs
        .iter()
        .map(|h| h.presence && hubs.routes.route(PARTICIPANT_COUNT_EVENT).is_some_and(|r| r.hub == h.id))
        .collect();
    let mut pending: HashSet<Room> = HashSet::new();
    let mut sent: HashMap<Room, Instant> = HashMap::new();
    loop {
        let due = pending.iter().map(|r| sent.get(r).map_or_else(Instant::now, |t| *t + EVERY)).min();
        tokio::select! {
            notice = notices.recv() => match notice {
                Some(notice) => apply(&hubs, notice).await,
                None => return,
            },
            _ = hubs.presence.changed() => {}
            _ = sleep_until(due) => {}
            _ = stop.cancelled() => return,
        }
        pending.extend(hubs.presence.take_changed().into_iter().filter(|(hub, _)| counted.get(*hub) == Some(&true)));
        let now = Instant::now();
        sent.retain(|room, at| pending.contains(room) || now < *at + EVERY);
        let ready: Vec<Room> =
            pending.iter().filter(|r| sent.get(*r).is_none_or(|t| now >= *t + EVERY)).cloned().collect();
        for room in ready {
            sent.insert(room.clone(), now);
            match hubs.presence.claim_count(room.0, &room.1, EVERY).await {
                Ok(true) => {
                    pending.remove(&room);
                    publish_count(&hubs, &room).await;
                }
                // Another instance counted this room within the second: count
                // again once it ends, so this change is in the next count.
                Ok(false) => {}
                Err(e) => {
                    pending.remove(&room);
                    tracing::warn!(error = %e, room = %room.1, "participant count not published");
                }
            }
        }
    }
}

/// Does one notice of the activity checks.
async fn apply(hubs: &Hubs, notice: Notice) {
    match notice {
        Notice::Idle { conn, hub, user, connection_id, idle } => {
            for room in hubs.registry.groups_of(conn) {
                let member = Member {
                    hub,
                    room: room.to_string(),
                    user_id: user.to_string(),
                    connection: connection_id.to_string(),
                };
                if let Err(e) = hubs.presence.set_idle(&member, idle).await {
                    tracing::warn!(error = %e, room = %room, "presence idleness not updated");
                }
            }
        }
        Notice::Explicit { hub, rooms, user, state, done } => {
            let mut outcome = Ok(());
            for room in rooms {
                if let Err(e) = hubs.presence.set_state(hub, &room, &user, &state).await {
                    outcome = Err(e);
                }
            }
            let _ = done.send(outcome);
        }
    }
}

/// Reads a room's participants and publishes their count.
async fn publish_count(hubs: &Hubs, (hub, room): &Room) {
    let users = match hubs.presence.users(*hub, room).await {
        Ok(users) => users,
        Err(e) => {
            tracing::warn!(error = %e, room = %room, "participant count not read");
            return;
        }
    };
    let online = users.iter().filter(|u| u.state == "online").count();
    // These fields are config::PARTICIPANT_COUNT_PAYLOAD_FIELDS: the routing
    // file's `arguments` for this route are checked against them.
    let mut payload = serde_json::Map::new();
    payload.insert("room_id".into(), room.clone().into());
    payload.insert("count".into(), users.len().into());
    payload.insert("online".into(), online.into());
    payload.insert("away".into(), (users.len() - online).into());
    let mut metadata = serde_json::Map::new();
    metadata.insert("source_instance".into(), hubs.settings.instance_id.clone().into());
    let envelope = Envelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: PARTICIPANT_COUNT_EVENT.to_string(),
        timestamp: chrono::Utc::now(),
        room_id: room.clone(),
        payload: payload.into(),
        metadata: Some(metadata),
    };
    if let Err(e) = hubs.publisher.publish(envelope).await {
        tracing::warn!(error = %e, room = %room, "participant count not published");
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
