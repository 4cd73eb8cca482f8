//! SWIM membership (Das, Gupta, Motivala 2002) with Lifeguard's refinements
//! (Dadgar et al. 2018), as a plain state machine.
//!
//! Owns the protocol rules: whom to probe and when, when to suspect and when
//! to declare dead, what to piggyback, how to refute, how to join and leave.
//! [`Swim`] takes datagrams and the current time in and gives datagrams and
//! member changes out ([`Swim::take_outgoing`], [`Swim::take_changes`]),
//! with [`Swim::next_wake`] saying when it next needs the time. It must never
//! touch a socket, a clock or a thread: the Gossip actor drives it over UDP
//! in real time, and [`sim`] drives whole clusters of it in virtual time.
//!
//! One protocol period, as in memberlist: ping the next member in a shuffled
//! round-robin; if no ack within the probe timeout, ask `indirect_probes`
//! others to ping it (`PingReq`), who answer with its ack or a `Nack`; if no
//! ack by the end of the period, suspect it. A suspicion becomes a death
//! after Lifeguard's dynamic timeout ([`suspicion`]) unless the member
//! refutes it with a higher incarnation. Local health awareness: each failed
//! probe without the expected nacks, each refutation and each late timer
//! raises a score that stretches this node's own probe period and timeout,
//! so a slow node accuses less; successful probes lower it.
//!
//! A member declared dead is not probed, but while the table lists any,
//! one of them is pinged every `dead_probe_interval` (jittered; ten times
//! less often once five minutes passed without a new death) with the
//! rumor of its own death: a member that was only cut off (a healed
//! partition, a resumed pause) refutes at once, and its ack tells this node
//! if it was declared dead in turn, so both sides come back within seconds
//! instead of waiting for push-pull. Silence from a dead member is expected
//! and changes nothing.

pub mod broadcast;
pub mod sim;
pub mod suspicion;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::log_limit::LogLimit;
use crate::member::{Member, MemberState, MemberTable, Rumor};
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::wire::{ClusterSettings, Codec, Datagram, GossipMessage};
use broadcast::BroadcastQueue;
use suspicion::Suspicion;

/// Timings and counts of the protocol; defaults follow memberlist's LAN
/// profile where it has one.
#[derive(Clone, Debug)]
pub struct SwimConfig {
    /// T: one probe per period.
    pub protocol_period: Duration,
    /// How long to wait for a direct ack before asking others.
    pub probe_timeout: Duration,
    /// k: members asked to probe indirectly.
    pub indirect_probes: usize,
    /// Suspicion timeout floor is this times max(1, log10(n)) periods.
    pub suspicion_mult: u32,
    /// The timeout with no confirmations is this times the floor.
    pub suspicion_max_mult: u32,
    /// λ: a rumor is piggybacked λ·ceil(log10(n+1)) times.
    pub retransmit_mult: u32,
    /// How often pending rumors are pushed to `gossip_fanout` random
    /// members, on top of riding on probes.
    pub gossip_interval: Duration,
    pub gossip_fanout: usize,
    /// How often to exchange full state with a random member.
    pub push_pull_interval: Duration,
    /// While any member is dead (not left), one random dead member is pinged
    /// this often, jittered, in case it is alive after all; zero turns it
    /// off, leaving push-pull as the only way back.
    pub dead_probe_interval: Duration,
    /// The largest local health multiplier.
    pub awareness_max: u32,
    /// Most relayed probes in flight at once; more are refused.
    pub max_relays: usize,
    /// Most members (not counting those that left) the table takes; news of
    /// more is refused, so no sender can grow it without bound.
    pub max_members: usize,
    /// What this node places keys by; joins that bring other settings are
    /// refused.
    pub settings: ClusterSettings,
}

impl Default for SwimConfig {
    fn default() -> Self {
        SwimConfig {
            protocol_period: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            suspicion_mult: 4,
            suspicion_max_mult: 6,
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            push_pull_interval: Duration::from_secs(30),
            dead_probe_interval: Duration::from_secs(1),
            awareness_max: 8,
            max_relays: 1024,
            max_members: DEFAULT_MAX_MEMBERS,
            settings: ClusterSettings::default(),
        }
    }
}

/// Why a member cannot be removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    #[error("no such member")]
    Unknown,
    #[error("the member is {} (only a dead member can be removed; stop it first, or ask it to leave)", .0.as_str())]
    NotDead(MemberState),
    #[error("a node cannot remove itself; ask it to leave")]
    IsSelf,
}

pub const DEFAULT_MAX_MEMBERS: usize = 1024;

/// How many more joins a node sends its seed once it knows other members
/// but has not heard from the seed itself.
const JOINS_AFTER_PEERS: u32 = 30;

/// The highest incarnation believed. Only a member raises its own, by one
/// per refutation, so no honest member comes near it in any lifetime; a
/// rumor above it is refused rather than obeyed, and a refutation stops
/// here instead of wrapping to zero.
pub const MAX_INCARNATION: u64 = 1 << 48;

/// How many of its latest sequence numbers a node still accepts late acks
/// for: a few minutes of probes and relays.
const RECENT_SEQS: u64 = 4096;

/// How long after the latest death dead members are pinged at the
/// configured interval, and how much slower after that.
const DEAD_PROBE_BRISK_FOR: Duration = Duration::from_secs(300);
const DEAD_PROBE_SLOWDOWN: u32 = 10;

/// Accused members remembered as told, before the stale ones are dropped.
const TOLD_ACCUSED_MAX: usize = 256;

/// Sets the dead-member pings' generator apart from the protocol's.
const DEAD_PROBE_SEED: u64 = 0x6465_6164_7069_6e67;

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
struct Probe {
    target: NodeId,
    target_addr: SocketAddr,
    seq: u64,
    indirect_at: Instant,
    indirect_sent: bool,
    acked: bool,
    expected_nacks: u32,
    nacks: u32,
}

/// A ping to a member declared dead. Its ack is believed like a probe's;
/// no ack is the expected outcome and counts against no one.
#[derive(Debug)]
struct DeadProbe {
    target: NodeId,
    seq: u64,
}

#[derive(Debug)]
struct Relay {
    requester: SocketAddr,
    requester_seq: u64,
    expires: Instant,
}

pub struct Swim {
    config: SwimConfig,
    codec: Codec,
    table: MemberTable,
    leaving: bool,
    seeds: Vec<SocketAddr>,
    probe_order: Vec<NodeId>,
    probe_cursor: usize,
    probe: Option<Probe>,
    dead_probe: Option<DeadProbe>,
    relays: BTreeMap<u64, Relay>,
    suspicions: BTreeMap<NodeId, Suspicion>,
    broadcasts: BroadcastQueue,
    awareness: u32,
    next_seq: u64,
    next_probe_at: Instant,
    next_push_pull_at: Instant,
    next_dead_probe_at: Instant,
    /// How many members were dead at the last tick, and when the count
    /// last rose: dead members are pinged often only for a while after a
    /// death.
    dead_seen: usize,
    last_death_at: Instant,
    /// When each accused member that spoke to this node was last told of
    /// its accusation.
    told_accused: BTreeMap<NodeId, Instant>,
    next_gossip_at: Instant,
    next_join_at: Instant,
    rng: StdRng,
    /// Draws for dead-member pings only, so that every other choice (probe
    /// order, relays, gossip targets) comes out the same with them on or
    /// off, and the figures compare like with like.
    dead_probe_rng: StdRng,
    outgoing: Vec<Outgoing>,
    changes: Vec<Member>,
    metrics: SharedMetrics,
    /// Why the cluster refused this node's join, once it did.
    join_refusal: Option<String>,
    /// Whether a datagram that opened came from a seed: until then a node
    /// that knows other members (a node that joined through it first)
    /// keeps asking its seed, or the two would stay apart.
    heard_from_seed: bool,
    /// Joins sent since this node first knew another member, so that a
    /// seed known under another address than it answers from is not asked
    /// for ever.
    joins_since_peers: u32,
    /// Refusals are counted always, logged at most once a minute a sender.
    refusal_log: LogLimit<SocketAddr>,
}

