//! istiod's side of the remote cluster: the remote secret, its kubeconfig,
//! the API server it points at, the identity it carries, and the TokenReview
//! istiod runs with it.

use super::{api_code, kube_err, now_unix, quote_list};
use crate::engine::{Ctx, Outcome};
use crate::inspect::kubeconfig::{self, Credential};
use crate::inspect::x509::rfc3339;
use crate::inspect::{jwt, x509};
use crate::model::StepId;
use crate::probe::kube_client;
use crate::probe::tls::{TlsProbe, probe};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// The primary's own cluster ID: flag, else istiod's CLUSTER_ID env, else
/// the remote's controlPlaneClusters annotation.
pub(super) async fn primary_cluster_id(ctx: &Ctx) -> Option<(String, &'static str)> {
    if let Some(id) = &ctx.opts.primary_cluster_id {
        return Some((id.clone(), "--primary-cluster-id"));
    }
    let deps: Api<Deployment> =
        Api::namespaced(ctx.clusters.primary.clone(), &ctx.opts.istio_namespace);
    if let Ok(Some(d)) = deps.get_opt("istiod").await {
        let env = d
            .spec
            .template
            .spec
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.env);
        if let Some(v) = env
            .and_then(|e| e.into_iter().find(|v| v.name == "CLUSTER_ID"))
            .and_then(|v| v.value)
        {
            return Some((v, "primary istiod CLUSTER_ID"));
        }
    }
    let ns: Api<Namespace> = Api::all(ctx.clusters.remote.clone());
    if let Ok(Some(n)) = ns.get_opt(&ctx.opts.istio_namespace).await {
        if let Some(v) = n
            .metadata
            .annotations
            .and_then(|a| a.get("topology.istio.io/controlPlaneClusters").cloned())
        {
            if v != "*" && !v.contains(',') {
                return Some((
                    v,
                    "remote namespace annotation topology.istio.io/controlPlaneClusters",
                ));
            }
        }
    }
    None
}

pub(super) fn server_of(kc: &[u8]) -> Option<String> {
    kubeconfig::parse_remote_kubeconfig(kc)
        .ok()
        .map(|k| k.server)
}

/// Parses a remote secret's kubeconfig on a blocking thread: parsing is CPU
/// work a peer controls, and on an async worker the step's deadline could
/// not interrupt it. (It is bounded too: see [`kubeconfig::check_shape`].)
/// `allowed`: istiod's insecure kubeconfig options.
pub(super) async fn parse_off_worker(
    bytes: Vec<u8>,
    allowed: Vec<String>,
) -> Result<kubeconfig::RemoteKubeconfig, kubeconfig::KubeconfigError> {
    tokio::task::spawn_blocking(move || {
        kubeconfig::parse_remote_kubeconfig_allowing(&bytes, &allowed)
    })
    .await
    .unwrap_or_else(|e| {
        Err(kubeconfig::KubeconfigError::Load(format!(
            "the parser stopped: {e}"
        )))
    })
}

