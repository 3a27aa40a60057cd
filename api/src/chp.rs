//! `ChpRoute` (`proxy.portico.dev/v1alpha1`): one route of JupyterHub's
//! proxy API (configurable-http-proxy's) in cluster mode, where the
//! controller serves the API and every gateway replica serves every route.
//!
//! Why a CRD of Portico's and not a VirtualService: a JupyterHub route is a
//! CHP key (`/user/alice`, or `/host/path` with host routing), a target
//! URL that is a pod's `ip:port` (KubeSpawner) or a local port
//! (SimpleLocalProcessSpawner), never a Service, and arbitrary `data` JSON
//! that JupyterHub posts and reads back (`user`, `server_name`,
//! `jupyterhub`). A VirtualService routes to Service hosts, has no place
//! for the data, and its path rules would have to be read back into CHP
//! keys. A ChpRoute carries the key, the target and the data exactly as
//! posted; its name is derived from the key (a Kubernetes name cannot hold
//! `/`), the key itself is in `spec.path`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `spec` of a ChpRoute.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "proxy.portico.dev",
    version = "v1alpha1",
    kind = "ChpRoute",
    plural = "chproutes",
    namespaced,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.path"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ChpRouteSpec {
    /// The route's path as the API was given it (cleaned: a leading `/`, no
    /// trailing one); with host routing its first segment is the host.
    pub path: String,
    /// Where requests go: `http://host[:port]`.
    pub target: String,
    /// Everything else the client posted with the target, returned as given.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(schema_with = "crate::schema::preserve_unknown_object")]
    pub data: Map<String, Value>,
    /// When the route was last added (Unix milliseconds): its
    /// `last_activity` until a gateway reports traffic through it.
    pub added_unix_ms: i64,
}
