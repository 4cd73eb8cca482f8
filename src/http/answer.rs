//! What a client is shown of a key's versions: the one shape of a read's
//! answer, as an HTTP response (`GET /kv/{key}`, a watch) or as JSON (an
//! item of a listing, a result of a batch).
//!
//! Owns that rendering: only values live at the node's clock are shown
//! (deleted and expired ones are not), one as 200, several as 300 with
//! every sibling, none as 404, each with the context of everything read
//! and the remaining TTL. Must never decide anything about versions.

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::ApiError;
use crate::version::{Object, Sibling};

/// The causal context header: sent with every read, accepted with writes.
pub const CONTEXT_HEADER: &str = "x-dnd-context";
/// Seconds until the value shown expires (the soonest, for siblings).
pub const TTL_HEADER: &str = "x-dnd-ttl";
/// The content type served when a client stored a value without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Whole seconds left before `sibling` expires at `now_ms`, rounded up, if
/// it has a deadline.
fn ttl_left(sibling: &Sibling, now_ms: u64) -> Option<u64> {
    let at = sibling.payload.gone_at_ms()?;
    Some(at.saturating_sub(now_ms).div_ceil(1000))
}

fn sibling_json(
    sibling: &Sibling,
    content_type: &str,
    bytes: &[u8],
    now_ms: u64,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("content_type".into(), content_type.into());
    match std::str::from_utf8(bytes) {
        Ok(text) => out.insert("value".into(), text.into()),
        Err(_) => out.insert("value_base64".into(), STANDARD.encode(bytes).into()),
    };
    if let Some(ttl) = ttl_left(sibling, now_ms) {
        out.insert("ttl".into(), ttl.into());
    }
    out
}

/// The status a read of `object` gets at `now_ms`: 200, 300 or 404.
pub fn read_status(object: &Object, now_ms: u64) -> StatusCode {
    match object.live_values(now_ms).count() {
        0 => StatusCode::NOT_FOUND,
        1 => StatusCode::OK,
        _ => StatusCode::MULTIPLE_CHOICES,
    }
}

/// A key's versions as JSON: `status`, `context` and the value (with
/// `content_type`, `ttl` if it expires) or `siblings`; a 404 has neither.
pub fn object_json(object: &Object, now_ms: u64) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("status".into(), read_status(object, now_ms).as_u16().into());
    out.insert("context".into(), object.clock().to_context().into());
    let values: Vec<_> = object.live_values(now_ms).collect();
    match values.as_slice() {
        [] => {}
        [(sibling, content_type, bytes)] => {
            out.extend(sibling_json(sibling, content_type, bytes, now_ms));
        }
        siblings => {
            let listed: Vec<Value> = siblings
                .iter()
                .map(|(s, ct, b)| Value::Object(sibling_json(s, ct, b, now_ms)))
                .collect();
            out.insert("siblings".into(), listed.into());
        }
    }
    out
}

/// One value: 200 with it. Several: 300 with all of them. None (never
/// written, deleted or expired): 404. Each with the context of everything
/// read.
///
/// The 404's context is never left out, even for a key never written (it is
/// then the empty context): a client that writes it back creates the key
/// without superseding a concurrent creation it did not see.
pub fn read_response(object: &Object, now_ms: u64) -> HttpResponse {
    with_context(read_body(object, now_ms), object)
}

fn read_body(object: &Object, now_ms: u64) -> HttpResponse {
    let values: Vec<_> = object.live_values(now_ms).collect();
    let soonest = values
        .iter()
        .filter_map(|(s, _, _)| ttl_left(s, now_ms))
        .min();
    let mut response = match values.as_slice() {
        [] => ApiError::NotFound.error_response(),
        [(_, content_type, bytes)] => {
            let content_type = HeaderValue::from_str(content_type)
                .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
            HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, content_type))
                .body(bytes.to_vec())
        }
        siblings => {
            let listed: Vec<Value> = siblings
                .iter()
                .map(|(s, ct, b)| Value::Object(sibling_json(s, ct, b, now_ms)))
                .collect();
            HttpResponse::build(StatusCode::MULTIPLE_CHOICES).json(json!({ "siblings": listed }))
        }
    };
    if let Some(ttl) = soonest {
        response
            .headers_mut()
            .insert(HeaderName::from_static(TTL_HEADER), HeaderValue::from(ttl));
    }
    response
}

/// `response` with the context of `object` in `X-Dnd-Context`.
pub fn with_context(mut response: HttpResponse, object: &Object) -> HttpResponse {
    if let Ok(value) = HeaderValue::from_str(&object.clock().to_context()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(CONTEXT_HEADER), value);
    }
    response
}
