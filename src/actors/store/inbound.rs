//! Where requests from other nodes come in: the node-to-node server's
//! handler, which hands each authenticated request to the Store as
//! [`FromPeer`], and answers keyring requests beside it.
//!
//! Owns that dispatch only. The peer server has authenticated the channel
//! and named the sender; the Store judges and serves data requests
//! (`Store::serve_peer`), and a keyring request is served for a current
//! member, asked of Membership. It never touches storage itself.

use actix::Addr;

use super::{FromPeer, Store};
use crate::actors::membership::{ListMembers, Membership};
use crate::keyring::{Keyring, KeyringChange};
use crate::member::MemberState;
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::peer::{self, PeerConfig};
use crate::replica::{ReplicaReply, ReplicaRequest};

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
