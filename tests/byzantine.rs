//! A rogue peer against real daemons: a process of our own crates with a
//! key of its own completes QUIC handshakes with the nodes of an overlay of
//! real `overlay-node` processes on 127.0.0.1, and sends each a forged
//! message of every kind it could use against a group (claims to the root,
//! publishes in another's name, forged data, repairs and proofs, unasked
//! acknowledgements and offers, fetches and tree queries to be answered to
//! others). The test then checks with the CLI and the client API that the
//! group keeps its root, that every member gets every accepted message
//! exactly once and nothing forged, and that the nodes count what they
//! dropped.
//!
//! Rogues also spend what a node keeps for its peers: connections from one
//! address, past `max_conns_per_ip`, are refused before their handshake;
//! frames started and never finished on several connections cannot hold
//! more than `frame_read_budget`. Either way the node carries on.

use std::sync::Arc;
use std::time::Duration;

use overlay_proto::keys::{Ed25519Signer, Signer};
use overlay_proto::lineage::Lineage;
use overlay_proto::message::{
    Data, Fetch, JoinAck, Lost, NotRoot, Offer, Publish, PublishAck, ReplicaSync, TreeQuery,
};
use overlay_proto::proof::{digest, Proof};
use overlay_proto::{Message, Mid, NodeInfo};
use overlay_tests::{cli, cluster, collect, ok, rogue_transport, start, texts, wait_for};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// Everything the rogue sends `to`, for group `mid` whose root is `root`
/// and whose member `victim` it impersonates or aims answers at.
fn forgeries(
    mid: Mid,
    me: NodeInfo,
    root: NodeInfo,
    victim: NodeInfo,
    to: NodeInfo,
) -> Vec<Message> {
    let key = Ed25519Signer::from_seed(&[0x66; 32]);
    let own = || {
        let first = Lineage::first(&key, mid, vec![key.public_key().id()]);
        Arc::new(first.succeeded_by(&key, vec![]).expect("it names itself"))
    };
    let forged = |seq: u64| {
        Data::new(
            mid,
            1,
            seq,
            victim.id,
            seq,
            bytes::Bytes::from(format!("forged {seq}")),
        )
    };
    let mut out = Vec::new();
    if to.id == root.id {
        // Claims to the root, and requests meant to make it send to others.
        out.push(Message::NotRoot(NotRoot {
            mid,
            epoch: 2,
            root: NodeInfo {
                id: key.public_key().id(),
                addr: me.addr,
            },
            lineage: own(),
        }));
        out.push(Message::ReplicaSync(ReplicaSync {
            mid,
            epoch: 2,
            root: me,
            first: 1,
            lineage: own(),
            key: None,
        }));
        for k in 0..5u64 {
            out.push(Message::Publish(Publish {
                mid,
                publisher: victim,
                pub_id: k + 1,
                payload: bytes::Bytes::from(format!("forged in another's name {k}")),
            }));
        }
        out.push(Message::Fetch(Fetch {
            mid,
            from: 1,
            to: 2048,
            reply_to: victim,
            request: 0,
        }));
        out.push(Message::TreeQuery(TreeQuery {
            mid,
            query: 7,
            reply_to: victim,
        }));
        return out;
    }
    for seq in 1..=5 {
        out.push(Message::Data(forged(seq)));
        out.push(Message::Fetched {
            request: 0,
            data: forged(seq),
        });
        out.push(Message::Proof(Arc::new(Proof::sign(
            &key,
            mid,
            1,
            seq,
            vec![digest(&forged(seq))],
        ))));
    }
    out.push(Message::Lost(Lost {
        mid,
        request: 0,
        from: 1,
        to: 1 << 40,
    }));
    out.push(Message::JoinAck(JoinAck {
        mid,
        next: 1,
        epoch: 1,
        path: vec![root.id, me.id],
        delay_us: 0,
        coord: Default::default(),
        key: None,
        nonce: 0x1234,
    }));
    out.push(Message::PlaceOffer(Offer {
        mid,
        delay_us: 0,
        edge_us: 0,
        budget_us: Some(u32::MAX),
        nonce: 0x1234,
    }));
    out.push(Message::PublishAck(PublishAck {
        mid,
        pub_id: 1,
        seq: 1,
    }));
    out
}

fn status(dir: &std::path::Path) -> Value {
    serde_json::from_str(&ok(cli(dir, &["status", "--json"], None, LIMIT))).expect("status is JSON")
}