impl Swim {
    /// A node that knows only itself; with `seeds`, it asks them to let it
    /// in every period until it knows another live member.
    pub fn new(
        local: Member,
        config: SwimConfig,
        codec: Codec,
        seeds: Vec<SocketAddr>,
        rng_seed: u64,
        metrics: SharedMetrics,
        now: Instant,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(rng_seed);
        // Spread everyone's periods so that probes do not all fire together.
        let first_probe = config.protocol_period.mul_f64(rng.random_range(0.5..1.5));
        let first_push_pull = config
            .push_pull_interval
            .mul_f64(rng.random_range(0.5..1.0));
        let mut dead_probe_rng = StdRng::seed_from_u64(rng_seed ^ DEAD_PROBE_SEED);
        let first_dead_probe = config
            .dead_probe_interval
            .mul_f64(dead_probe_rng.random_range(0.5..1.5));
        Swim {
            table: MemberTable::new(local, now),
            leaving: false,
            seeds,
            probe_order: Vec::new(),
            probe_cursor: 0,
            probe: None,
            dead_probe: None,
            relays: BTreeMap::new(),
            suspicions: BTreeMap::new(),
            broadcasts: BroadcastQueue::default(),
            awareness: 0,
            next_seq: rng.random(),
            next_probe_at: now + first_probe,
            next_push_pull_at: now + first_push_pull,
            next_dead_probe_at: now + first_dead_probe,
            dead_seen: 0,
            last_death_at: now,
            told_accused: BTreeMap::new(),
            next_gossip_at: now + config.gossip_interval,
            next_join_at: now,
            rng,
            dead_probe_rng,
            outgoing: Vec::new(),
            changes: Vec::new(),
            metrics,
            config,
            codec,
            join_refusal: None,
            heard_from_seed: false,
            joins_since_peers: 0,
            refusal_log: LogLimit::default(),
        }
    }

    pub fn local(&self) -> &Member {
        self.table.local()
    }

    pub fn table(&self) -> &MemberTable {
        &self.table
    }

    pub fn config(&self) -> &SwimConfig {
        &self.config
    }

    /// The local health score: 0 is healthy; timeouts are stretched by
    /// score + 1.
    pub fn awareness(&self) -> u32 {
        self.awareness
    }

    /// Whether this node knows another live member.
    pub fn has_peers(&self) -> bool {
        self.table.live_count() > 1
    }

