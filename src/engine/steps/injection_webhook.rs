//! `injection-webhook`: the remote API server's call to istiod's sidecar
//! injector, which every new pod of the remote (the gateway's too) waits
//! for. It follows Istio's chart (manifests/charts/istio-control/
//! istio-discovery/templates/mutatingwebhook.yaml: `istio-sidecar-injector
//! [-<rev>]`, label `istio.io/rev`, a Service `istiod[-<rev>]` port 443 and
//! `istiodRemote.injectionPath`, or `istiodRemote.injectionURL`) and makes
//! the call as kube-apiserver makes it (k8s.io/apiserver/pkg/util/webhook/
//! client.go, pkg/util/proxy ResolveEndpoint): the Service port, then the
//! EndpointSlice port of the same name; server name `<svc>.<ns>.svc` (or
//! the URL's host); the caBundle as the only roots; `http/1.1`. Then one
//! dry AdmissionReview (admission.k8s.io/v1, `dryRun: true`) for the
//! gateway's own pod template, which istiod's `/inject` handler
//! (pkg/kube/inject/webhook.go) must allow with a JSONPatch that adds the
//! proxy. Nothing is created.

use super::istiod::join_host_port;
use super::{Settings, api_code, kube_err};
use crate::engine::{Ctx, Outcome, Staged};
use crate::findings::{Finding, shell_word};
use crate::inspect::sanitize;
use crate::model::StepId;
use crate::probe::admission::{self, ReviewAnswer, ReviewCall, ReviewReport};
use crate::probe::tls::{TlsProbe, platform_roots_pem};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

crate::causes! { StepId::InjectionWebhook;
    MISSING = "missing", "the remote has no sidecar-injector webhook for istiod's revision";
    WRONG_SERVICE = "wrong-service", "the injection webhook points at a Service or URL that does not lead to istiod";
    CA_BUNDLE_MISMATCH = "ca-bundle-mismatch", "the webhook's caBundle does not verify the certificate istiod serves on 15017";
    UNREACHABLE = "unreachable", "istiod's webhook port (15017) does not answer on TCP";
    TLS_FAILED = "tls-failed", "the TLS handshake with istiod's webhook port fails";
    REJECTED = "rejected", "istiod does not answer the AdmissionReview with a patch that injects the proxy";
    UNREADABLE = "unreadable", "the remote's webhook configurations or the Service they name cannot be read";
}

/// The injector's webhooks end so (namespace., object., rev.namespace., rev.object., auto.).
const INJECTOR_SUFFIX: &str = "sidecar-injector.istio.io";
/// Distinct clientConfigs called, at most.
const MAX_TARGETS: usize = 4;

/// Where a webhook's clientConfig points.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRef {
    Service {
        name: String,
        namespace: String,
        port: i32,
        path: String,
    },
    Url(String),
}

impl ClientRef {
    fn describe(&self) -> String {
        match self {
            ClientRef::Service {
                name,
                namespace,
                port,
                path,
            } => format!("Service {namespace}/{name} port {port} path {path}"),
            ClientRef::Url(u) => format!("URL {u}"),
        }
    }
}

/// One distinct clientConfig, the webhooks that use it, and what calling it did.
#[derive(Debug, Clone)]
pub struct Target {
    /// (configuration name, webhook index, webhook name).
    pub webhooks: Vec<(String, usize, String)>,
    pub client: ClientRef,
    /// The address kube-apiserver dials and how it got there, or why it cannot.
    pub resolved: Result<(String, String), String>,
    /// `--istiod-webhook-addr`, when it replaced the resolved address.
    pub dialled_instead: Option<String>,
    pub server_name: String,
    /// The caBundle, PEM (None: empty, kube-apiserver's own roots).
    pub ca_bundle: Option<String>,
    pub review: Option<ReviewReport>,
    /// The request's uid and the sample's containers, to judge the answer.
    pub uid: String,
    /// Whether the mesh root (`mesh_root`) verifies what istiod served,
    /// checked only when the caBundle did not.
    pub mesh_root_verifies: Option<bool>,
}

/// The Service a fix can point the webhook at: (name, namespace, where it leads).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub namespace: String,
    pub leads_to: String,
}

#[derive(Debug, Clone)]
pub struct WebhookFacts {
    pub revision: String,
    pub revision_from: String,
    /// The revision's configurations, or why they cannot be listed.
    pub configs: Result<Vec<MutatingWebhookConfiguration>, String>,
    /// Injector configurations of other revisions (names), for the diagnosis.
    pub others: Vec<String>,
    pub targets: Vec<Target>,
    /// The Service Istio's chart points the revision's webhook at, if it resolves.
    pub candidate: Option<Candidate>,
    /// The remote's root (istio-ca-root-cert, else the one istiod-tls verified with).
    pub mesh_root: Option<String>,
    /// The gateway's istiod address as remote-istiod-endpoint found it.
    pub istiod_addr: Option<(String, String)>,
    /// The remote Service the gateway's address names (remote-istiod-endpoint's).
    pub dial_service: Option<(String, String)>,
    /// istiod-tls ran and did not verify istiod.
    pub istiod_tls_failed: bool,
    /// The sample pod: where it came from and its containers.
    pub sample_from: String,
    pub sample_containers: Vec<String>,
    /// The gateway's cluster ID and network, for the path of a recreated webhook.
    pub cluster_id: Option<String>,
    pub network: Option<String>,
}

/// The chart's configuration name for `rev` installed in `ns`.
pub fn chart_config_name(rev: &str, ns: &str) -> String {
    let mut n = "istio-sidecar-injector".to_string();
    if rev != "default" && !rev.is_empty() {
        n.push('-');
        n.push_str(rev);
    }
    if ns != "istio-system" {
        n.push('-');
        n.push_str(ns);
    }
    n
}

/// The chart's Service for `rev`: `istiod`, `istiod-<rev>`.
pub fn chart_service(rev: &str) -> String {
    if rev == "default" || rev.is_empty() {
        "istiod".into()
    } else {
        format!("istiod-{rev}")
    }
}

fn is_injector(w: &MutatingWebhook) -> bool {
    w.name.ends_with(INJECTOR_SUFFIX)
}

fn belongs(c: &MutatingWebhookConfiguration, rev: &str, ns: &str) -> bool {
    let label = c
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("istio.io/rev"))
        .map(String::as_str);
    label == Some(rev) || c.metadata.name.as_deref() == Some(chart_config_name(rev, ns).as_str())
}

fn client_of(w: &MutatingWebhook) -> Option<ClientRef> {
    let cc = &w.client_config;
    if let Some(s) = &cc.service {
        return Some(ClientRef::Service {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            port: s.port.unwrap_or(443),
            path: s.path.clone().unwrap_or_else(|| "/".into()),
        });
    }
    cc.url.clone().map(ClientRef::Url)
}

