//! Watches: whether a key's versions hold news for a client that has seen
//! a context. Pure.

use crate::version::{Object, Payload, VersionVector};

/// Whether `found` has a version `seen` does not cover that a client would
/// be shown at `now_ms`: a new value, or a deletion. A value that had
/// already expired is no news: an expired value is invisible to watches as
/// to reads.
pub fn has_news(found: &Object, seen: &VersionVector, now_ms: u64) -> bool {
    found.siblings().iter().any(|sibling| {
        !seen.covers(sibling.dot)
            && (sibling.payload.is_live(now_ms)
                || matches!(sibling.payload, Payload::Tombstone { .. }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_id::NodeId;

    const A: NodeId = NodeId::from_u64(1);

    #[test]
    fn news_is_a_version_the_context_does_not_cover_and_a_client_would_see() {
        let mut object = Object::new();
        let nothing = VersionVector::new();
        assert!(!has_news(&object, &nothing, 0), "an absent key has no news");
        object
            .write(A, &nothing, Payload::value("t", b"one".to_vec()))
            .unwrap();
        assert!(has_news(&object, &nothing, 0));
        let seen = object.clock();
        assert!(!has_news(&object, &seen, 0), "what was seen is no news");
        object
            .write(A, &seen, Payload::Tombstone { at_ms: 1 })
            .unwrap();
        assert!(has_news(&object, &seen, 0), "a deletion is news");
        let deleted = object.clock();
        object
            .write(
                A,
                &deleted,
                Payload::Value {
                    content_type: "t".into(),
                    bytes: b"brief".to_vec(),
                    expires_at_ms: Some(10),
                },
            )
            .unwrap();
        assert!(has_news(&object, &deleted, 9));
        assert!(
            !has_news(&object, &deleted, 10),
            "an expired value is no news"
        );
    }
}
