//! The Notebook reconciler: Kubeflow's notebook-controller, by server-side apply.
//!
//! For each Notebook it applies (field manager `portico-controller`, forced)
//! the VirtualService and Service that `portico_routing` derives, and unless
//! `--manage-workloads=false` the StatefulSet of [`crate::workload`], each
//! owned by the Notebook (controller owner reference). Forcing makes the
//! controller the owner of exactly the fields it sets, so a hand edit of
//! those fields is reverted on the next reconcile (the owned objects are
//! watched, so an edit triggers one), while fields others add and Kubeflow
//! does not set are left alone. Then the status is mirrored from the
//! StatefulSet and the pod `<name>-0` (see [`crate::status`]).
//!
//! A Notebook that cannot run (no containers) is not an error to retry
//! fast: it gets a Warning Event and a `Degraded` condition, and is looked at
//! again only when it changes (or after [`INVALID_RECHECK`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use portico_api::istio::VirtualService;
use portico_api::notebook::{Notebook, NotebookStatus};
use portico_routing::{notebook_service, notebook_virtual_service};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::context::{AppliedCache, Context, FIELD_MANAGER};
use crate::error::Error;
use crate::status::{differs, invalid_status, notebook_status};
use crate::workload::{self, InvalidNotebook};

/// Periodic resync of a healthy Notebook (watches do the real work).
pub const RESYNC: Duration = Duration::from_secs(3600);
/// How often an invalid Notebook is looked at again without a change.
pub const INVALID_RECHECK: Duration = Duration::from_secs(300);
/// Bound on waiting for the caches to fill at the start of a leadership term.
const CACHE_WAIT: Duration = Duration::from_secs(30);

/// Reconciles one Notebook; see the module docs.
pub async fn reconcile(notebook: Arc<Notebook>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_notebook(&notebook, &ctx).await;
    ctx.metrics.reconciled(result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.backoff.succeeded(&ObjectRef::from_obj(notebook.as_ref()));
        tracing::info!(
            notebook = %format!("{}/{}", notebook.namespace().unwrap_or_default(), notebook.name_any()),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
    }
    result
}

/// Counts the failure and requeues the Notebook with its own backoff.
pub fn error_policy(notebook: Arc<Notebook>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error.metric_label());
    let delay = ctx.backoff.failed(ObjectRef::from_obj(notebook.as_ref()));
    tracing::warn!(
        notebook = %format!("{}/{}", notebook.namespace().unwrap_or_default(), notebook.name_any()),
        %error,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed"
    );
    Action::requeue(delay)
}

async fn reconcile_notebook(notebook: &Notebook, ctx: &Context) -> Result<Action, Error> {
    if notebook.metadata.deletion_timestamp.is_some() {
        // The owned objects go with it (garbage collection by owner reference).
        return Ok(Action::await_change());
    }
    if let Err(invalid) = workload::validate(notebook) {
        return invalid_notebook(notebook, ctx, &invalid).await;
    }
    let name = notebook.name_any();
    let namespace = notebook.namespace().unwrap_or_default();
    wait_ready(&ctx.virtual_services, "VirtualService").await?;
    wait_ready(&ctx.services, "Service").await?;
    wait_ready(&ctx.stateful_sets, "StatefulSet").await?;
    wait_ready(&ctx.pods, "Pod").await?;

    let (virtual_service, diagnostics) = notebook_virtual_service(notebook, &ctx.settings);
    for diagnostic in diagnostics {
        ctx.event(notebook, EventType::Warning, "InvalidAnnotation", "DeriveVirtualService", diagnostic.to_string())
            .await;
    }
    let vs_name = virtual_service.name_any();
    let body = virtual_service_body(&virtual_service).map_err(|source| Error::Serialize {
        kind: "VirtualService",
        namespace: namespace.clone(),
        name: vs_name.clone(),
        source,
    })?;
    apply(ctx, &ctx.virtual_services, "VirtualService", &namespace, &vs_name, &body).await?;

    let service = notebook_service(notebook);
    let body = to_body("Service", &namespace, &name, &service)?;
    apply(ctx, &ctx.services, "Service", &namespace, &name, &body).await?;

    let stateful_set = if ctx.manage_workloads {
        let desired = match workload::notebook_stateful_set(notebook, &ctx.workload) {
            Ok(desired) => desired,
            Err(invalid) => return invalid_notebook(notebook, ctx, &invalid).await,
        };
        Some(apply_stateful_set(ctx, desired, &namespace, &name).await?)
    } else {
        ctx.stateful_sets.get(&ObjectRef::new(&name).within(&namespace)).map(|set| (*set).clone())
    };

    let pod = ctx.pods.get(&ObjectRef::new(&format!("{name}-0")).within(&namespace));
    let status = notebook_status(&name, stateful_set.as_ref(), pod.as_deref());
    write_status(notebook, ctx, &status).await?;
    Ok(Action::requeue(RESYNC))
}

