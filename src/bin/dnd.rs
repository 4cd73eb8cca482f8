//! The `dnd` command: parses flags (and `DND_*` variables), sets up logging,
//! and runs a node until SIGINT or SIGTERM.
//!
//! `dnd bench` is the other way in: its flags go to [`dnd::load`], the load
//! tool, which prints its reports on stdout and starts no node.
//!
//! A thin shell: it builds a [`Config`] and calls into the library. It must
//! never hold node logic of its own, and reports every start-up failure as
//! one line on stderr with a non-zero exit.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use clap::builder::TypedValueParser as _;
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use dnd::client::{Client, ClientOptions};
use dnd::commands::{self, exit, Failure, Outcome, Printer, PutMode};
use dnd::config::{self, Config, StorageKind, SyncPolicy};
use dnd::keyring::ClusterKey;
use dnd::node::Node;
use dnd::replication::{self, Replication};
use dnd::ring;
use dnd::swim::SwimConfig;
use dnd::tls::TlsFiles;
use dnd::tokens::{Role, TokenTable};
use tracing_subscriber::EnvFilter;

/// Memory is allocated on one thread (an HTTP worker reading a request)
/// and freed on another (the Store's arbiter) on every request; glibc's
/// allocator spends a tenth of the node's CPU on that and keeps freed
/// memtables' memory resident, mimalloc's per-thread free lists do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// definitely not dynamo: a Dynamo-style distributed key-value store.
///
/// Start a cluster with `dnd start`, add nodes with `dnd join HOST:PORT`
/// (the gossip address of any member). Every node serves the HTTP API
/// (GET/PUT/POST/DELETE /kv/{key}, GET /cluster/status, ...; described at
/// /openapi.json) and a dashboard at /ui; `dnd get`, `dnd put` and `dnd
/// status` are its client.
#[derive(Debug, Parser)]
#[command(name = "dnd", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Settings file (TOML) keyed by the flags' long names, such as
    /// `server-port = 6001` or `insecure = true`; flags and DND_* variables
    /// win over it.
    #[arg(long, global = true, env = "DND_CONFIG")]
    config: Option<PathBuf>,

    /// Address to advertise to peers and clients, for gossip and HTTP;
    /// also the one listened on unless --bind says otherwise.
    #[arg(
        long,
        visible_alias = "advertise",
        global = true,
        env = "DND_ADDRESS",
        default_value = "127.0.0.1"
    )]
    address: IpAddr,

    /// Address to listen on when it is not the advertised one, such as
    /// 0.0.0.0 in a container whose reachable address is --advertise.
    #[arg(long, global = true, env = "DND_BIND")]
    bind: Option<IpAddr>,

    /// UDP port for gossip.
    #[arg(short = 'p', long, global = true, env = "DND_PORT", default_value_t = config::DEFAULT_GOSSIP_PORT)]
    port: u16,

    /// TCP port for the HTTP API.
    #[arg(long, global = true, env = "DND_SERVER_PORT", default_value_t = config::DEFAULT_HTTP_PORT)]
    server_port: u16,

    /// More log output (-v debug, -vv trace). DND_LOG takes a full filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,

    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    quiet: u8,

    /// How log lines are written to stderr: `text` for people (in colour
    /// at a terminal), `json` one object a line for a log collector.
    #[arg(long, global = true, env = "DND_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Where the node keeps its id and data [default: ./dnd-data/ADDRESS-PORT].
    #[arg(long, global = true, env = "DND_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Storage engine: `disk` is durable, `memory` is lost on exit.
    #[arg(long, global = true, env = "DND_STORAGE", value_enum, default_value_t = StorageArg::Disk)]
    storage: StorageArg,

    /// When writes reach the disk: `periodic` syncs in the background every
    /// --sync-interval-ms, `always` syncs before acknowledging each write.
    /// Both survive a killed process; they differ on power loss.
    #[arg(long, global = true, env = "DND_SYNC", value_enum, default_value_t = SyncArg::Periodic)]
    sync: SyncArg,

    /// Interval of background syncs under `--sync periodic`.
    #[arg(long, global = true, env = "DND_SYNC_INTERVAL_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    sync_interval_ms: u64,

    /// Name of the cluster; nodes refuse gossip from other clusters.
    #[arg(long, global = true, env = "DND_CLUSTER_NAME", default_value = config::DEFAULT_CLUSTER_NAME)]
    cluster_name: String,

    /// Largest value accepted, in bytes; larger ones get 413.
    #[arg(long, global = true, env = "DND_MAX_VALUE_BYTES", default_value_t = config::DEFAULT_MAX_VALUE_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    max_value_bytes: u64,

    /// Most concurrent versions (siblings) a write may leave a key with; a
    /// write past it gets 409 until one is written with a read's context.
    #[arg(long, global = true, env = "DND_MAX_SIBLINGS", default_value_t = dnd::actors::store::DEFAULT_MAX_SIBLINGS as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max_siblings: u64,

    /// Largest gossip datagram sent or accepted, in bytes.
    #[arg(long, global = true, env = "DND_GOSSIP_MTU", default_value_t = config::DEFAULT_GOSSIP_MTU as u64,
          value_parser = clap::value_parser!(u64).range(512..=65_507))]
    gossip_mtu: u64,

    /// SWIM protocol period T: one member is probed per period.
    #[arg(long, global = true, env = "DND_PROTOCOL_PERIOD_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    protocol_period_ms: u64,

    /// How often pending membership rumors are pushed to random members.
    #[arg(long, global = true, env = "DND_GOSSIP_INTERVAL_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    gossip_interval_ms: u64,

    /// How many random members each push of rumors goes to.
    #[arg(long, global = true, env = "DND_GOSSIP_FANOUT", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=16))]
    gossip_fanout: u64,

    /// How long a probe waits for a direct ack before asking others
    /// [default: half the protocol period]; must be shorter than the period.
    #[arg(long, global = true, env = "DND_PROBE_TIMEOUT_MS",
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    probe_timeout_ms: Option<u64>,

    /// Members asked to probe indirectly when a direct probe gets no ack.
    #[arg(long, global = true, env = "DND_INDIRECT_PROBES", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(0..=16))]
    indirect_probes: u64,

    /// Suspicion timeout floor, in periods times max(1, log10(members)).
    #[arg(long, global = true, env = "DND_SUSPICION_MULT", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    suspicion_mult: u32,

    /// Suspicion timeout with no confirmations, as a multiple of the floor.
    #[arg(long, global = true, env = "DND_SUSPICION_MAX_MULT", default_value_t = 6,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    suspicion_max_mult: u32,

    /// Each membership rumor is piggybacked this times ceil(log10(members+1)) times.
    #[arg(long, global = true, env = "DND_RETRANSMIT_MULT", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    retransmit_mult: u32,

    /// Interval of full-state exchanges with a random member.
    #[arg(long, global = true, env = "DND_PUSH_PULL_INTERVAL_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    push_pull_interval_ms: u64,

    /// While any member is dead, one of them is pinged this often (jittered)
    /// in case it is alive after all, so a healed partition rejoins in
    /// seconds; 0 turns it off.
    #[arg(long, global = true, env = "DND_DEAD_PROBE_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    dead_probe_interval_ms: u64,

    /// Largest local health multiplier: how far a node that finds itself
    /// slow stretches its own timeouts.
    #[arg(long, global = true, env = "DND_AWARENESS_MAX", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    awareness_max: u32,

    /// How long `join` keeps asking its peer before giving up.
    #[arg(long, global = true, env = "DND_JOIN_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    join_timeout_ms: u64,

    /// How long a leaving node keeps answering so the news of its leave spreads.
    #[arg(long, global = true, env = "DND_LEAVE_GRACE_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    leave_grace_ms: u64,

    /// How long an HTTP request may wait on the node before it gets 503.
    #[arg(long, global = true, env = "DND_REQUEST_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    request_timeout_ms: u64,

    /// How many HTTP requests may wait on the node at once; one more gets
    /// 503 with Retry-After at once instead of joining a queue.
    #[arg(long, global = true, env = "DND_MAX_WAITING_REQUESTS", default_value_t = config::DEFAULT_MAX_WAITING_REQUESTS,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|v| v as usize))]
    max_waiting_requests: usize,

    /// How long a request body may take to arrive; a slower one gets 408
    /// and its connection is closed.
    #[arg(long, global = true, env = "DND_BODY_TIMEOUT_MS", default_value_t = config::DEFAULT_BODY_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    body_timeout_ms: u64,

    /// N: copies of each key. The same on every node of a cluster.
    #[arg(long, global = true, env = "DND_REPLICAS", default_value_t = replication::DEFAULT_REPLICAS,
          value_parser = clap::value_parser!(u64).range(1..=16).map(|v| v as usize))]
    replicas: usize,

    /// R: replicas that must answer a read (per request: ?r=) [default: a majority of --replicas].
    #[arg(long, global = true, env = "DND_READ_QUORUM",
          value_parser = clap::value_parser!(u64).range(1..=16).map(|v| v as usize))]
    read_quorum: Option<usize>,

    /// W: replicas that must store a write before it is acknowledged (per request: ?w=) [default: a majority of --replicas].
    #[arg(long, global = true, env = "DND_WRITE_QUORUM",
          value_parser = clap::value_parser!(u64).range(1..=16).map(|v| v as usize))]
    write_quorum: Option<usize>,

    /// Tokens per node on the hash ring. The same on every node of a cluster.
    #[arg(long, global = true, env = "DND_VNODES", default_value_t = ring::DEFAULT_VNODES,
          value_parser = clap::value_parser!(u64).range(1..=65_536).map(|v| v as usize))]
    vnodes: usize,

    /// How long a coordinator waits for one replica before asking another.
    #[arg(long, global = true, env = "DND_REPLICA_TIMEOUT_MS", default_value_t = config::DEFAULT_REPLICA_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    replica_timeout_ms: u64,

    /// How often hints are offered to the replicas they were kept for.
    #[arg(long, global = true, env = "DND_HINT_INTERVAL_MS", default_value_t = config::DEFAULT_HINT_INTERVAL.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    hint_interval_ms: u64,

    /// Whether a node standing in for a replica that is down keeps a hint
    /// to hand the write over when it returns.
    #[arg(long, global = true, env = "DND_HINTED_HANDOFF", default_value_t = true,
          action = clap::ArgAction::Set)]
    hinted_handoff: bool,

    /// How often a node compares hash trees with one peer to repair what
    /// differs; 0 turns anti-entropy (and tombstone collection) off.
    #[arg(long, global = true, env = "DND_ANTI_ENTROPY_INTERVAL_MS",
          default_value_t = config::DEFAULT_ANTI_ENTROPY_INTERVAL.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    anti_entropy_interval_ms: u64,

    /// How old a tombstone must be before it is forgotten (once every
    /// replica of its key holds it).
    #[arg(long, global = true, env = "DND_TOMBSTONE_GRACE_MS",
          default_value_t = config::DEFAULT_TOMBSTONE_GRACE.as_millis() as u64)]
    tombstone_grace_ms: u64,

    /// How long a leaving node may spend handing its data over.
    #[arg(long, global = true, env = "DND_LEAVE_HANDOFF_TIMEOUT_MS",
          default_value_t = config::DEFAULT_LEAVE_HANDOFF_TIMEOUT.as_millis() as u64)]
    leave_handoff_timeout_ms: u64,

    /// HTTP worker threads [default: one per core].
    #[arg(long, global = true, env = "DND_HTTP_WORKERS", default_value_t = 0)]
    http_workers: usize,

    /// File holding the cluster secret (base64 of 32 bytes; `dnd keygen`
    /// makes one). DND_CLUSTER_SECRET may hold the secret itself instead.
    /// Required on any address but loopback, unless --insecure.
    #[arg(long, global = true, env = "DND_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,

    /// Run on a non-loopback address without a cluster secret: anyone who
    /// can reach the ports can join, read and write.
    #[arg(long, global = true, env = "DND_INSECURE")]
    insecure: bool,

    /// Serve the HTTP API over TLS with this certificate chain (PEM, leaf
    /// first); needs --tls-key.
    #[arg(long, global = true, env = "DND_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "DND_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Require HTTPS clients to present a certificate signed by this CA (PEM).
    #[arg(long, global = true, env = "DND_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,

    /// Take HTTP requests only with a bearer token listed in this TOML file
    /// (`dnd token new` makes entries); `/health` and `/ready` stay open.
    #[arg(long, global = true, env = "DND_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,

    /// The node the client and admin commands (get, put, status, leave, ...)
    /// talk to [default: http://ADDRESS:SERVER_PORT].
    #[arg(long, global = true, env = "DND_ENDPOINT")]
    endpoint: Option<String>,

    /// Bearer token the client and admin commands send (better given as DND_TOKEN,
    /// which no process list shows).
    #[arg(long, global = true, env = "DND_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// CA certificate (PEM) the client and admin commands trust for an https endpoint,
    /// instead of the public roots.
    #[arg(long, global = true, env = "DND_CACERT")]
    cacert: Option<PathBuf>,

    /// Client certificate (PEM) the admin commands present; needs --key.
    #[arg(long, global = true, env = "DND_CERT", requires = "key")]
    cert: Option<PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(long, global = true, env = "DND_KEY", requires = "cert")]
    key: Option<PathBuf>,

    /// Most members (not counting those that left) a node's table takes;
    /// news of more is refused and counted.
    #[arg(long, global = true, env = "DND_MAX_MEMBERS", default_value_t = dnd::swim::DEFAULT_MAX_MEMBERS,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|v| v as usize))]
    max_members: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the first node of a new cluster.
    Start,
    /// Start a node and join the cluster through any member's gossip address.
    Join {
        /// Gossip address (HOST:PORT) of any member.
        peer: String,
    },
    /// Ask the node at --endpoint to leave the cluster and exit.
    Leave,
    /// Remove a dead member for good, through the node at
    /// --endpoint; the others re-replicate its keys.
    Remove {
        /// The member's id, as `/cluster/members` lists it.
        node_id: String,
    },
    /// Read a key: its value, or each sibling in a block of its own
    /// (exit 1 if it has none).
    Get {
        #[arg(value_name = "KEY")]
        name: String,
        #[command(flatten)]
        shown: Shown,
    },
    /// Write a key: VALUE, or standard input when VALUE is left out. It
    /// replaces what a quorum read finds unless --context or --if-absent
    /// says otherwise.
    Put {
        #[arg(value_name = "KEY")]
        name: String,
        value: Option<String>,
        /// Stored with the value [default: text/plain; charset=utf-8 for
        /// text, application/octet-stream otherwise].
        #[arg(long)]
        content_type: Option<String>,
        /// Replace exactly the versions of this context (from `dnd get
        /// --json`): anything written since stays beside the value.
        #[arg(long, conflicts_with = "if_absent")]
        context: Option<String>,
        /// Write only if the key has no value (exit 5 if it has one).
        #[arg(long)]
        if_absent: bool,
        /// Seconds until the value expires.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        ttl: Option<u64>,
        #[command(flatten)]
        shown: Shown,
    },
    /// Delete a key: what a quorum read finds, or exactly the versions of
    /// --context.
    Delete {
        #[arg(value_name = "KEY")]
        name: String,
        #[arg(long)]
        context: Option<String>,
        #[command(flatten)]
        shown: Shown,
    },
    /// List keys in order, one per line.
    Keys {
        /// Only keys that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        shown: Shown,
    },
    /// The members the node at --endpoint knows, with their state.
    Members {
        #[command(flatten)]
        shown: Shown,
    },
    /// The ring: N, R, W and each node's share of the keys.
    Ring {
        #[command(flatten)]
        shown: Shown,
    },
    /// The whole cluster on one screen: every node's state, ring share,
    /// keys, bytes, hints and handoff, and whether the cluster is healthy.
    Status {
        #[command(flatten)]
        shown: Shown,
    },
    /// Print a fresh cluster secret (base64 of 32 random bytes).
    Keygen,
    /// Make API tokens for --tokens-file.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// List or change the cluster keys of every live member, through the
    /// node at --endpoint.
    Keyring {
        #[command(subcommand)]
        action: KeyringAction,
    },
    /// Load running servers (dnd, the ceiling example, etcd) with YCSB-style
    /// workloads and report throughput and latency; `dnd bench summarize`
    /// turns several runs' JSON reports into a comparison page.
    ///
    /// `dnd bench --target 127.0.0.1:6000 --workload load,c,a,b`. The
    /// global -q/--quiet turns its progress line off.
    Bench(Box<dnd::load::BenchArgs>),
    /// Run a local cluster of NODES processes on loopback until Ctrl-C.
    ///
    /// Node i uses --port and --server-port plus i-1 on --address (or, with
    /// --distinct-addresses, the same ports on --address plus i-1), and keeps
    /// its data and log under --data-dir [default: ./dnd-dev]. Arguments
    /// after `--` go to every node: `dnd dev --nodes 5 -- --replicas 3`.
    Dev {
        /// How many nodes to run.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
        nodes: u16,
        /// Give each node its own loopback address instead of its own ports.
        #[arg(long)]
        distinct_addresses: bool,
        /// Flags for every node.
        #[arg(last = true)]
        node_args: Vec<String>,
    },
}

