//! Beyond single keys, as clients use them: paged listings (also while a
//! node is down, while one joins and under concurrent writes), TTL,
//! conditional writes, batches, watches and the list of conflicts, and
//! every kind of bad input they can send.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{eventually, lists_alive, start_node};
use dnd::config::StorageKind;
use serde_json::{json, Value};

/// One answer, as a client sees it.
struct Answer {
    status: u16,
    headers: awc::http::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    fn context(&self) -> Option<String> {
        self.header("x-dnd-context")
    }
}

async fn send(
    method: &str,
    http: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let url = format!("http://{http}{path}");
    let c = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut builder = match method {
        "GET" => c.get(url),
        "PUT" => c.put(url),
        "POST" => c.post(url),
        "DELETE" => c.delete(url),
        other => panic!("no method {other}"),
    };
    for (name, value) in headers {
        builder = builder.insert_header((*name, *value));
    }
    let mut response = match body {
        Some(body) => builder.send_body(body.to_string()).await,
        None => builder.send().await,
    }
    .expect("the node answers");
    let body = response
        .body()
        .limit(64 << 20)
        .await
        .expect("a body")
        .to_vec();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body,
    }
}

/// `POST /kv/_batch` with `body`, as JSON.
async fn batch(http: SocketAddr, body: &Value) -> Answer {
    let json_body = [("content-type", "application/json")];
    send(
        "POST",
        http,
        "/kv/_batch",
        &json_body,
        Some(&body.to_string()),
    )
    .await
}

async fn put(http: SocketAddr, key: &str, value: &str) -> Answer {
    send("PUT", http, &format!("/kv/{key}"), &[], Some(value)).await
}

/// Follows `next` from the start, as a client would; panics on a page
/// that is not 200. Returns every key listed, in the order listed.
async fn list_all(http: SocketAddr, query: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/kv?{query}");
        if let Some(after) = &after {
            path.push_str("&start_after=");
            path.push_str(
                &percent_encoding::utf8_percent_encode(after, percent_encoding::NON_ALPHANUMERIC)
                    .to_string(),
            );
        }
        let page = send("GET", http, &path, &[], None).await;
        assert_eq!(
            page.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&page.body)
        );
        let body = page.json();
        for key in body["keys"].as_array().expect("keys") {
            keys.push(key.as_str().expect("a key").to_string());
        }
        match body["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return keys,
        }
    }
}

fn assert_each_once_in_order(listed: &[String]) {
    for pair in listed.windows(2) {
        assert!(pair[0] < pair[1], "out of order or twice: {pair:?}");
    }
}

