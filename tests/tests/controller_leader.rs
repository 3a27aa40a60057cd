//! Two replicas with `--leader-election`: exactly one holds the Lease and
//! writes; the other indexes routes but never reconciles. Killed, the leader
//! is replaced after the lease runs out; shut down cleanly, it hands over at
//! once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use portico_api::istio::VirtualService;
use portico_e2e::kube_wait::{wait_object, wait_until};
use portico_e2e::notebooks::{apply, notebook_yaml};
use portico_e2e::{Controller, TestNamespace};

const RECONCILED: &str = "portico_controller_reconcile_total{result=\"success\"}";

fn holder(lease: Option<&Lease>) -> Option<String> {
    lease?.spec.as_ref()?.holder_identity.clone().filter(|holder| !holder.is_empty())
}

#[tokio::test]
async fn exactly_one_replica_writes_and_a_standby_takes_over() {
    let namespace = TestNamespace::create("ctl-leader");
    let ns = namespace.name();
    let plane = namespace.plane();
    let client = plane.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let virtual_services: Api<VirtualService> = Api::namespaced(client.clone(), ns);
    let mut a = Controller::start_with_env(ns, &["--leader-election"], &[("POD_NAME", "replica-a")]);
    let mut b = Controller::start_with_env(ns, &["--leader-election"], &[("POD_NAME", "replica-b")]);
    let identity = |name: &str, controller: &Controller| format!("{name}_{}", controller.pid());
    let (id_a, id_b) = (identity("replica-a", &a), identity("replica-b", &b));

    let first = wait_object(
        &leases,
        "portico-controller",
        "a leader",
        Duration::from_secs(30),
        |lease| holder(lease).filter(|h| *h == id_a || *h == id_b),
        || format!("a:\n{}\nb:\n{}", a.log_tail(), b.log_tail()),
    )
    .await;
    let (leader, standby, standby_id) = if first == id_a { (&mut a, &mut b, id_b) } else { (&mut b, &mut a, id_a) };

    apply(plane, &notebook_yaml(ns, "one", &[]));
    wait_object(
        &virtual_services,
        &format!("notebook-{ns}-one"),
        "the leader's VirtualService",
        Duration::from_secs(30),
        |vs| vs.map(|_| ()),
        || leader.log_tail(),
    )
    .await;
    assert_eq!(leader.metric("portico_controller_leader"), Some(1.0));
    // The VirtualService is the first write of a reconcile; the count follows its end.
    wait_until(
        "the leader counting its reconcile",
        Duration::from_secs(30),
        || async { (leader.metric(RECONCILED).unwrap_or(0.0) >= 1.0).then_some(()) },
        || leader.metrics_text(),
    )
    .await;
    assert_eq!(standby.metric("portico_controller_leader"), Some(0.0));
    assert_eq!(standby.metric(RECONCILED), None, "the standby reconciled:\n{}", standby.log_tail());
    assert!(!standby.log().contains("reconciled"), "the standby wrote:\n{}", standby.log_tail());
    assert!(standby.log().contains("campaigning for leadership"), "{}", standby.log_tail());
    // Every replica indexes routes and is ready.
    assert_eq!(standby.get_status("/readyz"), Some(200));
    assert!(standby.snapshot()["version"].as_u64() >= Some(1));

    // The leader dies without releasing the Lease: the standby waits for it
    // to run out (15 s), then takes over.
    let killed = Instant::now();
    leader.kill();
    let transitions_before = leases.get("portico-controller").await.ok().and_then(|l| l.spec?.lease_transitions);
    wait_object(
        &leases,
        "portico-controller",
        "the standby holding the lease",
        Duration::from_secs(45),
        |lease| holder(lease).filter(|h| *h == standby_id),
        || standby.log_tail(),
    )
    .await;
    let takeover = killed.elapsed();
    apply(plane, &notebook_yaml(ns, "two", &[]));
    wait_object(
        &virtual_services,
        &format!("notebook-{ns}-two"),
        "the new leader's VirtualService",
        Duration::from_secs(30),
        |vs| vs.map(|_| ()),
        || standby.log_tail(),
    )
    .await;
    let lease = leases.get("portico-controller").await.expect("the lease");
    let transitions = lease.spec.and_then(|spec| spec.lease_transitions);
    assert!(transitions > transitions_before, "{transitions:?} after {transitions_before:?}");
    assert!(standby.log().contains("acquired the lease"), "{}", standby.log_tail());
    assert!(takeover >= Duration::from_secs(10), "took over before the lease ran out: {takeover:?}");

    // A clean shutdown releases the Lease: a third replica takes over at once.
    let mut c = Controller::start_with_env(ns, &["--leader-election"], &[("POD_NAME", "replica-c")]);
    let id_c = identity("replica-c", &c);
    let stopped = Instant::now();
    standby.terminate();
    wait_until(
        "the third replica leading",
        Duration::from_secs(15),
        || async {
            (holder(leases.get_opt("portico-controller").await.ok()?.as_ref()) == Some(id_c.clone())).then_some(())
        },
        || c.log_tail(),
    )
    .await;
    let handover = stopped.elapsed();
    assert!(handover < Duration::from_secs(8), "a released lease took {handover:?} to change hands");
    assert!(c.is_running());
    println!("leader killed: standby took over after {takeover:.1?}; clean shutdown: handed over in {handover:.1?}");
}
