//! The node-to-node request channel: a client that sends a typed request to
//! a peer's address and waits for its typed answer, and a server that hands
//! each request it receives to a handler.
//!
//! Owns the TCP connections between nodes: one multiplexed connection per
//! peer address, opened on first use after a handshake that keeps out other
//! clusters and protocol versions (and, with a cluster secret, everyone who
//! does not hold it), and opened again on the next request after it fails.
//! The server hands each request to its handler with the node id the
//! client introduced itself as; it is the handler's job to judge it. Generic over the request and response types: it must never know
//! what they mean, and never retry, because only the caller knows whether a
//! request may be repeated.
//!
//! - [`frame`]: the byte format, pure.
//! - [`secure`]: the Noise handshake and sealed frames, pure.
//! - [`client`]: [`PeerClient`], matching answers to requests by id.
//! - [`server`]: [`serve`], one task per connection and per request.
//!
//! TCP rather than the gossip socket because values can be many MiB, far
//! past a datagram, and because replica traffic needs ordered, flow
//! controlled delivery that gossip does not.

pub mod client;
pub mod frame;
pub mod secure;
pub mod server;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use std::time::Instant;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::keyring::Keyring;
use crate::log_limit::LogLimit;
use crate::node_id::NodeId;
pub use client::PeerClient;
pub use frame::{FrameError, PEER_PROTOCOL_VERSION};
pub use server::serve;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_IN_FLIGHT_PER_PEER: usize = 128;
/// Room for the largest value a node accepts by default and then some; both
/// ends of a connection should agree on it.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Handshakes in progress from one address: a stranger cannot hold more
/// of this node's connections than this.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 8;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Peers of other clusters are refused at the handshake.
    pub cluster_name: String,
    /// How long [`PeerClient::request`] waits for an answer, counting the
    /// wait for a connection and for an in-flight slot.
    pub request_timeout: Duration,
    /// How long opening a connection (TCP and handshake) may take; the
    /// server also gives a new connection this long to say hello.
    pub connect_timeout: Duration,
    /// Requests one client has outstanding to one peer at once; the server
    /// runs at most this many handlers per connection and stops reading
    /// beyond that, so TCP pushes back on the sender. A request that times
    /// out frees its slot at once, though the peer may still be working on it.
    pub max_in_flight_per_peer: usize,
    /// The largest frame body sent or read. Larger requests fail before they
    /// are sent; a larger incoming frame closes its connection unread.
    pub max_frame_bytes: usize,
    /// The local address connections start from: the node's own, so that
    /// peers (and firewall rules) see requests come from the address it
    /// advertises. `None` lets the OS choose.
    pub bind_ip: Option<IpAddr>,
    /// Who this node introduces itself as to the peers it connects to.
    pub node_id: NodeId,
    /// With a keyring, connections are Noise sessions keyed from the cluster
    /// secret; without, frames travel as they are.
    pub keyring: Option<Keyring>,
    /// Handshakes the server lets run at once from one IP address, and
    /// connections in all (each member may hold a few); more are closed
    /// unread.
    pub max_connections_per_address: usize,
    pub max_connections: usize,
    /// A connection on which the client sends nothing this long is closed;
    /// the client opens a new one on its next request.
    pub idle_timeout: Duration,
}

impl PeerConfig {
    pub fn new(cluster_name: impl Into<String>) -> Self {
        PeerConfig {
            cluster_name: cluster_name.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_in_flight_per_peer: DEFAULT_MAX_IN_FLIGHT_PER_PEER,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            bind_ip: None,
            node_id: NodeId::from_u64(0),
            keyring: None,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// The in-flight bound as a semaphore size: zero would wait forever, and
    /// tokio refuses more permits than it can count.
    fn in_flight_permits(&self) -> usize {
        self.max_in_flight_per_peer
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS)
    }
}

/// Why a request to a peer got no answer. `Connect`, `Refused` and
/// `FrameTooLarge` mean the request never left this node, as does `Codec`
/// when the request would not encode; after any other error the peer may
/// have carried it out, and only the caller can tell whether to repeat it.
#[derive(Debug, Error)]
pub enum PeerError {
    #[error("cannot connect to peer {addr}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("no answer from the peer within {0:?}")]
    Timeout(Duration),
    #[error("the connection to the peer closed before it answered")]
    Closed,
    #[error("the peer refused the connection: {0}")]
    Refused(String),
    #[error("a frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("cannot encode or decode a peer message: {0}")]
    Codec(String),
    #[error("the peer could not handle the request: {0}")]
    Remote(String),
}

impl From<FrameError> for PeerError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { size, limit } => PeerError::FrameTooLarge { size, limit },
            FrameError::Malformed(_) | FrameError::Encode(_) => PeerError::Codec(e.to_string()),
        }
    }
}

