//! LAN islands: the members of a group that share a multicast-capable LAN
//! take its messages from one datagram, not one tree link each.
//!
//! Once the driver has a multicast socket ([`Command::LanUp`]), every
//! member that holds its group's key asks the driver to join the group's
//! multicast address ([`Output::LanJoin`]) and announces itself there every
//! `lan_announce_interval`: whether it is attached to the tree, and how
//! deep. The members that hear each other form an *island*, and each
//! elects the same *leader*: the attached member nearest the root (least
//! depth, then least id). The leader stays on the tree as it was, and
//! re-sends every message it passes on as one datagram on the LAN
//! ([`Output::LanSend`]). Every other attached member tells its parent to
//! hold back the group's messages ([`Message::LanFed`]) and takes them
//! from the LAN into its stream, where they meet the usual checks: in
//! order, no duplicate, and a gap (a datagram the LAN lost, or one too
//! large for a datagram) is fetched from the parent over QUIC, which still
//! serves fetches and whose heartbeats still say how far it is, so a lost
//! tail shows too. A fed member keeps its place in the tree, and passes
//! what the LAN brings to its own children.
//!
//! Electing by depth is what keeps this from deadlocking: a node below a
//! member is deeper than that member, so the leader is never fed through
//! a member that is itself waiting for the leader's datagrams.
//!
//! A leader that goes silent for `lan_peer_timeout` is dropped from the
//! island; the members elect the next, which asks its parent for the
//! messages again, fetches what it missed meanwhile, and from then on
//! sends each message on the LAN. Nothing is lost, and nothing delivered
//! twice: the stream decides what is new by sequence number, wherever it
//! came from.
//!
//! Fallback. A member whose publish has no working way to the root (it is
//! not attached, or the root has not answered within `publish_retry`)
//! also sends it on the LAN, once ([`LanBody::Publish`]): the members
//! there deliver it at once, before the root has ordered it
//! ([`Event::LanDelivered`]), while the publish keeps trying the overlay.
//! When the root orders it and its sequenced copy comes down the tree,
//! those members recognize it by `(publisher, pub_id)` and do not deliver
//! it again; members elsewhere get it then, or repair it once their way
//! to the root is back. Each member remembers the last `buffer_messages`
//! messages it delivered for this, so a message is never delivered twice
//! unless more than that many arrive between its two copies.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use rand::Rng;

use super::datagram::{peek_mid, LanBody, OpenError, Opener, SealError, Sealer};
use crate::id::{Mid, NodeId};
use crate::interface::{Event, Output};
use crate::message::LanFed;
use crate::message::{Data, Message};
use crate::node::Node;
use crate::timer::Timer;

/// What a node counts of its LAN traffic, for `overlay status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LanStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Messages not sent on the LAN because no datagram could hold them
    /// (members fetch them over the overlay).
    pub too_large: u64,
    /// Datagrams received.
    pub received: u64,
    /// Datagrams that authenticated and were taken.
    pub accepted: u64,
    /// Publishes sent on the LAN because the root did not answer.
    pub fallback_publishes: u64,
    /// Our own, looped back.
    pub own: u64,
    /// For a group this node has no island in.
    pub foreign: u64,
    /// Failed authentication.
    pub forged: u64,
    /// Seen before, or from an earlier run of their sender.
    pub replayed: u64,
    /// Not an overlay datagram, truncated, or of another version.
    pub malformed: u64,
}

/// The LAN state of a node whose driver has a multicast socket.
#[derive(Debug)]
pub(crate) struct Lan {
    /// This run's session, which grows from one start to the next.
    session: u64,
    islands: BTreeMap<Mid, Island>,
    stats: LanStats,
}

impl Lan {
    pub(crate) fn new(session: u64) -> Self {
        Lan {
            session,
            islands: BTreeMap::new(),
            stats: LanStats::default(),
        }
    }

