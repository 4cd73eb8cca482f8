//! The data path's decisions, as plain functions and data: where a key's
//! bytes live in storage, which nodes are a key's home, what a read may
//! answer from the replies so far, which hints are kept, what a ring change
//! moves, what anti-entropy exchanges and when a tombstone may go, and
//! whether a peer may make a request and which copies a replica takes.
//!
//! Owns no I/O: nothing here opens a socket, touches a storage engine,
//! reads a clock or knows of actix. The Store actor (`actors::store`)
//! feeds these decisions what it received and carries out what they say,
//! so each can be tested beside its code.

pub mod accept;
pub mod admission;
pub mod condition;
pub mod coordinate;
pub mod handoff;
pub mod hints;
pub mod layout;
pub mod placement;
pub mod purge;
pub mod read;
pub mod repair;
pub mod scan;
pub mod sim;
pub mod watch;
pub mod write;
