//! Presence seen from the hub: `user_joined` / `user_left` published
//! through the bus (so every instance delivers them), and the task that
//! keeps this instance's presence entries alive.

use std::sync::Arc;

use super::Hubs;
use crate::presence::Transition;

impl Hubs {
    /// Publishes presence transitions as `user_joined` / `user_left` events
    /// (through the bus, so every instance delivers them).
    pub(crate) async fn publish_presence(&self, transitions: Vec<Transition>) {
        for t in transitions {
            let (event_type, hub, room, user) = match t {
                Transition::Joined { hub, room, user } => ("user_joined", hub, room, user),
                Transition::Left { hub, room, user } => ("user_left", hub, room, user),
            };
            if self.routes.route(event_type).is_none_or(|r| r.hub != hub) {
                tracing::debug!(event_type, "no route for the presence event on this hub; not published");
                continue;
            }
            // These fields are config::PRESENCE_PAYLOAD_FIELDS: the routing
            // file's `arguments` for these routes are checked against them.
            let mut payload = serde_json::Map::new();
            payload.insert("user_id".into(), user.user_id.into());
            payload.insert("username".into(), user.username.into());
            payload.insert("room_id".into(), room.clone().into());
            let mut metadata = serde_json::Map::new();
            metadata.insert("source_instance".into(), self.settings.instance_id.clone().into());
            let envelope = crate::envelope::Envelope {
                event_id: uuid::Uuid::new_v4().to_string(),
                event_type: event_type.to_string(),
                timestamp: chrono::Utc::now(),
                room_id: room,
                payload: payload.into(),
                metadata: Some(metadata),
            };
            if let Err(e) = self.publisher.publish(envelope).await {
                tracing::warn!(event_type, error = %e, "presence event not published");
            }
        }
    }
}

/// Keeps this instance's presence entries alive and publishes `user_left`
/// for users of instances that died, until `stop`.
pub(crate) async fn run_presence(hubs: Arc<Hubs>, stop: tokio_util::sync::CancellationToken) {
    let Some(every) = hubs.presence.tick_interval() else { return };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match hubs.presence.tick().await {
            Ok(transitions) => hubs.publish_presence(transitions).await,
            Err(e) => tracing::warn!(error = %e, "presence refresh failed"),
        }
    }
}
