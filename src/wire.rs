//! Gossip datagrams: the envelope every datagram travels in, the messages it
//! carries, and the codec that refuses what it cannot trust.
//!
//! Owns the byte format of the UDP protocol. Pure: it never touches a socket.
//!
//! Format choice: msgpack through rmp-serde's positional encoding (`to_vec`),
//! structs as arrays. Field names would cost a third or more of a datagram
//! that must fit one MTU. The price is that any change to a message's layout
//! must raise [`PROTOCOL_VERSION`]; the envelope's first two fields (version,
//! cluster name) are frozen forever so that every version can read at least
//! enough of every other to refuse it cleanly. The body is a nested msgpack
//! blob so that a datagram from a newer version is refused as "wrong version"
//! rather than misread as garbage.
//!
//! With a cluster secret ([`Codec::sealed`]) the envelope is not sent at all:
//! a datagram is a marker byte, the protocol version, then the msgpack
//! [`Datagram`] sealed with XChaCha20-Poly1305 under the keyring's primary
//! key (a fresh random nonce each time), with the version and cluster name
//! as associated data. The cluster name never travels in clear, and a
//! datagram that does not open under any key of the ring is refused as
//! unauthenticated before a byte of it is parsed.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use std::net::SocketAddr;

use crate::keyring::{Keyring, GOSSIP_SEAL_OVERHEAD};
use crate::member::{Member, Rumor};
use crate::node_id::NodeId;

/// Raised whenever the layout of [`Envelope`] past its first two fields, or
/// of any [`GossipMessage`], or of a sealed datagram, changes.
pub const PROTOCOL_VERSION: u16 = 3;

/// The first byte of a sealed datagram; a plain envelope starts with a
/// msgpack array marker (0x93) instead.
const SEALED_MARKER: u8 = b'S';

/// Marker and version, in clear in front of the sealed body.
const SEALED_HEADER_BYTES: usize = 3;

/// What sealing adds to every datagram, counted within the gossip MTU.
pub const SEALED_OVERHEAD: usize = SEALED_HEADER_BYTES + GOSSIP_SEAL_OVERHEAD;

/// The settings every member of a cluster must share, since they decide
/// where each key lives; a join that brings others is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// N, copies of each key.
    pub replicas: u16,
    /// Tokens per node on the ring.
    pub vnodes: u32,
}

impl ClusterSettings {
    /// Why a node of `self`'s settings refuses one with `theirs`, if it does.
    pub fn refusal(&self, theirs: &ClusterSettings) -> Option<String> {
        (self != theirs).then(|| {
            format!(
                "cluster settings differ: this cluster has --replicas {} --vnodes {}, the joining node has --replicas {} --vnodes {}",
                self.replicas, self.vnodes, theirs.replicas, theirs.vnodes
            )
        })
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            replicas: crate::replication::DEFAULT_REPLICAS as u16,
            vnodes: crate::ring::DEFAULT_VNODES as u32,
        }
    }
}

/// The largest datagram this node reads at all; anything larger than the
/// configured gossip MTU is already refused, this bounds the receive buffer.
pub const MAX_DATAGRAM_BYTES: usize = 65_507;

/// The outer layer of every datagram.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    protocol: u16,
    cluster: String,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

/// What one datagram says, and who says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datagram {
    pub sender: NodeId,
    pub message: GossipMessage,
}

/// The SWIM protocol's messages (Das, Gupta, Motivala 2002, with Lifeguard's
/// `Nack`). Probes and their answers carry rumors piggybacked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMessage {
    /// A node asks a member to let it in; `member` is how it wants to be
    /// known, `settings` what it would place keys by.
    Join {
        member: Member,
        settings: ClusterSettings,
    },
    /// The answer to a join whose settings differ from the cluster's; the
    /// joining node reports `reason` and stops.
    JoinRefused { reason: String },
    /// A direct probe.
    Ping { seq: u64, rumors: Vec<Rumor> },
    /// The answer to a probe, direct or relayed; `seq` is the prober's.
    Ack { seq: u64, rumors: Vec<Rumor> },
    /// Asks the receiver to probe `target` and relay its ack.
    PingReq {
        seq: u64,
        target: NodeId,
        target_addr: SocketAddr,
        rumors: Vec<Rumor>,
    },
    /// Rumors alone, pushed to a few members as soon as there is news
    /// rather than waiting for the next probe.
    Gossip { rumors: Vec<Rumor> },
    /// A relay's word that `target` did not answer it in time: proof to the
    /// prober that its own link to the relay works.
    Nack { seq: u64 },
    /// One part of a full-state exchange (push-pull, and the answer to a
    /// join). Each part is a self-contained set of members, so a lost part
    /// costs only its members; `reply` asks for the receiver's state back.
    Sync { members: Vec<Member>, reply: bool },
}

