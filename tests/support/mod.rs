//! The integration-test harness: a real `redis-server` on a free port, the
//! real sidecar binary, and the official SignalR client in Node driven over
//! stdin/stdout (`tests/client/driver.mjs`), or every version of it at once
//! (`tests/client/compat.mjs`).

#![allow(dead_code, unused_imports)]

pub mod admin;
pub mod affinity;
pub mod certs;
pub mod compat;
pub mod continuity;
pub mod continuity_check;
pub mod driver;
pub mod http;
pub mod msgpack;
pub mod procs;
pub mod push_service;
pub mod raw;

pub use driver::Driver;
pub use procs::{free_port, Proxy, Redis, Sidecar};

use std::time::Duration;

/// A valid event_id.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Now, as the envelope's timestamp.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Wall-clock milliseconds, the clock the Node driver stamps messages with.
pub fn now_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64() * 1000.0
}

/// XADD of an envelope in the `data` encoding on an open connection (for
/// loops that must not pay a connect per event).
pub fn xadd_data_on(conn: &mut redis::Connection, stream: &str, env: &serde_json::Value) -> String {
    redis::cmd("XADD").arg(stream).arg("*").arg("data").arg(env.to_string()).query(conn).expect("XADD")
}

/// A chat_message payload of seed 004 with sequence number `n`.
pub fn chat_payload(room: &str, n: u64) -> serde_json::Value {
    serde_json::json!({
        "id": uuid(), "request_id": room, "sender_id": "agent-1", "content": format!("message {n}"),
        "sequence_number": n, "is_screenshot": false, "created_at": now()
    })
}

/// A whole envelope as JSON.
pub fn envelope(event_type: &str, room: &str, payload: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "event_id": uuid(), "event_type": event_type, "timestamp": now(), "room_id": room, "payload": payload
    })
}

/// Long enough for anything on loopback, short enough to fail fast.
pub const WAIT: Duration = Duration::from_secs(10);

/// The HS256 secret the tests' sidecars trust with [`jwt_env`].
pub const JWT_SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";

/// Settings for `SIDECAR_AUTH=jwt` with [`JWT_SECRET`].
pub fn jwt_env() -> Vec<(&'static str, String)> {
    vec![("SIDECAR_AUTH", "jwt".into()), ("SIDECAR_JWT_SECRET", JWT_SECRET.into())]
}

/// A valid HS256 token for `sub`, named `name`, for ten minutes.
pub fn token(sub: &str, name: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 600;
    let claims = serde_json::json!({"sub": sub, "name": name, "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("key");
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).expect("sign")
}

/// Every entry of `<stream>:dead`, once there are `n` (or after 5 s), as
/// its fields, each value a JSON string.
pub async fn dead_letters(redis: &Redis, stream: &str, n: usize) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut conn = redis.conn();
    let mut dead = Vec::new();
    for _ in 0..100 {
        let reply: ::redis::streams::StreamRangeReply =
            ::redis::cmd("XRANGE").arg(format!("{stream}:dead")).arg("-").arg("+").query(&mut conn).expect("XRANGE");
        dead = reply
            .ids
            .iter()
            .map(|e| {
                e.map
                    .iter()
                    .map(|(k, v)| (k.clone(), ::redis::from_redis_value_ref::<String>(v).expect("text").into()))
                    .collect()
            })
            .collect();
        if dead.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dead
}
