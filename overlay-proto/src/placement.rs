//! Tree placement: every tree node looks, now and then, for a parent that
//! gives it a shorter delay from the root, and moves there.
//!
//! Why. A Scribe tree is the union of the overlay routes from the members
//! to the root, walked backwards, plus the hand-downs of nodes at their
//! fan-out bound. Proximity neighbour selection makes each route's first
//! hops short, but the last ones, where few nodes share the key's prefix,
//! cross the network in random directions, and a hand-down places a joiner
//! under whichever child is next in turn. Members end up 1.6 to 2 times as
//! far from the root as the direct path, and the tree's links cross the
//! backbone many more times than IP multicast's would.
//!
//! How. A node's [`Message::Place`] climbs the tree to the root along
//! parent links. The root sets the node's delay *budget*: the direct
//! path's delay plus [`Config::placement_slack_pct`](crate::Config::placement_slack_pct).
//! The request then descends, in the manner of Overcast (Jannotti et al.,
//! OSDI 2000) with delay in place of bandwidth: a node X on the way passes
//! it to the child nearest the placed node N among those through which N
//! would stay within budget and which are nearer N than X is. When no
//! child is, X offers N a place ([`Message::PlaceOffer`]) if it has room,
//! and otherwise passes the request to its best child (within budget and
//! nearest, or else the shortest way from the root). So N ends near the
//! nearest tree node that keeps its path from the root within the budget:
//! short tree links, which put few copies on the network, and paths close
//! to the direct one.
//!
//! The descent follows one branch, and the nearest node with room may be
//! on another: once an offer has told N its budget, each later look also
//! asks N's [`Config::placement_asks`](crate::Config::placement_asks)
//! nearest routing-table neighbours directly (a `Place` from N itself,
//! with the budget, or N's own delay if that is more: see below). One
//! that is a tree node with room within that limit answers with an offer,
//! and nothing else: nearby members of large groups find each other, and
//! their links get shorter.
//!
//! N moves, by a join marked `moving` straight to X, if the offer is
//! better by [`Config::move_gain_pct`](crate::Config::move_gain_pct) (and
//! 2 ms): while N is over its budget, a shorter path from the root or a
//! shorter link on a path no longer than its own; within the budget, a
//! shorter link that stays within it. Most nodes are over their budget
//! (the near-root places went to whoever joined first), and for them a
//! shorter link on the same path is still a gain: fewer copies cross the
//! network, and nothing waits longer. So a node over its budget asks its
//! neighbours with its own delay as the limit instead of the budget. An
//! answer to a direct ask carries no budget (the asker knows its own), so
//! only the root's descent tells a node its budget.
//! Once X's acknowledgement arrives N
//! leaves its old parent, which prunes itself if it was a forwarder with
//! nothing left below it, so the forwarders that routing made but no
//! member needs fall away. Nodes look again after 1, 2, 4... seconds, up to
//! [`Config::optimize_interval`](crate::Config::optimize_interval), and a
//! node that moved starts over at 1 s: its new neighbourhood may offer
//! more, while a node that found nothing better looks less and less often.
//! A node whose way from the root grew by more than a tenth (a node above
//! it moved to a shorter link of its own) starts over too. A node that has
//! meanwhile run out of room refuses the move ([`Message::MoveRefused`])
//! rather than hand it down to a child: N weighed a place below X, not
//! below one of X's children.
//!
//! Steps down. A node also moves for a link at most half as long as its
//! own, on a path up to [`Config::step_down_pct`](crate::Config::step_down_pct)
//! longer than its limit (so its asks carry that much more). Moves
//! otherwise go toward the root only, and the places near it stay with
//! whoever took them first; a node that steps down below a nearby node
//! frees its place for one that needs it more, and its copies cross less
//! of the network. At 10,000 nodes a step of 10% took link stress from 1.98
//! to 1.90 times IP multicast's, and mean stretch from 1.327 to 1.321.
//!
//! Lone relays. A forwarder that is no member and relays for one child only
//! is a detour: at its next look it asks the child to move up to its own
//! parent ([`Message::Splice`]), and prunes itself once the child has left.
//! The link straight from that parent is no longer than the two through the
//! forwarder (delays obey the triangle inequality along shortest paths), and
//! one node fewer relays every message. At 10,000 nodes this takes the
//! share of forwarders that are not members from 38% to 22%.
//! Trees converge as the nodes above them settle and the coordinates
//! improve.
//!
//! Distances. `d(c, N)` for nodes that never met comes from network
//! coordinates ([`crate::coord`]); `D(X)` is learned down the tree, each
//! node adding the measured delay of its own parent link to its parent's
//! (carried in [`Message::JoinAck`]).
//!
//! Safety. The descent starts at the root and never enters N's own
//! subtree (it skips N, and the subtree hangs below N), and a moving join
//! is refused by a node that finds N on its own path, as is an
//! acknowledgement whose path holds N. That alone does not stop two moves
//! at once from crossing: N moving below a node of M's subtree while M
//! moves below a node of N's, each new parent answering before the other
//! move's new path has reached it. So a node moves only to a parent nearer
//! the root (by delay) than itself, as the offer says and again as the
//! acknowledgement says; crossing moves would each need the other's
//! subtree to be nearer the root than its top, which it never is. (At a
//! placement budget of +10% at 10,000 nodes, such a pair closed a cycle
//! before this rule; both had to join again, and their subtree waited.) A node
//! keeps its parent until the new one has acknowledged it, and the new
//! link starts at the first message the node still needs, so a move loses
//! and repeats nothing. A placement is answered at most once, and only
//! a node's own child can make it climb, so a peer cannot make a node send
//! more than it receives.

use std::time::Duration;

use rand::Rng;

use crate::coord::{random_direction, Coord};
use crate::id::{Mid, NodeId};
use crate::message::{Join, Offer, Place, Splice};
use crate::message::{Message, NodeInfo};
use crate::node::Node;
use crate::routing::RoutingTable;
use crate::timer::Timer;

/// Round-trip times of connected peers outside the routing table that a
/// node remembers: enough for the tree neighbours it just met and the
/// peers whose coordinates are on their way.
pub(crate) const RTT_MEMORY: usize = 32;

