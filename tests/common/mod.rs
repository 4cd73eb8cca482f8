//! Test helpers: in-process nodes on ephemeral ports, real `dnd` processes,
//! an HTTP client, and waiting for a condition with a deadline.
#![allow(dead_code)]

pub mod cluster;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dnd::config::{Config, StorageKind};
use dnd::node::Node;
use serde_json::Value;

/// Polls `check` until it returns `Some`, or panics with `what` once
/// `deadline` has passed.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The blocking twin of [`eventually`], for tests that drive processes.
pub fn eventually_blocking<T>(
    deadline: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish()
}

pub fn url(node: &Node, path: &str) -> String {
    format!("http://{}{}", node.http_addr, path)
}

/// A node in this process, with a data directory removed when it drops.
pub struct TestNode {
    pub node: Node,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for TestNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

pub fn test_config(dir: &Path) -> Config {
    Config::ephemeral(dir.to_path_buf())
}

pub async fn start_node(configure: impl FnOnce(&mut Config)) -> TestNode {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    configure(&mut config);
    let node = Node::start(config).await.expect("node starts");
    TestNode { node, dir }
}

pub async fn start_disk_node(dir: &Path) -> Node {
    let mut config = test_config(dir);
    config.storage = StorageKind::Disk;
    Node::start(config).await.expect("node starts")
}

/// The members a node lists at `/cluster/members`.
pub async fn members_of(http_addr: SocketAddr) -> Option<Vec<Value>> {
    let mut response = client()
        .get(format!("http://{http_addr}/cluster/members"))
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    body.as_array().cloned()
}

/// Whether the node at `http_addr` lists every id in `ids` as alive.
pub async fn lists_alive(http_addr: SocketAddr, ids: &[String]) -> bool {
    let Some(members) = members_of(http_addr).await else {
        return false;
    };
    ids.iter().all(|id| {
        members
            .iter()
            .any(|m| m["id"] == id.as_str() && m["state"] == "alive")
    })
}

/// A port free for both UDP and TCP on loopback at the time of asking.
pub use dnd::dev::free_port;

/// A real `dnd` process, killed when dropped so no test leaves one behind.
pub struct DndProcess {
    pub child: Child,
    pub gossip_port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
}

pub fn dnd_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dnd"))
}

impl DndProcess {
    /// Starts `dnd <args>` on fresh ports with `data_dir`.
    pub fn spawn(data_dir: &Path, args: &[&str]) -> DndProcess {
        Self::spawn_on(data_dir, free_port(), free_port(), args)
    }

    pub fn spawn_on(
        data_dir: &Path,
        gossip_port: u16,
        http_port: u16,
        args: &[&str],
    ) -> DndProcess {
        Self::spawn_with(data_dir, gossip_port, http_port, args, Stdio::null())
    }

    /// Like [`DndProcess::spawn_on`], with stderr going where the test says.
    pub fn spawn_with(
        data_dir: &Path,
        gossip_port: u16,
        http_port: u16,
        args: &[&str],
        stderr: Stdio,
    ) -> DndProcess {
        let child = dnd_command()
            .args(args)
            .args(["--port", &gossip_port.to_string()])
            .args(["--server-port", &http_port.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("-q")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn dnd");
        DndProcess {
            child,
            gossip_port,
            http_port,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http_port, path)
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    pub fn gossip_addr(&self) -> String {
        format!("127.0.0.1:{}", self.gossip_port)
    }

    /// Sends a signal (`-STOP`, `-CONT`, `-TERM`, ...) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }
}

/// What the node at `http_addr` says of the member `id`: its state and
/// incarnation.
pub async fn state_of(http_addr: SocketAddr, id: &str) -> Option<(String, u64)> {
    let members = members_of(http_addr).await?;
    let member = members.iter().find(|m| m["id"] == id)?;
    Some((
        member["state"].as_str()?.to_string(),
        member["incarnation"].as_u64()?,
    ))
}

impl Drop for DndProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
