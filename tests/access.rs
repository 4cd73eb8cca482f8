//! Who may reach the HTTP API, tried as a client would: HTTPS with and
//! without the CA, with and without a client certificate; bearer tokens
//! missing, unknown, of too weak a role; admin calls from another host (a
//! network namespace); and the secured setup of the README, end to end
//! through the `dnd` binary. Certificates are made here with rcgen.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{client, eventually_blocking, start_node, DndProcess};
use dnd::tls::TlsFiles;
use dnd::tokens::{generate_token, token_table_entry, Role, TokenTable};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A CA, and certificates it signed, written as PEM files into `dir`.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&key).unwrap();
        let ca_pem = ca.pem();
        std::fs::write(dir.join(format!("{name}.pem")), &ca_pem).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    fn ca_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    fn issue(&self, name: &str, sans: &[&str], purpose: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    fn server(&self) -> Issued {
        self.issue(
            "server",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }
}

/// A blocking HTTPS client trusting `ca_pem`, presenting `client` if given.
fn https_agent(ca_pem: Option<&str>, client: Option<&Issued>) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder();
    if let Some(ca_pem) = ca_pem {
        let ca = Certificate::from_pem(ca_pem.as_bytes()).unwrap();
        tls = tls.root_certs(RootCerts::new_with_certs(&[ca]));
    }
    if let Some(issued) = client {
        let cert = Certificate::from_pem(&std::fs::read(&issued.cert).unwrap()).unwrap();
        let key = PrivateKey::from_pem(&std::fs::read(&issued.key).unwrap()).unwrap();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(tls.build())
        .build()
        .into()
}

/// `method url` with `body`: the status and body, or why no answer came.
fn https_call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .body(body.to_string())
        .unwrap();
    let mut response = agent.run(request).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, text))
}

/// Runs blocking client code off the test's runtime thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[actix_rt::test]
async fn https_serves_a_client_that_trusts_the_ca_and_nothing_to_anyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let server = pki.server();
    let node = start_node(|c| {
        c.tls = Some(TlsFiles {
            cert: server.cert.clone(),
            key: server.key.clone(),
            client_ca: None,
        })
    })
    .await;
    let port = node.http_addr.port();
    let ca_pem = pki.ca_pem.clone();
    let (put, get, untrusted, stranger_ca) = blocking(move || {
        let agent = https_agent(Some(&ca_pem), None);
        let put = https_call(
            &agent,
            "PUT",
            &format!("https://localhost:{port}/kv/a"),
            "over tls",
        );
        let get = https_call(&agent, "GET", &format!("https://127.0.0.1:{port}/kv/a"), "");
        // The public roots do not vouch for a private CA.
        let untrusted = https_call(
            &https_agent(None, None),
            "GET",
            &format!("https://localhost:{port}/health"),
            "",
        );
        let other = Pki::new(tempfile::tempdir().unwrap().path(), "other");
        let stranger_ca = https_call(
            &https_agent(Some(&other.ca_pem), None),
            "GET",
            &format!("https://localhost:{port}/health"),
            "",
        );
        (put, get, untrusted, stranger_ca)
    })
    .await;
    assert_eq!(put.map(|r| r.0), Ok(204));
    assert_eq!(get, Ok((200, "over tls".to_string())));
    assert!(untrusted.is_err(), "{untrusted:?}");
    assert!(stranger_ca.is_err(), "{stranger_ca:?}");

    // Plain HTTP on the TLS port gets no HTTP answer, and the value never
    // crosses in clear.
    let http = node.http_addr;
    let plain = blocking(move || {
        let mut stream = std::net::TcpStream::connect(http).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /kv/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        answer
    })
    .await;
    let plain = String::from_utf8_lossy(&plain);
    assert!(
        !plain.contains("over tls") && !plain.starts_with("HTTP/1.1 200"),
        "{plain}"
    );
}

