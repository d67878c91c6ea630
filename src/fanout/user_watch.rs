//! Which users' connections on this instance changed, for whoever keeps a
//! per-user liveness record elsewhere (browser push tells other instances
//! through Redis who is connected here). A set, not a queue: a user who
//! connects and leaves a thousand times before it is read is one entry,
//! and the reader asks the registry for the count as it is then.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::sync::Unpoisoned;

/// Users whose connection count may have changed since the last [`UserWatch::take`].
#[derive(Debug, Default)]
pub(crate) struct UserWatch {
    changed: Mutex<HashSet<Arc<str>>>,
    notify: tokio::sync::Notify,
}

impl UserWatch {
    /// Records a change for `user` (after the registry changed).
    pub(super) fn mark(&self, user: &Arc<str>) {
        self.changed.locked().insert(user.clone());
        self.notify.notify_one();
    }

    /// How many users are recorded and not yet taken.
    #[cfg(test)]
    pub(crate) fn recorded(&self) -> usize {
        self.changed.locked().len()
    }

    /// The users changed since the last call.
    pub(crate) fn take(&self) -> Vec<Arc<str>> {
        self.changed.locked().drain().collect()
    }

    /// Resolves when a change was recorded (at once if one was recorded
    /// since the last wait).
    pub(crate) async fn changed(&self) {
        self.notify.notified().await;
    }
}
