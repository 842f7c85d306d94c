//! `overlay tree`: how the root learns its whole tree.
//!
//! A query is routed to the root like a publish. The root then asks each
//! child for its subtree ([`Message::Collect`]); each child asks its own
//! children with a smaller time budget, and answers its parent with its own
//! entry followed by what its children reported ([`Message::Collected`]). A
//! child that does not answer within the budget is listed as not responding,
//! so a stuck subtree delays the answer by at most the budget. The tree
//! travels as a flat list with parent links, never nested.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;

use crate::ctx::Ctx;
use crate::id::{Mid, NodeId};
use crate::interface::{Event, TreeError};
use crate::message::{Collect, Collected, TreeQuery, TreeReply};
use crate::message::{Message, NodeInfo, RejectReason, TreeEntry};
use crate::node::{ctx, Node};
use crate::timer::Timer;

/// Who a finished collection answers.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// This node's own user asked.
    Local { request: u64 },
    /// A remote node asked the root.
    Remote { to: NodeInfo, query: u64 },
    /// Our parent asked for our subtree.
    Parent { to: NodeInfo, query: u64 },
}

/// A collection under way at this node.
#[derive(Debug, Clone)]
pub(crate) struct Collection {
    mid: Mid,
    answer: Answer,
    waiting: BTreeSet<NodeId>,
    children: Vec<NodeInfo>,
    entries: Vec<TreeEntry>,
}

/// The tree queries of this node's user that wait for the root, and the
/// collections under way here, each bounded by `max_collections`.
#[derive(Debug)]
pub(crate) struct Queries {
    /// Our user's queries sent toward the root: the group of each, by the
    /// user's request number.
    asked: BTreeMap<u64, Mid>,
    /// Collections under way here, by their number.
    collections: BTreeMap<u64, Collection>,
    /// The number of the next collection.
    next_collection: u64,
}

impl Default for Queries {
    fn default() -> Self {
        Queries {
            asked: BTreeMap::new(),
            collections: BTreeMap::new(),
            next_collection: 1,
        }
    }
}

impl Queries {
    /// Sends our user's query `request` for `mid`'s tree to `next`, the
    /// next hop toward the root (`None`: there is none).
    pub(crate) fn ask(&mut self, ctx: &mut Ctx, request: u64, mid: Mid, next: Option<NodeInfo>) {
        let refused = match next {
            _ if self.asked.len() >= ctx.cfg.max_collections => RejectReason::Overloaded,
            None => RejectReason::UnknownGroup,
            Some(next) => {
                self.asked.insert(request, mid);
                let reply_to = ctx.me;
                let query = TreeQuery {
                    mid,
                    query: request,
                    reply_to,
                };
                ctx.send(next, Message::TreeQuery(query));
                ctx.set_timer(ctx.cfg.tree_query_budget * 2, Timer::QueryTimeout(request));
                return;
            }
        };
        ctx.emit(Event::Tree {
            request,
            mid,
            result: Err(TreeError::Rejected(refused)),
        });
    }

    /// Whether our user's query `query` of `mid` waits for the root.
    pub(crate) fn waits_for_reply(&self, mid: Mid, query: u64) -> bool {
        self.asked.get(&query) == Some(&mid)
    }

    /// Whether collection `query` of `mid` waits for `child`'s subtree.
    pub(crate) fn waits_for_collected(&self, mid: Mid, query: u64, child: NodeId) -> bool {
        self.collections
            .get(&query)
            .is_some_and(|c| c.mid == mid && c.waiting.contains(&child))
    }

    /// The root answered one of our user's queries.
    pub(crate) fn on_reply(&mut self, ctx: &mut Ctx, reply: TreeReply) {
        let TreeReply { mid, query, result } = reply;
        if self.asked.get(&query) == Some(&mid) {
            self.asked.remove(&query);
            ctx.emit(Event::Tree {
                request: query,
                mid,
                result: result.map_err(TreeError::from),
            });
        }
    }

