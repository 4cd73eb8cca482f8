//! The real `dnd` binary, as a user runs it.

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use common::{client, dnd_command, eventually, free_port, lists_alive, members_of, DndProcess};
use futures_util::future::join_all;
use serde_json::Value;

/// Waits for a process that should exit on its own; kills it and fails if
/// it does not within the deadline.
fn exit_within(mut child: Child, deadline: Duration) -> (ExitStatus, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status, stderr);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("dnd did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_to_exit(cmd: &mut Command) -> (ExitStatus, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    exit_within(child, Duration::from_secs(10))
}

async fn node_id(process: &DndProcess) -> Option<String> {
    let mut r = client().get(process.http("/health")).send().await.ok()?;
    let body: Value = r.json().await.ok()?;
    body["node_id"].as_str().map(str::to_string)
}

async fn wait_until_serving(process: &DndProcess) -> String {
    eventually(Duration::from_secs(10), "the node to serve HTTP", || {
        node_id(process)
    })
    .await
}

#[actix_rt::test]
async fn start_then_join_list_each_other_within_three_seconds_on_default_timings() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = DndProcess::spawn(dirs.0.path(), &["start"]);
    let first_id = wait_until_serving(&first).await;

    let joined_at = Instant::now();
    let second = DndProcess::spawn(dirs.1.path(), &["join", &first.gossip_addr()]);
    let second_id = wait_until_serving(&second).await;
    let ids = [first_id, second_id];
    eventually(
        Duration::from_secs(3),
        "both processes to list each other",
        || async {
            (lists_alive(first.http_addr(), &ids).await
                && lists_alive(second.http_addr(), &ids).await)
                .then_some(())
        },
    )
    .await;
    assert!(
        joined_at.elapsed() < Duration::from_secs(3),
        "took {:?}",
        joined_at.elapsed()
    );
}

#[actix_rt::test]
async fn every_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let first = DndProcess::spawn(dir.path(), &["start"]);
    let id = wait_until_serving(&first).await;
    let http = client();
    let writes = (0..400).map(|i| {
        let http = http.clone();
        let path = first.http(&format!("/kv/key-{i}"));
        async move {
            let r = http.put(path).send_body(format!("value-{i}")).await.ok()?;
            (r.status() == StatusCode::NO_CONTENT).then_some(i)
        }
    });
    let acknowledged: Vec<usize> = join_all(writes).await.into_iter().flatten().collect();
    assert_eq!(acknowledged.len(), 400, "every write was acknowledged");

    let mut first = first;
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();

    let second = DndProcess::spawn(dir.path(), &["start"]);
    assert_eq!(
        wait_until_serving(&second).await,
        id,
        "same identity after the restart"
    );
    for i in acknowledged {
        let mut r = http
            .get(second.http(&format!("/kv/key-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "key-{i} lost");
        assert_eq!(r.body().await.unwrap(), format!("value-{i}").as_bytes());
    }
}

#[test]
fn a_gossip_port_in_use_is_one_clear_line_and_a_failure_exit() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (status, stderr) = run_to_exit(dnd_command().args([
        "start",
        "--storage",
        "memory",
        "-q",
        "--port",
        &port.to_string(),
        "--server-port",
        &free_port().to_string(),
    ]));
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "dnd: cannot bind the gossip port (UDP) 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
}

#[test]
fn an_http_port_in_use_is_one_clear_line_and_a_failure_exit() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (status, stderr) = run_to_exit(dnd_command().args([
        "start",
        "--storage",
        "memory",
        "-q",
        "--server-port",
        &port.to_string(),
        "--port",
        &free_port().to_string(),
    ]));
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "dnd: cannot bind the HTTP port (TCP) 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

#[test]
fn an_unusable_data_dir_is_one_clear_line_and_a_failure_exit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let (status, stderr) = run_to_exit(
        dnd_command()
            .args(["start", "-q", "--port", &free_port().to_string()])
            .args(["--server-port", &free_port().to_string()])
            .arg("--data-dir")
            .arg(&file),
    );
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("dnd: cannot use data directory"),
        "{stderr}"
    );
}

