//! What the folder holds, file by file, and the translator it feeds.
//!
//! A changed file re-translates only its own objects: the file is parsed
//! again, its objects are compared with what it held before, and only the
//! added, changed and removed ones reach the [`IncrementalTranslator`]. An
//! object defined in several files is taken from the first in path order
//! (kubectl would apply the last; either way it is reported as a conflict).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use portico_api::istio::MeshConfig;
use portico_routing::incremental::{Name, Object, ObjectKind, take_objects};
use portico_routing::parts::TableDelta;
use portico_routing::table::PathNormalizationMode;
use portico_routing::{Diagnostic, GatewayIdentity, IncrementalTranslator, NotebookSettings, ObjectRef, Resources};

/// `(kind, namespace, name)`: names inline, no allocation for most.
type ObjectId = (ObjectKind, Name, Name);

/// One file's last reading.
#[derive(Default)]
struct FileState {
    /// Hash of the text last read: an unchanged file is not parsed again.
    read_hash: u64,
    /// Whether a version of the file parsed without error: the objects it
    /// defines now are then that version's, and they stay when it breaks.
    read_cleanly: bool,
    /// The objects it defines, sorted (a `BTreeSet` of them was a third
    /// larger, 30,000 of them for 10,000 notebooks).
    objects: Box<[ObjectId]>,
    /// Mesh settings the file holds: ConfigMap `istio-system/istio`'s mesh
    /// config, and Namespaces labelled for the mesh.
    mesh_config: Option<MeshConfig>,
    meshed_namespaces: BTreeSet<String>,
    diagnostics: Vec<Diagnostic>,
}

/// The folder's files, their objects and the translation of them all.
pub struct FolderState {
    translator: IncrementalTranslator,
    files: BTreeMap<PathBuf, FileState>,
    /// The objects defined in more than one file: each definition, by file
    /// in path order; the first serves. An object defined once (nearly
    /// all) is kept only by its file's `objects` and the translator.
    conflicts: HashMap<ObjectId, Vec<(PathBuf, Object)>>,
    listing: Option<Diagnostic>,
}

impl FolderState {
    pub fn new(identity: GatewayIdentity, settings: NotebookSettings, normalization: PathNormalizationMode) -> Self {
        // Folder mode sees no pods; a bad edit keeps the last good version.
        let translator = IncrementalTranslator::new(identity, settings, normalization, false, true);
        Self { translator, files: BTreeMap::new(), conflicts: HashMap::new(), listing: None }
    }

    /// Reads every file below `dir` (those whose text is unchanged cost a
    /// read and a hash) and forgets files that are gone.
    pub fn rescan(&mut self, dir: &Path) {
        let mut found = Vec::new();
        self.listing = match collect_yaml_files(dir, &mut found) {
            Ok(()) => None,
            Err(error) => {
                let object = ObjectRef::new("Folder", "", &dir.display().to_string());
                Some(Diagnostic::error(&object, "", format!("cannot list: {error}")))
            }
        };
        found.sort();
        let gone: Vec<PathBuf> = self.files.keys().filter(|path| found.binary_search(path).is_err()).cloned().collect();
        for path in gone {
            self.forget(&path);
        }
        for path in found {
            self.read(&path);
        }
    }

    /// Reads the files at `paths` again (events named them). Returns false
    /// when a path is not a plain YAML file of the folder (a directory, a
    /// rename, a ConfigMap volume's swap): the caller then rescans.
    pub fn reread(&mut self, dir: &Path, paths: &BTreeSet<PathBuf>) -> bool {
        if paths.iter().any(|path| hidden_below(dir, path) || path.is_dir()) {
            return false;
        }
        // Other files (an editor's or a writer's temporary file) are not
        // part of the folder.
        for path in paths.iter().filter(|path| is_yaml(path)) {
            if path.exists() { self.read(path) } else { self.forget(path) }
        }
        true
    }

    /// The changes since the last call.
    pub fn take_delta(&mut self) -> TableDelta {
        self.translator.take_delta()
    }

