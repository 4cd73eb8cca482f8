//! The Store's view of the cluster: the members and ring Membership last
//! published, which peers this node's own requests found unreachable, and
//! the ring a ring change is moving to.
//!
//! Owns answers to "who is up", "where does this key live" and "how is a
//! node reached". Never asks the network or storage anything: the Store
//! updates it from `MembersChanged`, and the requests it spawns report what
//! they saw to the shared [`Reachability`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::reachability::Reachability;
use crate::data::accept::Homes;
use crate::data::placement::home_of;
use crate::member::{Member, MemberState};
use crate::node_id::NodeId;
use crate::replication::{Placement, Quorum, Replication};
use crate::ring::Ring;

pub(super) struct ClusterView {
    local_id: NodeId,
    replication: Replication,
    members: HashMap<NodeId, Member>,
    ring: Arc<Ring>,
    /// The ring a ring change is moving this node's data to, while it runs.
    moving_to: Option<Arc<Ring>>,
    /// Peers this node's own requests found unreachable lately; shared with
    /// the requests in flight, which report what they saw.
    reachability: Arc<Reachability>,
}

impl ClusterView {
    pub(super) fn new(
        local_id: NodeId,
        replication: Replication,
        reachability: Arc<Reachability>,
    ) -> Self {
        ClusterView {
            local_id,
            replication,
            members: HashMap::new(),
            ring: Arc::new(Ring::new([local_id], 1)),
            moving_to: None,
            reachability,
        }
    }

    /// Takes in Membership's news. A member whose record changed (back
    /// alive, a new incarnation after a healed partition or a restart) is
    /// worth asking again at once.
    pub(super) fn update(&mut self, members: &[Member], ring: Arc<Ring>) {
        let members: HashMap<NodeId, Member> = members.iter().map(|m| (m.id, m.clone())).collect();
        for (id, member) in &members {
            let before = self.members.get(id);
            if before.is_none_or(|b| (b.state, b.incarnation) != (member.state, member.incarnation))
            {
                self.reachability.forget(*id);
            }
        }
        self.members = members;
        self.ring = ring;
    }

    pub(super) fn set_moving_to(&mut self, ring: Option<Arc<Ring>>) {
        self.moving_to = ring;
    }

    pub(super) fn local_id(&self) -> NodeId {
        self.local_id
    }

    pub(super) fn replication(&self) -> &Replication {
        &self.replication
    }

    pub(super) fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    pub(super) fn reachability(&self) -> &Arc<Reachability> {
        &self.reachability
    }

    pub(super) fn effective_replicas(&self) -> usize {
        self.replication.effective_replicas(self.ring.len())
    }

    /// The copies a read needs: the client's `?r=` or the configured R.
    pub(super) fn read_quorum(&self, asked: Option<Quorum>) -> usize {
        asked
            .unwrap_or(Quorum::Count(self.replication.read_quorum))
            .resolve(self.effective_replicas())
    }

    /// The copies a write needs: the client's `?w=` or the configured W.
    pub(super) fn write_quorum(&self, asked: Option<Quorum>) -> usize {
        asked
            .unwrap_or(Quorum::Count(self.replication.write_quorum))
            .resolve(self.effective_replicas())
    }

    /// Whether `node` is alive in the member table (suspects are not).
    pub(super) fn is_alive(&self, node: NodeId) -> bool {
        self.members
            .get(&node)
            .is_some_and(|m| m.state == MemberState::Alive)
    }

    /// Whether `node` may be asked to hold or serve a copy now. A suspect
    /// member is not: it is usually gone, and a false suspicion only sends
    /// its writes to stand-ins with hints for a moment. Nor is a member this
    /// node's own requests just failed to reach.
    pub(super) fn is_up(&self, node: NodeId) -> bool {
        node == self.local_id || (self.is_alive(node) && !self.reachability.is_unreachable(node))
    }

    pub(super) fn placement(&self, key: &str) -> Placement {
        Placement::of(&self.ring, key.as_bytes(), self.effective_replicas(), |n| {
            self.is_up(n)
        })
    }

    /// The key's home replicas on the current ring.
    pub(super) fn home_of(&self, key: &str) -> Vec<NodeId> {
        home_of(&self.ring, &self.replication, key)
    }

    /// Where keys live now, as `data::accept` judges what to take.
    pub(super) fn homes(&self) -> Homes<'_> {
        Homes {
            local_id: self.local_id,
            replication: &self.replication,
            ring: &self.ring,
            moving_to: self.moving_to.as_deref(),
        }
    }

    pub(super) fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.members.get(&node).map(|m| m.gossip_addr)
    }

    pub(super) fn with_addrs(
        &self,
        nodes: impl IntoIterator<Item = NodeId>,
    ) -> Vec<(NodeId, SocketAddr)> {
        nodes
            .into_iter()
            .filter_map(|n| self.addr_of(n).map(|a| (n, a)))
            .collect()
    }

    /// The members, for the admission of peer requests.
    pub(super) fn members(&self) -> &HashMap<NodeId, Member> {
        &self.members
    }
}
