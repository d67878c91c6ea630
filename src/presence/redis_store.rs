//! Presence in Redis. Per room (one hash slot, via the `{hub:room}` tag):
//! a sorted set of connection entries scored by their expiry, the owner of
//! each entry, a connection count per user and each user's state. Lua
//! scripts make every transition atomic, so exactly one instance sees it.
//! Memory: about 200 bytes per connection in a room plus 100 per user.

use crate::sync::Unpoisoned;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Script, Value};

use super::{Member, PresenceError, PresentUser, Transition};
use crate::ingest::RedisConn;

/// Removes one entry (reporting its user when it was the last) and expires
/// overdue entries of one room; shared by every script.
const EXPIRE: &str = r#"
local function drop(m, left)
  if redis.call('ZREM', KEYS[1], m) == 0 then return end
  local u = redis.call('HGET', KEYS[2], m)
  redis.call('HDEL', KEYS[2], m)
  if u and redis.call('HINCRBY', KEYS[3], u, -1) <= 0 then
    redis.call('HDEL', KEYS[3], u)
    table.insert(left, u)
    table.insert(left, redis.call('HGET', KEYS[4], u) or '')
    redis.call('HDEL', KEYS[4], u)
  end
end
local function expire(now)
  local left = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    drop(m, left)
  end
  return left
end
"#;

const JOIN: &str = r#"
local left = expire(ARGV[4])
local joined = 0
if redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  if redis.call('HINCRBY', KEYS[3], ARGV[2], 1) == 1 then
    joined = 1
    redis.call('HSET', KEYS[4], ARGV[2], ARGV[5])
  end
end
return {joined, left}
"#;

const LEAVE: &str = r#"
local left = expire(ARGV[2])
drop(ARGV[1], left)
return {0, left}
"#;

const SWEEP: &str = r#"
return {0, expire(ARGV[1])}
"#;

const SET_STATE: &str = r#"
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
end
return 0
"#;

/// The set of rooms with presence entries, so any instance can sweep them.
const ROOMS: &str = "presence:rooms";

/// Presence shared through Redis.
pub(crate) struct RedisPresence {
    conn: RedisConn,
    instance: String,
    ttl: Duration,
    hub_names: Vec<String>,
    /// This instance's entries, refreshed on every tick.
    local: Mutex<HashSet<Member>>,
    join: Script,
    leave: Script,
    sweep: Script,
    set_state: Script,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    username: String,
    state: String,
}

impl RedisPresence {
    /// A store for `instance`; entries live `ttl` past their last refresh.
    pub(crate) fn new(conn: RedisConn, instance: &str, ttl: Duration, hub_names: Vec<String>) -> RedisPresence {
        let with_expire = |body: &str| Script::new(&format!("{EXPIRE}{body}"));
        RedisPresence {
            conn,
            instance: instance.to_string(),
            ttl,
            hub_names,
            local: Mutex::new(HashSet::new()),
            join: with_expire(JOIN),
            leave: with_expire(LEAVE),
            sweep: with_expire(SWEEP),
            set_state: Script::new(SET_STATE),
        }
    }

    fn room_tag(&self, hub: usize, room: &str) -> String {
        format!("{}:{room}", self.hub_names.get(hub).map(String::as_str).unwrap_or("?"))
    }

    fn keys(&self, tag: &str) -> [String; 4] {
        ["conns", "owner", "count", "state"].map(|k| format!("presence:{{{tag}}}:{k}"))
    }

    fn entry(&self, m: &Member) -> String {
        format!("{}/{}", self.instance, m.connection)
    }

    pub(super) async fn join(&self, m: &Member, username: &str) -> Result<Vec<Transition>, PresenceError> {
        let tag = self.room_tag(m.hub, &m.room);
        let stored = serde_json::json!({"username": username, "state": "online"}).to_string();
        let mut inv = self.join.prepare_invoke();
        for k in self.keys(&tag) {
            inv.key(k);
        }
        inv.arg(self.entry(m)).arg(&m.user_id).arg(now_ms() + self.ttl.as_millis() as u64).arg(now_ms()).arg(stored);
        let reply: Value = inv.invoke_async(&mut self.conn.clone()).await?;
        let _: i64 = redis::cmd("SADD").arg(ROOMS).arg(&tag).query_async(&mut self.conn.clone()).await?;
        self.lock().insert(m.clone());
        let (joined, mut out) = transitions(m.hub, &m.room, reply);
        if joined {
            let user =
                PresentUser { user_id: m.user_id.clone(), username: username.to_string(), state: "online".into() };
            out.push(Transition::Joined { hub: m.hub, room: m.room.clone(), user });
        }
        Ok(out)
    }

