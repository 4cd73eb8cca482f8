//! The peer channel's protection: a Noise handshake keyed from the cluster
//! secret, and the sealing of every frame after it.
//!
//! Owns the Noise parameters, the handshake messages' framing and the
//! record layout of sealed frames. Pure: it builds and opens bytes and never
//! touches a socket; the client and server do the I/O.
//!
//! The protocol is `Noise_NNpsk0_25519_AESGCM_BLAKE2s`. The pattern,
//! `NNpsk0` (Noise spec §9), has no static keys: both sides prove
//! they hold the pre-shared key derived from the cluster secret, and fresh
//! ephemeral keys give every connection its own session keys (forward
//! secrecy). The prologue binds the peer protocol version and the cluster
//! name, so a node of another cluster or version fails the handshake like a
//! stranger does, and learns nothing either way: a server that cannot open
//! the first message closes the connection without a word.
//!
//! After the handshake each frame's body (the plain frame without its length
//! prefix) is cut into chunks of at most 65,519 bytes, each sealed as one
//! Noise transport message under the next nonce of its direction; the wire
//! frame is the sealed length then the sealed chunks. A peer that drops,
//! reorders, repeats or alters any byte makes the next open fail, which
//! closes the connection.

use std::sync::Arc;

use snow::{HandshakeState, StatelessTransportState};

use super::frame::{self, PEER_PROTOCOL_VERSION};

pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_AESGCM_BLAKE2s";

/// Noise's limit on one message, and what its tag takes of it.
const MAX_NOISE_MESSAGE: usize = 65_535;
const TAG_BYTES: usize = 16;
const MAX_CHUNK_PLAINTEXT: usize = MAX_NOISE_MESSAGE - TAG_BYTES;

/// The length prefix of a handshake message.
pub const HANDSHAKE_PREFIX_BYTES: usize = 2;

/// What both ends mix into the handshake: a node of another cluster or
/// protocol version computes other keys and fails it.
pub fn prologue(cluster_name: &str) -> Vec<u8> {
    let mut prologue = b"dnd peer\0".to_vec();
    prologue.extend_from_slice(&PEER_PROTOCOL_VERSION.to_be_bytes());
    prologue.extend_from_slice(cluster_name.as_bytes());
    prologue
}

fn builder<'a>(psk: &'a [u8; 32], prologue: &'a [u8]) -> Result<snow::Builder<'a>, snow::Error> {
    let params = NOISE_PARAMS
        .parse()
        .map_err(|_| snow::Error::Init(snow::error::InitStage::ParameterOverwrite))?;
    snow::Builder::new(params).psk(0, psk)?.prologue(prologue)
}

pub fn initiator(psk: &[u8; 32], prologue: &[u8]) -> Result<HandshakeState, snow::Error> {
    builder(psk, prologue)?.build_initiator()
}

pub fn responder(psk: &[u8; 32], prologue: &[u8]) -> Result<HandshakeState, snow::Error> {
    builder(psk, prologue)?.build_responder()
}

/// Writes the next handshake message carrying `payload`, with its 2-byte
/// length prefix.
pub fn handshake_message(
    state: &mut HandshakeState,
    payload: &[u8],
) -> Result<Vec<u8>, snow::Error> {
    let mut out = vec![0; HANDSHAKE_PREFIX_BYTES + frame::MAX_HELLO_BYTES];
    let len = state.write_message(payload, &mut out[HANDSHAKE_PREFIX_BYTES..])?;
    out[..HANDSHAKE_PREFIX_BYTES].copy_from_slice(&(len as u16).to_be_bytes());
    out.truncate(HANDSHAKE_PREFIX_BYTES + len);
    Ok(out)
}

/// Reads a handshake message (without its prefix), returning its payload.
pub fn read_handshake_message(
    state: &mut HandshakeState,
    message: &[u8],
) -> Result<Vec<u8>, snow::Error> {
    let mut payload = vec![0; message.len()];
    let len = state.read_message(message, &mut payload)?;
    payload.truncate(len);
    Ok(payload)
}

/// Tries each pre-shared key in turn (the keyring's, primary first) on the
/// first handshake message; the state of the one that opens it, with the
/// payload.
pub fn respond_with_any(
    psks: &[[u8; 32]],
    prologue: &[u8],
    message: &[u8],
) -> Option<(HandshakeState, Vec<u8>)> {
    psks.iter().find_map(|psk| {
        let mut state = responder(psk, prologue).ok()?;
        let payload = read_handshake_message(&mut state, message).ok()?;
        Some((state, payload))
    })
}

/// How frames travel on one connection: as they are (no cluster secret),
/// or sealed under the session a handshake agreed on.
#[derive(Clone)]
pub enum Session {
    Plain,
    Noise(Arc<StatelessTransportState>),
}

impl Session {
    pub fn from_handshake(state: HandshakeState) -> Result<Self, snow::Error> {
        Ok(Session::Noise(Arc::new(
            state.into_stateless_transport_mode()?,
        )))
    }

    /// The sealing side; one per connection, used by its single writer.
    pub fn sealer(&self) -> Sealer {
        Sealer {
            session: self.clone(),
            nonce: 0,
        }
    }

    /// The opening side; one per connection, used by its single reader.
    pub fn opener(&self) -> Opener {
        Opener {
            session: self.clone(),
            nonce: 0,
        }
    }
}

/// The sealed size of a body of `plain` bytes.
pub fn sealed_len(plain: usize) -> usize {
    plain + TAG_BYTES * plain.div_ceil(MAX_CHUNK_PLAINTEXT).max(1)
}

