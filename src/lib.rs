//! dnd, "definitely not dynamo": a distributed key-value store in the spirit
//! of Amazon's Dynamo. Every node is equal; any node serves any key.
//!
//! # Map
//!
//! Layers, each using only those below it:
//!
//! - `bin/dnd.rs`: the command line (clap), a thin shell over [`node`].
//! - [`http`]: the public API on actix-web: `/kv/{key}`, `/cluster/members`,
//!   `/health`, `/metrics`. Handlers turn requests into actor messages.
//! - [`actors`]: the running node, three supervised actix actors:
//!   - **Store** owns the storage engine and answers Get/Put/Delete;
//!   - **Gossip** owns the UDP socket and the protocol timer, and passes what
//!     it hears about members to Membership;
//!   - **Membership** owns the member table, decides which news wins, and
//!     publishes changes to its subscribers (Gossip today).
//! - [`peer`]: the node-to-node request channel over TCP, one multiplexed
//!   connection per peer, generic over what it carries.
//! - The pure core, with no actors and no sockets: [`config`], [`key`],
//!   [`record`], [`member`], [`node_id`], [`wire`] (the gossip datagram
//!   format), [`storage`] (memory and disk engines), [`metrics`].
//!
//! # The path of a PUT
//!
//! `PUT /kv/user1` reaches an actix-web worker; `http::kv` validates the key
//! and reads the body within the value limit, then sends `store::Put` to the
//! Store actor's address and waits at most the request timeout. The Store
//! encodes a [`record::Record`] and writes it through its engine, which has
//! handed it to the OS (and, per the sync policy, to the disk) before the
//! reply; the handler answers 204.
//!
//! [`node::Node::start`] wires all of this together for one node.

pub mod actors;
pub mod config;
pub mod http;
pub mod key;
pub mod member;
pub mod metrics;
pub mod node;
pub mod node_id;
pub mod peer;
pub mod replica;
pub mod replication;
pub mod ring;
pub mod storage;
pub mod swim;
pub mod version;
pub mod wire;
