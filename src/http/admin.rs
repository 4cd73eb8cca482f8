//! The rule for a state-changing admin call (leave, remove, keyring): it
//! carries a JSON body.
//!
//! Owns that one rule, so every admin route applies it the same way. A
//! browser can send a cross-site form (urlencoded, multipart or plain
//! text) without asking, but not `application/json`, so a web page an
//! operator opens cannot make a node leave. Who may call is decided before
//! the handler, by [`super::auth`]; this never looks at a body's content:
//! the routes parse their own.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::HttpRequest;

use super::ApiError;

/// A state-changing admin call must say its body is JSON.
pub fn state_changing(req: &HttpRequest) -> Result<(), ApiError> {
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
