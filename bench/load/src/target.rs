//! Target URLs: parsed once, resolved once, so the hot loop only writes bytes.
//! Plain `http://` and `ws://` only (TLS would measure the load generator's
//! crypto as much as the gateway).

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;

use crate::error::SetupError;

/// Bound on resolving a host name.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A resolved `http://` or `ws://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// `Host` header value (`host[:port]` as written in the URL).
    pub authority: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Target {
    /// Parses and resolves `url` (`http://` or `ws://`).
    pub async fn resolve(url: &str) -> Result<Target, SetupError> {
        let (authority, host, port, path) = split(url)?;
        let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.clone(), port))).await;
        let addr = match lookup {
            Ok(Ok(mut addrs)) => addrs.next(),
            Ok(Err(error)) => return Err(SetupError::Resolve { host, reason: error.to_string() }),
            Err(_) => return Err(SetupError::Resolve { host, reason: format!("no answer in {RESOLVE_TIMEOUT:?}") }),
        }
        .ok_or_else(|| SetupError::Resolve { host: host.clone(), reason: "no addresses".into() })?;
        Ok(Target { url: url.to_string(), authority, addr, path })
    }

    /// The same server at another path (`rel` is appended to this target's
    /// path, which should end in `/`).
    pub fn join(&self, rel: &str) -> Target {
        Target { path: format!("{}{rel}", self.path), ..self.clone() }
    }

    /// `ws://authority/path` of this target.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.authority, self.path)
    }
}

/// `(authority, host, port, path)` of an `http://` / `ws://` URL.
fn split(url: &str) -> Result<(String, String, u16, String), SetupError> {
    let bad = |reason: &str| SetupError::Url { url: url.to_string(), reason: reason.to_string() };
    let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "ws") => {}
        Some("https" | "wss") => return Err(bad("TLS is not supported: use http:// or ws://")),
        _ => return Err(bad("expected an http:// or ws:// URL")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user info in URLs is not supported"));
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
    let port = authority.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let path = if path.is_empty() { "/" } else { path };
    Ok((authority.as_str().to_string(), host, port, path.to_string()))
}

/// `base` with a trailing `/` (so relative API paths append cleanly).
pub fn with_trailing_slash(base: &str) -> String {
    if base.ends_with('/') { base.to_string() } else { format!("{base}/") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let (authority, host, port, path) = split("http://Gateway.local:8080/notebook/ns/nb/lab?x=1").unwrap();
        assert_eq!(
            (authority.as_str(), host.as_str(), port, path.as_str()),
            ("Gateway.local:8080", "Gateway.local", 8080, "/notebook/ns/nb/lab?x=1")
        );
        let (_, host, port, path) = split("ws://[::1]/").unwrap();
        assert_eq!((host.as_str(), port, path.as_str()), ("::1", 80, "/"));
        assert_eq!(split("http://h").unwrap().3, "/");
        assert!(split("https://h/").unwrap_err().to_string().contains("TLS"));
        assert!(split("ftp://h/").is_err());
        assert!(split("/relative").is_err());
    }

    #[tokio::test]
    async fn resolves_and_joins() {
        let target = Target::resolve("http://127.0.0.1:9/notebook/ns/nb/").await.unwrap();
        assert_eq!(target.addr, "127.0.0.1:9".parse().unwrap());
        let api = target.join("api/kernels/k/channels");
        assert_eq!(api.ws_url(), "ws://127.0.0.1:9/notebook/ns/nb/api/kernels/k/channels");
        assert_eq!(with_trailing_slash("http://h/nb"), "http://h/nb/");
    }
}
