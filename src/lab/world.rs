//! Builds and starts the lab: a healthy primary-remote mesh, then one fault
//! applied to it, served by two simulated API servers and a simulated istiod.

use super::apiserver::controllers::{Rollout, install_deployment};
use super::apiserver::{ApiServer, BoundApiServer, ClusterSim, SharedCluster, proxy};
use super::faults::{Fault, FaultId, FaultId::*};
use super::istiod::{IstiodConfig, IstiodQuirks, IstiodSim, Restart};
use super::pki::Ca;
use super::profiles::{EXTERNAL_HOST, Profile};
use super::store::Store;
use super::tokens::{SigningKeys, TokenSpec, now_unix};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::*;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

pub const NS: &str = "istio-system";
pub const PRIMARY_ID: &str = "primary";
pub const REMOTE_ID: &str = "remote";
pub const GATEWAY: &str = "istio-eastwestgateway";
pub const GATEWAY_SA: &str = "istio-eastwestgateway-service-account";
pub const READER_SA: &str = "istio-reader-service-account";
pub const READER_ROLE: &str = "istio-reader-clusterrole-istio-system";
pub const REMOTE_SECRET: &str = "istio-remote-secret-remote";
pub const ISTIOD_MONITORING_PORT: u16 = 15014;
pub const PRIMARY_CONTEXT: &str = "lab-primary";
pub const REMOTE_CONTEXT: &str = "lab-remote";

/// A running lab. Dropping it does not stop the servers: call [`Lab::shutdown`].
pub struct Lab {
    pub primary: ApiServer,
    pub remote: ApiServer,
    pub istiod: IstiodSim,
    pub primary_state: SharedCluster,
    pub remote_state: SharedCluster,
    /// The first remote's cluster ID and kube context (`remote`,
    /// `lab-remote`; `remote-1`, `lab-remote-1` in a lab of several).
    pub remote_id: String,
    pub remote_context: String,
    /// Remotes 2 to N of `lab --remotes N`.
    pub extra_remotes: Vec<LabRemote>,
    /// Which remote the fault is on (from 1), when there is one.
    pub fault_at: Option<usize>,
    /// A kubeconfig with contexts lab-primary and lab-remote (admin tokens;
    /// lab-remote-1 to lab-remote-N in a lab of several).
    pub kubeconfig_yaml: String,
    pub istiod_addr: SocketAddr,
    pub fault: Option<&'static Fault>,
    pub profile: Profile,
    /// `external-istiod`: the public CA istiod's serving certificate is
    /// from, which stands for the platform's roots of the trace.
    pub public_root_pem: Option<String>,
}

/// One more remote of a lab of several (`lab --remotes N`).
pub struct LabRemote {
    pub cluster_id: String,
    pub context: String,
    pub api: ApiServer,
    pub state: SharedCluster,
}

/// The Secret `istioctl create-remote-secret --name=ID` writes.
pub fn secret_name_for(cluster_id: &str) -> String {
    format!("istio-remote-secret-{cluster_id}")
}

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: if ns.is_empty() { None } else { Some(ns.into()) },
        ..Default::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig with one cluster/user/context, inline CA data and token, as
/// istioctl create-remote-secret writes it.
pub fn kubeconfig(name: &str, server: &str, ca_pem: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    certificate-authority-data: {ca}\n    server: {server}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\ncurrent-context: {name}\nusers:\n- name: {name}\n  user:\n    token: {token}\npreferences: {{}}\n",
        ca = b64(ca_pem)
    )
}

/// A closed loopback port: bound then released, so a dial is refused.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9)
}

fn has(fault: Option<&Fault>, id: FaultId) -> bool {
    fault.is_some_and(|f| f.id == id)
}

fn new_cluster(name: &str, issuer: &str) -> ClusterSim {
    let keys = Arc::new(SigningKeys::generate(issuer));
    ClusterSim {
        name: name.into(),
        keys,
        api_audiences: vec![issuer.to_string()],
        admin_token: format!("lab-admin-{}", hex::encode(rand_bytes())),
        store: Store::default(),
        pod_proxies: BTreeMap::new(),
        ca_pem: String::new(),
        on_rollout: None,
    }
}

fn rand_bytes() -> [u8; 16] {
    // Admin tokens only guard a loopback lab for its lifetime; a fresh key's
    // public bytes are unpredictable enough and need no extra dependency.
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key generation");
    let raw = kp.public_key_raw();
    let mut out = [0u8; 16];
    out.copy_from_slice(&raw[raw.len() - 16..]);
    out
}

fn namespace(
    store: &mut Store,
    name: &str,
    network: &str,
    annotations: Option<BTreeMap<String, String>>,
) {
    let mut m = meta("", name);
    m.labels = labels(&[("topology.istio.io/network", network)]);
    m.annotations = annotations;
    store.put(Namespace {
        metadata: m,
        ..Default::default()
    });
}

fn service_account(store: &mut Store, ns: &str, name: &str) -> String {
    let sa = store.put(ServiceAccount {
        metadata: meta(ns, name),
        ..Default::default()
    });
    sa.metadata.uid.unwrap_or_default()
}

fn reader_rules(with_tokenreviews: bool) -> Vec<PolicyRule> {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let mut rules = vec![
        rule(
            &[
                "config.istio.io",
                "security.istio.io",
                "networking.istio.io",
                "authentication.istio.io",
                "rbac.istio.io",
                "telemetry.istio.io",
                "extensions.istio.io",
            ],
            &["*"],
            &["get", "list", "watch"],
        ),
        rule(
            &[""],
            &[
                "endpoints",
                "pods",
                "services",
                "nodes",
                "replicationcontrollers",
                "namespaces",
                "secrets",
                "configmaps",
            ],
            &["get", "list", "watch"],
        ),
        rule(
            &["discovery.k8s.io"],
            &["endpointslices"],
            &["get", "list", "watch"],
        ),
        rule(&["apps"], &["replicasets"], &["get", "list", "watch"]),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &["create"],
        ),
    ];
    if with_tokenreviews {
        rules.push(rule(
            &["authentication.k8s.io"],
            &["tokenreviews"],
            &["create"],
        ));
    }
    rules
}

struct Built {
    primary: ClusterSim,
    remote: ClusterSim,
    quirks: IstiodQuirks,
    signer: Arc<Ca>,
}

