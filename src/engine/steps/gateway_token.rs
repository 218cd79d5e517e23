//! gateway-token: the token istio-agent presents to istiod, from the
//! gateway's projected `istio-token` volume. meshtrace asks the remote API
//! server for the same token (same audience, bound to the pod) and checks the
//! volume's audience against the one istiod's TokenReview asks for
//! (security/pkg/server/ca/authenticate/kubeauth/kube_jwt.go,
//! `security.TokenAudiences`).

use super::gateway::{json_word, kubectl_remote_ns, name_of, rollout_restart, template_container};
use super::{Settings, api_code, kube_err};
use crate::engine::facts::{GatewayFacts, Sensitive};
use crate::engine::{Ctx, Outcome, Staged};
use crate::findings::{Finding, shell_word};
use crate::inspect::jwt::{self, JwtError, JwtSummary};
use crate::model::StepId;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

crate::causes! { StepId::GatewayToken;
    NO_PROJECTED_TOKEN = "no-projected-token", "the gateway pod has no projected istio-token volume";
    WRONG_AUDIENCE = "wrong-audience", "the gateway's istio-token is for another audience than istiod's TokenReview asks for";
    SERVICE_ACCOUNT_MISSING = "service-account-missing", "the gateway's service account does not exist";
    POD_GONE = "pod-gone", "the gateway pod went away while meshtrace asked for its token";
    TOKEN_REQUEST_REFUSED = "token-request-refused", "the remote API server refused the TokenRequest for the gateway";
    NOT_A_JWT = "not-a-jwt", "the remote API server issued a token that is not a JWT";
    AUDIENCE_NOT_ACCEPTED = "audience-not-accepted", "istiod's TOKEN_AUDIENCES lack istio-ca, the audience the gateway's token carries";
}

/// The shortest token lifetime the TokenRequest API accepts.
pub const TOKEN_REQUEST_SECONDS: i64 = 600;

/// Where istio-agent reads its token (pilot/cmd/pilot-agent/options:
/// constants.ThirdPartyJwtPath), as the volume and mount Istio's charts make.
const TOKEN_MOUNT: &str = "/var/run/secrets/tokens";
const TOKEN_SECONDS: i64 = 43200;

#[derive(Debug, Clone)]
pub struct GatewayTokenFacts {
    /// istiod's Deployment whose TOKEN_AUDIENCES were read (control-plane).
    pub istiod: Option<super::istiod::IstiodDeployment>,
    pub gateway: GatewayFacts,
    pub answer: TokenAnswer,
}

/// The remote API server's answer to the TokenRequest.
#[derive(Debug, Clone)]
pub enum TokenAnswer {
    /// A token, decoded (the token itself stays out of the facts).
    Issued(Result<Box<JwtSummary>, JwtError>),
    /// 404: the service account or the pod the token is bound to is gone.
    /// `service_account_exists` is the answer to a GET of the account.
    NotFound {
        error: String,
        service_account_exists: Result<bool, String>,
    },
    Refused {
        error: String,
    },
}

/// Asks for the token the kubelet would project; returns the facts and the
/// token (registered as a secret of the trace before anything else sees it).
pub async fn gather(ctx: &Ctx, gw: GatewayFacts) -> (GatewayTokenFacts, Option<Sensitive>) {
    let audience = gw.projected_token.as_ref().and_then(|(aud, _)| aud.clone());
    // The same audience, bound to the pod; but for the shortest lifetime the
    // API allows, so a run leaves no long-lived credential behind
    // (docs/security.md#what-meshtrace-creates).
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audience.map(|a| vec![a]).unwrap_or_default()),
            attestations: None,
            expiration_seconds: Some(TOKEN_REQUEST_SECONDS),
            bound_object_ref: gw.pod_uid.as_ref().map(|uid| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(gw.pod.clone()),
                uid: Some(uid.clone()),
            }),
        }),
        ..Default::default()
    };
    let sas: Api<ServiceAccount> = Api::namespaced(ctx.clusters.remote.clone(), &gw.namespace);
    let resp: Result<TokenRequest, _> = sas
        .create_subresource("token", &gw.service_account, &PostParams::default(), &tr)
        .await;
    let (answer, token) = match resp {
        Ok(tr) => {
            let token = tr.status.and_then(|s| s.token).unwrap_or_default();
            ctx.secrets.add(&token);
            (
                TokenAnswer::Issued(jwt::decode(&token).map(Box::new)),
                Some(Sensitive(token)),
            )
        }
        Err(e) if api_code(&e) == Some(404) => {
            let exists = sas
                .get_opt(&gw.service_account)
                .await
                .map(|sa| sa.is_some())
                .map_err(|e| kube_err(&e));
            let answer = TokenAnswer::NotFound {
                error: kube_err(&e),
                service_account_exists: exists,
            };
            (answer, None)
        }
        Err(e) => (
            TokenAnswer::Refused {
                error: kube_err(&e),
            },
            None,
        ),
    };
    (
        GatewayTokenFacts {
            istiod: None,
            gateway: gw,
            answer,
        },
        token,
    )
}