#[test]
fn a_wildcard_address_is_refused_because_peers_could_not_reach_it() {
    let (status, stderr) =
        run_to_exit(dnd_command().args(["start", "--storage", "memory", "--address", "0.0.0.0"]));
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("address 0.0.0.0 cannot be advertised"),
        "{stderr}"
    );
}

/// An address of the documentation range (RFC 5737): the node must refuse
/// it, or fail to bind it, before a single datagram leaves.
const NOT_LOOPBACK: &str = "192.0.2.1";

#[test]
fn a_node_off_loopback_refuses_to_run_without_a_cluster_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = run_to_exit(
        dnd_command()
            .args(["start", "--storage", "memory", "--address", NOT_LOOPBACK])
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("DND_CLUSTER_SECRET"),
    );
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("refusing to run on 192.0.2.1 without a cluster secret")
            && stderr.contains("dnd keygen")
            && stderr.contains("--insecure"),
        "{stderr}"
    );
    // --insecure runs it open, with a warning; here it then fails to bind
    // an address this host does not have, which shows it got that far.
    let (status, stderr) = run_to_exit(
        dnd_command()
            .args([
                "start",
                "--storage",
                "memory",
                "--insecure",
                "--address",
                NOT_LOOPBACK,
            ])
            .arg("--data-dir")
            .arg(dir.path()),
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("running without a cluster secret (--insecure)"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot bind the gossip port"), "{stderr}");
    // A secret that is not 32 bytes of base64 is refused by name.
    let (status, stderr) = run_to_exit(
        dnd_command()
            .args(["start", "--storage", "memory", "--address", NOT_LOOPBACK])
            .env("DND_CLUSTER_SECRET", "c2hvcnQ=")
            .arg("--data-dir")
            .arg(dir.path()),
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("the cluster secret is not usable"),
        "{stderr}"
    );
}

#[test]
fn keygen_prints_a_fresh_key_each_time() {
    let keygen = || {
        let out = dnd_command().arg("keygen").output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (first, second) = (keygen(), keygen());
    assert_ne!(first, second);
    for key in [first, second] {
        assert!(dnd::keyring::ClusterKey::from_base64(&key).is_ok(), "{key}");
    }
}

#[test]
fn a_corrupt_node_id_is_refused_rather_than_replaced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("node_id"), "zzz").unwrap();
    let (status, stderr) = run_to_exit(
        dnd_command()
            .args(["start", "-q", "--port", &free_port().to_string()])
            .args(["--server-port", &free_port().to_string()])
            .arg("--data-dir")
            .arg(dir.path()),
    );
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("does not hold a node id"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("node_id")).unwrap(),
        "zzz"
    );
}

#[test]
fn bad_flags_and_peers_are_refused_clearly() {
    let (status, stderr) = run_to_exit(dnd_command().args(["start", "--port", "banana"]));
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("invalid value 'banana'"), "{stderr}");

    let (status, stderr) = run_to_exit(dnd_command().args(["join"]));
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("<PEER>"), "{stderr}");

    let (status, stderr) = run_to_exit(dnd_command().args(["start", "--gossip-mtu", "100"]));
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("--gossip-mtu"), "{stderr}");

    let (status, stderr) =
        run_to_exit(dnd_command().args(["join", "no-port-here", "--storage", "memory"]));
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot resolve peer \"no-port-here\""),
        "{stderr}"
    );

    let (status, stderr) = run_to_exit(dnd_command().args([
        "start",
        "--storage",
        "memory",
        "--protocol-period-ms",
        "400",
        "--probe-timeout-ms",
        "400",
    ]));
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("must be shorter than"), "{stderr}");
}

#[test]
fn help_lists_the_commands_and_flags() {
    let output = dnd_command().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "start",
        "join",
        "--address",
        "--port",
        "--server-port",
        "--data-dir",
        "--storage",
        "--cluster-name",
        "--max-value-bytes",
        "DND_SERVER_PORT",
        "-v",
        "-q",
        "get",
        "put",
        "status",
        "bench",
        "--endpoint",
        "--max-waiting-requests",
    ] {
        assert!(help.contains(expected), "help lacks {expected}:\n{help}");
    }
}

