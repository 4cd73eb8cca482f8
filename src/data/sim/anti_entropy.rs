//! Anti-entropy and tombstone collection, per node on its own view and its
//! own skewed wall clock, as `actors::store::anti_entropy` runs them.
//!
//! Owns the rounds' glue: every tick a node collects what tombstones it
//! may, then compares hash trees with the next peer it shares keys with
//! (branches, then the leaves of differing branches, then the entries of
//! differing buckets), merges what the peer sends back, pushes what it
//! asked for, and goes again while they differed. A tombstone is collected
//! by its first home replica once `may_collect` says so and every other
//! home holds exactly its versions; the others are told to purge, then it
//! purges itself. The trees are built from storage when asked for, which
//! is what the Store's incrementally kept trees hold. Never decides what
//! differs, what is sent or wanted, or whether a tombstone may go:
//! `merkle` and `data::repair` do.

use crate::key::Key;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::Rng;

use super::network::{ExchangeAnswer, Msg};
use super::{Event, Sim};
use crate::data::placement::{home_of, shared_peers};
use crate::data::repair::{blocks_collection, compare_bucket, differing_buckets, may_collect};
use crate::merkle::{bucket_of, differing, entry_hash, BucketEntries, HashTree};
use crate::node_id::NodeId;
use crate::version::{Dot, Object};

/// Buckets whose entries one round exchanges (`BUCKETS_PER_ROUND`).
const BUCKETS_PER_ROUND: usize = 64;

#[derive(Default)]
pub(super) struct AeState {
    next_peer: usize,
    round: Option<AeRound>,
}

struct AeRound {
    peer: NodeId,
    ticket: u64,
    /// More buckets differed than this round exchanged.
    more: bool,
}

/// One collection step: candidates checked one by one.
/// A tombstone to check: (key, its dots, the other homes, the other
/// members).
type Pending = (String, BTreeSet<Dot>, Vec<NodeId>, Vec<NodeId>);

pub(super) struct Gc {
    candidates: VecDeque<Pending>,
    current: Option<Candidate>,
    purged: Vec<(String, BTreeSet<Dot>)>,
}

struct Candidate {
    ticket: u64,
    key: String,
    dots: BTreeSet<Dot>,
    others: Vec<NodeId>,
    /// Members that are no home of the key, asked whether they hold
    /// anything else of it.
    bystanders: BTreeSet<NodeId>,
    /// Asking whether they hold it (false), or telling them to purge.
    telling: bool,
    waiting: BTreeSet<NodeId>,
}

impl Sim {
    pub(super) fn schedule_ae_tick(&mut self, node: usize) {
        let every = self.config.anti_entropy_every_ms.max(1);
        let jitter = self.rng.random_range(0..=every / 10);
        let incarnation = self.nodes[node].incarnation;
        self.at(every + jitter, Event::AeTick { node, incarnation });
    }

    pub(super) fn ae_tick(&mut self, node: usize) {
        self.gc_step(node);
        let n = &self.nodes[node];
        if n.job.is_some() || n.ae.round.is_some() || !n.trees_built {
            return;
        }
        let ring = n.settled.as_ref().unwrap_or(&n.ring);
        let peers: Vec<NodeId> = n
            .copies
            .keys()
            .flat_map(|key| shared_peers(ring, &self.replication, n.id, key))
            .filter(|&p| self.is_up(node, p))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if peers.is_empty() {
            return;
        }
        let peer = peers[n.ae.next_peer % peers.len()];
        self.nodes[node].ae.next_peer = self.nodes[node].ae.next_peer.wrapping_add(1);
        self.start_round(node, peer);
    }

    fn start_round(&mut self, node: usize, peer: NodeId) {
        let ticket = self.ticket();
        self.nodes[node].ae.round = Some(AeRound {
            peer,
            ticket,
            more: false,
        });
        self.count("anti_entropy_round");
        let to = self.index_of(peer);
        self.send(node, to, Msg::TreeAsk { ticket });
        self.time_out(node, ticket, self.config.replica_timeout_ms * 3);
    }

    /// The keys `node` shares with `peer` on the ring its data is placed
    /// for, with their copies.
    fn shared_with(&self, node: usize, peer: NodeId) -> impl Iterator<Item = (&String, &Object)> {
        let n = &self.nodes[node];
        let ring = n.settled.as_ref().unwrap_or(&n.ring);
        n.copies.iter().filter(move |(key, copy)| {
            !copy.is_empty() && shared_peers(ring, &self.replication, n.id, key).contains(&peer)
        })
    }

    fn build_tree(&self, node: usize, peer: NodeId) -> HashTree {
        let mut tree = HashTree::default();
        for (key, copy) in self.shared_with(node, peer) {
            tree.toggle(bucket_of(key), entry_hash(key, copy));
        }
        tree
    }

    /// `Store::tree_branches`: refused while the trees are being rebuilt.
    pub(super) fn tree_for(&self, node: usize, asker: usize) -> Option<HashTree> {
        let n = &self.nodes[node];
        if n.job.is_some() || !n.trees_built {
            return None;
        }
        Some(self.build_tree(node, self.nodes[asker].id))
    }

