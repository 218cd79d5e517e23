//! The controllers a fix relies on, run synchronously after every write, so
//! that what a kubectl command changed is in place for the very next request
//! (a trace run right after `kubectl set env` sees the new pod):
//!
//! - the deployment controller: a ReplicaSet per pod template (labelled
//!   `pod-template-hash`, owned by the Deployment), one Pod from it (owned by
//!   the ReplicaSet), old ReplicaSets scaled to 0 and their pods gone, and a
//!   complete rollout in the Deployment's status, so `kubectl rollout status`
//!   returns at once. A new pod is reported to the cluster's
//!   [`RolloutHook`] (the primary's restarts the simulated istiod);
//! - the garbage collector for what a deleted Deployment or ReplicaSet owned;
//! - the service-account token controller: a `kubernetes.io/service-account-token`
//!   Secret gets its legacy token, `ca.crt` and `namespace` (what
//!   `istioctl create-remote-secret` waits for), and loses them with its
//!   service account.

use super::ClusterSim;
use crate::lab::store::Store;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus,
};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodCondition, PodStatus, Secret,
    ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
pub const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const SA_NAME: &str = "kubernetes.io/service-account.name";
const SA_UID: &str = "kubernetes.io/service-account.uid";

/// A Deployment got a new pod: its template changed (`kubectl set env`,
/// `rollout restart`, a patch), or its pod was deleted.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub namespace: String,
    pub deployment: String,
    /// The new pod, as stored.
    pub pod: Pod,
}

/// Called under the cluster's lock, after the store holds the new pod.
pub type RolloutHook = Arc<dyn Fn(&mut ClusterSim, &Rollout) + Send + Sync>;

/// Run the controllers after a write to `plural` (in `group`) in `ns`.
pub(crate) fn after_write(cl: &mut ClusterSim, group: &str, plural: &str, ns: &str) {
    match (group, plural) {
        ("apps", "deployments" | "replicasets") | ("", "pods") => {
            let rollouts = sync_workloads(&mut cl.store, ns);
            if let Some(hook) = cl.on_rollout.clone() {
                for r in &rollouts {
                    hook(cl, r);
                }
            }
        }
        ("", "secrets" | "serviceaccounts") => {
            let ca = cl.ca_pem.clone();
            let keys = cl.keys.clone();
            sync_token_secrets(&mut cl.store, ns, &ca, |ns, sa, uid, secret| {
                keys.mint_legacy(ns, sa, uid, secret)
            });
        }
        _ => {}
    }
}

/// Put `d` into the store and create its ReplicaSet and Pod. The first pod's
/// name ends in a suffix derived from its ReplicaSet's, not a random one, so
/// the lab's pods have the same names on every run.
pub fn install_deployment(store: &mut Store, d: Deployment) {
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let d = store.put(Deployment {
        metadata: ObjectMeta {
            generation: Some(1),
            ..d.metadata
        },
        ..d
    });
    sync_deployment(store, &ns, &d, true);
}

/// The Deployment that owns `pod` through its ReplicaSet, if any.
pub(crate) fn owning_deployment(store: &Store, ns: &str, pod: &Pod) -> Option<String> {
    let rs_name = controller_of(&pod.metadata, "ReplicaSet")?;
    let rs: ReplicaSet = store.get(ns, &rs_name)?;
    controller_of(&rs.metadata, "Deployment")
}

fn controller_of(m: &ObjectMeta, kind: &str) -> Option<String> {
    m.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == kind && o.controller == Some(true))
        .map(|o| o.name.clone())
}

fn owned_by(m: &ObjectMeta, uid: &str) -> bool {
    m.owner_references.as_ref().is_some_and(|os| {
        os.iter()
            .any(|o| o.uid == uid && o.controller == Some(true))
    })
}

