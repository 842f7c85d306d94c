//! The message stream of one group at one node: in order, without gaps,
//! without duplicates.
//!
//! Every message carries the root's `(epoch, seq)`; sequence numbers are
//! consecutive across epochs (a new root continues its predecessor's
//! sequence), so a node only has to track `next`, the sequence number it
//! passes on next. A message with `seq == next` is delivered to the local
//! application (if a member), handed to every acknowledged child and kept in
//! the node's repair buffer; an older one is a duplicate and is dropped; a
//! newer one reveals a gap: it waits in a bounded `pending` map while the
//! node fetches the gap.
//!
//! Repair. A [`Message::Fetch`] goes to the parent, which sends what its
//! buffer holds and passes the request for the older part on to its own
//! parent, and so on up to the root, which answers only the node that
//! asked (a fetch that came through others gets a [`Message::Direct`], and
//! the asker fetches from the root straight from then on). What
//! the root no longer retains is answered with [`Message::Lost`]: the node
//! skips it and tells its application how many messages it lost, so a gap
//! is never silent. Gaps show up after a re-attach (the new parent's ack
//! says where its link starts), when a parent's heartbeat shows it is ahead
//! (a lost tail), or when a message arrives early.
//!
//! Stall checks. A parent that withholds (drops what it should pass on,
//! proofs and all, while it heartbeats) leaves no gap to see: its subtree
//! just hears nothing. So a member whose stream has not moved for
//! `stall_probe_min` asks the root, past its parent, for what follows its
//! stream's end; each check that finds the stream still unmoved doubles the
//! wait, up to `stall_probe_max`, and any progress starts it over. In a
//! quiet group the root has nothing to serve and the check costs one small
//! message; if it serves a message the parent never sent, the member
//! leaves the parent and joins again around it.
//!
//! Replays (`subscribe --from SEQ`) use the same fetch, routed to the root
//! with a request number, and are reported apart from the live stream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;

use crate::config::Config;
use crate::frame::seal_data;
use crate::id::{Mid, NodeId};
use crate::interface::{Event, Output, TreeError};
use crate::lineage::Lineage;
use crate::log::Log;
use crate::message::{Data, Message, NodeInfo};
use crate::message::{Fetch, Lost};
use crate::node::Node;
use crate::proof::{Proof, Proven, Verdict};
use crate::timer::Timer;

/// A message held until the messages before it and its proof are in.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) data: Data,
    /// Whether a checked proof vouches for it.
    proven: bool,
}

/// One group's stream at one node.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    /// The sequence number passed on next; `None` until the first ack.
    pub(crate) next: Option<u64>,
    /// The root's epoch as last seen.
    pub(crate) epoch: u32,
    /// Recent messages, to serve re-attaching children and fetches.
    pub(crate) buf: Log,
    /// Messages that arrived ahead of a gap, or ahead of their proof.
    pub(crate) pending: BTreeMap<u64, Held>,
    pending_bytes: usize,
    max_pending: usize,
    max_pending_bytes: usize,
    /// One past the newest sequence number known to exist.
    pub(crate) head: u64,
    /// While [`Timer::Repair`] is armed, a fetch is under way for the
    /// messages before this one.
    fetch_to: u64,
    /// The root asked for our fetches straight (what we missed was beyond
    /// our parent's buffer): the next goes to it, not to the parent.
    pub(crate) ask_root: bool,
    /// Where the stream stood at the last stall check, the wait until the
    /// next, and whether we asked the root past our parent since the
    /// stream last moved.
    stall_next: u64,
    stall_wait: std::time::Duration,
    pub(crate) probing: bool,
    /// Messages skipped because they were no longer retained.
    pub(crate) lost: u64,
    /// What the root's proofs vouch for, and the proofs that cover `buf`.
    pub(crate) proven: Proven,
}

