//! A map whose changes are collected between two reads: what a batch of
//! input changes did to the pieces of a table, net of changes that undid
//! each other (a route removed and put back the same is no change).

use std::collections::{BTreeMap, HashMap};

/// Current pieces by name, and the value each touched piece had before the
/// batch.
#[derive(Debug)]
pub struct Tracked<T> {
    current: HashMap<String, T>,
    before: HashMap<String, Option<T>>,
}

impl<T> Default for Tracked<T> {
    fn default() -> Self {
        Self { current: HashMap::new(), before: HashMap::new() }
    }
}

impl<T: Clone + PartialEq> Tracked<T> {
    /// Sets (`Some`) or removes (`None`) the piece `name`.
    pub fn set(&mut self, name: &str, value: Option<T>) {
        let previous = match value {
            Some(value) => self.current.insert(name.to_string(), value),
            None => self.current.remove(name),
        };
        if !self.before.contains_key(name) {
            self.before.insert(name.to_string(), previous);
        }
    }

    pub fn get(&self, name: &str) -> Option<&T> {
        self.current.get(name)
    }

    /// The net changes since the last call, by name.
    pub fn take(&mut self) -> BTreeMap<String, Option<T>> {
        let mut changes = BTreeMap::new();
        // Taken, not drained: a start-up batch touches every piece, and a
        // drained map would keep that capacity (1.3 MB at 10,000 routes).
        for (name, before) in std::mem::take(&mut self.before) {
            let now = self.current.get(&name);
            if now != before.as_ref() {
                changes.insert(name, now.cloned());
            }
        }
        changes
    }

    /// Every current piece.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.current.iter()
    }

    pub fn len(&self) -> usize {
        self.current.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_that_undo_each_other_are_no_change() {
        let mut tracked = Tracked::default();
        tracked.set("a", Some(1));
        tracked.set("b", Some(2));
        assert_eq!(tracked.take().len(), 2);
        tracked.set("a", None);
        tracked.set("a", Some(1));
        tracked.set("b", Some(3));
        tracked.set("c", Some(4));
        tracked.set("c", None);
        assert_eq!(tracked.take(), BTreeMap::from([("b".to_string(), Some(3))]));
        assert_eq!(tracked.take(), BTreeMap::new());
    }
}
