//! A deterministic, virtual-time simulation of the data path's decisions
//! under a hostile network and a changing cluster: coordinators and
//! replicas in one thread, driven by a seed, so that any failure replays.
//!
//! What it runs is this crate's own code: placement (`replication`,
//! `data::placement`), the coordinator's routing and context check
//! (`data::coordinate`), versioning and merging (`version`), the write and
//! read rounds (`data::write`, `data::read`) with their stand-ins, hints
//! (`data::hints`) and read repair, the ring-change plan and drop rule
//! (`data::handoff`), anti-entropy's comparisons over hash trees (`merkle`,
//! `data::repair`), tombstone collection (`data::repair::may_collect`) and
//! the memory of purges (`data::purge`).
//!
//! What it models in place of the rest, one concept per submodule (its
//! knobs in `config`): the network (`network`: drops, duplicates, uniform or long-tailed delays and
//! so reordering, symmetric, one-way and non-transitive partitions);
//! crashes (`faults`; storage is durable, so a crash loses only what the
//! Store keeps in memory: jobs, trees, rounds, the purge memory, the member
//! table); membership by this crate's SWIM over the same network
//! (`membership`: each node's member table gives its ring and who is up,
//! so views lag and differ; a restarted node knows only itself until it
//! rejoins), or, with [`SimConfig::swim`] off, by the simulation's truth,
//! each node learning it after its own delay (`faults`); ring changes
//! (`ring_change`: empty nodes join, members leave after a leaving handoff
//! or are removed while down by an operator on a node that holds them
//! dead, and each node runs the Store's ring-change job on its own view);
//! clients
//! and coordinators (`clients`); what a replica accepts (`replica`);
//! anti-entropy and tombstone collection per node on its own skewed wall
//! clock (`anti_entropy`).
//!
//! What it does not model: the Store's reachability marks, its
//! anti-entropy `serving` guard and its batching limits; SWIM's pauses
//! (a paused node, as SIGSTOP); the gossip codec's sealing; the context look-up's messages (it reads
//! the copies of the homes the coordinator can reach); more than one step
//! per ring-change job (a seed has fewer keys than a step); the HTTP layer
//! and the admission rules other than membership and roles used here. The
//! actors' glue is not run: each submodule mirrors what `actors::store`
//! does around the same pure functions.
//!
//! At the end of a seed the network heals, every view converges, hints,
//! handoffs and anti-entropy drain, and the checker (`check`) merges every
//! home replica's copy of each key on the final ring: an acknowledged value
//! missing without a write that superseded it is lost, a value an
//! acknowledged write superseded is resurrected (also after its tombstone
//! was collected), a version no coordinator issued is unknown, and one dot
//! issued twice is reuse. Removing more than N − W nodes can lose
//! acknowledged writes by design, so a seed retires (leaves or removes) at
//! most [`SimConfig::departures`] nodes.
//!
//! Never reads a real clock for a decision (an `Instant` taken once is only
//! the origin the purge memory's virtual times are measured from) and never
//! lets a hash map's order decide anything.

mod anti_entropy;
mod check;
mod clients;
mod config;
mod faults;
mod membership;
mod network;
mod replica;
mod ring_change;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use self::anti_entropy::{AeState, Gc};
use self::clients::{Client, Round};
use self::network::{Cut, Msg};
use self::ring_change::Job;
use super::hints::Hints;
use super::purge::PurgedTombstones;
use crate::node_id::NodeId;
use crate::replication::Replication;
use crate::ring::Ring;
use crate::swim::Swim;
use crate::version::{Dot, Object, VersionVector};

pub use self::config::SimConfig;
pub use self::network::Delay;

/// Tokens per node on every simulated ring.
const VNODES: usize = 64;
/// Where every node's wall clock starts, before its skew: far enough from
/// zero that a clock behind by the largest skew stays positive.
const WALL_EPOCH_MS: u64 = 1_700_000_000_000;

