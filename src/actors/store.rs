//! The Store actor: this node's replicas, and the coordination of every
//! client read and write that reaches this node.
//!
//! Owns the storage engine (behind `Arc<dyn StorageEngine>`, so a restart
//! finds the same data), the hints this node keeps for replicas that were
//! down, and its view of the ring (from Membership's [`MembersChanged`]).
//!
//! Handles [`Get`], [`Put`] and [`Delete`] from the HTTP layer, and
//! [`FromPeer`] from the node-to-node server. For a client request it is the
//! coordinator: it places the key on the ring ([`Placement`]), asks the
//! replicas through the [`PeerClient`] and answers once R (reads) or W
//! (writes) of them have; the rest of the work (slow replicas, read repair,
//! hints for replicas that failed) finishes in the background. A write is
//! versioned by a home replica of its key, so a write that reaches a node
//! outside the key's home is forwarded to one. Runs on an arbiter of its
//! own so that disk writes never stall gossip. Must never open a socket of
//! its own: other nodes are reached only through the peer client.
//!
//! It also keeps the cluster healing itself: when the ring changes it hands
//! every key it holds to the nodes newly responsible for it, in bounded
//! batches (`ring_change`); it keeps one hash tree per peer over the keys
//! they share, updated on every write, and periodically compares trees with
//! a peer to exchange only the keys that differ (`anti_entropy`); and it
//! collects tombstones every home replica holds once their grace passed.
//!
//! Its decisions that need no I/O (the storage layout, placement, what a
//! read may answer, hints, whether a peer may ask) are in [`crate::data`];
//! this module carries them out.

mod anti_entropy;
mod inbound;
mod reachability;
mod ring_change;

pub use inbound::serve_peers;

pub use ring_change::{HandOffForLeave, HandoffReport, HandoffStatus, HandoffView};

use reachability::Reachability;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message, ResponseFuture, Supervised};
use futures_util::stream::{FuturesUnordered, StreamExt};
use thiserror::Error;
use tokio::sync::oneshot;

use super::contain_panic;
use super::membership::MembersChanged;
use crate::data::admission::{PeerJudge, PeerRefusal};
use crate::data::coordinate::{context_is_known, route_write, uncovered_homes, WriteRoute};
use crate::data::hints::{drops_copy_after_delivery, moved_to, Hints};
use crate::data::layout::{data_key, hint_key, parse_hint_key, HINT_PREFIX};
use crate::data::placement::{home_of, shared_peers};
use crate::data::purge::PurgedTombstones;
use crate::data::read::{ReadAnswer, ReadRound, ReadStep};
use crate::data::write::{Step as WriteStep, WriteRound};
use crate::key::Key;
use crate::log_limit::LogLimit;

/// From this many siblings on, a write is logged and counted: writers are
/// not sending back the contexts they read (Riak warns at 25 too).
pub const SIBLINGS_WARNING: usize = 25;
pub const DEFAULT_MAX_SIBLINGS: usize = 100;
use crate::member::{Member, MemberState};
use crate::merkle::{bucket_of, entry_hash, HashTree};
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::peer::{PeerClient, PeerError};
use crate::replica::{QuorumShortfall, ReplicaReply, ReplicaRequest, Written};
use crate::replication::{Placement, Quorum, Replication, Target};
use crate::ring::Ring;
use crate::storage::{StorageEngine, StorageError};
use crate::version::{CorruptObject, Dot, Object, Payload, VersionError, VersionVector};

/// Requests wait here rather than fail while the Store is busy: the HTTP
/// layer bounds how long they wait.
const MAILBOX_CAPACITY: usize = 1024;
/// The shortest a purge is remembered (see [`PurgedTombstones`]).
const PURGE_MEMORY_FLOOR: Duration = Duration::from_secs(60);
/// Hinted keys handed to one owner per delivery round.
const HINT_BATCH: usize = 256;

pub type ReplicaClient = PeerClient<ReplicaRequest, ReplicaReply>;

/// How a Store is set up; fixed for its life.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub local_id: NodeId,
    pub replication: Replication,
    /// How long one replica may take before it counts as failed.
    pub replica_timeout: Duration,
    /// How often hints are offered to their owners.
    pub hint_interval: Duration,
    pub max_key_bytes: usize,
    /// The largest value stored, from a client or from a peer alike.
    pub max_value_bytes: usize,
    /// The most siblings a coordinated write may leave.
    pub max_siblings: usize,
    /// The largest object (all of a key's siblings) a write may leave: what
    /// one peer frame can carry, so every copy can still be replicated.
    pub max_object_bytes: usize,
    /// Whether stand-ins keep hints for replicas that were down.
    pub hinted_handoff: bool,
    /// How often to compare hash trees with a peer; zero turns anti-entropy
    /// (and tombstone collection) off.
    pub anti_entropy_interval: Duration,
    /// How old a tombstone must be before it may be collected.
    pub tombstone_grace: Duration,
    /// Tokens per node, to rebuild the ring the data was placed for.
    pub vnodes: usize,
}

