//! remote-rbac: may istiod's identity in the remote create tokenreviews, and
//! read what istiod's secret controller syncs? Asked with
//! SelfSubjectAccessReviews as the remote secret's identity. When something
//! is denied, the remote's ClusterRoleBindings and ClusterRoles are read as
//! the `--remote` context, so that the fix changes the role that is bound
//! (adding a binding next to one that exists fixes nothing).
//!
//! istiod's rule: security/pkg/k8s/tokenreview/k8sauthn.go creates a
//! TokenReview with the remote secret's client; without `create tokenreviews`
//! it fails with `tokenreviews.authentication.k8s.io is forbidden`.

use super::secret_fix::SecretRef;
use super::{Settings, kube_err};
use crate::engine::{Ctx, Outcome, Staged};
use crate::findings::{Finding, shell_word};
use crate::inspect::jwt;
use crate::inspect::kubeconfig::Credential;
use crate::model::StepId;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Subject};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;

crate::causes! { StepId::RemoteRbac;
    NO_TOKENREVIEW_CREATE = "no-tokenreview-create", "the remote secret's identity may not create tokenreviews, so istiod cannot validate any gateway token";
    SYNC_PERMISSIONS_MISSING = "sync-permissions-missing", "the identity may not read what istiod syncs from the remote (authentication works)";
    NOT_AN_API_SERVER = "not-an-api-server", "an access review came back without status: the secret's server is not a Kubernetes API server";
    ACCESS_REVIEW_FAILED = "access-review-failed", "a SelfSubjectAccessReview as the remote secret's identity failed";
}

/// One access the identity needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    /// Needed to authenticate (fail); else needed to sync (warn).
    pub required: bool,
}

impl Check {
    pub fn label(&self) -> String {
        if self.group.is_empty() {
            format!("{} {}", self.verb, self.resource)
        } else {
            format!("{} {}.{}", self.verb, self.resource, self.group)
        }
    }
}

/// tokenreviews is what authentication needs; the rest is what the secret
/// controller needs to sync the remote at all.
pub const CHECKS: [Check; 5] = [
    Check {
        verb: "create",
        group: "authentication.k8s.io",
        resource: "tokenreviews",
        required: true,
    },
    Check {
        verb: "list",
        group: "",
        resource: "pods",
        required: false,
    },
    Check {
        verb: "watch",
        group: "",
        resource: "services",
        required: false,
    },
    Check {
        verb: "list",
        group: "discovery.k8s.io",
        resource: "endpointslices",
        required: false,
    },
    Check {
        verb: "list",
        group: "",
        resource: "namespaces",
        required: false,
    },
];

/// What gather saw.
#[derive(Debug, Clone)]
pub struct RbacFacts {
    pub secret: SecretRef,
    /// Who istiod is in the remote: remote-identity's SelfSubjectReview, else
    /// the token's `sub`.
    pub who: Option<Who>,
    /// One answer per [`CHECKS`]: `Ok(Some(allowed))`, `Ok(None)` for a
    /// review without status, `Err` when the call failed.
    pub answers: Vec<Result<Option<bool>, String>>,
    /// The remote's RBAC, read only when something was denied.
    pub rbac: Option<RbacView>,
}

/// A subject RBAC can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    ServiceAccount { namespace: String, name: String },
    User(String),
}

impl Who {
    pub fn from_username(u: &str) -> Who {
        match u
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
        {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains(':') => {
                Who::ServiceAccount {
                    namespace: ns.into(),
                    name: name.into(),
                }
            }
            _ => Who::User(u.into()),
        }
    }
    pub fn username(&self) -> String {
        match self {
            Who::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
            Who::User(u) => u.clone(),
        }
    }
    /// Short, for summaries: `ns/name`, or `user "u"`.
    pub fn short(&self) -> String {
        match self {
            Who::ServiceAccount { namespace, name } => format!("{namespace}/{name}"),
            Who::User(u) => format!("user {u:?}"),
        }
    }
    /// The subject flag of `kubectl create clusterrolebinding`.
    pub fn subject_flag(&self) -> String {
        match self {
            Who::ServiceAccount { namespace, name } => {
                format!(
                    "--serviceaccount={}",
                    shell_word(&format!("{namespace}:{name}"))
                )
            }
            Who::User(u) => format!("--user={}", shell_word(u)),
        }
    }
    /// Does `s` name this identity itself (not through a group)?
    pub fn named_by(&self, s: &Subject) -> bool {
        match (self, s.kind.as_str()) {
            (Who::ServiceAccount { namespace, name }, "ServiceAccount") => {
                s.name == *name && s.namespace.as_deref() == Some(namespace.as_str())
            }
            (_, "User") => s.name == self.username(),
            _ => false,
        }
    }
    /// A base for the names of objects a fix creates.
    fn base_name(&self) -> String {
        match self {
            Who::ServiceAccount { name, .. } => name.clone(),
            Who::User(u) => u
                .to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>()
                .trim_matches('-')
                .to_string(),
        }
    }
}

