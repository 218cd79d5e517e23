//! istiod's side of the remote cluster: the remote secret and its kubeconfig.
//! (The API server, the identity, its rights and the TokenReview are in
//! remote_api_tls.rs, remote_identity.rs, remote_rbac.rs, token_review.rs.)

use super::{kube_err, quote_list};
use crate::engine::facts::RemoteSecretFacts;
use crate::engine::{Ctx, Outcome};
use crate::inspect::kubeconfig::{self, Credential};
use crate::inspect::{jwt, x509};
use crate::model::StepId;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams};
use serde_json::json;

const MC_LABEL: &str = "istio/multiCluster";

/// The primary's own cluster ID: flag, else istiod's CLUSTER_ID env, else
/// the remote's controlPlaneClusters annotation.
async fn primary_cluster_id(ctx: &Ctx) -> Option<(String, &'static str)> {
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

fn server_of(kc: &[u8]) -> Option<String> {
    kubeconfig::parse_remote_kubeconfig(kc)
        .ok()
        .map(|k| k.server)
}

/// Parses a remote secret's kubeconfig on a blocking thread: parsing is CPU
/// work a peer controls, and on an async worker the step's deadline could
/// not interrupt it. (It is bounded too: see [`kubeconfig::check_shape`].)
async fn parse_off_worker(
    bytes: Vec<u8>,
) -> Result<kubeconfig::RemoteKubeconfig, kubeconfig::KubeconfigError> {
    tokio::task::spawn_blocking(move || kubeconfig::parse_remote_kubeconfig(&bytes))
        .await
        .unwrap_or_else(|e| {
            Err(kubeconfig::KubeconfigError::Load(format!(
                "the parser stopped: {e}"
            )))
        })
}

pub async fn remote_secret(ctx: &Ctx) -> Outcome {
    let mut out = Outcome::new();
    let ns = ctx.opts.istio_namespace.clone();
    let secrets: Api<Secret> = Api::all(ctx.clusters.primary.clone());
    let labelled = match secrets
        .list(&ListParams::default().labels(&format!("{MC_LABEL}=true")))
        .await
    {
        Ok(l) => l.items,
        Err(e) => {
            return out.fail(
                format!(
                    "cannot list Secrets labelled {MC_LABEL}=true in the primary: {}",
                    kube_err(&e)
                ),
                "the --primary context needs list secrets",
            );
        }
    };
    let (here, elsewhere): (Vec<_>, Vec<_>) = labelled
        .into_iter()
        .partition(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()));
    let keys_of = |s: &Secret| -> Vec<String> {
        s.data
            .as_ref()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default()
    };
    out.ev(
        "remote_secrets",
        here.iter()
            .map(|s| json!({"name": s.metadata.name, "keys": keys_of(s)}))
            .collect::<Vec<_>>(),
    );
    let primary_id = primary_cluster_id(ctx).await;
    out.ev(
        "primary_cluster_id",
        primary_id
            .as_ref()
            .map(|(v, src)| json!({"value": v, "source": src})),
    );

    // The cluster ID to look for: the gateway's, else the key whose kubeconfig
    // points at the --remote context's server.
    let mut cluster_id = ctx.facts().cluster_id.clone();
    if cluster_id.is_none() {
        let want = ctx.clusters.remote_server.trim_end_matches('/').to_string();
        let values: Vec<(String, Vec<u8>)> = here
            .iter()
            .flat_map(|s| s.data.iter().flatten())
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        let found = tokio::task::spawn_blocking(move || {
            values.into_iter().rev().find_map(|(k, v)| {
                (server_of(&v).map(|x| x.trim_end_matches('/').to_string()) == Some(want.clone()))
                    .then_some(k)
            })
        })
        .await
        .ok()
        .flatten();
        if let Some(k) = found {
            cluster_id = Some((
                k,
                "remote secret key whose server is the --remote context's",
            ));
        }
    }
    let Some((cid, cid_source)) = cluster_id else {
        if ctx.facts().gateway.is_none() {
            // The gateway's cluster ID is unknown because gateway-pod failed:
            // that is the cause, not a gateway without the setting.
            return out.blocked(
                StepId::GatewayPod,
                format!("no cluster ID to look for: gateway-pod did not pass, and no remote secret in {ns} points at the --remote server {} (pass --cluster-id to trace without it)", ctx.clusters.remote_server),
            );
        }
        return out.fail(
            format!("no cluster ID: the gateway sets none, and no remote secret in {ns} points at the --remote server {}", ctx.clusters.remote_server),
            "pass --cluster-id, or fix the gateway's ISTIO_META_CLUSTER_ID",
        );
    };
    out.ev("cluster_id", json!({"value": cid, "source": cid_source}));
    if ctx.facts().cluster_id.is_none() {
        ctx.facts().cluster_id = Some((cid.clone(), cid_source));
    }

    if let Some((pid, src)) = &primary_id {
        if *pid == cid {
            return out.fail(
                format!(
                    "cluster ID {cid:?} is the primary's own cluster ID ({src}): istiod ignores a remote secret keyed by its own ID (`ignoring cluster as it would overwrite the config cluster`) and checks the gateway's token against the primary"
                ),
                "give the remote cluster its own ID: recreate the remote secret with istioctl create-remote-secret --name=<remote-id> and set the gateway's ISTIO_META_CLUSTER_ID to the same",
            );
        }
    }

    let matching: Vec<&Secret> = here.iter().filter(|s| keys_of(s).contains(&cid)).collect();
    if matching.is_empty() {
        let all_keys: Vec<String> = here.iter().flat_map(keys_of).collect();
        // Look for the near misses a person makes: no label, wrong namespace.
        let plain: Api<Secret> = Api::namespaced(ctx.clusters.primary.clone(), &ns);
        let unlabelled: Vec<String> = match plain.list(&ListParams::default()).await {
            Ok(l) => l
                .items
                .iter()
                .filter(|s| {
                    keys_of(s).contains(&cid)
                        && s.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(MC_LABEL))
                            .map(String::as_str)
                            != Some("true")
                })
                .filter_map(|s| s.metadata.name.clone())
                .collect(),
            Err(_) => vec![],
        };
        let misplaced: Vec<String> = elsewhere
            .iter()
            .filter(|s| keys_of(s).contains(&cid))
            .map(|s| {
                format!(
                    "{}/{}",
                    s.metadata.namespace.clone().unwrap_or_default(),
                    s.metadata.name.clone().unwrap_or_default()
                )
            })
            .collect();
        if let Some(name) = unlabelled.first() {
            return out.fail(
                format!("Secret {ns}/{name} holds key {cid:?} but is not labelled {MC_LABEL}=true, so istiod never reads it"),
                format!("kubectl --context <primary> -n {ns} label secret {name} {MC_LABEL}=true"),
            );
        }
        if let Some(place) = misplaced.first() {
            return out.fail(
                format!("the remote secret for {cid:?} is {place}, but istiod only watches namespace {ns:?}"),
                format!("recreate it in {ns}: istioctl create-remote-secret --context=<remote> --name={cid} | kubectl apply --context=<primary> -f -"),
            );
        }
        if all_keys.is_empty() {
            return out.fail(
                format!("no remote secret in {ns} of the primary (no Secret labelled {MC_LABEL}=true): istiod knows no remote cluster; the gateway gets `request authenticate failure` and istiod logs `client claims to be in cluster {cid:?}, but we only know about local cluster ...`"),
                format!("istioctl create-remote-secret --context=<remote> --name={cid} | kubectl apply --context=<primary> -f -"),
            );
        }
        return out.fail(
            format!(
                "no remote secret has data key {cid:?} ({cid_source}); keys found: {}. The gateway gets `request authenticate failure`; istiod logs `client claims to be in cluster {cid:?}, but we only know about local cluster ... and remote clusters [{}]`",
                quote_list(&all_keys),
                all_keys.join(" ")
            ),
            format!(
                "make them equal: recreate the secret with istioctl create-remote-secret --name={cid}, or set the gateway's ISTIO_META_CLUSTER_ID to one of {}",
                quote_list(&all_keys)
            ),
        );
    }
    let chosen = matching[0];
    let name = chosen.metadata.name.clone().unwrap_or_default();
    let kc = chosen
        .data
        .as_ref()
        .and_then(|d| d.get(&cid))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    out.ev("secret", format!("{ns}/{name}"))
        .ev("key", &cid)
        .ev("kubeconfig_bytes", kc.len());
    if let Some(a) = chosen
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("networking.istio.io/cluster"))
    {
        out.ev("annotation_networking.istio.io/cluster", a);
    }
    ctx.facts().remote_secret = Some(RemoteSecretFacts {
        namespace: ns.clone(),
        name: name.clone(),
        key: cid.clone(),
        kubeconfig: kc,
    });
    if matching.len() > 1 {
        let names: Vec<String> = matching
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        return out.warn(
            format!("{} Secrets hold key {cid:?}: {}; istiod registers one and logs `cluster has already been registered` for the others", names.len(), quote_list(&names)),
            "delete the stale duplicates so the kubeconfig istiod uses is the one you expect",
        );
    }
    out.pass()
}