/// How a client command prints its answer.
#[derive(Debug, Clone, Copy, clap::Args)]
struct Shown {
    /// One JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum KeyringAction {
    /// Each live member's keys, by fingerprint, primary first.
    List,
    /// Add a key (base64, or `-` to read it from stdin) to every member's
    /// keyring; all accept it from now.
    Install { key: String },
    /// Make a key (base64 or fingerprint) every member's primary: all send
    /// with it from now.
    Use { key: String },
    /// Remove a key (base64 or fingerprint) from every member; the primary
    /// cannot be removed.
    Remove { key: String },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Print a fresh token, and the [[token]] table that makes nodes take
    /// it (only its SHA-256 is kept there).
    New {
        /// The token's name, as logs and refusals show it.
        name: String,
        /// What it allows: read, write (and read) or admin (and both).
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Append the table to this tokens file (created, mode 0600, if
        /// missing) instead of printing it.
        #[arg(long)]
        append: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    Read,
    Write,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Read => Role::Read,
            RoleArg::Write => Role::Write,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StorageArg {
    Disk,
    Memory,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SyncArg {
    Periodic,
    Always,
}

/// What the node does once started, besides serving.
struct Run {
    config: Config,
    leave_grace: Duration,
}

impl Cli {
    fn into_run(self) -> anyhow::Result<Run> {
        let leave_grace = Duration::from_millis(self.leave_grace_ms);
        Ok(Run {
            config: self.into_config()?,
            leave_grace,
        })
    }

    fn into_config(self) -> anyhow::Result<Config> {
        let seed = match &self.command {
            Command::Join { peer } => Some(resolve(peer)?),
            _ => None,
        };
        let cluster_key = self.cluster_key()?;
        // A wildcard address is refused by the node itself, with its reason.
        let listening = self.bind.unwrap_or(self.address);
        if cluster_key.is_none() && !listening.is_loopback() && !self.address.is_unspecified() {
            if !self.insecure {
                return Err(anyhow!(
                    "refusing to run on {} without a cluster secret: anyone who reaches its ports could join, read and write. \
                     Give --cluster-secret-file PATH (make one with `dnd keygen > PATH`) or DND_CLUSTER_SECRET, or --insecure to run open",
                    listening
                ));
            }
            tracing::warn!(
                address = %listening,
                "running without a cluster secret (--insecure): anyone who can reach this node's ports can join the cluster, read and write every key, and make members leave"
            );
        }
        // The indirect probe must be sent, and answered, within the period.
        let probe_timeout_ms = self.probe_timeout_ms.unwrap_or(self.protocol_period_ms / 2);
        if probe_timeout_ms >= self.protocol_period_ms {
            return Err(anyhow!(
                "--probe-timeout-ms ({probe_timeout_ms}) must be shorter than --protocol-period-ms ({})",
                self.protocol_period_ms
            ));
        }
        let probe_timeout = Duration::from_millis(probe_timeout_ms.max(1));
        let majority = Replication::majority_of(self.replicas);
        let replication = Replication {
            replicas: self.replicas,
            read_quorum: self.read_quorum.unwrap_or(majority),
            write_quorum: self.write_quorum.unwrap_or(majority),
        };
        replication.validate().map_err(|e| {
            anyhow!("--read-quorum and --write-quorum must be at most --replicas: {e}")
        })?;
        Ok(Config {
            address: self.address,
            bind: self.bind,
            gossip_port: self.port,
            http_port: self.server_port,
            seed,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| Config::default_data_dir(self.address, self.port)),
            storage: match self.storage {
                StorageArg::Disk => StorageKind::Disk,
                StorageArg::Memory => StorageKind::Memory,
            },
            sync: match self.sync {
                SyncArg::Always => SyncPolicy::Always,
                SyncArg::Periodic => {
                    SyncPolicy::Periodic(Duration::from_millis(self.sync_interval_ms))
                }
            },
            cluster_name: self.cluster_name,
            max_value_bytes: usize::try_from(self.max_value_bytes)?,
            max_siblings: usize::try_from(self.max_siblings)?,
            max_object_bytes: usize::MAX,
            gossip_mtu: usize::try_from(self.gossip_mtu)?,
            swim: SwimConfig {
                protocol_period: Duration::from_millis(self.protocol_period_ms),
                gossip_interval: Duration::from_millis(self.gossip_interval_ms),
                gossip_fanout: usize::try_from(self.gossip_fanout)?,
                probe_timeout,
                indirect_probes: usize::try_from(self.indirect_probes)?,
                suspicion_mult: self.suspicion_mult,
                suspicion_max_mult: self.suspicion_max_mult,
                retransmit_mult: self.retransmit_mult,
                push_pull_interval: Duration::from_millis(self.push_pull_interval_ms),
                dead_probe_interval: Duration::from_millis(self.dead_probe_interval_ms),
                awareness_max: self.awareness_max,
                max_members: self.max_members,
                ..SwimConfig::default()
            },
            join_timeout: Duration::from_millis(self.join_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_waiting_requests: self.max_waiting_requests,
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            replication,
            vnodes: self.vnodes,
            replica_timeout: Duration::from_millis(self.replica_timeout_ms),
            hint_interval: Duration::from_millis(self.hint_interval_ms),
            hinted_handoff: self.hinted_handoff,
            anti_entropy_interval: Duration::from_millis(self.anti_entropy_interval_ms),
            tombstone_grace: Duration::from_millis(self.tombstone_grace_ms),
            leave_handoff_timeout: Duration::from_millis(self.leave_handoff_timeout_ms),
            http_workers: self.http_workers,
            cluster_key,
            tls: match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert,
                    key,
                    client_ca: self.tls_client_ca,
                }),
                _ => None,
            },
            tokens: self
                .tokens_file
                .as_deref()
                .map(TokenTable::load)
                .transpose()?,
        })
    }

    /// The secret from --cluster-secret-file or DND_CLUSTER_SECRET, if any.
    fn cluster_key(&self) -> anyhow::Result<Option<ClusterKey>> {
        let from_env = std::env::var("DND_CLUSTER_SECRET").ok();
        let text = match (&self.cluster_secret_file, from_env) {
            (Some(_), Some(_)) => {
                return Err(anyhow!(
                    "the cluster secret is given twice: --cluster-secret-file and DND_CLUSTER_SECRET; give one"
                ))
            }
            (Some(path), None) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the cluster secret file {}", path.display()))?,
            (None, Some(text)) => text,
            (None, None) => return Ok(None),
        };
        ClusterKey::from_base64(&text)
            .map(Some)
            .map_err(|e| anyhow!("the cluster secret is not usable: {e}"))
    }
}

fn resolve(peer: &str) -> anyhow::Result<SocketAddr> {
    peer.to_socket_addrs()
        .with_context(|| format!("cannot resolve peer {peer:?} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| anyhow!("peer {peer:?} resolves to no address"))
}

fn init_logging(verbose: u8, quiet: u8, format: LogFormat) {
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    let filter = EnvFilter::try_from_env("DND_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    // Colour only for a person at a terminal: a log file or a journal gets
    // plain text, without escape codes.
    use std::io::IsTerminal as _;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, stopping"),
        _ = terminate => tracing::info!("SIGTERM received, stopping"),
    }
}

fn run(run: Run) -> anyhow::Result<()> {
    let Run {
        config,
        leave_grace,
    } = run;
    actix_rt::System::new().block_on(async move {
        let (seed, join_timeout) = (config.seed, config.join_timeout);
        let node = Node::start(config).await?;
        if let Some(seed) = seed {
            tokio::select! {
                joined = node.wait_for_peers(join_timeout) => {
                    match joined {
                        Ok(true) => {}
                        Ok(false) => {
                            node.stop().await;
                            return Err(anyhow!(
                                "could not join: no member answered at {seed} within {:.1}s (with a cluster secret, a member that does not hold this node's key stays silent)",
                                join_timeout.as_secs_f64()
                            ));
                        }
                        Err(refusal) => {
                            node.stop().await;
                            return Err(anyhow!("could not join: {seed} refused: {refusal}"));
                        }
                    }
                    tracing::info!(%seed, "joined the cluster");
                }
                _ = shutdown_signal() => {
                    node.stop().await;
                    return Ok(());
                }
            }
        }
        // A signal stops the node and it stays a member; only a leave
        // request decommissions it and hands its keys away.
        tokio::select! {
            _ = shutdown_signal() => node.announce_stop(leave_grace).await,
            _ = node.leave_requested() => {
                tracing::info!("leave requested over HTTP");
                node.leave(leave_grace).await;
            }
        }
        node.stop().await;
        Ok(())
    })
}

/// The client of the node at --endpoint, with the token and certificates
/// the flags give.
fn client_of(cli: &Cli) -> Result<Client, Failure> {
    let endpoint = match &cli.endpoint {
        Some(url) => url.clone(),
        None => format!("http://{}", SocketAddr::new(cli.address, cli.server_port)),
    };
    let mut options = ClientOptions::new(endpoint);
    options.token = cli.token.clone();
    options.cacert = cli.cacert.clone();
    options.identity = cli.cert.clone().zip(cli.key.clone());
    Ok(Client::new(&options)?)
}

/// `dnd leave` and `dnd remove`: one admin call; prints the node's
/// answer, or `success` instead when given.
fn admin(client: &Client, path: &str, expected: u16, success: Option<&str>) -> Outcome {
    use std::io::Write;
    let reply = client.request("POST", path, &[("Content-Type", "application/json")], b"{}")?;
    if reply.status != expected {
        return Err(commands::failure_of(
            client.endpoint(),
            &format!("POST {path}"),
            &reply,
        ));
    }
    match success {
        Some(message) => writeln!(
            std::io::stdout(),
            "the node at {} {message}",
            client.endpoint()
        )?,
        None => writeln!(std::io::stdout(), "{}", reply.text().trim())?,
    }
    Ok(())
}

/// `dnd token new`: the token on stdout, and its table printed or
/// appended to a tokens file.
fn token_new(name: &str, role: Role, append: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::io::Write;
    dnd::tokens::check_name(name)?;
    let token = dnd::tokens::generate_token();
    let table = dnd::tokens::token_table_entry(name, role, &token);
    let mut out = std::io::stdout();
    match append {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            // Read back first, so that a name already there is refused
            // before the file changes.
            let existing = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
            };
            let combined = format!("{existing}\n{table}");
            TokenTable::from_toml(&combined)
                .with_context(|| format!("not appended to {}", path.display()))?;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            write!(file, "\n{table}")?;
            writeln!(out, "{token}")?;
            tracing::info!(file = %path.display(), name, %role, "token added; nodes take it once restarted with this file");
        }
        None => {
            writeln!(out, "{token}")?;
            writeln!(out)?;
            write!(out, "{table}")?;
        }
    }
    Ok(())
}

/// `dnd keyring ...`: asks the node, which asks every live member, and
/// prints the result node by node; fails if any member did not apply it.
fn keyring_command(client: &Client, action: &KeyringAction) -> anyhow::Result<()> {
    use std::io::Write;
    let target = client.endpoint();
    let (method, body) = match action {
        KeyringAction::List => ("GET", None),
        KeyringAction::Install { key } => ("POST", Some(("install", key))),
        KeyringAction::Use { key } => ("POST", Some(("use", key))),
        KeyringAction::Remove { key } => ("POST", Some(("remove", key))),
    };
    // `-` reads the key from stdin, so that it never shows in a process list.
    let from_stdin = |key: &String| -> anyhow::Result<String> {
        if key != "-" {
            return Ok(key.clone());
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        Ok(text.trim().to_string())
    };
    let json = match body {
        Some((op, key)) => {
            Some(serde_json::json!({ "op": op, "key": from_stdin(key)? }).to_string())
        }
        None => None,
    };
    let reply = client.request(
        method,
        "/cluster/keyring",
        &[("Content-Type", "application/json")],
        json.as_deref().unwrap_or("").as_bytes(),
    )?;
    let (status, answer) = (reply.status, reply.text());
    let report: serde_json::Value = serde_json::from_str(&answer)
        .with_context(|| format!("the node at {target} answered {status:?}: {answer}"))?;
    let Some(nodes) = report.get("nodes").and_then(|n| n.as_array()) else {
        let error = report
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or(&answer);
        return Err(anyhow!("the node at {target} refused: {error}"));
    };
    let mut out = std::io::stdout();
    let mut failed = 0;
    for node in nodes {
        let field = |name: &str| {
            node.get(name)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string()
        };
        if node.get("ok").and_then(|v| v.as_bool()) == Some(true) {
            let keys: Vec<String> = node
                .get("keys")
                .and_then(|k| k.as_array())
                .map(|k| {
                    k.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            writeln!(
                out,
                "{}  {}  ok      primary {}  keys {}",
                field("node"),
                field("http_addr"),
                field("primary"),
                keys.join(",")
            )?;
        } else {
            failed += 1;
            writeln!(
                out,
                "{}  {}  FAILED  {}",
                field("node"),
                field("http_addr"),
                field("error")
            )?;
        }
    }
    if failed > 0 {
        return Err(anyhow!(
            "{failed} of {} members did not answer or refused",
            nodes.len()
        ));
    }
    Ok(())
}

/// `dnd dev`: starts the cluster, prints where its nodes are, and stops
/// them all on SIGINT or SIGTERM (or when one of them exits).
fn run_dev(
    cli: &Cli,
    nodes: usize,
    distinct_addresses: bool,
    node_args: Vec<String>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let IpAddr::V4(address) = cli.address else {
        return Err(anyhow!("dnd dev needs an IPv4 loopback --address"));
    };
    if !address.is_loopback() {
        return Err(anyhow!(
            "dnd dev runs on loopback only; --address {address} is not"
        ));
    }
    let mut args = vec![
        "--cluster-name".to_string(),
        cli.cluster_name.clone(),
        "--storage".to_string(),
        format!("{:?}", cli.storage).to_lowercase(),
    ];
    args.extend(node_args);
    let options = dnd::dev::DevOptions {
        binary: std::env::current_exe().context("cannot find the dnd binary")?,
        nodes,
        address,
        distinct_addresses,
        gossip_port: cli.port,
        http_port: cli.server_port,
        data_dir: cli
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("dnd-dev")),
        node_args: args,
    };
    let mut cluster = dnd::dev::DevCluster::start(options, Duration::from_secs(60))?;
    let mut out = std::io::stdout();
    writeln!(out, "{nodes} dnd nodes running (Ctrl-C stops them all):")?;
    for node in &cluster.nodes {
        writeln!(
            out,
            "  {}  http://{}  gossip {}  data {}  log {}",
            node.name,
            node.http_addr(),
            node.gossip_addr(),
            node.data_dir.display(),
            node.log.display()
        )?;
    }
    writeln!(
        out,
        "try: curl -X PUT http://{}/kv/hello -d world",
        cluster.nodes[0].http_addr()
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exited = runtime.block_on(async {
        let mut check = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = shutdown_signal() => return None,
                _ = check.tick() => {
                    for node in &mut cluster.nodes {
                        if !node.is_running() {
                            return Some(node.name.clone());
                        }
                    }
                }
            }
        }
    });
    cluster.stop(Duration::from_secs(15));
    match exited {
        Some(name) => Err(anyhow!("{name} exited; stopped the others")),
        None => Ok(()),
    }
}

/// The command line with a settings file's flags put first, if `--config`
/// (or DND_CONFIG) names one.
fn with_settings_file(mut args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let given = args.get(1..).unwrap_or_default();
    let mut words = given.iter().take_while(|w| *w != "--");
    let mut named = None;
    while let Some(word) = words.next() {
        let Some(word) = word.to_str() else { continue };
        if word == "--config" {
            named = words.next().map(PathBuf::from);
        } else if let Some(path) = word.strip_prefix("--config=") {
            named = Some(PathBuf::from(path));
        }
    }
    let Some(path) = named.or_else(|| std::env::var_os("DND_CONFIG").map(PathBuf::from)) else {
        return Ok(args);
    };
    let flags = dnd::settings_file::flags_from_file(&path, &Cli::command(), given)?;
    let program = args.drain(..1).collect::<Vec<_>>();
    Ok(program.into_iter().chain(flags).chain(args).collect())
}

/// Standard input whole, for `dnd put KEY` without a value.
fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut value = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut value)
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot read standard input: {e}")))?;
    Ok(value)
}

