//! Portico's sidecar injection webhook registered with the test cluster for
//! one test: a MutatingWebhookConfiguration of the test's own name, pointing
//! at that test's controller, deleted on drop (it is cluster-scoped, and a
//! leftover with `failurePolicy: Fail` would refuse other tests' pods).

use std::time::Duration;

use crate::kube_plane::plane;
use crate::wait::poll;

/// A webhook configuration named after the test's namespace; see the module docs.
pub struct InjectionWebhook {
    name: String,
}

impl InjectionWebhook {
    /// The name `portico-sidecar-injector-<namespace>`, for the controller's
    /// `--webhook-config` (the configuration itself comes with [`Self::install`]).
    pub fn for_namespace(namespace: &str) -> InjectionWebhook {
        InjectionWebhook { name: format!("portico-sidecar-injector-{namespace}") }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Registers the webhook at the controller's `port`, for pods of
    /// namespaces labelled `<label>: enabled` that did not opt out with
    /// `sidecar.istio.io/inject: "false"`.
    pub fn install(&self, port: u16, label: &str) {
        plane().kubectl_stdin(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: {name}}}\n\
                 webhooks:\n- name: inject.portico.dev\n  clientConfig: {{url: \"https://127.0.0.1:{port}/inject\"}}\n  \
                 namespaceSelector: {{matchLabels: {{{label}: enabled}}}}\n  \
                 objectSelector: {{matchExpressions: [{{key: sidecar.istio.io/inject, operator: NotIn, values: [\"false\"]}}]}}\n  \
                 rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods]}}]\n  \
                 failurePolicy: Fail\n  sideEffects: None\n  admissionReviewVersions: [v1]\n  timeoutSeconds: 10\n",
                name = self.name,
            )),
        );
    }

    /// Whether the controller filled in the caBundle within `timeout` (it
    /// re-asserts it every `--injection-resync`).
    pub fn wait_ca_bundle(&self, timeout: Duration) -> bool {
        poll(timeout, || {
            let bundle = plane().kubectl_ok(&[
                "get",
                "mutatingwebhookconfiguration",
                &self.name,
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ]);
            (!bundle.trim().is_empty()).then_some(())
        })
        .is_some()
    }
}

impl Drop for InjectionWebhook {
    fn drop(&mut self) {
        let _ = plane()
            .kubectl()
            .args(["delete", "mutatingwebhookconfiguration", &self.name, "--ignore-not-found"])
            .output();
    }
}
