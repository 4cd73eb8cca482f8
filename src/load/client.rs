//! The load tool's HTTP: one blocking `ureq` agent per client thread, and
//! the failure kinds its reports count.
//!
//! Each client owns an [`HttpClient`]; its agent keeps one keep-alive
//! connection per target, opens it again after an error or a
//! `Connection: close`, and sends one request at a time (no pipelining).
//! Nothing here retries: a failed request is reported as failed.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use ureq::http::{HeaderMap, Method, Request, Uri};
// ureq's resolver interface is not under its semver promise ("unversioned"):
// Cargo.lock pins the version this was written against.
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// How long opening one connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response body accepted.
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// Why a request did not count as done.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fail {
    Status(u16),
    Connect,
    Timeout,
    /// The connection broke or closed mid-request.
    Io,
    /// A response this client cannot read.
    Protocol,
    /// A read answered with a value of another size.
    WrongValue,
    /// A read found no value for the key.
    Missing,
}

impl Fail {
    pub fn label(self) -> String {
        match self {
            Fail::Status(code) => format!("HTTP {code}"),
            Fail::Connect => "connect error".into(),
            Fail::Timeout => "timeout".into(),
            Fail::Io => "connection broken".into(),
            Fail::Protocol => "unreadable response".into(),
            Fail::WrongValue => "wrong value size".into(),
            Fail::Missing => "missing key".into(),
        }
    }

    fn of(error: &ureq::Error) -> Fail {
        match error {
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => Fail::Connect,
            ureq::Error::Timeout(_) => Fail::Timeout,
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => Fail::Connect,
            ureq::Error::Io(e) => match e.kind() {
                ErrorKind::ConnectionRefused
                | ErrorKind::AddrNotAvailable
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable => Fail::Connect,
                ErrorKind::TimedOut | ErrorKind::WouldBlock => Fail::Timeout,
                _ => Fail::Io,
            },
            _ => Fail::Protocol,
        }
    }
}

/// An answer: its status, headers and whole body.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The value of header `name`, if it has one that is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Resolves the load tool's targets, which are `IP:PORT` already, without
/// a lookup. ureq resolves a request's host before it looks for an idle
/// connection, and its own resolver, given a timeout, does each lookup in a
/// thread of its own: a thread started per request, which held 32 clients
/// to 7,000 to 10,000 requests/s against the ceiling server here, against
/// 33,000 to 48,000 without it.
#[derive(Debug)]
struct Literal;

impl Resolver for Literal {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let literal = uri
            .authority()
            .and_then(|authority| authority.as_str().parse::<SocketAddr>().ok());
        match literal {
            Some(addr) => {
                let mut addrs = self.empty();
                addrs.push(addr);
                Ok(addrs)
            }
            None => DefaultResolver::default().resolve(uri, config, timeout),
        }
    }
}

/// One client's connections, one per target, reused between requests.
/// Clones share the connections; a request that finds none idle opens one.
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
}

impl HttpClient {
    /// A client whose requests each give up after `timeout` (connecting,
    /// sending and reading the whole answer).
    pub fn new(timeout: Duration, targets: usize) -> HttpClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            // Addresses are given; a proxy from the environment would only
            // measure the proxy.
            .proxy(None)
            .no_delay(true)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(timeout))
            .max_idle_connections(targets.max(1))
            .max_idle_connections_per_host(1)
            .build();
        let agent = ureq::Agent::with_parts(config, DefaultConnector::default(), Literal);
        HttpClient { agent }
    }

    /// Sends one request and reads the whole answer.
    pub fn call(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, Fail> {
        let mut request = Request::builder().method(method).uri(url);
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let response = if body.is_empty() {
            let request = request.body(()).map_err(|_| Fail::Protocol)?;
            self.agent.run(request)
        } else {
            let request = request.body(body).map_err(|_| Fail::Protocol)?;
            self.agent.run(request)
        };
        let response = response.map_err(|e| Fail::of(&e))?;
        let (parts, mut body) = response.into_parts();
        let body = body
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| Fail::of(&e))?;
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    pub fn get(&self, url: &str) -> Result<Reply, Fail> {
        self.call(Method::GET, url, None, &[])
    }

    /// Closes every connection of this client and its clones, interrupting
    /// the requests that wait on them in other threads (they fail).
    pub fn shutdown(self) {
        self.agent.shutdown();
    }
}
