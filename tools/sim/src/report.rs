//! What a run measured, as a table beside the targets, or as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::scenario::Scenario;

/// Summary of a distribution.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dist {
    /// Samples.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub median: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Dist {
    /// Summarizes `v` (sorted in place).
    pub fn of(v: &mut [f64]) -> Dist {
        if v.is_empty() {
            return Dist::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Dist {
            n: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            median: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// Overlay routing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Routing {
    /// Routes followed.
    pub samples: usize,
    /// Overlay hops per route.
    pub hops: Dist,
    /// Route delay over direct delay to the same node.
    pub stretch: Dist,
    /// Routes that did not end at the node closest to the key.
    pub wrong_destination: u64,
    /// Running nodes still entering the overlay (their bootstrap node
    /// crashed under churn, and they are trying again): not part of the
    /// overlay yet, so neither a route's start nor its end.
    pub entering: usize,
    /// Table entries met that pointed to a crashed node.
    pub stale_entries_met: u64,
    /// Distinct nodes in each routing table and leaf set.
    pub table_size: Dist,
    /// Network coordinates: relative error of the round-trip time they
    /// predict between two random nodes, against the topology's.
    pub coord_error: Dist,
}

/// The group trees.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trees {
    /// Running members, over all groups.
    pub members: usize,
    /// Members without a consistent path to their root.
    pub unattached_members: usize,
    /// Member depth (hops from the root).
    pub depth: Dist,
    /// Children of each node that has any, per group.
    pub children: Dist,
    /// The configured fan-out bound.
    pub max_children_bound: usize,
    /// (node, group) pairs on a tree.
    pub tree_nodes: usize,
    /// Of those, neither member nor root.
    pub nonmember_tree_nodes: usize,
    /// (node, group) pairs with children.
    pub forwarding_nodes: usize,
    /// Of those, not members.
    pub nonmember_forwarders: usize,
    /// Delay from the root along the tree over direct delay, per member.
    pub stretch: Dist,
    /// Broken invariants (at most a few listed).
    pub violations: Vec<String>,
    /// Every member's stretch, for plots.
    #[serde(skip)]
    pub stretch_samples: Vec<f64>,
    /// Every forwarding node's children, for plots.
    #[serde(skip)]
    pub children_samples: Vec<f64>,
    /// One small group's tree, for a drawing.
    #[serde(skip)]
    pub drawing: Option<crate::plot::TreeDrawing>,
}

/// Link stress of one message per group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stress {
    /// Copies per physical link carrying any, the overlay.
    pub alm: Dist,
    /// The same for IP multicast's shortest-path trees.
    pub ip: Dist,
    /// Copies of one group's message per physical link that carries it,
    /// over every group and link: the stress of Narada and End System
    /// Multicast. IP multicast's is 1 on every link by construction.
    pub alm_per_group: Dist,
    /// Copies sent over all links, the overlay.
    pub alm_total: u64,
    /// Copies over all links, IP multicast.
    pub ip_total: u64,
    /// Of `alm_total`, the copies on the nodes' own access links (every
    /// tree node receives one and sends one per child on its own).
    pub alm_access: u64,
    /// Of `ip_total`, the copies on access links (one per member and
    /// group, and one for the source).
    pub ip_access: u64,
    /// Per-link copies, for plots.
    #[serde(skip)]
    pub alm_samples: Vec<f64>,
    /// Per-link copies under IP multicast, for plots.
    #[serde(skip)]
    pub ip_samples: Vec<f64>,
}

/// Reference trees: the same groups built centrally (see
/// [`super::reference`]).
#[derive(Debug, Clone, Serialize)]
pub struct References {
    /// Each member under the node that gives it the shortest delay from
    /// the root.
    pub shortest_paths: crate::reference::Reference,
    /// Each member under the nearest node.
    pub nearest_parent: crate::reference::Reference,
    /// Each member under the nearest node within the placement budget.
    pub nearest_within_budget: crate::reference::Reference,
    /// The same, with members attached in the order they joined.
    pub within_budget_join_order: crate::reference::Reference,
    /// Within budget (nearest the root first) at the scenario's
    /// `reference_slacks`.
    pub slacks: Vec<SlackReference>,
}

