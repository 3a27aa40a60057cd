//! A route as CHP's `POST /api/routes/<path>` gives it: the path, checked,
//! and a JSON body holding `target` and any data the client keeps with it.
//! Checked the same way alone and in cluster mode, so a body one refuses
//! the other refuses too, with the same sentence.

use serde_json::{Map, Value};

use crate::route_path::{PathError, RoutePath};
use crate::target::{Target, TargetError};

/// What the API shows, never what a client stores.
const SHOWN_ONLY: &str = "last_activity";

/// Why a route was not added. Nothing serving changes.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("path: {0}")]
    Path(#[from] PathError),
    #[error("target: {0}")]
    Target(#[from] TargetError),
    #[error("target: Must specify 'target' as string")]
    MissingTarget,
    #[error("body: must be a JSON object")]
    NotAnObject,
}

/// A checked route.
#[derive(Clone, Debug)]
pub struct CheckedRoute {
    pub path: RoutePath,
    pub target: Target,
    /// The body as posted (target included, `last_activity` dropped): CHP
    /// returns it as given.
    pub data: Map<String, Value>,
}

impl CheckedRoute {
    /// Checks `raw_path` (after `/api/routes`) and the posted `body`.
    pub fn parse(raw_path: &str, body: Value, host_routing: bool) -> Result<CheckedRoute, RouteError> {
        let Value::Object(data) = body else { return Err(RouteError::NotAnObject) };
        CheckedRoute::from_data(raw_path, data, host_routing)
    }

    /// [`CheckedRoute::parse`] of a body known to be an object.
    pub fn from_data(
        raw_path: &str,
        mut data: Map<String, Value>,
        host_routing: bool,
    ) -> Result<CheckedRoute, RouteError> {
        let path = RoutePath::parse(raw_path, host_routing)?;
        let target = match data.get("target") {
            Some(Value::String(text)) => Target::parse(text)?,
            _ => return Err(RouteError::MissingTarget),
        };
        data.remove(SHOWN_ONLY);
        Ok(CheckedRoute { path, target, data })
    }
}

/// A route as the API shows it: the posted data, `host` with host routing,
/// and `last_activity` (unix milliseconds) when known.
pub fn shown(data: &Map<String, Value>, path: &RoutePath, last_activity_ms: Option<i64>) -> Map<String, Value> {
    let mut shown = data.clone();
    if let Some(host) = &path.host {
        shown.insert("host".to_string(), Value::String(host.clone()));
    }
    if let Some(last) = last_activity_ms {
        shown.insert(SHOWN_ONLY.to_string(), Value::String(crate::timestamp::format_ms(last)));
    }
    shown
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_body_needs_a_usable_target_and_loses_last_activity() {
        let route = CheckedRoute::parse(
            "/user/a/",
            json!({"target": "http://10.0.0.5:8888", "user": "a", "last_activity": "x"}),
            false,
        )
        .unwrap();
        assert_eq!((route.path.key.as_str(), route.target.authority()), ("/user/a", "10.0.0.5:8888".to_string()));
        assert_eq!(route.data.get("last_activity"), None);
        assert_eq!(route.data["user"], "a");
        assert!(matches!(CheckedRoute::parse("/a", json!({"target": 7}), false), Err(RouteError::MissingTarget)));
        assert!(matches!(CheckedRoute::parse("/a", json!([1]), false), Err(RouteError::NotAnObject)));
        assert!(matches!(
            CheckedRoute::parse("/a/../b", json!({"target": "http://a:1"}), false),
            Err(RouteError::Path(_))
        ));
    }
}
