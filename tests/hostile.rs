//! Attacks on a cluster with a secret, by someone on the same network and by
//! a member acting outside its role, each checked to change nothing: a node
//! without the secret (or with another) cannot join and is never listed;
//! forged, replayed and bit-flipped datagrams are dropped and counted and
//! evict no one, whatever incarnation they claim; a stranger's TCP
//! connection to the peer port gets no byte back and changes no key; a
//! member's requests outside its role are refused; a node with other
//! placement settings is refused with a clear line on both sides; a key
//! rotation under load loses no write and marks no member dead; and a
//! value written through the cluster never crosses the wire in clear.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{get, put, Cluster};
use common::{client, eventually, eventually_blocking, free_port, DndProcess};
use dnd::config::StorageKind;
use dnd::dev::metric;
use dnd::keyring::{ClusterKey, Keyring};
use dnd::member::{Member, MemberState, Rumor};
use dnd::metrics::Metrics;
use dnd::node_id::NodeId;
use dnd::peer::frame::{self, Hello, Introduction};
use dnd::peer::{PeerClient, PeerConfig};
use dnd::replica::{ReplicaReply, ReplicaRequest};
use dnd::version::{Dot, Object, Payload, VersionVector};
use dnd::wire::{Codec, Datagram, GossipMessage};
use serde_json::Value;

const CLUSTER: &str = "dnd";
const FAST: &[&str] = &["--protocol-period-ms", "200", "--storage", "memory"];

fn write_secret(dir: &Path, key: &ClusterKey) -> String {
    let path = dir.join("secret");
    std::fs::write(&path, key.to_base64()).unwrap();
    path.display().to_string()
}

/// A process started with `secret` (if any) and `args` after the fast
/// timings.
fn spawn(dir: &Path, secret: Option<&str>, args: &[&str]) -> DndProcess {
    let mut all: Vec<&str> = FAST.to_vec();
    if let Some(secret) = secret {
        all.extend(["--cluster-secret-file", secret]);
    }
    all.extend(args);
    DndProcess::spawn(dir, &all)
}

fn members(node: &DndProcess) -> Option<Vec<dnd::dev::MemberRow>> {
    dnd::dev::members(node.http_addr())
}

fn alive_ids(node: &DndProcess) -> Option<Vec<String>> {
    let mut ids: Vec<String> = dnd::dev::members(node.http_addr())?
        .into_iter()
        .filter(|m| m.state == "alive")
        .map(|m| m.id)
        .collect();
    ids.sort();
    Some(ids)
}

fn node_id(node: &DndProcess) -> Option<String> {
    dnd::dev::node_id(node.http_addr())
}

/// Two secured nodes that list each other alive, and the secret's file.
struct SecuredPair {
    _dir: tempfile::TempDir,
    key: ClusterKey,
    a: DndProcess,
    b: DndProcess,
    ids: Vec<String>,
}

fn secured_pair() -> SecuredPair {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::generate();
    let secret = write_secret(dir.path(), &key);
    let a = spawn(&dir.path().join("a"), Some(&secret), &["start"]);
    let seed = a.gossip_addr();
    let b = spawn(&dir.path().join("b"), Some(&secret), &["join", &seed]);
    let ids = eventually_blocking(Duration::from_secs(20), "both nodes up", || {
        let mut ids = vec![node_id(&a)?, node_id(&b)?];
        ids.sort();
        (alive_ids(&a)? == ids && alive_ids(&b)? == ids).then_some(ids)
    });
    SecuredPair {
        _dir: dir,
        key,
        a,
        b,
        ids,
    }
}

/// Waits for the process to exit, and says whether it failed.
fn exits_with_failure(process: &mut DndProcess, within: Duration) -> bool {
    eventually_blocking(within, "the process to exit", || {
        process.child.try_wait().ok().flatten()
    })
    .code()
        != Some(0)
}