    pub(super) async fn leave(&self, m: &Member) -> Result<Vec<Transition>, PresenceError> {
        self.lock().remove(m);
        let tag = self.room_tag(m.hub, &m.room);
        let mut inv = self.leave.prepare_invoke();
        for k in self.keys(&tag) {
            inv.key(k);
        }
        inv.arg(self.entry(m)).arg(now_ms());
        let reply: Value = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(transitions(m.hub, &m.room, reply).1)
    }

    pub(super) async fn set_state(&self, hub: usize, room: &str, user: &str, state: &str) -> Result<(), PresenceError> {
        let tag = self.room_tag(hub, room);
        let [conns, owner, count, states] = self.keys(&tag);
        let current: Option<String> =
            redis::cmd("HGET").arg(&states).arg(user).query_async(&mut self.conn.clone()).await?;
        let username = current
            .and_then(|s| serde_json::from_str::<Stored>(&s).ok())
            .map(|s| s.username)
            .unwrap_or_else(|| user.to_string());
        let stored = serde_json::json!({"username": username, "state": state}).to_string();
        let _: i64 = self
            .set_state
            .key(conns)
            .key(owner)
            .key(count)
            .key(states)
            .arg(user)
            .arg(stored)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    pub(super) async fn users(&self, hub: usize, room: &str) -> Result<Vec<PresentUser>, PresenceError> {
        let [.., states] = self.keys(&self.room_tag(hub, room));
        let all: HashMap<String, String> =
            redis::cmd("HGETALL").arg(states).query_async(&mut self.conn.clone()).await?;
        let mut users: Vec<PresentUser> = all
            .into_iter()
            .map(|(user_id, s)| {
                let stored = serde_json::from_str::<Stored>(&s)
                    .unwrap_or(Stored { username: user_id.clone(), state: "online".into() });
                PresentUser { user_id, username: stored.username, state: stored.state }
            })
            .collect();
        users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(users)
    }

    pub(super) fn tick_interval(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(200))
    }

    /// Refreshes this instance's entries, then sweeps every room.
    pub(super) async fn tick(&self) -> Result<Vec<Transition>, PresenceError> {
        let expiry = now_ms() + self.ttl.as_millis() as u64;
        let local: Vec<Member> = self.lock().iter().cloned().collect();
        let mut by_room: HashMap<(usize, String), Vec<String>> = HashMap::new();
        for m in &local {
            by_room.entry((m.hub, m.room.clone())).or_default().push(self.entry(m));
        }
        for ((hub, room), entries) in by_room {
            let [conns, ..] = self.keys(&self.room_tag(hub, &room));
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(conns).arg("XX");
            for e in entries {
                cmd.arg(expiry).arg(e);
            }
            let _: i64 = cmd.query_async(&mut self.conn.clone()).await?;
        }
        let tags: Vec<String> = redis::cmd("SMEMBERS").arg(ROOMS).query_async(&mut self.conn.clone()).await?;
        let mut out = Vec::new();
        for tag in tags {
            let Some((hub_name, room)) = tag.split_once(':') else { continue };
            let Some(hub) = self.hub_names.iter().position(|h| h == hub_name) else { continue };
            let keys = self.keys(&tag);
            let mut inv = self.sweep.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            let reply: Value = inv.arg(now_ms()).invoke_async(&mut self.conn.clone()).await?;
            out.extend(transitions(hub, room, reply).1);
            let left: i64 = redis::cmd("ZCARD").arg(&keys[0]).query_async(&mut self.conn.clone()).await?;
            if left == 0 {
                let _: i64 = redis::cmd("SREM").arg(ROOMS).arg(&tag).query_async(&mut self.conn.clone()).await?;
            }
        }
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Member>> {
        self.local.locked()
    }
}

/// `{joined, {user, stored, user, stored, ...}}` -> (joined, Left transitions).
fn transitions(hub: usize, room: &str, reply: Value) -> (bool, Vec<Transition>) {
    let Value::Array(items) = reply else { return (false, Vec::new()) };
    let joined = matches!(items.first(), Some(Value::Int(1)));
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    let mut out = Vec::new();
    if let Some(Value::Array(left)) = items.get(1) {
        for pair in left.chunks(2) {
            let user_id = text(&pair[0]);
            let stored = pair.get(1).map(text).and_then(|s| serde_json::from_str::<Stored>(&s).ok());
            let (username, state) =
                stored.map(|s| (s.username, s.state)).unwrap_or_else(|| (user_id.clone(), "online".into()));
            out.push(Transition::Left { hub, room: room.to_string(), user: PresentUser { user_id, username, state } });
        }
    }
    (joined, out)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
