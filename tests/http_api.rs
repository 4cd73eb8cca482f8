//! The public HTTP API of a single node, including every kind of bad input.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use actix_web::http::StatusCode;
use bytes::Bytes;
use common::{client, start_disk_node, start_node, url};
use futures_util::stream;
use serde_json::Value;

async fn error_of(
    response: &mut awc::ClientResponse<
        impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
    >,
) -> String {
    let body: Value = response.json().await.expect("a JSON error body");
    body["error"]
        .as_str()
        .expect("an error message")
        .to_string()
}

#[actix_rt::test]
async fn the_seed_example_round_trips_with_its_content_type() {
    let node = start_node(|_| {}).await;
    let http = client();
    let put = http
        .post(url(&node, "/kv/user1"))
        .insert_header(("content-type", "application/x-www-form-urlencoded"))
        .send_body(r#"{"name": "Jack"}"#)
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);

    let mut get = http.get(url(&node, "/kv/user1")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(
        get.headers().get("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(get.body().await.unwrap(), r#"{"name": "Jack"}"#);
}

#[actix_rt::test]
async fn a_put_with_the_last_context_replaces_and_delete_removes() {
    let node = start_node(|_| {}).await;
    let http = client();
    let mut context: Option<String> = None;
    for (value, content_type) in [("one", "text/plain"), ("two", "application/json")] {
        let mut put = http
            .put(url(&node, "/kv/k"))
            .insert_header(("content-type", content_type));
        if let Some(context) = &context {
            put = put.insert_header(("x-dnd-context", context.clone()));
        }
        let r = put.send_body(value).await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        context = r
            .headers()
            .get("x-dnd-context")
            .map(|v| v.to_str().unwrap().to_string());
    }
    let mut get = http.get(url(&node, "/kv/k")).send().await.unwrap();
    assert_eq!(
        get.headers().get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(get.body().await.unwrap(), "two");

    let del = http.delete(url(&node, "/kv/k")).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let mut gone = http.get(url(&node, "/kv/k")).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert!(
        gone.headers().contains_key("x-dnd-context"),
        "a 404 carries a context too"
    );
    assert_eq!(error_of(&mut gone).await, "key not found");

    let again = http.delete(url(&node, "/kv/k")).send().await.unwrap();
    assert_eq!(
        again.status(),
        StatusCode::NO_CONTENT,
        "deletes are idempotent"
    );
}

#[actix_rt::test]
async fn a_value_without_content_type_is_served_as_octet_stream() {
    let node = start_node(|_| {}).await;
    let http = client();
    http.put(url(&node, "/kv/raw"))
        .send_body(vec![0u8, 159, 146, 150])
        .await
        .unwrap();
    let mut get = http.get(url(&node, "/kv/raw")).send().await.unwrap();
    assert_eq!(
        get.headers().get("content-type").unwrap(),
        "application/octet-stream"
    );
    assert_eq!(get.body().await.unwrap(), &[0u8, 159, 146, 150][..]);
}

#[actix_rt::test]
async fn keys_are_percent_decoded_path_segments() {
    let node = start_node(|_| {}).await;
    let http = client();
    http.put(url(&node, "/kv/a%2Fb%20c"))
        .send_body("slash")
        .await
        .unwrap();
    let mut same = http.get(url(&node, "/kv/a%2fb%20c")).send().await.unwrap();
    assert_eq!(
        same.status(),
        StatusCode::OK,
        "escapes decode whatever their case"
    );
    assert_eq!(same.body().await.unwrap(), "slash");

    http.put(url(&node, "/kv/caf%C3%A9"))
        .send_body("utf8")
        .await
        .unwrap();
    let mut utf8 = http.get(url(&node, "/kv/caf%C3%A9")).send().await.unwrap();
    assert_eq!(utf8.body().await.unwrap(), "utf8");

    let mut invalid = http.get(url(&node, "/kv/%FF%FE")).send().await.unwrap();
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    assert!(error_of(&mut invalid).await.contains("UTF-8"));
}

#[actix_rt::test]
async fn empty_and_over_long_keys_are_refused() {
    let node = start_node(|_| {}).await;
    let http = client();
    for path in ["/kv/", "/kv"] {
        let mut r = http.put(url(&node, path)).send_body("x").await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(error_of(&mut r).await, "the key is empty");
    }
    let longest = "k".repeat(1024);
    let ok = http
        .put(url(&node, &format!("/kv/{longest}")))
        .send_body("x")
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);

    let too_long = "k".repeat(1025);
    let mut r = http
        .put(url(&node, &format!("/kv/{too_long}")))
        .send_body("x")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::URI_TOO_LONG);
    assert!(error_of(&mut r).await.contains("1025 bytes"));
    let get = http
        .get(url(&node, &format!("/kv/{too_long}")))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::URI_TOO_LONG);
}

#[actix_rt::test]
async fn oversized_values_get_413_and_change_nothing() {
    let node = start_node(|c| c.max_value_bytes = 1000).await;
    let http = client();
    http.put(url(&node, "/kv/k"))
        .send_body("before")
        .await
        .unwrap();

    let mut declared = http
        .put(url(&node, "/kv/k"))
        .send_body(vec![b'x'; 1001])
        .await
        .unwrap();
    assert_eq!(declared.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&mut declared).await.contains("1000 bytes"));

    // Chunked, so the size is only discovered while reading.
    let chunks =
        stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 300]))));
    let streamed = http
        .put(url(&node, "/kv/k"))
        .send_stream(chunks)
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let mut get = http.get(url(&node, "/kv/k")).send().await.unwrap();
    assert_eq!(get.body().await.unwrap(), "before");

    let at_limit = http
        .put(url(&node, "/kv/k"))
        .send_body(vec![b'z'; 1000])
        .await
        .unwrap();
    assert_eq!(at_limit.status(), StatusCode::NO_CONTENT);
}