pub struct Store {
    engine: Arc<dyn StorageEngine>,
    metrics: SharedMetrics,
    config: StoreConfig,
    peers: ReplicaClient,
    members: HashMap<NodeId, Member>,
    ring: Arc<Ring>,
    hints: Hints,
    /// Owners a delivery round is under way for.
    delivering: HashSet<NodeId>,
    /// Per peer, the hash tree over the keys this node shares with it,
    /// under the settled ring.
    trees: HashMap<NodeId, HashTree>,
    /// The ring this node's data was last placed for: a ring change hands
    /// data over from this one to the new one.
    settled: Option<Arc<Ring>>,
    /// The ring change under way, if any.
    job: Option<ring_change::RingJob>,
    handoff: ring_change::HandoffLog,
    /// Once leaving, ring changes no longer move data here.
    leaving: bool,
    anti_entropy: anti_entropy::State,
    /// Peers this node's own requests found unreachable lately; shared with
    /// the requests in flight, which report what they saw.
    reachability: Arc<Reachability>,
    /// Refused peer requests are logged at most once a minute a sender.
    refusal_log: LogLimit<NodeId>,
    /// Tombstones purged here lately, so a copy still on its way is not
    /// taken back.
    purged: PurgedTombstones,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Corrupt(#[from] CorruptObject),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error("the store failed while handling this request and is restarting")]
    Restarting,
    #[error("{} of the {} replicas needed answered", .0.answered, .0.needed)]
    ReadQuorum(QuorumShortfall),
    #[error("{} of the {} replicas needed stored the write", .0.answered, .0.needed)]
    WriteQuorum(QuorumShortfall),
    /// Only a home replica versions a write: see [`Store::coordinate_write`].
    #[error("this node is not a home replica of the key")]
    NotHome,
    /// Only stand-ins answered a read and none held a value: a not-found
    /// from them would say nothing about the key.
    #[error("no home replica of the key answered ({answered} stand-ins did, holding no value), so whether it exists is unknown")]
    NoHomeAnswered { answered: usize, needed: usize },
    /// Too few of the nodes a request needs are reachable, as far as this
    /// node knows: refused before anything was asked or stored.
    #[error("only {reachable} of the {needed} replicas needed are reachable from this node; nothing was asked or stored")]
    Unreachable { reachable: usize, needed: usize },
    /// Only a home replica versions a write, and none took it.
    #[error("no home replica of the key could version the write (none reachable, or none with enough replicas in reach); nothing was stored")]
    NoHomeReachable,
    #[error("the home replica coordinating the write did not answer in time; the write may or may not have been stored")]
    WriteUnconfirmed,
    /// The write's context names versions that neither the coordinator nor
    /// the other home replicas it asked hold: forged, or from before the
    /// key's tombstones were collected. Nothing was stored; a client reads
    /// the key again and writes with the context that read gives.
    #[error("the context names versions no replica of this key holds (forged, or older than the key's last deletion); read the key again and write with the context the read gives")]
    UnknownContext {
        /// Whether every home replica answered: if not, the versions may
        /// be on one that did not.
        every_home_answered: bool,
    },
    /// Storing the write would leave an object too large to replicate.
    #[error("the key's versions would take {size} bytes with this write, over the {limit} one replica message carries; write with the context of a read of the key, which resolves them")]
    ObjectTooLarge { size: usize, limit: usize },
    /// Storing the write would leave more siblings than the limit.
    #[error("the key has {siblings} concurrent versions and a write that keeps them all would pass the limit of {limit}; write with the context of a read of the key, which resolves them")]
    TooManySiblings { siblings: usize, limit: usize },
}

/// A client read: the merged object of at least R replicas.
#[derive(Message, Debug)]
#[rtype(result = "Result<ReadOutcome, StoreError>")]
pub struct Get {
    pub key: Key,
    pub quorum: Option<Quorum>,
}

#[derive(Debug)]
pub struct ReadOutcome {
    /// Every version no other supersedes, tombstones included; empty when
    /// no replica has heard of the key.
    pub object: Object,
}

/// Which versions of a key a client write supersedes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Supersedes {
    /// Exactly those a context names: what the client had read. The empty
    /// context (a client that read nothing, or sent no context) supersedes
    /// nothing, so the write joins the key's versions as one more sibling.
    Seen(VersionVector),
    /// Those a quorum read finds just before the write: a `DELETE` without
    /// a context, or an explicit overwrite. A write that reached a replica
    /// after that read and before this write is dropped; that is why it is
    /// never the default for a value.
    FoundByQuorumRead {
        /// The read's quorum (`?r=`), if the client chose one.
        read_quorum: Option<Quorum>,
    },
}

/// A client write of a value.
#[derive(Message, Debug)]
#[rtype(result = "Result<Written, StoreError>")]
pub struct Put {
    pub key: Key,
    pub supersedes: Supersedes,
    pub content_type: String,
    pub value: Vec<u8>,
    pub quorum: Option<Quorum>,
}

/// A client delete: a versioned tombstone, written like a value.
#[derive(Message, Debug)]
#[rtype(result = "Result<Written, StoreError>")]
pub struct Delete {
    pub key: Key,
    pub supersedes: Supersedes,
    pub quorum: Option<Quorum>,
}

/// This node's own copy of a key, as stored, without asking any replica:
/// for operators and tests that look at one replica.
#[derive(Message, Debug)]
#[rtype(result = "Result<Object, StoreError>")]
pub struct LocalCopy {
    pub key: Key,
}

/// A request from another node, through the peer server; `from` is the node
/// id its connection's handshake introduced.
#[derive(Message, Debug)]
#[rtype(result = "ReplicaReply")]
pub struct FromPeer {
    pub from: NodeId,
    pub request: ReplicaRequest,
}

/// A client write on its way to the home replica that versions it: what
/// it supersedes is settled by then.
#[derive(Debug, Clone)]
struct ClientWrite {
    key: String,
    context: VersionVector,
    payload: Payload,
    quorum: Option<Quorum>,
}

/// A client write whose superseded versions a quorum read has just settled.
#[derive(Message, Debug)]
#[rtype(result = "Result<Written, StoreError>")]
struct Settled(ClientWrite);

/// A client write whose context named versions this node's copy lacked,
/// with what the other home replicas hold of the key: merged into the copy,
/// after which the context must be covered or the write is refused.
#[derive(Message, Debug)]
#[rtype(result = "Result<Written, StoreError>")]
struct ContextLookedUp {
    write: ClientWrite,
    found: Object,
    every_home_answered: bool,
    forwarded: bool,
}

/// After a write's fan-out: home replicas that got the write neither
/// directly nor through a stand-in, for which this node keeps a hint.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct KeepHints {
    key: String,
    owners: Vec<NodeId>,
}

/// Read repair of this node's own copy.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct MergeLocal {
    key: String,
    object: Object,
}

/// An owner stored a hinted key: the hint can go.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct HintDelivered {
    owner: NodeId,
    key: String,
    delivered: BTreeSet<Dot>,
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
struct DeliveryRoundOver(NodeId);

impl Store {
    pub fn new(
        engine: Arc<dyn StorageEngine>,
        config: StoreConfig,
        peers: ReplicaClient,
        metrics: SharedMetrics,
    ) -> Self {
        let ring = Arc::new(Ring::new([config.local_id], 1));
        let reachability = Arc::new(Reachability::new(config.replica_timeout, metrics.clone()));
        // Long enough for every exchange and purge request under way when a
        // tombstone was collected to have ended.
        let purged =
            PurgedTombstones::new(PURGE_MEMORY_FLOOR.max(config.anti_entropy_interval * 10));
        Store {
            engine,
            metrics,
            peers,
            members: HashMap::new(),
            ring,
            hints: Hints::default(),
            delivering: HashSet::new(),
            trees: HashMap::new(),
            settled: None,
            job: None,
            handoff: ring_change::HandoffLog::default(),
            leaving: false,
            anti_entropy: anti_entropy::State::default(),
            reachability,
            config,
            refusal_log: LogLimit::default(),
            purged,
        }
    }