#[actix_rt::test]
async fn with_a_client_ca_only_a_certificate_it_signed_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let servers = Pki::new(dir.path(), "servers");
    let clients = Pki::new(dir.path(), "clients");
    let strangers = Pki::new(dir.path(), "strangers");
    let server = servers.server();
    let node = start_node(|c| {
        c.tls = Some(TlsFiles {
            cert: server.cert.clone(),
            key: server.key.clone(),
            client_ca: Some(clients.ca_path("clients")),
        })
    })
    .await;
    let url = format!("https://localhost:{}/health", node.http_addr.port());
    let client_cert = clients.issue("app", &["app"], ExtendedKeyUsagePurpose::ClientAuth);
    let stranger_cert = strangers.issue(
        "intruder",
        &["intruder"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let ca_pem = servers.ca_pem.clone();
    let (without, stranger, admitted) = blocking(move || {
        let without = https_call(&https_agent(Some(&ca_pem), None), "GET", &url, "");
        let stranger = https_call(
            &https_agent(Some(&ca_pem), Some(&stranger_cert)),
            "GET",
            &url,
            "",
        );
        let admitted = https_call(
            &https_agent(Some(&ca_pem), Some(&client_cert)),
            "GET",
            &url,
            "",
        );
        (without, stranger, admitted)
    })
    .await;
    assert!(without.is_err(), "no client certificate: {without:?}");
    assert!(stranger.is_err(), "another CA's certificate: {stranger:?}");
    assert_eq!(admitted.map(|r| r.0), Ok(200));
}

#[actix_rt::test]
async fn a_node_whose_tls_files_are_unusable_refuses_to_start_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let server = pki.server();
    let other = pki.issue("other", &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let cases = [
        (missing.clone(), server.key.clone(), "missing.pem"),
        (not_pem.clone(), server.key.clone(), "not.pem"),
        (server.cert.clone(), not_pem.clone(), "private key"),
        // A key that is not the certificate's.
        (server.cert.clone(), other.key.clone(), "does not fit"),
    ];
    for (cert, key, expected) in cases {
        let data = tempfile::tempdir().unwrap();
        let mut config = dnd::config::Config::ephemeral(data.path().to_path_buf());
        config.tls = Some(TlsFiles {
            cert,
            key,
            client_ca: None,
        });
        let error = match dnd::node::Node::start(config).await {
            Ok(_) => panic!("started with unusable TLS files ({expected})"),
            Err(e) => format!("{:#}", anyhow::Error::from(e)),
        };
        assert!(error.contains(expected), "{expected}: {error}");
    }
}

/// A tokens table with one token of each role: (table, read, write, admin).
fn three_tokens() -> (TokenTable, String, String, String) {
    let (read, write, admin) = (generate_token(), generate_token(), generate_token());
    let text = [
        token_table_entry("reader", Role::Read, &read),
        token_table_entry("app", Role::Write, &write),
        token_table_entry("ops", Role::Admin, &admin),
    ]
    .join("\n");
    (TokenTable::from_toml(&text).unwrap(), read, write, admin)
}

/// `method path` on `http` with an optional token and JSON body: status,
/// the WWW-Authenticate header and the body.
async fn call(
    http: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> (u16, String, String) {
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client().request(method, format!("http://{http}{path}"));
    if let Some(token) = token {
        request = request.insert_header(("Authorization", format!("Bearer {token}")));
    }
    let mut response = match body {
        Some((content_type, body)) => request
            .insert_header(("Content-Type", content_type))
            .send_body(body.to_string())
            .await
            .unwrap(),
        None => request.send().await.unwrap(),
    };
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.body().await.unwrap();
    (
        response.status().as_u16(),
        challenge,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[actix_rt::test]
async fn every_call_needs_a_token_of_its_role_and_a_refusal_changes_nothing() {
    let (tokens, read, write, admin) = three_tokens();
    let node = start_node(|c| c.tokens = Some(tokens)).await;
    let http = node.http_addr;
    let text = ("text/plain", "v1");

    // No token, or one the node does not know: 401 with a challenge.
    let (status, challenge, body) = call(http, "GET", "/kv/a", None, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.starts_with("Bearer"), "{challenge:?}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, challenge, _) = call(http, "PUT", "/kv/a", Some("dnd_guess"), Some(text)).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_token"), "{challenge:?}");
    // A scheme other than Bearer is no token.
    let mut basic = client()
        .get(format!("http://{http}/kv/a"))
        .insert_header(("Authorization", format!("Basic {read}")))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
    let _ = basic.body().await;

    // A read token reads but cannot write or delete; nothing is stored.
    assert_eq!(call(http, "GET", "/kv/a", Some(&read), None).await.0, 404);
    let (status, _, body) = call(http, "PUT", "/kv/a", Some(&read), Some(text)).await;
    assert_eq!(status, 403, "{body}");
    let refusal: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (refusal["required_role"].as_str(), refusal["role"].as_str()),
        (Some("write"), Some("read"))
    );
    assert_eq!(call(http, "GET", "/kv/a", Some(&admin), None).await.0, 404);

    // A write token writes; the value is then there for a reader, and a
    // reader's delete leaves it.
    assert_eq!(
        call(http, "PUT", "/kv/a", Some(&write), Some(text)).await.0,
        204
    );
    assert_eq!(
        call(http, "DELETE", "/kv/a", Some(&read), None).await.0,
        403
    );
    let (status, _, body) = call(http, "GET", "/kv/a", Some(&read), None).await;
    assert_eq!((status, body.as_str()), (200, "v1"));

    // Cluster views need a reader; the probes need nothing.
    assert_eq!(
        call(http, "GET", "/cluster/members", None, None).await.0,
        401
    );
    assert_eq!(
        call(http, "GET", "/cluster/members", Some(&read), None)
            .await
            .0,
        200
    );
    assert_eq!(call(http, "GET", "/metrics", None, None).await.0, 401);
    assert_eq!(call(http, "GET", "/health", None, None).await.0, 200);
    assert_eq!(call(http, "GET", "/ready", None, None).await.0, 200);

    // Admin calls need the admin role, however the path is spelled.
    let json = ("application/json", "{}");
    assert_eq!(
        call(http, "POST", "/cluster/leave", None, Some(json))
            .await
            .0,
        401
    );
    for token in [&read, &write] {
        assert_eq!(
            call(http, "POST", "/cluster/leave", Some(token), Some(json))
                .await
                .0,
            403
        );
        assert_eq!(
            call(http, "GET", "/cluster/%6Beyring", Some(token), None)
                .await
                .0,
            403
        );
    }
    // An admin token still cannot send it as a form.
    let form = ("application/x-www-form-urlencoded", "a=1");
    assert_eq!(
        call(http, "POST", "/cluster/leave", Some(&admin), Some(form))
            .await
            .0,
        400
    );
    let metrics = call(http, "GET", "/metrics", Some(&read), None).await.2;
    for (reason, at_least) in [("no_token", 5), ("unknown_token", 1), ("role", 6)] {
        let line = format!("dnd_http_requests_refused_total{{reason=\"{reason}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in metrics"))
            .parse()
            .unwrap();
        assert!(count >= at_least, "{reason}: {count}");
    }
    // None of the refused leaves was taken; the admin's is.
    // A leave request leaves a permit behind, which the first poll takes.
    let no_leave = tokio::time::timeout(Duration::ZERO, node.leave_requested()).await;
    assert!(no_leave.is_err(), "a refused leave was taken");
    assert_eq!(
        call(http, "POST", "/cluster/leave", Some(&admin), Some(json))
            .await
            .0,
        202
    );
    tokio::time::timeout(Duration::from_secs(5), node.leave_requested())
        .await
        .expect("the admin's leave is taken");
}

/// A network namespace with a veth pair: this host is `HOST_SIDE`, the
/// namespace `NS_SIDE`; removed when dropped.
struct OtherHost {
    name: String,
}

const HOST_SIDE: &str = "10.231.7.1";
const NS_SIDE: &str = "10.231.7.2";

impl OtherHost {
    /// `None` when this machine cannot make one (not root, no `ip`),
    /// unless `DND_REQUIRE_NETNS=1`, which makes that a failure.
    fn create() -> Option<OtherHost> {
        let name = format!("dnd-access-{}", std::process::id());
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let host_if = format!("dnda{}", std::process::id() % 100_000);
        let ns_if = format!("dndb{}", std::process::id() % 100_000);
        let made = ip(&["netns", "add", &name])
            && ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ])
            && ip(&["link", "set", &ns_if, "netns", &name])
            && ip(&["addr", "add", &format!("{HOST_SIDE}/30"), "dev", &host_if])
            && ip(&["link", "set", &host_if, "up"])
            && ip(&[
                "netns",
                "exec",
                &name,
                "ip",
                "addr",
                "add",
                &format!("{NS_SIDE}/30"),
                "dev",
                &ns_if,
            ])
            && ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"])
            && ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        let other = OtherHost { name };
        if made {
            return Some(other);
        }
        drop(other);
        assert!(
            std::env::var("DND_REQUIRE_NETNS").is_err(),
            "DND_REQUIRE_NETNS is set but no network namespace could be made (needs root and iproute2)"
        );
        None
    }

    /// Runs the `dnd` binary inside the namespace: its exit status and
    /// stderr. Off the test's thread, which the nodes in this process need.
    async fn dnd(&self, args: &[&str], token: Option<&str>) -> (bool, String) {
        let mut command = std::process::Command::new("ip");
        command
            .args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_dnd")])
            .args(args)
            .env_remove("DND_TOKEN");
        if let Some(token) = token {
            command.env("DND_TOKEN", token);
        }
        let output = blocking(move || command.output().unwrap()).await;
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[actix_rt::test]
async fn admin_calls_from_another_host_need_a_tokens_file_and_an_admin_token() {
    let Some(other_host) = OtherHost::create() else {
        return;
    };
    let address: std::net::IpAddr = HOST_SIDE.parse().unwrap();
    let open = start_node(|c| c.address = address).await;
    let endpoint = format!("http://{}", open.http_addr);
    // Without tokens, /kv is open to the other host but admin calls are not.
    let (ok, stderr) = other_host
        .dnd(
            &["--endpoint", &endpoint, "remove", "0123456789abcdef"],
            None,
        )
        .await;
    assert!(
        !ok && stderr.contains("only from clients on this node's host"),
        "{stderr}"
    );
    let (ok, stderr) = other_host
        .dnd(&["--endpoint", &endpoint, "leave"], None)
        .await;
    assert!(!ok && stderr.contains("403"), "{stderr}");
    let no_leave = tokio::time::timeout(Duration::ZERO, open.leave_requested()).await;
    assert!(no_leave.is_err(), "a refused leave was taken");
    let http = open.http_addr;
    let metrics = blocking(move || dnd::dev::http_get(http, "/metrics").unwrap().1).await;
    assert!(
        metrics.contains("dnd_http_requests_refused_total{reason=\"not_this_host\"} 2"),
        "{metrics}"
    );

    // With tokens, an admin token is taken from anywhere; a write token is not.
    let (tokens, _read, write, admin) = three_tokens();
    let guarded = start_node(|c| {
        c.address = address;
        c.tokens = Some(tokens);
    })
    .await;
    let endpoint = format!("http://{}", guarded.http_addr);
    let remove = [
        "--endpoint",
        endpoint.as_str(),
        "remove",
        "0123456789abcdef",
    ];
    let (ok, stderr) = other_host.dnd(&remove, Some(&write)).await;
    assert!(
        !ok && stderr.contains("403") && stderr.contains("admin"),
        "{stderr}"
    );
    // Past the door, the call itself answers: no such member.
    let (ok, stderr) = other_host.dnd(&remove, Some(&admin)).await;
    assert!(
        !ok && !stderr.contains("403") && stderr.contains("not found"),
        "{stderr}"
    );
    let (ok, stderr) = other_host
        .dnd(&["--endpoint", &endpoint, "leave"], Some(&admin))
        .await;
    assert!(ok, "{stderr}");
    tokio::time::timeout(Duration::from_secs(5), guarded.leave_requested())
        .await
        .expect("the admin's leave is taken");
}

#[test]
fn token_new_prints_a_token_its_table_accepts_and_append_refuses_a_name_twice() {
    let dir = tempfile::tempdir().unwrap();
    let output = common::dnd_command()
        .args(["token", "new", "ops", "--role", "admin"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (token, table) = stdout.split_once("\n\n").expect("token, blank line, table");
    assert!(token.starts_with("dnd_") && token.len() > 40, "{token}");
    assert!(!table.contains(token), "the table holds only the digest");
    let parsed = TokenTable::from_toml(table).unwrap();
    let entry = parsed.authenticate(token).expect("its table accepts it");
    assert_eq!((entry.name.as_str(), entry.role), ("ops", Role::Admin));

    let file = dir.path().join("tokens.toml");
    let append = |name: &str| {
        common::dnd_command()
            .args(["token", "new", name, "--role", "read", "--append"])
            .arg(&file)
            .output()
            .unwrap()
    };
    let first = append("dash");
    assert!(first.status.success());
    let second = append("dash");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("listed twice"));
    let kept = TokenTable::load(&file).unwrap();
    assert_eq!(kept.len(), 1);
    let token = String::from_utf8(first.stdout).unwrap();
    assert!(kept.authenticate(token.trim()).is_some());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// The README's secured setup, through the binary: a cluster secret, TLS
/// and a tokens file; the admin commands over HTTPS with a token.
#[test]
fn the_secured_setup_runs_end_to_end_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let server = pki.server();
    let secret = dir.path().join("secret");
    let keygen = common::dnd_command().arg("keygen").output().unwrap();
    std::fs::write(&secret, keygen.stdout).unwrap();
    let tokens = dir.path().join("tokens.toml");
    let make_token = |name: &str, role: &str| {
        let out = common::dnd_command()
            .args(["token", "new", name, "--role", role, "--append"])
            .arg(&tokens)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (admin, app) = (make_token("ops", "admin"), make_token("app", "write"));
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let node = DndProcess::spawn(
        &dir.path().join("data"),
        &[
            "--cluster-secret-file",
            &path(&secret),
            "--tls-cert",
            &path(&server.cert),
            "--tls-key",
            &path(&server.key),
            "--tokens-file",
            &path(&tokens),
            "start",
        ],
    );
    let endpoint = format!("https://localhost:{}", node.http_port);
    let ca = pki.ca_path("ca");
    let agent = https_agent(Some(&pki.ca_pem), None);
    eventually_blocking(
        Duration::from_secs(30),
        "the node answers over HTTPS",
        || {
            https_call(&agent, "GET", &format!("{endpoint}/ready"), "")
                .is_ok_and(|r| r.0 == 200)
                .then_some(())
        },
    );
    let put = |token: &str| {
        let request = ureq::http::Request::builder()
            .method("PUT")
            .uri(format!("{endpoint}/kv/greeting"))
            .header("Authorization", format!("Bearer {token}"))
            .body("hello".to_string())
            .unwrap();
        agent.run(request).unwrap().status().as_u16()
    };
    assert_eq!(put(&app), 204);
    assert_eq!(put("dnd_wrong"), 401);

    let admin_command = |args: &[&str], token: &str| {
        common::dnd_command()
            .args(["--endpoint", &endpoint, "--cacert"])
            .arg(&ca)
            .args(args)
            .env("DND_TOKEN", token)
            .output()
            .unwrap()
    };
    let listed = admin_command(&["keyring", "list"], &admin);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        stdout.contains(" ok ") && stdout.contains("primary"),
        "{stdout}"
    );
    let refused = admin_command(&["keyring", "list"], &app);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("role admin"));
    // Without --cacert, the node's certificate is not trusted.
    let untrusted = common::dnd_command()
        .args(["--endpoint", &endpoint, "keyring", "list"])
        .env("DND_TOKEN", &admin)
        .output()
        .unwrap();
    assert!(!untrusted.status.success());

    let left = admin_command(&["leave"], &admin);
    assert!(
        left.status.success(),
        "{}",
        String::from_utf8_lossy(&left.stderr)
    );
    let mut node = node;
    let status = eventually_blocking(Duration::from_secs(30), "the node exits", || {
        node.child.try_wait().unwrap()
    });
    assert!(status.success());
}

#[test]
fn a_node_refuses_to_start_on_a_tokens_file_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[token]]\nname = \"ops\"\nrole = \"root\"\nsha256 = \"00\"\n",
    )
    .unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    for (file, reason) in [
        (bad, "unknown variant"),
        (empty, "no [[token]]"),
        (
            dir.path().join("missing.toml"),
            "cannot read the tokens file",
        ),
    ] {
        let output = common::dnd_command()
            .args(["--storage", "memory", "--tokens-file"])
            .arg(&file)
            .args(["--port", &common::free_port().to_string()])
            .args(["--server-port", &common::free_port().to_string()])
            .arg("start")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", file.display());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(reason), "{}: {stderr}", file.display());
    }
}
