//! Whether a user has a live connection, on any instance, on the hub a
//! push route delivers on: the one question browser push asks before it
//! sends. Only a connection on the route's own hub gets the event in the
//! app, so a user connected elsewhere (a discussion page without the
//! notification hub) is pushed to rather than left with nothing. This
//! instance answers from its registry; the others from Redis, where each
//! instance keeps, per user and push hub it serves, an entry scored by its
//! expiry (`push:live:{<user>}:<hub name>`, member = instance). An
//! instance adds the entry when the user's first connection on that hub
//! opens there, removes it when the last closes, and refreshes it well
//! within the TTL, so a crashed instance's users count as gone within the
//! TTL.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::Error;
use crate::config::HubId;
use crate::fanout::Registry;
use crate::ingest::RedisConn;

/// Liveness across instances.
pub(crate) struct Liveness {
    registry: Arc<Registry>,
    /// The hubs push routes deliver on, with their names (the Redis keys').
    hubs: Vec<(HubId, String)>,
    shared: Option<Shared>,
}

struct Shared {
    conn: RedisConn,
    instance: String,
    ttl: Duration,
}

fn live_key(user: &str, hub: &str) -> String {
    format!("push:live:{{{user}}}:{hub}")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Liveness {
    /// One instance, no Redis: the registry is the whole truth. `hubs`
    /// are the hubs push routes deliver on, with their names.
    pub(crate) fn local(registry: Arc<Registry>, hubs: Vec<(HubId, String)>) -> Liveness {
        Liveness { registry, hubs, shared: None }
    }

    /// Shared through Redis by every instance; entries live `ttl` past
    /// their last refresh.
    pub(crate) fn redis(
        registry: Arc<Registry>,
        hubs: Vec<(HubId, String)>,
        conn: RedisConn,
        instance: &str,
        ttl: Duration,
    ) -> Liveness {
        Liveness { registry, hubs, shared: Some(Shared { conn, instance: instance.to_string(), ttl }) }
    }

    /// True when `user` has a live connection on `hub`, here or on another
    /// instance.
    pub(crate) async fn is_live(&self, user: &str, hub: HubId) -> Result<bool, Error> {
        if self.registry.user_connections_on(hub, user) > 0 {
            return Ok(true);
        }
        let Some(s) = &self.shared else { return Ok(false) };
        let Some((_, name)) = self.hubs.iter().find(|(h, _)| *h == hub) else { return Ok(false) };
        let live: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(live_key(user, name))
            .arg(format!("({}", now_ms()))
            .arg("+inf")
            .query_async(&mut s.conn.clone())
            .await?;
        // This instance's own entry may lag its registry by a moment.
        Ok(live.iter().any(|i| *i != s.instance))
    }

    /// Keeps this instance's entries in Redis in step with its registry
    /// until `stop`; nothing to do without Redis.
    /// The registry's user watch is asked for only here, with Redis:
    /// once asked for, every user whose connections open or close is
    /// recorded in it until read, and without Redis nothing reads it (every
    /// user that ever connected would stay in it).
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(s) = &self.shared else { return };
        let watch = self.registry.watch_users();
        let mut tick = tokio::time::interval((s.ttl / 3).max(Duration::from_millis(200)));
        // Users with an entry of ours, and users whose entry must be
        // written again (changed, or a write that failed).
        let mut here: HashSet<Arc<str>> = HashSet::new();
        let mut pending: HashSet<Arc<str>> = HashSet::new();
        loop {
            let refresh = tokio::select! {
                _ = watch.changed() => false,
                _ = tick.tick() => true,
                _ = stop.cancelled() => break,
            };
            pending.extend(watch.take());
            if refresh {
                pending.extend(here.iter().cloned());
            }
            let mut failed = 0usize;
            for user in std::mem::take(&mut pending) {
                let mut live_anywhere = false;
                let mut written = true;
                for (hub, name) in &self.hubs {
                    let live = self.registry.user_connections_on(*hub, &user) > 0;
                    live_anywhere |= live;
                    written &= self.write(s, &user, name, live).await.is_ok();
                }
                if !written {
                    failed += 1;
                    pending.insert(user);
                } else if live_anywhere {
                    here.insert(user);
                } else {
                    here.remove(&user);
                }
            }
            if failed > 0 {
                tracing::warn!(users = failed, "push liveness not written to Redis; retried on the next tick");
            }
        }
    }

    async fn write(&self, s: &Shared, user: &str, hub: &str, live: bool) -> Result<(), redis::RedisError> {
        let key = live_key(user, hub);
        let mut conn = s.conn.clone();
        if live {
            let expiry = now_ms() + s.ttl.as_millis() as u64;
            let _: i64 = redis::cmd("ZADD").arg(&key).arg(expiry).arg(&s.instance).query_async(&mut conn).await?;
            // The key outlives every entry in it: each write sets it to the newest expiry.
            let _: i64 = redis::cmd("PEXPIRE").arg(&key).arg(s.ttl.as_millis() as u64).query_async(&mut conn).await?;
        } else {
            let _: i64 = redis::cmd("ZREM").arg(&key).arg(&s.instance).query_async(&mut conn).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::ConnEntry;

    /// Without Redis nothing reads the users whose connections changed:
    /// none may be recorded, or every user that ever connected stays
    /// recorded for the life of the process.
    #[tokio::test]
    async fn without_redis_no_user_is_recorded() {
        let registry = Arc::new(Registry::new(1, 10));
        let liveness = Arc::new(Liveness::local(registry.clone(), vec![(0, "notification".to_string())]));
        liveness.run(CancellationToken::new()).await;
        for id in 0..100 {
            registry.add(Arc::new(ConnEntry::for_test(id, 0, Some(&format!("u{id}")), 2)));
            registry.remove(id);
        }
        assert_eq!(registry.users_recorded(), 0, "nobody reads them: nobody is recorded");
    }
}
