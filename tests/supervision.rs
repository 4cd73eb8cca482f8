//! Each actor, made to fail, is restarted by its supervisor with its state,
//! and clients never hang meanwhile.
//!
//! What a panic does: every handler that runs fallible code wraps it in
//! `contain_panic`, which logs the panic and stops the actor; the supervisor
//! then restarts it with the same struct (same data, same members) and the
//! same mailbox (queued requests are answered after the restart). The tests
//! below inject both a plain stop and a panic into every actor.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use common::{client, eventually, lists_alive, start_node, url, TestNode};
use dnd::actors::fault::{Fault, InjectFault};
use dnd::member::{Member, MemberState, Rumor};
use dnd::metrics::Counter;
use dnd::node_id::NodeId;
use dnd::wire::{Codec, Datagram, GossipMessage};
use futures_util::future::join_all;

const RESTART_DEADLINE: Duration = Duration::from_secs(5);

async fn wait_for_restarts(counter: &Counter, at_least: u64, what: &str) {
    eventually(RESTART_DEADLINE, what, || async {
        (counter.get() >= at_least).then_some(())
    })
    .await;
}

async fn put(node: &TestNode, key: &str, value: &str) -> StatusCode {
    client()
        .put(url(node, &format!("/kv/{key}")))
        .send_body(value.to_string())
        .await
        .unwrap()
        .status()
}

/// Pings the node's gossip port from a fresh socket; true if an ack comes.
async fn answers_pings(node: &TestNode) -> bool {
    let target = node.gossip_addr;
    actix_rt::task::spawn_blocking(move || {
        let codec = Codec::new("dnd", 1400);
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let ping = Datagram {
            sender: NodeId::from_u64(0xfeed),
            message: GossipMessage::Ping {
                seq: 1,
                rumors: vec![],
            },
        };
        probe
            .send_to(&codec.encode(&ping).unwrap(), target)
            .unwrap();
        let mut buf = vec![0u8; 2000];
        match probe.recv_from(&mut buf) {
            Ok((len, _)) => matches!(
                codec.decode(&buf[..len]).map(|d| d.message),
                Ok(GossipMessage::Ack { seq: 1, .. })
            ),
            Err(_) => false,
        }
    })
    .await
    .unwrap()
}

