//! One coordinated read, as a state machine: which replicas to ask, what
//! it may answer from the replies so far (a key is said not to exist only
//! once one of its home replicas said so), who is asked when one fails, and
//! which home replicas the merged copy repairs once every reply is in.
//!
//! Owns the decisions only. The Store asks what [`ReadStep::Ask`] says,
//! feeds each reply (or failure) to [`ReadRound::on_reply`] and carries out
//! the rest; no time, no sockets.

use std::collections::{BTreeSet, VecDeque};

use crate::node_id::NodeId;
use crate::version::{Dot, Object};

/// What a read answers its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadAnswer {
    /// The merge of the copies read (it may hold no value: not found, or
    /// deleted).
    Found(Object),
    /// Enough replicas answered, but only stand-ins, holding no value.
    NoHome { answered: usize, needed: usize },
    /// Fewer than R replicas answered.
    Short { answered: usize, needed: usize },
}

/// What the coordinator does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadStep {
    /// Ask this node for its copy.
    Ask(NodeId),
    /// Answer the client; given once per round.
    Answer(ReadAnswer),
    /// Every reply is in, and this home replica's copy lacked something:
    /// write the merge to it (this node's own copy included).
    Repair { node: NodeId, object: Object },
}

/// The gathering of one key's copies.
#[derive(Debug)]
pub struct ReadRound {
    home: Vec<NodeId>,
    needed: usize,
    merged: Object,
    /// Who answered, and the dots its copy held.
    answers: Vec<(NodeId, BTreeSet<Dot>)>,
    spares: VecDeque<NodeId>,
    /// Asked and not yet answered; a reply to nothing here (a duplicate,
    /// a stale one) changes nothing.
    in_flight: Vec<NodeId>,
    asked_beyond_home: bool,
    answered: bool,
    finished: bool,
}

impl ReadRound {
    /// A round for `needed` (R) copies of a key whose home replicas are
    /// `home`: `local` is this node's copy if it is a target, `remote` are
    /// asked at once, `spares` (in order) when one fails.
    pub fn start(
        local_id: NodeId,
        local: Option<Object>,
        remote: &[NodeId],
        spares: &[NodeId],
        home: Vec<NodeId>,
        needed: usize,
    ) -> (Self, Vec<ReadStep>) {
        let remote: Vec<NodeId> = remote.iter().copied().filter(|n| *n != local_id).collect();
        // Each replica counts once: never this node again, nor one asked.
        let spares = spares
            .iter()
            .copied()
            .filter(|n| *n != local_id && !remote.contains(n))
            .collect();
        let mut round = ReadRound {
            home,
            needed,
            merged: Object::new(),
            answers: Vec::new(),
            spares,
            in_flight: remote.clone(),
            asked_beyond_home: false,
            answered: false,
            finished: false,
        };
        if let Some(object) = local {
            round.answers.push((local_id, object.dots()));
            round.merged.merge(&object);
        }
        let mut steps: Vec<ReadStep> = remote.into_iter().map(ReadStep::Ask).collect();
        round.settle(&mut steps);
        (round, steps)
    }

