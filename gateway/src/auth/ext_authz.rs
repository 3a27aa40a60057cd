//! External authorization over HTTP, as Istio's `envoyExtAuthzHttp`
//! provider (oauth2-proxy in Kubeflow): the gateway sends the request's
//! method, path and selected headers, without the body, to the provider; a
//! 2xx allows (and may add headers for the upstream), anything else is the
//! client's answer.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, header};
use pingora_http::RequestHeader;
use portico_routing::security::ExtAuthzProvider;

/// Headers Envoy always includes in a check request, besides the
/// configured ones.
const ALWAYS_SENT: [&str; 2] = ["authorization", "cookie"];
/// Denial headers always passed to the client: a login redirect is
/// useless without its Location.
const ALWAYS_RETURNED_ON_DENY: [&str; 2] = ["location", "www-authenticate"];
/// Largest denial body relayed to the client.
const MAX_DENY_BODY: usize = 64 * 1024;

/// What the provider decided.
pub enum Check {
    Allow {
        /// To set on the upstream request (`headersToUpstreamOnAllow`).
        upstream: Vec<(HeaderName, HeaderValue)>,
        /// To add to the client's response (`headersToDownstreamOnAllow`).
        downstream: Vec<(HeaderName, HeaderValue)>,
    },
    Deny {
        status: u16,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
}

/// Asks the provider at `address` about `request`.
pub async fn check(
    client: &reqwest::Client,
    provider: &ExtAuthzProvider,
    address: SocketAddr,
    request: &RequestHeader,
    scheme: &str,
) -> Check {
    match ask(client, provider, address, request, scheme).await {
        Ok(check) => check,
        Err(error) => {
            tracing::warn!(provider = %provider.name, %error, fail_open = provider.fail_open, "external authorization failed");
            if provider.fail_open {
                Check::Allow { upstream: Vec::new(), downstream: Vec::new() }
            } else {
                Check::Deny {
                    status: provider.status_on_error,
                    headers: vec![(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))],
                    body: Bytes::from_static(b"external authorization unavailable\n"),
                }
            }
        }
    }
}

async fn ask(
    client: &reqwest::Client,
    provider: &ExtAuthzProvider,
    address: SocketAddr,
    request: &RequestHeader,
    scheme: &str,
) -> Result<Check, reqwest::Error> {
    let path = String::from_utf8_lossy(request.raw_path());
    let url = format!("http://{address}{}{path}", provider.path_prefix);
    let method = reqwest::Method::from_bytes(request.method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut check = client.request(method, url).timeout(Duration::from_millis(provider.timeout_ms));
    let host = request
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| request.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string));
    if let Some(host) = &host {
        check = check.header(header::HOST, host).header("x-forwarded-host", host);
    }
    check = check.header("x-forwarded-proto", scheme).header("x-forwarded-uri", path.as_ref());
    for name in ALWAYS_SENT.iter().copied().chain(provider.include_request_headers.iter().map(String::as_str)) {
        if name == "host" {
            continue;
        }
        for value in request.headers.get_all(name) {
            check = check.header(name, value.as_bytes());
        }
    }
    for (name, value) in &provider.additional_headers {
        check = check.header(name.as_str(), value.as_str());
    }
    let response = check.header(header::CONTENT_LENGTH, "0").send().await?;
    let status = response.status();
    let pick = |names: &mut dyn Iterator<Item = &str>| -> Vec<(HeaderName, HeaderValue)> {
        let names: Vec<&str> = names.collect();
        response
            .headers()
            .iter()
            .filter(|(name, _)| names.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    };
    if status.is_success() {
        let upstream = pick(&mut provider.headers_to_upstream_on_allow.iter().map(String::as_str));
        let downstream = pick(&mut provider.headers_to_downstream_on_allow.iter().map(String::as_str));
        return Ok(Check::Allow { upstream, downstream });
    }
    let headers = if provider.headers_to_downstream_on_deny.is_empty() {
        // Envoy's default: every header of the denial.
        response.headers().iter().map(|(n, v)| (n.clone(), v.clone())).collect()
    } else {
        pick(
            &mut provider
                .headers_to_downstream_on_deny
                .iter()
                .map(String::as_str)
                .chain(ALWAYS_RETURNED_ON_DENY.iter().copied()),
        )
    };
    let headers = headers.into_iter().filter(|(name, _)| !is_hop_by_hop(name)).collect();
    let mut body = response.bytes().await?;
    body.truncate(MAX_DENY_BODY);
    Ok(Check::Deny { status: status.as_u16(), headers, body })
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade" | "te" | "trailer"
    )
}
