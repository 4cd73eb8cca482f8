//! Anti-entropy: replicas that drifted apart find and exchange exactly the
//! keys that differ.
//!
//! Owns the rounds. Every `--anti-entropy-interval-ms` this node picks the
//! next peer it shares keys with and compares the hash trees they keep for
//! each other: branches first, then the leaves under differing branches,
//! then the entries (key, entry hash) of differing leaves, at most
//! [`BUCKETS_PER_ROUND`] at a time. The peer answers with its versions of
//! the keys that differ and the keys it wants; both sides merge by version,
//! so a tombstone beats the value it deleted. A round that found
//! differences is followed at once by another with the same peer, until
//! their trees agree. Which buckets and keys differ is `data::repair`'s to
//! decide. A malformed or lying answer costs only that round: everything
//! received is merged by version, and only for keys this node is a home
//! replica of. Never runs while a ring change rebuilds the trees.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::{AsyncContext, Context, Message};

use super::inbound::merge_received;
use super::local::LocalCopies;
use super::view::ClusterView;
use super::{ReplicaClient, Store, StoreError};
use crate::data::placement::shared_peers;
use crate::data::repair::{compare_bucket, differing_buckets};
use crate::key::Key;
use crate::merkle::{differing, BucketEntries, HashTree, BRANCHES, LEAVES};
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::replica::{ReplicaReply, ReplicaRequest};
use crate::version::Object;

/// Buckets whose entries one round exchanges.
const BUCKETS_PER_ROUND: usize = 64;
/// The most buckets or objects a peer may send in one request.
const MAX_BUCKETS_PER_REQUEST: usize = 256;
pub(super) const MAX_OBJECTS_PER_REQUEST: usize = 4096;
const PUSH_BATCH: usize = 64;

/// The interval's tick: a round with the next peer, and a step of
/// tombstone collection.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct Tick;

/// After comparing trees with `peer`: the buckets whose entries differ.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct Compared {
    peer: NodeId,
    addr: SocketAddr,
    buckets: Vec<u16>,
    more: bool,
}

/// The peer's answer to this node's entries.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct Exchanged {
    peer: NodeId,
    addr: SocketAddr,
    objects: Vec<(Key, Object)>,
    wanted: Vec<Key>,
    more: bool,
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct RoundOver {
    peer: NodeId,
    again: bool,
}

pub(super) struct AntiEntropy {
    peers: ReplicaClient,
    metrics: SharedMetrics,
    timeout: Duration,
    next_peer: usize,
    in_round: bool,
    /// The peer whose exchange this node answered by asking for keys, and
    /// until when it expects them: while that push is under way, other
    /// exchanges wait, so two replicas do not both send the same keys to a
    /// node that was away.
    serving: Option<(NodeId, Instant)>,
}

impl AntiEntropy {
    pub(super) fn new(
        peers: ReplicaClient,
        metrics: SharedMetrics,
        replica_timeout: Duration,
    ) -> Self {
        AntiEntropy {
            peers,
            metrics,
            timeout: replica_timeout * 3,
            next_peer: 0,
            in_round: false,
            serving: None,
        }
    }

    /// Starts a round with the next peer this node shares keys with.
    pub(super) fn tick(
        &mut self,
        view: &ClusterView,
        local: &LocalCopies,
        ctx: &mut Context<Store>,
    ) {
        if self.in_round || !local.trees().ready() {
            return;
        }
        let peers: Vec<NodeId> = local
            .trees()
            .peers()
            .into_iter()
            .filter(|&p| view.is_alive(p))
            .collect();
        if peers.is_empty() {
            return;
        }
        let peer = peers[self.next_peer % peers.len()];
        self.next_peer = self.next_peer.wrapping_add(1);
        self.start_round(peer, view, local, ctx);
    }

