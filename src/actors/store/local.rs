//! This node's own copies of the keys it holds: reading, merging,
//! versioning, dropping and purging them in the storage engine, with the
//! hash trees kept in step with every change.
//!
//! Owns the engine's data and meta entries (the hint marks are
//! [`super::hinted`]'s), the trees ([`Trees`]) and the memory of tombstones
//! purged lately. Every change to a copy goes through here, so the trees
//! never drift from storage. Never talks to another node; what a copy is
//! merged with, and when, the Store decides.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::trees::Trees;
use super::watch::Watches;
use super::{StoreError, SIBLINGS_WARNING};
use crate::data::layout::{
    bucket_prefix, data_key, key_of_data_key, key_of_order_key, order_key, DATA_PREFIX, META_PREFIX,
};
use crate::data::purge::PurgedTombstones;
use crate::data::scan::ReplicaPage;
use crate::key::Key;
use crate::merkle::entry_hash;
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::replication::Replication;
use crate::ring::Ring;
use crate::storage::StorageEngine;
use crate::version::{Dot, Object, Payload, VersionVector};

const SETTLED_RING: &[u8] = b"mring";
/// The highest dot counter this node may have issued, kept a block ahead.
const DOT_COUNTERS: &[u8] = b"mdots";
/// Counters reserved per write of [`DOT_COUNTERS`].
const COUNTER_BLOCK: u64 = 1 << 16;
/// Present once every held key has its key-order mark (a data directory
/// from before listings gets them at its first start).
const ORDER_INDEX_BUILT: &[u8] = b"morder";
/// Keys marked per step while building the key-order marks.
const ORDER_BUILD_STEP: usize = 4096;

/// A step of a walk over the copies: the last data key passed (`None`:
/// the walk is over) and the copies among them.
pub(super) type Walked = (Option<Vec<u8>>, Vec<(Key, Object)>);

/// The bounds a versioned write must stay within.
#[derive(Clone, Copy, Debug)]
pub(super) struct WriteLimits {
    pub max_siblings: usize,
    pub max_object_bytes: usize,
}

pub(super) struct LocalCopies {
    engine: Arc<dyn StorageEngine>,
    metrics: SharedMetrics,
    local_id: NodeId,
    limits: WriteLimits,
    trees: Trees,
    /// Tombstones purged here lately, so a copy still on its way is not
    /// taken back.
    purged: PurgedTombstones,
    counters: Counters,
    /// Told of every change to a copy, for the watches waiting on it.
    watches: Arc<Watches>,
}

/// The dot counters this node issues: one rising sequence over every key,
/// so that no counter is issued twice for a key, even once the copies that
/// named it are gone (tombstones collected, a copy handed to the key's new
/// homes). Storage holds a mark a block ahead of what was issued, written
/// before any counter past it is; a restart resumes above the mark, and
/// above the wall clock in microseconds, in case the mark's last write was
/// lost with the machine.
struct Counters {
    issued: u64,
    reserved: u64,
}

