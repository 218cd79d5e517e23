//! `istiod-exposure`: what in the primary exposes istiod to the remote, and
//! whether it is the address the remote's istiod Service holds. Istio's
//! multi-network install exposes 15012 (xDS/CA) and 15017 (webhook) on the
//! east-west gateway (samples/multicluster/gen-eastwest-gateway.sh) with a
//! `Gateway` passing TLS through and a `VirtualService` to istiod
//! (samples/multicluster/expose-istiod.yaml, expose-istiod-rev.yaml.tmpl);
//! other installs give istiod a LoadBalancer Service, or reach its pods
//! directly (a flat network). Gateway ports resolve as pilot resolves them
//! (resolvePorts in pilot/pkg/model/gateway.go), TLS routes bind as
//! pilot's gateway listener builder binds them (pilot/pkg/networking/core/gateway.go).

use super::dial::{Dial, service_of};
use super::istiod::{CA_PORT, join_host_port};
use super::remote_istiod_endpoint::refused_in_slice;
use super::{Settings, api_code, kube_err};
use crate::engine::facts::{RemoteIstiod, RemoteTarget};
use crate::engine::{Ctx, Outcome};
use crate::findings::{Finding, shell_word};
use crate::model::{Status, StepId};
use k8s_openapi::api::core::v1::{Node, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectList};
use serde_json::{Value, json};
use std::collections::BTreeMap;

crate::causes! { StepId::IstiodExposure;
    UNREADABLE = "unreadable", "the primary's Services cannot be read";
    NO_EXPOSURE = "no-exposure", "nothing in the primary exposes istiod to the remote";
    LB_PENDING = "lb-pending", "the Service that exposes istiod has no load-balancer address";
    MISSING_PORT = "missing-port", "the Service that exposes istiod lacks port 15012 or 15017";
    ADDRESS_MISMATCH = "address-mismatch", "the remote's istiod endpoints hold an address the primary does not expose istiod on";
    GATEWAY_MISSING = "gateway-missing", "no Istio Gateway opens 15012 or 15017 on the east-west gateway";
    GATEWAY_NOT_PASSTHROUGH = "gateway-not-passthrough", "the Gateway's server for 15012 or 15017 does not pass TLS through";
    VIRTUALSERVICE_MISSING = "virtualservice-missing", "no VirtualService routes the Gateway's 15012 or 15017 to istiod";
    VIRTUALSERVICE_WRONG_HOST = "virtualservice-wrong-host", "the VirtualService for 15012 or 15017 matches other names or routes elsewhere than the revision's istiod";
}

const WEBHOOK_PORT: i32 = 15017;
const EASTWEST_LABEL: (&str, &str) = ("istio", "eastwestgateway");
/// Bounds on what gather reads and dials (a primary with thousands of
/// Services must not make this step slow).
const MAX_LIST: u32 = 500;
const MAX_PROBES: usize = 4;

/// An Istio config object as read (Gateway, VirtualService).
#[derive(Debug, Clone, PartialEq)]
pub struct IstioObject {
    pub namespace: String,
    pub name: String,
    pub spec: Value,
}

/// What gather saw.
#[derive(Debug, Clone)]
pub struct ExposureFacts {
    /// The istio namespace of the primary.
    pub ns: String,
    /// What the remote resolves the gateway's address to; None when
    /// remote-istiod-endpoint did not pass.
    pub remote: Option<RemoteIstiod>,
    pub dial: Dial,
    /// The revision of the istiod judged (control-plane's pick).
    pub revision: String,
    /// Services of the istio namespace, and those labelled
    /// istio=eastwestgateway anywhere.
    pub services: Result<Vec<Service>, String>,
    /// Why a part was not read (cluster-wide Services, nodes, pods).
    pub notes: Vec<String>,
    /// istiod's pods (app=istiod in the istio namespace).
    pub istiod_pods: Vec<Pod>,
    /// The pods each exposing Service selects, by `ns/name`.
    pub selected_pods: BTreeMap<String, Vec<Pod>>,
    /// The primary's node addresses.
    pub nodes: Result<Vec<String>, String>,
    pub gateways: Result<Vec<IstioObject>, String>,
    pub virtual_services: Result<Vec<IstioObject>, String>,
    /// Hostnames resolved from here: ExternalName hosts, a public CA_ADDR host.
    pub resolved: BTreeMap<String, Vec<String>>,
    /// TCP dials from here of the remote's addresses that no exposure
    /// matches (`host:port` -> error).
    pub reachable: BTreeMap<String, Result<(), String>>,
}

fn gvk_resource(version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", version, kind),
        plural,
    )
}

/// Lists an Istio kind in every namespace: v1, else v1beta1 (Istio before
/// 1.22 serves no v1). Err says why in words.
/// The primary's lists this step reads that need no other step's facts:
/// `steps::prefetch` starts them with the trace.
#[allow(clippy::type_complexity)]
pub async fn primary_lists(
    primary: &kube::Client,
    ns: &str,
) -> (
    kube::Result<ObjectList<Service>>,
    kube::Result<ObjectList<Service>>,
    kube::Result<ObjectList<Pod>>,
    kube::Result<ObjectList<Node>>,
    Result<Vec<IstioObject>, String>,
    Result<Vec<IstioObject>, String>,
) {
    let in_ns: Api<Service> = Api::namespaced(primary.clone(), ns);
    let all_svc: Api<Service> = Api::all(primary.clone());
    let pods: Api<Pod> = Api::namespaced(primary.clone(), ns);
    let nodes: Api<Node> = Api::all(primary.clone());
    let lp = ListParams::default().limit(MAX_LIST);
    let ew_lp = lp
        .clone()
        .labels(&format!("{}={}", EASTWEST_LABEL.0, EASTWEST_LABEL.1));
    // The very list control-plane sends (no limit: a handful of pods, the
    // body bounded by the client), so the trace's shared reads send it once.
    let istiod_lp = ListParams::default().labels("app=istiod");
    tokio::join!(
        in_ns.list(&lp),
        all_svc.list(&ew_lp),
        pods.list(&istiod_lp),
        nodes.list(&lp),
        list_istio(primary, "Gateway", "gateways"),
        list_istio(primary, "VirtualService", "virtualservices"),
    )
}

async fn list_istio(
    client: &kube::Client,
    kind: &str,
    plural: &str,
) -> Result<Vec<IstioObject>, String> {
    let mut last = String::new();
    for version in ["v1", "v1beta1"] {
        let api: Api<DynamicObject> =
            Api::all_with(client.clone(), &gvk_resource(version, kind, plural));
        match api.list(&ListParams::default().limit(MAX_LIST)).await {
            Ok(l) => {
                return Ok(l
                    .items
                    .into_iter()
                    .map(|o| IstioObject {
                        namespace: o.metadata.namespace.clone().unwrap_or_default(),
                        name: o.metadata.name.clone().unwrap_or_default(),
                        spec: o.data.get("spec").cloned().unwrap_or(Value::Null),
                    })
                    .collect());
            }
            Err(e) if api_code(&e) == Some(404) => {
                last = format!(
                    "the primary serves no networking.istio.io/{version} {plural} (Istio's CRDs are not installed)"
                );
            }
            Err(e) => {
                return Err(format!(
                    "cannot list {plural}.networking.istio.io: {}",
                    kube_err(&e)
                ));
            }
        }
    }
    Err(last)
}

fn pod_ips(p: &Pod) -> Vec<String> {
    let st = p.status.clone().unwrap_or_default();
    let mut v: Vec<String> = st.pod_ips.iter().flatten().map(|i| i.ip.clone()).collect();
    if let Some(ip) = st.pod_ip {
        if !v.contains(&ip) {
            v.push(ip);
        }
    }
    v
}

fn is_ip(h: &str) -> bool {
    h.parse::<std::net::IpAddr>().is_ok()
}

pub async fn gather(ctx: &Ctx) -> ExposureFacts {
    let (remote, gw, revision) = {
        let f = ctx.facts();
        (
            f.remote_istiod.clone(),
            f.gateway.clone(),
            f.istiod_settings
                .as_ref()
                .map(|s| s.revision.value.clone())
                .unwrap_or_else(|| "default".into()),
        )
    };
    let ns = ctx.opts.istio_namespace.clone();
    let primary = ctx.clusters.primary.clone();
    let (svc_ns, svc_ew, istiod_pods, node_list, gateways, vss) =
        primary_lists(&primary, &ns).await;
    let mut notes = Vec::new();
    let services = match svc_ns {
        Err(e) => Err(format!(
            "cannot list Services in {ns} of the primary: {}",
            kube_err(&e)
        )),
        Ok(l) => {
            let mut v = l.items;
            match svc_ew {
                Ok(more) => {
                    for s in more.items {
                        if s.metadata.namespace.as_deref() != Some(ns.as_str()) {
                            v.push(s);
                        }
                    }
                }
                Err(e) => notes.push(format!(
                    "Services labelled istio=eastwestgateway outside {ns} not read: {}",
                    kube_err(&e)
                )),
            }
            Ok(v)
        }
    };
    let istiod_pods = match istiod_pods {
        Ok(l) => l.items,
        Err(e) => {
            notes.push(format!("istiod's pods not read: {}", kube_err(&e)));
            vec![]
        }
    };
    let nodes = node_list
        .map(|l| {
            l.items
                .iter()
                .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
                .map(|a| a.address.clone())
                .collect()
        })
        .map_err(|e| kube_err(&e));
    let mut f = ExposureFacts {
        ns,
        remote,
        dial: super::dial::of(gw.as_ref()),
        revision,
        services,
        notes,
        istiod_pods,
        selected_pods: BTreeMap::new(),
        nodes,
        gateways,
        virtual_services: vss,
        resolved: BTreeMap::new(),
        reachable: BTreeMap::new(),
    };
    // The pods the exposing Services select: a Gateway's selector matches
    // pod labels, and named target ports resolve in their containers.
    let exposing: Vec<(String, String, String)> = f
        .services
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter(|s| exposing_type(s).is_some())
        .filter_map(|s| {
            let sel = selector(s)?;
            Some((ns_of(s), name_of(s), sel))
        })
        .take(MAX_PROBES)
        .collect();
    for (sns, name, sel) in exposing {
        let api: Api<Pod> = Api::namespaced(primary.clone(), &sns);
        if let Ok(l) = api
            .list(&ListParams::default().labels(&sel).limit(10))
            .await
        {
            f.selected_pods.insert(format!("{sns}/{name}"), l.items);
        }
    }
    let timeout = ctx.opts.timeout;
    // Names resolved from here, as the remote's resolver would resolve them.
    let names: Vec<(String, i32)> = f
        .remote
        .iter()
        .flat_map(|r| r.targets.iter())
        .flat_map(|t| t.hosts.iter().map(move |h| (h.clone(), t.port)))
        .filter(|(h, _)| !is_ip(h) && !h.is_empty())
        .take(MAX_PROBES)
        .collect();
    for (h, port) in names {
        let addrs =
            tokio::time::timeout(timeout, tokio::net::lookup_host((h.as_str(), port as u16)))
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|it| it.map(|a| a.ip().to_string()).collect::<Vec<_>>())
                .unwrap_or_default();
        f.resolved.insert(h, addrs);
    }
    for addr in unmatched(&f).into_iter().take(MAX_PROBES) {
        let r = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str()))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            )),
        };
        f.reachable.insert(addr, r);
    }
    f
}

