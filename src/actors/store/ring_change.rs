//! Moving data when the ring changes: a join, a leave, a removal.
//!
//! Owns the ring-change job: one walk over every key this node holds, in
//! steps of [`STEP_KEYS`], that rebuilds the hash trees for the new ring
//! (through [`LocalCopies`]) and sends each key to the nodes newly
//! responsible for it, in batches, waiting for each step's sends before the
//! next so that client traffic (handled between steps) is never starved.
//! Whom a key goes to and when this node drops its copy is
//! `data::handoff`'s to decide; until a copy is dropped it still serves
//! reads. A step whose sends failed leaves the job incomplete; it runs
//! again after [`RETRY_AFTER`], and anti-entropy repairs what a job could
//! not move. Never merges what others send (that is the Store's inbound
//! path) and never reads the member table but through [`ClusterView`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{AsyncContext, Context, Message, ResponseFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::oneshot;

use super::hinted::HintKeeper;
use super::local::LocalCopies;
use super::view::ClusterView;
use super::{ReplicaClient, Store};
use crate::data::handoff::{
    drops_after_handoff, HandoffReport, HandoffView, JobState, Progress, RingChange, StepPlan,
};
use crate::key::Key;
use crate::merkle::entry_hash;
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::replica::{ReplicaReply, ReplicaRequest};
use crate::ring::Ring;
use crate::version::{Dot, Object};

/// Keys read from storage per step.
const STEP_KEYS: usize = 256;
/// Objects per `WriteBatch` request.
const BATCH_OBJECTS: usize = 64;
/// When an incomplete job runs again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

struct RingJob {
    id: u64,
    from: Arc<Ring>,
    to: Arc<Ring>,
    /// The last data key scanned.
    cursor: Option<Vec<u8>>,
    started: Instant,
    progress: Progress,
    sending: bool,
    failed: bool,
    /// A leave waits for its job; keys stay here after they are sent.
    leave: Option<oneshot::Sender<HandoffReport>>,
}

impl RingJob {
    fn report(&self, state: JobState) -> HandoffReport {
        HandoffReport {
            state,
            from_nodes: self.from.len(),
            to_nodes: self.to.len(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            progress: self.progress.clone(),
        }
    }
}

/// The ring change under way and the last one finished.
#[derive(Message, Debug)]
#[rtype(result = "HandoffView")]
pub struct HandoffStatus;

/// Hands every key this node holds to the nodes that hold it once this
/// node is gone; answers when done. Sent by a node that leaves.
#[derive(Message, Debug)]
#[rtype(result = "Option<HandoffReport>")]
pub struct HandOffForLeave;

/// The next step of the job with this id.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct Step(pub(super) u64);

/// A step's sends are over.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct StepSent {
    job: u64,
    /// Per target: keys, bytes, whether every batch was stored.
    sent: Vec<(NodeId, u64, u64, bool)>,
    /// Keys to drop here once their targets all stored them.
    drops: Vec<(Key, BTreeSet<Dot>, Vec<NodeId>)>,
}

/// An incomplete job's time to run again has come.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct Retry;

/// Ring changes: the one under way, the last one finished, and whether
/// this node is leaving (then ring changes no longer move data here).
pub(super) struct Handoff {
    peers: ReplicaClient,
    metrics: SharedMetrics,
    timeout: Duration,
    vnodes: usize,
    job: Option<RingJob>,
    last: Option<HandoffReport>,
    next_id: u64,
    /// The ring an incomplete job started from, to run it again.
    retry_from: Option<Arc<Ring>>,
    leaving: bool,
}

impl Handoff {
    pub(super) fn new(
        peers: ReplicaClient,
        metrics: SharedMetrics,
        replica_timeout: Duration,
        vnodes: usize,
    ) -> Self {
        Handoff {
            peers,
            metrics,
            timeout: replica_timeout * 3,
            vnodes,
            job: None,
            last: None,
            next_id: 0,
            retry_from: None,
            leaving: false,
        }
    }

    pub(super) fn status(&self) -> HandoffView {
        HandoffView {
            running: self.job.as_ref().map(|job| job.report(JobState::Running)),
            last: self.last.clone(),
        }
    }

