//! The simulated network the nodes talk over: delays from the topology, and
//! what the measurements need to see of the messages on the wire.

use std::collections::HashMap;
use std::time::Duration;

use crate::engine::Network;
use overlay_proto::{Message, Mid, NodeId};

use crate::topology::{LinkId, Topology};
use overlay_proto::message::Join;

/// Delays between nodes, from their places in the topology, and counters
/// fed by every message sent.
#[derive(Debug)]
pub struct Net {
    /// Where every node is.
    pub topo: Topology,
    /// Every node's id, by index.
    pub ids: Vec<NodeId>,
    /// While measuring link stress: copies of group messages (`Data`) that
    /// crossed each physical link, all groups together and per group.
    pub stress: Option<StressCount>,
    /// Which member's join made each node (by group) send its own join, so
    /// a forwarder's join counts as a further hop of the member's.
    origin: HashMap<(Mid, NodeId), NodeId>,
    /// Join messages sent so far on behalf of each member's join.
    join_hops: HashMap<(Mid, NodeId), u32>,
}

/// Copies of group messages on the physical links, counted while link
/// stress is measured.
#[derive(Debug, Default)]
pub struct StressCount {
    /// Copies per link, whatever their group (Scribe's measure: one
    /// message to every group at once).
    pub per_link: Vec<u32>,
    /// Copies per link and group (the measure of Narada and End System
    /// Multicast: one group's message, where IP multicast puts exactly
    /// one copy on every link it uses).
    pub per_group_link: HashMap<(Mid, LinkId), u32>,
}

impl Net {
    /// A network over `topo`, with no node yet.
    pub fn new(topo: Topology) -> Self {
        Net {
            topo,
            ids: Vec::new(),
            stress: None,
            origin: HashMap::new(),
            join_hops: HashMap::new(),
        }
    }

    /// The overlay hops `member`'s join of `mid` took to reach a node on
    /// the tree (each forwarder it created adds one), forgotten once read.
    pub fn take_join_hops(&mut self, mid: Mid, member: NodeId) -> Option<u32> {
        self.join_hops.remove(&(mid, member))
    }
}

impl Network for Net {
    fn delay(&self, from: usize, to: usize) -> Duration {
        Duration::from_micros(self.topo.delay_us(from, to) as u64)
    }

    fn min_delay(&self) -> Duration {
        Duration::from_micros(self.topo.min_delay_us() as u64)
    }

    fn watches(&self, msg: &Message) -> bool {
        match msg {
            Message::Data(_) => self.stress.is_some(),
            Message::Join(Join { .. }) => true,
            _ => false,
        }
    }

    fn sent(&mut self, from: usize, to: usize, msg: &Message) {
        match msg {
            Message::Data(d) => {
                if let Some(stress) = self.stress.as_mut() {
                    self.topo.for_each_link(from, to, |l| {
                        stress.per_link[l as usize] += 1;
                        *stress.per_group_link.entry((d.mid, l)).or_default() += 1;
                    });
                }
            }
            Message::Join(Join { mid, joiner, .. }) => {
                let sender = self.ids[from];
                // A node's own join continues the join that made it a
                // forwarder, if any; a join passed on (handed down to a
                // child, or around an ancestor) continues the joiner's.
                let origin = if joiner.id == sender {
                    self.origin.get(&(*mid, sender)).copied().unwrap_or(sender)
                } else {
                    self.origin
                        .get(&(*mid, joiner.id))
                        .copied()
                        .unwrap_or(joiner.id)
                };
                *self.join_hops.entry((*mid, origin)).or_default() += 1;
                self.origin.insert((*mid, self.ids[to]), origin);
            }
            _ => {}
        }
    }
}