pub async fn remote_api_tls(ctx: &Ctx) -> Outcome {
    let kc = ctx.facts().kubeconfig.clone();
    let Some(kc) = kc else {
        return Outcome::new().blocked(StepId::RemoteKubeconfig, "no usable kubeconfig");
    };
    let mut out = Outcome::new();
    let Some(host) = kubeconfig::server_host(&kc.server) else {
        return out.fail(
            format!(
                "server {:?} in the kubeconfig is not a URL with a host",
                kc.server
            ),
            "set clusters[].cluster.server to https://<remote API address>",
        );
    };
    let port = server_port(&kc.server);
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let server_name = kc.tls_server_name.clone().unwrap_or_else(|| host.clone());
    out.ev("server", &kc.server).ev("server_name", &server_name);

    // Loopback in the secret works only when istiod runs on the host itself,
    // not in a pod of its own: look for istiod pods in the primary. A pod on
    // the host network shares its node's loopback, like istiod on a host.
    if kubeconfig::is_loopback_host(&host) {
        let pods: Api<Pod> =
            Api::namespaced(ctx.clusters.primary.clone(), &ctx.opts.istio_namespace);
        let (in_cluster, on_host_network) = pods
            .list(&ListParams::default().labels("app=istiod"))
            .await
            .map(|l| {
                let host_net = l
                    .items
                    .iter()
                    .filter(|p| p.spec.as_ref().and_then(|s| s.host_network) == Some(true))
                    .count();
                (l.items.len() - host_net, host_net)
            })
            .unwrap_or((0, 0));
        if in_cluster > 0 {
            return out.fail(
                format!(
                    "the kubeconfig's server is {:?}, a loopback address: inside istiod's pod ({in_cluster} istiod pod(s) in the primary, not on the host network) that is istiod itself, not the remote API server (istiod logs `remote cluster ... failed to sync`)",
                    kc.server
                ),
                "use an address of the remote API server reachable from the primary's pods: istioctl create-remote-secret --server=https://<reachable address>",
            );
        }
        if on_host_network > 0 {
            out.ev("note", "loopback server: the primary's istiod pod(s) use the host network, so loopback is their node's and may reach the remote");
        } else {
            out.ev("note", "loopback server: no istiod pod runs in the primary, so istiod runs on a host where loopback may reach the remote");
        }
    }
    if kc.insecure_skip_tls_verify {
        out.ev("insecure_skip_tls_verify", true);
    }
    let roots = kc.ca_data_pem.clone().unwrap_or_default();
    let report = probe(&TlsProbe {
        addr: addr.clone(),
        server_name: server_name.clone(),
        roots_pem: roots.clone(),
        timeout: ctx.opts.timeout,
    })
    .await;
    out.ev(
        "resolved",
        report
            .resolved
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
    )
    .ev("handshake_ms", report.handshake_ms)
    .ev("protocol", &report.protocol)
    .ev("alpn", &report.alpn);
    if let Some(e) = &report.tcp_error {
        return out.fail(
            format!("cannot reach the remote API server {addr} named in the remote secret: {e} (istiod logs `remote cluster ... failed to sync`)"),
            "check the server address in the remote secret and that the primary's network reaches it (firewall, load balancer, private endpoint)",
        );
    }
    let presented: Vec<_> = report
        .peer_chain_der
        .iter()
        .filter_map(|d| x509::parse_der(d).ok())
        .collect();
    out.ev(
        "presented_certificate",
        presented.first().map(|c| c.evidence()),
    );
    // Without CA data istiod verifies with its system roots, which meshtrace
    // does not load: a verification failure then says nothing.
    let unverifiable = kc.ca_data_pem.is_none() && report.verify_error.is_some();
    if unverifiable {
        out.ev("note", "no certificate-authority-data: istiod verifies with its system roots, which meshtrace does not load");
    } else if let (false, Some(e)) = (kc.insecure_skip_tls_verify, &report.verify_error) {
        let ca_subjects: Vec<String> = x509::parse_pem_chain(&roots)
            .map(|c| c.into_iter().map(|c| c.subject).collect())
            .unwrap_or_default();
        let issuer = presented
            .first()
            .map(|c| c.issuer.clone())
            .unwrap_or_default();
        return out.fail(
            format!(
                "the remote API server's certificate does not verify with the secret's certificate-authority-data: {e}. Server cert issuer: {issuer:?}; CA data subject(s): {}",
                quote_list(&ca_subjects)
            ),
            "put the remote API server's CA into the secret: istioctl create-remote-secret --context=<remote> (or set tls-server-name if the server's name differs)",
        );
    }
    if let Some(e) = &report.tls_error {
        return out.fail(
            format!("TLS handshake with the remote API server {addr} failed: {e}"),
            "check that the server in the remote secret is the remote API server's HTTPS address (not a plain-HTTP port or a proxy)",
        );
    }
    // A client that acts as istiod does: the secret's credentials.
    match istiod_view_client(&kc, ctx.opts.timeout).await {
        Ok(c) => ctx.facts().istiod_view = Some(c),
        Err(e) => {
            return out.fail(
                format!("cannot build a client from the remote secret's kubeconfig: {e}"),
                "recreate the remote secret",
            );
        }
    }
    if unverifiable {
        return out.warn(
            "the remote secret has no certificate-authority-data, so istiod trusts the remote API server through its system roots; meshtrace cannot check those",
            "add certificate-authority-data with the remote API server's CA (istioctl create-remote-secret does)",
        );
    }
    if kc.insecure_skip_tls_verify {
        return out.warn(
            "the remote secret sets insecure-skip-tls-verify: istiod does not verify the remote API server",
            "set certificate-authority-data instead (istioctl create-remote-secret does)",
        );
    }
    out.pass()
}

