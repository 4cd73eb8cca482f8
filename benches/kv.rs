//! Key-value throughput and latency of real `dnd` processes, as a markdown
//! report: one node (`single`) against a three-node cluster (`cluster3`),
//! measured in the same run, since on a shared machine only ratios mean much.
//!
//! ```sh
//! cargo bench --bench kv                       # both scenarios, 10 s per phase
//! cargo bench --bench kv -- --seconds 3        # a quick run
//! cargo bench --bench kv -- --scenario single --concurrency 64 --out kv.md
//! ```
//!
//! Options (after `--`):
//!
//! | option | default | meaning |
//! | --- | --- | --- |
//! | `--seconds N` | 10 | length of each phase |
//! | `--concurrency C` | 32 | client connections of the closed loop (the open loop has 2C) |
//! | `--keys K` | 10000 | keys `bench-0` .. `bench-{K-1}` |
//! | `--value-bytes B` | 1024 | size of each value |
//! | `--scenario NAME` | both | `single` or `cluster3`; repeat for both |
//! | `--out FILE` | none | also write the report to FILE |
//! | `--node-flags "F"` | none | extra flags for every `dnd` process, e.g. `"--storage memory"` |
//!
//! Each scenario starts its own processes with default flags (disk storage,
//! `--sync periodic`, `-q`) on free loopback ports, with data in temp dirs
//! under `target/tmp`; `cluster3` is one `dnd start` and two `dnd join`
//! through it, and waits until each node lists the other two alive. Then four
//! phases run, with a 1 s pause between them:
//!
//! 1. PUT, closed loop: C connections each send the next request as soon as
//!    the last answered, for N seconds; keys cycle through the key space.
//! 2. GET, closed loop, of the keys written (any key the PUT phase did not
//!    write is written first, untimed).
//! 3. PUT, open loop at half the throughput of phase 1: request `i` is due at
//!    `start + i / rate`; a pacer releases the due requests at each tick of
//!    tokio's 1 ms timer, and 2C workers send them in order. Latency counts
//!    from the time a request was due, so time spent waiting for a free
//!    worker behind slow answers counts too (no coordinated omission); the
//!    report also gives p99 from the send.
//! 4. GET, open loop at half the throughput of phase 2.
//!
//! Requests go round-robin over the scenario's nodes: each client keeps one
//! keep-alive connection per node and sends request `i` to node `i mod n`.
//! Only successful requests (2xx for PUT, 200 with a value of the right size
//! for GET) count as done and have their latency recorded; the others are
//! counted by kind (HTTP status, connect error, timeout, broken connection).
//! Latencies are counted in a log-linear histogram (`benches/support`), so
//! percentiles are within 0.2% of the exact value.
//! The load generator is a minimal HTTP/1.1 client on a single-threaded tokio
//! runtime, so it takes as little as possible of the CPU the nodes share;
//! each phase reports the CPU the client and the nodes used (from `/proc`),
//! which shows when the client, not the nodes, is the limit.
//! Processes are killed and temp dirs removed at the end, also on a panic.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

mod support;
use support::{
    cpu_seconds, free_port, http_get, release, value_of, Conn, Fail, Histogram, Released,
};

/// How long one request may take before it counts as a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process may take to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a cluster may take until each node lists the others alive.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const PAUSE: Duration = Duration::from_secs(1);

const USAGE: &str = "usage: cargo bench --bench kv -- [--seconds N] [--concurrency C] [--keys K] \
[--value-bytes B] [--scenario single|cluster3]... [--out FILE]";

// ---------------------------------------------------------------------------
// Arguments

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Scenario {
    Single,
    Cluster3,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Single => "single",
            Scenario::Cluster3 => "cluster3",
        }
    }

    fn nodes(self) -> usize {
        match self {
            Scenario::Single => 1,
            Scenario::Cluster3 => 3,
        }
    }
}

struct Args {
    seconds: u64,
    concurrency: usize,
    keys: u64,
    value_bytes: usize,
    scenarios: Vec<Scenario>,
    out: Option<PathBuf>,
    node_flags: Vec<String>,
}

