//! The webhook's HTTPS listener, and the cluster objects it relies on: the
//! MutatingWebhookConfiguration's caBundle and the mesh root ConfigMap in
//! every namespace that has injection enabled.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::template::{InjectionSettings, patch};

/// Largest AdmissionReview accepted (a pod with many containers is < 100 KiB).
const MAX_REVIEW_BYTES: usize = 4 << 20;

/// Serves AdmissionReviews on `listener` with TLS `config`.
pub async fn serve(listener: TcpListener, config: Arc<rustls::ServerConfig>, settings: Arc<InjectionSettings>) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, settings) = (acceptor.clone(), settings.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                return;
            };
            let service = service_fn(move |request| review(request, settings.clone()));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

async fn review(
    request: Request<Incoming>,
    settings: Arc<InjectionSettings>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::POST || request.uri().path() != "/inject" {
        return Ok(reply(StatusCode::NOT_FOUND, b"POST /inject\n".to_vec()));
    }
    let body = match Limited::new(request.into_body(), MAX_REVIEW_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => return Ok(reply(StatusCode::BAD_REQUEST, format!("reading the review: {error}\n").into_bytes())),
    };
    let review: Value = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(error) => {
            return Ok(reply(StatusCode::BAD_REQUEST, format!("not an AdmissionReview: {error}\n").into_bytes()));
        }
    };
    let uid = review["request"]["uid"].clone();
    let mut response = json!({"uid": uid, "allowed": true});
    // A pod we cannot read is admitted unchanged: injection must never be
    // the reason a pod cannot start (the failure policy decides otherwise).
    match serde_json::from_value::<Pod>(review["request"]["object"].clone()) {
        Ok(pod) => {
            if let Some(operations) = patch(&pod, &settings) {
                let encoded = base64::engine::general_purpose::STANDARD.encode(operations.to_string());
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(encoded);
                let namespace = review["request"]["namespace"].as_str().unwrap_or_default();
                let name = pod.metadata.name.as_deref().or(pod.metadata.generate_name.as_deref()).unwrap_or_default();
                tracing::info!(%namespace, pod = %name, "injected the sidecar");
            }
        }
        Err(error) => tracing::warn!(%error, "an AdmissionReview without a readable Pod; admitted unchanged"),
    }
    let answer = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
    Ok(reply(StatusCode::OK, answer.to_string().into_bytes()))
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

/// Keeps the webhook configuration's caBundle and the per-namespace root
/// ConfigMaps in place, forever.
pub async fn reconcile_cluster_objects(
    client: Client,
    root_pem: String,
    webhook_config: String,
    namespace_label: String,
    root_config_map: String,
    // A re-applied manifest resets the caBundle; a new namespace needs its ConfigMap.
    every: Duration,
    // The controller's own namespace gets the root too: the gateway mounts it.
    own_namespace: String,
) {
    loop {
        if let Err(error) = patch_ca_bundle(&client, &webhook_config, &root_pem).await {
            tracing::warn!(%error, config = %webhook_config, "could not set the webhook's caBundle");
        }
        if let Err(error) = publish_root(&client, &namespace_label, &root_config_map, &root_pem, &own_namespace).await {
            tracing::warn!(%error, "could not publish the mesh root to namespaces");
        }
        tokio::time::sleep(every).await;
    }
}

async fn patch_ca_bundle(client: &Client, name: &str, root_pem: &str) -> Result<(), kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mut config) = api.get_opt(name).await? else { return Ok(()) };
    let mut changed = 0;
    for webhook in config.webhooks.iter_mut().flatten() {
        if webhook.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(root_pem.as_bytes()) {
            webhook.client_config.ca_bundle = Some(k8s_openapi::ByteString(root_pem.as_bytes().to_vec()));
            changed += 1;
        }
    }
    if changed == 0 {
        return Ok(());
    }
    // A replace carries the resourceVersion read above: a concurrent edit
    // makes it fail (and the next round retries) instead of being lost.
    api.replace(name, &PostParams::default(), &config).await?;
    tracing::info!(config = %name, webhooks = changed, "set the webhook caBundle to the mesh root");
    Ok(())
}

async fn publish_root(
    client: &Client,
    label: &str,
    config_map: &str,
    root_pem: &str,
    own_namespace: &str,
) -> Result<(), kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let selector = format!("{label}=enabled");
    let labelled = namespaces.list(&ListParams::default().labels(&selector)).await?;
    let mut names: Vec<String> = labelled.into_iter().filter_map(|n| n.metadata.name).collect();
    if !names.iter().any(|n| n == own_namespace) {
        names.push(own_namespace.to_string());
    }
    for name in names {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
        let object = ConfigMap {
            metadata: ObjectMeta {
                name: Some(config_map.to_string()),
                labels: Some(BTreeMap::from([("app.kubernetes.io/part-of".to_string(), "portico".to_string())])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("root-cert.pem".to_string(), root_pem.to_string())])),
            ..ConfigMap::default()
        };
        api.patch(config_map, &PatchParams::apply("portico-controller").force(), &Patch::Apply(&object)).await?;
    }
    Ok(())
}
