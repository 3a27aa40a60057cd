//! Names and sort keys of the pieces an incremental translation produces.
//!
//! A route's key is computed from what decides its place, so that any
//! translator (incremental or from scratch, on any controller replica)
//! hands out the same key for the same route and nothing else has to move
//! when one route comes or goes:
//!
//! * virtual hosts: exact names, then wildcards longest first, then `*`
//!   (Istio's host precedence);
//! * routes: those that are not catch-alls first, then the catch-alls; each
//!   part ordered by the VirtualService's creation time, name and
//!   namespace, then by position in `http[]`.
//!
//! Keys are compared byte-wise. Names and namespaces are separated by a NUL
//! byte, which sorts before every character a Kubernetes name can hold, so
//! that `("a", "z")` still sorts before `("ab", "a")`.

use crate::translate::MergeKey;

/// Offset that makes every representable timestamp's nanoseconds positive.
const NANOS_OFFSET: i128 = 10_i128.pow(24);

/// The sort key of a listener on `port`.
pub fn listener_order(port: u16) -> String {
    format!("{port:05}")
}

/// The sort key of a virtual host serving `domain`.
pub fn virtual_host_order(domain: &str) -> String {
    match domain {
        "*" => "2".to_string(),
        wildcard if wildcard.starts_with("*.") => {
            // Longest first: the complement of the length sorts ascending.
            format!("1{:06}{wildcard}", 999_999usize.saturating_sub(wildcard.len()))
        }
        exact => format!("0{exact}"),
    }
}

/// Which part of a virtual host's route list a route is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RoutePart {
    /// Routes with a condition on something other than "any path".
    Ordered,
    /// Catch-alls, which Istio moves behind every other route.
    CatchAll,
}

/// The sort key of the `index`-th route of the VirtualService ordered by
/// `merge`, in `part`.
pub fn route_order(part: RoutePart, merge: &MergeKey, index: usize) -> String {
    let (created, name, namespace) = merge;
    let part = match part {
        RoutePart::Ordered => '0',
        RoutePart::CatchAll => '1',
    };
    // No timestamp is Istio's zero time: older than any real one.
    let created = match created {
        None => "0".to_string(),
        Some(time) => format!("1{:025}", time.0.as_nanosecond() + NANOS_OFFSET),
    };
    format!("{part}{created}{name}\u{0}{namespace}\u{0}{index:06}")
}

/// The resource name of such a route under `virtual_host` (a
/// `listener/virtual host` name).
pub fn route_name(virtual_host: &str, part: RoutePart, namespace: &str, name: &str, index: usize) -> String {
    match part {
        RoutePart::Ordered => format!("{virtual_host}/{namespace}.{name}.{index}"),
        RoutePart::CatchAll => format!("{virtual_host}/{namespace}.{name}.{index}~last"),
    }
}

#[cfg(test)]
mod tests {
    use portico_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn time(seconds: i64, nanos: i32) -> Option<Time> {
        Some(Time(portico_api::k8s_openapi::jiff::Timestamp::new(seconds, nanos).unwrap()))
    }

    #[test]
    fn route_keys_sort_like_istio_merge_order() {
        let keys = [
            (RoutePart::Ordered, (None, "z".to_string(), "z".to_string()), 0),
            (RoutePart::Ordered, (time(-5, 0), "a".to_string(), "a".to_string()), 0),
            (RoutePart::Ordered, (time(0, 0), "a".to_string(), "z".to_string()), 0),
            (RoutePart::Ordered, (time(0, 0), "ab".to_string(), "a".to_string()), 0),
            (RoutePart::Ordered, (time(0, 0), "ab".to_string(), "a".to_string()), 1),
            (RoutePart::Ordered, (time(0, 500_000_000), "a".to_string(), "a".to_string()), 0),
            (RoutePart::Ordered, (time(1_700_000_000, 0), "a".to_string(), "a".to_string()), 0),
            (RoutePart::CatchAll, (None, "a".to_string(), "a".to_string()), 0),
        ];
        let encoded: Vec<String> = keys.iter().map(|(part, merge, index)| route_order(*part, merge, *index)).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        // The tuple order agrees.
        let mut tuples = keys.to_vec();
        tuples.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
        assert_eq!(tuples, keys.to_vec());
    }

    #[test]
    fn virtual_host_keys_sort_exact_then_longest_wildcard_then_any() {
        let domains = ["a.example.com", "b.com", "*.long.example.com", "*.example.com", "*.com", "*"];
        let keys: Vec<String> = domains.iter().map(|d| virtual_host_order(d)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
