//! gateway-pod: the remote gateway's pod, the Deployment that owns it, and
//! the settings istio-agent sends istiod with its CSR (`ISTIO_META_CLUSTER_ID`
//! becomes the `clusterid` metadata istiod picks the cluster by).

use super::gateway::{kubectl_remote_ns, name_of, template_container};
use super::{Settings, kube_err};
use crate::engine::facts::GatewayFacts;
use crate::engine::{Ctx, Outcome};
use crate::findings::{Finding, shell_word};
use crate::inspect::kubeconfig;
use crate::model::StepId;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use serde_json::json;

crate::causes! { StepId::GatewayPod;
    NO_CLUSTER_ID = "no-cluster-id", "the gateway sets no ISTIO_META_CLUSTER_ID, so istiod checks its token at the primary";
    NO_GATEWAY = "no-gateway", "no pod in the remote carries a gateway label";
    BAD_GATEWAY_FLAG = "bad-gateway-flag", "--gateway is not NAMESPACE/NAME";
    GATEWAY_NOT_FOUND = "gateway-not-found", "--gateway names no pod or deployment of the remote";
    NO_PODS = "deployment-has-no-pods", "the gateway's Deployment has no pods";
    READ_REFUSED = "read-refused", "the remote API server refused to show the gateway to the --remote context";
}

/// The labels a gateway pod is looked up by, in order.
const GATEWAY_LABELS: &[&str] = &[
    "istio=eastwestgateway",
    "istio=ingressgateway",
    "app=istio-eastwestgateway",
];

const MC_LABEL: &str = "istio/multiCluster";

/// What gather saw.
#[derive(Debug, Clone)]
pub struct GatewayPodFacts {
    pub lookup: Lookup,
    /// The Deployment that owns the pod (Pod → ReplicaSet → Deployment), or
    /// why there is none.
    pub deployment: Result<Box<Deployment>, String>,
    /// `--cluster-id`.
    pub cluster_id_flag: Option<String>,
    /// The `--remote` context's API server.
    pub remote_server: String,
    /// The primary's remote secrets whose kubeconfig points at the `--remote`
    /// server, as (secret, data key): their keys are this cluster's ID as
    /// istiod knows it. Looked up only when the gateway sets no cluster ID.
    pub remote_secret_keys: Option<Result<Vec<(String, String)>, String>>,
}

#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Box<Pod>),
    /// `--gateway` as given, not `NS/NAME`.
    BadFlag(String),
    /// `--gateway NS/NAME` names neither a pod nor a deployment.
    Missing {
        namespace: String,
        name: String,
    },
    NoPods {
        deployment: Box<Deployment>,
        selector: String,
    },
    /// No pod carries any of [`GATEWAY_LABELS`].
    NoneLabelled,
    Refused {
        what: String,
        error: String,
        /// The refused call was the cluster-wide pod list.
        cluster_wide: bool,
    },
}

fn refused(what: String, e: &kube::Error, cluster_wide: bool) -> Lookup {
    Lookup::Refused {
        what,
        error: kube_err(e),
        cluster_wide,
    }
}

