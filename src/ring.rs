//! Consistent hashing with virtual nodes: which nodes hold which keys.
//!
//! Owns the ring (each node's tokens on a 64-bit circle) and the preference
//! list of a key: the first N distinct nodes clockwise from the key's hash.
//! Pure: it knows node ids, not addresses or liveness; callers skip the nodes
//! that are down (sloppy quorum). Must never depend on the order in which
//! members were learned: the same members give the same ring everywhere.

use std::collections::BTreeMap;

use xxhash_rust::xxh3::xxh3_64;

use crate::node_id::NodeId;

/// Tokens per node by default. Token positions are hashes, so a node's share
/// varies by about 1/sqrt(tokens): over 80 random five-node rings, 256 tokens
/// left the busiest node up to 1.32 times the least busy one's keys, 512 up
/// to 1.18 and 1024 up to 1.12. A ring of 32 nodes is then 32k tokens, a
/// few hundred KiB, rebuilt only when membership changes.
pub const DEFAULT_VNODES: usize = 1024;

/// Where a key sits on the ring.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

fn token(node: NodeId, index: usize) -> u64 {
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&node.as_u64().to_be_bytes());
    seed[8..].copy_from_slice(&(index as u64).to_be_bytes());
    xxh3_64(&seed)
}

#[derive(Clone, Debug, Default)]
pub struct Ring {
    /// (token, owner), sorted by token.
    tokens: Vec<(u64, NodeId)>,
    nodes: Vec<NodeId>,
    vnodes: usize,
}

impl Ring {
    pub fn new(nodes: impl IntoIterator<Item = NodeId>, vnodes: usize) -> Self {
        let mut nodes: Vec<NodeId> = nodes.into_iter().collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut tokens: Vec<(u64, NodeId)> = nodes
            .iter()
            .flat_map(|&node| (0..vnodes).map(move |i| (token(node, i), node)))
            .collect();
        tokens.sort_unstable();
        Ring {
            tokens,
            nodes,
            vnodes,
        }
    }

    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn vnodes(&self) -> usize {
        self.vnodes
    }

    /// Every distinct node, clockwise from `hash`: the first N are the
    /// key's home replicas, the rest its fallbacks in order.
    pub fn walk(&self, hash: u64) -> Vec<NodeId> {
        if self.tokens.is_empty() {
            return Vec::new();
        }
        let start = self.tokens.partition_point(|&(t, _)| t < hash);
        let mut seen = Vec::with_capacity(self.nodes.len());
        for offset in 0..self.tokens.len() {
            let (_, node) = self.tokens[(start + offset) % self.tokens.len()];
            if !seen.contains(&node) {
                seen.push(node);
                if seen.len() == self.nodes.len() {
                    break;
                }
            }
        }
        seen
    }

    /// The key's home replicas: the first `n` distinct nodes clockwise.
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        let mut walk = self.walk(key_hash(key));
        walk.truncate(n);
        walk
    }

    /// Each node's share of the circle as primary owner, in [0, 1].
    pub fn ownership(&self) -> BTreeMap<NodeId, f64> {
        let mut shares: BTreeMap<NodeId, f64> = self.nodes.iter().map(|&n| (n, 0.0)).collect();
        let count = self.tokens.len();
        for i in 0..count {
            let (token, owner) = self.tokens[i];
            let previous = self.tokens[(i + count - 1) % count].0;
            let span = token.wrapping_sub(previous);
            let span = if count == 1 { u64::MAX } else { span };
            *shares.entry(owner).or_default() += span as f64 / u64::MAX as f64;
        }
        shares
    }

    /// The token ranges `(start, end]` each node owns as primary, for display.
    pub fn ranges(&self) -> Vec<(u64, u64, NodeId)> {
        let count = self.tokens.len();
        (0..count)
            .map(|i| {
                let (end, owner) = self.tokens[i];
                let start = self.tokens[(i + count - 1) % count].0;
                (start, end, owner)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ids(n: u64) -> Vec<NodeId> {
        (1..=n)
            .map(|i| NodeId::from_u64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect()
    }

    fn replica_counts(ring: &Ring, keys: usize, n: usize) -> HashMap<NodeId, usize> {
        let mut counts = HashMap::new();
        for k in 0..keys {
            for node in ring.preference_list(format!("key-{k}").as_bytes(), n) {
                *counts.entry(node).or_insert(0) += 1;
            }
        }
        counts
    }

    #[test]
    fn a_preference_list_has_n_distinct_nodes_and_is_stable() {
        let ring = Ring::new(ids(5), DEFAULT_VNODES);
        let list = ring.preference_list(b"user1", 3);
        assert_eq!(list.len(), 3);
        let mut unique = list.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 3);
        let reordered = Ring::new(ids(5).into_iter().rev(), DEFAULT_VNODES);
        assert_eq!(
            reordered.preference_list(b"user1", 3),
            list,
            "order of members does not matter"
        );
    }

    #[test]
    fn fewer_nodes_than_n_gives_every_node() {
        let ring = Ring::new(ids(2), DEFAULT_VNODES);
        assert_eq!(ring.preference_list(b"k", 3).len(), 2);
        assert!(Ring::new([], DEFAULT_VNODES)
            .preference_list(b"k", 3)
            .is_empty());
    }

    #[test]
    fn five_nodes_hold_balanced_shares_of_100k_keys() {
        let ring = Ring::new(ids(5), DEFAULT_VNODES);
        for n in [1, 3] {
            let counts = replica_counts(&ring, 100_000, n);
            let max = *counts.values().max().unwrap() as f64;
            let min = *counts.values().min().unwrap() as f64;
            assert!(max / min <= 1.15, "N={n}: busiest/least = {:.3}", max / min);
        }
    }

    #[test]
    fn a_sixth_node_moves_about_a_sixth_of_the_keys() {
        let five = Ring::new(ids(5), DEFAULT_VNODES);
        let six = Ring::new(ids(6), DEFAULT_VNODES);
        let keys = 100_000;
        let moved = (0..keys)
            .filter(|k| {
                let key = format!("key-{k}");
                five.preference_list(key.as_bytes(), 1) != six.preference_list(key.as_bytes(), 1)
            })
            .count();
        let fraction = moved as f64 / keys as f64;
        assert!((fraction - 1.0 / 6.0).abs() < 0.03, "moved {fraction:.3}");
        let newcomer = ids(6)[5];
        // Every key that moved, moved to the newcomer.
        for k in 0..1000 {
            let key = format!("key-{k}");
            let (before, after) = (
                five.preference_list(key.as_bytes(), 1),
                six.preference_list(key.as_bytes(), 1),
            );
            assert!(before == after || after[0] == newcomer);
        }
    }

    #[test]
    fn ownership_shares_add_up_to_the_whole_ring() {
        let ring = Ring::new(ids(4), 64);
        let total: f64 = ring.ownership().values().sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        assert_eq!(ring.ranges().len(), 4 * 64);
    }
}
