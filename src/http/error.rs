//! The one place where failures become HTTP statuses.
//!
//! Owns [`ApiError`]: every way a request can fail, its status and its JSON
//! body `{"error": "..."}`. Handlers return these and never build error
//! responses of their own; nothing here may leak internal detail beyond a
//! human-readable reason.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::actors::store::StoreError;
use crate::key::KeyError;
use crate::replica::QuorumShortfall;

/// Every way a request can fail, each with its status. The body is always
/// `{"error": "<message>"}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("key not found")]
    NotFound,
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed here")]
    MethodNotAllowed,
    #[error("{0}")]
    BadKey(#[from] KeyError),
    #[error("the value exceeds the limit of {limit} bytes")]
    ValueTooLarge { limit: usize },
    /// The key's versions together would be too large to replicate.
    #[error("{0}")]
    ObjectTooLarge(String),
    #[error("{0}")]
    BadRequest(String),
    /// A query parameter out of range or malformed: 400 naming it.
    #[error("?{param}= {reason}")]
    BadParam { param: &'static str, reason: String },
    /// A conditional write whose condition did not hold: 412, with the
    /// context of the versions found (also in `X-Dnd-Context`).
    #[error("{message}")]
    PreconditionFailed { message: String, context: String },
    /// A batch with more operations than one batch takes: 413.
    #[error("a batch takes at most {limit} operations, this one has {given}")]
    BatchTooLarge { given: usize, limit: usize },
    #[error("{0}")]
    Unavailable(String),
    /// Every place for a waiting request is taken: 503 at once.
    #[error("the node has as many requests waiting as it takes (--max-waiting-requests); try again shortly")]
    Overloaded,
    /// Too few replicas answered: 503, saying how many did, how many were
    /// needed and, for a write, which nodes hold it anyway.
    #[error("{message}")]
    Quorum {
        message: String,
        shortfall: QuorumShortfall,
    },
    /// 503 with figures: how many replicas were needed, and how many
    /// answered, were reachable or were home replicas among those.
    #[error("{message}")]
    UnavailableCounted {
        message: String,
        counts: Vec<(&'static str, usize)>,
    },
    #[error("{0}")]
    Conflict(String),
    /// The body did not arrive in time; the connection is closed.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// 409 naming the sibling limit: the writer must resolve the siblings
    /// by writing with a read's context.
    #[error("{message}")]
    TooManySiblings {
        message: String,
        siblings: usize,
        limit: usize,
    },
    /// An admin action from where admin actions are not taken.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Internal(String),
    /// The client closed its connection before the answer; nobody reads it.
    #[error("the client went away")]
    ClientGone,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(_) => ApiError::Internal(e.to_string()),
            StoreError::Version(_) => ApiError::BadRequest(e.to_string()),
            StoreError::UnknownContext {
                every_home_answered: true,
            } => ApiError::Conflict(e.to_string()),
            StoreError::TooManySiblings { siblings, limit } => ApiError::TooManySiblings {
                message: e.to_string(),
                siblings,
                limit,
            },
            StoreError::ObjectTooLarge { .. } => ApiError::ObjectTooLarge(e.to_string()),
            StoreError::PreconditionFailed { ref found } => ApiError::PreconditionFailed {
                message: e.to_string(),
                context: found.to_context(),
            },
            StoreError::ListUnavailable { needed, answered } => ApiError::UnavailableCounted {
                message: e.to_string(),
                counts: match answered {
                    Some(answered) => vec![("replicas_needed", needed), ("replicas_answered", answered)],
                    None => vec![("replicas_needed", needed)],
                },
            },
            StoreError::UnknownContext { .. }
            | StoreError::TooManyWatches { .. }
            | StoreError::Storage(_)
            | StoreError::Restarting
            | StoreError::NotHome
            | StoreError::NoHomeReachable
            | StoreError::WriteUnconfirmed => ApiError::Unavailable(e.to_string()),
            StoreError::NoHomeAnswered { answered, needed } => ApiError::UnavailableCounted {
                message: e.to_string(),
                counts: vec![
                    ("replicas_needed", needed),
                    ("replicas_answered", answered),
                    ("home_replicas_answered", 0),
                ],
            },
            StoreError::Unreachable { reachable, needed } => ApiError::UnavailableCounted {
                message: e.to_string(),
                counts: vec![
                    ("replicas_needed", needed),
                    ("replicas_reachable", reachable),
                    ("replicas_answered", 0),
                ],
            },
            StoreError::ReadQuorum(ref shortfall) => ApiError::Quorum {
                message: format!("read quorum not met: {e}"),
                shortfall: shortfall.clone(),
            },
            StoreError::WriteQuorum(ref shortfall) => ApiError::Quorum {
                message: format!(
                    "write quorum not met: {e}; the write is kept where it was stored and will spread when replicas return"
                ),
                shortfall: shortfall.clone(),
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadKey(KeyError::TooLong { .. }) => StatusCode::URI_TOO_LONG,
            ApiError::BadKey(_) | ApiError::BadRequest(_) | ApiError::BadParam { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::ValueTooLarge { .. }
            | ApiError::ObjectTooLarge(_)
            | ApiError::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_)
            | ApiError::Overloaded
            | ApiError::Quorum { .. }
            | ApiError::UnavailableCounted { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict(_) | ApiError::TooManySiblings { .. } => StatusCode::CONFLICT,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // 499, as nginx logs it; no client will see it.
            ApiError::ClientGone => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    /// The body, and for a 503 `Retry-After`: the node is up but cannot
    /// serve this now (replicas away, an actor busy), and a client that
    /// waits a second before trying again spares it a storm of retries.
    fn error_response(&self) -> HttpResponse {
        let mut response = self.body_response();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// What a 503's `Retry-After` says, in seconds.
pub const RETRY_AFTER_SECONDS: &str = "1";

impl ApiError {
    fn body_response(&self) -> HttpResponse {
        if let ApiError::Quorum { shortfall, .. } = self {
            return HttpResponse::build(self.status_code()).json(json!({
                "error": self.to_string(),
                "replicas_needed": shortfall.needed,
                "replicas_answered": shortfall.answered,
                "stored_on": shortfall.stored_on.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }));
        }
        if let ApiError::TooManySiblings {
            siblings, limit, ..
        } = self
        {
            return HttpResponse::build(self.status_code()).json(json!({
                "error": self.to_string(),
                "siblings": siblings,
                "max_siblings": limit,
            }));
        }
        if let ApiError::BadParam { param, .. } = self {
            return HttpResponse::build(self.status_code()).json(json!({
                "error": self.to_string(),
                "parameter": param,
            }));
        }
        if let ApiError::PreconditionFailed { context, .. } = self {
            return HttpResponse::build(self.status_code())
                .insert_header((super::answer::CONTEXT_HEADER, context.as_str()))
                .json(json!({ "error": self.to_string(), "context": context }));
        }
        if let ApiError::UnavailableCounted { counts, .. } = self {
            let mut body = serde_json::Map::new();
            body.insert("error".into(), self.to_string().into());
            for (name, count) in counts {
                body.insert((*name).into(), (*count).into());
            }
            return HttpResponse::build(self.status_code()).json(body);
        }
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::BodyTimeout(_)) {
            // The rest of a late body would be read as the next request.
            response.force_close();
        }
        response.json(json!({ "error": self.to_string() }))
    }
}

impl actix_web::Responder for ApiError {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _req: &actix_web::HttpRequest) -> HttpResponse {
        self.error_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_503_says_when_to_try_again_and_nothing_else_does() {
        let unavailable = [
            ApiError::Unavailable("the node did not answer in time".into()),
            ApiError::UnavailableCounted {
                message: "few".into(),
                counts: vec![("replicas_needed", 2)],
            },
            ApiError::Quorum {
                message: "short".into(),
                shortfall: QuorumShortfall {
                    needed: 2,
                    answered: 1,
                    stored_on: vec![],
                },
            },
        ];
        for error in unavailable {
            let response = error.error_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let retry = response.headers().get(actix_web::http::header::RETRY_AFTER);
            assert_eq!(retry.and_then(|v| v.to_str().ok()), Some("1"), "{error}");
        }
        for error in [ApiError::NotFound, ApiError::BadRequest("no".into())] {
            let response = error.error_response();
            assert!(response
                .headers()
                .get(actix_web::http::header::RETRY_AFTER)
                .is_none());
        }
    }
}
