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
    /// `value:` (Kubernetes' default for `value` is the empty string).
    Value(String),
    /// `valueFrom:` a ConfigMap, Secret or field: meshtrace does not resolve it.
    FromRef,
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
    /// The env of istiod's container.
    pub env: BTreeMap<String, EnvValue>,
    /// The pods it owns, through their ReplicaSets.
    pub pods: Vec<String>,
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
            let env = main
                .and_then(|c| c.env.as_ref())
                .map(|vars| {
                    vars.iter()
                        .map(|v| {
                            let value = match (&v.value, &v.value_from) {
                                (_, Some(_)) => EnvValue::FromRef,
                                (Some(x), None) => EnvValue::Value(x.clone()),
                                (None, None) => EnvValue::Value(String::new()),
                            };
                            (v.name.clone(), value)
                        })
                        .collect()
                })
                .unwrap_or_default();
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
            Some(IstiodDeployment {
                container: main.map(|c| c.name.clone()).unwrap_or_default(),
                several_containers: containers.len() > 1,
                env,
                pods: owned,
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
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
    Ok(istiod_deployments(&d.items, &r, &p))
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