impl Stream {
    /// One past the last message the latest gap fetch asked for.
    pub(crate) fn fetch_to(&self) -> u64 {
        self.fetch_to
    }

    pub(crate) fn new(cfg: &Config) -> Self {
        Stream {
            next: None,
            epoch: 0,
            buf: Log::new(0, cfg.buffer_messages, cfg.buffer_bytes),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            max_pending: cfg.buffer_messages,
            max_pending_bytes: cfg.buffer_bytes,
            head: 0,
            fetch_to: 0,
            ask_root: false,
            stall_next: 0,
            stall_wait: cfg.stall_probe_min,
            probing: false,
            lost: 0,
            proven: Proven::default(),
        }
    }

    /// Starts at `next`, as a node that already had everything before it.
    pub(crate) fn resume_at(&mut self, next: u64) {
        self.next = Some(next);
        self.buf.reset(next);
    }

    /// Where the next missing run ends: the first held message, or the
    /// known head. With `unproven`, a held message that still waits for
    /// its proof counts as missing too (it is fetched again, with its
    /// proof).
    fn gap_end(&self, next: u64, unproven: bool) -> Option<u64> {
        let end = self
            .pending
            .iter()
            .find(|(_, h)| h.proven || !unproven)
            .map_or(self.head, |(seq, _)| *seq);
        (end > next).then_some(end)
    }

    fn drop_pending_before(&mut self, seq: u64) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= seq {
                break;
            }
            self.pending_bytes -= entry.remove().data.size();
        }
    }

    /// Holds `data` (whose proof is `proven`), unless a copy a proof vouches
    /// for is held already, or there is no room.
    fn hold(&mut self, data: Data, proven: bool) {
        if let Some(h) = self.pending.get(&data.seq) {
            if h.proven || !proven {
                return;
            }
            self.pending_bytes -= h.data.size();
            self.pending.remove(&data.seq);
        }
        if self.pending.len() < self.max_pending && self.pending_bytes < self.max_pending_bytes {
            self.pending_bytes += data.size();
            self.pending.insert(data.seq, Held { data, proven });
        }
        // Else dropped: it is fetched again once the messages before it
        // are in, which keeps the memory a gap can cost bounded.
    }

    /// A proof was learned: held messages it covers are proven, or dropped
    /// when they differ from what the root signed. How many were dropped.
    fn check_held(&mut self, first: u64, end: u64) -> usize {
        let mut forged = Vec::new();
        for (seq, h) in self.pending.range_mut(first..end) {
            match self.proven.verdict(&h.data) {
                Verdict::Proven => h.proven = true,
                Verdict::Forged => forged.push(*seq),
                Verdict::Unknown => {}
            }
        }
        for seq in &forged {
            if let Some(h) = self.pending.remove(seq) {
                self.pending_bytes -= h.data.size();
            }
        }
        forged.len()
    }
}

/// A replay under way: messages `next..to` still to report.
#[derive(Debug, Clone)]
pub(crate) struct Replay {
    pub(crate) mid: Mid,
    next: u64,
    to: u64,
    /// One past the last message the current fetch round asked for.
    round_end: u64,
    progressed: bool,
    deadline: Instant,
    /// What the root's proofs vouch for, among the messages to report.
    proven: Proven,
}

impl<R: Rng> Node<R> {
    /// Our parent's ack says its link starts at `next`.
    pub(crate) fn stream_starts(&mut self, mid: Mid, next: u64) {
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        let s = &mut g.stream;
        s.head = s.head.max(next);
        match s.next {
            None => {
                s.next = Some(next);
                s.buf.reset(next);
            }
            Some(n) if n < next => self.request_repair(mid),
            Some(_) => {}
        }
    }

    pub(crate) fn on_data(&mut self, from: NodeInfo, data: Data) {
        let Some(g) = self.groups.get_mut(&data.mid) else {
            self.send(from, Message::Leave { mid: data.mid });
            return;
        };
        if g.is_root() || g.parent.is_none_or(|p| p.id != from.id) {
            // Only our parent feeds us; anything else is stale.
            return;
        }
        g.lan.from_tree += 1;
        self.accept(data);
    }

