//! Free TCP ports on the loopback interface, for the servers a test starts.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Ports already handed out by this process. The OS may offer a released
/// port again at once; remembering them keeps two tests running in parallel
/// in one test binary from being given the same port.
static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago and that no
/// other caller in this process has been given.
///
/// The port is free, not reserved: hand it to the process that binds it
/// soon. Servers started with it must fail rather than pick another port
/// (Jupyter gets `port_retries=0`), so a rare clash is a clear failure.
pub fn free_port() -> u16 {
    // Keep each probe listener open until the end so the OS cannot offer the
    // same port twice within this loop.
    let mut probes = Vec::new();
    for _ in 0..64 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 to find a free port");
        let port = listener.local_addr().expect("local address of a bound listener").port();
        if GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(port) {
            return port;
        }
        probes.push(listener);
    }
    panic!("no free port found after 64 tries");
}

/// This machine's own non-loopback IPv4 address (EndpointSlices may not name
/// 127.0.0.1), found by routing a UDP socket towards TEST-NET-3.
pub fn host_address() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("binding a UDP socket");
    socket.connect("203.0.113.1:9").expect("a route to TEST-NET-3");
    socket.local_addr().expect("a local address").ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let unique: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        for port in ports {
            TcpListener::bind(("127.0.0.1", port)).expect("a free port can be bound");
        }
    }
}
