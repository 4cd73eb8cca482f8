//! Proof under faults: five real `dnd` processes, started by the same
//! launcher as `dnd dev` ([`dnd::dev::DevCluster`]), under `kill -9` and
//! restarts, a pause past the suspicion timeout, partitions (held, flapping,
//! a ring where each node reaches only its neighbours) and a skewed clock,
//! while clients record every operation the cluster acknowledged. After the
//! faults heal, an independent checker reads every key with R=N through
//! every node and counts writes lost and deletes undone.
//!
//! Four workloads run together, each on keys of its own, each client
//! behaving as a real one would: it sends only the `X-Dnd-Context` a read
//! gave it (no header at all when the read gave none), never retries, and
//! gives up on a request after a few seconds.
//! - register: read a key through a random node, then write a unique value
//!   (or delete) through the same node with that read's context;
//! - register without context: blind PUTs of unique values and the odd
//!   blind DELETE, never a context;
//! - set (Jepsen's): a value is a comma-separated set of unique elements; a
//!   client reads, takes the union of every sibling's elements, adds one
//!   and writes the union back with the read's context;
//! - concurrent creates: a few clients read a fresh key at once (404), then
//!   all write it at the same moment with whatever context the 404 gave.
//!
//! The checker holds the cluster to what those clients were told:
//! - lost: an acknowledged value absent at the end, though no operation
//!   (acknowledged or not: an unanswered one may still have been applied)
//!   sent a context that named it, and no DELETE without a context on that
//!   key could have read it (one answered after the value's write was
//!   sent, or never answered: such a delete supersedes whatever its quorum
//!   read finds, which we cannot know). A write without
//!   a context supersedes nothing. For a set: an element of an acknowledged
//!   add absent from the union of the final siblings (elements are never
//!   removed);
//! - resurrected: a value present at the end though an acknowledged
//!   operation's context named it (a write or a delete);
//! - unknown: a value (or set element) at the end that no client wrote.
//!
//! Each scenario runs the workloads healthy for a few seconds first, so the
//! report can set availability and throughput during the fault against the
//! healthy figures (by side of a partition, too), and times how long after
//! the heal every node lists every member alive, and every replica agrees.
//!
//! Each node has its own loopback address (127.a.b.1 to .5), so a partition
//! is a set of nftables rules dropping packets between pairs of addresses on
//! `lo`; nodes open peer connections from their own address for that
//! reason. Partitions need root and `nft`: without them those scenarios say
//! so and pass, unless `DND_REQUIRE_NFT=1` (set by `.ci/run`). The skewed
//! clock uses libfaketime, likewise (`DND_REQUIRE_FAKETIME=1`). Every rule,
//! process and directory is removed on every way out, a panic included;
//! rules left by a test process that was killed are removed by the next run.
//!
//! The faulty phase lasts `DND_FAULT_SECONDS` (default 8; `bench/faults.sh`
//! runs 30); `DND_FAULTS_REPORT=FILE` appends one JSON line per scenario.
//! Scenarios run one at a time, each alone on the machine.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use dnd::dev::{metrics, DevCluster, DevOptions};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

const NODES: usize = 5;
const REGISTER_KEYS: usize = 24;
const REGISTER_CLIENTS: usize = 6;
const DELETE_SHARE: f64 = 0.1;
/// Enough keys that blind writes, which supersede nothing once the server
/// keeps them all as siblings, do not pile up on a few.
const BLIND_KEYS: usize = 16;
const BLIND_CLIENTS: usize = 2;
const BLIND_DELETE_SHARE: f64 = 0.05;
const SET_KEYS: usize = 8;
const SET_CLIENTS: usize = 3;
/// Clients that create each fresh key together.
const CREATE_CLIENTS: usize = 3;
/// Between two rounds of creates: a key per round, read at the end.
const CREATE_PAUSE: Duration = Duration::from_millis(250);
/// The workloads run this long before the fault, for the healthy figures.
const HEALTHY_SECONDS: f64 = 3.0;
/// How long a client leaves a node alone after it gave no answer.
const AVOID_SECONDS: f64 = 10.0;
/// A partition held past the minority's dead declarations lasts at least
/// this much longer.
const HOLD_AFTER_DEAD: f64 = 3.0;
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// From the heal until every replica agrees.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
/// Until the minority of a partition lists the majority dead.
const DEAD_TIMEOUT: Duration = Duration::from_secs(90);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Flags for every node: anti-entropy and hints often enough that a test
/// converges in seconds.
const NODE_ARGS: &[&str] = &[
    "--replicas",
    "3",
    "--read-quorum",
    "2",
    "--write-quorum",
    "2",
    "--anti-entropy-interval-ms",
    "500",
    "--hint-interval-ms",
    "500",
    "--replica-timeout-ms",
    "1000",
];

