//! `/kv/{key}`: read, write and delete one key.
//!
//! Translates HTTP to Store messages and back: the key from the raw path,
//! what a write supersedes from `X-Dnd-Context` (or `?overwrite=true`),
//! quorums from `?r=` and `?w=`, and a read's versions into 200 (one
//! value), 300 (siblings) or 404, each with the context of what was read.
//! It must never decide anything about versions or replicas itself.

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::json;

use super::{ApiError, AppState};
use crate::actors::store::{self, ClientWrite, Supersedes};
use crate::key::{Key, KeyError};
use crate::replication::Quorum;
use crate::version::{Object, Payload, VersionVector};

const KV_PREFIX: &str = "/kv/";
/// The causal context header: sent with every read, accepted with writes.
pub const CONTEXT_HEADER: &str = "x-dnd-context";
/// The content type served when a client stored a value without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A static prefix and a dispatch on the method, not a `/kv/{key}` pattern:
/// actix-router matches dynamic segments with a regex, which took about 6%
/// of a GET's CPU (docs/figures/profile.md), and the key is read from the
/// raw path anyway.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/kv").default_service(web::to(dispatch)));
}

async fn dispatch(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    match req.uri().path().strip_prefix(KV_PREFIX) {
        None | Some("") => return Err(ApiError::BadKey(KeyError::Empty)),
        // A key is one path segment.
        Some(segment) if segment.contains('/') => return Err(ApiError::NoRoute),
        Some(_) => {}
    }
    match *req.method() {
        Method::GET => get(req, state).await,
        Method::PUT | Method::POST => put(req, body, state).await,
        Method::DELETE => delete(req, state).await,
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// The key is taken from the raw request path and decoded here, not from the
/// router's partly decoded copy, so that every escape (`%2F` included) means
/// the same thing everywhere.
fn key_of(req: &HttpRequest) -> Result<Key, ApiError> {
    let segment = req.uri().path().strip_prefix(KV_PREFIX).unwrap_or_default();
    Ok(Key::from_path_segment(segment)?)
}

/// The quorum named by query parameter `name` (`r` or `w`), if any.
fn quorum_of(req: &HttpRequest, name: &str, state: &AppState) -> Result<Option<Quorum>, ApiError> {
    let mut found = None;
    for pair in req.query_string().split('&').filter(|p| !p.is_empty()) {
        let (param, value) = pair.split_once('=').unwrap_or((pair, ""));
        if param == name {
            let quorum = Quorum::parse(value, state.replication.replicas)
                .map_err(|e| ApiError::BadRequest(format!("?{name}=: {e}")))?;
            found = Some(quorum);
        }
    }
    Ok(found)
}

/// `?overwrite=true`: the client asks for a write that supersedes whatever
/// a quorum read finds, seen or not.
fn overwrite_of(req: &HttpRequest) -> Result<bool, ApiError> {
    let mut overwrite = false;
    for pair in req.query_string().split('&').filter(|p| !p.is_empty()) {
        let (param, value) = pair.split_once('=').unwrap_or((pair, ""));
        if param == "overwrite" {
            overwrite = match value {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ApiError::BadRequest(
                        "?overwrite= is `true` or `false`".into(),
                    ))
                }
            };
        }
    }
    Ok(overwrite)
}

fn context_of(req: &HttpRequest) -> Result<Option<VersionVector>, ApiError> {
    let Some(value) = req.headers().get(CONTEXT_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::BadRequest("the X-Dnd-Context header is not visible ASCII".into())
    })?;
    VersionVector::from_context(text.trim())
        .map(Some)
        .map_err(|e| ApiError::BadRequest(format!("X-Dnd-Context: {e}")))
}

fn context_header(context: &VersionVector) -> (&'static str, String) {
    (CONTEXT_HEADER, context.to_context())
}

async fn get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let key = key_of(&req)?;
    let quorum = quorum_of(&req, "r", &state)?;
    let outcome = state
        .ask(&state.store, store::Get { key, quorum })
        .await??;
    Ok(read_response(&outcome.object))
}

