//! Who may send what: the one place every message from a peer passes
//! before any part of the node acts on it.
//!
//! Any node that completes a QUIC handshake is a peer, and a peer may lie.
//! The transport proves who sent a message (its id is the hash of the key
//! its TLS handshake proved); this module decides whether that sender may
//! send this message now. A message that fails is dropped and counted by
//! kind ([`Dropped`], shown by `overlay status`), and no part sees it.
//!
//! First, a request that costs this node work or sends must fit its
//! sender's budget (see [`crate::ratelimit`]).
//!
//! The rules, by kind. Requests that any node may route or send (joins,
//! publishes, fetches, tree queries, neighbour exchange, heartbeats,
//! departures) are admitted here and bounded by the parts that serve them.
//! Answers are admitted only from whom, and only for what, we asked:
//!
//! - [`Message::Data`] and [`Message::Splice`]: only from our parent in
//!   the group.
//! - [`Message::LanFed`]: only from an acknowledged child in the group.
//! - [`Message::PublishAck`], [`Message::PublishReject`] and
//!   [`Message::Direct`] about a publish: only for a publish of ours that waits for
//!   its answer (its pub_id is random, so only a node it passed knows it),
//!   for the same group, and only from the node that leads the group by
//!   the lineage we hold (by the mid, if we hold none); except that a
//!   node on the way may say it found no group.
//! - [`Message::Direct`] about a fetch or a tree query: only from the
//!   node that leads the group, for a repair of ours under way, a replay
//!   or a tree query of ours of that group.
//! - [`Message::JoinAck`]: only with the nonce of our join, which only
//!   the nodes the join reached know (it may be passed on, or handed down
//!   to a child of a full node, so the acknowledger need not be the node
//!   we sent it to); a new nonce each time we join anew.
//! - [`Message::PlaceOffer`]: only with the nonce of our latest placement
//!   look.
//! - [`Message::TreeReply`]: only for a tree query of ours, for the same
//!   group.
//! - [`Message::Collected`]: only from a child a collection of ours waits
//!   for.
//! - [`Message::Fetched`] for our own stream: only below the end of the
//!   range our fetches asked for.
//! - [`Message::Lost`] for our own stream: only a non-empty range that
//!   ends within the one our fetches asked for (so no answer can skip the
//!   stream past what we asked about).
//! - [`Message::ReplicaAck`]: only from a replica of a group we are root
//!   of.
//! - [`Message::Proof`]: only for a group whose tree we are on (not as its
//!   root), or one we replay; its signature is checked then (see
//!   [`crate::proof`]), as is every group message against it.
//! - [`Message::ReplicaSync`]: only from the root its lineage ends with,
//!   whose last mandate names us as a replica; [`Message::NotRoot`]: only
//!   with a lineage that ends with the root it names, in the epoch it
//!   names; [`Message::Lineage`]: only for a group whose tree we are on (not
//!   as its root), or one we replay. The lineages' signatures are checked
//!   then (see [`crate::lineage`]): no node can claim a group's root
//!   unless the issuing root, or a root it named, named it.
//!
//! Whatever the kind, values near their maximum are refused: sequence
//! numbers from [`MAX_SEQ`] on and the last epoch, so that no `+ 1`, and
//! no sum of a sequence number and a count, wraps anywhere behind this
//! point.
//!
//! An answer that comes after we stopped waiting (a publish that timed
//! out, a collection that answered without it) is counted too.
//!
//! Still taken on the sender's word: who answers a fetch (the root
//! answers what a parent passed up; what it sends must be proven, see
//! below), and what a node that our join or look reached says of its
//! path and delays.
//!
//! Group messages themselves need no trusted sender: each is delivered,
//! kept and forwarded only once the root's signed proof vouches for it
//! (see [`crate::proof`]), wherever it came from.

use std::collections::BTreeMap;

use rand::Rng;

use crate::message::{Asked, Collected, Direct, Lost, Message, NodeInfo, RejectReason, TreeReply};
use crate::node::Node;

/// Messages dropped because their sender may not send them, by kind, and
/// group messages and proofs dropped because the root did not sign them
/// (kinds marked `(forged)`; see [`crate::proof`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Count by message kind ([`Message::kind`]): a fixed set of keys.
    by_kind: BTreeMap<&'static str, u64>,
}

