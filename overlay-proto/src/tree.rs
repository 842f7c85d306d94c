//! Group trees: how joins build them, how they heal, how leaves prune them.
//!
//! The join rule is the one of the seed notes ("Building multicast tree in
//! ALM"), as Scribe implements it. A node P that wants to join sends a
//! [`Message::Join`] one overlay hop toward the mid. At each node Q it
//! reaches:
//!
//! - if Q has not seen a join for the mid, Q becomes a *forwarder*: P becomes
//!   Q's child and Q sends its own join one hop further toward the mid;
//! - if Q is already on the tree, P becomes Q's child and the join ends;
//! - if Q already has `max_children` children, Q does not refuse: it hands
//!   the join to one of its children, which applies the same rule, so the tree
//!   grows deeper instead of failing.
//!
//! A node is *attached* once a [`Message::JoinAck`] from its parent says the
//! parent is attached too; the root is attached by definition. The ack
//! carries the parent's path from the root.
//!
//! Healing. A node whose parent is lost (a crash noticed by
//! [`crate::liveness`], a closed connection, a goodbye) sends a new join
//! toward the root through the overlay, which routes around the dead node,
//! and keeps its subtree: the children stay attached to it and catch up when
//! it does. The join says which message the node needs next (`want`), and
//! the new parent sends what it holds of the gap right after its ack, on the
//! same ordered link; the rest comes from the root's retention (see
//! [`crate::stream`]).
//!
//! Cycles. A re-joining node's route can reach a node of its own subtree
//! (hand-downs place children regardless of their distance to the root).
//! Every node knows its path from the root, so a node that finds the joiner
//! on its own path does not adopt it but passes the join on toward the root,
//! and a joiner that finds itself on the path of an ack refuses that parent.
//! Parent links therefore never close a cycle. A forwarder that a re-join
//! made names the re-joining node (`origin`) in its own join, so that the
//! origin's subtree passes that join on as well, rather than adopting the
//! forwarder only for the origin to refuse the path it would get.
//!
//! A member that leaves stays on as a forwarder while it has children; a
//! forwarder with neither membership nor children leaves its parent, which
//! may prune itself in turn.
//!
//! Where a join puts a node is only its first place: [`crate::placement`]
//! moves tree nodes to parents that give them shorter paths from the root.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::coord::Coord;
use crate::id::{Mid, NodeId};
use crate::interface::Event;
use crate::lan::GroupKey;
use crate::message::{Detour, Message, NodeInfo, RejectReason, MAX_PATH};
use crate::message::{Join, JoinAck, JoinReject};
use crate::node::Node;
use crate::root::Root;
use crate::stream::Stream;
use crate::timer::Timer;

/// Answers of "unknown group" after which a first join fails.
pub(crate) const UNKNOWN_GROUP_ATTEMPTS: u8 = 3;

/// Most first hops a join routes around at once.
pub(crate) const MAX_AVOID: usize = 3;

/// A child in a group tree.
#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub(crate) info: NodeInfo,
    /// Joins handed down to this child, to spread hand-downs evenly.
    pub(crate) handed: u32,
    /// What its join asked for, until we acknowledge it.
    pub(crate) want: Option<u64>,
    /// When we acknowledged it, or since then it last counted us as its
    /// parent (a heartbeat that lists the group among its parents'); from
    /// the acknowledgement on it receives the group's messages and
    /// heartbeats.
    pub(crate) acked: Option<Instant>,
    /// Its network coordinate, from its join and heartbeats.
    pub(crate) coord: Option<Coord>,
    /// It takes the group's messages from its LAN (see [`crate::lan`]):
    /// we hold them back.
    pub(crate) lan_fed: bool,
    /// The nonce of its join, which our acknowledgements echo.
    pub(crate) nonce: u64,
}

impl Child {
    /// A child from its join, which came from `from`. What the join asks
    /// for is sent with the acknowledgement only if the joiner sent it
    /// itself: any node can name any joiner, and a backlog sent to a node
    /// that never asked would be a buffer's worth of messages for one small
    /// message. A joiner whose join was handed down to us fetches what it
    /// misses instead, from us, once we are its parent.
    fn new(join: &Join, from: NodeId) -> Self {
        Child {
            info: join.joiner,
            handed: 0,
            want: join.want.filter(|_| from == join.joiner.id),
            acked: None,
            coord: join.coord.checked(),
            lan_fed: false,
            nonce: join.nonce,
        }
    }
}

/// One node's part in one group's tree.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    /// The root's state, if this node is the root.
    pub(crate) root: Option<Box<Root>>,
    pub(crate) member: bool,
    pub(crate) parent: Option<NodeInfo>,
    /// When our parent last counted us as its child: its acknowledgement,
    /// or since then a heartbeat that lists the group among its children's.
    pub(crate) parent_confirmed: Instant,
    /// Connected to the root through acknowledged parents.
    pub(crate) attached: bool,
    /// The path from the root to our parent (empty at the root).
    pub(crate) path: Vec<NodeId>,
    pub(crate) children: BTreeMap<NodeId, Child>,
    /// Was attached once: a re-join keeps trying where a first join fails.
    pub(crate) established: bool,
    /// The messages: order, gaps, repair buffer.
    pub(crate) stream: Stream,
    /// How we join the tree, until we are attached.
    pub(crate) join: Joining,
    /// Our place in the tree as placement weighs it.
    pub(crate) place: Position,
    /// The group on our LAN.
    pub(crate) lan: GroupLan,
}