/// What one seed did and found.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub seed: u64,
    pub virtual_ms: u64,
    pub writes_acknowledged: u64,
    pub writes_failed: u64,
    pub reads_answered: u64,
    pub reads_failed: u64,
    /// Faults injected and cluster events, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    pub lost: Vec<(String, Dot)>,
    pub resurrected: Vec<(String, Dot)>,
    pub unknown: Vec<(String, Dot)>,
    pub reused_dots: Vec<(String, Dot)>,
    /// How many of `reused_dots` were issued for a key whose tombstone had
    /// been collected before (the rest: a coordinator that had dropped its
    /// copy after a ring change or a delivered hint, and whose look-up
    /// found nothing).
    pub reused_after_a_collection: usize,
}

impl SimReport {
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.resurrected.is_empty()
            && self.unknown.is_empty()
            && self.reused_dots.is_empty()
    }
}

/// Where a node is in its membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    /// A spare slot that has not joined yet.
    Waiting,
    Member,
    /// Handing its keys over before it goes.
    Leaving,
    /// Left or removed; its storage goes with it.
    Gone,
}

struct Node {
    id: NodeId,
    life: Life,
    crashed: bool,
    /// Bumped by each crash: timers of an earlier process are void.
    incarnation: u64,
    copies: BTreeMap<String, Object>,
    /// The highest dot counter it issued, for any key (durable, as the
    /// Store's mark is).
    dots_issued: u64,
    hints: Hints,
    /// This node's view of the ring, and which change it reflects.
    ring: Ring,
    /// `None`: a fresh process that has heard of no change yet.
    epoch: Option<u64>,
    /// The ring its data was last placed for (durable).
    settled: Option<Ring>,
    job: Option<Job>,
    retry_from: Option<Ring>,
    trees_built: bool,
    /// Whom its failure detector holds up, as last observed.
    up: BTreeSet<NodeId>,
    skew_ms: i64,
    purged: PurgedTombstones,
    ae: AeState,
    gc: Option<Gc>,
    swim: Option<Swim>,
    /// When its `Swim` is next woken.
    swim_wake: Option<u64>,
    /// Down for good, waiting for an operator to remove it.
    removing: bool,
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        msg: Msg,
    },
    WriteTimeout {
        round: u64,
        target: crate::replication::Target,
    },
    ReadTimeout {
        round: u64,
        node: NodeId,
    },
    ClientNext {
        client: usize,
    },
    ClientGiveUp {
        client: usize,
        op: u64,
    },
    Fault,
    Heal {
        fault: u64,
    },
    Restart {
        node: usize,
    },
    DeliverHints,
    /// A node's failure detector catches up with who is reachable.
    Observe {
        node: usize,
    },
    /// A node learns of membership change `epoch`.
    LearnRing {
        node: usize,
        epoch: u64,
        members: Vec<NodeId>,
    },
    Join,
    Depart,
    Remove {
        node: usize,
    },
    /// A request of a node's job, exchange or collection went unanswered.
    Timeout {
        node: usize,
        incarnation: u64,
        ticket: u64,
    },
    JobRetry {
        node: usize,
        incarnation: u64,
    },
    AeTick {
        node: usize,
        incarnation: u64,
    },
    SwimWake {
        node: usize,
        at: u64,
    },
    /// A node that left stops gossiping.
    SwimStop {
        node: usize,
        incarnation: u64,
    },
}

pub struct Sim {
    config: SimConfig,
    replication: Replication,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    nodes: Vec<Node>,
    /// The true membership, and how many changes it went through.
    members: BTreeSet<NodeId>,
    epoch: u64,
    rounds: HashMap<u64, Round>,
    next_round: u64,
    next_ticket: u64,
    clients: Vec<Client>,
    cuts: Vec<Cut>,
    next_fault: u64,
    stopping: bool,
    report: SimReport,
    /// The origin of the purge memory's virtual instants.
    origin: Instant,
    /// Every version a coordinator issued (a dot names a version within
    /// its key), with the context it had.
    issued: HashMap<(String, Dot), VersionVector>,
    acknowledged: BTreeSet<(String, Dot)>,
    /// Tombstones some first home replica collected.
    purged: BTreeSet<(String, Dot)>,
}

