//! The `dnd` command's client commands (`get`, `put`, `delete`, `keys`,
//! `members`, `ring`, `status`): each sends its requests through
//! [`Client`], prints the answer for people or, with `--json`, as one JSON
//! document, and ends with one of the documented exit codes ([`exit`]).
//!
//! Owns the rendering of answers and the mapping of failures to one line
//! and an exit code ([`Failure`]). It must never decide anything a node
//! decides (which versions win, what is healthy): it shows what the node
//! said.

use std::io::Write;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::client::{path_segment, query_value, Client, ClientError, Reply};

/// The exit codes of the client commands.
pub mod exit {
    pub const OK: u8 = 0;
    /// The key (or member) does not exist.
    pub const NOT_FOUND: u8 = 1;
    /// A malformed argument, endpoint or certificate file; also a request
    /// the node refused as malformed (400).
    pub const USAGE: u8 = 2;
    /// No node answered at the endpoint, or it could not serve the request
    /// now (503: too few replicas answered).
    pub const UNAVAILABLE: u8 = 3;
    /// The node refused the credentials (401) or the role (403).
    pub const REFUSED: u8 = 4;
    /// Any other refusal (a conflict, a condition not met, a value too
    /// large) or error.
    pub const FAILED: u8 = 5;
}

/// Why a command failed: one line for stderr, and its exit code.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match e {
            ClientError::Setup(_) => exit::USAGE,
            ClientError::Unreachable { .. } | ClientError::CutShort { .. } => exit::UNAVAILABLE,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::new(exit::FAILED, format!("cannot write the answer: {e}"))
    }
}

pub type Outcome = Result<(), Failure>;

/// The failure an answer that is not a success stands for: `what` names
/// the request (`GET k`), `endpoint` the node.
pub fn failure_of(endpoint: &str, what: &str, reply: &Reply) -> Failure {
    let said = reply.error_message();
    let body = reply.json().unwrap_or(Value::Null);
    match reply.status {
        401 => Failure::new(
            exit::REFUSED,
            format!(
                "{endpoint} refused {what} (401): no token or an unknown one (give --token or DND_TOKEN)"
            ),
        ),
        403 => Failure::new(exit::REFUSED, format!("{endpoint} refused {what} (403): {said}")),
        404 => Failure::new(exit::NOT_FOUND, format!("{what}: not found")),
        503 => {
            let count = |name: &str| body.get(name).and_then(Value::as_u64);
            let replicas = match (count("replicas_answered"), count("replicas_needed")) {
                // The node's own words may say it already.
                (Some(answered), Some(needed)) if !said.contains(" of the ") => {
                    format!(" ({answered} of the {needed} replicas needed answered)")
                }
                _ => String::new(),
            };
            Failure::new(
                exit::UNAVAILABLE,
                format!("{endpoint} cannot serve {what} now: {said}{replicas}"),
            )
        }
        400 | 414 => Failure::new(
            exit::USAGE,
            format!("{endpoint} refused {what} ({}): {said}", reply.status),
        ),
        status => Failure::new(
            exit::FAILED,
            format!("{endpoint} answered {status} to {what}: {said}"),
        ),
    }
}

/// Where a command writes, and how.
pub struct Printer<'a> {
    pub out: &'a mut dyn Write,
    /// One JSON document instead of text for people.
    pub json: bool,
    /// Standard output is a terminal: a value without a final newline gets
    /// one, so that the prompt does not follow it on its line.
    pub terminal: bool,
}

impl Printer<'_> {
    fn json(&mut self, value: &Value) -> Outcome {
        writeln!(self.out, "{value:#}")?;
        Ok(())
    }
}

fn key_path(key: &str) -> String {
    format!("/kv/{}", path_segment(key))
}

/// A value as JSON: `value` if it is text, else `value_base64`.
fn value_json(bytes: &[u8], into: &mut Map<String, Value>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => into.insert("value".into(), text.into()),
        Err(_) => into.insert("value_base64".into(), STANDARD.encode(bytes).into()),
    };
}

