//! The byte format of the peer channel: length-prefixed frames, the
//! handshake, and the limits that keep a peer from making this node read or
//! allocate without bound.
//!
//! Owns the bytes only. Pure: no sockets, no tokio; the client and server
//! modules do the I/O and call in here to encode and judge what they read.
//!
//! A frame is a 4-byte big-endian body length, then the body, a msgpack value
//! encoded by rmp-serde's positional encoding (structs as arrays), as in
//! [`crate::wire`]. On a connection without a cluster secret the client's
//! first frames are a [`Hello`] and an [`Introduction`], answered by one
//! [`HelloReply`]; with a secret, the Noise handshake of [`super::secure`]
//! carries the introduction and the reply instead, and every frame after it
//! is sealed. After that every client frame is a request
//! `(request_id, Req)` and every server frame a response
//! `(request_id, Reply<Resp>)`, in any order.
//!
//! [`Hello`]'s layout is frozen forever, so that every version can read
//! enough of every other's hello to refuse it by name. Any other change to
//! the layouts here must raise [`PEER_PROTOCOL_VERSION`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Raised whenever the framing, [`HelloReply`], [`Reply`], the
/// request/response tuples or the data path's messages (`replica`) change
/// layout. 3: a forwarded write carries the client's write as it is and
/// the copies it needs; keys are checked as they decode. 4: values carry
/// a deadline; listings, watches and conditional writes.
pub const PEER_PROTOCOL_VERSION: u16 = 5;

/// The length prefix in front of every body.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The largest hello or hello reply either side reads: before the handshake
/// the other end is a stranger, and a stranger must not make this node
/// allocate [`super::PeerConfig::max_frame_bytes`] on its word.
pub const MAX_HELLO_BYTES: usize = 4096;

/// The msgpack marker of a two-element array (a fixarray), which every
/// request and response body starts with; it lets an undecodable body still
/// give up its request id.
const PAIR_MARKER: u8 = 0x92;

/// Why a frame was not built, or not accepted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("a frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("frame body does not decode: {0}")]
    Malformed(String),
    #[error("cannot encode a frame: {0}")]
    Encode(String),
}

/// The first frame on every connection, sent by the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    pub cluster_name: String,
}

impl Hello {
    /// This node's hello, speaking [`PEER_PROTOCOL_VERSION`].
    pub fn new(cluster_name: impl Into<String>) -> Self {
        Hello {
            protocol_version: PEER_PROTOCOL_VERSION,
            cluster_name: cluster_name.into(),
        }
    }

    /// Why a server of `cluster_name` speaking this version turns this hello
    /// away, if it does; the reason travels back to the client verbatim.
    pub fn refusal(&self, cluster_name: &str) -> Option<String> {
        if self.protocol_version != PEER_PROTOCOL_VERSION {
            Some(format!(
                "peer protocol version {} is not spoken here (this node speaks {PEER_PROTOCOL_VERSION})",
                self.protocol_version
            ))
        } else if self.cluster_name != cluster_name {
            Some(format!(
                "this node belongs to cluster {cluster_name:?}, not {:?}",
                self.cluster_name
            ))
        } else {
            None
        }
    }
}

/// Who the client is: the node id its requests are served as. Behind a
/// Noise handshake only a holder of the cluster secret can claim one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introduction {
    pub node_id: crate::node_id::NodeId,
}

/// The server's answer to a [`Hello`]. After a refusal it closes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome,
    Refused(String),
}

/// What a response carries: the handler's answer, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply<T> {
    Ok(T),
    /// The server could not decode the request or could not send the answer
    /// (it panicked, or did not fit a frame).
    RemoteError(String),
}

/// Encodes `value` as a whole frame, length prefix included, refusing a body
/// over `max_body_bytes`.
pub fn encode_frame<T: Serialize + ?Sized>(
    value: &T,
    max_body_bytes: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0; LENGTH_PREFIX_BYTES];
    rmp_serde::encode::write(&mut frame, value).map_err(|e| FrameError::Encode(e.to_string()))?;
    let size = frame.len() - LENGTH_PREFIX_BYTES;
    // The prefix itself caps a body at 4 GiB whatever the configured limit.
    let limit = max_body_bytes.min(u32::MAX as usize);
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    frame[..LENGTH_PREFIX_BYTES].copy_from_slice(&(size as u32).to_be_bytes());
    Ok(frame)
}

