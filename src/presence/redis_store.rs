//! Presence in Redis. Per room (one hash slot, via the `{hub:room}` tag):
//! a sorted set of connection entries scored by their expiry, the owner of
//! each entry, a connection count per user and each user's state, the set
//! of idle entries and an idle count per user (a user is away while all its
//! entries are idle). Lua scripts make every transition atomic, so exactly
//! one instance sees it. Memory: about 200 bytes per connection in a room
//! plus 100 per user.

use crate::sync::Unpoisoned;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Script, Value};

use super::{Member, PresenceError, PresentUser, StateChanged, Transition};
use crate::ingest::RedisConn;

/// Sets a user's state from its entries' idleness (1 if it changed);
/// removes one entry (reporting its user when it was the last); expires
/// overdue entries of one room. Shared by every script. KEYS: conns,
/// owner, count, state, idle, idle count.
const EXPIRE: &str = r#"
local function recompute(u)
  local n = tonumber(redis.call('HGET', KEYS[3], u) or '0')
  -- Only users whose idleness is tracked (a hub with away_after_seconds)
  -- have an idle count: for the others the state is SetPresence's alone.
  if n <= 0 or redis.call('HEXISTS', KEYS[6], u) == 0 then return 0 end
  local want = 'online'
  if tonumber(redis.call('HGET', KEYS[6], u) or '0') >= n then want = 'away' end
  local raw = redis.call('HGET', KEYS[4], u)
  if not raw then return 0 end
  local ok, s = pcall(cjson.decode, raw)
  if not ok or type(s) ~= 'table' or s.state == want then return 0 end
  s.state = want
  redis.call('HSET', KEYS[4], u, cjson.encode(s))
  return 1
end
local function drop(m, left)
  if redis.call('ZREM', KEYS[1], m) == 0 then return 0 end
  local u = redis.call('HGET', KEYS[2], m)
  redis.call('HDEL', KEYS[2], m)
  if not u then return 0 end
  if redis.call('SREM', KEYS[5], m) == 1 then redis.call('HINCRBY', KEYS[6], u, -1) end
  if redis.call('HINCRBY', KEYS[3], u, -1) <= 0 then
    redis.call('HDEL', KEYS[3], u)
    redis.call('HDEL', KEYS[6], u)
    table.insert(left, u)
    table.insert(left, redis.call('HGET', KEYS[4], u) or '')
    redis.call('HDEL', KEYS[4], u)
    return 0
  end
  return recompute(u)
end
local function expire(now)
  local left, changed = {}, 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    if drop(m, left) == 1 then changed = 1 end
  end
  return left, changed
end
"#;

const JOIN: &str = r#"
local left, changed = expire(ARGV[4])
local joined = 0
if redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  if redis.call('HINCRBY', KEYS[3], ARGV[2], 1) == 1 then
    joined = 1
    redis.call('HSET', KEYS[4], ARGV[2], ARGV[5])
  elseif recompute(ARGV[2]) == 1 then
    changed = 1
  end
end
return {joined, left, changed}
"#;

const LEAVE: &str = r#"
local left, changed = expire(ARGV[2])
if drop(ARGV[1], left) == 1 then changed = 1 end
return {0, left, changed}
"#;

const SWEEP: &str = r#"
local left, changed = expire(ARGV[1])
return {0, left, changed}
"#;

/// Takes a room's count slot for ARGV[2] ms unless another instance holds
/// it (this instance's own slot, a few ms from expiring, is taken again).
const CLAIM: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

const SET_IDLE: &str = r#"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local u = redis.call('HGET', KEYS[2], ARGV[1])
if not u then return 0 end
if ARGV[2] == '1' then
  if redis.call('SADD', KEYS[5], ARGV[1]) == 1 then redis.call('HINCRBY', KEYS[6], u, 1) end
elseif redis.call('SREM', KEYS[5], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[6], u, -1)
else
  redis.call('HINCRBY', KEYS[6], u, 0)
end
return recompute(u)
"#;

const SET_STATE: &str = r#"
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
end
return 0
"#;

/// Refreshes this instance's entries of one room (KEYS[1], its conns) to
/// expire at ARGV[1]; returns those of ARGV[2..] that are not there any
/// more (Redis restarted, or was down longer than an entry lives, and a
/// sweep removed them), for the instance to add again.
const REFRESH: &str = r#"
local missing = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
  else
    table.insert(missing, ARGV[i])
  end
end
return missing
"#;

/// The set of rooms with presence entries, so any instance can sweep them.
const ROOMS: &str = "presence:rooms";

