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
        let (mut first, mut last) = (None, 0);
        let payloads = (0..count).map(|k| format!("message {k} from the example"));
        client
            .publish_all(mid, payloads, 128, |seq| {
                first.get_or_insert(seq);
                last = seq;
            })
            .await?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "published {count} messages to {mid}: seq {}..{last}, {:.0} messages/s",
            first.unwrap_or(0),
            count as f64 / secs
        );
        Ok(())
    })
}
