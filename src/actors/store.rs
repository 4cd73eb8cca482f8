//! The Store actor: this node's replicas, and the coordination of every
//! client read and write that reaches this node.
//!
//! Handles [`Get`], [`Put`] and [`Delete`] from the HTTP layer, and
//! [`FromPeer`] from the node-to-node server. For a client request it is the
//! coordinator: it places the key on the ring, asks the replicas through the
//! peer client and answers once R (reads) or W (writes) of them have; the
//! rest (slow replicas, read repair, hints for replicas that failed)
//! finishes in the background. A write is versioned by a home replica of
//! its key, so a write that reaches a node outside the key's home is
//! forwarded to one. Runs on an arbiter of its own so that disk writes
//! never stall gossip. Must never open a socket of its own: other nodes are
//! reached only through the peer client.
//!
//! This file is the actor: its state is a handful of parts, each in a file
//! of its own that owns one concept, and its handlers move messages and
//! I/O between them and the world.
//!
//! - `view`: members, ring, reachability: who is up, where a key lives;
//! - `local`: this node's copies in storage, and the hash trees over them;
//! - `coordinate`: the conversations with replicas a client request needs;
//! - `hinted`: hints kept for replicas that were down, and their delivery;
//! - `ring_change`: the handoff when the ring changes;
//! - `anti_entropy` and `collect`: repair between replicas, and tombstone
//!   collection;
//! - `inbound`: the door of requests from other nodes.
//!
//! The decisions that need no I/O (storage layout, placement, the rounds,
//! hints, handoff plans, comparisons, admission) are in [`crate::data`].

mod anti_entropy;
mod api;
mod collect;
mod coordinate;
mod hinted;
mod inbound;
mod list;
mod local;
mod reachability;
mod ring_change;
mod rounds;
mod trees;
mod view;
mod watch;
mod write_many;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, ResponseFuture, Supervised};

pub use crate::data::handoff::{HandoffReport, HandoffView};
pub use api::{
    ClientWrite, Delete, FromPeer, Get, LocalCopy, LocalStats, Put, ReadOutcome, StoreConfig,
    StoreError, Supersedes,
};
pub use collect::wall_clock_ms;
pub use inbound::serve_peers;
pub use list::List;
pub use ring_change::{HandOffForLeave, HandoffStatus};
pub use watch::{Watch, WatchOutcome, Watching, MAX_OPEN_WATCHES};
pub use write_many::PutMany;

use super::contain_panic;
use super::membership::MembersChanged;
use anti_entropy::AntiEntropy;
use collect::Collector;
use coordinate::{
    ConditionTurns, ContextLookedUp, Coordinating, Coordinator, KeepHints, MergeLocal, Settled,
};
use hinted::{DeliveryRoundOver, HintDelivered, HintKeeper};
use inbound::{merge_batch, PeerDoor};
use local::{LocalCopies, WriteLimits};
use reachability::Reachability;
use ring_change::Handoff;
use view::ClusterView;
use watch::Watches;

use crate::data::placement::keeps_settled_ring;
use crate::explain::Trace;
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::peer::PeerClient;
use crate::replica::{NodeStats, ReplicaReply, ReplicaRequest, Written};
use crate::replication::Quorum;
use crate::storage::StorageEngine;
use crate::version::Dot;
use tracing::Instrument as _;

/// From this many siblings on, a write is logged and counted: writers are
/// not sending back the contexts they read (Riak warns at 25 too).
pub const SIBLINGS_WARNING: usize = 25;
pub const DEFAULT_MAX_SIBLINGS: usize = 100;

/// Requests wait here rather than fail while the Store is busy: the HTTP
/// layer bounds how long they wait.
const MAILBOX_CAPACITY: usize = 1024;
/// The shortest a purge is remembered (see `data::purge`).
const PURGE_MEMORY_FLOOR: Duration = Duration::from_secs(60);

pub type ReplicaClient = PeerClient<ReplicaRequest, ReplicaReply>;

