//! HTTP/2 conformance of the gateway's listeners, checked by h2spec
//! (summerwind/h2spec, built from the Go module proxy by tests/h2spec/build)
//! against the real `portico-gateway`: its plaintext listener, which speaks
//! HTTP/1.1 and h2c (prior knowledge) on one port, and its TLS listener with
//! ALPN `h2`. Every request h2spec sends is routed to a fake notebook, so
//! the cases exercise the proxy path, not a local answer.
//!
//! Every case must pass on both listeners, with one documented exception:
//! [`H2C_ONLY_EXCEPTION`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use portico_e2e::fixtures::{kubeflow_gateway_with_https, resolve_args, tls_secret};
use portico_e2e::{ConfigDir, FakeNotebook, Gateway, free_port, raw_http, workspace_root};

/// The fake notebook's Service host, sent to it by `--resolve`.
const UPSTREAM_HOST: &str = "fake.team.svc.cluster.local";
/// The TLS server's host: h2spec sends it as SNI when told `-h localhost`.
const TLS_HOST: &str = "localhost";
/// The path h2spec requests; the fake notebook answers it with 200.
const PATH: &str = "/notebook/team/h2spec/api/status";
/// Bound on the listener accepting after `/healthz/ready`.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// h2spec's wait for each expected frame or close (its default, 2 s, is
/// tight for a loaded 2-core machine; a passing case returns at once).
const CASE_TIMEOUT_SECONDS: &str = "5";

/// h2spec 3.5/2, "Sends invalid connection preface": it expects the
/// connection to be closed. The plaintext listener serves HTTP/1.1 and h2c
/// on the same port, so bytes that are not the HTTP/2 preface are read as
/// HTTP/1.1 (here a request line `INVALID CONNECTION PREFACE`), answered
/// 400 and then closed: inherent to a listener that speaks both, and the
/// only case allowed to fail. The TLS listener chose h2 by ALPN and must
/// pass it.
const H2C_ONLY_EXCEPTION: (&str, &str) = ("http2/3.5", "Sends invalid connection preface");

/// `*` routes everything to the fake notebook.
fn routes_yaml() -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: fake
  namespace: team
spec:
  hosts: ["*"]
  gateways: [kubeflow/kubeflow-gateway]
  http:
  - route:
    - destination: {{host: {UPSTREAM_HOST}, port: {{number: 80}}}}
"#
    )
}

/// The gateway with an h2c-capable plaintext listener and a TLS listener for
/// `localhost`, in front of a fake notebook.
struct Setup {
    gateway: Gateway,
    plain: SocketAddr,
    tls: SocketAddr,
    _upstream: FakeNotebook,
    _config: ConfigDir,
}

fn start() -> Setup {
    let upstream = FakeNotebook::start();
    let certified = rcgen::generate_simple_self_signed(vec![TLS_HOST.to_string()]).expect("generating a certificate");
    let config = ConfigDir::new();
    config.write("gateway.yaml", &kubeflow_gateway_with_https(TLS_HOST, "localhost-tls"));
    config.write(
        "tls-secret.yaml",
        &tls_secret("kubeflow", "localhost-tls", &certified.cert.pem(), &certified.signing_key.serialize_pem()),
    );
    config.write("routes.yaml", &routes_yaml());
    let plain = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut args = vec!["--bind".to_string(), format!("80={plain}"), "--bind".to_string(), format!("443={tls}")];
    args.extend(resolve_args(UPSTREAM_HOST, upstream.address().port()));
    let gateway = Gateway::start(config.path(), &args);
    let first = raw_http::get_when_listening(plain, "localhost", PATH, LISTEN_TIMEOUT)
        .unwrap_or_else(|error| panic!("the first request failed: {error}; log:\n{}", gateway.log_tail()));
    assert_eq!(first.status, 200, "the first request: {}\n{}", first.head, gateway.log_tail());
    Setup { gateway, plain, tls, _upstream: upstream, _config: config }
}

/// The h2spec binary, built (or found cached) by tests/h2spec/build.
fn h2spec() -> PathBuf {
    let script = workspace_root().join("tests/h2spec/build");
    let output = Command::new(&script).output().unwrap_or_else(|error| panic!("running {}: {error}", script.display()));
    assert!(output.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&output.stderr));
    workspace_root().join("target/kube/bin/h2spec")
}

