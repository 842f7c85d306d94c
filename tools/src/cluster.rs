//! A set of real `overlay-node` processes on 127.0.0.1.
//!
//! Each node runs in its own temporary data directory with its output in
//! `DIR/node.log`. Dropping the [`Cluster`] stops every node (SIGTERM, then
//! SIGKILL for any that lingers) and removes the directories, also when the
//! code using it fails or panics.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use overlay_node::client::{node_file, Client};
use overlay_node::daemon::NodeFile;

/// How to start a node: a program and the arguments that come before the
/// node's own flags.
#[derive(Debug, Clone)]
pub struct Launcher {
    program: PathBuf,
    prefix: Vec<String>,
}

impl Launcher {
    /// Runs `program` (an `overlay-node` binary).
    pub fn binary(program: impl Into<PathBuf>) -> Self {
        Launcher {
            program: program.into(),
            prefix: Vec::new(),
        }
    }

    /// Runs the `overlay` executable that sits beside the current one, as
    /// `overlay node` (for tools built in the same package).
    pub fn sibling_overlay() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the current executable")?;
        let program = exe.with_file_name("overlay");
        if !program.exists() {
            bail!(
                "{} not found: build it with `cargo build --release -p overlay-tools`",
                program.display()
            );
        }
        Ok(Launcher {
            program,
            prefix: vec!["node".into()],
        })
    }

    /// Runs the current executable as `overlay node`.
    pub fn this_exe() -> anyhow::Result<Self> {
        Ok(Launcher {
            program: std::env::current_exe().context("cannot find the overlay executable")?,
            prefix: vec!["node".into()],
        })
    }
}

/// One running node.
#[derive(Debug)]
pub struct NodeProcess {
    /// Its data directory.
    pub dir: PathBuf,
    /// What it wrote to `node.json`.
    pub info: NodeFile,
    args: Vec<String>,
    child: Option<Child>,
}

impl NodeProcess {
    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// A set of nodes that is stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    launcher: Launcher,
    /// The nodes, in the order started.
    pub nodes: Vec<NodeProcess>,
    root: tempfile::TempDir,
}

impl Cluster {
    /// An empty cluster whose nodes will be started by `launcher`.
    pub fn new(launcher: Launcher) -> anyhow::Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("overlay-cluster-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        Ok(Cluster {
            launcher,
            nodes: Vec::new(),
            root,
        })
    }

    /// The directory that holds every node's data directory.
    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// Starts a node on 127.0.0.1 (free port) bootstrapped from the nodes at
    /// the given indices, with `extra` flags; returns once it wrote its
    /// `node.json`.
    pub fn spawn(&mut self, bootstrap: &[usize], extra: &[&str]) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let dir = self.root.path().join(format!("node{i:03}"));
        fs::create_dir_all(&dir)?;
        let mut args: Vec<String> = self.launcher.prefix.clone();
        args.extend([
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ]);
        for &b in bootstrap {
            args.extend(["--bootstrap".into(), self.nodes[b].info.addr.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn_with(dir, &args)
    }

    /// Starts a node with exactly these arguments, whose data directory is
    /// `dir` (so a killed node can be restarted with its identity).
    pub fn spawn_with(&mut self, dir: PathBuf, args: &[String]) -> anyhow::Result<usize> {
        let node = self.launch(dir, args)?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// Starts node `i` again, after it stopped or was killed, with the same
    /// data directory (so the same identity) and the same arguments; its
    /// QUIC port may differ. Returns once it wrote its `node.json`.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].is_running() {
            bail!("node {i} is still running");
        }
        let (dir, args) = (self.nodes[i].dir.clone(), self.nodes[i].args.clone());
        self.nodes[i] = self.launch(dir, &args)?;
        Ok(())
    }

    fn launch(&mut self, dir: PathBuf, args: &[String]) -> anyhow::Result<NodeProcess> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))?;
        let child = Command::new(&self.launcher.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.launcher.program.display()))?;
        let mut node = NodeProcess {
            dir: dir.clone(),
            info: NodeFile {
                id: overlay_proto::NodeId(0),
                addr: "0.0.0.0:0".parse().expect("literal"),
                control: PathBuf::new(),
                pid: child.id(),
            },
            args: args.to_vec(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(info) = node_file(&dir) {
                if info.pid == node.info.pid {
                    node.info = info;
                    break;
                }
            }
            if !node.is_running() {
                let log = fs::read_to_string(dir.join("node.log")).unwrap_or_default();
                bail!("node {} exited at start:\n{log}", dir.display());
            }
            if Instant::now() > deadline {
                bail!("node {} did not write node.json within 20 s", dir.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(node)
    }

    /// A control-socket client for node `i`.
    pub async fn client(&self, i: usize) -> anyhow::Result<Client> {
        Client::connect(&self.nodes[i].info.control)
            .await
            .with_context(|| format!("cannot reach node {i}"))
    }

    /// Waits until every running node reports that it entered the overlay.
    pub async fn wait_overlay(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() {
                continue;
            }
            let client = self.client(i).await?;
            while !client.status().await?.joined_overlay {
                if Instant::now() > deadline {
                    bail!("node {i} did not enter the overlay within {timeout:?}");
                }
                smol::Timer::after(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Sends `signal` to node `i`.
    pub fn signal(&mut self, i: usize, signal: Signal) {
        if let Some(c) = &self.nodes[i].child {
            let _ = kill(Pid::from_raw(c.id() as i32), signal);
        }
    }

    /// Stops node `i` with SIGTERM and waits for it (SIGKILL after 5 s).
    /// Returns its exit status code, if it exited on its own.
    pub fn stop(&mut self, i: usize) -> Option<i32> {
        self.signal(i, Signal::SIGTERM);
        let mut child = self.nodes[i].child.take()?;
        wait_or_kill(&mut child, Duration::from_secs(5))
    }

    /// Kills node `i` with SIGKILL: no goodbye.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Resident memory of node `i` in KiB, from `/proc` (Linux).
    pub fn rss_kib(&self, i: usize) -> Option<u64> {
        rss_kib_of(self.nodes[i].info.pid)
    }

    /// The log of node `i`.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(self.nodes[i].dir.join("node.log")).unwrap_or_default()
    }
}

fn wait_or_kill(child: &mut Child, grace: Duration) -> Option<i32> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.code(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

impl Drop for Cluster {
    /// Stops every node. The directories go too, unless
    /// `OVERLAY_KEEP_CLUSTER` is set (to read the nodes' logs after a
    /// failure).
    fn drop(&mut self) {
        if std::env::var_os("OVERLAY_KEEP_CLUSTER").is_some() {
            let dir = std::mem::replace(&mut self.root, tempfile::TempDir::new().expect("tempdir"));
            eprintln!(
                "keeping the cluster's directories in {}",
                dir.keep().display()
            );
        }
        for n in &self.nodes {
            if let Some(c) = &n.child {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            }
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                wait_or_kill(&mut c, Duration::from_secs(3));
            }
        }
    }
}

/// Resident memory of process `pid` in KiB, from `/proc` (Linux).
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
