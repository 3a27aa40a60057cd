//! The front door's lock: what happens between "a route matched" and "the
//! request goes upstream".
//!
//! In order (Istio's, with oauth2-proxy placed before JWT validation as
//! Kubeflow's setup needs, since the proxy is what turns the session cookie
//! into a bearer token):
//!
//! 1. client copies of identity headers (`kubeflow-userid`, ...) are removed,
//!    on every request;
//! 2. a websocket upgrade must come from the request's own origin;
//! 3. CUSTOM policies ask their external authorization provider;
//! 4. the JWT, if any, is verified and its claims copied into headers;
//! 5. the gateway's DENY/ALLOW policies, then those of the destination's
//!    namespace (with the gateway's identity as the source);
//! 6. session cookies are removed before the request reaches a notebook.

mod browser;
mod ext_authz;
mod jwt;
mod token_cache;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, header};
use pingora_http::RequestHeader;
use portico_routing::request::HeaderSource;
use portico_routing::security::{Attributes, PolicySet, SecurityTable};

use crate::decision::{Forward, LocalResponse};
use crate::state::Snapshot;
use crate::upstream::Resolver;

pub use jwt::JwtVerifier;

/// Front-door settings that come from flags, not from policies.
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    /// The gateway's principal (`cluster.local/ns/<ns>/sa/<sa>`): the source
    /// principal destination-namespace policies see.
    pub principal: String,
    /// Where page navigations without a login go (`{rd}` is replaced by the
    /// URL-encoded original path). None: 401 for everything.
    pub login_url: Option<String>,
    /// Cookies never forwarded to a notebook.
    pub session_cookies: Vec<String>,
    /// Headers only the gateway may set (lower-case), removed from every
    /// client request even where no RequestAuthentication names them: a
    /// profile policy keyed on `kubeflow-userid` must never see a forged one.
    pub identity_headers: Vec<String>,
    /// Origins allowed to open websockets besides the request's own.
    pub allowed_origins: Vec<String>,
    /// Refuse websocket upgrades that carry no Origin at all.
    pub require_websocket_origin: bool,
    /// Least time between JWKS refetches caused by unknown key ids.
    pub jwks_refetch_interval: std::time::Duration,
}

/// Shared by every request of every listener.
pub struct Guard {
    settings: AuthSettings,
    /// `settings.identity_headers`, parsed once (they are removed from
    /// every request).
    identity_names: Vec<HeaderName>,
    client: reqwest::Client,
    jwt: JwtVerifier,
}

/// Headers to add to the client's response once the request is allowed.
pub type ResponseHeaders = Vec<(HeaderName, HeaderValue)>;

/// Where routing sent a request: what the policies decide on.
pub struct Routed<'a> {
    pub snapshot: &'a Snapshot,
    /// Host without port, lower-case.
    pub host: &'a str,
    /// The normalized path routing matched.
    pub path: &'a str,
    /// The chosen destination's namespace, for forwarded requests.
    pub destination_namespace: Option<&'a str>,
}

impl<'a> Routed<'a> {
    pub fn forward(forward: &'a Forward) -> Self {
        Routed {
            snapshot: &forward.snapshot,
            host: &forward.host,
            path: &forward.path,
            destination_namespace: forward.destination_namespace(),
        }
    }
}

