//! `/cluster/keyring`: what keys every live member holds, and changes to
//! them (install, use, remove) applied to every live member in one call.
//!
//! Owns the fan-out of a keyring change and its report, node by node. The
//! change itself is the keyring's (`crate::keyring`), and other members are
//! reached over the authenticated node-to-node channel, never over their
//! HTTP ports. Admin calls are taken only from clients on this host (from
//! loopback, or from the node's own address), and a change only with a
//! JSON body, which a browser's cross-site form cannot
//! send. It never shows a key: members report fingerprints.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use super::{admin, ApiError, AppState};
use crate::actors::membership::ListMembers;
use crate::keyring::{KeyringChange, KeyringOp, KeyringView};
use crate::member::MemberState;
use crate::node_id::NodeId;
use crate::replica::{ReplicaReply, ReplicaRequest};
use std::net::SocketAddr;

/// How long one member may take to answer a keyring request.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(5);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cluster/keyring", web::get().to(list))
        .route("/cluster/keyring", web::post().to(change));
}

#[derive(Deserialize)]
struct ChangeBody {
    op: KeyringOp,
    key: String,
}

/// One member's answer.
#[derive(Serialize)]
struct NodeResult {
    node: String,
    http_addr: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Report {
    nodes: Vec<NodeResult>,
}

/// Every live member's cluster keys, by fingerprint.
#[utoipa::path(get, path = "/cluster/keyring", tag = "cluster", responses(
    (status = 200, description = "Each member's keys", body = super::openapi::KeyringReport),
    (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
    (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
    (status = 409, description = "This node runs without a cluster secret", body = super::openapi::ErrorBody),
    (status = 502, description = "Some member did not answer", body = super::openapi::KeyringReport),
))]
pub(super) async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let keyring = state.keyring.as_ref().ok_or_else(no_keyring)?;
    let local = Ok(keyring.view());
    fan_out(&state, None, local).await
}

/// Changes every live member's keyring (an admin call).
#[utoipa::path(post, path = "/cluster/keyring", tag = "cluster",
    request_body(content = super::openapi::KeyringChange, content_type = "application/json"),
    responses(
    (status = 200, description = "Every member applied it", body = super::openapi::KeyringReport),
    (status = 400, description = "Not a change", body = super::openapi::ErrorBody),
    (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
    (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
    (status = 409, description = "This node refused it, or runs without a secret", body = super::openapi::ErrorBody),
    (status = 502, description = "Some member did not apply it", body = super::openapi::KeyringReport),
))]
pub(super) async fn change(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    admin::state_changing(&req)?;
    let ChangeBody { op, key } = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a keyring change: {e}")))?;
    let keyring = state.keyring.as_ref().ok_or_else(no_keyring)?;
    let change = KeyringChange { op, key };
    // This node first: a change it refuses (removing the primary, an
    // unknown key) goes nowhere else.
    let local = keyring
        .apply(&change)
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    tracing::info!(op = ?change.op, primary = %local.primary, "keyring changed; telling every live member");
    fan_out(&state, Some(change), Ok(local)).await
}

fn no_keyring() -> ApiError {
    ApiError::Conflict(
        "this node runs without a cluster secret, so it has no keyring (start it with --cluster-secret-file)".into(),
    )
}

/// Sends `change` (or a listing) to every live member but this one, and
/// reports each member's keyring; 200 if every member answered, 502 if
/// some did not.
async fn fan_out(
    state: &AppState,
    change: Option<KeyringChange>,
    local: Result<KeyringView, String>,
) -> Result<HttpResponse, ApiError> {
    let members = state.ask(&state.membership, ListMembers).await?;
    // A dead member cannot be asked; it is reported, so the operator knows
    // its keyring must be changed by hand (or the member removed).
    let unreachable: Vec<(NodeId, SocketAddr, Result<KeyringView, String>)> = members
        .iter()
        .map(|status| &status.member)
        .filter(|m| m.id != state.node_id && m.state == MemberState::Dead)
        .map(|m| {
            let why =
                "not asked: the member is dead; change its DATA_DIR/keyring by hand, or remove it";
            (m.id, m.http_addr, Err(why.to_string()))
        })
        .collect();
    let request = ReplicaRequest::Keyring(change);
    let asked = members
        .into_iter()
        .map(|status| status.member)
        .filter(|m| m.id != state.node_id)
        .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
        .map(|member| {
            let (client, request) = (state.replica_client.clone(), request.clone());
            async move {
                let answer = client
                    .request_within(member.gossip_addr, &request, MEMBER_TIMEOUT)
                    .await;
                let result = match answer {
                    Ok(ReplicaReply::Keyring(result)) => result,
                    Ok(ReplicaReply::Refused(reason)) => Err(reason),
                    Ok(_) => Err("unexpected answer".to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (member.id, member.http_addr, result)
            }
        });
    let mut results = vec![(state.node_id, state.http_addr, local)];
    results.extend(join_all(asked).await);
    results.extend(unreachable);
    let all_ok = results.iter().all(|(_, _, r)| r.is_ok());
    let nodes = results
        .into_iter()
        .map(|(node, http_addr, result)| {
            let (ok, primary, keys, error) = match result {
                Ok(view) => (true, Some(view.primary), Some(view.keys), None),
                Err(e) => (false, None, None, Some(e)),
            };
            NodeResult {
                node: node.to_string(),
                http_addr: http_addr.to_string(),
                ok,
                primary,
                keys,
                error,
            }
        })
        .collect();
    let report = Report { nodes };
    Ok(if all_ok {
        HttpResponse::Ok().json(report)
    } else {
        HttpResponse::BadGateway().json(report)
    })
}