    fn count_failure<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            // The client's to resolve, and counted; not the node's trouble.
            Err(StoreError::TooManySiblings { .. }) => {
                self.metrics.kv_writes_refused_siblings.inc();
            }
            Err(e) => {
                if matches!(e, StoreError::Storage(_) | StoreError::Corrupt(_)) {
                    self.metrics.kv_storage_errors.inc();
                }
                tracing::warn!(error = %e, "store request failed");
            }
            Ok(_) => {}
        }
        result
    }

    // ---- this node's replica ------------------------------------------

    fn read_local(&self, key: &str) -> Result<Object, StoreError> {
        match self.engine.get(&data_key(key))? {
            Some(bytes) => Ok(Object::decode(&bytes)?),
            None => Ok(Object::new()),
        }
    }

    fn store_local(&self, key: &str, object: &Object) -> Result<(), StoreError> {
        Ok(self.engine.put(&data_key(key), &object.encode())?)
    }

    /// Folds `incoming` into this node's copy; writes only if it changed.
    /// Returns the copy now held, and what changed if anything did.
    fn merge_local(
        &self,
        key: &str,
        incoming: &Object,
    ) -> Result<(Object, Option<Change>), StoreError> {
        let mut object = self.read_local(key)?;
        if self.purged.absorbs(key, incoming, Instant::now()) {
            self.metrics.tombstones_refused_after_purge.inc();
            return Ok((object, None));
        }
        let before = Change::entry(key, &object);
        if !object.merge(incoming) {
            return Ok((object, None));
        }
        self.store_local(key, &object)?;
        let change = Change {
            key: key.to_string(),
            before,
            after: Change::entry(key, &object),
        };
        Ok((object, Some(change)))
    }

    /// Asks the other home replicas that are up for their copies of the
    /// write's key, then carries on with [`ContextLookedUp`].
    fn look_up_context(
        &mut self,
        write: ClientWrite,
        forwarded: bool,
        placement: &Placement,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Written, StoreError>> {
        self.metrics.kv_contexts_looked_up.inc();
        let local_id = self.config.local_id;
        let others: Vec<NodeId> = placement
            .home
            .iter()
            .copied()
            .filter(|&n| n != local_id)
            .collect();
        let asked = self.with_addrs(others.iter().copied().filter(|&n| self.is_up(n)));
        let every_home_asked = asked.len() == others.len();
        let (peers, reachability, store) =
            (self.peers.clone(), self.reachability.clone(), ctx.address());
        let timeout = self.config.replica_timeout;
        Box::pin(async move {
            let request = ReplicaRequest::Read {
                key: write.key.clone(),
            };
            let reads = asked.iter().map(|&(node, addr)| {
                let (peers, reachability, request) =
                    (peers.clone(), reachability.clone(), request.clone());
                async move {
                    let outcome = peers.request_within(addr, &request, timeout).await;
                    reachability.observe(node, &outcome, Instant::now());
                    outcome
                }
            });
            let mut found = Object::new();
            let mut answered = 0;
            for outcome in futures_util::future::join_all(reads).await {
                if let Ok(ReplicaReply::Object(object)) = outcome {
                    found.merge(&object);
                    answered += 1;
                }
            }
            let looked_up = ContextLookedUp {
                write,
                found,
                every_home_answered: every_home_asked && answered == asked.len(),
                forwarded,
            };
            store
                .send(looked_up)
                .await
                .unwrap_or(Err(StoreError::Restarting))
        })
    }

    /// Versions a client write against this node's copy and stores it.
    /// Returns the context of the new version, the object now held and the
    /// change.
    fn write_local(
        &self,
        write: &ClientWrite,
    ) -> Result<(VersionVector, Object, Change), StoreError> {
        let mut object = self.read_local(&write.key)?;
        let before = Change::entry(&write.key, &object);
        let context = write.context.clone();
        let dot = object.write(self.config.local_id, &context, write.payload.clone())?;
        let siblings = object.siblings().len();
        if siblings > self.config.max_siblings {
            return Err(StoreError::TooManySiblings {
                siblings: siblings - 1,
                limit: self.config.max_siblings,
            });
        }
        let size = object.approximate_size();
        if size > self.config.max_object_bytes {
            return Err(StoreError::ObjectTooLarge {
                size,
                limit: self.config.max_object_bytes,
            });
        }
        if siblings >= SIBLINGS_WARNING {
            self.metrics.kv_sibling_warnings.inc();
            // Once as the key crosses the mark, not on every write after.
            if siblings == SIBLINGS_WARNING {
                tracing::warn!(key = %write.key, siblings, limit = self.config.max_siblings, "a key holds many concurrent versions; its writers should write with the context of a read");
            }
        }
        self.store_local(&write.key, &object)?;
        let mut written = context;
        written.add(dot);
        let change = Change {
            key: write.key.clone(),
            before,
            after: Change::entry(&write.key, &object),
        };
        Ok((written, object, change))
    }

    /// Removes this node's copy of `key` if it still holds exactly `dots`.
    fn drop_local_if(&mut self, key: &str, dots: &BTreeSet<Dot>) -> Result<bool, StoreError> {
        let object = self.read_local(key)?;
        if object.is_empty() || object.dots() != *dots {
            return Ok(false);
        }
        self.engine.delete(&data_key(key))?;
        self.note_change(Change {
            key: key.to_string(),
            before: Change::entry(key, &object),
            after: None,
        });
        Ok(true)
    }

    /// Keeps the hash trees in step with a change to this node's copy.
    fn note_change(&mut self, change: Change) {
        if change.before == change.after {
            return;
        }
        let local_id = self.config.local_id;
        let bucket = bucket_of(&change.key);
        if let Some(job) = &mut self.job {
            // The job's scan counts keys it has not reached yet itself.
            if !job.has_scanned(&data_key(&change.key)) {
                return;
            }
            let peers = shared_peers(&job.to, &self.config.replication, local_id, &change.key);
            for peer in peers {
                job.trees
                    .entry(peer)
                    .or_default()
                    .update(bucket, change.before, change.after);
            }
            return;
        }
        let Some(ring) = &self.settled else { return };
        for peer in shared_peers(ring, &self.config.replication, local_id, &change.key) {
            self.trees
                .entry(peer)
                .or_default()
                .update(bucket, change.before, change.after);
        }
    }

    // ---- the ring -----------------------------------------------------

    fn effective_replicas(&self) -> usize {
        self.config.replication.effective_replicas(self.ring.len())
    }

    /// Whether `node` may be asked to hold or serve a copy now. A suspect
    /// member is not: it is usually gone, and a false suspicion only sends
    /// its writes to stand-ins with hints for a moment. Nor is a member this
    /// node's own requests just failed to reach.
    fn is_up(&self, node: NodeId) -> bool {
        node == self.config.local_id
            || (self
                .members
                .get(&node)
                .is_some_and(|m| m.state == MemberState::Alive)
                && !self.reachability.is_unreachable(node))
    }

    fn placement(&self, key: &str) -> Placement {
        Placement::of(&self.ring, key.as_bytes(), self.effective_replicas(), |n| {
            self.is_up(n)
        })
    }

    /// Whether this node is a home replica of `key` on the ring it is
    /// moving to, or on its current one.
    fn is_home_now(&self, key: &str) -> bool {
        let ring = self.job.as_ref().map_or(&self.ring, |job| &job.to);
        home_of(ring, &self.config.replication, key).contains(&self.config.local_id)
    }

    fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.members.get(&node).map(|m| m.gossip_addr)
    }

    fn with_addrs(&self, nodes: impl IntoIterator<Item = NodeId>) -> Vec<(NodeId, SocketAddr)> {
        nodes
            .into_iter()
            .filter_map(|n| self.addr_of(n).map(|a| (n, a)))
            .collect()
    }

    // ---- coordination -------------------------------------------------

    fn coordinate_read(
        &mut self,
        key: Key,
        quorum: Option<Quorum>,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<ReadOutcome, StoreError>> {
        self.metrics.kv_gets.inc();
        let replicas = self.effective_replicas();
        let needed = quorum
            .unwrap_or(Quorum::Count(self.config.replication.read_quorum))
            .resolve(replicas);
        let key = key.as_str().to_string();
        let placement = self.placement(&key);
        let reachable = placement.targets.len() + placement.spares.len();
        if reachable < needed {
            self.metrics.kv_refused_unreachable.inc();
            return ready(Err(StoreError::Unreachable { reachable, needed }));
        }
        let local_id = self.config.local_id;
        let local = if placement.targets.iter().any(|t| t.node == local_id) {
            let engine = &*self;
            match contain_panic("store", ctx, || engine.read_local(&key)) {
                Some(Ok(object)) => Some(object),
                Some(Err(e)) => return ready(self.count_failure(Err(e))),
                None => return ready(Err(StoreError::Restarting)),
            }
        } else {
            None
        };
        let remote = self.with_addrs(
            placement
                .targets
                .iter()
                .map(|t| t.node)
                .filter(|&n| n != local_id),
        );
        let spares = self.with_addrs(placement.spares.iter().copied());
        let gather = Gather {
            peers: self.peers.clone(),
            reachability: self.reachability.clone(),
            timeout: self.config.replica_timeout,
            key,
            home: placement.home,
            store: ctx.address(),
            metrics: self.metrics.clone(),
            local_id,
        };
        let (reply, answer) = oneshot::channel();
        actix::spawn(gather.run(local, remote, spares, needed, reply));
        Box::pin(async move { answer.await.unwrap_or(Err(StoreError::Restarting)) })
    }

    /// A write from a client: settles what it supersedes (for
    /// [`Supersedes::FoundByQuorumRead`], by a quorum read first), then
    /// coordinates it.
    fn client_write(
        &mut self,
        key: Key,
        supersedes: Supersedes,
        payload: Payload,
        quorum: Option<Quorum>,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Written, StoreError>> {
        let mut write = ClientWrite {
            key: key.as_str().to_string(),
            context: VersionVector::new(),
            payload,
            quorum,
        };
        match supersedes {
            Supersedes::Seen(context) => {
                write.context = context;
                self.coordinate_write(write, false, ctx)
            }
            Supersedes::FoundByQuorumRead { read_quorum } => {
                let read = self.coordinate_read(key, read_quorum, ctx);
                let store = ctx.address();
                Box::pin(async move {
                    write.context = read.await?.object.clock();
                    let written = store.send(Settled(write)).await;
                    written.unwrap_or(Err(StoreError::Restarting))
                })
            }
        }
    }

    fn coordinate_write(
        &mut self,
        write: ClientWrite,
        forwarded: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Written, StoreError>> {
        self.coordinate_write_within(write, forwarded, false, ctx)
    }

    /// Coordinates `write`; `looked_up` once the other home replicas were
    /// asked for what its context names.
    fn coordinate_write_within(
        &mut self,
        write: ClientWrite,
        forwarded: bool,
        looked_up: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Written, StoreError>> {
        let local_id = self.config.local_id;
        let replicas = self.effective_replicas();
        let needed = write
            .quorum
            .unwrap_or(Quorum::Count(self.config.replication.write_quorum))
            .resolve(replicas);
        let placement = self.placement(&write.key);
        match route_write(&placement, local_id, needed, forwarded) {
            WriteRoute::Here => {}
            WriteRoute::NotHome => return ready(Err(StoreError::NotHome)),
            WriteRoute::Unreachable { reachable, needed } => {
                self.metrics.kv_refused_unreachable.inc();
                return ready(Err(StoreError::Unreachable { reachable, needed }));
            }
            WriteRoute::Forward(homes) => {
                self.metrics.kv_writes_forwarded.inc();
                return Box::pin(forward(
                    self.peers.clone(),
                    self.reachability.clone(),
                    self.with_addrs(homes),
                    // Long enough for the home replica's own fan-out.
                    self.config.replica_timeout * 3,
                    write,
                ));
            }
        }
        if !looked_up {
            let known = match self.read_local(&write.key) {
                Ok(object) => object.clock(),
                Err(e) => return ready(self.count_failure(Err(e))),
            };
            if !context_is_known(&known, &write.context) {
                return self.look_up_context(write, forwarded, &placement, ctx);
            }
        }
        self.metrics.kv_writes_coordinated.inc();
        let written = {
            let this = &*self;
            contain_panic("store", ctx, || this.write_local(&write))
        };
        let (context, object, change) = match written {
            Some(Ok(done)) => done,
            Some(Err(e)) => return ready(self.count_failure(Err(e))),
            None => return ready(Err(StoreError::Restarting)),
        };
        self.note_change(change);
        let uncovered = uncovered_homes(&placement, local_id);
        if !uncovered.is_empty() {
            self.keep_hints(&write.key, &uncovered);
        }
        let targets: Vec<(Target, SocketAddr)> = placement
            .targets
            .iter()
            .filter(|t| t.node != local_id)
            .filter_map(|t| self.addr_of(t.node).map(|a| (*t, a)))
            .collect();
        let spares = self.with_addrs(placement.spares.iter().copied());
        let fan_out = FanOut {
            peers: self.peers.clone(),
            reachability: self.reachability.clone(),
            timeout: self.config.replica_timeout,
            key: write.key,
            object,
            store: ctx.address(),
            local_id,
        };
        let (reply, answer) = oneshot::channel();
        actix::spawn(fan_out.run(targets, spares, needed, context, reply));
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let outcome = answer.await.unwrap_or(Err(StoreError::Restarting));
            if matches!(outcome, Err(StoreError::WriteQuorum(_))) {
                metrics.kv_quorum_failures.inc();
            }
            outcome
        })
    }

    /// Pings every peer set aside whose ping is due; an answer takes it
    /// back (see [`reachability`]).
    fn ping_set_aside(&self) {
        for node in self.reachability.due_for_ping(Instant::now()) {
            let Some(addr) = self.addr_of(node) else {
                self.reachability.forget(node);
                continue;
            };
            let (peers, reachability) = (self.peers.clone(), self.reachability.clone());
            let timeout = self.config.replica_timeout;
            actix::spawn(async move {
                let outcome = peers
                    .request_within(addr, &ReplicaRequest::Ping, timeout)
                    .await;
                reachability.observe(node, &outcome, Instant::now());
            });
        }
    }

    // ---- hints --------------------------------------------------------

    fn keep_hints(&mut self, key: &str, owners: &[NodeId]) {
        if !self.config.hinted_handoff {
            return;
        }
        for &owner in owners {
            if owner == self.config.local_id || self.hints.contains(owner, key) {
                continue;
            }
            match self.engine.put(&hint_key(owner, key), &[]) {
                Ok(()) => {
                    self.hints.insert(owner, key.to_string());
                    self.metrics.hints_recorded.inc();
                }
                Err(e) => {
                    self.metrics.kv_storage_errors.inc();
                    tracing::error!(error = %e, %owner, "could not keep a hint; the owner relies on repair");
                }
            }
        }
        self.metrics.hints_pending.set(self.hints.len() as u64);
    }

    fn load_hints(&mut self) {
        match self.engine.scan_prefix(&[HINT_PREFIX]) {
            Ok(entries) => {
                for (raw, _) in entries {
                    match parse_hint_key(&raw) {
                        Some((owner, key)) => self.hints.insert(owner, key),
                        None => tracing::warn!("skipping an unreadable hint entry"),
                    }
                }
                if !self.hints.is_empty() {
                    tracing::info!(hints = self.hints.len(), "hints loaded");
                }
            }
            Err(e) => tracing::error!(error = %e, "could not load hints"),
        }
        self.hints.loaded = true;
        self.metrics.hints_pending.set(self.hints.len() as u64);
    }

    /// Starts a delivery round for every owner that is alive and has hints.
    fn deliver_hints(&mut self, ctx: &mut Context<Self>) {
        let owners: Vec<NodeId> = self.hints.owners().collect();
        for owner in owners {
            let alive = self
                .members
                .get(&owner)
                .is_some_and(|m| m.state == MemberState::Alive);
            if !alive || self.delivering.contains(&owner) {
                continue;
            }
            let Some(addr) = self.addr_of(owner) else {
                continue;
            };
            let mut batch = Vec::new();
            let mut stale = Vec::new();
            let mut moved = Vec::new();
            for key in self.hints.keys_for(owner).take(HINT_BATCH) {
                let home = self.placement(key).home;
                if let Some(owners) = moved_to(owner, &home, self.config.local_id) {
                    moved.push((key.clone(), owners));
                    continue;
                }
                match self.read_local(key) {
                    Ok(object) if !object.is_empty() => batch.push((key.clone(), object)),
                    Ok(_) => stale.push(key.clone()),
                    Err(e) => tracing::warn!(error = %e, "cannot read a hinted key"),
                }
            }
            for key in stale {
                self.drop_hint(owner, &key);
            }
            for (key, owners) in moved {
                self.keep_hints(&key, &owners);
                self.drop_hint(owner, &key);
            }
            if batch.is_empty() {
                continue;
            }
            self.delivering.insert(owner);
            let peers = self.peers.clone();
            let store = ctx.address();
            let timeout = self.config.replica_timeout;
            actix::spawn(async move {
                for (key, object) in batch {
                    let delivered = object.dots();
                    let request = ReplicaRequest::Write {
                        key: key.clone(),
                        object,
                        hint_for: None,
                    };
                    match peers.request_within(addr, &request, timeout).await {
                        Ok(ReplicaReply::Stored) => store.do_send(HintDelivered {
                            owner,
                            key,
                            delivered,
                        }),
                        other => {
                            tracing::debug!(%owner, outcome = ?other.err(), "hint delivery stopped; will retry");
                            break;
                        }
                    }
                }
                store.do_send(DeliveryRoundOver(owner));
            });
        }
    }

    fn drop_hint(&mut self, owner: NodeId, key: &str) {
        if let Err(e) = self.engine.delete(&hint_key(owner, key)) {
            tracing::warn!(error = %e, "could not delete a delivered hint; it will be sent again");
            return;
        }
        self.hints.remove(owner, key);
        self.metrics.hints_pending.set(self.hints.len() as u64);
    }

    fn on_hint_delivered(&mut self, msg: HintDelivered) {
        self.metrics.hints_delivered.inc();
        self.drop_hint(msg.owner, &msg.key);
        let is_home = self.placement(&msg.key).is_home(self.config.local_id);
        if !drops_copy_after_delivery(is_home, self.hints.any_for_key(&msg.key)) {
            return;
        }
        if let Err(e) = self.drop_local_if(&msg.key, &msg.delivered) {
            tracing::warn!(error = %e, "could not drop a handed-over copy");
        }
    }

    // ---- requests from other nodes -------------------------------------

    fn refuse_peer(&mut self, from: NodeId, refusal: PeerRefusal, kind: &str) -> ReplicaReply {
        let reason = match refusal {
            PeerRefusal::NotMember => {
                self.metrics.peer_requests_refused_not_member.inc();
                format!("{from} is not a member of this cluster")
            }
            PeerRefusal::Role => {
                self.metrics.peer_requests_refused_role.inc();
                format!("a {kind} request is not {from}'s to make")
            }
            PeerRefusal::TooLarge => {
                self.metrics.peer_requests_refused_too_large.inc();
                format!(
                    "a value exceeds the limit of {} bytes",
                    self.config.max_value_bytes
                )
            }
        };
        if self.refusal_log.allow(from, Instant::now()) {
            tracing::warn!(peer = %from, %reason, "refused a peer request (logged once a minute per peer)");
        }
        ReplicaReply::Refused(reason)
    }

    fn serve_peer(
        &mut self,
        from: NodeId,
        request: ReplicaRequest,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<ReplicaReply> {
        self.metrics.kv_replica_requests.inc();
        let judge = PeerJudge {
            local_id: self.config.local_id,
            members: &self.members,
            ring: &self.ring,
            replication: &self.config.replication,
            max_value_bytes: self.config.max_value_bytes,
        };
        if let Some(refusal) = judge.judge(from, &request) {
            return ready(self.refuse_peer(from, refusal, request.kind()));
        }
        let max_key_bytes = self.config.max_key_bytes;
        let valid = |key: &str| Key::new(key, max_key_bytes).is_ok();
        let reply = match request {
            ReplicaRequest::Read { key } if valid(&key) => {
                let this = &*self;
                match contain_panic("store", ctx, || this.read_local(&key)) {
                    Some(Ok(object)) => ReplicaReply::Object(object),
                    Some(Err(e)) => ReplicaReply::Refused(e.to_string()),
                    None => ReplicaReply::Refused(StoreError::Restarting.to_string()),
                }
            }
            // A plain write is for a home replica (a stand-in gets a hint):
            // one from a coordinator whose ring is a moment behind must
            // not leave a copy where the key no longer lives.
            ReplicaRequest::Write {
                key,
                hint_for: None,
                ..
            } if valid(&key) && !self.is_home_now(&key) => {
                ReplicaReply::Refused("not a home replica of this key".into())
            }
            ReplicaRequest::Write {
                key,
                object,
                hint_for,
            } if valid(&key) => {
                let this = &*self;
                match contain_panic("store", ctx, || this.merge_local(&key, &object)) {
                    Some(Ok((_, change))) => {
                        if let Some(change) = change {
                            self.note_change(change);
                        }
                        if let Some(owner) = hint_for.filter(|_| self.config.hinted_handoff) {
                            self.keep_hints(&key, &[owner]);
                        }
                        ReplicaReply::Stored
                    }
                    Some(Err(e)) => ReplicaReply::Refused(e.to_string()),
                    None => ReplicaReply::Refused(StoreError::Restarting.to_string()),
                }
            }
            ReplicaRequest::Coordinate {
                key,
                context,
                payload,
                write_quorum,
            } if valid(&key) => {
                let write = ClientWrite {
                    key,
                    context,
                    payload,
                    quorum: write_quorum,
                };
                let written = self.coordinate_write(write, true, ctx);
                return Box::pin(async move {
                    match written.await {
                        Ok(done) => ReplicaReply::Written(Ok(done)),
                        Err(StoreError::WriteQuorum(shortfall)) => {
                            ReplicaReply::Written(Err(shortfall))
                        }
                        Err(StoreError::UnknownContext {
                            every_home_answered,
                        }) => ReplicaReply::UnknownContext {
                            every_home_answered,
                        },
                        Err(StoreError::TooManySiblings { siblings, limit }) => {
                            ReplicaReply::TooManySiblings { siblings, limit }
                        }
                        Err(StoreError::ObjectTooLarge { size, limit }) => {
                            ReplicaReply::ObjectTooLarge { size, limit }
                        }
                        Err(e) => ReplicaReply::Refused(e.to_string()),
                    }
                });
            }
            ReplicaRequest::Ping => ReplicaReply::Stored,
            ReplicaRequest::WriteBatch { objects } => self.merge_batch(objects, None),
            ReplicaRequest::HandOver { leaving, objects } => {
                self.merge_batch(objects, Some(leaving))
            }
            ReplicaRequest::TreeBranches { pair } => self.tree_branches(pair),
            ReplicaRequest::TreeLeaves { pair, branches } => self.tree_leaves(pair, &branches),
            ReplicaRequest::ExchangeBuckets { pair, buckets } => {
                self.exchange_buckets(pair, buckets)
            }
            ReplicaRequest::Purge { key, dots } if valid(&key) => {
                let dots: BTreeSet<Dot> = dots.into_iter().collect();
                match self.purge_local(&key, &dots) {
                    Ok(_) => ReplicaReply::Stored,
                    Err(e) => ReplicaReply::Refused(e.to_string()),
                }
            }
            _ => ReplicaReply::Refused("invalid key".into()),
        };
        Box::pin(async move { reply })
    }
}

fn ready<T: 'static>(value: T) -> ResponseFuture<T> {
    Box::pin(async move { value })
}

/// A change to this node's copy of a key, as the hash trees see it: the
/// entry hash before and after (`None`: no copy).
#[derive(Debug)]
struct Change {
    key: String,
    before: Option<u64>,
    after: Option<u64>,
}

impl Change {
    fn entry(key: &str, object: &Object) -> Option<u64> {
        (!object.is_empty()).then(|| entry_hash(key, object))
    }
}

/// Hands a client write to the first home replica that takes it; if none
/// does, nothing was stored anywhere.
async fn forward(
    peers: ReplicaClient,
    reachability: Arc<Reachability>,
    homes: Vec<(NodeId, SocketAddr)>,
    timeout: Duration,
    write: ClientWrite,
) -> Result<Written, StoreError> {
    let request = ReplicaRequest::Coordinate {
        key: write.key.clone(),
        context: write.context.clone(),
        payload: write.payload.clone(),
        write_quorum: write.quorum,
    };
    for (node, addr) in homes {
        let outcome = peers.request_within(addr, &request, timeout).await;
        reachability.observe(node, &outcome, Instant::now());
        match outcome {
            Ok(ReplicaReply::Written(Ok(written))) => return Ok(written),
            Ok(ReplicaReply::Written(Err(shortfall))) => {
                return Err(StoreError::WriteQuorum(shortfall))
            }
            // Another home replica would judge the write the same way.
            Ok(ReplicaReply::UnknownContext {
                every_home_answered,
            }) => {
                return Err(StoreError::UnknownContext {
                    every_home_answered,
                })
            }
            Ok(ReplicaReply::TooManySiblings { siblings, limit }) => {
                return Err(StoreError::TooManySiblings { siblings, limit })
            }
            Ok(ReplicaReply::ObjectTooLarge { size, limit }) => {
                return Err(StoreError::ObjectTooLarge { size, limit })
            }
            // Refused, or never sent: the next home replica may take it.
            Ok(other) => tracing::debug!(%node, reply = ?other, "home replica did not coordinate"),
            Err(e @ (PeerError::Connect { .. } | PeerError::Refused(_))) => {
                tracing::debug!(%node, error = %e, "home replica unreachable to coordinate");
            }
            // It may have versioned and stored the write: asking another
            // home replica would version it a second time, a duplicate
            // that outlives the writes superseding the first.
            Err(e) => {
                tracing::debug!(%node, error = %e, "home replica did not answer; the write's fate is unknown");
                return Err(StoreError::WriteUnconfirmed);
            }
        }
    }
    Err(StoreError::NoHomeReachable)
}

/// One write's replication to the other replicas, after the coordinator
/// stored it. Replies once `needed` copies exist (the coordinator's
/// counts), then lets the slower replicas finish.
struct FanOut {
    peers: ReplicaClient,
    reachability: Arc<Reachability>,
    timeout: Duration,
    key: String,
    object: Object,
    store: Addr<Store>,
    local_id: NodeId,
}

impl FanOut {
    /// Drives a [`WriteRound`]: sends what it says, feeds it each outcome,
    /// answers and keeps hints when it says so.
    async fn run(
        self,
        targets: Vec<(Target, SocketAddr)>,
        spares: Vec<(NodeId, SocketAddr)>,
        needed: usize,
        context: VersionVector,
        reply: oneshot::Sender<Result<Written, StoreError>>,
    ) {
        let mut reply = Some(reply);
        let addrs: HashMap<NodeId, SocketAddr> = targets
            .iter()
            .map(|(t, a)| (t.node, *a))
            .chain(spares.iter().copied())
            .collect();
        let target_list: Vec<Target> = targets.iter().map(|(t, _)| *t).collect();
        let spare_list: Vec<NodeId> = spares.iter().map(|(n, _)| *n).collect();
        let (mut round, first) =
            WriteRound::start(self.local_id, &target_list, &spare_list, needed);
        let mut steps: std::collections::VecDeque<WriteStep> = first.into();
        let mut pending = FuturesUnordered::new();
        let send = |target: Target, addr: SocketAddr| {
            let request = ReplicaRequest::Write {
                key: self.key.clone(),
                object: self.object.clone(),
                hint_for: target.hint_for,
            };
            let peers = self.peers.clone();
            let reachability = self.reachability.clone();
            let timeout = self.timeout;
            async move {
                let outcome = peers.request_within(addr, &request, timeout).await;
                reachability.observe(target.node, &outcome, Instant::now());
                (target, stored(outcome))
            }
        };
        loop {
            while let Some(step) = steps.pop_front() {
                match step {
                    WriteStep::Send(target) => match addrs.get(&target.node) {
                        Some(&addr) => pending.push(send(target, addr)),
                        // Every node a round names came with an address;
                        // one without counts as a replica that failed.
                        None => steps.extend(round.on_reply(target, false)),
                    },
                    WriteStep::Answer(Ok(stored_on)) => {
                        answer_write(&mut reply, Ok((&context, &stored_on)))
                    }
                    WriteStep::Answer(Err(shortfall)) => answer_write(&mut reply, Err(shortfall)),
                    WriteStep::KeepHints(owners) => self.store.do_send(KeepHints {
                        key: self.key.clone(),
                        owners,
                    }),
                }
            }
            match pending.next().await {
                Some((target, ok)) => steps.extend(round.on_reply(target, ok)),
                None => break,
            }
        }
    }
}

fn stored(outcome: Result<ReplicaReply, PeerError>) -> bool {
    match outcome {
        Ok(ReplicaReply::Stored) => true,
        Ok(other) => {
            tracing::debug!(reply = ?other, "replica did not store");
            false
        }
        Err(e) => {
            tracing::debug!(error = %e, "replica unreachable");
            false
        }
    }
}

fn answer_write(
    reply: &mut Option<oneshot::Sender<Result<Written, StoreError>>>,
    outcome: Result<(&VersionVector, &Vec<NodeId>), QuorumShortfall>,
) {
    if let Some(reply) = reply.take() {
        let _ = reply.send(match outcome {
            Ok((context, stored_on)) => Ok(Written {
                context: context.clone(),
                stored_on: stored_on.clone(),
            }),
            Err(shortfall) => Err(StoreError::WriteQuorum(shortfall)),
        });
    }
}

/// One read's gathering of replica copies. Replies with the merge once
/// `needed` replicas answered, then waits for the rest and repairs every
/// replica whose copy lacked something.
struct Gather {
    peers: ReplicaClient,
    reachability: Arc<Reachability>,
    timeout: Duration,
    key: String,
    /// The key's home replicas: only their answers can tell that a key
    /// does not exist.
    home: Vec<NodeId>,
    store: Addr<Store>,
    metrics: SharedMetrics,
    local_id: NodeId,
}

impl Gather {
    /// Drives a [`ReadRound`]: asks whom it says, feeds it each copy or
    /// failure, answers when it says so, then carries out its repairs.
    async fn run(
        self,
        local: Option<Object>,
        remote: Vec<(NodeId, SocketAddr)>,
        spares: Vec<(NodeId, SocketAddr)>,
        needed: usize,
        reply: oneshot::Sender<Result<ReadOutcome, StoreError>>,
    ) {
        let mut reply = Some(reply);
        let addrs: HashMap<NodeId, SocketAddr> =
            remote.iter().chain(spares.iter()).copied().collect();
        let remote: Vec<NodeId> = remote.iter().map(|(n, _)| *n).collect();
        let spares: Vec<NodeId> = spares.iter().map(|(n, _)| *n).collect();
        let (mut round, first) = ReadRound::start(
            self.local_id,
            local,
            &remote,
            &spares,
            self.home.clone(),
            needed,
        );
        let mut steps: std::collections::VecDeque<ReadStep> = first.into();
        let mut pending = FuturesUnordered::new();
        let mut repairs = FuturesUnordered::new();
        let read = |node: NodeId, addr: SocketAddr| {
            let request = ReplicaRequest::Read {
                key: self.key.clone(),
            };
            let peers = self.peers.clone();
            let reachability = self.reachability.clone();
            let timeout = self.timeout;
            async move {
                let outcome = peers.request_within(addr, &request, timeout).await;
                reachability.observe(node, &outcome, Instant::now());
                (node, outcome)
            }
        };
        loop {
            while let Some(step) = steps.pop_front() {
                match step {
                    ReadStep::Ask(node) => match addrs.get(&node) {
                        Some(&addr) => pending.push(read(node, addr)),
                        // Every node a round names came with an address;
                        // one without counts as a replica that failed.
                        None => steps.extend(round.on_reply(node, None)),
                    },
                    ReadStep::Answer(answer) => {
                        let outcome = match answer {
                            ReadAnswer::Found(object) => Ok(object),
                            ReadAnswer::NoHome { answered, needed } => {
                                self.metrics.kv_reads_without_home.inc();
                                Err(StoreError::NoHomeAnswered { answered, needed })
                            }
                            ReadAnswer::Short { answered, needed } => {
                                Err(StoreError::ReadQuorum(QuorumShortfall {
                                    needed,
                                    answered,
                                    stored_on: Vec::new(),
                                }))
                            }
                        };
                        answer_read(&mut reply, outcome);
                    }
                    ReadStep::Repair { node, object } => {
                        self.metrics.kv_read_repairs.inc();
                        if node == self.local_id {
                            self.store.do_send(MergeLocal {
                                key: self.key.clone(),
                                object,
                            });
                        } else if let Some(&addr) = addrs.get(&node) {
                            let request = ReplicaRequest::Write {
                                key: self.key.clone(),
                                object,
                                hint_for: None,
                            };
                            let (peers, timeout) = (self.peers.clone(), self.timeout);
                            repairs.push(async move {
                                if let Err(e) = peers.request_within(addr, &request, timeout).await
                                {
                                    tracing::debug!(%node, error = %e, "read repair failed");
                                }
                            });
                        }
                    }
                }
            }
            match pending.next().await {
                Some((node, outcome)) => {
                    let copy = match outcome {
                        Ok(ReplicaReply::Object(object)) => Some(object),
                        other => {
                            tracing::debug!(%node, outcome = ?other.err(), "replica read failed");
                            None
                        }
                    };
                    steps.extend(round.on_reply(node, copy));
                }
                None => break,
            }
        }
        while repairs.next().await.is_some() {}
    }
}

fn answer_read(
    reply: &mut Option<oneshot::Sender<Result<ReadOutcome, StoreError>>>,
    outcome: Result<Object, StoreError>,
) {
    if let Some(reply) = reply.take() {
        let _ = reply.send(outcome.map(|object| ReadOutcome { object }));
    }
}

impl Actor for Store {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        if !self.hints.loaded {
            self.load_hints();
            self.load_settled_ring();
        }
        self.start_anti_entropy(ctx);
        ctx.run_interval(self.config.hint_interval, |store, ctx| {
            store.deliver_hints(ctx)
        });
        ctx.run_interval(self.config.replica_timeout, |store, _ctx| {
            store.ping_set_aside()
        });
        tracing::debug!(engine = self.engine.name(), "store started");
    }
}

