//! The state machine of one overlay node, and the dispatch of its inputs
//! (see [`crate::interface`]) to the parts that handle them ([`crate::overlay`],
//! [`crate::tree`], [`crate::stream`], [`crate::publish`], [`crate::root`],
//! [`crate::replica`], [`crate::liveness`], [`crate::query`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use rand::Rng;
use rustc_hash::FxSeededState;

use crate::admission::Dropped;
use crate::config::Config;
use crate::id::{Mid, NodeId};
use crate::interface::{Command, Event, Input, Output};
use crate::keys::SharedSigner;
use crate::liveness::Watch;
use crate::message::{
    Asked, Collect, Direct, Heartbeat, JoinOverlay, JoinReject, LanFed, Lost, Neighbours,
    PublishAck, PublishReject, ReplicaAck, ReplicaSync, Splice, TreeQuery,
};
use crate::message::{Message, NodeInfo};
use crate::overlay::Overlay;
use crate::publish::Publisher;
use crate::replica::Replicas;
use crate::routing::RoutingTable;
use crate::stream::Replay;
use crate::timer::{Timer, TimerTable};
use crate::tree::Group;

/// A [`Ctx`](crate::ctx::Ctx) over node `$n`'s time, settings, outbox and
/// timers, borrowed apart from the state of its parts, so that a part's
/// handler can take both: `self.publisher.start(&mut ctx!(self), ..)`.
macro_rules! ctx {
    ($n:expr) => {
        $crate::ctx::Ctx::new(
            $n.now,
            &$n.cfg,
            $n.overlay.table.me(),
            &mut $n.out,
            &mut $n.timers,
        )
    };
}
pub(crate) use ctx;

/// A map keyed by node id, for the maps looked up on every message. The
/// hash is fast (ids are already random), and seeded from the node's own
/// randomness: peers choose their ids, and must not be able to choose ids
/// that collide in our tables. A seeded run of the simulator stays the
/// same run.
pub(crate) type IdMap<V> = std::collections::HashMap<NodeId, V, FxSeededState>;

/// Room for outputs a node keeps between inputs.
const OUT_KEEP: usize = 32;

/// One overlay node's protocol state. Feed it [`Input`]s with
/// [`Node::handle`], then drain [`Output`]s with [`Node::poll_output`].
///
/// The node never reads a clock or an entropy source: `now` comes with every
/// input and randomness from the `R` it was built with, so a seeded run is
/// reproducible.
#[derive(Debug)]
pub struct Node<R> {
    pub(crate) cfg: Config,
    pub(crate) rng: R,
    /// The routing state, and how it is kept (see [`crate::overlay`]).
    pub(crate) overlay: Overlay,
    pub(crate) groups: BTreeMap<Mid, Group>,
    /// Copies of other roots' state, and the roots known otherwise (see
    /// [`crate::replica`]).
    pub(crate) replicas: Replicas,
    /// This node's publishes waiting for the root's answer.
    pub(crate) publisher: Publisher,
    /// Where the roots of groups we publish to or fetch from are.
    pub(crate) roots: crate::roots::Roots,
    pub(crate) replays: BTreeMap<u64, Replay>,
    /// The tree neighbours watched for signs of life (see
    /// [`crate::liveness`]).
    pub(crate) watch: Watch,
    /// Groups we are root of that committed messages no proof covers yet,
    /// to prove at the next flush.
    pub(crate) unproven: std::collections::BTreeSet<Mid>,
    /// Signs this node's proofs and mandates with its key (see
    /// [`crate::proof`], [`crate::lineage`]).
    pub(crate) signer: SharedSigner,
    /// Who leads each group we are on, replicate or replay, as far as we
    /// have checked (see [`crate::lineage`]).
    pub(crate) lineages: crate::lineage::Lineages,
    /// Tree queries and collections under way.
    pub(crate) queries: crate::query::Queries,
    /// This node's coordinate and recent round-trip times (see
    /// [`crate::placement`]).
    pub(crate) proximity: crate::placement::Proximity,
    /// LAN islands, once the driver has a multicast socket.
    pub(crate) lan: Option<Box<crate::lan::Lan>>,
    /// Messages dropped at admission (see [`crate::admission`]).
    pub(crate) dropped: Dropped,
    /// Parents left because the root had messages they did not send.
    pub(crate) withheld: u64,
    /// Each peer's budget of costly requests.
    pub(crate) budgets: crate::ratelimit::PeerBudgets,
    /// Each peer's budget of requests it passes on for others.
    pub(crate) relayed_budgets: crate::ratelimit::PeerBudgets,
    /// What we pass on to each tree neighbour of the placement asks of
    /// other nodes, kept within what its budget for us allows.
    pub(crate) pacing: crate::ratelimit::PeerBudgets,
    /// Every timer armed, by what it is for.
    pub(crate) timers: TimerTable,
    pub(crate) out: VecDeque<Output>,
    pub(crate) now: Instant,
}

