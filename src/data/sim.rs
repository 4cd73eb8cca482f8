//! A deterministic, virtual-time simulation of the data path's decisions
//! under a hostile network: whole clusters of coordinators and replicas in
//! one thread, driven by a seed, so that any failure replays.
//!
//! What it runs is this crate's own code: placement (`replication`), the
//! coordinator's routing and context check (`data::coordinate`), versioning
//! and merging (`version`), and the write and read rounds (`data::write`,
//! `data::read`) with their stand-ins, hints (kept, delivered and dropped
//! as `data::hints` says) and read repair. What it models in their place: the network (drops, duplicates, random delays
//! and so reordering, symmetric and one-way partitions), crashes and
//! restarts (storage is durable: a crash loses nothing stored, as with the
//! disk engine and a killed process), a failure detector that knows at once
//! who is reachable, and the context look-up (the coordinator merges the
//! copies of the home replicas it reaches, without messages). Membership is
//! fixed: no joins or leaves, so no ring changes, and no anti-entropy; the
//! Store actor's own glue is not run here.
//!
//! At the end of a seed the network heals, hints drain, and the checker
//! merges every home replica's copy of each key: an acknowledged value
//! missing without a write that superseded it is lost, a value an
//! acknowledged write superseded is resurrected, a version no coordinator
//! issued is unknown, and one dot issued twice is reuse.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::coordinate::{context_is_known, route_write, uncovered_homes, WriteRoute};
use super::hints::{drops_copy_after_delivery, moved_to, Hints};
use super::read::{ReadAnswer, ReadRound, ReadStep};
use super::write::{Step as WriteStep, WriteRound};
use crate::node_id::NodeId;
use crate::replication::{Placement, Target};
use crate::ring::Ring;
use crate::version::{Dot, Object, Payload, VersionVector};

/// One simulation's shape and fault mix.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub replicas: usize,
    pub read_quorum: usize,
    pub write_quorum: usize,
    pub clients: usize,
    pub keys: usize,
    /// Virtual time the clients run for, in ms.
    pub duration_ms: u64,
    /// After the clients stop: time for the network to heal and hints to
    /// drain before the check.
    pub drain_ms: u64,
    pub drop_rate: f64,
    pub duplicate_rate: f64,
    /// Each message takes 1 to this many ms, uniformly: later messages
    /// overtake earlier ones.
    pub max_delay_ms: u64,
    /// How long a coordinator waits for one replica.
    pub replica_timeout_ms: u64,
    /// How often some fault (a partition or a crash) begins, on average.
    pub fault_every_ms: u64,
    pub max_fault_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 5,
            replicas: 3,
            read_quorum: 2,
            write_quorum: 2,
            clients: 4,
            keys: 6,
            duration_ms: 60_000,
            drain_ms: 20_000,
            drop_rate: 0.05,
            duplicate_rate: 0.05,
            max_delay_ms: 40,
            replica_timeout_ms: 200,
            fault_every_ms: 3_000,
            max_fault_ms: 5_000,
        }
    }
}

/// What one seed did and found.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub seed: u64,
    pub virtual_ms: u64,
    pub writes_acknowledged: u64,
    pub writes_failed: u64,
    pub reads_answered: u64,
    pub reads_failed: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    pub lost: Vec<(String, Dot)>,
    pub resurrected: Vec<(String, Dot)>,
    pub unknown: Vec<(String, Dot)>,
    pub reused_dots: Vec<(String, Dot)>,
}

impl SimReport {
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.resurrected.is_empty()
            && self.unknown.is_empty()
            && self.reused_dots.is_empty()
    }
}

#[derive(Clone, Debug)]
enum Msg {
    Write {
        round: u64,
        key: String,
        object: Object,
        target: Target,
    },
    WriteAck {
        round: u64,
        target: Target,
    },
    Read {
        round: u64,
        key: String,
    },
    ReadReply {
        round: u64,
        copy: Object,
    },
    Repair {
        key: String,
        object: Object,
    },
    Hint {
        key: String,
        object: Object,
    },
    HintAck {
        key: String,
        dots: BTreeSet<Dot>,
    },
}

#[derive(Debug)]
enum Event {
    Deliver { from: usize, to: usize, msg: Msg },
    WriteTimeout { round: u64, target: Target },
    ReadTimeout { round: u64, node: NodeId },
    ClientNext { client: usize },
    ClientGiveUp { client: usize, op: u64 },
    Fault,
    Heal { fault: u64 },
    Restart { node: usize },
    DeliverHints,
}

