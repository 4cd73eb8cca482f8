//! The hints a node keeps: for each replica that was down when a write it
//! stood in for was stored, the keys to hand over once it is back.
//!
//! Owns the in-memory index only; the marks themselves are in storage
//! (`layout::hint_key`), written and read by the Store.

use std::collections::{BTreeMap, BTreeSet};

use crate::node_id::NodeId;

/// The hints this node keeps, by owner (the replica they are for).
#[derive(Debug, Default)]
pub struct Hints {
    by_owner: BTreeMap<NodeId, BTreeSet<String>>,
    /// Whether storage has been read; a restarted actor keeps what it has.
    pub loaded: bool,
}

impl Hints {
    pub fn contains(&self, owner: NodeId, key: &str) -> bool {
        self.by_owner
            .get(&owner)
            .is_some_and(|keys| keys.contains(key))
    }

    pub fn insert(&mut self, owner: NodeId, key: String) {
        self.by_owner.entry(owner).or_default().insert(key);
    }

    pub fn remove(&mut self, owner: NodeId, key: &str) {
        if let Some(keys) = self.by_owner.get_mut(&owner) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }

    pub fn owners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.by_owner.keys().copied()
    }

    pub fn keys_for(&self, owner: NodeId) -> impl Iterator<Item = &String> {
        self.by_owner.get(&owner).into_iter().flatten()
    }

    pub fn any_for_key(&self, key: &str) -> bool {
        self.by_owner.values().any(|keys| keys.contains(key))
    }

    pub fn len(&self) -> usize {
        self.by_owner.values().map(BTreeSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_owner.is_empty()
    }
}

/// Where a hint for `owner` goes instead, if the ring changed since it
/// was kept (nodes joined or came back) and `owner` no longer homes the key
/// (its home replicas are now `home`): it would refuse the key, so hints
/// for the new home replicas other than `local_id` take its place. `None`:
/// the hint is still the owner's to receive.
pub fn moved_to(owner: NodeId, home: &[NodeId], local_id: NodeId) -> Option<Vec<NodeId>> {
    (!home.contains(&owner)).then(|| home.iter().copied().filter(|&n| n != local_id).collect())
}

/// What a node does once a hint's owner stored the key's copy as it was
/// sent (`delivered`), the copy it holds now being `held`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AfterDelivery {
    pub drop_hint: bool,
    /// Drop the copy too (it still holds exactly what was delivered).
    pub drop_copy: bool,
}

/// A copy that changed after it was sent (a newer write this node stood in
/// for, while the hint was already kept) keeps its hint: the owner lacks
/// the change, and without the hint nothing would hand it over, for a
/// stand-in's copy is in no ring change, anti-entropy round or tombstone
/// collection. Otherwise the hint goes, and a stand-in outside the key's
/// home drops its copy when no other owner waits for it.
pub fn after_delivery(
    delivered: &BTreeSet<crate::version::Dot>,
    held: &BTreeSet<crate::version::Dot>,
    is_home: bool,
    other_hints_for_key: bool,
) -> AfterDelivery {
    if !held.is_empty() && held != delivered {
        return AfterDelivery {
            drop_hint: false,
            drop_copy: false,
        };
    }
    AfterDelivery {
        drop_hint: true,
        drop_copy: !held.is_empty() && !is_home && !other_hints_for_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_moves_to_the_new_homes_only_when_its_owner_is_no_home() {
        let n = NodeId::from_u64;
        let home = [n(1), n(2), n(3)];
        assert_eq!(moved_to(n(2), &home, n(4)), None);
        assert_eq!(
            moved_to(n(9), &home, n(1)),
            Some(vec![n(2), n(3)]),
            "never a hint for itself"
        );
        let dot = |counter| crate::version::Dot {
            node: n(1),
            counter,
        };
        let sent: BTreeSet<_> = [dot(1)].into();
        let both = |drop_hint, drop_copy| AfterDelivery {
            drop_hint,
            drop_copy,
        };
        assert_eq!(after_delivery(&sent, &sent, false, false), both(true, true));
        assert_eq!(
            after_delivery(&sent, &sent, true, false),
            both(true, false),
            "a home keeps its copy"
        );
        assert_eq!(
            after_delivery(&sent, &sent, false, true),
            both(true, false),
            "another owner waits"
        );
        // Seed 139 of the data-path simulation: a newer write arrived while
        // the hint was on its way; the hint stays to hand it over.
        let grown: BTreeSet<_> = [dot(1), dot(2)].into();
        assert_eq!(
            after_delivery(&sent, &grown, false, false),
            both(false, false)
        );
        assert_eq!(
            after_delivery(&sent, &BTreeSet::new(), false, false),
            both(true, false),
            "the copy went meanwhile"
        );
    }

    #[test]
    fn an_owner_is_forgotten_with_its_last_hint() {
        let (a, b) = (NodeId::from_u64(1), NodeId::from_u64(2));
        let mut hints = Hints::default();
        assert!(hints.is_empty());
        hints.insert(a, "k".into());
        hints.insert(a, "k".into());
        hints.insert(a, "l".into());
        hints.insert(b, "k".into());
        assert_eq!(hints.len(), 3, "a repeated hint is one");
        assert!(hints.contains(a, "l") && !hints.contains(b, "l"));
        assert_eq!(hints.owners().collect::<Vec<_>>(), vec![a, b]);
        hints.remove(b, "k");
        assert_eq!(hints.owners().collect::<Vec<_>>(), vec![a]);
        assert!(hints.any_for_key("k"), "a still holds one for k");
        hints.remove(a, "k");
        hints.remove(a, "missing");
        assert!(!hints.any_for_key("k"));
        assert_eq!(hints.keys_for(a).collect::<Vec<_>>(), vec!["l"]);
        hints.remove(a, "l");
        assert!(hints.is_empty() && hints.owners().next().is_none());
    }
}