#[actix_rt::test]
async fn pages_list_every_live_key_once_in_order_and_hide_deleted_ones() {
    let node = start_node(|_| {}).await;
    let http = node.http_addr;
    // Several clients create keys at once, as real ones do.
    let writers = (0..4).map(|w| async move {
        for i in 0..60 {
            let key = format!("user{:03}", i * 4 + w);
            assert_eq!(put(http, &key, &key).await.status, 204);
        }
    });
    futures_util::future::join_all(writers).await;
    for key in ["other1", "other2"] {
        assert_eq!(put(http, key, "x").await.status, 204);
    }
    for i in (0..240).step_by(10) {
        let deleted = send("DELETE", http, &format!("/kv/user{i:03}"), &[], None).await;
        assert_eq!(deleted.status, 204);
    }
    let expected: Vec<String> = (0..240)
        .filter(|i| i % 10 != 0)
        .map(|i| format!("user{i:03}"))
        .collect();
    let listed = list_all(http, "prefix=user&limit=7").await;
    assert_each_once_in_order(&listed);
    assert_eq!(listed, expected);
    let everything = list_all(http, "limit=1000").await;
    assert_eq!(everything.len(), expected.len() + 2);
    // A page with values shows each as a GET would.
    let page = send("GET", http, "/kv?prefix=user00&values=true", &[], None).await;
    let body = page.json();
    let items = body["items"].as_array().expect("items");
    assert_eq!(body["keys"].as_array().unwrap().len(), items.len());
    let first = &items[0];
    assert_eq!(first["key"], "user001");
    assert_eq!(first["value"], "user001");
    assert_eq!(first["status"], 200);
    assert!(first["context"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(body["next"], Value::Null);
}

#[actix_rt::test]
async fn conflicts_lists_only_keys_with_siblings() {
    let node = start_node(|_| {}).await;
    let http = node.http_addr;
    for key in ["a", "b", "c"] {
        assert_eq!(put(http, key, "one").await.status, 204);
    }
    // Two blind writes of `b`: siblings.
    assert_eq!(put(http, "b", "two").await.status, 204);
    let listed = list_all(http, "conflicts=true").await;
    assert_eq!(listed, ["b"]);
    let page = send("GET", http, "/kv?conflicts=true&values=true", &[], None).await;
    let siblings = page.json()["items"][0]["siblings"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(siblings, 2);
}

#[actix_rt::test]
async fn listing_bad_parameters_get_400_naming_the_parameter() {
    let node = start_node(|_| {}).await;
    let http = node.http_addr;
    let long = "x".repeat(1025);
    for (path, param) in [
        ("/kv?limit=0".to_string(), "limit"),
        ("/kv?limit=1001".to_string(), "limit"),
        ("/kv?limit=many".to_string(), "limit"),
        (format!("/kv?start_after={long}"), "start_after"),
        (format!("/kv?prefix={long}"), "prefix"),
        ("/kv?values=1".to_string(), "values"),
        ("/kv?r=9".to_string(), "r"),
        ("/kv/k?ttl=0".to_string(), "ttl"),
        ("/kv/k?wait=%21%21".to_string(), "wait"),
        ("/kv/k?wait=&timeout=301".to_string(), "timeout"),
        ("/kv/k?wait=&timeout=soon".to_string(), "timeout"),
    ] {
        let answer = send("GET", http, &path, &[], None).await;
        assert_eq!(answer.status, 400, "{path}");
        assert_eq!(answer.json()["parameter"], param, "{path}");
    }
    let ttl = send("PUT", http, "/kv/k?ttl=-5", &[], Some("v")).await;
    assert_eq!(
        (ttl.status, ttl.json()["parameter"].clone()),
        (400, json!("ttl"))
    );
    assert_eq!(
        send("GET", http, "/kv/k", &[], None).await.status,
        404,
        "nothing stored"
    );
    assert_eq!(
        send("DELETE", http, "/kv", &[], None).await.status,
        400,
        "no key"
    );
}

#[actix_rt::test]
async fn an_expired_value_is_gone_at_once_from_reads_and_listings() {
    let node = start_node(|_| {}).await;
    let http = node.http_addr;
    assert_eq!(
        send("PUT", http, "/kv/brief?ttl=1", &[], Some("soon gone"))
            .await
            .status,
        204
    );
    assert_eq!(
        send("PUT", http, "/kv/long?ttl=3600", &[], Some("stays"))
            .await
            .status,
        204
    );
    assert_eq!(put(http, "forever", "v").await.status, 204);
    let read = send("GET", http, "/kv/brief", &[], None).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("x-dnd-ttl").as_deref(), Some("1"));
    let long = send("GET", http, "/kv/long", &[], None).await;
    let left: u64 = long.header("x-dnd-ttl").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&left), "{left}");
    assert_eq!(
        send("GET", http, "/kv/forever", &[], None)
            .await
            .header("x-dnd-ttl"),
        None
    );
    let written_at = Instant::now();
    let gone = eventually(Duration::from_secs(5), "the value to expire", || async {
        let read = send("GET", http, "/kv/brief", &[], None).await;
        (read.status == 404).then_some(read)
    })
    .await;
    assert!(written_at.elapsed() < Duration::from_millis(2500));
    // The 404 carries the context, so a write with it replaces the
    // expired version rather than joining it.
    let context = gone.context().expect("a context");
    let again = send(
        "PUT",
        http,
        "/kv/brief",
        &[("x-dnd-context", &context)],
        Some("new"),
    )
    .await;
    assert_eq!(again.status, 204);
    assert_eq!(send("GET", http, "/kv/brief", &[], None).await.body, b"new");
    assert_eq!(list_all(http, "").await, ["brief", "forever", "long"]);
    send("PUT", http, "/kv/brief2?ttl=1", &[], Some("x")).await;
    eventually(Duration::from_secs(5), "the listing to hide it", || async {
        (!list_all(http, "").await.contains(&"brief2".to_string())).then_some(())
    })
    .await;
}

