//! The Dynamo data path across in-process clusters: placement on N
//! replicas, quorums, sloppy quorum with hints, siblings and contexts,
//! tombstones and read repair. Every wait is a condition with a deadline.

mod common;

use common::cluster::{get, put, request, Cluster, SETTLE};
use common::{client, eventually};
use dnd::config::StorageKind;
use serde_json::Value;

#[actix_rt::test]
async fn a_write_through_any_node_reads_back_through_every_node_and_lives_on_three() {
    let cluster = Cluster::start(5, StorageKind::Memory).await;
    for k in 0..10 {
        let coordinator = cluster.slots[k % 5].http();
        let written = put(coordinator, &format!("key-{k}"), &format!("value-{k}")).await;
        assert_eq!(written.status, 204, "{}", written.text());
        assert!(written.context.is_some(), "a write returns its context");
    }
    for k in 0..10 {
        for slot in &cluster.slots {
            let read = get(slot.http(), &format!("key-{k}")).await;
            assert_eq!(read.status, 200, "key-{k}: {}", read.text());
            assert_eq!(read.text(), format!("value-{k}"));
        }
    }
    for k in 0..10 {
        let key = format!("key-{k}");
        let copies = eventually(SETTLE, "three copies of every key", || async {
            let mut copies = 0;
            for i in 0..5 {
                copies += usize::from(!cluster.local_values(i, &key).await.is_empty());
            }
            (copies == 3).then_some(copies)
        })
        .await;
        assert_eq!(copies, 3, "{key} lives on N=3 nodes, no more");
    }
}

/// The values of a 200 or 300, sorted.
fn values_of(read: &common::cluster::Reply) -> Vec<String> {
    let mut values = match read.status {
        200 => vec![read.text()],
        300 => read.json()["siblings"]
            .as_array()
            .expect("a list of siblings")
            .iter()
            .map(|s| s["value"].as_str().expect("a text value").to_string())
            .collect(),
        _ => Vec::new(),
    };
    values.sort();
    values
}

/// Writes `value` under keys `prefix-0`, `prefix-1`, ... with w=all until
/// one is not among node 0's copies: a key node 0 is not a home replica of.
async fn a_key_written_away_from_node_0(cluster: &Cluster, prefix: &str, value: &str) -> String {
    for k in 0..50 {
        let key = format!("{prefix}-{k}");
        let written = put(cluster.slots[1].http(), &format!("{key}?w=all"), value).await;
        assert_eq!(written.status, 204, "{}", written.text());
        if cluster.local_values(0, &key).await.is_empty() {
            return key;
        }
    }
    panic!("no key of 50 lives away from node 0");
}

#[actix_rt::test]
async fn writes_without_a_context_supersede_nothing_even_through_the_same_node() {
    let cluster = Cluster::start(3, StorageKind::Memory).await;
    let node = cluster.slots[1].http();
    for value in ["one", "two", "three"] {
        assert_eq!(put(node, "counter", value).await.status, 204);
    }
    let read = get(node, "counter?r=all").await;
    assert_eq!(read.status, 300, "{}", read.text());
    assert_eq!(values_of(&read), ["one", "three", "two"]);

    // A client that sends back the context each answer gives replaces.
    let context = read.context.expect("a 300 carries the context");
    let mut written = request("PUT", node, "counter", Some(&context), "four").await;
    for value in ["five", "six"] {
        let context = written.context.expect("a 204 carries the new context");
        written = request("PUT", node, "counter", Some(&context), value).await;
        assert_eq!(written.status, 204, "{}", written.text());
    }
    let read = get(node, "counter?r=all").await;
    assert_eq!((read.status, read.text()), (200, "six".to_string()));
}

