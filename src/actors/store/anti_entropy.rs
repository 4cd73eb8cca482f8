//! Anti-entropy and tombstone collection: replicas that drifted apart find
//! and exchange exactly the keys that differ, and deletions every replica
//! holds are finally forgotten.
//!
//! Owns the rounds. Every `--anti-entropy-interval-ms` this node picks the
//! next peer it shares keys with and compares the hash trees they keep for
//! each other: branches first, then the leaves under differing branches,
//! then the entries (key, entry hash) of differing leaves, at most
//! [`BUCKETS_PER_ROUND`] at a time. The peer answers with its versions of
//! the keys that differ and the keys it wants; both sides merge by version,
//! so a tombstone beats the value it deleted. A round that found
//! differences is followed at once by another with the same peer, until
//! their trees agree. A malformed or lying answer costs only that round:
//! everything received is merged by version, and only for keys this node
//! is a home replica of.
//!
//! A tombstone is collected when it is older than `--tombstone-grace-ms`,
//! every home replica of its key is alive and holds exactly the same
//! versions; the first home replica checks and tells the others to purge.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::{AsyncContext, Context, Handler, Message};
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{Store, StoreError};
use crate::data::layout::{bucket_prefix, key_of_data_key, DATA_PREFIX};
use crate::data::placement::{home_of, shared_peers};
use crate::data::repair::{compare_bucket, differing_buckets, may_collect};
use crate::key::Key;
use crate::member::MemberState;
use crate::merkle::{differing, entry_hash, BucketEntries, HashTree, BRANCHES, LEAVES};
use crate::node_id::NodeId;
use crate::replica::{ReplicaReply, ReplicaRequest};
use crate::ring::Ring;
use crate::version::{Dot, Object};

/// Buckets whose entries one round exchanges.
const BUCKETS_PER_ROUND: usize = 64;
/// The most buckets or objects a peer may send in one request.
const MAX_BUCKETS_PER_REQUEST: usize = 256;
const MAX_OBJECTS_PER_REQUEST: usize = 4096;
/// Keys examined per step of tombstone collection.
const GC_STEP_KEYS: usize = 256;
const PUSH_BATCH: usize = 64;

#[derive(Default)]
pub(in crate::actors) struct State {
    next_peer: usize,
    in_round: bool,
    /// The peer whose exchange this node answered by asking for keys, and
    /// until when it expects them: while that push is under way, other
    /// exchanges wait, so two replicas do not both send the same keys to a
    /// node that was away.
    serving: Option<(NodeId, Instant)>,
    gc_cursor: Option<Vec<u8>>,
    gc_running: bool,
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct Tick;

/// After comparing trees with `peer`: the buckets whose entries differ.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct Compared {
    peer: NodeId,
    addr: SocketAddr,
    buckets: Vec<u16>,
    more: bool,
}

/// The peer's answer to this node's entries.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct Exchanged {
    peer: NodeId,
    addr: SocketAddr,
    objects: Vec<(String, Object)>,
    wanted: Vec<String>,
    more: bool,
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
struct RoundOver {
    peer: NodeId,
    again: bool,
}

/// Tombstones every home replica was told to purge: drop them here too.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct PurgeHere(Vec<(String, BTreeSet<Dot>)>);

