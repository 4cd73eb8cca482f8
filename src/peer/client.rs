//! The sending side: [`PeerClient`] keeps one connection per peer address
//! and matches the answers coming back, in any order, to the requests
//! waiting for them.
//!
//! Owns the connections it opens and the table of requests waiting on each.
//! A request's id is its only link to its answer; a request that gives up
//! (timeout, or its caller dropped it) leaves the table at once, and a late
//! answer to it is dropped. It must never retry: a request that timed out may
//! still have been carried out.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use super::frame::{self, Hello, HelloReply, Introduction, Reply};
use super::secure::{self, Session};
use super::{
    lock, read_frame, read_handshake, read_sealed_frame, write_frames, PeerConfig, PeerError,
    ReadError,
};
use crate::metrics::SharedMetrics;

/// Sends requests of type `Req` to peers and returns their `Resp`.
///
/// Cheap to clone; clones share connections. Usable from any tokio runtime,
/// actix arbiters included: connection tasks are spawned on the runtime of
/// the request that opens them, and end when their connection fails or the
/// last clone of the client is dropped.
pub struct PeerClient<Req, Resp> {
    inner: Arc<Inner<Resp>>,
    /// A request's kind, as the latency histogram labels it.
    kind_of: fn(&Req) -> &'static str,
    _request: PhantomData<fn(&Req)>,
}

impl<Req, Resp> Clone for PeerClient<Req, Resp> {
    fn clone(&self) -> Self {
        PeerClient {
            inner: self.inner.clone(),
            kind_of: self.kind_of,
            _request: PhantomData,
        }
    }
}

struct Inner<Resp> {
    config: PeerConfig,
    metrics: SharedMetrics,
    peers: Mutex<HashMap<SocketAddr, Arc<Peer<Resp>>>>,
    /// Peers tests cut this node off from: requests to them fail at once,
    /// as if the network dropped everything.
    #[cfg(feature = "fault-injection")]
    blocked: Mutex<std::collections::HashSet<SocketAddr>>,
}

/// What the client keeps per peer address, across reconnections.
struct Peer<Resp> {
    addr: SocketAddr,
    /// Per peer rather than per connection, so the bound holds while a
    /// connection is replaced.
    in_flight: Semaphore,
    /// Unique across this peer's connections, so an id names one request.
    next_id: AtomicU64,
    current: Mutex<Option<Arc<Connection<Resp>>>>,
    /// Held while opening a connection, so that requests arriving meanwhile
    /// wait for it rather than each opening their own.
    connecting: tokio::sync::Mutex<()>,
}

/// One open connection: the way to its writer, and who waits on it.
struct Connection<Resp> {
    frames: mpsc::Sender<Vec<u8>>,
    pending: Arc<Pending<Resp>>,
}

type Waiter<Resp> = oneshot::Sender<Result<Resp, PeerError>>;

/// The requests waiting for an answer on one connection; `None` once the
/// connection has ended, so nothing can wait on it any more.
struct Pending<Resp> {
    waiting: Mutex<Option<HashMap<u64, Waiter<Resp>>>>,
}

