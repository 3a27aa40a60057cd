//! A route's path as CHP's API names it, checked and put in the form the
//! matcher compares with normalized request paths.
//!
//! CHP keys routes by the URL-decoded path with a leading `/` and no
//! trailing one (`/user/alice`); with `--host-routing` the first segment is
//! a host name (`/alice.hub.example.com/`). A request matches a route when
//! its path equals the route's or continues it after a `/`, and the longest
//! such route wins: CHP's trie walks whole segments.

use portico_routing::{PathNormalization, normalize};

/// The longest route path accepted (JupyterHub's are a few dozen bytes).
const MAX_PATH_BYTES: usize = 2048;

/// A checked route path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePath {
    /// As the API was given it, after cleaning (what `--routes-file` keeps).
    pub raw: String,
    /// CHP's key: decoded, leading `/`, no trailing `/` (but `/` itself).
    pub key: String,
    /// With `--host-routing`: the host of the key's first segment, lower-case.
    pub host: Option<String>,
    /// The path requests are matched against, normalized like a request's
    /// path: `/` or `/a/b` (no trailing slash).
    pub local: String,
}

/// Why a path is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error(
        "path {0:?} has an empty segment (`//`); requests are normalized with merged slashes, so it could never match"
    )]
    EmptySegment(String),
    #[error("path {0:?} has a `.` or `..` segment, which request normalization removes")]
    DotSegment(String),
    #[error("path {0:?} is not valid percent-encoded UTF-8")]
    Encoding(String),
    #[error("path {0:?} encodes a `/` (%2F) or a control character")]
    EncodedSeparator(String),
    #[error("path {0:?}: {1}")]
    Normalization(String, String),
    #[error("host routing: {0:?} does not start with a host name")]
    NoHost(String),
}

impl RoutePath {
    /// Checks `raw`, the part of the API URL after `/api/routes`.
    pub fn parse(raw: &str, host_routing: bool) -> Result<RoutePath, PathError> {
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let mut cleaned = if raw.starts_with('/') { raw.to_string() } else { format!("/{raw}") };
        if cleaned.len() > 1 && cleaned.ends_with('/') {
            cleaned.pop();
        }
        if cleaned.len() > 1 {
            for segment in cleaned[1..].split('/') {
                match segment {
                    "" => return Err(PathError::EmptySegment(raw.to_string())),
                    "." | ".." => return Err(PathError::DotSegment(raw.to_string())),
                    _ => {}
                }
            }
        }
        let key = percent_decode(&cleaned).ok_or_else(|| PathError::Encoding(raw.to_string()))?;
        if key.matches('/').count() != cleaned.matches('/').count() || key.chars().any(char::is_control) {
            return Err(PathError::EncodedSeparator(raw.to_string()));
        }
        let (host, local) = if host_routing && cleaned != "/" {
            let rest = &cleaned[1..];
            let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
            let host = percent_decode(host).unwrap_or_default().to_ascii_lowercase();
            if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b)) {
                return Err(PathError::NoHost(raw.to_string()));
            }
            (Some(host), path)
        } else {
            (None, cleaned.clone())
        };
        let normalized = normalize(&local, PathNormalization::MergeSlashes)
            .map_err(|error| PathError::Normalization(raw.to_string(), error.to_string()))?;
        if normalized.query.is_some() {
            return Err(PathError::Normalization(raw.to_string(), "a route path has no query".to_string()));
        }
        let mut local = normalized.path;
        if local.len() > 1 && local.ends_with('/') {
            local.pop();
        }
        Ok(RoutePath { raw: cleaned, key, host, local })
    }
}

/// `%XX` decoded; `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(value);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chp_keys_are_cleaned_like_chps() {
        let path = RoutePath::parse("/user/alice/", false).unwrap();
        assert_eq!((path.key.as_str(), path.local.as_str(), path.host), ("/user/alice", "/user/alice", None));
        assert_eq!(RoutePath::parse("", false).unwrap().key, "/");
        assert_eq!(RoutePath::parse("/", false).unwrap().local, "/");
        assert_eq!(RoutePath::parse("/user/jo%20hn", false).unwrap().key, "/user/jo hn");
        assert_eq!(RoutePath::parse("/user/a@b.c", false).unwrap().local, "/user/a@b.c");
    }

    #[test]
    fn host_routing_takes_the_first_segment() {
        let path = RoutePath::parse("/Alice.Hub.example.com/user/alice", true).unwrap();
        assert_eq!(path.host.as_deref(), Some("alice.hub.example.com"));
        assert_eq!(path.local, "/user/alice");
        assert_eq!(RoutePath::parse("/hub.example.com/", true).unwrap().local, "/");
        assert_eq!(RoutePath::parse("/", true).unwrap().host, None);
        assert!(matches!(RoutePath::parse("/bad host/", true), Err(PathError::NoHost(_))));
    }

    #[test]
    fn paths_that_escape_normalization_are_refused() {
        assert!(matches!(RoutePath::parse("/user//a", false), Err(PathError::EmptySegment(_))));
        assert!(matches!(RoutePath::parse("/user/../admin", false), Err(PathError::DotSegment(_))));
        assert!(matches!(RoutePath::parse("/user/a%2Fb", false), Err(PathError::EncodedSeparator(_))));
        assert!(matches!(RoutePath::parse("/user/%0a", false), Err(PathError::EncodedSeparator(_))));
        assert!(matches!(RoutePath::parse("/user/%zz", false), Err(PathError::Encoding(_))));
        assert!(matches!(RoutePath::parse(&"/a".repeat(2000), false), Err(PathError::TooLong)));
    }
}
