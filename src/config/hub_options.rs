//! The per-hub keys of the routing file for the discussion platform
//! (CONTRACT section 15): how long a room's history is kept for missed
//! updates, when an idle connection is closed, when an idle user turns
//! away. Kept apart from `routes.rs` so the rules between these keys and
//! the routes read in one place; `routes.rs` hands in what they look at.

use std::time::Duration;

/// A room's history is kept this long unless `history_seconds` says
/// otherwise: seed 003's Missed Update lives 24 hours.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(24 * 3600);

/// What the discussion keys of one hub ask for; all off by default, so a
/// routing file without them behaves as before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubOptions {
    /// How long each room's history is kept, when some route of this hub
    /// carries `position` (its events are the history); `None` otherwise.
    pub history: Option<Duration>,
    /// A connection that sent no invocation for this long is closed
    /// (`inactivity_timeout_seconds`); pings are not activity.
    pub inactivity_timeout: Option<Duration>,
    /// A user none of whose connections sent an invocation for this long is
    /// `away` in its rooms (`away_after_seconds`); presence hubs only.
    pub away_after: Option<Duration>,
}

/// The keys as written in a `[[hub]]` table.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct HubKeys {
    pub history_seconds: Option<u64>,
    pub inactivity_timeout_seconds: Option<u64>,
    pub away_after_seconds: Option<u64>,
}

/// What the rules need to know of one hub.
pub(super) struct HubFacts<'a> {
    pub name: &'a str,
    pub presence: bool,
    /// Its routes whose arguments carry `position`: (event type, immediate or
    /// batch?, stream).
    pub position_routes: Vec<(&'a str, bool, &'a str)>,
    /// Its methods with `history = true`: (name, is a join?).
    pub history_methods: Vec<(&'a str, bool)>,
}

/// Checks one hub's keys against its methods and routes and returns its
/// options, or the reason (the caller adds the file and line).
pub(super) fn resolve(hub: &HubFacts<'_>, keys: HubKeys) -> Result<HubOptions, String> {
    let name = hub.name;
    let seconds = |key: &str, v: Option<u64>| match v {
        Some(0) => Err(format!("hub '{name}': {key} must be at least 1")),
        v => Ok(v.map(Duration::from_secs)),
    };
    let inactivity_timeout = seconds("inactivity_timeout_seconds", keys.inactivity_timeout_seconds)?;
    let away_after = seconds("away_after_seconds", keys.away_after_seconds)?;
    let history_seconds = seconds("history_seconds", keys.history_seconds)?;
    if away_after.is_some() && !hub.presence {
        return Err(format!("hub '{name}': away_after_seconds needs presence = true"));
    }
    let mut history_stream: Option<&str> = None;
    for &(event_type, kept, stream) in &hub.position_routes {
        if !kept {
            return Err(format!(
                "route '{event_type}': position belongs to routes with delivery = \"immediate\" or \"batch\" (the events a room's history keeps)"
            ));
        }
        match history_stream {
            Some(s) if s != stream => {
                return Err(format!(
                    "hub '{name}': the routes carrying position come from one stream (positions of '{s}' and '{stream}' cannot be compared)"
                ))
            }
            _ => history_stream = Some(stream),
        }
    }
    if let Some((method, _)) = hub.history_methods.iter().find(|(_, join)| !join) {
        return Err(format!("method '{method}': history belongs to action \"join\""));
    }
    let history = history_stream.map(|_| history_seconds.unwrap_or(DEFAULT_HISTORY));
    if history.is_none() {
        if history_seconds.is_some() {
            return Err(format!(
                "hub '{name}': history_seconds needs a route of this hub whose arguments carry position"
            ));
        }
        if let Some((method, _)) = hub.history_methods.first() {
            return Err(format!(
                "method '{method}': history = true needs a route of this hub whose arguments carry position"
            ));
        }
    }
    Ok(HubOptions { history, inactivity_timeout, away_after })
}
