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
//! node is enough, and the next live one is tried when it fails
//! ([`SubscribeNodes`]).

use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::SubscribeNodes;

/// Longest pause between two attempts to subscribe.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Longest wait to connect and subscribe (a node gone without a reset).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Subscribes to `channel` on one of `nodes` and calls `on_message` with
/// each message's text, until `stop`.
pub(crate) async fn listen(
    mut nodes: SubscribeNodes,
    channel: String,
    on_message: impl Fn(String) + Send + 'static,
    stop: CancellationToken,
) {
    let mut pause = Duration::from_millis(200);
    loop {
        let subscribed = async {
            let mut pubsub = nodes.client()?.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            s = tokio::time::timeout(CONNECT_TIMEOUT, subscribed) => s.unwrap_or_else(|_| {
                Err((redis::ErrorKind::Io, "connecting to subscribe timed out").into())
            }),
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
                nodes.advance().await;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}