/// `dnd get KEY`: the value (200), every sibling in a block of its own
/// (300), or exit 1 (404). With `--json`, one document in the shape of a
/// listing's item.
pub fn get(client: &Client, key: &str, print: &mut Printer) -> Outcome {
    let what = format!("GET {key}");
    let reply = client.get(&key_path(key))?;
    let context = reply
        .header("x-dnd-context")
        .unwrap_or_default()
        .to_string();
    let ttl = reply
        .header("x-dnd-ttl")
        .and_then(|t| t.parse::<u64>().ok());
    match reply.status {
        200 => {
            let content_type = reply
                .header("content-type")
                .unwrap_or("application/octet-stream");
            if print.json {
                let mut doc = Map::new();
                doc.insert("key".into(), key.into());
                doc.insert("status".into(), 200.into());
                doc.insert("context".into(), context.into());
                doc.insert("content_type".into(), content_type.into());
                value_json(&reply.body, &mut doc);
                if let Some(ttl) = ttl {
                    doc.insert("ttl".into(), ttl.into());
                }
                return print.json(&Value::Object(doc));
            }
            print.out.write_all(&reply.body)?;
            if print.terminal && !reply.body.ends_with(b"\n") {
                writeln!(print.out)?;
            }
            Ok(())
        }
        300 => {
            let body = reply.json().unwrap_or(Value::Null);
            let siblings = body
                .get("siblings")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if print.json {
                return print.json(&json!({
                    "key": key,
                    "status": 300,
                    "context": context,
                    "siblings": siblings,
                }));
            }
            show_siblings(key, &context, &siblings, print)
        }
        404 if print.json => {
            print.json(&json!({ "key": key, "status": 404, "context": context }))?;
            Err(failure_of(client.endpoint(), &what, &reply))
        }
        _ => Err(failure_of(client.endpoint(), &what, &reply)),
    }
}

fn show_siblings(key: &str, context: &str, siblings: &[Value], print: &mut Printer) -> Outcome {
    let count = siblings.len();
    writeln!(
        print.out,
        "{key} has {count} siblings (concurrent writes); `dnd put {key} VALUE --context {context}` replaces them all"
    )?;
    for (i, sibling) in siblings.iter().enumerate() {
        let content_type = sibling
            .get("content_type")
            .and_then(Value::as_str)
            .unwrap_or("application/octet-stream");
        let expires = sibling
            .get("ttl")
            .and_then(Value::as_u64)
            .map(|ttl| format!(", expires in {ttl} s"))
            .unwrap_or_default();
        match (
            sibling.get("value").and_then(Value::as_str),
            sibling.get("value_base64").and_then(Value::as_str),
        ) {
            (Some(text), _) => {
                writeln!(
                    print.out,
                    "--- sibling {} of {count}: {content_type}, {} bytes{expires}",
                    i + 1,
                    text.len()
                )?;
                writeln!(print.out, "{text}")?;
            }
            (None, Some(encoded)) => {
                writeln!(
                    print.out,
                    "--- sibling {} of {count}: {content_type}, not text, base64{expires}",
                    i + 1
                )?;
                writeln!(print.out, "{encoded}")?;
            }
            (None, None) => writeln!(print.out, "--- sibling {} of {count}: (no value)", i + 1)?,
        }
    }
    writeln!(print.out, "--- context: {context}")?;
    Ok(())
}

/// What `dnd put` writes over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Whatever a quorum read finds now (`?overwrite=true`): what `dnd
    /// get` would show is replaced.
    Replace,
    /// Exactly the versions of this context (from `dnd get --json`);
    /// anything written since stays beside the new value as a sibling.
    Context(String),
    /// Only if the key has no value (`If-None-Match: *`).
    IfAbsent,
}

/// `dnd put KEY VALUE`.
pub struct Put<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
    pub content_type: Option<&'a str>,
    pub mode: PutMode,
    pub ttl_seconds: Option<u64>,
}

