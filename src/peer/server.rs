//! The answering side: [`serve`] accepts peer connections and hands every
//! request on them to a handler, answering each as soon as its handler does.
//!
//! Owns the listener, the accepted connections and the handler tasks, and
//! nothing they mean. What one connection sends can close that connection,
//! never another, and never the accept loop. Before its handshake a
//! connection is a stranger: it gets `connect_timeout` to finish it, may
//! make this node read at most a hello's worth, and with a cluster secret
//! gets no answer at all unless it proves it holds the key. Handshakes in
//! progress are bounded per address and in all, connections per member (by
//! the node id it introduced) and in all, and one idle for `idle_timeout`
//! closes.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::frame::{self, Hello, HelloReply, Introduction, Reply};
use super::secure::{self, Session};
use super::{
    lock, read_frame, read_handshake, read_sealed_frame, write_frames, PeerConfig, ReadError,
    RefusalLog,
};
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;

/// How long to pause after a failed accept: the usual cause is running out
/// of file descriptors, which a tight retry loop would only make worse.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves peer requests on `listener` with `handler` until dropped.
///
/// Every connection and every running handler is a task owned by this
/// future: dropping it (or aborting the task that runs it) closes them all,
/// and a handler whose connection closes is cancelled at its next await.
/// A handler that panics answers [`Reply::RemoteError`].
pub async fn serve<Req, Resp, H, Fut>(
    listener: TcpListener,
    config: PeerConfig,
    metrics: SharedMetrics,
    handler: H,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Fn(NodeId, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let config = Arc::new(config);
    if let Ok(addr) = listener.local_addr() {
        tracing::debug!(%addr, "serving peer requests");
    }
    let handshaking = Arc::new(OpenConnections::<IpAddr>::default());
    let connected = Arc::new(OpenConnections::<NodeId>::default());
    let refusals = Arc::new(RefusalLog::default());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let limits = (config.max_connections_per_address, config.max_connections);
                    let Some(slot) = handshaking.take(remote.ip(), limits) else {
                        metrics.peer_connections_refused_limit.inc();
                        if refusals.allow(remote.ip()) {
                            tracing::warn!(%remote, "too many peer handshakes from this address; closing the new one (logged once a minute per address)");
                        }
                        continue;
                    };
                    let serving = serve_connection(
                        stream,
                        remote,
                        config.clone(),
                        metrics.clone(),
                        refusals.clone(),
                        (slot, connected.clone()),
                        handler.clone(),
                    );
                    connections.spawn(serving);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a peer connection; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reaps finished connections, which a JoinSet keeps until asked.
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    tracing::error!(%error, "a peer connection task failed");
                }
            }
        }
    }
}

/// A member keeps one connection to each peer; a few more cover a
/// reconnection racing the close of the old one.
const MAX_CONNECTIONS_PER_MEMBER: usize = 4;

/// Connections open now, by who holds them (an address during the
/// handshake, a member after it): a slot is taken before and given back
/// when it ends.
struct OpenConnections<K> {
    by_holder: Mutex<HashMap<K, usize>>,
}

impl<K> Default for OpenConnections<K> {
    fn default() -> Self {
        OpenConnections {
            by_holder: Mutex::new(HashMap::new()),
        }
    }
}

struct Slot<K: std::hash::Hash + Eq + Copy> {
    open: Arc<OpenConnections<K>>,
    holder: K,
}

impl<K: std::hash::Hash + Eq + Copy> OpenConnections<K> {
    /// A slot for `holder` if it has fewer than `per_holder` and all have
    /// fewer than `total`.
    fn take(self: &Arc<Self>, holder: K, (per_holder, total): (usize, usize)) -> Option<Slot<K>> {
        let mut by_holder = lock(&self.by_holder);
        let open: usize = by_holder.values().sum();
        let here = by_holder.entry(holder).or_default();
        if *here >= per_holder || open >= total {
            if *here == 0 {
                by_holder.remove(&holder);
            }
            return None;
        }
        *here += 1;
        Some(Slot {
            open: self.clone(),
            holder,
        })
    }
}