/// The remote's RBAC as the `--remote` context reads it.
#[derive(Debug, Clone)]
pub struct RbacView {
    /// Every ClusterRoleBinding, or why they could not be listed.
    pub bindings: Result<Vec<ClusterRoleBinding>, String>,
    /// ClusterRoles read by name (the bound ones and the candidates):
    /// `None` = not found. A role that could not be read is not in the map.
    pub roles: BTreeMap<String, Option<ClusterRole>>,
}

/// Istio's reader role for namespace `ns` (manifests/charts/istio-control/
/// istio-discovery/templates/reader-clusterrole.yaml, without a revision).
pub fn reader_role(ns: &str) -> String {
    format!("istio-reader-clusterrole-{ns}")
}

/// kube-apiserver's bootstrap role that allows create tokenreviews and
/// subjectaccessreviews, present in every cluster.
const AUTH_DELEGATOR: &str = "system:auth-delegator";

/// Reads the bindings, then the roles bound to `who` and the candidates.
pub async fn gather_rbac(client: &kube::Client, who: Option<&Who>, ns: &str) -> RbacView {
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    let bindings = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| kube_err(&e));
    let mut names = vec![reader_role(ns), AUTH_DELEGATOR.to_string()];
    if let (Ok(bs), Some(w)) = (&bindings, who) {
        for (_, role) in bound_roles(bs, w) {
            if !names.contains(&role) {
                names.push(role);
            }
        }
    }
    let roles_api: Api<ClusterRole> = Api::all(client.clone());
    let got = futures::future::join_all(names.iter().map(|n| {
        let api = roles_api.clone();
        async move { api.get_opt(n).await }
    }))
    .await;
    let roles = names
        .into_iter()
        .zip(got)
        .filter_map(|(n, r)| r.ok().map(|r| (n, r)))
        .collect();
    RbacView { bindings, roles }
}

/// (binding, ClusterRole) for every ClusterRoleBinding that names `who` itself.
pub fn bound_roles(bindings: &[ClusterRoleBinding], who: &Who) -> Vec<(String, String)> {
    bindings
        .iter()
        .filter(|b| b.role_ref.kind == "ClusterRole")
        .filter(|b| b.subjects.iter().flatten().any(|s| who.named_by(s)))
        .map(|b| {
            (
                b.metadata.name.clone().unwrap_or_default(),
                b.role_ref.name.clone(),
            )
        })
        .collect()
}

/// Does `rule` allow `c`, as RBAC matches it (plugin/pkg/auth/authorizer/rbac)?
pub fn rule_allows(rule: &PolicyRule, c: &Check) -> bool {
    let has = |list: &[String], want: &str| list.iter().any(|x| x == want || x == "*");
    has(rule.api_groups.as_deref().unwrap_or_default(), c.group)
        && has(rule.resources.as_deref().unwrap_or_default(), c.resource)
        && has(&rule.verbs, c.verb)
        && rule.resource_names.as_ref().is_none_or(|n| n.is_empty())
}

fn role_allows(role: &ClusterRole, c: &Check) -> bool {
    role.rules.iter().flatten().any(|r| rule_allows(r, c))
}

