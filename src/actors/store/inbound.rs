//! Where requests from other nodes come in: the node-to-node server's
//! handler, which hands each authenticated request to the Store as
//! [`FromPeer`] and answers keyring requests beside it; the door every
//! data request passes ([`PeerDoor`]); and the merge of the objects peers
//! send in batches.
//!
//! The peer server has authenticated the channel and named the sender;
//! whether that sender may make the request is `data::admission`'s to
//! judge, and a refusal is counted and logged at most once a minute per
//! sender. A batch is merged by version and only for keys this node homes,
//! so no peer can make it keep a key it does not own or lose a version it
//! holds. A keyring request is served for a current member, asked of
//! Membership.

use std::time::Instant;

use actix::Addr;

use super::local::LocalCopies;
use super::view::ClusterView;
use super::{FromPeer, Store};
use crate::actors::membership::{ListMembers, Membership};
use crate::data::accept::without;
use crate::data::admission::{PeerJudge, PeerRefusal};
use crate::key::Key;
use crate::keyring::{Keyring, KeyringChange};
use crate::log_limit::LogLimit;
use crate::member::MemberState;
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::peer::{self, PeerConfig};
use crate::replica::{ReplicaReply, ReplicaRequest};
use crate::version::Object;

/// Serves node-to-node requests on `listener` until the node stops.
pub async fn serve_peers(
    listener: std::net::TcpListener,
    config: PeerConfig,
    metrics: SharedMetrics,
    store: Addr<Store>,
    membership: Addr<Membership>,
    keyring: Option<Keyring>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve replica requests");
            return;
        }
    };
    peer::serve(
        listener,
        config,
        metrics,
        move |from: NodeId, request: ReplicaRequest| {
            let (store, membership, keyring) = (store.clone(), membership.clone(), keyring.clone());
            async move {
                if let ReplicaRequest::Keyring(change) = request {
                    return keyring_request(from, change, keyring, membership).await;
                }
                store
                    .send(FromPeer { from, request })
                    .await
                    .unwrap_or_else(|_| ReplicaReply::Refused("the store is restarting".into()))
            }
        },
    )
    .await;
}

/// A member asks for this node's keyring, or changes it.
async fn keyring_request(
    from: NodeId,
    change: Option<KeyringChange>,
    keyring: Option<Keyring>,
    membership: Addr<Membership>,
) -> ReplicaReply {
    let is_member = match membership.send(ListMembers).await {
        Ok(members) => members
            .iter()
            .any(|s| s.member.id == from && s.member.state != MemberState::Left),
        Err(_) => false,
    };
    if !is_member {
        return ReplicaReply::Refused(format!("{from} is not a member of this cluster"));
    }
    let Some(keyring) = keyring else {
        return ReplicaReply::Keyring(Err(
            "this node runs without a cluster secret, so it has no keyring".into(),
        ));
    };
    let result = match change {
        Some(change) => {
            let applied = keyring.apply(&change).map_err(|e| e.to_string());
            match &applied {
                Ok(view) => {
                    tracing::info!(op = ?change.op, primary = %view.primary, keys = view.keys.len(), "keyring changed at a member's request")
                }
                Err(error) => tracing::warn!(op = ?change.op, %error, "keyring change refused"),
            }
            applied
        }
        None => Ok(keyring.view()),
    };
    ReplicaReply::Keyring(result)
}

/// Judges every data request before it is served.
pub(super) struct PeerDoor {
    metrics: SharedMetrics,
    max_value_bytes: usize,
    /// Refused peer requests are logged at most once a minute a sender.
    refusal_log: LogLimit<NodeId>,
}

impl PeerDoor {
    pub(super) fn new(metrics: SharedMetrics, max_value_bytes: usize) -> Self {
        PeerDoor {
            metrics,
            max_value_bytes,
            refusal_log: LogLimit::default(),
        }
    }

