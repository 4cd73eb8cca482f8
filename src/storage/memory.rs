//! The in-memory engine: an ordered map behind a read-write lock, for tests
//! and throwaway nodes.
//!
//! Owns nothing beyond the map; must behave exactly like the disk engine
//! under the shared contract test, except that nothing outlives the process.
//! Ordered, so a walk in key order (listings, scans) costs what it returns,
//! as on disk, not the whole map.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{StorageEngine, StorageResult};

/// Keys and values in key order. Lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    entries: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryEngine {
    // A panic while the lock was held leaves a map of whole entries.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl StorageEngine for MemoryEngine {
    fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        super::check_key(key)?;
        Ok(self.read().get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> StorageResult<()> {
        super::check_key(key)?;
        self.write().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn put_many(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> StorageResult<()> {
        for (key, _) in entries {
            super::check_key(key)?;
        }
        let mut map = self.write();
        for (key, value) in entries {
            map.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> StorageResult<()> {
        super::check_key(key)?;
        self.write().remove(key);
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
}
