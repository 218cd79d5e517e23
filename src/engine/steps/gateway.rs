//! The remote gateway: its pod settings, its istio-ca token, its network.

use super::{api_code, kube_err};
use crate::engine::facts::{GatewayFacts, Sensitive};
use crate::engine::{Ctx, Outcome};
use crate::inspect::jwt;
use crate::model::StepId;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const GATEWAY_LABELS: &[&str] = &[
    "istio=eastwestgateway",
    "istio=ingressgateway",
    "app=istio-eastwestgateway",
];

async fn find_gateway(ctx: &Ctx) -> Result<Pod, Outcome> {
    let client = ctx.clusters.remote.clone();
    if let Some(spec) = &ctx.opts.gateway {
        let Some((ns, name)) = spec.split_once('/') else {
            return Err(Outcome::new().fail(
                format!("--gateway {spec:?} is not NAMESPACE/NAME"),
                "pass --gateway istio-system/istio-eastwestgateway (a pod or deployment)",
            ));
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        match pods.get_opt(name).await {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => {
                return Err(Outcome::new().fail(
                    format!(
                        "cannot read pod {ns}/{name} in the remote: {}",
                        kube_err(&e)
                    ),
                    "check the --remote context's access",
                ));
            }
        }
        let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let dep = match deps.get_opt(name).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                return Err(Outcome::new().fail(
                    format!("--gateway {spec:?}: no pod or deployment {name:?} in namespace {ns:?} of the remote"),
                    format!("kubectl --context <remote> get pods,deployments -n {ns}"),
                ));
            }
            Err(e) => {
                return Err(Outcome::new().fail(
                    format!("cannot read deployment {ns}/{name}: {}", kube_err(&e)),
                    "check the --remote context's access",
                ));
            }
        };
        let selector = dep
            .spec
            .selector
            .match_labels
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| {
                Outcome::new().fail(
                    format!("cannot list pods of deployment {spec}: {}", kube_err(&e)),
                    "check the --remote context's access",
                )
            })?;
        return list.items.into_iter().next().ok_or_else(|| {
            Outcome::new().fail(
                format!("deployment {spec} has no pods (selector {selector:?})"),
                format!("kubectl --context <remote> -n {ns} describe deployment {name}"),
            )
        });
    }
    let all: Api<Pod> = Api::all(client);
    for sel in GATEWAY_LABELS {
        match all.list(&ListParams::default().labels(sel)).await {
            Ok(list) => {
                let mut items = list.items;
                // Prefer the istio namespace, then name order, so runs are stable.
                items.sort_by_key(|p| {
                    (
                        p.metadata.namespace.as_deref() != Some(ctx.opts.istio_namespace.as_str()),
                        p.metadata.name.clone(),
                    )
                });
                if let Some(p) = items.into_iter().next() {
                    return Ok(p);
                }
            }
            Err(e) => {
                return Err(Outcome::new().fail(
                    format!("cannot list pods in the remote: {}", kube_err(&e)),
                    "the --remote context needs list pods cluster-wide, or pass --gateway NS/NAME",
                ));
            }
        }
    }
    Err(Outcome::new().fail(
        format!(
            "no gateway pod in the remote: no pod labelled {}",
            GATEWAY_LABELS.join(" or ")
        ),
        "pass --gateway NAMESPACE/NAME of the east-west or ingress gateway",
    ))
}