    /// `Err` with the reply to send if `from` may not make `request`.
    pub(super) fn admit(
        &mut self,
        from: NodeId,
        request: &ReplicaRequest,
        view: &ClusterView,
    ) -> Result<(), ReplicaReply> {
        let judge = PeerJudge {
            local_id: view.local_id(),
            members: view.members(),
            ring: view.ring(),
            replication: view.replication(),
            max_value_bytes: self.max_value_bytes,
        };
        let Some(refusal) = judge.judge(from, request) else {
            return Ok(());
        };
        let kind = request.kind();
        let reason = match refusal {
            PeerRefusal::NotMember => {
                self.metrics.peer_requests_refused_not_member.inc();
                format!("{from} is not a member of this cluster")
            }
            PeerRefusal::Role => {
                self.metrics.peer_requests_refused_role.inc();
                format!("a {kind} request is not {from}'s to make")
            }
            PeerRefusal::TooLarge => {
                self.metrics.peer_requests_refused_too_large.inc();
                format!(
                    "a value exceeds the limit of {} bytes",
                    self.max_value_bytes
                )
            }
        };
        if self.refusal_log.allow(from, Instant::now()) {
            tracing::warn!(peer = %from, %reason, "refused a peer request (logged once a minute per peer)");
        }
        Err(ReplicaReply::Refused(reason))
    }
}

/// Merges objects another node sent (a handoff batch, an anti-entropy
/// exchange) for keys this node is a home replica of, or will be once
/// `leaving` is gone; returns how many changed here and how many were
/// refused.
pub(super) fn merge_received(
    objects: Vec<(Key, Object)>,
    leaving: Option<NodeId>,
    view: &ClusterView,
    local: &mut LocalCopies,
    metrics: &SharedMetrics,
) -> (usize, usize) {
    let (mut merged, mut refused) = (0, 0);
    let after_leave = leaving.map(|gone| without(view.ring(), gone));
    let homes = view.homes();
    for (key, object) in objects {
        if !homes.takes_batch_key(&key, after_leave.as_ref()) {
            refused += 1;
            continue;
        }
        match local.merge(&key, &object) {
            Ok((_, true)) => {
                merged += 1;
                metrics.anti_entropy_keys_repaired.inc();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not merge a received key");
                refused += 1;
            }
        }
    }
    (merged, refused)
}

/// A `WriteEach`: each item taken as a `Write` of its own would be (by a
/// home replica, or a stand-in keeping a hint), stored in one write.
pub(super) fn merge_each(
    items: Vec<(Key, Object, Option<NodeId>)>,
    view: &ClusterView,
    local: &mut LocalCopies,
    hints: &mut super::hinted::HintKeeper,
) -> ReplicaReply {
    let homes = view.homes();
    let taken: Vec<usize> = (0..items.len())
        .filter(|&i| homes.takes_write(&items[i].0, items[i].2.is_some()))
        .collect();
    let copies: Vec<(&str, &Object)> = taken
        .iter()
        .map(|&i| (items[i].0.as_str(), &items[i].1))
        .collect();
    let held = local.merge_many(&copies);
    let mut stored = vec![false; items.len()];
    for (&i, held) in taken.iter().zip(held) {
        stored[i] = held;
        if let (true, Some(owner)) = (held, items[i].2) {
            hints.keep(&items[i].0, &[owner], view.local_id());
        }
    }
    ReplicaReply::StoredEach(stored)
}

/// A `WriteBatch` or `HandOver`: merged as [`merge_received`] says, with
/// how many were stored and refused.
pub(super) fn merge_batch(
    objects: Vec<(Key, Object)>,
    leaving: Option<NodeId>,
    view: &ClusterView,
    local: &mut LocalCopies,
    metrics: &SharedMetrics,
) -> ReplicaReply {
    if objects.len() > super::anti_entropy::MAX_OBJECTS_PER_REQUEST {
        return ReplicaReply::Refused("too many objects in one batch".into());
    }
    let count = objects.len();
    let (_, refused) = merge_received(objects, leaving, view, local, metrics);
    ReplicaReply::StoredBatch {
        stored: count - refused,
        refused,
    }
}
