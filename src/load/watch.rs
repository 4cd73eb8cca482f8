//! The watch workload: what open watches cost a dnd node, and that they
//! still answer.
//!
//! For every record (`--records`, written by an earlier phase) it reads the
//! key's `X-Dnd-Context`, then holds one watch on it, each on its own
//! connection and in its own thread (a small stack each):
//! `GET /kv/{key}?wait=CONTEXT&timeout=300`. With them open:
//!
//! 1. the node's resident memory (`VmRSS` of the first `--server-pids`)
//!    before and with the watches open, once `dnd_kv_watches_open` (in
//!    `GET /metrics`) reads one per record;
//! 2. the node's CPU time (`utime + stime` in `/proc/PID/stat`) over
//!    `--idle` seconds (default 10) while the watches wait: a node that does
//!    not poll spends about none;
//! 3. one key is written, and its watch must answer 200 within
//!    [`WAKE_WITHIN`]; then [`SAMPLE`] more keys spread over the records,
//!    one at a time, the same; every other watch must still be open.
//!
//! A watch that answers without a write to its key, a woken watch that does
//! not answer 200 in time, or a connection that cannot be opened stops the
//! run (exit status 1) once the figures are printed. Each watch needs an
//! open file in the tool and one in the node: raise `ulimit -n` above the
//! record count for both (and `ulimit -u` above it for the tool's threads).
//! The watches still open at the end are closed by shutting their client
//! down, which interrupts the threads blocked on them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use ureq::http::Method;

use super::client::{Fail, HttpClient, Reply};
use super::{
    cpu_seconds, key_of, thousands, value_of, PhaseResult, Progress, RunArgs, Stats, CLIENT_STACK,
};

/// The watches' own timeout, the most the node takes.
const WATCH_SECONDS: u64 = 300;
/// How soon a woken watch must answer.
const WAKE_WITHIN: Duration = Duration::from_secs(5);
/// Watches woken after the first, to check that the others still work.
const SAMPLE: u64 = 10;
/// Watches started per millisecond: few enough at a time that the node's
/// accept queue keeps up.
const OPENING: usize = 64;
/// Tries of one watch's connection (a full accept queue drops the SYN).
const CONNECT_TRIES: u32 = 5;
/// How long opening every watch, or the node counting them, may take.
const OPEN_WITHIN: Duration = Duration::from_secs(120);
/// How long the node may take to count closed watches as gone.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);
const CONTEXT_HEADER: &str = "x-dnd-context";
const GAUGE: &str = "dnd_kv_watches_open";

/// What the watch workload measured (see the module doc).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct WatchFigures {
    pub watches: u64,
    /// From the first connection until the node counted every watch.
    pub open_seconds: f64,
    /// `dnd_kv_watches_open` with every watch open, after the wakes, and
    /// once the tool closed the rest; `None` if the node has no such metric.
    pub gauge_open: Option<u64>,
    pub gauge_after_wakes: Option<u64>,
    pub gauge_after_close: Option<u64>,
    /// How long after the close `gauge_after_close` was read.
    pub close_seconds: f64,
    pub rss_before_bytes: Option<u64>,
    pub rss_open_bytes: Option<u64>,
    pub idle_seconds: f64,
    /// CPU seconds the node and the tool spent in the idle period.
    pub idle_server_cpu_seconds: Option<f64>,
    pub idle_client_cpu_seconds: Option<f64>,
    /// Watches woken by a write to their key, and how many answered 200
    /// in time.
    pub woken: u64,
    pub woken_ok: u64,
    /// From the write being sent until the first woken watch answered.
    pub first_wake_ms: Option<f64>,
    /// Watches that answered, or whose connection ended, with no write to
    /// their key.
    pub answered_unwoken: u64,
    /// Watches still open after the wakes (of those never woken).
    pub still_open: u64,
}

