//! Rules of the delivery modes of seed 003 (`batch`, `roster`) and of
//! `ends_typing`, checked when the routing file loads so that a mistake
//! stops the start with its line instead of misbehaving at run time.

use std::collections::HashMap;

use super::{Delivery, EventRoute};
use crate::config::arguments::{ArgumentSource, FieldPath, ROSTER_PAYLOAD_FIELDS};

/// Parses `ends_typing`: a payload field, written as an argument source
/// (`payload.author_id`), so the file has one way to name a field.
pub(super) fn ends_typing(text: &str) -> Result<FieldPath, String> {
    match ArgumentSource::parse(text) {
        Ok(ArgumentSource::PayloadField(path)) => Ok(path),
        Ok(_) => Err(format!("ends_typing '{text}' must name a payload field, e.g. \"payload.author_id\"")),
        Err(e) => Err(format!("ends_typing: {e}")),
    }
}

/// Every roster route of a hub feeds the same roster, so they must call the
/// same client method with the same arguments, and those arguments can
/// only name the roster's own fields. `line_of` gives a route's offset in
/// the file; errors come back as (offset, message).
pub(super) fn check(
    routes: &HashMap<String, EventRoute, ahash::RandomState>,
    line_of: impl Fn(&str) -> usize,
) -> Result<(), (usize, String)> {
    let mut rosters: Vec<&EventRoute> = routes.values().filter(|r| r.delivery == Delivery::Roster).collect();
    // The first in the file sets the method; a later one that differs is the error.
    rosters.sort_by_key(|r| line_of(&r.event_type));
    let mut first_of_hub: HashMap<usize, &EventRoute> = HashMap::new();
    for r in rosters {
        let at = line_of(&r.event_type);
        r.arguments
            .fit_own_payload(&ROSTER_PAYLOAD_FIELDS)
            .map_err(|e| (at, format!("route '{}': delivery \"roster\" sends the roster: {e}", r.event_type)))?;
        if r.ends_typing.is_some() {
            return Err((at, format!("route '{}': ends_typing belongs to a route that is not a roster", r.event_type)));
        }
        let first = *first_of_hub.entry(r.hub).or_insert(r);
        if first.method != r.method || first.arguments != r.arguments {
            return Err((
                at,
                format!(
                    "route '{}': the roster routes of a hub share one method and arguments (route '{}' sends {} with {})",
                    r.event_type,
                    first.event_type,
                    first.method,
                    describe(first)
                ),
            ));
        }
    }
    Ok(())
}

fn describe(r: &EventRoute) -> String {
    let list: Vec<String> = r.arguments.sources().iter().map(|s| format!("\"{s}\"")).collect();
    format!("arguments [{}]", list.join(", "))
}
