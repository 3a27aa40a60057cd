//! Verified tokens, remembered by their text so that a browser's session
//! costs one signature check, not one per request (an RS256 verify is tens
//! of microseconds, more than the rest of a proxied request).
//!
//! An entry is only reused while everything its verification depended on
//! still holds:
//!
//! * the token is not expired (`exp`, with the verifier's leeway) and the
//!   entry is younger than [`MAX_AGE`] (tokens without `exp` too);
//! * the rule that now takes the token has the same issuer, audiences and
//!   inline keys as the one that verified it;
//! * the issuer's key set is the very one it was verified with: a JWKS
//!   refetch (key rotation, a removed key) makes every entry of the older
//!   set miss once and be verified again against the new keys.
//!
//! Bounded by [`MAX_TOKENS`]: a full cache first drops expired entries, and
//! is emptied when that is not enough (a flood of distinct valid tokens
//! costs verifications, never memory).
//!
//! A hit is on every authenticated request, so it is kept cheap: the token
//! (~800 bytes) is hashed with foldhash, not SipHash (2.6k instructions a
//! lookup); only verified tokens are ever inserted, so a client cannot
//! choose the keys that collide. The headers the verifying rule copies
//! claims into are made once per token, not per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::JwkSet;
use portico_routing::security::{ClaimHeader, JwtIssuer};

/// Distinct tokens remembered at most.
const MAX_TOKENS: usize = 10_000;
/// How long an entry is trusted without checking its signature again, even
/// when its `exp` is later (or absent).
const MAX_AGE: Duration = Duration::from_secs(300);

/// What a successful verification established.
pub struct CachedToken {
    pub issuer: String,
    pub principal: Arc<str>,
    pub claims: Arc<serde_json::Value>,
    /// `exp` in seconds since the epoch, when the token has one.
    expires: Option<u64>,
    /// The rule's configuration the token was verified under.
    audiences: Vec<String>,
    inline_jwks: Option<String>,
    /// The fetched key set it was verified with (None for inline keys).
    keys: Option<Arc<JwkSet>>,
    verified_at: Instant,
    /// The verifying rule's `outputClaimToHeaders`, made into headers.
    claim_headers: Vec<ClaimHeaderValue>,
}

/// One `outputClaimToHeaders` entry with the header it makes of the token.
struct ClaimHeaderValue {
    output: ClaimHeader,
    /// The header name, parsed once (None: not a valid header name).
    name: Option<HeaderName>,
    /// None when the token has no such claim (or not one a header can hold).
    value: Option<HeaderValue>,
}

impl CachedToken {
    pub fn new(
        rule: &JwtIssuer,
        principal: Arc<str>,
        claims: Arc<serde_json::Value>,
        keys: Option<Arc<JwkSet>>,
    ) -> Self {
        let claim_headers = rule
            .claim_to_headers
            .iter()
            .map(|output| ClaimHeaderValue {
                output: output.clone(),
                name: HeaderName::from_bytes(output.header.as_bytes()).ok(),
                value: claim_header_value(&claims, output),
            })
            .collect();
        Self {
            issuer: rule.issuer.clone(),
            principal,
            expires: claims.get("exp").and_then(serde_json::Value::as_u64),
            claims,
            audiences: rule.audiences.clone(),
            inline_jwks: rule.jwks.clone(),
            keys,
            verified_at: Instant::now(),
            claim_headers,
        }
    }

    /// The header `output` makes of this token: name and value (None when
    /// the token lacks the claim); None when the name is not a header name.
    /// Made once, when the token was verified (or now, for an output the
    /// verifying rule did not have).
    pub fn claim_header(&self, output: &ClaimHeader) -> Option<(HeaderName, Option<HeaderValue>)> {
        match self.claim_headers.iter().find(|made| made.output == *output) {
            Some(made) => Some((made.name.clone()?, made.value.clone())),
            None => {
                let name = HeaderName::from_bytes(output.header.as_bytes()).ok()?;
                Some((name, claim_header_value(&self.claims, output)))
            }
        }
    }

    /// Whether `rule`, with its current key set `keys`, would accept this
    /// token as it did, at `now` (seconds since the epoch), allowing
    /// `leeway` seconds on `exp`.
    pub fn still_valid(&self, rule: &JwtIssuer, keys: Option<&Arc<JwkSet>>, now: u64, leeway: u64) -> bool {
        let same_keys = match (&self.keys, keys) {
            (Some(verified_with), Some(current)) => Arc::ptr_eq(verified_with, current),
            (None, None) => true,
            _ => false,
        };
        same_keys
            && self.verified_at.elapsed() < MAX_AGE
            && self.expires.is_none_or(|exp| now < exp.saturating_add(leeway))
            && rule.issuer == self.issuer
            && rule.audiences == self.audiences
            && rule.jwks == self.inline_jwks
    }
}

