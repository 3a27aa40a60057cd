//! The live configuration: an atomically swapped snapshot of the matcher.
//!
//! A request loads the snapshot once and keeps that `Arc` until it ends, so
//! a change never alters the routes under an in-flight request or an open
//! websocket. Successive matchers share every piece a change did not touch
//! (structural sharing), so publishing one copies nothing of the routes;
//! what only an old snapshot still holds is freed when its last user ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use portico_routing::table::ListenerProtocol;
use portico_routing::{Diagnostic, Matcher, PathNormalization};
use tokio::sync::watch;

use crate::metrics::SeriesCache;

/// The ports a gateway binds at start and what each speaks: all a source
/// tells start-up (Pingora binds its ports before serving), never the whole
/// table (at 10,000 routes a materialized table is 13 MiB the gateway would
/// otherwise keep for its lifetime).
pub type Ports = std::collections::BTreeMap<u16, ListenerProtocol>;

/// One applied configuration.
pub struct Snapshot {
    /// Shared between snapshots that differ only in diagnostics.
    pub matcher: Arc<Matcher>,
    pub normalization: PathNormalization,
    /// Problems found in the inputs of this version (skipped objects, files).
    pub diagnostics: Vec<Diagnostic>,
    pub applied_at: SystemTime,
    /// Request metric series by route and outcome, resolved on first use
    /// (a new table starts afresh, so removed routes' handles go with it).
    pub series: SeriesCache,
}

impl Snapshot {
    pub fn new(matcher: Matcher, diagnostics: Vec<Diagnostic>) -> Self {
        let normalization = matcher.path_normalization().into();
        Self {
            matcher: Arc::new(matcher),
            normalization,
            diagnostics,
            applied_at: SystemTime::now(),
            series: SeriesCache::default(),
        }
    }

    pub fn version(&self) -> &str {
        self.matcher.version()
    }
}

/// Shared by the data plane, the config sources and the admin endpoints.
pub struct RouteState {
    current: ArcSwap<Snapshot>,
    ready: AtomicBool,
    /// Counts publications: requests held for a starting notebook wait on it.
    published: watch::Sender<u64>,
}

impl RouteState {
    /// Starts empty and not ready: `/healthz/ready` answers 503 until the
    /// first configuration is applied.
    pub fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::new(Matcher::default(), Vec::new())),
            ready: AtomicBool::new(false),
            published: watch::Sender::new(0),
        }
    }

    /// The snapshot a request should use from start to end.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot; in-flight requests keep the old one.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
        self.ready.store(true, Ordering::Release);
        self.published.send_modify(|count| *count += 1);
    }

    /// Changes with every [`Self::publish`] after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Replaces only the diagnostics (a reload whose table was rejected).
    pub fn set_diagnostics(&self, diagnostics: Vec<Diagnostic>) {
        let current = self.load();
        let snapshot = Snapshot {
            matcher: Arc::clone(&current.matcher),
            normalization: current.normalization,
            diagnostics,
            applied_at: current.applied_at,
            series: SeriesCache::default(),
        };
        self.current.store(Arc::new(snapshot));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

impl Default for RouteState {
    fn default() -> Self {
        Self::new()
    }
}