    /// Whether a member already delivered the message `(publisher,
    /// pub_id)` of group `mid`, noting it as delivered now. Always `false`
    /// for a group without an island.
    pub(crate) fn delivered_before(&mut self, mid: Mid, publisher: NodeId, pub_id: u64) -> bool {
        self.islands
            .get_mut(&mid)
            .is_some_and(|i| !i.delivered.insert((publisher, pub_id)))
    }
}

/// The messages a member delivered last, by `(publisher, pub_id)`.
#[derive(Debug)]
struct Delivered {
    order: std::collections::VecDeque<(NodeId, u64)>,
    set: rustc_hash::FxHashSet<(NodeId, u64)>,
    max: usize,
}

impl Delivered {
    fn new(max: usize) -> Self {
        Delivered {
            order: Default::default(),
            set: Default::default(),
            max: max.max(1),
        }
    }

    /// Notes `id`; whether it is new.
    fn insert(&mut self, id: (NodeId, u64)) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// One group's island, as this member sees it.
#[derive(Debug)]
struct Island {
    sealer: Sealer,
    opener: Opener,
    /// The other members heard (at most `lan_max_peers`).
    peers: BTreeMap<NodeId, Peer>,
    leader: Option<NodeId>,
    /// The parent we asked to hold back its messages, if we did.
    fed_by: Option<NodeId>,
    delivered: Delivered,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    /// Its depth in the tree; `None` while it is not attached.
    depth: Option<u16>,
    heard: Instant,
}

/// A read-only view of a group's island at this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IslandView {
    /// The member that re-sends the group's messages on the LAN.
    pub leader: Option<NodeId>,
    /// The other members heard on the LAN, with their depth in the tree
    /// (`None`: not attached).
    pub peers: Vec<(NodeId, Option<u16>)>,
    /// Whether this node takes the group's messages from the LAN (its
    /// parent holds them back).
    pub fed: bool,
}

impl<R: Rng> Node<R> {
    /// The driver has a multicast socket: islands may form, with datagrams
    /// sealed in `session`.
    pub(crate) fn lan_up(&mut self, session: u64) {
        if self.lan.is_some() {
            return;
        }
        self.lan = Some(Box::new(Lan::new(session)));
        self.on_lan_timer();
    }

    /// What the node counts of its LAN traffic, if it has a LAN.
    pub fn lan_stats(&self) -> Option<LanStats> {
        self.lan.as_ref().map(|l| l.stats)
    }

    /// The island of group `mid` as this node sees it, if it is in one.
    pub fn island(&self, mid: Mid) -> Option<IslandView> {
        let i = self.lan.as_ref()?.islands.get(&mid)?;
        Some(IslandView {
            leader: i.leader,
            peers: i.peers.iter().map(|(id, p)| (*id, p.depth)).collect(),
            fed: i.fed_by.is_some(),
        })
    }

    /// Every `lan_announce_interval`: islands for the groups we are a
    /// member of with a key, none for the others; an announcement in each;
    /// silent members dropped, and the leader elected again.
    pub(crate) fn on_lan_timer(&mut self) {
        let Some(lan) = self.lan.as_mut() else {
            return;
        };
        let me = self.overlay.table.me().id;
        let wanted: Vec<Mid> = self
            .groups
            .iter()
            .filter(|(_, g)| g.member && g.lan.key.is_some())
            .map(|(mid, _)| *mid)
            .collect();
        let gone: Vec<Mid> = lan
            .islands
            .keys()
            .filter(|mid| wanted.binary_search(mid).is_err())
            .copied()
            .collect();
        for mid in gone {
            if let Some(island) = lan.islands.remove(&mid) {
                self.out.push_back(Output::LanLeave(mid));
                if let (Some(p), Some(g)) = (island.fed_by, self.groups.get(&mid)) {
                    if let Some(parent) = g.parent.filter(|x| x.id == p) {
                        self.out.push_back(Output::Send {
                            to: parent,
                            msg: Message::LanFed(LanFed { mid, fed: false }),
                        });
                    }
                }
            }
        }
        for &mid in &wanted {
            if lan.islands.contains_key(&mid) {
                continue;
            }
            let key = self.groups[&mid]
                .lan
                .key
                .as_deref()
                .expect("filtered on a key");
            let max = self.cfg.lan_max_datagram;
            lan.islands.insert(
                mid,
                Island {
                    sealer: Sealer::new(key, mid, me, lan.session, max),
                    opener: Opener::new(key.clone(), mid, me, self.cfg.lan_max_peers),
                    peers: BTreeMap::new(),
                    leader: None,
                    fed_by: None,
                    delivered: Delivered::new(self.cfg.buffer_messages),
                },
            );
            self.out.push_back(Output::LanJoin(mid));
        }
        let now = self.now;
        let timeout = self.cfg.lan_peer_timeout;
        for island in lan.islands.values_mut() {
            island
                .peers
                .retain(|_, p| now.saturating_duration_since(p.heard) <= timeout);
        }
        for mid in wanted {
            self.announce(mid);
            self.elect(mid);
        }
        self.set_timer(self.cfg.lan_announce_interval, Timer::Lan);
    }