#[actix_rt::test]
async fn conditional_writes_create_once_and_replace_only_what_was_read() {
    let node = start_node(|_| {}).await;
    let http = node.http_addr;
    let create = [("if-none-match", "*")];
    assert_eq!(
        send("PUT", http, "/kv/lock", &create, Some("first"))
            .await
            .status,
        204
    );
    let second = send("PUT", http, "/kv/lock", &create, Some("second")).await;
    assert_eq!(second.status, 412);
    let current = second.context().expect("the current context");
    assert_eq!(second.json()["context"], current.as_str());
    assert_eq!(
        send("GET", http, "/kv/lock", &[], None).await.body,
        b"first"
    );

    let read = send("GET", http, "/kv/lock", &[], None).await;
    let seen = read.context().unwrap();
    // Someone else writes in between: the If-Match write is refused.
    let other = send(
        "PUT",
        http,
        "/kv/lock",
        &[("x-dnd-context", &seen)],
        Some("other"),
    )
    .await;
    assert_eq!(other.status, 204);
    let late = send(
        "PUT",
        http,
        "/kv/lock",
        &[("if-match", &seen)],
        Some("mine"),
    )
    .await;
    assert_eq!(late.status, 412);
    let now = late.context().unwrap();
    let on_time = send("PUT", http, "/kv/lock", &[("if-match", &now)], Some("mine")).await;
    assert_eq!(on_time.status, 204);
    assert_eq!(send("GET", http, "/kv/lock", &[], None).await.body, b"mine");

    // After a delete, a create goes through again.
    send("DELETE", http, "/kv/lock", &[], None).await;
    assert_eq!(
        send("PUT", http, "/kv/lock", &create, Some("again"))
            .await
            .status,
        204
    );
    // A conditional delete.
    let stale = send("DELETE", http, "/kv/lock", &[("if-match", &now)], None).await;
    assert_eq!(stale.status, 412);

    for headers in [
        vec![("if-match", "!!")],
        vec![("if-none-match", "abc")],
        vec![("if-none-match", "*"), ("if-match", "")],
        vec![("if-none-match", "*"), ("x-dnd-context", "")],
    ] {
        let refused = send("PUT", http, "/kv/fresh", &headers, Some("x")).await;
        assert_eq!(refused.status, 400, "{headers:?}");
    }
    assert_eq!(send("GET", http, "/kv/fresh", &[], None).await.status, 404);
}

