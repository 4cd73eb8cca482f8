//! `/kv/{key}`: read, write, delete and watch one key; and the dispatch
//! of `/kv` (a listing, `list`) and `/kv/_batch` (`batch`).
//!
//! Translates HTTP to Store messages and back: the key from the raw path,
//! what a write supersedes from `X-Dnd-Context`, `?overwrite=true`,
//! `If-Match` or `If-None-Match`, a value's deadline from `?ttl=`, and a
//! read's versions into an answer (`answer`). It must never decide
//! anything about versions or replicas itself.

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::answer::{read_response, with_context, CONTEXT_HEADER, DEFAULT_CONTENT_TYPE};
use super::client_gone::client_gone;
use super::explained::explained;
use super::params::KvParams;
use super::{batch, list, ApiError, AppState};
use crate::actors::store::{self, ClientWrite, Supersedes, WatchOutcome};
use crate::data::condition::Condition;
use crate::explain::Trace;
use crate::key::{Key, KeyError};
use crate::version::{Payload, VersionVector};

const KV_PREFIX: &str = "/kv/";
/// The one name under `/kv/` that is not a key (keys never start with `_`).
const BATCH_PATH: &str = "/kv/_batch";

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
    let path = req.uri().path();
    if path == "/kv" || path == KV_PREFIX {
        return match *req.method() {
            Method::GET => list::list(req, state).await,
            // A write or delete of no key at all.
            _ => Err(ApiError::BadKey(KeyError::Empty)),
        };
    }
    if path == BATCH_PATH {
        return match *req.method() {
            Method::POST => batch::batch(req, body, state).await,
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    match path.strip_prefix(KV_PREFIX) {
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

fn header_text<'a>(req: &'a HttpRequest, name: &str) -> Result<Option<&'a str>, ApiError> {
    let Some(value) = req.headers().get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .map(|text| Some(text.trim()))
        .map_err(|_| ApiError::BadRequest(format!("the {name} header is not visible ASCII")))
}

fn context_named(name: &str, text: &str) -> Result<VersionVector, ApiError> {
    VersionVector::from_context(text).map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))
}

/// What a write supersedes, from its headers and parameters: the versions
/// `X-Dnd-Context` names; those a quorum read finds (`?overwrite=true`, or
/// `quorum_read_by_default` for a plain DELETE); or those a quorum read
/// finds if they meet `If-None-Match: *` or `If-Match: CONTEXT`. At most
/// one of these four may be given.
pub(super) fn supersedes_of(
    req: &HttpRequest,
    params: &KvParams,
    quorum_read_by_default: bool,
) -> Result<Supersedes, ApiError> {
    let context = header_text(req, CONTEXT_HEADER)?
        .map(|text| context_named("X-Dnd-Context", text))
        .transpose()?;
    let condition = match (
        header_text(req, header::IF_MATCH.as_str())?,
        header_text(req, header::IF_NONE_MATCH.as_str())?,
    ) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "send If-Match or If-None-Match, not both".into(),
            ))
        }
        (Some(text), None) => Some(Condition::Current(context_named("If-Match", text)?)),
        (None, Some("*")) => Some(Condition::Absent),
        (None, Some(_)) => {
            return Err(ApiError::BadRequest(
                "If-None-Match takes only `*`: write if the key has no value".into(),
            ))
        }
    };
    let given = [context.is_some(), params.overwrite, condition.is_some()];
    if given.iter().filter(|&&g| g).count() > 1 {
        return Err(ApiError::BadRequest(
            "send one of X-Dnd-Context, ?overwrite=true, If-Match and If-None-Match".into(),
        ));
    }
    let read_quorum = params.read_quorum;
    Ok(match (context, condition) {
        (Some(context), _) => Supersedes::Seen(context),
        (None, Some(condition)) => Supersedes::IfFoundByQuorumRead {
            condition,
            read_quorum,
        },
        (None, None) if params.overwrite || quorum_read_by_default => {
            Supersedes::FoundByQuorumRead { read_quorum }
        }
        // A write that names nothing it saw supersedes nothing: it joins
        // the key's versions, so a concurrent write is never lost.
        (None, None) => Supersedes::Seen(VersionVector::new()),
    })
}

