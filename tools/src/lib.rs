//! Tools around the overlay daemon: the `overlay` command-line tool and the
//! pieces it shares with the integration tests.
//!
//! - [`cluster`]: starts real `overlay-node` processes on 127.0.0.1, each in
//!   its own temporary data directory, and always cleans them up;
//! - [`tree_view`]: turns the flat tree report of a group's root into a
//!   nested tree, printed as text or JSON;
//! - [`demo`]: `overlay demo`, a whole overlay on one machine in a minute.
//!
//! The simulator, `overlay-sim`, is a crate of its own (`tools/sim`).

pub mod cluster;
pub mod demo;
pub mod tree_view;