pub struct Store {
    config: StoreConfig,
    metrics: SharedMetrics,
    peers: ReplicaClient,
    view: ClusterView,
    local: LocalCopies,
    hints: HintKeeper,
    handoff: Handoff,
    anti_entropy: AntiEntropy,
    collector: Collector,
    door: PeerDoor,
    watches: Arc<Watches>,
    conditions: ConditionTurns,
}

impl Store {
    pub fn new(
        engine: Arc<dyn StorageEngine>,
        config: StoreConfig,
        peers: ReplicaClient,
        metrics: SharedMetrics,
    ) -> Self {
        let reachability = Arc::new(Reachability::new(config.replica_timeout, metrics.clone()));
        let limits = WriteLimits {
            max_siblings: config.max_siblings,
            max_object_bytes: config.max_object_bytes,
        };
        // Long enough for every exchange and purge request under way when a
        // tombstone was collected to have ended, and for as long again as a
        // tombstone waits before collection: a stand-in's copy of the value
        // it deleted, handed over later than that, is the one resurrection
        // left (see docs/ARCHITECTURE.md).
        let purge_memory = PURGE_MEMORY_FLOOR
            .max(config.anti_entropy_interval * 10)
            .max(config.tombstone_grace);
        let (id, timeout) = (config.local_id, config.replica_timeout);
        let watches = Arc::new(Watches::new(peers.clone(), timeout, metrics.clone()));
        Store {
            view: ClusterView::new(id, config.replication, reachability),
            local: LocalCopies::new(
                engine.clone(),
                metrics.clone(),
                id,
                config.replication,
                limits,
                purge_memory,
                watches.clone(),
            ),
            hints: HintKeeper::new(engine, metrics.clone(), config.hinted_handoff),
            handoff: Handoff::new(peers.clone(), metrics.clone(), timeout, config.vnodes),
            anti_entropy: AntiEntropy::new(peers.clone(), metrics.clone(), timeout),
            collector: Collector::new(peers.clone(), timeout, config.tombstone_grace),
            door: PeerDoor::new(metrics.clone(), config.max_value_bytes),
            watches,
            conditions: ConditionTurns::default(),
            peers,
            metrics,
            config,
        }
    }

