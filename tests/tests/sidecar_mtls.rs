//! `portico-sidecar run` with a certificate from the controller's CA (real
//! API server, TokenReview): the gateway's identity gets through to the
//! notebook; a plain client, a client with another mesh identity and a
//! client from another CA do not.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portico_api::ca::CreateCertificateRequest;
use portico_api::ca::certificate_service_client::CertificateServiceClient;
use portico_e2e::process::{ChildProcess, Stop, clear_settings_env};
use portico_e2e::wait::poll;
use portico_e2e::{
    Controller, FakeNotebook, KernelSocket, TestNamespace, binary, channels_url, create_kernel, free_port, raw_http,
};
use portico_mesh::client::MeshRootVerifier;
use portico_mesh::identity::Fingerprint;
use rcgen::{CertificateParams, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// The mesh root the controller created in the test's namespace.
fn root_of(namespace: &TestNamespace) -> String {
    namespace.plane().secret_value(namespace.name(), "portico-ca", "ca-cert.pem")
}

fn token(namespace: &TestNamespace, service_account: &str) -> String {
    namespace.mesh_token(service_account)
}

/// A certificate for `service_account` from the CA, with its key.
async fn issue(
    controller: &Controller,
    root: &str,
    token: &str,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(root)).domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", controller.secure_discovery_addr()))
        .expect("a URL")
        .tls_config(tls)
        .expect("TLS")
        .connect()
        .await
        .expect("connecting to the CA");
    let key = KeyPair::generate().expect("a key");
    let csr = CertificateParams::default().serialize_request(&key).expect("a CSR").pem().expect("PEM");
    let mut request = tonic::Request::new(CreateCertificateRequest { csr, validity_duration_seconds: 600 });
    request.metadata_mut().insert("authorization", format!("Bearer {}", token.trim()).parse().expect("ASCII"));
    let chain = CertificateServiceClient::new(channel).create_certificate(request).await.expect("a certificate");
    let leaf = &chain.into_inner().cert_chain[0];
    let certs = rustls_pemfile::certs(&mut leaf.as_bytes()).collect::<Result<Vec<_>, _>>().expect("PEM");
    let key = PrivateKeyDer::try_from(key.serialize_der()).expect("a PKCS#8 key");
    (certs, key)
}

/// Verifies the server's chain against the mesh root (the mesh's own
/// verifier, as the gateway uses) and its SPIFFE ID (workload certificates
/// have no DNS names), and keeps the certificate the server presented.
#[derive(Debug)]
struct SpiffeVerifier {
    chain: MeshRootVerifier,
    expected: String,
    presented: Mutex<Option<Fingerprint>>,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.chain.verify_server_cert(end_entity, intermediates, name, ocsp, now)?;
        *self.presented.lock().unwrap_or_else(|p| p.into_inner()) = portico_mesh::identity::fingerprint(end_entity);
        let sans = portico_mesh::identity::uri_sans(end_entity);
        if sans.contains(&self.expected) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!("expected {}, got {sans:?}", self.expected)))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// GET /notebook/a/b/api/status through the sidecar with `identity`; the
