//! Prints Portico's CustomResourceDefinitions as multi-document YAML.
//!
//! `crdgen` prints all of them; `crdgen notebook|gateway|virtualservice|requestauthentication|authorizationpolicy|chproute`
//! prints one. `manifests/crds/{istio,kubeflow,portico}/` is this output, checked for drift by a test.

use std::process::ExitCode;

use portico_api::crd;

fn main() -> ExitCode {
    let which = std::env::args().nth(1);
    let crds = match which.as_deref() {
        None | Some("all") => crd::all(),
        Some("notebook") => vec![crd::notebook()],
        Some("gateway") => vec![crd::gateway()],
        Some("virtualservice") => vec![crd::virtual_service()],
        Some("requestauthentication") => vec![crd::request_authentication()],
        Some("authorizationpolicy") => vec![crd::authorization_policy()],
        Some("chproute") => vec![crd::chp_route()],
        Some(other) => {
            eprintln!(
                "crdgen: unknown CRD {other:?}; expected all, notebook, gateway, virtualservice, requestauthentication, authorizationpolicy or chproute"
            );
            return ExitCode::from(2);
        }
    };
    for crd in crds {
        match serde_yaml::to_string(&crd) {
            Ok(yaml) => print!("---\n{yaml}"),
            Err(error) => {
                eprintln!("crdgen: cannot render {:?}: {error}", crd.metadata.name);
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
