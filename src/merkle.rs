//! Hash trees for anti-entropy: a summary of which versions of which keys a
//! replica holds, cheap to update on every write and cheap to compare.
//!
//! Owns the tree's shape and arithmetic. Keys fall into [`LEAVES`] buckets
//! by the top bits of their ring hash; a leaf is the XOR of its entries'
//! hashes (a key and the dots of its versions), so a write updates one leaf
//! in O(1) by XOR-ing the old entry out and the new one in. Above the leaves
//! sit [`BRANCHES`] branch hashes and a root. Two replicas compare roots,
//! then branches, then leaves, then the entries of the leaves that differ:
//! the work and the bytes follow the difference, not the data. Pure: it
//! never reads storage or the network; the Store feeds it.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::key::Key;
use crate::ring::key_hash;
use crate::version::Object;

/// Buckets keys fall into; a power of two.
pub const LEAVES: usize = 4096;
/// Branches between the root and the leaves; each covers
/// `LEAVES / BRANCHES` leaves.
pub const BRANCHES: usize = 64;
pub const LEAVES_PER_BRANCH: usize = LEAVES / BRANCHES;
const LEAF_BITS: u32 = LEAVES.trailing_zeros();

/// The bucket of a key: the top bits of its ring hash, so that a bucket's
/// keys are also neighbours on the ring.
pub fn bucket_of(key: &str) -> u16 {
    (key_hash(key.as_bytes()) >> (64 - LEAF_BITS)) as u16
}

/// The hash of one entry: a key and exactly which versions it holds. Two
/// replicas holding the same siblings of a key give the same hash.
pub fn entry_hash(key: &str, object: &Object) -> u64 {
    let mut bytes = Vec::with_capacity(key.len() + 1 + object.siblings().len() * 16);
    bytes.extend_from_slice(key.as_bytes());
    bytes.push(0xff);
    for dot in object.dots() {
        bytes.extend_from_slice(&dot.node.as_u64().to_be_bytes());
        bytes.extend_from_slice(&dot.counter.to_be_bytes());
    }
    // Zero would make a key vanish from its leaf.
    xxh3_64(&bytes).max(1)
}

/// One replica's tree over the keys it shares with one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashTree {
    leaves: Vec<u64>,
}

impl Default for HashTree {
    fn default() -> Self {
        HashTree {
            leaves: vec![0; LEAVES],
        }
    }
}

impl HashTree {
    /// Adds or removes (XOR is its own inverse) one entry.
    pub fn toggle(&mut self, bucket: u16, entry: u64) {
        self.leaves[usize::from(bucket) % LEAVES] ^= entry;
    }

    /// Replaces `old` by `new` for a key in `bucket`; either may be absent.
    pub fn update(&mut self, bucket: u16, old: Option<u64>, new: Option<u64>) {
        if let Some(old) = old {
            self.toggle(bucket, old);
        }
        if let Some(new) = new {
            self.toggle(bucket, new);
        }
    }

    pub fn branches(&self) -> Vec<u64> {
        self.leaves.chunks(LEAVES_PER_BRANCH).map(combine).collect()
    }

    pub fn root(&self) -> u64 {
        combine(&self.branches())
    }

    /// The leaves under `branch`, or none for an index out of range.
    pub fn leaves_of(&self, branch: usize) -> &[u64] {
        let start = branch.saturating_mul(LEAVES_PER_BRANCH).min(LEAVES);
        let end = (start + LEAVES_PER_BRANCH).min(LEAVES);
        &self.leaves[start..end]
    }
}

/// A parent's hash: order matters, so the same leaves in other places give
/// another hash.
fn combine(children: &[u64]) -> u64 {
    let mut bytes = Vec::with_capacity(children.len() * 8);
    for child in children {
        bytes.extend_from_slice(&child.to_be_bytes());
    }
    xxh3_64(&bytes)
}

/// Indexes at which two equally long lists of hashes differ; a list of the
/// wrong length (a malformed or foreign tree) differs everywhere.
pub fn differing(ours: &[u64], theirs: &[u64]) -> Vec<usize> {
    if ours.len() != theirs.len() {
        return (0..ours.len()).collect();
    }
    ours.iter()
        .zip(theirs)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect()
}

/// What one side of an exchange holds in one bucket: each key with its
/// entry hash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketEntries {
    pub bucket: u16,
    pub entries: Vec<(Key, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_id::NodeId;
    use crate::version::{Payload, VersionVector};

    fn object(text: &str) -> Object {
        let mut o = Object::new();
        o.write(
            NodeId::from_u64(1),
            &VersionVector::new(),
            Payload::Value {
                content_type: "t".into(),
                bytes: text.as_bytes().to_vec(),
                expires_at_ms: None,
            },
        )
        .unwrap();
        o
    }

    #[test]
    fn trees_with_the_same_entries_agree_whatever_the_order() {
        let (mut a, mut b) = (HashTree::default(), HashTree::default());
        let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
        for key in &keys {
            a.toggle(bucket_of(key), entry_hash(key, &object(key)));
        }
        for key in keys.iter().rev() {
            b.toggle(bucket_of(key), entry_hash(key, &object(key)));
        }
        assert_eq!(a.root(), b.root());
        assert!(differing(&a.branches(), &b.branches()).is_empty());
    }

    #[test]
    fn one_changed_key_shows_in_one_branch_and_one_leaf() {
        let (mut a, mut b) = (HashTree::default(), HashTree::default());
        for i in 0..1000 {
            let key = format!("k{i}");
            let h = entry_hash(&key, &object("v"));
            a.toggle(bucket_of(&key), h);
            b.toggle(bucket_of(&key), h);
        }
        let key = "k17";
        let mut newer = object("v");
        newer
            .write(
                NodeId::from_u64(2),
                &newer.clock(),
                Payload::Tombstone { at_ms: 1 },
            )
            .unwrap();
        b.update(
            bucket_of(key),
            Some(entry_hash(key, &object("v"))),
            Some(entry_hash(key, &newer)),
        );
        assert_ne!(a.root(), b.root());
        let branches = differing(&a.branches(), &b.branches());
        assert_eq!(branches, [usize::from(bucket_of(key)) / LEAVES_PER_BRANCH]);
        let leaves = differing(a.leaves_of(branches[0]), b.leaves_of(branches[0]));
        assert_eq!(leaves.len(), 1);
        assert_eq!(
            branches[0] * LEAVES_PER_BRANCH + leaves[0],
            usize::from(bucket_of(key))
        );
        // Removing the entry again restores agreement.
        b.update(
            bucket_of(key),
            Some(entry_hash(key, &newer)),
            Some(entry_hash(key, &object("v"))),
        );
        assert_eq!(a.root(), b.root());
    }

    #[test]
    fn entry_hashes_follow_versions_not_values() {
        let o = object("v");
        assert_eq!(entry_hash("k", &o), entry_hash("k", &o.clone()));
        assert_ne!(entry_hash("k", &o), entry_hash("other", &o));
        assert_ne!(entry_hash("k", &o), entry_hash("k", &Object::new()));
    }

    #[test]
    fn malformed_lists_differ_everywhere_and_out_of_range_branches_are_empty() {
        let tree = HashTree::default();
        assert_eq!(differing(&tree.branches(), &[1, 2]).len(), BRANCHES);
        assert!(tree.leaves_of(BRANCHES).is_empty());
        assert!(tree.leaves_of(usize::MAX).is_empty());
    }
}
