//! The routing state of one node: a base-16 prefix table and a leaf set.
//!
//! This is Pastry's table shape with Kademlia's metric. Row `r` of the table
//! holds nodes that share exactly `r` leading hex digits with this node, one
//! per value of their next digit; the leaf set holds the `L` nodes closest to
//! this node. "Closest" is XOR distance throughout: a key is the
//! responsibility of the node XOR-closest to it, and a message always moves to
//! the known node XOR-closest to its key, if that node is closer than this one.
//!
//! Why XOR rather than Pastry's numeric ring distance: with XOR, a longer
//! shared prefix always means a smaller distance, so every hop — whether
//! chosen from the table or from the leaf set — strictly decreases the
//! distance to the key. Routes can therefore never loop, even while tables
//! disagree during churn. That matters doubly here because join requests
//! build the group trees: a routing loop would be a cycle in a tree. With a
//! complete table, greedy XOR routing reaches the globally closest node in at
//! most one hop per digit resolved, `log16(N)` on average.
//!
//! Proximity neighbour selection. Any node with the right prefix may fill a
//! table slot, and the route's delay depends on which one does: with the
//! nearest candidate in every slot, the first hops of a route are short
//! (many nodes fit a slot of the first rows, so a near one exists) and only
//! the last hops, where few nodes fit, cross the network. The table therefore
//! keeps each entry's measured round-trip time, and a candidate whose RTT is
//! measured lower than the entry in its slot takes the slot
//! ([`RoutingTable::offer`]). The node asks its driver to measure candidates
//! ([`RoutingTable::should_probe`] bounds how many per slot), as Pastry does
//! (Castro et al., "Exploiting network proximity in peer-to-peer overlay
//! networks", 2002). The leaf set is chosen by id alone: it decides who is
//! responsible for a key, and proximity must never change that.
//!
//! Made-up neighbours. Ids cost nothing, so a single host can bring up many
//! ids chosen near ours and push every honest node out of our leaf set,
//! which decides who takes over a group's root. The addresses a connection
//! proved are what such a host cannot multiply, so the leaf set holds at
//! most `per_host` nodes of one host and `per_subnet` of one subnet (see
//! [`crate::subnet`]), the closest of each: a flood from one network takes
//! a few places, whatever ids it makes. Our own host and subnet are not
//! limited (a machine running several nodes, a LAN, the tests on
//! loopback). An honest network crowded past its share is left out of our
//! leaf set too, which may make us take a key one of its nodes is closer
//! to; the limits are set so that this takes a network holding a large
//! share of the overlay.

use std::net::IpAddr;
use std::time::Duration;

use crate::id::{digit, distance, shared_digits, Key, NodeId, DIGITS};
use crate::message::NodeInfo;

/// Entries beyond the shared rows that [`RoutingTable::useful_to`] sends:
/// more candidates for the one slot they compete for.
const SPARE_CANDIDATES: usize = 2;

/// A routing-table entry: a node and, once measured, its round-trip time.
#[derive(Debug, Clone, Copy)]
struct Entry {
    info: NodeInfo,
    rtt: Option<Duration>,
}

/// One table row: the entries, a spare for each slot, and how many
/// candidates were measured for each slot since the counts last decayed.
///
/// A spare is the second-best candidate heard of for its slot (the nearer
/// one, when both were measured). It is not used for routing; it takes the
/// slot when the entry is removed, so that a slot whose entry crashed is not
/// left empty until repair finds another node with that prefix: in the deep
/// rows few nodes fit a slot, and an empty slot there can make a route end
/// at the wrong node. A spare exists only beside an entry.
#[derive(Debug, Clone)]
struct Row {
    slots: [Option<Entry>; 16],
    spares: [Option<Entry>; 16],
    probed: [u8; 16],
}

impl Row {
    fn new() -> Self {
        Row {
            slots: [None; 16],
            spares: [None; 16],
            probed: [0; 16],
        }
    }

