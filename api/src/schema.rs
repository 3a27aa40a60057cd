//! Schema helpers shared by the CRD types.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An object whose content the API server keeps verbatim. Used for upstream
/// fields Portico reads loosely (fault injection, mirrors) and for the pod
/// template, whose full schema would push the Notebook CRD past the size that
/// client-side `kubectl apply` can store in its last-applied annotation.
pub(crate) fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A string-keyed map of strings (labels, selectors, header values).
pub(crate) fn string_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": { "type": "string" }
    })
}