impl Dropped {
    /// The counts, by message kind, of kinds with any.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.by_kind.iter().map(|(k, n)| (*k, *n))
    }

    /// How many messages of `kind` were dropped.
    pub fn get(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }

    /// All messages dropped.
    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    pub(crate) fn count(&mut self, kind: &'static str) {
        let n = self.by_kind.entry(kind).or_default();
        *n = n.saturating_add(1);
    }
}

/// The first sequence number refused from the wire. No group reaches it
/// (a million messages a second take 146,000 years), and anything below
/// it leaves room to add counts without wrapping.
pub const MAX_SEQ: u64 = 1 << 62;

/// Whether every sequence number and epoch `msg` carries is below its
/// limit.
fn in_range(msg: &Message) -> bool {
    let seq = |s: u64| s < MAX_SEQ;
    let epoch = |e: u32| e < u32::MAX;
    match msg {
        Message::Join(j) => j.want.is_none_or(seq),
        Message::JoinAck(a) => seq(a.next) && epoch(a.epoch),
        Message::PublishAck(a) => seq(a.seq),
        Message::Data(d) | Message::Replicate(d) | Message::Fetched { data: d, .. } => {
            seq(d.seq) && epoch(d.epoch)
        }
        Message::Heartbeat(h) => [&h.up, &h.down, &h.replica]
            .into_iter()
            .flatten()
            .all(|&(_, s)| seq(s)),
        Message::Fetch(f) => seq(f.from) && seq(f.to),
        Message::Lost(l) => seq(l.from) && seq(l.to),
        Message::ReplicaSync(s) => seq(s.first) && epoch(s.epoch),
        Message::ReplicaAck(a) => seq(a.seq) && epoch(a.epoch),
        Message::NotRoot(n) => {
            n.lineage.well_formed(n.mid)
                && n.lineage.epoch() == n.epoch
                && n.lineage.root() == Some(n.root.id)
        }
        Message::Proof(p) => {
            seq(p.first) && epoch(p.epoch) && p.digests.len() <= crate::proof::MAX_PROOF_RUN
        }
        _ => true,
    }
}

