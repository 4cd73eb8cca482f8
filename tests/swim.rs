//! The SWIM protocol over a simulated network in virtual time: detection,
//! refutation, pauses, leaves, loss, partitions and restarts. Deterministic
//! for each seed; no sockets and no real waiting.

use std::time::{Duration, Instant};

use dnd::member::MemberState;
use dnd::metrics::Metrics;
use dnd::node_id::NodeId;
use dnd::swim::sim::Sim;
use dnd::swim::{suspicion, Swim, SwimConfig};
use dnd::wire::{Codec, Datagram, GossipMessage};

const T: Duration = Duration::from_secs(1);
const STEP: Duration = Duration::from_millis(100);

fn converged_cluster(n: usize, seed: u64) -> Sim {
    converged_cluster_with(n, SwimConfig::default(), seed)
}

fn converged_cluster_with(n: usize, config: SwimConfig, seed: u64) -> Sim {
    let mut sim = Sim::cluster(n, config, seed);
    let took = sim.run_until_true(Duration::from_secs(60), STEP, Sim::converged);
    assert!(took.is_some(), "{n} nodes did not converge within a minute");
    sim
}

/// Runs `duration` in steps, checking that no running node is ever marked
/// dead by anyone.
fn run_without_false_deaths(sim: &mut Sim, duration: Duration) {
    let end = sim.now() + duration;
    while sim.now() < end {
        sim.run_for(STEP);
        assert_eq!(
            sim.false_deaths(),
            0,
            "a live member was declared dead at {:?}",
            sim.elapsed()
        );
    }
}

#[test]
fn sixteen_nodes_joining_through_each_other_converge() {
    let mut sim = Sim::cluster(16, SwimConfig::default(), 1);
    let took = sim.run_until_true(Duration::from_secs(30), STEP, Sim::converged);
    assert!(took.is_some());
    run_without_false_deaths(&mut sim, Duration::from_secs(60));
    assert!(sim.converged());
}

#[test]
fn a_crashed_member_is_suspected_then_declared_dead_by_everyone() {
    for seed in 0..5 {
        let mut sim = converged_cluster(8, seed);
        sim.crash(3);
        let suspected = sim
            .run_until_true(Duration::from_secs(10), STEP, |s| {
                s.running().iter().any(|&i| {
                    s.view(i, 3)
                        .is_some_and(|m| m.state == MemberState::Suspect)
                })
            })
            .expect("someone suspects the crashed member");
        let bound = suspicion::min_timeout(4, 8, T) * 6 + 3 * T;
        let dead = sim
            .run_until_true(bound, STEP, |s| s.all_see(3, MemberState::Dead))
            .expect("everyone declares the crashed member dead");
        assert!(
            suspected <= 4 * T,
            "seed {seed}: first suspicion after {suspected:?}"
        );
        assert!(dead < bound, "seed {seed}: dead after {dead:?}");
        assert_eq!(sim.false_deaths(), 0, "no one else was declared dead");
    }
}

#[test]
fn confirmations_bring_death_near_the_minimum_suspicion_timeout() {
    // With 16 members many probe the crashed one and confirm each other's
    // suspicion, so the timeout shrinks from its maximum towards the floor.
    let mut sim = converged_cluster(16, 7);
    sim.crash(5);
    let dead = sim
        .run_until_true(Duration::from_secs(60), STEP, |s| {
            s.all_see(5, MemberState::Dead)
        })
        .unwrap();
    let floor = suspicion::min_timeout(4, 16, T);
    assert!(dead < floor * 3, "dead after {dead:?}, floor {floor:?}");
}

#[test]
fn a_member_paused_less_than_the_suspicion_timeout_is_never_declared_dead() {
    let mut sim = converged_cluster(8, 3);
    sim.pause(2);
    run_without_paused_death(&mut sim, 2, Duration::from_secs(2));
    sim.resume(2);
    run_without_false_deaths(&mut sim, Duration::from_secs(20));
    assert!(sim.converged());
}

fn run_without_paused_death(sim: &mut Sim, paused: usize, duration: Duration) {
    let end = sim.now() + duration;
    while sim.now() < end {
        sim.run_for(STEP);
        for i in sim.running() {
            let state = sim.view(i, paused).map(|m| m.state);
            assert_ne!(
                state,
                Some(MemberState::Dead),
                "node {i} declared the paused node dead"
            );
        }
    }
}

