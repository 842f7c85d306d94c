//! Group trees: how joins build them, how messages flow down them, how
//! leaves prune them.
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
//! parent is attached too; the root is attached by definition. Joins travel
//! toward the root along strictly decreasing XOR distance (see
//! [`crate::routing`]) and hand-downs only go to children, which are farther
//! from the root than their parent, so the parent links can never form a
//! cycle.
//!
//! The root numbers every message it accepts; data flows from parent to
//! children only, over one ordered stream per link, so every member sees the
//! root's order. A member that leaves stays on as a forwarder while it has
//! children; a forwarder with neither membership nor children leaves its
//! parent, which may prune itself in turn.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use crate::frame::seal_data;
use crate::id::{Mid, NodeId};
use crate::message::{Data, Message, NodeInfo, Publish, RejectReason};
use crate::node::{Event, Node, Output, PendingPublish, PublishError, Timer};

/// A child in a group tree.
#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub(crate) info: NodeInfo,
    /// Joins handed down to this child, to spread hand-downs evenly.
    pub(crate) handed: u32,
}

/// One node's part in one group's tree.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) root: bool,
    pub(crate) member: bool,
    pub(crate) parent: Option<NodeInfo>,
    /// Connected to the root through acknowledged parents.
    pub(crate) attached: bool,
    pub(crate) depth: u16,
    pub(crate) children: BTreeMap<NodeId, Child>,
    /// The node our last join went to, whose acknowledgement we expect.
    pub(crate) join_target: Option<NodeId>,
    pub(crate) join_backoff: Duration,
    /// Root: its epoch and the last sequence number it gave.
    pub(crate) epoch: u32,
    pub(crate) last_seq: u64,
    /// The last (epoch, seq) received and passed on.
    pub(crate) seen: (u32, u64),
}

impl Group {
    fn new(root: bool, member: bool) -> Self {
        Group {
            root,
            member,
            parent: None,
            attached: root,
            depth: 0,
            children: BTreeMap::new(),
            join_target: None,
            join_backoff: Duration::ZERO,
            epoch: if root { 1 } else { 0 },
            last_seq: 0,
            seen: (0, 0),
        }
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
    /// Root: the last sequence number given.
    pub last_seq: u64,
}

impl<R: Rng> Node<R> {
    /// This node's part in every group it is on, ordered by mid.
    pub fn groups(&self) -> Vec<GroupView> {
        let mut v: Vec<GroupView> = self
            .groups
            .iter()
            .map(|(mid, g)| GroupView {
                mid: *mid,
                root: g.root,
                member: g.member,
                attached: g.attached,
                depth: g.depth,
                parent: g.parent,
                children: g.children.values().map(|c| c.info).collect(),
                last_seq: g.last_seq,
            })
            .collect();
        v.sort_by_key(|g| g.mid);
        v
    }

    pub(crate) fn create_group(&mut self) -> Mid {
        let mid = loop {
            let mid = Mid::issue(self.me().id, &mut self.rng);
            if !self.groups.contains_key(&mid) {
                break mid;
            }
        };
        tracing::debug!(mid = %mid, "group created");
        self.groups.insert(mid, Group::new(true, true));
        mid
    }

    pub(crate) fn join(&mut self, mid: Mid) {
        if let Some(g) = self.groups.get_mut(&mid) {
            g.member = true;
            if g.attached {
                let depth = g.depth;
                self.emit(Event::Joined { mid, depth });
            }
            return;
        }
        if self.groups.len() >= self.cfg.max_groups {
            self.emit(Event::JoinFailed {
                mid,
                reason: RejectReason::TooManyGroups,
            });
            return;
        }
        self.groups.insert(mid, Group::new(false, true));
        self.send_join(mid);
    }

    /// Sends this node's own join one hop toward the mid, or fails the join
    /// when this node is the closest to the mid and holds no such group.
    fn send_join(&mut self, mid: Mid) {
        let me = self.me();
        let next = self.table.next_hop(mid.key(), None);
        let retry = {
            let Some(g) = self.groups.get_mut(&mid) else {
                return;
            };
            g.join_target = next.map(|n| n.id);
            g.join_backoff =
                (g.join_backoff * 2).clamp(self.cfg.join_retry, self.cfg.join_retry_max);
            g.join_backoff
        };
        match next {
            Some(next) => {
                self.send(next, Message::Join { mid, joiner: me });
                self.set_timer(retry, Timer::JoinRetry(mid));
            }
            None if self.is_joined() => self.fail_join(mid, RejectReason::UnknownGroup),
            // Not in the overlay yet: try again once we may be.
            None => self.set_timer(retry, Timer::JoinRetry(mid)),
        }
    }

