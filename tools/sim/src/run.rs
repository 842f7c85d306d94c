//! Runs a scenario on the simulated network and measures what it built.
//!
//! The phases, in virtual time:
//!
//! 1. **Overlay.** Nodes are placed in the topology and enter the overlay
//!    one after another (`arrival_rate` per second), each through the
//!    nearest of a few random running nodes, then the tables settle.
//! 2. **Groups.** Each group is created at a random node, and its members
//!    (Scribe's size distribution) join at `join_rate` per second. Join hops
//!    and join latency are taken from every join.
//! 3. **Measurements at rest.** Routing (random keys from random nodes,
//!    followed through the real routing tables), the trees (depth,
//!    children, forwarders, stretch against direct unicast), control
//!    traffic per node and second over the end of the settle (the quiet
//!    window, `steady_secs`), and link stress of one
//!    message per group, published at the root, against IP multicast's
//!    shortest-path tree.
//! 4. **Churn.** A share of the nodes crashes, silently, at random times;
//!    as many new nodes arrive and join the groups of the ones they
//!    replace, while members publish. Every acknowledged message must reach
//!    every live member, exactly once and in order; repair time is the time
//!    from a crash until every child of the crashed node is attached again.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::engine::Sim;
use bytes::Bytes;
use overlay_proto::id::distance;
use overlay_proto::{Command, Event, Mid, NodeId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::net::{Net, StressCount};
use crate::plot::TreeDrawing;
use crate::reference::{self, Builder};
use crate::report::{
    Churn, Delivery, Dist, References, Report, Routing, SlackReference, Stress, Trees,
};
use crate::scenario::{Model, Scenario};
use crate::topology::Topology;

/// Virtual time between two looks at the simulation.
const STEP: Duration = Duration::from_millis(10);

/// One member's stream of one group, as delivered to it.
#[derive(Debug, Clone, Copy)]
struct Track {
    /// The first sequence number the member was to get (its join's `next`).
    start: u64,
    /// The next sequence number expected.
    next: u64,
    duplicates: u64,
    gaps: u64,
}

/// A crash whose repair is being timed: the crashed node's children that
/// are not attached again yet.
#[derive(Debug)]
struct Watch {
    at: Duration,
    dead: NodeId,
    pending: Vec<(usize, Mid)>,
}

/// The state of a run.
pub struct Driver {
    scn: Scenario,
    sim: Sim<Net>,
    rng: StdRng,
    live: Vec<usize>,
    /// Position of each node in `live`, if running.
    live_at: Vec<Option<usize>>,
    /// Each group's mid (once created) and root.
    groups: Vec<(Option<Mid>, usize)>,
    group_of: HashMap<Mid, usize>,
    /// Nodes told to join each group, and still running.
    members: Vec<Vec<usize>>,
    /// Groups each node was told to join.
    memberships: HashMap<usize, Vec<usize>>,
    /// Joins to issue once a new node is in the overlay.
    after_overlay: HashMap<usize, Vec<usize>>,
    join_started: HashMap<(usize, usize), Duration>,
    join_latency_ms: Vec<f64>,
    join_hops: Vec<f64>,
    join_failures: u64,
    tracks: HashMap<(usize, usize), Track>,
    /// Highest acknowledged sequence number per group.
    accepted: Vec<Option<u64>>,
    acknowledged: u64,
    publish_failures: u64,
    lost_reports: u64,
    next_request: u64,
    watches: Vec<Watch>,
    repair_ms: Vec<f64>,
    /// The slowest repair so far: ms, crashed node, crash time, and the
    /// child (with its group) attached again last.
    slowest_repair: Option<(f64, usize, Duration, usize, Mid)>,
    unrepaired: u64,
    rebootstraps: u64,
    /// Messages per running node and second over the end of the settle.
    control_per_node_s: f64,
    progress: bool,
    wall: Instant,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("nodes", &self.sim.len())
            .field("elapsed", &self.sim.elapsed())
            .finish_non_exhaustive()
    }
}

/// How a run shows what it does. Nothing here changes its figures.
#[derive(Debug, Default)]
pub struct Observe {
    /// Say on stderr what the run is doing.
    pub progress: bool,
    /// Nodes (by index, in the order they were added) whose inputs are
    /// handled under this dispatcher, so that their logs can be read at
    /// full speed for the rest (see [`Sim::trace`]).
    pub trace: Option<(Vec<usize>, tracing::Dispatch)>,
}

