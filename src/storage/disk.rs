//! The durable engine on fjall, and its sync policy.
//!
//! Owns the fjall database in `DATA_DIR/fjall` and the background fsync
//! thread. Must never acknowledge a write fjall has not handed to the OS,
//! and never panic on a key the trait contract refuses.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::SyncPolicy;
use super::{StorageEngine, StorageError, StorageResult};

const KEYSPACE: &str = "kv";

/// The durable engine: an fjall LSM tree in the data directory.
///
/// fjall hands every write to the OS before returning (its journal is
/// flushed to OS buffers per write), which is what makes an acknowledged
/// write survive `kill -9`. On top of that this engine adds the sync policy:
/// `fdatasync` per write, or from a background thread at an interval.
pub struct DiskEngine {
    db: Database,
    keyspace: Keyspace,
    sync_per_write: bool,
    syncer: Option<PeriodicSync>,
}

/// The background thread that makes buffered writes durable at an interval.
struct PeriodicSync {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DiskEngine {
    pub fn open(path: &Path, sync: SyncPolicy) -> StorageResult<Self> {
        std::fs::create_dir_all(path).map_err(|source| StorageError::DataDir {
            path: path.display().to_string(),
            source,
        })?;
        let db = Database::builder(path).open().map_err(engine_error)?;
        let keyspace = db
            .keyspace(KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        let (sync_per_write, syncer) = match sync {
            SyncPolicy::Always => (true, None),
            SyncPolicy::Periodic(interval) => {
                (false, Some(PeriodicSync::start(db.clone(), interval)))
            }
        };
        Ok(DiskEngine {
            db,
            keyspace,
            sync_per_write,
            syncer,
        })
    }

    fn after_write(&self) -> StorageResult<()> {
        if self.sync_per_write {
            self.db
                .persist(PersistMode::SyncData)
                .map_err(engine_error)?;
        }
        Ok(())
    }
}

impl PeriodicSync {
    fn start(db: Database, interval: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dnd-fsync".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(interval);
                    if let Err(e) = db.persist(PersistMode::SyncData) {
                        tracing::error!(error = %e, "background fsync failed");
                    }
                }
            })
            .ok();
        if thread.is_none() {
            tracing::error!(
                "could not start the fsync thread; writes reach disk when fjall flushes"
            );
        }
        PeriodicSync { stop, thread }
    }
}

impl Drop for PeriodicSync {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for DiskEngine {
    fn drop(&mut self) {
        self.syncer.take();
        if let Err(e) = self.db.persist(PersistMode::SyncAll) {
            tracing::error!(error = %e, "final fsync on close failed");
        }
    }
}

fn engine_error(e: fjall::Error) -> StorageError {
    StorageError::Engine(e.to_string())
}

impl StorageEngine for DiskEngine {
    fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        super::check_key(key)?;
        Ok(self
            .keyspace
            .get(key)
            .map_err(engine_error)?
            .map(|v| v.to_vec()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> StorageResult<()> {
        super::check_key(key)?;
        self.keyspace.insert(key, value).map_err(engine_error)?;
        self.after_write()
    }

    fn delete(&self, key: &[u8]) -> StorageResult<()> {
        super::check_key(key)?;
        self.keyspace.remove(key).map_err(engine_error)?;
        self.after_write()
    }

    fn put_many(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> StorageResult<()> {
        for (key, _) in entries {
            super::check_key(key)?;
        }
        let mut batch = self.db.batch();
        for (key, value) in entries {
            batch.insert(&self.keyspace, key.as_slice(), value.as_slice());
        }
        batch.commit().map_err(engine_error)?;
        self.after_write()
    }

    fn scan_prefix(&self, prefix: &[u8]) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.keyspace
            .prefix(prefix)
            .map(|guard| {
                let (key, value) = guard.into_inner().map_err(engine_error)?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    fn scan_after(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        use std::ops::Bound;
        // A cursor before the prefix starts the walk at the prefix, or the
        // first key read would lie outside it and end the walk at once.
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let mut found = Vec::new();
        for guard in self.keyspace.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (key, value) = guard.into_inner().map_err(engine_error)?;
            if !key.starts_with(prefix) || found.len() >= limit {
                break;
            }
            found.push((key.to_vec(), value.to_vec()));
        }
        Ok(found)
    }

    fn approximate_len(&self) -> u64 {
        self.keyspace.approximate_len() as u64
    }

    fn approximate_bytes(&self) -> u64 {
        // The journal and every table file; an error reading a size only
        // makes the figure smaller, and it is only ever shown.
        self.db.disk_space().unwrap_or(0)
    }

    fn name(&self) -> &'static str {
        "disk"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_engine_keeps_the_contract_under_both_policies() {
        for sync in [
            SyncPolicy::Always,
            SyncPolicy::Periodic(Duration::from_millis(10)),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let engine = DiskEngine::open(dir.path(), sync).unwrap();
            super::super::check_engine_contract(&engine);
        }
    }

    #[test]
    fn data_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine =
                DiskEngine::open(dir.path(), SyncPolicy::Periodic(Duration::from_millis(10)))
                    .unwrap();
            engine.put(b"kept", b"yes").unwrap();
            engine.put(b"gone", b"no").unwrap();
            engine.delete(b"gone").unwrap();
        }
        let engine = DiskEngine::open(dir.path(), SyncPolicy::Always).unwrap();
        assert_eq!(engine.get(b"kept").unwrap().as_deref(), Some(&b"yes"[..]));
        assert_eq!(engine.get(b"gone").unwrap(), None);
    }

    #[test]
    fn a_data_dir_that_is_a_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = DiskEngine::open(&file.join("sub"), SyncPolicy::Always)
            .err()
            .unwrap();
        assert!(err.to_string().contains("data directory"), "{err}");
    }
}
