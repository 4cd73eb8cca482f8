//! Proof under faults: five real `dnd` processes, started by the same
//! launcher as `dnd dev` ([`dnd::dev::DevCluster`]), under `kill -9` and
//! restarts, a pause past the suspicion timeout, partitions and a skewed
//! clock, while clients record every operation the cluster acknowledged.
//! After the faults heal, an independent checker reads every key with R=N
//! through every node and counts writes lost and deletes undone.
//!
//! The workload: clients pick a key among a few (so writes collide), read
//! it through a random node, then write a unique value, or delete, through
//! the same node with the context of that read, so each operation
//! supersedes exactly the values it saw. The checker holds the cluster to
//! that:
//! - lost: an acknowledged value absent at the end, though no operation
//!   (acknowledged or not: an unanswered one may still have been applied)
//!   ever saw it and so could have superseded it;
//! - resurrected: a value present at the end though an acknowledged
//!   operation saw it and superseded it (a write or a delete);
//! - unknown: a value at the end that no client wrote.
//!
//! Each node has its own loopback address (127.a.b.1 to .5), so a partition
//! is a set of nftables rules dropping packets between two groups of
//! addresses on `lo`; nodes open peer connections from their own address
//! for that reason. Partitions need root and `nft`: without them those two
//! scenarios say so and pass, unless `DND_REQUIRE_NFT=1` (set by `.ci/run`).
//! The skewed clock uses libfaketime, likewise (`DND_REQUIRE_FAKETIME=1`).
//! Every rule, process and directory is removed on every way out, a panic
//! included; rules left by a test process that was killed are removed by
//! the next run.
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
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use dnd::dev::{metrics, DevCluster, DevOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODES: usize = 5;
const KEYS: usize = 24;
const CLIENTS: usize = 8;
const DELETE_SHARE: f64 = 0.1;
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// From the end of the faults until every replica agrees.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
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

/// The values a read answered: one (200), several siblings (300), none (404).
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

// ---------------------------------------------------------------------------
// Partitions: nftables rules on loopback

/// Packets between the groups are dropped while this lives.
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
    fn new(groups: &[Vec<IpAddr>]) -> Partition {
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
        for (i, from) in groups.iter().enumerate() {
            for (j, to) in groups.iter().enumerate() {
                if i != j {
                    rules.push_str(&format!(
                        "    ip saddr {{ {} }} ip daddr {{ {} }} drop\n",
                        set(from),
                        set(to)
                    ));
                }
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
// The workload

#[derive(Debug, Clone)]
enum Kind {
    Write(String),
    Delete,
}

#[derive(Debug, Clone)]
struct Op {
    key: String,
    kind: Kind,
    /// The values of the read whose context the operation carried: what it
    /// supersedes.
    observed: BTreeSet<String>,
    acknowledged: bool,
    /// For the report of a failure: when it was sent (seconds into the
    /// workload), and through which node.
    at: f64,
    node: SocketAddr,
}

fn client(id: usize, nodes: Vec<SocketAddr>, stop: Arc<AtomicBool>, seed: u64) -> (Vec<Op>, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let began = Instant::now();
    let mut ops = Vec::new();
    let mut reads_failed = 0;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("k{}", rng.random_range(0..KEYS));
        let node = nodes[rng.random_range(0..nodes.len())];
        let path = format!("/kv/{key}");
        let read = http(node, "GET", &path, None, b"");
        let Some((observed, context)) = read
            .ok()
            .and_then(|r| values_of(&r).map(|v| (v, r.context.unwrap_or_default())))
        else {
            reads_failed += 1;
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        seq += 1;
        let (kind, method, body) = if rng.random_bool(DELETE_SHARE) {
            (Kind::Delete, "DELETE", String::new())
        } else {
            let value = format!("c{id}-{seq}");
            (Kind::Write(value.clone()), "PUT", value)
        };
        let reply = http(node, method, &path, Some(&context), body.as_bytes());
        let acknowledged = matches!(reply, Ok(ref r) if r.status == 204);
        ops.push(Op {
            key,
            kind,
            observed,
            acknowledged,
            at: began.elapsed().as_secs_f64(),
            node,
        });
        thread::sleep(Duration::from_millis(3));
    }
    (ops, reads_failed)
}

struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<(Vec<Op>, usize)>>,
}

impl Workload {
    fn start(nodes: Vec<SocketAddr>, seed: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..CLIENTS)
            .map(|id| {
                let (nodes, stop) = (nodes.clone(), stop.clone());
                thread::spawn(move || client(id, nodes, stop, seed + id as u64))
            })
            .collect();
        Workload { stop, threads }
    }

    fn finish(self) -> (Vec<Op>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let mut ops = Vec::new();
        let mut reads_failed = 0;
        for thread in self.threads {
            let (mine, failed) = thread.join().expect("a client thread panicked");
            ops.extend(mine);
            reads_failed += failed;
        }
        (ops, reads_failed)
    }
}

// ---------------------------------------------------------------------------
// The checker

#[derive(Debug, Default)]
struct Verdict {
    tried: usize,
    acknowledged: usize,
    acknowledged_deletes: usize,
    lost: Vec<(String, String)>,
    resurrected: Vec<(String, String)>,
    unknown: Vec<(String, String)>,
}

fn check(ops: &[Op], finals: &BTreeMap<String, BTreeSet<String>>) -> Verdict {
    let mut verdict = Verdict {
        tried: ops.len(),
        ..Verdict::default()
    };
    let mut superseded_by_any: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut superseded_by_acknowledged: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut written: BTreeSet<(&str, &str)> = BTreeSet::new();
    for op in ops {
        for value in &op.observed {
            superseded_by_any.insert((&op.key, value));
            if op.acknowledged {
                superseded_by_acknowledged.insert((&op.key, value));
            }
        }
        if let Kind::Write(value) = &op.kind {
            written.insert((&op.key, value));
        }
    }
    let empty = BTreeSet::new();
    for op in ops.iter().filter(|op| op.acknowledged) {
        verdict.acknowledged += 1;
        match &op.kind {
            Kind::Delete => verdict.acknowledged_deletes += 1,
            Kind::Write(value) => {
                let present = finals.get(&op.key).unwrap_or(&empty).contains(value);
                if !present && !superseded_by_any.contains(&(op.key.as_str(), value.as_str())) {
                    verdict.lost.push((op.key.clone(), value.clone()));
                }
            }
        }
    }
    for (key, values) in finals {
        for value in values {
            let entry = (key.as_str(), value.as_str());
            if superseded_by_acknowledged.contains(&entry) {
                verdict.resurrected.push((key.clone(), value.clone()));
            }
            if !written.contains(&entry) {
                verdict.unknown.push((key.clone(), value.clone()));
            }
        }
    }
    verdict
}

// ---------------------------------------------------------------------------
// The harness

struct Harness {
    cluster: DevCluster,
    _dir: tempfile::TempDir,
    rng: StdRng,
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
        }
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

    fn restart(&mut self, i: usize) {
        self.cluster
            .spawn(i)
            .unwrap_or_else(|e| panic!("restart node {i}: {e}"));
    }

    /// Every node running and listing the others alive, then the time
    /// until every replica agrees: the same values for every key through
    /// every node with R=N, no hints waiting, and anti-entropy finding
    /// nothing to repair for a few rounds on every node.
    fn converge(&mut self) -> (BTreeMap<String, BTreeSet<String>>, f64) {
        let healed = Instant::now();
        for i in 0..NODES {
            let _ = self.cluster.signal(i, "CONT");
            if !self.cluster.nodes[i].is_running() {
                self.restart(i);
            }
        }
        self.cluster
            .wait_converged(CONVERGE_TIMEOUT)
            .unwrap_or_else(|e| panic!("the cluster did not re-form after the faults: {e}"));
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
            let finals = match read_all(&nodes) {
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
            match read_all(&nodes) {
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
fn read_all(nodes: &[SocketAddr]) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut finals = BTreeMap::new();
    for k in 0..KEYS {
        let key = format!("k{k}");
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
        finals.insert(key, agreed.unwrap_or_default());
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

/// Runs the workload through `fault`, heals, checks, reports, and asserts
/// that nothing acknowledged was lost or undone.
fn scenario(
    name: &str,
    seed: u64,
    env_for: impl Fn(usize) -> Vec<(String, String)>,
    fault: impl FnOnce(&mut Harness),
) {
    let _alone = alone();
    let mut harness = Harness::start(seed, env_for);
    let workload = Workload::start(harness.http_addrs(), seed);
    fault(&mut harness);
    let (ops, reads_failed) = workload.finish();
    let (finals, converge_seconds) = harness.converge();
    let verdict = check(&ops, &finals);
    let siblings = finals.values().filter(|v| v.len() > 1).count();
    let line = serde_json::json!({
        "scenario": name,
        "fault_seconds": fault_seconds(),
        "tried": verdict.tried,
        "acknowledged": verdict.acknowledged,
        "acknowledged_deletes": verdict.acknowledged_deletes,
        "unacknowledged": verdict.tried - verdict.acknowledged,
        "reads_failed": reads_failed,
        "lost": verdict.lost.len(),
        "resurrected": verdict.resurrected.len(),
        "unknown": verdict.unknown.len(),
        "keys_with_siblings": siblings,
        "converge_seconds": (converge_seconds * 10.0).round() / 10.0,
    });
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
    assert!(
        verdict.acknowledged >= 50,
        "{name}: too few acknowledged operations ({}) to prove anything",
        verdict.acknowledged
    );
    assert!(
        verdict.lost.is_empty(),
        "{name}: acknowledged writes lost: {:?}",
        verdict.lost
    );
    assert!(
        verdict.resurrected.is_empty(),
        "{name}: superseded values came back: {:?}\nhistory of {}:\n{}",
        verdict.resurrected,
        verdict.resurrected[0].0,
        history(&ops, &verdict.resurrected[0].0)
    );
    assert!(
        verdict.unknown.is_empty(),
        "{name}: values no client wrote: {:?}",
        verdict.unknown
    );
    harness.cluster.stop(Duration::from_secs(10));
}

/// What happened to one key, in order, for the report of a failure.
fn history(ops: &[Op], key: &str) -> String {
    let mut mine: Vec<&Op> = ops.iter().filter(|op| op.key == key).collect();
    mine.sort_by(|a, b| a.at.total_cmp(&b.at));
    mine.iter()
        .map(|op| {
            format!(
                "  {:7.3}s via {} {:?} saw {:?} {}",
                op.at,
                op.node,
                op.kind,
                op.observed,
                if op.acknowledged { "ack" } else { "NOT acked" }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sleep(seconds: f64) {
    thread::sleep(Duration::from_secs_f64(seconds));
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
            let declared = wait_until(Instant::now() + Duration::from_secs(60), || {
                state_of(watcher, &id).filter(|s| s == "dead")
            });
            assert!(
                declared.is_some(),
                "the paused node was never declared dead"
            );
            sleep(fault_seconds() as f64 / 2.0);
            h.cluster.signal(paused, "CONT").expect("SIGCONT");
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
            sleep(1.0);
            let minority = h.addresses(&[0, 1]);
            let majority = h.addresses(&[2, 3, 4]);
            let partition = Partition::new(&[minority, majority]);
            sleep(fault_seconds() as f64);
            drop(partition);
            sleep(1.0);
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
            sleep(1.0);
            let alone = h.addresses(&[4]);
            let rest = h.addresses(&[0, 1, 2, 3]);
            let partition = Partition::new(&[alone, rest]);
            sleep(fault_seconds() as f64);
            drop(partition);
            sleep(1.0);
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

#[test]
fn the_checker_counts_lost_resurrected_and_unknown_values() {
    let op = |key: &str, kind: Kind, observed: &[&str], acknowledged: bool| Op {
        key: key.into(),
        kind,
        observed: observed.iter().map(|s| s.to_string()).collect(),
        acknowledged,
        at: 0.0,
        node: SocketAddr::from(([127, 0, 0, 1], 1)),
    };
    let write = |v: &str| Kind::Write(v.into());
    let ops = vec![
        op("a", write("a1"), &[], true),
        // a2 saw a1 and superseded it, and is gone: lost, nobody saw a2.
        op("a", write("a2"), &["a1"], true),
        // b1 was seen by an unanswered write: it may be superseded.
        op("b", write("b1"), &[], true),
        op("b", write("b2"), &["b1"], false),
        // c1 deleted by an acknowledged delete, yet back: resurrected.
        op("c", write("c1"), &[], true),
        op("c", Kind::Delete, &["c1"], true),
    ];
    let finals = BTreeMap::from([
        ("a".to_string(), BTreeSet::new()),
        ("b".to_string(), BTreeSet::from(["b2".to_string()])),
        (
            "c".to_string(),
            BTreeSet::from(["c1".to_string(), "zz".to_string()]),
        ),
    ]);
    let verdict = check(&ops, &finals);
    assert_eq!(verdict.tried, 6);
    assert_eq!(verdict.acknowledged, 5);
    assert_eq!(verdict.acknowledged_deletes, 1);
    assert_eq!(verdict.lost, vec![("a".to_string(), "a2".to_string())]);
    assert_eq!(
        verdict.resurrected,
        vec![("c".to_string(), "c1".to_string())]
    );
    assert_eq!(verdict.unknown, vec![("c".to_string(), "zz".to_string())]);
}