fn claim_header_value(claims: &serde_json::Value, output: &ClaimHeader) -> Option<HeaderValue> {
    let value = super::jwt::claim_header_value(claims, &output.claim)?;
    HeaderValue::from_str(&value).ok()
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Verified tokens by their text.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<String, Arc<CachedToken>, foldhash::quality::RandomState>>,
}

impl TokenCache {
    pub fn get(&self, token: &str) -> Option<Arc<CachedToken>> {
        self.tokens.lock().ok()?.get(token).cloned()
    }

    pub fn insert(&self, token: String, entry: Arc<CachedToken>, leeway: u64) {
        let Ok(mut tokens) = self.tokens.lock() else { return };
        if tokens.len() >= MAX_TOKENS && !tokens.contains_key(&token) {
            let now = now_secs();
            tokens.retain(|_, t| {
                t.verified_at.elapsed() < MAX_AGE && t.expires.is_none_or(|exp| now < exp.saturating_add(leeway))
            });
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(token, entry);
    }

    /// Forgets a token (one that no longer verifies).
    pub fn remove(&self, token: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(token);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tokens.lock().map_or(0, |t| t.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> JwtIssuer {
        JwtIssuer { issuer: "https://dex".into(), audiences: vec!["kf".into()], ..Default::default() }
    }

    fn entry(rule: &JwtIssuer, exp: u64, keys: Option<Arc<JwkSet>>) -> CachedToken {
        let claims = Arc::new(serde_json::json!({"iss": "https://dex", "sub": "u", "exp": exp}));
        CachedToken::new(rule, Arc::from("https://dex/u"), claims, keys)
    }

    #[test]
    fn honours_exp_with_leeway() {
        let rule = rule();
        let token = entry(&rule, 1_000, None);
        assert!(token.still_valid(&rule, None, 999, 0));
        assert!(!token.still_valid(&rule, None, 1_000, 0));
        assert!(token.still_valid(&rule, None, 1_059, 60));
    }

    #[test]
    fn a_new_key_set_or_rule_misses() {
        let rule = rule();
        let keys = Arc::new(JwkSet { keys: Vec::new() });
        let token = entry(&rule, u64::MAX, Some(Arc::clone(&keys)));
        assert!(token.still_valid(&rule, Some(&keys), 0, 0));
        let rotated = Arc::new(JwkSet { keys: Vec::new() });
        assert!(!token.still_valid(&rule, Some(&rotated), 0, 0), "a refetched JWKS re-verifies");
        let other_audience = JwtIssuer { audiences: vec!["other".into()], ..rule.clone() };
        assert!(!token.still_valid(&other_audience, Some(&keys), 0, 0));
    }

    #[test]
    fn claim_headers_are_made_once_per_rule_output() {
        let userid = ClaimHeader { header: "kubeflow-userid".into(), claim: "sub".into() };
        let rule = JwtIssuer { claim_to_headers: vec![userid.clone()], ..rule() };
        let token = entry(&rule, u64::MAX, None);
        let (name, value) = token.claim_header(&userid).unwrap();
        assert_eq!((name.as_str(), value.as_ref().map(HeaderValue::as_bytes)), ("kubeflow-userid", Some(&b"u"[..])));
        // An output the verifying rule did not have (a reloaded rule).
        let (name, value) = token.claim_header(&ClaimHeader { header: "x-iss".into(), claim: "iss".into() }).unwrap();
        assert_eq!((name.as_str(), value.as_ref().map(HeaderValue::as_bytes)), ("x-iss", Some(&b"https://dex"[..])));
        assert_eq!(token.claim_header(&ClaimHeader { header: "x".into(), claim: "none".into() }).unwrap().1, None);
        assert!(token.claim_header(&ClaimHeader { header: "bad name".into(), claim: "sub".into() }).is_none());
    }

    #[test]
    fn stays_bounded() {
        let rule = rule();
        let cache = TokenCache::default();
        for i in 0..MAX_TOKENS + 5 {
            cache.insert(format!("t{i}"), Arc::new(entry(&rule, u64::MAX, None)), 0);
        }
        assert!(cache.len() <= MAX_TOKENS);
        assert!(cache.get(&format!("t{}", MAX_TOKENS + 4)).is_some());
    }
}