    /// Our user's query `request` is overdue.
    /// Our user's query went unanswered: the group of the query, which
    /// was told, if it was still waiting.
    pub(crate) fn on_query_timeout(&mut self, ctx: &mut Ctx, request: u64) -> Option<Mid> {
        let mid = self.asked.remove(&request)?;
        ctx.emit(Event::Tree {
            request,
            mid,
            result: Err(TreeError::Timeout),
        });
        Some(mid)
    }

    /// Collects `mid`'s subtree below us (`own` is our entry) from
    /// `children` within `budget`, for `answer`.
    pub(crate) fn start(
        &mut self,
        ctx: &mut Ctx,
        mid: Mid,
        answer: Answer,
        budget: Duration,
        own: TreeEntry,
        children: Vec<NodeInfo>,
    ) {
        let id = self.next_collection;
        self.next_collection += 1;
        let mut c = Collection {
            mid,
            answer,
            waiting: children.iter().map(|c| c.id).collect(),
            children: children.clone(),
            entries: vec![own],
        };
        if children.is_empty() || self.collections.len() >= ctx.cfg.max_collections {
            // Nothing to wait for, or too busy to wait: answer with what we
            // know, children listed as not responding.
            c.waiting.clear();
            list_silent_children(ctx, &mut c, &children);
            finish(ctx, c);
            return;
        }
        let budget_ms = budget.as_millis().min(u32::MAX as u128) as u32;
        for child in &children {
            ctx.send(
                *child,
                Message::Collect(Collect {
                    mid,
                    query: id,
                    budget_ms,
                }),
            );
        }
        self.collections.insert(id, c);
        ctx.set_timer(budget, Timer::CollectTimeout(id));
    }

    /// A child's subtree, for a collection of ours.
    pub(crate) fn on_collected(&mut self, ctx: &mut Ctx, from: NodeInfo, collected: Collected) {
        let Collected {
            mid,
            query,
            entries,
        } = collected;
        let max = ctx.cfg.max_tree_entries;
        let Some(c) = self.collections.get_mut(&query) else {
            return;
        };
        if c.mid != mid || !c.waiting.remove(&from.id) {
            return;
        }
        // A child that answered with nothing is not on our tree after all.
        if entries.is_empty() || entries[0].node.id != from.id {
            let child = c.children.iter().find(|n| n.id == from.id).copied();
            if let Some(child) = child {
                c.entries.push(TreeEntry {
                    node: child,
                    parent: Some(ctx.me.id),
                    member: false,
                    responded: false,
                    island: None,
                    fed: false,
                });
            }
        } else {
            let room = max.saturating_sub(c.entries.len());
            c.entries.extend(entries.into_iter().take(room));
        }
        if c.waiting.is_empty() {
            if let Some(c) = self.collections.remove(&query) {
                finish(ctx, c);
            }
        }
    }

    /// Collection `id` must answer with what it has.
    pub(crate) fn on_collect_timeout(&mut self, ctx: &mut Ctx, id: u64) {
        let Some(mut c) = self.collections.remove(&id) else {
            return;
        };
        let silent: Vec<NodeInfo> = c
            .children
            .iter()
            .filter(|n| c.waiting.contains(&n.id))
            .copied()
            .collect();
        list_silent_children(ctx, &mut c, &silent);
        finish(ctx, c);
    }
}

fn list_silent_children(ctx: &Ctx, c: &mut Collection, silent: &[NodeInfo]) {
    for child in silent {
        c.entries.push(TreeEntry {
            node: *child,
            parent: Some(ctx.me.id),
            member: false,
            responded: false,
            island: None,
            fed: false,
        });
    }
}