    /// The parts a client request's coordination uses, borrowed.
    fn coordinator(&mut self) -> Coordinator<'_> {
        Coordinator {
            config: &self.config,
            metrics: &self.metrics,
            peers: &self.peers,
            view: &self.view,
            local: &mut self.local,
            hints: &mut self.hints,
            conditions: &self.conditions,
        }
    }

    /// A write from a client of this node: its quorum is resolved here,
    /// once, and travels with it.
    fn client_write(
        &mut self,
        write: ClientWrite,
        quorum: Option<Quorum>,
        trace: Option<Trace>,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Written, StoreError>> {
        let job = Coordinating {
            needed: self.view.write_quorum(quorum),
            write,
            forwarded: false,
            trace,
        };
        self.coordinator().write(job, false, ctx)
    }

    /// Pings every peer set aside whose ping is due; an answer takes it
    /// back (see `reachability`).
    fn stats(&self) -> NodeStats {
        let hints = self.hints.pending();
        NodeStats {
            keys: self.local.approximate_keys(hints),
            bytes: self.local.engine().approximate_bytes(),
            hints_pending: hints as u64,
            handoff: self.handoff.status(),
        }
    }

    fn ping_set_aside(&self) {
        let reachability = self.view.reachability();
        for node in reachability.due_for_ping(std::time::Instant::now()) {
            let Some(addr) = self.view.addr_of(node) else {
                reachability.forget(node);
                continue;
            };
            let (peers, reachability) = (self.peers.clone(), reachability.clone());
            let timeout = self.config.replica_timeout;
            actix::spawn(async move {
                let outcome = peers
                    .request_within(addr, &ReplicaRequest::Ping, timeout)
                    .await;
                reachability.observe(node, &outcome, std::time::Instant::now());
            });
        }
    }

    /// Serves a request another node made, once the door let it in.
    fn serve_peer(
        &mut self,
        from: NodeId,
        request: ReplicaRequest,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<ReplicaReply> {
        self.metrics.kv_replica_requests.inc();
        if let Err(refusal) = self.door.admit(from, &request, &self.view) {
            return ready(refusal);
        }
        let local_id = self.config.local_id;
        let reply = match request {
            ReplicaRequest::Read { key } => {
                let copies = &self.local;
                match contain_panic("store", ctx, || copies.read(&key)) {
                    Some(Ok(object)) => ReplicaReply::Object(object),
                    Some(Err(e)) => ReplicaReply::Refused(e.to_string()),
                    None => ReplicaReply::Refused(StoreError::Restarting.to_string()),
                }
            }
            ReplicaRequest::Write { key, hint_for, .. }
                if !self.view.homes().takes_write(&key, hint_for.is_some()) =>
            {
                ReplicaReply::Refused("not a home replica of this key".into())
            }
            ReplicaRequest::Write {
                key,
                object,
                hint_for,
            } => {
                let copies = &mut self.local;
                match contain_panic("store", ctx, || copies.merge(&key, &object)) {
                    Some(Ok(_)) => {
                        if let Some(owner) = hint_for {
                            self.hints.keep(&key, &[owner], local_id);
                        }
                        ReplicaReply::Stored
                    }
                    Some(Err(e)) => ReplicaReply::Refused(e.to_string()),
                    None => ReplicaReply::Refused(StoreError::Restarting.to_string()),
                }
            }
            ReplicaRequest::Coordinate { write, needed } => {
                // The node the client asked resolved the quorum; a sender
                // still cannot ask for fewer than one copy or more than
                // the replicas this node sees.
                let job = Coordinating {
                    write,
                    needed: needed.clamp(1, self.view.effective_replicas()),
                    forwarded: true,
                    trace: None,
                };
                let written = self.coordinator().write(job, false, ctx);
                return Box::pin(async move { coordinate::reply_to_forwarder(written.await) });
            }
            ReplicaRequest::Ping => ReplicaReply::Stored,
            ReplicaRequest::WriteEach { items } => {
                inbound::merge_each(items, &self.view, &mut self.local, &mut self.hints)
            }
            ReplicaRequest::WriteBatch { objects } => {
                merge_batch(objects, None, &self.view, &mut self.local, &self.metrics)
            }
            ReplicaRequest::HandOver { leaving, objects } => merge_batch(
                objects,
                Some(leaving),
                &self.view,
                &mut self.local,
                &self.metrics,
            ),
            ReplicaRequest::TreeBranches { pair } => {
                self.anti_entropy.tree_branches(pair, &self.local)
            }
            ReplicaRequest::TreeLeaves { pair, branches } => {
                self.anti_entropy.tree_leaves(pair, &branches, &self.local)
            }
            ReplicaRequest::ExchangeBuckets { pair, buckets } => self
                .anti_entropy
                .exchange_buckets(pair, buckets, &self.view, &self.local),
            ReplicaRequest::Purge { key, dots } => {
                let dots: BTreeSet<Dot> = dots.into_iter().collect();
                match self.local.purge(&key, &dots) {
                    Ok(_) => ReplicaReply::Stored,
                    Err(e) => ReplicaReply::Refused(e.to_string()),
                }
            }
            ReplicaRequest::Scan {
                prefix,
                start_after,
                limit,
                with_values,
            } => match list::scan_here(
                &self.local,
                &prefix,
                start_after.as_deref(),
                limit,
                with_values,
            ) {
                Ok(part) => ReplicaReply::Scanned {
                    copies: part.copies,
                    more_after: part.more_after,
                },
                Err(e) => ReplicaReply::Refused(e.to_string()),
            },
            ReplicaRequest::Watch { key } => match self.view.addr_of(from) {
                Some(addr) if self.watches.subscribe_peer(from, addr, key) => ReplicaReply::Stored,
                _ => ReplicaReply::Refused("not taking more watches".into()),
            },
            ReplicaRequest::Changed { key } => {
                self.watches.changed(&key);
                ReplicaReply::Stored
            }
            ReplicaRequest::Stats => ReplicaReply::Stats(Box::new(self.stats())),
            // Answered beside the Store (`inbound`) and refused at its door.
            ReplicaRequest::Keyring(_) => {
                ReplicaReply::Refused("a keyring request is not the store's".into())
            }
        };
        ready(reply)
    }
}

fn ready<T: 'static>(value: T) -> ResponseFuture<T> {
    Box::pin(async move { value })
}

