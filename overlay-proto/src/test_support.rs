//! Helpers for the unit tests that drive one node by hand: inputs in,
//! the messages it sends out.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::config::Config;
use crate::id::NodeId;
use crate::interface::{Command, Input, Output};
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

/// A node with id `me` and settings `cfg` that has entered the overlay
/// and knows `known`; what it sent doing so is drained.
pub(crate) fn node(me: u128, known: &[u128], cfg: Config) -> Node<StdRng> {
    let mut n = Node::new(
        info(me),
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
    };
    let parent = *path.last().expect("a path ends with the parent");
    deliver(n, parent, Message::JoinAck(ack));
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
