//! The auth endpoints of the Istio flow: TokenRequest (serviceaccounts/token),
//! TokenReview, SelfSubjectReview, and the access reviews.

use super::authn::{self, UserInfo};
use super::rbac::{self, Attrs};
use super::{ApiError, ApiResult, ClusterSim, Reply, Req, Target};
use crate::lab::store::ResourceKey;
use crate::lab::tokens::{NameUid, TokenSpec};
use k8s_openapi::Resource;
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, SelfSubjectReview, SelfSubjectReviewStatus, TokenRequest,
    TokenRequestStatus, TokenReview, TokenReviewStatus,
};
use k8s_openapi::api::authorization::v1::{
    LocalSubjectAccessReview, NonResourceRule, ResourceAttributes, ResourceRule,
    SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview, SubjectAccessReviewSpec,
    SubjectAccessReviewStatus, SubjectRulesReviewStatus,
};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Serialize, de::DeserializeOwned};

fn decode<K: Resource + DeserializeOwned>(req: &Req) -> ApiResult<K> {
    let mut v = req.json_body()?;
    // Clients may omit apiVersion/kind; k8s-openapi checks them when present.
    if let Some(m) = v.as_object_mut() {
        m.entry("apiVersion")
            .or_insert_with(|| K::API_VERSION.into());
        m.entry("kind").or_insert_with(|| K::KIND.into());
    }
    serde_json::from_value(v).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {e}",
            K::KIND,
            K::VERSION,
            K::KIND
        ))
    })
}

fn created<T: Serialize>(obj: &T) -> ApiResult<Reply> {
    serde_json::to_value(obj)
        .map(Reply::created)
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))
}

pub(crate) fn handle(
    cl: &mut ClusterSim,
    user: &UserInfo,
    t: &Target,
    req: &Req,
    now: i64,
) -> ApiResult<Reply> {
    match t.def.plural {
        "tokenreviews" => token_review(cl, req, now),
        "selfsubjectreviews" => {
            let mut r: SelfSubjectReview = decode(req)?;
            r.status = Some(SelfSubjectReviewStatus {
                user_info: Some(user.to_k8s()),
            });
            created(&r)
        }
        "selfsubjectaccessreviews" => {
            let mut r: SelfSubjectAccessReview = decode(req)?;
            let attrs = attrs_of(
                "SelfSubjectAccessReview",
                r.spec.resource_attributes.as_ref(),
                r.spec
                    .non_resource_attributes
                    .as_ref()
                    .map(|n| (n.path.clone(), n.verb.clone())),
            )?;
            r.status = Some(access_status(rbac::authorize(&cl.store, user, &attrs)));
            created(&r)
        }
        "selfsubjectrulesreviews" => {
            let mut r: SelfSubjectRulesReview = decode(req)?;
            let ns = r.spec.namespace.clone().unwrap_or_default();
            if ns.is_empty() {
                return Err(ApiError::bad_request("no namespace on request".into()));
            }
            r.status = Some(rules_status(&rbac::rules_for(&cl.store, user, &ns)));
            created(&r)
        }
        "subjectaccessreviews" => {
            let mut r: SubjectAccessReview = decode(req)?;
            r.status = Some(subject_access(cl, &r.spec, None, "SubjectAccessReview")?);
            created(&r)
        }
        "localsubjectaccessreviews" => {
            let mut r: LocalSubjectAccessReview = decode(req)?;
            let ns = t.namespace.clone().unwrap_or_default();
            r.status = Some(subject_access(
                cl,
                &r.spec,
                Some(&ns),
                "LocalSubjectAccessReview",
            )?);
            created(&r)
        }
        _ => Err(ApiError::no_route()),
    }
}

fn attrs_of(
    kind: &str,
    ra: Option<&ResourceAttributes>,
    nra: Option<(Option<String>, Option<String>)>,
) -> ApiResult<Attrs> {
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    match (ra, nra) {
        (Some(ra), None) => Ok(Attrs {
            verb: s(&ra.verb),
            group: s(&ra.group),
            resource: s(&ra.resource),
            subresource: s(&ra.subresource),
            name: s(&ra.name),
            namespace: s(&ra.namespace),
            path: None,
        }),
        (None, Some((path, verb))) => Ok(Attrs {
            verb: s(&verb),
            path: Some(s(&path)),
            ..Default::default()
        }),
        _ => Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "{kind}.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified"
            ),
        )),
    }
}

fn access_status(d: rbac::Decision) -> SubjectAccessReviewStatus {
    SubjectAccessReviewStatus {
        allowed: d.allowed,
        reason: (!d.reason.is_empty()).then_some(d.reason),
        ..Default::default()
    }
}

/// SubjectAccessReview: evaluate for the user in the spec (who needs no
/// implicit groups: the caller states them, as with kube-apiserver).
fn subject_access(
    cl: &ClusterSim,
    spec: &SubjectAccessReviewSpec,
    namespace: Option<&str>,
    kind: &str,
) -> ApiResult<SubjectAccessReviewStatus> {
    let user = UserInfo {
        username: spec.user.clone().unwrap_or_default(),
        uid: spec.uid.clone().unwrap_or_default(),
        groups: spec.groups.clone().unwrap_or_default(),
        extra: spec.extra.clone().unwrap_or_default(),
    };
    if user.username.is_empty() && user.groups.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "{kind}.authorization.k8s.io \"\" is invalid: spec.user: Invalid value: \"\": at least one of user or group must be specified"
            ),
        ));
    }
    let mut attrs = attrs_of(
        kind,
        spec.resource_attributes.as_ref(),
        spec.non_resource_attributes
            .as_ref()
            .map(|n| (n.path.clone(), n.verb.clone())),
    )?;
    if let Some(ns) = namespace {
        attrs.namespace = ns.to_string();
    }
    Ok(access_status(rbac::authorize(&cl.store, &user, &attrs)))
}

