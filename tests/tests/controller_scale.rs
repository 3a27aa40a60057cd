//! Many Notebooks at once: every one gets its VirtualService (and Service
//! and StatefulSet), and the time it takes is printed.
//!
//! Both sizes run in the suite, one after the other (they would only slow
//! each other down). To see the numbers:
//!
//! ```sh
//! cargo build --workspace --bins
//! cargo test -p portico-e2e --test controller_scale -- --nocapture
//! ```

use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{ListParams, PostParams};
use portico_api::istio::VirtualService;
use portico_api::notebook::Notebook;
use portico_e2e::notebooks::notebook_yaml;
use portico_e2e::{Controller, TestNamespace};

/// One scale test at a time: they share two cores with the API server.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Notebooks created at the same time.
const CREATE_CONCURRENCY: usize = 32;

/// How often the test counts: listing 1,000 objects is work for the API
/// server the controller competes for, so not every 50 ms.
const COUNT_INTERVAL: Duration = Duration::from_millis(500);

async fn count<K>(api: &Api<K>) -> usize
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // Metadata only: the count is what matters, not 1,000 pod templates.
    api.list_metadata(&ListParams::default()).await.map(|list| list.items.len()).unwrap_or(0)
}

/// Waits until `api` holds `n` objects, counting every [`COUNT_INTERVAL`];
/// panics with the last count and `context()` after `timeout`.
async fn wait_count<K>(api: &Api<K>, n: usize, what: &str, timeout: Duration, context: impl FnOnce() -> String)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = count(api).await;
        if seen == n {
            return;
        }
        assert!(Instant::now() < deadline, "{seen} of {n} {what} after {timeout:?}\n{}", context());
        tokio::time::sleep(COUNT_INTERVAL).await;
    }
}

async fn many_notebooks(n: usize, budget: Duration) {
    let namespace = TestNamespace::create(&format!("ctl-scale{n}"));
    let ns = namespace.name().to_string();
    let plane = namespace.plane();
    let controller = Controller::start(&ns, &[]);
    let client = plane.client().await;
    let notebooks: Api<Notebook> = Api::namespaced(client.clone(), &ns);

    let started = Instant::now();
    futures_util::stream::iter(0..n)
        .map(|i| {
            let notebooks = notebooks.clone();
            let ns = ns.clone();
            async move {
                let notebook: Notebook = serde_yaml::from_str(&notebook_yaml(&ns, &format!("nb-{i:04}"), &[]))
                    .expect("the fixture is a Notebook");
                notebooks.create(&PostParams::default(), &notebook).await
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("creating the Notebooks");
    let created = started.elapsed();

    let virtual_services: Api<VirtualService> = Api::namespaced(client.clone(), &ns);
    wait_count(&virtual_services, n, "VirtualServices", budget, || controller.log_tail()).await;
    let routed = started.elapsed();
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    wait_count(&services, n, "Services", budget.saturating_sub(routed), || controller.log_tail()).await;
    wait_count(&stateful_sets, n, "StatefulSets", budget.saturating_sub(routed), || controller.log_tail()).await;
    let all = started.elapsed();
    let reconciles = controller.metric("portico_controller_reconcile_total{result=\"success\"}").unwrap_or(0.0);
    let errors = controller.metric("portico_controller_reconcile_total{result=\"error\"}").unwrap_or(0.0);
    let created_metric = controller.metric(&format!("notebook_create_total{{namespace=\"{ns}\"}}"));
    println!(
        "{n} Notebooks on {}: created in {created:.2?}; all {n} VirtualServices present after {routed:.2?} \
         ({:.0} notebooks/s); Services and StatefulSets after {all:.2?}; {reconciles} reconciles, {errors} errors",
        plane.versions(),
        n as f64 / routed.as_secs_f64(),
    );
    let log = controller.log();
    let builds: Vec<u64> = log
        .lines()
        .filter(|line| line.contains("published route snapshot"))
        .filter_map(|line| line.split("elapsed_ms=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    let applies = |kind: &str, outcome: &str| {
        controller
            .metric(&format!("portico_controller_applies_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"))
            .unwrap_or(0.0)
    };
    println!(
        "applies sent/skipped: VirtualService {}/{}, Service {}/{}, StatefulSet {}/{}; \
         route index: {} snapshots published, slowest build {} ms",
        applies("VirtualService", "applied"),
        applies("VirtualService", "unchanged"),
        applies("Service", "applied"),
        applies("Service", "unchanged"),
        applies("StatefulSet", "applied"),
        applies("StatefulSet", "unchanged"),
        builds.len(),
        builds.iter().max().copied().unwrap_or(0)
    );
    assert_eq!(created_metric, Some(n as f64), "notebook_create_total counts each StatefulSet once");
    assert!(controller.log().lines().all(|line| !line.contains("panicked")), "{}", controller.log_tail());
}

#[tokio::test]
async fn many_notebooks_100() {
    let _serial = SERIAL.lock().await;
    many_notebooks(100, Duration::from_secs(60)).await;
}

#[tokio::test]
async fn many_notebooks_1000() {
    let _serial = SERIAL.lock().await;
    // Each Notebook's StatefulSet now makes a pod that the scheduler places
    // and kwok addresses, all on the same two cores: a correctness bound,
    // not a speed target (bench/run measures that).
    many_notebooks(1000, Duration::from_secs(300)).await;
}
