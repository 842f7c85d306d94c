//! IP multicast on a LAN, between real daemons on hosts the test makes with
//! network namespaces:
//!
//! ```text
//!   h1  h2  h3  h4            h5 (root)  h6
//!    \   \  /   /               \       /
//!     [ br0: 10.77.1.0/24 ]--r--[ br1: 10.77.2.0/24 ]
//! ```
//!
//! The bridges live in a switch namespace of their own and `r` routes
//! between them, so the island (h1 to h4) can be cut from the root by
//! taking `r`'s leg on br0 down while the island's LAN stays up. Every
//! address exists only inside these namespaces, which the [`Lab`] deletes
//! when the test ends, also on failure. Root is needed (CI runs as root);
//! without it the tests skip with a reason, except under `CI=true`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use overlay_node::api::Status;
use overlay_node::client::Client;
use overlay_proto::Mid;
use overlay_tests::netns::{in_namespace, Lab};
use overlay_tests::{bins, collect_with, texts};
use overlay_tools::cluster::{Cluster, Launcher};

/// The island's hosts, the root's and the outside member's.
const ISLAND: [usize; 4] = [1, 2, 3, 4];
const ROOT: usize = 5;
const OUTSIDE: usize = 6;
const PORT: u16 = 7400;
const MCAST_PORT: &str = "7410";

fn addr(host: usize) -> String {
    if ISLAND.contains(&host) {
        format!("10.77.1.{host}")
    } else {
        format!("10.77.2.{host}")
    }
}

/// The hosts and the router, wired as in the module's drawing.
struct Net {
    lab: Lab,
    router: String,
}

fn net(name: &str) -> Option<Net> {
    let mut lab = Lab::new(name)?;
    let sw = lab.host("sw");
    lab.bridge(&sw, "br0");
    lab.bridge(&sw, "br1");
    let router = lab.host("r");
    lab.plug(&router, "eth0", "10.77.1.254/24", &sw, "br0", "r-a");
    lab.plug(&router, "eth1", "10.77.2.254/24", &sw, "br1", "r-b");
    lab.forward(&router);
    for h in 1..=6 {
        let ns = lab.host(&format!("h{h}"));
        let (br, gw) = if ISLAND.contains(&h) {
            ("br0", "10.77.1.254")
        } else {
            ("br1", "10.77.2.254")
        };
        lab.plug(
            &ns,
            "eth0",
            &format!("{}/24", addr(h)),
            &sw,
            br,
            &format!("p{h}"),
        );
        lab.default_route(&ns, gw);
    }
    Some(Net { lab, router })
}

/// Starts the daemon of host `h` with `config`, with IP multicast on the
/// island's hosts; its index in the cluster.
fn start(c: &mut Cluster, net: &Net, h: usize, config: &str) -> usize {
    start_with(c, net, h, config, ISLAND.contains(&h))
}

