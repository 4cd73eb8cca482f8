//! The hash trees this node keeps, one per peer, over the keys they share
//! under the ring this node's data is placed for (the *settled* ring); and
//! the new set a ring change builds as it walks the keys.
//!
//! Owns the trees and the settled ring they are for. Kept in step by
//! [`super::local::LocalCopies`] on every change to a copy, so they never
//! drift from storage; never reads storage itself. The trees live in memory
//! only: a restarted node rebuilds them with a ring-change walk.

use std::collections::HashMap;
use std::sync::Arc;

use crate::data::layout::data_key;
use crate::data::placement::shared_peers;
use crate::merkle::{bucket_of, HashTree};
use crate::node_id::NodeId;
use crate::replication::Replication;
use crate::ring::Ring;

pub(super) struct Trees {
    local_id: NodeId,
    replication: Replication,
    settled: Option<Arc<Ring>>,
    by_peer: HashMap<NodeId, HashTree>,
    /// Whether `by_peer` reflects storage.
    built: bool,
    rebuild: Option<Rebuild>,
}

/// Trees being built for `ring` by a walk over the keys, in key order.
struct Rebuild {
    ring: Arc<Ring>,
    /// The last data key the walk passed.
    cursor: Option<Vec<u8>>,
    by_peer: HashMap<NodeId, HashTree>,
}

impl Trees {
    pub(super) fn new(local_id: NodeId, replication: Replication) -> Self {
        Trees {
            local_id,
            replication,
            settled: None,
            by_peer: HashMap::new(),
            built: false,
            rebuild: None,
        }
    }

    /// The ring this node's data was last placed for.
    pub(super) fn settled(&self) -> Option<&Arc<Ring>> {
        self.settled.as_ref()
    }

    /// The ring found in storage at start: the trees are not built for it.
    pub(super) fn restore_settled(&mut self, ring: Arc<Ring>) {
        self.settled = Some(ring);
    }

    /// Whether the trees can be compared with a peer's now.
    pub(super) fn ready(&self) -> bool {
        self.built && self.rebuild.is_none()
    }

    pub(super) fn is_built(&self) -> bool {
        self.built
    }

    pub(super) fn for_peer(&self, peer: NodeId) -> Option<&HashTree> {
        self.by_peer.get(&peer)
    }

    /// The peers this node shares keys with, in order.
    pub(super) fn peers(&self) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = self.by_peer.keys().copied().collect();
        peers.sort();
        peers
    }

    /// A copy of `key` changed from entry hash `before` to `after` (`None`:
    /// no copy).
    pub(super) fn note(&mut self, key: &str, before: Option<u64>, after: Option<u64>) {
        if before == after {
            return;
        }
        let bucket = bucket_of(key);
        if let Some(rebuild) = &mut self.rebuild {
            // Keys the walk has not reached yet it counts itself.
            if rebuild
                .cursor
                .as_deref()
                .is_none_or(|cursor| data_key(key).as_slice() > cursor)
            {
                return;
            }
            for peer in shared_peers(&rebuild.ring, &self.replication, self.local_id, key) {
                rebuild
                    .by_peer
                    .entry(peer)
                    .or_default()
                    .update(bucket, before, after);
            }
            return;
        }
        let Some(ring) = &self.settled else { return };
        for peer in shared_peers(ring, &self.replication, self.local_id, key) {
            self.by_peer
                .entry(peer)
                .or_default()
                .update(bucket, before, after);
        }
    }

    /// Starts building trees for `ring`, dropping any build under way.
    pub(super) fn begin_rebuild(&mut self, ring: Arc<Ring>) {
        self.rebuild = Some(Rebuild {
            ring,
            cursor: None,
            by_peer: HashMap::new(),
        });
    }

    /// The walk passed every key up to `cursor`, among them these
    /// (key, entry hash) of copies held.
    pub(super) fn scanned<'a>(
        &mut self,
        cursor: Vec<u8>,
        entries: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        let Some(rebuild) = &mut self.rebuild else {
            return;
        };
        for (key, hash) in entries {
            for peer in shared_peers(&rebuild.ring, &self.replication, self.local_id, key) {
                rebuild
                    .by_peer
                    .entry(peer)
                    .or_default()
                    .toggle(bucket_of(key), hash);
            }
        }
        rebuild.cursor = Some(cursor);
    }

    /// The walk is over: its trees and ring become the settled ones.
    pub(super) fn finish_rebuild(&mut self) {
        if let Some(rebuild) = self.rebuild.take() {
            self.by_peer = rebuild.by_peer;
            self.settled = Some(rebuild.ring);
            self.built = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::HashTree;

    fn ids(n: u64) -> Vec<NodeId> {
        (1..=n).map(NodeId::from_u64).collect()
    }

    /// A change made during a rebuild lands once: in the new trees if the
    /// walk already passed the key, else by the walk itself.
    #[test]
    fn a_change_during_a_rebuild_is_counted_once_on_either_side_of_the_walk() {
        let me = NodeId::from_u64(1);
        let ring = Arc::new(Ring::new(ids(3), 8));
        let mut trees = Trees::new(me, Replication::default());
        // The walk goes in storage order.
        let mut keys = ["a", "b", "c"];
        keys.sort_by_key(|k| data_key(k));
        let [first, second, third] = keys;
        trees.begin_rebuild(ring);
        // Three nodes, N = 3: every key is shared with both others.
        trees.scanned(data_key(second), [(first, 10), (second, 20)]);
        trees.note(first, Some(10), Some(11));
        trees.note(third, None, Some(30));
        trees.scanned(data_key(third), [(third, 30)]);
        trees.finish_rebuild();
        assert!(trees.ready());
        let mut expected = HashTree::default();
        expected.toggle(bucket_of(first), 11);
        expected.toggle(bucket_of(second), 20);
        expected.toggle(bucket_of(third), 30);
        for peer in [NodeId::from_u64(2), NodeId::from_u64(3)] {
            assert_eq!(
                trees.for_peer(peer).map(HashTree::root),
                Some(expected.root())
            );
        }
    }
}
