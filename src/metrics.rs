//! Counters a node keeps about itself, rendered in the Prometheus text
//! format at `GET /metrics`.
//!
//! Owns the counters, not the work they count: actors hold a cheap handle and
//! bump atomics; nothing here blocks, allocates per event, or sends messages.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::wire::DecodeError;

#[derive(Debug, Default)]
pub struct Metrics {
    pub gossip_datagrams_received: Counter,
    pub gossip_bytes_received: Counter,
    pub gossip_datagrams_sent: Counter,
    pub gossip_bytes_sent: Counter,
    pub gossip_send_failures: Counter,
    pub gossip_dropped_oversized: Counter,
    pub gossip_dropped_malformed: Counter,
    pub gossip_dropped_wrong_version: Counter,
    pub gossip_dropped_wrong_cluster: Counter,
    pub gossip_socket_restarts: Counter,
    pub actor_restarts_store: Counter,
    pub actor_restarts_gossip: Counter,
    pub actor_restarts_membership: Counter,
    pub kv_gets: Counter,
    pub kv_puts: Counter,
    pub kv_deletes: Counter,
    pub kv_storage_errors: Counter,
}

pub type SharedMetrics = Arc<Metrics>;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Metrics {
    pub fn count_dropped(&self, reason: &DecodeError) {
        (match reason {
            DecodeError::Oversized { .. } => &self.gossip_dropped_oversized,
            DecodeError::Malformed | DecodeError::MalformedBody => &self.gossip_dropped_malformed,
            DecodeError::WrongVersion(_) => &self.gossip_dropped_wrong_version,
            DecodeError::WrongCluster(_) => &self.gossip_dropped_wrong_cluster,
        })
        .inc();
    }

    /// All datagrams refused, whatever the reason.
    pub fn gossip_dropped_total(&self) -> u64 {
        [
            &self.gossip_dropped_oversized,
            &self.gossip_dropped_malformed,
            &self.gossip_dropped_wrong_version,
            &self.gossip_dropped_wrong_cluster,
        ]
        .iter()
        .map(|c| c.get())
        .sum()
    }

    pub fn render_prometheus(&self) -> String {
        let get = Counter::get;
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP dnd_{name} {help}\n# TYPE dnd_{name} counter");
            for (labels, value) in samples {
                let _ = writeln!(out, "dnd_{name}{labels} {value}");
            }
        };
        counter(
            "gossip_datagrams_received_total",
            "Gossip datagrams received, valid or not.",
            &[("", get(&self.gossip_datagrams_received))],
        );
        counter(
            "gossip_bytes_received_total",
            "Bytes of gossip datagrams received.",
            &[("", get(&self.gossip_bytes_received))],
        );
        counter(
            "gossip_datagrams_sent_total",
            "Gossip datagrams sent.",
            &[("", get(&self.gossip_datagrams_sent))],
        );
        counter(
            "gossip_bytes_sent_total",
            "Bytes of gossip datagrams sent.",
            &[("", get(&self.gossip_bytes_sent))],
        );
        counter(
            "gossip_send_failures_total",
            "Gossip datagrams the socket refused to send.",
            &[("", get(&self.gossip_send_failures))],
        );
        counter(
            "gossip_datagrams_dropped_total",
            "Gossip datagrams refused, by reason.",
            &[
                (
                    "{reason=\"oversized\"}",
                    get(&self.gossip_dropped_oversized),
                ),
                (
                    "{reason=\"malformed\"}",
                    get(&self.gossip_dropped_malformed),
                ),
                (
                    "{reason=\"wrong_version\"}",
                    get(&self.gossip_dropped_wrong_version),
                ),
                (
                    "{reason=\"wrong_cluster\"}",
                    get(&self.gossip_dropped_wrong_cluster),
                ),
            ],
        );
        counter(
            "gossip_socket_restarts_total",
            "Times the gossip socket was bound again after an error.",
            &[("", get(&self.gossip_socket_restarts))],
        );
        counter(
            "actor_restarts_total",
            "Actor restarts by their supervisor.",
            &[
                ("{actor=\"store\"}", get(&self.actor_restarts_store)),
                ("{actor=\"gossip\"}", get(&self.actor_restarts_gossip)),
                (
                    "{actor=\"membership\"}",
                    get(&self.actor_restarts_membership),
                ),
            ],
        );
        counter(
            "kv_requests_total",
            "Key-value requests handled by the Store, by operation.",
            &[
                ("{op=\"get\"}", get(&self.kv_gets)),
                ("{op=\"put\"}", get(&self.kv_puts)),
                ("{op=\"delete\"}", get(&self.kv_deletes)),
            ],
        );
        counter(
            "kv_storage_errors_total",
            "Storage engine errors seen by the Store.",
            &[("", get(&self.kv_storage_errors))],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_datagrams_are_counted_by_reason_and_rendered() {
        let metrics = Metrics::default();
        metrics.count_dropped(&DecodeError::Malformed);
        metrics.count_dropped(&DecodeError::WrongCluster("x".into()));
        metrics.count_dropped(&DecodeError::WrongCluster("y".into()));
        assert_eq!(metrics.gossip_dropped_total(), 3);
        let text = metrics.render_prometheus();
        assert!(text.contains("dnd_gossip_datagrams_dropped_total{reason=\"wrong_cluster\"} 2"));
        assert!(text.contains("dnd_gossip_datagrams_dropped_total{reason=\"malformed\"} 1"));
    }
}