/// istiod's Deployment whose TOKEN_AUDIENCES the token is judged against
/// (control-plane's pick).
fn istiod_of(ctx: &Ctx) -> Option<super::istiod::IstiodDeployment> {
    ctx.facts()
        .istiod_settings
        .as_ref()
        .and_then(|s| s.deployment.clone())
}

pub fn judge(f: &GatewayTokenFacts, s: &Settings) -> Outcome {
    let gw = &f.gateway;
    let mut out = Outcome::new();
    out.ev(
        "service_account",
        format!("{}/{}", gw.namespace, gw.service_account),
    );
    let sa = format!("{}/{}", gw.namespace, gw.service_account);
    match &f.answer {
        TokenAnswer::Issued(Ok(summary)) => {
            out.ev("token", summary.evidence_at(s.now));
        }
        TokenAnswer::Issued(Err(e)) => {
            return out.failing(
                Finding::new(&NOT_A_JWT, format!("the token issued for {sa} is not a JWT"))
                    .note("istiod's TokenReview needs the API server's service-account JWTs: check the remote API server's --service-account-issuer and --service-account-signing-key-file"),
                format!("TokenRequest for {sa} returned a token that is not a JWT: {e}"),
            );
        }
        // The account is there, so the 404 was for the pod the token is bound to.
        TokenAnswer::NotFound {
            error,
            service_account_exists: Ok(true),
        } => {
            return out.failing(
                Finding::new(
                    &POD_GONE,
                    format!(
                        "gateway pod {}/{} went away during the trace",
                        gw.namespace, gw.pod
                    ),
                )
                .note("the gateway was probably rolled out while meshtrace ran; trace again"),
                format!("TokenRequest for {sa} bound to pod {}: {error}", gw.pod),
            );
        }
        TokenAnswer::NotFound { error, .. } => {
            return service_account_missing(out, gw, error, s);
        }
        TokenAnswer::Refused { error } => {
            return out.failing(
                Finding::new(
                    &TOKEN_REQUEST_REFUSED,
                    format!("TokenRequest for {sa} refused"),
                )
                .note(format!(
                    "the --remote context needs create on serviceaccounts/token in namespace {}",
                    gw.namespace
                )),
                format!("TokenRequest for {sa} failed: {error}"),
            );
        }
    }
    match &gw.projected_token {
        None => no_projected_token(out, gw, s),
        Some((Some(a), _)) if s.token_audiences.contains(a) => {
            out.ev("audience", a);
            out.ev(
                "istiod_audiences",
                json!({"value": &s.token_audiences, "from": &s.audiences_from}),
            );
            out.pass()
        }
        // The gateway carries Istio's standard audience and istiod's own
        // TOKEN_AUDIENCES (set, not defaulted) leave it out: istiod is off.
        Some((Some(a), _))
            if a == "istio-ca" && f.istiod.is_some() && s.audiences_from.starts_with("env") =>
        {
            let d = f.istiod.as_ref().expect("checked");
            let now = s.token_audiences.join(",");
            out.ev("audience", a);
            out.failing(
                Finding::new(&AUDIENCE_NOT_ACCEPTED, format!("istiod's TOKEN_AUDIENCES {now:?} lack istio-ca, the gateway token's audience"))
                    .command(super::istiod::set_env_command(s, d, "TOKEN_AUDIENCES", &super::istiod::with_item(&now, "istio-ca")))
                    .note("istiod's TokenReview asks for its TOKEN_AUDIENCES only (pkg/security/security.go, kube_jwt.go), so the API server refuses the gateway's token: istiod answers the CSR `request authenticate failure`. set env keeps istiod's audiences, adds istio-ca and rolls istiod out"),
                format!("the gateway's istio-token is for {a:?}; istiod's TOKEN_AUDIENCES are {:?} ({})", s.token_audiences, s.audiences_from),
            )
        }
        Some((aud, exp)) => wrong_audience(out, gw, aud.as_deref(), *exp, s),
    }
}

