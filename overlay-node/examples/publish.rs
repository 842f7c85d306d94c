//! An application that publishes to a group through a local node.
//!
//! ```text
//! cargo run -p overlay-node --example publish -- DATA_DIR MID [COUNT]
//! ```
//!
//! Connects to the node whose data directory is DATA_DIR, publishes COUNT
//! messages (default 10) with up to 128 awaiting the root's acceptance at a
//! time, and prints the sequence numbers the root gave them and the rate.

use std::time::Instant;

use anyhow::Context;
use overlay_node::client::Client;
use overlay_proto::Mid;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: publish DATA_DIR MID [COUNT]";
    let dir = args.next().context(usage)?;
    let mid: Mid = args.next().context(usage)?.parse()?;
    let count: u64 = args
        .next()
        .map(|c| c.parse())
        .transpose()
        .context("COUNT must be a number")?
        .unwrap_or(10);

    smol::block_on(async {
        let client = Client::connect_dir(&dir).await?;
        let start = Instant::now();
        let mut window = std::collections::VecDeque::new();
        let (mut first, mut last) = (None, 0);
        for k in 0..count {
            if window.len() >= 128 {
                let p: overlay_node::client::PendingPublish =
                    window.pop_front().expect("non-empty");
                last = p.accepted().await?;
                first.get_or_insert(last);
            }
            window.push_back(
                client
                    .start_publish(mid, format!("message {k} from the example"))
                    .await?,
            );
        }
        for p in window {
            last = p.accepted().await?;
            first.get_or_insert(last);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "published {count} messages to {mid}: seq {}..{last}, {:.0} messages/s",
            first.unwrap_or(0),
            count as f64 / secs
        );
        Ok(())
    })
}
