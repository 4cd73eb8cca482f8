//! Watches on keys: a client waiting for a key to change (`?wait=`), and
//! the other nodes waiting to be told that this node's copy of a key
//! changed.
//!
//! Owns [`Watches`], the table of who waits on which key: the channel per
//! watched key that a change to this node's copy wakes (`LocalCopies`
//! tells it of every change), and the peers that asked to hear of changes
//! to keys this node is a home of, told once with `Changed` and then
//! forgotten. Nothing polls: a watch sleeps until a change or its
//! deadline. Both tables are bounded; a watch over the bound is refused,
//! counted and changes nothing. Whether a change is news for the client
//! is `data::watch`'s decision.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::{Addr, Message};
use dashmap::DashMap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Get, ReplicaClient, Store, StoreError};
use crate::data::watch::has_news;
use crate::key::Key;
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::replica::{ReplicaReply, ReplicaRequest};
use crate::replication::Quorum;
use crate::version::{Object, VersionVector};

/// The most client watches one node holds open.
pub const MAX_OPEN_WATCHES: usize = 100_000;
/// The most peers' requests to hear of a change this node keeps.
pub const MAX_PEER_SUBSCRIPTIONS: usize = 200_000;
/// How long a peer's request to hear of a change is kept: longer than any
/// watch lasts, after which it is forgotten unless renewed.
const PEER_SUBSCRIPTION_LIFE: Duration = Duration::from_secs(330);

/// A client watch: opens its place on this node and gives back the
/// [`Watching`] to run, which answers once `key` has a version `seen` does
/// not cover, or at the timeout. The caller runs it, so a client that goes
/// away ends its watch at once.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Watching, StoreError>")]
pub struct Watch {
    pub key: Key,
    pub seen: VersionVector,
    pub quorum: Option<Quorum>,
    pub timeout: Duration,
}

#[derive(Debug)]
pub enum WatchOutcome {
    /// The key has news; what a read of it found.
    Changed(Object),
    /// The timeout passed without news; what the last read found.
    Unchanged(Object),
}

pub struct Watches {
    metrics: SharedMetrics,
    peers: ReplicaClient,
    replica_timeout: Duration,
    watched: DashMap<Key, watch::Sender<u64>>,
    open: AtomicUsize,
    subscribers: Mutex<HashMap<Key, Vec<Subscriber>>>,
    subscriptions: AtomicUsize,
}

#[derive(Clone, Copy, Debug)]
struct Subscriber {
    node: NodeId,
    addr: SocketAddr,
    until: Instant,
}

/// A client watch's place in the table: dropping it leaves the table.
pub(super) struct WatchGuard {
    watches: Arc<Watches>,
    key: Key,
    changes: Option<watch::Receiver<u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The tables hold plain data; a panic elsewhere leaves them usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watches {
    pub(super) fn new(
        peers: ReplicaClient,
        replica_timeout: Duration,
        metrics: SharedMetrics,
    ) -> Self {
        Watches {
            metrics,
            peers,
            replica_timeout,
            watched: DashMap::new(),
            open: AtomicUsize::new(0),
            subscribers: Mutex::new(HashMap::new()),
            subscriptions: AtomicUsize::new(0),
        }
    }

    /// Opens a client watch on `key`, unless this node holds as many as it
    /// takes.
    pub(super) fn open(self: &Arc<Self>, key: &Key) -> Result<WatchGuard, StoreError> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= MAX_OPEN_WATCHES {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.metrics.kv_watches_refused.inc();
            return Err(StoreError::TooManyWatches {
                limit: MAX_OPEN_WATCHES,
            });
        }
        self.metrics
            .kv_watches_open
            .set(self.open.load(Ordering::Relaxed) as u64);
        let changes = self
            .watched
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Ok(WatchGuard {
            watches: self.clone(),
            key: key.clone(),
            changes: Some(changes),
        })
    }

    /// This node's copy of `key` changed, or a home replica said its copy
    /// did: wakes the client watches on it and tells the peers waiting.
    pub(super) fn changed(&self, key: &str) {
        if self.open.load(Ordering::Relaxed) > 0 {
            if let Some(sender) = self.watched.get(key) {
                sender.send_modify(|changes| *changes = changes.wrapping_add(1));
            }
        }
        if self.subscriptions.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(waiting) = lock(&self.subscribers).remove(key) else {
            return;
        };
        self.subscriptions
            .fetch_sub(waiting.len(), Ordering::Relaxed);
        let Ok(key) = Key::new(key) else { return };
        let now = Instant::now();
        for subscriber in waiting.into_iter().filter(|s| s.until > now) {
            let (peers, timeout) = (self.peers.clone(), self.replica_timeout);
            let request = ReplicaRequest::Changed { key: key.clone() };
            actix::spawn(async move {
                if let Err(e) = peers
                    .request_within(subscriber.addr, &request, timeout)
                    .await
                {
                    tracing::debug!(node = %subscriber.node, error = %e, "could not tell a watching node of a change");
                }
            });
        }
    }

