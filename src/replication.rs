//! How many copies a key has and which nodes hold them: the cluster's N, R
//! and W, the quorums a request may ask for, and the placement of one key's
//! replicas on the ring given which members are up.
//!
//! Owns the rules of sloppy quorum: a key's home replicas are the first N
//! distinct nodes of the ring; a home replica that is down is stood in for
//! by the next node clockwise that is up, which keeps the write with a hint
//! naming the home it stands in for. Pure: it is handed the ring and a test
//! of liveness, and must never look at the network or the clock.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::node_id::NodeId;
use crate::ring::{key_hash, Ring};

pub const DEFAULT_REPLICAS: usize = 3;

/// The cluster's replication settings: every node of a cluster must use the
/// same ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replication {
    /// N: copies of each key.
    pub replicas: usize,
    /// R: replicas that must answer a read.
    pub read_quorum: usize,
    /// W: replicas that must store a write before it is acknowledged.
    pub write_quorum: usize,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            replicas: DEFAULT_REPLICAS,
            read_quorum: Replication::majority_of(DEFAULT_REPLICAS),
            write_quorum: Replication::majority_of(DEFAULT_REPLICAS),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuorumError {
    #[error("a quorum is `one`, `quorum`, `all` or a number from 1 to {replicas}, not {given:?}")]
    Unrecognised { given: String, replicas: usize },
    #[error("a quorum of {given} is more than the {replicas} replicas a key has")]
    MoreThanReplicas { given: usize, replicas: usize },
    #[error("a quorum must be at least 1")]
    Zero,
}

impl Replication {
    /// A majority of `replicas`: the R and W a node takes when not told,
    /// so that R + W > N and every read meets the last write.
    pub fn majority_of(replicas: usize) -> usize {
        replicas / 2 + 1
    }

    /// Checks the settings themselves: 1 ≤ R, W ≤ N.
    pub fn validate(&self) -> Result<(), QuorumError> {
        for quorum in [self.read_quorum, self.write_quorum] {
            if quorum == 0 || self.replicas == 0 {
                return Err(QuorumError::Zero);
            }
            if quorum > self.replicas {
                return Err(QuorumError::MoreThanReplicas {
                    given: quorum,
                    replicas: self.replicas,
                });
            }
        }
        Ok(())
    }

    /// N for a ring of `ring_size` nodes: a cluster smaller than N keeps a
    /// copy on every node. Members that are merely down still count.
    pub fn effective_replicas(&self, ring_size: usize) -> usize {
        self.replicas.min(ring_size).max(1)
    }
}

/// The quorum a request asks for (`?r=` or `?w=`), before it is resolved
/// against the number of replicas a key actually has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quorum {
    One,
    /// A majority of the key's replicas.
    Majority,
    All,
    Count(usize),
}

impl Quorum {
    /// Parses `one`, `quorum`, `all` or a number from 1 to `replicas`.
    pub fn parse(text: &str, replicas: usize) -> Result<Quorum, QuorumError> {
        match text {
            "one" => Ok(Quorum::One),
            "quorum" => Ok(Quorum::Majority),
            "all" => Ok(Quorum::All),
            _ => {
                let count: usize = text.parse().map_err(|_| QuorumError::Unrecognised {
                    given: text.chars().take(32).collect(),
                    replicas,
                })?;
                if count == 0 {
                    return Err(QuorumError::Zero);
                }
                if count > replicas {
                    return Err(QuorumError::MoreThanReplicas {
                        given: count,
                        replicas,
                    });
                }
                Ok(Quorum::Count(count))
            }
        }
    }

    /// How many replicas this quorum is for a key with `replicas` copies.
    /// A configured count scales down with a cluster smaller than N.
    pub fn resolve(self, replicas: usize) -> usize {
        let count = match self {
            Quorum::One => 1,
            Quorum::Majority => replicas / 2 + 1,
            Quorum::All => replicas,
            Quorum::Count(count) => count,
        };
        count.clamp(1, replicas.max(1))
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::One => f.write_str("one"),
            Quorum::Majority => f.write_str("quorum"),
            Quorum::All => f.write_str("all"),
            Quorum::Count(n) => write!(f, "{n}"),
        }
    }
}

/// A node asked to hold a copy, and the home replica it stands in for, if
/// it is not one itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub node: NodeId,
    pub hint_for: Option<NodeId>,
}

/// Where one key's copies go right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The key's home replicas, up or not, in ring order.
    pub home: Vec<NodeId>,
    /// The nodes to ask: each home replica that is up, and for each one
    /// that is down the next node clockwise that is up, carrying a hint.
    pub targets: Vec<Target>,
    /// Further nodes that are up, in ring order, to stand in for a target
    /// that fails during the request.
    pub spares: Vec<NodeId>,
}

