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
    let mut sim = Sim::cluster(n, SwimConfig::default(), seed);
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

#[test]
fn a_healed_partition_converges_again() {
    let mut sim = converged_cluster(5, 6);
    sim.partition(&[0, 1], &[2, 3, 4]);
    sim.run_until_true(Duration::from_secs(60), STEP, |s| {
        s.view(0, 3).is_some_and(|m| m.state == MemberState::Dead)
            && s.view(3, 0).is_some_and(|m| m.state == MemberState::Dead)
    })
    .expect("each side declares the other dead");
    sim.heal();
    let push_pull = SwimConfig::default().push_pull_interval;
    sim.run_until_true(push_pull * 2 + 5 * T, STEP, Sim::converged)
        .expect("push-pull heals the partition");
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