/// Runs `scn` and measures it.
pub fn run(scn: &Scenario, observe: Observe) -> anyhow::Result<Report> {
    scn.validate()?;
    let mut d = Driver::new(scn.clone(), observe.progress);
    if let Some((nodes, dispatch)) = observe.trace {
        d.sim.trace(nodes, dispatch);
    }
    d.build_overlay();
    d.build_groups();
    let mut report = Report::new(scn, d.sim.network().topo.describe());
    report.routing = d.measure_routing();
    report.trees = d.measure_trees();
    report.control_per_node_s = d.control_per_node_s;
    report.stress = d.measure_stress();
    report.reference = d.reference();
    report.join = d.join_stats();
    report.delivery_at_rest = d.delivery();
    if scn.churn > 0.0 {
        report.churn = Some(d.churn());
        report.routing_after_churn = Some(d.measure_routing());
        report.trees_after_churn = Some(d.measure_trees());
    }
    let owned = |counts: BTreeMap<&str, u64>| {
        counts
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    };
    report.messages_by_kind = owned(d.sim.by_kind());
    report.inputs_by_kind = owned(d.sim.inputs_by_kind());
    let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..d.sim.len() {
        for (kind, n) in d.sim.node(i).dropped().iter() {
            *dropped.entry(kind.to_string()).or_default() += n;
        }
    }
    report.dropped_by_kind = dropped;
    report.virtual_secs = d.sim.elapsed().as_secs_f64();
    report.sim_inputs = d.sim.inputs();
    report.wall_secs = d.wall.elapsed().as_secs_f64();
    Ok(report)
}

impl Driver {
    fn new(scn: Scenario, progress: bool) -> Self {
        let mut rng = StdRng::seed_from_u64(scn.seed);
        let topo = match scn.model {
            Model::TransitStub => Topology::transit_stub(&scn.transit_stub, &mut rng),
            Model::Euclidean => Topology::euclidean(scn.euclidean_side_ms),
        };
        let mut sim = Sim::with_parts(rng.random(), scn.config(), Net::new(topo), scn.parts);
        sim.codec = scn.codec;
        Driver {
            groups: Vec::new(),
            group_of: HashMap::new(),
            members: vec![Vec::new(); scn.groups],
            memberships: HashMap::new(),
            after_overlay: HashMap::new(),
            join_started: HashMap::new(),
            join_latency_ms: Vec::new(),
            join_hops: Vec::new(),
            join_failures: 0,
            tracks: HashMap::new(),
            accepted: vec![None; scn.groups],
            acknowledged: 0,
            publish_failures: 0,
            lost_reports: 0,
            next_request: 1,
            watches: Vec::new(),
            repair_ms: Vec::new(),
            slowest_repair: None,
            unrepaired: 0,
            rebootstraps: 0,
            control_per_node_s: 0.0,
            live: Vec::new(),
            live_at: Vec::new(),
            scn,
            sim,
            rng,
            progress,
            wall: Instant::now(),
        }
    }

    fn say(&self, what: &str) {
        if self.progress {
            eprintln!(
                "[{:>6.1}s wall, {:>6.1}s virtual, {:>5.1}M inputs] {what}",
                self.wall.elapsed().as_secs_f64(),
                self.sim.elapsed().as_secs_f64(),
                self.sim.inputs() as f64 / 1e6
            );
        }
    }

    fn now(&self) -> Duration {
        self.sim.elapsed()
    }

    /// Places a new node and starts it, bootstrapping from the nearest of
    /// a few random running nodes.
    fn add_node(&mut self) -> usize {
        let i = self.sim.network_mut().topo.attach(&mut self.rng);
        debug_assert_eq!(i, self.sim.len());
        let bootstrap = self.bootstrap_for(i);
        let j = self.sim.add_node(&bootstrap);
        debug_assert_eq!(i, j);
        let id = self.sim.node(j).me().id;
        self.sim.network_mut().ids.push(id);
        self.live_at.push(Some(self.live.len()));
        self.live.push(j);
        j
    }

    /// The nearest of a few random running nodes other than `i` (none
    /// for the first node).
    fn bootstrap_for(&mut self, i: usize) -> Vec<usize> {
        if self.live.is_empty() {
            return Vec::new();
        }
        (0..self.scn.bootstrap_sample)
            .map(|_| self.live[self.rng.random_range(0..self.live.len())])
            .filter(|&b| b != i)
            .min_by_key(|&b| self.sim.network().topo.delay_us(i, b))
            .into_iter()
            .collect()
    }