fn service_account_missing(out: Outcome, gw: &GatewayFacts, error: &str, s: &Settings) -> Outcome {
    let ns = &gw.namespace;
    let mut cmds = vec![format!(
        "{} create serviceaccount {}",
        kubectl_remote_ns(s, ns),
        shell_word(&gw.service_account)
    )];
    let then = match &gw.deployment {
        Some(d) => {
            cmds.push(rollout_restart(s, ns, d));
            "the restart gives the gateway's pods tokens of the new account"
        }
        None => {
            "then delete the pod so that whatever created it creates it again, with a token of the new account"
        }
    };
    out.failing(
        Finding::new(
            &SERVICE_ACCOUNT_MISSING,
            format!("service account {ns}/{} does not exist", gw.service_account),
        )
        .commands(cmds)
        .note(format!(
            "Recreates the account the gateway runs as; {then} (tokens of the deleted account carry its uid and no longer authenticate). Role bindings name the account, so they apply again. Re-running the gateway's install (istioctl, Helm) recreates it with its labels too."
        )),
        format!(
            "TokenRequest for service account {ns}/{}: {error}; expected the account of pod {}",
            gw.service_account, gw.pod
        ),
    )
}

/// The Deployment template's `istio-token` volume.
struct TemplateToken {
    /// Its index among the template's volumes.
    volume: usize,
    /// The index of its serviceAccountToken source, and that source's audience.
    source: Option<(usize, Option<String>)>,
}

fn template_token(d: &Deployment) -> Option<TemplateToken> {
    let vols = d.spec.template.spec.as_ref()?.volumes.as_ref()?;
    let (vi, v) = vols
        .iter()
        .enumerate()
        .find(|(_, v)| v.name == "istio-token")?;
    let source = v.projected.as_ref().and_then(|p| {
        p.sources
            .as_ref()?
            .iter()
            .enumerate()
            .find_map(|(si, src)| {
                src.service_account_token
                    .as_ref()
                    .map(|t| (si, t.audience.clone()))
            })
    });
    Some(TemplateToken { volume: vi, source })
}

fn token_volume(audience: &str, expiration: i64) -> Value {
    json!({
        "name": "istio-token",
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": audience, "expirationSeconds": expiration, "path": "istio-token"
        }}]}
    })
}

fn patch_deployment(s: &Settings, ns: &str, d: &Deployment, ops: &Value) -> String {
    format!(
        "{} patch deployment {} --type=json -p {}",
        kubectl_remote_ns(s, ns),
        shell_word(name_of(d)),
        json_word(ops)
    )
}

