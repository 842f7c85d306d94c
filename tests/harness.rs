//! What the integration tests share: the real binaries, built once, and a
//! way to run the CLI with a time limit.
//!
//! `cargo test` builds only the test's own package, so the first test to
//! need the binaries builds `overlay-node` and `overlay` with the same cargo
//! and profile. Clusters of nodes come from [`overlay_tools::cluster`],
//! which stops every process and removes every directory on drop, also when
//! a test fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use overlay_tools::cluster::{Cluster, Launcher};

/// Paths of the binaries under test.
#[derive(Debug)]
pub struct Bins {
    /// `overlay-node`.
    pub node: PathBuf,
    /// `overlay`.
    pub cli: PathBuf,
}

/// The binaries, built on first use.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        // target/<profile>/deps/<test> -> target/<profile>
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target directory")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "overlay-node",
            "-p",
            "overlay-tools",
            "--bins",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cannot run cargo build");
        assert!(status.success(), "building the binaries failed");
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
