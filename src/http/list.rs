//! `GET /kv`: a page of keys in order (`?prefix=`, `?start_after=`,
//! `?limit=`), with their values (`?values=true`), or only the keys in
//! conflict (`?conflicts=true`).
//!
//! Translates the parameters into one `List` for the Store and its page
//! into `{"keys": [...], "next": ...}`. Must never decide which keys a page
//! holds (`data::scan` does).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::answer::object_json;
use super::params::KvParams;
use super::{ApiError, AppState};
use crate::actors::store::{self, List};
use crate::data::scan::Show;

/// A page of keys in key order, with their values if asked.
#[utoipa::path(
    get,
    path = "/kv",
    tag = "kv",
    params(super::openapi::ListQuery),
    responses(
        (status = 200, description = "A page of keys", body = super::openapi::ListPage),
        (status = 400, description = "A malformed parameter", body = super::openapi::ErrorBody),
        (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
        (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
        (status = 503, description = "Too few replicas of some token range answered", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = KvParams::of(&req, state.replication.replicas)?;
    let list = List {
        prefix: params.prefix.clone(),
        start_after: params.start_after.clone(),
        limit: params.page_limit(),
        show: if params.conflicts {
            Show::Conflicts
        } else {
            Show::Live
        },
        with_values: params.values,
        quorum: params.read_quorum,
    };
    let page = state.ask(&state.store, list).await??;
    let now = store::wall_clock_ms();
    let keys: Vec<&str> = page.entries.iter().map(|(k, _)| k.as_str()).collect();
    let mut body = json!({
        "keys": keys,
        "next": page.next.as_ref().map(|k| k.as_str()),
    });
    if params.values {
        let items: Vec<Value> = page
            .entries
            .iter()
            .map(|(key, object)| {
                let mut item = object_json(object, now);
                item.insert("key".into(), key.as_str().into());
                Value::Object(item)
            })
            .collect();
        body["items"] = items.into();
    }
    Ok(HttpResponse::Ok().json(body))
}
