//! Faults and the failure detector: partitions and crashes begin and end
//! at random, and each node learns who is reachable only after its own
//! delay, so it sends to nodes that are gone and shuns nodes that are back.
//!
//! Owns when faults happen and what a crash wipes (what the Store keeps in
//! memory: jobs, trees, rounds, the purge memory; never storage). Never
//! decides what a node does about them: that is the Store's code, run by
//! the other submodules.

use std::collections::BTreeSet;

use rand::Rng;

use super::anti_entropy::AeState;
use super::network::Cut;
use super::{Event, Life, Sim};
use crate::data::purge::PurgedTombstones;
use crate::ring::Ring;
use std::time::Duration;

impl Sim {
    /// Nodes that are members now (leaving ones included), crashed or not.
    pub(super) fn active(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| matches!(self.nodes[i].life, Life::Member | Life::Leaving))
            .collect()
    }

    pub(super) fn fault(&mut self) {
        if self.stopping {
            return;
        }
        self.next_fault += 1;
        let fault = self.next_fault;
        let lasting = self
            .rng
            .random_range(200..=self.config.max_fault_ms.max(200));
        let active = self.active();
        let n = active.len();
        match self.rng.random_range(0..4) {
            0 => {
                let node = active[self.rng.random_range(0..n)];
                if !self.nodes[node].crashed {
                    self.crash(node);
                    self.at(lasting, Event::Restart { node });
                }
            }
            3 => {
                // Two nodes that cannot reach each other while both reach
                // everyone else: no side is a partition of the cluster.
                let a = active[self.rng.random_range(0..n)];
                let b = active[self.rng.random_range(0..n)];
                if a != b {
                    self.count("non_transitive_partition");
                    self.cuts.push(Cut {
                        id: fault,
                        from: [a].into(),
                        to: [b].into(),
                    });
                    self.cuts.push(Cut {
                        id: fault,
                        from: [b].into(),
                        to: [a].into(),
                    });
                    self.at(lasting, Event::Heal { fault });
                }
            }
            kind => {
                // A random minority cut off, both ways or one way only.
                let size = self.rng.random_range(1..=n / 2);
                let mut minority = BTreeSet::new();
                while minority.len() < size {
                    minority.insert(active[self.rng.random_range(0..n)]);
                }
                let majority: BTreeSet<usize> = (0..self.nodes.len())
                    .filter(|i| !minority.contains(i))
                    .collect();
                let one_way = kind == 2;
                if one_way {
                    self.count("one_way_partition");
                } else {
                    self.count("partition");
                    self.cuts.push(Cut {
                        id: fault,
                        from: majority.clone(),
                        to: minority.clone(),
                    });
                }
                self.cuts.push(Cut {
                    id: fault,
                    from: minority,
                    to: majority,
                });
                self.at(lasting, Event::Heal { fault });
            }
        }
        self.observe_later();
        let next = self
            .rng
            .random_range(1..=2 * self.config.fault_every_ms.max(1));
        self.at(next, Event::Fault);
    }

    /// The process dies; storage (copies, hints, the settled ring) stays.
    pub(super) fn crash(&mut self, node: usize) {
        self.count("crash");
        tracing::debug!(t = self.now, node, "crash");
        let purge_memory = Duration::from_millis(self.config.purge_memory_ms);
        let n = &mut self.nodes[node];
        n.crashed = true;
        n.incarnation += 1;
        n.job = None;
        n.retry_from = None;
        n.trees_built = false;
        n.purged = PurgedTombstones::new(purge_memory);
        n.ae = AeState::default();
        n.gc = None;
        n.swim = None;
        n.swim_wake = None;
        if n.life == Life::Leaving {
            // The leave dies with the process; it comes back a member.
            n.life = Life::Member;
        }
        self.observe_later();
    }

    pub(super) fn restart(&mut self, node: usize) {
        let n = &self.nodes[node];
        if n.life == Life::Gone || !n.crashed || n.removing {
            return;
        }
        self.nodes[node].crashed = false;
        // The Store starts afresh, with the ring of a Membership that has
        // heard from nobody yet: this node alone. Its trees are rebuilt by
        // a job once it hears the ring its data was placed for.
        let alone = Ring::new([self.nodes[node].id], super::VNODES);
        self.nodes[node].epoch = None;
        self.on_ring(node, alone, false);
        if self.config.swim {
            self.start_swim(node);
        } else {
            self.learn_truth_later(node);
            self.observe_later();
        }
        self.schedule_ae_tick(node);
    }

    pub(super) fn stop_faults(&mut self) {
        self.stopping = true;
        self.cuts.clear();
        for node in 0..self.nodes.len() {
            if self.nodes[node].crashed {
                self.restart(node);
            }
        }
        for node in 0..self.nodes.len() {
            self.learn_truth_later(node);
        }
        self.observe_later();
    }

    /// Every running node will look again, each after its own lag.
    pub(super) fn observe_later(&mut self) {
        if self.config.swim {
            return;
        }
        for node in 0..self.nodes.len() {
            if self.runs(node) {
                let lag = self.rng.random_range(0..=self.config.view_lag_ms);
                self.at(lag, Event::Observe { node });
            }
        }
    }

    /// The failure detector's verdict: whom `node` can talk to now.
    pub(super) fn observe(&mut self, node: usize) {
        if !self.runs(node) {
            return;
        }
        let up: BTreeSet<_> = (0..self.nodes.len())
            .filter(|&other| other != node && self.talk(node, other))
            .map(|other| self.nodes[other].id)
            .collect();
        self.nodes[node].up = up;
    }
}
