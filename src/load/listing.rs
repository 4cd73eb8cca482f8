//! The list workload: one client walks every record in key order, page by
//! page, and checks that it saw each record exactly once.
//!
//! A listing cannot be split between clients without knowing the keys, so
//! it is one client, its pages one after the other, sent round-robin over
//! the targets; `--concurrency` does not apply. The client lists whole
//! passes, as many as fit in `--duration` and at least one, and checks each:
//! exactly `--records` keys, in strictly increasing order, every one a
//! record's key. A pass that fails the check stops the run with the reason
//! (exit status 1).
//!
//! | `--protocol` | a page | the next page |
//! | --- | --- | --- |
//! | `dnd` | `GET /kv?prefix=user&limit=L[&start_after=K]`, answered `{"keys": [...], "next": K \| null}` | `start_after` = `next`, percent-encoded, until `next` is null (a page may hold fewer than `L` keys while `next` is not null) |
//! | `etcd` | `POST /v3/kv/range` `{"key", "range_end", "limit": L, "keys_only": true}` (base64 keys) | `key` = the last key and a NUL byte, while the answer says `"more": true` |
//!
//! `L` is `--page-size` (default 1000). etcd is asked for keys only
//! (`keys_only`), as dnd's listing gives keys without their values.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;

use ureq::http::Method;

use super::client::{Fail, HttpClient};
use super::{bar, cpu_seconds, key_of, thousands, PhaseResult, Progress, Protocol, RunArgs, Stats};

/// What every record's key starts with (`key_of`).
const PREFIX: &str = "user";
/// Tries of one page before the run stops.
const PAGE_TRIES: u32 = 3;

/// A page of `GET /kv?prefix=`.
#[derive(Deserialize)]
struct DndPage {
    keys: Vec<String>,
    next: Option<String>,
}

/// A page of etcd's `POST /v3/kv/range`.
#[derive(Deserialize)]
struct EtcdPage {
    #[serde(default)]
    kvs: Vec<EtcdKey>,
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct EtcdKey {
    key: String,
}

/// Where the next page starts.
enum Cursor {
    First,
    /// dnd: the `next` of the page before.
    After(String),
    /// etcd: the first key the next page may hold.
    From(Vec<u8>),
    Done,
}

/// One page's keys and where the next one starts.
type Page = (Vec<String>, Cursor);

/// The smallest key above every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: etcd's "to the end of the keyspace".
    vec![0]
}

/// The request for one page: method, URL, content type and body.
fn page_request(
    protocol: Protocol,
    base: &str,
    page_size: usize,
    cursor: &Cursor,
) -> (Method, String, Option<&'static str>, String) {
    match protocol {
        Protocol::Etcd => {
            let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
            let start = match cursor {
                Cursor::From(start) => start.clone(),
                _ => PREFIX.as_bytes().to_vec(),
            };
            let body = format!(
                r#"{{"key":"{}","range_end":"{}","limit":{page_size},"keys_only":true}}"#,
                b64(&start),
                b64(&prefix_end(PREFIX.as_bytes())),
            );
            (
                Method::POST,
                format!("{base}/v3/kv/range"),
                Some("application/json"),
                body,
            )
        }
        _ => {
            let mut url = format!("{base}/kv?prefix={PREFIX}&limit={page_size}");
            if let Cursor::After(key) = cursor {
                let _ = write!(
                    url,
                    "&start_after={}",
                    utf8_percent_encode(key, NON_ALPHANUMERIC)
                );
            }
            (Method::GET, url, None, String::new())
        }
    }
}

fn read_page(protocol: Protocol, body: &[u8]) -> Result<Page, Fail> {
    match protocol {
        Protocol::Etcd => {
            let page: EtcdPage = serde_json::from_slice(body).map_err(|_| Fail::Protocol)?;
            let mut keys = Vec::with_capacity(page.kvs.len());
            for kv in page.kvs {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(kv.key)
                    .map_err(|_| Fail::Protocol)?;
                keys.push(String::from_utf8(raw).map_err(|_| Fail::Protocol)?);
            }
            let cursor = match keys.last() {
                Some(last) if page.more => {
                    let mut start = last.as_bytes().to_vec();
                    start.push(0);
                    Cursor::From(start)
                }
                _ => Cursor::Done,
            };
            Ok((keys, cursor))
        }
        _ => {
            let page: DndPage = serde_json::from_slice(body).map_err(|_| Fail::Protocol)?;
            let cursor = page.next.map_or(Cursor::Done, Cursor::After);
            Ok((page.keys, cursor))
        }
    }
}