impl Guard {
    pub fn new(settings: AuthSettings) -> Self {
        // No redirects: a provider's 302 is the client's answer, and a JWKS
        // URI must answer itself.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let jwt = JwtVerifier::new(client.clone(), settings.jwks_refetch_interval);
        let identity_names = settings
            .identity_headers
            .iter()
            .filter_map(|name| match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    tracing::warn!(header = %name, "not a header name; ignored");
                    None
                }
            })
            .collect();
        Self { settings, identity_names, jwt, client }
    }

    /// Whether requests routed with `snapshot` need the policy path of
    /// [`Guard::admit`]; when not, [`Guard::admit_without_policies`] does
    /// the whole job without an await.
    pub fn has_policies(snapshot: &Snapshot) -> bool {
        !snapshot.matcher.security().is_empty()
    }

    /// [`Guard::admit`] where no policy applies: identity headers removed,
    /// the websocket origin checked, session cookies removed.
    pub fn admit_without_policies(
        &self,
        request: &mut RequestHeader,
        routed: &Routed<'_>,
    ) -> Result<(), LocalResponse> {
        self.screen(request, routed.snapshot.matcher.security())?;
        browser::strip_cookies(request, &self.settings.session_cookies);
        Ok(())
    }

    /// What every request gets, policies or not: client copies of identity
    /// headers removed, and a websocket upgrade from a foreign origin refused.
    fn screen(&self, request: &mut RequestHeader, security: &SecurityTable) -> Result<(), LocalResponse> {
        // Removed only where present: a removal by a `&str` name parses the
        // name into both of Pingora's header maps' lookups.
        for name in security.identity_header_names() {
            if request.headers.contains_key(name) {
                request.remove_header(name);
            }
        }
        for name in &self.identity_names {
            if request.headers.contains_key(name) {
                request.remove_header(name);
            }
        }
        if request.headers.contains_key(header::UPGRADE)
            && !browser::websocket_origin_allowed(
                request,
                &self.settings.allowed_origins,
                self.settings.require_websocket_origin,
            )
        {
            tracing::debug!(origin = ?request.headers.get(header::ORIGIN), "cross-origin websocket refused");
            return Err(LocalResponse::text(403, "websocket origin not allowed\n", "-"));
        }
        Ok(())
    }

    /// Checks `request` (and rewrites its identity headers) for the route
    /// decided in `routed`. `Err` is the client's answer.
    pub async fn admit(
        &self,
        request: &mut RequestHeader,
        routed: &Routed<'_>,
        resolver: &Resolver,
        client_ip: Option<std::net::IpAddr>,
        port: u16,
        scheme: &str,
    ) -> Result<ResponseHeaders, LocalResponse> {
        let security = routed.snapshot.matcher.security();
        self.screen(request, security)?;
        let mut response_headers = Vec::new();
        if !security.is_empty() {
            // Boxed: the policy path (external authorization, JWKS fetches)
            // is a large future that requests without policies never hold.
            response_headers =
                Box::pin(self.check_policies(request, routed, security, resolver, client_ip, port, scheme)).await?;
        }
        browser::strip_cookies(request, &self.settings.session_cookies);
        Ok(response_headers)
    }

    #[allow(clippy::too_many_arguments)]
    async fn check_policies(
        &self,
        request: &mut RequestHeader,
        routed: &Routed<'_>,
        security: &SecurityTable,
        resolver: &Resolver,
        client_ip: Option<std::net::IpAddr>,
        port: u16,
        scheme: &str,
    ) -> Result<ResponseHeaders, LocalResponse> {
        let matcher = &routed.snapshot.matcher;
        let mut response_headers = Vec::new();
        // CUSTOM: decided on the request as the client sent it.
        let provider = {
            let attributes = attributes(request, routed, None, None, None, client_ip, port);
            security.gateway.custom_provider(&attributes).map(str::to_string)
        };
        if let Some(name) = provider {
            let Some(provider) = security.providers.get(&name) else {
                tracing::warn!(provider = %name, "CUSTOM policy names an unknown provider; denied");
                return Err(forbidden());
            };
            let address = resolver.resolve(matcher, &provider.service, provider.port).await.map_err(|error| {
                tracing::warn!(provider = %name, %error, "external authorization provider not resolvable");
                LocalResponse::text(provider.status_on_error, "external authorization unavailable\n", "UAEX")
            })?;
            match ext_authz::check(&self.client, provider, address.address, request, scheme).await {
                ext_authz::Check::Allow { upstream, downstream } => {
                    for (name, value) in upstream {
                        request.insert_header(name, value).map_err(|_| internal())?;
                    }
                    response_headers = downstream;
                }
                ext_authz::Check::Deny { status, headers, body } => {
                    return Err(LocalResponse { status, headers: owned(headers), body, flags: "UAEX" });
                }
            }
        }
        // Authentication.
        let verified = match self.jwt.authenticate(&security.jwt_rules, request).await {
            Ok(verified) => verified,
            Err(error) => {
                tracing::debug!(%error, "JWT refused");
                let mut response = LocalResponse::text(401, "Jwt verification fails\n", "-");
                response.headers.push((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"".to_string()));
                return Err(response);
            }
        };
        if let Some(verified) = &verified
            && let Some(rule) = security.jwt_rules.get(verified.rule)
        {
            // In the map directly: through `RequestHeader`, each custom name
            // was parsed, copied and put in a second map for its case
            // (4.2k instructions per request for Kubeflow's two headers).
            let inserted = crate::headers::edit_headers(request, |headers| -> Option<()> {
                for output in &rule.claim_to_headers {
                    if let (name, Some(value)) = verified.token.claim_header(output)? {
                        headers.insert(name, value);
                    }
                }
                if let Some(name) = &rule.payload_header {
                    let value = HeaderValue::try_from(jwt::payload_segment(&verified.token.claims)).ok()?;
                    headers.insert(HeaderName::from_bytes(name.as_bytes()).ok()?, value);
                }
                Some(())
            });
            inserted.ok().flatten().ok_or_else(internal)?;
            if !rule.forward_original_token {
                jwt::remove_token(request, verified.location);
            }
        }
        let credentials = match &verified {
            Some(_) => Credentials::Verified,
            None if security.jwt_rules.is_empty() => Credentials::NotApplicable,
            None => Credentials::Missing,
        };
        let principal = verified.as_ref().map(|v| &*v.token.principal);
        let claims = verified.as_ref().map(|v| &*v.token.claims);
        // The gateway's own policies: the peer is the remote client.
        let gateway = attributes(request, routed, None, principal, claims, client_ip, port);
        check(&security.gateway, &gateway, request, &self.settings, credentials)?;
        // The destination namespace's: the peer is this gateway.
        if let Some(policies) = routed.destination_namespace.and_then(|ns| security.namespaces.get(ns)) {
            let at_destination =
                attributes(request, routed, Some(&self.settings.principal), principal, claims, client_ip, port);
            check(policies, &at_destination, request, &self.settings, credentials)?;
        }
        Ok(response_headers)
    }
}

