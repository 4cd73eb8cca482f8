//! The rounds a coordinator drives over the network: a versioned write's
//! fan-out to the replicas, and a read's gathering of copies with the
//! repair of stale ones, as futures the Store spawns.
//!
//! Owns the sending and the waiting only: what to send next, when to
//! answer and what to repair are `data::write::WriteRound`'s and
//! `data::read::ReadRound`'s to decide, fed here reply by reply. Never
//! touches storage or the Store's state: hints to keep and repairs of this
//! node's own copy go back to the Store as messages.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::oneshot;

use super::coordinate::{KeepHints, MergeLocal};
use super::reachability::Reachability;
use super::{ReadOutcome, ReplicaClient, Store, StoreError};
use crate::data::read::{ReadAnswer, ReadRound, ReadStep};
use crate::data::write::{Step as WriteStep, WriteRound};
use crate::explain::Trace;
use crate::key::Key;
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::peer::PeerError;
use crate::replica::{QuorumShortfall, ReplicaReply, ReplicaRequest, Written};
use crate::replication::Target;
use crate::version::{Object, VersionVector};

/// One write's replication to the other replicas, after the coordinator
/// stored it. Replies once `needed` copies exist (the coordinator's
/// counts), then lets the slower replicas finish.
pub(super) struct FanOut {
    pub peers: ReplicaClient,
    pub reachability: Arc<Reachability>,
    pub timeout: Duration,
    pub key: Key,
    pub object: Object,
    pub store: Addr<Store>,
    pub local_id: NodeId,
    /// With a trace, every replica's answer is recorded and the client's
    /// answer waits for them all.
    pub trace: Option<Trace>,
}

impl FanOut {
    /// Drives a [`WriteRound`]: sends what it says, feeds it each outcome,
    /// answers and keeps hints when it says so.
    pub(super) async fn run(
        self,
        targets: Vec<(Target, SocketAddr)>,
        spares: Vec<(NodeId, SocketAddr)>,
        needed: usize,
        context: VersionVector,
        reply: oneshot::Sender<Result<Written, StoreError>>,
    ) {
        let mut reply = Some(reply);
        let addrs: HashMap<NodeId, SocketAddr> = targets
            .iter()
            .map(|(t, a)| (t.node, *a))
            .chain(spares.iter().copied())
            .collect();
        let target_list: Vec<Target> = targets.iter().map(|(t, _)| *t).collect();
        let spare_list: Vec<NodeId> = spares.iter().map(|(n, _)| *n).collect();
        let (mut round, first) =
            WriteRound::start(self.local_id, &target_list, &spare_list, needed);
        let mut steps: std::collections::VecDeque<WriteStep> = first.into();
        let mut pending = FuturesUnordered::new();
        let send = |target: Target, addr: SocketAddr| {
            let request = ReplicaRequest::Write {
                key: self.key.clone(),
                object: self.object.clone(),
                hint_for: target.hint_for,
            };
            let peers = self.peers.clone();
            let reachability = self.reachability.clone();
            let timeout = self.timeout;
            let trace = self.trace.clone();
            async move {
                let started = Instant::now();
                let outcome = peers.request_within(addr, &request, timeout).await;
                reachability.observe(target.node, &outcome, Instant::now());
                if let Some(trace) = &trace {
                    let error = match &outcome {
                        Ok(ReplicaReply::Stored) => None,
                        Ok(other) => Some(format!("did not store: {}", reply_kind(other))),
                        Err(e) => Some(e.to_string()),
                    };
                    trace.write_answer(target.node, started.elapsed(), error);
                }
                (target, stored(outcome))
            }
        };
        let mut deferred = None;
        loop {
            while let Some(step) = steps.pop_front() {
                match step {
                    WriteStep::Send(target) => match addrs.get(&target.node) {
                        Some(&addr) => pending.push(send(target, addr)),
                        // Every node a round names came with an address;
                        // one without counts as a replica that failed.
                        None => steps.extend(round.on_reply(target, false)),
                    },
                    WriteStep::Answer(outcome) => match &self.trace {
                        Some(trace) => {
                            trace.settled(outcome.is_ok());
                            deferred = Some(outcome);
                        }
                        None => answer_write(&mut reply, &context, outcome),
                    },
                    WriteStep::KeepHints(owners) => {
                        if let Some(trace) = &self.trace {
                            trace.hints_kept(&owners);
                        }
                        self.store.do_send(KeepHints {
                            key: self.key.clone(),
                            owners,
                        })
                    }
                }
            }
            match pending.next().await {
                Some((target, ok)) => steps.extend(round.on_reply(target, ok)),
                None => break,
            }
        }
        if let Some(outcome) = deferred {
            answer_write(&mut reply, &context, outcome);
        }
    }
}

/// A reply's kind, for an explanation.
fn reply_kind(reply: &ReplicaReply) -> String {
    match reply {
        ReplicaReply::Refused(reason) => format!("refused: {reason}"),
        other => format!("{other:?}").chars().take(60).collect(),
    }
}

fn stored(outcome: Result<ReplicaReply, PeerError>) -> bool {
    match outcome {
        Ok(ReplicaReply::Stored) => true,
        Ok(other) => {
            tracing::debug!(reply = ?other, "replica did not store");
            false
        }
        Err(e) => {
            tracing::debug!(error = %e, "replica unreachable");
            false
        }
    }
}

fn answer_write(
    reply: &mut Option<oneshot::Sender<Result<Written, StoreError>>>,
    context: &VersionVector,
    outcome: Result<Vec<NodeId>, QuorumShortfall>,
) {
    if let Some(reply) = reply.take() {
        let _ = reply.send(match outcome {
            Ok(stored_on) => Ok(Written {
                context: context.clone(),
                stored_on,
            }),
            Err(shortfall) => Err(StoreError::WriteQuorum(shortfall)),
        });
    }
}

