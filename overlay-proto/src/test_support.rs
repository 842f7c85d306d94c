//! Helpers for the unit tests that drive one node by hand: inputs in,
//! the messages it sends out.

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::config::Config;
use crate::id::NodeId;
use crate::interface::{Command, Input, Output};
use crate::keys::{Ed25519Signer, SharedSigner};
use crate::message::{Message, NodeInfo};
use crate::node::Node;
use crate::timer::Timer;

/// A node id with a loopback address derived from it.
pub(crate) fn info(id: u128) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], (id % 50000) as u16 + 1000)),
    }
}

/// A signer for test node `id`. Its key's id is not `id` (tests choose
/// ids for where they route), so its proofs are not a root's; see
/// [`keyed`] for a node whose are.
pub(crate) fn signer(id: u128) -> SharedSigner {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&id.to_be_bytes());
    Arc::new(Ed25519Signer::from_seed(&seed))
}

/// A key whose id begins with the hex digit `digit` (so that it sits
/// where a test wants it in the key space), and that id.
pub(crate) fn keyed(digit: u8) -> (u128, SharedSigner) {
    (0u8..=255)
        .map(|i| {
            let mut seed = [digit; 32];
            seed[0] = i;
            Arc::new(Ed25519Signer::from_seed(&seed)) as SharedSigner
        })
        .map(|s| (s.public_key().id().0, s))
        .find(|(id, _)| (id >> 124) as u8 == digit)
        .expect("one of 256 keys has an id with that first digit")
}

/// A node with id `me` and settings `cfg` that has entered the overlay
/// and knows `known`; what it sent doing so is drained.
pub(crate) fn node(me: u128, known: &[u128], cfg: Config) -> Node<StdRng> {
    node_signing(me, signer(me), known, cfg)
}

/// [`node`], signing with `signer`.
pub(crate) fn node_signing(
    me: u128,
    signer: SharedSigner,
    known: &[u128],
    cfg: Config,
) -> Node<StdRng> {
    let mut n = Node::new(
        info(me),
        signer,
        cfg,
        StdRng::seed_from_u64(me as u64),
        Instant::now(),
    );
    n.handle(
        Instant::now(),
        Input::Command(Command::Bootstrap { addrs: vec![] }),
    );
    for &k in known {
        n.handle(Instant::now(), Input::PeerUp(info(k)));
    }
    drain(&mut n);
    n
}

/// Makes `n` a member of `mid` attached below `path` (the root first, the
/// parent last): it joins, and its parent acknowledges with `next` 1.
pub(crate) fn attach(n: &mut Node<StdRng>, mid: crate::id::Mid, path: &[u128]) {
    n.handle(Instant::now(), Input::Command(Command::Join { mid }));
    drain(n);
    let ack = crate::message::JoinAck {
        mid,
        next: 1,
        epoch: 1,
        path: path.iter().map(|&i| NodeId(i)).collect(),
        delay_us: 0,
        coord: Default::default(),
        key: None,
        nonce: 0,
    };
    let parent = *path.last().expect("a path ends with the parent");
    deliver_answer(n, parent, Message::JoinAck(ack));
}

/// Hands `n` an answer to its own join or placement look from node `from`,
/// with the nonce `n` expects (what a node the request reached would
/// echo); what it sent in answer.
pub(crate) fn deliver_answer(
    n: &mut Node<StdRng>,
    from: u128,
    mut msg: Message,
) -> Vec<(NodeId, Message)> {
    match &mut msg {
        Message::JoinAck(a) => a.nonce = n.groups.get(&a.mid).map_or(0, |g| g.join.nonce),
        Message::PlaceOffer(o) => {
            o.nonce = n.groups.get(&o.mid).and_then(|g| g.place.ask).unwrap_or(0)
        }
        _ => {}
    }
    deliver(n, from, msg)
}

/// Hands `n` a message from node `from`; what it sent in answer.
pub(crate) fn deliver(n: &mut Node<StdRng>, from: u128, msg: Message) -> Vec<(NodeId, Message)> {
    n.handle(
        Instant::now(),
        Input::Message {
            from: info(from),
            msg,
        },
    );
    drain(n)
}

/// Fires `timer` at `at`, whether it is due or not, as if it were (the
/// one timer of the node to fire then).
pub(crate) fn fire(n: &mut Node<StdRng>, at: Instant, timer: Timer) {
    n.now = at;
    n.timers.stop(timer);
    n.on_timer(timer);
    n.keep_heartbeat();
}

/// The messages the node queued, with their receivers.
pub(crate) fn drain(n: &mut Node<StdRng>) -> Vec<(NodeId, Message)> {
    let mut sent = Vec::new();
    while let Some(o) = n.poll_output() {
        if let Output::Send { to, msg } = o {
            sent.push((to.id, msg));
        }
    }
    sent
}