impl Sim {
    pub fn new(config: SimConfig, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let slots = config.nodes + config.joins;
        let first: Vec<NodeId> = (0..config.nodes)
            .map(|i| NodeId::from_u64(i as u64 + 1))
            .collect();
        let ring = Ring::new(first.iter().copied(), VNODES);
        let purge_memory = Duration::from_millis(config.purge_memory_ms);
        let mut report = SimReport {
            seed,
            ..SimReport::default()
        };
        let nodes: Vec<Node> = (0..slots)
            .map(|i| {
                let skew = config.max_clock_skew_ms as i64;
                let skew_ms = if skew > 0 {
                    rng.random_range(-skew..=skew)
                } else {
                    0
                };
                if skew_ms != 0 {
                    *report.faults.entry("clock_skew").or_default() += 1;
                }
                let member = i < config.nodes;
                Node {
                    id: NodeId::from_u64(i as u64 + 1),
                    life: if member { Life::Member } else { Life::Waiting },
                    crashed: false,
                    incarnation: 0,
                    copies: BTreeMap::new(),
                    dots_issued: 0,
                    hints: Hints::default(),
                    ring: ring.clone(),
                    epoch: Some(0),
                    settled: member.then(|| ring.clone()),
                    job: None,
                    retry_from: None,
                    trees_built: member,
                    up: first.iter().copied().collect(),
                    skew_ms,
                    purged: PurgedTombstones::new(purge_memory),
                    ae: AeState::default(),
                    gc: None,
                    swim: None,
                    swim_wake: None,
                    removing: false,
                }
            })
            .collect();
        let clients = (0..config.clients).map(|_| Client::default()).collect();
        Sim {
            replication: config.replication(),
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            nodes,
            members: first.into_iter().collect(),
            epoch: 0,
            rounds: HashMap::new(),
            next_round: 0,
            next_ticket: 0,
            clients,
            cuts: Vec::new(),
            next_fault: 0,
            stopping: false,
            report,
            origin: Instant::now(),
            issued: HashMap::new(),
            acknowledged: BTreeSet::new(),
            purged: BTreeSet::new(),
            config,
        }
    }

    /// Runs the seed to its end and checks it.
    pub fn run(mut self) -> SimReport {
        self.start();
        let end = self.config.duration_ms + self.config.drain_ms;
        self.run_until(end);
        self.report.virtual_ms = end;
        self.check();
        self.report
    }

    fn start(&mut self) {
        for client in 0..self.clients.len() {
            let at = self.rng.random_range(0..50);
            self.at(at, Event::ClientNext { client });
        }
        let first_fault = self.rng.random_range(0..self.config.fault_every_ms.max(1));
        self.at(first_fault, Event::Fault);
        self.at(self.config.hint_every_ms, Event::DeliverHints);
        for node in self.active() {
            self.schedule_ae_tick(node);
            if self.config.swim {
                self.start_swim(node);
            }
        }
        self.schedule_ring_changes();
    }

    fn run_until(&mut self, end: u64) {
        while let Some(Reverse((time, seq))) = self.queue.pop() {
            if time > end {
                break;
            }
            self.now = time;
            if !self.stopping && time >= self.config.duration_ms {
                self.stop_faults();
            }
            if let Some(event) = self.events.remove(&seq) {
                self.handle(event);
            }
        }
    }

