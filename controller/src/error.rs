//! Errors of a reconcile, by what failed.

/// Why a reconcile failed (sources boxed: `kube::Error` is large and
/// reconcile results are moved around a lot). Each variant is a metric label (see
/// [`Error::metric_label`]) and is retried with per-Notebook backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing (server-side apply) a derived object failed.
    #[error("applying {kind} {namespace}/{name}: {source}")]
    Apply {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// Writing the Notebook's status failed.
    #[error("updating the status of Notebook {namespace}/{name}: {source}")]
    Status {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// Reading an object failed.
    #[error("reading {kind} {namespace}/{name}: {source}")]
    Read {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// A derived object could not be serialized (a bug).
    #[error("serializing {kind} {namespace}/{name}: {source}")]
    Serialize {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    /// The caches the reconciler reads did not fill in time.
    #[error("the {0} cache is not ready")]
    CacheNotReady(&'static str),
}

impl Error {
    /// Short, bounded label for `portico_controller_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Apply { .. } => "apply",
            Error::Status { .. } => "status",
            Error::Read { .. } => "read",
            Error::Serialize { .. } => "serialize",
            Error::CacheNotReady(_) => "cache",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_object() {
        let error = Error::CacheNotReady("StatefulSet");
        assert_eq!(error.to_string(), "the StatefulSet cache is not ready");
        assert_eq!(error.metric_label(), "cache");
        let error = Error::Serialize {
            kind: "VirtualService",
            namespace: "team".to_string(),
            name: "notebook-team-a".to_string(),
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        };
        assert!(error.to_string().starts_with("serializing VirtualService team/notebook-team-a: "), "{error}");
    }
}
