//! The root of a group: it orders the group's messages, keeps them, and
//! keeps a copy of its state on its replicas so that the group outlives it.
//!
//! A publish that reaches the root is checked against the publishes the
//! root already holds, by `(publisher, pub_id)`: a publisher that retries
//! (because its acknowledgement was lost, or the root crashed) gets the
//! sequence number the first attempt got, and the message is never ordered
//! twice. A new message gets the next sequence number in the current epoch,
//! goes into the root's log, and is sent to every replica
//! ([`Message::Replicate`]). It is *committed* once every replica holds it
//! ([`Message::ReplicaAck`]): only then does it go down the tree and is its
//! publisher told it was accepted. So whatever any member has seen, and
//! whatever any publisher was told succeeded, is held by every replica, and
//! the replica that takes over as root (see [`crate::replica`]) continues
//! from a log that has all of it.
//!
//! The log is also the group's retention: the last `retain_messages`
//! (at most `retain_bytes`) committed messages, from which gaps are repaired
//! and replays are served. Messages not yet committed are never dropped from
//! it; at most `max_pending_publishes` of them wait at a time, and beyond
//! that the root answers [`RejectReason::Overloaded`] and the publisher
//! retries later.
//!
//! The replicas are the `replicas` nodes closest to the mid in the root's
//! routing state, which are the nodes that routing makes responsible for the
//! mid when the root is gone. The set is re-evaluated every heartbeat; a new
//! replica gets the whole log.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use rand::Rng;

use std::sync::Arc;

use crate::frame::seal_data;
use crate::id::{distance, Mid, NodeId};
use crate::interface::Output;
use crate::lan::GroupKey;
use crate::lineage::Lineage;
use crate::log::Log;
use crate::message::ReplicaSync;
use crate::message::{Data, Message, NodeInfo, Publish, RejectReason, MAX_REPLICAS};
use crate::node::Node;
use crate::proof::{digest, Proven, Prover};
use crate::tree::Group;

/// A replica as the root sees it.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaPeer {
    pub(crate) info: NodeInfo,
    /// The last sequence number it acknowledged.
    pub(crate) acked: u64,
    /// When `acked` last moved (or the replica was added, or was last sent
    /// a catch-up).
    pub(crate) progress_at: Instant,
    /// When it was last sent our whole log.
    synced_at: Instant,
}

/// The root's state of one group.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    pub(crate) epoch: u32,
    /// Retained messages, then the ones waiting for their replication.
    pub(crate) log: Log,
    /// The last committed sequence number.
    pub(crate) committed: u64,
    /// `(publisher, pub_id)` of every message in the log.
    index: HashMap<(NodeId, u64), u64>,
    /// Publishers to answer once their message is committed.
    waiting: BTreeMap<u64, (NodeInfo, u64)>,
    pub(crate) replicas: Vec<ReplicaPeer>,
    /// Digests of committed messages no proof covers yet.
    prover: Prover,
    /// The proofs that cover the retention, for serving it.
    pub(crate) proofs: Proven,
    /// Our proof that we lead this epoch, whose last mandate names our
    /// replicas (see [`crate::lineage`]).
    pub(crate) lineage: Arc<Lineage>,
}

impl Root {
    /// A root in `epoch` continuing from `log`, of which everything up to
    /// `committed` is committed.
    pub(crate) fn new(lineage: Arc<Lineage>, log: Log, committed: u64) -> Self {
        let epoch = lineage.epoch();
        let index = log
            .iter()
            .map(|d| ((d.publisher, d.pub_id), d.seq))
            .collect();
        Root {
            epoch,
            log,
            committed,
            index,
            waiting: BTreeMap::new(),
            replicas: Vec::new(),
            prover: Prover::default(),
            proofs: Proven::default(),
            lineage,
        }
    }

    /// Has the committed messages `from..=committed` of the log proved
    /// again, in this root's epoch: a root that took over proves what it
    /// inherited, since its predecessor may have died before it proved it.
    pub(crate) fn prove_again(&mut self, from: u64) {
        for d in self.log.range(from, self.committed + 1) {
            self.prover.committed(d.seq, digest(d));
        }
    }

    fn last(&self) -> u64 {
        self.log.next() - 1
    }