/// What the simulated istiod reads when it starts, from its pod (env, with
/// `fieldRef`s resolved) and the primary's mesh config, as istiod does:
/// TOKEN_AUDIENCES, the trust domain, and the DNS names of its serving
/// certificate (istiod, istiod-remote and istio-pilot in POD_NAMESPACE, plus
/// ISTIOD_CUSTOM_HOST; pilot/pkg/bootstrap getDNSNames).
fn istiod_settings(pod: &Pod, store: &Store) -> (Vec<String>, String, Vec<String>) {
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == "discovery"));
    let env = |name: &str| -> Option<String> {
        let v = container?.env.as_ref()?.iter().find(|e| e.name == name)?;
        if let Some(value) = &v.value {
            return Some(value.clone());
        }
        match v
            .value_from
            .as_ref()?
            .field_ref
            .as_ref()?
            .field_path
            .as_str()
        {
            "metadata.namespace" => pod.metadata.namespace.clone(),
            "metadata.name" => pod.metadata.name.clone(),
            _ => None,
        }
    };
    let list = |v: Option<String>| -> Vec<String> {
        v.unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut audiences = list(env("TOKEN_AUDIENCES"));
    if audiences.is_empty() {
        audiences.push("istio-ca".into());
    }
    let pod_ns = env("POD_NAMESPACE").unwrap_or_else(|| NS.into());
    let revision = env("REVISION").filter(|r| !r.is_empty() && r != "default");
    let mut hosts = vec![
        "istiod".to_string(),
        "istiod-remote".into(),
        "istio-pilot".into(),
    ];
    if let Some(r) = &revision {
        hosts.push(format!("istiod-{r}"));
    }
    let mut dns: Vec<String> = hosts.iter().map(|h| format!("{h}.{pod_ns}.svc")).collect();
    for h in list(env("ISTIOD_CUSTOM_HOST")) {
        if !dns.contains(&h) {
            dns.push(h);
        }
    }
    let mesh_cm = match &revision {
        Some(r) => format!("istio-{r}"),
        None => "istio".into(),
    };
    let trust_domain = store
        .get::<ConfigMap>(NS, &mesh_cm)
        .and_then(|cm| cm.data?.get("mesh").cloned())
        .and_then(|mesh| {
            mesh.lines().find_map(|l| {
                l.strip_prefix("trustDomain:")
                    .map(|v| v.trim().trim_matches('"').to_string())
            })
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "cluster.local".into());
    (audiences, trust_domain, dns)
}

/// The lab's istiod pod now (the istiod Deployment's pod).
fn istiod_pod_now(store: &Store) -> Option<Pod> {
    store.list::<Pod>().into_iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(NS)
            && p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.get("app").map(String::as_str) == Some("istiod"))
    })
}

impl Lab {
    /// Start a lab, healthy or with one fault.
    pub async fn start(fault: Option<&'static Fault>) -> std::io::Result<Lab> {
        Self::start_with(fault, |_| {}).await
    }

    /// [`Lab::start`], with the simulated istiod's behaviour changed by
    /// `edit` (the hostile-peer tests make it echo metadata or pad chains).
    pub async fn start_with(
        fault: Option<&'static Fault>,
        edit: impl FnOnce(&mut IstiodQuirks),
    ) -> std::io::Result<Lab> {
        Self::start_profile(Profile::Default, fault, edit).await
    }

    /// A lab of install profile `profile` (docs/profiles.md), healthy or
    /// with one fault.
    pub async fn start_profile(
        profile: Profile,
        fault: Option<&'static Fault>,
        edit: impl FnOnce(&mut IstiodQuirks),
    ) -> std::io::Result<Lab> {
        Self::start_fleet(profile, 1, fault, 1, edit).await
    }