pub struct Sealer {
    session: Session,
    nonce: u64,
}

impl Sealer {
    /// Turns a plain frame (length prefix and body) into the frame that goes
    /// on the wire.
    pub fn seal(&mut self, plain_frame: Vec<u8>) -> Result<Vec<u8>, snow::Error> {
        let Session::Noise(transport) = &self.session else {
            return Ok(plain_frame);
        };
        let body = &plain_frame[frame::LENGTH_PREFIX_BYTES.min(plain_frame.len())..];
        let sealed = sealed_len(body.len());
        let mut out = vec![0; frame::LENGTH_PREFIX_BYTES + sealed];
        // The plain limit already kept bodies within u32 less the tags.
        out[..frame::LENGTH_PREFIX_BYTES].copy_from_slice(&(sealed as u32).to_be_bytes());
        let mut at = frame::LENGTH_PREFIX_BYTES;
        let chunks: Vec<&[u8]> = if body.is_empty() {
            vec![body]
        } else {
            body.chunks(MAX_CHUNK_PLAINTEXT).collect()
        };
        for chunk in chunks {
            at += transport.write_message(self.nonce, chunk, &mut out[at..])?;
            self.nonce += 1;
        }
        debug_assert_eq!(at, out.len());
        Ok(out)
    }
}

pub struct Opener {
    session: Session,
    nonce: u64,
}

impl Opener {
    /// The largest wire body to read for a plain body of at most `max`.
    pub fn wire_limit(&self, max: usize) -> usize {
        match self.session {
            Session::Plain => max,
            Session::Noise(_) => sealed_len(max),
        }
    }

    /// The plain body of a wire body.
    pub fn open(&mut self, wire_body: Vec<u8>) -> Result<Vec<u8>, snow::Error> {
        let Session::Noise(transport) = &self.session else {
            return Ok(wire_body);
        };
        if wire_body.len() < TAG_BYTES {
            return Err(snow::Error::Decrypt);
        }
        let mut plain = vec![0; wire_body.len()];
        let mut len = 0;
        for chunk in wire_body.chunks(MAX_NOISE_MESSAGE) {
            len += transport.read_message(self.nonce, chunk, &mut plain[len..])?;
            self.nonce += 1;
        }
        plain.truncate(len);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(client_psk: [u8; 32], server_psks: &[[u8; 32]]) -> Option<(Session, Session)> {
        let prologue = prologue("dnd");
        let mut client = initiator(&client_psk, &prologue).unwrap();
        let first = handshake_message(&mut client, b"hello").unwrap();
        let (mut server, payload) =
            respond_with_any(server_psks, &prologue, &first[HANDSHAKE_PREFIX_BYTES..])?;
        assert_eq!(payload, b"hello");
        let second = handshake_message(&mut server, b"welcome").unwrap();
        let payload =
            read_handshake_message(&mut client, &second[HANDSHAKE_PREFIX_BYTES..]).unwrap();
        assert_eq!(payload, b"welcome");
        Some((
            Session::from_handshake(client).unwrap(),
            Session::from_handshake(server).unwrap(),
        ))
    }

    fn plain_frame(body: &[u8]) -> Vec<u8> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    #[test]
    fn a_handshake_opens_only_for_a_shared_key_and_frames_of_any_size_round_trip() {
        let (key, other) = ([7; 32], [8; 32]);
        assert!(pair(key, &[other]).is_none());
        let (client, server) = pair(key, &[other, key]).expect("the second key opens it");
        let (mut seal, mut open) = (client.sealer(), server.opener());
        for size in [
            0,
            1,
            1000,
            MAX_CHUNK_PLAINTEXT,
            MAX_CHUNK_PLAINTEXT + 1,
            300_000,
        ] {
            let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let wire = seal.seal(plain_frame(&body)).unwrap();
            let announced = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
            assert_eq!(announced, wire.len() - 4);
            assert_eq!(announced, sealed_len(size));
            assert!(announced <= open.wire_limit(size));
            assert_eq!(open.open(wire[4..].to_vec()).unwrap(), body, "{size} bytes");
        }
    }

    #[test]
    fn an_altered_replayed_or_reordered_frame_does_not_open() {
        let (client, server) = pair([1; 32], &[[1; 32]]).unwrap();
        let mut seal = client.sealer();
        let first = seal.seal(plain_frame(b"first")).unwrap();
        let second = seal.seal(plain_frame(b"second")).unwrap();
        let mut open = server.opener();
        assert!(open.open(second[4..].to_vec()).is_err(), "out of order");
        let mut open = server.opener();
        let mut flipped = first[4..].to_vec();
        flipped[3] ^= 1;
        assert!(open.open(flipped).is_err(), "altered");
        let mut open = server.opener();
        assert!(open.open(first[4..].to_vec()).is_ok());
        assert!(open.open(first[4..].to_vec()).is_err(), "replayed");
        // The marker of a sealed value never shows in clear.
        let secret = seal.seal(plain_frame(b"MARKER-42")).unwrap();
        assert!(!secret.windows(9).any(|w| w == b"MARKER-42"));
    }

    #[test]
    fn another_cluster_name_fails_the_handshake_even_with_the_key() {
        let mut client = initiator(&[3; 32], &prologue("dnd")).unwrap();
        let first = handshake_message(&mut client, b"").unwrap();
        assert!(respond_with_any(&[[3; 32]], &prologue("other"), &first[2..]).is_none());
    }
}