    /// Tells the island whether, and how deep, we are on the tree.
    fn announce(&mut self, mid: Mid) {
        let depth = self
            .groups
            .get(&mid)
            .filter(|g| g.attached)
            .map(|g| g.depth());
        self.lan_send(mid, &LanBody::Announce { depth });
    }

    /// Seals `body` and asks the driver to send it on the group's address.
    fn lan_send(&mut self, mid: Mid, body: &LanBody) {
        let Some(lan) = self.lan.as_mut() else {
            return;
        };
        let Some(island) = lan.islands.get_mut(&mid) else {
            return;
        };
        match island.sealer.seal(body) {
            Ok(d) => {
                lan.stats.sent += 1;
                self.out.push_back(Output::LanSend {
                    mid,
                    datagram: Bytes::from(d),
                });
            }
            Err(SealError::TooLarge { .. }) => lan.stats.too_large += 1,
        }
    }

    /// Elects the island's leader, and asks our parent to hold back or
    /// resume the group's messages accordingly.
    pub(crate) fn elect(&mut self, mid: Mid) {
        let me = self.overlay.table.me().id;
        let (Some(lan), Some(g)) = (self.lan.as_mut(), self.groups.get(&mid)) else {
            return;
        };
        let Some(island) = lan.islands.get_mut(&mid) else {
            return;
        };
        let mine = g.attached.then(|| (g.depth(), me));
        let leader = island
            .peers
            .iter()
            .filter_map(|(id, p)| p.depth.map(|d| (d, *id)))
            .chain(mine)
            .min()
            .map(|(_, id)| id);
        if leader != island.leader {
            tracing::debug!(mid = %mid, leader = ?leader.map(|l| l.short()), "island leader");
            island.leader = leader;
        }
        // Fed from the LAN while another member leads and we are attached
        // below a parent; otherwise from the tree.
        let parent = g.parent.filter(|_| g.attached && !g.is_root());
        let want = parent.filter(|_| leader.is_some_and(|l| l != me));
        if want.map(|p| p.id) == island.fed_by {
            return;
        }
        let before = island.fed_by.take();
        island.fed_by = want.map(|p| p.id);
        if let Some(p) = parent.filter(|p| before == Some(p.id)) {
            self.send(p, Message::LanFed(LanFed { mid, fed: false }));
        }
        if let Some(p) = want {
            self.send(p, Message::LanFed(LanFed { mid, fed: true }));
        }
    }

    /// We attached to a (maybe new) parent, which holds nothing back for
    /// us: ask again if we are to be fed.
    pub(crate) fn lan_attached(&mut self, mid: Mid) {
        if let Some(island) = self.lan.as_mut().and_then(|l| l.islands.get_mut(&mid)) {
            island.fed_by = None;
            self.elect(mid);
        }
    }

