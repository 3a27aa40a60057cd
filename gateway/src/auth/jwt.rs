//! JWT authentication as Istio's RequestAuthentication does it: find the
//! token where a rule says to look, pick the rule by the token's issuer,
//! verify signature, issuer, audience and time against the issuer's JWKS.
//!
//! JWKS documents are cached per URI for [`JWKS_REFRESH`] and refetched
//! early (at most once per `refetch_interval`) when a token names a key the
//! cache does not have, which is how an issuer's key rotation shows up.
//! Envoy waits for the cache to expire instead, so a rotation locks users
//! out for minutes.
//!
//! Verified tokens are remembered ([`TokenCache`]): a browser session sends
//! the same token on every request, and its signature is checked once, not
//! per request, for as long as its `exp`, the rule and the key set allow.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pingora_http::RequestHeader;
use portico_routing::security::JwtIssuer;

use super::token_cache::{CachedToken, TokenCache, now_secs};

/// How long a fetched JWKS is trusted before it is fetched again.
const JWKS_REFRESH: Duration = Duration::from_secs(600);
/// Clock skew allowed on `exp` and `nbf` (Envoy's default).
const LEEWAY_SECS: u64 = 60;

/// A verified token.
pub struct Verified<'r> {
    /// What its verification established (principal `<iss>/<sub>`,
    /// claims, the claims' headers), shared with the cache.
    pub token: Arc<CachedToken>,
    /// Index of the rule in the security table's `jwt_rules`.
    pub rule: usize,
    /// Where the token was found, to remove it unless forwarded.
    pub location: TokenLocation<'r>,
}

