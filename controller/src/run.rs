//! Wiring: caches, route index, admin listener, leader election and the
//! Notebook reconciler, and their shutdown.
//!
//! Every replica runs the Notebook cache (readiness, `notebook_running`),
//! the route index and the admin listener. The Notebook reconciler runs only
//! while this replica leads (always, without `--leader-election`): each
//! leadership term starts a fresh `Controller` with fresh caches, and losing
//! the lease aborts it, so a former leader never writes again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use portico_api::istio::VirtualService;
use portico_api::notebook::Notebook;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{self, AdminState};
use crate::ca;
use crate::ca::service::{CertificateServer, Lifetimes};
use crate::ca::serving::ServingCertificate;
use crate::chp;
use crate::cli::Args;
use crate::context::{AppliedCache, Backoff, Context};
use crate::discovery::registry::Registry;
use crate::discovery::{self, DiscoveryService, Secure, Shared};
use crate::index::{self, IndexSettings};
use crate::inject;
use crate::leader::{LeaderElector, LeaseTiming};
use crate::lifecycle::activity::ActivityBook;
use crate::lifecycle::culler::Culler;
use crate::lifecycle::wake::Waker;
use crate::metrics::Metrics;
use crate::reconcile::{error_policy, reconcile};
use crate::reflect::{reflected, scoped_api};
use crate::workload::WorkloadSettings;

