//! `porticoctl validate`: offline translation with errors traced to file,
//! object and field, and a failing exit status.

use portico_e2e::porticoctl::run;
use portico_e2e::workspace_root;

#[test]
fn the_examples_are_valid() {
    let examples = workspace_root().join("examples/kubeflow");
    let auth = workspace_root().join("examples/kubeflow-auth");
    let (ok, stdout, stderr) =
        run(&["validate", "-f", &examples.display().to_string(), "-f", &auth.display().to_string()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("0 error(s)"), "{stdout}");
}

#[test]
fn errors_name_the_file_the_object_and_the_field() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let bad = dir.path().join("team-a.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: broken, namespace: team-a}\n\
         spec:\n  hosts: [\"*\"]\n  gateways: [kubeflow/kubeflow-gateway]\n  http:\n  - match: [{uri: {regex: \"((\"}}]\n    \
         route: [{destination: {host: a.team-a.svc.cluster.local, port: {number: 80}}}]\n",
    )
    .expect("writing YAML");
    let garbage = dir.path().join("half-saved.yaml");
    std::fs::write(&garbage, "kind: [unclosed\n").expect("writing YAML");
    let (ok, stdout, _) = run(&["validate", "-f", &dir.path().display().to_string()]);
    assert!(!ok, "errors must fail the command: {stdout}");
    let line = stdout.lines().find(|l| l.contains("uri.regex")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.starts_with(&bad.display().to_string()), "{line}");
    assert!(line.contains("VirtualService team-a/broken: spec.http[0].match[0].uri.regex"), "{line}");
    assert!(
        stdout.lines().any(|l| l.starts_with(&garbage.display().to_string()) && l.contains("invalid YAML")),
        "{stdout}"
    );
}
