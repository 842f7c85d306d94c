//! End-to-end tests: real `overlay-node` processes on 127.0.0.1, driven
//! through the `overlay` CLI and the client API.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use overlay_node::client::Client;
use overlay_proto::message::{Heartbeat, Join};
use overlay_proto::Mid;
use overlay_tests::{
    bins, cli, cluster, collect, fails, ok, rogue_transport, run, start, texts, wait_for, Inbox,
};
use overlay_tools::cluster::Cluster;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

struct TreeFacts {
    members: BTreeSet<String>,
    all: BTreeSet<String>,
    depth: usize,
    max_children: usize,
    childless_forwarders: usize,
}

fn tree_facts(v: &Value) -> TreeFacts {
    fn walk(v: &Value, depth: usize, f: &mut TreeFacts, root: bool) {
        let id = v["id"].as_str().expect("id").to_string();
        let children = v["children"].as_array().expect("children");
        assert!(v["addr"].as_str().is_some(), "addr is listed");
        f.all.insert(id.clone());
        if v["member"].as_bool().expect("member") {
            f.members.insert(id);
        } else if children.is_empty() && !root {
            f.childless_forwarders += 1;
        }
        f.depth = f.depth.max(depth);
        f.max_children = f.max_children.max(children.len());
        for c in children {
            walk(c, depth + 1, f, false);
        }
    }
    let mut f = TreeFacts {
        members: BTreeSet::new(),
        all: BTreeSet::new(),
        depth: 0,
        max_children: 0,
        childless_forwarders: 0,
    };
    walk(v, 0, &mut f, true);
    f
}

fn tree_json(c: &Cluster, mid: Mid) -> Value {
    let out = ok(cli(
        &c.nodes[0].dir,
        &["tree", &mid.to_string(), "--json"],
        None,
        LIMIT,
    ));
    serde_json::from_str(&out).expect("tree --json is JSON")
}

#[test]
fn sixteen_nodes_build_a_bounded_tree_and_deliver_every_message_once_in_order() {
    let mut c = start(16, &["--max-children", "3"]);
    smol::block_on(async {
        c.wait_overlay(Duration::from_secs(30)).await.unwrap();
        let root = c.client(0).await.unwrap();
        let mid = root.create().await.unwrap();
        // Nodes 0..15 are members; node 15 is not.
        let mut inboxes = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..15 {
            let (inbox, task) = collect(&c, i, mid).await;
            inboxes.push(inbox);
            tasks.push(task);
        }
        let ids: BTreeSet<String> = (0..15).map(|i| c.nodes[i].info.id.to_string()).collect();

        let facts = tree_facts(&tree_json(&c, mid));
        assert_eq!(facts.members, ids, "tree --json lists every member");
        assert!(facts.depth >= 3, "depth {} < 3", facts.depth);
        assert!(
            facts.max_children <= 3,
            "a node has {} children",
            facts.max_children
        );

        // 100 messages from the non-member through the CLI (stdin), and 100
        // from a member through the client API, at the same time.
        let lines: String = (0..100).map(|k| format!("outsider {k}\n")).collect();
        let outsider_dir = c.nodes[15].dir.clone();
        let outsider = std::thread::spawn(move || {
            cli(
                &outsider_dir,
                &["publish", &mid.to_string()],
                Some(&lines),
                LIMIT,
            )
        });
        let member = c.client(7).await.unwrap();
        let payloads = (0..100).map(|k| format!("member {k}"));
        let published = member
            .publish_all(mid, payloads, 100, |_| {})
            .await
            .unwrap();
        assert_eq!(published, 100);
        let seqs = ok(outsider.join().unwrap());
        assert_eq!(
            seqs.lines().count(),
            100,
            "one sequence number per published line"
        );

        let refs: Vec<&Inbox> = inboxes.iter().collect();
        wait_for(&refs, 200, Duration::from_secs(30)).await;
        let reference = inboxes[0].lock().unwrap().clone();
        let texts: HashSet<&str> = reference.iter().map(|(_, _, t)| t.as_str()).collect();
        assert_eq!(reference.len(), 200, "the root received every message once");
        assert_eq!(texts.len(), 200, "no message twice");
        for k in 0..100 {
            assert!(texts.contains(format!("outsider {k}").as_str()));
            assert!(texts.contains(format!("member {k}").as_str()));
        }
        for (i, inbox) in inboxes.iter().enumerate() {
            assert_eq!(
                *inbox.lock().unwrap(),
                reference,
                "member {i} saw another sequence"
            );
        }
        drop(tasks);
    });
}