/// What a pass listed that it should not have, or `None` when it listed
/// every record once, in order.
fn check_pass(listed: &[String], expected: &HashSet<String>) -> Option<String> {
    let distinct: HashSet<&String> = listed.iter().collect();
    let strangers = distinct.iter().filter(|k| !expected.contains(**k)).count();
    let out_of_order = listed.windows(2).filter(|w| w[0] >= w[1]).count();
    if listed.len() == expected.len()
        && distinct.len() == expected.len()
        && strangers == 0
        && out_of_order == 0
    {
        return None;
    }
    let hint = if strangers > 0 {
        " (the list workload needs a system that holds nothing but its records under `user`)"
    } else {
        ""
    };
    Some(format!(
        "it listed {} keys, {} distinct, {strangers} not a record's key, {out_of_order} not above the \
         key before; expected exactly {} distinct keys in order{hint}",
        listed.len(),
        distinct.len(),
        expected.len()
    ))
}

/// Runs the list workload (see the module doc).
pub(super) fn run(args: &RunArgs, title: &str, progress: &Progress) -> Result<PhaseResult> {
    let expected: HashSet<String> = (0..args.records)
        .map(|r| String::from_utf8_lossy(&key_of(r)).into_owned())
        .collect();
    let bases: Vec<String> = args.targets.iter().map(|t| format!("http://{t}")).collect();
    let client = HttpClient::new(args.timeout, bases.len());
    let pids = &args.server_pids;
    let server_cpu = || cpu_seconds(pids).filter(|_| !pids.is_empty());
    let cpu_before = (cpu_seconds(&["self".into()]), server_cpu());
    let start = Instant::now();
    let mut stats = Stats::default();
    let mut aborted = None;
    let mut page_number = 0u64;
    'passes: loop {
        let mut listed: Vec<String> = Vec::with_capacity(expected.len());
        let mut cursor = Cursor::First;
        while !matches!(cursor, Cursor::Done) {
            let target = (page_number % bases.len() as u64) as usize;
            page_number += 1;
            let (method, url, content_type, body) =
                page_request(args.protocol, &bases[target], args.page_size, &cursor);
            let mut tries = 0;
            let (keys, next) = loop {
                tries += 1;
                let sent = Instant::now();
                let page = match client.call(method.clone(), &url, content_type, body.as_bytes()) {
                    Ok(reply) if reply.status == 200 => read_page(args.protocol, &reply.body),
                    Ok(reply) => Err(Fail::Status(reply.status)),
                    Err(fail) => Err(fail),
                };
                match page {
                    Ok(page) => {
                        let latency = sent.elapsed();
                        stats.latency.record(latency);
                        stats.read_latency.record(latency);
                        break page;
                    }
                    Err(fail) => {
                        *stats
                            .errors
                            .entry(format!("page: {}", fail.label()))
                            .or_default() += 1;
                        if tries == PAGE_TRIES {
                            aborted = Some(format!(
                                "a page failed {PAGE_TRIES} times in a row (last: {})",
                                fail.label()
                            ));
                            break 'passes;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            };
            stats.done += 1;
            stats.reads += 1;
            stats.keys += keys.len() as u64;
            // A cursor that does not move on would page forever.
            let stuck = match (&cursor, &next) {
                (Cursor::After(before), Cursor::After(after)) => after <= before,
                (Cursor::From(before), Cursor::From(after)) => after <= before,
                _ => false,
            };
            listed.extend(keys);
            if stuck {
                aborted = Some(format!(
                    "pass {} did not end: the cursor did not move on after {} keys, at {}",
                    stats.passes + 1,
                    listed.len(),
                    listed.last().map_or("the start", String::as_str)
                ));
                break 'passes;
            }
            cursor = next;
            let secs = start.elapsed().as_secs_f64();
            progress.show(&format!(
                "{title} {} pass {} · {} keys/s · {} pages",
                bar(listed.len() as f64 / expected.len().max(1) as f64),
                stats.passes + 1,
                thousands(stats.keys as f64 / secs.max(1e-3)),
                stats.done
            ));
        }
        if let Some(wrong) = check_pass(&listed, &expected) {
            aborted = Some(format!(
                "the listing is wrong: pass {} of {}: {wrong}",
                stats.passes + 1,
                args.protocol.name()
            ));
            break;
        }
        stats.passes += 1;
        if start.elapsed() >= args.duration {
            break;
        }
    }
    progress.clear();
    let elapsed = start.elapsed();
    let secs = elapsed.as_secs_f64();
    let cpu_after = (cpu_seconds(&["self".into()]), server_cpu());
    if stats.done == 0 && aborted.is_none() {
        return Err(anyhow!("the listing sent no page"));
    }
    Ok(PhaseResult {
        elapsed,
        rate: None,
        stats,
        client_cpu: cpu_before.0.zip(cpu_after.0).map(|(a, b)| (b - a) / secs),
        server_cpu: cpu_before.1.zip(cpu_after.1).map(|(a, b)| (b - a) / secs),
        aborted,
    })
}