    pub fn take_outgoing(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outgoing)
    }

    /// Changes to the member table since the last call, in order, the local
    /// node's own included.
    pub fn take_changes(&mut self) -> Vec<Member> {
        std::mem::take(&mut self.changes)
    }

    /// When [`Swim::tick`] must next run; `None` once nothing is left to do.
    pub fn next_wake(&self) -> Option<Instant> {
        let relays = self.relays.values().map(|r| r.expires);
        if self.leaving {
            // A leaving node only finishes the relays it promised.
            return relays.min();
        }
        let mut wake = self.next_probe_at.min(self.next_push_pull_at);
        if !self.broadcasts.is_empty() {
            wake = wake.min(self.next_gossip_at);
        }
        if self.probes_dead_members() {
            wake = wake.min(self.next_dead_probe_at);
        }
        if self.wants_to_join() {
            wake = wake.min(self.next_join_at);
        }
        if let Some(probe) = &self.probe {
            if !probe.acked && !probe.indirect_sent {
                wake = wake.min(probe.indirect_at);
            }
        }
        for expires in relays {
            wake = wake.min(expires);
        }
        for suspicion in self.suspicions.values() {
            wake = wake.min(suspicion.deadline());
        }
        Some(wake)
    }

    /// Whether pinging dead members is on and there is one to ping (or a
    /// suspect one): a healthy cluster pays nothing for it.
    fn probes_dead_members(&self) -> bool {
        !self.config.dead_probe_interval.is_zero()
            && (self.table.dead_count() > 0 || !self.suspicions.is_empty())
    }

    fn wants_to_join(&self) -> bool {
        !self.leaving
            && !self.seeds.is_empty()
            && self.join_refusal.is_none()
            && !self.heard_from_seed
            && (!self.has_peers() || self.joins_since_peers < JOINS_AFTER_PEERS)
    }

    /// Why the seed refused this node's join, if it did; the node then
    /// stops asking.
    pub fn join_refusal(&self) -> Option<&str> {
        self.join_refusal.as_deref()
    }

    fn scaled(&self, d: Duration) -> Duration {
        d * (self.awareness + 1)
    }

    fn raise_awareness(&mut self, by: u32) {
        self.awareness = (self.awareness + by).min(self.config.awareness_max.saturating_sub(1));
        self.metrics
            .swim_local_health
            .set(u64::from(self.awareness));
    }

    fn lower_awareness(&mut self) {
        self.awareness = self.awareness.saturating_sub(1);
        self.metrics
            .swim_local_health
            .set(u64::from(self.awareness));
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    /// Whether `seq` is one of the last [`RECENT_SEQS`] sequence numbers
    /// this node issued (they start at a random point, so a forger cannot
    /// guess the window).
    fn issued_recently(&self, seq: u64) -> bool {
        self.next_seq.wrapping_sub(seq) < RECENT_SEQS
    }

    fn retransmit_limit(&self) -> u32 {
        let n = self.table.live_count() as f64;
        self.config.retransmit_mult * ((n + 1.0).log10().ceil().max(1.0) as u32)
    }

    // ----- time -----

    /// Runs every timer that is due at `now`.
    pub fn tick(&mut self, now: Instant) {
        if self.leaving {
            self.expire_relays(now);
            return;
        }
        if self.wants_to_join() && now >= self.next_join_at {
            self.send_joins();
            self.next_join_at = now + self.scaled(self.config.protocol_period);
        }
        if let Some(probe) = &self.probe {
            if !probe.acked && !probe.indirect_sent && now >= probe.indirect_at {
                self.send_indirect_probes();
            }
        }
        self.expire_relays(now);
        self.expire_suspicions(now);
        if now >= self.next_probe_at {
            let lateness = now - self.next_probe_at;
            if lateness > self.config.probe_timeout {
                // This node was not running (paused, starved): the probe in
                // flight never had a fair chance, so it accuses no one.
                self.metrics.swim_late_timers.inc();
                self.probe = None;
                self.raise_awareness(1);
            }
            self.finish_probe(now);
            self.start_probe(now);
            self.next_probe_at = now + self.scaled(self.config.protocol_period);
        }
        if now >= self.next_gossip_at {
            self.gossip_rumors();
            self.next_gossip_at = now + self.config.gossip_interval;
        }
        if now >= self.next_push_pull_at {
            self.push_pull();
            self.next_push_pull_at = now + self.config.push_pull_interval;
        }
        let dead = self.table.dead_count();
        if dead > self.dead_seen {
            self.last_death_at = now;
        }
        self.dead_seen = dead;
        if now >= self.next_dead_probe_at && !self.config.dead_probe_interval.is_zero() {
            // The timer runs on while no one is dead (without waking this
            // node for it), so a fresh death is pinged within about one
            // interval of being declared.
            if self.probes_dead_members() {
                self.ping_dead_member();
            }
            let jitter = self.dead_probe_rng.random_range(0.5..1.5);
            self.next_dead_probe_at = now + self.dead_probe_interval(now).mul_f64(jitter);
        }
    }

    /// A partition usually heals within minutes; a member dead for longer
    /// is most likely gone for good, and pinging it as often would cost a
    /// datagram a second for ever. So after [`DEAD_PROBE_BRISK_FOR`]
    /// without a new death the pings slow down [`DEAD_PROBE_SLOWDOWN`]
    /// times.
    fn dead_probe_interval(&self, now: Instant) -> Duration {
        let interval = self.config.dead_probe_interval;
        if now.saturating_duration_since(self.last_death_at) < DEAD_PROBE_BRISK_FOR {
            interval
        } else {
            interval * DEAD_PROBE_SLOWDOWN
        }
    }

    /// Pushes pending rumors to a few random live members. Silent when there
    /// is no news, so a quiet cluster costs only its probes.
    fn gossip_rumors(&mut self) {
        if self.broadcasts.is_empty() {
            return;
        }
        let targets = self.random_members(self.config.gossip_fanout, None, is_live);
        for to in targets {
            if self.broadcasts.is_empty() {
                break;
            }
            self.send_with_rumors(to, Vec::new(), |rumors| GossipMessage::Gossip { rumors });
        }
    }

    fn expire_relays(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .relays
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(relay) = self.relays.remove(&seq) {
                let nack = GossipMessage::Nack {
                    seq: relay.requester_seq,
                };
                self.send(relay.requester, nack);
            }
        }
    }

    fn expire_suspicions(&mut self, now: Instant) {
        let expired: Vec<NodeId> = self
            .suspicions
            .iter()
            .filter(|(_, s)| s.deadline() <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(suspicion) = self.suspicions.remove(&id) else {
                continue;
            };
            let Some(entry) = self.table.get(id) else {
                continue;
            };
            let member = &entry.member;
            if member.state == MemberState::Suspect && member.incarnation == suspicion.incarnation {
                let dead = Member {
                    state: MemberState::Dead,
                    ..member.clone()
                };
                self.metrics.swim_members_declared_dead.inc();
                let local = self.local().id;
                self.apply_rumor(
                    Rumor {
                        member: dead,
                        accuser: Some(local),
                    },
                    local,
                    now,
                );
            }
        }
    }

    /// Up to `k` random members other than this node and `exclude` whose
    /// state passes `wanted`. Small tables are scanned; large ones sampled
    /// from the probe round (which holds every live member), so that a
    /// gossip round in a 1,000-member cluster does not walk the table.
    fn random_members(
        &mut self,
        k: usize,
        exclude: Option<NodeId>,
        wanted: fn(MemberState) -> bool,
    ) -> Vec<SocketAddr> {
        let local = self.table.local_id();
        let eligible = |id: NodeId, table: &MemberTable| {
            id != local
                && Some(id) != exclude
                && table.get(id).is_some_and(|e| wanted(e.member.state))
        };
        if self.table.len() <= SCAN_LIMIT || self.probe_order.is_empty() {
            let candidates: Vec<SocketAddr> = self
                .table
                .entries()
                .filter(|e| eligible(e.member.id, &self.table))
                .map(|e| e.member.gossip_addr)
                .collect();
            return candidates
                .choose_multiple(&mut self.rng, k)
                .copied()
                .collect();
        }
        let mut chosen: Vec<NodeId> = Vec::with_capacity(k);
        for _ in 0..k * 8 {
            if chosen.len() == k {
                break;
            }
            let id = self.probe_order[self.rng.random_range(0..self.probe_order.len())];
            if !chosen.contains(&id) && eligible(id, &self.table) {
                chosen.push(id);
            }
        }
        chosen
            .into_iter()
            .filter_map(|id| self.table.get(id).map(|e| e.member.gossip_addr))
            .collect()
    }

    // ----- probing -----

    fn next_probe_target(&mut self) -> Option<(NodeId, SocketAddr)> {
        for _ in 0..2 {
            while self.probe_cursor < self.probe_order.len() {
                let id = self.probe_order[self.probe_cursor];
                self.probe_cursor += 1;
                if let Some(entry) = self.table.get(id) {
                    let m = &entry.member;
                    if id != self.table.local_id() && is_live(m.state) {
                        return Some((id, m.gossip_addr));
                    }
                }
            }
            // A full round: start a fresh shuffled one.
            let local = self.table.local_id();
            self.probe_order = self
                .table
                .entries()
                .filter(|e| e.member.id != local && is_live(e.member.state))
                .map(|e| e.member.id)
                .collect();
            self.probe_order.sort_unstable();
            self.probe_order.shuffle(&mut self.rng);
            self.probe_cursor = 0;
        }
        None
    }

    fn start_probe(&mut self, now: Instant) {
        let Some((target, target_addr)) = self.next_probe_target() else {
            return;
        };
        let seq = self.next_seq();
        self.metrics.swim_probes.inc();
        // A member this node suspects is told so, to refute at once: the
        // rumor of the suspicion may have spent its retransmissions while
        // a partition kept it away, and it would then only learn of it once
        // declared dead.
        let suspected: Vec<Rumor> = self
            .table
            .get(target)
            .filter(|e| e.member.state == MemberState::Suspect)
            .map(|e| Rumor::about(e.member.clone()))
            .into_iter()
            .collect();
        self.send_with_rumors(target_addr, suspected, |rumors| GossipMessage::Ping {
            seq,
            rumors,
        });
        self.probe = Some(Probe {
            target,
            target_addr,
            seq,
            indirect_at: now + self.scaled(self.config.probe_timeout),
            indirect_sent: false,
            acked: false,
            expected_nacks: 0,
            nacks: 0,
        });
    }

    /// Pings one random dead (or suspect) member, telling it that it is
    /// dead (or suspect). Alive after all, it refutes in its ack (with an
    /// incarnation that beats the accusation here) and, if this node is
    /// accused by it, adds that to the ack so this node refutes too. Only
    /// its own accusation rides along: the queued rumors are spent on
    /// members that can pass them on. A suspect member is pinged too
    /// because, with local health stretching this node's probe period
    /// after flapping partitions, the next regular probe of it can be many
    /// seconds away, and the rumor of its suspicion may have been spent
    /// while it was cut off.
    fn ping_dead_member(&mut self) {
        let accused = |state| matches!(state, MemberState::Dead | MemberState::Suspect);
        let count = self
            .table
            .entries()
            .filter(|e| accused(e.member.state))
            .count();
        if count == 0 {
            return;
        }
        let nth = self.dead_probe_rng.random_range(0..count);
        let Some(member) = self
            .table
            .entries()
            .filter(|e| accused(e.member.state))
            .nth(nth)
            .map(|e| e.member.clone())
        else {
            return;
        };
        let seq = self.next_seq();
        self.metrics.swim_dead_probes.inc();
        self.dead_probe = Some(DeadProbe {
            target: member.id,
            seq,
        });
        let to = member.gossip_addr;
        self.send(
            to,
            GossipMessage::Ping {
                seq,
                rumors: vec![Rumor::about(member)],
            },
        );
    }

    fn send_indirect_probes(&mut self) {
        let Some(probe) = &mut self.probe else { return };
        probe.indirect_sent = true;
        let (seq, target, target_addr) = (probe.seq, probe.target, probe.target_addr);
        self.metrics.swim_probes_without_direct_ack.inc();
        let relays = self.random_members(self.config.indirect_probes, Some(target), |s| {
            s == MemberState::Alive
        });
        if let Some(probe) = &mut self.probe {
            probe.expected_nacks = relays.len() as u32;
        }
        for relay in relays {
            self.metrics.swim_indirect_probes.inc();
            self.send_with_rumors(relay, Vec::new(), |rumors| GossipMessage::PingReq {
                seq,
                target,
                target_addr,
                rumors,
            });
        }
    }

    /// Ends the period's probe: an ack lowers the local health score, no ack
    /// suspects the target.
    fn finish_probe(&mut self, now: Instant) {
        let Some(probe) = self.probe.take() else {
            return;
        };
        if probe.acked {
            self.lower_awareness();
            return;
        }
        self.metrics.swim_probe_failures.inc();
        // Lifeguard: relays that could not even say "no ack" point at this
        // node's own network, not at the target.
        let missing_nacks = probe.expected_nacks.saturating_sub(probe.nacks);
        let penalty = if probe.expected_nacks == 0 {
            1
        } else {
            missing_nacks
        };
        self.raise_awareness(penalty);
        self.suspect(probe.target, now);
    }

    fn suspect(&mut self, id: NodeId, now: Instant) {
        let local = self.table.local_id();
        let Some(entry) = self.table.get(id) else {
            return;
        };
        let member = entry.member.clone();
        match member.state {
            MemberState::Alive => {
                self.metrics.swim_suspicions_raised.inc();
                let suspect = Member {
                    state: MemberState::Suspect,
                    ..member
                };
                self.apply_rumor(
                    Rumor {
                        member: suspect,
                        accuser: Some(local),
                    },
                    local,
                    now,
                );
            }
            MemberState::Suspect => {
                let confirmed = self
                    .suspicions
                    .get_mut(&id)
                    .is_some_and(|s| s.incarnation == member.incarnation && s.confirm(local));
                if confirmed {
                    self.broadcasts.push(Rumor {
                        member,
                        accuser: Some(local),
                    });
                }
            }
            MemberState::Dead | MemberState::Left => {}
        }
    }

    // ----- incoming -----

    /// Handles one datagram received from `from`.
    pub fn handle_bytes(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        self.metrics.gossip_datagrams_received.inc();
        self.metrics.gossip_bytes_received.add(bytes.len() as u64);
        let datagram = match self.codec.decode(bytes) {
            Ok(datagram) => datagram,
            Err(reason) => {
                self.metrics.count_dropped(&reason);
                if self.refusal_log.allow(from, now) {
                    tracing::warn!(%from, %reason, "dropped a gossip datagram (logged once a minute per sender)");
                }
                return;
            }
        };
        let sender = datagram.sender;
        if sender == self.table.local_id() {
            return;
        }
        if self.seeds.contains(&from) {
            self.heard_from_seed = true;
        }
        // A ping's ack tells its sender itself; a join is not a member yet.
        let tell_if_accused = !matches!(
            datagram.message,
            GossipMessage::Ping { .. } | GossipMessage::Join { .. }
        );
        match datagram.message {
            GossipMessage::Join { member, settings } => {
                if self.leaving {
                    return;
                }
                if let Some(reason) = self.config.settings.refusal(&settings) {
                    self.metrics.gossip_joins_refused_settings.inc();
                    if self.refusal_log.allow(from, now) {
                        tracing::warn!(%from, node = %member.id, %reason, "refused a join");
                    }
                    // To where it came from, not where it claims to be.
                    self.send(from, GossipMessage::JoinRefused { reason });
                    return;
                }
                let reply_to = member.gossip_addr;
                self.apply_rumor(Rumor::about(member), sender, now);
                self.send_sync(reply_to, false);
            }
            GossipMessage::Ping { seq, rumors } => {
                self.apply_rumors(rumors, sender, now);
                // The ack carries this node's own record: first-hand proof
                // of its current incarnation, so a prober still holding an
                // old suspicion (whose refutation it missed) clears it now.
                let mut extra = vec![Rumor::about(self.local().clone())];
                // And a member we think failed is told so, to refute at once.
                extra.extend(
                    self.table
                        .get(sender)
                        .filter(|e| {
                            matches!(e.member.state, MemberState::Suspect | MemberState::Dead)
                        })
                        .map(|e| Rumor::about(e.member.clone())),
                );
                self.send_with_rumors(from, extra, |rumors| GossipMessage::Ack { seq, rumors });
            }
            GossipMessage::Ack { seq, rumors } => {
                // An ack for no probe in flight is late, duplicated or
                // forged: nothing it carries is trusted.
                // A late ack still carries news worth having (a resumed
                // member's refutation rides on its acks to the pings that
                // piled up while it was paused); an ack for a sequence
                // number this node never issued is forged, and nothing it
                // carries is believed.
                if self.on_ack(seq) || self.issued_recently(seq) {
                    self.apply_rumors(rumors, sender, now);
                }
            }
            GossipMessage::PingReq {
                seq,
                target,
                target_addr,
                rumors,
            } => {
                self.apply_rumors(rumors, sender, now);
                self.relay_probe(from, seq, target, target_addr, now);
            }
            GossipMessage::Gossip { rumors } => self.apply_rumors(rumors, sender, now),
            GossipMessage::JoinRefused { reason } => {
                // Only the seed this node asked, and only while it asks.
                if self.seeds.contains(&from) && self.join_refusal.is_none() && !self.has_peers() {
                    tracing::error!(seed = %from, %reason, "the cluster refused to let this node join");
                    self.join_refusal = Some(reason);
                }
            }
            GossipMessage::Nack { seq } => match &mut self.probe {
                Some(probe) if probe.seq == seq => probe.nacks += 1,
                _ => self.metrics.gossip_unexpected_replies.inc(),
            },
            GossipMessage::Sync { members, reply } => {
                for mut member in members {
                    // Like memberlist: a death heard in bulk is only a
                    // suspicion here, to be confirmed or refuted afresh.
                    if member.state == MemberState::Dead && member.id != self.table.local_id() {
                        member.state = MemberState::Suspect;
                    }
                    self.apply_rumor(Rumor::about(member), sender, now);
                }
                if reply && !self.leaving {
                    self.send_sync(from, false);
                }
            }
        }
        if tell_if_accused {
            self.tell_if_accused(sender, now);
        }
    }

    /// A member this node holds suspect or dead, yet hears from, is told so
    /// (at most once a protocol period, at the address in the table), to
    /// refute at once: the rumor of its accusation may have spent its
    /// retransmissions while a partition kept it away. After flapping
    /// partitions, when every node's local health stretches its probe
    /// period, waiting for a probe to tell it took many seconds.
    fn tell_if_accused(&mut self, sender: NodeId, now: Instant) {
        let Some(member) = self
            .table
            .get(sender)
            .filter(|e| matches!(e.member.state, MemberState::Suspect | MemberState::Dead))
            .map(|e| e.member.clone())
        else {
            return;
        };
        let period = self.config.protocol_period;
        if self
            .told_accused
            .get(&sender)
            .is_some_and(|&at| now < at + period)
        {
            return;
        }
        if self.told_accused.len() >= TOLD_ACCUSED_MAX {
            self.told_accused.retain(|_, at| now < *at + period);
        }
        self.told_accused.insert(sender, now);
        self.send(
            member.gossip_addr,
            GossipMessage::Gossip {
                rumors: vec![Rumor::about(member)],
            },
        );
    }

    /// Settles the probe or relay `seq` answers; false if there was none.
    fn on_ack(&mut self, seq: u64) -> bool {
        if let Some(probe) = &mut self.probe {
            if probe.seq == seq {
                probe.acked = true;
                return true;
            }
        }
        if let Some(dead_probe) = &self.dead_probe {
            if dead_probe.seq == seq {
                tracing::debug!(member = %dead_probe.target, "a member declared dead answered a ping");
                self.dead_probe = None;
                return true;
            }
        }
        if let Some(relay) = self.relays.remove(&seq) {
            let requester_seq = relay.requester_seq;
            self.send_with_rumors(relay.requester, Vec::new(), |rumors| GossipMessage::Ack {
                seq: requester_seq,
                rumors,
            });
            return true;
        }
        self.metrics.gossip_unexpected_replies.inc();
        false
    }

    fn relay_probe(
        &mut self,
        requester: SocketAddr,
        requester_seq: u64,
        target: NodeId,
        target_addr: SocketAddr,
        now: Instant,
    ) {
        if target == self.table.local_id() {
            self.send_with_rumors(requester, Vec::new(), |rumors| GossipMessage::Ack {
                seq: requester_seq,
                rumors,
            });
            return;
        }
        if self.relays.len() >= self.config.max_relays {
            self.metrics.swim_relays_refused.inc();
            return;
        }
        let seq = self.next_seq();
        self.relays.insert(
            seq,
            Relay {
                requester,
                requester_seq,
                expires: now + self.scaled(self.config.probe_timeout),
            },
        );
        self.send_with_rumors(target_addr, Vec::new(), |rumors| GossipMessage::Ping {
            seq,
            rumors,
        });
    }

    fn apply_rumors(&mut self, rumors: Vec<Rumor>, sender: NodeId, now: Instant) {
        for rumor in rumors {
            self.apply_rumor(rumor, sender, now);
        }
    }

    /// Applies news from `sender` (who may be passing on someone else's).
    fn apply_rumor(&mut self, rumor: Rumor, sender: NodeId, now: Instant) {
        let Rumor {
            mut member,
            accuser,
        } = rumor;
        // At the ceiling only a member's word that it is alive is believed,
        // so an accusation there can always be refuted.
        let past_ceiling = member.incarnation > MAX_INCARNATION
            || (member.incarnation == MAX_INCARNATION && member.state != MemberState::Alive);
        if past_ceiling {
            self.metrics.gossip_rumors_refused_incarnation.inc();
            if self.refusal_log.allow(member.gossip_addr, now) {
                tracing::warn!(
                    member = %member.id,
                    incarnation = member.incarnation,
                    state = member.state.as_str(),
                    "refused a rumor with an incarnation no member reaches (logged once a minute per member address)"
                );
            }
            if member.id == self.table.local_id() && member.state != MemberState::Alive {
                // Refuted as an accusation at this node's own incarnation.
                member.incarnation = self.local().incarnation;
                self.answer_rumor_about_self(&member, now);
            }
            return;
        }
        if member.id != self.table.local_id()
            && self.table.get(member.id).is_none()
            && self.table_is_full()
        {
            self.metrics.gossip_members_refused_full.inc();
            if self.refusal_log.allow(member.gossip_addr, now) {
                tracing::warn!(
                    member = %member.id,
                    max_members = self.config.max_members,
                    "the member table is full; news of a new member refused"
                );
            }
            return;
        }
        if member.id == self.table.local_id() {
            self.answer_rumor_about_self(&member, now);
            return;
        }
        let accuser = accuser.unwrap_or(sender);
        if member.state == MemberState::Suspect {
            if let Some(suspicion) = self.suspicions.get_mut(&member.id) {
                if suspicion.incarnation == member.incarnation {
                    if suspicion.confirm(accuser) {
                        self.broadcasts.push(Rumor {
                            member,
                            accuser: Some(accuser),
                        });
                    }
                    return;
                }
            }
        }
        let was_live = self.table.get(member.id).map(|e| is_live(e.member.state));
        if !self.table.apply(member.clone(), now) {
            return;
        }
        self.changes.push(member.clone());
        match member.state {
            MemberState::Alive => {
                self.suspicions.remove(&member.id);
                if was_live != Some(true) {
                    // A newcomer joins the probe round at a random place.
                    let at = self
                        .rng
                        .random_range(self.probe_cursor..=self.probe_order.len());
                    self.probe_order.insert(at, member.id);
                }
            }
            MemberState::Suspect => {
                self.start_suspicion(member.id, member.incarnation, accuser, now)
            }
            MemberState::Dead | MemberState::Left => {
                self.suspicions.remove(&member.id);
            }
        }
        self.broadcasts.push(Rumor {
            member,
            accuser: Some(accuser),
        });
    }

    fn start_suspicion(&mut self, id: NodeId, incarnation: u64, accuser: NodeId, now: Instant) {
        let n = self.table.live_count();
        let min =
            suspicion::min_timeout(self.config.suspicion_mult, n, self.config.protocol_period);
        let max = min * self.config.suspicion_max_mult;
        let wanted = self.config.suspicion_mult.saturating_sub(2);
        // Too few others to confirm: do not wait for confirmations that
        // cannot come.
        let expected = if n.saturating_sub(2) < wanted as usize {
            0
        } else {
            wanted
        };
        self.suspicions.insert(
            id,
            Suspicion::new(incarnation, accuser, now, min, max, expected),
        );
    }

    /// Only this node speaks for itself: a rumor that it is suspect, dead or
    /// gone at its current incarnation (or an old incarnation of it still
    /// around) is answered with a higher incarnation, alive.
    fn answer_rumor_about_self(&mut self, rumor: &Member, now: Instant) {
        if self.leaving {
            return;
        }
        let local = self.local().clone();
        let must_refute = match rumor.state {
            MemberState::Alive => rumor.incarnation > local.incarnation,
            _ => rumor.incarnation >= local.incarnation,
        };
        if !must_refute {
            return;
        }
        if rumor.state == MemberState::Suspect {
            // Lifeguard: being suspected hints that this node is the slow one.
            self.raise_awareness(1);
        }
        self.metrics.swim_refutations.inc();
        let refuted = Member {
            incarnation: rumor.incarnation.saturating_add(1).min(MAX_INCARNATION),
            state: MemberState::Alive,
            ..local
        };
        self.table.set_local(refuted.clone(), now);
        self.changes.push(refuted.clone());
        self.broadcasts.push(Rumor::about(refuted));
    }

    /// Whether news of one more member would pass the cap: members that
    /// left count too, against a cap twice as high, so that a stream of
    /// departures cannot grow the table either.
    fn table_is_full(&self) -> bool {
        let max = self.config.max_members;
        self.table.live_count() + self.table.dead_count() >= max
            || self.table.len() >= max.saturating_mul(2)
    }

    // ----- join, push-pull, leave -----

    fn send_joins(&mut self) {
        if self.has_peers() {
            self.joins_since_peers += 1;
        }
        let member = self.local().clone();
        let settings = self.config.settings;
        for seed in self.seeds.clone() {
            self.send(
                seed,
                GossipMessage::Join {
                    member: member.clone(),
                    settings,
                },
            );
        }
    }

    /// Sends the whole table in as many datagrams as it takes; only the
    /// first asks for a reply. Parts are sized from one member's encoding
    /// and halved in the rare case one does not fit, so a 1,000-member
    /// table costs a few dozen encodings, not a thousand.
    fn send_sync(&mut self, to: SocketAddr, reply: bool) {
        let mut members = self.table.members();
        // This node first, so that the part most likely to arrive says the
        // most important thing.
        let local = self.table.local_id();
        members.sort_by_key(|m| m.id != local);
        // Members differ in size only by their addresses and counters; the
        // slack covers that, and a part that still does not fit is halved.
        let sample = members
            .first()
            .and_then(|m| rmp_serde::to_vec(m).ok())
            .map_or(64, |b| b.len() + 8);
        let room = self.codec.max_datagram_bytes().saturating_sub(64);
        let per_part = (room / sample).max(1);
        let mut parts: std::collections::VecDeque<Vec<Member>> =
            members.chunks(per_part).map(<[Member]>::to_vec).collect();
        let mut first = true;
        while let Some(part) = parts.pop_front() {
            let datagram = Datagram {
                sender: local,
                message: GossipMessage::Sync {
                    members: part,
                    reply: reply && first,
                },
            };
            match self.codec.encode_within_limit(&datagram) {
                Ok(Some(bytes)) => {
                    self.push_outgoing(to, bytes);
                    first = false;
                }
                Ok(None) => {
                    let GossipMessage::Sync { mut members, .. } = datagram.message else {
                        continue;
                    };
                    if members.len() <= 1 {
                        self.metrics.gossip_oversized_not_sent.inc();
                        continue;
                    }
                    let back = members.split_off(members.len() / 2);
                    parts.push_front(back);
                    parts.push_front(members);
                }
                Err(e) => tracing::error!(error = %e, "could not encode a sync part"),
            }
        }
    }

    /// Exchanges full state with a random live member, and with a random
    /// dead one: if it is in fact alive (a healed partition, a node that was
    /// paused) it learns it was declared dead and refutes.
    fn push_pull(&mut self) {
        let local = self.table.local_id();
        let pick = |state: fn(MemberState) -> bool, rng: &mut StdRng, table: &MemberTable| {
            let candidates: Vec<SocketAddr> = table
                .entries()
                .filter(|e| e.member.id != local && state(e.member.state))
                .map(|e| e.member.gossip_addr)
                .collect();
            candidates.choose(rng).copied()
        };
        let live = pick(|s| s == MemberState::Alive, &mut self.rng, &self.table);
        let dead = pick(|s| s == MemberState::Dead, &mut self.rng, &self.table);
        for to in [live, dead].into_iter().flatten() {
            self.metrics.swim_push_pulls.inc();
            self.send_sync(to, true);
        }
    }

    /// Announces that this node leaves: its own rumor, `left`, goes straight
    /// to a few members and then rides on every message it still sends. It
    /// stops probing and accusing.
    /// Removes a member that is dead for good (an operator's decision):
    /// it is marked `left` at its incarnation and the news spreads like a
    /// leave. A member that is alive or suspect would refute it, so it is
    /// refused; so is this node itself, which leaves instead.
    pub fn remove(&mut self, id: NodeId, now: Instant) -> Result<Member, RemoveError> {
        if id == self.table.local_id() {
            return Err(RemoveError::IsSelf);
        }
        let member = match self.table.get(id) {
            None => return Err(RemoveError::Unknown),
            Some(entry) => entry.member.clone(),
        };
        match member.state {
            MemberState::Alive | MemberState::Suspect => {
                return Err(RemoveError::NotDead(member.state))
            }
            MemberState::Left => return Ok(member),
            MemberState::Dead => {}
        }
        let removed = Member {
            state: MemberState::Left,
            ..member
        };
        let local = self.table.local_id();
        self.apply_rumor(
            Rumor {
                member: removed.clone(),
                accuser: Some(local),
            },
            local,
            now,
        );
        Ok(removed)
    }

    /// Leaves the cluster for good: the others take this node off the ring.
    pub fn leave(&mut self, now: Instant) {
        self.depart(MemberState::Left, now);
    }

    /// Stops without leaving: the others mark this node dead at once, so
    /// they stop asking it and keep hints for it, while it keeps its place
    /// on the ring (a dead member keeps its tokens, so no key moves). On
    /// its return it refutes, as after any death, with a higher
    /// incarnation.
    pub fn stop(&mut self, now: Instant) {
        self.depart(MemberState::Dead, now);
    }

    /// Announces this node as `state` straight to a few members (and in
    /// gossip), and from then on neither refutes nor lets anyone join.
    fn depart(&mut self, state: MemberState, now: Instant) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.probe = None;
        self.suspicions.clear();
        let left = Member {
            state,
            ..self.local().clone()
        };
        self.table.set_local(left.clone(), now);
        self.changes.push(left.clone());
        self.broadcasts.push(Rumor::about(left.clone()));
        let local = left.id;
        let targets: Vec<SocketAddr> = self
            .table
            .entries()
            .filter(|e| e.member.id != local && is_live(e.member.state))
            .map(|e| e.member.gossip_addr)
            .collect();
        let fanout = (self.config.indirect_probes + 1).max(3);
        let chosen: Vec<SocketAddr> = targets
            .choose_multiple(&mut self.rng, fanout)
            .copied()
            .collect();
        for to in chosen {
            let seq = self.next_seq();
            self.send_with_rumors(to, vec![Rumor::about(left.clone())], |rumors| {
                GossipMessage::Ping { seq, rumors }
            });
        }
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    // ----- outgoing -----

    /// Sends a message built around `extra` rumors plus as many queued ones
    /// as fit the datagram limit.
    fn send_with_rumors(
        &mut self,
        to: SocketAddr,
        extra: Vec<Rumor>,
        make: impl Fn(Vec<Rumor>) -> GossipMessage,
    ) {
        let sender = self.table.local_id();
        // Measured, not sealed: a seal here would be thrown away.
        let base = self
            .codec
            .encoded_len(&Datagram {
                sender,
                message: make(extra.clone()),
            })
            .unwrap_or(usize::MAX);
        let room = self.codec.max_datagram_bytes().saturating_sub(base);
        let limit = self.retransmit_limit();
        let mut rumors = extra;
        rumors.extend(self.broadcasts.take(room, limit));
        self.send(to, make(rumors));
    }

    fn send(&mut self, to: SocketAddr, message: GossipMessage) {
        let datagram = Datagram {
            sender: self.table.local_id(),
            message,
        };
        match self.codec.encode_within_limit(&datagram) {
            Ok(Some(bytes)) => {
                self.metrics.gossip_datagrams_sent.inc();
                self.metrics.gossip_bytes_sent.add(bytes.len() as u64);
                self.metrics
                    .gossip_datagram_max_bytes
                    .set_max(bytes.len() as u64);
                self.outgoing.push(Outgoing { to, bytes });
            }
            Ok(None) => {
                self.metrics.gossip_oversized_not_sent.inc();
                tracing::error!(
                    kind = datagram.message.kind(),
                    "message exceeds the gossip limit; not sent"
                );
            }
            Err(e) => tracing::error!(error = %e, "could not encode gossip"),
        }
    }
}

