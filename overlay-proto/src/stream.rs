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
//! parent, and so on up to the root, which answers from its retention. What
//! the root no longer retains is answered with [`Message::Lost`]: the node
//! skips it and tells its application how many messages it lost, so a gap
//! is never silent. Gaps show up after a re-attach (the new parent's ack
//! says where its link starts), when a parent's heartbeat shows it is ahead
//! (a lost tail), or when a message arrives early.
//!
//! Replays (`subscribe --from SEQ`) use the same fetch, routed to the root
//! with a request number, and are reported apart from the live stream.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::Rng;

use crate::config::Config;
use crate::frame::seal_data;
use crate::id::Mid;
use crate::interface::{Event, Output, TreeError};
use crate::log::Log;
use crate::message::{Data, Message, NodeInfo};
use crate::message::{Fetch, Lost};
use crate::node::Node;
use crate::timer::Timer;

/// One group's stream at one node.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    /// The sequence number passed on next; `None` until the first ack.
    pub(crate) next: Option<u64>,
    /// The root's epoch as last seen.
    pub(crate) epoch: u32,
    /// Recent messages, to serve re-attaching children and fetches.
    pub(crate) buf: Log,
    /// Messages that arrived ahead of a gap.
    pub(crate) pending: BTreeMap<u64, Data>,
    pending_bytes: usize,
    max_pending: usize,
    max_pending_bytes: usize,
    /// One past the newest sequence number known to exist.
    pub(crate) head: u64,
    /// While [`Timer::Repair`] is armed, a fetch is under way for the
    /// messages before this one.
    fetch_to: u64,
    /// Messages skipped because they were no longer retained.
    pub(crate) lost: u64,
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
            lost: 0,
        }
    }

    /// Starts at `next`, as a node that already had everything before it.
    pub(crate) fn resume_at(&mut self, next: u64) {
        self.next = Some(next);
        self.buf.reset(next);
    }

    /// Where the next missing run ends: the first pending message, or the
    /// known head.
    fn gap_end(&self, next: u64) -> Option<u64> {
        let end = self.pending.keys().next().copied().unwrap_or(self.head);
        (end > next).then_some(end)
    }

    fn drop_pending_before(&mut self, seq: u64) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= seq {
                break;
            }
            self.pending_bytes -= entry.remove().size();
        }
    }
}

/// A replay under way: messages `next..to` still to report.
#[derive(Debug, Clone)]
pub(crate) struct Replay {
    mid: Mid,
    next: u64,
    to: u64,
    /// One past the last message the current fetch round asked for.
    round_end: u64,
    progressed: bool,
    deadline: Instant,
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

    /// Takes a message into the stream of its group, from the parent or
    /// from a repair.
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
        s.head = s.head.max(data.seq.saturating_add(1));
        if data.seq < next || s.pending.contains_key(&data.seq) {
            return;
        }
        if data.seq > next {
            if s.pending.len() < s.max_pending && s.pending_bytes < s.max_pending_bytes {
                s.pending_bytes += data.size();
                s.pending.insert(data.seq, data);
            }
            // Else dropped: it is fetched again once the gap before it is
            // filled, which keeps the memory a gap can cost bounded.
            self.request_repair(mid);
            return;
        }
        self.pass_on(mid, data);
        self.drain(mid);
    }

    /// Passes on the pending messages that follow `next` directly, then
    /// asks for the next gap, if any.
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
            if *entry.key() != next {
                break;
            }
            let d = entry.remove();
            s.pending_bytes -= d.size();
            self.pass_on(mid, d);
        }
        // A gap behind the pending messages, or a known head beyond them.
        if let Some(g) = self.groups.get(&mid) {
            if g.stream.next.is_some_and(|n| g.stream.gap_end(n).is_some()) {
                self.request_repair(mid);
            }
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
        s.buf.push(data.clone());
        s.buf.trim(0);
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
        let me = self.me();
        let now = self.now;
        let retry = self.cfg.repair_retry;
        let Some(g) = self.groups.get_mut(&mid) else {
            return;
        };
        let fetching = self.timers.get(Timer::Repair(mid));
        if g.is_root() || fetching.is_some_and(|t| t > now) {
            return;
        }
        let Some(next) = g.stream.next else { return };
        let Some(to) = g.stream.gap_end(next) else {
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
        match parent.or_else(|| self.toward_root(mid, &[])) {
            Some(to) => self.send(to, fetch),
            None => tracing::debug!(mid = %mid, "no way toward the root to repair a gap"),
        }
        self.set_timer(retry, Timer::Repair(mid));
    }

    pub(crate) fn on_repair_timer(&mut self, mid: Mid) {
        self.request_repair(mid);
    }

    /// A fetch from a child (for its stream) or from anyone (a replay):
    /// serve what we hold and pass the rest on toward the root.
    pub(crate) fn on_fetch(
        &mut self,
        mid: Mid,
        from: u64,
        to: u64,
        reply_to: NodeInfo,
        request: u64,
    ) {
        if to <= from || reply_to.id == self.me().id {
            return;
        }
        let max = self.cfg.max_fetch as u64;
        let to = to.min(from.saturating_add(max));
        let group = self.groups.get(&mid);
        let root = group.is_some_and(|g| g.is_root());
        // Off the tree, and for replays anywhere but at the root (only its
        // retention is the group's, and it answers in one order), the fetch
        // goes on toward the root.
        let Some(g) = group.filter(|_| request == 0 || root) else {
            if let Some(next) = self.toward_root(mid, &[]) {
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
        let (before, serve) = g.serve(from, to);
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
        for data in serve {
            self.send(reply_to, Message::Fetched { request, data });
        }
    }

    pub(crate) fn on_fetched(&mut self, request: u64, data: Data) {
        if request == 0 {
            return self.accept(data);
        }
        let Some(r) = self.replays.get_mut(&request) else {
            return;
        };
        if data.mid != r.mid || data.seq != r.next {
            return;
        }
        r.next += 1;
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
            match self.toward_root(mid, &[]) {
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
                self.on_fetched(request, d);
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
