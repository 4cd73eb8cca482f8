//! `/cluster/...`: what this node knows of the cluster.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::actors::membership::{ListMembers, MemberStatus};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cluster/members", web::get().to(members))
        .route("/cluster/leave", web::post().to(leave));
}

#[derive(Serialize)]
struct MemberView {
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

async fn members(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let members = state.ask(&state.membership, ListMembers).await?;
    let view: Vec<MemberView> = members.into_iter().map(MemberView::from).collect();
    Ok(HttpResponse::Ok().json(view))
}

/// Asks the node to leave the cluster and stop. The leave itself (gossiping
/// `left`, then stopping) is done by whoever runs the node, after answering.
async fn leave(state: web::Data<AppState>) -> HttpResponse {
    state.leave_requested.notify_one();
    HttpResponse::Accepted().json(serde_json::json!({ "status": "leaving" }))
}
