//! LAN islands and the multicast fallback: the real state machines on the
//! simulated network, with some of the nodes on one simulated LAN with IP
//! multicast. Deterministic from the seed; `SEED=n` starts the seeds at n
//! and `SEEDS=k` runs k of them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use overlay_proto::{Command, Config, Event, Mid, NodeId};
use overlay_sim::Sim;
use rand::{Rng, SeedableRng};

fn seeds(default: u64) -> impl Iterator<Item = u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse().ok());
    let base: u64 = var("SEED").unwrap_or(1);
    base..base + var("SEEDS").unwrap_or(default)
}

/// `n` nodes in one overlay, and a group rooted at node 0 with every node a
/// member; nodes `island` share LAN 1.
fn setup(seed: u64, n: usize, island: &[usize]) -> (Sim, Mid) {
    let mut sim = Sim::new(seed, Config::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x1a4);
    sim.add_node(&[]);
    for i in 1..n {
        let a = rng.random_range(0..i);
        sim.add_node(&[a]);
        sim.run_for(Duration::from_millis(50));
    }
    sim.run_for(Duration::from_secs(10));
    sim.command(0, Command::CreateGroup { request: 1 });
    let mid = match &sim.take_events()[..] {
        [.., (0, Event::GroupCreated { mid, .. })] => *mid,
        other => panic!("unexpected {other:?}"),
    };
    for i in 1..n {
        sim.command(i, Command::Join { mid });
        sim.run_for(Duration::from_millis(20));
    }
    for &i in island {
        sim.put_on_lan(i, 1, 1_000 + i as u64);
    }
    sim.run_for(Duration::from_secs(10));
    sim.take_events();
    (sim, mid)
}

/// What the members delivered, and what the root accepted.
#[derive(Default)]
struct Record {
    sent: HashMap<(usize, u64), Bytes>,
    accepted: HashSet<Bytes>,
    /// Each node's deliveries in order: sequence number (0 for one taken
    /// from a LAN fallback publish) and payload.
    delivered: HashMap<usize, Vec<(u64, Bytes)>>,
    lan_delivered: HashMap<usize, Vec<Bytes>>,
}

impl Record {
    fn take(&mut self, sim: &mut Sim) {
        for (i, e) in sim.take_events() {
            match e {
                Event::Delivered { seq, payload, .. } => {
                    self.delivered.entry(i).or_default().push((seq, payload))
                }
                Event::LanDelivered { payload, .. } => {
                    self.lan_delivered
                        .entry(i)
                        .or_default()
                        .push(payload.clone());
                    self.delivered.entry(i).or_default().push((0, payload));
                }
                Event::PublishAccepted { request, .. } => {
                    self.accepted.insert(self.sent[&(i, request)].clone());
                }
                Event::Lost { .. } => panic!("node {i}: {e:?}"),
                _ => {}
            }
        }
    }

    fn publish(&mut self, sim: &mut Sim, mid: Mid, from: usize, request: u64) {
        let payload = Bytes::from(format!("{from}/{request}"));
        self.sent.insert((from, request), payload.clone());
        sim.command(
            from,
            Command::Publish {
                request,
                mid,
                payload,
            },
        );
    }

    /// Every live member delivered every accepted message exactly once,
    /// the sequenced ones in order, and nothing that was not sent.
    fn check(&self, sim: &Sim, seed: u64) {
        let sent: HashSet<&Bytes> = self.sent.values().collect();
        // What any member delivered, every member delivered: a message
        // whose publisher gave up on it (an answer lost) counts too.
        let everything: HashSet<&Bytes> = (0..sim.len())
            .filter(|&i| sim.is_alive(i))
            .flat_map(|i| self.delivered.get(&i).into_iter().flatten().map(|(_, p)| p))
            .collect();
        for i in (0..sim.len()).filter(|&i| sim.is_alive(i)) {
            let got = self.delivered.get(&i).map(Vec::as_slice).unwrap_or(&[]);
            let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).filter(|&s| s > 0).collect();
            // In the root's order; a message taken from a fallback publish
            // leaves its place in the order empty.
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: node {i} delivered out of order: {seqs:?}"
            );
            let payloads: HashSet<&Bytes> = got.iter().map(|(_, p)| p).collect();
            assert_eq!(
                payloads.len(),
                got.len(),
                "seed {seed}: node {i} got a duplicate"
            );
            for p in &self.accepted {
                assert!(
                    payloads.contains(p),
                    "seed {seed}: node {i} is missing {p:?}"
                );
            }
            assert_eq!(
                payloads, everything,
                "seed {seed}: node {i} is missing some"
            );
            assert!(
                payloads.iter().all(|p| sent.contains(p)),
                "seed {seed}: node {i} delivered a phantom"
            );
        }
    }
}