    fn current_round(&self, node: usize, from: usize, ticket: u64) -> bool {
        self.nodes[node]
            .ae
            .round
            .as_ref()
            .is_some_and(|r| r.ticket == ticket && r.peer == self.nodes[from].id)
    }

    pub(super) fn ae_failed(&mut self, node: usize, ticket: u64) {
        if self.nodes[node]
            .ae
            .round
            .as_ref()
            .is_some_and(|r| r.ticket == ticket)
        {
            self.nodes[node].ae.round = None;
        }
    }

    /// The peer's tree: the buckets that differ, and this node's entries in
    /// them sent over.
    pub(super) fn ae_tree(
        &mut self,
        node: usize,
        from: usize,
        ticket: u64,
        tree: Option<Box<HashTree>>,
    ) {
        if !self.current_round(node, from, ticket) {
            return;
        }
        let Some(theirs) = tree else {
            self.nodes[node].ae.round = None;
            return;
        };
        let peer = self.nodes[from].id;
        let ours = self.build_tree(node, peer);
        // Equal trees have equal branches: skipping their hashing changes
        // no decision and is most of a debug build's time.
        let branches = if ours == *theirs {
            Vec::new()
        } else {
            differing(&ours.branches(), &theirs.branches())
        };
        if branches.is_empty() {
            self.nodes[node].ae.round = None;
            return;
        }
        let leaves: Vec<(u16, Vec<u64>)> = branches
            .iter()
            .map(|&b| (b as u16, theirs.leaves_of(b).to_vec()))
            .collect();
        let (buckets, more) = differing_buckets(&ours, &leaves, BUCKETS_PER_ROUND);
        let wanted: BTreeSet<u16> = buckets.into_iter().collect();
        let mut by_bucket: BTreeMap<u16, Vec<(Key, u64)>> =
            wanted.iter().map(|&b| (b, Vec::new())).collect();
        for (key, copy) in self.shared_with(node, peer) {
            if let Some(entries) = by_bucket.get_mut(&bucket_of(key)) {
                let valid = Key::new(key.as_str()).expect("the simulation's keys are valid");
                entries.push((valid, entry_hash(key, copy)));
            }
        }
        let buckets = by_bucket
            .into_iter()
            .map(|(bucket, entries)| BucketEntries { bucket, entries })
            .collect();
        let ticket = self.ticket();
        self.nodes[node].ae.round = Some(AeRound { peer, ticket, more });
        self.send(node, from, Msg::Exchange { ticket, buckets });
        self.time_out(node, ticket, self.config.replica_timeout_ms * 3);
    }

    /// `Store::exchange_buckets`, on the answering side.
    pub(super) fn exchange_buckets(
        &mut self,
        node: usize,
        asker: usize,
        buckets: Vec<BucketEntries>,
    ) -> Option<ExchangeAnswer> {
        if self.nodes[node].ae.round.is_some() {
            return None;
        }
        let pair = self.nodes[asker].id;
        let n = &self.nodes[node];
        let ring = n.settled.as_ref().unwrap_or(&n.ring);
        let mut objects = Vec::new();
        let mut wanted = Vec::new();
        for BucketEntries { bucket, entries } in buckets {
            let ours: BTreeMap<String, (u64, Object)> = self
                .shared_with(node, pair)
                .filter(|(key, _)| bucket_of(key) == bucket)
                .map(|(key, copy)| (key.clone(), (entry_hash(key, copy), copy.clone())))
                .collect();
            let hashes: BTreeMap<String, u64> =
                ours.iter().map(|(k, (h, _))| (k.clone(), *h)).collect();
            let theirs: BTreeMap<String, u64> =
                entries.into_iter().map(|(k, h)| (k.into(), h)).collect();
            let (send, want) = compare_bucket(&hashes, &theirs, |key| {
                shared_peers(ring, &self.replication, n.id, key).contains(&pair)
            });
            for key in send {
                if let Some((_, object)) = ours.get(&key) {
                    objects.push((key, object.clone()));
                }
            }
            wanted.extend(want);
        }
        Some((objects, wanted))
    }

    /// `Store::exchanged`: merges what the peer sent, pushes what it asked
    /// for, and goes again while they differed.
    pub(super) fn ae_exchanged(
        &mut self,
        node: usize,
        from: usize,
        ticket: u64,
        answer: Option<ExchangeAnswer>,
    ) {
        if !self.current_round(node, from, ticket) {
            return;
        }
        let round = self.nodes[node].ae.round.take().expect("checked above");
        let Some((objects, wanted)) = answer else {
            return;
        };
        let (merged, _) = self.merge_objects(node, objects, None);
        let push: Vec<(String, Object)> = wanted
            .into_iter()
            .filter_map(|key| {
                let copy = self.nodes[node].copies.get(&key)?;
                (!copy.is_empty()).then(|| (key, copy.clone()))
            })
            .collect();
        let differed = merged > 0 || !push.is_empty();
        if !push.is_empty() {
            self.send(
                node,
                from,
                Msg::Batch {
                    ticket: None,
                    objects: push,
                    leaving: None,
                },
            );
        }
        if (round.more || differed) && self.nodes[node].job.is_none() {
            self.start_round(node, round.peer);
        }
    }

