//! What one client request did, replica by replica, for `?explain=true`:
//! the key's preference list, each replica's answer with its version
//! vector and latency, whether the quorum was met, and the read repairs
//! and hints it caused.
//!
//! Owns the record ([`Explanation`]) and the handle the coordinator fills
//! it through ([`Trace`]); it decides nothing. A request without
//! `?explain=true` carries no trace and pays nothing for it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::node_id::NodeId;
use crate::replication::Placement;
use crate::version::{Object, VersionVector};

/// One replica on the key's preference list.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Placed {
    pub node: String,
    /// `home`, or `stand-in` for a home replica that is down.
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stands_in_for: Option<String>,
}

/// What one replica answered.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReplicaAnswer {
    pub node: String,
    /// `answered` (a read's copy), `stored` (a write), or `failed`.
    pub outcome: &'static str,
    /// From the request to its answer; 0 for this node's own copy.
    pub latency_ms: f64,
    /// The copy's version vector, node id to counter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_vector: Option<BTreeMap<String, u64>>,
    /// Versions the copy holds, tombstones included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A request as its coordinator saw it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Explanation {
    /// `read` or `write`.
    pub operation: &'static str,
    /// The node that coordinated (the one asked, unless it forwarded).
    pub coordinator: String,
    pub preference_list: Vec<Placed>,
    /// Nodes further round the ring that could stand in for a replica
    /// failing during the request: the first [`MAX_SPARES_SHOWN`] of them.
    pub spares: Vec<String>,
    /// How many more there are, not listed: an explanation stays a few
    /// hundred bytes however large the cluster (it may travel in a header).
    pub spares_not_shown: usize,
    /// R or W: the replicas the request waited for.
    pub needed: usize,
    /// Whether R or W was met; `None` when no replica was asked.
    pub quorum_met: Option<bool>,
    /// When the client's answer was settled, from the start.
    pub answered_after_ms: Option<f64>,
    pub replicas: Vec<ReplicaAnswer>,
    /// Replicas sent the merged version because their copy lacked part of
    /// it.
    pub read_repairs: Vec<String>,
    /// Home replicas this node keeps a hint for, to hand the write over
    /// when they are back.
    pub hints_kept: Vec<String>,
    /// The write went to these home replicas to be versioned there.
    pub forwarded_to: Vec<String>,
    /// The quorum read a write made first to learn what it replaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_read: Option<Box<Explanation>>,
    /// Why nothing was asked, or anything else worth saying.
    pub notes: Vec<String>,
}

/// The most spares an explanation lists.
pub const MAX_SPARES_SHOWN: usize = 8;

/// An explanation being filled, shared by the handler and the futures of
/// the request's round.
#[derive(Clone, Debug)]
pub struct Trace {
    started: Instant,
    record: Arc<Mutex<Explanation>>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace::new()
    }
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// A version vector as JSON keys (node ids) and counters.
pub fn vector_of(clock: &VersionVector) -> BTreeMap<String, u64> {
    clock
        .entries()
        .map(|(node, counter)| (node.to_string(), counter))
        .collect()
}

impl Trace {
    pub fn new() -> Self {
        Trace {
            started: Instant::now(),
            record: Arc::new(Mutex::new(Explanation::default())),
        }
    }