fn selector_of(d: &Deployment) -> String {
    d.spec
        .selector
        .match_labels
        .as_ref()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

async fn find_gateway(ctx: &Ctx) -> (Lookup, Option<Deployment>) {
    let client = ctx.clusters.remote.clone();
    if let Some(spec) = &ctx.opts.gateway {
        let Some((ns, name)) = spec
            .split_once('/')
            .filter(|(n, m)| !n.is_empty() && !m.is_empty() && !m.contains('/'))
        else {
            return (Lookup::BadFlag(spec.clone()), None);
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        match pods.get_opt(name).await {
            Ok(Some(p)) => return (Lookup::Found(Box::new(p)), None),
            Ok(None) => {}
            Err(e) => return (refused(format!("get pod {ns}/{name}"), &e, false), None),
        }
        let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let dep = match deps.get_opt(name).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                let missing = Lookup::Missing {
                    namespace: ns.into(),
                    name: name.into(),
                };
                return (missing, None);
            }
            Err(e) => {
                return (
                    refused(format!("get deployment {ns}/{name}"), &e, false),
                    None,
                );
            }
        };
        let selector = selector_of(&dep);
        return match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => match list.items.into_iter().next() {
                Some(p) => (Lookup::Found(Box::new(p)), Some(dep)),
                None => (
                    Lookup::NoPods {
                        deployment: Box::new(dep),
                        selector,
                    },
                    None,
                ),
            },
            Err(e) => (
                refused(format!("list the pods of deployment {spec}"), &e, false),
                None,
            ),
        };
    }
    // The usual place first: the first selector's pods in the Istio
    // namespace are the pick whatever the other lists hold (a selector
    // outranks a namespace, and the Istio namespace comes first within one).
    let in_ns: Api<Pod> = Api::namespaced(client.clone(), &ctx.opts.istio_namespace);
    if let Ok(list) = in_ns
        .list(&ListParams::default().labels(GATEWAY_LABELS[0]))
        .await
        && let Some(p) = list
            .items
            .into_iter()
            .min_by(|a, b| a.metadata.name.cmp(&b.metadata.name))
    {
        return (Lookup::Found(Box::new(p)), None);
    }
    let all: Api<Pod> = Api::all(client);
    // Else every selector at once (one round trip, not one per selector);
    // the answers are then taken in GATEWAY_LABELS' order, as before.
    let params: Vec<ListParams> = GATEWAY_LABELS
        .iter()
        .map(|sel| ListParams::default().labels(sel))
        .collect();
    let lists = futures::future::join_all(params.iter().map(|p| all.list(p))).await;
    for answer in lists {
        match answer {
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
                    return (Lookup::Found(Box::new(p)), None);
                }
            }
            Err(e) => {
                return (
                    refused("list pods in all namespaces".into(), &e, true),
                    None,
                );
            }
        }
    }
    (Lookup::NoneLabelled, None)
}

/// The Deployment that controls `pod`: its ReplicaSet's owner. When the
/// ReplicaSet cannot be read, the name a Deployment gives its ReplicaSets
/// (`<deployment>-<pod-template-hash>`) says which Deployment to read.
async fn owner_deployment(ctx: &Ctx, pod: &Pod) -> Result<Box<Deployment>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let owners = pod.metadata.owner_references.clone().unwrap_or_default();
    let controller = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or(owners.first());
    let rs_name = match controller {
        Some(o) if o.kind == "ReplicaSet" => o.name.clone(),
        Some(o) => return Err(format!("the pod's owner is {} {}", o.kind, o.name)),
        None => return Err("the pod has no owner".into()),
    };
    let client = ctx.clusters.remote.clone();
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let dep_name = match rs_api.get_opt(&rs_name).await {
        Ok(Some(rs)) => {
            let owners = rs.metadata.owner_references.unwrap_or_default();
            match owners.iter().find(|o| o.kind == "Deployment") {
                Some(o) => o.name.clone(),
                None => return Err(format!("ReplicaSet {rs_name} has no Deployment")),
            }
        }
        other => {
            let hash = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"));
            match hash.and_then(|h| rs_name.strip_suffix(&format!("-{h}"))) {
                Some(n) => n.to_string(),
                None => {
                    return Err(match other {
                        Err(e) => format!("cannot read ReplicaSet {rs_name}: {}", kube_err(&e)),
                        _ => format!("ReplicaSet {rs_name} does not exist"),
                    });
                }
            }
        }
    };
    let deps: Api<Deployment> = Api::namespaced(client, &ns);
    let dep = match deps.get_opt(&dep_name).await {
        Ok(Some(d)) => d,
        Ok(None) => return Err(format!("deployment {ns}/{dep_name} does not exist")),
        Err(e) => {
            return Err(format!(
                "cannot read deployment {ns}/{dep_name}: {}",
                kube_err(&e)
            ));
        }
    };
    // Only a Deployment that selects the pod owns it.
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let selects = dep
        .spec
        .selector
        .match_labels
        .as_ref()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    if !selects {
        return Err(format!(
            "deployment {ns}/{dep_name} does not select the pod"
        ));
    }
    Ok(Box::new(dep))
}

