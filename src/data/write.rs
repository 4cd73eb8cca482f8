//! One coordinated write's replication, as a state machine: which replicas
//! to send the versioned object to, when W of them hold it, who stands in
//! for a replica that failed, and which hints are left for the coordinator
//! to keep.
//!
//! Owns the counting only. The coordinator has already stored the write
//! locally (that copy counts); the Store sends what [`Step::Send`] says,
//! feeds each outcome to [`WriteRound::on_reply`] and carries out the
//! rest. No time, no sockets: a timeout is an outcome like any failure.

use std::collections::{HashSet, VecDeque};

use crate::node_id::NodeId;
use crate::replica::QuorumShortfall;
use crate::replication::Target;

/// What the coordinator does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send the object to `target.node` (carrying a hint for
    /// `target.hint_for`, if any).
    Send(Target),
    /// Answer the client: stored on these nodes (W or more of them), or
    /// short of W. Given once per round.
    Answer(Result<Vec<NodeId>, QuorumShortfall>),
    /// Every replica answered or failed; keep a hint for each of these
    /// owners, for whom no stand-in was left.
    KeepHints(Vec<NodeId>),
}

/// The replication of one write, from the local store to the end of the
/// last reply.
#[derive(Debug)]
pub struct WriteRound {
    needed: usize,
    stored_on: Vec<NodeId>,
    spares: VecDeque<NodeId>,
    unplaced: Vec<NodeId>,
    /// Sent and not yet answered; a reply to nothing here (a duplicate, a
    /// stale one) changes nothing.
    in_flight: Vec<Target>,
    answered: bool,
    finished: bool,
}

impl WriteRound {
    /// A round for a write already stored on `local_id`: `targets` are
    /// asked at once, `spares` stand in (in order) for any that fails.
    /// `needed` is W, the local copy included.
    pub fn start(
        local_id: NodeId,
        targets: &[Target],
        spares: &[NodeId],
        needed: usize,
    ) -> (Self, Vec<Step>) {
        let targets: Vec<Target> = targets
            .iter()
            .copied()
            .filter(|t| t.node != local_id)
            .collect();
        // Each copy counts once: never this node again, nor a target.
        let asked: HashSet<NodeId> = targets.iter().map(|t| t.node).collect();
        let spares = spares
            .iter()
            .copied()
            .filter(|n| *n != local_id && !asked.contains(n))
            .collect();
        let mut round = WriteRound {
            needed,
            stored_on: vec![local_id],
            spares,
            unplaced: Vec::new(),
            in_flight: targets.clone(),
            answered: false,
            finished: false,
        };
        let mut steps: Vec<Step> = targets.into_iter().map(Step::Send).collect();
        round.settle(&mut steps);
        (round, steps)
    }

    /// What to do after `target` stored the object (`stored`) or did not
    /// (refused, unreachable, timed out).
    pub fn on_reply(&mut self, target: Target, stored: bool) -> Vec<Step> {
        let mut steps = Vec::new();
        let Some(at) = self.in_flight.iter().position(|t| *t == target) else {
            return steps;
        };
        self.in_flight.swap_remove(at);
        if stored {
            if !self.stored_on.contains(&target.node) {
                self.stored_on.push(target.node);
            }
        } else {
            // A stand-in that fails passes the same owner on.
            let owner = target.hint_for.unwrap_or(target.node);
            match self.spares.pop_front() {
                Some(spare) => {
                    let stand_in = Target {
                        node: spare,
                        hint_for: Some(owner),
                    };
                    self.in_flight.push(stand_in);
                    steps.push(Step::Send(stand_in));
                }
                None => self.unplaced.push(owner),
            }
        }
        self.settle(&mut steps);
        steps
    }