pub async fn run(ctx: &Ctx) -> Outcome {
    let facts = gather(ctx).await;
    let out = judge(&facts, &Settings::of(ctx));
    let summary = match (&out.finding, out.evidence.get("exposure")) {
        (Some(f), _) => format!("istiod-exposure found: {}", f.summary),
        (None, Some(Value::String(e))) => format!("istiod-exposure passed: {e}"),
        (None, _) => "istiod-exposure passed".into(),
    };
    ctx.facts().exposure = Some((out.status.unwrap_or(Status::Pass), summary));
    out
}

// ---- the primary's Services ----

fn ns_of(s: &Service) -> String {
    s.metadata.namespace.clone().unwrap_or_default()
}
fn name_of(s: &Service) -> String {
    s.metadata.name.clone().unwrap_or_default()
}
fn id_of(s: &Service) -> String {
    format!("{}/{}", ns_of(s), name_of(s))
}
fn selector_map(s: &Service) -> BTreeMap<String, String> {
    s.spec
        .as_ref()
        .and_then(|x| x.selector.clone())
        .unwrap_or_default()
}
fn selector(s: &Service) -> Option<String> {
    let m = selector_map(s);
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}
fn ports_of(s: &Service) -> &[ServicePort] {
    s.spec
        .as_ref()
        .and_then(|x| x.ports.as_deref())
        .unwrap_or(&[])
}
fn subset(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}
fn labels_of(p: &Pod) -> BTreeMap<String, String> {
    p.metadata.labels.clone().unwrap_or_default()
}

/// How a Service reaches outside its cluster: LoadBalancer, NodePort or
/// externalIPs; None for a ClusterIP-only Service.
fn exposing_type(s: &Service) -> Option<&'static str> {
    let spec = s.spec.as_ref()?;
    if spec.external_ips.as_ref().is_some_and(|v| !v.is_empty()) {
        return Some("externalIPs");
    }
    match spec.type_.as_deref() {
        Some("LoadBalancer") => Some("LoadBalancer"),
        Some("NodePort") => Some("NodePort"),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A gateway's pods pass TLS through to istiod.
    Gateway,
    /// The Service selects istiod's own pods.
    Istiod,
}

/// A Service that exposes (or is meant to expose) istiod.
#[derive(Debug, Clone)]
struct Exposure<'a> {
    svc: &'a Service,
    id: String,
    kind: Kind,
    how: &'static str,
    lb_ips: Vec<String>,
    lb_hosts: Vec<String>,
    external_ips: Vec<String>,
    /// The label sets of the pods it selects (else its selector).
    pod_labels: Vec<BTreeMap<String, String>>,
    pods: &'a [Pod],
}

impl Exposure<'_> {
    fn pending(&self) -> bool {
        self.how == "LoadBalancer"
            && self.lb_ips.is_empty()
            && self.lb_hosts.is_empty()
            && self.external_ips.is_empty()
    }
    fn addresses(&self) -> Vec<String> {
        let mut v = self.lb_ips.clone();
        v.extend(self.lb_hosts.iter().cloned());
        v.extend(self.external_ips.iter().cloned());
        v
    }
    /// The target port a Service port leads to in the pods: a number, a
    /// name looked up in the selected pods' containers, else the port.
    fn target(&self, p: &ServicePort) -> Option<i32> {
        match &p.target_port {
            None => Some(p.port),
            Some(IntOrString::Int(n)) => Some(*n),
            Some(IntOrString::String(name)) => self
                .pods
                .iter()
                .flat_map(|pod| pod.spec.iter().flat_map(|s| s.containers.iter()))
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .map(|cp| cp.container_port),
        }
    }
    fn describe(&self) -> String {
        let addr = match (self.addresses(), self.how) {
            (a, _) if !a.is_empty() => a.join(", "),
            (_, "LoadBalancer") => "no load-balancer address yet".into(),
            (_, "NodePort") => "the primary's node addresses".into(),
            _ => "no address".into(),
        };
        format!("{} Service {} ({addr})", self.how, self.id)
    }
}

/// A port meant for istiod's 15012 (`want` = 15012) or 15017: the number,
/// the target, or the name says so.
fn meant_for(e: &Exposure, p: &ServicePort, want: i32) -> bool {
    let word = if want == CA_PORT { "istiod" } else { "webhook" };
    let named = p
        .name
        .as_deref()
        .is_some_and(|n| n.contains(word) && (want != CA_PORT || !n.contains("webhook")));
    p.port == want || e.target(p) == Some(want) || named
}

fn exposures<'a>(f: &'a ExposureFacts, services: &'a [Service]) -> Vec<Exposure<'a>> {
    let istiod_labels: Vec<BTreeMap<String, String>> =
        f.istiod_pods.iter().map(labels_of).collect();
    let mut out = Vec::new();
    for s in services {
        let Some(how) = exposing_type(s) else {
            continue;
        };
        let sel = selector_map(s);
        let selects_istiod = !sel.is_empty() && istiod_labels.iter().any(|l| subset(&sel, l));
        let eastwest =
            s.metadata.labels.as_ref().is_some_and(|l| {
                l.get(EASTWEST_LABEL.0).map(String::as_str) == Some(EASTWEST_LABEL.1)
            });
        let pods: &[Pod] = f
            .selected_pods
            .get(&id_of(s))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut e = Exposure {
            svc: s,
            id: id_of(s),
            kind: if selects_istiod {
                Kind::Istiod
            } else {
                Kind::Gateway
            },
            how,
            lb_ips: vec![],
            lb_hosts: vec![],
            external_ips: s
                .spec
                .as_ref()
                .and_then(|x| x.external_ips.clone())
                .unwrap_or_default(),
            pod_labels: if pods.is_empty() {
                vec![sel.clone()]
            } else {
                pods.iter().map(labels_of).collect()
            },
            pods,
        };
        for ing in s
            .status
            .iter()
            .flat_map(|st| st.load_balancer.iter())
            .flat_map(|lb| lb.ingress.iter().flatten())
        {
            if let Some(ip) = ing.ip.clone().filter(|x| !x.is_empty()) {
                e.lb_ips.push(ip);
            }
            if let Some(h) = ing.hostname.clone().filter(|x| !x.is_empty()) {
                e.lb_hosts.push(h);
            }
        }
        let istiodish = ports_of(s).iter().any(|p| meant_for(&e, p, CA_PORT));
        if eastwest || selects_istiod || istiodish {
            out.push(e);
        }
    }
    // The east-west gateway first, as Istio's samples name it.
    out.sort_by_key(|e| {
        (
            e.kind != Kind::Gateway,
            !e.id.ends_with("/istio-eastwestgateway"),
        )
    });
    out
}

/// How `host` is one of the exposure's addresses, if it is; `node` when it
/// is a node address (the port is then a node port).
fn address_rule(f: &ExposureFacts, e: &Exposure, host: &str) -> Option<(String, bool)> {
    let h = host.to_ascii_lowercase();
    if e.lb_ips.iter().any(|i| i == host) {
        return Some(("its load-balancer IP".into(), false));
    }
    if e.lb_hosts.iter().any(|x| x.to_ascii_lowercase() == h) {
        return Some(("its load-balancer hostname".into(), false));
    }
    if e.external_ips.iter().any(|i| i == host) {
        return Some(("one of its externalIPs".into(), false));
    }
    if let Some(ips) = f.resolved.get(host) {
        if let Some(ip) = ips
            .iter()
            .find(|ip| e.lb_ips.contains(ip) || e.external_ips.contains(ip))
        {
            return Some((
                format!("{host} resolves (from here) to {ip}, its address"),
                false,
            ));
        }
    }
    if matches!(e.how, "NodePort" | "LoadBalancer") {
        if let Ok(nodes) = &f.nodes {
            if nodes.iter().any(|n| n == host) {
                return Some(("a node address of the primary".into(), true));
            }
        }
    }
    None
}

/// The Service port the remote's `port` reaches on the exposure.
fn port_for<'a>(e: &'a Exposure, port: i32, node: bool) -> Option<&'a ServicePort> {
    ports_of(e.svc).iter().find(|p| {
        if node {
            p.node_port == Some(port)
        } else {
            p.port == port
        }
    })
}

struct Matched<'a> {
    e: &'a Exposure<'a>,
    target: &'a RemoteTarget,
    host: String,
    rule: String,
    node: bool,
}