    fn at(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn count(&mut self, fault: &'static str) {
        *self.report.faults.entry(fault).or_default() += 1;
    }

    fn index_of(&self, id: NodeId) -> usize {
        (id.as_u64() - 1) as usize
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// Schedules a timeout for `ticket`, void if `node` crashes meanwhile.
    fn time_out(&mut self, node: usize, ticket: u64, after: u64) {
        let incarnation = self.nodes[node].incarnation;
        self.at(
            after,
            Event::Timeout {
                node,
                incarnation,
                ticket,
            },
        );
    }

    /// Whether `node` runs at all (a process that is up, and a member).
    fn runs(&self, node: usize) -> bool {
        let n = &self.nodes[node];
        !n.crashed && matches!(n.life, Life::Member | Life::Leaving)
    }

    /// `node`'s wall clock, skew included.
    fn wall_ms(&self, node: usize) -> u64 {
        (WALL_EPOCH_MS + self.now).saturating_add_signed(self.nodes[node].skew_ms)
    }

    /// The purge memory's notion of now: only differences matter.
    fn instant(&self) -> Instant {
        self.origin + Duration::from_millis(self.now)
    }

    /// Whether `node` holds `other` up: itself, or as last observed.
    fn is_up(&self, node: usize, other: NodeId) -> bool {
        self.nodes[node].id == other || self.nodes[node].up.contains(&other)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, msg } => {
                // A cut, or a crash of the receiver, drops what is in flight.
                if let Msg::Gossip { bytes } = msg {
                    if self.gossip_reaches(from, to) {
                        self.swim_datagram(from, to, bytes);
                    }
                    return;
                }
                if !self.reaches(from, to) {
                    self.count("lost_to_a_fault");
                    return;
                }
                self.deliver(from, to, msg);
            }
            Event::WriteTimeout { round, target } => self.write_reply(round, target, false),
            Event::ReadTimeout { round, node } => self.read_reply(round, node, None),
            Event::ClientNext { client } => self.client_next(client),
            Event::ClientGiveUp { client, op } => {
                if self.clients[client].op == op && self.clients[client].busy {
                    self.finish_op(client);
                }
            }
            Event::Fault => self.fault(),
            Event::Heal { fault } => {
                self.cuts.retain(|c| c.id != fault);
                self.observe_later();
            }
            Event::Restart { node } => self.restart(node),
            Event::DeliverHints => {
                for node in 0..self.nodes.len() {
                    if self.runs(node) {
                        self.deliver_hints(node);
                    }
                }
                self.at(self.config.hint_every_ms, Event::DeliverHints);
            }
            Event::Observe { node } => self.observe(node),
            Event::LearnRing {
                node,
                epoch,
                members,
            } => self.learn_ring(node, epoch, members),
            Event::Join => self.join(),
            Event::Depart => self.depart(),
            Event::Remove { node } => self.remove(node),
            Event::Timeout {
                node,
                incarnation,
                ticket,
            } => {
                if self.nodes[node].incarnation == incarnation && self.runs(node) {
                    self.timed_out(node, ticket);
                }
            }
            Event::JobRetry { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation && self.runs(node) {
                    self.retry_ring_change(node);
                }
            }
            Event::AeTick { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation
                    && self.nodes[node].life != Life::Gone
                {
                    if self.runs(node) {
                        self.ae_tick(node);
                    }
                    self.schedule_ae_tick(node);
                }
            }
            Event::SwimWake { node, at } => self.swim_wake(node, at),
            Event::SwimStop { node, incarnation } => self.swim_stop(node, incarnation),
        }
    }

    /// A reply or timeout for `ticket`: whichever of the node's activities
    /// waits for it takes it.
    fn timed_out(&mut self, node: usize, ticket: u64) {
        self.job_reply(node, ticket, None);
        self.ae_failed(node, ticket);
        self.gc_reply(node, None, ticket, None);
    }
}

/// Runs one seed with `config`.
pub fn run_seed(config: &SimConfig, seed: u64) -> SimReport {
    Sim::new(config.clone(), seed).run()
}

#[cfg(test)]
mod tests;