/// How a node joins a group's tree, or joins it again, until it is
/// attached: where its join went, how long it waits, and what it steers
/// clear of.
#[derive(Debug, Clone, Default)]
pub(crate) struct Joining {
    /// The node our last join went to, whose acknowledgement we expect.
    pub(crate) target: Option<NodeId>,
    /// How long the next retry waits (it doubles, up to `join_retry_max`).
    pub(crate) backoff: Duration,
    /// Nodes the next join must not go to (the latest [`MAX_AVOID`]): they
    /// closed a cycle, or did not answer. A retry that went back to a first
    /// hop whose route crosses a crashed node would be lost again.
    pub(crate) avoid: Vec<NodeId>,
    /// A node known to be dead that joins must route around (our lost
    /// parent, or the one the join we forward names).
    pub(crate) around: Option<NodeId>,
    /// For a forwarder, the node whose join made it one, or that join's
    /// own origin: the node whose subtree its joins must not end in.
    pub(crate) origin: Option<NodeId>,
    /// What a forwarder asks for before it has a stream of its own: the
    /// `want` of the join that created it.
    pub(crate) want_hint: Option<u64>,
    /// Join attempts since the last attachment. A first join is failed as
    /// "unknown group" only after [`UNKNOWN_GROUP_ATTEMPTS`] answers say
    /// so: under churn, routing to a group's root can take a moment to
    /// converge, or the root's successor to take over.
    pub(crate) attempts: u8,
    /// Parents found withholding (see [`crate::stream`]), the latest
    /// [`MAX_AVOID`]: unlike `avoid`, kept once we are attached again, so
    /// that neither our joins nor placement offers take us back below one
    /// (a hand-down may, and the stall check finds it out again).
    pub(crate) withholders: Vec<NodeId>,
    /// The number our joins carry since we were last attached (a new one
    /// for each time we join anew): an acknowledgement must echo it, so
    /// only a node our join reached can become our parent.
    pub(crate) nonce: u64,
}

impl Joining {
    /// Routes the next joins around `id` too, forgetting the oldest such
    /// node when there are [`MAX_AVOID`].
    pub(crate) fn avoid_also(&mut self, id: NodeId) {
        if !self.avoid.contains(&id) {
            if self.avoid.len() >= MAX_AVOID {
                self.avoid.remove(0);
            }
            self.avoid.push(id);
        }
    }
}

/// A tree node's place as placement weighs it (see [`crate::placement`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Position {
    /// Our delay from the root along the tree, in µs (estimated: our
    /// parent's, plus our link to it).
    pub(crate) delay_us: u32,
    /// The node we asked to move to, after its [`Message::PlaceOffer`].
    pub(crate) moving: Option<NodeId>,
    /// The delay budget the root set for us, from the last
    /// [`Message::PlaceOffer`]: what a direct ask to a neighbour carries.
    pub(crate) budget_us: Option<u32>,
    /// Placement rounds since we attached (their interval doubles).
    pub(crate) round: u8,
    /// The nonce of our latest look: offers must echo it.
    pub(crate) ask: Option<u64>,
}

/// A group on the node's LAN (see [`crate::lan`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupLan {
    /// The group's multicast key: drawn by the root, handed down with
    /// every acknowledgement.
    pub(crate) key: Option<Box<GroupKey>>,
    /// Messages taken from the parent as it passed them on, and from the
    /// LAN island's leader (see [`GroupView::from_tree`]).
    pub(crate) from_tree: u64,
    pub(crate) from_lan: u64,
}

impl Group {
    pub(crate) fn new(member: bool, cfg: &crate::Config, now: Instant) -> Self {
        Group {
            root: None,
            member,
            parent: None,
            parent_confirmed: now,
            attached: false,
            path: Vec::new(),
            children: BTreeMap::new(),
            established: false,
            stream: Stream::new(cfg),
            join: Joining::default(),
            place: Position::default(),
            lan: GroupLan::default(),
        }
    }

    pub(crate) fn is_root(&self) -> bool {
        self.root.is_some()
    }

    /// Depth in the tree (root = 0).
    pub(crate) fn depth(&self) -> u16 {
        if self.is_root() {
            0
        } else {
            self.path.len() as u16
        }
    }

    /// The next sequence number this node will pass on, if it knows.
    pub(crate) fn next(&self) -> Option<u64> {
        match &self.root {
            Some(r) => Some(r.committed + 1),
            None => self.stream.next,
        }
    }

    /// The recent messages this node can serve a child or a fetch from.
    pub(crate) fn held(&self) -> &crate::log::Log {
        match &self.root {
            Some(r) => &r.log,
            None => &self.stream.buf,
        }
    }

    /// What this node can answer for messages `from..to`: the run before
    /// its oldest held message, if the request reaches back that far (`None`
    /// otherwise), and the held messages in the range.
    pub(crate) fn serve(&self, from: u64, to: u64) -> (Option<u64>, Vec<crate::message::Data>) {
        let held = self.held();
        let first = held.first();
        let end = to.min(self.next().unwrap_or(0));
        let before = (from < first).then(|| first.min(to));
        (before, held.range(from, end).cloned().collect())
    }

    /// The proofs this node keeps that cover any of messages `from..to`,
    /// to send ahead of them.
    pub(crate) fn proofs_covering(
        &self,
        from: u64,
        to: u64,
    ) -> Vec<std::sync::Arc<crate::proof::Proof>> {
        let proven = match &self.root {
            Some(r) => &r.proofs,
            None => &self.stream.proven,
        };
        proven.covering(from, to).cloned().collect()
    }

    /// The children that receive the group's messages.
    pub(crate) fn acked_children(&self) -> impl Iterator<Item = &Child> + '_ {
        self.children.values().filter(|c| c.acked.is_some())
    }
}

/// A read-only view of this node's part in a group, for status displays.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// The group.
    pub mid: Mid,
    /// Whether this node is the root.
    pub root: bool,
    /// Whether the local application is a member.
    pub member: bool,
    /// Whether connected to the root.
    pub attached: bool,
    /// Depth in the tree (root = 0).
    pub depth: u16,
    /// The parent, if any.
    pub parent: Option<NodeInfo>,
    /// The children.
    pub children: Vec<NodeInfo>,
    /// The root's epoch as this node last saw it.
    pub epoch: u32,
    /// Root: the last sequence number committed (replicated and sent down
    /// the tree). Others: the last one received in order.
    pub last_seq: u64,
    /// Messages held for repair (root: retained for replay).
    pub held: usize,
    /// Bytes of those.
    pub held_bytes: usize,
    /// Messages received ahead of a gap, waiting for it to be filled.
    pub pending: usize,
    /// Messages this node's application will never get (beyond retention).
    pub lost: u64,
    /// Root: its replicas.
    pub replicas: Vec<NodeInfo>,
    /// Messages the parent passed on to us, as it got them (fetches not
    /// counted): one per message, unless the LAN feeds us.
    pub from_tree: u64,
    /// Messages taken from the datagrams of our LAN island's leader
    /// (duplicates included).
    pub from_lan: u64,
}