fn find_match<'a>(
    f: &ExposureFacts,
    exps: &'a [Exposure<'a>],
    remote: &'a RemoteIstiod,
) -> Option<Matched<'a>> {
    for t in &remote.targets {
        for h in &t.hosts {
            for e in exps {
                if let Some((rule, node)) = address_rule(f, e, h) {
                    if port_for(e, t.port, node).is_some() {
                        return Some(Matched {
                            e,
                            target: t,
                            host: h.clone(),
                            rule,
                            node,
                        });
                    }
                }
            }
        }
    }
    None
}

/// A flat network: the remote's endpoints hold istiod's pod IPs (or, for a
/// host-network istiod, its node's) with istiod's own port.
fn flat(f: &ExposureFacts, remote: &RemoteIstiod) -> Option<String> {
    for t in &remote.targets {
        for h in &t.hosts {
            for p in &f.istiod_pods {
                let spec = p.spec.clone().unwrap_or_default();
                let listens = spec
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .any(|cp| cp.container_port == t.port)
                    || t.port == CA_PORT;
                if !listens {
                    continue;
                }
                let name = p.metadata.name.clone().unwrap_or_default();
                if pod_ips(p).iter().any(|ip| ip == h) && spec.host_network != Some(true) {
                    return Some(format!(
                        "flat network / direct: {} is the IP of istiod's pod {name}",
                        join_host_port(h, t.port)
                    ));
                }
                let host_ip = p.status.as_ref().and_then(|s| s.host_ip.clone());
                if spec.host_network == Some(true)
                    && host_ip.as_deref() == Some(h.as_str())
                    && t.port == CA_PORT
                {
                    return Some(format!(
                        "flat network / direct: {} is the node of istiod's host-network pod {name}",
                        join_host_port(h, t.port)
                    ));
                }
            }
        }
    }
    None
}

/// The remote's addresses (`host:port`) that neither a flat network nor an
/// exposure accounts for: gather dials them.
fn unmatched(f: &ExposureFacts) -> Vec<String> {
    let (Some(remote), Ok(services)) = (&f.remote, &f.services) else {
        return vec![];
    };
    let exps = exposures(f, services);
    if flat(f, remote).is_some() || find_match(f, &exps, remote).is_some() {
        return vec![];
    }
    remote
        .targets
        .iter()
        .flat_map(|t| t.hosts.iter().map(move |h| join_host_port(h, t.port)))
        .collect()
}

// ---- Gateway and VirtualService, as pilot binds them ----

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path).and_then(Value::as_str)
}
fn num_at(v: &Value, path: &str) -> Option<i64> {
    v.pointer(path).and_then(Value::as_i64)
}
fn labels_value(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The ports a Gateway server's number listens on in the gateway's pods
/// (resolvePorts, legacy selector): the target of the first Service port of
/// that number, else the number as it is.
fn resolve_port(e: &Exposure, number: i64) -> i64 {
    ports_of(e.svc)
        .iter()
        .find(|p| i64::from(p.port) == number)
        .and_then(|p| e.target(p))
        .map(i64::from)
        .unwrap_or(number)
}

/// The Gateway server number that listens on `target` (what a fix writes):
/// the target itself unless a Service port of that number translates it.
fn server_number(e: &Exposure, target: i32) -> i64 {
    if resolve_port(e, i64::from(target)) == i64::from(target) {
        return i64::from(target);
    }
    ports_of(e.svc)
        .iter()
        .find(|p| e.target(p) == Some(target))
        .map(|p| i64::from(p.port))
        .unwrap_or(i64::from(target))
}

/// Istio's host matching (host.Name.Matches): `*`, a `*.suffix`, or equal.
fn host_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    if p == "*" {
        return true;
    }
    match p.strip_prefix('*') {
        Some(suffix) => n.ends_with(suffix),
        None => p == n,
    }
}

struct Server<'a> {
    gw: &'a IstioObject,
    index: usize,
    number: i64,
    passthrough: bool,
    mode: String,
    protocol: String,
}

fn servers_for<'a>(e: &Exposure, gws: &'a [IstioObject], target: i32) -> Vec<Server<'a>> {
    let mut out = vec![];
    for g in gws {
        let sel = labels_value(g.spec.get("selector"));
        if !e.pod_labels.iter().any(|l| subset(&sel, l)) {
            continue;
        }
        for (i, srv) in g
            .spec
            .get("servers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(number) = num_at(srv, "/port/number") else {
                continue;
            };
            if resolve_port(e, number) != i64::from(target) {
                continue;
            }
            let mode = str_at(srv, "/tls/mode").unwrap_or("").to_string();
            let protocol = str_at(srv, "/port/protocol")
                .unwrap_or("")
                .to_ascii_uppercase();
            out.push(Server {
                gw: g,
                index: i,
                number,
                passthrough: mode == "PASSTHROUGH" && protocol == "TLS",
                mode,
                protocol,
            });
        }
    }
    out.sort_by_key(|s| !s.passthrough);
    out
}

/// `ns/name` a VirtualService's gateway reference names (resolveGatewayName).
fn gateway_ref(r: &str, vs_ns: &str) -> String {
    if r.contains('/') {
        r.to_string()
    } else {
        format!("{vs_ns}/{r}")
    }
}

struct Route<'a> {
    vs: &'a IstioObject,
    tls: usize,
    sni: Vec<String>,
    /// (index of the route entry, destination host, port number)
    dest: Option<(usize, String, Option<i64>)>,
}

/// The TLS routes of VirtualServices bound to the Gateway of `srv` whose
/// match takes its port (buildGatewayNetworkFiltersFromTLSRoutes).
fn routes_for<'a>(vss: &'a [IstioObject], srv: &Server) -> Vec<Route<'a>> {
    let gw = format!("{}/{}", srv.gw.namespace, srv.gw.name);
    let mut out = vec![];
    for vs in vss {
        let bound = vs
            .spec
            .get("gateways")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|g| gateway_ref(g, &vs.namespace) == gw);
        if !bound {
            continue;
        }
        for (ti, tls) in vs
            .spec
            .get("tls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let routes = tls
                .get("route")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if routes.is_empty() {
                continue;
            }
            for m in tls
                .get("match")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let port = m.get("port").and_then(Value::as_i64).unwrap_or(0);
                let gws_ok = m.get("gateways").and_then(Value::as_array).is_none_or(|g| {
                    g.is_empty()
                        || g.iter()
                            .filter_map(Value::as_str)
                            .any(|x| gateway_ref(x, &vs.namespace) == gw)
                });
                if (port == 0 || port == srv.number) && gws_ok {
                    let dest = routes.first().map(|r| {
                        (
                            0,
                            str_at(r, "/destination/host").unwrap_or("").to_string(),
                            num_at(r, "/destination/port/number"),
                        )
                    });
                    out.push(Route {
                        vs,
                        tls: ti,
                        sni: m
                            .get("sniHosts")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect(),
                        dest,
                    });
                }
            }
        }
    }
    out
}

/// The istiod Service of the revision judged: one in the istio namespace
/// that selects the revision's istiod pods, else named `istiod[-<rev>]`.
fn istiod_service<'a>(f: &ExposureFacts, services: &'a [Service]) -> (String, Option<&'a Service>) {
    let fallback = if f.revision.is_empty() || f.revision == "default" {
        "istiod".to_string()
    } else {
        format!("istiod-{}", f.revision)
    };
    let rev_pods: Vec<BTreeMap<String, String>> = f
        .istiod_pods
        .iter()
        .map(labels_of)
        .filter(|l| match l.get("istio.io/rev") {
            Some(r) => *r == f.revision,
            None => f.revision == "default",
        })
        .collect();
    let in_ns = services
        .iter()
        .filter(|s| ns_of(s) == f.ns && exposing_type(s).is_none());
    let selecting: Vec<&Service> = in_ns
        .filter(|s| {
            let sel = selector_map(s);
            !sel.is_empty() && rev_pods.iter().any(|l| subset(&sel, l))
        })
        .collect();
    let pick = selecting
        .iter()
        .find(|s| name_of(s) == fallback)
        .or_else(|| selecting.iter().find(|s| name_of(s).starts_with("istiod")))
        .or_else(|| selecting.first())
        .copied()
        .or_else(|| {
            services
                .iter()
                .find(|s| ns_of(s) == f.ns && name_of(s) == fallback)
        });
    (pick.map(name_of).unwrap_or(fallback), pick)
}

/// The istiod Service port that leads to `target` (15012 or 15017).
fn istiod_port_to(svc: Option<&Service>, target: i32) -> i64 {
    let default = if target == CA_PORT { 15012 } else { 443 };
    svc.and_then(|s| {
        ports_of(s).iter().find(|p| match &p.target_port {
            Some(IntOrString::Int(n)) => *n == target,
            None => p.port == target,
            Some(IntOrString::String(_)) => p.port == target,
        })
    })
    .map(|p| i64::from(p.port))
    .unwrap_or(default)
}

// ---- fixes ----

fn apply(ctx: &str, doc: &str) -> String {
    format!("{ctx} apply -f - <<'EOF'\n{doc}EOF")
}

fn json_patch(s: &Settings, ns: &str, kind: &str, name: &str, ops: &Value) -> String {
    format!(
        "{} -n {} patch {kind} {name} --type=json -p={}",
        s.kubectl_primary(),
        shell_word(ns),
        shell_word(&ops.to_string())
    )
}

fn yaml_map(m: &BTreeMap<String, String>, indent: &str) -> String {
    m.iter()
        .map(|(k, v)| format!("{indent}{k}: {v}\n"))
        .collect()
}

/// The Gateway selector a fix writes: `istio: eastwestgateway` when the
/// pods carry it (as Istio's sample), else the Service's selector.
fn fix_selector(e: &Exposure) -> BTreeMap<String, String> {
    if e.pod_labels
        .iter()
        .all(|l| l.get(EASTWEST_LABEL.0).map(String::as_str) == Some(EASTWEST_LABEL.1))
    {
        return [(EASTWEST_LABEL.0.to_string(), EASTWEST_LABEL.1.to_string())].into();
    }
    selector_map(e.svc)
}

