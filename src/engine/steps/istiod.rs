//! What the steps on the gateway's path to istiod share (remote-istiod-endpoint,
//! istiod-tls, csr, issued-chain): istiod's port and server name as istio-agent
//! uses them, and istiod's Deployment in the primary, which the fixes that
//! change istiod (restart, env) must name.

use super::{Settings, kube_err};
use crate::findings::shell_word;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use std::time::Duration;

/// istiod's secure gRPC port (CA and xDS), as CA_ADDR names it.
pub const CA_PORT: i32 = 15012;

pub fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The TLS server name istio-agent verifies for CA_ADDR: ISTIOD_SAN if set,
/// else the host part of CA_ADDR, where `localhost` means istiod.istio-system.svc
/// (the agent hard-codes that namespace; pilot/cmd/pilot-agent/options/security.go).
pub fn agent_server_name(ca_addr: Option<&str>, istiod_san: Option<&str>) -> String {
    let default = "istiod.istio-system.svc".to_string();
    if let Some(san) = istiod_san.filter(|s| !s.is_empty()) {
        return san.to_string();
    }
    let Some(addr) = ca_addr else { return default };
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(addr)
        .trim_matches(['[', ']']);
    if host == "localhost" || host.is_empty() {
        default
    } else {
        host.to_string()
    }
}

/// An env variable of istiod's container as its Deployment sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// `value:`, or a `valueFrom`/`envFrom` meshtrace resolved. Kubernetes
    /// sets a variable with no or an empty `value` to the empty string, and
    /// istiod reads it with `os.LookupEnv` (pkg/env/var.go): present, empty.
    Value(String),
    /// `valueFrom:` a ConfigMap, Secret or field meshtrace could not resolve.
    FromRef,
}

/// Where a variable of istiod's container came from, for the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSource {
    /// `value`, `configMapKeyRef NAME/KEY`, `secretKeyRef NAME/KEY`,
    /// `fieldRef PATH`, `envFrom configMap NAME`, ...
    pub from: String,
    /// How many entries set the name: Kubernetes keeps the last.
    pub entries: usize,
}

/// A `valueFrom` reference meshtrace resolves by reading the object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum EnvRef {
    ConfigMap { name: String, key: Option<String> },
    Secret { name: String, key: Option<String> },
}

/// istiod's Deployment in the primary: what a fix that restarts istiod or
/// changes its env needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IstiodDeployment {
    pub name: String,
    /// istiod's container: `discovery` (Istio's chart), else the first.
    pub container: String,
    /// The pod template has other containers too: `set env` then names it.
    pub several_containers: bool,
    /// The env of istiod's container, as Kubernetes gives it to the
    /// process: `envFrom` first, then `env` in order, the last entry of a
    /// name winning.
    pub env: BTreeMap<String, EnvValue>,
    pub env_sources: BTreeMap<String, EnvSource>,
    /// The ConfigMaps and Secrets the env refers to (resolved by gather).
    pub env_refs: Vec<EnvRef>,
    /// The container's args (`discovery --clusterID ...`).
    pub args: Vec<String>,
    /// The revision: label `istio.io/rev`, else env `REVISION`, else `default`.
    pub revision: String,
    /// The ConfigMap mounted as istiod's mesh config (`/etc/istio/config`).
    pub mesh_config_map: Option<String>,
    /// The pods it owns, through their ReplicaSets.
    pub pods: Vec<String>,
    /// When each owned pod's istiod container started (RFC 3339), if known.
    pub pod_started: BTreeMap<String, String>,
}

impl IstiodDeployment {
    pub fn env_value(&self, name: &str) -> Option<&EnvValue> {
        self.env.get(name)
    }
}

/// istiod's Deployments, or why they could not be read.
pub type IstiodDeployments = Result<Vec<IstiodDeployment>, String>;

/// Is this Deployment istiod's? Istio's chart labels it and its pods
/// `app: istiod`; a Deployment called `istiod` counts too.
fn is_istiod(d: &Deployment) -> bool {
    let app = |l: Option<&BTreeMap<String, String>>| {
        l.and_then(|l| l.get("app")).map(String::as_str) == Some("istiod")
    };
    d.metadata.name.as_deref() == Some("istiod")
        || app(d.metadata.labels.as_ref())
        || app(d
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref()))
}