/// A URL's (host, port, path): kube-apiserver takes port 443 when none is given.
pub fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let u: http::Uri = url
        .parse()
        .map_err(|e| format!("the URL {url:?} does not parse ({e})"))?;
    if u.scheme_str() != Some("https") {
        return Err(format!(
            "the URL {url:?} is not https (kube-apiserver requires it)"
        ));
    }
    let auth = u
        .authority()
        .ok_or_else(|| format!("the URL {url:?} has no host"))?;
    let host = auth.host().trim_matches(['[', ']']).to_string();
    let path = u
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    Ok((host, auth.port_u16().unwrap_or(443), path))
}

/// Where kube-apiserver sends a call to `svc` port `port`: the Service port
/// of that number, then the first ready endpoint of an EndpointSlice port
/// with the same name (pkg/util/proxy ResolveEndpoint); an ExternalName
/// Service is its name and the webhook's port (ResolveCluster, the default
/// resolver). Err is the apiserver's own words.
pub fn resolve_service(
    svc: &Service,
    slices: &[EndpointSlice],
    port: i32,
) -> Result<(String, String), String> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ExternalName" => {
            let host = spec.external_name.unwrap_or_default();
            return Ok((
                join_host_port(&host, port),
                format!("ExternalName {host} of Service {name}, the webhook's port {port}"),
            ));
        }
        "ClusterIP" | "LoadBalancer" | "NodePort" => {}
        other => return Err(format!("unsupported service type {other:?}")),
    }
    let ports = spec.ports.unwrap_or_default();
    let Some(sp) = ports.iter().find(|p| p.port == port) else {
        return Err(format!("no service port {port} found for service {name:?}"));
    };
    let want = sp.name.clone().unwrap_or_default();
    for sl in slices {
        for p in sl.ports.iter().flatten() {
            let (Some(pn), Some(pp)) = (&p.name, p.port) else {
                continue;
            };
            if *pn != want {
                continue;
            }
            let ready = sl
                .endpoints
                .iter()
                .flatten()
                .find(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true));
            if let Some(a) = ready.and_then(|e| e.addresses.first()) {
                return Ok((
                    join_host_port(a, pp),
                    format!(
                        "EndpointSlice {} port {pn:?} {pp} (Service port {port} -> {:?})",
                        sl.metadata.name.clone().unwrap_or_default(),
                        want
                    ),
                ));
            }
        }
    }
    Err(format!("no endpoints available for service {name:?}"))
}

async fn resolve(
    remote: &kube::Client,
    name: &str,
    ns: &str,
    port: i32,
) -> Result<(String, String), String> {
    let svcs: Api<Service> = Api::namespaced(remote.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(remote.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    let (svc, sl) = tokio::join!(svcs.get_opt(name), slices.list(&lp));
    let svc = match svc {
        Ok(Some(s)) => s,
        Ok(None) => return Err(format!("service \"{name}\" not found in namespace {ns}")),
        Err(e) => return Err(format!("cannot read Service {ns}/{name}: {}", kube_err(&e))),
    };
    let sl = sl.map_err(|e| format!("cannot list its EndpointSlices: {}", kube_err(&e)))?;
    resolve_service(&svc, &sl.items, port)
}

fn uid() -> String {
    let mut b = [0u8; 16];
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for (i, x) in b.iter_mut().enumerate() {
        *x = (t >> ((i % 8) * 8)) as u8 ^ (i as u8).wrapping_mul(37);
    }
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The pod kube-apiserver would send for the gateway: its Deployment's pod
/// template (what a ReplicaSet creates, before injection), without what the
/// injector itself wrote; else a minimal pod in the gateway's namespace.
/// Returns (pod, where it came from, its containers).
pub fn sample_pod(
    gw: Option<&crate::engine::facts::GatewayFacts>,
    ns: &str,
    rev: &str,
) -> (Value, String, Vec<String>) {
    let template = gw
        .and_then(|g| g.deployment.as_ref())
        .map(|d| d.spec.template.clone());
    if let (Some(t), Some(g)) = (template, gw) {
        let mut meta = t.metadata.unwrap_or_default();
        if let Some(a) = meta.annotations.as_mut() {
            a.remove("sidecar.istio.io/status");
        }
        meta.managed_fields = None;
        let deploy = g
            .deployment
            .as_ref()
            .and_then(|d| d.metadata.name.clone())
            .unwrap_or_else(|| "gateway".into());
        let spec = t.spec.unwrap_or_default();
        let containers = spec.containers.iter().map(|c| c.name.clone()).collect();
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": format!("{deploy}-"),
                "namespace": g.namespace,
                "labels": meta.labels,
                "annotations": meta.annotations,
            },
            "spec": spec,
        });
        return (
            pod,
            format!("the pod template of Deployment {}/{deploy}", g.namespace),
            containers,
        );
    }
    let ns = gw
        .map(|g| g.namespace.clone())
        .unwrap_or_else(|| ns.to_string());
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "meshtrace-injection-probe-",
            "namespace": ns,
            "labels": {"app": "meshtrace-injection-probe", "istio.io/rev": rev},
        },
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    });
    (
        pod,
        format!("a minimal pod in namespace {ns} (no gateway Deployment was read)"),
        vec!["app".into()],
    )
}

/// The AdmissionReview kube-apiserver sends for creating `pod`, dry.
pub fn review_for(pod: &Value, uid: &str) -> Value {
    let ns = pod["metadata"]["namespace"].clone();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": ns,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": pod,
            "oldObject": null,
            "dryRun": true,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "dryRun": ["All"]}
        }
    })
}

