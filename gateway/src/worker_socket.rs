//! `--reuse-port`: a listening socket per independent worker
//! (`SO_REUSEPORT`), so that the kernel spreads new connections over the
//! workers, as nginx's `reuseport` and Envoy's per-worker listeners do.
//!
//! Why: with one socket shared by every worker, whichever worker is awake
//! takes the backlog, so a burst of connections (a client opening its pool)
//! may land on one worker while the other idles: 16 connections at 5,000
//! requests/s were split 2:1 or worse (up to 140/17) in 4 passes of 8.
//!
//! Why not the default: where the gateway shares two cores with its
//! clients and upstream, the even split cost ~2 us of CPU per request and
//! a tenth of closed-loop throughput, with no gain in p50 or p99
//! (bench/RESULTS.md, session 17).
//!
//! Pingora keys the listening sockets it hands to an upgraded process by
//! address. Worker 0 keeps the address itself (so an upgrade from a gateway
//! that had one socket hands it over); worker `k` registers its socket as
//! `<address>#k`, and its listener is given that key as its address: Pingora
//! looks a key up before parsing it, so the socket is found, passed on at
//! the next upgrade, and claimed (an unclaimed one would be closed, rather
//! than left holding connections that no worker accepts).

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::server::{Fds, ListenFds, RuntimeOpts, ShutdownWatch};
use pingora_core::services::Service as ServiceTrait;
use pingora_core::services::listening::Service;
use tokio::net::TcpSocket;

/// The key (and listener address) of `worker`'s socket on `address`.
pub fn socket_key(address: SocketAddr, worker: usize) -> String {
    match worker {
        0 => address.to_string(),
        _ => format!("{address}#{worker}"),
    }
}

/// A proxy service, which first claims its worker's own socket (if it has
/// one) in the server's table of listening sockets, where its listener
/// looks.
pub struct WorkerService<A> {
    inner: Service<A>,
    own_socket: Option<OwnSocket>,
}

/// The address and worker of a socket of its own.
struct OwnSocket {
    address: SocketAddr,
    worker: usize,
}

impl<A> WorkerService<A> {
    /// `inner` listens on [`socket_key`]`(address, worker)`, a socket of its own.
    pub fn own_socket(inner: Service<A>, address: SocketAddr, worker: usize) -> Self {
        Self { inner, own_socket: Some(OwnSocket { address, worker }) }
    }

    /// `inner` binds or shares its sockets as Pingora does.
    pub fn shared_socket(inner: Service<A>) -> Self {
        Self { inner, own_socket: None }
    }
}

impl OwnSocket {
    /// Puts this worker's socket in `table` unless it is there already
    /// (handed over by the process this one upgrades).
    fn claim(&self, table: &mut Fds) {
        let key = socket_key(self.address, self.worker);
        if table.get(&key).is_some() {
            return;
        }
        match bind_reuseport(self.address) {
            Ok(fd) => table.add(key, fd),
            Err(error) => match table.get(&self.address.to_string()).copied() {
                // Worker 0's socket is shared when it cannot be joined: it
                // was handed over by a gateway that bound it without
                // SO_REUSEPORT.
                Some(first) if self.worker > 0 => {
                    tracing::warn!(address = %self.address, worker = self.worker, %error,
                        "no socket of its own for this worker: it shares worker 0's");
                    table.add(key, first);
                }
                // Worker 0 then binds the address as Pingora does (and
                // fails, naming it, if another process holds it).
                _ => tracing::warn!(address = %self.address, worker = self.worker, %error,
                    "cannot bind a SO_REUSEPORT socket"),
            },
        }
    }
}

/// A bound (not yet listening: Pingora's listener calls `listen`)
/// non-blocking TCP socket on `address` that other sockets of this user may
/// join.
fn bind_reuseport(address: SocketAddr) -> std::io::Result<RawFd> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As Pingora's own bind: a restarted gateway rebinds at once.
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    Ok(socket.into_raw_fd())
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServiceTrait for WorkerService<A> {
    async fn start_service(&mut self, fds: Option<ListenFds>, shutdown: ShutdownWatch, listeners_per_fd: usize) {
        if let (Some(table), Some(own)) = (&fds, &self.own_socket) {
            own.claim(&mut table.lock());
        }
        self.inner.start_service(fds, shutdown, listeners_per_fd).await;
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    use super::*;

    fn own(address: SocketAddr, worker: usize) -> OwnSocket {
        OwnSocket { address, worker }
    }

    #[test]
    fn each_worker_binds_a_socket_of_its_own_under_its_key() {
        // A free port: bound, read, released.
        let address = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        let mut table = Fds::new();
        own(address, 0).claim(&mut table);
        own(address, 1).claim(&mut table);
        let first = table.get(&address.to_string()).copied().expect("worker 0's socket, under the address");
        let second = table.get(&format!("{address}#1")).copied().expect("worker 1's socket, under address#1");
        assert_ne!(first, second, "two sockets");
    }

    #[test]
    fn a_handed_over_socket_is_kept_and_one_without_reuseport_is_shared() {
        // Handed over by a gateway without --reuse-port: no SO_REUSEPORT.
        let plain = TcpListener::bind("127.0.0.1:0").expect("a listening socket");
        let address = plain.local_addr().expect("its address");
        let mut table = Fds::new();
        table.add(address.to_string(), plain.as_raw_fd());
        own(address, 0).claim(&mut table);
        own(address, 1).claim(&mut table);
        assert_eq!(table.get(&address.to_string()), Some(&plain.as_raw_fd()), "worker 0 keeps it");
        assert_eq!(table.get(&format!("{address}#1")), Some(&plain.as_raw_fd()), "worker 1 shares it");
    }
}
