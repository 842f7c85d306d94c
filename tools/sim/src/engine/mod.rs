//! A deterministic network that runs many [`Node`]s in virtual time.
//!
//! Every message goes through the real codec (encoded and decoded, unless
//! `codec` is turned off for speed) and arrives after the delay the
//! [`Network`] model gives its link (a fixed latency by default), in order
//! per link. Connections come up when a node first sends to another, as QUIC
//! connections do in the daemon, and both ends are told the link's round-trip
//! time, as the daemon tells them QUIC's estimate. A probe
//! ([`Output::Probe`](overlay_proto::Output::Probe)) is answered with the round-trip time after one round
//! trip.
//! A crashed node goes silent, as a killed process does: what is sent to it
//! vanishes, its connected peers hear of it only when their connection's
//! idle timeout expires (`idle_timeout`), and a new connection to it fails
//! after `dial_timeout`. Messages can also be dropped at random (`loss`),
//! to check that the protocol recovers from any single lost message. Given
//! the same seed (and number of parts), a run is identical every time.
//!
//! Nodes can also share a LAN with IP multicast ([`Sim::put_on_lan`]): a
//! datagram one of them sends reaches every other node on that LAN after
//! the network's delay between the two, each copy lost with `loss` like a
//! message (nodes drop the datagrams of groups they have no island in, as
//! a socket that joined only its own groups' addresses would never see
//! them).
//!
//! Large networks run on several threads: virtual time advances in windows
//! shorter than the least delay of the network, within which no node can
//! hear from another, so the nodes, split into parts, run each window at
//! once and exchange what they sent when it ends (see [`Sim::with_parts`]).
//!
//! The protocol's multi-node tests drive it with a fixed delay, and
//! `overlay-sim` with network topologies, churn and measurements through
//! its own [`Network`] ([`crate::net`]).

mod part;
mod queue;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;

use overlay_proto::config::Config;
use overlay_proto::id::NodeId;
use overlay_proto::interface::{Command, Event, Input};
use overlay_proto::keys::{Ed25519Signer, SharedSigner};
use overlay_proto::message::{Message, NodeInfo};
use overlay_proto::node::Node;
use part::{Part, Pending, Shared};

/// The delays between nodes, and a view of the messages sent.
pub trait Network: Sync {
    /// One-way delay of a message from node `from` to node `to` (indices in
    /// the order the nodes were added). Must not change for a pair while
    /// messages are under way between them, so that links stay in order.
    fn delay(&self, from: usize, to: usize) -> Duration;

    /// A lower bound of [`Network::delay`] between two different nodes.
    /// The simulation runs in windows of this length, within which the
    /// nodes cannot hear from one another, so that parts of them can run
    /// at once; the longer, the fewer windows.
    fn min_delay(&self) -> Duration;

    /// Whether [`Network::sent`] wants to see `msg`.
    fn watches(&self, msg: &Message) -> bool {
        let _ = msg;
        false
    }

    /// Called for every message that leaves `from` for `to` (running, and
    /// not dropped by `loss`) that the network [watches](Network::watches),
    /// at the end of the window it was sent in, in the order of the nodes'
    /// parts and then in the order sent.
    fn sent(&mut self, from: usize, to: usize, msg: &Message) {
        let _ = (from, to, msg);
    }
}

/// The same one-way delay between every pair of nodes.
#[derive(Debug, Clone, Copy)]
pub struct FixedDelay(pub Duration);

impl Network for FixedDelay {
    fn delay(&self, _: usize, _: usize) -> Duration {
        self.0
    }

    fn min_delay(&self) -> Duration {
        self.0
    }
}

/// The parts' counts by kind, added up.
fn sum_counts<'a>(
    parts: impl Iterator<Item = &'a Vec<(&'static str, u64)>>,
) -> BTreeMap<&'static str, u64> {
    let mut all = BTreeMap::new();
    for (k, n) in parts.flatten() {
        *all.entry(*k).or_default() += n;
    }
    all
}

/// Nanoseconds of virtual time from `start` to `t`, the queues' clock.
fn nanos(start: Instant, t: Instant) -> u64 {
    u64::try_from((t - start).as_nanos()).unwrap_or(u64::MAX)
}

