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
//! Proximity. Every connection's round-trip time reaches the node
//! ([`Input::Rtt`](crate::interface::Input::Rtt)), and a measured node takes its
//! table slot from a farther one ([`RoutingTable::offer`]). Of the
//! candidates the neighbour lists bring for an occupied slot, up to
//! `probes_per_slot` are measured ([`Output::Probe`]), so each slot ends up
//! with the nearest of several candidates. Because the join's first hop is a
//! nearby bootstrap node, and each node on its route shares a longer prefix
//! with the newcomer, the candidates are near to begin with (Pastry's
//! locality argument).
//!
//! Repair. When a table entry is found dead, another node of the same row is
//! asked for its neighbours (it knows nodes with that prefix), and when a
//! leaf is, the nearest remaining leaf is asked (it knows the nodes around
//! us). A maintenance timer also asks one random neighbour at a time for
//! its state, which fills what is left.
//!
//! Partitions. When a link between two parts of the network goes down,
//! each part finds the other's nodes dead and drops them, and once the
//! link is back nothing would bring them together again: no node of one
//! part names a node of the other. So a node keeps the last `lost_peers`
//! neighbours it lost, for `lost_memory`, and asks one of them, in turn,
//! for its neighbours at each maintenance round; one that answers is back
//! in the table at once, and its neighbour list brings the rest.

use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;

use crate::id::NodeId;
use crate::interface::{Event, Output};
use crate::message::{JoinOverlay, Neighbours};
use crate::message::{Message, NodeInfo, MAX_NEIGHBOURS_PER_MESSAGE};
use crate::node::{Node, Phase};
use crate::timer::Timer;

impl<R: Rng> Node<R> {
    pub(crate) fn bootstrap(&mut self, addrs: Vec<SocketAddr>) {
        if addrs.is_empty() {
            self.phase = Phase::Joined;
            self.emit(Event::OverlayJoined { known: 0 });
        } else {
            for a in &addrs {
                self.out.push_back(Output::Dial(*a));
            }
            self.phase = Phase::Bootstrapping {
                addrs,
                round: 0,
                deferred: Vec::new(),
            };
            self.set_timer(self.cfg.bootstrap_backoff, Timer::Bootstrap);
        }
        self.maintenance_round = 0;
        // A second bootstrap must not start a second round of rounds.
        if !self.timers.is_armed(Timer::Maintenance) {
            self.arm_maintenance();
        }
    }

