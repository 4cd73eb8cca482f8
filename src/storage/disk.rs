//! The durable engine on fjall, and its sync policy.
//!
//! Owns the fjall database in `DATA_DIR/fjall` and the background fsync
//! thread. Must never acknowledge a write fjall has not handed to the OS,
//! and never panic on a key the trait contract refuses.

use std::path::{Path, PathBuf};
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
            SyncPolicy::Periodic(interval) => (
                false,
                Some(PeriodicSync::start(
                    db.clone(),
                    path.to_path_buf(),
                    interval,
                )),
            ),
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
    fn start(db: Database, dir: PathBuf, interval: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dnd-fsync".into())
            .spawn(move || {
                let mut journal = JournalSync::new(dir);
                while !stop_flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(interval);
                    if let Err(e) = journal.sync(&db) {
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

/// Makes what fjall's journal was handed durable without holding its lock.
///
/// `Database::persist(SyncData)` keeps the journal's writer locked through
/// the `fdatasync`, so every write (and the Store's thread with it) waits
/// for the disk once per interval: the tail of the latencies. Instead the
/// buffered bytes are handed to the OS under the lock (`Buffer`, a
/// `write`), and the active journal file is synced through a handle of its
/// own, which flushes the same inode's pages while writes go on. A journal
/// that was rotated away in between was synced by fjall when it was sealed.
struct JournalSync {
    dir: PathBuf,
    /// The active journal and a handle on it, reopened when fjall rotates.
    open: Option<(PathBuf, std::fs::File)>,
    /// Whether the fallback to fjall's own sync was already logged.
    fallback_logged: bool,
}

impl JournalSync {
    fn new(dir: PathBuf) -> Self {
        JournalSync {
            dir,
            open: None,
            fallback_logged: false,
        }
    }

    fn sync(&mut self, db: &Database) -> Result<(), fjall::Error> {
        db.persist(PersistMode::Buffer)?;
        match self.active_handle() {
            Ok(file) => file.sync_data().map_err(fjall::Error::from),
            Err(e) => {
                if !self.fallback_logged {
                    self.fallback_logged = true;
                    tracing::warn!(error = %e, dir = %self.dir.display(),
                        "cannot open fjall's active journal; syncing through fjall, which holds writes meanwhile (logged once)");
                }
                db.persist(PersistMode::SyncData)
            }
        }
    }

    fn active_handle(&mut self) -> std::io::Result<&std::fs::File> {
        let active = active_journal(&self.dir)?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no journal file"))?;
        if self.open.as_ref().is_none_or(|(path, _)| *path != active) {
            let file = std::fs::File::open(&active)?;
            self.open = Some((active, file));
        }
        let (_, file) = self.open.as_ref().ok_or(std::io::ErrorKind::NotFound)?;
        Ok(file)
    }
}

/// The journal fjall writes to: the highest-numbered `N.jnl` in its
/// directory (it rotates to the next number, and removes old ones once
/// their data is in tables).
fn active_journal(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let mut active: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            if active.as_ref().is_none_or(|(highest, _)| number > *highest) {
                active = Some((number, path));
            }
        }
    }
    Ok(active.map(|(_, path)| path))
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
    fn the_active_journal_is_the_highest_numbered_one() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["9.jnl", "10.jnl", "2.jnl", "11.jnl.tmp", "x.jnl", "lock"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(
            active_journal(dir.path()).unwrap(),
            Some(dir.path().join("10.jnl"))
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(active_journal(empty.path()).unwrap(), None);
    }

    #[test]
    fn the_file_synced_is_the_one_fjall_writes_to() {
        let dir = tempfile::tempdir().unwrap();
        let engine =
            DiskEngine::open(dir.path(), SyncPolicy::Periodic(Duration::from_secs(3600))).unwrap();
        engine.put(b"a-key-to-find", b"a-value-to-find").unwrap();
        let mut journal = JournalSync::new(dir.path().to_path_buf());
        journal.sync(&engine.db).unwrap();
        assert!(!journal.fallback_logged, "the journal was found");
        let (path, _) = journal.open.as_ref().expect("a journal handle");
        let bytes = std::fs::read(path).unwrap();
        let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(holds(b"a-key-to-find") && holds(b"a-value-to-find"));
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
