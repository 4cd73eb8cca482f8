//! The answering side: [`serve`] accepts peer connections and hands every
//! request on them to a handler, answering each as soon as its handler does.
//!
//! Owns the listener, the accepted connections and the handler tasks, and
//! nothing they mean. What one connection sends can close that connection,
//! never another, and never the accept loop.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::frame::{self, Hello, HelloReply, Reply};
use super::{read_frame, write_frames, PeerConfig, ReadError};
use crate::metrics::SharedMetrics;

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
    H: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let config = Arc::new(config);
    if let Ok(addr) = listener.local_addr() {
        tracing::debug!(%addr, "serving peer requests");
    }
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let serving = serve_connection(
                        stream,
                        remote,
                        config.clone(),
                        metrics.clone(),
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

async fn serve_connection<Req, Resp, H, Fut>(
    stream: TcpStream,
    remote: SocketAddr,
    config: Arc<PeerConfig>,
    metrics: SharedMetrics,
    handler: H,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%remote, %error, "cannot disable Nagle on a peer connection");
    }
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    match tokio::time::timeout(
        config.connect_timeout,
        handshake(&mut reader, &mut writer, &config.cluster_name),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(Handshake::Refused(reason))) => {
            metrics.peer_frames_refused.inc();
            tracing::warn!(%remote, %reason, "refused a peer connection");
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
    }
    tracing::debug!(%remote, "peer connection accepted");

    let permits = config.in_flight_permits();
    let (replies, outgoing) = mpsc::channel(permits);
    let mut handlers = JoinSet::new();
    let serving = Serving {
        config: &config,
        metrics: &metrics,
        handler,
        replies,
        in_flight: Arc::new(Semaphore::new(permits)),
    };
    // Whichever direction ends first ends the connection; the handlers still
    // running are then aborted with their JoinSet.
    let reason = tokio::select! {
        reason = serving.read_requests(&mut reader, &mut handlers) => reason,
        written = write_frames(writer, outgoing) => match written {
            Ok(()) => "no more replies".to_string(),
            Err(e) => e.to_string(),
        },
    };
    tracing::debug!(%remote, %reason, "peer connection ended");
}

enum Handshake {
    /// Counted, and told to the client.
    Refused(String),
    /// The client left or the socket failed; nothing to tell.
    Failed(String),
}

async fn handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    cluster_name: &str,
) -> Result<(), Handshake>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let refusal = match read_frame(reader, frame::MAX_HELLO_BYTES).await {
        Ok(body) => match frame::decode_body::<Hello>(&body) {
            Ok(hello) => hello.refusal(cluster_name),
            Err(e) => Some(format!("not a dnd peer hello ({e})")),
        },
        Err(ReadError::Refused(e)) => Some(format!("not a dnd peer hello ({e})")),
        Err(e) => return Err(Handshake::Failed(e.to_string())),
    };
    let reply = match &refusal {
        None => HelloReply::Welcome,
        Some(reason) => HelloReply::Refused(reason.clone()),
    };
    let sent = match frame::encode_frame(&reply, frame::MAX_HELLO_BYTES) {
        Ok(bytes) => writer.write_all(&bytes).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match (refusal, sent) {
        (Some(reason), _) => Err(Handshake::Refused(reason)),
        (None, Err(reason)) => Err(Handshake::Failed(reason)),
        (None, Ok(())) => Ok(()),
    }
}

/// What the reading side of one connection needs to start handlers.
struct Serving<'a, H> {
    config: &'a PeerConfig,
    metrics: &'a SharedMetrics,
    handler: H,
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
        handlers: &mut JoinSet<()>,
    ) -> String
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Resp> + Send + 'static,
    {
        let max_frame_bytes = self.config.max_frame_bytes;
        loop {
            let body = match read_frame(reader, max_frame_bytes).await {
                Ok(body) => body,
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
            let (handler, replies, metrics) = (
                self.handler.clone(),
                self.replies.clone(),
                self.metrics.clone(),
            );
            handlers.spawn(async move {
                let reply = match AssertUnwindSafe(handler(request)).catch_unwind().await {
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
