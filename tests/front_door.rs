//! What one client request can do to a key, tried as an attacker would: a
//! context forged to name every member at a counter near `u64::MAX` (it
//! used to make the key unwritable for ever), and a flood of writes without
//! a context (siblings without bound). Each is refused with a clear JSON
//! error, and every later ordinary write and delete of the key succeeds.

mod common;

use std::net::SocketAddr;

use common::cluster::{get, put, request, Cluster};
use dnd::config::StorageKind;
use dnd::node_id::NodeId;
use dnd::version::{Dot, VersionVector};

/// A context naming every member at `counter`.
fn forged_context(ids: &[String], counter: u64) -> String {
    let mut forged = VersionVector::new();
    for id in ids {
        forged.add(Dot {
            node: id.parse::<NodeId>().unwrap(),
            counter,
        });
    }
    forged.to_context()
}

#[actix_rt::test]
async fn a_forged_context_is_refused_and_the_key_stays_writable_through_every_node() {
    let cluster = Cluster::start(3, StorageKind::Memory).await;
    let https: Vec<SocketAddr> = cluster.running().map(|s| s.http()).collect();
    let ids = cluster.ids();
    assert_eq!(put(https[0], "target", "before").await.status, 204);
    for counter in [u64::MAX, u64::MAX - 1, 1 << 40] {
        for &http in &https {
            let forged = forged_context(&ids, counter);
            let reply = request("PUT", http, "target", Some(&forged), "forged").await;
            assert_eq!(reply.status, 409, "{}", reply.text());
            assert!(reply.json()["error"]
                .as_str()
                .unwrap()
                .contains("read the key again"));
            let reply = request("DELETE", http, "target", Some(&forged), "").await;
            assert_eq!(reply.status, 409, "{}", reply.text());
        }
    }
    // Nothing of it was stored, and the key takes ordinary writes through
    // every node: without a context, with the context a read gave, and a
    // delete.
    let read = get(https[1], "target?r=3").await;
    assert_eq!((read.status, read.text()), (200, "before".to_string()));
    for (i, &http) in https.iter().enumerate() {
        let read = get(http, "target").await;
        let reply = request(
            "PUT",
            http,
            "target",
            read.context.as_deref(),
            &format!("v{i}"),
        )
        .await;
        assert_eq!(reply.status, 204, "{}", reply.text());
        assert_eq!(
            get(https[(i + 1) % 3], "target?r=3").await.text(),
            format!("v{i}")
        );
    }
    assert_eq!(put(https[2], "target", "blind").await.status, 204);
    for &http in &https {
        let read = get(http, "target").await;
        let reply = request("DELETE", http, "target", read.context.as_deref(), "").await;
        assert_eq!(reply.status, 204, "{}", reply.text());
        assert_eq!(get(http, "target?r=3").await.status, 404);
        assert_eq!(put(http, "target", "again").await.status, 204);
    }
    // Each forged write was refused once, by the home replica that would
    // have versioned it: three counters, three nodes, a PUT and a DELETE.
    let refused: u64 = cluster
        .running()
        .map(|s| s.node().metrics.kv_writes_refused_unknown_context.get())
        .sum();
    assert_eq!(refused, 18);
}

#[actix_rt::test]
async fn a_read_modify_write_loop_through_every_node_never_gets_a_refusal() {
    let cluster = Cluster::start(3, StorageKind::Memory).await;
    let https: Vec<SocketAddr> = cluster.running().map(|s| s.http()).collect();
    let mut rng_state = 7u64;
    let mut next = |n: usize| {
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng_state >> 33) as usize % n
    };
    for round in 0..60 {
        // Reads and writes through different nodes, so the context often
        // comes from replicas the coordinator has not heard from yet.
        let read = get(https[next(3)], &format!("loop?r={}", 1 + next(2))).await;
        let value = format!("round-{round}");
        let reply = request(
            "PUT",
            https[next(3)],
            "loop?w=1",
            read.context.as_deref(),
            &value,
        )
        .await;
        assert_eq!(reply.status, 204, "round {round}: {}", reply.text());
    }
    let looked_up: u64 = cluster
        .running()
        .map(|s| s.node().metrics.kv_writes_refused_unknown_context.get())
        .sum();
    assert_eq!(looked_up, 0);
}