#[actix_rt::test]
async fn two_clients_creating_a_key_at_once_both_keep_their_write() {
    let cluster = Cluster::start(3, StorageKind::Memory).await;
    let (a, b) = (cluster.slots[0].http(), cluster.slots[2].http());
    // Each reads first, as the README says, and writes back what it got.
    let (read_a, read_b) = tokio::join!(get(a, "fresh"), get(b, "fresh"));
    for read in [&read_a, &read_b] {
        assert_eq!(read.status, 404, "{}", read.text());
    }
    let context_a = read_a.context.expect("a 404 carries a context");
    let context_b = read_b.context.expect("a 404 carries a context");
    let (put_a, put_b) = tokio::join!(
        request("PUT", a, "fresh", Some(&context_a), "from a"),
        request("PUT", b, "fresh", Some(&context_b), "from b"),
    );
    assert_eq!((put_a.status, put_b.status), (204, 204));
    // Two more that send no context at all, through one node.
    let (put_c, put_d) = tokio::join!(put(a, "blind", "c"), put(a, "blind", "d"));
    assert_eq!((put_c.status, put_d.status), (204, 204));
    for slot in &cluster.slots {
        let read = get(slot.http(), "fresh?r=all").await;
        assert_eq!(values_of(&read), ["from a", "from b"], "{}", read.text());
        let read = get(slot.http(), "blind?r=all").await;
        assert_eq!(values_of(&read), ["c", "d"], "{}", read.text());
    }
}

#[actix_rt::test]
async fn a_delete_without_a_context_removes_what_a_quorum_read_finds_and_overwrite_is_explicit() {
    let cluster = Cluster::start(3, StorageKind::Memory).await;
    let (a, b) = (cluster.slots[0].http(), cluster.slots[1].http());
    assert_eq!(put(a, "pair", "x").await.status, 204);
    assert_eq!(put(b, "pair", "y").await.status, 204);
    assert_eq!(get(a, "pair?r=all").await.status, 300);
    let deleted = request("DELETE", b, "pair", None, "").await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    for slot in &cluster.slots {
        let read = get(slot.http(), "pair?r=all").await;
        assert_eq!(read.status, 404, "both values went: {}", read.text());
    }

    assert_eq!(put(a, "config", "old 1").await.status, 204);
    assert_eq!(put(b, "config", "old 2").await.status, 204);
    let overwritten = put(a, "config?overwrite=true", "new").await;
    assert_eq!(overwritten.status, 204, "{}", overwritten.text());
    let read = get(b, "config?r=all").await;
    assert_eq!((read.status, read.text()), (200, "new".to_string()));

    let context = read.context.expect("context");
    let both = request("PUT", a, "config?overwrite=true", Some(&context), "z").await;
    assert_eq!(
        both.status,
        400,
        "a context and an overwrite: {}",
        both.text()
    );
    let bad = put(a, "config?overwrite=yes", "z").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.json()["error"].as_str().unwrap().contains("overwrite"));
    let read = get(b, "config?r=all").await;
    assert_eq!(read.text(), "new", "refused writes stored nothing");
}

#[actix_rt::test]
async fn a_read_only_stand_ins_answered_is_unavailable_not_a_false_not_found() {
    let cluster = Cluster::start(5, StorageKind::Memory).await;
    let reader = cluster.slots[0].node();
    let key = a_key_written_away_from_node_0(&cluster, "kept", "precious").await;
    let homes: Vec<usize> = {
        let mut homes = Vec::new();
        for i in 1..5 {
            if !cluster.local_values(i, &key).await.is_empty() {
                homes.push(i);
            }
        }
        homes
    };
    assert_eq!(homes.len(), 3);
    for &i in &homes {
        reader
            .replica_client
            .block(cluster.slots[i].node().gossip_addr);
    }
    // Cut off from every home replica, node 0 can ask only stand-ins,
    // which hold nothing: twice, so the second read goes straight to
    // stand-ins as the homes are known unreachable.
    for attempt in 0..2 {
        let read = get(reader.http_addr, &format!("{key}?r=1")).await;
        assert_eq!(read.status, 503, "attempt {attempt}: {}", read.text());
        let body = read.json();
        assert_eq!(body["home_replicas_answered"], 0, "{body}");
        assert!(body["replicas_answered"].as_u64().unwrap() >= 1, "{body}");
        assert!(body["error"].as_str().unwrap().contains("home replica"));
    }
    assert!(reader.metrics.kv_reads_without_home.get() >= 2);

    reader.replica_client.heal();
    let read = eventually(SETTLE, "the key to read again once healed", || async {
        let read = get(reader.http_addr, &format!("{key}?r=1")).await;
        (read.status == 200).then_some(read)
    })
    .await;
    assert_eq!(read.text(), "precious");
}

