//! Continuity across instances (CONTRACT section 14), with Redis: where a
//! draining instance leaves its stateful sessions ([`RedisSessionStore`]),
//! and how the instance a client resumes on reads again what that session
//! missed ([`StreamCatchUp`]); the instance holding a session hears that
//! its client resumed elsewhere on [`release_channel`] (through
//! `ingest::listen`). The hub decides when; this module knows
//! Redis, the streams and the routing table, which the hub does not.

mod catch_up;
mod store;

pub(crate) use catch_up::StreamCatchUp;
pub(crate) use store::{release_channel, RedisSessionStore};
