//! Versions of a value: every write is a *sibling* named by a dot (the
//! coordinating node and its counter) and carrying the causal context the
//! client had seen (dotted version vectors, Preguiça et al.).
//!
//! Owns the rules that make dnd never drop a write silently: a write
//! supersedes exactly the siblings its context covers; concurrent writes
//! stay side by side; merging two replicas keeps every sibling that no other
//! sibling's context covers. Plain vector clocks compared by dominance can
//! mistake a concurrent write for an old one when both went through the same
//! coordinator; dots cannot. Pure: no I/O, no clocks, no actors.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::node_id::NodeId;

/// The most entries a client context may carry. Only nodes that coordinate
/// writes to a key appear in its clock, and only replicas coordinate, so a
/// real context is far smaller.
pub const MAX_CONTEXT_ENTRIES: usize = 64;

/// One write: the node that coordinated it and that node's counter for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub node: NodeId,
    pub counter: u64,
}

/// For each node, how many of its writes are known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<NodeId, u64>);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ContextError {
    #[error("the context is not URL-safe base64")]
    NotBase64,
    #[error("the context does not decode as a dnd context")]
    Malformed,
    #[error("the context has more than {MAX_CONTEXT_ENTRIES} entries")]
    TooLarge,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("the context claims a counter that cannot be exceeded")]
    CounterOverflow,
}

impl VersionVector {
    pub fn new() -> Self {
        VersionVector::default()
    }

    pub fn get(&self, node: NodeId) -> u64 {
        self.0.get(&node).copied().unwrap_or(0)
    }

    /// Whether the write `dot` is part of this history.
    pub fn covers(&self, dot: Dot) -> bool {
        self.get(dot.node) >= dot.counter
    }

    pub fn add(&mut self, dot: Dot) {
        let entry = self.0.entry(dot.node).or_insert(0);
        *entry = (*entry).max(dot.counter);
    }

    pub fn join(&mut self, other: &VersionVector) {
        for (&node, &counter) in &other.0 {
            self.add(Dot { node, counter });
        }
    }

    /// Whether this history includes all of `other`.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .0
            .iter()
            .all(|(&node, &counter)| self.get(node) >= counter)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Each node with the count of its writes known, in node order.
    pub fn entries(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.0.iter().map(|(node, counter)| (*node, *counter))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The opaque, URL-safe token clients get in `X-Dnd-Context`.
    pub fn to_context(&self) -> String {
        let pairs: Vec<(u64, u64)> = self.0.iter().map(|(n, c)| (n.as_u64(), *c)).collect();
        // A Vec of integer pairs always encodes.
        let bytes = rmp_serde::to_vec(&pairs).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn from_context(token: &str) -> Result<Self, ContextError> {
        if token.is_empty() {
            return Ok(VersionVector::new());
        }
        if token.len() > MAX_CONTEXT_ENTRIES * 24 {
            return Err(ContextError::TooLarge);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| ContextError::NotBase64)?;
        let pairs: Vec<(u64, u64)> =
            rmp_serde::from_slice(&bytes).map_err(|_| ContextError::Malformed)?;
        if pairs.len() > MAX_CONTEXT_ENTRIES {
            return Err(ContextError::TooLarge);
        }
        let mut vv = VersionVector::new();
        for (node, counter) in pairs {
            vv.add(Dot {
                node: NodeId::from_u64(node),
                counter,
            });
        }
        Ok(vv)
    }
}

/// What a write stored: a value with its content type, or a deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    Value {
        content_type: String,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        /// When the value expires (`?ttl=`), in ms of the wall clock of the
        /// node the client asked; from then on it is read as if deleted
        /// then. Objects stored before TTL existed decode as `None`.
        #[serde(default)]
        expires_at_ms: Option<u64>,
    },
    /// A deletion, stamped with its coordinator's wall clock in ms. The
    /// stamp never orders versions (dots do); it only tells when the
    /// tombstone is old enough to be collected.
    Tombstone { at_ms: u64 },
}

impl Payload {
    /// A value that never expires.
    pub fn value(content_type: impl Into<String>, bytes: Vec<u8>) -> Self {
        Payload::Value {
            content_type: content_type.into(),
            bytes,
            expires_at_ms: None,
        }
    }

    /// When this version stops being a value: a tombstone's stamp, a
    /// value's deadline, or `None` for a value that never expires.
    pub fn gone_at_ms(&self) -> Option<u64> {
        match self {
            Payload::Tombstone { at_ms } => Some(*at_ms),
            Payload::Value { expires_at_ms, .. } => *expires_at_ms,
        }
    }