fn attributes<'a>(
    request: &'a RequestHeader,
    routed: &'a Routed<'a>,
    principal: Option<&'a str>,
    request_principal: Option<&'a str>,
    claims: Option<&'a serde_json::Value>,
    client_ip: Option<std::net::IpAddr>,
    port: u16,
) -> Attributes<'a> {
    Attributes {
        principal,
        request_principal,
        claims,
        host: routed.host,
        port,
        method: request.method.as_str(),
        path: routed.path,
        headers: &request.headers as &dyn HeaderSource,
        client_ip,
        sni: None,
    }
}

/// How the request stands with authentication, for the denial's status.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Credentials {
    /// A valid JWT.
    Verified,
    /// None, where the gateway accepts some: signing in would help (401).
    Missing,
    /// No authentication is configured: a denial is final (403).
    NotApplicable,
}

/// A denial becomes 401 (or a login redirect for a page) when signing in
/// could change it, 403 otherwise.
fn check(
    policies: &PolicySet,
    attributes: &Attributes<'_>,
    request: &RequestHeader,
    settings: &AuthSettings,
    credentials: Credentials,
) -> Result<(), LocalResponse> {
    let Err(denied) = policies.check(attributes) else { return Ok(()) };
    tracing::debug!(%denied, path = attributes.path, "request denied");
    if credentials != Credentials::Missing {
        return Err(forbidden());
    }
    if let Some(login) = settings.login_url.as_deref().filter(|_| browser::is_navigation(request)) {
        let original = String::from_utf8_lossy(request.raw_path());
        let location = login.replace("{rd}", &percent_encode(&original));
        return Err(LocalResponse {
            status: 302,
            headers: vec![(header::LOCATION, location)],
            body: Bytes::new(),
            flags: "-",
        });
    }
    let mut response = LocalResponse::text(401, "authentication required\n", "-");
    response.headers.push((header::WWW_AUTHENTICATE, "Bearer".to_string()));
    Err(response)
}

fn forbidden() -> LocalResponse {
    LocalResponse::text(403, "RBAC: access denied\n", "-")
}

fn internal() -> LocalResponse {
    LocalResponse::text(500, "internal error\n", "-")
}

fn owned(headers: Vec<(HeaderName, HeaderValue)>) -> Vec<(HeaderName, String)> {
    headers.into_iter().filter_map(|(n, v)| v.to_str().ok().map(|v| (n, v.to_string()))).collect()
}

/// Percent-encodes everything but unreserved characters and `/`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