impl Supervised for Store {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.metrics.actor_restarts_store.inc();
        // Rounds under way belonged to the old context's futures.
        self.delivering.clear();
        tracing::warn!("store actor restarting");
    }
}

impl Handler<Get> for Store {
    type Result = ResponseFuture<Result<ReadOutcome, StoreError>>;

    fn handle(&mut self, msg: Get, ctx: &mut Self::Context) -> Self::Result {
        self.coordinate_read(msg.key, msg.quorum, ctx)
    }
}

impl Handler<Put> for Store {
    type Result = ResponseFuture<Result<Written, StoreError>>;

    fn handle(&mut self, msg: Put, ctx: &mut Self::Context) -> Self::Result {
        self.metrics.kv_puts.inc();
        let payload = Payload::Value {
            content_type: msg.content_type,
            bytes: msg.value,
        };
        self.client_write(msg.key, msg.supersedes, payload, msg.quorum, ctx)
    }
}

impl Handler<Delete> for Store {
    type Result = ResponseFuture<Result<Written, StoreError>>;

    fn handle(&mut self, msg: Delete, ctx: &mut Self::Context) -> Self::Result {
        self.metrics.kv_deletes.inc();
        let payload = Payload::Tombstone {
            at_ms: anti_entropy::now_ms(),
        };
        self.client_write(msg.key, msg.supersedes, payload, msg.quorum, ctx)
    }
}

