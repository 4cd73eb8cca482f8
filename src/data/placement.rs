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
}
