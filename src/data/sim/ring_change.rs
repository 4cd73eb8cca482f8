//! Membership changes and the ring-change job: nodes join empty, leave
//! after handing their keys over, or are removed while down; every node
//! learns each change after its own delay and moves its data as the
//! Store's ring-change job does (`actors::store::ring_change`), with
//! `data::handoff`'s plan and drop rule.
//!
//! Owns the true membership, each node's lagging view of it, and the job's
//! glue: one step over every key the node holds (the Store's step is 256
//! keys, more than a seed has), a batch per target as a message that can be
//! lost, the drop after every target stored it, a retry after a failed
//! step, and a leave that goes once its one pass is over. Never decides
//! what moves or what is dropped: `RingChange::plan` and
//! `drops_after_handoff` do.

use crate::data::placement::keeps_settled_ring;
use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;

use super::network::Msg;
use super::{Event, Life, Sim, VNODES};
use crate::data::handoff::{drops_after_handoff, RingChange, StepPlan};
use crate::data::placement::home_of;
use crate::node_id::NodeId;
use crate::ring::Ring;
use crate::version::Dot;

pub(super) struct Job {
    id: u64,
    from: Ring,
    pub to: Ring,
    leaving: bool,
    scanned: bool,
    failed: bool,
    sending: Option<Sending>,
}

/// A step's batches in flight.
struct Sending {
    /// Per ticket, the target it went to.
    waiting: BTreeMap<u64, NodeId>,
    failed_targets: BTreeSet<NodeId>,
    targets: BTreeSet<NodeId>,
    /// Keys to drop once their targets all stored them.
    drops: Vec<(String, BTreeSet<Dot>, Vec<NodeId>)>,
}

impl Sim {
    /// Picks when this seed's joins and departures happen.
    pub(super) fn schedule_ring_changes(&mut self) {
        let span = self.config.duration_ms;
        for _ in 0..self.config.joins {
            if self.rng.random_bool(0.7) {
                let at = self.rng.random_range(span / 20..=span * 4 / 5);
                self.at(at, Event::Join);
            }
        }
        for _ in 0..self.config.departures {
            if self.rng.random_bool(0.7) {
                let at = self.rng.random_range(span / 20..=span * 4 / 5);
                self.at(at, Event::Depart);
            }
        }
    }

    /// A membership change: every member learns it after its own delay.
    fn membership_changed(&mut self) {
        self.epoch += 1;
        tracing::debug!(t = self.now, members = ?self.members, "membership changed");
        for node in 0..self.nodes.len() {
            self.learn_truth_later(node);
        }
    }

    pub(super) fn learn_truth_later(&mut self, node: usize) {
        if self.config.swim
            || !matches!(self.nodes[node].life, Life::Member | Life::Leaving)
            || self.nodes[node].epoch.is_some_and(|e| e >= self.epoch)
        {
            return;
        }
        let lag = self.rng.random_range(0..=self.config.view_lag_ms);
        let members = self.members.iter().copied().collect();
        let epoch = self.epoch;
        self.at(
            lag,
            Event::LearnRing {
                node,
                epoch,
                members,
            },
        );
    }

    pub(super) fn learn_ring(&mut self, node: usize, epoch: u64, members: Vec<NodeId>) {
        // A crashed node hears of it once it is back.
        if !self.runs(node) || self.nodes[node].epoch.is_some_and(|e| e >= epoch) {
            return;
        }
        self.nodes[node].epoch = Some(epoch);
        self.on_ring(node, Ring::new(members, VNODES), true);
    }

    pub(super) fn join(&mut self) {
        if self.stopping {
            return;
        }
        let Some(node) = (0..self.nodes.len()).find(|&i| self.nodes[i].life == Life::Waiting)
        else {
            return;
        };
        self.count("join");
        let id = self.nodes[node].id;
        self.members.insert(id);
        self.membership_changed();
        let n = &mut self.nodes[node];
        n.life = Life::Member;
        n.up = BTreeSet::new();
        if self.config.swim {
            // It knows itself, and learns the rest by joining.
            let alone = Ring::new([id], VNODES);
            n.ring = alone.clone();
            self.on_ring(node, alone, false);
            self.start_swim(node);
        } else {
            // It joined through a member and knows the ring it joined.
            let ring = Ring::new(self.members.iter().copied(), VNODES);
            n.epoch = Some(self.epoch);
            n.ring = ring.clone();
            self.on_ring(node, ring, true);
            self.observe_later();
        }
        self.schedule_ae_tick(node);
    }

