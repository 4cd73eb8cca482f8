//! Coordinating a client's read or write on this node: quorums, placement,
//! routing a write to a home replica, the look-up of versions a write's
//! context names, versioning here, and starting the rounds (`rounds`).
//!
//! Owns that sequence, borrowing the Store's parts for one request
//! ([`Coordinator`]); where to route, whether a context is known and which
//! homes a round left uncovered are `data::coordinate`'s decisions. What
//! the futures it spawns learn comes back to the Store as messages
//! (`ContextLookedUp`, `Settled`, `KeepHints`, `MergeLocal`); nothing here
//! outlives the request's handler but those futures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Addr, AsyncContext, Context, Message, ResponseFuture};
use tokio::sync::oneshot;

use super::collect::wall_clock_ms;
use super::hinted::HintKeeper;
use super::local::LocalCopies;
use super::reachability::Reachability;
use super::rounds::{FanOut, Gather};
use super::view::ClusterView;
use super::{ClientWrite, ReadOutcome, ReplicaClient, Store, StoreConfig, StoreError, Supersedes};
use crate::actors::contain_panic;
use crate::data::condition::{checker_of, settle, Checker};
use crate::data::coordinate::{context_is_known, route_write, uncovered_homes, WriteRoute};
use crate::explain::Trace;
use crate::key::Key;
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::peer::PeerError;
use crate::replica::{ReplicaReply, ReplicaRequest, Written};
use crate::replication::{Quorum, Target};
use crate::version::{Object, VersionVector};
use tracing::Instrument as _;

/// A client write being coordinated: the write, the copies it needs
/// (resolved once, by the node the client asked) and whether another node
/// forwarded it here.
#[derive(Debug, Clone)]
pub(super) struct Coordinating {
    pub write: ClientWrite,
    pub needed: usize,
    pub forwarded: bool,
    /// What the write did, if the client asked (`?explain=true`).
    pub trace: Option<Trace>,
}

/// A client write whose superseded versions a quorum read has just settled.
#[derive(Message, Debug)]
#[rtype(result = "Result<Written, StoreError>")]
pub(super) struct Settled(pub Coordinating);

/// A client write whose context named versions this node's copy lacked,
/// with what the other home replicas hold of the key: merged into the copy,
/// after which the context must be covered or the write is refused.
#[derive(Message, Debug)]
#[rtype(result = "Result<Written, StoreError>")]
pub(super) struct ContextLookedUp {
    pub job: Coordinating,
    /// The versions the write supersedes, settled.
    pub context: VersionVector,
    pub found: Object,
    pub every_home_answered: bool,
}

/// After a write's fan-out: home replicas that got the write neither
/// directly nor through a stand-in, for which this node keeps a hint.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct KeepHints {
    pub key: Key,
    pub owners: Vec<NodeId>,
}

/// Read repair of this node's own copy.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct MergeLocal {
    pub key: Key,
    pub object: Object,
}

/// Asks the other home replicas at `asked` for their copies of the
/// write's key, then hands what they hold to the Store as
/// [`ContextLookedUp`]; `every_home_asked` whether `asked` is all of them.
pub(super) struct LookUp {
    pub peers: ReplicaClient,
    pub reachability: Arc<Reachability>,
    pub asked: Vec<(NodeId, SocketAddr)>,
    pub every_home_asked: bool,
    pub timeout: Duration,
    pub store: Addr<Store>,
}

impl LookUp {
    pub(super) async fn run(
        self,
        job: Coordinating,
        context: VersionVector,
    ) -> Result<Written, StoreError> {
        let request = ReplicaRequest::Read {
            key: job.write.key.clone(),
        };
        let reads = self.asked.iter().map(|&(node, addr)| {
            let (peers, reachability, request) = (
                self.peers.clone(),
                self.reachability.clone(),
                request.clone(),
            );
            let timeout = self.timeout;
            async move {
                let outcome = peers.request_within(addr, &request, timeout).await;
                reachability.observe(node, &outcome, Instant::now());
                outcome
            }
        });
        let mut found = Object::new();
        let mut answered = 0;
        for outcome in futures_util::future::join_all(reads).await {
            if let Ok(ReplicaReply::Object(object)) = outcome {
                found.merge(&object);
                answered += 1;
            }
        }
        let looked_up = ContextLookedUp {
            job,
            context,
            found,
            every_home_answered: self.every_home_asked && answered == self.asked.len(),
        };
        self.store
            .send(looked_up)
            .await
            .unwrap_or(Err(StoreError::Restarting))
    }
}

