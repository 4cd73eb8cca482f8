//! The peer channel between a client and a server in one process: answers
//! matched to their requests, the limits it keeps, and what it does when the
//! other end misbehaves or goes away.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::eventually;
use dnd::metrics::{Metrics, SharedMetrics};
use dnd::peer::frame::{self, Hello, HelloReply, Introduction, Reply};
use dnd::peer::{serve, PeerClient, PeerConfig, PeerError};
use futures_util::future::join_all;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const CLUSTER: &str = "peer-test";

/// How soon a failure the client can see (a closed connection) must reach
/// a waiting request, against timeouts of ten seconds.
const PROMPTLY: Duration = Duration::from_secs(2);

fn config() -> PeerConfig {
    PeerConfig {
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        max_in_flight_per_peer: 256,
        max_frame_bytes: 1024 * 1024,
        ..PeerConfig::new(CLUSTER)
    }
}

struct Server {
    addr: SocketAddr,
    metrics: SharedMetrics,
    task: JoinHandle<()>,
}

async fn start_server<Req, Resp, H, Fut>(config: PeerConfig, handler: H) -> Server
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_server_on(listener, config, handler)
}

fn start_server_on<Req, Resp, H, Fut>(
    listener: TcpListener,
    config: PeerConfig,
    handler: H,
) -> Server
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let metrics: SharedMetrics = Arc::new(Metrics::default());
    // These tests are about the channel, not about who sends: the handler
    // ignores the client's node id.
    let handler = move |_client, request| handler(request);
    let task = tokio::spawn(serve(listener, config, metrics.clone(), handler));
    Server {
        addr,
        metrics,
        task,
    }
}

fn new_client<Req, Resp>(config: PeerConfig) -> (PeerClient<Req, Resp>, SharedMetrics)
where
    Req: Serialize + Send + Sync + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    let metrics: SharedMetrics = Arc::new(Metrics::default());
    (PeerClient::new(config, metrics.clone()), metrics)
}

