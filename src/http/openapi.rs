//! `GET /openapi.json`: the HTTP API's OpenAPI 3.1 description, generated
//! by `utoipa` from the handlers' `#[utoipa::path]` annotations and the
//! answer types' `ToSchema` derives.
//!
//! Owns the document's assembly and the schemas of answers that handlers
//! build as JSON values (errors, listings, siblings, batches), named here
//! once. It must never describe a route the router does not serve; the
//! test below reads the routes the `http` modules register and fails on
//! any the document leaves out.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(document));
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dnd",
        description = "definitely not dynamo: a Dynamo-style distributed key-value store. Every node serves this API; any node answers any request."
    ),
    paths(
        super::kv::get,
        super::kv::put,
        super::kv::delete,
        super::list::list,
        super::batch::batch,
        super::cluster::members,
        super::cluster::ring,
        super::cluster::handoff,
        super::cluster::remove,
        super::cluster::leave,
        super::status::status,
        super::keyring::list,
        super::keyring::change,
        super::node::health,
        super::node::ready,
        super::node::metrics,
        super::ui::index,
        super::ui::index_with_slash,
        super::ui::app_js,
        super::ui::style_css,
        document,
    ),
    tags(
        (name = "kv", description = "Keys and values"),
        (name = "cluster", description = "Members, ring, data movement and admin calls"),
        (name = "node", description = "This node about itself"),
        (name = "ui", description = "The dashboard's files")
    )
)]
struct ApiDoc;

/// The description, built once.
fn description() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"the description does not encode: {e}\"}}"))
    })
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "node",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json", body = Object))
)]
pub(super) async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(description())
}

/// Every failure's body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// The query parameter at fault (400).
    pub parameter: Option<String>,
    /// The context of the versions found (412).
    pub context: Option<String>,
    /// Replicas needed and how many answered, were reachable or stored
    /// the write (503).
    pub replicas_needed: Option<u64>,
    pub replicas_answered: Option<u64>,
    pub replicas_reachable: Option<u64>,
    pub home_replicas_answered: Option<u64>,
    /// Nodes that stored a write whose quorum was not met (503).
    pub stored_on: Option<Vec<String>>,
    /// The key's siblings and the limit (409).
    pub siblings: Option<u64>,
    pub max_siblings: Option<u64>,
    /// What the request did (`?explain=true`).
    #[schema(value_type = Option<Object>)]
    pub explain: Option<serde_json::Value>,
}

/// A value as it was stored: any bytes, served with its content type.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct StoredValue(Vec<u8>);

/// One of a key's concurrent versions.
#[derive(Serialize, ToSchema)]
pub struct SiblingView {
    pub content_type: String,
    /// The value, if it is UTF-8 text.
    pub value: Option<String>,
    /// The value in base64, if it is not.
    pub value_base64: Option<String>,
    /// Seconds until it expires.
    pub ttl: Option<u64>,
}

/// A read that found concurrent versions (300).
#[derive(Serialize, ToSchema)]
pub struct SiblingsAnswer {
    pub siblings: Vec<SiblingView>,
    #[schema(value_type = Option<Object>)]
    pub explain: Option<serde_json::Value>,
}

/// A write's answer with `?explain=true` (200).
#[derive(Serialize, ToSchema)]
pub struct ExplainedWrite {
    /// The context of the new version.
    pub context: String,
    #[schema(value_type = Object)]
    pub explain: serde_json::Value,
}

/// A key's answer inside a listing or a batch.
#[derive(Serialize, ToSchema)]
pub struct KeyAnswer {
    pub key: Option<String>,
    pub status: u16,
    pub context: Option<String>,
    pub content_type: Option<String>,
    pub value: Option<String>,
    pub value_base64: Option<String>,
    pub ttl: Option<u64>,
    pub siblings: Option<Vec<SiblingView>>,
    pub error: Option<String>,
}

/// A page of a listing.
#[derive(Serialize, ToSchema)]
pub struct ListPage {
    pub keys: Vec<String>,
    /// Send it back as `start_after` for the next page; `null` after the
    /// last.
    pub next: Option<String>,
    /// With `values=true`: each key's answer.
    pub items: Option<Vec<KeyAnswer>>,
}

