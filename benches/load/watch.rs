//! The watch workload: what open watches cost a dnd node, and that they
//! still answer.
//!
//! For every record (`--records`, written by an earlier phase) it reads the
//! key's `X-Dnd-Context`, then holds one watch on it, each on its own
//! connection: `GET /kv/{key}?wait=CONTEXT&timeout=300`. With them open:
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
//! record count for both.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::support::{cpu_seconds, value_of, Conn, Fail};
use super::{key_of, thousands, Args, PhaseResult, Progress, Stats};

/// The watches' own timeout, the most the node takes.
const WATCH_SECONDS: u64 = 300;
/// How soon a woken watch must answer.
const WAKE_WITHIN: Duration = Duration::from_secs(5);
/// Watches woken after the first, to check that the others still work.
const SAMPLE: u64 = 10;
/// Connections being opened at once: few enough that the node's accept
/// queue keeps up.
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
async fn side_request(
    conn: &mut Conn,
    request: &[u8],
    timeout: Duration,
) -> Result<super::support::Response, Fail> {
    match conn.request(request, timeout).await {
        Err(Fail::Io) => conn.request(request, timeout).await,
        other => other,
    }
}

/// Reads the gauge from the node; `None` when it has no such metric.
async fn read_gauge(conn: &mut Conn, host: &str, timeout: Duration) -> Option<u64> {
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let response = side_request(conn, request.as_bytes(), timeout).await.ok()?;
    if response.status != 200 {
        return None;
    }
    gauge_of(&String::from_utf8_lossy(conn.body(&response)))
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

/// The contexts of records `0..records`, read over `concurrency`
/// connections.
async fn contexts(
    target: SocketAddr,
    records: u64,
    concurrency: usize,
    timeout: Duration,
) -> Result<Vec<String>> {
    let host = target.to_string();
    let mut tasks = Vec::new();
    for client in 0..concurrency.max(1) as u64 {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(target)
                .await
                .map_err(|e| anyhow!("cannot connect to {target}: {e}"))?;
            let mut found = Vec::new();
            for record in (client..records).step_by(concurrency.max(1)) {
                let key = key_of(record);
                let key = std::str::from_utf8(&key).expect("keys are ASCII");
                let request = format!("GET /kv/{key} HTTP/1.1\r\nHost: {host}\r\n\r\n");
                let response = conn
                    .request(request.as_bytes(), timeout)
                    .await
                    .map_err(|fail| anyhow!("GET /kv/{key}: {}", fail.label()))?;
                if ![200, 300, 404].contains(&response.status) {
                    bail!("GET /kv/{key}: HTTP {}", response.status);
                }
                let context = conn.header(&response, CONTEXT_HEADER).unwrap_or_default();
                found.push((record, context.to_string()));
            }
            Ok::<_, anyhow::Error>(found)
        }));
    }
    let mut all = vec![String::new(); records as usize];
    for task in tasks {
        for (record, context) in task.await.context("a client task panicked")?? {
            all[record as usize] = context;
        }
    }
    Ok(all)
}

/// Runs the watch workload (see the module doc). The figures come back even
/// when a check failed; `aborted` of the result then says which.
pub(super) fn run(
    args: &Args,
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the client's runtime")?;
    rt.block_on(watch(args, target, title, progress))
}

