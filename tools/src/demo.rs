//! `overlay demo`: a whole overlay on this machine.
//!
//! Starts N nodes on 127.0.0.1 (each bootstrapped from one or two earlier
//! ones), creates a group on the first, joins every other node, subscribes
//! everywhere, publishes a few messages from members, then prints the tree
//! and what every member received. Every process and directory it made is
//! removed at the end, also on error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use overlay_node::client::SubscriptionEvent;

use crate::cluster::{Cluster, Launcher};
use crate::tree_view;

/// What each node received: (seq, text) in arrival order.
type Received = Arc<Mutex<Vec<Vec<(u64, String)>>>>;

/// Runs the demo.
pub fn run(nodes: usize, max_children: usize, messages: usize) -> anyhow::Result<()> {
    if nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    // Ctrl-C must not leave nodes or directories behind: the signal ends the
    // demo's future, and dropping the cluster cleans up.
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term])
            .context("cannot watch for Ctrl-C")?;
    let mut cluster = Cluster::new(Launcher::this_exe()?)?;
    let max = max_children.to_string();
    println!(
        "Starting {nodes} overlay nodes on 127.0.0.1 (--max-children {max_children}) in {}",
        cluster.path().display()
    );
    let started = Instant::now();
    for i in 0..nodes {
        // Each node enters through one or two earlier nodes, not all
        // through the first.
        let bootstrap: Vec<usize> = match i {
            0 => vec![],
            1 => vec![0],
            _ => vec![i - 1, (i * 7) % i],
        };
        cluster.spawn(&bootstrap, &["--max-children", &max])?;
    }
    let demo = async {
        cluster.wait_overlay(Duration::from_secs(30)).await?;
        println!(
            "All {nodes} nodes are in the overlay after {:.1} s.",
            started.elapsed().as_secs_f64()
        );
        demo_group(&cluster, messages).await
    };
    let interrupted = async {
        use smol::stream::StreamExt;
        signals.next().await;
        bail!("interrupted; stopping the nodes and removing their directories")
    };
    smol::block_on(smol::future::or(demo, interrupted))
}

async fn demo_group(cluster: &Cluster, messages: usize) -> anyhow::Result<()> {
    let n = cluster.nodes.len();
    let root = cluster.client(0).await?;
    let mid = root.create().await?;
    println!("\nNode 0 created group {mid} and is its root.");

    // Every node subscribes; for all but the root, that is a join routed
    // toward the root through the overlay.
    let received: Received = Arc::new(Mutex::new(vec![Vec::new(); n]));
    let mut join_times = Vec::new();
    let mut tasks = Vec::new();
    let mut subscribing = Vec::new();
    for i in 0..n {
        let client = cluster.client(i).await?;
        subscribing.push(smol::spawn(async move {
            let t = Instant::now();
            let sub = client.subscribe(mid).await;
            (i, t.elapsed(), sub, client)
        }));
    }
    for s in subscribing {
        let (i, took, sub, client) = s.await;
        let mut sub = sub.with_context(|| format!("node {i} could not join"))?;
        if i > 0 {
            join_times.push(took);
        }
        let received = received.clone();
        tasks.push(smol::spawn(async move {
            let _keep = client;
            while let Some(Ok(SubscriptionEvent::Message(d))) = sub.next().await {
                let text = String::from_utf8_lossy(&d.payload).into_owned();
                received.lock().expect("lock")[i].push((d.seq, text));
            }
        }));
    }
    join_times.sort();
    println!(
        "{} nodes joined: join latency median {:.0} ms, max {:.0} ms.",
        n - 1,
        join_times[join_times.len() / 2].as_secs_f64() * 1e3,
        join_times.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );

    let tree = tree_view::nest(&root.tree(mid).await?).context("empty tree")?;
    println!("\nThe tree as the root sees it:\n{}", tree.render());

    println!("Publishing {messages} messages from members...");
    for k in 0..messages {
        let from = 1 + (k * 5) % (n - 1);
        let client = cluster.client(from).await?;
        let seq = client
            .publish(mid, format!("hello #{k} from node {from}"))
            .await?;
        println!("  node {from:>2} published \"hello #{k} from node {from}\" -> seq {seq}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if received
            .lock()
            .expect("lock")
            .iter()
            .all(|r| r.len() >= messages)
        {
            break;
        }
        smol::Timer::after(Duration::from_millis(20)).await;
    }
    let received = received.lock().expect("lock").clone();
    let total: usize = received.iter().map(Vec::len).sum();
    let same_order = received.iter().all(|r| r == &received[0]);
    println!("\nDelivery summary");
    println!("  members           {n}");
    println!("  tree depth        {}", tree.depth());
    println!("  most children     {}", tree.max_children());
    println!(
        "  forwarders        {}",
        tree.all().iter().filter(|t| !t.member).count()
    );
    println!(
        "  delivered         {total} of {} (messages x members)",
        messages * n
    );
    println!(
        "  same order at all {}",
        if same_order { "yes" } else { "NO" }
    );
    if total != messages * n || !same_order {
        bail!("not every member received every message in the same order");
    }
    println!("\nStopping the nodes and removing their directories.");
    Ok(())
}