impl<K: std::hash::Hash + Eq + Copy> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut by_holder = lock(&self.open.by_holder);
        if let Some(here) = by_holder.get_mut(&self.holder) {
            *here -= 1;
            if *here == 0 {
                by_holder.remove(&self.holder);
            }
        }
    }
}

async fn serve_connection<Req, Resp, H, Fut>(
    stream: TcpStream,
    remote: SocketAddr,
    config: Arc<PeerConfig>,
    metrics: SharedMetrics,
    refusals: Arc<RefusalLog>,
    (handshaking, connected): (Slot<IpAddr>, Arc<OpenConnections<NodeId>>),
    handler: H,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Fn(NodeId, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%remote, %error, "cannot disable Nagle on a peer connection");
    }
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let (client, session) = match tokio::time::timeout(
        config.connect_timeout,
        handshake(&mut reader, &mut writer, &config),
    )
    .await
    {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(Handshake::Unauthenticated)) => {
            metrics.peer_handshakes_refused_unauthenticated.inc();
            if refusals.allow(remote.ip()) {
                tracing::warn!(%remote, "a peer connection did not prove it holds the cluster key; closed without an answer (logged once a minute per address)");
            }
            return;
        }
        Ok(Err(Handshake::Refused(reason))) => {
            metrics.peer_frames_refused.inc();
            metrics.peer_handshakes_refused_other.inc();
            if refusals.allow(remote.ip()) {
                tracing::warn!(%remote, %reason, "refused a peer connection (logged once a minute per address)");
            }
            return;
        }
        Ok(Err(Handshake::Failed(reason))) => {
            tracing::debug!(%remote, %reason, "peer connection closed before its hello");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "no hello in time; closing the peer connection");
            return;
        }
    };
    // A replayed first handshake message completes a handshake too, though
    // its sender holds no session key; only a first frame that opens shows
    // the client really is the member. Until then the connection keeps its
    // address's handshake slot, for at most the connect timeout.
    let mut opener = session.opener();
    let first = match session {
        // Without a secret there is nothing to prove.
        Session::Plain => None,
        Session::Noise(_) => {
            let first = read_sealed_frame(&mut reader, &mut opener, config.max_frame_bytes);
            Some(tokio::time::timeout(config.connect_timeout, first).await)
        }
    };
    let first = match first {
        None => None,
        Some(Ok(Ok(body))) => Some(body),
        Some(Ok(Err(ReadError::Unsealed))) => {
            metrics.peer_handshakes_refused_unauthenticated.inc();
            if refusals.allow(remote.ip()) {
                tracing::warn!(%remote, "a peer connection's first frame did not open (a replayed handshake?); closed (logged once a minute per address)");
            }
            return;
        }
        Some(Ok(Err(error))) => {
            tracing::debug!(%remote, %error, "peer connection closed before its first request");
            return;
        }
        Some(Err(_)) => {
            tracing::debug!(%remote, "no request in time after the handshake; closing");
            return;
        }
    };
    drop(handshaking);
    let limits = (MAX_CONNECTIONS_PER_MEMBER, config.max_connections);
    let Some(_connected) = connected.take(client, limits) else {
        metrics.peer_connections_refused_limit.inc();
        if refusals.allow(remote.ip()) {
            tracing::warn!(%remote, %client, "too many peer connections from this member; closing the new one (logged once a minute per address)");
        }
        return;
    };
    tracing::debug!(%remote, %client, "peer connection accepted");

    let permits = config.in_flight_permits();
    let (replies, outgoing) = mpsc::channel(permits);
    let mut handlers = JoinSet::new();
    let serving = Serving {
        config: &config,
        metrics: &metrics,
        handler,
        client,
        replies,
        in_flight: Arc::new(Semaphore::new(permits)),
    };
    // Whichever direction ends first ends the connection; the handlers still
    // running are then aborted with their JoinSet.
    let reason = tokio::select! {
        reason = serving.read_requests(&mut reader, &mut opener, first, &mut handlers) => reason,
        written = write_frames(writer, outgoing, session.sealer()) => match written {
            Ok(()) => "no more replies".to_string(),
            Err(e) => e.to_string(),
        },
    };
    tracing::debug!(%remote, %reason, "peer connection ended");
}

