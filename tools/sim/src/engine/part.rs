//! A share of the simulated nodes: their state, their connections and the
//! queue of what is due to them.
//!
//! Node `i` lives in part `i % parts`. Within one window of virtual time
//! shorter than any message's delay (see [`super::Sim`]), what a part's
//! nodes do can only reach another part's nodes after the window, so the
//! parts run the window independently, on as many threads as there are:
//! what one part has for another waits in its outbox until the window
//! ends, and is then handed over in the order of the parts. The result
//! depends on the number of parts, never on the number of threads.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use rand::rngs::StdRng;
use rand::Rng;
use rustc_hash::FxHashMap;

use super::queue::Queue;
use super::{nanos, Network};
use overlay_proto::config::Config;
use overlay_proto::frame;
use overlay_proto::id::NodeId;
use overlay_proto::interface::{Event, Input, Output};
use overlay_proto::message::{Message, NodeInfo};
use overlay_proto::node::Node;

/// What waits in the queue for a node.
#[derive(Debug)]
pub(super) enum Pending {
    Input(Input),
    /// A connection came up: [`Input::PeerUp`] and [`Input::Rtt`] at once,
    /// as the daemon reports them.
    Connected {
        peer: NodeInfo,
        rtt: Duration,
    },
    /// The node's earliest timer may be due: [`Input::Timeout`] if it is.
    Wake,
}

/// A node's open connections, by peer index (looked up for every message
/// sent). Indices hash well with Fx, and the simulator's maps need no
/// protection against chosen keys.
#[derive(Debug, Default)]
pub(super) struct Peers(rustc_hash::FxHashSet<u32>);

impl Peers {
    pub(super) fn contains(&self, p: u32) -> bool {
        self.0.contains(&p)
    }

    /// Adds `p`; whether it was new.
    pub(super) fn insert(&mut self, p: u32) -> bool {
        self.0.insert(p)
    }

    /// Removes `p`; whether it was there.
    pub(super) fn remove(&mut self, p: u32) -> bool {
        self.0.remove(&p)
    }

    /// The peers, in index order.
    pub(super) fn sorted(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self.0.iter().copied().collect();
        all.sort_unstable();
        all
    }
}

/// What a part hands another at the end of a window.
#[derive(Debug)]
pub(super) enum Handover {
    /// Something due to node `to` at `at` (ns).
    Due { at: u64, to: u32, pending: Pending },
    /// Node `node` has a connection to `peer` (which opened it).
    Link { node: u32, peer: u32 },
}

/// What every part reads and none changes while a window runs.
pub(super) struct Shared<'a, N> {
    pub(super) alive: &'a [bool],
    pub(super) muted: &'a [bool],
    pub(super) holes: &'a [bool],
    pub(super) by_id: &'a FxHashMap<NodeId, usize>,
    pub(super) by_addr: &'a FxHashMap<SocketAddr, usize>,
    /// Every node's id and address, by index.
    pub(super) infos: &'a [NodeInfo],
    pub(super) cfg: &'a Config,
    pub(super) net: &'a N,
    pub(super) start: Instant,
    pub(super) codec: bool,
    pub(super) dial_timeout: Duration,
    pub(super) loss: f64,
    pub(super) traced: Option<&'a super::Traced>,
    /// Each node's LAN, if it is on one, and the nodes on each.
    pub(super) lan_of: &'a FxHashMap<u32, u32>,
    pub(super) lans: &'a FxHashMap<u32, Vec<u32>>,
}