    /// A lab with `remotes` remote clusters (at least one) around one
    /// primary and one istiod, all under the one mesh root: `meshtrace lab
    /// --remotes N`. With one remote it is the two-cluster lab (cluster ID
    /// `remote`, context `lab-remote`); with more, remote *i* (from 1) has
    /// cluster ID `remote-i` and context `lab-remote-i`, each its own API
    /// server, signing keys, gateway and remote secret. `fault` is applied
    /// as the two-cluster lab applies it, to remote `fault_at` (from 1) and
    /// its remote secret; what it changes in the primary's own setup
    /// (istiod, its CA, its exposure) is the primary's for every remote.
    pub async fn start_fleet(
        profile: Profile,
        remotes: usize,
        fault: Option<&'static Fault>,
        fault_at: usize,
        edit: impl FnOnce(&mut IstiodQuirks),
    ) -> std::io::Result<Lab> {
        crate::install_crypto_provider();
        let n = remotes.max(1);
        let base = fault_at.clamp(1, n) - 1;
        let names: Vec<(String, String)> = if n == 1 {
            vec![(REMOTE_ID.to_string(), REMOTE_CONTEXT.to_string())]
        } else {
            (1..=n)
                .map(|i| (format!("{REMOTE_ID}-{i}"), format!("{REMOTE_CONTEXT}-{i}")))
                .collect()
        };
        let fault_of = |i: usize| if i == base { fault } else { None };
        let primary_api_ca = Ca::root("lab-primary-apiserver-ca", "meshtrace lab", 365);
        let root_days = if has(fault, RootExpiring) { 3 } else { 3650 };
        let mesh_root = Ca::root("lab mesh root", "meshtrace lab", root_days);
        let signer = Arc::new(mesh_root.intermediate(
            "lab mesh intermediate (primary)",
            "meshtrace lab",
            365,
        ));

        let primary_bound = BoundApiServer::bind(&primary_api_ca)?;
        let mut remote_bounds = Vec::with_capacity(n);
        for (_, context) in &names {
            let ca = Ca::root(&format!("{context}-apiserver-ca"), "meshtrace lab", 365);
            remote_bounds.push(BoundApiServer::bind(&ca)?);
        }
        let mut builts: Vec<Built> = names
            .iter()
            .zip(&remote_bounds)
            .enumerate()
            .map(|(i, ((rid, _), bound))| {
                build(
                    fault_of(i),
                    profile,
                    bound,
                    &primary_bound.url,
                    &mesh_root,
                    signer.clone(),
                    rid,
                )
            })
            .collect();
        // One primary: the faulted remote's build (a fault of the primary's
        // own setup is in it), with every other remote's secret added.
        let mut b = builts.remove(base);
        let mut remote_sims: Vec<ClusterSim> = builts
            .into_iter()
            .map(|x| {
                let rid_secrets: Vec<Secret> = x.primary.store.list::<Secret>();
                for sec in rid_secrets {
                    if sec
                        .metadata
                        .name
                        .as_deref()
                        .is_some_and(|nm| nm.starts_with("istio-remote-secret-"))
                    {
                        b.primary.store.put(sec);
                    }
                }
                x.remote
            })
            .collect();
        // Back in index order: the base remote at its place.
        remote_sims.insert(
            base,
            std::mem::replace(&mut b.remote, new_cluster("x", "x")),
        );
        // external-istiod: istiod serves 15012 with a certificate for its
        // public name from a public CA (istiod's --tlsCertFile), not its own.
        let public_ca = (profile == Profile::ExternalIstiod)
            .then(|| Arc::new(Ca::root("lab public root", "meshtrace lab public CA", 3650)));
        let serving_ca = public_ca.clone().unwrap_or_else(|| signer.clone());
        b.primary.ca_pem = primary_bound.ca_pem.clone();
        for (sim, bound) in remote_sims.iter_mut().zip(&remote_bounds) {
            sim.ca_pem = bound.ca_pem.clone();
        }
        edit(&mut b.quirks);

        let primary_state: SharedCluster = Arc::new(RwLock::new(std::mem::replace(
            &mut b.primary,
            new_cluster("x", "x"),
        )));
        let primary = primary_bound.serve(primary_state.clone());
        let mut served: Vec<LabRemote> = Vec::with_capacity(n);
        for ((sim, bound), (rid, context)) in remote_sims.into_iter().zip(remote_bounds).zip(&names)
        {
            let state: SharedCluster = Arc::new(RwLock::new(sim));
            served.push(LabRemote {
                cluster_id: rid.clone(),
                context: context.clone(),
                api: bound.serve(state.clone()),
                state,
            });
        }
        let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        // istiod starts from its pod and the mesh config, as it restarts.
        let (token_audiences, trust_domain, mut dns) = {
            let p = primary_state.read().unwrap_or_else(|e| e.into_inner());
            let pod = istiod_pod_now(&p.store).unwrap_or_default();
            istiod_settings(&pod, &p.store)
        };
        if public_ca.is_some() {
            dns.insert(0, EXTERNAL_HOST.to_string());
        }
        let dns_refs: Vec<&str> = dns.iter().map(String::as_str).collect();
        let serving = serving_ca.server_cert("istiod", &dns_refs, &ips, 365);
        let istiod = IstiodSim::start(IstiodConfig {
            local_cluster_id: PRIMARY_ID.into(),
            namespace: NS.into(),
            trust_domain,
            token_audiences,
            signer: b.signer.clone(),
            serving,
            primary: primary_state.clone(),
            primary_url: primary.url.clone(),
            primary_ca_pem: primary.ca_pem.clone(),
            quirks: b.quirks.clone(),
        })
        .await?;
        let istiod_addr = istiod.addr();

        // The API server's pod proxy reaches the monitoring port of the
        // istiod Deployment's pod, whichever it is now: kubectl get --raw
        // /api/v1/namespaces/istio-system/pods/<istiod's pod>:15014/proxy/debug/clusterz
        // A rollout of that Deployment (set env, rollout restart, a deleted
        // pod) restarts the simulated istiod with the new pod's settings.
        {
            let mut p = primary_state.write().unwrap_or_else(|e| e.into_inner());
            p.pod_proxies.insert(
                proxy::deployment_key(
                    NS,
                    profile.istiod_deployment(),
                    &ISTIOD_MONITORING_PORT.to_string(),
                ),
                istiod.monitoring_addr,
            );
            let handle = istiod.handle();
            let serving_ca = serving_ca.clone();
            let external = public_ca.is_some();
            p.on_rollout = Some(Arc::new(move |cl: &mut ClusterSim, r: &Rollout| {
                if r.namespace != NS || r.deployment != profile.istiod_deployment() {
                    return;
                }
                let (token_audiences, trust_domain, mut dns) = istiod_settings(&r.pod, &cl.store);
                if external {
                    dns.insert(0, EXTERNAL_HOST.to_string());
                }
                let dns: Vec<&str> = dns.iter().map(String::as_str).collect();
                handle.restart(Restart {
                    token_audiences,
                    trust_domain,
                    serving: Some(serving_ca.server_cert("istiod", &dns, &ips, 365)),
                });
            }));
        }

        // The primary exposes istiod on its east-west gateway: a LoadBalancer
        // Service whose address and tls-istiod port lead to the simulated
        // istiod (127.0.0.1 and istiod's port, the lab's "exposed address").
        // istiod-unreachable: both the exposure and the remote's slice lead
        // to a closed port (what a dropped path looks like from here).
        let closed = closed_port();
        let exposed_port = if has(fault, IstiodUnreachable) {
            closed
        } else {
            istiod_addr.port()
        };
        // 15017's role: the lab istiod's webhook listener (its own port on
        // loopback); webhook-port-closed: exposed and sliced as a closed port,
        // as a load balancer without 15017 looks from the remote.
        let webhook_port = if has(fault, WebhookPortClosed) {
            closed_port()
        } else {
            istiod.webhook_addr.port()
        };
        {
            let mut p = primary_state.write().unwrap_or_else(|e| e.into_inner());
            let mut ew = primary_eastwest_gateway(exposed_port, webhook_port);
            if has(fault, ExposureNoWebhookPort) {
                if let Some(ports) = ew.spec.as_mut().and_then(|s| s.ports.as_mut()) {
                    ports.retain(|p| p.name.as_deref() != Some("tls-webhook"));
                }
            }
            if has(fault, ExposureLbPending) {
                ew.status = Some(ServiceStatus::default());
            }
            p.store.put(ew);
            expose_istiod(&mut p.store, profile, fault);
        }
        // The remote's istiod EndpointSlice holds the primary's exposed address:
        // here, the simulated istiod itself (or a closed port for those faults).
        for (i, remote) in served.iter().enumerate() {
            let fault = fault_of(i);
            let mut r = remote.state.write().unwrap_or_else(|e| e.into_inner());
            let port = if has(fault, IstiodUnreachable) || has(fault, ExposureAddressMismatch) {
                closed
            } else {
                istiod_addr.port()
            };
            let service = profile.remote_service();
            if let (Some(service), false, false) = (
                service,
                has(fault, IstiodNoEndpoints),
                has(fault, IstiodServiceMissing),
            ) {
                r.store.put(EndpointSlice {
                    metadata: ObjectMeta {
                        labels: labels(&[
                            ("kubernetes.io/service-name", service),
                            ("endpointslice.kubernetes.io/managed-by", "meshtrace-lab"),
                        ]),
                        ..meta(NS, &format!("{service}-lab"))
                    },
                    address_type: "IPv4".into(),
                    endpoints: Some(vec![Endpoint {
                        addresses: vec!["127.0.0.1".into()],
                        ..Default::default()
                    }]),
                    ports: Some(vec![
                        EndpointPort {
                            name: Some("tcp-istiod".into()),
                            port: Some(port as i32),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        },
                        EndpointPort {
                            name: Some("tcp-webhook".into()),
                            port: Some(webhook_port as i32),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        },
                    ]),
                });
            }
            // The sidecar injector's webhook, as Istio's chart makes it for
            // the remote profile (mutatingwebhook.yaml): a reference to the
            // istiod Service (an injectionURL for an external istiod), the
            // mesh root as caBundle.
            if !has(fault, WebhookMissing) {
                let ca = match (&public_ca, has(fault, WebhookCaBundleMismatch)) {
                    (_, true) => Ca::root("lab other root", "meshtrace lab", 3650)
                        .cert_pem
                        .clone(),
                    (Some(p), _) => p.cert_pem.clone(),
                    (None, _) => mesh_root.cert_pem.clone(),
                };
                let target = match (service, has(fault, WebhookWrongService)) {
                    (_, true) => Injector::Service("istiod-canary"),
                    (Some(svc), _) => Injector::Service(svc),
                    (None, _) => Injector::Url(format!(
                        "https://{EXTERNAL_HOST}:15017/inject/cluster/{REMOTE_ID}/net/network2"
                    )),
                };
                r.store
                    .put(injector_config(profile.revision(), &target, &ca));
            }
        }

        let pa = {
            let p = primary_state.read().unwrap_or_else(|e| e.into_inner());
            p.admin_token.clone()
        };
        let mut clusters = format!(
            "- name: {PRIMARY_CONTEXT}\n  cluster:\n    certificate-authority-data: {}\n    server: {}\n",
            b64(&primary.ca_pem),
            primary.url
        );
        let mut users = format!("- name: {PRIMARY_CONTEXT}-admin\n  user:\n    token: {pa}\n");
        let mut contexts = format!(
            "- name: {PRIMARY_CONTEXT}\n  context:\n    cluster: {PRIMARY_CONTEXT}\n    user: {PRIMARY_CONTEXT}-admin\n    namespace: {NS}\n"
        );
        for r in &served {
            let ra = r
                .state
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .admin_token
                .clone();
            let c = &r.context;
            clusters.push_str(&format!(
                "- name: {c}\n  cluster:\n    certificate-authority-data: {}\n    server: {}\n",
                b64(&r.api.ca_pem),
                r.api.url
            ));
            users.push_str(&format!("- name: {c}-admin\n  user:\n    token: {ra}\n"));
            contexts.push_str(&format!(
                "- name: {c}\n  context:\n    cluster: {c}\n    user: {c}-admin\n    namespace: {NS}\n"
            ));
        }
        let kubeconfig_yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n{clusters}users:\n{users}contexts:\n{contexts}current-context: {PRIMARY_CONTEXT}\npreferences: {{}}\n"
        );
        let mut served = served.into_iter();
        let first = served.next().expect("at least one remote");
        Ok(Lab {
            primary,
            remote: first.api,
            istiod,
            primary_state,
            remote_state: first.state,
            remote_id: first.cluster_id,
            remote_context: first.context,
            extra_remotes: served.collect(),
            fault_at: fault.map(|_| base + 1),
            kubeconfig_yaml,
            istiod_addr,
            fault,
            profile,
            // The platform's roots: the public CA's, or (xds-root-ca-mismatch)
            // a public root that never signed istiod's certificate.
            public_root_pem: public_ca.map(|c| c.cert_pem.clone()).or_else(|| {
                has(fault, XdsRootCaMismatch)
                    .then(|| Ca::root("lab public root", "meshtrace lab public CA", 3650).cert_pem)
            }),
        })
    }

    /// The name of the istiod Deployment's pod now (its monitoring port,
    /// 15014, is the simulated istiod's, through the primary's pod proxy).
    pub fn istiod_pod(&self) -> String {
        let p = self.primary_state.read().unwrap_or_else(|e| e.into_inner());
        istiod_pod_now(&p.store)
            .and_then(|p| p.metadata.name)
            .unwrap_or_default()
    }

    /// The name of the east-west gateway's pod now.
    pub fn gateway_pod(&self) -> String {
        let r = self.remote_state.read().unwrap_or_else(|e| e.into_inner());
        r.store
            .list::<Pod>()
            .into_iter()
            .find(|p| {
                p.metadata.namespace.as_deref() == Some(NS)
                    && p.metadata
                        .labels
                        .as_ref()
                        .is_some_and(|l| l.get("app").map(String::as_str) == Some(GATEWAY))
            })
            .and_then(|p| p.metadata.name)
            .unwrap_or_default()
    }

    pub fn shutdown(&self) {
        self.istiod.shutdown();
        self.primary.shutdown();
        self.remote.shutdown();
        for r in &self.extra_remotes {
            r.api.shutdown();
        }
    }

    /// Every remote: (cluster ID, context, API server URL), in index order.
    pub fn remotes(&self) -> Vec<(&str, &str, &str)> {
        std::iter::once((
            self.remote_id.as_str(),
            self.remote_context.as_str(),
            self.remote.url.as_str(),
        ))
        .chain(self.extra_remotes.iter().map(|r| {
            (
                r.cluster_id.as_str(),
                r.context.as_str(),
                r.api.url.as_str(),
            )
        }))
        .collect()
    }
}