/// A client command (get, put, ..., status), against the node at
/// --endpoint; `None` if `command` is not one.
fn client_command(cli: &Cli) -> Option<Outcome> {
    use std::io::IsTerminal;
    let shown = match &cli.command {
        Command::Get { shown, .. }
        | Command::Put { shown, .. }
        | Command::Delete { shown, .. }
        | Command::Keys { shown, .. }
        | Command::Members { shown }
        | Command::Ring { shown }
        | Command::Status { shown } => *shown,
        _ => return None,
    };
    let run = || -> Outcome {
        let client = client_of(cli)?;
        let mut stdout = std::io::stdout().lock();
        let mut print = Printer {
            terminal: std::io::stdout().is_terminal(),
            out: &mut stdout,
            json: shown.json,
        };
        match &cli.command {
            Command::Get { name, .. } => commands::get(&client, name, &mut print),
            Command::Put {
                name,
                value,
                content_type,
                context,
                if_absent,
                ttl,
                ..
            } => {
                let value = match value {
                    Some(value) => value.clone().into_bytes(),
                    None => read_stdin()?,
                };
                let mode = match (context, if_absent) {
                    (Some(context), _) => PutMode::Context(context.clone()),
                    (None, true) => PutMode::IfAbsent,
                    (None, false) => PutMode::Replace,
                };
                let put = commands::Put {
                    key: name,
                    value: &value,
                    content_type: content_type.as_deref(),
                    mode,
                    ttl_seconds: *ttl,
                };
                commands::put(&client, &put, &mut print)
            }
            Command::Delete { name, context, .. } => {
                commands::delete(&client, name, context.as_deref(), &mut print)
            }
            Command::Keys { prefix, limit, .. } => {
                commands::keys(&client, prefix, *limit, &mut print)
            }
            Command::Members { .. } => commands::members(&client, &mut print),
            Command::Ring { .. } => commands::ring(&client, &mut print),
            _ => commands::status(&client, &mut print),
        }
    };
    Some(run())
}