#[actix_rt::test]
async fn a_request_the_reachable_members_cannot_serve_is_refused_at_once_storing_nothing() {
    let mut cluster = Cluster::start(3, StorageKind::Memory).await;
    let a = cluster.slots[0].http();
    let ids = cluster.ids();
    cluster.stop(1).await;
    cluster.stop(2).await;
    eventually(SETTLE, "node 0 to see the others dead", || async {
        let members = common::members_of(a).await?;
        let dead = members
            .iter()
            .filter(|m| {
                m["state"] == "dead"
                    && m["id"]
                        .as_str()
                        .is_some_and(|id| ids.iter().any(|i| i == id))
            })
            .count();
        (dead == 2).then_some(())
    })
    .await;
    let refused = put(a, "k", "x").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    let body = refused.json();
    assert_eq!(
        (
            body["replicas_needed"].clone(),
            body["replicas_reachable"].clone()
        ),
        (2.into(), 1.into()),
        "{body}"
    );
    assert!(
        cluster.local_values(0, "k").await.is_empty(),
        "nothing stored"
    );
    let read = get(a, "k").await;
    assert_eq!(read.status, 503, "{}", read.text());
    assert_eq!(read.json()["replicas_reachable"], 1);
    assert!(cluster.slots[0].node().metrics.kv_refused_unreachable.get() >= 2);
    // One replica is enough for a request that asks for one.
    assert_eq!(put(a, "k?w=1", "x").await.status, 204);
    assert_eq!(get(a, "k?r=1").await.text(), "x");
}

