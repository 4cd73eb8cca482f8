//! Who may make a request: the role each route needs, checked before any
//! handler runs or any body is read.
//!
//! Owns [`required_role`] (one table for every route) and the middleware
//! [`admit`]. With a tokens file, every route but `/health` and `/ready`
//! (and the dashboard's files under `/ui`, which hold no data) needs
//! `Authorization: Bearer <token>` of a role at least the route's:
//! no or an unknown token is 401 with `WWW-Authenticate`, a weaker role
//! 403. Without one, only admin routes are guarded: they are taken from
//! clients on the node's own host alone. A refusal is counted, logged at
//! most once a minute per client address, and reaches no handler. It never
//! looks at a body; the admin routes' JSON rule is [`super::admin`]'s.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError as _};
use serde_json::json;

use super::{ApiError, AppState};
use crate::log_limit::LogLimit;
use crate::tokens::Role;

/// The role a request needs, or `None` for the probes and the dashboard's
/// static files, which anyone may fetch.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    let reads = matches!(*method, Method::GET | Method::HEAD);
    if path == "/health" || path == "/ready" {
        return None;
    }
    // The dashboard's files carry no data: the page asks the API for its
    // figures with the operator's token, and those calls are checked.
    if path == "/ui" || path.starts_with("/ui/") {
        return None;
    }
    if path == "/kv" || path.starts_with("/kv/") {
        return Some(if reads { Role::Read } else { Role::Write });
    }
    // Key fingerprints are for whoever may change them.
    if path == "/cluster/keyring" {
        return Some(Role::Admin);
    }
    // Anything else that is not a read (leave, remove, routes to come)
    // changes the cluster or the node.
    Some(if reads { Role::Read } else { Role::Admin })
}

/// Why a request was refused before reaching its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    NoToken,
    UnknownToken,
    Role { needed: Role, held: Role },
    NotThisHost,
}

/// Refusals logged at most once a minute per client address.
pub type RefusalLog = Mutex<LogLimit<IpAddr>>;

/// The middleware: admits the request or answers the refusal itself.
pub async fn admit<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    // The path the router matches (escapes of plain characters decoded),
    // so that `/cluster/%6Beyring` needs what `/cluster/keyring` does.
    let Some(needed) = required_role(req.method(), req.match_info().as_str()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let refusal = match &state.tokens {
        Some(tokens) => match bearer(&req) {
            None => Some(Refusal::NoToken),
            Some(token) => match tokens.authenticate(token) {
                None => Some(Refusal::UnknownToken),
                Some(entry) if entry.role < needed => Some(Refusal::Role {
                    needed,
                    held: entry.role,
                }),
                Some(_) => None,
            },
        },
        None if needed == Role::Admin && !from_this_host(&req, &state) => {
            Some(Refusal::NotThisHost)
        }
        None => None,
    };
    let Some(refusal) = refusal else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    count_and_log(&state, &req, refusal);
    let response = refusal_response(refusal);
    Ok(req.into_response(response).map_into_right_body())
}