impl WatchFigures {
    pub fn bytes_per_watch(&self) -> Option<f64> {
        let (before, open) = (self.rss_before_bytes?, self.rss_open_bytes?);
        Some((open as f64 - before as f64) / self.watches.max(1) as f64)
    }
}

/// The figures as the lines under the load tool's table.
pub fn text(f: &WatchFigures) -> String {
    let mut out = String::from("Watches:\n\n");
    let mib =
        |b: Option<u64>| b.map_or("–".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
    let gauge = |g: Option<u64>| g.map_or("–".into(), |g| g.to_string());
    let _ = writeln!(
        out,
        "- {} watches open in {:.1} s; `{GAUGE}` read {}",
        thousands(f.watches as f64),
        f.open_seconds,
        gauge(f.gauge_open)
    );
    let _ = writeln!(
        out,
        "- node resident memory {} before, {} with them open: {} per watch",
        mib(f.rss_before_bytes),
        mib(f.rss_open_bytes),
        f.bytes_per_watch()
            .map_or("–".into(), |b| format!("{b:.0} B"))
    );
    let _ = writeln!(
        out,
        "- CPU over {:.0} s idle: node {} s, this tool {} s",
        f.idle_seconds,
        f.idle_server_cpu_seconds
            .map_or("–".into(), |c| format!("{c:.2}")),
        f.idle_client_cpu_seconds
            .map_or("–".into(), |c| format!("{c:.2}")),
    );
    let _ = writeln!(
        out,
        "- {} of {} woken watches answered 200 within {} s (the first {}); {} answered unwoken; {} \
         still open after; `{GAUGE}` {} after the wakes, {} {:.1} s after the rest were closed\n",
        f.woken_ok,
        f.woken,
        WAKE_WITHIN.as_secs(),
        f.first_wake_ms.map_or("–".into(), |ms| format!("{ms:.1} ms")),
        f.answered_unwoken,
        f.still_open,
        gauge(f.gauge_after_wakes),
        gauge(f.gauge_after_close),
        f.close_seconds,
    );
    out
}

/// `VmRSS` of `pid` in bytes.
fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft limit on this process's open files.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The value of the gauge in a Prometheus text page.
fn gauge_of(page: &str) -> Option<u64> {
    page.lines().find_map(|line| {
        let rest = line.strip_prefix(GAUGE)?;
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            return None;
        }
        let value: f64 = rest.split_whitespace().last()?.parse().ok()?;
        Some(value as u64)
    })
}

