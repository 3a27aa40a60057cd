//! A pod's network: its own network namespace holding the pod's IP, joined to
//! the host by a veth pair whose host end is on the test cluster's bridge.
//!
//! The names and addresses are the ones `tests/kube/up` set up (and
//! `tests/kube/down` removes whatever a crashed test left): namespaces
//! `portico-pod-<uid prefix>`, the bridge `portico-pods` holding
//! 198.19.255.254/15, pods in 198.18.0.0/16.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Prefix of every pod network namespace (`tests/kube/lib.sh`'s `pod_netns_prefix`).
pub const NETNS_PREFIX: &str = "portico-pod-";
/// The bridge the host ends join (`pod_bridge`).
pub const BRIDGE: &str = "portico-pods";
/// The host's address on the pod network: the pods' default gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 254);
/// The pod network's prefix length (198.18.0.0/15).
pub const PREFIX_LEN: u8 = 15;

/// One pod's network namespace, removed (with its veth pair) on drop.
#[derive(Debug)]
pub struct PodSandbox {
    netns: String,
    ip: Ipv4Addr,
}

impl PodSandbox {
    /// Creates `portico-pod-<id>` holding `ip` on its `eth0`, with a default
    /// route through the host. `id` is short (veth names hold 15 bytes).
    /// `hosts` stands in for cluster DNS: `ip netns exec` mounts
    /// `/etc/netns/<netns>/hosts` over `/etc/hosts` for what runs inside.
    pub fn create(id: &str, ip: Ipv4Addr, hosts: &[(String, IpAddr)]) -> Result<PodSandbox, String> {
        let netns = format!("{NETNS_PREFIX}{id}");
        let host_end = format!("pv{id}");
        let pod_end = format!("pe{id}");
        // A sandbox of the same id left by a crashed run goes first.
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_end]).output();
        let sandbox = PodSandbox { netns, ip };
        let etc = sandbox.etc_dir();
        let mut hosts_file = format!("127.0.0.1 localhost\n::1 localhost\n{ip} {id}\n");
        for (name, address) in hosts {
            hosts_file.push_str(&format!("{address} {name}\n"));
        }
        std::fs::create_dir_all(&etc)
            .and_then(|()| std::fs::write(etc.join("hosts"), hosts_file))
            .map_err(|error| format!("writing {}/hosts: {error}", etc.display()))?;
        let cidr = format!("{ip}/{PREFIX_LEN}");
        let gateway = GATEWAY.to_string();
        let ns = sandbox.netns.as_str();
        ip_command(&["netns", "add", ns])
            .map_err(|error| format!("{error} (the pod runner needs root to create a network namespace per pod)"))?;
        ip_command(&["link", "add", &host_end, "type", "veth", "peer", "name", &pod_end])?;
        ip_command(&["link", "set", &pod_end, "netns", ns])?;
        ip_command(&["-n", ns, "link", "set", &pod_end, "name", "eth0"])?;
        ip_command(&["-n", ns, "link", "set", "eth0", "address", &mac_of(ip)])?;
        ip_command(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip_command(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip_command(&["-n", ns, "link", "set", "lo", "up"])?;
        ip_command(&["-n", ns, "route", "add", "default", "via", &gateway])?;
        ip_command(&["link", "set", &host_end, "master", BRIDGE])
            .map_err(|error| format!("{error} (is the test cluster up? tests/kube/up makes the bridge {BRIDGE})"))?;
        ip_command(&["link", "set", &host_end, "up"])?;
        Ok(sandbox)
    }

    /// `/etc/netns/<netns>`: files `ip netns exec` mounts over `/etc`.
    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.netns)
    }

    /// The namespace's name, for `ip netns exec`.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The pod's IP.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// `ip netns exec <netns> <program>`: a command that runs in the pod's network.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]).arg(program);
        command
    }
}

impl Drop for PodSandbox {
    fn drop(&mut self) {
        // Whatever still runs in it (a kernel a server left) goes first: a
        // namespace in use is not freed.
        if let Ok(output) = Command::new("ip").args(["netns", "pids", &self.netns]).output() {
            for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<libc::pid_t>() {
                    // SAFETY: kill(2) has no memory-safety preconditions; the
                    // pid is one the kernel listed in this pod's namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        // Deleting the namespace deletes its end of the veth, and so the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// The pod end's MAC address, derived from its IP as the CNI bridge plugin
/// derives it (`0a:58` and the four bytes of the address). kwok hands a
/// deleted pod's IP to the next pod; with a random MAC, the host's neighbour
/// entry for that IP would still name the old pod's interface, and
/// connections to the new pod would time out until the entry was resolved
/// again (seconds: a woken notebook's held requests failed, and a notebook
/// nobody could reach was culled as idle).
fn mac_of(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Runs `ip args`, with its stderr in the error.
fn ip_command(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|error| format!("running ip {args:?}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_ip_always_gets_the_same_mac() {
        assert_eq!(mac_of(Ipv4Addr::new(198, 18, 0, 3)), "0a:58:c6:12:00:03");
        assert_ne!(mac_of(Ipv4Addr::new(198, 18, 1, 3)), mac_of(Ipv4Addr::new(198, 18, 0, 3)));
    }
}
