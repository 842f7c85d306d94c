//! Failure detection between tree neighbours, and the soft state that keeps
//! both ends of every tree link in agreement.
//!
//! Every `heartbeat_interval` (250 ms), while it has tree or replica state,
//! a node sends a
//! [`Message::Heartbeat`] to each of its tree neighbours: its parents and
//! acknowledged children in every group, the replicas of the groups it is
//! root of, and the roots of the groups it replicates. Any message from a
//! neighbour counts as a sign of life; a neighbour silent for
//! `failure_timeout` (1 s) is taken for dead, so a crash is noticed within
//! 1.25 s, well before the QUIC idle timeout, and whatever the transport
//! says. A dead neighbour is removed from the routing state and handled like
//! a closed connection: children re-join, roots replace replicas, replicas
//! take over.
//!
//! A heartbeat also lists the groups the two share, with the sender's
//! position in each, in two lists: the groups where the receiver is the
//! sender's parent, and those where it is its child. That repairs what a
//! lost or reordered message, or two crossing moves, could leave
//! inconsistent: a parent that does not list a group among its children's
//! no longer has us as its child (we re-join), even when it takes us for
//! its own parent; a child that does not list it among its parents' no
//! longer has us as its parent (we drop it); a parent ahead of us means we
//! missed the tail of the stream (we fetch it); a root that does not list a
//! group we replicate no longer counts on us (we forget the replica).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::id::{Mid, NodeId};
use crate::message::Heartbeat;
use crate::message::{Message, NodeInfo, MAX_HEARTBEAT_GROUPS};
use crate::node::{ctx, IdMap, Node};
use crate::timer::Timer;

/// What one heartbeat to one neighbour says.
#[derive(Debug, Default)]
struct Beat {
    info: Option<NodeInfo>,
    /// Groups where the neighbour is our parent.
    up: Vec<(Mid, u64)>,
    /// Groups where it is our child.
    down: Vec<(Mid, u64)>,
    replica: Vec<(Mid, u64)>,
}

/// Which list of a [`Beat`] an entry goes to.
#[derive(Clone, Copy)]
enum List {
    Up,
    Down,
    Replica,
}

/// The tree links the other end has not confirmed for `failure_timeout`:
/// see [`Node::end_unconfirmed_links`].
#[derive(Debug, Default)]
struct Unconfirmed {
    /// Groups whose parent no longer counts us as its child.
    rejoin: Vec<Mid>,
    /// Children that no longer count us as their parent.
    drop_child: Vec<(Mid, NodeId)>,
}

impl Unconfirmed {
    /// Notes the links of group `mid` (with `peer`, or with anyone) that
    /// went unconfirmed for longer than `grace` by `now`.
    fn check(
        &mut self,
        mid: Mid,
        g: &crate::tree::Group,
        peer: Option<NodeId>,
        now: Instant,
        grace: std::time::Duration,
    ) {
        let stale = |t: Instant| now.duration_since(t) > grace;
        if let (Some(p), true) = (g.parent, g.attached) {
            if peer.is_none_or(|id| id == p.id) && stale(g.parent_confirmed) {
                self.rejoin.push(mid);
            }
        }
        let mut check = |c: &crate::tree::Child| {
            if c.acked.is_some_and(stale) {
                self.drop_child.push((mid, c.info.id));
            }
        };
        match peer {
            Some(id) => g.children.get(&id).into_iter().for_each(&mut check),
            None => g.children.values().for_each(&mut check),
        }
    }
}

/// The failure detector: the tree neighbours watched, and when each was
/// last heard from. Any message counts; a neighbour silent for
/// `failure_timeout` is taken for dead.
#[derive(Debug)]
pub(crate) struct Watch {
    /// A hash map: it is looked up for every message that arrives, and a
    /// tree of 16-byte random keys costs a cache miss per level.
    heard: IdMap<(Instant, NodeInfo)>,
}

impl Watch {
    /// Watches no one yet.
    pub(crate) fn new(heard: IdMap<(Instant, NodeInfo)>) -> Self {
        Watch { heard }
    }

    /// Any message from `peer` is a sign of life.
    pub(crate) fn heard_from(&mut self, now: Instant, peer: NodeId) {
        if let Some((t, _)) = self.heard.get_mut(&peer) {
            *t = now;
        }
    }

    /// Whether `peer` is a neighbour we watch.
    pub(crate) fn watches(&self, peer: NodeId) -> bool {
        self.heard.contains_key(&peer)
    }

    /// Stops watching `peer`.
    pub(crate) fn forget(&mut self, peer: NodeId) {
        self.heard.remove(&peer);
    }

