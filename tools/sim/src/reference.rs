//! Reference trees: what a builder that sees the whole topology at once
//! makes of the same groups under the same fan-out bound.
//!
//! The protocol's trees are built by nodes that know only their
//! neighbours, coordinates and what their messages tell them. To tell how
//! far its stretch and link stress are from what fan-out bound and
//! topology allow, the same groups are also built centrally, greedily, in
//! four ways:
//!
//! - **shortest paths**: members are attached in order of their direct
//!   delay from the root, each under the tree node with room that gives it
//!   the shortest delay from the root (a bounded-degree shortest-path tree);
//! - **nearest parent**: in the same order, each under the nearest tree node
//!   with room (a bounded-degree Prim's tree: short links, few copies);
//! - **nearest within budget**: in the same order, each under the nearest
//!   tree node with room through which its delay from the root stays
//!   within the budget the protocol's placement allows (the direct path's
//!   plus `placement_slack_pct`), or else the shortest path;
//! - **within budget, in join order**: the same rule, with the members
//!   attached in the order they joined the group. The protocol, too, sees
//!   members in that order; the gap between the two budget trees is what
//!   the order costs (the near-root places go to whoever came first).
//!
//! Only members and the root are tree nodes (no forwarders). None is an
//! optimum (the problems are NP-hard with a degree bound); they are what a
//! simple centralised heuristic gets on this topology, and show the trade
//! between stretch and stress the protocol's placement makes.
//!
//! For speed, tree nodes with room are kept per router, with the best of
//! them: the delay from a node to a member is its access link, the
//! routers' distance, and the member's access link, so a member looks at
//! one candidate per router rather than at every tree node (and, within
//! budget, only at the nodes of routers that can be within it).

use std::collections::HashMap;

use serde::Serialize;

use crate::report::Dist;
use crate::topology::{LinkId, Topology};

/// How a reference tree picks a member's parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builder {
    /// The parent through which the member is nearest the root.
    ShortestPaths,
    /// The nearest parent.
    NearestParent,
    /// The nearest parent through which the member's delay from the root
    /// stays within the direct path's plus `slack_pct` percent, or else
    /// the shortest path: the protocol's placement rule, with every node
    /// known.
    NearestWithinBudget {
        /// The slack, in percent of the direct path's delay.
        slack_pct: u16,
        /// Attach members in the order they joined, not nearest the root
        /// first: what the rule gets without the order's help.
        join_order: bool,
    },
}

impl Builder {
    /// Whether members are attached nearest the root first (all but the
    /// join-order budget rule).
    fn nearest_first(&self) -> bool {
        !matches!(
            self,
            Builder::NearestWithinBudget {
                join_order: true,
                ..
            }
        )
    }
}

/// The figures of one builder's trees over all groups.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    /// Stretch of every member (delay from the root along the tree over
    /// the direct delay).
    pub stretch: Dist,
    /// Copies of one message per group over all physical links.
    pub copies_total: u64,
    /// Copies per physical link carrying any.
    pub stress: Dist,
    /// Copies of one group's message per link carrying it (see
    /// [`crate::report::Stress::alm_per_group`]).
    pub stress_per_group: Dist,
}

/// Builds every group's tree with `builder` and measures them: `groups`
/// holds each group's root and running members. `None` for a topology
/// without routers (the Euclidean model).
pub fn measure(
    topo: &Topology,
    groups: &[(usize, Vec<usize>)],
    max_children: usize,
    builder: Builder,
) -> Option<Reference> {
    let links = topo.links()?;
    let mut copies = vec![0u32; links];
    let mut stretch = Vec::new();
    let mut per_group = Vec::new();
    let mut group_links: HashMap<LinkId, u32> = HashMap::new();
    let mut trees = Trees::new(topo.routers());
    for (root, members) in groups {
        group_links.clear();
        trees.build(
            topo,
            *root,
            members,
            max_children,
            builder,
            |parent, member, s| {
                stretch.push(s);
                topo.for_each_link(parent, member, |l| {
                    copies[l as usize] += 1;
                    *group_links.entry(l).or_default() += 1;
                });
            },
        );
        per_group.extend(group_links.values().map(|&c| c as f64));
    }
    let mut used: Vec<f64> = copies
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64)
        .collect();
    Some(Reference {
        stretch: Dist::of(&mut stretch),
        copies_total: copies.iter().map(|&c| c as u64).sum(),
        stress: Dist::of(&mut used),
        stress_per_group: Dist::of(&mut per_group),
    })
}

/// Tree nodes with room at one router.
#[derive(Default)]
struct Open {
    /// Positions (in the tree being built) of the nodes here with room.
    nodes: Vec<u32>,
    /// Least delay from the root plus access link among them.
    min_path: u32,
    /// Least access link among them.
    min_access: u32,
}

