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
    algorithm: jsonwebtoken::Algorithm,
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
        IssuerKey { kid: kid.to_string(), algorithm: jsonwebtoken::Algorithm::ES256, encoding, jwk }
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
        let mut header = jsonwebtoken::Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("signing a token")
    }
}

/// A fixed RS256 key, test-only (generated once with `openssl genrsa 2048`):
/// Dex signs ID tokens with RS256, and oauth2-proxy accepts nothing else
/// from a provider whose discovery it skips. `ring` cannot generate RSA keys,
/// hence a fixture rather than a fresh key per test.
const RSA_FIXTURE_PKCS1_DER_BASE64: &str = concat!(
    "MIIEpAIBAAKCAQEAoCEbC//pCOy3c4DKlVzpKBvmCYeQECdL6m8I5sEhs2UeWvXjTh7EGwVxALBGFUYXk+gLFtzsdvVWS/gC4d/+",
    "ip7hUGW1whpapn7l1QmC4WQswWvgqsciR1oJ3oxbupvuZIw2BGp8EiVXe2Pqqw9PQFAYxEB20wq5uCMSPaDEfYW+4uECgNGdXFEl",
    "JPTWtNmqayI7gxn1NwEiI/A2o0W3C79a7C6GfPL3bDEDGGRVGnEh4ecDDlKF4/gm1irqxbZ/FDqj3hwRA+2TTdYPrqZoqkx8ewYf",
    "H+vCnhfKkjDSUYYDXmjS1LKzzrK61727caR5Ec4TRbpnIYp3j6kvgRcEIQIDAQABAoIBAAPK+klcz21EW3gN6z6By+KvqSbn93Pv",
    "1QQsNcluy63keEVD9mq0SdrbVHjlXqjvAcH2yMR1iS2sKVYf/W7SOm+YIdLLW0nKDAROPy1o+Jj+zByXbI6UVu3aZnTHXajcPAJV",
    "BovbkILG2v1I5EHBrr6MPHnxjkmjbbtnK+3FGsJfrgQLdUP94SttxRQKtoDn3F87n1ECUrpO3IVLteckwjsByQmx8d1Y0WmcF8M7",
    "nea0V6JqSR5u7zQvxbky3/57h0oF+g59PvBuWE3577iLbcXkMXqOLAPvSefNwkd58+RYnY9H+wjYZxcvLkq3p1cg7mEnX4F79LlP",
    "YsCzQw45aa0CgYEA2fAYBKuR8WJSZwu3T5VHoqM9nr64xYUkqHChWhijw4SJpqLWG7uOhMfkTzgIBqJinHXTRokI2fHioQw/ANlF",
    "hp48oT6U2BEHqQkV7Z1SK51f2jkXiZicPrR8R59NGqsTkaR4CDR5YvwA3CVI+FJZaedOyY4D7huKJ74cZAnoPv8CgYEAvBhqxmcs",
    "PYs9DRFp9uMm9L7S4Eb+xtDgrnJZYhcVmoOGLKYVlwOTKGpU8R2JJAiJDPc4zwmKDC4PteSmEZvSlO1mfzh2cMw05acp8n5P1+fv",
    "Nh21bhjEy3gz4KK0G1F89ZBZLzJR1+Zid9z1KjqRqwy+ZVYsS9kuiDRirBtb3N8CgYEAzaFoSB/KGEN5FJlNYN2tNZtorLuvg07Z",
    "A8UhuOy+t9/6MSw7cPdKxaYFmWl4ySm2eYIC0u7BV0KPXv07BQX8P8RV2J4/uo5299sGwahKu7RFmJV9y+oeoluRV9LK4XrBgA36",
    "42L/lZHJDe5wJz0r+GyzPiGtO6Dofg82on1mkOkCgYADumwrYJIk6iScpLK3/QqhoUKmxWF5aVx6uLOC2ThJZr/7FJOq+ZwqGelz",
    "GgXE3BJzWlca63J8CVGwZkbQZIlJAGeer+zREYse3jBbqRtGCUfZh7833m/QJKLKmg7916ClcWYDJHkw0VU0UQHfA2gtvsPrWEjq",
    "e/SLKJaoGKa6ewKBgQC3QB2lPJ8jqKt6mm9UjZ4HZMg6u/p36jW/jXacijTnVuVleMdV2lRvJSw2VRgyZyohHZBGuI3J2Xstg2Gy",
    "FLZoX+4QUVqwavEIbBWHYxHmM3/wMm0jtOvZszUHTtJrLx+5srQItJe6jOr7N2O/m/TgNsqBCMjOZwE+075u5vmXNw==",
);
const RSA_FIXTURE_MODULUS: &str = "oCEbC__pCOy3c4DKlVzpKBvmCYeQECdL6m8I5sEhs2UeWvXjTh7EGwVxALBGFUYXk-gLFtzsdvVWS_gC4d_-ip7hUGW1whpapn7l1QmC4WQswWvgqsciR1oJ3oxbupvuZIw2BGp8EiVXe2Pqqw9PQFAYxEB20wq5uCMSPaDEfYW-4uECgNGdXFElJPTWtNmqayI7gxn1NwEiI_A2o0W3C79a7C6GfPL3bDEDGGRVGnEh4ecDDlKF4_gm1irqxbZ_FDqj3hwRA-2TTdYPrqZoqkx8ewYfH-vCnhfKkjDSUYYDXmjS1LKzzrK61727caR5Ec4TRbpnIYp3j6kvgRcEIQ";

impl IssuerKey {
    /// The RS256 fixture key, published as `kid`.
    pub fn rsa_fixture(kid: &str) -> IssuerKey {
        let der = base64::engine::general_purpose::STANDARD.decode(RSA_FIXTURE_PKCS1_DER_BASE64).expect("the fixture");
        let encoding = jsonwebtoken::EncodingKey::from_rsa_der(&der);
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": RSA_FIXTURE_MODULUS, "e": "AQAB",
        });
        IssuerKey { kid: kid.to_string(), algorithm: jsonwebtoken::Algorithm::RS256, encoding, jwk }
    }
}

/// `{"keys": [jwk...]}`.
pub fn jwks(keys: &[&IssuerKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}
