//! Istio's `StringMatch`: one of `exact`, `prefix`, `regex`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A string condition. Upstream it is a `oneof`; we keep all three fields so
/// that an object setting two of them can be reported precisely instead of
/// silently picking one.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 syntax, matched against the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatch {
    /// `{ exact: value }`.
    pub fn exact(value: impl Into<String>) -> Self {
        Self { exact: Some(value.into()), ..Self::default() }
    }

    /// `{ prefix: value }`.
    pub fn prefix(value: impl Into<String>) -> Self {
        Self { prefix: Some(value.into()), ..Self::default() }
    }

    /// `{ regex: value }`.
    pub fn regex(value: impl Into<String>) -> Self {
        Self { regex: Some(value.into()), ..Self::default() }
    }
}
