//! Keys as clients name them: a non-empty UTF-8 string of bounded length.
//!
//! Owns key validation, so every entry point (HTTP today, node-to-node
//! requests later) refuses the same keys for the same reasons.
//! Must never accept a key another entry point would refuse.

use std::fmt;

use thiserror::Error;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {len} bytes, the limit is {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("the key is not valid UTF-8 once percent-decoded")]
    NotUtf8,
}

impl Key {
    pub fn new(key: impl Into<String>, max_bytes: usize) -> Result<Self, KeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > max_bytes {
            return Err(KeyError::TooLong {
                len: key.len(),
                limit: max_bytes,
            });
        }
        Ok(Key(key))
    }

    /// Decodes a percent-encoded URL path segment into a key. Every escape is
    /// decoded, `%2F` included, so any UTF-8 string can be a key.
    pub fn from_path_segment(segment: &str, max_bytes: usize) -> Result<Self, KeyError> {
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| KeyError::NotUtf8)?;
        Key::new(decoded.into_owned(), max_bytes)
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
        let key = Key::from_path_segment("a%2Fb%20c%C3%A9", 1024).unwrap();
        assert_eq!(key.as_str(), "a/b cé");
    }

    #[test]
    fn empty_long_and_non_utf8_keys_are_refused() {
        assert_eq!(Key::new("", 10), Err(KeyError::Empty));
        assert_eq!(
            Key::new("x".repeat(11), 10),
            Err(KeyError::TooLong { len: 11, limit: 10 })
        );
        assert!(Key::new("x".repeat(10), 10).is_ok());
        assert_eq!(Key::from_path_segment("%FF", 10), Err(KeyError::NotUtf8));
    }

    #[test]
    fn the_limit_counts_decoded_bytes() {
        assert!(Key::from_path_segment("%C3%A9", 2).is_ok());
        assert!(Key::from_path_segment("%C3%A9", 1).is_err());
    }
}