/// The island's members agree on one live leader among them; it.
fn leader(sim: &Sim, mid: Mid, island: &[usize], seed: u64) -> usize {
    let live: Vec<usize> = island
        .iter()
        .copied()
        .filter(|&i| sim.is_alive(i))
        .collect();
    let leaders: HashSet<Option<NodeId>> = live
        .iter()
        .map(|&i| sim.node(i).island(mid).expect("a member on the LAN").leader)
        .collect();
    assert_eq!(
        leaders.len(),
        1,
        "seed {seed}: the island disagrees: {leaders:?}"
    );
    let id = leaders.into_iter().next().unwrap().expect("a leader");
    let l = sim.index_of(id).unwrap();
    assert!(
        live.contains(&l),
        "seed {seed}: the leader {l} is not a live member"
    );
    l
}

fn from_tree(sim: &Sim, mid: Mid, nodes: &[usize]) -> u64 {
    nodes
        .iter()
        .map(|&i| sim.node(i).group(mid).unwrap().from_tree)
        .sum()
}

/// Publishes `requests` from random live nodes, one every 10 ms.
fn publish_random(
    sim: &mut Sim,
    rec: &mut Record,
    mid: Mid,
    requests: std::ops::RangeInclusive<u64>,
    rng: &mut impl Rng,
) {
    for request in requests {
        let from = loop {
            let f = rng.random_range(0..30);
            if sim.is_alive(f) {
                break f;
            }
        };
        rec.publish(sim, mid, from, request);
        sim.run_for(Duration::from_millis(10));
        rec.take(sim);
    }
}

/// Publishes 200 messages from random nodes; the copies that came into
/// `island` over the tree meanwhile, and what the run saw.
fn publish_200(sim: &mut Sim, mid: Mid, island: &[usize], seed: u64) -> (u64, Record) {
    let tree_before = from_tree(sim, mid, island);
    let mut rec = Record::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    publish_random(sim, &mut rec, mid, 1..=200, &mut rng);
    sim.run_for(Duration::from_secs(5));
    rec.take(sim);
    (from_tree(sim, mid, island) - tree_before, rec)
}

#[test]
fn an_island_takes_one_copy_from_the_tree_and_shares_it() {
    for seed in seeds(3) {
        let island: Vec<usize> = (10..15).collect();
        // The same network and group without a LAN: a copy per member.
        let (mut plain, mid) = setup(seed, 30, &[]);
        let (without, rec) = publish_200(&mut plain, mid, &island, seed);
        rec.check(&plain, seed);
        assert_eq!(
            without, 1000,
            "seed {seed}: one copy per member and message"
        );
        let (mut sim, mid) = setup(seed, 30, &island);
        let l = leader(&sim, mid, &island, seed);
        for &i in &island {
            let v = sim.node(i).island(mid).unwrap();
            assert_eq!(
                v.peers.len(),
                island.len() - 1,
                "seed {seed}: node {i} hears {v:?}"
            );
            assert_eq!(
                v.fed,
                i != l,
                "seed {seed}: node {i} (leader {l}) fed: {}",
                v.fed
            );
        }
        let (copies, rec) = publish_200(&mut sim, mid, &island, seed);
        assert_eq!(rec.accepted.len(), 200, "seed {seed}");
        rec.check(&sim, seed);
        // One copy per message came into the island over the tree (a move
        // meanwhile may add a few before the new parent hears it is to
        // hold back), where without the LAN there was one per member.
        eprintln!(
            "seed {seed}: {copies} tree copies into an island of {} for 200 messages ({without} without the LAN)",
            island.len()
        );
        assert!(
            (200..=220).contains(&copies),
            "seed {seed}: {copies} tree copies"
        );
        for &i in island.iter().filter(|&&i| i != l) {
            let g = sim.node(i).group(mid).unwrap();
            assert!(
                g.from_lan >= 200,
                "seed {seed}: node {i} took {} from the LAN",
                g.from_lan
            );
        }
        let stats = sim.node(l).lan_stats().unwrap();
        assert_eq!(
            (stats.forged, stats.replayed, stats.malformed),
            (0, 0, 0),
            "seed {seed}"
        );
    }
}