#[test]
fn a_node_without_the_secret_or_with_another_cannot_join_and_is_never_listed() {
    let pair = secured_pair();
    let dir = tempfile::tempdir().unwrap();
    let other = write_secret(dir.path(), &ClusterKey::generate());
    let seed = pair.a.gossip_addr();
    let join = ["--join-timeout-ms", "3000", "join", seed.as_str()];
    let mut open = spawn(&dir.path().join("open"), None, &join);
    let mut stranger = spawn(&dir.path().join("stranger"), Some(&other), &join);
    assert!(exits_with_failure(&mut open, Duration::from_secs(20)));
    assert!(exits_with_failure(&mut stranger, Duration::from_secs(20)));
    for node in [&pair.a, &pair.b] {
        let listed: Vec<String> = members(node).unwrap().into_iter().map(|m| m.id).collect();
        let mut listed = listed;
        listed.sort();
        assert_eq!(listed, pair.ids, "only the two members are listed");
    }
    let dropped = metric(
        pair.a.http_addr(),
        "dnd_gossip_datagrams_dropped_total{reason=\"unauthenticated\"}",
    )
    .unwrap();
    assert!(dropped >= 2, "the strangers' joins were counted: {dropped}");
}

fn member_record(id: &str, addr: &str, state: MemberState, incarnation: u64) -> Member {
    let addr: SocketAddr = addr.parse().unwrap();
    Member {
        id: id.parse().unwrap(),
        gossip_addr: addr,
        http_addr: addr,
        state,
        incarnation,
    }
}

