//! A deterministic network that runs many [`Node`]s in virtual time.
//!
//! Every message goes through the real codec (encoded and decoded, unless
//! `codec` is turned off for speed) and arrives after the delay the
//! [`Network`] model gives its link (a fixed latency by default), in order
//! per link. Connections come up when a node first sends to another, as QUIC
//! connections do in the daemon, and both ends are told the link's round-trip
//! time, as the daemon tells them QUIC's estimate. A probe
//! ([`Output::Probe`]) is answered with the round-trip time after one round
//! trip.
//! A crashed node goes silent, as a killed process does: what is sent to it
//! vanishes, its connected peers hear of it only when their connection's
//! idle timeout expires (`idle_timeout`), and a new connection to it fails
//! after `dial_timeout`. Messages can also be dropped at random (`loss`),
//! to check that the protocol recovers from any single lost message. Given
//! the same seed, a run is identical every time.
//!
//! This drives the protocol in this crate's tests, and the simulator in
//! `tools/` (`overlay-sim`) drives it with network topologies, churn and
//! measurements through its own [`Network`].

mod queue;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::frame;
use crate::id::NodeId;
use crate::message::{Message, NodeInfo};
use crate::node::{Command, Event, Input, Node, Output};

/// The delays between nodes, and a view of every message sent.
pub trait Network {
    /// One-way delay of a message from node `from` to node `to` (indices in
    /// the order the nodes were added). Must not change for a pair while
    /// messages are under way between them, so that links stay in order.
    fn delay(&mut self, from: usize, to: usize) -> Duration;

    /// Called for every message that leaves `from` for `to` (running, and
    /// not dropped by `loss`).
    fn sent(&mut self, from: usize, to: usize, msg: &Message) {
        let _ = (from, to, msg);
    }
}

/// The same one-way delay between every pair of nodes.
#[derive(Debug, Clone, Copy)]
pub struct FixedDelay(pub Duration);

impl Network for FixedDelay {
    fn delay(&mut self, _: usize, _: usize) -> Duration {
        self.0
    }
}

/// What waits in the queue for a node.
#[derive(Debug)]
enum Pending {
    Input(Input),
    /// A connection came up: [`Input::PeerUp`] and [`Input::Rtt`] at once,
    /// as the daemon reports them.
    Connected {
        peer: NodeInfo,
        rtt: Duration,
    },
}

/// A node's open connections: peer indices, sorted (looked up for every
/// message sent, changed only when a connection opens or closes).
#[derive(Debug, Default)]
struct Peers(Vec<u32>);

impl Peers {
    fn contains(&self, p: u32) -> bool {
        self.0.binary_search(&p).is_ok()
    }

    /// Adds `p`; whether it was new.
    fn insert(&mut self, p: u32) -> bool {
        match self.0.binary_search(&p) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, p);
                true
            }
        }
    }

    /// Removes `p`; whether it was there.
    fn remove(&mut self, p: u32) -> bool {
        match self.0.binary_search(&p) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }
}

/// A simulated network of nodes.
#[derive(Debug)]
pub struct Sim<N = FixedDelay> {
    nodes: Vec<Node<StdRng>>,
    alive: Vec<bool>,
    by_id: HashMap<NodeId, usize>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Each node's open connections, by peer index.
    links: Vec<Peers>,
    /// Inputs by when they are due (nanoseconds after `start`), then by
    /// the order they were scheduled in, so runs are reproducible. The queue
    /// holds an index into `slab`, where the input waits with its node:
    /// inputs are large, and the queue moves its entries around.
    queue: queue::Queue<u32>,
    slab: Vec<Option<(u32, Pending)>>,
    free: Vec<u32>,
    start: Instant,
    now: Instant,
    rng: StdRng,
    cfg: Config,
    net: N,
    /// Whether every message is encoded and decoded on its way, which
    /// checks the codec on everything the protocol sends (on by default).
    pub codec: bool,
    /// When the peers connected to a crashed node notice it.
    pub idle_timeout: Duration,
    /// When a connection attempt to a crashed node fails.
    pub dial_timeout: Duration,
    /// Probability that any one message is dropped.
    pub loss: f64,
    /// Messages dropped at random so far.
    pub dropped: u64,
    events: Vec<(usize, Event)>,
    /// Messages delivered so far.
    pub messages: u64,
    /// Messages sent so far, by kind (few kinds: a list is quickest).
    kinds: Vec<(&'static str, u64)>,
    /// Inputs handled so far (messages, timers, commands, connections).
    pub inputs: u64,
}

impl Sim<FixedDelay> {
    /// An empty network with a 10 ms delay between any two nodes, whose
    /// randomness all comes from `seed`.
    pub fn new(seed: u64, cfg: Config) -> Self {
        Sim::with_network(seed, cfg, FixedDelay(Duration::from_millis(10)))
    }
}

impl<N: Network> Sim<N> {
    /// An empty network with delays from `net`, whose randomness all comes
    /// from `seed`.
    pub fn with_network(seed: u64, cfg: Config, net: N) -> Self {
        let now = Instant::now();
        Sim {
            nodes: Vec::new(),
            alive: Vec::new(),
            by_id: HashMap::new(),
            by_addr: HashMap::new(),
            links: Vec::new(),
            queue: queue::Queue::new(),
            slab: Vec::new(),
            free: Vec::new(),
            start: now,
            now,
            rng: StdRng::seed_from_u64(seed),
            cfg,
            net,
            codec: true,
            idle_timeout: Duration::from_millis(1500),
            dial_timeout: Duration::from_secs(2),
            loss: 0.0,
            dropped: 0,
            events: Vec::new(),
            messages: 0,
            kinds: Vec::new(),
            inputs: 0,
        }
    }