#[test]
fn a_rogue_peer_neither_forges_nor_takes_over_nor_silences() {
    let mut c = start(4, &[]);
    smol::block_on(async {
        c.wait_overlay(Duration::from_secs(30)).await.unwrap();
        let mid = c.client(0).await.unwrap().create().await.unwrap();
        let mut inboxes = Vec::new();
        let mut tasks = Vec::new();
        for i in 1..4 {
            let (inbox, task) = collect(&c, i, mid).await;
            inboxes.push(inbox);
            tasks.push(task);
        }
        let info = |i: usize| NodeInfo {
            id: c.nodes[i].info.id,
            addr: c.nodes[i].info.addr,
        };
        let (root, victim) = (info(0), info(1));

        // The rogue: a handshake with every node, then its forgeries.
        let (transport, me_id, _dir) = rogue_transport();
        let me = NodeInfo {
            id: me_id.id,
            addr: transport.local_addr().unwrap(),
        };
        let mut conns = Vec::new();
        for i in 0..4 {
            let to = info(i);
            let conn = transport.dial(to.addr, Some(to.id)).await.unwrap();
            let mut s = conn.open_uni().await.unwrap();
            for msg in forgeries(mid, me, root, victim, to) {
                let frame = overlay_proto::frame::encode(&msg, 1 << 20).unwrap();
                s.write_all(&frame.head).await.unwrap();
                s.write_all(&frame.payload).await.unwrap();
            }
            conns.push((conn, s));
        }

        // An honest member publishes; every member gets exactly that.
        let publisher = c.client(2).await.unwrap();
        let payloads: Vec<String> = (0..100).map(|k| format!("honest {k}")).collect();
        publisher
            .publish_all(mid, payloads.clone(), 32, |_| {})
            .await
            .unwrap();
        let refs: Vec<_> = inboxes.iter().collect();
        wait_for(&refs, 100, Duration::from_secs(30)).await;
        // A moment for anything forged that could still arrive.
        smol::Timer::after(Duration::from_millis(500)).await;
        for (i, inbox) in inboxes.iter().enumerate() {
            let got = inbox.lock().unwrap();
            let texts: Vec<&str> = got.iter().map(|(_, _, t)| t.as_str()).collect();
            assert_eq!(
                texts,
                payloads,
                "member {} got exactly the accepted messages",
                i + 1
            );
            let seqs: Vec<u64> = got.iter().map(|(s, _, _)| *s).collect();
            assert!(seqs.windows(2).all(|w| w[0] + 1 == w[1]), "in order, once");
        }
        drop(tasks);
        drop(conns);
    });

    // The root keeps its group, in its first epoch; the nodes counted what
    // they dropped.
    let root_status = status(&c.nodes[0].dir);
    let g = &root_status["groups"][0];
    assert_eq!(g["role"], "root", "node 0 is still the root: {g}");
    assert_eq!(g["epoch"], 1, "no one took over: {g}");
    let dropped = |v: &Value, kind: &str| v["dropped"][kind].as_u64().unwrap_or(0);
    assert!(
        dropped(&root_status, "not-root (forged)") >= 1,
        "{root_status}"
    );
    assert!(dropped(&root_status, "replica-sync") >= 1, "{root_status}");
    for i in 1..4 {
        let s = status(&c.nodes[i].dir);
        assert_eq!(
            s["groups"][0]["epoch"], 1,
            "node {i} follows the first root"
        );
        for kind in [
            "data",
            "fetched",
            "lost",
            "join-ack",
            "place-offer",
            "publish-ack",
        ] {
            assert!(
                dropped(&s, kind) >= 1,
                "node {i} dropped no {kind}: {}",
                s["dropped"]
            );
        }
        let proofs = dropped(&s, "proof (forged)") + dropped(&s, "proof");
        assert!(
            proofs >= 1,
            "node {i} dropped no forged proof: {}",
            s["dropped"]
        );
    }
    // The publishes in node 1's name were not ordered: node 1's status shows
    // the root's redirects it did not ask for.
    let s1 = status(&c.nodes[1].dir);
    assert!(dropped(&s1, "direct") >= 1, "{}", s1["dropped"]);
}