/// Applies the StatefulSet, counting creations (Kubeflow's
/// `notebook_create_total` / `notebook_create_failed_total`).
async fn apply_stateful_set(
    ctx: &Context,
    desired: StatefulSet,
    namespace: &str,
    name: &str,
) -> Result<StatefulSet, Error> {
    // Not in the (filled) cache and not applied by this term: new. An object
    // someone else created a moment ago, not yet in the cache, counts too;
    // Kubeflow's own count reads a cache the same way.
    let cached = ctx.stateful_sets.get(&ObjectRef::new(name).within(namespace)).is_some();
    let creating = !cached && !ctx.applied.contains(("StatefulSet", namespace, name));
    let body = to_body("StatefulSet", namespace, name, &desired)?;
    match apply(ctx, &ctx.stateful_sets, "StatefulSet", namespace, name, &body).await {
        Ok(applied) => {
            if creating {
                ctx.metrics.notebook_created(namespace);
                tracing::info!(notebook = %format!("{namespace}/{name}"), "created the notebook's StatefulSet");
            }
            Ok(applied)
        }
        Err(error) => {
            if creating {
                ctx.metrics.notebook_create_failed(namespace);
            }
            Err(error)
        }
    }
}

/// A Notebook that cannot run: Warning Event, `Degraded` condition, slow recheck.
async fn invalid_notebook(notebook: &Notebook, ctx: &Context, invalid: &InvalidNotebook) -> Result<Action, Error> {
    let message = invalid.to_string();
    tracing::warn!(
        notebook = %format!("{}/{}", notebook.namespace().unwrap_or_default(), notebook.name_any()),
        reason = %message,
        "invalid notebook; not creating its objects"
    );
    ctx.event(notebook, EventType::Warning, "InvalidSpec", "Validate", message.clone()).await;
    if invalid != &InvalidNotebook::MissingName {
        write_status(notebook, ctx, &invalid_status(&message, Time(Timestamp::now()))).await?;
    }
    Ok(Action::requeue(INVALID_RECHECK))
}

/// Server-side applies `status` unless the Notebook already has it.
async fn write_status(notebook: &Notebook, ctx: &Context, status: &NotebookStatus) -> Result<(), Error> {
    if !differs(notebook.status.as_ref(), status) {
        return Ok(());
    }
    let name = notebook.name_any();
    let namespace = notebook.namespace().unwrap_or_default();
    let api: Api<Notebook> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = json!({
        "apiVersion": Notebook::api_version(&()),
        "kind": Notebook::kind(&()),
        "status": status,
    });
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map(|_| ())
        .map_err(|source| Error::Status { namespace, name, source: Box::new(source) })
}

