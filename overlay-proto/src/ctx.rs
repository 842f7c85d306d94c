//! What a part of the node gets while it handles an input: the time, the
//! settings, the node's own identity, and where its outputs and timers go.
//!
//! The node's parts own their state and take a [`Ctx`] in their handlers,
//! as iroh-gossip's layers take their `io`: a part can then be driven and
//! tested alone, and what it may touch of the node is exactly this.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::interface::{Event, Output};
use crate::message::{Message, NodeInfo};
use crate::timer::{Timer, TimerTable};

/// The time, the settings, who we are, and the outbox and timer table of
/// the node a part belongs to.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    /// The time of the input being handled.
    pub(crate) now: Instant,
    /// The node's settings.
    pub(crate) cfg: &'a Config,
    /// The node's id and address.
    pub(crate) me: NodeInfo,
    out: &'a mut VecDeque<Output>,
    timers: &'a mut TimerTable,
}

impl<'a> Ctx<'a> {
    /// A context over the node's outbox and timers.
    pub(crate) fn new(
        now: Instant,
        cfg: &'a Config,
        me: NodeInfo,
        out: &'a mut VecDeque<Output>,
        timers: &'a mut TimerTable,
    ) -> Self {
        Ctx {
            now,
            cfg,
            me,
            out,
            timers,
        }
    }

    /// Sends `msg` to `to`.
    pub(crate) fn send(&mut self, to: NodeInfo, msg: Message) {
        debug_assert_ne!(to.id, self.me.id, "a node never sends to itself");
        self.out.push_back(Output::Send { to, msg });
    }

    /// Asks the driver to do something other than send (dial, probe).
    pub(crate) fn output(&mut self, output: Output) {
        self.out.push_back(output);
    }

    /// Tells the user.
    pub(crate) fn emit(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }

    /// Arms `timer` to fire `after` from now, in place of any deadline it
    /// had.
    pub(crate) fn set_timer(&mut self, after: Duration, timer: Timer) {
        self.timers.set(timer, self.now + after);
    }

    /// Whether `timer` is armed.
    pub(crate) fn is_armed(&self, timer: Timer) -> bool {
        self.timers.is_armed(timer)
    }
}