    pub(crate) fn on_join_retry(&mut self, mid: Mid) {
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        if g.attached || g.root {
            return;
        }
        if !g.member && g.children.is_empty() {
            self.groups.remove(&mid);
            return;
        }
        tracing::debug!(mid = %mid, "join not acknowledged yet, sending it again");
        self.send_join(mid);
    }

    /// The join cannot succeed: tell the children waiting on us, and the
    /// application if it asked.
    fn fail_join(&mut self, mid: Mid, reason: RejectReason) {
        let Some(g) = self.groups.remove(&mid) else {
            return;
        };
        for c in g.children.values() {
            self.send(c.info, Message::JoinReject { mid, reason });
        }
        if g.member {
            self.emit(Event::JoinFailed { mid, reason });
        }
    }

    pub(crate) fn on_join(&mut self, from: NodeInfo, mid: Mid, joiner: NodeInfo) {
        let me = self.me().id;
        if joiner.id == me {
            return;
        }
        let max_children = self.cfg.max_children.max(1);
        if let Some(g) = self.groups.get_mut(&mid) {
            // Already on the tree: the joiner becomes our child, or one of our
            // children's if we are full. The join ends here either way.
            if g.parent.is_some_and(|p| p.id == joiner.id) {
                // Our own parent asks to join below us: it lost its state. We
                // are cut off from the root; leave it to re-join elsewhere
                // rather than make a cycle.
                tracing::debug!(mid = %mid, "parent re-joins below us; detaching");
                g.parent = None;
                g.attached = false;
                self.send_join(mid);
                return;
            }
            if let Some(c) = g.children.get_mut(&joiner.id) {
                c.info = joiner;
            } else if g.children.len() >= max_children {
                let child = g
                    .children
                    .values_mut()
                    .filter(|c| c.info.id != from.id)
                    .min_by_key(|c| c.handed);
                if let Some(child) = child {
                    child.handed += 1;
                    let to = child.info;
                    tracing::trace!(mid = %mid, joiner = %joiner.id.short(), to = %to.id.short(), "fan-out bound reached, handing join down");
                    self.send(to, Message::Join { mid, joiner });
                    return;
                }
                // Our only children sent us this join: take it over the bound
                // rather than bounce it back.
                g.children.insert(
                    joiner.id,
                    Child {
                        info: joiner,
                        handed: 0,
                    },
                );
            } else {
                g.children.insert(
                    joiner.id,
                    Child {
                        info: joiner,
                        handed: 0,
                    },
                );
            }
            if g.attached {
                let depth = g.depth;
                self.send(joiner, Message::JoinAck { mid, depth });
            }
            return;
        }
        // Not on the tree: become a forwarder and join on our own behalf.
        if self.table.is_responsible(mid.key()) {
            self.send(
                joiner,
                Message::JoinReject {
                    mid,
                    reason: RejectReason::UnknownGroup,
                },
            );
            return;
        }
        if self.groups.len() >= self.cfg.max_groups {
            self.send(
                joiner,
                Message::JoinReject {
                    mid,
                    reason: RejectReason::TooManyGroups,
                },
            );
            return;
        }
        let mut g = Group::new(false, false);
        g.children.insert(
            joiner.id,
            Child {
                info: joiner,
                handed: 0,
            },
        );
        self.groups.insert(mid, g);
        self.send_join(mid);
    }

    pub(crate) fn on_join_ack(&mut self, from: NodeInfo, mid: Mid, depth: u16) {
        let unwanted = match self.groups.get(&mid) {
            // We no longer want this group, or the sender is below us, or we
            // are attached through another parent (a late answer to an
            // earlier join attempt): make sure the sender drops us.
            None => true,
            Some(g) => {
                g.root
                    || g.children.contains_key(&from.id)
                    || (g.attached && g.parent.is_some_and(|p| p.id != from.id))
            }
        };
        if unwanted {
            self.send(from, Message::Leave { mid });
            return;
        }
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        let old = g.parent.replace(from).filter(|p| p.id != from.id);
        let was_attached = g.attached;
        if let Some(old) = old {
            // We had sent a join that a parent took but never acknowledged.
            self.send(old, Message::Leave { mid });
        }
        self.attach(mid, from, depth, was_attached);
    }

    /// Our parent `from` acknowledged us: we are attached, and so are the
    /// children that waited on us.
    fn attach(&mut self, mid: Mid, from: NodeInfo, depth: u16, was_attached: bool) {
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        g.attached = true;
        g.join_target = None;
        g.join_backoff = Duration::ZERO;
        g.depth = depth.saturating_add(1);
        let depth = g.depth;
        let member = g.member;
        let children: Vec<NodeInfo> = g.children.values().map(|c| c.info).collect();
        tracing::debug!(mid = %mid, parent = %from.id.short(), depth, "attached to the tree");
        for c in children {
            self.send(c, Message::JoinAck { mid, depth });
        }
        if member && !was_attached {
            self.emit(Event::Joined { mid, depth });
        }
    }

