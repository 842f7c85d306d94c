//! The simulator on 1,000 nodes with a few seeds: the real protocol must
//! keep its invariants through building, publishing and 10% churn.
//!
//! `SEEDS=a..b` picks other seeds (default `1..4`); the table of each run
//! is printed (`--nocapture` shows it).

use overlay_sim::{self as sim, Scenario};

fn seeds() -> std::ops::Range<u64> {
    std::env::var("SEEDS")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(1..4)
}

#[test]
fn thousand_nodes_keep_the_invariants_through_churn() {
    for seed in seeds() {
        let scn = Scenario {
            seed,
            nodes: 1000,
            groups: 40,
            churn: 0.1,
            churn_secs: 15.0,
            churn_publish_rate: 40.0,
            steady_secs: 1.0,
            route_samples: 2000,
            max_children: 4,
            ..Scenario::default()
        };
        let r = sim::run(&scn, sim::Observe::default()).expect("the run starts");
        println!("{}", r.table());
        let ctx = format!("seed {seed}");
        // Routing reaches the node responsible for the key.
        assert_eq!(r.routing.wrong_destination, 0, "{ctx}: routing");
        assert!(r.routing.hops.max <= 6.0, "{ctx}: routes too long");
        // Every member on exactly one consistent path to its root, and no
        // node above the fan-out bound.
        assert_eq!(r.join.failed, 0, "{ctx}: joins failed");
        assert_eq!(r.join.unacknowledged, 0, "{ctx}: joins pending");
        assert!(
            r.trees.violations.is_empty(),
            "{ctx}: {:?}",
            r.trees.violations
        );
        assert!(r.trees.children.max <= 4.0, "{ctx}: fan-out bound");
        assert!(r.trees.members > 1000, "{ctx}: too few members measured");
        // Every acknowledged message reaches every running member, once,
        // in order.
        let d = &r.delivery_at_rest;
        assert!(
            d.expected > 0 && d.delivered == d.expected,
            "{ctx}: at rest {d:?}"
        );
        let c = r.churn.as_ref().expect("churn ran");
        assert_eq!(c.crashes, 100, "{ctx}");
        let d = &c.delivery;
        assert!(
            c.acknowledged > 100,
            "{ctx}: too few publishes acknowledged"
        );
        assert_eq!(d.delivered, d.expected, "{ctx}: churn delivery {d:?}");
        assert_eq!((d.duplicates, d.gaps), (0, 0), "{ctx}: {d:?}");
        // The overlay and the trees repaired.
        let after = r.routing_after_churn.as_ref().expect("measured");
        assert!(
            after.wrong_destination == 0,
            "{ctx}: routing after churn, {} wrong",
            after.wrong_destination
        );
        let t = r.trees_after_churn.as_ref().expect("measured");
        assert!(
            t.violations.is_empty(),
            "{ctx}: after churn {:?}",
            t.violations
        );
        assert_eq!(c.unrepaired, 0, "{ctx}: crashes not repaired");
    }
}

#[test]
fn same_seed_same_figures() {
    let scn = Scenario {
        nodes: 300,
        groups: 10,
        churn: 0.05,
        churn_secs: 5.0,
        steady_secs: 1.0,
        route_samples: 500,
        ..Scenario::default()
    };
    let a = sim::run(&scn, sim::Observe::default()).unwrap();
    let b = sim::run(&scn, sim::Observe::default()).unwrap();
    let strip = |r: &sim::Report| {
        let mut v = serde_json::to_value(r).unwrap();
        v.as_object_mut().unwrap().remove("wall_secs");
        v
    };
    assert_eq!(strip(&a), strip(&b));
}