#[test]
fn a_member_paused_past_its_suspicion_is_declared_dead_and_comes_back_alive() {
    let mut sim = converged_cluster(8, 4);
    let before = sim.view(0, 6).unwrap().incarnation;
    sim.pause(6);
    sim.run_until_true(Duration::from_secs(60), STEP, |s| {
        s.all_see(6, MemberState::Dead)
    })
    .expect("the paused member is declared dead");
    sim.resume(6);
    let back = sim
        .run_until_true(Duration::from_secs(10), STEP, |s| {
            s.all_see(6, MemberState::Alive)
        })
        .expect("the resumed member is alive again everywhere");
    assert!(back <= 5 * T, "took {back:?}");
    assert!(
        sim.view(0, 6).unwrap().incarnation > before,
        "it refuted with a higher incarnation"
    );
    assert!(sim.nodes[6].metrics.swim_refutations.get() >= 1);
    // Its own view of the others survived the pause without accusing them.
    run_without_false_deaths(&mut sim, Duration::from_secs(10));
}

#[test]
fn a_leaving_member_is_marked_left_at_once_and_never_suspected() {
    let mut sim = converged_cluster(8, 5);
    sim.leave(1);
    let took = sim
        .run_until_true(Duration::from_secs(10), STEP, |s| {
            s.all_see(1, MemberState::Left)
        })
        .expect("everyone marks the member left");
    assert!(took <= 2 * T, "took {took:?}");
    sim.crash(1);
    let end = sim.now() + Duration::from_secs(60);
    while sim.now() < end {
        sim.run_for(STEP);
        assert!(sim.all_see(1, MemberState::Left), "left is final");
    }
}

#[test]
fn ten_percent_loss_for_five_minutes_gives_no_false_positives_and_shows_in_metrics() {
    for n in [8, 16] {
        let mut sim = converged_cluster(n, 11);
        sim.faults.loss = 0.10;
        run_without_false_deaths(&mut sim, Duration::from_secs(300));
        let missed: u64 = sim
            .nodes
            .iter()
            .map(|n| n.metrics.swim_probes_without_direct_ack.get())
            .sum();
        assert!(missed > 0, "the loss is visible in the metrics");
        assert!(sim.datagrams_lost > 0);
    }
}

/// Whether every node of `a` lists every node of `b` dead, and the reverse.
fn each_side_lists_the_other_dead(sim: &Sim, a: &[usize], b: &[usize]) -> bool {
    let dead = |i: usize, j: usize| sim.view(i, j).is_some_and(|m| m.state == MemberState::Dead);
    a.iter()
        .all(|&i| b.iter().all(|&j| dead(i, j) && dead(j, i)))
}

/// Cuts `a` from `b` for 30 s and until each side lists the other dead,
/// then heals.
fn partition_past_the_deaths(sim: &mut Sim, a: &[usize], b: &[usize]) {
    let cut_at = sim.now();
    sim.partition(a, b);
    sim.run_until_true(Duration::from_secs(90), STEP, |s| {
        each_side_lists_the_other_dead(s, a, b)
    })
    .expect("each side declares the other dead");
    let held = sim.now() - cut_at;
    sim.run_for(Duration::from_secs(30).saturating_sub(held));
    sim.heal();
}

#[test]
fn a_partition_held_past_the_deaths_heals_within_seconds() {
    // Push-pull alone (every 30 s, with one dead member) takes 15 s or so
    // here and would miss this deadline in nearly every run; pinging dead
    // members brings both sides back in about a second.
    let limit = 5 * T;
    for (n, cut) in [(5, 2), (8, 3)] {
        let (a, b): (Vec<usize>, Vec<usize>) = ((0..cut).collect(), (cut..n).collect());
        for seed in 0..5 {
            let mut sim = converged_cluster(n, 20 + seed);
            partition_past_the_deaths(&mut sim, &a, &b);
            let took = sim.run_until_true(limit, STEP, Sim::converged);
            assert!(
                took.is_some(),
                "{n} nodes, seed {seed}: not all alive {limit:?} after the heal"
            );
        }
    }
}

#[test]
fn with_dead_member_pings_off_push_pull_alone_heals_a_partition() {
    let config = SwimConfig {
        dead_probe_interval: Duration::ZERO,
        ..SwimConfig::default()
    };
    let mut sim = converged_cluster_with(5, config, 6);
    partition_past_the_deaths(&mut sim, &[0, 1], &[2, 3, 4]);
    let push_pull = SwimConfig::default().push_pull_interval;
    sim.run_until_true(push_pull * 2 + 5 * T, STEP, Sim::converged)
        .expect("push-pull heals the partition");
    let dead_probes: u64 = sim
        .nodes
        .iter()
        .map(|n| n.metrics.swim_dead_probes.get())
        .sum();
    assert_eq!(dead_probes, 0);
}