fn server_yaml(name: &str, number: i64) -> String {
    format!(
        "  - port:\n      name: {name}\n      number: {number}\n      protocol: TLS\n    tls:\n      mode: PASSTHROUGH\n    hosts:\n    - \"*\"\n"
    )
}

fn server_json(name: &str, number: i64) -> Value {
    json!({"port": {"name": name, "number": number, "protocol": "TLS"}, "tls": {"mode": "PASSTHROUGH"}, "hosts": ["*"]})
}

/// The SNI names a fix's VirtualService matches: every name for the
/// default revision (Istio's expose-istiod.yaml), the revision's own names
/// otherwise (expose-istiod-rev.yaml.tmpl).
fn fix_sni(f: &ExposureFacts, istiod_svc: &str, sni: &str) -> Vec<String> {
    if f.revision.is_empty() || f.revision == "default" {
        return vec!["*".into()];
    }
    let mut v = vec![];
    for n in [sni.to_string(), format!("{istiod_svc}.{}.svc", f.ns)] {
        if !is_ip(&n) && !v.contains(&n) {
            v.push(n.clone());
            if n.ends_with(".svc") {
                v.push(format!("{n}.cluster.local"));
            }
        }
    }
    v
}

fn route_yaml(port: i64, sni: &[String], host: &str, dest_port: i64) -> String {
    let sni: String = sni.iter().map(|h| format!("      - \"{h}\"\n")).collect();
    format!(
        "  - match:\n    - port: {port}\n      sniHosts:\n{sni}    route:\n    - destination:\n        host: {host}\n        port:\n          number: {dest_port}\n"
    )
}

// ---- the judge ----

/// One port to expose: 15012 (istiod) or 15017 (webhook), with what the
/// remote asks for and the name the caller sends.
struct Want {
    target: i32,
    what: &'static str,
    remote_port: Option<i32>,
    sni: String,
}