fn finish(ctx: &mut Ctx, c: Collection) {
    let mid = c.mid;
    match c.answer {
        Answer::Local { request } => ctx.emit(Event::Tree {
            request,
            mid,
            result: Ok(c.entries),
        }),
        Answer::Remote { to, query } => {
            if to.id == ctx.me.id {
                return;
            }
            ctx.send(
                to,
                Message::TreeReply(TreeReply {
                    mid,
                    query,
                    result: Ok(c.entries),
                }),
            )
        }
        Answer::Parent { to, query } => ctx.send(
            to,
            Message::Collected(Collected {
                mid,
                query,
                entries: c.entries,
            }),
        ),
    }
}

impl<R: Rng> Node<R> {
    pub(crate) fn query_tree(&mut self, request: u64, mid: Mid) {
        if self.groups.get(&mid).is_some_and(|g| g.is_root()) {
            let budget = self.cfg.tree_query_budget;
            self.start_collection(mid, Answer::Local { request }, budget);
            return;
        }
        let next = self
            .roots
            .get(mid)
            .or_else(|| self.overlay.table.next_hop(mid.key(), &[]));
        self.queries.ask(&mut ctx!(self), request, mid, next);
    }

    /// The root asked for our tree query straight: it goes to it now.
    pub(crate) fn on_tree_direct(&mut self, root: NodeInfo, mid: Mid, query: u64) {
        self.roots.learn(mid, root);
        let me = self.me();
        self.send(
            root,
            Message::TreeQuery(TreeQuery {
                mid,
                query,
                reply_to: me,
            }),
        );
    }

    /// A tree query: the root collects the tree and answers it, but only
    /// to the node the query came from (a collection costs every tree node
    /// work, and its answer is large); one that came through others gets a
    /// [`Message::Direct`], and its asker asks again, straight.
    pub(crate) fn on_tree_query(
        &mut self,
        sender: NodeInfo,
        mid: Mid,
        query: u64,
        reply_to: NodeInfo,
    ) {
        if reply_to.id == self.me().id {
            return;
        }
        if self.groups.get(&mid).is_some_and(|g| g.is_root()) {
            if sender.id != reply_to.id {
                self.send_direct(reply_to, mid, crate::message::Asked::Tree { query });
                return;
            }
            let reply_to = sender;
            let budget = self.cfg.tree_query_budget;
            self.start_collection(
                mid,
                Answer::Remote {
                    to: reply_to,
                    query,
                },
                budget,
            );
        } else if let Some(next) = self.overlay.table.next_hop(mid.key(), &[]) {
            self.send(
                next,
                Message::TreeQuery(TreeQuery {
                    mid,
                    query,
                    reply_to,
                }),
            );
        } else {
            self.send(
                reply_to,
                Message::TreeReply(TreeReply {
                    mid,
                    query,
                    result: Err(RejectReason::UnknownGroup),
                }),
            );
        }
    }

    pub(crate) fn on_collect(&mut self, from: NodeInfo, mid: Mid, query: u64, budget_ms: u32) {
        let ours = self
            .groups
            .get(&mid)
            .is_some_and(|g| g.parent.is_some_and(|p| p.id == from.id));
        if !ours {
            // Not our parent in this group: answer with nothing, so it lists
            // us as not responding rather than wait.
            self.send(
                from,
                Message::Collected(Collected {
                    mid,
                    query,
                    entries: Vec::new(),
                }),
            );
            return;
        }
        // Leave our parent a fifth of our budget to pass the answer on.
        let budget = Duration::from_millis(budget_ms as u64 * 4 / 5);
        self.start_collection(mid, Answer::Parent { to: from, query }, budget);
    }

    /// Our own entry and children in `mid`, and the collection of what is
    /// below them.
    fn start_collection(&mut self, mid: Mid, answer: Answer, budget: Duration) {
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        let island = self.island(mid).filter(|i| !i.peers.is_empty());
        let own = TreeEntry {
            node: self.me(),
            parent: g.parent.map(|p| p.id),
            member: g.member,
            responded: true,
            island: island.as_ref().and_then(|i| i.leader),
            fed: island.is_some_and(|i| i.fed),
        };
        let children: Vec<NodeInfo> = g.children.values().map(|c| c.info).collect();
        self.queries
            .start(&mut ctx!(self), mid, answer, budget, own, children);
    }
}