#[test]
fn a_crashed_member_is_pinged_now_and_then_and_its_silence_accuses_no_one() {
    let mut sim = converged_cluster(8, 13);
    sim.crash(3);
    sim.run_until_true(Duration::from_secs(60), STEP, |s| {
        s.all_see(3, MemberState::Dead)
    })
    .expect("everyone declares the crashed member dead");
    // Let the acks that follow the failed probes bring awareness back down.
    sim.run_for(10 * T);
    let sum = |sim: &Sim, f: fn(&dnd::metrics::Metrics) -> u64| -> u64 {
        sim.nodes.iter().map(|n| f(&n.metrics)).sum()
    };
    let suspicions = sum(&sim, |m| m.swim_suspicions_raised.get());
    let failures = sum(&sim, |m| m.swim_probe_failures.get());
    let pinged = sum(&sim, |m| m.swim_dead_probes.get());
    let incarnation = sim.view(0, 3).unwrap().incarnation;
    let window = Duration::from_secs(60);
    let end = sim.now() + window;
    while sim.now() < end {
        sim.run_for(STEP);
        for i in sim.running() {
            assert_eq!(sim.nodes[i].swim.awareness(), 0, "node {i}");
        }
    }
    assert_eq!(sum(&sim, |m| m.swim_suspicions_raised.get()), suspicions);
    assert_eq!(sum(&sim, |m| m.swim_probe_failures.get()), failures);
    assert!(sim.all_see(3, MemberState::Dead));
    assert_eq!(sim.view(0, 3).unwrap().incarnation, incarnation);
    assert_eq!(sim.false_deaths(), 0);
    // Each of the 7 others pings it about once a second, and no more.
    let pinged = sum(&sim, |m| m.swim_dead_probes.get()) - pinged;
    let most = 7 * window.as_secs() * 2;
    assert!(
        (7 * window.as_secs() / 2..=most).contains(&pinged),
        "{pinged} pings in {window:?}"
    );
}

#[test]
fn a_healthy_cluster_pings_no_dead_member() {
    let mut sim = converged_cluster(8, 14);
    sim.run_for(Duration::from_secs(120));
    let pinged: u64 = sim
        .nodes
        .iter()
        .map(|n| n.metrics.swim_dead_probes.get())
        .sum();
    assert_eq!(pinged, 0);
}

#[test]
fn a_restarted_member_rejoins_above_the_incarnation_of_its_death() {
    let mut sim = converged_cluster(6, 8);
    sim.crash(4);
    sim.run_until_true(Duration::from_secs(60), STEP, |s| {
        s.all_see(4, MemberState::Dead)
    })
    .unwrap();
    let dead_at = sim.view(0, 4).unwrap().incarnation;
    let seed = sim.nodes[0].addr;
    sim.restart(4, vec![seed]);
    sim.run_until_true(Duration::from_secs(10), STEP, |s| {
        s.all_see(4, MemberState::Alive)
    })
    .expect("the restarted member is alive everywhere");
    assert!(sim.view(1, 4).unwrap().incarnation > dead_at);
}