#[derive(Message, Debug)]
#[rtype(result = "()")]
struct GcStepOver;

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    pub(super) fn start_anti_entropy(&mut self, ctx: &mut Context<Self>) {
        let interval = self.config.anti_entropy_interval;
        if interval.is_zero() {
            return;
        }
        ctx.run_interval(interval, |_, ctx| ctx.notify(Tick));
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.gc_step(ctx);
        if self.job.is_some() || self.anti_entropy.in_round || !self.handoff.trees_built {
            return;
        }
        let peers: Vec<NodeId> = self
            .trees
            .keys()
            .copied()
            .filter(|p| {
                self.members
                    .get(p)
                    .is_some_and(|m| m.state == MemberState::Alive)
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if peers.is_empty() {
            return;
        }
        let peer = peers[self.anti_entropy.next_peer % peers.len()];
        self.anti_entropy.next_peer = self.anti_entropy.next_peer.wrapping_add(1);
        self.start_round(peer, ctx);
    }

    fn start_round(&mut self, peer: NodeId, ctx: &mut Context<Self>) {
        if self.serving_another(peer) {
            return;
        }
        let Some(addr) = self.addr_of(peer) else {
            return;
        };
        let ours = self.trees.get(&peer).cloned().unwrap_or_default();
        self.anti_entropy.in_round = true;
        self.metrics.anti_entropy_rounds.inc();
        let (peers, store, me) = (self.peers.clone(), ctx.address(), self.config.local_id);
        let timeout = self.config.replica_timeout * 3;
        actix::spawn(async move {
            let branches = match peers
                .request_within(addr, &ReplicaRequest::TreeBranches { pair: me }, timeout)
                .await
            {
                Ok(ReplicaReply::Branches(theirs)) => differing(&ours.branches(), &theirs),
                other => {
                    tracing::debug!(%peer, outcome = ?other.err(), "anti-entropy: no tree from the peer");
                    store.do_send(RoundOver { peer, again: false });
                    return;
                }
            };
            if branches.is_empty() {
                store.do_send(RoundOver { peer, again: false });
                return;
            }
            let request = ReplicaRequest::TreeLeaves {
                pair: me,
                branches: branches.iter().map(|&b| b as u16).collect(),
            };
            let leaves = match peers.request_within(addr, &request, timeout).await {
                Ok(ReplicaReply::Leaves(leaves)) => leaves,
                other => {
                    tracing::debug!(%peer, outcome = ?other.err(), "anti-entropy: no leaves from the peer");
                    store.do_send(RoundOver { peer, again: false });
                    return;
                }
            };
            let (buckets, more) = differing_buckets(&ours, &leaves, BUCKETS_PER_ROUND);
            store.do_send(Compared {
                peer,
                addr,
                buckets,
                more,
            });
        });
    }

    /// This node's entries in `bucket` for the keys it shares with `peer`.
    fn entries_shared_with(
        &self,
        peer: NodeId,
        bucket: u16,
    ) -> Result<BTreeMap<String, (u64, Object)>, StoreError> {
        let ring = self.settled.clone().unwrap_or_else(|| self.ring.clone());
        let mut entries = BTreeMap::new();
        for (raw, bytes) in self.engine.scan_prefix(&bucket_prefix(bucket))? {
            let Some(key) = key_of_data_key(&raw) else {
                continue;
            };
            if !shared_peers(&ring, &self.config.replication, self.config.local_id, key)
                .contains(&peer)
            {
                continue;
            }
            let object = Object::decode(&bytes)?;
            if !object.is_empty() {
                entries.insert(key.to_string(), (entry_hash(key, &object), object));
            }
        }
        Ok(entries)
    }

    fn compared(&mut self, msg: Compared, ctx: &mut Context<Self>) {
        let mut buckets = Vec::with_capacity(msg.buckets.len());
        for bucket in msg.buckets {
            match self.entries_shared_with(msg.peer, bucket) {
                Ok(entries) => buckets.push(BucketEntries {
                    bucket,
                    entries: entries.into_iter().map(|(k, (h, _))| (k, h)).collect(),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "anti-entropy cannot read a bucket");
                    self.anti_entropy.in_round = false;
                    return;
                }
            }
        }
        let (peers, store, me) = (self.peers.clone(), ctx.address(), self.config.local_id);
        let timeout = self.config.replica_timeout * 3;
        let (peer, addr, more) = (msg.peer, msg.addr, msg.more);
        actix::spawn(async move {
            let request = ReplicaRequest::ExchangeBuckets { pair: me, buckets };
            match peers.request_within(addr, &request, timeout).await {
                Ok(ReplicaReply::Exchange { objects, wanted }) => store.do_send(Exchanged {
                    peer,
                    addr,
                    objects,
                    wanted,
                    more,
                }),
                other => {
                    tracing::debug!(%peer, outcome = ?other.err(), "anti-entropy exchange failed");
                    store.do_send(RoundOver { peer, again: false });
                }
            }
        });
    }

    fn exchanged(&mut self, msg: Exchanged, ctx: &mut Context<Self>) {
        let (merged, _) = self.merge_objects(msg.objects, None);
        let mut push = Vec::new();
        for key in msg.wanted.into_iter().take(MAX_OBJECTS_PER_REQUEST) {
            if Key::new(key.as_str(), self.config.max_key_bytes).is_err() {
                continue;
            }
            match self.read_local(&key) {
                Ok(object) if !object.is_empty() => push.push((key, object)),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "anti-entropy cannot read a wanted key"),
            }
        }
        let (peers, store) = (self.peers.clone(), ctx.address());
        let timeout = self.config.replica_timeout * 3;
        let (peer, addr, more) = (msg.peer, msg.addr, msg.more);
        let differed = merged > 0 || !push.is_empty();
        actix::spawn(async move {
            for chunk in push.chunks(PUSH_BATCH) {
                let request = ReplicaRequest::WriteBatch {
                    objects: chunk.to_vec(),
                };
                if let Err(e) = peers.request_within(addr, &request, timeout).await {
                    tracing::debug!(%peer, error = %e, "anti-entropy push failed");
                    store.do_send(RoundOver { peer, again: false });
                    return;
                }
            }
            store.do_send(RoundOver {
                peer,
                again: more || differed,
            });
        });
    }

    fn round_over(&mut self, msg: RoundOver, ctx: &mut Context<Self>) {
        self.anti_entropy.in_round = false;
        if msg.again && self.job.is_none() {
            self.start_round(msg.peer, ctx);
        }
    }

    /// Merges objects another node sent, for keys this node is a home
    /// replica of (or will be once `leaving` is gone); returns how many
    /// changed here and how many were refused.
    fn merge_objects(
        &mut self,
        objects: Vec<(String, Object)>,
        leaving: Option<NodeId>,
    ) -> (usize, usize) {
        let (mut merged, mut refused) = (0, 0);
        let without_leaving = leaving.map(|gone| {
            Ring::new(
                self.ring.nodes().iter().copied().filter(|&n| n != gone),
                self.config.vnodes,
            )
        });
        for (key, object) in objects {
            let home_after_leave = without_leaving.as_ref().is_some_and(|ring| {
                home_of(ring, &self.config.replication, &key).contains(&self.config.local_id)
            });
            let home = Key::new(key.as_str(), self.config.max_key_bytes).is_ok()
                && (self.is_home_now(&key) || home_after_leave);
            if !home {
                refused += 1;
                continue;
            }
            match self.merge_local(&key, &object) {
                Ok((_, Some(change))) => {
                    merged += 1;
                    self.metrics.anti_entropy_keys_repaired.inc();
                    self.note_change(change);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not merge a received key");
                    refused += 1;
                }
            }
        }
        (merged, refused)
    }

    pub(super) fn merge_batch(
        &mut self,
        objects: Vec<(String, Object)>,
        leaving: Option<NodeId>,
    ) -> ReplicaReply {
        if objects.len() > MAX_OBJECTS_PER_REQUEST {
            return ReplicaReply::Refused("too many objects in one batch".into());
        }
        let count = objects.len();
        let (_, refused) = self.merge_objects(objects, leaving);
        ReplicaReply::StoredBatch {
            stored: count - refused,
            refused,
        }
    }

    pub(super) fn tree_branches(&self, pair: NodeId) -> ReplicaReply {
        if self.job.is_some() || !self.handoff.trees_built {
            return ReplicaReply::Refused("the hash trees are being rebuilt".into());
        }
        let tree = self.trees.get(&pair).cloned().unwrap_or_default();
        ReplicaReply::Branches(tree.branches())
    }

    pub(super) fn tree_leaves(&self, pair: NodeId, branches: &[u16]) -> ReplicaReply {
        if self.job.is_some() || !self.handoff.trees_built {
            return ReplicaReply::Refused("the hash trees are being rebuilt".into());
        }
        let empty = HashTree::default();
        let tree = self.trees.get(&pair).unwrap_or(&empty);
        let wanted: BTreeSet<u16> = branches
            .iter()
            .copied()
            .filter(|&b| usize::from(b) < BRANCHES)
            .collect();
        ReplicaReply::Leaves(
            wanted
                .into_iter()
                .map(|b| (b, tree.leaves_of(usize::from(b)).to_vec()))
                .collect(),
        )
    }

    pub(super) fn exchange_buckets(
        &mut self,
        pair: NodeId,
        buckets: Vec<BucketEntries>,
    ) -> ReplicaReply {
        if buckets.len() > MAX_BUCKETS_PER_REQUEST {
            return ReplicaReply::Refused("too many buckets in one exchange".into());
        }
        if self.anti_entropy.in_round || self.serving_another(pair) {
            return ReplicaReply::Refused("busy with another anti-entropy exchange".into());
        }
        let mut objects = Vec::new();
        let mut wanted = Vec::new();
        for BucketEntries { bucket, entries } in buckets {
            if usize::from(bucket) >= LEAVES || entries.len() > MAX_OBJECTS_PER_REQUEST {
                return ReplicaReply::Refused("a malformed bucket".into());
            }
            let mut ours = match self.entries_shared_with(pair, bucket) {
                Ok(ours) => ours,
                Err(e) => return ReplicaReply::Refused(e.to_string()),
            };
            let theirs: BTreeMap<String, u64> = entries.into_iter().collect();
            let hashes: BTreeMap<String, u64> =
                ours.iter().map(|(k, (h, _))| (k.clone(), *h)).collect();
            let ring = self.settled.clone().unwrap_or_else(|| self.ring.clone());
            let (send, want) = compare_bucket(&hashes, &theirs, |key| {
                Key::new(key, self.config.max_key_bytes).is_ok()
                    && shared_peers(&ring, &self.config.replication, self.config.local_id, key)
                        .contains(&pair)
            });
            for key in send {
                if let Some((_, object)) = ours.remove(&key) {
                    objects.push((key, object));
                }
            }
            wanted.extend(want);
        }
        if !wanted.is_empty() {
            let until = Instant::now() + self.config.replica_timeout * 3;
            self.anti_entropy.serving = Some((pair, until));
        }
        ReplicaReply::Exchange { objects, wanted }
    }

    /// Whether a peer other than `peer` is still pushing keys this node
    /// asked it for.
    fn serving_another(&self, peer: NodeId) -> bool {
        self.anti_entropy
            .serving
            .is_some_and(|(serving, until)| serving != peer && Instant::now() < until)
    }

    // ---- tombstone collection -----------------------------------------

    fn gc_step(&mut self, ctx: &mut Context<Self>) {
        if self.anti_entropy.gc_running || self.job.is_some() || !self.handoff.trees_built {
            return;
        }
        let batch = match self.engine.scan_after(
            &[DATA_PREFIX],
            self.anti_entropy.gc_cursor.as_deref(),
            GC_STEP_KEYS,
        ) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "tombstone collection cannot read storage");
                return;
            }
        };
        self.anti_entropy.gc_cursor = batch.last().map(|(raw, _)| raw.clone());
        let grace = self.config.tombstone_grace.as_millis() as u64;
        let now = now_ms();
        let me = self.config.local_id;
        let mut candidates = Vec::new();
        for (raw, bytes) in &batch {
            let Some(key) = key_of_data_key(raw) else {
                continue;
            };
            let Ok(object) = Object::decode(bytes) else {
                continue;
            };
            let Some(deleted_at) = object.deleted_at_ms() else {
                continue;
            };
            let home = home_of(&self.ring, &self.config.replication, key);
            let alive = |n: NodeId| {
                self.members
                    .get(&n)
                    .is_some_and(|m| m.state == MemberState::Alive)
            };
            if !may_collect(deleted_at, now, grace, &home, me, alive) {
                continue;
            }
            let others: Vec<SocketAddr> = home
                .iter()
                .filter(|&&n| n != me)
                .filter_map(|n| self.members.get(n).map(|m| m.gossip_addr))
                .collect();
            candidates.push((key.to_string(), object.dots(), others));
        }
        if candidates.is_empty() {
            return;
        }
        self.anti_entropy.gc_running = true;
        let (peers, store) = (self.peers.clone(), ctx.address());
        let timeout = self.config.replica_timeout;
        actix::spawn(async move {
            let mut purged = Vec::new();
            for (key, dots, others) in candidates {
                if all_hold(&peers, &key, &dots, &others, timeout).await {
                    let request = ReplicaRequest::Purge {
                        key: key.clone(),
                        dots: dots.iter().copied().collect(),
                    };
                    let mut told = FuturesUnordered::new();
                    for addr in &others {
                        told.push(peers.request_within(*addr, &request, timeout));
                    }
                    while told.next().await.is_some() {}
                    purged.push((key, dots));
                }
            }
            store.do_send(PurgeHere(purged));
            store.do_send(GcStepOver);
        });
    }

    /// Drops this node's copy of `key` if it is exactly these tombstones.
    pub(super) fn purge_local(
        &mut self,
        key: &str,
        dots: &BTreeSet<Dot>,
    ) -> Result<bool, StoreError> {
        let object = self.read_local(key)?;
        if object.deleted_at_ms().is_none() {
            return Ok(false);
        }
        let dropped = self.drop_local_if(key, dots)?;
        if dropped {
            self.metrics.tombstones_purged.inc();
            self.purged.remember(key, dots.clone(), Instant::now());
        }
        Ok(dropped)
    }
}

