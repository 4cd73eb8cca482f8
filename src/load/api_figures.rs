//! The comparison report's part about the listing, batch and watch API:
//! the runs of the list, singles + batch and watch workloads, each against
//! its baseline measured in the same run of `bench/compare.sh`.
//!
//! | figure | baseline |
//! | --- | --- |
//! | dnd's listing, keys/s | etcd's range through its JSON gateway, same keys, same page size |
//! | PUTs of new keys in batches (`POST /kv/_batch`), PUTs/s | the same number of new keys in single PUTs, same clients, same run |
//! | open watches: node memory per watch, node CPU while idle | the same node before the watches |

use std::fmt::Write as _;

use super::summary::ratio;
use super::{cores, errors_text, ms, thousands, PhaseReport, RunReport};

/// A goal row for the report's goals table: what, measured, target,
/// whether higher is better, unit.
pub(super) type Goal = (String, f64, f64, bool, &'static str);

/// The workloads that belong here rather than in the YCSB tables.
pub(super) fn is_api_run(run: &RunReport) -> bool {
    run.phases
        .iter()
        .any(|p| matches!(p.workload.as_str(), "singles" | "batch" | "list" | "watch"))
        || run.watch.is_some()
}

fn phase<'a>(run: &'a RunReport, workload: &str) -> Option<&'a PhaseReport> {
    run.phases
        .iter()
        .find(|p| p.workload == workload && !p.half_peak && !p.fill)
}

/// What the section found, for the README's table and the goals.
#[derive(Default)]
pub(super) struct Section {
    pub markdown: String,
    pub readme_rows: Vec<String>,
    pub goals: Vec<Goal>,
}

