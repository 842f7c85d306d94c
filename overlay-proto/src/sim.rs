//! A small deterministic network that runs many [`Node`]s in virtual time.
//!
//! Every message goes through the real codec (encoded and decoded) and
//! arrives after a fixed latency, in order per link. Connections come up
//! when a node first sends to another, as QUIC connections do in the daemon.
//! A crashed node goes silent, as a killed process does: what is sent to it
//! vanishes, its connected peers hear of it only when their connection's
//! idle timeout expires (`idle_timeout`), and a new connection to it fails
//! after `dial_timeout`. Messages can also be dropped at random (`loss`),
//! to check that the protocol recovers from any single lost message. Given
//! the same seed, a run is identical every time.
//!
//! This drives the protocol in this crate's tests. The simulator in `tools/`
//! (with topologies, churn and measurements) builds on the same idea.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::frame;
use crate::id::NodeId;
use crate::message::NodeInfo;
use crate::node::{Command, Event, Input, Node, Output};

/// A simulated network of nodes.
#[derive(Debug)]
pub struct Sim {
    nodes: Vec<Node<StdRng>>,
    alive: Vec<bool>,
    by_id: HashMap<NodeId, usize>,
    by_addr: HashMap<SocketAddr, usize>,
    links: BTreeSet<(usize, usize)>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    pending: HashMap<u64, (usize, Input)>,
    next_seq: u64,
    start: Instant,
    now: Instant,
    rng: StdRng,
    cfg: Config,
    /// One-way delay of every link.
    pub latency: Duration,
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
    /// Messages sent so far, by kind.
    pub by_kind: std::collections::BTreeMap<&'static str, u64>,
}

impl Sim {
    /// An empty network whose randomness all comes from `seed`.
    pub fn new(seed: u64, cfg: Config) -> Self {
        let now = Instant::now();
        Sim {
            nodes: Vec::new(),
            alive: Vec::new(),
            by_id: HashMap::new(),
            by_addr: HashMap::new(),
            links: BTreeSet::new(),
            queue: BinaryHeap::new(),
            pending: HashMap::new(),
            next_seq: 0,
            start: now,
            now,
            rng: StdRng::seed_from_u64(seed),
            cfg,
            latency: Duration::from_millis(10),
            idle_timeout: Duration::from_millis(1500),
            dial_timeout: Duration::from_secs(2),
            loss: 0.0,
            dropped: 0,
            events: Vec::new(),
            messages: 0,
            by_kind: Default::default(),
        }
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
        self.by_id.insert(id, i);
        self.by_addr.insert(addr, i);
        let addrs = bootstrap.iter().map(|&b| self.nodes[b].me().addr).collect();
        self.command(i, Command::Bootstrap { addrs });
        i
    }

    /// Hands node `i` a local command now.
    pub fn command(&mut self, i: usize, cmd: Command) {
        self.input(i, Input::Command(cmd));
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
        let peers: Vec<usize> = self
            .links
            .iter()
            .filter_map(|&(a, b)| match (a == i, b == i) {
                (true, _) => Some(b),
                (_, true) => Some(a),
                _ => None,
            })
            .collect();
        self.links.retain(|&(a, b)| a != i && b != i);
        let at = self.now + self.idle_timeout;
        for j in peers {
            self.schedule(at, j, Input::PeerDown(id));
        }
    }

    /// Closes the connection between `a` and `b`, as the daemon does to a
    /// peer too slow to keep up: both learn of it at once, and the next
    /// message between them opens a new connection.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        if self.links.remove(&(a.min(b), a.max(b))) {
            let (ia, ib) = (self.nodes[a].me().id, self.nodes[b].me().id);
            let at = self.now + self.latency;
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
        while let Some(Reverse((at, seq, _))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = at;
            if let Some((i, input)) = self.pending.remove(&seq) {
                self.input(i, input);
            }
        }
        self.now = until;
    }

    fn schedule(&mut self, at: Instant, i: usize, input: Input) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Reverse((at, seq, i)));
        self.pending.insert(seq, (i, input));
    }

    fn input(&mut self, i: usize, input: Input) {
        if !self.alive[i] {
            return;
        }
        let t = (self.now - self.start).as_millis() as u64;
        let _span = tracing::debug_span!("node", i, t).entered();
        self.nodes[i].handle(self.now, input);
        self.nodes[i].handle(self.now, Input::Flush);
        while let Some(out) = self.nodes[i].poll_output() {
            self.output(i, out);
        }
    }

    fn connect(&mut self, a: usize, b: usize, at: Instant) {
        if self.links.insert((a.min(b), a.max(b))) {
            let (ia, ib) = (self.nodes[a].me(), self.nodes[b].me());
            self.schedule(at, b, Input::PeerUp(ia));
            self.schedule(at, a, Input::PeerUp(ib));
        }
    }

    fn output(&mut self, i: usize, out: Output) {
        let arrive = self.now + self.latency;
        match out {
            Output::Send { to, msg } => {
                let Some(&j) = self.by_id.get(&to.id) else {
                    return;
                };
                if !self.alive[j] {
                    // Connected: the idle timeout will tell. Not connected:
                    // the dial fails.
                    if !self.links.contains(&(i.min(j), i.max(j))) {
                        self.schedule(self.now + self.dial_timeout, i, Input::PeerDown(to.id));
                    }
                    return;
                }
                if self.loss > 0.0 && self.rng.random_bool(self.loss.min(1.0)) {
                    self.dropped += 1;
                    return;
                }
                self.connect(i, j, arrive);
                *self.by_kind.entry(msg.kind()).or_default() += 1;
                let max = self.cfg.max_frame_size();
                let encoded =
                    frame::encode(&msg, max).expect("the protocol only sends encodable messages");
                let mut buf = BytesMut::with_capacity(encoded.len());
                buf.put_slice(&encoded.head);
                buf.put_slice(&encoded.payload);
                let msg = frame::decode(buf.freeze(), max).expect("what was encoded decodes");
                self.messages += 1;
                let from = self.nodes[i].me();
                self.schedule(arrive, j, Input::Message { from, msg });
            }
            Output::Dial(addr) => {
                let peer = self.by_addr.get(&addr).copied().filter(|&j| self.alive[j]);
                if let Some(j) = peer {
                    self.connect(i, j, arrive);
                }
                let peer = peer.map(|j| self.nodes[j].me());
                self.schedule(arrive + self.latency, i, Input::Dialed { addr, peer });
            }
            Output::SetTimer { at, timer } => {
                self.schedule(at.max(self.now), i, Input::Timer(timer))
            }
            Output::Event(e) => self.events.push((i, e)),
        }
    }
}