    /// Every piece, sharing the translator's `Arc`s (start-up: the matcher
    /// then holds each route once, not a copy of it).
    pub fn full_state(&self) -> TableDelta {
        self.translator.full_state()
    }

    /// The whole table (tests).
    #[cfg(test)]
    pub fn table(&self) -> portico_routing::RouteTable {
        self.translator.table()
    }

    /// The listeners' ports (start-up: they decide what gets bound).
    pub fn ports(&self) -> crate::state::Ports {
        self.translator.listeners().map(|listener| (listener.port, listener.protocol)).collect()
    }

    /// Files' problems, then translation's.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> = self.listing.iter().cloned().collect();
        all.extend(self.files.values().flat_map(|f| f.diagnostics.iter().cloned()));
        all.extend(self.translator.diagnostics());
        all
    }

    fn read(&mut self, path: &Path) {
        let source = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return self.forget(path),
            Err(error) => {
                let state = self.files.entry(path.to_path_buf()).or_default();
                state.read_hash = 0;
                state.diagnostics =
                    vec![Diagnostic::error(&ObjectRef::new("File", "", &source), "", format!("cannot read: {error}"))];
                return;
            }
        };
        let hash = hash_of(&text);
        if self.files.get(path).is_some_and(|state| state.read_hash == hash) {
            return;
        }
        // Each document's objects become their routing views as soon as it
        // is parsed: a big file is never held as whole objects (the peak),
        // and what is kept is not scattered among freed objects.
        let mut parsed = Resources::default();
        let mut objects_by_id: BTreeMap<ObjectId, Object> = BTreeMap::new();
        let mut diagnostics = parsed.add_yaml_each(&text, &source, |resources| {
            for object in take_objects(resources) {
                objects_by_id.insert(object.identity(), object.routing_view());
            }
        });
        drop(text);
        let state = self.files.entry(path.to_path_buf()).or_default();
        state.read_hash = hash;
        let broken = diagnostics.iter().any(Diagnostic::is_error);
        if broken && state.read_cleanly {
            diagnostics.push(Diagnostic::warning(
                &ObjectRef::new("File", "", &source),
                "",
                "keeping the objects of its last good version",
            ));
            state.diagnostics = diagnostics;
            return;
        }
        // A file never read cleanly applies what did parse.
        state.read_cleanly |= !broken;
        state.diagnostics = diagnostics;
        let mesh_changed =
            state.mesh_config != parsed.mesh_config || state.meshed_namespaces != parsed.meshed_namespaces;
        state.mesh_config = parsed.mesh_config;
        state.meshed_namespaces = parsed.meshed_namespaces;
        let state = self.files.entry(path.to_path_buf()).or_default();
        let previous = std::mem::replace(&mut state.objects, objects_by_id.keys().cloned().collect());
        if mesh_changed {
            self.update_mesh();
        }
        for id in previous.iter().filter(|id| !objects_by_id.contains_key(id)) {
            self.undefine(id, path);
        }
        for (id, object) in objects_by_id {
            let defined_here_before = previous.binary_search(&id).is_ok();
            self.define(id, path, object, defined_here_before);
        }
    }

    fn forget(&mut self, path: &Path) {
        if let Some(state) = self.files.remove(path) {
            for id in state.objects.iter() {
                self.undefine(id, path);
            }
            if state.mesh_config.is_some() || !state.meshed_namespaces.is_empty() {
                self.update_mesh();
            }
        }
    }

    /// The mesh settings of all files: namespaces from any, the mesh config
    /// of the last file in path order that has one (as reading them in
    /// order and merging does).
    fn update_mesh(&mut self) {
        let mesh_config = self.files.values().rev().find_map(|f| f.mesh_config.clone());
        let meshed = self.files.values().flat_map(|f| f.meshed_namespaces.iter().cloned()).collect();
        self.translator.set_mesh_config(mesh_config);
        self.translator.replace_meshed_namespaces(meshed);
    }

    /// `path` defines `object`; `defined_here_before` says whether its
    /// previous version did too.
    fn define(&mut self, id: ObjectId, path: &Path, object: Object, defined_here_before: bool) {
        let serving_before = self.translator.get(id.0, &(id.1.clone(), id.2.clone()));
        let serving = match (self.conflicts.get_mut(&id), &serving_before) {
            (Some(all), _) => {
                insert_sorted(all, path, object);
                all[0].1.clone()
            }
            // Defined, but not by this file: a second definition. Finding the
            // first one's file walks the files, only when that happens.
            (None, Some(current)) if !defined_here_before => {
                let other =
                    self.files.iter().find(|(p, f)| p.as_path() != path && f.objects.binary_search(&id).is_ok());
                match other.map(|(p, _)| p.clone()) {
                    Some(other) => {
                        let mut all = vec![(other, current.clone())];
                        insert_sorted(&mut all, path, object);
                        let serving = all[0].1.clone();
                        self.conflicts.insert(id, all);
                        serving
                    }
                    None => object,
                }
            }
            (None, _) => object,
        };
        if !serving_before.is_some_and(|before| before.same_as(&serving)) {
            self.translator.upsert(serving);
        }
    }

    /// `path` no longer defines `id`.
    fn undefine(&mut self, id: &ObjectId, path: &Path) {
        let Some(all) = self.conflicts.get_mut(id) else {
            return self.translator.delete(id.0, &id.1, &id.2);
        };
        let serving_before = all[0].1.clone();
        if let Ok(index) = all.binary_search_by(|(p, _)| p.as_path().cmp(path)) {
            all.remove(index);
        }
        // Two or more while in `conflicts`: one is left.
        let serving = all[0].1.clone();
        if all.len() < 2 {
            self.conflicts.remove(id);
        }
        if !serving_before.same_as(&serving) {
            self.translator.upsert(serving);
        }
    }
}

