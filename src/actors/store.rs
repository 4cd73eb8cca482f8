//! The Store actor: this node's data.
//!
//! Owns the storage engine (behind `Arc<dyn StorageEngine>`, so a restart
//! finds the same data). Handles [`Get`], [`Put`] and [`Delete`], sent by the
//! HTTP layer. Runs on an arbiter of its own so that disk writes never stall
//! gossip. Must never touch the network: coordination with other replicas
//! will go through messages to other actors, not sockets of its own.

use std::sync::Arc;

use actix::{Actor, Context, Handler, Message, Supervised};
use thiserror::Error;

use super::contain_panic;
use crate::key::Key;
use crate::metrics::SharedMetrics;
use crate::record::{CorruptRecord, Record};
use crate::storage::{StorageEngine, StorageError};

/// Requests wait here rather than fail while the Store is busy: the HTTP
/// layer bounds how long they wait.
const MAILBOX_CAPACITY: usize = 1024;

pub struct Store {
    engine: Arc<dyn StorageEngine>,
    metrics: SharedMetrics,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    #[error("the store failed while handling this request and is restarting")]
    Restarting,
}

#[derive(Message, Debug)]
#[rtype(result = "Result<Option<Record>, StoreError>")]
pub struct Get {
    pub key: Key,
}

#[derive(Message, Debug)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Put {
    pub key: Key,
    pub record: Record,
}

#[derive(Message, Debug)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Delete {
    pub key: Key,
}

impl Store {
    pub fn new(engine: Arc<dyn StorageEngine>, metrics: SharedMetrics) -> Self {
        Store { engine, metrics }
    }

    fn count_failure<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            self.metrics.kv_storage_errors.inc();
            tracing::warn!(error = %e, "store request failed");
        }
        result
    }
}

impl Actor for Store {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        tracing::debug!(engine = self.engine.name(), "store started");
    }
}

impl Supervised for Store {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.metrics.actor_restarts_store.inc();
        tracing::warn!("store actor restarting");
    }
}

impl Handler<Get> for Store {
    type Result = Result<Option<Record>, StoreError>;

    fn handle(&mut self, msg: Get, ctx: &mut Self::Context) -> Self::Result {
        self.metrics.kv_gets.inc();
        let engine = &self.engine;
        let result = contain_panic("store", ctx, || -> Result<_, StoreError> {
            match engine.get(msg.key.as_bytes())? {
                Some(bytes) => Ok(Some(Record::decode(&bytes)?)),
                None => Ok(None),
            }
        });
        self.count_failure(result.unwrap_or(Err(StoreError::Restarting)))
    }
}

impl Handler<Put> for Store {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: Put, ctx: &mut Self::Context) -> Self::Result {
        self.metrics.kv_puts.inc();
        let engine = &self.engine;
        let result = contain_panic("store", ctx, || {
            engine
                .put(msg.key.as_bytes(), &msg.record.encode())
                .map_err(StoreError::from)
        });
        self.count_failure(result.unwrap_or(Err(StoreError::Restarting)))
    }
}

impl Handler<Delete> for Store {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: Delete, ctx: &mut Self::Context) -> Self::Result {
        self.metrics.kv_deletes.inc();
        let engine = &self.engine;
        let result = contain_panic("store", ctx, || {
            engine.delete(msg.key.as_bytes()).map_err(StoreError::from)
        });
        self.count_failure(result.unwrap_or(Err(StoreError::Restarting)))
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<super::fault::InjectFault> for Store {
    type Result = ();

    fn handle(&mut self, msg: super::fault::InjectFault, ctx: &mut Self::Context) {
        use super::fault::Fault;
        use actix::ActorContext;
        match msg.0 {
            Fault::Stop | Fault::SocketError => ctx.stop(),
            Fault::Panic => {
                contain_panic("store", ctx, || panic!("injected panic"));
            }
        }
    }
}