/// Pod label that ties a notebook pod to its Notebook.
const NOTEBOOK_NAME_LABEL: &str = "notebook-name";

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config =
        kube::Config::infer().await.context("finding a kubeconfig (KUBECONFIG, ~/.kube/config, in-cluster)")?;
    tracing::info!(server = %config.cluster_url, "connecting to the API server");
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    let metrics = Metrics::new().context("registering metrics")?;
    let identity = args.identity();
    let namespace = args.watch_namespace.clone();
    let mut tasks = JoinSet::new();

    let chp_settings = args.chp_settings()?;
    let index_settings = IndexSettings {
        identities: args.gateway_identities(),
        notebook_settings: args.notebook_settings(),
        debounce: args.debounce,
        namespace: namespace.clone(),
        mesh_config: args.mesh_config.clone(),
        chp: chp_settings.clone(),
    };
    let index = index::spawn(&client, index_settings, metrics.clone(), &mut tasks);
    // The index watches Notebooks (their phase goes to gateways); the admin
    // endpoint counts them from the same cache.
    let notebooks = index.stores.notebooks.clone();
    let notebooks_listed = Arc::new(AtomicBool::new(false));
    {
        let (notebooks, listed) = (notebooks.clone(), notebooks_listed.clone());
        tasks.spawn(async move {
            // The index's build loop waits on the same cache, and kube's
            // ready signal wakes only the last of two concurrent waiters (a
            // oneshot underneath): ask again now and then instead of
            // waiting once.
            loop {
                match tokio::time::timeout(Duration::from_millis(250), notebooks.wait_until_ready()).await {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => continue,
                }
            }
            listed.store(true, Ordering::Release);
            tracing::info!(notebooks = notebooks.len(), "listed Notebooks");
        });
    }
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (leading_tx, leading) = watch::channel(false);

    // Lifecycle: activity from the gateways, culling (leader), waking.
    let lifecycle = args.lifecycle_settings();
    let activity = Arc::new(ActivityBook::default());
    let reporter = Reporter { controller: "portico-controller".to_string(), instance: Some(identity.clone()) };
    let waker = Arc::new(Waker {
        client: client.clone(),
        notebooks: notebooks.clone(),
        cluster_domain: lifecycle.cluster_domain.clone(),
        min_interval: lifecycle.wake_min_interval,
        metrics: metrics.clone(),
        recorder: Recorder::new(client.clone(), reporter.clone()),
        woken: Default::default(),
    });
    let culler = Culler {
        client: client.clone(),
        notebooks: notebooks.clone(),
        book: activity.clone(),
        settings: lifecycle,
        leading: leading.clone(),
        metrics: metrics.clone(),
        recorder: Recorder::new(client.clone(), reporter),
    };
    tasks.spawn(culler.run());

    let discovery_listener = TcpListener::bind(args.discovery)
        .await
        .with_context(|| format!("binding the discovery listener {}", args.discovery))?;
    let discovery = DiscoveryService::new(Shared {
        demand: index.demand.clone(),
        encoded: index.encoded.clone(),
        registry: Arc::new(Registry::default()),
        metrics: metrics.clone(),
        controller: identity.clone(),
        activity: activity.clone(),
        waker: Some(waker),
    });
    if args.ca {
        let authority = Arc::new(
            ca::store::load_or_create(&client, &args.namespace, &args.ca_secret, &args.trust_domain)
                .await
                .context("loading the mesh CA")?,
        );
        let serving = ServingCertificate::issue(&authority, args.serving_names(), args.serving_cert_ttl)
            .context("issuing the controller's serving certificate")?;
        tasks.spawn(serving.clone().renew(authority.clone()));
        let webhook_tls = serving.server_config(&[b"http/1.1"]).context("the webhook's TLS settings")?;
        let webhook_listener = TcpListener::bind(args.webhook)
            .await
            .with_context(|| format!("binding the injection webhook listener {}", args.webhook))?;
        tracing::info!(address = %args.webhook, "serving the sidecar injection webhook (HTTPS /inject)");
        tasks.spawn(inject::server::serve(webhook_listener, webhook_tls, Arc::new(args.injection_settings())));
        tasks.spawn(inject::server::reconcile_cluster_objects(
            client.clone(),
            authority.root_pem().to_string(),
            args.webhook_config.clone(),
            args.injection_label.clone(),
            args.root_config_map.clone(),
            args.injection_resync,
            args.namespace.clone(),
        ));
        let certificates = CertificateServer {
            authority,
            client: client.clone(),
            audience: args.token_audience.clone(),
            lifetimes: Lifetimes { default: args.workload_cert_ttl, max: args.max_workload_cert_ttl },
            metrics: metrics.clone(),
        };
        let secure_listener = TcpListener::bind(args.secure_discovery)
            .await
            .with_context(|| format!("binding the secure discovery listener {}", args.secure_discovery))?;
        let tls = serving.server_config(&[b"h2"]).context("the secure listener's TLS settings")?;
        let secure = Secure { certificates, tls };
        tasks.spawn(discovery::serve(secure_listener, discovery.clone(), Some(secure), shutdown.clone()));
    }
    tasks.spawn(discovery::serve(discovery_listener, discovery, None, shutdown.clone()));

    let listener = TcpListener::bind(args.metrics)
        .await
        .with_context(|| format!("binding the metrics listener {}", args.metrics))?;
    tracing::info!(address = %listener.local_addr().unwrap_or(args.metrics), "serving /metrics, /healthz, /readyz, /debug/snapshot");
    if let (Some(settings), Some(cache)) = (chp_settings, index.stores.chp_routes.clone()) {
        let listener = TcpListener::bind(settings.api)
            .await
            .with_context(|| format!("binding the proxy API listener {}", settings.api))?;
        if settings.token.is_none() {
            tracing::warn!("JupyterHub's proxy API is not authenticated (no CONFIGPROXY_AUTH_TOKEN)");
        }
        tracing::info!(address = %settings.api, namespace = %settings.namespace, gateway_port = settings.port,
            "serving JupyterHub's proxy API (configurable-http-proxy's) at /api/routes");
        let api = chp::server::ChpApi {
            objects: Api::namespaced(client.clone(), &settings.namespace),
            settings,
            cache,
            activity: activity.clone(),
            propagation: index.propagation.clone(),
            metrics: metrics.clone(),
            snapshots: index.snapshots.clone(),
            started_unix_ms: portico_chp::timestamp::now_ms(),
        };
        tasks.spawn(chp::server::serve(listener, Arc::new(api)));
    }
    let state =
        AdminState { metrics: metrics.clone(), notebooks, notebooks_listed, snapshots: index.snapshots, activity };
    tasks.spawn(admin::serve(listener, state));

    let elector = if args.leader_election {
        let api: Api<Lease> = Api::namespaced(client.clone(), &args.namespace);
        let elector = LeaderElector::new(api, &args.lease_name, &identity, LeaseTiming::default());
        tracing::info!(lease = %format!("{}/{}", args.namespace, args.lease_name), %identity, "campaigning for leadership");
        Some(tokio::spawn(elector.run(leading_tx, shutdown)))
    } else {
        leading_tx.send_replace(true);
        None
    };
    tasks.spawn(supervise(client, args, identity, metrics, leading));

    shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown_tx.send_replace(true);
    if let Some(elector) = elector {
        // Releasing the Lease lets a standby take over at once.
        if tokio::time::timeout(Duration::from_secs(5), elector).await.is_err() {
            tracing::warn!("releasing the lease took too long");
        }
    }
    tasks.shutdown().await;
    Ok(())
}