pub(super) fn section(runs: &[RunReport]) -> Section {
    let mut s = Section::default();
    let lists: Vec<&RunReport> = runs.iter().filter(|r| phase(r, "list").is_some()).collect();
    let batches: Vec<&RunReport> = runs
        .iter()
        .filter(|r| phase(r, "batch").is_some() && phase(r, "singles").is_some())
        .collect();
    let watches: Vec<&RunReport> = runs.iter().filter(|r| r.watch.is_some()).collect();
    if lists.is_empty() && batches.is_empty() && watches.is_empty() {
        return s;
    }
    let out = &mut s.markdown;
    out.push_str("## Listing, batches and watches\n\n");
    out.push_str(
        "Each figure beside a baseline measured in the same run, on the same machine; the ratios \
mean more than the figures.\n\n",
    );

    if !lists.is_empty() {
        let keys_per_sec = |r: &RunReport| phase(r, "list").and_then(|p| p.keys_per_sec);
        let etcd = lists.iter().find(|r| r.protocol == "etcd").copied();
        let etcd_kps = etcd.and_then(keys_per_sec).unwrap_or(f64::NAN);
        let first = lists[0];
        let list = phase(first, "list").expect("filtered on it");
        let _ = writeln!(
            out,
            "### Listing {} keys\n\n{} keys of {} B (values of {} B) written once each by the load \
tool's load phase, then listed by one client, page after page of {} keys (round-robin over the \
nodes), whole listings one after the other for as long as a phase lasts and at least one. Every \
listing was checked: exactly the {} keys written, each once, in key order. dnd: `GET /kv?prefix=user&limit=…&start_after=…`; \
etcd: `POST /v3/kv/range` with `range_end`, `limit`, `keys_only` and the last key and a NUL byte \
as the next start. Latency is per page.\n",
            thousands(first.records as f64),
            thousands(first.records as f64),
            first.key_bytes,
            first.value_bytes,
            list.page_size.unwrap_or(0),
            thousands(first.records as f64),
        );
        out.push_str(
            "| system | keys/s | pages/s | page p50 | page p99 | whole listings | × etcd | load phase inserts/s | failed | server CPU |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n");
        for run in &lists {
            let p = phase(run, "list").expect("filtered on it");
            let load = phase(run, "load");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.label,
                thousands(p.keys_per_sec.unwrap_or(f64::NAN)),
                thousands(p.ops_per_sec),
                ms(p.latency_us.map(|l| l.p50)),
                ms(p.latency_us.map(|l| l.p99)),
                p.passes.unwrap_or(0),
                ratio(p.keys_per_sec.unwrap_or(f64::NAN), etcd_kps),
                thousands(load.map_or(f64::NAN, |l| l.ops_per_sec)),
                if p.errors.is_empty() {
                    "0".into()
                } else {
                    errors_text(&p.errors)
                },
                cores(p.server_cpu),
            );
        }
        out.push('\n');
        if let (Some(dnd), Some(etcd)) = (lists.iter().find(|r| r.protocol == "dnd"), etcd) {
            let dnd_kps = keys_per_sec(dnd).unwrap_or(f64::NAN);
            s.readme_rows.push(format!(
                "| listing {} keys, keys/s: {} beside {} | {} | {} | {} |",
                thousands(dnd.records as f64),
                dnd.label,
                etcd.label,
                thousands(dnd_kps),
                thousands(etcd_kps),
                ratio(dnd_kps, etcd_kps),
            ));
        }
    }

    if !batches.is_empty() {
        let first = batches[0];
        let size = phase(first, "batch")
            .and_then(|p| p.batch_size)
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "### PUTs in batches of {size} beside single PUTs\n\n{} clients, closed loop, {} s each: \
first PUTs of new keys one per request (`PUT /kv/{{key}}`), then PUTs of other new keys {size} per \
`POST /kv/_batch`, {} B values both. A batched PUT counts as done when its own result in the \
batch's answer is 2xx; latency is per request (one PUT, or one batch).\n",
            first.concurrency,
            first.seconds_per_phase.unwrap_or(f64::NAN),
            first.value_bytes,
        );
        out.push_str(
            "| system | single PUTs/s | single p99 | batched PUTs/s | batches/s | batch p50 | batch p99 | batched ÷ single | failed | server CPU (single, batched) |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n");
        for run in &batches {
            let (single, batch) = (
                phase(run, "singles").expect("filtered on it"),
                phase(run, "batch").expect("filtered on it"),
            );
            let mut errors = single.errors.clone();
            for (kind, count) in &batch.errors {
                *errors.entry(kind.clone()).or_default() += count;
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {}, {} |",
                run.label,
                thousands(single.ops_per_sec),
                ms(single.latency_us.map(|l| l.p99)),
                thousands(batch.ops_per_sec),
                thousands(batch.requests_per_sec.unwrap_or(f64::NAN)),
                ms(batch.latency_us.map(|l| l.p50)),
                ms(batch.latency_us.map(|l| l.p99)),
                ratio(batch.ops_per_sec, single.ops_per_sec),
                if errors.is_empty() {
                    "0".into()
                } else {
                    errors_text(&errors)
                },
                cores(single.server_cpu),
                cores(batch.server_cpu),
            );
            s.readme_rows.push(format!(
                "| PUTs/s in batches of {size} beside single PUTs: {} | {} | {} | {} |",
                run.label,
                thousands(batch.ops_per_sec),
                thousands(single.ops_per_sec),
                ratio(batch.ops_per_sec, single.ops_per_sec),
            ));
            s.goals.push((
                format!("{}: PUTs in batches of {size} ≥ 3 × single PUTs", run.label),
                batch.ops_per_sec / single.ops_per_sec,
                3.0,
                true,
                "",
            ));
        }
        out.push('\n');
    }

    for run in &watches {
        let f = run.watch.as_ref().expect("filtered on it");
        let mib =
            |b: Option<u64>| b.map_or("–".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        let gauge = |g: Option<u64>| g.map_or("–".into(), |g| thousands(g as f64));
        let per_watch = f.bytes_per_watch();
        let idle_cores = f
            .idle_server_cpu_seconds
            .map_or(f64::NAN, |c| c / f.idle_seconds.max(1e-3));
        let wake = phase(run, "watch");
        let _ = writeln!(
            out,
            "### {} open watches on one node\n\n{}: {} keys written, then one \
`GET /kv/{{key}}?wait=CONTEXT&timeout=300` per key, each on its own connection, `CONTEXT` from \
a GET of the key just before. Resident memory is `VmRSS` (`/proc/PID/status`): the node's own \
memory, not the kernel's socket buffers. CPU is `utime + stime` (`/proc/PID/stat`, 10 ms ticks). \
Then one key was written, and {} more spread over the others, one at a time: each one's watch \
must answer 200 within 5 s, and no other.\n",
            thousands(f.watches as f64),
            run.label,
            thousands(f.watches as f64),
            f.woken.saturating_sub(1),
        );
        out.push_str("| | measured |\n|---|---:|\n");
        let _ = writeln!(
            out,
            "| watches open (`dnd_kv_watches_open`) | {} ({} s to open them all) |",
            gauge(f.gauge_open),
            format_args!("{:.1}", f.open_seconds)
        );
        let _ = writeln!(
            out,
            "| node resident memory before, with the watches | {}, {} |",
            mib(f.rss_before_bytes),
            mib(f.rss_open_bytes)
        );
        let _ = writeln!(
            out,
            "| **per watch** | **{}** |",
            per_watch.map_or("–".into(), |b| format!("{} B", thousands(b)))
        );
        let _ = writeln!(
            out,
            "| node CPU over {:.0} s with every watch idle | {} s ({:.2}% of a core) |",
            f.idle_seconds,
            f.idle_server_cpu_seconds
                .map_or("–".into(), |c| format!("{c:.2}")),
            idle_cores * 100.0
        );
        let _ = writeln!(
            out,
            "| woken watches that answered 200 within 5 s | {} of {} |",
            f.woken_ok, f.woken
        );
        let _ = writeln!(
            out,
            "| from the write to the first woken watch's answer | {} |",
            f.first_wake_ms
                .map_or("–".into(), |ms| format!("{ms:.2} ms"))
        );
        if let Some(p) = wake {
            let _ = writeln!(
                out,
                "| the same, p50 and max over the {} woken | {}, {} |",
                p.done,
                ms(p.latency_us.map(|l| l.p50)),
                ms(p.latency_us.map(|l| l.max))
            );
        }
        let _ = writeln!(
            out,
            "| watches that answered with no write to their key | {} |",
            f.answered_unwoken
        );
        let _ = writeln!(
            out,
            "| still open after the wakes (`dnd_kv_watches_open`) | {} ({}) |",
            thousands(f.still_open as f64),
            gauge(f.gauge_after_wakes)
        );
        let _ = writeln!(
            out,
            "| `dnd_kv_watches_open` {:.1} s after the tool closed the rest | {} |\n",
            f.close_seconds,
            gauge(f.gauge_after_close)
        );
        let mib_of = |b: Option<u64>| b.map_or(f64::NAN, |b| b as f64 / 1048576.0);
        s.readme_rows.push(format!(
            "| resident memory of {} with {} open watches, beside none | {:.1} MiB ({} a watch) | {:.1} MiB | {} |",
            run.label,
            thousands(f.watches as f64),
            mib_of(f.rss_open_bytes),
            per_watch.map_or("–".into(), |b| format!("{} B", thousands(b))),
            mib_of(f.rss_before_bytes),
            ratio(mib_of(f.rss_open_bytes), mib_of(f.rss_before_bytes)),
        ));
        s.readme_rows.push(format!(
            "| CPU of {} over {:.0} s with {} idle watches | {:.2}% of a core | – | – |",
            run.label,
            f.idle_seconds,
            thousands(f.watches as f64),
            idle_cores * 100.0,
        ));
        s.goals.push((
            format!(
                "{} idle watches: node CPU ≤ 1% of a core (no polling)",
                thousands(f.watches as f64)
            ),
            idle_cores * 100.0,
            1.0,
            false,
            "%",
        ));
    }
    s
}