fn server_port(server: &str) -> u16 {
    server
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| {
            u.port_u16().or(match u.scheme_str() {
                Some("http") => Some(80),
                _ => Some(443),
            })
        })
        .unwrap_or(443)
}

async fn istiod_view_client(
    kc: &kubeconfig::RemoteKubeconfig,
    timeout: std::time::Duration,
) -> Result<kube::Client, String> {
    let opts = kube::config::KubeConfigOptions {
        context: Some(kc.context.clone()),
        ..Default::default()
    };
    let cfg = kube::Config::from_custom_kubeconfig(kc.raw.clone(), &opts)
        .await
        .map_err(|e| e.to_string())?;
    kube_client::build(cfg, kube_client::Limits::new(timeout)).map_err(|e| e.to_string())
}

pub async fn remote_identity(ctx: &Ctx) -> Outcome {
    let (client, kc) = {
        let f = ctx.facts();
        (f.istiod_view.clone(), f.kubeconfig.clone())
    };
    let (Some(client), Some(kc)) = (client, kc) else {
        return Outcome::new().blocked(
            StepId::RemoteApiTls,
            "no connection to the remote API server",
        );
    };
    let mut out = Outcome::new();
    let claims = match &kc.credential {
        Credential::Token(t) => jwt::decode(t.expose()).ok(),
        _ => None,
    };
    if let Some(c) = &claims {
        out.ev("token_issuer", &c.issuer)
            .ev("token_subject", &c.subject);
        if let Some(exp) = c.expires_at {
            out.ev("token_expires", rfc3339(exp));
        }
    }
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await;
    let user = match review {
        Ok(r) => match r.status.and_then(|s| s.user_info) {
            Some(u) => u,
            // A 200 without the review's answer is not from an API server
            // (a proxy, a stub): say so here, not as a later step's riddle.
            None => {
                return out.fail(
                    "the remote API server answered the SelfSubjectReview without status.userInfo: the answer is not a Kubernetes review (a proxy or another server is at the remote secret's address)",
                    not_an_api_server_fix(ctx),
                );
            }
        },
        Err(e) if api_code(&e) == Some(401) => {
            let (diag, fix) = explain_unauthorized(ctx, claims.as_ref()).await;
            return out.fail(format!("the remote API server rejects the remote secret's credential (401 Unauthorized): {diag}. istiod logs `failed to validate the JWT from cluster ...: Unauthorized`"), fix);
        }
        Err(e) if api_code(&e) == Some(404) => {
            // Before Kubernetes 1.28 there is no SelfSubjectReview: any GET proves authentication.
            match client.apiserver_version().await {
                Ok(_) => {
                    out.ev(
                        "note",
                        "SelfSubjectReview not served; authenticated by GET /version",
                    );
                    Default::default()
                }
                Err(e) => {
                    return out.fail(
                        format!(
                            "the remote secret's credential cannot call the remote API server: {}",
                            kube_err(&e)
                        ),
                        "recreate the remote secret",
                    );
                }
            }
        }
        Err(e) => {
            return out.fail(
                format!(
                    "SelfSubjectReview as the remote secret's identity failed: {}",
                    kube_err(&e)
                ),
                "check the remote API server",
            );
        }
    };
    out.ev("username", &user.username)
        .ev("groups", &user.groups);
    if let Some(c) = &claims {
        if let Some(left) = c.expires_in(now_unix()) {
            if left < ctx.opts.warn_within.as_secs() as i64 {
                return out.warn(
                    format!("the remote secret's token expires {} ({}), within --warn-within {}", x509::expiry_words(left), rfc3339(c.expires_at.unwrap_or(0)), humantime::format_duration(ctx.opts.warn_within)),
                    "rotate it before then: istioctl create-remote-secret --context=<remote> | kubectl apply --context=<primary> -f -",
                );
            }
        }
    }
    out.pass()
}