    fn with<T>(&self, change: impl FnOnce(&mut Explanation) -> T) -> T {
        let mut record = self
            .record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut record)
    }

    /// What the trace holds now.
    pub fn explanation(&self) -> Explanation {
        self.with(|record| record.clone())
    }

    pub fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    /// The request's shape: its operation, coordinator, placement and
    /// quorum.
    pub fn begin(
        &self,
        operation: &'static str,
        coordinator: NodeId,
        placement: &Placement,
        needed: usize,
    ) {
        self.with(|record| {
            record.operation = operation;
            record.coordinator = coordinator.to_string();
            record.needed = needed;
            record.preference_list = placement
                .targets
                .iter()
                .map(|target| Placed {
                    node: target.node.to_string(),
                    role: if target.hint_for.is_some() {
                        "stand-in"
                    } else {
                        "home"
                    },
                    stands_in_for: target.hint_for.map(|home| home.to_string()),
                })
                .collect();
            record.spares = placement
                .spares
                .iter()
                .take(MAX_SPARES_SHOWN)
                .map(ToString::to_string)
                .collect();
            record.spares_not_shown = placement.spares.len().saturating_sub(MAX_SPARES_SHOWN);
        });
    }

    /// A replica's copy, or its failure (`copy` `None`, with why).
    pub fn read_answer(
        &self,
        node: NodeId,
        latency: Duration,
        copy: Option<&Object>,
        error: Option<String>,
    ) {
        self.with(|record| {
            record.replicas.push(ReplicaAnswer {
                node: node.to_string(),
                outcome: if copy.is_some() { "answered" } else { "failed" },
                latency_ms: ms(latency),
                version_vector: copy.map(|object| vector_of(&object.clock())),
                versions: copy.map(|object| object.siblings().len()),
                error,
            })
        });
    }

    /// Whether a replica stored a write.
    pub fn write_answer(&self, node: NodeId, latency: Duration, error: Option<String>) {
        self.with(|record| {
            record.replicas.push(ReplicaAnswer {
                node: node.to_string(),
                outcome: if error.is_none() { "stored" } else { "failed" },
                latency_ms: ms(latency),
                version_vector: None,
                versions: None,
                error,
            })
        });
    }

    /// The client's answer was settled now: with the quorum met or not.
    pub fn settled(&self, quorum_met: bool) {
        let after = ms(self.started.elapsed());
        self.with(|record| {
            record.quorum_met = Some(quorum_met);
            record.answered_after_ms = Some(after);
        });
    }

    pub fn repaired(&self, node: NodeId) {
        self.with(|record| record.read_repairs.push(node.to_string()));
    }

    pub fn hints_kept(&self, owners: &[NodeId]) {
        self.with(|record| {
            record
                .hints_kept
                .extend(owners.iter().map(ToString::to_string))
        });
    }

    pub fn forwarded(&self, homes: &[(NodeId, std::net::SocketAddr)]) {
        self.with(|record| {
            record
                .forwarded_to
                .extend(homes.iter().map(|(node, _)| node.to_string()))
        });
    }

    pub fn note(&self, note: impl Into<String>) {
        let note = note.into();
        self.with(|record| record.notes.push(note));
    }

    /// The write's quorum read, done: kept inside the write's record.
    pub fn quorum_read(&self, read: &Trace) {
        let read = read.explanation();
        self.with(|record| record.quorum_read = Some(Box::new(read)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::Target;

    #[test]
    fn a_trace_records_placement_answers_and_outcome() {
        let (a, b, c) = (
            NodeId::from_u64(1),
            NodeId::from_u64(2),
            NodeId::from_u64(3),
        );
        let placement = Placement {
            home: vec![a, b, c],
            targets: vec![
                Target {
                    node: a,
                    hint_for: None,
                },
                Target {
                    node: c,
                    hint_for: Some(b),
                },
            ],
            spares: vec![],
        };
        let trace = Trace::new();
        trace.begin("read", a, &placement, 2);
        let many = Placement {
            spares: (10..1010).map(NodeId::from_u64).collect(),
            ..placement.clone()
        };
        let crowded = Trace::new();
        crowded.begin("read", a, &many, 2);
        let listed = crowded.explanation();
        assert_eq!(
            (listed.spares.len(), listed.spares_not_shown),
            (MAX_SPARES_SHOWN, 992)
        );
        assert!(
            serde_json::to_string(&listed).unwrap().len() < 1024,
            "small in a large cluster"
        );
        let mut copy = Object::new();
        copy.write(
            a,
            &VersionVector::new(),
            crate::version::Payload::value("text/plain", b"x".to_vec()),
        )
        .unwrap();
        trace.read_answer(a, Duration::ZERO, Some(&copy), None);
        trace.read_answer(
            c,
            Duration::from_micros(1500),
            None,
            Some("timed out".into()),
        );
        trace.settled(false);
        let record = trace.explanation();
        assert_eq!(record.preference_list[1].role, "stand-in");
        assert_eq!(record.preference_list[1].stands_in_for, Some(b.to_string()));
        assert_eq!(
            record.replicas[0]
                .version_vector
                .as_ref()
                .map(|v| v[&a.to_string()]),
            Some(1)
        );
        assert_eq!(record.replicas[1].outcome, "failed");
        assert_eq!(record.replicas[1].latency_ms, 1.5);
        assert_eq!(record.quorum_met, Some(false));
    }
}