impl Handler<ContextLookedUp> for Store {
    type Result = ResponseFuture<Result<Written, StoreError>>;

    fn handle(&mut self, msg: ContextLookedUp, ctx: &mut Self::Context) -> Self::Result {
        let ContextLookedUp {
            write,
            found,
            every_home_answered,
            forwarded,
        } = msg;
        // What the other home replicas hold is this copy's to have too; the
        // merge gives back the copy it leaves, read once.
        let merged = {
            let this = &*self;
            contain_panic("store", ctx, || this.merge_local(&write.key, &found))
        };
        let covered = match merged {
            Some(Ok((object, change))) => {
                if let Some(change) = change {
                    self.note_change(change);
                }
                object.clock().descends(&write.context)
            }
            Some(Err(e)) => return ready(self.count_failure(Err(e))),
            None => return ready(Err(StoreError::Restarting)),
        };
        if !covered {
            self.metrics.kv_writes_refused_unknown_context.inc();
            return ready(Err(StoreError::UnknownContext {
                every_home_answered,
            }));
        }
        self.coordinate_write_within(write, forwarded, true, ctx)
    }
}

impl Handler<Settled> for Store {
    type Result = ResponseFuture<Result<Written, StoreError>>;

    fn handle(&mut self, msg: Settled, ctx: &mut Self::Context) -> Self::Result {
        self.coordinate_write(msg.0, false, ctx)
    }
}

