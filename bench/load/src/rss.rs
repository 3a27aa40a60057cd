//! Resident memory of a process, from `/proc/PID/status` (`VmRSS`, KiB).

use std::io;

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).ok_or_else(|| io::Error::other(format!("no VmRSS line in /proc/{pid}/status")))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t   12345 kB\nThreads: 2\n"), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