#[actix_rt::test]
async fn the_store_comes_back_with_its_data_after_a_stop_and_a_panic() {
    let node = start_node(|_| {}).await;
    for i in 0..20 {
        assert_eq!(
            put(&node, &format!("k{i}"), &format!("v{i}")).await,
            StatusCode::NO_CONTENT
        );
    }
    for (n, fault) in [Fault::Stop, Fault::Panic].into_iter().enumerate() {
        node.store.send(InjectFault(fault)).await.unwrap();
        wait_for_restarts(
            &node.metrics.actor_restarts_store,
            n as u64 + 1,
            "the store to restart",
        )
        .await;
        for i in 0..20 {
            let mut r = client()
                .get(url(&node, &format!("/kv/k{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "after {fault:?}");
            assert_eq!(r.body().await.unwrap(), format!("v{i}").as_bytes());
        }
    }
}

#[actix_rt::test]
async fn requests_during_store_restarts_get_a_correct_answer_or_503_never_a_hang() {
    let node = start_node(|c| c.request_timeout = Duration::from_secs(2)).await;
    assert_eq!(put(&node, "steady", "value").await, StatusCode::NO_CONTENT);
    let http = client();
    let reads = (0..200).map(|i| {
        let http = http.clone();
        let store = node.store.clone();
        let path = url(&node, "/kv/steady");
        async move {
            if i % 20 == 0 {
                let fault = if i % 40 == 0 {
                    Fault::Panic
                } else {
                    Fault::Stop
                };
                store.do_send(InjectFault(fault));
            }
            let request = async {
                let mut r = http.get(path).send().await.unwrap();
                let body = r.body().await.unwrap();
                (r.status(), body)
            };
            tokio::time::timeout(Duration::from_secs(4), request)
                .await
                .expect("a request during restarts must not hang")
        }
    });
    let answers = join_all(reads).await;
    let mut ok = 0;
    for (status, body) in answers {
        match status {
            StatusCode::OK => {
                assert_eq!(body, "value");
                ok += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok > 0, "some reads succeeded");
    wait_for_restarts(
        &node.metrics.actor_restarts_store,
        10,
        "all ten injected restarts",
    )
    .await;
    let mut r = http.get(url(&node, "/kv/steady")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.body().await.unwrap(), "value");
}

#[actix_rt::test]
async fn gossip_comes_back_on_its_port_after_a_socket_error_a_stop_and_a_panic() {
    let node = start_node(|_| {}).await;
    assert!(answers_pings(&node).await);
    for (n, fault) in [Fault::SocketError, Fault::Stop, Fault::Panic]
        .into_iter()
        .enumerate()
    {
        node.gossip.send(InjectFault(fault)).await.unwrap();
        wait_for_restarts(
            &node.metrics.actor_restarts_gossip,
            n as u64 + 1,
            "gossip to restart",
        )
        .await;
        eventually(
            RESTART_DEADLINE,
            "the gossip port to answer again",
            || async { answers_pings(&node).await.then_some(()) },
        )
        .await;
    }
    assert_eq!(node.metrics.gossip_socket_restarts.get(), 1);
}

#[actix_rt::test]
async fn a_restarted_gossip_actor_still_carries_joins() {
    let seed = start_node(|_| {}).await;
    seed.gossip
        .send(InjectFault(Fault::SocketError))
        .await
        .unwrap();
    wait_for_restarts(&seed.metrics.actor_restarts_gossip, 1, "gossip to restart").await;
    let joiner = start_node(|c| c.seed = Some(seed.gossip_addr)).await;
    let ids = [seed.id.to_string(), joiner.id.to_string()];
    eventually(Duration::from_secs(3), "the join to complete", || async {
        (lists_alive(seed.http_addr, &ids).await && lists_alive(joiner.http_addr, &ids).await)
            .then_some(())
    })
    .await;
}

#[actix_rt::test]
async fn membership_comes_back_with_its_members_after_a_stop_and_a_panic() {
    let seed = start_node(|_| {}).await;
    let joiner = start_node(|c| c.seed = Some(seed.gossip_addr)).await;
    let ids = [seed.id.to_string(), joiner.id.to_string()];
    eventually(Duration::from_secs(3), "the join", || async {
        lists_alive(seed.http_addr, &ids).await.then_some(())
    })
    .await;
    for (n, fault) in [Fault::Stop, Fault::Panic].into_iter().enumerate() {
        seed.membership.send(InjectFault(fault)).await.unwrap();
        wait_for_restarts(
            &seed.metrics.actor_restarts_membership,
            n as u64 + 1,
            "membership to restart",
        )
        .await;
        assert!(
            lists_alive(seed.http_addr, &ids).await,
            "members kept after {fault:?}"
        );
    }
    // Still the authority and still publishing: news of a newcomer arrives
    // and is passed on to Gossip, which tells the joiner.
    let late = start_node(|c| c.seed = Some(seed.gossip_addr)).await;
    let all = [
        seed.id.to_string(),
        joiner.id.to_string(),
        late.id.to_string(),
    ];
    eventually(
        Duration::from_secs(3),
        "the newcomer to reach everyone",
        || async {
            (lists_alive(seed.http_addr, &all).await && lists_alive(joiner.http_addr, &all).await)
                .then_some(())
        },
    )
    .await;
}

#[actix_rt::test]
async fn member_listings_during_membership_restarts_answer_or_503() {
    let node = start_node(|c| c.request_timeout = Duration::from_secs(2)).await;
    let http = client();
    let requests = (0..60).map(|i| {
        let http = http.clone();
        let membership = node.membership.clone();
        let path = url(&node, "/cluster/members");
        async move {
            if i % 10 == 0 {
                membership.do_send(InjectFault(Fault::Panic));
            }
            let status = tokio::time::timeout(Duration::from_secs(4), http.get(path).send())
                .await
                .expect("no hang")
                .unwrap()
                .status();
            assert!(
                status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                "{status}"
            );
            status
        }
    });
    let statuses = join_all(requests).await;
    assert!(statuses.contains(&StatusCode::OK));
}

/// A member that exists only as a UDP socket answering pings; counts them.
struct FakeMember {
    member: Member,
    pings: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeMember {
    fn start() -> FakeMember {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let member = Member {
            id: NodeId::from_u64(0xabc),
            gossip_addr: socket.local_addr().unwrap(),
            http_addr: "127.0.0.1:1".parse().unwrap(),
            state: MemberState::Alive,
            incarnation: 0,
        };
        let (pings, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (counter, stopped, id) = (pings.clone(), stop.clone(), member.id);
        std::thread::spawn(move || {
            let codec = Codec::new("dnd", 1400);
            let mut buf = vec![0u8; 2000];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Ok(Datagram {
                    message: GossipMessage::Ping { seq, .. },
                    ..
                }) = codec.decode(&buf[..len])
                {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let ack = Datagram {
                        sender: id,
                        message: GossipMessage::Ack {
                            seq,
                            rumors: vec![],
                        },
                    };
                    let _ = socket.send_to(&codec.encode(&ack).unwrap(), from);
                }
            }
        });
        FakeMember {
            member,
            pings,
            stop,
        }
    }

    /// Introduces itself to `node` with a ping carrying its own rumor.
    fn introduce_to(&self, node: SocketAddr) {
        let codec = Codec::new("dnd", 1400);
        let hello = Datagram {
            sender: self.member.id,
            message: GossipMessage::Ping {
                seq: 1,
                rumors: vec![Rumor::about(self.member.clone())],
            },
        };
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(&codec.encode(&hello).unwrap(), node)
            .unwrap();
    }
}

impl Drop for FakeMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[actix_rt::test]
async fn a_member_learned_before_a_gossip_restart_is_still_probed_after_it() {
    // The protocol state lives in the Gossip actor's struct, which the
    // supervisor keeps: after a restart it goes on probing members it knew.
    let node = start_node(|_| {}).await;
    let fake = FakeMember::start();
    fake.introduce_to(node.gossip_addr);
    eventually(
        RESTART_DEADLINE,
        "the node to probe the new member",
        || async { (fake.pings.load(Ordering::Relaxed) >= 1).then_some(()) },
    )
    .await;
    node.gossip.send(InjectFault(Fault::Stop)).await.unwrap();
    wait_for_restarts(&node.metrics.actor_restarts_gossip, 1, "gossip to restart").await;
    let before = fake.pings.load(Ordering::Relaxed);
    eventually(RESTART_DEADLINE, "probes after the restart", || async {
        (fake.pings.load(Ordering::Relaxed) >= before + 2).then_some(())
    })
    .await;
}
