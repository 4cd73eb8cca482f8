//! `?explain=true` on `/kv/{key}`: the answer with what the request did
//! replica by replica ([`crate::explain::Explanation`]).
//!
//! Owns where the explanation goes: into the JSON body when the answer has
//! one (siblings, not found, an error) or when it has none (a write's 204
//! becomes a 200 with `context` and `explain`), and into the
//! `X-Dnd-Explain` header (compact JSON) when the body is a value. It
//! never changes what the answer says otherwise: status, headers and the
//! rest of the body stay as the request left them.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

use super::answer::CONTEXT_HEADER;
use super::ApiError;
use crate::explain::Trace;

pub const EXPLAIN_HEADER: &str = "x-dnd-explain";

/// `outcome` with the explanation `trace` holds, if there is a trace.
pub async fn explained(
    outcome: Result<HttpResponse, ApiError>,
    trace: Option<Trace>,
) -> Result<HttpResponse, ApiError> {
    let Some(trace) = trace else {
        return outcome;
    };
    let explanation = serde_json::to_value(trace.explanation()).unwrap_or(Value::Null);
    let response = match outcome {
        Ok(response) => response,
        Err(ApiError::ClientGone) => return Err(ApiError::ClientGone),
        Err(e) => e.error_response(),
    };
    let status = response.status();
    if status == StatusCode::NO_CONTENT {
        let context = response
            .headers()
            .get(CONTEXT_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut answer =
            HttpResponse::Ok().json(json!({ "context": context, "explain": explanation }));
        copy_headers(&response, &mut answer);
        return Ok(answer);
    }
    let is_json = response
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        let mut response = response;
        // serde_json escapes nothing above ASCII; a header value must be
        // visible ASCII, so such an explanation goes without the header.
        let compact = explanation.to_string();
        if let Ok(value) = HeaderValue::from_str(&compact) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(EXPLAIN_HEADER), value);
        }
        return Ok(response);
    }
    let headers = response.headers().clone();
    let bytes = actix_web::body::to_bytes(response.into_body())
        .await
        .unwrap_or_default();
    let mut body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
    if let Some(object) = body.as_object_mut() {
        object.insert("explain".into(), explanation);
    }
    let mut answer = HttpResponse::build(status).json(body);
    for (name, value) in &headers {
        if name != actix_web::http::header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(answer)
}

fn copy_headers(from: &HttpResponse, to: &mut HttpResponse) {
    for (name, value) in from.headers() {
        if name != actix_web::http::header::CONTENT_TYPE
            && name != actix_web::http::header::CONTENT_LENGTH
        {
            to.headers_mut().insert(name.clone(), value.clone());
        }
    }
}
