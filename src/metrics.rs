//! Counters, gauges and latency histograms a node keeps about itself,
//! rendered in the Prometheus text format (0.0.4) at `GET /metrics` by the
//! `prometheus-client` crate.
//!
//! Owns the figures, not the work they measure: actors hold a cheap handle
//! and bump atomics or observe a histogram; nothing here blocks on I/O or
//! sends messages. Figures only an actor knows at scrape time (members by
//! state, keys and bytes stored) are passed to [`Metrics::render_prometheus`]
//! by whoever asked that actor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::wire::DecodeError;

/// The `Content-Type` of what [`Metrics::render_prometheus`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Latency bucket bounds in seconds, 100 µs to 10 s: a GET served from
/// memory lands in the first buckets, a request stuck behind a flush or a
/// slow peer in the last ones.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// An HTTP request's labels: the route pattern it matched (`other` when
/// none did, so that unknown paths cannot grow the label set), its method
/// (`other` beyond the ones the API has) and its status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: &'static str,
    pub status: &'static str,
}

/// A replica request's labels: its kind and whether an answer came.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// A storage engine operation's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabels {
    pub op: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The latency histograms; each family is a cheap handle to shared state.
#[derive(Debug, Clone)]
pub struct Latencies {
    pub http: HistogramFamily<HttpLabels>,
    pub replica: HistogramFamily<ReplicaLabels>,
    pub storage: HistogramFamily<StorageLabels>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            http: Family::new_with_constructor(latency_histogram),
            replica: Family::new_with_constructor(latency_histogram),
            storage: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl Latencies {
    pub fn observe_http(&self, labels: HttpLabels, took: Duration) {
        self.http.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub fn observe_replica(&self, kind: &'static str, answered: bool, took: Duration) {
        let outcome = if answered { "answered" } else { "failed" };
        self.replica
            .get_or_create(&ReplicaLabels { kind, outcome })
            .observe(took.as_secs_f64());
    }

    /// The histogram of one storage operation, to keep and observe without
    /// a look-up each time.
    pub fn storage_op(&self, op: &'static str) -> Histogram {
        self.storage.get_or_create_owned(&StorageLabels { op })
    }
}

/// The status class label of an HTTP status code.
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// What only the actors know, asked for at scrape time. A figure left
/// `None` (its actor did not answer in time) is left out of the page.
#[derive(Debug, Clone, Default)]
pub struct ScrapeFigures {
    /// Members by state name, this node included.
    pub members_by_state: Option<Vec<(&'static str, u64)>>,
    pub keys_stored: Option<u64>,
    pub bytes_stored: Option<u64>,
}

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
    pub gossip_dropped_unauthenticated: Counter,
    pub gossip_rumors_refused_incarnation: Counter,
    pub gossip_members_refused_full: Counter,
    pub gossip_joins_refused_settings: Counter,
    pub gossip_unexpected_replies: Counter,
    pub gossip_oversized_not_sent: Counter,
    pub gossip_datagram_max_bytes: Gauge,
    pub gossip_socket_restarts: Counter,
    pub swim_probes: Counter,
    pub swim_probes_without_direct_ack: Counter,
    pub swim_probe_failures: Counter,
    pub swim_indirect_probes: Counter,
    pub swim_suspicions_raised: Counter,
    pub swim_members_declared_dead: Counter,
    pub swim_refutations: Counter,
    pub swim_push_pulls: Counter,
    pub swim_dead_probes: Counter,
    pub swim_relays_refused: Counter,
    pub swim_late_timers: Counter,
    pub swim_local_health: Gauge,
    pub actor_restarts_store: Counter,
    pub actor_restarts_gossip: Counter,
    pub actor_restarts_membership: Counter,
    pub kv_gets: Counter,
    pub kv_puts: Counter,
    pub kv_deletes: Counter,
    pub kv_storage_errors: Counter,
    pub kv_writes_coordinated: Counter,
    pub kv_writes_forwarded: Counter,
    pub kv_quorum_failures: Counter,
    pub kv_refused_unreachable: Counter,
    pub kv_reads_without_home: Counter,
    pub kv_peers_marked_unreachable: Counter,
    pub kv_read_repairs: Counter,
    pub kv_contexts_looked_up: Counter,
    pub kv_writes_refused_unknown_context: Counter,
    pub kv_writes_refused_siblings: Counter,
    pub kv_writes_precondition_failed: Counter,
    pub kv_list_pages: Counter,
    pub kv_list_pages_failed: Counter,
    pub kv_batches: Counter,
    pub kv_batch_operations: Counter,
    pub kv_watches_open: Gauge,
    pub kv_watches_answered: Counter,
    pub kv_watches_refused: Counter,
    pub kv_sibling_warnings: Counter,
    pub kv_replica_requests: Counter,
    pub hints_recorded: Counter,
    pub hints_delivered: Counter,
    pub hints_pending: Gauge,
    pub handoff_keys_sent: Counter,
    pub handoff_bytes_sent: Counter,
    pub handoff_jobs: Counter,
    pub handoff_running: Gauge,
    pub anti_entropy_rounds: Counter,
    pub anti_entropy_keys_repaired: Counter,
    pub tombstones_purged: Counter,
    pub tombstones_refused_after_purge: Counter,
    pub peer_requests_sent: Counter,
    pub peer_request_failures: Counter,
    pub peer_requests_served: Counter,
    pub peer_connections_opened: Counter,
    pub peer_frames_refused: Counter,
    pub peer_handshakes_refused_unauthenticated: Counter,
    pub peer_handshakes_refused_other: Counter,
    pub peer_connections_refused_limit: Counter,
    pub peer_connections_idle_closed: Counter,
    pub peer_requests_refused_not_member: Counter,
    pub peer_requests_refused_role: Counter,
    pub peer_requests_refused_too_large: Counter,
    pub peer_bytes_sent: Counter,
    pub peer_bytes_received: Counter,
    pub http_requests_refused_no_token: Counter,
    pub http_requests_refused_unknown_token: Counter,
    pub http_requests_refused_role: Counter,
    pub http_requests_refused_not_this_host: Counter,
    pub http_requests_shed: Counter,
    pub latencies: Latencies,
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

/// A value that goes up and down, or a running maximum.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn set_max(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter family's name (without `_total`, which the encoder adds), help
/// text, label name if it has one, and its samples as (label value, value).
type CounterFamily<'a> = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'a [(&'static str, u64)],
);

/// A family as the registry takes it, owning its samples.
type OwnedFamily<V> = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Vec<(&'static str, V)>,
);

/// Gauges have signed values.
type GaugeFamily = OwnedFamily<i64>;

/// The counters' and gauges' values at one scrape, owned so that the
/// registry can take them as a collector.
#[derive(Debug)]
struct Snapshot {
    counters: Vec<OwnedFamily<u64>>,
    gauges: Vec<GaugeFamily>,
}

const NO_LABELS: [(&str, &str); 0] = [];

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // The encoder ends every help text with a full stop of its own.
        let help_of = |help: &'static str| help.trim_end_matches('.');
        for (name, help, label, samples) in &self.counters {
            let mut family =
                encoder.encode_descriptor(name, help_of(help), None, MetricType::Counter)?;
            for (value_of_label, value) in samples {
                let counter = ConstCounter::new(*value);
                match label {
                    Some(key) => {
                        counter.encode(family.encode_family(&[(*key, *value_of_label)])?)?
                    }
                    None => counter.encode(family.encode_family(&NO_LABELS)?)?,
                }
            }
        }
        for (name, help, label, samples) in &self.gauges {
            let mut family =
                encoder.encode_descriptor(name, help_of(help), None, MetricType::Gauge)?;
            for (value_of_label, value) in samples {
                let gauge = ConstGauge::new(*value);
                match label {
                    Some(key) => gauge.encode(family.encode_family(&[(*key, *value_of_label)])?)?,
                    None => gauge.encode(family.encode_family(&NO_LABELS)?)?,
                }
            }
        }
        Ok(())
    }
}

/// A non-negative figure as a gauge value (saturating: no figure here comes
/// near `i64::MAX`).
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    pub fn count_dropped(&self, reason: &DecodeError) {
        (match reason {
            DecodeError::Oversized { .. } => &self.gossip_dropped_oversized,
            DecodeError::Malformed | DecodeError::MalformedBody => &self.gossip_dropped_malformed,
            DecodeError::WrongVersion(_) => &self.gossip_dropped_wrong_version,
            DecodeError::WrongCluster(_) => &self.gossip_dropped_wrong_cluster,
            DecodeError::Unauthenticated => &self.gossip_dropped_unauthenticated,
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
            &self.gossip_dropped_unauthenticated,
        ]
        .iter()
        .map(|c| c.get())
        .sum()
    }

    /// Every figure, with those `figures` gives, in the Prometheus text
    /// format ([`CONTENT_TYPE`]).
    pub fn render_prometheus(&self, figures: &ScrapeFigures) -> String {
        let c = Counter::get;
        let counters: &[CounterFamily] = &[
            ("gossip_datagrams_received", "Gossip datagrams received, valid or not.", None, &[("", c(&self.gossip_datagrams_received))]),
            ("gossip_bytes_received", "Bytes of gossip datagrams received.", None, &[("", c(&self.gossip_bytes_received))]),
            ("gossip_datagrams_sent", "Gossip datagrams sent.", None, &[("", c(&self.gossip_datagrams_sent))]),
            ("gossip_bytes_sent", "Bytes of gossip datagrams sent.", None, &[("", c(&self.gossip_bytes_sent))]),
            ("gossip_send_failures", "Gossip datagrams the socket refused to send.", None, &[("", c(&self.gossip_send_failures))]),
            ("gossip_datagrams_dropped", "Gossip datagrams refused, by reason.", Some("reason"), &[
                ("oversized", c(&self.gossip_dropped_oversized)),
                ("malformed", c(&self.gossip_dropped_malformed)),
                ("wrong_version", c(&self.gossip_dropped_wrong_version)),
                ("wrong_cluster", c(&self.gossip_dropped_wrong_cluster)),
                ("unauthenticated", c(&self.gossip_dropped_unauthenticated)),
            ]),
            ("gossip_news_refused", "Membership news from inside the cluster refused, by reason: an incarnation no member reaches, a full member table, a join with other cluster settings.", Some("reason"), &[
                ("incarnation", c(&self.gossip_rumors_refused_incarnation)),
                ("member_table_full", c(&self.gossip_members_refused_full)),
                ("settings", c(&self.gossip_joins_refused_settings)),
            ]),
            ("gossip_unexpected_replies", "Acks and nacks for no probe in flight (late, duplicated or forged).", None, &[("", c(&self.gossip_unexpected_replies))]),
            ("gossip_oversized_not_sent", "Messages not sent because they exceeded the datagram limit.", None, &[("", c(&self.gossip_oversized_not_sent))]),
            ("gossip_socket_restarts", "Times the gossip socket was bound again after an error.", None, &[("", c(&self.gossip_socket_restarts))]),
            ("swim_probes", "Direct probes sent.", None, &[("", c(&self.swim_probes))]),
            ("swim_probes_without_direct_ack", "Probes with no direct ack within the probe timeout: lost datagrams or slow members.", None, &[("", c(&self.swim_probes_without_direct_ack))]),
            ("swim_probe_failures", "Probes with no ack at all by the end of the period.", None, &[("", c(&self.swim_probe_failures))]),
            ("swim_indirect_probes", "Ping-req messages sent.", None, &[("", c(&self.swim_indirect_probes))]),
            ("swim_suspicions_raised", "Members this node suspected.", None, &[("", c(&self.swim_suspicions_raised))]),
            ("swim_members_declared_dead", "Suspicions that expired into deaths here.", None, &[("", c(&self.swim_members_declared_dead))]),
            ("swim_refutations", "Rumors about this node it refuted with a new incarnation.", None, &[("", c(&self.swim_refutations))]),
            ("swim_push_pulls", "Full-state exchanges started.", None, &[("", c(&self.swim_push_pulls))]),
            ("swim_dead_probes", "Pings sent to members declared dead, in case they are alive after all.", None, &[("", c(&self.swim_dead_probes))]),
            ("swim_relays_refused", "Indirect probes refused because too many were in flight.", None, &[("", c(&self.swim_relays_refused))]),
            ("swim_late_timers", "Protocol periods that started late enough to hint this node is slow.", None, &[("", c(&self.swim_late_timers))]),
            ("actor_restarts", "Actor restarts by their supervisor.", Some("actor"), &[
                ("store", c(&self.actor_restarts_store)),
                ("gossip", c(&self.actor_restarts_gossip)),
                ("membership", c(&self.actor_restarts_membership)),
            ]),
            ("kv_requests", "Key-value requests handled by the Store, by operation.", Some("op"), &[
                ("get", c(&self.kv_gets)),
                ("put", c(&self.kv_puts)),
                ("delete", c(&self.kv_deletes)),
            ]),
            ("kv_storage_errors", "Storage engine errors seen by the Store.", None, &[("", c(&self.kv_storage_errors))]),
            ("kv_writes_coordinated", "Client writes this node versioned and replicated.", None, &[("", c(&self.kv_writes_coordinated))]),
            ("kv_writes_forwarded", "Client writes forwarded to a home replica of their key.", None, &[("", c(&self.kv_writes_forwarded))]),
            ("kv_write_quorum_failures", "Coordinated writes that fewer than W replicas stored in time.", None, &[("", c(&self.kv_quorum_failures))]),
            ("kv_refused_unreachable", "Reads and writes answered 503 at once: fewer replicas than the quorum were reachable as far as this node knew.", None, &[("", c(&self.kv_refused_unreachable))]),
            ("kv_reads_without_home", "Reads answered 503 because only stand-ins answered and none held a value (a not-found from them would be a guess).", None, &[("", c(&self.kv_reads_without_home))]),
            ("kv_peers_marked_unreachable", "Times a peer that gave no answer to a replica request was set aside for a short hold.", None, &[("", c(&self.kv_peers_marked_unreachable))]),
            ("kv_contexts_looked_up", "Writes whose context named versions the coordinator's copy lacked, checked against the other home replicas first.", None, &[("", c(&self.kv_contexts_looked_up))]),
            ("kv_writes_refused", "Writes refused before anything was stored, by reason: a context naming versions no replica holds, or too many siblings.", Some("reason"), &[
                ("unknown_context", c(&self.kv_writes_refused_unknown_context)),
                ("siblings", c(&self.kv_writes_refused_siblings)),
                ("precondition", c(&self.kv_writes_precondition_failed)),
            ]),
            ("kv_list_pages", "Listing pages this node coordinated, by outcome.", Some("outcome"), &[
                ("ok", c(&self.kv_list_pages)),
                ("unavailable", c(&self.kv_list_pages_failed)),
            ]),
            ("kv_batches", "Batch requests served.", None, &[("", c(&self.kv_batches))]),
            ("kv_batch_operations", "Operations in the batch requests served.", None, &[("", c(&self.kv_batch_operations))]),
            ("kv_watches_answered", "Watches answered, with news or at their timeout.", None, &[("", c(&self.kv_watches_answered))]),
            ("kv_watches_refused", "Watches refused because this node had as many open as it takes.", None, &[("", c(&self.kv_watches_refused))]),
            ("kv_sibling_warnings", "Writes that left a key with 25 or more siblings.", None, &[("", c(&self.kv_sibling_warnings))]),
            ("kv_read_repairs", "Replicas sent the merged version after a read found them behind.", None, &[("", c(&self.kv_read_repairs))]),
            ("kv_replica_requests", "Replica reads, writes and forwarded writes served for other nodes.", None, &[("", c(&self.kv_replica_requests))]),
            ("hints_recorded", "Hints kept for home replicas that could not take a write.", None, &[("", c(&self.hints_recorded))]),
            ("hints_delivered", "Hinted keys handed to their owner.", None, &[("", c(&self.hints_delivered))]),
            ("handoff_keys_sent", "Keys sent to nodes newly responsible for them after ring changes.", None, &[("", c(&self.handoff_keys_sent))]),
            ("handoff_bytes_sent", "Approximate bytes of those keys.", None, &[("", c(&self.handoff_bytes_sent))]),
            ("handoff_jobs", "Ring changes this node finished handing data over for.", None, &[("", c(&self.handoff_jobs))]),
            ("anti_entropy_rounds", "Hash-tree comparisons started with a peer.", None, &[("", c(&self.anti_entropy_rounds))]),
            ("anti_entropy_keys_repaired", "Keys anti-entropy changed here.", None, &[("", c(&self.anti_entropy_keys_repaired))]),
            ("tombstones_purged", "Tombstones collected after every replica held them.", None, &[("", c(&self.tombstones_purged))]),
            ("tombstones_refused_after_purge", "Copies of a tombstone this node had just collected, refused rather than taken back.", None, &[("", c(&self.tombstones_refused_after_purge))]),
            ("peer_requests_sent", "Requests sent to peers.", None, &[("", c(&self.peer_requests_sent))]),
            ("peer_request_failures", "Requests to peers that got no answer: no connection, refused, timed out, closed, or failed at the peer.", None, &[("", c(&self.peer_request_failures))]),
            ("peer_requests_served", "Peer requests this node answered.", None, &[("", c(&self.peer_requests_served))]),
            ("peer_connections_opened", "Connections to peers this node opened (handshake done).", None, &[("", c(&self.peer_connections_opened))]),
            ("peer_bytes_sent", "Bytes of requests this node sent to peers, frames included.", None, &[("", c(&self.peer_bytes_sent))]),
            ("peer_bytes_received", "Bytes of answers this node received from peers, frames included.", None, &[("", c(&self.peer_bytes_received))]),
            ("peer_frames_refused", "Peer frames refused: malformed, oversized, or a refused handshake.", None, &[("", c(&self.peer_frames_refused))]),
            ("peer_handshakes_refused", "Peer connections refused at the handshake, by reason.", Some("reason"), &[
                ("unauthenticated", c(&self.peer_handshakes_refused_unauthenticated)),
                ("other", c(&self.peer_handshakes_refused_other)),
            ]),
            ("peer_connections_refused", "Peer connections closed unread: too many from one address, or in all.", None, &[("", c(&self.peer_connections_refused_limit))]),
            ("peer_connections_idle_closed", "Peer connections closed after sending nothing for the idle timeout.", None, &[("", c(&self.peer_connections_idle_closed))]),
            ("peer_requests_refused", "Peer requests refused, by reason: the sender is not a member, the request is outside its role, or it carries a value over --max-value-bytes.", Some("reason"), &[
                ("not_member", c(&self.peer_requests_refused_not_member)),
                ("role", c(&self.peer_requests_refused_role)),
                ("too_large", c(&self.peer_requests_refused_too_large)),
            ]),
            ("http_requests_refused", "HTTP requests refused before their handler, by reason: no bearer token, a token the node does not know, a role too weak for the call, or an admin call from another host on a node without tokens.", Some("reason"), &[
                ("no_token", c(&self.http_requests_refused_no_token)),
                ("unknown_token", c(&self.http_requests_refused_unknown_token)),
                ("role", c(&self.http_requests_refused_role)),
                ("not_this_host", c(&self.http_requests_refused_not_this_host)),
            ]),
            ("http_requests_shed", "HTTP requests answered 503 at once because every place for a waiting request was taken (--max-waiting-requests).", None, &[("", c(&self.http_requests_shed))]),
        ];
        let fixed: &[(&str, &str, u64)] = &[
            (
                "gossip_datagram_max_bytes",
                "Largest gossip datagram sent.",
                self.gossip_datagram_max_bytes.get(),
            ),
            (
                "handoff_running",
                "1 while a ring change is handing data over.",
                self.handoff_running.get(),
            ),
            (
                "hints_pending",
                "Hinted keys waiting for their owner.",
                self.hints_pending.get(),
            ),
            (
                "kv_watches_open",
                "Watches waiting for a key to change.",
                self.kv_watches_open.get(),
            ),
            (
                "swim_local_health",
                "Local health score: 0 is healthy; timeouts stretch by score + 1.",
                self.swim_local_health.get(),
            ),
        ];
        let mut gauges: Vec<GaugeFamily> = fixed
            .iter()
            .map(|(name, help, value)| (*name, *help, None, vec![("", gauge_value(*value))]))
            .collect();
        if let Some(members) = &figures.members_by_state {
            let samples = members.iter().map(|(state, n)| (*state, gauge_value(*n)));
            gauges.push((
                "members",
                "Members this node knows of, itself included, by state.",
                Some("state"),
                samples.collect(),
            ));
        }
        if let Some(keys) = figures.keys_stored {
            gauges.push(("keys_stored", "Keys this node holds, tombstones included until collected (the engine's approximate count).", None, vec![("", gauge_value(keys))]));
        }
        if let Some(bytes) = figures.bytes_stored {
            gauges.push((
                "bytes_stored",
                "Bytes this node's storage engine holds (on disk: its files, journal included).",
                None,
                vec![("", gauge_value(bytes))],
            ));
        }
        let snapshot = Snapshot {
            counters: counters
                .iter()
                .map(|(name, help, label, samples)| (*name, *help, *label, samples.to_vec()))
                .collect(),
            gauges,
        };
        let mut registry = Registry::with_prefix("dnd");
        registry.register_collector(Box::new(snapshot));
        registry.register_with_unit(
            "http_request_duration",
            "HTTP requests by route pattern, method and status class, from the first byte read to the answer handed to the server",
            Unit::Seconds,
            self.latencies.http.clone(),
        );
        registry.register_with_unit(
            "replica_request_duration",
            "Requests to peers by kind and outcome, from the call to the answer (or the failure), waits for a connection included",
            Unit::Seconds,
            self.latencies.replica.clone(),
        );
        registry.register_with_unit(
            "storage_operation_duration",
            "Storage engine calls by operation",
            Unit::Seconds,
            self.latencies.storage.clone(),
        );
        let mut out = String::new();
        // Writing to a String cannot fail, and every metric here encodes.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
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
        let text = metrics.render_prometheus(&ScrapeFigures::default());
        assert!(text.contains("dnd_gossip_datagrams_dropped_total{reason=\"wrong_cluster\"} 2"));
        assert!(text.contains("dnd_gossip_datagrams_dropped_total{reason=\"malformed\"} 1"));
    }

    fn parsed(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("not the Prometheus text format: {e}\n{text}"))
    }

    #[test]
    fn a_prometheus_parser_reads_every_family_with_its_type() {
        let metrics = Metrics::default();
        metrics.kv_gets.add(3);
        let request = |status, ms| {
            metrics.latencies.observe_http(
                HttpLabels {
                    route: "/kv/:key".into(),
                    method: "GET",
                    status,
                },
                Duration::from_millis(ms),
            )
        };
        request("2xx", 2);
        request("2xx", 40);
        request("5xx", 3000);
        metrics
            .latencies
            .observe_replica("read", true, Duration::from_micros(300));
        let figures = ScrapeFigures {
            members_by_state: Some(vec![("alive", 2), ("dead", 1)]),
            keys_stored: Some(10),
            bytes_stored: Some(4096),
        };
        let scrape = parsed(&metrics.render_prometheus(&figures));
        let sample = |name: &str, label: Option<(&str, &str)>| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
                .map(|s| s.value.clone())
        };
        use prometheus_parse::Value;
        assert!(matches!(
            sample("dnd_kv_requests_total", Some(("op", "get"))),
            Some(Value::Counter(v)) if v == 3.0
        ));
        assert!(matches!(
            sample("dnd_members", Some(("state", "dead"))),
            Some(Value::Gauge(v)) if v == 1.0
        ));
        assert!(matches!(sample("dnd_bytes_stored", None), Some(Value::Gauge(v)) if v == 4096.0));
        let Some(Value::Histogram(buckets)) =
            sample("dnd_http_request_duration_seconds", Some(("status", "2xx")))
        else {
            panic!("no HTTP histogram of 2xx answers");
        };
        let at = |bound: f64| {
            buckets
                .iter()
                .find(|b| b.less_than == bound)
                .map(|b| b.count)
        };
        assert_eq!(at(0.0025), Some(1.0), "2 ms falls under 2.5 ms");
        assert_eq!(at(0.05), Some(2.0), "40 ms under 50 ms");
        assert_eq!(at(f64::INFINITY), Some(2.0));
        assert!(
            sample(
                "dnd_replica_request_duration_seconds",
                Some(("kind", "read"))
            )
            .is_some(),
            "replica round-trips are there"
        );
    }

    #[test]
    fn figures_an_actor_did_not_give_are_left_out() {
        let text = Metrics::default().render_prometheus(&ScrapeFigures::default());
        assert!(!text.contains("dnd_members"), "{text}");
        assert!(!text.contains("dnd_keys_stored"));
        assert!(text.contains("# TYPE dnd_hints_pending gauge"));
        assert!(
            text.lines()
                .all(|l| !l.starts_with("# HELP") || !l.ends_with("..")),
            "one full stop after each help text"
        );
    }
}
