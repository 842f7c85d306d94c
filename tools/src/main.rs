//! `overlay`: the command-line tool for overlay multicast nodes.
//!
//! Every subcommand talks to a running node through its control socket,
//! found from the node's data directory (`--node DIR`, or `OVERLAY_NODE`).
//! `overlay node` runs a node itself (the same daemon as `overlay-node`), and
//! `overlay demo` starts a whole overlay on this machine.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use overlay_node::client::{Client, SubscriptionEvent};
use overlay_proto::Mid;
use overlay_tools::tree_view;

/// Create, join, publish to and inspect overlay multicast groups.
#[derive(Debug, Parser)]
#[command(name = "overlay", version, about)]
struct Cli {
    /// Data directory of the node to talk to.
    #[arg(long, global = true, env = "OVERLAY_NODE", value_name = "DIR")]
    node: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a group rooted at the node; prints its mid.
    Create,
    /// Make the node a member of a group; returns once attached to the tree.
    Join {
        /// The group's mid.
        mid: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// End the node's membership of a group.
    Leave {
        /// The group's mid.
        mid: String,
    },
    /// Print a group's messages as they arrive (joining first if needed).
    Subscribe {
        /// The group's mid.
        mid: String,
        /// Stop after this many messages.
        #[arg(long, value_name = "K")]
        count: Option<u64>,
        /// Start at sequence number SEQ: the messages the root still
        /// retains from SEQ on come first, then the live ones, with no gap
        /// and no duplicate.
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
        /// One JSON object per line: seq, epoch, publisher, data.
        #[arg(long)]
        json: bool,
    },
    /// Publish MESSAGE, or each line of stdin, to a group; exits 0 once the
    /// root accepted every message.
    Publish {
        /// The group's mid.
        mid: String,
        /// The message; without it, each line of stdin is one message.
        message: Option<String>,
    },
    /// Show a group's whole tree as its root sees it.
    Tree {
        /// The group's mid.
        mid: String,
        /// Nested JSON objects instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the node's id, address, neighbours and groups.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start N nodes on 127.0.0.1, build a group over them, publish, show
    /// the tree and what was delivered, and clean everything up.
    Demo {
        /// How many nodes.
        #[arg(long, default_value_t = 16)]
        nodes: usize,
        /// Fan-out bound of every node.
        #[arg(long, default_value_t = 3)]
        max_children: usize,
        /// How many messages to publish.
        #[arg(long, default_value_t = 5)]
        messages: usize,
    },
    /// Run a node (the same daemon as `overlay-node`).
    Node(Box<overlay_node::NodeArgs>),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Node(args) => overlay_node::main_with(&args),
        Cmd::Demo {
            nodes,
            max_children,
            messages,
        } => {
            overlay_node::init_runtime();
            overlay_tools::demo::run(nodes, max_children, messages)
        }
        cmd => {
            overlay_node::init_runtime();
            smol::block_on(run(cli.node, cmd))
        }
    };
    if let Err(e) = result {
        eprintln!("overlay: error: {e:#}");
        std::process::exit(1);
    }
}

fn parse_mid(s: &str) -> anyhow::Result<Mid> {
    Ok(s.parse::<Mid>()?)
}

async fn connect(node: Option<PathBuf>) -> anyhow::Result<Client> {
    let Some(dir) = node else {
        bail!("which node? pass --node DIR (the node's --data-dir) or set OVERLAY_NODE");
    };
    Ok(Client::connect_dir(&dir).await?)
}

async fn run(node: Option<PathBuf>, cmd: Cmd) -> anyhow::Result<()> {
    let client = connect(node).await?;
    let mut out = std::io::stdout().lock();
    match cmd {
        Cmd::Create => {
            writeln!(out, "{}", client.create().await?)?;
        }
        Cmd::Join { mid, timeout } => {
            let mid = parse_mid(&mid)?;
            let depth = with_timeout(timeout, client.join(mid)).await??;
            eprintln!("joined {mid} at depth {depth}");
        }
        Cmd::Leave { mid } => {
            let mid = parse_mid(&mid)?;
            client.leave(mid).await?;
            eprintln!("left {mid}");
        }
        Cmd::Subscribe {
            mid,
            count,
            from,
            json,
        } => subscribe(&client, parse_mid(&mid)?, count, from, json, &mut out).await?,
        Cmd::Publish { mid, message } => {
            publish(&client, parse_mid(&mid)?, message, &mut out).await?
        }
        Cmd::Tree { mid, json } => {
            let mid = parse_mid(&mid)?;
            let entries = client.tree(mid).await?;
            let tree = tree_view::nest(&entries).context("the root sent an empty tree")?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&tree)?)?;
            } else {
                write!(out, "{}", tree.render())?;
            }
        }
        Cmd::Status { json } => {
            let s = client.status().await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?;
            } else {
                writeln!(out, "node       {}", s.id)?;
                writeln!(out, "address    {}", s.addr)?;
                writeln!(
                    out,
                    "overlay    {}",
                    if s.joined_overlay {
                        "joined"
                    } else {
                        "not joined yet"
                    }
                )?;
                if !s.dropped.is_empty() {
                    let total: u64 = s.dropped.values().sum();
                    let kinds: Vec<String> =
                        s.dropped.iter().map(|(k, n)| format!("{k} {n}")).collect();
                    writeln!(
                        out,
                        "dropped    {total} messages their senders may not send ({})",
                        kinds.join(", ")
                    )?;
                }
                if s.refused_connections > 0 {
                    writeln!(
                        out,
                        "refused    {} connections past max_conns_per_ip or max_conns_per_subnet",
                        s.refused_connections
                    )?;
                }
                writeln!(out, "neighbours {}", s.neighbours.len())?;
                for n in &s.neighbours {
                    let mut tags = Vec::new();
                    if n.leaf {
                        tags.push("leaf");
                    }
                    if n.connected {
                        tags.push("connected");
                    }
                    writeln!(out, "  {} {} {}", n.id, n.addr, tags.join(","))?;
                }
                writeln!(out, "groups     {}", s.groups.len())?;
                for g in &s.groups {
                    let state = if g.attached { "attached" } else { "joining" };
                    writeln!(
                        out,
                        "  {} {} ({state}, depth {}, epoch {}, last message {})",
                        g.mid, g.role, g.depth, g.epoch, g.last_seq
                    )?;
                    writeln!(
                        out,
                        "    holds {} messages ({} bytes), {} waiting on a gap, {} lost",
                        g.held, g.held_bytes, g.pending, g.lost
                    )?;
                    if let Some(p) = &g.parent {
                        writeln!(out, "    parent  {p}")?;
                    }
                    for c in &g.children {
                        writeln!(out, "    child   {c}")?;
                    }
                    for r in &g.replicas {
                        writeln!(out, "    replica {r}")?;
                    }
                    if let Some(i) = &g.island {
                        let role = if i.leading {
                            "leads it".to_string()
                        } else if i.fed {
                            "fed by its leader".to_string()
                        } else {
                            "on the tree".to_string()
                        };
                        writeln!(
                            out,
                            "    island  {} with {} other members, {role}; {} messages from the tree, {} from the LAN",
                            i.address,
                            i.peers.len(),
                            g.from_tree,
                            g.from_lan
                        )?;
                        for (id, depth) in &i.peers {
                            let lead = if Some(*id) == i.leader {
                                " (leader)"
                            } else {
                                ""
                            };
                            match depth {
                                Some(d) => writeln!(out, "      {id} depth {d}{lead}")?,
                                None => writeln!(out, "      {id} not attached{lead}")?,
                            }
                        }
                    }
                }
                if let Some(l) = &s.lan {
                    writeln!(out, "multicast  {} port {}", l.interface, l.port)?;
                    writeln!(
                        out,
                        "  sent {} ({} failed, {} messages too large, {} fallback publishes), received {}, taken {}",
                        l.sent, l.send_errors, l.too_large, l.fallback_publishes, l.received, l.accepted
                    )?;
                    writeln!(
                        out,
                        "  dropped: {} forged, {} replayed, {} malformed, {} of other groups, {} own",
                        l.forged, l.replayed, l.malformed, l.foreign, l.own
                    )?;
                }
                if !s.replicas.is_empty() {
                    writeln!(out, "replicas   {}", s.replicas.len())?;
                    for r in &s.replicas {
                        let state = if r.orphaned { ", root lost" } else { "" };
                        writeln!(
                            out,
                            "  {} of root {} (epoch {}, messages {}..={}{state})",
                            r.mid, r.root, r.epoch, r.first, r.last
                        )?;
                    }
                }
            }
        }
        Cmd::Demo { .. } | Cmd::Node(_) => unreachable!("handled in main"),
    }
    Ok(())
}

