//! The physical network under the overlay: where each node sits, the delay
//! between any two nodes, and which physical links a message between them
//! crosses.
//!
//! The headline model is a transit-stub graph in the manner of the Georgia
//! Tech topology generator (GT-ITM) that Pastry and Scribe were measured on:
//! a few *transit* domains (backbones) connected to each other, each transit
//! router serving several *stub* domains (campus or access networks), and
//! every overlay node attached to a random stub router by its own access
//! link. Inside every domain the routers form a random connected graph.
//! Messages follow the shortest-delay path, as IP routing would, so the
//! delay between two nodes and the links a message crosses both come from
//! one all-pairs shortest-path computation over the routers.
//!
//! The Euclidean model places nodes at random in a square and takes the
//! distance as the delay. It has no links, so link stress is not measured
//! on it.

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Sizes and delays of a transit-stub topology. The defaults give the 5,050
/// routers of the topology Pastry and Scribe were evaluated on: 10 transit
/// domains of 5 routers, each transit router with 10 stub domains of 10
/// routers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TransitStub {
    /// Transit domains.
    pub transit_domains: usize,
    /// Routers per transit domain.
    pub transit_routers: usize,
    /// Stub domains per transit router.
    pub stubs_per_transit: usize,
    /// Routers per stub domain.
    pub stub_routers: usize,
    /// Probability of an extra edge between two routers of one domain
    /// (beyond a random spanning tree, which keeps the domain connected).
    pub edge_probability: f64,
    /// One-way delay range of links between transit domains, in ms.
    pub inter_transit_ms: (f64, f64),
    /// Delay range of links inside a transit domain, in ms.
    pub intra_transit_ms: (f64, f64),
    /// Delay range of the link from a stub domain to its transit router.
    pub stub_transit_ms: (f64, f64),
    /// Delay range of links inside a stub domain.
    pub intra_stub_ms: (f64, f64),
    /// Delay range of a node's access link to its stub router.
    pub access_ms: (f64, f64),
}

impl Default for TransitStub {
    fn default() -> Self {
        TransitStub {
            transit_domains: 10,
            transit_routers: 5,
            stubs_per_transit: 10,
            stub_routers: 10,
            edge_probability: 0.3,
            inter_transit_ms: (20.0, 60.0),
            intra_transit_ms: (5.0, 15.0),
            stub_transit_ms: (2.0, 8.0),
            intra_stub_ms: (1.0, 4.0),
            access_ms: (0.5, 2.0),
        }
    }
}

/// A link's index: router links first, then each node's access link.
pub type LinkId = u32;

const NONE: u32 = u32::MAX;

/// Routers, their links, and all shortest paths between them.
#[derive(Debug)]
struct Routers {
    count: usize,
    /// Which routers are stub routers (nodes attach only to those).
    stubs: Vec<u32>,
    links: usize,
    /// `dist[a * count + b]`: shortest delay from router `a` to `b`, in µs.
    dist: Vec<u32>,
    /// `via[a * count + b]`: the link into `b` on the shortest path from
    /// `a` (none for `a` itself).
    via: Vec<u32>,
    /// Each link's two ends.
    ends: Vec<(u32, u32)>,
}

/// Where the nodes are.
#[derive(Debug)]
enum Placement {
    TransitStub {
        routers: Routers,
        /// Each node's router and access delay (µs).
        hosts: Vec<(u32, u32)>,
        access: (f64, f64),
    },
    Euclidean {
        /// Each node's position; a unit of distance is 1 µs.
        points: Vec<(f64, f64)>,
        side_us: f64,
    },
}

/// The physical network and the place of every node in it.
#[derive(Debug)]
pub struct Topology {
    placement: Placement,
}

impl Topology {
    /// A transit-stub network with no node attached yet.
    pub fn transit_stub(p: &TransitStub, rng: &mut StdRng) -> Self {
        let routers = Routers::generate(p, rng);
        Topology {
            placement: Placement::TransitStub {
                routers,
                hosts: Vec::new(),
                access: p.access_ms,
            },
        }
    }

    /// A square of side `side_ms` of delay, with no node placed yet.
    pub fn euclidean(side_ms: f64) -> Self {
        Topology {
            placement: Placement::Euclidean {
                points: Vec::new(),
                side_us: side_ms * 1000.0,
            },
        }
    }

