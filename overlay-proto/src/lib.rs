//! The overlay's wire protocol and protocol logic, with no I/O.
//!
//! This crate is the part of the overlay multicast system that decides what
//! to send, to whom and when. It owns no socket, spawns no task and reads no
//! clock: a [`Node`] takes [`Input`]s (a message from a peer, a peer
//! connected or lost, a peer's measured round-trip time, its next deadline
//! passed, a local command, and a flush after each batch of those), each
//! stamped with the current time, and answers with [`Output`]s (send a
//! message, dial an address, measure a peer's round-trip time, tell the
//! user). Its timers stay inside it, in one table keyed by what each is
//! for; the driver only asks for the earliest deadline
//! ([`Node::poll_timeout`]).
//! Randomness comes from the `R` the node is built with, and its state is
//! kept in ordered maps, so a seeded run is reproducible. The daemon
//! (`overlay-node`) drives a node with QUIC connections and real time; the
//! simulator (`overlay-sim`, in `tools/sim`) drives the very same code with
//! thousands of nodes in virtual time, and runs the multi-node tests of
//! the protocol.
//!
//! The parts, in the order a message meets them:
//!
//! - [`id`]: 128-bit node ids (hash of the node's public key) and multicast
//!   ids (mids), and the XOR key space they share.
//! - [`interface`]: what a driver hands a [`Node`] and what it gets back.
//! - [`admission`]: who may send what; every message from a peer passes
//!   it before any part acts on it.
//! - [`message`] and [`frame`]: every message, and how it is framed on a
//!   stream, with a protocol version and a maximum frame size. Payloads are
//!   shared, never copied per child.
//! - [`routing`]: the structured overlay. A base-16 prefix routing table
//!   with a leaf set (Pastry's shape) under the XOR metric (Kademlia's), so
//!   a message reaches the node responsible for a key in about `log16(N)`
//!   hops and routes can never loop; each slot holds the nearest candidate
//!   measured (proximity neighbour selection).
//! - [`coord`]: network coordinates (Vivaldi), learned from measured
//!   round-trip times, that predict the delay between any two nodes.
//! - [`overlay`]: entering the overlay through bootstrap nodes, and keeping
//!   routing state fresh.
//! - [`tree`]: group trees built by join requests routed toward the root, as
//!   in the seed notes: the first node that has not seen the join becomes a
//!   forwarder, the first node already on the tree ends it, and a node at its
//!   fan-out bound hands the joiner down to a child. Messages are sequenced
//!   by the root and flow down the tree.
//! - [`placement`]: each tree node looks for a parent nearer the root
//!   and moves there, so trees approach shortest-path trees within the
//!   fan-out bound.
//! - [`stream`]: each node's ordered, gap-free stream of a group's messages,
//!   its repair buffer, and gap repair from the parent and the root.
//! - [`keys`] and [`proof`]: node keys, and the root's signatures over its
//!   stream, without which no node delivers, keeps or forwards a message.
//! - [`publish`] and [`root`]: publishing with retries, and the root that
//!   orders messages, de-duplicates retries, retains messages, and commits
//!   each only once its replicas hold it.
//! - [`replica`]: the copies of a root's state, and the takeover by the next
//!   responsible node when the root dies.
//! - [`liveness`]: heartbeats between tree neighbours, failure detection
//!   within 1.25 s, and the soft state that keeps both ends of a link
//!   agreeing.
//! - [`query`]: collecting the whole tree at the root for display.
//! - [`subnet`]: which network an address is in, for the shares one host
//!   or subnet may take of a node's leaf set and a group's replicas.
//!
//! How the parts are built. A part owns its state and has handlers that
//! take a context (`ctx::Ctx`: the time, the settings, the node's identity,
//! its outbox and timers), as iroh-gossip's layers take their `io`, so that
//! a part can be driven and tested alone: the overlay's routing state
//! ([`overlay`]), this node's publishes ([`publish`]), tree queries
//! ([`query`]), held replicas ([`replica`]), lineages ([`lineage`]), the
//! failure detector ([`liveness`]), what the node knows of distances (its
//! coordinate and recent round trips, in [`placement`]) and the roots a
//! node publishes to.
//! [`Node`] dispatches to them, and glues what one part's event means for
//! another. The tree, placement, stream and root handlers, and the
//! heartbeats' reconciliation, are still methods of [`Node`] over each
//! group's state; they are being given the same shape.

pub mod admission;
pub mod config;
pub mod coord;
mod ctx;
pub mod frame;
pub mod id;
pub mod interface;
pub mod keys;
pub mod lan;
pub mod lineage;
pub mod liveness;
mod log;
pub mod message;
pub mod node;
pub mod overlay;
pub mod placement;
pub mod proof;
pub mod publish;
pub mod query;
mod ratelimit;
pub mod replica;
pub mod root;
mod roots;
pub mod routing;
pub mod stream;
pub mod subnet;
#[cfg(test)]
mod test_support;
mod timer;
pub mod tree;

pub use config::Config;
pub use id::{Mid, NodeId};
pub use interface::{Command, Event, Input, Output, PublishError, TreeError};
pub use message::{Detour, Message, NodeInfo, RejectReason, TreeEntry};
pub use node::Node;
pub use replica::ReplicaView;
pub use tree::GroupView;
