//! A minimal Pingora reverse proxy: the benchmarks' reference for what
//! Pingora itself costs, so that Portico's own overhead can be told apart
//! from the framework's (`bench/run` runs it next to nginx and HAProxy).
//!
//! Every request goes to one upstream over pooled keep-alive connections,
//! with Pingora's defaults and nothing else: no routing, no metrics, no
//! logging, no header rewriting.
//!
//!     pingora_minimal <listen address> <upstream address> <threads> [independent]
//!
//! `independent` lays the workers out as Portico's `--workers independent`
//! does (one service of one thread per worker, on the same address), to
//! tell that layout's gain apart from Portico's own cost. The bench runs
//! Pingora's default, one runtime shared by all workers.

// The bench-only counting allocator (feature `count-allocs`) is the one
// unsafe impl; the default build has none.
#![cfg_attr(not(feature = "count-allocs"), forbid(unsafe_code))]
#![cfg_attr(feature = "count-allocs", deny(unsafe_code))]

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora_core::prelude::HttpPeer;
use pingora_core::server::Server;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_error::Result;
use pingora_proxy::{ProxyHttp, Session};

/// Bench builds only: allocations per request, reported like the gateway's.
#[cfg(feature = "count-allocs")]
#[path = "../src/alloc_count.rs"]
mod alloc_count;
#[cfg(feature = "count-allocs")]
#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

struct Minimal {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Minimal {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "count-allocs")]
    alloc_count::report_from_env();
    let mut args = std::env::args().skip(1);
    let usage = "usage: pingora_minimal <listen address> <upstream address> <threads> [independent]";
    let listen = args.next().ok_or(usage)?;
    let upstream: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let threads: usize = args.next().ok_or(usage)?.parse()?;
    let independent = match args.next().as_deref() {
        None => false,
        Some("independent") => true,
        Some(_) => return Err(usage.into()),
    };

    // Shutdown at once on SIGTERM (Pingora's default grace is 5 min): a
    // bench run stops it between cases, and a profile-guided training build
    // writes its profile only at a clean exit. Nothing on the request path.
    let conf = ServerConf {
        threads,
        upstream_keepalive_pool_size: 1024,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    for _ in 0..if independent { threads } else { 1 } {
        let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Minimal { upstream });
        proxy.threads = independent.then_some(1);
        proxy.add_tcp(&listen);
        server.add_service(proxy);
    }
    server.run_forever()
}
