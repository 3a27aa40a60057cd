//! A real oauth2-proxy (built from source by tests/oauth2-proxy/build),
//! configured the way Kubeflow runs it in front of Dex: OIDC, session cookie
//! `oauth2_proxy_kubeflow`, `static://200` upstream for ext-authz checks, the
//! ID token returned in `Authorization`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{ChildProcess, Stop, clear_settings_env};
use crate::wait::poll;
use crate::{free_port, raw_http, workspace_root};

/// Kubeflow's client id at Dex, and the audience of its ID tokens.
pub const CLIENT_ID: &str = "kubeflow-oidc-authservice";
/// Kubeflow's session cookie.
pub const COOKIE_NAME: &str = "oauth2_proxy_kubeflow";

/// A running oauth2-proxy, killed on drop.
pub struct OAuth2Proxy {
    process: ChildProcess,
    address: SocketAddr,
    _dir: TempDir,
}

impl OAuth2Proxy {
    /// Starts one for `issuer`, whose token endpoint is `redeem_url` and keys
    /// `jwks_url`; users come back to `redirect_url` (the gateway's
    /// `/oauth2/callback`).
    pub fn start(issuer: &str, redeem_url: &str, jwks_url: &str, redirect_url: &str) -> OAuth2Proxy {
        let binary = build();
        let dir = tempfile::Builder::new().prefix("portico-oauth2-proxy-").tempdir().expect("a temp dir");
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = Command::new(binary);
        command.args([
            &format!("--http-address={address}"),
            "--provider=oidc",
            &format!("--oidc-issuer-url={issuer}"),
            "--skip-oidc-discovery=true",
            "--login-url=https://idp.example/auth",
            &format!("--redeem-url={redeem_url}"),
            &format!("--oidc-jwks-url={jwks_url}"),
            &format!("--client-id={CLIENT_ID}"),
            "--client-secret=not-so-secret",
            "--cookie-secret=0123456789abcdef0123456789abcdef",
            &format!("--cookie-name={COOKIE_NAME}"),
            "--cookie-secure=false",
            "--email-domain=*",
            "--upstream=static://200",
            "--reverse-proxy=true",
            "--set-authorization-header=true",
            "--skip-provider-button=true",
            &format!("--redirect-url={redirect_url}"),
            "--insecure-oidc-allow-unverified-email=true",
        ]);
        clear_settings_env(&mut command);
        let process = ChildProcess::spawn("oauth2-proxy", command, &dir.path().join("oauth2-proxy.log"), Stop::Kill);
        let proxy = OAuth2Proxy { process, address, _dir: dir };
        let up = poll(Duration::from_secs(20), || {
            raw_http::get(address, "localhost", "/ping").ok().filter(|r| r.status == 200)
        });
        assert!(up.is_some(), "oauth2-proxy did not answer /ping on {address}; log:\n{}", proxy.process.log_tail(30));
        proxy
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail(60)
    }
}

/// The binary, built (or found cached) by tests/oauth2-proxy/build.
fn build() -> PathBuf {
    let script = workspace_root().join("tests/oauth2-proxy/build");
    let output = Command::new(&script).output().unwrap_or_else(|error| panic!("running {}: {error}", script.display()));
    assert!(output.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&output.stderr));
    workspace_root().join("target/kube/bin/oauth2-proxy")
}
