//! Measures fjall and redb under dnd's durability contract: a write is
//! acknowledged only once it survives `kill -9` of the process.
//!
//! `cargo run --release --manifest-path bench/storage-engines/Cargo.toml`
//! prints a markdown table. Every figure comes from the same run, so the
//! ratios hold even on a noisy machine.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fjall::{Database, KeyspaceCreateOptions, PersistMode};
use rand::Rng;
use redb::{Durability, ReadableDatabase, TableDefinition};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const VALUE_BYTES: usize = 1024;
const LOADED_KEYS: usize = 100_000;
const GETS: usize = 200_000;
/// How long each write mode runs; fsync modes finish far fewer writes.
const WRITE_TIME: Duration = Duration::from_secs(4);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// fjall: journal flushed to OS buffers on each write.
    FjallBuffer,
    /// fjall: journal fdatasync'd on each write.
    FjallSync,
    /// redb: a transaction per write, committed without fsync.
    RedbNone,
    /// redb: a transaction per write, committed with fsync.
    RedbImmediate,
    /// redb: fsync'd transactions of 64 writes (what group commit could give).
    RedbImmediateBatch64,
}

impl Mode {
    const ALL: [Mode; 5] = [
        Mode::FjallBuffer,
        Mode::FjallSync,
        Mode::RedbNone,
        Mode::RedbImmediate,
        Mode::RedbImmediateBatch64,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::FjallBuffer => "fjall, flush to OS per write",
            Mode::FjallSync => "fjall, fdatasync per write",
            Mode::RedbNone => "redb, commit without fsync",
            Mode::RedbImmediate => "redb, fsync per write",
            Mode::RedbImmediateBatch64 => "redb, fsync per 64 writes",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Mode::FjallBuffer => "fjall-buffer",
            Mode::FjallSync => "fjall-sync",
            Mode::RedbNone => "redb-none",
            Mode::RedbImmediate => "redb-immediate",
            Mode::RedbImmediateBatch64 => "redb-batch64",
        }
    }

    fn from_arg(arg: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.arg() == arg)
    }

    fn is_fjall(self) -> bool {
        matches!(self, Mode::FjallBuffer | Mode::FjallSync)
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("user{i:012}").into_bytes()
}

/// One engine opened in one mode, writing and reading single keys.
enum Store {
    Fjall {
        db: Database,
        keyspace: fjall::Keyspace,
        sync: bool,
    },
    Redb {
        db: redb::Database,
        durability: Durability,
        batch: usize,
    },
}

impl Store {
    fn open(mode: Mode, dir: &Path) -> Store {
        if mode.is_fjall() {
            let db = Database::builder(dir.join("fjall"))
                .open()
                .expect("open fjall");
            let keyspace = db
                .keyspace("kv", KeyspaceCreateOptions::default)
                .expect("keyspace");
            Store::Fjall {
                db,
                keyspace,
                sync: mode == Mode::FjallSync,
            }
        } else {
            let db = redb::Database::create(dir.join("redb")).expect("open redb");
            let (durability, batch) = match mode {
                Mode::RedbNone => (Durability::None, 1),
                Mode::RedbImmediateBatch64 => (Durability::Immediate, 64),
                _ => (Durability::Immediate, 1),
            };
            Store::Redb {
                db,
                durability,
                batch,
            }
        }
    }

    /// Writes `keys` starting at `first`; returns when all are acknowledged
    /// under the mode's policy.
    fn put_batch(&self, first: usize, value: &[u8]) -> usize {
        match self {
            Store::Fjall { db, keyspace, sync } => {
                keyspace.insert(key(first), value).expect("insert");
                if *sync {
                    db.persist(PersistMode::SyncData).expect("persist");
                }
                1
            }
            Store::Redb {
                db,
                durability,
                batch,
            } => {
                let mut txn = db.begin_write().expect("begin");
                txn.set_durability(*durability).expect("durability");
                {
                    let mut table = txn.open_table(TABLE).expect("table");
                    for i in first..first + batch {
                        table.insert(key(i).as_slice(), value).expect("insert");
                    }
                }
                txn.commit().expect("commit");
                *batch
            }
        }
    }

    fn get(&self, i: usize) -> Option<Vec<u8>> {
        match self {
            Store::Fjall { keyspace, .. } => keyspace.get(key(i)).expect("get").map(|v| v.to_vec()),
            Store::Redb { db, .. } => {
                let txn = db.begin_read().expect("read");
                // After a kill, not even the table may have reached the disk.
                let table = match txn.open_table(TABLE) {
                    Ok(table) => table,
                    Err(redb::TableError::TableDoesNotExist(_)) => return None,
                    Err(e) => panic!("open table: {e}"),
                };
                table
                    .get(key(i).as_slice())
                    .expect("get")
                    .map(|v| v.value().to_vec())
            }
        }
    }

