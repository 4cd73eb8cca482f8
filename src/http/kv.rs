//! `/kv/{key}`: read, write and delete one key.

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::{ApiError, AppState};
use crate::actors::store;
use crate::key::{Key, KeyError};
use crate::record::{Record, DEFAULT_CONTENT_TYPE};

const KV_PREFIX: &str = "/kv/";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/kv/{key}")
            .route(web::get().to(get))
            .route(web::put().to(put))
            .route(web::post().to(put))
            .route(web::delete().to(delete))
            .default_service(web::to(|| async { ApiError::MethodNotAllowed })),
    )
    .route("/kv", web::to(empty_key))
    .route("/kv/", web::to(empty_key));
}

async fn empty_key() -> ApiError {
    ApiError::BadKey(KeyError::Empty)
}

/// The key is taken from the raw request path and decoded here, not from the
/// router's partly decoded copy, so that every escape (`%2F` included) means
/// the same thing everywhere.
fn key_of(req: &HttpRequest, state: &AppState) -> Result<Key, ApiError> {
    let segment = req.uri().path().strip_prefix(KV_PREFIX).unwrap_or_default();
    Ok(Key::from_path_segment(segment, state.max_key_bytes)?)
}

async fn get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let key = key_of(&req, &state)?;
    let record = state
        .ask(&state.store, store::Get { key })
        .await??
        .ok_or(ApiError::NotFound)?;
    let content_type = HeaderValue::from_str(&record.content_type)
        .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .body(record.value))
}

async fn put(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = key_of(&req, &state)?;
    let content_type = content_type_of(req.headers())?;
    let value = read_body(body, req.headers(), state.max_value_bytes).await?;
    let record = Record::new(content_type, value);
    state
        .ask(&state.store, store::Put { key, record })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

async fn delete(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let key = key_of(&req, &state)?;
    state.ask(&state.store, store::Delete { key }).await??;
    Ok(HttpResponse::NoContent().finish())
}

fn content_type_of(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok(DEFAULT_CONTENT_TYPE.to_string()),
        Some(value) => value.to_str().map(str::to_string).map_err(|_| {
            ApiError::BadRequest("the Content-Type header is not visible ASCII".into())
        }),
    }
}

/// Reads the whole body, refusing it as soon as it is known to exceed the
/// limit: from Content-Length before reading anything, or while streaming.
async fn read_body(
    mut body: web::Payload,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::ValueTooLarge { limit });
    }
    let mut value = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        if value.len() + chunk.len() > limit {
            return Err(ApiError::ValueTooLarge { limit });
        }
        value.extend_from_slice(&chunk);
    }
    Ok(value)
}
