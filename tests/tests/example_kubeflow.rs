//! The shipped example folder, `examples/kubeflow`, served as
//! `scripts/run-example` serves it: it must load without a single
//! diagnostic and put the example notebook's lab page behind the gateway,
//! and stop at once on the signal the script's Ctrl-C sends it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use portico_e2e::fixtures::{notebook_host, notebook_prefix, resolve_args};
use portico_e2e::raw_http;
use portico_e2e::wait::poll;
use portico_e2e::{Gateway, Jupyter, free_port, workspace_root};

#[test]
fn the_kubeflow_example_loads_cleanly_and_serves_its_notebook() {
    let (namespace, name) = ("kubeflow-user-example-com", "my-notebook");
    let prefix = notebook_prefix(namespace, name);
    let jupyter = Jupyter::start(&prefix);
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut args = vec!["--bind".to_string(), format!("80={http}")];
    args.extend(resolve_args(&notebook_host(namespace, name), jupyter.port()));
    // The sample service has no process behind it; resolving it to a closed
    // port keeps the test off DNS.
    args.extend(resolve_args("sample-service.default.svc.cluster.local", free_port()));
    let gateway = Gateway::start(workspace_root().join("examples").join("kubeflow"), &args);

    let dump = gateway.config_dump();
    let diagnostics = dump["diagnostics"].as_array().cloned().unwrap_or_default();
    assert!(diagnostics.is_empty(), "the example has diagnostics: {diagnostics:?}");
    let routes = gateway.routes();
    for expected in [prefix.as_str(), "/notebook/default/sample-service/"] {
        assert!(routes.contains(expected), "/routes lacks {expected}:\n{routes}");
    }

    let lab = raw_http::get_when_listening(http, "127.0.0.1:8080", &format!("{prefix}lab"), Duration::from_secs(10))
        .expect("GET the lab page");
    assert_eq!(lab.status, 200, "{}\ngateway log:\n{}", lab.head, gateway.log_tail());
    // The route exists; only its upstream is missing.
    let sample = raw_http::get(http, "127.0.0.1:8080", "/notebook/default/sample-service/").expect("GET sample");
    assert_eq!(sample.status, 503, "{}\ngateway log:\n{}", sample.head, gateway.log_tail());

    // Ctrl-C of scripts/run-example sends the gateway SIGINT, Pingora's fast
    // shutdown: it must be gone at once even with a client connection open,
    // where SIGTERM would drain (--drain-delay, then --drain-timeout).
    let mut gateway = gateway;
    let _open = std::net::TcpStream::connect(http).expect("a connection left open");
    let sent = Instant::now();
    // SAFETY: kill(2) has no memory effects; the pid is our child's.
    assert_eq!(unsafe { libc::kill(gateway.pid() as i32, libc::SIGINT) }, 0, "sending SIGINT");
    let stopped = poll(Duration::from_secs(2), || (!gateway.is_running()).then_some(()));
    assert!(
        stopped.is_some(),
        "the gateway still runs {:?} after SIGINT; log:\n{}",
        sent.elapsed(),
        gateway.log_tail()
    );
}