fn parse_args() -> std::result::Result<Option<Args>, String> {
    let mut args = Args {
        seconds: 10,
        concurrency: 32,
        keys: 10_000,
        value_bytes: 1024,
        scenarios: Vec::new(),
        out: None,
        node_flags: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            "-h" | "--help" => return Ok(None),
            "--seconds" => args.seconds = number(&name, value("a number of seconds")?)?,
            "--concurrency" => args.concurrency = number(&name, value("a number")?)?,
            "--keys" => args.keys = number(&name, value("a number")?)?,
            "--value-bytes" => args.value_bytes = number(&name, value("a number")?)?,
            "--out" => args.out = Some(PathBuf::from(value("a file name")?)),
            "--node-flags" => args
                .node_flags
                .extend(value("flags")?.split_whitespace().map(str::to_string)),
            "--scenario" => {
                let scenario = match value("single or cluster3")?.as_str() {
                    "single" => Scenario::Single,
                    "cluster3" => Scenario::Cluster3,
                    other => {
                        return Err(format!(
                            "unknown scenario `{other}`: use single or cluster3"
                        ))
                    }
                };
                args.scenarios.push(scenario);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.seconds == 0 || args.concurrency == 0 || args.keys == 0 {
        return Err("--seconds, --concurrency and --keys must be at least 1".into());
    }
    if args.scenarios.is_empty() {
        args.scenarios = vec![Scenario::Single, Scenario::Cluster3];
    }
    args.scenarios.sort();
    args.scenarios.dedup();
    Ok(Some(args))
}

fn number<T: std::str::FromStr>(name: &str, text: String) -> std::result::Result<T, String> {
    text.parse()
        .map_err(|_| format!("{name}: `{text}` is not a valid number"))
}

// ---------------------------------------------------------------------------
// Processes

/// A `dnd` process, killed when dropped; its temp dir goes with it.
struct DndNode {
    child: Child,
    gossip_port: u16,
    http: SocketAddr,
    id: String,
    dir: tempfile::TempDir,
}

impl Drop for DndNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `dir` is removed after this, once the process is gone.
    }
}

fn dnd_binary() -> Result<&'static Path> {
    let bin = Path::new(env!("CARGO_BIN_EXE_dnd"));
    if !bin.is_file() {
        bail!(
            "the dnd binary {} is missing; `cargo bench --bench kv` builds it",
            bin.display()
        );
    }
    Ok(bin)
}

impl DndNode {
    /// Starts `dnd <args>` and waits for it to answer `/health`, trying fresh
    /// ports again if the process exits at once (a port taken meanwhile).
    fn spawn(args: &[&str]) -> Result<DndNode> {
        let mut attempt = 1;
        loop {
            match Self::try_spawn(args) {
                Ok(node) => return Ok(node),
                Err((exited, e)) if exited && attempt < 3 => {
                    eprintln!("kv bench: retrying with other ports: {e:#}");
                    attempt += 1;
                }
                Err((_, e)) => return Err(e),
            }
        }
    }

    fn try_spawn(args: &[&str]) -> std::result::Result<DndNode, (bool, anyhow::Error)> {
        let fail = |e: anyhow::Error| (false, e);
        let bin = dnd_binary().map_err(fail)?;
        let dir = tempfile::Builder::new()
            .prefix("dnd-kv-bench-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .context("creating a temp dir under target/tmp")
            .map_err(fail)?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))
            .context("creating the stderr log")
            .map_err(fail)?;
        let gossip_port = free_port();
        let http_port = loop {
            let port = free_port();
            if port != gossip_port {
                break port;
            }
        };
        let mut command = Command::new(bin);
        command
            .args(args)
            .args(["--port", &gossip_port.to_string()])
            .args(["--server-port", &http_port.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("-q")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // Default flags: no DND_* variable of the caller's shell leaks in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DND_") {
                command.env_remove(key);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))
            .map_err(fail)?;
        let mut node = DndNode {
            child,
            gossip_port,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            id: String::new(),
            dir,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = node.child.try_wait().ok().flatten() {
                let e = anyhow!(
                    "`dnd {}` exited ({status}) before answering /health{}",
                    args.join(" "),
                    node.stderr_tail()
                );
                return Err((true, e));
            }
            if let Some((200, body)) = http_get(node.http, "/health") {
                let health: serde_json::Value = serde_json::from_str(&body)
                    .map_err(|e| fail(anyhow!("/health answered `{body}`: {e}")))?;
                node.id = health["node_id"].as_str().unwrap_or_default().to_string();
                return Ok(node);
            }
            if started.elapsed() > START_TIMEOUT {
                let e = anyhow!(
                    "`dnd {}` did not answer /health on {} within {START_TIMEOUT:?}{}",
                    args.join(" "),
                    node.http,
                    node.stderr_tail()
                );
                return Err((false, e));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines the process wrote to stderr, for error messages.
    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return String::new();
        }
        let tail = &lines[lines.len().saturating_sub(10)..];
        format!("; its stderr ends with:\n  {}", tail.join("\n  "))
    }
}

