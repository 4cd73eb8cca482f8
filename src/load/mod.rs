//! Load generation and its reports: `dnd bench`, a YCSB-style load tool for
//! HTTP key-value servers: `dnd`, the ceiling server (`examples/ceiling.rs`)
//! and etcd's v3 JSON gateway, driven with the same workloads and settings
//! so that their figures compare. It starts no server: point it at running
//! ones (`bench/compare.sh` starts them all).
//!
//! This module owns the client side of a measurement: the workloads, the
//! clients that send them, the latency histograms and the reports. It must
//! never be used by the node itself: it prints to stdout, blocks threads on
//! sockets and spends whole cores on purpose.
//!
//! ```sh
//! dnd bench --target 127.0.0.1:6000 --workload load,c,a,b
//! dnd bench --target 127.0.0.1:6000,127.0.0.1:6001,127.0.0.1:6002 \
//!     --workload a --distribution uniform --value-size 1k --duration 30 --json a.json
//! dnd bench --protocol etcd --target 127.0.0.1:2379 --workload load,c
//! dnd bench --target 127.0.0.1:6000 --workload singles,batch --batch-size 100
//! dnd bench --target 127.0.0.1:6000 --workload load,list --records 100000 --operations 100000
//! dnd bench --target 127.0.0.1:6000 --workload load,watch --records 10000 \
//!     --operations 10000 --server-pids PID
//! dnd bench summarize --results DIR --out docs/figures/compare.md
//! ```
//!
//! # Workloads
//!
//! `--workload` takes a comma-separated list, run in order (a 1 s pause
//! between phases):
//!
//! | workload | operations |
//! | --- | --- |
//! | `load` | write-only: request `i` writes record `i mod R`, so the first `R` requests insert every record once, in order |
//! | `a` | 50% reads, 50% updates (YCSB A, update heavy) |
//! | `b` | 95% reads, 5% updates (YCSB B, read mostly) |
//! | `c` | 100% reads (YCSB C, read only) |
//! | `singles` | write-only, a key never written before each request: a plain `PUT` (dnd: no `?overwrite=true`, nothing to supersede) |
//! | `batch` | the same, `--batch-size` (default 100) PUTs per `POST /kv/_batch` (dnd only); its ops/s count PUTs, each done when its own result is 2xx |
//! | `list` | one client lists every record, page by page (`--page-size`, default 1000), whole listings for `--duration`, each checked (`load/listing.rs`) |
//! | `watch` | one held watch per record, each on its own connection: the node's memory and idle CPU, then writes that must wake their watch and no other (dnd only, one target; `load/watch.rs`) |
//!
//! `singles` then `batch` in one run compare batched PUTs with single ones
//! on the same server, clients and value size; each phase writes keys of
//! its own, past the records, so neither overwrites nor meets siblings.
//! Workloads `a`, `b` and `c` pick each request's record with
//! `--distribution`: `zipfian` (the default, as in YCSB: constant θ = 0.99,
//! `--zipf-theta`) or `uniform`. The zipfian generator is YCSB's (Gray et
//! al., "Quickly generating billion-record synthetic databases"), and as in
//! YCSB's scrambled variant each drawn rank is hashed (FNV-1a) onto the
//! record space, so the popular records are spread out rather than being the
//! first ones loaded. Every client has its own generator seeded from
//! `--seed`, so a run's sequence of requests is reproducible.
//!
//! Records are `R = --records` keys `user` + 16 hex digits of the FNV-1a hash
//! of the record number (20 bytes, as YCSB's hashed insert order), each with
//! one value of `--value-size` bytes (`100`, `1k` = 1 KiB, `10k` = 10 KiB or
//! any number of bytes).
//!
//! The read workloads (and `list` and `watch`) expect every record to exist. When this run's `load`
//! phase ended (by `--duration`) before writing them all, the rest are
//! written untimed before the next phase, and a note says so; a run without a
//! `load` phase relies on an earlier one. A read that finds no value is a
//! failed request (`missing key`), unless `--missing-ok` is given: then it
//! counts as done and is reported as a miss. A `dnd` read answered `300`
//! (concurrent writes through different nodes left siblings, and the answer
//! holds them all) is a successful read: it counts as done, and the report
//! says how many there were.
//!
//! # Protocols
//!
//! | `--protocol` | write | read | done when |
//! | --- | --- | --- | --- |
//! | `dnd` (default) | `PUT /kv/{key}` | `GET /kv/{key}` | write: 2xx; read: 200 with a value of the size written, or 300 with siblings (404: missing key) |
//! | `ceiling` | `PUT /kv/{key}` | `GET /kv/{key}` | write: 2xx; read: 200 |
//! | `etcd` | `POST /v3/kv/put` `{"key","value"}` (base64) | `POST /v3/kv/range` `{"key"}` | write: 200; read: 200 with one value of the size written (no `kvs`: missing key) |
//!
//! # Load
//!
//! `--concurrency C` clients (default 32) each hold one keep-alive
//! connection to every `--target` (comma-separated or repeated) and send
//! request `i` to target `i mod n`, so load spreads evenly over the nodes of
//! a cluster. By default the loop is closed: a client sends its next request
//! when the last one answered, for `--duration` seconds (default 10) or
//! `--operations N` requests per phase. `--rate R` opens the loop instead: a
//! pacer releases request `i` at `start + i / R` (at each tick of tokio's
//! 1 ms timer) and latency counts from that due time, so a request waiting
//! for a free client behind slow answers counts its wait (no coordinated
//! omission); *from send* leaves the wait out. `--half-peak` follows each
//! closed-loop phase with the same workload open-loop at half the
//! throughput it reached. The clients run on `--threads` single-threaded
//! tokio runtimes (default 1, to leave the servers as much of a shared
//! machine as possible) with a small HTTP/1.1 client of their own
//! ([`conn`], which says why it is not `ureq`); the report gives the CPU
//! the client used, and that of `--server-pids` if given, so a client-bound
//! figure shows as such. Everything else (the start's check of each target,
//! the listing, the watches) goes through `ureq` ([`client`]); the watch
//! workload holds each watch in a thread of its own with a small stack.
//!
//! # What it reports
//!
//! Per phase: throughput of done requests, latency p50, p99, p99.9 and max
//! (from a log-linear histogram, within 0.2%), per operation as well, and the
//! failed requests by kind: `HTTP <status>`, `connect error`, `timeout`
//! (`--timeout-ms`, default 10000), `connection broken`, `unreadable
//! response`, `wrong value size`, `missing key`. A failed request is never
//! counted as done. A markdown report goes to stdout, `--json FILE` writes
//! the same as JSON, and while stderr is a terminal a progress line shows
//! the running phase (`--quiet`, the command's global `-q`, turns it and
//! the phase notes off). Flags that do not parse stop the tool with one
//! line on stderr and exit status 2. A target that cannot be reached (or
//! does not answer like the `--protocol` given) at the start stops the tool
//! with one message and exit status 1; so does a phase in which every
//! request has failed to connect for 3 s.
//!
//! # The comparison report
//!
//! `dnd bench summarize` turns the JSON reports of several runs into the
//! markdown of `bench/compare.sh`: `--results DIR` (every `*.json` in it, in
//! name order, one table row each), `--out FILE`, and optionally `--readme
//! FILE` (a short table for the README), `--memory FILE` and `--memory-run
//! FILE` (memory figures and the run that loaded them), `--redis FILE` and
//! `--redis-note TEXT` (`redis-benchmark --csv` output), `--machine TEXT`,
//! `--wall TEXT`. Ratios are to the run whose `--id` is `--ceiling`
//! (default `ceiling`) and `--reference` (default `dnd-disk`); the goal of
//! the issue on cluster writes compares `--cluster` (default `dnd-3`) with
//! `--peer-cluster` (default `etcd-3`). The runs of the `singles`, `batch`,
//! `list` and `watch` workloads get a section of their own, each figure
//! beside its baseline in the same run (`load/api_figures.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use clap::builder::TypedValueParser as _;
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use ureq::http::Method;

