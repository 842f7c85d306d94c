//! Network coordinates: every node's estimate of its place in the network,
//! so that a node can predict its delay to a node it has never measured.
//!
//! Placing a node well in a group tree means comparing its delay to many
//! candidate parents, and measuring each of them would take a connection
//! per candidate and turn the upper tree nodes into hot spots. Instead
//! every node keeps a synthetic coordinate, learned from the round-trip
//! times it measures anyway, and carries it in the messages that place it;
//! the node deciding a placement compares distances locally.
//!
//! The algorithm is Vivaldi (Dabek, Cox, Kaashoek and Morris, SIGCOMM
//! 2004): a Euclidean position plus a *height* that models the access link
//! every path to the node crosses, refined by a spring relaxation on each
//! sample, with a per-node error estimate that weighs how far a sample may
//! move the node (a confident node moves little for an unsure one). Time and
//! randomness come from outside like everything in this crate: a sample is
//! `(remote coordinate, measured rtt)`, and the only random choice, the
//! direction two nodes at the same spot push apart, is drawn by the caller.

use serde::{Deserialize, Serialize};

/// Dimensions of the Euclidean part. Four plus the height fit Internet-like
/// delays within a few percent of what more dimensions give.
pub const DIMS: usize = 4;

/// Error estimate of a node that has not measured anything (relative error:
/// 1.0 is "could be off by the whole distance").
const INITIAL_ERROR: f64 = 1.0;
/// Weight of a sample in the error's moving average.
const ERROR_GAIN: f64 = 0.25;
/// Fraction of a sample's error a fully confident move corrects.
const MOVE_GAIN: f64 = 0.25;
/// Smallest height, in ms: every path crosses some access link.
const MIN_HEIGHT: f64 = 0.01;
/// Farthest a coordinate may stray from the origin, in ms. Nothing real is
/// this far away; it only keeps a peer's bad coordinate from making ours
/// grow without bound.
const MAX_COORD: f64 = 100_000.0;

/// A node's network coordinate. Distances are round-trip times in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coord {
    /// Position in the Euclidean part.
    pub pos: [f32; DIMS],
    /// Height above it: the node's share of every round trip it makes.
    pub height: f32,
    /// The node's own estimate of its relative error, from 0 (exact) up.
    pub error: f32,
}

impl Default for Coord {
    fn default() -> Self {
        Coord {
            pos: [0.0; DIMS],
            height: MIN_HEIGHT as f32,
            error: INITIAL_ERROR as f32,
        }
    }
}

impl Coord {
    /// Whether a coordinate from the network is usable: finite, within
    /// bounds, and with a positive height and error. Anything else is
    /// ignored, never learned from.
    pub fn is_sane(&self) -> bool {
        let finite = |v: f32| v.is_finite() && (v.abs() as f64) <= MAX_COORD;
        self.pos.iter().all(|&v| finite(v))
            && finite(self.height)
            && self.height >= 0.0
            && finite(self.error)
            && self.error > 0.0
    }

    /// The coordinate, if it is usable (see [`Coord::is_sane`]).
    pub fn checked(self) -> Option<Coord> {
        self.is_sane().then_some(self)
    }

    /// The round-trip time these coordinates predict between two nodes.
    pub fn rtt_ms(&self, other: &Coord) -> f64 {
        self.flat_distance(other) + self.height as f64 + other.height as f64
    }

    /// The predicted one-way delay, in µs.
    pub fn delay_us(&self, other: &Coord) -> u32 {
        (self.rtt_ms(other) * 500.0).clamp(0.0, u32::MAX as f64) as u32
    }

