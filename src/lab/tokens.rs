//! Service-account tokens as a Kubernetes API server issues and reviews them:
//! ES256 JWTs signed by a per-cluster key, with audiences, expiry and an
//! optional pod binding.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// A cluster's service-account signing key. The private half stays in memory.
pub struct SigningKeys {
    pub issuer: String,
    pub kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KubeClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubeClaimsBinding,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KubeClaimsBinding {
    pub namespace: String,
    pub serviceaccount: NameUid,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pod: Option<NameUid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NameUid {
    pub name: String,
    pub uid: String,
}

/// The claims of a legacy, Secret-based token (what kube-controller-manager's
/// token controller writes into a `kubernetes.io/service-account-token`
/// Secret, and `istioctl create-remote-secret` copies into a remote secret):
/// no audience, no expiry, valid while the Secret holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LegacyClaims {
    pub iss: String,
    pub sub: String,
    #[serde(rename = "kubernetes.io/serviceaccount/namespace")]
    pub namespace: String,
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name")]
    pub secret_name: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name")]
    pub service_account: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid")]
    pub service_account_uid: String,
}

/// The issuer of legacy tokens, as kube-apiserver writes it.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// A token whose signature checked out.
#[derive(Debug, Clone, PartialEq)]
pub enum Verified {
    Bound(KubeClaims),
    Legacy(LegacyClaims),
}

/// What the issuer needs to mint a token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    pub audiences: Vec<String>,
    /// Seconds since the epoch.
    pub issued_at: i64,
    pub expires_at: i64,
    pub pod: Option<NameUid>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("invalid bearer token, {0}")]
    Invalid(String),
    #[error(
        "invalid bearer token, token audiences {} is invalid for the target audiences {}",
        go_list(token),
        go_list(target)
    )]
    Audience {
        token: Vec<String>,
        target: Vec<String>,
    },
    #[error("invalid bearer token, service account token has expired")]
    Expired,
}

impl SigningKeys {
    pub fn generate(issuer: &str) -> SigningKeys {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("P-256 key generation");
        let encoding =
            EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).expect("rcgen PKCS#8 PEM");
        let decoding =
            DecodingKey::from_ec_pem(kp.public_key_pem().as_bytes()).expect("rcgen SPKI PEM");
        let kid = hex::encode(&sha2_digest(kp.public_key_raw())[..8]);
        SigningKeys {
            issuer: issuer.to_string(),
            kid,
            encoding,
            decoding,
        }
    }

    pub fn mint(&self, spec: &TokenSpec) -> String {
        let claims = KubeClaims {
            iss: self.issuer.clone(),
            sub: format!(
                "system:serviceaccount:{}:{}",
                spec.namespace, spec.service_account
            ),
            aud: spec.audiences.clone(),
            exp: spec.expires_at,
            iat: spec.issued_at,
            nbf: spec.issued_at,
            jti: format!("{:x}", rand_u64()),
            kubernetes: KubeClaimsBinding {
                namespace: spec.namespace.clone(),
                serviceaccount: NameUid {
                    name: spec.service_account.clone(),
                    uid: spec.service_account_uid.clone(),
                },
                pod: spec.pod.clone(),
            },
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("ES256 signing")
    }

    /// A legacy token for `secret_name`, as the token controller mints it.
    pub fn mint_legacy(
        &self,
        namespace: &str,
        sa: &str,
        sa_uid: &str,
        secret_name: &str,
    ) -> String {
        let claims = LegacyClaims {
            iss: LEGACY_ISSUER.into(),
            sub: format!("system:serviceaccount:{namespace}:{sa}"),
            namespace: namespace.into(),
            secret_name: secret_name.into(),
            service_account: sa.into(),
            service_account_uid: sa_uid.into(),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("ES256 signing")
    }

    /// [`SigningKeys::verify`], and legacy tokens too: those carry no
    /// audience or expiry, so they are valid for the API server's own
    /// audiences (`implicit`) only, and the caller checks their Secret.
    pub fn verify_any(
        &self,
        token: &str,
        audiences: &[String],
        implicit: &[String],
        now: i64,
    ) -> Result<Verified, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &v)
            .map_err(|e| TokenError::Invalid(format!("{e}")))?;
        if data.claims["iss"] != LEGACY_ISSUER {
            return self.verify(token, audiences, now).map(Verified::Bound);
        }
        let c: LegacyClaims = serde_json::from_value(data.claims)
            .map_err(|e| TokenError::Invalid(format!("legacy token claims: {e}")))?;
        if !audiences.iter().any(|a| implicit.contains(a)) {
            return Err(TokenError::Audience {
                token: implicit.to_vec(),
                target: audiences.to_vec(),
            });
        }
        Ok(Verified::Legacy(c))
    }

    /// Verify a token as the API server's authenticator does: signature by this
    /// cluster's key, issuer, expiry at `now`, and one audience in common with
    /// `audiences`.
    pub fn verify(
        &self,
        token: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<KubeClaims, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<KubeClaims>(token, &self.decoding, &v)
            .map_err(|e| TokenError::Invalid(format!("{e}")))?;
        let c = data.claims;
        if c.iss != self.issuer {
            return Err(TokenError::Invalid(format!(
                "issuer {:?} is not {:?}",
                c.iss, self.issuer
            )));
        }
        // kube-apiserver checks the audience before the expiry.
        if !c.aud.iter().any(|a| audiences.contains(a)) {
            return Err(TokenError::Audience {
                token: c.aud.clone(),
                target: audiences.to_vec(),
            });
        }
        if c.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(c)
    }
}

/// Go's %q of a []string: ["a" "b"].
fn go_list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn sha2_digest(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

fn rand_u64() -> u64 {
    // Uniqueness, not secrecy: jti only has to differ between tokens.
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ N.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(aud: &str, exp_in: i64) -> TokenSpec {
        let now = now_unix();
        TokenSpec {
            namespace: "istio-system".into(),
            service_account: "gw".into(),
            service_account_uid: "u1".into(),
            audiences: vec![aud.into()],
            issued_at: now,
            expires_at: now + exp_in,
            pod: None,
        }
    }

    #[test]
    fn mint_and_verify() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let k = SigningKeys::generate("https://remote.invalid");
        let t = k.mint(&spec("istio-ca", 600));
        let c = k.verify(&t, &["istio-ca".into()], now_unix()).unwrap();
        assert_eq!(c.sub, "system:serviceaccount:istio-system:gw");
        assert!(matches!(
            k.verify(&t, &["other".into()], now_unix()),
            Err(TokenError::Audience { .. })
        ));
        let expired = k.mint(&spec("istio-ca", -10));
        assert_eq!(
            k.verify(&expired, &["istio-ca".into()], now_unix()),
            Err(TokenError::Expired)
        );
        let other = SigningKeys::generate("https://remote.invalid");
        assert!(matches!(
            other.verify(&t, &["istio-ca".into()], now_unix()),
            Err(TokenError::Invalid(_))
        ));
        let msg = TokenError::Audience {
            token: vec!["x".into()],
            target: vec!["istio-ca".into()],
        }
        .to_string();
        assert_eq!(
            msg,
            "invalid bearer token, token audiences [\"x\"] is invalid for the target audiences [\"istio-ca\"]"
        );
    }
}