/// One node of the tree being built.
#[derive(Clone, Copy)]
struct TreeNode {
    node: usize,
    /// Delay from the root along the tree, µs.
    from_root: u32,
    access: u32,
    children: usize,
}

/// Scratch space for building trees, kept from one group to the next.
struct Trees {
    open: Vec<Open>,
    /// Routers with nodes with room.
    active: Vec<u32>,
}

impl Trees {
    fn new(routers: usize) -> Self {
        Trees {
            open: (0..routers).map(|_| Open::default()).collect(),
            active: Vec::new(),
        }
    }

    /// Builds one group's tree; calls `edge(parent, member, stretch)` for
    /// every member attached.
    fn build(
        &mut self,
        topo: &Topology,
        root: usize,
        members: &[usize],
        max_children: usize,
        builder: Builder,
        mut edge: impl FnMut(usize, usize, f64),
    ) {
        let host = |i: usize| topo.host(i).expect("transit-stub topology");
        let mut order: Vec<(u32, usize)> = members
            .iter()
            .filter(|&&m| m != root)
            .map(|&m| (topo.delay_us(root, m), m))
            .collect();
        if builder.nearest_first() {
            order.sort_unstable();
        }
        let mut tree: Vec<TreeNode> = Vec::with_capacity(order.len() + 1);
        let (root_router, root_access) = host(root);
        tree.push(TreeNode {
            node: root,
            from_root: 0,
            access: root_access,
            children: 0,
        });
        if max_children > 0 {
            self.add(&tree, root_router, 0);
        }
        for &(direct, m) in &order {
            let (router, access) = host(m);
            let Some(at) = self.choose(topo, &tree, router, access, direct, builder) else {
                // No room anywhere (only with a bound of 0): not attached.
                continue;
            };
            let parent = tree[at as usize];
            let from_root = parent.from_root + topo.delay_us(parent.node, m);
            tree[at as usize].children += 1;
            if tree[at as usize].children >= max_children {
                self.remove(&tree, host(parent.node).0, at);
            }
            edge(parent.node, m, from_root as f64 / direct.max(1) as f64);
            tree.push(TreeNode {
                node: m,
                from_root,
                access,
                children: 0,
            });
            self.add(&tree, router, (tree.len() - 1) as u32);
        }
        for r in self.active.drain(..) {
            self.open[r as usize] = Open::default();
        }
    }

    /// The position of the parent `builder` picks for a member at `router`
    /// with access link `access`, at `direct` µs from the root.
    fn choose(
        &self,
        topo: &Topology,
        tree: &[TreeNode],
        router: u32,
        access: u32,
        direct: u32,
        builder: Builder,
    ) -> Option<u32> {
        // Per router: the cost of its best node, and the router.
        let mut shortest: Option<(u32, u32)> = None;
        let mut nearest: Option<(u32, u32)> = None;
        // Within budget: the nearest node, (its link, its position).
        let mut within: Option<(u32, u32)> = None;
        let budget = match builder {
            Builder::NearestWithinBudget { slack_pct, .. } => {
                (direct as u64 * (100 + slack_pct as u64) / 100).min(u32::MAX as u64) as u32
            }
            _ => 0,
        };
        for &r in &self.active {
            let open = &self.open[r as usize];
            // From the member's router: distances are symmetric, and one
            // row of the matrix stays in the cache where a column would
            // miss it for every router.
            let d0 = topo.router_delay_us(router, r) + access;
            let path = open.min_path + d0;
            if shortest.is_none_or(|(c, _)| path < c) {
                shortest = Some((path, r));
            }
            match builder {
                Builder::ShortestPaths => {}
                Builder::NearestParent => {
                    let link = open.min_access + d0;
                    if nearest.is_none_or(|(c, _)| link < c) {
                        nearest = Some((link, r));
                    }
                }
                Builder::NearestWithinBudget { .. } => {
                    if path > budget {
                        continue;
                    }
                    for &at in &open.nodes {
                        let t = &tree[at as usize];
                        let link = t.access + d0;
                        if t.from_root + link <= budget && within.is_none_or(|(c, _)| link < c) {
                            within = Some((link, at));
                        }
                    }
                }
            }
        }
        if let Some((_, at)) = within {
            return Some(at);
        }
        // The best node of the chosen router.
        let (by_access, (_, r)) = match builder {
            Builder::NearestParent => (true, nearest?),
            _ => (false, shortest?),
        };
        self.open[r as usize]
            .nodes
            .iter()
            .copied()
            .min_by_key(|&at| {
                let t = &tree[at as usize];
                if by_access {
                    t.access
                } else {
                    t.from_root + t.access
                }
            })
    }