/// A batch of operations (`POST /kv/_batch`).
#[derive(Serialize, ToSchema)]
pub struct BatchRequest {
    pub ops: Vec<BatchOperation>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchOperation {
    /// `get`, `put` or `delete`.
    #[schema(pattern = "^(get|put|delete)$")]
    pub op: String,
    pub key: String,
    pub value: Option<String>,
    pub value_base64: Option<String>,
    pub content_type: Option<String>,
    pub context: Option<String>,
    pub ttl: Option<u64>,
}

/// Each operation's own answer, in order.
#[derive(Serialize, ToSchema)]
pub struct BatchAnswer {
    pub results: Vec<KeyAnswer>,
}

/// `/health` and `/ready`.
#[derive(Serialize, ToSchema)]
pub struct NodeHealth {
    pub status: String,
    pub node_id: String,
    /// What is not ready (503).
    pub reason: Option<String>,
}

/// The answer of an admin call that was taken (202).
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub status: String,
    pub id: Option<String>,
}

/// A keyring change (`POST /cluster/keyring`).
#[derive(Serialize, ToSchema)]
pub struct KeyringChange {
    /// `install`, `use` or `remove`.
    #[schema(pattern = "^(install|use|remove)$")]
    pub op: String,
    /// A key in base64, or a fingerprint.
    pub key: String,
}

/// One member's keyring, or why it did not answer.
#[derive(Serialize, ToSchema)]
pub struct KeyringNode {
    pub node: String,
    pub http_addr: String,
    pub ok: bool,
    pub primary: Option<String>,
    pub keys: Option<Vec<String>>,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyringReport {
    pub nodes: Vec<KeyringNode>,
}

/// The query of a read of one key.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ReadQuery {
    /// R: `one`, `quorum`, `all` or a number from 1 to N.
    r: Option<String>,
    /// Add what the request did, replica by replica.
    explain: Option<bool>,
    /// A watch: answer once the key has a version this context (of a
    /// read of the key; empty for none) does not cover.
    wait: Option<String>,
    /// Seconds a watch waits (1 to 300; only with `wait`).
    #[param(minimum = 1, maximum = 300)]
    timeout: Option<u64>,
}

/// The query of a write of one key.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct WriteQuery {
    /// W: `one`, `quorum`, `all` or a number from 1 to N.
    w: Option<String>,
    /// R of the quorum read some writes make first.
    r: Option<String>,
    /// Supersede whatever a quorum read finds.
    overwrite: Option<bool>,
    /// Seconds until the value expires (1 to 10 years).
    #[param(minimum = 1, maximum = 315360000)]
    ttl: Option<u64>,
    explain: Option<bool>,
}

/// The query of a listing.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListQuery {
    prefix: Option<String>,
    start_after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Each key's answer too.
    values: Option<bool>,
    /// Only keys with siblings.
    conflicts: Option<bool>,
    r: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routes the `http` modules register, read from their source:
    /// each `.route("PATH", web::METHOD()` as (method, path).
    fn registered_routes() -> Vec<(String, String)> {
        let sources = [
            include_str!("cluster.rs"),
            include_str!("status.rs"),
            include_str!("keyring.rs"),
            include_str!("node.rs"),
            include_str!("ui.rs"),
            include_str!("openapi.rs"),
        ];
        let mut routes = Vec::new();
        for source in sources {
            let mut rest = source;
            while let Some(at) = rest.find(".route(\"") {
                rest = &rest[at + 8..];
                let Some(end) = rest.find('"') else { break };
                let path = rest[..end].to_string();
                let after = &rest[end..];
                let method = after
                    .find("web::")
                    .map(|m| &after[m + 5..])
                    .and_then(|m| m.split('(').next())
                    .unwrap_or_default()
                    .to_string();
                if path.starts_with('/') {
                    routes.push((method, path));
                }
            }
        }
        // The key-value scope serves these by dispatch (`kv::dispatch`).
        for (method, path) in [
            ("get", "/kv/{key}"),
            ("put", "/kv/{key}"),
            ("post", "/kv/{key}"),
            ("delete", "/kv/{key}"),
            ("get", "/kv"),
            ("post", "/kv/_batch"),
        ] {
            routes.push((method.into(), path.into()));
        }
        routes
    }

    #[test]
    fn every_route_registered_is_described() {
        let doc: serde_json::Value = serde_json::from_str(description()).unwrap();
        let routes = registered_routes();
        assert!(routes.len() >= 22, "the route reader found {routes:?}");
        for (method, path) in routes {
            assert!(
                doc["paths"][&path][&method].is_object(),
                "{method} {path} is not in /openapi.json"
            );
        }
    }

    #[test]
    fn the_description_is_openapi_3_with_its_schemas() {
        let doc: serde_json::Value = serde_json::from_str(description()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for schema in ["ErrorBody", "ClusterStatus", "ListPage", "SiblingsAnswer"] {
            assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
        }
    }
}
