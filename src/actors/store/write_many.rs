//! A client batch's writes, coordinated together: those this node can
//! version at once are versioned in one pass and one storage write, and
//! reach each replica in one `WriteEach` request rather than one request a
//! key. The others (a key this node is no home of, a context to look up, a
//! write that supersedes what a quorum read finds, a key twice in the
//! batch) take the single path, each on its own.
//!
//! Owns that split and the per-key outcome: a write is acknowledged once
//! W replicas hold it, as a single write is; a replica that did not take
//! it gets a hint. Unlike a single write it waits for every replica asked
//! (at most the replica timeout) rather than the first W, and does not try
//! further stand-ins for one that fails: that write is a 503 naming where
//! it is stored, and spreads from there.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Instant;

use actix::{AsyncContext, Context, Message, ResponseFuture};

use super::coordinate::{Coordinating, Coordinator, KeepHints};
use super::{ClientWrite, Store, StoreError, Supersedes};
use crate::data::coordinate::{route_write, uncovered_homes, WriteRoute};
use crate::key::Key;
use crate::node_id::NodeId;
use crate::replica::{QuorumShortfall, ReplicaReply, ReplicaRequest, Written};
use crate::replication::{Quorum, Target};
use crate::version::{Object, VersionVector};

/// Many client writes of one batch, each with its own outcome, in order.
#[derive(Message, Debug)]
#[rtype(result = "Vec<Result<Written, StoreError>>")]
pub struct PutMany {
    pub writes: Vec<ClientWrite>,
    /// The copies each needs (`?w=`), if the client chose.
    pub quorum: Option<Quorum>,
}

/// One write versioned here, waiting for its replicas.
struct Spreading {
    index: usize,
    key: Key,
    context: VersionVector,
    stored_on: Vec<NodeId>,
    /// The replicas that did not take it, as the targets they were.
    missed: Vec<Target>,
}

/// The items bound for one replica, and which `Spreading` each is.
struct ForNode {
    addr: SocketAddr,
    items: Vec<(Key, Object, Option<NodeId>)>,
    spreading: Vec<(usize, Target)>,
}

impl Coordinator<'_> {
    pub(super) fn write_many(
        &mut self,
        msg: PutMany,
        ctx: &mut Context<Store>,
    ) -> ResponseFuture<Vec<Result<Written, StoreError>>> {
        let needed = self.view.write_quorum(msg.quorum);
        let local_id = self.config.local_id;
        let writes = msg.writes;
        let mut results: Vec<Option<Result<Written, StoreError>>> =
            (0..writes.len()).map(|_| None).collect();
        let mut keys = HashSet::new();
        let mut here = Vec::new();
        let mut single = Vec::new();
        for (index, write) in writes.iter().enumerate() {
            let placement = self.view.placement(&write.key);
            let versioned_here = matches!(write.supersedes, Supersedes::Seen(_))
                && route_write(&placement, local_id, needed, false) == WriteRoute::Here
                && keys.insert(write.key.clone());
            if versioned_here {
                here.push((index, placement));
            } else {
                single.push(index);
            }
        }
        let empty = VersionVector::new();
        let asked: Vec<_> = here
            .iter()
            .map(|(index, _)| {
                let write = &writes[*index];
                let context = match &write.supersedes {
                    Supersedes::Seen(context) => context,
                    _ => &empty,
                };
                (write.key.as_str(), context, &write.payload)
            })
            .collect();
        let versioned = self.local.version_many(&asked);
        let mut spreading = Vec::new();
        let mut for_node: HashMap<NodeId, ForNode> = HashMap::new();
        for ((index, placement), outcome) in here.into_iter().zip(versioned) {
            let (context, object) = match outcome {
                None => {
                    single.push(index);
                    continue;
                }
                Some(Err(e)) => {
                    results[index] = Some(Err(e));
                    continue;
                }
                Some(Ok(done)) => done,
            };
            self.metrics.kv_writes_coordinated.inc();
            let key = writes[index].key.clone();
            let uncovered = uncovered_homes(&placement, local_id);
            if !uncovered.is_empty() {
                self.hints.keep(&key, &uncovered, local_id);
            }
            let at = spreading.len();
            let mut missed = Vec::new();
            for target in placement.targets.iter().filter(|t| t.node != local_id) {
                let Some(addr) = self.view.addr_of(target.node) else {
                    missed.push(*target);
                    continue;
                };
                let bound = for_node.entry(target.node).or_insert_with(|| ForNode {
                    addr,
                    items: Vec::new(),
                    spreading: Vec::new(),
                });
                bound
                    .items
                    .push((key.clone(), object.clone(), target.hint_for));
                bound.spreading.push((at, *target));
            }
            spreading.push(Spreading {
                index,
                key,
                context,
                stored_on: vec![local_id],
                missed,
            });
        }
        single.sort_unstable();
        let singles: Vec<_> = single
            .into_iter()
            .map(|index| {
                let job = Coordinating {
                    write: writes[index].clone(),
                    needed,
                    forwarded: false,
                    trace: None,
                };
                (index, self.write(job, false, ctx))
            })
            .collect();
        let (peers, reachability, timeout) = (
            self.peers.clone(),
            self.view.reachability().clone(),
            self.config.replica_timeout,
        );
        let store = ctx.address();
        Box::pin(async move {
            let sends = for_node.into_iter().map(|(node, bound)| {
                let (peers, reachability) = (peers.clone(), reachability.clone());
                async move {
                    let count = bound.items.len();
                    let request = ReplicaRequest::WriteEach { items: bound.items };
                    let outcome = peers.request_within(bound.addr, &request, timeout).await;
                    reachability.observe(node, &outcome, Instant::now());
                    let stored = match outcome {
                        Ok(ReplicaReply::StoredEach(stored)) if stored.len() == count => stored,
                        _ => vec![false; count],
                    };
                    (node, bound.spreading, stored)
                }
            });
            for (node, bound, stored) in futures_util::future::join_all(sends).await {
                for ((at, target), took) in bound.into_iter().zip(stored) {
                    if took {
                        spreading[at].stored_on.push(node);
                    } else {
                        spreading[at].missed.push(target);
                    }
                }
            }
            for spread in spreading {
                let owners: Vec<NodeId> = spread
                    .missed
                    .iter()
                    .map(|t| t.hint_for.unwrap_or(t.node))
                    .collect();
                if !owners.is_empty() {
                    store.do_send(KeepHints {
                        key: spread.key.clone(),
                        owners,
                    });
                }
                results[spread.index] = Some(if spread.stored_on.len() >= needed {
                    Ok(Written {
                        context: spread.context,
                        stored_on: spread.stored_on,
                    })
                } else {
                    Err(StoreError::WriteQuorum(QuorumShortfall {
                        needed,
                        answered: spread.stored_on.len(),
                        stored_on: spread.stored_on,
                    }))
                });
            }
            for (index, written) in singles {
                results[index] = Some(written.await);
            }
            results
                .into_iter()
                .map(|result| result.unwrap_or(Err(StoreError::Restarting)))
                .collect()
        })
    }
}