    /// Takes a message into the stream of its group, from the parent, a
    /// repair or the LAN. It is passed on once every message before it
    /// was, and a proof vouches for it.
    pub(crate) fn accept(&mut self, data: Data) {
        let mid = data.mid;
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        if g.is_root() {
            return;
        }
        let s = &mut g.stream;
        let Some(next) = s.next else {
            // Not attached yet: the ack will say where we start.
            return;
        };
        if data.seq < next {
            return;
        }
        let proven = match s.proven.verdict(&data) {
            Verdict::Proven => true,
            Verdict::Unknown => false,
            Verdict::Forged => {
                tracing::debug!(mid = %mid, seq = data.seq, "a message that is not the one the root signed; dropped");
                self.dropped.count("data (forged)");
                return self.request_repair(mid);
            }
        };
        s.head = s.head.max(data.seq.saturating_add(1));
        if data.seq == next && proven {
            self.pass_on(mid, data);
        } else {
            s.hold(data, proven);
        }
        self.drain(mid);
    }

    /// A proof of the root's, from a tree neighbour, a repair or a replay.
    pub(crate) fn on_proof(&mut self, proof: Arc<Proof>) {
        let mid = proof.mid;
        let proves_stream = self.groups.get(&mid).is_some_and(|g| !g.is_root());
        let replays: Vec<u64> = self
            .replays
            .iter()
            .filter(|(_, r)| r.mid == mid && !r.proven.seen(&proof))
            .map(|(id, _)| *id)
            .collect();
        let new_here = proves_stream && !self.groups[&mid].stream.proven.seen(&proof);
        if !new_here && replays.is_empty() {
            return;
        }
        if proof.epoch > 1 && proof.epoch > self.lineages.epoch(mid) {
            // Its lineage should have come ahead of it: a root that took
            // over sends its lineage before its first proof.
            tracing::debug!(mid = %mid, epoch = proof.epoch, "a proof of an epoch whose root we do not know; dropped");
            self.dropped.count("proof (unknown epoch)");
            return;
        }
        if !self.lineages.may_prove(&proof) || !proof.is_signed() {
            tracing::debug!(mid = %mid, "a proof not signed by the group's root; dropped");
            self.dropped.count("proof (forged)");
            return;
        }
        let max_fetch = self.cfg.max_fetch;
        for id in replays {
            if let Some(r) = self.replays.get_mut(&id) {
                r.proven.learn(proof.clone(), r.next, max_fetch, 0);
            }
        }
        if !new_here {
            return;
        }
        let keep = self.cfg.buffer_messages;
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        let s = &mut g.stream;
        let Some(next) = s.next else { return };
        s.proven.learn(proof.clone(), next, s.max_pending, keep);
        s.head = s.head.max(proof.end());
        let forged = s.check_held(proof.first, proof.end());
        for _ in 0..forged {
            self.dropped.count("data (forged)");
        }
        self.drain(mid);
        // Behind the messages it covers, which drain passed on.
        let Node { groups, out, .. } = self;
        out.extend(groups[&mid].acked_children().map(|c| Output::Send {
            to: c.info,
            msg: Message::Proof(proof.clone()),
        }));
    }

    /// The next message waited long for its proof: fetch it again.
    pub(crate) fn on_proof_wait(&mut self, mid: Mid) {
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        let s = &g.stream;
        let waiting = s
            .next
            .is_some_and(|n| s.pending.get(&n).is_some_and(|h| !h.proven));
        if waiting {
            self.timers.stop(Timer::Repair(mid));
            self.fetch_gap(mid, true);
        }
    }

