//! `dnd bench`, the load tool, as a user runs it: against a real node, with
//! a bad flag, and against an address where nothing listens.

mod common;

use std::net::TcpListener;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{dnd_command, eventually_blocking, DndProcess};
use serde_json::Value;

/// Runs `dnd bench ARGS` to its end, stdout and stderr captured.
fn bench(args: &[&str]) -> Output {
    dnd_command()
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run dnd bench")
}

fn node_is_healthy(node: &DndProcess) -> Option<()> {
    let (status, _) = dnd::dev::http_get(node.http_addr(), "/health")?;
    (status == 200).then_some(())
}

#[test]
fn a_short_run_counts_every_operation_and_no_failure() {
    let dir = tempfile::tempdir().unwrap();
    let node = DndProcess::spawn(&dir.path().join("node"), &["--storage", "memory", "start"]);
    eventually_blocking(
        Duration::from_secs(30),
        "the node to answer /health",
        || node_is_healthy(&node),
    );
    let report = dir.path().join("report.json");
    let target = node.http_addr().to_string();
    let output = bench(&[
        "--target",
        &target,
        "--workload",
        "load,c",
        "--records",
        "200",
        "--operations",
        "400",
        "--concurrency",
        "4",
        "--json",
        report.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}\n{stdout}");
    assert!(stdout.starts_with("# load: "), "{stdout}");

    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["operations_per_phase"], 400, "{report}");
    assert_eq!(report["records"], 200, "{report}");
    let phases = report["phases"].as_array().unwrap();
    let workloads: Vec<&str> = phases
        .iter()
        .map(|p| p["workload"].as_str().unwrap())
        .collect();
    assert_eq!(workloads, ["load", "C"], "{report}");
    let (load, reads) = (&phases[0], &phases[1]);
    assert_eq!(load["done"], 400, "{load}");
    assert_eq!(load["writes"], 400, "{load}");
    assert_eq!(load["failed"], 0, "{load}");
    assert_eq!(reads["done"], 400, "{reads}");
    assert_eq!(reads["reads"], 400, "{reads}");
    assert_eq!(reads["failed"], 0, "{reads}");
    assert_eq!(reads["misses"], 0, "{reads}");
    assert!(
        reads["latency_us"]["p50"].as_f64().unwrap() > 0.0,
        "{reads}"
    );
}

#[test]
fn a_bad_flag_is_one_line_and_exit_status_2() {
    let output = bench(&["--target", "127.0.0.1:1", "--no-such-flag"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");

    let output = bench(&["--target", "127.0.0.1:1", "--workload", "z"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("`z` is not load, a, b, c"), "{stderr}");

    // Flags that parse, but do not go together.
    let output = bench(&[
        "--target",
        "127.0.0.1:1",
        "--protocol",
        "ceiling",
        "--workload",
        "batch",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--workload batch: not for --protocol ceiling"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_target_is_a_clear_error() {
    // A port that was just free: nothing listens there once it is closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}");
    let output = bench(&[
        "--target",
        &target,
        "--workload",
        "load",
        "--operations",
        "10",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the dnd target {target}")),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

/// The node's resident memory, from `/proc/PID/status`.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// More load than the node can serve, from outside: 256 connections
/// sending 64 KiB writes as fast as they are answered, against a node that
/// lets 16 requests wait. The node sheds the rest with 503, answers every
/// request within its request timeout, and its memory stops growing: what
/// it holds is bounded by its limits, not by the load.
#[test]
fn sustained_overload_is_shed_with_memory_bounded_and_every_request_answered_in_time() {
    const VALUE: usize = 64 << 10;
    const CLIENTS: u64 = 256;
    let dir = tempfile::tempdir().unwrap();
    let node = DndProcess::spawn(
        &dir.path().join("node"),
        &[
            "--storage",
            "memory",
            "--max-waiting-requests",
            "16",
            "--request-timeout-ms",
            "2000",
            "start",
        ],
    );
    eventually_blocking(
        Duration::from_secs(30),
        "the node to answer /health",
        || node_is_healthy(&node),
    );
    let pid = node.child.id();
    let before = resident_bytes(pid).expect("the node's resident memory");

    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                samples.extend(resident_bytes(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        })
    };
    let report = dir.path().join("report.json");
    let target = node.http_addr().to_string();
    // 64 records, each overwritten again and again: the data stays small,
    // so whatever grows is what the load made the node hold.
    let output = bench(&[
        "--target",
        &target,
        "--workload",
        "load",
        "--records",
        "64",
        "--duration",
        "8",
        "--value-size",
        &VALUE.to_string(),
        "--concurrency",
        &CLIENTS.to_string(),
        "--threads",
        "2",
        // A request not answered within the node's timeout (and a margin
        // for the loaded machine) counts as a `timeout` failure.
        "--timeout-ms",
        "4000",
        "--json",
        report.to_str().unwrap(),
        "-q",
    ]);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap())
        .unwrap_or_else(|e| panic!("no report ({e}): {stderr}"));
    let phase = &report["phases"][0];
    let errors = phase["errors"].as_object().expect("errors by kind");
    for (kind, count) in errors {
        assert!(
            kind.ends_with("HTTP 503"),
            "only shedding may fail a request, not {kind} ({count}): {phase}"
        );
    }
    assert!(phase["done"].as_u64().unwrap() > 0, "{phase}");

    let shed = dnd::dev::metric(node.http_addr(), "dnd_http_requests_shed_total")
        .expect("the shed counter");
    assert!(shed > 0, "the load was more than the node could serve");

    assert!(samples.len() > 20, "{} samples", samples.len());
    let peak = *samples.iter().max().unwrap();
    eprintln!(
        "overload: {} done, {shed} shed, {errors:?}; resident {} MiB before, {} MiB at most",
        phase["done"],
        before >> 20,
        peak >> 20
    );
    // A body in flight per connection, in the connection's read buffer,
    // the request's payload, its decoded value and the stored copy; the 64
    // values and their siblings; and the allocator's per-thread caches.
    let bound = CLIENTS * VALUE as u64 * 4 + (64 << 20);
    assert!(
        peak - before.min(peak) < bound,
        "resident memory grew by {} MiB (bound {} MiB)",
        (peak - before.min(peak)) >> 20,
        bound >> 20
    );
    // No growth with time. The first quarter is the warm-up (connections
    // open, the allocator's caches fill). Some 60,000 requests arrive in
    // the last half, so a leak of a kilobyte per request would add tens of
    // MiB between the second quarter's peak and the last one's; where the
    // allocator places the in-flight bodies moves the peak by one or two
    // rounds of them.
    let quarter = samples.len() / 4;
    let settled = *samples[quarter..2 * quarter].iter().max().unwrap();
    let last = *samples[3 * quarter..].iter().max().unwrap();
    let margin = 2 * CLIENTS * VALUE as u64;
    eprintln!(
        "overload: peaks by quarter {:?} MiB",
        samples
            .chunks(quarter.max(1))
            .map(|c| c.iter().max().unwrap() >> 20)
            .collect::<Vec<_>>()
    );
    assert!(
        last < settled + margin,
        "memory kept growing under steady load: {} MiB, then {} MiB at the end",
        settled >> 20,
        last >> 20
    );
    assert!(node_is_healthy(&node).is_some(), "the node still serves");
}