    /// Stops watching the neighbours `keep` does not hold, and returns
    /// them.
    fn unwatch_others<V>(&mut self, keep: &BTreeMap<NodeId, V>) -> Vec<NodeInfo> {
        let gone = self
            .heard
            .iter()
            .filter(|(id, _)| !keep.contains_key(id))
            .map(|(_, (_, info))| *info)
            .collect();
        self.heard.retain(|id, _| keep.contains_key(id));
        gone
    }

    /// Watches `id` at `info` from `now` if it was not watched, and tells
    /// whether it has been silent for longer than `timeout`.
    fn is_silent(&mut self, now: Instant, timeout: Duration, id: NodeId, info: NodeInfo) -> bool {
        let (heard, _) = *self.heard.entry(id).or_insert((now, info));
        now.duration_since(heard) > timeout
    }
}

impl<R: Rng> Node<R> {
    /// Keeps `peer` out of the routing table for `dead_memory`, against the
    /// older neighbour lists of other nodes that still name it.
    pub(crate) fn remember_dead(&mut self, peer: NodeId) {
        self.overlay.remember_dead(&ctx!(self), peer);
    }

    /// Whether `peer` was found dead recently (and not heard from since).
    #[cfg(test)]
    pub(crate) fn known_dead(&self, peer: NodeId) -> bool {
        self.overlay
            .known_dead(self.now, self.cfg.dead_memory, peer)
    }

    /// Keeps the heartbeat timer running while the node has tree or replica
    /// state, and only then: a node in no group has no one to watch, and an
    /// idle node (or a hundred thousand in a simulation) should not wake
    /// four times a second for nothing. Called after every input.
    pub(crate) fn keep_heartbeat(&mut self) {
        let busy = !self.groups.is_empty() || !self.replicas.is_idle();
        if busy && !self.timers.is_armed(Timer::Heartbeat) {
            self.set_timer(self.cfg.heartbeat_interval, Timer::Heartbeat);
        }
    }

    /// Every neighbour we share tree or replica state with, and what we tell
    /// it.
    fn beats(&self) -> BTreeMap<NodeId, Beat> {
        let mut beats: BTreeMap<NodeId, Beat> = BTreeMap::new();
        let mut add = |info: NodeInfo, list: List, entry: (Mid, u64)| {
            let b = beats.entry(info.id).or_default();
            b.info = Some(info);
            let list = match list {
                List::Up => &mut b.up,
                List::Down => &mut b.down,
                List::Replica => &mut b.replica,
            };
            if list.len() < MAX_HEARTBEAT_GROUPS {
                list.push(entry);
            }
        };
        for (mid, g) in &self.groups {
            let next = g.next().unwrap_or(0);
            if let (Some(p), true) = (g.parent, g.attached) {
                add(p, List::Up, (*mid, next));
            }
            for c in g.acked_children() {
                add(c.info, List::Down, (*mid, next));
            }
            if let Some(r) = &g.root {
                for x in &r.replicas {
                    add(x.info, List::Replica, (*mid, r.committed));
                }
            }
        }
        for (mid, r) in &self.replicas.held {
            if r.orphaned.is_none() {
                add(r.root, List::Replica, (*mid, r.log.next() - 1));
            }
        }
        beats
    }

    pub(crate) fn on_heartbeat_timer(&mut self) {
        // Re-armed after this input if there is still something to watch.
        // In case the driver does not flush.
        self.prove_commits();
        self.flush_acks();
        if !self.is_joined() {
            return;
        }
        let now = self.now;
        let beats = self.beats();
        // Neighbours we no longer share anything with are not watched. They
        // get one last, empty heartbeat: they may still think we share a
        // group (a join acknowledged after we went elsewhere), and would
        // otherwise take our silence for a crash and route around a live
        // node for `dead_memory`. The empty list makes them reconcile now.
        for info in self.watch.unwatch_others(&beats) {
            self.send(
                info,
                Message::Heartbeat(Heartbeat {
                    up: Vec::new(),
                    down: Vec::new(),
                    replica: Vec::new(),
                    coord: self.proximity.coord,
                }),
            );
        }
        let mut dead = Vec::new();
        for (id, beat) in beats {
            let Some(info) = beat.info else { continue };
            if self
                .watch
                .is_silent(now, self.cfg.failure_timeout, id, info)
            {
                dead.push(id);
                continue;
            }
            self.send(
                info,
                Message::Heartbeat(Heartbeat {
                    up: beat.up,
                    down: beat.down,
                    replica: beat.replica,
                    coord: self.proximity.coord,
                }),
            );
        }
        for id in dead {
            tracing::info!(peer = %id.short(), "no sign of life from a tree neighbour; taking it for dead");
            self.watch.forget(id);
            self.peer_lost(id);
        }
        // A neighbour that stopped sending heartbeats but still sends
        // other messages (placement, routing) is alive, so the check above
        // keeps it; this one ends the links it no longer confirms.
        self.end_unconfirmed_links();
        self.root_tick();
        self.replica_tick();
    }