    /// Keeps `e` as the spare of slot `col` if it is better than the spare
    /// there: none, the same node, or a farther (or unmeasured) one.
    fn keep_spare(&mut self, col: usize, e: Entry) {
        if self.slots[col].is_some_and(|s| s.info.id == e.info.id) {
            return;
        }
        let better = match self.spares[col] {
            None => true,
            Some(s) if s.info.id == e.info.id => true,
            Some(s) => e.rtt.is_some_and(|r| s.rtt.is_none_or(|sr| r < sr)),
        };
        if better {
            self.spares[col] = Some(e);
        }
    }
}

/// The entries of `rows`, row by row.
fn entries(rows: &[Row]) -> impl Iterator<Item = NodeInfo> + '_ {
    rows.iter()
        .flat_map(|r| r.slots.iter().flatten().map(|e| e.info))
}

/// One node's view of the overlay.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    me: NodeInfo,
    /// `rows[r].slots[c]`: a node sharing `r` digits with us whose digit `r`
    /// is `c`.
    rows: Vec<Row>,
    /// The `leaf_set_size` nodes XOR-closest to us, closest first.
    leaves: Vec<NodeInfo>,
    leaf_set_size: usize,
    /// Most leaves on one host other than ours.
    per_host: usize,
    /// Most leaves in one subnet other than ours.
    per_subnet: usize,
}

impl RoutingTable {
    /// An empty table for node `me`.
    pub fn new(me: NodeInfo, leaf_set_size: usize) -> Self {
        RoutingTable {
            me,
            rows: Vec::new(),
            leaves: Vec::with_capacity(leaf_set_size + 1),
            leaf_set_size: leaf_set_size.max(1),
            per_host: usize::MAX,
            per_subnet: usize::MAX,
        }
    }

    /// Limits the leaf set to `per_host` nodes of any one other host and
    /// `per_subnet` of any one other subnet (see the module's doc).
    pub fn limit_leaves(&mut self, per_host: usize, per_subnet: usize) {
        self.per_host = per_host.max(1);
        self.per_subnet = per_subnet.max(1);
    }

    /// This node.
    pub fn me(&self) -> NodeInfo {
        self.me
    }

    /// The row and column of `id`'s slot, if it has one (not ourselves).
    fn slot_of(&self, id: NodeId) -> Option<(usize, usize)> {
        let row = shared_digits(self.me.id.key(), id.key());
        (row < DIGITS).then(|| (row, digit(id.key(), row)))
    }

    /// The table entry of `id`, if `id` holds its slot.
    fn entry(&self, id: NodeId) -> Option<&Entry> {
        let (row, col) = self.slot_of(id)?;
        self.rows.get(row)?.slots[col]
            .as_ref()
            .filter(|e| e.info.id == id)
    }

    fn entry_mut(&mut self, id: NodeId) -> Option<&mut Entry> {
        let (row, col) = self.slot_of(id)?;
        self.rows.get_mut(row)?.slots[col]
            .as_mut()
            .filter(|e| e.info.id == id)
    }

    fn row_mut(&mut self, row: usize) -> &mut Row {
        while self.rows.len() <= row {
            self.rows.push(Row::new());
        }
        &mut self.rows[row]
    }

    /// Adds a node that another node merely named (a neighbour list, a
    /// routed join): where it fits, as [`RoutingTable::insert`] does, but
    /// never in place of the address of a node we know already, which a
    /// connection proved. A listed node is a candidate: it stays only if
    /// it can be reached at the address it was listed with.
    pub fn insert_listed(&mut self, node: NodeInfo) -> bool {
        if self
            .get(node.id)
            .is_some_and(|known| known.addr != node.addr)
        {
            return false;
        }
        self.insert(node)
    }

