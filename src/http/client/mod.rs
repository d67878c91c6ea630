//! The client port: `POST {hub}/negotiate` and the hub paths themselves,
//! dispatched to the transport the request asks for. Nothing here can
//! publish events or read metrics.

mod polling;
mod router;
mod state;
mod websocket;

pub use router::handle;
pub use state::{ClientState, Cors};
