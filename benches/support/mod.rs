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

/// The load tool's reading of a process's CPU time.
pub use dnd::load::cpu_seconds;

/// The load tool's values, so that the benches write what it writes.
pub use dnd::load::value_of;