#[actix_rt::test]
async fn a_flood_of_writes_without_a_context_stops_at_the_sibling_limit_and_one_read_resolves_it() {
    let cluster = Cluster::start_with(3, StorageKind::Memory, |c| c.max_siblings = 10).await;
    let http = cluster.running().next().unwrap().http();
    for i in 0..10 {
        assert_eq!(put(http, "flooded", &format!("s{i}")).await.status, 204);
    }
    let refused = put(http, "flooded", "one too many").await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    let body = refused.json();
    assert_eq!(body["max_siblings"], 10);
    assert!(
        body["error"].as_str().unwrap().contains("context"),
        "{body}"
    );
    // Nothing of the refused write was stored.
    let read = get(http, "flooded?r=3").await;
    assert_eq!(read.status, 300);
    assert!(!read.text().contains("one too many"));
    // A write with the read's context supersedes them all.
    let reply = request("PUT", http, "flooded", read.context.as_deref(), "resolved").await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    let read = get(http, "flooded?r=3").await;
    assert_eq!((read.status, read.text()), (200, "resolved".to_string()));
}

#[actix_rt::test]
async fn a_cross_site_form_cannot_make_a_node_leave_or_remove_a_member() {
    let cluster = Cluster::start(2, StorageKind::Memory).await;
    let node = cluster.running().next().unwrap().node();
    let other = cluster.ids()[1].clone();
    for (path, content_type) in [
        (
            "/cluster/leave".to_string(),
            "application/x-www-form-urlencoded",
        ),
        ("/cluster/leave".to_string(), "text/plain"),
        (
            format!("/cluster/remove/{other}"),
            "multipart/form-data; boundary=x",
        ),
    ] {
        let mut response = common::client()
            .post(format!("http://{}{path}", node.http_addr))
            .insert_header(("Content-Type", content_type))
            .send_body("a=1")
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{path} as {content_type}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("application/json"),
            "{body}"
        );
    }
    // Nothing happened: both still list each other alive.
    cluster.wait_until_all_see_all().await;
    let (status, _) = dnd::dev::http_get(node.http_addr, "/ready").unwrap();
    assert_eq!(status, 200);
}

#[actix_rt::test]
async fn ready_answers_once_every_actor_storage_and_the_ring_do() {
    let cluster = Cluster::start(1, StorageKind::Disk).await;
    let node = cluster.running().next().unwrap().node();
    let (status, body) = dnd::dev::http_get(node.http_addr, "/ready").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ready\""), "{body}");
}

/// Sends `head` and `body_part` on a raw connection, then waits for the
/// answer and for the node to close the connection.
fn raw_exchange(http: SocketAddr, head: &str, body_part: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(http).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body_part).unwrap();
    let mut answer = Vec::new();
    // Ends when the node closes; a read timeout would fail the test below.
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[actix_rt::test]
async fn a_slow_or_overdeclared_body_gets_408_and_its_connection_closed_and_nothing_stored() {
    let cluster = Cluster::start_with(1, StorageKind::Memory, |c| {
        c.body_timeout = std::time::Duration::from_millis(300)
    })
    .await;
    let http = cluster.running().next().unwrap().http();
    for declared in [100, 1_000_000] {
        let head =
            format!("PUT /kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n");
        let started = std::time::Instant::now();
        let answer = tokio::task::spawn_blocking(move || raw_exchange(http, &head, b"0123456789"))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("did not arrive"), "{answer}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
    assert_eq!(get(http, "slow?r=1").await.status, 404);
}

#[actix_rt::test]
async fn an_overlong_content_type_is_refused() {
    let cluster = Cluster::start(1, StorageKind::Memory).await;
    let http = cluster.running().next().unwrap().http();
    let mut response = common::client()
        .put(format!("http://{http}/kv/typed"))
        .insert_header(("Content-Type", "t".repeat(300)))
        .send_body("v")
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("256"), "{body}");
    assert_eq!(get(http, "typed?r=1").await.status, 404);
}

/// The same rule as a node's default (a 64 MiB frame), at a size a test
/// can fill quickly.
const MAX_OBJECT_BYTES: usize = 256 * 1024;

#[actix_rt::test]
async fn a_key_whose_versions_would_outgrow_a_replica_message_refuses_the_write() {
    let cluster = Cluster::start_with(1, StorageKind::Memory, |c| {
        c.max_object_bytes = MAX_OBJECT_BYTES
    })
    .await;
    let http = cluster.running().next().unwrap().http();
    let value = "x".repeat(MAX_OBJECT_BYTES / 64 - 64);
    let mut stored = 0;
    let refused = loop {
        let reply = put(http, "big", &value).await;
        if reply.status != 204 {
            break reply;
        }
        stored += 1;
        assert!(stored < 100, "never refused");
    };
    assert_eq!(refused.status, 413, "{}", refused.text());
    assert!(refused.text().contains("context"), "{}", refused.text());
    // Just under the limit, then no more.
    assert!((60..=64).contains(&stored), "{stored} siblings stored");
    // The siblings need not be read: the context is a header.
    let read = common::client()
        .get(format!("http://{http}/kv/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 300);
    let context = read
        .headers()
        .get("x-dnd-context")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    drop(read);
    let reply = request("PUT", http, "big", context.as_deref(), "small").await;
    assert_eq!(reply.status, 204, "{}", reply.text());
}
