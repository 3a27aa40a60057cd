//! A JWT issuer for tests, shaped like Kubeflow's Dex: ES256 keys published
//! as a JWKS, tokens carrying `email` and `groups`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::json;

/// Dex's issuer URL in a Kubeflow install.
pub const ISSUER: &str = "http://dex.auth.svc.cluster.local:5556/dex";

/// An ES256 signing key and its public JWK.
pub struct IssuerKey {
    pub kid: String,
    encoding: jsonwebtoken::EncodingKey,
    /// The public key as a JWK (publish it in a JWKS).
    pub jwk: serde_json::Value,
}

impl IssuerKey {
    pub fn generate(kid: &str) -> IssuerKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generating a P-256 key");
        let encoding = jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der());
        // Uncompressed point: 0x04 || X || Y.
        let point = pair.public_key_raw();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        });
        IssuerKey { kid: kid.to_string(), encoding, jwk }
    }

    /// A token of `ISSUER` for `email`, valid for an hour, with `extra` claims.
    pub fn token(&self, email: &str, extra: serde_json::Value) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
        let mut claims = json!({
            "iss": ISSUER, "sub": format!("sub-{email}"), "aud": "kubeflow-oidc-authservice",
            "email": email, "groups": ["team-a", "team-b"], "iat": now, "exp": now + 3600,
        });
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("signing a token")
    }
}

/// `{"keys": [jwk...]}`.
pub fn jwks(keys: &[&IssuerKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}
