//! The end-of-seed check: what the cluster holds against what clients were
//! told.
//!
//! Owns the verdicts. For each key it merges every home replica's copy on
//! the final ring: an acknowledged version missing although no write's
//! context covered it is lost (unless it is a tombstone its first home
//! replica collected); a version an acknowledged write's context covered
//! is resurrected (a purged tombstone's values included); a version no
//! coordinator issued is unknown. Never forgives anything else.

use std::collections::{BTreeSet, HashMap};

use super::{Sim, VNODES};
use crate::data::placement::home_of;
use crate::node_id::NodeId;
use crate::ring::Ring;
use crate::version::{Dot, Object};

impl Sim {
    /// The key's home replicas on the true final ring.
    pub(super) fn final_home(&self, key: &str) -> Vec<NodeId> {
        let ring = Ring::new(self.members.iter().copied(), VNODES);
        home_of(&ring, &self.replication, key)
    }

    pub(super) fn check(&mut self) {
        // A context covers, per coordinator, every counter up to its own:
        // per key and node, the highest counter any write's context (or any
        // acknowledged write's) covers says what was superseded.
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let mut covered: HashMap<(String, NodeId), u64> = HashMap::new();
        let mut covered_by_acknowledged: HashMap<(String, NodeId), u64> = HashMap::new();
        for ((key, dot), context) in &self.issued {
            for &id in &ids {
                let counter = context.get(id);
                if counter == 0 {
                    continue;
                }
                let entry = covered.entry((key.clone(), id)).or_default();
                *entry = (*entry).max(counter);
                if self.acknowledged.contains(&(key.clone(), *dot)) {
                    let entry = covered_by_acknowledged
                        .entry((key.clone(), id))
                        .or_default();
                    *entry = (*entry).max(counter);
                }
            }
        }
        let is_covered = |map: &HashMap<(String, NodeId), u64>, key: &str, dot: &Dot| {
            map.get(&(key.to_string(), dot.node))
                .is_some_and(|&counter| counter >= dot.counter)
        };
        let keys: BTreeSet<String> = self.issued.keys().map(|(k, _)| k.clone()).collect();
        for key in keys {
            let mut merged = Object::new();
            for home in self.final_home(&key) {
                if let Some(copy) = self.nodes[self.index_of(home)].copies.get(&key) {
                    merged.merge(copy);
                }
            }
            let present = merged.dots();
            for dot in &present {
                if !self.issued.contains_key(&(key.clone(), *dot)) {
                    self.report.unknown.push((key.clone(), *dot));
                } else if is_covered(&covered_by_acknowledged, &key, dot) {
                    self.report.resurrected.push((key.clone(), *dot));
                }
            }
            for (written_key, dot) in &self.acknowledged {
                if *written_key == key
                    && !present.contains(dot)
                    && !is_covered(&covered, &key, dot)
                    && !self.purged.contains(&(key.clone(), *dot))
                {
                    tracing::debug!(
                        key,
                        ?dot,
                        home = ?self.final_home(&key),
                        copies = ?self
                            .nodes
                            .iter()
                            .map(|n| (n.id, n.life, n.copies.get(&key).map(Object::dots)))
                            .collect::<Vec<_>>(),
                        "lost"
                    );
                    self.report.lost.push((key.clone(), *dot));
                }
            }
        }
    }
}
