//! The `portico-fake-notebook` binary: reports its port on the first stdout
//! line when given port 0, and answers the Jupyter API there.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn prints_its_address_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico-fake-notebook"))
        .args(["--listen", "127.0.0.1:0", "--threads", "1", "--body-bytes", "100"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = Server(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let addr = first.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line {first:?}")).to_string();
    assert!(!addr.ends_with(":0"), "{addr}");

    let page = get(&addr, "/notebook/ns/nb/lab");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("content-length: 100"), "{page}");

    let status = get(&addr, "/notebook/ns/nb/api/status");
    assert!(status.contains("\"kernels\":0") && status.contains("\"started\""), "{status}");
}
