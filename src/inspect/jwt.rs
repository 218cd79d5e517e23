//! Decode a JWT without verifying it, to show who it claims to be.
//!
//! Only the header and the claims are kept. The signature is never decoded
//! into the summary, and neither it nor the token appears in any error,
//! `Debug` output or evidence: the token is identified by a SHA-256
//! fingerprint instead. (The API server verifies the token in a TokenReview;
//! meshtrace only reads it.)

use crate::inspect::x509::{expiry_words, rfc3339};
use crate::model::Evidence;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

/// The issuer of legacy, Secret-based service-account tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// The readable parts of a JWT.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSummary {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// SHA-256 of the whole token, lowercase hex: a fingerprint to compare
    /// tokens by, never the token.
    pub sha256: String,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    /// `aud`, whether a string or an array.
    pub audiences: Vec<String>,
    /// `exp`, Unix seconds.
    pub expires_at: Option<i64>,
    /// `iat`, Unix seconds.
    pub issued_at: Option<i64>,
    /// `nbf`, Unix seconds.
    pub not_before: Option<i64>,
    /// (namespace, name) from `sub` = `system:serviceaccount:<ns>:<name>` or
    /// the `kubernetes.io` claims.
    pub service_account: Option<(String, String)>,
    /// The pod a bound token is bound to (`kubernetes.io.pod.name`).
    pub pod: Option<String>,
    /// A legacy Secret-based token: issuer `kubernetes/serviceaccount`, no expiry.
    pub legacy: bool,
}

/// Why a token could not be decoded. Messages never quote the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("a JWT has 3 dot-separated parts (header.claims.signature), this token has {0}")]
    NotThreeParts(usize),
    #[error("the JWT {0} is not valid base64url")]
    Base64(&'static str),
    #[error("the JWT {0} is not a JSON object: {1}")]
    Json(&'static str, String),
}

/// SHA-256 of the whole token, shortened: `sha256:<first 16 hex digits>`.
pub fn fingerprint(token: &str) -> String {
    let full = hex::encode(Sha256::digest(normalize(token).as_bytes()));
    format!("sha256:{}", &full[..16])
}

/// The token without surrounding whitespace or a `Bearer ` prefix.
fn normalize(token: &str) -> &str {
    let token = token.trim();
    token
        .strip_prefix("Bearer ")
        .map(str::trim)
        .unwrap_or(token)
}

fn b64url(part: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Base64(what))
}