impl<R: Rng> Node<R> {
    /// Whether `from` may send `msg` now; a message that may not is
    /// counted and logged.
    pub(crate) fn admit(&mut self, from: &NodeInfo, msg: &Message) -> bool {
        if let Some((limited, bucket)) = crate::ratelimit::limited(msg, from.id) {
            let (rate, burst) = (self.cfg.peer_request_rate, self.cfg.peer_request_burst);
            let taken = match bucket {
                crate::ratelimit::Bucket::Own => self.budgets.take(from.id, self.now, rate, burst),
                crate::ratelimit::Bucket::Relayed => {
                    let f = crate::ratelimit::RELAY_FACTOR;
                    let (rate, burst) = (rate.saturating_mul(f), burst.saturating_mul(f));
                    self.relayed_budgets.take(from.id, self.now, rate, burst)
                }
            };
            if !taken {
                tracing::debug!(from = %from.id.short(), kind = msg.kind(), "dropped: the peer is over its request rate");
                self.dropped.count(limited);
                return false;
            }
        }
        let ok = in_range(msg)
            && match msg {
                // A parent only where our join went (or was passed on,
                // or handed down), and an offer only for our latest look.
                Message::JoinAck(a) => self
                    .groups
                    .get(&a.mid)
                    .is_some_and(|g| g.join.nonce == a.nonce),
                Message::PlaceOffer(o) => self
                    .groups
                    .get(&o.mid)
                    .is_some_and(|g| g.place.ask == Some(o.nonce)),
                // Group messages only from our parent (a node that is not
                // in the group is told to stop, by the part that serves
                // data).
                Message::Data(d) => self
                    .groups
                    .get(&d.mid)
                    .is_none_or(|g| !g.is_root() && g.parent.is_some_and(|p| p.id == from.id)),
                Message::Splice(s) => self
                    .groups
                    .get(&s.mid)
                    .is_some_and(|g| g.parent.is_some_and(|p| p.id == from.id)),
                Message::LanFed(f) => self
                    .groups
                    .get(&f.mid)
                    .is_some_and(|g| g.children.get(&from.id).is_some_and(|c| c.acked.is_some())),
                // Answers to our publishes: from the group's root, except
                // that a node on the way may find no group (it knows the
                // pub_id, which is random, only if the publish passed it).
                Message::PublishAck(a) => {
                    self.publisher.waits_for(a.mid, a.pub_id) && self.leads(a.mid, from.id)
                }
                // A root's redirect of a request of ours still under way.
                Message::Direct(Direct { mid, asked }) => {
                    self.leads(*mid, from.id)
                        && match *asked {
                            Asked::Publish { pub_id } => self.publisher.waits_for(*mid, pub_id),
                            Asked::Fetch { request: 0 } => self.fetched_up_to(*mid) > 0,
                            Asked::Fetch { request } => {
                                self.replays.get(&request).is_some_and(|r| r.mid == *mid)
                            }
                            Asked::Tree { query } => self.queries.waits_for_reply(*mid, query),
                        }
                }
                Message::PublishReject(r) => {
                    self.publisher.waits_for(r.mid, r.pub_id)
                        && (r.reason == RejectReason::UnknownGroup || self.leads(r.mid, from.id))
                }
                Message::TreeReply(TreeReply { mid, query, .. }) => {
                    self.queries.waits_for_reply(*mid, *query)
                }
                Message::Collected(Collected { mid, query, .. }) => {
                    self.queries.waits_for_collected(*mid, *query, from.id)
                }
                Message::Fetched { request: 0, data } => data.seq < self.fetched_up_to(data.mid),
                Message::Lost(Lost {
                    mid,
                    request: 0,
                    from: first,
                    to,
                }) => first < to && *to <= self.fetched_up_to(*mid),
                Message::Proof(p) => {
                    self.groups.get(&p.mid).is_some_and(|g| !g.is_root()) || self.replaying(p.mid)
                }
                // A root's claim to be root: from the root its lineage ends
                // with, naming us its replica. (The lineage's signatures
                // are checked by the part that holds lineages.)
                Message::ReplicaSync(s) => {
                    s.root.id == from.id
                        && s.first > 0
                        && s.lineage.well_formed(s.mid)
                        && s.lineage.epoch() == s.epoch
                        && s.lineage.last().is_some_and(|m| {
                            m.root() == from.id && m.successors.contains(&self.me().id)
                        })
                }
                Message::Lineage(l) => l.mid().is_some_and(|mid| {
                    l.well_formed(mid)
                        && (self.groups.get(&mid).is_some_and(|g| !g.is_root())
                            || self.replaying(mid)
                            || self.publisher.publishes_to(mid)
                            || self.roots.contains(mid))
                }),
                Message::ReplicaAck(a) => self.groups.get(&a.mid).is_some_and(|g| {
                    g.root
                        .as_ref()
                        .is_some_and(|r| r.replicas.iter().any(|x| x.info.id == from.id))
                }),
                _ => true,
            };
        if !ok {
            tracing::debug!(from = %from.id.short(), kind = msg.kind(), "dropped: not a message this sender may send now");
            self.dropped.count(msg.kind());
            if let Message::JoinAck(a) = msg {
                self.turn_down_parent(*from, a.mid);
            }
        }
        ok
    }

    /// An acknowledgement without our join's nonce: most often a late one
    /// (for a join of ours from before we last attached), whose sender
    /// took us as its child. A leave tells it to drop us, as it would
    /// have had it acknowledged an earlier attempt; it costs the sender
    /// only its own claim. Never to our parent, which holds our nonce.
    fn turn_down_parent(&mut self, from: NodeInfo, mid: crate::id::Mid) {
        let parent = self
            .groups
            .get(&mid)
            .and_then(|g| g.parent)
            .is_some_and(|p| p.id == from.id);
        if !parent {
            self.send(from, Message::Leave { mid });
        }
    }

    /// One past the last message of `mid` our gap fetches asked for (0:
    /// none, or not in the group).
    fn fetched_up_to(&self, mid: crate::id::Mid) -> u64 {
        self.groups.get(&mid).map_or(0, |g| g.stream.fetch_to())
    }
}