/// A share of the nodes, with everything that is due to them.
#[derive(Debug)]
pub(super) struct Part {
    /// This part's number, and how many there are.
    index: usize,
    parts: usize,
    /// Node `index + k * parts` at `k`.
    pub(super) nodes: Vec<Node<StdRng>>,
    /// Each node's open connections, by peer index.
    pub(super) links: Vec<Peers>,
    /// When each node's next [`Pending::Wake`] is queued (ns), if one is:
    /// a node whose earliest deadline moves sooner gets another.
    pub(super) wakes: Vec<Option<u64>>,
    /// Inputs by when they are due (nanoseconds after the start), then by
    /// the order they were scheduled in. The queue holds an index into
    /// `slab`, where the input waits with its node: inputs are large, and
    /// the queue moves its entries around.
    queue: Queue<u32>,
    slab: Vec<Option<(u32, Pending)>>,
    free: Vec<u32>,
    /// The time of the input being handled: set before every input, by
    /// the window that runs it or by [`super::Sim::command`].
    pub(super) now: Instant,
    /// Draws which messages are lost.
    rng: StdRng,
    /// Events the nodes reported, with the time (ns) and the node's index.
    pub(super) events: Vec<(u64, usize, Event)>,
    /// What other parts get at the end of the window, by part.
    pub(super) outbox: Vec<Vec<Handover>>,
    /// What other parts had for this one, in the order of the parts: taken
    /// in when the next window starts, by this part's own thread.
    pub(super) inbox: Vec<Vec<Handover>>,
    /// Emptied inbox batches, kept for the outbox: a window's handover
    /// runs to megabytes while overlays are built, and a buffer grown anew
    /// every window costs the kernel fresh zeroed pages each time.
    pub(super) spare: Vec<Vec<Handover>>,
    /// Messages sent that the network wants to see, in the order sent.
    pub(super) watched: Vec<(u32, u32, Message)>,
    pub(super) messages: u64,
    pub(super) dropped: u64,
    pub(super) inputs: u64,
    /// Messages sent, by kind (few kinds: a list is quickest).
    pub(super) kinds: Vec<(&'static str, u64)>,
    /// Inputs handled, by kind.
    pub(super) input_kinds: Vec<(&'static str, u64)>,
}

impl Part {
    pub(super) fn new(index: usize, parts: usize, now: Instant, rng: StdRng) -> Self {
        Part {
            index,
            parts,
            nodes: Vec::new(),
            links: Vec::new(),
            wakes: Vec::new(),
            queue: Queue::new(),
            slab: Vec::new(),
            free: Vec::new(),
            now,
            rng,
            events: Vec::new(),
            outbox: (0..parts).map(|_| Vec::new()).collect(),
            inbox: Vec::new(),
            spare: Vec::new(),
            watched: Vec::new(),
            messages: 0,
            dropped: 0,
            inputs: 0,
            kinds: Vec::new(),
            input_kinds: Vec::new(),
        }
    }

    fn owns(&self, i: usize) -> bool {
        i % self.parts == self.index
    }

    /// Where node `i` (of this part) is kept.
    pub(super) fn slot(&self, i: usize) -> usize {
        debug_assert!(self.owns(i));
        i / self.parts
    }

    /// Inputs waiting, handed over ones included.
    pub(super) fn waiting(&self) -> usize {
        self.queue.len() + self.inbox.iter().map(Vec::len).sum::<usize>()
    }

    /// Queues `pending` for node `i` at `at`, here or in the outbox.
    pub(super) fn schedule<N>(&mut self, sh: &Shared<N>, at: Instant, i: usize, p: Pending) {
        let at = nanos(sh.start, at);
        if self.owns(i) {
            self.push(at, i as u32, p);
        } else {
            self.outbox[i % self.parts].push(Handover::Due {
                at,
                to: i as u32,
                pending: p,
            });
        }
    }

    /// Queues `pending` for node `i` of this part at `at` (ns).
    pub(super) fn push(&mut self, at: u64, i: u32, pending: Pending) {
        let entry = Some((i, pending));
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = entry;
                slot
            }
            None => {
                self.slab.push(entry);
                (self.slab.len() - 1) as u32
            }
        };
        self.queue.push(at, slot);
    }

    /// Takes in what the other parts handed over.
    pub(super) fn take_inbox(&mut self) {
        for mut batch in std::mem::take(&mut self.inbox) {
            for h in batch.drain(..) {
                match h {
                    Handover::Due { at, to, pending } => self.push(at, to, pending),
                    Handover::Link { node, peer } => {
                        let k = self.slot(node as usize);
                        self.links[k].insert(peer);
                    }
                }
            }
            // No more than the outboxes can use (one per other part).
            if self.spare.len() + 1 < self.parts {
                self.spare.push(batch);
            }
        }
    }

    /// Handles everything due at `limit` (ns) or earlier, after what other
    /// parts handed over.
    pub(super) fn run_until<N: Network>(&mut self, sh: &Shared<N>, limit: u64) {
        self.take_inbox();
        while let Some((at, slot)) = self.queue.pop_until(limit) {
            self.now = sh.start + Duration::from_nanos(at);
            if let Some((node, pending)) = self.slab[slot as usize].take() {
                self.free.push(slot);
                match pending {
                    Pending::Input(input) => self.input(sh, node as usize, [input]),
                    Pending::Connected { peer, rtt } => self.input(
                        sh,
                        node as usize,
                        [Input::PeerUp(peer), Input::Rtt { peer, rtt }],
                    ),
                    Pending::Wake => self.wake(sh, node as usize, at),
                }
            }
        }
    }