mod api_figures;
pub mod client;
pub mod conn;
pub mod histogram;
mod listing;
mod summary;
mod watch;

use client::{Fail, HttpClient};
use conn::{release, Conn, Released};
use histogram::Histogram;

/// Bytes of every key: `user` and 16 hex digits.
const KEY_BYTES: usize = 20;
const PAUSE: Duration = Duration::from_secs(1);
/// A phase stops when every request has failed to connect for this long.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(3);
/// Stack of each thread that blocks on one `ureq` request: it needs
/// little, and the watch workload holds ten thousand of them.
const CLIENT_STACK: usize = 256 * 1024;

// ---------------------------------------------------------------------------
// Arguments

/// `dnd bench`: a run of the load tool, or `dnd bench summarize`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Turn the JSON reports of several runs into the comparison page of
    /// bench/compare.sh.
    Summarize(SummaryArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Protocol {
    Dnd,
    Ceiling,
    Etcd,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Dnd => "dnd",
            Protocol::Ceiling => "ceiling",
            Protocol::Etcd => "etcd",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Workload {
    Load,
    A,
    B,
    C,
    Singles,
    Batch,
    List,
    Watch,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Load => "load",
            Workload::A => "A",
            Workload::B => "B",
            Workload::C => "C",
            Workload::Singles => "singles",
            Workload::Batch => "batch",
            Workload::List => "list",
            Workload::Watch => "watch",
        }
    }

    fn of_name(name: &str) -> Option<Workload> {
        Some(match name.to_ascii_lowercase().as_str() {
            "load" => Workload::Load,
            "a" => Workload::A,
            "b" => Workload::B,
            "c" => Workload::C,
            "singles" => Workload::Singles,
            "batch" => Workload::Batch,
            "list" => Workload::List,
            "watch" => Workload::Watch,
            _ => return None,
        })
    }

    fn read_fraction(self) -> f64 {
        match self {
            Workload::Load | Workload::Singles | Workload::Batch => 0.0,
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C | Workload::List | Workload::Watch => 1.0,
        }
    }

    /// Whether it needs every record written first.
    fn needs_records(self) -> bool {
        !matches!(self, Workload::Load | Workload::Singles | Workload::Batch)
    }

    fn describe(self) -> &'static str {
        match self {
            Workload::Load => "100% insert",
            Workload::A => "50% read, 50% update",
            Workload::B => "95% read, 5% update",
            Workload::C => "100% read",
            Workload::Singles => "new keys, one PUT per request",
            Workload::Batch => "new keys, PUTs in POST /kv/_batch",
            Workload::List => "every record, page by page",
            Workload::Watch => "one held watch per record",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Distribution {
    Uniform,
    Zipfian,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Role {
    Ceiling,
    Reference,
    Other,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Ceiling => "ceiling",
            Role::Reference => "reference",
            Role::Other => "other",
        }
    }
}

/// The flags of a run (see the module doc).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Servers to load, HOST:PORT (comma-separated or repeated); request i
    /// goes to target i mod n.
    #[arg(long = "target", value_name = "HOST:PORT", required = true, value_delimiter = ',',
          value_parser = parse_target)]
    pub targets: Vec<SocketAddr>,
    /// What the targets speak.
    #[arg(long, value_enum, default_value_t = Protocol::Dnd)]
    pub protocol: Protocol,
    /// Of load, a, b, c, singles, batch, list, watch, run in order.
    #[arg(long = "workload", value_name = "LIST", value_delimiter = ',', default_value = "load,a",
          value_parser = parse_workload)]
    pub workloads: Vec<Workload>,
    /// PUTs per POST /kv/_batch of the batch workload.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000).map(|v| v as usize))]
    pub batch_size: usize,
    /// Keys per page of the list workload.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000).map(|v| v as usize))]
    pub page_size: usize,
    /// Seconds the watch workload holds its watches idle.
    #[arg(long, value_name = "S", default_value = "10", value_parser = parse_seconds)]
    pub idle: Duration,
    /// Record choice of a, b and c.
    #[arg(long, value_enum, default_value_t = Distribution::Zipfian)]
    pub distribution: Distribution,
    /// Zipfian constant, between 0 and 1.
    #[arg(long = "zipf-theta", value_name = "T", default_value_t = 0.99, value_parser = parse_theta)]
    pub theta: f64,
    /// Records.
    #[arg(long, value_name = "R", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,
    /// Bytes of each value: 100, 1k, 10k or any number of bytes.
    #[arg(long = "value-size", value_name = "B", default_value = "100", value_parser = parse_size)]
    pub value_bytes: usize,
    /// Clients, each with one keep-alive connection to every target.
    #[arg(long, value_name = "C", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=100_000).map(|v| v as usize))]
    pub concurrency: usize,
    /// Client threads, each a single-threaded runtime driving its share of
    /// the clients.
    #[arg(long, value_name = "T", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024).map(|v| v as usize))]
    pub threads: usize,
    /// Seconds per phase.
    #[arg(long, value_name = "S", default_value = "10", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Requests per phase instead of a duration.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub operations: Option<u64>,
    /// Open loop at R requests/s.
    #[arg(long, value_name = "R", value_parser = parse_rate, conflicts_with = "half_peak")]
    pub rate: Option<f64>,
    /// Repeat each phase open-loop at half its throughput.
    #[arg(long)]
    pub half_peak: bool,
    /// A read of a missing key counts as done (a miss).
    #[arg(long)]
    pub missing_ok: bool,
    /// Seed of the record choice.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Per request, in milliseconds.
    #[arg(long = "timeout-ms", value_name = "MS", default_value = "10000", value_parser = parse_millis)]
    pub timeout: Duration,
    /// Also report the CPU of these processes.
    #[arg(long, value_name = "P,P", value_delimiter = ',')]
    pub server_pids: Vec<String>,
    /// How the run is named in reports.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// The run's id in the comparison report.
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,
    /// The run's part in the comparison report.
    #[arg(long, value_enum, default_value_t = Role::Other)]
    pub role: Role,
    /// What the run's system promises of an acknowledged write.
    #[arg(long, value_name = "TEXT")]
    pub durability: Option<String>,
    /// Also write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// No progress on stderr: set from the command's global `-q/--quiet`,
    /// which already owns the flag's name.
    #[arg(skip)]
    pub quiet: bool,
}

