//! The `porticoctl` binary, run as a user runs it.

use std::process::Command;

use serde_json::Value;

use crate::binary;
use crate::process::clear_settings_env;

/// Runs `porticoctl <args>`; returns (exit success, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(binary("porticoctl"));
    clear_settings_env(&mut command);
    let output = command.args(args).output().unwrap_or_else(|error| panic!("running porticoctl {args:?}: {error}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `porticoctl proxy-status --controller URL -o json`, parsed; `None` when
/// the controller does not answer.
pub fn proxy_status(controller: &str) -> Option<Value> {
    let (ok, stdout, _) = run(&["proxy-status", "--controller", controller, "-o", "json"]);
    if !ok {
        return None;
    }
    serde_json::from_str(&stdout).ok()
}

/// The gateway named `name` in a proxy-status document.
pub fn gateway<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["gateways"].as_array()?.iter().find(|g| g["name"] == name)
}

/// Whether every kind of gateway `name` is SYNCED.
pub fn synced(status: &Value, name: &str) -> bool {
    gateway(status, name)
        .is_some_and(|g| ["LISTENERS", "ROUTES", "ENDPOINTS"].iter().all(|kind| g["kinds"][kind]["state"] == "SYNCED"))
}
