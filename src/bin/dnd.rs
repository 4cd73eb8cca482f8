//! The `dnd` command: parses flags (and `DND_*` variables), sets up logging,
//! and runs a node until SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use dnd::config::{self, Config, StorageKind, SyncPolicy};
use dnd::node::Node;
use tracing_subscriber::EnvFilter;

/// definitely not dynamo: a Dynamo-style distributed key-value store.
///
/// Start a cluster with `dnd start`, add nodes with `dnd join HOST:PORT`
/// (the gossip address of any member). Every node serves the HTTP API:
/// GET/PUT/POST/DELETE /kv/{key}, GET /cluster/members, GET /health.
#[derive(Debug, Parser)]
#[command(name = "dnd", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Address to bind and advertise, for gossip and HTTP.
    #[arg(long, global = true, env = "DND_ADDRESS", default_value = "127.0.0.1")]
    address: IpAddr,

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

    /// Largest gossip datagram sent or accepted, in bytes.
    #[arg(long, global = true, env = "DND_GOSSIP_MTU", default_value_t = config::DEFAULT_GOSSIP_MTU as u64,
          value_parser = clap::value_parser!(u64).range(512..=65_507))]
    gossip_mtu: u64,

    /// Gossip protocol period: how often a member is probed.
    #[arg(long, global = true, env = "DND_GOSSIP_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    gossip_interval_ms: u64,

    /// How long an HTTP request may wait on the node before it gets 503.
    #[arg(long, global = true, env = "DND_REQUEST_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    request_timeout_ms: u64,

    /// HTTP worker threads [default: one per core].
    #[arg(long, global = true, env = "DND_HTTP_WORKERS", default_value_t = 0)]
    http_workers: usize,
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

impl Cli {
    fn into_config(self) -> anyhow::Result<Config> {
        let seed = match &self.command {
            Command::Start => None,
            Command::Join { peer } => Some(resolve(peer)?),
        };
        Ok(Config {
            address: self.address,
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
            max_key_bytes: config::DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: usize::try_from(self.max_value_bytes)?,
            gossip_mtu: usize::try_from(self.gossip_mtu)?,
            gossip_interval: Duration::from_millis(self.gossip_interval_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            http_workers: self.http_workers,
        })
    }
}

fn resolve(peer: &str) -> anyhow::Result<SocketAddr> {
    peer.to_socket_addrs()
        .with_context(|| format!("cannot resolve peer {peer:?} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| anyhow!("peer {peer:?} resolves to no address"))
}

fn init_logging(verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    let filter = EnvFilter::try_from_env("DND_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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

fn run(config: Config) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(async move {
        let node = Node::start(config).await?;
        shutdown_signal().await;
        node.stop().await;
        Ok(())
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let outcome = cli.into_config().and_then(run);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
