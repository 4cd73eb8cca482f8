//! `dnd bench summarize`: the JSON reports of several runs turned into the
//! comparison page of `bench/compare.sh` (and the README's short table).
//! It reads files and writes markdown; it sends no request.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use super::api_figures;
use super::{cores, errors_text, ms, thousands, PhaseReport, RunReport, SummaryArgs, KEY_BYTES};

/// Memory figures `bench/compare.sh` measures.
#[derive(Deserialize, Debug)]
struct Memory {
    keys: u64,
    rss_empty_bytes: u64,
    rss_bytes: u64,
    rss_peak_bytes: Option<u64>,
    disk_bytes: u64,
    disk_bytes_closed: Option<u64>,
    /// Sizes as `ls` shows them, sparse files counted whole.
    disk_apparent_bytes: Option<u64>,
    disk_apparent_bytes_closed: Option<u64>,
    settle_seconds: Option<f64>,
}

/// One line of `redis-benchmark --csv`.
struct RedisRow {
    test: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn read_redis(path: &Path) -> Result<Vec<RedisRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|f| f.trim_matches('"').to_string())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(test), Some(rps)) = (col("test"), col("rps")) else {
        bail!("{}: not redis-benchmark --csv output", path.display());
    };
    let (p50, p99) = (col("p50_latency_ms"), col("p99_latency_ms"));
    Ok(lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
            let num = |i: Option<usize>| {
                i.and_then(|i| fields.get(i))
                    .and_then(|f| f.parse().ok())
                    .unwrap_or(f64::NAN)
            };
            RedisRow {
                test: fields.get(test).unwrap_or(&"").to_string(),
                rps: num(Some(rps)),
                p50_ms: num(p50),
                p99_ms: num(p99),
            }
        })
        .collect())
}

pub(super) fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

