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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::Rng;

use std::sync::Arc;

use crate::ctx::Ctx;
use crate::id::{distance, Mid, NodeId};
use crate::interface::Output;
use crate::lan::GroupKey;
use crate::lineage::{Lineage, Offered};
use crate::log::Log;
use crate::message::{Data, Message, NodeInfo};
use crate::message::{NotRoot, ReplicaAck, ReplicaSync};
use crate::node::{ctx, Node};
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

/// The replica part of a node: the copies it holds of other roots' state,
/// the roots it knows of otherwise, and the acknowledgements it owes.
#[derive(Debug, Default)]
pub(crate) struct Replicas {
    /// Our copies, by group (at most `max_groups`).
    pub(crate) held: BTreeMap<Mid, Replica>,
    /// Roots this node learned of without holding their replica (at most
    /// `max_groups`).
    pub(crate) known_roots: BTreeMap<Mid, (NodeInfo, u32)>,
    /// Replicas whose root is owed an acknowledgement at the next flush.
    acks_due: BTreeSet<Mid>,
}

/// What became of a [`Message::Replicate`].
pub(crate) enum Replicated {
    /// Held (or the root was asked for a sync, or it was ignored).
    Done,
    /// It came from a root that the root we follow supersedes: tell it.
    FromSuperseded,
}

impl Replicas {
    /// Whether there is nothing to watch or acknowledge.
    pub(crate) fn is_idle(&self) -> bool {
        self.held.is_empty() && self.acks_due.is_empty()
    }

    /// Remembers who is root of `mid`, for routing toward it from a node
    /// the overlay makes responsible for the mid but that holds no replica
    /// (a root that stepped down).
    pub(crate) fn remember_root(&mut self, ctx: &Ctx, mid: Mid, root: NodeInfo, epoch: u32) {
        if root.id == ctx.me.id {
            return;
        }
        if !self.known_roots.contains_key(&mid) && self.known_roots.len() >= ctx.cfg.max_groups {
            self.known_roots.pop_first();
        }
        self.known_roots.insert(mid, (root, epoch));
    }

    /// The replicas held, ordered by mid.
    pub(crate) fn views(&self) -> Vec<ReplicaView> {
        self.held
            .iter()
            .map(|(mid, r)| ReplicaView {
                mid: *mid,
                root: r.root,
                epoch: r.epoch,
                first: r.log.first(),
                last: r.log.next() - 1,
                orphaned: r.orphaned.is_some(),
            })
            .collect()
    }

