//! The folder configuration source: every `*.yaml`/`*.yml` below a
//! directory, read like `kubectl apply -f DIR -R`, watched for changes.
//!
//! A file that stops parsing keeps contributing its last good objects (and a
//! diagnostic says so), so a half-saved edit never takes routes down.

mod files;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use notify::event::ModifyKind;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use portico_routing::table::PathNormalizationMode;
use portico_routing::{Diagnostic, GatewayIdentity, NotebookSettings};
use tokio::sync::mpsc;

use self::files::FolderState;
use crate::apply::ConfigSink;
use crate::state::Ports;

/// How long the folder must be quiet before a reload: editors and
/// `kubectl cp` write files in several steps, microseconds apart. A burst
/// split anyway costs one extra reload, and a half-written file is a bad
/// file: its last good version keeps serving until the next event.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// Reads, translates and applies a folder of YAML.
pub struct FolderSource {
    dir: PathBuf,
    sink: OnceLock<Arc<ConfigSink>>,
    state: Mutex<FolderState>,
    generation: Mutex<u64>,
}

/// What the watcher saw: the paths of a burst, or "read everything".
enum Reload {
    Paths(BTreeSet<PathBuf>),
    Everything,
}

impl FolderSource {
    pub fn new(
        dir: PathBuf,
        identity: GatewayIdentity,
        settings: NotebookSettings,
        normalization: PathNormalizationMode,
    ) -> Self {
        Self {
            dir,
            sink: OnceLock::new(),
            state: Mutex::new(FolderState::new(identity, settings, normalization)),
            generation: Mutex::new(0),
        }
    }

    /// Connects the source to where its tables go; reloads before that only
    /// translate.
    pub fn attach(&self, sink: Arc<ConfigSink>) {
        let _ = self.sink.set(sink);
    }

    /// Reads and translates the folder without applying anything (start-up:
    /// its listeners decide which ports get bound).
    pub fn translate_folder(&self) -> (Ports, Vec<Diagnostic>) {
        let mut state = self.lock();
        state.rescan(&self.dir);
        (state.ports(), state.diagnostics())
    }

    /// Reads the whole folder again and applies what changed. Returns
    /// whether routes changed.
    pub fn reload(&self) -> bool {
        self.reload_with(Reload::Everything)
    }

    fn reload_with(&self, reload: Reload) -> bool {
        let Some(sink) = self.sink.get() else {
            tracing::warn!("config folder reloaded before it was attached; ignored");
            return false;
        };
        let started = std::time::Instant::now();
        let (delta, diagnostics) = {
            let mut state = self.lock();
            let reread = match &reload {
                Reload::Paths(paths) => state.reread(&self.dir, paths),
                Reload::Everything => false,
            };
            if !reread {
                state.rescan(&self.dir);
            }
            (state.take_delta(), state.diagnostics())
        };
        let pieces = delta.len();
        let mut generation = self.generation.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The version names the table that serves: it only moves on a change.
        let version = format!("folder-{}", *generation + 1);
        let changed = sink.apply_delta(version, delta, diagnostics);
        if changed {
            *generation += 1;
        }
        tracing::debug!(pieces, changed, elapsed_us = started.elapsed().as_micros() as u64, "config folder reloaded");
        changed
    }

    /// Applies what [`Self::translate_folder`] read, as one delta onto the
    /// empty matcher: the matcher shares the translator's routes instead of
    /// holding copies.
    pub fn apply_translated(&self, diagnostics: Vec<Diagnostic>) -> bool {
        let Some(sink) = self.sink.get() else {
            tracing::warn!("config folder applied before it was attached; ignored");
            return false;
        };
        let delta = {
            let mut state = self.lock();
            // What the full state holds is applied now: no delta is owed for it.
            state.take_delta();
            state.full_state()
        };
        let mut generation = self.generation.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = sink.apply_delta(format!("folder-{}", *generation + 1), delta, diagnostics);
        if changed {
            *generation += 1;
        }
        // The start-up read's intermediates (parsed documents, the table
        // that chose the ports) are free now.
        crate::heap::release_free_memory();
        changed
    }

    fn lock(&self) -> MutexGuard<'_, FolderState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Watches the folder and reloads after each burst of changes.
    async fn watch(&self, mut shutdown: ShutdownWatch) {
        let (events, mut changes) = mpsc::unbounded_channel::<Vec<PathBuf>>();
        let handler = move |event: notify::Result<notify::Event>| match event {
            Ok(event) if changes_content(&event.kind) => {
                let _ = events.send(event.paths);
            }
            Ok(_) => {}
            // A lost event (queue overflow): read everything.
            Err(_) => {
                let _ = events.send(Vec::new());
            }
        };
        let mut watcher: Option<RecommendedWatcher> = match notify::recommended_watcher(handler) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the config folder; polling every second instead");
                None
            }
        };
        if let Some(w) = watcher.as_mut()
            && let Err(error) = w.watch(&self.dir, RecursiveMode::Recursive)
        {
            tracing::warn!(%error, dir = %self.dir.display(), "cannot watch the config folder; polling every second instead");
            watcher = None;
        }
        let polling = watcher.is_none();
        // Changes made between the first load and the watch taking effect
        // raised no event: read the folder once more now that it is watched.
        self.reload();
        loop {
            let reload = tokio::select! {
                _ = shutdown.changed() => return,
                event = changes.recv(), if !polling => {
                    let Some(paths) = event else { return };
                    // Coalesce the burst.
                    let mut burst = Some(BTreeSet::new());
                    let mut add = |paths: Vec<PathBuf>| match (&mut burst, paths.is_empty()) {
                        (Some(set), false) => set.extend(paths),
                        _ => burst = None,
                    };
                    add(paths);
                    while let Ok(Some(paths)) = tokio::time::timeout(DEBOUNCE, changes.recv()).await {
                        add(paths);
                    }
                    burst.map_or(Reload::Everything, Reload::Paths)
                }
                () = tokio::time::sleep(Duration::from_secs(1)), if polling => Reload::Everything,
            };
            self.reload_with(reload);
        }
    }
}

/// Whether an event can change what the folder holds. Reading the files
/// raises access (and on some mounts metadata) events: reacting to those
/// made every reload trigger the next one.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other => true,
    }
}

/// Runs the watcher as a Pingora background service.
pub struct FolderWatchService(pub Arc<FolderSource>);

#[async_trait]
impl BackgroundService for FolderWatchService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.watch(shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, CreateKind, DataChange, MetadataKind, RemoveKind};

    use super::*;

    #[test]
    fn reading_the_folder_is_not_a_change() {
        assert!(!changes_content(&EventKind::Access(AccessKind::Any)));
        assert!(!changes_content(&EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))));
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Data(DataChange::Content))));
        assert!(changes_content(&EventKind::Remove(RemoveKind::File)));
    }
}
