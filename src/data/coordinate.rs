//! How a coordinator takes a client write before replicating it: whether
//! it versions the write itself or hands it to a home replica, whether
//! enough replicas are reachable, whether the client's context must be
//! looked up first, and which home replicas get a hint at once.
//!
//! Owns these decisions only; the Store reads its copy, asks peers and
//! stores as they say. Only a home replica versions a write: a new dot is
//! counted from the coordinator's own copy, which must hold every dot it
//! issued for the key, while a stand-in's copy is a hint it hands over and
//! drops, so a stand-in counting from it could issue a dot twice and
//! superseded values would come back.

use crate::node_id::NodeId;
use crate::replication::Placement;
use crate::version::VersionVector;

/// What a coordinator does with a client write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteRoute {
    /// Version it here: this node is a home replica and enough replicas
    /// are reachable.
    Here,
    /// Hand it to the first of these home replicas that takes it.
    Forward(Vec<NodeId>),
    /// It was forwarded here, yet this node is no home replica (the two
    /// rings disagree): refuse rather than forward again.
    NotHome,
    /// Fewer replicas are reachable than the write needs: refuse before
    /// storing anything.
    Unreachable { reachable: usize, needed: usize },
}

/// The route of a write needing `needed` (W) copies, placed as `placement`.
pub fn route_write(
    placement: &Placement,
    local_id: NodeId,
    needed: usize,
    forwarded: bool,
) -> WriteRoute {
    if !placement.is_home(local_id) {
        if forwarded {
            return WriteRoute::NotHome;
        }
        let homes = placement
            .targets
            .iter()
            .filter(|t| t.hint_for.is_none())
            .map(|t| t.node)
            .collect();
        return WriteRoute::Forward(homes);
    }
    let reachable = placement.targets.len() + placement.spares.len();
    if reachable < needed {
        return WriteRoute::Unreachable { reachable, needed };
    }
    WriteRoute::Here
}

/// Whether the client's context names only versions this copy holds. If
/// not, a number only the client vouches for could enter the key's clock,
/// so the other home replicas are asked first (a read right after a write
/// elsewhere may be ahead of this copy; a forged context is ahead of all).
pub fn context_is_known(local_clock: &VersionVector, context: &VersionVector) -> bool {
    local_clock.descends(context)
}

/// The home replicas other than this one that nobody in `placement` stands
/// in for (a cluster of N nodes, or most of one gone): their hints are kept
/// here at once.
pub fn uncovered_homes(placement: &Placement, local_id: NodeId) -> Vec<NodeId> {
    placement
        .home
        .iter()
        .copied()
        .filter(|&home| {
            home != local_id
                && !placement
                    .targets
                    .iter()
                    .any(|t| t.node == home || t.hint_for == Some(home))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::Target;
    use crate::version::Dot;

    fn n(i: u64) -> NodeId {
        NodeId::from_u64(i)
    }

    fn target(node: u64, hint_for: Option<u64>) -> Target {
        Target {
            node: n(node),
            hint_for: hint_for.map(n),
        }
    }

    fn placement(targets: Vec<Target>, spares: Vec<u64>) -> Placement {
        Placement {
            home: vec![n(1), n(2), n(3)],
            targets,
            spares: spares.into_iter().map(n).collect(),
        }
    }

    #[test]
    fn a_write_is_versioned_only_by_a_home_replica() {
        // n(3) is down; n(4) stands in for it.
        let p = placement(
            vec![target(1, None), target(2, None), target(4, Some(3))],
            vec![5],
        );
        assert_eq!(route_write(&p, n(1), 2, false), WriteRoute::Here);
        assert_eq!(route_write(&p, n(2), 2, true), WriteRoute::Here);
        // A stand-in or an outsider forwards to the homes that are up.
        assert_eq!(
            route_write(&p, n(4), 2, false),
            WriteRoute::Forward(vec![n(1), n(2)])
        );
        assert_eq!(
            route_write(&p, n(9), 2, false),
            WriteRoute::Forward(vec![n(1), n(2)])
        );
        // Never forwarded twice.
        assert_eq!(route_write(&p, n(9), 2, true), WriteRoute::NotHome);
        // Four reachable: W=all of five cannot be met.
        assert_eq!(
            route_write(&p, n(1), 5, false),
            WriteRoute::Unreachable {
                reachable: 4,
                needed: 5
            }
        );
    }

    #[test]
    fn a_context_ahead_of_this_copy_is_looked_up_first() {
        let mut copy = VersionVector::new();
        copy.add(Dot {
            node: n(1),
            counter: 3,
        });
        let mut context = VersionVector::new();
        assert!(context_is_known(&copy, &context), "no context");
        context.add(Dot {
            node: n(1),
            counter: 2,
        });
        assert!(context_is_known(&copy, &context), "an older read");
        context.add(Dot {
            node: n(2),
            counter: 1,
        });
        assert!(
            !context_is_known(&copy, &context),
            "another replica's version"
        );
        let mut forged = VersionVector::new();
        forged.add(Dot {
            node: n(1),
            counter: u64::MAX,
        });
        assert!(!context_is_known(&copy, &forged));
    }

    #[test]
    fn only_a_home_with_nobody_standing_in_gets_a_hint_at_once() {
        let covered = placement(
            vec![target(1, None), target(2, None), target(4, Some(3))],
            vec![],
        );
        assert!(uncovered_homes(&covered, n(1)).is_empty());
        // Two nodes up in a cluster of three: n(3) has no stand-in.
        let short = placement(vec![target(1, None), target(2, None)], vec![]);
        assert_eq!(uncovered_homes(&short, n(1)), vec![n(3)]);
        // This node alone: both others.
        let alone = placement(vec![target(1, None)], vec![]);
        assert_eq!(uncovered_homes(&alone, n(1)), vec![n(2), n(3)]);
    }
}
