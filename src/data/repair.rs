//! Anti-entropy's comparisons and tombstone collection's judgement: which
//! buckets two replicas' hash trees disagree on, which keys of a differing
//! bucket each side sends or asks for, and when a tombstone may be
//! forgotten.
//!
//! Owns those decisions, as functions of trees, entries, times and the
//! ring. Never reads storage, a clock or the network: the Store's
//! anti-entropy rounds (`actors::store::anti_entropy`) gather the inputs
//! and carry out the answers; the data-path simulation runs the same code.

use std::collections::{BTreeMap, BTreeSet};

use crate::merkle::{differing, HashTree, BRANCHES, LEAVES_PER_BRANCH};
use crate::node_id::NodeId;
use crate::version::Dot;

/// The buckets under `leaves` (a peer's leaf hashes of the branches that
/// differed) whose hashes differ from `ours`, at most `limit`; and whether
/// more differed than that.
pub fn differing_buckets(
    ours: &HashTree,
    leaves: &[(u16, Vec<u64>)],
    limit: usize,
) -> (Vec<u16>, bool) {
    let mut buckets = Vec::new();
    for (branch, theirs) in leaves {
        let branch = usize::from(*branch);
        // A lying peer's branch numbers are ignored, not trusted.
        if branch >= BRANCHES {
            continue;
        }
        for leaf in differing(ours.leaves_of(branch), theirs) {
            buckets.push((branch * LEAVES_PER_BRANCH + leaf) as u16);
        }
    }
    let more = buckets.len() > limit;
    buckets.truncate(limit);
    (buckets, more)
}

/// What the side answering an exchange does with one differing bucket:
/// the keys whose entries differ from the asker's (sent back, with this
/// side's copy), and the keys the asker has that this side lacks or holds
/// differently (asked for). `shares` filters the asked keys to those this
/// side shares with the asker by its own ring, so a peer cannot make it
/// take keys it does not own.
pub fn compare_bucket<K: Ord + Clone>(
    ours: &BTreeMap<K, u64>,
    theirs: &BTreeMap<K, u64>,
    shares: impl Fn(&K) -> bool,
) -> (Vec<K>, Vec<K>) {
    let send = ours
        .iter()
        .filter(|(key, hash)| theirs.get(*key) != Some(hash))
        .map(|(key, _)| key.clone())
        .collect();
    let want = theirs
        .iter()
        .filter(|(key, hash)| ours.get(*key) != Some(hash))
        .filter(|(key, _)| shares(key))
        .map(|(key, _)| key.clone())
        .collect();
    (send, want)
}

/// Whether a tombstone deleted at `deleted_at_ms` may be collected by this
/// node now: it is past its grace, this node is the first home replica
/// (one replica decides), and every member (`members`, those that have not
/// left) is alive to be asked what it holds of the key: the homes for
/// exactly the same versions, the others for nothing else
/// ([`blocks_collection`]). A stand-in away with a copy of the deleted
/// value, to be handed over by its hint, would bring it back once the
/// tombstone is gone.
pub fn may_collect(
    deleted_at_ms: u64,
    now_ms: u64,
    grace_ms: u64,
    home: &[NodeId],
    members: &[NodeId],
    local_id: NodeId,
    alive: impl Fn(NodeId) -> bool,
) -> bool {
    // A deadline still to come is no deletion yet, whatever the grace.
    now_ms >= deleted_at_ms
        && now_ms - deleted_at_ms >= grace_ms
        && home.first() == Some(&local_id)
        && home
            .iter()
            .chain(members)
            .filter(|&&n| n != local_id)
            .all(|&n| alive(n))
}

