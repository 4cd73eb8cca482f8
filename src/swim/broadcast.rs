//! Rumors waiting to be piggybacked: at most one per member (newer news
//! replaces older), each sent a bounded number of times, least-sent and
//! newest first, packed into whatever room a datagram has left.
//!
//! Pure queueing: it never decides what is news (the protocol does) and
//! never exceeds the room it is given.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use crate::member::Rumor;
use crate::node_id::NodeId;

#[derive(Debug)]
struct Queued {
    rumor: Rumor,
    encoded_len: usize,
    transmits: u32,
    /// Insertion order; larger is newer.
    order: u64,
}

/// Sending order: least-sent first, then newest first.
type Rank = (u32, Reverse<u64>, NodeId);

#[derive(Debug, Default)]
pub struct BroadcastQueue {
    queued: HashMap<NodeId, Queued>,
    /// The same rumors in sending order, so that filling a datagram walks
    /// only its front instead of sorting the whole queue every time.
    ranked: BTreeSet<Rank>,
    next_order: u64,
}

/// msgpack array and bin headers grow by at most this much when elements
/// are added to an empty array inside the envelope's body.
pub const PACKING_SLACK: usize = 8;

/// After this many rumors in a row that do not fit, the datagram is full
/// enough: rumors are all about the same size.
const MISSES_BEFORE_FULL: usize = 4;

fn rank(id: NodeId, q: &Queued) -> Rank {
    (q.transmits, Reverse(q.order), id)
}

impl BroadcastQueue {
    /// Queues `rumor`, replacing anything queued about the same member.
    pub fn push(&mut self, rumor: Rumor) {
        let encoded_len = rmp_serde::to_vec(&rumor)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        self.next_order += 1;
        let id = rumor.member.id;
        if let Some(old) = self.queued.get(&id) {
            self.ranked.remove(&rank(id, old));
        }
        let queued = Queued {
            rumor,
            encoded_len,
            transmits: 0,
            order: self.next_order,
        };
        self.ranked.insert(rank(id, &queued));
        self.queued.insert(id, queued);
    }

    /// Takes rumors that fit in `room` bytes, counting one transmission for
    /// each and forgetting those sent `max_transmits` times.
    pub fn take(&mut self, room: usize, max_transmits: u32) -> Vec<Rumor> {
        if self.queued.is_empty() || room <= PACKING_SLACK {
            return Vec::new();
        }
        let mut budget = room - PACKING_SLACK;
        let mut taken_ids = Vec::new();
        let mut misses = 0;
        for &(_, _, id) in &self.ranked {
            let Some(queued) = self.queued.get(&id) else {
                continue;
            };
            if queued.encoded_len > budget {
                misses += 1;
                if misses >= MISSES_BEFORE_FULL {
                    break;
                }
                continue;
            }
            budget -= queued.encoded_len;
            taken_ids.push(id);
        }
        let mut taken = Vec::with_capacity(taken_ids.len());
        for id in taken_ids {
            let Some(queued) = self.queued.get_mut(&id) else {
                continue;
            };
            self.ranked.remove(&rank(id, queued));
            queued.transmits += 1;
            taken.push(queued.rumor.clone());
            if queued.transmits >= max_transmits {
                self.queued.remove(&id);
            } else {
                self.ranked.insert(rank(id, queued));
            }
        }
        taken
    }

    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{Member, MemberState};

    fn rumor(id: u64, incarnation: u64) -> Rumor {
        Rumor::about(Member {
            id: NodeId::from_u64(id),
            gossip_addr: "127.0.0.1:5000".parse().unwrap(),
            http_addr: "127.0.0.1:6000".parse().unwrap(),
            state: MemberState::Alive,
            incarnation,
        })
    }

    #[test]
    fn newer_news_about_a_member_replaces_the_older() {
        let mut q = BroadcastQueue::default();
        q.push(rumor(1, 1));
        q.push(rumor(1, 2));
        assert_eq!(q.len(), 1);
        assert_eq!(q.take(1400, 3)[0].member.incarnation, 2);
    }

    #[test]
    fn each_rumor_is_sent_a_bounded_number_of_times() {
        let mut q = BroadcastQueue::default();
        q.push(rumor(1, 0));
        for _ in 0..3 {
            assert_eq!(q.take(1400, 3).len(), 1);
        }
        assert!(q.take(1400, 3).is_empty());
        assert!(q.is_empty());
    }

    #[test]
    fn least_sent_then_newest_go_first_and_only_what_fits() {
        let mut q = BroadcastQueue::default();
        q.push(rumor(1, 0));
        q.take(1400, 10);
        q.push(rumor(2, 0));
        q.push(rumor(3, 0));
        let one = rmp_serde::to_vec(&rumor(1, 0)).unwrap().len();
        let first = q.take(PACKING_SLACK + one, 10);
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].member.id,
            NodeId::from_u64(3),
            "newest of the unsent"
        );
        // Now 2 is unsent; 1 and 3 were sent once each, 3 more recently queued.
        let next = q.take(PACKING_SLACK + 2 * one, 10);
        let ids: Vec<u64> = next.iter().map(|r| r.member.id.as_u64()).collect();
        assert_eq!(ids, vec![2, 3]);
    }
}
