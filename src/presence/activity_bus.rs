//! Users' activity shared between instances over Redis pub/sub
//! (`<prefix>:activity`), so away is judged by a user's invocations on any
//! instance (CONTRACT section 15). The hub decides what to share and what a
//! shared activity does (`hub::Activity`); this module only carries it: one
//! PUBLISH per shared activity, each a small JSON object naming the
//! instance, the hub's path and the user.

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ingest::RedisConn;

/// The channel every instance of a deployment shares activity on.
pub(crate) fn activity_channel(prefix: &str) -> String {
    format!("{prefix}:activity")
}

/// One user's activity on one hub, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SharedActivity {
    /// The instance the user invoked on (its own messages are passed over).
    pub instance: String,
    /// The hub's path (indices may differ between routing files).
    pub hub: String,
    /// The user.
    pub user: String,
}

impl SharedActivity {
    /// A message heard on the channel, or `None` if it is not one of ours.
    pub(crate) fn parse(text: &str) -> Option<SharedActivity> {
        serde_json::from_str(text).ok()
    }
}

/// Publishes each activity `next` yields on `channel` until `stop` or the
/// queue closes. A PUBLISH that fails is logged and dropped: a missed
/// activity only makes the user away early elsewhere until the next.
pub(crate) async fn publish_activity<F>(
    mut queue: mpsc::UnboundedReceiver<F>,
    conn: RedisConn,
    channel: String,
    to_message: impl Fn(F) -> Option<SharedActivity>,
    stop: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            () = stop.cancelled() => return,
            item = queue.recv() => item,
        };
        let Some(item) = item else { return };
        let Some(message) = to_message(item) else { continue };
        let Ok(text) = serde_json::to_string(&message) else { continue };
        let published: Result<i64, _> =
            redis::cmd("PUBLISH").arg(&channel).arg(text).query_async(&mut conn.clone()).await;
        if let Err(e) = published {
            tracing::debug!(error = %e, user = %message.user, "user activity not shared with the other instances");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_anything_else_is_passed_over() {
        let m = SharedActivity { instance: "a".into(), hub: "/hubs/discussion".into(), user: "ann \"x\"".into() };
        let text = serde_json::to_string(&m).expect("serializes");
        assert_eq!(SharedActivity::parse(&text), Some(m));
        assert_eq!(SharedActivity::parse("not json"), None);
        assert_eq!(SharedActivity::parse(r#"{"instance":"a"}"#), None);
        assert_eq!(activity_channel("signalr-sidecar"), "signalr-sidecar:activity");
    }
}
