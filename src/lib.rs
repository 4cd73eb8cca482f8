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
//!   - **Store** owns the storage engine and the hints, and coordinates
//!     every client read and write with the key's replicas;
//!   - **Gossip** owns the UDP socket and the protocol timer, and passes what
//!     it hears about members to Membership;
//!   - **Membership** owns the member table and the ring, decides which news
//!     wins, and publishes changes to its subscribers (the Store).
//! - [`peer`]: the node-to-node request channel over TCP, one multiplexed
//!   connection per peer, generic over what it carries.
//! - The pure core, with no actors and no sockets: [`config`], [`key`],
//!   [`member`], [`node_id`], [`ring`] (consistent hashing), [`merkle`]
//!   (hash trees for anti-entropy), [`replication`]
//!   (N, R, W and where a key's copies go), [`version`] (siblings and causal
//!   contexts), [`replica`] (the node-to-node messages), [`wire`] (the gossip
//!   datagram format), [`swim`] (the membership protocol as a state
//!   machine), [`storage`] (memory and disk engines), [`metrics`].
//!
//! # The path of a PUT
//!
//! `PUT /kv/user1` reaches an actix-web worker; `http::kv` validates the key,
//! the context header and the quorum, reads the body within the value limit,
//! then sends `store::Put` to the Store actor and waits at most the request
//! timeout. The Store places the key on the ring; if this node is one of the
//! key's N home replicas it versions the write against its own copy, stores
//! it, and sends it to the other replicas through [`peer`]; otherwise it
//! forwards the write to a home replica. Once W replicas hold it the handler
//! answers 204 with the new version's context; replicas that were down get
//! it later from hints.
//!
//! [`dev`] runs a local cluster of real processes (`dnd dev`, and the fault
//! tests). [`load`] is the client side of measurements (`dnd bench`): it
//! loads running servers over HTTP and is never part of a node.
//!
//! [`node::Node::start`] wires all of this together for one node.

pub mod actors;
pub mod client;
pub mod commands;
pub mod config;
pub mod data;
pub mod dev;
pub mod explain;
pub mod http;
pub mod key;
pub mod keyring;
pub mod load;
pub mod log_limit;
pub mod member;
pub mod merkle;
pub mod metrics;
pub mod node;
pub mod node_id;
pub mod peer;
pub mod replica;
pub mod replication;
pub mod ring;
pub mod settings_file;
pub mod storage;
pub mod swim;
pub mod tls;
pub mod tokens;
pub mod version;
pub mod wire;