impl LocalCopies {
    pub(super) fn new(
        engine: Arc<dyn StorageEngine>,
        metrics: SharedMetrics,
        local_id: NodeId,
        replication: Replication,
        limits: WriteLimits,
        purge_memory: Duration,
        watches: Arc<Watches>,
    ) -> Self {
        let reserved = match engine.get(&meta_key(DOT_COUNTERS)) {
            Ok(Some(bytes)) => bytes
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or_else(|_| {
                    tracing::warn!("the dot counter mark does not decode; resuming from the clock");
                    0
                }),
            Ok(None) => 0,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the dot counter mark; resuming from the clock");
                0
            }
        };
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let issued = reserved.max(clock);
        LocalCopies {
            engine,
            metrics,
            local_id,
            limits,
            trees: Trees::new(local_id, replication),
            purged: PurgedTombstones::new(purge_memory),
            counters: Counters {
                issued,
                reserved: issued,
            },
            watches,
        }
    }

    /// Gives every held key its key-order mark, once per data directory:
    /// one from before listings existed has none.
    pub(super) fn ensure_order_index(&self) -> Result<(), StoreError> {
        if self.engine.get(&meta_key(ORDER_INDEX_BUILT))?.is_some() {
            return Ok(());
        }
        let (mut cursor, mut marked) = (None::<Vec<u8>>, 0usize);
        loop {
            let step =
                self.engine
                    .scan_after(&[DATA_PREFIX], cursor.as_deref(), ORDER_BUILD_STEP)?;
            let Some((last, _)) = step.last() else { break };
            cursor = Some(last.clone());
            for (raw, _) in &step {
                if let Some(key) = key_of_data_key(raw) {
                    self.engine.put(&order_key(key), &[])?;
                    marked += 1;
                }
            }
        }
        self.engine.put(&meta_key(ORDER_INDEX_BUILT), &[])?;
        if marked > 0 {
            tracing::info!(
                keys = marked,
                "marked the held keys in key order for listings"
            );
        }
        Ok(())
    }

    /// Stores `object` as the copy of `key`; `was_held` whether a copy was
    /// there before. The key-order mark goes first, so a crash between the
    /// two leaves a mark without data (skipped by listings), never data a
    /// listing cannot find.
    fn store(&self, key: &str, was_held: bool, object: &Object) -> Result<(), StoreError> {
        if !was_held {
            self.engine.put(&order_key(key), &[])?;
        }
        self.engine.put(&data_key(key), &object.encode())?;
        self.watches.changed(key);
        Ok(())
    }

    /// Up to `limit` held keys that start with `prefix` and sort after
    /// `start_after`, in key order, with their copies, and the last key
    /// passed if there may be more after it (`None`: nothing more). Copies
    /// are stripped of their values' bytes unless `with_values`.
    pub(super) fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        with_values: bool,
    ) -> Result<ReplicaPage, StoreError> {
        let after = start_after.map(order_key);
        let marks = self
            .engine
            .scan_after(&order_key(prefix), after.as_deref(), limit)?;
        let more_after = (marks.len() == limit)
            .then(|| marks.last())
            .flatten()
            .and_then(|(raw, _)| key_of_order_key(raw))
            .and_then(|key| Key::new(key).ok());
        let mut copies = Vec::with_capacity(marks.len());
        for (raw, _) in &marks {
            let Some(key) = key_of_order_key(raw).and_then(|k| Key::new(k).ok()) else {
                continue;
            };
            let object = match self.read(&key) {
                Ok(object) => object,
                Err(e) => {
                    tracing::warn!(%key, error = %e, "a listing skips a copy it cannot read");
                    continue;
                }
            };
            if object.is_empty() {
                continue;
            }
            let object = if with_values {
                object
            } else {
                object.without_value_bytes()
            };
            copies.push((key, object));
        }
        Ok(ReplicaPage { copies, more_after })
    }

    /// Records that counters up to `counter` may be issued, a block ahead,
    /// before one is.
    fn reserve(&mut self, counter: u64) -> Result<(), StoreError> {
        if counter <= self.counters.reserved {
            return Ok(());
        }
        let mark = counter.saturating_add(COUNTER_BLOCK);
        self.engine
            .put(&meta_key(DOT_COUNTERS), &mark.to_be_bytes())?;
        self.counters.reserved = mark;
        Ok(())
    }

    /// Keys held, from the engine's own count of its entries: each held
    /// key is a data entry and a key-order mark; hints and the Store's
    /// few own records are set aside. As approximate as that count.
    pub(super) fn approximate_keys(&self, hints: usize) -> u64 {
        let entries = self.engine.approximate_len();
        let own = self
            .engine
            .scan_after(&[META_PREFIX], None, 64)
            .map_or(0, |records| records.len());
        entries.saturating_sub((hints + own) as u64) / 2
    }

    pub(super) fn engine(&self) -> &Arc<dyn StorageEngine> {
        &self.engine
    }

    pub(super) fn trees(&self) -> &Trees {
        &self.trees
    }

    pub(super) fn trees_mut(&mut self) -> &mut Trees {
        &mut self.trees
    }

    pub(super) fn read(&self, key: &str) -> Result<Object, StoreError> {
        match self.engine.get(&data_key(key))? {
            Some(bytes) => Ok(Object::decode(&bytes)?),
            None => Ok(Object::new()),
        }
    }

    /// Folds `incoming` into this node's copy; writes only if it changed.
    /// Returns the copy now held and whether it changed.
    pub(super) fn merge(
        &mut self,
        key: &str,
        incoming: &Object,
    ) -> Result<(Object, bool), StoreError> {
        let mut object = self.read(key)?;
        if self.purged.absorbs(key, incoming, Instant::now()) {
            self.metrics.tombstones_refused_after_purge.inc();
            return Ok((object, false));
        }
        let before = entry(key, &object);
        if !object.merge(incoming) {
            return Ok((object, false));
        }
        self.store(key, before.is_some(), &object)?;
        self.trees.note(key, before, entry(key, &object));
        Ok((object, true))
    }

    /// Versions a client write against this node's copy, superseding what
    /// `context` names, and stores it. Returns the context of the new
    /// version and the object now held.
    pub(super) fn version(
        &mut self,
        key: &str,
        context: &VersionVector,
        payload: Payload,
    ) -> Result<(VersionVector, Object), StoreError> {
        let mut object = self.read(key)?;
        let before = entry(key, &object);
        let dot = object.write_above(self.local_id, self.counters.issued, context, payload)?;
        self.reserve(dot.counter)?;
        self.counters.issued = dot.counter;
        self.within_limits(key, &object)?;
        self.store(key, before.is_some(), &object)?;
        self.trees.note(key, before, entry(key, &object));
        let mut written = context.clone();
        written.add(dot);
        Ok((written, object))
    }

    /// Versions many client writes of distinct keys in one pass and one
    /// storage write, each as [`LocalCopies::version`] would. `None` for a
    /// write whose context this copy does not hold (it takes the single
    /// path, which looks the context up). If storage fails, every write
    /// fails and nothing changed.
    pub(super) fn version_many(
        &mut self,
        writes: &[(&str, &VersionVector, &Payload)],
    ) -> Vec<Option<Result<(VersionVector, Object), StoreError>>> {
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut staged = Vec::new();
        let mut issued = self.counters.issued;
        for &(key, context, payload) in writes {
            let mut object = match self.read(key) {
                Ok(object) => object,
                Err(e) => {
                    outcomes.push(Some(Err(e)));
                    continue;
                }
            };
            if !object.clock().descends(context) {
                outcomes.push(None);
                continue;
            }
            let before = entry(key, &object);
            let dot = match object.write_above(self.local_id, issued, context, payload.clone()) {
                Ok(dot) => dot,
                Err(e) => {
                    outcomes.push(Some(Err(e.into())));
                    continue;
                }
            };
            issued = dot.counter;
            if let Err(e) = self.within_limits(key, &object) {
                outcomes.push(Some(Err(e)));
                continue;
            }
            let mut written = context.clone();
            written.add(dot);
            staged.push((outcomes.len(), key, before, object.clone()));
            outcomes.push(Some(Ok((written, object))));
        }
        let mut entries = Vec::with_capacity(staged.len() * 2);
        for (_, key, before, object) in &staged {
            if before.is_none() {
                entries.push((order_key(key), Vec::new()));
            }
            entries.push((data_key(key), object.encode()));
        }
        let stored = self
            .reserve(issued)
            .and_then(|()| Ok(self.engine.put_many(&entries)?));
        if let Err(e) = stored {
            let reason = e.to_string();
            for (index, ..) in &staged {
                outcomes[*index] = Some(Err(StoreError::Storage(
                    crate::storage::StorageError::Engine(reason.clone()),
                )));
            }
            return outcomes;
        }
        self.counters.issued = issued;
        for (_, key, before, object) in &staged {
            self.trees.note(key, *before, entry(key, object));
            self.watches.changed(key);
        }
        outcomes
    }

    /// Refuses a versioned copy with more siblings or bytes than a write
    /// may leave, and warns as a key crosses the sibling mark.
    fn within_limits(&self, key: &str, object: &Object) -> Result<(), StoreError> {
        let siblings = object.siblings().len();
        if siblings > self.limits.max_siblings {
            return Err(StoreError::TooManySiblings {
                siblings: siblings - 1,
                limit: self.limits.max_siblings,
            });
        }
        let size = object.approximate_size();
        if size > self.limits.max_object_bytes {
            return Err(StoreError::ObjectTooLarge {
                size,
                limit: self.limits.max_object_bytes,
            });
        }
        if siblings >= SIBLINGS_WARNING {
            self.metrics.kv_sibling_warnings.inc();
            // Once as the key crosses the mark, not on every write after.
            if siblings == SIBLINGS_WARNING {
                tracing::warn!(key, siblings, limit = self.limits.max_siblings, "a key holds many concurrent versions; its writers should write with the context of a read");
            }
        }
        Ok(())
    }

    /// Folds many received copies of distinct keys in, as
    /// [`LocalCopies::merge`] would each, in one storage write: whether
    /// each is held now (taken, or already covered). If storage fails, none
    /// is.
    pub(super) fn merge_many(&mut self, incoming: &[(&str, &Object)]) -> Vec<bool> {
        let now = Instant::now();
        let mut held = vec![false; incoming.len()];
        let mut staged = Vec::new();
        for (index, &(key, copy)) in incoming.iter().enumerate() {
            let Ok(mut object) = self.read(key) else {
                continue;
            };
            if self.purged.absorbs(key, copy, now) {
                self.metrics.tombstones_refused_after_purge.inc();
                held[index] = true;
                continue;
            }
            let before = entry(key, &object);
            if object.merge(copy) {
                staged.push((index, key, before, object));
            } else {
                held[index] = true;
            }
        }
        let mut entries = Vec::with_capacity(staged.len() * 2);
        for (_, key, before, object) in &staged {
            if before.is_none() {
                entries.push((order_key(key), Vec::new()));
            }
            entries.push((data_key(key), object.encode()));
        }
        if let Err(e) = self.engine.put_many(&entries) {
            tracing::warn!(error = %e, "could not store received copies");
            return held;
        }
        for (index, key, before, object) in &staged {
            held[*index] = true;
            self.trees.note(key, *before, entry(key, object));
            self.watches.changed(key);
        }
        held
    }

    /// Removes this node's copy of `key` if it still holds exactly `dots`.
    pub(super) fn drop_if(&mut self, key: &str, dots: &BTreeSet<Dot>) -> Result<bool, StoreError> {
        let object = self.read(key)?;
        if object.is_empty() || object.dots() != *dots {
            return Ok(false);
        }
        self.engine.delete(&data_key(key))?;
        self.engine.delete(&order_key(key))?;
        self.trees.note(key, entry(key, &object), None);
        self.watches.changed(key);
        Ok(true)
    }

    /// Drops this node's copy of `key` if it is exactly these tombstones,
    /// and remembers that it did.
    pub(super) fn purge(&mut self, key: &str, dots: &BTreeSet<Dot>) -> Result<bool, StoreError> {
        let object = self.read(key)?;
        if object.deleted_at_ms().is_none() {
            return Ok(false);
        }
        let dropped = self.drop_if(key, dots)?;
        if dropped {
            self.metrics.tombstones_purged.inc();
            self.purged.remember(key, object.clock(), Instant::now());
        }
        Ok(dropped)
    }

    /// The copies after the data key `cursor`, in key order, from at most
    /// `limit` entries: the last data key read (`None`: the walk is over)
    /// and (key, copy) of those held. Copies that do not decode are
    /// skipped.
    pub(super) fn walk(&self, cursor: Option<&[u8]>, limit: usize) -> Result<Walked, StoreError> {
        let batch = self.engine.scan_after(&[DATA_PREFIX], cursor, limit)?;
        let last = batch.last().map(|(raw, _)| raw.clone());
        let mut copies = Vec::with_capacity(batch.len());
        for (raw, bytes) in &batch {
            let Some(key) = stored_key(raw) else {
                continue;
            };
            match Object::decode(bytes) {
                Ok(object) if !object.is_empty() => copies.push((key, object)),
                Ok(_) => {}
                Err(_) => tracing::warn!(%key, "skipping a stored object that does not decode"),
            }
        }
        Ok((last, copies))
    }

    /// The copies in a hash-tree bucket of the keys `wanted` picks: (key,
    /// entry hash, copy). Picked before decoding, so a damaged copy fails
    /// only the exchanges that involve its key.
    pub(super) fn bucket(
        &self,
        bucket: u16,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<(Key, u64, Object)>, StoreError> {
        let mut copies = Vec::new();
        for (raw, bytes) in self.engine.scan_prefix(&bucket_prefix(bucket))? {
            let Some(key) = stored_key(&raw) else {
                continue;
            };
            if !wanted(&key) {
                continue;
            }
            let object = Object::decode(&bytes)?;
            if !object.is_empty() {
                copies.push((key.clone(), entry_hash(&key, &object), object));
            }
        }
        Ok(copies)
    }

    pub(super) fn save_settled_ring(&self, ring: &Ring) {
        let ids: Vec<u64> = ring.nodes().iter().map(|n| n.as_u64()).collect();
        let Ok(bytes) = rmp_serde::to_vec(&(ring.vnodes(), ids)) else {
            return;
        };
        if let Err(e) = self.engine.put(&meta_key(SETTLED_RING), &bytes) {
            tracing::warn!(error = %e, "could not record the settled ring");
        }
    }

    /// The ring this node's data was placed for before a restart, if it
    /// used `vnodes` tokens per node.
    pub(super) fn load_settled_ring(&mut self, vnodes: usize) {
        let Ok(Some(bytes)) = self.engine.get(&meta_key(SETTLED_RING)) else {
            return;
        };
        match rmp_serde::from_slice::<(usize, Vec<u64>)>(&bytes) {
            Ok((stored, ids)) if stored == vnodes => {
                let ring = Ring::new(ids.into_iter().map(NodeId::from_u64), vnodes);
                self.trees.restore_settled(Arc::new(ring));
            }
            Ok(_) => tracing::warn!("the settled ring used other tokens per node; starting afresh"),
            Err(_) => tracing::warn!("the settled ring record does not decode; starting afresh"),
        }
    }
}