#[test]
fn forged_and_bit_flipped_datagrams_are_dropped_and_counted_and_evict_no_one() {
    let pair = secured_pair();
    let victim = pair
        .ids
        .iter()
        .find(|id| **id != node_id(&pair.a).unwrap())
        .unwrap()
        .clone();
    let victim_incarnation = members(&pair.a)
        .unwrap()
        .into_iter()
        .find(|m| m.id == victim)
        .unwrap()
        .incarnation;
    let target: SocketAddr = pair.a.gossip_addr().parse().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = Codec::sealed(CLUSTER, 1400, Keyring::new(ClusterKey::generate()));
    let plain = Codec::new(CLUSTER, 1400);
    // A datagram the cluster's own key sealed, as a member would send it;
    // every one of its copies below has a bit flipped.
    let member_codec = Codec::sealed(CLUSTER, 1400, Keyring::new(pair.key.clone()));
    let mut sent = 0;
    for incarnation in [0, victim_incarnation + 1, u64::MAX] {
        for state in [MemberState::Left, MemberState::Dead] {
            let forged = Datagram {
                sender: NodeId::from_u64(7),
                message: GossipMessage::Gossip {
                    rumors: vec![Rumor::about(member_record(
                        &victim,
                        &pair.b.gossip_addr(),
                        state,
                        incarnation,
                    ))],
                },
            };
            for bytes in [
                plain.encode(&forged).unwrap(),
                stranger.encode(&forged).unwrap(),
            ] {
                socket.send_to(&bytes, target).unwrap();
                sent += 1;
            }
            let genuine = member_codec.encode(&forged).unwrap();
            for at in [0, 3, 10, 30, genuine.len() - 1] {
                let mut flipped = genuine.clone();
                flipped[at] ^= 0x04;
                socket.send_to(&flipped, target).unwrap();
                sent += 1;
            }
        }
    }
    let refused = eventually_blocking(Duration::from_secs(10), "every forgery counted", || {
        let counts = dnd::dev::metrics(
            pair.a.http_addr(),
            &[
                "dnd_gossip_datagrams_dropped_total{reason=\"unauthenticated\"}",
                "dnd_gossip_datagrams_dropped_total{reason=\"wrong_version\"}",
            ],
        )?;
        let total: u64 = counts.into_iter().map(|c| c.unwrap_or(0)).sum();
        (total >= sent).then_some(total)
    });
    assert_eq!(refused, sent, "each forgery counted once");
    // And for a few suspicion periods nothing changes.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(alive_ids(&pair.a).unwrap(), pair.ids);
        assert_eq!(alive_ids(&pair.b).unwrap(), pair.ids);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads from a raw connection until it closes; the bytes it sent.
fn drain(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn a_strangers_tcp_connection_gets_no_byte_back_and_changes_no_key() {
    let pair = secured_pair();
    let (status, _) = dnd::dev::request(
        pair.a.http_addr(),
        "PUT",
        "/kv/guarded?overwrite=true",
        &[],
        b"original",
        Duration::from_secs(5),
    )
    .map(|r| (r.status, ()))
    .unwrap();
    assert_eq!(status, 204);
    let peer: SocketAddr = pair.a.gossip_addr().parse().unwrap();
    let hello = frame::encode_frame(&Hello::new(CLUSTER), frame::MAX_HELLO_BYTES).unwrap();
    let introduction = frame::encode_frame(
        &Introduction {
            node_id: NodeId::from_u64(1),
        },
        frame::MAX_HELLO_BYTES,
    )
    .unwrap();
    let read = frame::encode_request(
        1,
        &ReplicaRequest::Read {
            key: dnd::key::Key::new("guarded").unwrap(),
        },
        1 << 20,
    )
    .unwrap();
    let purge = frame::encode_request(
        2,
        &ReplicaRequest::Purge {
            key: dnd::key::Key::new("guarded").unwrap(),
            dots: vec![],
        },
        1 << 20,
    )
    .unwrap();
    let mut noise =
        dnd::peer::secure::initiator(&[9; 32], &dnd::peer::secure::prologue(CLUSTER)).unwrap();
    let wrong_key = dnd::peer::secure::handshake_message(&mut noise, &introduction[4..]).unwrap();
    let attempts: Vec<(&str, Vec<u8>)> = vec![
        (
            "the plain handshake and a read",
            [hello.clone(), introduction.clone(), read.clone()].concat(),
        ),
        (
            "the plain handshake and a purge",
            [hello, introduction, purge].concat(),
        ),
        (
            "a Noise handshake under another key",
            [wrong_key, read].concat(),
        ),
        (
            "an HTTP request",
            b"GET /kv/guarded HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("garbage", vec![0xff; 3000]),
    ];
    for (what, bytes) in &attempts {
        let mut stream = TcpStream::connect(peer).unwrap();
        let _ = stream.write_all(bytes);
        let answer = drain(&mut stream);
        assert!(
            answer.is_empty(),
            "{what}: the stranger got {} bytes",
            answer.len()
        );
    }
    let refused = metric(
        pair.a.http_addr(),
        "dnd_peer_handshakes_refused_total{reason=\"unauthenticated\"}",
    )
    .unwrap();
    assert_eq!(refused, attempts.len() as u64);
    for node in [&pair.a, &pair.b] {
        let reply = dnd::dev::request(
            node.http_addr(),
            "GET",
            "/kv/guarded",
            &[],
            b"",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!((reply.status, reply.text()), (200, "original".to_string()));
    }
}

#[test]
fn a_node_with_other_placement_settings_is_refused_with_one_clear_line_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let seed_log = std::fs::File::create(dir.path().join("seed.log")).unwrap();
    let seed = DndProcess::spawn_with(
        &dir.path().join("seed"),
        free_port(),
        free_port(),
        &[FAST, &["start"]].concat(),
        Stdio::from(seed_log),
    );
    eventually_blocking(Duration::from_secs(20), "the seed up", || node_id(&seed));
    let joiner_log = std::fs::File::create(dir.path().join("joiner.log")).unwrap();
    let mut joiner = DndProcess::spawn_with(
        &dir.path().join("joiner"),
        free_port(),
        free_port(),
        &[FAST, &["--vnodes", "64", "join", &seed.gossip_addr()]].concat(),
        Stdio::from(joiner_log),
    );
    assert!(exits_with_failure(&mut joiner, Duration::from_secs(20)));
    let joiner_says = std::fs::read_to_string(dir.path().join("joiner.log")).unwrap();
    let last = joiner_says.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("dnd: could not join")
            && last.contains("cluster settings differ")
            && last.contains("--vnodes 64"),
        "{joiner_says}"
    );
    let seed_says = eventually_blocking(Duration::from_secs(5), "the seed's line", || {
        let text = std::fs::read_to_string(dir.path().join("seed.log")).ok()?;
        text.contains("refused a join").then_some(text)
    });
    assert_eq!(
        seed_says.matches("refused a join").count(),
        1,
        "{seed_says}"
    );
    assert_eq!(
        members(&seed).unwrap().len(),
        1,
        "the joiner was never listed"
    );
    // One join, or two if the second left before the refusal arrived.
    let refused = metric(
        seed.http_addr(),
        "dnd_gossip_news_refused_total{reason=\"settings\"}",
    );
    assert!(matches!(refused, Some(1..=2)), "{refused:?}");
}

// ----- a member acting outside its role (in-process) -----------------------

fn secured_cluster_config(key: &ClusterKey) -> impl Fn(&mut dnd::config::Config) + 'static {
    let key = key.clone();
    move |config| config.cluster_key = Some(key.clone())
}

#[actix_rt::test]
async fn a_members_requests_outside_its_role_are_refused_and_change_nothing() {
    let key = ClusterKey::generate();
    let cluster = Cluster::start_with(3, StorageKind::Memory, secured_cluster_config(&key)).await;
    let nodes: Vec<_> = cluster.running().map(|s| s.node()).collect();
    let (x, y, z) = (nodes[0], nodes[1], nodes[2]);
    assert_eq!(
        put(x.http_addr, "watched?overwrite=true&w=3", "kept")
            .await
            .status,
        204
    );
    let as_member = |id: NodeId| {
        let config = PeerConfig {
            node_id: id,
            keyring: Some(Keyring::new(key.clone())),
            ..PeerConfig::new(CLUSTER)
        };
        PeerClient::<ReplicaRequest, ReplicaReply>::new(config, Arc::new(Metrics::default()))
    };
    let from_x = as_member(x.id);
    let copy = |node: &dnd::node::Node| {
        let store = node.store.clone();
        async move {
            store
                .send(dnd::actors::store::LocalCopy {
                    key: dnd::key::Key::new("watched").unwrap(),
                })
                .await
                .unwrap()
                .unwrap()
        }
    };
    let before = copy(y).await;
    let tombstone = {
        let mut object = Object::new();
        object
            .write(x.id, &VersionVector::new(), Payload::Tombstone { at_ms: 0 })
            .unwrap();
        object
    };
    let big = {
        let mut object = Object::new();
        object
            .write(
                x.id,
                &VersionVector::new(),
                Payload::Value {
                    content_type: "text/plain".into(),
                    bytes: vec![b'x'; 2 * 1024 * 1024],
                    expires_at_ms: None,
                },
            )
            .unwrap();
        object
    };
    let out_of_role = vec![
        (
            "a hand-over in another node's name",
            ReplicaRequest::HandOver {
                leaving: z.id,
                objects: vec![(dnd::key::Key::new("watched").unwrap(), tombstone.clone())],
            },
        ),
        (
            "an exchange for another pair",
            ReplicaRequest::ExchangeBuckets {
                pair: z.id,
                buckets: vec![],
            },
        ),
        (
            "a tree of another pair",
            ReplicaRequest::TreeBranches { pair: z.id },
        ),
        (
            "a hint for a stranger",
            ReplicaRequest::Write {
                key: dnd::key::Key::new("watched").unwrap(),
                object: tombstone.clone(),
                hint_for: Some(NodeId::from_u64(42)),
            },
        ),
        (
            "a value over the limit",
            ReplicaRequest::Write {
                key: dnd::key::Key::new("watched").unwrap(),
                object: big,
                hint_for: None,
            },
        ),
    ];
    for (what, request) in out_of_role {
        let answer = from_x.request(y.gossip_addr, &request).await.unwrap();
        assert!(
            matches!(answer, ReplicaReply::Refused(_)),
            "{what}: {answer:?}"
        );
    }
    // A purge from a node that is not the key's first home replica.
    let ring = y
        .membership
        .send(dnd::actors::membership::GetRing)
        .await
        .unwrap();
    let home = ring.ring.preference_list(b"watched", 3);
    let not_first = nodes.iter().find(|n| n.id != home[0]).unwrap();
    let dots: Vec<Dot> = before.dots().into_iter().collect();
    let answer = as_member(not_first.id)
        .request(
            y.gossip_addr,
            &ReplicaRequest::Purge {
                key: dnd::key::Key::new("watched").unwrap(),
                dots,
            },
        )
        .await
        .unwrap();
    assert!(matches!(answer, ReplicaReply::Refused(_)), "{answer:?}");
    // Someone with the key who is no member at all.
    let answer = as_member(NodeId::from_u64(42))
        .request(
            y.gossip_addr,
            &ReplicaRequest::Read {
                key: dnd::key::Key::new("watched").unwrap(),
            },
        )
        .await
        .unwrap();
    assert!(matches!(answer, ReplicaReply::Refused(_)), "{answer:?}");

    assert_eq!(copy(y).await, before, "nothing changed");
    assert_eq!(get(z.http_addr, "watched").await.text(), "kept");
    let refused = |name: &str| {
        let metrics = y.metrics.render_prometheus(&Default::default());
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap()
    };
    assert_eq!(
        refused("dnd_peer_requests_refused_total{reason=\"role\"}"),
        5
    );
    assert_eq!(
        refused("dnd_peer_requests_refused_total{reason=\"too_large\"}"),
        1
    );
    assert_eq!(
        refused("dnd_peer_requests_refused_total{reason=\"not_member\"}"),
        1
    );
}

// ----- rotation under load ---------------------------------------------------

async fn keyring_call(http: SocketAddr, op: &str, key: &str) -> (u16, Value) {
    let mut response = client()
        .post(format!("http://{http}/cluster/keyring"))
        .insert_header(("Content-Type", "application/json"))
        .send_body(serde_json::json!({ "op": op, "key": key }).to_string())
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    (response.status().as_u16(), body)
}

#[actix_rt::test]
async fn a_key_rotation_under_load_loses_no_write_and_marks_no_member_dead() {
    let old = ClusterKey::generate();
    let cluster = Cluster::start_with(3, StorageKind::Memory, secured_cluster_config(&old)).await;
    let https: Vec<SocketAddr> = cluster.running().map(|s| s.http()).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (https, stop) = (https.clone(), stop.clone());
        writers.push(actix_rt::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut failed = 0;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("rotation-{w}-{i}");
                let reply = put(https[i % https.len()], &key, &key).await;
                if reply.status == 204 {
                    acknowledged.push(key);
                } else {
                    failed += 1;
                }
                i += 1;
            }
            (acknowledged, failed)
        }));
    }
    let new = ClusterKey::generate();
    let node = https[0];
    for (op, key) in [
        ("install", new.to_base64()),
        ("use", new.fingerprint()),
        ("remove", old.fingerprint()),
    ] {
        // Some writes between each step.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, report) = keyring_call(node, op, &key).await;
        assert_eq!(status, 200, "{op}: {report}");
        let nodes = report["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{op}: {report}");
        assert!(nodes.iter().all(|n| n["ok"] == true), "{op}: {report}");
    }
    let (status, report) = keyring_call(node, "remove", &new.fingerprint()).await;
    assert_eq!(status, 409, "the primary cannot be removed: {report}");
    // Writes go on under the new key alone, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for writer in writers {
        let (keys, failed) = writer.await.unwrap();
        assert_eq!(failed, 0, "no write failed during the rotation");
        acknowledged.extend(keys);
    }
    assert!(acknowledged.len() > 20, "{} writes", acknowledged.len());
    for (i, key) in acknowledged.iter().enumerate() {
        let reply = get(https[i % 3], &format!("{key}?r=3")).await;
        assert_eq!((reply.status, reply.text()), (200, key.clone()));
    }
    for slot in cluster.running() {
        let node = slot.node();
        // A suspicion may come of two cores shared by three nodes and the
        // writers; a death would mean a member stopped hearing another.
        assert_eq!(node.metrics.swim_members_declared_dead.get(), 0);
        assert_eq!(
            node.keyring.as_ref().unwrap().view().keys,
            vec![new.fingerprint()]
        );
    }
}

