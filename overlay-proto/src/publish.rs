//! The publisher's side of a publish: route it to the root, and retry until
//! a root accepts it.
//!
//! A publish travels hop by hop toward the mid (any node can publish, member
//! or not) and is answered by the root directly. If no answer comes within
//! `publish_retry` (a node on the way crashed, or the root did and its
//! successor has not taken over yet), the same publish, with the same
//! `pub_id`, is sent again toward whichever node is root by then. The root
//! de-duplicates by `(publisher, pub_id)` (see [`crate::root`]), so however
//! many attempts arrive, the message is ordered and delivered once. After
//! `publish_timeout` without an answer the application is told it failed;
//! such a message may still be delivered (an answer may have been lost),
//! but never twice.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use rand::Rng;

use crate::ctx::Ctx;
use crate::id::Mid;
use crate::interface::{Event, PublishError};
use crate::message::{Message, Publish, RejectReason};
use crate::message::{PublishAck, PublishReject};
use crate::node::{ctx, Node};
use crate::timer::Timer;

/// A publish of this node waiting for the root's answer.
#[derive(Debug, Clone)]
pub(crate) struct PendingPublish {
    pub(crate) mid: Mid,
    pub(crate) payload: Bytes,
    deadline: Instant,
    retry_at: Instant,
    /// Sent on the LAN too (see [`crate::lan`]).
    pub(crate) lan: bool,
}

/// This node's publishes that wait for the root's answer, bounded in
/// number and bytes by the config.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    /// By the application's request number, which is also the pub_id.
    pending: BTreeMap<u64, PendingPublish>,
    /// Payload bytes of `pending`.
    bytes: usize,
}

impl Publisher {
    /// Takes the application's publish: the message to route toward the
    /// root, or `None` when it is refused (and the application told).
    pub(crate) fn start(
        &mut self,
        ctx: &mut Ctx,
        request: u64,
        mid: Mid,
        payload: Bytes,
    ) -> Option<Publish> {
        let cfg = ctx.cfg;
        if payload.len() > cfg.max_message_size {
            let limit = cfg.max_message_size as u32;
            ctx.emit(Event::PublishFailed {
                request,
                mid,
                error: PublishError::Rejected(RejectReason::PayloadTooLarge { limit }),
            });
            return None;
        }
        if self.pending.len() >= cfg.max_pending_publishes
            || self.bytes + payload.len() > cfg.max_pending_publish_bytes
        {
            let max = cfg.max_pending_publishes;
            ctx.emit(Event::PublishFailed {
                request,
                mid,
                error: PublishError::TooManyInFlight(max),
            });
            return None;
        }
        self.bytes += payload.len();
        self.pending.insert(
            request,
            PendingPublish {
                mid,
                payload: payload.clone(),
                deadline: ctx.now + cfg.publish_timeout,
                retry_at: ctx.now + cfg.publish_retry,
                lan: false,
            },
        );
        self.arm_sweep(ctx);
        Some(Publish {
            mid,
            publisher: ctx.me,
            pub_id: request,
            payload,
        })
    }

    /// The answer to our publish `request` of `mid` came: the application
    /// is told, and the publish is done.
    pub(crate) fn answered(
        &mut self,
        ctx: &mut Ctx,
        mid: Mid,
        request: u64,
        result: Result<u64, RejectReason>,
    ) {
        let Some(p) = self.pending.remove(&request) else {
            return;
        };
        self.bytes -= p.payload.len();
        let event = match result {
            Ok(seq) => Event::PublishAccepted { request, mid, seq },
            Err(reason) => Event::PublishFailed {
                request,
                mid,
                error: reason.into(),
            },
        };
        ctx.emit(event);
    }

