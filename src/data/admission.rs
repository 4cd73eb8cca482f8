//! Whether a peer may make a request: a member, acting in its own name,
//! with values no larger than this node takes from a client.
//!
//! Owns the rule only. The peer channel has already authenticated the
//! cluster key and named the sender; this judges what that sender asks.
//! The Store counts, logs and answers a refusal.

use std::collections::HashMap;

use crate::member::{Member, MemberState};
use crate::node_id::NodeId;
use crate::replica::ReplicaRequest;
use crate::replication::Replication;
use crate::ring::Ring;
use crate::version::{Object, Payload};

/// Why a peer request is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRefusal {
    /// The sender is not a member of the cluster (or has left it).
    NotMember,
    /// The request is not the sender's to make.
    Role,
    /// It carries a value larger than this node stores.
    TooLarge,
}

/// What a judgement needs of this node's view of the cluster.
pub struct PeerJudge<'a> {
    pub local_id: NodeId,
    pub members: &'a HashMap<NodeId, Member>,
    pub ring: &'a Ring,
    pub replication: &'a Replication,
    pub max_value_bytes: usize,
}

impl PeerJudge<'_> {
    /// This node, or a member that has not left.
    pub fn is_member(&self, node: NodeId) -> bool {
        node == self.local_id
            || self
                .members
                .get(&node)
                .is_some_and(|m| m.state != MemberState::Left)
    }

    /// `None` if `from` may make `request`, else why not.
    pub fn judge(&self, from: NodeId, request: &ReplicaRequest) -> Option<PeerRefusal> {
        if !self.is_member(from) {
            return Some(PeerRefusal::NotMember);
        }
        let too_large = |object: &Object| {
            object
                .values()
                .any(|(_, _, bytes)| bytes.len() > self.max_value_bytes)
        };
        let in_role = match request {
            // A hint is kept only for a member, or it would never be
            // delivered and never dropped.
            ReplicaRequest::Write {
                hint_for: Some(owner),
                ..
            } => self.is_member(*owner),
            ReplicaRequest::WriteEach { items } => items
                .iter()
                .all(|(_, _, hint_for)| hint_for.is_none_or(|owner| self.is_member(owner))),
            // A tree or an exchange is between the sender and this node.
            ReplicaRequest::TreeBranches { pair }
            | ReplicaRequest::TreeLeaves { pair, .. }
            | ReplicaRequest::ExchangeBuckets { pair, .. } => *pair == from,
            // Only the leaving node hands its own data over.
            ReplicaRequest::HandOver { leaving, .. } => *leaving == from,
            // Only the key's first home replica decides a tombstone's end.
            ReplicaRequest::Purge { key, .. } => {
                super::placement::home_of(self.ring, self.replication, key).first() == Some(&from)
            }
            // Answered beside the Store, never by it.
            ReplicaRequest::Keyring(_) => false,
            _ => true,
        };
        if !in_role {
            return Some(PeerRefusal::Role);
        }
        let oversized = match request {
            ReplicaRequest::Write { object, .. } => too_large(object),
            ReplicaRequest::Coordinate { write, .. } => match &write.payload {
                Payload::Value { bytes, .. } => bytes.len() > self.max_value_bytes,
                Payload::Tombstone { .. } => false,
            },
            ReplicaRequest::WriteBatch { objects } | ReplicaRequest::HandOver { objects, .. } => {
                objects.iter().any(|(_, object)| too_large(object))
            }
            ReplicaRequest::WriteEach { items } => {
                items.len() > crate::replica::MAX_WRITE_EACH
                    || items.iter().any(|(_, object, _)| too_large(object))
            }
            ReplicaRequest::Scan {
                prefix,
                start_after,
                limit,
                ..
            } => {
                *limit > crate::replica::MAX_SCAN_LIMIT
                    || prefix.len() > crate::key::MAX_KEY_BYTES
                    || start_after
                        .as_ref()
                        .is_some_and(|s| s.len() > crate::key::MAX_KEY_BYTES)
            }
            _ => false,
        };
        oversized.then_some(PeerRefusal::TooLarge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::VersionVector;

    fn member(id: NodeId, state: MemberState) -> Member {
        Member {
            id,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            http_addr: "127.0.0.1:2".parse().unwrap(),
            state,
            incarnation: 0,
        }
    }

    fn holding(bytes: usize) -> Object {
        let mut object = Object::new();
        object
            .write(
                NodeId::from_u64(1),
                &VersionVector::new(),
                Payload::Value {
                    content_type: "x".into(),
                    bytes: vec![0; bytes],
                    expires_at_ms: None,
                },
            )
            .unwrap();
        object
    }

    #[test]
    fn a_peer_is_held_to_membership_its_own_name_and_the_value_limit() {
        let ids: Vec<NodeId> = (1..=4).map(NodeId::from_u64).collect();
        let (local, alive, left) = (ids[0], ids[1], ids[2]);
        let stranger = NodeId::from_u64(99);
        let members: HashMap<NodeId, Member> = [
            (alive, member(alive, MemberState::Alive)),
            (left, member(left, MemberState::Left)),
            (ids[3], member(ids[3], MemberState::Dead)),
        ]
        .into_iter()
        .collect();
        let ring = Ring::new([local, alive, ids[3]], 32);
        let replication = Replication::default();
        let judge = PeerJudge {
            local_id: local,
            members: &members,
            ring: &ring,
            replication: &replication,
            max_value_bytes: 10,
        };
        use PeerRefusal::*;
        let read = ReplicaRequest::Read {
            key: crate::key::Key::new("k").unwrap(),
        };
        assert_eq!(judge.judge(alive, &read), None);
        assert_eq!(
            judge.judge(ids[3], &read),
            None,
            "a dead member is still one"
        );
        assert_eq!(judge.judge(left, &read), Some(NotMember));
        assert_eq!(judge.judge(stranger, &read), Some(NotMember));

        let hint = |owner| ReplicaRequest::Write {
            key: crate::key::Key::new("k").unwrap(),
            object: holding(1),
            hint_for: Some(owner),
        };
        assert_eq!(judge.judge(alive, &hint(ids[3])), None);
        assert_eq!(judge.judge(alive, &hint(stranger)), Some(Role));
        assert_eq!(judge.judge(alive, &hint(left)), Some(Role));

        let tree = |pair| ReplicaRequest::TreeBranches { pair };
        assert_eq!(judge.judge(alive, &tree(alive)), None);
        assert_eq!(judge.judge(alive, &tree(ids[3])), Some(Role));
        let handover = |leaving| ReplicaRequest::HandOver {
            leaving,
            objects: vec![],
        };
        assert_eq!(judge.judge(alive, &handover(alive)), None);
        assert_eq!(judge.judge(alive, &handover(ids[3])), Some(Role));
        assert_eq!(
            judge.judge(alive, &ReplicaRequest::Keyring(None)),
            Some(Role)
        );

        let first_home = super::super::placement::home_of(&ring, &replication, "k")[0];
        let purge = ReplicaRequest::Purge {
            key: crate::key::Key::new("k").unwrap(),
            dots: vec![],
        };
        for node in [local, alive, ids[3]] {
            let expected = (node != first_home).then_some(Role);
            assert_eq!(judge.judge(node, &purge), expected, "{node}");
        }

        let write = |bytes| ReplicaRequest::Write {
            key: crate::key::Key::new("k").unwrap(),
            object: holding(bytes),
            hint_for: None,
        };
        assert_eq!(judge.judge(alive, &write(10)), None);
        assert_eq!(judge.judge(alive, &write(11)), Some(TooLarge));
        let batch = ReplicaRequest::WriteBatch {
            objects: vec![
                (crate::key::Key::new("a").unwrap(), holding(1)),
                (crate::key::Key::new("b").unwrap(), holding(11)),
            ],
        };
        assert_eq!(judge.judge(alive, &batch), Some(TooLarge));
    }
}
