//! Starting and stopping one node: binds its ports, opens its storage,
//! starts its actors under supervisors and serves HTTP.
//!
//! Owns the order of start-up, so that every failure a user can cause (a
//! port in use, an unusable data directory) is reported before anything
//! runs. Must be called inside an actix `System`.
//! It must never hold request logic: that belongs to the actors and
//! `http`.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;

use actix::{Addr, Arbiter, Supervisor};
use actix_web::{web, App, HttpServer};
use thiserror::Error;

use crate::actors::gossip::{AnnounceStop, Gossip, HasPeers, Leave};
use crate::actors::membership::{Membership, Subscribe};
use crate::actors::store::{serve_peers, HandOffForLeave, ReplicaClient, Store, StoreConfig};
use crate::config::{Config, StorageKind};
use crate::http::{self, AppState};
use crate::keyring::Keyring;
use crate::member::{Member, MemberState};
use crate::metrics::{Metrics, SharedMetrics};
use crate::node_id::NodeId;
use crate::peer::{self, PeerClient, PeerConfig};
use crate::replica::ReplicaRequest;
use crate::storage::{self, StorageError};
use crate::swim::{Swim, SwimConfig};
use crate::wire::{ClusterSettings, Codec};

#[derive(Debug, Error)]
pub enum StartError {
    #[error("address {0} cannot be advertised to other members; give the address they should reach this node at (--advertise), and --bind {0} to listen on every interface")]
    UnspecifiedAddress(std::net::IpAddr),
    #[error("cannot use data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot bind the gossip port (UDP) {addr}")]
    GossipPort {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the replica port (TCP, the gossip port's number) {addr}")]
    PeerPort {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the HTTP port (TCP) {addr}")]
    HttpPort {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve HTTPS")]
    Tls(#[from] crate::tls::TlsError),
    #[error("invalid replication settings: {0}")]
    Replication(#[from] crate::replication::QuorumError),
    #[error("cannot open storage")]
    Storage(#[from] StorageError),
    #[error("cannot open the keyring in {path}")]
    Keyring {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start the HTTP server: {0}")]
    Http(std::io::Error),
}

/// A running node and the handles to stop it or look inside it.
pub struct Node {
    pub id: NodeId,
    pub gossip_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub store: Addr<Store>,
    pub gossip: Addr<Gossip>,
    pub membership: Addr<Membership>,
    pub metrics: SharedMetrics,
    /// The client the Store reaches other replicas with (tests cut it off
    /// from chosen peers to make partitions).
    pub replica_client: ReplicaClient,
    /// The cluster keys, if the node runs with a secret.
    pub keyring: Option<Keyring>,
    leave_handoff_timeout: std::time::Duration,
    server: actix_web::dev::ServerHandle,
    leave_requested: Arc<tokio::sync::Notify>,
    /// Membership and Gossip run here, the Store (and the replica server,
    /// so that a replica request never crosses threads) on its own arbiter,
    /// so that stopping a node stops exactly its actors and closes its
    /// sockets.
    cluster_arbiter: Arbiter,
    store_arbiter: Arbiter,
}

impl Node {
    pub async fn start(config: Config) -> Result<Node, StartError> {
        // A wildcard advertised would tell peers to send to an address
        // that reaches no one; a wildcard belongs in `bind`.
        if config.address.is_unspecified() {
            return Err(StartError::UnspecifiedAddress(config.address));
        }
        config.replication.validate()?;
        let id = identity(&config)?;
        let (udp, replica_listener, gossip_addr) = bind_gossip_and_replica(&config)?;
        let http_bind = SocketAddr::new(config.bind_address(), config.http_port);
        let tcp = TcpListener::bind(http_bind).map_err(|source| StartError::HttpPort {
            addr: http_bind,
            source,
        })?;
        let http_port = tcp.local_addr().map_err(|source| StartError::HttpPort {
            addr: http_bind,
            source,
        })?;
        let http_addr = SocketAddr::new(config.address, http_port.port());
        // Before anything is opened, so a bad file fails the start at once.
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?;
        let metrics: SharedMetrics = Arc::new(Metrics::default());
        let engine: Arc<dyn storage::StorageEngine> = Arc::new(storage::Timed::new(
            storage::open(config.storage, &config.data_dir, config.sync)?,
            &metrics.latencies,
        ));
        let keyring = open_keyring(&config)?;

        let local = Member {
            id,
            gossip_addr,
            http_addr,
            state: MemberState::Alive,
            incarnation: 0,
        };
        let cluster_arbiter = Arbiter::new();
        let store_arbiter = Arbiter::new();
        let membership = {
            let (local, metrics, vnodes) = (local.clone(), metrics.clone(), config.vnodes);
            Supervisor::start_in_arbiter(&cluster_arbiter.handle(), move |_| {
                Membership::new(local, vnodes, metrics)
            })
        };
        let gossip = {
            let swim_config = SwimConfig {
                settings: ClusterSettings {
                    replicas: u16::try_from(config.replication.replicas).unwrap_or(u16::MAX),
                    vnodes: u32::try_from(config.vnodes).unwrap_or(u32::MAX),
                },
                ..config.swim.clone()
            };
            let swim = Swim::new(
                local.clone(),
                swim_config,
                Codec::for_keyring(
                    config.cluster_name.clone(),
                    config.gossip_mtu,
                    keyring.clone(),
                ),
                config.seed.into_iter().collect(),
                rand::random(),
                metrics.clone(),
                std::time::Instant::now(),
            );
            let (mtu, membership, metrics) =
                (config.gossip_mtu, membership.clone(), metrics.clone());
            Supervisor::start_in_arbiter(&cluster_arbiter.handle(), move |_| {
                Gossip::new(swim, udp, mtu, membership, metrics)
            })
        };
        let max_frame_bytes =
            peer::DEFAULT_MAX_FRAME_BYTES.max(config.max_value_bytes.saturating_mul(8) + (1 << 20));
        let peer_config = PeerConfig {
            request_timeout: config.replica_timeout * 3,
            max_frame_bytes,
            // Connections to peers leave from the listening address, so
            // peers see a member's own address; from a wildcard, the
            // system picks.
            bind_ip: Some(config.bind_address()).filter(|ip| !ip.is_unspecified()),
            node_id: id,
            keyring: keyring.clone(),
            ..PeerConfig::new(config.cluster_name.clone())
        };
        let replica_client: ReplicaClient =
            PeerClient::new(peer_config.clone(), metrics.clone()).with_kinds(ReplicaRequest::kind);
        let store = {
            let metrics = metrics.clone();
            let store_config = StoreConfig {
                local_id: id,
                replication: config.replication,
                replica_timeout: config.replica_timeout,
                hint_interval: config.hint_interval,
                max_value_bytes: config.max_value_bytes,
                max_siblings: config.max_siblings,
                // Room in a frame for the key and the request around it.
                max_object_bytes: config.max_object_bytes.min(max_frame_bytes - (64 << 10)),
                hinted_handoff: config.hinted_handoff,
                anti_entropy_interval: config.anti_entropy_interval,
                tombstone_grace: config.tombstone_grace,
                vnodes: config.vnodes,
            };
            let peers = replica_client.clone();
            Supervisor::start_in_arbiter(&store_arbiter.handle(), move |_| {
                Store::new(engine, store_config, peers, metrics)
            })
        };
        membership.do_send(Subscribe(store.clone().recipient()));
        store_arbiter.spawn(serve_peers(
            replica_listener,
            peer_config,
            metrics.clone(),
            store.clone(),
            membership.clone(),
            keyring.clone(),
        ));

        let leave_requested = Arc::new(tokio::sync::Notify::new());
        let state = AppState {
            keyring: keyring.clone(),
            replica_client: replica_client.clone(),
            gossip: gossip.clone(),
            leave_requested: leave_requested.clone(),
            node_id: id,
            http_addr,
            store: store.clone(),
            membership: membership.clone(),
            metrics: metrics.clone(),
            max_value_bytes: config.max_value_bytes,
            request_timeout: config.request_timeout,
            waiting: Arc::new(tokio::sync::Semaphore::new(config.max_waiting_requests)),
            shed_log: Arc::default(),
            body_timeout: config.body_timeout,
            replication: config.replication,
            tokens: config.tokens.clone().map(Arc::new),
            refusal_log: Arc::default(),
        };
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .wrap(actix_web::middleware::from_fn(http::auth::admit))
                // Outermost, so that a refusal's log line carries the id too.
                .wrap(actix_web::middleware::from_fn(http::request_id::tag))
                .configure(http::routes)
                .default_service(web::to(http::no_route))
        })
        .on_connect(http::client_gone::note_connection)
        .disable_signals()
        .shutdown_timeout(2);
        if config.http_workers > 0 {
            server = server.workers(config.http_workers);
        }
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(tcp, tls),
            None => server.listen(tcp),
        }
        .map_err(StartError::Http)?
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);

        tracing::info!(
            node = %id,
            gossip = %gossip_addr,
            http = %http_addr,
            storage = ?config.storage,
            cluster = %config.cluster_name,
            sealed = keyring.is_some(),
            https = config.tls.is_some(),
            tokens = config.tokens.as_ref().map_or(0, |t| t.len()),
            "node started"
        );
        Ok(Node {
            id,
            gossip_addr,
            http_addr,
            store,
            gossip,
            membership,
            metrics,
            replica_client,
            keyring,
            leave_handoff_timeout: config.leave_handoff_timeout,
            server: handle,
            leave_requested,
            cluster_arbiter,
            store_arbiter,
        })
    }

    /// Resolves when a client asked this node to leave (`POST /cluster/leave`).
    pub async fn leave_requested(&self) {
        self.leave_requested.notified().await;
    }

    /// Waits until this node knows another live member (true), `timeout`
    /// passes (false), or the cluster refuses it (its reason).
    pub async fn wait_for_peers(&self, timeout: std::time::Duration) -> Result<bool, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.gossip.send(HasPeers).await {
                Ok(Ok(true)) => return Ok(true),
                Ok(Err(refusal)) => return Err(refusal),
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Hands this node's data to the nodes that keep it once it is gone,
    /// tells the cluster it leaves, then gives the news `grace` to spread
    /// (it keeps answering probes meanwhile, carrying the news).
    pub async fn leave(&self, grace: std::time::Duration) {
        match tokio::time::timeout(self.leave_handoff_timeout, self.store.send(HandOffForLeave))
            .await
        {
            Ok(Ok(Some(report))) => tracing::info!(
                keys_sent = report.progress.keys_sent,
                state = ?report.state,
                "data handed over before leaving"
            ),
            Ok(Ok(None)) => {}
            Ok(Err(_)) => tracing::warn!("could not hand data over: the store is not running"),
            Err(_) => tracing::warn!(
                timeout_ms = self.leave_handoff_timeout.as_millis() as u64,
                "handing data over took too long; leaving anyway (anti-entropy repairs the rest)"
            ),
        }
        if self.gossip.send(Leave).await.is_err() {
            tracing::warn!("could not announce the leave: gossip is not running");
            return;
        }
        tracing::info!(node = %self.id, "left the cluster");
        tokio::time::sleep(grace).await;
    }

    /// Tells the cluster this node stops but stays a member (SIGTERM, a
    /// restart, an upgrade): the others mark it dead at once and keep hints
    /// for it, and no key moves. Then gives the news `grace` to spread.
    pub async fn announce_stop(&self, grace: std::time::Duration) {
        if self.gossip.send(AnnounceStop).await.is_err() {
            tracing::warn!("could not announce the stop: gossip is not running");
            return;
        }
        tracing::info!(node = %self.id, "stopping; still a member (`dnd leave` decommissions a node)");
        tokio::time::sleep(grace).await;
    }

    /// Stops serving HTTP, then stops the actors and waits for storage to
    /// close (the disk engine syncs on close).
    pub async fn stop(self) {
        self.server.stop(true).await;
        drop((self.store, self.gossip, self.membership));
        self.cluster_arbiter.stop();
        self.store_arbiter.stop();
        let arbiters = [self.cluster_arbiter, self.store_arbiter];
        let joined = actix_rt::task::spawn_blocking(move || {
            for arbiter in arbiters {
                let _ = arbiter.join();
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!("node arbiters did not shut down cleanly");
        }
        tracing::info!(node = %self.id, "node stopped");
    }
}

/// The keyring kept in the data directory, or a new one holding the
/// configured secret; none without a secret.
fn open_keyring(config: &Config) -> Result<Option<Keyring>, StartError> {
    let Some(key) = config.cluster_key.clone() else {
        return Ok(None);
    };
    let keyring_error = |source| StartError::Keyring {
        path: config.data_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(keyring_error)?;
    Keyring::open(&config.data_dir, key)
        .map(Some)
        .map_err(keyring_error)
}

/// The node's id: kept in the data directory for the disk engine, so a
/// restart is the same member; fresh for the memory engine, whose data does
/// not outlive the process, so a restart is honestly a new member.
fn identity(config: &Config) -> Result<NodeId, StartError> {
    match config.storage {
        StorageKind::Memory => Ok(NodeId::random()),
        StorageKind::Disk => {
            let data_dir_error = |source| StartError::DataDir {
                path: config.data_dir.display().to_string(),
                source,
            };
            std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error)?;
            NodeId::load_or_create(&config.data_dir).map_err(data_dir_error)
        }
    }
}

/// Binds the gossip socket (UDP) and the replica listener (TCP) on the same
/// port number, so a member's one advertised address reaches both. With
/// port 0 the OS picks the UDP port, and a few picks are tried until the
/// same TCP port is free too.
fn bind_gossip_and_replica(
    config: &Config,
) -> Result<(UdpSocket, TcpListener, SocketAddr), StartError> {
    let requested = SocketAddr::new(config.bind_address(), config.gossip_port);
    let attempts = if config.gossip_port == 0 { 32 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(requested).map_err(|source| StartError::GossipPort {
            addr: requested,
            source,
        })?;
        let bound = local_addr(&udp.local_addr(), requested)?;
        match TcpListener::bind(bound) {
            Ok(tcp) => {
                tcp.set_nonblocking(true)
                    .map_err(|source| StartError::PeerPort {
                        addr: bound,
                        source,
                    })?;
                let gossip_addr = SocketAddr::new(config.address, bound.port());
                return Ok((udp, tcp, gossip_addr));
            }
            Err(source) => {
                last_error = Some(StartError::PeerPort {
                    addr: bound,
                    source,
                })
            }
        }
    }
    Err(last_error.unwrap_or(StartError::PeerPort {
        addr: requested,
        source: std::io::Error::other("no port was free for both UDP and TCP"),
    }))
}

fn local_addr(
    bound: &std::io::Result<SocketAddr>,
    requested: SocketAddr,
) -> Result<SocketAddr, StartError> {
    bound.as_ref().copied().map_err(|e| StartError::GossipPort {
        addr: requested,
        source: std::io::Error::new(e.kind(), e.to_string()),
    })
}
