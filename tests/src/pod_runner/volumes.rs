//! A pod's volumes, written to its directory (the runner has no mount
//! namespaces; `containers` rewrites paths under a mount to these
//! directories): projected service account tokens from the TokenRequest API
//! with the audience and lifetime the pod asks for, ConfigMaps and Secrets
//! as files per key, anything else an empty directory.

use std::path::Path;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;

use super::containers::volume_dir;

/// Writes every volume of `pod` under `pod_dir`, or says which one failed.
pub async fn write(pods: &Api<Pod>, pod: &Pod, pod_dir: &Path) -> Result<(), String> {
    let Some(spec) = &pod.spec else { return Ok(()) };
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let client = pods.clone().into_client();
    for volume in spec.volumes.iter().flatten() {
        let dir = volume_dir(pod_dir, &volume.name);
        std::fs::create_dir_all(&dir).map_err(|error| format!("volume {}: {error}", volume.name))?;
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(token) = &source.service_account_token {
                    let account = spec.service_account_name.clone().unwrap_or_else(|| "default".to_string());
                    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
                    let request = TokenRequest {
                        spec: TokenRequestSpec {
                            audiences: token.audience.clone().into_iter().collect(),
                            expiration_seconds: token.expiration_seconds,
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    let issued =
                        accounts.create_token_request(&account, &PostParams::default(), &request).await.map_err(
                            |error| format!("volume {}: a token for ServiceAccount {account}: {error}", volume.name),
                        )?;
                    let token_text = issued.status.map(|status| status.token).unwrap_or_default();
                    files.push((token.path.clone(), token_text.into_bytes()));
                }
            }
        }
        if let Some(source) = &volume.config_map {
            let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            let map = maps
                .get(&source.name)
                .await
                .map_err(|error| format!("volume {}: ConfigMap {}: {error}", volume.name, source.name))?;
            files.extend(map.data.into_iter().flatten().map(|(key, value)| (key, value.into_bytes())));
        }
        if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            let secret =
                secrets.get(&name).await.map_err(|error| format!("volume {}: Secret {name}: {error}", volume.name))?;
            files.extend(secret.data.into_iter().flatten().map(|(key, value)| (key, value.0)));
        }
        for (path, bytes) in files {
            std::fs::write(dir.join(&path), bytes)
                .map_err(|error| format!("volume {} file {path}: {error}", volume.name))?;
        }
        // Readable by a container running as another uid (the sidecar's 1337).
        let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(pod_dir).status();
    }
    Ok(())
}
