//! Seeds of the data-path simulation (`dnd::data::sim`): whole clusters of
//! coordinators and replicas under dropped, duplicated and reordered
//! messages, partitions both ways and one way, and crashes, each seed
//! checked for lost, resurrected and unknown versions.
//!
//! `DND_SIM_SEED=N` replays one seed; `DND_SIM_SEEDS` (default 200) and
//! `DND_SIM_SECONDS` (virtual seconds a seed's clients run, default 30) set
//! the sweep. A failing seed prints the line that replays it.

use std::time::Instant;

use dnd::data::sim::{run_seed, SimConfig, SimReport};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn seeds_of_a_hostile_network_lose_and_resurrect_nothing() {
    let config = SimConfig {
        duration_ms: env("DND_SIM_SECONDS").unwrap_or(30) * 1000,
        ..SimConfig::default()
    };
    let seeds: Vec<u64> = match env("DND_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env("DND_SIM_SEEDS").unwrap_or(200)).collect(),
    };
    let started = Instant::now();
    let reports: Vec<SimReport> = seeds.iter().map(|&seed| run_seed(&config, seed)).collect();
    let wall = started.elapsed().as_secs_f64();
    let virtual_s: f64 = reports.iter().map(|r| r.virtual_ms as f64 / 1000.0).sum();
    let mut faults = std::collections::BTreeMap::new();
    for report in &reports {
        for (kind, count) in &report.faults {
            *faults.entry(*kind).or_insert(0u64) += count;
        }
    }
    let acknowledged: u64 = reports.iter().map(|r| r.writes_acknowledged).sum();
    eprintln!(
        "simulation: {} seeds, {virtual_s:.0} virtual s in {wall:.1} s ({:.0}x), {acknowledged} writes acknowledged, faults {faults:?}",
        reports.len(),
        virtual_s / wall.max(1e-9),
    );
    let failed: Vec<&SimReport> = reports.iter().filter(|r| !r.is_clean()).collect();
    for report in &failed {
        eprintln!(
            "DND_SIM_SEED={} DND_SIM_SECONDS={} cargo test --test simulation  # lost {:?} resurrected {:?} unknown {:?} reused {:?}",
            report.seed,
            config.duration_ms / 1000,
            report.lost,
            report.resurrected,
            report.unknown,
            report.reused_dots
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed",
        failed.len(),
        reports.len()
    );
    // The mix really happened.
    for kind in [
        "dropped",
        "duplicated",
        "partition",
        "one_way_partition",
        "crash",
    ] {
        assert!(
            faults.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} injected"
        );
    }
    assert!(acknowledged > 0);
}