fn insert_sorted(all: &mut Vec<(PathBuf, Object)>, path: &Path, object: Object) {
    match all.binary_search_by(|(p, _)| p.as_path().cmp(path)) {
        Ok(index) => all[index].1 = object,
        Err(index) => all.insert(index, (path.to_path_buf(), object)),
    }
}

fn hash_of(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    // 0 marks "never read".
    hasher.finish().max(1)
}

/// Whether `path` is outside `dir` or has a hidden component below it
/// (editor swap files, the `..data` indirection of ConfigMap volumes).
fn hidden_below(dir: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(dir) else { return true };
    relative.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
}

fn is_yaml(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// `*.yaml`/`*.yml` below `dir`, skipping hidden entries (editor swap files,
/// and the `..data` indirection of ConfigMap volumes, which would otherwise
/// be read twice).
pub fn collect_yaml_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect_yaml_files(&path, files)?;
        } else if is_yaml(&path) {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: kubeflow-gateway, namespace: kubeflow}\nspec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"*\"]}]}\n";

    fn notebook(name: &str) -> String {
        format!(
            "apiVersion: kubeflow.org/v1\nkind: Notebook\nmetadata: {{name: {name}, namespace: team}}\nspec: {{template: {{spec: {{containers: [{{name: nb, image: x}}]}}}}}}\n"
        )
    }

    fn state() -> FolderState {
        FolderState::new(GatewayIdentity::default(), NotebookSettings::default(), PathNormalizationMode::default())
    }

    #[test]
    fn a_changed_file_changes_only_its_own_routes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gateway.yaml"), GATEWAY).unwrap();
        for i in 0..100 {
            std::fs::write(dir.path().join(format!("nb{i}.yaml")), notebook(&format!("nb{i}"))).unwrap();
        }
        let mut folder = state();
        folder.rescan(dir.path());
        assert_eq!(folder.take_delta().routes.len(), 100);

        // A new file: one route. The same text saved again: nothing.
        let new = dir.path().join("new.yaml");
        std::fs::write(&new, notebook("new")).unwrap();
        let touched = BTreeSet::from([new.clone(), dir.path().join("nb7.yaml")]);
        assert!(folder.reread(dir.path(), &touched));
        let delta = folder.take_delta();
        assert_eq!(delta.len(), 1, "{delta:?}");
        assert_eq!(delta.routes.keys().collect::<Vec<_>>(), vec!["http.80/*:80/team.notebook-team-new.0"]);

        // A broken edit keeps the file's last good objects.
        std::fs::write(&new, "kind: [unclosed").unwrap();
        assert!(folder.reread(dir.path(), &BTreeSet::from([new.clone()])));
        assert!(folder.take_delta().is_empty());
        let text: Vec<String> = folder.diagnostics().iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|d| d.contains("keeping the objects of its last good version")), "{text:?}");

        // Removed: its route goes.
        std::fs::remove_file(&new).unwrap();
        assert!(folder.reread(dir.path(), &BTreeSet::from([new])));
        assert_eq!(folder.take_delta().routes.values().collect::<Vec<_>>(), vec![&None]);
        assert_eq!(folder.table().route_count(), 100);
    }

    #[test]
    fn an_object_in_two_files_serves_from_the_first_until_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), format!("{GATEWAY}---\n{}", notebook("x"))).unwrap();
        std::fs::write(dir.path().join("b.yaml"), notebook("x")).unwrap();
        let mut folder = state();
        folder.rescan(dir.path());
        assert_eq!(folder.table().route_count(), 1);
        std::fs::write(dir.path().join("a.yaml"), GATEWAY).unwrap();
        folder.rescan(dir.path());
        assert_eq!(folder.table().route_count(), 1, "b.yaml still defines it");
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        folder.rescan(dir.path());
        assert_eq!(folder.table().route_count(), 0);
    }

    #[test]
    fn the_serving_definition_moves_to_the_next_file_with_its_own_content() {
        let service = |port: u16| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: nb-x, namespace: team}}\nspec: {{ports: [{{name: http, port: {port}}}]}}\n"
            )
        };
        let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: nb-x-1, namespace: team, labels: {kubernetes.io/service-name: nb-x}}\naddressType: IPv4\nports: [{name: http, port: 8888}]\nendpoints: [{addresses: [10.0.0.1]}]\n";
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x, namespace: team}\nspec: {gateways: [kubeflow/kubeflow-gateway], hosts: ['*'], http: [{route: [{destination: {host: nb-x.team.svc.cluster.local}}]}]}\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), format!("{GATEWAY}---\n{vs}---\n{slice}---\n{}", service(80)))
            .unwrap();
        std::fs::write(dir.path().join("b.yaml"), service(81)).unwrap();
        let mut folder = state();
        folder.rescan(dir.path());
        let clusters = |folder: &FolderState| folder.table().clusters.keys().cloned().collect::<Vec<_>>();
        assert_eq!(clusters(&folder), vec!["nb-x.team.svc.cluster.local:80"], "a.yaml's Service serves");
        // Another definition changed: nothing that serves changes.
        std::fs::write(dir.path().join("b.yaml"), service(82)).unwrap();
        folder.rescan(dir.path());
        folder.take_delta();
        assert_eq!(clusters(&folder), vec!["nb-x.team.svc.cluster.local:80"]);
        // a.yaml's Service goes: b.yaml's version serves, with its own port.
        std::fs::write(dir.path().join("a.yaml"), format!("{GATEWAY}---\n{vs}---\n{slice}")).unwrap();
        folder.rescan(dir.path());
        assert_eq!(clusters(&folder), vec!["nb-x.team.svc.cluster.local:82"], "b.yaml's Service serves");
        assert!(!folder.take_delta().is_empty());
        // b.yaml goes too: nothing defines the Service.
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        folder.rescan(dir.path());
        assert!(folder.translator.get(ObjectKind::Service, &(Name::from("team"), Name::from("nb-x"))).is_none());
    }

    #[test]
    fn directories_and_hidden_paths_ask_for_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let mut folder = state();
        assert!(!folder.reread(dir.path(), &BTreeSet::from([dir.path().join("..data/x.yaml")])));
        assert!(folder.reread(dir.path(), &BTreeSet::from([dir.path().join("notes.txt")])), "not part of the folder");
        assert!(!folder.reread(dir.path(), &BTreeSet::from([dir.path().to_path_buf()])));
    }
}