    /// Places the next node (its index is the number placed so far).
    pub fn attach(&mut self, rng: &mut StdRng) -> usize {
        match &mut self.placement {
            Placement::TransitStub {
                routers,
                hosts,
                access,
            } => {
                let r = routers.stubs[rng.random_range(0..routers.stubs.len())];
                let a = uniform_us(rng, *access);
                hosts.push((r, a));
                hosts.len() - 1
            }
            Placement::Euclidean { points, side_us } => {
                points.push((
                    rng.random::<f64>() * *side_us,
                    rng.random::<f64>() * *side_us,
                ));
                points.len() - 1
            }
        }
    }

    /// Number of routers (0 for the Euclidean model).
    pub fn routers(&self) -> usize {
        match &self.placement {
            Placement::TransitStub { routers, .. } => routers.count,
            Placement::Euclidean { .. } => 0,
        }
    }

    /// Number of physical links a message can cross: router links and
    /// access links. `None` for the Euclidean model, which has no links.
    pub fn links(&self) -> Option<usize> {
        match &self.placement {
            Placement::TransitStub { routers, hosts, .. } => Some(routers.links + hosts.len()),
            Placement::Euclidean { .. } => None,
        }
    }

    /// Number of router links; the links numbered from here on are the
    /// nodes' access links.
    pub fn router_links(&self) -> usize {
        match &self.placement {
            Placement::TransitStub { routers, .. } => routers.links,
            Placement::Euclidean { .. } => 0,
        }
    }

    /// One-way delay from node `a` to node `b`, in µs.
    pub fn delay_us(&self, a: usize, b: usize) -> u32 {
        if a == b {
            return 0;
        }
        match &self.placement {
            Placement::TransitStub { hosts, .. } => {
                let (ra, da) = hosts[a];
                let (rb, db) = hosts[b];
                da + self.router_delay_us(ra, rb) + db
            }
            Placement::Euclidean { points, .. } => {
                let (xa, ya) = points[a];
                let (xb, yb) = points[b];
                ((xa - xb).hypot(ya - yb)).max(EUCLIDEAN_MIN_US as f64) as u32
            }
        }
    }

    /// Node `i`'s router and the delay of its access link in µs
    /// (transit-stub only).
    pub fn host(&self, i: usize) -> Option<(u32, u32)> {
        match &self.placement {
            Placement::TransitStub { hosts, .. } => Some(hosts[i]),
            Placement::Euclidean { .. } => None,
        }
    }

    /// The delay between two routers in µs (transit-stub only: 0 for the
    /// Euclidean model). Symmetric: links have one delay both ways. With
    /// `a` fixed, the lookups stay in one row of the matrix.
    pub fn router_delay_us(&self, a: u32, b: u32) -> u32 {
        match &self.placement {
            Placement::TransitStub { routers, .. } => {
                routers.dist[a as usize * routers.count + b as usize]
            }
            Placement::Euclidean { .. } => 0,
        }
    }

    /// The least one-way delay between two different nodes, in µs: two
    /// access links at their shortest (transit-stub), or the floor of the
    /// Euclidean model. The simulation runs in windows of this length.
    pub fn min_delay_us(&self) -> u32 {
        match &self.placement {
            Placement::TransitStub { access, .. } => 2 * ms_to_us(access.0),
            Placement::Euclidean { .. } => EUCLIDEAN_MIN_US,
        }
    }

    /// Calls `f` with every physical link on the path from node `a` to node
    /// `b` (nothing for the Euclidean model).
    pub fn for_each_link(&self, a: usize, b: usize, mut f: impl FnMut(LinkId)) {
        let Placement::TransitStub { routers, .. } = &self.placement else {
            return;
        };
        if a == b {
            return;
        }
        let (ra, rb) = (self.router_of(a), self.router_of(b));
        f((routers.links + a) as LinkId);
        routers.path(ra, rb, &mut f);
        f((routers.links + b) as LinkId);
    }

    /// The links of IP multicast's shortest-path tree from `source` to
    /// `members`: every link on a shortest path from the source to a member,
    /// once.
    pub fn ip_multicast_links(&self, source: usize, members: &[usize]) -> Vec<LinkId> {
        let mut seen = std::collections::HashSet::new();
        for &m in members {
            self.for_each_link(source, m, |l| {
                seen.insert(l);
            });
        }
        let mut v: Vec<LinkId> = seen.into_iter().collect();
        v.sort_unstable();
        v
    }

