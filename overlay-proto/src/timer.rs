//! The node's timers, in one table keyed by what each is for (as
//! quinn-proto's `TimerTable`).
//!
//! A part of the node arms a [`Timer`] by writing its deadline here, and
//! re-arming or stopping one is another write: no timer fires that is no
//! longer wanted, so no handler needs a guard field to tell a live timer
//! from a stale one. The driver asks for the earliest deadline
//! ([`crate::Node::poll_timeout`]) and hands in [`crate::Input::Timeout`]
//! once it has passed; the node then fires every timer that was due.
//!
//! Keys are bounded by what they belong to: per group (its join retry,
//! gap repair, placement), per pending request (a replay, a tree query or
//! collection), or one of a kind.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::id::Mid;

/// What a timer is for: the key of its deadline in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Next bootstrap round.
    Bootstrap,
    /// Check that a join was acknowledged, or send it again.
    JoinRetry(Mid),
    /// Fail the publishes whose acknowledgement is overdue. One timer serves
    /// all pending publishes, so a fast publisher does not fill the timer
    /// heap with one entry per message.
    PublishSweep,
    /// A tree collection must answer with what it has.
    CollectTimeout(u64),
    /// A tree query's answer is overdue.
    QueryTimeout(u64),
    /// Periodic routing table maintenance.
    Maintenance,
    /// Heartbeats to tree neighbours, and failure detection.
    Heartbeat,
    /// A gap fetch of this group is overdue.
    Repair(Mid),
    /// A replay's fetch is overdue.
    Replay(u64),
    /// The next message of this group has waited long for its proof: fetch
    /// it again, with its proof.
    ProofWait(Mid),
    /// Look for a better place in this group's tree.
    Optimize(Mid),
    /// See whether this group's stream stalled while its root went on
    /// (a parent that withholds); see [`crate::stream`].
    Stall(Mid),
    /// Announcements on the LAN, and its islands' elections.
    Lan,
}

impl Timer {
    /// A short name of the timer's kind, for statistics and logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Timer::Bootstrap => "timer:bootstrap",
            Timer::JoinRetry(_) => "timer:join-retry",
            Timer::Stall(_) => "timer:stall",
            Timer::PublishSweep => "timer:publish-sweep",
            Timer::CollectTimeout(_) => "timer:collect-timeout",
            Timer::QueryTimeout(_) => "timer:query-timeout",
            Timer::Maintenance => "timer:maintenance",
            Timer::Heartbeat => "timer:heartbeat",
            Timer::Repair(_) => "timer:repair",
            Timer::Replay(_) => "timer:replay",
            Timer::ProofWait(_) => "timer:proof-wait",
            Timer::Optimize(_) => "timer:optimize",
            Timer::Lan => "timer:lan",
        }
    }
}

/// Deadlines by timer, and the same ordered by deadline.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    /// Each armed timer's deadline, and the number it was armed under.
    by_timer: BTreeMap<Timer, (Instant, u64)>,
    /// The same, by deadline, then in the order armed: timers due at one
    /// instant fire in the order they were armed.
    by_deadline: BTreeSet<(Instant, u64, Timer)>,
    /// Numbers the next timer armed.
    next_seq: u64,
}

impl TimerTable {
    /// Arms `timer` to fire at `at`, in place of any deadline it had.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.stop(timer);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_timer.insert(timer, (at, seq));
        self.by_deadline.insert((at, seq, timer));
    }

    /// Arms `timer` to fire at `at`, unless it is armed to fire sooner.
    pub(crate) fn set_unless_sooner(&mut self, timer: Timer, at: Instant) {
        if self.get(timer).is_none_or(|due| at < due) {
            self.set(timer, at);
        }
    }

    /// Disarms `timer`, if it is armed.
    pub(crate) fn stop(&mut self, timer: Timer) {
        if let Some((at, seq)) = self.by_timer.remove(&timer) {
            self.by_deadline.remove(&(at, seq, timer));
        }
    }

    /// When `timer` fires, if it is armed.
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.by_timer.get(&timer).map(|&(at, _)| at)
    }

    /// Whether `timer` is armed.
    pub(crate) fn is_armed(&self, timer: Timer) -> bool {
        self.by_timer.contains_key(&timer)
    }

    /// The earliest deadline of all.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|&(at, _, _)| at)
    }

    /// The number the next timer will be armed under: [`TimerTable::pop_due`]
    /// with it as `armed_before` fires none of the timers armed from now on.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Disarms and returns the earliest timer due at `now`, of those armed
    /// before `armed_before`: a handler that arms a timer for `now` itself
    /// does not run again within the same input.
    pub(crate) fn pop_due(&mut self, now: Instant, armed_before: u64) -> Option<Timer> {
        let &(at, _, _) = self.by_deadline.first()?;
        if at > now {
            return None;
        }
        let due = self
            .by_deadline
            .iter()
            .take_while(|&&(at, _, _)| at <= now)
            .find(|&&(_, seq, _)| seq < armed_before)
            .copied()?;
        self.by_deadline.remove(&due);
        self.by_timer.remove(&due.2);
        Some(due.2)
    }

    /// How many timers are armed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_timer.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_timer_set_again_fires_once_at_its_new_deadline() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(Timer::Heartbeat, t0 + Duration::from_millis(10));
        t.set(Timer::Heartbeat, t0 + Duration::from_millis(30));
        assert_eq!(t.len(), 1);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(30)));
        let seq = t.next_seq();
        assert_eq!(t.pop_due(t0 + Duration::from_millis(20), seq), None);
        assert_eq!(
            t.pop_due(t0 + Duration::from_millis(30), seq),
            Some(Timer::Heartbeat)
        );
        assert_eq!(t.pop_due(t0 + Duration::from_millis(30), seq), None);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_stopped_timer_never_fires() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(Timer::Repair(Mid(1)), t0);
        t.stop(Timer::Repair(Mid(1)));
        assert_eq!(t.pop_due(t0, t.next_seq()), None);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn only_a_sooner_deadline_replaces_one_set_unless_sooner() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        let retry = Timer::JoinRetry(Mid(7));
        t.set_unless_sooner(retry, t0 + Duration::from_millis(50));
        t.set_unless_sooner(retry, t0 + Duration::from_millis(80));
        assert_eq!(t.get(retry), Some(t0 + Duration::from_millis(50)));
        t.set_unless_sooner(retry, t0 + Duration::from_millis(20));
        assert_eq!(t.get(retry), Some(t0 + Duration::from_millis(20)));
    }

    #[test]
    fn timers_due_together_fire_in_the_order_armed_and_new_ones_wait() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(Timer::Optimize(Mid(9)), t0);
        t.set(Timer::Optimize(Mid(1)), t0);
        let seq = t.next_seq();
        assert_eq!(t.pop_due(t0, seq), Some(Timer::Optimize(Mid(9))));
        // Armed while the due ones fire: not within this round.
        t.set(Timer::Lan, t0);
        assert_eq!(t.pop_due(t0, seq), Some(Timer::Optimize(Mid(1))));
        assert_eq!(t.pop_due(t0, seq), None);
        assert_eq!(t.pop_due(t0, t.next_seq()), Some(Timer::Lan));
    }
}