    /// Whether this is a value a client sees at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        match self {
            Payload::Tombstone { .. } => false,
            Payload::Value { expires_at_ms, .. } => expires_at_ms.is_none_or(|at| now_ms < at),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    pub dot: Dot,
    /// What the writer had seen: the siblings this write superseded.
    pub context: VersionVector,
    pub payload: Payload,
}

/// Everything a replica holds for one key: the siblings no write has
/// superseded yet. A deleted key is an object whose siblings are tombstones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    siblings: Vec<Sibling>,
}

impl Object {
    pub fn new() -> Self {
        Object::default()
    }

    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    /// The history this object holds: what a client that read it has seen.
    pub fn clock(&self) -> VersionVector {
        let mut clock = VersionVector::new();
        for sibling in &self.siblings {
            clock.join(&sibling.context);
            clock.add(sibling.dot);
        }
        clock
    }

    /// The dots of the current siblings; two replicas agree when these do.
    pub fn dots(&self) -> BTreeSet<Dot> {
        self.siblings.iter().map(|s| s.dot).collect()
    }

    /// When every sibling is a tombstone or a value with a deadline: the
    /// latest deletion's stamp or deadline, which may be in the future.
    /// From then on the key is gone, and its copy is collected like a
    /// tombstone once the grace has passed.
    pub fn deleted_at_ms(&self) -> Option<u64> {
        if self.siblings.is_empty() {
            return None;
        }
        self.siblings
            .iter()
            .map(|s| s.payload.gone_at_ms())
            .try_fold(0, |latest, at| at.map(|at| latest.max(at)))
    }

    /// Siblings that hold values (not deletions), expired or not.
    pub fn values(&self) -> impl Iterator<Item = (&Sibling, &str, &[u8])> {
        self.siblings.iter().filter_map(|s| match &s.payload {
            Payload::Value {
                content_type,
                bytes,
                ..
            } => Some((s, content_type.as_str(), bytes.as_slice())),
            Payload::Tombstone { .. } => None,
        })
    }

    /// The values a client sees at `now_ms`: those not deleted and not
    /// expired.
    pub fn live_values(&self, now_ms: u64) -> impl Iterator<Item = (&Sibling, &str, &[u8])> {
        self.values()
            .filter(move |(sibling, _, _)| sibling.payload.is_live(now_ms))
    }

    /// Whether a client sees a value at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.live_values(now_ms).next().is_some()
    }

    /// This object with every value's bytes left out: its versions, content
    /// types and deadlines, enough to tell which keys are live or in
    /// conflict without carrying their values.
    pub fn without_value_bytes(mut self) -> Self {
        for sibling in &mut self.siblings {
            if let Payload::Value { bytes, .. } = &mut sibling.payload {
                bytes.clear();
            }
        }
        self
    }

    /// A write coordinated by `coordinator`: supersedes the siblings
    /// `context` covers and joins the others as a new sibling. Returns the
    /// new write's dot. Its counter is above every one this copy or the
    /// context knows of: right for a coordinator that never lost a copy of
    /// the key; a node that may have (a purge, a handoff) uses
    /// [`Object::write_above`].
    pub fn write(
        &mut self,
        coordinator: NodeId,
        context: &VersionVector,
        payload: Payload,
    ) -> Result<Dot, VersionError> {
        self.write_above(coordinator, 0, context, payload)
    }

    /// [`Object::write`] with the counter also above `issued`: the highest
    /// counter `coordinator` may have issued for any key. A copy this node
    /// no longer holds (its tombstones collected, or handed to the key's
    /// new homes) takes the dots it named with it; issuing one of them
    /// again would make a new write look like one a stale context already
    /// covers, and it would be superseded unseen.
    pub fn write_above(
        &mut self,
        coordinator: NodeId,
        issued: u64,
        context: &VersionVector,
        payload: Payload,
    ) -> Result<Dot, VersionError> {
        let seen = self
            .clock()
            .get(coordinator)
            .max(context.get(coordinator))
            .max(issued);
        let counter = seen.checked_add(1).ok_or(VersionError::CounterOverflow)?;
        let dot = Dot {
            node: coordinator,
            counter,
        };
        self.siblings.retain(|s| !context.covers(s.dot));
        self.siblings.push(Sibling {
            dot,
            context: context.clone(),
            payload,
        });
        Ok(dot)
    }

    /// Folds in what another replica holds. Returns whether this object
    /// changed.
    pub fn merge(&mut self, other: &Object) -> bool {
        let before = self.dots();
        let mut all: BTreeMap<Dot, Sibling> = BTreeMap::new();
        for sibling in self
            .siblings
            .drain(..)
            .chain(other.siblings.iter().cloned())
        {
            all.entry(sibling.dot).or_insert(sibling);
        }
        let superseded: BTreeSet<Dot> = all
            .keys()
            .filter(|&&dot| all.values().any(|s| s.dot != dot && s.context.covers(dot)))
            .copied()
            .collect();
        self.siblings = all
            .into_values()
            .filter(|s| !superseded.contains(&s.dot))
            .collect();
        self.dots() != before
    }

    /// About how many bytes this object takes on the wire or on disk,
    /// without encoding it.
    pub fn approximate_size(&self) -> usize {
        self.siblings
            .iter()
            .map(|s| {
                let payload = match &s.payload {
                    Payload::Value {
                        content_type,
                        bytes,
                        ..
                    } => content_type.len() + bytes.len() + 9,
                    Payload::Tombstone { .. } => 8,
                };
                payload + 24 + s.context.len() * 18
            })
            .sum::<usize>()
            + 4
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![OBJECT_FORMAT_V1];
        // Plain data always encodes into a Vec.
        let _ = rmp_serde::encode::write(&mut out, self);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptObject> {
        match bytes.split_first() {
            Some((&OBJECT_FORMAT_V1, rest)) => {
                rmp_serde::from_slice(rest).map_err(|_| CorruptObject)
            }
            _ => Err(CorruptObject),
        }
    }
}

