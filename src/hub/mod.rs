//! SignalR session semantics on top of any transport: the handshake, hub
//! messages, server methods from the routing file, keep-alive, and how a
//! connection is told to go.
//!
//! - `server`: the shared context (`Hubs`), admission, negotiate;
//! - `connection`: one connection's life on each transport;
//! - `session`: the per-connection protocol state machine;
//! - `invocation`: the routing file's server methods, run for a `caller`;
//! - `handoff`: stateful sessions moving between instances;
//! - `release`: handing one off when another instance asks for it;
//! - `drain`: closing connections on SIGTERM or after a hole;
//! - `close`: why a connection ends -> the Close the client sees;
//! - `missed`: joins that replay what their client missed (CONTRACT 15);
//! - `activity`, `participants`: inactivity, idleness for away presence,
//!   participant counts (CONTRACT 15);
//! - `labels`: each hub's metric label values, shared by its sessions;
//! - `keepalive`, `presence`, `tokens`, `reconnect`, `authorize`, `limits`.

mod activity;
mod authorize;
mod caller;
mod close;
mod connection;
mod drain;
mod error;
mod handoff;
mod invocation;
mod keepalive;
mod labels;
mod limits;
mod missed;
mod participants;
mod presence;
mod reconnect;
mod release;
mod server;
mod session;
mod takeovers;
mod tokens;

#[cfg(test)]
mod testkit;

pub(crate) use activity::{ActiveUser, Activity};
pub(crate) use authorize::{Authorizer, Webhook};
pub(crate) use connection::{resume_websocket, run, Carrier, Start};
pub(crate) use drain::{close_for_hole, close_lost, drain};
pub(crate) use error::Error;
pub(crate) use handoff::{
    abandoned, take_over, Addressee, BoxFuture, CatchUp, Handoff, HandoffError, SessionSnapshot, SessionStore,
};
pub(crate) use keepalive::run_keepalive;
pub(crate) use labels::HubLabels;
pub(crate) use limits::{Bucket, RateLimiter};
pub(crate) use missed::{NotRecovered, RoomHistory};
pub(crate) use participants::run_participants;
pub(crate) use presence::run_presence;
pub(crate) use reconnect::Parked;
pub(crate) use release::release;
pub(crate) use server::{HubSettings, Hubs};
pub(crate) use session::{HubSession, Identity};
pub(crate) use tokens::{Attached, Negotiated, TokenError, Tokens, TransportKind as TokenTransport};

#[cfg(test)]
pub(crate) use handoff::Frame;
#[cfg(test)]
pub(crate) use tokens::new_id as new_connection_id;