/// What a client does with a read's answer.
#[derive(Clone, Copy, Debug)]
enum Then {
    Nothing,
    WriteBack,
    Delete,
}

enum Round {
    Write {
        coordinator: usize,
        client: usize,
        op: u64,
        key: String,
        object: Object,
        dot: Dot,
        round: WriteRound,
    },
    Read {
        coordinator: usize,
        client: usize,
        op: u64,
        key: String,
        then: Then,
        round: ReadRound,
    },
}

struct Node {
    id: NodeId,
    copies: HashMap<String, Object>,
    hints: Hints,
    crashed: bool,
}

struct Client {
    /// The operation under way; answers for earlier ones are ignored.
    op: u64,
    busy: bool,
    written: u64,
}

/// A cut: messages from a node in `from` to one in `to` are lost.
struct Cut {
    id: u64,
    from: BTreeSet<usize>,
    to: BTreeSet<usize>,
}

pub struct Sim {
    config: SimConfig,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    nodes: Vec<Node>,
    ring: Ring,
    rounds: HashMap<u64, Round>,
    next_round: u64,
    clients: Vec<Client>,
    cuts: Vec<Cut>,
    next_fault: u64,
    stopping: bool,
    report: SimReport,
    /// Every version a coordinator issued (a dot names a version within
    /// its key), with the context it had.
    issued: HashMap<(String, Dot), VersionVector>,
    acknowledged: BTreeSet<(String, Dot)>,
}

impl Sim {
    pub fn new(config: SimConfig, seed: u64) -> Self {
        let nodes: Vec<Node> = (0..config.nodes)
            .map(|i| Node {
                id: NodeId::from_u64(i as u64 + 1),
                copies: HashMap::new(),
                hints: Hints::default(),
                crashed: false,
            })
            .collect();
        let ring = Ring::new(nodes.iter().map(|n| n.id), 64);
        let clients = (0..config.clients)
            .map(|_| Client {
                op: 0,
                busy: false,
                written: 0,
            })
            .collect();
        Sim {
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            nodes,
            ring,
            rounds: HashMap::new(),
            next_round: 0,
            clients,
            cuts: Vec::new(),
            next_fault: 0,
            stopping: false,
            report: SimReport {
                seed,
                ..SimReport::default()
            },
            issued: HashMap::new(),
            acknowledged: BTreeSet::new(),
            config,
        }
    }

    /// Runs the seed to its end and checks it.
    pub fn run(mut self) -> SimReport {
        for client in 0..self.clients.len() {
            let at = self.rng.random_range(0..50);
            self.at(at, Event::ClientNext { client });
        }
        let first_fault = self.rng.random_range(0..self.config.fault_every_ms.max(1));
        self.at(first_fault, Event::Fault);
        self.at(100, Event::DeliverHints);
        let end = self.config.duration_ms + self.config.drain_ms;
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
        self.report.virtual_ms = end;
        self.check();
        self.report
    }

