//! `porticoctl validate -f FILE...`: the gateway's own parsing and
//! translation, offline, with each problem traced to its file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use portico_api::Resource;
use portico_routing::notebook::virtual_service_name;
use portico_routing::translate::parse_labels;
use portico_routing::{Diagnostic, GatewayIdentity, Resources, translate};

/// Validates `paths`; exit status 1 when any error was found.
pub fn run(paths: &[PathBuf], gateway_labels: &str) -> anyhow::Result<ExitCode> {
    let labels = parse_labels(gateway_labels).map_err(anyhow::Error::msg).context("--gateway-labels")?;
    let identity = GatewayIdentity { labels, ..GatewayIdentity::default() };
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files).with_context(|| format!("reading {}", path.display()))?;
    }
    let mut all = Resources::default();
    let mut origin: HashMap<(String, String, String), String> = HashMap::new();
    let mut problems: Vec<(String, Diagnostic)> = Vec::new();
    for file in &files {
        let source = file.display().to_string();
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {source}"))?;
        let mut one = Resources::default();
        problems.extend(one.add_yaml(&text, &source).into_iter().map(|d| (source.clone(), d)));
        for key in object_keys(&one) {
            origin.entry(key).or_insert_with(|| source.clone());
        }
        all.add_yaml(&text, &source);
    }
    let (table, diagnostics) = translate(&all, &identity);
    for diagnostic in diagnostics {
        let object = &diagnostic.object;
        let key = (object.kind.to_string(), object.namespace.to_string(), object.name.to_string());
        let file = origin.get(&key).cloned().unwrap_or_else(|| "-".to_string());
        problems.push((file, diagnostic));
    }
    problems.dedup();
    let errors = problems.iter().filter(|(_, d)| d.is_error()).count();
    for (file, diagnostic) in &problems {
        println!("{file}: {diagnostic}");
    }
    println!(
        "{} file(s), {} route(s) for {}: {} error(s), {} warning(s)",
        files.len(),
        table.route_count(),
        gateway_labels,
        errors,
        problems.len() - errors
    );
    Ok(if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// (kind, namespace, name) of every object in `resources`, including the
/// VirtualService each Notebook implies.
fn object_keys(resources: &Resources) -> Vec<(String, String, String)> {
    fn key<K: Resource>(kind: &str, object: &K) -> (String, String, String) {
        let meta = object.meta();
        (
            kind.to_string(),
            meta.namespace.clone().unwrap_or_else(|| "default".to_string()),
            meta.name.clone().unwrap_or_default(),
        )
    }
    let mut keys = Vec::new();
    keys.extend(resources.gateways.iter().map(|o| key("Gateway", o)));
    keys.extend(resources.virtual_services.iter().map(|o| key("VirtualService", o)));
    keys.extend(resources.services.iter().map(|o| key("Service", o)));
    keys.extend(resources.endpoint_slices.iter().map(|o| key("EndpointSlice", o)));
    keys.extend(resources.secrets.iter().map(|o| key("Secret", o)));
    for notebook in &resources.notebooks {
        let (kind, namespace, name) = key("Notebook", notebook);
        keys.push(("VirtualService".to_string(), namespace.clone(), virtual_service_name(&namespace, &name)));
        keys.push((kind, namespace, name));
    }
    keys
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            if entry.is_dir() || entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                collect(&entry, files)?;
            }
        }
    } else {
        files.push(path.to_path_buf());
    }
    Ok(())
}
