//! An engine that times every call of the engine it wraps, for the
//! `dnd_storage_operation_duration_seconds` histogram.
//!
//! Owns nothing but the histograms' handles: every call goes to the
//! wrapped engine unchanged, its result passed back as it is.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

use super::{StorageEngine, StorageResult};
use crate::metrics::Latencies;

pub struct Timed {
    engine: Arc<dyn StorageEngine>,
    get: Histogram,
    put: Histogram,
    put_many: Histogram,
    delete: Histogram,
    scan: Histogram,
}

impl Timed {
    pub fn new(engine: Arc<dyn StorageEngine>, latencies: &Latencies) -> Self {
        Timed {
            engine,
            get: latencies.storage_op("get"),
            put: latencies.storage_op("put"),
            put_many: latencies.storage_op("put_many"),
            delete: latencies.storage_op("delete"),
            scan: latencies.storage_op("scan"),
        }
    }
}

fn timed<T>(histogram: &Histogram, call: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = call();
    histogram.observe(started.elapsed().as_secs_f64());
    result
}

impl StorageEngine for Timed {
    fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        timed(&self.get, || self.engine.get(key))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> StorageResult<()> {
        timed(&self.put, || self.engine.put(key, value))
    }

    fn put_many(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> StorageResult<()> {
        timed(&self.put_many, || self.engine.put_many(entries))
    }

    fn delete(&self, key: &[u8]) -> StorageResult<()> {
        timed(&self.delete, || self.engine.delete(key))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        timed(&self.scan, || self.engine.scan_prefix(prefix))
    }

    fn scan_after(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        timed(&self.scan, || self.engine.scan_after(prefix, after, limit))
    }

    fn approximate_len(&self) -> u64 {
        self.engine.approximate_len()
    }

    fn approximate_bytes(&self) -> u64 {
        self.engine.approximate_bytes()
    }

    fn name(&self) -> &'static str {
        self.engine.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::storage::MemoryEngine;

    #[test]
    fn every_call_is_counted_under_its_operation_and_passed_through() {
        let metrics = Metrics::default();
        let engine = Timed::new(Arc::new(MemoryEngine::default()), &metrics.latencies);
        crate::storage::check_engine_contract(&engine);
        engine.put(b"a", b"1").unwrap();
        assert_eq!(engine.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        let text = metrics.render_prometheus(&Default::default());
        let count = |op: &str| {
            let name = format!("dnd_storage_operation_duration_seconds_count{{op=\"{op}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&name)?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        for op in ["get", "put", "put_many", "delete", "scan"] {
            assert!(count(op) >= 1, "{op} not timed:\n{text}");
        }
    }
}
