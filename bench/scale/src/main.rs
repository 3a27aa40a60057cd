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
#![forbid(unsafe_code)]

mod cluster;
mod gateways;
mod process;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::json;

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
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
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
    eprintln!("scale: {routes} routes: loading the route index");
    let started = Instant::now();
    let cluster = cluster::SimulatedCluster::start(routes).await?;
    let load_s = started.elapsed().as_secs_f64();
    let rss_controller = process::rss_kib().saturating_sub(rss_start);
    eprintln!("scale: {routes} routes: index built in {load_s:.1} s, controller heap {} MiB", rss_controller / 1024);

    // The controller's own cost per change, with no gateway connected.
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
    let connected = Instant::now();
    let fleet = gateways::Fleet::connect(cluster.discovery_url(), gateway_count).await?;
    fleet.wait_routes(cluster.route_count(), Duration::from_secs(600)).await?;
    let sync_s = connected.elapsed().as_secs_f64();
    let per_gateway_kib = process::rss_kib().saturating_sub(rss_before_gateways) / gateway_count.max(1) as u64;
    eprintln!(
        "scale: {routes} routes: {gateway_count} gateways in sync after {sync_s:.1} s, {} KiB each",
        per_gateway_kib
    );

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
        "controller_rss_kib": rss_controller,
        "gateway_rss_kib_each": per_gateway_kib,
    }))
}