impl<R: Rng> Node<R> {
    /// A node with identity `me`, not yet in any overlay, that signs with
    /// `signer` (whose key's id should be `me.id`: other nodes check its
    /// proofs against the id they know it by).
    pub fn new(me: NodeInfo, signer: SharedSigner, cfg: Config, mut rng: R, now: Instant) -> Self {
        let hasher = FxSeededState::with_seed(rng.random::<u64>() as usize);
        let mut table = RoutingTable::new(me, cfg.leaf_set_size);
        table.limit_leaves(cfg.leaf_set_per_host, cfg.leaf_set_per_subnet);
        let heard = IdMap::with_hasher(hasher.clone());
        Node {
            overlay: Overlay::new(table, IdMap::with_hasher(hasher)),
            cfg,
            rng,
            groups: BTreeMap::new(),
            replicas: Replicas::default(),
            publisher: Publisher::default(),
            roots: Default::default(),
            replays: BTreeMap::new(),
            watch: Watch::new(heard),
            unproven: Default::default(),
            signer,
            lineages: Default::default(),
            queries: Default::default(),
            proximity: Default::default(),
            lan: None,
            dropped: Dropped::default(),
            withheld: 0,
            budgets: Default::default(),
            relayed_budgets: Default::default(),
            pacing: Default::default(),
            timers: TimerTable::default(),
            out: VecDeque::new(),
            now,
        }
    }

    /// This node's id and address.
    pub fn me(&self) -> NodeInfo {
        self.overlay.table.me()
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Messages dropped because their sender may not send them, by kind.
    pub fn dropped(&self) -> &Dropped {
        &self.dropped
    }

    /// How many times this node left a parent because the group's root had
    /// messages the parent did not send (see [`crate::stream`]).
    pub fn parents_left_for_withholding(&self) -> u64 {
        self.withheld
    }

    /// This node's network coordinate.
    pub fn coord(&self) -> crate::coord::Coord {
        self.proximity.coord
    }

    /// The routing state.
    pub fn routing(&self) -> &RoutingTable {
        &self.overlay.table
    }

    /// Whether the node has entered the overlay.
    pub fn is_joined(&self) -> bool {
        self.overlay.is_joined()
    }

    /// When the node next wants [`Input::Timeout`], if it has a timer
    /// armed. Changes only as inputs are handled: ask after each batch.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// The next thing for the driver to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.out.pop_front();
        if out.is_none() && self.out.capacity() > OUT_KEEP {
            // A burst (a neighbour list that fills the table) can queue a
            // hundred outputs; a node should not hold that room for good,
            // when a simulation runs a hundred thousand of them.
            self.out = VecDeque::new();
        }
        out
    }