/// Where a token was read from: the name, as the rule that reads there has
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenLocation<'r> {
    Header(&'r str),
    Param(&'r str),
    Cookie(&'r str),
}

/// Why a token was refused (the client gets 401).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token is not a JWT: {0}")]
    Malformed(String),
    #[error("issuer {0:?} is not accepted here")]
    UnknownIssuer(String),
    #[error("no key of issuer {issuer:?} verifies the token: {reason}")]
    NoKey { issuer: String, reason: String },
    #[error("token rejected: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// Verifies tokens; shared by every request.
pub struct JwtVerifier {
    client: reqwest::Client,
    cache: Mutex<HashMap<String, CachedKeys>>,
    /// Least time between two fetches of one JWKS caused by unknown keys.
    refetch_interval: Duration,
    /// Tokens verified before, by their text.
    verified: TokenCache,
}

struct CachedKeys {
    keys: Arc<JwkSet>,
    fetched: Instant,
}

impl JwtVerifier {
    pub fn new(client: reqwest::Client, refetch_interval: Duration) -> Self {
        Self { client, cache: Mutex::new(HashMap::new()), refetch_interval, verified: TokenCache::default() }
    }

    /// The first token any rule's locations hold, verified. `Ok(None)`
    /// when the request carries no token at all.
    pub async fn authenticate<'r>(
        &self,
        rules: &'r [JwtIssuer],
        request: &RequestHeader,
    ) -> Result<Option<Verified<'r>>, JwtError> {
        let Some((token, location)) = find_token(rules, request) else { return Ok(None) };
        if let Some(verified) = self.remembered(rules, &token, location).await {
            return Ok(Some(verified));
        }
        let issuer = unverified_issuer(&token)?;
        // A rule of this issuer that reads tokens from where this one was.
        let (index, rule) = rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.issuer == issuer && reads_from(rule, location))
            .ok_or_else(|| JwtError::UnknownIssuer(issuer.clone()))?;
        let (claims, keys) = self.verify(rule, &token).await?;
        let subject = claims.get("sub").and_then(|s| s.as_str()).unwrap_or_default();
        let principal: Arc<str> = Arc::from(format!("{issuer}/{subject}"));
        let entry = Arc::new(CachedToken::new(rule, principal, Arc::new(claims), keys));
        self.verified.insert(token.into_owned(), Arc::clone(&entry), LEEWAY_SECS);
        Ok(Some(Verified { token: entry, rule: index, location }))
    }

    /// A token verified before, still valid under the rule that takes it now
    /// and the issuer's current keys.
    async fn remembered<'r>(
        &self,
        rules: &'r [JwtIssuer],
        token: &str,
        location: TokenLocation<'r>,
    ) -> Option<Verified<'r>> {
        let entry = self.verified.get(token)?;
        let (index, rule) =
            rules.iter().enumerate().find(|(_, rule)| rule.issuer == entry.issuer && reads_from(rule, location))?;
        // Inline keys are compared as text in still_valid; fetched ones by
        // identity, so a refetched JWKS (rotation) verifies again.
        let keys = match rule.jwks_uri.as_deref().filter(|_| rule.jwks.is_none()) {
            Some(_) => Some(self.keys(rule, false).await.ok()?),
            None => None,
        };
        if !entry.still_valid(rule, keys.as_ref(), now_secs(), LEEWAY_SECS) {
            self.verified.remove(token);
            return None;
        }
        Some(Verified { token: entry, rule: index, location })
    }

    /// The token's claims, and the fetched key set that verified it (None
    /// for inline keys).
    async fn verify(
        &self,
        rule: &JwtIssuer,
        token: &str,
    ) -> Result<(serde_json::Value, Option<Arc<JwkSet>>), JwtError> {
        let header = jsonwebtoken::decode_header(token)?;
        let no_key = |reason: String| JwtError::NoKey { issuer: rule.issuer.clone(), reason };
        let mut keys = self.keys(rule, false).await.map_err(no_key)?;
        let mut candidates = matching_keys(&keys, header.kid.as_deref(), header.alg);
        if candidates.is_empty() && rule.jwks_uri.is_some() && rule.jwks.is_none() {
            // A key the issuer published after our last fetch.
            keys = self.keys(rule, true).await.map_err(no_key)?;
            candidates = matching_keys(&keys, header.kid.as_deref(), header.alg);
        }
        if candidates.is_empty() {
            return Err(no_key(format!("no key for kid {:?} and algorithm {:?}", header.kid, header.alg)));
        }
        let fetched = rule.jwks.is_none();
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[&rule.issuer]);
        // Istio requires neither exp nor aud; both are checked when present
        // (aud only against a configured list).
        validation.required_spec_claims.clear();
        if rule.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&rule.audiences);
        }
        let mut last_error = None;
        for jwk in candidates {
            let key = DecodingKey::from_jwk(jwk)?;
            match jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation) {
                Ok(data) => return Ok((data.claims, fetched.then(|| Arc::clone(&keys)))),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.map_or_else(|| no_key("no usable key".to_string()), JwtError::Invalid))
    }

    /// The issuer's keys: inline, or the cached JWKS (fetched when missing,
    /// stale, or `refresh` and not fetched within the refetch interval).
    async fn keys(&self, rule: &JwtIssuer, refresh: bool) -> Result<Arc<JwkSet>, String> {
        if let Some(inline) = &rule.jwks {
            return serde_json::from_str(inline).map(Arc::new).map_err(|e| format!("inline jwks: {e}"));
        }
        let uri = rule.jwks_uri.as_deref().ok_or("no jwksUri")?;
        if let Some(cached) = self.cached(uri, refresh) {
            return Ok(cached);
        }
        let fetched = self
            .client
            .get(uri)
            .timeout(Duration::from_millis(rule.jwks_timeout_ms))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("fetching {uri}: {e}"))?
            .json::<JwkSet>()
            .await
            .map_err(|e| format!("reading {uri}: {e}"));
        let mut cache = self.cache.lock().map_err(|_| "JWKS cache poisoned".to_string())?;
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                cache.insert(uri.to_string(), CachedKeys { keys: Arc::clone(&keys), fetched: Instant::now() });
                Ok(keys)
            }
            // Keep serving with keys we had: an IdP blip must not log
            // everybody out.
            Err(error) => match cache.get(uri) {
                Some(stale) => {
                    tracing::warn!(%error, "JWKS refresh failed; keeping the cached keys");
                    Ok(Arc::clone(&stale.keys))
                }
                None => Err(error),
            },
        }
    }

    fn cached(&self, uri: &str, refresh: bool) -> Option<Arc<JwkSet>> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(uri)?;
        let age = entry.fetched.elapsed();
        let fresh = if refresh { age < self.refetch_interval } else { age < JWKS_REFRESH };
        fresh.then(|| Arc::clone(&entry.keys))
    }
}