    /// Passes on the held messages that follow `next` directly and are
    /// proven, then asks for the next gap, if any.
    fn drain(&mut self, mid: Mid) {
        if let Some(g) = self.groups.get_mut(&mid) {
            let s = &mut g.stream;
            if s.next.is_some_and(|n| n >= s.fetch_to) {
                // The gap we asked for is filled: the next one can be asked
                // for at once.
                self.timers.stop(Timer::Repair(mid));
            }
        }
        loop {
            let Some(g) = self.groups.get_mut(&mid) else {
                return;
            };
            let s = &mut g.stream;
            let Some(next) = s.next else { return };
            s.drop_pending_before(next);
            let Some(entry) = s.pending.first_entry() else {
                break;
            };
            if *entry.key() != next || !entry.get().proven {
                break;
            }
            let h = entry.remove();
            s.pending_bytes -= h.data.size();
            self.pass_on(mid, h.data);
        }
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        let s = &g.stream;
        let Some(next) = s.next else { return };
        // A gap behind the held messages, or a known head beyond them.
        let gap = s.gap_end(next, false).is_some();
        let unproven = s.pending.get(&next).is_some_and(|h| !h.proven);
        if gap {
            self.request_repair(mid);
        }
        if unproven {
            let wait = self.cfg.repair_retry;
            self.timers
                .set_unless_sooner(Timer::ProofWait(mid), self.now + wait);
        } else {
            self.timers.stop(Timer::ProofWait(mid));
        }
    }

    /// The next message in order: deliver, buffer, hand down.
    fn pass_on(&mut self, mid: Mid, mut data: Data) {
        let max_frame = self.cfg.max_frame_size();
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        if data.frame.is_empty() {
            // A repaired message arrives inside another message's frame:
            // encode it once here so every child shares one buffer.
            match seal_data(data, max_frame) {
                Ok(d) => data = d,
                Err(e) => {
                    tracing::warn!(mid = %mid, error = %e, "repaired message not encodable");
                    return;
                }
            }
        }
        let s = &mut g.stream;
        s.next = Some(data.seq.saturating_add(1));
        s.epoch = s.epoch.max(data.epoch);
        s.proven.passed(data.seq.saturating_add(1));
        s.buf.push(data.clone());
        s.buf.trim(0);
        s.proven.forget_before(s.buf.first());
        self.hand_on(mid, &data);
    }

    /// Delivers a message to the local application, if a member, and queues
    /// it for every acknowledged child. Runs once per message at every node,
    /// so it borrows the children instead of collecting them.
    pub(crate) fn hand_on(&mut self, mid: Mid, data: &Data) {
        let Node {
            groups, out, lan, ..
        } = self;
        let Some(g) = groups.get(&mid) else {
            return;
        };
        out.extend(
            g.acked_children()
                .filter(|c| !c.lan_fed)
                .map(|c| Output::Send {
                    to: c.info,
                    msg: Message::Data(data.clone()),
                }),
        );
        // A member may have had it from the LAN already (a fallback).
        if g.member
            && !lan
                .as_mut()
                .is_some_and(|l| l.delivered_before(mid, data.publisher, data.pub_id))
        {
            out.push_back(Output::Event(Event::Delivered {
                mid,
                epoch: data.epoch,
                seq: data.seq,
                publisher: data.publisher,
                payload: data.payload.clone(),
            }));
        }
        if self.lan.is_some() {
            self.lan_forward(data);
        }
    }

    /// Asks for the first gap of the stream, unless a fetch is under way.
    pub(crate) fn request_repair(&mut self, mid: Mid) {
        let fetching = self.timers.get(Timer::Repair(mid));
        if fetching.is_some_and(|t| t > self.now) {
            return;
        }
        self.fetch_gap(mid, false);
    }