#[cfg(test)]
mod tests {
    //! The query part alone: events in through a [`Ctx`], its outbox read.
    use std::collections::VecDeque;
    use std::time::Instant;

    use super::*;
    use crate::config::Config;
    use crate::interface::Output;
    use crate::test_support::info;
    use crate::timer::TimerTable;

    const MID: Mid = Mid(0xabc);

    struct Bench {
        cfg: Config,
        out: VecDeque<Output>,
        timers: TimerTable,
        queries: Queries,
    }

    impl Bench {
        fn new() -> Self {
            Bench {
                cfg: Config::default(),
                out: VecDeque::new(),
                timers: TimerTable::default(),
                queries: Queries::default(),
            }
        }

        fn run(&mut self, f: impl FnOnce(&mut Queries, &mut Ctx)) -> Vec<Output> {
            let mut ctx = Ctx::new(
                Instant::now(),
                &self.cfg,
                info(1),
                &mut self.out,
                &mut self.timers,
            );
            f(&mut self.queries, &mut ctx);
            self.out.drain(..).collect()
        }
    }

    fn entry(id: u128, parent: u128) -> TreeEntry {
        TreeEntry {
            node: info(id),
            parent: Some(NodeId(parent)),
            member: true,
            responded: true,
            island: None,
            fed: false,
        }
    }

    #[test]
    fn a_reply_for_another_group_neither_answers_nor_ends_a_query() {
        let mut b = Bench::new();
        let sent = b.run(|q, ctx| q.ask(ctx, 7, MID, Some(info(2))));
        assert!(matches!(
            &sent[..],
            [Output::Send {
                msg: Message::TreeQuery(_),
                ..
            }]
        ));
        let forged = TreeReply {
            mid: Mid(0xdef),
            query: 7,
            result: Ok(vec![]),
        };
        assert!(b.run(|q, ctx| q.on_reply(ctx, forged)).is_empty());
        let real = TreeReply {
            mid: MID,
            query: 7,
            result: Ok(vec![entry(9, 1)]),
        };
        let told = b.run(|q, ctx| q.on_reply(ctx, real));
        assert!(matches!(
            &told[..],
            [Output::Event(Event::Tree { request: 7, result: Ok(e), .. })] if e.len() == 1
        ));
    }

    #[test]
    fn a_collection_answers_its_parent_once_every_child_did_and_only_children_count() {
        let mut b = Bench::new();
        let parent = info(5);
        let own = entry(1, 5);
        let sent = b.run(|q, ctx| {
            q.start(
                ctx,
                MID,
                Answer::Parent {
                    to: parent,
                    query: 3,
                },
                Duration::from_secs(1),
                own,
                vec![info(10), info(11)],
            )
        });
        assert_eq!(sent.len(), 2, "one collect per child");
        let id = 1;
        let stranger = Collected {
            mid: MID,
            query: id,
            entries: vec![entry(12, 1)],
        };
        assert!(b
            .run(|q, ctx| q.on_collected(ctx, info(12), stranger))
            .is_empty());
        for child in [10, 11] {
            let c = Collected {
                mid: MID,
                query: id,
                entries: vec![entry(child, 1)],
            };
            let out = b.run(|q, ctx| q.on_collected(ctx, info(child), c));
            if child == 10 {
                assert!(out.is_empty(), "still waiting for 11");
            } else {
                assert!(matches!(
                    &out[..],
                    [Output::Send { to, msg: Message::Collected(c) }]
                        if *to == parent && c.query == 3 && c.entries.len() == 3
                ));
            }
        }
    }
}
