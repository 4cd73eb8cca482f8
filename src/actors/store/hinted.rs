//! Hinted handoff: the hints this node keeps for home replicas that were
//! down when a write it stood in for was stored, and their delivery once
//! the owner is back.
//!
//! Owns the hint marks in storage (`data::layout::hint_key`), their index
//! ([`Hints`]) and the delivery rounds under way, one per owner at a time.
//! What a hint's fate is (delivered, stale, moved to the key's new homes;
//! whether a stand-in drops its copy after delivery) is `data::hints`'s to
//! decide; this module carries it out. It never versions or merges a copy:
//! it reads copies through [`LocalCopies`] and sends them as they are.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Message};

use super::local::LocalCopies;
use super::view::ClusterView;
use super::{ReplicaClient, Store};
use crate::data::hints::{after_delivery, moved_to, Hints};
use crate::data::layout::{hint_key, parse_hint_key, HINT_PREFIX};
use crate::key::Key;
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::replica::{ReplicaReply, ReplicaRequest};
use crate::storage::StorageEngine;
use crate::version::{Dot, Object};

/// Hinted keys offered to one owner per round.
const HINT_BATCH: usize = 256;

/// An owner stored a hinted key: the hint can go.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct HintDelivered {
    owner: NodeId,
    key: Key,
    delivered: BTreeSet<Dot>,
}

/// A delivery round to this owner ended (all sent, or it stopped).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct DeliveryRoundOver(pub(super) NodeId);

pub(super) struct HintKeeper {
    engine: Arc<dyn StorageEngine>,
    metrics: SharedMetrics,
    /// Whether stand-ins keep hints at all (`--no-hinted-handoff` turns
    /// them off).
    enabled: bool,
    hints: Hints,
    /// Owners a delivery round is under way for.
    delivering: HashSet<NodeId>,
}

impl HintKeeper {
    pub(super) fn new(
        engine: Arc<dyn StorageEngine>,
        metrics: SharedMetrics,
        enabled: bool,
    ) -> Self {
        HintKeeper {
            engine,
            metrics,
            enabled,
            hints: Hints::default(),
            delivering: HashSet::new(),
        }
    }

    pub(super) fn is_loaded(&self) -> bool {
        self.hints.loaded
    }

    /// Whether this node keeps a hint for `key`, for any owner.
    pub(super) fn any_for_key(&self, key: &str) -> bool {
        self.hints.any_for_key(key)
    }

    /// Rounds under way belonged to a context that is gone.
    pub(super) fn forget_rounds(&mut self) {
        self.delivering.clear();
    }

    pub(super) fn round_over(&mut self, owner: NodeId) {
        self.delivering.remove(&owner);
    }

    /// Keeps a hint of `key` for each of `owners` (never for this node).
    pub(super) fn keep(&mut self, key: &str, owners: &[NodeId], local_id: NodeId) {
        if !self.enabled {
            return;
        }
        for &owner in owners {
            if owner == local_id || self.hints.contains(owner, key) {
                continue;
            }
            match self.engine.put(&hint_key(owner, key), &[]) {
                Ok(()) => {
                    self.hints.insert(owner, key.to_string());
                    self.metrics.hints_recorded.inc();
                }
                Err(e) => {
                    self.metrics.kv_storage_errors.inc();
                    tracing::error!(error = %e, %owner, "could not keep a hint; the owner relies on repair");
                }
            }
        }
        self.metrics.hints_pending.set(self.hints.len() as u64);
    }

    /// Hints kept, not yet delivered.
    pub(super) fn pending(&self) -> usize {
        self.hints.len()
    }

    pub(super) fn load(&mut self) {
        match self.engine.scan_prefix(&[HINT_PREFIX]) {
            Ok(entries) => {
                for (raw, _) in entries {
                    match parse_hint_key(&raw) {
                        Some((owner, key)) => self.hints.insert(owner, key),
                        None => tracing::warn!("skipping an unreadable hint entry"),
                    }
                }
                if !self.hints.is_empty() {
                    tracing::info!(hints = self.hints.len(), "hints loaded");
                }
            }
            Err(e) => tracing::error!(error = %e, "could not load hints"),
        }
        self.hints.loaded = true;
        self.metrics.hints_pending.set(self.hints.len() as u64);
    }