impl<Req, Resp> PeerClient<Req, Resp>
where
    Req: Serialize + Send + Sync + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    pub fn new(config: PeerConfig, metrics: SharedMetrics) -> Self {
        PeerClient {
            inner: Arc::new(Inner {
                config,
                metrics,
                peers: Mutex::new(HashMap::new()),
                #[cfg(feature = "fault-injection")]
                blocked: Mutex::new(Default::default()),
            }),
            kind_of: |_| "request",
            _request: PhantomData,
        }
    }

    /// The same client, its requests' latencies labelled by `kind_of`
    /// (a fixed, small set of names) rather than all as `request`.
    pub fn with_kinds(self, kind_of: fn(&Req) -> &'static str) -> Self {
        PeerClient { kind_of, ..self }
    }

    /// Cuts this client off from `addr` until [`PeerClient::heal`]: a
    /// partition as far as this node's requests are concerned.
    #[cfg(feature = "fault-injection")]
    pub fn block(&self, addr: SocketAddr) {
        lock(&self.inner.blocked).insert(addr);
    }

    #[cfg(feature = "fault-injection")]
    pub fn heal(&self) {
        lock(&self.inner.blocked).clear();
    }

    pub fn config(&self) -> &PeerConfig {
        &self.inner.config
    }

    /// Sends `request` to `peer` and waits at most the configured request
    /// timeout for its answer.
    pub async fn request(&self, peer: SocketAddr, request: &Req) -> Result<Resp, PeerError> {
        self.request_within(peer, request, self.inner.config.request_timeout)
            .await
    }

    /// Sends `request` to `peer` and waits at most `timeout` for its answer,
    /// counting the wait for a connection and for an in-flight slot.
    pub async fn request_within(
        &self,
        peer: SocketAddr,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let started = Instant::now();
        let result = self.try_request(peer, request, timeout).await;
        self.inner.metrics.latencies.observe_replica(
            (self.kind_of)(request),
            result.is_ok(),
            started.elapsed(),
        );
        if let Err(error) = &result {
            self.inner.metrics.peer_request_failures.inc();
            tracing::debug!(%peer, %error, "peer request failed");
        }
        result
    }

    async fn try_request(
        &self,
        addr: SocketAddr,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        #[cfg(feature = "fault-injection")]
        if lock(&self.inner.blocked).contains(&addr) {
            return Err(PeerError::Connect {
                addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "blocked by fault injection",
                ),
            });
        }
        let peer = self.inner.peer(addr);
        let id = peer.next_id.fetch_add(1, Ordering::Relaxed);
        // Encoded before anything else, so a request that can never be sent
        // fails without touching the network.
        let frame = frame::encode_request(id, request, self.inner.config.max_frame_bytes)?;
        self.inner.metrics.peer_bytes_sent.add(frame.len() as u64);
        let deadline = Instant::now() + timeout;
        tokio::time::timeout_at(deadline, self.exchange(&peer, id, frame))
            .await
            .unwrap_or(Err(PeerError::Timeout(timeout)))
    }

    async fn exchange(
        &self,
        peer: &Peer<Resp>,
        id: u64,
        frame: Vec<u8>,
    ) -> Result<Resp, PeerError> {
        // The semaphore is never closed.
        let _slot = peer
            .in_flight
            .acquire()
            .await
            .map_err(|_| PeerError::Closed)?;
        let connection = self.connection(peer).await?;
        let answer = connection.pending.register(id)?;
        let _waiting = Deregister {
            pending: &connection.pending,
            id,
        };
        connection
            .frames
            .send(frame)
            .await
            .map_err(|_| PeerError::Closed)?;
        self.inner.metrics.peer_requests_sent.inc();
        // A dropped sender means the connection ended without a word for us.
        answer.await.unwrap_or(Err(PeerError::Closed))
    }

    /// The peer's open connection, opening one if there is none.
    async fn connection(&self, peer: &Peer<Resp>) -> Result<Arc<Connection<Resp>>, PeerError> {
        if let Some(connection) = peer.open_connection() {
            return Ok(connection);
        }
        let _connecting = peer.connecting.lock().await;
        if let Some(connection) = peer.open_connection() {
            return Ok(connection);
        }
        let connect_timeout = self.inner.config.connect_timeout;
        let connection = tokio::time::timeout(connect_timeout, self.open(peer.addr))
            .await
            .unwrap_or_else(|_| {
                Err(PeerError::Connect {
                    addr: peer.addr,
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection and handshake within {connect_timeout:?}"),
                    ),
                })
            })?;
        let connection = Arc::new(connection);
        *lock(&peer.current) = Some(connection.clone());
        Ok(connection)
    }

    /// Connects, says hello, and starts the connection's task.
    async fn open(&self, addr: SocketAddr) -> Result<Connection<Resp>, PeerError> {
        let config = &self.inner.config;
        let connect_error = |source| PeerError::Connect { addr, source };
        let stream = match config.bind_ip.filter(|ip| !ip.is_unspecified()) {
            Some(ip) => {
                let socket = match ip {
                    IpAddr::V4(_) => TcpSocket::new_v4(),
                    IpAddr::V6(_) => TcpSocket::new_v6(),
                }
                .map_err(connect_error)?;
                socket.bind(SocketAddr::new(ip, 0)).map_err(connect_error)?;
                socket.connect(addr).await.map_err(connect_error)?
            }
            None => TcpStream::connect(addr).await.map_err(connect_error)?,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%addr, %error, "cannot disable Nagle on a peer connection");
        }
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let introduction = Introduction {
            node_id: config.node_id,
        };
        let read_error = |e: ReadError| match e {
            ReadError::Eof | ReadError::Truncated => PeerError::Closed,
            ReadError::Io(source) => PeerError::Connect { addr, source },
            ReadError::Refused(e) => PeerError::Codec(e.to_string()),
            ReadError::Unsealed => PeerError::Codec(e.to_string()),
        };
        let (reply, session) = match &config.keyring {
            Some(keyring) => {
                let noise_error = |e: snow::Error| PeerError::Codec(e.to_string());
                let psk = keyring.peer_psks()[0];
                let mut state = secure::initiator(&psk, &secure::prologue(&config.cluster_name))
                    .map_err(noise_error)?;
                let payload = frame::encode_frame(&introduction, frame::MAX_HELLO_BYTES)?;
                let first =
                    secure::handshake_message(&mut state, &payload[frame::LENGTH_PREFIX_BYTES..])
                        .map_err(noise_error)?;
                writer.write_all(&first).await.map_err(connect_error)?;
                // A server that cannot open our first message closes without
                // a word: it holds none of our keys, or is of another
                // cluster or version.
                let second = read_handshake(&mut reader).await.map_err(|e| match e {
                    ReadError::Eof | ReadError::Truncated => PeerError::Refused(
                        "the peer closed the connection at the handshake: it does not hold this node's primary cluster key, or is of another cluster or protocol version".into(),
                    ),
                    other => read_error(other),
                })?;
                let reply = secure::read_handshake_message(&mut state, &second).map_err(|_| {
                    PeerError::Refused(
                        "the peer's handshake did not open under this node's primary cluster key"
                            .into(),
                    )
                })?;
                (reply, Session::from_handshake(state).map_err(noise_error)?)
            }
            None => {
                let hello =
                    frame::encode_frame(&Hello::new(&config.cluster_name), frame::MAX_HELLO_BYTES)?;
                writer.write_all(&hello).await.map_err(connect_error)?;
                let intro = frame::encode_frame(&introduction, frame::MAX_HELLO_BYTES)?;
                writer.write_all(&intro).await.map_err(connect_error)?;
                let reply = read_frame(&mut reader, frame::MAX_HELLO_BYTES)
                    .await
                    .map_err(read_error)?;
                (reply, Session::Plain)
            }
        };
        match frame::decode_body(&reply)? {
            HelloReply::Welcome => {}
            HelloReply::Refused(reason) => {
                tracing::warn!(%addr, %reason, "peer refused the connection");
                return Err(PeerError::Refused(reason));
            }
        }
        self.inner.metrics.peer_connections_opened.inc();
        tracing::debug!(%addr, "peer connection opened");

        let (frames, outgoing) = mpsc::channel(config.in_flight_permits());
        let pending = Arc::new(Pending::new());
        let run = run_connection(
            addr,
            reader,
            writer,
            outgoing,
            session,
            pending.clone(),
            self.inner.metrics.clone(),
            config.max_frame_bytes,
        );
        tokio::spawn(run);
        Ok(Connection { frames, pending })
    }
}

