//! A request id on every HTTP request: in each log line written while the
//! request is handled (a tracing span around it), and in the answer's
//! `X-Request-Id`, so a client's complaint leads to the node's log lines.
//!
//! Owns the id's choice: the client's own `X-Request-Id` when it is short
//! and plain (at most [`MAX_CLIENT_ID_BYTES`] of letters, digits, `-`, `_`,
//! `.`), so one id can follow a request through a client's systems; else
//! a fresh random one. It never refuses a request: an unusable client id
//! is replaced, not answered with an error. Logs at debug level one line
//! per request served, with its status and duration, and records that
//! duration in the HTTP latency histogram under the route's pattern (never
//! the raw path, which a client could vary without bound).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;
use tracing::Instrument as _;

use super::AppState;
use crate::metrics::{status_class, HttpLabels};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// The longest client-chosen id kept.
pub const MAX_CLIENT_ID_BYTES: usize = 64;

/// The client's id if it is usable as it is.
pub fn client_id(value: &[u8]) -> Option<&str> {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if value.is_empty() || value.len() > MAX_CLIENT_ID_BYTES || !value.iter().all(plain) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

/// The method as a label: the API's own, or `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The route a request is counted under: the key-value API's three
/// shapes (one scope serves them all, so the router has no pattern for
/// each), else the pattern the router matched with each `{name}` written
/// `:name` (label values with braces trip common exposition parsers),
/// else `other`.
fn route_label(path: &str, pattern: Option<String>) -> String {
    match path {
        "/kv" | "/kv/" => "/kv".into(),
        "/kv/_batch" => "/kv/_batch".into(),
        _ if path.starts_with("/kv/") => "/kv/:key".into(),
        _ => match pattern {
            Some(pattern) => pattern
                .split('/')
                .map(
                    |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(inner) => format!(":{}", inner.split(':').next().unwrap_or(inner)),
                        None => segment.to_string(),
                    },
                )
                .collect::<Vec<_>>()
                .join("/"),
            None => "other".into(),
        },
    }
}

fn fresh_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The middleware: the id chosen, the rest of the request run in its span.
pub async fn tag<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| client_id(v.as_bytes()))
        .map_or_else(fresh_id, str::to_string);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path()
    );
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.metrics.clone());
    let method = method_label(req.method());
    let started = Instant::now();
    let mut response = next.call(req).instrument(span.clone()).await?;
    let took = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::debug!(
            status,
            elapsed_ms = took.as_secs_f64() * 1000.0,
            "request served"
        )
    });
    if let Some(metrics) = metrics {
        let route = route_label(
            response.request().path(),
            response.request().match_pattern(),
        );
        metrics.latencies.observe_http(
            HttpLabels {
                route,
                method,
                status: status_class(status),
            },
            took,
        );
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_short_client_ids_are_kept_and_others_replaced() {
        assert_eq!(client_id(b"abc-123_x.y"), Some("abc-123_x.y"));
        assert_eq!(
            client_id(&[b'a'; MAX_CLIENT_ID_BYTES]).map(str::len),
            Some(64)
        );
        assert_eq!(client_id(&[b'a'; MAX_CLIENT_ID_BYTES + 1]), None);
        assert_eq!(client_id(b""), None);
        assert_eq!(client_id(b"a b"), None);
        assert_eq!(client_id(b"a\nforged log line"), None);
        assert_eq!(client_id("é".as_bytes()), None);
    }

    #[test]
    fn routes_are_counted_by_shape_never_by_key() {
        assert_eq!(route_label("/kv/user%2F1", Some("/kv".into())), "/kv/:key");
        assert_eq!(route_label("/kv", None), "/kv");
        assert_eq!(route_label("/kv/_batch", None), "/kv/_batch");
        assert_eq!(
            route_label("/cluster/remove/abc", Some("/cluster/remove/{id}".into())),
            "/cluster/remove/:id"
        );
        assert_eq!(route_label("/x/1", Some("/x/{n:\\d+}".into())), "/x/:n");
        assert_eq!(route_label("/no/such/thing", None), "other");
    }

    #[test]
    fn fresh_ids_differ() {
        assert_ne!(fresh_id(), fresh_id());
        assert_eq!(fresh_id().len(), 16);
    }
}