/// The body length a prefix announces, if this side will read that much.
pub fn body_length(
    prefix: [u8; LENGTH_PREFIX_BYTES],
    max_body_bytes: usize,
) -> Result<usize, FrameError> {
    let size = u32::from_be_bytes(prefix) as usize;
    if size > max_body_bytes {
        return Err(FrameError::TooLarge {
            size,
            limit: max_body_bytes,
        });
    }
    Ok(size)
}

/// Decodes one whole body. Trailing bytes make it malformed: a body that
/// decodes with bytes to spare was not written by a dnd peer.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let mut rest = body;
    let value = T::deserialize(&mut rmp_serde::Deserializer::new(&mut rest))
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} bytes after the value",
            rest.len()
        )));
    }
    Ok(value)
}

pub fn encode_request<Req: Serialize>(
    id: u64,
    request: &Req,
    max_body_bytes: usize,
) -> Result<Vec<u8>, FrameError> {
    encode_frame(&(id, request), max_body_bytes)
}

pub fn decode_request<Req: DeserializeOwned>(body: &[u8]) -> Result<(u64, Req), FrameError> {
    decode_body(body)
}

pub fn encode_response<Resp: Serialize>(
    id: u64,
    reply: &Reply<Resp>,
    max_body_bytes: usize,
) -> Result<Vec<u8>, FrameError> {
    encode_frame(&(id, reply), max_body_bytes)
}

pub fn decode_response<Resp: DeserializeOwned>(
    body: &[u8],
) -> Result<(u64, Reply<Resp>), FrameError> {
    decode_body(body)
}

