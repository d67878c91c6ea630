//! Continuity across instances (CONTRACT section 14), with Redis: where a
//! draining instance leaves its stateful sessions ([`RedisSessionStore`]),
//! and how the instance a client resumes on reads again what that session
//! missed ([`StreamCatchUp`]), and how the instance holding a session hears
//! that its client resumed elsewhere ([`listen_for_releases`]). The hub decides when; this module knows
//! Redis, the streams and the routing table, which the hub does not.

mod catch_up;
mod release;
mod store;

pub(crate) use catch_up::StreamCatchUp;
pub(crate) use release::listen as listen_for_releases;
pub(crate) use store::{release_channel, RedisSessionStore};
