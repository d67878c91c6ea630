//! signalr-sidecar: a SignalR server for unmodified SignalR clients, fed by
//! Redis Streams (or an in-process bus), built to fan one event out to many
//! connections with one serialization.
//!
//! # Layout
//!
//! The arrows point one way: each module may use only those listed before it
//! in this table, except `app`, which wires them all together.
//!
//! | module      | its one job |
//! |-------------|-------------|
//! | `auth`      | client JWTs: where the token is, which keys may sign it (secret, PEM, JWKS reloaded on change), the claims |
//! | `codec`     | the SignalR wire format: negotiate, handshake, hub messages, framing (no I/O) |
//! | `config`    | one typed `Config` from a TOML file and `SIDECAR_*` variables, and the routing file |
//! | `envelope`  | the event envelope of seed 004, both stream encodings, JSON Schema checks |
//! | `telemetry` | logs and the Prometheus metric families |
//! | `transport` | bytes between a socket and a connection: the outbox, WebSockets |
//! | `fanout`    | which outboxes receive a frame: connections, groups, users |
//! | `pipeline`  | envelope to frames: freshness, idempotency, routing, one encoding per protocol |
//! | `ingest`    | where envelopes come from: the Redis Streams reader, the HTTP bridge, the publisher |
//! | `presence`  | who is in which room across instances (Redis, or in process) |
//! | `hub`       | SignalR sessions: handshake, invocations, keep-alive, close reasons |
//! | `http`      | the client and admin HTTP servers, TLS on the client port; errors become status codes here |
//! | `app`       | builds everything, owns every task, runs the shutdown sequence |

pub mod app;
pub mod auth;
pub mod codec;
pub mod config;
pub mod continuity;
pub mod envelope;
pub mod fanout;
pub mod fault;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod pipeline;
pub mod presence;
pub mod sync;
pub mod telemetry;
pub mod transport;