    fn crash(&mut self, i: usize) {
        let Some(at) = self.live_at[i].take() else {
            return;
        };
        self.live.swap_remove(at);
        if let Some(&moved) = self.live.get(at) {
            self.live_at[moved] = Some(at);
        }
        // Time the repair of the trees the node was a parent in.
        let pending: Vec<(usize, Mid)> = self
            .sim
            .node(i)
            .groups()
            .into_iter()
            .flat_map(|g| {
                g.children
                    .into_iter()
                    .map(move |c| (c.id, g.mid))
                    .collect::<Vec<_>>()
            })
            .filter_map(|(id, mid)| self.sim.index_of(id).map(|c| (c, mid)))
            .filter(|&(c, _)| self.live_at[c].is_some())
            .collect();
        if !pending.is_empty() {
            self.watches.push(Watch {
                at: self.now(),
                dead: self.sim.node(i).me().id,
                pending,
            });
        }
        self.sim.crash(i);
    }

    fn alive(&self, i: usize) -> bool {
        self.live_at[i].is_some()
    }

    /// Runs for `d` of virtual time, handling events as they come.
    fn advance(&mut self, d: Duration) {
        let until = self.now() + d;
        while self.now() < until {
            let step = STEP.min(until - self.now());
            self.sim.run_for(step);
            self.handle_events();
        }
    }

    fn handle_events(&mut self) {
        let now = self.now();
        for (i, e) in self.sim.take_events() {
            match e {
                Event::OverlayJoined { .. } => {
                    if let Some(groups) = self.after_overlay.remove(&i) {
                        for g in groups {
                            self.join(i, g);
                        }
                    }
                }
                Event::GroupCreated { request, mid } => {
                    let g = request as usize;
                    self.groups[g].0 = Some(mid);
                    self.group_of.insert(mid, g);
                }
                Event::Joined { mid, next, .. } => {
                    let Some(&g) = self.group_of.get(&mid) else {
                        continue;
                    };
                    if let Some(t0) = self.join_started.remove(&(i, g)) {
                        self.join_latency_ms.push((now - t0).as_secs_f64() * 1000.0);
                        let id = self.sim.node(i).me().id;
                        if let Some(h) = self.sim.network_mut().take_join_hops(mid, id) {
                            self.join_hops.push(h as f64);
                        } else {
                            // Already on the tree (a forwarder, or the root).
                            self.join_hops.push(0.0);
                        }
                    }
                    self.tracks.entry((i, g)).or_insert(Track {
                        start: next,
                        next,
                        duplicates: 0,
                        gaps: 0,
                    });
                }
                Event::JoinFailed { .. } => self.join_failures += 1,
                Event::BootstrapFailed { .. } if self.alive(i) => {
                    // Its bootstrap node crashed before it answered. An
                    // operator would start it again with another address.
                    let addrs: Vec<_> = self
                        .bootstrap_for(i)
                        .into_iter()
                        .map(|b| self.sim.node(b).me().addr)
                        .collect();
                    if !addrs.is_empty() {
                        self.rebootstraps += 1;
                        self.sim.command(i, Command::Bootstrap { addrs });
                    }
                }
                Event::Delivered { mid, seq, .. } => {
                    let Some(&g) = self.group_of.get(&mid) else {
                        continue;
                    };
                    if let Some(t) = self.tracks.get_mut(&(i, g)) {
                        if seq < t.next {
                            t.duplicates += 1;
                        } else {
                            if seq > t.next {
                                t.gaps += 1;
                            }
                            t.next = seq + 1;
                        }
                    }
                }
                Event::Lost { .. } => self.lost_reports += 1,
                Event::PublishAccepted { mid, seq, .. } => {
                    if let Some(&g) = self.group_of.get(&mid) {
                        self.accepted[g] = Some(self.accepted[g].map_or(seq, |a| a.max(seq)));
                        self.acknowledged += 1;
                    }
                }
                Event::PublishFailed { .. } => self.publish_failures += 1,
                _ => {}
            }
        }
    }

    fn join(&mut self, i: usize, g: usize) {
        let Some(mid) = self.groups[g].0 else {
            return;
        };
        self.join_started.insert((i, g), self.now());
        self.members[g].push(i);
        self.memberships.entry(i).or_default().push(g);
        self.sim.command(i, Command::Join { mid });
    }

