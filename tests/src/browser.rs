//! A user's browser: JupyterLab opened in headless Chromium, a cell run.
//!
//! `tests/browser/lab_cell.py` drives Debian's Chromium with Playwright
//! (both installed by `scripts/install-deps`): it loads the lab page, creates
//! a notebook from the launcher, types a cell and waits for its output. That
//! is everything a person does on their first visit, so it proves the page,
//! its scripts, the REST calls and the kernel websocket all made it through
//! the gateway, not only the requests a test thought to send.

use std::process::Command;

use serde::Deserialize;

use crate::jupyter::venv_python;
use crate::workspace_root;

/// What the browser saw.
#[derive(Debug, Deserialize)]
pub struct LabRun {
    /// The lab loaded and the cell printed what was expected.
    pub ok: bool,
    /// The cell's output (on success).
    #[serde(default)]
    pub output: String,
    /// Milliseconds from Shift+Enter to the output (kernel start included).
    #[serde(default)]
    pub kernel_ms: u64,
    /// What went wrong, as a user would describe it (on failure).
    #[serde(default)]
    pub error: String,
    /// A PNG of the page when it failed.
    #[serde(default)]
    pub screenshot: Option<String>,
    /// The phases the gateway's starting page showed before it turned into
    /// the lab, in order (empty when the lab answered at once).
    #[serde(default)]
    pub starting_phases: Vec<String>,
}

/// Opens `lab_url` (`.../lab`) with `headers` on every request, runs
/// `print(6 * 7)` in a new notebook and reports what the page showed.
///
/// Never panics on what the page did: the caller asserts on [`LabRun`].
pub fn run_cell_in_lab(lab_url: &str, headers: &[(&str, &str)]) -> LabRun {
    run_cell_in_lab_with_cookies(lab_url, headers, &[])
}

/// [`run_cell_in_lab`] with `cookies` set for the lab's origin first (a
/// JupyterHub user's login cookies: the hub's OAuth redirects then let the
/// browser into the user's server).
pub fn run_cell_in_lab_with_cookies(lab_url: &str, headers: &[(&str, &str)], cookies: &[(String, String)]) -> LabRun {
    run_lab(lab_url, headers, cookies, &[])
}

/// [`run_cell_in_lab`] for a notebook that may be stopped or starting: the
/// first load may be the gateway's starting page, which must turn into the
/// lab by itself ([`LabRun::starting_phases`] says what it showed).
pub fn run_cell_in_waking_lab(lab_url: &str, headers: &[(&str, &str)]) -> LabRun {
    run_lab(lab_url, headers, &[], &["--allow-starting", "--timeout", "240"])
}

fn run_lab(lab_url: &str, headers: &[(&str, &str)], cookies: &[(String, String)], options: &[&str]) -> LabRun {
    let screenshot = std::env::temp_dir().join(format!("portico-lab-{}.png", std::process::id()));
    let mut command = Command::new(venv_python());
    command.arg(workspace_root().join("tests/browser/lab_cell.py")).arg(lab_url).arg("--screenshot").arg(&screenshot);
    for (name, value) in headers {
        command.arg("--header").arg(format!("{name}:{value}"));
    }
    for (name, value) in cookies {
        command.arg("--cookie").arg(format!("{name}={value}"));
    }
    command.args(options);
    let output = command.output().expect("running tests/browser/lab_cell.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|error| LabRun {
        ok: false,
        output: String::new(),
        kernel_ms: 0,
        error: format!(
            "lab_cell.py printed no result ({error}); exit {:?}; stderr:\n{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        ),
        screenshot: None,
        starting_phases: Vec::new(),
    })
}
