//! `/cluster/...`: what this node knows of the cluster: its members, the
//! ring, and the admin calls to leave and to remove a dead member (each
//! only as [`super::admin`] allows). Read-only views over Membership's
//! state otherwise; it must never change membership but through those.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::{admin, ApiError, AppState};
use crate::actors::gossip::Remove;
use crate::actors::membership::{GetRing, ListMembers, MemberStatus};
use crate::actors::store::HandoffStatus;
use crate::node_id::NodeId;
use crate::swim::RemoveError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cluster/members", web::get().to(members))
        .route("/cluster/ring", web::get().to(ring))
        .route("/cluster/handoff", web::get().to(handoff))
        .route("/cluster/remove/{id}", web::post().to(remove))
        .route("/cluster/leave", web::post().to(leave));
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct MemberView {
    id: String,
    gossip_addr: String,
    http_addr: String,
    state: &'static str,
    incarnation: u64,
    /// How long this node has seen the member in its current state.
    state_for_ms: u128,
}

impl From<MemberStatus> for MemberView {
    fn from(status: MemberStatus) -> Self {
        let m = status.member;
        MemberView {
            id: m.id.to_string(),
            gossip_addr: m.gossip_addr.to_string(),
            http_addr: m.http_addr.to_string(),
            state: m.state.as_str(),
            incarnation: m.incarnation,
            state_for_ms: status.time_in_state.as_millis(),
        }
    }
}

/// The members this node knows, with their state.
#[utoipa::path(get, path = "/cluster/members", tag = "cluster", responses(
    (status = 200, description = "Every member", body = Vec<MemberView>),
    (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
    (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
    (status = 503, description = "Membership did not answer in time", body = super::openapi::ErrorBody),
))]
pub(super) async fn members(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let members = state.ask(&state.membership, ListMembers).await?;
    let view: Vec<MemberView> = members.into_iter().map(MemberView::from).collect();
    Ok(HttpResponse::Ok().json(view))
}

/// Asks the node to leave the cluster and stop. The leave itself (gossiping
/// `left`, then stopping) is done by whoever runs the node, after answering.
#[utoipa::path(post, path = "/cluster/leave", tag = "cluster",
    request_body(content = Object, content_type = "application/json", description = "`{}`"),
    responses(
    (status = 202, description = "The node is leaving", body = super::openapi::Accepted),
    (status = 400, description = "Not JSON", body = super::openapi::ErrorBody),
    (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
    (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
))]
pub(super) async fn leave(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    admin::state_changing(&req)?;
    state.leave_requested.notify_one();
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "status": "leaving" })))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RingView {
    replicas: usize,
    read_quorum: usize,
    write_quorum: usize,
    tokens_per_node: usize,
    nodes: Vec<RingNodeView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RingNodeView {
    id: String,
    state: &'static str,
    /// The share of the hash circle this node owns as first replica.
    primary_share: f64,
    /// Token ranges `[start, end)` as hex, when `?tokens=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<String>>>)]
    ranges: Option<Vec<(String, String)>>,
}

/// Token ownership: each node's share of the circle, and with
/// `?tokens=true` every range it owns as first replica.
#[utoipa::path(get, path = "/cluster/ring", tag = "cluster",
    params(("tokens" = Option<bool>, Query, description = "Each node's token ranges too")),
    responses(
    (status = 200, description = "The ring", body = RingView),
    (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
    (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
    (status = 503, description = "Membership did not answer in time", body = super::openapi::ErrorBody),
))]
pub(super) async fn ring(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let with_tokens = req
        .query_string()
        .split('&')
        .any(|p| p == "tokens=true" || p == "tokens");
    let snapshot = state.ask(&state.membership, GetRing).await?;
    let ring = &snapshot.ring;
    let shares = ring.ownership();
    let ranges = ring.ranges();
    let nodes = ring
        .nodes()
        .iter()
        .map(|&id| RingNodeView {
            id: id.to_string(),
            state: snapshot
                .members
                .iter()
                .find(|m| m.id == id)
                .map_or("unknown", |m| m.state.as_str()),
            primary_share: shares.get(&id).copied().unwrap_or(0.0),
            ranges: with_tokens.then(|| {
                ranges
                    .iter()
                    .filter(|(_, _, owner)| *owner == id)
                    .map(|(start, end, _)| (format!("{start:016x}"), format!("{end:016x}")))
                    .collect()
            }),
        })
        .collect();
    Ok(HttpResponse::Ok().json(RingView {
        replicas: state.replication.replicas,
        read_quorum: state.replication.read_quorum,
        write_quorum: state.replication.write_quorum,
        tokens_per_node: ring.vnodes(),
        nodes,
    }))
}

/// How this node is handing data over after ring changes.
#[utoipa::path(get, path = "/cluster/handoff", tag = "cluster", responses(
    (status = 200, description = "The running and the last handoff", body = crate::data::handoff::HandoffView),
    (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
    (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
    (status = 503, description = "The Store did not answer in time", body = super::openapi::ErrorBody),
))]
pub(super) async fn handoff(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let view = state.ask(&state.store, HandoffStatus).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Removes a dead member for good; the others then re-replicate its keys.
#[utoipa::path(post, path = "/cluster/remove/{id}", tag = "cluster",
    params(("id" = String, Path, description = "The member's id")),
    request_body(content = Object, content_type = "application/json", description = "`{}`"),
    responses(
    (status = 202, description = "Removed", body = super::openapi::Accepted),
    (status = 400, description = "Not a node id, or not JSON", body = super::openapi::ErrorBody),
    (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
    (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
    (status = 404, description = "No such member", body = super::openapi::ErrorBody),
    (status = 409, description = "The member is not dead", body = super::openapi::ErrorBody),
    (status = 503, description = "Gossip did not answer in time, or the node is overloaded", body = super::openapi::ErrorBody),
))]
pub(super) async fn remove(
    req: actix_web::HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    admin::state_changing(&req)?;
    let id: NodeId = path
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{:?} is not a node id", path.as_str())))?;
    match state.ask(&state.gossip, Remove(id)).await? {
        Ok(member) => Ok(HttpResponse::Accepted().json(serde_json::json!({
            "status": "removed",
            "id": member.id.to_string(),
        }))),
        Err(RemoveError::Unknown) => Err(ApiError::NotFound),
        Err(e) => Err(ApiError::Conflict(e.to_string())),
    }
}
