//! The mesh CA on the real API server: the root is created once in a
//! Secret and survives restarts; a CSR with a service-account token (checked
//! by TokenReview) gets a SPIFFE certificate over TLS; bad, foreign-audience
//! and missing tokens, and CSRs for someone else's identity, are refused.

use std::time::Duration;

use portico_api::ca::CreateCertificateRequest;
use portico_api::ca::certificate_service_client::CertificateServiceClient;
use portico_e2e::{Controller, TestNamespace};
use rcgen::{CertificateParams, KeyPair, SanType};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// The mesh root the controller created in the test's namespace.
fn root_of(namespace: &TestNamespace) -> String {
    namespace.plane().secret_value(namespace.name(), "portico-ca", "ca-cert.pem")
}

async fn client(controller: &Controller, root: &str) -> CertificateServiceClient<Channel> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(root)).domain_name("localhost");
    let url = format!("https://{}", controller.secure_discovery_addr());
    let channel = Channel::from_shared(url)
        .expect("a URL")
        .tls_config(tls)
        .expect("TLS settings")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("a TLS connection that verifies against the CA root");
    CertificateServiceClient::new(channel)
}

fn csr(sans: Vec<SanType>) -> String {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.serialize_request(&key).expect("a CSR").pem().expect("PEM")
}

fn request(csr: String, token: &str) -> tonic::Request<CreateCertificateRequest> {
    let mut request = tonic::Request::new(CreateCertificateRequest { csr, validity_duration_seconds: 3600 });
    if !token.is_empty() {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII"));
    }
    request
}

fn uri_sans(pem_text: &str) -> Vec<String> {
    let der = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).expect("PEM").1;
    let certificate = der.parse_x509().expect("X.509");
    let sans = certificate.subject_alternative_name().expect("valid extensions").expect("a SAN extension");
    sans.value
        .general_names
        .iter()
        .map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => uri.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn workload_certificates_for_service_account_tokens() {
    let namespace = TestNamespace::create("ctl-ca");
    let ns = namespace.name();
    let plane = namespace.plane();
    let mut controller = Controller::start(ns, &[]);
    let root = root_of(&namespace);
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");
    plane.kubectl_ok(&["create", "serviceaccount", "notebook", "-n", ns]);
    let token = plane.kubectl_ok(&["create", "token", "notebook", "-n", ns, "--audience", "portico-ca"]);
    let token = token.trim();
    let mut ca = client(&controller, &root).await;

    let response = ca.create_certificate(request(csr(vec![]), token)).await.expect("a certificate").into_inner();
    assert_eq!(response.cert_chain.len(), 2);
    assert_eq!(response.cert_chain[1], root, "the chain ends with the root");
    let identity = format!("spiffe://cluster.local/ns/{ns}/sa/notebook");
    assert_eq!(uri_sans(&response.cert_chain[0]), vec![identity.clone()]);

    // Refusals, each with the reason a caller can act on.
    let bad = ca.create_certificate(request(csr(vec![]), "not-a-token")).await.expect_err("a bad token");
    assert_eq!(bad.code(), Code::Unauthenticated, "{bad:?}");
    let missing = ca.create_certificate(request(csr(vec![]), "")).await.expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let api_audience = plane.kubectl_ok(&["create", "token", "notebook", "-n", ns]);
    let foreign = ca.create_certificate(request(csr(vec![]), api_audience.trim())).await.expect_err("wrong audience");
    assert_eq!(foreign.code(), Code::Unauthenticated, "{foreign:?}");
    let someone_else = format!("spiffe://cluster.local/ns/{ns}/sa/admin");
    let stolen = csr(vec![SanType::URI(someone_else.try_into().expect("IA5"))]);
    let denied = ca.create_certificate(request(stolen, token)).await.expect_err("another identity");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains(&identity), "{denied:?}");

    assert_eq!(controller.metric("citadel_server_success_cert_issuance_count"), Some(1.0));
    assert_eq!(controller.metric("citadel_server_authentication_failure_count"), Some(3.0));

    // The root is the Secret's, across restarts.
    controller.restart();
    assert_eq!(root_of(&namespace), root);
    let mut ca = client(&controller, &root).await;
    let again = ca.create_certificate(request(csr(vec![]), token)).await.expect("a certificate").into_inner();
    assert_eq!(again.cert_chain[1], root);
}

/// The leaf certificate the secure listener presents now.
async fn serving_certificate(controller: &Controller, root: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut root.as_bytes()) {
        roots.add(cert.expect("PEM")).expect("a root");
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(controller.secure_discovery_addr()).await.expect("connecting");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let tls = connector.connect(name, tcp).await.expect("a handshake that verifies against the root");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_certificate_is_renewed_without_dropping_connections() {
    let namespace = TestNamespace::create("ca-renew");
    let controller = Controller::start(namespace.name(), &["--serving-cert-ttl", "4s"]);
    let root = root_of(&namespace);
    let token = namespace.mesh_token("renewal");
    // A connection made before the renewal...
    let mut early = client(&controller, &root).await;
    early.create_certificate(request(csr(vec![]), &token)).await.expect("a certificate before the renewal");
    let first = serving_certificate(&controller, &root).await;
    // ...the certificate is renewed at half its 4 s...
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = serving_certificate(&controller, &root).await;
    assert_ne!(first, second, "the serving certificate was not renewed; log:\n{}", controller.log_tail());
    // ...and the early connection still serves.
    early
        .create_certificate(request(csr(vec![]), &token))
        .await
        .expect("a certificate after the renewal, same connection");
}
