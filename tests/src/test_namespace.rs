//! A namespace of its own for each test on the shared test cluster, deleted
//! on drop (the namespace controller empties and removes it).

use std::sync::atomic::{AtomicU32, Ordering};

use crate::kube_plane::{KubePlane, plane};

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
        // The service account controller makes `default` too; whichever is
        // first, it exists before the test makes a pod.
        plane.kubectl_stdin(
            &["apply", "-f", "-"],
            Some(&format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default, namespace: {name}}}\n")),
        );
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
        let _ = self.plane.kubectl().args(["delete", "namespace", &self.name, "--wait=false"]).output();
    }
}
