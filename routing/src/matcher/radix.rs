//! A persistent radix tree from path strings to the route entries that start
//! (prefix) or equal (exact) them. One walk down the tree along the request
//! path yields every candidate, so lookup cost follows the path's length,
//! not the number of routes.
//!
//! Nodes live behind `Arc` and an edit copies only the nodes on the path to
//! the edited key (`Arc::make_mut`): a clone of the tree taken before the
//! edit (an older snapshot still serving requests) keeps seeing exactly what
//! it saw. Children are sorted by their first byte, so a node has at most 256
//! of them and copying one is bounded whatever the number of routes.
//! Removal prunes leaves left without entries and merges entry-less nodes
//! with a single child into it, so that the tree's size follows the routes
//! it holds, however many came and went.

use std::cmp::Ordering;
use std::sync::Arc;

use super::route_index::{EntryRef, SortKey};

/// Which list of a node an entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PathKind {
    /// The entry's path is a prefix of the request path.
    Prefix,
    /// The entry's path equals the request path.
    Exact,
}

#[derive(Clone, Debug, Default)]
struct Node {
    /// Bytes on the edge into this node (lower-cased in a case-folding tree).
    label: Box<[u8]>,
    /// Entries whose prefix ends exactly here, sorted by [`EntryRef::id`].
    prefix_entries: Vec<EntryRef>,
    /// Entries whose exact path ends exactly here, sorted by [`EntryRef::id`].
    exact_entries: Vec<EntryRef>,
    /// Sorted by the first byte of their label (labels are never empty).
    children: Vec<Arc<Node>>,
}

/// A radix tree, case-sensitive or ASCII case-folding.
#[derive(Clone, Debug, Default)]
pub(super) struct RadixTree {
    root: Arc<Node>,
    fold_case: bool,
}

impl RadixTree {
    pub fn new(fold_case: bool) -> Self {
        Self { root: Arc::default(), fold_case }
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_unused()
    }

    /// Adds `entry` under `key`; an entry with the same id is replaced.
    pub fn insert(&mut self, kind: PathKind, key: &str, entry: EntryRef) {
        let key = self.fold(key);
        let mut node = Arc::make_mut(&mut self.root);
        let mut rest: &[u8] = &key;
        while let Some(&first) = rest.first() {
            let index = match node.child_index(first) {
                Err(index) => {
                    node.children.insert(index, Arc::new(Node { label: rest.into(), ..Node::default() }));
                    rest = &[];
                    index
                }
                Ok(index) => {
                    let common = common_prefix(&node.children[index].label, rest);
                    if common < node.children[index].label.len() {
                        split(&mut node.children[index], common);
                    }
                    rest = &rest[common..];
                    index
                }
            };
            node = Arc::make_mut(&mut node.children[index]);
        }
        let entries = node.entries_mut(kind);
        match entries.binary_search_by(|e| e.cmp_id(entry.id())) {
            Ok(position) => entries[position] = entry,
            Err(position) => entries.insert(position, entry),
        }
    }

    /// Removes the entry `id` under `key`; returns whether it was there.
    pub fn remove(&mut self, kind: PathKind, key: &str, id: (&SortKey, u32)) -> bool {
        let key = self.fold(key);
        // Find it before copying anything: a miss leaves the tree shared.
        let Some(path) = self.root.path_to(&key) else { return false };
        let Ok(position) = self.node_at(&path).entries(kind).binary_search_by(|e| e.cmp_id(id)) else {
            return false;
        };
        self.node_at_mut(&path).entries_mut(kind).remove(position);
        // Only the node itself and its parent can break the shape
        // invariant (every node but the root has entries or two children).
        if let Some((&last, parent_path)) = path.split_last() {
            let parent = self.node_at_mut(parent_path);
            let child = &parent.children[last];
            if child.is_unused() {
                parent.children.remove(last);
            } else if child.has_no_entries() && child.children.len() == 1 {
                merge_with_only_child(&mut parent.children[last]);
            }
            if let Some((&parent_last, grand_path)) = parent_path.split_last() {
                let parent = self.node_at(parent_path);
                if parent.has_no_entries() && parent.children.len() == 1 {
                    merge_with_only_child(&mut self.node_at_mut(grand_path).children[parent_last]);
                }
            }
        }
        true
    }