#[actix_rt::test]
async fn a_batch_answers_each_operation_and_a_bad_one_applies_nothing() {
    let node = start_node(|_| {}).await;
    let http = node.http_addr;
    let json_body = [("content-type", "application/json")];
    let body = json!({"ops": [
        {"op": "put", "key": "a", "value": "one"},
        {"op": "put", "key": "b", "value_base64": "AP8=", "content_type": "application/x-bin", "ttl": 60},
        {"op": "get", "key": "a"},
        {"op": "get", "key": "missing"},
        {"op": "delete", "key": "a"},
        {"op": "get", "key": "a"},
        {"op": "get", "key": "b"},
    ]});
    let answer = batch(http, &body).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let results = answer.json()["results"].as_array().unwrap().clone();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    // Operations run at once; the get and delete of `a` may see the put or not.
    assert_eq!(statuses[0], 204);
    assert_eq!(statuses[1], 204);
    assert_eq!(statuses[3], 404);
    assert!(
        results[3]["context"].is_string(),
        "a 404 carries a context too"
    );
    assert_eq!(results[6]["value_base64"], "AP8=");
    assert_eq!(results[6]["content_type"], "application/x-bin");
    assert!(results[6]["ttl"].as_u64().is_some_and(|t| t <= 60));
    // Writing back the context a batch gave replaces.
    let context = results[0]["context"].as_str().unwrap();
    let replace = json!({"ops": [{"op": "put", "key": "c", "value": "x"}, {"op": "put", "key": "a", "value": "two", "context": context}]});
    let replaced = batch(http, &replace).await;
    assert_eq!(replaced.status, 200);

    // A malformed operation anywhere: 400, and nothing applied.
    for bad in [
        json!({"ops": [{"op": "put", "key": "n1", "value": "x"}, {"op": "put", "key": "_n2", "value": "x"}]}),
        json!({"ops": [{"op": "put", "key": "n1", "value": "x"}, {"op": "get", "key": "n2", "value": "x"}]}),
        json!({"ops": [{"op": "put", "key": "n1", "value": "x"}, {"op": "put", "key": "n2"}]}),
        json!({"ops": [{"op": "put", "key": "n1", "value": "x"}, {"op": "put", "key": "n2", "value": "x", "ttl": 0}]}),
        json!({"ops": [{"op": "put", "key": "n1", "value": "x"}, {"op": "put", "key": "n2", "value": "x", "context": "!!"}]}),
        json!({"ops": [{"op": "put", "key": "n1", "value": "x"}, {"op": "merge", "key": "n2"}]}),
        json!({"ops": [{"op": "put", "key": "n1", "value": "x", "extra": 1}]}),
        json!({"operations": []}),
    ] {
        let refused = batch(http, &bad).await;
        assert_eq!(refused.status, 400, "{bad}");
        assert!(refused.json()["error"].is_string());
    }
    let truncated = send("POST", http, "/kv/_batch", &json_body, Some("{\"ops\": [")).await;
    assert_eq!(truncated.status, 400);
    assert_eq!(
        send("GET", http, "/kv/n1", &[], None).await.status,
        404,
        "nothing applied"
    );
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"op": "get", "key": format!("k{i}")}))
        .collect();
    let over = batch(http, &json!({"ops": too_many})).await;
    assert_eq!(over.status, 413);
    assert_eq!(send("GET", http, "/kv/_batch", &[], None).await.status, 405);
    for reserved in ["/kv/_batch2", "/kv/_", "/kv/%5Fx"] {
        assert_eq!(
            send("PUT", http, reserved, &[], Some("x")).await.status,
            400,
            "{reserved}"
        );
    }
}

