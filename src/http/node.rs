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
use crate::actors::membership::GetRing;
use crate::actors::store::LocalCopy;
use crate::key::Key;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "node_id": state.node_id.to_string(),
    }))
}

/// Whether the node can serve: each check in turn, the first that fails
/// named in a 503.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
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

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render_prometheus())
}
