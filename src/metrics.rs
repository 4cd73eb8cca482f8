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

/// A counter's name, help text, and its samples as (labels, value).
type CounterFamily<'a> = (&'a str, &'a str, &'a [(&'a str, u64)]);

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

    pub fn render_prometheus(&self) -> String {
        let c = Counter::get;
        let counters: &[CounterFamily] = &[
            ("gossip_datagrams_received_total", "Gossip datagrams received, valid or not.", &[("", c(&self.gossip_datagrams_received))]),
            ("gossip_bytes_received_total", "Bytes of gossip datagrams received.", &[("", c(&self.gossip_bytes_received))]),
            ("gossip_datagrams_sent_total", "Gossip datagrams sent.", &[("", c(&self.gossip_datagrams_sent))]),
            ("gossip_bytes_sent_total", "Bytes of gossip datagrams sent.", &[("", c(&self.gossip_bytes_sent))]),
            ("gossip_send_failures_total", "Gossip datagrams the socket refused to send.", &[("", c(&self.gossip_send_failures))]),
            ("gossip_datagrams_dropped_total", "Gossip datagrams refused, by reason.", &[
                ("{reason=\"oversized\"}", c(&self.gossip_dropped_oversized)),
                ("{reason=\"malformed\"}", c(&self.gossip_dropped_malformed)),
                ("{reason=\"wrong_version\"}", c(&self.gossip_dropped_wrong_version)),
                ("{reason=\"wrong_cluster\"}", c(&self.gossip_dropped_wrong_cluster)),
                ("{reason=\"unauthenticated\"}", c(&self.gossip_dropped_unauthenticated)),
            ]),
            ("gossip_news_refused_total", "Membership news from inside the cluster refused, by reason: an incarnation no member reaches, a full member table, a join with other cluster settings.", &[
                ("{reason=\"incarnation\"}", c(&self.gossip_rumors_refused_incarnation)),
                ("{reason=\"member_table_full\"}", c(&self.gossip_members_refused_full)),
                ("{reason=\"settings\"}", c(&self.gossip_joins_refused_settings)),
            ]),
            ("gossip_unexpected_replies_total", "Acks and nacks for no probe in flight (late, duplicated or forged).", &[("", c(&self.gossip_unexpected_replies))]),
            ("gossip_oversized_not_sent_total", "Messages not sent because they exceeded the datagram limit.", &[("", c(&self.gossip_oversized_not_sent))]),
            ("gossip_socket_restarts_total", "Times the gossip socket was bound again after an error.", &[("", c(&self.gossip_socket_restarts))]),
            ("swim_probes_total", "Direct probes sent.", &[("", c(&self.swim_probes))]),
            ("swim_probes_without_direct_ack_total", "Probes with no direct ack within the probe timeout: lost datagrams or slow members.", &[("", c(&self.swim_probes_without_direct_ack))]),
            ("swim_probe_failures_total", "Probes with no ack at all by the end of the period.", &[("", c(&self.swim_probe_failures))]),
            ("swim_indirect_probes_total", "Ping-req messages sent.", &[("", c(&self.swim_indirect_probes))]),
            ("swim_suspicions_raised_total", "Members this node suspected.", &[("", c(&self.swim_suspicions_raised))]),
            ("swim_members_declared_dead_total", "Suspicions that expired into deaths here.", &[("", c(&self.swim_members_declared_dead))]),
            ("swim_refutations_total", "Rumors about this node it refuted with a new incarnation.", &[("", c(&self.swim_refutations))]),
            ("swim_push_pulls_total", "Full-state exchanges started.", &[("", c(&self.swim_push_pulls))]),
            ("swim_dead_probes_total", "Pings sent to members declared dead, in case they are alive after all.", &[("", c(&self.swim_dead_probes))]),
            ("swim_relays_refused_total", "Indirect probes refused because too many were in flight.", &[("", c(&self.swim_relays_refused))]),
            ("swim_late_timers_total", "Protocol periods that started late enough to hint this node is slow.", &[("", c(&self.swim_late_timers))]),
            ("actor_restarts_total", "Actor restarts by their supervisor.", &[
                ("{actor=\"store\"}", c(&self.actor_restarts_store)),
                ("{actor=\"gossip\"}", c(&self.actor_restarts_gossip)),
                ("{actor=\"membership\"}", c(&self.actor_restarts_membership)),
            ]),
            ("kv_requests_total", "Key-value requests handled by the Store, by operation.", &[
                ("{op=\"get\"}", c(&self.kv_gets)),
                ("{op=\"put\"}", c(&self.kv_puts)),
                ("{op=\"delete\"}", c(&self.kv_deletes)),
            ]),
            ("kv_storage_errors_total", "Storage engine errors seen by the Store.", &[("", c(&self.kv_storage_errors))]),
            ("kv_writes_coordinated_total", "Client writes this node versioned and replicated.", &[("", c(&self.kv_writes_coordinated))]),
            ("kv_writes_forwarded_total", "Client writes forwarded to a home replica of their key.", &[("", c(&self.kv_writes_forwarded))]),
            ("kv_write_quorum_failures_total", "Coordinated writes that fewer than W replicas stored in time.", &[("", c(&self.kv_quorum_failures))]),
            ("kv_refused_unreachable_total", "Reads and writes answered 503 at once: fewer replicas than the quorum were reachable as far as this node knew.", &[("", c(&self.kv_refused_unreachable))]),
            ("kv_reads_without_home_total", "Reads answered 503 because only stand-ins answered and none held a value (a not-found from them would be a guess).", &[("", c(&self.kv_reads_without_home))]),
            ("kv_peers_marked_unreachable_total", "Times a peer that gave no answer to a replica request was set aside for a short hold.", &[("", c(&self.kv_peers_marked_unreachable))]),
            ("kv_contexts_looked_up_total", "Writes whose context named versions the coordinator's copy lacked, checked against the other home replicas first.", &[("", c(&self.kv_contexts_looked_up))]),
            ("kv_writes_refused_total", "Writes refused before anything was stored, by reason: a context naming versions no replica holds, or too many siblings.", &[
                ("{reason=\"unknown_context\"}", c(&self.kv_writes_refused_unknown_context)),
                ("{reason=\"siblings\"}", c(&self.kv_writes_refused_siblings)),
                ("{reason=\"precondition\"}", c(&self.kv_writes_precondition_failed)),
            ]),
            ("kv_list_pages_total", "Listing pages this node coordinated, by outcome.", &[
                ("{outcome=\"ok\"}", c(&self.kv_list_pages)),
                ("{outcome=\"unavailable\"}", c(&self.kv_list_pages_failed)),
            ]),
            ("kv_batches_total", "Batch requests served.", &[("", c(&self.kv_batches))]),
            ("kv_batch_operations_total", "Operations in the batch requests served.", &[("", c(&self.kv_batch_operations))]),
            ("kv_watches_answered_total", "Watches answered, with news or at their timeout.", &[("", c(&self.kv_watches_answered))]),
            ("kv_watches_refused_total", "Watches refused because this node had as many open as it takes.", &[("", c(&self.kv_watches_refused))]),
            ("kv_sibling_warnings_total", "Writes that left a key with 25 or more siblings.", &[("", c(&self.kv_sibling_warnings))]),
            ("kv_read_repairs_total", "Replicas sent the merged version after a read found them behind.", &[("", c(&self.kv_read_repairs))]),
            ("kv_replica_requests_total", "Replica reads, writes and forwarded writes served for other nodes.", &[("", c(&self.kv_replica_requests))]),
            ("hints_recorded_total", "Hints kept for home replicas that could not take a write.", &[("", c(&self.hints_recorded))]),
            ("hints_delivered_total", "Hinted keys handed to their owner.", &[("", c(&self.hints_delivered))]),
            ("handoff_keys_sent_total", "Keys sent to nodes newly responsible for them after ring changes.", &[("", c(&self.handoff_keys_sent))]),
            ("handoff_bytes_sent_total", "Approximate bytes of those keys.", &[("", c(&self.handoff_bytes_sent))]),
            ("handoff_jobs_total", "Ring changes this node finished handing data over for.", &[("", c(&self.handoff_jobs))]),
            ("anti_entropy_rounds_total", "Hash-tree comparisons started with a peer.", &[("", c(&self.anti_entropy_rounds))]),
            ("anti_entropy_keys_repaired_total", "Keys anti-entropy changed here.", &[("", c(&self.anti_entropy_keys_repaired))]),
            ("tombstones_purged_total", "Tombstones collected after every replica held them.", &[("", c(&self.tombstones_purged))]),
            ("tombstones_refused_after_purge_total", "Copies of a tombstone this node had just collected, refused rather than taken back.", &[("", c(&self.tombstones_refused_after_purge))]),
            ("peer_requests_sent_total", "Requests sent to peers.", &[("", c(&self.peer_requests_sent))]),
            ("peer_request_failures_total", "Requests to peers that got no answer: no connection, refused, timed out, closed, or failed at the peer.", &[("", c(&self.peer_request_failures))]),
            ("peer_requests_served_total", "Peer requests this node answered.", &[("", c(&self.peer_requests_served))]),
            ("peer_connections_opened_total", "Connections to peers this node opened (handshake done).", &[("", c(&self.peer_connections_opened))]),
            ("peer_bytes_sent_total", "Bytes of requests this node sent to peers, frames included.", &[("", c(&self.peer_bytes_sent))]),
            ("peer_bytes_received_total", "Bytes of answers this node received from peers, frames included.", &[("", c(&self.peer_bytes_received))]),
            ("peer_frames_refused_total", "Peer frames refused: malformed, oversized, or a refused handshake.", &[("", c(&self.peer_frames_refused))]),
            ("peer_handshakes_refused_total", "Peer connections refused at the handshake, by reason.", &[
                ("{reason=\"unauthenticated\"}", c(&self.peer_handshakes_refused_unauthenticated)),
                ("{reason=\"other\"}", c(&self.peer_handshakes_refused_other)),
            ]),
            ("peer_connections_refused_total", "Peer connections closed unread: too many from one address, or in all.", &[("", c(&self.peer_connections_refused_limit))]),
            ("peer_connections_idle_closed_total", "Peer connections closed after sending nothing for the idle timeout.", &[("", c(&self.peer_connections_idle_closed))]),
            ("peer_requests_refused_total", "Peer requests refused, by reason: the sender is not a member, the request is outside its role, or it carries a value over --max-value-bytes.", &[
                ("{reason=\"not_member\"}", c(&self.peer_requests_refused_not_member)),
                ("{reason=\"role\"}", c(&self.peer_requests_refused_role)),
                ("{reason=\"too_large\"}", c(&self.peer_requests_refused_too_large)),
            ]),
            ("http_requests_refused_total", "HTTP requests refused before their handler, by reason: no bearer token, a token the node does not know, a role too weak for the call, or an admin call from another host on a node without tokens.", &[
                ("{reason=\"no_token\"}", c(&self.http_requests_refused_no_token)),
                ("{reason=\"unknown_token\"}", c(&self.http_requests_refused_unknown_token)),
                ("{reason=\"role\"}", c(&self.http_requests_refused_role)),
                ("{reason=\"not_this_host\"}", c(&self.http_requests_refused_not_this_host)),
            ]),
        ];
        let gauges: &[(&str, &str, u64)] = &[
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
        let mut out = String::new();
        for (name, help, samples) in counters {
            let _ = writeln!(out, "# HELP dnd_{name} {help}\n# TYPE dnd_{name} counter");
            for (labels, value) in samples.iter() {
                let _ = writeln!(out, "dnd_{name}{labels} {value}");
            }
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP dnd_{name} {help}\n# TYPE dnd_{name} gauge\ndnd_{name} {value}"
            );
        }
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