pub async fn remote_kubeconfig(ctx: &Ctx) -> Outcome {
    let Some(sec) = ctx.facts().remote_secret.clone() else {
        return Outcome::new().blocked(StepId::RemoteSecret, "no remote secret");
    };
    let mut out = Outcome::new();
    out.ev("secret", format!("{}/{}", sec.namespace, sec.name))
        .ev("key", &sec.key);
    let kc = match parse_off_worker(sec.kubeconfig.clone()).await {
        Ok(k) => k,
        Err(e) => {
            let fix = match e {
                kubeconfig::KubeconfigError::NotAllowed(_) => {
                    "use inline credentials (token or client-certificate-data) instead of exec plugins and file paths; istioctl create-remote-secret writes such a kubeconfig"
                }
                _ => {
                    "recreate the secret: istioctl create-remote-secret --context=<remote> --name=<id> | kubectl apply --context=<primary> -f -"
                }
            };
            return out.fail(
                format!(
                    "istiod rejects the kubeconfig in {}/{} key {:?}: {e}. (If this secret was valid before and was edited since, a running istiod keeps the earlier cluster until it restarts: the break shows at the next restart.)",
                    sec.namespace, sec.name, sec.key
                ),
                fix,
            );
        }
    };
    // Held before anything dials with them: a server that echoes them back is redacted.
    for a in kc
        .raw
        .auth_infos
        .iter()
        .filter_map(|a| a.auth_info.as_ref())
    {
        for s in kubeconfig::inline_secrets(a) {
            ctx.secrets.add(&s);
        }
    }
    if let Credential::Token(t) = &kc.credential {
        ctx.secrets.add(t.expose());
    }
    out.ev("context", &kc.context)
        .ev("cluster", &kc.cluster_name)
        .ev("user", &kc.user_name)
        .ev("server", &kc.server)
        .ev("tls_server_name", &kc.tls_server_name);
    if let Some(ca) = &kc.ca_data_pem {
        match x509::parse_pem_chain(ca) {
            Ok(certs) => {
                out.ev(
                    "certificate_authority",
                    certs.iter().map(|c| c.evidence()).collect::<Vec<_>>(),
                );
            }
            Err(e) => {
                return out.fail(
                    format!("certificate-authority-data is not a PEM certificate: {e}"),
                    "set certificate-authority-data to the base64 of the remote API server's CA (kubectl config view --raw --minify --context <remote>)",
                );
            }
        }
    }
    let cred = match &kc.credential {
        Credential::Token(t) => match jwt::decode(t.expose()) {
            Ok(j) => json!({"type": "token", "token": j.evidence()}),
            Err(_) => {
                json!({"type": "token", "fingerprint": jwt::fingerprint(t.expose()), "format": "opaque (not a JWT)"})
            }
        },
        Credential::ClientCertData { cert_pem } => {
            let info = x509::parse_pem_chain(cert_pem)
                .ok()
                .and_then(|c| c.into_iter().next())
                .map(|c| c.evidence());
            json!({"type": "client-certificate-data", "certificate": info})
        }
        Credential::OidcAuthProvider => json!({"type": "oidc auth-provider"}),
        Credential::None => json!({"type": "none"}),
    };
    out.ev("credential", cred);
    let no_cred = matches!(kc.credential, Credential::None);
    ctx.facts().kubeconfig = Some(kc);
    if no_cred {
        return out.fail(
            "the kubeconfig carries no credential (no token, no client certificate): istiod would reach the remote API server anonymously",
            "recreate the secret with istioctl create-remote-secret, which writes the reader service account's token",
        );
    }
    out.pass()
}
