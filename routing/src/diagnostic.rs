//! Diagnostics: what translation skipped, and exactly why.
//!
//! A diagnostic names the object (kind, namespace, name), the field as a JSON
//! path (`spec.http[0].match[1].uri.regex`) and the reason, so that an
//! operator can fix the object without reading Portico's code.

use std::fmt;

use crate::incremental::Name;
use serde::{Deserialize, Serialize};

/// A reference to a Kubernetes object. Every route keeps one (its
/// provenance): the names are held inline up to 24 bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: Name,
    pub namespace: Name,
    pub name: Name,
}

impl ObjectRef {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self { kind: Name::from(kind), namespace: Name::from(namespace), name: Name::from(name) }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object, or the named part of it, was not applied.
    Error,
    /// Applied, but something in it is ignored or suspicious.
    Warning,
}

/// One problem found while translating.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub object: ObjectRef,
    /// JSON path of the offending field, e.g. `spec.http[0].match[0].uri.regex`.
    pub field: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(object: &ObjectRef, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Error, object: object.clone(), field: field.into(), message: message.into() }
    }

    pub fn warning(object: &ObjectRef, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, object: object.clone(), field: field.into(), message: message.into() }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.field.is_empty() {
            // About the whole object.
            write!(f, "{severity}: {}: {}", self.object, self.message)
        } else {
            write!(f, "{severity}: {}: {}: {}", self.object, self.field, self.message)
        }
    }
}
