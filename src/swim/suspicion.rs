//! Lifeguard's dynamic suspicion timeout: a suspicion starts with a long
//! timeout that shrinks, logarithmically, as independent members confirm it.
//!
//! min = suspicion_mult · max(1, log10(n)) · T, max = suspicion_max_mult ·
//! min, and with c of the k expected confirmations the timeout is
//! max − (max − min) · ln(c + 1) / ln(k + 1), never below min.
//!
//! Pure arithmetic on instants the caller passes in: it must never read a
//! clock or decide a death by itself.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::member::Incarnation;
use crate::node_id::NodeId;

#[derive(Debug)]
pub struct Suspicion {
    pub incarnation: Incarnation,
    started: Instant,
    min: Duration,
    max: Duration,
    expected_confirmations: u32,
    accusers: HashSet<NodeId>,
    deadline: Instant,
}

/// The shortest suspicion timeout for a cluster of `cluster_size` members.
pub fn min_timeout(suspicion_mult: u32, cluster_size: usize, period: Duration) -> Duration {
    let scale = (cluster_size.max(1) as f64).log10().max(1.0);
    period.mul_f64(f64::from(suspicion_mult) * scale)
}

impl Suspicion {
    /// `first_accuser` is the member whose accusation started it; later
    /// accusations by others are confirmations.
    pub fn new(
        incarnation: Incarnation,
        first_accuser: NodeId,
        now: Instant,
        min: Duration,
        max: Duration,
        expected_confirmations: u32,
    ) -> Self {
        let mut accusers = HashSet::new();
        accusers.insert(first_accuser);
        let mut suspicion = Suspicion {
            incarnation,
            started: now,
            min,
            max: max.max(min),
            expected_confirmations,
            accusers,
            deadline: now,
        };
        suspicion.deadline = suspicion.started + suspicion.timeout();
        suspicion
    }

    fn confirmations(&self) -> u32 {
        (self.accusers.len() as u32).saturating_sub(1)
    }

    fn timeout(&self) -> Duration {
        if self.expected_confirmations == 0 {
            return self.min;
        }
        let c = f64::from(self.confirmations().min(self.expected_confirmations));
        let fraction = (c + 1.0).ln() / (f64::from(self.expected_confirmations) + 1.0).ln();
        let span = (self.max - self.min).as_secs_f64();
        let timeout = Duration::from_secs_f64(self.max.as_secs_f64() - span * fraction);
        timeout.max(self.min)
    }

    /// Records an accusation; returns true if it was a new, independent one
    /// (worth passing on, since it shortens others' timers too).
    pub fn confirm(&mut self, accuser: NodeId) -> bool {
        if !self.accusers.insert(accuser) {
            return false;
        }
        self.deadline = self.started + self.timeout();
        true
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId::from_u64(n)
    }

    #[test]
    fn the_minimum_grows_with_the_log_of_the_cluster() {
        let t = Duration::from_secs(1);
        assert_eq!(min_timeout(4, 1, t), Duration::from_secs(4));
        assert_eq!(min_timeout(4, 10, t), Duration::from_secs(4));
        assert_eq!(min_timeout(4, 100, t), Duration::from_secs(8));
        assert_eq!(min_timeout(4, 1000, t), Duration::from_secs(12));
    }

    #[test]
    fn confirmations_shrink_the_timeout_down_to_the_minimum() {
        let now = Instant::now();
        let (min, max) = (Duration::from_secs(4), Duration::from_secs(24));
        let mut s = Suspicion::new(0, id(1), now, min, max, 2);
        assert_eq!(s.deadline(), now + max);
        assert!(s.confirm(id(2)));
        let after_one = s.deadline() - now;
        assert!(after_one < max && after_one > min, "{after_one:?}");
        assert!(
            !s.confirm(id(2)),
            "the same accuser twice is not independent"
        );
        assert!(s.confirm(id(3)));
        assert_eq!(s.deadline(), now + min);
        assert!(s.confirm(id(4)));
        assert_eq!(s.deadline(), now + min, "never below the minimum");
    }

    #[test]
    fn with_no_confirmations_expected_the_minimum_applies_at_once() {
        let now = Instant::now();
        let s = Suspicion::new(
            0,
            id(1),
            now,
            Duration::from_secs(4),
            Duration::from_secs(24),
            0,
        );
        assert_eq!(s.deadline(), now + Duration::from_secs(4));
    }
}
