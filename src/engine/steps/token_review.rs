//! token-review: the TokenReview istiod runs for a gateway of this cluster,
//! run with the remote secret's credentials and the gateway's token, and
//! judged by istiod's rules in istiod's order:
//! security/pkg/k8s/tokenreview/k8sauthn.go (`ValidateK8sJwt`,
//! `getTokenReviewResult`) and
//! security/pkg/server/ca/authenticate/kubeauth/kube_jwt.go.

use super::secret_fix::{self, SecretRef, Server};
use super::{Settings, api_code, kube_err, quote_list};
use crate::engine::{Ctx, Outcome, Staged};
use crate::findings::Finding;
use crate::inspect::jwt;
use crate::model::StepId;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use serde_json::json;

crate::causes! { StepId::TokenReview;
    FORBIDDEN = "forbidden", "the TokenReview is forbidden (403) although remote-rbac found it allowed";
    CALL_FAILED = "call-failed", "the TokenReview call itself failed";
    NOT_AN_API_SERVER = "not-an-api-server", "the TokenReview came back without status: the secret's server is not a Kubernetes API server";
    AUDIENCE_REJECTED = "audience-rejected", "the API server refuses the gateway token for istiod's audience";
    TOKEN_EXPIRED = "token-expired", "the API server says the gateway token has expired";
    TOKEN_INVALIDATED = "token-invalidated", "the gateway token's pod or service account is gone or was recreated";
    TOKEN_REJECTED = "token-rejected", "the API server behind the remote secret refuses the gateway token";
    NOT_AUTHENTICATED = "not-authenticated", "the TokenReview says the token is not authenticated";
    NOT_A_SERVICE_ACCOUNT = "not-a-service-account", "the reviewed token's groups lack system:serviceaccounts";
    INVALID_USERNAME = "invalid-username", "the reviewed username is not system:serviceaccount:<ns>:<sa> as istiod parses it";
}

/// What the API server answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Status(TokenReviewStatus),
    /// A 200 without `status`.
    NoStatus,
    Failed {
        code: Option<u16>,
        error: String,
    },
}

#[derive(Debug, Clone)]
pub struct ReviewFacts {
    pub secret: SecretRef,
    /// The gateway (namespace, pod, service account), from gateway-pod.
    pub gateway: Option<(String, String, String)>,
    /// The token's fingerprint (never the token).
    pub token_fingerprint: String,
    pub answer: Answer,
}

/// Sent as soon as the gateway's token and remote-kubeconfig's client are
/// there, as istiod sends its own on the CSR; judged once remote-rbac
/// (which explains a refusal) finished.
pub async fn run(ctx: &Ctx) -> Staged {
    let Some(token) = ctx.facts().gateway_token.clone() else {
        return Outcome::new()
            .blocked(StepId::GatewayToken, "no gateway token")
            .into();
    };
    let client =
        match super::istiod_view(ctx, StepId::RemoteRbac, "no authenticated identity").await {
            Ok(c) => c,
            Err(blocked) => return blocked,
        };
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.0.clone(),
            // istiod's TokenReview asks for all of its TOKEN_AUDIENCES (kube_jwt.go).
            audiences: Some(Settings::of(ctx).token_audiences),
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client);
    let answer = match api.create(&PostParams::default(), &review).await {
        Ok(r) => match r.status {
            Some(st) => Answer::Status(st),
            None => Answer::NoStatus,
        },
        Err(e) => Answer::Failed {
            code: api_code(&e),
            error: kube_err(&e),
        },
    };
    let facts = ReviewFacts {
        secret: SecretRef::of(ctx),
        gateway: ctx.facts().gateway.as_ref().map(|g| {
            (
                g.namespace.clone(),
                g.pod.clone(),
                g.service_account.clone(),
            )
        }),
        token_fingerprint: jwt::fingerprint(&token.0),
        answer,
    };
    Staged::judge(move |ctx| judge(&facts, &Settings::of(ctx)))
}

/// istiod's reading of the review, rule by rule.
pub fn judge(f: &ReviewFacts, s: &Settings) -> Outcome {
    super::secret_fix::tidy(verdict(f, s))
}