    /// Calls `found` with every entry whose key is a prefix of `path` (prefix
    /// entries) or equal to it (exact entries).
    pub fn candidates<'a>(&'a self, path: &[u8], mut found: impl FnMut(&'a EntryRef)) {
        let mut node: &'a Node = &self.root;
        let mut rest = path;
        loop {
            node.prefix_entries.iter().for_each(&mut found);
            let Some(&first) = rest.first() else {
                node.exact_entries.iter().for_each(&mut found);
                return;
            };
            let Ok(index) = node.child_index(self.fold_byte(first)) else { return };
            let child = &node.children[index];
            let label = &child.label;
            if rest.len() < label.len() || !label.iter().zip(rest).all(|(l, r)| *l == self.fold_byte(*r)) {
                return;
            }
            rest = &rest[label.len()..];
            node = child;
        }
    }

    /// Number of nodes, the root included.
    #[cfg(test)]
    pub fn node_count(&self) -> usize {
        fn count(node: &Node) -> usize {
            1 + node.children.iter().map(|c| count(c)).sum::<usize>()
        }
        count(&self.root)
    }

    fn fold(&self, key: &str) -> Vec<u8> {
        if self.fold_case { key.as_bytes().to_ascii_lowercase() } else { key.as_bytes().to_vec() }
    }

    fn fold_byte(&self, byte: u8) -> u8 {
        if self.fold_case { byte.to_ascii_lowercase() } else { byte }
    }

    fn node_at(&self, path: &[usize]) -> &Node {
        path.iter().fold(&*self.root, |node, &index| &node.children[index])
    }

    /// The node at `path`, made unique (copied if shared) along the way.
    fn node_at_mut(&mut self, path: &[usize]) -> &mut Node {
        let mut node = Arc::make_mut(&mut self.root);
        for &index in path {
            node = Arc::make_mut(&mut node.children[index]);
        }
        node
    }
}

impl Node {
    fn child_index(&self, first: u8) -> Result<usize, usize> {
        self.children.binary_search_by(|child| child.label.first().copied().unwrap_or(0).cmp(&first))
    }

    fn entries(&self, kind: PathKind) -> &Vec<EntryRef> {
        match kind {
            PathKind::Prefix => &self.prefix_entries,
            PathKind::Exact => &self.exact_entries,
        }
    }

    fn entries_mut(&mut self, kind: PathKind) -> &mut Vec<EntryRef> {
        match kind {
            PathKind::Prefix => &mut self.prefix_entries,
            PathKind::Exact => &mut self.exact_entries,
        }
    }

    fn has_no_entries(&self) -> bool {
        self.prefix_entries.is_empty() && self.exact_entries.is_empty()
    }

    fn is_unused(&self) -> bool {
        self.has_no_entries() && self.children.is_empty()
    }