const OBJECT_FORMAT_V1: u8 = 2;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("a stored object does not decode")]
pub struct CorruptObject;

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId::from_u64(0xa);
    const B: NodeId = NodeId::from_u64(0xb);

    fn value(text: &str) -> Payload {
        Payload::Value {
            content_type: "text/plain".into(),
            bytes: text.as_bytes().to_vec(),
            expires_at_ms: None,
        }
    }

    fn texts(object: &Object) -> Vec<String> {
        let mut v: Vec<String> = object
            .values()
            .map(|(_, _, b)| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_write_with_the_context_it_read_replaces() {
        let mut o = Object::new();
        o.write(A, &VersionVector::new(), value("one")).unwrap();
        let ctx = o.clock();
        o.write(A, &ctx, value("two")).unwrap();
        assert_eq!(texts(&o), ["two"]);
    }

    #[test]
    fn concurrent_writes_at_two_coordinators_become_siblings_and_a_merged_write_resolves_them() {
        let mut at_a = Object::new();
        let mut at_b = Object::new();
        at_a.write(A, &VersionVector::new(), value("from a"))
            .unwrap();
        at_b.write(B, &VersionVector::new(), value("from b"))
            .unwrap();
        assert!(at_a.merge(&at_b));
        assert_eq!(texts(&at_a), ["from a", "from b"]);
        let seen = at_a.clock();
        at_a.write(A, &seen, value("resolved")).unwrap();
        assert_eq!(texts(&at_a), ["resolved"]);
        // And the stale replica folds in to the same answer.
        assert!(at_b.merge(&at_a));
        assert_eq!(texts(&at_b), ["resolved"]);
    }

    #[test]
    fn a_stale_write_through_the_same_coordinator_is_kept_not_lost() {
        let mut o = Object::new();
        let empty = VersionVector::new();
        o.write(A, &empty, value("first")).unwrap();
        // A second client, who read nothing, writes through the same node.
        o.write(A, &empty, value("second")).unwrap();
        assert_eq!(texts(&o), ["first", "second"]);
    }

    #[test]
    fn merging_is_idempotent_commutative_and_drops_what_is_superseded() {
        let mut old = Object::new();
        old.write(A, &VersionVector::new(), value("v1")).unwrap();
        let mut new = old.clone();
        new.write(B, &old.clock(), value("v2")).unwrap();
        let (mut x, mut y) = (old.clone(), new.clone());
        x.merge(&new);
        y.merge(&old);
        assert_eq!(x.dots(), y.dots());
        assert_eq!(texts(&x), ["v2"]);
        assert!(!x.merge(&new), "merging again changes nothing");
    }

    #[test]
    fn a_delete_is_a_tombstone_that_a_stale_replica_cannot_undo() {
        let mut o = Object::new();
        o.write(A, &VersionVector::new(), value("v")).unwrap();
        let stale = o.clone();
        o.write(A, &o.clock(), Payload::Tombstone { at_ms: 0 })
            .unwrap();
        assert_eq!(o.values().count(), 0);
        assert!(!o.is_empty(), "the tombstone stays");
        assert_eq!(o.deleted_at_ms(), Some(0));
        o.merge(&stale);
        assert_eq!(o.values().count(), 0, "the old value does not come back");
        let mut revived = stale.clone();
        revived.merge(&o);
        assert_eq!(revived.values().count(), 0);
    }

    #[test]
    fn contexts_round_trip_and_garbage_is_refused() {
        let mut vv = VersionVector::new();
        vv.add(Dot {
            node: A,
            counter: 3,
        });
        vv.add(Dot {
            node: B,
            counter: 9,
        });
        let token = vv.to_context();
        assert!(token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(VersionVector::from_context(&token).unwrap(), vv);
        assert_eq!(
            VersionVector::from_context("").unwrap(),
            VersionVector::new()
        );
        assert_eq!(
            VersionVector::from_context("!!"),
            Err(ContextError::NotBase64)
        );
        assert_eq!(
            VersionVector::from_context("AAAA"),
            Err(ContextError::Malformed)
        );
        let huge: Vec<(u64, u64)> = (0..100).map(|i| (i, 1)).collect();
        let token = URL_SAFE_NO_PAD.encode(rmp_serde::to_vec(&huge).unwrap());
        assert_eq!(
            VersionVector::from_context(&token),
            Err(ContextError::TooLarge)
        );
    }

    #[test]
    fn a_forged_context_at_the_counter_limit_is_an_error() {
        let mut forged = VersionVector::new();
        forged.add(Dot {
            node: A,
            counter: u64::MAX,
        });
        let mut o = Object::new();
        assert_eq!(
            o.write(A, &forged, value("x")),
            Err(VersionError::CounterOverflow)
        );
        assert!(o.is_empty(), "nothing was written");
    }

    #[test]
    fn objects_round_trip_and_garbage_is_corrupt() {
        let mut o = Object::new();
        o.write(A, &VersionVector::new(), value("v")).unwrap();
        assert_eq!(Object::decode(&o.encode()).unwrap(), o);
        assert!(Object::decode(&[]).is_err());
        assert!(Object::decode(&[OBJECT_FORMAT_V1, 0xc1]).is_err());
    }

    #[test]
    fn an_expired_value_is_gone_like_a_deletion_at_its_deadline() {
        let mut o = Object::new();
        let mut expiring = value("soon");
        if let Payload::Value { expires_at_ms, .. } = &mut expiring {
            *expires_at_ms = Some(1_000);
        }
        o.write(A, &VersionVector::new(), expiring).unwrap();
        assert!(o.is_live(999));
        assert!(!o.is_live(1_000), "gone at the deadline itself");
        assert_eq!(o.values().count(), 1, "still held, to be collected");
        assert_eq!(o.deleted_at_ms(), Some(1_000));
        // A value without a deadline beside it keeps the key alive.
        o.write(B, &VersionVector::new(), value("forever")).unwrap();
        assert_eq!(o.deleted_at_ms(), None);
        assert_eq!(o.live_values(5_000).count(), 1);
    }

    /// Objects stored before values had deadlines still decode.
    #[test]
    fn an_object_stored_before_deadlines_existed_decodes_without_one() {
        #[derive(Serialize)]
        enum OldPayload {
            Value {
                content_type: String,
                #[serde(with = "serde_bytes")]
                bytes: Vec<u8>,
            },
        }
        #[derive(Serialize)]
        struct OldSibling {
            dot: Dot,
            context: VersionVector,
            payload: OldPayload,
        }
        #[derive(Serialize)]
        struct OldObject {
            siblings: Vec<OldSibling>,
        }
        let old = OldObject {
            siblings: vec![OldSibling {
                dot: Dot {
                    node: A,
                    counter: 1,
                },
                context: VersionVector::new(),
                payload: OldPayload::Value {
                    content_type: "text/plain".into(),
                    bytes: b"v".to_vec(),
                },
            }],
        };
        let mut bytes = vec![OBJECT_FORMAT_V1];
        rmp_serde::encode::write(&mut bytes, &old).unwrap();
        let decoded = Object::decode(&bytes).unwrap();
        assert_eq!(texts(&decoded), ["v"]);
        assert_eq!(decoded.siblings()[0].payload.gone_at_ms(), None);
    }
}