/// The primary's remote secrets (in the Istio namespace, labelled as istiod
/// reads them) whose kubeconfig's server is the `--remote` context's.
async fn remote_secret_keys(ctx: &Ctx) -> Result<Vec<(String, String)>, String> {
    let api: Api<Secret> = Api::namespaced(ctx.clusters.primary.clone(), &ctx.opts.istio_namespace);
    let list = api
        .list(&ListParams::default().labels(&format!("{MC_LABEL}=true")))
        .await
        .map_err(|e| format!("cannot list the primary's remote secrets: {}", kube_err(&e)))?;
    let want = ctx.clusters.remote_server.trim_end_matches('/').to_string();
    let values: Vec<(String, String, Vec<u8>)> = list
        .items
        .into_iter()
        .flat_map(|s| {
            let name = s.metadata.name.clone().unwrap_or_default();
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(move |(k, v)| (name.clone(), k, v.0))
        })
        .collect();
    // Parsing is CPU work a peer controls: off the async workers.
    tokio::task::spawn_blocking(move || {
        values
            .into_iter()
            .filter(|(_, _, v)| {
                kubeconfig::parse_remote_kubeconfig(v)
                    .is_ok_and(|k| k.server.trim_end_matches('/') == want)
            })
            .map(|(n, k, _)| (n, k))
            .collect()
    })
    .await
    .map_err(|e| format!("the kubeconfig parser stopped: {e}"))
}

pub async fn gather(ctx: &Ctx) -> GatewayPodFacts {
    let (lookup, named_deployment) = find_gateway(ctx).await;
    let mut facts = GatewayPodFacts {
        lookup,
        deployment: Err("no gateway pod".into()),
        cluster_id_flag: ctx.opts.cluster_id.clone(),
        remote_server: ctx.clusters.remote_server.clone(),
        remote_secret_keys: None,
    };
    let Lookup::Found(pod) = &facts.lookup else {
        return facts;
    };
    let pod = pod.clone();
    facts.deployment = match named_deployment {
        Some(d) => Ok(Box::new(d)),
        None => owner_deployment(ctx, &pod).await,
    };
    let gw = gateway_facts(&pod, None);
    if facts.cluster_id_flag.is_none() && gw.cluster_id.is_none() {
        facts.remote_secret_keys = Some(remote_secret_keys(ctx).await);
    }
    facts
}

/// What later steps read about the gateway, from its pod.
pub fn gateway_facts(pod: &Pod, deployment: Option<&Deployment>) -> GatewayFacts {
    let spec = pod.spec.clone().unwrap_or_default();
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
            // Kubernetes gives the process the last entry of a name.
            .rev()
            .find(|e| e.name == k)
            .and_then(|e| e.value.clone())
    };
    // The agent treats an empty value as unset for these (`if x == ""` in
    // pilot/cmd/pilot-agent/options/security.go and agent.go).
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let revision = labels
        .get("istio.io/rev")
        .filter(|r| !r.is_empty())
        .map(|r| {
            (
                r.clone(),
                "label istio.io/rev of the gateway's pod".to_string(),
            )
        })
        .or_else(|| {
            let st = annotations.get("sidecar.istio.io/status")?;
            let v = serde_json::from_str::<serde_json::Value>(st).ok()?;
            let r = v.get("revision")?.as_str()?.to_string();
            (!r.is_empty()).then(|| {
                (
                    r,
                    "the revision its injector recorded (sidecar.istio.io/status)".to_string(),
                )
            })
        });
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
    // The injector records what it added; its own volumes win over the pod's.
    let injected_volumes = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("sidecar.istio.io/status"))
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| {
            v.get("volumes")?.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    let agent_env = agent_env(pod, &container);
    let proxy_type = container
        .args
        .iter()
        .flatten()
        .skip_while(|a| *a != "proxy")
        .nth(1)
        .filter(|t| ["sidecar", "router"].contains(&t.as_str()))
        .cloned()
        // meshtrace traces gateways: `proxy router` (the gateway injection template).
        .unwrap_or_else(|| "router".into());
    GatewayFacts {
        agent_env,
        pod_ip: pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty()),
        proxy_type,
        image: container.image.clone(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        pod: pod.metadata.name.clone().unwrap_or_default(),
        pod_uid: pod.metadata.uid.clone(),
        service_account: spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        // istiod treats an empty clusterid as none (kube_jwt.go getKubeClient).
        cluster_id: env("ISTIO_META_CLUSTER_ID").filter(|v| !v.is_empty()),
        ca_addr: set("CA_ADDR"),
        network: env("ISTIO_META_NETWORK"),
        trust_domain: set("TRUST_DOMAIN"),
        istiod_san: set("ISTIOD_SAN"),
        projected_token: projected,
        revision,
        proxy_config_env: set("PROXY_CONFIG"),
        proxy_config_annotation: annotations.get("proxy.istio.io/config").cloned(),
        ca_root_ca: set("CA_ROOT_CA"),
        labels,
        container: container.name.clone(),
        injected_volumes,
        deployment: deployment.cloned(),
    }
}