    /// Adds a node to the table and leaf set where it fits: a free slot, or
    /// the slot it already holds (an entry with the same id takes the new
    /// address, so only a node a connection proved should be added here;
    /// see [`RoutingTable::insert_listed`]). Returns whether anything
    /// changed.
    pub fn insert(&mut self, node: NodeInfo) -> bool {
        if node.id == self.me.id {
            return false;
        }
        let mut changed = false;
        if let Some((row, col)) = self.slot_of(node.id) {
            let r = self.row_mut(row);
            let entry = Entry {
                info: node,
                rtt: None,
            };
            match &mut r.slots[col] {
                slot @ None => {
                    *slot = Some(entry);
                    changed = true;
                }
                Some(old) if old.info.id == node.id => {
                    if old.info.addr != node.addr {
                        old.info = node;
                        changed = true;
                    }
                }
                Some(_) => {
                    if r.spares[col].is_none() {
                        r.spares[col] = Some(entry);
                    }
                }
            }
        }
        changed |= self.insert_leaf(node);
        changed
    }

    /// Adds a node whose round-trip time was measured: it takes its slot if
    /// the slot is free, holds the node already, or holds a node farther
    /// away (or not measured yet), and it enters the leaf set if it fits
    /// there. Returns whether the node took its table slot (it was not in
    /// the table before).
    pub fn offer(&mut self, node: NodeInfo, rtt: Duration) -> bool {
        if node.id == self.me.id {
            return false;
        }
        let mut took = false;
        if let Some((row, col)) = self.slot_of(node.id) {
            let r = self.row_mut(row);
            let entry = Entry {
                info: node,
                rtt: Some(rtt),
            };
            match &mut r.slots[col] {
                Some(old) if old.info.id == node.id => *old = entry,
                Some(old) if old.rtt.is_some_and(|r| r <= rtt) => r.keep_spare(col, entry),
                slot => {
                    let before = slot.replace(entry);
                    took = true;
                    if r.spares[col].is_some_and(|s| s.info.id == node.id) {
                        r.spares[col] = None;
                    }
                    if let Some(b) = before {
                        r.keep_spare(col, b);
                    }
                }
            }
        }
        self.insert_leaf(node);
        took
    }

    /// Whether `node`, not in the table, should be measured as a candidate
    /// for its slot: the slot is held by another node, and fewer than
    /// `per_slot` candidates were measured for it lately. Counts the probe.
    pub fn should_probe(&mut self, node: &NodeInfo, per_slot: u8) -> bool {
        let Some((row, col)) = self.slot_of(node.id) else {
            return false;
        };
        let Some(r) = self.rows.get_mut(row) else {
            return false;
        };
        match r.slots[col] {
            Some(e) if e.info.id != node.id && r.probed[col] < per_slot => {
                r.probed[col] += 1;
                true
            }
            _ => false,
        }
    }

    /// Halves the probe counts, so slots keep improving slowly after the
    /// burst of a join.
    pub fn decay_probes(&mut self) {
        for r in &mut self.rows {
            for p in &mut r.probed {
                *p /= 2;
            }
        }
    }

    /// Records the round-trip time of a table entry, without moving it.
    pub fn note_rtt(&mut self, id: NodeId, rtt: Duration) {
        if let Some(e) = self.entry_mut(id) {
            e.rtt = Some(rtt);
        }
    }

    /// The measured round-trip time to a table entry.
    pub fn rtt(&self, id: NodeId) -> Option<Duration> {
        self.entry(id)?.rtt
    }

    /// Where `id` is or would be in the leaf set, and whether it is there.
    /// Distinct ids are at distinct distances from us, so the leaf set's
    /// order finds it (this runs for every node of every neighbour list).
    fn leaf_position(&self, id: NodeId) -> (usize, bool) {
        let me = self.me.id.key();
        let d = distance(me, id.key());
        let pos = self
            .leaves
            .partition_point(|l| distance(me, l.id.key()) < d);
        (pos, self.leaves.get(pos).is_some_and(|l| l.id == id))
    }