#[cfg(test)]
mod tests {
    //! Forged answers from a node that joined the overlay, one kind at a
    //! time: each is dropped and counted, and the honest answer still
    //! works.
    use std::time::Instant;

    use bytes::Bytes;
    use rand::rngs::StdRng;

    use super::*;
    use crate::config::Config;
    use crate::id::{Mid, NodeId};
    use crate::interface::{Command, Event, Input, Output};
    use crate::message::{Data, JoinAck, LanFed, Offer, PublishAck, ReplicaAck, Splice};
    use crate::timer::Timer;
    use std::sync::Arc;

    use rand::SeedableRng;

    use crate::keys::SharedSigner;
    use crate::lineage::Lineage;
    use crate::proof::{digest, Proof};
    use crate::test_support::{attach, deliver, drain, info, keyed, node, signer};

    const Q: u128 = 0xE000_0000_0000_0000_0000_0000_0000_0000;
    const P: u128 = 0x1000_0000_0000_0000_0000_0000_0000_0000;
    /// The liar: a node that completed a handshake, nothing more.
    const M: u128 = 0x5000_0000_0000_0000_0000_0000_0000_0000;

    /// The root: a node whose key's id begins with F, so it is where
    /// routing toward its group ends.
    fn root() -> (u128, SharedSigner) {
        keyed(0xF)
    }

    /// The group, issued by the root.
    fn mid() -> Mid {
        Mid::issue(NodeId(root().0), &mut StdRng::seed_from_u64(1))
    }

    /// The root's proof of messages `seqs` (as [`data`] makes them).
    fn proof(seqs: std::ops::Range<u64>) -> Message {
        let digests = seqs.clone().map(|s| digest(&data(s))).collect();
        let p = Proof::sign(&*root().1, mid(), 1, seqs.start, digests);
        Message::Proof(Arc::new(p))
    }

    /// P, attached under root().0 -> Q, expecting message 1 next.
    fn p_under_q() -> Node<StdRng> {
        let root = root().0;
        let mut p = node(P, &[root, Q, M], Config::default());
        attach(&mut p, mid(), &[root, Q]);
        assert!(p.groups[&mid()].attached);
        p
    }

    fn data(seq: u64) -> Data {
        Data::new(mid(), 1, seq, NodeId(P), seq, Bytes::from_static(b"x"))
    }