#[actix_rt::test]
async fn flags_can_come_from_the_environment_and_sigterm_stops_cleanly() {
    let (gossip_port, http_port) = (free_port(), free_port());
    let child = dnd_command()
        .arg("start")
        .env("DND_PORT", gossip_port.to_string())
        .env("DND_SERVER_PORT", http_port.to_string())
        .env("DND_STORAGE", "memory")
        .env("DND_CLUSTER_NAME", "from-env")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let process = DndProcess {
        child,
        gossip_port,
        http_port,
        data_dir: Default::default(),
    };
    wait_until_serving(&process).await;
    let members = common::members_of(process.http_addr()).await.unwrap();
    assert_eq!(
        members[0]["gossip_addr"],
        format!("127.0.0.1:{gossip_port}")
    );

    let pid = process.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut process = process;
    let child = std::mem::replace(&mut process.child, Command::new("true").spawn().unwrap());
    let (status, stderr) = exit_within(child, Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
}

/// R and W default to a majority of N: one replica runs as it is, five
/// get three and three, and a quorum given on the command line still wins.
#[actix_rt::test]
async fn quorums_default_to_a_majority_of_the_replicas() {
    for (args, expected) in [
        (vec!["--replicas", "1", "start"], (1, 1, 1)),
        (vec!["--replicas", "5", "start"], (5, 3, 3)),
        (
            vec!["--replicas", "5", "--write-quorum", "2", "start"],
            (5, 3, 2),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let node = DndProcess::spawn(dir.path(), &args);
        wait_until_serving(&node).await;
        let mut ring = client()
            .get(node.http("/cluster/ring"))
            .send()
            .await
            .unwrap();
        let ring: Value = ring.json().await.unwrap();
        let got = (
            ring["replicas"].as_u64().unwrap(),
            ring["read_quorum"].as_u64().unwrap(),
            ring["write_quorum"].as_u64().unwrap(),
        );
        assert_eq!(got, expected, "{args:?}");
        let put = client()
            .put(node.http("/kv/k"))
            .send_body("v")
            .await
            .unwrap();
        assert_eq!(
            put.status().as_u16(),
            204,
            "{args:?}: a lone node takes writes"
        );
    }
}

/// What a node started with `args` writes to stderr, piped, until it has
/// served HTTP and stopped on SIGTERM.
async fn stderr_of_a_run(args: &[&str]) -> String {
    let (_dir, mut node) = spawn_with_piped_stderr(args).await;
    stderr_once_stopped(&mut node)
}

/// A node started with `args` and its stderr piped, once it serves.
async fn spawn_with_piped_stderr(args: &[&str]) -> (tempfile::TempDir, DndProcess) {
    let dir = tempfile::tempdir().unwrap();
    let node = DndProcess::spawn_with(
        dir.path(),
        free_port(),
        free_port(),
        args,
        std::process::Stdio::piped(),
    );
    wait_until_serving(&node).await;
    (dir, node)
}

/// Everything `node` wrote to its piped stderr, once told to stop.
fn stderr_once_stopped(node: &mut DndProcess) -> String {
    node.signal("-TERM");
    let mut stderr = String::new();
    use std::io::Read as _;
    node.child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// Logs written to a file or a pipe carry no colour escapes.
#[actix_rt::test]
async fn logs_to_a_pipe_have_no_colour_codes() {
    let stderr = stderr_of_a_run(&["-v", "start"]).await;
    assert!(stderr.contains("node started"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour escapes in: {stderr}");
}

/// `--log-format json`: every line is one JSON object a collector can read.
#[actix_rt::test]
async fn json_logs_are_one_object_a_line() {
    let stderr = stderr_of_a_run(&["-v", "--log-format", "json", "start"]).await;
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "node started" && l["level"] == "INFO"),
        "{stderr}"
    );
}

/// Every log line about a request carries its id: the client's own
/// `X-Request-Id`, or one the node chose and answered with.
#[actix_rt::test]
async fn log_lines_about_a_request_carry_its_id() {
    let (_dir, mut node) = spawn_with_piped_stderr(&["-vv", "--log-format", "json", "start"]).await;
    let chosen = client()
        .get(node.http("/kv/some-key"))
        .insert_header(("X-Request-Id", "trace-42.a_b"))
        .send()
        .await
        .unwrap();
    assert_eq!(chosen.status(), 404);
    assert_eq!(
        chosen.headers().get("x-request-id").unwrap(),
        "trace-42.a_b"
    );
    // An id that could forge a log line is replaced, not refused.
    let replaced = client()
        .get(node.http("/kv/other-key"))
        .insert_header(("X-Request-Id", "x y"))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 404);
    let given = replaced
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_string();
    assert_ne!(given, "x y");
    let stderr = stderr_once_stopped(&mut node);
    let served: Vec<Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|l| l["fields"]["message"] == "request served")
        .collect();
    let with_id = |id: &str| {
        served
            .iter()
            .find(|l| l["span"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no line with request id {id} in {stderr}"))
            .clone()
    };
    assert_eq!(with_id("trace-42.a_b")["span"]["path"], "/kv/some-key");
    assert_eq!(with_id(&given)["fields"]["status"], 404);
}

/// `--bind 0.0.0.0 --advertise IP`: the node listens everywhere and tells
/// its peers the address they should reach it at; a member on another
/// address joins through that one, and keys written on either are read on
/// the other.
#[actix_rt::test]
async fn a_node_listens_on_its_bind_address_and_advertises_another() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let wide = DndProcess::spawn(
        dirs.0.path(),
        &[
            "--bind",
            "0.0.0.0",
            "--advertise",
            "127.0.0.2",
            "--insecure",
            "start",
        ],
    );
    // Reached on 127.0.0.1 though it advertises 127.0.0.2: it listens on all.
    let wide_id = wait_until_serving(&wide).await;
    let seed = format!("127.0.0.2:{}", wide.gossip_port);
    let other = DndProcess::spawn(dirs.1.path(), &["--address", "127.0.0.3", "join", &seed]);
    let other_http = SocketAddr::from(([127, 0, 0, 3], other.http_port));
    let members = eventually(
        Duration::from_secs(10),
        "both members alive on both",
        || async {
            let seen_by_wide = members_of(wide.http_addr()).await?;
            let seen_by_other = members_of(other_http).await?;
            let all_alive = |members: &Vec<Value>| {
                members.len() == 2 && members.iter().all(|m| m["state"] == "alive")
            };
            (all_alive(&seen_by_wide) && all_alive(&seen_by_other)).then_some(seen_by_other)
        },
    )
    .await;
    let advertised = members
        .iter()
        .find(|m| m["id"] == wide_id.as_str())
        .unwrap();
    assert_eq!(advertised["gossip_addr"], seed);
    assert_eq!(
        advertised["http_addr"],
        format!("127.0.0.2:{}", wide.http_port)
    );

    let written = client()
        .put(format!("http://{other_http}/kv/across"))
        .send_body("both ways")
        .await
        .unwrap();
    assert_eq!(written.status(), 204);
    let mut read = client()
        .get(format!("http://127.0.0.2:{}/kv/across", wide.http_port))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.body().await.unwrap(), "both ways");
}

/// `--config dnd.toml` takes the flags' names; a flag on the command line
/// wins over the file, and a name that is no flag stops the start with
/// one line naming it.
#[actix_rt::test]
async fn a_settings_file_sets_flags_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (gossip, from_file, from_flag) = (free_port(), free_port(), free_port());
    let settings = dir.path().join("dnd.toml");
    std::fs::write(
        &settings,
        format!(
            "port = {gossip}\nserver_port = {from_file}\nstorage = \"memory\"\nreplicas = 1\nquiet = 1\n"
        ),
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let node = dnd_command()
        .arg("--config")
        .arg(&settings)
        .args(["--server-port", &from_flag.to_string(), "--data-dir"])
        .arg(&data_dir)
        .arg("start")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let process = DndProcess {
        child: node,
        gossip_port: gossip,
        http_port: from_flag,
        data_dir: data_dir.clone(),
    };
    wait_until_serving(&process).await;
    let mut ring = client()
        .get(process.http("/cluster/ring"))
        .send()
        .await
        .unwrap();
    let ring: Value = ring.json().await.unwrap();
    assert_eq!(ring["replicas"], 1, "{ring}");
    let members = members_of(process.http_addr()).await.unwrap();
    assert_eq!(members[0]["gossip_addr"], format!("127.0.0.1:{gossip}"));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", from_file)).is_err(),
        "the file's server port was used though the command line gave another"
    );

    std::fs::write(&settings, "prot = 5001\n").unwrap();
    let refused = dnd_command()
        .arg("--config")
        .arg(&settings)
        .arg("start")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, stderr) = exit_within(refused, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("`prot` is no flag"), "{stderr}");
}

