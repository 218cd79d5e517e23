//! remote-identity: does the remote secret's credential authenticate to the
//! remote API server? A SelfSubjectReview as that credential; a 401 is
//! explained from the token's claims and the remote's objects (read as the
//! `--remote` context), so that the fix is the one for that cause.
//!
//! istiod's side: pkg/kube/multicluster builds its remote client from the
//! secret (pkg/kube/kubeconfig); every TokenReview it sends for the gateway
//! (security/pkg/server/ca/authenticate/kubeauth) then fails with
//! `failed to validate the JWT from cluster "<id>": Unauthorized`.

use super::remote_rbac::{RbacView, Who, bound_roles, gather_rbac, reader_role};
use super::secret_fix::{self, DEFAULT_READER_SA, SecretRef, Server};
use super::{Settings, api_code, kube_err};
use crate::engine::{Ctx, Outcome, Staged};
use crate::findings::{Finding, shell_word};
use crate::inspect::jwt::{self, JwtSummary};
use crate::inspect::kubeconfig::Credential;
use crate::inspect::x509::{expiry_words, rfc3339};
use crate::model::StepId;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, PostParams};

crate::causes! { StepId::RemoteIdentity;
    TOKEN_EXPIRED = "token-expired", "the remote secret's token has expired";
    TOKEN_FROM_OTHER_CLUSTER = "token-from-other-cluster", "the remote secret's token was issued by another cluster";
    SERVICE_ACCOUNT_DELETED = "service-account-deleted", "the service account of the remote secret's token no longer exists";
    SERVICE_ACCOUNT_RECREATED = "service-account-recreated", "the token's service account was deleted and created again (another uid)";
    TOKEN_SECRET_DELETED = "token-secret-deleted", "the Secret behind the remote secret's legacy token was deleted";
    SERVER_IS_ANOTHER_CLUSTER = "server-is-another-cluster", "the secret's server is not the --remote context's and rejects the remote's token: another cluster";
    TOKEN_REJECTED = "token-rejected", "the remote API server rejects the remote secret's token (401)";
    CREDENTIAL_REJECTED = "credential-rejected", "the remote API server rejects the remote secret's credential, which is not a token meshtrace can read (401)";
    NOT_AN_API_SERVER = "not-an-api-server", "the SelfSubjectReview came back without userInfo: the secret's server is not a Kubernetes API server";
    VERSION_FAILED = "version-failed", "no SelfSubjectReview, and GET /version fails with the remote secret's credential";
    CALL_FAILED = "call-failed", "the SelfSubjectReview as the remote secret's identity failed";
    TOKEN_EXPIRING = "token-expiring", "the remote secret's token expires within --warn-within";
}

/// The remote secret's credential, as istiod holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cred {
    /// A bearer token: its claims, or `None` when it is not a JWT.
    Token(Option<Box<JwtSummary>>),
    ClientCertificate,
    AuthProvider,
    None,
}

/// What the SelfSubjectReview said.
#[derive(Debug, Clone, PartialEq)]
pub enum Review {
    User {
        username: String,
        groups: Vec<String>,
    },
    /// 404 (Kubernetes before 1.28): GET /version proves authentication.
    NotServed {
        version: Result<(), String>,
    },
    /// A 200 without `status.userInfo`.
    NoUserInfo,
    Unauthorized,
    Failed(String),
}

/// What the `--remote` context shows about a rejected token.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The remote's service-account issuer (its OIDC discovery document).
    pub remote_issuer: Option<String>,
    /// The token's service account: found, absent (`Ok(None)`), unreadable.
    pub account: Option<Result<Option<ServiceAccount>, String>>,
    /// A legacy token's Secret: exists or not (unreadable: `None`).
    pub token_secret: Option<bool>,
    /// The remote's RBAC, read when the account is gone (to bind it again).
    pub rbac: Option<RbacView>,
}

#[derive(Debug, Clone)]
pub struct IdentityFacts {
    pub secret: SecretRef,
    pub credential: Cred,
    pub review: Review,
    /// Read only after a 401.
    pub rejection: Option<Rejection>,
}

/// The token's service-account uid: a bound token's `kubernetes.io` claim,
/// or a legacy token's flat one.
fn token_uid(j: &JwtSummary) -> Option<String> {
    j.claims
        .get("kubernetes.io")
        .and_then(|k| k["serviceaccount"]["uid"].as_str())
        .or_else(|| {
            j.claims
                .get("kubernetes.io/serviceaccount/service-account.uid")
                .and_then(|v| v.as_str())
        })
        .map(str::to_string)
}

/// What kind of token the remote secret carries, in words for evidence.
fn token_kind(j: &JwtSummary) -> &'static str {
    if j.expires_at.is_some() {
        "bound (TokenRequest): expires"
    } else if legacy_secret(j).is_some() {
        "Secret-based (kubernetes.io/service-account-token): no expiry, valid while its Secret exists"
    } else {
        "no expiry"
    }
}

/// `kubectl --context <remote> -n NS get secret NAME`: shows whether a
/// legacy token's Secret is still there.
fn get_token_secret(s: &Settings, ns: &str, name: &str) -> String {
    format!(
        "{} -n {} get secret {}",
        s.kubectl_remote(),
        shell_word(ns),
        shell_word(name)
    )
}