/// Whether every replica at `others` holds exactly `dots` for `key`.
async fn all_hold(
    peers: &super::ReplicaClient,
    key: &str,
    dots: &BTreeSet<Dot>,
    others: &[SocketAddr],
    timeout: Duration,
) -> bool {
    let request = ReplicaRequest::Read {
        key: key.to_string(),
    };
    let mut reads: FuturesUnordered<_> = others
        .iter()
        .map(|addr| peers.request_within(*addr, &request, timeout))
        .collect();
    while let Some(answer) = reads.next().await {
        match answer {
            Ok(ReplicaReply::Object(object)) if object.dots() == *dots => {}
            _ => return false,
        }
    }
    true
}

impl Handler<Tick> for Store {
    type Result = ();

    fn handle(&mut self, _msg: Tick, ctx: &mut Self::Context) {
        self.tick(ctx);
    }
}

impl Handler<Compared> for Store {
    type Result = ();

    fn handle(&mut self, msg: Compared, ctx: &mut Self::Context) {
        self.compared(msg, ctx);
    }
}

impl Handler<Exchanged> for Store {
    type Result = ();

    fn handle(&mut self, msg: Exchanged, ctx: &mut Self::Context) {
        self.exchanged(msg, ctx);
    }
}

impl Handler<RoundOver> for Store {
    type Result = ();

    fn handle(&mut self, msg: RoundOver, ctx: &mut Self::Context) {
        self.round_over(msg, ctx);
    }
}

impl Handler<PurgeHere> for Store {
    type Result = ();

    fn handle(&mut self, msg: PurgeHere, _ctx: &mut Self::Context) {
        for (key, dots) in msg.0 {
            if let Err(e) = self.purge_local(&key, &dots) {
                tracing::warn!(error = %e, "could not purge a tombstone");
            }
        }
    }
}

impl Handler<GcStepOver> for Store {
    type Result = ();

    fn handle(&mut self, _msg: GcStepOver, _ctx: &mut Self::Context) {
        self.anti_entropy.gc_running = false;
    }
}
