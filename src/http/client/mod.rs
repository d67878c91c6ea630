//! The client port: `POST {hub}/negotiate` and the hub paths themselves,
//! dispatched to the transport the request asks for. Nothing here can
//! publish events or read metrics.

mod polling;
mod router;
mod state;
mod websocket;

pub(super) use router::handle;
pub(crate) use state::{ClientState, Cors};
