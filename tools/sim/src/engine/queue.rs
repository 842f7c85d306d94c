//! The simulator's event queue: a calendar queue.
//!
//! A simulation of thousands of nodes keeps a hundred thousand events or
//! more in flight (messages on their way, timers), and a plain binary heap
//! of that size spends most of a pop on cache misses. Almost every event is
//! due within a few seconds, so the queue sorts them into 1 ms buckets on a
//! ring that covers the next few seconds; only the bucket being run is kept
//! as a (small) heap. Events further ahead wait in an overflow heap until
//! the ring reaches them.
//!
//! The order is exactly that of one heap: by time, then by the order the
//! events were pushed in, so runs stay reproducible and links stay first in,
//! first out.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Width of a bucket, in nanoseconds of virtual time.
const WIDTH: u64 = 1_000_000;
/// Buckets on the ring: 4.096 s ahead.
const RING: u64 = 4096;

/// An event: when it is due, its place in push order, and what it is.
#[derive(Debug)]
struct Item<T> {
    at: u64,
    seq: u64,
    value: T,
}

impl<T> PartialEq for Item<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Item<T> {}

impl<T> PartialOrd for Item<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Item<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Events of type `T` due at times in nanoseconds, popped soonest first.
#[derive(Debug)]
pub(super) struct Queue<T> {
    /// The bucket being run: everything due in bucket `base` or earlier.
    current: BinaryHeap<Reverse<Item<T>>>,
    /// Buckets `base + 1 .. base + RING`, at index `bucket % RING`, unsorted.
    ring: Vec<Vec<Reverse<Item<T>>>>,
    /// Events on the ring.
    on_ring: usize,
    /// Events due in bucket `base + RING` or later.
    far: BinaryHeap<Reverse<Item<T>>>,
    base: u64,
    seq: u64,
    len: usize,
}

impl<T> Queue<T> {
    pub(super) fn new() -> Self {
        Queue {
            current: BinaryHeap::new(),
            ring: (0..RING).map(|_| Vec::new()).collect(),
            on_ring: 0,
            far: BinaryHeap::new(),
            base: 0,
            seq: 0,
            len: 0,
        }
    }

    /// Events waiting.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds an event due at `at`.
    pub(super) fn push(&mut self, at: u64, value: T) {
        let item = Item {
            at,
            seq: self.seq,
            value,
        };
        self.seq += 1;
        self.len += 1;
        self.place(item);
    }

    fn place(&mut self, item: Item<T>) {
        let bucket = item.at / WIDTH;
        if bucket <= self.base {
            self.current.push(Reverse(item));
        } else if bucket < self.base + RING {
            self.ring[(bucket % RING) as usize].push(Reverse(item));
            self.on_ring += 1;
        } else {
            self.far.push(Reverse(item));
        }
    }

    /// Takes the soonest event if it is due at `limit` or earlier.
    pub(super) fn pop_until(&mut self, limit: u64) -> Option<(u64, T)> {
        loop {
            if let Some(Reverse(top)) = self.current.peek() {
                if top.at > limit {
                    return None;
                }
                let Reverse(item) = self.current.pop()?;
                self.len -= 1;
                return Some((item.at, item.value));
            }
            // Everything left is due after bucket `base`.
            if self.len == 0 || (self.base + 1) * WIDTH > limit {
                return None;
            }
            self.advance();
        }
    }

    /// Moves on to the next bucket that may hold events.
    fn advance(&mut self) {
        let mut next = self.base + 1;
        if self.on_ring == 0 {
            if let Some(Reverse(first)) = self.far.peek() {
                next = next.max(first.at / WIDTH);
            }
        }
        self.base = next;
        // The bucket's events become the current heap; the emptied heap's
        // buffer goes back to the ring for reuse.
        let slot = (next % RING) as usize;
        let items = std::mem::take(&mut self.ring[slot]);
        self.on_ring -= items.len();
        let old = std::mem::replace(&mut self.current, BinaryHeap::from(items));
        debug_assert!(old.is_empty());
        self.ring[slot] = old.into_vec();
        // The ring now reaches one bucket further.
        while self
            .far
            .peek()
            .is_some_and(|Reverse(i)| i.at / WIDTH < next + RING)
        {
            let Some(Reverse(item)) = self.far.pop() else {
                break;
            };
            self.place(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Pops in the order of one sorted heap, whatever the times, with
        /// pushes between pops (never earlier than the last pop, as in a
        /// simulation).
        #[test]
        fn pops_by_time_then_push_order(
            steps in proptest::collection::vec((0u64..12_000_000_000, 0usize..4, 0u64..3_000_000_000), 1..300)
        ) {
            let mut q = Queue::new();
            let mut model: Vec<(u64, u64)> = Vec::new();
            let mut now = 0u64;
            for (n, (delay, pops, horizon)) in (0u64..).zip(steps) {
                q.push(now + delay, n);
                model.push((now + delay, n));
                for _ in 0..pops {
                    let limit = now + horizon;
                    model.sort();
                    let want = model.first().filter(|(at, _)| *at <= limit).copied();
                    if want.is_some() {
                        model.remove(0);
                    }
                    let got = q.pop_until(limit);
                    prop_assert_eq!(got, want);
                    if let Some((at, _)) = got {
                        prop_assert!(at >= now);
                        now = at;
                    } else {
                        now = limit;
                    }
                }
            }
            prop_assert_eq!(q.len(), model.len());
        }
    }
}
