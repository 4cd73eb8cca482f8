//! Listings: whether the replicas that answered a page cover every key,
//! and the page their answers make.
//!
//! A listing asks the replicas for their next keys in order past the
//! cursor. Each answers at most `limit`, so the page can only speak for
//! keys up to the smallest last key of the replicas that had more: past
//! it, one of them might hold a key not yet seen. Up to there every key
//! any replica holds is known, its copies merged, and the keys a client
//! would not see (all deleted or expired, or without siblings when only
//! conflicts are asked for) left out. The cursor moves strictly forward,
//! so following `next` lists each key at most once. Pure.

use std::collections::BTreeMap;

use crate::key::Key;
use crate::node_id::NodeId;
use crate::ring::Ring;
use crate::version::Object;

/// One replica's answer: its keys past the cursor in order, with copies,
/// and the last key it passed if it may hold more beyond it.
#[derive(Debug, Default)]
pub struct ReplicaPage {
    pub copies: Vec<(Key, Object)>,
    /// `None` when this replica holds nothing more past what it listed.
    pub more_after: Option<Key>,
}

/// Which keys a page shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// Keys with a live value.
    Live,
    /// Keys with more than one live value: siblings to resolve.
    Conflicts,
}

#[derive(Debug, Default, PartialEq)]
pub struct Page {
    /// The keys shown, in order, with the merged copies.
    pub entries: Vec<(Key, Object)>,
    /// Where the next page starts after; `None` when the listing is over.
    pub next: Option<Key>,
}

/// The page `answers` make: at most `limit` keys shown at `now_ms`.
pub fn merge_pages(answers: Vec<ReplicaPage>, limit: usize, show: Show, now_ms: u64) -> Page {
    let bound: Option<Key> = answers.iter().filter_map(|a| a.more_after.clone()).min();
    let mut merged: BTreeMap<Key, Object> = BTreeMap::new();
    for answer in answers {
        for (key, copy) in answer.copies {
            if bound.as_ref().is_some_and(|b| key > *b) {
                continue;
            }
            merged.entry(key).or_default().merge(&copy);
        }
    }
    let mut entries = Vec::new();
    for (key, object) in merged {
        let live = object.live_values(now_ms).count();
        let shown = match show {
            Show::Live => live > 0,
            Show::Conflicts => live > 1,
        };
        if !shown {
            continue;
        }
        if entries.len() == limit {
            // A key past a full page: the next page starts after the last
            // shown.
            let next = entries.last().map(|(k, _): &(Key, Object)| k.clone());
            return Page { entries, next };
        }
        entries.push((key, object));
    }
    Page {
        entries,
        next: bound,
    }
}

/// Whether `answered` holds at least `needed` of the homes of every token
/// range of `ring` (with `replicas` homes each): then, as for a read, every
/// key written to a quorum has a copy among the answers.
pub fn covers_every_range(
    ring: &Ring,
    replicas: usize,
    answered: &[NodeId],
    needed: usize,
) -> bool {
    ring.ranges().iter().all(|&(_, end, _)| {
        let mut homes = ring.walk(end);
        homes.truncate(replicas);
        homes.iter().filter(|n| answered.contains(n)).count() >= needed.min(homes.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Payload, VersionVector};

    const A: NodeId = NodeId::from_u64(1);
    const B: NodeId = NodeId::from_u64(2);

    fn key(k: &str) -> Key {
        Key::new(k).unwrap()
    }

    fn value(node: NodeId, text: &str) -> Object {
        let mut o = Object::new();
        o.write(
            node,
            &VersionVector::new(),
            Payload::value("t", text.into()),
        )
        .unwrap();
        o
    }

    fn deleted() -> Object {
        let mut o = value(A, "gone");
        let seen = o.clock();
        o.write(A, &seen, Payload::Tombstone { at_ms: 1 }).unwrap();
        o
    }

    fn keys(page: &Page) -> Vec<&str> {
        page.entries.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn a_page_speaks_only_up_to_the_shortest_replica_that_had_more() {
        let full = ReplicaPage {
            copies: vec![(key("a"), value(A, "1")), (key("c"), value(A, "3"))],
            more_after: Some(key("c")),
        };
        let done = ReplicaPage {
            copies: vec![(key("b"), value(B, "2")), (key("d"), value(B, "4"))],
            more_after: None,
        };
        let page = merge_pages(vec![full, done], 10, Show::Live, 0);
        assert_eq!(keys(&page), ["a", "b", "c"], "d may have neighbours unseen");
        assert_eq!(page.next, Some(key("c")));
    }

    #[test]
    fn hidden_keys_do_not_count_and_copies_of_one_key_merge() {
        let one = ReplicaPage {
            copies: vec![
                (key("a"), value(A, "1")),
                (key("b"), deleted()),
                (key("c"), value(A, "3")),
            ],
            more_after: None,
        };
        let other = ReplicaPage {
            copies: vec![(key("a"), value(A, "1")), (key("c"), value(B, "x"))],
            more_after: None,
        };
        let page = merge_pages(vec![one, other], 10, Show::Live, 0);
        assert_eq!(keys(&page), ["a", "c"]);
        assert_eq!(page.next, None, "every replica is done");
        assert_eq!(page.entries[1].1.live_values(0).count(), 2);
        let conflicts = merge_pages(
            vec![ReplicaPage {
                copies: page.entries.clone(),
                more_after: None,
            }],
            10,
            Show::Conflicts,
            0,
        );
        assert_eq!(keys(&conflicts), ["c"]);
    }

    #[test]
    fn a_full_page_ends_at_its_last_key_shown() {
        let answer = ReplicaPage {
            copies: ["a", "b", "c"]
                .iter()
                .map(|k| (key(k), value(A, k)))
                .collect(),
            more_after: None,
        };
        let page = merge_pages(vec![answer], 2, Show::Live, 0);
        assert_eq!(keys(&page), ["a", "b"]);
        assert_eq!(page.next, Some(key("b")));
    }

    #[test]
    fn every_range_needs_enough_of_its_homes() {
        let nodes: Vec<NodeId> = (1..=4).map(NodeId::from_u64).collect();
        let ring = Ring::new(nodes.iter().copied(), 16);
        assert!(covers_every_range(&ring, 3, &nodes, 2));
        assert!(covers_every_range(&ring, 3, &nodes[..3], 2), "one down");
        assert!(!covers_every_range(&ring, 3, &nodes[..2], 2), "two down");
        assert!(covers_every_range(&ring, 3, &nodes[..2], 1));
    }
}