    /// Fetches the first gap of the stream (with `unproven`, counting
    /// messages that wait for their proof as missing) from the parent, or
    /// toward the root.
    fn fetch_gap(&mut self, mid: Mid, unproven: bool) {
        let me = self.me();
        let retry = self.cfg.repair_retry;
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        if g.is_root() {
            return;
        }
        let Some(next) = g.stream.next else { return };
        let Some(to) = g.stream.gap_end(next, unproven) else {
            return;
        };
        g.stream.fetch_to = to;
        let parent = g.parent;
        let fetch = Message::Fetch(Fetch {
            mid,
            from: next,
            to,
            reply_to: me,
            request: 0,
        });
        tracing::debug!(mid = %mid, from = next, to, "gap, fetching it");
        // Once the root asked for our fetches straight (what we miss was
        // beyond our parent's buffer), they go to it.
        let direct = g.stream.ask_root.then(|| self.roots.get(mid)).flatten();
        match direct.or(parent).or_else(|| self.toward_root(mid, &[])) {
            Some(to) => self.send(to, fetch),
            None => tracing::debug!(mid = %mid, "no way toward the root to repair a gap"),
        }
        self.set_timer(retry, Timer::Repair(mid));
    }

    /// Arms the stall check of a member's stream, unless it is armed.
    pub(crate) fn arm_stall_check(&mut self, mid: Mid) {
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        if g.member && !g.is_root() && !self.timers.is_armed(Timer::Stall(mid)) {
            g.stream.stall_next = g.stream.next.unwrap_or(0);
            let wait = g.stream.stall_wait;
            self.set_timer(wait, Timer::Stall(mid));
        }
    }

    /// The stall check: a stream that moved needs nothing; one that did
    /// not asks the root, past its parent, for what follows. The root
    /// serves it only what it has (nothing, in a quiet group), so a quiet
    /// group costs one small message per member now and then, each wait
    /// twice the last, while a parent that withholds is found out within
    /// the first wait: see [`Node::leave_withholding_parent`].
    pub(crate) fn on_stall_timer(&mut self, mid: Mid) {
        let (min, max) = (self.cfg.stall_probe_min, self.cfg.stall_probe_max);
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        if !g.member || g.is_root() || !g.attached {
            // Attaching arms it again.
            return;
        }
        let Some(next) = g.stream.next else {
            return;
        };
        if next != g.stream.stall_next {
            g.stream.stall_wait = min;
            g.stream.probing = false;
        } else {
            g.stream.stall_wait = (g.stream.stall_wait * 2).min(max);
            g.stream.probing = true;
            self.send_stall_probe(mid);
        }
        self.arm_stall_check(mid);
    }

    /// Asks the root, straight if we know it and else along the overlay's
    /// route around our parent, for the messages after our stream's end.
    fn send_stall_probe(&mut self, mid: Mid) {
        let me = self.me();
        let max = self.cfg.max_fetch as u64;
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        let Some(next) = g.stream.next else {
            return;
        };
        let to = next.saturating_add(max);
        g.stream.fetch_to = g.stream.fetch_to.max(to);
        let skip: Vec<NodeId> = g.parent.map(|p| p.id).into_iter().collect();
        let fetch = Message::Fetch(Fetch {
            mid,
            from: next,
            to,
            reply_to: me,
            request: 0,
        });
        match self.roots.get(mid).or_else(|| self.toward_root(mid, &skip)) {
            Some(to) => self.send(to, fetch),
            None => tracing::debug!(mid = %mid, "no way toward the root for a stall check"),
        }
    }

    /// The root served our stall check a message our parent had not sent:
    /// the parent withholds (or is far behind). We leave it and join again
    /// around it; the fetch that found it out goes on filling the gap.
    pub(crate) fn leave_withholding_parent(&mut self, mid: Mid) {
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        g.stream.probing = false;
        let Some(parent) = g.parent else {
            return;
        };
        tracing::info!(mid = %mid, parent = %parent.id.short(), "the root had messages our parent did not send; joining around it");
        g.join.avoid_also(parent.id);
        let w = &mut g.join.withholders;
        if !w.contains(&parent.id) {
            if w.len() >= crate::tree::MAX_AVOID {
                w.remove(0);
            }
            w.push(parent.id);
        }
        self.withheld = self.withheld.saturating_add(1);
        self.send(parent, Message::Leave { mid });
        self.detach(mid);
    }