/// One value: 200 with it. Several: 300 with all of them. None (never
/// written, or deleted): 404. Each with the context of everything read.
///
/// The 404's context is never left out, even for a key never written (it is
/// then the empty context): a client that writes it back creates the key
/// without superseding a concurrent creation it did not see.
fn read_response(object: &Object) -> HttpResponse {
    let context = context_header(&object.clock());
    let values: Vec<_> = object.values().collect();
    match values.as_slice() {
        [] => {
            let mut response = ApiError::NotFound.error_response();
            if let Ok(value) = HeaderValue::from_str(&context.1) {
                response
                    .headers_mut()
                    .insert(header::HeaderName::from_static(CONTEXT_HEADER), value);
            }
            response
        }
        [(_, content_type, bytes)] => {
            let content_type = HeaderValue::from_str(content_type)
                .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
            HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, content_type))
                .insert_header(context)
                .body(bytes.to_vec())
        }
        siblings => {
            let listed: Vec<_> = siblings
                .iter()
                .map(
                    |(_, content_type, bytes)| match std::str::from_utf8(bytes) {
                        Ok(text) => json!({ "content_type": content_type, "value": text }),
                        Err(_) => json!({
                            "content_type": content_type,
                            "value_base64": STANDARD.encode(bytes),
                        }),
                    },
                )
                .collect();
            HttpResponse::build(StatusCode::MULTIPLE_CHOICES)
                .insert_header(context)
                .json(json!({ "siblings": listed }))
        }
    }
}

async fn put(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = key_of(&req)?;
    let quorum = quorum_of(&req, "w", &state)?;
    let supersedes = match (context_of(&req)?, overwrite_of(&req)?) {
        (Some(_), true) => {
            return Err(ApiError::BadRequest(
                "send either X-Dnd-Context or ?overwrite=true, not both".into(),
            ))
        }
        (Some(context), false) => Supersedes::Seen(context),
        // A write that names nothing it saw supersedes nothing: it joins
        // the key's versions, so a concurrent write is never lost.
        (None, false) => Supersedes::Seen(VersionVector::new()),
        (None, true) => Supersedes::FoundByQuorumRead {
            read_quorum: quorum_of(&req, "r", &state)?,
        },
    };
    let content_type = content_type_of(req.headers())?;
    let value = read_body(
        body,
        req.headers(),
        state.max_value_bytes,
        state.body_timeout,
    )
    .await?;
    let written = state
        .ask(
            &state.store,
            store::Put {
                write: ClientWrite {
                    key,
                    supersedes,
                    payload: Payload::Value {
                        content_type,
                        bytes: value,
                    },
                },
                quorum,
            },
        )
        .await??;
    Ok(HttpResponse::NoContent()
        .insert_header(context_header(&written.context))
        .finish())
}

async fn delete(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let key = key_of(&req)?;
    let quorum = quorum_of(&req, "w", &state)?;
    // A plain DELETE removes the key: what a quorum read finds now.
    let supersedes = match context_of(&req)? {
        Some(context) => Supersedes::Seen(context),
        None => Supersedes::FoundByQuorumRead {
            read_quorum: quorum_of(&req, "r", &state)?,
        },
    };
    let written = state
        .ask(
            &state.store,
            store::Delete {
                write: ClientWrite {
                    key,
                    supersedes,
                    payload: Payload::Tombstone {
                        at_ms: store::wall_clock_ms(),
                    },
                },
                quorum,
            },
        )
        .await??;
    Ok(HttpResponse::NoContent()
        .insert_header(context_header(&written.context))
        .finish())
}

/// The longest `Content-Type` stored with a value: it is kept with every
/// sibling and sent back with every read.
const MAX_CONTENT_TYPE_BYTES: usize = 256;

fn content_type_of(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(DEFAULT_CONTENT_TYPE.to_string());
    };
    if value.len() > MAX_CONTENT_TYPE_BYTES {
        return Err(ApiError::BadRequest(format!(
            "the Content-Type header is longer than {MAX_CONTENT_TYPE_BYTES} bytes"
        )));
    }
    value
        .to_str()
        .map(str::to_string)
        .map_err(|_| ApiError::BadRequest("the Content-Type header is not visible ASCII".into()))
}

/// Reads the whole body, refusing it as soon as it is known to exceed the
/// limit: from Content-Length before reading anything, or while streaming;
/// and one that has not all arrived within `timeout` (a slow sender holds a
/// connection and a buffer for no longer). Memory grows with what arrived,
/// never with what the client declared.
async fn read_body(
    mut body: web::Payload,
    headers: &HeaderMap,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, ApiError> {
    const INITIAL_CAPACITY: usize = 64 * 1024;
    let deadline = tokio::time::Instant::now() + timeout;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::ValueTooLarge { limit });
    }
    let mut value = Vec::with_capacity(declared.unwrap_or(0).min(INITIAL_CAPACITY));
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, body.next()).await else {
            return Err(ApiError::BodyTimeout(timeout));
        };
        let Some(chunk) = next else { break };
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        if value.len() + chunk.len() > limit {
            return Err(ApiError::ValueTooLarge { limit });
        }
        value.extend_from_slice(&chunk);
    }
    Ok(value)
}
