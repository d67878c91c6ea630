//! The registry's connections by id, kept in [`SHARDS`] maps chosen by a
//! hash of the id, so that the keep-alive tick can visit the connections
//! whose checkpoints the clock passed instead of every one of them (at
//! 10,000 connections and a tick every 100 ms, walking them all took ~6 %
//! of the sidecar's CPU in the benchmark's scenario c). The shards together
//! hold what one map would, so they cost no memory per connection.

use super::{Conn, ConnId, Map};

/// How many shards the connections are spread over.
pub(crate) const SHARDS: usize = 64;

/// The shard of connection `id`: the top bits of a Fibonacci hash, so that
/// consecutive ids (connections open in order) spread over every shard.
pub(crate) fn shard_of(id: ConnId) -> usize {
    (id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SHARDS.trailing_zeros())) as usize
}

/// Connections by id, in [`SHARDS`] maps.
pub(in crate::fanout) struct ConnShards {
    shards: Vec<Map<ConnId, Conn>>,
    len: usize,
}

impl Default for ConnShards {
    fn default() -> ConnShards {
        ConnShards { shards: (0..SHARDS).map(|_| Map::default()).collect(), len: 0 }
    }
}

impl ConnShards {
    pub(in crate::fanout) fn get(&self, id: &ConnId) -> Option<&Conn> {
        self.shards[shard_of(*id)].get(id)
    }

    pub(in crate::fanout) fn get_mut(&mut self, id: &ConnId) -> Option<&mut Conn> {
        self.shards[shard_of(*id)].get_mut(id)
    }

    pub(in crate::fanout) fn insert(&mut self, id: ConnId, conn: Conn) {
        if self.shards[shard_of(id)].insert(id, conn).is_none() {
            self.len += 1;
        }
    }

    pub(in crate::fanout) fn remove(&mut self, id: &ConnId) -> Option<Conn> {
        let removed = self.shards[shard_of(*id)].remove(id);
        self.len -= usize::from(removed.is_some());
        removed
    }

    pub(in crate::fanout) fn len(&self) -> usize {
        self.len
    }

    /// Every connection, shard by shard.
    pub(in crate::fanout) fn values(&self) -> impl Iterator<Item = &Conn> {
        self.shards.iter().flat_map(|s| s.values())
    }

    /// The connections of shard `shard` (none past [`SHARDS`]).
    pub(in crate::fanout) fn shard(&self, shard: usize) -> impl Iterator<Item = &Conn> {
        self.shards.get(shard).into_iter().flat_map(|s| s.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_spread_over_every_shard() {
        let mut count = [0usize; SHARDS];
        for id in 0..(SHARDS as u64 * 100) {
            count[shard_of(id)] += 1;
        }
        assert!(count.iter().all(|&n| (50..=150).contains(&n)), "{count:?}");
    }
}
