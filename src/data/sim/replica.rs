//! The replica side: what a node does with each message it receives, as
//! the Store's `serve_peer` does, and its local merges.
//!
//! Owns the receiving rules the Store applies before the pure decisions:
//! a plain write (client replication, read repair, a delivered hint) only
//! for a key the node homes on the ring it is moving to or on; a hint only
//! for a member; a batch merged key by key, refusing keys it does not home
//! (or will not once the leaving sender is gone); a purge only from the
//! key's first home replica; and every merge through the purge memory.
//! Never originates anything: replies only.

use std::collections::BTreeSet;

use super::network::Msg;
use super::Sim;
use crate::data::placement::home_of;
use crate::node_id::NodeId;
use crate::ring::Ring;
use crate::version::{Dot, Object};

impl Sim {
    /// Whether `node` homes `key` on the ring it is moving to, or on its
    /// current one (`Store::is_home_now`).
    pub(super) fn is_home_now(&self, node: usize, key: &str) -> bool {
        let n = &self.nodes[node];
        let ring = n.job.as_ref().map_or(&n.ring, |job| &job.to);
        home_of(ring, &self.replication, key).contains(&n.id)
    }

    /// Folds `incoming` into `node`'s copy, unless it is only tombstones
    /// purged here lately. Returns whether the copy changed.
    pub(super) fn merge_local(&mut self, node: usize, key: &str, incoming: &Object) -> bool {
        tracing::trace!(t = self.now, node, key, dots = ?incoming.dots(), "merge");
        let now = self.instant();
        let n = &mut self.nodes[node];
        if n.purged.absorbs(key, incoming, now) {
            return false;
        }
        let copy = n.copies.entry(key.to_string()).or_default();
        let changed = copy.merge(incoming);
        if copy.is_empty() {
            n.copies.remove(key);
        }
        changed
    }

    /// Removes `node`'s copy of `key` if it still holds exactly `dots`.
    pub(super) fn drop_local_if(&mut self, node: usize, key: &str, dots: &BTreeSet<Dot>) -> bool {
        tracing::trace!(t = self.now, node, key, ?dots, "drop if unchanged");
        let copies = &mut self.nodes[node].copies;
        match copies.get(key) {
            Some(copy) if !copy.is_empty() && copy.dots() == *dots => {
                copies.remove(key);
                true
            }
            _ => false,
        }
    }

    /// `Store::merge_objects`: the keys `node` homes (or will once
    /// `leaving` is gone) are merged, the others refused; returns how many
    /// changed and how many were refused.
    pub(super) fn merge_objects(
        &mut self,
        node: usize,
        objects: Vec<(String, Object)>,
        leaving: Option<NodeId>,
    ) -> (usize, usize) {
        let me = self.nodes[node].id;
        let without_leaving = leaving.map(|gone| {
            Ring::new(
                self.nodes[node]
                    .ring
                    .nodes()
                    .iter()
                    .copied()
                    .filter(|&n| n != gone),
                super::VNODES,
            )
        });
        let (mut merged, mut refused) = (0, 0);
        for (key, object) in objects {
            let after_leave = without_leaving
                .as_ref()
                .is_some_and(|ring| home_of(ring, &self.replication, &key).contains(&me));
            if !(self.is_home_now(node, &key) || after_leave) {
                refused += 1;
                continue;
            }
            if self.merge_local(node, &key, &object) {
                merged += 1;
            }
        }
        (merged, refused)
    }

