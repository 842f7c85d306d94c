//! `overlay-bench`: end-to-end throughput and memory of real daemons.
//!
//! ```text
//! cargo build --release -p overlay-tools
//! target/release/overlay-bench --nodes 16 --messages 20000 --size 256
//! target/release/overlay-bench --nodes 100 --max-children 8 --messages 2000
//! ```
//!
//! Starts N `overlay node` processes on 127.0.0.1 (each bootstrapped from
//! one or two earlier nodes), makes every node a member of one group,
//! publishes M messages of S bytes from one member with W publishes in
//! flight, and waits until every member received every message. Prints the
//! join latency, the tree's shape, the delivery rate and each daemon's
//! resident memory before and after. The subscribers run in this process,
//! on the same cores as the daemons, so the figures are for the whole
//! machine doing all the work.
//!
//! With `--stall SECS` it measures memory under a stalled reader instead:
//! one more subscriber, on the last node, subscribes and never reads, while
//! the publisher sends at full speed for SECS seconds. It samples every
//! daemon's resident memory each second and prints the largest, which the
//! bounded queues must keep under 64 MiB:
//!
//! ```text
//! target/release/overlay-bench --stall 30 --size 1024
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use overlay_node::client::SubscriptionEvent;
use overlay_tools::cluster::{Cluster, Launcher};
use overlay_tools::tree_view;

/// Measures end-to-end delivery through a tree of real daemons.
#[derive(Debug, Parser)]
#[command(name = "overlay-bench", about)]
struct Args {
    /// Number of daemons.
    #[arg(long, default_value_t = 16)]
    nodes: usize,
    /// Fan-out bound of every daemon.
    #[arg(long, default_value_t = 3)]
    max_children: usize,
    /// Messages to publish.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Publishes awaiting the root's answer at once.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// Instead of a fixed number of messages, publish for this many seconds
    /// while one subscriber never reads, and report the daemons' memory.
    #[arg(long, value_name = "SECS")]
    stall: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    overlay_node::init_runtime();
    if args.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    let mut cluster = Cluster::new(Launcher::sibling_overlay()?)?;
    let max = args.max_children.to_string();
    for i in 0..args.nodes {
        let boot = match i {
            0 => vec![],
            1 => vec![0],
            _ => vec![i - 1, (i * 7) % i],
        };
        cluster.spawn(&boot, &["--max-children", &max])?;
    }
    smol::block_on(bench(&mut cluster, &args))
}

