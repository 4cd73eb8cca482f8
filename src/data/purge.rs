//! The memory of tombstones this node purged lately, so that a copy of one
//! still on its way (an anti-entropy round with a replica not yet told to
//! purge, a hint) is not taken back.
//!
//! Without it a collected tombstone bounces: the first home replica tells
//! the others to purge one by one, and a replica that purged a moment
//! before another is handed the tombstone back by that other's next
//! exchange, then collects it again. Owns only the memory and the rule; a
//! copy holding anything newer than the purged versions (a write after the
//! delete) is always taken.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::version::{Dot, Object};

/// The most purges remembered; past it the oldest is forgotten first (a
/// forgotten one can only bounce once more, which is harmless).
const MAX_REMEMBERED: usize = 100_000;

#[derive(Debug)]
pub struct PurgedTombstones {
    window: Duration,
    by_key: HashMap<String, (BTreeSet<Dot>, Instant)>,
    /// Keys in the order they were purged, to forget the oldest first.
    order: VecDeque<(String, Instant)>,
}

impl PurgedTombstones {
    /// Remembers each purge for `window`.
    pub fn new(window: Duration) -> Self {
        PurgedTombstones {
            window,
            by_key: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// `key`'s tombstones with these `dots` were just purged here.
    pub fn remember(&mut self, key: &str, dots: BTreeSet<Dot>, now: Instant) {
        self.forget_expired(now);
        if self.order.len() >= MAX_REMEMBERED {
            if let Some((oldest, at)) = self.order.pop_front() {
                if self.by_key.get(&oldest).is_some_and(|(_, t)| *t == at) {
                    self.by_key.remove(&oldest);
                }
            }
        }
        self.by_key.insert(key.to_string(), (dots, now));
        self.order.push_back((key.to_string(), now));
    }

    /// Whether `incoming` for `key` is only (some of) tombstones purged here
    /// within the window, and so is dropped rather than merged.
    pub fn absorbs(&self, key: &str, incoming: &Object, now: Instant) -> bool {
        let Some((dots, at)) = self.by_key.get(key) else {
            return false;
        };
        if now.saturating_duration_since(*at) >= self.window || incoming.is_empty() {
            return false;
        }
        let only_tombstones = incoming.values().next().is_none();
        only_tombstones && incoming.dots().is_subset(dots)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn forget_expired(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            if self.by_key.get(key).is_some_and(|(_, t)| t == at) {
                self.by_key.remove(key);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_id::NodeId;
    use crate::version::{Payload, VersionVector};

    fn deleted(writer: u64) -> Object {
        let mut object = Object::new();
        object
            .write(
                NodeId::from_u64(writer),
                &VersionVector::new(),
                Payload::Value {
                    content_type: "t".into(),
                    bytes: b"v".to_vec(),
                },
            )
            .unwrap();
        let context = object.clock();
        object
            .write(
                NodeId::from_u64(writer),
                &context,
                Payload::Tombstone { at_ms: 1 },
            )
            .unwrap();
        object
    }

    #[test]
    fn a_purged_tombstone_is_not_taken_back_but_a_later_write_is() {
        let start = Instant::now();
        let mut purged = PurgedTombstones::new(Duration::from_secs(60));
        let tombstone = deleted(1);
        purged.remember("k", tombstone.dots(), start);
        assert!(purged.absorbs("k", &tombstone, start + Duration::from_secs(1)));
        assert!(!purged.absorbs("other", &tombstone, start), "another key");

        // A write after the delete carries a newer dot: taken.
        let mut rewritten = tombstone.clone();
        rewritten
            .write(
                NodeId::from_u64(2),
                &tombstone.clock(),
                Payload::Value {
                    content_type: "t".into(),
                    bytes: b"again".to_vec(),
                },
            )
            .unwrap();
        assert!(!purged.absorbs("k", &rewritten, start));
        // So is a tombstone of another delete.
        assert!(!purged.absorbs("k", &deleted(3), start));
        // Past the window the memory is gone.
        assert!(!purged.absorbs("k", &tombstone, start + Duration::from_secs(60)));
        purged.remember("j", deleted(4).dots(), start + Duration::from_secs(61));
        assert_eq!(purged.len(), 1, "the expired purge is forgotten");
    }

    #[test]
    fn a_key_purged_twice_keeps_its_newest_memory() {
        let start = Instant::now();
        let mut purged = PurgedTombstones::new(Duration::from_secs(10));
        let (first, second) = (deleted(1), deleted(2));
        purged.remember("k", first.dots(), start);
        purged.remember("k", second.dots(), start + Duration::from_secs(9));
        // The first entry's expiry must not forget the second.
        purged.remember("x", deleted(3).dots(), start + Duration::from_secs(12));
        assert!(purged.absorbs("k", &second, start + Duration::from_secs(12)));
        assert!(!purged.absorbs("k", &first, start + Duration::from_secs(12)));
    }
}