fn owner<'a>(
    refs: Option<&'a Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
    kind: &str,
) -> Option<&'a str> {
    refs?
        .iter()
        .find(|o| o.kind == kind)
        .map(|o| o.name.as_str())
}

/// The istiod Deployments among `deployments`, each with its container's env
/// and the pods it owns (pod -> ReplicaSet -> Deployment).
pub fn istiod_deployments(
    deployments: &[Deployment],
    replica_sets: &[ReplicaSet],
    pods: &[Pod],
) -> Vec<IstiodDeployment> {
    let mut out: Vec<IstiodDeployment> = deployments
        .iter()
        .filter(|d| is_istiod(d))
        .filter_map(|d| {
            let name = d.metadata.name.clone()?;
            let containers: &[Container] = d
                .spec
                .template
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or(&[]);
            let main = containers
                .iter()
                .find(|c| c.name == "discovery")
                .or(containers.first());
            let (env, env_sources, env_refs) = main.map(container_env).unwrap_or_default();
            let args: Vec<String> = main.and_then(|c| c.args.clone()).unwrap_or_default();
            let revision = d
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("istio.io/rev"))
                .filter(|r| !r.is_empty())
                .cloned()
                .or_else(|| match env.get("REVISION") {
                    Some(EnvValue::Value(v)) if !v.is_empty() => Some(v.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "default".into());
            let mesh_config_map = mesh_volume(d, main);
            let mut owned: Vec<String> = pods
                .iter()
                .filter(|p| {
                    let rs = owner(p.metadata.owner_references.as_ref(), "ReplicaSet");
                    replica_sets.iter().any(|r| {
                        r.metadata.name.as_deref() == rs
                            && owner(r.metadata.owner_references.as_ref(), "Deployment")
                                == Some(name.as_str())
                    })
                })
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            owned.sort();
            let pod_started = pods
                .iter()
                .filter(|p| p.metadata.name.as_ref().is_some_and(|n| owned.contains(n)))
                .filter_map(|p| {
                    let status = p.status.as_ref()?;
                    let started = status
                        .container_statuses
                        .iter()
                        .flatten()
                        .find(|c| Some(&c.name) == main.map(|m| &m.name))
                        .and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.clone())
                        .or_else(|| status.start_time.clone())?;
                    Some((p.metadata.name.clone()?, started.0.to_string()))
                })
                .collect();
            Some(IstiodDeployment {
                container: main.map(|c| c.name.clone()).unwrap_or_default(),
                several_containers: containers.len() > 1,
                env,
                env_sources,
                env_refs,
                args,
                revision,
                mesh_config_map,
                pods: owned,
                pod_started,
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The env Kubernetes gives `c`'s process: `envFrom` sources first, then
/// `env` entries in order; a later entry of a name replaces an earlier one
/// (kubelet's makeEnvironmentVariables). References to ConfigMaps and
/// Secrets are left as [`EnvValue::FromRef`] and listed for gather.
fn container_env(
    c: &Container,
) -> (
    BTreeMap<String, EnvValue>,
    BTreeMap<String, EnvSource>,
    Vec<EnvRef>,
) {
    let mut env = BTreeMap::new();
    let mut sources: BTreeMap<String, EnvSource> = BTreeMap::new();
    let mut refs = Vec::new();
    let mut set = |name: &str, v: EnvValue, from: String| {
        env.insert(name.to_string(), v);
        let e = sources.entry(name.to_string()).or_insert(EnvSource {
            from: String::new(),
            entries: 0,
        });
        e.from = from;
        e.entries += 1;
    };
    for ef in c.env_from.iter().flatten() {
        // The keys are known only once read: gather expands them.
        if let Some(r) = &ef.config_map_ref {
            refs.push(EnvRef::ConfigMap {
                name: r.name.clone(),
                key: None,
            });
        }
        if let Some(r) = &ef.secret_ref {
            refs.push(EnvRef::Secret {
                name: r.name.clone(),
                key: None,
            });
        }
    }
    for v in c.env.iter().flatten() {
        match (&v.value, &v.value_from) {
            (_, Some(from)) => {
                let (what, r) = if let Some(k) = &from.config_map_key_ref {
                    (
                        format!("configMapKeyRef {}/{}", k.name, k.key),
                        Some(EnvRef::ConfigMap {
                            name: k.name.clone(),
                            key: Some(k.key.clone()),
                        }),
                    )
                } else if let Some(k) = &from.secret_key_ref {
                    (
                        format!("secretKeyRef {}/{}", k.name, k.key),
                        Some(EnvRef::Secret {
                            name: k.name.clone(),
                            key: Some(k.key.clone()),
                        }),
                    )
                } else if let Some(f) = &from.field_ref {
                    (format!("fieldRef {}", f.field_path), None)
                } else {
                    ("resourceFieldRef".to_string(), None)
                };
                if let Some(r) = r {
                    refs.push(r);
                }
                set(&v.name, EnvValue::FromRef, what);
            }
            (Some(x), None) => set(&v.name, EnvValue::Value(x.clone()), "value".into()),
            (None, None) => set(&v.name, EnvValue::Value(String::new()), "value".into()),
        }
    }
    refs.sort();
    refs.dedup();
    (env, sources, refs)
}

/// The ConfigMap istiod's chart mounts at /etc/istio/config (volume
/// `config-volume`), where `--meshConfig` (default /etc/istio/config/mesh) reads.
fn mesh_volume(d: &Deployment, main: Option<&Container>) -> Option<String> {
    let spec = d.spec.template.spec.as_ref()?;
    let mount = main?
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == "/etc/istio/config")?;
    spec.volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)?
        .config_map
        .as_ref()
        .map(|c| c.name.clone())
}

/// Resolves what `d`'s env refers to with the objects read, as kubelet
/// would: a key of a ConfigMap or Secret, `envFrom` whole objects (the
/// `env` entries still win), and the fields meshtrace can know.
pub fn resolve_env(
    d: &mut IstiodDeployment,
    config_maps: &BTreeMap<String, BTreeMap<String, String>>,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
    namespace: &str,
    service_account: Option<&str>,
) {
    // envFrom: a name the env entries do not set comes from the object.
    for r in d.env_refs.clone() {
        let (obj, name, kind) = match &r {
            EnvRef::ConfigMap { name, key: None } => (config_maps.get(name), name, "configMap"),
            EnvRef::Secret { name, key: None } => (secrets.get(name), name, "secret"),
            _ => continue,
        };
        for (k, v) in obj.into_iter().flatten() {
            if !d.env.contains_key(k) {
                d.env.insert(k.clone(), EnvValue::Value(v.clone()));
                d.env_sources.insert(
                    k.clone(),
                    EnvSource {
                        from: format!("envFrom {kind} {name}"),
                        entries: 1,
                    },
                );
            }
        }
    }
    let one_pod = match d.pods.as_slice() {
        [p] => Some(p.clone()),
        _ => None,
    };
    for (name, src) in d.env_sources.clone() {
        if d.env.get(&name) != Some(&EnvValue::FromRef) {
            continue;
        }
        let from = src.from.as_str();
        let value = if let Some(rest) = from.strip_prefix("configMapKeyRef ") {
            rest.split_once('/')
                .and_then(|(n, k)| config_maps.get(n)?.get(k).cloned())
        } else if let Some(rest) = from.strip_prefix("secretKeyRef ") {
            rest.split_once('/')
                .and_then(|(n, k)| secrets.get(n)?.get(k).cloned())
        } else {
            match from {
                "fieldRef metadata.namespace" => Some(namespace.to_string()),
                "fieldRef metadata.name" => one_pod.clone(),
                "fieldRef spec.serviceAccountName" => service_account.map(str::to_string),
                _ => None,
            }
        };
        if let Some(v) = value {
            d.env.insert(name, EnvValue::Value(v));
        }
    }
}

/// Reads istiod's Deployments in the primary (Deployments, and the
/// `app=istiod` ReplicaSets and pods that tie a pod to one), within `timeout`.
/// Only the Deployment list is required; without the others the pods are unknown.
pub async fn read_istiod_deployments(
    primary: &kube::Client,
    ns: &str,
    timeout: Duration,
) -> IstiodDeployments {
    let deps: Api<Deployment> = Api::namespaced(primary.clone(), ns);
    let sets: Api<ReplicaSet> = Api::namespaced(primary.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(primary.clone(), ns);
    let by_app = ListParams::default().labels("app=istiod");
    let all = ListParams::default();
    let read = async { tokio::join!(deps.list(&all), sets.list(&by_app), pods.list(&by_app)) };
    let (d, r, p) = tokio::time::timeout(timeout, read).await.map_err(|_| {
        format!(
            "no answer listing Deployments in {ns} of the primary within {}",
            humantime::format_duration(timeout)
        )
    })?;
    let d = d.map_err(|e| {
        format!(
            "cannot list Deployments in {ns} of the primary: {}",
            kube_err(&e)
        )
    })?;
    let r = r.map(|l| l.items).unwrap_or_default();
    let p = p.map(|l| l.items).unwrap_or_default();
    let mut found = istiod_deployments(&d.items, &r, &p);
    // valueFrom / envFrom: read each object referred to once, then resolve.
    let refs: std::collections::BTreeSet<EnvRef> = found
        .iter()
        .flat_map(|d| d.env_refs.iter().cloned())
        .collect();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(primary.clone(), ns);
    let secs: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(primary.clone(), ns);
    let mut config_maps = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let reads = refs.iter().map(|r| {
        let (cms, secs) = (cms.clone(), secs.clone());
        async move {
            match r {
                EnvRef::ConfigMap { name, .. } => {
                    let cm = cms.get_opt(name).await.ok().flatten();
                    (r, cm.and_then(|c| c.data))
                }
                EnvRef::Secret { name, .. } => {
                    let s = secs.get_opt(name).await.ok().flatten();
                    let data = s.and_then(|s| s.data).map(|d| {
                        d.into_iter()
                            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                            .collect::<BTreeMap<_, _>>()
                    });
                    (r, data)
                }
            }
        }
    });
    if let Ok(read) = tokio::time::timeout(timeout, futures::future::join_all(reads)).await {
        for (r, data) in read {
            match (r, data) {
                (EnvRef::ConfigMap { name, .. }, Some(d)) => {
                    config_maps.insert(name.clone(), d);
                }
                (EnvRef::Secret { name, .. }, Some(d)) => {
                    secrets.insert(name.clone(), d);
                }
                _ => {}
            }
        }
    }
    for d in &mut found {
        resolve_env(d, &config_maps, &secrets, ns, None);
    }
    Ok(found)
}

/// The Deployment a fix names: the one that owns `pod` (the istiod that
/// answered), else the only one. Err says why none can be named.
pub fn pick<'a>(
    found: &'a IstiodDeployments,
    pod: Option<&str>,
    ns: &str,
) -> Result<&'a IstiodDeployment, String> {
    let list = found.as_ref().map_err(Clone::clone)?;
    if let Some(p) = pod {
        if let Some(d) = list.iter().find(|d| d.pods.iter().any(|x| x == p)) {
            return Ok(d);
        }
    }
    match list.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no istiod Deployment (app=istiod) in {ns} of the primary"
        )),
        many => Err(format!(
            "{} istiod Deployments in {ns} of the primary ({})",
            many.len(),
            many.iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `kubectl --context P -n NS rollout restart deployment/NAME`.
pub fn restart_command(s: &Settings, d: &IstiodDeployment) -> String {
    format!(
        "{} -n {} rollout restart deployment/{}",
        s.kubectl_primary(),
        shell_word(&s.istio_namespace),
        shell_word(&d.name)
    )
}

/// `kubectl --context P -n NS set env deployment/NAME [-c C] VAR=VALUE`.
pub fn set_env_command(s: &Settings, d: &IstiodDeployment, var: &str, value: &str) -> String {
    let container = if d.several_containers {
        format!(" -c {}", shell_word(&d.container))
    } else {
        String::new()
    };
    format!(
        "{} -n {} set env deployment/{}{container} {}",
        s.kubectl_primary(),
        shell_word(&s.istio_namespace),
        shell_word(&d.name),
        shell_word(&format!("{var}={value}"))
    )
}

/// The note for a fix that needs istiod's Deployment when none could be named.
pub fn no_deployment_note(s: &Settings, why: &str, what: &str) -> String {
    format!(
        "meshtrace cannot name istiod's Deployment ({why}): find it with `{} -n {} get deployments -l app=istiod`, then {what}",
        s.kubectl_primary(),
        shell_word(&s.istio_namespace)
    )
}

/// A comma-separated env list (TOKEN_AUDIENCES, ISTIOD_CUSTOM_HOST) with
/// `item` added at the end, keeping the others and dropping empty entries.
pub fn with_item(list: &str, item: &str) -> String {
    let mut items: Vec<&str> = list.split(',').filter(|i| !i.is_empty()).collect();
    if !items.contains(&item) {
        items.push(item);
    }
    items.join(",")
}

/// Runs `main` and `side` at once. `side` only explains a failure of `main`:
/// when `needed(&main's result)` it is awaited (it bounds itself), otherwise
/// it gets `grace` more and is dropped, so a slow side read never holds up a pass.
pub async fn with_side<M, S>(
    main: impl std::future::Future<Output = M>,
    side: impl std::future::Future<Output = S>,
    needed: impl FnOnce(&M) -> bool,
    grace: Duration,
) -> (M, Option<S>) {
    tokio::pin!(main, side);
    let mut got = None;
    let m = tokio::select! {
        m = &mut main => m,
        s = &mut side => {
            got = Some(s);
            main.await
        }
    };
    if got.is_none() {
        got = if needed(&m) {
            Some(side.await)
        } else {
            tokio::time::timeout(grace, &mut side).await.ok()
        };
    }
    (m, got)
}

/// The SPIFFE identity istiod issues to the gateway, and the trust domain
/// with where it came from: the gateway's TRUST_DOMAIN, else the primary's
/// mesh config, else Istio's default.
pub fn expected_identity(
    gw_trust_domain: Option<&str>,
    mesh_trust_domain: Option<&str>,
    namespace: &str,
    service_account: &str,
) -> (String, String, &'static str) {
    let (td, from) = match (gw_trust_domain, mesh_trust_domain) {
        (Some(t), _) if !t.is_empty() => (t.to_string(), "the gateway's TRUST_DOMAIN"),
        (_, Some(t)) if !t.is_empty() => (t.to_string(), "the primary's mesh config"),
        _ => ("cluster.local".to_string(), "Istio's default"),
    };
    (
        format!("spiffe://{td}/ns/{namespace}/sa/{service_account}"),
        td,
        from,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{
        EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn labels(kv: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn owned_by(kind: &str, name: &str) -> Option<Vec<OwnerReference>> {
        Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(true),
            ..Default::default()
        }])
    }

    /// istiod's Deployment as Istio's chart makes it: container `discovery`, `app: istiod`.
    pub fn deployment(name: &str, env: &[(&str, &str)]) -> Deployment {
        let env: Vec<EnvVar> = env
            .iter()
            .map(|(k, v)| EnvVar {
                name: k.to_string(),
                value: Some(v.to_string()),
                ..Default::default()
            })
            .collect();
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("istio-system".into()),
                labels: labels(&[("app", "istiod"), ("istio.io/rev", "default")]),
                ..Default::default()
            },
            spec: DeploymentSpec {
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: labels(&[("app", "istiod"), ("istio", "pilot")]),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "discovery".into(),
                            image: Some("docker.io/istio/pilot:1.28.0".into()),
                            env: Some(env),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub fn replica_set(name: &str, deployment: &str) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: labels(&[("app", "istiod")]),
                owner_references: owned_by("Deployment", deployment),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub fn pod(name: &str, replica_set: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: labels(&[("app", "istiod")]),
                owner_references: owned_by("ReplicaSet", replica_set),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The one istiod Deployment `istiod`, owning pod `istiod-abc`, with `env`.
    pub fn one_istiod(env: &[(&str, &str)]) -> IstiodDeployments {
        Ok(istiod_deployments(
            &[deployment("istiod", env)],
            &[replica_set("istiod-5d9f", "istiod")],
            &[pod("istiod-abc", "istiod-5d9f")],
        ))
    }

    #[test]
    fn deployments_are_found_with_their_pods_env_and_container() {
        let mut canary = deployment("istiod-canary", &[("TOKEN_AUDIENCES", "istio-ca,other")]);
        // A sidecar next to istiod: set env must then name istiod's container.
        let spec = canary.spec.template.spec.as_mut().unwrap();
        spec.containers.insert(
            0,
            Container {
                name: "log-shipper".into(),
                ..Default::default()
            },
        );
        spec.containers[1].env.as_mut().unwrap().push(EnvVar {
            name: "ISTIOD_CUSTOM_HOST".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut other = deployment("prometheus", &[]);
        other.metadata.labels = labels(&[("app", "prometheus")]);
        other.spec.template.metadata = None;
        let found = istiod_deployments(
            &[other, canary, deployment("istiod", &[])],
            &[
                replica_set("istiod-1", "istiod"),
                replica_set("istiod-canary-2", "istiod-canary"),
            ],
            &[
                pod("istiod-1-a", "istiod-1"),
                pod("istiod-canary-2-b", "istiod-canary-2"),
                pod("stray", "gone"),
            ],
        );
        assert_eq!(
            found.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["istiod", "istiod-canary"]
        );
        assert_eq!(found[0].pods, ["istiod-1-a"]);
        assert!(!found[0].several_containers);
        let c = &found[1];
        assert_eq!(
            (c.container.as_str(), c.several_containers),
            ("discovery", true)
        );
        assert_eq!(
            c.env_value("TOKEN_AUDIENCES"),
            Some(&EnvValue::Value("istio-ca,other".into()))
        );
        assert_eq!(c.env_value("ISTIOD_CUSTOM_HOST"), Some(&EnvValue::FromRef));

        let s = Settings::for_tests();
        let all: IstiodDeployments = Ok(found.clone());
        // The pod that answered decides; else only a single Deployment is named.
        assert_eq!(
            pick(&all, Some("istiod-canary-2-b"), "istio-system")
                .unwrap()
                .name,
            "istiod-canary"
        );
        let err = pick(&all, None, "istio-system").unwrap_err();
        assert_eq!(
            err,
            "2 istiod Deployments in istio-system of the primary (istiod, istiod-canary)"
        );
        assert_eq!(
            set_env_command(&s, c, "TOKEN_AUDIENCES", "istio-ca,other,x"),
            "kubectl --context ctx-primary -n istio-system set env deployment/istiod-canary -c discovery TOKEN_AUDIENCES=istio-ca,other,x"
        );
        assert_eq!(
            restart_command(&s, &found[0]),
            "kubectl --context ctx-primary -n istio-system rollout restart deployment/istiod"
        );
    }

    #[test]
    fn lists_keep_their_items() {
        assert_eq!(with_item("other-ca", "istio-ca"), "other-ca,istio-ca");
        assert_eq!(with_item("", "istio-ca"), "istio-ca");
        assert_eq!(with_item("a,,b", "a"), "a,b");
    }

    #[test]
    fn server_name_follows_the_agent() {
        assert_eq!(agent_server_name(None, None), "istiod.istio-system.svc");
        assert_eq!(
            agent_server_name(Some("localhost:15012"), None),
            "istiod.istio-system.svc"
        );
        assert_eq!(
            agent_server_name(Some("istiod.x.svc:15012"), None),
            "istiod.x.svc"
        );
        assert_eq!(agent_server_name(Some("[::1]:15012"), None), "::1");
        assert_eq!(
            agent_server_name(Some("10.0.0.1:15012"), Some("istiod.y.svc")),
            "istiod.y.svc"
        );
    }
}
