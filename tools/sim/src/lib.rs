//! `overlay-sim`: the overlay's real protocol state machines
//! ([`overlay_proto::Node`]) on a simulated network of up to 100,000 nodes,
//! in virtual time, measured against the ALM literature.
//!
//! - [`Sim`] (the engine): a deterministic network that runs many nodes in
//!   virtual time, on several threads for large runs, with every message
//!   through the real codec; a [`Network`] gives it the delays. The
//!   protocol's own multi-node tests (`tests/`) run on it with a fixed
//!   delay. It lives here, not in `overlay-proto`, so that the protocol
//!   crate ships no thread pool and no simulator.
//! - [`topology`]: the physical network (transit-stub or Euclidean), delays
//!   and shortest paths;
//! - [`net`]: the [`Network`] the nodes talk over, which
//!   also counts what crosses each link;
//! - [`scenario`]: what a run does, from TOML and flags;
//! - [`run`](mod@run): the phases of a run and the measurements;
//! - [`reference`](mod@reference): the same groups built centrally, to compare with;
//! - [`report`]: the figures, as a table beside the targets or as JSON;
//! - [`plot`]: the distributions and one group's tree, as SVG (`--plot`).
//!
//! Everything random comes from the scenario's seed, and the simulated
//! network delivers events in a fixed order, so a seed gives the same
//! figures every time.

mod engine;
pub mod net;
pub mod plot;
pub mod reference;
pub mod report;
pub mod run;
pub mod scenario;
pub mod topology;

pub use engine::{FixedDelay, Network, Sim};
pub use report::Report;
pub use run::{run, Observe};
pub use scenario::Scenario;

/// Peak resident memory of this process so far, in MiB (Linux only).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
