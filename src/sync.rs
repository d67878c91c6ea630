//! Locks that stay usable after a panic elsewhere. Every lock in the
//! sidecar guards state that each mutation leaves consistent in one step
//! (a queue push, a map insert), so a lock poisoned by a panicking holder
//! still guards valid data: one connection's bug must not wedge the rest.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock methods that ignore poisoning (see the module doc for why).
pub(crate) trait Unpoisoned<T> {
    /// The guard, poisoned or not.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Unpoisoned<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Read and write guards of an `RwLock`, poisoned or not.
pub(crate) trait UnpoisonedRw<T> {
    /// A read guard.
    fn read_any(&self) -> RwLockReadGuard<'_, T>;
    /// A write guard.
    fn write_any(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> UnpoisonedRw<T> for RwLock<T> {
    fn read_any(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_any(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|p| p.into_inner())
    }
}
