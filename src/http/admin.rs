//! Who may make a state-changing admin call (leave, remove, keyring): until
//! the API has tokens, a client on the node's own host, sending JSON.
//!
//! Owns that one rule, so every admin route applies it the same way. A
//! browser can send a cross-site form (urlencoded, multipart or plain
//! text) without asking, but not `application/json`, so a web page an
//! operator opens cannot make a node leave. It never looks at a body's
//! content: the routes parse their own.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::HttpRequest;

use super::{ApiError, AppState};

/// The call comes from this host: from loopback, or from the address the
/// node is bound to (where a client on this host arrives from when the
/// node is not on loopback).
pub fn from_this_host(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    match req.peer_addr() {
        Some(addr) if addr.ip().is_loopback() || addr.ip() == state.http_addr.ip() => Ok(()),
        _ => Err(ApiError::Forbidden(
            "admin calls are taken only from clients on this node's host".into(),
        )),
    }
}

/// A state-changing admin call: from this host, with a JSON body.
pub fn state_changing(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    from_this_host(req, state)?;
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("application/json"));
    if !is_json {
        return Err(ApiError::BadRequest(
            "an admin call that changes the cluster needs Content-Type: application/json (a body of {} will do), which a cross-site form cannot send".into(),
        ));
    }
    Ok(())
}