async fn with_timeout<T>(secs: u64, f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    smol::future::or(async { Ok(f.await) }, async {
        smol::Timer::after(Duration::from_secs(secs)).await;
        bail!("no answer within {secs} s")
    })
    .await
}

async fn subscribe(
    client: &Client,
    mid: Mid,
    count: Option<u64>,
    from: Option<u64>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut sub = match from {
        Some(from) => client.subscribe_from(mid, from).await?,
        None => client.subscribe(mid).await?,
    };
    eprintln!(
        "subscribed to {mid} (depth {}, live from message {})",
        sub.depth, sub.next
    );
    let mut received = 0u64;
    while count.is_none_or(|c| received < c) {
        let Some(event) = sub.next().await else {
            bail!("the node closed the subscription");
        };
        match event? {
            SubscriptionEvent::Message(d) => {
                received += 1;
                let text = String::from_utf8_lossy(&d.payload);
                if json {
                    let line = serde_json::json!({
                        "mid": d.mid.to_string(),
                        "epoch": d.epoch,
                        "seq": d.seq,
                        "publisher": d.publisher.to_string(),
                        "lan_fallback": d.lan_fallback,
                        "data": text,
                    });
                    writeln!(out, "{line}")?;
                } else if d.lan_fallback {
                    // Not ordered by the root yet: it came over the LAN.
                    writeln!(out, "[lan] {}: {}", d.publisher.short(), text)?;
                } else {
                    writeln!(out, "[{}] {}: {}", d.seq, d.publisher.short(), text)?;
                }
                out.flush()?;
            }
            SubscriptionEvent::Lagged(n) => {
                eprintln!(
                    "warning: {n} messages were dropped because this subscriber read too slowly"
                );
                if json {
                    writeln!(out, "{}", serde_json::json!({ "lagged": n }))?;
                }
            }
            SubscriptionEvent::Lost { from, to } => {
                eprintln!(
                    "warning: messages {from} to {} are lost: the root no longer retained them",
                    to - 1
                );
                if json {
                    writeln!(out, "{}", serde_json::json!({ "lost": [from, to] }))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Publishes with up to this many messages awaiting the root's answer.
const PUBLISH_WINDOW: usize = 256;

async fn publish(
    client: &Client,
    mid: Mid,
    message: Option<String>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if let Some(m) = message {
        let seq = client.publish(mid, m.into_bytes()).await?;
        writeln!(out, "{seq}")?;
        return Ok(());
    }
    // Each line of stdin is one message; a read error ends the input and
    // is reported once the lines before it are published.
    let mut read_error = None;
    let lines = std::io::stdin()
        .lock()
        .lines()
        .map_while(|l| l.map_err(|e| read_error = Some(e)).ok());
    let mut write_error = None;
    let n = client
        .publish_all(mid, lines.map(String::into_bytes), PUBLISH_WINDOW, |seq| {
            if let Err(e) = writeln!(out, "{seq}") {
                write_error.get_or_insert(e);
            }
        })
        .await?;
    if let Some(e) = read_error {
        return Err(anyhow::Error::new(e).context("cannot read stdin"));
    }
    if let Some(e) = write_error {
        return Err(e.into());
    }
    eprintln!("published {n} messages to {mid}");
    Ok(())
}
