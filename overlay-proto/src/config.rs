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
    /// Most groups a node takes part in, as member or forwarder. Joins from
    /// the network create forwarder state, so this bounds what peers can make
    /// a node hold.
    pub max_groups: usize,
    /// Largest application payload accepted, in bytes (1 MiB).
    pub max_message_size: usize,
    /// How long a join waits for its acknowledgement before it is sent again.
    /// Two seconds covers several overlay hops on a loaded machine.
    pub join_retry: Duration,
    /// Longest wait between two join attempts (the retry interval doubles).
    pub join_retry_max: Duration,
    /// How long a publish waits for the root's acknowledgement.
    pub publish_timeout: Duration,
    /// Most publishes of this node waiting for their acknowledgement.
    pub max_pending_publishes: usize,
    /// Time the root gives its tree to report itself for `overlay tree`.
    pub tree_query_budget: Duration,
    /// Most tree collections a node takes part in at once.
    pub max_collections: usize,
    /// Most entries a tree report may carry (bounded by the frame size).
    pub max_tree_entries: usize,
    /// Rounds of dialing the bootstrap addresses before giving up.
    pub bootstrap_attempts: u32,
    /// Wait after the first bootstrap round; it doubles each round.
    pub bootstrap_backoff: Duration,
    /// How often a node asks a random neighbour for its routing state, which
    /// fills gaps in the table and repairs it after departures.
    pub maintenance_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_children: 16,
            leaf_set_size: 16,
            max_groups: 4096,
            max_message_size: 1 << 20,
            join_retry: Duration::from_secs(2),
            join_retry_max: Duration::from_secs(16),
            publish_timeout: Duration::from_secs(10),
            max_pending_publishes: 4096,
            tree_query_budget: Duration::from_secs(3),
            max_collections: 64,
            max_tree_entries: 20_000,
            bootstrap_attempts: 6,
            bootstrap_backoff: Duration::from_millis(500),
            maintenance_interval: Duration::from_secs(20),
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