    fn insert_leaf(&mut self, node: NodeInfo) -> bool {
        let (pos, moved) = match self.leaf_position(node.id) {
            (pos, true) if self.leaves[pos].addr == node.addr => return false,
            (pos, true) => {
                // Moved: it enters again, within its new network's share.
                self.leaves.remove(pos);
                (pos, true)
            }
            (pos, false) => (pos, false),
        };
        if pos >= self.leaf_set_size {
            return moved;
        }
        if let Some(farthest) = self.crowded_out_by(node.addr.ip()) {
            if farthest < pos {
                // Its network's share is taken by nodes closer to us.
                return moved;
            }
            self.leaves.remove(farthest);
        }
        self.leaves.insert(pos, node);
        self.leaves.truncate(self.leaf_set_size);
        true
    }

    /// The place of the farthest leaf that a node at `ip` would have to
    /// replace, if its host or subnet has its full share of the leaf set.
    fn crowded_out_by(&self, ip: IpAddr) -> Option<usize> {
        if self.per_host >= self.leaf_set_size && self.per_subnet >= self.leaf_set_size {
            return None;
        }
        if !crate::subnet::is_foreign(self.me.addr.ip(), ip) {
            return None;
        }
        let net = crate::subnet::Subnet::of(ip);
        let host = crate::subnet::host(ip);
        let (mut on_host, mut in_net) = (0, 0);
        let (mut last_on_host, mut last_in_net) = (None, None);
        for (i, l) in self.leaves.iter().enumerate() {
            let ip = l.addr.ip();
            if crate::subnet::Subnet::of(ip) == net {
                in_net += 1;
                last_in_net = Some(i);
                if crate::subnet::host(ip) == host {
                    on_host += 1;
                    last_on_host = Some(i);
                }
            }
        }
        if on_host >= self.per_host {
            last_on_host
        } else if in_net >= self.per_subnet {
            last_in_net
        } else {
            None
        }
    }

    /// Forgets a node (it left or cannot be reached). Returns whether it was
    /// known.
    pub fn remove(&mut self, id: NodeId) -> bool {
        let mut found = false;
        if let Some((row, col)) = self.slot_of(id) {
            if let Some(r) = self.rows.get_mut(row) {
                if r.slots[col].is_some_and(|e| e.info.id == id) {
                    // The spare, if any, takes the slot.
                    r.slots[col] = r.spares[col].take();
                    found = true;
                } else if r.spares[col].is_some_and(|e| e.info.id == id) {
                    r.spares[col] = None;
                }
            }
        }
        if let (pos, true) = self.leaf_position(id) {
            self.leaves.remove(pos);
            found = true;
        }
        while self
            .rows
            .last()
            .is_some_and(|r| r.slots.iter().all(Option::is_none))
        {
            self.rows.pop();
        }
        found
    }

    /// Whether `id` is in the table or the leaf set.
    pub fn contains(&self, id: NodeId) -> bool {
        self.get(id).is_some()
    }

    /// The entry for `id`, if known.
    pub fn get(&self, id: NodeId) -> Option<NodeInfo> {
        if let (pos, true) = self.leaf_position(id) {
            return Some(self.leaves[pos]);
        }
        self.entry(id).map(|e| e.info)
    }

    /// The other entries of `id`'s table row, the nodes to ask for a
    /// replacement when `id` is gone (Pastry's table repair: a node in the
    /// same row knows nodes with that prefix).
    pub fn row_of(&self, id: NodeId) -> Vec<NodeInfo> {
        let Some((row, _)) = self.slot_of(id) else {
            return Vec::new();
        };
        self.rows.get(row).map_or_else(Vec::new, |r| {
            r.slots
                .iter()
                .flatten()
                .filter(|e| e.info.id != id)
                .map(|e| e.info)
                .collect()
        })
    }

