//! Rewrites and redirects, exactly as Envoy performs them under Istio.

use std::borrow::Cow;

use crate::table::{PathMatchKind, Redirect, RedirectPort, Rewrite, RouteMatch};

/// The path to forward after `rewrite`, given the `match[]` entry that
/// selected the route (`None`: a route without conditions).
///
/// `rewrite.uri` replaces what the path condition matched: the prefix for a
/// prefix match (so prefix `/a` + rewrite `/` turns `/a/x` into `//x`, as in
/// Envoy), the whole path for exact and regex matches, and the leading `/`
/// when there is no path condition (Envoy's implicit prefix `/`).
pub fn rewritten_path<'a>(path: &'a str, matched: Option<&RouteMatch>, rewrite: &Rewrite) -> Cow<'a, str> {
    if let Some(uri) = &rewrite.uri {
        let replaced_len = match matched.and_then(|m| m.uri.as_ref()).map(|u| &u.kind) {
            Some(PathMatchKind::Prefix(prefix)) => prefix.len(),
            Some(PathMatchKind::Exact(_) | PathMatchKind::Regex(_)) => path.len(),
            None => 1,
        };
        let replaced_len = replaced_len.min(path.len());
        // Kubeflow's notebook routes rewrite their prefix to itself: then
        // the path is already the result, and nothing need be copied.
        if path.get(..replaced_len) == Some(uri.as_str()) {
            return Cow::Borrowed(path);
        }
        let rest = path.get(replaced_len..).unwrap_or_default();
        return Cow::Owned(format!("{uri}{rest}"));
    }
    if let Some(regex_rewrite) = &rewrite.uri_regex {
        return Cow::Owned(
            regex_rewrite.pattern.regex().replace_all(path, regex_rewrite.replacement.as_str()).into_owned(),
        );
    }
    Cow::Borrowed(path)
}

/// What a redirect needs to know about the request.
pub struct RedirectRequest<'a> {
    pub scheme: &'a str,
    /// The Host as sent (may carry a port).
    pub authority: &'a str,
    /// The port the request arrived on.
    pub listener_port: u16,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// The `Location` of `redirect` for `request`.
pub fn redirect_location(redirect: &Redirect, request: &RedirectRequest<'_>) -> String {
    let scheme = redirect.scheme.as_deref().unwrap_or(request.scheme);
    let (request_host, request_port) = split_authority(request.authority);
    let host = redirect.authority.as_deref().unwrap_or(request_host);
    let port = match redirect.port {
        // Envoy keeps the Host's port, except the old scheme's default port
        // when the scheme changes (`http://a:80` -> `https://a`, but
        // `http://a:8080` -> `https://a:8080`).
        RedirectPort::Unchanged => {
            let old_default = |port: &&str| matches!((request.scheme, *port), ("http", "80") | ("https", "443"));
            request_port.filter(|port| scheme == request.scheme || !old_default(port)).map(str::to_string)
        }
        RedirectPort::ProtocolDefault => None,
        RedirectPort::FromRequest => non_default_port(scheme, request.listener_port),
        RedirectPort::Fixed(port) => non_default_port(scheme, port),
    };
    // A host override that names its own port keeps it.
    let port = if host.contains(':') && !host.starts_with('[') { None } else { port };
    let (path, query) = match redirect.uri.as_deref() {
        Some(uri) => match uri.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (uri, request.query),
        },
        None => (request.path, request.query),
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(port) = port {
        location.push(':');
        location.push_str(&port);
    }
    location.push_str(path);
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    location
}

/// The `Location` of a Gateway `httpsRedirect`: same host and path, https,
/// default port.
pub fn https_location(authority: &str, path_and_query: &str) -> String {
    let (host, _) = split_authority(authority);
    format!("https://{host}{path_and_query}")
}

fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.find("]:") {
            Some(end) => (&authority[..=end], Some(&authority[end + 2..])),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => (host, Some(port)),
        _ => (authority, None),
    }
}

fn non_default_port(scheme: &str, port: u16) -> Option<String> {
    let default = match scheme {
        "https" => 443,
        _ => 80,
    };
    (port != default).then(|| port.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::SearchPattern;
    use crate::table::{PathMatch, RegexRewrite};

    fn prefix(p: &str) -> RouteMatch {
        RouteMatch {
            uri: Some(PathMatch { kind: PathMatchKind::Prefix(p.into()), ignore_case: false }),
            ..Default::default()
        }
    }

    fn uri(u: &str) -> Rewrite {
        Rewrite { uri: Some(u.into()), ..Default::default() }
    }

    #[test]
    fn replaces_only_the_matched_prefix() {
        assert_eq!(rewritten_path("/a/x", Some(&prefix("/a/")), &uri("/")), "/x");
        assert_eq!(rewritten_path("/a/x", Some(&prefix("/a")), &uri("/")), "//x");
        assert_eq!(rewritten_path("/notebook/ns/nb/lab", Some(&prefix("/notebook/ns/nb/")), &uri("/")), "/lab");
        assert_eq!(
            rewritten_path("/notebook/ns/nb/lab", Some(&prefix("/notebook/ns/nb/")), &uri("/notebook/ns/nb/")),
            "/notebook/ns/nb/lab"
        );
    }

    #[test]
    fn exact_regex_and_unconditioned_routes() {
        let exact = RouteMatch {
            uri: Some(PathMatch { kind: PathMatchKind::Exact("/a".into()), ignore_case: false }),
            ..Default::default()
        };
        assert_eq!(rewritten_path("/a", Some(&exact), &uri("/b")), "/b");
        assert_eq!(rewritten_path("/a/b", None, &uri("/x")), "/xa/b");
    }

    #[test]
    fn regex_rewrite_replaces_every_match() {
        let rewrite = Rewrite {
            uri_regex: Some(RegexRewrite {
                pattern: SearchPattern::new("^/v1/(.*)$").unwrap(),
                replacement: "/v2/${1}".into(),
            }),
            ..Default::default()
        };
        assert_eq!(rewritten_path("/v1/items", None, &rewrite), "/v2/items");
    }

    #[test]
    fn redirects_keep_query_unless_replaced() {
        let request = RedirectRequest {
            scheme: "http",
            authority: "Host.com:8080",
            listener_port: 8080,
            path: "/a",
            query: Some("x=1"),
        };
        let mut redirect = Redirect {
            uri: Some("/b".into()),
            authority: None,
            scheme: None,
            port: RedirectPort::Unchanged,
            status: 301,
        };
        assert_eq!(redirect_location(&redirect, &request), "http://Host.com:8080/b?x=1");
        redirect.uri = Some("/c?y=2".into());
        assert_eq!(redirect_location(&redirect, &request), "http://Host.com:8080/c?y=2");
        redirect.scheme = Some("https".into());
        assert_eq!(redirect_location(&redirect, &request), "https://Host.com:8080/c?y=2");
        let default_port = RedirectRequest { authority: "Host.com:80", listener_port: 80, ..request };
        assert_eq!(redirect_location(&redirect, &default_port), "https://Host.com/c?y=2");
        redirect.port = RedirectPort::ProtocolDefault;
        assert_eq!(redirect_location(&redirect, &request), "https://Host.com/c?y=2");
        redirect.port = RedirectPort::Fixed(8443);
        assert_eq!(redirect_location(&redirect, &request), "https://Host.com:8443/c?y=2");
    }

    #[test]
    fn https_redirect_drops_the_port() {
        assert_eq!(https_location("a.com:80", "/x?y"), "https://a.com/x?y");
    }
}
