//! Keys as clients name them: a non-empty UTF-8 string of at most
//! [`MAX_KEY_BYTES`] bytes.
//!
//! Owns key validation, once per entry point: a [`Key`] is made only by
//! [`Key::new`] (the HTTP layer, from the path) or by decoding one from a
//! peer (serde runs the same check), so everything past an entry point
//! holds a valid key and never checks again. Must never accept a key
//! another entry point would refuse.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The longest key, in bytes once percent-decoded: the same on every node,
/// since a key accepted by one is stored on others.
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Key(String);

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {len} bytes, the limit is {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("the key is not valid UTF-8 once percent-decoded")]
    NotUtf8,
    #[error(
        "keys starting with `{RESERVED_PREFIX}` are reserved for the API (such as /kv/_batch)"
    )]
    Reserved,
}

/// Client keys never start with this, so the API's own names under `/kv/`
/// (`_batch`) can never be a key.
pub const RESERVED_PREFIX: char = '_';

impl Key {
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong {
                len: key.len(),
                limit: MAX_KEY_BYTES,
            });
        }
        Ok(Key(key))
    }

    /// A key a client names (in a path or a batch): also never one with
    /// the reserved prefix. Peers are not held to it, so a key stored
    /// before the prefix was reserved still replicates.
    pub fn from_client(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = Key::new(key)?;
        if key.0.starts_with(RESERVED_PREFIX) {
            return Err(KeyError::Reserved);
        }
        Ok(key)
    }

    /// Decodes a percent-encoded URL path segment into a client key. Every escape is
    /// decoded, `%2F` included, so any UTF-8 string can be a key.
    pub fn from_path_segment(segment: &str) -> Result<Self, KeyError> {
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| KeyError::NotUtf8)?;
        Key::from_client(decoded.into_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Key {
    type Error = KeyError;

    fn try_from(key: String) -> Result<Self, KeyError> {
        Key::new(key)
    }
}

impl From<Key> for String {
    fn from(key: Key) -> String {
        key.0
    }
}

// Ordered, hashed and compared as its string, so maps keyed by `Key` can
// be looked up with a `&str`.
impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Key {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_fully_percent_decoded() {
        let key = Key::from_path_segment("a%2Fb%20c%C3%A9").unwrap();
        assert_eq!(key.as_str(), "a/b cé");
    }

    #[test]
    fn clients_cannot_name_reserved_keys_but_peers_may_carry_them() {
        assert_eq!(Key::from_path_segment("_batch"), Err(KeyError::Reserved));
        assert_eq!(Key::from_path_segment("%5Fbatch"), Err(KeyError::Reserved));
        assert_eq!(Key::from_client("_x"), Err(KeyError::Reserved));
        assert!(Key::from_client("a_b").is_ok());
        assert!(Key::new("_old").is_ok());
    }

    #[test]
    fn empty_long_and_non_utf8_keys_are_refused() {
        assert_eq!(Key::new(""), Err(KeyError::Empty));
        assert_eq!(
            Key::new("x".repeat(MAX_KEY_BYTES + 1)),
            Err(KeyError::TooLong {
                len: MAX_KEY_BYTES + 1,
                limit: MAX_KEY_BYTES
            })
        );
        assert!(Key::new("x".repeat(MAX_KEY_BYTES)).is_ok());
        assert_eq!(Key::from_path_segment("%FF"), Err(KeyError::NotUtf8));
    }

    #[test]
    fn the_limit_counts_decoded_bytes() {
        let two_byte = "%C3%A9".repeat(MAX_KEY_BYTES / 2);
        assert!(Key::from_path_segment(&two_byte).is_ok());
        assert!(Key::from_path_segment(&format!("{two_byte}x")).is_err());
    }

    /// A peer cannot slip in a key the HTTP layer would refuse: decoding
    /// runs the same check.
    #[test]
    fn a_decoded_key_is_checked_like_one_from_a_client() {
        let good = rmp_serde::to_vec(&Key::new("k").unwrap()).unwrap();
        assert_eq!(rmp_serde::from_slice::<Key>(&good).unwrap().as_str(), "k");
        for bad in [String::new(), "x".repeat(MAX_KEY_BYTES + 1)] {
            let bytes = rmp_serde::to_vec(&bad).unwrap();
            assert!(
                rmp_serde::from_slice::<Key>(&bytes).is_err(),
                "{}",
                bad.len()
            );
        }
    }
}