/// Presence shared through Redis.
pub(crate) struct RedisPresence {
    conn: RedisConn,
    instance: String,
    ttl: Duration,
    hub_names: Vec<String>,
    /// This instance's entries, refreshed on every tick, with the user's
    /// display name (to add an entry again that Redis lost).
    local: Mutex<HashMap<Member, String>>,
    join: Script,
    leave: Script,
    sweep: Script,
    set_state: Script,
    set_idle: Script,
    claim: Script,
    refresh: Script,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    username: String,
    state: String,
}

impl RedisPresence {
    /// A store for `instance`: a user of an instance that stops refreshing
    /// is gone within `ttl` of its last refresh (see [`RedisPresence::lifetime`]).
    pub(crate) fn new(conn: RedisConn, instance: &str, ttl: Duration, hub_names: Vec<String>) -> RedisPresence {
        let with_expire = |body: &str| Script::new(&format!("{EXPIRE}{body}"));
        RedisPresence {
            conn,
            instance: instance.to_string(),
            ttl,
            hub_names,
            local: Mutex::new(HashMap::new()),
            join: with_expire(JOIN),
            leave: with_expire(LEAVE),
            sweep: with_expire(SWEEP),
            set_state: Script::new(SET_STATE),
            set_idle: with_expire(SET_IDLE),
            claim: Script::new(CLAIM),
            refresh: Script::new(REFRESH),
        }
    }

    fn room_tag(&self, hub: usize, room: &str) -> String {
        format!("{}:{room}", self.hub_names.get(hub).map(String::as_str).unwrap_or("?"))
    }

    fn keys(&self, tag: &str) -> [String; 6] {
        ["conns", "owner", "count", "state", "idle", "idlecount"].map(|k| format!("presence:{{{tag}}}:{k}"))
    }

    fn entry(&self, m: &Member) -> String {
        format!("{}/{}", self.instance, m.connection)
    }

    pub(super) async fn join(
        &self,
        m: &Member,
        username: &str,
    ) -> Result<(Vec<Transition>, StateChanged), PresenceError> {
        let tag = self.room_tag(m.hub, &m.room);
        let stored = serde_json::json!({"username": username, "state": "online"}).to_string();
        let mut inv = self.join.prepare_invoke();
        for k in self.keys(&tag) {
            inv.key(k);
        }
        inv.arg(self.entry(m)).arg(&m.user_id).arg(now_ms() + self.lifetime_ms()).arg(now_ms()).arg(stored);
        let reply: Value = inv.invoke_async(&mut self.conn.clone()).await?;
        let _: i64 = redis::cmd("SADD").arg(ROOMS).arg(&tag).query_async(&mut self.conn.clone()).await?;
        self.lock().insert(m.clone(), username.to_string());
        let (joined, mut out, changed) = transitions(m.hub, &m.room, reply);
        if joined {
            let user =
                PresentUser { user_id: m.user_id.clone(), username: username.to_string(), state: "online".into() };
            out.push(Transition::Joined { hub: m.hub, room: m.room.clone(), user });
        }
        Ok((out, changed))
    }

    pub(super) async fn leave(&self, m: &Member) -> Result<(Vec<Transition>, StateChanged), PresenceError> {
        self.lock().remove(m);
        let tag = self.room_tag(m.hub, &m.room);
        let mut inv = self.leave.prepare_invoke();
        for k in self.keys(&tag) {
            inv.key(k);
        }
        inv.arg(self.entry(m)).arg(now_ms());
        let reply: Value = inv.invoke_async(&mut self.conn.clone()).await?;
        let (_, left, changed) = transitions(m.hub, &m.room, reply);
        Ok((left, changed))
    }

    /// Stops refreshing `m`'s entry; it expires a TTL later.
    pub(super) fn forget(&self, m: &Member) {
        self.lock().remove(m);
    }

    pub(super) async fn set_idle(&self, m: &Member, idle: bool) -> Result<StateChanged, PresenceError> {
        let mut inv = self.set_idle.prepare_invoke();
        for k in self.keys(&self.room_tag(m.hub, &m.room)) {
            inv.key(k);
        }
        inv.arg(self.entry(m)).arg(if idle { "1" } else { "0" });
        let changed: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(changed == 1)
    }

