//! Command line and environment settings.
//!
//! Kubeflow's notebook-controller is configured by environment variables
//! (`ISTIO_GATEWAY`, `ISTIO_HOST`, `CLUSTER_DOMAIN`, `ADD_FSGROUP`); they keep
//! their names here so that an existing Deployment's `env:` carries over.
//! Everything else is a flag with a `PORTICO_*` (or Kubernetes downward-API)
//! variable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};
use portico_routing::{GatewayIdentity, NotebookSettings};

/// Portico's controller: reconciles Kubeflow Notebooks into the Service,
/// VirtualService and StatefulSet Kubeflow's notebook-controller makes, and
/// indexes Gateways, VirtualServices, Services and EndpointSlices into
/// versioned route tables. The kubeconfig comes from `KUBECONFIG`,
/// `~/.kube/config` or the in-cluster service account.
#[derive(Clone, Debug, Parser)]
#[command(name = "portico-controller", version, about)]
pub struct Args {
    /// Gateway that Notebook VirtualServices bind to (Kubeflow's ISTIO_GATEWAY).
    #[arg(long, env = "ISTIO_GATEWAY", default_value = "kubeflow/kubeflow-gateway")]
    pub istio_gateway: String,

    /// Host of Notebook VirtualServices (Kubeflow's ISTIO_HOST).
    #[arg(long, env = "ISTIO_HOST", default_value = "*")]
    pub istio_host: String,

    /// Kubernetes cluster domain of Service host names (Kubeflow's CLUSTER_DOMAIN).
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Give notebook pods `securityContext.fsGroup: 100` when they set no
    /// security context (Kubeflow's ADD_FSGROUP; OpenShift turns it off).
    #[arg(long, env = "ADD_FSGROUP", default_value_t = true, action = ArgAction::Set)]
    pub add_fsgroup: bool,

    /// Create the notebooks' StatefulSets. `false` leaves workloads to
    /// Kubeflow's own controller and writes only Services and VirtualServices.
    #[arg(long, env = "PORTICO_MANAGE_WORKLOADS", default_value_t = true, action = ArgAction::Set)]
    pub manage_workloads: bool,

    /// Only watch and write this namespace (default: all namespaces).
    #[arg(long, env = "PORTICO_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Istio's mesh config ConfigMap, NAMESPACE/NAME (Kubeflow:
    /// istio-system/istio): the extension providers (oauth2-proxy) that
    /// CUSTOM AuthorizationPolicies name. Unset: no providers.
    #[arg(long, env = "PORTICO_MESH_CONFIG", value_parser = parse_object_name)]
    pub mesh_config: Option<(String, String)>,

    /// Run the Notebook reconciler only while holding the Lease
    /// `--lease-name` in `--namespace` (for more than one replica).
    #[arg(long, env = "PORTICO_LEADER_ELECTION", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "PORTICO_LEASE_NAME", default_value = "portico-controller")]
    pub lease_name: String,

    /// Namespace the controller runs in (holds the Lease).
    #[arg(long, env = "POD_NAMESPACE", default_value = "portico-system")]
    pub namespace: String,

    /// Name of this replica (the pod name); with the process id it is the
    /// leader-election identity. Defaults to the host name.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Labels of the gateway instance route tables are built for, matched
    /// against Gateway selectors.
    #[arg(long, env = "PORTICO_GATEWAY_LABELS", default_value = "istio=ingressgateway", value_parser = parse_labels)]
    pub gateway_labels: Labels,

    /// Name of that gateway instance (in snapshots and logs).
    #[arg(long, env = "PORTICO_GATEWAY_NAME", default_value = "portico-gateway")]
    pub gateway_name: String,

    /// Namespace of that gateway instance (`credentialName` Secrets are looked up there first).
    #[arg(long, env = "PORTICO_GATEWAY_NAMESPACE", default_value = "istio-system")]
    pub gateway_namespace: String,

    /// Quiet time that ends a burst of changes before the route tables are rebuilt.
    #[arg(long, env = "PORTICO_DEBOUNCE", default_value = "10ms", value_parser = parse_duration)]
    pub debounce: Duration,

    /// Stop notebooks idle longer than `--cull-idle-time` (Kubeflow's
    /// ENABLE_CULLING). Activity is what the gateways saw (kernels,
    /// terminals, any websocket app, saves), not Jupyter's kernel list.
    #[arg(long, env = "ENABLE_CULLING", default_value_t = false, action = ArgAction::Set)]
    pub enable_culling: bool,

    /// Idle time after which a notebook is stopped (Kubeflow's CULL_IDLE_TIME:
    /// a bare number is minutes, as there; a duration such as `90s` also works).
    #[arg(long, env = "CULL_IDLE_TIME", default_value = "1440", value_parser = parse_minutes)]
    pub cull_idle_time: Duration,

