//! The build loop: applies each burst of watch changes to the translators,
//! one per kind of gateway, and publishes the deltas as the next version of
//! the discovery encoding. A change costs what it changes; only a new kind
//! of gateway (or a relisted Gateway) costs a pass over everything.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use portico_routing::incremental::IncrementalTranslator;
use portico_routing::{Diagnostic, GatewayIdentity, NotebookSettings};
use tokio::sync::{Notify, mpsc, watch};

use super::changes::{Change, Watched};
use super::workloads::{WorkloadDelta, Workloads};
use super::{IndexSettings, IndexStores, MAX_DELAY, next_burst};
use crate::chp::propagation::Propagation;
use crate::chp::table::ChpTable;
use crate::demand::{Demand, IdentityKey, key_of};
use crate::discovery::encode::{EncodedSnapshot, EncodedTable};
use crate::metrics::Metrics;
use crate::snapshot::{GatewayRoutes, Publisher, Snapshot, TableCounts};

/// Everything the build loop needs.
pub struct Builder {
    pub stores: IndexStores,
    pub settings: IndexSettings,
    pub demand: Demand,
    pub wake: Arc<Notify>,
    pub changes: mpsc::UnboundedReceiver<Change>,
    pub publisher: Publisher,
    pub encoded: watch::Sender<Arc<EncodedSnapshot>>,
    pub metrics: Metrics,
    /// Told which ChpRoutes each publication carried (the proxy API waits on it).
    pub propagation: Arc<Propagation>,
}

/// One kind of gateway's translator and its encoding.
struct Table {
    identity: GatewayIdentity,
    translator: IncrementalTranslator,
    encoded: Arc<EncodedTable>,
    diagnostics: Arc<[Diagnostic]>,
}

/// The translators, moved to a blocking thread for each step.
struct Tables {
    tables: HashMap<IdentityKey, Table>,
    version: u64,
    settings: NotebookSettings,
    /// The same for every kind of gateway.
    workloads: Workloads,
    /// JupyterHub's routes (`--chp-api`), the same for every kind of gateway.
    chp: Option<ChpTable>,
}

/// What one step published.
struct Step {
    snapshot: Snapshot,
    encoded: EncodedSnapshot,
    full_builds: usize,
    changed_pieces: usize,
    /// ChpRoutes this step published (name, resourceVersion or gone).
    chp_changed: Vec<(String, Option<u64>)>,
}

impl Builder {
    /// Runs until the process ends.
    pub async fn run(mut self) {
        if !self.stores.ready().await {
            tracing::error!("route index caches were dropped before they filled");
            return;
        }
        let mut tables = self.new_tables(0);
        loop {
            let started = Instant::now();
            let mut changes = Vec::new();
            while let Ok(change) = self.changes.try_recv() {
                changes.push(change);
            }
            let identities = self.demand.identities();
            let stores = self.stores.clone();
            let version = tables.version;
            // Applying changes is CPU work (a full build is a pass over
            // everything): off the runtime's I/O threads.
            let stepped = tokio::task::spawn_blocking(move || {
                let step = tables.step(&stores, identities, changes);
                (tables, step)
            })
            .await;
            match stepped {
                Ok((next, step)) => {
                    tables = next;
                    self.metrics.snapshot_builds.inc();
                    if let Some(chp) = &tables.chp {
                        self.metrics.chp_routes.set(i64::try_from(chp.len()).unwrap_or(i64::MAX));
                    }
                    if let Some(step) = step {
                        self.publish(step, started);
                    }
                }
                Err(error) => {
                    // The translators were lost with the thread: rebuild
                    // them all (streams get full states of a newer version).
                    tracing::error!(%error, "building route tables panicked; rebuilding from the caches");
                    tables = self.new_tables(version + 1);
                    continue;
                }
            }
            // Under constant churn, build at most half the time: a step that
            // took B is followed by at least B of rest (the changes meanwhile
            // coalesce into the next step).
            let took = started.elapsed();
            next_burst(&self.wake, self.settings.debounce, MAX_DELAY.max(took)).await;
            let rested = started.elapsed().saturating_sub(took);
            if rested < took {
                tokio::time::sleep(took - rested).await;
            }
        }
    }

    /// Empty tables at `version` (JupyterHub's routes from the cache).
    fn new_tables(&self, version: u64) -> Tables {
        let chp = self.settings.chp.as_ref().map(|settings| {
            let mut table = ChpTable::new(&settings.layout(), settings.host_routing, settings.default_target.clone());
            if let Some(store) = &self.stores.chp_routes {
                table.replace(&store.state());
            }
            table
        });
        Tables {
            tables: HashMap::new(),
            version,
            settings: self.settings.notebook_settings.clone(),
            workloads: Workloads::default(),
            chp,
        }
    }

    fn publish(&self, step: Step, started: Instant) {
        let Step { snapshot, encoded, full_builds, changed_pieces, chp_changed } = step;
        let version = snapshot.version;
        self.encoded.send_replace(Arc::new(encoded));
        // After the streams can see it: the API answers then.
        self.propagation.published(chp_changed);
        self.metrics.snapshot_version.set(i64::try_from(version).unwrap_or(i64::MAX));
        let summary = snapshot.summary();
        let elapsed_us = started.elapsed().as_micros() as u64;
        if full_builds > 0 {
            tracing::info!(version, routes = %summary["routes"], diagnostics = %summary["diagnostics"], elapsed_us, "published route snapshot (full build)");
        } else {
            tracing::debug!(version, changed_pieces, elapsed_us, "published route snapshot");
        }
        self.publisher.publish(snapshot);
    }
}

