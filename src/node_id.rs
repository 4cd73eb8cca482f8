//! A node's identity: a random 64-bit id, generated once and kept in the data
//! directory so that a restarted node is the same member (and, later, the same
//! actor in every vector clock).
//!
//! Owns the `node_id` file format. Must never derive an id from an address:
//! addresses change, identities must not.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The file inside a data directory that holds the node id as 16 hex digits.
pub const NODE_ID_FILE: &str = "node_id";

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(u64);

impl NodeId {
    pub fn random() -> Self {
        NodeId(rand::random())
    }

    pub const fn from_u64(raw: u64) -> Self {
        NodeId(raw)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Reads the id kept in `data_dir`, or creates and durably writes a new
    /// one. A corrupt file is an error rather than a silent new identity,
    /// because a second identity for the same data would split its history.
    pub fn load_or_create(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join(NODE_ID_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} does not hold a node id", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = NodeId::random();
                let tmp = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
                let mut file = fs::File::create(&tmp)?;
                writeln!(file, "{id}")?;
                file.sync_all()?;
                fs::rename(&tmp, &path)?;
                Ok(id)
            }
            Err(e) => Err(e),
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(NodeId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = NodeId::from_u64(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<NodeId>().unwrap(), id);
    }

    #[test]
    fn an_id_is_kept_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeId::load_or_create(dir.path()).unwrap();
        let second = NodeId::load_or_create(dir.path()).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn a_corrupt_id_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(NODE_ID_FILE), "not hex").unwrap();
        let err = NodeId::load_or_create(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