    pub(crate) fn on_repair_timer(&mut self, mid: Mid) {
        // No answer in time: the root we asked straight may be gone, so
        // this round goes through the parent again.
        if let Some(g) = self.groups.get_mut(&mid) {
            if std::mem::take(&mut g.stream.ask_root) {
                self.roots.forget(mid);
            }
        }
        self.request_repair(mid);
    }

    /// A fetch from a child (for its stream) or from anyone (a replay):
    /// serve what we hold and pass the rest on toward the root. Only a
    /// fetch from the node it is for is served: one that came through
    /// others is passed up, and the root answers it with a
    /// [`Message::Direct`] to the asker, so that no node can make
    /// another send a buffer's worth of messages to a node that never
    /// asked.
    pub(crate) fn on_fetch(&mut self, sender: NodeInfo, fetch: Fetch) {
        let Fetch {
            mid,
            from,
            to,
            reply_to,
            request,
        } = fetch;
        if to <= from || reply_to.id == self.me().id {
            return;
        }
        let max = self.cfg.max_fetch as u64;
        let to = to.min(from.saturating_add(max));
        let group = self.groups.get(&mid);
        let root = group.is_some_and(|g| g.is_root());
        let direct = sender.id == reply_to.id;
        // Off the tree, and for replays anywhere but at the root (only its
        // retention is the group's, and it answers in one order), the fetch
        // goes on toward the root. So does one that came through others,
        // up to the root, which tells the asker to ask it straight.
        let Some(g) = group.filter(|_| root || (request == 0 && direct)) else {
            let next = match group {
                Some(g) if request == 0 && !root => g.parent,
                _ => None,
            };
            if let Some(next) = next.or_else(|| self.toward_root(mid, &[])) {
                let msg = Message::Fetch(Fetch {
                    mid,
                    from,
                    to,
                    reply_to,
                    request,
                });
                self.send(next, msg);
            }
            return;
        };
        if !direct {
            tracing::debug!(mid = %mid, asker = %reply_to.id.short(), "a fetch came through others: asking its asker to fetch directly");
            self.send_direct(reply_to, mid, crate::message::Asked::Fetch { request });
            return;
        }
        let reply_to = sender;
        let (before, serve) = g.serve(from, to);
        let proofs: Vec<Arc<Proof>> = match (serve.first(), serve.last()) {
            (Some(a), Some(b)) => g.proofs_covering(a.seq, b.seq + 1),
            _ => Vec::new(),
        };
        let parent = g.parent;
        if let Some(first) = before {
            if root {
                self.send(
                    reply_to,
                    Message::Lost(Lost {
                        mid,
                        request,
                        from,
                        to: first,
                    }),
                );
            } else {
                let up = Message::Fetch(Fetch {
                    mid,
                    from,
                    to: first,
                    reply_to,
                    request,
                });
                match parent.or_else(|| self.toward_root(mid, &[])) {
                    Some(p) => self.send(p, up),
                    None => tracing::debug!(mid = %mid, "cannot pass a fetch toward the root"),
                }
            }
        }
        self.send_lineage_for(reply_to, mid, &proofs);
        for p in proofs {
            self.send(reply_to, Message::Proof(p));
        }
        for data in serve {
            self.send(reply_to, Message::Fetched { request, data });
        }
    }