/// Starts the daemon of host `h` with `config`, with IP multicast or not.
fn start_with(c: &mut Cluster, net: &Net, h: usize, config: &str, multicast: bool) -> usize {
    let dir = c.path().join(format!("h{h}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("node.toml"), config).unwrap();
    let args = start_args(net, h, &dir, PORT, multicast);
    c.spawn_with(dir, &args).expect("node starts")
}

/// The command line of host `h`'s daemon, listening on `port`.
fn start_args(
    net: &Net,
    h: usize,
    dir: &std::path::Path,
    port: u16,
    multicast: bool,
) -> Vec<String> {
    let file = dir.join("node.toml");
    let mut args: Vec<String> = ["netns", "exec"].map(String::from).to_vec();
    args.push(net.lab.name(&format!("h{h}")));
    args.push(bins().node.display().to_string());
    args.extend([
        "--config".into(),
        file.display().to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--listen".into(),
        format!("{}:{port}", addr(h)),
    ]);
    if h != ROOT {
        args.extend(["--bootstrap".into(), format!("{}:{PORT}", addr(ROOT))]);
    }
    if multicast {
        args.extend(["--multicast-interface".into(), "eth0".into()]);
        args.extend(["--multicast-port".into(), MCAST_PORT.into()]);
    }
    args
}

/// The tests here run one at a time: each runs six daemons and a router,
/// and their timings should measure the protocol, not two cores shared by
/// thirty daemons.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one subscriber got: (seq, from the LAN fallback, text), in order.
type Inbox = overlay_tests::InboxOf<bool>;

async fn collect(client: Client, mid: Mid) -> (Inbox, smol::Task<()>) {
    collect_with(client, mid, |d, text| (d.seq, d.lan_fallback, text)).await
}

async fn until(what: &str, limit: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        smol::Timer::after(Duration::from_millis(100)).await;
    }
}

async fn status(c: &Cluster, i: usize) -> Status {
    c.client(i).await.unwrap().status().await.unwrap()
}

/// Every island member agrees on one leader, and the others are fed.
async fn island_formed(c: &Cluster, members: &[usize], mid: Mid) -> bool {
    let mut leaders = HashSet::new();
    let mut fed = 0;
    for &i in members {
        let s = status(c, i).await;
        let Some(g) = s.groups.iter().find(|g| g.mid == mid) else {
            return false;
        };
        let Some(isl) = &g.island else { return false };
        if isl.peers.len() != members.len() - 1 {
            return false;
        }
        leaders.insert(isl.leader);
        fed += isl.fed as usize;
    }
    leaders.len() == 1 && fed == members.len() - 1
}

/// Once every node entered the overlay: a group created at `root`, joined
/// and subscribed to by `members`, with each member's inbox (in the order
/// of `members`).
async fn group(
    c: &mut Cluster,
    root: usize,
    members: &[usize],
) -> (Mid, Vec<(Inbox, smol::Task<()>)>) {
    c.wait_overlay(Duration::from_secs(20)).await.unwrap();
    let mid = c.client(root).await.unwrap().create().await.unwrap();
    let mut inboxes = Vec::new();
    for &i in members {
        let client = c.client(i).await.unwrap();
        client.join(mid).await.unwrap();
        inboxes.push(collect(client, mid).await);
    }
    (mid, inboxes)
}

/// [`group`], returned once `island` formed.
async fn group_with_island(
    c: &mut Cluster,
    root: usize,
    members: &[usize],
    island: &[usize],
) -> (Mid, Vec<(Inbox, smol::Task<()>)>) {
    let (mid, inboxes) = group(c, root, members).await;
    until("the island to form", Duration::from_secs(20), || {
        island_formed(&*c, island, mid)
    })
    .await;
    (mid, inboxes)
}

/// The sum of the members' messages taken from the tree.
async fn from_tree(c: &Cluster, members: &[usize]) -> u64 {
    let mut sum = 0;
    for &i in members {
        sum += status(c, i).await.groups[0].from_tree;
    }
    sum
}

/// Publishes 50 messages at `root` and waits until every inbox holds 50;
/// the messages, and how many copies the members took from the tree
/// meanwhile.
async fn publish_50(
    c: &Cluster,
    root: usize,
    mid: Mid,
    members: &[usize],
    inboxes: &[(Inbox, smol::Task<()>)],
) -> (Vec<String>, u64) {
    let before = from_tree(c, members).await;
    let publisher = c.client(root).await.unwrap();
    let sent: Vec<String> = (0..50).map(|k| format!("m{k}")).collect();
    for m in &sent {
        publisher
            .publish(mid, m.clone().into_bytes())
            .await
            .unwrap();
    }
    until(
        "every member to receive all",
        Duration::from_secs(20),
        async || {
            inboxes
                .iter()
                .all(|(inbox, _)| inbox.lock().unwrap().len() >= sent.len())
        },
    )
    .await;
    smol::Timer::after(Duration::from_millis(500)).await;
    let copies = from_tree(c, members).await - before;
    (sent, copies)
}

/// How many times `inbox` holds `text`.
fn has(inbox: &Inbox, text: &str) -> usize {
    inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, t)| t == text)
        .count()
}

/// Waits for the root's acceptance of a publish, at most `limit` (counted
/// from the return of the cut link).
async fn accepted_within(p: overlay_node::client::PendingPublish, limit: Duration) {
    smol::future::or(async { p.accepted().await.map(|_| ()) }, async {
        smol::Timer::after(limit).await;
        panic!("the publish was not accepted within {limit:?} of the link's return");
    })
    .await
    .unwrap();
}

