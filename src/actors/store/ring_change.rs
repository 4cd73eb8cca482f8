//! Moving data when the ring changes: a join, a leave, a removal.
//!
//! Owns the ring-change job: one walk over every key this node holds, in
//! steps of [`STEP_KEYS`], that rebuilds the hash trees for the new ring and
//! sends each key to the nodes newly responsible for it, in batches, waiting
//! for each step's sends before the next so that client traffic (handled
//! between steps) is never starved. A node that is no longer a home replica
//! of a key drops its copy once every new home replica stored it; until
//! then it still serves reads. One node sends each key: the replica the key
//! moved away from if it is up, else the first home replica that keeps it.
//! A step whose sends failed leaves the job incomplete; it runs again after
//! [`RETRY_AFTER`], and anti-entropy repairs what a job could not move.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{AsyncContext, Context, Handler, Message, ResponseFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tokio::sync::oneshot;

use super::Store;
use crate::data::handoff::{drops_after_handoff, Move, RingChange};
use crate::data::layout::{key_of_data_key, DATA_PREFIX, META_PREFIX};
use crate::data::placement::{home_of, shared_peers};
use crate::merkle::{bucket_of, entry_hash, HashTree};
use crate::node_id::NodeId;
use crate::replica::{ReplicaReply, ReplicaRequest};
use crate::ring::Ring;
use crate::version::{Dot, Object};

/// Keys read from storage per step.
const STEP_KEYS: usize = 256;
/// Objects per `WriteBatch` request.
const BATCH_OBJECTS: usize = 64;
/// When an incomplete job runs again.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(5);
const SETTLED_RING: &[u8] = b"mring";

pub(in crate::actors) struct RingJob {
    id: u64,
    from: Arc<Ring>,
    pub(super) to: Arc<Ring>,
    /// The last data key scanned.
    cursor: Option<Vec<u8>>,
    /// The trees for `to`, built as the walk goes.
    pub(super) trees: HashMap<NodeId, HashTree>,
    started: Instant,
    progress: Progress,
    sending: bool,
    failed: bool,
    /// A leave waits for its job; keys stay here after they are sent.
    leave: Option<oneshot::Sender<HandoffReport>>,
}

impl RingJob {
    /// Whether the walk has passed `raw` (so a change to it must update the
    /// new trees here rather than wait to be scanned).
    pub(super) fn has_scanned(&self, raw: &[u8]) -> bool {
        self.cursor.as_deref().is_some_and(|cursor| raw <= cursor)
    }