    /// Reconciles what `from` says we share with what we think we share.
    pub(crate) fn on_heartbeat(
        &mut self,
        from: NodeInfo,
        mut up: Vec<(Mid, u64)>,
        mut down: Vec<(Mid, u64)>,
        replica: Vec<(Mid, u64)>,
        coord: crate::coord::Coord,
    ) {
        let now = self.now;
        let grace = self.cfg.failure_timeout;
        // Sorted lists rather than maps: a heartbeat lists a handful of
        // groups, and a peer that lists thousands costs a sort, not a hash
        // map, per heartbeat.
        up.sort_unstable_by_key(|&(m, _)| m);
        down.sort_unstable_by_key(|&(m, _)| m);
        let listed = |list: &[(Mid, u64)], mid: &Mid| {
            list.binary_search_by_key(mid, |&(m, _)| m)
                .ok()
                .map(|i| list[i].1)
        };
        let mut replica = replica;
        replica.sort_unstable_by_key(|&(m, _)| m);
        let mut tail = Vec::new();
        let mut unconfirmed = Unconfirmed::default();
        for (mid, g) in self.groups.iter_mut() {
            // Our parent confirms that it counts us among its children, and
            // our child that it counts us as its parent.
            if g.parent.is_some_and(|p| p.id == from.id) && g.attached {
                if let Some(parent_next) = listed(&down, mid) {
                    g.parent_confirmed = now;
                    if g.stream.next.is_some_and(|n| n < parent_next) {
                        g.stream.head = g.stream.head.max(parent_next);
                        tail.push(*mid);
                    }
                }
            }
            if let Some(c) = g.children.get_mut(&from.id) {
                c.coord = coord.checked().or(c.coord);
                if c.acked.is_some() && listed(&up, mid).is_some() {
                    c.acked = Some(now);
                }
            }
            // In the same pass (a node may be in many groups, and this
            // runs for every heartbeat): the links with the sender that
            // this heartbeat did not confirm, and no other for too long.
            unconfirmed.check(*mid, g, Some(from.id), now, grace);
        }
        for mid in tail {
            self.request_repair(mid);
        }
        self.end_links(unconfirmed);
        self.replicas
            .on_root_heartbeat(now, grace, from.id, &replica);
    }

    /// Ends the tree links that the other end has not confirmed for
    /// `failure_timeout`: we re-join where our parent no longer counts us
    /// among its children, and drop a child that no longer counts us as its
    /// parent. Within that time, a heartbeat that does not list a link may
    /// have been sent before it was made. (A heartbeat checks the links
    /// with its sender on its own, in the pass that reads it.)
    fn end_unconfirmed_links(&mut self) {
        let mut unconfirmed = Unconfirmed::default();
        for (mid, g) in &self.groups {
            unconfirmed.check(*mid, g, None, self.now, self.cfg.failure_timeout);
        }
        self.end_links(unconfirmed);
    }

    /// Ends the links `unconfirmed` found.
    fn end_links(&mut self, unconfirmed: Unconfirmed) {
        let Unconfirmed { rejoin, drop_child } = unconfirmed;
        for mid in rejoin {
            tracing::debug!(mid = %mid, "parent no longer counts us as its child; joining again");
            self.detach(mid);
        }
        for (mid, child) in drop_child {
            tracing::debug!(mid = %mid, child = %child.short(), "child no longer counts us as its parent; dropping it");
            if let Some(g) = self.groups.get_mut(&mid) {
                g.children.remove(&child);
            }
            self.prune(mid);
        }
    }

    /// The connection to a peer closed, or could not be opened. Trees work
    /// around the peer at once (a re-join is cheap and safe). Replication
    /// does not: a root replaces a replica, and a replica takes over from
    /// its root, only after `failure_timeout` of silence, because a closed
    /// connection may only be a slow link, re-opened by the next heartbeat,
    /// and two roots at once are what replication must avoid.
    pub(crate) fn connection_lost(&mut self, peer: NodeId) {
        if !self.watch.watches(peer) {
            // Not a neighbour we watch: most likely dead (an idle timeout,
            // a failed dial). Route around it.
            self.remember_dead(peer);
            self.forget(peer);
        }
        // A watched neighbour stays in the routing table until its silence
        // says it is dead: it may be alive behind a link that was closed
        // for being slow. A re-join below goes around it all the same.
        self.tree_peer_lost(peer, false);
    }