pub fn judge(f: &ExposureFacts, s: &Settings) -> Outcome {
    let mut out = Outcome::new();
    if let Some(r) = &f.remote {
        let addrs: Vec<String> = r
            .targets
            .iter()
            .flat_map(|t| t.hosts.iter().map(move |h| join_host_port(h, t.port)))
            .collect();
        out.ev(
            "remote_resolves",
            json!({"addresses": addrs, "from": r.from}),
        );
    }
    out.ev("revision", &f.revision);
    if !f.notes.is_empty() {
        out.ev("not_read", &f.notes);
    }
    let services = match &f.services {
        Err(e) => {
            return out.failing(
                Finding::new(&UNREADABLE, "cannot read the primary's Services").note(format!(
                    "the --primary context needs list on services in {} (and, for the east-west gateway elsewhere, in every namespace), list on pods, nodes, and on gateways and virtualservices of networking.istio.io",
                    f.ns
                )),
                e.clone(),
            );
        }
        Ok(v) => v,
    };
    let exps = exposures(f, services);
    out.ev(
        "exposures",
        exps.iter().map(Exposure::describe).collect::<Vec<_>>(),
    );
    if let Some(r) = &f.remote {
        if let Some(why) = flat(f, r) {
            out.ev("rule", &why).ev("exposure", &why);
            return out.pass();
        }
        if let Some(m) = find_match(f, &exps, r) {
            out.ev(
                "rule",
                format!(
                    "the remote's {} ({}) is {} of {}",
                    join_host_port(&m.host, m.target.port),
                    r.from,
                    m.rule,
                    m.e.describe()
                ),
            );
            return check(out, f, s, services, m.e, Some(&m));
        }
    }
    let Some(r) = &f.remote else {
        // remote-istiod-endpoint gave no address: judge the exposure alone.
        return match exps.first() {
            Some(e) => {
                out.ev("rule", format!("the remote's address is unknown (remote-istiod-endpoint did not pass): {} is judged alone", e.describe()));
                check(out, f, s, services, e, None)
            }
            None => {
                out.ev("note", "the remote's address is unknown (remote-istiod-endpoint did not pass) and no Service of the primary exposes istiod: nothing to compare");
                out.pass()
            }
        };
    };
    let first_host = r
        .targets
        .first()
        .and_then(|t| t.hosts.first())
        .cloned()
        .unwrap_or_default();
    if r.service.is_none() && !is_ip(&first_host) {
        let resolved = f
            .resolved
            .get(&first_host)
            .map(|v| v.join(", "))
            .filter(|v| !v.is_empty());
        let why = format!(
            "external control plane: the gateway dials {} ({}), a name outside the remote's cluster DNS; {} and no Service of the primary has that name or address as its load balancer's, so how the name reaches istiod is outside what the clusters show",
            join_host_port(&first_host, r.targets[0].port),
            r.from,
            match resolved {
                Some(ips) => format!("from here it resolves to {ips},"),
                None => "it does not resolve from here,".into(),
            }
        );
        out.ev("rule", &why).ev("exposure", &why);
        return out.pass();
    }
    let remote_addrs: Vec<String> = r
        .targets
        .iter()
        .flat_map(|t| t.hosts.iter().map(move |h| join_host_port(h, t.port)))
        .collect();
    let answered: Vec<&String> = remote_addrs
        .iter()
        .filter(|a| matches!(f.reachable.get(*a), Some(Ok(()))))
        .collect();
    let dial_words = remote_addrs
        .iter()
        .map(|a| match f.reachable.get(a) {
            Some(Ok(())) => format!("{a} answers"),
            Some(Err(e)) => format!("{a}: {e}"),
            None => format!("{a} not dialled"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    out.ev("remote_address_from_here", &dial_words);
    let pending = exps.iter().find(|e| e.pending());
    let remote_list = super::quote_list(&remote_addrs);
    if !answered.is_empty() {
        if let Some(e) = pending {
            return out.warning(
                Finding::new(&LB_PENDING, format!("Service {} in the primary has no load-balancer address", e.id))
                    .note(lb_note(s, e)),
                format!(
                    "{} is a LoadBalancer with no address in its status; the remote's {remote_list} ({}) answers from here, so something else exposes istiod today",
                    e.id, r.from
                ),
            );
        }
        let why = format!(
            "the remote's {} ({}) answers on TCP from here, and no Service of the primary shows that address (a load balancer or NAT outside Kubernetes?): not judged further; istiod-tls verifies who answers",
            answered[0], r.from
        );
        out.ev("rule", &why).ev("exposure", &why);
        return out.pass();
    }
    // Nothing answers at the remote's address.
    for t in &r.targets {
        for h in &t.hosts {
            for e in &exps {
                let Some((rule, node)) = address_rule(f, e, h) else {
                    continue;
                };
                let Some(p) = ports_of(e.svc).iter().find(|p| meant_for(e, p, CA_PORT)) else {
                    return missing_port(
                        out,
                        s,
                        e,
                        CA_PORT,
                        t.port,
                        &format!(
                            "the remote's {} is {rule} of {}, which has no port for 15012",
                            join_host_port(h, t.port),
                            e.id
                        ),
                    );
                };
                let exposed = if node {
                    p.node_port.unwrap_or(p.port)
                } else {
                    p.port
                };
                return mismatch(
                    out,
                    s,
                    r,
                    t,
                    e,
                    h,
                    exposed,
                    &format!(
                        "the remote's {} ({}) is {rule} of {}, but its 15012 is on port {exposed}, not {}; {dial_words}",
                        join_host_port(h, t.port),
                        r.from,
                        e.id,
                        t.port
                    ),
                );
            }
        }
    }
    if let Some(e) = pending {
        return out.failing(
            Finding::new(&LB_PENDING, format!("Service {} in the primary has no load-balancer address", e.id)).note(lb_note(s, e)),
            format!("{} is a LoadBalancer with no address in its status, and the remote's {remote_list} ({}) does not answer: {dial_words}", e.id, r.from),
        );
    }
    if let Some(e) = exps.iter().find(|e| !e.addresses().is_empty()) {
        let t = &r.targets[0];
        let h = e.addresses()[0].clone();
        let exposed = ports_of(e.svc)
            .iter()
            .find(|p| meant_for(e, p, CA_PORT))
            .map(|p| p.port)
            .unwrap_or(CA_PORT);
        return mismatch(
            out,
            s,
            r,
            t,
            e,
            &h,
            exposed,
            &format!(
                "the remote's {remote_list} ({}) is not where {} exposes istiod ({}); {dial_words}",
                r.from,
                e.describe(),
                join_host_port(&h, exposed)
            ),
        );
    }
    out.failing(
        Finding::new(&NO_EXPOSURE, "nothing in the primary exposes istiod to the remote").note(format!(
            "Istio's multi-network install exposes istiod on the east-west gateway: `samples/multicluster/gen-eastwest-gateway.sh --network NETWORK | istioctl --context {} install -y -f -`, then `{} apply -n {} -f samples/multicluster/expose-istiod.yaml`; then point the remote's istiod EndpointSlice at the gateway's load-balancer address. Or give istiod a LoadBalancer Service on 15012 and 15017",
            shell_word(&s.primary_context), s.kubectl_primary(), shell_word(&f.ns)
        )),
        format!(
            "no LoadBalancer, NodePort or externalIPs Service of the primary ({} or labelled istio=eastwestgateway) leads to istiod, its pods are not the remote's {remote_list} ({}), and that address does not answer: {dial_words}",
            f.ns, r.from
        ),
    )
}

fn lb_note(s: &Settings, e: &Exposure) -> String {
    format!(
        "a load-balancer controller (the cloud's, MetalLB, ...) fills the address in: `{} -n {} describe service {}` shows its events. Once it has one, point the remote's istiod EndpointSlice at it",
        s.kubectl_primary(),
        shell_word(&ns_of(e.svc)),
        name_of(e.svc)
    )
}

/// address-mismatch: the fix patches the remote's slice to the exposed
/// address (only the parts that differ).
#[allow(clippy::too_many_arguments)]
fn mismatch(
    out: Outcome,
    s: &Settings,
    r: &RemoteIstiod,
    t: &RemoteTarget,
    e: &Exposure,
    host: &str,
    port: i32,
    diag: &str,
) -> Outcome {
    let exposed = join_host_port(host, port);
    let mut finding = Finding::new(
        &ADDRESS_MISMATCH,
        format!(
            "the remote's istiod endpoints are not {exposed}, where the primary exposes istiod"
        ),
    );
    let (svc, ns) = r.service.clone().unwrap_or_default();
    let mut ops = vec![];
    let mut note = format!(
        "the remote's Service {ns}/{svc} must lead to {exposed} ({})",
        e.describe()
    );
    if let Some((slice, pi, _)) = &t.slice {
        let mut printable = true;
        if !t.hosts.iter().any(|h| h == host) {
            if let Some(why) = refused_in_slice(host) {
                printable = false;
                note = format!(
                    "{note}; {host} is a {why} address, which Kubernetes refuses in an EndpointSlice: expose istiod on an address the remote's pods reach"
                );
            } else if is_ip(host) {
                ops.push(json!({"op": "replace", "path": "/endpoints", "value": [{"addresses": [host]}]}));
            } else {
                printable = false;
                note = format!(
                    "{note}; {host} is a hostname: make Service {ns}/{svc} an ExternalName for it (remote-istiod-endpoint's fix)"
                );
            }
        }
        if t.port != port {
            ops.push(json!({"op": "replace", "path": format!("/ports/{pi}/port"), "value": port}));
        }
        if printable && !ops.is_empty() {
            finding = finding.command(format!(
                "{} -n {} patch endpointslice {slice} --type=json -p={}",
                s.kubectl_remote(),
                shell_word(&ns),
                shell_word(&Value::Array(ops).to_string())
            ));
            note = format!(
                "{note}: the patch sets the slice's address and port to the exposed ones, as Istio's remote profile writes them from values.global.remotePilotAddress"
            );
        }
    } else {
        note = format!(
            "{note}: the remote's endpoints come from {}; point them at {exposed}",
            r.from
        );
    }
    out.failing(finding.note(note), diag.to_string())
}

fn missing_port(
    out: Outcome,
    s: &Settings,
    e: &Exposure,
    target: i32,
    want_port: i32,
    diag: &str,
) -> Outcome {
    let name = if target == CA_PORT {
        "tls-istiod"
    } else {
        "tls-webhook"
    };
    let value = json!({"name": name, "port": want_port, "targetPort": target, "protocol": "TCP"});
    let path = if ports_of(e.svc).is_empty() {
        "/spec/ports"
    } else {
        "/spec/ports/-"
    };
    let value = if ports_of(e.svc).is_empty() {
        json!([value])
    } else {
        value
    };
    out.failing(
        Finding::new(&MISSING_PORT, format!("Service {} in the primary has no port for {target}", e.id))
            .command(json_patch(s, &ns_of(e.svc), "service", &name_of(e.svc), &json!([{"op": "add", "path": path, "value": value}])))
            .note(format!(
                "adds port {want_port} -> {target} ({name}), as Istio's gen-eastwest-gateway.sh gives the east-west gateway; {}",
                if e.kind == Kind::Gateway { "the Gateway and VirtualService for it are checked next" } else { "istiod listens on it itself" }
            )),
        diag.to_string(),
    )
}

/// The checks of the exposure the remote uses (or, with `m` None, the
/// one the primary shows when the remote's address is unknown).
fn check(
    mut out: Outcome,
    f: &ExposureFacts,
    s: &Settings,
    services: &[Service],
    e: &Exposure,
    m: Option<&Matched>,
) -> Outcome {
    if m.is_none() && e.pending() {
        return out.failing(
            Finding::new(
                &LB_PENDING,
                format!(
                    "Service {} in the primary has no load-balancer address",
                    e.id
                ),
            )
            .note(lb_note(s, e)),
            format!("{} is a LoadBalancer with no address in its status", e.id),
        );
    }
    let target = m.map(|m| m.target);
    let remote_svc = f.remote.as_ref().and_then(|r| r.service.clone());
    let webhook_sni = match &remote_svc {
        Some((svc, ns)) => format!("{svc}.{ns}.svc"),
        None => format!("{}.{}.svc", istiod_service(f, services).0, f.ns),
    };
    let wants = [
        Want {
            target: CA_PORT,
            what: "15012 (xDS and CA)",
            remote_port: target.map(|t| t.port),
            sni: f.dial.server_name.clone(),
        },
        Want {
            target: WEBHOOK_PORT,
            what: "15017 (injection webhook)",
            remote_port: target.and_then(|t| t.webhook_port),
            sni: webhook_sni,
        },
    ];
    // The Service ports, then the listener targets they lead to.
    let mut targets = vec![];
    for w in &wants {
        let ports = ports_of(e.svc);
        let node = m.is_some_and(|m| m.node);
        let by_remote = w.remote_port.and_then(|rp| {
            ports.iter().find(|p| {
                if node {
                    p.node_port == Some(rp)
                } else {
                    p.port == rp
                }
            })
        });
        let p = match by_remote {
            Some(p) => p,
            None => match ports.iter().find(|p| meant_for(e, p, w.target)) {
                Some(p) => {
                    if let (Some(rp), Some(t)) = (w.remote_port, target) {
                        // The remote names a port the Service does not have.
                        let exposed = if node {
                            p.node_port.unwrap_or(p.port)
                        } else {
                            p.port
                        };
                        let r = f.remote.as_ref().cloned().unwrap_or_default();
                        return webhook_mismatch(out, s, &r, t, e, rp, exposed, w);
                    }
                    p
                }
                None => {
                    let want_port = w.remote_port.unwrap_or(w.target);
                    return missing_port(
                        out,
                        s,
                        e,
                        w.target,
                        want_port,
                        &format!(
                            "{} has ports [{}], none for {}{}",
                            e.id,
                            ports
                                .iter()
                                .map(|p| format!(
                                    "{}:{}",
                                    p.name.clone().unwrap_or_default(),
                                    p.port
                                ))
                                .collect::<Vec<_>>()
                                .join(", "),
                            w.what,
                            w.remote_port
                                .map(|rp| format!(" (the remote's slice names port {rp})"))
                                .unwrap_or_default()
                        ),
                    );
                }
            },
        };
        targets.push((w, p.port, e.target(p).unwrap_or(p.port)));
    }
    let ports_ev: Vec<String> = targets
        .iter()
        .map(|(w, p, t)| format!("{p} -> {t} for {}", w.what))
        .collect();
    out.ev("ports", &ports_ev);
    let summary = format!("{} ({})", e.describe(), ports_ev.join(", "));
    if e.kind == Kind::Istiod {
        out.ev(
            "exposure",
            format!("{summary}, selecting istiod's pods: no gateway in between"),
        );
        return out.pass();
    }
    let gws = match &f.gateways {
        Ok(g) => g,
        Err(why) => {
            out.ev("gateway_checks", format!("skipped: {why}"));
            out.ev(
                "exposure",
                format!("{summary}; its Gateway and VirtualService not checked ({why})"),
            );
            return out.pass();
        }
    };
    let (istiod_svc, istiod_obj) = istiod_service(f, services);
    let istiod_host = format!("{istiod_svc}.{}.svc.cluster.local", f.ns);
    let mut chosen = vec![];
    for (w, _, t) in &targets {
        let servers = servers_for(e, gws, *t);
        let Some(srv) = servers.into_iter().next() else {
            return gateway_missing(out, s, e, gws, w, *t);
        };
        if !srv.passthrough {
            let ops = json!([
                {"op": "add", "path": format!("/spec/servers/{}/port/protocol", srv.index), "value": "TLS"},
                {"op": "add", "path": format!("/spec/servers/{}/tls", srv.index), "value": {"mode": "PASSTHROUGH"}},
            ]);
            return out.failing(
                Finding::new(&GATEWAY_NOT_PASSTHROUGH, format!("Gateway {}/{} does not pass TLS through on {}", srv.gw.namespace, srv.gw.name, w.target))
                    .command(json_patch(s, &srv.gw.namespace, "gateway.networking.istio.io", &srv.gw.name, &ops))
                    .note("istiod terminates its own TLS (the gateway's agent and the remote API server verify istiod's certificate): the east-west gateway must pass it through, protocol TLS, mode PASSTHROUGH (Istio's expose-istiod.yaml). AUTO_PASSTHROUGH routes only Istio's own outbound_ SNI names"),
                format!(
                    "server {} of Gateway {}/{} (port {} -> {t}) has protocol {:?} and tls mode {:?}, expected TLS and PASSTHROUGH",
                    srv.index, srv.gw.namespace, srv.gw.name, srv.number,
                    srv.protocol, if srv.mode.is_empty() { "none" } else { &srv.mode }
                ),
            );
        }
        chosen.push((w, srv));
    }
    out.ev(
        "gateways",
        chosen
            .iter()
            .map(|(w, srv)| {
                format!(
                    "{}: Gateway {}/{} server {} (port {}, PASSTHROUGH)",
                    w.what, srv.gw.namespace, srv.gw.name, srv.index, srv.number
                )
            })
            .collect::<Vec<_>>(),
    );
    let vss = match &f.virtual_services {
        Ok(v) => v,
        Err(why) => {
            out.ev("virtualservice_checks", format!("skipped: {why}"));
            out.ev(
                "exposure",
                format!(
                    "{summary}; Gateway {}/{}; its VirtualService not checked ({why})",
                    chosen[0].1.gw.namespace, chosen[0].1.gw.name
                ),
            );
            return out.pass();
        }
    };
    // Every port without a route gets one in the same fix (on the
    // Gateway of the first).
    let missing: Vec<(&Want, &Server)> = chosen
        .iter()
        .filter(|(_, srv)| routes_for(vss, srv).is_empty())
        .map(|(w, srv)| (**w, srv))
        .collect();
    if !missing.is_empty() {
        return vs_missing(
            out,
            f,
            s,
            vss,
            &missing,
            &istiod_svc,
            &istiod_host,
            istiod_obj,
        );
    }
    let mut routed = vec![];
    for (w, srv) in &chosen {
        let routes = routes_for(vss, srv);
        let sni_ok = |r: &Route| r.sni.is_empty() || r.sni.iter().any(|h| host_matches(h, &w.sni));
        let Some(route) = routes.iter().find(|r| sni_ok(r)) else {
            let r = &routes[0];
            let sni = fix_sni(f, &istiod_svc, &w.sni);
            let sni = if sni == ["*"] {
                vec![w.sni.clone()]
            } else {
                sni
            };
            let ops = json!([{"op": "replace", "path": format!("/spec/tls/{}/match", r.tls), "value": [{"port": srv.number, "sniHosts": sni}]}]);
            return out.failing(
                Finding::new(&VIRTUALSERVICE_WRONG_HOST, format!("VirtualService {}/{} does not match the name {} on {}", r.vs.namespace, r.vs.name, w.sni, w.target))
                    .command(json_patch(s, &r.vs.namespace, "virtualservice.networking.istio.io", &r.vs.name, &ops))
                    .note("the gateway's TLS listener picks a route by the SNI the caller sends: the gateway's agent sends its istiod address's host, the remote API server the webhook Service's name"),
                format!(
                    "the TLS routes of VirtualService {}/{} for port {} match sniHosts {}, not {:?} (what the caller sends)",
                    r.vs.namespace, r.vs.name, srv.number, super::quote_list(&r.sni), w.sni
                ),
            );
        };
        let (ri, host, port) = route.dest.clone().unwrap_or_default();
        let dest_svc = service_of(&host, &route.vs.namespace);
        let want_port = istiod_port_to(istiod_obj, w.target);
        let host_ok = dest_svc
            .as_ref()
            .is_some_and(|(n, ns)| *n == istiod_svc && *ns == f.ns);
        let port_ok = port.is_none_or(|p| p == want_port);
        if !host_ok || !port_ok {
            let ops = json!([{"op": "replace", "path": format!("/spec/tls/{}/route/{ri}/destination", route.tls), "value": {"host": istiod_host, "port": {"number": want_port}}}]);
            return out.failing(
                Finding::new(&VIRTUALSERVICE_WRONG_HOST, format!("VirtualService {}/{} routes {} elsewhere than {istiod_svc}", route.vs.namespace, route.vs.name, w.target))
                    .command(json_patch(s, &route.vs.namespace, "virtualservice.networking.istio.io", &route.vs.name, &ops))
                    .note(format!("the route must lead to the istiod Service of revision {:?} ({istiod_svc}), port {want_port} (-> {}), as Istio's expose-istiod sample routes it", f.revision, w.target)),
                format!(
                    "VirtualService {}/{} routes port {} to {host}:{} (expected {istiod_host}:{want_port}, the istiod Service of revision {:?}{})",
                    route.vs.namespace, route.vs.name, srv.number,
                    port.map(|p| p.to_string()).unwrap_or_else(|| "(no port)".into()),
                    f.revision,
                    if istiod_obj.is_none() { "; no such Service is in the primary" } else { "" }
                ),
            );
        }
        routed.push(format!(
            "{}: VirtualService {}/{} -> {host}:{want_port}",
            w.what, route.vs.namespace, route.vs.name
        ));
    }
    out.ev("virtualservices", &routed);
    out.ev(
        "exposure",
        format!(
            "{summary}; Gateway {}/{} passes TLS through; {}",
            chosen[0].1.gw.namespace,
            chosen[0].1.gw.name,
            routed.join("; ")
        ),
    );
    out.pass()
}

#[allow(clippy::too_many_arguments)]
fn webhook_mismatch(
    out: Outcome,
    s: &Settings,
    r: &RemoteIstiod,
    t: &RemoteTarget,
    e: &Exposure,
    remote_port: i32,
    exposed: i32,
    w: &Want,
) -> Outcome {
    let (svc, ns) = r.service.clone().unwrap_or_default();
    let mut finding = Finding::new(
        &ADDRESS_MISMATCH,
        format!("the remote's endpoints name port {remote_port} for {}, the primary exposes it on {exposed}", w.target),
    )
    .note(format!("the remote API server reaches istiod's webhook through the remote's Service {ns}/{svc} and its endpoints: their port for 15017 must be the exposed one"));
    if let Some((slice, _, Some(wi))) = &t.slice {
        finding = finding.command(format!(
            "{} -n {} patch endpointslice {slice} --type=json -p={}",
            s.kubectl_remote(),
            shell_word(&ns),
            shell_word(
                &json!([{"op": "replace", "path": format!("/ports/{wi}/port"), "value": exposed}])
                    .to_string()
            )
        ));
    }
    out.failing(
        finding,
        format!("the remote's endpoints ({}) give {} on port {remote_port}; {} has it on port {exposed}", r.from, w.what, e.id),
    )
}

fn gateway_missing(
    out: Outcome,
    s: &Settings,
    e: &Exposure,
    gws: &[IstioObject],
    w: &Want,
    target: i32,
) -> Outcome {
    let number = server_number(e, target);
    let name = if w.target == CA_PORT {
        "tls-istiod"
    } else {
        "tls-istiodwebhook"
    };
    // A Gateway that already passes the other port through gets the server
    // added; otherwise Istio's expose-istiod Gateway.
    let other = wants_other(w.target);
    let host_gw = servers_for(e, gws, other)
        .into_iter()
        .find(|s| s.passthrough)
        .map(|s| s.gw);
    let ns = ns_of(e.svc);
    let selecting: Vec<String> = gws
        .iter()
        .filter(|g| {
            e.pod_labels
                .iter()
                .any(|l| subset(&labels_value(g.spec.get("selector")), l))
        })
        .map(|g| format!("{}/{}", g.namespace, g.name))
        .collect();
    let (cmd, note) = match host_gw {
        Some(g) => (
            json_patch(
                s,
                &g.namespace,
                "gateway.networking.istio.io",
                &g.name,
                &json!([{"op": "add", "path": "/spec/servers/-", "value": server_json(name, number)}]),
            ),
            format!(
                "adds a TLS PASSTHROUGH server for {number} to Gateway {}/{}, as Istio's expose-istiod.yaml has it",
                g.namespace, g.name
            ),
        ),
        None => {
            let taken = gws
                .iter()
                .any(|g| g.namespace == ns && g.name == "istiod-gateway");
            let gname = if taken {
                "istiod-gateway-exposure"
            } else {
                "istiod-gateway"
            };
            let doc = format!(
                "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: {gname}\n  namespace: {ns}\nspec:\n  selector:\n{}  servers:\n{}{}",
                yaml_map(&fix_selector(e), "    "),
                server_yaml("tls-istiod", server_number(e, targets_of(e, CA_PORT))),
                server_yaml(
                    "tls-istiodwebhook",
                    server_number(e, targets_of(e, WEBHOOK_PORT))
                )
            );
            (
                apply(&s.kubectl_primary(), &doc),
                format!(
                    "Istio's samples/multicluster/expose-istiod.yaml Gateway for the pods of {}; its VirtualService is checked next",
                    e.id
                ),
            )
        }
    };
    out.failing(
        Finding::new(&GATEWAY_MISSING, format!("no Gateway opens {} on {}", w.target, e.id)).command(cmd).note(note),
        format!(
            "no Gateway (networking.istio.io) selecting the pods of {} has a server on port {number} (the listener {target} that its port for {} leads to); Gateways selecting them: {}",
            e.id, w.what, super::quote_list(&selecting)
        ),
    )
}

fn wants_other(target: i32) -> i32 {
    if target == CA_PORT {
        WEBHOOK_PORT
    } else {
        CA_PORT
    }
}

/// The listener port a Service port meant for `want` leads to (for a
/// fix's Gateway), else `want`.
fn targets_of(e: &Exposure, want: i32) -> i32 {
    ports_of(e.svc)
        .iter()
        .find(|p| meant_for(e, p, want))
        .and_then(|p| e.target(p))
        .unwrap_or(want)
}

#[allow(clippy::too_many_arguments)]
fn vs_missing(
    out: Outcome,
    f: &ExposureFacts,
    s: &Settings,
    vss: &[IstioObject],
    missing: &[(&Want, &Server)],
    istiod_svc: &str,
    istiod_host: &str,
    istiod_obj: Option<&Service>,
) -> Outcome {
    let (w, srv) = missing[0];
    let gw = srv.gw;
    let same_gw: Vec<&(&Want, &Server)> = missing
        .iter()
        .filter(|(_, x)| std::ptr::eq(x.gw, gw))
        .collect();
    let base = if f.revision.is_empty() || f.revision == "default" {
        "istiod-vs".to_string()
    } else {
        format!("istiod-vs-{}", f.revision)
    };
    let taken = vss
        .iter()
        .any(|v| v.namespace == gw.namespace && v.name == base);
    let name = if taken {
        format!("{base}-{}", srv.number)
    } else {
        base
    };
    let routes: String = same_gw
        .iter()
        .map(|(w, srv)| {
            route_yaml(
                srv.number,
                &fix_sni(f, istiod_svc, &w.sni),
                istiod_host,
                istiod_port_to(istiod_obj, w.target),
            )
        })
        .collect();
    let ports: Vec<String> = same_gw.iter().map(|(_, x)| x.number.to_string()).collect();
    let doc = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {}\nspec:\n  hosts:\n  - \"*\"\n  gateways:\n  - {}\n  tls:\n{routes}",
        gw.namespace, gw.name
    );
    let bound: Vec<String> = vss
        .iter()
        .filter(|v| {
            v.spec
                .get("gateways")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|g| gateway_ref(g, &v.namespace) == format!("{}/{}", gw.namespace, gw.name))
        })
        .map(|v| format!("{}/{}", v.namespace, v.name))
        .collect();
    out.failing(
        Finding::new(
            &VIRTUALSERVICE_MISSING,
            format!(
                "no VirtualService routes {} of Gateway {}/{} to istiod",
                w.target, gw.namespace, gw.name
            ),
        )
        .command(apply(&s.kubectl_primary(), &doc))
        .note(format!(
            "Istio's expose-istiod VirtualService for port {}: TLS routes by SNI to {istiod_host}",
            ports.join(" and ")
        )),
        format!(
            "no VirtualService bound to Gateway {}/{} has a TLS route for port {}; bound to it: {}",
            gw.namespace,
            gw.name,
            srv.number,
            super::quote_list(&bound)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, LoadBalancerIngress, LoadBalancerStatus, PodIP, PodSpec,
        PodStatus, ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn labels(kv: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
    fn port(name: &str, n: i32, target: i32) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port: n,
            target_port: Some(IntOrString::Int(target)),
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }
    fn eastwest(ports: Vec<ServicePort>, lb: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("istio-eastwestgateway".into()),
                namespace: Some("istio-system".into()),
                labels: labels(&[
                    ("istio", "eastwestgateway"),
                    ("app", "istio-eastwestgateway"),
                ]),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                selector: labels(&[
                    ("istio", "eastwestgateway"),
                    ("app", "istio-eastwestgateway"),
                ]),
                ports: Some(ports),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: lb.map(|ip| {
                        vec![LoadBalancerIngress {
                            ip: Some(ip.into()),
                            ..Default::default()
                        }]
                    }),
                }),
                ..Default::default()
            }),
        }
    }
    fn sample_ports() -> Vec<ServicePort> {
        vec![
            port("status-port", 15021, 15021),
            port("tls", 15443, 15443),
            port("tls-istiod", 15012, 15012),
            port("tls-webhook", 15017, 15017),
        ]
    }
    fn istiod_svc(name: &str, rev: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("istio-system".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: labels(&[("app", "istiod"), ("istio.io/rev", rev)]),
                ports: Some(vec![
                    port("grpc-xds", 15010, 15010),
                    port("https-dns", 15012, 15012),
                    port("https-webhook", 443, 15017),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
    fn istiod_pod(rev: &str, ip: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("istiod-{rev}-abc")),
                namespace: Some("istio-system".into()),
                labels: labels(&[("app", "istiod"), ("istio.io/rev", rev)]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "discovery".into(),
                    ports: Some(vec![ContainerPort {
                        container_port: 15012,
                        name: Some("tls-xds".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]),
                ..Default::default()
            }),
        }
    }
    fn obj(ns: &str, name: &str, spec: Value) -> IstioObject {
        IstioObject {
            namespace: ns.into(),
            name: name.into(),
            spec,
        }
    }
    fn sample_gateway() -> IstioObject {
        obj(
            "istio-system",
            "istiod-gateway",
            json!({
                "selector": {"istio": "eastwestgateway"},
                "servers": [
                    {"port": {"name": "tls-istiod", "number": 15012, "protocol": "tls"}, "tls": {"mode": "PASSTHROUGH"}, "hosts": ["*"]},
                    {"port": {"name": "tls-istiodwebhook", "number": 15017, "protocol": "tls"}, "tls": {"mode": "PASSTHROUGH"}, "hosts": ["*"]},
                ]
            }),
        )
    }
    fn sample_vs(host: &str, sni: &[&str]) -> IstioObject {
        obj(
            "istio-system",
            "istiod-vs",
            json!({
                "hosts": ["*"], "gateways": ["istiod-gateway"],
                "tls": [
                    {"match": [{"port": 15012, "sniHosts": sni}], "route": [{"destination": {"host": host, "port": {"number": 15012}}}]},
                    {"match": [{"port": 15017, "sniHosts": sni}], "route": [{"destination": {"host": host, "port": {"number": 443}}}]},
                ]
            }),
        )
    }
    fn remote(hosts: &[&str], port: i32, webhook: Option<i32>) -> RemoteIstiod {
        RemoteIstiod {
            service: Some(("istiod".into(), "istio-system".into())),
            from: "EndpointSlice".into(),
            targets: vec![RemoteTarget {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                port,
                webhook_port: webhook,
                slice: Some(("istiod".into(), 0, webhook.map(|_| 1))),
            }],
        }
    }
    fn healthy() -> ExposureFacts {
        ExposureFacts {
            ns: "istio-system".into(),
            remote: Some(remote(&["203.0.113.10"], 15012, Some(15017))),
            dial: super::super::dial::of(None),
            revision: "default".into(),
            services: Ok(vec![
                eastwest(sample_ports(), Some("203.0.113.10")),
                istiod_svc("istiod", "default"),
            ]),
            notes: vec![],
            istiod_pods: vec![istiod_pod("default", "10.244.0.5")],
            selected_pods: BTreeMap::new(),
            nodes: Err("403 Forbidden".into()),
            gateways: Ok(vec![sample_gateway()]),
            virtual_services: Ok(vec![sample_vs(
                "istiod.istio-system.svc.cluster.local",
                &["*"],
            )]),
            resolved: BTreeMap::new(),
            reachable: BTreeMap::new(),
        }
    }
    fn with_services(services: Vec<Service>) -> ExposureFacts {
        ExposureFacts {
            services: Ok(services),
            ..healthy()
        }
    }
    fn unreachable(mut f: ExposureFacts, addr: &str) -> ExposureFacts {
        f.reachable
            .insert(addr.into(), Err("connection refused".into()));
        f
    }

    struct Row {
        name: &'static str,
        facts: ExposureFacts,
        status: Status,
        code: Option<&'static str>,
        commands: &'static [&'static str],
    }

    #[test]
    fn judge_table() {
        let s = Settings::for_tests();
        let rev_facts = || {
            let mut f = healthy();
            f.revision = "canary".into();
            f.dial.server_name = "istiod-canary.istio-system.svc".into();
            f.remote.as_mut().unwrap().service =
                Some(("istiod-canary".into(), "istio-system".into()));
            f.services = Ok(vec![
                eastwest(sample_ports(), Some("203.0.113.10")),
                istiod_svc("istiod", "default"),
                istiod_svc("istiod-canary", "canary"),
            ]);
            f.istiod_pods = vec![
                istiod_pod("default", "10.244.0.5"),
                istiod_pod("canary", "10.244.0.6"),
            ];
            f
        };
        let rows = vec![
            Row {
                name: "healthy: Istio's sample",
                facts: healthy(),
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "revision: expose-istiod-rev template",
                facts: ExposureFacts {
                    virtual_services: Ok(vec![sample_vs(
                        "istiod-canary.istio-system.svc.cluster.local",
                        &[
                            "istiod-canary.istio-system.svc",
                            "istiod-canary.istio-system.svc.cluster.local",
                        ],
                    )]),
                    ..rev_facts()
                },
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "revision, VirtualService to the default istiod",
                facts: rev_facts(),
                status: Status::Fail,
                code: Some("istiod-exposure/virtualservice-wrong-host"),
                commands: &[
                    "patch virtualservice.networking.istio.io istiod-vs --type=json -p='[{\"op\":\"replace\",\"path\":\"/spec/tls/0/route/0/destination\",\"value\":{\"host\":\"istiod-canary.istio-system.svc.cluster.local\",\"port\":{\"number\":15012}}}]'",
                ],
            },
            Row {
                name: "flat network: the remote holds istiod's pod IP",
                facts: ExposureFacts {
                    remote: Some(remote(&["10.244.0.5"], 15012, Some(15017))),
                    services: Ok(vec![istiod_svc("istiod", "default")]),
                    ..healthy()
                },
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "external control plane: a public name",
                facts: ExposureFacts {
                    remote: Some(RemoteIstiod {
                        service: None,
                        from: "the gateway's env CA_ADDR".into(),
                        targets: vec![RemoteTarget {
                            hosts: vec!["istiod.mesh-external.test".into()],
                            port: 15012,
                            ..Default::default()
                        }],
                    }),
                    ..healthy()
                },
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "istiod's own LoadBalancer Service",
                facts: with_services(vec![
                    {
                        let mut s = istiod_svc("istiod-lb", "default");
                        s.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
                        s.spec.as_mut().unwrap().ports = Some(vec![
                            port("tls-istiod", 15012, 15012),
                            port("tls-webhook", 15017, 15017),
                        ]);
                        s.status = eastwest(vec![], Some("203.0.113.10")).status;
                        s
                    },
                    istiod_svc("istiod", "default"),
                ]),
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "a gateway port translated: Service 15012 -> 8443, Gateway server 15012",
                facts: ExposureFacts {
                    services: Ok(vec![
                        eastwest(
                            vec![
                                port("tls-istiod", 15012, 8443),
                                port("tls-webhook", 15017, 8444),
                            ],
                            Some("203.0.113.10"),
                        ),
                        istiod_svc("istiod", "default"),
                    ]),
                    ..healthy()
                },
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "unknown address that answers: an outside load balancer",
                facts: {
                    let mut f = ExposureFacts {
                        remote: Some(remote(&["198.51.100.7"], 15012, Some(15017))),
                        ..healthy()
                    };
                    f.reachable.insert("198.51.100.7:15012".into(), Ok(()));
                    f
                },
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "Services unreadable",
                facts: ExposureFacts {
                    services: Err("403 Forbidden".into()),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("istiod-exposure/unreadable"),
                commands: &[],
            },
            Row {
                name: "Istio CRDs unreadable: the Service checks only",
                facts: ExposureFacts {
                    gateways: Err("forbidden".into()),
                    virtual_services: Err("forbidden".into()),
                    ..healthy()
                },
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "no exposure at all",
                facts: unreachable(
                    with_services(vec![istiod_svc("istiod", "default")]),
                    "203.0.113.10:15012",
                ),
                status: Status::Fail,
                code: Some("istiod-exposure/no-exposure"),
                commands: &[],
            },
            Row {
                name: "load balancer pending, remote does not answer",
                facts: unreachable(
                    with_services(vec![
                        eastwest(sample_ports(), None),
                        istiod_svc("istiod", "default"),
                    ]),
                    "203.0.113.10:15012",
                ),
                status: Status::Fail,
                code: Some("istiod-exposure/lb-pending"),
                commands: &[],
            },
            Row {
                name: "load balancer pending, the remote's address answers",
                facts: {
                    let mut f = with_services(vec![
                        eastwest(sample_ports(), None),
                        istiod_svc("istiod", "default"),
                    ]);
                    f.reachable.insert("203.0.113.10:15012".into(), Ok(()));
                    f
                },
                status: Status::Warn,
                code: Some("istiod-exposure/lb-pending"),
                commands: &[],
            },
            Row {
                name: "no port for 15017",
                facts: with_services(vec![
                    eastwest(sample_ports()[..3].to_vec(), Some("203.0.113.10")),
                    istiod_svc("istiod", "default"),
                ]),
                status: Status::Fail,
                code: Some("istiod-exposure/missing-port"),
                commands: &[
                    "kubectl --context ctx-primary -n istio-system patch service istio-eastwestgateway --type=json -p='[{\"op\":\"add\",\"path\":\"/spec/ports/-\",\"value\":{\"name\":\"tls-webhook\",\"port\":15017,\"targetPort\":15017,\"protocol\":\"TCP\"}}]'",
                ],
            },
            Row {
                name: "same address, no port for 15012",
                facts: unreachable(
                    with_services(vec![
                        eastwest(
                            vec![port("tls-webhook", 15017, 15017)],
                            Some("203.0.113.10"),
                        ),
                        istiod_svc("istiod", "default"),
                    ]),
                    "203.0.113.10:15012",
                ),
                status: Status::Fail,
                code: Some("istiod-exposure/missing-port"),
                commands: &["\"name\":\"tls-istiod\",\"port\":15012,\"targetPort\":15012"],
            },
            Row {
                name: "the slice's address is an old load balancer",
                facts: unreachable(
                    ExposureFacts {
                        remote: Some(remote(&["203.0.113.99"], 15012, Some(15017))),
                        ..healthy()
                    },
                    "203.0.113.99:15012",
                ),
                status: Status::Fail,
                code: Some("istiod-exposure/address-mismatch"),
                commands: &[
                    "kubectl --context ctx-remote -n istio-system patch endpointslice istiod --type=json -p='[{\"op\":\"replace\",\"path\":\"/endpoints\",\"value\":[{\"addresses\":[\"203.0.113.10\"]}]}]'",
                ],
            },
            Row {
                name: "same address, another port (the lab's shape)",
                facts: unreachable(
                    ExposureFacts {
                        remote: Some(remote(&["203.0.113.10"], 31012, Some(15017))),
                        ..healthy()
                    },
                    "203.0.113.10:31012",
                ),
                status: Status::Fail,
                code: Some("istiod-exposure/address-mismatch"),
                commands: &[
                    "patch endpointslice istiod --type=json -p='[{\"op\":\"replace\",\"path\":\"/ports/0/port\",\"value\":15012}]'",
                ],
            },
            Row {
                name: "the webhook port differs",
                facts: ExposureFacts {
                    remote: Some(remote(&["203.0.113.10"], 15012, Some(443))),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("istiod-exposure/address-mismatch"),
                commands: &["\"path\":\"/ports/1/port\",\"value\":15017"],
            },
            Row {
                name: "no Gateway",
                facts: ExposureFacts {
                    gateways: Ok(vec![]),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("istiod-exposure/gateway-missing"),
                commands: &[
                    "kubectl --context ctx-primary apply -f - <<'EOF'\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: istiod-gateway\n  namespace: istio-system\nspec:\n  selector:\n    istio: eastwestgateway\n  servers:\n  - port:\n      name: tls-istiod\n      number: 15012\n",
                ],
            },
            Row {
                name: "Gateway selecting other pods",
                facts: ExposureFacts {
                    gateways: Ok(vec![obj(
                        "istio-system",
                        "istiod-gateway",
                        json!({"selector": {"istio": "ingressgateway"}, "servers": sample_gateway().spec["servers"]}),
                    )]),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("istiod-exposure/gateway-missing"),
                commands: &["name: istiod-gateway-exposure"],
            },
            Row {
                name: "Gateway without 15017",
                facts: ExposureFacts {
                    gateways: Ok(vec![obj(
                        "istio-system",
                        "istiod-gateway",
                        json!({"selector": {"istio": "eastwestgateway"}, "servers": [sample_gateway().spec["servers"][0]]}),
                    )]),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("istiod-exposure/gateway-missing"),
                commands: &[
                    "patch gateway.networking.istio.io istiod-gateway --type=json -p='[{\"op\":\"add\",\"path\":\"/spec/servers/-\",\"value\":{\"port\":{\"name\":\"tls-istiodwebhook\",\"number\":15017,\"protocol\":\"TLS\"},\"tls\":{\"mode\":\"PASSTHROUGH\"},\"hosts\":[\"*\"]}}]'",
                ],
            },
            Row {
                name: "Gateway terminates TLS",
                facts: ExposureFacts {
                    gateways: Ok(vec![{
                        let mut g = sample_gateway();
                        g.spec["servers"][0]["tls"]["mode"] = json!("SIMPLE");
                        g
                    }]),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("istiod-exposure/gateway-not-passthrough"),
                commands: &[
                    "patch gateway.networking.istio.io istiod-gateway --type=json -p='[{\"op\":\"add\",\"path\":\"/spec/servers/0/port/protocol\",\"value\":\"TLS\"},{\"op\":\"add\",\"path\":\"/spec/servers/0/tls\",\"value\":{\"mode\":\"PASSTHROUGH\"}}]'",
                ],
            },
            Row {
                name: "no VirtualService",
                facts: ExposureFacts {
                    virtual_services: Ok(vec![]),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("istiod-exposure/virtualservice-missing"),
                commands: &[
                    "kubectl --context ctx-primary apply -f - <<'EOF'\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: istiod-vs\n  namespace: istio-system\nspec:\n  hosts:\n  - \"*\"\n  gateways:\n  - istiod-gateway\n  tls:\n  - match:\n    - port: 15012\n      sniHosts:\n      - \"*\"\n    route:\n    - destination:\n        host: istiod.istio-system.svc.cluster.local\n        port:\n          number: 15012\n  - match:\n    - port: 15017\n",
                ],
            },
            Row {
                name: "VirtualService bound to another Gateway",
                facts: ExposureFacts {
                    virtual_services: Ok(vec![{
                        let mut v = sample_vs("istiod.istio-system.svc.cluster.local", &["*"]);
                        v.spec["gateways"] = json!(["other-ns/istiod-gateway"]);
                        v
                    }]),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("istiod-exposure/virtualservice-missing"),
                commands: &["name: istiod-vs-15012"],
            },
            Row {
                name: "VirtualService matches other names",
                facts: ExposureFacts {
                    virtual_services: Ok(vec![sample_vs(
                        "istiod.istio-system.svc.cluster.local",
                        &["istiod.example.com"],
                    )]),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("istiod-exposure/virtualservice-wrong-host"),
                commands: &[
                    "\"path\":\"/spec/tls/0/match\",\"value\":[{\"port\":15012,\"sniHosts\":[\"istiod.istio-system.svc\"]}]",
                ],
            },
            Row {
                name: "VirtualService routes to istiod's 15017 port number",
                facts: ExposureFacts {
                    virtual_services: Ok(vec![{
                        let mut v = sample_vs("istiod.istio-system.svc.cluster.local", &["*"]);
                        v.spec["tls"][1]["route"][0]["destination"]["port"]["number"] =
                            json!(15017);
                        v
                    }]),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("istiod-exposure/virtualservice-wrong-host"),
                commands: &[
                    "\"path\":\"/spec/tls/1/route/0/destination\",\"value\":{\"host\":\"istiod.istio-system.svc.cluster.local\",\"port\":{\"number\":443}}",
                ],
            },
        ];
        for row in rows {
            let out = judge(&row.facts, &s);
            super::super::check_row(row.name, &out, row.status, row.code, row.commands);
        }
    }

    #[test]
    fn ports_resolve_as_pilot_resolves_them() {
        let f = with_services(vec![eastwest(
            vec![port("tls-istiod", 15012, 8443), port("x", 9000, 9001)],
            Some("203.0.113.10"),
        )]);
        let services = f.services.as_ref().unwrap();
        let e = &exposures(&f, services)[0];
        // A Service port translates to its target; anything else binds as is.
        assert_eq!(resolve_port(e, 15012), 8443);
        assert_eq!(resolve_port(e, 8443), 8443);
        assert_eq!(resolve_port(e, 9000), 9001);
        assert_eq!(server_number(e, 8443), 8443);
        // 9001 is no Service port: a server of that number binds it as is.
        assert_eq!(server_number(e, 9001), 9001);
        assert!(host_matches("*", "istiod.istio-system.svc"));
        assert!(host_matches(
            "*.istio-system.svc",
            "istiod.istio-system.svc"
        ));
        assert!(!host_matches("*.other.svc", "istiod.istio-system.svc"));
        assert!(host_matches(
            "Istiod.istio-system.svc",
            "istiod.istio-system.svc"
        ));
    }

    #[test]
    fn only_unexplained_addresses_are_dialled() {
        assert!(unmatched(&healthy()).is_empty());
        let f = ExposureFacts {
            remote: Some(remote(&["203.0.113.99"], 15012, None)),
            ..healthy()
        };
        assert_eq!(unmatched(&f), vec!["203.0.113.99:15012".to_string()]);
        let f = ExposureFacts {
            remote: Some(remote(&["10.244.0.5"], 15012, None)),
            ..healthy()
        };
        assert!(unmatched(&f).is_empty(), "a flat network is not dialled");
    }
}