    /// A child asks us to hold back (or resume) its group's messages.
    pub(crate) fn on_lan_fed(&mut self, from: NodeId, mid: Mid, fed: bool) {
        if let Some(c) = self
            .groups
            .get_mut(&mid)
            .and_then(|g| g.children.get_mut(&from))
            .filter(|c| c.acked.is_some())
        {
            c.lan_fed = fed;
        }
    }

    /// As leader of the group's island, re-sends a message we pass on.
    pub(crate) fn lan_forward(&mut self, data: &Data) {
        let me = self.overlay.table.me().id;
        let Some(island) = self.lan.as_ref().and_then(|l| l.islands.get(&data.mid)) else {
            return;
        };
        if island.leader != Some(me) || island.peers.is_empty() {
            return;
        }
        let body = LanBody::Data {
            epoch: data.epoch,
            seq: data.seq,
            publisher: data.publisher,
            pub_id: data.pub_id,
            payload: data.payload.clone(),
        };
        self.lan_send(data.mid, &body);
    }

    /// Also sends our publish `request` on the LAN, once, if we have an
    /// island for its group.
    pub(crate) fn lan_publish(&mut self, pub_id: u64) {
        let Some(lan) = self.lan.as_mut() else {
            return;
        };
        let Some(p) = self.publisher.get_mut(pub_id) else {
            return;
        };
        if p.lan || !lan.islands.contains_key(&p.mid) {
            return;
        }
        p.lan = true;
        lan.stats.fallback_publishes += 1;
        let (mid, payload) = (p.mid, p.payload.clone());
        tracing::debug!(mid = %mid, pub_id, "no answer from the root: publishing on the LAN too");
        self.lan_send(mid, &LanBody::Publish { pub_id, payload });
    }

    /// A datagram from the LAN.
    pub(crate) fn on_lan_datagram(&mut self, mut datagram: Vec<u8>) {
        let Some(lan) = self.lan.as_mut() else {
            return;
        };
        lan.stats.received += 1;
        if datagram.len() > self.cfg.lan_max_datagram {
            lan.stats.malformed += 1;
            return;
        }
        let opened = peek_mid(&datagram).and_then(|mid| match lan.islands.get_mut(&mid) {
            Some(island) => island.opener.open(&mut datagram).map(|o| (mid, o)),
            None => Err(OpenError::Foreign),
        });
        let (mid, (sender, body)) = match opened {
            Ok(o) => o,
            Err(e) => {
                let s = &mut lan.stats;
                match e {
                    OpenError::Own => s.own += 1,
                    OpenError::Foreign => s.foreign += 1,
                    OpenError::Forged => s.forged += 1,
                    OpenError::Replayed => s.replayed += 1,
                    _ => s.malformed += 1,
                }
                tracing::trace!(error = %e, "datagram dropped");
                return;
            }
        };
        lan.stats.accepted += 1;
        match body {
            LanBody::Announce { depth } => {
                let now = self.now;
                let max = self.cfg.lan_max_peers;
                let island = lan.islands.get_mut(&mid).expect("opened by its island");
                let known = island.peers.contains_key(&sender);
                if known || island.peers.len() < max {
                    let before = island.peers.insert(sender, Peer { depth, heard: now });
                    if before.is_none_or(|b| b.depth != depth) {
                        self.elect(mid);
                    }
                }
            }
            LanBody::Data {
                epoch,
                seq,
                publisher,
                pub_id,
                payload,
            } => {
                if let Some(g) = self.groups.get_mut(&mid) {
                    g.lan.from_lan += 1;
                }
                self.accept(Data::new(mid, epoch, seq, publisher, pub_id, payload));
            }
            LanBody::Publish { pub_id, payload } => {
                let member = self.groups.get(&mid).is_some_and(|g| g.member);
                if member && !lan.delivered_before(mid, sender, pub_id) {
                    self.emit(Event::LanDelivered {
                        mid,
                        publisher: sender,
                        pub_id,
                        payload,
                    });
                }
            }
        }
    }
}