/// The request id of a request or response body whose payload does not
/// decode, so that the one exchange can fail rather than the connection.
pub fn peek_request_id(body: &[u8]) -> Option<u64> {
    match body.split_first() {
        // `from_slice` stops after the id and ignores the payload behind it.
        Some((&PAIR_MARKER, rest)) => rmp_serde::from_slice(rest).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    enum Request {
        Get { key: String },
        Put { key: String, value: Vec<u8> },
    }

    fn split(frame: &[u8]) -> ([u8; LENGTH_PREFIX_BYTES], &[u8]) {
        let (prefix, body) = frame.split_at(LENGTH_PREFIX_BYTES);
        (prefix.try_into().unwrap(), body)
    }

    fn put(value_len: usize) -> Request {
        Request::Put {
            key: "user1".into(),
            value: vec![7; value_len],
        }
    }

    #[test]
    fn requests_and_responses_round_trip_with_their_length_prefix() {
        for (id, request) in [(0, Request::Get { key: "k".into() }), (u64::MAX, put(300))] {
            let frame = encode_request(id, &request, 1 << 20).unwrap();
            let (prefix, body) = split(&frame);
            assert_eq!(body_length(prefix, 1 << 20).unwrap(), body.len());
            assert_eq!(decode_request::<Request>(body).unwrap(), (id, request));
        }
        for reply in [Reply::Ok(vec![1u8, 2, 3]), Reply::RemoteError("no".into())] {
            let frame = encode_response(42, &reply, 1 << 20).unwrap();
            let (_, body) = split(&frame);
            assert_eq!(decode_response::<Vec<u8>>(body).unwrap(), (42, reply));
        }
    }

    #[test]
    fn the_hello_and_its_replies_round_trip() {
        let frame = encode_frame(&Hello::new("dnd"), MAX_HELLO_BYTES).unwrap();
        let (prefix, body) = split(&frame);
        assert_eq!(body_length(prefix, MAX_HELLO_BYTES).unwrap(), body.len());
        assert_eq!(decode_body::<Hello>(body).unwrap(), Hello::new("dnd"));
        for reply in [HelloReply::Welcome, HelloReply::Refused("why".into())] {
            let frame = encode_frame(&reply, MAX_HELLO_BYTES).unwrap();
            assert_eq!(decode_body::<HelloReply>(split(&frame).1).unwrap(), reply);
        }
    }

    #[test]
    fn a_hello_is_refused_for_another_cluster_or_version_with_a_reason() {
        assert_eq!(Hello::new("dnd").refusal("dnd"), None);
        let stranger = Hello::new("other").refusal("dnd").unwrap();
        assert!(stranger.contains("\"other\""), "{stranger}");
        let future = Hello {
            protocol_version: PEER_PROTOCOL_VERSION + 1,
            cluster_name: "dnd".into(),
        };
        assert!(future.refusal("dnd").unwrap().contains("version"));
    }

    #[test]
    fn the_hello_layout_is_frozen() {
        // [version, "dnd"]: a two-element array of the version and the name.
        let bytes = rmp_serde::to_vec(&Hello::new("dnd")).unwrap();
        assert_eq!(
            bytes,
            [0x92, PEER_PROTOCOL_VERSION as u8, 0xa3, b'd', b'n', b'd']
        );
    }

    #[test]
    fn an_oversized_frame_is_never_built_and_an_oversized_prefix_never_read() {
        assert!(matches!(
            encode_request(1, &put(1000), 100),
            Err(FrameError::TooLarge { limit: 100, .. })
        ));
        assert_eq!(
            body_length(u32::MAX.to_be_bytes(), 1 << 20),
            Err(FrameError::TooLarge {
                size: u32::MAX as usize,
                limit: 1 << 20
            })
        );
        assert_eq!(body_length(100u32.to_be_bytes(), 100), Ok(100));
        assert!(body_length(101u32.to_be_bytes(), 100).is_err());
    }

    #[test]
    fn every_truncation_of_a_body_is_refused() {
        let frame = encode_request(9, &put(40), 1 << 20).unwrap();
        let body = split(&frame).1;
        for cut in 0..body.len() {
            assert!(
                decode_request::<Request>(&body[..cut]).is_err(),
                "prefix of {cut} bytes"
            );
        }
        let hello = encode_frame(&Hello::new("dnd"), MAX_HELLO_BYTES).unwrap();
        let body = split(&hello).1;
        for cut in 0..body.len() {
            assert!(decode_body::<Hello>(&body[..cut]).is_err());
        }
    }

    #[test]
    fn trailing_bytes_make_a_body_malformed() {
        let frame = encode_request(9, &put(4), 1 << 20).unwrap();
        let mut body = split(&frame).1.to_vec();
        body.push(0);
        assert!(matches!(
            decode_request::<Request>(&body),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn the_request_id_survives_a_payload_that_does_not_decode() {
        let frame = encode_request(77, &"not a request", 1 << 20).unwrap();
        let body = split(&frame).1;
        assert!(decode_request::<Request>(body).is_err());
        assert_eq!(peek_request_id(body), Some(77));
        let frame = encode_request(u64::MAX, &put(3), 1 << 20).unwrap();
        assert_eq!(peek_request_id(split(&frame).1), Some(u64::MAX));
        assert_eq!(peek_request_id(b""), None);
        assert_eq!(peek_request_id(b"GET / HTTP/1.1"), None);
        assert_eq!(peek_request_id(&[PAIR_MARKER]), None);
        assert_eq!(peek_request_id(&[PAIR_MARKER, 0xa1, b'x']), None);
    }

    #[test]
    fn garbage_never_panics_the_decoders() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let noise: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = decode_request::<Request>(&noise);
            let _ = decode_response::<Vec<u8>>(&noise);
            let _ = peek_request_id(&noise);
            if let Ok(hello) = decode_body::<Hello>(&noise) {
                // Only a two-element array of a small integer and a string
                // decodes; random bytes essentially never form one.
                assert_eq!(noise[0], PAIR_MARKER, "{hello:?} from {noise:?}");
            }
        }
        assert!(decode_body::<Hello>(b"GET / HTTP/1.1\r\n\r\n").is_err());
    }
}
