//! A radix tree from path strings to the route entries that start (prefix)
//! or equal (exact) them. One walk down the tree along the request path
//! yields every candidate, so lookup cost follows the path's length, not the
//! number of routes.

/// `(route index, match entry index)`; `u32::MAX` as entry means "no conditions".
pub(super) type EntryRef = (u32, u32);

#[derive(Default, Debug)]
struct Node {
    /// Bytes on the edge into this node (lower-cased in a case-folding tree).
    label: Box<[u8]>,
    /// Entries whose prefix ends exactly here.
    prefix_entries: Vec<EntryRef>,
    /// Entries whose exact path ends exactly here.
    exact_entries: Vec<EntryRef>,
    /// Sorted by the first byte of their label.
    children: Vec<Node>,
}

/// A radix tree, case-sensitive or ASCII case-folding.
#[derive(Debug)]
pub(super) struct RadixTree {
    root: Node,
    fold_case: bool,
    empty: bool,
}

impl RadixTree {
    pub fn new(fold_case: bool) -> Self {
        Self { root: Node::default(), fold_case, empty: true }
    }

    pub fn is_empty(&self) -> bool {
        self.empty
    }

    pub fn insert_prefix(&mut self, key: &str, entry: EntryRef) {
        let key = self.fold(key);
        self.node_for(&key).prefix_entries.push(entry);
    }

    pub fn insert_exact(&mut self, key: &str, entry: EntryRef) {
        let key = self.fold(key);
        self.node_for(&key).exact_entries.push(entry);
    }

    /// Calls `found` with every entry whose key is a prefix of `path` (prefix
    /// entries) or equal to it (exact entries).
    pub fn candidates(&self, path: &[u8], mut found: impl FnMut(EntryRef)) {
        let mut node = &self.root;
        let mut rest = path;
        loop {
            node.prefix_entries.iter().copied().for_each(&mut found);
            if rest.is_empty() {
                node.exact_entries.iter().copied().for_each(&mut found);
                return;
            }
            let first = self.fold_byte(rest[0]);
            let Ok(index) = node.children.binary_search_by(|child| child.label[0].cmp(&first)) else {
                return;
            };
            let child = &node.children[index];
            let label = &child.label;
            if rest.len() < label.len() || !label.iter().zip(rest).all(|(l, r)| *l == self.fold_byte(*r)) {
                return;
            }
            rest = &rest[label.len()..];
            node = child;
        }
    }

    fn fold(&self, key: &str) -> Vec<u8> {
        if self.fold_case { key.as_bytes().to_ascii_lowercase() } else { key.as_bytes().to_vec() }
    }

    fn fold_byte(&self, byte: u8) -> u8 {
        if self.fold_case { byte.to_ascii_lowercase() } else { byte }
    }

    /// The node for `key`, splitting edges and adding nodes as needed.
    fn node_for(&mut self, key: &[u8]) -> &mut Node {
        self.empty = false;
        let mut node = &mut self.root;
        let mut rest = key;
        while !rest.is_empty() {
            let first = rest[0];
            let index = match node.children.binary_search_by(|child| child.label[0].cmp(&first)) {
                Ok(index) => index,
                Err(index) => {
                    node.children.insert(index, Node { label: rest.into(), ..Node::default() });
                    return &mut node.children[index];
                }
            };
            let common = node.children[index].label.iter().zip(rest).take_while(|(a, b)| a == b).count();
            if common < node.children[index].label.len() {
                // Split the edge: the existing child moves below a new node
                // that carries the shared part of the label.
                let child = &mut node.children[index];
                let tail: Box<[u8]> = child.label[common..].into();
                let head: Box<[u8]> = child.label[..common].into();
                let mut moved = std::mem::take(child);
                moved.label = tail;
                *child = Node { label: head, children: vec![moved], ..Node::default() };
            }
            rest = &rest[common..];
            node = &mut node.children[index];
        }
        node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(tree: &RadixTree, path: &str) -> Vec<EntryRef> {
        let mut found = Vec::new();
        tree.candidates(path.as_bytes(), |e| found.push(e));
        found.sort();
        found
    }

    #[test]
    fn finds_every_prefix_and_the_exact_key() {
        let mut tree = RadixTree::new(false);
        tree.insert_prefix("/", (0, 0));
        tree.insert_prefix("/notebook/a/b/", (1, 0));
        tree.insert_prefix("/notebook/a/bc/", (2, 0));
        tree.insert_exact("/notebook/a/b/", (3, 0));
        tree.insert_prefix("/notebook/", (4, 0));
        assert_eq!(collect(&tree, "/notebook/a/b/lab"), vec![(0, 0), (1, 0), (4, 0)]);
        assert_eq!(collect(&tree, "/notebook/a/b/"), vec![(0, 0), (1, 0), (3, 0), (4, 0)]);
        assert_eq!(collect(&tree, "/notebook/a/b"), vec![(0, 0), (4, 0)]);
        assert_eq!(collect(&tree, "/notebook/a/bc/x"), vec![(0, 0), (2, 0), (4, 0)]);
        assert_eq!(collect(&tree, "/other"), vec![(0, 0)]);
    }

    #[test]
    fn folds_case_when_asked() {
        let mut tree = RadixTree::new(true);
        tree.insert_prefix("/API/", (0, 0));
        assert_eq!(collect(&tree, "/api/x"), vec![(0, 0)]);
        assert_eq!(collect(&tree, "/Api/x"), vec![(0, 0)]);
        assert_eq!(collect(&tree, "/ap"), vec![]);
    }
}