#[test]
fn leaving_prunes_forwarders_and_the_rest_still_receive() {
    let mut c = start(12, &["--max-children", "2"]);
    smol::block_on(async {
        c.wait_overlay(Duration::from_secs(30)).await.unwrap();
        let mid = c.client(0).await.unwrap().create().await.unwrap();
        for i in 1..12 {
            ok(cli(
                &c.nodes[i].dir,
                &["join", &mid.to_string()],
                None,
                LIMIT,
            ));
        }
        let before = tree_facts(&tree_json(&c, mid));
        assert_eq!(before.members.len(), 12);

        let leavers: Vec<usize> = (1..12).filter(|i| i % 2 == 1).collect();
        for &i in &leavers {
            ok(cli(
                &c.nodes[i].dir,
                &["leave", &mid.to_string()],
                None,
                LIMIT,
            ));
        }
        smol::Timer::after(Duration::from_millis(500)).await;
        let after = tree_facts(&tree_json(&c, mid));
        let stayers: Vec<usize> = (0..12).filter(|i| !leavers.contains(i)).collect();
        let stayer_ids: BTreeSet<String> = stayers
            .iter()
            .map(|&i| c.nodes[i].info.id.to_string())
            .collect();
        assert_eq!(after.members, stayer_ids, "leavers are no longer members");
        assert_eq!(
            after.childless_forwarders, 0,
            "a forwarder with no member below it stayed"
        );

        let mut inboxes = Vec::new();
        let mut tasks = Vec::new();
        for &i in &stayers {
            let (inbox, task) = collect(&c, i, mid).await;
            inboxes.push(inbox);
            tasks.push(task);
        }
        let leaver = c.client(leavers[0]).await.unwrap();
        for k in 0..20 {
            leaver
                .publish(mid, format!("after leave {k}"))
                .await
                .unwrap();
        }
        let refs: Vec<&Inbox> = inboxes.iter().collect();
        wait_for(&refs, 20, Duration::from_secs(20)).await;
        for (n, inbox) in inboxes.iter().enumerate() {
            assert_eq!(
                inbox.lock().unwrap().len(),
                20,
                "member {} missed messages",
                stayers[n]
            );
        }

        // A member that forwards for others stops with SIGTERM: it exits
        // cleanly, its children re-join, and everyone left still receives.
        let status = c.client(0).await.unwrap().status().await.unwrap();
        let forwarder_id = status.groups[0].children[0]
            .split('@')
            .next()
            .unwrap()
            .to_string();
        let f = (0..12)
            .find(|&i| c.nodes[i].info.id.to_string() == forwarder_id)
            .unwrap();
        assert_eq!(c.stop(f), Some(0), "SIGTERM ends the node cleanly");
        smol::Timer::after(Duration::from_millis(1500)).await;
        for inbox in &inboxes {
            inbox.lock().unwrap().clear();
        }
        // The stopped forwarder may be the leaver that published so far (a
        // node that left forwards on while it has children): publish from
        // a node still running.
        let publisher = if f == leavers[0] {
            c.client(leavers[1]).await.unwrap()
        } else {
            leaver
        };
        for k in 0..10 {
            publisher
                .publish(mid, format!("after stop {k}"))
                .await
                .unwrap();
        }
        let alive: Vec<&Inbox> = stayers
            .iter()
            .zip(&inboxes)
            .filter(|(&i, _)| i != f)
            .map(|(_, inbox)| inbox)
            .collect();
        wait_for(&alive, 10, Duration::from_secs(20)).await;
        for inbox in alive {
            assert_eq!(
                inbox.lock().unwrap().len(),
                10,
                "a member lost messages after a forwarder stopped"
            );
        }
        drop(tasks);
    });
}

