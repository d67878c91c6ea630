//! The pipeline's side of missed updates (CONTRACT section 15): each event
//! of a route that carries `position` is handed to a [`HistorySink`] just
//! before it is fanned out, so that whoever keeps the rooms' history has
//! every event a join's cut can name. The sink lives where Redis is known
//! (the `history` module); the pipeline only calls it, and never waits.

use std::sync::Arc;

use crate::config::HubId;
use crate::envelope::Envelope;

/// Where events of history routes go before they are fanned out.
pub(crate) trait HistorySink: Send + Sync {
    /// Takes one event of `stream` at `entry_id`, routed to `hub`. Must
    /// not block: the pipeline calls it between receiving an event and
    /// fanning it out.
    fn record(&self, stream: &Arc<str>, entry_id: &str, hub: HubId, envelope: &Envelope);
}
