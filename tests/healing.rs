//! The cluster heals itself: anti-entropy repairs a replica that missed
//! writes and deletes, a joining node receives its share while every key
//! stays readable, a removed node's keys are copied back to N replicas, a
//! leaving node hands its keys over, and tombstones are collected only once
//! every replica holds them. Every wait is a condition with a deadline.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{get, put, request, Cluster};
use common::{client, eventually};
use dnd::config::StorageKind;
use dnd::key::Key;
use dnd::peer::{PeerClient, PeerConfig};
use dnd::replica::{ReplicaReply, ReplicaRequest};
use dnd::version::Object;
use futures_util::stream::{self, StreamExt};
use serde_json::Value;

const HEAL: Duration = Duration::from_secs(60);

/// Sends `requests` (method, path, body) to `http` with a few in flight,
/// asserting each got `expect`.
async fn load(
    http: std::net::SocketAddr,
    requests: Vec<(&'static str, String, String)>,
    expect: u16,
) {
    stream::iter(requests)
        .map(|(method, path, body)| async move {
            let reply = request(method, http, &path, None, &body).await;
            assert_eq!(reply.status, expect, "{method} {path}: {}", reply.text());
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// How many running nodes hold a copy (value or tombstone) of `key`.
async fn copies(cluster: &Cluster, key: &str) -> usize {
    let mut count = 0;
    for i in 0..cluster.slots.len() {
        if cluster.slots[i].node.is_some() && !cluster.local_copy(i, key).await.is_empty() {
            count += 1;
        }
    }
    count
}

async fn handoff_idle(cluster: &Cluster, nodes: usize) -> bool {
    for slot in cluster.running() {
        let Ok(mut response) = client()
            .get(format!("http://{}/cluster/handoff", slot.http()))
            .send()
            .await
        else {
            return false;
        };
        let Ok(view) = response.json::<Value>().await else {
            return false;
        };
        let done = view["running"].is_null()
            && view["last"]["state"] == "done"
            && view["last"]["to_nodes"] == nodes;
        if !done {
            return false;
        }
    }
    true
}

#[actix_rt::test]
async fn a_replica_that_missed_10000_writes_and_1000_deletes_matches_the_others_after_anti_entropy()
{
    let mut cluster = Cluster::start_with(3, StorageKind::Disk, |c| {
        c.hinted_handoff = false;
        c.anti_entropy_interval = Duration::from_millis(200);
    })
    .await;
    let a = cluster.slots[0].http();
    // Some keys exist before the outage, some of them deleted during it.
    let before: Vec<_> = (0..1000)
        .map(|k| ("PUT", format!("old-{k}?w=all"), format!("old {k}")))
        .collect();
    load(a, before, 204).await;
    cluster.stop(2).await;
    let writes: Vec<_> = (0..10_000)
        .map(|k| ("PUT", format!("new-{k}"), format!("new {k}")))
        .collect();
    load(a, writes, 204).await;
    let deletes: Vec<_> = (0..1000)
        .map(|k| ("DELETE", format!("old-{k}"), String::new()))
        .collect();
    load(a, deletes, 204).await;
    assert_eq!(
        cluster.slots[0].node().metrics.hints_recorded.get(),
        0,
        "hints are off"
    );

    cluster.restart(2).await;
    let started = Instant::now();
    // Every key, exactly: anti-entropy works bucket by bucket, so one key
    // matching says nothing of the next.
    eventually(HEAL, "the returned replica to match the others", || async {
        for k in 0..10_000 {
            let key = format!("new-{k}");
            if cluster.local_copy(2, &key).await.dots() != cluster.local_copy(0, &key).await.dots()
            {
                return None;
            }
        }
        for k in 0..1000 {
            let key = format!("old-{k}");
            if cluster.local_copy(2, &key).await.dots() != cluster.local_copy(0, &key).await.dots()
            {
                return None;
            }
        }
        Some(())
    })
    .await;
    for k in 0..1000 {
        let key = format!("old-{k}");
        let (here, there) = (
            cluster.local_copy(2, &key).await,
            cluster.local_copy(0, &key).await,
        );
        assert_eq!(here.dots(), there.dots(), "{key}");
        assert_eq!(
            here.values().count(),
            0,
            "{key} stays deleted on the returned replica"
        );
    }
    let repaired = cluster.slots[2]
        .node()
        .metrics
        .anti_entropy_keys_repaired
        .get()
        + cluster.slots[0]
            .node()
            .metrics
            .anti_entropy_keys_repaired
            .get()
        + cluster.slots[1]
            .node()
            .metrics
            .anti_entropy_keys_repaired
            .get();
    assert!(repaired >= 11_000, "anti-entropy repaired {repaired} keys");
    // Deleted keys stay deleted through every node, reading one copy.
    cluster.stop(0).await;
    cluster.stop(1).await;
    let c = cluster.slots[2].http();
    for k in (0..1000).step_by(50) {
        assert_eq!(get(c, &format!("old-{k}?r=1")).await.status, 404);
    }
    eprintln!("anti-entropy converged in {:?}", started.elapsed());
}

#[actix_rt::test]
async fn a_sixth_node_takes_its_share_while_every_key_stays_readable() {
    let mut cluster = Cluster::start(5, StorageKind::Memory).await;
    let keys = 3000;
    let writes: Vec<_> = (0..keys)
        .map(|k| ("PUT", format!("k{k}?w=all"), format!("v{k}")))
        .collect();
    load(cluster.slots[0].http(), writes, 204).await;
    load(
        cluster.slots[1].http(),
        (0..300)
            .map(|k| ("DELETE", format!("k{k}"), String::new()))
            .collect(),
        204,
    )
    .await;

    // A reader through every old node, all through the move.
    let readers: Vec<_> = cluster.running().map(|s| s.http()).collect();
    let stop = std::rc::Rc::new(std::cell::Cell::new(false));
    let done_reads = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let reading = {
        let (stop, done_reads) = (stop.clone(), done_reads.clone());
        actix_rt::spawn(async move {
            let (mut reads, mut k) = (0usize, 0usize);
            while !stop.get() {
                let node = readers[reads % readers.len()];
                let key = k % keys;
                let reply = get(node, &format!("k{key}")).await;
                let expected = if key < 300 { 404 } else { 200 };
                assert_eq!(
                    reply.status,
                    expected,
                    "k{key} during the move: {}",
                    reply.text()
                );
                reads += 1;
                done_reads.set(reads);
                k += 37;
            }
            reads
        })
    };
    eventually(HEAL, "the reader to be under way", || async {
        (done_reads.get() >= 20).then_some(())
    })
    .await;
    let before_join = done_reads.get();
    let newcomer = cluster.add_node().await;
    cluster.wait_until_all_see_all().await;
    eventually(HEAL, "every node to finish handing over to six", || async {
        handoff_idle(&cluster, 6).await.then_some(())
    })
    .await;
    stop.set(true);
    let reads = reading.await.expect("the reader never saw a key missing");
    assert!(
        reads > before_join,
        "the reader kept reading through the move ({reads} reads)"
    );

    let mut held = 0;
    for k in 0..keys {
        held += usize::from(
            !cluster
                .local_copy(newcomer, &format!("k{k}"))
                .await
                .is_empty(),
        );
    }
    // Its share: N/6 of the keys' copies, about half the keys.
    let share = held as f64 / keys as f64;
    assert!(
        (0.4..0.6).contains(&share),
        "the newcomer holds {held} of {keys} keys"
    );
    eventually(HEAL, "exactly three copies of every key", || async {
        for k in (0..keys).step_by(7) {
            if copies(&cluster, &format!("k{k}")).await != 3 {
                return None;
            }
        }
        Some(())
    })
    .await;
    for k in (0..300).step_by(10) {
        assert_eq!(
            get(cluster.slots[newcomer].http(), &format!("k{k}?r=all"))
                .await
                .status,
            404
        );
    }
}

#[actix_rt::test]
async fn after_a_dead_node_is_removed_every_key_has_three_copies_again() {
    let mut cluster = Cluster::start(5, StorageKind::Memory).await;
    let keys = 1000;
    let writes: Vec<_> = (0..keys)
        .map(|k| ("PUT", format!("k{k}?w=all"), format!("v{k}")))
        .collect();
    load(cluster.slots[0].http(), writes, 204).await;
    let gone = cluster.slots[4].node().id.to_string();
    let a = cluster.slots[0].http();

    let post = |path: String| async move {
        let mut response = client()
            .post(format!("http://{a}{path}"))
            .insert_header(("Content-Type", "application/json"))
            .send_body("{}")
            .await
            .expect("the node answers");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (response.status().as_u16(), body)
    };
    assert_eq!(
        post(format!("/cluster/remove/{gone}")).await.0,
        409,
        "alive nodes are not removed"
    );
    assert_eq!(post("/cluster/remove/not-an-id".into()).await.0, 400);
    assert_eq!(post("/cluster/remove/00000000000000ff".into()).await.0, 404);

    cluster.stop(4).await;
    eventually(HEAL, "the stopped node to be declared dead", || async {
        let members = common::members_of(a).await?;
        members
            .iter()
            .any(|m| m["id"] == gone.as_str() && m["state"] == "dead")
            .then_some(())
    })
    .await;
    let (status, body) = post(format!("/cluster/remove/{gone}")).await;
    assert_eq!(status, 202, "{body}");
    eventually(HEAL, "every key back to three copies", || async {
        for k in 0..keys {
            if copies(&cluster, &format!("k{k}")).await != 3 {
                return None;
            }
        }
        Some(())
    })
    .await;
    for slot in cluster.running() {
        let ring: Value = client()
            .get(format!("http://{}/cluster/ring", slot.http()))
            .send()
            .await
            .unwrap()
            .json()
            .limit(1 << 20)
            .await
            .unwrap();
        assert_eq!(ring["nodes"].as_array().map(Vec::len), Some(4));
    }
}

#[actix_rt::test]
async fn a_leaving_node_hands_its_keys_over_first() {
    let mut cluster = Cluster::start(4, StorageKind::Memory).await;
    let keys = 600;
    let writes: Vec<_> = (0..keys)
        .map(|k| ("PUT", format!("k{k}?w=all"), format!("v{k}")))
        .collect();
    load(cluster.slots[0].http(), writes, 204).await;
    let leaving = cluster.slots[3].node.take().unwrap();
    leaving.leave(Duration::from_millis(200)).await;
    leaving.stop().await;
    // With three nodes left, each holds every key: no read repair or
    // anti-entropy was needed to get there.
    for k in 0..keys {
        assert_eq!(copies(&cluster, &format!("k{k}")).await, 3, "k{k}");
    }
}

#[actix_rt::test]
async fn tombstones_are_collected_only_once_every_replica_holds_them() {
    let mut cluster = Cluster::start_with(3, StorageKind::Disk, |c| {
        c.anti_entropy_interval = Duration::from_millis(100);
        c.tombstone_grace = Duration::ZERO;
        c.hinted_handoff = false;
    })
    .await;
    let a = cluster.slots[0].http();
    for k in 0..20 {
        assert_eq!(put(a, &format!("k{k}?w=all"), "v").await.status, 204);
    }
    cluster.stop(2).await;
    for k in 0..20 {
        assert_eq!(
            request("DELETE", a, &format!("k{k}"), None, "")
                .await
                .status,
            204
        );
    }
    // While a replica is away, every look finds the tombstones kept.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(2) {
        for i in [0, 1] {
            let copy = cluster.local_copy(i, "k7").await;
            assert!(
                !copy.is_empty() && copy.values().count() == 0,
                "the tombstone is kept"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.restart(2).await;
    eventually(
        HEAL,
        "the tombstones to be collected everywhere",
        || async {
            for i in 0..3 {
                for k in 0..20 {
                    if !cluster.local_copy(i, &format!("k{k}")).await.is_empty() {
                        return None;
                    }
                }
            }
            Some(())
        },
    )
    .await;
    let purged: u64 = cluster
        .running()
        .map(|s| s.node().metrics.tombstones_purged.get())
        .sum();
    // Each of the 20 tombstones once on each of the 3 replicas: a replica
    // that purged one a moment before another is not handed it back by
    // that other's anti-entropy (it used to be, and collected it again).
    assert_eq!(purged, 60, "20 tombstones on 3 replicas");
    // The stale value the returned replica had never comes back.
    for slot in cluster.running() {
        assert_eq!(get(slot.http(), "k7?r=all").await.status, 404);
    }
}

/// An expired value is collected like a tombstone: once its deadline and
/// the grace have passed and every replica holds it, no replica keeps it.
#[actix_rt::test]
async fn expired_values_are_collected_like_tombstones() {
    let cluster = Cluster::start_with(3, StorageKind::Memory, |c| {
        c.anti_entropy_interval = Duration::from_millis(100);
        c.tombstone_grace = Duration::ZERO;
    })
    .await;
    let a = cluster.slots[0].http();
    for k in 0..10 {
        assert_eq!(
            put(a, &format!("brief{k}?ttl=5&w=all"), "v").await.status,
            204
        );
    }
    assert_eq!(put(a, "kept?w=all", "v").await.status, 204);
    // Seconds to spare before the deadline, so a busy machine still sees
    // every copy first.
    assert_eq!(copies(&cluster, "brief3").await, 3);
    eventually(
        HEAL,
        "the expired values to be collected everywhere",
        || async {
            for k in 0..10 {
                if copies(&cluster, &format!("brief{k}")).await > 0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    assert_eq!(
        copies(&cluster, "kept").await,
        3,
        "a value without a TTL stays"
    );
    for slot in cluster.running() {
        assert_eq!(get(slot.http(), "brief3?r=all").await.status, 404);
    }
}

#[actix_rt::test]
async fn a_peer_that_lies_or_sends_garbage_changes_nothing() {
    let cluster = Cluster::start(1, StorageKind::Memory).await;
    let node = cluster.slots[0].node();
    // The liar speaks as a member (the node's own id, the only one), so
    // that what it asks reaches the checks past membership and role.
    let liar = PeerConfig {
        node_id: node.id,
        ..PeerConfig::new("dnd")
    };
    let peer: PeerClient<ReplicaRequest, ReplicaReply> =
        PeerClient::new(liar, node.metrics.clone());
    let ask = |request: ReplicaRequest| {
        let peer = peer.clone();
        let addr = node.gossip_addr;
        async move { peer.request(addr, &request).await.expect("an answer") }
    };
    let stranger = node.id;
    // Branches out of range are ignored; buckets out of range are refused.
    match ask(ReplicaRequest::TreeLeaves {
        pair: stranger,
        branches: vec![9_999, 3],
    })
    .await
    {
        ReplicaReply::Leaves(leaves) => assert_eq!(leaves.len(), 1),
        other => panic!("{other:?}"),
    }
    let malformed = ReplicaRequest::ExchangeBuckets {
        pair: stranger,
        buckets: vec![dnd::merkle::BucketEntries {
            bucket: 60_000,
            entries: vec![],
        }],
    };
    assert!(matches!(ask(malformed).await, ReplicaReply::Refused(_)));
    let flood = ReplicaRequest::WriteBatch {
        objects: (0..5000)
            .map(|k| (Key::new(format!("k{k}")).unwrap(), Object::new()))
            .collect(),
    };
    assert!(matches!(ask(flood).await, ReplicaReply::Refused(_)));
    // Keys it asks this node to want, but this node shares none with a
    // stranger: nothing is wanted, nothing is taken.
    let lie = ReplicaRequest::ExchangeBuckets {
        pair: stranger,
        buckets: vec![dnd::merkle::BucketEntries {
            bucket: dnd::merkle::bucket_of("planted"),
            entries: vec![(Key::new("planted").unwrap(), 7)],
        }],
    };
    match ask(lie).await {
        ReplicaReply::Exchange { objects, wanted } => {
            assert!(objects.is_empty() && wanted.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // A batch from a member is merged (a key no peer may send, empty or too
    // long, does not even decode: see `replica`'s tests).
    let mut value = Object::new();
    value
        .write(
            stranger,
            &Default::default(),
            dnd::version::Payload::Value {
                content_type: "text/plain".into(),
                bytes: b"x".to_vec(),
                expires_at_ms: None,
            },
        )
        .unwrap();
    let batch = ReplicaRequest::WriteBatch {
        objects: vec![(Key::new("fine").unwrap(), value)],
    };
    match ask(batch).await {
        ReplicaReply::StoredBatch { stored, refused } => assert_eq!((stored, refused), (1, 0)),
        other => panic!("{other:?}"),
    }
    let read = get(cluster.slots[0].http(), "fine").await;
    assert_eq!((read.status, read.text()), (200, "x".to_string()));
    let status: BTreeMap<String, Value> = client()
        .get(format!("http://{}/health", cluster.slots[0].http()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "ok", "the node keeps serving");
}

#[actix_rt::test]
async fn a_replica_that_purged_a_tombstone_first_is_not_handed_it_back() {
    // Collection never starts by itself here; the test plays the first home
    // replica and tells one replica alone to purge, as happens for a moment
    // while the purge requests go out one by one.
    let cluster = Cluster::start_with(3, StorageKind::Memory, |c| {
        c.anti_entropy_interval = Duration::from_millis(50);
        c.tombstone_grace = Duration::from_secs(3600);
    })
    .await;
    let a = cluster.slots[0].http();
    assert_eq!(put(a, "gone?w=all", "v").await.status, 204);
    assert_eq!(
        request("DELETE", a, "gone?w=all", None, "").await.status,
        204
    );
    let tombstone = cluster.local_copy(0, "gone").await;
    assert!(!tombstone.is_empty() && tombstone.values().next().is_none());
    let ring = cluster.slots[0]
        .node()
        .membership
        .send(dnd::actors::membership::GetRing)
        .await
        .unwrap();
    let home = ring.ring.preference_list(b"gone", 3);
    let (first, purging) = (home[0], home[1]);
    let index_of = |id| {
        cluster
            .running()
            .position(|s| s.node().id == id)
            .expect("a running node")
    };
    let purging_index = index_of(purging);
    let as_first = PeerClient::<ReplicaRequest, ReplicaReply>::new(
        PeerConfig {
            node_id: first,
            ..PeerConfig::new(dnd::config::DEFAULT_CLUSTER_NAME)
        },
        std::sync::Arc::new(dnd::metrics::Metrics::default()),
    );
    let answer = as_first
        .request(
            cluster.slots[purging_index].node().gossip_addr,
            &ReplicaRequest::Purge {
                key: Key::new("gone").unwrap(),
                dots: tombstone.dots().into_iter().collect(),
            },
        )
        .await
        .unwrap();
    assert!(matches!(answer, ReplicaReply::Stored), "{answer:?}");
    let purger = cluster.slots[purging_index].node();
    assert_eq!(purger.metrics.tombstones_purged.get(), 1);
    // The two others still hold the tombstone and keep offering it through
    // anti-entropy; the purger refuses it every time and stays empty.
    eventually(HEAL, "anti-entropy to offer the tombstone back", || async {
        let offered = purger.metrics.tombstones_refused_after_purge.get() >= 2;
        let taken_back = !cluster.local_copy(purging_index, "gone").await.is_empty();
        (offered || taken_back).then_some(())
    })
    .await;
    assert!(
        cluster.local_copy(purging_index, "gone").await.is_empty(),
        "the purged tombstone came back"
    );
    assert_eq!(
        purger.metrics.tombstones_purged.get(),
        1,
        "never collected twice"
    );
    // The key stays deleted through every node.
    for slot in cluster.running() {
        assert_eq!(get(slot.http(), "gone?r=all").await.status, 404);
    }
}

/// `/cluster/status` from one node: every member with what it holds, and
/// a verdict that turns when a member stops and hints pile up for it.
#[actix_rt::test]
async fn the_status_shows_every_node_and_says_why_the_cluster_is_unhealthy() {
    let mut cluster = Cluster::start(3, StorageKind::Memory).await;
    cluster.wait_until_all_see_all().await;
    for i in 0..30 {
        assert_eq!(
            put(cluster.slots[0].http(), &format!("s{i}"), "v")
                .await
                .status,
            204
        );
    }
    let status_of = |http| async move {
        let mut reply = client()
            .get(format!("http://{http}/cluster/status"))
            .send()
            .await
            .ok()?;
        let body: Value = reply.json().await.ok()?;
        Some(body)
    };
    let http0 = cluster.slots[0].http();
    let healthy = eventually(HEAL, "a healthy status", || async {
        let body = status_of(http0).await?;
        (body["healthy"] == true).then_some(body)
    })
    .await;
    let nodes = healthy["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{healthy}");
    assert_eq!(healthy["problems"], serde_json::json!([]));
    let shares: f64 = nodes
        .iter()
        .map(|n| n["ring_share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-6, "shares add up to {shares}");
    for node in nodes {
        assert_eq!(node["state"], "alive", "{node}");
        // N = 3 on three nodes: every node holds every key.
        assert_eq!(node["stats"]["keys"], 30, "{node}");
        assert!(node["stats"]["bytes"].as_u64().unwrap() > 30 * 2, "{node}");
        assert_eq!(node["stats"]["hints_pending"], 0, "{node}");
    }

    let stopped = cluster.ids()[2].clone();
    cluster.stop(2).await;
    // Writes go on; the stand-ins keep hints for the stopped node.
    for i in 0..10 {
        put(http0, &format!("t{i}"), "v").await;
    }
    let unhealthy = eventually(HEAL, "a status naming the stopped node", || async {
        let body = status_of(http0).await?;
        let problems = body["problems"].as_array()?.clone();
        (body["healthy"] == false
            && problems
                .iter()
                .any(|p| p.as_str().is_some_and(|p| p.contains(&stopped))))
        .then_some(body)
    })
    .await;
    let gone = unhealthy["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == stopped.as_str())
        .expect("the stopped node is still listed");
    assert!(gone["stats"].is_null(), "{gone}");
    assert!(gone["stats_error"].is_string(), "{gone}");
}
