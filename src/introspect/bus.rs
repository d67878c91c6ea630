//! Scatter-gather over Redis pub/sub: how one instance asks all of them.
//!
//! Every instance subscribes (one connection, one task) to the question
//! channel `<group_prefix>:introspect` and to its own answer channel
//! `<group_prefix>:introspect:reply:<instance_id>`, and beats a heartbeat
//! into the sorted set `<group_prefix>:introspect:instances` (member: the
//! instance id, score: Redis's own clock, so instances' clocks do not
//! matter). The asked instance PUBLISHes the question, answers its own part
//! from memory meanwhile, and waits until every instance seen alive within
//! [`LIVE`] has answered, or the deadline passes: those are then listed as
//! missing.
//!
//! Why this design: nothing is written or kept anywhere while nobody asks
//! (the heartbeat is one small command a second), so the delivery path
//! pays nothing; answers are as fresh as the registries; instances need
//! not reach each other's admin ports (only Redis, which they share). Why
//! answers come back over pub/sub and not a list the asker BLPOPs: a
//! blocking pop would hold a multiplexed connection that other commands
//! share (or need one connection per question), and the answer channel is
//! already subscribed, so an answer costs one PUBLISH and no key to expire.
//! Pub/sub drops messages while a subscriber reconnects: the response then
//! names the instance as missing, which is the truth.
//!
//! In a Redis Cluster, PUBLISH reaches subscribers on every node, so the
//! subscriber connects to one node as a plain client, and to the next live
//! one when that fails (`ingest::SubscribeNodes`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::IntrospectError;
use super::local::Local;
use super::model::{Answer, Query, QueryMessage, ReplyMessage};
use crate::config::RedisConfig;
use crate::ingest::{RedisConn, SubscribeNodes};
use crate::sync::Unpoisoned;

/// An instance whose heartbeat is older than this is not waited for.
pub(crate) const LIVE: Duration = Duration::from_secs(5);

/// Heartbeat period.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Longest wait for a subscriber connection, and the longest pause between
/// reconnects.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// ZADD with Redis's clock, and forgets instances not seen for `LIVE`.
const HEARTBEAT_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return now
";

/// Instances seen within `LIVE`, by Redis's clock.
const LIVE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
";

/// The Redis side of introspection.
pub(crate) struct Bus {
    conn: RedisConn,
    /// Where the subscriber connects (one of the URLs, the CA).
    redis: RedisConfig,
    channel: String,
    reply_channel: String,
    instances_key: String,
    instance_id: String,
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<Answer>>>,
    heartbeat: redis::Script,
    live: redis::Script,
}

/// A question sent and not yet fully answered; dropping it stops listening.
pub(crate) struct Pending<'a> {
    bus: &'a Bus,
    id: String,
    answers: mpsc::UnboundedReceiver<Answer>,
    expected: HashSet<String>,
}

impl Bus {
    /// The bus of `instance_id` on `conn` (commands and PUBLISH); the
    /// subscriber connects on its own to one of `redis.urls`.
    pub(crate) fn new(conn: RedisConn, redis: &RedisConfig, instance_id: &str) -> Bus {
        let channel = format!("{}:introspect", redis.group_prefix);
        Bus {
            conn,
            redis: redis.clone(),
            reply_channel: format!("{channel}:reply:{instance_id}"),
            instances_key: redis.live_instances_key(),
            channel,
            instance_id: instance_id.to_string(),
            waiting: Mutex::default(),
            heartbeat: redis::Script::new(HEARTBEAT_SCRIPT),
            live: redis::Script::new(LIVE_SCRIPT),
        }
    }

