//! RBAC as kube-apiserver evaluates it (plugin/pkg/auth/authorizer/rbac):
//! ClusterRoleBindings, then RoleBindings of the request's namespace, each
//! rule matched on verb, API group, resource[/subresource], resourceNames or
//! nonResourceURLs, with "*" wildcards. Messages use kube-apiserver's wording.

use super::{ApiError, UserInfo, qualified};
use crate::lab::store::Store;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use serde_json::json;

/// authorizer.Attributes: a resource request, or a non-resource one when `path` is set.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attrs {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// "" = cluster scope.
    pub namespace: String,
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// Rules kube-apiserver's bootstrap policy grants every authenticated user
/// (system:basic-user, system:discovery, system:public-info-viewer). The lab
/// store holds no bootstrap policy, so they are built in.
fn bootstrap_rules() -> Vec<(&'static str, PolicyRule)> {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let urls = |urls: &[&str]| PolicyRule {
        non_resource_urls: Some(urls.iter().map(|s| s.to_string()).collect()),
        verbs: vec!["get".into()],
        ..Default::default()
    };
    vec![
        (
            "system:basic-user",
            rule(
                &["authentication.k8s.io"],
                &["selfsubjectreviews"],
                &["create"],
            ),
        ),
        (
            "system:basic-user",
            rule(
                &["authorization.k8s.io"],
                &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                &["create"],
            ),
        ),
        (
            "system:discovery",
            urls(&[
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/openapi",
                "/openapi/*",
                "/version",
                "/version/",
            ]),
        ),
        (
            "system:public-info-viewer",
            urls(&["/healthz", "/livez", "/readyz", "/version", "/version/"]),
        ),
    ]
}

fn has(list: &Option<Vec<String>>, want: &str) -> bool {
    list.as_ref()
        .is_some_and(|l| l.iter().any(|x| x == "*" || x == want))
}

pub(crate) fn rule_allows(rule: &PolicyRule, a: &Attrs) -> bool {
    let verb_ok = rule.verbs.iter().any(|v| v == "*" || *v == a.verb);
    if !verb_ok {
        return false;
    }
    if let Some(path) = &a.path {
        return rule.non_resource_urls.as_ref().is_some_and(|urls| {
            urls.iter().any(|u| {
                u == "*"
                    || u == path
                    || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
            })
        });
    }
    if !has(&rule.api_groups, &a.group) {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = rule.resources.as_ref().is_some_and(|rs| {
        rs.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
        })
    });
    if !resource_ok {
        return false;
    }
    match &rule.resource_names {
        Some(names) if !names.is_empty() => names.contains(&a.name),
        _ => true,
    }
}

/// Whether `s` names `user`; returns the subject as RBAC describes it.
fn applies_to(s: &Subject, user: &UserInfo, binding_ns: &str) -> Option<String> {
    match s.kind.as_str() {
        "User" if s.name == user.username => Some(format!("User {:?}", s.name)),
        "Group" if user.in_group(&s.name) => Some(format!("Group {:?}", s.name)),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            (!ns.is_empty() && user.username == format!("system:serviceaccount:{ns}:{}", s.name))
                .then(|| format!("ServiceAccount {:?}", format!("{}/{ns}", s.name)))
        }
        _ => None,
    }
}

fn first_subject(
    subjects: &Option<Vec<Subject>>,
    user: &UserInfo,
    binding_ns: &str,
) -> Option<String> {
    subjects
        .iter()
        .flatten()
        .find_map(|s| applies_to(s, user, binding_ns))
}