#[test]
fn when_the_leader_dies_another_takes_over_and_nothing_is_lost() {
    for seed in seeds(3) {
        let island: Vec<usize> = (10..15).collect();
        let (mut sim, mid) = setup(seed, 30, &island);
        let first = leader(&sim, mid, &island, seed);
        let mut rec = Record::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        publish_random(&mut sim, &mut rec, mid, 1..=99, &mut rng);
        // The leader's own last publishes are answered before it dies (a
        // publisher that dies before its answer may never learn of it).
        sim.run_for(Duration::from_secs(1));
        sim.crash(first);
        publish_random(&mut sim, &mut rec, mid, 100..=300, &mut rng);
        sim.run_for(Duration::from_secs(10));
        rec.take(&mut sim);
        assert_eq!(rec.accepted.len(), 300, "seed {seed}");
        rec.check(&sim, seed);
        let next = leader(&sim, mid, &island, seed);
        assert_ne!(next, first, "seed {seed}");
        let fed = island
            .iter()
            .filter(|&&i| sim.is_alive(i) && sim.node(i).island(mid).unwrap().fed)
            .count();
        assert_eq!(
            fed,
            island.len() - 2,
            "seed {seed}: all but the new leader are fed"
        );
    }
}

#[test]
fn a_publish_the_root_does_not_answer_reaches_the_island_at_once_and_once() {
    for seed in seeds(3) {
        let island: Vec<usize> = (10..15).collect();
        let (mut sim, mid) = setup(seed, 30, &island);
        let mut rec = Record::default();
        // The root dies: until a replica takes over, publishes go
        // unanswered.
        sim.crash(0);
        sim.run_for(Duration::from_millis(100));
        let publisher = island[0];
        rec.publish(&mut sim, mid, publisher, 1);
        // The publish retries after a second, and goes on the LAN then.
        sim.run_for(Duration::from_millis(1_300));
        rec.take(&mut sim);
        let payload = rec.sent[&(publisher, 1)].clone();
        let early: Vec<usize> = island[1..]
            .iter()
            .copied()
            .filter(|i| {
                rec.lan_delivered
                    .get(i)
                    .is_some_and(|d| d.contains(&payload))
            })
            .collect();
        assert_eq!(
            early,
            island[1..],
            "seed {seed}: the island had it from the LAN"
        );
        assert!(
            rec.accepted.is_empty(),
            "seed {seed}: the root was still being replaced"
        );
        sim.run_for(Duration::from_secs(15));
        rec.take(&mut sim);
        assert!(
            rec.accepted.contains(&payload),
            "seed {seed}: the new root took it"
        );
        // Everyone has it exactly once: the island from the LAN, the rest
        // (and the publisher) from the tree.
        rec.check(&sim, seed);
        let stats = sim.node(publisher).lan_stats().unwrap();
        assert_eq!(stats.fallback_publishes, 1, "seed {seed}");
    }
}

#[test]
fn what_the_lan_loses_is_repaired_over_the_overlay() {
    for seed in seeds(3) {
        let island: Vec<usize> = (10..15).collect();
        let (mut sim, mid) = setup(seed, 30, &island);
        let l = leader(&sim, mid, &island, seed);
        // One datagram (and message) in twenty lost.
        sim.loss = 0.05;
        let mut rec = Record::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        publish_random(&mut sim, &mut rec, mid, 1..=300, &mut rng);
        sim.loss = 0.0;
        sim.run_for(Duration::from_secs(15));
        rec.take(&mut sim);
        assert!(
            rec.accepted.len() >= 280,
            "seed {seed}: {} accepted",
            rec.accepted.len()
        );
        rec.check(&sim, seed);
        let lost = sim.dropped();
        let fed: Vec<u64> = island
            .iter()
            .filter(|&&i| i != l)
            .map(|&i| sim.node(i).group(mid).unwrap().from_lan)
            .collect();
        eprintln!("seed {seed}: {lost} dropped; fed members took {fed:?} from the LAN");
        assert!(
            fed.iter().all(|&n| n < rec.accepted.len() as u64),
            "seed {seed}: the LAN lost some"
        );
    }
}