    /// The next maintenance round: after 1 s, then twice as long each
    /// round up to `maintenance_interval`, with jitter. The first rounds
    /// come quickly because nodes that entered the overlay at the same time
    /// may not have learned of each other yet.
    fn arm_maintenance(&mut self) {
        let round = self.maintenance_round.min(16);
        self.maintenance_round = self.maintenance_round.saturating_add(1);
        let interval =
            (Duration::from_secs(1) * 2u32.pow(round)).min(self.cfg.maintenance_interval);
        let jitter = self.rng.random_range(0..=interval.as_millis() as u64 / 4);
        self.set_timer(interval + Duration::from_millis(jitter), Timer::Maintenance);
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
                self.send(peer, Message::JoinOverlay(JoinOverlay { joiner: me }));
            }
            Some(_) => tracing::warn!(%addr, "bootstrap address is this node itself"),
            None => tracing::debug!(%addr, "bootstrap dial failed"),
        }
    }

    pub(crate) fn on_bootstrap_timer(&mut self) {
        let Phase::Bootstrapping { addrs, round, .. } = &mut self.phase else {
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

    fn neighbours_for(&self, skip: NodeId) -> Vec<NodeInfo> {
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
        // A node not yet in the overlay has nobody to introduce: were it to
        // answer, the joiner would take it for the overlay, and its
        // questions in return would make this node think it was in too,
        // an overlay of two cut off from the rest. So the join waits until
        // this node is in (the joiner's own bootstrap rounds send it again,
        // hence the check for one already waiting).
        match &mut self.phase {
            Phase::Joined => {}
            Phase::Bootstrapping { deferred, .. } => {
                if deferred.len() < self.cfg.max_deferred_joins
                    && !deferred.iter().any(|(_, j)| j.id == joiner.id)
                {
                    tracing::debug!(joiner = %joiner.id, "join deferred until this node is in");
                    deferred.push((from, joiner));
                }
                return;
            }
            Phase::Idle => return,
        }
        // A node that enters the overlay is alive, whatever we knew of it
        // (a restarted node keeps its id): if it says so itself.
        let direct = from.id == joiner.id;
        if direct {
            self.dead.remove(&joiner.id);
        }
        let nodes = self.neighbours_for(joiner.id);
        self.send(
            joiner,
            Message::Neighbours(Neighbours {
                nodes,
                reply: false,
                coord: self.coord,
            }),
        );
        // Route on before learning the joiner, so the route cannot end at it.
        if let Some(next) = self.table.next_hop(joiner.id.key(), &[joiner.id]) {
            if next.id != from.id {
                self.send(next, Message::JoinOverlay(JoinOverlay { joiner }));
            }
        }
        if direct {
            self.table.insert(joiner);
        } else if !self.known_dead(joiner.id) {
            self.table.insert_listed(joiner);
        }
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
            if self.table.insert_listed(n) {
                self.ask_neighbours(n);
            } else if self.cfg.proximity && !self.table.contains(n.id) {
                self.maybe_probe(n);
            }
        }
        if reply {
            let nodes = self.table.useful_to(from.id, MAX_NEIGHBOURS_PER_MESSAGE);
            self.send(
                from,
                Message::Neighbours(Neighbours {
                    nodes,
                    reply: false,
                    coord: self.coord,
                }),
            );
        }
        if let Phase::Bootstrapping { deferred, .. } = &mut self.phase {
            let deferred = std::mem::take(deferred);
            self.phase = Phase::Joined;
            let known = self.table.len();
            tracing::debug!(known, "joined the overlay");
            self.emit(Event::OverlayJoined { known });
            for (from, joiner) in deferred {
                self.on_join_overlay(from, joiner);
            }
        }
    }

    fn ask_neighbours(&mut self, n: NodeInfo) {
        self.send(
            n,
            Message::Neighbours(Neighbours {
                nodes: Vec::new(),
                reply: true,
                coord: self.coord,
            }),
        );
    }

    /// Asks the driver to measure a candidate for an occupied table slot, if
    /// the slot's and the node's probe budgets allow.
    fn maybe_probe(&mut self, n: NodeInfo) {
        if self.probing.len() >= self.cfg.max_probes || self.probing.contains_key(&n.id) {
            return;
        }
        if self.table.should_probe(&n, self.cfg.probes_per_slot) {
            self.probing.insert(n.id, self.now);
            self.out.push_back(Output::Probe(n));
        }
    }

    /// A round-trip time measured by the driver.
    pub(crate) fn on_rtt(&mut self, peer: NodeInfo, rtt: Duration) {
        // Most round trips come with connections, not probes; at rest no
        // probe is out, and the map's memory need not be touched.
        let probed = !self.probing.is_empty() && self.probing.remove(&peer.id).is_some();
        if peer.id == self.me().id || self.known_dead(peer.id) {
            return;
        }
        if self.cfg.proximity {
            self.table.offer(peer, rtt);
        } else {
            self.table.insert(peer);
            self.table.note_rtt(peer.id, rtt);
        }
        // A connection's round trip is kept for the tree links and the
        // coordinates; a probed candidate that lost its slot is neither,
        // and a burst of probes would push out the peers that are.
        if !probed && self.table.rtt(peer.id).is_none() {
            self.remember_rtt(peer.id, rtt);
        }
    }

    /// Removes a node from the routing state and asks for replacements: a
    /// node of the same table row for the slot, the nearest leaf for the
    /// leaf set.
    pub(crate) fn forget(&mut self, peer: NodeId) {
        if let Some(info) = self.table.get(peer) {
            if self.lost.len() >= self.cfg.lost_peers {
                self.lost.pop_front();
            }
            if self.cfg.lost_peers > 0 {
                self.lost.push_back((info, self.now));
            }
        }
        let was_leaf = self.table.leaves().iter().any(|l| l.id == peer);
        let row = self.table.row_of(peer);
        if !self.table.remove(peer) || !self.is_joined() {
            return;
        }
        let mut ask: Vec<NodeInfo> = Vec::with_capacity(2);
        if !row.is_empty() {
            ask.push(row[self.rng.random_range(0..row.len())]);
        }
        if was_leaf {
            if let Some(&l) = self.table.leaves().first() {
                ask.push(l);
            }
        }
        ask.dedup_by_key(|n| n.id);
        for n in ask {
            self.ask_neighbours(n);
        }
    }

    /// Asks the lost neighbour whose turn it is for its neighbours, in case
    /// it is alive behind a link that is back (see the module's doc).
    fn try_lost(&mut self) {
        let now = self.now;
        let memory = self.cfg.lost_memory;
        self.lost.retain(|(_, t)| now.duration_since(*t) < memory);
        let Some((n, t)) = self.lost.pop_front() else {
            return;
        };
        self.lost.push_back((n, t));
        if !self.table.contains(n.id) {
            tracing::debug!(peer = %n.id.short(), "asking a lost neighbour whether it is back");
            self.ask_neighbours(n);
        }
    }

    pub(crate) fn on_maintenance(&mut self) {
        self.table.decay_probes();
        let now = self.now;
        let stale = self.cfg.maintenance_interval;
        self.probing.retain(|_, t| now.duration_since(*t) < stale);
        if self.is_joined() {
            // The nearest leaf knows the nodes around us (leaf-set
            // stabilization); a random node fills the table.
            let nearest = self.table.leaves().first().copied();
            let known: Vec<NodeInfo> = self.table.iter().collect();
            if let Some(n) = nearest {
                self.ask_neighbours(n);
            }
            if !known.is_empty() {
                let pick = known[self.rng.random_range(0..known.len())];
                if Some(pick.id) != nearest.map(|n| n.id) {
                    self.ask_neighbours(pick);
                }
            }
            self.try_lost();
        }
        self.arm_maintenance();
    }
}

