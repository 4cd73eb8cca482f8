//! Which peers this node's own replica requests failed to reach lately.
//!
//! SWIM can go on calling a member alive that this node cannot reach: for
//! the seconds before it is suspected, behind a one-way cut, or in a ring of
//! partial partitions where indirect probes through a neighbour succeed.
//! Each request to such a member would wait the full replica timeout. So a
//! request that timed out or found no connection marks its peer unreachable
//! for a short hold, placement treats the peer as down meanwhile (its keys
//! go to stand-ins with hints, as for a dead member), and any answer from
//! the peer clears the mark at once. When the hold ends, the next request
//! tries the peer again.
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
    hold: Duration,
    metrics: SharedMetrics,
    /// Until when each marked peer counts as unreachable.
    marks: Mutex<HashMap<NodeId, Instant>>,
}

impl Reachability {
    pub fn new(hold: Duration, metrics: SharedMetrics) -> Self {
        Reachability {
            hold,
            metrics,
            marks: Mutex::new(HashMap::new()),
        }
    }

    /// Learns from one request's outcome; true if it newly marked the peer.
    pub fn observe<T>(&self, node: NodeId, outcome: &Result<T, PeerError>, now: Instant) -> bool {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            // No answer at all: the network, or a peer that is gone.
            Err(PeerError::Timeout(_) | PeerError::Connect { .. }) => {
                let newly = marks.get(&node).is_none_or(|&until| until <= now);
                marks.insert(node, now + self.hold);
                if newly {
                    self.metrics.kv_peers_marked_unreachable.inc();
                    tracing::debug!(%node, hold = ?self.hold, "peer gave no answer; set aside");
                }
                newly
            }
            // The peer answered, even if only to refuse: it is reachable.
            Ok(_) | Err(PeerError::Refused(_) | PeerError::Remote(_)) => {
                marks.remove(&node);
                false
            }
            // A connection that broke, or a request that could not be
            // encoded, says nothing either way.
            Err(_) => false,
        }
    }

    pub fn is_unreachable(&self, node: NodeId, now: Instant) -> bool {
        let marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        marks.get(&node).is_some_and(|&until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: NodeId = NodeId::from_u64(7);
    const OTHER: NodeId = NodeId::from_u64(8);

    fn timeout() -> Result<(), PeerError> {
        Err(PeerError::Timeout(Duration::from_secs(1)))
    }

    #[test]
    fn a_timeout_marks_the_peer_for_the_hold_and_no_longer() {
        let reach = Reachability::new(Duration::from_secs(3), SharedMetrics::default());
        let now = Instant::now();
        assert!(!reach.is_unreachable(PEER, now));
        assert!(reach.observe(PEER, &timeout(), now));
        assert!(reach.is_unreachable(PEER, now + Duration::from_secs(2)));
        assert!(
            !reach.is_unreachable(OTHER, now),
            "only the peer that failed"
        );
        assert!(!reach.is_unreachable(PEER, now + Duration::from_secs(3)));
    }

    #[test]
    fn any_answer_clears_the_mark_even_a_refusal() {
        let reach = Reachability::new(Duration::from_secs(3), SharedMetrics::default());
        let now = Instant::now();
        reach.observe(PEER, &timeout(), now);
        let refused: Result<(), PeerError> = Err(PeerError::Refused("not home".into()));
        assert!(!reach.observe(PEER, &refused, now));
        assert!(!reach.is_unreachable(PEER, now));
        reach.observe(PEER, &timeout(), now);
        reach.observe(PEER, &Ok(()), now);
        assert!(!reach.is_unreachable(PEER, now));
    }

    #[test]
    fn a_second_failure_extends_the_hold_but_counts_once() {
        let reach = Reachability::new(Duration::from_secs(3), SharedMetrics::default());
        let now = Instant::now();
        assert!(reach.observe(PEER, &timeout(), now));
        let later = now + Duration::from_secs(2);
        assert!(!reach.observe(PEER, &timeout(), later), "already marked");
        assert!(reach.is_unreachable(PEER, now + Duration::from_secs(4)));
        assert!(reach.observe(PEER, &timeout(), now + Duration::from_secs(6)));
    }
}
