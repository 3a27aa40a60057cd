//! RE2-style regular expressions that match a whole value, as Istio's
//! `StringMatch.regex` does.

use std::fmt;
use std::sync::Arc;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Upper bound on a compiled pattern's size: a route table is untrusted input
/// (any namespace may create a VirtualService), so one object must not be
/// able to make the gateway build a huge automaton.
const SIZE_LIMIT: usize = 1 << 20;

/// A regular expression anchored at both ends. Equality and serialization use
/// the source text, so tables holding patterns compare and print as written.
///
/// One pointer wide: a pattern sits inline in every path and value
/// condition of every route (as an enum variant), while few routes have one.
#[derive(Clone)]
pub struct Pattern(Arc<Compiled>);

/// A pattern's source and its compiled form.
struct Compiled {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `source` for a full match. Rust's `regex` crate implements
    /// RE2's syntax and linear-time guarantee.
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$")).size_limit(SIZE_LIMIT).build()?;
        Ok(Self(Arc::new(Compiled { source: source.to_string(), regex })))
    }

    /// The pattern as written in the object.
    pub fn as_str(&self) -> &str {
        &self.0.source
    }

    /// Whether the whole `value` matches.
    pub fn is_full_match(&self, value: &str) -> bool {
        self.0.regex.is_match(value)
    }

    /// The anchored regex, for rewrites that need captures.
    pub fn regex(&self) -> &Regex {
        &self.0.regex
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.as_str())
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Pattern::new(&source).map_err(serde::de::Error::custom)
    }
}

/// An unanchored regular expression that finds matches inside a value
/// (`uriRegexRewrite`). Compares and serializes as its source; one pointer
/// wide, like [`Pattern`].
#[derive(Clone)]
pub struct SearchPattern(Arc<Compiled>);

impl SearchPattern {
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(source).size_limit(SIZE_LIMIT).build()?;
        Ok(Self(Arc::new(Compiled { source: source.to_string(), regex })))
    }

    pub fn as_str(&self) -> &str {
        &self.0.source
    }

    pub fn regex(&self) -> &Regex {
        &self.0.regex
    }
}

impl fmt::Debug for SearchPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SearchPattern({:?})", self.as_str())
    }
}

impl PartialEq for SearchPattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SearchPattern {}

impl Serialize for SearchPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SearchPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        SearchPattern::new(&source).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_whole_value_only() {
        let pattern = Pattern::new("/a|/b").unwrap();
        assert!(pattern.is_full_match("/a"));
        assert!(pattern.is_full_match("/b"));
        assert!(!pattern.is_full_match("/ab"));
        assert!(!pattern.is_full_match("x/a"));
    }

    #[test]
    fn rejects_invalid_syntax() {
        assert!(Pattern::new("(").is_err());
        // Backreferences are not RE2.
        assert!(Pattern::new(r"(a)\1").is_err());
    }
}
