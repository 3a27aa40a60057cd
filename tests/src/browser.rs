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
    /// With a stay ([`run_cell_and_stay`]): Unix ms when the output showed,
    /// and when the tab was closed.
    #[serde(default)]
    pub cell_done_ms: i64,
    #[serde(default)]
    pub stayed_until_ms: i64,
    /// What the page sent on its kernel websocket: `binary` (Jupyter's
    /// v1.kernel.websocket.jupyter.org protocol) or `text` (JSON).
    #[serde(default)]
    pub kernel_frames: String,
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
    lab_cell(lab_url, headers, cookies, 0.0, &[])
}

/// [`run_cell_in_lab`] for a notebook that may be stopped or starting: the
/// first load may be the gateway's starting page, which must turn into the
/// lab by itself ([`LabRun::starting_phases`] says what it showed).
pub fn run_cell_in_waking_lab(lab_url: &str, headers: &[(&str, &str)]) -> LabRun {
    lab_cell(lab_url, headers, &[], 0.0, &["--allow-starting", "--timeout", "240"])
}

/// [`run_cell_in_lab`], then the tab stays open and untouched for `stay_secs`.
pub fn run_cell_and_stay(lab_url: &str, stay_secs: f64) -> LabRun {
    lab_cell(lab_url, &[], &[], stay_secs, &[])
}

fn lab_cell(
    lab_url: &str,
    headers: &[(&str, &str)],
    cookies: &[(String, String)],
    stay_secs: f64,
    options: &[&str],
) -> LabRun {
    let screenshot = std::env::temp_dir().join(format!("portico-lab-{}.png", std::process::id()));
    let mut command = Command::new(venv_python());
    command.arg(workspace_root().join("tests/browser/lab_cell.py")).arg(lab_url).arg("--screenshot").arg(&screenshot);
    if stay_secs > 0.0 {
        command.arg("--stay").arg(stay_secs.to_string());
    }
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
        cell_done_ms: 0,
        stayed_until_ms: 0,
        kernel_frames: String::new(),
    })
}

/// What `tests/browser/page_idle.py` saw: a non-Jupyter app's tab left idle,
/// then typed into.
#[derive(Debug, Deserialize)]
pub struct IdlePage {
    pub ok: bool,
    #[serde(default)]
    pub error: String,
    /// Unix ms when the page had loaded, when the idle stay ended, and
    /// when typing began.
    #[serde(default)]
    pub loaded_ms: i64,
    #[serde(default)]
    pub idle_until_ms: i64,
    #[serde(default)]
    pub typed_ms: i64,
    /// Every websocket message the page sent: (Unix ms, bytes).
    #[serde(default)]
    pub client_messages: Vec<(i64, u64)>,
}

/// Opens `url`, waits for `wait_for`, leaves the tab idle for `stay_secs`,
/// then clicks `selector` and types `text` (and Enter).
pub fn idle_then_type(url: &str, wait_for: &str, stay_secs: f64, selector: &str, text: &str) -> IdlePage {
    typing_every(url, wait_for, stay_secs, 1, selector, text)
}

/// [`idle_then_type`] `times` times over: a person at work in the app,
/// typing something new every `every_secs` (and two seconds).
pub fn typing_every(url: &str, wait_for: &str, every_secs: f64, times: u32, selector: &str, text: &str) -> IdlePage {
    let output = Command::new(venv_python())
        .arg(workspace_root().join("tests/browser/page_idle.py"))
        .arg(url)
        .args(["--stay", &every_secs.to_string(), "--wait-for", wait_for, "--type", selector, text])
        .args(["--repeat", &times.to_string()])
        .output()
        .expect("running tests/browser/page_idle.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|error| IdlePage {
        ok: false,
        error: format!(
            "page_idle.py printed no result ({error}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        loaded_ms: 0,
        idle_until_ms: 0,
        typed_ms: 0,
        client_messages: Vec::new(),
    })
}
