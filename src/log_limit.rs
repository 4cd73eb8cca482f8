//! At most one log line per source per interval, so a hostile sender can
//! make a node count its refusals but never flood its logs.
//!
//! Owns only the memory of when each source was last logged. Pure: the
//! caller passes the time, so the state machines that use it stay free of
//! clocks. It must never decide whether something is refused, only whether
//! the refusal is worth a line.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How often one source may be logged by default.
pub const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Sources remembered at most; past that the stale ones are forgotten, and
/// if none is stale, new sources are not logged until some are.
const MAX_SOURCES: usize = 1024;

#[derive(Debug)]
pub struct LogLimit<K> {
    interval: Duration,
    last: HashMap<K, Instant>,
}

impl<K: Hash + Eq> LogLimit<K> {
    pub fn new(interval: Duration) -> Self {
        LogLimit {
            interval,
            last: HashMap::new(),
        }
    }

    /// Whether a line about `source` may be logged at `now`; if so, it is
    /// counted as logged.
    pub fn allow(&mut self, source: K, now: Instant) -> bool {
        if let Some(at) = self.last.get(&source) {
            if now.saturating_duration_since(*at) < self.interval {
                return false;
            }
        } else if self.last.len() >= MAX_SOURCES {
            let interval = self.interval;
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) < interval);
            if self.last.len() >= MAX_SOURCES {
                return false;
            }
        }
        self.last.insert(source, now);
        true
    }
}

impl<K: Hash + Eq> Default for LogLimit<K> {
    fn default() -> Self {
        LogLimit::new(DEFAULT_LOG_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_per_interval() {
        let mut limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(limit.allow("a", t0));
        assert!(!limit.allow("a", t0 + Duration::from_secs(9)));
        assert!(limit.allow("b", t0 + Duration::from_secs(9)));
        assert!(limit.allow("a", t0 + Duration::from_secs(10)));
    }

    #[test]
    fn a_flood_of_sources_is_bounded() {
        let mut limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let logged = (0..10 * MAX_SOURCES)
            .filter(|&i| limit.allow(i, t0))
            .count();
        assert_eq!(logged, MAX_SOURCES);
        assert!(limit.last.len() <= MAX_SOURCES);
        // Once the interval passes, new sources are heard again.
        assert!(limit.allow(usize::MAX, t0 + Duration::from_secs(10)));
    }
}
