//! The in-memory engine: a dashmap, for tests and throwaway nodes.
//!
//! Owns nothing beyond the map; must behave exactly like the disk engine
//! under the shared contract test, except that nothing outlives the process.

use dashmap::DashMap;

use super::{StorageEngine, StorageResult};

/// Keys and values in a sharded concurrent map. Lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    entries: DashMap<Vec<u8>, Vec<u8>>,
}

impl StorageEngine for MemoryEngine {
    fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        super::check_key(key)?;
        Ok(self.entries.get(key).map(|v| v.value().clone()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> StorageResult<()> {
        super::check_key(key)?;
        self.entries.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> StorageResult<()> {
        super::check_key(key)?;
        self.entries.remove(key);
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut found: Vec<(Vec<u8>, Vec<u8>)> = self
            .entries
            .iter()
            .filter(|e| e.key().starts_with(prefix))
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        found.sort_unstable();
        Ok(found)
    }

    fn scan_after(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        // A hash map has no order: find the `limit` smallest keys past
        // `after` in one pass, without sorting the whole map.
        let mut keys: Vec<Vec<u8>> = self
            .entries
            .iter()
            .map(|e| e.key().clone())
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_slice() > a))
            .collect();
        if keys.len() > limit {
            keys.select_nth_unstable(limit);
            keys.truncate(limit);
        }
        keys.sort_unstable();
        Ok(keys
            .into_iter()
            .filter_map(|k| {
                let value = self.entries.get(&k)?.value().clone();
                Some((k, value))
            })
            .collect())
    }

    fn approximate_len(&self) -> u64 {
        self.entries.len() as u64
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