/// The token of an `Authorization: Bearer` header, if there is one.
fn bearer(req: &ServiceRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// From loopback, or from the address the node is bound to (where a client
/// on this host arrives from when the node is not on loopback).
fn from_this_host(req: &ServiceRequest, state: &AppState) -> bool {
    req.peer_addr()
        .is_some_and(|addr| addr.ip().is_loopback() || addr.ip() == state.http_addr.ip())
}

fn count_and_log(state: &AppState, req: &ServiceRequest, refusal: Refusal) {
    let metrics = &state.metrics;
    let reason = match refusal {
        Refusal::NoToken => {
            metrics.http_requests_refused_no_token.inc();
            "no token"
        }
        Refusal::UnknownToken => {
            metrics.http_requests_refused_unknown_token.inc();
            "unknown token"
        }
        Refusal::Role { .. } => {
            metrics.http_requests_refused_role.inc();
            "role too weak"
        }
        Refusal::NotThisHost => {
            metrics.http_requests_refused_not_this_host.inc();
            "admin call from another host"
        }
    };
    let Some(client) = req.peer_addr().map(|a| a.ip()) else {
        return;
    };
    let allowed = state
        .refusal_log
        .lock()
        .map(|mut log| log.allow(client, Instant::now()))
        .unwrap_or(false);
    if allowed {
        tracing::warn!(%client, method = %req.method(), path = req.match_info().as_str(), reason,
            "HTTP request refused (further refusals from this client are counted, not logged, for a minute)");
    }
}

fn refusal_response(refusal: Refusal) -> HttpResponse {
    let challenge = |error: Option<&str>| {
        let value = match error {
            Some(e) => format!("Bearer realm=\"dnd\", error=\"{e}\""),
            None => "Bearer realm=\"dnd\"".to_string(),
        };
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Bearer"))
    };
    match refusal {
        Refusal::NoToken => {
            let mut response = HttpResponse::Unauthorized().json(json!({
                "error": "this node takes only requests with Authorization: Bearer <token>",
            }));
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge(None));
            response
        }
        Refusal::UnknownToken => {
            let mut response = HttpResponse::Unauthorized().json(json!({
                "error": "the bearer token is not one this node accepts",
            }));
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge(Some("invalid_token")));
            response
        }
        Refusal::Role { needed, held } => HttpResponse::Forbidden().json(json!({
            "error": format!("this call needs a token of role {needed} or above; this token's role is {held}"),
            "required_role": needed.as_str(),
            "role": held.as_str(),
        })),
        Refusal::NotThisHost => ApiError::Forbidden(
            "admin calls are taken only from clients on this node's host (run the node with --tokens-file to take them from anywhere with an admin token)".into(),
        )
        .error_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_needs_the_role_it_should() {
        let cases = [
            (Method::GET, "/health", None),
            (Method::GET, "/ready", None),
            (Method::GET, "/kv/a", Some(Role::Read)),
            (Method::GET, "/kv", Some(Role::Read)),
            (Method::POST, "/kv/_batch", Some(Role::Write)),
            (Method::HEAD, "/kv/a", Some(Role::Read)),
            (Method::PUT, "/kv/a", Some(Role::Write)),
            (Method::POST, "/kv/a", Some(Role::Write)),
            (Method::DELETE, "/kv/a", Some(Role::Write)),
            (Method::GET, "/cluster/members", Some(Role::Read)),
            (Method::GET, "/metrics", Some(Role::Read)),
            (Method::GET, "/cluster/keyring", Some(Role::Admin)),
            (Method::POST, "/cluster/keyring", Some(Role::Admin)),
            (Method::POST, "/cluster/leave", Some(Role::Admin)),
            (Method::POST, "/cluster/remove/x", Some(Role::Admin)),
            (Method::DELETE, "/cluster/members", Some(Role::Admin)),
            (Method::GET, "/nowhere", Some(Role::Read)),
            // A lookalike of the open probes is not one.
            (Method::GET, "/health/x", Some(Role::Read)),
            (Method::POST, "/health", None),
        ];
        for (method, path, role) in cases {
            assert_eq!(required_role(&method, path), role, "{method} {path}");
        }
    }

    #[test]
    fn the_dashboard_files_are_open_and_nothing_else_is_by_their_name() {
        let cases = [
            (Method::GET, "/ui", None),
            (Method::GET, "/ui/", None),
            (Method::GET, "/ui/app.js", None),
            (Method::GET, "/ui/style.css", None),
            // Not under /ui/: a lookalike prefix gets what any route gets.
            (Method::GET, "/uix", Some(Role::Read)),
            (Method::POST, "/uix", Some(Role::Admin)),
            (Method::GET, "/kv/ui", Some(Role::Read)),
            (Method::PUT, "/kv/ui", Some(Role::Write)),
            (Method::GET, "/kv", Some(Role::Read)),
            (Method::GET, "/cluster/status", Some(Role::Read)),
        ];
        for (method, path, role) in cases {
            assert_eq!(required_role(&method, path), role, "{method} {path}");
        }
    }
}