pub async fn gather(ctx: &Ctx) -> Result<WebhookFacts, Outcome> {
    let (settings, gw, istiod_addr, cluster_id) = {
        let f = ctx.facts();
        (
            f.istiod_settings.clone(),
            f.gateway.clone(),
            f.istiod_addr.clone(),
            f.cluster_id.clone(),
        )
    };
    let (revision, revision_from) = match &settings {
        Some(s) => (s.revision.value.clone(), s.revision.from.clone()),
        None => (
            "default".into(),
            "Istio's default (control-plane read no istiod)".into(),
        ),
    };
    let ns = ctx.opts.istio_namespace.clone();
    let remote = ctx.clusters.remote.clone();
    let api: Api<MutatingWebhookConfiguration> = Api::all(remote.clone());
    let all = match api.list(&ListParams::default()).await {
        Ok(l) => Ok(l.items),
        Err(e) if api_code(&e) == Some(403) => {
            let mut out = Outcome::new();
            out.ev("revision", &revision).ev("forbidden", kube_err(&e));
            return Err(out.skipped(format!(
                "the operator may not list mutatingwebhookconfigurations in the remote ({}), so the injector's webhook cannot be read; grant list on admissionregistration.k8s.io mutatingwebhookconfigurations to check it",
                kube_err(&e)
            )));
        }
        Err(e) => Err(format!(
            "cannot list mutatingwebhookconfigurations in the remote: {}",
            kube_err(&e)
        )),
    };
    let dial = super::dial::of(gw.as_ref());
    let (sample, sample_from, sample_containers) = sample_pod(gw.as_ref(), &ns, &revision);
    let mut facts = WebhookFacts {
        revision: revision.clone(),
        revision_from,
        configs: Ok(vec![]),
        others: vec![],
        targets: vec![],
        candidate: None,
        // root-of-trust's and istiod-tls's: filled in when judged.
        mesh_root: None,
        istiod_addr: istiod_addr.clone(),
        dial_service: dial.service.clone(),
        istiod_tls_failed: false,
        sample_from,
        sample_containers,
        cluster_id: cluster_id.map(|c| c.0),
        network: gw.as_ref().and_then(|g| g.network.clone()),
    };
    let all = match all {
        Ok(a) => a,
        Err(e) => {
            facts.configs = Err(e);
            return Ok(facts);
        }
    };
    let (mine, others): (Vec<_>, Vec<_>) = all
        .into_iter()
        .filter(|c| c.webhooks.iter().flatten().any(is_injector))
        .partition(|c| belongs(c, &revision, &ns));
    facts.others = others
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .take(8)
        .collect();
    // The chart's Service for the revision: where a fix can point.
    let cand_name = chart_service(&revision);
    if let Ok((addr, from)) = resolve(&remote, &cand_name, &ns, 443).await {
        facts.candidate = Some(Candidate {
            name: cand_name,
            namespace: ns.clone(),
            leads_to: format!("{addr} ({from})"),
        });
    }
    let mut targets: Vec<Target> = Vec::new();
    for c in &mine {
        let cname = c.metadata.name.clone().unwrap_or_default();
        for (i, w) in c.webhooks.iter().flatten().enumerate() {
            if !is_injector(w) {
                continue;
            }
            let Some(client) = client_of(w) else { continue };
            let ca = w
                .client_config
                .ca_bundle
                .as_ref()
                .filter(|b| !b.0.is_empty())
                .map(|b| String::from_utf8_lossy(&b.0).into_owned());
            if let Some(t) = targets
                .iter_mut()
                .find(|t| t.client == client && t.ca_bundle == ca)
            {
                t.webhooks.push((cname.clone(), i, w.name.clone()));
                continue;
            }
            if targets.len() >= MAX_TARGETS {
                continue;
            }
            targets.push(Target {
                webhooks: vec![(cname.clone(), i, w.name.clone())],
                client,
                resolved: Err(String::new()),
                dialled_instead: None,
                server_name: String::new(),
                ca_bundle: ca,
                review: None,
                uid: uid(),
                mesh_root_verifies: None,
            });
        }
    }
    facts.configs = Ok(mine);
    for t in &mut targets {
        let (resolved, server_name, host_header, path) = match &t.client {
            ClientRef::Service {
                name,
                namespace,
                port,
                path,
            } => {
                let sn = format!("{name}.{namespace}.svc");
                (
                    resolve(&remote, name, namespace, *port).await,
                    sn.clone(),
                    format!("{sn}:{port}"),
                    path.clone(),
                )
            }
            ClientRef::Url(u) => match split_url(u) {
                Ok((host, port, path)) => (
                    Ok((
                        join_host_port(&host, i32::from(port)),
                        "the webhook's URL".to_string(),
                    )),
                    host.clone(),
                    join_host_port(&host, i32::from(port)),
                    path,
                ),
                Err(e) => (Err(e), String::new(), String::new(), String::new()),
            },
        };
        t.resolved = resolved;
        t.server_name = server_name.clone();
        let Ok((addr, _)) = &t.resolved else { continue };
        let dial_addr = match &ctx.opts.istiod_webhook_addr {
            Some(a) => {
                t.dialled_instead = Some(a.clone());
                a.clone()
            }
            None => addr.clone(),
        };
        // An empty caBundle: kube-apiserver verifies with its host's roots.
        let roots = match &t.ca_bundle {
            Some(p) => p.clone(),
            None => ctx
                .opts
                .platform_roots_pem
                .clone()
                .map(Ok)
                .unwrap_or_else(platform_roots_pem)
                .unwrap_or_default(),
        };
        let tls = TlsProbe {
            addr: dial_addr.clone(),
            server_name: server_name.clone(),
            roots_pem: roots,
            timeout: ctx.opts.timeout,
        };
        let body = serde_json::to_vec(&review_for(&sample, &t.uid)).unwrap_or_default();
        let report = admission::call(&ReviewCall {
            tls: tls.clone(),
            path,
            host: host_header,
            body,
        })
        .await;
        if report.tls.verify_error.is_some() {
            // Whether the mesh's root would verify it: root-of-trust's and
            // istiod-tls's roots, waited for only on this path.
            ctx.wait_steps(&[StepId::RootOfTrust, StepId::IstiodTls])
                .await;
            if let Some(root) = &mesh_root(ctx) {
                let again = crate::probe::tls::probe(&TlsProbe {
                    roots_pem: root.clone(),
                    ..tls
                })
                .await;
                t.mesh_root_verifies = Some(again.ok());
            }
        }
        t.review = Some(report);
    }
    facts.targets = targets;
    Ok(facts)
}

/// The mesh's root: the remote's istio-ca-root-cert, else the roots
/// istio-tls verified istiod with.
fn mesh_root(ctx: &Ctx) -> Option<String> {
    let f = ctx.facts();
    f.remote_root_pem
        .clone()
        .or_else(|| f.istiod_tls.as_ref().map(|t| t.1.clone()))
}