    /// What to do after `node` answered with its copy, or failed (`None`).
    pub fn on_reply(&mut self, node: NodeId, copy: Option<Object>) -> Vec<ReadStep> {
        let mut steps = Vec::new();
        let Some(at) = self.in_flight.iter().position(|n| *n == node) else {
            return steps;
        };
        self.in_flight.swap_remove(at);
        match copy {
            Some(object) => {
                self.answers.push((node, object.dots()));
                self.merged.merge(&object);
            }
            None => {
                self.ask_a_spare(&mut steps);
            }
        }
        self.settle(&mut steps);
        steps
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn ask_a_spare(&mut self, steps: &mut Vec<ReadStep>) -> bool {
        match self.spares.pop_front() {
            Some(spare) => {
                self.in_flight.push(spare);
                steps.push(ReadStep::Ask(spare));
                true
            }
            None => false,
        }
    }

    fn homes_answered(&self) -> usize {
        self.answers
            .iter()
            .filter(|(n, _)| self.home.contains(n))
            .count()
    }

    fn settle(&mut self, steps: &mut Vec<ReadStep>) {
        if self.finished {
            return;
        }
        let homes = self.homes_answered();
        if !self.answered
            && read_verdict(self.answers.len(), homes, self.needed, &self.merged, false)
                == ReadVerdict::Answer
        {
            self.answered = true;
            steps.push(ReadStep::Answer(ReadAnswer::Found(self.merged.clone())));
        }
        if !self.in_flight.is_empty() {
            return;
        }
        // An empty answer waits for every replica, and then for one more
        // node: while a ring change moves a key, the replica it moved away
        // from may be the only one that has it.
        if !self.answered && self.merged.is_empty() && !self.asked_beyond_home {
            self.asked_beyond_home = true;
            if self.ask_a_spare(steps) {
                return;
            }
        }
        self.finished = true;
        if !self.answered {
            self.answered = true;
            let (answered, needed) = (self.answers.len(), self.needed);
            let answer = match read_verdict(answered, homes, needed, &self.merged, true) {
                ReadVerdict::Answer | ReadVerdict::Wait => ReadAnswer::Found(self.merged.clone()),
                ReadVerdict::NoHome => ReadAnswer::NoHome { answered, needed },
                ReadVerdict::Short => ReadAnswer::Short { answered, needed },
            };
            steps.push(ReadStep::Answer(answer));
        }
        if self.merged.is_empty() {
            return;
        }
        let current = self.merged.dots();
        for (node, dots) in &self.answers {
            // Only a home replica is repaired. A stand-in's copy is there
            // to be handed over by its hint; repaired, it would hold a copy
            // with no hint that no ring change, anti-entropy round or
            // tombstone collection ever looks at, and could later hand a
            // value deleted and purged meanwhile back (a remote stand-in
            // refuses a plain write anyway; the coordinator's own copy
            // would take it).
            if *dots != current && self.home.contains(node) {
                steps.push(ReadStep::Repair {
                    node: *node,
                    object: self.merged.clone(),
                });
            }
        }
    }
}

/// What a read may answer, from the replies so far.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadVerdict {
    /// The merged object: a live value from any `needed` replicas, or
    /// (tombstones, or nothing) once a home replica is among them.
    Answer,
    /// Not yet: more replicas may answer.
    Wait,
    /// Enough replicas answered, but only stand-ins, and none held a value:
    /// a not-found from them would be a guess (Riak's `notfound_ok`).
    NoHome,
    /// Every replica asked has answered or failed, fewer than `needed`
    /// answered.
    Short,
}