    fn publish(&mut self, i: usize, g: usize, payload: Bytes) {
        let Some(mid) = self.groups[g].0 else {
            return;
        };
        let request = self.next_request;
        self.next_request += 1;
        self.sim.command(
            i,
            Command::Publish {
                request,
                mid,
                payload,
            },
        );
    }

    fn build_overlay(&mut self) {
        self.say(&format!("building an overlay of {} nodes", self.scn.nodes));
        let per_step = self.scn.arrival_rate * STEP.as_secs_f64();
        let mut due = 0.0;
        while self.sim.len() < self.scn.nodes {
            due += per_step;
            while due >= 1.0 && self.sim.len() < self.scn.nodes {
                self.add_node();
                due -= 1.0;
            }
            self.advance(STEP);
            if self.progress && self.sim.len() % 10_000 == 0 && due < 1.0 {
                self.say(&format!("{} nodes", self.sim.len()));
            }
        }
        self.advance(Duration::from_secs(5));
    }

    fn build_groups(&mut self) {
        let sizes = self.scn.group_sizes();
        self.say(&format!(
            "creating {} groups, {} joins",
            sizes.len(),
            sizes.iter().sum::<usize>()
        ));
        for g in 0..sizes.len() {
            let root = self.live[self.rng.random_range(0..self.live.len())];
            self.groups.push((None, root));
            self.sim
                .command(root, Command::CreateGroup { request: g as u64 });
        }
        self.handle_events();
        let mut joins: Vec<(usize, usize)> = Vec::new();
        for (g, &size) in sizes.iter().enumerate() {
            let mut pick: Vec<usize> = self.live.clone();
            let (chosen, _) = pick.partial_shuffle(&mut self.rng, size);
            joins.extend(chosen.iter().map(|&n| (n, g)));
        }
        joins.shuffle(&mut self.rng);
        let per_step = self.scn.join_rate * STEP.as_secs_f64();
        let mut due = 0.0;
        let mut joins = joins.into_iter().peekable();
        while joins.peek().is_some() {
            due += per_step;
            while due >= 1.0 {
                let Some((n, g)) = joins.next() else { break };
                self.join(n, g);
                due -= 1.0;
            }
            self.advance(STEP);
        }
        // Let the last joins finish, then the trees settle.
        let deadline = self.now() + Duration::from_secs(30);
        while !self.join_started.is_empty() && self.now() < deadline {
            self.advance(Duration::from_millis(100));
        }
        self.say(&format!("settling for {} s", self.scn.settle_secs));
        let settle = self.scn.settle_secs.max(2.0);
        let quiet = self.scn.steady_secs.clamp(0.1, settle);
        self.advance(Duration::from_secs_f64(settle - quiet));
        // Control traffic at rest: over the settle's last seconds.
        let before = self.sim.messages();
        self.advance(Duration::from_secs_f64(quiet));
        self.control_per_node_s =
            (self.sim.messages() - before) as f64 / self.live.len().max(1) as f64 / quiet;
        self.say(&format!(
            "groups built; {} joins not acknowledged",
            self.join_started.len()
        ));
    }

