//! Which outboxes receive a frame. Fan-out knows connections, groups and
//! users; it does not know where an event came from or how it was encoded.

mod broadcast;
mod cuts;
mod interest;
mod query;
mod registry;
mod user_watch;
mod wakes;

/// For the pipeline's tests, which build outboxes and may not name `transport`.
#[cfg(test)]
pub(crate) use crate::transport::outbox::Limits;
pub(crate) use crate::transport::outbox::{Outbox, Payload};
pub(crate) use broadcast::{Frame, Target, MAX_SLOTS};
pub(crate) use cuts::{cut_channel, CutQueue, CutRequest, Cuts, Scope};
pub(crate) use query::{unix_ms, ConnView};
#[cfg(test)]
pub(crate) use registry::shard_of;
pub(crate) use registry::{Activity, Added, ConnEntry, ConnId, JoinError, Positions, Registry, NEVER, SHARDS};
pub(crate) use user_watch::UserWatch;
pub(crate) use wakes::run as run_wakes;