    /// Handles one input at time `now`. Outputs queue up for
    /// [`Node::poll_output`].
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = now;
        match input {
            Input::Message { from, msg } => self.on_message(from, msg),
            Input::PeerUp(peer) => self.on_peer_up(peer),
            Input::PeerDown(peer) => self.on_peer_down(peer),
            Input::Rtt { peer, rtt } => {
                if let Some((id, rtt)) = self.overlay.on_rtt(&ctx!(self), peer, rtt) {
                    self.remember_rtt(id, rtt);
                }
            }
            Input::Dialed { addr, peer } => self.overlay.on_dialed(&mut ctx!(self), addr, peer),
            Input::Timeout => {
                let armed_before = self.timers.next_seq();
                while let Some(t) = self.timers.pop_due(now, armed_before) {
                    tracing::trace!(timer = t.kind(), "timer");
                    self.on_timer(t);
                }
            }
            Input::Command(c) => self.on_command(c),
            Input::LanDatagram(d) => self.on_lan_datagram(d),
            Input::Flush => {
                self.prove_commits();
                self.flush_acks();
            }
        }
        self.keep_heartbeat();
    }

    fn on_message(&mut self, from: NodeInfo, msg: Message) {
        tracing::trace!(from = %from.id.short(), kind = msg.kind(), "message");
        self.watch.heard_from(self.now, from.id);
        if self.overlay.heard_again(from) {
            self.alive_again(from.id);
        }
        // Whatever it says, the sender's connection is alive (above); what
        // it says is acted on only if it may say it.
        if !self.admit(&from, &msg) {
            return;
        }
        match msg {
            Message::JoinOverlay(JoinOverlay { joiner }) => {
                let coord = self.proximity.coord;
                self.overlay
                    .on_join_overlay(&mut ctx!(self), coord, from, joiner)
            }
            Message::Neighbours(Neighbours {
                nodes,
                reply,
                coord,
            }) => {
                self.learn_coord(from.id, &coord);
                let coord = self.proximity.coord;
                self.overlay
                    .on_neighbours(&mut ctx!(self), coord, from, nodes, reply)
            }
            Message::Join(join) => {
                if join.joiner.id == from.id {
                    self.learn_coord(from.id, &join.coord);
                }
                self.on_join(from, join)
            }
            Message::Place(place) => self.on_place(from, place),
            Message::PlaceOffer(offer) => self.on_place_offer(from, offer),
            Message::JoinAck(ack) => {
                self.learn_coord(from.id, &ack.coord);
                self.on_join_ack(from, ack)
            }
            Message::JoinReject(JoinReject { mid, reason }) => {
                self.on_join_reject(from, mid, reason)
            }
            Message::LanFed(LanFed { mid, fed }) => self.on_lan_fed(from.id, mid, fed),
            Message::Leave { mid } => self.on_leave(from, mid),
            Message::MoveRefused { mid } => self.on_move_refused(from, mid),
            Message::Splice(Splice { mid, parent }) => self.on_splice(from, mid, parent),
            Message::Publish(p) => self.on_publish(from, p),
            Message::Direct(Direct { mid, asked }) => match asked {
                Asked::Publish { .. } => self.on_publish_direct(from, mid),
                Asked::Fetch { request } => self.on_fetch_direct(from, mid, request),
                Asked::Tree { query } => self.on_tree_direct(from, mid, query),
            },
            Message::PublishAck(PublishAck { mid, pub_id, seq }) => {
                self.publish_answered(mid, pub_id, Ok(seq))
            }
            Message::PublishReject(PublishReject {
                mid,
                pub_id,
                reason,
            }) => self.publish_answered(mid, pub_id, Err(reason)),
            Message::Data(d) => self.on_data(from, d),
            Message::Depart => self.peer_lost(from.id),
            Message::TreeQuery(TreeQuery {
                mid,
                query,
                reply_to,
            }) => self.on_tree_query(from, mid, query, reply_to),
            Message::Collect(Collect {
                mid,
                query,
                budget_ms,
            }) => self.on_collect(from, mid, query, budget_ms),
            Message::Collected(c) => self.queries.on_collected(&mut ctx!(self), from, c),
            Message::TreeReply(reply) => self.queries.on_reply(&mut ctx!(self), reply),
            Message::Heartbeat(Heartbeat {
                up,
                down,
                replica,
                coord,
            }) => {
                self.learn_coord(from.id, &coord);
                self.on_heartbeat(from, up, down, replica, coord)
            }
            Message::Fetch(fetch) => self.on_fetch(from, fetch),
            Message::Fetched { request, data } => self.on_fetched(from, request, data),
            Message::Lost(Lost {
                mid,
                request,
                from: first,
                to,
            }) => self.on_lost(mid, request, first, to),
            sync @ Message::ReplicaSync(ReplicaSync { .. }) => self.on_replica_sync(from, sync),
            Message::Replicate(d) => self.on_replicate(from, d),
            Message::ReplicaAck(ReplicaAck { mid, epoch, seq }) => {
                self.on_replica_ack(from, mid, epoch, seq)
            }
            Message::NotRoot(n) => self.on_not_root(n),
            Message::Proof(proof) => self.on_proof(proof),
            Message::Lineage(lineage) => self.on_lineage(lineage),
        }
    }

    fn on_peer_up(&mut self, peer: NodeInfo) {
        self.overlay.on_peer_up(peer);
    }

    fn on_peer_down(&mut self, peer: NodeId) {
        self.overlay.on_peer_down(peer);
        self.proximity.forget(peer);
        self.connection_lost(peer);
    }

    pub(crate) fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Bootstrap => self.overlay.on_bootstrap_timer(&mut ctx!(self)),
            Timer::Maintenance => {
                let coord = self.proximity.coord;
                self.overlay
                    .on_maintenance(&mut ctx!(self), &mut self.rng, coord)
            }
            Timer::JoinRetry(mid) => self.on_join_retry(mid),
            Timer::PublishSweep => self.sweep_publishes(),
            Timer::CollectTimeout(id) => self.queries.on_collect_timeout(&mut ctx!(self), id),
            Timer::Heartbeat => self.on_heartbeat_timer(),
            Timer::Repair(mid) => self.on_repair_timer(mid),
            Timer::Replay(request) => self.on_replay_timer(request),
            Timer::ProofWait(mid) => self.on_proof_wait(mid),
            Timer::Optimize(mid) => self.on_optimize_timer(mid),
            Timer::Stall(mid) => self.on_stall_timer(mid),
            Timer::Lan => self.on_lan_timer(),
            Timer::QueryTimeout(id) => {
                // The next query goes hop by hop: the root we knew may be
                // gone.
                if let Some(mid) = self.queries.on_query_timeout(&mut ctx!(self), id) {
                    self.roots.forget(mid);
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Bootstrap { addrs } => {
                self.overlay
                    .bootstrap(&mut ctx!(self), &mut self.rng, addrs)
            }
            Command::CreateGroup { request } => {
                // Created groups count against max_groups like joined ones:
                // each holds a root's retention.
                if self.own_groups() >= self.cfg.max_groups {
                    let reason = crate::message::RejectReason::TooManyGroups;
                    self.emit(Event::CreateFailed { request, reason });
                    return;
                }
                let mid = self.create_group();
                self.emit(Event::GroupCreated { request, mid });
            }
            Command::Join { mid } => self.join(mid),
            Command::Leave { mid } => self.leave(mid),
            Command::Publish {
                request,
                mid,
                payload,
            } => self.publish(request, mid, payload),
            Command::QueryTree { request, mid } => self.query_tree(request, mid),
            Command::Replay {
                request,
                mid,
                from,
                to,
            } => self.replay(request, mid, from, to),
            Command::Resume { mid, next, key } => self.resume(mid, next, key),
            Command::LanUp { session } => self.lan_up(session),
            Command::Shutdown => self.shutdown(),
        }
    }

    fn shutdown(&mut self) {
        let mut told = std::collections::HashSet::new();
        let groups = std::mem::take(&mut self.groups);
        let replicas = std::mem::take(&mut self.replicas.held);
        let neighbours = groups
            .values()
            .flat_map(|g| {
                g.parent
                    .into_iter()
                    .chain(g.children.values().map(|c| c.info))
                    .chain(
                        g.root
                            .iter()
                            .flat_map(|r| r.replicas.iter().map(|x| x.info)),
                    )
            })
            .chain(replicas.values().map(|r| r.root))
            .chain(self.overlay.table.leaves().iter().copied())
            .collect::<Vec<_>>();
        for n in neighbours {
            if told.insert(n.id) {
                self.send(n, Message::Depart);
            }
        }
        self.overlay.leave();
    }

    /// Removes a node from the routing state (see [`Overlay::forget`]),
    /// and stops the heartbeat if nothing is left to watch.
    pub(crate) fn forget(&mut self, peer: NodeId) {
        let coord = self.proximity.coord;
        let removed = self
            .overlay
            .forget(&mut ctx!(self), &mut self.rng, coord, peer);
        if removed && self.is_joined() {
            self.keep_heartbeat();
        }
    }

    // The node's own handlers send, tell and arm through the same
    // context its parts get.
    pub(crate) fn send(&mut self, to: NodeInfo, msg: Message) {
        ctx!(self).send(to, msg);
    }

    pub(crate) fn emit(&mut self, event: Event) {
        ctx!(self).emit(event);
    }

    /// Arms `timer` to fire `after` from now, in place of any deadline it
    /// had.
    pub(crate) fn set_timer(&mut self, after: std::time::Duration, timer: Timer) {
        ctx!(self).set_timer(after, timer);
    }
}
