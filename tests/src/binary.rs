//! Where the workspace and its built binaries are.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent directory").to_path_buf()
}

/// `$CARGO_TARGET_DIR`, or `<workspace>/target`. A relative
/// `CARGO_TARGET_DIR` is taken from the workspace root, where the scripts run
/// cargo.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The path of the workspace binary `name` in the debug profile.
///
/// `cargo test` builds only the binaries of the package under test, not the
/// gateway's, so this panics with the command to run when it is missing
/// rather than letting a test fail on a confusing spawn error.
pub fn binary(name: &str) -> PathBuf {
    let path = target_dir().join("debug").join(name);
    if !path.is_file() {
        panic!(
            "binary {name:?} not found at {}: run `cargo build --workspace --bins` first \
             (scripts/test does; `cargo test` alone does not build other packages' binaries)",
            path.display()
        );
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("tests").join("Cargo.toml").is_file());
    }

    #[test]
    #[should_panic(expected = "cargo build --workspace --bins")]
    fn a_missing_binary_says_how_to_build_it() {
        binary("portico-no-such-binary");
    }
}