#[test]
fn cli_end_to_end() {
    let mut c = start(4, &[]);
    smol::block_on(c.wait_overlay(Duration::from_secs(30))).unwrap();
    let mid = ok(cli(&c.nodes[0].dir, &["create"], None, LIMIT))
        .trim()
        .to_string();
    assert_eq!(mid.len(), 32, "create prints the mid alone");
    ok(cli(&c.nodes[1].dir, &["join", &mid], None, LIMIT));
    ok(cli(&c.nodes[2].dir, &["join", &mid], None, LIMIT));

    // A subscriber on node 3 (not yet a member: subscribe joins).
    let mut sub = Command::new(&bins().cli)
        .arg("--node")
        .arg(&c.nodes[3].dir)
        .args(["subscribe", &mid, "--count", "3", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(sub.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("subscribed"), "{line}");

    let seqs = ok(cli(
        &c.nodes[1].dir,
        &["publish", &mid],
        Some("one\ntwo\ntwo\n"),
        LIMIT,
    ));
    assert_eq!(seqs.lines().collect::<Vec<_>>(), vec!["1", "2", "3"]);

    let deadline = Instant::now() + LIMIT;
    while sub.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = sub.kill();
    let mut out = String::new();
    sub.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let msgs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(msgs.len(), 3, "{out}");
    let publisher = c.nodes[1].info.id.to_string();
    // Identical payloads are two messages: nothing is de-duplicated by content.
    for (k, (m, text)) in msgs.iter().zip(["one", "two", "two"]).enumerate() {
        assert_eq!(m["seq"].as_u64(), Some(k as u64 + 1));
        assert_eq!(m["publisher"].as_str(), Some(publisher.as_str()));
        assert_eq!(m["data"].as_str(), Some(text));
    }

    let tree = ok(cli(&c.nodes[2].dir, &["tree", &mid], None, LIMIT));
    for n in &c.nodes {
        assert!(
            tree.contains(&n.info.id.to_string()),
            "tree text lists every member:\n{tree}"
        );
    }
    assert!(tree.contains("(root, member)"), "{tree}");

    let status: Value = serde_json::from_str(&ok(cli(
        &c.nodes[1].dir,
        &["status", "--json"],
        None,
        LIMIT,
    )))
    .unwrap();
    assert_eq!(status["id"].as_str(), Some(publisher.as_str()));
    assert_eq!(status["joined_overlay"].as_bool(), Some(true));
    let group = &status["groups"][0];
    assert_eq!(group["mid"].as_str(), Some(mid.as_str()));
    assert_eq!(group["role"].as_str(), Some("member"));
    assert!(group["parent"].as_str().is_some());
    assert!(!status["neighbours"].as_array().unwrap().is_empty());
    let text = ok(cli(&c.nodes[1].dir, &["status"], None, LIMIT));
    assert!(text.contains(&publisher) && text.contains(&mid), "{text}");
}

#[test]
fn bad_input_gets_a_clear_error_and_loses_nothing() {
    let mut c = start(2, &["--max-message-size", "1000"]);
    smol::block_on(c.wait_overlay(Duration::from_secs(30))).unwrap();
    let dir = c.nodes[1].dir.clone();

    let err = fails(cli(&dir, &["join", "not-a-mid"], None, LIMIT));
    assert!(err.contains("32 hexadecimal digits"), "{err}");
    let unknown = "0123456789abcdef0123456789abcdef";
    let err = fails(cli(&dir, &["join", unknown], None, LIMIT));
    assert!(err.contains("no group with this mid"), "{err}");
    let err = fails(cli(&dir, &["publish", unknown, "x"], None, LIMIT));
    assert!(err.contains("no group with this mid"), "{err}");
    let err = fails(cli(&c.path().join("nowhere"), &["status"], None, LIMIT));
    assert!(err.contains("no node is running"), "{err}");

    let mid = ok(cli(&c.nodes[0].dir, &["create"], None, LIMIT))
        .trim()
        .to_string();
    let big = "x".repeat(2000);
    let err = fails(cli(&dir, &["publish", &mid, &big], None, LIMIT));
    assert!(
        err.contains("1000 bytes"),
        "the error names the limit: {err}"
    );

    // A bootstrap address where nobody answers: retries, then a clear error.
    let free = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = c.path().join("short-bootstrap.toml");
    std::fs::write(&cfg, "bootstrap_attempts = 3\nbootstrap_backoff_ms = 100\n").unwrap();
    let mut cmd = Command::new(&bins().node);
    cmd.arg("--data-dir")
        .arg(c.path().join("lonely"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            &free.to_string(),
            "--config",
        ])
        .arg(&cfg);
    let err = fails(run(cmd, None, LIMIT));
    assert!(
        err.contains("could not reach any bootstrap node") && err.contains(&free.to_string()),
        "{err}"
    );

    let node = c.nodes[0].info.clone();
    smol::block_on(async {
        // Garbage datagrams at the QUIC port.
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        for k in 0..200usize {
            let junk: Vec<u8> = (0..(k * 37) % 1400 + 1)
                .map(|b| (b * 31 + k) as u8)
                .collect();
            udp.send_to(&junk, node.addr).unwrap();
        }
        // A real QUIC peer that sends an oversized frame, then one that
        // sends a malformed frame: each connection is closed with the
        // protocol-violation code.
        let (transport, _me, _dir) = rogue_transport();
        for bad in [
            vec![0xff, 0xff, 0xff, 0xff, 1],
            vec![0, 0, 0, 8, 1, 0xde, 0xad, 0xbe, 0xef, 0xba, 0xad, 0xf0],
        ] {
            let conn = transport.dial(node.addr, Some(node.id)).await.unwrap();
            let mut s = conn.open_uni().await.unwrap();
            s.write_all(&bad).await.unwrap();
            assert_eq!(
                closed_within(&conn, 10).await,
                1,
                "closed as a protocol violation"
            );
        }
        // A peer that expects another id at that address is refused.
        let impostor = overlay_proto::NodeId(node.id.0 ^ 1);
        assert!(transport.dial(node.addr, Some(impostor)).await.is_err());
    });

    // Garbage and an oversized frame at the control socket.
    for junk in [&b"\x00\x00\x00\x05hello"[..], &b"\xff\xff\xff\xffxxxx"[..]] {
        let mut s = std::os::unix::net::UnixStream::connect(&c.nodes[0].info.control).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(junk).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            !answer.is_empty(),
            "the node answers with an error before closing"
        );
    }

    // Nothing was lost: the nodes still serve, and messages still flow.
    smol::block_on(async {
        let mid: Mid = mid.parse().unwrap();
        let (inbox, task) = collect(&c, 1, mid).await;
        let publisher: Client = c.client(0).await.unwrap();
        for k in 0..10 {
            publisher
                .publish(mid, format!("still here {k}"))
                .await
                .unwrap();
        }
        wait_for(&[&inbox], 10, Duration::from_secs(20)).await;
        let got: Vec<String> = texts(&inbox);
        let want: Vec<String> = (0..10).map(|k| format!("still here {k}")).collect();
        assert_eq!(got, want);
        drop(task);
    });
    let counts: HashMap<usize, bool> = (0..2).map(|i| (i, c.nodes[i].is_running())).collect();
    assert!(counts.values().all(|&r| r), "no node died");
}

#[test]
fn a_stuck_child_is_dropped_without_stalling_its_siblings() {
    let mut c = cluster();
    let cfg = c.path().join("small-queues.toml");
    std::fs::write(&cfg, "peer_queue_bytes = 4194304\n").unwrap();
    let cfg = cfg.display().to_string();
    c.spawn(&[], &["--config", &cfg]).unwrap();
    c.spawn(&[0], &["--config", &cfg]).unwrap();
    c.spawn(&[0], &["--config", &cfg]).unwrap();
    smol::block_on(async {
        c.wait_overlay(Duration::from_secs(30)).await.unwrap();
        let root = c.client(0).await.unwrap();
        let mid = root.create().await.unwrap();
        let (a, task_a) = collect(&c, 1, mid).await;
        let (b, task_b) = collect(&c, 2, mid).await;

        // The rogue joins as the root's child with a real handshake and a
        // well-formed join, then never reads anything.
        let (transport, me, _dir) = rogue_transport();
        let node = c.nodes[0].info.clone();
        let conn = transport.dial(node.addr, Some(node.id)).await.unwrap();
        let joiner = overlay_proto::NodeInfo {
            id: me.id,
            addr: transport.local_addr().unwrap(),
        };
        let join = overlay_proto::Message::Join(Join {
            mid,
            joiner,
            want: None,
            detour: None,
            coord: Default::default(),
            moving: false,
            nonce: 1,
        });
        let frame = overlay_proto::frame::encode(&join, 1 << 20).unwrap();
        let mut s = conn.open_uni().await.unwrap();
        s.write_all(&frame.head).await.unwrap();
        // It keeps sending heartbeats, so it is alive as far as the root
        // can tell: only its full queue gives it away.
        let beats = smol::spawn(async move {
            let beat = overlay_proto::Message::Heartbeat(Heartbeat {
                up: vec![(mid, 1)],
                down: vec![],
                replica: vec![],
                coord: Default::default(),
            });
            let frame = overlay_proto::frame::encode(&beat, 1 << 20).unwrap();
            loop {
                if s.write_all(&frame.head).await.is_err() {
                    break;
                }
                smol::Timer::after(Duration::from_millis(200)).await;
            }
        });
        smol::Timer::after(Duration::from_millis(300)).await;
        let children = root.status().await.unwrap().groups[0].children.clone();
        assert!(
            children.iter().any(|ch| ch.starts_with(&me.id.to_string())),
            "the rogue became a child"
        );

        // 3,000 messages of 4 KiB (12 MiB): far more than the rogue's
        // flow-control window and the root's 4 MiB queue for it.
        let publisher = c.client(1).await.unwrap();
        let payload = "x".repeat(4096);
        let payloads = (0..3000).map(|k| format!("{k} {payload}"));
        publisher
            .publish_all(mid, payloads, 256, |_| {})
            .await
            .unwrap();
        wait_for(&[&a, &b], 3000, Duration::from_secs(60)).await;
        assert_eq!(
            a.lock().unwrap().len(),
            3000,
            "a sibling of the stuck child lost messages"
        );
        assert_eq!(
            b.lock().unwrap().len(),
            3000,
            "a sibling of the stuck child lost messages"
        );

        assert_eq!(closed_within(&conn, 10).await, 2, "closed as a slow peer");
        let children = root.status().await.unwrap().groups[0].children.clone();
        assert!(
            !children.iter().any(|ch| ch.starts_with(&me.id.to_string())),
            "the stuck child was dropped"
        );
        drop((task_a, task_b, beats));
    });
}

/// Waits for the peer to close `conn` and returns its application error
/// code; fails the test after `secs` seconds or on any other kind of close.
async fn closed_within(conn: &quinn::Connection, secs: u64) -> u64 {
    let reason = smol::future::or(async { Some(conn.closed().await) }, async {
        smol::Timer::after(Duration::from_secs(secs)).await;
        None
    })
    .await
    .expect("the node closes the connection");
    match reason {
        quinn::ConnectionError::ApplicationClosed(a) => a.error_code.into_inner(),
        other => panic!("unexpected close: {other}"),
    }
}