/// The flags of `dnd bench summarize` (see the module doc).
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Directory of the runs' JSON reports (every *.json, in name order).
    #[arg(long, value_name = "DIR")]
    pub results: PathBuf,
    /// Where the comparison page goes.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Also write the README's short table here.
    #[arg(long, value_name = "FILE")]
    pub readme: Option<PathBuf>,
    /// Memory figures (JSON) of bench/compare.sh.
    #[arg(long, value_name = "FILE")]
    pub memory: Option<PathBuf>,
    /// The report of the run that loaded the memory figures' keys.
    #[arg(long, value_name = "FILE")]
    pub memory_run: Option<PathBuf>,
    /// `redis-benchmark --csv` output.
    #[arg(long, value_name = "FILE")]
    pub redis: Option<PathBuf>,
    /// What the Redis figures are.
    #[arg(long, value_name = "TEXT")]
    pub redis_note: Option<String>,
    /// The machine, as the page names it.
    #[arg(long, value_name = "TEXT")]
    pub machine: Option<String>,
    /// How long the whole comparison took.
    #[arg(long, value_name = "TEXT")]
    pub wall: Option<String>,
    /// Id of the run the ratios × ceiling are to.
    #[arg(long, value_name = "ID", default_value = "ceiling")]
    pub ceiling: String,
    /// Id of the run the ratios × dnd are to.
    #[arg(long, value_name = "ID", default_value = "dnd-disk")]
    pub reference: String,
    /// Id of the dnd cluster run of the cluster-writes goal.
    #[arg(long, value_name = "ID", default_value = "dnd-3")]
    pub cluster: String,
    /// Id of the etcd cluster run it is compared with.
    #[arg(long, value_name = "ID", default_value = "etcd-3")]
    pub peer_cluster: String,
    /// Id of the run of the same cluster with the cluster secret on.
    #[arg(long, value_name = "ID", default_value = "dnd-3-secret")]
    pub secret_cluster: String,
}

fn parse_target(text: &str) -> std::result::Result<SocketAddr, String> {
    let bare = text
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    bare.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("`{text}` is not HOST:PORT"))
}

fn parse_workload(text: &str) -> std::result::Result<Workload, String> {
    Workload::of_name(text.trim()).ok_or_else(|| {
        format!(
            "`{}` is not load, a, b, c, singles, batch, list or watch",
            text.trim()
        )
    })
}

fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.trim_end_matches('b').trim_end_matches('i') {
        t if t.ends_with('k') => (&t[..t.len() - 1], 1024),
        t if t.ends_with('m') => (&t[..t.len() - 1], 1024 * 1024),
        t => (t, 1),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (100, 1k, 10k or bytes)"))?;
    match n.checked_mul(unit) {
        Some(0) => Err("a value must be at least 1 byte".into()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("`{text}` is too large")),
    }
}

fn parse_positive(text: &str, what: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x > 0.0 && x < 1e6 => Ok(x),
        _ => Err(format!("`{text}` is not a positive number of {what}")),
    }
}

fn parse_seconds(text: &str) -> std::result::Result<Duration, String> {
    parse_positive(text, "seconds").map(Duration::from_secs_f64)
}

fn parse_millis(text: &str) -> std::result::Result<Duration, String> {
    text.parse::<u64>()
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is not a positive number of milliseconds"))
}

fn parse_rate(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a positive number of requests per second"
        )),
    }
}

fn parse_theta(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(theta) if theta > 0.0 && theta < 1.0 => Ok(theta),
        _ => Err(format!("`{text}` is not between 0 and 1")),
    }
}

impl RunArgs {
    /// What the flags' own parsers cannot check: which workloads a
    /// protocol has, and the watch workload's single target.
    fn check(&self) -> std::result::Result<(), String> {
        for (workload, protocols) in [
            (Workload::Batch, &[Protocol::Dnd][..]),
            (Workload::Watch, &[Protocol::Dnd][..]),
            (Workload::List, &[Protocol::Dnd, Protocol::Etcd][..]),
        ] {
            if self.workloads.contains(&workload) && !protocols.contains(&self.protocol) {
                return Err(format!(
                    "--workload {}: not for --protocol {}",
                    workload.name(),
                    self.protocol.name()
                ));
            }
        }
        if self.workloads.contains(&Workload::Watch) && self.targets.len() != 1 {
            return Err("--workload watch: give exactly one --target".into());
        }
        Ok(())
    }
}

