//! Removes the consumer groups of instances that are gone (CONTRACT
//! section 11): a group of this prefix, not this instance's own, whose
//! consumers have all been idle longer than the setting. A live reader
//! blocks in XREADGROUP every second, so its consumer's idle time stays small.

use redis::{RedisResult, Value};

use super::replies::{pairs, text};
use super::RedisConn;

/// Destroys the orphaned groups on `stream`; returns their names.
pub(super) async fn sweep(
    conn: &mut RedisConn,
    stream: &str,
    own: &str,
    prefix: &str,
    idle_ms: u64,
) -> RedisResult<Vec<String>> {
    let groups: Vec<Value> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await?;
    let mut removed = Vec::new();
    for g in groups {
        let Some(name) = pairs(g).into_iter().find(|(k, _)| k == "name").and_then(|(_, v)| text(v)) else {
            continue;
        };
        if name == own || !name.strip_prefix(prefix).is_some_and(|rest| rest.starts_with(':')) {
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
        // No consumer yet: too new (or never used) to judge.
        if idles.is_empty() || idles.iter().any(|i| (*i as u64) < idle_ms) {
            continue;
        }
        let _: i64 = redis::cmd("XGROUP").arg("DESTROY").arg(stream).arg(&name).query_async(conn).await?;
        removed.push(name);
    }
    Ok(removed)
}