enum Handshake {
    /// With a cluster secret: the client did not prove it holds a key of
    /// the ring (or speaks another cluster or version). Told nothing.
    Unauthenticated,
    /// Counted, and told to the client.
    Refused(String),
    /// The client left or the socket failed; nothing to tell.
    Failed(String),
}

/// Runs the server's side of the handshake: who the client is, and how the
/// connection's frames travel from now on.
async fn handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    config: &PeerConfig,
) -> Result<(NodeId, Session), Handshake>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match &config.keyring {
        Some(keyring) => {
            let first = match read_handshake(reader).await {
                Ok(message) => message,
                Err(ReadError::Refused(_)) => return Err(Handshake::Unauthenticated),
                Err(e) => return Err(Handshake::Failed(e.to_string())),
            };
            let prologue = secure::prologue(&config.cluster_name);
            let Some((mut state, payload)) =
                secure::respond_with_any(&keyring.peer_psks(), &prologue, &first)
            else {
                return Err(Handshake::Unauthenticated);
            };
            let introduction: Introduction = frame::decode_body(&payload)
                .map_err(|e| Handshake::Refused(format!("not a dnd introduction ({e})")))?;
            let reply = frame::encode_frame(&HelloReply::Welcome, frame::MAX_HELLO_BYTES)
                .map_err(|e| Handshake::Failed(e.to_string()))?;
            let message =
                secure::handshake_message(&mut state, &reply[frame::LENGTH_PREFIX_BYTES..])
                    .map_err(|e| Handshake::Failed(e.to_string()))?;
            writer
                .write_all(&message)
                .await
                .map_err(|e| Handshake::Failed(e.to_string()))?;
            let session =
                Session::from_handshake(state).map_err(|e| Handshake::Failed(e.to_string()))?;
            Ok((introduction.node_id, session))
        }
        None => plain_handshake(reader, writer, &config.cluster_name).await,
    }
}

async fn plain_handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    cluster_name: &str,
) -> Result<(NodeId, Session), Handshake>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let not_a_hello = |e: &dyn std::fmt::Display| format!("not a dnd peer hello ({e})");
    let mut refusal = match read_frame(reader, frame::MAX_HELLO_BYTES).await {
        Ok(body) => match frame::decode_body::<Hello>(&body) {
            Ok(hello) => hello.refusal(cluster_name),
            Err(e) => Some(not_a_hello(&e)),
        },
        Err(ReadError::Refused(e)) => Some(not_a_hello(&e)),
        Err(e) => return Err(Handshake::Failed(e.to_string())),
    };
    let mut client = None;
    if refusal.is_none() {
        match read_frame(reader, frame::MAX_HELLO_BYTES).await {
            Ok(body) => match frame::decode_body::<Introduction>(&body) {
                Ok(introduction) => client = Some(introduction.node_id),
                Err(e) => refusal = Some(format!("not a dnd introduction ({e})")),
            },
            Err(ReadError::Refused(e)) => refusal = Some(format!("not a dnd introduction ({e})")),
            Err(e) => return Err(Handshake::Failed(e.to_string())),
        }
    }
    let reply = match &refusal {
        None => HelloReply::Welcome,
        Some(reason) => HelloReply::Refused(reason.clone()),
    };
    let sent = match frame::encode_frame(&reply, frame::MAX_HELLO_BYTES) {
        Ok(bytes) => writer.write_all(&bytes).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match (refusal, sent, client) {
        (Some(reason), _, _) => Err(Handshake::Refused(reason)),
        (None, Err(reason), _) => Err(Handshake::Failed(reason)),
        (None, Ok(()), Some(client)) => Ok((client, Session::Plain)),
        (None, Ok(()), None) => Err(Handshake::Failed("no introduction".into())),
    }
}