/// A request on the tool's own connection to the node, which sits idle
/// while the watches wait: once more on a new connection if the node had
/// closed it meanwhile.
fn side_request(
    side: &HttpClient,
    method: Method,
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Reply, Fail> {
    match side.call(method.clone(), url, content_type, body) {
        Err(Fail::Io) => side.call(method, url, content_type, body),
        other => other,
    }
}

/// Reads the gauge from the node; `None` when it has no such metric.
fn read_gauge(side: &HttpClient, base: &str) -> Option<u64> {
    let reply = side_request(side, Method::GET, &format!("{base}/metrics"), None, &[]).ok()?;
    if reply.status != 200 {
        return None;
    }
    gauge_of(&String::from_utf8_lossy(&reply.body))
}

/// An answer to a watch, or its connection failing.
struct Answer {
    watch: u64,
    result: Result<u16, Fail>,
    at: Instant,
}

/// What the workload found so far.
struct Tally {
    figures: WatchFigures,
    stats: Stats,
    /// Why the run must fail, if it must.
    problems: Vec<String>,
}

impl Tally {
    /// A watch answered (or its connection ended) with no write to its key.
    fn unwoken(&mut self, answer: &Answer) {
        self.figures.answered_unwoken += 1;
        let what = outcome_text(&answer.result);
        *self
            .stats
            .errors
            .entry(format!("watch answered unwoken: {what}"))
            .or_default() += 1;
        if !self
            .problems
            .iter()
            .any(|p| p.contains("no write to its key"))
        {
            self.problems.push(format!(
                "watch {} answered {what} with no write to its key",
                answer.watch
            ));
        }
    }
}

fn outcome_text(result: &Result<u16, Fail>) -> String {
    match result {
        Ok(status) => format!("HTTP {status}"),
        Err(fail) => fail.label(),
    }
}

/// The contexts of records `0..records`, read by `concurrency` threads.
fn contexts(
    target: SocketAddr,
    records: u64,
    concurrency: usize,
    timeout: Duration,
) -> Result<Vec<String>> {
    let base = format!("http://{target}");
    let clients = concurrency.max(1) as u64;
    let mut handles = Vec::new();
    for client in 0..clients {
        let base = base.clone();
        let job = move || -> Result<Vec<(u64, String)>> {
            let http = HttpClient::new(timeout, 1);
            let mut found = Vec::new();
            for record in (client..records).step_by(clients as usize) {
                let key = key_of(record);
                let key = String::from_utf8_lossy(&key);
                let reply = http
                    .get(&format!("{base}/kv/{key}"))
                    .map_err(|fail| anyhow!("GET /kv/{key}: {}", fail.label()))?;
                if ![200, 300, 404].contains(&reply.status) {
                    bail!("GET /kv/{key}: HTTP {}", reply.status);
                }
                let context = reply.header(CONTEXT_HEADER).unwrap_or_default();
                found.push((record, context.to_string()));
            }
            Ok(found)
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-contexts-{client}"))
                .stack_size(CLIENT_STACK)
                .spawn(job)
                .map_err(|e| anyhow!("cannot start a client thread: {e}"))?,
        );
    }
    let mut all = vec![String::new(); records as usize];
    for handle in handles {
        let found = handle
            .join()
            .map_err(|_| anyhow!("a client thread panicked"))??;
        for (record, context) in found {
            all[record as usize] = context;
        }
    }
    Ok(all)
}

/// Runs the watch workload (see the module doc). The figures come back even
/// when a check failed; `aborted` of the result then says which.
pub(super) fn run(
    args: &RunArgs,
    title: &str,
    progress: &Progress,
) -> Result<(PhaseResult, WatchFigures)> {
    let target = args.targets[0];
    let watches = args.records;
    if let Some(limit) = open_files_limit() {
        if limit < watches + 100 {
            bail!(
                "{watches} watches need as many open files, and this process may have {limit}: \
                 raise `ulimit -n` (the node's too)"
            );
        }
    }
    watch(args, target, title, progress)
}

fn watch(
    args: &RunArgs,
    target: SocketAddr,
    title: &str,
    progress: &Progress,
) -> Result<(PhaseResult, WatchFigures)> {
    let watches = args.records;
    let base = format!("http://{target}");
    let pid = args.server_pids.first().cloned();
    let rss = || pid.as_deref().and_then(rss_bytes);
    let node_cpu = || {
        pid.as_ref()
            .and_then(|p| cpu_seconds(std::slice::from_ref(p)))
    };
    let mut tally = Tally {
        figures: WatchFigures {
            watches,
            ..WatchFigures::default()
        },
        stats: Stats::default(),
        problems: Vec::new(),
    };

    progress.show(&format!("{title}: reading {watches} contexts"));
    let contexts = contexts(target, watches, args.concurrency, args.timeout)?;
    let side = HttpClient::new(args.timeout, 1);
    std::thread::sleep(Duration::from_secs(1));
    tally.figures.rss_before_bytes = rss();

    // Every watch on its own connection, in a thread of its own: they share
    // one client, whose shutdown closes the ones still open at the end.
    let began = Instant::now();
    let watching = HttpClient::new(Duration::from_secs(WATCH_SECONDS + 30), 1);
    let (answers, answered) = mpsc::channel::<Answer>();
    let connected = Arc::new(AtomicU64::new(0));
    let open_error: Arc<Mutex<Option<String>>> = Arc::default();
    let mut handles = Vec::with_capacity(watches as usize);
    for (watch, context) in contexts.iter().enumerate() {
        let key = key_of(watch as u64);
        let url = format!(
            "{base}/kv/{}?wait={}&timeout={WATCH_SECONDS}",
            String::from_utf8_lossy(&key),
            utf8_percent_encode(context, NON_ALPHANUMERIC)
        );
        let (answers, connected, open_error, watching) = (
            answers.clone(),
            connected.clone(),
            open_error.clone(),
            watching.clone(),
        );
        let job = move || {
            connected.fetch_add(1, Ordering::Relaxed);
            // A full accept queue drops the connection: only then is the
            // request not sent, and another try safe.
            let mut result = watching.get(&url);
            for _ in 1..CONNECT_TRIES {
                if result.as_ref().err() != Some(&Fail::Connect) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
                result = watching.get(&url);
            }
            if result.as_ref().err() == Some(&Fail::Connect) {
                connected.fetch_sub(1, Ordering::Relaxed);
                open_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(format!("watch {watch}: cannot connect to {target}"));
                return;
            }
            let _ = answers.send(Answer {
                watch: watch as u64,
                result: result.map(|reply| reply.status),
                at: Instant::now(),
            });
        };
        match std::thread::Builder::new()
            .name(format!("load-watch-{watch}"))
            .stack_size(CLIENT_STACK)
            .spawn(job)
        {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                tally.problems.push(format!(
                    "cannot start watch thread {watch}: {e} (is `ulimit -u` high enough?)"
                ));
                break;
            }
        }
        if (watch + 1) % OPENING == 0 {
            // A pace, not a wait for anything: the node accepts these
            // before the next ones knock.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop(answers);
    // Until the node counts every watch (or, without the gauge, every
    // request is out and a second has passed).
    let mut gauge = None;
    while tally.problems.is_empty() {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(e) = open_error.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            tally
                .problems
                .push(format!("{e} (is `ulimit -n` high enough for the node?)"));
            break;
        }
        let open = connected.load(Ordering::Relaxed);
        gauge = read_gauge(&side, &base);
        progress.show(&format!(
            "{title}: {open}/{watches} sent, {} counted by the node",
            gauge.map_or("–".into(), |g| g.to_string())
        ));
        let counted = match gauge {
            Some(g) => g >= watches,
            None => open == watches && began.elapsed() > Duration::from_secs(1),
        };
        if counted && open == watches {
            break;
        }
        if began.elapsed() > OPEN_WITHIN {
            tally.problems.push(format!(
                "after {} s, {open} of {watches} watches were sent and the node counted {}",
                OPEN_WITHIN.as_secs(),
                gauge.map_or("–".into(), |g| g.to_string())
            ));
            break;
        }
    }
    tally.figures.open_seconds = began.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    tally.figures.gauge_open = read_gauge(&side, &base).or(gauge);
    tally.figures.rss_open_bytes = rss();
    while let Ok(answer) = answered.try_recv() {
        tally.unwoken(&answer);
    }

    let began_idle = Instant::now();
    let elapsed_before_idle = began.elapsed();
    let cpu_before = (node_cpu(), cpu_seconds(&["self".into()]));
    if tally.problems.is_empty() {
        progress.show(&format!(
            "{title}: {watches} watches open, idle for {:.0} s",
            args.idle.as_secs_f64()
        ));
        std::thread::sleep(args.idle);
    }
    let cpu_after = (node_cpu(), cpu_seconds(&["self".into()]));
    let idle = began_idle.elapsed();
    tally.figures.idle_seconds = idle.as_secs_f64();
    tally.figures.idle_server_cpu_seconds = cpu_before.0.zip(cpu_after.0).map(|(a, b)| b - a);
    tally.figures.idle_client_cpu_seconds = cpu_before.1.zip(cpu_after.1).map(|(a, b)| b - a);
    while let Ok(answer) = answered.try_recv() {
        tally.unwoken(&answer);
    }

    // The first watch, then a sample spread over the rest, one at a time.
    let value = value_of(args.value_bytes);
    let sample: Vec<u64> = std::iter::once(0)
        .chain((1..=SAMPLE).map(|n| n * watches / (SAMPLE + 1)))
        .filter(|&w| w < watches)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let wake_began = Instant::now();
    let sample = if tally.problems.is_empty() {
        sample
    } else {
        Vec::new()
    };
    for watch in sample {
        tally.figures.woken += 1;
        let key = key_of(watch);
        let key = String::from_utf8_lossy(&key);
        let url = format!("{base}/kv/{key}?overwrite=true");
        let sent = Instant::now();
        match side_request(
            &side,
            Method::PUT,
            &url,
            Some("application/octet-stream"),
            &value,
        ) {
            Ok(reply) if (200..300).contains(&reply.status) => {}
            Ok(reply) => {
                tally
                    .problems
                    .push(format!("PUT /kv/{key}: HTTP {}", reply.status));
                break;
            }
            Err(fail) => {
                tally
                    .problems
                    .push(format!("PUT /kv/{key}: {}", fail.label()));
                break;
            }
        }
        let deadline = sent + WAKE_WITHIN;
        let woke = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match answered.recv_timeout(left) {
                Ok(answer) if answer.watch == watch => break Some(answer),
                Ok(answer) => tally.unwoken(&answer),
                Err(_) => break None,
            }
        };
        match woke {
            Some(Answer {
                result: Ok(200),
                at,
                ..
            }) => {
                tally.figures.woken_ok += 1;
                tally.stats.done += 1;
                tally.stats.reads += 1;
                tally.stats.latency.record(at - sent);
                tally.stats.read_latency.record(at - sent);
                if tally.figures.first_wake_ms.is_none() {
                    tally.figures.first_wake_ms = Some((at - sent).as_secs_f64() * 1000.0);
                }
            }
            Some(Answer { result, .. }) => {
                let what = outcome_text(&result);
                *tally
                    .stats
                    .errors
                    .entry(format!("woken watch: {what}"))
                    .or_default() += 1;
                tally
                    .problems
                    .push(format!("watch {watch} woke with {what}, not 200"));
            }
            None => {
                *tally
                    .stats
                    .errors
                    .entry("woken watch: no answer".into())
                    .or_default() += 1;
                tally.problems.push(format!(
                    "watch {watch} did not answer within {} s of the write to its key",
                    WAKE_WITHIN.as_secs()
                ));
            }
        }
    }
    let wake_elapsed = wake_began.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    while let Ok(answer) = answered.try_recv() {
        tally.unwoken(&answer);
    }
    let open = connected.load(Ordering::Relaxed);
    tally.figures.still_open =
        open.saturating_sub(tally.figures.woken + tally.figures.answered_unwoken);
    tally.figures.gauge_after_wakes = read_gauge(&side, &base);

    // Close the rest, and see the node count them gone.
    watching.shutdown();
    for handle in handles {
        let _ = handle.join();
    }
    let closed = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        tally.figures.gauge_after_close = read_gauge(&side, &base);
        if tally.figures.gauge_after_close.is_none_or(|g| g == 0) || closed.elapsed() > CLOSE_WITHIN
        {
            break;
        }
    }
    tally.figures.close_seconds = closed.elapsed().as_secs_f64();
    progress.clear();

    let per_idle_second = |cpu: Option<f64>| cpu.map(|c| c / idle.as_secs_f64().max(1e-3));
    Ok((
        PhaseResult {
            elapsed: elapsed_before_idle + idle + wake_elapsed,
            rate: None,
            client_cpu: per_idle_second(tally.figures.idle_client_cpu_seconds),
            server_cpu: per_idle_second(tally.figures.idle_server_cpu_seconds),
            aborted: (!tally.problems.is_empty()).then(|| tally.problems.join("; ")),
            stats: tally.stats,
        },
        tally.figures,
    ))
}
