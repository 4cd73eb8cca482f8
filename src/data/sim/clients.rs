//! The clients and the coordinators: clients read, write back with the
//! context they read, write blind and delete through random nodes, and
//! give up after 5 s; each coordinator routes, versions and replicates on
//! its own view of the ring and of who is up, and delivers its hints.
//!
//! Owns the client workload and the coordinator's glue around
//! `data::coordinate`, `data::write`, `data::read` and `data::hints`, as the
//! Store runs them. Never looks at another node's state except through
//! messages, save the context look-up (the reachable homes' copies, read
//! without messages).

use std::collections::BTreeSet;

use rand::Rng;

use super::network::Msg;
use super::{Event, Sim};
use crate::data::coordinate::{context_is_known, route_write, uncovered_homes, WriteRoute};
use crate::data::hints::{after_delivery, moved_to};
use crate::data::read::{ReadAnswer, ReadRound, ReadStep};
use crate::data::write::{Step as WriteStep, WriteRound};
use crate::node_id::NodeId;
use crate::replication::{Placement, Target};
use crate::version::{Dot, Object, Payload, VersionVector};

/// What a client does with a read's answer.
#[derive(Clone, Copy, Debug)]
pub(super) enum Then {
    Nothing,
    WriteBack,
    Delete,
}

pub(super) enum Round {
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

#[derive(Default)]
pub(super) struct Client {
    /// The operation under way; answers for earlier ones are ignored.
    pub op: u64,
    pub busy: bool,
    pub written: u64,
}

impl Sim {
    // ---- clients --------------------------------------------------------

    pub(super) fn client_next(&mut self, client: usize) {
        if self.stopping {
            return;
        }
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.runs(i)).collect();
        if live.is_empty() {
            self.at(100, Event::ClientNext { client });
            return;
        }
        let coordinator = live[self.rng.random_range(0..live.len())];
        // Clients move on to fresh keys every `key_window_ms`, so keys they
        // left (deleted ones too) age and their tombstones get collected;
        // now and then one goes back to an old key, as after a purge.
        let window = self.now / self.config.key_window_ms.max(1);
        let keys = self.config.keys as u64;
        let key = if window > 0 && self.rng.random_bool(0.05) {
            self.rng.random_range(0..window * keys)
        } else {
            window * keys + self.rng.random_range(0..keys)
        };
        let key = format!("k{key}");
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

    pub(super) fn finish_op(&mut self, client: usize) {
        self.clients[client].busy = false;
        let pause = self.rng.random_range(0..30);
        self.at(pause, Event::ClientNext { client });
    }

