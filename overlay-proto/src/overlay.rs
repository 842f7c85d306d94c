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

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::coord::Coord;
use crate::ctx::Ctx;
use crate::id::NodeId;
use crate::interface::{Event, Output};
use crate::message::{JoinOverlay, Neighbours};
use crate::message::{Message, NodeInfo, MAX_NEIGHBOURS_PER_MESSAGE};
use crate::node::IdMap;
use crate::routing::RoutingTable;
use crate::timer::Timer;

/// Most nodes remembered as dead; the oldest are forgotten first.
pub(crate) const MAX_DEAD: usize = 1024;

/// Where this node stands in entering the overlay.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// Not bootstrapped yet.
    Idle,
    /// Dialing bootstrap addresses, waiting for a node to answer our join.
    /// Joins that reach us meanwhile wait in `deferred` (sender, joiner).
    Bootstrapping {
        addrs: Vec<SocketAddr>,
        round: u32,
        deferred: Vec<(NodeInfo, NodeInfo)>,
    },
    /// In the overlay (possibly alone).
    Joined,
}

/// The overlay part of a node: its routing state, how it entered, and who
/// it is trying to reach again.
#[derive(Debug)]
pub(crate) struct Overlay {
    pub(crate) table: RoutingTable,
    pub(crate) phase: Phase,
    /// Maintenance rounds since the node entered the overlay.
    maintenance_round: u32,
    /// Candidates for a routing-table slot whose round-trip time we asked
    /// the driver to measure, and since when (at most `max_probes`); looked
    /// up for every round-trip time that arrives.
    probing: IdMap<Instant>,
    /// Nodes found dead, and when (at most [`MAX_DEAD`]).
    dead: BTreeMap<NodeId, Instant>,
    /// Routing-table neighbours lost, and when, tried again one per
    /// maintenance round (at most `lost_peers`; see the module's doc).
    pub(crate) lost: VecDeque<(NodeInfo, Instant)>,
}

/// What [`Overlay::on_rtt`] leaves to the rest of the node: a round trip
/// to keep for tree links and coordinates.
pub(crate) type KeepRtt = Option<(NodeId, Duration)>;

impl Overlay {
    /// The routing state of a node that is in no overlay yet.
    pub(crate) fn new(table: RoutingTable, probing: IdMap<Instant>) -> Self {
        Overlay {
            table,
            phase: Phase::Idle,
            maintenance_round: 0,
            probing,
            dead: BTreeMap::new(),
            lost: VecDeque::new(),
        }
    }

    /// Whether the node is in the overlay.
    pub(crate) fn is_joined(&self) -> bool {
        matches!(self.phase, Phase::Joined)
    }

    pub(crate) fn bootstrap(&mut self, ctx: &mut Ctx, rng: &mut impl Rng, addrs: Vec<SocketAddr>) {
        if addrs.is_empty() {
            self.phase = Phase::Joined;
            ctx.emit(Event::OverlayJoined { known: 0 });
        } else {
            for a in &addrs {
                ctx.output(Output::Dial(*a));
            }
            self.phase = Phase::Bootstrapping {
                addrs,
                round: 0,
                deferred: Vec::new(),
            };
            ctx.set_timer(ctx.cfg.bootstrap_backoff, Timer::Bootstrap);
        }
        self.maintenance_round = 0;
        // A second bootstrap must not start a second round of rounds.
        if !ctx.is_armed(Timer::Maintenance) {
            self.arm_maintenance(ctx, rng);
        }
    }

    /// Leaves the overlay: the node is idle until bootstrapped again.
    pub(crate) fn leave(&mut self) {
        self.phase = Phase::Idle;
    }