/// What a client command did: exit code, stdout, stderr.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `dnd --endpoint URL ARGS` to its end, with `stdin` as its input.
fn dnd_at(endpoint: &str, args: &[&str], stdin: &[u8]) -> Ran {
    use std::io::Write;
    let mut child = dnd_command()
        .args(["--endpoint", endpoint])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A failure is one line on stderr, naming the program.
fn one_line_error(ran: &Ran) -> &str {
    let line = ran.stderr.trim_end();
    assert!(!line.contains('\n'), "more than one line: {line}");
    assert!(line.starts_with("dnd: "), "{line}");
    line
}

#[actix_rt::test]
async fn client_commands_write_read_list_and_resolve_siblings() {
    let dir = tempfile::tempdir().unwrap();
    let node = DndProcess::spawn(
        dir.path(),
        &["--storage", "memory", "--replicas", "1", "start"],
    );
    wait_until_serving(&node).await;
    let endpoint = node.http("");
    let dnd = |args: &[&str]| dnd_at(&endpoint, args, b"");

    let stored = dnd(&["put", "greeting", "hello"]);
    assert_eq!(stored.code, Some(0), "{}", stored.stderr);
    assert_eq!(stored.stdout, "stored greeting\n");
    let read = dnd(&["get", "greeting"]);
    assert_eq!((read.code, read.stdout.as_str()), (Some(0), "hello"));
    // Replacing is the default: no sibling is left beside the old value.
    assert_eq!(dnd(&["put", "greeting", "hi again"]).code, Some(0));
    assert_eq!(dnd(&["get", "greeting"]).stdout, "hi again");

    // No value: standard input, bytes as they are.
    let binary = dnd_at(&endpoint, &["put", "bin/raw"], &[0xff, 0xfe, 0x00]);
    assert_eq!(binary.code, Some(0), "{}", binary.stderr);
    let shown: Value = serde_json::from_str(&dnd(&["get", "bin/raw", "--json"]).stdout).unwrap();
    assert_eq!(shown["value_base64"], "//4A");
    assert_eq!(shown["content_type"], "application/octet-stream");
    assert_eq!(shown["key"], "bin/raw");

    // Two writes that saw nothing: siblings, each shown in its block.
    for value in ["left", "right"] {
        let reply = dnd::dev::request(
            node.http_addr(),
            "PUT",
            "/kv/both",
            &[("Content-Type", "text/plain")],
            value.as_bytes(),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(reply.status < 300, "{}", reply.text());
    }
    let siblings = dnd(&["get", "both"]);
    assert_eq!(siblings.code, Some(0), "{}", siblings.stderr);
    assert!(
        siblings.stdout.starts_with("both has 2 siblings"),
        "{}",
        siblings.stdout
    );
    for block in [
        "--- sibling 1 of 2: text/plain",
        "--- sibling 2 of 2: text/plain",
    ] {
        assert!(siblings.stdout.contains(block), "{}", siblings.stdout);
    }
    assert!(siblings.stdout.contains("\nleft\n") && siblings.stdout.contains("\nright\n"));
    let as_json: Value = serde_json::from_str(&dnd(&["get", "both", "--json"]).stdout).unwrap();
    assert_eq!(as_json["status"], 300);
    assert_eq!(as_json["siblings"].as_array().map(Vec::len), Some(2));
    let context = as_json["context"].as_str().unwrap();
    let merged = dnd(&["put", "both", "left+right", "--context", context]);
    assert_eq!(merged.code, Some(0), "{}", merged.stderr);
    assert_eq!(dnd(&["get", "both"]).stdout, "left+right");

    let listed = dnd(&["keys", "--prefix", "b"]);
    assert_eq!(listed.stdout, "bin/raw\nboth\n");
    let all: Value = serde_json::from_str(&dnd(&["keys", "--json"]).stdout).unwrap();
    assert_eq!(
        all["keys"],
        serde_json::json!(["bin/raw", "both", "greeting"])
    );
    assert_eq!(dnd(&["keys", "--limit", "1"]).stdout, "bin/raw\n");

    let refused = dnd(&["put", "both", "again", "--if-absent"]);
    assert_eq!(refused.code, Some(5));
    assert!(one_line_error(&refused).contains("has a value"));

    assert_eq!(dnd(&["delete", "greeting"]).code, Some(0));
    let gone = dnd(&["get", "greeting"]);
    assert_eq!(gone.code, Some(1));
    assert_eq!(one_line_error(&gone), "dnd: GET greeting: not found");

    let members = dnd(&["members"]);
    let lines: Vec<&str> = members.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATE"),
        "{}",
        members.stdout
    );
    assert_eq!(lines.len(), 2);
    assert!(lines[1].contains("alive"), "{}", members.stdout);
    let ring: Value = serde_json::from_str(&dnd(&["ring", "--json"]).stdout).unwrap();
    assert_eq!(ring["replicas"], 1);
    assert!(dnd(&["ring"]).stdout.starts_with("N=1 R=1 W=1"));
    let status = dnd(&["status"]);
    assert!(
        status.stdout.starts_with("cluster healthy"),
        "{}",
        status.stdout
    );
    let row = status.stdout.lines().nth(2).unwrap_or_default();
    assert!(
        row.starts_with("alive") && row.contains("100.0%"),
        "{}",
        status.stdout
    );
}

#[test]
fn client_commands_fail_with_one_line_and_the_documented_code() {
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let unreachable = dnd_at(&nobody, &["get", "k"], b"");
    assert_eq!(unreachable.code, Some(3));
    assert!(one_line_error(&unreachable).contains("cannot reach a node at"));
    let status = dnd_at(&nobody, &["status"], b"");
    assert_eq!(status.code, Some(3));

    let malformed = dnd_at("localhost:6000", &["get", "k"], b"");
    assert_eq!(malformed.code, Some(2));
    assert!(one_line_error(&malformed).contains("is not http://HOST:PORT"));
    let missing_key = dnd_at(&nobody, &["get"], b"");
    assert_eq!(missing_key.code, Some(2));
    let bad_ttl = dnd_at(&nobody, &["put", "k", "v", "--ttl", "soon"], b"");
    assert_eq!(bad_ttl.code, Some(2));
}

#[actix_rt::test]
async fn client_commands_without_the_right_token_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let made = run_to_output(
        dnd_command()
            .args(["token", "new", "reader", "--role", "read", "--append"])
            .arg(&tokens),
    );
    let reader = made.lines().next().unwrap_or_default().to_string();
    let data = dir.path().join("data");
    let tokens_flag = tokens.to_string_lossy().into_owned();
    let node = DndProcess::spawn(
        &data,
        &[
            "--storage",
            "memory",
            "--replicas",
            "1",
            "--tokens-file",
            &tokens_flag,
            "start",
        ],
    );
    eventually(Duration::from_secs(10), "the node to serve", || async {
        client().get(node.http("/health")).send().await.ok()
    })
    .await;
    let endpoint = node.http("");
    let anonymous = dnd_at(&endpoint, &["get", "k"], b"");
    assert_eq!(anonymous.code, Some(4), "{}", anonymous.stderr);
    assert!(one_line_error(&anonymous).contains("--token"));
    let read_only = dnd_at(&endpoint, &["--token", &reader, "put", "k", "v"], b"");
    assert_eq!(read_only.code, Some(4), "{}", read_only.stderr);
    let allowed = dnd_at(&endpoint, &["--token", &reader, "get", "k"], b"");
    assert_eq!(
        allowed.code,
        Some(1),
        "a reader reads: not found, {}",
        allowed.stderr
    );
}

