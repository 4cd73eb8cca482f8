//! The simulated network: what nodes send each other, how long it takes,
//! and what never arrives.
//!
//! Owns the messages, the delay distributions, drops, duplicates and cuts
//! (partitions of any shape: a cut is a set of senders and a set of
//! receivers, so one-way and non-transitive partitions are just cuts).
//! Never decides anything a node decides: it only carries messages.

use std::collections::BTreeSet;

use rand::Rng;

use super::{Event, Life, Sim};
use crate::merkle::{BucketEntries, HashTree};
use crate::node_id::NodeId;
use crate::replication::Target;
use crate::version::{Dot, Object};

/// How long one message takes, in ms.
#[derive(Clone, Copy, Debug)]
pub enum Delay {
    /// 1 to `max_ms`, uniformly.
    Uniform { max_ms: u64 },
    /// Mostly 1 to `max_ms`, uniformly; a share `tail_rate` of messages
    /// takes up to `tail_max_ms` instead (a stalled connection, a long GC
    /// pause), past the replicas' timeouts.
    LongTail {
        max_ms: u64,
        tail_rate: f64,
        tail_max_ms: u64,
    },
}

#[derive(Clone, Debug)]
pub(super) enum Msg {
    Write {
        round: u64,
        key: String,
        object: Object,
        target: Target,
    },
    WriteAck {
        round: u64,
        target: Target,
        stored: bool,
    },
    Read {
        round: u64,
        key: String,
    },
    ReadReply {
        round: u64,
        copy: Object,
    },
    /// Read repair: a plain write nobody waits for.
    Repair {
        key: String,
        object: Object,
    },
    /// A hint delivered: a plain write to its owner.
    Hint {
        key: String,
        object: Object,
    },
    HintAck {
        key: String,
        dots: BTreeSet<Dot>,
        stored: bool,
    },
    /// Objects handed over in a ring change (`ticket` set, from a leaving
    /// node `leaving`) or pushed by anti-entropy (no reply awaited).
    Batch {
        ticket: Option<u64>,
        objects: Vec<(String, Object)>,
        leaving: Option<NodeId>,
    },
    BatchReply {
        ticket: u64,
        refused: usize,
    },
    /// Anti-entropy: the peer's tree of the keys it shares with the sender.
    TreeAsk {
        ticket: u64,
    },
    TreeReply {
        ticket: u64,
        tree: Option<Box<HashTree>>,
    },
    Exchange {
        ticket: u64,
        buckets: Vec<BucketEntries>,
    },
    ExchangeReply {
        ticket: u64,
        /// `None`: refused (busy with its own round).
        answer: Option<ExchangeAnswer>,
    },
    /// Tombstone collection: does the replica hold exactly these versions?
    GcRead {
        ticket: u64,
        key: String,
    },
    GcReadReply {
        ticket: u64,
        copy: Object,
    },
    Purge {
        ticket: u64,
        key: String,
        dots: BTreeSet<Dot>,
    },
    PurgeReply {
        ticket: u64,
    },
    /// A SWIM datagram.
    Gossip {
        bytes: Vec<u8>,
    },
}

/// An exchange's answer: the answering side's copies of the keys that
/// differ, and the keys it wants.
pub(super) type ExchangeAnswer = (Vec<(String, Object)>, Vec<String>);

/// A cut: messages from a node in `from` to one in `to` are lost.
pub(super) struct Cut {
    pub id: u64,
    pub from: BTreeSet<usize>,
    pub to: BTreeSet<usize>,
}

impl Sim {
    /// Whether a message from `from` reaches `to` now.
    pub(super) fn reaches(&self, from: usize, to: usize) -> bool {
        let n = &self.nodes[to];
        !n.crashed
            && matches!(n.life, Life::Member | Life::Leaving)
            && !self
                .cuts
                .iter()
                .any(|c| c.from.contains(&from) && c.to.contains(&to))
    }

    /// Whether `a` and `b` can hold a conversation now.
    pub(super) fn talk(&self, a: usize, b: usize) -> bool {
        self.reaches(a, b) && self.reaches(b, a)
    }

    fn delay(&mut self) -> u64 {
        match self.config.delay {
            Delay::Uniform { max_ms } => self.rng.random_range(1..=max_ms.max(1)),
            Delay::LongTail {
                max_ms,
                tail_rate,
                tail_max_ms,
            } => {
                if self.rng.random_bool(tail_rate) {
                    self.rng
                        .random_range(max_ms.max(1)..=tail_max_ms.max(max_ms.max(1)))
                } else {
                    self.rng.random_range(1..=max_ms.max(1))
                }
            }
        }
    }

    pub(super) fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if from == to {
            self.at(0, Event::Deliver { from, to, msg });
            return;
        }
        if self.rng.random_bool(self.config.drop_rate) {
            self.count("dropped");
            return;
        }
        let copies = if self.rng.random_bool(self.config.duplicate_rate) {
            self.count("duplicated");
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.delay();
            if delay > self.config.long_delay_ms {
                self.count("long_delay");
            }
            self.at(
                delay,
                Event::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }
}