#[actix_rt::test]
async fn a_watch_answers_when_the_key_changes_or_304_at_its_timeout() {
    let node = start_node(|_| {}).await;
    let http = node.http_addr;
    let absent = send("GET", http, "/kv/w", &[], None).await;
    assert_eq!(absent.status, 404);
    let seen = absent.context().expect("a 404 has a context");
    let started = Instant::now();
    let quiet = send(
        "GET",
        http,
        &format!("/kv/w?wait={seen}&timeout=1"),
        &[],
        None,
    )
    .await;
    assert_eq!(quiet.status, 304);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(quiet.context().as_deref(), Some(seen.as_str()));

    let watch = actix_rt::spawn(async move {
        send(
            "GET",
            http,
            &format!("/kv/w?wait={seen}&timeout=60"),
            &[],
            None,
        )
        .await
    });
    // The watch is open (the gauge says so) before the write.
    eventually(Duration::from_secs(5), "the watch to be open", || async {
        let metrics = send("GET", http, "/metrics", &[], None).await;
        String::from_utf8_lossy(&metrics.body)
            .contains("dnd_kv_watches_open 1")
            .then_some(())
    })
    .await;
    let written_at = Instant::now();
    assert_eq!(put(http, "w", "news").await.status, 204);
    let answered = watch.await.unwrap();
    assert_eq!(answered.status, 200);
    assert_eq!(answered.body, b"news");
    assert!(written_at.elapsed() < Duration::from_secs(5));
    // A context that is already behind answers at once.
    let stale = send("GET", http, "/kv/w?wait=&timeout=60", &[], None).await;
    assert_eq!(stale.status, 200);
    // A deletion is news too.
    let now = answered.context().unwrap();
    let deletion = actix_rt::spawn(async move {
        send(
            "GET",
            http,
            &format!("/kv/w?wait={now}&timeout=60"),
            &[],
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    send("DELETE", http, "/kv/w", &[], None).await;
    assert_eq!(deletion.await.unwrap().status, 404);

    // A client that gives up on its watch leaves no watch behind.
    let impatient = awc::Client::builder()
        .timeout(Duration::from_millis(500))
        .finish();
    let gave_up = impatient
        .get(format!("http://{http}/kv/quiet?wait=&timeout=300"))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out first");
    eventually(
        Duration::from_secs(5),
        "the abandoned watch to close",
        || async {
            let metrics = send("GET", http, "/metrics", &[], None).await;
            String::from_utf8_lossy(&metrics.body)
                .contains("dnd_kv_watches_open 0")
                .then_some(())
        },
    )
    .await;
}

/// On every node of a cluster, those that are homes of the key and the
/// one that is not: each watch hears of a write made through another node.
#[actix_rt::test]
async fn a_watch_on_any_node_hears_of_a_write_through_another() {
    let cluster = Cluster::start(4, StorageKind::Memory).await;
    let https: Vec<SocketAddr> = cluster.running().map(|s| s.http()).collect();
    let watches: Vec<_> = https
        .iter()
        .map(|&http| {
            actix_rt::spawn(async move {
                send("GET", http, "/kv/watched?wait=&timeout=60", &[], None).await
            })
        })
        .collect();
    eventually(Duration::from_secs(5), "every watch to be open", || async {
        for &http in &https {
            let metrics = send("GET", http, "/metrics", &[], None).await;
            if !String::from_utf8_lossy(&metrics.body).contains("dnd_kv_watches_open 1") {
                return None;
            }
        }
        Some(())
    })
    .await;
    let written_at = Instant::now();
    assert_eq!(put(https[0], "watched", "hello").await.status, 204);
    for watch in watches {
        let answer = watch.await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, b"hello");
    }
    assert!(written_at.elapsed() < Duration::from_secs(10));
}

#[actix_rt::test]
async fn listings_stay_whole_while_a_node_is_down_and_refuse_when_too_few_answer() {
    let mut cluster = Cluster::start(3, StorageKind::Memory).await;
    let http = cluster.slots[0].http();
    let expected: Vec<String> = (0..150).map(|i| format!("k{i:04}")).collect();
    for key in &expected {
        assert_eq!(put(http, key, key).await.status, 204);
    }
    cluster.stop(2).await;
    let listed = list_all(http, "limit=40").await;
    assert_eq!(listed, expected, "one node down of three");
    cluster.stop(1).await;
    let refused = send("GET", http, "/kv?limit=10", &[], None).await;
    assert_eq!(
        refused.status, 503,
        "one node of three cannot answer for R=2"
    );
    assert!(refused.json()["replicas_needed"].as_u64().is_some());
    let one = send("GET", http, "/kv?limit=1000&r=1", &[], None).await;
    assert_eq!(one.status, 200, "?r=1 is enough with one node");
}

/// Keys that exist throughout are listed exactly once by every complete
/// listing taken while a node joins (keys moving) and clients keep
/// writing other keys.
#[actix_rt::test]
async fn listings_stay_exact_while_a_node_joins_and_clients_write() {
    let mut cluster = Cluster::start(3, StorageKind::Memory).await;
    let http = cluster.slots[0].http();
    let stable: BTreeSet<String> = (0..400).map(|i| format!("s{i:04}")).collect();
    for key in &stable {
        assert_eq!(put(http, key, "v").await.status, 204);
    }
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = writing.clone();
    let https: Vec<SocketAddr> = cluster.running().map(|s| s.http()).collect();
    let writer = actix_rt::spawn(async move {
        let mut i = 0;
        while flag.load(std::sync::atomic::Ordering::Relaxed) {
            let http = https[i % https.len()];
            put(http, &format!("n{i:05}"), "new").await;
            i += 1;
        }
        i
    });
    let joined = cluster.add_node().await;
    let mut listings = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for slot in cluster.running() {
            let listed = list_all(slot.http(), "limit=97").await;
            assert_each_once_in_order(&listed);
            let found: BTreeSet<String> =
                listed.into_iter().filter(|k| k.starts_with('s')).collect();
            assert_eq!(
                found,
                stable,
                "a listing through {} missed or invented keys",
                slot.http()
            );
            listings += 1;
        }
        // Settled: every node lists the four alive and none hands over.
        let ids = cluster.ids();
        let mut settled = ids.len() == 4;
        for slot in cluster.running() {
            let handoff = send("GET", slot.http(), "/cluster/handoff", &[], None).await;
            settled &= lists_alive(slot.http(), &ids).await && handoff.json()["running"].is_null();
        }
        if (settled && listings >= 8) || Instant::now() > deadline {
            assert!(settled, "the join did not settle in time");
            break;
        }
    }
    let _ = joined;
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(
        written > 0 && listings >= 8,
        "{written} writes, {listings} listings"
    );
}

/// A batch's writes reach every replica of their keys, as single writes
/// do; with a node down they are still acknowledged by the others, and
/// the node gets them once back.
#[actix_rt::test]
async fn a_batch_on_a_cluster_stores_each_write_on_its_replicas_and_catches_up_a_node_down() {
    let mut cluster = Cluster::start_with(3, StorageKind::Disk, |config| {
        config.hint_interval = Duration::from_millis(200);
    })
    .await;
    let http = cluster.slots[0].http();
    let ops: Vec<Value> = (0..200)
        .map(|i| json!({"op": "put", "key": format!("b{i:03}"), "value": format!("v{i}")}))
        .collect();
    let answer = batch(http, &json!({"ops": ops})).await;
    assert_eq!(answer.status, 200);
    let results = answer.json()["results"].as_array().unwrap().clone();
    assert!(results.iter().all(|r| r["status"] == 204), "{results:?}");
    for i in [0, 57, 199] {
        let key = format!("b{i:03}");
        for node in 0..3 {
            assert_eq!(
                cluster.local_values(node, &key).await,
                [format!("v{i}")],
                "{key} on {node}"
            );
        }
    }
    // A write back with a batch's context replaces.
    let context = results[0]["context"].as_str().unwrap();
    let replace =
        json!({"ops": [{"op": "put", "key": "b000", "value": "new", "context": context}]});
    batch(http, &replace).await;
    let read = send("GET", http, "/kv/b000?r=all", &[], None).await;
    assert_eq!((read.status, read.body.clone()), (200, b"new".to_vec()));

    cluster.stop(2).await;
    let ops: Vec<Value> = (0..50)
        .map(|i| json!({"op": "put", "key": format!("d{i:03}"), "value": "while down"}))
        .collect();
    let answer = batch(http, &json!({"ops": ops})).await;
    assert_eq!(answer.status, 200);
    let results = answer.json()["results"].as_array().unwrap().clone();
    assert!(
        results.iter().all(|r| r["status"] == 204),
        "two of three replicas: {results:?}"
    );
    cluster.restart(2).await;
    eventually(
        Duration::from_secs(20),
        "the returned node to get the batch",
        || async {
            for i in 0..50 {
                if cluster.local_values(2, &format!("d{i:03}")).await != ["while down"] {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}
