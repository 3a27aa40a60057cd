//! Routes as `ChpRoute` objects and back.
//!
//! An object's name is derived from the route's key: a Kubernetes name
//! cannot hold `/` or upper case, so it is a readable slug of the key and a
//! hash of it (`chp-user-alice-3f2a...`); the key itself is `spec.path`.
//! Two keys with one name would need a 64-bit hash collision; the API still
//! refuses to overwrite another key's object rather than trust that.

use kube::api::ObjectMeta;
use portico_api::chp::{ChpRoute, ChpRouteSpec};
use portico_chp::{CheckedRoute, RouteError};
use serde_json::Value;

/// Label on every ChpRoute the API writes.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "portico-chp-api");
/// Longest slug kept from the key (names are at most 253 bytes; short is readable).
const SLUG_BYTES: usize = 40;

/// The object name of route `key`.
pub fn object_name(key: &str) -> String {
    let mut slug = String::with_capacity(SLUG_BYTES);
    for c in key.chars() {
        if slug.len() >= SLUG_BYTES {
            break;
        }
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    let hash = fnv1a64(key.as_bytes());
    if slug.is_empty() { format!("chp-{hash:016x}") } else { format!("chp-{slug}-{hash:016x}") }
}

/// FNV-1a, 64 bits: stable across builds and platforms (the name must not
/// change when the controller is upgraded).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

/// The object of a checked route, added at `now_ms`.
pub fn to_object(route: &CheckedRoute, namespace: &str, now_ms: i64) -> ChpRoute {
    let mut data = route.data.clone();
    // The target as posted (CHP shows it as given); checked, so a string.
    let target = match data.remove("target") {
        Some(Value::String(text)) => text,
        _ => route.target.to_string(),
    };
    let spec = ChpRouteSpec { path: route.path.raw.clone(), target, data, added_unix_ms: now_ms };
    let mut object = ChpRoute::new(&object_name(&route.path.key), spec);
    object.metadata = ObjectMeta {
        name: object.metadata.name.take(),
        namespace: Some(namespace.to_string()),
        labels: Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into()),
        ..ObjectMeta::default()
    };
    object
}

/// The route an object holds, checked as the API checks a POST (an object
/// written by hand gets no pass).
pub fn from_object(object: &ChpRoute, host_routing: bool) -> Result<CheckedRoute, RouteError> {
    let mut data = object.spec.data.clone();
    data.insert("target".to_string(), Value::String(object.spec.target.clone()));
    CheckedRoute::from_data(&object.spec.path, data, host_routing)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_are_valid_stable_and_tell_keys_apart() {
        let name = object_name("/user/Alice@example.com");
        assert!(name.starts_with("chp-user-alice-example-com-"), "{name}");
        assert!(name.len() <= 63 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        assert_ne!(object_name("/user/a"), object_name("/user/A"), "keys are case-sensitive");
        assert_eq!(object_name("/"), format!("chp-{:016x}", fnv1a64(b"/")));
        assert!(object_name(&format!("/{}", "x".repeat(500))).len() < 63);
    }

    #[test]
    fn an_object_carries_the_route_exactly() {
        let body = json!({"target": "http://10.0.0.5:8888", "user": "alice", "jupyterhub": true});
        let route = CheckedRoute::parse("/user/alice/", body, false).unwrap();
        let object = to_object(&route, "hub", 1_000);
        assert_eq!(object.spec.path, "/user/alice");
        assert_eq!(object.spec.data, *json!({"user": "alice", "jupyterhub": true}).as_object().unwrap());
        let back = from_object(&object, false).unwrap();
        assert_eq!(back.data, route.data);
        assert_eq!((back.path, back.target), (route.path, route.target));
    }
}
