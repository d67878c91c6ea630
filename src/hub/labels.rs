//! The metric label values of each hub (its name, its methods' names),
//! built once from the routing table: every session of a hub shares them,
//! so a connection allocates no label of its own and keeps no cache of the
//! series it counted (issue 19: idle memory per connection).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{HubId, RouteTable};

/// One hub's label values.
struct HubLabel {
    name: Arc<str>,
    methods: HashMap<String, Arc<str>>,
}

/// Label values of every hub, indexed by [`HubId`].
pub(crate) struct HubLabels {
    hubs: Vec<HubLabel>,
    unknown: Arc<str>,
}

impl HubLabels {
    /// The label values of `routes`' hubs and server methods.
    pub(crate) fn new(routes: &RouteTable) -> HubLabels {
        let hubs = routes
            .hubs
            .iter()
            .map(|h| HubLabel {
                name: Arc::from(h.name.as_str()),
                methods: h.methods().map(|m| (m.name.clone(), Arc::from(m.name.as_str()))).collect(),
            })
            .collect();
        HubLabels { hubs, unknown: Arc::from("unknown") }
    }

    /// The hub's name as a label value.
    pub(crate) fn hub(&self, hub: HubId) -> &Arc<str> {
        &self.hubs[hub].name
    }

    /// A server method's name (as the routing file spells it) as a label
    /// value; `unknown` for a name the hub does not have.
    pub(crate) fn method(&self, hub: HubId, name: &str) -> &Arc<str> {
        self.hubs.get(hub).and_then(|h| h.methods.get(name)).unwrap_or(&self.unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_session_of_a_hub_shares_one_allocation_per_label() {
        let routes = crate::hub::testkit::routes();
        let labels = HubLabels::new(&routes);
        let chat = routes.hubs.iter().position(|h| h.name == "chat").expect("a chat hub");
        assert_eq!(&**labels.hub(chat), "chat");
        assert!(Arc::ptr_eq(labels.hub(chat), labels.hub(chat)));
        let join = labels.method(chat, "JoinRoom");
        assert_eq!(&**join, "JoinRoom");
        assert!(Arc::ptr_eq(join, labels.method(chat, "JoinRoom")));
        assert_eq!(&**labels.method(chat, "NoSuchMethod"), "unknown");
    }
}
