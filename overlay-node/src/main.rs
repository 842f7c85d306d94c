//! `overlay-node`: runs one node of the overlay. See `overlay-node --help`.

use clap::Parser;

/// Runs one node of the overlay multicast network.
#[derive(Debug, Parser)]
#[command(name = "overlay-node", version, about)]
struct Cli {
    #[command(flatten)]
    node: overlay_node::NodeArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = overlay_node::main_with(&cli.node) {
        eprintln!("overlay-node: error: {e:#}");
        std::process::exit(1);
    }
}