fn owner_ref(kind: &str, api_version: &str, m: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn in_ns<K: k8s_openapi::Metadata<Ty = ObjectMeta>>(items: Vec<K>, ns: &str) -> Vec<K> {
    items
        .into_iter()
        .filter(|o| o.metadata().namespace.as_deref() == Some(ns))
        .collect()
}

/// pod-template-hash: FNV-1a of the template, spelled in kube's safe
/// alphabet (no vowels), as the deployment controller names ReplicaSets.
pub fn template_hash(template: &serde_json::Value) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in template.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| ALPHA[usize::from(d) % ALPHA.len()] as char)
        .collect()
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Every Deployment of `ns` brought to its template, then what lost its
/// owner collected. Returns the pods created for Deployments.
fn sync_workloads(store: &mut Store, ns: &str) -> Vec<Rollout> {
    let mut out = Vec::new();
    for d in in_ns(store.list::<Deployment>(), ns) {
        out.extend(sync_deployment(store, ns, &d, false));
    }
    // Garbage collection: a ReplicaSet whose Deployment is gone, and a pod
    // whose ReplicaSet is gone, go too (background propagation, at once).
    let deployments: Vec<String> = in_ns(store.list::<Deployment>(), ns)
        .iter()
        .filter_map(|d| d.metadata.uid.clone())
        .collect();
    for rs in in_ns(store.list::<ReplicaSet>(), ns) {
        let orphan = rs.metadata.owner_references.as_ref().is_some_and(|os| {
            os.iter()
                .any(|o| o.kind == "Deployment" && !deployments.contains(&o.uid))
        });
        if orphan {
            store.remove::<ReplicaSet>(ns, rs.metadata.name.as_deref().unwrap_or_default());
        }
    }
    let sets: Vec<String> = in_ns(store.list::<ReplicaSet>(), ns)
        .iter()
        .filter_map(|r| r.metadata.uid.clone())
        .collect();
    for p in in_ns(store.list::<Pod>(), ns) {
        let orphan = p.metadata.owner_references.as_ref().is_some_and(|os| {
            os.iter()
                .any(|o| o.kind == "ReplicaSet" && !sets.contains(&o.uid))
        });
        if orphan {
            store.remove::<Pod>(ns, p.metadata.name.as_deref().unwrap_or_default());
        }
    }
    out
}

