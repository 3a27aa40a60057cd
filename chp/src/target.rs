//! A route's `target`: where CHP forwards, `http://host[:port]`.
//!
//! JupyterHub's targets are a server's `proto://host:port` with no path.
//! Anything Portico would have to guess about is refused with the reason,
//! at the API, before it can reach a serving route.

use std::fmt;

/// A checked `http://host[:port]` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP (IPv6 without brackets), lower-case.
    pub host: String,
    pub port: u16,
}

/// Why a target is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?} is not a URL: {1}")]
    NotUrl(String, String),
    #[error("{0:?}: scheme {1:?} is not supported (only http:// targets are)")]
    Scheme(String, String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("{0:?} has a path, query or credentials; a target is proto://host[:port]")]
    HasPath(String),
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        let url = url::Url::parse(text).map_err(|error| TargetError::NotUrl(text.to_string(), error.to_string()))?;
        if url.scheme() != "http" {
            return Err(TargetError::Scheme(text.to_string(), url.scheme().to_string()));
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase(),
            _ => return Err(TargetError::NoHost(text.to_string())),
        };
        if (url.path() != "/" && !url.path().is_empty())
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(TargetError::HasPath(text.to_string()));
        }
        Ok(Target { host, port: url.port_or_known_default().unwrap_or(80) })
    }

    /// Where the gateways report this target's activity ([`activity_key`]).
    pub fn activity_key(&self) -> std::borrow::Cow<'_, str> {
        activity_key(&self.host, self.port)
    }

    /// `host:port`, brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The key a gateway reports a destination's activity under: its host,
/// but `ip:port` for an IP address. A host name names one server
/// (Kubeflow's notebook Services); an address names a machine, whose ports
/// may be different users' servers (JupyterHub's local spawners put every
/// user on 127.0.0.1). The controller reads a CHP route's activity under
/// the same key.
pub fn activity_key(host: &str, port: u16) -> std::borrow::Cow<'_, str> {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => format!("[{host}]:{port}").into(),
        Ok(_) => format!("{host}:{port}").into(),
        Err(_) => host.into(),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority())
    }
}

/// CHP's `--error-target`: `http://host[:port][/path]`, returned as the
/// base of the pages, ending with `/` (a page is `<base><code>?url=...`).
pub fn error_target(text: &str) -> Result<String, TargetError> {
    let mut url = url::Url::parse(text).map_err(|error| TargetError::NotUrl(text.to_string(), error.to_string()))?;
    if url.scheme() != "http" {
        return Err(TargetError::Scheme(text.to_string(), url.scheme().to_string()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(TargetError::NoHost(text.to_string()));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jupyterhub_targets_parse() {
        assert_eq!(Target::parse("http://127.0.0.1:56789").unwrap(), Target { host: "127.0.0.1".into(), port: 56789 });
        assert_eq!(Target::parse("http://Hub:8081/").unwrap().authority(), "hub:8081");
        assert_eq!(Target::parse("http://[::1]:8888").unwrap().authority(), "[::1]:8888");
        assert_eq!(Target::parse("http://nb").unwrap().port, 80);
    }

    #[test]
    fn addresses_are_keyed_with_their_port_and_names_alone() {
        assert_eq!(activity_key("127.0.0.1", 8888), "127.0.0.1:8888");
        assert_eq!(activity_key("::1", 8888), "[::1]:8888");
        assert_eq!(activity_key("nb.team.svc.cluster.local", 80), "nb.team.svc.cluster.local");
    }

    #[test]
    fn what_portico_would_guess_about_is_refused() {
        assert!(matches!(Target::parse("nope"), Err(TargetError::NotUrl(..))));
        assert!(matches!(Target::parse("https://a:1"), Err(TargetError::Scheme(..))));
        assert!(matches!(Target::parse("http+unix://%2Ftmp%2Fs"), Err(TargetError::Scheme(..))));
        assert!(matches!(Target::parse("http://a:1/base"), Err(TargetError::HasPath(..))));
        assert!(matches!(Target::parse("http://u:p@a:1"), Err(TargetError::HasPath(..))));
    }

    #[test]
    fn error_targets_are_page_bases() {
        assert_eq!(error_target("http://hub:8081/hub/error").unwrap(), "http://hub:8081/hub/error/");
        assert_eq!(error_target("http://hub:8081").unwrap(), "http://hub:8081/");
        assert!(matches!(error_target("https://hub/error"), Err(TargetError::Scheme(..))));
        assert!(matches!(error_target("hub/error"), Err(TargetError::NotUrl(..))));
    }
}
