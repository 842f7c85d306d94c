//! Replicas of a group's root state, and how one of them takes over when the
//! root dies.
//!
//! A replica holds what the root sent it ([`Message::ReplicaSync`], then the
//! root's log one [`Message::Replicate`] at a time, each acknowledged), and
//! watches the root through heartbeats. When the root is lost, the replica
//! that the overlay now makes responsible for the mid (the closest live node
//! to it), or failing that the first live replica in the root's own ranking,
//! takes over: it becomes root in the next epoch and continues the sequence
//! from its copy of the log. Everything the old root committed is in that
//! copy, because the old root committed a message only once every replica
//! held it; messages the old root had not committed are in it too if this
//! replica got them, and are committed by the new root (their publishers are
//! answered when they retry). The new root chooses its own replicas and
//! sends them its log; the old root's children join again and find it by
//! routing toward the mid.
//!
//! Two nodes can believe they are root at once (a root taken for dead that
//! was only slow, or replicas that disagree on who is closest). Epochs settle
//! it: a root that hears of a root in a later epoch, or in the same epoch
//! but closer to the mid, steps down ([`Message::NotRoot`]). Because a root
//! needs every replica's acknowledgement to commit, and the node that took
//! over refuses the old root's replication, the old root cannot commit
//! anything once it has been replaced by one of its replicas.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::Rng;

use crate::id::{distance, Mid, NodeId};
use crate::lan::GroupKey;
use crate::log::Log;
use crate::message::{Data, Message, NodeInfo};
use crate::message::{NotRoot, ReplicaAck, ReplicaSync};
use crate::node::Node;
use crate::root::Root;
use crate::timer::Timer;
use crate::tree::Group;

/// This node's copy of a group's root state.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    pub(crate) root: NodeInfo,
    pub(crate) epoch: u32,
    pub(crate) log: Log,
    /// Messages that arrived after a lost one, until it is sent again
    /// (at most `max_fetch`).
    ahead: BTreeMap<u64, Data>,
    /// The root's last committed sequence number, from its heartbeats.
    pub(crate) committed: u64,
    /// The root's replica set, in takeover order.
    pub(crate) order: Vec<NodeId>,
    /// When the root made us a replica.
    pub(crate) since: Instant,
    /// When we lost the root, if we did.
    pub(crate) orphaned: Option<Instant>,
    /// The group's multicast key, kept for when we take over.
    key: Option<Box<GroupKey>>,
}

/// A read-only view of a replica this node holds, for status displays.
#[derive(Debug, Clone)]
pub struct ReplicaView {
    /// The group.
    pub mid: Mid,
    /// The root it copies.
    pub root: NodeInfo,
    /// The root's epoch.
    pub epoch: u32,
    /// Sequence number of the oldest message held.
    pub first: u64,
    /// Sequence number of the newest message held.
    pub last: u64,
    /// Whether the root was lost (and someone else should take over).
    pub orphaned: bool,
}

/// Whether root `a` in epoch `ea` supersedes root `b` in epoch `eb`.
pub(crate) fn supersedes(mid: Mid, ea: u32, a: NodeId, eb: u32, b: NodeId) -> bool {
    ea > eb || (ea == eb && distance(a.key(), mid.key()) < distance(b.key(), mid.key()))
}

impl<R: Rng> Node<R> {
    /// Remembers who is root of `mid`, for routing toward it from a node
    /// the overlay makes responsible for the mid but that holds no replica
    /// (a root that stepped down).
    pub(crate) fn remember_root(&mut self, mid: Mid, root: NodeInfo, epoch: u32) {
        if root.id == self.me().id {
            return;
        }
        if !self.known_roots.contains_key(&mid) && self.known_roots.len() >= self.cfg.max_groups {
            self.known_roots.pop_first();
        }
        self.known_roots.insert(mid, (root, epoch));
    }

    /// The replicas this node holds, ordered by mid.
    pub fn replicas(&self) -> Vec<ReplicaView> {
        let mut v: Vec<ReplicaView> = self
            .replicas
            .iter()
            .map(|(mid, r)| ReplicaView {
                mid: *mid,
                root: r.root,
                epoch: r.epoch,
                first: r.log.first(),
                last: r.log.next() - 1,
                orphaned: r.orphaned.is_some(),
            })
            .collect();
        v.sort_by_key(|r| r.mid);
        v
    }

