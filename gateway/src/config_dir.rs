//! The folder configuration source: every `*.yaml`/`*.yml` below a
//! directory, read like `kubectl apply -f DIR -R`, watched for changes.
//!
//! A file that stops parsing keeps contributing its last good objects (and a
//! diagnostic says so), so a half-saved edit never takes routes down.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use notify::event::ModifyKind;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use portico_routing::table::PathNormalizationMode;
use portico_routing::{Diagnostic, GatewayIdentity, LastGood, NotebookSettings, ObjectRef, Resources, RouteTable};
use tokio::sync::mpsc;

use crate::apply::ConfigSink;

/// How long the folder must be quiet before a reload: editors and
/// `kubectl cp` write files in several steps, microseconds apart. A burst
/// split anyway costs one extra reload, and a half-written file is a bad
/// file: its last good version keeps serving until the next event.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// Reads, translates and applies a folder of YAML.
pub struct FolderSource {
    dir: PathBuf,
    identity: GatewayIdentity,
    settings: NotebookSettings,
    normalization: PathNormalizationMode,
    sink: OnceLock<Arc<ConfigSink>>,
    /// Last text of each file that parsed without error.
    last_good_files: Mutex<HashMap<PathBuf, String>>,
    /// Last version of each object that translated without error.
    last_good_objects: Mutex<LastGood>,
    generation: Mutex<u64>,
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
            identity,
            settings,
            normalization,
            sink: OnceLock::new(),
            last_good_files: Mutex::new(HashMap::new()),
            last_good_objects: Mutex::new(LastGood::default()),
            generation: Mutex::new(0),
        }
    }

    /// Connects the source to where its tables go; reloads before that only
    /// translate.
    pub fn attach(&self, sink: Arc<ConfigSink>) {
        let _ = self.sink.set(sink);
    }

    /// Reads and translates the folder without applying anything.
    pub fn translate_folder(&self) -> (RouteTable, Vec<Diagnostic>) {
        let (resources, mut diagnostics) = self.read();
        let (table, translated) = self
            .last_good_objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .translate(&resources, &self.identity);
        diagnostics.extend(translated);
        (table, diagnostics)
    }

    /// Reads the folder and applies the result. Returns whether routes changed.
    pub fn reload(&self) -> bool {
        let Some(sink) = self.sink.get() else {
            tracing::warn!("config folder reloaded before it was attached; ignored");
            return false;
        };
        let (table, diagnostics) = self.translate_folder();
        self.apply(sink, table, diagnostics)
    }

    /// Applies a table this source translated (start-up translates once to
    /// learn the listeners, then applies that same table).
    pub fn apply_translated(&self, table: RouteTable, diagnostics: Vec<Diagnostic>) -> bool {
        let Some(sink) = self.sink.get() else {
            tracing::warn!("config folder applied before it was attached; ignored");
            return false;
        };
        self.apply(sink, table, diagnostics)
    }

    fn apply(&self, sink: &ConfigSink, mut table: RouteTable, diagnostics: Vec<Diagnostic>) -> bool {
        let mut generation = self.generation.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The version names the table that serves: it only moves on a change.
        table.version = format!("folder-{}", *generation + 1);
        let changed = sink.apply(table, diagnostics);
        if changed {
            *generation += 1;
        }
        changed
    }

    fn read(&self) -> (Resources, Vec<Diagnostic>) {
        let mut resources = Resources {
            settings: self.settings.clone(),
            path_normalization: self.normalization,
            ..Resources::default()
        };
        let mut diagnostics = Vec::new();
        let mut files = Vec::new();
        if let Err(error) = collect_yaml_files(&self.dir, &mut files) {
            let object = ObjectRef::new("Folder", "", &self.dir.display().to_string());
            diagnostics.push(Diagnostic::error(&object, "", format!("cannot list: {error}")));
        }
        files.sort();
        let mut last_good = self.last_good_files.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        last_good.retain(|path, _| files.contains(path));
        for path in files {
            let source = path.display().to_string();
            let mut parsed = Resources::default();
            let (text, file_diagnostics) = match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let diagnostics = parsed.add_yaml(&text, &source);
                    (Some(text), diagnostics)
                }
                Err(error) => (
                    None,
                    vec![Diagnostic::error(&ObjectRef::new("File", "", &source), "", format!("cannot read: {error}"))],
                ),
            };
            let failed = file_diagnostics.iter().any(Diagnostic::is_error);
            diagnostics.extend(file_diagnostics);
            let objects = if failed {
                match last_good.get(&path) {
                    Some(previous) => {
                        let object = ObjectRef::new("File", "", &source);
                        diagnostics.push(Diagnostic::warning(
                            &object,
                            "",
                            "keeping the objects of its last good version",
                        ));
                        let mut objects = Resources::default();
                        objects.add_yaml(previous, &source);
                        objects
                    }
                    // Never read cleanly: apply what did parse.
                    None => parsed,
                }
            } else {
                // Kept as text, parsed again only if the file breaks: the
                // parsed objects of 10,000 notebooks are ten times the size.
                if let Some(text) = text {
                    last_good.insert(path.clone(), text);
                }
                parsed
            };
            Resources::merge(&mut resources, objects);
        }
        (resources, diagnostics)
    }

    /// Watches the folder and reloads after each burst of changes.
    async fn watch(&self, mut shutdown: ShutdownWatch) {
        let (events, mut changes) = mpsc::unbounded_channel::<()>();
        let handler = move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| changes_content(&e.kind)) {
                let _ = events.send(());
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
            tokio::select! {
                _ = shutdown.changed() => return,
                event = changes.recv(), if !polling => {
                    if event.is_none() { return; }
                    // Coalesce the burst.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changes.recv()).await {}
                }
                () = tokio::time::sleep(Duration::from_secs(1)), if polling => {}
            }
            self.reload();
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

/// `*.yaml`/`*.yml` below `dir`, skipping hidden entries (editor swap files,
/// and the `..data` indirection of ConfigMap volumes, which would otherwise
/// be read twice).
fn collect_yaml_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect_yaml_files(&path, files)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            files.push(path);
        }
    }
    Ok(())
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