impl Handler<LocalCopy> for Store {
    type Result = Result<Object, StoreError>;

    fn handle(&mut self, msg: LocalCopy, _ctx: &mut Self::Context) -> Self::Result {
        self.read_local(msg.key.as_str())
    }
}

impl Handler<FromPeer> for Store {
    type Result = ResponseFuture<ReplicaReply>;

    fn handle(&mut self, msg: FromPeer, ctx: &mut Self::Context) -> Self::Result {
        self.serve_peer(msg.from, msg.request, ctx)
    }
}

impl Handler<MembersChanged> for Store {
    type Result = ();

    fn handle(&mut self, msg: MembersChanged, ctx: &mut Self::Context) {
        let members: HashMap<NodeId, Member> =
            msg.members.iter().map(|m| (m.id, m.clone())).collect();
        // A member whose record changed (back alive, a new incarnation after
        // a healed partition or a restart) is worth asking again at once.
        for (id, member) in &members {
            let before = self.members.get(id);
            if before.is_none_or(|b| (b.state, b.incarnation) != (member.state, member.incarnation))
            {
                self.reachability.forget(*id);
            }
        }
        self.members = members;
        self.on_ring(msg.ring, ctx);
    }
}

impl Handler<KeepHints> for Store {
    type Result = ();

    fn handle(&mut self, msg: KeepHints, _ctx: &mut Self::Context) {
        self.keep_hints(&msg.key, &msg.owners);
    }
}

impl Handler<MergeLocal> for Store {
    type Result = ();

    fn handle(&mut self, msg: MergeLocal, _ctx: &mut Self::Context) {
        match self.merge_local(&msg.key, &msg.object) {
            Ok((_, Some(change))) => self.note_change(change),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "read repair of the local copy failed"),
        }
    }
}

impl Handler<HintDelivered> for Store {
    type Result = ();

    fn handle(&mut self, msg: HintDelivered, _ctx: &mut Self::Context) {
        self.on_hint_delivered(msg);
    }
}

impl Handler<DeliveryRoundOver> for Store {
    type Result = ();

    fn handle(&mut self, msg: DeliveryRoundOver, _ctx: &mut Self::Context) {
        self.delivering.remove(&msg.0);
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<super::fault::InjectFault> for Store {
    type Result = ();

    fn handle(&mut self, msg: super::fault::InjectFault, ctx: &mut Self::Context) {
        use super::fault::Fault;
        use actix::ActorContext;
        match msg.0 {
            Fault::Stop | Fault::SocketError => ctx.stop(),
            Fault::Panic => {
                contain_panic("store", ctx, || panic!("injected panic"));
            }
        }
    }
}