fn matching_keys<'a>(keys: &'a JwkSet, kid: Option<&str>, alg: Algorithm) -> Vec<&'a Jwk> {
    keys.keys
        .iter()
        .filter(|jwk| kid.is_none() || jwk.common.key_id.as_deref() == kid)
        .filter(|jwk| {
            let declared = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok());
            declared.is_none_or(|declared| declared == alg)
        })
        .collect()
}

/// The first token found at any rule's locations (borrowed from the
/// request where it can be: it is only copied when a verification caches it).
fn find_token<'q, 'r>(rules: &'r [JwtIssuer], request: &'q RequestHeader) -> Option<(Cow<'q, str>, TokenLocation<'r>)> {
    for rule in rules {
        for location in &rule.from_headers {
            for value in request.headers.get_all(location.name.as_str()) {
                let Ok(value) = value.to_str() else { continue };
                let token = if location.prefix.is_empty() {
                    Some(value)
                } else {
                    strip_prefix_ignore_case(value, &location.prefix)
                };
                if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
                    return Some((Cow::Borrowed(token), TokenLocation::Header(&location.name)));
                }
            }
        }
        if let Some(query) = request.uri.query() {
            for name in &rule.from_params {
                if let Some(token) = query_param(query, name) {
                    return Some((Cow::Borrowed(token), TokenLocation::Param(name)));
                }
            }
        }
        for name in &rule.from_cookies {
            if let Some(token) = super::browser::cookie(request, name) {
                return Some((Cow::Owned(token), TokenLocation::Cookie(name)));
            }
        }
    }
    None
}

fn reads_from(rule: &JwtIssuer, location: TokenLocation<'_>) -> bool {
    match location {
        TokenLocation::Header(name) => rule.from_headers.iter().any(|h| h.name == name),
        TokenLocation::Param(name) => rule.from_params.iter().any(|p| p == name),
        TokenLocation::Cookie(name) => rule.from_cookies.iter().any(|c| c == name),
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &value[prefix.len()..])
}

/// `name`'s value in a query string (percent-decoding is not needed for
/// the base64url alphabet of JWTs).
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// `iss` from the payload, before verification: it only picks the rule
/// (and so the keys) the token is then verified with.
fn unverified_issuer(token: &str) -> Result<String, JwtError> {
    let payload = token.split('.').nth(1).ok_or_else(|| JwtError::Malformed("not three segments".to_string()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| JwtError::Malformed(format!("payload is not base64url: {e}")))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| JwtError::Malformed(format!("payload is not JSON: {e}")))?;
    claims
        .get("iss")
        .and_then(|i| i.as_str())
        .map(str::to_string)
        .ok_or_else(|| JwtError::Malformed("no iss claim".to_string()))
}

/// The token's location, so it can be removed from the upstream request.
pub fn remove_token(request: &mut RequestHeader, location: TokenLocation<'_>) {
    match location {
        TokenLocation::Header(name) => {
            request.remove_header(name);
        }
        // Query and cookie tokens stay: rewriting the URI or the Cookie
        // header would change what the application sees beyond the token.
        TokenLocation::Param(_) | TokenLocation::Cookie(_) => {}
    }
}

/// A claim's value as a header value (strings as-is, lists joined by `,`).
pub fn claim_header_value(claims: &serde_json::Value, claim: &str) -> Option<String> {
    let mut value = claims;
    for segment in claim.split('.') {
        value = value.get(segment)?;
    }
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(","),
        ),
        serde_json::Value::Bool(_) | serde_json::Value::Number(_) => Some(value.to_string()),
        _ => None,
    }
}

/// The payload segment, for `outputPayloadToHeader`.
pub fn payload_segment(token_claims: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token_claims.to_string())
}
