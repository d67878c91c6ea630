//! Resolved handles of a family over one closed label: each series is looked
//! up once, on first use, and held; counting is then an atomic add, with no
//! label built, hashed or locked. A series appears in the exposition only
//! once it was used (or [`PerValue::precreate`] asked for it), as with a
//! plain `Family`.

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::labels::{Closed, OneLabel};

/// A family over the one closed label of `S`, with a handle slot per value.
#[derive(Debug)]
pub struct PerValue<S: OneLabel, M = Counter> {
    family: Family<S, M>,
    handles: Box<[OnceLock<M>]>,
}

impl<S: OneLabel, M: Default + Clone> Default for PerValue<S, M> {
    fn default() -> Self {
        PerValue { family: Family::default(), handles: (0..S::Value::COUNT).map(|_| OnceLock::new()).collect() }
    }
}

impl<S: OneLabel, M: Default + Clone> PerValue<S, M> {
    /// The series for `value`.
    pub fn get(&self, value: S::Value) -> &M {
        self.handles[value.index()].get_or_init(|| self.family.get_or_create_owned(&S::of(value)))
    }

    /// Creates the series of every value in `values` now, so a rate over
    /// them is defined before the first event.
    pub fn precreate(&self, values: &[S::Value]) {
        for v in values {
            self.get(*v);
        }
    }

    /// The family, for the registry.
    pub(super) fn family(&self) -> &Family<S, M> {
        &self.family
    }
}
