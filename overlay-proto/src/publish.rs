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

use std::time::Instant;

use bytes::Bytes;
use rand::Rng;

use crate::id::Mid;
use crate::interface::{Event, PublishError, Timer};
use crate::message::{Message, Publish, RejectReason};
use crate::message::{PublishAck, PublishReject};
use crate::node::Node;

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

impl<R: Rng> Node<R> {
    pub(crate) fn publish(&mut self, request: u64, mid: Mid, payload: Bytes) {
        if payload.len() > self.cfg.max_message_size {
            let limit = self.cfg.max_message_size as u32;
            self.emit(Event::PublishFailed {
                request,
                mid,
                error: PublishError::Rejected(RejectReason::PayloadTooLarge { limit }),
            });
            return;
        }
        if self.publishes.len() >= self.cfg.max_pending_publishes
            || self.publish_bytes + payload.len() > self.cfg.max_pending_publish_bytes
        {
            let max = self.cfg.max_pending_publishes;
            self.emit(Event::PublishFailed {
                request,
                mid,
                error: PublishError::TooManyInFlight(max),
            });
            return;
        }
        self.publish_bytes += payload.len();
        self.publishes.insert(
            request,
            PendingPublish {
                mid,
                payload: payload.clone(),
                deadline: self.now + self.cfg.publish_timeout,
                retry_at: self.now + self.cfg.publish_retry,
                lan: false,
            },
        );
        self.arm_publish_sweep();
        let publisher = self.me();
        self.on_publish(Publish {
            mid,
            publisher,
            pub_id: request,
            payload,
        });
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
        if retry_later {
            return;
        }
        let Some(p) = self.publishes.remove(&request) else {
            return;
        };
        self.publish_bytes -= p.payload.len();
        let event = match result {
            Ok(seq) => Event::PublishAccepted { request, mid, seq },
            Err(reason) => Event::PublishFailed {
                request,
                mid,
                error: reason.into(),
            },
        };
        self.emit(event);
    }

    /// Sends again the publishes whose answer is overdue, and fails those
    /// past their deadline; re-arms while any is pending.
    pub(crate) fn sweep_publishes(&mut self) {
        self.publish_sweep_armed = false;
        let now = self.now;
        let mut expired = Vec::new();
        let mut retry = Vec::new();
        for (id, p) in self.publishes.iter_mut() {
            if p.deadline <= now {
                expired.push((*id, p.mid));
            } else if p.retry_at <= now {
                p.retry_at = now + self.cfg.publish_retry;
                retry.push((*id, p.mid, p.payload.clone()));
            }
        }
        for (request, mid) in expired {
            if let Some(p) = self.publishes.remove(&request) {
                self.publish_bytes -= p.payload.len();
            }
            self.emit(Event::PublishFailed {
                request,
                mid,
                error: PublishError::Timeout,
            });
        }
        // Oldest first, so that a root that comes back orders retries in
        // the order they were first sent.
        retry.sort_by_key(|r| r.0);
        let publisher = self.me();
        for (pub_id, mid, payload) in retry {
            tracing::debug!(mid = %mid, pub_id, "publish not answered yet, sending it again");
            self.on_publish(Publish {
                mid,
                publisher,
                pub_id,
                payload,
            });
            if self.lan.is_some() {
                self.lan_publish(pub_id);
            }
        }
        self.arm_publish_sweep();
    }

    pub(crate) fn arm_publish_sweep(&mut self) {
        if !self.publish_sweep_armed && !self.publishes.is_empty() {
            self.publish_sweep_armed = true;
            // A quarter of the retry interval: retries go out at most 25%
            // late, and so do failures.
            let every = self.cfg.publish_retry.min(self.cfg.publish_timeout) / 4;
            self.set_timer(every, Timer::PublishSweep);
        }
    }
}