    /// How often notebooks are checked for idleness (Kubeflow's
    /// IDLENESS_CHECK_PERIOD: minutes, or a duration).
    #[arg(long, env = "IDLENESS_CHECK_PERIOD", default_value = "1", value_parser = parse_minutes)]
    pub idleness_check_period: Duration,

    /// Shortest time between two writes of one notebook's
    /// `notebooks.kubeflow.org/last-activity` annotation.
    #[arg(long, env = "PORTICO_ACTIVITY_ANNOTATION_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub activity_annotation_interval: Duration,

    /// Shortest time between two wakes of one stopped notebook by its users'
    /// requests; `0` turns waking off.
    #[arg(long, env = "PORTICO_WAKE_MIN_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub wake_min_interval: Duration,

    /// Notebooks reconciled at the same time.
    #[arg(long, env = "PORTICO_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,

    /// Metrics and admin listener: /metrics, /healthz, /readyz, /debug/snapshot.
    #[arg(long, env = "PORTICO_METRICS", default_value = "0.0.0.0:15014")]
    pub metrics: SocketAddr,

    /// Discovery listener (gRPC): gateways stream their routes from here.
    #[arg(long, env = "PORTICO_DISCOVERY", default_value = "0.0.0.0:15010")]
    pub discovery: SocketAddr,

    /// Run the mesh's certificate authority and the TLS listener
    /// (`--secure-discovery`) that serves it and discovery.
    #[arg(long, env = "PORTICO_CA", default_value_t = true, action = ArgAction::Set)]
    pub ca: bool,

    /// TLS listener (gRPC): discovery and the certificate service.
    #[arg(long, env = "PORTICO_SECURE_DISCOVERY", default_value = "0.0.0.0:15012")]
    pub secure_discovery: SocketAddr,

    /// SPIFFE trust domain of workload certificates.
    #[arg(long, env = "PORTICO_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// Secret (in --namespace) holding the root: `ca-cert.pem`, `ca-key.pem`.
    /// Created on first start unless it exists.
    #[arg(long, env = "PORTICO_CA_SECRET", default_value = "portico-ca")]
    pub ca_secret: String,

    /// Audience callers' service-account tokens must be issued for.
    #[arg(long, env = "PORTICO_TOKEN_AUDIENCE", default_value = "portico-ca")]
    pub token_audience: String,

    /// Lifetime of the controller's own serving certificate (15012, 15017);
    /// renewed at half of it while the controller runs.
    #[arg(long, env = "PORTICO_SERVING_CERT_TTL", default_value = "720h", value_parser = parse_duration)]
    pub serving_cert_ttl: Duration,

    /// Lifetime of workload certificates, and the most a caller may ask for.
    #[arg(long, env = "PORTICO_WORKLOAD_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    pub workload_cert_ttl: Duration,
    #[arg(long, env = "PORTICO_MAX_WORKLOAD_CERT_TTL", default_value = "168h", value_parser = parse_duration)]
    pub max_workload_cert_ttl: Duration,

    /// Name of the controller's Service (its serving certificate names
    /// `<service>.<namespace>.svc` and `<service>.<namespace>.svc.<cluster domain>`).
    #[arg(long, env = "PORTICO_SERVICE_NAME", default_value = "portico-controller")]
    pub service_name: String,

    /// Sidecar injection webhook (HTTPS, needs --ca).
    #[arg(long, env = "PORTICO_WEBHOOK", default_value = "0.0.0.0:15017")]
    pub webhook: SocketAddr,

    /// MutatingWebhookConfiguration whose caBundle the controller keeps
    /// equal to the mesh root.
    #[arg(long, env = "PORTICO_WEBHOOK_CONFIG", default_value = "portico-sidecar-injector")]
    pub webhook_config: String,

    /// Image of the injected sidecar and init containers.
    #[arg(long, env = "PORTICO_SIDECAR_IMAGE", default_value = "ghcr.io/portico-dev/portico-sidecar:v0.1.0")]
    pub sidecar_image: String,

    /// Namespaces labelled `<this>=enabled` get the mesh root ConfigMap
    /// (the webhook configuration's namespaceSelector uses the same label).
    #[arg(long, env = "PORTICO_INJECTION_LABEL", default_value = "portico-injection")]
    pub injection_label: String,

    /// How often the webhook's caBundle and the root ConfigMaps are re-asserted.
    #[arg(long, env = "PORTICO_INJECTION_RESYNC", default_value = "30s", value_parser = parse_duration)]
    pub injection_resync: Duration,

