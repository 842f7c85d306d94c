//! What the integration tests share: the real binaries, built once, and a
//! way to run the CLI with a time limit.
//!
//! `cargo test` builds only the test's own package, so the first test to
//! need the binaries builds `overlay-node` and `overlay` (optimized) with the
//! same cargo. Clusters of nodes come from [`overlay_tools::cluster`],
//! which stops every process and removes every directory on drop, also when
//! a test fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use overlay_node::api::Delivery;
use overlay_node::client::{Client, SubscriptionEvent};
use overlay_proto::Mid;
use overlay_tools::cluster::{Cluster, Launcher};

pub mod netns;

/// Paths of the binaries under test.
#[derive(Debug)]
pub struct Bins {
    /// `overlay-node`.
    pub node: PathBuf,
    /// `overlay`.
    pub cli: PathBuf,
}

/// The binaries, built on first use, always optimized: the tests measure
/// and stress the daemon as users run it, and two cores cannot carry two
/// dozen unoptimized daemons at full speed (their repair times would
/// measure the build, not the protocol).
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        // target/<profile>/deps/<test> -> target
        let exe = std::env::current_exe().expect("test executable path");
        let target = exe
            .parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
            .expect("target directory")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "overlay-node",
                "-p",
                "overlay-tools",
                "--bins",
            ])
            .status()
            .expect("cannot run cargo build");
        assert!(status.success(), "building the binaries failed");
        let dir = target.join("release");
        Bins {
            node: dir.join("overlay-node"),
            cli: dir.join("overlay"),
        }
    })
}

/// An empty cluster of real `overlay-node` processes.
pub fn cluster() -> Cluster {
    Cluster::new(Launcher::binary(&bins().node)).expect("cluster")
}

/// Runs `overlay --node DIR ARGS` with `stdin`, killing it after `limit`.
pub fn cli(dir: &Path, args: &[&str], stdin: Option<&str>, limit: Duration) -> Output {
    let mut cmd = Command::new(&bins().cli);
    cmd.arg("--node").arg(dir).args(args);
    run(cmd, stdin, limit)
}

/// Runs a command with `stdin`, killing it after `limit`.
pub fn run(mut cmd: Command, stdin: Option<&str>, limit: Duration) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    let text = stdin.unwrap_or("").to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = writer.join();
    child.wait_with_output().expect("output")
}

/// Stdout of a successful run, or a panic that shows what went wrong.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Stderr of a failed run, or a panic if it succeeded.
pub fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "command should have failed:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).expect("utf-8 output")
}

/// Starts `n` nodes, each bootstrapped from one or two earlier nodes chosen
/// by a simple deterministic spread (not all from the same node).
pub fn start(n: usize, extra: &[&str]) -> Cluster {
    let mut c = cluster();
    for i in 0..n {
        let boot: Vec<usize> = match i {
            0 => vec![],
            1 => vec![0],
            _ => {
                let a = (i * 7 + 3) % i;
                let b = (i * 13 + 5) % i;
                if a == b {
                    vec![a]
                } else {
                    vec![a, b]
                }
            }
        };
        c.spawn(&boot, extra).expect("node starts");
    }
    c
}

/// What a subscriber received: (seq, publisher, text), in order.
pub type Inbox = InboxOf<String>;

/// What a subscriber received: (seq, something about it, text), in order.
pub type InboxOf<T> = Arc<Mutex<Vec<(u64, T, String)>>>;

/// Subscribes node `i` and collects (seq, publisher, text) in the background.
pub async fn collect(c: &Cluster, i: usize, mid: Mid) -> (Inbox, smol::Task<()>) {
    let client = c.client(i).await.expect("client");
    collect_with(client, mid, |d, text| {
        (d.seq, d.publisher.to_string(), text)
    })
    .await
}

/// Subscribes through `client` and collects what `entry` makes of each
/// message (given the message and its payload as text) in the background.
pub async fn collect_with<T: Send + 'static>(
    client: Client,
    mid: Mid,
    entry: fn(&Delivery, String) -> T,
) -> (Arc<Mutex<Vec<T>>>, smol::Task<()>) {
    let mut sub = client.subscribe(mid).await.expect("subscribe");
    let inbox: Arc<Mutex<Vec<T>>> = Arc::default();
    let sink = inbox.clone();
    let task = smol::spawn(async move {
        let _client = client;
        while let Some(Ok(ev)) = sub.next().await {
            if let SubscriptionEvent::Message(d) = ev {
                let text = String::from_utf8_lossy(&d.payload).into_owned();
                sink.lock().unwrap().push(entry(&d, text));
            }
        }
    });
    (inbox, task)
}

/// The texts an inbox holds, in the order they came.
pub fn texts<T>(inbox: &InboxOf<T>) -> Vec<String> {
    inbox
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, t)| t.clone())
        .collect()
}

/// Waits until every inbox holds `count` messages, or `limit` passes.
pub async fn wait_for(inboxes: &[&Inbox], count: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if inboxes.iter().all(|i| i.lock().unwrap().len() >= count) {
            break;
        }
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

/// A QUIC endpoint with its own fresh identity, speaking to nodes directly:
/// a peer that completed a handshake, nothing more.
pub fn rogue_transport() -> (
    overlay_node::transport::Transport,
    overlay_node::identity::Identity,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let args = overlay_node::NodeArgs {
        data_dir: Some(dir.path().to_path_buf()),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let settings = overlay_node::Settings::resolve(&args).unwrap();
    let me = overlay_node::identity::Identity::ephemeral().unwrap();
    let transport = overlay_node::transport::Transport::bind(&settings, &me).unwrap();
    (transport, me, dir)
}