    fn flat_distance(&self, other: &Coord) -> f64 {
        self.pos
            .iter()
            .zip(other.pos.iter())
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    /// Learns from one measurement: `rtt_ms` to a node at `remote`.
    /// `direction` gives a random unit vector (see [`random_direction`]),
    /// asked for only when both nodes sit at the same spot and must be
    /// pushed apart in some direction.
    pub fn update(&mut self, remote: &Coord, rtt_ms: f64, direction: impl FnOnce() -> [f64; DIMS]) {
        if !(rtt_ms.is_finite() && rtt_ms > 0.0 && remote.is_sane()) {
            return;
        }
        let predicted = self.rtt_ms(remote);
        let (mine, theirs) = (self.error as f64, remote.error as f64);
        // A sample counts for more when we are the unsure one.
        let weight = mine / (mine + theirs).max(f64::MIN_POSITIVE);
        let sample_error = (predicted - rtt_ms).abs() / rtt_ms;
        let error = sample_error * ERROR_GAIN * weight + mine * (1.0 - ERROR_GAIN * weight);
        self.error = error.clamp(0.01, 10.0) as f32;
        // The spring between us pushes (too close) or pulls (too far) by a
        // share of the difference, along the line from the remote to us; in
        // the height model that line also has a height component.
        let force = MOVE_GAIN * weight * (rtt_ms - predicted);
        let flat = self.flat_distance(remote);
        let heights = self.height as f64 + remote.height as f64;
        let norm = flat + heights;
        let unit: [f64; DIMS] = if flat > 1e-6 {
            std::array::from_fn(|i| (self.pos[i] as f64 - remote.pos[i] as f64) / norm)
        } else {
            let direction = direction();
            std::array::from_fn(|i| direction[i] * flat.max(1.0) / norm.max(1.0))
        };
        for (p, u) in self.pos.iter_mut().zip(unit) {
            *p = (*p as f64 + force * u).clamp(-MAX_COORD, MAX_COORD) as f32;
        }
        let height = self.height as f64 + force * heights / norm.max(1e-6);
        self.height = height.clamp(MIN_HEIGHT, MAX_COORD) as f32;
    }
}

/// A random unit vector for [`Coord::update`], from the caller's RNG.
pub fn random_direction(rng: &mut impl rand::Rng) -> [f64; DIMS] {
    let mut v: [f64; DIMS] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
    let len = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
    v.iter_mut().for_each(|x| *x /= len);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Nodes at random points of a 200 ms square, each behind an access
    /// link of 1 to 10 ms: the kind of space Vivaldi's height model fits.
    fn world(n: usize, rng: &mut StdRng) -> Vec<((f64, f64), f64)> {
        (0..n)
            .map(|_| {
                let p = (rng.random_range(0.0..200.0), rng.random_range(0.0..200.0));
                (p, rng.random_range(1.0..10.0))
            })
            .collect()
    }

    fn rtt(a: &((f64, f64), f64), b: &((f64, f64), f64)) -> f64 {
        ((a.0 .0 - b.0 .0).powi(2) + (a.0 .1 - b.0 .1).powi(2)).sqrt() + a.1 + b.1
    }

    #[test]
    fn coordinates_learn_the_delays_of_a_network() {
        let mut rng = StdRng::seed_from_u64(7);
        let w = world(200, &mut rng);
        let mut c = vec![Coord::default(); w.len()];
        for _ in 0..200 {
            for i in 0..w.len() {
                let j = rng.random_range(0..w.len());
                if i == j {
                    continue;
                }
                let remote = c[j];
                c[i].update(&remote, rtt(&w[i], &w[j]), || random_direction(&mut rng));
            }
        }
        let mut errors: Vec<f64> = (0..2000)
            .filter_map(|_| {
                let (i, j) = (rng.random_range(0..w.len()), rng.random_range(0..w.len()));
                (i != j).then(|| {
                    let real = rtt(&w[i], &w[j]);
                    (c[i].rtt_ms(&c[j]) - real).abs() / real
                })
            })
            .collect();
        errors.sort_by(f64::total_cmp);
        let median = errors[errors.len() / 2];
        assert!(median < 0.1, "median relative error {median:.3}");
        assert!(c.iter().all(Coord::is_sane));
        let confident = c.iter().filter(|c| c.error < 0.3).count();
        assert!(confident > 150, "only {confident} nodes trust their place");
    }

    #[test]
    fn two_nodes_at_one_spot_move_apart_to_their_distance() {
        let mut rng = StdRng::seed_from_u64(1);
        let (mut a, mut b) = (Coord::default(), Coord::default());
        for _ in 0..100 {
            let rb = b;
            a.update(&rb, 50.0, || random_direction(&mut rng));
            let ra = a;
            b.update(&ra, 50.0, || random_direction(&mut rng));
        }
        let got = a.rtt_ms(&b);
        assert!((got - 50.0).abs() < 2.0, "predicted {got}");
    }

    #[test]
    fn bad_coordinates_from_peers_are_not_learned_from() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut a = Coord::default();
        let before = a;
        for bad in [
            Coord {
                pos: [f32::NAN; DIMS],
                ..Coord::default()
            },
            Coord {
                height: f32::INFINITY,
                ..Coord::default()
            },
            Coord {
                error: -1.0,
                ..Coord::default()
            },
            Coord {
                pos: [1e30; DIMS],
                ..Coord::default()
            },
        ] {
            assert!(!bad.is_sane());
            a.update(&bad, 10.0, || random_direction(&mut rng));
        }
        a.update(&Coord::default(), f64::NAN, || random_direction(&mut rng));
        a.update(&Coord::default(), -3.0, || random_direction(&mut rng));
        assert_eq!(a, before);
    }
}