impl Actor for Store {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        if !self.hints.is_loaded() {
            self.hints.load();
            self.local.load_settled_ring(self.config.vnodes);
            if let Err(e) = self.local.ensure_order_index() {
                tracing::error!(error = %e, "could not mark the held keys in key order; listings may miss keys held before");
            }
        }
        if !self.config.anti_entropy_interval.is_zero() {
            ctx.run_interval(self.config.anti_entropy_interval, |_, ctx| {
                ctx.notify(anti_entropy::Tick)
            });
        }
        ctx.run_interval(self.config.hint_interval, |store, ctx| {
            let address = ctx.address();
            store.hints.deliver(
                &store.view,
                &store.local,
                &store.peers,
                store.config.replica_timeout,
                &address,
            );
        });
        ctx.run_interval(self.config.replica_timeout, |store, _ctx| {
            store.ping_set_aside()
        });
        tracing::debug!(engine = self.local.engine().name(), "store started");
    }
}

impl Supervised for Store {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.metrics.actor_restarts_store.inc();
        // Rounds under way belonged to the old context's futures.
        self.hints.forget_rounds();
        tracing::warn!("store actor restarting");
    }
}

impl Handler<Get> for Store {
    type Result = ResponseFuture<Result<ReadOutcome, StoreError>>;

    fn handle(&mut self, msg: Get, ctx: &mut Self::Context) -> Self::Result {
        let span = msg.span;
        let _in_request = span.enter();
        let read = self.coordinator().read(msg.key, msg.quorum, msg.trace, ctx);
        Box::pin(read.instrument(span.clone()))
    }
}

impl Handler<Put> for Store {
    type Result = ResponseFuture<Result<Written, StoreError>>;

    fn handle(&mut self, msg: Put, ctx: &mut Self::Context) -> Self::Result {
        self.metrics.kv_puts.inc();
        let span = msg.span;
        let _in_request = span.enter();
        let written = self.client_write(msg.write, msg.quorum, msg.trace, ctx);
        Box::pin(written.instrument(span.clone()))
    }
}

impl Handler<Delete> for Store {
    type Result = ResponseFuture<Result<Written, StoreError>>;

    fn handle(&mut self, msg: Delete, ctx: &mut Self::Context) -> Self::Result {
        self.metrics.kv_deletes.inc();
        let span = msg.span;
        let _in_request = span.enter();
        let written = self.client_write(msg.write, msg.quorum, msg.trace, ctx);
        Box::pin(written.instrument(span.clone()))
    }
}

impl Handler<PutMany> for Store {
    type Result = ResponseFuture<Vec<Result<Written, StoreError>>>;

    fn handle(&mut self, msg: PutMany, ctx: &mut Self::Context) -> Self::Result {
        self.metrics.kv_puts.add(msg.writes.len() as u64);
        self.coordinator().write_many(msg, ctx)
    }
}

impl Handler<List> for Store {
    type Result = ResponseFuture<Result<crate::data::scan::Page, StoreError>>;