impl<Resp> Inner<Resp> {
    fn peer(&self, addr: SocketAddr) -> Arc<Peer<Resp>> {
        lock(&self.peers)
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(Peer {
                    addr,
                    in_flight: Semaphore::new(self.config.in_flight_permits()),
                    next_id: AtomicU64::new(0),
                    current: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }
}

impl<Resp> Peer<Resp> {
    fn open_connection(&self) -> Option<Arc<Connection<Resp>>> {
        lock(&self.current)
            .as_ref()
            .filter(|connection| connection.pending.is_open())
            .cloned()
    }
}

impl<Resp> Pending<Resp> {
    fn new() -> Self {
        Pending {
            waiting: Mutex::new(Some(HashMap::new())),
        }
    }

    fn is_open(&self) -> bool {
        lock(&self.waiting).is_some()
    }

    fn register(&self, id: u64) -> Result<oneshot::Receiver<Result<Resp, PeerError>>, PeerError> {
        let (waiter, answer) = oneshot::channel();
        lock(&self.waiting)
            .as_mut()
            .ok_or(PeerError::Closed)?
            .insert(id, waiter);
        Ok(answer)
    }

    /// Hands `result` to whoever waits for `id`; false if no one does (it
    /// gave up, or the peer answered an id never asked).
    fn complete(&self, id: u64, result: Result<Resp, PeerError>) -> bool {
        let waiter = lock(&self.waiting).as_mut().and_then(|w| w.remove(&id));
        match waiter {
            // The receiver may have given up since; that is its business.
            Some(waiter) => {
                let _ = waiter.send(result);
                true
            }
            None => false,
        }
    }

    /// Ends the connection for everyone waiting on it, at once.
    fn close(&self, error: impl Fn() -> PeerError) {
        let waiting = lock(&self.waiting).take();
        for (_, waiter) in waiting.into_iter().flatten() {
            let _ = waiter.send(Err(error()));
        }
    }
}

/// Takes a request out of its connection's table when it stops waiting,
/// however it stops: answered, timed out, or dropped by its caller.
struct Deregister<'a, Resp> {
    pending: &'a Pending<Resp>,
    id: u64,
}

impl<Resp> Drop for Deregister<'_, Resp> {
    fn drop(&mut self) {
        if let Some(waiting) = lock(&self.pending.waiting).as_mut() {
            waiting.remove(&self.id);
        }
    }
}