// ----- no value in clear on the wire ---------------------------------------

/// Captures loopback traffic to `ports` with tcpdump while `work` runs; the
/// captured bytes, or `None` if tcpdump cannot run here.
fn capture(ports: &[u16], work: impl FnOnce()) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("capture.pcap");
    let filter = ports
        .iter()
        .map(|p| format!("port {p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let mut tcpdump = Command::new("tcpdump")
        .args(["-i", "lo", "-U", "--immediate-mode", "-n", "-w"])
        .arg(&file)
        .arg(&filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // tcpdump says it listens once the capture is set up.
    let mut stderr = tcpdump.stderr.take()?;
    let mut said = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&said).contains("listening on") {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = tcpdump.wait();
                return None;
            }
            Ok(n) => said.extend_from_slice(&buf[..n]),
        }
    }
    work();
    // Packets reach the file as tcpdump handles them: wait until it holds
    // some and stops growing before asking tcpdump to stop.
    let size = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let mut last = 0;
    eventually_blocking(Duration::from_secs(10), "the capture to settle", || {
        let now = size();
        let settled = now > 24 && now == last;
        last = now;
        settled.then_some(())
    });
    let _ = Command::new("kill")
        .args(["-INT", &tcpdump.id().to_string()])
        .status();
    let _ = tcpdump.wait();
    std::fs::read(&file).ok()
}