/// Whether what a member holds of a key (`held`, its versions) stops the
/// collection of the tombstones `tombstones`: a home must hold exactly
/// them; any other member nothing, or exactly them (a stand-in whose hint
/// carries only the tombstones, which a purged replica absorbs).
pub fn blocks_collection(held: &BTreeSet<Dot>, tombstones: &BTreeSet<Dot>, is_home: bool) -> bool {
    held != tombstones && (is_home || !held.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_that_differ_are_found_and_bounded() {
        let mut ours = HashTree::default();
        let mut theirs = HashTree::default();
        for bucket in [3u16, 700, 701] {
            theirs.toggle(bucket, 42);
        }
        ours.toggle(9, 7);
        let branches = differing(&ours.branches(), &theirs.branches());
        let leaves: Vec<(u16, Vec<u64>)> = branches
            .iter()
            .map(|&b| (b as u16, theirs.leaves_of(b).to_vec()))
            .collect();
        let (all, more) = differing_buckets(&ours, &leaves, 64);
        assert_eq!(all, vec![3, 9, 700, 701]);
        assert!(!more);
        let (some, more) = differing_buckets(&ours, &leaves, 2);
        assert_eq!((some.len(), more), (2, true));
        let lying = vec![
            (BRANCHES as u16, vec![1; LEAVES_PER_BRANCH]),
            (u16::MAX, vec![]),
        ];
        assert_eq!(differing_buckets(&ours, &lying, 64), (vec![], false));
    }

    #[test]
    fn an_exchange_sends_what_differs_and_asks_only_for_shared_keys() {
        let ours: BTreeMap<String, u64> = [("same", 1), ("differs", 2), ("only_ours", 3)]
            .map(|(k, h)| (k.to_string(), h))
            .into();
        let theirs: BTreeMap<String, u64> = [
            ("same", 1),
            ("differs", 9),
            ("only_theirs", 4),
            ("not_ours", 5),
        ]
        .map(|(k, h)| (k.to_string(), h))
        .into();
        let (send, want) = compare_bucket(&ours, &theirs, |k| k != "not_ours");
        assert_eq!(send, vec!["differs", "only_ours"]);
        assert_eq!(want, vec!["differs", "only_theirs"]);
    }

    #[test]
    fn a_tombstone_is_collected_by_its_first_home_once_past_grace_with_every_member_alive() {
        let home: Vec<NodeId> = (1..=3).map(NodeId::from_u64).collect();
        let members: Vec<NodeId> = (1..=5).map(NodeId::from_u64).collect();
        let first = home[0];
        let judge = |at, now, local, alive: &dyn Fn(NodeId) -> bool| {
            may_collect(at, now, 10_000, &home, &members, local, alive)
        };
        assert!(judge(1_000, 11_000, first, &|_| true));
        assert!(!judge(1_000, 10_999, first, &|_| true), "in grace");
        assert!(!judge(1_000, 11_000, home[1], &|_| true), "not first");
        assert!(
            !judge(1_000, 11_000, first, &|n| n != home[2]),
            "a home is down"
        );
        assert!(
            !judge(1_000, 11_000, first, &|n| n != members[4]),
            "a member that may stand in with a stale copy is down"
        );
        // A clock behind the deletion (skew) waits, it never underflows.
        assert!(!judge(50_000, 11_000, first, &|_| true));
        // A value's deadline still to come is kept even with no grace.
        assert!(!may_collect(
            5_000,
            4_999,
            0,
            &home,
            &members,
            first,
            |_| true
        ));
        assert!(may_collect(5_000, 5_000, 0, &home, &members, first, |_| {
            true
        }));
    }

    #[test]
    fn a_home_must_hold_exactly_the_tombstones_and_anyone_else_nothing_more() {
        let dot = |counter| Dot {
            node: NodeId::from_u64(1),
            counter,
        };
        let tombstones: BTreeSet<Dot> = [dot(2)].into();
        let stale: BTreeSet<Dot> = [dot(1)].into();
        let none = BTreeSet::new();
        assert!(!blocks_collection(&tombstones, &tombstones, true));
        assert!(
            blocks_collection(&none, &tombstones, true),
            "a home without it"
        );
        assert!(blocks_collection(&stale, &tombstones, true));
        assert!(!blocks_collection(&none, &tombstones, false));
        assert!(!blocks_collection(&tombstones, &tombstones, false));
        // Seed 249 of the data-path simulation: a stand-in held the deleted
        // value for a hint; collected anyway, the value came back.
        assert!(blocks_collection(&stale, &tombstones, false));
    }
}
