//! What a simulation is made of: the cluster's shape, the workload and the
//! fault mix, every knob with its default. Owns no behaviour.

use super::network::Delay;
use crate::replication::Replication;

/// One simulation's shape and fault mix.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Members at the start.
    pub nodes: usize,
    /// Empty nodes that join during the run, at most.
    pub joins: usize,
    /// Members that leave or are removed during the run, at most. More than
    /// N − W may lose acknowledged writes by design.
    pub departures: usize,
    pub replicas: usize,
    pub read_quorum: usize,
    pub write_quorum: usize,
    pub clients: usize,
    /// Keys the clients work on at a time.
    pub keys: usize,
    /// How long before clients move on to the next set of keys.
    pub key_window_ms: u64,
    /// Virtual time the clients run for, in ms.
    pub duration_ms: u64,
    /// After the clients stop: time for the network to heal, views to
    /// converge and hints, handoffs and anti-entropy to drain.
    pub drain_ms: u64,
    pub drop_rate: f64,
    pub duplicate_rate: f64,
    /// How long each message takes: later messages overtake earlier ones.
    pub delay: Delay,
    /// A message slower than this counts as a long delay among the faults.
    pub long_delay_ms: u64,
    /// How long a coordinator waits for one replica.
    pub replica_timeout_ms: u64,
    /// How often some fault (a partition or a crash) begins, on average.
    pub fault_every_ms: u64,
    pub max_fault_ms: u64,
    /// A node learns of a ring change, and of a node going down or coming
    /// back, within this long (each after its own delay).
    pub view_lag_ms: u64,
    /// Each node's anti-entropy tick (a tombstone collection step too).
    pub anti_entropy_every_ms: u64,
    pub tombstone_grace_ms: u64,
    /// Each node's wall clock is off by up to this much, either way.
    /// Collection is only as safe as the grace is long next to twice this
    /// (a clock ahead sees a tombstone from a clock behind as older).
    pub max_clock_skew_ms: u64,
    /// How long a purge is remembered (`data::purge`).
    pub purge_memory_ms: u64,
    /// When an incomplete ring-change job runs again.
    pub handoff_retry_ms: u64,
    /// How often a node delivers its hints.
    pub hint_every_ms: u64,
    /// Membership and liveness by SWIM over the simulated network; if
    /// not, by the simulation's own truth, each node learning it late.
    pub swim: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 5,
            joins: 2,
            departures: 1,
            replicas: 3,
            read_quorum: 2,
            write_quorum: 2,
            clients: 4,
            keys: 8,
            key_window_ms: 10_000,
            duration_ms: 60_000,
            drain_ms: 30_000,
            drop_rate: 0.05,
            duplicate_rate: 0.05,
            delay: Delay::LongTail {
                max_ms: 40,
                tail_rate: 0.01,
                tail_max_ms: 1_500,
            },
            long_delay_ms: 200,
            replica_timeout_ms: 200,
            fault_every_ms: 3_000,
            max_fault_ms: 5_000,
            view_lag_ms: 1_000,
            anti_entropy_every_ms: 1_000,
            tombstone_grace_ms: 20_000,
            max_clock_skew_ms: 2_000,
            purge_memory_ms: 60_000,
            handoff_retry_ms: 5_000,
            hint_every_ms: 100,
            swim: true,
        }
    }
}

impl SimConfig {
    pub(super) fn replication(&self) -> Replication {
        Replication {
            replicas: self.replicas,
            read_quorum: self.read_quorum,
            write_quorum: self.write_quorum,
        }
    }
}