/// Where the injector's webhook points.
enum Injector {
    Service(&'static str),
    Url(String),
}

/// The MutatingWebhookConfiguration Istio's chart renders for `rev` with
/// the remote profile (istiodRemote.injectionPath
/// `/inject/cluster/<id>/net/<network>`, or istiodRemote.injectionURL).
fn injector_config(rev: &str, target: &Injector, ca_pem: &str) -> MutatingWebhookConfiguration {
    let client = match target {
        Injector::Service(name) => serde_json::json!({"service": {
            "name": name, "namespace": NS, "port": 443,
            "path": format!("/inject/cluster/{REMOTE_ID}/net/network2"),
        }, "caBundle": b64(ca_pem)}),
        Injector::Url(u) => serde_json::json!({"url": u, "caBundle": b64(ca_pem)}),
    };
    let not_false = serde_json::json!({"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]});
    let rev_in = serde_json::json!({"key": "istio.io/rev", "operator": "In", "values": [rev]});
    let absent = |k: &str| serde_json::json!({"key": k, "operator": "DoesNotExist"});
    let mut hooks = vec![
        (
            "rev.namespace.",
            vec![rev_in.clone(), absent("istio-injection")],
            vec![not_false.clone()],
        ),
        (
            "rev.object.",
            vec![absent("istio.io/rev"), absent("istio-injection")],
            vec![not_false.clone(), rev_in],
        ),
    ];
    if rev == "default" {
        hooks.push((
            "namespace.",
            vec![serde_json::json!({"key": "istio-injection", "operator": "In", "values": ["enabled"]})],
            vec![not_false],
        ));
        hooks.push((
            "object.",
            vec![absent("istio-injection"), absent("istio.io/rev")],
            vec![
                serde_json::json!({"key": "sidecar.istio.io/inject", "operator": "In", "values": ["true"]}),
                absent("istio.io/rev"),
            ],
        ));
    }
    let webhooks: Vec<serde_json::Value> = hooks
        .into_iter()
        .map(|(prefix, ns_sel, obj_sel)| {
            serde_json::json!({
                "name": format!("{prefix}sidecar-injector.istio.io"),
                "clientConfig": client,
                "sideEffects": "None",
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "admissionReviewVersions": ["v1"],
                "namespaceSelector": {"matchExpressions": ns_sel},
                "objectSelector": {"matchExpressions": obj_sel},
            })
        })
        .collect();
    let name = if rev == "default" {
        "istio-sidecar-injector".to_string()
    } else {
        format!("istio-sidecar-injector-{rev}")
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {
            "istio.io/rev": rev, "app": "sidecar-injector", "app.kubernetes.io/name": "istiod",
            "operator.istio.io/component": "Pilot",
        }},
        "webhooks": webhooks,
    }))
    .unwrap_or_default()
}