/// Why a frame could not be read from a connection.
#[derive(Debug, Error)]
enum ReadError {
    #[error("connection closed by the peer")]
    Eof,
    #[error("connection closed by the peer in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Refused(FrameError),
    #[error("a sealed frame did not open")]
    Unsealed,
}

/// Reads one frame's body, refusing one longer than `max_body_bytes` before
/// reading any of it.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_body_bytes: usize,
) -> Result<Vec<u8>, ReadError> {
    // A peer that announces a large frame and then stalls must not hold
    // that much memory: the body grows as its bytes arrive.
    const INITIAL_BODY_CAPACITY: usize = 64 * 1024;
    let mut prefix = [0; frame::LENGTH_PREFIX_BYTES];
    let mut filled = 0;
    while filled < prefix.len() {
        match reader.read(&mut prefix[filled..]).await? {
            0 if filled == 0 => return Err(ReadError::Eof),
            0 => return Err(ReadError::Truncated),
            n => filled += n,
        }
    }
    let size = frame::body_length(prefix, max_body_bytes).map_err(ReadError::Refused)?;
    let mut body = Vec::with_capacity(size.min(INITIAL_BODY_CAPACITY));
    (&mut *reader)
        .take(size as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() < size {
        return Err(ReadError::Truncated);
    }
    Ok(body)
}

/// Writes every frame it is given, sealed, in order, until the channel
/// closes. Frames queued together leave in as few writes as the buffer
/// allows.
async fn write_frames<W: AsyncWrite + Unpin>(
    writer: W,
    mut frames: mpsc::Receiver<Vec<u8>>,
    mut sealer: secure::Sealer,
) -> io::Result<()> {
    let mut writer = BufWriter::new(writer);
    let mut seal = |frame| sealer.seal(frame).map_err(io::Error::other);
    while let Some(frame) = frames.recv().await {
        writer.write_all(&seal(frame)?).await?;
        while let Ok(frame) = frames.try_recv() {
            writer.write_all(&seal(frame)?).await?;
        }
        writer.flush().await?;
    }
    Ok(())
}

/// Reads one frame and opens it: the plain body.
async fn read_sealed_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    opener: &mut secure::Opener,
    max_body_bytes: usize,
) -> Result<Vec<u8>, ReadError> {
    let wire = read_frame(reader, opener.wire_limit(max_body_bytes)).await?;
    let body = opener.open(wire).map_err(|_| ReadError::Unsealed)?;
    if body.len() > max_body_bytes {
        return Err(ReadError::Refused(FrameError::TooLarge {
            size: body.len(),
            limit: max_body_bytes,
        }));
    }
    Ok(body)
}

/// Reads one handshake message (2-byte length, then at most
/// [`frame::MAX_HELLO_BYTES`]).
async fn read_handshake<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut prefix = [0; secure::HANDSHAKE_PREFIX_BYTES];
    reader
        .read_exact(&mut prefix)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ReadError::Eof,
            _ => ReadError::Io(e),
        })?;
    let size = u16::from_be_bytes(prefix) as usize;
    if size > frame::MAX_HELLO_BYTES {
        return Err(ReadError::Refused(FrameError::TooLarge {
            size,
            limit: frame::MAX_HELLO_BYTES,
        }));
    }
    let mut message = vec![0; size];
    reader
        .read_exact(&mut message)
        .await
        .map_err(|_| ReadError::Truncated)?;
    Ok(message)
}

/// Refusals are counted always and logged at most once a minute per
/// address, so a hostile peer cannot flood the log.
#[derive(Default)]
struct RefusalLog(Mutex<LogLimit<IpAddr>>);

impl RefusalLog {
    fn allow(&self, ip: IpAddr) -> bool {
        lock(&self.0).allow(ip, Instant::now())
    }
}

/// Nothing panics while holding the locks in this module, and if something
/// did the maps would still be consistent, so a poisoned lock is just a lock.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