    /// Follows random keys through the routing tables from random nodes.
    fn measure_routing(&mut self) -> Routing {
        self.say("measuring routing");
        let overlay: Vec<usize> = self
            .live
            .iter()
            .copied()
            .filter(|&i| self.sim.node(i).is_joined())
            .collect();
        let mut sorted: Vec<u128> = overlay
            .iter()
            .map(|&i| self.sim.node(i).me().id.0)
            .collect();
        sorted.sort_unstable();
        let mut hops = Vec::new();
        let mut rdp = Vec::new();
        let mut wrong = 0u64;
        let mut stale = 0u64;
        for _ in 0..self.scn.route_samples {
            let key: u128 = self.rng.random();
            let from = overlay[self.rng.random_range(0..overlay.len())];
            let mut at = from;
            let mut n = 0u32;
            let mut delay = 0u64;
            let mut skip: Vec<NodeId> = Vec::new();
            while let Some(next) = self.sim.node(at).routing().next_hop(key, &skip) {
                let Some(j) = self.sim.index_of(next.id) else {
                    break;
                };
                if !self.alive(j) {
                    // The node would find the entry dead and route around.
                    stale += 1;
                    skip.push(next.id);
                    continue;
                }
                delay += self.sim.network().topo.delay_us(at, j) as u64;
                at = j;
                n += 1;
                if n > 64 {
                    break;
                }
            }
            let want = closest(&sorted, key);
            if self.sim.node(at).me().id.0 != want {
                wrong += 1;
            }
            hops.push(n as f64);
            let direct = self.sim.network().topo.delay_us(from, at) as f64;
            if at != from && direct > 0.0 {
                rdp.push(delay as f64 / direct);
            }
        }
        let mut sizes: Vec<f64> = overlay
            .iter()
            .map(|&i| self.sim.node(i).routing().len() as f64)
            .collect();
        let mut coord_error: Vec<f64> = (0..self.scn.route_samples)
            .filter_map(|_| {
                let a = overlay[self.rng.random_range(0..overlay.len())];
                let b = overlay[self.rng.random_range(0..overlay.len())];
                let real = 2.0 * self.sim.network().topo.delay_us(a, b) as f64 / 1000.0;
                let (ca, cb) = (self.sim.node(a).coord(), self.sim.node(b).coord());
                (a != b && real > 0.0).then(|| (ca.rtt_ms(&cb) - real).abs() / real)
            })
            .collect();
        Routing {
            coord_error: Dist::of(&mut coord_error),
            samples: self.scn.route_samples,
            hops: Dist::of(&mut hops),
            stretch: Dist::of(&mut rdp),
            wrong_destination: wrong,
            entering: self.live.len() - overlay.len(),
            stale_entries_met: stale,
            table_size: Dist::of(&mut sizes),
        }
    }

    /// The trees as the nodes' own state says they are, checked for
    /// consistency.
    fn measure_trees(&mut self) -> Trees {
        self.say("measuring trees");
        let max_children = self.scn.max_children;
        let mut t = Trees::default();
        let mut depth = Vec::new();
        let mut stretch = Vec::new();
        let mut children_counts = Vec::new();
        let mut per_group: Vec<HashMap<usize, overlay_proto::GroupView>> =
            vec![HashMap::new(); self.groups.len()];
        for &i in &self.live {
            let node = self.sim.node(i);
            for mid in node.group_ids() {
                if let (Some(&g), Some(v)) = (self.group_of.get(&mid), node.group(mid)) {
                    per_group[g].insert(i, v);
                }
            }
        }
        let topo = &self.sim.network().topo;
        for (g, views) in per_group.iter().enumerate() {
            let roots: Vec<usize> = views
                .iter()
                .filter(|(_, v)| v.root)
                .map(|(&i, _)| i)
                .collect();
            if roots.len() != 1 {
                t.violations
                    .push(format!("group {g}: {} live roots", roots.len()));
                continue;
            }
            let root = roots[0];
            for v in views.values() {
                if v.children.len() > max_children {
                    t.violations.push(format!(
                        "group {g}: a node has {} children (bound {max_children})",
                        v.children.len()
                    ));
                }
                if !v.children.is_empty() {
                    children_counts.push(v.children.len() as f64);
                    if !v.member {
                        t.nonmember_forwarders += 1;
                    }
                    t.forwarding_nodes += 1;
                }
                if !v.member && !v.root {
                    t.nonmember_tree_nodes += 1;
                }
                t.tree_nodes += 1;
            }
            // Every member: a path of consistent links up to the root.
            for &m in &self.members[g] {
                if !self.alive(m) {
                    continue;
                }
                t.members += 1;
                let mut at = m;
                let mut hops = 0usize;
                let mut delay = 0u64;
                // Where the way up breaks, if it does.
                let broken = loop {
                    if at == root {
                        break None;
                    }
                    let Some(v) = views.get(&at) else {
                        break Some(format!("node {at} has no state for the group"));
                    };
                    if !v.attached {
                        break Some(format!("node {at} is not attached"));
                    }
                    let Some(p) = v.parent.and_then(|p| self.sim.index_of(p.id)) else {
                        break Some(format!("node {at} has no parent"));
                    };
                    let lists_us = views.get(&p).is_some_and(|pv| {
                        pv.children
                            .iter()
                            .any(|c| c.id == self.sim.node(at).me().id)
                    });
                    if !lists_us {
                        break Some(format!("node {at}'s parent {p} does not list it"));
                    }
                    if hops > views.len() {
                        break Some(format!("a cycle through node {at}"));
                    }
                    delay += topo.delay_us(p, at) as u64;
                    hops += 1;
                    at = p;
                };
                if let Some(why) = broken {
                    t.unattached_members += 1;
                    if t.violations.len() < 20 {
                        t.violations.push(format!(
                            "group {g}: member {m} has no consistent path to the root: {why}"
                        ));
                    }
                    continue;
                }
                depth.push(hops as f64);
                let direct = topo.delay_us(root, m) as f64;
                if m != root && direct > 0.0 {
                    stretch.push(delay as f64 / direct);
                }
            }
        }
        if t.unattached_members > 0 {
            t.violations.push(format!(
                "{} members without a consistent path to their root",
                t.unattached_members
            ));
        }
        t.depth = Dist::of(&mut depth);
        t.stretch = Dist::of(&mut stretch);
        t.children = Dist::of(&mut children_counts);
        t.max_children_bound = max_children;
        t.stretch_samples = stretch;
        t.children_samples = children_counts;
        let sizes: Vec<usize> = self
            .members
            .iter()
            .map(|m| m.iter().filter(|&&i| self.alive(i)).count())
            .collect();
        t.drawing = TreeDrawing::pick(&sizes).and_then(|g| {
            TreeDrawing::from_views(
                g,
                &per_group[g],
                |id| self.sim.index_of(id),
                |a, b| topo.delay_us(a, b) as f64 / 1000.0,
            )
        });
        t
    }

