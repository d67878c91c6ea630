//! SignalR session semantics on top of any transport: the handshake, hub
//! messages, server methods from the routing file, keep-alive, and how a
//! connection is told to go.
//!
//! - `server`: the shared context (`Hubs`), admission, negotiate;
//! - `connection`: one connection's life on each transport;
//! - `session`: the per-connection protocol state machine;
//! - `invocation`: the routing file's server methods;
//! - `handoff`: stateful sessions moving between instances;
//! - `drain`: closing connections on SIGTERM or after a hole;
//! - `close`: why a connection ends -> the Close the client sees;
//! - `keepalive`, `presence`, `tokens`, `reconnect`, `authorize`, `limits`.

mod authorize;
mod close;
mod connection;
mod drain;
mod error;
mod handoff;
mod invocation;
mod keepalive;
mod limits;
mod presence;
mod reconnect;
mod server;
mod session;
mod tokens;

#[cfg(test)]
mod testkit;

pub use authorize::{Authorizer, Webhook};
pub use connection::{resume_websocket, run, Carrier, ConnectionTask, Start};
pub use drain::{close_for_hole, drain};
pub use error::Error;
pub use handoff::{
    take_over, Addressee, BoxFuture, CatchUp, Frame, Handoff, HandoffError, SessionSnapshot, SessionStore,
};
pub use keepalive::run_keepalive;
pub use limits::RateLimiter;
pub use presence::run_presence;
pub use reconnect::Parked;
pub use server::{HubSettings, Hubs};
pub use session::{HubSession, Identity};
pub use tokens::{
    new_id as new_connection_id, Attached, Negotiated, TokenError, Tokens, TransportKind as TokenTransport,
};
