//! The Kubernetes objects the end-to-end tests and the example use, as YAML.
//!
//! They are written the way a Kubeflow operator writes them (the stock
//! `kubeflow-gateway`, a `Notebook` CR), not through Portico's own types:
//! the point is that Portico reads what users already have.

/// Kubeflow's `kubeflow/kubeflow-gateway`: port 80, HTTP, every host.
pub fn kubeflow_gateway() -> String {
    r#"apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: kubeflow-gateway
  namespace: kubeflow
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "*"
"#
    .to_string()
}

/// `kubeflow/kubeflow-gateway` with a second server: HTTPS on 443 for
/// `host`, certificate from the `kubernetes.io/tls` Secret `credential`
/// (in the Gateway's namespace, `kubeflow`).
pub fn kubeflow_gateway_with_https(host: &str, credential: &str) -> String {
    format!(
        r#"{}  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts:
    - "{host}"
    tls:
      mode: SIMPLE
      credentialName: {credential}
"#,
        kubeflow_gateway()
    )
}

/// A Kubeflow `Notebook` as the Kubeflow UI creates it (jupyter-scipy image,
/// the container named like the notebook).
pub fn notebook(namespace: &str, name: &str) -> String {
    format!(
        r#"apiVersion: kubeflow.org/v1
kind: Notebook
metadata:
  name: {name}
  namespace: {namespace}
  labels:
    app: {name}
spec:
  template:
    spec:
      containers:
      - name: {name}
        image: kubeflownotebookswg/jupyter-scipy:v1.9.2
        resources:
          requests:
            cpu: "0.5"
            memory: 1Gi
"#
    )
}

/// A VirtualService bound to `kubeflow/kubeflow-gateway` that routes `prefix`
/// to `destination` port 80 with `rewrite.uri` set to `rewrite` (code-server
/// and RStudio style apps use `/`).
pub fn rewrite_virtual_service(namespace: &str, name: &str, prefix: &str, rewrite: &str, destination: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: {name}
  namespace: {namespace}
spec:
  hosts:
  - "*"
  gateways:
  - kubeflow/kubeflow-gateway
  http:
  - match:
    - uri:
        prefix: {prefix}
    rewrite:
      uri: {rewrite}
    route:
    - destination:
        host: {destination}
        port:
          number: 80
"#
    )
}

/// A `kubernetes.io/tls` Secret holding a PEM certificate chain and key, as
/// `kubectl create secret tls` writes it (base64 `data`).
pub fn tls_secret(namespace: &str, name: &str, cert_pem: &str, key_pem: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: {namespace}
type: kubernetes.io/tls
data:
  tls.crt: {}
  tls.key: {}
"#,
        base64(cert_pem.as_bytes()),
        base64(key_pem.as_bytes())
    )
}

/// `/notebook/<namespace>/<name>/`: where Kubeflow serves a notebook.
pub fn notebook_prefix(namespace: &str, name: &str) -> String {
    format!("/notebook/{namespace}/{name}/")
}

/// `<name>.<namespace>.svc.cluster.local`: the notebook Service's host, the
/// destination of its VirtualService.
pub fn notebook_host(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.svc.cluster.local")
}

/// `["--resolve", "<host>:80=127.0.0.1:<port>"]`: sends a destination to a
/// local process, since tests have no cluster DNS.
pub fn resolve_args(host: &str, port: u16) -> [String; 2] {
    ["--resolve".to_string(), format!("{host}:80=127.0.0.1:{port}")]
}

/// Standard base64 with padding (Secrets' `data`); small enough not to
/// warrant a dependency.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn the_https_gateway_extends_the_kubeflow_gateway() {
        let yaml = kubeflow_gateway_with_https("notebooks.example.com", "notebooks-tls");
        assert!(yaml.starts_with(&kubeflow_gateway()));
        assert!(yaml.contains("credentialName: notebooks-tls"));
    }
}
