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
//! clocks' largest skew and the tombstone grace, `DND_SIM_SWIM=0` the late
//! omniscient failure detector in place of SWIM. A failing seed prints the
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
        swim: env("DND_SIM_SWIM").map_or(defaults.swim, |v| v != 0),
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

/// The defaults with the late omniscient failure detector in place of
/// SWIM, as the seeds below were found.
fn omniscient() -> SimConfig {
    SimConfig {
        swim: false,
        ..SimConfig::default()
    }
}

fn assert_clean(config: &SimConfig, seed: u64) {
    let report = run_seed(config, seed);
    assert!(
        report.is_clean(),
        "{}",
        replay_line(&report, config.duration_ms / 1000)
    );
}

/// A stand-in's copy repaired by a read: first traced on seed 86 of an
/// earlier run (30 s, 5 s grace), where a coordinator standing in for a
/// down home replica read-repaired its own copy, which then held a value
/// with no hint; once the key's tombstone was collected, a later read found
/// that value there and repaired it back into the homes. Without the fix
/// seed 209 brings a deleted value back (and reuses no dot). Fixed in
/// `data::read`: only home replicas are repaired.
#[test]
fn seed_209_a_stand_in_keeps_no_repaired_copy() {
    assert_clean(&omniscient(), 209);
}

/// A move to nobody: first traced on seed 93 of an earlier run, where a
/// node a join moved a key away from saw none of the key's new home
/// replicas up, planned a move to nobody, and its job finished as done with
/// its stale copy left in place; a ring change 47 s later handed that copy
/// over after the key's tombstone had been collected, and the deleted value
/// came back. Without the fix seed 41 brings a deleted value back (and
/// reuses no dot). Fixed in `data::handoff`: with no new home up, the move
/// names them all, so the job fails and runs again.
#[test]
fn seed_41_a_displaced_copy_is_handed_over_even_if_no_new_home_was_up() {
    assert_clean(&omniscient(), 41);
}

/// Dots reissued after a collection: a dot was counted from the
/// coordinator's copy of the key, so once a key's tombstone was collected
/// everywhere, its next blind write through a node that wrote it before
/// issued that node's counter 1 again, and a client still holding a
/// context from before the purge superseded the new value unseen. Nearly
/// every failing seed of the first sweeps was this. Fixed by one rising
/// counter per node (`version::Object::write_above`, the Store's
/// `LocalCopies`; unit test `a_counter_is_never_issued_twice_...`).
#[test]
fn seed_7_no_dot_is_issued_twice_after_a_collection() {
    assert_clean(&omniscient(), 7);
}

/// The same counting from a copy that is gone, without a collection: a
/// node dropped its copy after a handoff, came back knowing only itself,
/// and issued one of its old dots again. Fixed as seed 7.
#[test]
fn seed_9_a_node_that_dropped_its_copy_issues_no_dot_twice() {
    assert_clean(&omniscient(), 9);
}

/// A restarted node's Membership knows only itself until it rejoins, and
/// the Store coordinated on that ring of one, so W resolved to 1: node 3
/// acknowledged a W=2 write of k0 with its own copy alone and was then
/// removed, losing the write. Fixed: a node that heard of no other member
/// keeps the ring its data was placed for
/// (`data::placement::keeps_settled_ring`).
#[test]
fn seed_234_a_restarted_node_acknowledges_no_write_with_one_copy() {
    assert_clean(&SimConfig::default(), 234);
}

/// Hints for an owner that left or was removed were skipped as "not alive"
/// before `moved_to` was asked, so they stayed for ever, and a ring-change
/// job leaves a hinted key to its hint: the copy stayed off its homes.
/// Fixed in the Store's `HintKeeper::deliver` (and its model here): hints
/// move whether their owner is up or not.
#[test]
fn seed_408_a_hint_for_a_departed_owner_pins_no_copy() {
    assert_clean(&SimConfig::default(), 408);
}

/// A hint dropped once delivered although the copy had changed since it was
/// sent (a newer write this stand-in also took): the newer version stayed
/// on a stand-in no repair looks at, and was handed over after the key's
/// deletion was collected. Fixed in `data::hints::after_delivery`: the hint
/// stays for the next round. (Seeds replay the simulator they were found
/// with; the unit tests beside each fix are what keep it fixed.)
#[test]
fn seed_139_a_changed_copy_keeps_its_hint() {
    assert_clean(&SimConfig::default(), 139);
}

/// A stand-in's copy of a deleted value, delivered by its hint after every
/// home had purged the tombstone: taken as new. Fixed in `data::purge`: a
/// replica drops any copy the purged tombstones' history covers, for at
/// least the tombstone grace.
#[test]
fn seed_421_a_deleted_value_delivered_after_the_purge_stays_deleted() {
    assert_clean(&SimConfig::default(), 421);
}