/// The processes of one scenario.
struct Cluster {
    nodes: Vec<DndNode>,
    converged_in: Option<Duration>,
}

impl Cluster {
    fn start(n: usize, node_flags: &[String]) -> Result<Cluster> {
        let with_flags = |command: &[&str]| -> Vec<String> {
            node_flags
                .iter()
                .cloned()
                .chain(command.iter().map(|s| s.to_string()))
                .collect()
        };
        let start = with_flags(&["start"]);
        let start: Vec<&str> = start.iter().map(String::as_str).collect();
        let mut cluster = Cluster {
            nodes: vec![DndNode::spawn(&start)?],
            converged_in: None,
        };
        let seed = format!("127.0.0.1:{}", cluster.nodes[0].gossip_port);
        let join = with_flags(&["join", &seed]);
        let join: Vec<&str> = join.iter().map(String::as_str).collect();
        for _ in 1..n {
            cluster.nodes.push(DndNode::spawn(&join)?);
        }
        if n > 1 {
            let started = Instant::now();
            cluster.wait_converged()?;
            cluster.converged_in = Some(started.elapsed());
        }
        Ok(cluster)
    }

    fn targets(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.http).collect()
    }

    /// Waits until each node lists every other one as alive.
    fn wait_converged(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            self.check_running()?;
            let mut missing = Vec::new();
            for node in &self.nodes {
                let members = members(node.http).unwrap_or_default();
                for other in self.nodes.iter().filter(|o| o.id != node.id) {
                    let alive = members
                        .iter()
                        .any(|(id, state)| *id == other.id && state == "alive");
                    if !alive {
                        missing.push(format!("{} does not list {} alive", node.http, other.http));
                    }
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if started.elapsed() > CONVERGE_TIMEOUT {
                bail!(
                    "the cluster did not converge within {CONVERGE_TIMEOUT:?}: {}",
                    missing.join("; ")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails if any process has exited.
    fn check_running(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            if let Some(status) = node.child.try_wait().ok().flatten() {
                bail!(
                    "the dnd process serving {} exited ({status}){}",
                    node.http,
                    node.stderr_tail()
                );
            }
        }
        Ok(())
    }
}

/// The `(id, state)` of each member the node at `addr` lists.
fn members(addr: SocketAddr) -> Option<Vec<(String, String)>> {
    Some(
        dnd::dev::members(addr)?
            .into_iter()
            .map(|m| (m.id, m.state))
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 keep-alive client

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Put,
    Get,
}

/// One client: a keep-alive connection per node, opened again after an
/// error or a `Connection: close`.
struct Client {
    conns: Vec<Conn>,
    request: Vec<u8>,
}

impl Client {
    /// Opens every connection up front, so a phase's clock does not include
    /// them; an unreachable node stops the run here.
    async fn connect(addrs: &[SocketAddr]) -> Result<Client> {
        let mut conns = Vec::new();
        for &addr in addrs {
            let conn = Conn::open(addr)
                .await
                .with_context(|| format!("cannot connect to the dnd node at {addr}"))?;
            conns.push(conn);
        }
        Ok(Client {
            conns,
            request: Vec::with_capacity(1024),
        })
    }

    async fn call(&mut self, node: usize, plan: &Plan, key: u64) -> Result<(), Fail> {
        let conn = &mut self.conns[node];
        let addr = conn.addr();
        self.request.clear();
        match plan.op {
            // Replace what is there, as the other stores' writes do: a
            // plain PUT would keep every write to a key as a sibling.
            Op::Put => {
                let _ = write!(
                    self.request,
                    "PUT /kv/bench-{key}?overwrite=true HTTP/1.1\r\nHost: {addr}\r\n\
                     Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                    plan.value.len()
                );
                self.request.extend_from_slice(&plan.value);
            }
            Op::Get => {
                let _ = write!(
                    self.request,
                    "GET /kv/bench-{key} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
                );
            }
        }
        let response = conn.request(&self.request, REQUEST_TIMEOUT).await?;
        match (plan.op, response.status) {
            (Op::Put, 200..=299) => Ok(()),
            (Op::Get, 200) if response.body_len() == plan.value.len() => Ok(()),
            (Op::Get, 200) => Err(Fail::WrongValue),
            (_, status) => Err(Fail::Status(status)),
        }
    }
}

// ---------------------------------------------------------------------------
// Load

/// Which key request number `i` uses.
enum Keys {
    /// `i mod K`.
    Cycle(u64),
    /// The `i`-th of a list; requests stop at its end.
    List(Vec<u64>),
}

impl Keys {
    fn key(&self, i: u64) -> Option<u64> {
        match self {
            Keys::Cycle(k) => Some(i % k),
            Keys::List(list) => list.get(i as usize).copied(),
        }
    }
}

/// What one phase sends, shared by its clients.
struct Plan {
    op: Op,
    targets: Vec<SocketAddr>,
    keys: Keys,
    value: Arc<Vec<u8>>,
    /// Which keys some PUT wrote, by index.
    written: Arc<Vec<AtomicBool>>,
    /// The next request number.
    next: AtomicU64,
}

#[derive(Clone, Copy)]
enum Pace {
    /// Each client sends its next request when the last one answers.
    Closed,
    /// Requests start at `rate` per second, whatever the answers do.
    Open { rate: f64 },
}

#[derive(Default)]
struct Stats {
    done: u64,
    /// From the request's scheduled start (open loop) or send (closed loop)
    /// until its answer, for done requests.
    latency: Histogram,
    /// From the request being sent until its answer.
    service: Histogram,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.done += other.done;
        self.latency.merge(&other.latency);
        self.service.merge(&other.service);
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
    }

    fn fail(&mut self, fail: Fail) {
        *self.errors.entry(fail.label()).or_default() += 1;
    }
}

/// Sends one request and records its outcome; `scheduled` is when latency
/// counts from.
async fn send(
    plan: &Plan,
    client: &mut Client,
    stats: &mut Stats,
    i: u64,
    key: u64,
    scheduled: Instant,
    open: bool,
) -> Option<Fail> {
    let sent = Instant::now();
    let result = client
        .call((i % plan.targets.len() as u64) as usize, plan, key)
        .await;
    let answered = Instant::now();
    match result {
        Ok(()) => {
            stats.done += 1;
            stats.latency.record(answered - scheduled);
            if open {
                stats.service.record(answered - sent);
            }
            if plan.op == Op::Put {
                plan.written[key as usize].store(true, Ordering::Relaxed);
            }
            None
        }
        Err(fail) => {
            stats.fail(fail);
            Some(fail)
        }
    }
}

/// Closed loop: the next request as soon as the last one answered.
async fn closed_worker(plan: Arc<Plan>, mut client: Client, end: Instant) -> Stats {
    let mut stats = Stats::default();
    while Instant::now() < end {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        let Some(key) = plan.keys.key(i) else { break };
        if send(
            &plan,
            &mut client,
            &mut stats,
            i,
            key,
            Instant::now(),
            false,
        )
        .await
            == Some(Fail::Connect)
        {
            // Do not spin on a refused connection.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stats
}

/// Open loop: whatever request the pacer released next.
async fn open_worker(plan: Arc<Plan>, mut client: Client, released: Arc<Released>) -> Stats {
    let mut stats = Stats::default();
    while let Some((i, scheduled)) = released.pop().await {
        if let Some(key) = plan.keys.key(i) {
            send(&plan, &mut client, &mut stats, i, key, scheduled, true).await;
        }
    }
    stats
}

struct PhaseResult {
    elapsed: Duration,
    rate: Option<f64>,
    stats: Stats,
    /// CPU time of this process (the client) and of the nodes, in cores.
    client_cpu: Option<f64>,
    nodes_cpu: Option<f64>,
}

impl PhaseResult {
    fn throughput(&self) -> f64 {
        self.stats.done as f64 / self.elapsed.as_secs_f64()
    }
}

async fn run_phase(
    plan: Plan,
    workers: usize,
    pace: Pace,
    length: Duration,
) -> Result<PhaseResult> {
    let plan = Arc::new(plan);
    let mut clients = Vec::with_capacity(workers);
    for _ in 0..workers {
        clients.push(Client::connect(&plan.targets).await?);
    }
    let start = Instant::now();
    let end = start + length;
    let released = Arc::new(Released::default());
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| match pace {
            Pace::Closed => tokio::spawn(closed_worker(plan.clone(), client, end)),
            Pace::Open { .. } => tokio::spawn(open_worker(plan.clone(), client, released.clone())),
        })
        .collect();
    if let Pace::Open { rate } = pace {
        release(&released, rate, start, end, &|_| false).await;
        for _ in 0..workers {
            released.push(None);
        }
    }
    let mut stats = Stats::default();
    for task in tasks {
        stats.merge(task.await.context("a load task panicked")?);
    }
    let elapsed = start.elapsed();
    Ok(PhaseResult {
        elapsed,
        rate: match pace {
            Pace::Open { rate } => Some(rate),
            Pace::Closed => None,
        },
        stats,
        client_cpu: None,
        nodes_cpu: None,
    })
}

struct ScenarioResult {
    scenario: Scenario,
    put: PhaseResult,
    get: PhaseResult,
    put_half: PhaseResult,
    get_half: PhaseResult,
    notes: Vec<String>,
}

fn run_scenario(
    rt: &tokio::runtime::Runtime,
    scenario: Scenario,
    args: &Args,
) -> Result<ScenarioResult> {
    let name = scenario.name();
    eprintln!(
        "kv bench: {name}: starting {} dnd process(es)",
        scenario.nodes()
    );
    let started = Instant::now();
    let mut cluster = Cluster::start(scenario.nodes(), &args.node_flags)
        .with_context(|| format!("starting the {name} scenario"))?;
    let mut notes = vec![match cluster.converged_in {
        Some(t) => format!(
            "{name}: nodes up in {:.1} s, each listing the others alive after {:.1} s more",
            (started.elapsed() - t).as_secs_f64(),
            t.as_secs_f64()
        ),
        None => format!(
            "{name}: node up in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    }];
    let length = Duration::from_secs(args.seconds);
    let value = Arc::new(value_of(args.value_bytes));
    let written: Arc<Vec<AtomicBool>> =
        Arc::new((0..args.keys).map(|_| AtomicBool::new(false)).collect());
    let targets = cluster.targets();
    let plan = |op: Op, keys: Keys| Plan {
        op,
        targets: targets.clone(),
        keys,
        value: value.clone(),
        written: written.clone(),
        next: AtomicU64::new(0),
    };
    let mut phase =
        |label: &str, op: Op, keys: Keys, pace: Pace, length: Duration| -> Result<PhaseResult> {
            eprintln!("kv bench: {name}: {label}");
            // The open loop gets headroom: twice the workers, so that they
            // rarely all wait at once at half the closed loop's throughput.
            let workers = match pace {
                Pace::Closed => args.concurrency,
                Pace::Open { .. } => 2 * args.concurrency,
            };
            let pids: Vec<String> = cluster
                .nodes
                .iter()
                .map(|n| n.child.id().to_string())
                .collect();
            let cpu_before = (cpu_seconds(&["self".into()]), cpu_seconds(&pids));
            let mut result = rt
                .block_on(run_phase(plan(op, keys), workers, pace, length))
                .with_context(|| format!("{name}: {label}"))?;
            let cpu_after = (cpu_seconds(&["self".into()]), cpu_seconds(&pids));
            let secs = result.elapsed.as_secs_f64();
            result.client_cpu = cpu_before.0.zip(cpu_after.0).map(|(a, b)| (b - a) / secs);
            result.nodes_cpu = cpu_before.1.zip(cpu_after.1).map(|(a, b)| (b - a) / secs);
            cluster.check_running()?;
            std::thread::sleep(PAUSE);
            Ok(result)
        };

    let put = phase(
        "PUT, closed loop",
        Op::Put,
        Keys::Cycle(args.keys),
        Pace::Closed,
        length,
    )?;
    if put.stats.done == 0 {
        bail!(
            "{name}: no PUT succeeded ({}); is the node reachable and healthy?",
            errors(&put.stats)
        );
    }
    // Every key must exist before the GET phase: write what the PUT phase
    // did not reach, untimed.
    let mut filled = 0;
    for _ in 0..3 {
        let missing: Vec<u64> = (0..args.keys)
            .filter(|&k| !written[k as usize].load(Ordering::Relaxed))
            .collect();
        if missing.is_empty() {
            break;
        }
        if filled == 0 {
            filled = missing.len();
        }
        phase(
            &format!("writing {} keys the PUT phase did not reach", missing.len()),
            Op::Put,
            Keys::List(missing),
            Pace::Closed,
            REQUEST_TIMEOUT * 60,
        )?;
    }
    let unwritten = written
        .iter()
        .filter(|w| !w.load(Ordering::Relaxed))
        .count();
    if filled > 0 {
        notes.push(format!(
            "{name}: {filled} keys the PUT phase did not reach were written before the GET phase{}",
            if unwritten > 0 {
                format!(", {unwritten} of them could not be")
            } else {
                String::new()
            }
        ));
    }

    let get = phase(
        "GET, closed loop",
        Op::Get,
        Keys::Cycle(args.keys),
        Pace::Closed,
        length,
    )?;
    if get.stats.done == 0 {
        bail!(
            "{name}: no GET succeeded ({}); is the node reachable and healthy?",
            errors(&get.stats)
        );
    }
    let put_rate = put.throughput() / 2.0;
    let put_half = phase(
        &format!("PUT, open loop at {put_rate:.0} ops/s"),
        Op::Put,
        Keys::Cycle(args.keys),
        Pace::Open { rate: put_rate },
        length,
    )?;
    let get_rate = get.throughput() / 2.0;
    let get_half = phase(
        &format!("GET, open loop at {get_rate:.0} ops/s"),
        Op::Get,
        Keys::Cycle(args.keys),
        Pace::Open { rate: get_rate },
        length,
    )?;
    drop(cluster);
    Ok(ScenarioResult {
        scenario,
        put,
        get,
        put_half,
        get_half,
        notes,
    })
}

// ---------------------------------------------------------------------------
// Report

fn ms(latency: Option<Duration>) -> String {
    match latency {
        Some(latency) => format!("{:.2} ms", latency.as_micros() as f64 / 1000.0),
        None => "–".into(),
    }
}

fn errors(stats: &Stats) -> String {
    if stats.errors.is_empty() {
        return "none".into();
    }
    stats
        .errors
        .iter()
        .map(|(kind, count)| format!("{kind}: {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

fn cores(cpu: Option<f64>) -> String {
    cpu.map_or("–".into(), |c| format!("{c:.2}"))
}

/// One table row per scenario, then the ratio cluster3 / single.
fn table(
    out: &mut String,
    title: &str,
    results: &[ScenarioResult],
    pick: fn(&ScenarioResult) -> &PhaseResult,
    open: bool,
) {
    let lat = |h: &Histogram, q| h.percentile(q).map_or(f64::NAN, |d| d.as_secs_f64());
    out.push_str(&format!("## {title}\n\n"));
    if open {
        out.push_str("| scenario | target ops/s | done ops/s | p50 | p99 | p99 from send | done | errors | client CPU | nodes CPU |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|\n");
    } else {
        out.push_str("| scenario | ops/s | p50 | p99 | done | errors | client CPU | nodes CPU |\n");
        out.push_str("|---|---:|---:|---:|---:|---|---:|---:|\n");
    }
    for r in results {
        let p = pick(r);
        let rates = match p.rate {
            Some(rate) => format!("{rate:.0} | {:.0}", p.throughput()),
            None => format!("{:.0}", p.throughput()),
        };
        let send = if open {
            format!(" {} |", ms(p.stats.service.percentile(0.99)))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {} | {rates} | {} | {} |{send} {} | {} | {} | {} |\n",
            r.scenario.name(),
            ms(p.stats.latency.percentile(0.50)),
            ms(p.stats.latency.percentile(0.99)),
            p.stats.done,
            errors(&p.stats),
            cores(p.client_cpu),
            cores(p.nodes_cpu),
        ));
    }
    if let [single, cluster] = results {
        let (s, c) = (pick(single), pick(cluster));
        let p50 = ratio(lat(&c.stats.latency, 0.50), lat(&s.stats.latency, 0.50));
        let p99 = ratio(lat(&c.stats.latency, 0.99), lat(&s.stats.latency, 0.99));
        let throughput = ratio(c.throughput(), s.throughput());
        let row = if open {
            format!(
                "| {} | {throughput} | {p50} | **{p99}** | {} |",
                ratio(c.rate.unwrap_or_default(), s.rate.unwrap_or_default()),
                ratio(lat(&c.stats.service, 0.99), lat(&s.stats.service, 0.99)),
            )
        } else {
            format!("| **{throughput}** | {p50} | {p99} |")
        };
        out.push_str(&format!(
            "| **cluster3 / single** {row} | | {} | {} |\n",
            ratio(
                c.client_cpu.unwrap_or(f64::NAN),
                s.client_cpu.unwrap_or(f64::NAN)
            ),
            ratio(
                c.nodes_cpu.unwrap_or(f64::NAN),
                s.nodes_cpu.unwrap_or(f64::NAN)
            ),
        ));
    }
    out.push('\n');
}

fn report(args: &Args, results: &[ScenarioResult]) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = String::from("# dnd key-value throughput and latency\n\n");
    out.push_str(&format!(
        "{} s per phase · {} connections · {} keys · {} B values · {cores} cores shared by the nodes and the client · request timeout {} s\n\n",
        args.seconds,
        args.concurrency,
        args.keys,
        args.value_bytes,
        REQUEST_TIMEOUT.as_secs()
    ));
    if !args.node_flags.is_empty() {
        out.push_str(&format!(
            "Every node also ran with `{}`.\n\n",
            args.node_flags.join(" ")
        ));
    }
    out.push_str(
        "Real `dnd` processes with default flags (disk storage, `--sync periodic`): *single* is one \
`dnd start`, *cluster3* one `start` and two `join`s. Requests go round-robin over the scenario's \
nodes. Scenarios run one after the other on a shared machine: compare them within this report only. \
Only successful requests count as done and have latencies; the others are listed by kind. \
*CPU* is in cores (1.00 = one core busy) over the phase: the client is this process, the nodes \
the `dnd` processes together.\n\n",
    );
    table(&mut out, "PUT, closed loop", results, |r| &r.put, false);
    table(&mut out, "GET, closed loop", results, |r| &r.get, false);
    out.push_str(&format!(
        "The open-loop phases pace requests at half the closed-loop throughput above, with {} \
workers. Requests due are released at each tick of the client's 1 ms timer, and latency counts from \
that tick, so time spent waiting for a free worker behind slow answers counts (no coordinated \
omission); *p99 from send* leaves that wait out.\n\n",
        2 * args.concurrency
    ));
    table(
        &mut out,
        "PUT, open loop at half the peak",
        results,
        |r| &r.put_half,
        true,
    );
    table(
        &mut out,
        "GET, open loop at half the peak",
        results,
        |r| &r.get_half,
        true,
    );
    let notes: Vec<&String> = results.iter().flat_map(|r| &r.notes).collect();
    if !notes.is_empty() {
        out.push_str("Notes:\n\n");
        for note in notes {
            out.push_str(&format!("- {note}\n"));
        }
    }
    out
}

fn run(args: &Args) -> Result<String> {
    dnd_binary()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the client's runtime")?;
    let mut results = Vec::new();
    for &scenario in &args.scenarios {
        results.push(run_scenario(&rt, scenario, args)?);
    }
    Ok(report(args, &results))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("kv bench: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(report) => {
            print!("{report}");
            if let Some(path) = &args.out {
                if let Err(e) = std::fs::write(path, &report) {
                    eprintln!("kv bench: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kv bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