pub fn put(client: &Client, put: &Put, print: &mut Printer) -> Outcome {
    let what = format!("PUT {}", put.key);
    let content_type = match put.content_type {
        Some(given) => given,
        None if std::str::from_utf8(put.value).is_ok() => "text/plain; charset=utf-8",
        None => "application/octet-stream",
    };
    let mut headers = vec![("Content-Type", content_type)];
    let mut query = Vec::new();
    match &put.mode {
        PutMode::Replace => query.push("overwrite=true".to_string()),
        PutMode::Context(context) => headers.push(("X-Dnd-Context", context.as_str())),
        PutMode::IfAbsent => headers.push(("If-None-Match", "*")),
    }
    if let Some(ttl) = put.ttl_seconds {
        query.push(format!("ttl={ttl}"));
    }
    let mut path = key_path(put.key);
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let reply = client.request("PUT", &path, &headers, put.value)?;
    if reply.status == 412 {
        return Err(Failure::new(
            exit::FAILED,
            format!("{what}: not written, the key has a value (--if-absent)"),
        ));
    }
    written(client, put.key, &what, &reply, "stored", print)
}

/// The end of a write: its context printed, or its failure.
fn written(
    client: &Client,
    key: &str,
    what: &str,
    reply: &Reply,
    done: &str,
    print: &mut Printer,
) -> Outcome {
    if !(200..300).contains(&reply.status) {
        return Err(failure_of(client.endpoint(), what, reply));
    }
    let context = reply.header("x-dnd-context").unwrap_or_default();
    if print.json {
        return print.json(&json!({ "key": key, "status": reply.status, "context": context }));
    }
    writeln!(print.out, "{done} {key}")?;
    Ok(())
}

/// `dnd delete KEY`: a tombstone over what a quorum read finds, or over
/// exactly the versions of `context`.
pub fn delete(client: &Client, key: &str, context: Option<&str>, print: &mut Printer) -> Outcome {
    let what = format!("DELETE {key}");
    let headers: Vec<(&str, &str)> = context.map(|c| ("X-Dnd-Context", c)).into_iter().collect();
    let reply = client.request("DELETE", &key_path(key), &headers, b"")?;
    written(client, key, &what, &reply, "deleted", print)
}

/// `dnd keys [--prefix P]`: every key in order, page after page, at most
/// `limit` of them.
pub fn keys(client: &Client, prefix: &str, limit: Option<u64>, print: &mut Printer) -> Outcome {
    let what = "GET /kv";
    let mut start_after: Option<String> = None;
    let mut listed: Vec<String> = Vec::new();
    loop {
        let mut path = format!("/kv?limit=1000&prefix={}", query_value(prefix));
        if let Some(after) = &start_after {
            path.push_str(&format!("&start_after={}", query_value(after)));
        }
        let reply = client.get(&path)?;
        if reply.status != 200 {
            return Err(failure_of(client.endpoint(), what, &reply));
        }
        let page = reply.json().ok_or_else(|| {
            Failure::new(
                exit::FAILED,
                format!("{} answered a page that is not JSON", client.endpoint()),
            )
        })?;
        for key in page
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if limit.is_some_and(|limit| listed.len() as u64 >= limit) {
                break;
            }
            let Some(key) = key.as_str() else { continue };
            if !print.json {
                writeln!(print.out, "{key}")?;
            }
            listed.push(key.to_string());
        }
        let full = limit.is_some_and(|limit| listed.len() as u64 >= limit);
        match page.get("next").and_then(Value::as_str) {
            Some(next) if !full => start_after = Some(next.to_string()),
            _ => break,
        }
    }
    if print.json {
        return print.json(&json!({ "keys": listed }));
    }
    Ok(())
}

/// An answer that must be JSON from a GET of `path`.
fn get_json(client: &Client, path: &str) -> Result<Value, Failure> {
    let what = format!("GET {path}");
    let reply = client.get(path)?;
    if reply.status != 200 {
        return Err(failure_of(client.endpoint(), &what, &reply));
    }
    reply.json().ok_or_else(|| {
        Failure::new(
            exit::FAILED,
            format!(
                "{} answered {what} with something that is not JSON",
                client.endpoint()
            ),
        )
    })
}

fn text<'v>(value: &'v Value, field: &str) -> &'v str {
    value.get(field).and_then(Value::as_str).unwrap_or("?")
}