/// Least gain of a move, in µs of delay from the root.
const MIN_GAIN_US: u32 = 2_000;

/// Longest link, in percent of its own, for which a node takes a step
/// down (see [`Config::step_down_pct`](crate::Config::step_down_pct)).
const STEP_DOWN_LINK_PCT: u64 = 50;

/// `us` made longer by `pct` percent.
fn stepped(us: u32, pct: u16) -> u32 {
    (us as u64 * (100 + pct as u64) / 100).min(u32::MAX as u64) as u32
}

/// Wait before a node first looks for a better place.
const FIRST_LOOK: Duration = Duration::from_secs(1);

/// What a node knows of distances: its own network coordinate, and the
/// round-trip times of the peers it recently connected to.
#[derive(Debug, Default)]
pub(crate) struct Proximity {
    /// This node's network coordinate (see [`crate::coord`]).
    pub(crate) coord: Coord,
    /// Round-trip times of recently connected peers that the routing table
    /// does not hold (at most [`RTT_MEMORY`]): samples for the coordinate,
    /// and tree links' delays.
    rtts: RttMemory,
}

impl Proximity {
    /// Remembers a connected peer's measured round-trip time.
    pub(crate) fn remember_rtt(&mut self, peer: NodeId, rtt: Duration) {
        self.rtts.insert(peer, rtt);
    }

    /// Forgets a peer whose connection is gone.
    pub(crate) fn forget(&mut self, peer: NodeId) {
        self.rtts.remove(peer);
    }

    /// The measured round-trip time to a peer, if we have one (ours, or
    /// the routing table's).
    pub(crate) fn rtt_to(&self, table: &RoutingTable, peer: NodeId) -> Option<Duration> {
        self.rtts.get(peer).or_else(|| table.rtt(peer))
    }

    /// One-way delay to a peer in µs: measured if we can, else predicted.
    pub(crate) fn link_delay_us(&self, table: &RoutingTable, peer: NodeId, coord: &Coord) -> u32 {
        match self.rtt_to(table, peer) {
            Some(rtt) => (rtt.as_micros() / 2).min(u32::MAX as u128) as u32,
            None => self.coord.delay_us(coord),
        }
    }

    /// A peer told us its coordinate: if we measured our round trip to it,
    /// that is a sample for ours.
    pub(crate) fn learn(
        &mut self,
        table: &RoutingTable,
        rng: &mut impl Rng,
        peer: NodeId,
        coord: &Coord,
    ) {
        if let Some(rtt) = self.rtt_to(table, peer) {
            self.coord
                .update(coord, rtt.as_secs_f64() * 1000.0, || random_direction(rng));
        }
    }
}

impl<R: Rng> Node<R> {
    /// Remembers a connected peer's measured round-trip time.
    pub(crate) fn remember_rtt(&mut self, peer: NodeId, rtt: Duration) {
        self.proximity.remember_rtt(peer, rtt);
    }

    /// The measured round-trip time to a peer, if we have one.
    pub(crate) fn rtt_to(&self, peer: NodeId) -> Option<Duration> {
        self.proximity.rtt_to(&self.overlay.table, peer)
    }

    /// One-way delay to a peer in µs: measured if we can, else predicted.
    pub(crate) fn link_delay_us(&self, peer: NodeId, coord: &Coord) -> u32 {
        self.proximity
            .link_delay_us(&self.overlay.table, peer, coord)
    }

    /// A peer told us its coordinate: if we measured our round trip to it,
    /// that is a sample for ours.
    pub(crate) fn learn_coord(&mut self, peer: NodeId, coord: &Coord) {
        self.proximity
            .learn(&self.overlay.table, &mut self.rng, peer, coord);
    }

    /// The child of `mid`'s tree through which a node at `coord` would be
    /// nearest the root, and that delay; children in `skip`, not yet
    /// acknowledged, or of unknown place are not candidates.
    fn best_child(&self, mid: Mid, coord: &Coord, skip: &[NodeId]) -> Option<(NodeInfo, u32)> {
        let g = self.groups.get(&mid)?;
        g.acked_children()
            .filter(|c| !skip.contains(&c.info.id))
            .filter_map(|c| {
                let at = c.coord?;
                let cost = g
                    .place
                    .delay_us
                    .saturating_add(self.link_delay_us(c.info.id, &at))
                    .saturating_add(at.delay_us(coord));
                Some((c, cost))
            })
            // Among equals (nodes whose coordinates have not learned
            // anything yet), spread the hand-downs.
            .min_by_key(|&(c, cost)| (cost, c.handed, c.info.id))
            .map(|(c, cost)| (c.info, cost))
    }

    /// The child a join is handed down to when we are at the fan-out
    /// bound: the one nearest the joiner's way, or, when no child's place
    /// is known, the one handed the fewest joins.
    pub(crate) fn hand_down_to(
        &mut self,
        mid: Mid,
        coord: &Coord,
        skip: &[NodeId],
    ) -> Option<NodeInfo> {
        let best = if coord.is_sane() {
            self.best_child(mid, coord, skip).map(|(c, _)| c.id)
        } else {
            None
        };
        let g = self.groups.get_mut(&mid)?;
        let child = match best {
            Some(id) => g.children.get_mut(&id),
            None => g
                .children
                .values_mut()
                .filter(|c| !skip.contains(&c.info.id))
                .min_by_key(|c| c.handed),
        }?;
        child.handed += 1;
        Some(child.info)
    }

    /// Schedules this node's next look for a better place in `mid`'s tree,
    /// unless one is pending.
    pub(crate) fn arm_optimize(&mut self, mid: Mid) {
        if !self.cfg.tree_optimize {
            return;
        }
        let _now = self.now;
        let max = self.cfg.optimize_interval.max(FIRST_LOOK);
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        if self.timers.is_armed(Timer::Optimize(mid)) || g.is_root() {
            return;
        }
        // The wait doubles each round (a move starts the rounds over): most
        // of what a node gains comes in its first looks, and a tree of a
        // hundred thousand nodes that looked every few seconds would spend
        // its traffic on placements.
        let wait = (FIRST_LOOK * 2u32.saturating_pow(g.place.round.min(16) as u32)).min(max);
        g.place.round = g.place.round.saturating_add(1);
        let jitter = self.rng.random_range(0..=wait.as_millis() as u64 / 4);
        let wait = wait + Duration::from_millis(jitter);
        self.set_timer(wait, Timer::Optimize(mid));
    }