/// The container's env as the agent's process sees it: the last entry of
/// each name, a `value` as written, a `fieldRef` resolved from the pod (the
/// downward API fields the injector uses); secret and ConfigMap references
/// are left out (meshtrace does not read them).
pub fn agent_env(
    pod: &Pod,
    container: &k8s_openapi::api::core::v1::Container,
) -> std::collections::BTreeMap<String, String> {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let field = |path: &str| -> Option<String> {
        match path {
            "metadata.name" => pod.metadata.name.clone(),
            "metadata.namespace" => pod.metadata.namespace.clone(),
            "metadata.uid" => pod.metadata.uid.clone(),
            "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
            "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
            "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
            "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
            p => {
                let key = p
                    .strip_prefix("metadata.labels['")
                    .and_then(|k| k.strip_suffix("']"))?;
                pod.metadata.labels.as_ref()?.get(key).cloned()
            }
        }
    };
    let mut out = std::collections::BTreeMap::new();
    for e in container.env.iter().flatten() {
        let v = match (&e.value, &e.value_from) {
            (_, Some(from)) => from.field_ref.as_ref().and_then(|f| field(&f.field_path)),
            (Some(v), None) => Some(v.clone()),
            (None, None) => Some(String::new()),
        };
        match v {
            Some(v) => {
                out.insert(e.name.clone(), v);
            }
            // A later entry that meshtrace cannot resolve still hides an earlier one.
            None => {
                out.remove(&e.name);
            }
        }
    }
    out
}

/// The cluster ID the rest of the trace uses, and where it came from.
fn cluster_id_of(flag: &Option<String>, gw: &GatewayFacts) -> Option<(String, &'static str)> {
    match (flag, &gw.cluster_id) {
        (Some(flag), _) => Some((flag.clone(), "--cluster-id")),
        (None, Some(env)) => Some((env.clone(), "gateway env ISTIO_META_CLUSTER_ID")),
        (None, None) => None,
    }
}

pub fn judge(f: &GatewayPodFacts, s: &Settings) -> Outcome {
    let pod = match &f.lookup {
        Lookup::Found(p) => p,
        other => return lookup_failure(other, s),
    };
    let gw = gateway_facts(pod, f.deployment.as_deref().ok());
    let env = |k: &str| -> Option<String> {
        pod.spec
            .as_ref()?
            .containers
            .iter()
            .find(|c| c.name == gw.container)?
            .env
            .as_ref()?
            .iter()
            .find(|e| e.name == k)?
            .value
            .clone()
    };
    let mut out = Outcome::new();
    out.ev("pod", format!("{}/{}", gw.namespace, gw.pod))
        .ev("phase", pod.status.as_ref().and_then(|s| s.phase.clone()))
        .ev(
            "deployment",
            f.deployment.as_ref().ok().map(|d| name_of(d).to_string()),
        )
        .ev("service_account", &gw.service_account)
        .ev("ISTIO_META_CLUSTER_ID", env("ISTIO_META_CLUSTER_ID"))
        .ev("CA_ADDR", &gw.ca_addr)
        .ev("ISTIO_META_NETWORK", &gw.network)
        .ev("TRUST_DOMAIN", &gw.trust_domain)
        .ev("PILOT_CERT_PROVIDER", env("PILOT_CERT_PROVIDER"))
        .ev(
            "istio_token_volume",
            gw.projected_token
                .as_ref()
                .map(|(aud, exp)| json!({"audience": aud, "expirationSeconds": exp})),
        );
    match cluster_id_of(&f.cluster_id_flag, &gw) {
        Some((id, source)) => {
            out.ev("cluster_id", json!({"value": id, "source": source}));
            out.pass()
        }
        None => no_cluster_id(out, f, &gw, env("ISTIO_META_CLUSTER_ID").is_some(), s),
    }
}