    /// PUBLISHes `query` and learns which instances are alive (one round
    /// trip for both); collect the answers with [`Pending::collect`].
    pub(crate) async fn send(&self, query: &Query) -> Result<Pending<'_>, IntrospectError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, answers) = mpsc::unbounded_channel();
        self.waiting().insert(id.clone(), tx);
        // From here on the Pending's Drop unregisters, whatever happens.
        let mut pending = Pending { bus: self, id, answers, expected: HashSet::new() };
        let message = QueryMessage {
            id: pending.id.clone(),
            from: self.instance_id.clone(),
            reply_to: self.reply_channel.clone(),
            query: query.clone(),
        };
        let body = serde_json::to_string(&message).map_err(IntrospectError::Encode)?;
        let mut publish_conn = self.conn.clone();
        let mut live_conn = self.conn.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.channel).arg(body);
        let publish = publish.query_async::<i64>(&mut publish_conn);
        let mut live = self.live.key(&self.instances_key);
        live.arg(LIVE.as_millis() as u64);
        let live = live.invoke_async::<Vec<String>>(&mut live_conn);
        let (published, live) = tokio::join!(publish, live);
        published.map_err(IntrospectError::Redis)?;
        pending.expected =
            live.map_err(IntrospectError::Redis)?.into_iter().filter(|i| *i != self.instance_id).collect();
        Ok(pending)
    }

    /// Beats the heartbeat and answers questions until `stop`; then leaves
    /// the set of live instances.
    pub(crate) async fn run(self: Arc<Self>, local: Arc<Local>, stop: CancellationToken) {
        // The first heartbeat waits for the first try to subscribe: an
        // instance in the live set normally hears questions. It beats even
        // when that try failed (a Redis ACL without these channels, which
        // only costs the introspection its answers: the asker names it
        // missing), because the set is also what keeps its consumer groups
        // from being taken for a gone instance's (`ingest::orphans`).
        let (tried, first_try) = tokio::sync::watch::channel(false);
        tokio::join!(self.beat(first_try, &stop), self.subscribe(&local, tried, &stop));
        let mut conn = self.conn.clone();
        let left: redis::RedisResult<i64> =
            redis::cmd("ZREM").arg(&self.instances_key).arg(&self.instance_id).query_async(&mut conn).await;
        if let Err(e) = left {
            tracing::debug!(error = %e, "introspection: could not leave the instance set");
        }
    }

    async fn beat(&self, mut tried: tokio::sync::watch::Receiver<bool>, stop: &CancellationToken) {
        tokio::select! {
            _ = tried.wait_for(|t| *t) => {}
            _ = stop.cancelled() => return,
        }
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn = self.conn.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let mut call = self.heartbeat.key(&self.instances_key);
            call.arg(&self.instance_id).arg(LIVE.as_millis() as u64);
            if let Err(e) = call.invoke_async::<i64>(&mut conn).await {
                tracing::debug!(error = %e, "introspection heartbeat failed");
            }
        }
    }

    /// Subscribes (again after every loss) until `stop`; `tried` turns true
    /// once the first try has succeeded or failed.
    async fn subscribe(&self, local: &Local, tried: tokio::sync::watch::Sender<bool>, stop: &CancellationToken) {
        let mut pause = Duration::from_millis(100);
        // A node that worked is tried again after a disconnect; the next
        // live one once it fails.
        let mut nodes = SubscribeNodes::new(self.redis.clone(), self.conn.clone());
        while !stop.is_cancelled() {
            let messages = match tokio::time::timeout(CONNECT_TIMEOUT, self.connect(&nodes)).await {
                Ok(Ok(messages)) => messages,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "introspection subscriber: cannot subscribe");
                    tried.send_replace(true);
                    nodes.advance().await;
                    self.pause(&mut pause, stop).await;
                    continue;
                }
                Err(_) => {
                    tracing::debug!("introspection subscriber: connect timed out");
                    tried.send_replace(true);
                    nodes.advance().await;
                    self.pause(&mut pause, stop).await;
                    continue;
                }
            };
            pause = Duration::from_millis(100);
            tried.send_replace(true);
            tokio::pin!(messages);
            loop {
                let msg = tokio::select! {
                    m = messages.next() => m,
                    _ = stop.cancelled() => return,
                };
                let Some(msg) = msg else {
                    tracing::debug!("introspection subscriber: connection lost, reconnecting");
                    break;
                };
                self.on_message(local, msg.get_channel_name(), msg.get_payload_bytes()).await;
            }
        }
    }

    async fn pause(&self, pause: &mut Duration, stop: &CancellationToken) {
        tokio::select! {
            _ = tokio::time::sleep(*pause) => {}
            _ = stop.cancelled() => {}
        }
        *pause = (*pause * 2).min(CONNECT_TIMEOUT);
    }

    async fn connect(
        &self,
        nodes: &SubscribeNodes,
    ) -> redis::RedisResult<impl futures_util::Stream<Item = redis::Msg>> {
        let client = nodes.client()?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&self.channel).await?;
        pubsub.subscribe(&self.reply_channel).await?;
        Ok(pubsub.into_on_message())
    }

    async fn on_message(&self, local: &Local, channel: &str, payload: &[u8]) {
        if channel == self.reply_channel {
            match serde_json::from_slice::<ReplyMessage>(payload) {
                Ok(reply) => {
                    if let Some(tx) = self.waiting().get(&reply.id) {
                        let _ = tx.send(reply.answer);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "introspection: unreadable answer ignored"),
            }
            return;
        }
        let question = match serde_json::from_slice::<QueryMessage>(payload) {
            Ok(q) if q.from == self.instance_id => return,
            Ok(q) => q,
            Err(e) => {
                tracing::debug!(error = %e, "introspection: unreadable question ignored");
                return;
            }
        };
        let reply = ReplyMessage { id: question.id, answer: local.answer(&question.query) };
        let body = match serde_json::to_string(&reply) {
            Ok(b) => b,
            Err(e) => return tracing::warn!(error = %e, "introspection: answer not encodable"),
        };
        let mut conn = self.conn.clone();
        let sent: redis::RedisResult<i64> =
            redis::cmd("PUBLISH").arg(&question.reply_to).arg(body).query_async(&mut conn).await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "introspection: answer not sent");
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Answer>>> {
        self.waiting.locked()
    }
}

impl Pending<'_> {
    /// The answers that arrive before `deadline` or until every live
    /// instance answered, and the live instances that did not (sorted).
    pub(crate) async fn collect(mut self, deadline: Instant) -> (Vec<Answer>, Vec<String>) {
        let mut answers: Vec<Answer> = Vec::new();
        let mut answered: HashSet<String> = HashSet::new();
        while !self.expected.iter().all(|i| answered.contains(i)) {
            match tokio::time::timeout_at(deadline, self.answers.recv()).await {
                Ok(Some(a)) => {
                    if answered.insert(a.instance.instance.clone()) {
                        answers.push(a);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Answers already here from instances that were not (yet) in the set.
        while let Ok(a) = self.answers.try_recv() {
            if answered.insert(a.instance.instance.clone()) {
                answers.push(a);
            }
        }
        let mut missing: Vec<String> = self.expected.iter().filter(|i| !answered.contains(*i)).cloned().collect();
        missing.sort();
        (answers, missing)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.bus.waiting().remove(&self.id);
    }
}