    /// A root's [`Message::ReplicaSync`] (anything else is ignored).
    pub(crate) fn on_replica_sync(&mut self, from: NodeInfo, sync: Message) {
        let Message::ReplicaSync(ReplicaSync {
            mid,
            epoch,
            root,
            first,
            replicas: order,
            key,
        }) = sync
        else {
            return;
        };
        if root.id != from.id || first == 0 {
            return;
        }
        let me = self.me();
        if let Some(r) = self.groups.get(&mid).and_then(|g| g.root.as_ref()) {
            if supersedes(mid, epoch, from.id, r.epoch, me.id) {
                self.step_down(mid, root, epoch);
            } else {
                let epoch = r.epoch;
                self.send(
                    from,
                    Message::NotRoot(NotRoot {
                        mid,
                        epoch,
                        root: me,
                    }),
                );
                return;
            }
        }
        let now = self.now;
        let (retain, retain_bytes) = (self.cfg.retain_messages, self.cfg.retain_bytes);
        match self.replicas.get_mut(&mid) {
            Some(rep)
                if rep.root.id != from.id
                    && rep.orphaned.is_none()
                    && supersedes(mid, rep.epoch, rep.root.id, epoch, from.id) =>
            {
                // We follow a root that supersedes the sender.
                let msg = Message::NotRoot(NotRoot {
                    mid,
                    epoch: rep.epoch,
                    root: rep.root,
                });
                self.send(from, msg);
                return;
            }
            Some(rep)
                if rep.root.id == from.id
                    && rep.epoch == epoch
                    && rep.log.first() <= first
                    && first <= rep.log.next() =>
            {
                // The same root with a new replica set: keep the log.
                rep.order = order;
                if key.is_some() {
                    rep.key = key;
                }
            }
            _ => {
                if !self.replicas.contains_key(&mid) && self.replicas.len() >= self.cfg.max_groups {
                    tracing::warn!(mid = %mid, "too many replicas held (max_groups); refusing another");
                    return;
                }
                self.replicas.insert(
                    mid,
                    Replica {
                        root,
                        epoch,
                        log: Log::new(first, retain, retain_bytes),
                        ahead: BTreeMap::new(),
                        committed: first.saturating_sub(1),
                        order,
                        since: now,
                        orphaned: None,
                        key,
                    },
                );
            }
        }
        let seq = self.replicas[&mid].log.next() - 1;
        self.send(from, Message::ReplicaAck(ReplicaAck { mid, epoch, seq }));
    }

    pub(crate) fn on_replicate(&mut self, from: NodeInfo, data: Data) {
        let mid = data.mid;
        let Some(rep) = self.replicas.get_mut(&mid) else {
            // We hold nothing for this root: ask it to sync us.
            let msg = Message::ReplicaAck(ReplicaAck {
                mid,
                epoch: 0,
                seq: 0,
            });
            return self.send(from, msg);
        };
        // The log's messages keep the epoch they were ordered in: what
        // identifies the current root is who sends them.
        if rep.root.id != from.id || data.epoch > rep.epoch {
            let msg = if rep.orphaned.is_none()
                && supersedes(mid, rep.epoch, rep.root.id, data.epoch, from.id)
            {
                // We follow a better root.
                Message::NotRoot(NotRoot {
                    mid,
                    epoch: rep.epoch,
                    root: rep.root,
                })
            } else {
                // A new root whose sync we missed: ask it for one.
                Message::ReplicaAck(ReplicaAck {
                    mid,
                    epoch: 0,
                    seq: 0,
                })
            };
            return self.send(from, msg);
        }
        let next = rep.log.next();
        if data.seq > next {
            if rep.ahead.len() < self.cfg.max_fetch {
                rep.ahead.insert(data.seq, data);
            }
        } else if data.seq == next {
            rep.log.push(data);
            while let Some(d) = rep.ahead.remove(&rep.log.next()) {
                rep.log.push(d);
            }
            let next = rep.log.next();
            rep.ahead.retain(|&seq, _| seq > next);
        }
        // Never forget what the root may still need from us to commit.
        let keep = (rep.log.next() - 1).saturating_sub(rep.committed) as usize;
        rep.log.trim(keep);
        // One cumulative acknowledgement per batch of inputs, not one per
        // message: a burst of publishes costs the root one ack per replica.
        self.acks_due.insert(mid);
    }