fn fault_seconds() -> u64 {
    std::env::var("DND_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

/// One scenario at a time: five processes each is what two cores hold.
fn alone() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// HTTP

struct Reply {
    status: u16,
    context: Option<String>,
    body: Vec<u8>,
}

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    context: Option<&str>,
    body: &[u8],
) -> Result<Reply, String> {
    let headers: Vec<(&str, &str)> = context.map(|c| ("X-Dnd-Context", c)).into_iter().collect();
    let reply = dnd::dev::request(addr, method, path, &headers, body, REQUEST_TIMEOUT)?;
    Ok(Reply {
        status: reply.status,
        context: reply.header("x-dnd-context").map(str::to_string),
        body: reply.body,
    })
}

/// The values a read answered: one (200), several siblings (300), none
/// (404); `None` for any other answer.
fn values_of(reply: &Reply) -> Option<BTreeSet<String>> {
    match reply.status {
        200 => Some(BTreeSet::from([
            String::from_utf8_lossy(&reply.body).to_string()
        ])),
        404 => Some(BTreeSet::new()),
        300 => {
            let parsed: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
            parsed["siblings"]
                .as_array()?
                .iter()
                .map(|s| s["value"].as_str().map(str::to_string))
                .collect()
        }
        _ => None,
    }
}

/// A read as a client sees it: the values and the context, if the answer
/// carried one. `Err(true)` if the node gave no answer at all, `Err(false)`
/// if it answered other than 200, 300 or 404.
fn read(node: SocketAddr, key: &str) -> Result<(BTreeSet<String>, Option<String>), bool> {
    let reply = http(node, "GET", &format!("/kv/{key}"), None, b"").map_err(|_| true)?;
    let values = values_of(&reply).ok_or(false)?;
    Ok((values, reply.context))
}

/// Sends a write or delete with `context` as its header (none when `None`);
/// whether the cluster acknowledged it, or `Err` if the node gave no answer.
fn send(node: SocketAddr, key: &str, kind: &Kind, context: Option<&str>) -> Result<bool, ()> {
    let path = format!("/kv/{key}");
    let reply = match kind {
        Kind::Write(value) | Kind::Add { value, .. } => {
            http(node, "PUT", &path, context, value.as_bytes())
        }
        Kind::Delete => http(node, "DELETE", &path, context, b""),
        Kind::FailedRead => return Ok(false),
    };
    reply.map(|r| r.status == 204).map_err(|_| ())
}

/// The elements of one set value.
fn elements_of(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').filter(|e| !e.is_empty())
}

/// Who lists which member (by gossip address) in which state.
fn states_seen_by(http_addr: SocketAddr) -> Option<BTreeMap<String, String>> {
    let reply = http(http_addr, "GET", "/cluster/members", None, b"").ok()?;
    let members: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    members
        .as_array()?
        .iter()
        .map(|m| {
            Some((
                m["gossip_addr"].as_str()?.to_string(),
                m["state"].as_str()?.to_string(),
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Partitions: nftables rules on loopback

/// Packets between the cut pairs of addresses are dropped while this lives.
struct Partition {
    table: String,
}

fn nft_available() -> bool {
    Command::new("nft")
        .args(["list", "tables"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn nft(script: &str) -> bool {
    let Ok(mut child) = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    child.wait().is_ok_and(|s| s.success())
}

/// Tables of test processes that no longer run (killed mid-test).
fn remove_stale_tables() {
    let Ok(out) = Command::new("nft").args(["list", "tables"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(table) = line.strip_prefix("table inet ") else {
            continue;
        };
        let Some(pid) = table
            .strip_prefix("dnd_faults_")
            .and_then(|rest| rest.split('_').next())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            nft(&format!("delete table inet {table}\n"));
        }
    }
}

impl Partition {
    /// No packet crosses between two of the groups.
    fn new(groups: &[Vec<IpAddr>]) -> Partition {
        let mut cuts = Vec::new();
        for (i, a) in groups.iter().enumerate() {
            for b in &groups[i + 1..] {
                cuts.push((a.clone(), b.clone()));
            }
        }
        Partition::cut(&cuts)
    }

    /// No packet crosses between the two sides of any pair, either way:
    /// the general case, for cuts that are not a partition into groups
    /// (a ring where each node reaches only its neighbours).
    fn cut(pairs: &[(Vec<IpAddr>, Vec<IpAddr>)]) -> Partition {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        remove_stale_tables();
        let table = format!(
            "dnd_faults_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let set = |group: &Vec<IpAddr>| {
            group
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut rules = String::new();
        for (a, b) in pairs {
            for (from, to) in [(a, b), (b, a)] {
                rules.push_str(&format!(
                    "    ip saddr {{ {} }} ip daddr {{ {} }} drop\n",
                    set(from),
                    set(to)
                ));
            }
        }
        let script = format!(
            "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n{rules}  }}\n}}\n"
        );
        assert!(nft(&script), "nft refused the partition:\n{script}");
        Partition { table }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        nft(&format!("delete table inet {}\n", self.table));
    }
}

// ---------------------------------------------------------------------------
// The workloads

/// Which workload an operation belongs to; each has keys of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Load {
    Register,
    Blind,
    Set,
    Create,
}

impl Load {
    const ALL: [Load; 4] = [Load::Register, Load::Blind, Load::Set, Load::Create];

    fn name(self) -> &'static str {
        match self {
            Load::Register => "register",
            Load::Blind => "register_no_context",
            Load::Set => "set",
            Load::Create => "concurrent_creates",
        }
    }

    fn key_prefix(self) -> &'static str {
        match self {
            Load::Register => "reg-",
            Load::Blind => "blind-",
            Load::Set => "set-",
            Load::Create => "new-",
        }
    }

    fn of_key(key: &str) -> Load {
        Load::ALL
            .into_iter()
            .find(|l| key.starts_with(l.key_prefix()))
            .unwrap_or(Load::Register)
    }

    /// Acknowledged operations a scenario needs before its verdict on this
    /// workload proves anything.
    fn enough(self) -> usize {
        match self {
            Load::Register => 50,
            Load::Blind | Load::Set => 20,
            Load::Create => 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Write(String),
    Delete,
    /// A set's new element, and the value written: the union it joins.
    Add {
        element: String,
        value: String,
    },
    /// A read that failed, so the client wrote nothing: it counts only
    /// against availability.
    FailedRead,
}

#[derive(Debug, Clone)]
struct Op {
    load: Load,
    key: String,
    kind: Kind,
    /// The values of the read whose context the operation sent: what it
    /// supersedes. `None` when it sent no context: it names nothing.
    named: Option<BTreeSet<String>>,
    acknowledged: bool,
    /// When it was sent, in seconds since the workloads began, and through
    /// which node (an index).
    sent: f64,
    /// When its answer came (or the client gave up).
    answered: f64,
    node: usize,
}

/// What every client thread shares: where to send, when to stop, and the
/// clock its operations are timed by.
#[derive(Clone)]
struct Client {
    nodes: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    rng: StdRng,
    ops: Vec<Op>,
    /// Per node, until when this client leaves it alone: like a load
    /// balancer's health check or a client's connection pool, it stops
    /// sending to an endpoint that gave no answer at all (a paused node)
    /// for a while, rather than spending a timeout on it again and again.
    /// A node that answers, even 503, is not avoided.
    avoid_until: Vec<f64>,
}

impl Client {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn pick_node(&mut self) -> usize {
        let now = self.now();
        let usable: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.avoid_until[i] <= now)
            .collect();
        match usable.choose(&mut self.rng) {
            Some(&node) => node,
            None => self.rng.random_range(0..self.nodes.len()),
        }
    }

    fn no_answer_from(&mut self, node: usize) {
        self.avoid_until[node] = self.now() + AVOID_SECONDS;
    }

    /// Reads `key` through `node`; `None` if it failed (recorded).
    fn read(
        &mut self,
        load: Load,
        key: &str,
        node: usize,
    ) -> Option<(BTreeSet<String>, Option<String>)> {
        let sent = self.now();
        match read(self.nodes[node], key) {
            Ok(seen) => Some(seen),
            Err(no_answer) => {
                if no_answer {
                    self.no_answer_from(node);
                }
                self.failed_read(load, key.to_string(), node, sent);
                None
            }
        }
    }

    fn failed_read(&mut self, load: Load, key: String, node: usize, sent: f64) {
        self.ops.push(Op {
            load,
            key,
            kind: Kind::FailedRead,
            named: None,
            acknowledged: false,
            sent,
            answered: self.now(),
            node,
        });
    }

    /// Sends `kind` with the read's context if it gave one (and then the
    /// operation names what the read saw), with no header if it did not.
    fn write(
        &mut self,
        load: Load,
        key: String,
        node: usize,
        kind: Kind,
        read: Option<(BTreeSet<String>, Option<String>)>,
    ) {
        let (context, named) = match read {
            Some((seen, Some(context))) => (Some(context), Some(seen)),
            _ => (None, None),
        };
        let sent = self.now();
        let acknowledged =
            send(self.nodes[node], &key, &kind, context.as_deref()).unwrap_or_else(|()| {
                self.no_answer_from(node);
                false
            });
        self.ops.push(Op {
            load,
            key,
            kind,
            named,
            acknowledged,
            sent,
            answered: self.now(),
            node,
        });
    }
}

/// Read, then write a unique value or delete with the read's context.
fn register_client(mut c: Client, id: usize) -> Vec<Op> {
    let mut seq = 0u64;
    while !c.stopped() {
        let key = format!("reg-{}", c.rng.random_range(0..REGISTER_KEYS));
        let node = c.pick_node();
        let Some(seen) = c.read(Load::Register, &key, node) else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        seq += 1;
        let kind = if c.rng.random_bool(DELETE_SHARE) {
            Kind::Delete
        } else {
            Kind::Write(format!("r{id}-{seq}"))
        };
        c.write(Load::Register, key, node, kind, Some(seen));
        thread::sleep(Duration::from_millis(3));
    }
    c.ops
}

/// Blind PUTs of unique values, the odd blind DELETE; never a context.
fn blind_client(mut c: Client, id: usize) -> Vec<Op> {
    let mut seq = 0u64;
    while !c.stopped() {
        let key = format!("blind-{}", c.rng.random_range(0..BLIND_KEYS));
        let node = c.pick_node();
        seq += 1;
        let kind = if c.rng.random_bool(BLIND_DELETE_SHARE) {
            Kind::Delete
        } else {
            Kind::Write(format!("b{id}-{seq}"))
        };
        c.write(Load::Blind, key, node, kind, None);
        thread::sleep(Duration::from_millis(10));
    }
    c.ops
}

/// Read a set, add a unique element to the union of its siblings, write
/// the union back with the read's context.
fn set_client(mut c: Client, id: usize) -> Vec<Op> {
    let mut seq = 0u64;
    while !c.stopped() {
        let key = format!("set-{}", c.rng.random_range(0..SET_KEYS));
        let node = c.pick_node();
        let Some(seen) = c.read(Load::Set, &key, node) else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        seq += 1;
        let element = format!("s{id}-{seq}");
        let mut elements: BTreeSet<&str> = seen.0.iter().flat_map(|v| elements_of(v)).collect();
        elements.insert(&element);
        let value = elements.into_iter().collect::<Vec<_>>().join(",");
        let kind = Kind::Add { element, value };
        c.write(Load::Set, key, node, kind, Some(seen));
        thread::sleep(Duration::from_millis(3));
    }
    c.ops
}

/// Whether the clients at `barrier` start another round: one decides for
/// all (from `stopped`), or some would wait at the barrier for ever.
fn all_go_on(barrier: &Barrier, go: &AtomicBool, stopped: bool) -> bool {
    if barrier.wait().is_leader() {
        go.store(!stopped, Ordering::Relaxed);
    }
    barrier.wait();
    go.load(Ordering::Relaxed)
}

/// One of [`CREATE_CLIENTS`] that, round after round, read a fresh key
/// together and then all write it at the same moment, each through a node
/// of its own choosing, with whatever context the read gave.
fn create_client(mut c: Client, id: usize, barrier: Arc<Barrier>, go: Arc<AtomicBool>) -> Vec<Op> {
    let mut round = 0u64;
    loop {
        if !all_go_on(&barrier, &go, c.stopped()) {
            return c.ops;
        }
        round += 1;
        let key = format!("new-{round}");
        let node = c.pick_node();
        let seen = c.read(Load::Create, &key, node);
        barrier.wait();
        match seen {
            None => {}
            Some(seen) => {
                let kind = Kind::Write(format!("n{id}-{round}"));
                c.write(Load::Create, key, node, kind, Some(seen));
            }
        }
        thread::sleep(CREATE_PAUSE);
    }
}

/// Every client of every workload, running until [`Workloads::finish`].
struct Workloads {
    stop: Arc<AtomicBool>,
    epoch: Instant,
    threads: Vec<thread::JoinHandle<Vec<Op>>>,
    model: Vec<thread::JoinHandle<ModelRecord>>,
}

impl Workloads {
    fn start(nodes: Vec<SocketAddr>, seed: u64) -> Workloads {
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let client = |n: u64| Client {
            nodes: nodes.clone(),
            stop: stop.clone(),
            epoch,
            rng: StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(n)),
            ops: Vec::new(),
            avoid_until: vec![0.0; nodes.len()],
        };
        let mut threads = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            client(n)
        };
        for id in 0..REGISTER_CLIENTS {
            let c = next();
            threads.push(thread::spawn(move || register_client(c, id)));
        }
        for id in 0..BLIND_CLIENTS {
            let c = next();
            threads.push(thread::spawn(move || blind_client(c, id)));
        }
        for id in 0..SET_CLIENTS {
            let c = next();
            threads.push(thread::spawn(move || set_client(c, id)));
        }
        let barrier = Arc::new(Barrier::new(CREATE_CLIENTS));
        let go = Arc::new(AtomicBool::new(true));
        for id in 0..CREATE_CLIENTS {
            let (c, barrier, go) = (next(), barrier.clone(), go.clone());
            threads.push(thread::spawn(move || create_client(c, id, barrier, go)));
        }
        let mut model = Vec::new();
        for id in 0..TTL_CLIENTS {
            let c = next();
            model.push(thread::spawn(move || ttl_client(c, id)));
        }
        let c = next();
        model.push(thread::spawn(move || lister_client(c)));
        let barrier = Arc::new(Barrier::new(CREATE_CLIENTS));
        let go = Arc::new(AtomicBool::new(true));
        let tally = Arc::new(Mutex::new(BTreeMap::new()));
        for id in 0..CREATE_CLIENTS {
            let (c, barrier, go, tally) = (next(), barrier.clone(), go.clone(), tally.clone());
            model.push(thread::spawn(move || {
                if_none_match_client(c, id, barrier, go, tally)
            }));
        }
        Workloads {
            stop,
            epoch,
            threads,
            model,
        }
    }

    fn finish(mut self) -> (Vec<Op>, ModelRecord) {
        self.stop.store(true, Ordering::Relaxed);
        let mut ops = Vec::new();
        for thread in std::mem::take(&mut self.threads) {
            ops.extend(thread.join().expect("a client thread panicked"));
        }
        let mut record = ModelRecord::default();
        for thread in std::mem::take(&mut self.model) {
            record.absorb(thread.join().expect("a client thread panicked"));
        }
        (ops, record)
    }
}

/// A scenario that panics stops its clients too.
impl Drop for Workloads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every key the checker reads at the end: each workload's fixed keys and
/// every key created.
fn keys_of(ops: &[Op]) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = ops.iter().map(|op| op.key.clone()).collect();
    keys.extend((0..REGISTER_KEYS).map(|k| format!("reg-{k}")));
    keys.extend((0..BLIND_KEYS).map(|k| format!("blind-{k}")));
    keys.extend((0..SET_KEYS).map(|k| format!("set-{k}")));
    keys
}

// ---------------------------------------------------------------------------
// The checker

#[derive(Debug, Default, Clone)]
struct Verdict {
    tried: usize,
    acknowledged: usize,
    acknowledged_deletes: usize,
    reads_failed: usize,
    lost: Vec<(String, String)>,
    resurrected: Vec<(String, String)>,
    unknown: Vec<(String, String)>,
}

/// Each workload's verdict on the final values of every key.
fn check(ops: &[Op], finals: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<Load, Verdict> {
    let mut verdicts: BTreeMap<Load, Verdict> = Load::ALL
        .into_iter()
        .map(|l| (l, Verdict::default()))
        .collect();
    for op in ops {
        let verdict = verdicts.entry(op.load).or_default();
        if op.kind == Kind::FailedRead {
            verdict.reads_failed += 1;
            continue;
        }
        verdict.tried += 1;
        if op.acknowledged {
            verdict.acknowledged += 1;
            if op.kind == Kind::Delete {
                verdict.acknowledged_deletes += 1;
            }
        }
    }
    check_registers(ops, finals, &mut verdicts);
    check_sets(ops, finals, &mut verdicts);
    verdicts
}

/// Registers (with or without context, created concurrently): a value may
/// be missing only if a context named it, or a delete without a context
/// was sent after it; it may be present only if no acknowledged context
/// named it.
fn check_registers(
    ops: &[Op],
    finals: &BTreeMap<String, BTreeSet<String>>,
    verdicts: &mut BTreeMap<Load, Verdict>,
) {
    let ops: Vec<&Op> = ops.iter().filter(|op| op.load != Load::Set).collect();
    let mut named_by_any: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut named_by_acknowledged: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut written: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut blind_deletes: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for op in &ops {
        for value in op.named.iter().flatten() {
            named_by_any.insert((&op.key, value));
            if op.acknowledged {
                named_by_acknowledged.insert((&op.key, value));
            }
        }
        match &op.kind {
            Kind::Write(value) => {
                written.insert((&op.key, value));
            }
            // A blind delete supersedes what its quorum read found, and
            // that read came before its answer; one never answered may
            // still be carried out at any time (a node that resumes after
            // a pause serves the requests queued meanwhile).
            Kind::Delete if op.named.is_none() => {
                let read_by = if op.acknowledged {
                    op.answered
                } else {
                    f64::INFINITY
                };
                blind_deletes.entry(&op.key).or_default().push(read_by);
            }
            _ => {}
        }
    }
    let empty = BTreeSet::new();
    for op in ops.iter().filter(|op| op.acknowledged) {
        let Kind::Write(value) = &op.kind else {
            continue;
        };
        let present = finals.get(&op.key).unwrap_or(&empty).contains(value);
        let named = named_by_any.contains(&(op.key.as_str(), value.as_str()));
        let deleted_later = blind_deletes
            .get(op.key.as_str())
            .is_some_and(|read_by| read_by.iter().any(|&t| t > op.sent));
        if !present && !named && !deleted_later {
            let verdict = verdicts.entry(op.load).or_default();
            verdict.lost.push((op.key.clone(), value.clone()));
        }
    }
    for (key, values) in finals {
        let load = Load::of_key(key);
        if load == Load::Set {
            continue;
        }
        let verdict = verdicts.entry(load).or_default();
        for value in values {
            let entry = (key.as_str(), value.as_str());
            if named_by_acknowledged.contains(&entry) {
                verdict.resurrected.push((key.clone(), value.clone()));
            }
            if !written.contains(&entry) {
                verdict.unknown.push((key.clone(), value.clone()));
            }
        }
    }
}

/// Sets: every element of every acknowledged add is in the union of the
/// final siblings, and every element there was added by someone.
fn check_sets(
    ops: &[Op],
    finals: &BTreeMap<String, BTreeSet<String>>,
    verdicts: &mut BTreeMap<Load, Verdict>,
) {
    let verdict = verdicts.entry(Load::Set).or_default();
    let unions: BTreeMap<&str, BTreeSet<&str>> = finals
        .iter()
        .filter(|(key, _)| Load::of_key(key) == Load::Set)
        .map(|(key, values)| {
            let union = values.iter().flat_map(|v| elements_of(v)).collect();
            (key.as_str(), union)
        })
        .collect();
    let mut added: BTreeSet<(&str, &str)> = BTreeSet::new();
    for op in ops {
        let Kind::Add { element, .. } = &op.kind else {
            continue;
        };
        added.insert((&op.key, element));
        let present = unions
            .get(op.key.as_str())
            .is_some_and(|union| union.contains(element.as_str()));
        if op.acknowledged && !present {
            verdict.lost.push((op.key.clone(), element.clone()));
        }
    }
    for (key, union) in &unions {
        for element in union {
            if !added.contains(&(*key, *element)) {
                verdict.unknown.push((key.to_string(), element.to_string()));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The harness

/// A stretch of time during which `minority` was cut off from the others.
#[derive(Debug, Clone)]
struct Split {
    from: f64,
    to: f64,
    minority: Vec<usize>,
}

struct Harness {
    cluster: DevCluster,
    _dir: tempfile::TempDir,
    rng: StdRng,
    /// The workloads' clock.
    epoch: Instant,
    /// The cut in force, since when, and its minority (empty when it has no
    /// sides, as the ring).
    cut: Option<(Partition, f64, Vec<usize>)>,
    splits: Vec<Split>,
    /// Figures a fault adds to its scenario's report.
    notes: serde_json::Map<String, serde_json::Value>,
}

/// A loopback /24 of our own (127.a.b.0) and ports free on its first
/// address, so scenarios never meet other tests' nodes.
fn layout(rng: &mut StdRng) -> (Ipv4Addr, u16, u16) {
    loop {
        let base = Ipv4Addr::new(127, rng.random_range(64..250), rng.random_range(1..250), 1);
        let free = |port: u16| {
            UdpSocket::bind((base, port)).is_ok() && TcpListener::bind((base, port)).is_ok()
        };
        let gossip = rng.random_range(20_000..40_000);
        let http = gossip + 1;
        if free(gossip) && free(http) {
            return (base, gossip, http);
        }
    }
}

impl Harness {
    fn start(seed: u64, env_for: impl Fn(usize) -> Vec<(String, String)>) -> Harness {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().expect("temp dir");
        let (address, gossip_port, http_port) = layout(&mut rng);
        let options = DevOptions {
            binary: env!("CARGO_BIN_EXE_dnd").into(),
            nodes: NODES,
            address,
            distinct_addresses: true,
            gossip_port,
            http_port,
            data_dir: dir.path().to_path_buf(),
            node_args: NODE_ARGS.iter().map(|s| s.to_string()).collect(),
        };
        let mut cluster = DevCluster::new(options).expect("lay out the cluster");
        for i in 0..NODES {
            cluster.nodes[i].env = env_for(i);
            cluster.spawn(i).expect("start a node");
            if i == 0 {
                // The others join through it: let it listen first.
                wait_for(START_TIMEOUT, "the first node to serve", || {
                    http(cluster.nodes[0].http_addr(), "GET", "/health", None, b"")
                        .is_ok_and(|r| r.status == 200)
                });
            }
        }
        cluster
            .wait_converged(START_TIMEOUT)
            .unwrap_or_else(|e| panic!("the cluster did not form: {e}"));
        Harness {
            cluster,
            _dir: dir,
            rng,
            epoch: Instant::now(),
            cut: None,
            splits: Vec::new(),
            notes: serde_json::Map::new(),
        }
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn note(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.notes.insert(name.to_string(), value.into());
    }

    fn http_addrs(&self) -> Vec<SocketAddr> {
        self.cluster.nodes.iter().map(|n| n.http_addr()).collect()
    }

    fn addresses(&self, nodes: &[usize]) -> Vec<IpAddr> {
        nodes
            .iter()
            .map(|&i| self.cluster.nodes[i].address)
            .collect()
    }

    fn gossip_addr(&self, i: usize) -> String {
        self.cluster.nodes[i].gossip_addr().to_string()
    }

    fn restart(&mut self, i: usize) {
        self.cluster
            .spawn(i)
            .unwrap_or_else(|e| panic!("restart node {i}: {e}"));
    }

    /// Cuts `minority` off from the other nodes, in place of any cut in
    /// force (the new rules go in before the old come out, so the cluster
    /// is never whole in between).
    fn split(&mut self, minority: &[usize]) {
        let majority: Vec<usize> = (0..NODES).filter(|i| !minority.contains(i)).collect();
        let partition = Partition::new(&[self.addresses(minority), self.addresses(&majority)]);
        self.enforce(partition, minority.to_vec());
    }

    /// Each node reaches only its two neighbours in a ring of five.
    fn ring(&mut self) {
        let mut pairs = Vec::new();
        for i in 0..NODES {
            for j in i + 1..NODES {
                let neighbours = j == i + 1 || (i == 0 && j == NODES - 1);
                if !neighbours {
                    pairs.push((self.addresses(&[i]), self.addresses(&[j])));
                }
            }
        }
        self.enforce(Partition::cut(&pairs), Vec::new());
    }

    fn enforce(&mut self, partition: Partition, minority: Vec<usize>) {
        let now = self.now();
        if let Some(old) = self.cut.replace((partition, now, minority)) {
            self.record(old, now);
        }
    }

    fn record(&mut self, (partition, from, minority): (Partition, f64, Vec<usize>), to: f64) {
        drop(partition);
        if !minority.is_empty() {
            self.splits.push(Split { from, to, minority });
        }
    }

    /// Ends every fault: the rules come out, a paused node runs again, a
    /// killed one restarts.
    fn heal(&mut self) {
        if let Some(old) = self.cut.take() {
            let now = self.now();
            self.record(old, now);
        }
        for i in 0..NODES {
            let _ = self.cluster.signal(i, "CONT");
            if !self.cluster.nodes[i].is_running() {
                self.restart(i);
            }
        }
    }

    /// Seconds from `healed` until every node lists every member alive.
    fn rejoin(&mut self, healed: Instant) -> f64 {
        self.cluster
            .wait_converged(CONVERGE_TIMEOUT)
            .unwrap_or_else(|e| panic!("the cluster did not re-form after the faults: {e}"));
        healed.elapsed().as_secs_f64()
    }

    /// Seconds from `healed` until every replica agrees: the same values
    /// for every key through every node with R=N, no hints waiting, and
    /// anti-entropy finding nothing to repair for a few rounds on every
    /// node; and those values.
    fn converge(
        &mut self,
        healed: Instant,
        keys: &BTreeSet<String>,
    ) -> (BTreeMap<String, BTreeSet<String>>, f64) {
        let nodes = self.http_addrs();
        let deadline = healed + CONVERGE_TIMEOUT;
        let mut not_yet = String::from("nothing checked");
        loop {
            assert!(
                Instant::now() < deadline,
                "the replicas did not agree within {CONVERGE_TIMEOUT:?} of the heal: {not_yet}"
            );
            let checked_at = healed.elapsed().as_secs_f64();
            let before = counters(&nodes);
            let finals = match read_all(&nodes, keys) {
                Ok(finals) => finals,
                Err(why) => {
                    not_yet = why;
                    thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            // A few anti-entropy rounds on every node, repairing nothing.
            let rounds_due: Vec<u64> = before.iter().map(|c| c.rounds + 3).collect();
            let quiet = wait_until(deadline, || {
                let now = counters(&nodes);
                now.iter()
                    .zip(&rounds_due)
                    .all(|(c, due)| c.rounds >= *due)
                    .then_some(now)
            });
            let Some(after) = quiet else {
                not_yet = format!("anti-entropy rounds stalled: {before:?}");
                continue;
            };
            let unchanged = before.iter().zip(&after).all(|(b, a)| {
                a.repaired == b.repaired && a.read_repairs == b.read_repairs && a.hints == 0
            });
            if !unchanged {
                not_yet = format!("still repairing: before {before:?}, after {after:?}");
                continue;
            }
            match read_all(&nodes, keys) {
                Ok(again) if again == finals => return (finals, checked_at),
                Ok(_) => not_yet = "the answers changed between two reads".into(),
                Err(why) => not_yet = why,
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Counters {
    rounds: u64,
    repaired: u64,
    read_repairs: u64,
    hints: u64,
}

/// One `/metrics` fetch per node; what a node does not report counts as
/// not converged (and no round done).
fn counters(nodes: &[SocketAddr]) -> Vec<Counters> {
    const NAMES: [&str; 4] = [
        "dnd_anti_entropy_rounds_total",
        "dnd_anti_entropy_keys_repaired_total",
        "dnd_kv_read_repairs_total",
        "dnd_hints_pending",
    ];
    nodes
        .iter()
        .map(|&n| {
            let values = metrics(n, &NAMES).unwrap_or_default();
            let get = |i: usize| values.get(i).copied().flatten();
            Counters {
                rounds: get(0).unwrap_or(0),
                repaired: get(1).unwrap_or(u64::MAX),
                read_repairs: get(2).unwrap_or(u64::MAX),
                hints: get(3).unwrap_or(u64::MAX),
            }
        })
        .collect()
}

/// Every key read with R=N through every node; an error unless every read
/// succeeded and all nodes answered the same.
fn read_all(
    nodes: &[SocketAddr],
    keys: &BTreeSet<String>,
) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut finals = BTreeMap::new();
    for key in keys {
        let mut agreed: Option<BTreeSet<String>> = None;
        for &node in nodes {
            let reply = http(node, "GET", &format!("/kv/{key}?r=all"), None, b"")
                .map_err(|e| format!("reading {key} through {node}: {e}"))?;
            let values = values_of(&reply).ok_or_else(|| {
                format!(
                    "reading {key} through {node}: {} {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                )
            })?;
            match &agreed {
                Some(seen) if *seen != values => {
                    return Err(format!(
                        "{key}: {node} answered {values:?}, another {seen:?}"
                    ))
                }
                _ => agreed = Some(values),
            }
        }
        finals.insert(key.clone(), agreed.unwrap_or_default());
    }
    Ok(finals)
}

fn wait_until<T>(deadline: Instant, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for(timeout: Duration, what: &str, mut probe: impl FnMut() -> bool) {
    let found = wait_until(Instant::now() + timeout, || probe().then_some(()));
    assert!(
        found.is_some(),
        "timed out after {timeout:?} waiting for {what}"
    );
}

// ---------------------------------------------------------------------------
// A scenario and its figures

fn round_to(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// How many operations (a failed read counts as one) were tried, how many
/// acknowledged per second over `seconds`, and which share.
fn availability<'a>(ops: impl Iterator<Item = &'a Op>, seconds: f64) -> serde_json::Value {
    let (mut tried, mut acknowledged) = (0usize, 0usize);
    for op in ops {
        tried += 1;
        acknowledged += usize::from(op.acknowledged);
    }
    json!({
        "tried": tried,
        "acknowledged_per_second": (seconds > 0.0).then(|| round_to(acknowledged as f64 / seconds, 1)),
        "acknowledged_share": (tried > 0).then(|| round_to(acknowledged as f64 / tried as f64, 3)),
    })
}

/// Availability before the fault, during it, and during partitions by the
/// side of the node an operation went through.
fn availability_figures(ops: &[Op], fault: (f64, f64), splits: &[Split]) -> serde_json::Value {
    let (from, to) = fault;
    let mut figures = json!({
        "healthy": availability(ops.iter().filter(|op| op.sent < from), from),
        "fault": availability(ops.iter().filter(|op| op.sent >= from && op.sent < to), to - from),
    });
    if !splits.is_empty() {
        let on_side = |op: &Op, minority: bool| {
            splits.iter().any(|s| {
                op.sent >= s.from && op.sent < s.to && s.minority.contains(&op.node) == minority
            })
        };
        let seconds: f64 = splits.iter().map(|s| s.to - s.from).sum();
        figures["fault_majority_side"] =
            availability(ops.iter().filter(|op| on_side(op, false)), seconds);
        figures["fault_minority_side"] =
            availability(ops.iter().filter(|op| on_side(op, true)), seconds);
    }
    figures
}

/// Runs the workloads healthy, then through `fault`, heals, checks,
/// reports, and asserts that nothing acknowledged was lost or undone.
fn scenario(
    name: &str,
    seed: u64,
    env_for: impl Fn(usize) -> Vec<(String, String)>,
    fault: impl FnOnce(&mut Harness),
) {
    let _alone = alone();
    let skew = env_skew(&env_for);
    let mut harness = Harness::start(seed, env_for);
    let workloads = Workloads::start(harness.http_addrs(), seed);
    harness.epoch = workloads.epoch;
    sleep(HEALTHY_SECONDS);
    let fault_from = harness.now();
    fault(&mut harness);
    harness.heal();
    let healed = Instant::now();
    let fault_to = harness.now();
    let rejoin_seconds = harness.rejoin(healed);
    let (ops, model) = workloads.finish();
    let (finals, converge_seconds) = harness.converge(healed, &keys_of(&ops));
    let verdicts = check(&ops, &finals);
    let listed_after_heal = harness.list_everything();

    let total = |count: fn(&Verdict) -> usize| verdicts.values().map(count).sum::<usize>();
    let mut line = json!({
        "scenario": name,
        "fault_seconds": fault_seconds(),
        "fault_window_seconds": round_to(fault_to - fault_from, 1),
        "lost": total(|v| v.lost.len()),
        "resurrected": total(|v| v.resurrected.len()),
        "unknown": total(|v| v.unknown.len()),
        "workloads": verdicts.iter().map(|(load, v)| (load.name().to_string(), json!({
            "tried": v.tried,
            "acknowledged": v.acknowledged,
            "acknowledged_deletes": v.acknowledged_deletes,
            "unacknowledged": v.tried - v.acknowledged,
            "reads_failed": v.reads_failed,
            "lost": v.lost.len(),
            "resurrected": v.resurrected.len(),
            "unknown": v.unknown.len(),
        }))).collect::<serde_json::Map<_, _>>(),
        "availability": availability_figures(&ops, (fault_from, fault_to), &harness.splits),
        "keys_with_siblings": finals.values().filter(|v| v.len() > 1).count(),
        "rejoin_seconds": round_to(rejoin_seconds, 2),
        "converge_seconds": round_to(converge_seconds, 1),
        "listings": {
            "completed_during_fault": model.listings_completed,
            "failed_during_fault": model.listings_failed,
            "out_of_order": model.listings_out_of_order,
        },
        "ttl": {
            "values_written": model.ttl_written,
            "reads_after_deadline": model.ttl_reads_after_deadline,
            "expired_served": model.ttl_expired_served.len(),
        },
        "if_none_match_creates": {
            "rounds": model.create_rounds.len(),
            "rounds_with_one_create": model.create_rounds.values().filter(|&&n| n == 1).count(),
            "rounds_with_several_creates": model.create_rounds.values().filter(|&&n| n > 1).count(),
        },
    });
    for (note, value) in &harness.notes {
        line[note] = value.clone();
    }
    eprintln!("faults: {line}");
    if let Ok(path) = std::env::var("DND_FAULTS_REPORT") {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }

    let mut failures = Vec::new();
    failures.extend(model.ttl_failures(skew));
    if model.listings_out_of_order > 0 {
        failures.push(format!(
            "{} listings during the fault listed a key twice or out of order",
            model.listings_out_of_order
        ));
    }
    failures.extend(check_listings(&listed_after_heal, &finals, &ops));
    for (load, v) in &verdicts {
        let workload = load.name();
        if v.acknowledged < load.enough() {
            failures.push(format!(
                "{workload}: too few acknowledged operations ({}) to prove anything",
                v.acknowledged
            ));
        }
        for (what, found) in [
            ("acknowledged values lost", &v.lost),
            ("superseded values came back", &v.resurrected),
            ("values no client wrote", &v.unknown),
        ] {
            if let Some((key, _)) = found.first() {
                failures.push(format!(
                    "{workload}: {} {what}: {:?}\nhistory of {key}:\n{}",
                    found.len(),
                    &found[..found.len().min(10)],
                    history(&ops, key)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
    harness.cluster.stop(Duration::from_secs(10));
}

/// What happened to one key, in order, for the report of a failure (the
/// last 40 operations).
fn history(ops: &[Op], key: &str) -> String {
    let mut mine: Vec<&Op> = ops.iter().filter(|op| op.key == key).collect();
    mine.sort_by(|a, b| a.sent.total_cmp(&b.sent));
    let skip = mine.len().saturating_sub(40);
    mine[skip..]
        .iter()
        .map(|op| {
            let kind = match &op.kind {
                Kind::Add { element, .. } => format!("Add({element})"),
                other => format!("{other:?}"),
            };
            let named = match &op.named {
                Some(named) => format!("context naming {named:?}"),
                None => "no context".to_string(),
            };
            format!(
                "  {:7.3}s–{:7.3}s via node {} {kind} {named} {}",
                op.sent,
                op.answered,
                op.node + 1,
                if op.acknowledged { "ack" } else { "NOT acked" }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sleep(seconds: f64) {
    thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
}

fn nft_or_skip(name: &str) -> bool {
    if nft_available() {
        return true;
    }
    assert!(
        std::env::var("DND_REQUIRE_NFT").is_err(),
        "{name}: nft is not usable here (needs root and the nftables package)"
    );
    eprintln!("faults: {name} skipped: nft is not usable here (needs root and nftables)");
    false
}

// ---------------------------------------------------------------------------
// The data model under faults: listings, TTL and conditional creates

/// Clients writing values with a TTL and reading them back past it.
const TTL_CLIENTS: usize = 1;
const TTL_SECONDS: f64 = 1.0;
/// How late past its deadline a node may still serve a value when no clock
/// is skewed: the time between the coordinator stamping the deadline and
/// the client seeing the 204, and between a read's sending and its
/// serving, are both within this.
const TTL_SLACK_SECONDS: f64 = 1.0;
const LIST_PAGE: usize = 50;

/// What the data-model clients saw, for the report and the checks.
#[derive(Default)]
struct ModelRecord {
    listings_completed: usize,
    listings_failed: usize,
    listings_out_of_order: usize,
    ttl_written: usize,
    ttl_reads_after_deadline: usize,
    /// (key, seconds past the latest possible deadline it was served at).
    ttl_expired_served: Vec<(String, f64)>,
    /// Per round of `If-None-Match: *` creates, how many were acknowledged.
    create_rounds: BTreeMap<u64, usize>,
}

impl ModelRecord {
    fn absorb(&mut self, other: ModelRecord) {
        self.listings_completed += other.listings_completed;
        self.listings_failed += other.listings_failed;
        self.listings_out_of_order += other.listings_out_of_order;
        self.ttl_written += other.ttl_written;
        self.ttl_reads_after_deadline += other.ttl_reads_after_deadline;
        self.ttl_expired_served.extend(other.ttl_expired_served);
        for (round, created) in other.create_rounds {
            *self.create_rounds.entry(round).or_default() += created;
        }
    }

    /// An expired value served later than its deadline plus the clocks'
    /// skew is a failure.
    fn ttl_failures(&self, skew_seconds: f64) -> Vec<String> {
        let late: Vec<&(String, f64)> = self
            .ttl_expired_served
            .iter()
            .filter(|(_, past)| *past > skew_seconds)
            .collect();
        if late.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "{} reads served a value more than {skew_seconds} s (the clocks' skew) past its deadline: {:?}",
            late.len(),
            &late[..late.len().min(10)]
        )]
    }
}

/// The most a node's clock is set off in a scenario: libfaketime's offset
/// for any node, in seconds.
fn env_skew(env_for: &impl Fn(usize) -> Vec<(String, String)>) -> f64 {
    (0..NODES)
        .flat_map(env_for)
        .filter(|(name, _)| name == "FAKETIME")
        .map(|(_, offset)| match offset.trim_start_matches(['+', '-']) {
            days if days.ends_with('d') => {
                days.trim_end_matches('d').parse::<f64>().unwrap_or(0.0) * 86_400.0
            }
            seconds => seconds.parse::<f64>().unwrap_or(0.0),
        })
        .fold(0.0, f64::max)
}

/// Writes a unique value with `?ttl=1`, then reads it back through random
/// nodes until well past its deadline. A read sent later than the 204
/// plus the TTL (the deadline is stamped before the 204) that still gets
/// the value served an expired one.
fn ttl_client(mut c: Client, id: usize) -> ModelRecord {
    let mut record = ModelRecord::default();
    let mut seq = 0u64;
    while !c.stopped() {
        seq += 1;
        let key = format!("ttl-{id}-{seq}");
        let value = format!("t{id}-{seq}");
        let node = c.pick_node();
        let path = format!("/kv/{key}?ttl={TTL_SECONDS}");
        match dnd::dev::request(
            c.nodes[node],
            "PUT",
            &path,
            &[],
            value.as_bytes(),
            REQUEST_TIMEOUT,
        ) {
            Ok(reply) if reply.status == 204 => record.ttl_written += 1,
            Ok(_) => continue,
            Err(_) => {
                c.no_answer_from(node);
                continue;
            }
        }
        let deadline = c.now() + TTL_SECONDS;
        while c.now() < deadline + 2.0 * TTL_SLACK_SECONDS && !c.stopped() {
            let node = c.pick_node();
            let sent = c.now();
            let Ok(reply) = http(c.nodes[node], "GET", &format!("/kv/{key}"), None, b"") else {
                c.no_answer_from(node);
                continue;
            };
            if sent > deadline + TTL_SLACK_SECONDS {
                record.ttl_reads_after_deadline += 1;
                if values_of(&reply).is_some_and(|v| v.contains(&value)) {
                    record.ttl_expired_served.push((
                        key.clone(),
                        round_to(sent - deadline - TTL_SLACK_SECONDS, 2),
                    ));
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    record
}

/// Takes whole listings through random nodes, following `next` as a
/// client would; a listing that meets an error is abandoned (counted).
fn lister_client(mut c: Client) -> ModelRecord {
    let mut record = ModelRecord::default();
    while !c.stopped() {
        let node = c.pick_node();
        match list_through(c.nodes[node]) {
            Ok(keys) => {
                record.listings_completed += 1;
                if keys.windows(2).any(|w| w[0] >= w[1]) {
                    record.listings_out_of_order += 1;
                }
            }
            Err(_) => record.listings_failed += 1,
        }
        thread::sleep(Duration::from_millis(200));
    }
    record
}

/// Every key a listing through `node` shows, in the order shown.
fn list_through(node: SocketAddr) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/kv?limit={LIST_PAGE}");
        if let Some(after) = &after {
            let encoded =
                percent_encoding::utf8_percent_encode(after, percent_encoding::NON_ALPHANUMERIC);
            path.push_str(&format!("&start_after={encoded}"));
        }
        let reply = http(node, "GET", &path, None, b"")?;
        if reply.status != 200 {
            return Err(format!("{path}: {}", reply.status));
        }
        let page: serde_json::Value =
            serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
        for key in page["keys"].as_array().ok_or("no keys")? {
            keys.push(
                key.as_str()
                    .ok_or("a key that is not a string")?
                    .to_string(),
            );
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Ok(keys),
        }
    }
}

/// One of [`CREATE_CLIENTS`] that, round after round, all create a fresh
/// key with `If-None-Match: *` at the same moment, each through a node of
/// its own: how often more than one succeeds is what a check at a quorum
/// read, not a consensus, allows.
fn if_none_match_client(
    mut c: Client,
    id: usize,
    barrier: Arc<Barrier>,
    go: Arc<AtomicBool>,
    tally: Arc<Mutex<BTreeMap<u64, usize>>>,
) -> ModelRecord {
    let mut round = 0u64;
    loop {
        if !all_go_on(&barrier, &go, c.stopped()) {
            break;
        }
        round += 1;
        let node = c.pick_node();
        let path = format!("/kv/once-{round}");
        let value = format!("o{id}-{round}");
        let created = match dnd::dev::request(
            c.nodes[node],
            "PUT",
            &path,
            &[("If-None-Match", "*")],
            value.as_bytes(),
            REQUEST_TIMEOUT,
        ) {
            Ok(reply) => reply.status == 204,
            Err(_) => {
                c.no_answer_from(node);
                false
            }
        };
        *lock_tally(&tally).entry(round).or_default() += usize::from(created);
        thread::sleep(CREATE_PAUSE);
    }
    let mut record = ModelRecord::default();
    if id == 0 {
        record.create_rounds = std::mem::take(&mut *lock_tally(&tally));
    }
    record
}

fn lock_tally(tally: &Mutex<BTreeMap<u64, usize>>) -> MutexGuard<'_, BTreeMap<u64, usize>> {
    tally
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Harness {
    /// A whole listing through every node, after the heal; an error for a
    /// node that could not complete one.
    fn list_everything(&self) -> Vec<(SocketAddr, Result<Vec<String>, String>)> {
        self.http_addrs()
            .into_iter()
            .map(|node| (node, list_through(node)))
            .collect()
    }
}

/// After the heal, every node's listing shows exactly the keys the final
/// R=N reads found live among the workloads' keys: none missing, none
/// extra, each once in order. Keys with a TTL and created once are left
/// out (they may expire between the reads and the listing).
fn check_listings(
    listed: &[(SocketAddr, Result<Vec<String>, String>)],
    finals: &BTreeMap<String, BTreeSet<String>>,
    ops: &[Op],
) -> Vec<String> {
    let checked = |key: &str| !key.starts_with("ttl-") && !key.starts_with("once-");
    let live: BTreeSet<&str> = finals
        .iter()
        .filter(|(key, values)| !values.is_empty() && checked(key))
        .map(|(key, _)| key.as_str())
        .collect();
    let mut failures = Vec::new();
    for (node, keys) in listed {
        let keys = match keys {
            Ok(keys) => keys,
            Err(e) => {
                failures.push(format!(
                    "a listing through {node} after the heal failed: {e}"
                ));
                continue;
            }
        };
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            failures.push(format!(
                "a listing through {node} after the heal is out of order"
            ));
        }
        let shown: BTreeSet<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| checked(k))
            .collect();
        let missing: Vec<&&str> = live.difference(&shown).collect();
        let extra: Vec<&&str> = shown.difference(&live).collect();
        if !missing.is_empty() {
            failures.push(format!(
                "a listing through {node} after the heal misses {} live keys: {:?}\nhistory of {}:\n{}",
                missing.len(),
                &missing[..missing.len().min(10)],
                missing[0],
                history(ops, missing[0])
            ));
        }
        if !extra.is_empty() {
            failures.push(format!(
                "a listing through {node} after the heal shows {} keys with no live value: {:?}",
                extra.len(),
                &extra[..extra.len().min(10)]
            ));
        }
    }
    failures
}

// ---------------------------------------------------------------------------
// Scenarios

#[test]
fn kill_9_of_one_node_every_few_seconds_loses_no_acknowledged_write() {
    scenario(
        "kill -9 one node every 2 s",
        101,
        |_| vec![],
        |h| {
            let end = Instant::now() + Duration::from_secs(fault_seconds());
            while Instant::now() < end {
                sleep(1.0);
                let victim = h.rng.random_range(0..NODES);
                h.cluster.kill(victim);
                sleep(1.0);
                h.restart(victim);
            }
        },
    );
}

#[test]
fn all_nodes_killed_and_restarted_lose_no_acknowledged_write() {
    scenario(
        "all nodes kill -9, then restarted",
        202,
        |_| vec![],
        |h| {
            sleep(fault_seconds() as f64 / 2.0);
            for i in 0..NODES {
                h.cluster.kill(i);
            }
            for i in 0..NODES {
                h.restart(i);
            }
            sleep(fault_seconds() as f64 / 2.0);
        },
    );
}

#[test]
fn a_node_paused_past_its_suspicion_timeout_loses_no_acknowledged_write() {
    scenario(
        "one node SIGSTOP past its suspicion timeout",
        303,
        |_| vec![],
        |h| {
            let paused = 2;
            let watcher = h.cluster.nodes[0].http_addr();
            let id = node_id(&h.cluster.nodes[paused].data_dir);
            h.cluster.signal(paused, "STOP").expect("SIGSTOP");
            let declared = wait_until(Instant::now() + DEAD_TIMEOUT, || {
                state_of(watcher, &id).filter(|s| s == "dead")
            });
            assert!(
                declared.is_some(),
                "the paused node was never declared dead"
            );
            // The heal sends SIGCONT.
            sleep(fault_seconds() as f64 / 2.0);
        },
    );
}

#[test]
fn a_two_three_partition_with_writes_on_both_sides_loses_no_acknowledged_write() {
    if !nft_or_skip("partition 2|3") {
        return;
    }
    scenario(
        "partition 2|3 (writes on both sides)",
        404,
        |_| vec![],
        |h| {
            h.split(&[0, 1]);
            sleep(fault_seconds() as f64);
        },
    );
}

#[test]
fn a_two_three_partition_held_past_the_minoritys_dead_declarations_loses_no_acknowledged_write() {
    if !nft_or_skip("partition 2|3 held past dead declarations") {
        return;
    }
    scenario(
        "partition 2|3 held until the minority declares the majority dead",
        707,
        |_| vec![],
        |h| {
            let began = Instant::now();
            h.split(&[0, 1]);
            let watcher = h.cluster.nodes[0].http_addr();
            let majority: Vec<String> = [2, 3, 4].iter().map(|&i| h.gossip_addr(i)).collect();
            let declared = wait_until(Instant::now() + DEAD_TIMEOUT, || {
                let states = states_seen_by(watcher)?;
                majority
                    .iter()
                    .all(|m| states.get(m).is_some_and(|s| s == "dead"))
                    .then_some(())
            });
            assert!(
                declared.is_some(),
                "node 1 did not list the three majority nodes dead within {DEAD_TIMEOUT:?}: {:?}",
                states_seen_by(watcher)
            );
            let dead_after = began.elapsed().as_secs_f64();
            h.note("majority_dead_after_seconds", round_to(dead_after, 1));
            // A few seconds of writes on both sides past the declarations,
            // and at least the fault's length in all.
            sleep(HOLD_AFTER_DEAD.max(fault_seconds() as f64 - dead_after));
        },
    );
}

#[test]
fn flapping_partitions_lose_no_acknowledged_write() {
    if !nft_or_skip("flapping partitions") {
        return;
    }
    scenario(
        "flapping partitions (random 2|3 or 1|4, every 2-4 s)",
        808,
        |_| vec![],
        |h| {
            let end = Instant::now() + Duration::from_secs(fault_seconds());
            let nodes: Vec<usize> = (0..NODES).collect();
            while Instant::now() < end {
                let size = if h.rng.random_bool(0.5) { 1 } else { 2 };
                let minority: Vec<usize> =
                    nodes.choose_multiple(&mut h.rng, size).copied().collect();
                h.split(&minority);
                let left = end.saturating_duration_since(Instant::now()).as_secs_f64();
                sleep(h.rng.random_range(2.0..4.0_f64).min(left));
            }
        },
    );
}

#[test]
fn a_ring_where_each_node_reaches_only_its_neighbours_loses_no_acknowledged_write() {
    if !nft_or_skip("majorities ring") {
        return;
    }
    scenario(
        "majorities ring (each node reaches only its two neighbours)",
        909,
        |_| vec![],
        |h| {
            h.ring();
            sleep(fault_seconds() as f64);
        },
    );
}

#[test]
fn a_partition_with_a_majority_node_killed_loses_no_acknowledged_write() {
    if !nft_or_skip("partition 2|3 plus kill -9") {
        return;
    }
    scenario(
        "partition 2|3, a majority node kill -9 and restarted",
        1010,
        |_| vec![],
        |h| {
            // The minority is nodes 4 and 5, so node 3's restart joins
            // through node 1, on its own side.
            h.split(&[3, 4]);
            sleep(fault_seconds() as f64 / 3.0);
            h.cluster.kill(2);
            sleep(1.0);
            h.restart(2);
            sleep(fault_seconds() as f64 * 2.0 / 3.0 - 1.0);
        },
    );
}

#[test]
fn an_isolated_minority_node_loses_no_acknowledged_write() {
    if !nft_or_skip("one node isolated") {
        return;
    }
    scenario(
        "one node isolated",
        505,
        |_| vec![],
        |h| {
            h.split(&[4]);
            sleep(fault_seconds() as f64);
        },
    );
}

#[test]
fn a_node_whose_clock_is_a_day_ahead_changes_nothing() {
    if !Path::new(LIBFAKETIME).exists() {
        assert!(
            std::env::var("DND_REQUIRE_FAKETIME").is_err(),
            "libfaketime is missing ({LIBFAKETIME}); install the faketime package"
        );
        eprintln!("faults: clock skew skipped: {LIBFAKETIME} is missing");
        return;
    }
    // Versions carry no wall time, so a skewed clock cannot order writes;
    // node 3 also coordinates deletes whose tombstones it thinks are a day old.
    let skewed = |i: usize| {
        if i == 2 {
            vec![
                ("LD_PRELOAD".to_string(), LIBFAKETIME.to_string()),
                ("FAKETIME".to_string(), "+1d".to_string()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
                ("FAKETIME_DONT_RESET".to_string(), "1".to_string()),
            ]
        } else {
            vec![]
        }
    };
    scenario(
        "node 3's clock a day ahead, with a kill -9",
        606,
        skewed,
        |h| {
            let date = Command::new("date")
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME", "+1d")
                .output()
                .expect("run date under faketime");
            assert!(date.status.success(), "date under faketime failed");
            sleep(fault_seconds() as f64 / 2.0);
            h.cluster.kill(0);
            sleep(1.0);
            h.restart(0);
            sleep(fault_seconds() as f64 / 2.0);
        },
    );
}

// ---------------------------------------------------------------------------
// Helpers about members

fn node_id(data_dir: &Path) -> String {
    let text = std::fs::read_to_string(data_dir.join("node_id")).unwrap_or_default();
    text.trim().to_string()
}

fn state_of(http_addr: SocketAddr, id: &str) -> Option<String> {
    let reply = http(http_addr, "GET", "/cluster/members", None, b"").ok()?;
    let members: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    members.as_array()?.iter().find(|m| m["id"] == id)?["state"]
        .as_str()
        .map(str::to_string)
}

// ---------------------------------------------------------------------------
// The checker, checked

fn op(key: &str, kind: Kind, named: Option<&[&str]>, acknowledged: bool, sent: f64) -> Op {
    Op {
        load: Load::of_key(key),
        key: key.into(),
        kind,
        named: named.map(|n| n.iter().map(|s| s.to_string()).collect()),
        acknowledged,
        sent,
        answered: sent + 0.5,
        node: 0,
    }
}

fn write(value: &str) -> Kind {
    Kind::Write(value.into())
}

fn finals(entries: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
    entries
        .iter()
        .map(|(key, values)| {
            let values = values.iter().map(|v| v.to_string()).collect();
            (key.to_string(), values)
        })
        .collect()
}

fn pairs(found: &[(&str, &str)]) -> Vec<(String, String)> {
    found
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_checker_counts_lost_resurrected_and_unknown_values() {
    let ops = vec![
        op("reg-a", write("a1"), Some(&[]), true, 0.0),
        // a2 saw a1 and superseded it, and is gone: lost, nobody saw a2.
        op("reg-a", write("a2"), Some(&["a1"]), true, 1.0),
        // b1 was seen by an unanswered write: it may be superseded.
        op("reg-b", write("b1"), Some(&[]), true, 0.0),
        op("reg-b", write("b2"), Some(&["b1"]), false, 1.0),
        // c1 deleted by an acknowledged delete, yet back: resurrected.
        op("reg-c", write("c1"), Some(&[]), true, 0.0),
        op("reg-c", Kind::Delete, Some(&["c1"]), true, 1.0),
        op("reg-c", Kind::FailedRead, None, false, 2.0),
    ];
    let finals = finals(&[("reg-a", &[]), ("reg-b", &["b2"]), ("reg-c", &["c1", "zz"])]);
    let verdict = &check(&ops, &finals)[&Load::Register];
    assert_eq!(verdict.tried, 6);
    assert_eq!(verdict.acknowledged, 5);
    assert_eq!(verdict.acknowledged_deletes, 1);
    assert_eq!(verdict.reads_failed, 1);
    assert_eq!(verdict.lost, pairs(&[("reg-a", "a2")]));
    assert_eq!(verdict.resurrected, pairs(&[("reg-c", "c1")]));
    assert_eq!(verdict.unknown, pairs(&[("reg-c", "zz")]));
}

#[test]
fn the_checker_lets_only_a_context_or_a_later_blind_delete_supersede_a_value() {
    let ops = vec![
        // Two blind writes supersede nothing: both must stay.
        op("blind-a", write("a1"), None, true, 0.0),
        op("blind-a", write("a2"), None, true, 1.0),
        // A blind delete answered after b1's write was sent may have
        // removed it, but not b2, sent after the delete was answered.
        op("blind-b", write("b1"), None, true, 0.0),
        op("blind-b", Kind::Delete, None, true, 1.0),
        op("blind-b", write("b2"), None, true, 2.0),
        // One never answered may have been carried out at any time.
        op("blind-e", Kind::Delete, None, false, 0.0),
        op("blind-e", write("e1"), None, true, 5.0),
        // A delete with a context naming nothing removes nothing.
        op("reg-c", write("c1"), None, true, 0.0),
        op("reg-c", Kind::Delete, Some(&[]), true, 1.0),
        // Creates that saw a 404 without a context: neither supersedes.
        op("new-1", write("n0-1"), None, true, 0.0),
        op("new-1", write("n1-1"), None, true, 0.0),
        // An acknowledged blind delete undoes nothing the checker can name.
        op("blind-d", write("d1"), None, true, 0.0),
        op("blind-d", Kind::Delete, None, true, 1.0),
    ];
    let finals = finals(&[
        ("blind-a", &["a1"]),
        ("blind-b", &[]),
        ("blind-e", &[]),
        ("reg-c", &[]),
        ("new-1", &["n0-1"]),
        ("blind-d", &["d1"]),
    ]);
    let verdicts = check(&ops, &finals);
    let blind = &verdicts[&Load::Blind];
    assert_eq!(blind.lost, pairs(&[("blind-a", "a2"), ("blind-b", "b2")]));
    assert_eq!(blind.acknowledged_deletes, 2);
    assert!(blind.resurrected.is_empty());
    assert_eq!(verdicts[&Load::Register].lost, pairs(&[("reg-c", "c1")]));
    assert_eq!(verdicts[&Load::Create].lost, pairs(&[("new-1", "n1-1")]));
    assert!(verdicts.values().all(|v| v.unknown.is_empty()));
}

#[test]
fn the_checker_wants_every_acknowledged_element_in_the_union_of_a_sets_siblings() {
    let add = |element: &str, value: &str| Kind::Add {
        element: element.into(),
        value: value.into(),
    };
    let ops = vec![
        op("set-a", add("s0-1", "s0-1"), None, true, 0.0),
        op("set-a", add("s1-1", "s1-1"), None, true, 0.0),
        op(
            "set-a",
            add("s0-2", "s0-1,s0-2"),
            Some(&["s0-1"]),
            true,
            1.0,
        ),
        // Unacknowledged: may be there or not.
        op(
            "set-a",
            add("s2-1", "s0-1,s2-1"),
            Some(&["s0-1"]),
            false,
            1.0,
        ),
        op("set-b", add("s0-3", "s0-3"), None, true, 2.0),
    ];
    // s1-1 survives only as a sibling; s0-2 is gone; xx was never added.
    let finals = finals(&[("set-a", &["s0-1,s2-1", "s1-1,xx"]), ("set-b", &["s0-3"])]);
    let verdict = &check(&ops, &finals)[&Load::Set];
    assert_eq!(verdict.acknowledged, 4);
    assert_eq!(verdict.lost, pairs(&[("set-a", "s0-2")]));
    assert_eq!(verdict.unknown, pairs(&[("set-a", "xx")]));
    assert!(verdict.resurrected.is_empty());
}