async fn watch(
    args: &Args,
    target: SocketAddr,
    title: &str,
    progress: &Progress,
) -> Result<(PhaseResult, WatchFigures)> {
    let watches = args.records;
    let host = target.to_string();
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
    let contexts = contexts(target, watches, args.concurrency, args.timeout).await?;
    let mut side = Conn::open(target)
        .await
        .with_context(|| format!("cannot connect to {target}"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    tally.figures.rss_before_bytes = rss();

    // Every watch on its own connection.
    let began = Instant::now();
    let (answers, mut answered) = mpsc::unbounded_channel::<Answer>();
    let connected = Arc::new(AtomicU64::new(0));
    let open_error: Arc<Mutex<Option<String>>> = Arc::default();
    let opening = Arc::new(tokio::sync::Semaphore::new(OPENING));
    let mut tasks = Vec::with_capacity(watches as usize);
    for (watch, context) in contexts.iter().enumerate() {
        let key = key_of(watch as u64);
        let request = format!(
            "GET /kv/{}?wait={}&timeout={WATCH_SECONDS} HTTP/1.1\r\nHost: {host}\r\n\r\n",
            std::str::from_utf8(&key).expect("keys are ASCII"),
            utf8_percent_encode(context, NON_ALPHANUMERIC)
        );
        let (answers, connected, open_error, opening) = (
            answers.clone(),
            connected.clone(),
            open_error.clone(),
            opening.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await;
            let mut conn = Conn::open(target).await;
            for _ in 1..CONNECT_TRIES {
                if conn.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                conn = Conn::open(target).await;
            }
            drop(permit);
            let mut conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    open_error
                        .lock()
                        .expect("lock")
                        .get_or_insert(format!("watch {watch}: cannot connect to {target}: {e}"));
                    return;
                }
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let result = conn
                .request(request.as_bytes(), Duration::from_secs(WATCH_SECONDS + 30))
                .await
                .map(|response| response.status);
            let _ = answers.send(Answer {
                watch: watch as u64,
                result,
                at: Instant::now(),
            });
        }));
    }
    drop(answers);
    // Until the node counts every watch (or, without the gauge, every
    // connection is open and a second has passed).
    let mut gauge = None;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(e) = open_error.lock().expect("lock").clone() {
            tally
                .problems
                .push(format!("{e} (is `ulimit -n` high enough for the node?)"));
            break;
        }
        let open = connected.load(Ordering::Relaxed);
        gauge = read_gauge(&mut side, &host, args.timeout).await;
        progress.show(&format!(
            "{title}: {open}/{watches} connected, {} counted by the node",
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
                "after {} s, {open} of {watches} watches were connected and the node counted {}",
                OPEN_WITHIN.as_secs(),
                gauge.map_or("–".into(), |g| g.to_string())
            ));
            break;
        }
    }
    tally.figures.open_seconds = began.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    tally.figures.gauge_open = read_gauge(&mut side, &host, args.timeout).await.or(gauge);
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
        tokio::time::sleep(args.idle).await;
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
        let key = std::str::from_utf8(&key).expect("keys are ASCII");
        let mut request = format!(
            "PUT /kv/{key}?overwrite=true HTTP/1.1\r\nHost: {host}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            value.len()
        )
        .into_bytes();
        request.extend_from_slice(&value);
        let sent = Instant::now();
        match side_request(&mut side, &request, args.timeout).await {
            Ok(response) if (200..300).contains(&response.status) => {}
            Ok(response) => {
                tally
                    .problems
                    .push(format!("PUT /kv/{key}: HTTP {}", response.status));
                break;
            }
            Err(fail) => {
                tally
                    .problems
                    .push(format!("PUT /kv/{key}: {}", fail.label()));
                break;
            }
        }
        let deadline = tokio::time::Instant::from_std(sent + WAKE_WITHIN);
        let woke = loop {
            match tokio::time::timeout_at(deadline, answered.recv()).await {
                Ok(Some(answer)) if answer.watch == watch => break Some(answer),
                Ok(Some(answer)) => tally.unwoken(&answer),
                Ok(None) | Err(_) => break None,
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(answer) = answered.try_recv() {
        tally.unwoken(&answer);
    }
    let open = connected.load(Ordering::Relaxed);
    tally.figures.still_open =
        open.saturating_sub(tally.figures.woken + tally.figures.answered_unwoken);
    tally.figures.gauge_after_wakes = read_gauge(&mut side, &host, args.timeout).await;

    // Close the rest, and see the node count them gone.
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    let closed = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tally.figures.gauge_after_close = read_gauge(&mut side, &host, args.timeout).await;
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
