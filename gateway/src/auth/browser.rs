//! Browser safety for notebooks served from one origin: Kubeflow's Jupyter
//! runs with `allow_origin='*'` and no token, so the gateway refuses
//! cross-site websocket upgrades, keeps the login session cookie away from
//! the notebooks, and tells page navigations from API calls.

use http::header;
use pingora_http::RequestHeader;

/// Whether the websocket upgrade's Origin is the request's own host or on
/// the allow-list. An absent Origin is the caller's choice to allow: browsers
/// always send one, so cross-site websocket hijacking is refused either way,
/// while non-browser clients (kernel clients, load tests) send none.
pub fn websocket_origin_allowed(request: &RequestHeader, allowed: &[String], require: bool) -> bool {
    let Some(origin) = request.headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return !require;
    };
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    let origin_host = strip_default_port(rest, scheme);
    let authority = request
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers.get(header::HOST).and_then(|h| h.to_str().ok()));
    authority.is_some_and(|authority| {
        // The gateway may sit behind a TLS-terminating balancer, so the
        // request's scheme is not compared; host and explicit port are.
        let host = strip_default_port(authority, "http");
        let host = strip_default_port(&host, "https");
        host.eq_ignore_ascii_case(&origin_host)
    })
}

fn strip_default_port(authority: &str, scheme: &str) -> String {
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => ":443",
        _ => ":80",
    };
    authority.strip_suffix(default).unwrap_or(authority).to_string()
}

/// A page navigation (where a login redirect makes sense) rather than an
/// API, XHR or websocket request (which must get a plain 401).
pub fn is_navigation(request: &RequestHeader) -> bool {
    let value = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(mode) = value("sec-fetch-mode") {
        return mode.eq_ignore_ascii_case("navigate");
    }
    request.method == http::Method::GET
        && !request.headers.contains_key(header::UPGRADE)
        && value("x-requested-with").is_none()
        && value("accept").is_some_and(|accept| accept.contains("text/html"))
}

/// The value of cookie `name`.
pub fn cookie(request: &RequestHeader, name: &str) -> Option<String> {
    request
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Removes the named cookies (and their `_<n>` chunks, which oauth2-proxy
/// writes for large sessions) from every Cookie header; drops a header that
/// ends up empty. Everything else (Jupyter's `_xsrf`, `username-*`) stays.
pub fn strip_cookies(request: &mut RequestHeader, names: &[String]) {
    if names.is_empty() || !request.headers.contains_key(header::COOKIE) {
        return;
    }
    let is_session = |cookie: &str| {
        names.iter().any(|name| {
            cookie == name
                || cookie
                    .strip_prefix(name.as_str())
                    .and_then(|rest| rest.strip_prefix('_'))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    let kept: Vec<String> = request
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !is_session(pair.split_once('=').map_or(*pair, |(k, _)| k)))
        .map(str::to_string)
        .collect();
    request.remove_header(&header::COOKIE);
    if !kept.is_empty() {
        // Valid header text: it is made of pieces of valid header values.
        let _ = request.insert_header(header::COOKIE, kept.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/notebook/a/b/api/kernels/1/channels", None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    #[test]
    fn same_origin_websockets_pass_and_cross_site_ones_do_not() {
        let same = request(&[("host", "kubeflow.example.com"), ("origin", "https://kubeflow.example.com")]);
        assert!(websocket_origin_allowed(&same, &[], false));
        let with_port = request(&[("host", "Kubeflow.example.com:443"), ("origin", "https://kubeflow.example.com")]);
        assert!(websocket_origin_allowed(&with_port, &[], false));
        let evil = request(&[("host", "kubeflow.example.com"), ("origin", "https://evil.example")]);
        assert!(!websocket_origin_allowed(&evil, &[], false));
        assert!(websocket_origin_allowed(&evil, &["https://evil.example".to_string()], false));
        let other_port = request(&[("host", "kubeflow.example.com"), ("origin", "http://kubeflow.example.com:8081")]);
        assert!(!websocket_origin_allowed(&other_port, &[], false));
        let none = request(&[("host", "kubeflow.example.com")]);
        assert!(websocket_origin_allowed(&none, &[], false));
        assert!(!websocket_origin_allowed(&none, &[], true));
        let null = request(&[("host", "kubeflow.example.com"), ("origin", "null")]);
        assert!(!websocket_origin_allowed(&null, &[], false));
    }

    #[test]
    fn session_cookies_are_removed_and_jupyters_are_kept() {
        let mut r = request(&[
            ("cookie", "oauth2_proxy_kubeflow=s3cr3t; _xsrf=2|abc"),
            ("cookie", "oauth2_proxy_kubeflow_1=more; username-x=y"),
        ]);
        strip_cookies(&mut r, &["oauth2_proxy_kubeflow".to_string()]);
        let cookies: Vec<&str> = r.headers.get_all("cookie").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(cookies, vec!["_xsrf=2|abc; username-x=y"]);
        let mut only = request(&[("cookie", "oauth2_proxy_kubeflow=s3cr3t")]);
        strip_cookies(&mut only, &["oauth2_proxy_kubeflow".to_string()]);
        assert!(only.headers.get("cookie").is_none());
    }

    #[test]
    fn navigations_are_told_from_api_calls() {
        assert!(is_navigation(&request(&[("sec-fetch-mode", "navigate")])));
        assert!(!is_navigation(&request(&[("sec-fetch-mode", "cors"), ("accept", "text/html")])));
        assert!(is_navigation(&request(&[("accept", "text/html,application/xhtml+xml")])));
        assert!(!is_navigation(&request(&[("accept", "application/json")])));
        assert!(!is_navigation(&request(&[("accept", "text/html"), ("x-requested-with", "XMLHttpRequest")])));
    }
}