/// What coordinating a client request borrows from the Store.
pub(super) struct Coordinator<'a> {
    pub config: &'a StoreConfig,
    pub metrics: &'a SharedMetrics,
    pub peers: &'a ReplicaClient,
    pub view: &'a ClusterView,
    pub local: &'a mut LocalCopies,
    pub hints: &'a mut HintKeeper,
    pub conditions: &'a ConditionTurns,
}

/// Conditional writes of one key take turns on the node that checks them.
/// A key's entry lives while a write of it holds or waits for its turn.
#[derive(Default)]
pub(super) struct ConditionTurns {
    turns: std::sync::Mutex<std::collections::HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl ConditionTurns {
    fn turn(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self
            .turns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Keys no write holds or waits for any more.
        turns.retain(|_, turn| Arc::strong_count(turn) > 1);
        turns.entry(key.clone()).or_default().clone()
    }
}

impl Coordinator<'_> {
    fn count_failure<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            // The client's to resolve, and counted; not the node's trouble.
            Err(StoreError::TooManySiblings { .. }) => {
                self.metrics.kv_writes_refused_siblings.inc();
            }
            Err(e) => {
                if matches!(e, StoreError::Storage(_) | StoreError::Corrupt(_)) {
                    self.metrics.kv_storage_errors.inc();
                }
                tracing::warn!(error = %e, "store request failed");
            }
            Ok(_) => {}
        }
        result
    }

    pub(super) fn read(
        &mut self,
        key: Key,
        quorum: Option<Quorum>,
        trace: Option<Trace>,
        ctx: &mut Context<Store>,
    ) -> ResponseFuture<Result<ReadOutcome, StoreError>> {
        self.metrics.kv_gets.inc();
        let needed = self.view.read_quorum(quorum);
        let placement = self.view.placement(&key);
        let local_id = self.config.local_id;
        if let Some(trace) = &trace {
            trace.begin("read", local_id, &placement, needed);
        }
        let reachable = placement.targets.len() + placement.spares.len();
        if reachable < needed {
            self.metrics.kv_refused_unreachable.inc();
            if let Some(trace) = &trace {
                trace.note(format!("refused before asking: {reachable} of the {needed} replicas needed are reachable"));
            }
            return ready(Err(StoreError::Unreachable { reachable, needed }));
        }
        let local = if placement.targets.iter().any(|t| t.node == local_id) {
            let copies = &*self.local;
            match contain_panic("store", ctx, || copies.read(&key)) {
                Some(Ok(object)) => {
                    if let Some(trace) = &trace {
                        trace.read_answer(local_id, Duration::ZERO, Some(&object), None);
                    }
                    Some(object)
                }
                Some(Err(e)) => return ready(self.count_failure(Err(e))),
                None => return ready(Err(StoreError::Restarting)),
            }
        } else {
            None
        };
        let remote = self.view.with_addrs(
            placement
                .targets
                .iter()
                .map(|t| t.node)
                .filter(|&n| n != local_id),
        );
        let spares = self.view.with_addrs(placement.spares.iter().copied());
        let gather = Gather {
            peers: self.peers.clone(),
            reachability: self.view.reachability().clone(),
            timeout: self.config.replica_timeout,
            key,
            home: placement.home,
            store: ctx.address(),
            metrics: self.metrics.clone(),
            local_id,
            trace,
        };
        let (reply, answer) = oneshot::channel();
        // In the request's span, if the caller entered one: the round's
        // lines then carry its id.
        actix::spawn(
            gather
                .run(local, remote, spares, needed, reply)
                .instrument(tracing::Span::current()),
        );
        Box::pin(async move { answer.await.unwrap_or(Err(StoreError::Restarting)) })
    }

    /// Coordinates a client's write: settles what it supersedes if a
    /// quorum read must find that first; forwards it to a home replica if
    /// this node is none; looks up what its context names if this copy
    /// lacks it (then `looked_up`); versions and stores it here and fans it
    /// out.
    pub(super) fn write(
        &mut self,
        job: Coordinating,
        looked_up: bool,
        ctx: &mut Context<Store>,
    ) -> ResponseFuture<Result<Written, StoreError>> {
        let context = match &job.write.supersedes {
            Supersedes::Seen(context) => context.clone(),
            Supersedes::FoundByQuorumRead { read_quorum } => {
                let read_trace = job.trace.as_ref().map(|_| Trace::new());
                let read = self.read(job.write.key.clone(), *read_quorum, read_trace.clone(), ctx);
                let store = ctx.address();
                let mut job = job;
                return Box::pin(async move {
                    let found = read.await;
                    if let (Some(trace), Some(read)) = (&job.trace, &read_trace) {
                        trace.quorum_read(read);
                    }
                    job.write.supersedes = Supersedes::Seen(found?.object.clock());
                    let written = store.send(Settled(job)).await;
                    written.unwrap_or(Err(StoreError::Restarting))
                });
            }
            Supersedes::IfFoundByQuorumRead {
                condition,
                read_quorum,
            } => {
                let placement = self.view.placement(&job.write.key);
                let local_id = self.config.local_id;
                if let Checker::Forward(homes) =
                    checker_of(&placement.home, local_id, job.forwarded, |n| {
                        self.view.is_up(n)
                    })
                {
                    self.metrics.kv_writes_forwarded.inc();
                    if let Some(trace) = &job.trace {
                        trace.begin("write", local_id, &placement, job.needed);
                        trace.forwarded(&self.view.with_addrs(homes.iter().copied()));
                        trace.note("forwarded: the home replica checks the condition and coordinates; its replicas' answers are not shown here");
                    }
                    return Box::pin(forward(
                        self.peers.clone(),
                        self.view.reachability().clone(),
                        self.view.with_addrs(homes),
                        // The check's quorum read, then the write's fan-out.
                        self.config.replica_timeout * 4,
                        job,
                    ));
                }
                let (condition, quorum) = (condition.clone(), *read_quorum);
                let store = ctx.address();
                let metrics = self.metrics.clone();
                let turn = self.conditions.turn(&job.write.key);
                let mut job = job;
                return Box::pin(async move {
                    // One check of a key at a time on this node, its read
                    // begun only once the write before it is done, so it
                    // sees that write.
                    let _turn = turn.lock_owned().await;
                    let read_trace = job.trace.as_ref().map(|_| Trace::new());
                    let read = super::Get {
                        key: job.write.key.clone(),
                        quorum,
                        trace: read_trace.clone(),
                        span: tracing::Span::current(),
                    };
                    let found = store
                        .send(read)
                        .await
                        .unwrap_or(Err(StoreError::Restarting));
                    if let (Some(trace), Some(read)) = (&job.trace, &read_trace) {
                        trace.quorum_read(read);
                    }
                    let found = found?.object;
                    match settle(&condition, &found, wall_clock_ms()) {
                        Ok(supersedes) => job.write.supersedes = Supersedes::Seen(supersedes),
                        Err(unmet) => {
                            metrics.kv_writes_precondition_failed.inc();
                            return Err(StoreError::PreconditionFailed { found: unmet.found });
                        }
                    }
                    let written = store.send(Settled(job)).await;
                    written.unwrap_or(Err(StoreError::Restarting))
                });
            }
        };
        let local_id = self.config.local_id;
        let Coordinating {
            write,
            needed,
            forwarded,
            trace,
        } = &job;
        let (needed, forwarded) = (*needed, *forwarded);
        let placement = self.view.placement(&write.key);
        if let Some(trace) = trace {
            trace.begin("write", local_id, &placement, needed);
        }
        match route_write(&placement, local_id, needed, forwarded) {
            WriteRoute::Here => {}
            WriteRoute::NotHome => return ready(Err(StoreError::NotHome)),
            WriteRoute::Unreachable { reachable, needed } => {
                self.metrics.kv_refused_unreachable.inc();
                if let Some(trace) = trace {
                    trace.note(format!("refused before storing: {reachable} of the {needed} replicas needed are reachable"));
                }
                return ready(Err(StoreError::Unreachable { reachable, needed }));
            }
            WriteRoute::Forward(homes) => {
                self.metrics.kv_writes_forwarded.inc();
                if let Some(trace) = trace {
                    trace.forwarded(&self.view.with_addrs(homes.iter().copied()));
                    trace.note("forwarded: this node is no home replica of the key, so a home replica versions and replicates the write; its replicas' answers are not shown here");
                }
                return Box::pin(forward(
                    self.peers.clone(),
                    self.view.reachability().clone(),
                    self.view.with_addrs(homes),
                    // Long enough for the home replica's own fan-out.
                    self.config.replica_timeout * 3,
                    job,
                ));
            }
        }
        if !looked_up {
            let known = match self.local.read(&write.key) {
                Ok(object) => object.clock(),
                Err(e) => return ready(self.count_failure(Err(e))),
            };
            if !context_is_known(&known, &context) {
                self.metrics.kv_contexts_looked_up.inc();
                let others: Vec<NodeId> = placement
                    .home
                    .iter()
                    .copied()
                    .filter(|&n| n != local_id)
                    .collect();
                let asked = self
                    .view
                    .with_addrs(others.iter().copied().filter(|&n| self.view.is_up(n)));
                let look_up = LookUp {
                    peers: self.peers.clone(),
                    reachability: self.view.reachability().clone(),
                    every_home_asked: asked.len() == others.len(),
                    asked,
                    timeout: self.config.replica_timeout,
                    store: ctx.address(),
                };
                return Box::pin(look_up.run(job, context));
            }
        }
        self.metrics.kv_writes_coordinated.inc();
        let versioned = {
            let copies = &mut *self.local;
            contain_panic("store", ctx, || {
                copies.version(&write.key, &context, write.payload.clone())
            })
        };
        let (context, object) = match versioned {
            Some(Ok(done)) => done,
            Some(Err(e)) => return ready(self.count_failure(Err(e))),
            None => return ready(Err(StoreError::Restarting)),
        };
        if let Some(trace) = trace {
            trace.write_answer(local_id, Duration::ZERO, None);
        }
        let uncovered = uncovered_homes(&placement, local_id);
        if !uncovered.is_empty() {
            self.hints.keep(&write.key, &uncovered, local_id);
            if let Some(trace) = trace {
                trace.hints_kept(&uncovered);
            }
        }
        let targets: Vec<(Target, SocketAddr)> = placement
            .targets
            .iter()
            .filter(|t| t.node != local_id)
            .filter_map(|t| self.view.addr_of(t.node).map(|a| (*t, a)))
            .collect();
        let spares = self.view.with_addrs(placement.spares.iter().copied());
        let fan_out = FanOut {
            peers: self.peers.clone(),
            reachability: self.view.reachability().clone(),
            timeout: self.config.replica_timeout,
            key: write.key.clone(),
            object,
            store: ctx.address(),
            local_id,
            trace: trace.clone(),
        };
        let (reply, answer) = oneshot::channel();
        actix::spawn(
            fan_out
                .run(targets, spares, needed, context, reply)
                .instrument(tracing::Span::current()),
        );
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let outcome = answer.await.unwrap_or(Err(StoreError::Restarting));
            if matches!(outcome, Err(StoreError::WriteQuorum(_))) {
                metrics.kv_quorum_failures.inc();
            }
            outcome
        })
    }

    /// A write whose context this copy lacked, with what the other home
    /// replicas hold: merged here first, after which the context must be
    /// covered or the write is refused.
    pub(super) fn context_looked_up(
        &mut self,
        msg: ContextLookedUp,
        ctx: &mut Context<Store>,
    ) -> ResponseFuture<Result<Written, StoreError>> {
        let ContextLookedUp {
            job,
            context,
            found,
            every_home_answered,
        } = msg;
        // What the other home replicas hold is this copy's to have too; the
        // merge gives back the copy it leaves, read once.
        let merged = {
            let copies = &mut *self.local;
            contain_panic("store", ctx, || copies.merge(&job.write.key, &found))
        };
        let covered = match merged {
            Some(Ok((object, _))) => object.clock().descends(&context),
            Some(Err(e)) => return ready(self.count_failure(Err(e))),
            None => return ready(Err(StoreError::Restarting)),
        };
        if !covered {
            self.metrics.kv_writes_refused_unknown_context.inc();
            return ready(Err(StoreError::UnknownContext {
                every_home_answered,
            }));
        }
        self.write(job, true, ctx)
    }
}