    fn read(&mut self, client: usize, op: u64, coordinator: usize, key: String, then: Then) {
        let placement = self.placement(coordinator, &key);
        let needed = self.config.read_quorum.min(placement.home.len());
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

    pub(super) fn read_reply(&mut self, id: u64, node: NodeId, copy: Option<Object>) {
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
        let mut coordinator = coordinator;
        let mut placement = self.placement(coordinator, &key);
        let needed = self.config.write_quorum.min(placement.home.len());
        let local_id = self.nodes[coordinator].id;
        match route_write(&placement, local_id, needed, false) {
            WriteRoute::Here => {}
            WriteRoute::Forward(homes) => {
                let Some(&home) = homes.first() else {
                    self.report.writes_failed += 1;
                    return self.finish_op(client);
                };
                // Forwarded over the network: the home must answer.
                let to = self.index_of(home);
                if !self.talk(coordinator, to) {
                    self.report.writes_failed += 1;
                    return self.finish_op(client);
                }
                coordinator = to;
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
                if home != local_id
                    && self.is_up(coordinator, home)
                    && self.talk(coordinator, index)
                {
                    if let Some(copy) = self.nodes[index].copies.get(&key) {
                        found.merge(copy);
                    }
                }
            }
            self.merge_local(coordinator, &key, &found);
            let clock = self.nodes[coordinator]
                .copies
                .get(&key)
                .map(Object::clock)
                .unwrap_or_default();
            if !clock.descends(&context) {
                self.report.writes_failed += 1;
                return self.finish_op(client);
            }
        }
        self.clients[client].written += 1;
        let payload = if delete {
            Payload::Tombstone {
                at_ms: self.wall_ms(coordinator),
            }
        } else {
            Payload::Value {
                content_type: "text/plain".into(),
                bytes: format!("c{client}-{}", self.clients[client].written).into_bytes(),
                expires_at_ms: None,
            }
        };
        let issued = self.nodes[coordinator].dots_issued;
        let copy = self.nodes[coordinator]
            .copies
            .entry(key.clone())
            .or_default();
        let Ok(dot) = copy.write_above(local_id, issued, &context, payload) else {
            self.report.writes_failed += 1;
            return self.finish_op(client);
        };
        let object = copy.clone();
        self.nodes[coordinator].dots_issued = dot.counter;
        tracing::debug!(
            t = self.now,
            key,
            ?dot,
            coordinator,
            ?context,
            ?placement,
            "issued"
        );
        if self.issued.insert((key.clone(), dot), context).is_some() {
            self.report.reused_dots.push((key.clone(), dot));
            // What the issuer had lost, to tell the two known causes apart.
            if self.purged.iter().any(|(k, _)| *k == key) {
                self.report.reused_after_a_collection += 1;
            }
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
        if !self.runs(coordinator) {
            self.rounds.remove(&id);
            return true;
        }
        false
    }

    pub(super) fn write_reply(&mut self, id: u64, target: Target, stored: bool) {
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
                                tracing::debug!(t = self.now, key, ?dot, "acknowledged");
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

    /// Where `coordinator` places `key`: on its own ring, with whom it
    /// holds up.
    fn placement(&self, coordinator: usize, key: &str) -> Placement {
        let ring = &self.nodes[coordinator].ring;
        let replicas = self.replication.effective_replicas(ring.len());
        Placement::of(ring, key.as_bytes(), replicas, |n| {
            self.is_up(coordinator, n)
        })
    }

    /// `Store::deliver_hints`: each hinted key to its owner if the owner is
    /// up, or to the key's new homes if the owner no longer homes it.
    pub(super) fn deliver_hints(&mut self, node: usize) {
        let local_id = self.nodes[node].id;
        let hints = &self.nodes[node].hints;
        let owed: Vec<(NodeId, String)> = hints
            .owners()
            .flat_map(|owner| hints.keys_for(owner).map(move |k| (owner, k.clone())))
            .collect();
        for (owner, key) in owed {
            if owner == local_id {
                continue;
            }
            // Whether the owner is up or gone for good.
            let home = self.placement(node, &key).home;
            if let Some(owners) = moved_to(owner, &home, local_id) {
                for new_owner in owners {
                    self.nodes[node].hints.insert(new_owner, key.clone());
                }
                self.nodes[node].hints.remove(owner, &key);
                continue;
            }
            if !self.is_up(node, owner) {
                continue;
            }
            match self.nodes[node].copies.get(&key).cloned() {
                Some(object) if !object.is_empty() => {
                    let to = self.index_of(owner);
                    self.send(node, to, Msg::Hint { key, object })
                }
                _ => self.nodes[node].hints.remove(owner, &key),
            }
        }
    }

    /// `HintKeeper::delivered`: as `data::hints::after_delivery` says, the
    /// hint goes unless the copy changed since it was sent, and a
    /// stand-in's copy goes too.
    pub(super) fn hint_delivered(
        &mut self,
        node: usize,
        owner: NodeId,
        key: &str,
        delivered: &BTreeSet<Dot>,
    ) {
        tracing::debug!(t = self.now, node, %owner, key, ?delivered, "hint delivered");
        let held = self.nodes[node]
            .copies
            .get(key)
            .map(Object::dots)
            .unwrap_or_default();
        let is_home = self.placement(node, key).is_home(self.nodes[node].id);
        let hints = &self.nodes[node].hints;
        let others = hints.owners().any(|o| o != owner && hints.contains(o, key));
        let next = after_delivery(delivered, &held, is_home, others);
        if next.drop_hint {
            self.nodes[node].hints.remove(owner, key);
        }
        if next.drop_copy {
            self.drop_local_if(node, key, delivered);
        }
    }
}
