//! Members and the rules for which news about a member wins.
//!
//! Owns [`Member`] (what the cluster knows of one node), [`MemberState`] and
//! [`MemberTable`], the table those rules are applied to. Pure: no actors, no
//! sockets, no clocks beyond the `Instant` a caller passes in. Must never
//! decide on its own that a member failed; failure detection feeds it news.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::node_id::NodeId;

/// A member's own counter for news about itself: only the member raises it,
/// to refute a suspicion or announce a restart (SWIM, section 4.2).
pub type Incarnation = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl MemberState {
    /// Every state, in the order a member can pass through them.
    pub const ALL: [MemberState; 4] = [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Dead,
        MemberState::Left,
    ];

    /// At equal incarnation the higher precedence wins: a suspicion overrides
    /// `alive`, a confirmed death overrides a suspicion, and a graceful leave
    /// is final.
    fn precedence(self) -> u8 {
        match self {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead => 2,
            MemberState::Left => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }
}

/// What the cluster knows of one node; this is also the unit of gossip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub gossip_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub state: MemberState,
    pub incarnation: Incarnation,
}

impl Member {
    /// Whether `self` is newer news than `known` about the same member.
    pub fn supersedes(&self, known: &Member) -> bool {
        self.incarnation > known.incarnation
            || (self.incarnation == known.incarnation
                && self.state.precedence() > known.state.precedence())
    }
}

/// News about a member as it travels in gossip. A suspicion names its
/// accuser, so that independent confirmations can be told apart from the
/// same accusation heard twice (Lifeguard's dynamic suspicion timeout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rumor {
    pub member: Member,
    pub accuser: Option<NodeId>,
}

impl Rumor {
    pub fn about(member: Member) -> Self {
        Rumor {
            member,
            accuser: None,
        }
    }
}

/// A table entry: the member plus when this node last saw its state change.
#[derive(Clone, Debug)]
pub struct MemberEntry {
    pub member: Member,
    pub state_since: Instant,
}

impl MemberEntry {
    pub fn time_in_state(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.state_since)
    }
}

/// The member table of one node, including the node itself. Ordered by id,
/// so that everything derived from it is the same for the same history.
#[derive(Debug)]
pub struct MemberTable {
    local_id: NodeId,
    entries: BTreeMap<NodeId, MemberEntry>,
    /// Alive or suspect members, kept up to date on every change because
    /// the protocol asks for it on every datagram it sends.
    live: usize,
    /// Dead members (not `left` ones), kept the same way: the protocol asks
    /// whether there are any each time it plans its next wake-up.
    dead: usize,
}

fn is_live(state: MemberState) -> bool {
    matches!(state, MemberState::Alive | MemberState::Suspect)
}

fn is_dead(state: MemberState) -> bool {
    state == MemberState::Dead
}

impl MemberTable {
    pub fn new(local: Member, now: Instant) -> Self {
        let local_id = local.id;
        let live = usize::from(is_live(local.state));
        let dead = usize::from(is_dead(local.state));
        let mut entries = BTreeMap::new();
        entries.insert(
            local_id,
            MemberEntry {
                member: local,
                state_since: now,
            },
        );
        MemberTable {
            local_id,
            entries,
            live,
            dead,
        }
    }

    pub fn local_id(&self) -> NodeId {
        self.local_id
    }

    pub fn local(&self) -> &Member {
        &self.entries[&self.local_id].member
    }

    /// Replaces what the table says of the local node. Only the local node's
    /// own protocol decides this (a new incarnation, a leave).
    pub fn set_local(&mut self, local: Member, now: Instant) {
        debug_assert_eq!(local.id, self.local_id);
        if let Some(entry) = self.entries.get_mut(&self.local_id) {
            if entry.member.state != local.state {
                entry.state_since = now;
            }
            self.live = self.live + usize::from(is_live(local.state))
                - usize::from(is_live(entry.member.state));
            self.dead = self.dead + usize::from(is_dead(local.state))
                - usize::from(is_dead(entry.member.state));
            entry.member = local;
        }
    }

    /// Applies one piece of news; returns whether the table changed.
    ///
    /// News about the local node is never taken from others: this node is
    /// the only authority on itself, and answers rumours by raising its own
    /// incarnation instead.
    pub fn apply(&mut self, news: Member, now: Instant) -> bool {
        if news.id == self.local_id {
            return false;
        }
        match self.entries.get_mut(&news.id) {
            Some(entry) if !news.supersedes(&entry.member) => false,
            Some(entry) => {
                if entry.member.state != news.state {
                    entry.state_since = now;
                }
                self.live = self.live + usize::from(is_live(news.state))
                    - usize::from(is_live(entry.member.state));
                self.dead = self.dead + usize::from(is_dead(news.state))
                    - usize::from(is_dead(entry.member.state));
                entry.member = news;
                true
            }
            None => {
                self.live += usize::from(is_live(news.state));
                self.dead += usize::from(is_dead(news.state));
                self.entries.insert(
                    news.id,
                    MemberEntry {
                        member: news,
                        state_since: now,
                    },
                );
                true
            }
        }
    }

