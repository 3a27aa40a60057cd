//! `--routes-file`: the routes as JSON on disk, so a restarted proxy serves
//! what the hub added before (CHP itself forgets them, and JupyterHub
//! re-adds them only at its next route check).
//!
//! Written whole after each change, to a temporary file renamed over the
//! old one: a crash leaves the previous or the next version, never half.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One saved route.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedRoute {
    /// The route's path as the API was given it.
    pub path: String,
    /// The posted body, target included.
    pub data: Map<String, Value>,
    /// Milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<i64>,
}

#[derive(Deserialize)]
struct RoutesFile {
    // `version` (1) is written for later formats; this one ignores it.
    routes: Vec<SavedRoute>,
}

/// Why the routes file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a routes file: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// The saved routes; none when the file does not exist yet.
pub fn load(path: &Path) -> Result<Vec<SavedRoute>, PersistError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PersistError::Read { path: path.display().to_string(), source }),
    };
    let file: RoutesFile = serde_json::from_slice(&text)
        .map_err(|source| PersistError::Parse { path: path.display().to_string(), source })?;
    Ok(file.routes)
}

/// Replaces the file with `routes`.
pub fn save(path: &Path, routes: &[SavedRoute]) -> Result<(), PersistError> {
    let write_error = |source| PersistError::Write { path: path.display().to_string(), source };
    // The same shape as `RoutesFile`, around the borrowed slice.
    let mut text = serde_json::to_vec(&serde_json::json!({ "version": 1, "routes": routes }))
        .map_err(|e| write_error(std::io::Error::other(e)))?;
    text.push(b'\n');
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, &text).map_err(write_error)?;
    std::fs::rename(&temporary, path).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_routes_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        assert!(load(&path).unwrap().is_empty(), "no file yet: no routes");
        let data = Map::from_iter([("target".to_string(), Value::from("http://127.0.0.1:1"))]);
        save(&path, &[SavedRoute { path: "/user/a".into(), data, last_activity: Some(7) }]).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!((loaded[0].path.as_str(), loaded[0].last_activity), ("/user/a", Some(7)));
        std::fs::write(&path, "{").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("is not a routes file"));
    }
}
