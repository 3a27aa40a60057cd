//! A sorted set in a `Vec`, for the translator's reverse indexes.
//!
//! Nearly every such set holds one element (the one EndpointSlice of a
//! notebook's Service, the one VirtualService that reads its ports): a
//! `BTreeSet` allocates a node of eleven slots for it (about 300 bytes for
//! `String`s, 530 for keys), where this allocates exactly one.

use std::borrow::Borrow;

/// A set of `T`, sorted, without duplicates.
#[derive(Clone, Debug)]
pub(super) struct SmallSet<T>(Vec<T>);

impl<T> Default for SmallSet<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Ord> SmallSet<T> {
    /// Adds `value`; false when it was there.
    pub fn insert(&mut self, value: T) -> bool {
        match self.0.binary_search(&value) {
            Ok(_) => false,
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, value);
                true
            }
        }
    }

    /// Removes `value`; false when it was not there.
    pub fn remove<Q: Ord + ?Sized>(&mut self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        match self.0.binary_search_by(|probe| probe.borrow().cmp(value)) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a, T> IntoIterator for &'a SmallSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::SmallSet;

    #[test]
    fn sorted_without_duplicates() {
        let mut set = SmallSet::default();
        assert!(set.insert("b".to_string()));
        assert!(set.insert("a".to_string()));
        assert!(!set.insert("b".to_string()));
        assert_eq!((&set).into_iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(set.remove("a"));
        assert!(!set.remove("a"));
        assert!(set.remove("b"));
        assert!(set.is_empty());
    }
}
