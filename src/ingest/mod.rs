//! Where envelopes come from. Ingest sources decode and schema-check
//! events, hand them to the pipeline, and acknowledge (or dead-letter) when
//! the pipeline's [`Ack`](crate::pipeline::Ack) says so.
//!
//! - `redis_streams`: the per-instance consumer group reader (CONTRACT 5);
//! - `acker`: batched XACK and dead-letter writes for that reader;
//! - `read_conn` and `resp`: the reader's own XREADGROUP socket and the RESP2
//!   it speaks (the crate's connection for TLS, Unix sockets and clusters);
//! - `replies`: stream entries and XINFO maps out of Redis replies, by value;
//! - `seen`: the event ids a stream held before this instance's group, for
//!   the idempotency window of a new instance;
//! - `tally`: counts what a reader was handed against the stream's own
//!   count, so entries trimmed or deleted before they were read are a hole;
//! - `claim`: re-claims entries left pending, refreshes lag metrics, and
//!   (`orphans`) removes the groups of instances that are gone;
//! - `http`: `POST /internal/events`, through the [`Publisher`];
//! - `publisher`: XADD to the event's stream, or the in-process bus when no
//!   Redis is configured (the bus is the pipeline's own queue);
//! - `append`: the XADD itself, shared by the publisher and the spool;
//! - `spool` and `spool_flush`: POSTed events kept while Redis does not
//!   answer, and the task that appends them once it does (CONTRACT 14);
//! - `subscriber`: one pub/sub channel heard (resume asks, other instances'
//!   user activity), for what `main` wires to it; `pubsub_nodes`: which
//!   node a subscriber connects to (any live one of a cluster).

mod acker;
mod append;
mod claim;
mod hole;
pub(crate) mod http;
mod intake;
mod orphans;
mod position;
mod publisher;
mod pubsub_nodes;
mod range;
mod read_conn;
mod redis_conn;
mod redis_streams;
mod replies;
mod resp;
mod seen;
mod spool;
mod spool_flush;
mod subscriber;
mod tally;

pub(crate) use append::is_unavailable;
pub(crate) use hole::{Hole, OnHole};
pub(crate) use position::StreamId;
pub(crate) use publisher::{PublishError, Published, Publisher};
pub(crate) use pubsub_nodes::SubscribeNodes;
pub(crate) use range::entries_between;
pub(crate) use redis_conn::{connect, untrusted_certificate, RedisConn};
pub(crate) use redis_streams::RedisIngest;
pub(crate) use seen::Recent;
pub(crate) use spool::Spool;
pub(crate) use subscriber::listen;