/// The fix when the remote secret's server answers, but not as an API
/// server: write the secret again from the remote context, whose server is
/// the real one.
fn not_an_api_server_fix(ctx: &Ctx) -> String {
    let id = ctx
        .facts()
        .cluster_id
        .as_ref()
        .map(|c| c.0.clone())
        .unwrap_or_else(|| "<remote-id>".into());
    format!(
        "point the remote secret at the remote API server: istioctl create-remote-secret --context=<remote> --name={id} | kubectl apply --context=<primary> -f -"
    )
}

/// Why a token was refused, from its claims and the remote's objects.
async fn explain_unauthorized(ctx: &Ctx, claims: Option<&jwt::JwtSummary>) -> (String, String) {
    let recreate = "recreate the remote secret: istioctl create-remote-secret --context=<remote> --name=<id> | kubectl apply --context=<primary> -f -".to_string();
    let Some(c) = claims else {
        return (
            "the credential is not a service-account JWT meshtrace can decode".into(),
            recreate,
        );
    };
    if let Some(exp) = c.expires_at {
        if exp <= now_unix() {
            return (
                format!(
                    "the token expired at {} ({})",
                    rfc3339(exp),
                    x509::expiry_words(exp - now_unix())
                ),
                recreate,
            );
        }
    }
    // A token from another cluster: its issuer is not the remote's. Checked
    // before the service account, whose uid would differ for such a token too.
    if let (Some(iss), Some(remote_iss)) = (&c.issuer, remote_issuer(ctx).await) {
        if *iss != remote_iss {
            return (
                format!(
                    "the token was issued by {iss:?}, but the remote API server's service-account issuer is {remote_iss:?}: it was signed by another cluster's key"
                ),
                format!(
                    "{recreate} (run it against the remote context, so the token comes from the remote)"
                ),
            );
        }
    }
    if let Some((ns, name)) = &c.service_account {
        let sas: Api<ServiceAccount> = Api::namespaced(ctx.clusters.remote.clone(), ns);
        match sas.get_opt(name).await {
            Ok(None) => {
                return (
                    format!(
                        "the token's service account {ns}/{name} no longer exists in the remote"
                    ),
                    format!(
                        "kubectl --context <remote> -n {ns} create serviceaccount {name}, bind it to istio-reader-clusterrole, then {recreate}"
                    ),
                );
            }
            Ok(Some(sa)) => {
                let token_uid = c
                    .claims
                    .get("kubernetes.io")
                    .and_then(|k| k["serviceaccount"]["uid"].as_str())
                    .map(str::to_string);
                if let (Some(tu), Some(now_uid)) = (token_uid, sa.metadata.uid.clone()) {
                    if tu != now_uid {
                        return (
                            format!(
                                "the token was issued to an earlier service account {ns}/{name} (uid {tu}); the current one has uid {now_uid}"
                            ),
                            recreate,
                        );
                    }
                }
            }
            Err(_) => {}
        }
    }
    (
        format!(
            "the token (issuer {:?}, subject {:?}) is not accepted: it was signed by another cluster's key or its Secret was deleted",
            c.issuer.clone().unwrap_or_default(),
            c.subject.clone().unwrap_or_default()
        ),
        recreate,
    )
}