fn ready<T: 'static>(value: T) -> ResponseFuture<T> {
    Box::pin(async move { value })
}

/// Hands a client write to the first home replica that takes it; if none
/// does, nothing was stored anywhere.
pub(super) async fn forward(
    peers: ReplicaClient,
    reachability: Arc<Reachability>,
    homes: Vec<(NodeId, SocketAddr)>,
    timeout: Duration,
    job: Coordinating,
) -> Result<Written, StoreError> {
    let request = ReplicaRequest::Coordinate {
        write: job.write,
        needed: job.needed,
    };
    for (node, addr) in homes {
        let outcome = peers.request_within(addr, &request, timeout).await;
        reachability.observe(node, &outcome, Instant::now());
        match outcome {
            Ok(ReplicaReply::Written(Ok(written))) => return Ok(written),
            Ok(ReplicaReply::Written(Err(shortfall))) => {
                return Err(StoreError::WriteQuorum(shortfall))
            }
            // Another home replica would judge the write the same way.
            Ok(ReplicaReply::UnknownContext {
                every_home_answered,
            }) => {
                return Err(StoreError::UnknownContext {
                    every_home_answered,
                })
            }
            Ok(ReplicaReply::TooManySiblings { siblings, limit }) => {
                return Err(StoreError::TooManySiblings { siblings, limit })
            }
            Ok(ReplicaReply::ObjectTooLarge { size, limit }) => {
                return Err(StoreError::ObjectTooLarge { size, limit })
            }
            Ok(ReplicaReply::PreconditionFailed { found }) => {
                return Err(StoreError::PreconditionFailed { found })
            }
            // Refused, or never sent: the next home replica may take it.
            Ok(other) => tracing::debug!(%node, reply = ?other, "home replica did not coordinate"),
            Err(e @ (PeerError::Connect { .. } | PeerError::Refused(_))) => {
                tracing::debug!(%node, error = %e, "home replica unreachable to coordinate");
            }
            // It may have versioned and stored the write: asking another
            // home replica would version it a second time, a duplicate
            // that outlives the writes superseding the first.
            Err(e) => {
                tracing::debug!(%node, error = %e, "home replica did not answer; the write's fate is unknown");
                return Err(StoreError::WriteUnconfirmed);
            }
        }
    }
    Err(StoreError::NoHomeReachable)
}

/// The reply to a node that forwarded a write this node coordinated: the
/// outcomes it must pass on to its client as they are, or a refusal.
pub(super) fn reply_to_forwarder(outcome: Result<Written, StoreError>) -> ReplicaReply {
    match outcome {
        Ok(done) => ReplicaReply::Written(Ok(done)),
        Err(StoreError::WriteQuorum(shortfall)) => ReplicaReply::Written(Err(shortfall)),
        Err(StoreError::UnknownContext {
            every_home_answered,
        }) => ReplicaReply::UnknownContext {
            every_home_answered,
        },
        Err(StoreError::TooManySiblings { siblings, limit }) => {
            ReplicaReply::TooManySiblings { siblings, limit }
        }
        Err(StoreError::ObjectTooLarge { size, limit }) => {
            ReplicaReply::ObjectTooLarge { size, limit }
        }
        Err(StoreError::PreconditionFailed { found }) => ReplicaReply::PreconditionFailed { found },
        Err(e) => ReplicaReply::Refused(e.to_string()),
    }
}