pub async fn gateway_pod(ctx: &Ctx) -> Outcome {
    let pod = match find_gateway(ctx).await {
        Ok(p) => p,
        Err(o) => return o,
    };
    let mut out = Outcome::new();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let sa = spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".into());
    let container = spec
        .containers
        .iter()
        .find(|c| c.name == "istio-proxy")
        .or_else(|| spec.containers.first())
        .cloned()
        .unwrap_or_default();
    let env = |k: &str| -> Option<String> {
        container
            .env
            .as_ref()?
            .iter()
            .find(|e| e.name == k)
            .and_then(|e| e.value.clone())
    };
    let projected = spec.volumes.as_ref().and_then(|vs| {
        vs.iter().find(|v| v.name == "istio-token").map(|v| {
            let sat = v
                .projected
                .as_ref()
                .and_then(|p| p.sources.as_ref())
                .and_then(|s| s.iter().find_map(|src| src.service_account_token.clone()));
            (
                sat.as_ref().and_then(|t| t.audience.clone()),
                sat.and_then(|t| t.expiration_seconds),
            )
        })
    });
    let facts = GatewayFacts {
        namespace: ns.clone(),
        pod: name.clone(),
        pod_uid: pod.metadata.uid.clone(),
        service_account: sa.clone(),
        cluster_id: env("ISTIO_META_CLUSTER_ID"),
        ca_addr: env("CA_ADDR"),
        network: env("ISTIO_META_NETWORK"),
        trust_domain: env("TRUST_DOMAIN"),
        istiod_san: env("ISTIOD_SAN"),
        projected_token: projected.clone(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
    };
    out.ev("pod", format!("{ns}/{name}"))
        .ev("phase", pod.status.as_ref().and_then(|s| s.phase.clone()))
        .ev("service_account", &sa)
        .ev("ISTIO_META_CLUSTER_ID", &facts.cluster_id)
        .ev("CA_ADDR", &facts.ca_addr)
        .ev("ISTIO_META_NETWORK", &facts.network)
        .ev("TRUST_DOMAIN", &facts.trust_domain)
        .ev("PILOT_CERT_PROVIDER", env("PILOT_CERT_PROVIDER"))
        .ev(
            "istio_token_volume",
            projected
                .as_ref()
                .map(|(aud, exp)| json!({"audience": aud, "expirationSeconds": exp})),
        );
    let cluster_id = match (&ctx.opts.cluster_id, &facts.cluster_id) {
        (Some(flag), _) => Some((flag.clone(), "--cluster-id")),
        (None, Some(env)) => Some((env.clone(), "gateway env ISTIO_META_CLUSTER_ID")),
        (None, None) => None,
    };
    {
        let mut f = ctx.facts();
        f.cluster_id = cluster_id.clone();
        f.gateway = Some(facts.clone());
    }
    match cluster_id {
        Some((id, source)) => {
            out.ev("cluster_id", json!({"value": id, "source": source}));
            out.pass()
        }
        None => out.fail(
            format!(
                "gateway {ns}/{name} has no ISTIO_META_CLUSTER_ID, so it sends an empty clusterid and istiod checks its token against the primary cluster, not this one"
            ),
            "inject the gateway with the remote's cluster ID (istioctl install --set values.global.multiCluster.clusterName=<remote-id>), or pass --cluster-id to trace as if it were set",
        ),
    }
}

/// The shortest token lifetime the TokenRequest API accepts.
pub const TOKEN_REQUEST_SECONDS: i64 = 600;

pub async fn gateway_token(ctx: &Ctx) -> Outcome {
    let Some(gw) = ctx.facts().gateway.clone() else {
        return Outcome::new().blocked(StepId::GatewayPod, "no gateway pod");
    };
    let mut out = Outcome::new();
    let want = ctx.opts.token_audience.clone();
    let audience = gw.projected_token.as_ref().and_then(|(aud, _)| aud.clone());
    out.ev(
        "service_account",
        format!("{}/{}", gw.namespace, gw.service_account),
    );
    // Ask for the token the kubelet would project: same audience, bound to the
    // pod; but for the shortest lifetime the API allows, so a run leaves no
    // long-lived credential behind (docs/security.md#what-meshtrace-creates).
    let audiences = audience.clone().map(|a| vec![a]).unwrap_or_default();
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audiences.clone()),
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
    let token = match resp {
        Ok(tr) => tr.status.and_then(|s| s.token).unwrap_or_default(),
        Err(e) if api_code(&e) == Some(404) => {
            return out.fail(
                format!(
                    "TokenRequest for service account {}/{} failed: {} — the gateway's service account (or its pod) no longer exists, so no token can be issued",
                    gw.namespace,
                    gw.service_account,
                    kube_err(&e)
                ),
                format!(
                    "recreate the service account: kubectl --context <remote> -n {} create serviceaccount {} (then restart the gateway)",
                    gw.namespace, gw.service_account
                ),
            );
        }
        Err(e) => {
            return out.fail(
                format!("TokenRequest for {}/{} failed: {}", gw.namespace, gw.service_account, kube_err(&e)),
                "the --remote context needs create serviceaccounts/token in the gateway's namespace",
            );
        }
    };
    ctx.secrets.add(&token);
    match jwt::decode(&token) {
        Ok(summary) => {
            out.ev("token", summary.evidence());
        }
        Err(e) => {
            return out.fail(
                format!("the API server returned a token that is not a JWT: {e}"),
                "check the remote API server's service-account issuer settings",
            );
        }
    }
    ctx.facts().gateway_token = Some(Sensitive(token));

    match (&gw.projected_token, audience) {
        (None, _) => out.fail(
            format!(
                "gateway {}/{} has no projected `istio-token` volume: istio-agent has no token for audience {want:?} (with the default third-party-jwt policy there is no token file at all; with first-party-jwt it sends the pod's default token, whose audience is the API server's, and istiod's TokenReview for {want:?} rejects it)",
                gw.namespace, gw.pod
            ),
            format!(
                "add the projected volume: name istio-token, serviceAccountToken {{audience: {want}, expirationSeconds: 43200, path: istio-token}} mounted at /var/run/secrets/tokens (re-inject the gateway)"
            ),
        ),
        (Some(_), Some(a)) if a == want => {
            out.ev("audience", &a);
            out.pass()
        }
        (Some(_), a) => out.fail(
            format!(
                "the gateway's istio-token volume asks for audience {:?}, but istiod's TokenReview asks for {want:?}: the API server will answer `token audiences [{:?}] is invalid for the target audiences [{want:?}]`",
                a.clone().unwrap_or_default(),
                a.unwrap_or_default()
            ),
            format!("set serviceAccountToken.audience: {want} on the istio-token volume of {}/{} (or istiod's TOKEN_AUDIENCES to match)", gw.namespace, gw.pod),
        ),
    }
}