fn wrong_audience(
    out: Outcome,
    gw: &GatewayFacts,
    aud: Option<&str>,
    exp: Option<i64>,
    s: &Settings,
) -> Outcome {
    let want = &s.token_audience;
    let ns = &gw.namespace;
    let seen = aud.unwrap_or("");
    let finding = Finding::new(
        &WRONG_AUDIENCE,
        format!("the gateway's istio-token is for audience {seen:?}, not {want:?}"),
    );
    let alt = format!(
        "(Or, if {seen:?} is meant, add it to the primary istiod's TOKEN_AUDIENCES, now {:?} from {}.)",
        s.token_audiences.join(","),
        s.audiences_from
    );
    let finding = if gw.injected_volumes.iter().any(|v| v == "istio-token") {
        // The injector's volume overrides the pod template's one.
        finding.note(format!(
            "Istio's injector adds this volume with values.global.sds.token.aud: set it to {want} in the remote's install (istioctl install --set values.global.sds.token.aud={want}), then restart the gateway. {alt}"
        ))
    } else {
        match (&gw.deployment, gw.deployment.as_ref().and_then(template_token)) {
            (
                Some(d),
                Some(TemplateToken {
                    source: Some((_, Some(a))),
                    ..
                }),
            ) if a == *want => finding
                .command(rollout_restart(s, ns, d))
                .note(format!(
                    "The Deployment already asks for {want:?}: pod {} predates it, and a restart replaces it. {alt}",
                    gw.pod
                )),
            (
                Some(d),
                Some(TemplateToken {
                    volume: vi,
                    source: src,
                }),
            ) => {
                let base = format!("/spec/template/spec/volumes/{vi}");
                let change = match src {
                    Some((si, _)) => json!({"op": "add",
                        "path": format!("{base}/projected/sources/{si}/serviceAccountToken/audience"),
                        "value": want}),
                    None => json!({"op": "replace", "path": base,
                        "value": token_volume(want, exp.unwrap_or(TOKEN_SECONDS))}),
                };
                let ops = json!([
                    {"op": "test", "path": format!("{base}/name"), "value": "istio-token"},
                    change
                ]);
                finding.command(patch_deployment(s, ns, d, &ops)).note(format!(
                    "Sets the audience of the istio-token volume in the gateway's Deployment; the rollout gives its pods tokens for {want:?}. Make the same change where the gateway is installed, or its next upgrade reverts it. {alt}"
                ))
            }
            (Some(d), None) => finding.note(format!(
                "Deployment {} has no istio-token volume of its own, and the injector did not add one: find what adds it to the pod. {alt}",
                name_of(d)
            )),
            (None, _) => finding.note(format!(
                "meshtrace found no Deployment that owns pod {}: set the istio-token volume's serviceAccountToken.audience to {want} where the gateway is defined, then recreate the pod. {alt}",
                gw.pod
            )),
        }
    };
    out.failing(
        finding,
        format!(
            "the istio-token volume of {ns}/{} asks for audience {seen:?}; istiod's TokenReview asks for {:?}, so the API server will answer `token audiences [{seen:?}] is invalid for the target audiences`",
            gw.pod,
            s.token_audiences
        ),
    )
}

fn no_projected_token(out: Outcome, gw: &GatewayFacts, s: &Settings) -> Outcome {
    let want = &s.token_audience;
    let ns = &gw.namespace;
    let finding = Finding::new(
        &NO_PROJECTED_TOKEN,
        format!("gateway {ns}/{} has no istio-token volume", gw.pod),
    );
    let container = gw
        .deployment
        .as_ref()
        .and_then(|d| template_container(d, &gw.container).map(|c| (d, c)));
    let finding = match container {
        Some((d, _)) if template_token(d).is_some() => finding
            .command(rollout_restart(s, ns, d))
            .note(format!(
                "The Deployment has the volume: pod {} predates it, and a restart replaces it.",
                gw.pod
            )),
        Some((d, (ci, c))) => {
            let spec = d.spec.template.spec.as_ref();
            let mut ops = vec![json!({"op": "test",
                "path": format!("/spec/template/spec/containers/{ci}/name"), "value": c.name})];
            let vol = token_volume(want, TOKEN_SECONDS);
            ops.push(match spec.and_then(|p| p.volumes.as_ref()) {
                Some(_) => json!({"op": "add", "path": "/spec/template/spec/volumes/-", "value": vol}),
                None => json!({"op": "add", "path": "/spec/template/spec/volumes", "value": [vol]}),
            });
            let mounts = c.volume_mounts.as_deref().unwrap_or_default();
            let mount = json!({"mountPath": TOKEN_MOUNT, "name": "istio-token"});
            let mount_path = format!("/spec/template/spec/containers/{ci}/volumeMounts");
            let taken = mounts.iter().find(|m| m.mount_path == TOKEN_MOUNT);
            match (mounts.iter().any(|m| m.name == "istio-token"), taken) {
                (true, _) | (false, Some(_)) => {}
                (false, None) if c.volume_mounts.is_some() => ops.push(
                    json!({"op": "add", "path": format!("{mount_path}/-"), "value": mount}),
                ),
                (false, None) => {
                    ops.push(json!({"op": "add", "path": mount_path, "value": [mount]}))
                }
            }
            let clash = match taken {
                Some(m) if m.name != "istio-token" => format!(
                    " Volume {} is mounted at {TOKEN_MOUNT} already: istio-agent reads its token from {TOKEN_MOUNT}/istio-token, so mount istio-token there instead.",
                    m.name
                ),
                _ => String::new(),
            };
            finding
                .command(patch_deployment(s, ns, d, &Value::Array(ops)))
                .note(format!(
                    "Adds the projected istio-token volume (audience {want}, as Istio's charts make it) to the gateway's Deployment and mounts it in {} at {TOKEN_MOUNT}; the rollout replaces the pods. Make the same change where the gateway is installed, or its next upgrade reverts it.{clash}",
                    c.name
                ))
        }
        None => finding.note(format!(
            "meshtrace has no Deployment template with container {} to patch: add a projected volume istio-token (serviceAccountToken: audience {want}, expirationSeconds {TOKEN_SECONDS}, path istio-token) mounted at {TOKEN_MOUNT} where the gateway is defined, or re-inject it.",
            gw.container
        )),
    };
    out.failing(
        finding,
        format!(
            "pod {ns}/{} has no projected istio-token volume: istio-agent finds no token at {TOKEN_MOUNT}/istio-token for audience {want:?}",
            gw.pod
        ),
    )
}