fn sync_deployment(
    store: &mut Store,
    ns: &str,
    d: &Deployment,
    stable_name: bool,
) -> Option<Rollout> {
    let name = d.metadata.name.clone().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let spec = d.spec.clone();
    let template_json = serde_json::to_value(&spec.template).unwrap_or_default();
    let hash = template_hash(&template_json);
    let owned: Vec<ReplicaSet> = in_ns(store.list::<ReplicaSet>(), ns)
        .into_iter()
        .filter(|rs| owned_by(&rs.metadata, &uid))
        .collect();
    let revision_of = |rs: &ReplicaSet| -> u64 {
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    };
    let want = spec.replicas.unwrap_or(1).max(0);
    let current = owned.iter().find(|rs| {
        rs.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_TEMPLATE_HASH))
            == Some(&hash)
    });
    let rs = match current {
        Some(rs) => rs.clone(),
        None => {
            let revision = owned.iter().map(revision_of).max().unwrap_or(0) + 1;
            let mut template = spec.template.clone();
            let tm = template.metadata.get_or_insert_with(Default::default);
            tm.labels
                .get_or_insert_with(Default::default)
                .insert(POD_TEMPLATE_HASH.into(), hash.clone());
            let labels = tm.labels.clone().unwrap_or_default();
            let mut selector = spec.selector.clone();
            selector
                .match_labels
                .get_or_insert_with(Default::default)
                .insert(POD_TEMPLATE_HASH.into(), hash.clone());
            let mut annotations = BTreeMap::new();
            annotations.insert(REVISION.to_string(), revision.to_string());
            annotations.insert(
                "deployment.kubernetes.io/desired-replicas".into(),
                want.to_string(),
            );
            store.put(ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-{hash}")),
                    namespace: Some(ns.into()),
                    labels: Some(labels),
                    annotations: Some(annotations),
                    owner_references: Some(vec![owner_ref("Deployment", "apps/v1", &d.metadata)]),
                    generation: Some(1),
                    ..Default::default()
                },
                spec: ReplicaSetSpec {
                    replicas: Some(want),
                    selector,
                    template: Some(template),
                    min_ready_seconds: None,
                },
                status: None,
            })
        }
    };
    let rs_name = rs.metadata.name.clone().unwrap_or_default();
    let rs_uid = rs.metadata.uid.clone().unwrap_or_default();
    // Old ReplicaSets: scaled to 0, their pods gone (the rollout is instant).
    for old in owned.iter().filter(|o| o.metadata.uid != rs.metadata.uid) {
        for p in in_ns(store.list::<Pod>(), ns) {
            if let Some(uid) = &old.metadata.uid {
                if owned_by(&p.metadata, uid) {
                    store.remove::<Pod>(ns, p.metadata.name.as_deref().unwrap_or_default());
                }
            }
        }
        if old.spec.replicas != Some(0) {
            store.modify::<ReplicaSet>(ns, old.metadata.name.as_deref().unwrap_or_default(), |o| {
                o.spec.replicas = Some(0);
                o.status = Some(ReplicaSetStatus {
                    replicas: 0,
                    observed_generation: o.metadata.generation,
                    ..Default::default()
                });
            });
        }
    }
    // The ReplicaSet controller: as many pods as replicas.
    let mut pods: Vec<Pod> = in_ns(store.list::<Pod>(), ns)
        .into_iter()
        .filter(|p| owned_by(&p.metadata, &rs_uid))
        .collect();
    let mut rollout = None;
    while (pods.len() as i32) < want {
        let suffix = if stable_name && pods.is_empty() {
            template_hash(&serde_json::json!(rs_name))
                .chars()
                .take(5)
                .collect()
        } else {
            super::objects::random_suffix()
        };
        let pod_name = format!("{rs_name}-{suffix}");
        let pod = store.put(pod_from(&rs, ns, &pod_name));
        rollout = Some(Rollout {
            namespace: ns.into(),
            deployment: name.clone(),
            pod: pod.clone(),
        });
        pods.push(pod);
    }
    for extra in pods.iter().skip(want as usize) {
        store.remove::<Pod>(ns, extra.metadata.name.as_deref().unwrap_or_default());
    }
    let ready = want;
    let rs_status = ReplicaSetStatus {
        replicas: want,
        fully_labeled_replicas: Some(want),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        observed_generation: rs.metadata.generation,
        ..Default::default()
    };
    if rs.status.as_ref() != Some(&rs_status) {
        store.modify::<ReplicaSet>(ns, &rs_name, |o| o.status = Some(rs_status.clone()));
    }
    // The Deployment's status: the rollout is complete.
    let revision = store
        .get::<ReplicaSet>(ns, &rs_name)
        .map(|r| revision_of(&r))
        .unwrap_or(1);
    let old_status = d.status.clone().unwrap_or_default();
    let condition = |type_: &str, reason: &str, message: String| {
        let same = old_status
            .conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_.as_deref() == Some(type_)))
            .filter(|c| {
                c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(&message)
            });
        same.cloned().unwrap_or_else(|| DeploymentCondition {
            type_: Some(type_.into()),
            status: Some("True".into()),
            reason: Some(reason.into()),
            message: Some(message),
            last_update_time: Some(now()),
            last_transition_time: Some(now()),
        })
    };
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(want),
        updated_replicas: Some(want),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        conditions: Some(vec![
            condition(
                "Available",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            ),
            condition(
                "Progressing",
                "NewReplicaSetAvailable",
                format!("ReplicaSet {rs_name:?} has successfully progressed."),
            ),
        ]),
        ..Default::default()
    };
    let has_revision = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        == Some(&revision.to_string());
    if d.status.as_ref() != Some(&status) || !has_revision {
        store.modify::<Deployment>(ns, &name, |o| {
            o.status = Some(status.clone());
            o.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(REVISION.into(), revision.to_string());
        });
    }
    rollout
}