/// One read's gathering of replica copies. Replies with the merge once
/// `needed` replicas answered, then waits for the rest and repairs every
/// replica whose copy lacked something.
pub(super) struct Gather {
    pub peers: ReplicaClient,
    pub reachability: Arc<Reachability>,
    pub timeout: Duration,
    pub key: Key,
    /// The key's home replicas: only their answers can tell that a key
    /// does not exist.
    pub home: Vec<NodeId>,
    pub store: Addr<Store>,
    pub metrics: SharedMetrics,
    pub local_id: NodeId,
    /// With a trace, every replica's answer and repair is recorded and the
    /// client's answer waits for them all.
    pub trace: Option<Trace>,
}

impl Gather {
    /// Drives a [`ReadRound`]: asks whom it says, feeds it each copy or
    /// failure, answers when it says so, then carries out its repairs.
    pub(super) async fn run(
        self,
        local: Option<Object>,
        remote: Vec<(NodeId, SocketAddr)>,
        spares: Vec<(NodeId, SocketAddr)>,
        needed: usize,
        reply: oneshot::Sender<Result<ReadOutcome, StoreError>>,
    ) {
        let mut reply = Some(reply);
        let addrs: HashMap<NodeId, SocketAddr> =
            remote.iter().chain(spares.iter()).copied().collect();
        let remote: Vec<NodeId> = remote.iter().map(|(n, _)| *n).collect();
        let spares: Vec<NodeId> = spares.iter().map(|(n, _)| *n).collect();
        let (mut round, first) = ReadRound::start(
            self.local_id,
            local,
            &remote,
            &spares,
            self.home.clone(),
            needed,
        );
        let mut steps: std::collections::VecDeque<ReadStep> = first.into();
        let mut pending = FuturesUnordered::new();
        let mut repairs = FuturesUnordered::new();
        let read = |node: NodeId, addr: SocketAddr| {
            let request = ReplicaRequest::Read {
                key: self.key.clone(),
            };
            let peers = self.peers.clone();
            let reachability = self.reachability.clone();
            let timeout = self.timeout;
            async move {
                let started = Instant::now();
                let outcome = peers.request_within(addr, &request, timeout).await;
                reachability.observe(node, &outcome, Instant::now());
                (node, outcome, started.elapsed())
            }
        };
        let mut deferred = None;
        loop {
            while let Some(step) = steps.pop_front() {
                match step {
                    ReadStep::Ask(node) => match addrs.get(&node) {
                        Some(&addr) => pending.push(read(node, addr)),
                        // Every node a round names came with an address;
                        // one without counts as a replica that failed.
                        None => steps.extend(round.on_reply(node, None)),
                    },
                    ReadStep::Answer(answer) => {
                        let outcome = match answer {
                            ReadAnswer::Found(object) => Ok(object),
                            ReadAnswer::NoHome { answered, needed } => {
                                self.metrics.kv_reads_without_home.inc();
                                Err(StoreError::NoHomeAnswered { answered, needed })
                            }
                            ReadAnswer::Short { answered, needed } => {
                                Err(StoreError::ReadQuorum(QuorumShortfall {
                                    needed,
                                    answered,
                                    stored_on: Vec::new(),
                                }))
                            }
                        };
                        match &self.trace {
                            Some(trace) => {
                                trace.settled(outcome.is_ok());
                                deferred = Some(outcome);
                            }
                            None => answer_read(&mut reply, outcome),
                        }
                    }
                    ReadStep::Repair { node, object } => {
                        self.metrics.kv_read_repairs.inc();
                        if let Some(trace) = &self.trace {
                            trace.repaired(node);
                        }
                        if node == self.local_id {
                            self.store.do_send(MergeLocal {
                                key: self.key.clone(),
                                object,
                            });
                        } else if let Some(&addr) = addrs.get(&node) {
                            let request = ReplicaRequest::Write {
                                key: self.key.clone(),
                                object,
                                hint_for: None,
                            };
                            let (peers, timeout) = (self.peers.clone(), self.timeout);
                            repairs.push(async move {
                                if let Err(e) = peers.request_within(addr, &request, timeout).await
                                {
                                    tracing::debug!(%node, error = %e, "read repair failed");
                                }
                            });
                        }
                    }
                }
            }
            match pending.next().await {
                Some((node, outcome, took)) => {
                    let copy = match outcome {
                        Ok(ReplicaReply::Object(object)) => Some(object),
                        other => {
                            if let Some(trace) = &self.trace {
                                let why = match &other {
                                    Ok(reply) => reply_kind(reply),
                                    Err(e) => e.to_string(),
                                };
                                trace.read_answer(node, took, None, Some(why));
                            }
                            tracing::debug!(%node, outcome = ?other.err(), "replica read failed");
                            None
                        }
                    };
                    if let (Some(trace), Some(object)) = (&self.trace, &copy) {
                        trace.read_answer(node, took, Some(object), None);
                    }
                    steps.extend(round.on_reply(node, copy));
                }
                None => break,
            }
        }
        while repairs.next().await.is_some() {}
        if let Some(outcome) = deferred {
            answer_read(&mut reply, outcome);
        }
    }
}

fn answer_read(
    reply: &mut Option<oneshot::Sender<Result<ReadOutcome, StoreError>>>,
    outcome: Result<Object, StoreError>,
) {
    if let Some(reply) = reply.take() {
        let _ = reply.send(outcome.map(|object| ReadOutcome { object }));
    }
}