    /// ConfigMap, in each such namespace, holding the mesh root.
    #[arg(long, env = "PORTICO_ROOT_CONFIG_MAP", default_value = "portico-ca-root-cert")]
    pub root_config_map: String,

    /// SPIFFE IDs injected sidecars accept (default: the gateway's service
    /// account in --namespace).
    #[arg(long, env = "PORTICO_SIDECAR_ALLOW", value_delimiter = ',')]
    pub sidecar_allow: Vec<String>,

    /// Serve JupyterHub's proxy API (configurable-http-proxy's REST API)
    /// here: cluster mode, routes kept as ChpRoute objects and served by
    /// every gateway (`c.ConfigurableHTTPProxy.api_url`). The token is
    /// CONFIGPROXY_AUTH_TOKEN, as CHP's. Unset: no API, no ChpRoute watch.
    #[arg(long, env = "PORTICO_CHP_API")]
    pub chp_api: Option<SocketAddr>,

    /// Namespace of the ChpRoute objects (default: --namespace).
    #[arg(long, env = "PORTICO_CHP_NAMESPACE")]
    pub chp_namespace: Option<String>,

    /// The gateways' port that serves JupyterHub's routes (its public URL,
    /// behind their Service). Not a port an Istio Gateway also uses.
    #[arg(long, env = "PORTICO_CHP_PORT", default_value_t = 8000)]
    pub chp_port: u16,

    /// CHP's --host-routing: a route's first path segment is a host name.
    #[arg(long, env = "PORTICO_CHP_HOST_ROUTING", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = ArgAction::Set)]
    pub chp_host_routing: bool,

    /// CHP's --default-target: where `/` goes while JupyterHub has not
    /// added a route `/` (Zero to JupyterHub: the hub's Service).
    #[arg(long, env = "PORTICO_CHP_DEFAULT_TARGET")]
    pub chp_default_target: Option<String>,

    /// CHP's --error-target: the gateways answer a 404 (no route) or a 5xx
    /// on the CHP port with GET <URL>/<code>?url=<request> (JupyterHub's
    /// `http://hub:8081/hub/error`).
    #[arg(long, env = "PORTICO_CHP_ERROR_TARGET", conflicts_with = "chp_error_path")]
    pub chp_error_target: Option<String>,

    /// CHP's --error-path: a folder of <code>.html pages (error.html for
    /// the other codes), read at start-up and sent to the gateways.
    #[arg(long, env = "PORTICO_CHP_ERROR_PATH")]
    pub chp_error_path: Option<std::path::PathBuf>,

    /// Log format.
    #[arg(long, env = "PORTICO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Args {
    /// The settings the Notebook derivations take.
    pub fn notebook_settings(&self) -> NotebookSettings {
        NotebookSettings {
            istio_gateway: self.istio_gateway.clone(),
            istio_host: self.istio_host.clone(),
            cluster_domain: self.cluster_domain.clone(),
        }
    }

    /// Cluster mode's proxy API, if `--chp-api` is given, or why its
    /// flags cannot be served.
    pub fn chp_settings(&self) -> anyhow::Result<Option<crate::chp::ChpSettings>> {
        use crate::chp::error_pages;
        let Some(api) = self.chp_api else { return Ok(None) };
        let default_target = match &self.chp_default_target {
            Some(text) => Some(
                portico_chp::Target::parse(text).map_err(|error| anyhow::anyhow!("--chp-default-target: {error}"))?,
            ),
            None => None,
        };
        let error_pages = match (&self.chp_error_target, &self.chp_error_path) {
            (Some(url), _) => Some(error_pages::from_target(url)?),
            (None, Some(dir)) => Some(error_pages::from_folder(dir)?),
            (None, None) => None,
        };
        Ok(Some(crate::chp::ChpSettings {
            api,
            namespace: self.chp_namespace.clone().unwrap_or_else(|| self.namespace.clone()),
            port: self.chp_port,
            host_routing: self.chp_host_routing,
            token: std::env::var("CONFIGPROXY_AUTH_TOKEN").ok().filter(|token| !token.is_empty()),
            default_target,
            error_pages,
        }))
    }

    /// The gateway instances route tables are built for.
    pub fn gateway_identities(&self) -> Vec<GatewayIdentity> {
        vec![GatewayIdentity {
            name: self.gateway_name.clone(),
            namespace: self.gateway_namespace.clone(),
            labels: self.gateway_labels.0.clone(),
        }]
    }

