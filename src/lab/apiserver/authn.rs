//! Authentication: the static admin token, and service-account JWTs checked
//! the way kube-apiserver's service-account authenticator does (signature,
//! issuer, expiry, audience, then the ServiceAccount and bound Pod still exist
//! with the UIDs in the claims).

use super::{ApiError, ClusterSim};
use crate::lab::store::ResourceKey;
use crate::lab::tokens::{LegacyClaims, TokenError, Verified};
use axum::http::{HeaderMap, header};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use std::collections::BTreeMap;

/// The authenticated user, as authentication.k8s.io/v1 UserInfo.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn to_k8s(&self) -> k8s_openapi::api::authentication::v1::UserInfo {
        k8s_openapi::api::authentication::v1::UserInfo {
            username: Some(self.username.clone()),
            uid: (!self.uid.is_empty()).then(|| self.uid.clone()),
            groups: Some(self.groups.clone()),
            extra: (!self.extra.is_empty()).then(|| self.extra.clone()),
        }
    }
    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }
}

pub(crate) const ADMIN_USER: &str = "lab-admin";

fn admin() -> UserInfo {
    UserInfo {
        username: ADMIN_USER.into(),
        uid: String::new(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
        extra: BTreeMap::new(),
    }
}

/// Authenticate an API request. A missing or bad credential is 401 (the lab
/// behaves like kube-apiserver with `--anonymous-auth=false`).
pub(crate) fn authenticate_request(
    cl: &ClusterSim,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::unauthorized)?;
    authenticate_token(cl, token, &[], crate::lab::tokens::now_unix())
        .map(|(u, _)| u)
        .map_err(|_| ApiError::unauthorized())
}

/// Authenticate `token` for `audiences` (empty = the API server's own).
/// Ok: the user and the audiences the token is valid for. Err: the text
/// kube-apiserver puts in TokenReview `status.error`.
pub(crate) fn authenticate_token(
    cl: &ClusterSim,
    token: &str,
    audiences: &[String],
    now: i64,
) -> Result<(UserInfo, Vec<String>), String> {
    let wanted: Vec<String> = if audiences.is_empty() {
        cl.api_audiences.clone()
    } else {
        audiences.to_vec()
    };
    // Static tokens are audience-agnostic, as kube-apiserver's token file is.
    if !cl.admin_token.is_empty() && token == cl.admin_token {
        return Ok((admin(), wanted));
    }
    let claims = match cl
        .keys
        .verify_any(token, &wanted, &cl.api_audiences, now)
        .map_err(|e| aggregate(&e))?
    {
        Verified::Bound(c) => c,
        Verified::Legacy(c) => return legacy_user(cl, token, &c, &wanted),
    };
    let k = &claims.kubernetes;
    let ns = &k.namespace;
    let invalid = |msg: String| aggregate(&TokenError::Invalid(msg));
    // Same checks and wording as pkg/serviceaccount/claims.go (validator.Validate).
    let sa: ServiceAccount = cl.store.get(ns, &k.serviceaccount.name).ok_or_else(|| {
        invalid(format!(
            "serviceaccounts {:?} not found",
            k.serviceaccount.name
        ))
    })?;
    let sa_uid = sa.metadata.uid.unwrap_or_default();
    if sa_uid != k.serviceaccount.uid {
        return Err(invalid(format!(
            "service account UID ({sa_uid}) does not match claim ({})",
            k.serviceaccount.uid
        )));
    }
    let mut extra = BTreeMap::new();
    extra.insert(
        "authentication.kubernetes.io/credential-id".to_string(),
        vec![format!("JTI={}", claims.jti)],
    );
    if let Some(podref) = &k.pod {
        let pod = cl
            .store
            .get_raw(&ResourceKey::of::<Pod>(), ns, &podref.name)
            .ok_or_else(|| invalid("service account token has been invalidated".into()))?;
        let pod_uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        if pod_uid != podref.uid {
            return Err(invalid(format!(
                "pod UID ({pod_uid}) does not match service account pod ref claim ({})",
                podref.uid
            )));
        }
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec![podref.name.clone()],
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            vec![podref.uid.clone()],
        );
    }
    let user = UserInfo {
        username: format!("system:serviceaccount:{ns}:{}", k.serviceaccount.name),
        uid: k.serviceaccount.uid.clone(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        extra,
    };
    let auds = claims
        .aud
        .iter()
        .filter(|a| wanted.contains(a))
        .cloned()
        .collect();
    Ok((user, auds))
}