/// Whether the command line is `dnd [global flags] bench ...`, whose flag
/// errors are one line, as the scripts that run it read them.
fn is_bench(args: &[OsString]) -> bool {
    let command = Cli::command();
    let takes_value = |word: &str| {
        command.get_arguments().any(|arg| {
            arg.get_action().takes_values()
                && (arg
                    .get_long()
                    .is_some_and(|long| word == format!("--{long}"))
                    || arg
                        .get_short()
                        .is_some_and(|short| word == format!("-{short}")))
        })
    };
    // The first word that is no flag and no flag's value names the command.
    let mut words = args.iter().skip(1).filter_map(|w| w.to_str());
    while let Some(word) = words.next() {
        if word.starts_with('-') {
            if takes_value(word) {
                words.next();
            }
            continue;
        }
        return word == "bench";
    }
    false
}

/// A clap error as one line: its message, without the usage and the tips
/// that follow it.
fn one_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut lines = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more"))
        .filter(|line| !line.is_empty());
    let mut message = lines.next().unwrap_or("invalid arguments").to_string();
    for line in lines {
        message.push(' ');
        message.push_str(line);
    }
    message.trim_start_matches("error: ").to_string()
}

fn main() -> ExitCode {
    let args = match with_settings_file(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("dnd: {e:#}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && is_bench(&args) => {
            eprintln!("dnd bench: {}", one_line(&e));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    init_logging(cli.verbose, cli.quiet, cli.log_format);
    if let Some(outcome) = client_command(&cli) {
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => {
                eprintln!("dnd: {}", failure.message);
                ExitCode::from(failure.code)
            }
        };
    }
    let admin_outcome =
        match cli.command {
            Command::Keyring { ref action } => Some(client_of(&cli).and_then(|client| {
                keyring_command(&client, action).map_err(|e| {
                    let code = match e.downcast_ref::<dnd::client::ClientError>() {
                        Some(dnd::client::ClientError::Setup(_)) => exit::USAGE,
                        Some(_) => exit::UNAVAILABLE,
                        None => exit::FAILED,
                    };
                    Failure::new(code, format!("{e:#}"))
                })
            })),
            Command::Leave => Some(client_of(&cli).and_then(|client| {
                admin(
                    &client,
                    "/cluster/leave",
                    202,
                    Some("is leaving the cluster"),
                )
            })),
            Command::Remove { ref node_id } => Some(client_of(&cli).and_then(|client| {
                admin(&client, &format!("/cluster/remove/{node_id}"), 202, None)
            })),
            _ => None,
        };
    if let Some(outcome) = admin_outcome {
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => {
                eprintln!("dnd: {}", failure.message);
                ExitCode::from(failure.code)
            }
        };
    }
    let outcome = match cli.command {
        Command::Bench(mut args) => {
            args.run.quiet = cli.quiet > 0;
            return dnd::load::run(*args);
        }
        Command::Keygen => {
            use std::io::Write;
            writeln!(std::io::stdout(), "{}", ClusterKey::generate().to_base64())
                .map_err(Into::into)
        }
        Command::Token {
            action:
                TokenAction::New {
                    ref name,
                    role,
                    ref append,
                },
        } => token_new(name, role.into(), append.as_deref()),
        Command::Dev {
            nodes,
            distinct_addresses,
            ref node_args,
        } => run_dev(&cli, nodes.into(), distinct_addresses, node_args.clone()),
        _ => cli.into_run().and_then(run),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
