//! Per-peer budgets for the requests that cost the receiver more than they
//! cost the sender: joins (forwarder state, a join of our own), placement
//! asks, fetches (a buffer's worth of messages), tree queries and
//! collections (work across the tree), overlay joins and neighbour
//! exchanges (lists sent back, nodes dialed).
//!
//! Each peer has a token bucket per node: it holds up to
//! [`Config::peer_request_burst`](crate::Config::peer_request_burst)
//! requests and refills at
//! [`Config::peer_request_rate`](crate::Config::peer_request_rate) a
//! second. A request that finds its sender's bucket empty is dropped and
//! counted (`<kind> (rate-limited)`) before any part of the node sees it.
//! The defaults sit far above what an honest node sends (the simulator's
//! runs drop none), so only a peer that floods is held back, and only
//! itself: the others' buckets are their own.
//!
//! A placement ask climbs the tree to the root and comes down again (see
//! [`crate::placement`]), so a node near the root passes on the asks of a
//! whole subtree: those it passes on for other nodes are counted in a
//! second bucket per peer, [`RELAY_FACTOR`] times the first, and the node
//! passing them on keeps to half of that itself (its own `pacing`), so
//! that no honest subtree's asks are taken for a flood.
//!
//! Group data, heartbeats, answers and publishes are not counted here:
//! data and heartbeats flow only on tree links a node chose, answers only
//! for what it asked (see [`crate::admission`]), and a root bounds the
//! publishes it holds by `max_pending_publishes`.

use std::collections::HashMap;
use std::time::Instant;

use crate::id::NodeId;
use crate::message::Message;

/// Most peers whose buckets are kept; past it, the one heard from least
/// recently is forgotten (its bucket starts full again if it comes back,
/// which a flood from many ids cannot turn into more than one burst each).
const MAX_TRACKED_PEERS: usize = 4096;

/// How many times a peer's budget for its own requests its budget for the
/// requests it passes on for others is.
pub(crate) const RELAY_FACTOR: u32 = 4;

/// Which of a peer's buckets a request is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bucket {
    /// The peer's own requests.
    Own,
    /// Placement asks the peer passes on for other nodes.
    Relayed,
}

/// The kind a rate-limited request of `msg`'s kind from `from` is counted
/// under when dropped, and the bucket it is counted in, or `None` if its
/// kind is not limited.
pub(crate) fn limited(msg: &Message, from: NodeId) -> Option<(&'static str, Bucket)> {
    match msg {
        Message::Place(p) if p.node.id != from => {
            Some(("place relayed (rate-limited)", Bucket::Relayed))
        }
        other => Some((own_limited(other)?, Bucket::Own)),
    }
}

fn own_limited(msg: &Message) -> Option<&'static str> {
    Some(match msg {
        Message::Join(_) => "join (rate-limited)",
        Message::JoinOverlay(_) => "join-overlay (rate-limited)",
        Message::Neighbours(n) if n.reply => "neighbours (rate-limited)",
        Message::Place(_) => "place (rate-limited)",
        Message::Fetch(_) => "fetch (rate-limited)",
        Message::TreeQuery(_) => "tree-query (rate-limited)",
        Message::Collect(_) => "collect (rate-limited)",
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy)]
struct Tokens {
    /// Tokens, in thousandths of a request (so that slow rates refill
    /// smoothly without floating point).
    milli: u64,
    last: Instant,
}

/// Every tracked peer's bucket. A peer keeps its bucket across
/// reconnections: a new connection does not refill it.
#[derive(Debug, Default)]
pub(crate) struct PeerBudgets {
    buckets: HashMap<NodeId, Tokens>,
}

impl PeerBudgets {
    /// Takes one request's token from `peer`'s bucket at `now`: whether
    /// there was one. `rate` per second, up to `burst`.
    pub(crate) fn take(&mut self, peer: NodeId, now: Instant, rate: u32, burst: u32) -> bool {
        let full = u64::from(burst.max(1)) * 1000;
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= MAX_TRACKED_PEERS {
            if let Some(stalest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(id, _)| *id)
            {
                self.buckets.remove(&stalest);
            }
        }
        let b = self.buckets.entry(peer).or_insert(Tokens {
            milli: full,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last);
        // Whole milliseconds times the rate: thousandths of a request.
        let refill =
            (elapsed.as_millis().min(u64::MAX as u128) as u64).saturating_mul(u64::from(rate));
        b.milli = b.milli.saturating_add(refill).min(full);
        if refill > 0 {
            b.last = now;
        }
        if b.milli >= 1000 {
            b.milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_peer_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let mut b = PeerBudgets::default();
        let t0 = Instant::now();
        let (a, c) = (NodeId(1), NodeId(2));
        assert_eq!((0..20).filter(|_| b.take(a, t0, 10, 5)).count(), 5);
        assert!(b.take(c, t0, 10, 5), "another peer's bucket is its own");
        // A tenth of a second refills one request at 10 a second.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(a, t1, 10, 5));
        assert!(!b.take(a, t1, 10, 5));
        // A long silence refills the burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| b.take(a, t2, 10, 5)).count(), 5);
    }
}
