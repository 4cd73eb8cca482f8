//! The HTTP client of everything that talks to a node from outside it: the
//! `dnd` command's client and admin commands, `dnd dev`, and the tests'
//! and tools' helpers built on [`crate::dev`].
//!
//! Owns the one configured `ureq` agent (endpoint, bearer token, the CA to
//! trust, a client certificate, timeouts) and the shape of an answer
//! ([`Reply`]). It decides nothing about what an answer means: callers
//! read statuses. It must never be used by the node itself, which talks to
//! peers over the node-to-node channel.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest answer read.
const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

/// Where a node is and how to reach it.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `http://HOST:PORT` or `https://HOST:PORT`, without a path.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer ...`.
    pub token: Option<String>,
    /// PEM file of the certificate authority to trust for HTTPS (instead of
    /// the system's roots).
    pub cacert: Option<PathBuf>,
    /// A client certificate and its private key (PEM files).
    pub identity: Option<(PathBuf, PathBuf)>,
    pub connect_timeout: Duration,
    /// For the whole exchange, body included.
    pub timeout: Duration,
}

impl ClientOptions {
    pub fn new(endpoint: impl Into<String>) -> Self {
        ClientOptions {
            endpoint: endpoint.into(),
            token: None,
            cacert: None,
            identity: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Why a request got no answer, one line each.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The options cannot work: a bad endpoint, an unreadable or wrong
    /// certificate file. Nothing was sent.
    #[error("{0}")]
    Setup(String),
    #[error("cannot reach a node at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the answer from {endpoint} was cut short: {reason}")]
    CutShort { endpoint: String, reason: String },
}

/// An answer, whatever its status.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// What a node says went wrong: its JSON `error`, else the body.
    pub fn error_message(&self) -> String {
        match self.json() {
            Some(body) => match body.get("error").and_then(|e| e.as_str()) {
                Some(error) => error.to_string(),
                None => body.to_string(),
            },
            None => self.text().trim().to_string(),
        }
    }
}

/// One node's API, through one agent that keeps its connections.
#[derive(Clone, Debug)]
pub struct Client {
    endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
}

fn read_file(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path)
        .map_err(|e| ClientError::Setup(format!("cannot read {}: {e}", path.display())))
}

fn certificates(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, ClientError> {
    let pem = read_file(path)?;
    let certs = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Setup(format!("{} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ClientError::Setup(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

impl Client {
    pub fn new(options: &ClientOptions) -> Result<Self, ClientError> {
        let endpoint = options.endpoint.trim_end_matches('/').to_string();
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains('/') => {}
            _ => {
                return Err(ClientError::Setup(format!(
                    "endpoint {endpoint:?} is not http://HOST:PORT or https://HOST:PORT"
                )))
            }
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &options.cacert {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certificates(path)?));
        }
        if let Some((cert, key)) = &options.identity {
            let chain = certificates(cert)?;
            let key = ureq::tls::PrivateKey::from_pem(&read_file(key)?).map_err(|e| {
                ClientError::Setup(format!("{} is not a PEM private key: {e}", key.display()))
            })?;
            tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
        }
        let agent = ureq::Agent::config_builder()
            // 300 is dnd's answer with siblings, not a redirect to follow;
            // every status is an answer for the caller to read.
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(options.connect_timeout.min(options.timeout)))
            .timeout_global(Some(options.timeout))
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Client {
            endpoint,
            token: options.token.clone(),
            agent,
        })
    }

    /// A client of `http://addr` with no token, waiting at most `timeout`.
    pub fn plain(addr: std::net::SocketAddr, timeout: Duration) -> Self {
        let mut options = ClientOptions::new(format!("http://{addr}"));
        options.timeout = timeout;
        options.connect_timeout = Duration::from_secs(1);
        // An address always makes a valid endpoint, and no file is read.
        Client::new(&options).unwrap_or_else(|e| unreachable!("{e}"))
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One request; `path` starts with `/` and is already percent-encoded.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, ClientError> {
        let url = format!("{}{path}", self.endpoint);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            builder = builder.header("Authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(body.to_vec())
            .map_err(|e| ClientError::Setup(format!("{url:?} is not a usable request: {e}")))?;
        let mut response = self
            .agent
            .run(request)
            .map_err(|e| ClientError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            })?;
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .read_to_vec()
            .map_err(|e| ClientError::CutShort {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            })?;
        Ok(Reply {
            status: response.status().as_u16(),
            headers,
            body,
        })
    }

    pub fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.request("GET", path, &[], b"")
    }
}

/// `text` made safe as one path segment: everything but unreserved
/// characters percent-encoded, so that a key holding `/`, `?` or `%` names
/// itself.
pub fn path_segment(text: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, UNRESERVED).to_string()
}

/// `text` made safe as a query parameter's value.
pub fn query_value(text: &str) -> String {
    path_segment(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_a_scheme_and_a_host() {
        for bad in ["127.0.0.1:6000", "ftp://x", "http://", "http://h/kv"] {
            let refused = Client::new(&ClientOptions::new(bad));
            assert!(matches!(refused, Err(ClientError::Setup(_))), "{bad}");
        }
        let fine = Client::new(&ClientOptions::new("https://node.example:6000/")).unwrap();
        assert_eq!(fine.endpoint(), "https://node.example:6000");
    }

    #[test]
    fn keys_with_reserved_characters_name_themselves() {
        assert_eq!(path_segment("a/b?c%d e"), "a%2Fb%3Fc%25d%20e");
        assert_eq!(path_segment("user-1_x.y~"), "user-1_x.y~");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn a_certificate_file_that_is_not_one_is_a_setup_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let mut options = ClientOptions::new("https://127.0.0.1:6000");
        options.cacert = Some(path);
        let refused = Client::new(&options).unwrap_err();
        assert!(
            refused.to_string().contains("no PEM certificate"),
            "{refused}"
        );
        options.cacert = Some(dir.path().join("missing.pem"));
        assert!(Client::new(&options)
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }
}