/// A pod of `rs`, scheduled and Running at once (the lab runs no
/// containers). Host-network pods get the host's address, 127.0.0.1.
fn pod_from(rs: &ReplicaSet, ns: &str, name: &str) -> Pod {
    let template = rs.spec.template.clone().unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let spec = template.spec.unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let pod_ip = if host_network {
        "127.0.0.1".to_string()
    } else {
        // A stable address per pod name, in a pod CIDR nothing dials.
        let h = template_hash(&serde_json::json!(name));
        let n = h
            .bytes()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b.into()));
        format!("10.244.{}.{}", (n >> 8) % 250, n % 250 + 2)
    };
    let ready = |t: &str| PodCondition {
        type_: t.into(),
        status: "True".into(),
        last_transition_time: Some(now()),
        ..Default::default()
    };
    let statuses = spec
        .containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            ready: true,
            started: Some(true),
            restart_count: 0,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(now()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            generate_name: Some(format!("{}-", rs.metadata.name.clone().unwrap_or_default())),
            namespace: Some(ns.into()),
            labels: tm.labels,
            annotations: tm.annotations,
            owner_references: Some(vec![owner_ref("ReplicaSet", "apps/v1", &rs.metadata)]),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: Some("lab-node".into()),
            ..spec
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            host_ip: Some("127.0.0.1".into()),
            pod_ip: Some(pod_ip),
            start_time: Some(now()),
            conditions: Some(vec![
                ready("Initialized"),
                ready("Ready"),
                ready("ContainersReady"),
                ready("PodScheduled"),
            ]),
            container_statuses: Some(statuses),
            ..Default::default()
        }),
    }
}

