//! What `kv.rs` needs to load its nodes: the load tool's (`dnd bench`,
//! `src/load/`) HTTP/1.1 client and open-loop pacer and its latency
//! histogram, and small helpers for `/proc` and test values.
//!
//! A bench includes this file with `mod support;` and may use only part of
//! it.
#![allow(dead_code)]

// ---------------------------------------------------------------------------
// HTTP: the load tool's client for its closed and open loops.

pub use dnd::load::client::Fail;
pub use dnd::load::conn::{release, Conn, Released};

// Each bench uses part of this file (see the module doc).
#[allow(unused_imports)]
pub use dnd::dev::{free_port, http_get};

// ---------------------------------------------------------------------------
// Latency histogram: the load tool's (`dnd bench`), so that both report
// percentiles the same way.

pub use dnd::load::histogram::Histogram;

// ---------------------------------------------------------------------------
// Helpers

/// User and system CPU time of the processes `pids` (`self` for this one)
/// so far, in seconds, from `/proc` (Linux; clock ticks of 10 ms).
pub fn cpu_seconds(pids: &[String]) -> Option<f64> {
    let mut ticks = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name: state is the first, utime the 12th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(ticks as f64 / 100.0)
}

/// The load tool's values, so that the benches write what it writes.
pub use dnd::load::value_of;