    /// Sends the acknowledgements deferred by [`Node::on_replicate`].
    pub(crate) fn flush_acks(&mut self) {
        for mid in std::mem::take(&mut self.acks_due) {
            if let Some(rep) = self.replicas.get(&mid) {
                let msg = Message::ReplicaAck(ReplicaAck {
                    mid,
                    epoch: rep.epoch,
                    seq: rep.log.next() - 1,
                });
                let root = rep.root;
                self.send(root, msg);
            }
        }
    }

    /// A root tells us about a root that supersedes it.
    pub(crate) fn on_not_root(&mut self, mid: Mid, epoch: u32, root: NodeInfo) {
        let me = self.me().id;
        if root.id == me {
            return;
        }
        if let Some(r) = self.groups.get(&mid).and_then(|g| g.root.as_ref()) {
            if supersedes(mid, epoch, root.id, r.epoch, me) {
                self.step_down(mid, root, epoch);
            }
        }
    }

    /// The root of groups we replicate is gone.
    pub(crate) fn replica_root_lost(&mut self, dead: NodeId) {
        let now = self.now;
        let mids: Vec<Mid> = self
            .replicas
            .iter_mut()
            .filter(|(_, r)| r.root.id == dead && r.orphaned.is_none())
            .map(|(m, r)| {
                r.orphaned = Some(now);
                *m
            })
            .collect();
        for mid in mids {
            self.consider_takeover(mid);
        }
    }

    /// Takes over an orphaned group if it is our turn: we are now
    /// responsible for the mid, or the first live replica of the root's
    /// ranking.
    pub(crate) fn consider_takeover(&mut self, mid: Mid) {
        let me = self.me().id;
        let Some(rep) = self.replicas.get(&mid) else {
            return;
        };
        if rep.orphaned.is_none() {
            return;
        }
        let first_live = rep
            .order
            .iter()
            .copied()
            .find(|id| *id == me || (*id != rep.root.id && self.table.contains(*id)));
        if self.table.is_responsible(mid.key()) || first_live == Some(me) {
            self.take_over(mid);
        }
    }

    /// Becomes the group's root in the next epoch, from our replica.
    fn take_over(&mut self, mid: Mid) {
        let Some(rep) = self.replicas.remove(&mid) else {
            return;
        };
        let epoch = rep.epoch.saturating_add(1);
        let mut g = self
            .groups
            .remove(&mid)
            .unwrap_or_else(|| Group::new(false, &self.cfg, self.now));
        if let Some(p) = g.parent.take() {
            if p.id != rep.root.id {
                self.send(p, Message::Leave { mid });
            }
        }
        let log = rep.log;
        // What we passed on already counts as committed: our subtree has
        // it. The rest of the log is committed once our replicas hold it.
        let base = g
            .stream
            .next
            .unwrap_or(log.next())
            .clamp(log.first(), log.next());
        tracing::info!(mid = %mid, epoch, next = base, held = log.len(), "root lost; taking over as root");
        let first = log.first();
        let mut root = Root::new(epoch, log, base.saturating_sub(1));
        root.prove_again(first);
        g.root = Some(Box::new(root));
        self.unproven.insert(mid);
        if rep.key.is_some() {
            g.lan.key = rep.key;
        }
        g.stream = crate::stream::Stream::new(&self.cfg);
        self.timers.stop(Timer::Repair(mid));
        g.attached = true;
        g.established = true;
        g.path.clear();
        g.join.target = None;
        self.groups.insert(mid, g);
        self.choose_replicas(mid);
        self.try_commit(mid);
        let waiting: Vec<NodeId> = self.groups[&mid].children.keys().copied().collect();
        for c in waiting {
            self.ack_child(mid, c);
        }
    }

    /// Every heartbeat: orphaned replicas try to take over again (the
    /// replica ranked before us may be dead too), and are forgotten after a
    /// while if someone else did.
    pub(crate) fn replica_tick(&mut self) {
        let now = self.now;
        let forget = self.cfg.failure_timeout * 10;
        let orphans: Vec<Mid> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.orphaned.is_some())
            .map(|(m, _)| *m)
            .collect();
        for mid in orphans {
            self.consider_takeover(mid);
            if self
                .replicas
                .get(&mid)
                .and_then(|r| r.orphaned)
                .is_some_and(|t| now.duration_since(t) > forget)
            {
                self.replicas.remove(&mid);
            }
        }
    }
}
