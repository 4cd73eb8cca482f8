//! Listing keys in order: a page coordinated here from every up replica's
//! next keys, and this replica's part of another node's page.
//!
//! Owns the conversation: who is asked (every member that is up, this
//! node included, so a key on its way to a new home is found on the old
//! one), and the refusal when the answers do not cover every token range
//! with R homes. Which keys the answers make a page of is
//! `data::scan`'s decision. Memory per page is bounded by the page's
//! limit times the replicas asked, never by the number of keys.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::Message;

use super::local::LocalCopies;
use super::reachability::Reachability;
use super::view::ClusterView;
use super::{ReplicaClient, StoreError};
use crate::data::scan::{covers_every_range, merge_pages, Page, ReplicaPage, Show};
use crate::key::Key;
use crate::node_id::NodeId;
use crate::replica::{ReplicaReply, ReplicaRequest, MAX_SCAN_LIMIT};
use crate::replication::Quorum;
use std::sync::Arc;

/// A client's listing: the next page of keys that start with `prefix`,
/// after `start_after`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Page, StoreError>")]
pub struct List {
    pub prefix: String,
    pub start_after: Option<String>,
    /// 1 to [`MAX_SCAN_LIMIT`].
    pub limit: usize,
    pub show: Show,
    /// Whether the page carries the values (else only versions).
    pub with_values: bool,
    pub quorum: Option<Quorum>,
}

/// This replica's part of a page.
pub(super) fn scan_here(
    local: &LocalCopies,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    with_values: bool,
) -> Result<ReplicaPage, StoreError> {
    local.scan(
        prefix,
        start_after,
        limit.clamp(1, MAX_SCAN_LIMIT),
        with_values,
    )
}

/// A page in the making: this node's part is read, the others' asked.
pub(super) struct Listing {
    pub list: List,
    pub local_part: ReplicaPage,
    pub local_id: NodeId,
    pub others: Vec<(NodeId, SocketAddr)>,
    pub ring: Arc<crate::ring::Ring>,
    pub replicas: usize,
    pub needed: usize,
    pub peers: ReplicaClient,
    pub reachability: Arc<Reachability>,
    pub timeout: Duration,
}

/// Refuses a page at once when the up members cannot cover every range.
pub(super) fn check_reachable(
    view: &ClusterView,
    needed: usize,
) -> Result<Vec<NodeId>, StoreError> {
    let mut up: Vec<NodeId> = view
        .ring()
        .nodes()
        .iter()
        .copied()
        .filter(|&n| n == view.local_id() || view.is_up(n))
        .collect();
    up.sort();
    let replicas = view.effective_replicas();
    if !covers_every_range(view.ring(), replicas, &up, needed) {
        return Err(StoreError::ListUnavailable {
            needed,
            answered: None,
        });
    }
    Ok(up)
}

impl Listing {
    pub(super) async fn run(self) -> Result<Page, StoreError> {
        let request = ReplicaRequest::Scan {
            prefix: self.list.prefix.clone(),
            start_after: self.list.start_after.clone(),
            limit: self.list.limit,
            with_values: self.list.with_values,
        };
        let asks = self.others.iter().map(|&(node, addr)| {
            let (peers, reachability, request, timeout) = (
                self.peers.clone(),
                self.reachability.clone(),
                request.clone(),
                self.timeout,
            );
            async move {
                let outcome = peers.request_within(addr, &request, timeout).await;
                reachability.observe(node, &outcome, Instant::now());
                match outcome {
                    Ok(ReplicaReply::Scanned { copies, more_after }) => {
                        Some((node, ReplicaPage { copies, more_after }))
                    }
                    other => {
                        tracing::debug!(%node, reply = ?other.map(|r| format!("{r:?}")), "a replica did not list its keys");
                        None
                    }
                }
            }
        });
        let mut answered = vec![self.local_id];
        let mut parts = vec![self.local_part];
        for (node, part) in futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
        {
            if part.copies.len() > self.list.limit || !in_order(&part.copies) {
                tracing::warn!(%node, "a replica's listing was out of order or too long; left out");
                continue;
            }
            answered.push(node);
            parts.push(part);
        }
        if !covers_every_range(&self.ring, self.replicas, &answered, self.needed) {
            return Err(StoreError::ListUnavailable {
                needed: self.needed,
                answered: Some(answered.len()),
            });
        }
        Ok(merge_pages(
            parts,
            self.list.limit,
            self.list.show,
            super::wall_clock_ms(),
        ))
    }
}

fn in_order(copies: &[(Key, crate::version::Object)]) -> bool {
    copies.windows(2).all(|w| w[0].0 < w[1].0)
}
