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