pub async fn network_labels(ctx: &Ctx) -> Outcome {
    let Some(gw) = ctx.facts().gateway.clone() else {
        return Outcome::new().blocked(StepId::GatewayPod, "no gateway pod");
    };
    let label = "topology.istio.io/network";
    let mut out = Outcome::new();
    let remote = ctx.clusters.remote.clone();
    let ns_api: Api<Namespace> = Api::all(remote.clone());
    let ns_label = match ns_api.get_opt(&ctx.opts.istio_namespace).await {
        Ok(n) => n.and_then(|n| n.metadata.labels.and_then(|l| l.get(label).cloned())),
        Err(e) => {
            return out.fail(
                format!(
                    "cannot read namespace {}: {}",
                    ctx.opts.istio_namespace,
                    kube_err(&e)
                ),
                "check the --remote context's access",
            );
        }
    };
    let svc_api: Api<Service> = Api::namespaced(remote, &gw.namespace);
    let mut svc_labels = Vec::new();
    if let Ok(list) = svc_api.list(&ListParams::default()).await {
        for s in list.items {
            let sel = s
                .spec
                .as_ref()
                .and_then(|sp| sp.selector.clone())
                .unwrap_or_default();
            let selects_gw =
                !sel.is_empty() && sel.iter().all(|(k, v)| gw.labels.get(k) == Some(v));
            if selects_gw {
                let l = s
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(label).cloned());
                svc_labels.push((s.metadata.name.clone().unwrap_or_default(), l));
            }
        }
    }
    let pod_label = gw.labels.get(label).cloned();
    out.ev(
        "namespace_label",
        json!({"namespace": ctx.opts.istio_namespace, "value": ns_label}),
    )
    .ev("gateway_pod_label", &pod_label)
    .ev("gateway_env_ISTIO_META_NETWORK", &gw.network)
    .ev(
        "gateway_services",
        svc_labels
            .iter()
            .map(|(n, l)| json!({"service": n, "value": l}))
            .collect::<Vec<_>>(),
    );
    let mut seen: Vec<(String, String)> = Vec::new();
    if let Some(v) = &ns_label {
        seen.push((
            format!("namespace {} label", ctx.opts.istio_namespace),
            v.clone(),
        ));
    }
    if let Some(v) = &pod_label {
        seen.push(("gateway pod label".into(), v.clone()));
    }
    if let Some(v) = &gw.network {
        seen.push(("gateway env ISTIO_META_NETWORK".into(), v.clone()));
    }
    for (n, l) in &svc_labels {
        if let Some(v) = l {
            seen.push((format!("service {n} label"), v.clone()));
        }
    }
    let first = seen.first().map(|(_, v)| v.clone());
    let disagree: Vec<_> = seen
        .iter()
        .filter(|(_, v)| Some(v) != first.as_ref())
        .collect();
    if seen.is_empty() {
        out.ev("note", "no network labels: a single-network mesh");
        return out.pass();
    }
    if disagree.is_empty() {
        out.ev("network", &first);
        return out.pass();
    }
    let all = seen
        .iter()
        .map(|(w, v)| format!("{w} = {v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    out.warn(
        format!("network names disagree: {all}; cross-network traffic through this gateway will be routed as the wrong network"),
        format!("make them equal: kubectl --context <remote> label namespace {} {label}=<network> --overwrite, and the same on the gateway Service and ISTIO_META_NETWORK", ctx.opts.istio_namespace),
    )
}