/// A legacy token is valid while its Secret holds it and its service
/// account (with the uid in the claims) exists: pkg/serviceaccount/legacy.go,
/// with its wording.
fn legacy_user(
    cl: &ClusterSim,
    token: &str,
    c: &LegacyClaims,
    wanted: &[String],
) -> Result<(UserInfo, Vec<String>), String> {
    let invalid = |msg: String| aggregate(&TokenError::Invalid(msg));
    let secret: Secret = cl
        .store
        .get(&c.namespace, &c.secret_name)
        .ok_or_else(|| invalid("Token has been invalidated".into()))?;
    let held = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|t| t.0.as_slice());
    if held != Some(token.as_bytes()) {
        return Err(invalid("Token does not match server's copy".into()));
    }
    let sa: ServiceAccount = cl
        .store
        .get(&c.namespace, &c.service_account)
        .ok_or_else(|| {
            invalid(format!(
                "ServiceAccount {}/{} has been deleted",
                c.namespace, c.service_account
            ))
        })?;
    let sa_uid = sa.metadata.uid.unwrap_or_default();
    if sa_uid != c.service_account_uid {
        return Err(invalid(format!(
            "ServiceAccount UID ({sa_uid}) does not match claim ({})",
            c.service_account_uid
        )));
    }
    let ns = &c.namespace;
    // Legacy tokens carry no jti, so kube-apiserver adds no credential id.
    let extra = BTreeMap::new();
    let user = UserInfo {
        username: format!("system:serviceaccount:{ns}:{}", c.service_account),
        uid: sa_uid,
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        extra,
    };
    let auds = wanted
        .iter()
        .filter(|a| cl.api_audiences.contains(a))
        .cloned()
        .collect();
    Ok((user, auds))
}

/// kube-apiserver reports authenticator failures as an aggregate list:
/// `[invalid bearer token, <why>]`.
fn aggregate(e: &TokenError) -> String {
    format!("[{e}]")
}

/// Apply `Impersonate-User`/`-Group`/`-Uid` headers (kubectl `--as`,
/// `--as-group`) as kube-apiserver's impersonation filter does: the real
/// user needs the `impersonate` verb on users, groups, uids or the named
/// serviceaccount; the impersonated user gets system:authenticated.
pub(crate) fn impersonate(
    cl: &ClusterSim,
    real: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    use super::rbac::{Attrs, authorize, forbidden};
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let user = values("impersonate-user").into_iter().next();
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid").into_iter().next();
    let Some(username) = user else {
        if groups.is_empty() && uid.is_none() {
            return Ok(real);
        }
        return Err(ApiError::bad_request(
            "requested impersonation of groups or uid without impersonating a user".into(),
        ));
    };
    let check = |resource: &str, name: &str, namespace: &str| -> Result<(), ApiError> {
        let a = Attrs {
            verb: "impersonate".into(),
            group: if resource == "uids" {
                "authentication.k8s.io".into()
            } else {
                String::new()
            },
            resource: resource.into(),
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        };
        if authorize(&cl.store, &real, &a).allowed {
            Ok(())
        } else {
            Err(forbidden(&real, &a))
        }
    };
    let mut out = UserInfo {
        username: username.clone(),
        ..Default::default()
    };
    match username
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, name)) => {
            check("serviceaccounts", name, ns)?;
            out.groups = vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
            ];
        }
        None => check("users", &username, "")?,
    }
    for g in groups {
        check("groups", &g, "")?;
        if !out.groups.contains(&g) {
            out.groups.push(g);
        }
    }
    if let Some(u) = uid {
        check("uids", &u, "")?;
        out.uid = u;
    }
    if username != "system:anonymous" && !out.in_group("system:authenticated") {
        out.groups.push("system:authenticated".into());
    }
    Ok(out)
}
