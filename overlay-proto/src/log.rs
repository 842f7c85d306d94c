//! A bounded run of consecutive group messages.
//!
//! Three parts of the protocol keep recent messages, all in a [`Log`]: the
//! root's retention (what `subscribe --from` replays and what gap repair is
//! served from), a replica's copy of it, and every tree node's repair buffer
//! (what a re-attaching child is served from). A log holds messages with
//! consecutive sequence numbers, oldest first, and forgets the oldest when it
//! exceeds its count or byte bound. The messages are the frames that travel
//! down the tree, shared and never copied.

use std::collections::VecDeque;

use crate::message::Data;

/// Consecutive messages `first()..next()`, bounded in count and bytes.
#[derive(Debug, Clone)]
pub(crate) struct Log {
    entries: VecDeque<Data>,
    /// Sequence number of `entries[0]`, or of the next message when empty.
    first: u64,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl Log {
    /// An empty log whose next message is `next`.
    pub(crate) fn new(next: u64, max_count: usize, max_bytes: usize) -> Self {
        Log {
            entries: VecDeque::new(),
            first: next,
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes,
        }
    }

    /// Sequence number of the oldest message held (or `next()` if empty).
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// Sequence number the next appended message must have.
    pub(crate) fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends `d`, which must be `next()`. Returns false (and keeps
    /// nothing) if `d` is not the next message. The caller trims.
    pub(crate) fn push(&mut self, d: Data) -> bool {
        if d.seq != self.next() {
            return false;
        }
        self.bytes += d.size();
        self.entries.push_back(d);
        true
    }

    /// Forgets the oldest messages while over a bound, keeping at least the
    /// newest `keep` (which the caller still needs, bound or not).
    pub(crate) fn trim(&mut self, keep: usize) {
        while self.evict(keep).is_some() {}
    }

    /// Forgets and returns the oldest message if the log is over a bound
    /// and holds more than `keep`.
    pub(crate) fn evict(&mut self, keep: usize) -> Option<Data> {
        if self.entries.len() <= keep
            || (self.entries.len() <= self.max_count && self.bytes <= self.max_bytes)
        {
            return None;
        }
        let old = self.entries.pop_front()?;
        self.bytes -= old.size();
        self.first += 1;
        Some(old)
    }

    /// Drops everything and starts again at `next`.
    pub(crate) fn reset(&mut self, next: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.first = next;
    }

    /// The message with sequence number `seq`, if held.
    pub(crate) fn get(&self, seq: u64) -> Option<&Data> {
        let i = seq.checked_sub(self.first)?;
        self.entries.get(usize::try_from(i).ok()?)
    }

    /// The held messages in `from..to`, oldest first.
    pub(crate) fn range(&self, from: u64, to: u64) -> impl Iterator<Item = &Data> + '_ {
        let start = from.max(self.first);
        let end = to.min(self.next()).max(start);
        let skip = (start - self.first) as usize;
        self.entries.iter().skip(skip).take((end - start) as usize)
    }

    /// Every held message, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Data> + '_ {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Mid, NodeId};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn msg(seq: u64, len: usize) -> Data {
        Data::new(Mid(1), 1, seq, NodeId(1), seq, Bytes::from(vec![0u8; len]))
    }

    #[test]
    fn holds_consecutive_messages_and_forgets_the_oldest() {
        let mut log = Log::new(5, 3, usize::MAX);
        assert!(!log.push(msg(6, 1)), "a gap is refused");
        for s in 5..10 {
            assert!(log.push(msg(s, 1)));
            log.trim(0);
        }
        assert_eq!((log.first(), log.next(), log.len()), (7, 10, 3));
        assert!(log.get(6).is_none());
        assert_eq!(log.get(8).map(|d| d.seq), Some(8));
        let r: Vec<u64> = log.range(0, 9).map(|d| d.seq).collect();
        assert_eq!(r, vec![7, 8]);
    }

    proptest! {
        #[test]
        fn bounds_always_hold(sizes in prop::collection::vec(0usize..500, 1..200),
                              max_count in 1usize..50, max_bytes in 600usize..5000) {
            let mut log = Log::new(1, max_count, max_bytes);
            for (i, len) in sizes.iter().enumerate() {
                prop_assert!(log.push(msg(i as u64 + 1, *len)));
                log.trim(0);
                prop_assert!(log.len() <= max_count);
                prop_assert!(log.bytes() <= max_bytes || log.len() == 0);
                prop_assert_eq!(log.next(), i as u64 + 2);
                let total: usize = log.iter().map(Data::size).sum();
                prop_assert_eq!(total, log.bytes());
            }
        }
    }
}