/// Runs one connection until either direction fails or the client is gone,
/// then fails everything still waiting on it.
#[allow(clippy::too_many_arguments)]
async fn run_connection<Resp: DeserializeOwned + Send>(
    addr: SocketAddr,
    mut reader: BufReader<OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    outgoing: mpsc::Receiver<Vec<u8>>,
    session: Session,
    pending: Arc<Pending<Resp>>,
    metrics: SharedMetrics,
    max_frame_bytes: usize,
) {
    let mut opener = session.opener();
    // One task rather than a reader and a writer apart: whichever direction
    // ends, the other is dropped with it and no half of a connection lingers.
    let ended: Result<(), String> = tokio::select! {
        ended = read_answers(&mut reader, &mut opener, &pending, &metrics, max_frame_bytes) => Err(ended),
        written = write_frames(writer, outgoing, session.sealer()) => written.map_err(|e| e.to_string()),
    };
    match ended {
        // The writer ran out of senders: the client is gone, and with it
        // every request that could wait here.
        Ok(()) => tracing::debug!(%addr, "peer connection no longer used"),
        Err(reason) => tracing::debug!(%addr, %reason, "peer connection ended"),
    }
    pending.close(|| PeerError::Closed);
}

/// Delivers answers until the connection fails, and says why it did.
async fn read_answers<Resp: DeserializeOwned>(
    reader: &mut BufReader<OwnedReadHalf>,
    opener: &mut secure::Opener,
    pending: &Pending<Resp>,
    metrics: &SharedMetrics,
    max_frame_bytes: usize,
) -> String {
    loop {
        let body = match read_sealed_frame(reader, opener, max_frame_bytes).await {
            Ok(body) => body,
            Err(ReadError::Refused(e)) => {
                metrics.peer_frames_refused.inc();
                tracing::warn!(error = %e, "peer sent an oversized frame; closing the connection");
                return e.to_string();
            }
            Err(e) => return e.to_string(),
        };
        metrics
            .peer_bytes_received
            .add((body.len() + frame::LENGTH_PREFIX_BYTES) as u64);
        let (id, result) = match frame::decode_response::<Resp>(&body) {
            Ok((id, Reply::Ok(answer))) => (id, Ok(answer)),
            Ok((id, Reply::RemoteError(reason))) => (id, Err(PeerError::Remote(reason))),
            Err(e) => {
                metrics.peer_frames_refused.inc();
                let Some(id) = frame::peek_request_id(&body) else {
                    tracing::warn!(error = %e, "peer sent a malformed frame; closing the connection");
                    return e.to_string();
                };
                tracing::warn!(error = %e, "cannot decode a peer's answer");
                (id, Err(PeerError::from(e)))
            }
        };
        if !pending.complete(id, result) {
            tracing::debug!(id, "answer to a request no longer waiting");
        }
    }
}