    pub(crate) fn on_optimize_timer(&mut self, mid: Mid) {
        let _now = self.now;
        let me = self.me();
        let coord = self.proximity.coord;
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        if !g.attached || g.is_root() {
            // Attaching arms it again.
            return;
        }
        g.place.moving = None;
        let nonce = self.rng.random::<u64>();
        g.place.ask = Some(nonce);
        let parent = g.parent;
        let budget = g.place.budget_us;
        // Over the budget, a neighbour's place is still worth a look if it
        // is no farther from the root than ours, or a step farther: the link
        // may be shorter (the limit `on_place_offer` weighs offers by).
        let limit = budget.map(|b| b.max(stepped(g.place.delay_us, self.cfg.step_down_pct)));
        // A forwarder that relays for one child only is a detour: the child
        // moves up to our parent, and we leave once it has.
        let lone = match (g.member, parent, g.acked_children().next()) {
            (false, Some(p), Some(c)) if g.children.len() == 1 => Some((c.info, p)),
            _ => None,
        };
        // A child of the root is as near it as the tree allows.
        let worth = g.path.len() > 1;
        self.arm_optimize(mid);
        if let Some((child, parent)) = lone {
            self.send(child, Message::Splice(Splice { mid, parent }));
            return;
        }
        let (Some(p), true) = (parent, worth && coord.is_sane()) else {
            return;
        };
        self.send(
            p,
            Message::Place(Place {
                mid,
                node: me,
                coord,
                budget_us: None,
                nonce,
            }),
        );
        // The descent follows one branch; our nearest neighbours may be
        // tree nodes with room on another.
        let Some(limit) = limit else {
            return;
        };
        for n in self.overlay.table.nearest(self.cfg.placement_asks) {
            if n.id != p.id {
                let ask = Message::Place(Place {
                    mid,
                    node: me,
                    coord,
                    budget_us: Some(limit),
                    nonce,
                });
                self.send(n, ask);
            }
        }
    }

    /// Our parent relays for us alone and steps aside: move to its parent.
    pub(crate) fn on_splice(&mut self, from: NodeInfo, mid: Mid, to: NodeInfo) {
        let me = self.me();
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        let from_parent = g.parent.is_some_and(|p| p.id == from.id);
        if !from_parent || !g.attached || g.place.moving.is_some() || g.is_root() {
            return;
        }
        // Our path ends with our parent; the node before it is its parent.
        let grandparent = g.path.len().checked_sub(2).map(|i| g.path[i]);
        if grandparent != Some(to.id) || to.id == me.id || g.children.contains_key(&to.id) {
            // Not our parent's parent as we know it: ignore.
            return;
        }
        tracing::debug!(mid = %mid, to = %to.id.short(), "our parent relays for us alone; moving to its parent");
        self.move_to(mid, to);
    }

    /// Asks `to` to take us as its child in `mid` (a join marked `moving`);
    /// our parent stays ours until `to` acknowledges.
    fn move_to(&mut self, mid: Mid, to: NodeInfo) {
        let me = self.me();
        let coord = self.proximity.coord;
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        g.place.moving = Some(to.id);
        let join = Join {
            mid,
            joiner: me,
            want: g.stream.next,
            detour: None,
            coord,
            moving: true,
            nonce: g.join.nonce,
        };
        self.send(to, Message::Join(join));
    }

    /// Offers `node` a place below us in `mid`: `delay_us` from the root
    /// through us, `edge_us` of it the link to us, within `budget_us`.
    fn offer_place(
        &mut self,
        node: NodeInfo,
        mid: Mid,
        delay_us: u32,
        edge_us: u32,
        budget_us: Option<u32>,
        nonce: u64,
    ) {
        let offer = Message::PlaceOffer(Offer {
            mid,
            delay_us,
            edge_us,
            budget_us,
            nonce,
        });
        self.send(node, offer);
    }

    pub(crate) fn on_place(&mut self, from: NodeInfo, place: Place) {
        let Place {
            mid,
            mut node,
            coord,
            budget_us,
            nonce,
        } = place;
        if !coord.is_sane() || node.id == self.me().id {
            return;
        }
        if node.id == from.id {
            // Asked by the node itself: it is where its handshake proved
            // it is, whatever address it named, and so it is named to
            // the nodes the ask goes on to.
            node = from;
        }
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        if !g.attached && !g.is_root() {
            return;
        }
        let (budget, asked) = match budget_us {
            // Climbing: only our own subtree climbs through us.
            None if !g.is_root() => {
                if let (true, Some(p)) = (g.children.contains_key(&from.id), g.parent) {
                    let place = Place {
                        mid,
                        node,
                        coord,
                        budget_us: None,
                        nonce,
                    };
                    self.pass_place(p, place);
                }
                return;
            }
            // At the root: the budget is the direct path's delay, plus the
            // slack.
            None => {
                let direct = self.proximity.coord.delay_us(&coord) as u64;
                let slack = direct * self.cfg.placement_slack_pct as u64 / 100;
                ((direct + slack).min(u32::MAX as u64) as u32, false)
            }
            Some(b) if g.parent.is_some_and(|p| p.id == from.id) => (b, false),
            // The node asks us directly.
            Some(b) if node.id == from.id => (b, true),
            Some(_) => return,
        };
        if g.children.contains_key(&node.id) || g.path.contains(&node.id) {
            // It is here already, or above us: nothing better below.
            return;
        }
        let room = g.children.len() < self.cfg.max_children.max(1);
        if asked {
            // An offer if we have room within its limit, and nothing else
            // (one answer to one ask). It is a routing neighbour: our delay
            // to it is likely measured.
            let edge = self.link_delay_us(node.id, &coord);
            let own = g.place.delay_us.saturating_add(edge);
            if room && own <= budget {
                self.offer_place(node, mid, own, edge, None, nonce);
            }
            return;
        }
        let edge = self.proximity.coord.delay_us(&coord);
        let own = g.place.delay_us.saturating_add(edge);
        let children = self.placements(mid, &coord, node.id);
        // Nearer the node than we are, and within the budget: go on down.
        let nearer = children
            .iter()
            .filter(|c| c.delay_us <= budget && c.edge_us < edge)
            .min_by_key(|c| (c.edge_us, c.info.id));
        let to = match nearer {
            Some(c) => Some(c.info),
            None if room && (own <= budget || children.iter().all(|c| c.delay_us >= own)) => {
                self.offer_place(node, mid, own, edge, Some(budget), nonce);
                return;
            }
            // Full, or a child gives a shorter way: the best of them.
            None => children
                .iter()
                .min_by_key(|c| {
                    let over = c.delay_us > budget;
                    (over, if over { c.delay_us } else { c.edge_us }, c.info.id)
                })
                .map(|c| c.info),
        };
        if let Some(to) = to {
            let place = Place {
                mid,
                node,
                coord,
                budget_us: Some(budget),
                nonce,
            };
            self.pass_place(to, place);
        }
    }