/// The rules that grant `need`: tokenreviews as Istio's reader role has it;
/// what the secret controller reads with get, list and watch, per API group.
fn rules_for(need: &[Check]) -> Vec<Value> {
    let mut out = Vec::new();
    if need.iter().any(|c| c.required) {
        out.push(json!({"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}));
    }
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in need.iter().filter(|c| !c.required) {
        let rs = by_group.entry(c.group).or_default();
        if !rs.contains(&c.resource) {
            rs.push(c.resource);
        }
    }
    for (g, rs) in by_group {
        out.push(json!({"apiGroups": [g], "resources": rs, "verbs": ["get", "list", "watch"]}));
    }
    out
}

/// `kubectl create clusterrole` flags for `need` (one verb set per role:
/// create for tokenreviews, get/list/watch for the rest).
fn create_role_flags(need: &[Check]) -> String {
    let res = |c: &Check| {
        if c.group.is_empty() {
            c.resource.to_string()
        } else {
            format!("{}.{}", c.resource, c.group)
        }
    };
    if need.iter().any(|c| c.required) {
        "--verb=create --resource=tokenreviews.authentication.k8s.io".into()
    } else {
        let mut rs: Vec<String> = need.iter().map(res).collect();
        rs.dedup();
        format!("--verb=get,list,watch --resource={}", rs.join(","))
    }
}

/// A JSON patch that appends `rules` to `role` (or sets them, when the role
/// has no `rules` at all: "/rules/-" needs the array to exist).
fn patch_role(s: &Settings, role: &str, has_rules: bool, rules: &[Value]) -> String {
    let ops: Vec<Value> = if has_rules {
        rules
            .iter()
            .map(|r| json!({"op": "add", "path": "/rules/-", "value": r}))
            .collect()
    } else {
        vec![json!({"op": "add", "path": "/rules", "value": rules})]
    };
    format!(
        "{} patch clusterrole {} --type=json -p {}",
        s.kubectl_remote(),
        shell_word(role),
        shell_word(&Value::Array(ops).to_string())
    )
}

/// The first of `wanted` that no binding is called, else a numbered one.
fn free_binding_name(view: &RbacView, wanted: &str) -> String {
    let taken = |n: &str| {
        view.bindings
            .as_ref()
            .is_ok_and(|bs| bs.iter().any(|b| b.metadata.name.as_deref() == Some(n)))
    };
    if !taken(wanted) {
        return wanted.to_string();
    }
    (2..)
        .map(|i| format!("{wanted}-{i}"))
        .find(|n| !taken(n))
        .unwrap_or_else(|| wanted.to_string())
}

/// The commands that give `who` the accesses `need`, and their note.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    pub commands: Vec<String>,
    pub note: String,
    /// What the remote's bindings show, for the diagnosis.
    pub seen: String,
}

/// How to give `who` `need`: add the rules to the ClusterRole bound to it;
/// if none is, bind it to a role that has them; if none has, create one.
pub fn grant(view: &RbacView, who: &Who, need: &[Check], s: &Settings) -> Grant {
    let rules = rules_for(need);
    let ns = &s.istio_namespace;
    let bindings = match &view.bindings {
        Ok(b) => b,
        Err(e) => {
            // The operator may not list bindings: name Istio's default role.
            let role = reader_role(ns);
            return Grant {
                commands: vec![patch_role(s, &role, true, &rules)],
                note: format!(
                    "meshtrace could not list ClusterRoleBindings {} ({e}), so it names Istio's default reader role {role}. Check that it is the role bound to {}: {} get clusterrolebindings -o wide",
                    s.remote_reader(),
                    who.username(),
                    s.kubectl_remote()
                ),
                seen: "bindings not readable".into(),
            };
        }
    };
    let bound = bound_roles(bindings, who);
    let seen = if bound.is_empty() {
        "no ClusterRoleBinding names it".to_string()
    } else {
        format!(
            "bound ClusterRoles: {}",
            bound
                .iter()
                .map(|(_, r)| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let role_of = |n: &str| view.roles.get(n).cloned().flatten();
    // RBAC grants it already: what denies it is not RBAC, and no role
    // change would help.
    if let Some((binding, role)) = bound
        .iter()
        .find(|(_, r)| role_of(r).is_some_and(|role| need.iter().all(|c| role_allows(&role, c))))
    {
        return Grant {
            commands: vec![],
            note: format!(
                "ClusterRoleBinding {binding} binds {} to ClusterRole {role}, which allows it: another authorizer of the remote API server denies it before RBAC (a webhook, see its --authorization-mode or --authorization-config), or the role changed since it was read. Trace again.",
                who.short()
            ),
            seen,
        };
    }
    // A role with an aggregationRule has its rules rewritten by the
    // controller: a patch would not last.
    let mut patchable: Vec<(&String, ClusterRole)> = bound
        .iter()
        .filter_map(|(b, r)| role_of(r).map(|role| (b, role)))
        .filter(|(_, role)| role.aggregation_rule.is_none())
        .collect();
    patchable.sort_by_key(|(_, r)| {
        !r.metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .starts_with("istio-reader")
    });
    if let Some((binding, role)) = patchable.first() {
        let name = role.metadata.name.clone().unwrap_or_default();
        return Grant {
            commands: vec![patch_role(s, &name, role.rules.is_some(), &rules)],
            note: format!(
                "ClusterRoleBinding {binding} binds {} to ClusterRole {name}, which lacks the rule: the patch adds it (an Istio upgrade renders the role again from its chart, which has it).",
                who.short()
            ),
            seen,
        };
    }
    // Bound to a role that does not exist: creating it makes the binding work.
    if let Some((binding, missing)) = bound
        .iter()
        .find(|(_, r)| matches!(view.roles.get(r.as_str()), Some(None)))
    {
        return Grant {
            commands: vec![format!(
                "{} create clusterrole {} {}",
                s.kubectl_remote(),
                shell_word(missing),
                create_role_flags(need)
            )],
            note: format!(
                "ClusterRoleBinding {binding} binds {} to ClusterRole {missing}, which does not exist: the command creates it with the missing rules only; Istio's installation of the remote renders the whole reader role.",
                who.short()
            ),
            seen: format!("{seen} ({missing} does not exist)"),
        };
    }
    // Bound to a role the operator may not read: name it, and say so.
    if let Some((binding, role)) = bound
        .iter()
        .find(|(_, r)| !view.roles.contains_key(r.as_str()))
    {
        return Grant {
            commands: vec![patch_role(s, role, true, &rules)],
            note: format!(
                "ClusterRoleBinding {binding} binds {} to ClusterRole {role}, which the --remote context could not read: the patch assumes it lacks the rule.",
                who.short()
            ),
            seen,
        };
    }
    // Nothing usable bound: bind a role that has every rule needed.
    let candidates = [reader_role(ns), AUTH_DELEGATOR.to_string()];
    if let Some(role) = candidates
        .iter()
        .find(|n| role_of(n).is_some_and(|r| need.iter().all(|c| role_allows(&r, c))))
    {
        // Istio names the reader's binding after its role; otherwise the
        // name says whom it binds to what ("system:" is kube's own prefix).
        let name = if *role == reader_role(ns) && free_binding_name(view, role) == *role {
            role.clone()
        } else {
            free_binding_name(
                view,
                &format!("{}-{}", who.base_name(), role.trim_start_matches("system:")),
            )
        };
        return Grant {
            commands: vec![format!(
                "{} create clusterrolebinding {} --clusterrole={} {}",
                s.kubectl_remote(),
                shell_word(&name),
                shell_word(role),
                who.subject_flag()
            )],
            note: format!(
                "No ClusterRole bound to {} allows it; ClusterRole {role} does, and the command binds it.",
                who.short()
            ),
            seen,
        };
    }
    let role = format!(
        "{}-{}",
        who.base_name(),
        if need.iter().any(|c| c.required) {
            "tokenreview"
        } else {
            "reader"
        }
    );
    let binding = free_binding_name(view, &role);
    Grant {
        commands: vec![
            format!(
                "{} create clusterrole {} {}",
                s.kubectl_remote(),
                shell_word(&role),
                create_role_flags(need)
            ),
            format!(
                "{} create clusterrolebinding {} --clusterrole={} {}",
                s.kubectl_remote(),
                shell_word(&binding),
                shell_word(&role),
                who.subject_flag()
            ),
        ],
        note: format!(
            "No ClusterRole bound to {} allows it and no known role does ({} is not there): the commands create one with the missing rules and bind it. If {role} exists already, choose another name.",
            who.short(),
            reader_role(ns)
        ),
        seen,
    }
}

/// The access reviews go out as soon as remote-kubeconfig's client is
/// built (self reviews need no name); who istiod is comes from
/// remote-identity, judged after it.
pub async fn run(ctx: &Ctx) -> Staged {
    let client =
        match super::istiod_view(ctx, StepId::RemoteIdentity, "no authenticated identity").await {
            Ok(c) => c,
            Err(blocked) => return blocked,
        };
    let mut facts = gather(ctx, &client).await;
    Staged::judge(move |ctx| {
        if facts.who.is_none() {
            facts.who = who_of(ctx);
        }
        judge(&facts, &super::Settings::of(ctx))
    })
}

/// Who istiod is in the remote: remote-identity's SelfSubjectReview, else
/// the token's `sub`.
fn who_of(ctx: &Ctx) -> Option<Who> {
    let f = ctx.facts();
    f.remote_user
        .as_deref()
        .map(Who::from_username)
        .or_else(|| {
            f.kubeconfig.as_ref().and_then(|k| match &k.credential {
                Credential::Token(t) => jwt::decode(t.expose())
                    .ok()
                    .and_then(|j| j.subject)
                    .map(|s| Who::from_username(&s)),
                _ => None,
            })
        })
}

async fn gather(ctx: &Ctx, istiod_view: &kube::Client) -> RbacFacts {
    let secret = SecretRef::of(ctx);
    let api: Api<SelfSubjectAccessReview> = Api::all(istiod_view.clone());
    let answers = futures::future::join_all(CHECKS.iter().map(|c| {
        let api = api.clone();
        let ssar = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(c.verb.into()),
                    group: Some(c.group.into()),
                    resource: Some(c.resource.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        async move {
            api.create(&PostParams::default(), &ssar)
                .await
                .map(|r| r.status.map(|s| s.allowed))
                .map_err(|e| kube_err(&e))
        }
    }))
    .await;
    // The roles are read only when they matter, as the operator, for the
    // subject remote-identity named (waited for here: only when denied).
    let denied = answers.iter().any(|a| matches!(a, Ok(Some(false))));
    let who = if denied {
        ctx.wait_steps(&[StepId::RemoteIdentity]).await;
        who_of(ctx)
    } else {
        None
    };
    let rbac = if denied {
        Some(
            gather_rbac(
                &ctx.clusters.remote,
                who.as_ref(),
                &ctx.opts.istio_namespace,
            )
            .await,
        )
    } else {
        None
    };
    RbacFacts {
        secret,
        who,
        answers,
        rbac,
    }
}

/// istiod's needs, judged from the access reviews and the remote's RBAC.
pub fn judge(f: &RbacFacts, s: &Settings) -> Outcome {
    super::secret_fix::tidy(verdict(f, s))
}

fn verdict(f: &RbacFacts, s: &Settings) -> Outcome {
    let mut out = Outcome::new();
    let mut table = Vec::new();
    let mut denied = Vec::new();
    for (c, a) in CHECKS.iter().zip(&f.answers) {
        match a {
            Ok(Some(allowed)) => {
                table.push(json!({"check": c.label(), "allowed": allowed}));
                if !allowed {
                    denied.push(*c);
                }
            }
            Ok(None) => {
                let mut finding = Finding::new(
                    &NOT_AN_API_SERVER,
                    format!("the access review ({}) came back without status", c.label()),
                );
                let servers = if f.secret.server_differs() {
                    let fix = super::secret_fix::rewrite(
                        &f.secret,
                        s,
                        super::secret_fix::Server::RemoteContext,
                        None,
                    );
                    finding = finding.commands(fix.commands);
                    fix.note.join(" ")
                } else {
                    "The --remote context names the same server: check what answers there (a proxy, a stub).".into()
                };
                return out.failing(
                    finding.note(format!("A Kubernetes API server always answers a SelfSubjectAccessReview with status; a proxy or another server is at {}. {servers}", f.secret.server)),
                    format!("SelfSubjectAccessReview ({}) at {}: an answer without status; expected status.allowed", c.label(), f.secret.server),
                );
            }
            Err(e) => {
                return out.failing(
                    Finding::new(
                        &ACCESS_REVIEW_FAILED,
                        format!("SelfSubjectAccessReview ({}) failed", c.label()),
                    )
                    .note("remote-identity passed with the same credential a moment ago: check the remote API server, then trace again"),
                    format!("SelfSubjectAccessReview ({}) as the remote secret's identity failed: {e}", c.label()),
                );
            }
        }
    }
    out.ev("access", table);
    if denied.is_empty() {
        return out.pass();
    }
    let who_text = f
        .who
        .as_ref()
        .map(|w| w.username())
        .unwrap_or_else(|| "the remote secret's identity".into());
    let grant = match (&f.who, &f.rbac) {
        (Some(w), Some(view)) => {
            let need: Vec<Check> = if denied.iter().any(|c| c.required) {
                denied.iter().filter(|c| c.required).copied().collect()
            } else {
                denied.clone()
            };
            grant(view, w, &need, s)
        }
        _ => Grant {
            commands: vec![],
            note: format!(
                "meshtrace does not know who the remote secret's credential is. Find out with the secret's kubeconfig: {} -n {} get secret {} -o jsonpath='{{.data.{}}}' | base64 -d > /tmp/remote.kubeconfig; kubectl --kubeconfig /tmp/remote.kubeconfig auth whoami (then delete the file), and bind that user to a ClusterRole with the missing rules",
                s.kubectl_primary(),
                shell_word(&f.secret.namespace),
                shell_word(&f.secret.secret_name),
                f.secret.cluster_id
            ),
            seen: String::new(),
        },
    };
    if let Some(view) = &f.rbac {
        if let (Ok(bs), Some(w)) = (&view.bindings, &f.who) {
            out.ev(
                "bindings",
                bound_roles(bs, w)
                    .iter()
                    .map(|(b, r)| json!({"binding": b, "cluster_role": r}))
                    .collect::<Vec<_>>(),
            );
        }
    }
    let seen = if grant.seen.is_empty() {
        String::new()
    } else {
        format!("; {}", grant.seen)
    };
    let short = f
        .who
        .as_ref()
        .map(|w| w.short())
        .unwrap_or_else(|| "the remote secret's identity".into());
    if let Some(c) = denied.iter().find(|c| c.required) {
        return out.failing(
            Finding::new(
                &NO_TOKENREVIEW_CREATE,
                format!("{short} may not create tokenreviews in the remote"),
            )
            .commands(grant.commands)
            .note(format!(
                "{} istiod's TokenReview fails until then: `tokenreviews.authentication.k8s.io is forbidden: User {who_text:?} cannot create resource \"tokenreviews\"`.",
                grant.note
            )),
            format!("{who_text} may not {}: denied, expected allowed{seen}", c.label()),
        );
    }
    let labels: Vec<String> = denied.iter().map(|c| c.label()).collect();
    out.warning(
        Finding::new(
            &SYNC_PERMISSIONS_MISSING,
            format!(
                "{short} may not read {}",
                denied.iter().map(|c| c.resource).collect::<Vec<_>>().join(", ")
            ),
        )
        .commands(grant.commands)
        .note(format!(
            "{} Authentication works; istiod cannot sync the remote's services and endpoints (`remote cluster ... failed to sync`).",
            grant.note
        )),
        format!("{who_text} may not {}: denied, expected allowed{seen}", labels.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::steps::secret_fix::tests::lab_secret;
    use crate::model::Status;
    use k8s_openapi::api::rbac::v1::{AggregationRule, RoleRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const NS: &str = "istio-system";
    const SA: &str = "istio-reader-service-account";
    const ROLE: &str = "istio-reader-clusterrole-istio-system";

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        PolicyRule {
            api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
            resources: Some(resources.iter().map(|s| s.to_string()).collect()),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Istio's reader role, as its chart renders it (the parts that matter).
    fn reader(with_tokenreviews: bool) -> ClusterRole {
        let mut rules = vec![
            rule(
                &[""],
                &[
                    "endpoints",
                    "pods",
                    "services",
                    "nodes",
                    "namespaces",
                    "secrets",
                ],
                &["get", "list", "watch"],
            ),
            rule(
                &["discovery.k8s.io"],
                &["endpointslices"],
                &["get", "list", "watch"],
            ),
        ];
        if with_tokenreviews {
            rules.push(rule(
                &["authentication.k8s.io"],
                &["tokenreviews"],
                &["create"],
            ));
        }
        role(ROLE, Some(rules))
    }

    fn role(name: &str, rules: Option<Vec<PolicyRule>>) -> ClusterRole {
        ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            rules,
            ..Default::default()
        }
    }

    fn binding(name: &str, role: &str, subject: Subject) -> ClusterRoleBinding {
        ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: role.into(),
            },
            subjects: Some(vec![subject]),
        }
    }

    fn sa_subject() -> Subject {
        Subject {
            kind: "ServiceAccount".into(),
            name: SA.into(),
            namespace: Some(NS.into()),
            ..Default::default()
        }
    }

    fn reader_who() -> Who {
        Who::ServiceAccount {
            namespace: NS.into(),
            name: SA.into(),
        }
    }

    /// The bootstrap binding every authenticated user has: never a role to patch.
    fn basic_user() -> ClusterRoleBinding {
        binding(
            "system:basic-user",
            "system:basic-user",
            Subject {
                kind: "Group".into(),
                name: "system:authenticated".into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                ..Default::default()
            },
        )
    }

    fn view(
        bindings: Vec<ClusterRoleBinding>,
        roles: Vec<(&str, Option<ClusterRole>)>,
    ) -> RbacView {
        RbacView {
            bindings: Ok(bindings),
            roles: roles.into_iter().map(|(n, r)| (n.to_string(), r)).collect(),
        }
    }

    fn facts(answers: [Result<Option<bool>, &str>; 5], rbac: Option<RbacView>) -> RbacFacts {
        RbacFacts {
            secret: lab_secret(),
            who: Some(reader_who()),
            answers: answers
                .into_iter()
                .map(|a| a.map_err(str::to_string))
                .collect(),
            rbac,
        }
    }

    const ALL: [Result<Option<bool>, &str>; 5] = [Ok(Some(true)); 5];
    const NO_TR: [Result<Option<bool>, &str>; 5] = [
        Ok(Some(false)),
        Ok(Some(true)),
        Ok(Some(true)),
        Ok(Some(true)),
        Ok(Some(true)),
    ];

    struct Row {
        name: &'static str,
        facts: RbacFacts,
        status: Status,
        code: Option<&'static str>,
        /// Every command, joined, must hold each of these.
        commands: Vec<&'static str>,
        /// And none of these.
        not_in_commands: Vec<&'static str>,
    }

    fn rows() -> Vec<Row> {
        let healthy = view(
            vec![basic_user(), binding(ROLE, ROLE, sa_subject())],
            vec![(ROLE, Some(reader(true))), (AUTH_DELEGATOR, None)],
        );
        // Bound, with tokenreviews, services and namespaces but no pods or endpointslices.
        let sync_lacking = view(
            vec![basic_user(), binding(ROLE, ROLE, sa_subject())],
            vec![
                (
                    ROLE,
                    Some(role(
                        ROLE,
                        Some(vec![
                            rule(
                                &[""],
                                &["services", "namespaces"],
                                &["get", "list", "watch"],
                            ),
                            rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                        ]),
                    )),
                ),
                (AUTH_DELEGATOR, None),
            ],
        );
        let lacking = view(
            vec![basic_user(), binding(ROLE, ROLE, sa_subject())],
            vec![
                (ROLE, Some(reader(false))),
                (
                    AUTH_DELEGATOR,
                    Some(role(
                        AUTH_DELEGATOR,
                        Some(vec![rule(
                            &["authentication.k8s.io"],
                            &["tokenreviews"],
                            &["create"],
                        )]),
                    )),
                ),
            ],
        );
        vec![
            Row {
                name: "every access allowed",
                facts: facts(ALL, None),
                status: Status::Pass,
                code: None,
                commands: vec![],
                not_in_commands: vec![],
            },
            Row {
                // The headline fault: the binding exists, the role lacks the rule.
                name: "bound reader role lacks tokenreviews: patch that role",
                facts: facts(NO_TR, Some(lacking.clone())),
                status: Status::Fail,
                code: Some("remote-rbac/no-tokenreview-create"),
                commands: vec![
                    "kubectl --context ctx-remote patch clusterrole istio-reader-clusterrole-istio-system --type=json -p '[{\"op\":\"add\",\"path\":\"/rules/-\",\"value\":{\"apiGroups\":[\"authentication.k8s.io\"],\"resources\":[\"tokenreviews\"],\"verbs\":[\"create\"]}}]'",
                ],
                not_in_commands: vec!["create clusterrolebinding", "system:basic-user"],
            },
            Row {
                name: "bound role without any rules: the patch creates the list",
                facts: facts(NO_TR, Some(view(
                    vec![binding("reader-binding", "bare", sa_subject())],
                    vec![("bare", Some(role("bare", None))), (ROLE, None), (AUTH_DELEGATOR, None)],
                ))),
                status: Status::Fail,
                code: Some("remote-rbac/no-tokenreview-create"),
                commands: vec!["patch clusterrole bare --type=json", "\"path\":\"/rules\",\"value\":[{"],
                not_in_commands: vec!["/rules/-"],
            },
            Row {
                name: "only an aggregated role bound: bind one that has the rule",
                facts: facts(NO_TR, Some(view(
                    vec![binding("agg", "aggregated", sa_subject())],
                    vec![
                        ("aggregated", Some(ClusterRole { aggregation_rule: Some(AggregationRule::default()), ..role("aggregated", Some(vec![])) })),
                        (ROLE, None),
                        (AUTH_DELEGATOR, Some(role(AUTH_DELEGATOR, Some(vec![rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"])])))),
                    ],
                ))),
                status: Status::Fail,
                code: Some("remote-rbac/no-tokenreview-create"),
                commands: vec!["kubectl --context ctx-remote create clusterrolebinding istio-reader-service-account-auth-delegator --clusterrole=system:auth-delegator --serviceaccount=istio-system:istio-reader-service-account"],
                not_in_commands: vec!["patch"],
            },
            Row {
                name: "not bound at all, the reader role has the rule: bind it",
                facts: facts(NO_TR, Some(view(
                    vec![basic_user(), binding(ROLE, ROLE, Subject { name: "someone-else".into(), ..sa_subject() })],
                    vec![(ROLE, Some(reader(true))), (AUTH_DELEGATOR, None)],
                ))),
                status: Status::Fail,
                code: Some("remote-rbac/no-tokenreview-create"),
                // The reader role's usual binding name is taken: one that says what it binds.
                commands: vec!["create clusterrolebinding istio-reader-service-account-istio-reader-clusterrole-istio-system --clusterrole=istio-reader-clusterrole-istio-system --serviceaccount=istio-system:istio-reader-service-account"],
                not_in_commands: vec!["patch"],
            },
            Row {
                name: "bound to a role that is gone: create that role",
                facts: facts(NO_TR, Some(view(
                    vec![binding(ROLE, ROLE, sa_subject())],
                    vec![(ROLE, None), (AUTH_DELEGATOR, None)],
                ))),
                status: Status::Fail,
                code: Some("remote-rbac/no-tokenreview-create"),
                commands: vec!["kubectl --context ctx-remote create clusterrole istio-reader-clusterrole-istio-system --verb=create --resource=tokenreviews.authentication.k8s.io"],
                not_in_commands: vec!["clusterrolebinding"],
            },
            Row {
                name: "bound to a role the operator may not read: patch it, say so",
                facts: facts(NO_TR, Some(view(
                    vec![binding("custom", "custom-reader", sa_subject())],
                    vec![(ROLE, None), (AUTH_DELEGATOR, None)],
                ))),
                status: Status::Fail,
                code: Some("remote-rbac/no-tokenreview-create"),
                commands: vec!["patch clusterrole custom-reader --type=json -p '[{\"op\":\"add\",\"path\":\"/rules/-\""],
                not_in_commands: vec!["create clusterrole"],
            },
            Row {
                name: "nothing bound, no role has it: create both",
                facts: facts(NO_TR, Some(view(vec![basic_user()], vec![(ROLE, None), (AUTH_DELEGATOR, None)]))),
                status: Status::Fail,
                code: Some("remote-rbac/no-tokenreview-create"),
                commands: vec![
                    "create clusterrole istio-reader-service-account-tokenreview --verb=create --resource=tokenreviews.authentication.k8s.io",
                    "create clusterrolebinding istio-reader-service-account-tokenreview --clusterrole=istio-reader-service-account-tokenreview --serviceaccount=istio-system:istio-reader-service-account",
                ],
                not_in_commands: vec!["patch"],
            },
            Row {
                name: "the bound role allows it already: no role change helps",
                facts: facts(NO_TR, Some(healthy.clone())),
                status: Status::Fail,
                code: Some("remote-rbac/no-tokenreview-create"),
                commands: vec![],
                not_in_commands: vec!["kubectl"],
            },
            Row {
                name: "bindings not listable: name Istio's default role",
                facts: facts(NO_TR, Some(RbacView {
                    bindings: Err("403 Forbidden: clusterrolebindings.rbac.authorization.k8s.io is forbidden".into()),
                    roles: BTreeMap::new(),
                })),
                status: Status::Fail,
                code: Some("remote-rbac/no-tokenreview-create"),
                commands: vec!["kubectl --context ctx-remote patch clusterrole istio-reader-clusterrole-istio-system --type=json"],
                not_in_commands: vec![],
            },
            Row {
                name: "a sync permission denied: warn, patch the bound role with it",
                facts: facts(
                    [Ok(Some(true)), Ok(Some(false)), Ok(Some(true)), Ok(Some(false)), Ok(Some(true))],
                    Some(sync_lacking),
                ),
                status: Status::Warn,
                code: Some("remote-rbac/sync-permissions-missing"),
                commands: vec![
                    "patch clusterrole istio-reader-clusterrole-istio-system --type=json",
                    "{\"apiGroups\":[\"\"],\"resources\":[\"pods\"],\"verbs\":[\"get\",\"list\",\"watch\"]}",
                    "{\"apiGroups\":[\"discovery.k8s.io\"],\"resources\":[\"endpointslices\"],\"verbs\":[\"get\",\"list\",\"watch\"]}",
                ],
                not_in_commands: vec!["tokenreviews"],
            },
            Row {
                name: "a review without status",
                facts: RbacFacts {
                    secret: crate::engine::steps::secret_fix::SecretRef { server: "https://10.9.9.9:443".into(), ..lab_secret() },
                    ..facts([Ok(Some(true)), Ok(None), Ok(Some(true)), Ok(Some(true)), Ok(Some(true))], None)
                },
                status: Status::Fail,
                code: Some("remote-rbac/not-an-api-server"),
                commands: vec!["istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system | kubectl --context ctx-primary apply -f -"],
                not_in_commands: vec!["--server"],
            },
            Row {
                name: "a review call fails",
                facts: facts([Ok(Some(true)), Err("503 Service Unavailable"), Ok(Some(true)), Ok(Some(true)), Ok(Some(true))], None),
                status: Status::Fail,
                code: Some("remote-rbac/access-review-failed"),
                commands: vec![],
                not_in_commands: vec![],
            },
        ]
    }

    #[test]
    fn judge_table() {
        let s = Settings::for_tests();
        for r in rows() {
            let out = judge(&r.facts, &s);
            assert_eq!(
                out.status,
                Some(r.status),
                "{}: {:?}",
                r.name,
                out.diagnosis
            );
            let f = out.finding.as_ref();
            assert_eq!(f.map(|f| f.code.as_str()), r.code, "{}", r.name);
            let cmds = f.map(|f| f.commands.join("\n")).unwrap_or_default();
            for want in &r.commands {
                assert!(cmds.contains(want), "{}: {want:?} not in\n{cmds}", r.name);
            }
            for not in &r.not_in_commands {
                assert!(!cmds.contains(not), "{}: {not:?} in\n{cmds}", r.name);
            }
            if let Some(f) = f {
                assert!(f.summary.len() <= 100, "{}: {}", r.name, f.summary);
                assert!(!cmds.contains('<'), "{}: placeholder in {cmds}", r.name);
                let d = out.diagnosis.as_deref().unwrap_or_default();
                assert!(d.len() <= 300, "{}: {} chars: {d}", r.name, d.len());
            }
        }
    }

    #[test]
    fn the_headline_fault_names_the_identity_and_the_role() {
        let s = Settings::for_tests();
        let out = judge(&rows()[1].facts, &s);
        let f = out.finding.unwrap();
        assert_eq!(
            f.summary,
            "istio-system/istio-reader-service-account may not create tokenreviews in the remote"
        );
        assert!(
            f.note
                .unwrap()
                .contains("ClusterRoleBinding istio-reader-clusterrole-istio-system binds")
        );
        assert!(
            out.diagnosis
                .unwrap()
                .contains("bound ClusterRoles: istio-reader-clusterrole-istio-system")
        );
    }

    #[test]
    fn who_is_parsed_as_rbac_names_it() {
        assert_eq!(
            Who::from_username("system:serviceaccount:istio-system:r"),
            Who::ServiceAccount {
                namespace: "istio-system".into(),
                name: "r".into()
            }
        );
        assert_eq!(
            Who::from_username("system:serviceaccount:a:b:c"),
            Who::User("system:serviceaccount:a:b:c".into())
        );
        assert_eq!(
            Who::from_username("kubernetes-admin"),
            Who::User("kubernetes-admin".into())
        );
        // A service account is also named by its username as a User subject.
        let u = Subject {
            kind: "User".into(),
            name: format!("system:serviceaccount:{NS}:{SA}"),
            ..Default::default()
        };
        assert!(reader_who().named_by(&u));
        assert!(!reader_who().named_by(&Subject {
            namespace: Some("default".into()),
            ..sa_subject()
        }));
        assert_eq!(
            Who::User("O=x, CN=y".into()).subject_flag(),
            "--user='O=x, CN=y'"
        );
    }

    #[test]
    fn rules_match_as_rbac_does() {
        let tr = CHECKS[0];
        assert!(rule_allows(&rule(&["*"], &["*"], &["*"]), &tr));
        assert!(rule_allows(
            &rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
            &tr
        ));
        assert!(!rule_allows(
            &rule(&["authentication.k8s.io"], &["tokenreviews"], &["get"]),
            &tr
        ));
        assert!(!rule_allows(
            &rule(&[""], &["tokenreviews"], &["create"]),
            &tr
        ));
        let named = PolicyRule {
            resource_names: Some(vec!["x".into()]),
            ..rule(&["*"], &["*"], &["*"])
        };
        assert!(!rule_allows(&named, &tr));
    }
}