/// A legacy token's Secret name.
fn legacy_secret(j: &JwtSummary) -> Option<String> {
    j.claims
        .get("kubernetes.io/serviceaccount/secret.name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Asks as soon as remote-kubeconfig's client is built, with
/// remote-api-tls's handshake still in flight (the client verifies the
/// server as the probe does); judged once remote-api-tls passed.
pub async fn run(ctx: &Ctx) -> Staged {
    let client = match super::istiod_view(
        ctx,
        StepId::RemoteApiTls,
        "no client for the remote API server",
    )
    .await
    {
        Ok(c) => c,
        Err(blocked) => return blocked,
    };
    let Some(kc) = ctx.facts().kubeconfig.clone() else {
        return Outcome::new()
            .blocked(StepId::RemoteKubeconfig, "no usable kubeconfig")
            .into();
    };
    let facts = gather(ctx, &client, &kc.credential).await;
    Staged::judge(move |ctx| {
        let out = judge(&facts, &Settings::of(ctx));
        if let Review::User { username, .. } = &facts.review {
            ctx.facts().remote_user = Some(username.clone());
        }
        out
    })
}

async fn gather(ctx: &Ctx, client: &kube::Client, cred: &Credential) -> IdentityFacts {
    let credential = match cred {
        Credential::Token(t) => Cred::Token(jwt::decode(t.expose()).ok().map(Box::new)),
        Credential::ClientCertData { .. } => Cred::ClientCertificate,
        Credential::OidcAuthProvider => Cred::AuthProvider,
        Credential::None => Cred::None,
    };
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = match api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
    {
        Ok(r) => match r.status.and_then(|s| s.user_info) {
            Some(u) => Review::User {
                username: u.username.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
            },
            None => Review::NoUserInfo,
        },
        Err(e) if api_code(&e) == Some(401) => Review::Unauthorized,
        Err(e) if api_code(&e) == Some(404) => Review::NotServed {
            version: client
                .apiserver_version()
                .await
                .map(|_| ())
                .map_err(|e| kube_err(&e)),
        },
        Err(e) => Review::Failed(kube_err(&e)),
    };
    let rejection = match (&review, &credential) {
        (Review::Unauthorized, Cred::Token(Some(j))) => Some(gather_rejection(ctx, j).await),
        (Review::Unauthorized, _) => Some(Rejection {
            remote_issuer: None,
            account: None,
            token_secret: None,
            rbac: None,
        }),
        _ => None,
    };
    IdentityFacts {
        secret: SecretRef::of(ctx),
        credential,
        review,
        rejection,
    }
}

async fn gather_rejection(ctx: &Ctx, j: &JwtSummary) -> Rejection {
    let remote = &ctx.clusters.remote;
    let account = async {
        let (ns, name) = j.service_account.as_ref()?;
        let sas: Api<ServiceAccount> = Api::namespaced(remote.clone(), ns);
        Some(sas.get_opt(name).await.map_err(|e| kube_err(&e)))
    };
    let token_secret = async {
        let (ns, _) = j.service_account.as_ref()?;
        let name = legacy_secret(j)?;
        let secrets: Api<Secret> = Api::namespaced(remote.clone(), ns);
        // Only whether it exists: the object (and its token) is dropped here.
        secrets
            .get_metadata_opt(&name)
            .await
            .ok()
            .map(|s| s.is_some())
    };
    let (remote_issuer, account, token_secret) =
        futures::join!(remote_issuer(remote), account, token_secret);
    let rbac = match (&account, &j.service_account) {
        (Some(Ok(None)), Some((ns, name))) => {
            let who = Who::ServiceAccount {
                namespace: ns.clone(),
                name: name.clone(),
            };
            Some(gather_rbac(remote, Some(&who), &ctx.opts.istio_namespace).await)
        }
        _ => None,
    };
    Rejection {
        remote_issuer,
        account,
        token_secret,
        rbac,
    }
}

/// The remote's service-account issuer, from its OIDC discovery document.
async fn remote_issuer(client: &kube::Client) -> Option<String> {
    let req = http::Request::get("/.well-known/openid-configuration")
        .body(Vec::new())
        .ok()?;
    let text = client.request_text(req).await.ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["issuer"].as_str().map(str::to_string)
}

const ISTIOD_401: &str = "istiod's TokenReviews with this credential fail too: `failed to validate the JWT from cluster ...: Unauthorized`, and the remote cluster does not sync.";

pub fn judge(f: &IdentityFacts, s: &Settings) -> Outcome {
    super::secret_fix::tidy(verdict(f, s))
}

fn verdict(f: &IdentityFacts, s: &Settings) -> Outcome {
    let mut out = Outcome::new();
    let claims = match &f.credential {
        Cred::Token(Some(j)) => Some(j.as_ref()),
        _ => None,
    };
    if let Some(c) = claims {
        out.ev("token_issuer", &c.issuer)
            .ev("token_subject", &c.subject)
            .ev("token_kind", token_kind(c));
        if let Some(exp) = c.expires_at {
            out.ev("token_expires", rfc3339(exp));
        }
        if let (Some(name), Some((ns, _))) = (legacy_secret(c), &c.service_account) {
            out.ev("token_secret", format!("{ns}/{name}"));
        }
    }
    let rewrite = |server: Server| secret_fix::rewrite(&f.secret, s, server, None);
    match &f.review {
        Review::User { username, groups } => {
            out.ev("username", username).ev("groups", groups);
        }
        Review::NotServed { version: Ok(()) } => {
            out.ev(
                "note",
                "SelfSubjectReview not served; authenticated by GET /version",
            );
        }
        Review::NotServed { version: Err(e) } => {
            return out.failing(
                Finding::new(&VERSION_FAILED, "GET /version fails with the remote secret's credential")
                    .note("The API server serves no SelfSubjectReview (before Kubernetes 1.28), so meshtrace asks GET /version, which every authenticated user may call. Check the remote API server at the secret's server."),
                format!("the remote secret's credential cannot call the remote API server: {e}"),
            );
        }
        Review::NoUserInfo => {
            let fix = rewrite(Server::RemoteContext);
            let mut finding = Finding::new(
                &NOT_AN_API_SERVER,
                format!(
                    "{} answered the SelfSubjectReview without userInfo",
                    f.secret.server
                ),
            );
            let note = if f.secret.server_differs() {
                finding = finding.commands(fix.commands);
                format!(
                    "A Kubernetes API server always answers with status.userInfo: a proxy or another server is at the secret's address. The command writes the secret again with the --remote context's server. {}",
                    fix.note.join(" ")
                )
            } else {
                "A Kubernetes API server always answers with status.userInfo: a proxy or another server answers at the --remote context's server too; check what listens there.".into()
            };
            return out.failing(
                finding.note(note),
                "the remote API server answered the SelfSubjectReview without status.userInfo: the answer is not a Kubernetes review",
            );
        }
        Review::Failed(e) => {
            return out.failing(
                Finding::new(&CALL_FAILED, "SelfSubjectReview as the remote secret's identity failed")
                    .note("remote-api-tls reached this server a moment ago: check the remote API server, then trace again."),
                format!("SelfSubjectReview as the remote secret's identity failed: {e}"),
            );
        }
        Review::Unauthorized => {
            let none = Rejection {
                remote_issuer: None,
                account: None,
                token_secret: None,
                rbac: None,
            };
            return rejected(out, f, claims, f.rejection.as_ref().unwrap_or(&none), s);
        }
    }
    if let Some(c) = claims.filter(|c| c.expires_at.is_none()) {
        if let (Some(name), Some((ns, _))) = (legacy_secret(c), &c.service_account) {
            // What istioctl create-remote-secret writes and Istio's docs
            // use: no warning, but how to rotate it.
            let fix = rewrite(Server::Keep);
            out.ev(
                "note",
                format!(
                    "a Secret-based token, as istioctl create-remote-secret writes it: it does not expire and stops working when Secret {ns}/{name} in the remote is deleted. To rotate it: {} -n {} delete secret {} && {}",
                    s.kubectl_remote(),
                    shell_word(ns),
                    shell_word(&name),
                    fix.commands.join(" && ")
                ),
            );
        }
    }
    if let Some(exp) = claims.and_then(|c| c.expires_at) {
        let left = exp - s.now;
        if left < s.warn_within.as_secs() as i64 {
            let fix = rewrite(Server::Keep);
            let when = if left > 0 {
                format!("expires {}", expiry_words(left))
            } else {
                format!("expired {} and is still accepted", expiry_words(left))
            };
            return out.warning(
                Finding::new(&TOKEN_EXPIRING, format!("the remote secret's token {when}"))
                    .commands(fix.commands)
                    .note(format!(
                        "istioctl writes the token of a Secret of type kubernetes.io/service-account-token, which does not expire. {}",
                        fix.note.join(" ")
                    )),
                format!(
                    "the remote secret's token {when} ({}); expected more than --warn-within {}",
                    rfc3339(exp),
                    humantime::format_duration(s.warn_within)
                ),
            );
        }
    }
    out.pass()
}

/// A 401, explained in this order: expiry; another issuer (before the
/// account, whose uid differs for another cluster's token too); the account
/// gone or recreated; a legacy token's Secret gone; else rejected as such.
fn rejected(
    out: Outcome,
    f: &IdentityFacts,
    claims: Option<&JwtSummary>,
    r: &Rejection,
    s: &Settings,
) -> Outcome {
    let diag = |why: String| format!("401 Unauthorized: {why}");
    let with_fix = |finding: Finding, server: Server, extra: &str| {
        let fix = secret_fix::rewrite(&f.secret, s, server, None);
        let note = [
            extra.to_string(),
            fix.note.join(" "),
            ISTIOD_401.to_string(),
        ]
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
        finding.commands(fix.commands).note(note)
    };
    let Some(c) = claims else {
        let what = match &f.credential {
            Cred::ClientCertificate => "client certificate",
            Cred::AuthProvider => "auth-provider credential",
            Cred::Token(_) => "token, which is not a JWT,",
            Cred::None => "anonymous request",
        };
        return out.failing(
            with_fix(
                Finding::new(
                    &CREDENTIAL_REJECTED,
                    format!("the remote API server rejects the secret's {what}"),
                ),
                Server::Keep,
                "The command writes the secret again with the reader service account's token.",
            ),
            diag(format!(
                "the remote secret's {what} is not accepted; expected an authenticated user"
            )),
        );
    };
    if let Some(exp) = c.expires_at.filter(|e| *e <= s.now) {
        return out.failing(
            with_fix(
                Finding::new(&TOKEN_EXPIRED, format!("the remote secret's token expired {}", expiry_words(exp - s.now))),
                Server::Keep,
                "The command writes the secret again with the token of a Secret of type kubernetes.io/service-account-token, which does not expire.",
            ),
            diag(format!("the token expired at {} ({}); expected exp after now", rfc3339(exp), expiry_words(exp - s.now))),
        );
    }
    // A legacy token's issuer is always accepted beside the configured one.
    if let (Some(iss), Some(remote_iss)) = (&c.issuer, &r.remote_issuer) {
        if iss != remote_iss && iss != jwt::LEGACY_ISSUER {
            return out.failing(
                with_fix(
                    Finding::new(&TOKEN_FROM_OTHER_CLUSTER, format!("the remote secret's token was issued by another cluster ({iss})")),
                    Server::Keep,
                    "The token was likely written from the wrong context; the command takes it from the remote.",
                ),
                diag(format!("token issuer {iss:?}, but the remote's service-account issuer is {remote_iss:?}: signed by another cluster's key")),
            );
        }
    }
    if let Some((ns, name)) = &c.service_account {
        match &r.account {
            Some(Ok(None)) => return account_deleted(out, f, ns, name, r, s),
            Some(Ok(Some(sa))) => {
                if let (Some(tu), Some(now_uid)) = (token_uid(c), sa.metadata.uid.clone()) {
                    if tu != now_uid {
                        let fix = secret_fix::rewrite(&f.secret, s, Server::Keep, None);
                        return out.failing(
                            Finding::new(&SERVICE_ACCOUNT_RECREATED, format!("service account {ns}/{name} was recreated since the token was issued"))
                                .commands(fix.commands)
                                .note(format!("A token names its account's uid; the new account has another, so the old token is dead. {} {ISTIOD_401}", fix.note.join(" "))),
                            diag(format!("the token names {ns}/{name} with uid {tu}; the account now has uid {now_uid}")),
                        );
                    }
                }
            }
            _ => {}
        }
        if let (Some(secret), Some(false)) = (legacy_secret(c), r.token_secret) {
            let check = get_token_secret(s, ns, &secret);
            return out.failing(
                with_fix(
                    Finding::new(&TOKEN_SECRET_DELETED, format!("the token's Secret {ns}/{secret} was deleted")),
                    Server::Keep,
                    &format!("The token is Secret-based (claim kubernetes.io/serviceaccount/secret.name) and lives as long as its Secret: `{check}` shows it is gone. istioctl makes a new token Secret."),
                ),
                diag(format!("the legacy token's Secret {ns}/{secret} no longer exists in the remote")),
            );
        }
    }
    // The account is there with the token's uid, yet the secret's server
    // refuses the token: when that server is not the --remote context's, it
    // is another cluster's API server.
    if f.secret.server_differs() {
        let fix = secret_fix::rewrite(&f.secret, s, Server::RemoteContext, None);
        return out.failing(
            Finding::new(
                &SERVER_IS_ANOTHER_CLUSTER,
                format!("the secret's server {} is not the remote's API server", f.secret.server),
            )
            .commands(fix.commands)
            .note(format!(
                "The token names {} which exists in the --remote cluster with the token's uid, so the remote would accept it; {} refuses it, as another cluster's API server does. The command writes the secret again with the --remote context's server {}. {} {ISTIOD_401}",
                c.service_account.as_ref().map(|(n, a)| format!("{n}/{a}")).unwrap_or_else(|| "its account".into()),
                f.secret.server,
                f.secret.remote_context_server,
                fix.note.join(" ")
            )),
            diag(format!(
                "the secret's server {} differs from the --remote context's {} and refuses a token of the remote's account",
                f.secret.server, f.secret.remote_context_server
            )),
        );
    }
    // The account is there and the token names it: its signature (or a
    // legacy token marked invalid) is what the API server refuses.
    let mut finding = Finding::new(
        &TOKEN_REJECTED,
        "the remote API server rejects the remote secret's token",
    );
    let mut extra = String::from(
        "The account exists and the token names it, so the API server refuses the token itself (a rotated signing key, or a legacy token marked invalid).",
    );
    if let (Some(secret), Some(true), Some((ns, _))) =
        (legacy_secret(c), r.token_secret, &c.service_account)
    {
        finding = finding.command(format!(
            "{} -n {} delete secret {}",
            s.kubectl_remote(),
            shell_word(ns),
            shell_word(&secret)
        ));
        extra.push_str(&format!(
            " The first command deletes the token's Secret {ns}/{secret}, so istioctl makes a new token instead of reusing it."
        ));
    } else if let (Some(secret), None, Some((ns, _))) =
        (legacy_secret(c), r.token_secret, &c.service_account)
    {
        extra.push_str(&format!(
            " The token is Secret-based: `{}` shows whether its Secret is still there.",
            get_token_secret(s, ns, &secret)
        ));
    }
    out.failing(
        with_fix(finding, Server::Keep, &extra),
        diag(format!(
            "the token (issuer {:?}, subject {:?}) is not accepted; its account exists with the token's uid",
            c.issuer.clone().unwrap_or_default(),
            c.subject.clone().unwrap_or_default()
        )),
    )
}

/// The account is gone: create it, bind it unless a binding still names it,
/// and write the secret again with a token of the new account.
fn account_deleted(
    out: Outcome,
    f: &IdentityFacts,
    ns: &str,
    name: &str,
    r: &Rejection,
    s: &Settings,
) -> Outcome {
    let who = Who::ServiceAccount {
        namespace: ns.into(),
        name: name.into(),
    };
    let role = reader_role(&s.istio_namespace);
    let create_sa = format!(
        "{} -n {} create serviceaccount {}",
        s.kubectl_remote(),
        shell_word(ns),
        shell_word(name)
    );
    let bind = |binding: &str| {
        format!(
            "{} create clusterrolebinding {} --clusterrole={} {}",
            s.kubectl_remote(),
            shell_word(binding),
            shell_word(&role),
            who.subject_flag()
        )
    };
    let fix = secret_fix::rewrite(&f.secret, s, Server::Keep, None);
    let mut commands = vec![create_sa.clone()];
    let note;
    match r.rbac.as_ref().map(|v| (&v.bindings, v)) {
        Some((Ok(bindings), view)) => {
            let bound = bound_roles(bindings, &who);
            let role_exists = matches!(view.roles.get(&role), Some(Some(_)));
            if let Some((b, rl)) = bound.first() {
                note = format!(
                    "ClusterRoleBinding {b} still names {ns}/{name} (ClusterRole {rl}), so the new account gets its rights back by name."
                );
            } else if role_exists {
                let taken = bindings
                    .iter()
                    .any(|b| b.metadata.name.as_deref() == Some(role.as_str()));
                let binding = if taken {
                    format!("{name}-{role}")
                } else {
                    role.clone()
                };
                commands.push(bind(&binding));
                note = format!(
                    "No ClusterRoleBinding names {ns}/{name}: the second command binds it to Istio's reader role {role}."
                );
            } else if name == DEFAULT_READER_SA && ns == s.istio_namespace {
                // istioctl creates the account, Istio's reader ClusterRole and
                // its binding itself when the account is missing.
                commands.clear();
                note = format!(
                    "Neither the account nor ClusterRole {role} exists: istioctl create-remote-secret creates both and their binding (its --create-service-account, on by default)."
                );
            } else {
                note = format!(
                    "No ClusterRoleBinding names {ns}/{name} and ClusterRole {role} does not exist: bind the new account to a ClusterRole with Istio's reader rules before the trace passes."
                );
            }
        }
        // Istio's own reader account, its bindings unknown: istioctl
        // recreates the account, and Istio's reader ClusterRole and binding
        // where they are missing, keeping them where they are (checked on
        // the real bed); a `create clusterrolebinding` would fail when the
        // binding is still there.
        Some((Err(_), _)) | None if name == DEFAULT_READER_SA && ns == s.istio_namespace => {
            commands.clear();
            note = format!(
                "istioctl create-remote-secret creates the account again with Istio's reader ClusterRole {role} and its binding where they are missing (its --create-service-account, on by default), and keeps them where they are."
            );
        }
        Some((Err(e), _)) => {
            commands.push(bind(&role));
            note = format!(
                "meshtrace could not list ClusterRoleBindings {} ({e}): the second command binds the account to Istio's reader role {role}; `AlreadyExists` there means the binding is still in place, which is as good.",
                s.remote_reader()
            );
        }
        None => {
            commands.push(bind(&role));
            note = format!(
                "The second command binds the account to Istio's reader role {role}; `AlreadyExists` there means the binding is still in place, which is as good."
            );
        }
    }
    commands.extend(fix.commands);
    out.failing(
        Finding::new(
            &SERVICE_ACCOUNT_DELETED,
            format!("service account {ns}/{name} no longer exists in the remote"),
        )
        .commands(commands)
        .note(format!(
            "{note} Then istioctl writes the secret again with a token of the new account. {} {ISTIOD_401}",
            fix.note.join(" ")
        )),
        format!("401 Unauthorized: the token's service account {ns}/{name} no longer exists in the remote"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::steps::secret_fix::tests::lab_secret;
    use crate::lab::tokens::{SigningKeys, TokenSpec};
    use crate::model::Status;
    use base64::Engine as _;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;
    use std::collections::BTreeMap;

    const NOW: i64 = 1_800_000_000;
    const NS: &str = "istio-system";
    const SA: &str = "istio-reader-service-account";
    const UID: &str = "5b0d2a8e-0000-4000-8000-000000000001";
    const REMOTE_ISS: &str = "https://remote.invalid";

    /// A real token, signed as an API server signs it.
    /// A bound token of a reader account that is not Istio's own.
    fn other_sa_token() -> JwtSummary {
        let keys = SigningKeys::generate(REMOTE_ISS);
        let t = keys.mint(&TokenSpec {
            namespace: NS.into(),
            service_account: "mesh-reader".into(),
            service_account_uid: UID.into(),
            audiences: vec![REMOTE_ISS.into()],
            issued_at: NOW - 7200,
            expires_at: NOW + 86400 * 30,
            pod: None,
        });
        jwt::decode(&t).unwrap()
    }

    fn bound_token(iss: &str, exp: i64, uid: &str) -> JwtSummary {
        let keys = SigningKeys::generate(iss);
        let t = keys.mint(&TokenSpec {
            namespace: NS.into(),
            service_account: SA.into(),
            service_account_uid: uid.into(),
            audiences: vec![iss.into()],
            issued_at: NOW - 7200,
            expires_at: exp,
            pod: None,
        });
        jwt::decode(&t).unwrap()
    }

    /// A legacy Secret-based token, as the token controller writes it.
    fn legacy_token(secret: &str) -> JwtSummary {
        let enc = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
        };
        let t = format!(
            "{}.{}.c2lnbmF0dXJl",
            enc(json!({"alg": "RS256", "kid": "k"})),
            enc(json!({
                "iss": "kubernetes/serviceaccount",
                "kubernetes.io/serviceaccount/namespace": NS,
                "kubernetes.io/serviceaccount/secret.name": secret,
                "kubernetes.io/serviceaccount/service-account.name": SA,
                "kubernetes.io/serviceaccount/service-account.uid": UID,
                "sub": format!("system:serviceaccount:{NS}:{SA}"),
            }))
        );
        jwt::decode(&t).unwrap()
    }

    fn account(uid: &str) -> ServiceAccount {
        ServiceAccount {
            metadata: ObjectMeta {
                name: Some(SA.into()),
                namespace: Some(NS.into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn reader_binding(sa: &str) -> ClusterRoleBinding {
        ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some("istio-reader-clusterrole-istio-system".into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: "istio-reader-clusterrole-istio-system".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: sa.into(),
                namespace: Some(NS.into()),
                ..Default::default()
            }]),
        }
    }

    fn rbac(bindings: Vec<ClusterRoleBinding>, role: bool) -> RbacView {
        let mut roles = BTreeMap::new();
        roles.insert(
            "istio-reader-clusterrole-istio-system".to_string(),
            role.then(|| ClusterRole {
                metadata: ObjectMeta {
                    name: Some("istio-reader-clusterrole-istio-system".into()),
                    ..Default::default()
                },
                ..Default::default()
            }),
        );
        RbacView {
            bindings: Ok(bindings),
            roles,
        }
    }

    fn rejection(account_state: Option<Result<Option<ServiceAccount>, String>>) -> Rejection {
        Rejection {
            remote_issuer: Some(REMOTE_ISS.into()),
            account: account_state,
            token_secret: None,
            rbac: None,
        }
    }

    fn facts(token: Option<JwtSummary>, review: Review, rej: Option<Rejection>) -> IdentityFacts {
        IdentityFacts {
            secret: lab_secret(),
            credential: Cred::Token(token.map(Box::new)),
            review,
            rejection: rej,
        }
    }

    fn user() -> Review {
        Review::User {
            username: format!("system:serviceaccount:{NS}:{SA}"),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ],
        }
    }

    const ISTIOCTL: &str = "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system | kubectl --context ctx-primary apply -f -";

    #[test]
    fn judge_table() {
        let good = || bound_token(REMOTE_ISS, NOW + 365 * 86400, UID);
        type Row = (
            &'static str,
            IdentityFacts,
            Status,
            Option<&'static str>,
            Vec<String>,
        );
        let rows: Vec<Row> = vec![
            ("authenticated, a year left", facts(Some(good()), user(), None), Status::Pass, None, vec![]),
            (
                "no SelfSubjectReview, /version answers",
                facts(Some(good()), Review::NotServed { version: Ok(()) }, None),
                Status::Pass,
                None,
                vec![],
            ),
            (
                "token expired",
                facts(Some(bound_token(REMOTE_ISS, NOW - 3600, UID)), Review::Unauthorized, Some(rejection(Some(Ok(Some(account(UID))))))),
                Status::Fail,
                Some("remote-identity/token-expired"),
                vec![ISTIOCTL.into()],
            ),
            (
                "token from the primary",
                facts(
                    Some(bound_token("https://primary.invalid", NOW + 86400 * 365, "00000000-0000-4000-8000-0000000000ff")),
                    Review::Unauthorized,
                    Some(rejection(Some(Ok(Some(account(UID)))))),
                ),
                Status::Fail,
                Some("remote-identity/token-from-other-cluster"),
                vec![ISTIOCTL.into()],
            ),
            (
                "account deleted, its binding still there",
                facts(
                    Some(good()),
                    Review::Unauthorized,
                    Some(Rejection { rbac: Some(rbac(vec![reader_binding(SA)], true)), ..rejection(Some(Ok(None))) }),
                ),
                Status::Fail,
                Some("remote-identity/service-account-deleted"),
                vec![
                    "kubectl --context ctx-remote -n istio-system create serviceaccount istio-reader-service-account".into(),
                    ISTIOCTL.into(),
                ],
            ),
            (
                "account deleted and unbound",
                facts(
                    Some(good()),
                    Review::Unauthorized,
                    Some(Rejection { rbac: Some(rbac(vec![reader_binding("other")], true)), ..rejection(Some(Ok(None))) }),
                ),
                Status::Fail,
                Some("remote-identity/service-account-deleted"),
                vec![
                    "kubectl --context ctx-remote -n istio-system create serviceaccount istio-reader-service-account".into(),
                    "kubectl --context ctx-remote create clusterrolebinding istio-reader-service-account-istio-reader-clusterrole-istio-system --clusterrole=istio-reader-clusterrole-istio-system --serviceaccount=istio-system:istio-reader-service-account".into(),
                    ISTIOCTL.into(),
                ],
            ),
            (
                "account and reader role gone: istioctl makes them",
                facts(
                    Some(good()),
                    Review::Unauthorized,
                    Some(Rejection { rbac: Some(rbac(vec![], false)), ..rejection(Some(Ok(None))) }),
                ),
                Status::Fail,
                Some("remote-identity/service-account-deleted"),
                vec![ISTIOCTL.into()],
            ),
            (
                "account deleted, bindings unreadable",
                facts(
                    Some(good()),
                    Review::Unauthorized,
                    Some(Rejection {
                        rbac: Some(RbacView { bindings: Err("403 Forbidden".into()), roles: BTreeMap::new() }),
                        ..rejection(Some(Ok(None)))
                    }),
                ),
                // Istio's reader account: istioctl recreates it and its
                // binding, or keeps the binding (a create would fail on it).
                Status::Fail,
                Some("remote-identity/service-account-deleted"),
                vec![ISTIOCTL.into()],
            ),
            (
                "another account deleted, bindings unreadable",
                facts(
                    Some(other_sa_token()),
                    Review::Unauthorized,
                    Some(Rejection {
                        rbac: Some(RbacView { bindings: Err("403 Forbidden".into()), roles: BTreeMap::new() }),
                        ..rejection(Some(Ok(None)))
                    }),
                ),
                Status::Fail,
                Some("remote-identity/service-account-deleted"),
                vec![
                    "kubectl --context ctx-remote -n istio-system create serviceaccount mesh-reader".into(),
                    "kubectl --context ctx-remote create clusterrolebinding istio-reader-clusterrole-istio-system --clusterrole=istio-reader-clusterrole-istio-system --serviceaccount=istio-system:mesh-reader".into(),
                    ISTIOCTL.into(),
                ],
            ),
            (
                "account recreated",
                facts(Some(good()), Review::Unauthorized, Some(rejection(Some(Ok(Some(account("another-uid"))))))),
                Status::Fail,
                Some("remote-identity/service-account-recreated"),
                vec![ISTIOCTL.into()],
            ),
            (
                "legacy token whose Secret is gone (its issuer is no other cluster)",
                facts(
                    Some(legacy_token("istio-reader-service-account-token-abcde")),
                    Review::Unauthorized,
                    Some(Rejection { token_secret: Some(false), ..rejection(Some(Ok(Some(account(UID))))) }),
                ),
                Status::Fail,
                Some("remote-identity/token-secret-deleted"),
                vec![ISTIOCTL.into()],
            ),
            (
                "legacy token refused although all is there: delete its Secret first",
                facts(
                    Some(legacy_token("istio-reader-service-account-token-abcde")),
                    Review::Unauthorized,
                    Some(Rejection { token_secret: Some(true), ..rejection(Some(Ok(Some(account(UID))))) }),
                ),
                Status::Fail,
                Some("remote-identity/token-rejected"),
                vec![
                    "kubectl --context ctx-remote -n istio-system delete secret istio-reader-service-account-token-abcde".into(),
                    ISTIOCTL.into(),
                ],
            ),
            (
                "the secret's server is another cluster: the remote's account, refused there",
                IdentityFacts {
                    secret: SecretRef { server: "https://10.9.9.9:6443".into(), ..lab_secret() },
                    ..facts(Some(good()), Review::Unauthorized, Some(rejection(Some(Ok(Some(account(UID)))))))
                },
                Status::Fail,
                Some("remote-identity/server-is-another-cluster"),
                vec![ISTIOCTL.into()],
            ),
            (
                "a legacy token, accepted: passes, with how to rotate it",
                facts(Some(legacy_token("istio-reader-service-account-istio-remote-secret-token")), user(), None),
                Status::Pass,
                None,
                vec![],
            ),
            (
                "bound token refused, nothing else to see",
                facts(Some(good()), Review::Unauthorized, Some(rejection(Some(Ok(Some(account(UID))))))),
                Status::Fail,
                Some("remote-identity/token-rejected"),
                vec![ISTIOCTL.into()],
            ),
            (
                "a client certificate refused",
                IdentityFacts { credential: Cred::ClientCertificate, ..facts(None, Review::Unauthorized, Some(rejection(None))) },
                Status::Fail,
                Some("remote-identity/credential-rejected"),
                vec![ISTIOCTL.into()],
            ),
            (
                "a token that is no JWT refused",
                facts(None, Review::Unauthorized, Some(rejection(None))),
                Status::Fail,
                Some("remote-identity/credential-rejected"),
                vec![ISTIOCTL.into()],
            ),
            (
                "a 200 without userInfo from another server",
                IdentityFacts {
                    secret: SecretRef { server: "https://10.9.9.9".into(), ..lab_secret() },
                    ..facts(Some(good()), Review::NoUserInfo, None)
                },
                Status::Fail,
                Some("remote-identity/not-an-api-server"),
                vec![ISTIOCTL.into()],
            ),
            (
                "no SelfSubjectReview and /version fails",
                facts(Some(good()), Review::NotServed { version: Err("403 Forbidden".into()) }, None),
                Status::Fail,
                Some("remote-identity/version-failed"),
                vec![],
            ),
            (
                "another API error",
                facts(Some(good()), Review::Failed("the answer is not a Kubernetes object".into()), None),
                Status::Fail,
                Some("remote-identity/call-failed"),
                vec![],
            ),
            (
                "token expires in 2 days",
                facts(Some(bound_token(REMOTE_ISS, NOW + 2 * 86400, UID)), user(), None),
                Status::Warn,
                Some("remote-identity/token-expiring"),
                vec![ISTIOCTL.into()],
            ),
        ];
        let s = Settings::for_tests();
        assert_eq!(s.now, NOW);
        for (name, f, status, code, commands) in rows {
            let out = judge(&f, &s);
            assert_eq!(out.status, Some(status), "{name}: {:?}", out.diagnosis);
            let finding = out.finding.as_ref();
            assert_eq!(finding.map(|f| f.code.as_str()), code, "{name}");
            if let Some(fd) = finding {
                assert_eq!(fd.commands, commands, "{name}");
                assert!(fd.summary.len() <= 100, "{name}: {}", fd.summary);
                let d = out.diagnosis.as_deref().unwrap_or_default();
                assert!(d.len() <= 300, "{name}: {} chars: {d}", d.len());
                assert!(!fd.commands.join(" ").contains('<'), "{name}");
            }
        }
    }

    #[test]
    fn token_kinds_in_evidence() {
        let s = Settings::for_tests();
        let out = judge(&facts(Some(legacy_token("reader-token")), user(), None), &s);
        assert!(
            out.evidence["token_kind"]
                .as_str()
                .unwrap()
                .starts_with("Secret-based")
        );
        assert_eq!(out.evidence["token_secret"], "istio-system/reader-token");
        let note = out.evidence["note"].as_str().unwrap();
        assert!(
            note.contains("kubectl --context ctx-remote -n istio-system delete secret reader-token && istioctl create-remote-secret"),
            "{note}"
        );
        let out = judge(
            &facts(
                Some(bound_token(REMOTE_ISS, NOW + 365 * 86400, UID)),
                user(),
                None,
            ),
            &s,
        );
        assert!(
            out.evidence["token_kind"]
                .as_str()
                .unwrap()
                .starts_with("bound")
        );
        assert!(out.evidence.get("note").is_none());
        let gone = facts(
            Some(legacy_token("reader-token")),
            Review::Unauthorized,
            Some(Rejection {
                token_secret: Some(false),
                ..rejection(Some(Ok(Some(account(UID)))))
            }),
        );
        let note = judge(&gone, &s).finding.unwrap().note.unwrap();
        assert!(
            note.contains("`kubectl --context ctx-remote -n istio-system get secret reader-token` shows it is gone"),
            "{note}"
        );
    }

    #[test]
    fn diagnoses_carry_what_was_seen() {
        let s = Settings::for_tests();
        let expired = facts(
            Some(bound_token(REMOTE_ISS, NOW - 3600, UID)),
            Review::Unauthorized,
            Some(rejection(Some(Ok(Some(account(UID)))))),
        );
        let d = judge(&expired, &s).diagnosis.unwrap();
        assert!(
            d.starts_with("401 Unauthorized: the token expired at 2027-01-15T"),
            "{d}"
        );
        let other = facts(
            Some(bound_token("https://primary.invalid", NOW + 86400, UID)),
            Review::Unauthorized,
            Some(rejection(Some(Ok(Some(account(UID)))))),
        );
        let d = judge(&other, &s).diagnosis.unwrap();
        assert!(
            d.contains("\"https://primary.invalid\"") && d.contains("another cluster"),
            "{d}"
        );
        let deleted = facts(
            Some(bound_token(REMOTE_ISS, NOW + 86400 * 30, UID)),
            Review::Unauthorized,
            Some(rejection(Some(Ok(None)))),
        );
        let out = judge(&deleted, &s);
        assert!(
            out.diagnosis
                .unwrap()
                .contains("istio-system/istio-reader-service-account no longer exists")
        );
        // Istio's own reader account, without the bindings: istioctl
        // recreates what is missing and keeps what is there.
        assert!(
            out.finding
                .unwrap()
                .note
                .unwrap()
                .contains("keeps them where they are")
        );
        let f = facts(None, Review::NoUserInfo, None);
        assert!(
            judge(&f, &s)
                .diagnosis
                .unwrap()
                .contains("without status.userInfo")
        );
        // The same server as the --remote context: nothing to rewrite.
        assert!(judge(&f, &s).finding.unwrap().commands.is_empty());
        // The username is kept for remote-rbac as evidence too.
        let out = judge(
            &facts(
                Some(bound_token(REMOTE_ISS, NOW + 86400 * 365, UID)),
                user(),
                None,
            ),
            &s,
        );
        assert_eq!(
            out.evidence["username"],
            "system:serviceaccount:istio-system:istio-reader-service-account"
        );
    }
}