/// The webhook is read and called once the gateway, the revision and the
/// remote's istiod endpoints are known; judged with the mesh's root and
/// istiod-tls's answer once those finished.
pub async fn run(ctx: &Ctx) -> Staged {
    match gather(ctx).await {
        Ok(mut f) => Staged::judge(move |ctx| {
            f.mesh_root = mesh_root(ctx);
            f.istiod_tls_failed = f.istiod_addr.is_some() && ctx.facts().istiod_tls.is_none();
            judge(&f, &Settings::of(ctx))
        }),
        Err(o) => o.into(),
    }
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// One `kubectl patch --type=json` per configuration, `op` applied at
/// `/webhooks/N/<field>` of each webhook of the target; `value` is JSON.
fn patch_commands(s: &Settings, t: &Target, field: &str, value: &str) -> Vec<String> {
    let mut by_config: Vec<(String, Vec<usize>)> = Vec::new();
    for (c, i, _) in &t.webhooks {
        match by_config.iter_mut().find(|(n, _)| n == c) {
            Some((_, v)) => v.push(*i),
            None => by_config.push((c.clone(), vec![*i])),
        }
    }
    by_config
        .into_iter()
        .map(|(c, idx)| {
            let ops: Vec<String> = idx
                .iter()
                .map(|i| {
                    format!(
                        r#"{{"op":"replace","path":"/webhooks/{i}/clientConfig/{field}","value":{value}}}"#
                    )
                })
                .collect();
            format!(
                "{} patch mutatingwebhookconfiguration {} --type=json -p {}",
                s.kubectl_remote(),
                shell_word(&c),
                shell_word(&format!("[{}]", ops.join(",")))
            )
        })
        .collect()
}

/// The configuration Istio's chart makes for the revision (the remote
/// profile: a Service reference and injectionPath), for `kubectl apply`.
fn chart_config_command(f: &WebhookFacts, s: &Settings, root: &str) -> String {
    let rev = &f.revision;
    let ns = &s.istio_namespace;
    let mut path = "/inject".to_string();
    if let Some(c) = &f.cluster_id {
        path.push_str(&format!("/cluster/{c}"));
        if let Some(n) = &f.network {
            path.push_str(&format!("/net/{n}"));
        }
    }
    let sel = |key: &str, op: &str, vals: &[&str]| {
        if vals.is_empty() {
            format!("{{key: {key}, operator: {op}}}")
        } else {
            format!(
                "{{key: {key}, operator: {op}, values: [{}]}}",
                vals.join(", ")
            )
        }
    };
    let not_false = sel("sidecar.istio.io/inject", "NotIn", &["\"false\""]);
    let rev_in = sel("istio.io/rev", "In", &[rev.as_str()]);
    let mut hooks = vec![
        (
            "rev.namespace.",
            format!(
                "[{rev_in}, {}]",
                sel("istio-injection", "DoesNotExist", &[])
            ),
            format!("[{not_false}]"),
        ),
        (
            "rev.object.",
            format!(
                "[{}, {}]",
                sel("istio.io/rev", "DoesNotExist", &[]),
                sel("istio-injection", "DoesNotExist", &[])
            ),
            format!("[{not_false}, {rev_in}]"),
        ),
    ];
    if rev == "default" {
        hooks.push((
            "namespace.",
            format!("[{}]", sel("istio-injection", "In", &["enabled"])),
            format!("[{not_false}]"),
        ));
        hooks.push((
            "object.",
            format!(
                "[{}, {}]",
                sel("istio-injection", "DoesNotExist", &[]),
                sel("istio.io/rev", "DoesNotExist", &[])
            ),
            format!(
                "[{}, {}]",
                sel("sidecar.istio.io/inject", "In", &["\"true\""]),
                sel("istio.io/rev", "DoesNotExist", &[])
            ),
        ));
    }
    let mut y = format!(
        "{} apply -f - <<'EOF'\napiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata:\n  name: {}\n  labels: {{istio.io/rev: {rev}, app: sidecar-injector}}\nwebhooks:\n",
        s.kubectl_remote(),
        chart_config_name(rev, ns)
    );
    for (k, (prefix, nsel, osel)) in hooks.iter().enumerate() {
        let cc = if k == 0 {
            format!(
                "&cc {{service: {{name: {}, namespace: {ns}, path: \"{path}\", port: 443}}, caBundle: {}}}",
                chart_service(rev),
                b64(root)
            )
        } else {
            "*cc".to_string()
        };
        y.push_str(&format!(
            "- name: {prefix}sidecar-injector.istio.io\n  clientConfig: {cc}\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods]}}]\n  sideEffects: None\n  failurePolicy: Fail\n  admissionReviewVersions: [v1]\n  namespaceSelector: {{matchExpressions: {nsel}}}\n  objectSelector: {{matchExpressions: {osel}}}\n"
        ));
    }
    y.push_str("EOF");
    y
}

fn host_of(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_matches(['[', ']']).to_string(),
        None => addr.to_string(),
    }
}

