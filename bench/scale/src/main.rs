//! `portico-scale`: route propagation at sizes one machine's API server
//! cannot hold, simulated. The controller's real route index (its build
//! loop, translators and discovery encoding) is fed VirtualServices from
//! memory instead of watches, its real discovery server streams to many
//! gateway clients in this process over loopback gRPC, and each client
//! applies what it receives to its own route matcher, as a gateway does.
//!
//! Per size it reports: one change's time to reach every gateway (p50,
//! p99), bytes per change on the wire, CPU per change of the controller and
//! of a gateway, and the memory of the controller and of each gateway.
// One unsafe impl: the counting allocator (alloc.rs), which measures the
// heap each part holds.
#![deny(unsafe_code)]

mod alloc;
mod cluster;
mod gateways;
mod process;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::json;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// Changes made and not measured before each measured phase: the first
/// ones after a load pay for freeing its garbage and faulting pages in.
const WARM_UP: usize = 50;

/// Simulated route propagation at scale.
#[derive(Debug, Parser)]
struct Args {
    /// Existing notebook routes, one run per size.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    routes: Vec<usize>,
    /// Gateway clients, each on its own gRPC stream.
    #[arg(long, default_value_t = 50)]
    gateways: usize,
    /// Changes measured per size (half creates, half deletes).
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Load the first size, print the discovery address and serve it on
    /// ADDRESS until killed, measuring nothing: a real gateway process can
    /// then attach (`portico-gateway --discovery <url>`) and be measured at
    /// that size (bench/run's scale_simulated case does).
    #[arg(long, value_name = "ADDRESS", num_args = 0..=1, default_missing_value = "127.0.0.1:0")]
    serve: Option<std::net::SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::env::var_os("PORTICO_SCALE_MEMORY_SPLIT").is_some() {
        return memory_split(args.routes.first().copied().unwrap_or(10_000));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    if let Some(address) = args.serve {
        return runtime.block_on(serve(args.routes.first().copied().unwrap_or(10_000), address));
    }
    let mut results = Vec::new();
    for routes in &args.routes {
        // Each size in a fresh process image would be cleaner; memory is
        // measured as growth over the baseline taken right before.
        let result = runtime.block_on(run_size(*routes, args.gateways, args.changes))?;
        eprintln!("{}", serde_json::to_string(&result)?);
        results.push(result);
    }
    let report = json!({ "gateways": args.gateways, "changes": args.changes, "sizes": results });
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn run_size(routes: usize, gateway_count: usize, changes: usize) -> anyhow::Result<serde_json::Value> {
    let rss_start = process::rss_kib();
    let heap_start = alloc::live_bytes();
    eprintln!("scale: {routes} routes: loading the route index");
    let started = Instant::now();
    let cluster = cluster::SimulatedCluster::start(routes).await?;
    let load_s = started.elapsed().as_secs_f64();
    let rss_controller = process::rss_kib().saturating_sub(rss_start);
    let heap_controller = alloc::live_bytes().saturating_sub(heap_start) / 1024;
    eprintln!(
        "scale: {routes} routes: index built in {load_s:.1} s, controller heap {} MiB (RSS {} MiB)",
        heap_controller / 1024,
        rss_controller / 1024
    );

    // The controller's own cost per change, with no gateway connected.
    for i in 0..WARM_UP {
        cluster.change(2 * changes + i).await?;
        cluster.wait_version_settled().await;
    }
    let controller_cpu = {
        let cpu_before = process::cpu_seconds();
        for i in 0..changes {
            cluster.change(i).await?;
            cluster.wait_version_settled().await;
        }
        (process::cpu_seconds() - cpu_before) / changes as f64 * 1000.0
    };
    eprintln!("scale: {routes} routes: controller {controller_cpu:.3} ms CPU per change");

    eprintln!("scale: {routes} routes: connecting {gateway_count} gateways");
    let rss_before_gateways = process::rss_kib();
    let heap_before_gateways = alloc::live_bytes();
    let connected = Instant::now();
    let fleet = gateways::Fleet::connect(cluster.discovery_url(), gateway_count, cluster.route_count()).await?;
    fleet.wait_routes(cluster.route_count(), Duration::from_secs(600)).await?;
    let sync_s = connected.elapsed().as_secs_f64();
    let per_gateway_kib = process::rss_kib().saturating_sub(rss_before_gateways) / gateway_count.max(1) as u64;
    let heap_per_gateway = alloc::live_bytes().saturating_sub(heap_before_gateways) / 1024 / gateway_count.max(1);
    eprintln!(
        "scale: {routes} routes: {gateway_count} gateways in sync after {sync_s:.1} s, heap {heap_per_gateway} KiB each (RSS {per_gateway_kib} KiB)"
    );
    for i in 0..WARM_UP {
        let name = cluster.change(2 * changes + WARM_UP + i).await?;
        fleet.wait_change(&name, i.is_multiple_of(2), Duration::from_secs(30)).await?;
    }

    let mut reach = hdrhistogram::Histogram::<u64>::new(3).context("histogram")?;
    let bytes_before = fleet.bytes_received();
    let cpu_before = process::cpu_seconds();
    for i in changes..(2 * changes) {
        let name = cluster.change(i).await?;
        let sent = Instant::now();
        let reached = fleet.wait_change(&name, i.is_multiple_of(2), Duration::from_secs(30)).await?;
        reach.record(reached.duration_since(sent).as_micros() as u64).ok();
        if (i - changes) % 50 == 49 {
            eprintln!("scale: {routes} routes: {} changes propagated", i - changes + 1);
        }
    }
    let total_cpu_ms = (process::cpu_seconds() - cpu_before) / changes as f64 * 1000.0;
    let bytes = (fleet.bytes_received() - bytes_before) / (changes as u64 * gateway_count.max(1) as u64);
    let gateway_cpu = (total_cpu_ms - controller_cpu).max(0.0) / gateway_count.max(1) as f64;
    fleet.stop();
    cluster.stop();
    Ok(json!({
        "routes": routes,
        "gateways": gateway_count,
        "load_s": load_s,
        "sync_s": sync_s,
        "reach_all_p50_ms": reach.value_at_quantile(0.5) as f64 / 1000.0,
        "reach_all_p99_ms": reach.value_at_quantile(0.99) as f64 / 1000.0,
        "reach_all_max_ms": reach.max() as f64 / 1000.0,
        "bytes_per_change_per_gateway": bytes,
        "controller_cpu_ms_per_change": controller_cpu,
        "gateway_cpu_ms_per_change": gateway_cpu,
        "controller_heap_kib": heap_controller,
        "controller_rss_kib": rss_controller,
        "gateway_heap_kib_each": heap_per_gateway,
        "gateway_rss_kib_each": per_gateway_kib,
    }))
}

/// Serves `routes` notebook routes until killed.
async fn serve(routes: usize, address: std::net::SocketAddr) -> anyhow::Result<()> {
    let cluster = cluster::SimulatedCluster::start_on(routes, address).await?;
    println!("{}", cluster.discovery_url());
    eprintln!("scale: serving {} routes at {}", cluster.route_count(), cluster.discovery_url());
    std::future::pending::<()>().await;
    Ok(())
}

/// Where a gateway's bytes go, per route: decoded routes alone, then held
/// by a matcher.
fn memory_split(routes: usize) -> anyhow::Result<()> {
    use portico_routing::parts::{Placed, TableDelta};
    use portico_routing::{Matcher, RouteTable};
    let before = alloc::live_bytes();
    let mut decoded = Vec::with_capacity(routes);
    for i in 0..routes {
        let prefix = format!("/notebook/user{}/nb{i}/", i % 1000);
        let body = serde_json::json!({
            "name": format!("user{}.notebook-user{}-nb{i}.0", i % 1000, i % 1000),
            "provenance": {"virtual_service": {"kind": "VirtualService", "namespace": format!("user{}", i % 1000), "name": format!("notebook-user{}-nb{i}", i % 1000)}, "rule_index": 0},
            "matches": [{"uri": {"kind": {"prefix": prefix}}}],
            "action": {"forward": {"destinations": [{"host": format!("nb{i}.user{}.svc.cluster.local", i % 1000), "port": 80, "weight": 100}], "rewrite": {"uri": prefix}}},
            "retries": {"attempts": 2, "retry_on": {"connect_failure": true, "refused_stream": true}}
        });
        let route: portico_routing::table::Route = serde_json::from_value(body)?;
        decoded.push(route);
    }
    let routes_only = alloc::live_bytes() - before;
    eprintln!(
        "decoded routes: {} B each (Route is {} B inline)",
        routes_only / routes,
        std::mem::size_of::<portico_routing::table::Route>()
    );
    let mut delta = TableDelta::default();
    let table = portico_routing::translate(&portico_routing::Resources::default(), &Default::default()).0;
    let _ = table;
    delta.listeners.insert(
        "http.80".into(),
        Some(Placed {
            parent: String::new(),
            order: "00080".into(),
            value: serde_json::from_value(serde_json::json!({"name": "http.80", "port": 80, "protocol": "HTTP"}))?,
        }),
    );
    delta.virtual_hosts.insert(
        "http.80/*:80".into(),
        Some(Placed {
            parent: "http.80".into(),
            order: "2".into(),
            value: serde_json::from_value(serde_json::json!({"name": "*:80", "domains": ["*"]}))?,
        }),
    );
    for (i, route) in decoded.into_iter().enumerate() {
        let name = format!("http.80/*:80/{}", route.name);
        let order = format!("01{:025}notebook-user{}-nb{i}\u{0}user{}\u{0}000000", 0, i % 1000, i % 1000);
        delta
            .routes
            .insert(name, Some(Placed { parent: "http.80/*:80".into(), order, value: std::sync::Arc::new(route) }));
    }
    let with_delta = alloc::live_bytes() - before;
    eprintln!("as a delta (names, order keys): {} B each", with_delta / routes);
    let mut matcher = Matcher::new(RouteTable::default());
    let errors = matcher.apply(&delta);
    anyhow::ensure!(errors.is_empty(), "{errors:?}");
    drop(delta);
    let held = alloc::live_bytes() - before;
    eprintln!("held by the matcher alone: {} B each ({} routes)", held / routes, matcher.route_count());
    Ok(())
}