    /// Passes another node's placement ask on to a tree neighbour. Every
    /// node below us climbs through us to the root, and every ask the root
    /// sends down into our subtree comes through us too, so a node near
    /// the root passes on a whole subtree's asks. The neighbour counts
    /// them apart from our own requests, in a budget
    /// [`RELAY_FACTOR`](crate::ratelimit::RELAY_FACTOR) times theirs, and
    /// we keep to half of it, so it never takes them for a flood; past that
    /// an ask waits for its asker's next look.
    fn pass_place(&mut self, to: NodeInfo, place: Place) {
        let half = crate::ratelimit::RELAY_FACTOR / 2;
        let rate = self.cfg.peer_request_rate.saturating_mul(half);
        let burst = self.cfg.peer_request_burst.saturating_mul(half);
        if self.pacing.take(to.id, self.now, rate, burst) {
            self.send(to, Message::Place(place));
        } else {
            self.dropped.count("place (paced)");
        }
    }

    /// What each child of `mid`'s tree (acknowledged, of known place, not
    /// `skip`) would give a node at `coord` as its parent.
    fn placements(&self, mid: Mid, coord: &Coord, skip: NodeId) -> Vec<Placement> {
        let Some(g) = self.groups.get(&mid) else {
            return Vec::new();
        };
        g.acked_children()
            .filter(|c| c.info.id != skip)
            .filter_map(|c| {
                let at = c.coord?;
                let edge_us = at.delay_us(coord);
                let delay_us = g
                    .place
                    .delay_us
                    .saturating_add(self.link_delay_us(c.info.id, &at))
                    .saturating_add(edge_us);
                Some(Placement {
                    info: c.info,
                    delay_us,
                    edge_us,
                })
            })
            .collect()
    }

    pub(crate) fn on_place_offer(&mut self, from: NodeInfo, offer: Offer) {
        let mid = offer.mid;
        let gain_pct = self.cfg.move_gain_pct as u64;
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        if !g.attached || g.is_root() || g.place.moving.is_some() {
            return;
        }
        let Some(parent) = g.parent else {
            return;
        };
        if parent.id == from.id
            || g.children.contains_key(&from.id)
            || g.join.withholders.contains(&from.id)
        {
            return;
        }
        // An answer to a direct ask brings no budget: we asked knowing it.
        let Some(budget) = offer.budget_us.or(g.place.budget_us) else {
            return;
        };
        let budget_known = g.place.budget_us == Some(budget);
        let edge = self
            .rtt_to(parent.id)
            .map_or(offer.edge_us.saturating_mul(2), |r| {
                (r.as_micros() / 2).min(u32::MAX as u128) as u32
            });
        // The offerer's own delay from the root.
        let offerer_us = offer.delay_us.saturating_sub(offer.edge_us);
        let enough = |now: u32, then: u32| {
            let gain = now.saturating_sub(then) as u64;
            gain >= (now as u64 * gain_pct / 100).max(MIN_GAIN_US as u64)
        };
        // Only below a parent nearer the root than we are: two nodes that
        // move at once, each below the other (in a part of the tree the
        // other's move has not yet told about), would close a cycle, and
        // each would have moved below a node farther from the root than
        // itself. Then a shorter link, on a path within the limit our asks
        // carry (the budget, or our own delay once we are over it); over
        // budget, a shorter path from the root as well. Or a step down: a
        // link at most half as long, on a path a little beyond that limit.
        let limit = budget.max(g.place.delay_us);
        let step_down = offer.delay_us <= stepped(limit, self.cfg.step_down_pct)
            && offer.edge_us as u64 * 100 <= edge as u64 * STEP_DOWN_LINK_PCT;
        let better = offerer_us < g.place.delay_us
            && ((offer.delay_us <= limit && enough(edge, offer.edge_us))
                || step_down
                || (g.place.delay_us > budget && enough(g.place.delay_us, offer.delay_us)));
        let from_us = g.place.delay_us;
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        if !budget_known {
            g.place.budget_us = Some(budget);
        }
        if !better {
            return;
        }
        tracing::debug!(mid = %mid, to = %from.id.short(), from_us, to_us = offer.delay_us, "moving to a better parent");
        self.move_to(mid, from);
    }
}

/// The round-trip times of the last [`RTT_MEMORY`] connected peers, oldest
/// replaced first. A short list searched end to end: cheaper than a map at
/// this size, and it is consulted for every message a tree neighbour sends.
#[derive(Debug, Default)]
pub(crate) struct RttMemory {
    entries: Vec<(NodeId, Duration)>,
    /// The entry the next new peer replaces, once the list is full.
    next: usize,
}

impl RttMemory {
    pub(crate) fn get(&self, peer: NodeId) -> Option<Duration> {
        self.entries
            .iter()
            .find(|(id, _)| *id == peer)
            .map(|&(_, rtt)| rtt)
    }