    /// The next maintenance round: after 1 s, then twice as long each
    /// round up to `maintenance_interval`, with jitter. The first rounds
    /// come quickly because nodes that entered the overlay at the same time
    /// may not have learned of each other yet.
    fn arm_maintenance(&mut self, ctx: &mut Ctx, rng: &mut impl Rng) {
        let round = self.maintenance_round.min(16);
        self.maintenance_round = self.maintenance_round.saturating_add(1);
        let interval = (Duration::from_secs(1) * 2u32.pow(round)).min(ctx.cfg.maintenance_interval);
        let jitter = rng.random_range(0..=interval.as_millis() as u64 / 4);
        ctx.set_timer(interval + Duration::from_millis(jitter), Timer::Maintenance);
    }

    pub(crate) fn on_dialed(&mut self, ctx: &mut Ctx, addr: SocketAddr, peer: Option<NodeInfo>) {
        let Phase::Bootstrapping { addrs, .. } = &self.phase else {
            return;
        };
        if !addrs.contains(&addr) {
            return;
        }
        match peer {
            Some(peer) if peer.id != ctx.me.id => {
                self.table.insert(peer);
                let me = ctx.me;
                ctx.send(peer, Message::JoinOverlay(JoinOverlay { joiner: me }));
            }
            Some(_) => tracing::warn!(%addr, "bootstrap address is this node itself"),
            None => tracing::debug!(%addr, "bootstrap dial failed"),
        }
    }

    pub(crate) fn on_bootstrap_timer(&mut self, ctx: &mut Ctx) {
        let Phase::Bootstrapping { addrs, round, .. } = &mut self.phase else {
            return;
        };
        *round += 1;
        let round = *round;
        let addrs = addrs.clone();
        if round >= ctx.cfg.bootstrap_attempts {
            // Nobody answered. The node keeps running alone, and the daemon
            // decides (it exits with an error); a later Bootstrap retries.
            self.phase = Phase::Idle;
            ctx.emit(Event::BootstrapFailed {
                addrs,
                attempts: round,
            });
            return;
        }
        for a in &addrs {
            ctx.output(Output::Dial(*a));
        }
        let backoff = ctx.cfg.bootstrap_backoff * 2u32.saturating_pow(round.min(4));
        ctx.set_timer(backoff, Timer::Bootstrap);
    }

    fn neighbours_for(&self, skip: NodeId) -> Vec<NodeInfo> {
        self.table
            .iter()
            .filter(|n| n.id != skip)
            .take(MAX_NEIGHBOURS_PER_MESSAGE)
            .collect()
    }

