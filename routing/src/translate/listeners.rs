//! Selected Gateways -> listeners: one per server port, with TLS resolved.

use std::collections::BTreeMap;

use portico_api::istio::{Gateway, Server};
use portico_api::k8s_openapi::api::core::v1::Secret;

use super::hosts::ServerHost;
use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::table::{ListenerProtocol, TlsCredential, TlsServer};

/// A Gateway server accepted for this gateway instance.
pub(crate) struct BoundServer {
    /// `namespace/name` of its Gateway.
    pub gateway: String,
    pub hosts: Vec<ServerHost>,
    pub https_redirect: bool,
}

/// A port and the servers on it.
pub(crate) struct ListenerDraft {
    pub port: u16,
    pub protocol: ListenerProtocol,
    pub servers: Vec<BoundServer>,
    pub tls: Vec<TlsServer>,
}

/// Builds the listeners from `gateways` (already selected and sorted).
pub(crate) fn listeners(
    gateways: &[&Gateway],
    secrets: &[Secret],
    gateway_namespace: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<u16, ListenerDraft> {
    let mut listeners: BTreeMap<u16, ListenerDraft> = BTreeMap::new();
    for gateway in gateways {
        let namespace = gateway.metadata.namespace.as_deref().unwrap_or("default");
        let name = gateway.metadata.name.as_deref().unwrap_or_default();
        let object = ObjectRef::new("Gateway", namespace, name);
        for (index, server) in gateway.spec.servers.iter().enumerate() {
            let field = format!("spec.servers[{index}]");
            let Some((port, protocol, tls)) =
                server_shape(server, &object, &field, secrets, gateway_namespace, diagnostics)
            else {
                continue;
            };
            let mut hosts = Vec::with_capacity(server.hosts.len());
            for (host_index, host) in server.hosts.iter().enumerate() {
                match ServerHost::parse(host, namespace) {
                    Ok(host) => hosts.push(host),
                    Err(reason) => {
                        diagnostics.push(Diagnostic::error(&object, format!("{field}.hosts[{host_index}]"), reason))
                    }
                }
            }
            if hosts.is_empty() {
                diagnostics.push(Diagnostic::error(&object, format!("{field}.hosts"), "no valid host; server skipped"));
                continue;
            }
            let listener = listeners.entry(port).or_insert_with(|| ListenerDraft {
                port,
                protocol,
                servers: Vec::new(),
                tls: Vec::new(),
            });
            if listener.protocol != protocol {
                diagnostics.push(Diagnostic::error(
                    &object,
                    format!("{field}.port"),
                    format!("port {port} is already served as {:?} by another server; skipped", listener.protocol),
                ));
                continue;
            }
            if let Some(credential) = tls {
                let sni = hosts.iter().map(|h| h.host.clone()).collect();
                listener.tls.push(TlsServer { hosts: sni, credential });
            }
            listener.servers.push(BoundServer {
                gateway: format!("{namespace}/{name}"),
                hosts,
                https_redirect: server.tls.as_ref().is_some_and(|t| t.https_redirect)
                    && protocol == ListenerProtocol::Http,
            });
        }
    }
    listeners
}

/// Port, protocol and TLS credential of a server, or a diagnostic.
fn server_shape(
    server: &Server,
    object: &ObjectRef,
    field: &str,
    secrets: &[Secret],
    gateway_namespace: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(u16, ListenerProtocol, Option<TlsCredential>)> {
    let Some(port) = u16::try_from(server.port.number).ok().filter(|p| *p > 0) else {
        diagnostics.push(Diagnostic::error(
            object,
            format!("{field}.port.number"),
            format!("{} is not a valid port", server.port.number),
        ));
        return None;
    };
    let protocol = match server.port.protocol.to_ascii_uppercase().as_str() {
        "HTTP" | "HTTP2" | "GRPC" => ListenerProtocol::Http,
        "HTTPS" => ListenerProtocol::Https,
        other => {
            diagnostics.push(Diagnostic::error(
                object,
                format!("{field}.port.protocol"),
                format!("{other:?} is not supported by Portico (HTTP, HTTP2, GRPC, HTTPS); server skipped"),
            ));
            return None;
        }
    };
    if protocol == ListenerProtocol::Http {
        return Some((port, protocol, None));
    }
    let Some(tls) = &server.tls else {
        diagnostics.push(Diagnostic::error(object, format!("{field}.tls"), "is required for an HTTPS server"));
        return None;
    };
    let mode = tls.mode.as_deref().unwrap_or("SIMPLE");
    if mode != "SIMPLE" {
        diagnostics.push(Diagnostic::error(
            object,
            format!("{field}.tls.mode"),
            format!("{mode} is not supported yet (SIMPLE is); server skipped"),
        ));
        return None;
    }
    let credential = match (&tls.credential_name, &tls.server_certificate, &tls.private_key) {
        (Some(name), _, _) => secret_credential(name, object, field, secrets, gateway_namespace, diagnostics)?,
        (None, Some(cert), Some(key)) => TlsCredential::Files { cert_path: cert.clone(), key_path: key.clone() },
        _ => {
            diagnostics.push(Diagnostic::error(
                object,
                format!("{field}.tls"),
                "needs credentialName, or serverCertificate and privateKey",
            ));
            return None;
        }
    };
    Some((port, protocol, Some(credential)))
}

/// Finds `name` in the gateway instance's namespace, then in the Gateway's.
fn secret_credential(
    name: &str,
    object: &ObjectRef,
    field: &str,
    secrets: &[Secret],
    gateway_namespace: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<TlsCredential> {
    let found = [gateway_namespace, object.namespace.as_str()].iter().find_map(|namespace| {
        secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name) && s.metadata.namespace.as_deref() == Some(*namespace))
    });
    let Some(secret) = found else {
        diagnostics.push(Diagnostic::error(
            object,
            format!("{field}.tls.credentialName"),
            format!(
                "Secret {name:?} not found in namespace {gateway_namespace} or {}; server skipped",
                object.namespace
            ),
        ));
        return None;
    };
    let value = |key: &str| -> Option<String> {
        let from_data =
            secret.data.as_ref().and_then(|d| d.get(key)).map(|b| String::from_utf8_lossy(&b.0).into_owned());
        from_data.or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).cloned())
    };
    match (value("tls.crt"), value("tls.key")) {
        (Some(cert_pem), Some(key_pem)) => Some(TlsCredential::Pem {
            source: format!("{}/{name}", secret.metadata.namespace.as_deref().unwrap_or_default()),
            cert_pem,
            key_pem,
        }),
        _ => {
            diagnostics.push(Diagnostic::error(
                object,
                format!("{field}.tls.credentialName"),
                format!("Secret {name:?} has no tls.crt and tls.key; server skipped"),
            ));
            None
        }
    }
}
