//! `overlay-sim`: runs the overlay's real protocol state machines on a
//! simulated network of thousands of nodes, in virtual time, and prints
//! what the trees look like beside the targets from the ALM literature.
//!
//! ```text
//! overlay-sim                          # 10,000 nodes, 1,000 groups, 10% churn
//! overlay-sim --nodes 100000           # the large run
//! overlay-sim --no-proximity           # without proximity neighbour selection
//! overlay-sim --scenario my.toml --json
//! overlay-sim --plot plots             # also plots (SVG) and one tree drawn
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use overlay_sim::{self as sim, scenario::Model, Scenario};

// Messages are made on one simulation thread and dropped on the other;
// mimalloc frees across threads without the lock glibc's arenas take.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Simulate an overlay with the real protocol and measure its trees.
///
/// Flags override the scenario file, which overrides the defaults.
#[derive(Debug, Parser)]
#[command(name = "overlay-sim", version, about)]
struct Args {
    /// A TOML scenario file (keys as the flags, with underscores).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Seed of every random choice.
    #[arg(long)]
    seed: Option<u64>,
    /// Overlay nodes.
    #[arg(long)]
    nodes: Option<usize>,
    /// Groups.
    #[arg(long)]
    groups: Option<usize>,
    /// Physical network model.
    #[arg(long, value_enum)]
    model: Option<Model>,
    /// Turn proximity neighbour selection off (in routing tables, and tree
    /// placement with it).
    #[arg(long)]
    no_proximity: bool,
    /// Turn tree placement off (nodes stay where their joins put them).
    #[arg(long)]
    no_placement: bool,
    /// Percent by which a path through a child may be longer for a
    /// placement to go down to it.
    #[arg(long)]
    placement_slack_pct: Option<u16>,
    /// How many of its nearest routing-table neighbours a tree node asks
    /// directly for a place.
    #[arg(long)]
    placement_asks: Option<usize>,
    /// How much longer, in percent, a tree node's path from the root may
    /// grow when it steps down to a link half as long (0: never).
    #[arg(long)]
    step_down_pct: Option<u16>,
    /// Also build the "within budget" reference trees at these slacks
    /// (percent, comma-separated), to show the trade between stretch and
    /// link stress that a builder who sees everything makes.
    #[arg(long, value_delimiter = ',')]
    reference_slacks: Vec<u16>,
    /// Virtual seconds the trees settle between the last join and the
    /// measurements.
    #[arg(long)]
    settle_secs: Option<f64>,
    /// Share of nodes that crash (and arrive) during the churn phase.
    #[arg(long)]
    churn: Option<f64>,
    /// Length of the churn phase, in virtual seconds.
    #[arg(long)]
    churn_secs: Option<f64>,
    /// Fan-out bound (children per node per group).
    #[arg(long)]
    max_children: Option<usize>,
    /// Fewest members of a group.
    #[arg(long)]
    min_group: Option<usize>,
    /// Encode and decode every message (slower).
    #[arg(long)]
    codec: bool,
    /// Parts the nodes are split into, run at once on up to as many
    /// threads (the figures depend on it, not on the threads).
    #[arg(long)]
    parts: Option<usize>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write plots into DIR (created if missing): stretch.svg,
    /// children.svg, link-stress.svg, and one small group's tree as
    /// tree.dot and tree.svg.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Say what the run is doing on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Log what these nodes (indices, comma-separated, in the order they
    /// were added) do, at the level `OVERLAY_SIM_TRACE` sets (`debug` by
    /// default), on stderr. Unlike a `RUST_LOG` span filter, this leaves
    /// the other nodes' logs unlooked-at, so the run keeps its speed.
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    trace_node: Vec<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut scn = match &args.scenario {
        Some(path) => Scenario::from_file(path)?,
        None => Scenario::default(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = args.$f { scn.$f = v; } )* };
    }
    set!(
        seed,
        nodes,
        groups,
        model,
        churn,
        churn_secs,
        max_children,
        min_group,
        settle_secs,
        parts
    );
    if args.no_proximity {
        scn.proximity = false;
        scn.placement = false;
    }
    if args.no_placement {
        scn.placement = false;
    }
    if let Some(n) = args.placement_asks {
        scn.placement_asks = Some(n);
    }
    if let Some(p) = args.step_down_pct {
        scn.step_down_pct = Some(p);
    }
    if let Some(p) = args.placement_slack_pct {
        scn.placement_slack_pct = Some(p);
    }
    if !args.reference_slacks.is_empty() {
        scn.reference_slacks = args.reference_slacks.clone();
    }
    if args.codec {
        scn.codec = true;
    }
    if let Some(dir) = &args.plot {
        // Fail now rather than after a run of minutes.
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "could not create the plot directory {}: give --plot a directory you can write to",
                dir.display()
            )
        })?;
    }
    let trace = (!args.trace_node.is_empty()).then(|| {
        let filter = std::env::var("OVERLAY_SIM_TRACE").unwrap_or_else(|_| "debug".into());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .finish();
        (args.trace_node.clone(), tracing::Dispatch::new(subscriber))
    });
    let observe = sim::Observe {
        progress: args.verbose,
        trace,
    };
    let mut report = sim::run(&scn, observe).context("the simulation could not run")?;
    report.peak_rss_mib = sim::peak_rss_mib();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if let Some(dir) = &args.plot {
        if report.stress.is_none() {
            eprintln!(
                "no link-stress.svg: the {:?} model has no physical links",
                scn.model
            );
        }
        if report.trees.drawing.is_none() {
            eprintln!("no tree.dot or tree.svg: no group had exactly one root");
        }
        for path in sim::plot::write_plots(&report, dir)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
