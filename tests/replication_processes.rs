//! The data path between real `dnd` processes, through HTTP only: a write
//! through one node reads back through the others; a killed replica and a
//! paused (hung) one cost only what the quorum allows; the killed one,
//! restarted on its data directory, gets the writes it missed.

mod common;

use std::time::Duration;

use common::{client, eventually, lists_alive, DndProcess};
use serde_json::Value;

const FAST: &[&str] = &[
    "--protocol-period-ms",
    "200",
    "--replica-timeout-ms",
    "300",
    "--hint-interval-ms",
    "100",
];

fn spawn(dir: &std::path::Path, ports: (u16, u16), seed: Option<u16>) -> DndProcess {
    let seed = seed.map(|port| format!("127.0.0.1:{port}"));
    let mut args: Vec<&str> = FAST.to_vec();
    match &seed {
        None => args.push("start"),
        Some(seed) => args.extend(["join", seed]),
    }
    DndProcess::spawn_on(dir, ports.0, ports.1, &args)
}

async fn health_id(node: &DndProcess) -> Option<String> {
    let mut response = client().get(node.http("/health")).send().await.ok()?;
    let body: Value = response.json().await.ok()?;
    body["node_id"].as_str().map(str::to_string)
}

async fn all_see_all(nodes: &[&DndProcess], ids: &[String]) -> Option<()> {
    for node in nodes {
        if !lists_alive(node.http_addr(), ids).await {
            return None;
        }
    }
    Some(())
}

/// (status, body) of one request; a connection error is status 0.
async fn call(method: &str, node: &DndProcess, path: &str, body: &str) -> (u16, String) {
    let client = client();
    let url = node.http(&format!("/kv/{path}"));
    let request = match method {
        "PUT" => client.put(url),
        _ => client.get(url),
    };
    match request.send_body(body.to_string()).await {
        Ok(mut response) => {
            let bytes = response
                .body()
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            (
                response.status().as_u16(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        }
        Err(_) => (0, String::new()),
    }
}

async fn metric(node: &DndProcess, name: &str) -> Option<u64> {
    let mut response = client().get(node.http("/metrics")).send().await.ok()?;
    let text = String::from_utf8(response.body().await.ok()?.to_vec()).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

#[actix_rt::test]
async fn real_processes_replicate_ride_out_a_kill_and_a_pause_and_hand_back_what_was_missed() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| (common::free_port(), common::free_port()))
        .collect();
    let a = spawn(dirs[0].path(), ports[0], None);
    let b = spawn(dirs[1].path(), ports[1], Some(ports[0].0));
    let mut c = spawn(dirs[2].path(), ports[2], Some(ports[0].0));
    let mut ids = Vec::new();
    for node in [&a, &b, &c] {
        ids.push(
            eventually(Duration::from_secs(10), "a node to serve", || {
                health_id(node)
            })
            .await,
        );
    }
    eventually(Duration::from_secs(10), "three members", || async {
        all_see_all(&[&a, &b, &c], &ids).await
    })
    .await;

    for k in 0..10 {
        assert_eq!(
            call("PUT", &a, &format!("k{k}"), &format!("v{k}")).await.0,
            204
        );
    }
    for k in 0..10 {
        for node in [&b, &c] {
            assert_eq!(
                call("GET", node, &format!("k{k}"), "").await,
                (200, format!("v{k}"))
            );
        }
    }

    // kill -9 one replica: W=2 and R=2 still hold.
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    for k in 0..10 {
        let (status, body) = call("PUT", &b, &format!("missed{k}"), &format!("m{k}")).await;
        assert_eq!(status, 204, "{body}");
    }
    for k in 0..10 {
        assert_eq!(
            call("GET", &a, &format!("missed{k}"), "").await,
            (200, format!("m{k}"))
        );
    }

    // A hung replica (SIGSTOP) is a failed one for the request: W=2 cannot
    // be met with one of three answering, and the client is told so.
    b.signal("-STOP");
    let (status, body) = call("PUT", &a, "during-pause", "p").await;
    b.signal("-CONT");
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["replicas_needed"], 2);
    assert_eq!(body["stored_on"].as_array().map(Vec::len), Some(1));

    // The killed replica returns on its data directory and ports.
    c = spawn(dirs[2].path(), ports[2], Some(ports[0].0));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while all_see_all(&[&a, &b, &c], &ids).await.is_none() {
        // A node that could not take its ports back (another process took
        // one meanwhile) exits: say so rather than wait it out.
        if let Ok(Some(status)) = c.child.try_wait() {
            panic!("the restarted node exited ({status}); were its ports taken?");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after 15s waiting for the restarted node to rejoin"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(
        Duration::from_secs(15),
        "every hint to be handed over",
        || async {
            let pending =
                metric(&a, "dnd_hints_pending").await? + metric(&b, "dnd_hints_pending").await?;
            (pending == 0).then_some(())
        },
    )
    .await;

    // With the others gone, one copy is all there is to read: it has
    // everything, the writes it missed included.
    drop(a);
    drop(b);
    for k in 0..10 {
        assert_eq!(
            call("GET", &c, &format!("missed{k}?r=1"), "").await,
            (200, format!("m{k}"))
        );
        assert_eq!(
            call("GET", &c, &format!("k{k}?r=1"), "").await,
            (200, format!("v{k}"))
        );
    }
}