/// Rows of cells printed as columns, each as wide as its widest cell.
fn table(rows: &[Vec<String>], out: &mut dyn Write) -> std::io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `dnd members`: every member the node knows, with its state.
pub fn members(client: &Client, print: &mut Printer) -> Outcome {
    let list = get_json(client, "/cluster/members")?;
    if print.json {
        return print.json(&list);
    }
    let mut rows = vec![["ID", "STATE", "INCARNATION", "GOSSIP", "HTTP"]
        .map(String::from)
        .to_vec()];
    for member in list.as_array().into_iter().flatten() {
        rows.push(vec![
            text(member, "id").into(),
            text(member, "state").into(),
            member
                .get("incarnation")
                .and_then(Value::as_u64)
                .map_or("?".into(), |i| i.to_string()),
            text(member, "gossip_addr").into(),
            text(member, "http_addr").into(),
        ]);
    }
    table(&rows, print.out)?;
    Ok(())
}

fn percent(share: Option<f64>) -> String {
    share.map_or("?".into(), |s| format!("{:.1}%", s * 100.0))
}

/// `dnd ring`: the replication settings and each node's share.
pub fn ring(client: &Client, print: &mut Printer) -> Outcome {
    let ring = get_json(client, "/cluster/ring")?;
    if print.json {
        return print.json(&ring);
    }
    let number = |field: &str| ring.get(field).and_then(Value::as_u64).unwrap_or(0);
    writeln!(
        print.out,
        "N={} R={} W={}, {} tokens per node",
        number("replicas"),
        number("read_quorum"),
        number("write_quorum"),
        number("tokens_per_node")
    )?;
    let mut rows = vec![["ID", "STATE", "SHARE"].map(String::from).to_vec()];
    for node in ring
        .get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        rows.push(vec![
            text(node, "id").into(),
            text(node, "state").into(),
            percent(node.get("primary_share").and_then(Value::as_f64)),
        ]);
    }
    table(&rows, print.out)?;
    Ok(())
}

