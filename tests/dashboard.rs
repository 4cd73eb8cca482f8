//! The dashboard at `/ui`, in a real browser: headless Chromium driven
//! through chromedriver (WebDriver, fantoccini) against three real `dnd`
//! processes. The page lists the members and sees one die, resolves
//! siblings with "keep this one" (checked through the API afterwards),
//! charts the request histogram, says so when its figures are stale, and
//! asks for a token where the node takes none without one. Its files are
//! served with the headers that keep them to their own origin.
//!
//! Without chromedriver and Chromium the browser tests skip, unless
//! `DND_REQUIRE_BROWSER=1` (CI), when they fail.

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::{get, put};
use common::{client, eventually, eventually_blocking, free_port, start_node, DndProcess};
use dnd::dev::{DevCluster, DevOptions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// The DOM changes within a refresh or two (2 s each).
const PAGE: Duration = Duration::from_secs(20);
/// SWIM's suspicion, even with a short protocol period, takes a while.
const DEATH: Duration = Duration::from_secs(90);
const START: Duration = Duration::from_secs(30);
const HISTOGRAM: &str = "dnd_http_request_duration_seconds_bucket";

/// The browser tests take two cores' worth of Chromium each: one at a time.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Short SWIM periods so a killed node is declared dead in seconds.
const NODE_ARGS: &[&str] = &[
    "--replicas",
    "3",
    "--read-quorum",
    "2",
    "--write-quorum",
    "2",
    "--protocol-period-ms",
    "200",
    "--replica-timeout-ms",
    "300",
    "--hint-interval-ms",
    "100",
];

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// chromedriver and the browser it drives, or `None` (after saying why)
/// when this machine has none and the run does not require one.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let driver = on_path("chromedriver");
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| on_path(name));
    match (driver, browser) {
        (Some(driver), Some(browser)) => Some((driver, browser)),
        (driver, browser) => {
            let missing = match (driver, browser) {
                (None, None) => "chromedriver and chromium",
                (None, Some(_)) => "chromedriver",
                _ => "chromium",
            };
            assert!(
                std::env::var("DND_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "DND_REQUIRE_BROWSER=1 but PATH lacks {missing} (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: PATH lacks {missing} (apt-get install chromium chromium-driver)");
            None
        }
    }
}

/// A chromedriver process and the browser session it runs. Dropping it
/// ends the session (Chromium quits) and then chromedriver, so a failing
/// test leaves neither behind.
struct Browser {
    driver: Child,
    webdriver: SocketAddr,
    session: Option<String>,
    client: Option<Client>,
}

impl Browser {
    async fn start() -> Option<Browser> {
        let (driver_path, browser_path) = browser_programs()?;
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("chromedriver log");
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let webdriver = SocketAddr::from(([127, 0, 0, 1], port));
        let mut browser = Browser {
            driver,
            webdriver,
            session: None,
            client: None,
        };
        eventually_blocking(START, "chromedriver to be ready", || {
            let (status, body) = dnd::dev::http_get(webdriver, "/status")?;
            let body: Value = serde_json::from_str(&body).ok()?;
            (status == 200 && body["value"]["ready"] == true).then_some(())
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": browser_path,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,1500",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://{webdriver}"))
            .await
            .unwrap_or_else(|e| {
                let log = std::fs::read_to_string(log.path()).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                panic!("no browser session: {e}; chromedriver's log ends:\n{tail}")
            });
        browser.session = client.session_id().await.ok().flatten();
        browser.client = Some(client);
        Some(browser)
    }

    fn page(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Ends the session the ordinary way, the guard then stops chromedriver.
    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            if client.close().await.is_ok() {
                self.session = None;
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Asked of chromedriver, which then quits the Chromium it started:
        // killed, it would leave that Chromium running.
        if let Some(session) = self.session.take() {
            let _ = dnd::dev::request(
                self.webdriver,
                "DELETE",
                &format!("/session/{session}"),
                &[],
                b"",
                Duration::from_secs(10),
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn count(page: &Client, css: &str) -> usize {
    page.find_all(Locator::Css(css))
        .await
        .map(|found| found.len())
        .unwrap_or(0)
}

/// Waits until `css` matches exactly `n` elements.
async fn until_count(page: &Client, css: &str, n: usize, deadline: Duration) {
    eventually(deadline, &format!("{n} of `{css}`"), || async move {
        (count(page, css).await == n).then_some(())
    })
    .await;
}

/// Types `text` into the field `field` and clicks `button`, as an
/// operator would.
async fn type_and_submit(page: &Client, field: &str, text: &str, button: &str) {
    page.find(Locator::Css(field))
        .await
        .unwrap_or_else(|e| panic!("no field {field}: {e}"))
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("cannot type into {field}: {e}"));
    page.find(Locator::Css(button))
        .await
        .unwrap_or_else(|e| panic!("no button {button}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {button}: {e}"));
}

/// The visible text of the first element `css` matches, once there is one.
async fn text_of(page: &Client, css: &str) -> String {
    eventually(PAGE, &format!("an element `{css}`"), || async move {
        page.find(Locator::Css(css)).await.ok()?.text().await.ok()
    })
    .await
}

/// A run of `len` consecutive ports free for UDP and TCP on loopback.
fn free_ports(len: u16) -> u16 {
    loop {
        let base = free_port();
        let Some(end) = base.checked_add(len) else {
            continue;
        };
        let free = (base..end).all(|port| {
            UdpSocket::bind(("127.0.0.1", port)).is_ok()
                && TcpListener::bind(("127.0.0.1", port)).is_ok()
        });
        if free {
            return base;
        }
    }
}

fn three_nodes(dir: &Path) -> DevCluster {
    let base = free_ports(6);
    let options = DevOptions {
        binary: env!("CARGO_BIN_EXE_dnd").into(),
        nodes: 3,
        address: std::net::Ipv4Addr::LOCALHOST,
        distinct_addresses: false,
        gossip_port: base,
        http_port: base + 3,
        data_dir: dir.to_path_buf(),
        node_args: NODE_ARGS.iter().map(|s| s.to_string()).collect(),
    };
    let mut cluster = DevCluster::new(options).expect("lay out the cluster");
    cluster.spawn(0).expect("start node 1");
    let first = cluster.nodes[0].http_addr();
    // The others join through it: let it listen first.
    eventually_blocking(START, "node 1 to serve", || {
        dnd::dev::http_get(first, "/health").filter(|(status, _)| *status == 200)
    });
    for i in 1..3 {
        cluster.spawn(i).expect("start a node");
    }
    cluster
        .wait_converged(START)
        .unwrap_or_else(|e| panic!("the cluster did not form: {e}"));
    cluster
}

fn has_histogram(node: SocketAddr) -> bool {
    dnd::dev::http_get(node, "/metrics").is_some_and(|(_, text)| text.contains(HISTOGRAM))
}

#[actix_rt::test]
async fn the_dashboard_follows_the_cluster_and_resolves_siblings_in_a_browser() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let page = browser.page();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = three_nodes(dir.path());
    let http: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.http_addr()).collect();
    let ids: Vec<String> = http
        .iter()
        .map(|&addr| dnd::dev::node_id(addr).expect("a node id"))
        .collect();

    page.goto(&format!("http://{}/ui", http[0]))
        .await
        .expect("open the dashboard");
    for id in &ids {
        until_count(
            page,
            &format!("#members tr[data-node-id=\"{id}\"][data-state=\"alive\"]"),
            1,
            PAGE,
        )
        .await;
    }
    until_count(page, "#members tbody tr", 3, PAGE).await;
    until_count(page, "#health[data-healthy=\"true\"]", 1, PAGE).await;
    assert_eq!(text_of(page, "#verdict").await, "healthy");

    // The page's own quantile arithmetic, run by the browser: linear
    // inside the bucket, the highest finite bound past it, none without
    // observations; every label set but `le` summed.
    let figures = page
        .execute(
            r#"
            const b = (pairs) => pairs.map(([le, count]) => ({ le, count }));
            const parsed = parseHistogram([
              '# TYPE x histogram',
              'x_bucket{route="/kv/{key}",method="GET",le="0.01"} 3',
              'x_bucket{route="/kv/{key}",method="GET",le="+Inf"} 4',
              'x_bucket{route="/cluster/status",method="GET",le="0.01"} 1',
              'x_bucket{route="/cluster/status",method="GET",le="+Inf"} 2',
              'x_count{route="/cluster/status",method="GET"} 2',
            ].join('\n'), 'x');
            return [
              histogramQuantile(0.5, b([[0.005, 0], [0.01, 10], [Infinity, 10]])),
              histogramQuantile(0.99, b([[0.1, 5], [Infinity, 10]])),
              histogramQuantile(0.5, b([[0.1, 0], [Infinity, 0]])),
              parsed.map((x) => [String(x.le), x.count]),
              parseHistogram('y_count 3', 'x'),
            ];
            "#,
            vec![],
        )
        .await
        .expect("run the page's functions");
    let quantile = |i: usize| figures[i].as_f64();
    assert!(
        (quantile(0).expect("a p50") - 0.0075).abs() < 1e-9,
        "{figures}"
    );
    assert_eq!(quantile(1), Some(0.1), "{figures}");
    assert_eq!(figures[2], Value::Null, "{figures}");
    assert_eq!(figures[3], json!([["0.01", 4], ["Infinity", 6]]));
    assert_eq!(figures[4], Value::Null, "no histogram is no histogram");

    // SIGKILL: no leave, so the others must find out by themselves.
    cluster.kill(2);
    let dead = format!(
        "#members tr[data-node-id=\"{}\"][data-state=\"dead\"]",
        ids[2]
    );
    until_count(page, &dead, 1, DEATH).await;
    until_count(page, "#health[data-healthy=\"false\"]", 1, PAGE).await;
    let problems = text_of(page, "#problems").await;
    assert!(
        problems.contains(&ids[2]) && problems.contains("is dead"),
        "{problems}"
    );

    // Two writes that name no context: concurrent, so both are kept.
    assert_eq!(put(http[0], "fruit", "apple").await.status, 204);
    assert_eq!(put(http[1], "fruit", "banana").await.status, 204);
    assert_eq!(get(http[0], "fruit").await.status, 300);

    type_and_submit(page, "#inspect-key", "fruit", "#inspect-form button").await;
    until_count(
        page,
        "#inspect-result[data-status=\"300\"] .sibling",
        2,
        PAGE,
    )
    .await;
    let siblings = page
        .find_all(Locator::Css("#inspect-result .sibling"))
        .await
        .expect("the siblings");
    let mut values = Vec::new();
    let mut banana = None;
    for sibling in siblings {
        let value = sibling
            .find(Locator::Css(".value"))
            .await
            .expect("a value")
            .text()
            .await
            .expect("its text");
        let block = sibling.text().await.expect("the block's text");
        assert!(block.contains("text/plain"), "{block}");
        if value == "banana" {
            banana = Some(sibling.clone());
        }
        values.push(value);
    }
    values.sort();
    assert_eq!(values, ["apple", "banana"]);

    // The node served the page's own requests: the histogram has them.
    if has_histogram(http[0]) {
        // A few scrapes' worth of requests, so the lines have points to join.
        for round in 0..4 {
            for _ in 0..25 {
                assert_eq!(get(http[0], "fruit").await.status, 300);
            }
            let samples = move || async move {
                let found = page
                    .execute(
                        "return Number(document.querySelector('#latency-chart').dataset.samples)",
                        vec![],
                    )
                    .await
                    .ok()?;
                found.as_u64().filter(|&n| n > round).map(|_| ())
            };
            eventually(PAGE, "one more scrape in the charts", samples).await;
        }
        until_count(page, "#latency-chart[data-has-data=\"true\"] svg", 1, PAGE).await;
        until_count(page, "#rate-chart[data-has-data=\"true\"] svg", 1, PAGE).await;
        let lines = count(page, "#latency-chart svg .p50").await;
        assert!(lines > 0, "a p50 line or dot");
    } else {
        let empty = text_of(page, "#latency-chart .chart-empty").await;
        assert_eq!(empty, "no latency data yet");
    }

    let png = page.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    // The README's figure is taken anew only when asked
    // (`DND_UPDATE_SCREENSHOT=1`), so that a test run leaves the checkout
    // as it found it; otherwise the shot goes beside the build.
    let figure = if std::env::var("DND_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/figures/dashboard.png")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png")
    };
    std::fs::write(&figure, &png).expect("save the screenshot");

    banana
        .expect("a sibling with banana")
        .find(Locator::Css("button.keep"))
        .await
        .expect("its keep button")
        .click()
        .await
        .expect("keep banana");
    until_count(page, "#inspect-result[data-status=\"200\"]", 1, PAGE).await;
    assert_eq!(text_of(page, "#inspect-result .value").await, "banana");
    let read = get(http[0], "fruit").await;
    assert_eq!((read.status, read.text().as_str()), (200, "banana"));

    // The node serving the page goes away: the page must say its figures
    // are old, not go on showing them as current.
    assert_eq!(count(page, "body[data-stale=\"true\"]").await, 0);
    cluster.kill(0);
    until_count(page, "body[data-stale=\"true\"]", 1, PAGE).await;
    until_count(page, "#members-section[data-stale=\"true\"]", 1, PAGE).await;
    let banner = text_of(page, "#stale-banner").await;
    assert!(
        banner.starts_with("refresh failed at ") && banner.contains("figures below are from "),
        "{banner}"
    );
    browser.close().await;
}

#[actix_rt::test]
async fn the_dashboard_asks_for_a_token_where_the_node_needs_one() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let page = browser.page();
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = dir.path().join("tokens.toml");
    let made = common::dnd_command()
        .args(["token", "new", "viewer", "--role", "read", "--append"])
        .arg(&tokens)
        .output()
        .expect("run dnd token new");
    assert!(made.status.success());
    let token = String::from_utf8(made.stdout)
        .expect("a token")
        .trim()
        .to_string();
    let tokens = tokens.to_str().expect("a UTF-8 path").to_string();
    let node = DndProcess::spawn(
        &dir.path().join("data"),
        &["--tokens-file", &tokens, "start"],
    );
    eventually(START, "the node to serve", || async {
        let response = client().get(node.http("/health")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;

    page.goto(&node.http("/ui"))
        .await
        .expect("open the dashboard");
    until_count(page, "#token-form:not([hidden])", 1, PAGE).await;
    assert_eq!(
        count(page, "#members tbody tr").await,
        0,
        "no figures without a token"
    );
    type_and_submit(
        page,
        "#token-input",
        "dnd_not-a-token",
        "#token-form button",
    )
    .await;
    // Refused: asked again, and still no figures.
    until_count(page, "#token-form:not([hidden])", 1, PAGE).await;
    eventually(PAGE, "the prompt to say the token was refused", || async {
        text_of(page, "#token-reason")
            .await
            .contains("refused")
            .then_some(())
    })
    .await;
    assert_eq!(count(page, "#members tbody tr").await, 0);

    type_and_submit(page, "#token-input", &token, "#token-form button").await;
    until_count(page, "#members tr[data-state=\"alive\"]", 1, PAGE).await;
    until_count(page, "#token-form[hidden]", 1, PAGE).await;
    let kept = page
        .execute("return sessionStorage.getItem('dnd-token')", vec![])
        .await
        .expect("read sessionStorage");
    assert_eq!(kept, json!(token));
    browser.close().await;
}

#[actix_rt::test]
async fn the_dashboard_files_come_with_their_types_and_a_policy_that_keeps_them_to_this_origin() {
    let node = start_node(|_| {}).await;
    let base = format!("http://{}", node.http_addr);
    for (path, content_type, needle) in [
        ("/ui", "text/html; charset=utf-8", "src=\"/ui/app.js\""),
        ("/ui/", "text/html; charset=utf-8", "href=\"/ui/style.css\""),
        (
            "/ui/app.js",
            "text/javascript; charset=utf-8",
            "function histogramQuantile",
        ),
        ("/ui/style.css", "text/css; charset=utf-8", "data-stale"),
    ] {
        let mut response = client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(header("content-type"), content_type, "{path}");
        assert_eq!(
            header("content-security-policy"),
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        let body = response.body().await.expect("a body");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(needle), "{path} lacks {needle}");
    }
    // The policy allows no inline script or style: the page has none.
    let mut index = client()
        .get(format!("{base}/ui"))
        .send()
        .await
        .expect("index");
    let html = String::from_utf8(index.body().await.expect("a body").to_vec()).expect("UTF-8");
    assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains("<style"));
    for handler in ["onclick=", "onsubmit=", "onload="] {
        assert!(!html.contains(handler), "an inline {handler} handler");
    }

    for path in ["/ui/nothing.js", "/ui/app.js/x", "/uix"] {
        let response = client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 404, "{path}");
    }
}