fn role_rules(store: &Store, kind: &str, name: &str, ns: &str) -> Vec<PolicyRule> {
    match kind {
        "ClusterRole" => store
            .get::<ClusterRole>("", name)
            .and_then(|r| r.rules)
            .unwrap_or_default(),
        "Role" => store
            .get::<Role>(ns, name)
            .and_then(|r| r.rules)
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Every rule that applies to `user` in `namespace` ("" = cluster bindings
/// only), each with the RBAC description of where it came from.
fn applicable_rules(store: &Store, user: &UserInfo, namespace: &str) -> Vec<(String, PolicyRule)> {
    let mut out = Vec::new();
    if user.in_group("system:authenticated") {
        for (name, rule) in bootstrap_rules() {
            let why = format!(
                "ClusterRoleBinding {name:?} of ClusterRole {name:?} to Group \"system:authenticated\""
            );
            out.push((why, rule));
        }
    }
    for b in store.list::<ClusterRoleBinding>() {
        let Some(subject) = first_subject(&b.subjects, user, "") else {
            continue;
        };
        let bname = b.metadata.name.clone().unwrap_or_default();
        for rule in role_rules(store, &b.role_ref.kind, &b.role_ref.name, "") {
            let why = format!(
                "ClusterRoleBinding {bname:?} of {} {:?} to {subject}",
                b.role_ref.kind, b.role_ref.name
            );
            out.push((why, rule));
        }
    }
    if !namespace.is_empty() {
        for b in store.list::<RoleBinding>() {
            if b.metadata.namespace.as_deref() != Some(namespace) {
                continue;
            }
            let Some(subject) = first_subject(&b.subjects, user, namespace) else {
                continue;
            };
            let bname = format!(
                "{}/{namespace}",
                b.metadata.name.clone().unwrap_or_default()
            );
            for rule in role_rules(store, &b.role_ref.kind, &b.role_ref.name, namespace) {
                let why = format!(
                    "RoleBinding {bname:?} of {} {:?} to {subject}",
                    b.role_ref.kind, b.role_ref.name
                );
                out.push((why, rule));
            }
        }
    }
    out
}

pub(crate) fn authorize(store: &Store, user: &UserInfo, a: &Attrs) -> Decision {
    // kube-apiserver's privileged-group authorizer runs before RBAC.
    if user.in_group("system:masters") {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    for (why, rule) in applicable_rules(store, user, &a.namespace) {
        if rule_allows(&rule, a) {
            return Decision {
                allowed: true,
                reason: format!("RBAC: allowed by {why}"),
            };
        }
    }
    // RBAC never denies explicitly; it has no opinion, and no reason.
    Decision {
        allowed: false,
        reason: String::new(),
    }
}

/// The rules `user` has in `namespace`, for SelfSubjectRulesReview.
pub(crate) fn rules_for(store: &Store, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
    if user.in_group("system:masters") {
        return vec![
            PolicyRule {
                api_groups: Some(vec!["*".into()]),
                resources: Some(vec!["*".into()]),
                verbs: vec!["*".into()],
                ..Default::default()
            },
            PolicyRule {
                non_resource_urls: Some(vec!["*".into()]),
                verbs: vec!["*".into()],
                ..Default::default()
            },
        ];
    }
    applicable_rules(store, user, namespace)
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// kube-apiserver's forbiddenMessage + apierrors.NewForbidden.
pub(crate) fn forbidden(user: &UserInfo, a: &Attrs) -> ApiError {
    let who = &user.username;
    if let Some(path) = &a.path {
        return ApiError::new(
            403,
            "Forbidden",
            format!("forbidden: User {who:?} cannot {} path {path:?}", a.verb),
        );
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let why = if a.namespace.is_empty() {
        format!(
            "User {who:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
            a.verb, a.group
        )
    } else {
        format!(
            "User {who:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
            a.verb, a.group, a.namespace
        )
    };
    let gr = qualified(&a.resource, &a.group);
    let message = if a.name.is_empty() {
        format!("{gr} is forbidden: {why}")
    } else {
        format!("{gr} {:?} is forbidden: {why}", a.name)
    };
    let mut details = serde_json::Map::new();
    if !a.name.is_empty() {
        details.insert("name".into(), json!(a.name));
    }
    if !a.group.is_empty() {
        details.insert("group".into(), json!(a.group));
    }
    details.insert("kind".into(), json!(a.resource));
    ApiError {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(serde_json::Value::Object(details)),
    }
}
