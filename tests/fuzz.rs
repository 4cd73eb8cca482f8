//! Property-based fuzzing (proptest) of everything that parses bytes from
//! the network or from a client: the gossip datagram decoder, the
//! node-to-node frame decoder, the `X-Dnd-Context` parser, and the stored
//! object decoder. Each gets random bytes and mutations of valid encodings
//! (bytes flipped, cut, inserted); none may panic, and whatever decodes must
//! encode back to something that decodes to the same value.
//!
//! `cargo test` runs a short round (256 cases per target);
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz` is the longer
//! run (see the README).

use std::net::SocketAddr;

use dnd::key::Key;
use dnd::keyring::{ClusterKey, Keyring};
use dnd::member::{Member, MemberState, Rumor};
use dnd::metrics::Metrics;
use dnd::node_id::NodeId;
use dnd::peer::frame;
use dnd::replica::{ReplicaReply, ReplicaRequest};
use dnd::swim::{Swim, SwimConfig, MAX_INCARNATION};
use dnd::version::{Object, Payload, VersionVector};
use dnd::wire::{ClusterSettings, Codec, Datagram, GossipMessage};
use proptest::prelude::*;

const CLUSTER: &str = "dnd";
const FUZZ_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const MTU: usize = 1400;

/// Applies random edits to a valid encoding.
fn mutate(mut bytes: Vec<u8>, edits: &[(u16, u8, u8)]) -> Vec<u8> {
    for &(at, value, how) in edits {
        let at = if bytes.is_empty() {
            0
        } else {
            usize::from(at) % bytes.len()
        };
        match how % 4 {
            0 if !bytes.is_empty() => bytes[at] = value,
            1 if !bytes.is_empty() => bytes[at] ^= 1 << (value % 8),
            2 => bytes.insert(at, value),
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn member(raw: u64, port: u16, state: u8, incarnation: u64) -> Member {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Member {
        id: NodeId::from_u64(raw),
        gossip_addr: addr,
        http_addr: addr,
        state: match state % 4 {
            0 => MemberState::Alive,
            1 => MemberState::Suspect,
            2 => MemberState::Dead,
            _ => MemberState::Left,
        },
        incarnation,
    }
}

fn datagram() -> impl Strategy<Value = Datagram> {
    datagram_among(any::<u64>().boxed())
}

/// Datagrams whose members, senders and targets have ids drawn from `ids`.
fn datagram_among(ids: BoxedStrategy<u64>) -> impl Strategy<Value = Datagram> {
    let member = (ids.clone(), any::<u16>(), any::<u8>(), any::<u64>())
        .prop_map(|(id, port, state, inc)| member(id, port, state, inc));
    let rumors = proptest::collection::vec(
        (member.clone(), proptest::option::of(any::<u64>())).prop_map(|(member, accuser)| Rumor {
            member,
            accuser: accuser.map(NodeId::from_u64),
        }),
        0..6,
    );
    let message = prop_oneof![
        member.clone().prop_map(|member| GossipMessage::Join {
            member,
            settings: ClusterSettings::default(),
        }),
        (any::<u64>(), rumors.clone())
            .prop_map(|(seq, rumors)| GossipMessage::Ping { seq, rumors }),
        (any::<u64>(), rumors.clone()).prop_map(|(seq, rumors)| GossipMessage::Ack { seq, rumors }),
        (any::<u64>(), ids.clone(), any::<u16>(), rumors.clone()).prop_map(
            |(seq, target, port, rumors)| GossipMessage::PingReq {
                seq,
                target: NodeId::from_u64(target),
                target_addr: SocketAddr::from(([127, 0, 0, 1], port)),
                rumors,
            }
        ),
        rumors.prop_map(|rumors| GossipMessage::Gossip { rumors }),
        any::<u64>().prop_map(|seq| GossipMessage::Nack { seq }),
        (proptest::collection::vec(member, 0..6), any::<bool>())
            .prop_map(|(members, reply)| GossipMessage::Sync { members, reply }),
    ];
    (ids, message).prop_map(|(sender, message)| Datagram {
        sender: NodeId::from_u64(sender),
        message,
    })
}

fn object() -> impl Strategy<Value = Object> {
    let write = (
        0u64..4,
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    );
    proptest::collection::vec(write, 0..5).prop_map(|writes| {
        let mut object = Object::new();
        for (node, bytes, delete) in writes {
            let payload = if delete {
                Payload::Tombstone { at_ms: 1 }
            } else {
                Payload::Value {
                    content_type: "text/plain".into(),
                    bytes,
                    expires_at_ms: None,
                }
            };
            // Half the writes see everything before them, half nothing.
            let context = if node % 2 == 0 {
                object.clock()
            } else {
                VersionVector::new()
            };
            object
                .write(NodeId::from_u64(node + 1), &context, payload)
                .expect("small counters do not overflow");
        }
        object
    })
}

fn request() -> impl Strategy<Value = ReplicaRequest> {
    prop_oneof![
        "[a-z0-9]{1,16}".prop_map(|key| ReplicaRequest::Read {
            key: Key::new(key).expect("the pattern makes valid keys")
        }),
        (
            "[a-z0-9]{1,16}",
            object(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(key, object, hint)| ReplicaRequest::Write {
                key: Key::new(key).expect("the pattern makes valid keys"),
                object,
                hint_for: hint.map(NodeId::from_u64),
            }),
    ]
}

proptest! {
    #[test]
    fn the_datagram_decoder_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = Codec::new(CLUSTER, MTU).decode(&bytes);
    }

    #[test]
    fn the_datagram_decoder_survives_mutated_datagrams(
        datagram in datagram(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), any::<u8>()), 1..8),
    ) {
        let codec = Codec::new(CLUSTER, 65_000);
        let bytes = codec.encode(&datagram).expect("a datagram encodes");
        prop_assert_eq!(&codec.decode(&bytes).expect("a fresh datagram decodes"), &datagram);
        if let Ok(decoded) = codec.decode(&mutate(bytes, &edits)) {
            let again = codec.encode(&decoded).expect("what decodes encodes");
            prop_assert_eq!(codec.decode(&again).expect("and decodes again"), decoded);
        }
    }

    #[test]
    fn a_datagram_of_another_cluster_never_decodes(datagram in datagram()) {
        let bytes = Codec::new("other", 65_000).encode(&datagram).expect("encodes");
        prop_assert!(Codec::new(CLUSTER, 65_000).decode(&bytes).is_err());
    }

    #[test]
    fn a_sealed_datagram_changed_anywhere_never_decodes(
        datagram in datagram(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), any::<u8>()), 1..8),
    ) {
        let codec = Codec::sealed(CLUSTER, 65_000, Keyring::new(ClusterKey::from_base64(FUZZ_KEY).unwrap()));
        let bytes = codec.encode(&datagram).expect("a datagram encodes");
        prop_assert_eq!(&codec.decode(&bytes).expect("a fresh datagram decodes"), &datagram);
        let mutated = mutate(bytes.clone(), &edits);
        if mutated != bytes {
            prop_assert!(codec.decode(&mutated).is_err());
        }
    }

    /// The membership state machine, fed whatever decodes, keeps its
    /// invariants: this node stays alive, no incarnation passes the
    /// ceiling, and the table stays within its cap.
    #[test]
    fn swim_keeps_its_invariants_under_arbitrary_datagrams(
        datagrams in proptest::collection::vec(datagram_among((0u64..12).boxed()), 1..24),
        ticks in proptest::collection::vec(0u64..3000, 0..8),
    ) {
        let codec = Codec::new(CLUSTER, 65_000);
        let start = std::time::Instant::now();
        let local = member(1, 5000, 0, 0);
        let config = SwimConfig { max_members: 6, ..SwimConfig::default() };
        let mut swim = Swim::new(local, config, codec.clone(), vec![], 3, std::sync::Arc::new(Metrics::default()), start);
        let mut now = start;
        for (i, datagram) in datagrams.iter().enumerate() {
            let bytes = codec.encode(datagram).expect("encodes");
            swim.handle_bytes(SocketAddr::from(([127, 0, 0, 1], 6000 + i as u16)), &bytes, now);
            if let Some(step) = ticks.get(i) {
                now += std::time::Duration::from_millis(*step);
                swim.tick(now);
            }
            let me = swim.local();
            prop_assert_eq!(me.state, MemberState::Alive);
            prop_assert!(me.incarnation <= MAX_INCARNATION);
            prop_assert!(swim.table().live_count() + swim.table().dead_count() <= 6);
            prop_assert!(swim.table().members().iter().all(|m| m.incarnation <= MAX_INCARNATION));
            swim.take_outgoing();
            swim.take_changes();
        }
    }

    #[test]
    fn the_frame_decoder_survives_random_bodies(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = frame::decode_request::<ReplicaRequest>(&bytes);
        let _ = frame::decode_response::<ReplicaReply>(&bytes);
        let _ = frame::peek_request_id(&bytes);
        let mut prefix = [0u8; 4];
        for (slot, byte) in prefix.iter_mut().zip(&bytes) {
            *slot = *byte;
        }
        if let Ok(size) = frame::body_length(prefix, 1 << 20) {
            prop_assert!(size <= 1 << 20);
        }
    }

    #[test]
    fn the_frame_decoder_survives_mutated_requests(
        id in any::<u64>(),
        request in request(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), any::<u8>()), 1..8),
    ) {
        let frame = frame::encode_request(id, &request, 1 << 20).expect("a request encodes");
        let body = frame[4..].to_vec();
        let (decoded_id, _) = frame::decode_request::<ReplicaRequest>(&body).expect("a fresh request decodes");
        prop_assert_eq!(decoded_id, id);
        prop_assert_eq!(frame::peek_request_id(&body), Some(id));
        let _ = frame::decode_request::<ReplicaRequest>(&mutate(body, &edits));
    }

    #[test]
    fn the_context_parser_survives_any_header(text in "\\PC{0,200}") {
        let _ = VersionVector::from_context(&text);
    }

    #[test]
    fn the_context_parser_survives_mutated_contexts(
        object in object(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let token = object.clock().to_context();
        prop_assert_eq!(VersionVector::from_context(&token).expect("a fresh context parses"), object.clock());
        let mutated = mutate(token.into_bytes(), &edits);
        let _ = VersionVector::from_context(&String::from_utf8_lossy(&mutated));
    }

    #[test]
    fn the_object_decoder_survives_mutated_objects(
        object in object(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), any::<u8>()), 1..8),
    ) {
        let bytes = object.encode();
        prop_assert_eq!(&Object::decode(&bytes).expect("a fresh object decodes"), &object);
        let _ = Object::decode(&mutate(bytes, &edits));
    }
}

/// The Store's handler of peer requests, fed arbitrary requests from
/// members and strangers alike: it answers every one, never stops serving,
/// and what a stranger asks changes nothing.
#[actix_rt::test]
async fn the_peer_handler_answers_arbitrary_requests_and_strangers_change_nothing() {
    use dnd::actors::store::{FromPeer, LocalCopy};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let dir = tempfile::tempdir().unwrap();
    let node = dnd::node::Node::start(dnd::config::Config::ephemeral(dir.path().to_path_buf()))
        .await
        .unwrap();
    let kept = Key::new("KEPT").unwrap();
    let mut object = Object::new();
    object
        .write(
            node.id,
            &VersionVector::new(),
            Payload::Value {
                content_type: "text/plain".into(),
                bytes: b"kept".to_vec(),
                expires_at_ms: None,
            },
        )
        .unwrap();
    let stored = node
        .store
        .send(FromPeer {
            from: node.id,
            request: ReplicaRequest::Write {
                key: kept.clone(),
                object: object.clone(),
                hint_for: None,
            },
        })
        .await
        .unwrap();
    assert!(matches!(stored, ReplicaReply::Stored), "{stored:?}");
    let mut runner = TestRunner::deterministic();
    let strategy = request();
    let cases = 256;
    for i in 0..cases {
        let mut request = strategy.new_tree(&mut runner).unwrap().current();
        // Aim a third of them at the kept key.
        if i % 3 == 0 {
            match &mut request {
                ReplicaRequest::Read { key } | ReplicaRequest::Write { key, .. } => {
                    *key = kept.clone()
                }
                _ => {}
            }
        }
        let stranger = NodeId::from_u64(1_000 + i);
        let answer = node
            .store
            .send(FromPeer {
                from: stranger,
                request,
            })
            .await
            .expect("the store keeps serving");
        assert!(
            matches!(answer, ReplicaReply::Refused(_)),
            "a stranger was served: {answer:?}"
        );
    }
    // A member's arbitrary requests (on other keys) all get an answer.
    for _ in 0..128 {
        let request = strategy.new_tree(&mut runner).unwrap().current();
        node.store
            .send(FromPeer {
                from: node.id,
                request,
            })
            .await
            .expect("the store keeps serving");
    }
    let copy = node
        .store
        .send(LocalCopy { key: kept })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(copy, object, "no stranger changed the kept key");
    assert_eq!(node.metrics.peer_requests_refused_not_member.get(), cases);
    node.stop().await;
}
