//! Seeds of the data-path simulation (`dnd::data::sim`): clusters of
//! coordinators and replicas under dropped, duplicated, reordered and
//! long-delayed messages, partitions both ways, one way and non-transitive,
//! crashes, joins, leaves and removals seen late and differently by each
//! node, anti-entropy and tombstone collection on skewed clocks; each seed
//! checked for lost, resurrected and unknown versions and reused dots.
//!
//! `DND_SIM_SEED=N` replays one seed (with `RUST_LOG=dnd::data::sim=debug`,
//! or `=trace` for every message, it tells what happened); `DND_SIM_SEEDS`
//! (default 200) and `DND_SIM_SECONDS` (virtual seconds a seed's clients
//! run, default 60) set the sweep, `DND_SIM_THREADS` how many seeds run at
//! once (default: the cores), `DND_SIM_SKEW_MS` and `DND_SIM_GRACE_MS` the
//! clocks' largest skew and the tombstone grace. A failing seed prints the
//! line that replays it (with the same variables).

use std::collections::BTreeMap;
use std::time::Instant;

use dnd::data::sim::{run_seed, SimConfig, SimReport};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `seeds` on every core; the reports come back in seed order.
fn sweep(config: &SimConfig, seeds: &[u64]) -> Vec<SimReport> {
    let threads = env("DND_SIM_THREADS")
        .map(|t| t.max(1) as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut reports: Vec<SimReport> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                scope.spawn(move || {
                    seeds
                        .iter()
                        .skip(worker)
                        .step_by(threads)
                        .map(|&seed| run_seed(config, seed))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a simulation thread panicked"))
            .collect()
    });
    reports.sort_by_key(|r| r.seed);
    reports
}

fn replay_line(report: &SimReport, seconds: u64) -> String {
    format!(
        "DND_SIM_SEED={} DND_SIM_SECONDS={seconds} cargo test --test simulation  # lost {:?} resurrected {:?} unknown {:?} reused ({} after a collection) {:?}",
        report.seed,
        report.lost,
        report.resurrected,
        report.unknown,
        report.reused_after_a_collection,
        report.reused_dots
    )
}

#[test]
fn seeds_of_a_hostile_network_lose_and_resurrect_nothing() {
    let seconds = env("DND_SIM_SECONDS").unwrap_or(60);
    let defaults = SimConfig::default();
    let config = SimConfig {
        duration_ms: seconds * 1000,
        max_clock_skew_ms: env("DND_SIM_SKEW_MS").unwrap_or(defaults.max_clock_skew_ms),
        tombstone_grace_ms: env("DND_SIM_GRACE_MS").unwrap_or(defaults.tombstone_grace_ms),
        ..defaults
    };
    let seeds: Vec<u64> = match env("DND_SIM_SEED") {
        Some(seed) => {
            // A replay can show what happened: RUST_LOG=dnd::data::sim=debug
            // (or =trace for every message).
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .try_init();
            vec![seed]
        }
        None => (1..=env("DND_SIM_SEEDS").unwrap_or(200)).collect(),
    };
    let started = Instant::now();
    let reports = sweep(&config, &seeds);
    let wall = started.elapsed().as_secs_f64();
    let virtual_s: f64 = reports.iter().map(|r| r.virtual_ms as f64 / 1000.0).sum();
    let mut faults = BTreeMap::new();
    for report in &reports {
        for (kind, count) in &report.faults {
            *faults.entry(*kind).or_insert(0u64) += count;
        }
    }
    let acknowledged: u64 = reports.iter().map(|r| r.writes_acknowledged).sum();
    let failed: Vec<&SimReport> = reports.iter().filter(|r| !r.is_clean()).collect();
    eprintln!(
        "simulation: {} seeds, {virtual_s:.0} virtual s in {wall:.1} s wall ({:.0} virtual s per wall s), {acknowledged} writes acknowledged, {} seeds failed",
        reports.len(),
        virtual_s / wall.max(1e-9),
        failed.len(),
    );
    for (kind, count) in &faults {
        eprintln!("simulation fault: {kind:<26} {count:>10}");
    }
    for report in &failed {
        eprintln!("{}", replay_line(report, seconds));
    }
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed",
        failed.len(),
        reports.len()
    );
    // The mix really happened.
    if seeds.len() >= 20 {
        for kind in [
            "dropped",
            "duplicated",
            "long_delay",
            "partition",
            "one_way_partition",
            "non_transitive_partition",
            "crash",
            "clock_skew",
            "join",
            "leave",
            "removal",
            "purge",
        ] {
            assert!(
                faults.get(kind).copied().unwrap_or(0) > 0,
                "no {kind} injected"
            );
        }
    }
    assert!(acknowledged > 0);
}

fn assert_clean(config: &SimConfig, seed: u64) {
    let report = run_seed(config, seed);
    assert!(
        report.is_clean(),
        "{}",
        replay_line(&report, config.duration_ms / 1000)
    );
}

/// A stand-in's copy repaired by a read: first seen with seed 86 (30 s,
/// 5 s grace, clocks within 1 s), where a coordinator standing in for a
/// down home replica read-repaired its own copy, which then held a value
/// with no hint; once the key's tombstone was collected, a later read found
/// that value there and repaired it back into the homes. With the defaults
/// seed 72 resurrects a deleted value the same way without the fix. Fixed
/// in `data::read`: only home replicas are repaired.
#[test]
fn seed_72_a_stand_in_keeps_no_repaired_copy() {
    assert_clean(&SimConfig::default(), 72);
}

/// Seed 93 (60 s, defaults): a node a join moved a key away from saw none
/// of the key's new home replicas up, planned a move to nobody, and its job
/// finished as done with its stale copy left in place; a ring change 47 s
/// later handed that copy over after the key's tombstone had been
/// collected, and the deleted value came back. Fixed in `data::handoff`:
/// with no new home up, the move names them all, so the job fails and
/// runs again.
#[test]
fn seed_93_a_displaced_copy_is_handed_over_even_if_no_new_home_was_up() {
    assert_clean(&SimConfig::default(), 93);
}

/// Open, in code this branch may not change (`version::Object::write` and
/// the Store's `write_local`): a dot is counted from the coordinator's copy
/// of the key, so once a key's tombstone is collected everywhere, its next
/// blind write through a node that wrote it before issues that node's
/// counter 1 again. A client still holding a context from before the purge
/// then supersedes the new value without having seen it, and a stale copy
/// with the old dot is taken for the new one. Nearly every failing seed of
/// the sweep is this; it needs a counter that survives the copy (a durable
/// per-node floor, for instance).
#[test]
#[ignore = "open bug: dots reissued after a tombstone is collected"]
fn seed_4_no_dot_is_issued_twice_after_a_collection() {
    assert_clean(&SimConfig::default(), 4);
}

/// Open, in the Store's `ContextLookedUp` (with `write_local`): node 1 homed
/// k9 and issued its dots, a join moved k9 away and node 1 dropped its
/// copy after the handoff, a removal made it a home again, and at 51 s it
/// coordinated a blind write while the other homes were down in its view:
/// the look-up answered nothing, the empty context counted as covered, and
/// it issued (node 1, 1) a second time. `every_home_answered` is known
/// there but not used when the context is empty.
#[test]
#[ignore = "open bug: a home again after a handoff reissues its dots"]
fn seed_138_a_node_home_again_issues_no_dot_twice() {
    assert_clean(&SimConfig::default(), 138);
}
