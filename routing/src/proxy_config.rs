//! `istioctl proxy-config route`-style rows of a route table, shared by the
//! gateway's `/routes` endpoint and `porticoctl proxy-config routes`.

use serde::{Deserialize, Serialize};

use crate::table::{PathMatchKind, RouteTable};

/// One row: NAME, VHOST NAME, DOMAINS, MATCH, VIRTUAL SERVICE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRow {
    pub name: String,
    pub vhost_name: String,
    pub domains: String,
    #[serde(rename = "match")]
    pub matches: String,
    pub virtual_service: String,
}

/// Every route of `table`, in match order.
pub fn route_rows(table: &RouteTable) -> Vec<RouteRow> {
    let mut rows = Vec::with_capacity(table.route_count());
    for listener in &table.listeners {
        for vhost in &listener.virtual_hosts {
            for route in &vhost.routes {
                let matches: Vec<String> = if route.matches.is_empty() {
                    vec!["/*".to_string()]
                } else {
                    route
                        .matches
                        .iter()
                        .map(|m| match m.uri.as_ref().map(|u| &u.kind) {
                            None => "/*".to_string(),
                            Some(PathMatchKind::Prefix(prefix)) => format!("{prefix}*"),
                            Some(PathMatchKind::Exact(path)) => path.clone(),
                            Some(PathMatchKind::Regex(pattern)) => pattern.as_str().to_string(),
                        })
                        .collect()
                };
                let vs = &route.provenance.virtual_service;
                rows.push(RouteRow {
                    name: listener.name.clone(),
                    vhost_name: vhost.name.clone(),
                    domains: vhost.domains.join(","),
                    matches: matches.join(","),
                    virtual_service: format!("{}.{}", vs.name, vs.namespace),
                });
            }
        }
    }
    rows
}

/// Rows as an aligned text table with istioctl's headers.
pub fn format_rows(rows: &[RouteRow]) -> String {
    let header = ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| {
            [r.name.as_str(), r.vhost_name.as_str(), r.domains.as_str(), r.matches.as_str(), r.virtual_service.as_str()]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(cells) {
        let line: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(line.join("     ").trim_end());
        out.push('\n');
    }
    out
}