/// Runs `dnd bench`: the report on stdout (and `--json`), or the
/// comparison page of `summarize`. Exit status 2 for flags that do not go
/// together, 1 for a run or a summary that failed.
pub fn run(args: BenchArgs) -> ExitCode {
    match args.command {
        Some(BenchCommand::Summarize(summary)) => match summary::summarize(&summary) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dnd bench summarize: {e:#}");
                ExitCode::FAILURE
            }
        },
        None => {
            let args = args.run;
            if let Err(message) = args.check() {
                eprintln!("dnd bench: {message}");
                return ExitCode::from(2);
            }
            match run_all(&args) {
                Ok(report) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text_report(&report).as_bytes());
                    let _ = out.flush();
                    if let Some(path) = &args.json {
                        let json = match serde_json::to_string_pretty(&report) {
                            Ok(json) => json,
                            Err(e) => {
                                eprintln!("dnd bench: the report is not JSON: {e}");
                                return ExitCode::FAILURE;
                            }
                        };
                        if let Err(e) = std::fs::write(path, json + "\n") {
                            eprintln!("dnd bench: cannot write {}: {e}", path.display());
                            return ExitCode::FAILURE;
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("dnd bench: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// User and system CPU time of the processes `pids` (`self` for this one)
/// so far, in seconds, from `/proc` (Linux; clock ticks of 10 ms).
pub fn cpu_seconds(pids: &[String]) -> Option<f64> {
    let mut ticks = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name: state is the first, utime the 12th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(ticks as f64 / 100.0)
}

/// A value of `bytes` printable bytes; not one repeated byte, in case the
/// engine compresses.
pub fn value_of(bytes: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Records and their choice

/// FNV-1a, 64 bits, of the eight little-endian bytes of `n`.
fn fnv1a(n: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in n.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The key of record `n`: `user` and 16 hex digits.
fn key_of(n: u64) -> [u8; KEY_BYTES] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = *b"user0000000000000000";
    let hash = fnv1a(n);
    for (i, slot) in key[4..].iter_mut().enumerate() {
        *slot = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
    }
    key
}

/// SplitMix64: small, fast, and good enough to pick records.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        rng.next_u64();
        rng
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Zipfian ranks in `0..items`, rank 0 the most popular: YCSB's generator
/// after Gray et al., with the constants computed once for the item count.
struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    fn new(items: u64, theta: f64) -> Zipfian {
        let zetan = zeta(items, theta);
        let zeta2 = zeta(2, theta);
        Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
        }
    }

    fn rank(&self, u: f64) -> u64 {
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }
}

enum Chooser {
    Uniform(u64),
    /// Zipfian ranks, scrambled onto the records by hashing.
    Zipfian(Zipfian),
}

impl Chooser {
    fn record(&self, rng: &mut Rng) -> u64 {
        match self {
            Chooser::Uniform(records) => rng.next_u64() % records,
            Chooser::Zipfian(z) => fnv1a(z.rank(rng.next_f64())) % z.items,
        }
    }
}

// ---------------------------------------------------------------------------
// Requests per protocol

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Read,
    /// A write; `insert` in the load phase, `update` in the others.
    Write,
    /// A write of a key never written before: for dnd a plain PUT, with
    /// nothing to supersede (no `?overwrite=true`, which reads first), as a
    /// batch's PUT.
    Insert,
    /// `POST /kv/_batch` with PUTs of `batch_size` records from this one on.
    Batch,
}

enum Outcome {
    Done,
    /// A read of a missing key, with `--missing-ok`.
    Miss,
    /// A `dnd` read answered `300 Multiple Choices`: concurrent writes left
    /// siblings, and the answer holds every one of them.
    Siblings,
    /// A batch answered 200: how many of its PUTs were done, and the status
    /// of each one that was not.
    Batch {
        done: u64,
        failed: Vec<u16>,
    },
}

/// The part of a `POST /kv/_batch` answer the load tool reads.
#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<BatchResult>,
}

#[derive(Deserialize)]
struct BatchResult {
    status: u16,
}

/// What every request needs, built once per run.
struct Requests {
    protocol: Protocol,
    value: Vec<u8>,
    /// The value as base64, for etcd.
    value_b64: String,
    /// `http://HOST:PORT` of each target.
    bases: Vec<String>,
    missing_ok: bool,
    batch_size: usize,
}

/// One request, as [`Requests::build`] describes it.
struct Call<'a> {
    method: Method,
    url: String,
    content_type: Option<&'static str>,
    body: &'a [u8],
}

impl Requests {
    fn new(args: &RunArgs) -> Requests {
        let value = value_of(args.value_bytes);
        Requests {
            protocol: args.protocol,
            value_b64: base64::engine::general_purpose::STANDARD.encode(&value),
            value,
            bases: args.targets.iter().map(|t| format!("http://{t}")).collect(),
            missing_ok: args.missing_ok,
            batch_size: args.batch_size,
        }
    }

    /// The request for `op` on `record` to `target`; a body other than the
    /// value is written into `buf`.
    fn build<'a>(&'a self, buf: &'a mut Vec<u8>, op: Op, record: u64, target: usize) -> Call<'a> {
        buf.clear();
        let base = &self.bases[target];
        let key = key_of(record);
        // Keys are `user` and hex digits (`key_of`).
        let key_text = String::from_utf8_lossy(&key);
        match (self.protocol, op) {
            // The values are lowercase letters (`value_of`): no JSON escapes.
            (_, Op::Batch) => {
                buf.extend_from_slice(br#"{"ops":["#);
                for n in 0..self.batch_size as u64 {
                    if n > 0 {
                        buf.push(b',');
                    }
                    buf.extend_from_slice(br#"{"op":"put","key":""#);
                    buf.extend_from_slice(&key_of(record + n));
                    buf.extend_from_slice(br#"","value":""#);
                    buf.extend_from_slice(&self.value);
                    buf.extend_from_slice(br#""}"#);
                }
                buf.extend_from_slice(b"]}");
                Call {
                    method: Method::POST,
                    url: format!("{base}/kv/_batch"),
                    content_type: Some("application/json"),
                    body: buf,
                }
            }
            // dnd replaces what is there, as etcd's and Redis's writes do:
            // a plain PUT would keep every write to a key as a sibling.
            (Protocol::Dnd | Protocol::Ceiling, Op::Write | Op::Insert) => {
                let query = if self.protocol == Protocol::Dnd && op == Op::Write {
                    "?overwrite=true"
                } else {
                    ""
                };
                Call {
                    method: Method::PUT,
                    url: format!("{base}/kv/{key_text}{query}"),
                    content_type: Some("application/octet-stream"),
                    body: &self.value,
                }
            }
            (Protocol::Dnd | Protocol::Ceiling, Op::Read) => Call {
                method: Method::GET,
                url: format!("{base}/kv/{key_text}"),
                content_type: None,
                body: &[],
            },
            (Protocol::Etcd, op) => {
                let key_b64 = base64::engine::general_purpose::STANDARD.encode(key);
                let path = match op {
                    Op::Write | Op::Insert | Op::Batch => "put",
                    Op::Read => "range",
                };
                let _ = write!(buf, "{{\"key\":\"{key_b64}\"");
                if op != Op::Read {
                    let _ = write!(buf, ",\"value\":\"{}\"", self.value_b64);
                }
                buf.push(b'}');
                Call {
                    method: Method::POST,
                    url: format!("{base}/v3/kv/{path}"),
                    content_type: Some("application/json"),
                    body: buf,
                }
            }
        }
    }

    /// Whether a response means the request was done.
    fn check(&self, op: Op, status: u16, body: &[u8]) -> Result<Outcome, Fail> {
        let missing = || {
            if self.missing_ok {
                Ok(Outcome::Miss)
            } else {
                Err(Fail::Missing)
            }
        };
        match (self.protocol, op) {
            (_, Op::Batch) if status == 200 => {
                let answer: BatchAnswer =
                    serde_json::from_slice(body).map_err(|_| Fail::Protocol)?;
                if answer.results.len() != self.batch_size {
                    return Err(Fail::Protocol);
                }
                let failed: Vec<u16> = answer
                    .results
                    .iter()
                    .map(|r| r.status)
                    .filter(|s| !(200..300).contains(s))
                    .collect();
                Ok(Outcome::Batch {
                    done: (self.batch_size - failed.len()) as u64,
                    failed,
                })
            }
            (Protocol::Dnd | Protocol::Ceiling, Op::Write | Op::Insert)
                if (200..300).contains(&status) =>
            {
                Ok(Outcome::Done)
            }
            (Protocol::Ceiling, Op::Read) if status == 200 => Ok(Outcome::Done),
            (Protocol::Dnd, Op::Read) => match status {
                200 if body.len() == self.value.len() => Ok(Outcome::Done),
                200 => Err(Fail::WrongValue),
                300 => Ok(Outcome::Siblings),
                404 => missing(),
                _ => Err(Fail::Status(status)),
            },
            (Protocol::Etcd, Op::Write | Op::Insert) if status == 200 => Ok(Outcome::Done),
            (Protocol::Etcd, Op::Read) if status == 200 => {
                if find(body, b"\"kvs\":[").is_none() {
                    return missing();
                }
                let Some(at) = find(body, b"\"value\":\"") else {
                    return Err(Fail::WrongValue);
                };
                let rest = &body[at + 9..];
                match rest.iter().position(|&b| b == b'"') {
                    Some(len) if len == self.value_b64.len() => Ok(Outcome::Done),
                    _ => Err(Fail::WrongValue),
                }
            }
            _ => Err(Fail::Status(status)),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Checks that `target` answers like a server of `protocol`, so that a
/// wrong address or protocol stops the run with one clear message.
fn preflight(protocol: Protocol, target: SocketAddr, timeout: Duration) -> Result<()> {
    let client = HttpClient::new(timeout, 1);
    let (method, path, body, what) = match protocol {
        Protocol::Dnd => (Method::GET, "/health", "", "GET /health"),
        Protocol::Ceiling => (Method::GET, "/kv/preflight", "", "GET /kv/preflight"),
        Protocol::Etcd => (
            Method::POST,
            "/v3/kv/range",
            r#"{"key":"cHJlZmxpZ2h0"}"#,
            "POST /v3/kv/range",
        ),
    };
    let content_type = (!body.is_empty()).then_some("application/json");
    let url = format!("http://{target}{path}");
    let reply = client
        .call(method, &url, content_type, body.as_bytes())
        .map_err(|fail| match fail {
            Fail::Connect => anyhow!(
                "cannot reach the {} target {target} (connect error); is it running?",
                protocol.name()
            ),
            fail => anyhow!(
                "the {} target {target} did not answer {what}: {}",
                protocol.name(),
                fail.label()
            ),
        })?;
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    let expected = match protocol {
        Protocol::Dnd => "node_id",
        Protocol::Ceiling => "",
        Protocol::Etcd => "header",
    };
    if reply.status != 200 || !body.contains(expected) {
        let shown: String = body.chars().take(120).collect();
        let shown = if shown.is_empty() {
            "an empty body".to_string()
        } else {
            format!("`{shown}`")
        };
        bail!(
            "{target} does not speak the {} protocol: {what} gave HTTP {} with {shown}; check --protocol",
            protocol.name(),
            reply.status
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Running a phase

/// Which record request `i` uses.
enum Records {
    /// `i mod R`, as the load phase writes.
    Sequence(u64),
    /// The `i`-th of a list; the phase ends at its end.
    List(Vec<u64>),
    /// Chosen at random; reads with probability `read_fraction`.
    Random {
        chooser: Arc<Chooser>,
        read_fraction: f64,
    },
    /// `base + i`: a new key every request, never written before.
    Fresh { base: u64 },
    /// Batches of new keys: `base + i * size` and the `size - 1` after it.
    FreshBatches { base: u64, size: u64 },
}

/// What one phase sends, shared by its clients.
struct Plan {
    requests: Arc<Requests>,
    targets: Vec<SocketAddr>,
    records: Records,
    timeout: Duration,
    /// Requests to send at most.
    limit: Option<u64>,
    /// Which records some write wrote.
    written: Arc<Vec<AtomicBool>>,
    next: AtomicU64,
    stop: AtomicBool,
    /// For the progress line and the unreachable check.
    done: AtomicU64,
    failed: AtomicU64,
    connect_failed: AtomicU64,
}

impl Plan {
    /// The operation and record of request `i`, or `None` past the end.
    fn choose(&self, i: u64, rng: &mut Rng) -> Option<(Op, u64)> {
        if self.limit.is_some_and(|limit| i >= limit) {
            return None;
        }
        match &self.records {
            Records::Sequence(records) => Some((Op::Write, i % records)),
            Records::List(list) => list.get(i as usize).map(|&r| (Op::Write, r)),
            Records::Fresh { base } => Some((Op::Insert, base + i)),
            Records::FreshBatches { base, size } => Some((Op::Batch, base + i * size)),
            Records::Random {
                chooser,
                read_fraction,
            } => {
                let op = if rng.next_f64() < *read_fraction {
                    Op::Read
                } else {
                    Op::Write
                };
                Some((op, chooser.record(rng)))
            }
        }
    }
}

#[derive(Default)]
struct Stats {
    done: u64,
    reads: u64,
    writes: u64,
    misses: u64,
    siblings: u64,
    /// Keys listed (the list workload).
    keys: u64,
    /// Whole listings of every record (the list workload).
    passes: u64,
    /// From the request's scheduled start (open loop) or send (closed loop)
    /// until its answer, for done requests.
    latency: Histogram,
    read_latency: Histogram,
    write_latency: Histogram,
    /// From the request being sent until its answer (open loop).
    from_send: Histogram,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.done += other.done;
        self.reads += other.reads;
        self.writes += other.writes;
        self.misses += other.misses;
        self.siblings += other.siblings;
        self.keys += other.keys;
        self.passes += other.passes;
        self.latency.merge(&other.latency);
        self.read_latency.merge(&other.read_latency);
        self.write_latency.merge(&other.write_latency);
        self.from_send.merge(&other.from_send);
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
    }

    fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One client: a keep-alive connection to every target.
struct Client {
    conns: Vec<Conn>,
    /// The whole request being sent.
    request: Vec<u8>,
    /// Its body, when it is not the value.
    body: Vec<u8>,
    rng: Rng,
}

/// Sends request `i` and records its outcome; latency counts from
/// `scheduled` in an open loop, from the send in a closed one (`None`).
async fn send(
    plan: &Plan,
    client: &mut Client,
    stats: &mut Stats,
    i: u64,
    op: Op,
    record: u64,
    scheduled: Option<Instant>,
) -> Option<Fail> {
    let target = (i % plan.targets.len() as u64) as usize;
    let call = plan.requests.build(&mut client.body, op, record, target);
    let path = &call.url[plan.requests.bases[target].len()..];
    let host = &plan.requests.bases[target]["http://".len()..];
    conn::request_bytes(
        &mut client.request,
        &call.method,
        host,
        path,
        call.content_type,
        call.body,
    );
    let sent = Instant::now();
    let conn = &mut client.conns[target];
    let result = match conn.request(&client.request, plan.timeout).await {
        Ok(response) => plan
            .requests
            .check(op, response.status, conn.body(&response)),
        Err(fail) => Err(fail),
    };
    let answered = Instant::now();
    match result {
        Ok(outcome) => {
            stats.done += 1;
            plan.done.fetch_add(1, Ordering::Relaxed);
            let latency = answered - scheduled.unwrap_or(sent);
            stats.latency.record(latency);
            if scheduled.is_some() {
                stats.from_send.record(answered - sent);
            }
            match op {
                Op::Read => {
                    stats.reads += 1;
                    stats.read_latency.record(latency);
                    match outcome {
                        Outcome::Miss => stats.misses += 1,
                        Outcome::Siblings => stats.siblings += 1,
                        Outcome::Done | Outcome::Batch { .. } => {}
                    }
                }
                Op::Write | Op::Insert => {
                    stats.writes += 1;
                    stats.write_latency.record(latency);
                    // New keys (`Records::Fresh`) lie past the records.
                    if let Some(written) = plan.written.get(record as usize) {
                        written.store(true, Ordering::Relaxed);
                    }
                }
                Op::Batch => {
                    stats.write_latency.record(latency);
                    if let Outcome::Batch { done, failed } = outcome {
                        stats.writes += done;
                        for status in failed {
                            *stats
                                .errors
                                .entry(format!("batch put: {}", Fail::Status(status).label()))
                                .or_default() += 1;
                            plan.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            None
        }
        Err(fail) => {
            let kind = match (op, &plan.records) {
                (Op::Read, _) => "read",
                (Op::Batch, _) => "batch",
                (Op::Write, Records::Random { .. }) => "update",
                (Op::Insert, _) => "insert of a new key",
                (Op::Write, _) => "insert",
            };
            *stats
                .errors
                .entry(format!("{kind}: {}", fail.label()))
                .or_default() += 1;
            plan.failed.fetch_add(1, Ordering::Relaxed);
            if fail == Fail::Connect {
                plan.connect_failed.fetch_add(1, Ordering::Relaxed);
            }
            Some(fail)
        }
    }
}

/// Closed loop: the next request as soon as the last one answered.
async fn closed_worker(plan: Arc<Plan>, mut client: Client, end: Instant) -> Stats {
    let mut stats = Stats::default();
    while Instant::now() < end && !plan.stop.load(Ordering::Relaxed) {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        let Some((op, record)) = plan.choose(i, &mut client.rng) else {
            break;
        };
        let fail = send(&plan, &mut client, &mut stats, i, op, record, None).await;
        if fail == Some(Fail::Connect) {
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
        if plan.stop.load(Ordering::Relaxed) {
            continue;
        }
        if let Some((op, record)) = plan.choose(i, &mut client.rng) {
            send(
                &plan,
                &mut client,
                &mut stats,
                i,
                op,
                record,
                Some(scheduled),
            )
            .await;
        }
    }
    stats
}

struct PhaseResult {
    elapsed: Duration,
    rate: Option<f64>,
    stats: Stats,
    client_cpu: Option<f64>,
    server_cpu: Option<f64>,
    /// Why the phase stopped early, if it did.
    aborted: Option<String>,
}

impl PhaseResult {
    fn throughput(&self) -> f64 {
        self.stats.done as f64 / self.elapsed.as_secs_f64()
    }
}

/// `[=====>    ]  50%`.
fn bar(fraction: f64) -> String {
    const WIDTH: usize = 20;
    let fraction = fraction.clamp(0.0, 1.0);
    let filled = (fraction * WIDTH as f64) as usize;
    let mut bar = String::from("[");
    for i in 0..WIDTH {
        bar.push(match i.cmp(&filled) {
            std::cmp::Ordering::Less => '=',
            std::cmp::Ordering::Equal => '>',
            std::cmp::Ordering::Greater => ' ',
        });
    }
    format!("{bar}] {:3.0}%", fraction * 100.0)
}

/// The progress line on stderr, redrawn in place.
struct Progress {
    enabled: bool,
}

impl Progress {
    fn show(&self, text: &str) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{text}\x1b[K");
            let _ = err.flush();
        }
    }

    fn clear(&self) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

/// Runs one phase: `concurrency` clients over `threads` single-threaded
/// runtimes, closed loop for `length` or open loop at `rate`.
#[allow(clippy::too_many_arguments)]
fn run_phase(
    plan: Plan,
    title: &str,
    concurrency: usize,
    threads: usize,
    rate: Option<f64>,
    length: Duration,
    seed: u64,
    server_pids: &[String],
    progress: &Progress,
) -> Result<PhaseResult> {
    let plan = Arc::new(plan);
    let threads = threads.min(concurrency).max(1);
    let opened = Arc::new(Barrier::new(threads + 1));
    let go = Arc::new(Barrier::new(threads + 1));
    let start_at: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let open_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let released = Arc::new(Released::default());
    let mut handles = Vec::new();
    for thread in 0..threads {
        let plan = plan.clone();
        let (opened, go, start_at, open_error, released) = (
            opened.clone(),
            go.clone(),
            start_at.clone(),
            open_error.clone(),
            released.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("load-{thread}"))
            .spawn(move || -> Result<Stats> {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        open_error
                            .lock()
                            .expect("lock")
                            .get_or_insert(format!("cannot build a client runtime: {e}"));
                        opened.wait();
                        go.wait();
                        return Ok(Stats::default());
                    }
                };
                rt.block_on(async move {
                    // Clients `thread`, `thread + threads`, ...
                    let mine: Vec<usize> = (thread..concurrency).step_by(threads).collect();
                    let mut clients = Vec::with_capacity(mine.len());
                    'open: for &c in &mine {
                        let mut conns = Vec::with_capacity(plan.targets.len());
                        for &addr in &plan.targets {
                            match Conn::open(addr).await {
                                Ok(conn) => conns.push(conn),
                                Err(e) => {
                                    open_error
                                        .lock()
                                        .expect("lock")
                                        .get_or_insert(format!("cannot connect to {addr}: {e}"));
                                    break 'open;
                                }
                            }
                        }
                        clients.push(Client {
                            conns,
                            request: Vec::with_capacity(1024),
                            body: Vec::with_capacity(1024),
                            rng: Rng::new(seed, c as u64),
                        });
                    }
                    opened.wait();
                    go.wait();
                    let mut stats = Stats::default();
                    if open_error.lock().expect("lock").is_some() {
                        return Ok(stats);
                    }
                    let start = *start_at.get().expect("set before go");
                    let end = start + length;
                    let tasks: Vec<_> = clients
                        .into_iter()
                        .map(|client| match rate {
                            None => tokio::spawn(closed_worker(plan.clone(), client, end)),
                            Some(_) => {
                                tokio::spawn(open_worker(plan.clone(), client, released.clone()))
                            }
                        })
                        .collect();
                    if let (Some(rate), 0) = (rate, thread) {
                        let stop = |i: u64| {
                            plan.stop.load(Ordering::Relaxed)
                                || plan.limit.is_some_and(|limit| i >= limit)
                        };
                        release(&released, rate, start, end, &stop).await;
                        for _ in 0..concurrency {
                            released.push(None);
                        }
                    }
                    for task in tasks {
                        stats.merge(task.await.context("a client task panicked")?);
                    }
                    Ok(stats)
                })
            })
            .context("starting a client thread")?;
        handles.push(handle);
    }
    opened.wait();
    let cpu_before = (
        cpu_seconds(&["self".into()]),
        cpu_seconds(server_pids).filter(|_| !server_pids.is_empty()),
    );
    let start = Instant::now();
    start_at.set(start).expect("set once");
    go.wait();
    if let Some(e) = open_error.lock().expect("lock").clone() {
        for handle in handles {
            let _ = handle.join();
        }
        bail!("{e}");
    }

    // Watch: progress, and stop when the targets became unreachable.
    let mut aborted = None;
    let mut last = (start, 0u64, 0u64, 0u64);
    let mut stuck_since: Option<Instant> = None;
    let mut last_draw = start;
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        let done = plan.done.load(Ordering::Relaxed);
        let failed = plan.failed.load(Ordering::Relaxed);
        let connect = plan.connect_failed.load(Ordering::Relaxed);
        if done == last.1 && connect > last.3 && failed - last.2 == connect - last.3 {
            let since = *stuck_since.get_or_insert(last.0);
            if now - since >= UNREACHABLE_AFTER && aborted.is_none() {
                aborted = Some(format!(
                    "every request failed to connect for {} s: the target is unreachable",
                    UNREACHABLE_AFTER.as_secs()
                ));
                plan.stop.store(true, Ordering::Relaxed);
            }
        } else if done > last.1 {
            stuck_since = None;
        }
        last = (now, done, failed, connect);
        if now - last_draw >= Duration::from_millis(250) {
            last_draw = now;
            let secs = (now - start).as_secs_f64();
            let (fraction, so_far) = match (plan.limit, &plan.records) {
                (Some(limit), _) => (done as f64 / limit as f64, format!("{done}/{limit}")),
                (None, Records::List(list)) => (
                    done as f64 / list.len().max(1) as f64,
                    format!("{done}/{}", list.len()),
                ),
                (None, _) => (
                    secs / length.as_secs_f64(),
                    format!("{secs:.0}/{:.0} s", length.as_secs_f64()),
                ),
            };
            progress.show(&format!(
                "{title} {} {so_far} · {} ops/s · {failed} failed",
                bar(fraction),
                thousands(done as f64 / secs.max(1e-3))
            ));
        }
    }
    progress.clear();
    let mut stats = Stats::default();
    for handle in handles {
        let result = handle
            .join()
            .map_err(|_| anyhow!("a client thread panicked"))?;
        stats.merge(result?);
    }
    let elapsed = start.elapsed();
    let cpu_after = (
        cpu_seconds(&["self".into()]),
        cpu_seconds(server_pids).filter(|_| !server_pids.is_empty()),
    );
    let secs = elapsed.as_secs_f64();
    Ok(PhaseResult {
        elapsed,
        rate,
        stats,
        client_cpu: cpu_before.0.zip(cpu_after.0).map(|(a, b)| (b - a) / secs),
        server_cpu: cpu_before.1.zip(cpu_after.1).map(|(a, b)| (b - a) / secs),
        aborted,
    })
}

// ---------------------------------------------------------------------------
// Reports

/// Latency figures in microseconds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

impl Latency {
    fn of(h: &Histogram) -> Option<Latency> {
        let us = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_nanos() as f64 / 1000.0);
        (h.count() > 0).then(|| Latency {
            p50: us(h.percentile(0.50)),
            p99: us(h.percentile(0.99)),
            p999: us(h.percentile(0.999)),
            max: us(h.max()),
            mean: us(h.mean()),
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct PhaseReport {
    /// `load`, `A`, `B` or `C`.
    workload: String,
    /// Open loop at half the throughput of the closed-loop phase before.
    half_peak: bool,
    /// Untimed writes of the records the load phase did not reach.
    fill: bool,
    read_percent: f64,
    /// Target requests per second of an open loop.
    rate: Option<f64>,
    seconds: f64,
    done: u64,
    reads: u64,
    writes: u64,
    misses: u64,
    /// Reads answered with siblings (`dnd`'s 300), counted as done.
    #[serde(default)]
    siblings: u64,
    failed: u64,
    /// Done requests per second; for the batch workload, done PUTs.
    ops_per_sec: f64,
    /// PUTs per request of the batch workload.
    #[serde(default)]
    batch_size: Option<usize>,
    /// Done requests per second of the batch workload.
    #[serde(default)]
    requests_per_sec: Option<f64>,
    /// Keys listed, in how many whole listings of every record (the list
    /// workload; `done` counts its pages).
    #[serde(default)]
    keys: Option<u64>,
    #[serde(default)]
    keys_per_sec: Option<f64>,
    #[serde(default)]
    passes: Option<u64>,
    /// Keys asked for per page (the list workload).
    #[serde(default)]
    page_size: Option<usize>,
    latency_us: Option<Latency>,
    read_latency_us: Option<Latency>,
    write_latency_us: Option<Latency>,
    from_send_us: Option<Latency>,
    errors: BTreeMap<String, u64>,
    client_cpu: Option<f64>,
    server_cpu: Option<f64>,
    aborted: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct RunReport {
    id: String,
    label: String,
    role: String,
    durability: Option<String>,
    protocol: String,
    targets: Vec<String>,
    distribution: String,
    zipf_theta: Option<f64>,
    records: u64,
    key_bytes: usize,
    value_bytes: usize,
    concurrency: usize,
    threads: usize,
    seconds_per_phase: Option<f64>,
    operations_per_phase: Option<u64>,
    seed: u64,
    timeout_ms: u64,
    /// Seconds since the Unix epoch at the start.
    started: u64,
    phases: Vec<PhaseReport>,
    /// What the watch workload measured.
    #[serde(default)]
    watch: Option<watch::WatchFigures>,
    notes: Vec<String>,
}

fn phase_report(
    workload: Workload,
    half_peak: bool,
    fill: bool,
    result: &PhaseResult,
    args: &RunArgs,
) -> PhaseReport {
    let s = &result.stats;
    let secs = result.elapsed.as_secs_f64();
    let batch = workload == Workload::Batch && !fill;
    let list = workload == Workload::List;
    PhaseReport {
        workload: workload.name().into(),
        half_peak,
        fill,
        read_percent: workload.read_fraction() * 100.0,
        rate: result.rate,
        seconds: result.elapsed.as_secs_f64(),
        done: s.done,
        reads: s.reads,
        writes: s.writes,
        misses: s.misses,
        siblings: s.siblings,
        failed: s.failed(),
        ops_per_sec: if batch {
            s.writes as f64 / secs
        } else {
            result.throughput()
        },
        batch_size: batch.then_some(args.batch_size),
        page_size: list.then_some(args.page_size),
        requests_per_sec: batch.then(|| result.throughput()),
        keys: list.then_some(s.keys),
        keys_per_sec: list.then(|| s.keys as f64 / secs),
        passes: list.then_some(s.passes),
        latency_us: Latency::of(&s.latency),
        read_latency_us: Latency::of(&s.read_latency),
        write_latency_us: Latency::of(&s.write_latency),
        from_send_us: Latency::of(&s.from_send),
        errors: s.errors.clone(),
        client_cpu: result.client_cpu,
        server_cpu: result.server_cpu,
        aborted: result.aborted.clone(),
    }
}

fn ms(us: Option<f64>) -> String {
    match us {
        Some(us) if us.is_finite() => {
            if us < 10_000.0 {
                format!("{:.2} ms", us / 1000.0)
            } else {
                format!("{:.0} ms", us / 1000.0)
            }
        }
        _ => "–".into(),
    }
}

/// `12345.6` as `12,346`.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let n = x.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(kind, count)| format!("{kind}: {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cores(cpu: Option<f64>) -> String {
    cpu.map_or("–".into(), |c| format!("{c:.2}"))
}

fn phase_title(p: &PhaseReport) -> String {
    let workload = &p.workload;
    let what = Workload::of_name(&p.workload).map_or("", Workload::describe);
    if p.fill {
        return "load, untimed rest".into();
    }
    if let Some(size) = p.batch_size {
        return format!("{workload} (new keys, {size} PUTs per POST /kv/_batch; ops are PUTs)");
    }
    if p.keys.is_some() {
        return format!("{workload} ({what}; ops are pages)");
    }
    match p.rate {
        Some(rate) if p.half_peak => {
            format!("{workload} ({what}), open loop at half peak, {rate:.0}/s")
        }
        Some(rate) => format!("{workload} ({what}), open loop at {rate:.0}/s"),
        None => format!("{workload} ({what})"),
    }
}

fn text_report(run: &RunReport) -> String {
    let mut out = format!("# load: {}\n\n", run.label);
    let per_phase = match (run.operations_per_phase, run.seconds_per_phase) {
        (Some(n), _) => format!("{n} requests per phase"),
        (None, Some(s)) => format!("{s} s per phase"),
        _ => String::new(),
    };
    let distribution = match run.zipf_theta {
        Some(theta) => format!("{} (θ {theta})", run.distribution),
        None => run.distribution.clone(),
    };
    let _ = writeln!(
        out,
        "{} protocol · {} target(s): {} · {distribution} over {} records · {} B keys, {} B values · \
{} clients · {} client thread(s) · {per_phase} · request timeout {} ms · seed {}\n",
        run.protocol,
        run.targets.len(),
        run.targets.join(", "),
        run.records,
        run.key_bytes,
        run.value_bytes,
        run.concurrency,
        run.threads,
        run.timeout_ms,
        run.seed,
    );
    if let Some(d) = &run.durability {
        let _ = writeln!(out, "Durability: {d}\n");
    }
    out.push_str(
        "| phase | ops/s | p50 | p99 | p99.9 | max | done | failed | client CPU | server CPU |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for p in &run.phases {
        let lat = |l: &Option<Latency>, f: fn(&Latency) -> f64| ms(l.as_ref().map(f));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            phase_title(p),
            thousands(p.ops_per_sec),
            lat(&p.latency_us, |l| l.p50),
            lat(&p.latency_us, |l| l.p99),
            lat(&p.latency_us, |l| l.p999),
            lat(&p.latency_us, |l| l.max),
            p.done,
            p.failed,
            cores(p.client_cpu),
            cores(p.server_cpu),
        );
        let mixed = p.reads > 0 && p.writes > 0;
        for (name, count, latency) in [
            ("read", p.reads, &p.read_latency_us),
            ("update", p.writes, &p.write_latency_us),
        ] {
            if mixed {
                let _ = writeln!(
                    out,
                    "| &nbsp;&nbsp;{name} | {} | {} | {} | {} | {} | {count} | | | |",
                    thousands(count as f64 / p.seconds),
                    lat(latency, |l| l.p50),
                    lat(latency, |l| l.p99),
                    lat(latency, |l| l.p999),
                    lat(latency, |l| l.max),
                );
            }
        }
        if let Some(rps) = p.requests_per_sec {
            let _ = writeln!(
                out,
                "| &nbsp;&nbsp;batches | {} | | | | | {} | | | |",
                thousands(rps),
                p.done
            );
        }
        if let (Some(keys), Some(kps)) = (p.keys, p.keys_per_sec) {
            let _ = writeln!(
                out,
                "| &nbsp;&nbsp;keys ({} whole listings) | {} | | | | | {keys} | | | |",
                p.passes.unwrap_or(0),
                thousands(kps),
            );
        }
        if p.from_send_us.is_some() {
            let _ = writeln!(
                out,
                "| &nbsp;&nbsp;from send | | {} | {} | {} | {} | | | | |",
                lat(&p.from_send_us, |l| l.p50),
                lat(&p.from_send_us, |l| l.p99),
                lat(&p.from_send_us, |l| l.p999),
                lat(&p.from_send_us, |l| l.max),
            );
        }
    }
    out.push('\n');
    if let Some(figures) = &run.watch {
        out.push_str(&watch::text(figures));
    }
    let failures: Vec<String> = run
        .phases
        .iter()
        .filter(|p| !p.errors.is_empty() || p.misses > 0 || p.siblings > 0 || p.aborted.is_some())
        .map(|p| {
            let mut line = format!("- {}: failed: {}", phase_title(p), errors_text(&p.errors));
            if p.misses > 0 {
                let _ = write!(line, "; reads of missing keys (done): {}", p.misses);
            }
            if p.siblings > 0 {
                let _ = write!(
                    line,
                    "; reads answered 300 with siblings (done): {}",
                    p.siblings
                );
            }
            if let Some(why) = &p.aborted {
                let _ = write!(line, "; stopped early: {why}");
            }
            line
        })
        .collect();
    if !failures.is_empty() || !run.notes.is_empty() {
        out.push_str("Notes:\n\n");
        for line in failures {
            out.push_str(&line);
            out.push('\n');
        }
        for note in &run.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A run

fn run_all(args: &RunArgs) -> Result<RunReport> {
    let progress = Progress {
        enabled: !args.quiet && std::io::stderr().is_terminal(),
    };
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| format!("{} at {}", args.protocol.name(), args.targets[0]));
    for &target in &args.targets {
        preflight(args.protocol, target, args.timeout)?;
    }
    let requests = Arc::new(Requests::new(args));
    let written: Arc<Vec<AtomicBool>> =
        Arc::new((0..args.records).map(|_| AtomicBool::new(false)).collect());
    let chooser = Arc::new(match args.distribution {
        Distribution::Uniform => Chooser::Uniform(args.records),
        Distribution::Zipfian => Chooser::Zipfian(Zipfian::new(args.records, args.theta)),
    });
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut report = RunReport {
        id: args
            .id
            .clone()
            .unwrap_or_else(|| args.protocol.name().into()),
        label: label.clone(),
        role: args.role.name().into(),
        durability: args.durability.clone(),
        protocol: args.protocol.name().into(),
        targets: args.targets.iter().map(|t| t.to_string()).collect(),
        distribution: match args.distribution {
            Distribution::Uniform => "uniform".into(),
            Distribution::Zipfian => "zipfian".into(),
        },
        zipf_theta: (args.distribution == Distribution::Zipfian).then_some(args.theta),
        records: args.records,
        key_bytes: KEY_BYTES,
        value_bytes: args.value_bytes,
        concurrency: args.concurrency,
        threads: args.threads,
        seconds_per_phase: args
            .operations
            .is_none()
            .then_some(args.duration.as_secs_f64()),
        operations_per_phase: args.operations,
        seed: args.seed,
        timeout_ms: args.timeout.as_millis() as u64,
        started,
        phases: Vec::new(),
        watch: None,
        notes: Vec::new(),
    };
    let plan = |records: Records, limit: Option<u64>| Plan {
        requests: requests.clone(),
        targets: args.targets.clone(),
        records,
        timeout: args.timeout,
        limit,
        written: written.clone(),
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        connect_failed: AtomicU64::new(0),
    };
    // Phase `n`'s new keys are records from `(n + 1) << 40` on (`<< 39`
    // more at half peak): past the loaded ones and every other phase's.
    let records_of = |workload: Workload, n: usize, half_peak: bool| {
        let base = ((n as u64 + 1) << 40) + if half_peak { 1 << 39 } else { 0 };
        match workload {
            Workload::Load => Records::Sequence(args.records),
            Workload::Singles => Records::Fresh { base },
            Workload::Batch => Records::FreshBatches {
                base,
                size: args.batch_size as u64,
            },
            w => Records::Random {
                chooser: chooser.clone(),
                read_fraction: w.read_fraction(),
            },
        }
    };
    // A long limit for an operation-count phase.
    let unbounded = Duration::from_secs(365 * 24 * 3600);
    let length = if args.operations.is_some() {
        unbounded
    } else {
        args.duration
    };
    let mut first = true;
    for (n, &workload) in args.workloads.iter().enumerate() {
        if !first {
            std::thread::sleep(PAUSE);
        }
        first = false;
        let title = format!("{label}: {}", workload.name());
        if !progress.enabled && !args.quiet {
            eprintln!("dnd bench: {title} ({})", workload.describe());
        }
        let result = match workload {
            Workload::List => listing::run(args, &title, &progress),
            Workload::Watch => watch::run(args, &title, &progress).map(|(result, figures)| {
                report.watch = Some(figures);
                result
            }),
            _ => run_phase(
                plan(records_of(workload, n, false), args.operations),
                &title,
                args.concurrency,
                args.threads,
                args.rate,
                length,
                args.seed.wrapping_add(n as u64 * 1_000_003),
                &args.server_pids,
                &progress,
            ),
        }
        .with_context(|| format!("{label}: workload {}", workload.name()))?;
        let aborted = result.aborted.clone();
        report
            .phases
            .push(phase_report(workload, false, false, &result, args));
        if let Some(why) = aborted {
            print!("{}", text_report(&report));
            bail!("{label}: workload {}: {why}", workload.name());
        }
        let closed_loop = !matches!(workload, Workload::List | Workload::Watch);
        if args.half_peak && closed_loop && result.stats.done > 0 {
            std::thread::sleep(PAUSE);
            let rate = result.throughput() / 2.0;
            // (Of requests: batches, for the batch workload.)
            let title = format!("{label}: {} at half peak", workload.name());
            if !progress.enabled && !args.quiet {
                eprintln!("dnd bench: {title} ({rate:.0}/s)");
            }
            let result = run_phase(
                plan(
                    records_of(workload, n, true),
                    args.operations.map(|n| n / 2),
                ),
                &title,
                args.concurrency,
                args.threads,
                Some(rate),
                length,
                args.seed.wrapping_add(n as u64 * 1_000_003 + 1),
                &args.server_pids,
                &progress,
            )
            .with_context(|| format!("{label}: workload {} at half peak", workload.name()))?;
            report
                .phases
                .push(phase_report(workload, true, false, &result, args));
        }
        // The read workloads need every record: write what the load phase
        // did not reach.
        let reads_follow = args.workloads[n + 1..].iter().any(|w| w.needs_records());
        if workload == Workload::Load && reads_follow {
            let missing: Vec<u64> = (0..args.records)
                .filter(|&r| !written[r as usize].load(Ordering::Relaxed))
                .collect();
            if !missing.is_empty() {
                let count = missing.len();
                let title =
                    format!("{label}: writing {count} records the load phase did not reach");
                if !progress.enabled && !args.quiet {
                    eprintln!("dnd bench: {title}");
                }
                let result = run_phase(
                    plan(Records::List(missing), None),
                    &title,
                    args.concurrency,
                    args.threads,
                    None,
                    unbounded,
                    args.seed,
                    &args.server_pids,
                    &progress,
                )?;
                let unwritten = written
                    .iter()
                    .filter(|w| !w.load(Ordering::Relaxed))
                    .count();
                report.notes.push(format!(
                    "the load phase wrote {} of {} records; the other {count} were written untimed before the next phase{}",
                    args.records as usize - count,
                    args.records,
                    if unwritten > 0 {
                        format!(", {unwritten} of them could not be")
                    } else {
                        String::new()
                    }
                ));
                report
                    .phases
                    .push(phase_report(Workload::Load, false, true, &result, args));
            }
        }
    }
    Ok(report)
}