    /// Loads many keys fast (big transactions / no per-write sync), then
    /// makes everything durable.
    fn load(&self, count: usize, value: &[u8]) {
        match self {
            Store::Fjall { db, keyspace, .. } => {
                for i in 0..count {
                    keyspace.insert(key(i), value).expect("insert");
                }
                db.persist(PersistMode::SyncAll).expect("persist");
            }
            Store::Redb { db, .. } => {
                for chunk in (0..count).collect::<Vec<_>>().chunks(10_000) {
                    let txn = db.begin_write().expect("begin");
                    {
                        let mut table = txn.open_table(TABLE).expect("table");
                        for &i in chunk {
                            table.insert(key(i).as_slice(), value).expect("insert");
                        }
                    }
                    txn.commit().expect("commit");
                }
            }
        }
    }
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

struct Row {
    mode: Mode,
    puts_per_sec: f64,
    gets_per_sec: f64,
    bytes_per_key: f64,
    lost_after_kill: usize,
    acked_before_kill: usize,
}

fn measure(mode: Mode) -> Row {
    let value = vec![0xabu8; VALUE_BYTES];
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(mode, dir.path());
    let start = Instant::now();
    let mut written = 0;
    while start.elapsed() < WRITE_TIME {
        written += store.put_batch(written, &value);
    }
    let puts_per_sec = written as f64 / start.elapsed().as_secs_f64();
    drop(store);

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(mode, dir.path());
    store.load(LOADED_KEYS, &value);
    let mut rng = rand::rng();
    let start = Instant::now();
    for _ in 0..GETS {
        let i = rng.random_range(0..LOADED_KEYS);
        assert!(store.get(i).is_some(), "a loaded key is missing");
    }
    let gets_per_sec = GETS as f64 / start.elapsed().as_secs_f64();
    drop(store);
    let bytes_per_key = dir_bytes(dir.path()) as f64 / LOADED_KEYS as f64;

    let (acked_before_kill, lost_after_kill) = kill_check(mode);
    Row {
        mode,
        puts_per_sec,
        gets_per_sec,
        bytes_per_key,
        lost_after_kill,
        acked_before_kill,
    }
}

/// A child process writes and reports each acknowledged key on stdout; it
/// is killed with SIGKILL after a second; the database is then reopened and
/// every acknowledged key looked up.
fn kill_check(mode: Mode) -> (usize, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--writer", mode.arg()])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(i) = line.trim().parse::<usize>() {
                acked.push(i);
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_secs(1));
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let acked = reader.join().expect("reader");
    let store = Store::open(mode, dir.path());
    let lost = acked.iter().filter(|&&i| store.get(i).is_none()).count();
    (acked.len(), lost)
}

/// The child side of [`kill_check`]: writes forever, printing each
/// acknowledged key index.
fn writer(mode: Mode, dir: PathBuf) {
    let store = Store::open(mode, &dir);
    let value = vec![0xcdu8; VALUE_BYTES];
    let mut out = std::io::stdout().lock();
    let mut next = 0;
    loop {
        let n = store.put_batch(next, &value);
        for i in next..next + n {
            writeln!(out, "{i}").expect("stdout");
        }
        out.flush().expect("flush");
        next += n;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--writer") {
        let mode = args.get(2).and_then(|m| Mode::from_arg(m)).expect("a mode");
        writer(mode, PathBuf::from(args.get(3).expect("a directory")));
        return;
    }
    let rows: Vec<Row> = Mode::ALL.into_iter().map(measure).collect();
    let best_put = rows.iter().map(|r| r.puts_per_sec).fold(0.0, f64::max);
    let best_get = rows.iter().map(|r| r.gets_per_sec).fold(0.0, f64::max);
    let raw = format!("user{:012}", 0).len() + VALUE_BYTES;
    println!(
        "{} KiB values, keys like `user000000000042`; {} keys loaded for GET and size.\n",
        VALUE_BYTES / 1024,
        LOADED_KEYS
    );
    println!("| engine and policy | PUT ops/s | × best PUT | GET ops/s | × best GET | disk bytes/key (raw {raw}) | acked before kill -9 | acked but lost |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.3} | {:.0} | {:.2} | {:.0} | {} | {} |",
            r.mode.name(),
            r.puts_per_sec,
            r.puts_per_sec / best_put,
            r.gets_per_sec,
            r.gets_per_sec / best_get,
            r.bytes_per_key,
            r.acked_before_kill,
            r.lost_after_kill
        );
    }
}