fn rules_status(rules: &[k8s_openapi::api::rbac::v1::PolicyRule]) -> SubjectRulesReviewStatus {
    let mut status = SubjectRulesReviewStatus::default();
    for r in rules {
        if let Some(urls) = &r.non_resource_urls {
            status.non_resource_rules.push(NonResourceRule {
                non_resource_urls: Some(urls.clone()),
                verbs: r.verbs.clone(),
            });
        }
        if r.resources.is_some() || r.api_groups.is_some() {
            status.resource_rules.push(ResourceRule {
                api_groups: r.api_groups.clone(),
                resources: r.resources.clone(),
                resource_names: r.resource_names.clone(),
                verbs: r.verbs.clone(),
            });
        }
    }
    status
}

fn token_review(cl: &ClusterSim, req: &Req, now: i64) -> ApiResult<Reply> {
    let mut r: TokenReview = decode(req)?;
    let token = r.spec.token.clone();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication".into(),
        ));
    }
    let audiences = r.spec.audiences.clone().unwrap_or_default();
    r.status = Some(
        match authn::authenticate_token(cl, &token, &audiences, now) {
            Ok((user, auds)) => TokenReviewStatus {
                authenticated: Some(true),
                user: Some(user.to_k8s()),
                audiences: Some(auds),
                error: None,
            },
            // kube-apiserver omits `authenticated: false` (omitempty) and sends
            // an empty user.
            Err(error) => TokenReviewStatus {
                authenticated: None,
                user: Some(Default::default()),
                audiences: None,
                error: Some(error),
            },
        },
    );
    created(&r)
}

/// POST namespaces/{ns}/serviceaccounts/{name}/token, as
/// pkg/registry/core/serviceaccount/storage/token.go does it.
pub(crate) fn token_request(
    cl: &mut ClusterSim,
    t: &Target,
    req: &Req,
    now: i64,
) -> ApiResult<Reply> {
    if req.method != axum::http::Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let mut r: TokenRequest = decode(req)?;
    let mut spec = r.spec.take().unwrap_or_default();
    let invalid = |value: i64, why: &str| {
        ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            &name,
            "spec.expirationSeconds",
            &value.to_string(),
            why,
        )
    };
    let exp = spec.expiration_seconds.unwrap_or(3600);
    if exp < 600 {
        return Err(invalid(
            exp,
            "may not specify a duration less than 10 minutes",
        ));
    }
    if exp > 1 << 32 {
        return Err(invalid(
            exp,
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let sa: ServiceAccount = cl
        .store
        .get(&ns, &name)
        .ok_or_else(|| ApiError::not_found("serviceaccounts", "", &name))?;
    let mut pod = None;
    if let Some(bound) = &spec.bound_object_ref {
        let kind = bound.kind.clone().unwrap_or_default();
        let api_version = bound.api_version.clone().unwrap_or_default();
        if kind != "Pod" || !(api_version.is_empty() || api_version == "v1") {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {api_version}, Kind={kind} (the lab binds tokens to Pods only)"
            )));
        }
        let pod_name = bound.name.clone().unwrap_or_default();
        let obj = cl
            .store
            .get_raw(&ResourceKey::of::<Pod>(), &ns, &pod_name)
            .ok_or_else(|| ApiError::not_found("pods", "", &pod_name))?;
        let pod_sa = obj["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        if pod_sa != name {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount {name:?} to pod running with serviceaccount {pod_sa:?}"
            )));
        }
        let uid = obj["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(want) = bound.uid.as_deref().filter(|u| !u.is_empty()) {
            if want != uid {
                return Err(ApiError::conflict(
                    "Pod",
                    "",
                    &pod_name,
                    &format!(
                        "the UID in the bound object reference ({want}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
                    ),
                ));
            }
        }
        pod = Some(NameUid {
            name: pod_name,
            uid,
        });
    }
    let audiences = match spec.audiences.clone() {
        Some(a) if !a.is_empty() => a,
        _ => cl.api_audiences.clone(),
    };
    let token = cl.keys.mint(&TokenSpec {
        namespace: ns.clone(),
        service_account: name.clone(),
        service_account_uid: sa.metadata.uid.clone().unwrap_or_default(),
        audiences: audiences.clone(),
        issued_at: now,
        expires_at: now + exp,
        pod: pod.clone(),
    });
    let expires = k8s_openapi::jiff::Timestamp::from_second(now + exp)
        .map_err(|e| ApiError::new(500, "InternalError", format!("expiry out of range: {e}")))?;
    r.metadata.name = Some(name);
    r.metadata.namespace = Some(ns);
    spec.audiences = Some(audiences);
    spec.expiration_seconds = Some(exp);
    if let Some(p) = pod {
        spec.bound_object_ref = Some(BoundObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(p.name),
            uid: Some(p.uid),
        });
    }
    r.spec = Some(spec);
    r.status = Some(TokenRequestStatus {
        token: Some(token),
        expiration_timestamp: Some(Time(expires)),
    });
    created(&r)
}
