//! How the Store lays its records out in one storage engine.
//!
//! `d` + bucket (2 bytes) + key holds a key's object, so one hash-tree
//! bucket is one prefix scan; `h` + owner id (8 bytes) + key marks a hint
//! (the data itself is the `d` entry); `o` + key marks that a key is held,
//! in key order, for listings (the `d` layout is in hash order); `m` +
//! name holds the Store's own small records. Owns the encoding only; it
//! never reads or writes.

use crate::merkle::bucket_of;
use crate::node_id::NodeId;

pub const DATA_PREFIX: u8 = b'd';
pub const HINT_PREFIX: u8 = b'h';
pub const META_PREFIX: u8 = b'm';
pub const ORDER_PREFIX: u8 = b'o';

/// Where the key-order mark of `key` (or of every key starting with it, as
/// a prefix) is stored.
pub fn order_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(ORDER_PREFIX);
    out.extend_from_slice(key.as_bytes());
    out
}

/// The client key of a key-order mark, if `raw` is one.
pub fn key_of_order_key(raw: &[u8]) -> Option<&str> {
    match raw {
        [ORDER_PREFIX, key @ ..] if !key.is_empty() => std::str::from_utf8(key).ok(),
        _ => None,
    }
}

/// Where a key's object is stored.
pub fn data_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 3);
    out.extend_from_slice(&bucket_prefix(bucket_of(key)));
    out.extend_from_slice(key.as_bytes());
    out
}

/// The storage prefix of every key in one hash-tree bucket.
pub fn bucket_prefix(bucket: u16) -> [u8; 3] {
    let [high, low] = bucket.to_be_bytes();
    [DATA_PREFIX, high, low]
}

/// The client key inside a data key, if it is one.
pub fn key_of_data_key(raw: &[u8]) -> Option<&str> {
    match raw {
        [DATA_PREFIX, _, _, key @ ..] if !key.is_empty() => std::str::from_utf8(key).ok(),
        _ => None,
    }
}

/// Where the mark of a hint for `owner` about `key` is stored.
pub fn hint_key(owner: NodeId, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 9);
    out.push(HINT_PREFIX);
    out.extend_from_slice(&owner.as_u64().to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// The owner and key of a hint mark, if `raw` is one.
pub fn parse_hint_key(raw: &[u8]) -> Option<(NodeId, String)> {
    let rest = raw.strip_prefix(&[HINT_PREFIX])?;
    let (owner, key) = rest.split_at_checked(8)?;
    let owner = NodeId::from_u64(u64::from_be_bytes(owner.try_into().ok()?));
    let key = std::str::from_utf8(key).ok()?.to_string();
    Some((owner, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_keys_round_trip_and_garbage_is_skipped() {
        let owner = NodeId::from_u64(0xabc);
        let raw = hint_key(owner, "a/b é");
        assert_eq!(parse_hint_key(&raw), Some((owner, "a/b é".to_string())));
        assert_eq!(parse_hint_key(b"h123"), None, "too short");
        assert_eq!(parse_hint_key(b"d12345678k"), None, "not a hint");
        let mut bad = hint_key(owner, "k");
        bad.push(0xff);
        assert_eq!(parse_hint_key(&bad), None, "not UTF-8");
        assert_ne!(data_key("k"), hint_key(owner, "k"));
        assert_eq!(key_of_data_key(&data_key("a/b é")), Some("a/b é"));
        assert_eq!(key_of_data_key(&hint_key(owner, "k")), None);
        assert_eq!(
            key_of_data_key(&bucket_prefix(7)),
            None,
            "a prefix is no key"
        );
        assert!(data_key("k").starts_with(&bucket_prefix(bucket_of("k"))));
        assert_eq!(key_of_order_key(&order_key("a/b é")), Some("a/b é"));
        assert_eq!(key_of_order_key(&order_key("")), None, "a prefix is no key");
        assert!(order_key("ab") > order_key("a") && order_key("b") > order_key("ab"));
    }
}
