//! Which finished HTTP requests are a person's activity.
//!
//! Counted: requests that change something (PUT, POST, PATCH, DELETE:
//! saving a file, starting a kernel) and page navigations (a person opened
//! or reloaded a page). Not counted: every other GET, HEAD and OPTIONS:
//! JupyterLab's polling of `api/kernels`, `api/sessions`, `api/terminals`
//! and `api/contents`, the scripts and styles of a page, health checks and
//! Kubeflow's culler probing `api/kernels`. One change is not a person's
//! either: JupyterLab saves its layout (`PUT .../lab/api/workspaces/...`)
//! every few seconds from a tab nobody touches (seen in headless Chromium
//! with JupyterLab 4.6), so the workspaces API never counts.
//!
//! Only requests the notebook accepted count: the response status is below
//! 500 and neither 401 nor 403 (an anonymous or foreign request is nobody's
//! activity; requests the gateway itself refused never reach here). A
//! request whose response never started (status 0) does not count either.
//!
//! The test is ordered so that a request that does not count costs a
//! method comparison, and a GET at most one lookup of a standard header
//! (`Accept`): every browser navigation accepts `text/html`, so only those
//! GETs look further.

use http::{HeaderMap, Method, header};

/// `Sec-Fetch-Mode` (Fetch Metadata): `navigate` for a page load.
const SEC_FETCH_MODE: &str = "sec-fetch-mode";
/// `Sec-Fetch-Dest`: `document` (or `iframe`) for a page load.
const SEC_FETCH_DEST: &str = "sec-fetch-dest";
/// Sent by jQuery-era XHR clients, which send no Fetch Metadata.
const X_REQUESTED_WITH: &str = "x-requested-with";

/// JupyterLab's layout persistence, which an idle tab keeps writing.
const WORKSPACES: &[u8] = b"/api/workspaces/";

/// Whether a request with `method`, `path` and `headers` that was answered
/// with `status` is activity.
pub fn counts(method: &Method, path: &[u8], headers: &HeaderMap, status: u16) -> bool {
    if !(100..500).contains(&status) || status == 401 || status == 403 {
        return false;
    }
    if *method == Method::PUT || *method == Method::POST || *method == Method::PATCH || *method == Method::DELETE {
        return !path.windows(WORKSPACES.len()).any(|window| window == WORKSPACES);
    }
    *method == Method::GET && is_navigation(headers)
}

/// A page navigation: Fetch Metadata says so, or, from a client without
/// it, a GET that accepts HTML and is not an XHR.
fn is_navigation(headers: &HeaderMap) -> bool {
    let accepts_html = headers.get(header::ACCEPT).is_some_and(|accept| contains(accept.as_bytes(), b"text/html"));
    if !accepts_html {
        return false;
    }
    if let Some(mode) = headers.get(SEC_FETCH_MODE) {
        return mode.as_bytes().eq_ignore_ascii_case(b"navigate")
            || headers.get(SEC_FETCH_DEST).is_some_and(|dest| {
                dest.as_bytes().eq_ignore_ascii_case(b"document") || dest.as_bytes().eq_ignore_ascii_case(b"iframe")
            });
    }
    !headers.contains_key(X_REQUESTED_WITH)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    const CHROME_NAVIGATION: [(&str, &str); 3] = [
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
    ];

    #[test]
    fn changes_count_and_polling_does_not() {
        let none = HeaderMap::new();
        for method in [Method::PUT, Method::POST, Method::PATCH, Method::DELETE] {
            assert!(counts(&method, b"/api/contents/a.txt", &none, 200), "{method}");
            assert!(
                counts(&method, b"/api/contents/a.txt", &none, 404),
                "{method}: a person's mistake is still a person"
            );
        }
        let polling = headers(&[("accept", "*/*"), ("sec-fetch-mode", "cors"), ("sec-fetch-dest", "empty")]);
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!counts(&method, b"/api/kernels", &polling, 200), "{method}");
            assert!(!counts(&method, b"/api/contents/a.txt", &none, 200), "{method}");
        }
    }

    #[test]
    fn jupyterlab_saving_its_layout_does_not_count() {
        let path = b"/notebook/team/nb/lab/api/workspaces/default?1796503753021";
        assert!(!counts(&Method::PUT, path, &HeaderMap::new(), 204));
        assert!(counts(&Method::PUT, b"/notebook/team/nb/api/contents/workspaces/a.py", &HeaderMap::new(), 200));
    }

    #[test]
    fn navigations_count() {
        assert!(counts(&Method::GET, b"/lab", &headers(&CHROME_NAVIGATION), 200));
        assert!(counts(&Method::GET, b"/lab", &headers(&CHROME_NAVIGATION), 302));
        // No Fetch Metadata (an old browser, curl -H 'Accept: text/html').
        assert!(counts(&Method::GET, b"/lab", &headers(&[("accept", "text/html")]), 200));
        assert!(!counts(
            &Method::GET,
            b"/lab",
            &headers(&[("accept", "text/html"), ("x-requested-with", "XMLHttpRequest")]),
            200
        ));
        // A script fetching HTML is not a navigation.
        let fetch = headers(&[("accept", "text/html"), ("sec-fetch-mode", "cors"), ("sec-fetch-dest", "empty")]);
        assert!(!counts(&Method::GET, b"/lab", &fetch, 200));
        assert!(!counts(&Method::HEAD, b"/lab", &headers(&CHROME_NAVIGATION), 200));
    }

    #[test]
    fn refused_and_failed_requests_do_not_count() {
        for status in [0, 401, 403, 500, 502, 503, 504] {
            assert!(!counts(&Method::POST, b"/api/sessions", &HeaderMap::new(), status), "{status}");
            assert!(!counts(&Method::GET, b"/lab", &headers(&CHROME_NAVIGATION), status), "{status}");
        }
    }
}