fn json_object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, JwtError> {
    // Parse to a Value first: serde_json's syntax errors name only a position,
    // so no claim text is echoed.
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| JwtError::Json(what, e.to_string()))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(JwtError::Json(
            what,
            format!("found a JSON {}", json_type(&other)),
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn num(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    }
}

fn string(v: Option<&Value>) -> Option<String> {
    v?.as_str().map(str::to_string)
}

/// Decode `token` (surrounding whitespace and a `Bearer ` prefix are
/// tolerated) without verifying its signature.
pub fn decode(token: &str) -> Result<JwtSummary, JwtError> {
    let token = normalize(token);
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(JwtError::NotThreeParts(parts.len()));
    }
    let header = json_object(&b64url(parts[0], "header")?, "header")?;
    let claims = json_object(&b64url(parts[1], "claims")?, "claims")?;
    // The signature must be base64url too, but it is decoded only to check that.
    b64url(parts[2], "signature")?;

    let issuer = string(claims.get("iss"));
    let subject = string(claims.get("sub"));
    let audiences = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    };
    let expires_at = num(claims.get("exp"));
    let k8s = claims.get("kubernetes.io").and_then(Value::as_object);

    let from_sub = subject.as_deref().and_then(|s| {
        let rest = s.strip_prefix("system:serviceaccount:")?;
        let (ns, name) = rest.split_once(':')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains(':'))
            .then(|| (ns.to_string(), name.to_string()))
    });
    let from_bound = k8s.and_then(|k| {
        let ns = k.get("namespace")?.as_str()?;
        let name = k.get("serviceaccount")?.get("name")?.as_str()?;
        Some((ns.to_string(), name.to_string()))
    });
    let from_legacy = (|| {
        let ns = claims
            .get("kubernetes.io/serviceaccount/namespace")?
            .as_str()?;
        let name = claims
            .get("kubernetes.io/serviceaccount/service-account.name")?
            .as_str()?;
        Some((ns.to_string(), name.to_string()))
    })();
    let service_account = from_sub.or(from_bound).or(from_legacy);
    let pod = k8s
        .and_then(|k| k.get("pod"))
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let legacy = expires_at.is_none()
        && (issuer.as_deref() == Some(LEGACY_ISSUER)
            || claims.contains_key("kubernetes.io/serviceaccount/namespace"));

    Ok(JwtSummary {
        sha256: hex::encode(Sha256::digest(token.as_bytes())),
        issuer,
        subject,
        audiences,
        expires_at,
        issued_at: num(claims.get("iat")),
        not_before: num(claims.get("nbf")),
        service_account,
        pod,
        legacy,
        header,
        claims,
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl JwtSummary {
    /// Seconds until `exp` (negative once expired); `None` without `exp`.
    pub fn expires_in(&self, now: i64) -> Option<i64> {
        self.expires_at.map(|e| e - now)
    }

    /// `sha256:<first 16 hex>`, the same as [`fingerprint`] of the token.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", &self.sha256[..16])
    }

    /// Is `aud` holding `audience`?
    pub fn has_audience(&self, audience: &str) -> bool {
        self.audiences.iter().any(|a| a == audience)
    }

    /// Evidence relative to the current time; see [`JwtSummary::evidence_at`].
    pub fn evidence(&self) -> Evidence {
        self.evidence_at(unix_now())
    }

    /// Header, claims, fingerprint and a human expiry, judged at `now`.
    /// Never the token or its signature.
    pub fn evidence_at(&self, now: i64) -> Evidence {
        let mut e = Evidence::new();
        e.insert("fingerprint".into(), json!(self.fingerprint()));
        if let Some(i) = &self.issuer {
            e.insert("issuer".into(), json!(i));
        }
        if let Some(s) = &self.subject {
            e.insert("subject".into(), json!(s));
        }
        e.insert("audiences".into(), json!(self.audiences));
        if let Some((ns, name)) = &self.service_account {
            e.insert("service_account".into(), json!(format!("{ns}/{name}")));
        }
        if let Some(p) = &self.pod {
            e.insert("pod".into(), json!(p));
        }
        if let Some(t) = self.issued_at {
            e.insert("issued_at".into(), json!(rfc3339(t)));
        }
        match self.expires_at {
            Some(t) => {
                e.insert("expires_at".into(), json!(rfc3339(t)));
                let words = expiry_words(t - now);
                let text = if t < now {
                    format!("expired {words}")
                } else {
                    format!("expires {words}")
                };
                e.insert("expiry".into(), json!(text));
            }
            None => {
                e.insert("expiry".into(), json!("never (no exp claim)"));
            }
        }
        e.insert("legacy".into(), json!(self.legacy));
        e.insert("header".into(), Value::Object(self.header.clone()));
        e.insert("claims".into(), Value::Object(self.claims.clone()));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    const SIG: &str = "c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1sZWFrLW91dA";

    fn token(claims: Value) -> String {
        format!(
            "{}.{}.{SIG}",
            enc(&json!({"alg": "RS256", "kid": "k1"})),
            enc(&claims)
        )
    }

    fn bound_claims() -> Value {
        json!({
            "aud": ["istio-ca"],
            "exp": 1_700_043_200,
            "iat": 1_700_000_000,
            "nbf": 1_700_000_000,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": "system:serviceaccount:istio-system:istio-eastwestgateway",
            "kubernetes.io": {
                "namespace": "istio-system",
                "pod": {"name": "istio-eastwestgateway-7d9f-abcde", "uid": "u1"},
                "serviceaccount": {"name": "istio-eastwestgateway", "uid": "u2"}
            }
        })
    }

    #[test]
    fn bound_token_with_array_audience() {
        let t = token(bound_claims());
        let s = decode(&t).unwrap();
        assert_eq!(s.audiences, vec!["istio-ca"]);
        assert!(s.has_audience("istio-ca"));
        assert_eq!(
            s.issuer.as_deref(),
            Some("https://kubernetes.default.svc.cluster.local")
        );
        assert_eq!(s.expires_at, Some(1_700_043_200));
        assert_eq!(s.issued_at, Some(1_700_000_000));
        assert_eq!(s.not_before, Some(1_700_000_000));
        assert_eq!(
            s.service_account,
            Some(("istio-system".into(), "istio-eastwestgateway".into()))
        );
        assert_eq!(s.pod.as_deref(), Some("istio-eastwestgateway-7d9f-abcde"));
        assert!(!s.legacy);
        assert_eq!(s.header["kid"], json!("k1"));
        assert_eq!(s.expires_in(1_700_000_000), Some(43200));
        assert_eq!(s.expires_in(1_700_043_300), Some(-100));
        assert_eq!(s.sha256, hex::encode(Sha256::digest(t.as_bytes())));
        assert_eq!(s.fingerprint(), fingerprint(&t));
        assert!(fingerprint(&t).starts_with("sha256:") && fingerprint(&t).len() == 7 + 16);
        // a Bearer prefix and whitespace are tolerated
        assert_eq!(decode(&format!("Bearer {t}\n")).unwrap().sha256, s.sha256);
    }

    #[test]
    fn string_audience() {
        let mut c = bound_claims();
        c["aud"] = json!("https://kubernetes.default.svc");
        let s = decode(&token(c)).unwrap();
        assert_eq!(s.audiences, vec!["https://kubernetes.default.svc"]);
        assert!(!s.has_audience("istio-ca"));
    }

    #[test]
    fn service_account_from_kubernetes_claims_when_sub_is_odd() {
        let mut c = bound_claims();
        c["sub"] = json!("someone-else");
        let s = decode(&token(c)).unwrap();
        assert_eq!(
            s.service_account,
            Some(("istio-system".into(), "istio-eastwestgateway".into()))
        );
    }

    #[test]
    fn legacy_token() {
        let s = decode(&token(json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "istio-system",
            "kubernetes.io/serviceaccount/secret.name": "istio-reader-service-account-istio-remote-secret-token",
            "kubernetes.io/serviceaccount/service-account.name": "istio-reader-service-account",
            "kubernetes.io/serviceaccount/service-account.uid": "u3",
            "sub": "system:serviceaccount:istio-system:istio-reader-service-account"
        })))
        .unwrap();
        assert!(s.legacy);
        assert_eq!(s.expires_at, None);
        assert_eq!(s.expires_in(0), None);
        assert!(s.audiences.is_empty());
        assert_eq!(
            s.service_account,
            Some(("istio-system".into(), "istio-reader-service-account".into()))
        );
        assert_eq!(s.evidence()["expiry"], json!("never (no exp claim)"));
        // the legacy claims alone identify the account
        let s = decode(&token(json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "ns1",
            "kubernetes.io/serviceaccount/service-account.name": "sa1"
        })))
        .unwrap();
        assert_eq!(s.service_account, Some(("ns1".into(), "sa1".into())));
        // a bound token is not legacy
        assert!(!decode(&token(bound_claims())).unwrap().legacy);
    }

    #[test]
    fn garbage_and_wrong_shapes() {
        assert_eq!(decode("garbage"), Err(JwtError::NotThreeParts(1)));
        assert_eq!(decode(""), Err(JwtError::NotThreeParts(1)));
        let claims = enc(&bound_claims());
        assert_eq!(
            decode(&format!("{}.{claims}", enc(&json!({"alg": "RS256"})))),
            Err(JwtError::NotThreeParts(2))
        );
        assert_eq!(decode("a.b.c.d"), Err(JwtError::NotThreeParts(4)));
        assert_eq!(
            decode(&format!("!!!.{claims}.{SIG}")),
            Err(JwtError::Base64("header"))
        );
        let h = enc(&json!({"alg": "RS256"}));
        assert_eq!(
            decode(&format!("{h}.%%%.{SIG}")),
            Err(JwtError::Base64("claims"))
        );
        assert_eq!(
            decode(&format!("{h}.{claims}.***")),
            Err(JwtError::Base64("signature"))
        );
        let not_json = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("not json at all");
        assert!(matches!(
            decode(&format!("{h}.{not_json}.{SIG}")),
            Err(JwtError::Json("claims", _))
        ));
        let arr = enc(&json!(["secret-ish", "values"]));
        let err = decode(&format!("{h}.{arr}.{SIG}")).unwrap_err();
        assert_eq!(err, JwtError::Json("claims", "found a JSON array".into()));
        assert!(!err.to_string().contains("secret-ish"));
    }

    #[test]
    fn signature_never_appears_in_output() {
        let t = token(bound_claims());
        let s = decode(&t).unwrap();
        let debug = format!("{s:?}");
        let ev = serde_json::to_string(&s.evidence_at(1_700_000_000)).unwrap();
        let ev_now = serde_json::to_string(&s.evidence()).unwrap();
        for out in [&debug, &ev, &ev_now] {
            assert!(!out.contains(SIG), "signature leaked: {out}");
            assert!(!out.contains(&t), "token leaked: {out}");
        }
        // errors do not echo it either
        let bad = format!("{t}.extra");
        let e = decode(&bad).unwrap_err();
        assert!(!e.to_string().contains(SIG) && !format!("{e:?}").contains(SIG));
        let bad_sig = format!(
            "{}.{}.{SIG}!",
            enc(&json!({"alg": "RS256"})),
            enc(&bound_claims())
        );
        let e = decode(&bad_sig).unwrap_err();
        assert!(!e.to_string().contains(SIG) && !format!("{e:?}").contains(SIG));
    }

    #[test]
    fn evidence_has_header_claims_fingerprint_and_expiry() {
        let s = decode(&token(bound_claims())).unwrap();
        let ev = s.evidence_at(1_700_000_000);
        assert_eq!(ev["fingerprint"], json!(s.fingerprint()));
        assert_eq!(ev["header"]["alg"], json!("RS256"));
        assert_eq!(ev["claims"]["aud"], json!(["istio-ca"]));
        assert_eq!(
            ev["service_account"],
            json!("istio-system/istio-eastwestgateway")
        );
        assert_eq!(ev["expiry"], json!("expires in 12h"));
        assert_eq!(ev["expires_at"], json!("2023-11-15T10:13:20Z"));
        let later = s.evidence_at(1_700_043_200 + 3 * 86400);
        assert_eq!(later["expiry"], json!("expired 3d ago"));
    }
}
