//! The folder of YAML a gateway under test reads and watches.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A temporary config folder, removed on drop.
#[derive(Debug)]
pub struct ConfigDir {
    dir: TempDir,
}

impl ConfigDir {
    /// An empty folder.
    pub fn new() -> ConfigDir {
        ConfigDir { dir: tempfile::Builder::new().prefix("portico-config-").tempdir().expect("creating a config dir") }
    }

    /// Where it is (pass it as `--config-dir`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `yaml` to `name` in the folder; see [`write_yaml`].
    pub fn write(&self, name: &str, yaml: &str) -> PathBuf {
        write_yaml(self.path(), name, yaml)
    }

    /// Removes `name` from the folder.
    pub fn remove(&self, name: &str) {
        let path = self.path().join(name);
        std::fs::remove_file(&path).unwrap_or_else(|error| panic!("removing {}: {error}", path.display()));
    }
}

impl Default for ConfigDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes `yaml` to `dir/name` atomically and returns the path.
///
/// A watching gateway must never read a half-written file, so the text goes
/// to a hidden temporary file first (its name does not end in `.yaml`, so the
/// gateway ignores it) and is renamed into place.
pub fn write_yaml(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    let staging = dir.join(format!(".{name}.tmp"));
    std::fs::write(&staging, yaml).unwrap_or_else(|error| panic!("writing {}: {error}", staging.display()));
    std::fs::rename(&staging, &path).unwrap_or_else(|error| panic!("renaming into {}: {error}", path.display()));
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_removes_files_without_leaving_staging_files() {
        let config = ConfigDir::new();
        let path = config.write("a.yaml", "kind: X\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "kind: X\n");
        config.write("a.yaml", "kind: Y\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "kind: Y\n");
        let names: Vec<_> = std::fs::read_dir(config.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec!["a.yaml"]);
        config.remove("a.yaml");
        assert!(!path.exists());
    }
}