/// Runs a command to its end; its stdout, after checking it succeeded.
fn run_to_output(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[actix_rt::test]
async fn without_its_quorum_a_read_exits_3_and_metrics_show_the_latencies() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let flags = ["--storage", "memory", "--replica-timeout-ms", "500"];
    let first = DndProcess::spawn(dirs[0].path(), &[&flags[..], &["start"]].concat());
    let mut ids = vec![wait_until_serving(&first).await];
    let seed = first.gossip_addr();
    let others: Vec<DndProcess> = dirs[1..]
        .iter()
        .map(|dir| DndProcess::spawn(dir.path(), &[&flags[..], &["join", &seed]].concat()))
        .collect();
    for other in &others {
        ids.push(wait_until_serving(other).await);
    }
    eventually(Duration::from_secs(20), "three alive members", || async {
        lists_alive(first.http_addr(), &ids).await.then_some(())
    })
    .await;
    let endpoint = first.http("");
    let stored = dnd_at(&endpoint, &["put", "k", "v"], b"");
    assert_eq!(stored.code, Some(0), "{}", stored.stderr);
    assert_eq!(dnd_at(&endpoint, &["get", "k"], b"").stdout, "v");

    let (_, text) = dnd::dev::http_get(first.http_addr(), "/metrics").unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("a Prometheus parser reads /metrics");
    let find = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    };
    let put = find(
        "dnd_http_request_duration_seconds",
        &[("route", "/kv/:key"), ("method", "PUT"), ("status", "2xx")],
    );
    match put.map(|s| &s.value) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            let all = buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count);
            assert_eq!(all, Some(1.0), "one PUT: {buckets:?}");
        }
        other => panic!("no histogram of PUTs: {other:?}\n{text}"),
    }
    assert!(
        find(
            "dnd_replica_request_duration_seconds",
            &[("outcome", "answered")]
        )
        .is_some(),
        "replica round-trips: {text}"
    );
    assert!(find("dnd_storage_operation_duration_seconds", &[("op", "get")]).is_some());
    match find("dnd_members", &[("state", "alive")]).map(|s| &s.value) {
        Some(prometheus_parse::Value::Gauge(alive)) => assert_eq!(*alive, 3.0),
        other => panic!("no gauge of alive members: {other:?}"),
    }
    assert!(find("dnd_keys_stored", &[]).is_some() && find("dnd_bytes_stored", &[]).is_some());

    for other in &others {
        other.signal("-KILL");
    }
    let unavailable = dnd_at(&endpoint, &["get", "k"], b"");
    assert_eq!(unavailable.code, Some(3), "{}", unavailable.stderr);
    let line = one_line_error(&unavailable);
    assert!(
        line.contains("cannot serve GET k now") && line.contains("replicas"),
        "{line}"
    );
}