/// The remote's service-account issuer, from its OIDC discovery document.
async fn remote_issuer(ctx: &Ctx) -> Option<String> {
    let req = http::Request::get("/.well-known/openid-configuration")
        .body(Vec::new())
        .ok()?;
    let text = ctx.clusters.remote.request_text(req).await.ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["issuer"].as_str().map(str::to_string)
}

fn attrs(verb: &str, group: &str, resource: &str) -> ResourceAttributes {
    ResourceAttributes {
        verb: Some(verb.into()),
        group: Some(group.into()),
        resource: Some(resource.into()),
        ..Default::default()
    }
}

pub async fn remote_rbac(ctx: &Ctx) -> Outcome {
    let Some(client) = ctx.facts().istiod_view.clone() else {
        return Outcome::new().blocked(StepId::RemoteIdentity, "no authenticated identity");
    };
    let mut out = Outcome::new();
    let api: Api<SelfSubjectAccessReview> = Api::all(client);
    // tokenreviews is what authentication needs; the rest is what the secret
    // controller needs to sync the remote at all.
    let checks = [
        ("create", "authentication.k8s.io", "tokenreviews", true),
        ("list", "", "pods", false),
        ("watch", "", "services", false),
        ("list", "discovery.k8s.io", "endpointslices", false),
        ("list", "", "namespaces", false),
    ];
    let reviews = futures::future::join_all(checks.iter().map(|(verb, group, res, _)| {
        let api = api.clone();
        let ssar = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(attrs(verb, group, res)),
                ..Default::default()
            },
            ..Default::default()
        };
        async move { api.create(&PostParams::default(), &ssar).await }
    }))
    .await;
    let mut denied_required = None;
    let mut denied_sync = Vec::new();
    let mut table = Vec::new();
    for ((verb, group, res, required), r) in checks.iter().zip(reviews) {
        let label = if group.is_empty() {
            format!("{verb} {res}")
        } else {
            format!("{verb} {res}.{group}")
        };
        match r {
            Ok(rev) => {
                let Some(allowed) = rev.status.as_ref().map(|s| s.allowed) else {
                    return out.fail(
                        format!("the SelfSubjectAccessReview ({label}) came back without status: the answer is not a Kubernetes review (a proxy or another server is at the remote secret's address)"),
                        not_an_api_server_fix(ctx),
                    );
                };
                table.push(json!({"check": label, "allowed": allowed}));
                if !allowed {
                    if *required {
                        denied_required = Some(label);
                    } else {
                        denied_sync.push(label);
                    }
                }
            }
            Err(e) => {
                return out.fail(format!("SelfSubjectAccessReview ({label}) as the remote secret's identity failed: {}", kube_err(&e)), "check the remote API server");
            }
        }
    }
    out.ev("access", table);
    let user = ctx
        .facts()
        .kubeconfig
        .as_ref()
        .and_then(|k| match &k.credential {
            Credential::Token(t) => jwt::decode(t.expose()).ok().and_then(|j| j.subject),
            _ => None,
        })
        .unwrap_or_else(|| "<the remote secret's user>".into());
    if let Some(l) = denied_required {
        let sa = user
            .strip_prefix("system:serviceaccount:")
            .unwrap_or(&user)
            .to_string();
        let role = format!("istio-reader-clusterrole-{}", ctx.opts.istio_namespace);
        return out.fail(
            format!("{user:?} may not {l} in the remote: istiod's TokenReview fails with `tokenreviews.authentication.k8s.io is forbidden: User {user:?} cannot create resource \"tokenreviews\"`"),
            format!("bind it to Istio's reader role: kubectl --context <remote> create clusterrolebinding istio-reader-tokenreview --clusterrole={role} --serviceaccount={sa} (the ClusterRole must allow create on tokenreviews.authentication.k8s.io)"),
        );
    }
    if !denied_sync.is_empty() {
        return out.warn(
            format!("{user:?} may not {} in the remote: authentication works, but istiod cannot sync the remote's services", denied_sync.join(", ")),
            "bind the identity to Istio's reader ClusterRole (istio-reader-clusterrole-<ns>)",
        );
    }
    out.pass()
}

