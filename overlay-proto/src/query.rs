//! `overlay tree`: how the root learns its whole tree.
//!
//! A query is routed to the root like a publish. The root then asks each
//! child for its subtree ([`Message::Collect`]); each child asks its own
//! children with a smaller time budget, and answers its parent with its own
//! entry followed by what its children reported ([`Message::Collected`]). A
//! child that does not answer within the budget is listed as not responding,
//! so a stuck subtree delays the answer by at most the budget. The tree
//! travels as a flat list with parent links, never nested.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::Rng;

use crate::id::{Mid, NodeId};
use crate::interface::{Event, TreeError};
use crate::message::{Collect, Collected, TreeQuery, TreeReply};
use crate::message::{Message, NodeInfo, RejectReason, TreeEntry};
use crate::node::Node;
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

impl<R: Rng> Node<R> {
    pub(crate) fn query_tree(&mut self, request: u64, mid: Mid) {
        if self.groups.get(&mid).is_some_and(|g| g.is_root()) {
            let budget = self.cfg.tree_query_budget;
            self.start_collection(mid, Answer::Local { request }, budget);
            return;
        }
        if self.queries.len() >= self.cfg.max_collections {
            self.emit(Event::Tree {
                request,
                mid,
                result: Err(TreeError::Rejected(RejectReason::Overloaded)),
            });
            return;
        }
        match self.table.next_hop(mid.key(), &[]) {
            Some(next) => {
                let reply_to = self.me();
                self.queries.insert(request, mid);
                self.send(
                    next,
                    Message::TreeQuery(TreeQuery {
                        mid,
                        query: request,
                        reply_to,
                    }),
                );
                self.set_timer(self.cfg.tree_query_budget * 2, Timer::QueryTimeout(request));
            }
            None => self.emit(Event::Tree {
                request,
                mid,
                result: Err(TreeError::Rejected(RejectReason::UnknownGroup)),
            }),
        }
    }

    pub(crate) fn on_tree_query(&mut self, mid: Mid, query: u64, reply_to: NodeInfo) {
        if self.groups.get(&mid).is_some_and(|g| g.is_root()) {
            let budget = self.cfg.tree_query_budget;
            self.start_collection(
                mid,
                Answer::Remote {
                    to: reply_to,
                    query,
                },
                budget,
            );
        } else if let Some(next) = self.table.next_hop(mid.key(), &[]) {
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

    fn start_collection(&mut self, mid: Mid, answer: Answer, budget: Duration) {
        let Some(g) = self.groups.get(&mid) else {
            return;
        };
        let me = self.me();
        let island = self.island(mid).filter(|i| !i.peers.is_empty());
        let own = TreeEntry {
            node: me,
            parent: g.parent.map(|p| p.id),
            member: g.member,
            responded: true,
            island: island.as_ref().and_then(|i| i.leader),
            fed: island.is_some_and(|i| i.fed),
        };
        let children: Vec<NodeInfo> = g.children.values().map(|c| c.info).collect();
        let id = self.next_collection;
        self.next_collection += 1;
        let mut c = Collection {
            mid,
            answer,
            waiting: children.iter().map(|c| c.id).collect(),
            children: children.clone(),
            entries: vec![own],
        };
        if children.is_empty() || self.collections.len() >= self.cfg.max_collections {
            // Nothing to wait for, or too busy to wait: answer with what we
            // know, children listed as not responding.
            c.waiting.clear();
            self.list_silent_children(&mut c, &children);
            self.finish_collection(c);
            return;
        }
        let budget_ms = budget.as_millis().min(u32::MAX as u128) as u32;
        for child in &children {
            self.send(
                *child,
                Message::Collect(Collect {
                    mid,
                    query: id,
                    budget_ms,
                }),
            );
        }
        self.collections.insert(id, c);
        self.set_timer(budget, Timer::CollectTimeout(id));
    }

    fn list_silent_children(&self, c: &mut Collection, silent: &[NodeInfo]) {
        let me = self.me().id;
        for child in silent {
            c.entries.push(TreeEntry {
                node: *child,
                parent: Some(me),
                member: false,
                responded: false,
                island: None,
                fed: false,
            });
        }
    }

    pub(crate) fn on_collected(
        &mut self,
        from: NodeInfo,
        mid: Mid,
        query: u64,
        entries: Vec<TreeEntry>,
    ) {
        let max = self.cfg.max_tree_entries;
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
                    parent: Some(self.table.me().id),
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
                self.finish_collection(c);
            }
        }
    }

    pub(crate) fn on_collect_timeout(&mut self, id: u64) {
        let Some(mut c) = self.collections.remove(&id) else {
            return;
        };
        let silent: Vec<NodeInfo> = c
            .children
            .iter()
            .filter(|n| c.waiting.contains(&n.id))
            .copied()
            .collect();
        self.list_silent_children(&mut c, &silent);
        self.finish_collection(c);
    }

    fn finish_collection(&mut self, c: Collection) {
        let mid = c.mid;
        match c.answer {
            Answer::Local { request } => self.emit(Event::Tree {
                request,
                mid,
                result: Ok(c.entries),
            }),
            Answer::Remote { to, query } => {
                if to.id == self.me().id {
                    return;
                }
                self.send(
                    to,
                    Message::TreeReply(TreeReply {
                        mid,
                        query,
                        result: Ok(c.entries),
                    }),
                )
            }
            Answer::Parent { to, query } => self.send(
                to,
                Message::Collected(Collected {
                    mid,
                    query,
                    entries: c.entries,
                }),
            ),
        }
    }
}