/// The token controller for `ns`: fills service-account-token Secrets whose
/// account exists, and deletes those whose account is gone (kube's
/// TokensController does both).
fn sync_token_secrets(
    store: &mut Store,
    ns: &str,
    ca_pem: &str,
    mint: impl Fn(&str, &str, &str, &str) -> String,
) {
    for s in in_ns(store.list::<Secret>(), ns) {
        if s.type_.as_deref() != Some(SA_TOKEN_TYPE) {
            continue;
        }
        let name = s.metadata.name.clone().unwrap_or_default();
        let ann = s.metadata.annotations.clone().unwrap_or_default();
        let Some(sa_name) = ann.get(SA_NAME) else {
            continue;
        };
        let Some(sa) = store.get::<ServiceAccount>(ns, sa_name) else {
            store.remove::<Secret>(ns, &name);
            continue;
        };
        let sa_uid = sa.metadata.uid.clone().unwrap_or_default();
        if ann.get(SA_UID).is_some_and(|u| *u != sa_uid) {
            // Made for an earlier account of that name.
            store.remove::<Secret>(ns, &name);
            continue;
        }
        let data = s.data.clone().unwrap_or_default();
        if data.contains_key("token") && ann.contains_key(SA_UID) {
            continue;
        }
        let token = mint(ns, sa_name, &sa_uid, &name);
        store.modify::<Secret>(ns, &name, |s| {
            let d = s.data.get_or_insert_with(Default::default);
            d.insert("token".into(), ByteString(token.into_bytes()));
            d.insert("ca.crt".into(), ByteString(ca_pem.as_bytes().to_vec()));
            d.insert("namespace".into(), ByteString(ns.as_bytes().to_vec()));
            s.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(SA_UID.into(), sa_uid.clone());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn deployment(env: &str) -> Deployment {
        let labels: BTreeMap<String, String> = [("app".to_string(), "x".to_string())].into();
        Deployment {
            metadata: ObjectMeta {
                name: Some("x".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: DeploymentSpec {
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            env: Some(vec![EnvVar {
                                name: "E".into(),
                                value: Some(env.into()),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
            status: None,
        }
    }

    fn pods(store: &Store) -> Vec<Pod> {
        store.list::<Pod>()
    }

    #[test]
    fn a_template_change_replaces_the_pod_and_completes_the_rollout() {
        let mut store = Store::default();
        install_deployment(&mut store, deployment("1"));
        let first = pods(&store);
        assert_eq!(first.len(), 1);
        let rs = &store.list::<ReplicaSet>()[0];
        let rs_name = rs.metadata.name.clone().unwrap();
        assert!(rs_name.starts_with("x-"), "{rs_name}");
        let pod_name = first[0].metadata.name.clone().unwrap();
        assert!(pod_name.starts_with(&format!("{rs_name}-")), "{pod_name}");
        // The same template gives the same names on every run.
        let mut again = Store::default();
        install_deployment(&mut again, deployment("1"));
        assert_eq!(
            again.list::<Pod>()[0].metadata.name.as_ref(),
            Some(&pod_name)
        );
        assert_eq!(
            owning_deployment(&store, "ns", &first[0]).as_deref(),
            Some("x")
        );
        // Nothing changed: no new pod.
        assert!(sync_workloads(&mut store, "ns").is_empty());
        store.modify::<Deployment>("ns", "x", |d| {
            *d = Deployment {
                metadata: d.metadata.clone(),
                ..deployment("2")
            };
            d.metadata.generation = Some(2);
        });
        let r = sync_workloads(&mut store, "ns");
        assert_eq!(r.len(), 1);
        let now = pods(&store);
        assert_eq!(now.len(), 1, "the old pod is gone");
        assert_ne!(now[0].metadata.name, first[0].metadata.name);
        assert_eq!(r[0].pod.metadata.name, now[0].metadata.name);
        let env = &now[0].spec.as_ref().unwrap().containers[0]
            .env
            .as_ref()
            .unwrap()[0];
        assert_eq!(env.value.as_deref(), Some("2"));
        let d: Deployment = store.get("ns", "x").unwrap();
        let st = d.status.unwrap();
        assert_eq!(st.observed_generation, Some(2));
        assert_eq!(st.updated_replicas, Some(1));
        assert_eq!(
            d.metadata
                .annotations
                .unwrap()
                .get(REVISION)
                .map(String::as_str),
            Some("2")
        );
        assert_eq!(store.list::<ReplicaSet>().len(), 2);
        // A deleted pod comes back; a deleted Deployment takes everything.
        let n = now[0].metadata.name.clone().unwrap();
        store.remove::<Pod>("ns", &n);
        assert_eq!(sync_workloads(&mut store, "ns").len(), 1);
        assert_eq!(pods(&store).len(), 1);
        store.remove::<Deployment>("ns", "x");
        sync_workloads(&mut store, "ns");
        assert!(pods(&store).is_empty());
        assert!(store.list::<ReplicaSet>().is_empty());
    }

    #[test]
    fn token_secrets_are_filled_and_follow_their_account() {
        let mut store = Store::default();
        store.put(ServiceAccount {
            metadata: ObjectMeta {
                name: Some("sa".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        let mut ann = BTreeMap::new();
        ann.insert(SA_NAME.to_string(), "sa".to_string());
        store.put(Secret {
            metadata: ObjectMeta {
                name: Some("t".into()),
                namespace: Some("ns".into()),
                annotations: Some(ann),
                ..Default::default()
            },
            type_: Some(SA_TOKEN_TYPE.into()),
            ..Default::default()
        });
        let mint = |ns: &str, sa: &str, uid: &str, s: &str| format!("{ns}/{sa}/{uid}/{s}");
        sync_token_secrets(&mut store, "ns", "CA", mint);
        let s: Secret = store.get("ns", "t").unwrap();
        let d = s.data.unwrap();
        assert!(d["token"].0.starts_with(b"ns/sa/"));
        assert_eq!(d["ca.crt"].0, b"CA");
        store.remove::<ServiceAccount>("ns", "sa");
        sync_token_secrets(&mut store, "ns", "CA", mint);
        assert!(store.get::<Secret>("ns", "t").is_none());
    }
}
