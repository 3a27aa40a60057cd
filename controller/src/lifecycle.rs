//! Notebook lifecycle from what the gateways see: activity in, Kubeflow's
//! annotations out, and stopped notebooks woken on request.
//!
//! - Every gateway replica reports, per route destination, the last time a
//!   person or a running job did something ([`activity::ActivityBook`]; the
//!   rules live in the gateway). The book keeps the latest of every replica.
//! - [`culler`] writes Kubeflow's `notebooks.kubeflow.org/last-activity`
//!   from the book (at most once per `--activity-annotation-interval` per
//!   notebook, on every controller replica: the annotation is how replicas
//!   share what their gateways saw) and, on the leader only and with
//!   `ENABLE_CULLING=true`, sets `kubeflow-resource-stopped` on a notebook
//!   idle longer than `CULL_IDLE_TIME`, exactly as Kubeflow's culler does,
//!   so Kubeflow's UI and tools see what they expect.
//! - [`wake`] removes `kubeflow-resource-stopped` when a gateway asks (the
//!   gateway has already authorized the request), at most once per
//!   `--wake-min-interval` per notebook.

pub mod activity;
pub mod culler;
pub mod wake;

use std::time::Duration;

/// Kubeflow's culling settings and Portico's bounds around them.
#[derive(Clone, Debug)]
pub struct LifecycleSettings {
    /// `ENABLE_CULLING`.
    pub enable_culling: bool,
    /// `CULL_IDLE_TIME`.
    pub cull_idle_time: Duration,
    /// `IDLENESS_CHECK_PERIOD`.
    pub idleness_check_period: Duration,
    /// Shortest time between two writes of one notebook's last-activity.
    pub annotation_interval: Duration,
    /// Shortest time between two wakes of one notebook (0: waking is off).
    pub wake_min_interval: Option<Duration>,
    /// `CLUSTER_DOMAIN`: a destination host is `<name>.<namespace>.svc.<domain>`.
    pub cluster_domain: String,
}

/// The Notebook (namespace, name) behind a destination host, when the host
/// has the shape of a notebook Service's (the Service is named like its
/// Notebook): the inverse of `portico_routing::notebook::notebook_host`.
pub fn notebook_of_host<'a>(host: &'a str, cluster_domain: &str) -> Option<(&'a str, &'a str)> {
    let service = host.strip_suffix(cluster_domain)?.strip_suffix('.')?.strip_suffix(".svc")?;
    let (name, namespace) = service.split_once('.')?;
    (!name.is_empty() && !namespace.is_empty() && !namespace.contains('.')).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notebook_host_names_its_notebook() {
        assert_eq!(notebook_of_host("nb.team.svc.cluster.local", "cluster.local"), Some(("team", "nb")));
        assert_eq!(notebook_of_host("nb.team.svc.example.org", "cluster.local"), None);
        assert_eq!(notebook_of_host("team.svc.cluster.local", "cluster.local"), None);
        assert_eq!(notebook_of_host("a.b.team.svc.cluster.local", "cluster.local"), None);
    }
}