    /// One message per group, published at its root; copies per physical
    /// link, against IP multicast from the same root to the same members.
    fn measure_stress(&mut self) -> Option<Stress> {
        let links = self.sim.network().topo.links()?;
        self.say("measuring link stress");
        self.sim.network_mut().stress = Some(StressCount {
            per_link: vec![0; links],
            per_group_link: HashMap::new(),
        });
        let answered = |d: &Self| d.acknowledged + d.publish_failures;
        let before = answered(self);
        let mut published = 0;
        for g in 0..self.groups.len() {
            let root = self.groups[g].1;
            if self.alive(root) {
                self.publish(root, g, Bytes::from_static(b"stress"));
                published += 1;
            }
        }
        // Until every publish is answered and every running member has its
        // group's message, for at most 3 s: the copies are all made by
        // then, and at 100,000 nodes a virtual second costs several
        // seconds of simulation.
        let deadline = self.now() + Duration::from_secs(3);
        while self.now() < deadline
            && (answered(self) < before + published || !self.all_delivered())
        {
            self.advance(Duration::from_millis(100));
        }
        let count = self.sim.network_mut().stress.take().unwrap_or_default();
        let alm = count.per_link;
        // Per group, IP multicast puts one copy on each link it uses.
        let mut per_group: Vec<f64> = count.per_group_link.values().map(|&c| c as f64).collect();
        let mut ip = vec![0u32; links];
        for g in 0..self.groups.len() {
            let root = self.groups[g].1;
            let members: Vec<usize> = self.members[g]
                .iter()
                .copied()
                .filter(|&m| self.alive(m))
                .collect();
            for l in self.sim.network().topo.ip_multicast_links(root, &members) {
                ip[l as usize] += 1;
            }
        }
        let used =
            |v: &[u32]| -> Vec<f64> { v.iter().filter(|&&c| c > 0).map(|&c| c as f64).collect() };
        let mut a = used(&alm);
        let mut b = used(&ip);
        let routers = self.sim.network().topo.router_links();
        Some(Stress {
            alm_total: alm.iter().map(|&c| c as u64).sum(),
            ip_total: ip.iter().map(|&c| c as u64).sum(),
            alm_access: alm[routers..].iter().map(|&c| c as u64).sum(),
            ip_access: ip[routers..].iter().map(|&c| c as u64).sum(),
            alm: Dist::of(&mut a),
            alm_per_group: Dist::of(&mut per_group),
            ip: Dist::of(&mut b),
            alm_samples: a,
            ip_samples: b,
        })
    }

    /// Whether every running member has every message its group's root
    /// accepted.
    fn all_delivered(&self) -> bool {
        (0..self.groups.len()).all(|g| {
            let Some(last) = self.accepted[g] else {
                return true;
            };
            self.members[g]
                .iter()
                .filter(|&&m| self.alive(m))
                .all(|&m| self.tracks.get(&(m, g)).is_some_and(|t| t.next > last))
        })
    }

