//! Removes the consumer groups of instances that are gone (CONTRACT
//! section 11): a group of this prefix, not this instance's own, whose
//! instance is not in the live set (introspection's heartbeat, see
//! [`crate::config::RedisConfig::live_instances_key`]) and whose consumers
//! have all been idle longer than the setting. Both, because neither alone
//! tells: Redis 7.0 resets a consumer's idle time only when it gets an
//! entry, so a live reader of a quiet stream looks idle; and an instance
//! may miss a few heartbeats (a Redis hiccup) while it still reads.

use std::collections::HashSet;

use redis::{RedisResult, Value};

use super::replies::{pairs, text};
use super::RedisConn;

/// The instance ids of the live set `key`. The heartbeats prune it of
/// instances silent for a few seconds; if none beats (this one's own bus
/// failing too), stale ids stay, which only keeps more groups.
pub(super) async fn live_instances(conn: &mut RedisConn, key: &str) -> RedisResult<HashSet<String>> {
    let ids: Vec<String> = redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).query_async(conn).await?;
    Ok(ids.into_iter().collect())
}

/// The instance ids with a group of `prefix` on `stream`.
pub(super) async fn group_instances(conn: &mut RedisConn, stream: &str, prefix: &str) -> RedisResult<Vec<String>> {
    let groups: Vec<Value> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await?;
    Ok(groups
        .into_iter()
        .filter_map(|g| pairs(g).into_iter().find(|(k, _)| k == "name").and_then(|(_, v)| text(v)))
        .filter_map(|name| instance_of(&name, prefix).map(str::to_string))
        .collect())
}

/// The instance id of group `name` if it is one of `prefix`'s:
/// `<prefix>:<id>`, an id without ':' (the settings refuse one), so
/// `<prefix>:staging:a` is another deployment's group.
fn instance_of<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix)?.strip_prefix(':').filter(|id| !id.contains(':'))
}

/// Destroys the orphaned groups on `stream`; returns their names.
pub(super) async fn sweep(
    conn: &mut RedisConn,
    stream: &str,
    own: &str,
    prefix: &str,
    live: &HashSet<String>,
    idle_ms: u64,
) -> RedisResult<Vec<String>> {
    let groups: Vec<Value> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await?;
    let mut removed = Vec::new();
    for g in groups {
        let Some(name) = pairs(g).into_iter().find(|(k, _)| k == "name").and_then(|(_, v)| text(v)) else {
            continue;
        };
        let Some(instance) = instance_of(&name, prefix) else { continue };
        if name == own || live.contains(instance) {
            continue;
        }
        let consumers: Vec<Value> =
            redis::cmd("XINFO").arg("CONSUMERS").arg(stream).arg(&name).query_async(conn).await?;
        let idles: Vec<i64> = consumers
            .into_iter()
            .filter_map(|c| {
                pairs(c).into_iter().find(|(k, _)| k == "idle").and_then(|(_, v)| match v {
                    Value::Int(n) => Some(n),
                    _ => None,
                })
            })
            .collect();
        // No consumer: a group no instance of this version made (each adds
        // its consumer when it makes its group), or made before it; with its
        // instance not live, there is nobody to keep it for.
        if idles.iter().any(|i| (*i as u64) < idle_ms) {
            continue;
        }
        let _: i64 = redis::cmd("XGROUP").arg("DESTROY").arg(stream).arg(&name).query_async(conn).await?;
        removed.push(name);
    }
    Ok(removed)
}
