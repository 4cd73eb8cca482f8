//! `POST /kv/_batch`: up to [`MAX_BATCH_OPERATIONS`] gets, puts and
//! deletes in one request, each answered on its own.
//!
//! Owns the batch's JSON shape and its checks: the whole body is parsed
//! and every operation checked before any is applied, so a malformed batch
//! changes nothing; then the writes go to the Store as one `PutMany`
//! (versioned and replicated together, each acknowledged as a single write
//! would be) and the reads as `Get`s, a bounded number at a time; each
//! gets its own status. A failure of one does not fail the others. Must
//! never decide anything about versions or replicas.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::answer::{object_json, DEFAULT_CONTENT_TYPE};
use super::kv::{deadline_of, read_body};
use super::params::MAX_TTL_SECONDS;
use super::{ApiError, AppState};
use crate::actors::store::{self, ClientWrite, Supersedes};
use crate::key::Key;
use crate::replica::Written;
use crate::version::{Payload, VersionVector};

/// The most operations one batch takes; more get 413.
pub const MAX_BATCH_OPERATIONS: usize = 1000;
/// Operations of one batch under way at once.
const BATCH_CONCURRENCY: usize = 64;
/// The largest batch body, whatever the value limit.
const MIN_BATCH_BODY_LIMIT: usize = 16 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    ops: Vec<BatchOp>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OpKind {
    Get,
    Put,
    Delete,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchOp {
    op: OpKind,
    key: String,
    value: Option<String>,
    value_base64: Option<String>,
    content_type: Option<String>,
    context: Option<String>,
    ttl: Option<u64>,
}

/// One operation, checked.
enum Checked {
    Get(Key),
    Put(ClientWrite),
    Delete(ClientWrite),
}

/// Bounds a batch body: room for the value limit, and never less than a
/// batch of small values needs.
fn body_limit(max_value_bytes: usize) -> usize {
    MIN_BATCH_BODY_LIMIT.max(max_value_bytes.saturating_mul(2))
}

fn refused(index: usize, reason: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!(
        "ops[{index}]: {reason}; nothing in the batch was applied"
    ))
}

fn check(index: usize, op: BatchOp, max_value_bytes: usize) -> Result<Checked, ApiError> {
    let key = Key::from_client(op.key).map_err(|e| refused(index, e))?;
    let context = op
        .context
        .as_deref()
        .map(|text| VersionVector::from_context(text.trim()))
        .transpose()
        .map_err(|e| refused(index, format!("context: {e}")))?;
    let value = match (op.value, op.value_base64) {
        (Some(_), Some(_)) => return Err(refused(index, "give value or value_base64, not both")),
        (Some(text), None) => Some(text.into_bytes()),
        (None, Some(encoded)) => Some(
            STANDARD
                .decode(encoded)
                .map_err(|_| refused(index, "value_base64 is not base64"))?,
        ),
        (None, None) => None,
    };
    if op.op != OpKind::Put && (value.is_some() || op.ttl.is_some() || op.content_type.is_some()) {
        return Err(refused(
            index,
            "only a put takes a value, a content_type or a ttl",
        ));
    }
    if op.op == OpKind::Get && context.is_some() {
        return Err(refused(index, "a get takes no context"));
    }
    Ok(match op.op {
        OpKind::Get => Checked::Get(key),
        OpKind::Delete => Checked::Delete(ClientWrite {
            key,
            // As a plain DELETE: without a context, what a quorum read finds.
            supersedes: match context {
                Some(context) => Supersedes::Seen(context),
                None => Supersedes::FoundByQuorumRead { read_quorum: None },
            },
            payload: Payload::Tombstone {
                at_ms: store::wall_clock_ms(),
            },
        }),
        OpKind::Put => {
            let Some(bytes) = value else {
                return Err(refused(index, "a put needs a value or value_base64"));
            };
            if bytes.len() > max_value_bytes {
                return Err(ApiError::ValueTooLarge {
                    limit: max_value_bytes,
                });
            }
            let ttl = match op.ttl {
                None => None,
                Some(seconds @ 1..=MAX_TTL_SECONDS) => {
                    Some(std::time::Duration::from_secs(seconds))
                }
                Some(_) => {
                    return Err(refused(
                        index,
                        format!("ttl is a whole number from 1 to {MAX_TTL_SECONDS}"),
                    ))
                }
            };
            let content_type = op
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into());
            if content_type.len() > 256 || !content_type.bytes().all(|b| (0x20..0x7f).contains(&b))
            {
                return Err(refused(
                    index,
                    "content_type is visible ASCII of at most 256 bytes",
                ));
            }
            Checked::Put(ClientWrite {
                key,
                // As a PUT: without a context, one more sibling.
                supersedes: Supersedes::Seen(context.unwrap_or_default()),
                payload: Payload::Value {
                    content_type,
                    bytes,
                    expires_at_ms: deadline_of(ttl),
                },
            })
        }
    })
}