/// Fewest inputs waiting for a window to be worth a second thread.
const PARALLEL_MIN_WAITING: usize = 4096;

/// A simulated network of nodes.
///
/// Virtual time advances in windows no longer than the network's
/// [least delay](Network::min_delay): nothing a node sends within a window
/// arrives before it ends. The nodes are split into [parts](Sim::with_parts)
/// that run each window on their own, at once on as many threads as the
/// machine has, and exchange what they sent at its end. With one part (the
/// default) the simulation runs exactly in the order events are due.
#[derive(Debug)]
pub struct Sim<N = FixedDelay> {
    parts: Vec<Part>,
    alive: Vec<bool>,
    /// Nodes that withhold what they forward (see [`Sim::withhold`]).
    muted: Vec<bool>,
    /// Nodes that drop what they should route for others.
    holes: Vec<bool>,
    infos: Vec<NodeInfo>,
    /// Looked up for every message sent. Ids are random and addresses
    /// ours: Fx hashes them well, and needs no protection against chosen
    /// keys.
    by_id: FxHashMap<NodeId, usize>,
    by_addr: FxHashMap<SocketAddr, usize>,
    start: Instant,
    now: Instant,
    rng: StdRng,
    /// The key a crashed node's empty state is given: it never runs.
    nobody: SharedSigner,
    cfg: Config,
    net: N,
    threads: usize,
    /// Fewest inputs waiting for a window to run on more than one thread.
    parallel_min_waiting: usize,
    /// Whether every message is encoded and decoded on its way, which
    /// checks the codec on everything the protocol sends (on by default).
    pub codec: bool,
    /// When the peers connected to a crashed node notice it.
    pub idle_timeout: Duration,
    /// When a connection attempt to a crashed node fails.
    pub dial_timeout: Duration,
    /// Probability that any one message is dropped.
    pub loss: f64,
    /// Nodes whose inputs run under a tracing dispatcher of their own.
    traced: Option<Traced>,
    /// The LAN of each node on one (see [`Sim::put_on_lan`]).
    lan_of: FxHashMap<u32, u32>,
    /// The nodes on each LAN.
    lans: FxHashMap<u32, Vec<u32>>,
}

/// The nodes [`Sim::trace`] follows, and the dispatcher their logs go to.
#[derive(Debug)]
pub(crate) struct Traced {
    pub(crate) nodes: rustc_hash::FxHashSet<u32>,
    pub(crate) dispatch: tracing::Dispatch,
    /// A second dispatcher that logs nothing, kept registered. With one
    /// dispatcher alone (no global subscriber set), `tracing` asks the
    /// thread's current one whether a log statement is wanted, once, when
    /// the statement first runs: a statement an untraced node runs first
    /// would stay off for the traced ones too. With two, it asks both.
    _quiet: tracing::Dispatch,
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
    /// from `seed`, run as one part.
    pub fn with_network(seed: u64, cfg: Config, net: N) -> Self {
        Sim::with_parts(seed, cfg, net, 1)
    }