impl GossipMessage {
    pub fn kind(&self) -> &'static str {
        match self {
            GossipMessage::Join { .. } => "join",
            GossipMessage::JoinRefused { .. } => "join-refused",
            GossipMessage::Ping { .. } => "ping",
            GossipMessage::Ack { .. } => "ack",
            GossipMessage::PingReq { .. } => "ping-req",
            GossipMessage::Gossip { .. } => "gossip",
            GossipMessage::Nack { .. } => "nack",
            GossipMessage::Sync { .. } => "sync",
        }
    }
}

/// Why a datagram was refused. Each reason is counted separately.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("datagram of {size} bytes exceeds the limit of {limit}")]
    Oversized { size: usize, limit: usize },
    #[error("datagram is not a dnd envelope")]
    Malformed,
    #[error("datagram speaks protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    WrongVersion(u16),
    #[error("datagram is from cluster {0:?}")]
    WrongCluster(String),
    #[error("datagram body does not decode")]
    MalformedBody,
    #[error("datagram is not sealed with a key of this cluster")]
    Unauthenticated,
}

impl DecodeError {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Malformed | DecodeError::MalformedBody => "malformed",
            DecodeError::WrongVersion(_) => "wrong_version",
            DecodeError::WrongCluster(_) => "wrong_cluster",
            DecodeError::Unauthenticated => "unauthenticated",
        }
    }
}

