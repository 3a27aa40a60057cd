//! Where the CA's root lives: a Secret in the controller's namespace,
//! created on first start (or supplied by the operator beforehand, e.g. an
//! intermediate signed by the organization's own root).

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use super::authority::{Authority, CaError};

/// Keys of the Secret's data.
pub const CERT_KEY: &str = "ca-cert.pem";
pub const KEY_KEY: &str = "ca-key.pem";

/// Why the root could not be loaded or stored. Each message is one line an
/// operator can act on (the API's own message, not its Status dump).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading or writing Secret {namespace}/{name}: {reason}")]
    Api { namespace: String, name: String, reason: String },
    #[error(
        "namespace {namespace:?} does not exist (the mesh CA's Secret {name} is kept there): create it with \
         `kubectl create namespace {namespace}`, or choose another with --namespace (or run with --ca=false)"
    )]
    NoNamespace { namespace: String, name: String },
    #[error("Secret {namespace}/{name} lacks {key}")]
    Missing { namespace: String, name: String, key: &'static str },
    #[error("Secret {namespace}/{name}: {source}")]
    Invalid { namespace: String, name: String, source: CaError },
}

/// Loads the root from `namespace/name`, creating it if there is none.
/// Two replicas starting together both try; the loser of the create reads
/// the winner's.
pub async fn load_or_create(
    client: &Client,
    namespace: &str,
    name: &str,
    trust_domain: &str,
) -> Result<Authority, StoreError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api_error = |source| StoreError::Api {
        namespace: namespace.to_string(),
        name: name.to_string(),
        reason: api_reason(&source),
    };
    if let Some(secret) = api.get_opt(name).await.map_err(api_error)? {
        return load(&secret, namespace, name, trust_domain);
    }
    let (authority, cert_pem, key_pem) = Authority::generate(trust_domain).map_err(|source| StoreError::Invalid {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    })?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some([("app.kubernetes.io/part-of".to_string(), "portico".to_string())].into()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(
            [
                (CERT_KEY.to_string(), ByteString(cert_pem.into_bytes())),
                (KEY_KEY.to_string(), ByteString(key_pem.into_bytes())),
            ]
            .into(),
        ),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), trust_domain, "created the mesh root CA");
            Ok(authority)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = api.get(name).await.map_err(api_error)?;
            load(&secret, namespace, name, trust_domain)
        }
        // A create in a namespace that does not exist: `namespaces "x" not found`.
        Err(kube::Error::Api(status)) if status.code == 404 => {
            Err(StoreError::NoNamespace { namespace: namespace.to_string(), name: name.to_string() })
        }
        Err(source) => Err(api_error(source)),
    }
}

/// The API server's own message for a refused request (`secrets is forbidden:
/// ...`), or the client's error; never the Status struct's Debug form.
fn api_reason(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} ({}, {})", status.message, status.reason, status.code)
        }
        other => other.to_string(),
    }
}

fn load(secret: &Secret, namespace: &str, name: &str, trust_domain: &str) -> Result<Authority, StoreError> {
    let field = |key: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
            .ok_or(StoreError::Missing { namespace: namespace.to_string(), name: name.to_string(), key })
    };
    let authority = Authority::from_pem(&field(CERT_KEY)?, &field(KEY_KEY)?, trust_domain)
        .map_err(|source| StoreError::Invalid { namespace: namespace.to_string(), name: name.to_string(), source })?;
    tracing::info!(secret = %format!("{namespace}/{name}"), trust_domain, "loaded the mesh root CA");
    Ok(authority)
}
