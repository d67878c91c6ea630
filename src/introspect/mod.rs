//! Introspection for operators (CONTRACT section 16): the rooms of a hub,
//! one room's members, one user's connections and every instance, for the
//! whole deployment, from whichever instance is asked.
//!
//! | file       | its one job |
//! |------------|-------------|
//! | `model.rs` | questions, answers and API responses (the OpenAPI file's shapes) |
//! | `local.rs` | this instance's answer, from the fan-out registry and the metric gauges |
//! | `bus.rs`   | asking every instance over Redis pub/sub; heartbeats |
//! | `merge.rs` | many answers -> one response, pages exact across instances |
//!
//! Without Redis only this instance answers. Nothing here runs on the
//! delivery path: a question takes the registry's read lock once per
//! instance, as deliveries do, and copies out one page.

mod bus;
mod error;
mod local;
mod merge;
pub(crate) mod model;

pub(crate) use bus::Bus;
pub(crate) use error::IntrospectError;
pub(crate) use local::{Local, StateFn};
pub(crate) use model::InstanceState;

use std::sync::Arc;
use std::time::Duration;

use model::{Answer, Cluster, HubsResponse, InstancesResponse, MembersResponse, Query, RoomsResponse, UserResponse};
use tokio_util::sync::CancellationToken;

/// How long the asked instance waits for the others: what a response costs
/// at most beyond the asked instance's own work, under the 100 ms the API
/// promises.
pub(crate) const ANSWER_DEADLINE: Duration = Duration::from_millis(80);

/// Page size when the request names none.
pub(crate) const DEFAULT_PAGE: usize = 100;

/// Largest page (rooms or members): bounds what each instance copies out
/// under its read lock and sends.
pub(crate) const MAX_PAGE: usize = 1000;

/// Asks the deployment (or this instance alone, without Redis).
pub(crate) struct Introspect {
    local: Arc<Local>,
    bus: Option<Arc<Bus>>,
}

impl Introspect {
    /// Introspection answered by `local`, and by the other instances when
    /// there is a `bus`.
    pub(crate) fn new(local: Local, bus: Option<Bus>) -> Introspect {
        Introspect { local: Arc::new(local), bus: bus.map(Arc::new) }
    }

    /// The task answering other instances' questions and beating the
    /// heartbeat, until `stop`; `app` owns it. Nothing to do without Redis.
    pub(crate) async fn run(&self, stop: CancellationToken) {
        if let Some(bus) = &self.bus {
            bus.clone().run(self.local.clone(), stop).await;
        }
    }

    /// Every instance's summary.
    pub(crate) async fn instances(&self) -> InstancesResponse {
        let (answers, cluster) = self.gather(Query::Instance).await;
        merge::instances(answers, cluster)
    }

    /// The hubs with their connections over the deployment.
    pub(crate) async fn hubs(&self) -> HubsResponse {
        let (answers, cluster) = self.gather(Query::Instance).await;
        merge::hubs(&self.local.hubs, &answers, cluster)
    }

    /// One page of the rooms of `hub` whose names start with `prefix`,
    /// after `cursor`.
    pub(crate) async fn rooms(
        &self,
        hub: &str,
        prefix: &str,
        cursor: Option<String>,
        limit: Option<&str>,
    ) -> Result<RoomsResponse, IntrospectError> {
        self.known_hub(hub)?;
        let limit = page_limit(limit)?;
        let query = Query::Rooms { hub: hub.to_string(), prefix: prefix.to_string(), after: cursor, limit };
        let (answers, cluster) = self.gather(query).await;
        Ok(merge::rooms(hub, prefix, limit, answers, cluster))
    }

    /// One page of the members of `room` on `hub`, after `cursor` (a
    /// connection id).
    pub(crate) async fn members(
        &self,
        hub: &str,
        room: &str,
        cursor: Option<&str>,
        limit: Option<&str>,
    ) -> Result<MembersResponse, IntrospectError> {
        self.known_hub(hub)?;
        let limit = page_limit(limit)?;
        let after = match cursor {
            Some(c) => Some(connection_cursor(c)?.simple().to_string()),
            None => None,
        };
        let query = Query::Members { hub: hub.to_string(), room: room.to_string(), after, limit };
        let (answers, cluster) = self.gather(query).await;
        Ok(merge::members(hub, room, limit, answers, cluster))
    }

    /// Every connection of `user`, its rooms, and the instances holding them.
    pub(crate) async fn user(&self, user: &str) -> UserResponse {
        let (answers, cluster) = self.gather(Query::User { user: user.to_string() }).await;
        merge::user(user, answers, cluster)
    }

    fn known_hub(&self, hub: &str) -> Result<usize, IntrospectError> {
        self.local.hub_index(hub).ok_or_else(|| IntrospectError::UnknownHub(hub.to_string()))
    }

    /// This instance's answer and every other live instance's that comes
    /// within [`ANSWER_DEADLINE`].
    async fn gather(&self, query: Query) -> (Vec<Answer>, Cluster) {
        let started = tokio::time::Instant::now();
        let mut cluster = Cluster {
            asked: self.local.instance_id.clone(),
            answered: Vec::new(),
            missing: Vec::new(),
            error: None,
            elapsed_ms: 0.0,
        };
        let mut answers = Vec::new();
        match &self.bus {
            None => answers.push(self.local.answer(&query)),
            Some(bus) => match bus.send(&query).await {
                Ok(pending) => {
                    // Our part while the others work on theirs.
                    answers.push(self.local.answer(&query));
                    let (remote, missing) = pending.collect(started + ANSWER_DEADLINE).await;
                    answers.extend(remote);
                    cluster.missing = missing;
                }
                Err(e) => {
                    crate::fault::Blame::fault(&e).log(&e, "introspection: only this instance answers");
                    cluster.error = Some(e.to_string());
                    answers.push(self.local.answer(&query));
                }
            },
        }
        cluster.answered = answers.iter().map(|a| a.instance.instance.clone()).collect();
        cluster.answered.sort();
        cluster.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        (answers, cluster)
    }
}

/// A members cursor: a connection id this API handed out.
fn connection_cursor(c: &str) -> Result<uuid::Uuid, IntrospectError> {
    uuid::Uuid::try_parse(c).map_err(|_| IntrospectError::Cursor(c.chars().take(64).collect()))
}

/// The `limit` parameter: absent is [`DEFAULT_PAGE`], else 1..=[`MAX_PAGE`].
fn page_limit(raw: Option<&str>) -> Result<usize, IntrospectError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_PAGE);
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        _ => Err(IntrospectError::Limit { got: raw.chars().take(40).collect(), max: MAX_PAGE }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(None).ok(), Some(DEFAULT_PAGE));
        assert_eq!(page_limit(Some("7")).ok(), Some(7));
        assert_eq!(page_limit(Some("1000")).ok(), Some(1000));
        for bad in ["0", "1001", "-1", "x", ""] {
            assert!(matches!(page_limit(Some(bad)), Err(IntrospectError::Limit { .. })), "{bad}");
        }
    }
}

#[cfg(test)]
mod cost_tests;
