//! The Membership actor: the single authority on who is in the cluster.
//!
//! Owns the node's published [`MemberTable`], the [`Ring`] derived from it
//! and the list of subscribers. Handles [`ApplyNews`] (from Gossip: every
//! change its SWIM state machine accepted, in order), [`ListMembers`] and
//! [`GetRing`] (from HTTP) and [`Subscribe`] (from the Store); publishes
//! [`MembersChanged`], with the ring, to every subscriber after any change.
//! The ring holds every member that has not left: a member that is merely
//! down keeps its place, so its keys do not move while it is away. The
//! rules of which news wins live in the pure `member` module, and the same
//! rules run here and in SWIM, so this table mirrors the protocol's. It must
//! never do I/O: it hears of the network only through Gossip's messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message, Recipient, Supervised};

use super::contain_panic;
use crate::member::{Member, MemberState, MemberTable};
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::ring::Ring;

pub struct Membership {
    table: MemberTable,
    ring: Arc<Ring>,
    vnodes: usize,
    subscribers: Vec<Recipient<MembersChanged>>,
    metrics: SharedMetrics,
}

/// Members as gossip reported them, newest or not: the table keeps what wins.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ApplyNews {
    pub news: Vec<Member>,
}

/// A snapshot of the table, for display.
#[derive(Message, Debug)]
#[rtype(result = "Vec<MemberStatus>")]
pub struct ListMembers;

#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub member: Member,
    pub time_in_state: Duration,
}

/// The current ring and members, for display.
#[derive(Message, Debug)]
#[rtype(result = "MembersChanged")]
pub struct GetRing;

/// Asks for [`MembersChanged`] after every change, starting with the current
/// table right away.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<MembersChanged>);

/// Published by Membership to its subscribers: every member, this node
/// included, sorted by id.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct MembersChanged {
    pub members: Arc<[Member]>,
    pub ring: Arc<Ring>,
}

/// The members that hold a place on the ring: all but those that left.
fn ring_members(table: &MemberTable) -> impl Iterator<Item = NodeId> + '_ {
    table
        .entries()
        .filter(|e| e.member.state != MemberState::Left)
        .map(|e| e.member.id)
}

impl Membership {
    pub fn new(local: Member, vnodes: usize, metrics: SharedMetrics) -> Self {
        let table = MemberTable::new(local, Instant::now());
        let ring = Arc::new(Ring::new(ring_members(&table), vnodes));
        Membership {
            table,
            ring,
            vnodes,
            subscribers: Vec::new(),
            metrics,
        }
    }

    fn snapshot(&self) -> MembersChanged {
        MembersChanged {
            members: self.table.members().into(),
            ring: self.ring.clone(),
        }
    }

    /// Rebuilds the ring only when the set of members on it changed: a
    /// state change between alive, suspect and dead moves no key.
    fn refresh_ring(&mut self) {
        let mut on_ring: Vec<NodeId> = ring_members(&self.table).collect();
        on_ring.sort_unstable();
        if on_ring != self.ring.nodes() {
            tracing::info!(nodes = on_ring.len(), "ring changed");
            self.ring = Arc::new(Ring::new(on_ring, self.vnodes));
        }
    }

    fn publish(&mut self) {
        self.refresh_ring();
        let snapshot = self.snapshot();
        for subscriber in &self.subscribers {
            subscriber.do_send(snapshot.clone());
        }
    }
}

impl Actor for Membership {
    type Context = Context<Self>;
}

impl Supervised for Membership {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.metrics.actor_restarts_membership.inc();
        tracing::warn!(members = self.table.len(), "membership actor restarting");
    }
}

impl Handler<ApplyNews> for Membership {
    type Result = ();

    fn handle(&mut self, msg: ApplyNews, ctx: &mut Self::Context) {
        let now = Instant::now();
        let table = &mut self.table;
        let changed = contain_panic("membership", ctx, || {
            let mut changed = false;
            for news in msg.news {
                let (id, state) = (news.id, news.state);
                if id == table.local_id() {
                    // Only this node's own protocol reports on itself.
                    table.set_local(news, now);
                    changed = true;
                } else if table.apply(news, now) {
                    tracing::info!(member = %id, state = state.as_str(), "member changed");
                    changed = true;
                }
            }
            changed
        });
        if changed == Some(true) {
            self.publish();
        }
    }
}

impl Handler<ListMembers> for Membership {
    type Result = Vec<MemberStatus>;

    fn handle(&mut self, _msg: ListMembers, _ctx: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        let mut members: Vec<MemberStatus> = self
            .table
            .entries()
            .map(|entry| MemberStatus {
                member: entry.member.clone(),
                time_in_state: entry.time_in_state(now),
            })
            .collect();
        members.sort_by_key(|m| m.member.id);
        members
    }
}

impl Handler<Subscribe> for Membership {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Self::Context) {
        msg.0.do_send(self.snapshot());
        self.subscribers.push(msg.0);
    }
}

impl Handler<GetRing> for Membership {
    type Result = actix::MessageResult<GetRing>;

    fn handle(&mut self, _msg: GetRing, _ctx: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.snapshot())
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<super::fault::InjectFault> for Membership {
    type Result = ();

    fn handle(&mut self, msg: super::fault::InjectFault, ctx: &mut Self::Context) {
        use super::fault::Fault;
        use actix::ActorContext;
        match msg.0 {
            Fault::Stop | Fault::SocketError => ctx.stop(),
            Fault::Stall(busy) => std::thread::sleep(busy),
            Fault::Panic => {
                contain_panic("membership", ctx, || panic!("injected panic"));
            }
        }
    }
}