    /// The sync that tells a replica who we are, where our log starts and
    /// the takeover order.
    fn sync(&self, mid: Mid, me: NodeInfo, key: Option<Box<GroupKey>>) -> Message {
        Message::ReplicaSync(ReplicaSync {
            mid,
            epoch: self.epoch,
            root: me,
            first: self.log.first(),
            lineage: self.lineage.clone(),
            key,
        })
    }

    /// What makes a node a replica holding our whole log: the sync, then
    /// every message of the log.
    fn full_sync(&self, mid: Mid, me: NodeInfo, key: Option<Box<GroupKey>>) -> Vec<Message> {
        std::iter::once(self.sync(mid, me, key))
            .chain(self.log.iter().cloned().map(Message::Replicate))
            .collect()
    }

    fn uncommitted(&self) -> usize {
        (self.last() - self.committed) as usize
    }

    /// Forgets retained messages beyond the bounds, never uncommitted ones.
    fn trim(&mut self) {
        let keep = self.uncommitted();
        while let Some(d) = self.log.evict(keep) {
            // Only messages still in the log are de-duplicated: a retry
            // older than the retention is beyond any publisher's timeout.
            self.index.remove(&(d.publisher, d.pub_id));
        }
        self.proofs.forget_before(self.log.first());
    }
}

impl<R: Rng> Node<R> {
    pub(crate) fn create_group(&mut self) -> Mid {
        let mid = loop {
            let mid = Mid::issue(self.me().id, &mut self.rng);
            if !self.groups.contains_key(&mid) {
                break mid;
            }
        };
        tracing::debug!(mid = %mid, "group created");
        let mut g = Group::new(true, &self.cfg, self.now);
        g.lan.key = Some(Box::new(GroupKey::random(&mut self.rng)));
        let log = Log::new(1, self.cfg.retain_messages, self.cfg.retain_bytes);
        let lineage = Arc::new(Lineage::first(&*self.signer, mid, Vec::new()));
        self.lineages.set(mid, lineage.clone());
        g.root = Some(Box::new(Root::new(lineage, log, 0)));
        g.attached = true;
        g.established = true;
        self.groups.insert(mid, g);
        self.choose_replicas(mid);
        mid
    }

