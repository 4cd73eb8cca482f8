//! Whole clusters of [`Swim`] in virtual time, over a simulated network that
//! loses, delays or blocks datagrams between chosen members. Deterministic
//! for a seed; no sockets, no threads, no real clock.
//!
//! Owns the event loop (one heap of deliveries and wake-ups) and the fault
//! model. Nodes can crash, restart, pause (datagrams pile up as in a socket
//! buffer, timers freeze) and resume; links can be cut in either direction.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Swim, SwimConfig};
use crate::member::{Member, MemberState};
use crate::metrics::{Metrics, SharedMetrics};
use crate::node_id::NodeId;
use crate::wire::Codec;

/// How the simulated network mistreats datagrams.
#[derive(Clone, Debug)]
pub struct NetworkFaults {
    /// Probability that any one datagram is lost.
    pub loss: f64,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Directed links (from, to), by node index, that deliver nothing.
    pub blocked: HashSet<(usize, usize)>,
}

impl Default for NetworkFaults {
    fn default() -> Self {
        NetworkFaults {
            loss: 0.0,
            min_delay: Duration::from_micros(100),
            max_delay: Duration::from_millis(1),
            blocked: HashSet::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    Running,
    Paused,
    Crashed,
}

pub struct SimNode {
    pub swim: Swim,
    pub addr: SocketAddr,
    pub metrics: SharedMetrics,
    pub status: NodeStatus,
    /// Datagrams that arrived while paused, handled on resume.
    held: Vec<(SocketAddr, Vec<u8>)>,
    scheduled_wake: Option<Instant>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    Wake,
    Deliver { from: SocketAddr, bytes: Vec<u8> },
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    at: Instant,
    order: u64,
    node: usize,
    kind: EventKind,
}

pub struct Sim {
    pub nodes: Vec<SimNode>,
    pub faults: NetworkFaults,
    config: SwimConfig,
    mtu: usize,
    by_addr: HashMap<SocketAddr, usize>,
    events: BinaryHeap<Reverse<Event>>,
    order: u64,
    start: Instant,
    now: Instant,
    rng: StdRng,
    pub datagrams_delivered: u64,
    pub datagrams_lost: u64,
}

fn sim_addr(index: usize) -> SocketAddr {
    let [a, b] = (index as u16).to_be_bytes();
    SocketAddr::from((Ipv4Addr::new(10, 77, a, b), 7946))
}

impl Sim {
    pub fn new(config: SwimConfig, mtu: usize, seed: u64) -> Self {
        let now = Instant::now();
        Sim {
            nodes: Vec::new(),
            faults: NetworkFaults::default(),
            config,
            mtu,
            by_addr: HashMap::new(),
            events: BinaryHeap::new(),
            order: 0,
            start: now,
            now,
            rng: StdRng::seed_from_u64(seed),
            datagrams_delivered: 0,
            datagrams_lost: 0,
        }
    }

    /// A cluster of `n` nodes in which every node after the first joins
    /// through a random earlier one, then enough time for all to know all.
    pub fn cluster(n: usize, config: SwimConfig, seed: u64) -> Self {
        let mut sim = Sim::new(config, crate::config::DEFAULT_GOSSIP_MTU, seed);
        for i in 0..n {
            let seeds = if i == 0 {
                Vec::new()
            } else {
                vec![sim.nodes[sim.rng.random_range(0..i)].addr]
            };
            sim.add_node(seeds);
        }
        sim
    }

    /// Virtual time since the simulation began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn id(&self, index: usize) -> NodeId {
        self.nodes[index].swim.local().id
    }

    /// Adds a node that joins through `seeds` (none: it starts alone).
    pub fn add_node(&mut self, seeds: Vec<SocketAddr>) -> usize {
        let index = self.nodes.len();
        let addr = sim_addr(index);
        let local = Member {
            id: NodeId::from_u64(index as u64 + 1),
            gossip_addr: addr,
            http_addr: addr,
            state: MemberState::Alive,
            incarnation: 0,
        };
        let node = self.new_node(local, seeds);
        self.nodes.push(node);
        self.by_addr.insert(addr, index);
        self.schedule_wake(index);
        index
    }

    fn new_node(&mut self, local: Member, seeds: Vec<SocketAddr>) -> SimNode {
        let metrics: SharedMetrics = Arc::new(Metrics::default());
        let addr = local.gossip_addr;
        let swim = Swim::new(
            local,
            self.config.clone(),
            Codec::new("sim", self.mtu),
            seeds,
            self.rng.random(),
            metrics.clone(),
            self.now,
        );
        SimNode {
            swim,
            addr,
            metrics,
            status: NodeStatus::Running,
            held: Vec::new(),
            scheduled_wake: None,
        }
    }

    /// Stops a node for good, as `kill -9` would: it answers nothing.
    pub fn crash(&mut self, index: usize) {
        self.nodes[index].status = NodeStatus::Crashed;
        self.nodes[index].held.clear();
    }

    /// Starts a crashed node again with the same id and address but a fresh
    /// protocol state (incarnation 0), joining through `seeds`.
    pub fn restart(&mut self, index: usize, seeds: Vec<SocketAddr>) {
        let local = Member {
            incarnation: 0,
            state: MemberState::Alive,
            ..self.nodes[index].swim.local().clone()
        };
        self.nodes[index] = self.new_node(local, seeds);
        self.schedule_wake(index);
    }

    /// Freezes a node as SIGSTOP does: its timers stop and what arrives waits.
    pub fn pause(&mut self, index: usize) {
        self.nodes[index].status = NodeStatus::Paused;
    }

    /// Thaws a paused node: it handles what piled up, then its late timers.
    pub fn resume(&mut self, index: usize) {
        let now = self.now;
        let node = &mut self.nodes[index];
        node.status = NodeStatus::Running;
        for (from, bytes) in std::mem::take(&mut node.held) {
            node.swim.handle_bytes(from, &bytes, now);
        }
        node.swim.tick(now);
        self.flush(index);
    }

    pub fn leave(&mut self, index: usize) {
        let now = self.now;
        self.nodes[index].swim.leave(now);
        self.flush(index);
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.faults.blocked.insert((x, y));
                self.faults.blocked.insert((y, x));
            }
        }
    }

    pub fn heal(&mut self) {
        self.faults.blocked.clear();
    }

    fn push(&mut self, at: Instant, node: usize, kind: EventKind) {
        self.order += 1;
        self.events.push(Reverse(Event {
            at,
            order: self.order,
            node,
            kind,
        }));
    }

    fn schedule_wake(&mut self, index: usize) {
        let Some(wake) = self.nodes[index].swim.next_wake() else {
            return;
        };
        let wake = wake.max(self.now);
        if self.nodes[index].scheduled_wake == Some(wake) {
            return;
        }
        self.nodes[index].scheduled_wake = Some(wake);
        self.push(wake, index, EventKind::Wake);
    }

    /// Sends what a node wants sent, through the faulty network.
    fn flush(&mut self, index: usize) {
        let outgoing = self.nodes[index].swim.take_outgoing();
        self.nodes[index].swim.take_changes();
        let from = self.nodes[index].addr;
        for datagram in outgoing {
            let Some(&to) = self.by_addr.get(&datagram.to) else {
                self.datagrams_lost += 1;
                continue;
            };
            if self.faults.blocked.contains(&(index, to)) || self.rng.random_bool(self.faults.loss)
            {
                self.datagrams_lost += 1;
                continue;
            }
            let span = self.faults.max_delay.saturating_sub(self.faults.min_delay);
            let delay = self.faults.min_delay + span.mul_f64(self.rng.random::<f64>());
            self.push(
                self.now + delay,
                to,
                EventKind::Deliver {
                    from,
                    bytes: datagram.bytes,
                },
            );
        }
        self.schedule_wake(index);
    }

    /// Runs every event up to `until`, then sets the clock to it.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(Reverse(event)) = self.events.peek() {
            if event.at > until {
                break;
            }
            let Some(Reverse(event)) = self.events.pop() else {
                break;
            };
            self.now = self.now.max(event.at);
            let index = event.node;
            match event.kind {
                EventKind::Wake => {
                    let node = &mut self.nodes[index];
                    if node.scheduled_wake != Some(event.at) {
                        continue;
                    }
                    node.scheduled_wake = None;
                    if node.status != NodeStatus::Running {
                        continue;
                    }
                    node.swim.tick(self.now);
                }
                EventKind::Deliver { from, bytes } => {
                    let node = &mut self.nodes[index];
                    match node.status {
                        NodeStatus::Crashed => {
                            self.datagrams_lost += 1;
                            continue;
                        }
                        NodeStatus::Paused => {
                            node.held.push((from, bytes));
                            continue;
                        }
                        NodeStatus::Running => {
                            self.datagrams_delivered += 1;
                            node.swim.handle_bytes(from, &bytes, self.now);
                        }
                    }
                }
            }
            self.flush(index);
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        self.run_until(until);
    }

    /// Runs in steps of `step` until `done` holds or `limit` passes; returns
    /// the virtual time it took, if it held.
    pub fn run_until_true(
        &mut self,
        limit: Duration,
        step: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        loop {
            if done(self) {
                return Some(self.now - start);
            }
            if self.now - start >= limit {
                return None;
            }
            self.run_for(step);
        }
    }

    /// What node `observer` believes of node `subject`.
    pub fn view(&self, observer: usize, subject: usize) -> Option<&Member> {
        let id = self.id(subject);
        self.nodes[observer].swim.table().get(id).map(|e| &e.member)
    }

    /// Indexes of nodes that are running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].status == NodeStatus::Running)
            .collect()
    }

    /// Whether every running node other than `subject` sees it in `state`.
    pub fn all_see(&self, subject: usize, state: MemberState) -> bool {
        self.running()
            .into_iter()
            .filter(|&i| i != subject)
            .all(|i| self.view(i, subject).is_some_and(|m| m.state == state))
    }

    /// Whether every running node sees every running node alive.
    pub fn converged(&self) -> bool {
        let running = self.running();
        running.iter().all(|&i| {
            running.iter().all(|&j| {
                self.view(i, j)
                    .is_some_and(|m| m.state == MemberState::Alive)
            })
        })
    }

    /// How many (observer, subject) pairs have a running subject marked dead.
    pub fn false_deaths(&self) -> usize {
        let running = self.running();
        running
            .iter()
            .map(|&i| {
                running
                    .iter()
                    .filter(|&&j| {
                        self.view(i, j)
                            .is_some_and(|m| m.state == MemberState::Dead)
                    })
                    .count()
            })
            .sum()
    }

    /// Total bytes and datagrams sent by all nodes so far.
    pub fn traffic(&self) -> (u64, u64) {
        self.nodes.iter().fold((0, 0), |(bytes, count), n| {
            (
                bytes + n.metrics.gossip_bytes_sent.get(),
                count + n.metrics.gossip_datagrams_sent.get(),
            )
        })
    }

    /// The largest datagram any node sent.
    pub fn max_datagram(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.metrics.gossip_datagram_max_bytes.get())
            .max()
            .unwrap_or(0)
    }
}
