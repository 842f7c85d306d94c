//! Tools around the overlay daemon: the `overlay` command-line tool and the
//! pieces it shares with the integration tests.
//!
//! - [`cluster`]: starts real `overlay-node` processes on 127.0.0.1, each in
//!   its own temporary data directory, and always cleans them up;
//! - [`tree_view`]: turns the flat tree report of a group's root into a
//!   nested tree, printed as text or JSON;
//! - [`demo`]: `overlay demo`, a whole overlay on one machine in a minute;
//! - [`sim`]: `overlay-sim`, the real protocol on a simulated network of up
//!   to 100,000 nodes, measured.

pub mod cluster;
pub mod demo;
pub mod sim;
pub mod tree_view;
