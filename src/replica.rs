//! The data path between nodes: what one node asks another about a key,
//! and what comes back.
//!
//! Owns the request and reply types the node-to-node channel (`peer`)
//! carries, and the outcome of a coordinated write; and the one request
//! that is not about data, a keyring change, which travels the same
//! authenticated channel. Pure data with serde
//! derives; it must never hold logic about when to send them (that is the
//! Store's) or how bytes move (that is `peer`'s).

use serde::{Deserialize, Serialize};

use crate::data::condition::Condition;
use crate::data::handoff::HandoffView;
use crate::key::Key;
use crate::keyring::{KeyringChange, KeyringView};
use crate::merkle::BucketEntries;
use crate::node_id::NodeId;
use crate::replication::Quorum;
use crate::version::{Dot, Object, Payload, VersionVector};

/// The most items one `WriteEach` carries: a client batch's size.
pub const MAX_WRITE_EACH: usize = 1000;

/// The most keys one replica lists per request.
pub const MAX_SCAN_LIMIT: usize = 1000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ReplicaRequest {
    /// This replica's copy of a key (empty if it has none).
    Read { key: Key },
    /// Are you there? Sent to a peer this node set aside after a request
    /// to it got no answer; any answer takes it back.
    Ping,
    /// Merge `object` into this replica's copy. With `hint_for`, this node
    /// stands in for that home replica and keeps a hint to hand it over.
    Write {
        key: Key,
        object: Object,
        hint_for: Option<NodeId>,
    },
    /// A client's write, forwarded to a home replica to coordinate: it
    /// versions the write against its own copy, superseding exactly the
    /// versions the write's context names, then replicates it until
    /// `needed` copies exist (resolved by the node the client asked).
    Coordinate { write: ClientWrite, needed: usize },
    /// Many keys at once, merged like `Write`s: data handed over after a
    /// ring change, or sent by anti-entropy. Keys the receiver is not a
    /// home replica of are refused, not stored.
    WriteBatch { objects: Vec<(Key, Object)> },
    /// Anti-entropy, step 1: the branch hashes of the tree the receiver
    /// keeps over the keys it shares with `pair` (the sender).
    TreeBranches { pair: NodeId },
    /// Step 2: the leaf hashes under these branches.
    TreeLeaves { pair: NodeId, branches: Vec<u16> },
    /// Step 3: the sender's entries in buckets whose leaves differ; the
    /// receiver answers with its versions of the keys that differ and the
    /// keys it wants the sender's versions of.
    ExchangeBuckets {
        pair: NodeId,
        buckets: Vec<BucketEntries>,
    },
    /// Drop this key if its copy is exactly these tombstones: every home
    /// replica holds them and their grace period has passed.
    Purge { key: Key, dots: Vec<Dot> },
    /// Keys handed over by `leaving` before it leaves the cluster: the
    /// receiver also takes those it will be a home replica of once
    /// `leaving` is gone, though its own ring may still hold `leaving`.
    HandOver {
        leaving: NodeId,
        objects: Vec<(Key, Object)>,
    },
    /// Many `Write`s in one request (a client's batch): each item merged
    /// as a `Write` of its own would be, with one storage write for all.
    /// At most [`MAX_WRITE_EACH`] items.
    WriteEach {
        items: Vec<(Key, Object, Option<NodeId>)>,
    },
    /// Listing, one replica's part: up to `limit` (at most
    /// [`MAX_SCAN_LIMIT`]) of the keys it holds that start with `prefix`
    /// and sort after `start_after`, in key order, with their copies (the
    /// values' bytes left out unless `with_values`).
    Scan {
        prefix: String,
        start_after: Option<String>,
        limit: usize,
        with_values: bool,
    },
    /// Tell the sender once when this replica's copy of `key` next
    /// changes (a client watches the key on the sender, which is not one
    /// of its homes).
    Watch { key: Key },
    /// The receiver's copy of `key`, which the sender watches, changed.
    Changed { key: Key },
    /// `dnd keyring` on another member: apply this change to the
    /// receiver's keyring, or with `None` only say what it holds.
    Keyring(Option<KeyringChange>),
    /// What the receiver holds and owes, for `/cluster/status`.
    Stats,
}