    pub(crate) fn on_join_overlay(
        &mut self,
        ctx: &mut Ctx,
        coord: Coord,
        from: NodeInfo,
        joiner: NodeInfo,
    ) {
        if joiner.id == ctx.me.id {
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
                if deferred.len() < ctx.cfg.max_deferred_joins
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
        ctx.send(
            joiner,
            Message::Neighbours(Neighbours {
                nodes,
                reply: false,
                coord,
            }),
        );
        // Route on before learning the joiner, so the route cannot end at it.
        if let Some(next) = self.table.next_hop(joiner.id.key(), &[joiner.id]) {
            if next.id != from.id {
                ctx.send(next, Message::JoinOverlay(JoinOverlay { joiner }));
            }
        }
        if direct {
            self.table.insert(joiner);
        } else if !self.known_dead(ctx.now, ctx.cfg.dead_memory, joiner.id) {
            self.table.insert_listed(joiner);
        }
    }

    pub(crate) fn on_neighbours(
        &mut self,
        ctx: &mut Ctx,
        coord: Coord,
        from: NodeInfo,
        nodes: Vec<NodeInfo>,
        reply: bool,
    ) {
        self.table.insert(from);
        let me = ctx.me.id;
        let (now, memory) = (ctx.now, ctx.cfg.dead_memory);
        let listed: Vec<NodeInfo> = nodes
            .into_iter()
            .filter(|n| n.id != me && n.id != from.id && !self.known_dead(now, memory, n.id))
            .collect();
        for n in listed {
            // Introduce ourselves to every node that takes a place in our
            // table, asking for its state in return: this places us in its
            // table and leaf set, and fills ours. It converges because only
            // nodes that fill a free slot or enter the leaf set are asked.
            if self.table.insert_listed(n) {
                ask_neighbours(ctx, coord, n);
            } else if ctx.cfg.proximity && !self.table.contains(n.id) {
                self.maybe_probe(ctx, n);
            }
        }
        if reply {
            let nodes = self.table.useful_to(from.id, MAX_NEIGHBOURS_PER_MESSAGE);
            ctx.send(
                from,
                Message::Neighbours(Neighbours {
                    nodes,
                    reply: false,
                    coord,
                }),
            );
        }
        if let Phase::Bootstrapping { deferred, .. } = &mut self.phase {
            let deferred = std::mem::take(deferred);
            self.phase = Phase::Joined;
            let known = self.table.len();
            tracing::debug!(known, "joined the overlay");
            ctx.emit(Event::OverlayJoined { known });
            for (from, joiner) in deferred {
                self.on_join_overlay(ctx, coord, from, joiner);
            }
        }
    }

    /// Asks the driver to measure a candidate for an occupied table slot, if
    /// the slot's and the node's probe budgets allow.
    fn maybe_probe(&mut self, ctx: &mut Ctx, n: NodeInfo) {
        if self.probing.len() >= ctx.cfg.max_probes || self.probing.contains_key(&n.id) {
            return;
        }
        if self.table.should_probe(&n, ctx.cfg.probes_per_slot) {
            self.probing.insert(n.id, ctx.now);
            ctx.output(Output::Probe(n));
        }
    }

    /// A round-trip time measured by the driver. Returns the round trip
    /// for the rest of the node to keep, if it is a connection's rather
    /// than a probe's and the table does not hold it.
    pub(crate) fn on_rtt(&mut self, ctx: &Ctx, peer: NodeInfo, rtt: Duration) -> KeepRtt {
        // Most round trips come with connections, not probes; at rest no
        // probe is out, and the map's memory need not be touched.
        let probed = !self.probing.is_empty() && self.probing.remove(&peer.id).is_some();
        if peer.id == ctx.me.id || self.known_dead(ctx.now, ctx.cfg.dead_memory, peer.id) {
            return None;
        }
        if ctx.cfg.proximity {
            self.table.offer(peer, rtt);
        } else {
            self.table.insert(peer);
            self.table.note_rtt(peer.id, rtt);
        }
        // A connection's round trip is kept for the tree links and the
        // coordinates; a probed candidate that lost its slot is neither,
        // and a burst of probes would push out the peers that are.
        (!probed && self.table.rtt(peer.id).is_none()).then_some((peer.id, rtt))
    }

    /// A peer's connection is up: the handshake proved it there.
    pub(crate) fn on_peer_up(&mut self, peer: NodeInfo) {
        self.dead.remove(&peer.id);
        self.table.insert(peer);
    }

    /// A peer's connection is down: no probe of it is waiting any more.
    pub(crate) fn on_peer_down(&mut self, peer: NodeId) {
        self.probing.remove(&peer);
    }

    /// A message came from `from`: if we had lost it or taken it for
    /// dead, it is back (in our table, off the lists). Returns whether it
    /// was.
    pub(crate) fn heard_again(&mut self, from: NodeInfo) -> bool {
        let mut back = false;
        if !self.lost.is_empty() {
            let before = self.lost.len();
            self.lost.retain(|(n, _)| n.id != from.id);
            back = self.lost.len() < before;
        }
        if !self.dead.is_empty() && self.dead.remove(&from.id).is_some() {
            // Taken for dead, but it speaks: it is back in our table.
            self.table.insert(from);
            back = true;
        }
        back
    }

    /// Remembers `peer` as dead for `dead_memory`, so that older neighbour
    /// lists do not bring it back.
    pub(crate) fn remember_dead(&mut self, ctx: &Ctx, peer: NodeId) {
        let now = ctx.now;
        let memory = ctx.cfg.dead_memory;
        self.dead.retain(|_, t| now.duration_since(*t) < memory);
        if self.dead.len() >= MAX_DEAD {
            if let Some(oldest) = self.dead.iter().min_by_key(|(_, t)| **t).map(|(id, _)| *id) {
                self.dead.remove(&oldest);
            }
        }
        self.dead.insert(peer, now);
    }

    /// Whether `peer` was found dead within `memory` of `now` (and not
    /// heard from since).
    pub(crate) fn known_dead(&self, now: Instant, memory: Duration, peer: NodeId) -> bool {
        self.dead
            .get(&peer)
            .is_some_and(|t| now.duration_since(*t) < memory)
    }

    /// Removes a node from the routing state and asks for replacements: a
    /// node of the same table row for the slot, the nearest leaf for the
    /// leaf set. Returns whether it was in the table.
    pub(crate) fn forget(
        &mut self,
        ctx: &mut Ctx,
        rng: &mut impl Rng,
        coord: Coord,
        peer: NodeId,
    ) -> bool {
        if let Some(info) = self.table.get(peer) {
            if self.lost.len() >= ctx.cfg.lost_peers {
                self.lost.pop_front();
            }
            if ctx.cfg.lost_peers > 0 {
                self.lost.push_back((info, ctx.now));
            }
        }
        let was_leaf = self.table.leaves().iter().any(|l| l.id == peer);
        let row = self.table.row_of(peer);
        if !self.table.remove(peer) {
            return false;
        }
        if !self.is_joined() {
            return true;
        }
        let mut ask: Vec<NodeInfo> = Vec::with_capacity(2);
        if !row.is_empty() {
            ask.push(row[rng.random_range(0..row.len())]);
        }
        if was_leaf {
            if let Some(&l) = self.table.leaves().first() {
                ask.push(l);
            }
        }
        ask.dedup_by_key(|n| n.id);
        for n in ask {
            ask_neighbours(ctx, coord, n);
        }
        true
    }

    /// Asks the lost neighbour whose turn it is for its neighbours, in case
    /// it is alive behind a link that is back (see the module's doc).
    fn try_lost(&mut self, ctx: &mut Ctx, coord: Coord) {
        let now = ctx.now;
        let memory = ctx.cfg.lost_memory;
        self.lost.retain(|(_, t)| now.duration_since(*t) < memory);
        let Some((n, t)) = self.lost.pop_front() else {
            return;
        };
        self.lost.push_back((n, t));
        if !self.table.contains(n.id) {
            tracing::debug!(peer = %n.id.short(), "asking a lost neighbour whether it is back");
            ask_neighbours(ctx, coord, n);
        }
    }

    pub(crate) fn on_maintenance(&mut self, ctx: &mut Ctx, rng: &mut impl Rng, coord: Coord) {
        self.table.decay_probes();
        let now = ctx.now;
        let stale = ctx.cfg.maintenance_interval;
        self.probing.retain(|_, t| now.duration_since(*t) < stale);
        if self.is_joined() {
            // The nearest leaf knows the nodes around us (leaf-set
            // stabilization); a random node fills the table.
            let nearest = self.table.leaves().first().copied();
            let known: Vec<NodeInfo> = self.table.iter().collect();
            if let Some(n) = nearest {
                ask_neighbours(ctx, coord, n);
            }
            if !known.is_empty() {
                let pick = known[rng.random_range(0..known.len())];
                if Some(pick.id) != nearest.map(|n| n.id) {
                    ask_neighbours(ctx, coord, pick);
                }
            }
            self.try_lost(ctx, coord);
        }
        self.arm_maintenance(ctx, rng);
    }
}

/// Asks `n` for its neighbours (and tells it ours come with our
/// coordinate).
fn ask_neighbours(ctx: &mut Ctx, coord: Coord, n: NodeInfo) {
    ctx.send(
        n,
        Message::Neighbours(Neighbours {
            nodes: Vec::new(),
            reply: true,
            coord,
        }),
    );
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
        assert!(n.overlay.lost.is_empty());
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