/// Tables up to this size are scanned when picking random members.
const SCAN_LIMIT: usize = 64;

impl Swim {
    fn push_outgoing(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.metrics.gossip_datagrams_sent.inc();
        self.metrics.gossip_bytes_sent.add(bytes.len() as u64);
        self.metrics
            .gossip_datagram_max_bytes
            .set_max(bytes.len() as u64);
        self.outgoing.push(Outgoing { to, bytes });
    }
}

fn is_live(state: MemberState) -> bool {
    matches!(state, MemberState::Alive | MemberState::Suspect)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Metrics;

    fn member(id: u64, state: MemberState, incarnation: u64) -> Member {
        let addr: SocketAddr = format!("127.0.0.1:{}", 5000 + id).parse().unwrap();
        Member {
            id: NodeId::from_u64(id),
            gossip_addr: addr,
            http_addr: addr,
            state,
            incarnation,
        }
    }

    /// A node that has heard, from a member that is not in its table,
    /// these rumors and nothing else.
    fn swim_that_heard(rumors: Vec<Member>, now: Instant) -> (Swim, Codec, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let codec = Codec::new("dnd", 1400);
        let mut swim = Swim::new(
            member(1, MemberState::Alive, 0),
            SwimConfig::default(),
            codec.clone(),
            Vec::new(),
            7,
            metrics.clone(),
            now,
        );
        let gossip = Datagram {
            sender: NodeId::from_u64(9),
            message: GossipMessage::Gossip {
                rumors: rumors.into_iter().map(Rumor::about).collect(),
            },
        };
        let bytes = codec.encode(&gossip).unwrap();
        swim.handle_bytes(member(9, MemberState::Alive, 0).gossip_addr, &bytes, now);
        swim.take_changes();
        (swim, codec, metrics)
    }

    /// Runs every timer up to `until`, returning what was sent and when.
    fn run(swim: &mut Swim, until: Instant) -> Vec<(Instant, Outgoing)> {
        let mut sent = Vec::new();
        while let Some(wake) = swim.next_wake() {
            if wake > until {
                break;
            }
            swim.tick(wake);
            sent.extend(swim.take_outgoing().into_iter().map(|o| (wake, o)));
        }
        sent
    }

    fn pings_to(
        sent: &[(Instant, Outgoing)],
        to: SocketAddr,
        codec: &Codec,
    ) -> Vec<(Instant, u64, Vec<Rumor>)> {
        sent.iter()
            .filter(|(_, o)| o.to == to)
            .filter_map(|(at, o)| match codec.decode(&o.bytes).ok()?.message {
                GossipMessage::Ping { seq, rumors } => Some((*at, seq, rumors)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_dead_member_is_told_it_is_dead_and_its_silence_changes_nothing() {
        let start = Instant::now();
        let dead = member(2, MemberState::Dead, 3);
        let (mut swim, codec, metrics) = swim_that_heard(vec![dead.clone()], start);
        let sent = run(&mut swim, start + Duration::from_secs(20));
        let pings = pings_to(&sent, dead.gossip_addr, &codec);
        assert!(
            (10..=40).contains(&pings.len()),
            "{} pings in 20 s",
            pings.len()
        );
        for (_, _, rumors) in &pings {
            assert_eq!(rumors, &vec![Rumor::about(dead.clone())]);
        }
        let interval = SwimConfig::default().dead_probe_interval;
        for pair in pings.windows(2) {
            assert!(
                pair[1].0 - pair[0].0 >= interval / 2,
                "one ping per interval"
            );
        }
        assert_eq!(metrics.swim_dead_probes.get(), pings.len() as u64);
        assert_eq!(swim.awareness(), 0, "no answer is no sign of trouble here");
        assert_eq!(metrics.swim_suspicions_raised.get(), 0);
        assert_eq!(metrics.swim_probe_failures.get(), 0);
        assert!(swim.take_changes().is_empty());
        let still = &swim.table().get(dead.id).unwrap().member;
        assert_eq!((still.state, still.incarnation), (MemberState::Dead, 3));
    }

    #[test]
    fn a_suspected_member_is_told_of_its_suspicion_in_the_probe_itself() {
        let start = Instant::now();
        let suspect = member(2, MemberState::Suspect, 4);
        let (mut swim, codec, _) = swim_that_heard(vec![suspect.clone()], start);
        let sent = run(&mut swim, start + Duration::from_secs(10));
        let pings = pings_to(&sent, suspect.gossip_addr, &codec);
        assert!(pings.len() >= 4, "{} pings", pings.len());
        // Long after the rumor spent its retransmissions, every ping still
        // tells the member what this node holds against it.
        let dead = Member {
            state: MemberState::Dead,
            ..suspect.clone()
        };
        for (_, _, rumors) in &pings {
            assert!(
                rumors.contains(&Rumor::about(suspect.clone()))
                    || rumors.contains(&Rumor::about(dead.clone())),
                "the ping carries the suspicion: {rumors:?}"
            );
        }
    }

    #[test]
    fn a_suspect_member_heard_from_is_told_of_its_suspicion_once_a_period() {
        let start = Instant::now();
        let suspect = member(2, MemberState::Suspect, 4);
        let (mut swim, codec, _) = swim_that_heard(vec![suspect.clone()], start);
        swim.take_outgoing();
        let from_suspect = codec
            .encode(&Datagram {
                sender: suspect.id,
                message: GossipMessage::Gossip { rumors: Vec::new() },
            })
            .unwrap();
        let told = |swim: &mut Swim| {
            swim.take_outgoing()
                .into_iter()
                .filter(|o| o.to == suspect.gossip_addr)
                .filter_map(|o| match codec.decode(&o.bytes).ok()?.message {
                    GossipMessage::Gossip { rumors } => Some(rumors),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        swim.handle_bytes(suspect.gossip_addr, &from_suspect, start);
        assert_eq!(told(&mut swim), vec![vec![Rumor::about(suspect.clone())]]);
        let soon = start + Duration::from_millis(100);
        swim.handle_bytes(suspect.gossip_addr, &from_suspect, soon);
        assert!(told(&mut swim).is_empty(), "once a period");
        let later = start + SwimConfig::default().protocol_period;
        swim.handle_bytes(suspect.gossip_addr, &from_suspect, later);
        assert_eq!(told(&mut swim).len(), 1);
    }

    #[test]
    fn a_member_dead_for_minutes_is_pinged_ten_times_less_often() {
        let start = Instant::now();
        let dead = member(2, MemberState::Dead, 3);
        let (mut swim, codec, _) = swim_that_heard(vec![dead.clone()], start);
        let brisk_end = start + DEAD_PROBE_BRISK_FOR;
        let sent = run(&mut swim, brisk_end + Duration::from_secs(300));
        let pings = pings_to(&sent, dead.gossip_addr, &codec);
        let early = pings.iter().filter(|(at, _, _)| *at < brisk_end).count();
        // The interval in force when the last brisk ping was sent may still
        // be the short one: count from a little after the switch.
        let late = pings
            .iter()
            .filter(|(at, _, _)| *at > brisk_end + Duration::from_secs(2))
            .count();
        assert!(early >= 200, "{early} pings in the first five minutes");
        assert!(
            (10..=60).contains(&late),
            "{late} pings in the next five minutes"
        );
    }

    #[test]
    fn the_ack_of_a_dead_member_that_is_alive_after_all_is_believed() {
        let start = Instant::now();
        let dead = member(2, MemberState::Dead, 3);
        let (mut swim, codec, metrics) = swim_that_heard(vec![dead.clone()], start);
        let sent = run(&mut swim, start + Duration::from_secs(2));
        let (at, seq, _) = pings_to(&sent, dead.gossip_addr, &codec)
            .pop()
            .expect("the dead member was pinged");
        let refuted = member(2, MemberState::Alive, 4);
        let ack = Datagram {
            sender: dead.id,
            message: GossipMessage::Ack {
                seq,
                rumors: vec![Rumor::about(refuted.clone())],
            },
        };
        swim.handle_bytes(dead.gossip_addr, &codec.encode(&ack).unwrap(), at);
        assert_eq!(swim.table().get(dead.id).unwrap().member, refuted);
        assert_eq!(swim.take_changes(), vec![refuted]);
        assert_eq!(metrics.gossip_unexpected_replies.get(), 0);
        assert!(swim.has_peers());
    }

    #[test]
    fn a_rumor_past_the_incarnation_ceiling_is_refused_and_about_this_node_refuted() {
        let start = Instant::now();
        let alive = member(2, MemberState::Alive, 5);
        let (mut swim, _codec, metrics) = swim_that_heard(vec![alive.clone()], start);
        for incarnation in [MAX_INCARNATION + 1, u64::MAX] {
            let (_, codec, _) = swim_that_heard(vec![], start);
            let forged = Datagram {
                sender: NodeId::from_u64(9),
                message: GossipMessage::Gossip {
                    rumors: vec![
                        Rumor::about(member(2, MemberState::Left, incarnation)),
                        Rumor::about(member(1, MemberState::Left, incarnation)),
                    ],
                },
            };
            let bytes = codec.encode(&forged).unwrap();
            swim.handle_bytes(alive.gossip_addr, &bytes, start);
            assert_eq!(swim.table().get(alive.id).unwrap().member, alive);
            let local = swim.local().clone();
            assert_eq!(local.state, MemberState::Alive);
            assert!(local.incarnation <= MAX_INCARNATION);
        }
        assert_eq!(metrics.gossip_rumors_refused_incarnation.get(), 4);
        // The accusation was refuted at this node's own incarnation + 1 and
        // the refutation is on its way, not obeyed.
        assert_eq!(swim.local().incarnation, 2);
        assert!(swim
            .take_changes()
            .iter()
            .all(|m| m.state == MemberState::Alive));
    }

    #[test]
    fn a_refutation_at_the_ceiling_saturates_instead_of_wrapping() {
        let start = Instant::now();
        let (mut swim, codec, _) = swim_that_heard(vec![], start);
        let accusation = Datagram {
            sender: NodeId::from_u64(9),
            message: GossipMessage::Gossip {
                rumors: vec![Rumor::about(member(
                    1,
                    MemberState::Dead,
                    MAX_INCARNATION - 1,
                ))],
            },
        };
        swim.handle_bytes(
            member(9, MemberState::Alive, 0).gossip_addr,
            &codec.encode(&accusation).unwrap(),
            start,
        );
        assert_eq!(swim.local().incarnation, MAX_INCARNATION);
        // An accusation at the ceiling itself is refused: the refutation
        // there (alive) always wins.
        let at_ceiling = Datagram {
            sender: NodeId::from_u64(9),
            message: GossipMessage::Gossip {
                rumors: vec![Rumor::about(member(2, MemberState::Dead, MAX_INCARNATION))],
            },
        };
        swim.handle_bytes(
            member(9, MemberState::Alive, 0).gossip_addr,
            &codec.encode(&at_ceiling).unwrap(),
            start,
        );
        assert!(swim.table().get(NodeId::from_u64(2)).is_none());
        assert_eq!(swim.local().state, MemberState::Alive);
    }

    #[test]
    fn the_member_table_takes_no_more_than_its_cap() {
        let start = Instant::now();
        let metrics = Arc::new(Metrics::default());
        let codec = Codec::new("dnd", 65_000);
        let config = SwimConfig {
            max_members: 10,
            ..SwimConfig::default()
        };
        let mut swim = Swim::new(
            member(1, MemberState::Alive, 0),
            config,
            codec.clone(),
            Vec::new(),
            7,
            metrics.clone(),
            start,
        );
        let phantoms: Vec<Rumor> = (100..200)
            .map(|id| Rumor::about(member(id, MemberState::Alive, 0)))
            .collect();
        let flood = Datagram {
            sender: NodeId::from_u64(9),
            message: GossipMessage::Gossip { rumors: phantoms },
        };
        swim.handle_bytes(
            member(9, MemberState::Alive, 0).gossip_addr,
            &codec.encode(&flood).unwrap(),
            start,
        );
        assert_eq!(swim.table().live_count(), 10, "this node and nine others");
        assert_eq!(metrics.gossip_members_refused_full.get(), 91);
        // News of a member already in the table still gets through.
        let known = Datagram {
            sender: NodeId::from_u64(9),
            message: GossipMessage::Gossip {
                rumors: vec![Rumor::about(member(100, MemberState::Alive, 3))],
            },
        };
        swim.handle_bytes(
            member(9, MemberState::Alive, 0).gossip_addr,
            &codec.encode(&known).unwrap(),
            start,
        );
        assert_eq!(
            swim.table()
                .get(NodeId::from_u64(100))
                .unwrap()
                .member
                .incarnation,
            3
        );
    }

    #[test]
    fn a_join_with_other_settings_is_refused_and_the_joiner_told_why() {
        let start = Instant::now();
        let (mut seed, codec, metrics) = swim_that_heard(vec![], start);
        let joiner_addr = member(5, MemberState::Alive, 0).gossip_addr;
        let mut joiner = Swim::new(
            member(5, MemberState::Alive, 0),
            SwimConfig {
                settings: ClusterSettings {
                    replicas: 3,
                    vnodes: 64,
                },
                ..SwimConfig::default()
            },
            codec.clone(),
            vec![seed.local().gossip_addr],
            8,
            Arc::new(Metrics::default()),
            start,
        );
        joiner.tick(start);
        let join = joiner.take_outgoing().pop().expect("a join is sent");
        seed.handle_bytes(joiner_addr, &join.bytes, start);
        assert!(
            seed.table().get(NodeId::from_u64(5)).is_none(),
            "not let in"
        );
        assert_eq!(metrics.gossip_joins_refused_settings.get(), 1);
        let refusal = seed.take_outgoing().pop().expect("the joiner is told");
        assert_eq!(refusal.to, joiner_addr);
        joiner.handle_bytes(seed.local().gossip_addr, &refusal.bytes, start);
        let reason = joiner.join_refusal().expect("the joiner knows why");
        assert!(
            reason.contains("--vnodes 1024") && reason.contains("--vnodes 64"),
            "{reason}"
        );
        // It stops asking.
        joiner.tick(start + Duration::from_secs(5));
        assert!(joiner.take_outgoing().is_empty());
    }

    #[test]
    fn a_joiner_that_hears_of_others_first_keeps_asking_its_seed_until_it_answers() {
        let start = Instant::now();
        let codec = Codec::new("dnd", 1400);
        let seed = member(2, MemberState::Alive, 0);
        let mut joiner = Swim::new(
            member(1, MemberState::Alive, 0),
            SwimConfig::default(),
            codec.clone(),
            vec![seed.gossip_addr],
            7,
            Arc::new(Metrics::default()),
            start,
        );
        // A third node joined through this one before the seed answered.
        let third = member(3, MemberState::Alive, 0);
        let join = Datagram {
            sender: third.id,
            message: GossipMessage::Join {
                member: third.clone(),
                settings: ClusterSettings::default(),
            },
        };
        joiner.handle_bytes(third.gossip_addr, &codec.encode(&join).unwrap(), start);
        assert!(joiner.has_peers());
        let joins_to_seed = |sent: &[(Instant, Outgoing)]| {
            sent.iter()
                .filter(|(_, o)| o.to == seed.gossip_addr)
                .filter(|(_, o)| {
                    matches!(
                        codec.decode(&o.bytes).unwrap().message,
                        GossipMessage::Join { .. }
                    )
                })
                .count()
        };
        let sent = run(&mut joiner, start + Duration::from_secs(3));
        assert!(joins_to_seed(&sent) >= 2, "the seed is still asked");
        let answer = Datagram {
            sender: seed.id,
            message: GossipMessage::Sync {
                members: vec![seed.clone()],
                reply: false,
            },
        };
        joiner.handle_bytes(
            seed.gossip_addr,
            &codec.encode(&answer).unwrap(),
            start + Duration::from_secs(3),
        );
        let sent = run(&mut joiner, start + Duration::from_secs(6));
        assert_eq!(
            joins_to_seed(&sent),
            0,
            "once the seed answered, it is not asked again"
        );
    }

    #[test]
    fn a_member_that_left_is_never_pinged() {
        let start = Instant::now();
        let dead = member(2, MemberState::Dead, 0);
        let left = member(4, MemberState::Left, 0);
        let (mut swim, _, metrics) = swim_that_heard(vec![dead.clone(), left.clone()], start);
        let sent = run(&mut swim, start + Duration::from_secs(60));
        assert!(sent.iter().all(|(_, o)| o.to != left.gossip_addr));
        assert!(metrics.swim_dead_probes.get() > 0, "the dead one is pinged");

        let (mut swim, _, metrics) = swim_that_heard(vec![left.clone()], start);
        let sent = run(&mut swim, start + Duration::from_secs(60));
        assert!(sent.is_empty(), "{sent:?}");
        assert_eq!(metrics.swim_dead_probes.get(), 0);
    }

    #[test]
    fn zero_turns_dead_member_pings_off() {
        let start = Instant::now();
        let dead = member(2, MemberState::Dead, 0);
        let (mut swim, codec, metrics) = swim_that_heard(vec![dead.clone()], start);
        swim.config.dead_probe_interval = Duration::ZERO;
        let sent = run(&mut swim, start + Duration::from_secs(20));
        assert!(pings_to(&sent, dead.gossip_addr, &codec).is_empty());
        assert_eq!(metrics.swim_dead_probes.get(), 0);
    }
}
