//! Header operations of a route or destination, one pointer wide.

use serde::{Deserialize, Serialize};

use super::exact_vec;

/// `headers.{request,response}`. Applied as Envoy does: remove, then set, then add.
///
/// One pointer wide and allocation-free when empty, as it nearly always is:
/// every route and every destination carries two (4 x 72 bytes per
/// notebook route before). Reads and edits go through `Deref`/`DerefMut` to
/// [`HeaderLists`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "HeaderLists", into = "HeaderLists")]
pub struct HeaderOps(Option<Box<HeaderLists>>);

/// The operations of a [`HeaderOps`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderLists {
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub set: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub add: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub remove: Vec<String>,
}

/// What an empty [`HeaderOps`] reads as.
static NO_HEADER_OPS: HeaderLists = HeaderLists { set: Vec::new(), add: Vec::new(), remove: Vec::new() };

impl HeaderOps {
    pub fn new(set: Vec<(String, String)>, add: Vec<(String, String)>, remove: Vec<String>) -> Self {
        Self::from(HeaderLists { set, add, remove })
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

impl std::ops::Deref for HeaderOps {
    type Target = HeaderLists;

    fn deref(&self) -> &HeaderLists {
        self.0.as_deref().unwrap_or(&NO_HEADER_OPS)
    }
}

impl std::ops::DerefMut for HeaderOps {
    fn deref_mut(&mut self) -> &mut HeaderLists {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for HeaderOps {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for HeaderOps {}

impl From<HeaderLists> for HeaderOps {
    fn from(lists: HeaderLists) -> Self {
        let empty = lists.set.is_empty() && lists.add.is_empty() && lists.remove.is_empty();
        Self((!empty).then(|| Box::new(lists)))
    }
}

impl From<HeaderOps> for HeaderLists {
    fn from(ops: HeaderOps) -> Self {
        ops.0.map(|lists| *lists).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_ops_read_and_write_the_same_whether_empty_or_not() {
        let empty = HeaderOps::default();
        assert!(empty.is_empty() && empty.set.is_empty());
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
        assert_eq!(empty, HeaderOps::new(Vec::new(), Vec::new(), Vec::new()));

        let mut ops = HeaderOps::default();
        ops.set.push(("x-a".into(), "1".into()));
        ops.remove.push("x-b".into());
        let json = serde_json::to_string(&ops).unwrap();
        assert_eq!(json, r#"{"set":[["x-a","1"]],"remove":["x-b"]}"#);
        let decoded: HeaderOps = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded, ops);
        assert!(!decoded.is_empty());
        assert_eq!(serde_json::from_str::<HeaderOps>("{}").unwrap(), empty);
    }
}