    /// The network model.
    pub fn network(&self) -> &N {
        &self.net
    }

    /// The network model, to change it (for instance to place the next
    /// node before [`Sim::add_node`]).
    pub fn network_mut(&mut self) -> &mut N {
        &mut self.net
    }

    /// Adds a node with a random id and bootstraps it from `bootstrap`
    /// (none: it starts a new overlay). Returns its index.
    pub fn add_node(&mut self, bootstrap: &[usize]) -> usize {
        let i = self.nodes.len();
        let id = NodeId(self.rng.random());
        // Addresses are labels only: nothing is ever sent to them.
        let addr = SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(0x0a00_0000 + i as u32),
            7000,
        ));
        let info = NodeInfo { id, addr };
        let seed = self.rng.random();
        self.nodes.push(Node::new(
            info,
            self.cfg.clone(),
            StdRng::seed_from_u64(seed),
            self.now,
        ));
        self.alive.push(true);
        self.links.push(Peers::default());
        self.by_id.insert(id, i);
        self.by_addr.insert(addr, i);
        let addrs = bootstrap.iter().map(|&b| self.nodes[b].me().addr).collect();
        self.command(i, Command::Bootstrap { addrs });
        i
    }

    /// Hands node `i` a local command now.
    pub fn command(&mut self, i: usize, cmd: Command) {
        self.input(i, [Input::Command(cmd)]);
    }

    /// Messages sent so far, by kind.
    pub fn by_kind(&self) -> BTreeMap<&'static str, u64> {
        self.kinds.iter().copied().collect()
    }

    fn count_kind(&mut self, kind: &'static str) {
        match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.kinds.push((kind, 1)),
        }
    }

    /// The node at index `i`.
    pub fn node(&self, i: usize) -> &Node<StdRng> {
        &self.nodes[i]
    }

    /// Index of the node with `id`.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// Number of nodes ever added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether node `i` is running.
    pub fn is_alive(&self, i: usize) -> bool {
        self.alive[i]
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Stops node `i` without a word to anyone.
    pub fn crash(&mut self, i: usize) {
        self.alive[i] = false;
        let id = self.nodes[i].me().id;
        let peers = std::mem::take(&mut self.links[i]);
        let at = self.now + self.idle_timeout;
        for j in peers.0 {
            self.links[j as usize].remove(i as u32);
            self.schedule(at, j as usize, Input::PeerDown(id));
        }
    }

    /// Closes the connection between `a` and `b`, as the daemon does to a
    /// peer too slow to keep up: both learn of it at once, and the next
    /// message between them opens a new connection.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        if self.links[a].remove(b as u32) {
            self.links[b].remove(a as u32);
            let (ia, ib) = (self.nodes[a].me().id, self.nodes[b].me().id);
            let at = self.now + self.net.delay(a, b);
            self.schedule(at, a, Input::PeerDown(ib));
            self.schedule(at, b, Input::PeerDown(ia));
        }
    }

    /// Index of a random running node for which `pick` holds, if any.
    pub fn random_node(&mut self, mut pick: impl FnMut(&Node<StdRng>) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.alive[i] && pick(&self.nodes[i]))
            .collect();
        if candidates.is_empty() {
            None
        } else {
            Some(candidates[self.rng.random_range(0..candidates.len())])
        }
    }

    /// Takes the events every node reported so far, with the node's index.
    pub fn take_events(&mut self) -> Vec<(usize, Event)> {
        std::mem::take(&mut self.events)
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        let limit = self.nanos(until);
        while let Some((at, slot)) = self.queue.pop_until(limit) {
            self.now = self.start + Duration::from_nanos(at);
            if let Some((node, pending)) = self.slab[slot as usize].take() {
                self.free.push(slot);
                match pending {
                    Pending::Input(input) => self.input(node as usize, [input]),
                    Pending::Connected { peer, rtt } => self.input(
                        node as usize,
                        [Input::PeerUp(peer), Input::Rtt { peer, rtt }],
                    ),
                }
            }
        }
        self.now = until;
    }

    /// Nanoseconds of virtual time from the start to `t`.
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from((t - self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    fn schedule(&mut self, at: Instant, i: usize, input: Input) {
        self.schedule_pending(at, i, Pending::Input(input));
    }

    fn schedule_pending(&mut self, at: Instant, i: usize, pending: Pending) {
        let entry = Some((i as u32, pending));
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
        self.queue.push(self.nanos(at), slot);
    }

    /// Hands node `i` the inputs, flushes it, and carries out its outputs.
    fn input<const K: usize>(&mut self, i: usize, inputs: [Input; K]) {
        if !self.alive[i] {
            return;
        }
        self.inputs += K as u64;
        let t = (self.now - self.start).as_millis() as u64;
        let _span = tracing::debug_span!("node", i, t).entered();
        for input in inputs {
            self.nodes[i].handle(self.now, input);
        }
        self.nodes[i].handle(self.now, Input::Flush);
        while let Some(out) = self.nodes[i].poll_output() {
            self.output(i, out);
        }
    }

    /// The round trip between two nodes.
    fn rtt(&mut self, a: usize, b: usize) -> Duration {
        self.net.delay(a, b) + self.net.delay(b, a)
    }

    fn connect(&mut self, a: usize, b: usize) {
        if self.links[a].insert(b as u32) {
            self.links[b].insert(a as u32);
            let rtt = self.rtt(a, b);
            // The other side learns of the connection with the first
            // message, the dialer once its handshake is answered. (The
            // handshake does not delay the first message here: links stay
            // simple first-in first-out queues.)
            let (ia, ib) = (self.nodes[a].me(), self.nodes[b].me());
            let at_a = self.now + rtt;
            let at_b = self.now + self.net.delay(a, b);
            self.schedule_pending(at_b, b, Pending::Connected { peer: ia, rtt });
            self.schedule_pending(at_a, a, Pending::Connected { peer: ib, rtt });
        }
    }

    fn output(&mut self, i: usize, out: Output) {
        match out {
            Output::Send { to, msg } => {
                let Some(&j) = self.by_id.get(&to.id) else {
                    return;
                };
                if !self.alive[j] {
                    // Connected: the idle timeout will tell. Not connected:
                    // the dial fails.
                    if !self.links[i].contains(j as u32) {
                        self.schedule(self.now + self.dial_timeout, i, Input::PeerDown(to.id));
                    }
                    return;
                }
                if self.loss > 0.0 && self.rng.random_bool(self.loss.min(1.0)) {
                    self.dropped += 1;
                    return;
                }
                self.connect(i, j);
                self.count_kind(msg.kind());
                self.net.sent(i, j, &msg);
                let msg = if self.codec {
                    let max = self.cfg.max_frame_size();
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
                let from = self.nodes[i].me();
                let arrive = self.now + self.net.delay(i, j);
                self.schedule(arrive, j, Input::Message { from, msg });
            }
            Output::Dial(addr) => {
                let peer = self.by_addr.get(&addr).copied().filter(|&j| self.alive[j]);
                let at = match peer {
                    Some(j) => {
                        self.connect(i, j);
                        self.now + self.rtt(i, j)
                    }
                    None => self.now + self.dial_timeout,
                };
                let peer = peer.map(|j| self.nodes[j].me());
                self.schedule(at, i, Input::Dialed { addr, peer });
            }
            Output::Probe(to) => match self.by_id.get(&to.id).copied() {
                Some(j) if self.alive[j] => {
                    let rtt = self.rtt(i, j);
                    self.schedule(self.now + rtt, i, Input::Rtt { peer: to, rtt });
                }
                _ => self.schedule(self.now + self.dial_timeout, i, Input::PeerDown(to.id)),
            },
            Output::SetTimer { at, timer } => {
                self.schedule(at.max(self.now), i, Input::Timer(timer))
            }
            Output::Event(e) => self.events.push((i, e)),
        }
    }
}