    /// The root asked for our fetches of `mid` straight: the one under way
    /// goes to it now, and the next ones too.
    pub(crate) fn on_fetch_direct(&mut self, root: NodeInfo, mid: Mid, request: u64) {
        self.roots.learn(mid, root);
        if request != 0 {
            return self.replay_round(request);
        }
        if self.groups.get(&mid).is_some_and(|g| g.stream.probing) {
            return self.send_stall_probe(mid);
        }
        if let Some(g) = self.groups.get_mut(&mid) {
            g.stream.ask_root = true;
        }
        self.fetch_gap(mid, false);
    }

    /// Sends `to` the lineage of `mid` ahead of `proofs`, if any of them
    /// is past the first epoch: `to` needs it to know the key that signed
    /// them.
    pub(crate) fn send_lineage_for(&mut self, to: NodeInfo, mid: Mid, proofs: &[Arc<Proof>]) {
        if proofs.iter().all(|p| p.epoch <= 1) {
            return;
        }
        if let Some(l) = self.lineages.get(mid).cloned() {
            self.send(to, Message::Lineage(l));
        }
    }

    /// A lineage from a tree neighbour, a repair or a replay: one that
    /// leads the one we hold is passed on to our children (by
    /// [`Node::offer_lineage`]), ahead of the proofs of the new epoch.
    pub(crate) fn on_lineage(&mut self, lineage: Arc<Lineage>) {
        let Some(mid) = lineage.mid() else {
            return;
        };
        if self.offer_lineage(mid, &lineage).is_err() {
            self.dropped.count("lineage (forged)");
        }
    }

    pub(crate) fn on_fetched(&mut self, from: NodeInfo, request: u64, data: Data) {
        if request == 0 {
            // An answer to our stall check, past our parent, that moves
            // the stream (so the root's proof vouched for it): the parent
            // withheld it.
            let mid = data.mid;
            let next = |n: &Self| n.groups.get(&mid).and_then(|g| g.stream.next);
            let before = next(self);
            let probed = self
                .groups
                .get(&mid)
                .is_some_and(|g| g.stream.probing && g.parent.is_some_and(|p| p.id != from.id));
            self.accept(data);
            if probed && next(self) > before {
                self.leave_withholding_parent(mid);
            }
            return;
        }
        let Some(r) = self.replays.get_mut(&request) else {
            return;
        };
        if data.mid != r.mid || data.seq != r.next {
            return;
        }
        match r.proven.verdict(&data) {
            Verdict::Proven => {}
            // Asked again next round, with its proof.
            Verdict::Unknown => return,
            Verdict::Forged => {
                self.dropped.count("fetched (forged)");
                return;
            }
        }
        r.next += 1;
        r.proven.passed(r.next);
        r.progressed = true;
        self.emit(Event::Replayed {
            request,
            mid: data.mid,
            epoch: data.epoch,
            seq: data.seq,
            publisher: data.publisher,
            payload: data.payload,
        });
        self.replay_continue(request);
    }

    pub(crate) fn on_lost(&mut self, mid: Mid, request: u64, from: u64, to: u64) {
        if request != 0 {
            let Some(r) = self.replays.get_mut(&request) else {
                return;
            };
            if r.mid != mid || r.next < from || r.next >= to {
                return;
            }
            let lost_from = r.next;
            r.next = to.min(r.to);
            r.progressed = true;
            let lost_to = r.next;
            self.emit(Event::ReplayLost {
                request,
                mid,
                from: lost_from,
                to: lost_to,
            });
            return self.replay_continue(request);
        }
        let now = self.now;
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        // Only an answer to a fetch of ours may make us skip messages.
        let fetching = self.timers.get(Timer::Repair(mid));
        if g.is_root() || fetching.is_none_or(|t| t <= now) {
            return;
        }
        let s = &mut g.stream;
        let Some(next) = s.next else { return };
        if next < from || next >= to {
            return;
        }
        tracing::warn!(mid = %mid, from = next, to, "messages no longer retained by the root; skipping them");
        s.lost = s.lost.saturating_add(to - next);
        s.next = Some(to);
        s.buf.reset(to);
        self.timers.stop(Timer::Repair(mid));
        s.drop_pending_before(to);
        if g.member {
            self.emit(Event::Lost {
                mid,
                from: next,
                to,
            });
        }
        self.drain(mid);
    }