    /// Hands node `i` the inputs, flushes it, and carries out its outputs.
    pub(super) fn input<N: Network, const K: usize>(
        &mut self,
        sh: &Shared<N>,
        i: usize,
        inputs: [Input; K],
    ) {
        if !sh.alive[i] {
            return;
        }
        match sh.traced {
            Some(t) if t.nodes.contains(&(i as u32)) => {
                tracing::dispatcher::with_default(&t.dispatch, || self.handle(sh, i, inputs));
            }
            _ => self.handle(sh, i, inputs),
        }
    }

    fn handle<N: Network, const K: usize>(&mut self, sh: &Shared<N>, i: usize, inputs: [Input; K]) {
        self.inputs += K as u64;
        let t = (self.now - sh.start).as_millis() as u64;
        let _span = tracing::debug_span!("node", i, t).entered();
        let k = self.slot(i);
        for input in inputs {
            count(&mut self.input_kinds, input.kind());
            self.nodes[k].handle(self.now, input);
        }
        self.nodes[k].handle(self.now, Input::Flush);
        while let Some(out) = self.nodes[k].poll_output() {
            self.output(sh, i, out);
        }
        self.arm_wake(sh, i);
    }

    /// Node `i`'s wake queued for `at` (ns) is up: hands it a timeout if
    /// a timer of its is due (a wake queued for a deadline that moved
    /// later, or that an earlier wake served, finds none).
    fn wake<N: Network>(&mut self, sh: &Shared<N>, i: usize, at: u64) {
        let k = self.slot(i);
        if self.wakes[k] == Some(at) {
            self.wakes[k] = None;
        }
        let due = self.nodes[k].poll_timeout().is_some_and(|d| d <= self.now);
        if due {
            self.input(sh, i, [Input::Timeout]);
        } else {
            self.arm_wake(sh, i);
        }
    }

    /// Queues a wake for node `i`'s earliest deadline, unless one is queued
    /// for then or sooner.
    fn arm_wake<N>(&mut self, sh: &Shared<N>, i: usize) {
        let k = self.slot(i);
        let Some(deadline) = self.nodes[k].poll_timeout() else {
            return;
        };
        let at = nanos(sh.start, deadline.max(self.now));
        if self.wakes[k].is_none_or(|w| at < w) {
            self.wakes[k] = Some(at);
            self.push(at, i as u32, Pending::Wake);
        }
    }

    /// The round trip between two nodes.
    fn rtt<N: Network>(sh: &Shared<N>, a: usize, b: usize) -> Duration {
        sh.net.delay(a, b) + sh.net.delay(b, a)
    }

    /// Opens a connection from `a` (of this part) to `b`, unless `a` has
    /// one. `b`'s side of it is recorded at once if `b` is here, else at
    /// the end of the window: until then `b` may open one of its own, as
    /// two QUIC endpoints that dial each other at once do, and both ends
    /// hear of both.
    fn connect<N: Network>(&mut self, sh: &Shared<N>, a: usize, b: usize) {
        let ka = self.slot(a);
        if !self.links[ka].insert(b as u32) {
            return;
        }
        if self.owns(b) {
            let kb = self.slot(b);
            self.links[kb].insert(a as u32);
        } else {
            self.outbox[b % self.parts].push(Handover::Link {
                node: b as u32,
                peer: a as u32,
            });
        }
        let rtt = Self::rtt(sh, a, b);
        // The other side learns of the connection with the first message,
        // the dialer once its handshake is answered. (The handshake does
        // not delay the first message here: links stay simple first-in
        // first-out queues.)
        let (ia, ib) = (sh.infos[a], sh.infos[b]);
        let at_a = self.now + rtt;
        let at_b = self.now + sh.net.delay(a, b);
        self.schedule(sh, at_b, b, Pending::Connected { peer: ia, rtt });
        self.schedule(sh, at_a, a, Pending::Connected { peer: ib, rtt });
    }

    /// Node `i` sends `msg` to `to`, beside its protocol (see
    /// [`super::Sim::inject`]).
    pub(super) fn inject<N: Network>(
        &mut self,
        sh: &Shared<N>,
        i: usize,
        to: NodeInfo,
        msg: Message,
    ) {
        self.output(sh, i, Output::Send { to, msg });
    }