    pub(super) fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        tracing::trace!(t = self.now, from, to, ?msg, "deliver");
        match msg {
            Msg::Write {
                round,
                key,
                object,
                target,
            } => {
                let stored = match target.hint_for {
                    // A plain write is for a home replica: one from a
                    // coordinator whose ring lags must not leave a copy
                    // where the key no longer lives.
                    None => self.is_home_now(to, &key),
                    // A hint is kept only for a member.
                    Some(owner) => self.nodes[to].ring.nodes().contains(&owner),
                };
                if stored {
                    self.merge_local(to, &key, &object);
                    if let Some(owner) = target.hint_for {
                        self.nodes[to].hints.insert(owner, key);
                    }
                } else {
                    self.count("refused_write");
                }
                self.send(
                    to,
                    from,
                    Msg::WriteAck {
                        round,
                        target,
                        stored,
                    },
                );
            }
            Msg::WriteAck {
                round,
                target,
                stored,
            } => self.write_reply(round, target, stored),
            Msg::Read { round, key } => {
                let copy = self.nodes[to].copies.get(&key).cloned().unwrap_or_default();
                self.send(to, from, Msg::ReadReply { round, copy });
            }
            Msg::ReadReply { round, copy } => {
                let node = self.nodes[from].id;
                self.read_reply(round, node, Some(copy));
            }
            Msg::Repair { key, object } => {
                // The coordinator's own repair is a local merge.
                if from == to || self.is_home_now(to, &key) {
                    self.merge_local(to, &key, &object);
                }
            }
            Msg::Hint { key, object } => {
                let stored = self.is_home_now(to, &key);
                if stored {
                    self.merge_local(to, &key, &object);
                }
                let dots = object.dots();
                self.send(to, from, Msg::HintAck { key, dots, stored });
            }
            Msg::HintAck { key, dots, stored } => {
                if stored {
                    let owner = self.nodes[from].id;
                    self.hint_delivered(to, owner, &key, &dots);
                }
            }
            Msg::Batch {
                ticket,
                objects,
                leaving,
            } => {
                // Only the leaving node hands its own data over.
                let leaving = leaving.filter(|&l| l == self.nodes[from].id);
                let (_, refused) = self.merge_objects(to, objects, leaving);
                if let Some(ticket) = ticket {
                    self.send(to, from, Msg::BatchReply { ticket, refused });
                }
            }
            Msg::BatchReply { ticket, refused } => self.job_reply(to, ticket, Some(refused == 0)),
            Msg::TreeAsk { ticket } => {
                let tree = self.tree_for(to, from).map(Box::new);
                self.send(to, from, Msg::TreeReply { ticket, tree });
            }
            Msg::TreeReply { ticket, tree } => self.ae_tree(to, from, ticket, tree),
            Msg::Exchange { ticket, buckets } => {
                let answer = self.exchange_buckets(to, from, buckets);
                self.send(to, from, Msg::ExchangeReply { ticket, answer });
            }
            Msg::ExchangeReply { ticket, answer } => self.ae_exchanged(to, from, ticket, answer),
            Msg::GcRead { ticket, key } => {
                let copy = self.nodes[to].copies.get(&key).cloned().unwrap_or_default();
                self.send(to, from, Msg::GcReadReply { ticket, copy });
            }
            Msg::GcReadReply { ticket, copy } => {
                let replier = self.nodes[from].id;
                self.gc_reply(to, Some(replier), ticket, Some(copy));
            }
            Msg::Purge { ticket, key, dots } => {
                let first_home = home_of(&self.nodes[to].ring, &self.replication, &key)
                    .first()
                    .copied();
                if first_home == Some(self.nodes[from].id) {
                    self.purge_local(to, &key, &dots);
                }
                self.send(to, from, Msg::PurgeReply { ticket });
            }
            Msg::Gossip { bytes } => self.swim_datagram(from, to, bytes),
            Msg::PurgeReply { ticket } => {
                let replier = self.nodes[from].id;
                self.gc_reply(to, Some(replier), ticket, Some(Object::new()));
            }
        }
    }

    /// `Store::purge_local`: drops the copy if it is exactly these
    /// tombstones, and remembers the purge.
    pub(super) fn purge_local(&mut self, node: usize, key: &str, dots: &BTreeSet<Dot>) -> bool {
        let Some(clock) = self.nodes[node]
            .copies
            .get(key)
            .filter(|c| c.deleted_at_ms().is_some())
            .map(Object::clock)
        else {
            return false;
        };
        if !self.drop_local_if(node, key, dots) {
            return false;
        }
        let now = self.instant();
        self.nodes[node].purged.remember(key, clock, now);
        true
    }
}
