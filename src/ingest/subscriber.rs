//! One Redis pub/sub channel heard by this instance: the asks of resumes
//! that reached another instance after a network drop
//! (`<prefix>:session-release`) and the other instances' user activity
//! (`<prefix>:activity`) come this way; `main` wires what each message does.
//!
//! One subscriber connection, reconnected with a back-off while Redis is
//! away; a message lost meanwhile is lost (pub/sub keeps nothing), so what
//! rides on it must be safe to miss: a resume ask left unanswered is refused
//! after its wait and that client reconnects afresh (told, never silent); a
//! missed activity makes a user away early on this instance until the next.
//! In a Redis Cluster PUBLISH reaches subscribers on every node, so one
//! configured node is enough, and the next one is tried when it fails.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

/// Longest pause between two attempts to subscribe.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Subscribes to `channel` on one of `redis`'s URLs and calls `on_message`
/// with each message's text, until `stop`.
pub(crate) async fn listen(
    redis: crate::config::RedisConfig,
    channel: String,
    on_message: impl Fn(String) + Send + 'static,
    stop: CancellationToken,
) {
    let mut pause = Duration::from_millis(200);
    let mut attempt = 0usize;
    loop {
        let url = &redis.urls[attempt % redis.urls.len().max(1)];
        attempt += 1;
        let subscribed = async {
            let mut pubsub = crate::ingest::client(&redis, url)?.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            s = subscribed => s,
        };
        match pubsub {
            Ok(mut pubsub) => {
                pause = Duration::from_millis(200);
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        () = stop.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(message) = message else { break };
                    match message.get_payload::<String>() {
                        Ok(text) => on_message(text),
                        Err(e) => tracing::debug!(error = %e, channel = %channel, "pub/sub: unreadable message"),
                    }
                }
                tracing::debug!(channel = %channel, "pub/sub: subscription ended, subscribing again");
            }
            Err(e) => {
                tracing::debug!(error = %e, channel = %channel, "pub/sub: cannot subscribe yet");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}
