//! A namespace of its own for each test on the shared control plane,
//! emptied and removed on drop.
//!
//! With no controller-manager a deleted namespace would stay `Terminating`
//! with its objects forever, so the drop deletes the collections the tests
//! use, then finalizes the namespace itself (what the namespace controller
//! would do).

use std::sync::atomic::{AtomicU32, Ordering};

use crate::kube_plane::{KubePlane, plane};

/// Collections emptied on drop (group/version/plural).
const COLLECTIONS: &[&str] = &[
    "/apis/kubeflow.org/v1/namespaces/{ns}/notebooks",
    "/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices",
    "/apis/networking.istio.io/v1/namespaces/{ns}/gateways",
    "/apis/apps/v1/namespaces/{ns}/statefulsets",
    "/api/v1/namespaces/{ns}/pods",
    "/api/v1/namespaces/{ns}/services",
    "/api/v1/namespaces/{ns}/events",
    "/api/v1/namespaces/{ns}/serviceaccounts",
    "/api/v1/namespaces/{ns}/secrets",
    "/api/v1/namespaces/{ns}/configmaps",
    "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
    "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh namespace `<prefix>-<pid>-<n>` with a `default` ServiceAccount
/// (the ServiceAccount admission plugin requires it for pods).
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    plane: &'static KubePlane,
}

impl TestNamespace {
    /// Creates the namespace on the shared plane (starting the plane if needed).
    pub fn create(prefix: &str) -> TestNamespace {
        let plane = plane();
        let name = TestNamespace::unused_name(prefix);
        plane.kubectl_ok(&["create", "namespace", &name]);
        plane.kubectl_ok(&["create", "serviceaccount", "default", "-n", &name]);
        TestNamespace { name, plane }
    }

    /// A fresh name `<prefix>-<pid>-<n>` that no namespace has yet, for a
    /// test that creates the namespace itself (then [`TestNamespace::adopt`]).
    pub fn unused_name(prefix: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = format!("{prefix}-{}-{n}", std::process::id()).to_lowercase();
        name.truncate(63);
        name
    }

    /// Takes over namespace `name`, which the test created, so that it is
    /// emptied and removed on drop like any other.
    pub fn adopt(name: &str) -> TestNamespace {
        TestNamespace { name: name.to_string(), plane: plane() }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plane it lives on.
    pub fn plane(&self) -> &'static KubePlane {
        self.plane
    }

    /// A token of service account `name` (created if missing) for the mesh
    /// CA (audience `portico-ca`), as a projected volume would hold it.
    pub fn mesh_token(&self, name: &str) -> String {
        let _ = self.plane.kubectl().args(["create", "serviceaccount", name, "-n", &self.name]).output();
        self.plane.kubectl_ok(&["create", "token", name, "-n", &self.name, "--audience", "portico-ca"])
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        for collection in COLLECTIONS {
            let path = collection.replace("{ns}", &self.name);
            // Services have no deletecollection before 1.31; fall back to kubectl.
            let status = self.plane.kubectl().args(["delete", "--raw", &path]).output();
            if !status.as_ref().is_ok_and(|output| output.status.success()) {
                let resource = path.rsplit('/').next().unwrap_or_default();
                let _ = self
                    .plane
                    .kubectl()
                    .args(["delete", resource, "--all", "-n", &self.name, "--wait=false", "--ignore-not-found"])
                    .output();
            }
        }
        let _ = self.plane.kubectl().args(["delete", "namespace", &self.name, "--wait=false"]).output();
        let finalize = format!(
            r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{}"}},"spec":{{"finalizers":[]}}}}"#,
            self.name
        );
        let path = format!("/api/v1/namespaces/{}/finalize", self.name);
        let mut command = self.plane.kubectl();
        command.args(["replace", "--raw", &path, "-f", "-"]).stdin(std::process::Stdio::piped());
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        if let Ok(mut child) = command.spawn() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = std::io::Write::write_all(&mut stdin, finalize.as_bytes());
            }
            let _ = child.wait();
        }
    }
}
