//! `porticoctl proxy-config routes --admin ADDR`.

use std::process::ExitCode;

use anyhow::Context;
use portico_routing::proxy_config::{RouteRow, format_rows};

/// Prints the gateway's routes from its admin `/routes/json`.
pub async fn routes(admin: &str, output: &str) -> anyhow::Result<ExitCode> {
    let base = if admin.starts_with("http://") || admin.starts_with("https://") {
        admin.trim_end_matches('/').to_string()
    } else {
        format!("http://{admin}")
    };
    let url = format!("{base}/routes/json");
    let response = reqwest::get(&url).await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if !status.is_success() {
        anyhow::bail!("GET {url}: {status}");
    }
    let rows: Vec<RouteRow> = response.json().await.with_context(|| format!("decoding {url}"))?;
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", format_rows(&rows));
    }
    Ok(ExitCode::SUCCESS)
}