    // ---- tombstone collection -------------------------------------------

    fn gc_step(&mut self, node: usize) {
        let n = &self.nodes[node];
        if n.gc.is_some() || n.job.is_some() || !n.trees_built {
            return;
        }
        let now = self.wall_ms(node);
        let grace = self.config.tombstone_grace_ms;
        let mut candidates = VecDeque::new();
        for (key, copy) in &n.copies {
            let Some(deleted_at) = copy.deleted_at_ms() else {
                continue;
            };
            let home = home_of(&n.ring, &self.replication, key);
            let members: Vec<NodeId> = n
                .ring
                .nodes()
                .iter()
                .copied()
                .filter(|&id| id != n.id)
                .collect();
            if !may_collect(deleted_at, now, grace, &home, &members, n.id, |id| {
                self.is_up(node, id)
            }) {
                continue;
            }
            let bystanders = members
                .into_iter()
                .filter(|id| !home.contains(id))
                .collect();
            let others = home.into_iter().filter(|&id| id != n.id).collect();
            candidates.push_back((key.clone(), copy.dots(), others, bystanders));
        }
        if candidates.is_empty() {
            return;
        }
        self.nodes[node].gc = Some(Gc {
            candidates,
            current: None,
            purged: Vec::new(),
        });
        self.gc_next(node);
    }

    fn gc_next(&mut self, node: usize) {
        let Some(gc) = self.nodes[node].gc.as_mut() else {
            return;
        };
        let Some((key, dots, others, bystanders)) = gc.candidates.pop_front() else {
            // `PurgeHere`: the first home purges last.
            let gc = self.nodes[node].gc.take().expect("checked above");
            for (key, dots) in gc.purged {
                if self.purge_local(node, &key, &dots) {
                    tracing::debug!(t = self.now, node, key, ?dots, "collected");
                    self.count("purge");
                }
            }
            return;
        };
        let ticket = self.ticket();
        for &other in others.iter().chain(&bystanders) {
            let to = self.index_of(other);
            self.send(
                node,
                to,
                Msg::GcRead {
                    ticket,
                    key: key.clone(),
                },
            );
        }
        let gc = self.nodes[node].gc.as_mut().expect("checked above");
        gc.current = Some(Candidate {
            ticket,
            key,
            dots,
            waiting: others.iter().chain(&bystanders).copied().collect(),
            others,
            bystanders: bystanders.into_iter().collect(),
            telling: false,
        });
        self.time_out(node, ticket, self.config.replica_timeout_ms);
    }

    /// A replica's copy (asking), its acknowledgement (telling), or the
    /// step's timeout (`from` none).
    pub(super) fn gc_reply(
        &mut self,
        node: usize,
        from: Option<NodeId>,
        ticket: u64,
        copy: Option<Object>,
    ) {
        let Some(current) = self.nodes[node]
            .gc
            .as_mut()
            .and_then(|gc| gc.current.as_mut())
            .filter(|c| c.ticket == ticket)
        else {
            return;
        };
        let (Some(from), Some(copy)) = (from, copy) else {
            // Timed out: a replica that did not answer blocks collection;
            // one not acknowledging a purge does not stop it.
            let current = self.take_candidate(node);
            if current.telling {
                self.collected(node, current);
            }
            return self.gc_next(node);
        };
        let is_home = !current.bystanders.contains(&from);
        if !current.telling && blocks_collection(&copy.dots(), &current.dots, is_home) {
            self.take_candidate(node);
            return self.gc_next(node);
        }
        current.waiting.remove(&from);
        if !current.waiting.is_empty() {
            return;
        }
        if current.telling {
            let current = self.take_candidate(node);
            self.collected(node, current);
            return self.gc_next(node);
        }
        // Every other home holds exactly these versions: tell them to purge.
        let ticket = self.ticket();
        let current = self.nodes[node]
            .gc
            .as_mut()
            .and_then(|gc| gc.current.as_mut())
            .expect("checked above");
        current.ticket = ticket;
        current.telling = true;
        current.waiting = current.others.iter().copied().collect();
        let (key, dots, others) = (
            current.key.clone(),
            current.dots.clone(),
            current.others.clone(),
        );
        for other in others {
            let to = self.index_of(other);
            self.send(
                node,
                to,
                Msg::Purge {
                    ticket,
                    key: key.clone(),
                    dots: dots.clone(),
                },
            );
        }
        self.time_out(node, ticket, self.config.replica_timeout_ms);
    }

    fn take_candidate(&mut self, node: usize) -> Candidate {
        self.nodes[node]
            .gc
            .as_mut()
            .and_then(|gc| gc.current.take())
            .expect("a candidate under way")
    }

    fn collected(&mut self, node: usize, candidate: Candidate) {
        for dot in &candidate.dots {
            self.purged.insert((candidate.key.clone(), *dot));
        }
        if let Some(gc) = self.nodes[node].gc.as_mut() {
            gc.purged.push((candidate.key, candidate.dots));
        }
    }
}