    /// The next hop toward `key`: the known node closest to it, if that node
    /// is closer than this one. `None` means this node is the closest it
    /// knows of, that is, responsible for `key`. The nodes in `skip` are
    /// left out (a node routing its own join must not be chosen as its own
    /// next hop; a join must go around a node known to be dead).
    pub fn next_hop(&self, key: Key, skip: &[NodeId]) -> Option<NodeInfo> {
        let mut best = None;
        let mut best_d = distance(self.me.id.key(), key);
        // Runs for every routed message: scan the entries as they lie, with
        // no de-duplication (a node in both places is just compared twice).
        // A slot whose entry is to be gone around offers its spare instead.
        let table = self.rows.iter().flat_map(|r| {
            r.slots
                .iter()
                .zip(&r.spares)
                .filter_map(|(e, spare)| match e {
                    Some(e) if skip.contains(&e.info.id) => spare.as_ref().map(|s| &s.info),
                    e => e.as_ref().map(|e| &e.info),
                })
        });
        for &n in self.leaves.iter().chain(table) {
            if skip.contains(&n.id) {
                continue;
            }
            let d = distance(n.id.key(), key);
            if d < best_d {
                best_d = d;
                best = Some(n);
            }
        }
        best
    }

    /// Whether this node is the closest it knows of to `key`.
    pub fn is_responsible(&self, key: Key) -> bool {
        self.next_hop(key, &[]).is_none()
    }

    /// Up to `k` table entries with a measured round trip, nearest first.
    pub fn nearest(&self, k: usize) -> Vec<NodeInfo> {
        let mut all: Vec<(Duration, NodeInfo)> = self
            .rows
            .iter()
            .flat_map(|r| r.slots.iter().flatten())
            .filter_map(|e| Some((e.rtt?, e.info)))
            .collect();
        all.sort_unstable_by_key(|&(rtt, n)| (rtt, n.id));
        all.into_iter().take(k).map(|(_, n)| n).collect()
    }