    fn handle(&mut self, msg: List, _ctx: &mut Self::Context) -> Self::Result {
        let needed = self.view.read_quorum(msg.quorum);
        let up = match list::check_reachable(&self.view, needed) {
            Ok(up) => up,
            Err(e) => {
                self.metrics.kv_list_pages_failed.inc();
                return ready(Err(e));
            }
        };
        let local_part = match list::scan_here(
            &self.local,
            &msg.prefix,
            msg.start_after.as_deref(),
            msg.limit,
            msg.with_values,
        ) {
            Ok(part) => part,
            Err(e) => return ready(Err(e)),
        };
        let local_id = self.config.local_id;
        let listing = list::Listing {
            local_part,
            local_id,
            others: self
                .view
                .with_addrs(up.into_iter().filter(|&n| n != local_id)),
            ring: self.view.ring().clone(),
            replicas: self.view.effective_replicas(),
            needed,
            peers: self.peers.clone(),
            reachability: self.view.reachability().clone(),
            timeout: self.config.replica_timeout,
            list: msg,
        };
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let page = listing.run().await;
            match &page {
                Ok(_) => metrics.kv_list_pages.inc(),
                Err(_) => metrics.kv_list_pages_failed.inc(),
            }
            page
        })
    }
}

impl Handler<Watch> for Store {
    type Result = Result<Watching, StoreError>;

    fn handle(&mut self, msg: Watch, ctx: &mut Self::Context) -> Self::Result {
        let guard = self.watches.open(&msg.key)?;
        let home = self.view.home_of(&msg.key);
        let homes = if home.contains(&self.config.local_id) {
            Vec::new()
        } else {
            self.view
                .with_addrs(home.into_iter().filter(|&n| self.view.is_up(n)))
        };
        Ok(Watching {
            watch: msg,
            guard,
            store: ctx.address(),
            homes,
            peers: self.peers.clone(),
            replica_timeout: self.config.replica_timeout,
        })
    }
}

impl Handler<ContextLookedUp> for Store {
    type Result = ResponseFuture<Result<Written, StoreError>>;

    fn handle(&mut self, msg: ContextLookedUp, ctx: &mut Self::Context) -> Self::Result {
        self.coordinator().context_looked_up(msg, ctx)
    }
}

impl Handler<Settled> for Store {
    type Result = ResponseFuture<Result<Written, StoreError>>;

    fn handle(&mut self, msg: Settled, ctx: &mut Self::Context) -> Self::Result {
        self.coordinator().write(msg.0, false, ctx)
    }
}

impl Handler<LocalCopy> for Store {
    type Result = Result<crate::version::Object, StoreError>;

    fn handle(&mut self, msg: LocalCopy, _ctx: &mut Self::Context) -> Self::Result {
        self.local.read(msg.key.as_str())
    }
}

impl Handler<FromPeer> for Store {
    type Result = ResponseFuture<ReplicaReply>;

    fn handle(&mut self, msg: FromPeer, ctx: &mut Self::Context) -> Self::Result {
        self.serve_peer(msg.from, msg.request, ctx)
    }
}

impl Handler<MembersChanged> for Store {
    type Result = ();

    fn handle(&mut self, msg: MembersChanged, ctx: &mut Self::Context) {
        let settled = self.local.trees().settled().cloned();
        let heard_of_others = msg.members.iter().any(|m| m.id != self.config.local_id);
        let ring = match settled {
            Some(settled) if keeps_settled_ring(&msg.ring, Some(&settled), heard_of_others) => {
                settled
            }
            _ => msg.ring,
        };
        self.view.update(&msg.members, ring);
        self.handoff.on_ring(&mut self.view, &mut self.local, ctx);
    }
}

impl Handler<KeepHints> for Store {
    type Result = ();

    fn handle(&mut self, msg: KeepHints, _ctx: &mut Self::Context) {
        self.hints.keep(&msg.key, &msg.owners, self.config.local_id);
    }
}

impl Handler<MergeLocal> for Store {
    type Result = ();

    fn handle(&mut self, msg: MergeLocal, _ctx: &mut Self::Context) {
        if let Err(e) = self.local.merge(&msg.key, &msg.object) {
            tracing::warn!(error = %e, "read repair of the local copy failed");
        }
    }
}

impl Handler<HintDelivered> for Store {
    type Result = ();