    pub(crate) fn on_join_reject(&mut self, from: NodeInfo, mid: Mid, reason: RejectReason) {
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        let expected = g.join_target == Some(from.id) || g.parent.is_some_and(|p| p.id == from.id);
        if g.root || !expected {
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
        if g.children.remove(&from.id).is_some() {
            self.prune(mid);
        } else if g.parent.is_some_and(|p| p.id == from.id) {
            // Our parent dropped us (it does not know us as its child).
            g.parent = None;
            g.attached = false;
            self.send_join(mid);
        }
    }

    /// A forwarder with no member below it removes itself from the tree.
    fn prune(&mut self, mid: Mid) {
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        if g.root || g.member || !g.children.is_empty() {
            return;
        }
        if let Some(p) = g.parent {
            self.send(p, Message::Leave { mid });
        }
        tracing::debug!(mid = %mid, "left the tree");
        self.groups.remove(&mid);
    }

    /// A peer is gone: drop it as a child, and re-join if it was our parent.
    pub(crate) fn tree_peer_lost(&mut self, peer: NodeId) {
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
            if g.children.remove(&peer).is_some() {
                self.prune(mid);
                continue;
            }
            g.parent = None;
            g.attached = false;
            g.join_backoff = Duration::ZERO;
            tracing::debug!(mid = %mid, "parent lost, joining again");
            self.send_join(mid);
        }
    }

    pub(crate) fn on_data(&mut self, from: NodeInfo, data: Data) {
        let Some(g) = self.groups.get_mut(&data.mid) else {
            self.send(from, Message::Leave { mid: data.mid });
            return;
        };
        if g.root || g.parent.is_none_or(|p| p.id != from.id) {
            // Only our parent feeds us; anything else is stale.
            return;
        }
        // One ordered stream per link means data arrives in the root's
        // order; anything not newer than what we saw is a duplicate.
        if (data.epoch, data.seq) <= g.seen {
            return;
        }
        g.seen = (data.epoch, data.seq);
        if g.member {
            self.emit(Event::Delivered {
                mid: data.mid,
                epoch: data.epoch,
                seq: data.seq,
                publisher: data.publisher,
                payload: data.payload.clone(),
            });
        }
        self.forward_to_children(&data);
    }

    /// Queues `data` for every child of its group. Runs once per message at
    /// every node, so it borrows the children instead of collecting them.
    fn forward_to_children(&mut self, data: &Data) {
        let Node { groups, out, .. } = self;
        if let Some(g) = groups.get(&data.mid) {
            out.extend(g.children.values().map(|c| Output::Send {
                to: c.info,
                msg: Message::Data(data.clone()),
            }));
        }
    }

    pub(crate) fn publish(&mut self, request: u64, mid: Mid, payload: Bytes) {
        if payload.len() > self.cfg.max_message_size {
            let limit = self.cfg.max_message_size as u32;
            self.emit(Event::PublishFailed {
                request,
                mid,
                error: PublishError::Rejected(RejectReason::PayloadTooLarge { limit }),
            });
            return;
        }
        if self.publishes.len() >= self.cfg.max_pending_publishes {
            let max = self.cfg.max_pending_publishes;
            self.emit(Event::PublishFailed {
                request,
                mid,
                error: PublishError::TooManyInFlight(max),
            });
            return;
        }
        let deadline = self.now + self.cfg.publish_timeout;
        self.publishes
            .insert(request, PendingPublish { mid, deadline });
        self.arm_publish_sweep();
        let publisher = self.me();
        self.on_publish(Publish {
            mid,
            publisher,
            pub_id: request,
            payload,
        });
    }

    /// Answers a publish: an event if it is our own, else a message to its
    /// publisher.
    fn answer_publish(&mut self, p: &Publish, result: Result<u64, RejectReason>) {
        let (mid, pub_id) = (p.mid, p.pub_id);
        if p.publisher.id == self.me().id {
            if self.publishes.remove(&pub_id).is_none() {
                return;
            }
            let event = match result {
                Ok(seq) => Event::PublishAccepted {
                    request: pub_id,
                    mid,
                    seq,
                },
                Err(reason) => Event::PublishFailed {
                    request: pub_id,
                    mid,
                    error: reason.into(),
                },
            };
            self.emit(event);
        } else {
            let msg = match result {
                Ok(seq) => Message::PublishAck { mid, pub_id, seq },
                Err(reason) => Message::PublishReject {
                    mid,
                    pub_id,
                    reason,
                },
            };
            self.send(p.publisher, msg);
        }
    }