    /// A member leaves (handing its keys over first), or is taken down
    /// and removed.
    pub(super) fn depart(&mut self) {
        if self.stopping {
            return;
        }
        let members: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].life == Life::Member)
            .collect();
        if members.len() <= self.config.replicas {
            return;
        }
        let node = members[self.rng.random_range(0..members.len())];
        if self.rng.random_bool(0.5) && !self.nodes[node].crashed {
            self.count("leave");
            self.leave(node);
        } else {
            if !self.nodes[node].crashed {
                self.crash(node);
            }
            self.nodes[node].removing = true;
            let after = self.rng.random_range(200..=2_000);
            self.at(after, Event::Remove { node });
        }
    }

    /// `HandOffForLeave`: a job to the ring without this node, in which it
    /// keeps its copies; it goes once the job is over.
    fn leave(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.life = Life::Leaving;
        let me = n.id;
        let to = Ring::new(n.ring.nodes().iter().copied().filter(|&i| i != me), VNODES);
        let from = n.settled.clone().unwrap_or_else(|| n.ring.clone());
        self.start_job(node, from, to, true);
    }

    /// Takes a node out for good: its storage goes with it.
    pub(super) fn remove(&mut self, node: usize) {
        if self.nodes[node].life == Life::Gone {
            return;
        }
        if !self.nodes[node].crashed {
            self.crash(node);
        }
        if self.config.swim && !self.swim_remove(node) {
            return;
        }
        self.count("removal");
        self.gone(node);
    }

    fn gone(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.life = Life::Gone;
        n.job = None;
        n.copies.clear();
        n.hints = Default::default();
        let id = n.id;
        self.members.remove(&id);
        self.membership_changed();
        self.observe_later();
    }

    /// The Store's `MembersChanged`: the ring it serves
    /// (`data::placement::keeps_settled_ring`), then `Handoff::on_ring`.
    pub(super) fn on_ring(&mut self, node: usize, ring: Ring, heard_of_others: bool) {
        let n = &mut self.nodes[node];
        if keeps_settled_ring(&ring, n.settled.as_ref(), heard_of_others) {
            n.ring = n.settled.clone().expect("kept only when there is one");
            return;
        }
        n.ring = ring.clone();
        if n.life == Life::Leaving {
            return;
        }
        let settled = n.settled.clone();
        // A ring of this node alone while its data was placed for more: it
        // has not heard from the cluster yet, not lost it.
        if ring.len() == 1 && settled.as_ref().is_some_and(|s| s.len() > 1) {
            return;
        }
        let heading_for = n.job.as_ref().map(|job| job.to.clone()).or(settled.clone());
        let already_there = heading_for.is_some_and(|to| to.nodes() == ring.nodes());
        if already_there && (n.trees_built || n.job.is_some()) {
            return;
        }
        let from = n
            .job
            .as_ref()
            .map(|job| job.from.clone())
            .or(settled)
            .unwrap_or_else(|| ring.clone());
        self.start_job(node, from, ring, false);
    }

    fn start_job(&mut self, node: usize, from: Ring, to: Ring, leaving: bool) {
        tracing::debug!(t = self.now, node, from = ?from.nodes(), to = ?to.nodes(), leaving, "job");
        if self.nodes[node].job.is_some() {
            self.count("handoff_restarted");
        }
        let id = self.ticket();
        self.nodes[node].job = Some(Job {
            id,
            from,
            to,
            leaving,
            scanned: false,
            failed: false,
            sending: None,
        });
        self.job_step(node);
    }

    fn job_step(&mut self, node: usize) {
        let Some(job) = &self.nodes[node].job else {
            return;
        };
        if job.scanned {
            return self.finish_job(node);
        }
        let n = &self.nodes[node];
        let change = RingChange {
            from: &job.from,
            to: &job.to,
            replication: &self.replication,
            local_id: n.id,
            leaving: job.leaving,
        };
        let StepPlan { outgoing, drops } = change.plan_step(
            &n.copies,
            |id| self.is_up(node, id),
            |key| n.hints.any_for_key(key),
        );
        tracing::trace!(t = self.now, node, ?outgoing, ?drops, "planned");
        let leaving = job.leaving.then_some(n.id);
        let job_id = job.id;
        let mut sending = Sending {
            waiting: BTreeMap::new(),
            failed_targets: BTreeSet::new(),
            targets: outgoing.keys().copied().collect(),
            drops,
        };
        if let Some(job) = &mut self.nodes[node].job {
            job.scanned = true;
        }
        if outgoing.is_empty() && sending.drops.is_empty() {
            return self.job_step(node);
        }
        let timeout = self.config.replica_timeout_ms * 3;
        for (target, objects) in outgoing {
            let ticket = self.ticket();
            sending.waiting.insert(ticket, target);
            let to = self.index_of(target);
            self.send(
                node,
                to,
                Msg::Batch {
                    ticket: Some(ticket),
                    objects,
                    leaving,
                },
            );
            self.time_out(node, ticket, timeout);
        }
        let done = sending.waiting.is_empty();
        if let Some(job) = self.nodes[node].job.as_mut().filter(|j| j.id == job_id) {
            job.sending = Some(sending);
        }
        if done {
            self.step_sent(node);
        }
    }

    /// A batch's reply (`Some(stored everything)`) or its timeout (`None`).
    pub(super) fn job_reply(&mut self, node: usize, ticket: u64, stored: Option<bool>) {
        let Some(sending) = self.nodes[node]
            .job
            .as_mut()
            .and_then(|job| job.sending.as_mut())
        else {
            return;
        };
        let Some(target) = sending.waiting.remove(&ticket) else {
            return;
        };
        if stored != Some(true) {
            sending.failed_targets.insert(target);
        }
        if sending.waiting.is_empty() {
            self.step_sent(node);
        }
    }

    /// `Store::step_sent`: drops what every target stored, then the next
    /// step.
    fn step_sent(&mut self, node: usize) {
        let Some(job) = self.nodes[node].job.as_mut() else {
            return;
        };
        let Some(sending) = job.sending.take() else {
            return;
        };
        if !sending.failed_targets.is_empty() {
            job.failed = true;
        }
        let stored_by: BTreeSet<NodeId> = sending
            .targets
            .difference(&sending.failed_targets)
            .copied()
            .collect();
        let me = self.nodes[node].id;
        for (key, dots, targets) in sending.drops {
            let home_now = home_of(&self.nodes[node].ring, &self.replication, &key);
            if drops_after_handoff(&targets, &stored_by, &home_now, me)
                && self.drop_local_if(node, &key, &dots)
            {
                self.count("handoff_dropped_copy");
                tracing::debug!(t = self.now, node, key, ?dots, "dropped after handoff");
            }
        }
        self.job_step(node);
    }

    /// `Store::finish_job`: the data is placed for the job's ring; a failed
    /// job runs again later, and a leave is over.
    fn finish_job(&mut self, node: usize) {
        let Some(job) = self.nodes[node].job.take() else {
            return;
        };
        let n = &mut self.nodes[node];
        n.trees_built = true;
        n.settled = Some(job.to.clone());
        if job.failed {
            self.count("handoff_incomplete");
        }
        if job.leaving {
            self.swim_leave(node);
            return self.gone(node);
        }
        if job.failed {
            self.nodes[node].retry_from = Some(job.from);
            let incarnation = self.nodes[node].incarnation;
            self.at(
                self.config.handoff_retry_ms,
                Event::JobRetry { node, incarnation },
            );
        }
    }

    pub(super) fn retry_ring_change(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.job.is_some() || n.life == Life::Leaving {
            return;
        }
        if let Some(from) = n.retry_from.take() {
            let to = n.ring.clone();
            self.start_job(node, from, to, false);
        }
    }
}