#[test]
fn an_island_gets_one_copy_from_the_tree_and_shares_it_on_the_lan() {
    let _serial = serial();
    let Some(net) = net("i") else { return };
    let mut c = Cluster::new(Launcher::binary("ip")).unwrap();
    let root = start(&mut c, &net, ROOT, "");
    let members: Vec<usize> = ISLAND.iter().map(|&h| start(&mut c, &net, h, "")).collect();
    smol::block_on(async {
        let (mid, inboxes) = group_with_island(&mut c, root, &members, &members).await;
        let (sent, copies) = publish_50(&c, root, mid, &members, &inboxes).await;
        for ((inbox, _), &i) in inboxes.iter().zip(&members) {
            assert_eq!(texts(inbox), sent, "node {i}: every message once, in order");
        }
        let mut lan = Vec::new();
        for &i in &members {
            let s = status(&c, i).await;
            let g = &s.groups[0];
            if !g.island.as_ref().unwrap().leading {
                lan.push(g.from_lan);
            }
            let l = s.lan.expect("multicast on");
            assert_eq!((l.forged, l.replayed), (0, 0), "node {i}: {l:?}");
        }
        // `overlay tree` and `overlay status` show the island.
        let root_dir = c.nodes[root].dir.clone();
        let text = overlay_tests::ok(overlay_tests::cli(
            &root_dir,
            &["tree", &mid.to_string()],
            None,
            Duration::from_secs(20),
        ));
        assert_eq!(text.matches("leads its LAN island").count(), 1, "{text}");
        assert_eq!(
            text.matches("fed by the LAN island of").count(),
            3,
            "{text}"
        );
        let text = overlay_tests::ok(overlay_tests::cli(
            &c.nodes[members[0]].dir,
            &["status"],
            None,
            Duration::from_secs(20),
        ));
        assert!(
            text.contains("island  239.255.") && text.contains("multicast  eth0"),
            "{text}"
        );
        eprintln!("{copies} copies of 50 messages came into the island over the tree; fed members took {lan:?} from the LAN");
        assert_eq!(
            copies, 50,
            "one copy per message into the island, not one per member"
        );
        assert!(lan.iter().all(|&n| n >= 50), "{lan:?}");
    });
}

#[test]
fn forged_replayed_and_garbage_datagrams_are_dropped_and_counted() {
    let _serial = serial();
    let Some(net) = net("f") else { return };
    let mut c = Cluster::new(Launcher::binary("ip")).unwrap();
    let root = start(&mut c, &net, ROOT, "");
    let members: Vec<usize> = ISLAND[..2]
        .iter()
        .map(|&h| start(&mut c, &net, h, ""))
        .collect();
    smol::block_on(async {
        let (_, inboxes) = group_with_island(&mut c, root, &members, &members).await;
        // Listen on the island's LAN from a third host of it, as anyone
        // there could, and keep a real datagram of the group.
        let group = status(&c, members[0]).await.groups[0]
            .island
            .clone()
            .unwrap()
            .address;
        let ns = net.lab.name("h3");
        let captured = in_namespace(&ns, move || {
            let iface = overlay_node::multicast::Interface::find("eth0").unwrap();
            let addr: std::net::SocketAddrV4 = group.parse().unwrap();
            let sock = overlay_node::multicast::LanSocket::bind(&iface, addr.port()).unwrap();
            sock.join(*addr.ip()).unwrap();
            // One datagram of each member (the sender's id is at 20..36).
            let mut real: Vec<Vec<u8>> = Vec::new();
            let mut buf = [0u8; 2048];
            while real.len() < 2 {
                let (n, _) = smol::block_on(sock.recv(&mut buf)).unwrap();
                if n > 52 && real.iter().all(|r| r[20..36] != buf[20..36]) {
                    real.push(buf[..n].to_vec());
                }
            }
            for d in &real {
                // A later counter (so not a replay) that the tag does not
                // cover.
                let mut forged = d.clone();
                forged[44] ^= 0x40;
                sock.send(*addr.ip(), d).unwrap();
                sock.send(*addr.ip(), &forged).unwrap();
            }
            for junk in [&b"not an overlay datagram at all"[..], &[0u8; 3][..]] {
                sock.send(*addr.ip(), junk).unwrap();
            }
            real.len()
        });
        assert_eq!(captured, 2);
        smol::Timer::after(Duration::from_millis(500)).await;
        for &i in &members {
            let l = status(&c, i).await.lan.unwrap();
            // Each member takes the replay and the forgery of its own
            // datagram for its own, and drops the other member's.
            assert!(l.replayed >= 1, "node {i}: {l:?}");
            assert!(l.forged >= 1, "node {i}: {l:?}");
            assert!(l.malformed >= 2, "node {i}: {l:?}");
        }
        // And nothing reached the applications.
        for (inbox, _) in &inboxes {
            assert!(inbox.lock().unwrap().is_empty());
        }
    });
}