/// Starts the reconciler whenever this replica leads and stops it when it no
/// longer does.
async fn supervise(client: Client, args: Args, identity: String, metrics: Metrics, mut leading: watch::Receiver<bool>) {
    loop {
        if !wait_leading(&mut leading, true).await {
            return;
        }
        metrics.leader.set(1);
        tracing::info!(%identity, "starting the Notebook reconciler");
        let mut term = tokio::spawn(reconciler(client.clone(), args.clone(), identity.clone(), metrics.clone()));
        tokio::select! {
            still = wait_leading(&mut leading, false) => {
                term.abort();
                metrics.leader.set(0);
                tracing::info!("lost leadership; stopped the Notebook reconciler");
                if !still {
                    return;
                }
            }
            ended = &mut term => {
                metrics.leader.set(0);
                tracing::error!(?ended, "the Notebook reconciler ended; restarting it");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Waits until leadership is `wanted`; false when the sender is gone.
async fn wait_leading(leading: &mut watch::Receiver<bool>, wanted: bool) -> bool {
    leading.wait_for(|leads| *leads == wanted).await.is_ok()
}

/// One leadership term of the Notebook reconciler.
///
/// The derived objects and notebook pods are watched once, into caches that
/// also trigger the controller (`owns_stream`, `watches_stream`): the cache a
/// reconcile reads is always at least as new as the event that triggered it,
/// which is what lets [`crate::context::AppliedCache`] skip no-op applies
/// without missing a hand edit.
async fn reconciler(client: Client, args: Args, identity: String, metrics: Metrics) {
    let namespace = args.watch_namespace.as_deref();
    let config = watcher::Config::default;
    let pods_config = || watcher::Config::default().labels(NOTEBOOK_NAME_LABEL);
    let (virtual_services, virtual_services_writer) = reflector::store();
    let (services, services_writer) = reflector::store();
    let (stateful_sets, stateful_sets_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let virtual_service_events =
        reflected(scoped_api::<VirtualService>(&client, namespace), config(), virtual_services_writer);
    let service_events = reflected(scoped_api::<Service>(&client, namespace), config(), services_writer);
    let stateful_set_events = reflected(scoped_api::<StatefulSet>(&client, namespace), config(), stateful_sets_writer);
    let pod_events = reflected(scoped_api::<Pod>(&client, namespace), pods_config(), pods_writer);

    let reporter = Reporter { controller: "portico-controller".to_string(), instance: Some(identity) };
    let context = Arc::new(Context {
        client: client.clone(),
        settings: args.notebook_settings(),
        workload: WorkloadSettings { add_fs_group: args.add_fsgroup },
        manage_workloads: args.manage_workloads,
        metrics,
        recorder: Recorder::new(client.clone(), reporter),
        virtual_services,
        services,
        stateful_sets,
        pods,
        applied: AppliedCache::default(),
        backoff: Backoff::default(),
    });
    let (notebooks, notebooks_writer) = reflector::store();
    let notebook_events = reflected(scoped_api::<Notebook>(&client, namespace), config(), notebooks_writer);
    // Deletions of derived objects trigger too (touched, not only applied):
    // a deleted derived object is re-created.
    Controller::for_stream(notebook_events.applied_objects(), notebooks)
        .trigger_backoff(NoExtraBackoff)
        .owns_stream(service_events.touched_objects())
        .owns_stream(stateful_set_events.touched_objects())
        .owns_stream(virtual_service_events.touched_objects())
        .watches_stream(pod_events.touched_objects(), |pod: Pod| {
            let name = pod.labels().get(NOTEBOOK_NAME_LABEL)?.clone();
            Some(ObjectRef::<Notebook>::new(&name).within(&pod.namespace()?))
        })
        .with_config(controller::Config::default().concurrency(args.concurrency))
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            // Reconcile errors are logged by error_policy; these are the
            // controller's own (watch failures, which it retries).
            if let Err(error) = result {
                match error {
                    controller::Error::ReconcilerFailed(..) => {}
                    other => tracing::warn!(error = %other, "notebook controller"),
                }
            }
        })
        .await;
}

/// The controller's backoff over all its trigger watches together: none.
///
/// Each watch backs off on its own ([`reflected`] uses kube-runtime's
/// default, client-go's 0.8 s to 30 s). The controller's shared default
/// would pause *every* trigger on an error of *any* one and keep growing for
/// two minutes, so after an API server restart the five watches' `410 Gone`
/// relists stalled reconciles for a minute and more.
struct NoExtraBackoff;

impl Iterator for NoExtraBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // `None` would end the trigger stream: always "retry now".
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoExtraBackoff {
    fn reset(&mut self) {}
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