    pub(crate) fn insert(&mut self, peer: NodeId, rtt: Duration) {
        if let Some(e) = self.entries.iter_mut().find(|(id, _)| *id == peer) {
            e.1 = rtt;
        } else if self.entries.len() < RTT_MEMORY {
            self.entries.push((peer, rtt));
        } else {
            self.entries[self.next] = (peer, rtt);
            self.next = (self.next + 1) % RTT_MEMORY;
        }
    }

    pub(crate) fn remove(&mut self, peer: NodeId) {
        if let Some(at) = self.entries.iter().position(|(id, _)| *id == peer) {
            self.entries.remove(at);
            if self.next > at {
                self.next -= 1;
            }
            if self.next >= self.entries.len() {
                self.next = 0;
            }
        }
    }
}

/// One candidate parent, as a placement sees it.
#[derive(Debug, Clone, Copy)]
struct Placement {
    info: NodeInfo,
    /// The placed node's delay from the root under it.
    delay_us: u32,
    /// The link's delay from it to the placed node.
    edge_us: u32,
}

#[cfg(test)]
mod tests {
    //! Moves, one node at a time: inputs in, outputs checked.
    use super::*;
    use crate::config::Config;
    use crate::interface::{Command, Input};
    use crate::message::JoinAck;
    use crate::test_support::{deliver, deliver_answer, drain, fire, info};
    use rand::rngs::StdRng;
    use std::time::Instant;

    const ROOT: u128 = 0xF000_0000_0000_0000_0000_0000_0000_0000;
    const P: u128 = 0xE000_0000_0000_0000_0000_0000_0000_0000;
    const M: u128 = 0xD000_0000_0000_0000_0000_0000_0000_0000;
    const N: u128 = 0x1000_0000_0000_0000_0000_0000_0000_0000;
    const MID: Mid = Mid(0xF000_0000_0000_0000_0000_0000_0000_0001);

    fn node(me: u128, known: &[u128]) -> Node<StdRng> {
        crate::test_support::node(me, known, Config::default())
    }

    fn ack(path: &[u128], delay_us: u32) -> Message {
        Message::JoinAck(JoinAck {
            mid: MID,
            next: 1,
            epoch: 1,
            path: path.iter().map(|&i| NodeId(i)).collect(),
            delay_us,
            coord: Coord::default(),
            key: None,
            nonce: 0,
        })
    }

    /// N, a member attached under ROOT -> P, 80 ms from the root.
    fn attached_n() -> Node<StdRng> {
        attached_n_with(Config::default())
    }

    /// [`attached_n`] with settings of its own.
    fn attached_n_with(cfg: Config) -> Node<StdRng> {
        let mut n = crate::test_support::node(N, &[ROOT, P, M], cfg);
        n.handle(Instant::now(), Input::Command(Command::Join { mid: MID }));
        drain(&mut n);
        n.handle(
            Instant::now(),
            Input::Rtt {
                peer: info(P),
                rtt: Duration::from_millis(60),
            },
        );
        deliver_answer(&mut n, P, ack(&[ROOT, P], 50_000));
        assert_eq!(n.group(MID).unwrap().parent.map(|p| p.id), Some(NodeId(P)));
        // It looks for a better place: the offers in the tests answer this.
        fire(&mut n, Instant::now(), Timer::Optimize(MID));
        drain(&mut n);
        n
    }

    fn offer(delay_us: u32, edge_us: u32) -> Message {
        Message::PlaceOffer(Offer {
            mid: MID,
            delay_us,
            edge_us,
            budget_us: Some(60_000),
            nonce: 0,
        })
    }

    #[test]
    fn a_node_over_budget_moves_to_a_shorter_path_and_then_leaves_its_parent() {
        let mut n = attached_n();
        // 80 ms from the root, 60 allowed: 78 is not gain enough (nor is
        // a link 1 ms shorter than our 30), 50 is.
        assert!(deliver_answer(&mut n, M, offer(78_000, 29_000)).is_empty());
        let sent = deliver_answer(&mut n, M, offer(50_000, 5_000));
        assert!(matches!(
            sent[..],
            [(to, Message::Join(Join { moving: true, want: Some(1), .. }))] if to == NodeId(M)
        ));
        // Until M answers, P stays our parent.
        assert_eq!(n.group(MID).unwrap().parent.map(|p| p.id), Some(NodeId(P)));
        let sent = deliver_answer(&mut n, M, ack(&[ROOT, M], 20_000));
        assert!(
            sent.iter()
                .any(|(to, m)| *to == NodeId(P) && matches!(m, Message::Leave { .. })),
            "the old parent is told: {sent:?}"
        );
        let g = n.group(MID).unwrap();
        assert_eq!(g.parent.map(|p| p.id), Some(NodeId(M)));
        assert!(g.attached);
    }

    #[test]
    fn a_longer_way_to_the_root_makes_the_node_look_again_soon() {
        let mut n = attached_n();
        // Two looks without a move (the first was `attached_n`'s): the next
        // is 4 s away, and growing.
        let at = n.timers.get(Timer::Optimize(MID)).expect("a look is armed");
        fire(&mut n, at, Timer::Optimize(MID));
        drain(&mut n);
        let round = |n: &Node<StdRng>| n.groups[&MID].place.round;
        assert_eq!(round(&n), 3);
        // P re-acknowledges us with its path 5% longer: no hurry.
        deliver_answer(&mut n, P, ack(&[ROOT, P], 54_000));
        assert_eq!(round(&n), 3);
        // P moved to a link of its own that puts us 20% farther away: the
        // rounds start over, the next look a second away.
        deliver_answer(&mut n, P, ack(&[ROOT, P], 70_000));
        assert_eq!(round(&n), 1);
    }

    #[test]
    fn a_refused_move_leaves_the_node_where_it_was() {
        let mut n = attached_n();
        deliver_answer(&mut n, M, offer(40_000, 5_000));
        // M is no longer on the tree: it refuses the move.
        assert!(deliver(&mut n, M, Message::MoveRefused { mid: MID }).is_empty());
        let g = n.group(MID).unwrap();
        assert_eq!(g.parent.map(|p| p.id), Some(NodeId(P)));
        assert!(g.attached, "a refused move does not detach");
        // A later, unasked acknowledgement from M is turned away.
        let sent = deliver_answer(&mut n, M, ack(&[ROOT, M], 20_000));
        assert!(matches!(sent[..], [(to, Message::Leave { .. })] if to == NodeId(M)));
        assert_eq!(n.group(MID).unwrap().parent.map(|p| p.id), Some(NodeId(P)));
    }