async fn bench(cluster: &mut Cluster, args: &Args) -> anyhow::Result<()> {
    let n = cluster.nodes.len();
    cluster.wait_overlay(Duration::from_secs(60)).await?;
    let rss_idle: Vec<u64> = (0..n).filter_map(|i| cluster.rss_kib(i)).collect();
    let mid = cluster.client(0).await?.create().await?;

    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let lagged = Arc::new(AtomicU64::new(0));
    let mut joins = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = cluster.client(i).await?;
        let t = Instant::now();
        let mut sub = client
            .subscribe(mid)
            .await
            .with_context(|| format!("node {i} could not join"))?;
        if i > 0 {
            joins.push(t.elapsed());
        }
        let counts = counts.clone();
        let lagged = lagged.clone();
        tasks.push(smol::spawn(async move {
            let _client = client;
            while let Some(Ok(ev)) = sub.next().await {
                match ev {
                    SubscriptionEvent::Message(_) => counts[i].fetch_add(1, Ordering::Relaxed),
                    _ => lagged.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    joins.sort();
    let tree = tree_view::nest(&cluster.client(0).await?.tree(mid).await?).context("empty tree")?;

    let publisher = cluster.client(1).await?;
    let payload = bytes::Bytes::from(vec![b'x'; args.size]);
    if let Some(secs) = args.stall {
        return stall(cluster, args, mid, secs, &counts, &lagged, &rss_idle).await;
    }
    let start = Instant::now();
    let payloads = (0..args.messages).map(|_| payload.clone());
    publisher
        .publish_all(mid, payloads, args.window, |_| {})
        .await?;
    let accepted = start.elapsed();
    if lagged.load(Ordering::Relaxed) > 0 {
        bail!("a subscriber lagged: this process could not keep up with the daemons");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while counts
        .iter()
        .any(|c| c.load(Ordering::Relaxed) < args.messages)
    {
        if Instant::now() > deadline {
            bail!("not every member received every message within 120 s");
        }
        smol::Timer::after(Duration::from_millis(5)).await;
    }
    let delivered = start.elapsed();
    let rss_after: Vec<u64> = (0..n).filter_map(|i| cluster.rss_kib(i)).collect();
    drop(tasks);

    let secs = delivered.as_secs_f64();
    let per_member = args.messages as f64 / secs;
    println!(
        "nodes                 {n} (max children {})",
        args.max_children
    );
    println!("tree depth            {}", tree.depth());
    println!("most children         {}", tree.max_children());
    println!(
        "join latency          median {:.1} ms, max {:.1} ms",
        ms(joins[joins.len() / 2]),
        ms(*joins.last().expect("n >= 2"))
    );
    println!(
        "messages              {} of {} bytes, window {}",
        args.messages, args.size, args.window
    );
    println!("all accepted after    {:.2} s", accepted.as_secs_f64());
    println!("all delivered after   {secs:.2} s");
    println!(
        "rate per member       {per_member:.0} msg/s, {:.1} MB/s",
        per_member * args.size as f64 / 1e6
    );
    println!(
        "deliveries in total   {:.0} msg/s, {:.1} MB/s",
        per_member * n as f64,
        per_member * n as f64 * args.size as f64 / 1e6
    );
    println!(
        "RSS per daemon        idle median {} KiB, max {} KiB; after median {} KiB, max {} KiB",
        median(&rss_idle),
        rss_idle.iter().max().unwrap_or(&0),
        median(&rss_after),
        rss_after.iter().max().unwrap_or(&0)
    );
    Ok(())
}

/// Publishes at full speed for `secs` while a subscriber on the last node
/// never reads; samples every daemon's memory once a second.
async fn stall(
    cluster: &Cluster,
    args: &Args,
    mid: overlay_proto::Mid,
    secs: u64,
    counts: &[AtomicU64],
    lagged: &AtomicU64,
    rss_idle: &[u64],
) -> anyhow::Result<()> {
    use overlay_node::api::{self, ClientFrame, Request};
    use std::io::Write;
    let n = cluster.nodes.len();
    let stalled_node = n - 1;
    // A raw control connection that subscribes and then never reads.
    let mut stalled =
        std::os::unix::net::UnixStream::connect(&cluster.nodes[stalled_node].info.control)?;
    let frame = ClientFrame {
        id: 1,
        request: Request::Subscribe { mid, from: None },
    };
    stalled.write_all(&api::encode(&frame)?)?;

    let pids: Vec<u32> = cluster.nodes.iter().map(|p| p.info.pid).collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut max = vec![0u64; pids.len()];
            while !done.load(Ordering::Relaxed) {
                for (i, pid) in pids.iter().enumerate() {
                    if let Some(kib) = overlay_tools::cluster::rss_kib_of(*pid) {
                        max[i] = max[i].max(kib);
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            max
        })
    };
    let publisher = cluster.client(1).await?;
    let payload = bytes::Bytes::from(vec![b'x'; args.size]);
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let payloads = std::iter::from_fn(|| (Instant::now() < until).then(|| payload.clone()));
    let published = publisher
        .publish_all(mid, payloads, args.window, |_| {})
        .await?;
    smol::Timer::after(Duration::from_secs(2)).await;
    done.store(true, Ordering::Relaxed);
    let max = sampler.join().expect("sampler");
    let elapsed = start.elapsed().as_secs_f64();
    let least = counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    println!(
        "nodes                 {n} (max children {})",
        args.max_children
    );
    println!(
        "published             {published} messages of {} bytes in {secs} s ({:.0} msg/s)",
        args.size,
        published as f64 / secs as f64
    );
    println!("stalled subscriber    on node {stalled_node}, never read");
    println!(
        "readers               fewest messages received {least}; lag reports {}",
        lagged.load(Ordering::Relaxed)
    );
    println!(
        "RSS per daemon        idle median {} KiB; max during the run: median {} KiB, largest {} KiB",
        median(rss_idle),
        median(&max),
        max.iter().max().unwrap_or(&0)
    );
    println!(
        "RSS of the daemon with the stalled subscriber: max {} KiB",
        max[stalled_node]
    );
    println!("(run took {elapsed:.1} s)");
    drop(stalled);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}
