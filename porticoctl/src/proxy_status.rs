//! `porticoctl proxy-status`: one row per connected gateway, like
//! `istioctl proxy-status`.

use std::process::ExitCode;

use anyhow::Context;
use portico_api::discovery::route_discovery_client::RouteDiscoveryClient;
use portico_api::discovery::{GatewayStatus, Kind, KindStatus, ProxyStatusRequest, SyncState};
use serde_json::{Value, json};

use crate::table;

/// Asks the controller and prints its answer.
pub async fn run(controller: &str, output: &str) -> anyhow::Result<ExitCode> {
    let url = if controller.contains("://") { controller.to_string() } else { format!("http://{controller}") };
    let mut client =
        RouteDiscoveryClient::connect(url.clone()).await.with_context(|| format!("connecting to {url}"))?;
    let status = client.proxy_status(ProxyStatusRequest {}).await.with_context(|| format!("ProxyStatus at {url}"))?;
    let status = status.into_inner();
    if output == "json" {
        let gateways: Vec<Value> = status.gateways.iter().map(gateway_json).collect();
        let document = json!({"controller": status.controller, "version": status.version, "gateways": gateways});
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = status
        .gateways
        .iter()
        .map(|gateway| {
            let node = gateway.node.clone().unwrap_or_default();
            vec![
                format!("{}.{}", node.name, node.namespace),
                state_text(kind_status(gateway, Kind::Listeners)),
                state_text(kind_status(gateway, Kind::Routes)),
                state_text(kind_status(gateway, Kind::Endpoints)),
                gateway.controller.clone(),
                node.version,
            ]
        })
        .collect();
    print!("{}", table::format(&["NAME", "LISTENERS", "ROUTES", "ENDPOINTS", "CONTROLLER", "VERSION"], &rows));
    for gateway in &status.gateways {
        let name = gateway.node.as_ref().map_or("", |n| n.name.as_str());
        for kind in &gateway.kinds {
            for rejection in &kind.rejected {
                println!("{name}: rejected {}: {}", rejection.name, rejection.reason);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn kind_status(gateway: &GatewayStatus, kind: Kind) -> Option<&KindStatus> {
    gateway.kinds.iter().find(|k| k.kind == kind as i32)
}

/// istioctl's words: SYNCED, NOT SENT, STALE; a NACK is STALE with a note.
fn state_text(status: Option<&KindStatus>) -> String {
    match status.map(|s| SyncState::try_from(s.state).unwrap_or(SyncState::Unspecified)) {
        Some(SyncState::Synced) => "SYNCED".to_string(),
        Some(SyncState::Stale) => "STALE".to_string(),
        Some(SyncState::Nacked) => "STALE (NACK)".to_string(),
        _ => "NOT SENT".to_string(),
    }
}

fn gateway_json(gateway: &GatewayStatus) -> Value {
    let node = gateway.node.clone().unwrap_or_default();
    let kinds: serde_json::Map<String, Value> = gateway
        .kinds
        .iter()
        .map(|kind| {
            let name = Kind::try_from(kind.kind).map_or("UNKNOWN", |k| k.as_str_name());
            let rejected: Vec<Value> =
                kind.rejected.iter().map(|r| json!({"name": r.name, "reason": r.reason})).collect();
            (
                name.to_string(),
                json!({
                    "state": state_text(Some(kind)),
                    "sentVersion": kind.sent_version,
                    "ackedVersion": kind.acked_version,
                    "resources": kind.resources,
                    "rejected": rejected,
                }),
            )
        })
        .collect();
    json!({
        "name": node.name,
        "namespace": node.namespace,
        "labels": node.labels,
        "version": node.version,
        "peer": gateway.peer,
        "controller": gateway.controller,
        "connectedSince": gateway.connected_since,
        "responses": gateway.responses,
        "lastResponseBytes": gateway.last_response_bytes,
        "totalBytes": gateway.total_bytes,
        "kinds": kinds,
    })
}