    /// Takes in a new ring from Membership (the view already has it).
    pub(super) fn on_ring(
        &mut self,
        view: &mut ClusterView,
        local: &mut LocalCopies,
        ctx: &mut Context<Store>,
    ) {
        if self.leaving {
            return;
        }
        let ring = view.ring().clone();
        let settled = local.trees().settled().cloned();
        // A ring of this node alone while its data was placed for more: it
        // has not heard from the cluster yet (a restart), not lost it.
        if ring.len() == 1 && settled.as_ref().is_some_and(|s| s.len() > 1) {
            return;
        }
        let heading_for = self
            .job
            .as_ref()
            .map(|job| job.to.clone())
            .or(settled.clone());
        let already_there = heading_for.is_some_and(|to| to.nodes() == ring.nodes());
        // The trees live in memory only, so a restarted node rebuilds them
        // with a job even if the ring is the same.
        if already_there && (local.trees().is_built() || self.job.is_some()) {
            return;
        }
        let from = self
            .job
            .as_ref()
            .map(|job| job.from.clone())
            .or(settled)
            .unwrap_or_else(|| ring.clone());
        self.start(from, ring, None, view, local, ctx);
    }

    /// Hands every key this node holds to the nodes that hold it once this
    /// node is gone; the future answers when that is done.
    pub(super) fn leave(
        &mut self,
        view: &mut ClusterView,
        local: &mut LocalCopies,
        ctx: &mut Context<Store>,
    ) -> ResponseFuture<Option<HandoffReport>> {
        self.leaving = true;
        let me = view.local_id();
        let to = Arc::new(Ring::new(
            view.ring().nodes().iter().copied().filter(|&n| n != me),
            self.vnodes,
        ));
        let from = local
            .trees()
            .settled()
            .cloned()
            .unwrap_or_else(|| view.ring().clone());
        if to.is_empty() {
            return Box::pin(async { None });
        }
        let (done, report) = oneshot::channel();
        self.start(from, to, Some(done), view, local, ctx);
        Box::pin(async move { report.await.ok() })
    }

    fn start(
        &mut self,
        from: Arc<Ring>,
        to: Arc<Ring>,
        leave: Option<oneshot::Sender<HandoffReport>>,
        view: &mut ClusterView,
        local: &mut LocalCopies,
        ctx: &mut Context<Store>,
    ) {
        if let Some(old) = self.job.take() {
            tracing::info!(job = old.id, "ring changed again; the handoff starts over");
        }
        self.next_id += 1;
        let id = self.next_id;
        tracing::info!(
            job = id,
            from = from.len(),
            to = to.len(),
            "ring change: handing data over"
        );
        view.set_moving_to(Some(to.clone()));
        local.trees_mut().begin_rebuild(to.clone());
        self.job = Some(RingJob {
            id,
            from,
            to,
            cursor: None,
            started: Instant::now(),
            progress: Progress::default(),
            sending: false,
            failed: false,
            leave,
        });
        self.metrics.handoff_running.set(1);
        ctx.notify(Step(id));
    }

    /// Walks the next [`STEP_KEYS`] keys: adds them to the new trees and
    /// sends those that move.
    pub(super) fn step(
        &mut self,
        job_id: u64,
        view: &mut ClusterView,
        local: &mut LocalCopies,
        hints: &HintKeeper,
        ctx: &mut Context<Store>,
    ) {
        let Some(job) = &mut self.job else { return };
        if job.id != job_id || job.sending {
            return;
        }
        let (last, copies) = match local.walk(job.cursor.as_deref(), STEP_KEYS) {
            Ok(walked) => walked,
            Err(e) => {
                tracing::error!(error = %e, "ring change cannot read storage; retrying later");
                job.failed = true;
                self.finish(view, local, ctx);
                return;
            }
        };
        let Some(last) = last else {
            self.finish(view, local, ctx);
            return;
        };
        let change = RingChange {
            from: &job.from,
            to: &job.to,
            replication: view.replication(),
            local_id: view.local_id(),
            leaving: job.leave.is_some(),
        };
        let StepPlan { outgoing, drops } = change.plan_step(
            copies.iter().map(|(k, o)| (k, o)),
            |n| view.is_up(n),
            |key| hints.any_for_key(key),
        );
        local.trees_mut().scanned(
            last.clone(),
            copies.iter().map(|(k, o)| (k.as_str(), entry_hash(k, o))),
        );
        job.cursor = Some(last);
        job.progress.keys_scanned += copies.len() as u64;
        if outgoing.is_empty() && drops.is_empty() {
            ctx.notify(Step(job_id));
            return;
        }
        job.sending = true;
        let mut unreachable = Vec::new();
        let mut sends = Vec::new();
        for (node, objects) in outgoing {
            match view.addr_of(node) {
                Some(addr) => sends.push((node, addr, objects)),
                // Not sent is not stored: the job runs again.
                None => unreachable.push((node, 0, 0, false)),
            }
        }
        let leaving = self.leaving.then_some(view.local_id());
        let (peers, timeout, store) = (self.peers.clone(), self.timeout, ctx.address());
        actix::spawn(async move {
            let mut pending: FuturesUnordered<_> = sends
                .into_iter()
                .map(|(node, addr, objects)| {
                    send_batches(&peers, node, addr, objects, leaving, timeout)
                })
                .collect();
            let mut sent = unreachable;
            while let Some(result) = pending.next().await {
                sent.push(result);
            }
            store.do_send(StepSent {
                job: job_id,
                sent,
                drops,
            });
        });
    }