    /// Fails the publishes past their deadline, and returns those whose
    /// answer is overdue, oldest first, to be sent again; re-arms while
    /// any is pending.
    pub(crate) fn sweep(&mut self, ctx: &mut Ctx) -> Vec<Publish> {
        let now = ctx.now;
        let mut expired = Vec::new();
        let mut retry = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            if p.deadline <= now {
                expired.push((*id, p.mid));
            } else if p.retry_at <= now {
                p.retry_at = now + ctx.cfg.publish_retry;
                retry.push(Publish {
                    mid: p.mid,
                    publisher: ctx.me,
                    pub_id: *id,
                    payload: p.payload.clone(),
                });
            }
        }
        for (request, mid) in expired {
            if let Some(p) = self.pending.remove(&request) {
                self.bytes -= p.payload.len();
            }
            ctx.emit(Event::PublishFailed {
                request,
                mid,
                error: PublishError::Timeout,
            });
        }
        self.arm_sweep(ctx);
        retry
    }

    /// One timer serves every pending publish.
    fn arm_sweep(&mut self, ctx: &mut Ctx) {
        if !ctx.is_armed(Timer::PublishSweep) && !self.pending.is_empty() {
            // A quarter of the retry interval: retries go out at most 25%
            // late, and so do failures.
            let every = ctx.cfg.publish_retry.min(ctx.cfg.publish_timeout) / 4;
            ctx.set_timer(every, Timer::PublishSweep);
        }
    }

    /// Whether our publish `request` of `mid` waits for its answer.
    pub(crate) fn waits_for(&self, mid: Mid, request: u64) -> bool {
        self.pending.get(&request).is_some_and(|p| p.mid == mid)
    }

    /// Our pending publish `request`, if it still waits.
    pub(crate) fn get_mut(&mut self, request: u64) -> Option<&mut PendingPublish> {
        self.pending.get_mut(&request)
    }
}

impl<R: Rng> Node<R> {
    pub(crate) fn publish(&mut self, request: u64, mid: Mid, payload: Bytes) {
        let Some(p) = self.publisher.start(&mut ctx!(self), request, mid, payload) else {
            return;
        };
        self.on_publish(p);
        // Cut off from the tree: the members on our LAN get it at once.
        if self.lan.is_some() && !self.groups.get(&mid).is_some_and(|g| g.attached) {
            self.lan_publish(request);
        }
    }

    /// Routes a publish toward the root, or orders it if we are the root.
    pub(crate) fn on_publish(&mut self, p: Publish) {
        if self.groups.get(&p.mid).is_some_and(|g| g.is_root()) {
            return self.sequence(p);
        }
        match self.toward_root(p.mid, &[]) {
            Some(next) => self.send(next, Message::Publish(p)),
            None => self.answer_publish(&p, Err(RejectReason::UnknownGroup)),
        }
    }

    /// Answers a publish: an event if it is our own, else a message to its
    /// publisher.
    pub(crate) fn answer_publish(&mut self, p: &Publish, result: Result<u64, RejectReason>) {
        let (mid, pub_id) = (p.mid, p.pub_id);
        if p.publisher.id == self.me().id {
            self.publish_answered(mid, pub_id, result);
        } else {
            let msg = match result {
                Ok(seq) => Message::PublishAck(PublishAck { mid, pub_id, seq }),
                Err(reason) => Message::PublishReject(PublishReject {
                    mid,
                    pub_id,
                    reason,
                }),
            };
            self.send(p.publisher, msg);
        }
    }

    /// The root (or a node on the way) answered one of our publishes.
    pub(crate) fn publish_answered(
        &mut self,
        mid: Mid,
        request: u64,
        result: Result<u64, RejectReason>,
    ) {
        let retry_later = match result {
            // The root is busy, or the group's new root has not taken over
            // yet while we know the group exists: try again later.
            Err(RejectReason::Overloaded) => true,
            Err(RejectReason::UnknownGroup) => self.groups.get(&mid).is_some_and(|g| g.established),
            _ => false,
        };
        if !retry_later {
            self.publisher
                .answered(&mut ctx!(self), mid, request, result);
        }
    }

    /// Sends again the publishes whose answer is overdue, and fails those
    /// past their deadline.
    pub(crate) fn sweep_publishes(&mut self) {
        let retry = self.publisher.sweep(&mut ctx!(self));
        for p in retry {
            let pub_id = p.pub_id;
            tracing::debug!(mid = %p.mid, pub_id, "publish not answered yet, sending it again");
            self.on_publish(p);
            if self.lan.is_some() {
                self.lan_publish(pub_id);
            }
        }
    }
}
