//! A child process in its own process group, logging to a file, stopped on drop.
//!
//! Servers under test start children of their own (Jupyter starts kernels),
//! so stopping only the direct child could leave processes behind: the whole
//! group is signalled. Output goes to a file rather than a pipe because
//! nobody drains a pipe while the test runs, and a full pipe would block the
//! server.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::wait::poll;

/// Removes, from `command`'s environment, every variable Portico's binaries
/// read as a flag default (`PORTICO_*`, Kubeflow's `ISTIO_*`,
/// `CLUSTER_DOMAIN`, `ADD_FSGROUP`, the downward API's `POD_*`) and
/// `KUBECONFIG`: a developer's shell must not change what a test runs. Set
/// what the test wants afterwards.
pub fn clear_settings_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let text = key.to_string_lossy();
        if text.starts_with("PORTICO_")
            || text.starts_with("ISTIO_")
            || ["CLUSTER_DOMAIN", "ADD_FSGROUP", "POD_NAME", "POD_NAMESPACE", "KUBECONFIG"].contains(&text.as_ref())
        {
            command.env_remove(&key);
        }
    }
}

/// How a [`ChildProcess`] is stopped.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// SIGKILL at once: for processes whose clean shutdown the test does not
    /// need (and whose graceful shutdown may wait for connections to drain).
    Kill,
    /// SIGTERM, then SIGKILL if the group leader has not exited in time: lets
    /// Jupyter shut its kernels down.
    Terminate(Duration),
}

/// A running child process; see the module docs.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    stop: Stop,
    stopped: bool,
}

impl ChildProcess {
    /// Spawns `command` in a new process group with stdin closed and stdout
    /// and stderr appended to `log_path`. `name` is used in messages.
    pub fn spawn(name: &str, mut command: Command, log_path: &Path, stop: Stop) -> ChildProcess {
        let log = File::create(log_path)
            .unwrap_or_else(|error| panic!("creating the log file {} of {name}: {error}", log_path.display()));
        let log_err = log.try_clone().unwrap_or_else(|error| panic!("duplicating the log file of {name}: {error}"));
        command.stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log_err)).process_group(0);
        let child = command.spawn().unwrap_or_else(|error| panic!("starting {name} ({command:?}): {error}"));
        ChildProcess { name: name.to_string(), child, log_path: log_path.to_path_buf(), stop, stopped: false }
    }

    /// The name it was started under, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (also the process group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
    }

    /// The last `lines` lines of [`Self::log`], for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the process group as configured and reaps the child. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Stop::Terminate(grace) = self.stop {
            self.signal_group(libc::SIGTERM);
            if poll(grace, || self.exited()).is_some() {
                // Stragglers (a kernel that ignored the shutdown) still go.
                self.signal_group(libc::SIGKILL);
                return;
            }
        }
        self.signal_group(libc::SIGKILL);
        if let Err(error) = self.child.wait() {
            eprintln!("reaping {}: {error}", self.name);
        }
    }

    fn signal_group(&self, signal: libc::c_int) {
        let Ok(pgid) = libc::pid_t::try_from(self.child.id()) else { return };
        // SAFETY: kill(2) has no memory-safety preconditions; a negative pid
        // addresses the process group this struct created (process_group(0)).
        // ESRCH (group already gone) is the expected outcome after an exit.
        let result = unsafe { libc::kill(-pgid, signal) };
        if result != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::ESRCH) {
                eprintln!("signalling {} (group {pgid}): {error}", self.name);
            }
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_kills_the_whole_group_and_keeps_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut command = Command::new("sh");
        // A grandchild that would outlive a plain kill of the shell.
        command.args(["-c", "echo started; sleep 300 & echo $! > grandchild; wait"]).current_dir(dir.path());
        let mut process = ChildProcess::spawn("sh", command, &log, Stop::Terminate(Duration::from_secs(5)));
        let grandchild: i32 = poll(Duration::from_secs(10), || {
            std::fs::read_to_string(dir.path().join("grandchild")).ok()?.trim().parse().ok()
        })
        .expect("the shell wrote its grandchild's pid");
        process.stop();
        assert!(process.log().contains("started"));
        // SAFETY: signal 0 only checks whether the process exists.
        let gone = poll(Duration::from_secs(5), || (unsafe { libc::kill(grandchild, 0) } != 0).then_some(()));
        assert!(gone.is_some(), "the grandchild outlived its group");
    }
}