/// A value's deadline for `?ttl=`, by this node's clock now.
pub(super) fn deadline_of(ttl: Option<std::time::Duration>) -> Option<u64> {
    ttl.map(|ttl| store::wall_clock_ms().saturating_add(ttl.as_millis() as u64))
}

/// Reads a key: its value, every sibling, or not found; with `wait`, a
/// watch.
#[utoipa::path(
    get,
    path = "/kv/{key}",
    tag = "kv",
    params(("key" = String, Path, description = "The key, percent-encoded"), super::openapi::ReadQuery),
    responses(
        (status = 200, description = "The value, with the content type it was stored with", content_type = "*/*", body = super::openapi::StoredValue,
            headers(("x-dnd-context" = String, description = "The causal context of everything read (or of the new version)"), ("x-dnd-ttl" = u64, description = "Seconds until the value expires, if it does"), ("x-dnd-explain" = String, description = "With explain=true: what the read did, as JSON"))),
        (status = 300, description = "Concurrent versions, each with its content type", body = super::openapi::SiblingsAnswer, headers(("x-dnd-context" = String, description = "The causal context of everything read (or of the new version)"))),
        (status = 304, description = "A watch's timeout passed with no news", headers(("x-dnd-context" = String, description = "The causal context of everything read (or of the new version)"))),
        (status = 400, description = "A malformed key or parameter", body = super::openapi::ErrorBody),
        (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
        (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
        (status = 404, description = "No value: never written, deleted or expired", body = super::openapi::ErrorBody, headers(("x-dnd-context" = String, description = "The causal context of everything read (or of the new version)"))),
        (status = 414, description = "A key longer than keys may be", body = super::openapi::ErrorBody),
        (status = 503, description = "Too few replicas answered, or the node is busy", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = key_of(&req)?;
    let params = KvParams::of(&req, state.replication.replicas)?;
    if let Some(seen) = params.wait.clone() {
        return watch(&req, key, seen, &params, &state).await;
    }
    let quorum = params.read_quorum;
    let trace = params.explain.then(Trace::new);
    let read = store::Get {
        key,
        quorum,
        trace: trace.clone(),
        span: tracing::Span::current(),
    };
    let outcome = match state.ask(&state.store, read).await {
        Ok(Ok(outcome)) => Ok(read_response(&outcome.object, store::wall_clock_ms())),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(e),
    };
    explained(outcome, trace).await
}

/// `?wait=CONTEXT`: answers as a read does once the key has a version the
/// context does not cover, or 304 with the context at the timeout.
async fn watch(
    req: &HttpRequest,
    key: Key,
    seen: VersionVector,
    params: &KvParams,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let timeout = params.watch_timeout();
    let watch = store::Watch {
        key,
        seen,
        quorum: params.read_quorum,
        timeout,
    };
    let watching = state.ask(&state.store, watch).await??;
    // Run here, not in the Store, so that a client that goes away ends it
    // at once, and its place among the node's open watches with it.
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(timeout + state.request_timeout, watching.run()) => outcome
            .map_err(|_| ApiError::Unavailable("the watch did not end in time".into()))??,
        () = client_gone(req) => return Err(ApiError::ClientGone),
    };
    Ok(match outcome {
        WatchOutcome::Changed(object) => read_response(&object, store::wall_clock_ms()),
        WatchOutcome::Unchanged(object) => {
            with_context(HttpResponse::NotModified().finish(), &object)
        }
    })
}

/// Writes a key (PUT or POST): the body is the value, stored as bytes with
/// its Content-Type.
#[utoipa::path(
    method(put, post),
    path = "/kv/{key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded"),
        ("x-dnd-context" = Option<String>, Header, description = "The versions this write supersedes: the context of a read"),
        ("if-match" = Option<String>, Header, description = "Write only if the key's versions are exactly this context's"),
        ("if-none-match" = Option<String>, Header, description = "`*`: write only if the key has no value"),
        super::openapi::WriteQuery
    ),
    request_body(content = super::openapi::StoredValue, content_type = "*/*", description = "The value"),
    responses(
        (status = 204, description = "W replicas stored it", headers(("x-dnd-context" = String, description = "The causal context of everything read (or of the new version)"))),
        (status = 200, description = "With explain=true: stored, and what the write did", body = super::openapi::ExplainedWrite, headers(("x-dnd-context" = String, description = "The causal context of everything read (or of the new version)"))),
        (status = 400, description = "A malformed key, header or parameter", body = super::openapi::ErrorBody),
        (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
        (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = super::openapi::ErrorBody),
        (status = 409, description = "Too many siblings, or a context no replica knows", body = super::openapi::ErrorBody),
        (status = 412, description = "The condition does not hold; nothing was written", body = super::openapi::ErrorBody, headers(("x-dnd-context" = String, description = "The causal context of everything read (or of the new version)"))),
        (status = 413, description = "The value is over the limit", body = super::openapi::ErrorBody),
        (status = 414, description = "A key longer than keys may be", body = super::openapi::ErrorBody),
        (status = 503, description = "Too few replicas stored it in time, or none was reachable", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn put(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = key_of(&req)?;
    let params = KvParams::of(&req, state.replication.replicas)?;
    let supersedes = supersedes_of(&req, &params, false)?;
    let content_type = content_type_of(req.headers())?;
    let value = read_body(
        body,
        req.headers(),
        state.max_value_bytes,
        state.body_timeout,
    )
    .await?;
    let write = ClientWrite {
        key,
        supersedes,
        payload: Payload::Value {
            content_type,
            bytes: value,
            expires_at_ms: deadline_of(params.ttl),
        },
    };
    let trace = params.explain.then(Trace::new);
    let put = store::Put {
        write,
        quorum: params.write_quorum,
        trace: trace.clone(),
        span: tracing::Span::current(),
    };
    explained(written(state.ask(&state.store, put).await), trace).await
}

/// A write's outcome as an answer.
fn written(
    outcome: Result<Result<crate::replica::Written, store::StoreError>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    Ok(written_response(&outcome??.context))
}

/// A write's answer: 204 with the context of the new version.
pub(super) fn written_response(context: &VersionVector) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((CONTEXT_HEADER, context.to_context()))
        .finish()
}

/// Deletes a key: a versioned tombstone over what its context names, or
/// without one over what a quorum read finds.
#[utoipa::path(
    delete,
    path = "/kv/{key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded"),
        ("x-dnd-context" = Option<String>, Header, description = "The versions this delete supersedes"),
        ("if-match" = Option<String>, Header, description = "Delete only if the key's versions are exactly this context's"),
        super::openapi::WriteQuery
    ),
    responses(
        (status = 204, description = "W replicas stored the tombstone (also when the key was absent)", headers(("x-dnd-context" = String, description = "The causal context of everything read (or of the new version)"))),
        (status = 200, description = "With explain=true: deleted, and what the delete did", body = super::openapi::ExplainedWrite, headers(("x-dnd-context" = String, description = "The causal context of everything read (or of the new version)"))),
        (status = 400, description = "A malformed key, header or parameter", body = super::openapi::ErrorBody),
        (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
        (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
        (status = 409, description = "A context no replica knows", body = super::openapi::ErrorBody),
        (status = 412, description = "The condition does not hold; nothing was deleted", body = super::openapi::ErrorBody, headers(("x-dnd-context" = String, description = "The causal context of everything read (or of the new version)"))),
        (status = 414, description = "A key longer than keys may be", body = super::openapi::ErrorBody),
        (status = 503, description = "Too few replicas stored it in time, or none was reachable", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = key_of(&req)?;
    let params = KvParams::of(&req, state.replication.replicas)?;
    if params.ttl.is_some() {
        return Err(ApiError::BadParam {
            param: "ttl",
            reason: "applies to writes of a value, not to a DELETE".into(),
        });
    }
    // A plain DELETE removes the key: what a quorum read finds now.
    let supersedes = supersedes_of(&req, &params, true)?;
    let trace = params.explain.then(Trace::new);
    let delete = store::Delete {
        write: ClientWrite {
            key,
            supersedes,
            payload: Payload::Tombstone {
                at_ms: store::wall_clock_ms(),
            },
        },
        quorum: params.write_quorum,
        trace: trace.clone(),
        span: tracing::Span::current(),
    };
    explained(written(state.ask(&state.store, delete).await), trace).await
}

/// The longest `Content-Type` stored with a value: it is kept with every
/// sibling and sent back with every read.
const MAX_CONTENT_TYPE_BYTES: usize = 256;

pub(super) fn content_type_of(headers: &HeaderMap) -> Result<String, ApiError> {
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
pub(super) async fn read_body(
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