    /// What injected pods get.
    pub fn injection_settings(&self) -> crate::inject::template::InjectionSettings {
        let allow = if self.sidecar_allow.is_empty() {
            vec![format!("spiffe://{}/ns/{}/sa/portico-gateway", self.trust_domain, self.namespace)]
        } else {
            self.sidecar_allow.clone()
        };
        crate::inject::template::InjectionSettings {
            image: self.sidecar_image.clone(),
            ca_address: format!(
                "https://{}.{}.svc:{}",
                self.service_name,
                self.namespace,
                self.secure_discovery.port()
            ),
            trust_domain: self.trust_domain.clone(),
            allow,
            root_config_map: self.root_config_map.clone(),
        }
    }

    /// DNS names (and loopback) the controller's serving certificate covers.
    pub fn serving_names(&self) -> Vec<String> {
        let service = format!("{}.{}.svc", self.service_name, self.namespace);
        vec![
            format!("{service}.{}", self.cluster_domain),
            service,
            format!("{}.{}", self.service_name, self.namespace),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ]
    }

    /// `<pod name or host name>_<pid>`: unique per process, readable in the Lease.
    /// Culling and waking settings.
    pub fn lifecycle_settings(&self) -> crate::lifecycle::LifecycleSettings {
        crate::lifecycle::LifecycleSettings {
            enable_culling: self.enable_culling,
            cull_idle_time: self.cull_idle_time,
            idleness_check_period: self.idleness_check_period.max(Duration::from_secs(1)),
            annotation_interval: self.activity_annotation_interval,
            wake_min_interval: (!self.wake_min_interval.is_zero()).then_some(self.wake_min_interval),
            cluster_domain: self.cluster_domain.clone(),
        }
    }

    pub fn identity(&self) -> String {
        let host = self
            .pod_name
            .clone()
            .filter(|name| !name.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|name| !name.is_empty()))
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|name| name.trim().to_string()))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "portico-controller".to_string());
        format!("{host}_{}", std::process::id())
    }
}

/// `text` for people, `json` for log pipelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `k=v,...` labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(pub BTreeMap<String, String>);

fn parse_labels(text: &str) -> Result<Labels, String> {
    portico_routing::translate::parse_labels(text).map(Labels)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    portico_routing::duration::parse(text)
}

/// `namespace/name`.
/// Kubeflow's culling variables are whole minutes; a unit makes it a duration.
fn parse_minutes(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(minutes) => Ok(Duration::from_secs(minutes * 60)),
        Err(_) => parse_duration(text),
    }
}

fn parse_object_name(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((namespace.to_string(), name.to_string()))
        }
        _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("portico-controller").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_are_kubeflows() {
        let args = parse(&[]);
        assert_eq!(args.notebook_settings(), NotebookSettings::default());
        assert!(args.manage_workloads);
        assert!(args.add_fsgroup);
        assert!(!args.leader_election);
        assert_eq!(args.metrics.to_string(), "0.0.0.0:15014");
        assert_eq!(args.debounce, Duration::from_millis(10));
        let identity = &args.gateway_identities()[0];
        assert_eq!(identity.labels, BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]));
        // Kubeflow's culling defaults: off, 1440 minutes, checked every minute.
        assert!(!args.enable_culling);
        assert_eq!(args.cull_idle_time, Duration::from_secs(1440 * 60));
        assert_eq!(args.idleness_check_period, Duration::from_secs(60));
    }

    #[test]
    fn culling_times_are_minutes_as_in_kubeflow_or_durations() {
        let args = parse(&["--cull-idle-time", "30", "--idleness-check-period", "5s", "--wake-min-interval", "0"]);
        assert_eq!(args.cull_idle_time, Duration::from_secs(1800));
        assert_eq!(args.idleness_check_period, Duration::from_secs(5));
        assert_eq!(args.lifecycle_settings().wake_min_interval, None, "0 turns waking off");
    }

    #[test]
    fn boolean_flags_take_an_explicit_value() {
        let args = parse(&["--manage-workloads=false", "--leader-election", "--add-fsgroup", "false"]);
        assert!(!args.manage_workloads);
        assert!(args.leader_election);
        assert!(!args.add_fsgroup);
        assert!(parse(&["--leader-election=true"]).leader_election);
    }

    #[test]
    fn labels_and_durations_parse() {
        let args = parse(&["--gateway-labels", "istio=ingressgateway, app=portico", "--debounce", "250ms"]);
        assert_eq!(args.gateway_labels.0.len(), 2);
        assert_eq!(args.debounce, Duration::from_millis(250));
        assert!(Args::try_parse_from(["portico-controller", "--gateway-labels", "novalue"]).is_err());
    }

    #[test]
    fn the_identity_names_the_pod_and_the_process() {
        let args = parse(&["--pod-name", "portico-controller-7d9f"]);
        assert_eq!(args.identity(), format!("portico-controller-7d9f_{}", std::process::id()));
    }
}