/// The key a data entry in storage is for. Every key was valid when it
/// was stored; one that no longer is (a damaged entry) is skipped.
fn stored_key(raw: &[u8]) -> Option<Key> {
    let key = key_of_data_key(raw)?;
    match Key::new(key) {
        Ok(key) => Some(key),
        Err(e) => {
            tracing::warn!(error = %e, "skipping a stored entry whose key is not valid");
            None
        }
    }
}

/// A copy's entry in the hash trees (`None`: no copy).
fn entry(key: &str, object: &Object) -> Option<u64> {
    (!object.is_empty()).then(|| entry_hash(key, object))
}

fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut key = vec![META_PREFIX];
    key.extend_from_slice(name);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryEngine;

    fn copies(engine: &Arc<dyn StorageEngine>) -> LocalCopies {
        LocalCopies::new(
            engine.clone(),
            Arc::default(),
            NodeId::from_u64(1),
            Replication::default(),
            WriteLimits {
                max_siblings: 100,
                max_object_bytes: 1 << 20,
            },
            Duration::from_secs(60),
            Arc::new(Watches::new(
                crate::peer::PeerClient::new(crate::peer::PeerConfig::new("test"), Arc::default()),
                Duration::from_secs(1),
                Arc::default(),
            )),
        )
    }

    fn value() -> Payload {
        Payload::Value {
            content_type: "text/plain".into(),
            bytes: b"v".to_vec(),
            expires_at_ms: None,
        }
    }

    /// Seeds 4 and 138 of the data-path simulation: a copy that is gone
    /// (dropped after a handoff, or its tombstones collected) must not take
    /// its dots' counters with it, or the next write reissues one that a
    /// stale context already covers.
    #[test]
    fn a_counter_is_never_issued_twice_for_a_key_not_after_its_copy_went_nor_a_restart() {
        let engine: Arc<dyn StorageEngine> = Arc::new(MemoryEngine::default());
        let mut local = copies(&engine);
        let (first, object) = local.version("k", &VersionVector::new(), value()).unwrap();
        assert!(local.drop_if("k", &object.dots()).unwrap());
        let (second, object) = local.version("k", &VersionVector::new(), value()).unwrap();
        assert!(
            !first.descends(&second),
            "the second write's dot is new: {first:?} then {second:?}"
        );
        assert!(local.drop_if("k", &object.dots()).unwrap());
        // A restart resumes above the mark kept in storage.
        let mut restarted = copies(&engine);
        let (third, _) = restarted
            .version("k", &VersionVector::new(), value())
            .unwrap();
        assert!(!second.descends(&third) && !first.descends(&third));
    }
}