    /// Child indices from this node to the node whose full key is `key`.
    fn path_to(&self, key: &[u8]) -> Option<Vec<usize>> {
        let mut path = Vec::new();
        let mut node = self;
        let mut rest = key;
        while let Some(&first) = rest.first() {
            let index = node.child_index(first).ok()?;
            let child = &node.children[index];
            rest = rest.strip_prefix(&*child.label)?;
            path.push(index);
            node = child;
        }
        Some(path)
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Splits the edge into `slot` after `at` bytes: the node moves below a new
/// entry-less node that carries the shared head of the label.
fn split(slot: &mut Arc<Node>, at: usize) {
    let head = Node { label: slot.label[..at].into(), ..Node::default() };
    let mut moved = Arc::unwrap_or_clone(std::mem::replace(slot, Arc::new(head)));
    moved.label = moved.label[at..].into();
    Arc::make_mut(slot).children.push(Arc::new(moved));
}

/// Replaces an entry-less node with its only child, labels joined.
fn merge_with_only_child(slot: &mut Arc<Node>) {
    let node = Arc::make_mut(slot);
    let Some(child) = node.children.pop() else { return };
    let child = Arc::unwrap_or_clone(child);
    let mut label = std::mem::take(&mut node.label).into_vec();
    label.extend_from_slice(&child.label);
    *node = Node { label: label.into(), ..child };
}

impl EntryRef {
    fn cmp_id(&self, (key, index): (&SortKey, u32)) -> Ordering {
        self.route.key.cmp(key).then(self.index.cmp(&index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::route_index::test_entry;

    fn collect(tree: &RadixTree, path: &str) -> Vec<(String, u32)> {
        let mut found = Vec::new();
        tree.candidates(path.as_bytes(), |e| found.push((e.route.key.name.to_string(), e.index)));
        found.sort();
        found
    }

    fn insert(tree: &mut RadixTree, kind: PathKind, key: &str, route: &str) {
        tree.insert(kind, key, test_entry(route, 0));
    }

    fn names(items: &[&str]) -> Vec<(String, u32)> {
        items.iter().map(|n| (n.to_string(), 0)).collect()
    }

    #[test]
    fn finds_every_prefix_and_the_exact_key() {
        let mut tree = RadixTree::new(false);
        insert(&mut tree, PathKind::Prefix, "/", "r0");
        insert(&mut tree, PathKind::Prefix, "/notebook/a/b/", "r1");
        insert(&mut tree, PathKind::Prefix, "/notebook/a/bc/", "r2");
        insert(&mut tree, PathKind::Exact, "/notebook/a/b/", "r3");
        insert(&mut tree, PathKind::Prefix, "/notebook/", "r4");
        assert_eq!(collect(&tree, "/notebook/a/b/lab"), names(&["r0", "r1", "r4"]));
        assert_eq!(collect(&tree, "/notebook/a/b/"), names(&["r0", "r1", "r3", "r4"]));
        assert_eq!(collect(&tree, "/notebook/a/b"), names(&["r0", "r4"]));
        assert_eq!(collect(&tree, "/notebook/a/bc/x"), names(&["r0", "r2", "r4"]));
        assert_eq!(collect(&tree, "/other"), names(&["r0"]));
    }

    #[test]
    fn folds_case_when_asked() {
        let mut tree = RadixTree::new(true);
        insert(&mut tree, PathKind::Prefix, "/API/", "r0");
        assert_eq!(collect(&tree, "/api/x"), names(&["r0"]));
        assert_eq!(collect(&tree, "/Api/x"), names(&["r0"]));
        assert_eq!(collect(&tree, "/ap"), names(&[]));
    }

    #[test]
    fn an_edit_never_shows_in_an_older_clone() {
        let mut tree = RadixTree::new(false);
        insert(&mut tree, PathKind::Prefix, "/notebook/a/", "a");
        let before = tree.clone();
        insert(&mut tree, PathKind::Prefix, "/notebook/b/", "b");
        assert!(tree.remove(PathKind::Prefix, "/notebook/a/", (&test_entry("a", 0).route.key, 0)));
        assert_eq!(collect(&before, "/notebook/a/x"), names(&["a"]));
        assert_eq!(collect(&before, "/notebook/b/x"), names(&[]));
        assert_eq!(collect(&tree, "/notebook/a/x"), names(&[]));
        assert_eq!(collect(&tree, "/notebook/b/x"), names(&["b"]));
    }

    #[test]
    fn removing_everything_leaves_only_the_root() {
        let mut tree = RadixTree::new(false);
        let keys: Vec<String> =
            (0..10_000).map(|i| format!("/notebook/kubeflow-user-{:03}/nb-{i:05}/", i % 100)).collect();
        for (i, key) in keys.iter().enumerate() {
            insert(&mut tree, PathKind::Prefix, key, &format!("r{i}"));
        }
        insert(&mut tree, PathKind::Exact, "/notebook/", "exact");
        assert!(tree.node_count() > 10_000);
        let probe = "/notebook/kubeflow-user-042/nb-00042/lab";
        assert_eq!(collect(&tree, probe), names(&["r42"]));
        for (i, key) in keys.iter().enumerate() {
            let entry = test_entry(&format!("r{i}"), 0);
            assert!(tree.remove(PathKind::Prefix, key, (&entry.route.key, 0)), "{key}");
            assert!(!tree.remove(PathKind::Prefix, key, (&entry.route.key, 0)), "{key} twice");
        }
        assert_eq!(tree.node_count(), 2, "the root and /notebook/");
        assert!(tree.remove(PathKind::Exact, "/notebook/", (&test_entry("exact", 0).route.key, 0)));
        assert_eq!(tree.node_count(), 1);
        assert!(tree.is_empty());
    }
}