fn tcpdump_required() -> bool {
    std::env::var("DND_REQUIRE_TCPDUMP").is_ok_and(|v| v == "1")
}

/// Writes a value with `marker` through node `a` of a two-node cluster
/// (with or without a secret) and returns what crossed the nodes' gossip
/// and peer ports.
fn traffic_of_a_write(secret: bool, marker: &str) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::generate();
    let secret = secret.then(|| write_secret(dir.path(), &key));
    let replicas = [
        "--replicas",
        "2",
        "--read-quorum",
        "2",
        "--write-quorum",
        "2",
    ];
    let a = spawn(
        &dir.path().join("a"),
        secret.as_deref(),
        &[&replicas[..], &["start"]].concat(),
    );
    let seed = a.gossip_addr();
    let b = spawn(
        &dir.path().join("b"),
        secret.as_deref(),
        &[&replicas[..], &["join", seed.as_str()]].concat(),
    );
    eventually_blocking(Duration::from_secs(20), "both nodes up", || {
        (alive_ids(&a)?.len() == 2 && alive_ids(&b)?.len() == 2).then_some(())
    });
    let value = format!("{marker}-{}", "v".repeat(1000));
    capture(&[a.gossip_port, b.gossip_port], || {
        let reply = dnd::dev::request(
            a.http_addr(),
            "PUT",
            "/kv/marked?overwrite=true",
            &[],
            value.as_bytes(),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(reply.status, 204);
        // Read through the other node too: the value travels back to it.
        let reply = dnd::dev::request(
            b.http_addr(),
            "GET",
            "/kv/marked",
            &[],
            b"",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(reply.text(), value);
    })
}

#[test]
fn a_value_never_crosses_the_wire_in_clear_between_secured_nodes() {
    let marker = "MARKER-5f3a9c";
    let contains = |bytes: &[u8]| bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
    let Some(open) = traffic_of_a_write(false, marker) else {
        assert!(!tcpdump_required(), "tcpdump could not capture on lo");
        eprintln!(
            "skipped: tcpdump cannot capture here (set DND_REQUIRE_TCPDUMP=1 to fail instead)"
        );
        return;
    };
    // The capture sees the value when nothing seals it: it would see it.
    assert!(
        contains(&open),
        "a cluster without a secret sends values in clear"
    );
    let sealed = traffic_of_a_write(true, marker).expect("tcpdump ran a moment ago");
    assert!(sealed.len() > 1000, "the capture holds the replica traffic");
    assert!(!contains(&sealed), "the marker crossed the wire in clear");
}

/// The peer channel bounds the handshakes one address may hold open: past
/// the limit a new connection is closed unread, and counted.
#[actix_rt::test]
async fn handshakes_past_the_per_address_limit_are_closed_and_counted() {
    let key = ClusterKey::generate();
    let cluster = Cluster::start_with(1, StorageKind::Memory, secured_cluster_config(&key)).await;
    let node = cluster.running().next().unwrap().node();
    let mut held = Vec::new();
    for _ in 0..dnd::peer::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS {
        held.push(
            tokio::net::TcpStream::connect(node.gossip_addr)
                .await
                .unwrap(),
        );
    }
    let extra = tokio::net::TcpStream::connect(node.gossip_addr)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the extra connection closed",
        || {
            let mut buf = [0u8; 1];
            let read = extra.try_read(&mut buf);
            async move { matches!(read, Ok(0)).then_some(()) }
        },
    )
    .await;
    assert_eq!(node.metrics.peer_connections_refused_limit.get(), 1);
    drop(held);
}