    /// `node` (at `addr`) asks to hear once of the next change to `key`.
    /// Refused when the table is full, after forgetting those past their
    /// life.
    pub(super) fn subscribe_peer(&self, node: NodeId, addr: SocketAddr, key: Key) -> bool {
        let now = Instant::now();
        let mut table = lock(&self.subscribers);
        if self.subscriptions.load(Ordering::Relaxed) >= MAX_PEER_SUBSCRIPTIONS {
            let mut kept = 0;
            table.retain(|_, waiting| {
                waiting.retain(|s| s.until > now);
                kept += waiting.len();
                !waiting.is_empty()
            });
            self.subscriptions.store(kept, Ordering::Relaxed);
            if kept >= MAX_PEER_SUBSCRIPTIONS {
                self.metrics.kv_watches_refused.inc();
                return false;
            }
        }
        let waiting = table.entry(key).or_default();
        let until = now + PEER_SUBSCRIPTION_LIFE;
        match waiting.iter_mut().find(|s| s.node == node) {
            Some(existing) => existing.until = until,
            None => {
                waiting.push(Subscriber { node, addr, until });
                self.subscriptions.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        drop(self.changes.take());
        self.watches
            .watched
            .remove_if(&self.key, |_, sender| sender.receiver_count() == 0);
        let open = self.watches.open.fetch_sub(1, Ordering::Relaxed) - 1;
        self.watches.metrics.kv_watches_open.set(open as u64);
        self.watches.metrics.kv_watches_answered.inc();
    }
}

/// What a client watch needs once the Store has opened it: it runs beside
/// the Store, reading through it, and holds nothing of the Store's.
pub struct Watching {
    pub(super) watch: Watch,
    pub(super) guard: WatchGuard,
    pub(super) store: Addr<Store>,
    /// The key's home replicas to ask to hear of changes, when this node
    /// is none of them (its own copy would never change).
    pub(super) homes: Vec<(NodeId, SocketAddr)>,
    pub(super) peers: ReplicaClient,
    pub(super) replica_timeout: Duration,
}

impl std::fmt::Debug for Watching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watching")
            .field("watch", &self.watch)
            .field("homes", &self.homes)
            .finish_non_exhaustive()
    }
}

impl Watching {
    /// Waits for news or the timeout; dropping it ends the watch.
    pub async fn run(mut self) -> Result<WatchOutcome, StoreError> {
        let watch = self.watch.clone();
        let deadline = Instant::now() + watch.timeout;
        let Some(mut changes) = self.guard.changes.take() else {
            return Err(StoreError::Restarting);
        };
        loop {
            self.ask_homes_to_tell(&watch.key).await;
            // Marked seen before the read: a change from here on wakes the
            // wait below, even one that lands while the read is under way.
            changes.borrow_and_update();
            let read = self
                .store
                .send(Get {
                    key: watch.key.clone(),
                    quorum: watch.quorum,
                    trace: None,
                    span: tracing::Span::current(),
                })
                .await
                .map_err(|_| StoreError::Restarting)??;
            if has_news(&read.object, &watch.seen, super::wall_clock_ms()) {
                return Ok(WatchOutcome::Changed(read.object));
            }
            tokio::select! {
                woke = changes.changed() => {
                    if woke.is_err() {
                        return Ok(WatchOutcome::Unchanged(read.object));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Ok(WatchOutcome::Unchanged(read.object));
                }
            }
        }
    }

    async fn ask_homes_to_tell(&self, key: &Key) {
        let request = ReplicaRequest::Watch { key: key.clone() };
        let asks = self.homes.iter().map(|&(node, addr)| {
            let (peers, request, timeout) =
                (self.peers.clone(), request.clone(), self.replica_timeout);
            async move {
                match peers.request_within(addr, &request, timeout).await {
                    Ok(ReplicaReply::Stored) => {}
                    other => {
                        tracing::debug!(%node, reply = ?other.map(|r| format!("{r:?}")), "a home replica will not tell of changes")
                    }
                }
            }
        });
        futures_util::future::join_all(asks).await;
    }
}