    fn start_round(
        &mut self,
        peer: NodeId,
        view: &ClusterView,
        local: &LocalCopies,
        ctx: &mut Context<Store>,
    ) {
        if self.serving_another(peer) {
            return;
        }
        let Some(addr) = view.addr_of(peer) else {
            return;
        };
        let ours = local.trees().for_peer(peer).cloned().unwrap_or_default();
        self.in_round = true;
        self.metrics.anti_entropy_rounds.inc();
        let (peers, store, me) = (self.peers.clone(), ctx.address(), view.local_id());
        let timeout = self.timeout;
        actix::spawn(async move {
            let request = ReplicaRequest::TreeBranches { pair: me };
            let branches = match peers.request_within(addr, &request, timeout).await {
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

    /// Sends this node's entries of the buckets that differ.
    pub(super) fn compared(
        &mut self,
        msg: Compared,
        view: &ClusterView,
        local: &LocalCopies,
        ctx: &mut Context<Store>,
    ) {
        let mut buckets = Vec::with_capacity(msg.buckets.len());
        for bucket in msg.buckets {
            match entries_shared_with(msg.peer, bucket, view, local) {
                Ok(entries) => buckets.push(BucketEntries {
                    bucket,
                    entries: entries.into_iter().map(|(k, (h, _))| (k, h)).collect(),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "anti-entropy cannot read a bucket");
                    self.in_round = false;
                    return;
                }
            }
        }
        let (peers, store, me) = (self.peers.clone(), ctx.address(), view.local_id());
        let timeout = self.timeout;
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

    /// Merges what the peer sent and pushes what it asked for.
    pub(super) fn exchanged(
        &mut self,
        msg: Exchanged,
        view: &ClusterView,
        local: &mut LocalCopies,
        ctx: &mut Context<Store>,
    ) {
        let (merged, _) = merge_received(msg.objects, None, view, local, &self.metrics);
        let mut push = Vec::new();
        for key in msg.wanted.into_iter().take(MAX_OBJECTS_PER_REQUEST) {
            match local.read(&key) {
                Ok(object) if !object.is_empty() => push.push((key, object)),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "anti-entropy cannot read a wanted key"),
            }
        }
        let (peers, store, timeout) = (self.peers.clone(), ctx.address(), self.timeout);
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

    /// A round ended; one that found differences goes again at once,
    /// unless a ring change began meanwhile.
    pub(super) fn round_over(
        &mut self,
        msg: RoundOver,
        view: &ClusterView,
        local: &LocalCopies,
        ctx: &mut Context<Store>,
    ) {
        self.in_round = false;
        if msg.again && local.trees().ready() {
            self.start_round(msg.peer, view, local, ctx);
        }
    }

    /// Step 1 for a peer: the branch hashes of the tree kept for it.
    pub(super) fn tree_branches(&self, pair: NodeId, local: &LocalCopies) -> ReplicaReply {
        if !local.trees().ready() {
            return ReplicaReply::Refused("the hash trees are being rebuilt".into());
        }
        let tree = local.trees().for_peer(pair).cloned().unwrap_or_default();
        ReplicaReply::Branches(tree.branches())
    }

    /// Step 2 for a peer: the leaf hashes under the branches it names.
    pub(super) fn tree_leaves(
        &self,
        pair: NodeId,
        branches: &[u16],
        local: &LocalCopies,
    ) -> ReplicaReply {
        if !local.trees().ready() {
            return ReplicaReply::Refused("the hash trees are being rebuilt".into());
        }
        let empty = HashTree::default();
        let tree = local.trees().for_peer(pair).unwrap_or(&empty);
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

    /// Step 3 for a peer: this node's versions of the keys whose entries
    /// differ, and the keys it wants the peer's versions of.
    pub(super) fn exchange_buckets(
        &mut self,
        pair: NodeId,
        buckets: Vec<BucketEntries>,
        view: &ClusterView,
        local: &LocalCopies,
    ) -> ReplicaReply {
        if buckets.len() > MAX_BUCKETS_PER_REQUEST {
            return ReplicaReply::Refused("too many buckets in one exchange".into());
        }
        if self.in_round || self.serving_another(pair) {
            return ReplicaReply::Refused("busy with another anti-entropy exchange".into());
        }
        let ring = local
            .trees()
            .settled()
            .cloned()
            .unwrap_or_else(|| view.ring().clone());
        let mut objects = Vec::new();
        let mut wanted = Vec::new();
        for BucketEntries { bucket, entries } in buckets {
            if usize::from(bucket) >= LEAVES || entries.len() > MAX_OBJECTS_PER_REQUEST {
                return ReplicaReply::Refused("a malformed bucket".into());
            }
            let mut ours = match entries_shared_with(pair, bucket, view, local) {
                Ok(ours) => ours,
                Err(e) => return ReplicaReply::Refused(e.to_string()),
            };
            let theirs: BTreeMap<Key, u64> = entries.into_iter().collect();
            let hashes: BTreeMap<Key, u64> =
                ours.iter().map(|(k, (h, _))| (k.clone(), *h)).collect();
            let (send, want) = compare_bucket(&hashes, &theirs, |key| {
                shared_peers(&ring, view.replication(), view.local_id(), key).contains(&pair)
            });
            for key in send {
                if let Some((_, object)) = ours.remove(&key) {
                    objects.push((key, object));
                }
            }
            wanted.extend(want);
        }
        if !wanted.is_empty() {
            self.serving = Some((pair, Instant::now() + self.timeout));
        }
        ReplicaReply::Exchange { objects, wanted }
    }

    /// Whether a peer other than `peer` is still pushing keys this node
    /// asked it for.
    fn serving_another(&self, peer: NodeId) -> bool {
        self.serving
            .is_some_and(|(serving, until)| serving != peer && Instant::now() < until)
    }
}

/// This node's entries in `bucket` for the keys it shares with `peer`
/// under the settled ring: key -> (entry hash, copy).
fn entries_shared_with(
    peer: NodeId,
    bucket: u16,
    view: &ClusterView,
    local: &LocalCopies,
) -> Result<BTreeMap<Key, (u64, Object)>, StoreError> {
    let ring = local
        .trees()
        .settled()
        .cloned()
        .unwrap_or_else(|| view.ring().clone());
    let shared =
        |key: &str| shared_peers(&ring, view.replication(), view.local_id(), key).contains(&peer);
    Ok(local
        .bucket(bucket, shared)?
        .into_iter()
        .map(|(key, hash, object)| (key, (hash, object)))
        .collect())
}