#[test]
fn a_join_reaches_every_member_of_a_32_node_cluster_within_three_seconds() {
    let mut sim = converged_cluster(32, 9);
    let seed = sim.nodes[17].addr;
    let newcomer = sim.add_node(vec![seed]);
    let took = sim
        .run_until_true(Duration::from_secs(10), Duration::from_millis(50), |s| {
            s.all_see(newcomer, MemberState::Alive)
        })
        .expect("the newcomer is known to all");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn no_datagram_exceeds_the_limit_even_in_a_large_cluster() {
    let mut sim = converged_cluster(100, 10);
    sim.run_for(Duration::from_secs(60));
    assert!(sim.max_datagram() <= 1400, "{}", sim.max_datagram());
    assert!(
        sim.max_datagram() > 1000,
        "push-pull parts are packed near the limit"
    );
    let refused: u64 = sim
        .nodes
        .iter()
        .map(|n| n.metrics.gossip_oversized_not_sent.get())
        .sum();
    assert_eq!(refused, 0);
}

#[test]
fn acks_and_nacks_for_probes_never_sent_are_dropped_and_counted() {
    let metrics = std::sync::Arc::new(Metrics::default());
    let codec = Codec::new("dnd", 1400);
    let local = dnd::member::Member {
        id: NodeId::from_u64(1),
        gossip_addr: "127.0.0.1:5000".parse().unwrap(),
        http_addr: "127.0.0.1:6000".parse().unwrap(),
        state: MemberState::Alive,
        incarnation: 0,
    };
    let now = Instant::now();
    let mut swim = Swim::new(
        local,
        SwimConfig::default(),
        codec.clone(),
        vec![],
        1,
        metrics.clone(),
        now,
    );
    let from = "127.0.0.1:5001".parse().unwrap();
    for message in [
        // A forged ack that would plant a member, were it believed.
        GossipMessage::Ack {
            seq: 12345,
            rumors: vec![dnd::member::Rumor::about(dnd::member::Member {
                id: NodeId::from_u64(3),
                gossip_addr: "127.0.0.1:5003".parse().unwrap(),
                http_addr: "127.0.0.1:6003".parse().unwrap(),
                state: MemberState::Alive,
                incarnation: 0,
            })],
        },
        GossipMessage::Nack { seq: 9 },
    ] {
        let bytes = codec
            .encode(&Datagram {
                sender: NodeId::from_u64(2),
                message,
            })
            .unwrap();
        swim.handle_bytes(from, &bytes, now);
    }
    assert_eq!(metrics.gossip_unexpected_replies.get(), 2);
    assert!(swim.take_outgoing().is_empty(), "nothing is answered");
    assert!(!swim.has_peers(), "no one was learned from them");
    assert!(
        swim.take_changes().is_empty(),
        "the forged ack's rumor was not applied"
    );
}

#[test]
fn a_slow_node_stretches_its_own_timeouts_instead_of_accusing() {
    let mut sim = converged_cluster(8, 12);
    // Everything this node sends is lost: it hears others' probes but none
    // of its own probes or nacks come back.
    for j in 0..8 {
        if j != 0 {
            sim.faults.blocked.insert((0, j));
        }
    }
    sim.run_for(Duration::from_secs(10));
    assert!(
        sim.nodes[0].swim.awareness() > 0,
        "it noticed its own trouble"
    );
}

#[test]
fn an_indirect_probe_saves_a_member_whose_direct_link_is_cut() {
    let mut sim = converged_cluster(8, 11);
    // Node 0 and node 1 cannot reach each other; everyone else can reach both.
    sim.faults.blocked.insert((0, 1));
    sim.faults.blocked.insert((1, 0));
    let relayed_before: u64 = sim
        .nodes
        .iter()
        .map(|n| n.metrics.swim_indirect_probes.get())
        .sum();
    run_without_false_deaths(&mut sim, Duration::from_secs(120));
    let relayed: u64 = sim
        .nodes
        .iter()
        .map(|n| n.metrics.swim_indirect_probes.get())
        .sum::<u64>()
        - relayed_before;
    assert!(relayed > 0, "the cut link was bridged by ping-req");
    assert_eq!(sim.view(0, 1).map(|m| m.state), Some(MemberState::Alive));
    assert_eq!(sim.view(1, 0).map(|m| m.state), Some(MemberState::Alive));
}

#[test]
fn after_half_a_minute_of_flapping_partitions_every_member_is_alive_within_seconds() {
    use rand::{Rng, SeedableRng};
    for seed in 0..10u64 {
        let mut sim = converged_cluster(5, seed);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let end = sim.now() + Duration::from_secs(30);
        // Random 1|4 and 2|3 splits, a new one every 2 to 4 s: each node's
        // local health climbs, stretching its probe period, and rumors of
        // suspicion are spent while their subjects are cut off.
        while sim.now() < end {
            sim.heal();
            let minority = if rng.random_bool(0.5) { 2 } else { 1 };
            let mut order: Vec<usize> = (0..5).collect();
            for i in 0..5 {
                let j = rng.random_range(i..5);
                order.swap(i, j);
            }
            sim.partition(&order[..minority], &order[minority..]);
            sim.run_for(Duration::from_millis(rng.random_range(2000..4000)));
        }
        sim.heal();
        let took = sim.run_until_true(Duration::from_secs(60), STEP, Sim::converged);
        assert!(
            took.is_some_and(|t| t <= Duration::from_secs(5)),
            "seed {seed}: every member alive again after {took:?}"
        );
    }
}