    /// Orders a publish that reached the root.
    pub(crate) fn sequence(&mut self, p: Publish) {
        let mid = p.mid;
        if p.payload.len() > self.cfg.max_message_size {
            let limit = self.cfg.max_message_size as u32;
            return self.answer_publish(&p, Err(RejectReason::PayloadTooLarge { limit }));
        }
        let max_frame = self.cfg.max_frame_size();
        let max_waiting = self.cfg.max_pending_publishes;
        let Some(r) = self.groups.get_mut(&mid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        if let Some(&seq) = r.index.get(&(p.publisher.id, p.pub_id)) {
            // A retry of a message we hold.
            if seq <= r.committed {
                return self.answer_publish(&p, Ok(seq));
            }
            r.waiting.insert(seq, (p.publisher, p.pub_id));
            return;
        }
        if r.uncommitted() >= max_waiting {
            return self.answer_publish(&p, Err(RejectReason::Overloaded));
        }
        let seq = r.log.next();
        let data = Data::new(
            mid,
            r.epoch,
            seq,
            p.publisher.id,
            p.pub_id,
            p.payload.clone(),
        );
        let data = match seal_data(data, max_frame) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(mid = %mid, error = %e, "could not encode a group message");
                return;
            }
        };
        r.log.push(data.clone());
        r.index.insert((p.publisher.id, p.pub_id), seq);
        r.waiting.insert(seq, (p.publisher, p.pub_id));
        let replicas: Vec<NodeInfo> = r.replicas.iter().map(|x| x.info).collect();
        for to in replicas {
            self.send(to, Message::Replicate(data.clone()));
        }
        self.try_commit(mid);
    }

    /// Commits what every replica holds: down the tree, to the local
    /// application, and the publishers' answers.
    pub(crate) fn try_commit(&mut self, mid: Mid) {
        loop {
            let Some(r) = self.groups.get_mut(&mid).and_then(|g| g.root.as_mut()) else {
                return;
            };
            let target = r
                .replicas
                .iter()
                .map(|x| x.acked)
                .min()
                .unwrap_or(u64::MAX)
                .min(r.last());
            if target <= r.committed {
                r.trim();
                return;
            }
            let seq = r.committed + 1;
            let Some(data) = r.log.get(seq).cloned() else {
                // Not expected: uncommitted messages are never trimmed.
                r.committed = target;
                continue;
            };
            r.committed = seq;
            r.prover.committed(seq, digest(&data));
            self.unproven.insert(mid);
            let answer = r.waiting.remove(&seq);
            self.hand_on(mid, &data);
            if let Some((publisher, pub_id)) = answer {
                let p = Publish {
                    mid,
                    publisher,
                    pub_id,
                    payload: bytes::Bytes::new(),
                };
                self.answer_publish(&p, Ok(seq));
            }
        }
    }

    /// Signs what each group we are root of committed since the last
    /// flush, and sends the proofs down the tree behind the messages (see
    /// [`crate::proof`]).
    pub(crate) fn prove_commits(&mut self) {
        for mid in std::mem::take(&mut self.unproven) {
            let Some(g) = self.groups.get_mut(&mid) else {
                continue;
            };
            let Some(r) = g.root.as_mut() else {
                continue;
            };
            let proofs = r.prover.prove(&*self.signer, mid, r.epoch);
            let mut sent = Vec::with_capacity(proofs.len());
            for p in proofs {
                let p = Arc::new(p);
                r.proofs.keep(p.clone(), usize::MAX);
                sent.push(p);
            }
            let Node { groups, out, .. } = self;
            let g = &groups[&mid];
            for p in sent {
                out.extend(g.acked_children().map(|c| Output::Send {
                    to: c.info,
                    msg: Message::Proof(p.clone()),
                }));
            }
        }
    }

    /// The nodes that should hold this group's state: the closest to the
    /// mid that we know, one per network other than ours, so that no one
    /// host or subnet, however many ids it makes near the mid, holds every
    /// seat of the group's succession. New ones get our whole log.
    pub(crate) fn choose_replicas(&mut self, mid: Mid) {
        let me = self.me();
        let want = self.cfg.replicas.min(MAX_REPLICAS);
        let mut candidates: Vec<NodeInfo> = self.overlay.table.iter().collect();
        candidates.sort_by_key(|n| distance(n.id.key(), mid.key()));
        let mut nets = Vec::with_capacity(want);
        candidates.retain(|c| {
            let ip = c.addr.ip();
            if !crate::subnet::is_foreign(me.addr.ip(), ip) {
                return true;
            }
            let net = crate::subnet::Subnet::of(ip);
            let fresh = !nets.contains(&net);
            if fresh {
                nets.push(net);
            }
            fresh
        });
        candidates.truncate(want);
        let now = self.now;
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        let key = g.lan.key.clone();
        let Some(r) = g.root.as_mut() else {
            return;
        };
        let same = candidates.len() == r.replicas.len()
            && candidates
                .iter()
                .zip(&r.replicas)
                .all(|(a, b)| a.id == b.info.id);
        if same {
            return;
        }
        // The new set is our successors: a new mandate names them.
        let successors = candidates.iter().map(|c| c.id).collect();
        r.lineage = Arc::new(r.lineage.renewed(&*self.signer, successors));
        self.lineages.set(mid, r.lineage.clone());
        let before = r.log.first().saturating_sub(1);
        let mut fresh = Vec::new();
        let old = std::mem::take(&mut r.replicas);
        for c in &candidates {
            match old.iter().find(|o| o.info.id == c.id) {
                Some(o) => r.replicas.push(o.clone()),
                None => {
                    fresh.push(*c);
                    r.replicas.push(ReplicaPeer {
                        info: *c,
                        acked: before,
                        progress_at: now,
                        synced_at: now,
                    });
                }
            }
        }
        tracing::debug!(mid = %mid, replicas = r.replicas.len(), new = fresh.len(), "replica set changed");
        // Every replica learns the new order; new ones get the whole log.
        let sync = r.sync(mid, me, key.clone());
        let full = if fresh.is_empty() {
            Vec::new()
        } else {
            r.full_sync(mid, me, key)
        };
        for c in candidates.iter().filter(|c| !fresh.contains(c)) {
            self.send(*c, sync.clone());
        }
        for c in fresh {
            for m in &full {
                self.send(c, m.clone());
            }
        }
        self.try_commit(mid);
    }

    pub(crate) fn on_replica_ack(&mut self, from: NodeInfo, mid: Mid, epoch: u32, seq: u64) {
        let now = self.now;
        let me = self.me();
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        let key = g.lan.key.clone();
        let Some(r) = g.root.as_mut() else {
            return;
        };
        let first = r.log.first();
        let Some(peer) = r.replicas.iter_mut().find(|x| x.info.id == from.id) else {
            return;
        };
        if epoch != r.epoch {
            // It lost our sync (or never got it): start it over, but not
            // again for every message of the log already on its way.
            if now.duration_since(peer.synced_at) < self.cfg.heartbeat_interval * 2 {
                return;
            }
            peer.synced_at = now;
            peer.acked = first.saturating_sub(1);
            peer.progress_at = now;
            for m in r.full_sync(mid, me, key) {
                self.send(from, m);
            }
            return;
        }
        if seq > peer.acked {
            peer.acked = seq;
            peer.progress_at = now;
            self.try_commit(mid);
        }
    }

    /// Every heartbeat: re-evaluate the replica set, and send again what a
    /// replica has not acknowledged for a while (a message to it was lost).
    pub(crate) fn root_tick(&mut self) {
        let roots: Vec<Mid> = self
            .groups
            .iter()
            .filter(|(_, g)| g.is_root())
            .map(|(m, _)| *m)
            .collect();
        let now = self.now;
        let stall = self.cfg.heartbeat_interval * 2;
        let max = self.cfg.max_fetch as u64;
        for mid in roots {
            self.choose_replicas(mid);
            let Some(r) = self.groups.get_mut(&mid).and_then(|g| g.root.as_mut()) else {
                continue;
            };
            let last = r.last();
            let mut resend = Vec::new();
            for peer in r.replicas.iter_mut() {
                if peer.acked < last && now.duration_since(peer.progress_at) >= stall {
                    peer.progress_at = now;
                    let from = (peer.acked + 1).max(r.log.first());
                    let msgs: Vec<Data> = r.log.range(from, from + max).cloned().collect();
                    resend.push((peer.info, msgs));
                }
            }
            for (to, msgs) in resend {
                for d in msgs {
                    self.send(to, Message::Replicate(d));
                }
            }
        }
    }

    /// A replica is gone: choose another (which may let commits go on).
    pub(crate) fn replica_lost(&mut self, peer: NodeId) {
        let mids: Vec<Mid> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                g.root
                    .as_ref()
                    .is_some_and(|r| r.replicas.iter().any(|x| x.info.id == peer))
            })
            .map(|(m, _)| *m)
            .collect();
        for mid in mids {
            if let Some(r) = self.groups.get_mut(&mid).and_then(|g| g.root.as_mut()) {
                r.replicas.retain(|x| x.info.id != peer);
            }
            self.choose_replicas(mid);
            self.try_commit(mid);
        }
    }

    /// `root` is root in a newer epoch: stop being root and join its tree,
    /// keeping our subtree. Messages we ordered but never committed are
    /// dropped; their publishers were not answered and retry. We remember
    /// the new root: routing toward the mid may end here (we are likely
    /// still the closest node to it), and the join must reach it.
    pub(crate) fn step_down(&mut self, mid: Mid, root: NodeInfo, epoch: u32) {
        self.remember_root(mid, root, epoch);
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        let Some(r) = g.root.take() else {
            return;
        };
        tracing::info!(mid = %mid, epoch = r.epoch, "another node is root now; stepping down");
        let next = r.committed + 1;
        g.stream.buf.reset(r.log.first());
        for d in r.log.range(r.log.first(), next) {
            g.stream.buf.push(d.clone());
            g.stream.buf.trim(0);
        }
        g.stream.next = Some(next);
        g.stream.epoch = r.epoch;
        g.stream.proven = r.proofs;
        g.attached = false;
        g.parent = None;
        g.path.clear();
        g.established = true;
        self.send_join(mid);
    }
}