    pub fn get(&self, id: NodeId) -> Option<&MemberEntry> {
        self.entries.get(&id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &MemberEntry> {
        self.entries.values()
    }

    pub fn members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self.entries.values().map(|e| e.member.clone()).collect();
        members.sort_by_key(|m| m.id);
        members
    }

    /// Members, this node included, that are alive or suspected: those that
    /// count as the cluster's size for timeouts and retransmissions.
    pub fn live_count(&self) -> usize {
        self.live
    }

    /// Members marked dead (not those that left).
    pub fn dead_count(&self) -> usize {
        self.dead
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, state: MemberState, incarnation: Incarnation) -> Member {
        Member {
            id: NodeId::from_u64(id),
            gossip_addr: format!("127.0.0.1:{}", 5000 + id).parse().unwrap(),
            http_addr: format!("127.0.0.1:{}", 6000 + id).parse().unwrap(),
            state,
            incarnation,
        }
    }

    fn table() -> MemberTable {
        MemberTable::new(member(1, MemberState::Alive, 0), Instant::now())
    }

    #[test]
    fn a_new_member_is_added() {
        let mut t = table();
        assert!(t.apply(member(2, MemberState::Alive, 0), Instant::now()));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_higher_incarnation_wins_whatever_its_state() {
        let mut t = table();
        t.apply(member(2, MemberState::Suspect, 3), Instant::now());
        assert!(t.apply(member(2, MemberState::Alive, 4), Instant::now()));
        assert_eq!(
            t.get(NodeId::from_u64(2)).unwrap().member.state,
            MemberState::Alive
        );
    }

    #[test]
    fn at_equal_incarnation_suspicion_beats_alive_and_not_the_reverse() {
        let mut t = table();
        t.apply(member(2, MemberState::Alive, 3), Instant::now());
        assert!(t.apply(member(2, MemberState::Suspect, 3), Instant::now()));
        assert!(!t.apply(member(2, MemberState::Alive, 3), Instant::now()));
        assert_eq!(
            t.get(NodeId::from_u64(2)).unwrap().member.state,
            MemberState::Suspect
        );
    }

    #[test]
    fn older_news_and_repeated_news_change_nothing() {
        let mut t = table();
        t.apply(member(2, MemberState::Alive, 5), Instant::now());
        assert!(!t.apply(member(2, MemberState::Dead, 4), Instant::now()));
        assert!(!t.apply(member(2, MemberState::Alive, 5), Instant::now()));
    }

    #[test]
    fn news_about_the_local_node_is_ignored() {
        let mut t = table();
        assert!(!t.apply(member(1, MemberState::Dead, 9), Instant::now()));
        assert_eq!(t.local().state, MemberState::Alive);
    }

    #[test]
    fn the_live_and_dead_counts_follow_every_change() {
        let mut t = table();
        let now = Instant::now();
        t.apply(member(2, MemberState::Alive, 0), now);
        t.apply(member(3, MemberState::Suspect, 0), now);
        assert_eq!(t.live_count(), 3);
        t.apply(member(3, MemberState::Dead, 0), now);
        t.apply(member(2, MemberState::Left, 0), now);
        assert_eq!(t.live_count(), 1);
        assert_eq!(t.dead_count(), 1);
        t.apply(member(3, MemberState::Alive, 1), now);
        assert_eq!(t.dead_count(), 0);
        t.set_local(member(1, MemberState::Left, 0), now);
        assert_eq!(t.live_count(), 1);
        let counted = t.entries().filter(|e| is_live(e.member.state)).count();
        assert_eq!(t.live_count(), counted);
        let dead = t.entries().filter(|e| is_dead(e.member.state)).count();
        assert_eq!(t.dead_count(), dead);
    }

    #[test]
    fn state_since_moves_only_when_the_state_changes() {
        let mut t = table();
        let start = Instant::now();
        t.apply(member(2, MemberState::Alive, 0), start);
        let later = start + Duration::from_secs(5);
        t.apply(member(2, MemberState::Alive, 1), later);
        assert_eq!(t.get(NodeId::from_u64(2)).unwrap().state_since, start);
        t.apply(member(2, MemberState::Suspect, 1), later);
        assert_eq!(t.get(NodeId::from_u64(2)).unwrap().state_since, later);
    }
}