    /// Whether a replay of `mid` is under way.
    pub(crate) fn replaying(&self, mid: Mid) -> bool {
        self.replays.values().any(|r| r.mid == mid)
    }

    /// Reports messages `from..to` of a group to the application, from this
    /// node's buffer if it holds them all, else from the root's retention.
    pub(crate) fn replay(&mut self, request: u64, mid: Mid, from: u64, to: u64) {
        if to <= from {
            return self.emit(Event::ReplayDone {
                request,
                result: Ok(()),
            });
        }
        if let Some(g) = self.groups.get(&mid) {
            let held = g.held();
            if held.first() <= from && to <= g.next().unwrap_or(0) {
                let msgs: Vec<Data> = held.range(from, to).cloned().collect();
                for d in msgs {
                    self.emit(Event::Replayed {
                        request,
                        mid,
                        epoch: d.epoch,
                        seq: d.seq,
                        publisher: d.publisher,
                        payload: d.payload,
                    });
                }
                return self.emit(Event::ReplayDone {
                    request,
                    result: Ok(()),
                });
            }
        }
        if self.replays.len() >= self.cfg.max_collections {
            return self.emit(Event::ReplayDone {
                request,
                result: Err(TreeError::Busy),
            });
        }
        let deadline = self.now + self.cfg.publish_timeout;
        self.replays.insert(
            request,
            Replay {
                mid,
                next: from,
                to,
                round_end: from,
                progressed: false,
                deadline,
                proven: Proven::default(),
            },
        );
        self.replay_round(request);
        self.set_timer(self.cfg.repair_retry, Timer::Replay(request));
    }

    /// Asks for the next round of a replay.
    fn replay_round(&mut self, request: u64) {
        let me = self.me();
        let max = self.cfg.max_fetch as u64;
        let Some(r) = self.replays.get_mut(&request) else {
            return;
        };
        let (mid, from) = (r.mid, r.next);
        let to = r.to.min(from.saturating_add(max));
        r.round_end = to;
        if !self.groups.get(&mid).is_some_and(|g| g.is_root()) {
            let fetch = Message::Fetch(Fetch {
                mid,
                from,
                to,
                reply_to: me,
                request,
            });
            match self.roots.get(mid).or_else(|| self.toward_root(mid, &[])) {
                Some(next) => self.send(next, fetch),
                None => tracing::debug!(mid = %mid, "no way toward the root for a replay yet"),
            }
        } else {
            // At the root itself: read the retention directly.
            let (before, msgs) = self.groups[&mid].serve(from, to);
            if let Some(first) = before {
                self.on_lost(mid, request, from, first);
            }
            for d in msgs {
                self.on_fetched(me, request, d);
            }
        }
    }

    /// After progress: finish, or ask for the next round once this one is in.
    fn replay_continue(&mut self, request: u64) {
        let Some(r) = self.replays.get(&request) else {
            return;
        };
        if r.next >= r.to {
            self.replays.remove(&request);
            return self.emit(Event::ReplayDone {
                request,
                result: Ok(()),
            });
        }
        if r.next >= r.round_end {
            self.replay_round(request);
        }
    }

    pub(crate) fn on_replay_timer(&mut self, request: u64) {
        let now = self.now;
        let Some(r) = self.replays.get_mut(&request) else {
            return;
        };
        if r.deadline <= now {
            self.replays.remove(&request);
            return self.emit(Event::ReplayDone {
                request,
                result: Err(TreeError::Timeout),
            });
        }
        if !std::mem::take(&mut r.progressed) {
            self.replay_round(request);
        }
        self.set_timer(self.cfg.repair_retry, Timer::Replay(request));
    }
}
