//! Protocol settings. Every limit that bounds what a peer can make a node
//! hold is here, with a name.

use std::time::Duration;

/// Settings of one node's protocol state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Most children a node keeps per group. A join beyond it is handed down
    /// to a child, so the tree deepens instead of refusing. 16 matches the
    /// routing base: a node's fan-out stays in line with its table rows.
    pub max_children: usize,
    /// Nodes in the leaf set. 16 (Pastry's usual `L`) keeps routing exact
    /// near every key while costing little memory.
    pub leaf_set_size: usize,
    /// Most leaf-set places that nodes of one other host may hold: what
    /// bounds a flood of made-up ids near this node (see
    /// [`crate::routing`]). Our own host, subnet and loopback are not
    /// limited.
    pub leaf_set_per_host: usize,
    /// Most leaf-set places that nodes of one other subnet may hold (see
    /// `leaf_set_per_host`).
    pub leaf_set_per_subnet: usize,
    /// Most groups a node's own user takes part in: joined, or created
    /// (each holds a root's retention).
    pub max_groups: usize,
    /// Most groups a node forwards for others without being a member or
    /// the root: joins from the network create such state, so this bounds
    /// what peers can make a node hold, apart from `max_groups`, so that no
    /// flood of joins keeps the node's user from joining or creating.
    pub max_forwarded_groups: usize,
    /// Largest application payload accepted, in bytes (1 MiB).
    pub max_message_size: usize,
    /// How long a join waits for its acknowledgement before it is sent again.
    /// Short, because a re-join after a parent's crash is on the repair
    /// path; the interval doubles on every retry.
    pub join_retry: Duration,
    /// Longest wait between two join attempts (the retry interval doubles).
    pub join_retry_max: Duration,
    /// How long a publish waits for the root's acknowledgement.
    pub publish_timeout: Duration,
    /// Most publishes of this node waiting for their acknowledgement; at
    /// the root, also the most messages waiting for their replication.
    pub max_pending_publishes: usize,
    /// Most payload bytes of this node's publishes waiting for their
    /// acknowledgement (they are kept to be sent again).
    pub max_pending_publish_bytes: usize,
    /// Time the root gives its tree to report itself for `overlay tree`.
    pub tree_query_budget: Duration,
    /// Most tree collections a node takes part in at once.
    pub max_collections: usize,
    /// Requests a second each peer may send that cost this node work or
    /// sends (joins, placement asks, fetches, tree queries, overlay joins,
    /// neighbour exchanges; see [`crate::ratelimit`]), after its burst.
    pub peer_request_rate: u32,
    /// Such requests a peer may send at once, before `peer_request_rate`
    /// holds it.
    pub peer_request_burst: u32,
    /// Most entries a tree report may carry (bounded by the frame size).
    pub max_tree_entries: usize,
    /// Rounds of dialing the bootstrap addresses before giving up.
    pub bootstrap_attempts: u32,
    /// Wait after the first bootstrap round; it doubles each round.
    pub bootstrap_backoff: Duration,
    /// Most overlay joins a node still entering the overlay holds until it
    /// is in (it answers them then; a node that is not in yet must not
    /// answer, or the two would make an overlay of their own).
    pub max_deferred_joins: usize,
    /// How often a node asks a random neighbour for its routing state, which
    /// fills gaps in the table and repairs it after departures.
    pub maintenance_interval: Duration,
    /// How often a node sends a heartbeat to each tree neighbour (parent,
    /// children, root or replicas).
    pub heartbeat_interval: Duration,
    /// Silence after which a tree neighbour is taken for dead. With the
    /// heartbeat interval this bounds detection: a dead parent or child is
    /// noticed within `failure_timeout + heartbeat_interval` (1.25 s).
    pub failure_timeout: Duration,
    /// How long a publish waits for the root's acknowledgement before it is
    /// sent again (to whichever node is root by then). The root
    /// de-duplicates, so a retry is never delivered twice.
    pub publish_retry: Duration,
    /// Nodes besides the root that hold a copy of a group's state (epoch,
    /// sequence, retained messages). The root acknowledges a publish only
    /// once every replica holds it, so the group survives the loss of the
    /// root together with `replicas - 1` of them.
    pub replicas: usize,
    /// Messages the root retains per group, for replay (`subscribe --from`)
    /// and for members that were cut off.
    pub retain_messages: usize,
    /// Bytes the root retains per group (frames counted whole).
    pub retain_bytes: usize,
    /// Recent messages every tree node keeps per group, to serve children
    /// that re-attach after losing their parent.
    pub buffer_messages: usize,
    /// Bytes of that buffer.
    pub buffer_bytes: usize,
    /// Most retained messages one fetch is answered with; a longer gap is
    /// fetched in several rounds.
    pub max_fetch: usize,
    /// How long a gap fetch waits for its answer before it is asked again.
    pub repair_retry: Duration,
    /// A member whose stream made no progress for this long asks the root
    /// (not its parent) whether there is more: a parent that withholds
    /// messages while it heartbeats is found out so. The wait doubles
    /// while nothing new comes, up to `stall_probe_max`.
    pub stall_probe_min: Duration,
    /// The longest wait between two such questions.
    pub stall_probe_max: Duration,
    /// Proximity neighbour selection: fill each routing-table slot with the
    /// nearest candidate measured, rather than the first one heard of.
    pub proximity: bool,
    /// Candidates measured per routing-table slot; the counts halve at each
    /// maintenance round, so tables keep improving slowly after a join.
    pub probes_per_slot: u8,
    /// Most round-trip measurements a node waits for at once.
    pub max_probes: usize,
    /// How long a node found dead is kept out of the routing table when
    /// other nodes' (older) neighbour lists still name it. Hearing from it
    /// directly lets it back in at once.
    pub dead_memory: Duration,
    /// Routing-table neighbours lost (found dead, or their connection
    /// closed) that a node keeps trying, one per maintenance round: a
    /// partition (a link down between two parts of the network) leaves
    /// each part without the other's nodes, and nothing else would bring
    /// them back.
    pub lost_peers: usize,
    /// How long a lost neighbour is kept trying.
    pub lost_memory: Duration,
    /// Tree placement: every tree node looks for a parent that gives it a
    /// shorter delay from the root (see [`crate::placement`]).
    pub tree_optimize: bool,
    /// Nearest routing-table neighbours a tree node also asks directly for
    /// a place at each look, once the root has set its budget: the
    /// descent from the root finds the nearest node along one branch, while
    /// a nearby node elsewhere in the tree, when it has room, gives a
    /// shorter link.
    pub placement_asks: usize,
    /// Longest wait between two such looks; the first comes a second after
    /// a node attaches (or moves), and the wait doubles each time up to this.
    pub optimize_interval: Duration,
    /// The delay from the root a placement allows a node, in percent above
    /// the direct path's (as the network coordinates predict it). Within
    /// it, a node takes the nearest parent it can find, which keeps tree
    /// links short and so the copies they put on the network few; more
    /// slack shortens links, less shortens paths from the root.
    pub placement_slack_pct: u16,
    /// Least gain, in percent, for which a node moves to another parent:
    /// of its delay from the root while that is over budget, else of the
    /// delay of its link to its parent (and at least 2 ms either way).
    pub move_gain_pct: u16,
    /// How much longer, in percent, a node's delay from the root may grow
    /// (beyond its budget, or its own delay if that is more) when it moves
    /// to a link at most half as long as its own: a step down the tree
    /// that frees a place near the root and takes copies off the network.
    /// 0 turns such steps off.
    pub step_down_pct: u16,
    /// How often a member announces itself on its LAN, where the driver
    /// has a multicast socket (see [`crate::lan`]).
    pub lan_announce_interval: Duration,
    /// Silence after which a member of a LAN island is taken for gone
    /// (and, if it led, another is elected).
    pub lan_peer_timeout: Duration,
    /// Largest datagram sent on the LAN, in bytes of UDP payload; larger
    /// messages travel over the overlay only.
    pub lan_max_datagram: usize,
    /// Most other members of one group's island a node keeps track of
    /// (and senders whose replay windows it keeps).
    pub lan_max_peers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_children: 16,
            leaf_set_size: 16,
            leaf_set_per_host: 2,
            leaf_set_per_subnet: 4,
            max_groups: 4096,
            max_forwarded_groups: 4096,
            max_message_size: 1 << 20,
            join_retry: Duration::from_millis(750),
            join_retry_max: Duration::from_secs(8),
            publish_timeout: Duration::from_secs(10),
            max_pending_publishes: 4096,
            max_pending_publish_bytes: 16 << 20,
            tree_query_budget: Duration::from_secs(3),
            max_collections: 64,
            peer_request_rate: 1000,
            peer_request_burst: 4000,
            max_tree_entries: 20_000,
            bootstrap_attempts: 6,
            bootstrap_backoff: Duration::from_millis(500),
            max_deferred_joins: 64,
            maintenance_interval: Duration::from_secs(20),
            heartbeat_interval: Duration::from_millis(250),
            failure_timeout: Duration::from_millis(1000),
            publish_retry: Duration::from_millis(1000),
            replicas: 2,
            retain_messages: 10_000,
            retain_bytes: 8 << 20,
            buffer_messages: 2048,
            buffer_bytes: 2 << 20,
            max_fetch: 512,
            repair_retry: Duration::from_millis(750),
            stall_probe_min: Duration::from_secs(2),
            stall_probe_max: Duration::from_secs(60),
            dead_memory: Duration::from_secs(30),
            lost_peers: 16,
            lost_memory: Duration::from_secs(600),
            proximity: true,
            probes_per_slot: 4,
            max_probes: 64,
            tree_optimize: true,
            placement_asks: 6,
            optimize_interval: Duration::from_secs(60),
            placement_slack_pct: 20,
            move_gain_pct: 10,
            step_down_pct: 10,
            lan_announce_interval: Duration::from_millis(500),
            lan_peer_timeout: Duration::from_millis(1600),
            lan_max_datagram: crate::lan::MAX_DATAGRAM,
            lan_max_peers: 64,
        }
    }
}

impl Config {
    /// Largest frame a node sends or accepts: the largest payload plus room
    /// for the header. Also bounds tree reports and neighbour lists.
    pub fn max_frame_size(&self) -> usize {
        self.max_message_size + 64 * 1024
    }
}