/// The "within budget" reference trees at one slack.
#[derive(Debug, Clone, Serialize)]
pub struct SlackReference {
    /// The slack, in percent of the direct path's delay.
    pub slack_pct: u16,
    /// The trees' figures.
    pub trees: crate::reference::Reference,
}

/// Joins.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Joins {
    /// Joins acknowledged.
    pub joins: usize,
    /// Joins refused.
    pub failed: u64,
    /// Joins never acknowledged.
    pub unacknowledged: usize,
    /// Overlay hops until the join met the tree.
    pub hops: Dist,
    /// Time from the join command to the member attached, in ms.
    pub latency_ms: Dist,
}

/// Delivery of acknowledged messages to running members.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivery {
    /// Publishes acknowledged by a root.
    pub acknowledged: u64,
    /// Publishes that failed (the publisher was told).
    pub publish_failures: u64,
    /// (member, message) pairs owed.
    pub expected: u64,
    /// Of those, delivered.
    pub delivered: u64,
    /// Messages delivered twice.
    pub duplicates: u64,
    /// Messages delivered after a gap.
    pub gaps: u64,
    /// Loss reports to members (beyond retention).
    pub lost_reports: u64,
    /// Members told to join that never attached.
    pub members_never_attached: u64,
    /// The first few of those, with the state they are in, to trace them
    /// (`RUST_LOG='[node{i=N}]=debug'`).
    pub never_attached: Vec<String>,
}

impl Delivery {
    /// Share of owed (member, message) pairs delivered.
    pub fn ratio(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            self.delivered as f64 / self.expected as f64
        }
    }
}

/// The churn phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Churn {
    /// Nodes crashed.
    pub crashes: usize,
    /// Nodes that arrived.
    pub arrivals: usize,
    /// Publishes acknowledged during the phase.
    pub acknowledged: u64,
    /// Delivery of every acknowledged message so far.
    pub delivery: Delivery,
    /// From a crash to every child of the crashed node attached again.
    pub repair_ms: Dist,
    /// Crashes not repaired by the end.
    pub unrepaired: u64,
    /// The slowest repair: the crashed node, and the child that was
    /// attached again last (to trace it with `RUST_LOG`).
    pub slowest_repair: Option<String>,
    /// Arrivals whose bootstrap node crashed before it answered, started
    /// again through another node (as an operator would).
    pub bootstraps_retried: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The run.
    pub scenario: Scenario,
    /// The network.
    pub topology: String,
    /// Overlay routing.
    pub routing: Routing,
    /// Joins.
    pub join: Joins,
    /// Trees.
    pub trees: Trees,
    /// Messages per node per second at rest.
    pub control_per_node_s: f64,
    /// Link stress (none for the Euclidean model).
    pub stress: Option<Stress>,
    /// The same groups built centrally and greedily with the same fan-out
    /// bound, for comparison (none for the Euclidean model).
    pub reference: Option<References>,
    /// Delivery of the messages published at rest.
    pub delivery_at_rest: Delivery,
    /// Churn.
    pub churn: Option<Churn>,
    /// Routing once churn is over.
    pub routing_after_churn: Option<Routing>,
    /// Trees once churn is over.
    pub trees_after_churn: Option<Trees>,
    /// Messages sent over the whole run, by kind.
    pub messages_by_kind: std::collections::BTreeMap<String, u64>,
    /// Inputs the nodes handled over the whole run, by kind (messages,
    /// timers by their kind, connections, round-trip times...).
    pub inputs_by_kind: std::collections::BTreeMap<String, u64>,
    /// Messages the nodes running at the end dropped at admission (their
    /// sender may not send them now: with honest nodes, late answers), by
    /// kind.
    #[serde(default)]
    pub dropped_by_kind: std::collections::BTreeMap<String, u64>,
    /// Virtual time simulated, in seconds.
    pub virtual_secs: f64,
    /// Inputs handled by all nodes.
    pub sim_inputs: u64,
    /// Wall-clock time of the run, in seconds.
    pub wall_secs: f64,
    /// Peak resident memory of the process, in MiB (Linux).
    pub peak_rss_mib: Option<f64>,
}

