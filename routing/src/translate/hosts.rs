//! Host names as Gateways and VirtualServices write them: exact names,
//! leftmost `*.` wildcards and `*`, optionally scoped by namespace.

use std::cmp::Ordering;

/// A Gateway server host: `[namespace/]dnsName`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerHost {
    pub namespace: NamespaceScope,
    /// Lower-case `*`, `*.suffix` or exact name.
    pub host: String,
}

/// Which namespaces' VirtualServices a server host accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NamespaceScope {
    Any,
    Only(String),
    /// `~/`: none.
    Nothing,
}

impl ServerHost {
    /// Parses `entry` of a Gateway in `gateway_namespace`.
    pub fn parse(entry: &str, gateway_namespace: &str) -> Result<Self, String> {
        let (namespace, host) = match entry.split_once('/') {
            None => (NamespaceScope::Any, entry),
            Some(("*", host)) => (NamespaceScope::Any, host),
            Some((".", host)) => (NamespaceScope::Only(gateway_namespace.to_string()), host),
            Some(("~", host)) => (NamespaceScope::Nothing, host),
            Some((namespace, host)) if !namespace.is_empty() => (NamespaceScope::Only(namespace.to_string()), host),
            Some(_) => return Err(format!("{entry:?}: empty namespace before '/'")),
        };
        let host = validate_host(host)?;
        Ok(Self { namespace, host })
    }

    pub fn admits_namespace(&self, namespace: &str) -> bool {
        match &self.namespace {
            NamespaceScope::Any => true,
            NamespaceScope::Only(only) => only == namespace,
            NamespaceScope::Nothing => false,
        }
    }
}

/// Lower-cases and checks a host pattern (`*` only as the whole leftmost label).
pub(crate) fn validate_host(host: &str) -> Result<String, String> {
    let host = host.trim().to_ascii_lowercase();
    if host.is_empty() {
        return Err("empty host".to_string());
    }
    let rest = host.strip_prefix("*.").unwrap_or(if host == "*" { "" } else { &host });
    if rest.contains('*') {
        return Err(format!("{host:?}: '*' is only allowed as the whole leftmost label"));
    }
    if rest.bytes().any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')) {
        return Err(format!("{host:?}: not a DNS name"));
    }
    Ok(host)
}

/// Whether pattern `wide` covers every name `narrow` covers (for a request
/// host, which has no `*`: whether the host is served by `wide`).
pub fn covers(wide: &str, narrow: &str) -> bool {
    if wide == "*" || wide == narrow {
        return true;
    }
    match wide.strip_prefix('*') {
        // `*.a.com` covers `b.a.com` and `*.b.a.com`, not `a.com`.
        Some(suffix) => narrow.len() > suffix.len() && narrow.ends_with(suffix),
        None => false,
    }
}

/// The names both patterns serve, as one pattern: the more specific one.
pub(crate) fn intersect(a: &str, b: &str) -> Option<String> {
    if covers(a, b) {
        Some(b.to_string())
    } else if covers(b, a) {
        Some(a.to_string())
    } else {
        None
    }
}

/// Virtual host precedence: exact names, then wildcards longest first, then `*`.
pub(crate) fn precedence(a: &str, b: &str) -> Ordering {
    fn rank(host: &str) -> (u8, std::cmp::Reverse<usize>) {
        match host {
            "*" => (2, std::cmp::Reverse(0)),
            h if h.starts_with("*.") => (1, std::cmp::Reverse(h.len())),
            _ => (0, std::cmp::Reverse(0)),
        }
    }
    rank(a).cmp(&rank(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_scopes() {
        assert_eq!(ServerHost::parse("*", "gw").unwrap().namespace, NamespaceScope::Any);
        assert_eq!(ServerHost::parse("./a.com", "gw").unwrap().namespace, NamespaceScope::Only("gw".into()));
        assert_eq!(ServerHost::parse("team/A.com", "gw").unwrap().host, "a.com");
        assert!(ServerHost::parse("a.*.com", "gw").is_err());
    }

    #[test]
    fn intersects_like_istio() {
        assert_eq!(intersect("*", "a.com").as_deref(), Some("a.com"));
        assert_eq!(intersect("*.a.com", "x.a.com").as_deref(), Some("x.a.com"));
        assert_eq!(intersect("*.a.com", "*").as_deref(), Some("*.a.com"));
        assert_eq!(intersect("*.a.com", "a.com"), None);
        assert_eq!(intersect("b.com", "a.com"), None);
    }

    #[test]
    fn orders_exact_then_longest_wildcard_then_any() {
        let mut hosts = vec!["*", "*.a.com", "*.b.a.com", "x.a.com"];
        hosts.sort_by(|a, b| precedence(a, b));
        assert_eq!(hosts, ["x.a.com", "*.b.a.com", "*.a.com", "*"]);
    }
}
