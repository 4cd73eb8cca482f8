//! The running node: three actix actors, each under a `Supervisor`.
//!
//! - [`store::Store`] owns the storage engine and answers Get/Put/Delete.
//! - [`gossip::Gossip`] owns the UDP socket and the protocol timer.
//! - [`membership::Membership`] owns the member table and tells subscribers
//!   when it changes.
//!
//! They talk only through the typed messages defined next to each handler.
//!
//! Supervision in actix 0.13: a supervisor restarts its actor when the actor
//! *stops*, reusing the same struct (so fields keep their values) and the
//! same mailbox (so addresses stay valid and queued messages wait). A panic
//! that escapes a handler is *not* restarted: it kills the actor's task and
//! closes its mailbox. So handlers that run code which could panic wrap it in
//! [`contain_panic`], which turns a panic into a logged stop, and the
//! supervisor restarts the actor with its state.

pub mod gossip;
pub mod membership;
pub mod store;

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use actix::{Actor, ActorContext, Context};

/// Runs `work`; if it panics, logs the panic, stops the actor so that its
/// supervisor restarts it, and returns `None`.
pub(crate) fn contain_panic<A, R>(
    actor: &'static str,
    ctx: &mut Context<A>,
    work: impl FnOnce() -> R,
) -> Option<R>
where
    A: Actor<Context = Context<A>>,
{
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(result) => Some(result),
        Err(payload) => {
            tracing::error!(
                actor,
                panic = panic_message(payload.as_ref()),
                "handler panicked; stopping the actor so its supervisor restarts it"
            );
            ctx.stop();
            None
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Faults that tests inject into an actor to prove it is restarted.
#[cfg(feature = "fault-injection")]
pub mod fault {
    /// What to do to the actor that receives [`InjectFault`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Fault {
        /// Stop, as an actor does on an error it cannot handle.
        Stop,
        /// Panic inside the handler.
        Panic,
        /// (Gossip only) fail the socket as a real receive error would.
        SocketError,
        /// Keep the actor's thread busy this long, as an actor that cannot
        /// keep up with its load would be.
        Stall(std::time::Duration),
    }

    #[derive(actix::Message, Clone, Copy, Debug)]
    #[rtype(result = "()")]
    pub struct InjectFault(pub Fault);
}
