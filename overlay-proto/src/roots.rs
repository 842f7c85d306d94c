//! Where groups' roots are, as they told us: the requests a root serves
//! only when they come straight from the node they are for go to it
//! directly.
//!
//! A root acts on a publish, and serves a fetch of its retention, only
//! when the connection it came over is the publisher's or the asker's own
//! (see [`crate::publish`] and [`crate::stream`]): otherwise any node
//! could publish in another's name, or make the root send a retention's
//! worth of messages to a node that never asked. A request that reaches
//! the root through other nodes gets a small answer instead
//! ([`crate::Message::Direct`]),
//! sent to the node the request names over a connection whose handshake
//! must prove that node's id; the node then sends its requests straight to
//! the root, and remembers where it is here. The answer is taken only from
//! the node that leads the group by the lineage we hold (see
//! [`crate::Node::leads`]).

use std::collections::BTreeMap;

use rand::Rng;

use crate::id::Mid;
use crate::message::{Asked, Direct, Message, NodeInfo};
use crate::node::Node;

/// Most groups whose root a node remembers; past it, the first (by mid)
/// is forgotten, and found again through a request's redirect if needed.
const MAX_KNOWN_ROOTS: usize = 1024;

/// The root of each group we send requests to, as it told us.
#[derive(Debug, Default)]
pub(crate) struct Roots {
    by_mid: BTreeMap<Mid, NodeInfo>,
}

impl Roots {
    /// The root of `mid`, if it told us.
    pub(crate) fn get(&self, mid: Mid) -> Option<NodeInfo> {
        self.by_mid.get(&mid).copied()
    }

    /// `root` leads `mid`, by its own word and the lineage we hold.
    pub(crate) fn learn(&mut self, mid: Mid, root: NodeInfo) {
        if self.by_mid.len() >= MAX_KNOWN_ROOTS && !self.by_mid.contains_key(&mid) {
            self.by_mid.pop_first();
        }
        self.by_mid.insert(mid, root);
    }

    /// Requests of `mid` go hop by hop again: the root we knew may be gone.
    pub(crate) fn forget(&mut self, mid: Mid) {
        self.by_mid.remove(&mid);
    }

    /// Whether we know the root of `mid`.
    pub(crate) fn contains(&self, mid: Mid) -> bool {
        self.by_mid.contains_key(&mid)
    }
}

impl<R: Rng> Node<R> {
    /// Tells `to`, whose request `asked` of `mid` reached us (the root)
    /// through others, to send it straight to us. Past the first epoch our
    /// lineage goes ahead: `to` takes our word only once it knows we lead.
    pub(crate) fn send_direct(&mut self, to: NodeInfo, mid: Mid, asked: Asked) {
        if let Some(l) = self.lineages.get(mid).filter(|l| l.epoch() > 1).cloned() {
            self.send(to, Message::Lineage(l));
        }
        self.send(to, Message::Direct(Direct { mid, asked }));
    }
}