    fn output<N: Network>(&mut self, sh: &Shared<N>, i: usize, out: Output) {
        match out {
            Output::Send { to, msg } => {
                let Some(&j) = sh.by_id.get(&to.id) else {
                    return;
                };
                let ki = self.slot(i);
                if !sh.alive[j] {
                    // Connected: the idle timeout will tell. Not connected:
                    // the dial fails.
                    if !self.links[ki].contains(j as u32) {
                        let at = self.now + sh.dial_timeout;
                        self.schedule(sh, at, i, Pending::Input(Input::PeerDown(to.id)));
                    }
                    return;
                }
                let withheld = matches!(
                    msg,
                    Message::Data(_) | Message::Proof(_) | Message::Fetched { .. }
                );
                if sh.muted[i] && withheld {
                    self.dropped += 1;
                    return;
                }
                if sh.holes[i] {
                    let me = sh.infos[i].id;
                    let for_another = match &msg {
                        Message::Join(j) => j.joiner.id != me,
                        Message::JoinOverlay(j) => j.joiner.id != me,
                        Message::Publish(p) => p.publisher.id != me,
                        _ => false,
                    };
                    if for_another {
                        self.dropped += 1;
                        return;
                    }
                }
                if sh.loss > 0.0 && self.rng.random_bool(sh.loss.min(1.0)) {
                    self.dropped += 1;
                    return;
                }
                self.connect(sh, i, j);
                count(&mut self.kinds, msg.kind());
                if sh.net.watches(&msg) {
                    self.watched.push((i as u32, j as u32, msg.clone()));
                }
                let msg = if sh.codec {
                    let max = sh.cfg.max_frame_size();
                    let encoded = frame::encode(&msg, max)
                        .expect("the protocol only sends encodable messages");
                    let mut buf = BytesMut::with_capacity(encoded.len());
                    buf.put_slice(&encoded.head);
                    buf.put_slice(&encoded.payload);
                    frame::decode(buf.freeze(), max).expect("what was encoded decodes")
                } else {
                    msg
                };
                self.messages += 1;
                let from = sh.infos[i];
                let arrive = self.now + sh.net.delay(i, j);
                self.schedule(sh, arrive, j, Pending::Input(Input::Message { from, msg }));
            }
            Output::Dial(addr) => {
                let peer = sh.by_addr.get(&addr).copied().filter(|&j| sh.alive[j]);
                let at = match peer {
                    Some(j) => {
                        self.connect(sh, i, j);
                        self.now + Self::rtt(sh, i, j)
                    }
                    None => self.now + sh.dial_timeout,
                };
                let input = Input::Dialed {
                    addr,
                    peer: peer.map(|j| sh.infos[j]),
                };
                self.schedule(sh, at, i, Pending::Input(input));
            }
            Output::Probe(to) => {
                let (at, input) = match sh.by_id.get(&to.id).copied() {
                    Some(j) if sh.alive[j] => {
                        let rtt = Self::rtt(sh, i, j);
                        (self.now + rtt, Input::Rtt { peer: to, rtt })
                    }
                    _ => (self.now + sh.dial_timeout, Input::PeerDown(to.id)),
                };
                self.schedule(sh, at, i, Pending::Input(input));
            }
            Output::Event(e) => {
                let t = nanos(sh.start, self.now);
                self.events.push((t, i, e));
            }
            // Every node on the LAN hears every datagram; a node drops the
            // groups it has no island in (see the module's doc).
            Output::LanJoin(_) | Output::LanLeave(_) => {}
            Output::LanSend { datagram, .. } => {
                let Some(lan) = sh.lan_of.get(&(i as u32)) else {
                    return;
                };
                for &j in sh.lans.get(lan).into_iter().flatten() {
                    let j = j as usize;
                    if j == i || !sh.alive[j] {
                        continue;
                    }
                    if sh.loss > 0.0 && self.rng.random_bool(sh.loss.min(1.0)) {
                        self.dropped += 1;
                        continue;
                    }
                    let at = self.now + sh.net.delay(i, j);
                    let input = Input::LanDatagram(datagram.to_vec());
                    self.schedule(sh, at, j, Pending::Input(input));
                }
            }
        }
    }
}

/// Counts one more of `kind` (few kinds: a list is quickest).
fn count(counts: &mut Vec<(&'static str, u64)>, kind: &'static str) {
    match counts.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, n)) => *n += 1,
        None => counts.push((kind, 1)),
    }
}
