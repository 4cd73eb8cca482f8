//! Several nodes in one process: joining, and gossip that refuses what it
//! cannot trust.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{client, eventually, lists_alive, members_of, start_node, url};
use dnd::member::{Member, MemberState, Rumor};
use dnd::node_id::NodeId;
use dnd::wire::{Codec, Datagram, GossipMessage, PROTOCOL_VERSION};
use rand::{Rng, SeedableRng};

const JOIN_DEADLINE: Duration = Duration::from_secs(3);

#[actix_rt::test]
async fn a_joining_node_and_its_seed_list_each_other_within_three_seconds() {
    let seed = start_node(|_| {}).await;
    let joiner = start_node(|c| c.seed = Some(seed.gossip_addr)).await;
    let ids = [seed.id.to_string(), joiner.id.to_string()];
    eventually(JOIN_DEADLINE, "both nodes to list each other", || async {
        (lists_alive(seed.http_addr, &ids).await && lists_alive(joiner.http_addr, &ids).await)
            .then_some(())
    })
    .await;
}

#[actix_rt::test]
async fn a_node_joining_through_any_member_becomes_known_to_all() {
    let first = start_node(|_| {}).await;
    let second = start_node(|c| c.seed = Some(first.gossip_addr)).await;
    let third = start_node(|c| c.seed = Some(second.gossip_addr)).await;
    let ids = [
        first.id.to_string(),
        second.id.to_string(),
        third.id.to_string(),
    ];
    eventually(
        JOIN_DEADLINE,
        "all three nodes to know all three",
        || async {
            for node in [&first, &second, &third] {
                if !lists_alive(node.http_addr, &ids).await {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let members = members_of(third.http_addr).await.unwrap();
    assert_eq!(members.len(), 3);
    for member in &members {
        assert!(member["gossip_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
        assert!(member["http_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
        assert_eq!(member["incarnation"], 0);
    }
}

#[actix_rt::test]
async fn a_node_of_another_cluster_is_refused_and_counted() {
    let ours = start_node(|_| {}).await;
    let stranger = start_node(|c| {
        c.seed = Some(ours.gossip_addr);
        c.cluster_name = "someone-else".into();
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "the stranger's joins to be refused",
        || async { (ours.metrics.gossip_dropped_wrong_cluster.get() >= 2).then_some(()) },
    )
    .await;
    let members = members_of(ours.http_addr).await.unwrap();
    assert_eq!(members.len(), 1, "the stranger never became a member");
    let members = members_of(stranger.http_addr).await.unwrap();
    assert_eq!(members.len(), 1);
}

#[actix_rt::test]
async fn garbage_datagrams_are_dropped_counted_and_the_node_keeps_working() {
    let node = start_node(|c| c.gossip_mtu = 1400).await;
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = node.gossip_addr;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);

    let valid = Codec::new("dnd", 1400)
        .encode(&Datagram {
            sender: NodeId::from_u64(1),
            message: GossipMessage::Ping {
                seq: 1,
                rumors: vec![],
            },
        })
        .unwrap();
    let mut garbage: Vec<Vec<u8>> = Vec::new();
    for _ in 0..300 {
        let len = rng.random_range(0..600);
        garbage.push((0..len).map(|_| rng.random()).collect());
    }
    for cut in 0..valid.len() {
        garbage.push(valid[..cut].to_vec());
    }
    garbage.push(vec![0x91; 3000]);
    let stranger = Datagram {
        sender: NodeId::from_u64(1),
        message: GossipMessage::Ping {
            seq: 1,
            rumors: vec![],
        },
    };
    garbage.push(Codec::new("other", 1400).encode(&stranger).unwrap());
    let wrong_version = (
        PROTOCOL_VERSION + 1,
        "dnd",
        serde_bytes::ByteBuf::from(vec![1u8]),
    );
    garbage.push(rmp_serde::to_vec(&wrong_version).unwrap());

    // In batches, so that the kernel's receive buffer never overflows and
    // every datagram sent is one the node had to judge.
    let metrics = node.metrics.clone();
    let mut sent = 0u64;
    for batch in garbage.chunks(40) {
        for bytes in batch {
            sender.send_to(bytes, target).unwrap();
            sent += 1;
        }
        eventually(
            Duration::from_secs(5),
            "the batch to be received",
            || async { (metrics.gossip_datagrams_received.get() >= sent).then_some(()) },
        )
        .await;
    }
    assert_eq!(
        metrics.gossip_dropped_total(),
        sent,
        "every bad datagram is counted as dropped"
    );
    assert_eq!(metrics.gossip_dropped_oversized.get(), 1);
    assert_eq!(metrics.gossip_dropped_wrong_cluster.get(), 1);
    assert_eq!(metrics.gossip_dropped_wrong_version.get(), 1);

    // Still gossiping: a node can join it, and it still serves HTTP.
    let joiner = start_node(|c| c.seed = Some(node.gossip_addr)).await;
    let ids = [node.id.to_string(), joiner.id.to_string()];
    eventually(JOIN_DEADLINE, "a join after the garbage", || async {
        lists_alive(node.http_addr, &ids).await.then_some(())
    })
    .await;
    let put = client()
        .put(url(&node, "/kv/k"))
        .send_body("v")
        .await
        .unwrap();
    assert!(put.status().is_success());
}

#[actix_rt::test]
async fn a_valid_ping_gets_an_ack_with_the_members() {
    let node = start_node(|_| {}).await;
    let codec = Codec::new("dnd", 1400);
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let me = Member {
        id: NodeId::from_u64(77),
        gossip_addr: probe.local_addr().unwrap(),
        http_addr: "127.0.0.1:1".parse().unwrap(),
        state: MemberState::Alive,
        incarnation: 0,
    };
    let ping = Datagram {
        sender: me.id,
        message: GossipMessage::Ping {
            seq: 9,
            rumors: vec![Rumor::about(me.clone())],
        },
    };
    probe
        .send_to(&codec.encode(&ping).unwrap(), node.gossip_addr)
        .unwrap();
    let reply = actix_rt::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 2000];
        loop {
            let (len, _) = probe.recv_from(&mut buf).expect("an answer to the ping");
            let datagram = codec.decode(&buf[..len]).expect("a valid datagram");
            if let GossipMessage::Ack { seq, rumors } = datagram.message {
                return (datagram.sender, seq, rumors);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(reply.0, node.id);
    assert_eq!(reply.1, 9);
    assert!(
        reply.2.iter().any(|r| r.member.id == me.id),
        "the ack passes on the news the ping brought: {:?}",
        reply.2
    );
    eventually(
        Duration::from_secs(3),
        "the pinger to be listed",
        || async {
            let members = members_of(node.http_addr).await?;
            members
                .iter()
                .any(|m| m["id"] == me.id.to_string())
                .then_some(())
        },
    )
    .await;
}
