//! Whole networks of real state machines on the deterministic simulated
//! network: overlay routing, tree building, delivery, leaving.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use overlay_proto::id::distance;
use overlay_proto::{Command, Config, Event, Mid, NodeId};
use overlay_sim::Sim;
use rand::{Rng, SeedableRng};

fn seeds() -> impl Iterator<Item = u64> {
    let base: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    base..base + 4
}

/// Builds an overlay of `n` nodes, each bootstrapped from one or two random
/// earlier nodes.
fn overlay(seed: u64, n: usize, cfg: Config) -> Sim {
    let mut sim = Sim::new(seed, cfg);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    sim.add_node(&[]);
    for i in 1..n {
        let a = rng.random_range(0..i);
        let b = rng.random_range(0..i);
        sim.add_node(&[a, b]);
        sim.run_for(Duration::from_millis(50));
    }
    sim.run_for(Duration::from_secs(30));
    sim
}

/// Follows the nodes' own routing tables from `from` toward `key`: where
/// the route ends, and in how many hops.
fn route(sim: &Sim, from: usize, key: u128, seed: u64) -> (usize, usize) {
    let mut at = from;
    let mut hops = 0;
    while let Some(next) = sim.node(at).routing().next_hop(key, &[]) {
        at = sim.index_of(next.id).unwrap();
        hops += 1;
        assert!(hops < 10, "seed {seed}: route too long");
    }
    (at, hops)
}