    /// The same groups, with the same roots and running members, built
    /// centrally (see [`super::reference`]).
    fn reference(&self) -> Option<References> {
        self.say("building the reference trees");
        let groups: Vec<(usize, Vec<usize>)> = (0..self.groups.len())
            .filter(|&g| self.alive(self.groups[g].1))
            .map(|g| {
                let members = self.members[g]
                    .iter()
                    .copied()
                    .filter(|&m| self.alive(m))
                    .collect();
                (self.groups[g].1, members)
            })
            .collect();
        let groups = &groups;
        let topo = &self.sim.network().topo;
        let bound = self.scn.max_children;
        let slack_pct = self.scn.config().placement_slack_pct;
        // The builders are independent: one thread each.
        let budget = |join_order| Builder::NearestWithinBudget {
            slack_pct,
            join_order,
        };
        let [shortest_paths, nearest_parent, nearest_within_budget, within_budget_join_order] =
            std::thread::scope(|s| {
                [
                    Builder::ShortestPaths,
                    Builder::NearestParent,
                    budget(false),
                    budget(true),
                ]
                .map(|b| s.spawn(move || reference::measure(topo, groups, bound, b)))
                .map(|h| h.join().expect("a reference tree builder panicked"))
            });
        let slacks = self
            .scn
            .reference_slacks
            .iter()
            .map(|&slack_pct| {
                let b = Builder::NearestWithinBudget {
                    slack_pct,
                    join_order: false,
                };
                let trees = reference::measure(topo, groups, bound, b)?;
                Some(SlackReference { slack_pct, trees })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(References {
            shortest_paths: shortest_paths?,
            nearest_parent: nearest_parent?,
            nearest_within_budget: nearest_within_budget?,
            within_budget_join_order: within_budget_join_order?,
            slacks,
        })
    }

    fn join_stats(&mut self) -> crate::report::Joins {
        crate::report::Joins {
            joins: self.join_latency_ms.len(),
            failed: self.join_failures,
            unacknowledged: self.join_started.len(),
            hops: Dist::of(&mut self.join_hops.clone()),
            latency_ms: Dist::of(&mut self.join_latency_ms.clone()),
        }
    }

    /// Checks every acknowledged message against every running member.
    fn delivery(&self) -> Delivery {
        let mut d = Delivery {
            acknowledged: self.acknowledged,
            publish_failures: self.publish_failures,
            lost_reports: self.lost_reports,
            ..Default::default()
        };
        for (g, members) in self.members.iter().enumerate() {
            let Some(last) = self.accepted[g] else {
                continue;
            };
            for &m in members {
                if !self.alive(m) {
                    continue;
                }
                let Some(t) = self.tracks.get(&(m, g)) else {
                    d.members_never_attached += 1;
                    if d.never_attached.len() < 10 {
                        d.never_attached.push(self.describe_member(m, g));
                    }
                    continue;
                };
                if t.start > last {
                    continue;
                }
                let expected = last + 1 - t.start;
                let got = t.next.min(last + 1).saturating_sub(t.start);
                d.expected += expected;
                d.delivered += got;
                d.duplicates += t.duplicates;
                d.gaps += t.gaps;
            }
        }
        d
    }

    /// What node `m`, a member of group `g` that never attached, is doing.
    fn describe_member(&self, m: usize, g: usize) -> String {
        let node = self.sim.node(m);
        let state = match self.groups[g].0.and_then(|mid| node.group(mid)) {
            Some(v) => format!(
                "attached {}, parent {}, depth {}",
                v.attached,
                v.parent
                    .map_or_else(|| "none".to_string(), |p| p.id.short()),
                v.depth
            ),
            None => "no state for the group".to_string(),
        };
        format!(
            "node {m} ({}), group {g}: in the overlay {}, {state}",
            node.me().id.short(),
            node.is_joined()
        )
    }

    /// Crashes `churn` of the nodes at random times over `churn_secs`, with
    /// as many arrivals, while members publish; then lets the trees repair
    /// and checks delivery.
    fn churn(&mut self) -> Churn {
        let crashes = (self.scn.nodes as f64 * self.scn.churn).round() as usize;
        self.say(&format!(
            "churn: {crashes} crashes and arrivals over {} s",
            self.scn.churn_secs
        ));
        let acknowledged_before = self.acknowledged;
        let steps = (self.scn.churn_secs / STEP.as_secs_f64()).ceil().max(1.0) as usize;
        let publish_per_step = self.scn.churn_publish_rate * STEP.as_secs_f64();
        let mut publish_due = 0.0;
        let mut crashed = 0usize;
        for s in 0..steps {
            // Crashes spread evenly over the steps.
            while crashed < (s + 1) * crashes / steps {
                crashed += 1;
                let victim = self.live[self.rng.random_range(0..self.live.len())];
                let groups = self.memberships.remove(&victim).unwrap_or_default();
                for &g in &groups {
                    self.members[g].retain(|&m| m != victim);
                }
                self.crash(victim);
                let newcomer = self.add_node();
                self.after_overlay.insert(newcomer, groups);
            }
            publish_due += publish_per_step;
            while publish_due >= 1.0 {
                publish_due -= 1.0;
                let g = self.rng.random_range(0..self.groups.len());
                let live: Vec<usize> = self.members[g]
                    .iter()
                    .copied()
                    .filter(|&m| self.tracks.contains_key(&(m, g)))
                    .collect();
                if let Some(&p) = live.get(self.rng.random_range(0..live.len().max(1))) {
                    let payload = Bytes::from(format!("churn {s}"));
                    self.publish(p, g, payload);
                }
            }
            self.advance(STEP);
            if s % 5 == 0 {
                self.check_watches(false);
            }
        }
        // Publishes still under way are answered (or time out), and the
        // trees repair.
        let settle = Duration::from_secs(15);
        let until = self.now() + settle;
        while self.now() < until {
            self.advance(Duration::from_millis(50));
            self.check_watches(false);
        }
        self.check_watches(true);
        self.say("churn over");
        Churn {
            crashes: crashed,
            arrivals: crashed,
            acknowledged: self.acknowledged - acknowledged_before,
            delivery: self.delivery(),
            repair_ms: Dist::of(&mut self.repair_ms.clone()),
            unrepaired: self.unrepaired,
            slowest_repair: self.slowest_repair.map(|(ms, dead, at, c, mid)| {
                let g = self.group_of.get(&mid).copied();
                format!(
                    "{ms:.0} ms: node {dead} crashed at {:.2} s; the last child attached again was node {c}, group {}",
                    at.as_secs_f64(),
                    g.map_or_else(|| mid.to_string(), |g| g.to_string())
                )
            }),
            bootstraps_retried: self.rebootstraps,
        }
    }

    /// Drops the children that are attached again; a crash whose children
    /// all are is repaired.
    fn check_watches(&mut self, last: bool) {
        let now = self.now();
        let mut watches = std::mem::take(&mut self.watches);
        watches.retain_mut(|w| {
            let last_pending = w.pending.last().copied();
            w.pending.retain(|&(c, mid)| {
                if !self.alive(c) {
                    return false;
                }
                let Some(v) = self.sim.node(c).group(mid) else {
                    return false;
                };
                let parent_ok = v.root
                    || v.parent.is_some_and(|p| {
                        p.id != w.dead && self.sim.index_of(p.id).is_some_and(|i| self.alive(i))
                    });
                !(v.attached && parent_ok)
            });
            if w.pending.is_empty() {
                let ms = (now - w.at).as_secs_f64() * 1000.0;
                self.repair_ms.push(ms);
                if let Some((c, mid)) = last_pending {
                    if self.slowest_repair.is_none_or(|s| ms > s.0) {
                        let dead = self.sim.index_of(w.dead).unwrap_or(usize::MAX);
                        self.slowest_repair = Some((ms, dead, w.at, c, mid));
                    }
                }
                return false;
            }
            if last {
                self.unrepaired += 1;
            }
            !last
        });
        self.watches = watches;
    }
}

/// The id XOR-closest to `key` among the sorted `ids`: at each bit, from the
/// highest, keep the ids that agree with the key if any do.
fn closest(ids: &[u128], key: u128) -> u128 {
    let (mut lo, mut hi) = (0, ids.len());
    for bit in (0..128).rev() {
        if hi - lo <= 1 {
            break;
        }
        let mask = 1u128 << bit;
        let split = lo + ids[lo..hi].partition_point(|&x| x & mask == 0);
        if key & mask != 0 {
            if split < hi {
                lo = split;
            }
        } else if split > lo {
            hi = split;
        }
    }
    let c = ids[lo];
    debug_assert!(ids.iter().all(|&x| distance(x, key) >= distance(c, key)));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_is_the_xor_closest() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut ids: Vec<u128> = (0..500).map(|_| rng.random()).collect();
        ids.sort_unstable();
        for _ in 0..500 {
            let key: u128 = rng.random();
            let want = *ids.iter().min_by_key(|&&x| x ^ key).unwrap();
            assert_eq!(closest(&ids, key), want);
        }
    }
}