/// status code, or the error.
async fn get_through(
    sidecar: SocketAddr,
    root: &str,
    expected_server: &str,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<u16, String> {
    exchange_through(sidecar, root, expected_server, identity).await.map(|(status, _)| status)
}

/// The certificate the sidecar presents in a handshake now.
async fn sidecar_certificate(
    sidecar: SocketAddr,
    root: &str,
    expected_server: &str,
    identity: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> Fingerprint {
    let (status, presented) = exchange_through(sidecar, root, expected_server, Some(identity))
        .await
        .unwrap_or_else(|error| panic!("a handshake with the sidecar at {sidecar}: {error}"));
    assert_eq!(status, 200, "GET through the sidecar at {sidecar}");
    presented.unwrap_or_else(|| panic!("the sidecar at {sidecar} presented no parsable certificate"))
}

/// The certificate the gateway presented in its latest connection the
/// sidecar admitted (the sidecar's debug log names each admitted peer's).
fn latest_gateway_certificate(sidecar_log: &str, gateway_id: &str) -> Option<Fingerprint> {
    let plain = without_ansi_colors(sidecar_log);
    let line = plain
        .lines()
        .rev()
        .find(|line| line.contains("mTLS peer admitted") && line.contains(&format!("peer={gateway_id}")))?;
    let field = |name: &str| {
        line.split_whitespace().find_map(|word| word.strip_prefix(&format!("{name}=")).map(str::to_string))
    };
    Some(Fingerprint { serial: field("peer_serial")?, not_after: field("peer_not_after")?.parse().ok()? })
}

/// `text` without the ANSI color sequences (`ESC [ ... m`) a log may carry.
fn without_ansi_colors(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Asserts that `after` is a renewal of `before`: another serial, a later expiry.
fn assert_rotated(end: &str, before: &Fingerprint, after: &Fingerprint) {
    assert_ne!(before.serial, after.serial, "{end}: the same certificate before and after ({before:?})");
    assert!(
        after.not_after > before.not_after,
        "{end}: the certificate after ({after:?}) does not outlive the one before ({before:?})"
    );
}

/// The request of [`get_through`], and the certificate the sidecar presented.
async fn exchange_through(
    sidecar: SocketAddr,
    root: &str,
    expected_server: &str,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<(u16, Option<Fingerprint>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut root.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let chain = MeshRootVerifier::new(roots, Arc::clone(&provider));
    let verifier =
        Arc::new(SpiffeVerifier { chain, expected: expected_server.to_string(), presented: Mutex::new(None) });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>);
    let config = match identity {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(sidecar).await.map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(ServerName::try_from("notebook").map_err(|e| e.to_string())?, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /notebook/a/b/api/status HTTP/1.1\r\nHost: notebook\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
    let presented = verifier.presented.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok((status, presented))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a file");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_gateway_identity_reaches_the_notebook() {
    let namespace = TestNamespace::create("sidecar");
    let ns = namespace.name();
    let controller = Controller::start(ns, &[]);
    let root = root_of(&namespace);
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = FakeNotebook::start();
    let (inbound, health, metrics, admin) = (free_port(), free_port(), free_port(), free_port());
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    let mut command = Command::new(binary("portico-sidecar"));
    command.args(["run", "--app-port", &fake.address().port().to_string()]);
    command.args(["--inbound", &local(inbound).to_string(), "--health", &local(health).to_string()]);
    command.args(["--metrics", &local(metrics).to_string(), "--admin", &local(admin).to_string()]);
    command.args(["--allow", &format!("spiffe://cluster.local/ns/{ns}/sa/gateway")]);
    command.args([
        "--ca-address",
        &format!("https://{}", controller.secure_discovery_addr()),
        "--ca-name",
        "localhost",
    ]);
    command.args(["--ca-root", &write(dir.path(), "root.pem", &root)]);
    command.args(["--token-file", &write(dir.path(), "token", &token(&namespace, "notebook"))]);
    clear_settings_env(&mut command);
    let mut sidecar = ChildProcess::spawn("portico-sidecar", command, &dir.path().join("sidecar.log"), Stop::Kill);
    let ready = poll(Duration::from_secs(30), || {
        raw_http::get_url(&format!("http://{}/healthz/ready", local(health))).ok().filter(|r| r.status == 200)
    });
    assert!(ready.is_some(), "the sidecar never got ready; log:\n{}", sidecar.log_tail(40));

    let notebook_id = format!("spiffe://cluster.local/ns/{ns}/sa/notebook");
    let gateway = issue(&controller, &root, &token(&namespace, "gateway")).await;
    let status = get_through(local(inbound), &root, &notebook_id, Some(gateway)).await;
    assert_eq!(status, Ok(200), "the gateway's identity gets through; log:\n{}", sidecar.log_tail(20));

    let intruder = issue(&controller, &root, &token(&namespace, "intruder")).await;
    let refused = get_through(local(inbound), &root, &notebook_id, Some(intruder)).await;
    assert!(refused.is_err(), "another mesh identity must not get through: {refused:?}");
    let anonymous = get_through(local(inbound), &root, &notebook_id, None).await;
    assert!(anonymous.is_err(), "a client without a certificate must not get through: {anonymous:?}");
    let plain = raw_http::get(local(inbound), "notebook", "/notebook/a/b/api/status");
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| r.status == 0),
        "plain HTTP must not get through: {plain:?}"
    );

    let text = raw_http::get_url(&format!("http://{}/stats/prometheus", local(metrics))).expect("metrics").text();
    assert!(
        text.contains(&format!(
            "istio_tcp_connections_opened_total{{reporter=\"destination\",source_principal=\"spiffe://cluster.local/ns/{ns}/sa/gateway\"}} 1"
        )),
        "{text}"
    );
    assert!(text.contains("portico_sidecar_connections_denied_total{reason=\"identity\"} 1"), "{text}");
    let dump = raw_http::get_url(&format!("http://{}/config_dump", local(admin))).expect("admin").text();
    assert!(dump.contains(&notebook_id), "{dump}");
    sidecar.stop();
}

/// A network namespace with a veth pair to the host's, removed on drop.
struct PodNetwork {
    name: String,
    pod_ip: String,
    host_ip: String,
}

impl PodNetwork {
    /// A pod network; `tag` (0-9) tells apart the pods of one test process.
    fn create(tag: u32) -> PodNetwork {
        let id = std::process::id();
        let (name, host_link, pod_link) =
            (format!("pt-pod-{id}-{tag}"), format!("vh{id}{tag}"), format!("vp{id}{tag}"));
        let subnet = 10 + id % 240;
        let (host_ip, pod_ip) = (format!("10.{}.{subnet}.2", 241 + tag), format!("10.{}.{subnet}.1", 241 + tag));
        let ip = |args: &[&str]| {
            let output = Command::new("ip").args(args).output().expect("running ip (Debian: iproute2)");
            assert!(output.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_link]).output();
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host_link, "type", "veth", "peer", "name", &pod_link]);
        ip(&["link", "set", &pod_link, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_link]);
        ip(&["link", "set", &host_link, "up"]);
        ip(&["-n", &name, "addr", "add", &format!("{pod_ip}/24"), "dev", &pod_link]);
        ip(&["-n", &name, "link", "set", &pod_link, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        PodNetwork { name, pod_ip, host_ip }
    }

    /// `ip netns exec <pod> <program> <args>`.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth, and so the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_capture_sends_pod_traffic_through_the_sidecar() {
    let namespace = TestNamespace::create("sidecar-netns");
    let ns = namespace.name();
    let istio_gateway = format!("{ns}/kubeflow-gateway");
    let controller = Controller::start_with_env(ns, &[], &[("ISTIO_GATEWAY", &istio_gateway)]);
    let root = root_of(&namespace);
    let dir = tempfile::tempdir().expect("a temp dir");
    let pod = PodNetwork::create(0);

    // The notebook listens on all of the pod's addresses, like Kubeflow's images.
    let mut notebook = pod.command(&binary("portico-fake-notebook"));
    notebook.args(["--listen", "0.0.0.0:8888", "--threads", "1"]);
    let _notebook = ChildProcess::spawn("fake-notebook", notebook, &dir.path().join("notebook.log"), Stop::Kill);

    // istio-init's step, then the sidecar with no --app-port: it finds the
    // original port of every redirected connection.
    let mut init = pod.command(&binary("portico-sidecar"));
    init.args(["init", "--exclude-inbound-ports", "22"]);
    for _ in 0..2 {
        let output = init.output().expect("running portico-sidecar init");
        assert!(output.status.success(), "init: {}", String::from_utf8_lossy(&output.stderr));
    }
    let rules = Command::new("ip")
        .args(["netns", "exec", &pod.name, "iptables-save", "-t", "nat"])
        .output()
        .expect("iptables-save");
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert_eq!(
        rules.matches("-A PREROUTING -p tcp -j ISTIO_INBOUND").count(),
        1,
        "running init twice is harmless:\n{rules}"
    );

    let mut sidecar = pod.command(&binary("portico-sidecar"));
    // Short-lived certificates, so that they rotate during the test.
    sidecar.args(["run", "--cert-ttl", "6s", "--allow", &format!("spiffe://cluster.local/ns/{ns}/sa/gateway")]);
    sidecar.args(["--ca-address", &format!("https://{}:{}", pod.host_ip, controller.secure_discovery_addr().port())]);
    sidecar.args(["--ca-name", "localhost", "--ca-root", &write(dir.path(), "root.pem", &root)]);
    sidecar.args(["--token-file", &write(dir.path(), "token", &token(&namespace, "notebook"))]);
    clear_settings_env(&mut sidecar);
    // Its debug log names the certificate each admitted peer presented.
    sidecar.env("RUST_LOG", "info,portico_sidecar=debug");
    let mut sidecar = ChildProcess::spawn("portico-sidecar", sidecar, &dir.path().join("sidecar.log"), Stop::Kill);
    let pod_port = |port: u16| SocketAddr::new(pod.pod_ip.parse().expect("an IP"), port);
    // 15021 is excluded from capture: the kubelet's probe reaches it directly.
    let ready = poll(Duration::from_secs(30), || {
        raw_http::get_url(&format!("http://{}/healthz/ready", pod_port(15021))).ok().filter(|r| r.status == 200)
    });
    assert!(ready.is_some(), "the sidecar never got ready; log:\n{}", sidecar.log_tail(40));

    // The gateway's identity reaches the notebook at the pod's port 8888,
    // through the capture and the sidecar's mTLS.
    let notebook_id = format!("spiffe://cluster.local/ns/{ns}/sa/notebook");
    let gateway = issue(&controller, &root, &token(&namespace, "gateway")).await;
    let status = get_through(pod_port(8888), &root, &notebook_id, Some(gateway)).await;
    assert_eq!(status, Ok(200), "sidecar log:\n{}", sidecar.log_tail(20));
    // A plain client is captured too: it meets TLS, not the notebook.
    let plain = raw_http::get(pod_port(8888), "notebook", "/notebook/a/b/api/status");
    assert!(!plain.as_ref().is_ok_and(|r| r.status == 200), "plain HTTP reached the notebook: {plain:?}");
    let intruder = issue(&controller, &root, &token(&namespace, "intruder")).await;
    assert!(get_through(pod_port(8888), &root, &notebook_id, Some(intruder)).await.is_err());

    // The whole path: a Notebook in a meshed namespace, its EndpointSlice
    // naming the pod, and a cluster-mode gateway with its own mesh
    // certificate: gateway -> mTLS -> iptables -> sidecar -> notebook.
    let plane = namespace.plane();
    plane.kubectl_ok(&["label", "namespace", ns, "portico-injection=enabled"]);
    plane.kubectl_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: kubeflow-gateway, namespace: {ns}}}\n\
             spec:\n  selector: {{istio: ingressgateway}}\n  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: [\"*\"]}}]\n\
             ---\napiVersion: kubeflow.org/v1\nkind: Notebook\nmetadata: {{name: nb, namespace: {ns}}}\n\
             spec: {{template: {{spec: {{containers: [{{name: nb, image: jupyter}}]}}}}}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: nb-pod\n  namespace: {ns}\n  \
             labels: {{kubernetes.io/service-name: nb}}\naddressType: IPv4\n\
             ports: [{{name: http-nb, port: 8888, protocol: TCP}}]\n\
             endpoints: [{{addresses: [\"{}\"], conditions: {{ready: true}}}}]\n",
            pod.pod_ip
        )),
    );
    let gateway_port = free_port();
    let gateway_args: Vec<String> = [
        "--node-name",
        "gw",
        "--bind",
        &format!("80=127.0.0.1:{gateway_port}"),
        "--ca-address",
        &format!("https://{}", controller.secure_discovery_addr()),
        "--ca-name",
        "localhost",
        "--ca-root",
        &write(dir.path(), "gateway-root.pem", &root),
        "--token-file",
        &write(dir.path(), "gateway-token", &token(&namespace, "gateway")),
        "--cert-ttl",
        "6s",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let gateway = portico_e2e::Gateway::start_discovery(&controller.discovery_url(), &gateway_args);
    let url = format!("http://127.0.0.1:{gateway_port}/notebook/{ns}/nb/api/status");
    let mut last = 0;
    let through = poll(Duration::from_secs(30), || {
        last = raw_http::get_url(&url).map_or(0, |r| r.status);
        (last == 200).then_some(())
    });
    assert!(
        through.is_some(),
        "GET {url} through the gateway and the sidecar: last {last}\ngateway log:\n{}\nsidecar log:\n{}",
        gateway.log_tail(),
        sidecar.log_tail(20)
    );
    // A kernel websocket over the same path, spliced by the gateway over its
    // own mutual TLS (a connection of its own, made with the certificate
    // current then); it keeps working while both certificates rotate.
    let base = format!("http://127.0.0.1:{gateway_port}/notebook/{ns}/nb/");
    let kernel = create_kernel(&base).await;
    let channels = channels_url(&base, &kernel);
    let gateway_id = format!("spiffe://cluster.local/ns/{ns}/sa/gateway");
    let mut socket = KernelSocket::connect(&channels).await;
    assert_eq!(socket.execute("1+1").await, "2");
    let gateway_before = latest_gateway_certificate(&sidecar.log(), &gateway_id).unwrap_or_else(|| {
        panic!("the sidecar logged no admitted gateway certificate; log:\n{}", sidecar.log_tail(30))
    });
    let test_client = issue(&controller, &root, &token(&namespace, "gateway")).await;
    let sidecar_before = sidecar_certificate(pod_port(8888), &root, &notebook_id, test_client).await;
    // Both certificates live 6 s and are renewed at half-life.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(socket.execute("1+1").await, "2", "the websocket opened before the rotation, after it");
    // A second websocket: a new connection, with the gateway's certificate of now.
    let mut second = KernelSocket::connect(&channels).await;
    assert_eq!(second.execute("2+2").await, "4");
    let gateway_after = latest_gateway_certificate(&sidecar.log(), &gateway_id).unwrap_or_else(|| {
        panic!("the sidecar logged no admitted gateway certificate; log:\n{}", sidecar.log_tail(30))
    });
    let test_client = issue(&controller, &root, &token(&namespace, "gateway")).await;
    let sidecar_after = sidecar_certificate(pod_port(8888), &root, &notebook_id, test_client).await;
    assert_rotated("the gateway's client certificate (as the sidecar saw it)", &gateway_before, &gateway_after);
    assert_rotated("the sidecar's server certificate", &sidecar_before, &sidecar_after);
    // The first websocket still runs on its pre-rotation connection.
    assert_eq!(socket.execute("3+3").await, "6", "the websocket opened before the rotation, at the end");
    second.close().await;
    socket.close().await;
    let metrics =
        raw_http::get_url(&format!("http://{}/stats/prometheus", pod_port(15090))).expect("sidecar metrics").text();
    assert!(metrics.contains(&format!("source_principal=\"spiffe://cluster.local/ns/{ns}/sa/gateway\"")), "{metrics}");
    sidecar.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_capture_passes_the_pods_connections_through_the_sidecar() {
    let namespace = TestNamespace::create("sidecar-out");
    let ns = namespace.name();
    let controller = Controller::start(ns, &[]);
    let root = root_of(&namespace);
    let dir = tempfile::tempdir().expect("a temp dir");
    // The sidecar runs as uid 1337 and must read its files.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let pod = PodNetwork::create(1);

    // Something outside the pod: answers one line per connection.
    let outside = std::net::TcpListener::bind((pod.host_ip.as_str(), 0)).expect("binding outside the pod");
    let outside_addr = outside.local_addr().expect("an address");
    std::thread::spawn(move || {
        for mut stream in outside.incoming().flatten() {
            use std::io::Write as _;
            let _ = stream.write_all(b"hello from outside\n");
        }
    });

    let mut notebook = pod.command(&binary("portico-fake-notebook"));
    notebook.args(["--listen", "0.0.0.0:8888", "--threads", "1"]);
    let _notebook = ChildProcess::spawn("fake-notebook", notebook, &dir.path().join("notebook.log"), Stop::Kill);
    let mut init = pod.command(&binary("portico-sidecar"));
    init.args(["init", "--capture-outbound", "--proxy-uid", "1337"]);
    for _ in 0..2 {
        let output = init.output().expect("running portico-sidecar init");
        assert!(output.status.success(), "init: {}", String::from_utf8_lossy(&output.stderr));
    }
    let rules = Command::new("ip").args(["netns", "exec", &pod.name, "iptables-save", "-t", "nat"]).output();
    let rules = String::from_utf8_lossy(&rules.expect("iptables-save").stdout).into_owned();
    assert_eq!(
        rules.matches("-A OUTPUT -p tcp -j ISTIO_OUTPUT").count(),
        1,
        "running init twice is harmless:\n{rules}"
    );

    // The sidecar as the injector runs it: uid and gid 1337, so its own
    // connections (to the CA here) are exempt from the capture.
    let mut sidecar = Command::new("ip");
    sidecar.args(["netns", "exec", &pod.name, "setpriv", "--reuid=1337", "--regid=1337", "--clear-groups"]);
    sidecar.arg(binary("portico-sidecar"));
    sidecar.args(["run", "--app-port", "8888", "--outbound", "0.0.0.0:15001"]);
    sidecar.args(["--ca-address", &format!("https://{}:{}", pod.host_ip, controller.secure_discovery_addr().port())]);
    sidecar.args(["--ca-name", "localhost", "--ca-root", &write(dir.path(), "root.pem", &root)]);
    sidecar.args(["--token-file", &write(dir.path(), "token", &token(&namespace, "notebook"))]);
    clear_settings_env(&mut sidecar);
    let mut sidecar = ChildProcess::spawn("portico-sidecar", sidecar, &dir.path().join("sidecar.log"), Stop::Kill);
    let pod_port = |port: u16| SocketAddr::new(pod.pod_ip.parse().expect("an IP"), port);
    let ready = poll(Duration::from_secs(30), || {
        raw_http::get_url(&format!("http://{}/healthz/ready", pod_port(15021))).ok().filter(|r| r.status == 200)
    });
    assert!(
        ready.is_some(),
        "the sidecar never got ready (its CA connection must not be captured); log:\n{}",
        sidecar.log_tail(40)
    );

    // The notebook (any uid but 1337) reaches the outside world, through the sidecar.
    let client = Command::new("ip")
        .args(["netns", "exec", &pod.name, "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{}/{}; head -n1 <&3", outside_addr.ip(), outside_addr.port()))
        .output()
        .expect("running the client in the pod");
    assert_eq!(
        String::from_utf8_lossy(&client.stdout).trim(),
        "hello from outside",
        "client stderr: {}\nsidecar log:\n{}",
        String::from_utf8_lossy(&client.stderr),
        sidecar.log_tail(20)
    );
    let opened = poll(Duration::from_secs(10), || {
        let metrics = raw_http::get_url(&format!("http://{}/stats/prometheus", pod_port(15090))).ok()?.text();
        metrics
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_closed_total{reporter=\"source\""))
            .map(str::to_string)
    });
    let line = opened.unwrap_or_else(|| panic!("no outbound connection counted; log:\n{}", sidecar.log_tail(20)));
    // Exactly the notebook's connection: the sidecar's own (to the CA) went direct.
    assert!(line.ends_with(" 1"), "{line}");
    assert!(line.contains(&format!("source_principal=\"spiffe://cluster.local/ns/{ns}/sa/notebook\"")), "{line}");
    sidecar.stop();
}