/// What [`Node::group`] and [`Node::groups`] report of one group.
fn view(mid: Mid, g: &Group) -> GroupView {
    GroupView {
        mid,
        root: g.is_root(),
        member: g.member,
        attached: g.attached,
        depth: g.depth(),
        parent: g.parent,
        children: g.children.values().map(|c| c.info).collect(),
        epoch: g.root.as_ref().map_or(g.stream.epoch, |r| r.epoch),
        last_seq: g.next().unwrap_or(1).saturating_sub(1),
        held: g.held().len(),
        held_bytes: g.held().bytes(),
        pending: g.stream.pending.len(),
        lost: g.stream.lost,
        replicas: g
            .root
            .as_ref()
            .map(|r| r.replicas.iter().map(|p| p.info).collect())
            .unwrap_or_default(),
        from_tree: g.lan.from_tree,
        from_lan: g.lan.from_lan,
    }
}

impl<R: Rng> Node<R> {
    /// This node's part in every group it is on, ordered by mid.
    pub fn groups(&self) -> Vec<GroupView> {
        self.groups.iter().map(|(mid, g)| view(*mid, g)).collect()
    }

    /// This node's part in one group, if it is on the group's tree.
    pub fn group(&self, mid: Mid) -> Option<GroupView> {
        self.groups.get(&mid).map(|g| view(mid, g))
    }

    /// The multicast key of a group this node is on, once the root drew it
    /// or a parent handed it down (see [`crate::lan`]).
    pub fn group_key(&self, mid: Mid) -> Option<&GroupKey> {
        self.groups.get(&mid).and_then(|g| g.lan.key.as_deref())
    }