#[actix_rt::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let node = start_node(|_| {}).await;
    let http = client();
    let mut r = http.get(url(&node, "/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_of(&mut r).await, "no such route");

    let mut r = http.patch(url(&node, "/kv/k")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_of(&mut r).await, "method not allowed here");
}

/// Sends raw bytes on a fresh connection and returns what comes back.
async fn raw_exchange(addr: std::net::SocketAddr, request: &'static [u8]) -> String {
    actix_rt::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).to_string()
    })
    .await
    .unwrap()
}

#[actix_rt::test]
async fn a_content_type_that_is_not_ascii_is_refused() {
    let node = start_node(|_| {}).await;
    let reply = raw_exchange(
        node.http_addr,
        b"PUT /kv/x HTTP/1.1\r\nHost: a\r\nContent-Type: caf\xe9\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.contains("Content-Type header is not visible ASCII"),
        "{reply}"
    );
    let get = client().get(url(&node, "/kv/x")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::NOT_FOUND, "nothing was stored");
}

#[actix_rt::test]
async fn health_and_metrics_answer() {
    let node = start_node(|_| {}).await;
    let http = client();
    let mut health = http.get(url(&node, "/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["node_id"], node.id.to_string());

    http.put(url(&node, "/kv/k")).send_body("v").await.unwrap();
    let mut metrics = http.get(url(&node, "/metrics")).send().await.unwrap();
    let text = String::from_utf8(metrics.body().await.unwrap().to_vec()).unwrap();
    assert!(
        text.contains("dnd_kv_requests_total{op=\"put\"} 1"),
        "{text}"
    );
}

#[actix_rt::test]
async fn malformed_http_gets_an_error_and_the_node_keeps_serving() {
    let node = start_node(|_| {}).await;
    let garbage: [&'static [u8]; 3] = [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /kv/x HTTP/1.1\r\nContent-Length: banana\r\n\r\n",
        b"\x00\xff\x13\x37\r\n\r\n",
    ];
    for request in garbage {
        let reply = raw_exchange(node.http_addr, request).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    }
    let http = client();
    let ok = http
        .put(url(&node, "/kv/after"))
        .send_body("fine")
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
}

#[actix_rt::test]
async fn the_disk_engine_keeps_data_and_identity_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_disk_node(dir.path()).await;
    let id = first.id;
    let http = client();
    let r = http
        .put(format!("http://{}/kv/durable", first.http_addr))
        .insert_header(("content-type", "text/plain"))
        .send_body("still here")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    first.stop().await;

    let second = start_disk_node(dir.path()).await;
    assert_eq!(second.id, id, "a restart keeps the node id");
    let mut get = http
        .get(format!("http://{}/kv/durable", second.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.headers().get("content-type").unwrap(), "text/plain");
    assert_eq!(get.body().await.unwrap(), "still here");
    second.stop().await;
}

#[actix_rt::test]
async fn a_node_behind_on_its_work_sheds_what_it_cannot_queue_and_answers_every_request_in_time() {
    use dnd::actors::fault::{Fault, InjectFault};
    use std::time::Instant;
    let timeout = Duration::from_secs(2);
    let node = start_node(|c| {
        c.max_waiting_requests = 4;
        c.request_timeout = timeout;
    })
    .await;
    // The Store is busy for 1.5 s: whatever needs it waits or is shed.
    node.store
        .do_send(InjectFault(Fault::Stall(Duration::from_millis(1500))));
    let started = Instant::now();
    let asked = (0..40).map(|i| {
        let url = url(&node, &format!("/kv/k{i}"));
        async move {
            let answer = client().get(url).send().await.expect("an answer");
            let retry = answer
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (answer.status().as_u16(), retry, started.elapsed())
        }
    });
    let answers = futures_util::future::join_all(asked).await;
    let shed: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == 503)
        .collect();
    let served = answers.iter().filter(|(status, ..)| *status == 404).count();
    assert_eq!(
        shed.len() + served,
        40,
        "served or shed, nothing else: {answers:?}"
    );
    assert!((1..=4).contains(&served), "at most 4 may wait: {answers:?}");
    for (_, retry, after) in &shed {
        assert_eq!(
            retry.as_deref(),
            Some("1"),
            "a shed request says when to retry"
        );
        assert!(
            *after < Duration::from_millis(1000),
            "shed at once, not after waiting: {after:?}"
        );
    }
    for (_, _, after) in &answers {
        assert!(
            *after < timeout + Duration::from_secs(1),
            "answered within the request timeout: {after:?}"
        );
    }
    assert_eq!(node.metrics.http_requests_shed.get(), shed.len() as u64);
    let mut after = client().get(url(&node, "/kv/k0")).send().await.unwrap();
    assert_eq!(
        after.status(),
        StatusCode::NOT_FOUND,
        "{:?}",
        after.body().await
    );
}
