//! signalr-sidecar: a SignalR server for unmodified SignalR clients, fed by
//! Redis Streams (or an in-process bus), built to fan one event out to many
//! connections with one serialization.
//!
//! # Layout
//!
//! The arrows point one way: each module may use only the modules its row
//! allows (`tests/architecture.rs` checks it); `app` wires them all.
//!
//! | module       | its one job | may use |
//! |--------------|-------------|---------|
//! | `codec`      | the SignalR wire format: negotiate, handshake, hub messages, framing (no I/O) | - |
//! | `config`     | one typed `Config` from a TOML file and `SIDECAR_*` variables, and the routing file | - |
//! | `envelope`   | the event envelope of seed 004, both stream encodings, JSON Schema checks | - |
//! | `fault`      | who is at fault when something fails, for log levels and status codes | codec, envelope |
//! | `sync`       | locks that stay usable after a panic elsewhere | - |
//! | `auth`       | client JWTs: where the token is, which keys may sign it, the claims | config |
//! | `telemetry`  | logs, traces, the Prometheus metric families (one table, typed label sets) and the notable events that log and count at once | config |
//! | `transport`  | bytes between a socket and a connection: outbox, replay buffer, WebSockets, SSE, Long Polling | telemetry |
//! | `fanout`     | which outboxes receive a frame: connections, groups, users, stream positions | transport |
//! | `pipeline`   | envelope to frames: freshness, idempotency, coalescing, typing rosters and batches, routing, one encoding per protocol | codec, envelope, fanout, config |
//! | `ingest`     | where envelopes come from: the Redis Streams reader, the HTTP bridge and its spool, the publisher | pipeline, envelope, config |
//! | `presence`   | who is in which room across instances (Redis, or in process) | ingest, config |
//! | `push`       | browser push: subscriptions, who is connected anywhere, Web Push to the offline (RFC 8030/8291/8292) | pipeline, fanout, ingest, envelope, config |
//! | `hub`        | SignalR sessions: handshake, invocations, keep-alive, close reasons, handoff, drain | codec, envelope, transport, fanout, ingest, presence, push, config, auth |
//! | `continuity` | where handed-off sessions wait (Redis) and how their missed events are read again | hub, ingest, pipeline, fanout, envelope, config |
//! | `history`    | each room's recent events in Redis, replayed to a join that names its last position (missed updates) | hub, ingest, pipeline, fanout, envelope, config, codec, transport, telemetry |
//! | `introspect` | operators' questions (rooms, members, users, instances) answered by every instance over Redis pub/sub | fanout, ingest, config, telemetry |
//! | `http`       | the client and admin HTTP servers (TLS), the admin page; errors become status codes here; the HTTP clients (webhook, push) | hub, push, transport, ingest, introspect, envelope, config, auth |
//! | `app`        | builds everything, owns every task, runs the shutdown sequence | everything |

// The library's face is what main, the fuzz targets and the tests use (app,
// codec, config, envelope, telemetry); everything else is pub(crate), and
// every public item says why it exists (clippy -D warnings makes these errors).
#![warn(missing_docs, unreachable_pub)]

pub mod app;
mod auth;
pub mod codec;
pub mod config;
mod continuity;
pub mod envelope;
mod fanout;
mod fault;
mod history;
mod http;
mod hub;
mod ingest;
mod introspect;
mod pipeline;
mod presence;
mod push;
mod sync;
pub mod telemetry;
mod transport;