/// The form of the primary's plug-in CA Secret `cacerts`, as istiod detects
/// it (detectSigningCABundleAndCRL, pilot/pkg/bootstrap/istio_ca.go).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaForm {
    /// istiod's own files: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem.
    #[default]
    Pem,
    /// cert-manager's kubernetes.io/tls Secret: tls.crt, tls.key, ca.crt
    /// (tls.crt present means this form).
    Tls,
}

/// The primary's `cacerts` in `form`, signed by `signer` under `root`;
/// `partial` leaves out the chain file (cert-chain.pem, or for the tls form
/// ca.crt), which istiod refuses as an incomplete bundle.
pub fn cacerts_secret(form: CaForm, signer: &Ca, root: &Ca, partial: bool) -> Secret {
    let mut data = BTreeMap::new();
    let put = |d: &mut BTreeMap<String, ByteString>, k: &str, v: &str| {
        d.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    };
    let type_ = match form {
        CaForm::Pem => {
            put(&mut data, "ca-cert.pem", &signer.cert_pem);
            put(&mut data, "ca-key.pem", signer.key_pem_for_lab_secret());
            put(&mut data, "root-cert.pem", &root.cert_pem);
            if !partial {
                put(&mut data, "cert-chain.pem", &signer.chain_pem.concat());
            }
            "Opaque"
        }
        CaForm::Tls => {
            put(&mut data, "tls.crt", &signer.cert_pem);
            put(&mut data, "tls.key", signer.key_pem_for_lab_secret());
            if !partial {
                put(&mut data, "ca.crt", &root.cert_pem);
            }
            "kubernetes.io/tls"
        }
    };
    Secret {
        metadata: meta(NS, "cacerts"),
        data: Some(data),
        type_: Some(type_.into()),
        ..Default::default()
    }
}