/// One h2spec case's outcome, from its JUnit report.
#[derive(Debug)]
struct Case {
    /// The section, e.g. `http2/3.5`.
    section: String,
    description: String,
    /// `None` when it passed; otherwise `failure`, `error` or `skipped`.
    outcome: Option<&'static str>,
}

/// The value of attribute `name` in the start tag `tag`.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    let raw = &tag[start..end];
    Some(
        raw.replace("&#34;", "\"")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// The cases of h2spec's JUnit report: each `<testcase package=… classname=…>`
/// and whether a `<failure>`, `<error>` or `<skipped>` follows it.
fn parse_report(xml: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for chunk in xml.split("<testcase ").skip(1) {
        // The attributes of the start tag, each after a space.
        let tag = format!(" {}", &chunk[..chunk.find('>').unwrap_or(chunk.len())]);
        let body = chunk.split("</testcase>").next().unwrap_or(chunk);
        let outcome = ["failure", "error", "skipped"].into_iter().find(|kind| body.contains(&format!("<{kind}")));
        cases.push(Case {
            section: attribute(&tag, "package").unwrap_or_default(),
            description: attribute(&tag, "classname").unwrap_or_default(),
            outcome,
        });
    }
    cases
}

/// Runs h2spec (every case, strict ones included) against `address` and
/// returns the cases and its output.
fn run_h2spec(dir: &Path, address: SocketAddr, tls: bool) -> (Vec<Case>, String) {
    let report = dir.join(if tls { "h2spec-tls.xml" } else { "h2spec-h2c.xml" });
    let mut command = Command::new(h2spec());
    let host = if tls { TLS_HOST.to_string() } else { address.ip().to_string() };
    command.args(["--strict", "-h", &host, "-p", &address.port().to_string(), "-P", PATH, "-o", CASE_TIMEOUT_SECONDS]);
    command.args(["-j", &report.display().to_string()]);
    if tls {
        // The certificate is self-signed; what is under test is HTTP/2.
        command.args(["--tls", "--insecure"]);
    }
    let output = command.output().unwrap_or_else(|error| panic!("running h2spec: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let xml = std::fs::read_to_string(&report)
        .unwrap_or_else(|error| panic!("h2spec wrote no report ({error}); its output:\n{stdout}"));
    (parse_report(&xml), stdout)
}

/// Asserts that every case passed except those `allowed`, each of which must
/// still be present (so a renamed case cannot hide a new failure).
fn assert_conformant(listener: &str, setup: &Setup, cases: &[Case], output: &str, allowed: &[(&str, &str)]) {
    // h2spec 2.2.1 has 146 cases with --strict; a shorter report means it
    // did not run them all (a connection it could not make).
    assert!(cases.len() >= 146, "{listener}: h2spec reported only {} cases; its output:\n{output}", cases.len());
    let failed: Vec<String> = cases
        .iter()
        .filter(|case| case.outcome.is_some())
        .filter(|case| !allowed.contains(&(case.section.as_str(), case.description.as_str())))
        .map(|case| format!("{} {:?}: {}", case.section, case.description, case.outcome.unwrap_or_default()))
        .collect();
    assert!(
        failed.is_empty(),
        "{listener}: {} of {} h2spec cases did not pass:\n  {}\nh2spec output:\n{output}\ngateway log:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n  "),
        setup.gateway.log_tail()
    );
    for (section, description) in allowed {
        assert!(
            cases.iter().any(|case| case.section == *section && case.description == *description),
            "{listener}: h2spec no longer has the case {section} {description:?}; update the exception"
        );
    }
}

#[test]
fn the_h2c_listener_passes_h2spec_except_the_preface_case_http1_shares() {
    let setup = start();
    let dir = tempfile::tempdir().expect("a temp dir");
    let (cases, output) = run_h2spec(dir.path(), setup.plain, false);
    assert_conformant("h2c (prior knowledge)", &setup, &cases, &output, &[H2C_ONLY_EXCEPTION]);
}

#[test]
fn the_tls_listener_passes_every_h2spec_case_with_alpn_h2() {
    let setup = start();
    let dir = tempfile::tempdir().expect("a temp dir");
    let (cases, output) = run_h2spec(dir.path(), setup.tls, true);
    assert_conformant("TLS (ALPN h2)", &setup, &cases, &output, &[]);
}