    #[test]
    fn a_node_we_move_to_that_became_our_child_stays_our_child() {
        // N asks to move to M, and M, moving too, asks N at the same time:
        // N adopts M. M then turns N's move away (N is above it now).
        let mut n = attached_n();
        deliver_answer(&mut n, M, offer(40_000, 5_000));
        let move_of_m = Message::Join(Join {
            mid: MID,
            joiner: info(M),
            want: Some(1),
            detour: None,
            coord: Coord::default(),
            moving: true,
            nonce: 0,
        });
        let sent = deliver(&mut n, M, move_of_m);
        assert!(matches!(sent[..], [(to, Message::JoinAck(JoinAck { .. }))] if to == NodeId(M)));
        assert!(n
            .group(MID)
            .unwrap()
            .children
            .iter()
            .any(|c| c.id == NodeId(M)));
        // The refusal ends only the move. (It used to be a leave, which
        // ended every link: N dropped M, which still counted N as its
        // parent and went without messages until its parent's silence
        // about it made it join again; seen once at 100k nodes.)
        deliver(&mut n, M, Message::MoveRefused { mid: MID });
        let g = n.group(MID).unwrap();
        assert!(
            g.children.iter().any(|c| c.id == NodeId(M)),
            "M is still our child"
        );
        assert_eq!(g.parent.map(|p| p.id), Some(NodeId(P)));
        assert!(g.attached, "we stay where we were");
        // Had M adopted N as well (their moves crossed), M would have
        // turned N's acknowledgement away with a leave, which ends both.
        deliver(&mut n, M, Message::Leave { mid: MID });
        let g = n.group(MID).unwrap();
        assert!(!g.children.iter().any(|c| c.id == NodeId(M)));
        assert_eq!(g.parent.map(|p| p.id), Some(NodeId(P)));
    }

    #[test]
    fn a_forwarder_that_relays_for_one_child_hands_it_to_its_parent() {
        // N's join made M a forwarder under P.
        let mut m = node(M, &[ROOT, P, N]);
        let join = Message::Join(Join {
            mid: MID,
            joiner: info(N),
            want: None,
            detour: None,
            coord: Coord::default(),
            moving: false,
            nonce: 0,
        });
        deliver(&mut m, N, join);
        deliver_answer(&mut m, P, ack(&[ROOT, P], 30_000));
        assert!(m.group(MID).unwrap().attached);
        // At its first look, M asks N to move up to P.
        let due = m.timers.get(Timer::Optimize(MID)).expect("a look is due");
        fire(&mut m, due, Timer::Optimize(MID));
        let sent = drain(&mut m);
        assert!(
            matches!(&sent[..], [(to, Message::Splice(Splice { parent, .. }))] if *to == NodeId(N) && parent.id == NodeId(P)),
            "{sent:?}"
        );
        // N, under ROOT -> P, moves to ROOT when P steps aside; not for
        // anyone else, nor to a node that is not its parent's parent.
        let mut n = attached_n();
        let splice = |to| {
            Message::Splice(Splice {
                mid: MID,
                parent: info(to),
            })
        };
        assert!(deliver(&mut n, M, splice(ROOT)).is_empty());
        assert!(deliver(&mut n, P, splice(M)).is_empty());
        let sent = deliver(&mut n, P, splice(ROOT));
        assert!(
            matches!(sent[..], [(to, Message::Join(Join { moving: true, .. }))] if to == NodeId(ROOT)),
            "{sent:?}"
        );
        // P stays its parent until ROOT takes it.
        assert_eq!(n.group(MID).unwrap().parent.map(|p| p.id), Some(NodeId(P)));
    }

    #[test]
    fn a_moving_join_never_makes_forwarders_or_cycles() {
        // Off the tree: refused, no state kept, nothing routed on.
        let mut m = node(M, &[ROOT, P, N]);
        let join = |want| {
            Message::Join(Join {
                mid: MID,
                joiner: info(N),
                want,
                detour: None,
                coord: Coord::default(),
                moving: true,
                nonce: 0,
            })
        };
        let sent = deliver(&mut m, N, join(Some(1)));
        assert!(matches!(sent[..], [(to, Message::MoveRefused { .. })] if to == NodeId(N)));
        assert!(m.groups().is_empty());
        // On the tree below N: refused too, where a plain join would be
        // passed on toward the root.
        m.handle(Instant::now(), Input::Command(Command::Join { mid: MID }));
        drain(&mut m);
        deliver_answer(&mut m, N, ack(&[ROOT, P, N], 30_000));
        assert!(m.group(MID).unwrap().attached);
        let sent = deliver(&mut m, N, join(Some(1)));
        assert!(matches!(sent[..], [(to, Message::MoveRefused { .. })] if to == NodeId(N)));
        assert!(m.group(MID).unwrap().children.is_empty());
        assert_eq!(
            m.group(MID).unwrap().parent.map(|p| p.id),
            Some(NodeId(N)),
            "N stays M's parent"
        );
    }

    #[test]
    fn placement_climbs_to_the_root_and_the_root_offers_its_room() {
        let mut root = node(ROOT, &[P, N]);
        root.handle(
            Instant::now(),
            Input::Command(Command::CreateGroup { request: 1 }),
        );
        drain(&mut root);
        let mid = root.groups()[0].mid;
        // P is the root's child; N asks through it.
        let join = Message::Join(Join {
            mid,
            joiner: info(P),
            want: None,
            detour: None,
            coord: Coord::default(),
            moving: false,
            nonce: 0,
        });
        deliver(&mut root, P, join);
        let place = Message::Place(Place {
            mid,
            node: info(N),
            coord: Coord::default(),
            budget_us: None,
            nonce: 0,
        });
        let sent = deliver(&mut root, P, place.clone());
        assert!(
            matches!(sent[..], [(to, Message::PlaceOffer(Offer { .. }))] if to == NodeId(N)),
            "{sent:?}"
        );
        // Only a child may make a node climb: a stranger's request at a
        // non-root node goes nowhere.
        let mut p = node(P, &[ROOT, N]);
        p.handle(Instant::now(), Input::Command(Command::Join { mid }));
        drain(&mut p);
        deliver_answer(&mut p, ROOT, ack(&[ROOT], 0));
        assert!(deliver(&mut p, M, place).is_empty());
    }

