//! The memory of tombstones this node purged lately, so that a copy of one
//! still on its way (an anti-entropy round with a replica not yet told to
//! purge), or of a value it deleted (a hint delivered late, a write
//! delayed in the network), is not taken back.
//!
//! Without it a collected tombstone bounces: the first home replica tells
//! the others to purge one by one, and a replica that purged a moment
//! before another is handed the tombstone back by that other's next
//! exchange, then collects it again; and a stand-in's copy of the deleted
//! value, handed over after the purge, would bring the value back. Owns
//! only the memory and the rule: what the purged tombstones' history
//! covers is dropped, and a copy holding anything else (a write after the
//! delete) is always taken. Sound because a node never issues a dot twice
//! for a key (`version::Object::write_above`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::version::{Object, VersionVector};

/// The most purges remembered; past it the oldest is forgotten first (a
/// forgotten one can only bounce once more, which is harmless).
const MAX_REMEMBERED: usize = 100_000;

#[derive(Debug)]
pub struct PurgedTombstones {
    window: Duration,
    /// Per key, the causal history of the tombstones purged: every version
    /// they superseded, and themselves.
    by_key: HashMap<String, (VersionVector, Instant)>,
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

    /// `key`'s tombstones, whose history is `clock`, were just purged here.
    pub fn remember(&mut self, key: &str, clock: VersionVector, now: Instant) {
        self.forget_expired(now);
        if self.order.len() >= MAX_REMEMBERED {
            if let Some((oldest, at)) = self.order.pop_front() {
                if self.by_key.get(&oldest).is_some_and(|(_, t)| *t == at) {
                    self.by_key.remove(&oldest);
                }
            }
        }
        self.by_key.insert(key.to_string(), (clock, now));
        self.order.push_back((key.to_string(), now));
    }

    /// Whether every version in `incoming` for `key` is one a tombstone
    /// purged here within the window superseded, or that tombstone itself,
    /// and so `incoming` is dropped rather than merged.
    pub fn absorbs(&self, key: &str, incoming: &Object, now: Instant) -> bool {
        let Some((clock, at)) = self.by_key.get(key) else {
            return false;
        };
        if now.saturating_duration_since(*at) >= self.window || incoming.is_empty() {
            return false;
        }
        incoming.dots().iter().all(|&dot| clock.covers(dot))
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
                    expires_at_ms: None,
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
        purged.remember("k", tombstone.clock(), start);
        assert!(purged.absorbs("k", &tombstone, start + Duration::from_secs(1)));
        assert!(!purged.absorbs("other", &tombstone, start), "another key");
        // Seed 421 of the data-path simulation: a stand-in's copy of the
        // value the tombstone deleted, delivered by its hint after the purge.
        let mut deleted_value = Object::new();
        deleted_value
            .write(
                NodeId::from_u64(1),
                &VersionVector::new(),
                Payload::Value {
                    content_type: "t".into(),
                    bytes: b"v".to_vec(),
                    expires_at_ms: None,
                },
            )
            .unwrap();
        assert!(purged.absorbs("k", &deleted_value, start));

        // A write after the delete carries a newer dot: taken.
        let mut rewritten = tombstone.clone();
        rewritten
            .write(
                NodeId::from_u64(2),
                &tombstone.clock(),
                Payload::Value {
                    content_type: "t".into(),
                    bytes: b"again".to_vec(),
                    expires_at_ms: None,
                },
            )
            .unwrap();
        assert!(!purged.absorbs("k", &rewritten, start));
        // So is a tombstone of another delete.
        assert!(!purged.absorbs("k", &deleted(3), start));
        // Past the window the memory is gone.
        assert!(!purged.absorbs("k", &tombstone, start + Duration::from_secs(60)));
        purged.remember("j", deleted(4).clock(), start + Duration::from_secs(61));
        assert_eq!(purged.len(), 1, "the expired purge is forgotten");
    }

    #[test]
    fn a_key_purged_twice_keeps_its_newest_memory() {
        let start = Instant::now();
        let mut purged = PurgedTombstones::new(Duration::from_secs(10));
        let (first, second) = (deleted(1), deleted(2));
        purged.remember("k", first.clock(), start);
        purged.remember("k", second.clock(), start + Duration::from_secs(9));
        // The first entry's expiry must not forget the second.
        purged.remember("x", deleted(3).clock(), start + Duration::from_secs(12));
        assert!(purged.absorbs("k", &second, start + Duration::from_secs(12)));
        assert!(!purged.absorbs("k", &first, start + Duration::from_secs(12)));
    }
}
