//! Membership by SWIM: each node runs this crate's `Swim` over the same
//! simulated network (its datagrams are one more kind of message, dropped,
//! duplicated, delayed and cut like the others), and its member table
//! drives its view, as the Membership actor's does: the ring is every
//! member that has not left, and a member is up while it is alive.
//!
//! Owns the glue only: creating a node's `Swim` (a restart begins afresh
//! and rejoins through the others), waking it, carrying its datagrams, a
//! leaving node's last moments (it gossips its leave for a while after its
//! store is gone), and a removal, which an operator makes on a node that
//! already holds the removed node dead. Never decides liveness itself.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rand::Rng;

use super::network::Msg;
use super::{Event, Sim, VNODES};
use crate::member::{Member, MemberState};
use crate::metrics::Metrics;
use crate::node_id::NodeId;
use crate::ring::Ring;
use crate::swim::{Swim, SwimConfig};
use crate::wire::Codec;

/// How long a node that left keeps gossiping its leave.
const LEAVE_GRACE_MS: u64 = 2_000;
/// How often an operator tries again to remove a node not yet dead to it.
const REMOVE_RETRY_MS: u64 = 500;

fn addr_of(node: usize) -> SocketAddr {
    let [a, b] = (node as u16).to_be_bytes();
    SocketAddr::from((Ipv4Addr::new(10, 77, a, b), 7946))
}

fn node_at(addr: SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(v4) => {
            let [_, _, a, b] = v4.ip().octets();
            Some(usize::from(u16::from_be_bytes([a, b])))
        }
        SocketAddr::V6(_) => None,
    }
}

impl Sim {
    /// A fresh `Swim` for `node`, joining through the other members.
    pub(super) fn start_swim(&mut self, node: usize) {
        let seeds: Vec<SocketAddr> = self
            .active()
            .into_iter()
            .filter(|&other| other != node)
            .map(addr_of)
            .collect();
        let local = Member {
            id: self.nodes[node].id,
            gossip_addr: addr_of(node),
            http_addr: addr_of(node),
            state: MemberState::Alive,
            incarnation: 0,
        };
        let swim = Swim::new(
            local,
            SwimConfig::default(),
            Codec::new("sim", crate::config::DEFAULT_GOSSIP_MTU),
            seeds,
            self.rng.random(),
            Arc::new(Metrics::default()),
            self.instant(),
        );
        let n = &mut self.nodes[node];
        n.swim = Some(swim);
        n.swim_wake = None;
        // Until it hears from the others it knows only itself.
        n.up.clear();
        self.pump(node);
    }

    /// Whether a datagram from `from` reaches `to`'s `Swim` now.
    pub(super) fn gossip_reaches(&self, from: usize, to: usize) -> bool {
        let n = &self.nodes[to];
        n.swim.is_some()
            && !n.crashed
            && !self
                .cuts
                .iter()
                .any(|c| c.from.contains(&from) && c.to.contains(&to))
    }

    pub(super) fn swim_datagram(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let now = self.instant();
        if let Some(swim) = self.nodes[to].swim.as_mut() {
            swim.handle_bytes(addr_of(from), &bytes, now);
            self.pump(to);
        }
    }

    pub(super) fn swim_wake(&mut self, node: usize, at: u64) {
        if self.nodes[node].swim_wake != Some(at) {
            return;
        }
        self.nodes[node].swim_wake = None;
        let now = self.instant();
        if let Some(swim) = self.nodes[node].swim.as_mut() {
            swim.tick(now);
            self.pump(node);
        }
    }

    /// Sends what `node`'s `Swim` wants sent, takes in what its table now
    /// says, and sets its next wake.
    fn pump(&mut self, node: usize) {
        let Some(swim) = self.nodes[node].swim.as_mut() else {
            return;
        };
        let outgoing = swim.take_outgoing();
        let changed = !swim.take_changes().is_empty();
        let wake = swim.next_wake();
        for datagram in outgoing {
            if let Some(to) = node_at(datagram.to).filter(|&to| to < self.nodes.len()) {
                self.send(
                    node,
                    to,
                    Msg::Gossip {
                        bytes: datagram.bytes,
                    },
                );
            }
        }
        if changed {
            self.apply_table(node);
        }
        if let Some(wake) = wake {
            let after = wake.saturating_duration_since(self.instant());
            // Rounded up: a wake short of the timer would find nothing due.
            let at = self.now + (after.as_nanos() as u64).div_ceil(1_000_000);
            if self.nodes[node].swim_wake.is_none_or(|s| at < s) {
                self.nodes[node].swim_wake = Some(at);
                self.at(at - self.now, Event::SwimWake { node, at });
            }
        }
    }

    /// The Membership actor's view of the table: the ring is every member
    /// that has not left, and who is up is who is alive.
    fn apply_table(&mut self, node: usize) {
        let Some(swim) = self.nodes[node].swim.as_ref() else {
            return;
        };
        let me = self.nodes[node].id;
        let mut ring = Vec::new();
        let mut up = std::collections::BTreeSet::new();
        let mut heard_of_others = false;
        for entry in swim.table().entries() {
            let member = &entry.member;
            heard_of_others |= member.id != me;
            if member.state != MemberState::Left {
                ring.push(member.id);
            }
            if member.state == MemberState::Alive && member.id != me {
                up.insert(member.id);
            }
        }
        if !self.runs(node) {
            return;
        }
        self.nodes[node].up = up;
        ring.sort();
        if ring != self.nodes[node].ring.nodes() {
            self.on_ring(node, Ring::new(ring, VNODES), heard_of_others);
        }
    }

    /// A node whose handoff for its leave is over tells the cluster, and
    /// keeps gossiping for a while.
    pub(super) fn swim_leave(&mut self, node: usize) {
        let now = self.instant();
        if let Some(swim) = self.nodes[node].swim.as_mut() {
            swim.leave(now);
            self.pump(node);
            let incarnation = self.nodes[node].incarnation;
            self.at(LEAVE_GRACE_MS, Event::SwimStop { node, incarnation });
        }
    }

    pub(super) fn swim_stop(&mut self, node: usize, incarnation: u64) {
        if self.nodes[node].incarnation == incarnation {
            self.nodes[node].swim = None;
        }
    }

    /// An operator removes `node` through a member that holds it dead;
    /// until one does, it tries again. Returns whether it was removed.
    pub(super) fn swim_remove(&mut self, node: usize) -> bool {
        let id: NodeId = self.nodes[node].id;
        let now = self.instant();
        for operator in self.active() {
            if operator == node || !self.runs(operator) {
                continue;
            }
            let Some(swim) = self.nodes[operator].swim.as_mut() else {
                continue;
            };
            let dead = swim
                .table()
                .get(id)
                .is_some_and(|e| e.member.state == MemberState::Dead);
            if dead && swim.remove(id, now).is_ok() {
                self.pump(operator);
                return true;
            }
        }
        self.at(REMOVE_RETRY_MS, Event::Remove { node });
        false
    }
}
