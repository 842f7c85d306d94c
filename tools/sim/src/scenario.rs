//! What a simulation run does: the network, the overlay's size, the groups,
//! the churn, and the protocol settings, from a TOML file and flags.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::topology::TransitStub;

/// The physical network model.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// Transit-stub routers (GT-ITM style); the headline model.
    TransitStub,
    /// Nodes at random points of a square; delay is distance. No link
    /// stress.
    Euclidean,
}

/// A whole run. Every field has a default; a TOML file sets any of them
/// (same names), and flags override the file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Seed of every random choice: the same seed gives the same run.
    pub seed: u64,
    /// Overlay nodes.
    pub nodes: usize,
    /// Physical network model.
    pub model: Model,
    /// Transit-stub sizes and delays.
    pub transit_stub: TransitStub,
    /// Side of the Euclidean square, in ms of delay.
    pub euclidean_side_ms: f64,
    /// Proximity neighbour selection in the routing tables.
    pub proximity: bool,
    /// Tree placement: tree nodes move to parents nearer the root.
    pub placement: bool,
    /// How much longer, in percent, a path through a child may be for a
    /// placement to go on down to it (the protocol's default if unset).
    pub placement_slack_pct: Option<u16>,
    /// How many of its nearest routing-table neighbours a tree node asks
    /// directly for a place (the protocol's default if unset).
    pub placement_asks: Option<usize>,
    /// How much longer, in percent, a node's path may grow when it steps
    /// down to a link half as long (the protocol's default if unset; 0
    /// turns steps down off).
    pub step_down_pct: Option<u16>,
    /// More slacks (percent) at which to build the "within budget"
    /// reference trees: what a central builder trades between stretch and
    /// link stress as the budget grows.
    pub reference_slacks: Vec<u16>,
    /// Virtual seconds between the last join's acknowledgement and the
    /// measurements, in which trees settle (placement moves nodes).
    pub settle_secs: f64,
    /// Nodes entering the overlay per second of virtual time while it is
    /// built.
    pub arrival_rate: f64,
    /// A new node bootstraps from the nearest of this many random running
    /// nodes (a deployment gives a node a nearby bootstrap address).
    pub bootstrap_sample: usize,
    /// Groups.
    pub groups: usize,
    /// Group sizes: the group of rank `r` (from 1) has
    /// `nodes * r^-group_exponent` members (Scribe's distribution: the
    /// first group has every node).
    pub group_exponent: f64,
    /// Fewest members of a group.
    pub min_group: usize,
    /// Joins issued per second of virtual time.
    pub join_rate: f64,
    /// Share of the nodes that crash during the churn phase; as many new
    /// nodes arrive and take their memberships. 0 skips the phase.
    pub churn: f64,
    /// Length of the churn phase, in seconds of virtual time.
    pub churn_secs: f64,
    /// Messages published per second (to random groups, by random members)
    /// during the churn phase.
    pub churn_publish_rate: f64,
    /// Length of the quiet window in which control traffic per node is
    /// measured, in seconds: the end of the settle.
    pub steady_secs: f64,
    /// Random (node, key) routes followed to measure routing.
    pub route_samples: usize,
    /// The fan-out bound: most children per node per group.
    pub max_children: usize,
    /// Heartbeat interval of tree neighbours, in ms (the protocol's default
    /// if unset).
    pub heartbeat_ms: Option<u64>,
    /// Silence after which a tree neighbour is taken for dead, in ms.
    pub failure_timeout_ms: Option<u64>,
    /// Routing-table maintenance interval, in ms.
    pub maintenance_ms: Option<u64>,
    /// Candidates measured per routing-table slot (the protocol's default
    /// if unset).
    pub probes_per_slot: Option<u8>,
    /// Encode and decode every message (slower; checks the codec).
    pub codec: bool,
    /// Parts the nodes are split into, which run each window of virtual
    /// time at once on up to as many threads. The figures depend on the
    /// number of parts (it orders events due at the same instant in
    /// different parts), never on the number of threads: keep it when
    /// comparing runs.
    pub parts: usize,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 1,
            nodes: 10_000,
            model: Model::TransitStub,
            transit_stub: TransitStub::default(),
            euclidean_side_ms: 150.0,
            proximity: true,
            placement: true,
            placement_slack_pct: None,
            placement_asks: None,
            step_down_pct: None,
            reference_slacks: Vec::new(),
            settle_secs: 30.0,
            arrival_rate: 2_000.0,
            bootstrap_sample: 16,
            groups: 1_000,
            group_exponent: 1.25,
            min_group: 4,
            join_rate: 20_000.0,
            churn: 0.1,
            churn_secs: 30.0,
            churn_publish_rate: 50.0,
            steady_secs: 5.0,
            route_samples: 10_000,
            max_children: 16,
            heartbeat_ms: None,
            failure_timeout_ms: None,
            maintenance_ms: None,
            probes_per_slot: None,
            codec: false,
            parts: 2,
        }
    }
}