#[test]
fn cut_off_from_the_root_the_island_still_hears_its_own_and_the_rest_catch_up_once() {
    let _serial = serial();
    let Some(net) = net("b") else { return };
    let mut c = Cluster::new(Launcher::binary("ip")).unwrap();
    // No replicas: the island cannot make a root of its own while cut off,
    // so its publishes wait for the real one. Publishes wait long enough
    // for the link to come back, and maintenance rounds come every 2 s, so
    // that the two parts of the overlay find each other again soon.
    let cfg = "replicas = 0\npublish_timeout_ms = 120000\nmaintenance_interval_ms = 2000\n";
    let root = start(&mut c, &net, ROOT, cfg);
    let outside = start(&mut c, &net, OUTSIDE, cfg);
    let members: Vec<usize> = ISLAND
        .iter()
        .map(|&h| start(&mut c, &net, h, cfg))
        .collect();
    smol::block_on(async {
        let all: Vec<usize> = std::iter::once(outside).chain(members.clone()).collect();
        let (mid, inboxes) = group_with_island(&mut c, root, &all, &members).await;
        let (out_inbox, island_inboxes) = (&inboxes[0].0, &inboxes[1..]);
        let root_client = c.client(root).await.unwrap();
        root_client.publish(mid, &b"before"[..]).await.unwrap();

        // Cut the island off: the router's leg on its LAN goes down.
        net.lab.link(&net.router, "eth0", false);
        smol::Timer::after(Duration::from_secs(4)).await;
        let publisher = c.client(members[0]).await.unwrap();
        let mut pending = Vec::new();
        for m in ["cut-1", "cut-2"] {
            pending.push(
                publisher
                    .start_publish(mid, m.as_bytes().to_vec())
                    .await
                    .unwrap(),
            );
        }
        until(
            "the island to hear its publisher over the LAN",
            Duration::from_secs(10),
            async || {
                island_inboxes[1..]
                    .iter()
                    .all(|(inbox, _)| has(inbox, "cut-1") == 1 && has(inbox, "cut-2") == 1)
            },
        )
        .await;
        for (inbox, _) in &island_inboxes[1..] {
            let got = inbox.lock().unwrap().clone();
            assert!(
                got.iter()
                    .filter(|(_, _, t)| t.starts_with("cut"))
                    .all(|(seq, lan, _)| *lan && *seq == 0),
                "taken from the LAN fallback: {got:?}"
            );
        }
        assert_eq!(has(out_inbox, "cut-1"), 0, "the outside cannot have it yet");

        // The link comes back: the overlay heals, the publishes reach the
        // root, and the outside gets them; nobody gets anything twice.
        net.lab.link(&net.router, "eth0", true);
        let back = Instant::now();
        for p in pending {
            accepted_within(p, Duration::from_secs(90)).await;
        }
        eprintln!(
            "publishes accepted {:?} after the link came back",
            back.elapsed()
        );
        until(
            "the outside member to catch up",
            Duration::from_secs(30),
            async || has(out_inbox, "cut-1") == 1 && has(out_inbox, "cut-2") == 1,
        )
        .await;
        eprintln!(
            "the outside member caught up {:?} after the link came back",
            back.elapsed()
        );
        until(
            "the publisher to get its own",
            Duration::from_secs(30),
            async || has(&island_inboxes[0].0, "cut-2") == 1,
        )
        .await;
        eprintln!(
            "the publisher had its own {:?} after the link came back",
            back.elapsed()
        );
        root_client.publish(mid, &b"after"[..]).await.unwrap();
        until(
            "every member to get the last",
            Duration::from_secs(30),
            async || inboxes.iter().all(|(inbox, _)| has(inbox, "after") == 1),
        )
        .await;
        eprintln!(
            "all had the last {:?} after the link came back",
            back.elapsed()
        );
        smol::Timer::after(Duration::from_secs(1)).await;
        for (k, (inbox, _)) in inboxes.iter().enumerate() {
            let got = texts(inbox);
            let unique: HashSet<&String> = got.iter().collect();
            assert_eq!(
                unique.len(),
                got.len(),
                "member {k} got a message twice: {got:?}"
            );
            for m in ["before", "cut-1", "cut-2", "after"] {
                assert!(
                    got.contains(&m.to_string()),
                    "member {k} lacks {m}: {got:?}"
                );
            }
        }
        let l = status(&c, members[0]).await.lan.unwrap();
        assert!(l.fallback_publishes >= 2, "{l:?}");
    });
}