    fn handle(&mut self, msg: HintDelivered, _ctx: &mut Self::Context) {
        self.hints.delivered(msg, &self.view, &mut self.local);
    }
}

impl Handler<DeliveryRoundOver> for Store {
    type Result = ();

    fn handle(&mut self, msg: DeliveryRoundOver, _ctx: &mut Self::Context) {
        self.hints.round_over(msg.0);
    }
}

impl Handler<ring_change::Step> for Store {
    type Result = ();

    fn handle(&mut self, msg: ring_change::Step, ctx: &mut Self::Context) {
        self.handoff
            .step(msg.0, &mut self.view, &mut self.local, &self.hints, ctx);
    }
}

impl Handler<ring_change::StepSent> for Store {
    type Result = ();

    fn handle(&mut self, msg: ring_change::StepSent, ctx: &mut Self::Context) {
        self.handoff
            .step_sent(msg, &self.view, &mut self.local, ctx);
    }
}

impl Handler<ring_change::Retry> for Store {
    type Result = ();

    fn handle(&mut self, _msg: ring_change::Retry, ctx: &mut Self::Context) {
        self.handoff.retry(&mut self.view, &mut self.local, ctx);
    }
}

impl Handler<LocalStats> for Store {
    type Result = actix::MessageResult<LocalStats>;

    fn handle(&mut self, _msg: LocalStats, _ctx: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.stats())
    }
}

impl Handler<HandoffStatus> for Store {
    type Result = actix::MessageResult<HandoffStatus>;

    fn handle(&mut self, _msg: HandoffStatus, _ctx: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.handoff.status())
    }
}

impl Handler<HandOffForLeave> for Store {
    type Result = ResponseFuture<Option<HandoffReport>>;

    fn handle(&mut self, _msg: HandOffForLeave, ctx: &mut Self::Context) -> Self::Result {
        self.handoff.leave(&mut self.view, &mut self.local, ctx)
    }
}

impl Handler<anti_entropy::Tick> for Store {
    type Result = ();

    fn handle(&mut self, _msg: anti_entropy::Tick, ctx: &mut Self::Context) {
        self.collector.step(&self.view, &self.local, ctx);
        self.anti_entropy.tick(&self.view, &self.local, ctx);
    }
}

impl Handler<anti_entropy::Compared> for Store {
    type Result = ();

    fn handle(&mut self, msg: anti_entropy::Compared, ctx: &mut Self::Context) {
        self.anti_entropy
            .compared(msg, &self.view, &self.local, ctx);
    }
}

impl Handler<anti_entropy::Exchanged> for Store {
    type Result = ();

    fn handle(&mut self, msg: anti_entropy::Exchanged, ctx: &mut Self::Context) {
        self.anti_entropy
            .exchanged(msg, &self.view, &mut self.local, ctx);
    }
}

impl Handler<anti_entropy::RoundOver> for Store {
    type Result = ();

    fn handle(&mut self, msg: anti_entropy::RoundOver, ctx: &mut Self::Context) {
        self.anti_entropy
            .round_over(msg, &self.view, &self.local, ctx);
    }
}

impl Handler<collect::PurgeHere> for Store {
    type Result = ();

    fn handle(&mut self, msg: collect::PurgeHere, _ctx: &mut Self::Context) {
        self.collector.purge_here(msg, &mut self.local);
    }
}

impl Handler<collect::CollectStepOver> for Store {
    type Result = ();

    fn handle(&mut self, _msg: collect::CollectStepOver, _ctx: &mut Self::Context) {
        self.collector.step_over();
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<super::fault::InjectFault> for Store {
    type Result = ();

    fn handle(&mut self, msg: super::fault::InjectFault, ctx: &mut Self::Context) {
        use super::fault::Fault;
        use actix::ActorContext;
        match msg.0 {
            Fault::Stop | Fault::SocketError => ctx.stop(),
            Fault::Stall(busy) => std::thread::sleep(busy),
            Fault::Panic => {
                contain_panic("store", ctx, || panic!("injected panic"));
            }
        }
    }
}
