//! `manifests/crds/{istio,kubeflow,portico}/` must be exactly what `crdgen` prints, so that the CRDs
//! installed in a cluster always match the Rust types. Regenerate with the
//! commands in the failure message, or run this test with
//! `PORTICO_UPDATE_CRDS=1` to rewrite the files (refused when `CI` is set:
//! such a run cannot fail).

use std::path::{Path, PathBuf};

use portico_api::crd;

/// (file under manifests/crds, crdgen argument, the CRD)
fn expected() -> Vec<(&'static str, &'static str, String)> {
    let render = |crd| format!("---\n{}", serde_yaml::to_string(&crd).expect("a CRD serializes to YAML"));
    vec![
        ("kubeflow/notebooks.yaml", "notebook", render(crd::notebook())),
        ("istio/gateways.yaml", "gateway", render(crd::gateway())),
        ("istio/virtualservices.yaml", "virtualservice", render(crd::virtual_service())),
        ("istio/requestauthentications.yaml", "requestauthentication", render(crd::request_authentication())),
        ("istio/authorizationpolicies.yaml", "authorizationpolicy", render(crd::authorization_policy())),
        ("portico/chproutes.yaml", "chproute", render(crd::chp_route())),
    ]
}

fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("manifests").join("crds")
}

#[test]
fn committed_crds_match_crdgen() {
    let update = std::env::var_os("PORTICO_UPDATE_CRDS").is_some_and(|v| !v.is_empty() && v != "0");
    // Updating rewrites the files and so always passes: on CI that would
    // hide committed CRDs that drifted from the types.
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !(update && ci),
        "PORTICO_UPDATE_CRDS is refused when CI is set: an updating run rewrites the CRDs and cannot fail"
    );
    let mut stale = Vec::new();
    for (file, argument, yaml) in expected() {
        let path = crds_dir().join(file);
        if update {
            std::fs::write(&path, &yaml).unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != yaml {
            let first_difference = committed
                .lines()
                .zip(yaml.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| committed.lines().count().min(yaml.lines().count()));
            stale.push(format!(
                "  manifests/crds/{file} differs from crdgen from line {}: regenerate with\n    \
                 cargo run -p portico-api --bin crdgen {argument} > manifests/crds/{file}",
                first_difference + 1
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "the committed CRDs are stale (or run this test with PORTICO_UPDATE_CRDS=1 to rewrite them all):\n{}",
        stale.join("\n")
    );
}

#[test]
fn there_is_one_file_per_crd_and_nothing_else() {
    // Every YAML file below manifests/crds but the kustomizations.
    let mut files = Vec::new();
    for group in ["istio", "kubeflow", "portico"] {
        for entry in std::fs::read_dir(crds_dir().join(group)).expect("manifests/crds/<group> exists") {
            let name = entry.expect("a directory entry").file_name().to_string_lossy().into_owned();
            if (name.ends_with(".yaml") || name.ends_with(".yml")) && name != "kustomization.yaml" {
                files.push(format!("{group}/{name}"));
            }
        }
    }
    files.sort();
    let mut wanted: Vec<String> = expected().into_iter().map(|(file, _, _)| file.to_string()).collect();
    wanted.sort();
    assert_eq!(files, wanted, "manifests/crds holds exactly the generated CRDs (kubectl apply -k reads them)");
}
