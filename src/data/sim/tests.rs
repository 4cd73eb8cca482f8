//! The simulation's own tests: a seed replays exactly, and the checker
//! sees what it must (a vanished write, a value back after its purge).

use super::*;

#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig {
        duration_ms: 8_000,
        drain_ms: 5_000,
        ..SimConfig::default()
    };
    let (a, b) = (run_seed(&config, 7), run_seed(&config, 7));
    assert_eq!(a.writes_acknowledged, b.writes_acknowledged);
    assert_eq!(a.reads_answered, b.reads_answered);
    assert_eq!(a.faults, b.faults);
    assert_eq!(
        (&a.lost, &a.resurrected, &a.unknown, &a.reused_dots),
        (&b.lost, &b.resurrected, &b.unknown, &b.reused_dots)
    );
    assert!(a.writes_acknowledged > 0, "{a:?}");
}

#[test]
fn the_checker_sees_a_write_that_vanished() {
    let config = SimConfig {
        duration_ms: 3_000,
        drain_ms: 2_000,
        drop_rate: 0.0,
        duplicate_rate: 0.0,
        fault_every_ms: 1_000_000,
        joins: 0,
        departures: 0,
        tombstone_grace_ms: 1_000_000,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(config, 3);
    for client in 0..sim.clients.len() {
        sim.at(0, Event::ClientNext { client });
    }
    let end = sim.config.duration_ms + sim.config.drain_ms;
    sim.run_until(end);
    sim.check();
    assert!(sim.report.is_clean(), "{:?}", sim.report);
    // Forget every copy of a key: what a bug losing writes would leave.
    let key = sim
        .acknowledged
        .iter()
        .next()
        .expect("a write acknowledged")
        .0
        .clone();
    for node in &mut sim.nodes {
        node.copies.remove(&key);
    }
    sim.report.lost.clear();
    sim.check();
    assert!(
        sim.report.lost.iter().any(|(k, _)| *k == key),
        "the latest acknowledged write of {key} is missing and not reported: {:?}",
        sim.report
    );
}

#[test]
fn the_checker_sees_a_deleted_value_come_back_after_its_purge() {
    let config = SimConfig {
        duration_ms: 40_000,
        swim: false,
        ..SimConfig::default()
    };
    // The first seed that collects an acknowledged delete which superseded
    // a value.
    let (mut sim, key, dot) = (1..=60)
        .find_map(|seed| {
            let mut sim = Sim::new(config.clone(), seed);
            sim.start();
            let end = sim.config.duration_ms + sim.config.drain_ms;
            sim.run_until(end);
            // What a stale copy handed back after a purge would leave: a
            // value an acknowledged, collected delete had superseded.
            let found = sim
                .purged
                .iter()
                .filter(|entry| sim.acknowledged.contains(entry))
                .find_map(|(key, tombstone)| {
                    let context = &sim.issued[&(key.clone(), *tombstone)];
                    sim.issued
                        .keys()
                        .filter(|(k, d)| k == key && context.covers(*d))
                        .map(|(_, d)| *d)
                        .min()
                        .map(|dot| (key.clone(), dot))
                });
            found.map(|(key, dot)| (sim, key, dot))
        })
        .expect("an acknowledged delete that superseded a value was collected");
    let mut before = VersionVector::new();
    if dot.counter > 1 {
        before.add(Dot {
            node: dot.node,
            counter: dot.counter - 1,
        });
    }
    let mut stale = Object::new();
    let written = stale
        .write(
            dot.node,
            &before,
            crate::version::Payload::Value {
                content_type: "text/plain".into(),
                bytes: b"stale".to_vec(),
                expires_at_ms: None,
            },
        )
        .unwrap();
    assert_eq!(written, dot);
    // The homes hold only the stale value, as if nothing newer had been
    // written since the delete.
    let home = sim.final_home(&key);
    for id in &home {
        let other = sim.index_of(*id);
        sim.nodes[other].copies.remove(&key);
    }
    let node = sim.index_of(home[0]);
    sim.nodes[node].copies.insert(key.clone(), stale);
    sim.report = SimReport::default();
    sim.check();
    assert!(
        sim.report
            .resurrected
            .iter()
            .any(|(k, d)| *k == key && *d == dot),
        "{:?}",
        sim.report
    );
}
