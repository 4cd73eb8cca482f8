//! One node's configuration: every tunable with its default, built once by
//! the binary (from flags and `DND_*` variables) or by tests, then passed
//! down. Pure data; nothing here reads the environment or the disk.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::keyring::ClusterKey;
use crate::replication::Replication;
/// The storage choices belong to `storage`; a configuration only names them.
pub use crate::storage::{StorageKind, SyncPolicy};
use crate::swim::SwimConfig;

#[derive(Clone, Debug)]
pub struct Config {
    /// The address this node advertises to peers and clients for gossip,
    /// the peer channel and HTTP; it also binds it unless `bind` is set.
    pub address: IpAddr,
    /// The address to listen on when it is not the advertised one (such as
    /// `0.0.0.0` inside a container whose reachable address is mapped).
    pub bind: Option<IpAddr>,
    /// UDP port for gossip; 0 picks a free one.
    pub gossip_port: u16,
    /// TCP port for the HTTP API; 0 picks a free one.
    pub http_port: u16,
    /// A member to join through; `None` starts a new cluster.
    pub seed: Option<SocketAddr>,
    /// Nodes of different clusters refuse each other's datagrams.
    pub cluster_name: String,
    /// Holds the node id and, for the disk engine, the data.
    pub data_dir: PathBuf,
    pub storage: StorageKind,
    pub sync: SyncPolicy,
    pub max_value_bytes: usize,
    /// The most concurrent versions (siblings) a write may leave a key with.
    pub max_siblings: usize,
    /// The largest object (a key's versions together) a write may leave;
    /// never more than one peer frame carries, whatever is set here.
    pub max_object_bytes: usize,
    /// The largest gossip datagram this node sends or accepts.
    pub gossip_mtu: usize,
    /// Timings and counts of the SWIM protocol.
    pub swim: SwimConfig,
    /// How long `join` keeps asking its seed before giving up.
    pub join_timeout: Duration,
    /// How long an HTTP request waits for the Store before answering 503.
    pub request_timeout: Duration,
    /// How many HTTP requests may wait on the node's actors at once; one
    /// more is answered 503 at once rather than queued.
    pub max_waiting_requests: usize,
    /// How long an HTTP request body may take to arrive before 408.
    pub body_timeout: Duration,
    /// N, R and W; the same on every node of a cluster.
    pub replication: Replication,
    /// Tokens per node on the ring; the same on every node of a cluster.
    pub vnodes: usize,
    /// How long a coordinator waits for one replica before treating it as
    /// failed for that request (and asking a stand-in).
    pub replica_timeout: Duration,
    /// How often a node tries to hand its hints to their owners.
    pub hint_interval: Duration,
    /// Whether stand-ins keep hints for replicas that were down.
    pub hinted_handoff: bool,
    /// How often to compare hash trees with a peer; zero turns it off.
    pub anti_entropy_interval: Duration,
    /// How old a tombstone must be before every replica may forget it.
    pub tombstone_grace: Duration,
    /// How long a leaving node may spend handing its data over.
    pub leave_handoff_timeout: Duration,
    /// actix-web worker threads; 0 means one per core.
    pub http_workers: usize,
    /// The cluster secret: with it gossip is sealed and the node-to-node
    /// channel is a Noise session, and only holders of a key of the ring get
    /// in. The keyring kept in the data directory wins over it once a
    /// rotation happened.
    pub cluster_key: Option<ClusterKey>,
    /// TLS on the HTTP API: without it the API speaks plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// The bearer tokens the HTTP API accepts. Without them `/kv` and the
    /// read-only routes are open, and admin calls are taken only from this
    /// host.
    pub tokens: Option<crate::tokens::TokenTable>,
}

pub const DEFAULT_GOSSIP_PORT: u16 = 5000;
pub const DEFAULT_HTTP_PORT: u16 = 6000;
pub const DEFAULT_CLUSTER_NAME: &str = "dnd";
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_GOSSIP_MTU: usize = 1400;
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_REPLICA_TIMEOUT: Duration = Duration::from_millis(1000);
pub const DEFAULT_HINT_INTERVAL: Duration = Duration::from_millis(1000);
pub const DEFAULT_ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(3600);
pub const DEFAULT_LEAVE_HANDOFF_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests waiting on the actors at once, by default: far above what a
/// node serves in a request timeout's worth of queueing, and with values
/// of at most --max-value-bytes, a bound on the memory they hold.
pub const DEFAULT_MAX_WAITING_REQUESTS: usize = 1024;

impl Config {
    /// The data directory used when none is given: one folder per node under
    /// the working directory, named by its gossip address so that several
    /// local nodes never share one.
    pub fn default_data_dir(address: IpAddr, gossip_port: u16) -> PathBuf {
        PathBuf::from("dnd-data").join(format!("{address}-{gossip_port}"))
    }

    /// Where the node's sockets listen.
    pub fn bind_address(&self) -> IpAddr {
        self.bind.unwrap_or(self.address)
    }

    /// A configuration for tests and embedding: loopback, ports picked by the
    /// OS, in-memory storage, one HTTP worker, a 200 ms protocol period.
    pub fn ephemeral(data_dir: PathBuf) -> Self {
        Config {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            bind: None,
            gossip_port: 0,
            http_port: 0,
            seed: None,
            cluster_name: DEFAULT_CLUSTER_NAME.to_string(),
            data_dir,
            storage: StorageKind::Memory,
            sync: SyncPolicy::Periodic(DEFAULT_SYNC_INTERVAL),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_siblings: crate::actors::store::DEFAULT_MAX_SIBLINGS,
            max_object_bytes: usize::MAX,
            gossip_mtu: DEFAULT_GOSSIP_MTU,
            swim: SwimConfig {
                protocol_period: Duration::from_millis(200),
                probe_timeout: Duration::from_millis(100),
                push_pull_interval: Duration::from_secs(5),
                ..SwimConfig::default()
            },
            join_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            max_waiting_requests: DEFAULT_MAX_WAITING_REQUESTS,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            replication: Replication::default(),
            vnodes: crate::ring::DEFAULT_VNODES,
            replica_timeout: DEFAULT_REPLICA_TIMEOUT,
            hint_interval: Duration::from_millis(200),
            hinted_handoff: true,
            anti_entropy_interval: Duration::from_millis(500),
            tombstone_grace: DEFAULT_TOMBSTONE_GRACE,
            leave_handoff_timeout: Duration::from_secs(20),
            http_workers: 1,
            cluster_key: None,
            tls: None,
            tokens: None,
        }
    }
}