fn verdict(f: &ReviewFacts, s: &Settings) -> Outcome {
    let mut out = Outcome::new();
    let aud = s.token_audiences.join(",");
    let cid = &f.secret.cluster_id;
    out.ev("audiences", &s.token_audiences)
        .ev("audiences_from", &s.audiences_from)
        .ev("as", "the remote secret's credentials")
        .ev("token", &f.token_fingerprint);
    let gateway = f
        .gateway
        .as_ref()
        .map(|(ns, pod, _)| format!("{ns}/{pod}"))
        .unwrap_or_else(|| "the gateway".into());
    let rewrite_note = |finding: Finding, why: &str| {
        if f.secret.server_differs() {
            let fix = secret_fix::rewrite(&f.secret, s, Server::RemoteContext, None);
            finding.commands(fix.commands).note(format!(
                "{why} The command writes the secret again with the --remote context's server. {}",
                fix.note.join(" ")
            ))
        } else {
            finding.note(why.to_string())
        }
    };
    let st = match &f.answer {
        Answer::Status(st) => st,
        Answer::NoStatus => {
            // istiod reads a missing status as Authenticated false.
            return out.failing(
                rewrite_note(
                    Finding::new(&NOT_AN_API_SERVER, "the TokenReview came back without status"),
                    &format!("A Kubernetes API server always answers a TokenReview with status: a proxy or another server is at {}; istiod refuses the gateway (`the token is not authenticated`).", f.secret.server),
                ),
                "the TokenReview came back without status: the answer is not a Kubernetes review; expected status.authenticated",
            );
        }
        Answer::Failed {
            code: Some(403),
            error,
        } => {
            return out.failing(
                Finding::new(&FORBIDDEN, "the remote secret's identity may not create this TokenReview")
                    .note("remote-rbac found create tokenreviews allowed a moment ago: RBAC changed since, or an authorizer answers the two differently. Trace again; remote-rbac then names the role to fix."),
                format!("the TokenReview call itself failed: {error}; istiod logs `failed to validate the JWT from cluster {cid:?}`"),
            );
        }
        Answer::Failed { error, .. } => {
            return out.failing(
                Finding::new(&CALL_FAILED, "the TokenReview call itself failed")
                    .note("remote-identity and remote-rbac passed with the same client: check the remote API server, then trace again."),
                format!("the TokenReview call itself failed: {error}; istiod logs `failed to validate the JWT from cluster {cid:?}`"),
            );
        }
    };
    let user = st.user.clone().unwrap_or_default();
    out.ev("authenticated", st.authenticated)
        .ev("username", &user.username)
        .ev("groups", &user.groups)
        .ev("token_audiences", &st.audiences)
        .ev("error", &st.error);
    // 1. status.error, whatever else the status says.
    if let Some(err) = st.error.as_ref().filter(|e| !e.is_empty()) {
        let diagnosis = format!(
            "the remote API server refuses the gateway token: {err}; istiod: `the service account authentication returns an error`"
        );
        // kube-apiserver's words: pkg/serviceaccount/claims.go and the
        // audience check of the token authenticator.
        let finding = if err.contains("audiences") {
            Finding::new(&AUDIENCE_REJECTED, format!("the gateway token is refused for audiences {aud:?}"))
                .note(format!("gateway-token found the gateway's istio-token audience among istiod's ({}), yet the API server behind the remote secret refuses it: check that {} is the remote cluster's API server.", s.audiences_from, f.secret.server))
        } else if err.contains("has expired") {
            Finding::new(&TOKEN_EXPIRED, "the API server says the gateway token has expired")
                .note("meshtrace asked for this token moments ago (600 s): the clocks of the remote API servers disagree. Fix their time (NTP); the gateway's own tokens expire early the same way.")
        } else if err.contains("invalidated")
            || err.contains("not found")
            || err.contains("does not match")
        {
            Finding::new(&TOKEN_INVALIDATED, format!("the token of {gateway} names a pod or account that is gone"))
                .note(format!("The token is bound to {gateway} and its service account: one was deleted or recreated since gateway-token ran. Trace again; if it stays, the API server behind the remote secret ({}) is not the one the --remote context talks to.", f.secret.server))
        } else {
            rewrite_note(
                Finding::new(
                    &TOKEN_REJECTED,
                    "the API server behind the remote secret refuses the gateway token",
                ),
                &format!(
                    "The --remote context's API server issued this token; {} refuses it, as a server of another cluster (another signing key or issuer) would.",
                    f.secret.server
                ),
            )
        };
        return out.failing(finding, diagnosis);
    }
    // 2. Authenticated.
    if st.authenticated != Some(true) {
        return out.failing(
            Finding::new(&NOT_AUTHENTICATED, "the TokenReview says the gateway token is not authenticated")
                .note("The API server gave no error with it; istiod refuses the gateway (`the token is not authenticated`). Check the remote API server's authenticators, then trace again."),
            format!("status.authenticated {:?} without an error; expected true", st.authenticated),
        );
    }
    // 3. The service-account group.
    let groups = user.groups.clone().unwrap_or_default();
    if !groups.iter().any(|g| g == "system:serviceaccounts") {
        return out.failing(
            Finding::new(&NOT_A_SERVICE_ACCOUNT, "the reviewed token is not a service account's")
                .note("istiod accepts only service-account tokens (`the token is not a service account`); an authenticator of the remote API server maps the token to another user."),
            format!("groups {}; expected system:serviceaccounts among them", quote_list(&groups)),
        );
    }
    // 4. Four colon-separated parts (istiod checks nothing else of them),
    // then a namespace and a service account (kube_jwt.go).
    let username = user.username.clone().unwrap_or_default();
    let parts: Vec<&str> = username.split(':').collect();
    let istiod_says = if parts.len() != 4 {
        Some("invalid username field in the token review result")
    } else if parts[3].is_empty() {
        Some("failed to parse the JWT; service account required")
    } else if parts[2].is_empty() {
        Some("failed to parse the JWT; namespace required")
    } else {
        None
    };
    if let Some(said) = istiod_says {
        return out.failing(
            Finding::new(&INVALID_USERNAME, format!("username {username:?} is not system:serviceaccount:NS:SA"))
                .note(format!("istiod refuses it: `{said}`. The remote API server maps the token to this name; the gateway must present its own service-account token.")),
            format!("username {username:?}; expected system:serviceaccount:NS:SA"),
        );
    }
    out.ev(
        "identity",
        json!({"namespace": parts[2], "service_account": parts[3]}),
    );
    out.pass()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::steps::secret_fix::tests::lab_secret;
    use crate::model::Status;
    use k8s_openapi::api::authentication::v1::UserInfo;

    /// The status kube-apiserver returns for the lab's gateway.
    fn authenticated() -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec!["istio-ca".into()]),
            user: Some(UserInfo {
                username: Some(
                    "system:serviceaccount:istio-system:istio-eastwestgateway-service-account"
                        .into(),
                ),
                uid: Some("8d3c5f0e-1111-4000-8000-000000000002".into()),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    "system:serviceaccounts:istio-system".into(),
                    "system:authenticated".into(),
                ]),
                ..Default::default()
            }),
            error: None,
        }
    }

    /// kube-apiserver's answer to a refused token: no `authenticated`, an
    /// empty user, the error.
    fn refused(error: &str) -> Answer {
        Answer::Status(TokenReviewStatus {
            authenticated: None,
            user: Some(Default::default()),
            audiences: None,
            error: Some(error.into()),
        })
    }

    fn with_user(username: &str, groups: &[&str]) -> Answer {
        let mut st = authenticated();
        st.user = Some(UserInfo {
            username: Some(username.into()),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            ..Default::default()
        });
        Answer::Status(st)
    }

    fn facts(answer: Answer) -> ReviewFacts {
        ReviewFacts {
            secret: lab_secret(),
            gateway: Some((
                "istio-system".into(),
                "istio-eastwestgateway-7d9f-abcde".into(),
                "istio-eastwestgateway-service-account".into(),
            )),
            token_fingerprint: "sha256:0123456789abcdef".into(),
            answer,
        }
    }

    #[test]
    fn judge_table() {
        let sa_groups = ["system:serviceaccounts", "system:authenticated"];
        let other_server = |a: Answer| ReviewFacts {
            secret: SecretRef {
                server: "https://10.9.9.9:6443".into(),
                ..lab_secret()
            },
            ..facts(a)
        };
        let rows: Vec<(&str, ReviewFacts, Option<&str>, Vec<&str>)> = vec![
            (
                "authenticated service account",
                facts(Answer::Status(authenticated())),
                None,
                vec![],
            ),
            (
                "403 on the call",
                facts(Answer::Failed {
                    code: Some(403),
                    error: "403 Forbidden: tokenreviews.authentication.k8s.io is forbidden".into(),
                }),
                Some("token-review/forbidden"),
                vec![],
            ),
            (
                "the call fails otherwise",
                facts(Answer::Failed {
                    code: None,
                    error: "connection reset".into(),
                }),
                Some("token-review/call-failed"),
                vec![],
            ),
            (
                "a 200 without status from another server",
                other_server(Answer::NoStatus),
                Some("token-review/not-an-api-server"),
                vec![
                    "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system | kubectl --context ctx-primary apply -f -",
                ],
            ),
            (
                "audience refused",
                facts(refused(
                    "[invalid bearer token, token audiences [\"x\"] is invalid for the target audiences [\"istio-ca\"]]",
                )),
                Some("token-review/audience-rejected"),
                vec![],
            ),
            (
                "expired",
                facts(refused(
                    "[invalid bearer token, service account token has expired]",
                )),
                Some("token-review/token-expired"),
                vec![],
            ),
            (
                "pod gone",
                facts(refused(
                    "[invalid bearer token, service account token has been invalidated]",
                )),
                Some("token-review/token-invalidated"),
                vec![],
            ),
            (
                "account recreated",
                facts(refused(
                    "[invalid bearer token, service account UID (a) does not match claim (b)]",
                )),
                Some("token-review/token-invalidated"),
                vec![],
            ),
            (
                "another cluster's server refuses the signature",
                other_server(refused(
                    "[invalid bearer token, square/go-jose: error in cryptographic primitive]",
                )),
                Some("token-review/token-rejected"),
                vec!["istioctl create-remote-secret"],
            ),
            (
                "refused by the context's own server: nothing to rewrite",
                facts(refused("invalid bearer token")),
                Some("token-review/token-rejected"),
                vec![],
            ),
            (
                "not authenticated, no error",
                facts(Answer::Status(TokenReviewStatus {
                    authenticated: Some(false),
                    ..Default::default()
                })),
                Some("token-review/not-authenticated"),
                vec![],
            ),
            (
                "a user token",
                facts(with_user("alice", &["system:authenticated"])),
                Some("token-review/not-a-service-account"),
                vec![],
            ),
            (
                "three parts",
                facts(with_user("system:serviceaccount:gw", &sa_groups)),
                Some("token-review/invalid-username"),
                vec![],
            ),
            (
                "four parts, no account name",
                facts(with_user("system:serviceaccount:istio-system:", &sa_groups)),
                Some("token-review/invalid-username"),
                vec![],
            ),
        ];
        let s = Settings::for_tests();
        for (name, f, code, commands) in rows {
            let out = judge(&f, &s);
            let want = if code.is_some() {
                Status::Fail
            } else {
                Status::Pass
            };
            assert_eq!(out.status, Some(want), "{name}: {:?}", out.diagnosis);
            let finding = out.finding.as_ref();
            assert_eq!(finding.map(|f| f.code.as_str()), code, "{name}");
            let cmds = finding.map(|f| f.commands.join("\n")).unwrap_or_default();
            if commands.is_empty() {
                assert!(cmds.is_empty(), "{name}: {cmds}");
            }
            for c in commands {
                assert!(cmds.contains(c), "{name}: {c:?} not in {cmds}");
            }
            if let Some(fd) = finding {
                assert!(fd.summary.len() <= 100, "{name}: {}", fd.summary);
                let d = out.diagnosis.as_deref().unwrap_or_default();
                assert!(d.len() <= 300, "{name}: {} chars: {d}", d.len());
            }
        }
    }

    #[test]
    fn a_pass_names_the_identity_and_istiods_own_words_are_quoted() {
        let s = Settings::for_tests();
        let out = judge(&facts(Answer::Status(authenticated())), &s);
        assert_eq!(
            out.evidence["identity"],
            json!({"namespace": "istio-system", "service_account": "istio-eastwestgateway-service-account"})
        );
        let f = facts(with_user(
            "system:serviceaccount:istio-system:",
            &["system:serviceaccounts"],
        ));
        let note = judge(&f, &s).finding.unwrap().note.unwrap();
        assert!(note.contains("service account required"), "{note}");
        // The first two parts are not compared, as istiod does not.
        let f = facts(with_user(
            "a:b:istio-system:gw",
            &["system:serviceaccounts"],
        ));
        assert_eq!(judge(&f, &s).status, Some(Status::Pass));
    }
}
