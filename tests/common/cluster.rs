//! In-process clusters whose nodes can be stopped and started again on
//! their data directories, and HTTP helpers for `/kv`.

use std::net::SocketAddr;
use std::time::Duration;

use dnd::actors::store::LocalCopy;
use dnd::config::{Config, StorageKind};
use dnd::key::Key;
use dnd::node::Node;
use dnd::version::Object;
use serde_json::Value;

use super::{client, eventually, lists_alive};

pub const SETTLE: Duration = Duration::from_secs(10);

/// One node of a test cluster; it can be stopped and started again on the
/// same data directory and gossip port, keeping its identity.
pub struct Slot {
    pub node: Option<Node>,
    pub dir: tempfile::TempDir,
    pub gossip_port: u16,
    pub storage: StorageKind,
}

impl Slot {
    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("the node is running")
    }

    pub fn http(&self) -> SocketAddr {
        self.node().http_addr
    }
}

fn config(
    dir: &std::path::Path,
    storage: StorageKind,
    port: u16,
    seed: Option<SocketAddr>,
) -> Config {
    let mut config = Config::ephemeral(dir.to_path_buf());
    config.storage = storage;
    config.gossip_port = port;
    config.seed = seed;
    config.replica_timeout = Duration::from_millis(500);
    config
}

pub struct Cluster {
    pub slots: Vec<Slot>,
    storage: StorageKind,
    /// Applied to every node's configuration, restarts included.
    configure: Box<dyn Fn(&mut Config)>,
}

impl Cluster {
    pub async fn start(n: usize, storage: StorageKind) -> Cluster {
        Cluster::start_with(n, storage, |_| {}).await
    }

    pub async fn start_with(
        n: usize,
        storage: StorageKind,
        configure: impl Fn(&mut Config) + 'static,
    ) -> Cluster {
        let mut cluster = Cluster {
            slots: Vec::new(),
            storage,
            configure: Box::new(configure),
        };
        for _ in 0..n {
            cluster.add_node().await;
        }
        cluster.wait_until_all_see_all().await;
        cluster
    }

    /// Starts one more node, joining through the first running one.
    /// Returns its index; does not wait for the others to know it.
    pub async fn add_node(&mut self) -> usize {
        let dir = tempfile::tempdir().expect("temp dir");
        let seed = self.running().next().map(|s| s.node().gossip_addr);
        let mut config = config(dir.path(), self.storage, 0, seed);
        (self.configure)(&mut config);
        let node = Node::start(config).await.expect("node starts");
        self.slots.push(Slot {
            gossip_port: node.gossip_addr.port(),
            node: Some(node),
            dir,
            storage: self.storage,
        });
        self.slots.len() - 1
    }

    pub fn running(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.node.is_some())
    }

    pub fn ids(&self) -> Vec<String> {
        self.running().map(|s| s.node().id.to_string()).collect()
    }

    pub async fn wait_until_all_see_all(&self) {
        let ids = self.ids();
        eventually(
            SETTLE,
            "every running node to list every other alive",
            || async {
                for slot in self.running() {
                    if !lists_alive(slot.http(), &ids).await {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    }

    pub async fn stop(&mut self, i: usize) {
        let node = self.slots[i].node.take().expect("running");
        node.stop().await;
    }

    /// Starts node `i` again on its data directory and gossip port, joining
    /// through the first running node, and waits until it is known again.
    pub async fn restart(&mut self, i: usize) {
        let seed = self.running().next().map(|s| s.node().gossip_addr);
        let slot = &self.slots[i];
        let mut config = config(slot.dir.path(), slot.storage, slot.gossip_port, seed);
        (self.configure)(&mut config);
        let node = Node::start(config).await.expect("node restarts");
        self.slots[i].node = Some(node);
        self.wait_until_all_see_all().await;
    }

    /// What node `i` itself holds for `key`.
    pub async fn local_copy(&self, i: usize, key: &str) -> Object {
        self.slots[i]
            .node()
            .store
            .send(LocalCopy {
                key: Key::new(key).unwrap(),
            })
            .await
            .expect("store answers")
            .expect("local copy")
    }

    pub async fn local_values(&self, i: usize, key: &str) -> Vec<String> {
        let object = self.local_copy(i, key).await;
        let mut values: Vec<String> = object
            .values()
            .map(|(_, _, bytes)| String::from_utf8_lossy(bytes).into_owned())
            .collect();
        values.sort();
        values
    }
}

pub struct Reply {
    pub status: u16,
    pub context: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

pub async fn request(
    method: &str,
    http: SocketAddr,
    path_and_query: &str,
    context: Option<&str>,
    body: &str,
) -> Reply {
    let url = format!("http://{http}/kv/{path_and_query}");
    let client = client();
    let mut builder = match method {
        "GET" => client.get(url),
        "PUT" => client.put(url),
        "DELETE" => client.delete(url),
        other => panic!("no such method {other}"),
    };
    if let Some(context) = context {
        builder = builder.insert_header(("X-Dnd-Context", context));
    }
    let mut response = builder
        .insert_header(("Content-Type", "text/plain"))
        .send_body(body.to_string())
        .await
        .expect("the node answers");
    let context = response
        .headers()
        .get("x-dnd-context")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.body().await.expect("a body").to_vec();
    Reply {
        status: response.status().as_u16(),
        context,
        body,
    }
}

pub async fn get(http: SocketAddr, path: &str) -> Reply {
    request("GET", http, path, None, "").await
}

pub async fn put(http: SocketAddr, path: &str, value: &str) -> Reply {
    request("PUT", http, path, None, value).await
}
