//! `portico-fake-notebook` (bench/upstream): answers any notebook path with
//! a small JSON body, so tests of routing need no Jupyter per notebook.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{ChildProcess, Stop};
use crate::raw_http;
use crate::wait::poll;
use crate::{binary, free_port};

/// A running fake notebook server, killed on drop.
#[derive(Debug)]
pub struct FakeNotebook {
    process: ChildProcess,
    address: SocketAddr,
    _dir: TempDir,
}

impl FakeNotebook {
    /// Starts one on a free loopback port and waits until it answers.
    pub fn start() -> FakeNotebook {
        FakeNotebook::start_on(std::net::IpAddr::from([127, 0, 0, 1]))
    }

    /// Starts one on a free port of `ip` (an EndpointSlice may not name a
    /// loopback address) and waits until it answers.
    pub fn start_on(ip: std::net::IpAddr) -> FakeNotebook {
        let dir = tempfile::Builder::new().prefix("portico-fake-").tempdir().expect("creating a fake notebook dir");
        let address = SocketAddr::new(ip, free_port());
        let mut command = Command::new(binary("portico-fake-notebook"));
        command.args(["--listen", &address.to_string(), "--threads", "1"]);
        let process = ChildProcess::spawn("portico-fake-notebook", command, &dir.path().join("fake.log"), Stop::Kill);
        let fake = FakeNotebook { process, address, _dir: dir };
        let up = poll(Duration::from_secs(20), || raw_http::get(address, "fake", "/notebook/a/b/api/status").ok());
        assert!(up.is_some(), "portico-fake-notebook did not answer on {address}; log:\n{}", fake.process.log_tail(20));
        fake
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}
