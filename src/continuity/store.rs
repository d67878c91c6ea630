//! Session snapshots in Redis: one key per connection token, written with
//! an expiry (a client that does not resume within it reconnects afresh),
//! taken with GETDEL so exactly one instance carries a session on. A
//! resume that finds no snapshot asks, on the channel
//! `<prefix>:session-release`, whichever instance holds the token's session
//! to write one (`release.rs` listens there).

use std::time::Duration;

use crate::hub::{BoxFuture, HandoffError, SessionSnapshot, SessionStore};
use crate::ingest::RedisConn;

/// Snapshots under `<prefix>:session:<token>`.
pub(crate) struct RedisSessionStore {
    conn: RedisConn,
    prefix: String,
    release_channel: String,
    ttl: Duration,
}

/// How long the note that an instance is saving a session lasts.
const RELEASING_TTL: Duration = Duration::from_secs(5);

/// The channel a resume asks on for its session to be handed over.
pub(crate) fn release_channel(prefix: &str) -> String {
    format!("{prefix}:session-release")
}

impl RedisSessionStore {
    /// A store on `conn`; keys start with `prefix`, snapshots live `ttl`.
    pub(crate) fn new(conn: RedisConn, prefix: &str, ttl: Duration) -> RedisSessionStore {
        RedisSessionStore { conn, prefix: format!("{prefix}:session:"), release_channel: release_channel(prefix), ttl }
    }

    fn key(&self, token: &str) -> String {
        format!("{}{token}", self.prefix)
    }

    /// `<prefix>:session:<token>:releasing`: an instance is saving it.
    fn releasing_key(&self, token: &str) -> String {
        format!("{}{token}:releasing", self.prefix)
    }
}

/// The snapshot as MessagePack (frames as binary).
pub(super) fn encode(snapshot: &SessionSnapshot) -> Result<Vec<u8>, HandoffError> {
    let value = rmpv::ext::to_value(snapshot).map_err(|e| HandoffError::Corrupt(e.to_string()))?;
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value).map_err(|e| HandoffError::Corrupt(e.to_string()))?;
    Ok(out)
}

/// A snapshot back from its bytes.
pub(super) fn decode(mut bytes: &[u8]) -> Result<SessionSnapshot, HandoffError> {
    let value = rmpv::decode::read_value(&mut bytes).map_err(|e| HandoffError::Corrupt(e.to_string()))?;
    rmpv::ext::from_value(value).map_err(|e| HandoffError::Corrupt(e.to_string()))
}

impl SessionStore for RedisSessionStore {
    fn save<'a>(&'a self, token: &'a str, snapshot: &'a SessionSnapshot) -> BoxFuture<'a, Result<(), HandoffError>> {
        Box::pin(async move {
            let bytes = encode(snapshot)?;
            let mut conn = self.conn.clone();
            redis::cmd("SET")
                .arg(self.key(token))
                .arg(bytes)
                .arg("PX")
                .arg(self.ttl.as_millis() as u64)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| HandoffError::Store(e.to_string()))
        })
    }

    fn take<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<SessionSnapshot>, HandoffError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let bytes: Option<Vec<u8>> = redis::cmd("GETDEL")
                .arg(self.key(token))
                .query_async(&mut conn)
                .await
                .map_err(|e| HandoffError::Store(e.to_string()))?;
            bytes.map(|b| decode(&b)).transpose()
        })
    }

    fn mark_releasing<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), HandoffError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("SET")
                .arg(self.releasing_key(token))
                .arg(1)
                .arg("PX")
                .arg(RELEASING_TTL.as_millis() as u64)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| HandoffError::Store(e.to_string()))
        })
    }

    fn is_releasing<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<bool, HandoffError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("EXISTS")
                .arg(self.releasing_key(token))
                .query_async::<i64>(&mut conn)
                .await
                .map(|n| n > 0)
                .map_err(|e| HandoffError::Store(e.to_string()))
        })
    }

    fn ask_release<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<(), HandoffError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("PUBLISH")
                .arg(&self.release_channel)
                .arg(token)
                .query_async::<i64>(&mut conn)
                .await
                .map(drop)
                .map_err(|e| HandoffError::Store(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Frame;

    #[test]
    fn a_snapshot_survives_the_round_trip_with_binary_frames() {
        let snapshot = SessionSnapshot {
            hub: "chat".into(),
            connection_id: "c1".into(),
            protocol: "messagepack".into(),
            user_id: Some("u1".into()),
            groups: vec!["r1".into(), "r2".into()],
            next_seq: 9,
            frames: vec![(7, Frame(vec![0x95, 0x01, 0xff])), (8, Frame(b"{}\x1e".to_vec()))],
            incoming: (4, 3, 3),
            positions: vec![("events:chat".into(), "1700000000000-1".into())],
        };
        let bytes = encode(&snapshot).expect("encodes");
        assert_eq!(decode(&bytes).expect("decodes"), snapshot);
        assert!(decode(b"\xc1").is_err(), "garbage is an error, not a panic");
    }
}
