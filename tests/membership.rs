//! SWIM membership between real `dnd` processes: crashes, pauses, leaves
//! and joins, observed through `/cluster/members`. Timings are shortened
//! (a 200 ms protocol period) so the suite stays quick; the figures with
//! default timings come from `cargo bench --bench swim`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, eventually, lists_alive, state_of, DndProcess};
use serde_json::Value;

/// 200 ms period, 100 ms probe timeout; the suspicion floor is
/// `SUSPICION_MULT` periods.
const FAST: &[&str] = &[
    "--storage",
    "memory",
    "--protocol-period-ms",
    "200",
    "--probe-timeout-ms",
    "100",
];
const SUSPICION_MULT: u32 = 10;

struct Cluster {
    nodes: Vec<DndProcess>,
    ids: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn node_id(process: &DndProcess) -> Option<String> {
    let mut r = client().get(process.http("/health")).send().await.ok()?;
    let body: Value = r.json().await.ok()?;
    body["node_id"].as_str().map(str::to_string)
}

/// Starts `n` processes, each joining through the first, and waits until
/// all list all alive.
/// The fast timings, less the storage flag when `extra` brings its own.
fn fast_args<'a>(extra: &[&str]) -> Vec<&'a str> {
    let own_storage = extra.contains(&"--storage");
    let mut args = Vec::new();
    let mut flags = FAST.iter();
    while let Some(&flag) = flags.next() {
        if flag == "--storage" && own_storage {
            flags.next();
            continue;
        }
        args.push(flag);
    }
    args
}

async fn start_cluster(n: usize, extra: &[&str]) -> Cluster {
    let mut dirs = Vec::new();
    let mut nodes: Vec<DndProcess> = Vec::new();
    let mut ids = Vec::new();
    let suspicion = SUSPICION_MULT.to_string();
    for i in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let mut args = fast_args(extra);
        args.extend(["--suspicion-mult", &suspicion]);
        args.extend(extra);
        let seed;
        if i == 0 {
            args.push("start");
        } else {
            seed = nodes[0].gossip_addr();
            args.extend(["join", &seed]);
        }
        let node = DndProcess::spawn(dir.path(), &args);
        let id = eventually(Duration::from_secs(10), "a node to serve", || {
            node_id(&node)
        })
        .await;
        ids.push(id);
        nodes.push(node);
        dirs.push(dir);
    }
    let cluster = Cluster {
        nodes,
        ids,
        _dirs: dirs,
    };
    eventually(
        Duration::from_secs(10),
        "every node to list every node alive",
        || async {
            for node in &cluster.nodes {
                if !lists_alive(node.http_addr(), &cluster.ids).await {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    cluster
}

/// Whether every node but `subject` lists it in `state`.
async fn all_others_see(cluster: &Cluster, subject: usize, state: &str) -> bool {
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i == subject {
            continue;
        }
        match state_of(node.http_addr(), &cluster.ids[subject]).await {
            Some((s, _)) if s == state => {}
            _ => return false,
        }
    }
    true
}

#[actix_rt::test]
async fn a_killed_process_is_declared_dead_by_every_other() {
    let mut cluster = start_cluster(4, &[]).await;
    cluster.nodes[2].child.kill().unwrap();
    cluster.nodes[2].child.wait().unwrap();
    // Unconfirmed suspicion lasts 6 × floor; confirmations shorten it.
    let bound = Duration::from_millis(200) * SUSPICION_MULT * 6 + Duration::from_secs(3);
    eventually(bound, "the others to declare it dead", || async {
        all_others_see(&cluster, 2, "dead").await.then_some(())
    })
    .await;
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i == 2 {
            continue;
        }
        for j in [0, 1, 3] {
            let (state, _) = state_of(node.http_addr(), &cluster.ids[j]).await.unwrap();
            assert_eq!(state, "alive", "node {i} about node {j}");
        }
    }
}

#[actix_rt::test]
async fn a_process_paused_shorter_than_the_suspicion_timeout_is_never_declared_dead() {
    let cluster = start_cluster(4, &[]).await;
    let floor = Duration::from_millis(200) * SUSPICION_MULT;
    cluster.nodes[1].signal("-STOP");
    let paused_at = Instant::now();
    while paused_at.elapsed() < floor / 2 {
        for i in [0, 2, 3] {
            if let Some((state, _)) = state_of(cluster.nodes[i].http_addr(), &cluster.ids[1]).await
            {
                assert_ne!(
                    state, "dead",
                    "node {i} declared a briefly paused node dead"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.nodes[1].signal("-CONT");
    eventually(
        Duration::from_secs(10),
        "everyone to see it alive",
        || async { all_others_see(&cluster, 1, "alive").await.then_some(()) },
    )
    .await;
}

#[actix_rt::test]
async fn a_process_paused_past_its_suspicion_is_declared_dead_and_returns_alive() {
    let cluster = start_cluster(4, &[]).await;
    let before = state_of(cluster.nodes[0].http_addr(), &cluster.ids[3])
        .await
        .unwrap()
        .1;
    cluster.nodes[3].signal("-STOP");
    let bound = Duration::from_millis(200) * SUSPICION_MULT * 6 + Duration::from_secs(3);
    eventually(bound, "the paused node to be declared dead", || async {
        all_others_see(&cluster, 3, "dead").await.then_some(())
    })
    .await;
    cluster.nodes[3].signal("-CONT");
    eventually(
        Duration::from_secs(10),
        "the resumed node to be alive everywhere",
        || async { all_others_see(&cluster, 3, "alive").await.then_some(()) },
    )
    .await;
    let after = state_of(cluster.nodes[0].http_addr(), &cluster.ids[3])
        .await
        .unwrap()
        .1;
    assert!(
        after > before,
        "it came back with a higher incarnation ({before} -> {after})"
    );
}

#[actix_rt::test]
async fn sigterm_stops_a_node_without_leaving_and_it_catches_up_on_its_return() {
    let mut cluster = start_cluster(3, &["--storage", "disk"]).await;
    let floor = Duration::from_millis(200) * SUSPICION_MULT;
    cluster.nodes[1].signal("-TERM");
    let signalled = Instant::now();
    eventually(
        Duration::from_secs(5),
        "the others to mark it dead",
        || async { all_others_see(&cluster, 1, "dead").await.then_some(()) },
    )
    .await;
    // Told, not suspected: sooner than any suspicion could expire.
    assert!(signalled.elapsed() < floor, "{:?}", signalled.elapsed());
    let status = cluster.nodes[1].child.wait().unwrap();
    assert!(status.success(), "a clean exit: {status:?}");
    // Writes while it is away are kept for it as hints.
    for i in 0..20 {
        let url = cluster.nodes[0].http(&format!("/kv/away-{i}"));
        let response = client().put(url).send_body(format!("v{i}")).await.unwrap();
        assert_eq!(response.status().as_u16(), 204);
    }
    let hinted: u64 = [0, 2]
        .iter()
        .filter_map(|&i| dnd::dev::metric(cluster.nodes[i].http_addr(), "dnd_hints_pending"))
        .sum();
    assert!(hinted > 0, "the writes were hinted for it");
    // Back on the same data dir: the same member, alive again.
    let dir = cluster._dirs[1].path().to_path_buf();
    let seed = cluster.nodes[0].gossip_addr();
    let suspicion = SUSPICION_MULT.to_string();
    let mut args = fast_args(&["--storage"]);
    args.extend([
        "--suspicion-mult",
        &suspicion,
        "--storage",
        "disk",
        "join",
        &seed,
    ]);
    cluster.nodes[1] = DndProcess::spawn(&dir, &args);
    eventually(
        Duration::from_secs(10),
        "it to be alive everywhere again",
        || async { all_others_see(&cluster, 1, "alive").await.then_some(()) },
    )
    .await;
    let back = eventually(Duration::from_secs(10), "it to serve again", || async {
        node_id(&cluster.nodes[1]).await
    })
    .await;
    assert_eq!(back, cluster.ids[1], "the same member");
    eventually(
        Duration::from_secs(10),
        "the hints to be handed back",
        || async {
            let pending: u64 = [0, 2]
                .iter()
                .filter_map(|&i| {
                    dnd::dev::metric(cluster.nodes[i].http_addr(), "dnd_hints_pending")
                })
                .sum();
            (pending == 0).then_some(())
        },
    )
    .await;
    for i in 0..20 {
        let url = cluster.nodes[1].http(&format!("/kv/away-{i}?r=3"));
        let mut response = client().get(url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "away-{i}");
        assert_eq!(response.body().await.unwrap(), format!("v{i}").as_bytes());
    }
    // No key moved at any point: stopping kept its place on the ring.
    for i in 0..3 {
        let sent = dnd::dev::metric(cluster.nodes[i].http_addr(), "dnd_handoff_keys_sent_total");
        assert_eq!(sent, Some(0), "node {i} handed keys over");
    }
}

#[actix_rt::test]
async fn dnd_leave_asks_a_node_to_leave_and_exit() {
    let mut cluster = start_cluster(2, &[]).await;
    let output = Command::new(env!("CARGO_BIN_EXE_dnd"))
        .args([
            "leave",
            "--server-port",
            &cluster.nodes[1].http_port.to_string(),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("is leaving the cluster"));
    eventually(
        Duration::from_secs(2),
        "the other to mark it left",
        || async { all_others_see(&cluster, 1, "left").await.then_some(()) },
    )
    .await;
    let start = Instant::now();
    while cluster.nodes[1].child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the node exits after leaving"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn dnd_leave_without_a_node_is_a_clear_error() {
    let port = common::free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_dnd"))
        .args(["leave", "--server-port", &port.to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot reach a node at http://127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn a_join_no_member_answers_gives_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let seed = silent.local_addr().unwrap().to_string();
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend(["--join-timeout-ms", "600", "join", &seed]);
    let mut node = DndProcess::spawn_with(
        dir.path(),
        common::free_port(),
        common::free_port(),
        &args,
        Stdio::piped(),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "join never gave up"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    use std::io::Read;
    node.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains(&format!(
            "could not join: no member answered at {seed} within 0.6s"
        )),
        "{stderr}"
    );
    // It really asked, repeatedly.
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2000];
    let mut joins = 0;
    while silent.recv_from(&mut buf).is_ok() {
        joins += 1;
    }
    assert!(joins >= 2, "{joins} join attempts");
}