    pub(super) async fn claim_count(&self, hub: usize, room: &str, every: Duration) -> Result<bool, PresenceError> {
        let key = format!("presence:{{{}}}:countslot", self.room_tag(hub, room));
        let won: i64 = self
            .claim
            .key(key)
            .arg(&self.instance)
            .arg(every.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(won == 1)
    }

    pub(super) async fn set_state(&self, hub: usize, room: &str, user: &str, state: &str) -> Result<(), PresenceError> {
        let tag = self.room_tag(hub, room);
        let [conns, owner, count, states, ..] = self.keys(&tag);
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
        let [_, _, _, states, _, _] = self.keys(&self.room_tag(hub, room));
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

    /// How often this instance refreshes its entries and sweeps every
    /// room: a quarter of the TTL.
    pub(super) fn tick_interval(&self) -> Duration {
        (self.ttl / 4).max(Duration::from_millis(200))
    }

    /// How long an entry lives past its last refresh: the TTL less one
    /// tick, since an overdue entry is only seen by the next sweep, up to a
    /// tick later (CONTRACT section 11: a dead instance's users are gone,
    /// `user_left` published, within the TTL). A live instance refreshes
    /// every tick, so its entries have two ticks to spare.
    fn lifetime_ms(&self) -> u64 {
        self.ttl.saturating_sub(self.tick_interval()).as_millis() as u64
    }

    /// Refreshes this instance's entries (adding again those Redis lost),
    /// then sweeps every room; returns the users that joined again or left
    /// by expiry, and the rooms where a state changed.
    pub(super) async fn tick(&self) -> Result<(Vec<Transition>, Vec<(usize, String)>), PresenceError> {
        let (mut out, mut changed_rooms) = (Vec::new(), Vec::new());
        for m in self.refresh().await? {
            let Some(username) = self.lock().get(&m).cloned() else { continue }; // left meanwhile
            let (joined, changed) = self.join(&m, &username).await?;
            out.extend(joined);
            if changed {
                changed_rooms.push((m.hub, m.room.clone()));
            }
        }
        let tags: Vec<String> = redis::cmd("SMEMBERS").arg(ROOMS).query_async(&mut self.conn.clone()).await?;
        for tag in tags {
            let Some((hub_name, room)) = tag.split_once(':') else { continue };
            let Some(hub) = self.hub_names.iter().position(|h| h == hub_name) else { continue };
            let keys = self.keys(&tag);
            let mut inv = self.sweep.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            let reply: Value = inv.arg(now_ms()).invoke_async(&mut self.conn.clone()).await?;
            let (_, left, changed) = transitions(hub, room, reply);
            out.extend(left);
            if changed {
                changed_rooms.push((hub, room.to_string()));
            }
            let left: i64 = redis::cmd("ZCARD").arg(&keys[0]).query_async(&mut self.conn.clone()).await?;
            if left == 0 {
                let _: i64 = redis::cmd("SREM").arg(ROOMS).arg(&tag).query_async(&mut self.conn.clone()).await?;
            }
        }
        Ok((out, changed_rooms))
    }

    /// Pushes back the expiry of this instance's entries; returns those
    /// Redis no longer has. Without adding them again, a user whose
    /// connections outlived a Redis restart (or an outage longer than an
    /// entry lives) would stay missing from the room for as long as they
    /// stay connected.
    async fn refresh(&self) -> Result<Vec<Member>, PresenceError> {
        let expiry = now_ms() + self.lifetime_ms();
        let local: Vec<Member> = self.lock().keys().cloned().collect();
        let mut by_room: HashMap<(usize, String), Vec<&Member>> = HashMap::new();
        for m in &local {
            by_room.entry((m.hub, m.room.clone())).or_default().push(m);
        }
        let mut lost = Vec::new();
        for ((hub, room), members) in by_room {
            let [conns, ..] = self.keys(&self.room_tag(hub, &room));
            let mut inv = self.refresh.key(conns);
            inv.arg(expiry);
            for m in &members {
                inv.arg(self.entry(m));
            }
            let missing: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
            lost.extend(members.into_iter().filter(|m| missing.contains(&self.entry(m))).cloned());
        }
        Ok(lost)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Member, String>> {
        self.local.locked()
    }
}

/// `{joined, {user, stored, user, stored, ...}, state changed}` ->
/// (joined, Left transitions, state changed).
fn transitions(hub: usize, room: &str, reply: Value) -> (bool, Vec<Transition>, StateChanged) {
    let Value::Array(items) = reply else { return (false, Vec::new(), false) };
    let joined = matches!(items.first(), Some(Value::Int(1)));
    let changed = matches!(items.get(2), Some(Value::Int(1)));
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
    (joined, out, changed)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