    fn add(&mut self, tree: &[TreeNode], router: u32, at: u32) {
        let t = &tree[at as usize];
        let open = &mut self.open[router as usize];
        if open.nodes.is_empty() {
            self.active.push(router);
            open.min_path = u32::MAX;
            open.min_access = u32::MAX;
        }
        open.nodes.push(at);
        open.min_path = open.min_path.min(t.from_root + t.access);
        open.min_access = open.min_access.min(t.access);
    }

    fn remove(&mut self, tree: &[TreeNode], router: u32, at: u32) {
        let open = &mut self.open[router as usize];
        open.nodes.retain(|&x| x != at);
        if open.nodes.is_empty() {
            self.active.retain(|&x| x != router);
            return;
        }
        open.min_path = u32::MAX;
        open.min_access = u32::MAX;
        for &x in &open.nodes {
            let t = &tree[x as usize];
            open.min_path = open.min_path.min(t.from_root + t.access);
            open.min_access = open.min_access.min(t.access);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::TransitStub;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// A small transit-stub topology with `n` nodes, and one group of all
    /// of them rooted at node 0.
    fn setup(n: usize) -> (Topology, Vec<(usize, Vec<usize>)>) {
        let mut rng = StdRng::seed_from_u64(3);
        let params = TransitStub {
            transit_domains: 3,
            transit_routers: 3,
            stubs_per_transit: 3,
            stub_routers: 4,
            ..TransitStub::default()
        };
        let mut topo = Topology::transit_stub(&params, &mut rng);
        for _ in 0..n {
            topo.attach(&mut rng);
        }
        (topo, vec![(0, (1..n).collect())])
    }

    #[test]
    fn every_member_is_attached_once_within_the_bound() {
        let (topo, groups) = setup(400);
        for builder in [
            Builder::ShortestPaths,
            Builder::NearestParent,
            Builder::NearestWithinBudget {
                slack_pct: 20,
                join_order: false,
            },
            Builder::NearestWithinBudget {
                slack_pct: 20,
                join_order: true,
            },
        ] {
            let mut trees = Trees::new(topo.routers());
            let mut parent = vec![None; 400];
            let mut children = vec![0usize; 400];
            trees.build(&topo, 0, &groups[0].1, 4, builder, |p, m, s| {
                assert!(
                    parent[m].replace(p).is_none(),
                    "{builder:?}: {m} attached twice"
                );
                children[p] += 1;
                // A tree path is never shorter than the direct one.
                assert!(s >= 1.0 - 1e-9, "{builder:?}: stretch {s}");
            });
            assert!(parent[1..].iter().all(Option::is_some), "{builder:?}");
            assert!(children.iter().all(|&c| c <= 4), "{builder:?}");
        }
    }

    #[test]
    fn without_a_bound_shortest_paths_and_the_budget_give_direct_paths() {
        let (topo, groups) = setup(300);
        for builder in [
            Builder::ShortestPaths,
            Builder::NearestWithinBudget {
                slack_pct: 0,
                join_order: false,
            },
        ] {
            let r = measure(&topo, &groups, 1000, builder).expect("transit-stub");
            assert_eq!(r.stretch.n, 299);
            assert!(
                (r.stretch.max - 1.0).abs() < 1e-9,
                "{builder:?}: {:?}",
                r.stretch
            );
        }
        // The nearest parent makes paths longer, and links shorter.
        let near = measure(&topo, &groups, 1000, Builder::NearestParent).expect("transit-stub");
        let short = measure(&topo, &groups, 1000, Builder::ShortestPaths).expect("transit-stub");
        assert!(near.stretch.mean > 1.0);
        assert!(near.copies_total < short.copies_total);
    }

    #[test]
    fn members_joining_farthest_first_make_a_longer_budget_tree() {
        let (topo, groups) = setup(400);
        let (root, mut members) = groups[0].clone();
        members.sort_by_key(|&m| std::cmp::Reverse(topo.delay_us(root, m)));
        let groups = vec![(root, members)];
        let budget = |join_order| {
            let b = Builder::NearestWithinBudget {
                slack_pct: 20,
                join_order,
            };
            measure(&topo, &groups, 4, b).expect("transit-stub")
        };
        let (sorted, as_joined) = (budget(false), budget(true));
        assert_eq!(sorted.stretch.n, as_joined.stretch.n);
        assert!(
            as_joined.stretch.mean > sorted.stretch.mean,
            "{:?} vs {:?}",
            as_joined.stretch,
            sorted.stretch
        );
    }
}
