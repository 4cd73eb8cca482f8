//! `/openapi.json` against a live node, checked by schemathesis: it
//! generates requests (valid ones and, per its phases, boundary and
//! malformed ones) for every operation the description has, and checks
//! each answer: never a 5xx, and status, content type, headers and body
//! as described.
//!
//! schemathesis comes from PyPI (`.ci/run` installs it in a virtualenv and
//! names it in `DND_SCHEMATHESIS`). Without it the test says so and passes,
//! unless `DND_REQUIRE_SCHEMATHESIS=1`, as CI sets it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually_blocking, DndProcess};

/// The schemathesis command to run, if there is one.
fn schemathesis() -> Option<String> {
    let named = std::env::var("DND_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let runs = Command::new(&named)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return Some(named);
    }
    assert!(
        std::env::var("DND_REQUIRE_SCHEMATHESIS").as_deref() != Ok("1"),
        "DND_REQUIRE_SCHEMATHESIS=1 but {named} does not run"
    );
    None
}

#[test]
fn schemathesis_finds_no_server_error_and_every_answer_is_as_described() {
    let Some(schemathesis) = schemathesis() else {
        eprintln!("skipped: no schemathesis (pip install schemathesis, or set DND_SCHEMATHESIS)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = DndProcess::spawn(
        dir.path(),
        &["--storage", "memory", "--replicas", "1", "start"],
    );
    let health = node.http_addr();
    eventually_blocking(Duration::from_secs(10), "the node to serve", || {
        dnd::dev::http_get(health, "/ready").filter(|(status, _)| *status == 200)
    });
    let reports = tempfile::tempdir().unwrap();
    let output = Command::new(&schemathesis)
        .arg("run")
        .arg(node.http("/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
            // These make the node leave, remove members or change keys:
            // the fuzzer would stop the node it tests.
            "--exclude-path",
            "/cluster/leave",
            "--exclude-path",
            "/cluster/remove/{id}",
            "--exclude-path",
            "/cluster/keyring",
            "--max-examples",
            "25",
            "--seed",
            "20261202",
            // Above a watch's default timeout (60 s), which a generated
            // valid context may start.
            "--request-timeout",
            "70",
            // One worker: hypothesis describes its strategies with Python's
            // `ast`, which two threads at once can crash on Python 3.11.
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--report-dir",
        ])
        .arg(reports.path())
        // Its cache of examples goes under the working directory: keep it
        // out of the checkout.
        .current_dir(reports.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found answers unlike the description:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("passed") || stdout.contains("Passed"),
        "schemathesis ran no test:\n{stdout}"
    );
    // Its summary, for whoever reads the test's output.
    let summary: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect();
    eprintln!("{}", summary.join("\n"));
    assert_eq!(
        dnd::dev::http_get(health, "/health").map(|(status, _)| status),
        Some(200),
        "the node still serves after the fuzzing"
    );
}
