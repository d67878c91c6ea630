//! Serving a cut (see [`crate::fanout::Cuts`]) inside the pipeline's task:
//! the held batches of its scope go out, then its step runs, between two
//! events.

use crate::fanout::{CutRequest, Scope};

impl super::Pipeline {
    /// Serves one cut: the held batches of its scope, then its step.
    pub(super) fn cut(&mut self, request: CutRequest) {
        match request.scope {
            Scope::Rooms(rooms) => {
                for (hub, room) in rooms {
                    self.flush_room(hub, &room);
                }
            }
            Scope::Everything => self.flush_every_room(),
        }
        (request.then)();
    }
}
