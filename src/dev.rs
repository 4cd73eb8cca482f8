//! A local cluster of real `dnd` processes on loopback: what `dnd dev
//! --nodes 5` runs, and what the fault tests (`tests/faults.rs`) drive.
//!
//! Owns the child processes it starts, their data directories and their log
//! files. It must never signal a process it did not start, and it stops every
//! node it started when dropped, so a failing test leaves nothing behind.
//! Blocking on purpose: it is used from a plain `main` and from test threads,
//! and talks to the nodes through [`crate::client`], a blocking HTTP client.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a local cluster is laid out and started.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// The `dnd` binary to run.
    pub binary: PathBuf,
    pub nodes: usize,
    /// Node 1's address. With `distinct_addresses`, node `i` listens on
    /// this address plus `i - 1` (127.0.0.1, 127.0.0.2, ...) on the same
    /// ports; otherwise every node listens here and node `i` adds `i - 1`
    /// to both ports.
    pub address: Ipv4Addr,
    pub distinct_addresses: bool,
    pub gossip_port: u16,
    pub http_port: u16,
    /// Node `i` keeps its data in `data_dir/node-i` and logs to
    /// `data_dir/node-i.log`.
    pub data_dir: PathBuf,
    /// Passed to every node before the subcommand (`--replicas 3`, ...).
    pub node_args: Vec<String>,
}

/// One node of a [`DevCluster`]; its addresses and data stay the same
/// across restarts, so a restarted node keeps its identity.
#[derive(Debug)]
pub struct DevNode {
    pub name: String,
    pub address: IpAddr,
    pub gossip_port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Extra environment for this node's process (a faked clock, say).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    /// How the last process of this node ended, once it has been seen to.
    last_exit: Option<std::process::ExitStatus>,
}

impl DevNode {
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.http_port)
    }

    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.gossip_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether this node's process is running (or paused).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.last_exit = Some(status);
                self.child = None;
                false
            }
            Some(Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }
}

/// Errors of the launcher, each naming the node it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("cannot start {node}: {source}")]
    Spawn {
        node: String,
        source: std::io::Error,
    },
    #[error("{node} exited before it was ready ({status}); its log is {log}, which ends:\n{tail}")]
    Exited {
        node: String,
        /// The exit code or the signal, as the system reported it.
        status: String,
        log: PathBuf,
        /// The log's last lines, since a test removes the file with its
        /// directory.
        tail: String,
    },
    #[error("{what} within {seconds:.0} s")]
    NotReady { what: String, seconds: f64 },
    #[error("a cluster needs at least one node")]
    NoNodes,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Real `dnd` processes on loopback, one data directory each.
pub struct DevCluster {
    options: DevOptions,
    pub nodes: Vec<DevNode>,
}

impl DevCluster {
    /// Lays the cluster out without starting anything.
    pub fn new(options: DevOptions) -> Result<DevCluster, DevError> {
        if options.nodes == 0 {
            return Err(DevError::NoNodes);
        }
        std::fs::create_dir_all(&options.data_dir)?;
        let nodes = (0..options.nodes).map(|i| lay_out(&options, i)).collect();
        Ok(DevCluster { options, nodes })
    }