/// Many operations in one request, each answered on its own.
#[utoipa::path(
    post,
    path = "/kv/_batch",
    tag = "kv",
    request_body(content = super::openapi::BatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Each operation's own answer, in order", body = super::openapi::BatchAnswer),
        (status = 400, description = "A malformed operation: nothing applied", body = super::openapi::ErrorBody),
        (status = 401, description = "No bearer token, or an unknown one (with a tokens file)", body = super::openapi::ErrorBody),
        (status = 403, description = "A role too weak for the request", body = super::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = super::openapi::ErrorBody),
        (status = 413, description = "Too many operations, or a body over the limit", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn batch(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = read_body(
        body,
        req.headers(),
        body_limit(state.max_value_bytes),
        state.body_timeout,
    )
    .await?;
    let parsed: BatchBody = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::BadRequest(format!(
            "the batch body is not {{\"ops\": [...]}} as documented: {e}; nothing was applied"
        ))
    })?;
    if parsed.ops.len() > MAX_BATCH_OPERATIONS {
        return Err(ApiError::BatchTooLarge {
            given: parsed.ops.len(),
            limit: MAX_BATCH_OPERATIONS,
        });
    }
    let checked = parsed
        .ops
        .into_iter()
        .enumerate()
        .map(|(index, op)| check(index, op, state.max_value_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    state.metrics.kv_batches.inc();
    state.metrics.kv_batch_operations.add(checked.len() as u64);
    // The writes go to the Store together, versioned and replicated in
    // one pass; the reads run beside them, a bounded number at a time.
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for (index, op) in checked.into_iter().enumerate() {
        match op {
            Checked::Get(key) => reads.push((index, key)),
            Checked::Put(write) | Checked::Delete(write) => writes.push((index, write)),
        }
    }
    let (write_indexes, writes): (Vec<usize>, Vec<ClientWrite>) = writes.into_iter().unzip();
    let put_many = store::PutMany {
        writes,
        quorum: None,
    };
    let written = async {
        match state.ask(&state.store, put_many).await {
            Ok(outcomes) => outcomes
                .into_iter()
                .map(|outcome| result_json(outcome.map(|w| written_json(&w)).map_err(Into::into)))
                .collect(),
            Err(e) => {
                let failed = result_json(Err(e));
                vec![failed; write_indexes.len()]
            }
        }
    };
    let state_ref: &AppState = &state;
    let read = futures_util::stream::iter(reads)
        .map(|(index, key)| async move { (index, get(key, state_ref).await) })
        .buffered(BATCH_CONCURRENCY)
        .collect::<Vec<_>>();
    let (written, read): (Vec<Value>, Vec<(usize, Value)>) = tokio::join!(written, read);
    let mut results = vec![Value::Null; write_indexes.len() + read.len()];
    for (index, result) in write_indexes.into_iter().zip(written) {
        results[index] = result;
    }
    for (index, result) in read {
        results[index] = result;
    }
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

async fn get(key: Key, state: &AppState) -> Value {
    let outcome = state
        .ask(
            &state.store,
            store::Get {
                key,
                quorum: None,
                trace: None,
                span: tracing::Span::current(),
            },
        )
        .await
        .and_then(|read| Ok(read?))
        .map(|read| object_json(&read.object, store::wall_clock_ms()));
    result_json(outcome)
}

fn result_json(outcome: Result<Map<String, Value>, ApiError>) -> Value {
    match outcome {
        Ok(result) => Value::Object(result),
        Err(e) => json!({ "status": e.status_code().as_u16(), "error": e.to_string() }),
    }
}

fn written_json(written: &Written) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("status".into(), 204.into());
    out.insert("context".into(), written.context.to_context().into());
    out
}
