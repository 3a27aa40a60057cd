//! The gateway's Istio metrics as a Prometheus scrape sees them, after real
//! requests over many connections: the per-request series are kept in a
//! copy per worker thread (gateway/src/metrics/shards.rs), so a scrape must
//! add the copies up into one series with every request counted.

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use portico_e2e::fixtures::{kubeflow_gateway, resolve_args, rewrite_virtual_service};
use portico_e2e::raw_http;
use portico_e2e::wait::poll;
use portico_e2e::{ConfigDir, Gateway, RecordingUpstream, free_port};

const UPSTREAM_HOST: &str = "recorder.team.svc.cluster.local";
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests are recorded after their response is written: a scrape may
/// briefly trail the clients.
const RECORD_TIMEOUT: Duration = Duration::from_secs(10);

/// The samples of `metric` whose labels include every one of `labels`.
fn samples(text: &str, metric: &str, labels: &[&str]) -> Vec<f64> {
    text.lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(metric)?.strip_prefix('{')?;
            labels.iter().all(|label| rest.contains(label)).then(|| value.parse().ok()).flatten()
        })
        .collect()
}

#[test]
fn every_request_is_counted_once_in_one_series_whatever_thread_served_it() {
    let upstream = RecordingUpstream::start();
    let config = ConfigDir::new();
    config.write("gateway.yaml", &kubeflow_gateway());
    // `/app/` to the recording upstream, the path unchanged.
    config.write("routes.yaml", &rewrite_virtual_service("team", "recorder", "/app/", "/app/", UPSTREAM_HOST));
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut args = vec!["--bind".to_string(), format!("80={http}"), "--threads".to_string(), "2".to_string()];
    args.extend(resolve_args(UPSTREAM_HOST, upstream.address().port()));
    let gateway = Gateway::start(config.path(), &args);
    let first = raw_http::get_when_listening(http, "localhost", "/app/ready", LISTEN_TIMEOUT)
        .unwrap_or_else(|error| panic!("the first request failed: {error}; log:\n{}", gateway.log_tail()));
    assert_eq!(first.status, 200, "{}", first.head);

    // 4 clients x 50 requests, each on its own connection: both workers serve.
    let clients: Vec<_> = (0..4)
        .map(|client| {
            thread::spawn(move || {
                for n in 0..50 {
                    let response = raw_http::get(http, "localhost", &format!("/app/{client}/{n}")).unwrap();
                    assert_eq!(response.status, 200, "{}", response.head);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let expected = 201.0;

    let ok =
        ["destination_service_name=\"recorder\"", "destination_service_namespace=\"team\"", "response_code=\"200\""];
    let url = format!("{}/stats/prometheus", gateway.metrics_url());
    let scrape = || raw_http::get_url(&url).unwrap_or_else(|error| panic!("GET {url}: {error}")).text();
    let text = poll(RECORD_TIMEOUT, || {
        let text = scrape();
        (samples(&text, "istio_requests_total", &ok).iter().sum::<f64>() >= expected).then_some(text)
    })
    .unwrap_or_else(|| panic!("{expected} requests never counted:\n{}", scrape()));
    assert_eq!(samples(&text, "istio_requests_total", &ok), vec![expected], "one series, every request once:\n{text}");
    assert_eq!(
        samples(&text, "istio_request_duration_milliseconds_count", &ok),
        vec![expected],
        "the duration histogram counts the same requests:\n{text}"
    );
    let infinite = [&ok[..], &["le=\"+Inf\""]].concat();
    assert_eq!(samples(&text, "istio_response_bytes_bucket", &infinite), vec![expected], "{text}");
    assert!(text.contains("\nportico_active_requests 0\n"), "no request is in flight any more:\n{text}");
}