impl Scenario {
    /// Reads a scenario from a TOML file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the scenario file {}", path.display()))?;
        toml::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid scenario (see `overlay-sim --help` for the keys)",
                path.display()
            )
        })
    }

    /// Members of each group, largest first.
    pub fn group_sizes(&self) -> Vec<usize> {
        (1..=self.groups)
            .map(|r| {
                let s = (self.nodes as f64 * (r as f64).powf(-self.group_exponent)).round();
                (s as usize).clamp(self.min_group.min(self.nodes), self.nodes)
            })
            .collect()
    }

    /// The protocol settings every simulated node runs with.
    pub fn config(&self) -> overlay_proto::Config {
        let mut cfg = overlay_proto::Config {
            proximity: self.proximity,
            tree_optimize: self.placement,
            max_children: self.max_children.max(1),
            ..Default::default()
        };
        if let Some(ms) = self.heartbeat_ms {
            cfg.heartbeat_interval = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = self.failure_timeout_ms {
            cfg.failure_timeout = std::time::Duration::from_millis(ms);
        }
        if let Some(pct) = self.placement_slack_pct {
            cfg.placement_slack_pct = pct;
        }
        if let Some(n) = self.placement_asks {
            cfg.placement_asks = n;
        }
        if let Some(pct) = self.step_down_pct {
            cfg.step_down_pct = pct;
        }
        if let Some(ms) = self.maintenance_ms {
            cfg.maintenance_interval = std::time::Duration::from_millis(ms);
        }
        if let Some(n) = self.probes_per_slot {
            cfg.probes_per_slot = n;
        }
        cfg
    }

    /// Checks that the run makes sense before spending minutes on it.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.nodes >= 2,
            "a run needs at least 2 nodes (nodes = {})",
            self.nodes
        );
        anyhow::ensure!(
            self.arrival_rate > 0.0 && self.join_rate > 0.0,
            "arrival_rate and join_rate must be positive"
        );
        anyhow::ensure!(
            (0.0..=0.9).contains(&self.churn),
            "churn is a share of the nodes between 0 and 0.9 (got {})",
            self.churn
        );
        anyhow::ensure!(
            self.parts >= 1,
            "parts must be at least 1 (got {}): the nodes are split into that many parts",
            self.parts
        );
        anyhow::ensure!(
            self.bootstrap_sample >= 1,
            "bootstrap_sample must be at least 1"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_scribe_and_toml_overrides_defaults() {
        let s: Scenario = toml::from_str("nodes = 1000\ngroups = 3\nmin_group = 5").unwrap();
        assert_eq!(s.group_sizes(), vec![1000, 420, 253]);
        assert_eq!(s.model, Model::TransitStub);
        let e: Result<Scenario, _> = toml::from_str("nodez = 3");
        assert!(e.is_err(), "unknown keys are refused");
    }
}