/// `finished`: no replica is left to ask. An object with no live value
/// is only answered early if it holds tombstones: an empty one waits for
/// every replica, since a key being handed over may be on one alone.
pub fn read_verdict(
    answered: usize,
    homes_answered: usize,
    needed: usize,
    merged: &Object,
    finished: bool,
) -> ReadVerdict {
    let live = merged.values().next().is_some();
    let enough = answered >= needed;
    if enough && (live || (homes_answered > 0 && !merged.is_empty())) {
        return ReadVerdict::Answer;
    }
    match (finished, enough, homes_answered > 0) {
        (false, _, _) => ReadVerdict::Wait,
        (true, false, _) => ReadVerdict::Short,
        (true, true, true) => ReadVerdict::Answer,
        (true, true, false) => ReadVerdict::NoHome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_id::NodeId;
    use crate::version::{Payload, VersionVector};

    fn n(i: u64) -> NodeId {
        NodeId::from_u64(i)
    }

    fn value(writer: u64, text: &str) -> Object {
        let mut object = Object::new();
        object
            .write(
                n(writer),
                &VersionVector::new(),
                Payload::Value {
                    content_type: "text/plain".into(),
                    bytes: text.as_bytes().to_vec(),
                    expires_at_ms: None,
                },
            )
            .unwrap();
        object
    }

    fn answers(steps: &[ReadStep]) -> Vec<&ReadAnswer> {
        steps
            .iter()
            .filter_map(|s| match s {
                ReadStep::Answer(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    fn repaired(steps: &[ReadStep]) -> Vec<NodeId> {
        steps
            .iter()
            .filter_map(|s| match s {
                ReadStep::Repair { node, .. } => Some(*node),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn r_copies_answer_once_and_the_stale_one_is_repaired_at_the_end() {
        let homes = vec![n(1), n(2), n(3)];
        let fresh = value(1, "v");
        let (mut round, steps) = ReadRound::start(
            n(1),
            Some(fresh.clone()),
            &[n(1), n(2), n(3)],
            &[],
            homes,
            2,
        );
        assert_eq!(
            steps,
            vec![ReadStep::Ask(n(2)), ReadStep::Ask(n(3))],
            "not itself"
        );
        let steps = round.on_reply(n(2), Some(Object::new()));
        assert_eq!(answers(&steps), vec![&ReadAnswer::Found(fresh.clone())]);
        assert!(repaired(&steps).is_empty(), "repairs wait for every reply");
        // A duplicate, or a node never asked, changes nothing.
        assert!(round.on_reply(n(2), Some(Object::new())).is_empty());
        assert!(round.on_reply(n(7), Some(Object::new())).is_empty());
        let steps = round.on_reply(n(3), Some(fresh.clone()));
        assert!(answers(&steps).is_empty(), "answered once");
        assert_eq!(repaired(&steps), vec![n(2)]);
        assert!(round.is_finished());
    }

    /// Seed 86 of the data-path simulation: a coordinator standing in for a
    /// home replica repaired its own copy, kept it with no hint, and handed
    /// the value back after its tombstone was purged.
    #[test]
    fn a_stand_in_is_not_repaired_not_even_the_coordinator_itself() {
        let homes = vec![n(1), n(2), n(3)];
        let fresh = value(1, "v");
        // n(4) coordinates, standing in for n(3); n(5) stands in for n(2).
        let (mut round, _) =
            ReadRound::start(n(4), Some(Object::new()), &[n(1), n(5)], &[], homes, 2);
        round.on_reply(n(5), Some(Object::new()));
        let steps = round.on_reply(n(1), Some(fresh));
        assert!(round.is_finished());
        assert!(repaired(&steps).is_empty(), "{steps:?}");
    }

    #[test]
    fn a_failed_replica_is_replaced_by_a_spare_and_too_few_is_short() {
        let homes = vec![n(1), n(2), n(3)];
        let (mut round, _) =
            ReadRound::start(n(1), None, &[n(2), n(3)], &[n(2), n(4)], homes.clone(), 2);
        assert_eq!(
            round.on_reply(n(2), None),
            vec![ReadStep::Ask(n(4))],
            "n(2) is no spare"
        );
        assert!(round.on_reply(n(3), None).is_empty());
        let steps = round.on_reply(n(4), None);
        assert_eq!(
            answers(&steps),
            vec![&ReadAnswer::Short {
                answered: 0,
                needed: 2
            }]
        );
        assert!(round.is_finished());
    }

    #[test]
    fn nothing_found_asks_one_node_beyond_and_stand_ins_alone_are_no_answer() {
        // Two homes say nothing: one more node is asked before not-found.
        let homes = vec![n(1), n(2), n(3)];
        let (mut round, _) = ReadRound::start(
            n(1),
            Some(Object::new()),
            &[n(2)],
            &[n(5)],
            homes.clone(),
            2,
        );
        assert_eq!(
            round.on_reply(n(2), Some(Object::new())),
            vec![ReadStep::Ask(n(5))]
        );
        let moved = value(3, "moved here");
        let steps = round.on_reply(n(5), Some(moved.clone()));
        assert_eq!(answers(&steps), vec![&ReadAnswer::Found(moved)]);
        assert_eq!(repaired(&steps), vec![n(1), n(2)], "the homes get it back");

        // With no node beyond, not-found from a home replica is an answer.
        let (mut round, _) =
            ReadRound::start(n(1), Some(Object::new()), &[n(2)], &[], homes.clone(), 2);
        let steps = round.on_reply(n(2), Some(Object::new()));
        assert_eq!(answers(&steps), vec![&ReadAnswer::Found(Object::new())]);
        assert!(repaired(&steps).is_empty(), "nothing to repair with");

        // Stand-ins alone, empty: no answer to give.
        let (mut round, _) = ReadRound::start(n(9), None, &[n(4), n(5)], &[], homes, 2);
        round.on_reply(n(4), Some(Object::new()));
        let steps = round.on_reply(n(5), Some(Object::new()));
        assert_eq!(
            answers(&steps),
            vec![&ReadAnswer::NoHome {
                answered: 2,
                needed: 2
            }]
        );
    }

    fn holding(payload: Payload) -> Object {
        let mut object = Object::new();
        object
            .write(NodeId::from_u64(1), &VersionVector::new(), payload)
            .unwrap();
        object
    }

    #[test]
    fn a_read_says_not_found_only_once_a_home_replica_has_answered() {
        use ReadVerdict::*;
        let nothing = Object::new();
        let deleted = holding(Payload::Tombstone { at_ms: 1 });
        let value = holding(Payload::Value {
            content_type: "text/plain".into(),
            bytes: b"v".to_vec(),
            expires_at_ms: None,
        });
        // A value is a value, whoever held it.
        assert_eq!(read_verdict(2, 0, 2, &value, false), Answer);
        assert_eq!(read_verdict(1, 1, 2, &value, false), Wait);
        // A tombstone from a home replica answers at once; from stand-ins
        // alone it waits, and then is not trusted.
        assert_eq!(read_verdict(2, 1, 2, &deleted, false), Answer);
        assert_eq!(read_verdict(2, 0, 2, &deleted, false), Wait);
        assert_eq!(read_verdict(2, 0, 2, &deleted, true), NoHome);
        // Nothing at all waits for every replica asked.
        assert_eq!(read_verdict(2, 2, 2, &nothing, false), Wait);
        assert_eq!(read_verdict(2, 1, 2, &nothing, true), Answer);
        assert_eq!(read_verdict(3, 0, 2, &nothing, true), NoHome);
        // Too few answers is a shortfall, whatever they held.
        assert_eq!(read_verdict(1, 1, 2, &value, true), Short);
        assert_eq!(read_verdict(0, 0, 1, &nothing, true), Short);
    }
}