#[actix_rt::test]
async fn the_store_lines_about_a_request_carry_its_id_too() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let flags = [
        "--storage",
        "memory",
        "--replicas",
        "2",
        "--replica-timeout-ms",
        "300",
    ];
    let (gossip, http) = (free_port(), free_port());
    let mut first = DndProcess::spawn_with(
        dirs.0.path(),
        gossip,
        http,
        &[&flags[..], &["-vv", "--log-format", "json", "start"]].concat(),
        Stdio::piped(),
    );
    let first_id = wait_until_serving(&first).await;
    let second = DndProcess::spawn(
        dirs.1.path(),
        &[&flags[..], &["join", &first.gossip_addr()]].concat(),
    );
    let second_id = wait_until_serving(&second).await;
    let ids = [first_id, second_id];
    eventually(Duration::from_secs(20), "two alive members", || async {
        lists_alive(first.http_addr(), &ids).await.then_some(())
    })
    .await;
    second.signal("-KILL");
    // Its replica cannot take the write: the write round says so in the
    // Store's lines, which must name the request.
    let answer = client()
        .put(first.http("/kv/far?w=2"))
        .insert_header(("X-Request-Id", "store-side-7"))
        .send_body("v")
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    let stderr = stderr_once_stopped(&mut first);
    let round_lines: Vec<Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("replica"))
        })
        .collect();
    assert!(
        !round_lines.is_empty(),
        "no line from the write round: {stderr}"
    );
    for line in &round_lines {
        assert_eq!(line["span"]["request_id"], "store-side-7", "{line}");
    }
}