#[test]
fn when_the_island_leader_is_killed_another_takes_over_and_nothing_is_lost() {
    let _serial = serial();
    let Some(net) = net("k") else { return };
    let mut c = Cluster::new(Launcher::binary("ip")).unwrap();
    let root = start(&mut c, &net, ROOT, "");
    let members: Vec<usize> = ISLAND.iter().map(|&h| start(&mut c, &net, h, "")).collect();
    smol::block_on(async {
        let (mid, inboxes) = group_with_island(&mut c, root, &members, &members).await;
        let inboxes: Vec<(usize, _)> = members.iter().copied().zip(inboxes).collect();
        let leader_id = status(&c, members[0]).await.groups[0]
            .island
            .as_ref()
            .unwrap()
            .leader
            .unwrap();
        let leader = *members
            .iter()
            .find(|&&i| c.nodes[i].info.id == leader_id)
            .expect("the leader is a member");
        let publisher = c.client(root).await.unwrap();
        let sent: Vec<String> = (0..60).map(|k| format!("m{k}")).collect();
        let start = Instant::now();
        for (k, m) in sent.iter().enumerate() {
            if k == 20 {
                eprintln!("killing the leader after {:?}", start.elapsed());
                c.kill(leader);
            }
            publisher
                .publish(mid, m.clone().into_bytes())
                .await
                .unwrap();
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        let t0 = Instant::now();
        let rest: Vec<usize> = members.iter().copied().filter(|&i| i != leader).collect();
        until(
            "the others to receive all",
            Duration::from_secs(30),
            async || {
                inboxes
                    .iter()
                    .filter(|(i, _)| *i != leader)
                    .all(|(_, (inbox, _))| inbox.lock().unwrap().len() >= sent.len())
            },
        )
        .await;
        eprintln!("all received {:?} after the last publish", t0.elapsed());
        until("a new island to form", Duration::from_secs(20), || {
            island_formed(&c, &rest, mid)
        })
        .await;
        eprintln!(
            "a new island formed {:?} after the last publish",
            t0.elapsed()
        );
        smol::Timer::after(Duration::from_millis(500)).await;
        for (i, (inbox, _)) in inboxes.iter().filter(|(i, _)| *i != leader) {
            assert_eq!(texts(inbox), sent, "node {i}: every message once, in order");
        }
        let next = status(&c, rest[0]).await.groups[0]
            .island
            .clone()
            .unwrap()
            .leader;
        assert_ne!(next, Some(leader_id), "another member leads");
    });
}

#[test]
fn a_member_that_cannot_reach_the_overlay_after_a_restart_still_hears_its_island() {
    let _serial = serial();
    let Some(net) = net("r") else { return };
    let mut c = Cluster::new(Launcher::binary("ip")).unwrap();
    // Bootstrap gives up after two quick rounds; no replicas, and publishes
    // wait, as in the partition test.
    let cfg = "bootstrap_attempts = 2\nbootstrap_backoff_ms = 200\nreplicas = 0\n\
               publish_timeout_ms = 120000\nmaintenance_interval_ms = 2000\n";
    let root = start(&mut c, &net, ROOT, cfg);
    let members: Vec<usize> = ISLAND
        .iter()
        .map(|&h| start(&mut c, &net, h, cfg))
        .collect();
    let restarted = members[0];
    smol::block_on(async {
        c.wait_overlay(Duration::from_secs(20)).await.unwrap();
        let mid = c.client(root).await.unwrap().create().await.unwrap();
        for &i in &members {
            c.client(i).await.unwrap().join(mid).await.unwrap();
        }
        until("the island to form", Duration::from_secs(20), || {
            island_formed(&c, &members, mid)
        })
        .await;
        // The member stops (and keeps its membership with the group's key),
        // the island is cut off, and the member starts again: no bootstrap
        // node answers.
        assert_eq!(c.stop(restarted), Some(0));
        let file = c.nodes[restarted].dir.join("groups.json");
        let saved = std::fs::read_to_string(&file).unwrap();
        assert!(saved.contains("\"key\""), "{saved}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "groups.json holds keys: owner only");
        net.lab.link(&net.router, "eth0", false);
        // On another port, so that the island's own attempts to reach its
        // lost neighbour (at the old one) do not bring it in: only its
        // bootstrap node could, and that is cut off.
        let dir = c.nodes[restarted].dir.clone();
        let args = start_args(&net, ISLAND[0], &dir, PORT + 1, true);
        let restarted = c.spawn_with(dir, &args).expect("node starts");
        let client = c.client(restarted).await.unwrap();
        let (inbox, _task) = collect(client, mid).await;
        smol::Timer::after(Duration::from_secs(3)).await;
        assert!(c.nodes[restarted].is_running(), "{}", c.log(restarted));
        assert!(!status(&c, restarted).await.joined_overlay);
        assert!(c.log(restarted).contains("carrying on with the LAN only"));
        // Another member, cut off too, publishes: the restarted one hears it
        // over the LAN.
        let publisher = c.client(members[1]).await.unwrap();
        let pending = publisher.start_publish(mid, &b"cut"[..]).await.unwrap();
        until(
            "the restarted member to hear the island",
            Duration::from_secs(10),
            async || has(&inbox, "cut") == 1,
        )
        .await;
        // The link comes back: the member enters the overlay, the publish is
        // accepted, and nothing arrives twice.
        net.lab.link(&net.router, "eth0", true);
        accepted_within(pending, Duration::from_secs(60)).await;
        until(
            "the restarted member to reach the overlay",
            Duration::from_secs(30),
            async || status(&c, restarted).await.joined_overlay,
        )
        .await;
        let root_client = c.client(root).await.unwrap();
        root_client.publish(mid, &b"after"[..]).await.unwrap();
        until(
            "the restarted member to get the next",
            Duration::from_secs(30),
            async || has(&inbox, "after") == 1,
        )
        .await;
        smol::Timer::after(Duration::from_secs(1)).await;
        assert_eq!(has(&inbox, "cut"), 1, "{:?}", inbox.lock().unwrap());
    });
}

#[test]
fn without_multicast_each_member_takes_its_own_copy_from_the_tree() {
    let _serial = serial();
    let Some(net) = net("n") else { return };
    let mut c = Cluster::new(Launcher::binary("ip")).unwrap();
    let root = start(&mut c, &net, ROOT, "");
    let members: Vec<usize> = ISLAND
        .iter()
        .map(|&h| start_with(&mut c, &net, h, "", false))
        .collect();
    smol::block_on(async {
        let (mid, inboxes) = group(&mut c, root, &members).await;
        for &i in &members {
            let s = status(&c, i).await;
            assert!(s.lan.is_none() && s.groups[0].island.is_none());
        }
        let (_, copies) = publish_50(&c, root, mid, &members, &inboxes).await;
        eprintln!("without multicast, {copies} copies of 50 messages came to the four hosts over the tree");
        assert_eq!(copies, 200, "one copy per member and message");
    });
}
