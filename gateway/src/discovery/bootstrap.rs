//! Start-up in cluster mode: wait for the controller's first full state
//! before binding anything (its listeners say which ports to bind), while
//! answering readiness probes with 503 so the pod is visibly not ready.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use portico_routing::Diagnostic;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::client::DiscoveryClient;
use crate::state::Ports;

const NOT_READY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 36\r\n\
connection: close\r\n\r\nwaiting for the first configuration\n";

/// Blocks until the first configuration arrives; returns its listeners.
pub fn first_ports(client: &DiscoveryClient, health: SocketAddr) -> anyhow::Result<(Ports, Vec<Diagnostic>)> {
    // A runtime of its own: Pingora starts its runtimes only later, and this
    // one (with its sockets) is gone before Pingora binds the same ports.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the bootstrap runtime")?;
    runtime.block_on(async {
        let listener =
            TcpListener::bind(health).await.with_context(|| format!("binding the health listener {health}"))?;
        let probes = tokio::spawn(answer_not_ready(listener));
        tracing::info!(url = %client.url(), "waiting for the first configuration from the controller");
        let first = client.first_ports().await;
        probes.abort();
        Ok(first)
    })
}

async fn answer_not_ready(listener: TcpListener) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            // Read the request first: closing with unread bytes would reset
            // the connection before the client sees the answer.
            let mut buffer = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.read(&mut buffer)).await;
            let _ = socket.write_all(NOT_READY).await;
            let _ = socket.shutdown().await;
        });
    }
}