impl ReplicaRequest {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ReplicaRequest::Read { .. } => "read",
            ReplicaRequest::Ping => "ping",
            ReplicaRequest::Write { .. } => "write",
            ReplicaRequest::Coordinate { .. } => "coordinate",
            ReplicaRequest::WriteBatch { .. } => "write-batch",
            ReplicaRequest::TreeBranches { .. } => "tree-branches",
            ReplicaRequest::TreeLeaves { .. } => "tree-leaves",
            ReplicaRequest::ExchangeBuckets { .. } => "exchange-buckets",
            ReplicaRequest::Purge { .. } => "purge",
            ReplicaRequest::HandOver { .. } => "hand-over",
            ReplicaRequest::WriteEach { .. } => "write-each",
            ReplicaRequest::Scan { .. } => "scan",
            ReplicaRequest::Watch { .. } => "watch",
            ReplicaRequest::Changed { .. } => "changed",
            ReplicaRequest::Keyring(_) => "keyring",
            ReplicaRequest::Stats => "stats",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ReplicaReply {
    Object(Object),
    Stored,
    Written(Result<Written, QuorumShortfall>),
    StoredBatch {
        stored: usize,
        refused: usize,
    },
    Branches(Vec<u64>),
    Leaves(Vec<(u16, Vec<u64>)>),
    Exchange {
        objects: Vec<(Key, Object)>,
        wanted: Vec<Key>,
    },
    /// Per item of a `WriteEach`, whether it is stored here.
    StoredEach(Vec<bool>),
    /// A replica's part of a listing: the keys found, in order, with their
    /// copies, and the last key it passed if it may hold more after it
    /// (`None`: it holds nothing more within the prefix).
    Scanned {
        copies: Vec<(Key, Object)>,
        more_after: Option<Key>,
    },
    /// The request was understood but not served (a key this node does
    /// not home, a store that failed, a sender that is not a member or acts
    /// outside its role); the reason is for logs.
    Refused(String),
    /// The receiver's keyring after a keyring request, or why it refused.
    Keyring(Result<KeyringView, String>),
    /// A forwarded write whose context names versions no home replica
    /// asked holds; nothing was stored.
    UnknownContext {
        every_home_answered: bool,
    },
    /// A forwarded conditional write whose condition did not hold; nothing
    /// was stored. `found` is the context of what the check read.
    PreconditionFailed {
        found: VersionVector,
    },
    /// A forwarded write that would leave more siblings than the limit;
    /// nothing was stored.
    TooManySiblings {
        siblings: usize,
        limit: usize,
    },
    /// A forwarded write that would leave an object too large to
    /// replicate; nothing was stored.
    ObjectTooLarge {
        size: usize,
        limit: usize,
    },
    /// The answer to `Stats`.
    Stats(Box<NodeStats>),
}

/// What one node holds and owes, as an operator sees it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStats {
    /// Keys held, tombstones included until they are collected
    /// (approximate: the storage engine's own count).
    pub keys: u64,
    /// Bytes the storage engine holds (on disk: its files).
    pub bytes: u64,
    /// Hints kept for other nodes, not yet handed over.
    pub hints_pending: u64,
    pub handoff: HandoffView,
}

/// A client's write: one shape from the HTTP layer to the home replica
/// that versions it, forwarded as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientWrite {
    pub key: Key,
    /// What it supersedes. A [`Supersedes::FoundByQuorumRead`] (or a conditional one) is settled
    /// into [`Supersedes::Seen`] by a quorum read before it is versioned.
    pub supersedes: Supersedes,
    pub payload: Payload,
}

/// Which versions of a key a client write supersedes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Those a quorum read finds, if they meet the condition
    /// (`If-None-Match: *`, `If-Match`); else nothing is written and the
    /// client is told what was found (`data::condition`).
    IfFoundByQuorumRead {
        condition: Condition,
        read_quorum: Option<Quorum>,
    },
}

/// A write that reached its quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The causal context of the new version: what its writer saw, plus the
    /// write itself. A client that sends it back supersedes exactly this.
    pub context: VersionVector,
    /// The nodes that stored it before the reply (at least the quorum).
    pub stored_on: Vec<NodeId>,
}

/// Too few replicas answered. For a write, what was stored stays stored
/// (and will spread by hints and repair); the client is told where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumShortfall {
    pub needed: usize,
    pub answered: usize,
    pub stored_on: Vec<NodeId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request naming a key no client could use does not decode, so it
    /// never reaches the Store: the key is checked once, at the edge.
    #[test]
    fn a_request_with_an_invalid_key_does_not_decode() {
        let request = ReplicaRequest::Read {
            key: Key::new("k").unwrap(),
        };
        let bytes = rmp_serde::to_vec(&request).unwrap();
        assert!(rmp_serde::from_slice::<ReplicaRequest>(&bytes).is_ok());
        // The same request with the one-byte string "k" made empty.
        let at = bytes
            .windows(2)
            .position(|w| w == [0xa1, b'k'])
            .expect("msgpack writes \"k\" as 0xa1 'k'");
        let mut emptied = bytes[..at].to_vec();
        emptied.push(0xa0);
        emptied.extend_from_slice(&bytes[at + 2..]);
        assert!(rmp_serde::from_slice::<ReplicaRequest>(&emptied).is_err());
    }
}