impl Report {
    /// An empty report for `scn`.
    pub fn new(scn: &Scenario, topology: String) -> Self {
        Report {
            scenario: scn.clone(),
            topology,
            ..Default::default()
        }
    }

    /// The table: each figure beside its target, and whether it is met.
    pub fn table(&self) -> String {
        let mut out = Table::default();
        let n = self.scenario.nodes as f64;
        let log16 = n.ln() / 16f64.ln();
        let _ = writeln!(
            out.0,
            "overlay-sim: {} nodes, {} groups, seed {}, proximity {}, tree placement {}, {}",
            self.scenario.nodes,
            self.scenario.groups,
            self.scenario.seed,
            if self.scenario.proximity { "on" } else { "off" },
            if self.scenario.placement { "on" } else { "off" },
            self.topology
        );
        let sc = &self.scenario;
        let cfg = sc.config();
        let _ = writeln!(
            out.0,
            "settings: arrivals {}/s, joins {}/s, fan-out bound {}, heartbeat {} ms, failure after {} ms, placement slack {}%, {} asks, step down {}%, settle {} s",
            sc.arrival_rate,
            sc.join_rate,
            cfg.max_children,
            cfg.heartbeat_interval.as_millis(),
            cfg.failure_timeout.as_millis(),
            cfg.placement_slack_pct,
            cfg.placement_asks,
            cfg.step_down_pct,
            sc.settle_secs,
        );
        let _ = writeln!(
            out.0,
            "{:<44} {:>24}   {:<22} ",
            "measure", "measured", "target"
        );
        let _ = writeln!(out.0, "{}", "-".repeat(96));
        let r = &self.routing;
        out.routing("", r, log16);
        out.row(
            "coordinate error (relative), median / p95",
            format!("{:.3} / {:.3}", r.coord_error.median, r.coord_error.p95),
            "",
            None,
        );
        out.row(
            "routing stretch, mean / median / p95",
            format!(
                "{:.2} / {:.2} / {:.2}",
                r.stretch.mean, r.stretch.median, r.stretch.p95
            ),
            "",
            None,
        );
        out.row(
            "routing table size, mean / max",
            format!("{:.1} / {:.0}", r.table_size.mean, r.table_size.max),
            "",
            None,
        );
        let j = &self.join;
        out.row(
            "join hops, mean / max",
            format!("{:.2} / {:.0}", j.hops.mean, j.hops.max),
            "",
            None,
        );
        out.row(
            "join latency ms, median / p95 / max",
            format!(
                "{:.0} / {:.0} / {:.0}",
                j.latency_ms.median, j.latency_ms.p95, j.latency_ms.max
            ),
            "",
            None,
        );
        out.row(
            "joins acknowledged / failed / pending",
            format!("{} / {} / {}", j.joins, j.failed, j.unacknowledged),
            "all acknowledged",
            Some(j.failed == 0 && j.unacknowledged == 0),
        );
        let t = &self.trees;
        out.row(
            "tree depth, mean / max",
            format!("{:.2} / {:.0}", t.depth.mean, t.depth.max),
            "",
            None,
        );
        out.row(
            "children per forwarding node, mean / max",
            format!("{:.2} / {:.0}", t.children.mean, t.children.max),
            &format!("max <= {}", t.max_children_bound),
            Some(t.children.max <= t.max_children_bound as f64),
        );
        out.row(
            "forwarders that are not members",
            format!(
                "{:.1}% ({}/{})",
                pct(t.nonmember_forwarders, t.forwarding_nodes),
                t.nonmember_forwarders,
                t.forwarding_nodes
            ),
            "",
            None,
        );
        out.row(
            "tree nodes that are not members",
            format!("{:.1}%", pct(t.nonmember_tree_nodes, t.tree_nodes)),
            "",
            None,
        );
        out.row(
            "tree stretch (RDP), mean / median",
            format!("{:.2} / {:.2}", t.stretch.mean, t.stretch.median),
            if self.scenario.proximity {
                "mean <= 1.3"
            } else {
                "(targets with proximity)"
            },
            self.scenario.proximity.then_some(t.stretch.mean <= 1.3),
        );
        out.row(
            "tree stretch (RDP), p95 / max",
            format!("{:.2} / {:.2}", t.stretch.p95, t.stretch.max),
            if self.scenario.proximity {
                "p95 <= 2"
            } else {
                ""
            },
            self.scenario.proximity.then_some(t.stretch.p95 <= 2.0),
        );
        out.row(
            "members on a consistent path to the root",
            format!("{}/{}", t.members - t.unattached_members, t.members),
            "all",
            Some(t.unattached_members == 0 && t.violations.is_empty()),
        );
        if let Some(st) = &self.stress {
            out.row(
                "link stress, mean / max (overlay)",
                format!("{:.2} / {:.0}", st.alm.mean, st.alm.max),
                &format!("mean <= {:.2} (2x IP)", 2.0 * st.ip.mean),
                Some(st.alm.mean <= 2.0 * st.ip.mean),
            );
            out.row(
                "link stress, mean / max (IP multicast)",
                format!("{:.2} / {:.0}", st.ip.mean, st.ip.max),
                "",
                None,
            );
            out.row(
                "link stress per group, mean / max (IP: 1)",
                format!("{:.2} / {:.0}", st.alm_per_group.mean, st.alm_per_group.max),
                "mean <= 2.00 (2x IP)",
                Some(st.alm_per_group.mean <= 2.0),
            );
            out.row(
                "copies on all links, overlay / IP",
                format!(
                    "{} / {} ({:.2}x)",
                    st.alm_total,
                    st.ip_total,
                    st.alm_total as f64 / st.ip_total.max(1) as f64
                ),
                "",
                None,
            );
            out.row(
                "  of which on router links, overlay / IP",
                format!(
                    "{} / {}",
                    st.alm_total - st.alm_access,
                    st.ip_total - st.ip_access
                ),
                "",
                None,
            );
        }
        if let (Some(r), Some(st)) = (&self.reference, &self.stress) {
            let slacks: Vec<(String, &crate::reference::Reference)> = r
                .slacks
                .iter()
                .map(|s| (format!("budget +{}%", s.slack_pct), &s.trees))
                .collect();
            for (name, t) in [
                ("shortest paths", &r.shortest_paths),
                ("nearest parent", &r.nearest_parent),
                ("within budget", &r.nearest_within_budget),
                ("in join order", &r.within_budget_join_order),
            ]
            .into_iter()
            .map(|(n, t)| (n.to_string(), t))
            .chain(slacks)
            {
                out.row(
                    &format!("reference, {name}: stretch mean / p95"),
                    format!("{:.2} / {:.2}", t.stretch.mean, t.stretch.p95),
                    "",
                    None,
                );
                out.row(
                    &format!("reference, {name}: stress, per group, copies"),
                    format!(
                        "{:.2}, {:.2}, {:.2}x IP",
                        t.stress.mean,
                        t.stress_per_group.mean,
                        t.copies_total as f64 / st.ip_total.max(1) as f64
                    ),
                    "",
                    None,
                );
            }
        }
        let dropped: u64 = self.dropped_by_kind.values().sum();
        let kinds: Vec<String> = self
            .dropped_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        out.row(
            "messages dropped at admission (late answers)",
            if kinds.is_empty() {
                "0".to_string()
            } else {
                format!("{dropped} ({})", kinds.join(", "))
            },
            "",
            None,
        );
        out.row(
            "messages per node per second at rest",
            format!("{:.2}", self.control_per_node_s),
            "",
            None,
        );
        let d = &self.delivery_at_rest;
        out.row(
            "delivered at rest (member x message)",
            format!("{}/{}", d.delivered, d.expected),
            "100%",
            Some(d.delivered == d.expected && d.duplicates == 0 && d.gaps == 0),
        );
        if let Some(c) = &self.churn {
            let d = &c.delivery;
            out.row(
                &format!(
                    "churn: crashes + arrivals over {} s",
                    self.scenario.churn_secs
                ),
                format!("{} + {}", c.crashes, c.arrivals),
                &format!("{:.0}% of the nodes", self.scenario.churn * 100.0),
                None,
            );
            out.row(
                "churn: acknowledged messages delivered",
                format!("{:.4}% ({}/{})", d.ratio() * 100.0, d.delivered, d.expected),
                "100%",
                Some(d.delivered == d.expected),
            );
            out.row(
                "churn: duplicates / gaps / lost reports",
                format!("{} / {} / {}", d.duplicates, d.gaps, d.lost_reports),
                "0 / 0 / 0",
                Some(d.duplicates == 0 && d.gaps == 0 && d.lost_reports == 0),
            );
            out.row(
                "churn: repair ms, median / p95 / max",
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    c.repair_ms.median, c.repair_ms.p95, c.repair_ms.max
                ),
                "",
                None,
            );
            out.row(
                "churn: crashes not repaired",
                format!("{}", c.unrepaired),
                "0",
                Some(c.unrepaired == 0),
            );
            out.row(
                "churn: arrivals bootstrapped again",
                format!("{}", c.bootstraps_retried),
                "",
                None,
            );
        }
        if let Some(r) = &self.routing_after_churn {
            out.routing("after churn: ", r, log16);
        }
        if let Some(t) = &self.trees_after_churn {
            out.row(
                "after churn: members attached",
                format!("{}/{}", t.members - t.unattached_members, t.members),
                "all",
                Some(t.unattached_members == 0),
            );
        }
        out.row(
            "simulator: wall time s / peak memory MiB",
            format!(
                "{:.1} / {}",
                self.wall_secs,
                self.peak_rss_mib
                    .map_or_else(|| "?".to_string(), |m| format!("{m:.0}"))
            ),
            "< 300 / < 8192 at 100k",
            None,
        );
        let _ = writeln!(
            out.0,
            "({:.1} s of virtual time, {} inputs handled)",
            self.virtual_secs, self.sim_inputs
        );
        for v in self.trees.violations.iter().take(10) {
            let _ = writeln!(out.0, "violation: {v}");
        }
        let churn = self.churn.as_ref().map(|c| &c.delivery);
        for d in [Some(&self.delivery_at_rest), churn].into_iter().flatten() {
            for m in &d.never_attached {
                let _ = writeln!(out.0, "never attached: {m}");
            }
        }
        if let Some(s) = self.churn.as_ref().and_then(|c| c.slowest_repair.as_ref()) {
            let _ = writeln!(out.0, "slowest repair: {s}");
        }
        out.0
    }
}