    fn report(&self, state: &'static str) -> HandoffReport {
        HandoffReport {
            state,
            from_nodes: self.from.len(),
            to_nodes: self.to.len(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            progress: self.progress.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Progress {
    pub keys_scanned: u64,
    pub keys_sent: u64,
    pub bytes_sent: u64,
    pub keys_dropped: u64,
    pub failed_sends: u64,
    /// Per receiving node: what it was sent.
    pub to_nodes: BTreeMap<String, TargetProgress>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetProgress {
    pub keys: u64,
    pub bytes: u64,
    pub failed: u64,
}

/// How a ring change went (or is going), for `/cluster/handoff`.
#[derive(Clone, Debug, Serialize)]
pub struct HandoffReport {
    /// `running`, `done`, or `incomplete` (some sends failed; it runs again).
    pub state: &'static str,
    pub from_nodes: usize,
    pub to_nodes: usize,
    pub elapsed_ms: u64,
    pub progress: Progress,
}

#[derive(Default)]
pub(in crate::actors) struct HandoffLog {
    last: Option<HandoffReport>,
    next_id: u64,
    /// The ring an incomplete job started from, to run it again.
    retry_from: Option<Arc<Ring>>,
    /// Whether the trees reflect storage (they live in memory only, so a
    /// restarted node rebuilds them with a job even if the ring is the same).
    pub(super) trees_built: bool,
}

/// The ring change under way and the last one finished.
#[derive(Message, Debug)]
#[rtype(result = "HandoffView")]
pub struct HandoffStatus;

#[derive(Clone, Debug, Serialize)]
pub struct HandoffView {
    pub running: Option<HandoffReport>,
    pub last: Option<HandoffReport>,
}

/// Hands every key this node holds to the nodes that hold it once this
/// node is gone; answers when done. Sent by a node that leaves.
#[derive(Message, Debug)]
#[rtype(result = "Option<HandoffReport>")]
pub struct HandOffForLeave;

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct Step(u64);

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct StepSent {
    job: u64,
    /// Per target: keys, bytes, whether every batch was stored.
    sent: Vec<(NodeId, u64, u64, bool)>,
    /// Keys to drop here once their targets all stored them.
    drops: Vec<(String, BTreeSet<Dot>, Vec<NodeId>)>,
}

impl Store {
    /// Takes in a new ring from Membership.
    pub(super) fn on_ring(&mut self, ring: Arc<Ring>, ctx: &mut Context<Self>) {
        self.ring = ring.clone();
        if self.leaving {
            return;
        }
        let settled = self.settled.clone();
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
        if already_there && (self.handoff.trees_built || self.job.is_some()) {
            return;
        }
        let from = self
            .job
            .as_ref()
            .map(|job| job.from.clone())
            .or(settled)
            .unwrap_or_else(|| ring.clone());
        self.start_job(from, ring, None, ctx);
    }

    fn start_job(
        &mut self,
        from: Arc<Ring>,
        to: Arc<Ring>,
        leave: Option<oneshot::Sender<HandoffReport>>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(old) = self.job.take() {
            tracing::info!(job = old.id, "ring changed again; the handoff starts over");
        }
        self.handoff.next_id += 1;
        let id = self.handoff.next_id;
        tracing::info!(
            job = id,
            from = from.len(),
            to = to.len(),
            "ring change: handing data over"
        );
        self.job = Some(RingJob {
            id,
            from,
            to,
            cursor: None,
            trees: HashMap::new(),
            started: Instant::now(),
            progress: Progress::default(),
            sending: false,
            failed: false,
            leave,
        });
        self.metrics.handoff_running.set(1);
        ctx.notify(Step(id));
    }

    /// What `key` needs when data placed for the job's `from` ring moves
    /// to its `to` ring ([`RingChange::plan`]).
    fn plan_move(&self, job: &RingJob, key: &str) -> Option<Move> {
        let change = RingChange {
            from: &job.from,
            to: &job.to,
            replication: &self.config.replication,
            local_id: self.config.local_id,
            leaving: job.leave.is_some(),
        };
        change.plan(key, |n| self.is_up(n), self.hints.any_for_key(key))
    }

    fn step(&mut self, job_id: u64, ctx: &mut Context<Self>) {
        let Some(job) = &self.job else { return };
        if job.id != job_id || job.sending {
            return;
        }
        let batch = match self
            .engine
            .scan_after(&[DATA_PREFIX], job.cursor.as_deref(), STEP_KEYS)
        {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "ring change cannot read storage; retrying later");
                if let Some(job) = &mut self.job {
                    job.failed = true;
                }
                self.finish_job(ctx);
                return;
            }
        };
        let Some((last, _)) = batch.last() else {
            self.finish_job(ctx);
            return;
        };
        let last = last.clone();
        let local_id = self.config.local_id;
        let mut outgoing: HashMap<NodeId, Vec<(String, Object)>> = HashMap::new();
        let mut drops = Vec::new();
        let mut new_entries = Vec::new();
        for (raw, bytes) in &batch {
            let Some(key) = key_of_data_key(raw) else {
                continue;
            };
            let Ok(object) = Object::decode(bytes) else {
                tracing::warn!(key, "skipping a stored object that does not decode");
                continue;
            };
            if object.is_empty() {
                continue;
            }
            let job = self.job.as_ref().expect("checked above");
            for peer in shared_peers(&job.to, &self.config.replication, local_id, key) {
                new_entries.push((peer, bucket_of(key), entry_hash(key, &object)));
            }
            if let Some(plan) = self.plan_move(job, key) {
                if plan.drop_here {
                    drops.push((key.to_string(), object.dots(), plan.targets.clone()));
                }
                for target in plan.targets {
                    outgoing
                        .entry(target)
                        .or_default()
                        .push((key.to_string(), object.clone()));
                }
            }
        }
        let job = self.job.as_mut().expect("checked above");
        for (peer, bucket, hash) in new_entries {
            job.trees.entry(peer).or_default().toggle(bucket, hash);
        }
        job.cursor = Some(last);
        job.progress.keys_scanned += batch.len() as u64;
        if outgoing.is_empty() && drops.is_empty() {
            ctx.notify(Step(job_id));
            return;
        }
        job.sending = true;
        let sends: Vec<_> = outgoing
            .into_iter()
            .filter_map(|(node, objects)| self.addr_of(node).map(|addr| (node, addr, objects)))
            .collect();
        let peers = self.peers.clone();
        let timeout = self.config.replica_timeout * 3;
        let store = ctx.address();
        let leaving = self.leaving.then_some(self.config.local_id);
        actix::spawn(async move {
            let mut pending: FuturesUnordered<_> = sends
                .into_iter()
                .map(|(node, addr, objects)| {
                    let peers = peers.clone();
                    async move {
                        let (mut keys, mut bytes, mut ok) = (0u64, 0u64, true);
                        for chunk in objects.chunks(BATCH_OBJECTS) {
                            let size: usize = chunk.iter().map(|(k, o)| k.len() + o.approximate_size()).sum();
                            let objects = chunk.to_vec();
                            let request = match leaving {
                                Some(leaving) => ReplicaRequest::HandOver { leaving, objects },
                                None => ReplicaRequest::WriteBatch { objects },
                            };
                            match peers.request_within(addr, &request, timeout).await {
                                Ok(ReplicaReply::StoredBatch { stored, refused }) => {
                                    keys += stored as u64;
                                    bytes += size as u64;
                                    // A receiver whose ring lags refuses keys
                                    // it does not home yet: this node keeps
                                    // its copies and the job tries again.
                                    if refused > 0 {
                                        tracing::debug!(%node, refused, "handoff batch partly refused");
                                        ok = false;
                                        break;
                                    }
                                }
                                other => {
                                    tracing::debug!(%node, outcome = ?other.err(), "handoff batch not stored");
                                    ok = false;
                                    break;
                                }
                            }
                        }
                        (node, keys, bytes, ok)
                    }
                })
                .collect();
            let mut sent = Vec::new();
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

    fn step_sent(&mut self, msg: StepSent, ctx: &mut Context<Self>) {
        let Some(job) = &mut self.job else { return };
        if job.id != msg.job {
            return;
        }
        job.sending = false;
        let mut failed_targets = BTreeSet::new();
        for (node, keys, bytes, ok) in &msg.sent {
            let target = job.progress.to_nodes.entry(node.to_string()).or_default();
            target.keys += keys;
            target.bytes += bytes;
            job.progress.keys_sent += keys;
            job.progress.bytes_sent += bytes;
            self.metrics.handoff_keys_sent.add(*keys);
            self.metrics.handoff_bytes_sent.add(*bytes);
            if !ok {
                target.failed += 1;
                job.progress.failed_sends += 1;
                job.failed = true;
                failed_targets.insert(*node);
            }
        }
        let stored_by: BTreeSet<NodeId> = msg
            .sent
            .iter()
            .map(|(n, ..)| *n)
            .filter(|n| !failed_targets.contains(n))
            .collect();
        let me = self.config.local_id;
        for (key, dots, targets) in msg.drops {
            let home_now = home_of(&self.ring, &self.config.replication, &key);
            if drops_after_handoff(&targets, &stored_by, &home_now, me) {
                match self.drop_local_if(&key, &dots) {
                    Ok(true) => {
                        if let Some(job) = &mut self.job {
                            job.progress.keys_dropped += 1;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "could not drop a handed-over key"),
                }
            }
        }
        ctx.notify(Step(msg.job));
    }

    fn finish_job(&mut self, ctx: &mut Context<Self>) {
        let Some(job) = self.job.take() else { return };
        let state = if job.failed { "incomplete" } else { "done" };
        let report = job.report(state);
        tracing::info!(
            job = job.id,
            state,
            keys_sent = report.progress.keys_sent,
            keys_dropped = report.progress.keys_dropped,
            elapsed_ms = report.elapsed_ms,
            "ring change handed over"
        );
        self.trees = job.trees;
        self.handoff.trees_built = true;
        self.settled = Some(job.to.clone());
        self.save_settled_ring(&job.to);
        self.metrics.handoff_running.set(0);
        self.metrics.handoff_jobs.inc();
        if job.failed && job.leave.is_none() {
            self.handoff.retry_from = Some(job.from.clone());
            ctx.run_later(RETRY_AFTER, |store, ctx| store.retry_ring_change(ctx));
        }
        if let Some(leave) = job.leave {
            let _ = leave.send(report.clone());
        }
        self.handoff.last = Some(report);
    }

    fn retry_ring_change(&mut self, ctx: &mut Context<Self>) {
        if self.job.is_some() || self.leaving {
            return;
        }
        if let Some(from) = self.handoff.retry_from.take() {
            let to = self.ring.clone();
            self.start_job(from, to, None, ctx);
        }
    }

    fn save_settled_ring(&self, ring: &Ring) {
        let ids: Vec<u64> = ring.nodes().iter().map(|n| n.as_u64()).collect();
        let Ok(bytes) = rmp_serde::to_vec(&(ring.vnodes(), ids)) else {
            return;
        };
        if let Err(e) = self.engine.put(&meta_key(SETTLED_RING), &bytes) {
            tracing::warn!(error = %e, "could not record the settled ring");
        }
    }

    /// The ring this node's data was placed for before a restart.
    pub(super) fn load_settled_ring(&mut self) {
        let Ok(Some(bytes)) = self.engine.get(&meta_key(SETTLED_RING)) else {
            return;
        };
        match rmp_serde::from_slice::<(usize, Vec<u64>)>(&bytes) {
            Ok((vnodes, ids)) if vnodes == self.config.vnodes => {
                let ring = Ring::new(ids.into_iter().map(NodeId::from_u64), vnodes);
                self.settled = Some(Arc::new(ring));
            }
            Ok(_) => tracing::warn!("the settled ring used other tokens per node; starting afresh"),
            Err(_) => tracing::warn!("the settled ring record does not decode; starting afresh"),
        }
    }

    pub(super) fn handoff_view(&self) -> HandoffView {
        HandoffView {
            running: self.job.as_ref().map(|job| job.report("running")),
            last: self.handoff.last.clone(),
        }
    }
}

fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut key = vec![META_PREFIX];
    key.extend_from_slice(name);
    key
}

impl Handler<Step> for Store {
    type Result = ();

    fn handle(&mut self, msg: Step, ctx: &mut Self::Context) {
        self.step(msg.0, ctx);
    }
}

impl Handler<StepSent> for Store {
    type Result = ();

    fn handle(&mut self, msg: StepSent, ctx: &mut Self::Context) {
        self.step_sent(msg, ctx);
    }
}

impl Handler<HandoffStatus> for Store {
    type Result = actix::MessageResult<HandoffStatus>;

    fn handle(&mut self, _msg: HandoffStatus, _ctx: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.handoff_view())
    }
}

impl Handler<HandOffForLeave> for Store {
    type Result = ResponseFuture<Option<HandoffReport>>;

    fn handle(&mut self, _msg: HandOffForLeave, ctx: &mut Self::Context) -> Self::Result {
        self.leaving = true;
        let me = self.config.local_id;
        let to = Arc::new(Ring::new(
            self.ring.nodes().iter().copied().filter(|&n| n != me),
            self.config.vnodes,
        ));
        let from = self.settled.clone().unwrap_or_else(|| self.ring.clone());
        if to.is_empty() {
            return Box::pin(async { None });
        }
        let (done, report) = oneshot::channel();
        self.start_job(from, to, Some(done), ctx);
        Box::pin(async move { report.await.ok() })
    }
}
