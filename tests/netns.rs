//! Hosts made by the test: network namespaces joined by veth pairs and
//! Linux bridges (iproute2), with addresses that exist only inside them.
//!
//! Nothing here touches the machine's own interfaces: every link is made
//! inside the namespaces a [`Lab`] creates, and every namespace goes when
//! the lab is dropped, also when a test fails. Making namespaces needs
//! root (CAP_SYS_ADMIN); without it [`Lab::new`] says why and the test
//! skips, except under `CI=true`, where a missing capability fails it.

use std::process::Command;

/// A set of network namespaces, deleted on drop.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
}

impl Lab {
    /// A new, empty lab; `None` (with the reason printed) where namespaces
    /// cannot be made and `CI` is not `true`.
    pub fn new(name: &str) -> Option<Lab> {
        let tag = format!("ovl{}{name}", std::process::id() % 100_000);
        let mut lab = Lab {
            tag,
            namespaces: Vec::new(),
        };
        let probe = lab.name("probe");
        match Command::new("ip").args(["netns", "add", &probe]).output() {
            Ok(o) if o.status.success() => {
                lab.namespaces.push(probe);
                Some(lab)
            }
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => format!("cannot run ip: {e} (install iproute2)"),
                };
                let why = format!("cannot make network namespaces ({why}): run as root");
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
                eprintln!("skipped: {why}");
                None
            }
        }
    }

    /// The full name of this lab's namespace `short`.
    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.tag)
    }

    /// Makes namespace `short`, with its loopback up.
    pub fn host(&mut self, short: &str) -> String {
        let ns = self.name(short);
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// Makes bridge `br` in namespace `ns`, without multicast snooping (so
    /// that it floods group traffic like a plain switch).
    pub fn bridge(&self, ns: &str, br: &str) {
        ip(&[
            "-n",
            ns,
            "link",
            "add",
            br,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", ns, "link", "set", br, "up"]);
    }

    /// Plugs namespace `host` into bridge `br` of namespace `switch`: a
    /// veth pair, `ifname` in the host with address `addr` (CIDR), `port`
    /// on the bridge.
    pub fn plug(&self, host: &str, ifname: &str, addr: &str, switch: &str, br: &str, port: &str) {
        ip(&[
            "-n", switch, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns",
            host,
        ]);
        ip(&["-n", switch, "link", "set", port, "master", br]);
        ip(&["-n", switch, "link", "set", port, "up"]);
        ip(&["-n", host, "addr", "add", addr, "dev", ifname]);
        ip(&["-n", host, "link", "set", ifname, "up"]);
    }

    /// Routes everything from `host` through `gateway`.
    pub fn default_route(&self, host: &str, gateway: &str) {
        ip(&["-n", host, "route", "add", "default", "via", gateway]);
    }

    /// Lets namespace `ns` forward packets between its interfaces.
    pub fn forward(&self, ns: &str) {
        sh(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            // /proc/sys/net is the namespace's own for a process inside it.
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ]));
    }

    /// Brings interface `ifname` of namespace `ns` up or down.
    pub fn link(&self, ns: &str, ifname: &str, up: bool) {
        ip(&[
            "-n",
            ns,
            "link",
            "set",
            ifname,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}

fn ip(args: &[&str]) {
    sh(Command::new("ip").args(args));
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("cannot run ip (install iproute2)");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread of its own inside namespace `ns` (sockets it
/// opens live there).
pub fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("the thread in the namespace panicked")
}
