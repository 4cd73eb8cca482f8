//! Conditional writes: whether the versions a quorum read found let a
//! write with a condition go ahead, and what it then supersedes.
//!
//! Owns that judgement, and which node makes it: one node per key (its
//! first home replica that is up) checks every conditional write of it,
//! one after another, so two clients racing to create a key through
//! different nodes are told apart while that node's view holds. It is
//! still a quorum read just before the write, not a consensus: when nodes
//! disagree on who is up (a partition), two checkers can both let a write
//! through (README, "Conditional writes"). Pure.

use crate::node_id::NodeId;
use crate::version::{Object, VersionVector};

/// Where a conditional write is checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Checker {
    /// On this node.
    Here,
    /// On the first of these home replicas that takes it (in ring order,
    /// from the first that is up).
    Forward(Vec<NodeId>),
}

/// Which node checks a conditional write of a key with home replicas
/// `home`, as `local` sees who `is_up`. A write forwarded here is checked
/// here: the node that sent it found this one first.
pub fn checker_of(
    home: &[NodeId],
    local: NodeId,
    forwarded: bool,
    is_up: impl Fn(NodeId) -> bool,
) -> Checker {
    if forwarded {
        return Checker::Here;
    }
    let up: Vec<NodeId> = home
        .iter()
        .copied()
        .filter(|&n| n == local || is_up(n))
        .collect();
    match up.first() {
        Some(&first) if first != local => Checker::Forward(up),
        _ => Checker::Here,
    }
}

/// What a conditional write requires of the key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Condition {
    /// `If-None-Match: *`: no live value (never written, deleted or
    /// expired).
    Absent,
    /// `If-Match: CONTEXT`: the key's versions are exactly those this
    /// context names: nothing was written since the read that gave it.
    Current(VersionVector),
}

/// The condition failed; the client gets the context of what was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmet {
    pub found: VersionVector,
}

/// What the write supersedes if `condition` holds for `found` (the merged
/// copies of a quorum read) at `now_ms`: everything found, tombstones and
/// expired values included, so the write replaces them and is the key's
/// one version.
pub fn settle(condition: &Condition, found: &Object, now_ms: u64) -> Result<VersionVector, Unmet> {
    let clock = found.clock();
    let holds = match condition {
        Condition::Absent => !found.is_live(now_ms),
        Condition::Current(context) => context.descends(&clock) && clock.descends(context),
    };
    if holds {
        Ok(clock)
    } else {
        Err(Unmet { found: clock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_id::NodeId;
    use crate::version::Payload;

    const A: NodeId = NodeId::from_u64(1);
    const B: NodeId = NodeId::from_u64(2);

    fn written(object: &mut Object, node: NodeId, payload: Payload) {
        let seen = object.clock();
        object.write(node, &seen, payload).unwrap();
    }

    #[test]
    fn absent_holds_for_a_key_never_written_deleted_or_expired_and_not_for_a_live_one() {
        let empty = Object::new();
        assert_eq!(
            settle(&Condition::Absent, &empty, 0),
            Ok(VersionVector::new())
        );
        let mut deleted = Object::new();
        written(&mut deleted, A, Payload::value("t", b"v".to_vec()));
        written(&mut deleted, A, Payload::Tombstone { at_ms: 5 });
        assert_eq!(
            settle(&Condition::Absent, &deleted, 10),
            Ok(deleted.clock()),
            "the create supersedes the tombstone"
        );
        let mut expiring = Object::new();
        written(
            &mut expiring,
            A,
            Payload::Value {
                content_type: "t".into(),
                bytes: b"v".to_vec(),
                expires_at_ms: Some(100),
            },
        );
        assert!(settle(&Condition::Absent, &expiring, 99).is_err());
        assert!(settle(&Condition::Absent, &expiring, 100).is_ok());
        let mut live = Object::new();
        written(&mut live, A, Payload::value("t", b"v".to_vec()));
        assert_eq!(
            settle(&Condition::Absent, &live, 0),
            Err(Unmet {
                found: live.clock()
            })
        );
    }

    #[test]
    fn the_first_home_up_checks_every_conditional_write_of_a_key() {
        let home = [A, B, NodeId::from_u64(3)];
        assert_eq!(checker_of(&home, A, false, |_| true), Checker::Here);
        assert_eq!(
            checker_of(&home, B, false, |_| true),
            Checker::Forward(home.to_vec())
        );
        assert_eq!(
            checker_of(&home, B, false, |n| n != A),
            Checker::Here,
            "the first home is down: the next checks"
        );
        let outsider = NodeId::from_u64(9);
        assert_eq!(
            checker_of(&home, outsider, false, |n| n != A),
            Checker::Forward(vec![B, NodeId::from_u64(3)])
        );
        assert_eq!(checker_of(&home, B, true, |_| true), Checker::Here);
    }

    #[test]
    fn current_holds_only_for_exactly_the_versions_read() {
        let mut object = Object::new();
        written(&mut object, A, Payload::value("t", b"one".to_vec()));
        let read = object.clock();
        assert_eq!(
            settle(&Condition::Current(read.clone()), &object, 0),
            Ok(read.clone())
        );
        // A concurrent write since the read: refused, naming both.
        object
            .write(
                B,
                &VersionVector::new(),
                Payload::value("t", b"two".to_vec()),
            )
            .unwrap();
        let refused = settle(&Condition::Current(read.clone()), &object, 0).unwrap_err();
        assert_eq!(refused.found, object.clock());
        // A context from the future (names more than exists) fails too.
        let mut ahead = object.clock();
        ahead.add(crate::version::Dot {
            node: A,
            counter: 99,
        });
        assert!(settle(&Condition::Current(ahead), &object, 0).is_err());
        assert!(
            settle(&Condition::Current(VersionVector::new()), &Object::new(), 0).is_ok(),
            "the empty context of a 404 matches a key still absent"
        );
    }
}