    /// Lays out one more node after the others (by the same rule), not yet
    /// started; returns its index for [`DevCluster::spawn`].
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        self.nodes.push(lay_out(&self.options, i));
        i
    }

    /// Starts every node (the first with `start`, the others joining it)
    /// and waits until each lists all of them alive.
    pub fn start(options: DevOptions, timeout: Duration) -> Result<DevCluster, DevError> {
        let mut cluster = DevCluster::new(options)?;
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        cluster.wait_converged(timeout)?;
        Ok(cluster)
    }

    /// Starts node `i` (again): the first node of a fresh cluster runs
    /// `start`, every other start joins through a node that is running.
    pub fn spawn(&mut self, i: usize) -> Result<(), DevError> {
        let seed = (0..self.nodes.len())
            .filter(|&j| j != i)
            .find(|&j| self.nodes[j].is_running())
            .map(|j| self.nodes[j].gossip_addr());
        let node = &mut self.nodes[i];
        if node.is_running() {
            return Ok(());
        }
        let log = File::options().create(true).append(true).open(&node.log)?;
        let mut command = Command::new(&self.options.binary);
        command
            .arg("--address")
            .arg(node.address.to_string())
            .arg("--port")
            .arg(node.gossip_port.to_string())
            .arg("--server-port")
            .arg(node.http_port.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(&self.options.node_args);
        match seed {
            Some(seed) => command.arg("join").arg(seed.to_string()),
            None => command.arg("start"),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env_remove("DND_LOG")
            .envs(node.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .map_err(|source| DevError::Spawn {
                node: node.name.clone(),
                source,
            })?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until every running node answers `/health` and lists every
    /// running node alive.
    pub fn wait_converged(&mut self, timeout: Duration) -> Result<(), DevError> {
        let deadline = Instant::now() + timeout;
        loop {
            for node in &mut self.nodes {
                if node.child.is_some() && !node.is_running() {
                    return Err(DevError::Exited {
                        node: node.name.clone(),
                        status: node
                            .last_exit
                            .map_or_else(|| "status unknown".into(), |s| s.to_string()),
                        log: node.log.clone(),
                        tail: last_lines(&node.log, 20),
                    });
                }
            }
            if self.converged() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DevError::NotReady {
                    what: "the nodes did not all list each other alive".into(),
                    seconds: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn converged(&mut self) -> bool {
        let running: Vec<(SocketAddr, SocketAddr)> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then(|| (n.gossip_addr(), n.http_addr())))
            .collect();
        running.iter().all(|&(_, http)| {
            let Some(members) = members(http) else {
                return false;
            };
            running.iter().all(|(gossip, _)| {
                members
                    .iter()
                    .any(|m| m.state == "alive" && m.gossip_addr == gossip.to_string())
            })
        })
    }

    /// `kill -9`: the node gets no chance to leave or flush.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`) to node `i`, if it runs.
    pub fn signal(&mut self, i: usize, signal: &str) -> Result<(), DevError> {
        let Some(pid) = self.nodes[i].pid() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            return Err(DevError::Io(std::io::Error::other(format!(
                "kill -{signal} {pid} failed"
            ))));
        }
        Ok(())
    }

    /// Stops every node: SIGTERM (a node stops, staying a member), then
    /// SIGKILL for any still running after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        for i in 0..self.nodes.len() {
            // A paused node must run again to handle SIGTERM.
            let _ = self.signal(i, "CONT");
            let _ = self.signal(i, "TERM");
        }
        let deadline = Instant::now() + grace;
        for node in &mut self.nodes {
            while node.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.options.data_dir
    }
}

/// Node `i`'s place: its own ports on the shared address, or its own
/// address on the shared ports.
fn lay_out(options: &DevOptions, i: usize) -> DevNode {
    let offset = u16::try_from(i).unwrap_or(u16::MAX);
    let (address, gossip_port, http_port) = if options.distinct_addresses {
        let base = u32::from(options.address);
        let address = Ipv4Addr::from(base.saturating_add(u32::from(offset)));
        (address, options.gossip_port, options.http_port)
    } else {
        (
            options.address,
            options.gossip_port.saturating_add(offset),
            options.http_port.saturating_add(offset),
        )
    };
    let name = format!("node-{}", i + 1);
    DevNode {
        data_dir: options.data_dir.join(&name),
        log: options.data_dir.join(format!("{name}.log")),
        name,
        address: IpAddr::V4(address),
        gossip_port,
        http_port,
        env: Vec::new(),
        child: None,
        last_exit: None,
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.signal(i, "CONT");
            self.kill(i);
        }
    }
}

pub use crate::client::Reply;

/// One HTTP request to `addr`, waiting at most `timeout` in all. Errors are
/// one line.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, String> {
    crate::client::Client::plain(addr, timeout)
        .request(method, path, headers, body)
        .map_err(|e| format!("requesting {path}: {e}"))
}

/// One `GET`: the status and the body as text, or `None` if the node
/// cannot be reached or answers something unreadable.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let reply = request(addr, "GET", path, &[], b"", Duration::from_secs(5)).ok()?;
    Some((reply.status, reply.text()))
}

/// A counter or gauge from a node's `/metrics` (`dnd_hints_pending`, ...).
pub fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    metrics(addr, &[name])?.pop()?
}

/// Several counters or gauges from one fetch of a node's `/metrics`, in
/// the order asked; `None` if the node did not answer.
pub fn metrics(addr: SocketAddr, names: &[&str]) -> Option<Vec<Option<u64>>> {
    let (_, text) = http_get(addr, "/metrics").filter(|(status, _)| *status == 200)?;
    let value = |name: &str| {
        text.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    };
    Some(names.iter().map(|name| value(name)).collect())
}

/// One member as a node's `/cluster/members` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    pub id: String,
    pub state: String,
    pub gossip_addr: String,
    pub http_addr: String,
    pub incarnation: u64,
}

/// The members the node at `addr` lists, or `None` if it does not answer
/// with a member list.
pub fn members(addr: SocketAddr) -> Option<Vec<MemberRow>> {
    let (status, body) = http_get(addr, "/cluster/members")?;
    if status != 200 {
        return None;
    }
    let list: serde_json::Value = serde_json::from_str(&body).ok()?;
    let text =
        |m: &serde_json::Value, field: &str| m[field].as_str().unwrap_or_default().to_string();
    Some(
        list.as_array()?
            .iter()
            .map(|m| MemberRow {
                id: text(m, "id"),
                state: text(m, "state"),
                gossip_addr: text(m, "gossip_addr"),
                http_addr: text(m, "http_addr"),
                incarnation: m["incarnation"].as_u64().unwrap_or_default(),
            })
            .collect(),
    )
}

/// The id of the node at `addr`, from its `/health`.
pub fn node_id(addr: SocketAddr) -> Option<String> {
    let (_, body) = http_get(addr, "/health")?;
    let health: serde_json::Value = serde_json::from_str(&body).ok()?;
    health["node_id"].as_str().map(String::from)
}

/// A port free for both UDP and TCP on loopback at the time of asking (a
/// node's gossip and peer ports share a number).
pub fn free_port() -> u16 {
    loop {
        let Ok(udp) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(local) = udp.local_addr() else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", local.port())).is_ok() {
            return local.port();
        }
    }
}

/// The last `count` lines of the file at `path` (empty if unreadable).
fn last_lines(path: &Path, count: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}
