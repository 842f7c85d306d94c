//! Entering the overlay and keeping routing state fresh.
//!
//! A new node dials one of its bootstrap addresses and sends
//! [`Message::JoinOverlay`] to whoever answers. That message is routed toward
//! the new node's own id; every node on the way sends the newcomer its
//! neighbours (routing-table rows and leaf set), and so does the node where
//! the route ends, which is the newcomer's closest existing neighbour. The
//! newcomer then introduces itself to every node it has learned of, asking
//! each for its own neighbours, which fills its table and puts it into the
//! tables and leaf sets of the nodes that should know it (Pastry's join,
//! section 2.4 of Rowstron and Druschel, 2001).
//!
//! Afterwards a maintenance timer asks one random neighbour at a time for
//! its state, which fills table gaps and replaces departed entries.

use std::net::SocketAddr;

use rand::Rng;

use crate::message::{Message, NodeInfo, MAX_NEIGHBOURS_PER_MESSAGE};
use crate::node::{Event, Node, Output, Phase, Timer};

impl<R: Rng> Node<R> {
    pub(crate) fn bootstrap(&mut self, addrs: Vec<SocketAddr>) {
        if addrs.is_empty() {
            self.phase = Phase::Joined;
            self.emit(Event::OverlayJoined { known: 0 });
        } else {
            for a in &addrs {
                self.out.push_back(Output::Dial(*a));
            }
            self.phase = Phase::Bootstrapping { addrs, round: 0 };
            self.set_timer(self.cfg.bootstrap_backoff, Timer::Bootstrap);
        }
        self.arm_heartbeat();
        let jitter = self
            .rng
            .random_range(0..=self.cfg.maintenance_interval.as_millis() as u64 / 4);
        self.set_timer(
            self.cfg.maintenance_interval + std::time::Duration::from_millis(jitter),
            Timer::Maintenance,
        );
    }

    pub(crate) fn on_dialed(&mut self, addr: SocketAddr, peer: Option<NodeInfo>) {
        let Phase::Bootstrapping { addrs, .. } = &self.phase else {
            return;
        };
        if !addrs.contains(&addr) {
            return;
        }
        match peer {
            Some(peer) if peer.id != self.me().id => {
                self.table.insert(peer);
                let me = self.me();
                self.send(peer, Message::JoinOverlay { joiner: me });
            }
            Some(_) => tracing::warn!(%addr, "bootstrap address is this node itself"),
            None => tracing::debug!(%addr, "bootstrap dial failed"),
        }
    }

    pub(crate) fn on_bootstrap_timer(&mut self) {
        let Phase::Bootstrapping { addrs, round } = &mut self.phase else {
            return;
        };
        *round += 1;
        let round = *round;
        let addrs = addrs.clone();
        if round >= self.cfg.bootstrap_attempts {
            // Nobody answered. The node keeps running alone, and the daemon
            // decides (it exits with an error); a later Bootstrap retries.
            self.phase = Phase::Idle;
            self.emit(Event::BootstrapFailed {
                addrs,
                attempts: round,
            });
            return;
        }
        for a in &addrs {
            self.out.push_back(Output::Dial(*a));
        }
        let backoff = self.cfg.bootstrap_backoff * 2u32.saturating_pow(round.min(4));
        self.set_timer(backoff, Timer::Bootstrap);
    }

    fn neighbours_for(&self, skip: crate::id::NodeId) -> Vec<NodeInfo> {
        self.table
            .iter()
            .filter(|n| n.id != skip)
            .take(MAX_NEIGHBOURS_PER_MESSAGE)
            .collect()
    }

    pub(crate) fn on_join_overlay(&mut self, from: NodeInfo, joiner: NodeInfo) {
        if joiner.id == self.me().id {
            return;
        }
        // A node that enters the overlay is alive, whatever we knew of it
        // (a restarted node keeps its id).
        self.dead.remove(&joiner.id);
        let nodes = self.neighbours_for(joiner.id);
        self.send(
            joiner,
            Message::Neighbours {
                nodes,
                reply: false,
            },
        );
        // Route on before learning the joiner, so the route cannot end at it.
        if let Some(next) = self.table.next_hop(joiner.id.key(), &[joiner.id]) {
            if next.id != from.id {
                self.send(next, Message::JoinOverlay { joiner });
            }
        }
        self.table.insert(joiner);
    }

    pub(crate) fn on_neighbours(&mut self, from: NodeInfo, nodes: Vec<NodeInfo>, reply: bool) {
        self.table.insert(from);
        let me = self.me().id;
        let listed: Vec<NodeInfo> = nodes
            .into_iter()
            .filter(|n| n.id != me && n.id != from.id && !self.known_dead(n.id))
            .collect();
        for n in listed {
            // Introduce ourselves to every node that takes a place in our
            // table, asking for its state in return: this places us in its
            // table and leaf set, and fills ours. It converges because only
            // nodes that fill a free slot or enter the leaf set are asked.
            if self.table.insert(n) {
                self.send(
                    n,
                    Message::Neighbours {
                        nodes: Vec::new(),
                        reply: true,
                    },
                );
            }
        }
        if reply {
            let nodes = self.neighbours_for(from.id);
            self.send(
                from,
                Message::Neighbours {
                    nodes,
                    reply: false,
                },
            );
        }
        if matches!(self.phase, Phase::Bootstrapping { .. }) {
            self.phase = Phase::Joined;
            let known = self.table.len();
            tracing::debug!(known, "joined the overlay");
            self.emit(Event::OverlayJoined { known });
        }
    }

    pub(crate) fn on_maintenance(&mut self) {
        if self.is_joined() {
            let known: Vec<NodeInfo> = self.table.iter().collect();
            if !known.is_empty() {
                let pick = known[self.rng.random_range(0..known.len())];
                self.send(
                    pick,
                    Message::Neighbours {
                        nodes: Vec::new(),
                        reply: true,
                    },
                );
            }
        }
        self.set_timer(self.cfg.maintenance_interval, Timer::Maintenance);
    }
}