#[actix_rt::test]
async fn with_one_of_three_replicas_down_quorums_hold_and_its_hints_reach_it_when_it_returns() {
    let mut cluster = Cluster::start(3, StorageKind::Disk).await;
    cluster.stop(2).await;
    let (a, b) = (cluster.slots[0].http(), cluster.slots[1].http());
    for k in 0..20 {
        let written = put(a, &format!("while-away-{k}"), &format!("v{k}")).await;
        assert_eq!(
            written.status,
            204,
            "W=2 with one replica down: {}",
            written.text()
        );
    }
    for k in 0..20 {
        let read = get(b, &format!("while-away-{k}")).await;
        assert_eq!((read.status, read.text()), (200, format!("v{k}")));
    }
    assert!(
        cluster.slots[0].node().metrics.hints_recorded.get() >= 20,
        "the coordinator kept hints for the missing replica"
    );

    cluster.restart(2).await;
    eventually(
        SETTLE,
        "the hinted writes to reach the returned replica",
        || async {
            for k in 0..20 {
                if cluster.local_values(2, &format!("while-away-{k}")).await != [format!("v{k}")] {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    eventually(SETTLE, "delivered hints to be dropped", || async {
        (cluster.slots[0].node().metrics.hints_pending.get() == 0).then_some(())
    })
    .await;

    // Only the returned replica is left: a read of one copy finds them all.
    cluster.stop(0).await;
    cluster.stop(1).await;
    let c = cluster.slots[2].http();
    for k in 0..20 {
        let read = get(c, &format!("while-away-{k}?r=1")).await;
        assert_eq!((read.status, read.text()), (200, format!("v{k}")));
    }
}

#[actix_rt::test]
async fn concurrent_writes_on_two_sides_of_a_partition_become_siblings_and_a_merged_write_resolves_them(
) {
    let cluster = Cluster::start(3, StorageKind::Memory).await;
    let (a, b, c) = (
        cluster.slots[0].node(),
        cluster.slots[1].node(),
        cluster.slots[2].node(),
    );
    a.replica_client.block(b.gossip_addr);
    b.replica_client.block(a.gossip_addr);
    assert_eq!(put(a.http_addr, "cart?w=1", "from a").await.status, 204);
    assert_eq!(put(b.http_addr, "cart?w=1", "from b").await.status, 204);

    let read = get(c.http_addr, "cart?r=all").await;
    assert_eq!(read.status, 300, "both writes survive: {}", read.text());
    let mut values: Vec<String> = read.json()["siblings"]
        .as_array()
        .expect("a list of siblings")
        .iter()
        .map(|s| {
            assert_eq!(s["content_type"], "text/plain");
            s["value"].as_str().unwrap().to_string()
        })
        .collect();
    values.sort();
    assert_eq!(values, ["from a", "from b"]);

    let context = read.context.expect("a 300 carries the context");
    let resolved = request("PUT", c.http_addr, "cart", Some(&context), "merged").await;
    assert_eq!(resolved.status, 204, "{}", resolved.text());
    a.replica_client.heal();
    b.replica_client.heal();
    // a and b set each other aside for a moment after their failed
    // requests: a read that needs every replica waits that out.
    for node in [a, b, c] {
        let read = eventually(SETTLE, "a read of every replica", || async {
            let read = get(node.http_addr, "cart?r=all").await;
            (read.status != 503).then_some(read)
        })
        .await;
        assert_eq!((read.status, read.text()), (200, "merged".to_string()));
    }
}

#[actix_rt::test]
async fn a_write_with_a_stale_context_keeps_the_newer_write_as_a_sibling() {
    let cluster = Cluster::start(3, StorageKind::Memory).await;
    let node = cluster.slots[0].http();
    put(node, "doc", "v1").await;
    let first_read = get(node, "doc").await;
    let stale = first_read.context.expect("context");
    put(node, "doc", "v2 by someone else").await;
    // Written with what was read before v2: v2 is not silently lost.
    request("PUT", node, "doc", Some(&stale), "v2 by me").await;
    let read = get(node, "doc?r=all").await;
    assert_eq!(read.status, 300, "{}", read.text());
    assert_eq!(read.json()["siblings"].as_array().map(Vec::len), Some(2));
}

#[actix_rt::test]
async fn a_deleted_key_stays_deleted_when_a_stale_replica_returns() {
    let mut cluster = Cluster::start(3, StorageKind::Disk).await;
    let a = cluster.slots[0].http();
    assert_eq!(put(a, "gone?w=all", "old value").await.status, 204);
    cluster.stop(2).await;
    let deleted = request("DELETE", a, "gone", None, "").await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert_eq!(get(a, "gone").await.status, 404);

    cluster.restart(2).await;
    let c = cluster.slots[2].http();
    let read = get(c, "gone?r=all").await;
    assert_eq!(
        read.status,
        404,
        "the stale copy does not come back: {}",
        read.text()
    );
    assert!(
        read.context.is_some(),
        "a 404 over a tombstone carries its context"
    );
    eventually(
        SETTLE,
        "the returned replica to hold the tombstone",
        || async {
            cluster
                .local_values(2, "gone")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    for slot in cluster.running() {
        assert_eq!(get(slot.http(), "gone?r=1").await.status, 404);
    }
    // A write after the delete brings the key back, as a new value.
    let again = put(c, "gone", "new value").await;
    assert_eq!(again.status, 204);
    // a may still set node 2 aside after its failed requests while it was
    // down: a read of every replica waits that out.
    let read = eventually(SETTLE, "a read of every replica through a", || async {
        let read = get(a, "gone?r=all").await;
        (read.status != 503).then_some(read)
    })
    .await;
    assert_eq!(read.text(), "new value");
}

#[actix_rt::test]
async fn a_stale_replica_is_repaired_by_a_read() {
    let cluster = Cluster::start(3, StorageKind::Memory).await;
    let (a, c) = (cluster.slots[0].node(), cluster.slots[2].node());
    // The write reaches a and b only.
    a.replica_client.block(c.gossip_addr);
    assert_eq!(put(a.http_addr, "stale", "fresh").await.status, 204);
    a.replica_client.heal();
    assert!(cluster.local_values(2, "stale").await.is_empty());
    let read = get(c.http_addr, "stale?r=all").await;
    assert_eq!((read.status, read.text()), (200, "fresh".to_string()));
    eventually(SETTLE, "read repair to fix the stale replica", || async {
        (cluster.local_values(2, "stale").await == ["fresh"]).then_some(())
    })
    .await;
    assert!(c.metrics.kv_read_repairs.get() >= 1);
}

#[actix_rt::test]
async fn quorums_that_cannot_be_met_say_so_and_bad_requests_are_refused() {
    let mut cluster = Cluster::start(3, StorageKind::Memory).await;
    let a = cluster.slots[0].http();
    assert_eq!(put(a, "k?w=4", "x").await.status, 400, "a quorum above N");
    assert_eq!(put(a, "k?w=most", "x").await.status, 400);
    assert_eq!(get(a, "k?r=0").await.status, 400);
    let forged = request("PUT", a, "k", Some("not*a*context"), "x").await;
    assert_eq!(forged.status, 400, "{}", forged.text());
    assert!(forged.json()["error"]
        .as_str()
        .unwrap()
        .contains("X-Dnd-Context"));
    assert_eq!(
        get(a, "k").await.status,
        404,
        "nothing was written by refused requests"
    );

    cluster.stop(2).await;
    let short = put(a, "k?w=all", "kept anyway").await;
    assert_eq!(short.status, 503, "{}", short.text());
    let body = short.json();
    assert_eq!(body["replicas_needed"], 3);
    assert_eq!(body["replicas_answered"], 2);
    assert_eq!(body["stored_on"].as_array().map(Vec::len), Some(2));
    // Not half-hidden: what was stored is there to read.
    let read = get(a, "k").await;
    assert_eq!((read.status, read.text()), (200, "kept anyway".to_string()));
    let all = get(a, "k?r=all").await;
    assert_eq!(all.status, 503);
    assert_eq!(all.json()["replicas_needed"], 3);
}

#[actix_rt::test]
async fn a_lone_node_replicates_to_itself_and_serves_every_quorum() {
    let cluster = Cluster::start(1, StorageKind::Memory).await;
    let a = cluster.slots[0].http();
    let first = put(a, "solo?w=all", "x").await;
    assert_eq!(first.status, 204);
    let context = first.context.expect("a write returns its context");
    assert_eq!(
        request("PUT", a, "solo?w=3", Some(&context), "y")
            .await
            .status,
        204,
        "3 ≤ N, scaled to one member"
    );
    assert_eq!(get(a, "solo?r=quorum").await.text(), "y");
}

#[actix_rt::test]
async fn the_ring_endpoint_shows_every_node_and_its_share() {
    let cluster = Cluster::start(3, StorageKind::Memory).await;
    let mut response = client()
        .get(format!(
            "http://{}/cluster/ring?tokens=true",
            cluster.slots[0].http()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let ring: Value = response.json().limit(1 << 24).await.unwrap();
    assert_eq!(ring["replicas"], 3);
    assert_eq!(ring["read_quorum"], 2);
    let nodes = ring["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    let total: f64 = nodes
        .iter()
        .map(|n| n["primary_share"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
    for node in nodes {
        assert_eq!(node["state"], "alive");
        assert_eq!(node["ranges"].as_array().unwrap().len(), 1024);
    }
}

#[actix_rt::test]
async fn clocks_stay_bounded_by_the_keys_home_replicas() {
    let cluster = Cluster::start(5, StorageKind::Memory).await;
    let mut context: Option<String> = None;
    for round in 0..40 {
        let coordinator = cluster.slots[round % 5].http();
        let written = request(
            "PUT",
            coordinator,
            "hot",
            context.as_deref(),
            &format!("v{round}"),
        )
        .await;
        assert_eq!(written.status, 204, "{}", written.text());
        context = written.context;
    }
    let read = get(cluster.slots[0].http(), "hot?r=all").await;
    assert_eq!((read.status, read.text()), (200, "v39".to_string()));
    let context = dnd::version::VersionVector::from_context(&read.context.unwrap()).unwrap();
    assert!(
        (1..=3).contains(&context.len()),
        "only the key's home replicas coordinate its writes: {} entries",
        context.len()
    );
}

#[actix_rt::test]
async fn a_node_that_reaches_no_home_replica_of_a_key_refuses_the_write_and_versions_nothing() {
    let cluster = Cluster::start(5, StorageKind::Memory).await;
    let outsider = cluster.slots[0].node();
    let key = a_key_written_away_from_node_0(&cluster, "elsewhere", "before").await;
    for slot in &cluster.slots[1..] {
        outsider.replica_client.block(slot.node().gossip_addr);
    }

    let refused = put(outsider.http_addr, &key, "after").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    let body = refused.json();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing was stored"),
        "{body}"
    );
    assert!(
        cluster.local_values(0, &key).await.is_empty(),
        "node 0 versioned nothing and kept no copy"
    );

    outsider.replica_client.heal();
    let read = get(cluster.slots[2].http(), &format!("{key}?r=all")).await;
    assert_eq!((read.status, read.text()), (200, "before".to_string()));
}

#[actix_rt::test]
async fn explain_shows_each_replicas_answer_the_quorum_and_the_repair_it_caused() {
    let cluster = Cluster::start(3, StorageKind::Memory).await;
    let (a, b, c) = (
        cluster.slots[0].node(),
        cluster.slots[1].node(),
        cluster.slots[2].node(),
    );
    let id = |node: &dnd::node::Node| node.id.to_string();
    // The write reaches a and b only: c's copy stays behind.
    a.replica_client.block(c.gossip_addr);
    let written = put(a.http_addr, "why?explain=true&w=2", "fresh").await;
    assert_eq!(written.status, 200, "{}", written.text());
    let write = &written.json()["explain"];
    assert_eq!(write["operation"], "write");
    assert_eq!(write["coordinator"], id(a));
    assert_eq!(
        (write["needed"].as_u64(), write["quorum_met"].as_bool()),
        (Some(2), Some(true))
    );
    let roles: Vec<&str> = write["preference_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["home", "home", "home"]);
    let outcome_of = |explain: &Value, node: String| {
        explain["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == node.as_str())
            .map(|r| r["outcome"].as_str().unwrap().to_string())
    };
    assert_eq!(outcome_of(write, id(a)).as_deref(), Some("stored"));
    assert_eq!(outcome_of(write, id(b)).as_deref(), Some("stored"));
    assert_eq!(
        outcome_of(write, id(c)).as_deref(),
        Some("failed"),
        "{write:#}"
    );
    assert!(written.json()["context"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    a.replica_client.heal();

    // A read through c with R=3: every copy with its version vector, and
    // the repair of c's, in a header beside the value.
    let mut answer = client()
        .get(format!("http://{}/kv/why?r=all&explain=true", c.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(&answer.body().await.unwrap()[..], b"fresh");
    let header = answer
        .headers()
        .get("x-dnd-explain")
        .expect("the explanation of a value is a header")
        .to_str()
        .unwrap()
        .to_string();
    let read: Value = serde_json::from_str(&header).unwrap();
    assert_eq!(
        (read["operation"].as_str(), read["quorum_met"].as_bool()),
        (Some("read"), Some(true))
    );
    let replicas = read["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 3, "{read:#}");
    for replica in replicas {
        let entries = replica["version_vector"].as_object().map(|v| v.len());
        let behind = replica["node"] == id(c).as_str();
        assert_eq!(entries, Some(usize::from(!behind)), "{replica}");
        assert!(replica["latency_ms"].as_f64().is_some());
    }
    assert_eq!(read["read_repairs"], serde_json::json!([id(c)]));

    // Not found: the explanation goes into the JSON body.
    let missing = get(a.http_addr, "nothing-here?explain=true").await;
    assert_eq!(missing.status, 404);
    let asked = missing.json()["explain"]["replicas"]
        .as_array()
        .map(Vec::len);
    assert!(
        asked >= Some(2),
        "at least R replicas answered: {}",
        missing.text()
    );
    assert_eq!(missing.json()["error"], "key not found");
    let refused = get(a.http_addr, "why?explain=maybe").await;
    assert_eq!(refused.status, 400, "{}", refused.text());
}