    /// Holds `mid`'s state for `root` (from `first` on, with successors
    /// `order`), or keeps the copy we hold if it is the same root's, and
    /// acknowledges what we hold.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hold(
        &mut self,
        ctx: &mut Ctx,
        from: NodeInfo,
        mid: Mid,
        epoch: u32,
        root: NodeInfo,
        first: u64,
        order: Vec<NodeId>,
        key: Option<Box<GroupKey>>,
    ) {
        let (retain, retain_bytes) = (ctx.cfg.retain_messages, ctx.cfg.retain_bytes);
        match self.held.get_mut(&mid) {
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
                if !self.held.contains_key(&mid) && self.held.len() >= ctx.cfg.max_groups {
                    tracing::warn!(mid = %mid, "too many replicas held (max_groups); refusing another");
                    return;
                }
                self.held.insert(
                    mid,
                    Replica {
                        root,
                        epoch,
                        log: Log::new(first, retain, retain_bytes),
                        ahead: BTreeMap::new(),
                        committed: first.saturating_sub(1),
                        order,
                        since: ctx.now,
                        orphaned: None,
                        key,
                    },
                );
            }
        }
        let seq = self.held[&mid].log.next() - 1;
        ctx.send(from, Message::ReplicaAck(ReplicaAck { mid, epoch, seq }));
    }

    /// A message of a root's log, from `from`.
    pub(crate) fn on_replicate(&mut self, ctx: &mut Ctx, from: NodeInfo, data: Data) -> Replicated {
        let mid = data.mid;
        // A root we hold nothing for, or whose sync we missed, is asked
        // for one (it proves itself in the sync).
        let ask_sync = ReplicaAck {
            mid,
            epoch: 0,
            seq: 0,
        };
        let Some(rep) = self.held.get_mut(&mid) else {
            ctx.send(from, Message::ReplicaAck(ask_sync));
            return Replicated::Done;
        };
        // The log's messages keep the epoch they were ordered in: what
        // identifies the current root is who sends them.
        if rep.root.id != from.id || data.epoch > rep.epoch {
            if rep.orphaned.is_none()
                && supersedes(mid, rep.epoch, rep.root.id, data.epoch, from.id)
            {
                // We follow a better root.
                return Replicated::FromSuperseded;
            }
            ctx.send(from, Message::ReplicaAck(ask_sync));
            return Replicated::Done;
        }
        let next = rep.log.next();
        if data.seq > next {
            if rep.ahead.len() < ctx.cfg.max_fetch {
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
        Replicated::Done
    }

    /// Sends the acknowledgements deferred by [`Replicas::on_replicate`].
    pub(crate) fn flush_acks(&mut self, ctx: &mut Ctx) {
        for mid in std::mem::take(&mut self.acks_due) {
            if let Some(rep) = self.held.get(&mid) {
                let msg = Message::ReplicaAck(ReplicaAck {
                    mid,
                    epoch: rep.epoch,
                    seq: rep.log.next() - 1,
                });
                ctx.send(rep.root, msg);
            }
        }
    }

    /// A heartbeat from `from` listed `listed` (sorted by mid) as the
    /// groups we replicate for it, with what it committed: our copies keep
    /// what it may still need, and those it no longer lists (and had time
    /// to) are forgotten.
    pub(crate) fn on_root_heartbeat(
        &mut self,
        now: Instant,
        grace: Duration,
        from: NodeId,
        listed: &[(Mid, u64)],
    ) {
        for &(mid, seq) in listed {
            if let Some(r) = self.held.get_mut(&mid) {
                if r.root.id == from {
                    r.committed = r.committed.max(seq.min(r.log.next() - 1));
                }
            }
        }
        self.held.retain(|mid, r| {
            let dropped = r.root.id == from
                && r.orphaned.is_none()
                && listed.binary_search_by_key(mid, |&(m, _)| m).is_err()
                && now.duration_since(r.since) > grace;
            if dropped {
                tracing::debug!(mid = %mid, "the root no longer counts on us as a replica");
            }
            !dropped
        });
    }

    /// `dead` is gone: it is no longer a root we know of.
    pub(crate) fn forget_root(&mut self, dead: NodeId) {
        self.known_roots.retain(|_, (root, _)| root.id != dead);
    }

    /// The root `dead` is gone: the groups we replicate for it are
    /// orphaned from `now` (and returned).
    pub(crate) fn root_lost(&mut self, now: Instant, dead: NodeId) -> Vec<Mid> {
        self.held
            .iter_mut()
            .filter(|(_, r)| r.root.id == dead && r.orphaned.is_none())
            .map(|(m, r)| {
                r.orphaned = Some(now);
                *m
            })
            .collect()
    }

    /// The groups whose root we lost and no one took over yet.
    pub(crate) fn orphans(&self) -> Vec<Mid> {
        self.held
            .iter()
            .filter(|(_, r)| r.orphaned.is_some())
            .map(|(m, _)| *m)
            .collect()
    }

    /// Forgets the replica of `mid` if it was orphaned longer than
    /// `forget` ago (someone else took over).
    pub(crate) fn forget_orphan(&mut self, mid: Mid, now: Instant, forget: Duration) {
        if self
            .held
            .get(&mid)
            .and_then(|r| r.orphaned)
            .is_some_and(|t| now.duration_since(t) > forget)
        {
            self.held.remove(&mid);
        }
    }
}

impl<R: Rng> Node<R> {
    /// Remembers who is root of `mid` (see [`Replicas::remember_root`]).
    pub(crate) fn remember_root(&mut self, mid: Mid, root: NodeInfo, epoch: u32) {
        self.replicas.remember_root(&ctx!(self), mid, root, epoch);
    }

    /// The replicas this node holds, ordered by mid.
    pub fn replicas(&self) -> Vec<ReplicaView> {
        self.replicas.views()
    }

    /// A root's [`Message::ReplicaSync`] (anything else is ignored).
    /// Admission checked its shape: it is from the root its lineage ends
    /// with, and that lineage's last mandate names us.
    pub(crate) fn on_replica_sync(&mut self, from: NodeInfo, sync: Message) {
        let Message::ReplicaSync(ReplicaSync {
            mid,
            epoch,
            root,
            first,
            lineage,
            key,
        }) = sync
        else {
            return;
        };
        let was_root = self.groups.get(&mid).is_some_and(|g| g.is_root());
        match self.offer_lineage(mid, &lineage) {
            Err(()) => return self.dropped.count("replica-sync (forged)"),
            Ok(Offered::Adopted) if was_root => self.step_down(mid, root, epoch),
            Ok(_) => {}
        }
        if self.lineages.get(mid).is_none_or(|held| *held != lineage) {
            // We follow (or are) a root that leads the sender.
            return self.tell_not_root(from, mid);
        }
        let order = lineage
            .last()
            .map(|m| m.successors.clone())
            .unwrap_or_default();
        self.replicas
            .hold(&mut ctx!(self), from, mid, epoch, root, first, order, key);
    }

    /// Checks a lineage a peer claims for `mid`, and holds it if it leads
    /// the one we hold (see [`crate::lineage`]). `Err` if it is forged.
    pub(crate) fn offer_lineage(
        &mut self,
        mid: Mid,
        lineage: &Arc<Lineage>,
    ) -> Result<Offered, ()> {
        let max = self
            .cfg
            .max_groups
            .saturating_mul(2)
            .saturating_add(self.cfg.max_collections);
        let offered = self.lineages.offer(mid, lineage, max).map_err(|e| {
            tracing::debug!(mid = %mid, error = %e, "a forged lineage; dropped");
        })?;
        if offered == Offered::Adopted {
            // Our subtree must know who leads before the proofs of its
            // epoch reach it, however we learned it.
            let Node { groups, out, .. } = self;
            if let Some(g) = groups.get(&mid).filter(|g| !g.is_root()) {
                out.extend(g.acked_children().map(|c| Output::Send {
                    to: c.info,
                    msg: Message::Lineage(lineage.clone()),
                }));
            }
        }
        Ok(offered)
    }

    /// Tells `to` that the root we hold the lineage of leads the group,
    /// not it.
    fn tell_not_root(&mut self, to: NodeInfo, mid: Mid) {
        let Some(lineage) = self.lineages.get(mid).cloned() else {
            return;
        };
        let me = self.me();
        let root = if lineage.root() == Some(me.id) {
            Some(me)
        } else {
            self.replicas
                .held
                .get(&mid)
                .map(|r| r.root)
                .filter(|r| lineage.root() == Some(r.id))
        };
        let Some(root) = root else {
            return;
        };
        let epoch = lineage.epoch();
        self.send(
            to,
            Message::NotRoot(NotRoot {
                mid,
                epoch,
                root,
                lineage,
            }),
        );
    }

    pub(crate) fn on_replicate(&mut self, from: NodeInfo, data: Data) {
        let mid = data.mid;
        match self.replicas.on_replicate(&mut ctx!(self), from, data) {
            Replicated::FromSuperseded => self.tell_not_root(from, mid),
            Replicated::Done => {}
        }
    }

    /// Sends the acknowledgements deferred by [`Replicas::on_replicate`].
    pub(crate) fn flush_acks(&mut self) {
        self.replicas.flush_acks(&mut ctx!(self));
    }

    /// A node tells us that `root` leads the group, with its lineage: a
    /// root that the lineage proves led before steps down.
    pub(crate) fn on_not_root(&mut self, not_root: NotRoot) {
        let NotRoot {
            mid,
            epoch,
            root,
            lineage,
        } = not_root;
        let was_root = self.groups.get(&mid).is_some_and(|g| g.is_root());
        match self.offer_lineage(mid, &lineage) {
            Err(()) => self.dropped.count("not-root (forged)"),
            Ok(Offered::Adopted) if was_root => self.step_down(mid, root, epoch),
            Ok(_) => {}
        }
    }

    /// The root of groups we replicate is gone.
    pub(crate) fn replica_root_lost(&mut self, dead: NodeId) {
        for mid in self.replicas.root_lost(self.now, dead) {
            self.consider_takeover(mid);
        }
    }

    /// Takes over an orphaned group if it is our turn: we are now
    /// responsible for the mid, or the first live replica of the root's
    /// ranking.
    pub(crate) fn consider_takeover(&mut self, mid: Mid) {
        let me = self.me().id;
        let Some(rep) = self.replicas.held.get(&mid) else {
            return;
        };
        if rep.orphaned.is_none() {
            return;
        }
        let first_live = rep
            .order
            .iter()
            .copied()
            .find(|id| *id == me || (*id != rep.root.id && self.overlay.table.contains(*id)));
        if self.overlay.table.is_responsible(mid.key()) || first_live == Some(me) {
            self.take_over(mid);
        }
    }

    /// Becomes the group's root in the next epoch, from our replica, if
    /// the lineage we hold names us.
    fn take_over(&mut self, mid: Mid) {
        let Some(rep) = self.replicas.held.get(&mid) else {
            return;
        };
        let lineage = self
            .lineages
            .get(mid)
            .filter(|l| l.epoch() == rep.epoch)
            .and_then(|l| l.succeeded_by(&*self.signer, Vec::new()));
        let Some(lineage) = lineage.map(Arc::new) else {
            tracing::warn!(mid = %mid, "root lost, but its mandate does not name this node; not taking over");
            self.replicas.held.remove(&mid);
            return;
        };
        let Some(rep) = self.replicas.held.remove(&mid) else {
            return;
        };
        let epoch = lineage.epoch();
        self.lineages.set(mid, lineage.clone());
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
        let mut root = Root::new(lineage, log, base.saturating_sub(1));
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
        let Node {
            lineages,
            groups,
            replicas,
            replays,
            publisher,
            roots,
            ..
        } = self;
        lineages.retain(|mid| {
            groups.contains_key(&mid)
                || replicas.held.contains_key(&mid)
                || replays.values().any(|r| r.mid == mid)
                || publisher.publishes_to(mid)
                || roots.contains(mid)
        });
        let now = self.now;
        let forget = self.cfg.failure_timeout * 10;
        for mid in self.replicas.orphans() {
            self.consider_takeover(mid);
            self.replicas.forget_orphan(mid, now, forget);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Root authority: only the issuing root, and the replicas each root
    //! names in its signed mandate, may lead a group.
    use std::sync::Arc;
    use std::time::Instant;

    use rand::rngs::StdRng;

    use super::*;
    use crate::config::Config;
    use crate::interface::{Command, Event, Input};
    use crate::lineage::Mandate;
    use crate::message::Data;
    use crate::proof::{digest, Proof};
    use crate::test_support::{attach, deliver, info, keyed, node_signing};

    /// A node whose id is its key's, so its mandates and proofs count.
    fn keyed_node(digit: u8, known: &[u128]) -> (Node<StdRng>, crate::keys::SharedSigner) {
        let (id, key) = keyed(digit);
        (node_signing(id, key.clone(), known, Config::default()), key)
    }

    /// Makes `r` create a group; its mid, and what `r` sent its replicas.
    fn create(r: &mut Node<StdRng>) -> (Mid, Vec<(NodeId, Message)>) {
        r.handle(
            Instant::now(),
            Input::Command(Command::CreateGroup { request: 1 }),
        );
        let mut mid = None;
        let mut sent = Vec::new();
        while let Some(o) = r.poll_output() {
            match o {
                crate::interface::Output::Event(Event::GroupCreated { mid: m, .. }) => {
                    mid = Some(m)
                }
                crate::interface::Output::Send { to, msg } => sent.push((to.id, msg)),
                _ => {}
            }
        }
        (mid.expect("the group was created"), sent)
    }

    fn sync_to(sent: &[(NodeId, Message)], to: u128) -> Message {
        sent.iter()
            .find(|(t, m)| t.0 == to && m.kind() == "replica-sync")
            .map(|(_, m)| m.clone())
            .expect("a sync to the replica")
    }

    fn is_root(n: &Node<StdRng>, mid: Mid) -> bool {
        n.groups.get(&mid).is_some_and(|g| g.is_root())
    }

    #[test]
    fn a_node_the_root_did_not_name_cannot_take_its_group() {
        let (p, _) = keyed(0xE);
        let (q, _) = keyed(0x1);
        let (liar, liar_key) = keyed(0x5);
        let (mut r, _) = keyed_node(0xF, &[p, q]);
        let (mid, sent) = create(&mut r);
        let Message::ReplicaSync(genuine) = sync_to(&sent, p) else {
            unreachable!()
        };
        // The liar takes the root's genuine first mandate (a replica saw
        // it) and appends a second epoch of its own.
        let mut stolen = (*genuine.lineage).clone();
        stolen
            .mandates
            .push(Mandate::sign(&*liar_key, mid, 2, 1, vec![r.me().id]));
        let stolen = Arc::new(stolen);
        // Or it starts the group's lineage itself.
        let own = Arc::new(
            Lineage::first(&*liar_key, mid, vec![NodeId(liar)])
                .succeeded_by(&*liar_key, vec![r.me().id])
                .expect("it named itself"),
        );
        for lineage in [stolen.clone(), own] {
            let not_root = NotRoot {
                mid,
                epoch: 2,
                root: info(liar),
                lineage: lineage.clone(),
            };
            deliver(&mut r, liar, Message::NotRoot(not_root));
            let sync = ReplicaSync {
                mid,
                epoch: 2,
                root: info(liar),
                first: 1,
                lineage,
                key: None,
            };
            deliver(&mut r, liar, Message::ReplicaSync(sync));
        }
        assert_eq!(r.dropped().get("not-root (forged)"), 2);
        assert_eq!(r.dropped().get("replica-sync (forged)"), 2);
        assert!(is_root(&r, mid), "the root keeps its group");
        assert!(r.replicas().is_empty());

        // A member, told the same, takes none of the liar's proofs.
        let (mut m, _) = keyed_node(0x3, &[r.me().id.0, p]);
        attach(&mut m, mid, &[r.me().id.0]);
        deliver(&mut m, liar, Message::Lineage(stolen));
        assert_eq!(m.dropped().get("lineage (forged)"), 1);
        let d = Data::new(mid, 2, 1, NodeId(liar), 1, bytes::Bytes::from_static(b"x"));
        let proof = Proof::sign(&*liar_key, mid, 2, 1, vec![digest(&d)]);
        deliver(&mut m, r.me().id.0, Message::Proof(Arc::new(proof)));
        assert_eq!(m.dropped().get("proof (unknown epoch)"), 1);
    }

    #[test]
    fn a_named_replica_takes_over_and_everyone_follows_its_lineage() {
        let (p, p_key) = keyed(0xE);
        let (q, _) = keyed(0x1);
        let (liar, liar_key) = keyed(0x5);
        let (mut r, r_key) = keyed_node(0xF, &[p, q]);
        let root = r.me().id.0;
        let (mid, sent) = create(&mut r);
        let (mut pn, _) = keyed_node(0xE, &[root, q]);
        deliver(&mut pn, root, sync_to(&sent, p));
        assert_eq!(pn.replicas().len(), 1, "p holds the root's state");

        // The root dies; p, first in the root's order, takes over.
        pn.peer_lost(NodeId(root));
        assert!(is_root(&pn, mid), "p leads now");
        let lineage = pn.lineages.get(mid).cloned().expect("p's lineage");
        assert_eq!((lineage.epoch(), lineage.root()), (2, Some(NodeId(p))));
        lineage.check(mid, None).expect("anyone can check it");

        // A member learns p's lineage, then takes p's proofs of epoch 2,
        // and no one else's (not even the old root's, for epoch 2).
        let (mut m, _) = keyed_node(0x3, &[root, p]);
        attach(&mut m, mid, &[p]);
        deliver(&mut m, p, Message::Lineage(lineage.clone()));
        let d = Data::new(mid, 1, 1, NodeId(q), 1, bytes::Bytes::from_static(b"x"));
        for key in [&liar_key, &r_key] {
            let forged = Proof::sign(&**key, mid, 2, 1, vec![digest(&d)]);
            deliver(&mut m, liar, Message::Proof(Arc::new(forged)));
        }
        assert_eq!(m.dropped().get("proof (forged)"), 2);
        let genuine = Proof::sign(&*p_key, mid, 2, 1, vec![digest(&d)]);
        deliver(&mut m, p, Message::Proof(Arc::new(genuine)));
        deliver(&mut m, p, Message::Data(d));
        assert_eq!(m.groups[&mid].stream.next, Some(2), "delivered");

        // The old root, back from a partition, hears of p and steps down.
        let not_root = NotRoot {
            mid,
            epoch: 2,
            root: info(p),
            lineage,
        };
        deliver(&mut r, p, Message::NotRoot(not_root));
        assert!(!is_root(&r, mid), "the old root stepped down");
        assert_eq!(r.dropped().total(), 0);
    }
}
