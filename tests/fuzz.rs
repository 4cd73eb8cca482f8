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

use dnd::member::{Member, MemberState, Rumor};
use dnd::node_id::NodeId;
use dnd::peer::frame;
use dnd::replica::{ReplicaReply, ReplicaRequest};
use dnd::version::{Object, Payload, VersionVector};
use dnd::wire::{ClusterSettings, Codec, Datagram, GossipMessage};
use proptest::prelude::*;

const CLUSTER: &str = "dnd";
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
    let member = (any::<u64>(), any::<u16>(), any::<u8>(), any::<u64>())
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
        (any::<u64>(), any::<u64>(), any::<u16>(), rumors.clone()).prop_map(
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
    (any::<u64>(), message).prop_map(|(sender, message)| Datagram {
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
        "[a-z0-9]{1,16}".prop_map(|key| ReplicaRequest::Read { key }),
        (
            "[a-z0-9]{1,16}",
            object(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(key, object, hint)| ReplicaRequest::Write {
                key,
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