#[cfg(test)]
mod tests {
    use crate::message::Neighbours;
    use std::time::{Duration, Instant};

    use crate::config::Config;
    use crate::id::{Mid, NodeId};
    use crate::interface::{Command, Input};
    use crate::message::Message;
    use crate::test_support::{deliver, drain, fire, node};
    use crate::timer::Timer;

    const ME: u128 = 0x1000_0000_0000_0000_0000_0000_0000_0000;
    const A: u128 = 0x2000_0000_0000_0000_0000_0000_0000_0000;
    const B: u128 = 0x3000_0000_0000_0000_0000_0000_0000_0000;

    fn answer() -> Message {
        Message::Neighbours(Neighbours {
            nodes: Vec::new(),
            reply: false,
            coord: Default::default(),
        })
    }

    #[test]
    fn a_lost_neighbour_is_asked_again_until_it_answers() {
        let mut n = node(ME, &[A, B], Config::default());
        let t = Instant::now();
        // Its connection closed (a link down): dropped from the table.
        n.handle(t, Input::PeerDown(NodeId(A)));
        drain(&mut n);
        assert!(!n.routing().contains(NodeId(A)));
        let asks = |n: &mut crate::node::Node<_>, k: u64| {
            fire(n, t + Duration::from_secs(30 * k), Timer::Maintenance);
            drain(n)
                .iter()
                .filter(|(to, m)| {
                    *to == NodeId(A)
                        && matches!(m, Message::Neighbours(Neighbours { reply: true, .. }))
                })
                .count()
        };
        assert!(
            (1..=3).map(|k| asks(&mut n, k)).sum::<usize>() >= 2,
            "asked at its turns"
        );
        // It answers: back in the table, and off the list.
        deliver(&mut n, A, answer());
        assert!(n.routing().contains(NodeId(A)));
        assert!(n.lost.is_empty());
    }

    #[test]
    fn joins_stop_routing_around_a_lost_parent_that_speaks_again() {
        let mut n = node(ME, &[A, B], Config::default());
        let mid = Mid(A + 1);
        n.handle(Instant::now(), Input::Command(Command::Join { mid }));
        drain(&mut n);
        // A, the root, was our parent and went silent behind a partition.
        let g = n.groups.get_mut(&mid).unwrap();
        g.join.around = Some(NodeId(A));
        g.join.avoid_also(NodeId(A));
        n.remember_dead(NodeId(A));
        n.forget(NodeId(A));
        deliver(&mut n, A, answer());
        let g = &n.groups[&mid];
        assert_eq!(g.join.around, None);
        assert!(!g.join.avoid.contains(&NodeId(A)));
    }
}