    /// An empty network with delays from `net`, whose randomness all comes
    /// from `seed`, with its nodes in `parts` parts (at least one) that
    /// run at once on up to as many threads. The same seed and number of
    /// parts give the same run, whatever the number of threads.
    pub fn with_parts(seed: u64, cfg: Config, net: N, parts: usize) -> Self {
        let now = Instant::now();
        let parts = parts.max(1);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(parts);
        Sim {
            parts: (0..parts)
                .map(|p| {
                    // Each part draws its losses from a stream of its own.
                    let seed = seed ^ (p as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    Part::new(p, parts, now, StdRng::seed_from_u64(seed))
                })
                .collect(),
            alive: Vec::new(),
            muted: Vec::new(),
            holes: Vec::new(),
            infos: Vec::new(),
            by_id: FxHashMap::default(),
            by_addr: FxHashMap::default(),
            start: now,
            now,
            rng: StdRng::seed_from_u64(seed),
            nobody: Arc::new(Ed25519Signer::from_seed(&[0; 32])),
            cfg,
            net,
            threads,
            parallel_min_waiting: PARALLEL_MIN_WAITING,
            codec: true,
            idle_timeout: Duration::from_millis(1500),
            dial_timeout: Duration::from_secs(2),
            loss: 0.0,
            traced: None,
            lan_of: FxHashMap::default(),
            lans: FxHashMap::default(),
        }
    }

    /// Handles the inputs of `nodes` (indices) under `dispatch`, and
    /// everyone else's under the global one.
    ///
    /// Following a few nodes of a large run through a filter such as
    /// `RUST_LOG='[node{i=52151}]=debug'` makes every node's debug events
    /// reach the filter, which then looks up the span of each: the run
    /// takes some three times as long. Here the global subscriber can stay
    /// quiet, and only the followed nodes pay for their logs.
    pub fn trace(&mut self, nodes: impl IntoIterator<Item = usize>, dispatch: tracing::Dispatch) {
        let nodes = nodes
            .into_iter()
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        self.traced = Some(Traced {
            nodes,
            dispatch,
            _quiet: tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
        });
    }

    /// Runs the parts on at most `threads` threads (at least one; by
    /// default as many as the machine has, up to the number of parts). The
    /// run is the same whatever the number.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.clamp(1, self.parts.len());
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
        // Each node has a key of its own, and its id is its key's, as in
        // the daemon: the root's proofs are checked against it.
        let signer: SharedSigner = Arc::new(Ed25519Signer::from_seed(&self.rng.random()));
        // Addresses are labels only: nothing is ever sent to them.
        let addr = SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(0x0a00_0000 + self.infos.len() as u32),
            7000,
        ));
        self.add_node_with(signer, addr, bootstrap)
    }

    /// Adds a node that signs with `signer` (its id is the key's) at
    /// `addr`, which no other node may have: the tests make many ids on one
    /// host with it. Returns its index.
    pub fn add_node_with(
        &mut self,
        signer: SharedSigner,
        addr: SocketAddr,
        bootstrap: &[usize],
    ) -> usize {
        assert!(!self.by_addr.contains_key(&addr), "{addr} is taken");
        let i = self.infos.len();
        let id = signer.public_key().id();
        let info = NodeInfo { id, addr };
        let seed = self.rng.random();
        let node = Node::new(
            info,
            signer,
            self.cfg.clone(),
            StdRng::seed_from_u64(seed),
            self.now,
        );
        let count = self.parts.len();
        let part = &mut self.parts[i % count];
        part.nodes.push(node);
        part.links.push(Default::default());
        part.wakes.push(None);
        self.alive.push(true);
        self.muted.push(false);
        self.holes.push(false);
        self.infos.push(info);
        self.by_id.insert(id, i);
        self.by_addr.insert(addr, i);
        let addrs = bootstrap.iter().map(|&b| self.infos[b].addr).collect();
        self.command(i, Command::Bootstrap { addrs });
        i
    }

    /// Puts node `i` on LAN number `lan`, with IP multicast among the
    /// nodes there, and tells it so ([`Command::LanUp`], in `session`).
    pub fn put_on_lan(&mut self, i: usize, lan: u32, session: u64) {
        let i = i as u32;
        if let Some(old) = self.lan_of.insert(i, lan) {
            if let Some(members) = self.lans.get_mut(&old) {
                members.retain(|&m| m != i);
            }
        }
        self.lans.entry(lan).or_default().push(i);
        self.command(i as usize, Command::LanUp { session });
    }

    /// Takes node `i` off its LAN: its datagrams reach no one, and none
    /// reach it (its link to the LAN is down).
    pub fn take_off_lan(&mut self, i: usize) {
        if let Some(lan) = self.lan_of.remove(&(i as u32)) {
            if let Some(members) = self.lans.get_mut(&lan) {
                members.retain(|&m| m != i as u32);
            }
        }
    }

    /// Hands node `i` a local command now.
    pub fn command(&mut self, i: usize, cmd: Command) {
        self.take_inboxes();
        let count = self.parts.len();
        let now = self.now;
        self.parts[i % count].now = now;
        let (sh, parts) = self.shared();
        parts[i % count].input(&sh, i, [Input::Command(cmd)]);
        self.hand_over();
    }

    /// Node `from` sends `to` the message `msg`, whatever it is: what a
    /// node that lies sends besides what its protocol state does. It goes
    /// as any message does (a connection, the link's delay, the
    /// simulator's losses), and `to` sees it from `from`, as the
    /// handshake would prove.
    pub fn inject(&mut self, from: usize, to: usize, msg: Message) {
        self.take_inboxes();
        let count = self.parts.len();
        let now = self.now;
        self.parts[from % count].now = now;
        let to = self.infos[to];
        let (sh, parts) = self.shared();
        parts[from % count].inject(&sh, from, to, msg);
        self.hand_over();
    }

    /// Node `i` withholds from now on: the group messages, proofs and
    /// repairs it would send are dropped, while it goes on with everything
    /// else (heartbeats, acknowledgements), as a forwarder that lies by
    /// omission would.
    pub fn withhold(&mut self, i: usize) {
        self.muted[i] = true;
    }

    /// Node `i` is a black hole from now on: it stays in the overlay and
    /// answers for itself, but drops every join, overlay join and publish
    /// it should pass on for another node, as a router that lies by
    /// omission would.
    pub fn black_hole(&mut self, i: usize) {
        self.holes[i] = true;
    }

    /// Messages sent so far, by kind.
    pub fn by_kind(&self) -> BTreeMap<&'static str, u64> {
        sum_counts(self.parts.iter().map(|p| &p.kinds))
    }

    /// Inputs handled so far, by kind ([`Input::kind`]).
    pub fn inputs_by_kind(&self) -> BTreeMap<&'static str, u64> {
        sum_counts(self.parts.iter().map(|p| &p.input_kinds))
    }

    /// Messages delivered so far.
    pub fn messages(&self) -> u64 {
        self.parts.iter().map(|p| p.messages).sum()
    }

    /// Messages dropped at random so far.
    pub fn dropped(&self) -> u64 {
        self.parts.iter().map(|p| p.dropped).sum()
    }

    /// Inputs handled so far (messages, timers, commands, connections).
    pub fn inputs(&self) -> u64 {
        self.parts.iter().map(|p| p.inputs).sum()
    }

    /// The node at index `i`.
    pub fn node(&self, i: usize) -> &Node<StdRng> {
        let part = &self.parts[i % self.parts.len()];
        &part.nodes[part.slot(i)]
    }

    /// Index of the node with `id`.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// Number of nodes ever added.
    pub fn len(&self) -> usize {
        self.infos.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    /// Whether node `i` is running.
    pub fn is_alive(&self, i: usize) -> bool {
        self.alive[i]
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Node `i`'s open connections.
    fn links(&mut self, i: usize) -> &mut part::Peers {
        let count = self.parts.len();
        let part = &mut self.parts[i % count];
        let k = part.slot(i);
        &mut part.links[k]
    }

    /// Queues `input` for node `i` at `at` (between windows).
    fn schedule(&mut self, at: Instant, i: usize, input: Input) {
        let at = nanos(self.start, at);
        let count = self.parts.len();
        self.parts[i % count].push(at, i as u32, Pending::Input(input));
    }

    /// Stops node `i` without a word to anyone. Its state goes with it:
    /// [`Sim::node`] shows it afterwards as a node that knows nothing.
    pub fn crash(&mut self, i: usize) {
        self.take_inboxes();
        self.alive[i] = false;
        // A crashed node never runs again: what it held (tables, trees,
        // buffers) goes, and only its name stays for lookups. At 100,000
        // nodes with 10% churn that is some 700 MB.
        let info = self.infos[i];
        let count = self.parts.len();
        let part = &mut self.parts[i % count];
        let slot = part.slot(i);
        let signer = self.nobody.clone();
        part.nodes[slot] = Node::new(
            info,
            signer,
            self.cfg.clone(),
            StdRng::seed_from_u64(0),
            self.now,
        );
        let id = info.id;
        let peers = std::mem::take(self.links(i)).sorted();
        let at = self.now + self.idle_timeout;
        for j in peers {
            self.links(j as usize).remove(i as u32);
            self.schedule(at, j as usize, Input::PeerDown(id));
        }
    }

    /// Closes the connection between `a` and `b`, as the daemon does to a
    /// peer too slow to keep up: both learn of it at once, and the next
    /// message between them opens a new connection.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        self.take_inboxes();
        if self.links(a).remove(b as u32) {
            self.links(b).remove(a as u32);
            let (ia, ib) = (self.infos[a].id, self.infos[b].id);
            let at = self.now + self.net.delay(a, b);
            self.schedule(at, a, Input::PeerDown(ib));
            self.schedule(at, b, Input::PeerDown(ia));
        }
    }

    /// Index of a random running node for which `pick` holds, if any.
    pub fn random_node(&mut self, mut pick: impl FnMut(&Node<StdRng>) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.len())
            .filter(|&i| self.alive[i] && pick(self.node(i)))
            .collect();
        if candidates.is_empty() {
            None
        } else {
            Some(candidates[self.rng.random_range(0..candidates.len())])
        }
    }

    /// Takes the events every node reported so far, with the node's index,
    /// in the order they happened (by time, then by part).
    pub fn take_events(&mut self) -> Vec<(usize, Event)> {
        let mut all: Vec<(u64, usize, Event)> = Vec::new();
        for part in &mut self.parts {
            all.append(&mut part.events);
        }
        // Stable: a part's events stay in the order they were reported.
        all.sort_by_key(|&(t, _, _)| t);
        all.into_iter().map(|(_, i, e)| (i, e)).collect()
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        let end = nanos(self.start, until);
        let window = u64::try_from(self.net.min_delay().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut from = nanos(self.start, self.now);
        // Windows up to `end` included, as the events due at `end` belong
        // to this run.
        while from <= end {
            let last = from.saturating_add(window - 1).min(end);
            self.run_window(last);
            from = last.saturating_add(1);
            if last == u64::MAX {
                break;
            }
        }
        self.now = until;
    }

    /// Runs every part up to `last` (ns, included), then hands over what
    /// they have for each other.
    fn run_window(&mut self, last: u64) {
        let waiting: usize = self.parts.iter().map(|p| p.waiting()).sum();
        let threads = if waiting >= self.parallel_min_waiting {
            self.threads
        } else {
            1
        };
        let (sh, parts) = self.shared();
        if threads <= 1 {
            for part in parts.iter_mut() {
                part.run_until(&sh, last);
            }
        } else {
            // Each thread takes the next part not yet run, so a thread
            // that finishes a light part goes on with another: with more
            // parts than threads the load evens out.
            let next = std::sync::Mutex::new(parts.iter_mut());
            let sh = &sh;
            let work = || loop {
                let part = next.lock().unwrap_or_else(|e| e.into_inner()).next();
                match part {
                    Some(part) => part.run_until(sh, last),
                    None => break,
                }
            };
            std::thread::scope(|s| {
                for _ in 1..threads {
                    s.spawn(work);
                }
                work();
            });
        }
        self.hand_over();
    }

    /// What the parts read while they run, and the parts.
    fn shared(&mut self) -> (Shared<'_, N>, &mut [Part]) {
        let sh = Shared {
            alive: &self.alive,
            muted: &self.muted,
            holes: &self.holes,
            by_id: &self.by_id,
            by_addr: &self.by_addr,
            infos: &self.infos,
            cfg: &self.cfg,
            net: &self.net,
            start: self.start,
            codec: self.codec,
            dial_timeout: self.dial_timeout,
            loss: self.loss,
            traced: self.traced.as_ref(),
            lan_of: &self.lan_of,
            lans: &self.lans,
        };
        (sh, &mut self.parts)
    }

    /// Hands each part what the others have for it, in the order of the
    /// parts (each takes it in when it next runs), and shows the network
    /// the messages it watches.
    fn hand_over(&mut self) {
        let count = self.parts.len();
        for p in 0..count {
            for q in 0..count {
                if q != p && !self.parts[p].outbox[q].is_empty() {
                    let spare = self.parts[p].spare.pop().unwrap_or_default();
                    let batch = std::mem::replace(&mut self.parts[p].outbox[q], spare);
                    self.parts[q].inbox.push(batch);
                }
            }
            let watched = std::mem::take(&mut self.parts[p].watched);
            for (from, to, msg) in &watched {
                self.net.sent(*from as usize, *to as usize, msg);
            }
        }
    }

    /// Has every part take in what was handed over to it, before the
    /// connections or queues are looked at or changed from outside a
    /// window.
    fn take_inboxes(&mut self) {
        for part in &mut self.parts {
            part.take_inbox();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use overlay_proto::Mid;

    /// Builds an overlay of `n` nodes in `parts` parts on `threads`
    /// threads, with one group that every node joins, publishes to it,
    /// crashes a node, publishes again; returns every event with its node
    /// and the messages sent.
    fn run(parts: usize, threads: usize, n: usize) -> (Vec<String>, u64, u64) {
        let mut sim = Sim::with_parts(
            7,
            Config::default(),
            FixedDelay(Duration::from_millis(3)),
            parts,
        );
        sim.set_threads(threads);
        // Every window on the threads, however few inputs wait.
        sim.parallel_min_waiting = 0;
        let mut log = Vec::new();
        let take = |sim: &mut Sim, log: &mut Vec<String>| {
            for (i, e) in sim.take_events() {
                log.push(format!("{:?} {i} {e:?}", sim.elapsed()));
            }
        };
        sim.add_node(&[]);
        for i in 1..n {
            sim.add_node(&[(i * 7) % i, i / 2]);
            sim.run_for(Duration::from_millis(20));
            take(&mut sim, &mut log);
        }
        sim.run_for(Duration::from_secs(5));
        sim.command(0, Command::CreateGroup { request: 1 });
        let mid: Mid = sim
            .take_events()
            .into_iter()
            .find_map(|(_, e)| match e {
                Event::GroupCreated { mid, .. } => Some(mid),
                _ => None,
            })
            .expect("the group is created at once");
        for i in 1..n {
            sim.command(i, Command::Join { mid });
        }
        sim.run_for(Duration::from_secs(5));
        take(&mut sim, &mut log);
        for k in 0..5 {
            let payload = Bytes::from(format!("message {k}"));
            sim.command(
                n - 1 - k,
                Command::Publish {
                    request: k as u64,
                    mid,
                    payload,
                },
            );
            sim.run_for(Duration::from_millis(200));
            take(&mut sim, &mut log);
        }
        sim.crash(1);
        sim.run_for(Duration::from_secs(5));
        sim.command(
            n - 1,
            Command::Publish {
                request: 9,
                mid,
                payload: Bytes::from_static(b"after"),
            },
        );
        sim.run_for(Duration::from_secs(3));
        take(&mut sim, &mut log);
        (log, sim.messages(), sim.inputs())
    }

    /// A writer into a shared buffer, for a subscriber's output.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn traced_nodes_log_to_their_dispatcher_and_no_one_else_does() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let mut sim = Sim::with_parts(
            3,
            Config::default(),
            FixedDelay(Duration::from_millis(3)),
            2,
        );
        sim.trace([2], tracing::Dispatch::new(subscriber));
        sim.add_node(&[]);
        for i in 1..6 {
            sim.add_node(&[0]);
            sim.run_for(Duration::from_millis(50));
            assert!(sim.node(i).is_joined(), "node {i} is in");
        }
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        // Every node entered the overlay and said so at debug level; only
        // node 2's words reached the dispatcher.
        assert!(out.contains("node{i=2 "), "{out}");
        assert!(out.contains("joined the overlay"), "{out}");
        for line in out.lines() {
            assert!(line.contains("node{i=2 "), "{line}");
        }
    }

    #[test]
    fn threads_do_not_change_a_run() {
        let one = run(3, 1, 40);
        let many = run(3, 3, 40);
        assert_eq!(one.1, many.1, "messages sent");
        assert_eq!(one.2, many.2, "inputs handled");
        assert_eq!(one.0.len(), many.0.len(), "events reported");
        for (a, b) in one.0.iter().zip(&many.0) {
            assert_eq!(a, b);
        }
    }

    #[test]
    fn nodes_in_different_parts_build_a_group_that_delivers_everything() {
        let n = 40;
        let (log, _, _) = run(3, 2, n);
        let delivered = |node: usize| {
            let tag = format!(" {node} Delivered");
            log.iter().filter(|l| l.contains(&tag)).count()
        };
        // Every member but the crashed one (node 0 is the root), whichever
        // part it is in, gets each of the six messages once.
        for i in 2..n {
            assert_eq!(delivered(i), 6, "node {i}: {log:#?}");
        }
    }
}
