//! Which nodes are a key's home on a ring, and which peers share a key's
//! hash trees with this node. Pure functions of the ring.

use crate::node_id::NodeId;
use crate::replication::Replication;
use crate::ring::Ring;

/// The key's home replicas on `ring`.
pub fn home_of(ring: &Ring, replication: &Replication, key: &str) -> Vec<NodeId> {
    ring.preference_list(key.as_bytes(), replication.effective_replicas(ring.len()))
}

/// The other home replicas of `key` if this node is one, else none: the
/// peers whose trees the key belongs in.
pub fn shared_peers(
    ring: &Ring,
    replication: &Replication,
    local_id: NodeId,
    key: &str,
) -> Vec<NodeId> {
    let home = home_of(ring, replication, key);
    if !home.contains(&local_id) {
        return Vec::new();
    }
    home.into_iter().filter(|&n| n != local_id).collect()
}

/// Whether a node places keys on the ring its data was placed for rather
/// than the one Membership published: the published one, except
/// while a node whose data was placed for a larger ring has heard of no
/// other member (a restart before its first gossip). That node is not a
/// cluster of one: counting quorums on a ring of one would acknowledge a
/// write with a single copy, and it would claim every key. It keeps the
/// ring its data was placed for, on which the others are simply not up.
pub fn keeps_settled_ring(published: &Ring, settled: Option<&Ring>, heard_of_others: bool) -> bool {
    published.len() == 1 && settled.is_some_and(|s| s.len() > 1) && !heard_of_others
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_has_min_n_members_homes_and_shares_trees_only_among_them() {
        let nodes: Vec<NodeId> = (1..=5).map(NodeId::from_u64).collect();
        let ring = Ring::new(nodes.clone(), 64);
        let replication = Replication::default();
        for key in ["a", "b", "some/longer key", "é"] {
            let home = home_of(&ring, &replication, key);
            assert_eq!(home.len(), replication.replicas, "{key}");
            let distinct: std::collections::BTreeSet<_> = home.iter().collect();
            assert_eq!(distinct.len(), home.len(), "{key}: homes are distinct");
            for &node in &nodes {
                let shared = shared_peers(&ring, &replication, node, key);
                if home.contains(&node) {
                    assert_eq!(shared.len(), home.len() - 1, "{key}");
                    assert!(!shared.contains(&node) && shared.iter().all(|n| home.contains(n)));
                } else {
                    assert!(shared.is_empty(), "{key}: {node} is no home");
                }
            }
        }
        // A ring smaller than N homes every key on every node.
        let small = Ring::new(nodes[..2].to_vec(), 64);
        assert_eq!(home_of(&small, &replication, "a").len(), 2);
    }

    #[test]
    fn a_restarted_node_that_heard_of_no_one_keeps_its_settled_ring() {
        let me = NodeId::from_u64(1);
        let alone = Ring::new([me], 64);
        let settled = Ring::new((1..=3).map(NodeId::from_u64), 64);
        assert!(keeps_settled_ring(&alone, Some(&settled), false));
        // Every other member left: it is a cluster of one now.
        assert!(!keeps_settled_ring(&alone, Some(&settled), true));
        // A fresh node, or a ring of more: what Membership published.
        assert!(!keeps_settled_ring(&alone, None, false));
        let two = Ring::new((1..=2).map(NodeId::from_u64), 64);
        assert!(!keeps_settled_ring(&two, Some(&settled), false));
    }
}