/// The table being written: one row per figure.
#[derive(Default)]
struct Table(String);

impl Table {
    /// A figure, its target, and whether the target is met (`None`: no
    /// target).
    fn row(&mut self, name: &str, value: String, target: &str, ok: Option<bool>) {
        let mark = match ok {
            Some(true) => "ok",
            Some(false) => "MISSED",
            None => "",
        };
        let _ = writeln!(self.0, "{name:<44} {value:>24}   {target:<22} {mark}");
    }

    /// Routing hops and destinations beside their targets (`log16` is
    /// log base 16 of the number of nodes).
    fn routing(&mut self, prefix: &str, r: &Routing, log16: f64) {
        self.row(
            &format!("{prefix}routing hops, mean / p99 / max"),
            format!("{:.2} / {:.0} / {:.0}", r.hops.mean, r.hops.p99, r.hops.max),
            &format!("mean <= {log16:.2}, max <= 6"),
            Some(r.hops.mean <= log16 && r.hops.max <= 6.0),
        );
        self.row(
            &format!("{prefix}routes to the responsible node"),
            format!("{}/{}", r.samples as u64 - r.wrong_destination, r.samples),
            "all",
            Some(r.wrong_destination == 0),
        );
        if r.entering > 0 {
            self.row(
                &format!("{prefix}nodes still entering the overlay"),
                format!("{}", r.entering),
                "",
                None,
            );
        }
    }
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}
