//! Where subscriptions live: per user, deduplicated by endpoint. With Redis
//! one hash per user (`push:subs:{<user>}`, endpoint -> subscription), so
//! every instance sends to the same set; without it, in this process.
//! Also the claim that makes one instance, not every one, send a given
//! event to a given endpoint.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use redis::Script;
use sha2::{Digest, Sha256};

use super::subscription::Subscription;
use super::Error;
use crate::ingest::RedisConn;
use crate::sync::Unpoisoned;

/// How long a claim on (event, endpoint) is kept: longer than any event
/// can be delivered after it was published (freshness and dedupe windows
/// are minutes), so a late duplicate on another instance is not sent.
const CLAIM_TTL: Duration = Duration::from_secs(3600);

/// Adds or replaces the entry of an endpoint unless the user is at the
/// limit: 1 added, 0 replaced, -1 refused.
const ADD: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 0
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

/// The subscription store in use.
pub(crate) enum Store {
    /// In this process (no Redis): user -> endpoint -> subscription.
    Memory(Mutex<HashMap<String, BTreeMap<String, Subscription>>>),
    /// In Redis, shared by every instance.
    Redis {
        /// The connection.
        conn: RedisConn,
        /// The add-unless-full script.
        add: Script,
    },
}

fn subs_key(user: &str) -> String {
    format!("push:subs:{{{user}}}")
}

impl Store {
    /// A store in this process.
    pub(crate) fn memory() -> Store {
        Store::Memory(Mutex::default())
    }

    /// A store in Redis.
    pub(crate) fn redis(conn: RedisConn) -> Store {
        Store::Redis { conn, add: Script::new(ADD) }
    }

    /// Keeps `sub` for `user`; a known endpoint is replaced (new keys).
    /// True when it was new.
    pub(crate) async fn add(&self, user: &str, sub: &Subscription, max: usize) -> Result<bool, Error> {
        match self {
            Store::Memory(m) => {
                let mut all = m.locked();
                let subs = all.entry(user.to_string()).or_default();
                if !subs.contains_key(&sub.endpoint) && subs.len() >= max {
                    return Err(Error::TooMany(max));
                }
                Ok(subs.insert(sub.endpoint.clone(), sub.clone()).is_none())
            }
            Store::Redis { conn, add } => {
                let added: i64 = add
                    .key(subs_key(user))
                    .arg(&sub.endpoint)
                    .arg(sub.to_stored())
                    .arg(max)
                    .invoke_async(&mut conn.clone())
                    .await?;
                match added {
                    -1 => Err(Error::TooMany(max)),
                    n => Ok(n == 1),
                }
            }
        }
    }

    /// Forgets a user's subscription; true when there was one.
    pub(crate) async fn remove(&self, user: &str, endpoint: &str) -> Result<bool, Error> {
        match self {
            Store::Memory(m) => {
                let mut all = m.locked();
                let removed = all.get_mut(user).is_some_and(|subs| subs.remove(endpoint).is_some());
                if all.get(user).is_some_and(BTreeMap::is_empty) {
                    all.remove(user);
                }
                Ok(removed)
            }
            Store::Redis { conn, .. } => {
                let n: i64 =
                    redis::cmd("HDEL").arg(subs_key(user)).arg(endpoint).query_async(&mut conn.clone()).await?;
                Ok(n > 0)
            }
        }
    }

    /// A user's subscriptions.
    pub(crate) async fn list(&self, user: &str) -> Result<Vec<Subscription>, Error> {
        match self {
            Store::Memory(m) => {
                let all = m.locked();
                Ok(all.get(user).map(|s| s.values().cloned().collect()).unwrap_or_default())
            }
            Store::Redis { conn, .. } => {
                let stored: Vec<String> =
                    redis::cmd("HVALS").arg(subs_key(user)).query_async(&mut conn.clone()).await?;
                Ok(stored.iter().filter_map(|s| Subscription::from_stored(s)).collect())
            }
        }
    }

    /// Whether this instance is the one to send `event_id` to `endpoint`:
    /// the first to ask wins, every other instance is told no.
    pub(crate) async fn claim(&self, event_id: &str, endpoint: &str) -> Result<bool, Error> {
        match self {
            // One instance: the pipeline's dedupe already sends an event once.
            Store::Memory(_) => Ok(true),
            Store::Redis { conn, .. } => {
                let digest = Sha256::digest(endpoint.as_bytes());
                let key = format!("push:sent:{event_id}:{}", hex(&digest[..12]));
                let won: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(CLAIM_TTL.as_millis() as u64)
                    .query_async(&mut conn.clone())
                    .await?;
                Ok(won.is_some())
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::ece::ReceiverKeys;
    use p256::elliptic_curve::Generate;

    fn sub(endpoint: &str) -> Subscription {
        let key = p256::SecretKey::try_generate().expect("random");
        Subscription { endpoint: endpoint.into(), keys: ReceiverKeys { public: key.public_key(), auth: [1; 16] } }
    }

    #[tokio::test]
    async fn in_process_subscriptions_are_per_user_deduplicated_and_bounded() {
        let store = Store::memory();
        assert!(store.add("u1", &sub("https://p/a"), 2).await.expect("add"));
        let renewed = sub("https://p/a");
        assert!(!store.add("u1", &renewed, 2).await.expect("same endpoint"), "replaced, not added");
        assert_eq!(store.list("u1").await.expect("list"), vec![renewed]);
        assert!(store.add("u1", &sub("https://p/b"), 2).await.expect("add"));
        assert!(matches!(store.add("u1", &sub("https://p/c"), 2).await, Err(Error::TooMany(2))));
        assert!(store.add("u2", &sub("https://p/c"), 2).await.expect("another user"));
        assert!(store.remove("u1", "https://p/a").await.expect("remove"));
        assert!(!store.remove("u1", "https://p/a").await.expect("remove again"));
        assert_eq!(store.list("u1").await.expect("list").len(), 1);
        assert!(store.list("nobody").await.expect("list").is_empty());
    }
}