/// What the reading side of one connection needs to start handlers.
struct Serving<'a, H> {
    config: &'a PeerConfig,
    metrics: &'a SharedMetrics,
    handler: H,
    /// Who the handshake said the client is.
    client: NodeId,
    replies: mpsc::Sender<Vec<u8>>,
    /// Not taken from the client's word: a peer sending more than this many
    /// requests at once waits for TCP to drain rather than spawning more.
    in_flight: Arc<Semaphore>,
}

impl<H> Serving<'_, H> {
    /// Reads requests and starts a handler for each until the connection
    /// fails, and says why it did.
    async fn read_requests<Req, Resp, Fut>(
        self,
        reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
        opener: &mut secure::Opener,
        mut first: Option<Vec<u8>>,
        handlers: &mut JoinSet<()>,
    ) -> String
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Fn(NodeId, Req) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Resp> + Send + 'static,
    {
        let max_frame_bytes = self.config.max_frame_bytes;
        let idle_timeout = self.config.idle_timeout;
        loop {
            let read = match first.take() {
                Some(body) => Ok(body),
                None => {
                    let read = read_sealed_frame(reader, opener, max_frame_bytes);
                    let Ok(read) = tokio::time::timeout(idle_timeout, read).await else {
                        self.metrics.peer_connections_idle_closed.inc();
                        return format!("idle for {idle_timeout:?}");
                    };
                    read
                }
            };
            let body = match read {
                Ok(body) => body,
                Err(ReadError::Unsealed) => {
                    self.metrics.peer_frames_refused.inc();
                    tracing::warn!(client = %self.client, "a sealed peer frame did not open; closing the connection");
                    return "a sealed frame did not open".to_string();
                }
                Err(ReadError::Refused(e)) => {
                    self.metrics.peer_frames_refused.inc();
                    tracing::warn!(error = %e, "peer sent an oversized frame; closing the connection");
                    return e.to_string();
                }
                Err(e) => return e.to_string(),
            };
            while handlers.try_join_next().is_some() {}
            let (id, request) = match frame::decode_request::<Req>(&body) {
                Ok(decoded) => decoded,
                Err(e) => {
                    self.metrics.peer_frames_refused.inc();
                    let Some(id) = frame::peek_request_id(&body) else {
                        tracing::warn!(error = %e, "peer sent a malformed frame; closing the connection");
                        return e.to_string();
                    };
                    tracing::warn!(id, error = %e, "cannot decode a peer request");
                    let reply =
                        Reply::<Resp>::RemoteError(format!("cannot decode the request: {e}"));
                    let answered = match frame::encode_response(id, &reply, max_frame_bytes) {
                        Ok(bytes) => self.replies.send(bytes).await.is_ok(),
                        Err(_) => false,
                    };
                    if !answered {
                        return "cannot answer a malformed request".to_string();
                    }
                    continue;
                }
            };
            let Ok(slot) = self.in_flight.clone().acquire_owned().await else {
                return "in-flight semaphore closed".to_string();
            };
            let (handler, replies, metrics, client) = (
                self.handler.clone(),
                self.replies.clone(),
                self.metrics.clone(),
                self.client,
            );
            handlers.spawn(async move {
                let reply = match AssertUnwindSafe(handler(client, request))
                    .catch_unwind()
                    .await
                {
                    Ok(answer) => Reply::Ok(answer),
                    Err(_) => {
                        tracing::error!(id, "peer request handler panicked");
                        Reply::RemoteError("the handler panicked".to_string())
                    }
                };
                let bytes = frame::encode_response(id, &reply, max_frame_bytes).or_else(|e| {
                    tracing::warn!(id, error = %e, "cannot send the answer to a peer request");
                    let reply = Reply::<Resp>::RemoteError(format!("cannot send the answer: {e}"));
                    frame::encode_response(id, &reply, max_frame_bytes)
                });
                if let Ok(bytes) = bytes {
                    if replies.send(bytes).await.is_ok() {
                        metrics.peer_requests_served.inc();
                    }
                }
                drop(slot);
            });
        }
    }
}
