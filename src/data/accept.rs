//! What a replica takes from its peers: which copies a write, a hinted
//! write or a batch (handoff, anti-entropy, a leaver's hand-over) may leave
//! on this node.
//!
//! Owns that judgement, as functions of the rings and the key. A replica
//! keeps a copy only where the key lives: a coordinator or sender whose
//! ring lags must not leave copies on a node that no longer homes the key,
//! where no repair would ever look for them. Never merges or stores
//! anything itself: the Store's inbound path asks, then merges what is
//! taken.

use super::placement::home_of;
use crate::node_id::NodeId;
use crate::replication::Replication;
use crate::ring::Ring;

/// Where keys live, as this node sees it.
pub struct Homes<'a> {
    pub local_id: NodeId,
    pub replication: &'a Replication,
    /// The ring from Membership.
    pub ring: &'a Ring,
    /// The ring a ring change is moving this node's data to, while it runs:
    /// the keys it will home are already its to take.
    pub moving_to: Option<&'a Ring>,
}

impl Homes<'_> {
    /// Whether this node is a home replica of `key` now.
    pub fn homes(&self, key: &str) -> bool {
        let ring = self.moving_to.unwrap_or(self.ring);
        home_of(ring, self.replication, key).contains(&self.local_id)
    }

    /// Whether a write of `key` is taken: a hinted one always (this node
    /// stands in for a home replica and keeps a hint to hand the copy
    /// over), a plain one only by a home replica.
    pub fn takes_write(&self, key: &str, hinted: bool) -> bool {
        hinted || self.homes(key)
    }

    /// Whether a key in a batch is taken: by a home replica, or, for a
    /// hand-over from a node that is leaving, by one that will be once
    /// that node is gone (`after_leave`, the ring without it), though this
    /// node's ring may still hold it.
    pub fn takes_batch_key(&self, key: &str, after_leave: Option<&Ring>) -> bool {
        self.homes(key)
            || after_leave
                .is_some_and(|ring| home_of(ring, self.replication, key).contains(&self.local_id))
    }
}

/// `ring` without `node`: where keys live once it has left.
pub fn without(ring: &Ring, node: NodeId) -> Ring {
    Ring::new(
        ring.nodes().iter().copied().filter(|&n| n != node),
        ring.vnodes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::RangeInclusive<u64>) -> Vec<NodeId> {
        range.map(NodeId::from_u64).collect()
    }

    /// A key homed elsewhere, for a node of `ring`.
    fn foreign_key(ring: &Ring, replication: &Replication, me: NodeId) -> String {
        (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| !home_of(ring, replication, k).contains(&me))
            .expect("five nodes, three homes: some key is not ours")
    }

    #[test]
    fn a_plain_write_lands_only_on_a_home_and_a_hinted_one_anywhere() {
        let replication = Replication::default();
        let ring = Ring::new(ids(1..=5), 16);
        let me = NodeId::from_u64(1);
        let homes = Homes {
            local_id: me,
            replication: &replication,
            ring: &ring,
            moving_to: None,
        };
        let foreign = foreign_key(&ring, &replication, me);
        assert!(
            !homes.takes_write(&foreign, false),
            "a lagging coordinator's write"
        );
        assert!(homes.takes_write(&foreign, true), "a stand-in's");
        let ours = (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| homes.homes(k))
            .unwrap();
        assert!(homes.takes_write(&ours, false));
    }

    #[test]
    fn during_a_ring_change_the_new_ring_decides() {
        let replication = Replication::default();
        let me = NodeId::from_u64(6);
        let ring = Ring::new(ids(1..=5), 16);
        let joined = Ring::new(ids(1..=6), 16);
        let gained = (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| home_of(&joined, &replication, k).contains(&me))
            .unwrap();
        let before = Homes {
            local_id: me,
            replication: &replication,
            ring: &ring,
            moving_to: None,
        };
        assert!(!before.takes_batch_key(&gained, None));
        let moving = Homes {
            moving_to: Some(&joined),
            ..before
        };
        assert!(moving.takes_batch_key(&gained, None));
    }

    #[test]
    fn a_leavers_hand_over_is_taken_by_who_homes_the_key_once_it_is_gone() {
        let replication = Replication::default();
        let ring = Ring::new(ids(1..=4), 16);
        let leaver = NodeId::from_u64(1);
        let after = without(&ring, leaver);
        assert_eq!(after.len(), 3);
        // Four nodes, three homes: a key node 2 does not home while node 1
        // is here, it homes once node 1 is gone.
        let me = NodeId::from_u64(2);
        let homes = Homes {
            local_id: me,
            replication: &replication,
            ring: &ring,
            moving_to: None,
        };
        let key = foreign_key(&ring, &replication, me);
        assert!(!homes.takes_batch_key(&key, None));
        assert!(homes.takes_batch_key(&key, Some(&after)));
    }
}