    /// Every known node once: leaf set first, then the table by rows.
    pub fn iter(&self) -> impl Iterator<Item = NodeInfo> + '_ {
        self.leaves
            .iter()
            .copied()
            .chain(entries(&self.rows).filter(|n| !self.leaf_position(n.id).1))
    }

    /// What this node tells `asker` when asked for its neighbours: the
    /// nodes that can improve `asker`'s state, not every node it knows
    /// (Castro et al.'s join: "ask each node of row r for its row r").
    ///
    /// With `p` the digits this node shares with `asker`, rows `0..=p` of
    /// this table fit the same rows of `asker`'s (as fillers or as nearer
    /// candidates); every deeper entry shares exactly `p` digits with
    /// `asker` and would compete for the one slot this node holds there, so
    /// [`SPARE_CANDIDATES`] of them are enough. The leaf set is sent only
    /// to a node that belongs near us (it falls within our leaf set's span,
    /// or shares our deepest row), where it is what `asker` needs most.
    pub fn useful_to(&self, asker: NodeId, max: usize) -> Vec<NodeInfo> {
        let p = shared_digits(self.me.id.key(), asker.key());
        let (leaf_pos, _) = self.leaf_position(asker);
        let near = leaf_pos < self.leaf_set_size || p + 1 >= self.rows.len();
        let mut out: Vec<NodeInfo> = Vec::with_capacity(max.min(64));
        if near {
            out.extend(self.leaves.iter().filter(|l| l.id != asker));
        }
        let (shared, deeper) = self.rows.split_at((p + 1).min(self.rows.len()));
        let table = entries(shared).chain(entries(deeper).take(SPARE_CANDIDATES));
        // A node holds one slot at most; the leaves were sent already.
        out.extend(table.filter(|n| n.id != asker && !(near && self.leaf_position(n.id).1)));
        out.truncate(max);
        out
    }

    /// The leaf set, closest first.
    pub fn leaves(&self) -> &[NodeInfo] {
        &self.leaves
    }

    /// Number of distinct known nodes.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Number of table rows in use.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::net::SocketAddr;

    fn info(id: u128) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            addr: SocketAddr::from(([127, 0, 0, 1], (id % 60000) as u16 + 1)),
        }
    }

    #[test]
    fn leaf_set_keeps_the_closest() {
        let mut t = RoutingTable::new(info(0), 2);
        for id in [8u128, 1, 4, 2] {
            t.insert(info(id));
        }
        let leaves: Vec<u128> = t.leaves().iter().map(|l| l.id.0).collect();
        assert_eq!(leaves, vec![1, 2]);
        assert!(t.remove(NodeId(1)));
        assert!(!t.contains(NodeId(1)));
        assert!(!t.insert(info(0)), "a node never lists itself");
    }

    #[test]
    fn a_listed_address_never_replaces_a_known_one() {
        let mut t = RoutingTable::new(info(0), 4);
        let x = info(1 << 120);
        t.insert(x);
        let bogus = NodeInfo {
            id: x.id,
            addr: SocketAddr::from(([127, 0, 0, 9], 9)),
        };
        assert!(!t.insert_listed(bogus), "a list cannot move a node we know");
        assert_eq!(t.get(x.id).map(|n| n.addr), Some(x.addr));
        assert!(t.leaves().iter().all(|l| l.addr == x.addr));
        // A node unknown before is a candidate where it fits.
        assert!(t.insert_listed(info(2 << 120)));
        // A connection does move it (the handshake proved the id there).
        assert!(t.insert(bogus));
        assert_eq!(t.get(x.id).map(|n| n.addr), Some(bogus.addr));
    }

    fn at(id: u128, ip: [u8; 4]) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            addr: SocketAddr::from((ip, 7000)),
        }
    }

    /// A host that makes ids nearer ours than every honest node takes no
    /// more than its share of the leaf set, however many it makes.
    #[test]
    fn one_network_takes_its_share_of_the_leaf_set_only() {
        let me = at(0, [198, 51, 100, 1]);
        let mut t = RoutingTable::new(me, 8);
        t.limit_leaves(2, 3);
        let honest: Vec<NodeInfo> = (0..8u8)
            .map(|i| at((1 << 20) + u128::from(i), [192, 0, 2 + i, 1]))
            .collect();
        for &h in &honest {
            t.insert(h);
        }
        // A thousand ids nearer than any honest one: one host, then its
        // subnet.
        for i in 0..1000u128 {
            t.insert(at(1 + i, [203, 0, 113, 9]));
            t.insert_listed(at(1001 + i % 300, [203, 0, 113, (i % 200) as u8 + 10]));
        }
        let from_them = |t: &RoutingTable| {
            t.leaves()
                .iter()
                .filter(|l| l.addr.ip().to_string().starts_with("203.0.113."))
                .count()
        };
        assert_eq!(from_them(&t), 3, "the subnet's share");
        let on_host = t
            .leaves()
            .iter()
            .filter(|l| l.addr.ip() == IpAddr::from([203, 0, 113, 9]))
            .count();
        assert_eq!(on_host, 2, "the host's share");
        assert_eq!(t.leaves().len(), 8);
        // The share goes to the closest of that network.
        assert_eq!(t.leaves()[0].id, NodeId(1));
        assert_eq!(t.leaves()[1].id, NodeId(2));
        // A node of ours moving into a crowded network competes there.
        let moved = NodeInfo {
            addr: SocketAddr::from(([203, 0, 113, 77], 7000)),
            ..honest[0]
        };
        t.insert(moved);
        assert_eq!(from_them(&t), 3);
        // Our own subnet and loopback are not limited.
        let mut own = RoutingTable::new(me, 8);
        own.limit_leaves(1, 1);
        for i in 1..=4u128 {
            own.insert(at(i, [198, 51, 100, 1 + i as u8]));
            own.insert(at(100 + i, [127, 0, 0, 1]));
        }
        assert_eq!(own.leaves().len(), 8);
    }

    #[test]
    fn proximity_keeps_the_nearest_measured_candidate() {
        let me = info(0);
        let mut t = RoutingTable::new(me, 2);
        // Three nodes for the same slot (row 0, digit 1).
        let (a, b, c) = (info(1 << 124), info((1 << 124) + 5), info((1 << 124) + 9));
        assert!(t.insert(a), "a free slot takes the first node");
        assert!(t.should_probe(&b, 2));
        assert!(t.should_probe(&c, 2));
        assert!(!t.should_probe(&c, 2), "at most 2 probes per slot");
        t.note_rtt(a.id, Duration::from_millis(30));
        assert!(!t.offer(b, Duration::from_millis(40)), "farther: a stays");
        assert_eq!(t.rtt(a.id), Some(Duration::from_millis(30)));
        assert_eq!(t.rtt(b.id), None, "b is not in the slot");
        assert!(
            t.offer(c, Duration::from_millis(10)),
            "nearer: c takes the slot"
        );
        assert_eq!(t.rtt(a.id), None, "a left the slot");
        assert_eq!(t.rtt(c.id), Some(Duration::from_millis(10)));
        t.decay_probes();
        t.decay_probes();
        assert!(t.should_probe(&a, 2), "counts decay");
        // The leaf set is by id: near or far, the closest ids stay.
        let mut l = RoutingTable::new(me, 1);
        l.offer(info(3), Duration::from_millis(100));
        l.offer(info(8), Duration::from_millis(1));
        assert_eq!(l.leaves()[0].id, NodeId(3));
    }

    #[test]
    fn a_spare_takes_the_slot_of_a_removed_entry() {
        let me = info(0);
        let mut t = RoutingTable::new(me, 1);
        // Three nodes for the same slot (row 0, digit 1), none a leaf.
        let (a, b, c) = (info(1 << 124), info((1 << 124) + 5), info((1 << 124) + 9));
        t.insert(info(1)); // the only leaf
        assert!(t.insert(a));
        assert!(!t.insert(b), "the slot is taken: b is only its spare");
        assert!(!t.contains(b.id), "a spare is not used for routing");
        assert!(t.remove(a.id));
        assert!(t.contains(b.id), "the spare took the slot");
        // Measured: the nearer candidate is the spare.
        t.offer(a, Duration::from_millis(50));
        t.offer(c, Duration::from_millis(20));
        assert!(t.contains(c.id) && !t.contains(a.id) && !t.contains(b.id));
        assert!(t.remove(c.id));
        assert!(t.contains(a.id), "the farther measured node is the spare");
        assert!(t.remove(a.id));
        assert!(!t.contains(b.id), "one spare per slot");
    }

    /// Greedy routing over full tables of 2,000 random nodes reaches the
    /// globally closest node for every key, in about log16(N) hops.
    #[test]
    fn routing_reaches_the_responsible_node() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let n = 2000;
        let ids: Vec<u128> = (0..n).map(|_| rng.random()).collect();
        let tables: Vec<RoutingTable> = ids
            .iter()
            .map(|&me| {
                let mut t = RoutingTable::new(info(me), 16);
                for &other in &ids {
                    t.insert(info(other));
                }
                t
            })
            .collect();
        let index: std::collections::HashMap<u128, usize> =
            ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut total_hops = 0;
        for _ in 0..500 {
            let key: u128 = rng.random();
            let closest = *ids.iter().min_by_key(|&&id| id ^ key).unwrap();
            let mut at = rng.random_range(0..n);
            let mut hops = 0;
            while let Some(next) = tables[at].next_hop(key, &[]) {
                at = index[&next.id.0];
                hops += 1;
                assert!(hops <= 8, "route too long");
            }
            assert_eq!(ids[at], closest);
            total_hops += hops;
        }
        let mean = total_hops as f64 / 500.0;
        assert!(mean <= (n as f64).log(16.0) + 0.5, "mean hops {mean}");
    }
}
