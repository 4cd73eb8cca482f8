//! A stored value as the Store keeps it: the client's bytes and the content
//! type they came with.
//!
//! Owns the on-disk encoding of a value. Pure. A record read back that does
//! not decode is reported as corrupt, never served as if it were empty.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The content type served when a client stored a value without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub content_type: String,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

#[derive(Debug, Error)]
#[error("a stored record does not decode: {0}")]
pub struct CorruptRecord(#[from] rmp_serde::decode::Error);

impl Record {
    pub fn new(content_type: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Record {
            content_type: content_type.into(),
            value: value.into(),
        }
    }

    /// The storage encoding: a version byte, then msgpack. The version byte
    /// lets a later format sit beside this one in the same data directory.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.value.len() + self.content_type.len() + 16);
        out.push(RECORD_FORMAT_V1);
        // Writing msgpack into a Vec cannot fail for this plain struct.
        rmp_serde::encode::write(&mut out, self).unwrap_or_else(|e| unreachable!("{e}"));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        match bytes.split_first() {
            Some((&RECORD_FORMAT_V1, rest)) => Ok(rmp_serde::from_slice(rest)?),
            _ => Err(CorruptRecord(rmp_serde::decode::Error::Syntax(
                "unknown record format".into(),
            ))),
        }
    }
}

const RECORD_FORMAT_V1: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = Record::new("application/json", br#"{"name":"Jack"}"#.to_vec());
        assert_eq!(Record::decode(&record.encode()).unwrap(), record);
    }

    #[test]
    fn garbage_is_reported_as_corrupt() {
        assert!(Record::decode(&[]).is_err());
        assert!(Record::decode(&[9, 1, 2]).is_err());
        assert!(Record::decode(&[RECORD_FORMAT_V1, 0xc1]).is_err());
    }
}
