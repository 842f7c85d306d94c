//! The publisher's side of a publish: send it to the root, and retry until
//! a root accepts it.
//!
//! Any node can publish, member or not. The root orders only publishes
//! that come straight from their publisher: the connection's handshake
//! proves who sent it, so the publisher a message names is the node that
//! published it, and no node can publish as another, nor pre-empt another's
//! publish by sending its `pub_id` first (pub_ids are random, too). A
//! publisher that does not know the root yet sends its publish hop by hop
//! toward the mid; the root answers a publish that came through others
//! with [`Message::Direct`], and the publisher sends that group's
//! publishes straight to it from then on. The answers, acks and rejects,
//! are taken only from the node that leads the group by its lineage (see
//! [`crate::lineage`]; the mid names the first root).
//!
//! If no answer comes within `publish_retry` (a node on the way crashed,
//! or the root did and its successor has not taken over yet), the same
//! publish, with the same `pub_id`, is sent again hop by hop, toward
//! whichever node is root by then. The root de-duplicates by the proven
//! `(publisher, pub_id)` (see [`crate::root`]), so however many attempts
//! arrive, the message is ordered and delivered once. After
//! `publish_timeout` without an answer the application is told it failed;
//! such a message may still be delivered (an answer may have been lost),
//! but never twice.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use rand::Rng;

use crate::ctx::Ctx;
use crate::id::{Mid, NodeId};
use crate::interface::{Event, PublishError};
use crate::message::{Asked, Message, NodeInfo, Publish, RejectReason};
use crate::message::{PublishAck, PublishReject};
use crate::node::{ctx, Node};
use crate::timer::Timer;

/// A publish of this node waiting for the root's answer.
#[derive(Debug, Clone)]
pub(crate) struct PendingPublish {
    pub(crate) mid: Mid,
    /// The application's number for it, in the events that answer it.
    request: u64,
    pub(crate) payload: Bytes,
    deadline: Instant,
    retry_at: Instant,
    /// Sent on the LAN too (see [`crate::lan`]).
    pub(crate) lan: bool,
    /// The first hops our earlier sends went to (the latest
    /// [`MAX_TRIED`]): a retry goes around them, so a node that drops what
    /// it should route holds a publish up for one retry, not until its
    /// deadline.
    tried: Vec<NodeId>,
}

/// Most first hops a publish remembers having gone to.
const MAX_TRIED: usize = 3;

/// This node's publishes that wait for the root's answer, bounded in
/// number and bytes by the config.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    /// By pub_id: a random number, so that no other node can guess the
    /// next one.
    pending: BTreeMap<u64, PendingPublish>,
    /// Payload bytes of `pending`.
    bytes: usize,
    /// How many of `pending` each group has: asked for every lineage a
    /// peer sends, so it must not cost a walk over `pending`.
    per_mid: BTreeMap<Mid, usize>,
}

impl Publisher {
    /// Takes the application's publish: the message to route toward the
    /// root, or `None` when it is refused (and the application told).
    pub(crate) fn start(
        &mut self,
        ctx: &mut Ctx,
        request: u64,
        pub_id: u64,
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
        *self.per_mid.entry(mid).or_default() += 1;
        self.pending.insert(
            pub_id,
            PendingPublish {
                mid,
                request,
                payload: payload.clone(),
                deadline: ctx.now + cfg.publish_timeout,
                retry_at: ctx.now + cfg.publish_retry,
                lan: false,
                tried: Vec::new(),
            },
        );
        self.arm_sweep(ctx);
        Some(Publish {
            mid,
            publisher: ctx.me,
            pub_id,
            payload,
        })
    }

    /// Whether `pub_id` is free for a new publish.
    pub(crate) fn is_free(&self, pub_id: u64) -> bool {
        pub_id != 0 && !self.pending.contains_key(&pub_id)
    }

    /// The root of `mid` asked for our publishes straight: those that wait
    /// are returned to send it now.
    pub(crate) fn redirected(&mut self, ctx: &mut Ctx, mid: Mid) -> Vec<Publish> {
        let retry_at = ctx.now + ctx.cfg.publish_retry;
        self.pending
            .iter_mut()
            .filter(|(_, p)| p.mid == mid)
            .map(|(pub_id, p)| {
                p.retry_at = retry_at;
                Publish {
                    mid,
                    publisher: ctx.me,
                    pub_id: *pub_id,
                    payload: p.payload.clone(),
                }
            })
            .collect()
    }