fn no_cluster_id(
    out: Outcome,
    f: &GatewayPodFacts,
    gw: &GatewayFacts,
    set_empty: bool,
    s: &Settings,
) -> Outcome {
    let (ns, pod) = (&gw.namespace, &gw.pod);
    // The remote's cluster ID as istiod knows it: the key of the remote
    // secret that points at this cluster, when exactly one does.
    let mut keys: Vec<&(String, String)> = match &f.remote_secret_keys {
        Some(Ok(k)) => k.iter().collect(),
        _ => vec![],
    };
    keys.sort_by(|a, b| a.1.cmp(&b.1));
    keys.dedup_by(|a, b| a.1 == b.1);
    let id = match keys.as_slice() {
        [one] => Some(one),
        _ => None,
    };
    let expected = match id {
        Some((secret, key)) => format!("{key:?} (the key of remote secret {secret})"),
        None => "the remote's cluster ID".into(),
    };
    let diagnosis = format!(
        "ISTIO_META_CLUSTER_ID of container {} is {}: the gateway sends no clusterid and istiod reviews its token at the primary's API server; expected {expected}",
        gw.container,
        if set_empty { "empty" } else { "unset" }
    );
    let finding = Finding::new(
        &NO_CLUSTER_ID,
        format!("gateway {ns}/{pod} sets no ISTIO_META_CLUSTER_ID"),
    );
    let dep = f.deployment.as_ref().map_err(String::clone).and_then(|d| {
        match template_container(d, &gw.container) {
            Some(_) => Ok(d),
            None => Err(format!(
                "deployment {} has no container {} in its template (the injector adds it)",
                name_of(d),
                gw.container
            )),
        }
    });
    let finding = match (id, dep) {
        (Some((_, key)), Ok(d)) => finding
            .command(format!(
                "{} set env deployment/{} -c {} ISTIO_META_CLUSTER_ID={}",
                kubectl_remote_ns(s, ns),
                shell_word(name_of(d)),
                shell_word(&gw.container),
                shell_word(key)
            ))
            .note(format!(
                "Sets the cluster ID on the gateway's Deployment, which rolls out new pods. The durable fix is the remote's install: values.global.multiCluster.clusterName={key} (istioctl install --set values.global.multiCluster.clusterName={key}, or the gateway chart's values), or its next upgrade removes the env. --cluster-id {key} traces as if it were set."
            )),
        (Some((_, key)), Err(why)) => finding.note(format!(
            "meshtrace has no Deployment to change ({why}): set ISTIO_META_CLUSTER_ID={key} where the gateway is defined, best through the remote's install (values.global.multiCluster.clusterName={key}), then recreate the pod. --cluster-id {key} traces as if it were set."
        )),
        (None, dep) => {
            let why = match &f.remote_secret_keys {
                Some(Err(e)) => e.clone(),
                Some(Ok(k)) if k.len() > 1 => format!(
                    "the keys {} of the primary's remote secrets all point at {}",
                    super::quote_list(&k.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>()),
                    f.remote_server
                ),
                _ => format!(
                    "no remote secret in the primary's {} points at {}",
                    s.istio_namespace, f.remote_server
                ),
            };
            let how = match dep {
                Ok(d) => format!(
                    "{} set env deployment/{} -c {} ISTIO_META_CLUSTER_ID=<that ID>",
                    kubectl_remote_ns(s, ns),
                    shell_word(name_of(d)),
                    shell_word(&gw.container)
                ),
                Err(_) => "set ISTIO_META_CLUSTER_ID=<that ID> where the gateway is defined".into(),
            };
            finding.note(format!(
                "meshtrace cannot tell the remote's cluster ID: {why}. Each data key of a remote secret is a cluster ID: `{} -n {} describe secrets -l {MC_LABEL}=true` lists them; take the remote's, then `{how}`. The durable fix is values.global.multiCluster.clusterName in the remote's install.",
                s.kubectl_primary(),
                shell_word(&s.istio_namespace)
            ))
        }
    };
    out.failing(finding, diagnosis)
}

