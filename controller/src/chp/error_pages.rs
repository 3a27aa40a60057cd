//! `--chp-error-target` and `--chp-error-path`: configurable-http-proxy's
//! error pages in cluster mode, served by every gateway on the CHP port.
//!
//! The gateways get them with the port's listener, like the routes: a
//! target URL they fetch `<url><code>?url=<request>` from (JupyterHub's
//! `/hub/error/<code>`: "your server is not running"), or the pages of a
//! folder read here once at start-up (`<code>.html`, `error.html` for the
//! other codes), since a gateway replica cannot see the controller's files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use portico_routing::table::ErrorPages;

/// A page larger than this is refused (the gateways keep every page in
/// memory and receive them in one discovery message).
const MAX_PAGE_BYTES: u64 = 256 * 1024;

/// Why the error pages cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ErrorPagesError {
    #[error("--chp-error-target {0:?}: {1}")]
    Target(String, portico_chp::TargetError),
    #[error("--chp-error-path {}: cannot read it: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("--chp-error-path {}: {size} bytes, more than {MAX_PAGE_BYTES} a page may have", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("--chp-error-path {}: no <code>.html or error.html in it", .0.display())]
    Empty(PathBuf),
}

/// The pages of `--chp-error-target URL`.
pub fn from_target(url: &str) -> Result<ErrorPages, ErrorPagesError> {
    let base = portico_chp::error_target(url).map_err(|error| ErrorPagesError::Target(url.to_string(), error))?;
    Ok(ErrorPages::Target { url: base })
}

/// The pages of folder `dir`: `<code>.html` by status code, `error.html`
/// for the rest (CHP's `--error-path`). Other files are left alone.
pub fn from_folder(dir: &Path) -> Result<ErrorPages, ErrorPagesError> {
    let read_error = |path: &Path, source| ErrorPagesError::Read { path: path.to_path_buf(), source };
    let mut by_status = BTreeMap::new();
    let mut other = None;
    for entry in std::fs::read_dir(dir).map_err(|e| read_error(dir, e))? {
        let path = entry.map_err(|e| read_error(dir, e))?.path();
        let Some(stem) = path.extension().filter(|e| *e == "html").and(path.file_stem()).and_then(|s| s.to_str())
        else {
            continue;
        };
        let status = match stem.parse::<u16>() {
            Ok(code) if (100..600).contains(&code) => Some(code),
            _ if stem == "error" => None,
            _ => continue,
        };
        let size = std::fs::metadata(&path).map_err(|e| read_error(&path, e))?.len();
        if size > MAX_PAGE_BYTES {
            return Err(ErrorPagesError::TooLarge { path, size });
        }
        let page = std::fs::read_to_string(&path).map_err(|e| read_error(&path, e))?;
        match status {
            Some(code) => {
                by_status.insert(code, page);
            }
            None => other = Some(page),
        }
    }
    if by_status.is_empty() && other.is_none() {
        return Err(ErrorPagesError::Empty(dir.to_path_buf()));
    }
    Ok(ErrorPages::Pages { by_status, other })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_gives_pages_by_code_and_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("404.html"), "<p>no such page</p>").unwrap();
        std::fs::write(dir.path().join("error.html"), "<p>oops</p>").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        std::fs::write(dir.path().join("about.html"), "ignored").unwrap();
        let ErrorPages::Pages { by_status, other } = from_folder(dir.path()).unwrap() else { panic!("pages") };
        assert_eq!(by_status.len(), 1);
        assert_eq!(by_status[&404], "<p>no such page</p>");
        assert_eq!(other.as_deref(), Some("<p>oops</p>"));
    }

    #[test]
    fn bad_settings_name_the_flag_and_the_reason() {
        let empty = tempfile::tempdir().unwrap();
        let error = from_folder(empty.path()).unwrap_err().to_string();
        assert!(error.starts_with("--chp-error-path ") && error.contains("no <code>.html"), "{error}");
        let missing = from_folder(&empty.path().join("missing")).unwrap_err().to_string();
        assert!(missing.contains("cannot read it"), "{missing}");
        let error = from_target("https://hub/hub/error").unwrap_err().to_string();
        assert!(
            error.starts_with("--chp-error-target \"https://hub/hub/error\": ") && error.contains("scheme"),
            "{error}"
        );
        assert_eq!(
            from_target("http://hub:8081/hub/error").unwrap(),
            ErrorPages::Target { url: "http://hub:8081/hub/error/".into() }
        );
    }
}
