//! Replay protection for multicast datagrams.
//!
//! Every datagram carries its sender's *session* (a number that grows with
//! each start of the sender: the daemon takes its start time in
//! microseconds since the Unix epoch) and a *counter* that grows with each
//! datagram of the session. A receiver keeps, per sender, the newest
//! session, the highest counter, and which of the [`WINDOW`] counters below
//! it it has accepted (the sliding window of IPsec, RFC 4303 section 3.4.3,
//! and WireGuard). A datagram of an older session, one already accepted, or
//! one too far behind is a replay (or too late to matter: LANs reorder
//! little). The window moves only for a datagram that authenticated, so a
//! forger cannot push it.

/// Counters below the highest accepted one that are still told apart.
pub const WINDOW: u64 = 128;

/// One sender's accepted session and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    session: u64,
    /// Highest counter accepted in `session`.
    top: u64,
    /// Bit `i` set: counter `top - i` was accepted.
    seen: u128,
}

impl ReplayWindow {
    /// The window after accepting `(session, counter)` as the first datagram
    /// of a sender.
    pub fn new(session: u64, counter: u64) -> Self {
        ReplayWindow {
            session,
            top: counter,
            seen: 1,
        }
    }

    /// Whether `(session, counter)` would be new. Does not change the window:
    /// call [`ReplayWindow::accept`] once the datagram has authenticated.
    pub fn is_fresh(&self, session: u64, counter: u64) -> bool {
        if session != self.session {
            return session > self.session;
        }
        if counter > self.top {
            return true;
        }
        let behind = self.top - counter;
        behind < WINDOW && self.seen & (1u128 << behind) == 0
    }

    /// Records `(session, counter)` as accepted. Whether it was fresh: a
    /// stale one leaves the window as it was.
    pub fn accept(&mut self, session: u64, counter: u64) -> bool {
        if !self.is_fresh(session, counter) {
            return false;
        }
        if session > self.session {
            *self = ReplayWindow::new(session, counter);
        } else if counter > self.top {
            let ahead = counter - self.top;
            self.seen = if ahead >= WINDOW {
                1
            } else {
                (self.seen << ahead) | 1
            };
            self.top = counter;
        } else {
            self.seen |= 1u128 << (self.top - counter);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_counter_is_accepted_once_in_any_order_within_the_window() {
        let mut w = ReplayWindow::new(7, 10);
        assert!(!w.accept(7, 10), "the first one again");
        assert!(w.accept(7, 12));
        assert!(w.accept(7, 11), "late but within the window");
        assert!(!w.accept(7, 11));
        assert!(!w.accept(7, 12));
        assert!(w.accept(7, 12 + WINDOW - 1));
        assert!(!w.accept(7, 12), "fell out of the window");
        assert!(w.accept(7, 13), "still within it");
    }

    #[test]
    fn a_newer_session_starts_over_and_an_older_one_is_refused() {
        let mut w = ReplayWindow::new(7, 1000);
        assert!(w.accept(8, 0), "the sender restarted");
        assert!(!w.accept(7, 1001), "its earlier run is over");
        assert!(w.accept(8, 1));
        assert!(!w.accept(8, 0));
    }

    #[test]
    fn a_jump_beyond_the_window_forgets_what_was_below() {
        let mut w = ReplayWindow::new(1, 5);
        assert!(w.accept(1, 5 + 10 * WINDOW));
        assert!(!w.accept(1, 5));
        assert!(!w.accept(1, 6), "too far behind to tell");
        assert!(w.accept(1, 5 + 10 * WINDOW - 1));
    }

    proptest! {
        /// Whatever the order, each (session, counter) is accepted at most
        /// once, and a sequence in order is accepted whole.
        #[test]
        fn nothing_is_accepted_twice(
            seq in proptest::collection::vec((0u64..3, 0u64..400), 1..300)
        ) {
            let mut w = ReplayWindow::new(0, 0);
            let mut accepted = std::collections::HashSet::new();
            accepted.insert((0, 0));
            for (s, c) in seq {
                if w.accept(s, c) {
                    prop_assert!(accepted.insert((s, c)), "{s}/{c} accepted twice");
                }
            }
        }

        #[test]
        fn in_order_counters_all_pass(start in 0u64..1 << 60, n in 1u64..500) {
            let mut w = ReplayWindow::new(3, start);
            for c in start + 1..start + n {
                prop_assert!(w.accept(3, c));
            }
        }
    }
}