/// Server-side apply of `body` as `kind` `namespace/name`, unless this
/// term already applied that body and `cache` still holds the version the
/// apply returned (see [`AppliedCache`]); then the cached object is returned.
async fn apply<K>(
    ctx: &Context,
    cache: &Store<K>,
    kind: &'static str,
    namespace: &str,
    name: &str,
    body: &Value,
) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let hash = AppliedCache::hash(body);
    let key = (kind, namespace, name);
    if let Some(cached) = cache.get(&ObjectRef::new(name).within(namespace))
        && ctx.applied.unchanged(key, hash, cached.meta().resource_version.as_deref())
    {
        ctx.metrics.applied(kind, false);
        return Ok((*cached).clone());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let applied =
        api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body)).await.map_err(|source| {
            Error::Apply { kind, namespace: namespace.to_string(), name: name.to_string(), source: Box::new(source) }
        })?;
    ctx.metrics.applied(kind, true);
    ctx.applied.record(key, hash, applied.meta().resource_version.clone());
    Ok(applied)
}

fn to_body(kind: &'static str, namespace: &str, name: &str, object: &impl Serialize) -> Result<Value, Error> {
    serde_json::to_value(object).map_err(|source| Error::Serialize {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    })
}

/// The VirtualService with exactly the fields Kubeflow's unstructured object
/// has: `headers.request.set` is present even when empty (`{}`), and the
/// typed default `ignoreUriCase: false` is left out.
pub fn virtual_service_body(virtual_service: &VirtualService) -> Result<Value, serde_json::Error> {
    let mut body = serde_json::to_value(virtual_service)?;
    if let Some(routes) = body.pointer_mut("/spec/http").and_then(Value::as_array_mut) {
        for route in routes {
            if let Some(request) = route.pointer_mut("/headers/request").and_then(Value::as_object_mut) {
                request.entry("set").or_insert_with(|| json!({}));
            }
            for entry in route.get_mut("match").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(entry) = entry.as_object_mut()
                    && entry.get("ignoreUriCase") == Some(&Value::Bool(false))
                {
                    entry.remove("ignoreUriCase");
                }
            }
        }
    }
    Ok(body)
}

async fn wait_ready<K>(store: &Store<K>, kind: &'static str) -> Result<(), Error>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    match tokio::time::timeout(CACHE_WAIT, store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Error::CacheNotReady(kind)),
    }
}

#[cfg(test)]
mod tests {
    use portico_routing::NotebookSettings;

    use super::*;

    #[test]
    fn the_virtual_service_body_is_kubeflows() {
        let mut notebook: Notebook = serde_json::from_value(json!({
            "apiVersion": "kubeflow.org/v1",
            "kind": "Notebook",
            "metadata": {"name": "nb", "namespace": "team", "uid": "u-1"},
            "spec": {"template": {"spec": {"containers": [{"name": "nb", "image": "jupyter"}]}}}
        }))
        .unwrap();
        let (virtual_service, diagnostics) = notebook_virtual_service(&notebook, &NotebookSettings::default());
        assert!(diagnostics.is_empty());
        let body = virtual_service_body(&virtual_service).unwrap();
        assert_eq!(
            body,
            json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {
                    "name": "notebook-team-nb",
                    "namespace": "team",
                    "ownerReferences": [{
                        "apiVersion": "kubeflow.org/v1", "kind": "Notebook", "name": "nb", "uid": "u-1",
                        "controller": true, "blockOwnerDeletion": true
                    }]
                },
                "spec": {
                    "hosts": ["*"],
                    "gateways": ["kubeflow/kubeflow-gateway"],
                    "http": [{
                        "match": [{"uri": {"prefix": "/notebook/team/nb/"}}],
                        "rewrite": {"uri": "/notebook/team/nb/"},
                        "headers": {"request": {"set": {}}},
                        "route": [{"destination": {"host": "nb.team.svc.cluster.local", "port": {"number": 80}}}]
                    }]
                }
            })
        );
        notebook.metadata.annotations = Some(
            [(
                "notebooks.kubeflow.org/http-headers-request-set".to_string(),
                r#"{"X-RStudio-Root-Path":"/r/"}"#.to_string(),
            )]
            .into(),
        );
        let (virtual_service, _) = notebook_virtual_service(&notebook, &NotebookSettings::default());
        let body = virtual_service_body(&virtual_service).unwrap();
        assert_eq!(body["spec"]["http"][0]["headers"], json!({"request": {"set": {"X-RStudio-Root-Path": "/r/"}}}));
    }
}