/// The TokenRequest needs only the gateway pod; the token is judged against
/// istiod's TOKEN_AUDIENCES once control-plane read them.
pub async fn run(ctx: &Ctx) -> Staged {
    let Some(gw) = ctx.facts().gateway.clone() else {
        return Outcome::new()
            .blocked(StepId::GatewayPod, "no gateway pod")
            .into();
    };
    let (mut facts, token) = gather(ctx, gw).await;
    Staged::judge(move |ctx| {
        facts.istiod = istiod_of(ctx);
        let out = judge(&facts, &Settings::of(ctx));
        if matches!(facts.answer, TokenAnswer::Issued(Ok(_))) {
            ctx.facts().gateway_token = token;
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use base64::Engine;

    /// A token shaped as the API server issues it for a pod-bound TokenRequest.
    fn summary(aud: &str) -> JwtSummary {
        let enc = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        let claims = json!({
            "aud": [aud], "exp": 1_800_000_600, "iat": 1_800_000_000, "nbf": 1_800_000_000,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": "system:serviceaccount:istio-system:istio-eastwestgateway-service-account",
            "kubernetes.io": {
                "namespace": "istio-system",
                "pod": {"name": "istio-eastwestgateway-7d9f5c-abcde", "uid": "u-pod"},
                "serviceaccount": {"name": "istio-eastwestgateway-service-account", "uid": "u-sa"}
            }
        });
        let token = format!(
            "{}.{}.c2lnbmF0dXJl",
            enc(&json!({"alg": "RS256", "kid": "k"})),
            enc(&claims)
        );
        jwt::decode(&token).unwrap()
    }

    fn token_volume_json(aud: Option<&str>) -> Value {
        let mut sat = json!({"expirationSeconds": 43200, "path": "istio-token"});
        if let Some(a) = aud {
            sat["audience"] = json!(a);
        }
        json!({"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": sat}]}})
    }

    /// The gateway chart's Deployment: istio-token is its second volume.
    fn deployment(volumes: Option<Vec<Value>>, mounts: bool) -> Deployment {
        let mut container = json!({"name": "istio-proxy", "image": "auto"});
        if mounts {
            container["volumeMounts"] =
                json!([{"name": "istio-envoy", "mountPath": "/etc/istio/proxy"}]);
        }
        let mut spec = json!({"serviceAccountName": "istio-eastwestgateway-service-account", "containers": [container]});
        if let Some(v) = volumes {
            spec["volumes"] = Value::Array(v);
        }
        serde_json::from_value(json!({
            "metadata": {"name": "istio-eastwestgateway", "namespace": "istio-system"},
            "spec": {"selector": {"matchLabels": {"app": "istio-eastwestgateway"}},
                     "template": {"metadata": {"labels": {"app": "istio-eastwestgateway"}}, "spec": spec}}
        }))
        .unwrap()
    }

    fn envoy_volume() -> Value {
        json!({"name": "istio-envoy", "emptyDir": {"medium": "Memory"}})
    }

    fn gateway(aud: Option<Option<&str>>, deployment: Option<Deployment>) -> GatewayFacts {
        GatewayFacts {
            namespace: "istio-system".into(),
            pod: "istio-eastwestgateway-7d9f5c-abcde".into(),
            pod_uid: Some("u-pod".into()),
            service_account: "istio-eastwestgateway-service-account".into(),
            projected_token: aud.map(|a| (a.map(str::to_string), Some(43200))),
            container: "istio-proxy".into(),
            deployment,
            ..Default::default()
        }
    }

    fn issued(gw: GatewayFacts, aud: &str) -> GatewayTokenFacts {
        GatewayTokenFacts {
            istiod: None,
            gateway: gw,
            answer: TokenAnswer::Issued(Ok(Box::new(summary(aud)))),
        }
    }

    struct Row {
        name: &'static str,
        facts: GatewayTokenFacts,
        status: Status,
        code: Option<&'static str>,
        /// Parts each command must hold, in order; empty: no command.
        commands: Vec<&'static [&'static str]>,
        note: &'static str,
    }

    #[test]
    fn judge_table() {
        let chart = || {
            deployment(
                Some(vec![
                    envoy_volume(),
                    token_volume_json(Some("kubernetes.default.svc")),
                ]),
                true,
            )
        };
        let mut injected = gateway(Some(Some("kubernetes.default.svc")), Some(chart()));
        injected.injected_volumes = vec!["istio-envoy".into(), "istio-token".into()];
        let sa_gone = |exists: Result<bool, String>| {
            GatewayTokenFacts {
                istiod: None,
            gateway: gateway(Some(Some("istio-ca")), Some(chart())),
            answer: TokenAnswer::NotFound {
                error: "404 NotFound: serviceaccounts \"istio-eastwestgateway-service-account\" not found".into(),
                service_account_exists: exists,
            },
        }
        };
        let rows = vec![
            Row {
                name: "pass",
                facts: issued(gateway(Some(Some("istio-ca")), Some(chart())), "istio-ca"),
                status: Status::Pass,
                code: None,
                commands: vec![],
                note: "",
            },
            Row {
                name: "wrong audience in the Deployment's volume",
                facts: issued(
                    gateway(Some(Some("kubernetes.default.svc")), Some(chart())),
                    "kubernetes.default.svc",
                ),
                status: Status::Fail,
                code: Some("gateway-token/wrong-audience"),
                commands: vec![&[
                    "kubectl --context ctx-remote -n istio-system patch deployment istio-eastwestgateway --type=json -p '",
                    r#"{"op":"test","path":"/spec/template/spec/volumes/1/name","value":"istio-token"}"#,
                    r#"{"op":"add","path":"/spec/template/spec/volumes/1/projected/sources/0/serviceAccountToken/audience","value":"istio-ca"}"#,
                ]],
                note: "TOKEN_AUDIENCES",
            },
            Row {
                name: "no audience is the API server's, not istio-ca",
                facts: issued(
                    gateway(
                        Some(None),
                        Some(deployment(Some(vec![token_volume_json(None)]), true)),
                    ),
                    "https://kubernetes.default.svc.cluster.local",
                ),
                status: Status::Fail,
                code: Some("gateway-token/wrong-audience"),
                commands: vec![&[
                    "/spec/template/spec/volumes/0/projected/sources/0/serviceAccountToken/audience",
                ]],
                note: "",
            },
            Row {
                name: "the injector owns the volume",
                facts: issued(injected, "kubernetes.default.svc"),
                status: Status::Fail,
                code: Some("gateway-token/wrong-audience"),
                commands: vec![],
                note: "values.global.sds.token.aud=istio-ca",
            },
            Row {
                name: "the Deployment is right already, the pod is older",
                facts: issued(
                    gateway(
                        Some(Some("kubernetes.default.svc")),
                        Some(deployment(
                            Some(vec![token_volume_json(Some("istio-ca"))]),
                            true,
                        )),
                    ),
                    "kubernetes.default.svc",
                ),
                status: Status::Fail,
                code: Some("gateway-token/wrong-audience"),
                commands: vec![&[
                    "kubectl --context ctx-remote -n istio-system rollout restart deployment/istio-eastwestgateway",
                ]],
                note: "predates",
            },
            Row {
                name: "wrong audience, no Deployment",
                facts: issued(
                    gateway(Some(Some("kubernetes.default.svc")), None),
                    "kubernetes.default.svc",
                ),
                status: Status::Fail,
                code: Some("gateway-token/wrong-audience"),
                commands: vec![],
                note: "no Deployment",
            },
            Row {
                name: "no istio-token volume",
                facts: issued(
                    gateway(None, Some(deployment(Some(vec![envoy_volume()]), true))),
                    "https://kubernetes.default.svc.cluster.local",
                ),
                status: Status::Fail,
                code: Some("gateway-token/no-projected-token"),
                commands: vec![&[
                    "patch deployment istio-eastwestgateway --type=json",
                    r#"{"op":"test","path":"/spec/template/spec/containers/0/name","value":"istio-proxy"}"#,
                    r#"{"op":"add","path":"/spec/template/spec/volumes/-","value":{"name":"istio-token","projected":{"sources":[{"serviceAccountToken":{"audience":"istio-ca","expirationSeconds":43200,"path":"istio-token"}}]}}}"#,
                    r#"{"op":"add","path":"/spec/template/spec/containers/0/volumeMounts/-","value":{"mountPath":"/var/run/secrets/tokens","name":"istio-token"}}"#,
                ]],
                note: "",
            },
            Row {
                name: "no volumes or mounts at all",
                facts: issued(
                    gateway(None, Some(deployment(None, false))),
                    "https://kubernetes.default.svc.cluster.local",
                ),
                status: Status::Fail,
                code: Some("gateway-token/no-projected-token"),
                commands: vec![&[
                    r#"{"op":"add","path":"/spec/template/spec/volumes","value":[{"name":"istio-token""#,
                    r#"{"op":"add","path":"/spec/template/spec/containers/0/volumeMounts","value":[{"mountPath":"/var/run/secrets/tokens","name":"istio-token"}]}"#,
                ]],
                note: "",
            },
            Row {
                name: "no istio-token volume, no Deployment",
                facts: issued(
                    gateway(None, None),
                    "https://kubernetes.default.svc.cluster.local",
                ),
                status: Status::Fail,
                code: Some("gateway-token/no-projected-token"),
                commands: vec![],
                note: "audience istio-ca",
            },
            Row {
                name: "service account deleted",
                facts: sa_gone(Ok(false)),
                status: Status::Fail,
                code: Some("gateway-token/service-account-missing"),
                commands: vec![
                    &[
                        "kubectl --context ctx-remote -n istio-system create serviceaccount istio-eastwestgateway-service-account",
                    ],
                    &[
                        "kubectl --context ctx-remote -n istio-system rollout restart deployment/istio-eastwestgateway",
                    ],
                ],
                note: "uid",
            },
            Row {
                name: "service account unreadable after a 404",
                facts: sa_gone(Err("403 Forbidden".into())),
                status: Status::Fail,
                code: Some("gateway-token/service-account-missing"),
                commands: vec![&["create serviceaccount"], &["rollout restart"]],
                note: "",
            },
            Row {
                name: "the pod went away",
                facts: sa_gone(Ok(true)),
                status: Status::Fail,
                code: Some("gateway-token/pod-gone"),
                commands: vec![],
                note: "trace again",
            },
            Row {
                name: "TokenRequest forbidden",
                facts: GatewayTokenFacts {
                    istiod: None,
                    gateway: gateway(Some(Some("istio-ca")), None),
                    answer: TokenAnswer::Refused {
                        error: "403 Forbidden: serviceaccounts \"x\" is forbidden".into(),
                    },
                },
                status: Status::Fail,
                code: Some("gateway-token/token-request-refused"),
                commands: vec![],
                note: "create on serviceaccounts/token in namespace istio-system",
            },
            Row {
                name: "a token that is no JWT",
                facts: GatewayTokenFacts {
                    istiod: None,
                    gateway: gateway(Some(Some("istio-ca")), None),
                    answer: TokenAnswer::Issued(jwt::decode("opaque").map(Box::new)),
                },
                status: Status::Fail,
                code: Some("gateway-token/not-a-jwt"),
                commands: vec![],
                note: "--service-account-issuer",
            },
        ];
        let s = Settings::for_tests();
        let mut seen = Vec::new();
        for r in rows {
            seen.extend(r.code);
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
            let cmds = f.map(|f| f.commands.clone()).unwrap_or_default();
            assert_eq!(cmds.len(), r.commands.len(), "{}: {cmds:?}", r.name);
            for (c, parts) in cmds.iter().zip(&r.commands) {
                for part in *parts {
                    assert!(c.contains(part), "{}: {c:?} lacks {part:?}", r.name);
                }
                assert!(
                    !super::super::gateway::has_placeholder(c),
                    "{}: placeholder in {c:?}",
                    r.name
                );
            }
            let note = f.and_then(|f| f.note.clone()).unwrap_or_default();
            assert!(
                note.contains(r.note),
                "{}: {note:?} lacks {:?}",
                r.name,
                r.note
            );
            if let Some(f) = f {
                assert!(
                    f.summary.chars().count() <= 100,
                    "{}: {}",
                    r.name,
                    f.summary
                );
                let d = out.diagnosis.clone().unwrap_or_default();
                assert!(d.chars().count() <= 300, "{}: {d}", r.name);
                // Never the token's signature.
                assert!(!format!("{out:?}").contains("c2lnbmF0dXJl"), "{}", r.name);
            }
        }
        // istiod's own TOKEN_AUDIENCES (read by control-plane) lack istio-ca:
        // the fix is istiod's, keeping its audiences.
        let mut other = Settings::for_tests();
        other.token_audiences = vec!["other-ca".into()];
        other.token_audience = "other-ca".into();
        other.audiences_from = "env TOKEN_AUDIENCES of Deployment istiod".into();
        let d = super::super::istiod::tests::one_istiod(&[("TOKEN_AUDIENCES", "other-ca")])
            .unwrap()
            .remove(0);
        let mut f = issued(gateway(Some(Some("istio-ca")), None), "istio-ca");
        f.istiod = Some(d);
        let out = judge(&f, &other);
        let fnd = super::super::check_row(
            "istiod's audiences lack istio-ca",
            &out,
            Status::Fail,
            Some("gateway-token/audience-not-accepted"),
            &[
                "kubectl --context ctx-primary -n istio-system set env deployment/istiod TOKEN_AUDIENCES=other-ca,istio-ca",
            ],
        );
        assert!(
            fnd.unwrap()
                .note
                .as_deref()
                .unwrap()
                .contains("kube_jwt.go")
        );
        seen.push("gateway-token/audience-not-accepted");
        // The same audiences given with --token-audience: the gateway's side.
        other.audiences_from = "--token-audience".into();
        let out = judge(&f, &other);
        assert_eq!(out.finding.unwrap().code, "gateway-token/wrong-audience");
        for c in CAUSES {
            assert!(seen.contains(&c.code().as_str()), "no row for {}", c.code());
        }
    }

    #[test]
    fn the_token_is_evidence_at_the_judges_clock() {
        let out = judge(
            &issued(gateway(Some(Some("istio-ca")), None), "istio-ca"),
            &Settings::for_tests(),
        );
        assert_eq!(out.evidence["token"]["expiry"], "expires in 10m");
        assert_eq!(out.evidence["audience"], "istio-ca");
        assert_eq!(
            out.evidence["service_account"],
            "istio-system/istio-eastwestgateway-service-account"
        );
    }
}