pub async fn token_review(ctx: &Ctx) -> Outcome {
    let (client, token, cid) = {
        let f = ctx.facts();
        (
            f.istiod_view.clone(),
            f.gateway_token.clone(),
            f.cluster_id.clone(),
        )
    };
    let Some(client) = client else {
        return Outcome::new().blocked(StepId::RemoteRbac, "no authenticated identity");
    };
    let Some(token) = token else {
        return Outcome::new().blocked(StepId::GatewayToken, "no gateway token");
    };
    let cid = cid.map(|c| c.0).unwrap_or_default();
    let aud = ctx.opts.token_audience.clone();
    let mut out = Outcome::new();
    out.ev("audiences", [&aud])
        .ev("as", "the remote secret's credentials")
        .ev("token", jwt::fingerprint(&token.0));
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.0.clone(),
            audiences: Some(vec![aud.clone()]),
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client);
    let status = match api.create(&PostParams::default(), &review).await {
        Ok(r) => match r.status {
            Some(st) => st,
            None => {
                return out.fail(
                    "the TokenReview came back without status: the answer is not a Kubernetes review (a proxy or another server is at the remote secret's address); istiod would refuse the gateway",
                    not_an_api_server_fix(ctx),
                );
            }
        },
        Err(e) => {
            return out.fail(
                format!("the TokenReview call itself failed; istiod logs `failed to validate the JWT from cluster {cid:?}: {}`", kube_err(&e)),
                if api_code(&e) == Some(403) { "grant create on tokenreviews.authentication.k8s.io to the remote secret's identity" } else { "see remote-identity and remote-rbac" },
            );
        }
    };
    let user = status.user.clone().unwrap_or_default();
    out.ev("authenticated", status.authenticated)
        .ev("username", &user.username)
        .ev("groups", &user.groups)
        .ev("token_audiences", &status.audiences)
        .ev("error", &status.error);
    if let Some(err) = status.error.as_ref().filter(|e| !e.is_empty()) {
        let fix = if err.contains("audiences") {
            format!(
                "give the gateway's istio-token volume audience {aud:?} (projected serviceAccountToken)"
            )
        } else if err.contains("expired") {
            "the gateway token expired: restart the gateway pod so the kubelet projects a fresh one"
                .into()
        } else if err.contains("deleted") || err.contains("not found") {
            "the gateway's service account or pod is gone: recreate it and restart the gateway"
                .into()
        } else {
            "check the gateway's service account and the remote API server's issuer".into()
        };
        return out.fail(format!("the remote API server refuses the gateway token: {err}. istiod logs `the service account authentication returns an error: {err}`"), fix);
    }
    if !status.authenticated.unwrap_or(false) {
        return out.fail(
            "the token is not authenticated (istiod: `the token is not authenticated`)",
            "restart the gateway so it gets a fresh token",
        );
    }
    let groups = user.groups.clone().unwrap_or_default();
    if !groups.iter().any(|g| g == "system:serviceaccounts") {
        return out.fail(
            format!("the token's groups {} lack system:serviceaccounts (istiod: `the token is not a service account`)", quote_list(&groups)),
            "the gateway must present its service-account token, not a user token",
        );
    }
    let username = user.username.clone().unwrap_or_default();
    let parts: Vec<&str> = username.split(':').collect();
    // istiod only checks for four colon-separated parts.
    if parts.len() != 4 {
        return out.fail(
            format!("username {username:?} is not system:serviceaccount:<ns>:<sa> (istiod: `invalid username field in the token review result`)"),
            "the gateway must present its service-account token",
        );
    }
    out.ev(
        "identity",
        json!({"namespace": parts[2], "service_account": parts[3]}),
    );
    out.pass()
}