async fn doubled(n: u64) -> u64 {
    n * 2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Put {
    key: String,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Answer {
    Stored { key: String, bytes: usize },
}

#[actix_rt::test]
async fn a_request_from_an_actix_runtime_gets_its_answer() {
    let server = start_server(config(), |put: Put| async move {
        Answer::Stored {
            key: put.key,
            bytes: put.value.len(),
        }
    })
    .await;
    let (client, metrics) = new_client::<Put, Answer>(config());
    let put = Put {
        key: "user1".into(),
        value: b"hello".to_vec(),
    };
    let answer = client.request(server.addr, &put).await.unwrap();
    assert_eq!(
        answer,
        Answer::Stored {
            key: "user1".into(),
            bytes: 5
        }
    );
    assert_eq!(metrics.peer_requests_sent.get(), 1);
    assert_eq!(metrics.peer_request_failures.get(), 0);
    assert_eq!(server.metrics.peer_requests_served.get(), 1);
    let text = metrics.render_prometheus(&Default::default());
    assert!(
        text.contains("dnd_peer_connections_opened_total 1"),
        "{text}"
    );
    assert!(text.contains("dnd_peer_requests_sent_total 1"), "{text}");
}

#[tokio::test]
async fn values_of_several_mib_travel_and_oversized_ones_are_never_sent() {
    let big = PeerConfig {
        max_frame_bytes: 16 * 1024 * 1024,
        ..config()
    };
    let server = start_server(big.clone(), |put: Put| async move { put }).await;
    let (client, metrics) = new_client::<Put, Put>(big);
    let put = Put {
        key: "big".into(),
        value: (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect(),
    };
    assert_eq!(client.request(server.addr, &put).await.unwrap(), put);

    let (small, small_metrics) = new_client::<Put, Put>(config());
    let error = small.request(server.addr, &put).await.unwrap_err();
    assert!(
        matches!(error, PeerError::FrameTooLarge { limit, .. } if limit == 1024 * 1024),
        "{error}"
    );
    assert_eq!(small_metrics.peer_connections_opened.get(), 0);
    assert_eq!(small_metrics.peer_request_failures.get(), 1);
    assert_eq!(metrics.peer_request_failures.get(), 0);
}

#[tokio::test]
async fn two_hundred_concurrent_requests_share_one_connection_and_each_gets_its_own_answer() {
    // The first request is answered last: answers come back in reverse.
    let server = start_server(config(), |n: u64| async move {
        tokio::time::sleep(Duration::from_millis(200 - n)).await;
        n * 2
    })
    .await;
    let (client, metrics) = new_client::<u64, u64>(config());
    let answers = join_all((0..200u64).map(|n| {
        let client = client.clone();
        async move { (n, client.request(server.addr, &n).await) }
    }))
    .await;
    for (n, answer) in answers {
        assert_eq!(answer.unwrap(), n * 2, "answer to request {n}");
    }
    assert_eq!(metrics.peer_connections_opened.get(), 1);
    assert_eq!(metrics.peer_requests_sent.get(), 200);
    assert_eq!(server.metrics.peer_requests_served.get(), 200);
}

#[tokio::test]
async fn a_request_never_answered_times_out_at_its_deadline_and_the_connection_carries_on() {
    let server = start_server(config(), |n: u64| async move {
        if n == 0 {
            std::future::pending::<()>().await;
        }
        n
    })
    .await;
    let (client, metrics) = new_client::<u64, u64>(config());
    let deadline = Duration::from_millis(300);
    let start = Instant::now();
    let error = client
        .request_within(server.addr, &0, deadline)
        .await
        .unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(error, PeerError::Timeout(d) if d == deadline),
        "{error}"
    );
    assert!(waited >= deadline, "gave up after {waited:?}");
    assert!(
        waited < deadline + Duration::from_secs(1),
        "gave up after {waited:?}"
    );
    assert_eq!(client.request(server.addr, &7).await.unwrap(), 7);
    assert_eq!(metrics.peer_connections_opened.get(), 1);
    assert_eq!(metrics.peer_request_failures.get(), 1);
}

#[tokio::test]
async fn a_server_gone_mid_request_fails_the_request_promptly_as_closed() {
    let started = Arc::new(AtomicUsize::new(0));
    let server = {
        let started = started.clone();
        start_server(config(), move |_: u64| {
            let started = started.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<u64>().await
            }
        })
        .await
    };
    let (client, _) = new_client::<u64, u64>(config());
    let waiting = {
        let (client, addr) = (client.clone(), server.addr);
        tokio::spawn(async move { client.request(addr, &1).await })
    };
    eventually(PROMPTLY, "the handler to start", || async {
        (started.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let gone = Instant::now();
    server.task.abort();
    let answer = tokio::time::timeout(PROMPTLY, waiting)
        .await
        .expect("the request still waits after its server is gone")
        .unwrap();
    assert!(matches!(answer, Err(PeerError::Closed)), "{answer:?}");
    assert!(gone.elapsed() < PROMPTLY);
}

#[tokio::test]
async fn a_client_of_another_cluster_is_refused_and_counted() {
    let server = start_server(config(), doubled).await;
    let stranger = PeerConfig {
        cluster_name: "someone-else".into(),
        ..config()
    };
    let (client, metrics) = new_client::<u64, u64>(stranger);
    let error = client.request(server.addr, &1).await.unwrap_err();
    match &error {
        PeerError::Refused(reason) => assert!(reason.contains("someone-else"), "{reason}"),
        other => panic!("expected a refusal, got {other}"),
    }
    assert_eq!(server.metrics.peer_frames_refused.get(), 1);
    assert_eq!(server.metrics.peer_requests_served.get(), 0);
    assert_eq!(metrics.peer_connections_opened.get(), 0);
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let (client, metrics) = new_client::<u64, u64>(config());
    let start = Instant::now();
    let error = client.request(addr, &1).await.unwrap_err();
    assert!(
        matches!(error, PeerError::Connect { addr: a, .. } if a == addr),
        "{error}"
    );
    assert!(start.elapsed() < PROMPTLY);
    assert_eq!(metrics.peer_request_failures.get(), 1);
}

/// Writes `bytes` on a raw connection.
async fn send_raw(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
}

/// Reads one frame's body from a raw connection, or `None` at its end.
async fn read_raw_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut prefix = [0; frame::LENGTH_PREFIX_BYTES];
    stream.read_exact(&mut prefix).await.ok()?;
    let mut body = vec![0; u32::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Waits until the server closes `stream`, reading and dropping whatever it
/// sends before that; panics if it stays open past the deadline.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut sink = [0; 256];
    let closed = async {
        // A reset counts: the server may close with our bytes unread.
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(PROMPTLY, closed)
        .await
        .expect("the server kept a misbehaving connection open");
}

/// A raw connection past its handshake.
async fn welcomed(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let hello = frame::encode_frame(&Hello::new(CLUSTER), frame::MAX_HELLO_BYTES).unwrap();
    send_raw(&mut stream, &hello).await;
    let introduction = Introduction {
        node_id: dnd::node_id::NodeId::from_u64(1),
    };
    let introduction = frame::encode_frame(&introduction, frame::MAX_HELLO_BYTES).unwrap();
    send_raw(&mut stream, &introduction).await;
    let reply = read_raw_frame(&mut stream).await.unwrap();
    assert_eq!(
        frame::decode_body::<HelloReply>(&reply).unwrap(),
        HelloReply::Welcome
    );
    stream
}

#[tokio::test]
async fn garbage_and_oversized_frames_close_only_their_own_connection() {
    let server = start_server(config(), doubled).await;
    let (client, _) = new_client::<u64, u64>(config());
    assert_eq!(client.request(server.addr, &1).await.unwrap(), 2);

    // Not a peer at all: "GET " read as a length is far past any limit.
    let mut http = TcpStream::connect(server.addr).await.unwrap();
    send_raw(&mut http, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    closed_by_server(&mut http).await;

    // An oversized length prefix after a good handshake.
    let mut oversized = welcomed(server.addr).await;
    send_raw(&mut oversized, &u32::MAX.to_be_bytes()).await;
    closed_by_server(&mut oversized).await;

    // A well-framed body that is not msgpack: no request id to answer.
    let mut garbage = welcomed(server.addr).await;
    send_raw(&mut garbage, &[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]).await;
    closed_by_server(&mut garbage).await;

    // A request id with a payload of the wrong type: answered, and the
    // connection still serves the next request.
    let mut wrong_type = welcomed(server.addr).await;
    let request = frame::encode_request(7, &"not a number", 1024).unwrap();
    send_raw(&mut wrong_type, &request).await;
    let answer = read_raw_frame(&mut wrong_type).await.unwrap();
    let (id, reply) = frame::decode_response::<u64>(&answer).unwrap();
    assert_eq!(id, 7);
    assert!(matches!(reply, Reply::RemoteError(_)), "{reply:?}");
    send_raw(
        &mut wrong_type,
        &frame::encode_request(8, &21u64, 1024).unwrap(),
    )
    .await;
    let answer = read_raw_frame(&mut wrong_type).await.unwrap();
    assert_eq!(
        frame::decode_response::<u64>(&answer).unwrap(),
        (8, Reply::Ok(42))
    );

    assert_eq!(server.metrics.peer_frames_refused.get(), 4);
    assert_eq!(client.request(server.addr, &2).await.unwrap(), 4);
    let (newcomer, _) = new_client::<u64, u64>(config());
    assert_eq!(newcomer.request(server.addr, &3).await.unwrap(), 6);
}

#[tokio::test]
async fn an_answer_the_client_cannot_decode_fails_only_its_own_request() {
    let server = start_server(config(), |n: u64| async move {
        if n == 0 {
            "not a number".to_string()
        } else {
            n.to_string()
        }
    })
    .await;
    let (client, metrics) = new_client::<u64, u64>(config());
    // The server answers a string; this client wants a number.
    let error = client.request(server.addr, &0).await.unwrap_err();
    assert!(matches!(error, PeerError::Codec(_)), "{error}");
    assert_eq!(metrics.peer_frames_refused.get(), 1);
    let (strings, _) = new_client::<u64, String>(config());
    assert_eq!(strings.request(server.addr, &5).await.unwrap(), "5");
}

#[tokio::test]
async fn a_panicking_handler_answers_with_a_remote_error() {
    let server = start_server(config(), |n: u64| async move {
        assert_ne!(n, 13, "unlucky");
        n
    })
    .await;
    let (client, metrics) = new_client::<u64, u64>(config());
    let error = client.request(server.addr, &13).await.unwrap_err();
    assert!(matches!(error, PeerError::Remote(_)), "{error}");
    assert_eq!(client.request(server.addr, &12).await.unwrap(), 12);
    assert_eq!(metrics.peer_connections_opened.get(), 1);
}

/// A handler that records how many of its calls ever ran at once.
fn counting_handler(
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
) -> impl Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>> + Clone + Send + Sync {
    move |n| {
        let (running, most) = (running.clone(), most.clone());
        Box::pin(async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            n
        })
    }
}

async fn concurrent_requests(client: &PeerClient<u64, u64>, addr: SocketAddr, count: u64) {
    let answers = join_all((0..count).map(|n| async move { client.request(addr, &n).await })).await;
    for (n, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), n as u64);
    }
}

#[tokio::test]
async fn a_client_never_has_more_requests_in_flight_to_a_peer_than_its_bound() {
    let (running, most) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
    let server = start_server(config(), counting_handler(running, most.clone())).await;
    let bounded = PeerConfig {
        max_in_flight_per_peer: 4,
        ..config()
    };
    let (client, _) = new_client::<u64, u64>(bounded);
    concurrent_requests(&client, server.addr, 40).await;
    assert_eq!(most.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_server_runs_no_more_handlers_per_connection_than_its_bound() {
    let (running, most) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
    let bounded = PeerConfig {
        max_in_flight_per_peer: 3,
        ..config()
    };
    let server = start_server(bounded, counting_handler(running, most.clone())).await;
    let (client, _) = new_client::<u64, u64>(config());
    concurrent_requests(&client, server.addr, 30).await;
    assert_eq!(most.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn after_the_server_restarts_on_the_same_port_the_client_reconnects() {
    let server = start_server(config(), doubled).await;
    let (client, metrics) = new_client::<u64, u64>(config());
    assert_eq!(client.request(server.addr, &1).await.unwrap(), 2);

    server.task.abort();
    assert!(server.task.await.unwrap_err().is_cancelled());
    let listener = TcpListener::bind(server.addr).await.unwrap();
    let restarted = start_server_on(listener, config(), doubled);

    // The first request may still meet the old connection before the
    // client has seen it close; the next one must reconnect.
    let answer = eventually(PROMPTLY, "a request to the restarted server", || async {
        client
            .request_within(restarted.addr, &2, Duration::from_millis(500))
            .await
            .ok()
    })
    .await;
    assert_eq!(answer, 4);
    assert_eq!(metrics.peer_connections_opened.get(), 2);
    assert!(metrics.peer_request_failures.get() <= 1);
}