    fn at(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn count(&mut self, fault: &'static str) {
        *self.report.faults.entry(fault).or_default() += 1;
    }

    fn reaches(&self, from: usize, to: usize) -> bool {
        !self.nodes[to].crashed
            && !self
                .cuts
                .iter()
                .any(|c| c.from.contains(&from) && c.to.contains(&to))
    }

    fn index_of(&self, id: NodeId) -> usize {
        (id.as_u64() - 1) as usize
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if from == to {
            self.at(0, Event::Deliver { from, to, msg });
            return;
        }
        if self.rng.random_bool(self.config.drop_rate) {
            self.count("dropped");
            return;
        }
        let copies = if self.rng.random_bool(self.config.duplicate_rate) {
            self.count("duplicated");
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.random_range(1..=self.config.max_delay_ms.max(1));
            self.at(
                delay,
                Event::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn placement(&self, coordinator: usize, key: &str) -> Placement {
        Placement::of(&self.ring, key.as_bytes(), self.config.replicas, |n| {
            self.reaches(coordinator, self.index_of(n))
        })
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, msg } => {
                // A cut, or a crash of the receiver, drops what is in flight.
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
            Event::Heal { fault } => self.cuts.retain(|c| c.id != fault),
            Event::Restart { node } => self.nodes[node].crashed = false,
            Event::DeliverHints => {
                self.deliver_hints();
                self.at(100, Event::DeliverHints);
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        match msg {
            Msg::Write {
                round,
                key,
                object,
                target,
            } => {
                self.nodes[to]
                    .copies
                    .entry(key.clone())
                    .or_default()
                    .merge(&object);
                if let Some(owner) = target.hint_for {
                    self.nodes[to].hints.insert(owner, key);
                }
                self.send(to, from, Msg::WriteAck { round, target });
            }
            Msg::WriteAck { round, target } => self.write_reply(round, target, true),
            Msg::Read { round, key } => {
                let copy = self.nodes[to].copies.get(&key).cloned().unwrap_or_default();
                self.send(to, from, Msg::ReadReply { round, copy });
            }
            Msg::ReadReply { round, copy } => {
                let node = self.nodes[from].id;
                self.read_reply(round, node, Some(copy));
            }
            Msg::Repair { key, object } => {
                self.nodes[to].copies.entry(key).or_default().merge(&object);
            }
            Msg::Hint { key, object } => {
                self.nodes[to]
                    .copies
                    .entry(key.clone())
                    .or_default()
                    .merge(&object);
                self.send(
                    to,
                    from,
                    Msg::HintAck {
                        key,
                        dots: object.dots(),
                    },
                );
            }
            Msg::HintAck { key, dots } => {
                // Delivered: the hint goes, and a stand-in's copy with it,
                // unless a newer write came since.
                let current = self.nodes[to].copies.get(&key).map(Object::dots);
                if current.as_ref() != Some(&dots) {
                    return;
                }
                let owner = self.nodes[from].id;
                self.nodes[to].hints.remove(owner, &key);
                let is_home = self
                    .ring
                    .preference_list(key.as_bytes(), self.config.replicas)
                    .contains(&self.nodes[to].id);
                if drops_copy_after_delivery(is_home, self.nodes[to].hints.any_for_key(&key)) {
                    self.nodes[to].copies.remove(&key);
                }
            }
        }
    }

    fn deliver_hints(&mut self) {
        for node in 0..self.nodes.len() {
            if self.nodes[node].crashed {
                continue;
            }
            let local_id = self.nodes[node].id;
            let hints = &self.nodes[node].hints;
            let owed: Vec<(NodeId, String)> = hints
                .owners()
                .flat_map(|owner| hints.keys_for(owner).map(move |k| (owner, k.clone())))
                .collect();
            for (owner, key) in owed {
                let to = self.index_of(owner);
                if !self.reaches(node, to) {
                    continue;
                }
                let home = self
                    .ring
                    .preference_list(key.as_bytes(), self.config.replicas);
                if let Some(owners) = moved_to(owner, &home, local_id) {
                    for new_owner in owners {
                        self.nodes[node].hints.insert(new_owner, key.clone());
                    }
                    self.nodes[node].hints.remove(owner, &key);
                    continue;
                }
                match self.nodes[node].copies.get(&key).cloned() {
                    Some(object) if !object.is_empty() => {
                        self.send(node, to, Msg::Hint { key, object })
                    }
                    _ => self.nodes[node].hints.remove(owner, &key),
                }
            }
        }
    }

    fn fault(&mut self) {
        if self.stopping {
            return;
        }
        self.next_fault += 1;
        let fault = self.next_fault;
        let lasting = self
            .rng
            .random_range(200..=self.config.max_fault_ms.max(200));
        let n = self.nodes.len();
        match self.rng.random_range(0..3) {
            0 => {
                let node = self.rng.random_range(0..n);
                if !self.nodes[node].crashed {
                    self.nodes[node].crashed = true;
                    self.count("crash");
                    self.at(lasting, Event::Restart { node });
                }
            }
            kind => {
                // A random minority cut off, both ways or one way only.
                let size = self.rng.random_range(1..=n / 2);
                let mut minority = BTreeSet::new();
                while minority.len() < size {
                    minority.insert(self.rng.random_range(0..n));
                }
                let majority: BTreeSet<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
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
        let next = self
            .rng
            .random_range(1..=2 * self.config.fault_every_ms.max(1));
        self.at(next, Event::Fault);
    }

    fn stop_faults(&mut self) {
        self.stopping = true;
        self.cuts.clear();
        for node in &mut self.nodes {
            node.crashed = false;
        }
    }

    // ---- clients --------------------------------------------------------

    fn client_next(&mut self, client: usize) {
        if self.stopping {
            return;
        }
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].crashed)
            .collect();
        if live.is_empty() {
            self.at(100, Event::ClientNext { client });
            return;
        }
        let coordinator = live[self.rng.random_range(0..live.len())];
        let key = format!("k{}", self.rng.random_range(0..self.config.keys));
        self.clients[client].op += 1;
        self.clients[client].busy = true;
        let op = self.clients[client].op;
        // A client that hears nothing gives up; the outcome is unknown.
        self.at(5_000, Event::ClientGiveUp { client, op });
        match self.rng.random_range(0..10) {
            0..=1 => self.write(client, op, coordinator, key, VersionVector::new(), false),
            2 => self.read(client, op, coordinator, key, Then::Delete),
            3..=4 => self.read(client, op, coordinator, key, Then::Nothing),
            _ => self.read(client, op, coordinator, key, Then::WriteBack),
        }
    }

    fn finish_op(&mut self, client: usize) {
        self.clients[client].busy = false;
        let pause = self.rng.random_range(0..30);
        self.at(pause, Event::ClientNext { client });
    }

    fn read(&mut self, client: usize, op: u64, coordinator: usize, key: String, then: Then) {
        let placement = self.placement(coordinator, &key);
        let needed = self.config.read_quorum.min(self.config.replicas);
        if placement.targets.len() + placement.spares.len() < needed {
            self.report.reads_failed += 1;
            return self.finish_op(client);
        }
        let local_id = self.nodes[coordinator].id;
        let local = placement
            .targets
            .iter()
            .any(|t| t.node == local_id)
            .then(|| {
                self.nodes[coordinator]
                    .copies
                    .get(&key)
                    .cloned()
                    .unwrap_or_default()
            });
        let remote: Vec<NodeId> = placement.targets.iter().map(|t| t.node).collect();
        let (round, steps) = ReadRound::start(
            local_id,
            local,
            &remote,
            &placement.spares,
            placement.home,
            needed,
        );
        self.next_round += 1;
        let id = self.next_round;
        self.rounds.insert(
            id,
            Round::Read {
                coordinator,
                client,
                op,
                key,
                then,
                round,
            },
        );
        self.read_steps(id, steps);
    }

    fn read_reply(&mut self, id: u64, node: NodeId, copy: Option<Object>) {
        if self.coordinator_crashed(id) {
            return;
        }
        let Some(Round::Read { round, .. }) = self.rounds.get_mut(&id) else {
            return;
        };
        let steps = round.on_reply(node, copy);
        self.read_steps(id, steps);
    }

    fn read_steps(&mut self, id: u64, steps: Vec<ReadStep>) {
        let Some(Round::Read {
            coordinator,
            client,
            op,
            key,
            then,
            round,
        }) = self.rounds.get(&id)
        else {
            return;
        };
        let (coordinator, client, op, key, then) = (*coordinator, *client, *op, key.clone(), *then);
        let finished = round.is_finished();
        for step in steps {
            match step {
                ReadStep::Ask(node) => {
                    let to = self.index_of(node);
                    self.send(
                        coordinator,
                        to,
                        Msg::Read {
                            round: id,
                            key: key.clone(),
                        },
                    );
                    let timeout = self.config.replica_timeout_ms;
                    self.at(timeout, Event::ReadTimeout { round: id, node });
                }
                ReadStep::Answer(answer) => {
                    if self.clients[client].op != op || !self.clients[client].busy {
                        continue;
                    }
                    match answer {
                        ReadAnswer::Found(object) => {
                            self.report.reads_answered += 1;
                            let context = object.clock();
                            match then {
                                Then::Nothing => self.finish_op(client),
                                Then::WriteBack => {
                                    self.write(client, op, coordinator, key.clone(), context, false)
                                }
                                Then::Delete => {
                                    self.write(client, op, coordinator, key.clone(), context, true)
                                }
                            }
                        }
                        ReadAnswer::NoHome { .. } | ReadAnswer::Short { .. } => {
                            self.report.reads_failed += 1;
                            self.finish_op(client);
                        }
                    }
                }
                ReadStep::Repair { node, object } => {
                    let to = self.index_of(node);
                    self.send(
                        coordinator,
                        to,
                        Msg::Repair {
                            key: key.clone(),
                            object,
                        },
                    );
                }
            }
        }
        if finished {
            self.rounds.remove(&id);
        }
    }

    fn write(
        &mut self,
        client: usize,
        op: u64,
        coordinator: usize,
        key: String,
        context: VersionVector,
        delete: bool,
    ) {
        let needed = self.config.write_quorum.min(self.config.replicas);
        let mut coordinator = coordinator;
        let mut placement = self.placement(coordinator, &key);
        let local_id = self.nodes[coordinator].id;
        match route_write(&placement, local_id, needed, false) {
            WriteRoute::Here => {}
            WriteRoute::Forward(homes) => {
                let Some(&home) = homes.first() else {
                    self.report.writes_failed += 1;
                    return self.finish_op(client);
                };
                coordinator = self.index_of(home);
                placement = self.placement(coordinator, &key);
                if route_write(&placement, home, needed, true) != WriteRoute::Here {
                    self.report.writes_failed += 1;
                    return self.finish_op(client);
                }
            }
            WriteRoute::NotHome | WriteRoute::Unreachable { .. } => {
                self.report.writes_failed += 1;
                return self.finish_op(client);
            }
        }
        let local_id = self.nodes[coordinator].id;
        let known = self.nodes[coordinator]
            .copies
            .get(&key)
            .map(Object::clock)
            .unwrap_or_default();
        if !context_is_known(&known, &context) {
            // The look-up: the copies of the home replicas it reaches.
            let mut found = Object::new();
            for &home in &placement.home {
                let index = self.index_of(home);
                if self.reaches(coordinator, index) {
                    if let Some(copy) = self.nodes[index].copies.get(&key) {
                        found.merge(copy);
                    }
                }
            }
            let copy = self.nodes[coordinator]
                .copies
                .entry(key.clone())
                .or_default();
            copy.merge(&found);
            if !context_is_known(&copy.clock(), &context) {
                self.report.writes_failed += 1;
                return self.finish_op(client);
            }
        }
        self.clients[client].written += 1;
        let payload = if delete {
            Payload::Tombstone { at_ms: self.now }
        } else {
            Payload::Value {
                content_type: "text/plain".into(),
                bytes: format!("c{client}-{}", self.clients[client].written).into_bytes(),
            }
        };
        let copy = self.nodes[coordinator]
            .copies
            .entry(key.clone())
            .or_default();
        let Ok(dot) = copy.write(local_id, &context, payload) else {
            self.report.writes_failed += 1;
            return self.finish_op(client);
        };
        let object = copy.clone();
        if self.issued.insert((key.clone(), dot), context).is_some() {
            self.report.reused_dots.push((key.clone(), dot));
        }
        for owner in uncovered_homes(&placement, local_id) {
            self.nodes[coordinator].hints.insert(owner, key.clone());
        }
        let (round, steps) =
            WriteRound::start(local_id, &placement.targets, &placement.spares, needed);
        self.next_round += 1;
        let id = self.next_round;
        self.rounds.insert(
            id,
            Round::Write {
                coordinator,
                client,
                op,
                key,
                object,
                dot,
                round,
            },
        );
        self.write_steps(id, steps);
    }

    /// Whether round `id`'s coordinator crashed: its rounds die with it.
    fn coordinator_crashed(&mut self, id: u64) -> bool {
        let coordinator = match self.rounds.get(&id) {
            Some(Round::Write { coordinator, .. } | Round::Read { coordinator, .. }) => {
                *coordinator
            }
            None => return false,
        };
        if self.nodes[coordinator].crashed {
            self.rounds.remove(&id);
            return true;
        }
        false
    }

    fn write_reply(&mut self, id: u64, target: Target, stored: bool) {
        if self.coordinator_crashed(id) {
            return;
        }
        let Some(Round::Write { round, .. }) = self.rounds.get_mut(&id) else {
            return;
        };
        let steps = round.on_reply(target, stored);
        self.write_steps(id, steps);
    }

    fn write_steps(&mut self, id: u64, steps: Vec<WriteStep>) {
        let Some(Round::Write {
            coordinator,
            client,
            op,
            key,
            object,
            dot,
            round,
        }) = self.rounds.get(&id)
        else {
            return;
        };
        let (coordinator, client, op, key, object, dot) = (
            *coordinator,
            *client,
            *op,
            key.clone(),
            object.clone(),
            *dot,
        );
        let finished = round.is_finished();
        for step in steps {
            match step {
                WriteStep::Send(target) => {
                    let to = self.index_of(target.node);
                    self.send(
                        coordinator,
                        to,
                        Msg::Write {
                            round: id,
                            key: key.clone(),
                            object: object.clone(),
                            target,
                        },
                    );
                    let timeout = self.config.replica_timeout_ms;
                    self.at(timeout, Event::WriteTimeout { round: id, target });
                }
                WriteStep::Answer(outcome) => {
                    let current = self.clients[client].op == op && self.clients[client].busy;
                    match outcome {
                        Ok(_) => {
                            if current {
                                self.acknowledged.insert((key.clone(), dot));
                                self.report.writes_acknowledged += 1;
                            }
                        }
                        Err(_) => self.report.writes_failed += 1,
                    }
                    if current {
                        self.finish_op(client);
                    }
                }
                WriteStep::KeepHints(owners) => {
                    for owner in owners {
                        self.nodes[coordinator].hints.insert(owner, key.clone());
                    }
                }
            }
        }
        if finished {
            self.rounds.remove(&id);
        }
    }

    // ---- the check ------------------------------------------------------

    fn check(&mut self) {
        // A context covers, per coordinator, every counter up to its own:
        // per key and node, the highest counter any write's context (or any
        // acknowledged write's) covers says what was superseded.
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let mut covered: HashMap<(String, NodeId), u64> = HashMap::new();
        let mut covered_by_acknowledged: HashMap<(String, NodeId), u64> = HashMap::new();
        for ((key, dot), context) in &self.issued {
            for &id in &ids {
                let counter = context.get(id);
                if counter == 0 {
                    continue;
                }
                let entry = covered.entry((key.clone(), id)).or_default();
                *entry = (*entry).max(counter);
                if self.acknowledged.contains(&(key.clone(), *dot)) {
                    let entry = covered_by_acknowledged
                        .entry((key.clone(), id))
                        .or_default();
                    *entry = (*entry).max(counter);
                }
            }
        }
        let is_covered = |map: &HashMap<(String, NodeId), u64>, key: &str, dot: &Dot| {
            map.get(&(key.to_string(), dot.node))
                .is_some_and(|&counter| counter >= dot.counter)
        };
        let keys: BTreeSet<String> = self.issued.keys().map(|(k, _)| k.clone()).collect();
        for key in keys {
            let mut merged = Object::new();
            for home in self
                .ring
                .preference_list(key.as_bytes(), self.config.replicas)
            {
                if let Some(copy) = self.nodes[self.index_of(home)].copies.get(&key) {
                    merged.merge(copy);
                }
            }
            let present = merged.dots();
            for dot in &present {
                if !self.issued.contains_key(&(key.clone(), *dot)) {
                    self.report.unknown.push((key.clone(), *dot));
                } else if is_covered(&covered_by_acknowledged, &key, dot) {
                    self.report.resurrected.push((key.clone(), *dot));
                }
            }
            for (written_key, dot) in &self.acknowledged {
                if *written_key == key && !present.contains(dot) && !is_covered(&covered, &key, dot)
                {
                    self.report.lost.push((key.clone(), *dot));
                }
            }
        }
    }
}

/// Runs one seed with `config`.
pub fn run_seed(config: &SimConfig, seed: u64) -> SimReport {
    Sim::new(config.clone(), seed).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_exactly() {
        let config = SimConfig {
            duration_ms: 5_000,
            drain_ms: 3_000,
            ..SimConfig::default()
        };
        let (a, b) = (run_seed(&config, 7), run_seed(&config, 7));
        assert_eq!(a.writes_acknowledged, b.writes_acknowledged);
        assert_eq!(a.faults, b.faults);
        assert!(a.writes_acknowledged > 0, "{a:?}");
    }

    #[test]
    fn the_checker_sees_a_write_that_vanished() {
        let config = SimConfig {
            duration_ms: 3_000,
            drain_ms: 2_000,
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            fault_every_ms: 1_000_000,
            ..SimConfig::default()
        };
        let mut sim = Sim::new(config, 3);
        for client in 0..sim.clients.len() {
            sim.at(0, Event::ClientNext { client });
        }
        let end = sim.config.duration_ms + sim.config.drain_ms;
        while let Some(Reverse((time, seq))) = sim.queue.pop() {
            if time > end {
                break;
            }
            sim.now = time;
            if let Some(event) = sim.events.remove(&seq) {
                sim.handle(event);
            }
        }
        sim.check();
        assert!(sim.report.is_clean(), "{:?}", sim.report);
        // Forget every copy of a key: what a bug losing writes would leave.
        let key = sim
            .acknowledged
            .iter()
            .next()
            .expect("a write acknowledged")
            .0
            .clone();
        for node in &mut sim.nodes {
            node.copies.remove(&key);
        }
        sim.report.lost.clear();
        sim.check();
        assert!(
            sim.report.lost.iter().any(|(k, _)| *k == key),
            "the latest acknowledged write of {key} is missing and not reported: {:?}",
            sim.report
        );
    }
}
