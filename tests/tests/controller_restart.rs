//! The controller rides out an API server restart: its watches fail, back off
//! and re-establish (a relist, as after `410 Gone`), and it converges on
//! everything that changed.
//!
//! Only kube-apiserver restarts (etcd and its data stay, `tests/kube/up`
//! would wipe them), with the same command line, port and certificates. It
//! disturbs every client of the shared plane, so this file holds this one
//! test: cargo runs test binaries one after another.

use std::time::{Duration, Instant};

use kube::Api;
use portico_api::istio::VirtualService;
use portico_e2e::kube_wait::wait_object;
use portico_e2e::notebooks::{apply, notebook_yaml};
use portico_e2e::{Controller, TestNamespace};

/// Bound on converging after the restart: the watchers' backoff (up to 30 s
/// between attempts by default) plus a relist.
const CONVERGE: Duration = Duration::from_secs(90);

fn rewrite_of(vs: Option<&VirtualService>) -> Option<String> {
    vs?.spec.http.first()?.rewrite.as_ref()?.uri.clone()
}

#[tokio::test]
async fn the_controller_converges_after_an_api_server_restart() {
    let namespace = TestNamespace::create("ctl-restart");
    let ns = namespace.name();
    let plane = namespace.plane();
    let mut controller = Controller::start(ns, &[]);
    let client = plane.client().await;
    let virtual_services: Api<VirtualService> = Api::namespaced(client.clone(), ns);
    apply(plane, &notebook_yaml(ns, "before", &[]));
    let prefix = format!("/notebook/{ns}/before/");
    wait_object(
        &virtual_services,
        &format!("notebook-{ns}-before"),
        "the VirtualService before the restart",
        Duration::from_secs(30),
        |vs| rewrite_of(vs).filter(|rewrite| *rewrite == prefix),
        || controller.log_tail(),
    )
    .await;

    let restart = Instant::now();
    plane.restart_apiserver(Duration::from_secs(3));
    let down = restart.elapsed();
    assert!(controller.is_running(), "the controller exited with the API server:\n{}", controller.log_tail());

    // Changes made after the restart: an annotation on the old Notebook, a
    // new Notebook, a hand edit of a derived object.
    let client = plane.client().await;
    let virtual_services: Api<VirtualService> = Api::namespaced(client.clone(), ns);
    plane.kubectl_ok(&["annotate", "notebook", "before", "-n", ns, "notebooks.kubeflow.org/http-rewrite-uri=/"]);
    apply(plane, &notebook_yaml(ns, "after", &[]));
    let converging = Instant::now();
    wait_object(
        &virtual_services,
        &format!("notebook-{ns}-before"),
        "the annotation applied after the restart",
        CONVERGE,
        |vs| rewrite_of(vs).filter(|rewrite| rewrite == "/"),
        || controller.log_tail(),
    )
    .await;
    let after_prefix = format!("/notebook/{ns}/after/");
    wait_object(
        &virtual_services,
        &format!("notebook-{ns}-after"),
        "a Notebook created after the restart",
        CONVERGE,
        |vs| rewrite_of(vs).filter(|rewrite| *rewrite == after_prefix),
        || controller.log_tail(),
    )
    .await;
    let converged = converging.elapsed();
    plane.kubectl_ok(&[
        "patch",
        "virtualservice",
        &format!("notebook-{ns}-after"),
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"hosts":["evil.example.com"]}}"#,
    ]);
    wait_object(
        &virtual_services,
        &format!("notebook-{ns}-after"),
        "a hand edit after the restart reverted",
        CONVERGE,
        |vs| (vs?.spec.hosts == ["*"]).then_some(()),
        || controller.log_tail(),
    )
    .await;
    assert!(controller.is_running());
    assert_eq!(controller.get_status("/readyz"), Some(200));
    if std::env::var_os("PORTICO_TEST_SHOW_LOG").is_some() {
        println!("{}", controller.log());
    }
    println!("API server restarted in {down:.1?} (3 s down); controller converged {converged:.1?} after it was back");
}