/// A replayed first handshake message completes a Noise handshake, but its
/// sender holds no session key: it must not take the member's place.
#[actix_rt::test]
async fn replayed_handshakes_do_not_shut_a_member_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = ClusterKey::generate();
    let cluster = Cluster::start_with(2, StorageKind::Memory, secured_cluster_config(&key)).await;
    let nodes: Vec<_> = cluster.running().map(|s| s.node()).collect();
    let (x, y) = (nodes[0], nodes[1]);
    // A first message as x would send it, captured once and replayed.
    let psk = Keyring::new(key.clone()).peer_psks()[0];
    let mut state =
        dnd::peer::secure::initiator(&psk, &dnd::peer::secure::prologue(CLUSTER)).unwrap();
    let introduction =
        frame::encode_frame(&Introduction { node_id: x.id }, frame::MAX_HELLO_BYTES).unwrap();
    let first = dnd::peer::secure::handshake_message(&mut state, &introduction[4..]).unwrap();
    let mut replays = Vec::new();
    for _ in 0..6 {
        let mut stream = tokio::net::TcpStream::connect(y.gossip_addr).await.unwrap();
        stream.write_all(&first).await.unwrap();
        let mut answer = [0u8; 2];
        stream.read_exact(&mut answer).await.unwrap();
        replays.push(stream);
    }
    // x itself still gets in and is served while the replays hang on.
    let as_x = PeerConfig {
        node_id: x.id,
        keyring: Some(Keyring::new(key.clone())),
        ..PeerConfig::new(CLUSTER)
    };
    let client =
        PeerClient::<ReplicaRequest, ReplicaReply>::new(as_x, Arc::new(Metrics::default()));
    let answer = client
        .request(
            y.gossip_addr,
            &ReplicaRequest::Read {
                key: dnd::key::Key::new("any").unwrap(),
            },
        )
        .await
        .unwrap();
    assert!(matches!(answer, ReplicaReply::Object(_)), "{answer:?}");
    drop(replays);
}