    /// The groups this node is on, as member, forwarder or root.
    pub fn group_ids(&self) -> impl Iterator<Item = Mid> + '_ {
        self.groups.keys().copied()
    }

    pub(crate) fn join(&mut self, mid: Mid) {
        if let Some(g) = self.groups.get_mut(&mid) {
            g.member = true;
            if g.attached {
                let depth = g.depth();
                let next = g.next().unwrap_or(1);
                self.emit(Event::Joined { mid, depth, next });
            }
            return;
        }
        if self.own_groups() >= self.cfg.max_groups {
            self.emit(Event::JoinFailed {
                mid,
                reason: RejectReason::TooManyGroups,
            });
            return;
        }
        let g = Group::new(true, &self.cfg, self.now);
        self.groups.insert(mid, g);
        self.send_join(mid);
    }

    /// Groups this node's user takes part in (as a member or the root), as
    /// against those it only forwards for others.
    pub(crate) fn own_groups(&self) -> usize {
        self.groups
            .values()
            .filter(|g| g.member || g.is_root())
            .count()
    }

    /// Re-joins a group this node was a member of before a restart, asking
    /// for what it missed from `next` on.
    pub(crate) fn resume(&mut self, mid: Mid, next: u64, key: Option<GroupKey>) {
        if self.groups.contains_key(&mid) || self.own_groups() >= self.cfg.max_groups {
            return self.join(mid);
        }
        let mut g = Group::new(true, &self.cfg, self.now);
        g.stream.resume_at(next);
        g.established = true;
        g.lan.key = key.map(Box::new);
        self.groups.insert(mid, g);
        self.send_join(mid);
    }

    /// The next node on the way to the group's root: an overlay hop toward
    /// the mid, or, for the node responsible for the mid that only holds a
    /// replica, the root the replica follows.
    pub(crate) fn toward_root(&self, mid: Mid, skip: &[NodeId]) -> Option<NodeInfo> {
        if self.groups.get(&mid).is_some_and(Group::is_root) {
            return None;
        }
        if let Some(next) = self.overlay.table.next_hop(mid.key(), skip) {
            return Some(next);
        }
        self.replicas
            .held
            .get(&mid)
            .filter(|r| r.orphaned.is_none() && r.root.id != self.me().id)
            .map(|r| r.root)
            .or_else(|| self.replicas.known_roots.get(&mid).map(|(root, _)| *root))
            .filter(|root| !skip.contains(&root.id))
    }

    /// A node taken for dead (or lost behind a partition) spoke again: our
    /// joins stop routing around it. It may be the root itself, which no
    /// join around it could ever reach.
    pub(crate) fn alive_again(&mut self, id: NodeId) {
        for g in self.groups.values_mut() {
            if g.join.around == Some(id) {
                g.join.around = None;
            }
            g.join.avoid.retain(|a| *a != id);
        }
    }

    /// Sends this node's own join one hop toward the root, or fails the join
    /// when this node is the closest to the mid and knows no such group.
    pub(crate) fn send_join(&mut self, mid: Mid) {
        let me = self.me();
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        let skip: Vec<NodeId> = g
            .join
            .avoid
            .iter()
            .chain(&g.join.withholders)
            .copied()
            .chain(g.join.around)
            .collect();
        let mut next = self.toward_root(mid, &skip);
        if next.is_none() && !g.join.avoid.is_empty() {
            // Nothing around them: better one of them than no join at all.
            let around: Vec<NodeId> = g.join.around.into_iter().collect();
            next = self.toward_root(mid, &around);
        }
        let fresh = self.rng.random::<u64>();
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        if g.join.attempts == 0 {
            // Joining anew: no node that took an earlier join of ours can
            // answer this one.
            g.join.nonce = fresh;
        }
        g.join.target = next.map(|n| n.id);
        g.join.attempts = g.join.attempts.saturating_add(1);
        let attempts = g.join.attempts;
        g.join.backoff = (g.join.backoff * 2).clamp(self.cfg.join_retry, self.cfg.join_retry_max);
        let retry = g.join.backoff;
        let want = g.stream.next.or(g.join.want_hint);
        let around = g.join.around;
        let origin = g.join.origin;
        let nonce = g.join.nonce;
        let established = g.established;
        match next {
            Some(next) => {
                let join = Join {
                    mid,
                    joiner: me,
                    want,
                    detour: Detour::boxed(around, origin),
                    coord: self.proximity.coord,
                    moving: false,
                    nonce,
                };
                tracing::debug!(mid = %mid, to = %next.id.short(), attempts, "join sent");
                self.send(next, Message::Join(join));
                self.arm_join_retry(mid, retry);
            }
            // A group we were on does not vanish because its root did: the
            // node taking over may not have noticed yet. Keep trying.
            None if self.is_joined() && !established && attempts >= UNKNOWN_GROUP_ATTEMPTS => {
                self.fail_join(mid, RejectReason::UnknownGroup)
            }
            // Not in the overlay yet, or the group's new root is not known
            // yet: try again later.
            None => self.arm_join_retry(mid, retry),
        }
    }

    /// Retries the join of `mid` after `wait`, unless a retry is due
    /// sooner.
    fn arm_join_retry(&mut self, mid: Mid, wait: Duration) {
        if self.groups.contains_key(&mid) {
            let at = self.now + wait;
            self.timers.set_unless_sooner(Timer::JoinRetry(mid), at);
        }
    }

    pub(crate) fn on_join_retry(&mut self, mid: Mid) {
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        if g.attached || g.is_root() {
            return;
        }
        if !g.member && g.children.is_empty() {
            self.remove_group(mid);
            return;
        }
        // The node we joined through did not answer: try around it.
        if let Some(t) = g.join.target {
            g.join.avoid_also(t);
        }
        tracing::debug!(mid = %mid, "join not acknowledged yet, sending it again");
        self.send_join(mid);
    }

    /// The join cannot succeed: tell the children waiting on us, and the
    /// application if it asked.
    fn fail_join(&mut self, mid: Mid, reason: RejectReason) {
        let Some(g) = self.remove_group(mid) else {
            return;
        };
        for c in g.children.values() {
            self.send(c.info, Message::JoinReject(JoinReject { mid, reason }));
        }
        if g.member {
            self.emit(Event::JoinFailed { mid, reason });
        }
    }

    pub(crate) fn on_join(&mut self, from: NodeInfo, join: Join) {
        let me = self.me().id;
        let mid = join.mid;
        let joiner = join.joiner;
        if joiner.id == me {
            return;
        }
        let max_children = self.cfg.max_children.max(1);
        let on_tree = self
            .groups
            .get(&mid)
            .is_some_and(|g| g.attached || g.is_root());
        if join.moving && !on_tree {
            // A move goes only to a node on the tree; it never makes
            // forwarders. The joiner stays where it is.
            self.send(joiner, Message::MoveRefused { mid });
            return;
        }
        if let Some(g) = self.groups.get(&mid) {
            let above = |id: NodeId| g.path.contains(&id) || g.parent.is_some_and(|p| p.id == id);
            // A join that routes around a dead node shows that our own way
            // to the root, if it runs through that node, is broken, though
            // our parent has not told us yet (it is joining again with us
            // below it). Our acknowledgement would hand the joiner a path
            // through the dead node, or through the joiner itself when it
            // is that parent: its subtree would keep catching its joins.
            // A forwarder's join carries on its origin's: the origin being
            // our ancestor is as bad as the joiner being it.
            let ancestor = above(joiner.id) || join.origin().is_some_and(above);
            let broken = !ancestor && join.around().is_some_and(above);
            if ancestor || broken {
                if join.moving {
                    // Not a Leave: the joiner may be our parent, and stays.
                    self.send(joiner, Message::MoveRefused { mid });
                    return;
                }
                // The joiner is our ancestor (adopting it would close a
                // cycle), or our way up is broken. Pass its join on toward
                // the root instead, as a router, around both of us. Where
                // routing ends at us, the root's replica or a root we heard
                // of knows the way.
                let skip: Vec<NodeId> = [joiner.id, from.id]
                    .into_iter()
                    .chain(join.origin())
                    .chain(join.around())
                    .collect();
                let next = self.toward_root(mid, &skip);
                tracing::debug!(mid = %mid, joiner = %joiner.id.short(), broken, next = ?next.map(|n| n.id.short()), "join from an ancestor, or around our way up, passing it on");
                if let Some(next) = next {
                    self.send(next, Message::Join(join));
                    return;
                }
                // With nowhere else to go, a join around our way up ends
                // here after all: a path through a dead node is repaired
                // when our parent joins again, and the joiner cannot be
                // our ancestor.
                if ancestor {
                    return;
                }
            }
            // Already on the tree: the joiner becomes our child, or one of
            // our children's if we are full. The join ends here either way.
            let full = g.children.len() >= max_children && !g.children.contains_key(&joiner.id);
            if full && join.moving {
                // The mover weighed a place below us, not below a child:
                // it stays where it is.
                self.send(joiner, Message::MoveRefused { mid });
                return;
            }
            if full {
                if let Some(to) = self.hand_down_to(mid, &join.coord, &[from.id, joiner.id]) {
                    tracing::trace!(mid = %mid, joiner = %joiner.id.short(), to = %to.id.short(), "fan-out bound reached, handing join down");
                    self.send(to, Message::Join(join));
                    return;
                }
            }
            let Some(g) = self.groups.get_mut(&mid) else {
                return;
            };
            match g.children.get_mut(&joiner.id) {
                Some(c) => {
                    // A child that joins again lost track of us; start over.
                    *c = Child {
                        handed: c.handed,
                        lan_fed: c.lan_fed,
                        ..Child::new(&join, from.id)
                    };
                }
                // Full, and our only children sent us this join: take it
                // over the bound rather than bounce it back.
                None => {
                    g.children.insert(joiner.id, Child::new(&join, from.id));
                }
            }
            if g.attached {
                self.ack_child(mid, joiner.id);
            }
            return;
        }
        // Not on the tree: become a forwarder and join on our own behalf.
        let skip: Vec<NodeId> = join.around().into_iter().collect();
        if self.toward_root(mid, &skip).is_none() {
            self.send(
                joiner,
                Message::JoinReject(JoinReject {
                    mid,
                    reason: RejectReason::UnknownGroup,
                }),
            );
            return;
        }
        if self.groups.len() - self.own_groups() >= self.cfg.max_forwarded_groups {
            self.send(
                joiner,
                Message::JoinReject(JoinReject {
                    mid,
                    reason: RejectReason::TooManyGroups,
                }),
            );
            return;
        }
        let mut g = Group::new(false, &self.cfg, self.now);
        g.join.want_hint = join.want;
        g.join.around = join.around();
        g.join.origin = join.origin().or(Some(joiner.id));
        g.children.insert(joiner.id, Child::new(&join, from.id));
        self.groups.insert(mid, g);
        self.send_join(mid);
    }

    /// Acknowledges a child (we are attached): the ack with our path, then
    /// what we hold of what it asked for, on the same ordered link, so the
    /// child gets it before the live messages that follow.
    pub(crate) fn ack_child(&mut self, mid: Mid, child: NodeId) {
        let me = self.me().id;
        let now = self.now;
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        let Some(next) = g.next() else {
            return;
        };
        let epoch = g.root.as_ref().map_or(g.stream.epoch, |r| r.epoch);
        let delay_us = g.place.delay_us;
        let key = g.lan.key.clone();
        let mut path = g.path.clone();
        path.push(me);
        let Some(c) = g.children.get_mut(&child) else {
            return;
        };
        let first_acked = c.acked.is_none();
        c.acked = Some(now);
        let info = c.info;
        let nonce = c.nonce;
        // Where this link starts: what the child wants, if we still hold it.
        let start = match c.want.take() {
            Some(w) if first_acked => w.clamp(g.held().first().min(next), next),
            _ => next,
        };
        let backlog: Vec<_> = g.held().range(start, next).cloned().collect();
        let proofs = g.proofs_covering(start, next);
        self.send(
            info,
            Message::JoinAck(JoinAck {
                mid,
                next: start,
                epoch,
                path,
                delay_us,
                coord: self.proximity.coord,
                key,
                nonce,
            }),
        );
        for d in backlog {
            self.send(info, Message::Data(d));
        }
        // Past the first epoch, the child must know who leads before the
        // proofs of this epoch reach it, backlog or live.
        if let Some(l) = self.lineages.get(mid).filter(|l| l.epoch() > 1).cloned() {
            self.send(info, Message::Lineage(l));
        }
        for p in proofs {
            self.send(info, Message::Proof(p));
        }
    }

    pub(crate) fn on_join_ack(&mut self, from: NodeInfo, ack: JoinAck) {
        let JoinAck {
            mid,
            next,
            epoch,
            path,
            delay_us,
            coord,
            key,
            nonce: _,
        } = ack;
        let me = self.me().id;
        let unwanted = match self.groups.get(&mid) {
            // We no longer want this group, or the sender is below us, or we
            // are attached through another parent (a late answer to an
            // earlier join attempt): make sure the sender drops us. A move
            // we asked for is answered by the node we asked (a full node
            // refuses it rather than hand it down).
            None => true,
            Some(g) => {
                let moving = g.place.moving == Some(from.id);
                g.is_root()
                    || g.children.contains_key(&from.id)
                    || (g.attached && g.parent.is_some_and(|p| p.id != from.id) && !moving)
            }
        };
        if unwanted {
            self.send(from, Message::Leave { mid });
            return;
        }
        if path.contains(&me) || path.len() >= MAX_PATH || path.last() != Some(&from.id) {
            // Taking this parent would close a cycle (or make the tree
            // deeper than any node accepts): refuse it and join around it.
            tracing::debug!(mid = %mid, parent = %from.id.short(), "refusing a parent on our own path");
            self.send(from, Message::Leave { mid });
            if let Some(g) = self.groups.get_mut(&mid) {
                g.join.avoid_also(from.id);
                g.place.moving = None;
                if g.parent.is_some_and(|p| p.id == from.id) {
                    g.parent = None;
                    g.attached = false;
                }
            }
            let retry = self.cfg.join_retry;
            self.arm_join_retry(mid, retry);
            return;
        }
        if let Some(g) = self.groups.get_mut(&mid) {
            if g.place.moving == Some(from.id) && g.attached && delay_us >= g.place.delay_us {
                // The parent we are moving to is no nearer the root than we
                // are any more: a node above it moved meanwhile, maybe into
                // our own subtree (see `on_place_offer`). Stay.
                tracing::debug!(mid = %mid, to = %from.id.short(), "move no longer upward, staying");
                g.place.moving = None;
                self.send(from, Message::Leave { mid });
                return;
            }
        }
        let now = self.now;
        let link = self.link_delay_us(from.id, &coord);
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        let old = g.parent.replace(from).filter(|p| p.id != from.id);
        let was_attached = g.attached;
        let before_us = g.place.delay_us;
        g.place.delay_us = delay_us.saturating_add(link);
        // Our path from the root grew by more than a tenth (a node above us
        // moved to a shorter link of its own): a place that was not worth
        // taking may be now, and our next look may be a minute away.
        let longer = was_attached && g.place.delay_us > before_us.saturating_add(before_us / 10);
        g.place.moving = None;
        g.attached = true;
        g.established = true;
        g.parent_confirmed = now;
        g.path = path;
        g.join.target = None;
        g.join.backoff = Duration::ZERO;
        self.timers.stop(Timer::JoinRetry(mid));
        g.join.attempts = 0;
        g.join.avoid.clear();
        g.join.around = None;
        g.join.origin = None;
        g.join.want_hint = None;
        if key.is_some() {
            g.lan.key = key;
        }
        g.stream.epoch = g.stream.epoch.max(epoch);
        if let Some(old) = old {
            // We had sent a join that a parent took but never acknowledged.
            self.send(old, Message::Leave { mid });
        }
        // The link starts at `next`; anything we need before it is a gap.
        self.stream_starts(mid, next);
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        let depth = g.depth();
        let member = g.member;
        let stream_next = g.next().unwrap_or(next);
        tracing::debug!(mid = %mid, parent = %from.id.short(), depth, "attached to the tree");
        let children: Vec<NodeId> = g.children.keys().copied().collect();
        for c in children {
            self.ack_child(mid, c);
        }
        self.lan_attached(mid);
        self.arm_stall_check(mid);
        if member && !was_attached {
            self.emit(Event::Joined {
                mid,
                depth,
                next: stream_next,
            });
        }
        if !was_attached || old.is_some() || longer {
            // A new place, or a longer way to the root: look again soon,
            // the new neighbourhood may offer more.
            if let Some(g) = self.groups.get_mut(&mid) {
                g.place.round = 0;
                self.timers.stop(Timer::Optimize(mid));
            }
            self.arm_optimize(mid);
        }
    }

    pub(crate) fn on_join_reject(&mut self, from: NodeInfo, mid: Mid, reason: RejectReason) {
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        let expected = g.join.target == Some(from.id) || g.parent.is_some_and(|p| p.id == from.id);
        if g.is_root() || !expected {
            return;
        }
        if reason == RejectReason::UnknownGroup
            && (g.established || g.join.attempts < UNKNOWN_GROUP_ATTEMPTS)
        {
            // The root's successor may not have taken over yet, or routing
            // toward the root not converged: the join timer tries again.
            tracing::debug!(mid = %mid, "group not found; retrying");
            // It answered: the retry may go the same way.
            if let Some(g) = self.groups.get_mut(&mid) {
                g.join.target = None;
            }
            return;
        }
        tracing::debug!(mid = %mid, %reason, "join rejected");
        self.fail_join(mid, reason);
    }

    pub(crate) fn leave(&mut self, mid: Mid) {
        if let Some(g) = self.groups.get_mut(&mid) {
            g.member = false;
            self.prune(mid);
        }
    }

    pub(crate) fn on_leave(&mut self, from: NodeInfo, mid: Mid) {
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        // A leave ends every link the sender has with us in this group.
        // It can hold more than one when two nodes moved toward each other
        // at once: each may have adopted the other, and each then turns
        // the other's acknowledgement away with a leave. Ending only one of
        // the links would keep a child that no longer counts us as its
        // parent, or a parent that no longer knows us. (A move that is
        // refused is answered with a [`Message::MoveRefused`] instead,
        // which ends nothing.)
        if g.place.moving == Some(from.id) {
            // The node we asked to move to cannot take us: stay.
            g.place.moving = None;
        }
        let was_child = g.children.remove(&from.id).is_some();
        let was_parent = g.parent.is_some_and(|p| p.id == from.id);
        if was_child {
            tracing::debug!(mid = %mid, child = %from.id.short(), "child left");
            // A forwarder with no one left below it goes.
            self.prune(mid);
        }
        if was_parent {
            // Our parent dropped us (it does not know us as its child).
            self.detach(mid);
        }
    }

    /// The node we asked to move to does not take us: we stay where we
    /// are, and every link we have stays too.
    pub(crate) fn on_move_refused(&mut self, from: NodeInfo, mid: Mid) {
        if let Some(g) = self.groups.get_mut(&mid) {
            if g.place.moving == Some(from.id) {
                g.place.moving = None;
            }
        }
    }

    /// We lost our parent: join again, keeping our subtree.
    pub(crate) fn detach(&mut self, mid: Mid) {
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        if g.is_root() {
            return;
        }
        g.parent = None;
        g.attached = false;
        g.join.backoff = Duration::ZERO;
        tracing::debug!(mid = %mid, "parent lost, joining again");
        self.send_join(mid);
    }

    /// A forwarder with no member below it removes itself from the tree.
    pub(crate) fn prune(&mut self, mid: Mid) {
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        if g.is_root() || g.member || !g.children.is_empty() {
            return;
        }
        if let Some(p) = g.parent {
            self.send(p, Message::Leave { mid });
        }
        tracing::debug!(mid = %mid, "left the tree");
        self.remove_group(mid);
    }

    /// Drops our part in `mid`'s tree, with its timers: a group joined
    /// again starts with none armed.
    fn remove_group(&mut self, mid: Mid) -> Option<Group> {
        for t in [
            Timer::JoinRetry(mid),
            Timer::Repair(mid),
            Timer::Optimize(mid),
        ] {
            self.timers.stop(t);
        }
        self.groups.remove(&mid)
    }

    /// A peer is gone: drop it as a child, and re-join where it was our
    /// parent. If it is known to be `dead` (not only disconnected), joins
    /// route around it.
    pub(crate) fn tree_peer_lost(&mut self, peer: NodeId, dead: bool) {
        let mids: Vec<Mid> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                g.children.contains_key(&peer) || g.parent.is_some_and(|p| p.id == peer)
            })
            .map(|(m, _)| *m)
            .collect();
        for mid in mids {
            let Some(g) = self.groups.get_mut(&mid) else {
                continue;
            };
            let was_child = g.children.remove(&peer).is_some();
            // After crossing moves the peer can be our parent as well: both
            // links end (as in `on_leave`).
            let was_parent = g.parent.is_some_and(|p| p.id == peer);
            if was_child {
                tracing::debug!(mid = %mid, child = %peer.short(), dead, "child lost");
                self.prune(mid);
            }
            if was_parent {
                if let Some(g) = self.groups.get_mut(&mid) {
                    g.join.around = dead.then_some(peer);
                    // Our own joins go around it even when only its
                    // connection closed: a join sent to a node that has
                    // crashed waits out a retry (at 100,000 nodes under
                    // churn, the slowest repair began that way), and one
                    // around a node that is alive still reaches the tree.
                    g.join.avoid_also(peer);
                }
                self.detach(mid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The join rule, one node at a time: inputs in, outputs checked.
    use super::*;
    use crate::config::Config;
    use crate::interface::{Command, Input};
    use crate::test_support::{deliver, deliver_answer, drain, fire, info};
    use rand::rngs::StdRng;
    use std::time::Instant;

    /// A node with id `me` that knows `known` and has entered the overlay.
    fn node(me: u128, known: &[u128], max_children: usize) -> Node<StdRng> {
        let cfg = Config {
            max_children,
            ..Config::default()
        };
        crate::test_support::node(me, known, cfg)
    }

    fn join_from(
        n: &mut Node<StdRng>,
        mid: Mid,
        from: u128,
        joiner: u128,
    ) -> Vec<(NodeId, Message)> {
        deliver(n, from, join_msg(mid, joiner, None))
    }

    /// `joiner`'s join, routing around `around` if set.
    fn join_msg(mid: Mid, joiner: u128, around: Option<NodeId>) -> Message {
        Message::Join(Join {
            mid,
            joiner: info(joiner),
            want: None,
            detour: Detour::boxed(around, None),
            coord: Default::default(),
            moving: false,
            nonce: 0,
        })
    }

    /// The root's acknowledgement of its child.
    fn ack_from_root(mid: Mid) -> Message {
        Message::JoinAck(JoinAck {
            mid,
            next: 1,
            epoch: 1,
            path: vec![NodeId(ROOT)],
            delay_us: 0,
            coord: Default::default(),
            key: None,
            nonce: 0,
        })
    }

    // Ids chosen so that routing toward MID goes P -> Q -> R (root).
    const ROOT: u128 = 0xF000_0000_0000_0000_0000_0000_0000_0000;
    const Q: u128 = 0xE000_0000_0000_0000_0000_0000_0000_0000;
    const P: u128 = 0x1000_0000_0000_0000_0000_0000_0000_0000;
    const MID: Mid = Mid(0xF000_0000_0000_0000_0000_0000_0000_0001);

    #[test]
    fn first_node_off_the_tree_becomes_a_forwarder_and_forwards_the_join() {
        let mut q = node(Q, &[ROOT, P], 16);
        let sent = join_from(&mut q, MID, P, P);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, NodeId(ROOT), "the join goes on toward the root");
        assert!(matches!(sent[0].1, Message::Join(Join { joiner, .. }) if joiner.id == NodeId(Q)));
        let g = &q.groups()[0];
        assert!(!g.member && !g.root, "Q is a forwarder, not a member");
        assert_eq!(g.children, vec![info(P)], "P is Q's child");
        // The root's acknowledgement attaches Q, which acknowledges P.
        let sent = deliver_answer(&mut q, ROOT, ack_from_root(MID));
        assert_eq!(sent.len(), 1);
        assert!(
            matches!(sent[0], (id, Message::JoinAck(JoinAck { ref path, .. })) if id == NodeId(P) && path.len() == 2)
        );
    }

    #[test]
    fn first_node_on_the_tree_ends_the_join() {
        let mut root = node(ROOT, &[Q, P], 16);
        root.handle(
            Instant::now(),
            Input::Command(Command::CreateGroup { request: 1 }),
        );
        drain(&mut root);
        let mid = root.groups()[0].mid;
        let sent = join_from(&mut root, mid, Q, Q);
        assert_eq!(sent.len(), 1, "only the acknowledgement, no forwarding");
        assert!(
            matches!(sent[0], (id, Message::JoinAck(JoinAck { ref path, .. })) if id == NodeId(Q) && path.len() == 1)
        );

        // Q is on the tree: a later join through Q stops at Q.
        let mut q = node(Q, &[ROOT, P], 16);
        q.handle(Instant::now(), Input::Command(Command::Join { mid }));
        drain(&mut q);
        deliver_answer(&mut q, ROOT, ack_from_root(mid));
        let sent = join_from(&mut q, mid, P, P);
        assert_eq!(sent.len(), 1);
        assert!(
            matches!(sent[0], (id, Message::JoinAck(JoinAck { ref path, .. })) if id == NodeId(P) && path.len() == 2)
        );
    }

    #[test]
    fn a_join_around_a_dead_node_on_our_path_is_not_adopted() {
        // Q is attached under the root. The root dies, and its child P,
        // joining again, routes around it. Q has not noticed yet: were it
        // to adopt P, P would get a path through the dead root, and when P
        // is Q's own parent, a path through itself. (X is another way
        // toward the root.)
        const X: u128 = 0xF100_0000_0000_0000_0000_0000_0000_0000;
        let mut q = node(Q, &[ROOT, P, X], 16);
        q.handle(Instant::now(), Input::Command(Command::Join { mid: MID }));
        drain(&mut q);
        deliver_answer(&mut q, ROOT, ack_from_root(MID));
        assert!(q.group(MID).unwrap().attached);
        let join = |around| join_msg(MID, P, around);
        let sent = deliver(&mut q, P, join(Some(NodeId(ROOT))));
        assert!(
            matches!(&sent[..], [(to, Message::Join(Join { joiner, .. }))] if *to == NodeId(X) && joiner.id == NodeId(P)),
            "passed on toward the root: {sent:?}"
        );
        assert!(q.group(MID).unwrap().children.is_empty());
        // Around a node that is not on our way up, the join ends here.
        let sent = deliver(&mut q, P, join(Some(NodeId(0x42))));
        assert!(
            matches!(sent[..], [(to, Message::JoinAck(JoinAck { .. }))] if to == NodeId(P)),
            "{sent:?}"
        );
    }

    #[test]
    fn a_full_node_hands_the_joiner_down_to_a_child() {
        let mut root = node(ROOT, &[], 2);
        root.handle(
            Instant::now(),
            Input::Command(Command::CreateGroup { request: 1 }),
        );
        drain(&mut root);
        let mid = root.groups()[0].mid;
        join_from(&mut root, mid, 1, 1);
        join_from(&mut root, mid, 2, 2);
        let sent = join_from(&mut root, mid, 3, 3);
        assert_eq!(sent.len(), 1);
        let (to, msg) = &sent[0];
        assert!(*to == NodeId(1) || *to == NodeId(2), "handed to a child");
        assert!(matches!(msg, Message::Join(Join { joiner, .. }) if joiner.id == NodeId(3)));
        assert_eq!(root.groups()[0].children.len(), 2, "the bound holds");
        // The next hand-down goes to the other child.
        let sent = join_from(&mut root, mid, 4, 4);
        assert_ne!(sent[0].0, *to);
        // A move is refused instead: the mover weighed a place here.
        let mut join = join_msg(mid, 5, None);
        if let Message::Join(Join { moving, .. }) = &mut join {
            *moving = true;
        }
        let sent = deliver(&mut root, 5, join);
        assert!(
            matches!(sent[..], [(to, Message::MoveRefused { .. })] if to == NodeId(5)),
            "{sent:?}"
        );
    }

    #[test]
    fn a_join_for_an_unknown_group_is_rejected_by_the_responsible_node() {
        let mut root = node(ROOT, &[Q], 16);
        let sent = join_from(&mut root, MID, Q, Q);
        assert!(matches!(
            sent[..],
            [(
                _,
                Message::JoinReject(JoinReject {
                    reason: RejectReason::UnknownGroup,
                    ..
                })
            )]
        ));
        assert!(root.groups().is_empty(), "no state kept for it");
    }

    /// An acknowledgement in MID from the last node of `path`.
    fn ack_along(path: &[u128]) -> Message {
        Message::JoinAck(JoinAck {
            mid: MID,
            next: 1,
            epoch: 1,
            path: path.iter().map(|&i| NodeId(i)).collect(),
            delay_us: 0,
            coord: Default::default(),
            key: None,
            nonce: 0,
        })
    }

    /// P attached under ROOT -> Q: its way up runs through Q.
    fn p_under_q() -> Node<StdRng> {
        let mut p = node(P, &[ROOT, Q], 16);
        crate::test_support::attach(&mut p, MID, &[ROOT, Q]);
        assert!(p.groups[&MID].attached);
        p
    }

    #[test]
    fn a_parent_whose_connection_closed_is_not_the_first_hop_of_the_re_join() {
        // P knows Q and S, not the root; Q is nearer the mid.
        const S: u128 = 0xD000_0000_0000_0000_0000_0000_0000_0000;
        let mut p = node(P, &[Q, S], 16);
        p.handle(Instant::now(), Input::Command(Command::Join { mid: MID }));
        let first: Vec<NodeId> = drain(&mut p).into_iter().map(|(to, _)| to).collect();
        assert_eq!(first, [NodeId(Q)]);
        deliver_answer(&mut p, Q, ack_along(&[ROOT, Q]));
        assert!(p.groups[&MID].attached);
        // Q is a tree neighbour we watch: only its silence says it is dead.
        fire(&mut p, Instant::now(), Timer::Heartbeat);
        drain(&mut p);
        // Its connection closed (it may have crashed; its silence has not
        // said so yet).
        p.handle(Instant::now(), Input::PeerDown(NodeId(Q)));
        let joins: Vec<NodeId> = drain(&mut p)
            .into_iter()
            .filter(|(_, m)| matches!(m, Message::Join(Join { .. })))
            .map(|(to, _)| to)
            .collect();
        assert_eq!(joins, [NodeId(S)]);
    }

    #[test]
    fn refused_acknowledgements_do_not_multiply_join_retries() {
        let mut p = p_under_q();
        p.handle(Instant::now(), Input::PeerDown(NodeId(Q)));
        // The join, and its retry timer.
        drain(&mut p);
        let armed = p.timers.get(Timer::JoinRetry(MID));
        assert!(armed.is_some(), "the join arms a retry");
        // Nodes below us answer our joins: each answer closes a cycle.
        for below in [0x2000u128, 0x3000, 0x4000, 0x5000] {
            p.handle(
                Instant::now(),
                Input::Message {
                    from: info(below),
                    msg: ack_along(&[ROOT, Q, P, below]),
                },
            );
            drain(&mut p);
            assert_eq!(
                p.timers.get(Timer::JoinRetry(MID)),
                armed,
                "the retry armed by the join is due first"
            );
        }
        assert!(!p.groups[&MID].attached);
    }

    #[test]
    fn join_retries_go_around_every_silent_first_hop() {
        // Three nodes nearer the mid than P, nearest first: ROOT, Q, S.
        const S: u128 = 0xD000_0000_0000_0000_0000_0000_0000_0000;
        let mut p = node(P, &[ROOT, Q, S], 16);
        let first_hop = |sent: &[(NodeId, Message)]| {
            let joins: Vec<NodeId> = sent
                .iter()
                .filter(|(_, m)| matches!(m, Message::Join(Join { .. })))
                .map(|(to, _)| *to)
                .collect();
            assert_eq!(joins.len(), 1, "one join per attempt: {sent:?}");
            joins[0]
        };
        // The retry timer, when it is due.
        let retry = |p: &mut Node<StdRng>| {
            let due = p
                .timers
                .get(Timer::JoinRetry(MID))
                .expect("a retry is armed");
            fire(p, due, Timer::JoinRetry(MID));
        };
        p.handle(Instant::now(), Input::Command(Command::Join { mid: MID }));
        let mut hops = vec![first_hop(&drain(&mut p))];
        for _ in 0..2 {
            retry(&mut p);
            hops.push(first_hop(&drain(&mut p)));
        }
        assert_eq!(hops, vec![NodeId(ROOT), NodeId(Q), NodeId(S)]);
        // With every way around tried, the join still goes somewhere.
        retry(&mut p);
        let fourth = first_hop(&drain(&mut p));
        assert!([ROOT, Q, S].contains(&fourth.0));
    }
    #[test]
    fn a_forwarder_carrying_on_our_ancestors_rejoin_is_not_adopted() {
        // Q, P's parent, lost its own parent (its link closed; nobody
        // died) and joins again. Its join made F a forwarder, and F's join
        // reaches P, below Q: adopting F would hang Q below itself, and Q
        // would refuse the path, again and again.
        const F: u128 = 0x2000_0000_0000_0000_0000_0000_0000_0000;
        let mut f = node(F, &[ROOT], 16);
        let sent = join_from(&mut f, MID, Q, Q);
        assert!(
            matches!(&sent[..], [(to, Message::Join(Join { joiner, detour: Some(d), .. }))] if *to == NodeId(ROOT) && joiner.id == NodeId(F) && d.origin == Some(NodeId(Q))),
            "the forwarder's join names whose join it carries on: {sent:?}"
        );
        let mut p = p_under_q();
        // Routing takes it to P (in the run that found this, to four
        // nodes of Q's subtree in turn).
        let (_, join) = sent.into_iter().next().unwrap();
        let sent = deliver(&mut p, F, join);
        assert!(
            matches!(&sent[..], [(to, Message::Join(Join { joiner, .. }))] if *to == NodeId(ROOT) && joiner.id == NodeId(F)),
            "passed on toward the root, around Q: {sent:?}"
        );
        assert!(p.groups[&MID].children.is_empty());
        // A forwarder carrying on anyone else's join is adopted.
        let sent = join_from(&mut p, MID, F, F);
        assert!(
            matches!(sent[..], [(to, Message::JoinAck(JoinAck { .. }))] if to == NodeId(F)),
            "{sent:?}"
        );
    }

    #[test]
    fn a_node_creates_no_more_groups_than_max_groups() {
        let cfg = Config {
            max_groups: 2,
            ..Config::default()
        };
        let mut n = crate::test_support::node(P, &[], cfg);
        let mut created = 0;
        let mut refused = 0;
        for request in 1..=3 {
            n.handle(
                Instant::now(),
                Input::Command(Command::CreateGroup { request }),
            );
            while let Some(o) = n.poll_output() {
                match o {
                    crate::interface::Output::Event(Event::GroupCreated { .. }) => created += 1,
                    crate::interface::Output::Event(Event::CreateFailed {
                        request: 3,
                        reason: RejectReason::TooManyGroups,
                    }) => refused += 1,
                    _ => {}
                }
            }
        }
        assert_eq!((created, refused), (2, 1));
        assert_eq!(n.groups().len(), 2);
    }

    #[test]
    fn a_flood_of_joins_fills_only_the_forwarding_quota() {
        let cfg = Config {
            max_groups: 2,
            max_forwarded_groups: 3,
            ..Config::default()
        };
        // P routes toward the root through Q for every mid below.
        let mut p = crate::test_support::node(P, &[Q], cfg);
        for i in 0..10u128 {
            let mid = Mid(0xF000_0000_0000_0000_0000_0000_0000_1000 + i);
            join_from(&mut p, mid, Q, 0x2000 + i);
        }
        assert_eq!(
            p.groups.len(),
            3,
            "forwarding for others stops at its quota"
        );
        // The user still joins its own groups.
        p.handle(Instant::now(), Input::Command(Command::Join { mid: MID }));
        assert!(p.groups.get(&MID).is_some_and(|g| g.member));
    }
}