/// Bytes for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in milliseconds for people: `850 ms`, `12 s`, `4 min`, `3 h`.
pub fn human_duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..120_000 => format!("{} s", ms / 1000),
        120_000..7_200_000 => format!("{} min", ms / 60_000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

/// What a node's handoff column says: `-` when nothing moves.
fn handoff_cell(stats: &Value) -> String {
    let Some(running) = stats.get("handoff").and_then(|h| h.get("running")) else {
        return "-".into();
    };
    if running.is_null() {
        return "-".into();
    }
    let progress = &running["progress"];
    let sent = progress["keys_sent"].as_u64().unwrap_or(0);
    let scanned = progress["keys_scanned"].as_u64().unwrap_or(0);
    format!("moving: {sent} keys sent of {scanned} scanned")
}

/// `dnd status`: the whole cluster on one screen, as `GET /cluster/status`
/// of the node at the endpoint sees it.
pub fn status(client: &Client, print: &mut Printer) -> Outcome {
    let status = get_json(client, "/cluster/status")?;
    if print.json {
        return print.json(&status);
    }
    render_status(&status, print.out)?;
    Ok(())
}

/// The status screen of an answer of `GET /cluster/status`.
pub fn render_status(status: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    let healthy = status.get("healthy").and_then(Value::as_bool) == Some(true);
    let number = |field: &str| status.get(field).and_then(Value::as_u64).unwrap_or(0);
    writeln!(
        out,
        "cluster {} · N={} R={} W={} · as node {} sees it",
        if healthy { "healthy" } else { "NOT HEALTHY" },
        number("replicas"),
        number("read_quorum"),
        number("write_quorum"),
        text(status, "node"),
    )?;
    let mut rows = vec![[
        "STATE", "NODE", "HTTP", "FOR", "RING", "KEYS", "BYTES", "HINTS", "HANDOFF",
    ]
    .map(String::from)
    .to_vec()];
    for node in status
        .get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let stats = node.get("stats").filter(|s| !s.is_null());
        let figure = |field: &str, show: fn(u64) -> String| {
            stats
                .and_then(|s| s.get(field))
                .and_then(Value::as_u64)
                .map_or("?".into(), show)
        };
        rows.push(vec![
            text(node, "state").into(),
            text(node, "id").into(),
            text(node, "http_addr").into(),
            node.get("state_for_ms")
                .and_then(Value::as_u64)
                .map_or("?".into(), human_duration_ms),
            percent(node.get("ring_share").and_then(Value::as_f64)),
            figure("keys", |k| k.to_string()),
            figure("bytes", human_bytes),
            figure("hints_pending", |h| h.to_string()),
            stats.map_or("?".into(), handoff_cell),
        ]);
    }
    table(&rows, out)?;
    let problems = status.get("problems").and_then(Value::as_array);
    if let Some(problems) = problems.filter(|p| !p.is_empty()) {
        writeln!(out, "problems:")?;
        for problem in problems {
            writeln!(out, "  - {}", problem.as_str().unwrap_or("?"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn each_failing_status_gets_its_exit_code_and_one_line() {
        let e = "http://n:6000";
        let unavailable = failure_of(
            e,
            "GET k",
            &reply(
                503,
                json!({"error": "read quorum not met", "replicas_needed": 2, "replicas_answered": 1}),
            ),
        );
        assert_eq!(unavailable.code, exit::UNAVAILABLE);
        assert!(unavailable
            .message
            .contains("1 of the 2 replicas needed answered"));
        assert_eq!(
            failure_of(e, "x", &reply(401, json!({}))).code,
            exit::REFUSED
        );
        assert_eq!(
            failure_of(e, "x", &reply(403, json!({"error": "role"}))).code,
            exit::REFUSED
        );
        assert_eq!(
            failure_of(e, "GET k", &reply(404, json!({}))).code,
            exit::NOT_FOUND
        );
        assert_eq!(
            failure_of(e, "x", &reply(400, json!({"error": "bad"}))).code,
            exit::USAGE
        );
        let conflict = failure_of(
            e,
            "PUT k",
            &reply(409, json!({"error": "too many siblings"})),
        );
        assert_eq!(conflict.code, exit::FAILED);
        assert!(conflict.message.contains("409") && conflict.message.contains("too many siblings"));
        for failure in [unavailable, conflict] {
            assert!(!failure.message.contains('\n'), "{}", failure.message);
        }
    }

    #[test]
    fn the_status_screen_shows_every_node_and_the_problems() {
        let status = json!({
            "node": "aaaa", "healthy": false, "replicas": 3, "read_quorum": 2, "write_quorum": 2,
            "problems": ["bbbb (127.0.0.1:6001) is dead"],
            "nodes": [
                {"id": "aaaa", "state": "alive", "http_addr": "127.0.0.1:6000", "state_for_ms": 65000,
                 "ring_share": 0.5, "stats": {"keys": 12, "bytes": 3 * 1024 * 1024, "hints_pending": 4,
                 "handoff": {"running": null, "last": null}}},
                {"id": "bbbb", "state": "dead", "http_addr": "127.0.0.1:6001", "state_for_ms": 500,
                 "ring_share": 0.5, "stats": null, "stats_error": "not asked"}
            ]
        });
        let mut out = Vec::new();
        render_status(&status, &mut out).unwrap();
        let screen = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = screen.lines().collect();
        assert!(
            lines[0].starts_with("cluster NOT HEALTHY · N=3 R=2 W=2"),
            "{screen}"
        );
        assert!(
            lines[2].starts_with("alive") && lines[2].contains("50.0%"),
            "{screen}"
        );
        assert!(
            lines[2].contains("3.0 MiB") && lines[2].contains("65 s"),
            "{screen}"
        );
        assert!(
            lines[3].starts_with("dead") && lines[3].contains('?'),
            "{screen}"
        );
        assert_eq!(lines[5], "  - bbbb (127.0.0.1:6001) is dead");
    }

    #[test]
    fn figures_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(human_duration_ms(850), "850 ms");
        assert_eq!(human_duration_ms(119_000), "119 s");
        assert_eq!(human_duration_ms(600_000), "10 min");
    }
}