impl Tables {
    /// Applies `changes`, builds tables for new kinds of gateway, drops
    /// unwanted ones; `Some` when anything changed.
    fn step(&mut self, stores: &IndexStores, identities: Vec<GatewayIdentity>, changes: Vec<Change>) -> Option<Step> {
        let wanted: HashSet<IdentityKey> = identities.iter().map(key_of).collect();
        let before = self.tables.len();
        self.tables.retain(|key, _| wanted.contains(key));
        let mut changed = before != self.tables.len() || self.version == 0;
        let mut workloads = WorkloadDelta::new();
        for change in &changes {
            match change {
                Change::Notebook(notebook) => self.workloads.upsert(notebook, &self.settings, &mut workloads),
                Change::NotebookGone(namespace, name) => self.workloads.remove(namespace, name, &mut workloads),
                Change::Relisted(Watched::Notebooks) => {
                    self.workloads.replace(&stores.notebooks.state(), &self.settings, &mut workloads)
                }
                Change::ChpRoute(object) => self.chp.iter_mut().for_each(|chp| chp.upsert(object)),
                Change::ChpRouteGone(name) => self.chp.iter_mut().for_each(|chp| chp.remove(name)),
                Change::Relisted(Watched::ChpRoutes) => {
                    if let (Some(chp), Some(store)) = (self.chp.as_mut(), &stores.chp_routes) {
                        chp.replace(&store.state());
                    }
                }
                _ => {
                    for table in self.tables.values_mut() {
                        apply(&mut table.translator, change, stores);
                    }
                }
            }
        }
        let chp_delta = self.chp.as_mut().map(ChpTable::take_delta).unwrap_or_default();
        let chp_changed = self.chp.as_mut().map(ChpTable::take_changed).unwrap_or_default();
        changed |= !chp_changed.is_empty();
        let version = self.version + 1;
        let mut full_builds = 0;
        let mut changed_pieces = 0;
        for identity in identities {
            let key = key_of(&identity);
            if let Some(table) = self.tables.get_mut(&key) {
                let mut delta = table.translator.take_delta();
                delta.workloads = workloads.clone();
                delta.merge(chp_delta.clone());
                if !delta.is_empty() {
                    changed_pieces += delta.len();
                    table.encoded = Arc::new(table.encoded.next(version, &delta));
                    changed = true;
                }
                if table.translator.take_diagnostics_changed() {
                    let diagnostics: Arc<[Diagnostic]> = table.translator.diagnostics().into();
                    if diagnostics != table.diagnostics {
                        table.diagnostics = diagnostics;
                        changed = true;
                    }
                }
                continue;
            }
            let mut translator = stores.translator(identity.clone(), &self.settings);
            let mut full_state = translator.full_state();
            full_state.workloads = self.workloads.everything();
            if let Some(chp) = &self.chp {
                full_state.merge(chp.full_state());
            }
            let encoded = Arc::new(EncodedTable::full(version, &full_state));
            translator.take_delta();
            translator.take_diagnostics_changed();
            let diagnostics = translator.diagnostics().into();
            self.tables.insert(key, Table { identity, translator, encoded, diagnostics });
            full_builds += 1;
            changed = true;
        }
        if !changed {
            return None;
        }
        self.version = version;
        let mut gateways = Vec::with_capacity(self.tables.len());
        let mut encoded = HashMap::with_capacity(self.tables.len());
        for (key, table) in &self.tables {
            let [listeners, virtual_hosts, routes, clusters] = table.translator.counts();
            gateways.push(GatewayRoutes {
                identity: table.identity.clone(),
                counts: TableCounts { listeners, virtual_hosts, routes, clusters },
                diagnostics: table.diagnostics.clone(),
            });
            encoded.insert(key.clone(), table.encoded.clone());
        }
        gateways.sort_by(|a, b| {
            (&a.identity.namespace, &a.identity.labels).cmp(&(&b.identity.namespace, &b.identity.labels))
        });
        Some(Step {
            snapshot: Snapshot { version, gateways },
            encoded: EncodedSnapshot { version, tables: encoded, ready_at: Some(Instant::now()) },
            full_builds,
            changed_pieces,
            chp_changed,
        })
    }
}

/// Applies one watch change to one translator.
fn apply(translator: &mut IncrementalTranslator, change: &Change, stores: &IndexStores) {
    match change {
        Change::Upsert(object) => translator.upsert(object.clone()),
        Change::Delete(kind, namespace, name) => translator.delete(*kind, namespace, name),
        Change::MeshedNamespace(namespace, meshed) => translator.set_meshed_namespace(namespace, *meshed),
        Change::InjectedPod(namespace, name, account) => translator.set_injected_pod(namespace, name, account.clone()),
        Change::MeshConfig | Change::Relisted(Watched::MeshConfig) => translator.set_mesh_config(stores.mesh_config()),
        Change::Relisted(Watched::Object(kind)) => translator.replace_kind(*kind, stores.objects(*kind)),
        Change::Relisted(Watched::MeshedNamespaces) => translator.replace_meshed_namespaces(stores.meshed_namespaces()),
        Change::Relisted(Watched::InjectedPods) => translator.replace_injected_pods(stores.injected_pods()),
        // Not the translators' business (see `Workloads`, `ChpTable`).
        Change::Notebook(_)
        | Change::NotebookGone(..)
        | Change::Relisted(Watched::Notebooks)
        | Change::ChpRoute(_)
        | Change::ChpRouteGone(_)
        | Change::Relisted(Watched::ChpRoutes) => {}
    }
}
