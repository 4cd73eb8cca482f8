//! The in-memory engine: an ordered map behind a read-write lock, for tests
//! and throwaway nodes.
//!
//! Owns nothing beyond the map; must behave exactly like the disk engine
//! under the shared contract test, except that nothing outlives the process.
//! Ordered, so a walk in key order (listings, scans) costs what it returns,
//! as on disk, not the whole map.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{StorageEngine, StorageResult};

/// Keys and values in key order. Lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    entries: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Bytes of every key and value held, changed only under the write lock.
    bytes: AtomicU64,
}

impl MemoryEngine {
    // A panic while the lock was held leaves a map of whole entries.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, map: &mut BTreeMap<Vec<u8>, Vec<u8>>, key: &[u8], value: &[u8]) {
        let added = (key.len() + value.len()) as u64;
        match map.insert(key.to_vec(), value.to_vec()) {
            Some(old) => {
                self.bytes.fetch_add(value.len() as u64, Ordering::Relaxed);
                self.bytes.fetch_sub(old.len() as u64, Ordering::Relaxed);
            }
            None => {
                self.bytes.fetch_add(added, Ordering::Relaxed);
            }
        }
    }
}

impl StorageEngine for MemoryEngine {
    fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        super::check_key(key)?;
        Ok(self.read().get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> StorageResult<()> {
        super::check_key(key)?;
        self.insert(&mut self.write(), key, value);
        Ok(())
    }

    fn put_many(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> StorageResult<()> {
        for (key, _) in entries {
            super::check_key(key)?;
        }
        let mut map = self.write();
        for (key, value) in entries {
            self.insert(&mut map, key, value);
        }
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> StorageResult<()> {
        super::check_key(key)?;
        if let Some(old) = self.write().remove(key) {
            self.bytes
                .fetch_sub((key.len() + old.len()) as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_after(prefix, None, usize::MAX)
    }

    fn scan_after(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        Ok(self
            .read()
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn approximate_len(&self) -> u64 {
        self.read().len() as u64
    }

    fn approximate_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_engine_keeps_the_contract() {
        super::super::check_engine_contract(&MemoryEngine::default());
    }

    #[test]
    fn bytes_held_follow_puts_overwrites_and_deletes() {
        let engine = MemoryEngine::default();
        engine.put(b"ab", b"1234").unwrap();
        assert_eq!(engine.approximate_bytes(), 6);
        engine.put(b"ab", b"12").unwrap();
        assert_eq!(engine.approximate_bytes(), 4);
        engine
            .put_many(&[
                (b"c".to_vec(), b"x".to_vec()),
                (b"ab".to_vec(), b"".to_vec()),
            ])
            .unwrap();
        assert_eq!(engine.approximate_bytes(), 4);
        engine.delete(b"ab").unwrap();
        engine.delete(b"never").unwrap();
        assert_eq!(engine.approximate_bytes(), 2);
    }
}