    fn router_of(&self, node: usize) -> u32 {
        match &self.placement {
            Placement::TransitStub { hosts, .. } => hosts[node].0,
            Placement::Euclidean { .. } => 0,
        }
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match &self.placement {
            Placement::TransitStub { routers, .. } => format!(
                "transit-stub, {} routers ({} stub), {} router links",
                routers.count,
                routers.stubs.len(),
                routers.links
            ),
            Placement::Euclidean { side_us, .. } => {
                format!("euclidean, {:.0} ms square", side_us / 1000.0)
            }
        }
    }
}

/// The least delay between two nodes of the Euclidean model, however
/// close: what their own hosts and access links take (1 ms).
const EUCLIDEAN_MIN_US: u32 = 1000;

fn uniform_us(rng: &mut StdRng, (lo, hi): (f64, f64)) -> u32 {
    let ms = if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    };
    ms_to_us(ms)
}

/// A delay in ms as whole µs (at least one), as [`uniform_us`] draws them;
/// monotonic, so the bound of a range gives the bound of its draws.
fn ms_to_us(ms: f64) -> u32 {
    (ms * 1000.0).round().max(1.0) as u32
}

impl Routers {
    fn generate(p: &TransitStub, rng: &mut StdRng) -> Self {
        let mut edges: Vec<(u32, u32, u32)> = Vec::new();
        let mut next = 0u32;
        let mut stubs = Vec::new();
        let mut domain = |size: usize, delay: (f64, f64), rng: &mut StdRng, edges: &mut Vec<_>| {
            let first = next;
            next += size as u32;
            random_graph(first, size, p.edge_probability, delay, rng, edges);
            (first..first + size as u32).collect::<Vec<u32>>()
        };
        let transit: Vec<Vec<u32>> = (0..p.transit_domains)
            .map(|_| {
                domain(
                    p.transit_routers.max(1),
                    p.intra_transit_ms,
                    rng,
                    &mut edges,
                )
            })
            .collect();
        // Transit domains: a random spanning tree plus extra edges, each
        // between random routers of the two domains.
        for d in 1..transit.len() {
            let e = rng.random_range(0..d);
            link_domains(
                &transit[d],
                &transit[e],
                p.inter_transit_ms,
                rng,
                &mut edges,
            );
        }
        for d in 0..transit.len() {
            for e in d + 2..transit.len() {
                if rng.random_bool(0.5) {
                    link_domains(
                        &transit[d],
                        &transit[e],
                        p.inter_transit_ms,
                        rng,
                        &mut edges,
                    );
                }
            }
        }
        for t in transit.iter().flatten().copied().collect::<Vec<_>>() {
            for _ in 0..p.stubs_per_transit {
                let stub = domain(p.stub_routers.max(1), p.intra_stub_ms, rng, &mut edges);
                let gateway = stub[rng.random_range(0..stub.len())];
                edges.push((t, gateway, uniform_us(rng, p.stub_transit_ms)));
                stubs.extend(stub);
            }
        }
        let count = next as usize;
        let mut adj: Vec<Vec<(u32, u32, u32)>> = vec![Vec::new(); count];
        for (i, &(a, b, d)) in edges.iter().enumerate() {
            adj[a as usize].push((b, d, i as u32));
            adj[b as usize].push((a, d, i as u32));
        }
        let (dist, via) = all_shortest_paths(&adj);
        Routers {
            count,
            stubs,
            links: edges.len(),
            dist,
            via,
            ends: edges.iter().map(|&(a, b, _)| (a, b)).collect(),
        }
    }

    /// Calls `f` with each link from router `a` to router `b`.
    fn path(&self, a: u32, b: u32, f: &mut impl FnMut(LinkId)) {
        let mut at = b;
        while at != a {
            let link = self.via[a as usize * self.count + at as usize];
            debug_assert_ne!(link, NONE, "routers are connected");
            if link == NONE {
                return;
            }
            f(link);
            let (x, y) = self.ends[link as usize];
            at = if x == at { y } else { x };
        }
    }
}

