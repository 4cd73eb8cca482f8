//! `/health`, `/ready` and `/metrics`: this node about itself.
//!
//! `/health` is liveness: the process answers HTTP. `/ready` is readiness:
//! every actor answers within the request timeout, storage reads, and the
//! node knows a ring with itself on it; 503 names what is not ready. Both
//! only ask; neither changes anything.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::actors::gossip::HasPeers;
use crate::actors::membership::{GetRing, ListMembers};
use crate::actors::store::{LocalCopy, LocalStats};
use crate::key::Key;
use crate::member::MemberState;
use crate::metrics::ScrapeFigures;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

/// Liveness: the process answers HTTP.
#[utoipa::path(get, path = "/health", tag = "node", responses(
    (status = 200, description = "Alive", body = super::openapi::NodeHealth),
))]
pub(super) async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "node_id": state.node_id.to_string(),
    }))
}

/// Whether the node can serve: each check in turn, the first that fails
/// named in a 503.
#[utoipa::path(get, path = "/ready", tag = "node", responses(
    (status = 200, description = "Ready", body = super::openapi::NodeHealth),
    (status = 503, description = "Not ready, and why", body = super::openapi::NodeHealth),
))]
pub(super) async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let not_ready = |reason: String| {
        HttpResponse::ServiceUnavailable().json(json!({
            "status": "not ready",
            "node_id": state.node_id.to_string(),
            "reason": reason,
        }))
    };
    // Reading a key exercises the Store and its storage engine; a read
    // changes nothing, whoever else uses the key.
    let probe = match Key::new("\u{0}ready") {
        Ok(key) => key,
        Err(e) => return not_ready(format!("cannot build the storage probe: {e}")),
    };
    match state.ask(&state.store, LocalCopy { key: probe }).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return not_ready(format!("storage: {e}")),
        Err(e) => return not_ready(format!("store: {e}")),
    }
    if let Err(e) = state.ask(&state.gossip, HasPeers).await {
        return not_ready(format!("gossip: {e}"));
    }
    match state.ask(&state.membership, GetRing).await {
        Ok(snapshot) if snapshot.ring.nodes().contains(&state.node_id) => {}
        Ok(_) => return not_ready("membership: this node is not on the ring yet".into()),
        Err(e) => return not_ready(format!("membership: {e}")),
    }
    HttpResponse::Ok().json(json!({
        "status": "ready",
        "node_id": state.node_id.to_string(),
    }))
}

/// Every figure of this node. Members and what the Store holds are asked
/// of their actors; one that does not answer in time only leaves its
/// gauges out, so that a scrape shows the rest while an actor is stuck.
#[utoipa::path(get, path = "/metrics", tag = "node", responses(
    (status = 200, description = "The Prometheus text format (0.0.4)", content_type = "text/plain", body = String),
    (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
    (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
))]
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let members = state.ask(&state.membership, ListMembers).await.ok();
    let stats = state.ask(&state.store, LocalStats).await.ok();
    let figures = ScrapeFigures {
        members_by_state: members.map(|members| {
            MemberState::ALL
                .iter()
                .map(|s| {
                    let n = members.iter().filter(|m| m.member.state == *s).count();
                    (s.as_str(), n as u64)
                })
                .collect()
        }),
        keys_stored: stats.as_ref().map(|s| s.keys),
        bytes_stored: stats.as_ref().map(|s| s.bytes),
    };
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.render_prometheus(&figures))
}
