//! Storage engines: where a node keeps its replicas' bytes.
//!
//! Owns the [`StorageEngine`] trait and its two engines: [`MemoryEngine`]
//! (tests, and nodes that need no durability) and [`DiskEngine`] (the default,
//! on fjall). Engines store opaque bytes under opaque keys; they know nothing
//! of records, versions, actors or the network, and must never block on
//! anything but their own I/O.

mod disk;
mod memory;
mod timed;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

pub use disk::DiskEngine;
pub use memory::MemoryEngine;
pub use timed::Timed;

/// Where the Store keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    /// The durable embedded engine (fjall), in the data directory.
    Disk,
    /// A concurrent hash map; gone when the process ends.
    Memory,
}

/// When an acknowledged write reaches the disk itself.
///
/// Under both policies a write has been handed to the operating system before
/// it is acknowledged, so it survives the node process being killed (even
/// with `kill -9`). They differ only on a power loss or kernel crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` before every acknowledgement: nothing acknowledged is ever
    /// lost, at the price of one disk flush per write.
    Always,
    /// `fdatasync` in the background at this interval: a power loss loses at
    /// most this much of the most recent writes on this replica.
    Periodic(Duration),
}

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("storage engine failed: {0}")]
    Engine(String),
    #[error("storage keys must be 1 to {MAX_STORAGE_KEY_BYTES} bytes, got {0}")]
    InvalidKey(usize),
    #[error("data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

pub type StorageResult<T> = Result<T, StorageError>;

/// The longest key any engine accepts (fjall's limit). Client keys are far
/// shorter; the slack is for prefixes the node adds to its own keys.
pub const MAX_STORAGE_KEY_BYTES: usize = 65_536;

/// Refuses keys that some engine cannot hold, so that all engines refuse the
/// same keys, with an error rather than a panic.
pub(crate) fn check_key(key: &[u8]) -> StorageResult<()> {
    if key.is_empty() || key.len() > MAX_STORAGE_KEY_BYTES {
        return Err(StorageError::InvalidKey(key.len()));
    }
    Ok(())
}

/// A durable or in-memory map from bytes to bytes.
///
/// Keys must be 1 to [`MAX_STORAGE_KEY_BYTES`] bytes; others are refused
/// with [`StorageError::InvalidKey`]. `put` and `delete` return only once the change survives the process being
/// killed; whether it also survives a power loss is the engine's sync policy.
pub trait StorageEngine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>>;
    fn put(&self, key: &[u8], value: &[u8]) -> StorageResult<()>;
    /// Puts every entry, in one write where the engine can (one journal
    /// append on disk, all or nothing); returns once they all survive the
    /// process being killed, like `put`.
    fn put_many(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> StorageResult<()>;
    fn delete(&self, key: &[u8]) -> StorageResult<()>;
    /// Every key that starts with `prefix`, with its value, in key order.
    /// Meant for small sets a node keeps beside its data (such as hints),
    /// not for walking the data itself.
    fn scan_prefix(&self, prefix: &[u8]) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Up to `limit` entries whose keys start with `prefix` and sort after
    /// `after` (from the first, if `None`), in key order: a walk over a
    /// large set in bounded steps.
    fn scan_after(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>>;
    /// The number of keys; may be approximate for engines that cannot count
    /// cheaply.
    fn approximate_len(&self) -> u64;
    /// The bytes the engine holds (on disk: its files, journal included);
    /// for operators, not for decisions.
    fn approximate_bytes(&self) -> u64;
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;
}

/// Opens the engine a node is configured with.
pub fn open(
    kind: StorageKind,
    data_dir: &Path,
    sync: SyncPolicy,
) -> StorageResult<Arc<dyn StorageEngine>> {
    Ok(match kind {
        StorageKind::Memory => Arc::new(MemoryEngine::default()),
        StorageKind::Disk => Arc::new(DiskEngine::open(&data_dir.join("fjall"), sync)?),
    })
}

/// The behaviour every engine must share, run against each engine's tests.
#[cfg(test)]
pub(crate) fn check_engine_contract(engine: &dyn StorageEngine) {
    assert_eq!(engine.get(b"missing").unwrap(), None);
    engine.put(b"k", b"v1").unwrap();
    assert_eq!(engine.get(b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    engine.put(b"k", b"v2").unwrap();
    assert_eq!(engine.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert!(matches!(
        engine.put(b"", b"x"),
        Err(StorageError::InvalidKey(0))
    ));
    assert!(engine.get(b"").is_err());
    assert!(engine
        .delete(&vec![b'k'; MAX_STORAGE_KEY_BYTES + 1])
        .is_err());
    engine.delete(b"k").unwrap();
    assert_eq!(engine.get(b"k").unwrap(), None);
    engine.delete(b"never-written").unwrap();
    engine.put(b"p/2", b"two").unwrap();
    engine.put(b"p/1", b"one").unwrap();
    engine.put(b"q/1", b"other").unwrap();
    assert_eq!(
        engine.scan_prefix(b"p/").unwrap(),
        vec![
            (b"p/1".to_vec(), b"one".to_vec()),
            (b"p/2".to_vec(), b"two".to_vec())
        ]
    );
    assert!(engine.scan_prefix(b"none/").unwrap().is_empty());
    for i in 3..10 {
        engine.put(format!("p/{i}").as_bytes(), b"more").unwrap();
    }
    let mut walked = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let step = engine.scan_after(b"p/", after.as_deref(), 4).unwrap();
        assert!(step.len() <= 4);
        let Some(last) = step.last() else { break };
        after = Some(last.0.clone());
        walked.extend(step.into_iter().map(|(k, _)| k));
    }
    let expected: Vec<Vec<u8>> = (1..10).map(|i| format!("p/{i}").into_bytes()).collect();
    let from_before = engine.scan_after(b"p/", Some(b"a"), 2).unwrap();
    assert_eq!(
        from_before
            .iter()
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>(),
        expected[..2].to_vec(),
        "a cursor sorting before the prefix starts at the prefix"
    );
    assert_eq!(
        walked, expected,
        "every key once, in order, none outside the prefix"
    );
    engine
        .put_many(&[
            (b"m/1".to_vec(), b"a".to_vec()),
            (b"m/2".to_vec(), b"b".to_vec()),
        ])
        .unwrap();
    assert_eq!(engine.get(b"m/2").unwrap().as_deref(), Some(&b"b"[..]));
    assert!(engine
        .put_many(&[(b"ok".to_vec(), vec![]), (vec![], vec![])])
        .is_err());
    let big = vec![7u8; 1 << 20];
    engine.put(b"big", &big).unwrap();
    assert_eq!(engine.get(b"big").unwrap(), Some(big));
}