fn lookup_failure(l: &Lookup, s: &Settings) -> Outcome {
    let out = Outcome::new();
    match l {
        Lookup::Found(_) => out.pass(),
        Lookup::BadFlag(spec) => out.failing(
            Finding::new(&BAD_GATEWAY_FLAG, format!("--gateway {spec:?} is not NAMESPACE/NAME"))
                .note("pass --gateway NAMESPACE/NAME of the gateway's pod or Deployment, e.g. istio-system/istio-eastwestgateway"),
            format!("--gateway is {spec:?}; expected NAMESPACE/NAME"),
        ),
        Lookup::Missing { namespace, name } => out.failing(
            Finding::new(
                &GATEWAY_NOT_FOUND,
                format!("no pod or deployment {name} in namespace {namespace} of the remote"),
            )
            .note(format!(
                "`{} get pods,deployments` lists what is there; pass the gateway's name to --gateway",
                kubectl_remote_ns(s, namespace)
            )),
            format!("--gateway {namespace}/{name}: neither pod nor deployment {name:?} exists in namespace {namespace:?} of the remote"),
        ),
        Lookup::NoPods {
            deployment,
            selector,
        } => {
            let ns = deployment.metadata.namespace.clone().unwrap_or_default();
            let name = name_of(deployment);
            let replicas = deployment.spec.replicas;
            let f = Finding::new(&NO_PODS, format!("deployment {ns}/{name} has no pods"));
            let f = if replicas == Some(0) {
                f.command(format!(
                    "{} scale deployment/{} --replicas=1",
                    kubectl_remote_ns(s, &ns),
                    shell_word(name)
                ))
                .note("The Deployment is scaled to 0; this starts one gateway pod (use the count your gateway runs with; an autoscaler may own the count).")
            } else {
                f.note(format!(
                    "Its ReplicaSet cannot create pods: `{} describe deployment {}` shows why (a quota, or a failing admission webhook: injection-webhook checks istiod's sidecar injector, which the remote API server calls for every new pod).",
                    kubectl_remote_ns(s, &ns),
                    shell_word(name)
                ))
            };
            out.failing(
                f,
                format!(
                    "no pod matches the selector {selector:?} of deployment {ns}/{name} (replicas: {})",
                    replicas.map_or("unset".into(), |r| r.to_string())
                ),
            )
        }
        Lookup::NoneLabelled => out.failing(
            Finding::new(&NO_GATEWAY, "no gateway pod in the remote")
                .note(format!(
                    "pass --gateway NAMESPACE/NAME of the east-west or ingress gateway; `{} get deployments -A -l istio` lists Istio's gateways. A gateway Deployment without pods is often refused by the sidecar injector's webhook: injection-webhook says whether it is",
                    s.kubectl_remote()
                )),
            format!(
                "no pod of the remote is labelled {}",
                GATEWAY_LABELS.join(" or ")
            ),
        ),
        Lookup::Refused {
            what,
            error,
            cluster_wide,
        } => out.failing(
            Finding::new(&READ_REFUSED, format!("the --remote context cannot {what}"))
                .note(if *cluster_wide {
                    "the --remote context needs list pods in all namespaces, or pass --gateway NAMESPACE/NAME"
                } else {
                    "the --remote context needs get on pods and deployments (list pods) in the gateway's namespace"
                }),
            format!("cannot {what} in the remote: {error}"),
        ),
    }
}