pub fn judge(f: &WebhookFacts, s: &Settings) -> Outcome {
    let mut out = Outcome::new();
    out.ev("revision", &f.revision)
        .ev("revision_from", &f.revision_from)
        .ev("sample_pod", &f.sample_from);
    let configs = match &f.configs {
        Ok(c) => c,
        Err(e) => {
            return out.failing(
                Finding::new(&UNREADABLE, "cannot read the remote's webhook configurations")
                    .note("check the remote API server and the operator's rights (list mutatingwebhookconfigurations)"),
                e.clone(),
            );
        }
    };
    let names: Vec<String> = configs
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    out.ev("configurations", &names);
    if !f.others.is_empty() {
        out.ev("other_injectors", &f.others);
    }
    if f.targets.is_empty() {
        let want = chart_config_name(&f.revision, &s.istio_namespace);
        let others = if f.others.is_empty() {
            "none for any revision".to_string()
        } else {
            format!("only {}", super::quote_list(&f.others))
        };
        let (cmds, note) = match &f.mesh_root {
            Some(root) => (
                vec![chart_config_command(f, s, root)],
                "the remote's API server calls no injector, so pods of injected namespaces are created without istio-proxy (or, for a gateway Deployment, with its placeholder image \"auto\", which never starts). The command recreates the configuration Istio's chart makes for the revision (istioctl install with the remote profile does the same)".to_string(),
            ),
            None => (
                vec![],
                "reinstall the remote profile (istioctl install --set profile=remote) for the revision: it creates the configuration".to_string(),
            ),
        };
        return out.failing(
            Finding::new(&MISSING, format!("no sidecar-injector webhook for revision {}", f.revision))
                .commands(cmds)
                .note(note),
            format!(
                "no MutatingWebhookConfiguration in the remote labelled istio.io/rev={} or named {want} has a *.{INJECTOR_SUFFIX} webhook ({others})",
                f.revision
            ),
        );
    }
    let istiod_host = f.istiod_addr.as_ref().map(|(a, _)| host_of(a));
    for (k, t) in f.targets.iter().enumerate() {
        let key = |k2: &str| {
            if k == 0 {
                k2.to_string()
            } else {
                format!("target{}_{k2}", k + 1)
            }
        };
        let hooks: Vec<&str> = t.webhooks.iter().map(|w| w.2.as_str()).collect();
        out.ev(&key("webhooks"), &hooks)
            .ev(&key("client_config"), t.client.describe())
            .ev(
                &key("resolved"),
                match &t.resolved {
                    Ok((a, from)) => format!("{a} ({from})"),
                    Err(e) => e.clone(),
                },
            );
        if let Some(a) = &t.dialled_instead {
            out.ev(&key("dialled"), format!("{a} (--istiod-webhook-addr)"));
        }
        out.ev(&key("server_name"), &t.server_name).ev(
            &key("ca_bundle"),
            match &t.ca_bundle {
                Some(p) => match crate::inspect::x509::parse_pem_chain(p) {
                    Ok(c) => c
                        .iter()
                        .map(|x| x.subject.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                    Err(e) => format!("not PEM: {e}"),
                },
                None => "empty (kube-apiserver's own roots)".into(),
            },
        );
        if let Some(r) = &t.review {
            out.ev(&key("handshake_ms"), r.tls.handshake_ms)
                .ev(&key("protocol"), &r.tls.protocol)
                .ev(&key("http_status"), r.status);
        }
        match check_target(f, s, t, istiod_host.as_deref()) {
            Ok(patch) => {
                out.ev(&key("answer"), patch);
            }
            Err(o) => return merge(out, o),
        }
    }
    out.pass()
}

/// Evidence of `base` first, then `o`'s.
fn merge(base: Outcome, mut o: Outcome) -> Outcome {
    let mut ev = base.evidence;
    ev.extend(std::mem::take(&mut o.evidence));
    o.evidence = ev;
    o
}

/// Ok: the answer in words; Err: the outcome of what broke (returned once
/// per step, so its size does not matter).
#[allow(clippy::result_large_err)]
fn check_target(
    f: &WebhookFacts,
    s: &Settings,
    t: &Target,
    istiod_host: Option<&str>,
) -> Result<String, Outcome> {
    let out = Outcome::new();
    let what = t.client.describe();
    let (addr, _) = match &t.resolved {
        Ok(r) => r,
        Err(e) => {
            if let ClientRef::Service {
                name, namespace, ..
            } = &t.client
            {
                if f.dial_service.as_ref() == Some(&(name.clone(), namespace.clone()))
                    && f.istiod_addr.is_none()
                {
                    return Err(out.blocked(
                        StepId::RemoteIstiodEndpoint,
                        format!("the webhook calls Service {namespace}/{name}, the one remote-istiod-endpoint found broken: {e}"),
                    ));
                }
            }
            let (cmds, note) = service_fix(f, s, t);
            return Err(out.failing(
                Finding::new(
                    &WRONG_SERVICE,
                    format!("the injection webhook's {} leads nowhere", kind_of(t)),
                )
                .commands(cmds)
                .note(note),
                format!(
                    "kube-apiserver cannot send {} ({what}) anywhere: {e}",
                    t.webhooks[0].2
                ),
            ));
        }
    };
    let Some(r) = &t.review else {
        return Err(out.failing(
            Finding::new(&UNREACHABLE, "the injection webhook was not called"),
            format!("{what}: no call was made"),
        ));
    };
    let dialled = t.dialled_instead.clone().unwrap_or_else(|| addr.clone());
    let elsewhere = istiod_host.filter(|h| *h != host_of(addr));
    if let Some(e) = &r.tls.tcp_error {
        if let Some(h) = elsewhere {
            let (cmds, note) = service_fix(f, s, t);
            return Err(out.failing(
                Finding::new(&WRONG_SERVICE, format!("the injection webhook leads to {addr}, not istiod's {h}"))
                    .commands(cmds)
                    .note(note),
                format!("{what} resolves to {addr}, which does not answer ({e}); the gateway reaches istiod at {h}"),
            ));
        }
        return Err(out.failing(
            Finding::new(&UNREACHABLE, format!("istiod's webhook port at {dialled} does not answer"))
                .note("the remote API server calls istiod's 15017 through the same exposed address as 15012: the primary's east-west gateway (or load balancer) must forward 15017 too (Istio's expose-istiod Gateway has tls-webhook 15017 -> istiod 443), and no firewall may drop it. Until then no pod of an injected namespace, the gateway's included, can be created"),
            format!("TCP to {dialled} for {what}: {e}"),
        ));
    }
    if let Some(e) = &r.tls.verify_error {
        let lower = e.to_ascii_lowercase();
        let ca_problem = lower.contains("unknown authority")
            || lower.contains("trust roots")
            || t.ca_bundle.is_none();
        if ca_problem && t.mesh_root_verifies != Some(false) {
            let cmds = match (&f.mesh_root, t.mesh_root_verifies) {
                (Some(root), Some(true)) => {
                    // One value, pasted once: the mesh root, base64 (caBundle is bytes).
                    patch_commands(s, t, "caBundle", "\"$CA\"")
                        .iter()
                        .map(|x| format!("CA={}; {}", b64(root), dq_patch(x)))
                        .collect()
                }
                _ => vec![],
            };
            return Err(out.failing(
                Finding::new(&CA_BUNDLE_MISMATCH, "the webhook's caBundle does not verify istiod's certificate")
                    .commands(cmds)
                    .note("kube-apiserver verifies istiod with the caBundle alone and refuses the call (\"x509: certificate signed by unknown authority\"), so no pod of an injected namespace is created. istiod patches the caBundle of its revision's configurations only in the clusters it leads (a remote whose istio-system names it in topology.istio.io/controlPlaneClusters, with EXTERNAL_ISTIOD) and only with INJECTION_WEBHOOK_CONFIG_NAME set; otherwise set it to the mesh root (the remote's istio-ca-root-cert)"),
                format!("verifying istiod at {dialled} as {:?} with the caBundle of {}: {e}", t.server_name, t.webhooks[0].0),
            ));
        }
        if f.istiod_tls_failed {
            return Err(out.blocked(
                StepId::IstiodTls,
                format!("istiod's certificate on 15017 is refused as on 15012: {e}"),
            ));
        }
        return Err(out.failing(
            Finding::new(&TLS_FAILED, format!("istiod's certificate is refused for {}", t.server_name))
                .note("kube-apiserver verifies the name <service>.<namespace>.svc of the webhook's Service (or the URL's host): istiod's certificate must carry it (ISTIOD_CUSTOM_HOST adds names)"),
            format!("verifying istiod at {dialled} as {:?}: {e}", t.server_name),
        ));
    }
    if let Some(e) = &r.tls.tls_error {
        return Err(out.failing(
            Finding::new(&TLS_FAILED, format!("the TLS handshake with {dialled} fails"))
                .note("15017 must reach istiod's own TLS (passed through by the east-west gateway), not a proxy that terminates TLS or speaks plain TCP"),
            format!("TLS with {dialled} for {what}: {e}"),
        ));
    }
    let rejected = |summary: String, diag: String, note: &str| {
        Err(Outcome::new().failing(
            Finding::new(&REJECTED, summary).note(note.to_string()),
            diag,
        ))
    };
    if let Some(e) = &r.http_error {
        return rejected(
            format!("istiod did not answer the AdmissionReview at {dialled}"),
            format!("POST {what}: {e}"),
            "kube-apiserver gives up after the webhook's timeoutSeconds (10s) and, with failurePolicy Fail, refuses the pod",
        );
    }
    let status = r.status.unwrap_or(0);
    if status == 404 && path_is_inject(&t.client) {
        // pilot/pkg/bootstrap/sidecarinjector.go: without ./var/lib/istio/inject/config
        // nor the ConfigMap at start, istiod registers no /inject handler.
        return rejected(
            "istiod serves no injector (HTTP 404 on /inject)".into(),
            format!(
                "POST {what}: HTTP 404: {}",
                sanitize::quote(&String::from_utf8_lossy(&r.body[..r.body.len().min(300)]))
            ),
            &format!(
                "istiod registers /inject only when it finds its injection template at start: the file ./var/lib/istio/inject/config, else the ConfigMap {} (keys config and values) in its namespace of the primary (it logs \"Skipping sidecar injector, template not found\" otherwise). Create it as istioctl install does for the revision (istioctl manifest generate renders it), then restart istiod",
                injector_configmap_name(&f.revision)
            ),
        );
    }
    if status != 200 {
        return rejected(
            format!("istiod answered the AdmissionReview with HTTP {status}"),
            format!(
                "POST {what}: HTTP {status}: {}",
                sanitize::quote(&String::from_utf8_lossy(&r.body[..r.body.len().min(300)]))
            ),
            "istiod's /inject answers 200 with an AdmissionReview; another status means the path or the server is not istiod's injector",
        );
    }
    let a: ReviewAnswer = match admission::parse_review(&r.body, &t.uid) {
        Ok(a) => a,
        Err(e) => {
            return rejected(
                "istiod's answer is not an AdmissionReview".into(),
                format!("POST {what}: {e}"),
                "the address leads to an HTTPS server that is not istiod's injector",
            );
        }
    };
    if !a.uid_matches {
        return rejected(
            "the AdmissionReview answer is for another request".into(),
            format!("POST {what}: response.uid is not the request's {}", t.uid),
            "kube-apiserver refuses such an answer",
        );
    }
    if !a.allowed {
        return rejected(
            "istiod denied the sample pod".into(),
            format!(
                "istiod refused {}: {}",
                f.sample_from,
                a.message.clone().unwrap_or_else(|| "no message".into())
            ),
            "istiod denies a pod it cannot inject (a broken injection template, values or mesh config): kube-apiserver then refuses the pod with this message",
        );
    }
    if let Some(e) = &a.patch_error {
        return rejected(
            "istiod's patch cannot be read".into(),
            format!("POST {what}: {e}"),
            "kube-apiserver refuses a patch it cannot decode",
        );
    }
    if a.patch_type.as_deref() != Some("JSONPatch")
        || !admission::injects_proxy(&a.ops, &f.sample_containers)
    {
        return rejected(
            "istiod allowed the pod without injecting istio-proxy".into(),
            format!(
                "istiod allowed {} with {} patch operation(s), patchType {:?}, none adding istio-proxy",
                f.sample_from,
                a.op_count,
                a.patch_type.as_deref().unwrap_or("none")
            ),
            "istiod skips injection for a pod annotated sidecar.istio.io/inject=false, with hostNetwork, already injected, or in kube-system/kube-public: the gateway then starts without its proxy",
        );
    }
    // The containers the patch adds first (istio-proxy, as a native sidecar
    // among the init containers), then the rest in istiod's order.
    let mut shown: Vec<&admission::PatchOp> = a.ops.iter().collect();
    shown.sort_by_key(|o| {
        !(o.path.starts_with("/spec/containers") || o.path.starts_with("/spec/initContainers"))
    });
    let ops: Vec<String> = shown
        .into_iter()
        .take(6)
        .map(|o| {
            let names = if o.containers.is_empty() {
                String::new()
            } else {
                format!(" ({})", o.containers.join(", "))
            };
            format!("{} {}{names}", o.op, o.path)
        })
        .collect();
    Ok(format!(
        "allowed, {} JSONPatch operation(s) for {}: {}",
        a.op_count,
        f.sample_from,
        ops.join(", ")
    ))
}

/// The ConfigMap istiod reads its injection template from
/// (getInjectorConfigMapName, pilot/pkg/bootstrap/sidecarinjector.go).
pub fn injector_configmap_name(rev: &str) -> String {
    if rev == "default" || rev.is_empty() {
        "istio-sidecar-injector".into()
    } else {
        format!("istio-sidecar-injector-{rev}")
    }
}

/// The webhook calls istiod's injection path (`/inject`, `/inject/...`).
fn path_is_inject(c: &ClientRef) -> bool {
    let path = match c {
        ClientRef::Service { path, .. } => path.clone(),
        ClientRef::Url(u) => split_url(u).map(|x| x.2).unwrap_or_default(),
    };
    path == "/inject" || path.starts_with("/inject/") || path.starts_with("/inject?")
}

/// Make a single-quoted JSON patch argument a double-quoted one, so that
/// `$CA` expands.
fn dq_patch(cmd: &str) -> String {
    match cmd.split_once(" -p '") {
        Some((head, rest)) => {
            let body = rest.trim_end_matches('\'');
            format!("{head} -p \"{}\"", body.replace('"', "\\\""))
        }
        None => cmd.to_string(),
    }
}

fn kind_of(t: &Target) -> &'static str {
    match t.client {
        ClientRef::Service { .. } => "Service",
        ClientRef::Url(_) => "URL",
    }
}

