//! Trees that heal, end to end: real `overlay-node` processes on 127.0.0.1
//! killed with SIGKILL, restarted, read from slowly, and replayed from.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use overlay_node::api::{self, ClientFrame, Request, Response, ServerFrame, Status};
use overlay_node::client::Client;
use overlay_proto::Mid;
use overlay_tests::{bins, cli, collect, ok, run, start, wait_for, Inbox};
use overlay_tools::cluster::Cluster;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// The statuses of the running nodes, by index.
async fn statuses(clients: &HashMap<usize, Client>) -> HashMap<usize, Status> {
    let mut out = HashMap::new();
    for (&i, c) in clients {
        let t = Instant::now();
        if let Ok(s) = c.status().await {
            out.insert(i, s);
        }
        if std::env::var("CHAOS_DEBUG").is_ok() && t.elapsed() > Duration::from_millis(200) {
            eprintln!("    status of node {i} took {:?}", t.elapsed());
        }
    }
    out
}

/// Whether the group's tree over the live nodes is whole: exactly one root,
/// every other live node attached to a live parent.
fn whole(statuses: &HashMap<usize, Status>, mid: Mid, live: &HashSet<usize>) -> bool {
    let live_ids: HashSet<String> = statuses.values().map(|s| s.id.to_string()).collect();
    let mut roots = 0;
    for i in live {
        let Some(g) = statuses
            .get(i)
            .and_then(|s| s.groups.iter().find(|g| g.mid == mid))
        else {
            return false;
        };
        if g.role == "root" {
            roots += 1;
            continue;
        }
        let parent_live = g
            .parent
            .as_ref()
            .and_then(|p| p.split('@').next())
            .is_some_and(|id| live_ids.contains(id));
        if !g.attached || !parent_live {
            if std::env::var("CHAOS_DEBUG").is_ok() {
                eprintln!(
                    "    not whole: node {i} attached={} parent={:?} live={parent_live}",
                    g.attached, g.parent
                );
            }
            return false;
        }
    }
    roots == 1
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// 24 daemons with at most 3 children each, every one a member; a publisher
/// sends 5,000 messages at about 500 a second while a random forwarder is
/// killed (SIGKILL) every 2 seconds, and the root once. Every surviving
/// member must receive every acknowledged message exactly once, in the same
/// order. Prints the time from each kill to the tree being whole again.
#[test]
fn chaos_loses_no_acknowledged_message() {
    const N: usize = 24;
    const MESSAGES: usize = 5000;
    // The publisher's own daemon stays up: an application whose node dies
    // has nobody to publish through.
    const PUBLISHER: usize = 1;
    let mut c = start(N, &["--max-children", "3"]);
    smol::block_on(async {
        c.wait_overlay(LIMIT).await.unwrap();
        let root = c.client(0).await.unwrap();
        let mid = root.create().await.unwrap();
        let mut inboxes: Vec<(Inbox, smol::Task<()>)> = Vec::new();
        for i in 0..N {
            inboxes.push(collect(&c, i, mid).await);
        }
        let mut clients = HashMap::new();
        for i in 0..N {
            clients.insert(i, c.client(i).await.unwrap());
        }

        // The publisher: one message every 2 ms, each answer awaited apart.
        let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
        let failed: Arc<Mutex<Vec<String>>> = Arc::default();
        let publisher = c.client(PUBLISHER).await.unwrap();
        let (acked2, failed2) = (acked.clone(), failed.clone());
        let publishing = smol::spawn(async move {
            let t0 = Instant::now();
            let mut answers = Vec::new();
            for k in 0..MESSAGES {
                let text = format!("m{k}");
                match publisher
                    .start_publish(mid, text.clone().into_bytes())
                    .await
                {
                    Ok(p) => {
                        let (acked, failed) = (acked2.clone(), failed2.clone());
                        answers.push(smol::spawn(async move {
                            match p.accepted().await {
                                Ok(seq) => acked.lock().unwrap().push((seq, text)),
                                Err(e) => failed.lock().unwrap().push(format!("{text}: {e}")),
                            }
                        }));
                    }
                    Err(e) => failed2.lock().unwrap().push(format!("{text}: {e}")),
                }
                smol::Timer::at(t0 + Duration::from_millis(2 * (k as u64 + 1))).await;
            }
            for a in answers {
                a.await;
            }
        });

        // The chaos: a kill every 2 s, the root on the third; between
        // kills, watch for the tree to be whole again.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let mut live: HashSet<usize> = (0..N).collect();
        let mut repairs: Vec<(String, Duration)> = Vec::new();
        let mut unrepaired: Vec<(String, Instant)> = Vec::new();
        let t0 = Instant::now();
        let mut kills = 0;
        while !publishing.is_finished() || !unrepaired.is_empty() {
            let now_status = statuses(&clients).await;
            if whole(&now_status, mid, &live) {
                for (what, at) in unrepaired.drain(..) {
                    repairs.push((what, at.elapsed()));
                }
            }
            let due = t0 + Duration::from_secs(2 * (kills + 1));
            if !publishing.is_finished() && Instant::now() >= due {
                let victim = if kills == 2 {
                    now_status
                        .iter()
                        .find(|(_, s)| s.groups.iter().any(|g| g.mid == mid && g.role == "root"))
                        .map(|(i, _)| *i)
                        .map(|i| (i, "root"))
                } else {
                    let forwarders: Vec<usize> = now_status
                        .iter()
                        .filter(|(i, s)| {
                            **i != PUBLISHER
                                && s.groups.iter().any(|g| {
                                    g.mid == mid && g.role != "root" && !g.children.is_empty()
                                })
                        })
                        .map(|(i, _)| *i)
                        .collect();
                    (!forwarders.is_empty()).then(|| {
                        (
                            forwarders[rng.random_range(0..forwarders.len())],
                            "forwarder",
                        )
                    })
                };
                kills += 1;
                if let Some((v, what)) = victim {
                    c.kill(v);
                    live.remove(&v);
                    clients.remove(&v);
                    eprintln!(
                        "{:>6.2}s: killed node {v} ({what})",
                        t0.elapsed().as_secs_f64()
                    );
                    unrepaired.push((format!("node {v} ({what})"), Instant::now()));
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "the tree never healed"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }

        // Everything acknowledged reaches every survivor.
        let acked = acked.lock().unwrap().clone();
        let max_seq = acked.iter().map(|(s, _)| *s).max().unwrap_or(0);
        let survivors: Vec<&Inbox> = live.iter().map(|&i| &inboxes[i].0).collect();
        wait_for(&survivors, max_seq as usize, LIMIT).await;
        smol::Timer::after(Duration::from_secs(2)).await;

        let failed = failed.lock().unwrap().clone();
        let mut times: Vec<Duration> = repairs.iter().map(|(_, d)| *d).collect();
        eprintln!("repairs:");
        for (what, d) in &repairs {
            eprintln!("  {what}: tree whole again after {:.2} s", d.as_secs_f64());
        }
        eprintln!(
            "repair time over {} kills: median {:.2} s, max {:.2} s; {} of {MESSAGES} publishes acknowledged, {} failed",
            times.len(),
            median(&mut times).as_secs_f64(),
            times.iter().max().unwrap().as_secs_f64(),
            acked.len(),
            failed.len()
        );
        assert!(kills >= 4, "the chaos ran");
        assert!(
            repairs.iter().any(|(w, _)| w.contains("root")),
            "the root was killed"
        );
        let want: HashMap<u64, &String> = acked.iter().map(|(s, t)| (*s, t)).collect();
        let mut reference: Option<Vec<(u64, String)>> = None;
        for &i in &live {
            let got: Vec<(u64, String)> = inboxes[i]
                .0
                .lock()
                .unwrap()
                .iter()
                .map(|(s, _, t)| (*s, t.clone()))
                .collect();
            let seen: HashMap<u64, &String> = got.iter().map(|(s, t)| (*s, t)).collect();
            for (seq, text) in &want {
                assert_eq!(
                    seen.get(seq),
                    Some(text),
                    "node {i} is missing acknowledged message {seq}"
                );
            }
            let unique: HashSet<&String> = got.iter().map(|(_, t)| t).collect();
            assert_eq!(unique.len(), got.len(), "node {i} got a message twice");
            assert!(
                got.windows(2).all(|w| w[0].0 + 1 == w[1].0),
                "node {i} delivered out of order or with a gap"
            );
            match &reference {
                None => reference = Some(got),
                Some(r) => assert_eq!(r, &got, "node {i} saw another sequence"),
            }
        }
        drop(inboxes);
    });
}

/// A killed member restarted with the same data directory joins the group
/// again by itself and catches up from the root's retention; a subscriber
/// can then read what it missed with `subscribe --from`.
#[test]
fn a_restarted_node_rejoins_and_catches_up() {
    let mut c = start(6, &[]);
    smol::block_on(async {
        c.wait_overlay(LIMIT).await.unwrap();
        let root = c.client(0).await.unwrap();
        let mid = root.create().await.unwrap();
        let member = c.client(3).await.unwrap();
        member.join(mid).await.unwrap();
        let texts = |r: std::ops::Range<u32>| r.map(|k| format!("msg {k}").into_bytes());
        root.publish_all(mid, texts(1..51), 16, |_| {})
            .await
            .unwrap();
        // The node saves its memberships once a second.
        smol::Timer::after(Duration::from_millis(1500)).await;
        let saved = std::fs::read_to_string(c.nodes[3].dir.join("groups.json")).unwrap();
        assert!(
            saved.contains(&mid.to_string()),
            "membership saved: {saved}"
        );

        c.kill(3);
        root.publish_all(mid, texts(51..151), 16, |_| {})
            .await
            .unwrap();
        c.restart(3).unwrap();
        let member = c.client(3).await.unwrap();
        let deadline = Instant::now() + LIMIT;
        loop {
            let s = member.status().await.unwrap();
            let g = s.groups.iter().find(|g| g.mid == mid);
            if g.is_some_and(|g| g.attached && g.member && g.last_seq == 150) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted node did not catch up: {g:?}"
            );
            smol::Timer::after(Duration::from_millis(50)).await;
        }
    });
    let out = ok(cli(
        &c.nodes[3].dir,
        &[
            "subscribe",
            &group_of(&c),
            "--from",
            "40",
            "--count",
            "111",
            "--json",
        ],
        None,
        LIMIT,
    ));
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (40..151).collect::<Vec<u64>>());
}

fn group_of(c: &Cluster) -> String {
    let v: Value = serde_json::from_str(&ok(cli(
        &c.nodes[0].dir,
        &["status", "--json"],
        None,
        LIMIT,
    )))
    .unwrap();
    v["groups"][0]["mid"].as_str().unwrap().to_string()
}

/// A subscriber that stops reading does not hold up the other subscribers
/// or the tree; when it reads again it is told how many messages it missed.
#[test]
fn a_stalled_subscriber_is_told_what_it_missed() {
    const TOTAL: u64 = 20_000;
    let mut c = start(4, &[]);
    smol::block_on(async {
        c.wait_overlay(LIMIT).await.unwrap();
        let root = c.client(0).await.unwrap();
        let mid = root.create().await.unwrap();
        let (a, task_a) = collect(&c, 2, mid).await;
        let (b, task_b) = collect(&c, 3, mid).await;

        // The stalled one: subscribes through a raw socket and reads nothing.
        let mut stalled = UnixStream::connect(&c.nodes[2].info.control).unwrap();
        let frame = ClientFrame {
            id: 7,
            request: Request::Subscribe { mid, from: None },
        };
        std::io::Write::write_all(&mut stalled, &api::encode(&frame).unwrap()).unwrap();
        smol::Timer::after(Duration::from_millis(300)).await;

        let payload = "y".repeat(1024);
        let texts = (0..TOTAL).map(|k| format!("{k} {payload}").into_bytes());
        root.publish_all(mid, texts, 256, |_| {}).await.unwrap();
        wait_for(&[&a, &b], TOTAL as usize, LIMIT).await;
        assert_eq!(
            a.lock().unwrap().len() as u64,
            TOTAL,
            "a reader was held up"
        );
        assert_eq!(
            b.lock().unwrap().len() as u64,
            TOTAL,
            "a reader was held up"
        );

        // It reads again; one more message makes room for the report.
        let reader = std::thread::spawn(move || {
            stalled
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let (mut messages, mut missed) = (0u64, 0u64);
            let mut last = String::new();
            while last != "final" {
                let mut len = [0u8; 4];
                if stalled.read_exact(&mut len).is_err() {
                    break;
                }
                let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
                stalled.read_exact(&mut buf).unwrap();
                let f: ServerFrame = postcard::from_bytes(&buf).unwrap();
                match f.response {
                    Response::Message(d) => {
                        messages += 1;
                        last = String::from_utf8_lossy(&d.payload).into_owned();
                    }
                    Response::Lagged { missed: n } => missed += n,
                    _ => {}
                }
            }
            (messages, missed, last)
        });
        smol::Timer::after(Duration::from_millis(500)).await;
        root.publish(mid, "final").await.unwrap();
        let (messages, missed, last) = reader.join().unwrap();
        eprintln!("stalled subscriber: {messages} messages, told it missed {missed}");
        assert_eq!(
            last, "final",
            "the stalled reader gets the messages after the gap"
        );
        assert!(missed > 0, "the stalled reader is told it missed messages");
        assert_eq!(
            messages + missed,
            TOTAL + 1,
            "every message is delivered or counted"
        );
        drop((task_a, task_b));
    });
}

/// `subscribe --from SEQ` returns the retained messages from SEQ on, then
/// the live ones, with no gap and no duplicate, while publishing goes on;
/// a start older than the retention is reported as lost, never silently.
#[test]
fn subscribe_from_replays_then_goes_live() {
    let mut c = cluster_with_retention(100);
    let mid = smol::block_on(async {
        c.wait_overlay(LIMIT).await.unwrap();
        let root = c.client(0).await.unwrap();
        let mid = root.create().await.unwrap();
        let texts = (1..=150u32).map(|k| format!("msg {k}").into_bytes());
        root.publish_all(mid, texts, 16, |_| {}).await.unwrap();
        mid
    });
    // Two subscribers start in the past while live messages keep coming.
    let subscribe = |node: usize, from: &str, count: &str| {
        let mut cmd = Command::new(&bins().cli);
        cmd.arg("--node").arg(&c.nodes[node].dir).args([
            "subscribe",
            &mid.to_string(),
            "--from",
            from,
            "--count",
            count,
            "--json",
        ]);
        std::thread::spawn(move || run(cmd, None, LIMIT))
    };
    let recent = subscribe(2, "100", "151");
    let ancient = subscribe(1, "1", "100");
    let node0 = c.nodes[0].dir.clone();
    let live = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        for k in 151..=250 {
            let text = format!("msg {k}");
            ok(cli(
                &node0,
                &["publish", &mid.to_string(), &text],
                None,
                LIMIT,
            ));
        }
    });
    let lines = |out: std::process::Output| -> Vec<Value> {
        ok(out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let recent = lines(recent.join().unwrap());
    let ancient = lines(ancient.join().unwrap());
    live.join().unwrap();

    let seqs: Vec<u64> = recent.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (100..=250).collect::<Vec<u64>>(),
        "replay then live, no gap, no duplicate"
    );
    for v in &recent {
        let seq = v["seq"].as_u64().unwrap();
        assert_eq!(v["data"], format!("msg {seq}"));
    }
    // Retention is 100 messages: at least 1..=50 are gone (more if live
    // messages pushed them out first), and the subscriber is told first.
    let lost = ancient[0]["lost"].as_array().expect("a loss report first");
    assert_eq!(lost[0], 1);
    let resumes = lost[1].as_u64().unwrap();
    assert!(resumes >= 51, "{lost:?}");
    let seqs: Vec<u64> = ancient[1..]
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (resumes..resumes + 100).collect::<Vec<u64>>());
}

fn cluster_with_retention(messages: usize) -> Cluster {
    let mut c = overlay_tests::cluster();
    let cfg = c.path().join("retention.toml");
    std::fs::write(&cfg, format!("retain_messages = {messages}\n")).unwrap();
    let cfg = cfg.display().to_string();
    c.spawn(&[], &["--config", &cfg]).unwrap();
    c.spawn(&[0], &["--config", &cfg]).unwrap();
    c.spawn(&[0], &["--config", &cfg]).unwrap();
    c
}
