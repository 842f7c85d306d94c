//! A group's tree for people and programs.
//!
//! The root reports its tree as a flat list of entries with parent links
//! ([`overlay_proto::TreeEntry`]). This module nests it, printing it as an
//! indented text tree or as nested JSON objects, and measures it.

use std::collections::{HashMap, HashSet};

use overlay_proto::{NodeId, TreeEntry};
use serde::Serialize;

/// One node of a nested tree.
#[derive(Debug, Clone, Serialize)]
pub struct TreeNode {
    /// The node's id.
    pub id: String,
    /// Its QUIC address.
    pub addr: String,
    /// Whether its application is a member.
    pub member: bool,
    /// `root`, `forwarder` or `member`.
    pub role: &'static str,
    /// Whether it answered the root's query in time.
    pub responded: bool,
    /// The leader of its LAN island, if it is in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub island_leader: Option<String>,
    /// Whether it takes the messages from its island's leader.
    pub fed_by_lan: bool,
    /// Its children.
    pub children: Vec<TreeNode>,
}

/// Nests a flat report whose first entry is the root. Entries whose parent
/// is not in the report, and repeated entries, are left out.
pub fn nest(entries: &[TreeEntry]) -> Option<TreeNode> {
    let root = entries.first()?;
    let mut by_parent: HashMap<NodeId, Vec<&TreeEntry>> = HashMap::new();
    for e in &entries[1..] {
        if let Some(p) = e.parent {
            by_parent.entry(p).or_default().push(e);
        }
    }
    let mut seen = HashSet::new();
    Some(build(root, &by_parent, &mut seen, true))
}

fn build(
    e: &TreeEntry,
    by_parent: &HashMap<NodeId, Vec<&TreeEntry>>,
    seen: &mut HashSet<NodeId>,
    is_root: bool,
) -> TreeNode {
    seen.insert(e.node.id);
    let mut children = Vec::new();
    for c in by_parent
        .get(&e.node.id)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if !seen.contains(&c.node.id) {
            children.push(build(c, by_parent, seen, false));
        }
    }
    TreeNode {
        id: e.node.id.to_string(),
        addr: e.node.addr.to_string(),
        member: e.member,
        role: if is_root {
            "root"
        } else if e.member {
            "member"
        } else {
            "forwarder"
        },
        responded: e.responded,
        island_leader: e.island.map(|l| l.to_string()),
        fed_by_lan: e.fed,
        children,
    }
}

impl TreeNode {
    /// Depth of the deepest node (a lone root has depth 0).
    pub fn depth(&self) -> usize {
        self.children
            .iter()
            .map(|c| c.depth() + 1)
            .max()
            .unwrap_or(0)
    }

    /// Most children of any node.
    pub fn max_children(&self) -> usize {
        self.children
            .iter()
            .map(TreeNode::max_children)
            .max()
            .unwrap_or(0)
            .max(self.children.len())
    }

    /// Every node, depth first.
    pub fn all(&self) -> Vec<&TreeNode> {
        let mut v = vec![self];
        for c in &self.children {
            v.extend(c.all());
        }
        v
    }

    /// The tree as indented text, one node per line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out, "", "");
        out
    }

    fn render_into(&self, out: &mut String, first: &str, rest: &str) {
        let mut role = self.role.to_string();
        if self.role == "root" && self.member {
            role.push_str(", member");
        }
        if !self.responded {
            role.push_str(", not responding");
        }
        if let Some(l) = &self.island_leader {
            if *l == self.id {
                role.push_str(", leads its LAN island");
            } else {
                let fed = if self.fed_by_lan { "fed by" } else { "in" };
                role.push_str(&format!(", {fed} the LAN island of {}", &l[..8]));
            }
        }
        out.push_str(&format!("{first}{} {} ({role})\n", &self.id, self.addr));
        for (i, c) in self.children.iter().enumerate() {
            let last = i + 1 == self.children.len();
            let (f, r) = if last {
                ("└── ", "    ")
            } else {
                ("├── ", "│   ")
            };
            c.render_into(out, &format!("{rest}{f}"), &format!("{rest}{r}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_proto::NodeInfo;

    fn e(id: u128, parent: Option<u128>, member: bool) -> TreeEntry {
        TreeEntry {
            node: NodeInfo {
                id: NodeId(id),
                addr: "127.0.0.1:1".parse().unwrap(),
            },
            parent: parent.map(NodeId),
            member,
            responded: true,
            island: None,
            fed: false,
        }
    }

    #[test]
    fn nests_and_measures() {
        let t = nest(&[
            e(1, None, true),
            e(2, Some(1), false),
            e(3, Some(2), true),
            e(4, Some(1), true),
        ])
        .unwrap();
        assert_eq!(t.depth(), 2);
        assert_eq!(t.max_children(), 2);
        assert_eq!(t.all().len(), 4);
        assert_eq!(t.children[0].role, "forwarder");
        let text = t.render();
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("└── "));
    }

    #[test]
    fn islands_show_their_leader_and_who_it_feeds() {
        let leader = 0x2000_0000_0000_0000_0000_0000_0000_0000;
        let mut a = e(leader, Some(1), true);
        a.island = Some(NodeId(leader));
        let mut b = e(3, Some(1), true);
        b.island = Some(NodeId(leader));
        b.fed = true;
        let t = nest(&[e(1, None, true), a, b]).unwrap();
        let text = t.render();
        assert!(text.contains("leads its LAN island"), "{text}");
        assert!(text.contains("fed by the LAN island of 20000000"), "{text}");
        assert!(t.children[1].fed_by_lan);
    }

    #[test]
    fn cycles_and_orphans_do_not_hang() {
        let t = nest(&[e(1, None, true), e(2, Some(3), true), e(3, Some(2), true)]).unwrap();
        assert_eq!(t.all().len(), 1);
    }
}