fn date_of(unix: u64) -> String {
    // Days since the epoch to a civil date (proleptic Gregorian).
    let days = (unix / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

pub(super) fn summarize(args: &SummaryArgs) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.results)
        .with_context(|| format!("reading {}", args.results.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut runs = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let run: RunReport = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a load report", file.display()))?;
        runs.push(run);
    }
    if runs.is_empty() {
        bail!("no load reports (*.json) in {}", args.results.display());
    }
    let started = runs.iter().map(|r| r.started).min().unwrap_or(0);
    // The listing, batch and watch runs have their own section.
    let api = api_figures::section(&runs);
    runs.retain(|r| !api_figures::is_api_run(r));
    let find_run = |id: &str| runs.iter().find(|r| r.id == id);
    let closed = |run: &RunReport, workload: &str| {
        run.phases
            .iter()
            .find(|p| p.workload == workload && !p.half_peak && !p.fill && p.rate.is_none())
            .cloned()
    };
    let ops = |id: &str, workload: &str| {
        find_run(id)
            .and_then(|r| closed(r, workload))
            .map_or(f64::NAN, |p| p.ops_per_sec)
    };
    let mut out = String::from("# dnd beside the HTTP ceiling, etcd and Redis\n\n");
    let _ = writeln!(
        out,
        "Measured {} on {} with `bench/compare.sh`{}: every system one after the other in the same \
run, on the same shared machine, driven by the same load tool (`dnd bench`) with the \
same settings. Only ratios within this page mean much.\n",
        date_of(started),
        args.machine.as_deref().unwrap_or("this machine"),
        args.wall
            .as_ref()
            .map_or(String::new(), |w| format!(" (the whole run took {w})")),
    );
    if let Some(first) = runs.first() {
        let per_phase = match (first.operations_per_phase, first.seconds_per_phase) {
            (Some(n), _) => format!("{n} requests"),
            (None, Some(s)) => format!("{s} s"),
            _ => "–".into(),
        };
        let _ = writeln!(
        out,
        "Settings: {} record choice{} over {} records, {} B keys, {} B values, {} clients (one \
keep-alive connection each to every node of the system, requests round-robin over the nodes), \
{} client thread(s), closed loop, {per_phase} per phase in the order load, C, A, B, a 1 s pause \
between phases. *× ceiling* is the system's throughput over the ceiling's in the same workload; \
*× dnd* over dnd's on one node with the disk engine. Latency: from send to answer, done requests \
only; failed requests are listed, never counted.\n",
        first.distribution,
        first
            .zipf_theta
            .map_or(String::new(), |t| format!(" (θ {t})")),
        first.records,
        first.key_bytes,
        first.value_bytes,
        first.concurrency,
        first.threads,
    );
        out.push_str("| system | durability |\n|---|---|\n");
        for run in &runs {
            let _ = writeln!(
                out,
                "| {} | {} |",
                run.label,
                run.durability.as_deref().unwrap_or("–")
            );
        }
        out.push('\n');
    }
    for (workload, title) in [
        ("load", "Write-only load phase (100% insert/overwrite)"),
        ("C", "Workload C (100% read)"),
        ("A", "Workload A (50% read, 50% update)"),
        ("B", "Workload B (95% read, 5% update)"),
    ] {
        let ceiling = ops(&args.ceiling, workload);
        let reference = ops(&args.reference, workload);
        if runs.iter().all(|r| closed(r, workload).is_none()) {
            continue;
        }
        let _ = writeln!(out, "## {title}\n");
        out.push_str(
            "| system | ops/s | p50 | p99 | p99.9 | × ceiling | × dnd | failed | client CPU | server CPU |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|\n");
        for run in &runs {
            let Some(p) = closed(run, workload) else {
                continue;
            };
            let l = p.latency_us.unwrap_or_default();
            let mut failed = if p.errors.is_empty() {
                "0".to_string()
            } else {
                errors_text(&p.errors)
            };
            if p.siblings > 0 {
                let _ = write!(
                    failed,
                    " (and {} reads answered 300 with siblings, done)",
                    p.siblings
                );
            }
            let bold = if run.id == args.reference { "**" } else { "" };
            let _ = writeln!(
                out,
                "| {bold}{}{bold} | {bold}{}{bold} | {} | {} | {} | {} | {} | {failed} | {} | {} |",
                run.label,
                thousands(p.ops_per_sec),
                ms(p.latency_us.map(|_| l.p50)),
                ms(p.latency_us.map(|_| l.p99)),
                ms(p.latency_us.map(|_| l.p999)),
                ratio(p.ops_per_sec, ceiling),
                ratio(p.ops_per_sec, reference),
                cores(p.client_cpu),
                cores(p.server_cpu),
            );
        }
        out.push('\n');
    }
    // Open loop at half the peak.
    let half: Vec<(&RunReport, &PhaseReport)> = runs
        .iter()
        .flat_map(|r| r.phases.iter().filter(|p| p.half_peak).map(move |p| (r, p)))
        .collect();
    if !half.is_empty() {
        out.push_str("## Open loop at half the peak\n\n");
        out.push_str(
            "Each phase again, paced at half the throughput its closed loop reached. Latency counts \
from the moment a request was due, so waiting behind slow answers counts (no coordinated omission).\n\n",
        );
        out.push_str("| system | workload | paced ops/s | done ops/s | p50 | p99 | p99.9 | p99 from send | failed |\n");
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---|\n");
        for (run, p) in &half {
            let l = p.latency_us.unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.label,
                p.workload,
                thousands(p.rate.unwrap_or(f64::NAN)),
                thousands(p.ops_per_sec),
                ms(p.latency_us.map(|_| l.p50)),
                ms(p.latency_us.map(|_| l.p99)),
                ms(p.latency_us.map(|_| l.p999)),
                ms(p.from_send_us.map(|l| l.p99)),
                if p.errors.is_empty() {
                    "0".into()
                } else {
                    errors_text(&p.errors)
                },
            );
        }
        out.push('\n');
    }
    // Memory.
    let memory = match &args.memory {
        Some(path) => Some(
            serde_json::from_str::<Memory>(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("{} is not memory figures", path.display()))?,
        ),
        None => None,
    };
    let memory_run: Option<RunReport> = match &args.memory_run {
        Some(path) => Some(serde_json::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?),
        None => None,
    };
    let mut memory_per_key = None;
    if let Some(m) = &memory {
        let keys = m.keys.max(1) as f64;
        let (key_bytes, value_bytes) = memory_run
            .as_ref()
            .map_or((KEY_BYTES, 100), |r| (r.key_bytes, r.value_bytes));
        let raw = (key_bytes + value_bytes) as f64;
        let rss_per_key = (m.rss_bytes.saturating_sub(m.rss_empty_bytes)) as f64 / keys;
        let disk_per_key = m.disk_bytes as f64 / keys;
        memory_per_key = Some((rss_per_key, disk_per_key, raw));
        let _ = writeln!(
            out,
            "## Memory: {} keys on one node\n",
            thousands(m.keys as f64)
        );
        if let Some(run) = &memory_run {
            if let Some(p) = run.phases.first() {
                let _ = writeln!(
                    out,
                    "{}: {} keys of {} B with {} B values written once each by the load tool ({} \
clients), {} ops/s, {} failed. Then, after {} s: resident memory (`VmRSS` in `/proc/PID/status`) \
and the blocks in use by the data directory (`du`).\n",
                    run.label,
                    thousands(p.done as f64),
                    run.key_bytes,
                    run.value_bytes,
                    run.concurrency,
                    thousands(p.ops_per_sec),
                    p.failed,
                    m.settle_seconds.unwrap_or(0.0),
                );
            }
        }
        out.push_str("| | total | per key | per key ÷ raw key+value |\n|---|---:|---:|---:|\n");
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
        let _ = writeln!(
            out,
            "| raw keys + values | {} | {raw:.0} B | 1.00 |",
            mib((raw * keys) as u64)
        );
        let _ = writeln!(
            out,
            "| resident memory, empty node | {} | | |",
            mib(m.rss_empty_bytes)
        );
        let _ = writeln!(
            out,
            "| resident memory, loaded | {} | {rss_per_key:.0} B (above the empty node) | {:.2} |",
            mib(m.rss_bytes),
            rss_per_key / raw
        );
        if let Some(peak) = m.rss_peak_bytes {
            let _ = writeln!(
                out,
                "| peak resident memory (`VmHWM`) | {} | {:.0} B | {:.2} |",
                mib(peak),
                peak.saturating_sub(m.rss_empty_bytes) as f64 / keys,
                peak.saturating_sub(m.rss_empty_bytes) as f64 / keys / raw
            );
        }
        let apparent =
            |bytes: Option<u64>| bytes.map_or(String::new(), |b| format!(" ({} apparent)", mib(b)));
        let _ = writeln!(
            out,
            "| on disk, node running | {}{} | {disk_per_key:.0} B | {:.2} |",
            mib(m.disk_bytes),
            apparent(m.disk_apparent_bytes),
            disk_per_key / raw
        );
        if let Some(closed) = m.disk_bytes_closed {
            let _ = writeln!(
                out,
                "| on disk, node stopped | {}{} | {:.0} B | {:.2} |",
                mib(closed),
                apparent(m.disk_apparent_bytes_closed),
                closed as f64 / keys,
                closed as f64 / keys / raw
            );
        }
        out.push_str(
            "\n*Apparent* sizes count sparse files whole: fjall's journal file has a fixed \
apparent size whatever it holds.\n\n",
        );
    }
    // Redis.
    if let Some(path) = &args.redis {
        let rows = read_redis(path)?;
        out.push_str("## Redis, for reference\n\n");
        if let Some(note) = &args.redis_note {
            let _ = writeln!(out, "{note}\n");
        }
        let ceiling_put = ops(&args.ceiling, "load");
        let ceiling_get = ops(&args.ceiling, "C");
        out.push_str("| redis-benchmark test | ops/s | p50 | p99 | × HTTP ceiling (PUT, GET) |\n|---|---:|---:|---:|---:|\n");
        for row in &rows {
            let ceiling = if row.test.starts_with("SET") {
                ceiling_put
            } else {
                ceiling_get
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                row.test,
                thousands(row.rps),
                ms(Some(row.p50_ms * 1000.0)),
                ms(Some(row.p99_ms * 1000.0)),
                ratio(row.rps, ceiling),
            );
        }
        out.push('\n');
    }
    out.push_str(&api.markdown);
    // Goals.
    out.push_str("## Goals\n\n| goal | measured | met |\n|---|---|---|\n");
    let goal =
        |out: &mut String, what: &str, measured: f64, target: f64, higher: bool, unit: &str| {
            let met = if !measured.is_finite() {
                "not measured".to_string()
            } else if (higher && measured >= target) || (!higher && measured <= target) {
                "yes".to_string()
            } else {
                format!(
                    "no ({:.0}% of the goal)",
                    100.0
                        * if higher {
                            measured / target
                        } else {
                            target / measured
                        }
                )
            };
            let shown = if measured.is_finite() {
                format!("{measured:.2}{unit}")
            } else {
                "–".into()
            };
            let _ = writeln!(out, "| {what} | {shown} | {met} |");
        };
    goal(
        &mut out,
        "dnd one node (disk) GET ≥ 0.8 × ceiling (workload C)",
        ops(&args.reference, "C") / ops(&args.ceiling, "C"),
        0.8,
        true,
        "",
    );
    goal(
        &mut out,
        "dnd one node (disk) PUT ≥ 0.6 × ceiling (load phase)",
        ops(&args.reference, "load") / ops(&args.ceiling, "load"),
        0.6,
        true,
        "",
    );
    goal(
        &mut out,
        "dnd 3 nodes PUT ≥ 2 × etcd 3 members PUT (load phase)",
        ops(&args.cluster, "load") / ops(&args.peer_cluster, "load"),
        2.0,
        true,
        "",
    );
    for (what, phase) in [("PUT", "load"), ("GET", "C")] {
        let cluster = ops(&args.cluster, phase);
        for (goal_text, measured, target) in [
            (
                format!("dnd 3 nodes {what} ≥ 0.5 × one node (disk, {phase})"),
                cluster / ops(&args.reference, phase),
                0.5,
            ),
            (
                format!("dnd 3 nodes with the cluster secret, {what} ≥ 0.85 × without ({phase})"),
                ops(&args.secret_cluster, phase) / cluster,
                0.85,
            ),
        ] {
            goal(&mut out, &goal_text, measured, target, true, "");
        }
    }
    let half_p99 = find_run(&args.reference)
        .map(|r| {
            r.phases
                .iter()
                .filter(|p| p.half_peak)
                .filter_map(|p| p.latency_us.map(|l| l.p99))
                .fold(f64::NAN, f64::max)
        })
        .unwrap_or(f64::NAN);
    goal(
        &mut out,
        "dnd one node p99 < 5 ms at half of peak (worst phase)",
        half_p99 / 1000.0,
        5.0,
        false,
        " ms",
    );
    if let Some((rss, _, raw)) = memory_per_key {
        goal(
            &mut out,
            &format!(
                "memory per key ≤ 2 × raw + 64 B = {:.0} B",
                2.0 * raw + 64.0
            ),
            rss,
            2.0 * raw + 64.0,
            false,
            " B",
        );
    }
    for (what, measured, target, higher, unit) in &api.goals {
        goal(&mut out, what, *measured, *target, *higher, unit);
    }
    out.push_str("\nWhy the goals that are missed are missed, and what would close them: `docs/figures/profile.md`.\n");
    std::fs::write(&args.out, &out).with_context(|| format!("writing {}", args.out.display()))?;

    // The README's short table.
    if let Some(path) = &args.readme {
        let mut short = format!(
            "Latest figures ({}, {}; from `bench/compare.sh`, details in \
[docs/figures/compare.md](docs/figures/compare.md))",
            date_of(started),
            args.machine.as_deref().unwrap_or("this machine"),
        );
        match runs.first() {
            Some(first) => {
                let _ = write!(
                    short,
                    ": {} B values, {} clients, closed loop; PUT is the write-only load phase, \
GET is workload C.\n\n",
                    first.value_bytes, first.concurrency,
                );
            }
            None => short.push_str(".\n"),
        }
        if !runs.is_empty() {
            short.push_str("| system | PUT ops/s | PUT p99 | GET ops/s | GET p99 | A ops/s | PUT, GET × ceiling | PUT, GET × dnd |\n");
            short.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        }
        for run in &runs {
            let (put, get, a) = (closed(run, "load"), closed(run, "C"), closed(run, "A"));
            let v = |p: &Option<PhaseReport>| p.as_ref().map_or(f64::NAN, |p| p.ops_per_sec);
            let p99 =
                |p: &Option<PhaseReport>| ms(p.as_ref().and_then(|p| p.latency_us).map(|l| l.p99));
            let _ = writeln!(
                short,
                "| {} | {} | {} | {} | {} | {} | {}, {} | {}, {} |",
                run.label,
                thousands(v(&put)),
                p99(&put),
                thousands(v(&get)),
                p99(&get),
                thousands(v(&a)),
                ratio(v(&put), ops(&args.ceiling, "load")),
                ratio(v(&get), ops(&args.ceiling, "C")),
                ratio(v(&put), ops(&args.reference, "load")),
                ratio(v(&get), ops(&args.reference, "C")),
            );
        }
        if let (Some((rss, disk, raw)), Some(m)) = (memory_per_key, &memory) {
            let _ = writeln!(
                short,
                "\nOne node (disk) holding {} keys of {raw:.0} B (key and value): {rss:.0} B of \
resident memory and {disk:.0} B on disk per key.",
                thousands(m.keys as f64)
            );
        }
        if !api.readme_rows.is_empty() {
            short.push_str(
                "\nThe listing, batch and watch API, each beside its baseline in the same run:\n\n\
| figure | dnd | baseline | dnd ÷ baseline |\n|---|---:|---:|---:|\n",
            );
            for row in &api.readme_rows {
                short.push_str(row);
                short.push('\n');
            }
        }
        std::fs::write(path, short).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
