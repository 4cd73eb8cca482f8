//! The query parameters of `/kv` requests, parsed and checked once.
//!
//! Owns their names, ranges and defaults: a parameter out of range or
//! malformed becomes a 400 naming it, before anything is asked or stored.
//! Must never decide anything about versions or replicas; it only turns
//! text into typed values.

use std::time::Duration;

use actix_web::HttpRequest;

use super::ApiError;
use crate::key::MAX_KEY_BYTES;
use crate::replication::Quorum;
use crate::version::VersionVector;

/// The most keys one listing page returns, and its default.
pub const MAX_PAGE_LIMIT: usize = 1000;
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// The longest a watch waits, and how long when the client does not say.
pub const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest TTL: ten years, far enough that a deadline never overflows.
pub const MAX_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// Every query parameter a `/kv` request may carry; each route reads the
/// ones that apply to it.
#[derive(Debug, Default)]
pub struct KvParams {
    pub read_quorum: Option<Quorum>,
    pub write_quorum: Option<Quorum>,
    pub overwrite: bool,
    /// `?explain=true`: the answer says what the request did, replica by
    /// replica.
    pub explain: bool,
    pub ttl: Option<Duration>,
    /// `?wait=`: the context a watch has seen.
    pub wait: Option<VersionVector>,
    pub timeout: Option<Duration>,
    pub prefix: String,
    pub start_after: Option<String>,
    pub limit: Option<usize>,
    pub values: bool,
    pub conflicts: bool,
}

impl KvParams {
    /// Parses the request's query string; `replicas` bounds `?r=` and
    /// `?w=`. Unknown parameters are ignored; of a repeated one, the last
    /// counts.
    pub fn of(req: &HttpRequest, replicas: usize) -> Result<Self, ApiError> {
        let pairs = actix_web::web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map_err(|e| ApiError::BadParam {
                param: "query",
                reason: format!("the query string does not decode: {e}"),
            })?
            .into_inner();
        let mut params = KvParams::default();
        for (name, value) in pairs {
            match name.as_str() {
                "r" => params.read_quorum = Some(quorum("r", &value, replicas)?),
                "w" => params.write_quorum = Some(quorum("w", &value, replicas)?),
                "overwrite" => params.overwrite = flag("overwrite", &value)?,
                "explain" => params.explain = flag("explain", &value)?,
                "ttl" => {
                    params.ttl = Some(Duration::from_secs(number(
                        "ttl",
                        &value,
                        1,
                        MAX_TTL_SECONDS,
                    )?))
                }
                "wait" => {
                    params.wait = Some(VersionVector::from_context(value.trim()).map_err(|e| {
                        ApiError::BadParam {
                            param: "wait",
                            reason: format!("not a context: {e}"),
                        }
                    })?)
                }
                "timeout" => {
                    params.timeout = Some(Duration::from_secs(number(
                        "timeout",
                        &value,
                        1,
                        MAX_WATCH_TIMEOUT.as_secs(),
                    )?))
                }
                "prefix" => params.prefix = bounded_key_text("prefix", value)?,
                "start_after" => params.start_after = Some(bounded_key_text("start_after", value)?),
                "limit" => {
                    params.limit = Some(number("limit", &value, 1, MAX_PAGE_LIMIT as u64)? as usize)
                }
                "values" => params.values = flag("values", &value)?,
                "conflicts" => params.conflicts = flag("conflicts", &value)?,
                _ => {}
            }
        }
        if params.timeout.is_some() && params.wait.is_none() {
            return Err(ApiError::BadParam {
                param: "timeout",
                reason: "a timeout is for a watch: send it with ?wait=CONTEXT".into(),
            });
        }
        Ok(params)
    }

    pub fn page_limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_PAGE_LIMIT)
    }

    pub fn watch_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_WATCH_TIMEOUT)
    }
}

fn quorum(param: &'static str, value: &str, replicas: usize) -> Result<Quorum, ApiError> {
    Quorum::parse(value, replicas).map_err(|e| ApiError::BadParam {
        param,
        reason: e.to_string(),
    })
}

fn flag(param: &'static str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::BadParam {
            param,
            reason: "is `true` or `false`".into(),
        }),
    }
}

fn number(param: &'static str, value: &str, low: u64, high: u64) -> Result<u64, ApiError> {
    let out_of_range = || ApiError::BadParam {
        param,
        reason: format!("is a whole number from {low} to {high}"),
    };
    let n: u64 = value.parse().map_err(|_| out_of_range())?;
    if !(low..=high).contains(&n) {
        return Err(out_of_range());
    }
    Ok(n)
}

/// A prefix or cursor: key text, so no longer than a key.
fn bounded_key_text(param: &'static str, value: String) -> Result<String, ApiError> {
    if value.len() > MAX_KEY_BYTES {
        return Err(ApiError::BadParam {
            param,
            reason: format!("is longer than a key ({MAX_KEY_BYTES} bytes)"),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn parse(query: &str) -> Result<KvParams, ApiError> {
        KvParams::of(
            &TestRequest::with_uri(&format!("/kv?{query}")).to_http_request(),
            3,
        )
    }

    fn refused_param(query: &str) -> &'static str {
        match parse(query) {
            Err(ApiError::BadParam { param, .. }) => param,
            other => panic!("{query}: expected a refused parameter, got {other:?}"),
        }
    }

    #[test]
    fn parameters_in_range_parse_and_the_rest_are_refused_by_name() {
        let p = parse("prefix=a%2Fb&start_after=a%2Fb1&limit=1000&values=true&ttl=5").unwrap();
        assert_eq!(p.prefix, "a/b");
        assert_eq!(p.start_after.as_deref(), Some("a/b1"));
        assert_eq!(p.page_limit(), 1000);
        assert!(p.values && !p.conflicts);
        assert_eq!(p.ttl, Some(Duration::from_secs(5)));
        assert_eq!(parse("").unwrap().page_limit(), DEFAULT_PAGE_LIMIT);
        for (query, param) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=ten", "limit"),
            ("ttl=0", "ttl"),
            ("ttl=-1", "ttl"),
            ("ttl=1.5", "ttl"),
            ("wait=!!", "wait"),
            ("wait=&timeout=301", "timeout"),
            ("timeout=5", "timeout"),
            ("values=yes", "values"),
            ("r=4", "r"),
            ("w=0", "w"),
        ] {
            assert_eq!(refused_param(query), param, "{query}");
        }
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(refused_param(&format!("start_after={long}")), "start_after");
        let watch = parse("wait=&timeout=300").unwrap();
        assert_eq!(watch.wait, Some(VersionVector::new()));
        assert_eq!(watch.watch_timeout(), MAX_WATCH_TIMEOUT);
    }
}