fn build(
    fault: Option<&'static Fault>,
    profile: Profile,
    remote_bound: &BoundApiServer,
    primary_url: &str,
    mesh_root: &Ca,
    signer: Arc<Ca>,
    rid: &str,
) -> Built {
    let now = now_unix();
    let remote_secret = secret_name_for(rid);
    let mut primary = new_cluster("lab-primary", "https://primary.invalid");
    let mut remote = new_cluster("lab-remote", "https://remote.invalid");
    let gw_network = "network2";

    // ---- remote cluster ----
    let r = &mut remote.store;
    let mut ann = BTreeMap::new();
    ann.insert(
        "topology.istio.io/controlPlaneClusters".to_string(),
        PRIMARY_ID.to_string(),
    );
    namespace(r, NS, gw_network, Some(ann));
    namespace(r, "default", gw_network, None);
    auth_delegator(r);
    let reader_uid = service_account(r, NS, READER_SA);
    let gw_sa_uid = service_account(r, NS, GATEWAY_SA);
    let _ = gw_sa_uid;
    r.put(ClusterRole {
        metadata: meta("", READER_ROLE),
        rules: Some(reader_rules(!has(fault, NoTokenreviewRbac))),
        ..Default::default()
    });
    r.put(ClusterRoleBinding {
        metadata: meta("", READER_ROLE),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: READER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: READER_SA.into(),
            namespace: Some(NS.into()),
            ..Default::default()
        }]),
    });
    // The istiod Service: no selector, 15012 and 443->15017; named as the
    // gateway's address names it (istiod, istiod-<rev>, istiod-remote).
    if let (Some(service), false) = (profile.remote_service(), has(fault, IstiodServiceMissing)) {
        let selector = if has(fault, IstiodServiceSelector) {
            labels(&[("app", "istiod")])
        } else {
            None
        };
        r.put(Service {
            metadata: meta(NS, service),
            spec: Some(ServiceSpec {
                selector,
                ports: Some(vec![
                    ServicePort {
                        name: Some("tcp-istiod".into()),
                        port: 15012,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    },
                    ServicePort {
                        name: Some("tcp-webhook".into()),
                        port: 443,
                        target_port: Some(
                            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15017),
                        ),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    },
                ]),
                cluster_ip: Some("10.0.0.12".into()),
                type_: Some("ClusterIP".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    // The east-west gateway: Service, ServiceAccount, Pod.
    let svc_network = if has(fault, NetworkMismatch) {
        "network1"
    } else {
        gw_network
    };
    r.put(Service {
        metadata: ObjectMeta {
            labels: labels(&[("topology.istio.io/network", svc_network), ("app", GATEWAY)]),
            ..meta(NS, GATEWAY)
        },
        spec: Some(ServiceSpec {
            selector: labels(&[("app", GATEWAY)]),
            ports: Some(vec![ServicePort {
                name: Some("tls".into()),
                port: 15443,
                ..Default::default()
            }]),
            type_: Some("LoadBalancer".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let gw_cluster_id = if has(fault, ClusterIdIsPrimary) {
        PRIMARY_ID
    } else {
        rid
    };
    // The injector's downward-API env (the gateway injection template); a
    // hand-written literal POD_NAMESPACE makes the node claim another
    // namespace than its identity's.
    let mut gw_env = vec![
        env("PILOT_CERT_PROVIDER", "istiod"),
        field_env("POD_NAME", "metadata.name"),
        if has(fault, XdsNodeNamespace) {
            env("POD_NAMESPACE", "istio-gateways")
        } else {
            field_env("POD_NAMESPACE", "metadata.namespace")
        },
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ];
    // As Istio's injector writes the mesh's defaultConfig for the agent:
    // discoveryAddress is the address CA_ADDR names (or, without CA_ADDR,
    // the one both use).
    let discovery = if has(fault, XdsDiscoveryAddressMissing) {
        "istiod-remote.istio-system.svc:15012".to_string()
    } else {
        profile
            .ca_addr()
            .unwrap_or_else(|| "istiod-remote.istio-system.svc:15012".into())
    };
    if let Some(a) = profile.ca_addr() {
        gw_env.push(env("CA_ADDR", &a));
    }
    gw_env.push(env(
        "PROXY_CONFIG",
        &serde_json::json!({"discoveryAddress": discovery}).to_string(),
    ));
    if profile == Profile::ExternalIstiod {
        gw_env.push(env("CA_ROOT_CA", "SYSTEM"));
        gw_env.push(env("XDS_ROOT_CA", "SYSTEM"));
    }
    if has(fault, XdsRootCaMismatch) {
        // Copied from an external-istiod install: xDS verified with the
        // platform's roots, while istiod serves the mesh CA's certificate.
        gw_env.push(env("XDS_ROOT_CA", "SYSTEM"));
    }
    gw_env.push(env("ISTIO_META_NETWORK", gw_network));
    gw_env.push(env("TRUST_DOMAIN", profile.trust_domain()));
    if !has(fault, GatewayNoClusterId) {
        gw_env.push(env("ISTIO_META_CLUSTER_ID", gw_cluster_id));
    }
    let audience = if has(fault, GatewayAudience) {
        "kubernetes.default.svc"
    } else {
        profile.gateway_audience()
    };
    let mut volumes = vec![Volume {
        name: "istiod-ca-cert".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: "istio-ca-root-cert".into(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if !has(fault, GatewayNoProjectedToken) {
        volumes.push(Volume {
            name: "istio-token".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(audience.into()),
                        expiration_seconds: Some(43200),
                        path: "istio-token".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    // Without its projected token the gateway has no mount for it either
    // (a pod cannot mount a volume it does not have).
    let mut mounts = vec![VolumeMount {
        name: "istiod-ca-cert".into(),
        mount_path: "/var/run/secrets/istio".into(),
        ..Default::default()
    }];
    if !has(fault, GatewayNoProjectedToken) {
        mounts.insert(
            0,
            VolumeMount {
                name: "istio-token".into(),
                mount_path: "/var/run/secrets/tokens".into(),
                ..Default::default()
            },
        );
    }
    // The gateway: a Deployment whose pod keeps the lab's name; a change of
    // its template replaces the pod, as a rollout does.
    install_deployment(
        r,
        deployment(
            NS,
            GATEWAY,
            &[("app", GATEWAY), ("istio", "eastwestgateway")],
            &[
                ("app", GATEWAY),
                ("istio", "eastwestgateway"),
                ("topology.istio.io/network", gw_network),
                ("istio.io/rev", profile.revision()),
            ],
            PodSpec {
                service_account_name: Some(GATEWAY_SA.into()),
                containers: vec![Container {
                    name: "istio-proxy".into(),
                    image: Some("docker.io/istio/proxyv2:1.28.0".into()),
                    env: Some(gw_env),
                    volume_mounts: Some(mounts),
                    ..Default::default()
                }],
                volumes: Some(volumes),
                ..Default::default()
            },
        ),
    );
    if has(fault, GatewaySaDeleted) {
        r.remove::<ServiceAccount>(NS, GATEWAY_SA);
    }
    // The root the primary istiod writes into the remote (EXTERNAL_ISTIOD).
    let remote_root = if has(fault, StaleRoot) {
        Ca::root("lab mesh root (before rotation)", "meshtrace lab", 3650).cert_pem
    } else {
        mesh_root.cert_pem.clone()
    };
    if !has(fault, RootConfigmapMissing) {
        for ns in [NS, "default"] {
            let mut data = BTreeMap::new();
            data.insert("root-cert.pem".to_string(), remote_root.clone());
            r.put(ConfigMap {
                metadata: meta(ns, "istio-ca-root-cert"),
                data: Some(data),
                ..Default::default()
            });
        }
    }

    // The reader token in the remote secret, as istioctl would get it.
    let token_exp = if has(fault, ReaderTokenExpired) {
        now - 3600
    } else if has(fault, ReaderTokenExpiring) {
        now + 2 * 86400
    } else {
        now + 365 * 86400
    };
    let issuer_keys = if has(fault, ReaderTokenOtherCluster) {
        primary.keys.clone()
    } else {
        remote.keys.clone()
    };
    let reader_token = issuer_keys.mint(&TokenSpec {
        namespace: NS.into(),
        service_account: READER_SA.into(),
        // A token from another cluster names that cluster's account, with its own uid.
        service_account_uid: if has(fault, ReaderTokenOtherCluster) {
            "00000000-0000-4000-8000-0000000000ff".into()
        } else {
            reader_uid
        },
        audiences: remote.api_audiences.clone(),
        issued_at: now - 7200,
        expires_at: token_exp,
        pod: None,
    });
    if has(fault, ReaderSaDeleted) {
        remote.store.remove::<ServiceAccount>(NS, READER_SA);
    }

    // ---- primary cluster ----
    let p = &mut primary.store;
    auth_delegator(p);
    namespace(p, NS, "network1", None);
    namespace(p, "default", "network1", None);
    // cert-manager's form in the cert-manager-ca profile: tls.crt (the
    // signing CA), tls.key, ca.crt (the root); istiod takes it when tls.crt
    // is there (detectSigningCABundleAndCRL).
    let form = if profile == Profile::CertManagerCa {
        CaForm::Tls
    } else {
        CaForm::Pem
    };
    p.put(cacerts_secret(
        form,
        &signer,
        mesh_root,
        has(fault, PartialCacerts),
    ));
    let mut root_cm = BTreeMap::new();
    root_cm.insert("root-cert.pem".to_string(), mesh_root.cert_pem.clone());
    p.put(ConfigMap {
        metadata: meta(NS, "istio-ca-root-cert"),
        data: Some(root_cm),
        ..Default::default()
    });

    // The remote secret.
    let remote_ca = if has(fault, WrongCaData) {
        Ca::root("some other CA", "meshtrace lab", 365).cert_pem
    } else {
        remote_bound.ca_pem.clone()
    };
    let server = if has(fault, ApiServerUnreachable) {
        format!("https://127.0.0.1:{}", closed_port())
    } else if has(fault, SecretPointsAtPrimary) {
        // Written with a wrong --server: the primary's address, trailing slash and all.
        format!("{}/", primary_url.trim_end_matches('/'))
    } else {
        remote_bound.url.clone()
    };
    let mismatched = format!("{rid}-1");
    let key = if has(fault, ClusterIdMismatch) {
        mismatched.as_str()
    } else if has(fault, ClusterIdIsPrimary) {
        PRIMARY_ID
    } else {
        rid
    };
    let good = kubeconfig(rid, &server, &remote_ca, &reader_token);
    let kc = match fault.map(|f| f.id) {
        Some(KubeconfigEmpty) => String::new(),
        Some(KubeconfigNotYaml) => "this: is: not: yaml: [".into(),
        Some(KubeconfigNoCurrentContext) => good.replace(&format!("current-context: {rid}\n"), ""),
        Some(KubeconfigExec) => good.replace(
            &format!("    token: {reader_token}\n"),
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n      args: [eks, get-token, --cluster-name, remote]\n",
        ),
        Some(KubeconfigTokenFile) => good.replace(&format!("    token: {reader_token}\n"), "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n"),
        _ => good,
    };
    let mut data = BTreeMap::new();
    data.insert(key.to_string(), ByteString(kc.into_bytes()));
    let secret_ns = if has(fault, SecretWrongNamespace) {
        "default"
    } else {
        NS
    };
    let mut sm = meta(secret_ns, &remote_secret);
    if !has(fault, SecretUnlabelled) {
        sm.labels = labels(&[("istio/multiCluster", "true")]);
    }
    let mut sa = BTreeMap::new();
    sa.insert("networking.istio.io/cluster".to_string(), rid.to_string());
    sm.annotations = Some(sa);
    if !has(fault, NoRemoteSecret) {
        p.put(Secret {
            metadata: sm,
            data: Some(data),
            type_: Some("Opaque".into()),
            ..Default::default()
        });
    }
    // istiod signs for its mesh config's trust domain.
    let trust_domain = if has(fault, ChainWrongTrustDomain) {
        "other.local"
    } else {
        profile.trust_domain()
    };
    let mut mesh = BTreeMap::new();
    mesh.insert("mesh".to_string(), profile.mesh_config(trust_domain));
    p.put(ConfigMap {
        metadata: meta(NS, profile.mesh_config_map()),
        data: Some(mesh),
        ..Default::default()
    });

    // istiod, as the istiod chart deploys it: a Deployment whose pod is on
    // the host network (the simulated istiod runs on this host, so its
    // loopback is where the remote API server listens). Its env is what the
    // simulated istiod reads when it starts and restarts.
    p.put(ServiceAccount {
        metadata: meta(NS, "istiod"),
        ..Default::default()
    });
    // Kubernetes' `default` account of the namespace, whose token meshtrace
    // (as istioctl) reads istiod's debug types over xDS with.
    p.put(ServiceAccount {
        metadata: meta(NS, "default"),
        ..Default::default()
    });
    let token_audiences = if has(fault, IstiodTokenAudiences) {
        "other-ca"
    } else {
        profile.token_audiences()
    };
    // A literal POD_NAMESPACE (instead of the downward API's) that is not
    // istiod's namespace: its serving certificate names another namespace.
    let pod_namespace = if has(fault, IstiodCertWrongSan) {
        env("POD_NAMESPACE", "other-system")
    } else {
        field_env("POD_NAMESPACE", "metadata.namespace")
    };
    install_deployment(
        p,
        deployment(
            NS,
            profile.istiod_deployment(),
            &[
                ("app", "istiod"),
                ("istio", "pilot"),
                ("istio.io/rev", profile.revision()),
            ],
            &[
                ("app", "istiod"),
                ("istio", "pilot"),
                ("istio.io/rev", profile.revision()),
            ],
            istiod_pod_spec(vec![
                env("REVISION", profile.revision()),
                env("PILOT_CERT_PROVIDER", "istiod"),
                field_env("POD_NAME", "metadata.name"),
                pod_namespace,
                env("CLUSTER_ID", PRIMARY_ID),
                env("TOKEN_AUDIENCES", token_audiences),
                env("EXTERNAL_ISTIOD", "true"),
                env("JWT_POLICY", "third-party-jwt"),
            ]),
        ),
    );

    let quirks = IstiodQuirks {
        single_element_chain: has(fault, ChainSingleElement),
        leaf_not_before_offset_secs: if has(fault, ChainClockSkew) { 3600 } else { 0 },
        omit_root: false,
        secret_controller_stuck: has(fault, IstiodStaleClusters),
        xds_not_ready: has(fault, XdsNotReady),
        ..Default::default()
    };
    Built {
        primary,
        remote,
        quirks,
        signer,
    }
}

/// The primary's east-west gateway Service, as Istio's multicluster
/// samples expose istiod (tls-istiod 15012, tls-webhook 15017) next to
/// cross-network traffic (tls 15443). Its LoadBalancer address is 127.0.0.1
/// and its tls-istiod port the simulated istiod's, since the lab runs no
/// gateway in the primary and no load balancer.
fn primary_eastwest_gateway(istiod_port: u16, webhook_port: u16) -> Service {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let port = |name: &str, port: i32, target: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Service {
        metadata: ObjectMeta {
            labels: labels(&[
                ("app", GATEWAY),
                ("istio", "eastwestgateway"),
                ("topology.istio.io/network", "network1"),
            ]),
            ..meta(NS, GATEWAY)
        },
        spec: Some(ServiceSpec {
            selector: labels(&[("app", GATEWAY), ("istio", "eastwestgateway")]),
            ports: Some(vec![
                port("status-port", 15021, 15021),
                port("tls", 15443, 15443),
                port("tls-istiod", i32::from(istiod_port), 15012),
                port("tls-webhook", i32::from(webhook_port), 15017),
            ]),
            type_: Some("LoadBalancer".into()),
            cluster_ip: Some("10.0.0.20".into()),
            ..Default::default()
        }),
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("127.0.0.1".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        }),
    }
}

/// What Istio's samples/multicluster/expose-istiod.yaml (or, for a
/// revision, expose-istiod-rev.yaml.tmpl) applies in the primary: a Gateway
/// passing 15012 and 15017 through on the east-west gateway and a
/// VirtualService routing them to the revision's istiod Service; and that
/// Service itself, as the istiod chart makes it.
fn expose_istiod(store: &mut Store, profile: Profile, fault: Option<&Fault>) {
    use super::istio_types::{Gateway, VirtualService};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let rev = profile.revision();
    let svc = profile.istiod_deployment();
    let port = |name: &str, port: i32, target: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    store.put(Service {
        metadata: ObjectMeta {
            labels: labels(&[("app", "istiod"), ("istio.io/rev", rev)]),
            ..meta(NS, svc)
        },
        spec: Some(ServiceSpec {
            selector: labels(&[("app", "istiod"), ("istio.io/rev", rev)]),
            ports: Some(vec![
                port("grpc-xds", 15010, 15010),
                port("https-dns", 15012, 15012),
                port("https-webhook", 443, 15017),
                port("http-monitoring", 15014, 15014),
            ]),
            cluster_ip: Some("10.0.0.10".into()),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let server = |name: &str, number: i32| serde_json::json!({"port": {"name": name, "number": number, "protocol": "tls"}, "tls": {"mode": "PASSTHROUGH"}, "hosts": ["*"]});
    if !has(fault, ExposureGatewayMissing) {
        store.put(Gateway {
            metadata: meta(NS, "istiod-gateway"),
            spec: serde_json::json!({
                "selector": {"istio": "eastwestgateway"},
                "servers": [server("tls-istiod", 15012), server("tls-istiodwebhook", 15017)],
            }),
        });
    }
    let (name, sni) = if rev == "default" {
        ("istiod-vs".to_string(), vec!["*".to_string()])
    } else {
        (
            format!("istiod-vs-{rev}"),
            vec![
                format!("{svc}.{NS}.svc"),
                format!("{svc}.{NS}.svc.cluster.local"),
            ],
        )
    };
    let host = format!("{svc}.{NS}.svc.cluster.local");
    if !has(fault, ExposureVirtualserviceMissing) {
        store.put(VirtualService {
            metadata: meta(NS, &name),
            spec: serde_json::json!({
                "hosts": ["*"],
                "gateways": ["istiod-gateway"],
                "tls": [
                    {"match": [{"port": 15012, "sniHosts": sni}], "route": [{"destination": {"host": host, "port": {"number": 15012}}}]},
                    {"match": [{"port": 15017, "sniHosts": sni}], "route": [{"destination": {"host": host, "port": {"number": 443}}}]},
                ],
            }),
        });
    }
}

/// kube-apiserver's bootstrap ClusterRole `system:auth-delegator`, which
/// fixes may bind (`create tokenreviews` and `subjectaccessreviews`).
fn auth_delegator(store: &mut Store) {
    let rule = |group: &str, resource: &str| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        verbs: vec!["create".into()],
        ..Default::default()
    };
    store.put(ClusterRole {
        metadata: ObjectMeta {
            labels: labels(&[("kubernetes.io/bootstrapping", "rbac-defaults")]),
            ..meta("", "system:auth-delegator")
        },
        rules: Some(vec![
            rule("authentication.k8s.io", "tokenreviews"),
            rule("authorization.k8s.io", "subjectaccessreviews"),
        ]),
        ..Default::default()
    });
}

/// `name` from the downward API (`fieldRef`).
fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: path.into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Deployment of one replica: `selector` labels, pod `labels`, `spec`.
fn deployment(
    ns: &str,
    name: &str,
    selector: &[(&str, &str)],
    pod_labels: &[(&str, &str)],
    spec: PodSpec,
) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            labels: labels(selector),
            ..meta(ns, name)
        },
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: labels(selector),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: labels(pod_labels),
                    ..Default::default()
                }),
                spec: Some(spec),
            },
            ..Default::default()
        },
        status: None,
    }
}

/// istiod's pod spec as the istiod chart makes it (ports by their chart
/// names), on the host network.
fn istiod_pod_spec(env: Vec<EnvVar>) -> PodSpec {
    let port = |name: &str, n: i32| ContainerPort {
        name: Some(name.into()),
        container_port: n,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    PodSpec {
        service_account_name: Some("istiod".into()),
        host_network: Some(true),
        containers: vec![Container {
            name: "discovery".into(),
            image: Some("docker.io/istio/pilot:1.28.0".into()),
            args: Some(
                [
                    "discovery",
                    "--monitoringAddr=:15014",
                    "--log_output_level=default:info",
                    "--domain",
                    "cluster.local",
                    "--keepaliveMaxServerConnectionAge",
                    "30m",
                ]
                .iter()
                .map(|a| a.to_string())
                .collect(),
            ),
            env: Some(env),
            ports: Some(vec![
                port("http-debug", 8080),
                port("grpc-xds", 15010),
                port("tls-xds", 15012),
                port("https-webhooks", 15017),
                port("http-monitoring", i32::from(ISTIOD_MONITORING_PORT)),
            ]),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::faults;
    use crate::probe::clusterz;
    use std::time::Duration;

    async fn primary_client(lab: &Lab) -> kube::Client {
        let kc = kube::config::Kubeconfig::from_yaml(&lab.kubeconfig_yaml).unwrap();
        crate::engine::target::client_for(&kc, PRIMARY_CONTEXT, Duration::from_secs(5))
            .await
            .unwrap()
            .0
    }

    /// The auto path meshtrace takes (pod list, then the pod proxy) reaches
    /// the simulated istiod's monitoring port, and its list follows the same
    /// registration that decides the CSR.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn istiod_view_through_the_primary_pod_proxy() {
        let secret = format!("{NS}/{REMOTE_SECRET}");
        let cases = [
            (None, format!("primary synced, remote synced ({secret})")),
            // Never loaded: the stuck controller, and a kubeconfig istiod refuses.
            (
                Some(faults::get(IstiodStaleClusters)),
                "primary synced".into(),
            ),
            (Some(faults::get(KubeconfigExec)), "primary synced".into()),
            // Loaded, but its API server cannot be listed.
            (
                Some(faults::get(ApiServerUnreachable)),
                format!("primary synced, remote timeout ({secret})"),
            ),
        ];
        for (fault, want) in cases {
            let lab = Lab::start(fault).await.unwrap();
            let client = primary_client(&lab).await;
            let view = clusterz::fetch(None, &client, NS, Duration::from_secs(10)).await;
            assert_eq!(clusterz::evidence(&view), want, "{fault:?}: {view:?}");
            assert_eq!(view.unwrap()[0].from, format!("pod {}", lab.istiod_pod()));
            lab.shutdown();
        }
    }

    /// `kubectl get --raw` through the pod proxy, as a user checks it by hand.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubectl_get_raw_reaches_istiods_clusterz() {
        if std::process::Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_err()
        {
            eprintln!("note: kubectl is not on PATH; skipping the kubectl test");
            return;
        }
        let lab = Lab::start(None).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubeconfig");
        std::fs::write(&kc, &lab.kubeconfig_yaml).unwrap();
        let raw = |path: String| {
            let mut cmd = tokio::process::Command::new("kubectl");
            cmd.arg("--kubeconfig")
                .arg(&kc)
                .args(["--context", PRIMARY_CONTEXT, "get", "--raw", &path])
                .env_remove("KUBECONFIG");
            async move {
                let out = cmd.output().await.expect("run kubectl");
                (
                    out.status.success(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
        };
        let (ok, out, err) = raw(format!(
            "/api/v1/namespaces/{NS}/pods/{}:15014/proxy/debug/clusterz",
            lab.istiod_pod()
        ))
        .await;
        assert!(ok, "{err}");
        assert_eq!(
            out,
            format!(
                "[{{\"id\":\"primary\",\"secretName\":\"\",\"syncStatus\":\"synced\"}},{{\"id\":\"remote\",\"secretName\":\"{NS}/{REMOTE_SECRET}\",\"syncStatus\":\"synced\"}}]"
            )
        );
        let (ok, _, err) = raw(format!(
            "/api/v1/namespaces/{NS}/pods/{}:15013/proxy/debug/clusterz",
            lab.istiod_pod()
        ))
        .await;
        assert!(!ok);
        assert!(
            err.contains("error trying to reach service: dial tcp 127.0.0.1:15013: connect: connection refused"),
            "{err}"
        );
        lab.shutdown();
    }
}