    /// A neighbour is gone (a goodbye, or silence): routing, trees and
    /// replicas work around it.
    pub(crate) fn peer_lost(&mut self, peer: NodeId) {
        self.remember_dead(peer);
        self.forget(peer);
        self.replicas.forget_root(peer);
        self.watch.forget(peer);
        self.tree_peer_lost(peer, true);
        self.replica_lost(peer);
        self.replica_root_lost(peer);
    }
}

#[cfg(test)]
mod tests {
    use crate::message::{Heartbeat, Join, JoinAck, Neighbours};
    use std::time::{Duration, Instant};

    use rand::rngs::StdRng;

    use crate::config::Config;
    use crate::coord::Coord;
    use crate::id::{Mid, NodeId};
    use crate::interface::{Command, Input};
    use crate::message::Message;
    use crate::node::Node;
    use crate::test_support::{deliver, deliver_answer, drain, fire, info, node};
    use crate::timer::Timer;

    const ROOT: u128 = 0xF000_0000_0000_0000_0000_0000_0000_0000;
    const P: u128 = 0xE000_0000_0000_0000_0000_0000_0000_0000;
    const N: u128 = 0x1000_0000_0000_0000_0000_0000_0000_0000;
    const MID: Mid = Mid(0xF000_0000_0000_0000_0000_0000_0000_0001);

    /// The failure detector alone: a neighbour is silent once nothing came
    /// from it for the timeout, any message resets that, and one no longer
    /// shared is let go (and named, for its last heartbeat).
    #[test]
    fn the_watch_takes_a_silent_neighbour_for_dead_and_lets_go_of_others() {
        let mut w = super::Watch::new(crate::node::IdMap::with_hasher(
            rustc_hash::FxSeededState::with_seed(1),
        ));
        let t0 = Instant::now();
        let timeout = Duration::from_secs(1);
        let ms = |m: u64| t0 + Duration::from_millis(m);
        assert!(
            !w.is_silent(t0, timeout, NodeId(P), info(P)),
            "watched from now"
        );
        assert!(w.watches(NodeId(P)));
        w.heard_from(ms(900), NodeId(P));
        assert!(!w.is_silent(ms(1500), timeout, NodeId(P), info(P)));
        assert!(w.is_silent(ms(2000), timeout, NodeId(P), info(P)));
        w.heard_from(ms(2000), NodeId(N));
        assert!(!w.watches(NodeId(N)), "a message does not make a neighbour");
        let keep: std::collections::BTreeMap<NodeId, ()> = [(NodeId(ROOT), ())].into();
        w.is_silent(t0, timeout, NodeId(ROOT), info(ROOT));
        assert_eq!(w.unwatch_others(&keep), vec![info(P)]);
        assert!(w.watches(NodeId(ROOT)) && !w.watches(NodeId(P)));
        w.forget(NodeId(ROOT));
        assert!(!w.watches(NodeId(ROOT)));
    }

    /// N, attached under ROOT -> P, at `t0`.
    fn attached_n(t0: Instant) -> Node<StdRng> {
        let mut n = node(N, &[ROOT, P], Config::default());
        n.handle(t0, Input::Command(Command::Join { mid: MID }));
        drain(&mut n);
        let ack = Message::JoinAck(JoinAck {
            mid: MID,
            next: 1,
            epoch: 1,
            path: vec![NodeId(ROOT), NodeId(P)],
            delay_us: 10_000,
            coord: Coord::default(),
            key: None,
            nonce: 0,
        });
        deliver_answer(&mut n, P, ack);
        assert!(n.group(MID).unwrap().attached);
        n
    }

    /// A heartbeat from P, our parent, at `at` that lists `down` as the
    /// groups where we are its child.
    fn beat(n: &mut Node<StdRng>, at: Instant, down: Vec<(Mid, u64)>) -> Vec<Message> {
        beat_lists(n, P, at, Vec::new(), down)
    }

    /// A heartbeat from `from` at `at` that lists `up` (the groups where we
    /// are its parent) and `down` (where we are its child).
    fn beat_lists(
        n: &mut Node<StdRng>,
        from: u128,
        at: Instant,
        up: Vec<(Mid, u64)>,
        down: Vec<(Mid, u64)>,
    ) -> Vec<Message> {
        let msg = Message::Heartbeat(Heartbeat {
            up,
            down,
            replica: Vec::new(),
            coord: Coord::default(),
        });
        n.handle(
            at,
            Input::Message {
                from: info(from),
                msg,
            },
        );
        drain(n).into_iter().map(|(_, m)| m).collect()
    }