#[test]
fn routing_reaches_the_responsible_node_for_random_keys() {
    for seed in seeds() {
        let n = 300;
        let mut sim = overlay(seed, n, Config::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let ids: Vec<NodeId> = (0..n).map(|i| sim.node(i).me().id).collect();
        let mut hops_total = 0;
        for _ in 0..300 {
            let key: u128 = rng.random();
            let closest = *ids.iter().min_by_key(|id| distance(id.key(), key)).unwrap();
            let (at, hops) = route(&sim, rng.random_range(0..n), key, seed);
            assert_eq!(
                sim.node(at).me().id,
                closest,
                "seed {seed}: route ended at the wrong node"
            );
            hops_total += hops;
        }
        let mean = hops_total as f64 / 300.0;
        assert!(
            mean <= (n as f64).log(16.0) + 1.0,
            "seed {seed}: mean hops {mean}"
        );
        sim.take_events();
    }
}

struct Tree {
    parent: HashMap<NodeId, NodeId>,
    children: HashMap<NodeId, usize>,
}

/// The tree as the nodes' own state says it is, checked for consistency:
/// every node's parent lists it as a child.
fn tree_of(sim: &Sim, mid: Mid) -> Tree {
    let mut parent = HashMap::new();
    let mut children = HashMap::new();
    for i in 0..sim.len() {
        if !sim.is_alive(i) {
            continue;
        }
        let me = sim.node(i).me().id;
        for g in sim.node(i).groups().into_iter().filter(|g| g.mid == mid) {
            children.insert(me, g.children.len());
            if let Some(p) = g.parent {
                parent.insert(me, p.id);
                let pi = sim.index_of(p.id).unwrap();
                let pg = sim
                    .node(pi)
                    .groups()
                    .into_iter()
                    .find(|g| g.mid == mid)
                    .expect("parent on the tree");
                assert!(
                    pg.children.iter().any(|c| c.id == me),
                    "parent does not list its child"
                );
            }
        }
    }
    Tree { parent, children }
}

fn depth(tree: &Tree, mut id: NodeId, root: NodeId) -> usize {
    let mut d = 0;
    while id != root {
        id = *tree
            .parent
            .get(&id)
            .expect("every node on the tree reaches the root");
        d += 1;
        assert!(d < 100, "cycle in the tree");
    }
    d
}

#[test]
fn trees_deliver_every_message_once_in_order_and_prune_on_leave() {
    for seed in seeds() {
        let n = 64;
        let cfg = Config {
            max_children: 3,
            ..Config::default()
        };
        let mut sim = overlay(seed, n, cfg);
        sim.take_events();
        sim.command(0, Command::CreateGroup { request: 1 });
        let mid = match &sim.take_events()[..] {
            [(0, Event::GroupCreated { mid, .. })] => *mid,
            other => panic!("unexpected {other:?}"),
        };
        for i in 1..n {
            sim.command(i, Command::Join { mid });
        }
        sim.run_for(Duration::from_secs(10));
        let joined: HashSet<usize> = sim
            .take_events()
            .into_iter()
            .filter_map(|(i, e)| matches!(e, Event::Joined { .. }).then_some(i))
            .collect();
        assert_eq!(joined.len(), n - 1, "seed {seed}: every node joined");

        let root = sim.node(0).me().id;
        let tree = tree_of(&sim, mid);
        assert!(
            tree.children.values().all(|&c| c <= 3),
            "seed {seed}: fan-out bound broken"
        );
        let max_depth = (0..n)
            .map(|i| depth(&tree, sim.node(i).me().id, root))
            .max()
            .unwrap();
        assert!(
            max_depth >= 3,
            "seed {seed}: 64 nodes with 3 children each need depth 3"
        );

        // Publish from members and from the root, interleaved.
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for k in 0..100u64 {
            let from = rng.random_range(0..n);
            sim.command(
                from,
                Command::Publish {
                    request: k + 1,
                    mid,
                    payload: Bytes::from(format!("m{k}")),
                },
            );
            sim.run_for(Duration::from_millis(5));
        }
        sim.run_for(Duration::from_secs(5));
        let mut got: HashMap<usize, Vec<(u64, Bytes)>> = HashMap::new();
        let mut accepted = 0;
        for (i, e) in sim.take_events() {
            match e {
                Event::Delivered { seq, payload, .. } => {
                    got.entry(i).or_default().push((seq, payload))
                }
                Event::PublishAccepted { .. } => accepted += 1,
                other => panic!("seed {seed}: unexpected {other:?}"),
            }
        }
        assert_eq!(accepted, 100);
        let reference = &got[&0];
        assert_eq!(reference.len(), 100);
        assert!(
            reference.windows(2).all(|w| w[0].0 + 1 == w[1].0),
            "gap-free order at the root"
        );
        for i in 0..n {
            assert_eq!(
                &got[&i], reference,
                "seed {seed}: node {i} saw another sequence"
            );
        }

        // Half the members leave: forwarders with no member below them go.
        let leavers: Vec<usize> = (1..n).filter(|i| i % 2 == 1).collect();
        for &i in &leavers {
            sim.command(i, Command::Leave { mid });
        }
        sim.run_for(Duration::from_secs(2));
        let tree = tree_of(&sim, mid);
        for &i in &leavers {
            let id = sim.node(i).me().id;
            if let Some(&c) = tree.children.get(&id) {
                assert!(c > 0, "seed {seed}: a forwarder with no children stayed");
            }
        }
        for i in 0..n {
            for g in sim.node(i).groups() {
                if !g.member && !g.root {
                    assert!(!g.children.is_empty(), "seed {seed}: childless forwarder");
                }
            }
        }
        sim.command(
            3 % n,
            Command::Publish {
                request: 1000,
                mid,
                payload: Bytes::from_static(b"after"),
            },
        );
        sim.run_for(Duration::from_secs(2));
        let receivers: HashSet<usize> = sim
            .take_events()
            .into_iter()
            .filter_map(|(i, e)| matches!(e, Event::Delivered { .. }).then_some(i))
            .collect();
        let expected: HashSet<usize> = (0..n).filter(|i| !leavers.contains(i)).collect();
        assert_eq!(
            receivers, expected,
            "seed {seed}: the remaining members receive, leavers do not"
        );
    }
}

#[test]
fn publishing_to_an_unknown_group_fails_clearly() {
    let mut sim = overlay(9, 20, Config::default());
    sim.take_events();
    sim.command(
        5,
        Command::Publish {
            request: 1,
            mid: Mid(12345),
            payload: Bytes::from_static(b"x"),
        },
    );
    sim.command(6, Command::Join { mid: Mid(12345) });
    sim.run_for(Duration::from_secs(3));
    let events = sim.take_events();
    assert!(events
        .iter()
        .any(|(i, e)| *i == 5 && matches!(e, Event::PublishFailed { .. })));
    assert!(events
        .iter()
        .any(|(i, e)| *i == 6 && matches!(e, Event::JoinFailed { .. })));
}

/// A node whose bootstrap node crashes before answering is still entering
/// the overlay when a newcomer bootstraps from it. Neither may end up in an
/// overlay of their own: both must route random keys to the same node as
/// everyone else. (Before joins waited for the node to be in, the two
/// answered each other and formed an overlay of two.)
#[test]
fn a_newcomer_bootstrapping_from_a_node_still_entering_joins_the_real_overlay() {
    for seed in seeds() {
        let n = 60;
        let mut sim = overlay(seed, n, Config::default());
        sim.take_events();
        // `a` dials node 1, which answers the dial and then dies.
        let a = sim.add_node(&[1]);
        sim.run_for(Duration::from_millis(1));
        sim.crash(1);
        sim.run_for(Duration::from_millis(5));
        let b = sim.add_node(&[a]);
        // Whoever gives up is started again from node 2, as an operator
        // would with another address.
        let mut restarted = 0;
        for _ in 0..60 {
            sim.run_for(Duration::from_secs(1));
            for (i, e) in sim.take_events() {
                if let Event::BootstrapFailed { .. } = e {
                    restarted += 1;
                    let addrs = vec![sim.node(2).me().addr];
                    sim.command(i, Command::Bootstrap { addrs });
                }
            }
        }
        assert!(
            restarted >= 1,
            "seed {seed}: the node whose bootstrap died gave up"
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let live: Vec<usize> = (0..sim.len()).filter(|&i| sim.is_alive(i)).collect();
        let ids: Vec<NodeId> = live.iter().map(|&i| sim.node(i).me().id).collect();
        for from in [a, b] {
            assert!(sim.node(from).is_joined(), "seed {seed}: {from} not joined");
            assert!(
                sim.node(from).routing().len() > 10,
                "seed {seed}: {from} knows only {} nodes",
                sim.node(from).routing().len()
            );
            for _ in 0..50 {
                let key: u128 = rng.random();
                let closest = *ids.iter().min_by_key(|id| distance(id.key(), key)).unwrap();
                let (at, _) = route(&sim, from, key, seed);
                assert_eq!(
                    sim.node(at).me().id,
                    closest,
                    "seed {seed}: {from} routes elsewhere"
                );
            }
        }
        sim.take_events();
    }
}