    /// Whether every reply is in.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn settle(&mut self, steps: &mut Vec<Step>) {
        if !self.answered && self.stored_on.len() >= self.needed {
            self.answered = true;
            steps.push(Step::Answer(Ok(self.stored_on.clone())));
        }
        if !self.in_flight.is_empty() || self.finished {
            return;
        }
        self.finished = true;
        if !self.answered {
            self.answered = true;
            steps.push(Step::Answer(Err(QuorumShortfall {
                needed: self.needed,
                answered: self.stored_on.len(),
                stored_on: self.stored_on.clone(),
            })));
        }
        if !self.unplaced.is_empty() {
            steps.push(Step::KeepHints(std::mem::take(&mut self.unplaced)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u64) -> NodeId {
        NodeId::from_u64(i)
    }

    fn home(i: u64) -> Target {
        Target {
            node: n(i),
            hint_for: None,
        }
    }

    fn answers(steps: &[Step]) -> Vec<&Result<Vec<NodeId>, QuorumShortfall>> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Answer(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn w_replicas_answer_once_and_the_rest_still_counts() {
        let (mut round, steps) = WriteRound::start(n(1), &[home(1), home(2), home(3)], &[], 2);
        assert_eq!(
            steps,
            vec![Step::Send(home(2)), Step::Send(home(3))],
            "not to itself"
        );
        let steps = round.on_reply(home(2), true);
        assert_eq!(steps, vec![Step::Answer(Ok(vec![n(1), n(2)]))]);
        // A duplicate reply, or one from a node never asked, changes nothing.
        assert!(round.on_reply(home(2), true).is_empty());
        assert!(round.on_reply(home(2), false).is_empty());
        assert!(round.on_reply(home(9), true).is_empty());
        assert!(!round.is_finished(), "n(3) has not answered");
        assert!(round.on_reply(home(3), true).is_empty());
        assert!(round.is_finished());
        assert!(
            round.on_reply(home(3), true).is_empty(),
            "after the end, nothing"
        );
    }

    #[test]
    fn a_local_quorum_answers_before_any_reply() {
        let (round, steps) = WriteRound::start(n(1), &[home(1), home(2)], &[], 1);
        assert_eq!(
            steps,
            vec![Step::Send(home(2)), Step::Answer(Ok(vec![n(1)]))]
        );
        assert!(!round.is_finished());
    }

    #[test]
    fn a_failed_replica_is_stood_in_for_with_its_hint_passed_on() {
        let (mut round, _) =
            WriteRound::start(n(1), &[home(1), home(2), home(3)], &[n(4), n(2), n(5)], 3);
        // n(2) fails: the first spare that is not already asked stands in.
        let steps = round.on_reply(home(2), false);
        let stand_in = Target {
            node: n(4),
            hint_for: Some(n(2)),
        };
        assert_eq!(steps, vec![Step::Send(stand_in)]);
        // The stand-in fails too: the next carries the same owner.
        let steps = round.on_reply(stand_in, false);
        let second = Target {
            node: n(5),
            hint_for: Some(n(2)),
        };
        assert_eq!(steps, vec![Step::Send(second)]);
        assert!(round.on_reply(home(3), true).is_empty());
        assert_eq!(
            round.on_reply(second, true),
            vec![Step::Answer(Ok(vec![n(1), n(3), n(5)]))]
        );
        assert!(round.is_finished());
    }

    #[test]
    fn with_no_stand_in_left_the_round_falls_short_and_leaves_the_hints() {
        let (mut round, _) = WriteRound::start(n(1), &[home(1), home(2), home(3)], &[], 3);
        assert!(round.on_reply(home(2), false).is_empty());
        let steps = round.on_reply(home(3), false);
        assert_eq!(
            answers(&steps),
            vec![&Err(QuorumShortfall {
                needed: 3,
                answered: 1,
                stored_on: vec![n(1)],
            })]
        );
        assert_eq!(steps.last(), Some(&Step::KeepHints(vec![n(2), n(3)])));
    }

    #[test]
    fn a_round_met_before_a_failure_still_leaves_its_hint() {
        let (mut round, _) = WriteRound::start(n(1), &[home(1), home(2), home(3)], &[], 2);
        assert_eq!(answers(&round.on_reply(home(2), true)).len(), 1);
        assert_eq!(
            round.on_reply(home(3), false),
            vec![Step::KeepHints(vec![n(3)])]
        );
    }

    #[test]
    fn a_round_with_nothing_to_send_ends_at_once() {
        let (round, steps) = WriteRound::start(n(1), &[home(1)], &[], 1);
        assert_eq!(steps, vec![Step::Answer(Ok(vec![n(1)]))]);
        assert!(round.is_finished());
        let (_, steps) = WriteRound::start(n(1), &[home(1)], &[], 2);
        assert_eq!(answers(&steps).len(), 1);
        assert!(matches!(steps[0], Step::Answer(Err(_))));
    }
}