fn service_fix(f: &WebhookFacts, s: &Settings, t: &Target) -> (Vec<String>, String) {
    let why = "kube-apiserver sends every new pod of an injected namespace there first and, with failurePolicy Fail, refuses the pod when the call fails: the gateway pod never appears";
    match (&t.client, &f.candidate) {
        (
            ClientRef::Service {
                name, namespace, ..
            },
            Some(c),
        ) if (name, namespace) != (&c.name, &c.namespace) => {
            let mut cmds = patch_commands(s, t, "service/name", &format!("{:?}", c.name));
            if namespace != &c.namespace {
                cmds.extend(patch_commands(
                    s,
                    t,
                    "service/namespace",
                    &format!("{:?}", c.namespace),
                ));
            }
            (
                cmds,
                format!(
                    "{why}. The revision's Service {}/{} leads to {}: point the webhook there",
                    c.namespace, c.name, c.leads_to
                ),
            )
        }
        (ClientRef::Url(_), Some(c)) => (
            vec![],
            format!(
                "{why}. Point the URL at istiod's exposed 15017, or use a service reference to {}/{} (it leads to {})",
                c.namespace, c.name, c.leads_to
            ),
        ),
        _ => (
            vec![],
            format!(
                "{why}. The remote needs a selector-less Service {}/{} whose EndpointSlice holds the primary's exposed istiod address (ports 15012 and 15017), as remote-istiod-endpoint checks",
                s.istio_namespace,
                chart_service(&f.revision)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::probe::tls::TlsReport;
    use k8s_openapi::api::admissionregistration::v1::{ServiceReference, WebhookClientConfig};
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    const ROOT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn config(name: &str, rev: &str) -> MutatingWebhookConfiguration {
        let hook = |prefix: &str| MutatingWebhook {
            name: format!("{prefix}sidecar-injector.istio.io"),
            client_config: WebhookClientConfig {
                service: Some(ServiceReference {
                    name: "istiod".into(),
                    namespace: "istio-system".into(),
                    path: Some("/inject/cluster/remote/net/network2".into()),
                    port: Some(443),
                }),
                ..Default::default()
            },
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            ..Default::default()
        };
        MutatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("istio.io/rev".to_string(), rev.to_string())].into()),
                ..Default::default()
            },
            webhooks: Some(vec![
                hook("rev.namespace."),
                hook("rev.object."),
                hook("namespace."),
                hook("object."),
            ]),
        }
    }

    fn patch_answer(uid: &str, allowed: bool, ops: Value) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": allowed, "patchType": "JSONPatch",
                "patch": b64(&ops.to_string()), "status": {"message": "template error"}}})
        .to_string()
        .into_bytes()
    }

    fn ok_tls() -> TlsReport {
        TlsReport {
            protocol: Some("TLSv1.3".into()),
            ..Default::default()
        }
    }

    fn target(review: Option<ReviewReport>) -> Target {
        Target {
            webhooks: (0..4)
                .map(|i| {
                    (
                        "istio-sidecar-injector".to_string(),
                        i,
                        format!("w{i}.sidecar-injector.istio.io"),
                    )
                })
                .collect(),
            client: ClientRef::Service {
                name: "istiod".into(),
                namespace: "istio-system".into(),
                port: 443,
                path: "/inject".into(),
            },
            resolved: Ok(("203.0.113.10:15017".into(), "EndpointSlice istiod".into())),
            dialled_instead: None,
            server_name: "istiod.istio-system.svc".into(),
            ca_bundle: Some(ROOT.into()),
            review,
            uid: "u-1".into(),
            mesh_root_verifies: None,
        }
    }

    fn answered(body: Vec<u8>) -> Option<ReviewReport> {
        Some(ReviewReport {
            tls: ok_tls(),
            status: Some(200),
            body,
            http_error: None,
        })
    }

    fn facts(targets: Vec<Target>) -> WebhookFacts {
        WebhookFacts {
            revision: "default".into(),
            revision_from: "istiod's Deployment".into(),
            configs: Ok(vec![config("istio-sidecar-injector", "default")]),
            others: vec![],
            targets,
            candidate: Some(Candidate {
                name: "istiod".into(),
                namespace: "istio-system".into(),
                leads_to: "203.0.113.10:15017".into(),
            }),
            mesh_root: Some(ROOT.into()),
            istiod_addr: Some(("203.0.113.10:15012".into(), "EndpointSlice".into())),
            dial_service: Some(("istiod".into(), "istio-system".into())),
            istiod_tls_failed: false,
            sample_from: "the pod template of Deployment istio-system/istio-eastwestgateway".into(),
            sample_containers: vec!["istio-proxy".into()],
            cluster_id: Some("remote".into()),
            network: Some("network2".into()),
        }
    }

    fn good_ops() -> Value {
        json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "docker.io/istio/proxyv2"},
               {"op": "add", "path": "/metadata/annotations/sidecar.istio.io~1status", "value": "{}"}])
    }

    struct Row {
        name: &'static str,
        facts: WebhookFacts,
        status: Status,
        code: Option<&'static str>,
        commands: &'static [&'static str],
    }

    #[test]
    fn judge_table() {
        let s = Settings::for_tests();
        let good = || target(answered(patch_answer("u-1", true, good_ops())));
        let tls_report = |r: TlsReport| {
            Some(ReviewReport {
                tls: r,
                ..Default::default()
            })
        };
        let mut wrong_ca = target(tls_report(TlsReport {
            verify_error: Some("certificate signed by unknown authority (the chain does not lead to any of the given roots)".into()),
            ..Default::default()
        }));
        wrong_ca.mesh_root_verifies = Some(true);
        let mut missing_svc = good();
        missing_svc.client = ClientRef::Service {
            name: "istiod-canary".into(),
            namespace: "istio-system".into(),
            port: 443,
            path: "/inject".into(),
        };
        missing_svc.resolved =
            Err("service \"istiod-canary\" not found in namespace istio-system".into());
        missing_svc.review = None;
        let mut endpoint_broken = facts(vec![{
            let mut t = good();
            t.resolved = Err("no endpoints available for service \"istiod\"".into());
            t.review = None;
            t
        }]);
        endpoint_broken.istiod_addr = None;
        let mut elsewhere = target(tls_report(TlsReport {
            tcp_error: Some("198.51.100.7:15017: connection refused".into()),
            ..Default::default()
        }));
        elsewhere.resolved = Ok(("198.51.100.7:15017".into(), "EndpointSlice other".into()));
        let mut name_refused = facts(vec![target(tls_report(TlsReport {
            verify_error: Some("certificate is not valid for istiod.istio-system.svc: it is valid for istiod.other.svc".into()),
            ..Default::default()
        }))]);
        let tls_blocked = {
            let mut f = name_refused.clone();
            f.istiod_tls_failed = true;
            f
        };
        name_refused.istiod_tls_failed = false;
        let mut none = facts(vec![]);
        none.configs = Ok(vec![]);
        none.others = vec!["istio-sidecar-injector-canary".into()];
        let rows = vec![
            Row {
                name: "healthy",
                facts: facts(vec![good()]),
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "no configuration for the revision",
                facts: none,
                status: Status::Fail,
                code: Some("injection-webhook/missing"),
                commands: &[
                    "kubectl --context ctx-remote apply -f - <<'EOF'",
                    "name: istio-sidecar-injector\n",
                    "path: \"/inject/cluster/remote/net/network2\"",
                ],
            },
            Row {
                name: "unreadable",
                facts: {
                    let mut f = facts(vec![]);
                    f.configs =
                        Err("cannot list mutatingwebhookconfigurations in the remote: 500".into());
                    f
                },
                status: Status::Fail,
                code: Some("injection-webhook/unreadable"),
                commands: &[],
            },
            Row {
                name: "a missing revision's Service",
                facts: facts(vec![missing_svc]),
                status: Status::Fail,
                code: Some("injection-webhook/wrong-service"),
                commands: &[
                    r#"patch mutatingwebhookconfiguration istio-sidecar-injector --type=json -p '[{"op":"replace","path":"/webhooks/0/clientConfig/service/name","value":"istiod"},"#,
                ],
            },
            Row {
                name: "the gateway's Service is broken: remote-istiod-endpoint says why",
                facts: endpoint_broken,
                status: Status::Skipped,
                code: None,
                commands: &[],
            },
            Row {
                name: "resolves to another host that does not answer",
                facts: facts(vec![elsewhere]),
                status: Status::Fail,
                code: Some("injection-webhook/wrong-service"),
                commands: &[],
            },
            Row {
                name: "15017 closed",
                facts: facts(vec![target(tls_report(TlsReport {
                    tcp_error: Some("203.0.113.10:15017: connection refused".into()),
                    ..Default::default()
                }))]),
                status: Status::Fail,
                code: Some("injection-webhook/unreachable"),
                commands: &[],
            },
            Row {
                name: "caBundle from another CA",
                facts: facts(vec![wrong_ca]),
                status: Status::Fail,
                code: Some("injection-webhook/ca-bundle-mismatch"),
                commands: &[
                    "CA=LS0t",
                    r#"-p "[{\"op\":\"replace\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$CA\"}"#,
                ],
            },
            Row {
                name: "name refused, istiod-tls passed",
                facts: name_refused,
                status: Status::Fail,
                code: Some("injection-webhook/tls-failed"),
                commands: &[],
            },
            Row {
                name: "name refused as on 15012",
                facts: tls_blocked,
                status: Status::Skipped,
                code: None,
                commands: &[],
            },
            Row {
                name: "handshake fails",
                facts: facts(vec![target(tls_report(TlsReport {
                    tls_error: Some("TLS handshake failed: connection reset by peer".into()),
                    ..Default::default()
                }))]),
                status: Status::Fail,
                code: Some("injection-webhook/tls-failed"),
                commands: &[],
            },
            Row {
                name: "denied",
                facts: facts(vec![target(answered(patch_answer(
                    "u-1",
                    false,
                    json!([]),
                )))]),
                status: Status::Fail,
                code: Some("injection-webhook/rejected"),
                commands: &[],
            },
            Row {
                name: "allowed without a patch",
                facts: facts(vec![target(answered(patch_answer(
                    "u-1",
                    true,
                    json!([{"op": "add", "path": "/metadata/labels/x", "value": "y"}]),
                )))]),
                status: Status::Fail,
                code: Some("injection-webhook/rejected"),
                commands: &[],
            },
            Row {
                name: "answer for another uid",
                facts: facts(vec![target(answered(patch_answer(
                    "u-2",
                    true,
                    good_ops(),
                )))]),
                status: Status::Fail,
                code: Some("injection-webhook/rejected"),
                commands: &[],
            },
            Row {
                name: "HTTP 404",
                facts: facts(vec![target(Some(ReviewReport {
                    tls: ok_tls(),
                    status: Some(404),
                    body: b"404 page not found".to_vec(),
                    http_error: None,
                }))]),
                status: Status::Fail,
                code: Some("injection-webhook/rejected"),
                commands: &[],
            },
            Row {
                name: "not an AdmissionReview",
                facts: facts(vec![target(answered(b"<html>".to_vec()))]),
                status: Status::Fail,
                code: Some("injection-webhook/rejected"),
                commands: &[],
            },
        ];
        for row in rows {
            let out = judge(&row.facts, &s);
            if row.status == Status::Skipped {
                assert_eq!(
                    out.status,
                    Some(Status::Skipped),
                    "{}: {:?}",
                    row.name,
                    out.diagnosis
                );
                assert!(!out.blocked_by.is_empty(), "{}", row.name);
                continue;
            }
            crate::engine::steps::check_row(row.name, &out, row.status, row.code, row.commands);
        }
    }

    /// A 404 on istiod's /inject is istiod without its injection template
    /// (the real test bed's istiod before `up` created the ConfigMap): the
    /// note names the revision's ConfigMap; on another path it does not.
    #[test]
    fn a_404_on_inject_names_the_injector_configmap() {
        let s = Settings::for_tests();
        let r404 = || {
            Some(ReviewReport {
                tls: ok_tls(),
                status: Some(404),
                body: b"404 page not found\n".to_vec(),
                http_error: None,
            })
        };
        let mut f = facts(vec![target(r404())]);
        f.revision = "canary".into();
        let out = judge(&f, &s);
        let note = out
            .finding
            .as_ref()
            .and_then(|x| x.note.clone())
            .unwrap_or_default();
        assert!(note.contains("istio-sidecar-injector-canary"), "{note}");
        assert!(note.contains("Skipping sidecar injector"), "{note}");
        let mut t = target(r404());
        t.client = ClientRef::Service {
            name: "istiod".into(),
            namespace: "istio-system".into(),
            port: 443,
            path: "/validate".into(),
        };
        let out = judge(&facts(vec![t]), &s);
        let note = out
            .finding
            .as_ref()
            .and_then(|x| x.note.clone())
            .unwrap_or_default();
        assert!(!note.contains("istio-sidecar-injector"), "{note}");
    }

    fn svc(type_: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("istiod".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                external_name: (type_ == "ExternalName").then(|| "istiod.example.com".into()),
                ports: Some(vec![
                    ServicePort {
                        name: Some("tcp-istiod".into()),
                        port: 15012,
                        ..Default::default()
                    },
                    ServicePort {
                        name: Some("tcp-webhook".into()),
                        port: 443,
                        target_port: Some(IntOrString::Int(15017)),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(ports: &[(&str, i32)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some("istiod-x".into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(vec![Endpoint {
                addresses: vec!["203.0.113.10".into()],
                ..Default::default()
            }]),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn services_resolve_as_kube_apiserver_resolves_them() {
        let both = slice(&[("tcp-istiod", 15012), ("tcp-webhook", 15017)]);
        assert_eq!(
            resolve_service(&svc("ClusterIP"), std::slice::from_ref(&both), 443)
                .unwrap()
                .0,
            "203.0.113.10:15017"
        );
        // The slice port is found by the Service port's name, not its number.
        let e = resolve_service(
            &svc("ClusterIP"),
            &[slice(&[("tcp-istiod", 15012), ("https", 15017)])],
            443,
        )
        .unwrap_err();
        assert_eq!(e, "no endpoints available for service \"istiod\"");
        let e = resolve_service(&svc("ClusterIP"), std::slice::from_ref(&both), 8443).unwrap_err();
        assert_eq!(e, "no service port 8443 found for service \"istiod\"");
        assert_eq!(
            resolve_service(&svc("ExternalName"), &[], 443).unwrap().0,
            "istiod.example.com:443"
        );
        assert!(resolve_service(&svc("ClusterIP"), &[], 443).is_err());
    }

    #[test]
    fn urls_and_names_follow_the_chart() {
        assert_eq!(
            split_url("https://istiod.example.com:15017/inject/cluster/remote/net/n2").unwrap(),
            (
                "istiod.example.com".into(),
                15017,
                "/inject/cluster/remote/net/n2".into()
            )
        );
        assert_eq!(split_url("https://[2001:db8::1]/inject").unwrap().1, 443);
        assert!(split_url("http://istiod:15017/inject").is_err());
        assert_eq!(
            chart_config_name("default", "istio-system"),
            "istio-sidecar-injector"
        );
        assert_eq!(
            chart_config_name("canary", "istio-system"),
            "istio-sidecar-injector-canary"
        );
        assert_eq!(
            chart_config_name("canary", "mesh"),
            "istio-sidecar-injector-canary-mesh"
        );
        assert_eq!(chart_service("canary"), "istiod-canary");
    }

    #[test]
    fn the_sample_is_the_gateways_template_without_the_injectors_marks() {
        use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
        use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
        let d = Deployment {
            metadata: ObjectMeta {
                name: Some("istio-eastwestgateway".into()),
                ..Default::default()
            },
            spec: DeploymentSpec {
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        annotations: Some(
                            [
                                ("sidecar.istio.io/status".to_string(), "{}".to_string()),
                                (
                                    "inject.istio.io/templates".to_string(),
                                    "gateway".to_string(),
                                ),
                            ]
                            .into(),
                        ),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "istio-proxy".into(),
                            image: Some("auto".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
            ..Default::default()
        };
        let gw = crate::engine::facts::GatewayFacts {
            namespace: "istio-system".into(),
            deployment: Some(d),
            ..Default::default()
        };
        let (pod, from, containers) = sample_pod(Some(&gw), "istio-system", "default");
        assert_eq!(containers, ["istio-proxy"]);
        assert!(from.contains("istio-eastwestgateway"));
        assert!(
            pod["metadata"]["annotations"]
                .get("sidecar.istio.io/status")
                .is_none()
        );
        assert_eq!(
            pod["metadata"]["annotations"]["inject.istio.io/templates"],
            "gateway"
        );
        let review = review_for(&pod, "u");
        assert_eq!(review["request"]["dryRun"], true);
        assert_eq!(review["request"]["namespace"], "istio-system");
        let (_, from, _) = sample_pod(None, "istio-system", "canary");
        assert!(from.starts_with("a minimal pod"));
    }
}