    /// Routes a publish toward the root, or sequences it if we are the root.
    pub(crate) fn on_publish(&mut self, p: Publish) {
        let mid = p.mid;
        if !self.groups.get(&mid).is_some_and(|g| g.root) {
            match self.table.next_hop(mid.key(), None) {
                Some(next) => self.send(next, Message::Publish(p)),
                None => self.answer_publish(&p, Err(RejectReason::UnknownGroup)),
            }
            return;
        }
        if p.payload.len() > self.cfg.max_message_size {
            let limit = self.cfg.max_message_size as u32;
            return self.answer_publish(&p, Err(RejectReason::PayloadTooLarge { limit }));
        }
        let max_frame = self.cfg.max_frame_size();
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        g.last_seq += 1;
        let (epoch, seq) = (g.epoch, g.last_seq);
        let data = match seal_data(
            Data::new(mid, epoch, seq, p.publisher.id, p.payload.clone()),
            max_frame,
        ) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(mid = %mid, error = %e, "could not encode a group message");
                g.last_seq -= 1;
                return;
            }
        };
        let member = g.member;
        g.seen = (epoch, seq);
        self.forward_to_children(&data);
        if member {
            self.emit(Event::Delivered {
                mid,
                epoch,
                seq,
                publisher: p.publisher.id,
                payload: data.payload.clone(),
            });
        }
        self.answer_publish(&p, Ok(seq));
    }
}

#[cfg(test)]
mod tests {
    //! The join rule, one node at a time: inputs in, outputs checked.
    use super::*;
    use crate::config::Config;
    use crate::node::{Command, Input, Output};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::time::Instant;

    fn info(id: u128) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], (id % 50000) as u16 + 1000)),
        }
    }

    /// A node with id `me` that knows `known` and has entered the overlay.
    fn node(me: u128, known: &[u128], max_children: usize) -> Node<StdRng> {
        let cfg = Config {
            max_children,
            ..Config::default()
        };
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

    fn drain(n: &mut Node<StdRng>) -> Vec<(NodeId, Message)> {
        let mut sent = Vec::new();
        while let Some(o) = n.poll_output() {
            if let Output::Send { to, msg } = o {
                sent.push((to.id, msg));
            }
        }
        sent
    }

    fn join_from(
        n: &mut Node<StdRng>,
        mid: Mid,
        from: u128,
        joiner: u128,
    ) -> Vec<(NodeId, Message)> {
        let msg = Message::Join {
            mid,
            joiner: info(joiner),
        };
        n.handle(
            Instant::now(),
            Input::Message {
                from: info(from),
                msg,
            },
        );
        drain(n)
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
        assert!(matches!(sent[0].1, Message::Join { joiner, .. } if joiner.id == NodeId(Q)));
        let g = &q.groups()[0];
        assert!(!g.member && !g.root, "Q is a forwarder, not a member");
        assert_eq!(g.children, vec![info(P)], "P is Q's child");
        // The root's acknowledgement attaches Q, which acknowledges P.
        q.handle(
            Instant::now(),
            Input::Message {
                from: info(ROOT),
                msg: Message::JoinAck { mid: MID, depth: 0 },
            },
        );
        let sent = drain(&mut q);
        assert_eq!(sent.len(), 1);
        assert!(matches!(sent[0], (id, Message::JoinAck { depth: 1, .. }) if id == NodeId(P)));
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
        assert!(matches!(sent[0], (id, Message::JoinAck { depth: 0, .. }) if id == NodeId(Q)));

        // Q is on the tree: a later join through Q stops at Q.
        let mut q = node(Q, &[ROOT, P], 16);
        q.handle(Instant::now(), Input::Command(Command::Join { mid }));
        drain(&mut q);
        q.handle(
            Instant::now(),
            Input::Message {
                from: info(ROOT),
                msg: Message::JoinAck { mid, depth: 0 },
            },
        );
        drain(&mut q);
        let sent = join_from(&mut q, mid, P, P);
        assert_eq!(sent.len(), 1);
        assert!(matches!(sent[0], (id, Message::JoinAck { depth: 1, .. }) if id == NodeId(P)));
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
        assert!(matches!(msg, Message::Join { joiner, .. } if joiner.id == NodeId(3)));
        assert_eq!(root.groups()[0].children.len(), 2, "the bound holds");
        // The next hand-down goes to the other child.
        let sent = join_from(&mut root, mid, 4, 4);
        assert_ne!(sent[0].0, *to);
    }

    #[test]
    fn a_join_for_an_unknown_group_is_rejected_by_the_responsible_node() {
        let mut root = node(ROOT, &[Q], 16);
        let sent = join_from(&mut root, MID, Q, Q);
        assert!(matches!(
            sent[..],
            [(
                _,
                Message::JoinReject {
                    reason: RejectReason::UnknownGroup,
                    ..
                }
            )]
        ));
        assert!(root.groups().is_empty(), "no state kept for it");
    }
}