    /// Whether `sent` holds a join of MID: the node joins again.
    fn rejoined(sent: &[Message]) -> bool {
        sent.iter()
            .any(|m| matches!(m, Message::Join(Join { mid, .. }) if *mid == MID))
    }

    /// Thousands of other groups, in no order.
    fn others() -> Vec<(Mid, u64)> {
        (0..4000u128)
            .map(|i| (Mid(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 << 100), 1))
            .collect()
    }

    #[test]
    fn a_parent_that_lists_our_group_among_thousands_keeps_us() {
        let t0 = Instant::now();
        let mut n = attached_n(t0);
        let mut tree = others();
        tree.insert(1234, (MID, 1));
        let sent = beat(&mut n, t0 + Duration::from_secs(3), tree);
        assert!(
            !sent.iter().any(|m| matches!(m, Message::Join(Join { .. }))),
            "{sent:?}"
        );
        assert!(n.group(MID).unwrap().attached);
    }

    #[test]
    fn a_parent_that_no_longer_lists_our_group_makes_us_join_again() {
        let t0 = Instant::now();
        let mut n = attached_n(t0);
        // Within the grace period, a list without us may predate our join.
        beat(&mut n, t0 + Duration::from_millis(100), others());
        assert!(n.group(MID).unwrap().attached);
        let sent = beat(&mut n, t0 + Duration::from_secs(3), others());
        assert!(rejoined(&sent), "{sent:?}");
    }

    #[test]
    fn a_parent_that_takes_us_for_its_parent_makes_us_join_again() {
        // After two crossing moves, P is our parent and we are P's: each
        // lists the group to the other, but as a parent, not as a child.
        let t0 = Instant::now();
        let mut n = attached_n(t0);
        let sent = beat_lists(
            &mut n,
            P,
            t0 + Duration::from_secs(3),
            vec![(MID, 1)],
            others(),
        );
        assert!(rejoined(&sent), "{sent:?}");
    }

    #[test]
    fn a_child_that_takes_us_for_its_child_is_dropped() {
        const C: u128 = 0x2000_0000_0000_0000_0000_0000_0000_0000;
        let t0 = Instant::now();
        let mut n = attached_n(t0);
        let join = Message::Join(Join {
            mid: MID,
            joiner: info(C),
            want: None,
            detour: None,
            coord: Coord::default(),
            moving: false,
            nonce: 0,
        });
        deliver(&mut n, C, join);
        let at = t0 + Duration::from_secs(3);
        let has_c = |n: &Node<StdRng>| {
            n.group(MID)
                .unwrap()
                .children
                .iter()
                .any(|c| c.id == NodeId(C))
        };
        assert!(has_c(&n));
        // C counts us as its parent: it stays.
        beat_lists(&mut n, C, at, vec![(MID, 1)], Vec::new());
        assert!(has_c(&n));
        // C counts us as its child: the link is gone at its end. A
        // heartbeat just after one that confirmed the link may have
        // crossed it; the link ends once C has not confirmed it for the
        // failure timeout.
        beat_lists(&mut n, C, at, Vec::new(), vec![(MID, 1)]);
        assert!(has_c(&n), "confirmed a moment ago");
        let later = at + Duration::from_millis(1500);
        beat_lists(&mut n, C, later, Vec::new(), vec![(MID, 1)]);
        assert!(!has_c(&n), "dropped");
    }

    #[test]
    fn a_parent_that_stops_confirming_us_but_stays_alive_makes_us_join_again() {
        // P dropped us and sends us no more heartbeats, but other messages
        // (here routing updates) keep it alive in our eyes: silence alone
        // would never move us.
        let t0 = Instant::now();
        let mut n = attached_n(t0);
        let mut joined = false;
        for i in 1..=8u64 {
            let at = t0 + Duration::from_millis(250 * i);
            let alive = Message::Neighbours(Neighbours {
                nodes: Vec::new(),
                reply: false,
                coord: Coord::default(),
            });
            n.handle(
                at,
                Input::Message {
                    from: info(P),
                    msg: alive,
                },
            );
            fire(&mut n, at, Timer::Heartbeat);
            let sent = drain(&mut n);
            assert!(!n.known_dead(NodeId(P)), "P is alive");
            if i <= 4 {
                assert!(n.group(MID).unwrap().attached, "within the grace period");
            }
            joined |= sent
                .iter()
                .any(|(_, m)| matches!(m, Message::Join(Join { mid, .. }) if *mid == MID));
        }
        assert!(joined, "joined again");
        assert!(!n.group(MID).unwrap().attached);
    }
}
