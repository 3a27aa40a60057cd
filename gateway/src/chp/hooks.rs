//! What the data plane does differently as configurable-http-proxy: stamp
//! route activity, honour `--no-x-forward`, and answer 404 and 5xx with
//! the pages of `--error-target` (JupyterHub's `/hub/error/<code>`, which
//! tells a user their server is stopped or starting) or `--error-path`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use pingora_http::RequestHeader;

use super::activity::{Activity, OpenWebsocket};
use crate::decision::LocalResponse;

/// How long the error target may take before the plain answer is sent.
const ERROR_PAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Error pages are HTML of a few KiB; a larger answer is not used.
const MAX_ERROR_PAGE_BYTES: usize = 1024 * 1024;

/// Where error pages come from.
pub enum ErrorPages {
    /// CHP's built-in plain answers.
    Plain,
    /// `GET <url><code>?url=<request URL>` (the URL ends with `/`).
    Target { url: reqwest::Url, client: reqwest::Client },
    /// `<dir>/<code>.html`, else `<dir>/error.html`.
    Folder(PathBuf),
}

/// Shared by every traffic listener's proxy in CHP mode.
pub struct ProxyHooks {
    pub activity: Arc<Activity>,
    pub x_forward: bool,
    pub error_pages: ErrorPages,
}

impl ProxyHooks {
    /// A request through CHP route `route` ended with `status`.
    pub fn request_done(&self, route: &str, status: u16) {
        self.activity.record(route, status);
    }

    /// A websocket through CHP route `route` opened; it counts as open
    /// until the guard is dropped.
    pub fn websocket_open(&self, route: &str) -> Option<OpenWebsocket> {
        self.activity.websocket_open(route)
    }

    /// `--no-x-forward`: the upstream request carries no X-Forwarded-*.
    pub fn forwarding_headers(&self, request: &mut RequestHeader) {
        if !self.x_forward {
            for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port"] {
                request.remove_header(name);
            }
        }
    }

    /// The error page for `status` answering request target `url`, if
    /// one is configured and could be had.
    pub async fn error_page(&self, status: u16, flags: &'static str, url: &str) -> Option<LocalResponse> {
        let (content_type, body) = match &self.error_pages {
            ErrorPages::Plain => return None,
            ErrorPages::Target { url: target, client } => fetch(client, target, status, url).await?,
            ErrorPages::Folder(dir) => {
                let page = match tokio::fs::read(dir.join(format!("{status}.html"))).await {
                    Ok(page) => page,
                    Err(_) => tokio::fs::read(dir.join("error.html")).await.ok()?,
                };
                ("text/html".to_string(), Bytes::from(page))
            }
        };
        Some(LocalResponse { status, headers: vec![(header::CONTENT_TYPE, content_type)], body, flags })
    }
}

/// The page for `status` from a listener's error pages (cluster mode,
/// where the controller's `--chp-error-target`/`--chp-error-path` travel
/// with the routes), if it could be had.
pub async fn listener_error_page(
    pages: &portico_routing::table::ErrorPages,
    status: u16,
    flags: &'static str,
    url: &str,
) -> Option<LocalResponse> {
    use portico_routing::table::ErrorPages as Pages;
    let (content_type, body) = match pages {
        Pages::Target { url: target } => {
            let target = reqwest::Url::parse(target).ok()?;
            fetch(shared_client()?, &target, status, url).await?
        }
        Pages::Pages { by_status, other } => {
            let page = by_status.get(&status).or(other.as_ref())?;
            ("text/html".to_string(), Bytes::from(page.clone()))
        }
    };
    Some(LocalResponse { status, headers: vec![(header::CONTENT_TYPE, content_type)], body, flags })
}

/// One client for every listener's error target, made on first use.
fn shared_client() -> Option<&'static reqwest::Client> {
    static CLIENT: std::sync::OnceLock<Option<reqwest::Client>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| match reqwest::Client::builder().no_proxy().build() {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::warn!(%error, "no HTTP client for error pages");
                None
            }
        })
        .as_ref()
}

async fn fetch(
    client: &reqwest::Client,
    target: &reqwest::Url,
    status: u16,
    request_url: &str,
) -> Option<(String, Bytes)> {
    let mut url = target.join(&status.to_string()).ok()?;
    url.query_pairs_mut().append_pair("url", request_url);
    let answer = async {
        let response = client.get(url.clone()).send().await?;
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/html")
            .to_string();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((content_type, body))
    };
    match tokio::time::timeout(ERROR_PAGE_TIMEOUT, answer).await {
        Ok(Ok((content_type, body))) if body.len() <= MAX_ERROR_PAGE_BYTES => Some((content_type, body)),
        Ok(Ok(_)) => None,
        Ok(Err(error)) => {
            tracing::warn!(%url, %error, "failed to get the custom error page");
            None
        }
        Err(_) => {
            tracing::warn!(%url, "the custom error page took too long");
            None
        }
    }
}