    /// A step's sends are over: counts them, drops the copies that moved,
    /// and takes the next step.
    pub(super) fn step_sent(
        &mut self,
        msg: StepSent,
        view: &ClusterView,
        local: &mut LocalCopies,
        ctx: &mut Context<Store>,
    ) {
        let Some(job) = &mut self.job else { return };
        if job.id != msg.job {
            return;
        }
        job.sending = false;
        let mut stored_by = BTreeSet::new();
        for &(node, keys, bytes, ok) in &msg.sent {
            let target = job.progress.to_nodes.entry(node.to_string()).or_default();
            target.keys += keys;
            target.bytes += bytes;
            job.progress.keys_sent += keys;
            job.progress.bytes_sent += bytes;
            self.metrics.handoff_keys_sent.add(keys);
            self.metrics.handoff_bytes_sent.add(bytes);
            if ok {
                stored_by.insert(node);
            } else {
                target.failed += 1;
                job.progress.failed_sends += 1;
                job.failed = true;
            }
        }
        for (key, dots, targets) in msg.drops {
            if !drops_after_handoff(&targets, &stored_by, &view.home_of(&key), view.local_id()) {
                continue;
            }
            match local.drop_if(&key, &dots) {
                Ok(true) => job.progress.keys_dropped += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not drop a handed-over key"),
            }
        }
        ctx.notify(Step(msg.job));
    }

    fn finish(
        &mut self,
        view: &mut ClusterView,
        local: &mut LocalCopies,
        ctx: &mut Context<Store>,
    ) {
        let Some(job) = self.job.take() else { return };
        let state = if job.failed {
            JobState::Incomplete
        } else {
            JobState::Done
        };
        let report = job.report(state);
        tracing::info!(
            job = job.id,
            ?state,
            keys_sent = report.progress.keys_sent,
            keys_dropped = report.progress.keys_dropped,
            elapsed_ms = report.elapsed_ms,
            "ring change handed over"
        );
        local.trees_mut().finish_rebuild();
        local.save_settled_ring(&job.to);
        view.set_moving_to(None);
        self.metrics.handoff_running.set(0);
        self.metrics.handoff_jobs.inc();
        if job.failed && job.leave.is_none() {
            self.retry_from = Some(job.from.clone());
            ctx.notify_later(Retry, RETRY_AFTER);
        }
        if let Some(leave) = job.leave {
            let _ = leave.send(report.clone());
        }
        self.last = Some(report);
    }

    /// Runs an incomplete job again, from the ring it started from to the
    /// ring as it is now.
    pub(super) fn retry(
        &mut self,
        view: &mut ClusterView,
        local: &mut LocalCopies,
        ctx: &mut Context<Store>,
    ) {
        if self.job.is_some() || self.leaving {
            return;
        }
        if let Some(from) = self.retry_from.take() {
            let to = view.ring().clone();
            self.start(from, to, None, view, local, ctx);
        }
    }
}

/// Sends `objects` to `node` in batches, stopping at the first that is not
/// wholly stored: (node, keys stored, bytes sent, whether all were).
async fn send_batches(
    peers: &ReplicaClient,
    node: NodeId,
    addr: SocketAddr,
    objects: Vec<(Key, Object)>,
    leaving: Option<NodeId>,
    timeout: Duration,
) -> (NodeId, u64, u64, bool) {
    let (mut keys, mut bytes) = (0u64, 0u64);
    for chunk in objects.chunks(BATCH_OBJECTS) {
        let size: usize = chunk
            .iter()
            .map(|(k, o)| k.len() + o.approximate_size())
            .sum();
        let objects = chunk.to_vec();
        let request = match leaving {
            Some(leaving) => ReplicaRequest::HandOver { leaving, objects },
            None => ReplicaRequest::WriteBatch { objects },
        };
        match peers.request_within(addr, &request, timeout).await {
            Ok(ReplicaReply::StoredBatch { stored, refused }) => {
                keys += stored as u64;
                bytes += size as u64;
                // A receiver whose ring lags refuses keys it does not home
                // yet: this node keeps its copies and the job tries again.
                if refused > 0 {
                    tracing::debug!(%node, refused, "handoff batch partly refused");
                    return (node, keys, bytes, false);
                }
            }
            other => {
                tracing::debug!(%node, outcome = ?other.err(), "handoff batch not stored");
                return (node, keys, bytes, false);
            }
        }
    }
    (node, keys, bytes, true)
}
