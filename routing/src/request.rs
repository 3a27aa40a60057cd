//! The view of a request that route matching needs, independent of any HTTP
//! library.

use std::borrow::Cow;

/// Header lookup by lower-case name.
pub trait HeaderSource {
    /// The value of `name`; several values of one header are joined with `,`
    /// (as Envoy's header matchers see them). `None` if absent or not UTF-8.
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl HeaderSource for http::HeaderMap {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut values = self.get_all(name).iter();
        let first = values.next()?.to_str().ok()?;
        match values.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = format!("{first},{}", second.to_str().ok()?);
                for value in values {
                    joined.push(',');
                    joined.push_str(value.to_str().ok()?);
                }
                Some(Cow::Owned(joined))
            }
        }
    }
}

/// A plain list of `(name, value)` pairs; names must be lower-case.
impl HeaderSource for [(String, String)] {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut values = self.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let first = values.next()?;
        let rest: Vec<&str> = values.collect();
        if rest.is_empty() {
            Some(Cow::Borrowed(first))
        } else {
            Some(Cow::Owned(std::iter::once(first).chain(rest).collect::<Vec<_>>().join(",")))
        }
    }
}

impl HeaderSource for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.as_slice().header(name)
    }
}

/// Everything a route can be conditioned on.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    /// The listener port the request arrived on.
    pub port: u16,
    /// `http` or `https`.
    pub scheme: &'a str,
    pub method: &'a str,
    /// The Host (or `:authority`) as sent.
    pub authority: &'a str,
    /// Lower-case host without port: what virtual hosts are chosen by.
    pub host: &'a str,
    /// The normalized path, without query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a dyn HeaderSource,
}

impl<'a> RequestView<'a> {
    /// The first value of query parameter `name`, percent-decoding neither
    /// side (Envoy compares raw values).
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        let query = self.query?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }
}

/// Lower-cases `authority` and strips a port (IPv6 literals keep their
/// brackets), which is how virtual hosts are chosen.
pub fn host_of(authority: &str) -> Cow<'_, str> {
    let host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |end| &authority[..=end])
    } else {
        // A port is the digits after the last colon: read back from the end
        // (every request's host; a reverse `str` search cost more).
        let bytes = authority.as_bytes();
        let digits = bytes.iter().rev().take_while(|b| b.is_ascii_digit()).count();
        match bytes.len().checked_sub(digits + 1) {
            Some(colon) if bytes[colon] == b':' => &authority[..colon],
            _ => authority,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_lowercased_without_port() {
        assert_eq!(host_of("Example.COM:8080"), "example.com");
        assert_eq!(host_of("example.com."), "example.com");
        assert_eq!(host_of("[::1]:80"), "[::1]");
        assert_eq!(host_of("localhost"), "localhost");
        assert_eq!(host_of("host:"), "host");
        assert_eq!(host_of("host:8a"), "host:8a");
        assert_eq!(host_of("a:b:80"), "a:b");
        assert_eq!(host_of("8080"), "8080");
        assert_eq!(host_of(":80"), "");
    }

    #[test]
    fn joins_repeated_headers() {
        let headers = [("x".to_string(), "a".to_string()), ("x".to_string(), "b".to_string())];
        assert_eq!(headers[..].header("x").as_deref(), Some("a,b"));
        assert_eq!(headers[..].header("y"), None);
    }
}