    fn events(n: &mut Node<StdRng>) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(o) = n.poll_output() {
            if let Output::Event(e) = o {
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn a_lost_range_nobody_asked_about_cannot_silence_a_member() {
        let mut p = p_under_q();
        // Message 3 before 1 and 2: P fetches 1..3 from Q.
        let sent = deliver(&mut p, Q, Message::Data(data(3)));
        assert!(sent
            .iter()
            .any(|(to, m)| *to == NodeId(Q) && m.kind() == "fetch"));
        deliver(&mut p, Q, proof(3..4));
        let forged = Lost {
            mid: mid(),
            request: 0,
            from: 0,
            to: u64::MAX,
        };
        deliver(&mut p, M, Message::Lost(forged));
        assert_eq!(p.dropped().get("lost"), 1);
        assert_eq!(p.groups[&mid()].stream.next, Some(1), "nothing skipped");
        // What it asked about can still be reported lost.
        let answer = Lost {
            mid: mid(),
            request: 0,
            from: 1,
            to: 3,
        };
        deliver(&mut p, Q, Message::Lost(answer));
        assert_eq!(p.dropped().total(), 1);
        assert_eq!(
            p.groups[&mid()].stream.next,
            Some(4),
            "1 and 2 lost, 3 delivered"
        );
    }

    #[test]
    fn fetched_messages_beyond_what_was_asked_for_are_dropped() {
        let mut p = p_under_q();
        deliver(&mut p, Q, Message::Data(data(3)));
        deliver(&mut p, Q, proof(3..4));
        for seq in 3..10 {
            let forged = Message::Fetched {
                request: 0,
                data: data(seq),
            };
            deliver(&mut p, M, forged);
        }
        assert_eq!(p.dropped().get("fetched"), 7);
        let honest = Message::Fetched {
            request: 0,
            data: data(1),
        };
        deliver(&mut p, Q, proof(1..2));
        deliver(&mut p, Q, honest);
        assert_eq!(p.dropped().total(), 7);
        assert_eq!(p.groups[&mid()].stream.next, Some(2));
    }

    #[test]
    fn only_the_roots_answer_to_our_own_publish_completes_it() {
        let mut p = p_under_q();
        let publish = Command::Publish {
            request: 5,
            mid: mid(),
            payload: Bytes::from_static(b"hello"),
        };
        p.handle(Instant::now(), Input::Command(publish));
        let pub_id = drain(&mut p)
            .iter()
            .find_map(|(_, m)| match m {
                Message::Publish(x) => Some(x.pub_id),
                _ => None,
            })
            .expect("the publish goes out");
        assert_ne!(pub_id, 5, "pub_ids are not the application's numbers");
        let ack = |mid, pub_id| {
            Message::PublishAck(PublishAck {
                mid,
                pub_id,
                seq: 7,
            })
        };
        let root = root().0;
        // Another number, another group, or a node that is not the root
        // (though it saw the publish pass): dropped.
        deliver(&mut p, root, ack(mid(), pub_id.wrapping_add(1)));
        deliver(&mut p, root, ack(Mid(0xabc), pub_id));
        deliver(&mut p, M, ack(mid(), pub_id));
        assert_eq!(p.dropped().get("publish-ack"), 3);
        assert!(events(&mut p).is_empty());
        p.handle(
            Instant::now(),
            Input::Message {
                from: info(root),
                msg: ack(mid(), pub_id),
            },
        );
        assert!(matches!(
            &events(&mut p)[..],
            [Event::PublishAccepted {
                request: 5,
                seq: 7,
                ..
            }]
        ));
    }

    #[test]
    fn only_a_node_our_join_reached_adopts_us_and_only_our_looks_get_offers() {
        let root = root().0;
        let mut p = node(P, &[root, Q, M], Config::default());
        p.handle(Instant::now(), Input::Command(Command::Join { mid: mid() }));
        let nonce = drain(&mut p)
            .iter()
            .find_map(|(_, m)| match m {
                Message::Join(j) => Some(j.nonce),
                _ => None,
            })
            .expect("the join goes out");
        let ack = |by: u128, nonce: u64| {
            Message::JoinAck(JoinAck {
                mid: mid(),
                next: 1,
                epoch: 1,
                path: vec![NodeId(root), NodeId(by)],
                delay_us: 0,
                coord: Default::default(),
                key: None,
                nonce,
            })
        };
        // M claims to be our parent: without the join's nonce it is not.
        deliver(&mut p, M, ack(M, nonce.wrapping_add(1)));
        assert!(!p.groups[&mid()].attached);
        assert_eq!(p.dropped().get("join-ack"), 1);
        // Q, which the join reached (or was handed to), is.
        deliver(&mut p, Q, ack(Q, nonce));
        assert_eq!(p.groups[&mid()].parent.map(|x| x.id), Some(NodeId(Q)));

        let offer = |nonce: u64| {
            Message::PlaceOffer(Offer {
                mid: mid(),
                delay_us: 0,
                edge_us: 0,
                budget_us: Some(1_000_000),
                nonce,
            })
        };
        // An offer nobody asked for, however good, moves no one.
        assert!(deliver(&mut p, M, offer(0)).is_empty());
        crate::test_support::fire(&mut p, Instant::now(), Timer::Optimize(mid()));
        let look = drain(&mut p)
            .iter()
            .find_map(|(_, m)| match m {
                Message::Place(x) => Some(x.nonce),
                _ => None,
            })
            .expect("a look goes out");
        assert!(deliver(&mut p, M, offer(look.wrapping_add(1))).is_empty());
        assert_eq!(p.dropped().get("place-offer"), 2);
        // The answer to our look is weighed (and this one taken).
        let sent = deliver(&mut p, M, offer(look));
        assert!(matches!(
            &sent[..],
            [(to, Message::Join(j))] if *to == NodeId(M) && j.moving && j.nonce == nonce
        ));
    }

    #[test]
    fn a_fetch_is_served_only_to_its_asker_and_only_the_root_redirects_it() {
        // The root, with three messages (no replicas to wait for).
        let (root_id, key) = root();
        let mut r = crate::test_support::node_signing(root_id, key, &[], Config::default());
        r.handle(
            Instant::now(),
            Input::Command(Command::CreateGroup { request: 1 }),
        );
        let created = events(&mut r)
            .into_iter()
            .find_map(|e| match e {
                Event::GroupCreated { mid, .. } => Some(mid),
                _ => None,
            })
            .expect("the group was created");
        for i in 0..3 {
            let payload = Bytes::from_static(b"m");
            r.handle(
                Instant::now(),
                Input::Command(Command::Publish {
                    request: i,
                    mid: created,
                    payload,
                }),
            );
        }
        drain(&mut r);
        assert_eq!(r.groups[&created].held().len(), 3);
        let fetch = |reply_to: u128| {
            Message::Fetch(crate::message::Fetch {
                mid: created,
                from: 1,
                to: 4,
                reply_to: info(reply_to),
                request: 0,
            })
        };
        // M asks in P's name: P gets one small redirect, not the messages.
        let sent = deliver(&mut r, M, fetch(P));
        assert!(
            matches!(&sent[..], [(to, Message::Direct(d))] if *to == NodeId(P) && d.mid == created),
            "{sent:?}"
        );
        // P asks itself: served.
        let sent = deliver(&mut r, P, fetch(P));
        let served = sent
            .iter()
            .filter(|(to, m)| *to == NodeId(P) && m.kind() == "fetched")
            .count();
        assert_eq!(served, 3);

        // P, a member with a gap, fetches from its parent; a redirect from
        // M is dropped, the root's sends the fetch straight to the root.
        let mut p = p_under_q();
        let mut sent = deliver(&mut p, Q, Message::Data(data(3)));
        sent.extend(deliver(&mut p, Q, proof(3..4)));
        assert!(sent
            .iter()
            .any(|(to, m)| *to == NodeId(Q) && m.kind() == "fetch"));
        let direct = Message::Direct(Direct {
            mid: mid(),
            asked: Asked::Fetch { request: 0 },
        });
        assert!(deliver(&mut p, M, direct.clone()).is_empty());
        assert_eq!(p.dropped().get("direct"), 1);
        let sent = deliver(&mut p, root_id, direct);
        assert!(
            matches!(&sent[..], [(to, Message::Fetch(f))] if *to == NodeId(root_id) && f.reply_to.id == NodeId(P)),
            "{sent:?}"
        );
    }

    #[test]
    fn a_peer_flooding_requests_is_held_to_its_rate_and_no_one_else_is() {
        let cfg = Config {
            peer_request_rate: 10,
            peer_request_burst: 20,
            ..Config::default()
        };
        let root = root().0;
        let mut p = node(P, &[root, Q, M], cfg);
        let fetch = |reply_to: u128| {
            Message::Fetch(crate::message::Fetch {
                mid: Mid(0xabc),
                from: 1,
                to: 2,
                reply_to: info(reply_to),
                request: 1,
            })
        };
        for _ in 0..100 {
            deliver(&mut p, M, fetch(M));
        }
        assert_eq!(p.dropped().get("fetch (rate-limited)"), 80);
        // Q's requests are its own business.
        deliver(&mut p, Q, fetch(Q));
        assert_eq!(p.dropped().get("fetch (rate-limited)"), 80);
        // Placement asks Q passes on for others have a budget of their
        // own, RELAY_FACTOR times as large; its own asks do not.
        let place = |node: u128| {
            Message::Place(crate::message::Place {
                mid: Mid(0xabc),
                node: info(node),
                coord: Default::default(),
                budget_us: None,
                nonce: 1,
            })
        };
        let relayed = 20 * crate::ratelimit::RELAY_FACTOR as u64;
        for _ in 0..relayed + 10 {
            deliver(&mut p, Q, place(M));
        }
        assert_eq!(p.dropped().get("place relayed (rate-limited)"), 10);
        for _ in 0..30 {
            deliver(&mut p, Q, place(Q));
        }
        assert_eq!(
            p.dropped().get("place (rate-limited)"),
            11,
            "20 of Q's own, less the fetch"
        );
    }

    #[test]
    fn tree_link_messages_count_only_from_the_other_end_of_the_link() {
        let mut p = p_under_q();
        let splice = Splice {
            mid: mid(),
            parent: info(M),
        };
        assert!(deliver(&mut p, M, Message::Splice(splice)).is_empty());
        deliver(
            &mut p,
            M,
            Message::LanFed(LanFed {
                mid: mid(),
                fed: true,
            }),
        );
        let ack = ReplicaAck {
            mid: mid(),
            epoch: u32::MAX,
            seq: u64::MAX,
        };
        deliver(&mut p, M, Message::ReplicaAck(ack));
        for kind in ["splice", "lan-fed", "replica-ack"] {
            assert_eq!(p.dropped().get(kind), 1, "{kind}");
        }
        assert_eq!(p.groups[&mid()].parent.map(|n| n.id), Some(NodeId(Q)));
    }

    #[test]
    fn values_at_their_limit_are_refused_whatever_the_kind() {
        let mut p = p_under_q();
        let lineage = Arc::new(Lineage::first(&*signer(M), mid(), vec![NodeId(P)]));
        let sync = crate::message::ReplicaSync {
            mid: mid(),
            epoch: u32::MAX,
            root: info(M),
            first: 1,
            lineage: lineage.clone(),
            key: None,
        };
        deliver(&mut p, M, Message::ReplicaSync(sync));
        let not_root = crate::message::NotRoot {
            mid: mid(),
            epoch: u32::MAX,
            root: info(M),
            lineage,
        };
        deliver(&mut p, M, Message::NotRoot(not_root));
        deliver(&mut p, Q, Message::Data(data(MAX_SEQ)));
        assert_eq!(p.dropped().get("replica-sync"), 1);
        assert_eq!(p.dropped().get("not-root"), 1);
        assert_eq!(p.dropped().get("data"), 1);
        assert!(p.replicas().is_empty(), "no replica taken on");
        assert_eq!(p.groups[&mid()].stream.next, Some(1));
    }

    #[test]
    fn a_message_waits_for_the_roots_proof_and_a_forged_one_never_passes() {
        let mut p = p_under_q();
        let next = |p: &Node<StdRng>| p.groups[&mid()].stream.next;
        deliver(&mut p, Q, Message::Data(data(1)));
        assert_eq!(next(&p), Some(1), "no proof yet");
        // The proof shows message 2 exists: it is fetched at once.
        let sent = deliver(&mut p, Q, proof(1..3));
        assert_eq!(next(&p), Some(2));
        assert!(sent.iter().any(|(_, m)| m.kind() == "fetch"));
        // The parent sends an altered message 2: it is dropped.
        let mut altered = data(2);
        altered.payload = Bytes::from_static(b"y");
        deliver(&mut p, Q, Message::Data(altered));
        assert_eq!(p.dropped().get("data (forged)"), 1);
        assert_eq!(next(&p), Some(2));
        let honest = Message::Fetched {
            request: 0,
            data: data(2),
        };
        deliver(&mut p, Q, honest);
        assert_eq!(next(&p), Some(3));
    }

    #[test]
    fn a_proof_by_anyone_but_the_root_is_dropped() {
        let mut p = p_under_q();
        p.groups.get_mut(&mid()).unwrap().member = true;
        deliver(&mut p, Q, Message::Data(data(1)));
        let (liar, key) = keyed(0x5);
        let forged = Proof::sign(&*key, mid(), 1, 1, vec![digest(&data(1))]);
        deliver(&mut p, liar, Message::Proof(Arc::new(forged)));
        let mut tampered = match proof(1..2) {
            Message::Proof(p) => (*p).clone(),
            _ => unreachable!(),
        };
        tampered.first = 2;
        deliver(&mut p, Q, Message::Proof(Arc::new(tampered)));
        assert_eq!(p.dropped().get("proof (forged)"), 2);
        assert!(events(&mut p).is_empty());
        deliver(&mut p, Q, proof(1..2));
        assert_eq!(p.groups[&mid()].stream.next, Some(2));
    }
}