    /// A node near the root passes on its subtree's asks no faster than
    /// its parent counts them, and sheds the rest.
    #[test]
    fn asks_climbing_through_a_node_are_paced_to_its_parents_budget() {
        let cfg = Config {
            peer_request_rate: 1,
            peer_request_burst: 10,
            ..Config::default()
        };
        let mut p = crate::test_support::node(P, &[ROOT, N, M], cfg);
        p.handle(Instant::now(), Input::Command(Command::Join { mid: MID }));
        drain(&mut p);
        deliver_answer(&mut p, ROOT, ack(&[ROOT], 0));
        let join = Message::Join(Join {
            mid: MID,
            joiner: info(M),
            want: None,
            detour: None,
            coord: Coord::default(),
            moving: false,
            nonce: 0,
        });
        deliver(&mut p, M, join);
        assert!(p
            .group(MID)
            .unwrap()
            .children
            .iter()
            .any(|c| c.id == NodeId(M)));
        let place = Message::Place(Place {
            mid: MID,
            node: info(N),
            coord: Coord::default(),
            budget_us: None,
            nonce: 0,
        });
        let passed: usize = (0..30)
            .map(|_| {
                deliver(&mut p, M, place.clone())
                    .iter()
                    .filter(|(to, m)| *to == NodeId(ROOT) && matches!(m, Message::Place(_)))
                    .count()
            })
            .sum();
        let half = (crate::ratelimit::RELAY_FACTOR / 2) as usize;
        assert_eq!(passed, 10 * half, "half the root's relay budget for P");
        assert_eq!(p.dropped().get("place (paced)"), (30 - 10 * half) as u64);
        assert_eq!(p.dropped().get("place relayed (rate-limited)"), 0);
    }

    fn ask(budget_us: u32) -> Message {
        Message::Place(Place {
            mid: MID,
            node: info(N),
            coord: Coord::default(),
            budget_us: Some(budget_us),
            nonce: 0,
        })
    }

    #[test]
    fn a_tree_node_asked_directly_offers_its_room_within_the_budget_only() {
        let cfg = Config {
            max_children: 1,
            ..Config::default()
        };
        let mut p = crate::test_support::node(P, &[ROOT, N, M], cfg);
        p.handle(Instant::now(), Input::Command(Command::Join { mid: MID }));
        drain(&mut p);
        deliver_answer(&mut p, ROOT, ack(&[ROOT], 10_000));
        assert!(p.group(MID).unwrap().attached);
        // 10 ms from the root and more: a budget of 5 ms gets no answer.
        assert!(deliver(&mut p, N, ask(5_000)).is_empty());
        let sent = deliver(&mut p, N, ask(1_000_000));
        assert!(
            matches!(
                sent[..],
                [(to, Message::PlaceOffer(Offer { budget_us: None, delay_us, .. }))]
                    if to == NodeId(N) && delay_us >= 10_000
            ),
            "{sent:?}"
        );
        // An ask naming another address for its own asker is answered
        // where the asker's handshake proved it is.
        let mut elsewhere = ask(1_000_000);
        if let Message::Place(p) = &mut elsewhere {
            p.node.addr = "192.0.2.1:9".parse().unwrap();
        }
        p.handle(
            Instant::now(),
            Input::Message {
                from: info(N),
                msg: elsewhere,
            },
        );
        let to: Vec<_> = std::iter::from_fn(|| p.poll_output())
            .filter_map(|o| match o {
                crate::interface::Output::Send {
                    to,
                    msg: Message::PlaceOffer(_),
                } => Some(to),
                _ => None,
            })
            .collect();
        assert_eq!(to, vec![info(N)], "offered at the proved address only");
        // Asked on another's behalf by a node that is not our parent: no.
        let stranger = Message::Place(Place {
            mid: MID,
            node: info(M),
            coord: Coord::default(),
            budget_us: Some(1_000_000),
            nonce: 0,
        });
        assert!(deliver(&mut p, N, stranger).is_empty());
        // Full: no offer.
        let join = Message::Join(Join {
            mid: MID,
            joiner: info(M),
            want: None,
            detour: None,
            coord: Coord::default(),
            moving: false,
            nonce: 0,
        });
        deliver(&mut p, M, join);
        assert_eq!(p.group(MID).unwrap().children.len(), 1);
        assert!(deliver(&mut p, N, ask(1_000_000)).is_empty());
    }

    #[test]
    fn a_node_that_knows_its_budget_asks_its_nearest_neighbours_too() {
        let mut n = attached_n();
        let rtt = |peer, ms| Input::Rtt {
            peer: info(peer),
            rtt: Duration::from_millis(ms),
        };
        n.handle(Instant::now(), rtt(M, 5));
        n.handle(Instant::now(), rtt(ROOT, 100));
        drain(&mut n);
        let look = |n: &mut Node<StdRng>, at| {
            fire(n, at, Timer::Optimize(MID));
            drain(n)
        };
        // No budget yet: only the climb through our parent.
        let later = Instant::now() + Duration::from_secs(3);
        let sent = look(&mut n, later);
        assert!(
            matches!(sent[..], [(to, Message::Place(Place { budget_us: None, .. }))] if to == NodeId(P)),
            "{sent:?}"
        );
        // An offer not worth a move still tells us our budget: the next
        // look also asks the nearest table entries but our parent. We are
        // 80 ms from the root, over the budget of 60: the asks carry our
        // own delay and a step down (10%), the most a place may give us.
        assert!(deliver_answer(&mut n, M, offer(80_000, 29_000)).is_empty());
        let sent = look(&mut n, later + Duration::from_secs(10));
        let asked: Vec<NodeId> = sent
            .iter()
            .filter(|(_, m)| {
                matches!(
                    m,
                    Message::Place(Place {
                        budget_us: Some(88_000),
                        ..
                    })
                )
            })
            .map(|(to, _)| *to)
            .collect();
        assert_eq!(asked, [NodeId(M), NodeId(ROOT)], "{sent:?}");
        assert_eq!(n.groups[&MID].place.budget_us, Some(60_000));
    }