    /// The answer to our publish `pub_id` of `mid` came: the application
    /// is told, and the publish is done.
    pub(crate) fn answered(
        &mut self,
        ctx: &mut Ctx,
        mid: Mid,
        pub_id: u64,
        result: Result<u64, RejectReason>,
    ) {
        let Some(p) = self.take(pub_id) else {
            return;
        };
        let request = p.request;
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
    /// answer is overdue, oldest first, to be sent again (hop by hop: the
    /// root they went to may be gone); re-arms while any is pending.
    pub(crate) fn sweep(&mut self, ctx: &mut Ctx) -> Vec<Publish> {
        let now = ctx.now;
        let mut expired = Vec::new();
        let mut retry = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            if p.deadline <= now {
                expired.push(*id);
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
        for pub_id in expired {
            if let Some(p) = self.take(pub_id) {
                ctx.emit(Event::PublishFailed {
                    request: p.request,
                    mid: p.mid,
                    error: PublishError::Timeout,
                });
            }
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

    /// The first hops our publish `pub_id` went to, to go around now.
    pub(crate) fn tried(&self, pub_id: u64) -> &[NodeId] {
        self.pending.get(&pub_id).map_or(&[], |p| &p.tried)
    }

    /// Our publish `pub_id` went to `hop` first.
    pub(crate) fn went_to(&mut self, pub_id: u64, hop: NodeId) {
        if let Some(p) = self.pending.get_mut(&pub_id) {
            if !p.tried.contains(&hop) {
                if p.tried.len() >= MAX_TRIED {
                    p.tried.remove(0);
                }
                p.tried.push(hop);
            }
        }
    }

    /// Whether our publish `pub_id` of `mid` waits for its answer.
    pub(crate) fn waits_for(&self, mid: Mid, pub_id: u64) -> bool {
        self.pending.get(&pub_id).is_some_and(|p| p.mid == mid)
    }

    /// Whether any publish of ours to `mid` waits for its answer.
    pub(crate) fn publishes_to(&self, mid: Mid) -> bool {
        self.per_mid.contains_key(&mid)
    }

    /// Removes pending publish `pub_id`, keeping the counts.
    fn take(&mut self, pub_id: u64) -> Option<PendingPublish> {
        let p = self.pending.remove(&pub_id)?;
        self.bytes -= p.payload.len();
        if let Some(n) = self.per_mid.get_mut(&p.mid) {
            *n -= 1;
            if *n == 0 {
                self.per_mid.remove(&p.mid);
            }
        }
        Some(p)
    }

    /// Our pending publish `pub_id`, if it still waits.
    pub(crate) fn get_mut(&mut self, pub_id: u64) -> Option<&mut PendingPublish> {
        self.pending.get_mut(&pub_id)
    }
}

impl<R: Rng> Node<R> {
    pub(crate) fn publish(&mut self, request: u64, mid: Mid, payload: Bytes) {
        let pub_id = loop {
            let id = self.rng.random::<u64>();
            if self.publisher.is_free(id) {
                break id;
            }
        };
        let Some(p) = self
            .publisher
            .start(&mut ctx!(self), request, pub_id, mid, payload)
        else {
            return;
        };
        self.send_publish(p);
        // Cut off from the tree: the members on our LAN get it at once.
        if self.lan.is_some() && !self.groups.get(&mid).is_some_and(|g| g.attached) {
            self.lan_publish(pub_id);
        }
    }

    /// Sends a publish of ours: ordered here if we are the root, else
    /// straight to the root if it told us who it is, else hop by hop.
    fn send_publish(&mut self, p: Publish) {
        if self.groups.get(&p.mid).is_some_and(|g| g.is_root()) {
            return self.sequence(p);
        }
        if let Some(root) = self.roots.get(p.mid) {
            return self.send(root, Message::Publish(p));
        }
        // Around the first hops of our earlier sends, if there is a way
        // around them: one of them may drop what it should route. The root
        // itself is never gone around: it is where the publish goes, and
        // a retry straight to it is one it answers.
        let tried = self.publisher.tried(p.pub_id);
        let next = self
            .toward_root(p.mid, tried)
            .or_else(|| self.toward_root(p.mid, &[]));
        match next {
            Some(next) => {
                if !self.leads(p.mid, next.id) {
                    self.publisher.went_to(p.pub_id, next.id);
                }
                self.send(next, Message::Publish(p));
            }
            None => self.answer_publish(&p, Err(RejectReason::UnknownGroup)),
        }
    }

    /// A publish from a peer. The root orders it if it came from its
    /// publisher, and else asks the publisher to send straight to it; any
    /// other node passes it on toward the root.
    pub(crate) fn on_publish(&mut self, from: NodeInfo, mut p: Publish) {
        if p.publisher.id == self.me().id {
            // Our publishes start here: one in our name from a peer is not
            // ours.
            return;
        }
        if !self.groups.get(&p.mid).is_some_and(|g| g.is_root()) {
            return self.relay_publish(p);
        }
        if p.publisher.id == from.id {
            // Answered where the handshake proved it is, not where it says.
            p.publisher = from;
            return self.sequence(p);
        }
        let (mid, pub_id) = (p.mid, p.pub_id);
        tracing::debug!(mid = %mid, publisher = %p.publisher.id.short(), "a publish came through others: asking its publisher to send directly");
        self.send_direct(p.publisher, mid, Asked::Publish { pub_id });
    }

    /// Passes a publish on toward the root, or refuses it if no node leads
    /// its group.
    fn relay_publish(&mut self, p: Publish) {
        match self.toward_root(p.mid, &[]) {
            Some(next) => self.send(next, Message::Publish(p)),
            None => self.answer_publish(&p, Err(RejectReason::UnknownGroup)),
        }
    }

    /// The root asked for our publishes of `mid` straight: those waiting
    /// go to it now.
    pub(crate) fn on_publish_direct(&mut self, from: NodeInfo, mid: Mid) {
        self.roots.learn(mid, from);
        let resend = self.publisher.redirected(&mut ctx!(self), mid);
        for p in resend {
            self.send(from, Message::Publish(p));
        }
    }

    /// Whether node `id` leads `mid`, by the lineage we hold (or, holding
    /// none, by the mid, which names the group's first root).
    pub(crate) fn leads(&self, mid: Mid, id: crate::id::NodeId) -> bool {
        match self.lineages.get(mid) {
            Some(l) => l.root() == Some(id),
            None => crate::proof::issued_by(mid, id),
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
        pub_id: u64,
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
                .answered(&mut ctx!(self), mid, pub_id, result);
        }
    }

    /// Sends again the publishes whose answer is overdue, and fails those
    /// past their deadline.
    pub(crate) fn sweep_publishes(&mut self) {
        let retry = self.publisher.sweep(&mut ctx!(self));
        for p in &retry {
            self.roots.forget(p.mid);
        }
        for p in retry {
            let pub_id = p.pub_id;
            tracing::debug!(mid = %p.mid, pub_id, "publish not answered yet, sending it again");
            self.send_publish(p);
            if self.lan.is_some() {
                self.lan_publish(pub_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Publisher authenticity: the root orders a publish only from the node
    //! that published it, and a publisher takes answers only from the root.
    use std::time::Instant;

    use rand::rngs::StdRng;

    use super::*;
    use crate::config::Config;
    use crate::id::NodeId;
    use crate::interface::{Command, Input, Output};
    use crate::message::Direct;
    use crate::test_support::{deliver, drain, keyed, node, node_signing};

    /// The publisher, a node on the way, and a liar.
    const P: u128 = 0x1000_0000_0000_0000_0000_0000_0000_0000;
    const Q: u128 = 0xE000_0000_0000_0000_0000_0000_0000_0000;
    const M: u128 = 0x5000_0000_0000_0000_0000_0000_0000_0000;

    /// A root (its id its key's) that created a group, and the group.
    fn root() -> (Node<StdRng>, Mid) {
        let (id, key) = keyed(0xF);
        let mut r = node_signing(id, key, &[P, Q, M], Config::default());
        r.handle(
            Instant::now(),
            Input::Command(Command::CreateGroup { request: 1 }),
        );
        let mut mid = None;
        while let Some(o) = r.poll_output() {
            if let Output::Event(Event::GroupCreated { mid: m, .. }) = o {
                mid = Some(m);
            }
        }
        (r, mid.expect("the group was created"))
    }

    /// Whether the root ordered a publish by `publisher`.
    fn ordered(r: &Node<StdRng>, mid: Mid, publisher: u128) -> bool {
        r.groups[&mid]
            .held()
            .iter()
            .any(|d| d.publisher == NodeId(publisher))
    }

    fn publish_of(sent: &[(NodeId, Message)]) -> (NodeId, Publish) {
        sent.iter()
            .find_map(|(to, m)| match m {
                Message::Publish(p) => Some((*to, p.clone())),
                _ => None,
            })
            .expect("a publish went out")
    }

    #[test]
    fn the_root_orders_a_publish_only_from_its_publisher() {
        let (mut r, mid) = root();
        let root_id = r.me().id.0;
        let mut p = node(P, &[root_id, Q, M], Config::default());
        p.handle(
            Instant::now(),
            Input::Command(Command::Publish {
                request: 9,
                mid,
                payload: Bytes::from_static(b"from p"),
            }),
        );
        let (_, publish) = publish_of(&drain(&mut p));
        assert_eq!(publish.publisher.id, NodeId(P));

        // M sends it (or a forgery in P's name) straight to the root: not
        // ordered; the root asks P to send it itself.
        let mut forged = publish.clone();
        forged.payload = Bytes::from_static(b"from m, in p's name");
        let sent = deliver(&mut r, M, Message::Publish(forged));
        assert!(!ordered(&r, mid, P) && !ordered(&r, mid, M));
        assert!(matches!(
            &sent[..],
            [(to, Message::Direct(Direct { asked: Asked::Publish { pub_id }, .. }))]
                if *to == NodeId(P) && *pub_id == publish.pub_id
        ));
        // The same through Q, an honest relay: the same answer.
        let sent = deliver(&mut r, Q, Message::Publish(publish.clone()));
        let direct = sent
            .into_iter()
            .find(|(_, m)| m.kind() == "direct")
            .expect("the root asks for the publish straight")
            .1;
        assert!(!ordered(&r, mid, P));

        // A redirect from M is dropped; the root's makes P send it
        // straight to the root, which orders it.
        assert!(deliver(&mut p, M, direct.clone()).is_empty());
        assert_eq!(p.dropped().get("direct"), 1);
        let (to, again) = publish_of(&deliver(&mut p, root_id, direct));
        assert_eq!((to, again.pub_id), (NodeId(root_id), publish.pub_id));
        deliver(&mut r, P, Message::Publish(again));
        assert!(ordered(&r, mid, P));

        // P's next publish goes straight to the root.
        p.handle(
            Instant::now(),
            Input::Command(Command::Publish {
                request: 10,
                mid,
                payload: Bytes::from_static(b"again"),
            }),
        );
        let (to, next) = publish_of(&drain(&mut p));
        assert_eq!(to, NodeId(root_id));
        assert_ne!(
            next.pub_id,
            publish.pub_id.wrapping_add(1),
            "pub_ids are random"
        );
    }

    /// A retry goes around the first hop of the publish before it (which
    /// may drop what it should route), but never around the root.
    #[test]
    fn a_retry_goes_around_its_first_hop_but_not_around_the_root() {
        let (r, mid) = root();
        let root_id = r.me().id.0;
        let t = Instant::now();
        let first_hops = |known: &[u128]| {
            let mut p = node(P, known, Config::default());
            p.handle(
                t,
                Input::Command(Command::Publish {
                    request: 1,
                    mid,
                    payload: Bytes::from_static(b"p"),
                }),
            );
            let mut hops = vec![publish_of(&drain(&mut p)).0];
            for k in 1..=2u64 {
                let at = t + Config::default().publish_retry * 2 * k as u32;
                crate::test_support::fire(&mut p, at, crate::timer::Timer::PublishSweep);
                hops.push(publish_of(&drain(&mut p)).0);
            }
            hops
        };
        // Q, then around it M (nearer the mid than P), then Q again (M
        // is gone around too, and nothing is left).
        assert_eq!(first_hops(&[Q, M]), vec![NodeId(Q), NodeId(M), NodeId(Q)]);
        // Straight to the root, every time.
        assert_eq!(first_hops(&[root_id, Q, M]), vec![NodeId(root_id); 3]);
    }
}