#[test]
fn one_address_gets_no_more_connections_than_its_cap_and_the_node_carries_on() {
    let mut c = cluster();
    let cfg = c.path().join("caps.toml");
    std::fs::write(&cfg, "max_conns_per_ip = 4\nmax_conns_per_subnet = 8\n").unwrap();
    let cfg = cfg.display().to_string();
    c.spawn(&[], &["--config", &cfg]).unwrap();
    let node = NodeInfo {
        id: c.nodes[0].info.id,
        addr: c.nodes[0].info.addr,
    };

    // Rogues of their own keys and ports, all on 127.0.0.1, one after the
    // other so that the first four are the ones let in.
    let (kept, refused) = smol::block_on(async {
        let mut kept = Vec::new();
        let mut refused = Vec::new();
        for _ in 0..8 {
            let (transport, _me, dir) = rogue_transport();
            match transport.dial(node.addr, Some(node.id)).await {
                Ok(conn) => kept.push((conn, transport, dir)),
                Err(e) => refused.push(format!("{e:#}")),
            }
        }
        (kept, refused)
    });
    assert_eq!(kept.len(), 4, "refused: {refused:?}");
    for e in &refused {
        // Refused by QUIC before any handshake, not closed by the daemon
        // after one.
        assert!(e.contains("refused to accept a new connection"), "{e}");
    }
    let s = status(&c.nodes[0].dir);
    assert!(
        s["refused_connections"].as_u64().unwrap_or(0) >= 4,
        "the refusals are counted: {s}"
    );

    // The rogues leave; their slots come back, and an honest node on the
    // same address enters and receives the node's group.
    smol::block_on(async {
        for (conn, _, _) in &kept {
            conn.close(0u32.into(), b"bye");
        }
        smol::Timer::after(Duration::from_millis(300)).await;
    });
    drop(kept);
    c.spawn(&[0], &[]).unwrap();
    smol::block_on(async {
        c.wait_overlay(Duration::from_secs(30)).await.unwrap();
        let root = c.client(0).await.unwrap();
        let mid = root.create().await.unwrap();
        let (inbox, task) = collect(&c, 1, mid).await;
        let payloads: Vec<String> = (0..10).map(|k| format!("after the rogues {k}")).collect();
        root.publish_all(mid, payloads.clone(), 8, |_| {})
            .await
            .unwrap();
        wait_for(&[&inbox], 10, Duration::from_secs(30)).await;
        let got: Vec<String> = texts(&inbox);
        assert_eq!(got, payloads);
        drop(task);
    });
}

#[test]
fn frames_never_finished_cannot_hold_more_than_the_read_budget() {
    // The largest frame is the message size and a margin of 64 KiB: a
    // budget of two such frames.
    let max_frame: usize = 65536 + 65536;
    let mut c = cluster();
    let cfg = c.path().join("budget.toml");
    std::fs::write(
        &cfg,
        format!(
            "max_message_size = 65536\nframe_read_budget = {}\n",
            2 * max_frame
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    c.spawn(&[], &["--config", &cfg]).unwrap();
    let node = NodeInfo {
        id: c.nodes[0].info.id,
        addr: c.nodes[0].info.addr,
    };

    smol::block_on(async {
        // Each rogue announces the largest frame, sends most of it and
        // never the rest: the first two take the whole budget, the third
        // finds no room.
        let mut rogues = Vec::new();
        for k in 0..3 {
            let (transport, _me, dir) = rogue_transport();
            let conn = transport.dial(node.addr, Some(node.id)).await.unwrap();
            let mut s = conn.open_uni().await.unwrap();
            let body = (max_frame - 4) as u32;
            s.write_all(&body.to_be_bytes()).await.unwrap();
            let sent = if k < 2 { 100_000 } else { 1000 };
            s.write_all(&vec![0u8; sent]).await.unwrap();
            rogues.push((conn, s, transport, dir));
            // Time for the node to read it before the next one.
            smol::Timer::after(Duration::from_millis(300)).await;
        }
        let third = rogues[2].0.clone();
        let reason = smol::future::or(async { Some(third.closed().await) }, async {
            smol::Timer::after(Duration::from_secs(15)).await;
            None
        })
        .await
        .expect("the third rogue's connection is closed");
        match reason {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(
                    close.error_code,
                    overlay_node::transport::codes::OVERLOADED.into(),
                    "{close}"
                );
            }
            other => panic!("closed for another reason: {other}"),
        }
        for (conn, _, _, _) in &rogues[..2] {
            assert!(
                conn.close_reason().is_none(),
                "the rogues within the budget keep their connections"
            );
        }
    });
    assert!(
        c.log(0).contains("frame read budget exhausted"),
        "the node says why: {}",
        c.log(0)
    );
    // The node still answers.
    let s = status(&c.nodes[0].dir);
    assert!(s["addr"].is_string(), "{s}");
}
