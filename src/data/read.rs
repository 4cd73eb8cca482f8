//! What a read may answer from the replica replies so far: the rule that a
//! key is said not to exist only once one of its home replicas said so.

use crate::version::Object;

/// What a read may answer, from the replies so far.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadVerdict {
    /// The merged object: a live value from any `needed` replicas, or
    /// (tombstones, or nothing) once a home replica is among them.
    Answer,
    /// Not yet: more replicas may answer.
    Wait,
    /// Enough replicas answered, but only stand-ins, and none held a value:
    /// a not-found from them would be a guess (Riak's `notfound_ok`).
    NoHome,
    /// Every replica asked has answered or failed, fewer than `needed`
    /// answered.
    Short,
}

/// `finished`: no replica is left to ask. An object with no live value
/// is only answered early if it holds tombstones: an empty one waits for
/// every replica, since a key being handed over may be on one alone.
pub fn read_verdict(
    answered: usize,
    homes_answered: usize,
    needed: usize,
    merged: &Object,
    finished: bool,
) -> ReadVerdict {
    let live = merged.values().next().is_some();
    let enough = answered >= needed;
    if enough && (live || (homes_answered > 0 && !merged.is_empty())) {
        return ReadVerdict::Answer;
    }
    match (finished, enough, homes_answered > 0) {
        (false, _, _) => ReadVerdict::Wait,
        (true, false, _) => ReadVerdict::Short,
        (true, true, true) => ReadVerdict::Answer,
        (true, true, false) => ReadVerdict::NoHome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_id::NodeId;
    use crate::version::{Payload, VersionVector};

    fn holding(payload: Payload) -> Object {
        let mut object = Object::new();
        object
            .write(NodeId::from_u64(1), &VersionVector::new(), payload)
            .unwrap();
        object
    }

    #[test]
    fn a_read_says_not_found_only_once_a_home_replica_has_answered() {
        use ReadVerdict::*;
        let nothing = Object::new();
        let deleted = holding(Payload::Tombstone { at_ms: 1 });
        let value = holding(Payload::Value {
            content_type: "text/plain".into(),
            bytes: b"v".to_vec(),
        });
        // A value is a value, whoever held it.
        assert_eq!(read_verdict(2, 0, 2, &value, false), Answer);
        assert_eq!(read_verdict(1, 1, 2, &value, false), Wait);
        // A tombstone from a home replica answers at once; from stand-ins
        // alone it waits, and then is not trusted.
        assert_eq!(read_verdict(2, 1, 2, &deleted, false), Answer);
        assert_eq!(read_verdict(2, 0, 2, &deleted, false), Wait);
        assert_eq!(read_verdict(2, 0, 2, &deleted, true), NoHome);
        // Nothing at all waits for every replica asked.
        assert_eq!(read_verdict(2, 2, 2, &nothing, false), Wait);
        assert_eq!(read_verdict(2, 1, 2, &nothing, true), Answer);
        assert_eq!(read_verdict(3, 0, 2, &nothing, true), NoHome);
        // Too few answers is a shortfall, whatever they held.
        assert_eq!(read_verdict(1, 1, 2, &value, true), Short);
        assert_eq!(read_verdict(0, 0, 1, &nothing, true), Short);
    }
}