/// A random connected graph on routers `first..first + size`: a random
/// spanning tree, then every other pair with probability `p`.
fn random_graph(
    first: u32,
    size: usize,
    p: f64,
    delay: (f64, f64),
    rng: &mut StdRng,
    edges: &mut Vec<(u32, u32, u32)>,
) {
    let mut linked = std::collections::HashSet::new();
    for i in 1..size as u32 {
        let j = rng.random_range(0..i);
        linked.insert((j, i));
        edges.push((first + j, first + i, uniform_us(rng, delay)));
    }
    for i in 0..size as u32 {
        for j in i + 1..size as u32 {
            if !linked.contains(&(i, j)) && rng.random_bool(p) {
                edges.push((first + i, first + j, uniform_us(rng, delay)));
            }
        }
    }
}

fn link_domains(
    a: &[u32],
    b: &[u32],
    delay: (f64, f64),
    rng: &mut StdRng,
    edges: &mut Vec<(u32, u32, u32)>,
) {
    let x = a[rng.random_range(0..a.len())];
    let y = b[rng.random_range(0..b.len())];
    edges.push((x, y, uniform_us(rng, delay)));
}

/// Dijkstra from every router, split over the machine's cores: the delay
/// matrix and, for path reconstruction, the last link of each path. Each
/// source's row is computed alone, so the result does not depend on how the
/// rows are split between threads.
fn all_shortest_paths(adj: &[Vec<(u32, u32, u32)>]) -> (Vec<u32>, Vec<u32>) {
    let n = adj.len();
    let mut dist = vec![u32::MAX; n * n];
    let mut via = vec![NONE; n * n];
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let rows_per = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (chunk, (d, v)) in dist
            .chunks_mut(rows_per * n)
            .zip(via.chunks_mut(rows_per * n))
            .enumerate()
        {
            s.spawn(move || {
                let mut heap = std::collections::BinaryHeap::new();
                for (k, (drow, vrow)) in d.chunks_mut(n).zip(v.chunks_mut(n)).enumerate() {
                    let src = chunk * rows_per + k;
                    drow[src] = 0;
                    heap.push(std::cmp::Reverse((0u32, src as u32)));
                    while let Some(std::cmp::Reverse((du, u))) = heap.pop() {
                        if du > drow[u as usize] {
                            continue;
                        }
                        for &(w, d, link) in &adj[u as usize] {
                            let nd = du + d;
                            if nd < drow[w as usize] {
                                drow[w as usize] = nd;
                                vrow[w as usize] = link;
                                heap.push(std::cmp::Reverse((nd, w)));
                            }
                        }
                    }
                }
            });
        }
    });
    (dist, via)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn transit_stub_is_connected_and_paths_add_up() {
        let p = TransitStub {
            transit_domains: 3,
            transit_routers: 3,
            stubs_per_transit: 2,
            stub_routers: 4,
            ..TransitStub::default()
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut t = Topology::transit_stub(&p, &mut rng);
        assert_eq!(t.routers(), 9 + 9 * 2 * 4);
        let nodes: Vec<usize> = (0..50).map(|_| t.attach(&mut rng)).collect();
        let Placement::TransitStub { routers, .. } = &t.placement else {
            unreachable!()
        };
        for &a in &nodes {
            for &b in &nodes {
                let d = t.delay_us(a, b);
                assert!(a == b || d > 0);
                assert_eq!(d, t.delay_us(b, a), "delays are symmetric");
                let mut hops = 0;
                t.for_each_link(a, b, |l| {
                    assert!((l as usize) < t.links().unwrap());
                    hops += 1;
                });
                assert!(a == b || hops >= 2, "two access links at least");
                let (ra, rb) = (t.router_of(a) as usize, t.router_of(b) as usize);
                assert!(routers.dist[ra * routers.count + rb] < u32::MAX);
            }
        }
    }

    #[test]
    fn same_seed_same_topology() {
        let p = TransitStub::default();
        let a = Topology::transit_stub(&p, &mut StdRng::seed_from_u64(3));
        let b = Topology::transit_stub(&p, &mut StdRng::seed_from_u64(3));
        let (
            Placement::TransitStub { routers: ra, .. },
            Placement::TransitStub { routers: rb, .. },
        ) = (&a.placement, &b.placement)
        else {
            unreachable!()
        };
        assert_eq!(ra.count, 5050);
        assert_eq!(ra.dist, rb.dist);
        assert_eq!(ra.via, rb.via);
    }
}
