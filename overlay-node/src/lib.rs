//! The overlay multicast daemon and the API applications use to talk to it.
//!
//! `overlay-node` runs one overlay node. It drives the sans-IO protocol state
//! machine of [`overlay_proto`] with real I/O:
//!
//! - [`identity`] and [`tls`]: the node's key, kept in its data directory,
//!   and TLS 1.3 in which each side proves it holds the key its node id is
//!   the hash of;
//! - [`transport`]: QUIC with quinn on the smol runtime, one connection per
//!   peer pair, one long-lived stream per direction, bounded write queues;
//! - [`daemon`]: the actor that owns the state machine, the connections,
//!   the timers and the control clients, and never waits on any one peer;
//! - `admission`: caps on the connections peers open per IP address and
//!   per subnet, checked before a handshake costs anything (any peer that
//!   completes a handshake may be malicious, and one host can make many
//!   keys);
//! - [`control`] and [`api`]: the Unix-domain control socket and its
//!   protocol, through which the `overlay` CLI and applications create,
//!   join, subscribe, publish, leave and inspect;
//! - [`client`]: the Rust client for that socket;
//! - [`config`]: flags, the TOML config file and defaults;
//! - [`multicast`]: the optional network-level multicast on one LAN
//!   interface (group addresses and the UDP socket; the datagrams and
//!   their sealing are [`overlay_proto::lan`]).

mod admission;
pub mod api;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod identity;
pub mod multicast;
mod subscribers;
pub mod tls;
pub mod transport;

pub use config::{NodeArgs, Settings};

/// Runs the daemon with these flags until SIGINT or SIGTERM. The entry point
/// of `overlay-node` and of `overlay node`.
pub fn main_with(args: &NodeArgs) -> anyhow::Result<()> {
    init_runtime();
    let settings = Settings::resolve(args)?;
    smol::block_on(daemon::run(settings))
}

/// Sets up logging (quiet unless `RUST_LOG` says otherwise) and the number
/// of executor threads, before anything is spawned.
pub fn init_runtime() {
    // smol's global executor reads SMOL_THREADS once, at its first spawn;
    // quinn's protocol work runs there and one thread is its default.
    if std::env::var_os("SMOL_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        // SAFETY-free in edition 2021: called before any thread is started.
        std::env::set_var("SMOL_THREADS", threads.to_string());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