    #[test]
    fn over_budget_a_shorter_link_on_a_path_no_longer_is_worth_a_move() {
        let mut n = attached_n();
        // Our link to P is 30 ms, our path 80 ms, the budget 60 ms.
        assert!(deliver_answer(&mut n, M, offer(78_000, 29_000)).is_empty());
        assert_eq!(n.groups[&MID].place.budget_us, Some(60_000));
        // A place 12 ms away, 9 ms farther from the root than ours: more
        // than the step down allows (10%), short as its link is.
        assert!(deliver_answer(&mut n, M, offer(89_000, 12_000)).is_empty());
        // The answer to an ask carries no budget: a shorter link on a
        // path no longer than ours is worth the move, and the budget stays.
        fire(
            &mut n,
            Instant::now() + Duration::from_secs(3),
            Timer::Optimize(MID),
        );
        drain(&mut n);
        let echo = Message::PlaceOffer(Offer {
            mid: MID,
            delay_us: 79_000,
            edge_us: 5_000,
            budget_us: None,
            nonce: 0,
        });
        let sent = deliver_answer(&mut n, M, echo);
        assert!(
            matches!(sent[..], [(to, Message::Join(Join { moving: true, .. }))] if to == NodeId(M)),
            "{sent:?}"
        );
        assert_eq!(n.groups[&MID].place.budget_us, Some(60_000));
    }

    #[test]
    fn a_link_half_as_long_is_worth_a_step_down() {
        // Our link to P is 30 ms, our path 80 ms, the budget 60 ms.
        let mut n = attached_n();
        // 8 ms farther from the root (10%) on a link of 16 ms: not half
        // as long as ours.
        assert!(deliver_answer(&mut n, M, offer(88_000, 16_000)).is_empty());
        // On a link of 15 ms, it is a step down worth taking.
        let sent = deliver_answer(&mut n, M, offer(88_000, 15_000));
        assert!(
            matches!(sent[..], [(to, Message::Join(Join { moving: true, .. }))] if to == NodeId(M)),
            "{sent:?}"
        );
        // Steps down turned off, the same offer is no move.
        let mut n = attached_n_with(Config {
            step_down_pct: 0,
            ..Config::default()
        });
        assert!(deliver_answer(&mut n, M, offer(88_000, 15_000)).is_empty());
    }

    #[test]
    fn a_move_goes_only_to_a_parent_nearer_the_root() {
        let mut n = attached_n();
        // Within a budget of 200 ms, 80 ms from the root, our link 30 ms.
        // A place 5 ms away below a node as far from the root as we are is
        // not taken, short as its link is: a node there may be moving below
        // us at this moment, and the two moves would close a cycle.
        let wide = |delay_us, edge_us| {
            Message::PlaceOffer(Offer {
                mid: MID,
                delay_us,
                edge_us,
                budget_us: Some(200_000),
                nonce: 0,
            })
        };
        assert!(deliver_answer(&mut n, M, wide(85_000, 5_000)).is_empty());
        // 1 ms nearer the root than we are, it is.
        let sent = deliver_answer(&mut n, M, wide(84_000, 5_000));
        assert!(
            matches!(sent[..], [(to, Message::Join(Join { moving: true, .. }))] if to == NodeId(M)),
            "{sent:?}"
        );
    }

    #[test]
    fn a_move_whose_new_parent_is_no_longer_nearer_the_root_is_given_up() {
        let mut n = attached_n();
        let sent = deliver_answer(&mut n, M, offer(50_000, 5_000));
        assert!(matches!(
            sent[..],
            [(_, Message::Join(Join { moving: true, .. }))]
        ));
        // By the time M answers, a node above it has moved, and M is 85 ms
        // from the root, farther than our 80: its path does not hold us,
        // but a move below us may be on its way to it. We stay with P.
        let sent = deliver_answer(&mut n, M, ack(&[ROOT, P, M], 85_000));
        assert!(
            matches!(sent[..], [(to, Message::Leave { .. })] if to == NodeId(M)),
            "{sent:?}"
        );
        let g = n.group(MID).unwrap();
        assert_eq!(g.parent.map(|p| p.id), Some(NodeId(P)));
        assert!(g.attached);
        // Nor is M our parent-to-be any more: a later offer may move us.
        let sent = deliver_answer(&mut n, M, offer(50_000, 5_000));
        assert!(matches!(
            sent[..],
            [(_, Message::Join(Join { moving: true, .. }))]
        ));
    }

    #[test]
    fn rtt_memory_keeps_the_latest_peers() {
        let mut m = RttMemory::default();
        let ms = Duration::from_millis;
        for i in 0..RTT_MEMORY as u128 + 2 {
            m.insert(NodeId(i), ms(i as u64));
        }
        // The two oldest made room; an update keeps its place.
        assert_eq!(m.get(NodeId(0)), None);
        assert_eq!(m.get(NodeId(1)), None);
        assert_eq!(m.get(NodeId(2)), Some(ms(2)));
        m.insert(NodeId(2), ms(99));
        assert_eq!(m.get(NodeId(2)), Some(ms(99)));
        assert_eq!(m.entries.len(), RTT_MEMORY);
        // A removed peer frees a place, which the next new peer takes.
        m.remove(NodeId(5));
        assert_eq!(m.get(NodeId(5)), None);
        m.insert(NodeId(1000), ms(1));
        assert_eq!(m.entries.len(), RTT_MEMORY);
        assert_eq!(m.get(NodeId(2)), Some(ms(99)));
        assert_eq!(m.get(NodeId(1000)), Some(ms(1)));
    }
}
