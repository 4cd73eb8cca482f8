//! What the Store shows the rest of the node: how it is set up, the
//! messages it answers (from HTTP, the peer server and operators) and the
//! errors they may end in.
//!
//! Owns those types only; no behaviour beyond describing them.

use std::time::Duration;

use actix::Message;
use thiserror::Error;

use crate::explain::Trace;
use crate::key::Key;
use crate::node_id::NodeId;
pub use crate::replica::{ClientWrite, Supersedes};
use crate::replica::{QuorumShortfall, ReplicaReply, ReplicaRequest, Written};
use crate::replication::{Quorum, Replication};
use crate::storage::StorageError;
use crate::version::{CorruptObject, Object, VersionError, VersionVector};

/// How a Store is set up; fixed for its life.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub local_id: NodeId,
    pub replication: Replication,
    /// How long one replica may take before it counts as failed.
    pub replica_timeout: Duration,
    /// How often hints are offered to their owners.
    pub hint_interval: Duration,
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
    /// Only a home replica versions a write (`data::coordinate::route_write`).
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
    /// A conditional write whose condition the quorum read did not meet;
    /// nothing was stored.
    #[error("the condition does not hold for the key's current versions; nothing was written")]
    PreconditionFailed { found: VersionVector },
    /// A listing whose answers did not hold R homes of every token range;
    /// `answered` is `None` when it was refused before asking.
    #[error(
        "a listing needs {needed} replicas of every token range; too few are reachable or answered"
    )]
    ListUnavailable {
        needed: usize,
        answered: Option<usize>,
    },
    /// This node holds as many open watches as it takes.
    #[error("this node holds {limit} open watches, as many as it takes; try again later or through another node")]
    TooManyWatches { limit: usize },
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
    /// Filled with what the read did (`?explain=true`); the answer then
    /// waits for every replica asked, not only the first R.
    pub trace: Option<Trace>,
    /// The client request's span: the Store's log lines about the read
    /// carry its request id.
    pub span: tracing::Span,
}

#[derive(Debug)]
pub struct ReadOutcome {
    /// Every version no other supersedes, tombstones included; empty when
    /// no replica has heard of the key.
    pub object: Object,
}

/// A client write of a value.
#[derive(Message, Debug)]
#[rtype(result = "Result<Written, StoreError>")]
pub struct Put {
    pub write: ClientWrite,
    /// The copies it needs (`?w=`), if the client chose.
    pub quorum: Option<Quorum>,
    /// Filled with what the write did (`?explain=true`); the answer then
    /// waits for every replica asked, not only the first W.
    pub trace: Option<Trace>,
    /// The client request's span (as for [`Get`]).
    pub span: tracing::Span,
}

/// A client delete: a write whose payload is a tombstone, versioned and
/// replicated like a value.
#[derive(Message, Debug)]
#[rtype(result = "Result<Written, StoreError>")]
pub struct Delete {
    pub write: ClientWrite,
    pub quorum: Option<Quorum>,
    pub trace: Option<Trace>,
    pub span: tracing::Span,
}

/// What this node holds and owes (`/cluster/status`; other nodes ask it
/// with `ReplicaRequest::Stats`).
#[derive(Message, Debug)]
#[rtype(result = "crate::replica::NodeStats")]
pub struct LocalStats;

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