#[derive(Debug, Error)]
#[error("could not encode a gossip message: {0}")]
pub struct EncodeError(#[from] rmp_serde::encode::Error);

/// Encodes and decodes datagrams for one cluster.
#[derive(Clone, Debug)]
pub struct Codec {
    cluster: String,
    max_datagram_bytes: usize,
    /// With a keyring, every datagram is sealed and only sealed ones are read.
    sealing: Option<Sealing>,
}

#[derive(Clone, Debug)]
struct Sealing {
    keyring: Keyring,
    /// Version and cluster name, bound to every sealed datagram.
    associated_data: Vec<u8>,
}

impl Codec {
    /// A codec that sends and reads plain envelopes: no cluster secret.
    pub fn new(cluster: impl Into<String>, max_datagram_bytes: usize) -> Self {
        Codec {
            cluster: cluster.into(),
            max_datagram_bytes,
            sealing: None,
        }
    }

    /// A codec that seals every datagram under `keyring`'s primary key and
    /// reads only datagrams that open under one of its keys.
    pub fn sealed(cluster: impl Into<String>, max_datagram_bytes: usize, keyring: Keyring) -> Self {
        let cluster = cluster.into();
        let mut associated_data = b"dnd gossip\0".to_vec();
        associated_data.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        associated_data.extend_from_slice(cluster.as_bytes());
        Codec {
            cluster,
            max_datagram_bytes,
            sealing: Some(Sealing {
                keyring,
                associated_data,
            }),
        }
    }

    /// Either plain or sealed, as `keyring` says.
    pub fn for_keyring(
        cluster: impl Into<String>,
        max_datagram_bytes: usize,
        keyring: Option<Keyring>,
    ) -> Self {
        match keyring {
            Some(keyring) => Codec::sealed(cluster, max_datagram_bytes, keyring),
            None => Codec::new(cluster, max_datagram_bytes),
        }
    }

    pub fn max_datagram_bytes(&self) -> usize {
        self.max_datagram_bytes
    }

    pub fn encode(&self, datagram: &Datagram) -> Result<Vec<u8>, EncodeError> {
        if let Some(sealing) = &self.sealing {
            let body = rmp_serde::to_vec(datagram)?;
            let mut bytes = Vec::with_capacity(SEALED_OVERHEAD + body.len());
            bytes.push(SEALED_MARKER);
            bytes.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
            bytes.extend(sealing.keyring.seal_gossip(&sealing.associated_data, &body));
            return Ok(bytes);
        }
        let envelope = Envelope {
            protocol: PROTOCOL_VERSION,
            cluster: self.cluster.clone(),
            body: rmp_serde::to_vec(datagram)?,
        };
        Ok(rmp_serde::to_vec(&envelope)?)
    }

    /// The size `encode` would give `datagram`, without sealing it: sealing
    /// adds the same [`SEALED_OVERHEAD`] to every datagram.
    pub fn encoded_len(&self, datagram: &Datagram) -> Result<usize, EncodeError> {
        match &self.sealing {
            Some(_) => Ok(SEALED_OVERHEAD + rmp_serde::to_vec(datagram)?.len()),
            None => Ok(self.encode(datagram)?.len()),
        }
    }

    /// Encodes `datagram`, and returns `None` when the result would not fit
    /// the datagram limit.
    pub fn encode_within_limit(&self, datagram: &Datagram) -> Result<Option<Vec<u8>>, EncodeError> {
        let bytes = self.encode(datagram)?;
        Ok((bytes.len() <= self.max_datagram_bytes).then_some(bytes))
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Datagram, DecodeError> {
        if bytes.len() > self.max_datagram_bytes {
            return Err(DecodeError::Oversized {
                size: bytes.len(),
                limit: self.max_datagram_bytes,
            });
        }
        if let Some(sealing) = &self.sealing {
            return Self::open(sealing, bytes);
        }
        let envelope: Envelope =
            rmp_serde::from_slice(bytes).map_err(|_| DecodeError::Malformed)?;
        if envelope.protocol != PROTOCOL_VERSION {
            return Err(DecodeError::WrongVersion(envelope.protocol));
        }
        if envelope.cluster != self.cluster {
            return Err(DecodeError::WrongCluster(envelope.cluster));
        }
        rmp_serde::from_slice(&envelope.body).map_err(|_| DecodeError::MalformedBody)
    }

    fn open(sealing: &Sealing, bytes: &[u8]) -> Result<Datagram, DecodeError> {
        let (header, sealed) = bytes
            .split_at_checked(SEALED_HEADER_BYTES)
            .ok_or(DecodeError::Unauthenticated)?;
        if header[0] != SEALED_MARKER {
            return Err(DecodeError::Unauthenticated);
        }
        let version = u16::from_be_bytes([header[1], header[2]]);
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::WrongVersion(version));
        }
        let body = sealing
            .keyring
            .open_gossip(&sealing.associated_data, sealed)
            .ok_or(DecodeError::Unauthenticated)?;
        rmp_serde::from_slice(&body).map_err(|_| DecodeError::MalformedBody)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::ClusterKey;
    use crate::member::MemberState;
    use rand::{Rng, SeedableRng};

    fn member(id: u64) -> Member {
        Member {
            id: NodeId::from_u64(id),
            gossip_addr: "127.0.0.1:5000".parse().unwrap(),
            http_addr: "[::1]:6000".parse().unwrap(),
            state: MemberState::Alive,
            incarnation: id,
        }
    }

    fn ping(news: usize) -> Datagram {
        Datagram {
            sender: NodeId::from_u64(7),
            message: GossipMessage::Ping {
                seq: 42,
                rumors: (0..news as u64)
                    .map(|id| Rumor {
                        member: member(id),
                        accuser: Some(NodeId::from_u64(id)),
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn every_message_round_trips() {
        let codec = Codec::new("dnd", 1400);
        let messages = [
            GossipMessage::Join {
                member: member(1),
                settings: ClusterSettings::default(),
            },
            GossipMessage::JoinRefused {
                reason: "settings differ".into(),
            },
            GossipMessage::Sync {
                members: vec![member(1), member(2)],
                reply: true,
            },
            GossipMessage::Ping {
                seq: 1,
                rumors: vec![Rumor::about(member(3))],
            },
            GossipMessage::Ack {
                seq: u64::MAX,
                rumors: vec![],
            },
            GossipMessage::PingReq {
                seq: 5,
                target: NodeId::from_u64(4),
                target_addr: "[::1]:5004".parse().unwrap(),
                rumors: vec![],
            },
            GossipMessage::Nack { seq: 6 },
            GossipMessage::Gossip {
                rumors: vec![Rumor::about(member(7))],
            },
        ];
        let sealed = Codec::sealed("dnd", 1400, Keyring::new(ClusterKey::generate()));
        for message in messages {
            let datagram = Datagram {
                sender: NodeId::from_u64(9),
                message,
            };
            let bytes = codec.encode(&datagram).unwrap();
            assert_eq!(codec.decode(&bytes).unwrap(), datagram);
            let bytes = sealed.encode(&datagram).unwrap();
            assert_eq!(sealed.decode(&bytes).unwrap(), datagram);
        }
    }

    #[test]
    fn a_sealed_codec_reads_only_what_its_keys_sealed_for_its_cluster() {
        let keyring = Keyring::new(ClusterKey::generate());
        let ours = Codec::sealed("dnd", 1400, keyring.clone());
        let bytes = ours.encode(&ping(2)).unwrap();
        assert_eq!(ours.decode(&bytes).unwrap(), ping(2));
        // The cluster name is associated data, never sent.
        assert!(!bytes.windows(3).any(|w| w == b"dnd"));
        let stranger = Codec::sealed("dnd", 1400, Keyring::new(ClusterKey::generate()));
        let other_cluster = Codec::sealed("other", 1400, keyring);
        let plain = Codec::new("dnd", 1400);
        for (name, foreign) in [
            ("another key", stranger.encode(&ping(2)).unwrap()),
            ("another cluster", other_cluster.encode(&ping(2)).unwrap()),
            ("in clear", plain.encode(&ping(2)).unwrap()),
        ] {
            assert_eq!(
                ours.decode(&foreign),
                Err(DecodeError::Unauthenticated),
                "{name}"
            );
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x80;
            assert!(ours.decode(&flipped).is_err(), "bit flipped at {at}");
        }
        // A plain node reads a sealed datagram as garbage, not as news.
        assert!(plain.decode(&bytes).is_err());
    }

    #[test]
    fn the_encoded_length_is_the_length_encode_gives() {
        let sealed = Codec::sealed("dnd", 1400, Keyring::new(ClusterKey::generate()));
        for codec in [Codec::new("dnd", 1400), sealed] {
            for news in [0, 1, 7] {
                let expected = codec.encode(&ping(news)).unwrap().len();
                assert_eq!(codec.encoded_len(&ping(news)).unwrap(), expected);
            }
        }
    }

    #[test]
    fn sealing_costs_its_overhead_and_no_more() {
        let plain = Codec::new("dnd", 1400);
        let sealed = Codec::sealed("dnd", 1400, Keyring::new(ClusterKey::generate()));
        let body = rmp_serde::to_vec(&ping(5)).unwrap().len();
        assert_eq!(
            sealed.encode(&ping(5)).unwrap().len(),
            body + SEALED_OVERHEAD
        );
        assert!(plain.encode(&ping(5)).unwrap().len() > body);
    }

    #[test]
    fn a_stranger_cluster_is_refused() {
        let ours = Codec::new("dnd", 1400);
        let theirs = Codec::new("other", 1400);
        let bytes = theirs.encode(&ping(1)).unwrap();
        assert_eq!(
            ours.decode(&bytes),
            Err(DecodeError::WrongCluster("other".into()))
        );
    }

    #[test]
    fn another_protocol_version_is_refused_before_its_body_is_read() {
        let envelope = Envelope {
            protocol: PROTOCOL_VERSION + 1,
            cluster: "dnd".into(),
            body: vec![0xc1, 0xc1],
        };
        let bytes = rmp_serde::to_vec(&envelope).unwrap();
        assert_eq!(
            Codec::new("dnd", 1400).decode(&bytes),
            Err(DecodeError::WrongVersion(PROTOCOL_VERSION + 1))
        );
    }

    #[test]
    fn oversized_datagrams_are_refused_unread() {
        let codec = Codec::new("dnd", 100);
        let bytes = Codec::new("dnd", usize::MAX).encode(&ping(10)).unwrap();
        assert!(bytes.len() > 100);
        assert!(matches!(
            codec.decode(&bytes),
            Err(DecodeError::Oversized { .. })
        ));
        assert_eq!(codec.encode_within_limit(&ping(10)).unwrap(), None);
    }

    #[test]
    fn a_valid_envelope_with_a_garbage_body_is_malformed() {
        let envelope = Envelope {
            protocol: PROTOCOL_VERSION,
            cluster: "dnd".into(),
            body: vec![1, 2, 3],
        };
        let bytes = rmp_serde::to_vec(&envelope).unwrap();
        assert_eq!(
            Codec::new("dnd", 1400).decode(&bytes),
            Err(DecodeError::MalformedBody)
        );
    }

    #[test]
    fn truncations_and_random_bytes_never_panic_and_never_decode_as_valid() {
        let codec = Codec::new("dnd", 1400);
        let bytes = codec.encode(&ping(3)).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                codec.decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes"
            );
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.random_range(0..200);
            let noise: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = codec.decode(&noise);
        }
    }

    #[test]
    fn twenty_rumors_fit_a_1400_byte_datagram() {
        let codec = Codec::new("a-cluster-name-of-moderate-length", 1400);
        let bytes = codec.encode(&ping(20)).unwrap();
        assert!(bytes.len() <= 1400, "{} bytes", bytes.len());
    }
}
