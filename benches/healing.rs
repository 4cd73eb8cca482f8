//! Figures of the cluster healing itself, with real `dnd` processes started
//! by the `dnd dev` launcher ([`dnd::dev`]):
//!
//! 1. **Anti-entropy after an outage.** Three nodes (N=3, hints off) hold
//!    `--keys` values of 1 KiB; one node is killed, 10,000 new keys are
//!    written and 1,000 old ones deleted, and the node restarts. Reported:
//!    time until its hash-tree exchanges have repaired all 11,000 keys, and
//!    the bytes the three nodes sent each other meanwhile (peer requests and
//!    answers) against the bytes that differed; also what the trees alone
//!    cost per second once nothing differs.
//! 2. **A sixth node joins five under load.** Five nodes hold `--keys`
//!    values of 1 KiB; clients read and overwrite random keys through the
//!    five at a fixed rate throughout. Reported: time from the join until
//!    every node has finished handing data over, bytes and keys moved
//!    against a sixth of all copies, and client latency and failures
//!    (a read that finds no value counts as failed) before, during and
//!    after the move.
//!
//! ```sh
//! cargo bench --bench healing                      # writes docs/figures/healing.md
//! cargo bench --bench healing -- --keys 5000 --out /tmp/healing.md
//! ```

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dnd::dev::{metric, metrics, request, DevCluster, DevOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const VALUE_BYTES: usize = 1024;
const NEW_KEYS: usize = 10_000;
const DELETED_KEYS: usize = 1_000;
const THREADS: usize = 8;
const TIMEOUT: Duration = Duration::from_secs(10);
const HEAL_DEADLINE: Duration = Duration::from_secs(600);
/// Client load during the join: requests per second, half reads.
const JOIN_LOAD_RATE: u64 = 400;
const BEFORE_JOIN: Duration = Duration::from_secs(10);
const AFTER_JOIN: Duration = Duration::from_secs(10);

struct Options {
    keys: usize,
    out: String,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        keys: 20_000,
        out: "docs/figures/healing.md".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--keys" => {
                options.keys = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--keys takes a number")?
            }
            "--out" => options.out = args.next().ok_or("--out takes a file")?,
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.keys < DELETED_KEYS {
        return Err(format!("--keys must be at least {DELETED_KEYS}"));
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!(
                "healing: {e}\nusage: cargo bench --bench healing -- [--keys K] [--out FILE]"
            );
            return ExitCode::from(2);
        }
    };
    let began = Instant::now();
    let result = anti_entropy(options.keys).and_then(|first| {
        let second = join_under_load(options.keys)?;
        Ok((first, second))
    });
    let (first, second) = match result {
        Ok(both) => both,
        Err(e) => {
            eprintln!("healing: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = format!(
        "# Healing figures\n\nMeasured on a shared {}-core machine by `cargo bench --bench healing` \
         ({} keys of {VALUE_BYTES} B; {:.0} s in all). Real `dnd` processes on loopback.\n\n{first}\n{second}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        options.keys,
        began.elapsed().as_secs_f64()
    );
    eprintln!("{report}");
    if let Err(e) = std::fs::write(&options.out, &report) {
        eprintln!("healing: cannot write {}: {e}", options.out);
        return ExitCode::FAILURE;
    }
    eprintln!("healing: wrote {}", options.out);
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------
// Clusters and requests

fn free(port: u16) -> bool {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn cluster(
    nodes: usize,
    dir: &std::path::Path,
    args: &[&str],
    rng: &mut StdRng,
) -> Result<DevCluster, String> {
    // Room for a sixth node in both port ranges.
    let (gossip_port, http_port) = loop {
        let gossip: u16 = rng.random_range(20_000..40_000);
        let http = gossip + 100;
        if (0..=nodes as u16).all(|i| free(gossip + i) && free(http + i)) {
            break (gossip, http);
        }
    };
    let options = DevOptions {
        binary: env!("CARGO_BIN_EXE_dnd").into(),
        nodes,
        address: Ipv4Addr::LOCALHOST,
        distinct_addresses: false,
        gossip_port,
        http_port,
        data_dir: dir.to_path_buf(),
        node_args: args.iter().map(|s| s.to_string()).collect(),
    };
    DevCluster::start(options, Duration::from_secs(60)).map_err(|e| e.to_string())
}

fn value(i: usize) -> Vec<u8> {
    let mut bytes = format!("value {i} ").into_bytes();
    bytes.resize(VALUE_BYTES, b'.');
    bytes
}

/// Sends every request, spread over the nodes, from a few threads; returns
/// how many did not get the expected status.
fn send_all(nodes: &[SocketAddr], requests: &[(&str, String, Vec<u8>, u16)]) -> usize {
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((method, path, body, expect)) = requests.get(i) else {
                    return;
                };
                let node = nodes[i % nodes.len()];
                let ok = request(node, method, path, &[], body, TIMEOUT)
                    .is_ok_and(|r| r.status == *expect);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    failed.into_inner()
}

/// The sum over nodes and names, one `/metrics` fetch per node.
fn sum(nodes: &[SocketAddr], names: &[&str]) -> u64 {
    nodes
        .iter()
        .filter_map(|&n| metrics(n, names))
        .flatten()
        .map(|value| value.unwrap_or(0))
        .sum()
}

/// Writes `keys` values of 1 KiB named `{prefix}-{i}` to every replica
/// (`w=all`), spread over `nodes`.
fn preload(nodes: &[SocketAddr], prefix: &str, keys: usize) -> Result<(), String> {
    let writes: Vec<_> = (0..keys)
        .map(|i| ("PUT", format!("/kv/{prefix}-{i}?w=all"), value(i), 204))
        .collect();
    match send_all(nodes, &writes) {
        0 => Ok(()),
        failed => Err(format!("{failed} of {keys} first writes failed")),
    }
}

fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(found) = probe() {
            return Ok(found);
        }
        if Instant::now() >= end {
            return Err(format!("timed out after {deadline:?} waiting for {what}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

// ---------------------------------------------------------------------------
// 1. Anti-entropy after an outage

const PEER_BYTES: &[&str] = &["dnd_peer_bytes_sent_total", "dnd_peer_bytes_received_total"];

fn anti_entropy(keys: usize) -> Result<String, String> {
    let mut rng = StdRng::seed_from_u64(1);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let args = [
        "-q",
        "--hinted-handoff",
        "false",
        "--anti-entropy-interval-ms",
        "1000",
    ];
    let mut cluster = cluster(3, dir.path(), &args, &mut rng)?;
    let nodes: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.http_addr()).collect();
    eprintln!("healing: anti-entropy: loading {keys} keys on three nodes");
    preload(&nodes, "old", keys)?;

    cluster.kill(2);
    let up = &nodes[..2];
    eprintln!("healing: anti-entropy: node 3 killed; {NEW_KEYS} writes and {DELETED_KEYS} deletes");
    let mut changes: Vec<_> = (0..NEW_KEYS)
        .map(|i| ("PUT", format!("/kv/new-{i}"), value(i), 204))
        .collect();
    changes.extend((0..DELETED_KEYS).map(|i| ("DELETE", format!("/kv/old-{i}"), Vec::new(), 204)));
    let failed = send_all(up, &changes);
    if failed > 0 {
        return Err(format!(
            "{failed} writes or deletes failed during the outage"
        ));
    }
    let differing_bytes: u64 = (0..NEW_KEYS)
        .map(|i| (format!("new-{i}").len() + VALUE_BYTES) as u64)
        .chain((0..DELETED_KEYS).map(|i| format!("old-{i}").len() as u64))
        .sum();
    let differing_keys = (NEW_KEYS + DELETED_KEYS) as u64;

    // The restarted node's counters start from zero.
    let bytes_before = sum(up, PEER_BYTES);
    let restarted = Instant::now();
    cluster.spawn(2).map_err(|e| e.to_string())?;
    let repaired = wait_for("node 3 to repair every key", HEAL_DEADLINE, || {
        metric(nodes[2], "dnd_anti_entropy_keys_repaired_total").filter(|&n| n >= differing_keys)
    })?;
    let converge = restarted.elapsed();
    let bytes = sum(&nodes, PEER_BYTES) - bytes_before;

    // What the trees cost when nothing differs.
    let idle_from = sum(&nodes, PEER_BYTES);
    let idle_window = Duration::from_secs(10);
    thread::sleep(idle_window);
    let idle_rate = (sum(&nodes, PEER_BYTES) - idle_from) as f64 / idle_window.as_secs_f64();
    let trees = idle_rate * converge.as_secs_f64();
    cluster.stop(Duration::from_secs(10));

    let ratio = bytes as f64 / differing_bytes as f64;
    let without_trees = (bytes as f64 - trees).max(0.0) / differing_bytes as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Anti-entropy after an outage\n\n\
         Three nodes (N=3, R=2, W=2, `--hinted-handoff false`, `--anti-entropy-interval-ms 1000`) \
         with {keys} keys; node 3 killed (kill -9) while {NEW_KEYS} keys were written and \
         {DELETED_KEYS} deleted, then restarted on its data.\n\n\
         | figure | value |\n|---|---:|\n\
         | keys that differed (writes + tombstones) | {differing_keys} |\n\
         | bytes that differed (keys + values) | {} |\n\
         | time from restart until node 3 had repaired them all | **{:.1} s** |\n\
         | keys anti-entropy repaired on node 3 | {repaired} |\n\
         | bytes between the nodes meanwhile (requests + answers) | {} |\n\
         | **bytes sent / bytes that differed** | **{ratio:.2}×** |\n\
         | tree exchanges alone once nothing differs | {:.1} KiB/s |\n\
         | same ratio, less that tree cost over the repair | {without_trees:.2}× |\n\
         | data held (one copy) | {} |\n\n\
         Goal: under 2× the differing data plus the tree exchange, not a full copy.\n",
        mib(differing_bytes),
        converge.as_secs_f64(),
        mib(bytes),
        idle_rate / 1024.0,
        mib((keys * (VALUE_BYTES + 10)) as u64),
    );
    Ok(out)
}

// ---------------------------------------------------------------------------
// 2. A sixth node joins five under load

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    latency: Duration,
    failed: Option<u16>,
}

fn client_load(
    nodes: Vec<SocketAddr>,
    keys: usize,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    seed: u64,
) {
    let per_thread = JOIN_LOAD_RATE / THREADS as u64;
    let interval = Duration::from_secs_f64(1.0 / per_thread as f64);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut due = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < due {
            thread::sleep(due - now);
        }
        let key = rng.random_range(0..keys);
        let node = nodes[rng.random_range(0..nodes.len())];
        let path = format!("/kv/key-{key}");
        let reply = if rng.random_bool(0.5) {
            request(node, "GET", &path, &[], b"", TIMEOUT).map(|r| (r.status, [200, 300]))
        } else {
            // Replacing, not piling up siblings under repeated writes.
            let path = format!("{path}?overwrite=true");
            request(node, "PUT", &path, &[], &value(key), TIMEOUT).map(|r| (r.status, [204, 204]))
        };
        let failed = match reply {
            Ok((status, ok)) if ok.contains(&status) => None,
            Ok((status, _)) => Some(status),
            Err(_) => Some(0),
        };
        // From when the request was due: a slow answer delays the next.
        samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Sample {
                at: due,
                latency: due.elapsed(),
                failed,
            });
        due += interval;
    }
}

fn phase(name: &str, samples: &[Sample], from: Instant, to: Instant) -> String {
    let mut latencies: Vec<Duration> = samples
        .iter()
        .filter(|s| s.at >= from && s.at < to && s.failed.is_none())
        .map(|s| s.latency)
        .collect();
    latencies.sort();
    let failed: Vec<u16> = samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .filter_map(|s| s.failed)
        .collect();
    let pick = |q: f64| -> String {
        if latencies.is_empty() {
            return "–".into();
        }
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        format!("{:.2} ms", latencies[i].as_secs_f64() * 1000.0)
    };
    let missing = failed.iter().filter(|&&s| s == 404).count();
    format!(
        "| {name} | {:.1} s | {} | {} | {} | {} | {} |",
        (to - from).as_secs_f64(),
        latencies.len(),
        pick(0.5),
        pick(0.99),
        failed.len(),
        missing
    )
}

fn join_under_load(keys: usize) -> Result<String, String> {
    let mut rng = StdRng::seed_from_u64(2);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cluster = cluster(5, dir.path(), &["-q"], &mut rng)?;
    let old: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.http_addr()).collect();
    eprintln!("healing: join: loading {keys} keys on five nodes");
    preload(&old, "key", keys)?;

    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let (old, stop, samples) = (old.clone(), stop.clone(), samples.clone());
            thread::spawn(move || client_load(old, keys, stop, samples, 100 + t as u64))
        })
        .collect();
    let load_began = Instant::now();
    thread::sleep(BEFORE_JOIN);

    let handoff = ["dnd_handoff_bytes_sent_total"];
    let handoff_keys = ["dnd_handoff_keys_sent_total"];
    let (bytes_before, keys_before) = (sum(&old, &handoff), sum(&old, &handoff_keys));
    let jobs_before: Vec<u64> = old
        .iter()
        .map(|&n| metric(n, "dnd_handoff_jobs_total").unwrap_or(0))
        .collect();
    eprintln!("healing: join: the sixth node joins");
    let joined = Instant::now();
    let sixth = cluster.add_node();
    cluster.spawn(sixth).map_err(|e| e.to_string())?;
    let all: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.http_addr()).collect();
    wait_for(
        "every node to finish handing data over",
        HEAL_DEADLINE,
        || {
            let six_alive = dnd::dev::http_get(all[0], "/cluster/members")
                .is_some_and(|(_, body)| body.matches("\"alive\"").count() == 6);
            let jobs_done = old.iter().zip(&jobs_before).all(|(&n, &before)| {
                metric(n, "dnd_handoff_jobs_total").is_some_and(|now| now > before)
            });
            let idle = all
                .iter()
                .all(|&n| metric(n, "dnd_handoff_running") == Some(0));
            (six_alive && jobs_done && idle).then_some(())
        },
    )?;
    let done = Instant::now();
    let moved_bytes = sum(&all, &handoff) - bytes_before;
    let moved_keys = sum(&all, &handoff_keys) - keys_before;
    thread::sleep(AFTER_JOIN);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    let ended = Instant::now();
    cluster.stop(Duration::from_secs(10));

    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let copies_bytes = (keys * (VALUE_BYTES + 10) * 3) as u64;
    let share = copies_bytes / 6;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## A sixth node joins five under load\n\n\
         Five nodes (N=3, R=2, W=2, defaults) with {keys} keys; clients send {JOIN_LOAD_RATE} \
         requests/s (half reads, half overwrites of random keys) through the five throughout; \
         the sixth node joins after {} s.\n\n\
         | figure | value |\n|---|---:|\n\
         | time from the join until every node finished handing over | **{:.1} s** |\n\
         | bytes handed over | {} |\n\
         | a sixth of all copies (N × keys × size / 6) | {} |\n\
         | **bytes moved / a sixth of the copies** | **{:.2}×** |\n\
         | keys handed over (a sixth of the copies: {}) | {moved_keys} |\n\n\
         Client requests by phase (latency from when each was due; failed: not the \
         expected status, *missing*: a read that found no value):\n\n\
         | phase | length | done | p50 | p99 | failed | missing |\n|---|---:|---:|---:|---:|---:|---:|\n\
         {}\n{}\n{}\n",
        BEFORE_JOIN.as_secs(),
        (done - joined).as_secs_f64(),
        mib(moved_bytes),
        mib(share),
        moved_bytes as f64 / share as f64,
        keys * 3 / 6,
        phase("before the join", &samples, load_began, joined),
        phase("during the move", &samples, joined, done),
        phase("after", &samples, done, ended),
    );
    Ok(out)
}