impl Placement {
    /// Places `key` on `ring` with `replicas` home replicas; `is_up` says
    /// which nodes can be asked at all.
    pub fn of(ring: &Ring, key: &[u8], replicas: usize, is_up: impl Fn(NodeId) -> bool) -> Self {
        let walk = ring.walk(key_hash(key));
        let home_count = replicas.min(walk.len());
        let home: Vec<NodeId> = walk[..home_count].to_vec();
        let mut others = walk[home_count..]
            .iter()
            .copied()
            .filter(|&n| is_up(n))
            .collect::<Vec<_>>()
            .into_iter();
        let mut targets = Vec::with_capacity(home_count);
        for &node in &home {
            if is_up(node) {
                targets.push(Target {
                    node,
                    hint_for: None,
                });
            } else if let Some(stand_in) = others.next() {
                targets.push(Target {
                    node: stand_in,
                    hint_for: Some(node),
                });
            }
        }
        Placement {
            home,
            targets,
            spares: others.collect(),
        }
    }

    pub fn is_home(&self, node: NodeId) -> bool {
        self.home.contains(&node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64) -> Vec<NodeId> {
        (1..=n).map(NodeId::from_u64).collect()
    }

    #[test]
    fn quorums_parse_and_refuse_what_they_cannot_be() {
        assert_eq!(Quorum::parse("one", 3), Ok(Quorum::One));
        assert_eq!(Quorum::parse("quorum", 3), Ok(Quorum::Majority));
        assert_eq!(Quorum::parse("all", 3), Ok(Quorum::All));
        assert_eq!(Quorum::parse("2", 3), Ok(Quorum::Count(2)));
        assert_eq!(
            Quorum::parse("4", 3),
            Err(QuorumError::MoreThanReplicas {
                given: 4,
                replicas: 3
            })
        );
        assert_eq!(Quorum::parse("0", 3), Err(QuorumError::Zero));
        assert!(matches!(
            Quorum::parse("most", 3),
            Err(QuorumError::Unrecognised { .. })
        ));
        assert!(Quorum::parse("-1", 3).is_err());
    }

    #[test]
    fn quorums_scale_down_with_a_small_cluster() {
        assert_eq!(Quorum::Majority.resolve(3), 2);
        assert_eq!(Quorum::Majority.resolve(1), 1);
        assert_eq!(Quorum::All.resolve(2), 2);
        assert_eq!(Quorum::Count(2).resolve(1), 1, "a lone node accepts writes");
        let replication = Replication::default();
        assert_eq!(replication.effective_replicas(1), 1);
        assert_eq!(replication.effective_replicas(2), 2);
        assert_eq!(replication.effective_replicas(7), 3);
    }

    #[test]
    fn settings_with_a_quorum_above_n_are_refused() {
        let bad = Replication {
            replicas: 2,
            read_quorum: 3,
            write_quorum: 1,
        };
        assert!(bad.validate().is_err());
        assert!(Replication::default().validate().is_ok());
    }

    #[test]
    fn every_home_replica_that_is_up_is_a_target() {
        let ring = Ring::new(ids(5), 64);
        let placement = Placement::of(&ring, b"k", 3, |_| true);
        assert_eq!(placement.home.len(), 3);
        assert_eq!(
            placement.targets.iter().map(|t| t.node).collect::<Vec<_>>(),
            placement.home
        );
        assert!(placement.targets.iter().all(|t| t.hint_for.is_none()));
        assert_eq!(placement.spares.len(), 2);
    }

    #[test]
    fn a_home_replica_that_is_down_is_stood_in_for_with_a_hint() {
        let ring = Ring::new(ids(5), 64);
        let all_up = Placement::of(&ring, b"k", 3, |_| true);
        let down = all_up.home[1];
        let placement = Placement::of(&ring, b"k", 3, |n| n != down);
        assert_eq!(placement.home, all_up.home, "home does not move");
        let stand_in = placement.targets[1];
        assert_eq!(stand_in.hint_for, Some(down));
        assert!(!placement.home.contains(&stand_in.node));
        assert_eq!(stand_in.node, all_up.spares[0], "the next node clockwise");
        assert_eq!(placement.spares, all_up.spares[1..]);
    }

    #[test]
    fn a_cluster_smaller_than_n_places_on_every_node_and_has_no_stand_ins() {
        let ring = Ring::new(ids(3), 64);
        let down = ids(3)[0];
        let placement = Placement::of(&ring, b"k", 3, |n| n != down);
        assert_eq!(placement.home.len(), 3);
        assert_eq!(placement.targets.len(), 2, "no node is left to stand in");
        assert!(placement.spares.is_empty());
    }
}
