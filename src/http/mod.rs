//! The public HTTP API (actix-web).
//!
//! Owns routing and the translation between HTTP and actor messages: one
//! file per resource (`kv`, `cluster`, `node`; `ui`, the dashboard's static
//! files), errors turned into statuses in one place (`error`). Handlers
//! hold no state of their own and never touch storage or sockets; they send
//! a message and shape the reply.

mod admin;
mod answer;
pub mod auth;
mod batch;
pub mod client_gone;
mod cluster;
mod error;
mod explained;
mod keyring;
mod kv;
mod list;
mod node;
mod openapi;
mod params;
pub mod request_id;
mod status;
mod ui;

use std::time::Duration;

use actix::Addr;
use actix_web::web;

pub use error::ApiError;

use crate::actors::gossip::Gossip;
use crate::actors::membership::Membership;
use crate::actors::store::Store;
use crate::metrics::SharedMetrics;
use crate::node_id::NodeId;
use crate::replication::Replication;

/// What every handler may use; cloned into each worker.
#[derive(Clone)]
pub struct AppState {
    pub node_id: NodeId,
    /// Where this node serves HTTP, as members list it.
    pub http_addr: std::net::SocketAddr,
    pub store: Addr<Store>,
    pub membership: Addr<Membership>,
    pub gossip: Addr<Gossip>,
    /// Woken by `POST /cluster/leave`; whoever runs the node then leaves.
    pub leave_requested: std::sync::Arc<tokio::sync::Notify>,
    pub metrics: SharedMetrics,
    pub max_value_bytes: usize,
    /// How long a request waits for an actor before answering 503.
    pub request_timeout: Duration,
    /// Places for requests waiting on an actor; a request that finds none
    /// is answered 503 at once (`ApiError::Overloaded`).
    pub waiting: std::sync::Arc<tokio::sync::Semaphore>,
    /// When shedding was last logged.
    pub shed_log: std::sync::Arc<std::sync::Mutex<crate::log_limit::LogLimit<()>>>,
    /// How long a request body may take to arrive before 408.
    pub body_timeout: Duration,
    /// The cluster's N, R and W: `?r=` and `?w=` are checked against N.
    pub replication: Replication,
    /// This node's cluster keys, if it runs with a secret.
    pub keyring: Option<crate::keyring::Keyring>,
    /// The node-to-node channel, for admin calls that reach every member.
    pub replica_client: crate::actors::store::ReplicaClient,
    /// The bearer tokens taken, if the node runs with a tokens file.
    pub tokens: Option<std::sync::Arc<crate::tokens::TokenTable>>,
    /// When each client was last logged for a refused request.
    pub refusal_log: std::sync::Arc<auth::RefusalLog>,
}

impl AppState {
    /// Sends `msg` and waits at most the request timeout. A closed mailbox
    /// or a late answer becomes a 503, so a restarting actor never hangs a
    /// client; so does a request that finds every waiting place taken, at
    /// once, so that overload never grows a queue (or the memory its
    /// requests hold) without bound.
    pub(crate) async fn ask<A, M>(&self, actor: &Addr<A>, msg: M) -> Result<M::Result, ApiError>
    where
        A: actix::Actor + actix::Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
        M: actix::Message + Send + 'static,
        M::Result: Send,
    {
        let Ok(_place) = self.waiting.try_acquire() else {
            self.metrics.http_requests_shed.inc();
            let log = self
                .shed_log
                .lock()
                .map(|mut limit| limit.allow((), std::time::Instant::now()))
                .unwrap_or(false);
            if log {
                tracing::warn!(
                    waiting = self.waiting.available_permits(),
                    "every waiting place is taken; answering 503 until one frees (logged at most once a minute)"
                );
            }
            return Err(ApiError::Overloaded);
        };
        match tokio::time::timeout(self.request_timeout, actor.send(msg)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(actix::MailboxError::Closed)) => Err(ApiError::Unavailable(
                "the actor serving this request is not running".into(),
            )),
            Ok(Err(actix::MailboxError::Timeout)) | Err(_) => Err(ApiError::Unavailable(
                "the node did not answer in time".into(),
            )),
        }
    }
}

/// Registers every route; `state` must be added as `web::Data` by the caller.
pub fn routes(cfg: &mut web::ServiceConfig) {
    kv::routes(cfg);
    cluster::routes(cfg);
    status::routes(cfg);
    keyring::routes(cfg);
    node::routes(cfg);
    openapi::routes(cfg);
    ui::routes(cfg);
}

/// The answer for a path no route matches.
pub async fn no_route() -> ApiError {
    ApiError::NoRoute
}
