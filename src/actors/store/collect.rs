//! Tombstone collection: deletions every home replica holds are finally
//! forgotten.
//!
//! Owns the walk over this node's copies, [`STEP_KEYS`] per anti-entropy
//! tick. A tombstone is collected when `data::repair::may_collect` says so
//! (past `--tombstone-grace-ms`, this node its first home replica, every
//! member alive), every other home replica holds exactly the same versions
//! and no other member holds anything else of the key (a stand-in's copy
//! of the deleted value, waiting for its hint); then this node tells the
//! homes to purge it and purges its own.
//! A replica that purged remembers it for a while
//! (`data::purge::PurgedTombstones`, in [`LocalCopies`]), so a copy still
//! on its way does not bring the tombstone back. Never purges a copy that
//! changed since it was judged: a purge drops exactly the versions named.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{AsyncContext, Context, Message};
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::local::LocalCopies;
use super::view::ClusterView;
use super::{ReplicaClient, Store};
use crate::data::repair::{blocks_collection, may_collect};
use crate::key::Key;
use crate::member::MemberState;
use crate::node_id::NodeId;
use crate::replica::{ReplicaReply, ReplicaRequest};
use crate::version::Dot;

/// Keys examined per step.
const STEP_KEYS: usize = 256;

/// Tombstones every home replica was told to purge: drop them here too.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct PurgeHere(Vec<(Key, BTreeSet<Dot>)>);

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct CollectStepOver;

/// This node's wall clock, in ms since the epoch: the HTTP layer stamps a
/// tombstone with it, and collection judges a tombstone's age by it.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(super) struct Collector {
    peers: ReplicaClient,
    timeout: Duration,
    grace: Duration,
    cursor: Option<Vec<u8>>,
    running: bool,
}

impl Collector {
    pub(super) fn new(peers: ReplicaClient, replica_timeout: Duration, grace: Duration) -> Self {
        Collector {
            peers,
            timeout: replica_timeout,
            grace,
            cursor: None,
            running: false,
        }
    }

    /// Judges the next keys; asks the other home replicas about those that
    /// may go, then purges them everywhere.
    pub(super) fn step(
        &mut self,
        view: &ClusterView,
        local: &LocalCopies,
        ctx: &mut Context<Store>,
    ) {
        if self.running || !local.trees().ready() {
            return;
        }
        let (last, copies) = match local.walk(self.cursor.as_deref(), STEP_KEYS) {
            Ok(walked) => walked,
            Err(e) => {
                tracing::warn!(error = %e, "tombstone collection cannot read storage");
                return;
            }
        };
        self.cursor = last;
        let (grace, now, me) = (
            self.grace.as_millis() as u64,
            wall_clock_ms(),
            view.local_id(),
        );
        let members: Vec<NodeId> = view
            .members()
            .values()
            .filter(|m| m.state != MemberState::Left && m.id != me)
            .map(|m| m.id)
            .collect();
        let mut candidates = Vec::new();
        for (key, object) in copies {
            let Some(deleted_at) = object.deleted_at_ms() else {
                continue;
            };
            let home = view.home_of(&key);
            if !may_collect(deleted_at, now, grace, &home, &members, me, |n| {
                view.is_alive(n)
            }) {
                continue;
            }
            let others: Vec<SocketAddr> = home
                .iter()
                .filter(|&&n| n != me)
                .filter_map(|&n| view.addr_of(n))
                .collect();
            // Every other member, homes or not, is asked what it holds.
            let asked: Vec<(SocketAddr, bool)> = members
                .iter()
                .filter_map(|&n| view.addr_of(n).map(|addr| (addr, home.contains(&n))))
                .collect();
            candidates.push((key, object.dots(), others, asked));
        }
        if candidates.is_empty() {
            return;
        }
        self.running = true;
        let (peers, store, timeout) = (self.peers.clone(), ctx.address(), self.timeout);
        actix::spawn(async move {
            let mut purged = Vec::new();
            for (key, dots, others, asked) in candidates {
                if none_blocks(&peers, &key, &dots, &asked, timeout).await {
                    let request = ReplicaRequest::Purge {
                        key: key.clone(),
                        dots: dots.iter().copied().collect(),
                    };
                    let mut told: FuturesUnordered<_> = others
                        .iter()
                        .map(|addr| peers.request_within(*addr, &request, timeout))
                        .collect();
                    while told.next().await.is_some() {}
                    purged.push((key, dots));
                }
            }
            store.do_send(PurgeHere(purged));
            store.do_send(CollectStepOver);
        });
    }

    pub(super) fn purge_here(&self, msg: PurgeHere, local: &mut LocalCopies) {
        for (key, dots) in msg.0 {
            if let Err(e) = local.purge(&key, &dots) {
                tracing::warn!(error = %e, "could not purge a tombstone");
            }
        }
    }

    pub(super) fn step_over(&mut self) {
        self.running = false;
    }
}

/// Whether no member at `asked` (its address, and whether it is a home of
/// `key`) holds what stops collecting the tombstones `dots`
/// (`data::repair::blocks_collection`); one that does not answer does.
async fn none_blocks(
    peers: &ReplicaClient,
    key: &Key,
    dots: &BTreeSet<Dot>,
    asked: &[(SocketAddr, bool)],
    timeout: Duration,
) -> bool {
    let request = ReplicaRequest::Read { key: key.clone() };
    let mut reads: FuturesUnordered<_> = asked
        .iter()
        .map(|&(addr, is_home)| {
            let request = &request;
            async move { (peers.request_within(addr, request, timeout).await, is_home) }
        })
        .collect();
    while let Some((answer, is_home)) = reads.next().await {
        match answer {
            Ok(ReplicaReply::Object(object))
                if !blocks_collection(&object.dots(), dots, is_home) => {}
            _ => return false,
        }
    }
    true
}