    fn drop_hint(&mut self, owner: NodeId, key: &str) {
        if let Err(e) = self.engine.delete(&hint_key(owner, key)) {
            tracing::warn!(error = %e, "could not delete a delivered hint; it will be sent again");
            return;
        }
        self.hints.remove(owner, key);
        self.metrics.hints_pending.set(self.hints.len() as u64);
    }

    /// Starts a delivery round for every owner that is alive and has hints.
    pub(super) fn deliver(
        &mut self,
        view: &ClusterView,
        local: &LocalCopies,
        peers: &ReplicaClient,
        timeout: Duration,
        store: &Addr<Store>,
    ) {
        let local_id = view.local_id();
        let owners: Vec<NodeId> = self.hints.owners().collect();
        for owner in owners {
            if self.delivering.contains(&owner) {
                continue;
            }
            // An owner that is gone (removed, or left) no longer homes its
            // keys: its hints move to their homes whether it is up or not.
            let deliverable = view.is_alive(owner).then(|| view.addr_of(owner)).flatten();
            let mut batch = Vec::new();
            let mut stale = Vec::new();
            let mut moved = Vec::new();
            for key in self.hints.keys_for(owner).take(HINT_BATCH) {
                if let Some(owners) = moved_to(owner, &view.placement(key).home, local_id) {
                    moved.push((key.clone(), owners));
                    continue;
                }
                if deliverable.is_none() {
                    continue;
                }
                // A mark whose key is not valid (a damaged entry) has no
                // copy to deliver.
                let Ok(valid) = Key::new(key.as_str()) else {
                    stale.push(key.clone());
                    continue;
                };
                match local.read(key) {
                    Ok(object) if !object.is_empty() => batch.push((valid, object)),
                    Ok(_) => stale.push(key.clone()),
                    Err(e) => tracing::warn!(error = %e, "cannot read a hinted key"),
                }
            }
            for key in stale {
                self.drop_hint(owner, &key);
            }
            for (key, owners) in moved {
                self.keep(&key, &owners, local_id);
                self.drop_hint(owner, &key);
            }
            let Some(addr) = deliverable.filter(|_| !batch.is_empty()) else {
                continue;
            };
            self.delivering.insert(owner);
            actix::spawn(deliver_round(
                peers.clone(),
                owner,
                addr,
                batch,
                timeout,
                store.clone(),
            ));
        }
    }

    /// An owner stored a hinted key: drops the hint unless the copy changed
    /// since it was sent, and the stand-in's copy too, as
    /// `data::hints::after_delivery` says.
    pub(super) fn delivered(
        &mut self,
        msg: HintDelivered,
        view: &ClusterView,
        local: &mut LocalCopies,
    ) {
        self.metrics.hints_delivered.inc();
        let held = match local.read(&msg.key) {
            Ok(object) => object.dots(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a delivered hint's copy; the hint stays");
                return;
            }
        };
        let is_home = view.placement(&msg.key).is_home(view.local_id());
        let others = self
            .hints
            .owners()
            .any(|o| o != msg.owner && self.hints.contains(o, &msg.key));
        let next = after_delivery(&msg.delivered, &held, is_home, others);
        if next.drop_hint {
            self.drop_hint(msg.owner, &msg.key);
        }
        if next.drop_copy {
            if let Err(e) = local.drop_if(&msg.key, &msg.delivered) {
                tracing::warn!(error = %e, "could not drop a handed-over copy");
            }
        }
    }
}

/// Offers `batch` to `owner` one key at a time, stopping at the first
/// failure (the rest waits for the next round).
async fn deliver_round(
    peers: ReplicaClient,
    owner: NodeId,
    addr: std::net::SocketAddr,
    batch: Vec<(Key, Object)>,
    timeout: Duration,
    store: Addr<Store>,
) {
    for (key, object) in batch {
        let delivered = object.dots();
        let request = ReplicaRequest::Write {
            key: key.clone(),
            object,
            hint_for: None,
        };
        match peers.request_within(addr, &request, timeout).await {
            Ok(ReplicaReply::Stored) => store.do_send(HintDelivered {
                owner,
                key,
                delivered,
            }),
            other => {
                tracing::debug!(%owner, outcome = ?other.err(), "hint delivery stopped; will retry");
                break;
            }
        }
    }
    store.do_send(DeliveryRoundOver(owner));
}