pub async fn run(ctx: &Ctx) -> Outcome {
    let facts = gather(ctx).await;
    let out = judge(&facts, &Settings::of(ctx));
    if let Lookup::Found(pod) = &facts.lookup {
        let gw = gateway_facts(pod, facts.deployment.as_deref().ok());
        let mut f = ctx.facts();
        f.cluster_id = cluster_id_of(&facts.cluster_id_flag, &gw);
        f.gateway = Some(gw);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use serde_json::Value;

    /// The east-west gateway as Istio's gateway chart makes it: a Deployment
    /// with an `istio-proxy` container, and a pod of its ReplicaSet.
    fn deployment(replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "istio-eastwestgateway", "namespace": "istio-system"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "istio-eastwestgateway", "istio": "eastwestgateway"}},
                "template": {
                    "metadata": {"labels": {"app": "istio-eastwestgateway", "istio": "eastwestgateway"}},
                    "spec": {"containers": [{"name": "istio-proxy", "image": "auto"}]}
                }
            }
        }))
        .unwrap()
    }

    fn pod(env: Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "istio-eastwestgateway-7d9f5c-abcde", "namespace": "istio-system",
                "uid": "6f1c2a52-0000-4000-8000-000000000001",
                "labels": {"app": "istio-eastwestgateway", "istio": "eastwestgateway",
                           "pod-template-hash": "7d9f5c", "topology.istio.io/network": "network2"},
                "annotations": {"sidecar.istio.io/status":
                    "{\"initContainers\":null,\"containers\":[\"istio-proxy\"],\"volumes\":[\"workload-socket\",\"istio-envoy\"]}"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "istio-eastwestgateway-7d9f5c", "uid": "u-rs", "controller": true}]
            },
            "spec": {
                "serviceAccountName": "istio-eastwestgateway-service-account",
                "containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.28.0", "env": env}],
                "volumes": [{"name": "istio-token", "projected": {"sources": [{"serviceAccountToken":
                    {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}}]
            },
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    fn env_with_id(id: Option<&str>) -> Value {
        let mut env = vec![
            json!({"name": "PILOT_CERT_PROVIDER", "value": "istiod"}),
            json!({"name": "CA_ADDR", "value": "istiod.istio-system.svc:15012"}),
            json!({"name": "ISTIO_META_NETWORK", "value": "network2"}),
        ];
        if let Some(id) = id {
            env.push(json!({"name": "ISTIO_META_CLUSTER_ID", "value": id}));
        }
        Value::Array(env)
    }

    fn facts(lookup: Lookup) -> GatewayPodFacts {
        GatewayPodFacts {
            lookup,
            deployment: Ok(Box::new(deployment(1))),
            cluster_id_flag: None,
            remote_server: "https://10.0.0.2:6443".into(),
            remote_secret_keys: Some(Ok(vec![(
                "istio-remote-secret-remote".into(),
                "remote".into(),
            )])),
        }
    }

    fn found(id: Option<&str>) -> GatewayPodFacts {
        facts(Lookup::Found(Box::new(pod(env_with_id(id)))))
    }

    struct Row {
        name: &'static str,
        facts: GatewayPodFacts,
        status: Status,
        code: Option<&'static str>,
        /// Parts the one command must hold; empty: no command.
        command: &'static [&'static str],
        note: &'static str,
    }

    #[test]
    fn judge_table() {
        let no_keys = GatewayPodFacts {
            remote_secret_keys: Some(Ok(vec![])),
            ..found(None)
        };
        let two_keys = GatewayPodFacts {
            remote_secret_keys: Some(Ok(vec![
                ("istio-remote-secret-a".into(), "a".into()),
                ("istio-remote-secret-b".into(), "b".into()),
            ])),
            ..found(None)
        };
        let bare_pod = GatewayPodFacts {
            deployment: Err("the pod has no owner".into()),
            ..found(None)
        };
        let flag = GatewayPodFacts {
            cluster_id_flag: Some("remote".into()),
            ..found(None)
        };
        let rows = vec![
            Row {
                name: "pass",
                facts: found(Some("remote")),
                status: Status::Pass,
                code: None,
                command: &[],
                note: "",
            },
            Row {
                name: "--cluster-id stands in for the env",
                facts: flag,
                status: Status::Pass,
                code: None,
                command: &[],
                note: "",
            },
            Row {
                name: "no cluster ID, the remote secret's key known",
                facts: found(None),
                status: Status::Fail,
                code: Some("gateway-pod/no-cluster-id"),
                command: &[
                    "kubectl --context ctx-remote -n istio-system set env deployment/istio-eastwestgateway -c istio-proxy ISTIO_META_CLUSTER_ID=remote",
                ],
                note: "values.global.multiCluster.clusterName=remote",
            },
            Row {
                name: "an empty cluster ID is none",
                facts: found(Some("")),
                status: Status::Fail,
                code: Some("gateway-pod/no-cluster-id"),
                command: &[
                    "set env deployment/istio-eastwestgateway",
                    "ISTIO_META_CLUSTER_ID=remote",
                ],
                note: "",
            },
            Row {
                name: "no remote secret points at the remote",
                facts: no_keys,
                status: Status::Fail,
                code: Some("gateway-pod/no-cluster-id"),
                command: &[],
                note: "kubectl --context ctx-primary -n istio-system describe secrets -l istio/multiCluster=true",
            },
            Row {
                name: "two keys point at the remote",
                facts: two_keys,
                status: Status::Fail,
                code: Some("gateway-pod/no-cluster-id"),
                command: &[],
                note: "[\"a\", \"b\"]",
            },
            Row {
                name: "a bare pod has no Deployment to change",
                facts: bare_pod,
                status: Status::Fail,
                code: Some("gateway-pod/no-cluster-id"),
                command: &[],
                note: "the pod has no owner",
            },
            Row {
                name: "--gateway without a slash",
                facts: facts(Lookup::BadFlag("istio-eastwestgateway".into())),
                status: Status::Fail,
                code: Some("gateway-pod/bad-gateway-flag"),
                command: &[],
                note: "NAMESPACE/NAME",
            },
            Row {
                name: "--gateway names nothing",
                facts: facts(Lookup::Missing {
                    namespace: "istio-system".into(),
                    name: "gw".into(),
                }),
                status: Status::Fail,
                code: Some("gateway-pod/gateway-not-found"),
                command: &[],
                note: "kubectl --context ctx-remote -n istio-system get pods,deployments",
            },
            Row {
                name: "deployment scaled to zero",
                facts: facts(Lookup::NoPods {
                    deployment: Box::new(deployment(0)),
                    selector: "app=istio-eastwestgateway".into(),
                }),
                status: Status::Fail,
                code: Some("gateway-pod/deployment-has-no-pods"),
                command: &[
                    "kubectl --context ctx-remote -n istio-system scale deployment/istio-eastwestgateway --replicas=1",
                ],
                note: "",
            },
            Row {
                name: "deployment whose pods are not created",
                facts: facts(Lookup::NoPods {
                    deployment: Box::new(deployment(2)),
                    selector: "app=istio-eastwestgateway".into(),
                }),
                status: Status::Fail,
                code: Some("gateway-pod/deployment-has-no-pods"),
                command: &[],
                note: "describe deployment istio-eastwestgateway",
            },
            Row {
                name: "no pod carries a gateway label",
                facts: facts(Lookup::NoneLabelled),
                status: Status::Fail,
                code: Some("gateway-pod/no-gateway"),
                command: &[],
                note: "--gateway",
            },
            Row {
                name: "the pod list is refused",
                facts: facts(Lookup::Refused {
                    what: "list pods in all namespaces".into(),
                    error: "403 Forbidden: pods is forbidden".into(),
                    cluster_wide: true,
                }),
                status: Status::Fail,
                code: Some("gateway-pod/read-refused"),
                command: &[],
                note: "list pods in all namespaces",
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
            if r.command.is_empty() {
                assert!(cmds.is_empty(), "{}: {cmds:?}", r.name);
            } else {
                assert_eq!(cmds.len(), 1, "{}: {cmds:?}", r.name);
                for part in r.command {
                    assert!(
                        cmds[0].contains(part),
                        "{}: {:?} lacks {part:?}",
                        r.name,
                        cmds[0]
                    );
                }
            }
            let note = f.and_then(|f| f.note.clone()).unwrap_or_default();
            assert!(
                note.contains(r.note),
                "{}: {note:?} lacks {:?}",
                r.name,
                r.note
            );
            for c in &cmds {
                assert!(
                    !super::super::gateway::has_placeholder(c),
                    "{}: placeholder in {c:?}",
                    r.name
                );
            }
            if let Some(f) = f {
                assert!(
                    f.summary.chars().count() <= 100,
                    "{}: {}",
                    r.name,
                    f.summary
                );
                assert!(
                    out.diagnosis.as_deref().unwrap_or_default().chars().count() <= 300,
                    "{}: {:?}",
                    r.name,
                    out.diagnosis
                );
            }
        }
        for c in CAUSES {
            assert!(seen.contains(&c.code().as_str()), "no row for {}", c.code());
        }
    }

    #[test]
    fn the_cluster_id_comes_from_the_flag_before_the_env() {
        let out = judge(&found(Some("remote")), &Settings::for_tests());
        assert_eq!(
            out.evidence["cluster_id"],
            json!({"value": "remote", "source": "gateway env ISTIO_META_CLUSTER_ID"})
        );
        assert_eq!(out.evidence["deployment"], "istio-eastwestgateway");
        let f = GatewayPodFacts {
            cluster_id_flag: Some("other".into()),
            ..found(Some("remote"))
        };
        let out = judge(&f, &Settings::for_tests());
        assert_eq!(
            out.evidence["cluster_id"],
            json!({"value": "other", "source": "--cluster-id"})
        );
    }

    #[test]
    fn gateway_facts_read_the_proxy_container_and_what_the_injector_added() {
        let g = gateway_facts(&pod(env_with_id(Some("remote"))), Some(&deployment(1)));
        assert_eq!(g.container, "istio-proxy");
        assert_eq!(g.cluster_id.as_deref(), Some("remote"));
        assert_eq!(g.network.as_deref(), Some("network2"));
        assert_eq!(g.service_account, "istio-eastwestgateway-service-account");
        assert_eq!(
            g.projected_token,
            Some((Some("istio-ca".into()), Some(43200)))
        );
        assert_eq!(g.injected_volumes, vec!["workload-socket", "istio-envoy"]);
        assert!(g.deployment.is_some());
        assert_eq!(
            gateway_facts(&pod(env_with_id(Some(""))), None).cluster_id,
            None
        );
    }
}
