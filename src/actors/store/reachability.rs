//! Which peers this node's own replica requests failed to reach lately.
//!
//! SWIM can go on calling a member alive that this node cannot reach: for
//! the seconds before it is suspected, behind a one-way cut, or in a ring of
//! partial partitions where indirect probes through a neighbour succeed.
//! Each request to such a member would wait the full replica timeout. So a
//! request that timed out or found no connection sets its peer aside:
//! placement treats it as down (its keys go to stand-ins with hints, as for
//! a dead member) and no client request waits on it. Meanwhile the Store
//! sends it a cheap `Ping` every probe interval; any answer from it (to a
//! ping or to anything else), or news of it from membership (a new
//! incarnation, a change of state), takes it back at once. A circuit
//! breaker, in short, whose half-open state costs no client a timeout.
//!
//! Owns those marks and nothing else: it is told outcomes and the time, and
//! must never send, wait or read a clock itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::peer::PeerError;

#[derive(Debug)]
pub struct Reachability {
    probe_interval: Duration,
    metrics: SharedMetrics,
    /// Each peer set aside, and when it is next due a ping.
    marks: Mutex<HashMap<NodeId, Instant>>,
}

impl Reachability {
    pub fn new(probe_interval: Duration, metrics: SharedMetrics) -> Self {
        Reachability {
            probe_interval,
            metrics,
            marks: Mutex::new(HashMap::new()),
        }
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Instant>> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns from one request's outcome; true if it newly set the peer
    /// aside.
    pub fn observe<T>(&self, node: NodeId, outcome: &Result<T, PeerError>, now: Instant) -> bool {
        match outcome {
            // No answer at all: the network, or a peer that is gone.
            Err(PeerError::Timeout(_) | PeerError::Connect { .. }) => {
                let mut marks = self.marks();
                if marks.contains_key(&node) {
                    return false;
                }
                marks.insert(node, now + self.probe_interval);
                self.metrics.kv_peers_marked_unreachable.inc();
                tracing::debug!(%node, "peer gave no answer; set aside until it answers a ping");
                true
            }
            // The peer answered, even if only to refuse: it is reachable.
            Ok(_) | Err(PeerError::Refused(_) | PeerError::Remote(_)) => {
                self.marks().remove(&node);
                false
            }
            // A connection that broke, or a request that could not be
            // encoded, says nothing either way.
            Err(_) => false,
        }
    }

    /// Takes `node` back: membership has news of it.
    pub fn forget(&self, node: NodeId) {
        self.marks().remove(&node);
    }

    pub fn is_unreachable(&self, node: NodeId) -> bool {
        self.marks().contains_key(&node)
    }

    /// The peers set aside whose next ping is due at `now`; each is due
    /// again one interval later, so a ping that times out (it waits at
    /// most one interval) is never joined by a second.
    pub fn due_for_ping(&self, now: Instant) -> Vec<NodeId> {
        let mut due = Vec::new();
        for (&node, next) in self.marks().iter_mut() {
            if *next <= now {
                *next = now + self.probe_interval;
                due.push(node);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: NodeId = NodeId::from_u64(7);
    const OTHER: NodeId = NodeId::from_u64(8);
    const INTERVAL: Duration = Duration::from_secs(1);

    fn reachability() -> Reachability {
        Reachability::new(INTERVAL, SharedMetrics::default())
    }

    fn timeout() -> Result<(), PeerError> {
        Err(PeerError::Timeout(INTERVAL))
    }

    #[test]
    fn a_timeout_sets_the_peer_aside_until_it_answers() {
        let reach = reachability();
        let now = Instant::now();
        assert!(!reach.is_unreachable(PEER));
        assert!(reach.observe(PEER, &timeout(), now));
        assert!(reach.is_unreachable(PEER));
        assert!(!reach.is_unreachable(OTHER), "only the peer that failed");
        assert!(!reach.observe(PEER, &timeout(), now), "counted once");
        let closed: Result<(), PeerError> = Err(PeerError::Closed);
        reach.observe(PEER, &closed, now);
        assert!(
            reach.is_unreachable(PEER),
            "a broken connection proves nothing"
        );
        reach.observe(PEER, &Ok(()), now + Duration::from_secs(60));
        assert!(!reach.is_unreachable(PEER));
    }

    #[test]
    fn any_answer_or_news_from_membership_takes_the_peer_back() {
        let reach = reachability();
        let now = Instant::now();
        reach.observe(PEER, &timeout(), now);
        let refused: Result<(), PeerError> = Err(PeerError::Refused("not home".into()));
        assert!(!reach.observe(PEER, &refused, now));
        assert!(!reach.is_unreachable(PEER));
        reach.observe(PEER, &timeout(), now);
        reach.forget(PEER);
        assert!(!reach.is_unreachable(PEER));
    }

    #[test]
    fn a_peer_set_aside_is_due_a_ping_once_per_interval() {
        let reach = reachability();
        let now = Instant::now();
        reach.observe(PEER, &timeout(), now);
        assert!(reach.due_for_ping(now).is_empty(), "not before an interval");
        let later = now + INTERVAL;
        assert_eq!(reach.due_for_ping(later), [PEER]);
        assert!(reach.due_for_ping(later).is_empty(), "one ping at a time");
        assert_eq!(reach.due_for_ping(later + INTERVAL), [PEER]);
        reach.observe(PEER, &Ok(()), later + INTERVAL);
        assert!(reach.due_for_ping(later + INTERVAL * 5).is_empty());
    }
}
