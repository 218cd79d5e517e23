//! `remote-istiod-endpoint`: the remote's `istiod` Service, through which the
//! gateway's CA_ADDR (`istiod.<ns>.svc:15012`) reaches the primary. Istio's
//! remote profile makes it selector-less, with an EndpointSlice holding the
//! primary's exposed address, or of type ExternalName for a hostname
//! (manifests/charts/istio-control/istio-discovery/templates/remote-istiod-*.yaml).

use super::dial::Dial;
use super::istiod::{CA_PORT, join_host_port};
use super::{Settings, kube_err};
use crate::engine::facts::{RemoteIstiod, RemoteTarget};
use crate::engine::{Ctx, Outcome};
use crate::findings::{Finding, shell_word};
use crate::model::StepId;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use serde_json::json;

crate::causes! { StepId::RemoteIstiodEndpoint;
    UNREADABLE = "unreadable", "the remote's istiod Service or its endpoints cannot be read";
    NO_SERVICE = "no-service", "the remote has no istiod Service";
    HAS_SELECTOR = "has-selector", "the remote's istiod Service has a selector, so Kubernetes manages its endpoints from the remote's pods";
    NO_PORT = "no-port-15012", "the remote's istiod Service has no port 15012";
    NO_ENDPOINTS = "no-endpoints", "the remote's istiod Service has no address for port 15012";
}

/// The primary's gateway that exposes istiod.
const EASTWEST: &str = "istio-eastwestgateway";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Kubernetes' own EndpointSlice writers: for a Service with a selector, the
/// first fills slices from the selected pods and the second stops mirroring
/// Endpoints (and deletes its slices); slices anyone else wrote stay.
const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
const MIRROR_CONTROLLER: &str = "endpointslicemirroring-controller.k8s.io";

/// What gather saw.
#[derive(Debug, Clone)]
pub struct EndpointFacts {
    pub service: Result<Option<Service>, String>,
    /// EndpointSlices labelled `kubernetes.io/service-name=istiod`.
    pub slices: Result<Vec<EndpointSlice>, String>,
    pub endpoints: Result<Option<Endpoints>, String>,
    /// The primary's east-west gateway Service: where a fix points the remote.
    pub eastwest: Result<Option<Service>, String>,
    /// `--istiod-addr`.
    pub istiod_addr_flag: Option<String>,
    /// Where the gateway dials, and the Service that name resolves to.
    pub dial: Dial,
    pub svc: String,
    pub svc_ns: String,
}

pub async fn gather(ctx: &Ctx) -> EndpointFacts {
    let dial = super::dial::of(ctx.facts().gateway.as_ref());
    gather_for(ctx, dial).await
}

/// What the remote holds for `dial`'s Service (the xds step resolves the
/// gateway's discoveryAddress with it when that is not CA_ADDR).
pub async fn gather_for(ctx: &Ctx, dial: Dial) -> EndpointFacts {
    let (svc_name, svc_ns) = dial
        .service
        .clone()
        .unwrap_or_else(|| ("istiod".into(), ctx.opts.istio_namespace.clone()));
    let ns = &svc_ns;
    let remote = ctx.clusters.remote.clone();
    let svcs: Api<Service> = Api::namespaced(remote.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(remote.clone(), ns);
    let eps: Api<Endpoints> = Api::namespaced(remote, ns);
    let primary: Api<Service> =
        Api::namespaced(ctx.clusters.primary.clone(), &ctx.opts.istio_namespace);
    let by_service =
        ListParams::default().labels(&format!("kubernetes.io/service-name={svc_name}"));
    let (svc, slice_list, ep, eastwest) = tokio::join!(
        svcs.get_opt(&svc_name),
        slices.list(&by_service),
        eps.get_opt(&svc_name),
        primary.get_opt(EASTWEST),
    );
    let words = |e: kube::Error| kube_err(&e);
    EndpointFacts {
        service: svc.map_err(words),
        slices: slice_list.map(|l| l.items).map_err(words),
        endpoints: ep.map_err(words),
        eastwest: eastwest.map_err(words),
        istiod_addr_flag: ctx.opts.istiod_addr.clone(),
        dial,
        svc: svc_name,
        svc_ns,
    }
}

pub async fn run(ctx: &Ctx) -> Outcome {
    let facts = gather(ctx).await;
    let out = judge(&facts, &Settings::of(ctx));
    // istiod-tls needs this step: a failure publishes no address.
    if out.status != Some(crate::model::Status::Fail) {
        let mut f = ctx.facts();
        f.istiod_addr = dial_target(&facts);
        f.remote_istiod = remote_istiod(&facts);
    }
    out
}

/// Where the remote sends the gateway's dial, slice by slice, for
/// istiod-exposure to compare with what the primary exposes.
pub fn remote_istiod(f: &EndpointFacts) -> Option<RemoteIstiod> {
    if f.dial.service.is_none() {
        return Some(RemoteIstiod {
            service: None,
            from: f.dial.from.clone(),
            targets: vec![RemoteTarget {
                hosts: vec![f.dial.host.clone()],
                port: f.dial.port,
                ..Default::default()
            }],
        });
    }
    let svc = f.service.as_ref().ok()?.as_ref()?;
    let spec = svc.spec.clone().unwrap_or_default();
    let service = Some((f.svc.clone(), f.svc_ns.clone()));
    if spec.type_.as_deref() == Some("ExternalName") {
        return Some(RemoteIstiod {
            service,
            from: "ExternalName".into(),
            targets: vec![RemoteTarget {
                hosts: vec![spec.external_name.clone().unwrap_or_default()],
                port: CA_PORT,
                ..Default::default()
            }],
        });
    }
    let has_selector = spec.selector.as_ref().is_some_and(|s| !s.is_empty());
    let mut targets = Vec::new();
    for sl in f.slices.as_deref().unwrap_or(&[]) {
        let by = managed_by(sl);
        if has_selector && matches!(by, Some(SLICE_CONTROLLER | MIRROR_CONTROLLER)) {
            continue;
        }
        let ports = sl.ports.as_deref().unwrap_or(&[]);
        let idx = |n: i32, name: &str| {
            ports
                .iter()
                .position(|p| p.port == Some(n) || p.name.as_deref() == Some(name))
        };
        let Some(i) = idx(CA_PORT, "tcp-istiod") else {
            continue;
        };
        let w = idx(15017, "tcp-webhook");
        let hosts: Vec<String> = sl
            .endpoints
            .iter()
            .flatten()
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        if hosts.is_empty() {
            continue;
        }
        targets.push(RemoteTarget {
            hosts,
            port: ports[i].port.unwrap_or(CA_PORT),
            webhook_port: w.and_then(|w| ports[w].port),
            slice: Some((sl.metadata.name.clone().unwrap_or_default(), i, w)),
        });
    }
    if !targets.is_empty() {
        return Some(RemoteIstiod {
            service,
            from: "EndpointSlice".into(),
            targets,
        });
    }
    if has_selector {
        return None;
    }
    let Ok(Some(ep)) = &f.endpoints else {
        return None;
    };
    for subset in ep.subsets.iter().flatten() {
        let ports = subset.ports.as_deref().unwrap_or(&[]);
        let find = |n: i32, name: &str| {
            ports
                .iter()
                .find(|p| p.port == n || p.name.as_deref() == Some(name))
                .map(|p| p.port)
        };
        let Some(port) = find(CA_PORT, "tcp-istiod") else {
            continue;
        };
        let hosts: Vec<String> = subset
            .addresses
            .iter()
            .flatten()
            .map(|a| a.ip.clone())
            .collect();
        if !hosts.is_empty() {
            targets.push(RemoteTarget {
                hosts,
                port,
                webhook_port: find(15017, "tcp-webhook"),
                slice: None,
            });
        }
    }
    (!targets.is_empty()).then(|| RemoteIstiod {
        service,
        from: "Endpoints".into(),
        targets,
    })
}

fn managed_by(sl: &EndpointSlice) -> Option<&str> {
    sl.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY))
        .map(String::as_str)
}

/// The slice's addresses for the port numbered 15012 or named `tcp-istiod`.
fn slice_addrs(sl: &EndpointSlice) -> Vec<String> {
    let port = sl
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == Some(CA_PORT) || p.name.as_deref() == Some("tcp-istiod"))
        .and_then(|p| p.port);
    let Some(port) = port else { return vec![] };
    sl.endpoints
        .iter()
        .flatten()
        .flat_map(|e| e.addresses.iter())
        .map(|a| join_host_port(a, port))
        .collect()
}

fn endpoints_addrs(ep: &Endpoints) -> Vec<String> {
    let mut out = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        let port = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.port == CA_PORT || p.name.as_deref() == Some("tcp-istiod"))
            .map(|p| p.port);
        if let Some(p) = port {
            for a in subset.addresses.iter().flatten() {
                out.push(join_host_port(&a.ip, p));
            }
        }
    }
    out
}

/// Where the gateway's dial to the Service goes, as Kubernetes resolves it.
struct Route {
    /// The addresses that lead away from the remote's own pods.
    addrs: Vec<String>,
    from: &'static str,
    /// Selector only: addresses Kubernetes filled in from the remote's pods.
    selected: Vec<String>,
    /// Selector only: names of the slices Kubernetes' controller wrote.
    controller_slices: usize,
    /// The slices that hold `addrs`, by name.
    slice_names: Vec<String>,
}

fn route(f: &EndpointFacts, svc: &Service) -> Route {
    let spec = svc.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        let host = spec.external_name.clone().unwrap_or_default();
        return Route {
            addrs: vec![join_host_port(&host, CA_PORT)],
            from: "ExternalName",
            selected: vec![],
            controller_slices: 0,
            slice_names: vec![],
        };
    }
    let has_selector = spec.selector.as_ref().is_some_and(|s| !s.is_empty());
    let slices: &[EndpointSlice] = f.slices.as_deref().unwrap_or(&[]);
    let name = |sl: &EndpointSlice| sl.metadata.name.clone().unwrap_or_default();
    let mut r = Route {
        addrs: vec![],
        from: "EndpointSlice",
        selected: vec![],
        controller_slices: 0,
        slice_names: vec![],
    };
    for sl in slices {
        let by = managed_by(sl);
        let addrs = slice_addrs(sl);
        if has_selector && by == Some(SLICE_CONTROLLER) {
            r.controller_slices += 1;
            r.selected.extend(addrs);
        } else if has_selector && by == Some(MIRROR_CONTROLLER) {
            // Stops being mirrored once the Service has a selector.
        } else if !addrs.is_empty() {
            r.slice_names.push(name(sl));
            r.addrs.extend(addrs);
        }
    }
    // Older remotes: Endpoints, which the Endpoints controller owns (and
    // empties) once the Service has a selector.
    if r.addrs.is_empty() && !has_selector {
        if let Ok(Some(ep)) = &f.endpoints {
            r.addrs = endpoints_addrs(ep);
            r.from = "Endpoints";
        }
    }
    r
}

/// The address later steps dial and where it came from, for a Service that
/// did not fail: `--istiod-addr`, else the first address the gateway has.
pub fn dial_target(f: &EndpointFacts) -> Option<(String, String)> {
    if f.dial.service.is_none() {
        return Some(match &f.istiod_addr_flag {
            Some(a) => (a.clone(), "--istiod-addr".into()),
            None => (f.dial.addr.clone(), f.dial.from.clone()),
        });
    }
    let svc = f.service.as_ref().ok()?.as_ref()?;
    let r = route(f, svc);
    match &f.istiod_addr_flag {
        Some(a) if !r.addrs.is_empty() => Some((a.clone(), "--istiod-addr".into())),
        _ => r.addrs.first().map(|a| (a.clone(), r.from.to_string())),
    }
}

/// The address the primary exposes istiod's 15012 on, for the fixes that
/// point the remote at it.
#[derive(Debug, Clone, PartialEq)]
enum Exposed {
    Ip {
        ip: String,
        port: i32,
        webhook: Option<i32>,
        from: String,
    },
    Host {
        host: String,
        from: String,
    },
    Unknown(String),
}

/// Why Kubernetes refuses `ip` in an EndpointSlice, if it does (its
/// validation, `ValidateEndpointIP` in pkg/apis/core/validation): a fix must
/// not print an address the API server rejects.
pub fn refused_in_slice(ip: &str) -> Option<&'static str> {
    match ip.parse::<std::net::IpAddr>().ok()? {
        a if a.is_unspecified() => Some("unspecified"),
        a if a.is_loopback() => Some("loopback"),
        std::net::IpAddr::V4(v) if v.is_link_local() => Some("link-local"),
        std::net::IpAddr::V4(v) if v.octets()[..3] == [224, 0, 0] => Some("link-local multicast"),
        std::net::IpAddr::V6(v) if (v.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local"),
        std::net::IpAddr::V6(v) if v.segments()[0] == 0xff02 => Some("link-local multicast"),
        _ => None,
    }
}

fn exposed(f: &EndpointFacts, ns: &str) -> Exposed {
    match exposed_as_found(f, ns) {
        Exposed::Ip { ip, from, .. } if refused_in_slice(&ip).is_some() => {
            Exposed::Unknown(format!(
                "{from} gives {ip}, a {} address, which Kubernetes refuses in an EndpointSlice (it is this machine's, not one the remote's pods reach)",
                refused_in_slice(&ip).unwrap_or("reserved")
            ))
        }
        e => e,
    }
}

fn exposed_as_found(f: &EndpointFacts, ns: &str) -> Exposed {
    let from_eastwest = match &f.eastwest {
        Err(e) => Err(format!(
            "cannot read Service {ns}/{EASTWEST} in the primary: {e}"
        )),
        Ok(None) => Err(format!("the primary has no Service {ns}/{EASTWEST}")),
        Ok(Some(svc)) => {
            let ports: Vec<_> = svc
                .spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .collect();
            let port = ports
                .iter()
                .find(|p| {
                    matches!(p.name.as_deref(), Some("tcp-istiod" | "tls-istiod"))
                        || p.port == CA_PORT
                })
                .map(|p| p.port);
            let webhook = ports
                .iter()
                .find(|p| {
                    matches!(p.name.as_deref(), Some("tcp-webhook" | "tls-webhook"))
                        || p.port == 15017
                })
                .map(|p| p.port);
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .and_then(|i| i.first());
            let from = format!("the LoadBalancer of Service {ns}/{EASTWEST} in the primary");
            match (port, ingress) {
                (None, _) => Err(format!(
                    "Service {ns}/{EASTWEST} in the primary exposes no port 15012"
                )),
                (_, None) => Err(format!(
                    "Service {ns}/{EASTWEST} in the primary has no LoadBalancer address yet"
                )),
                (Some(port), Some(ing)) => match (&ing.ip, &ing.hostname) {
                    (Some(ip), _) if !ip.is_empty() => Ok(Exposed::Ip {
                        ip: ip.clone(),
                        port,
                        webhook,
                        from,
                    }),
                    (_, Some(h)) if !h.is_empty() && port == CA_PORT => Ok(Exposed::Host {
                        host: h.clone(),
                        from,
                    }),
                    (_, Some(h)) if !h.is_empty() => Err(format!(
                        "Service {ns}/{EASTWEST} in the primary exposes 15012 on port {port} of hostname {h}, which an ExternalName Service cannot point at"
                    )),
                    _ => Err(format!(
                        "Service {ns}/{EASTWEST} in the primary has no LoadBalancer address yet"
                    )),
                },
            }
        }
    };
    let why = match from_eastwest {
        Ok(e) => return e,
        Err(why) => why,
    };
    let Some(flag) = &f.istiod_addr_flag else {
        return Exposed::Unknown(why);
    };
    let Some((host, port)) = flag.rsplit_once(':') else {
        return Exposed::Unknown(why);
    };
    let host = host.trim_matches(['[', ']']);
    let Ok(port) = port.parse::<i32>() else {
        return Exposed::Unknown(why);
    };
    let from = "--istiod-addr".to_string();
    if host.parse::<std::net::IpAddr>().is_ok() {
        Exposed::Ip {
            ip: host.to_string(),
            port,
            webhook: None,
            from,
        }
    } else if port == CA_PORT {
        Exposed::Host {
            host: host.to_string(),
            from,
        }
    } else {
        Exposed::Unknown(format!(
            "{why}; --istiod-addr {flag} is a hostname on port {port}, which an ExternalName Service cannot point at"
        ))
    }
}

/// `kubectl --context R apply -f - <<'EOF' ... EOF`: YAML documents applied as they are.
fn apply(s: &Settings, docs: &[String]) -> String {
    format!(
        "{} apply -f - <<'EOF'\n{}EOF",
        s.kubectl_remote(),
        docs.join("---\n")
    )
}

/// The selector-less Service of Istio's remote profile (remote-istiod-service.yaml).
fn service_yaml(ns: &str, svc: &str, external_name: Option<&str>) -> String {
    let external = external_name
        .map(|h| format!("  type: ExternalName\n  externalName: {h}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {svc}\n  namespace: {ns}\nspec:\n  ports:\n  - name: tcp-istiod\n    port: 15012\n    protocol: TCP\n  - name: tcp-webhook\n    port: 443\n    targetPort: 15017\n    protocol: TCP\n{external}"
    )
}

/// The EndpointSlice of Istio's remote profile (remote-istiod-endpointslices.yaml)
/// with the primary's exposed address.
fn slice_yaml(ns: &str, svc: &str, ip: &str, port: i32, webhook: Option<i32>) -> String {
    let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
    let webhook = webhook
        .map(|w| format!("- name: tcp-webhook\n  port: {w}\n  protocol: TCP\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {svc}\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {svc}\naddressType: {family}\nendpoints:\n- addresses:\n  - {ip}\nports:\n- name: tcp-istiod\n  port: {port}\n  protocol: TCP\n{webhook}"
    )
}

/// The note when the primary's exposed address is not known.
fn find_address_note(s: &Settings, why: &str) -> String {
    format!(
        "meshtrace cannot tell the primary's exposed istiod address ({why}). It is where the primary's east-west gateway exposes 15012: `{} -n {} get service {EASTWEST} -o jsonpath='{{.status.loadBalancer.ingress[0]}}'`; trace again with --istiod-addr ADDRESS:15012 and meshtrace prints the EndpointSlice with it",
        s.kubectl_primary(),
        shell_word(&s.istio_namespace)
    )
}

/// The commands that give Service istiod the primary's address, and the note.
fn point_at_primary(s: &Settings, f: &EndpointFacts, patch_type: bool) -> (Vec<String>, String) {
    let (svc, ns) = (f.svc.as_str(), f.svc_ns.as_str());
    match exposed(f, &s.istio_namespace) {
        Exposed::Ip {
            ip,
            port,
            webhook,
            from,
        } => (
            vec![apply(s, &[slice_yaml(ns, svc, &ip, port, webhook)])],
            format!(
                "the EndpointSlice gives Service {ns}/{svc} the primary's exposed address {} ({from}), as Istio's remote profile does from values.global.remotePilotAddress",
                join_host_port(&ip, port)
            ),
        ),
        Exposed::Host { host, from } if patch_type => (
            vec![format!(
                "{} -n {} patch service {svc} --type=merge -p {}",
                s.kubectl_remote(),
                shell_word(ns),
                shell_word(
                    &json!({"spec": {"type": "ExternalName", "externalName": host}}).to_string()
                )
            )],
            format!(
                "the primary exposes istiod at hostname {host} ({from}): Service {ns}/{svc} becomes an ExternalName for it (Kubernetes drops its cluster IP), as Istio's remote profile does for a hostname remotePilotAddress"
            ),
        ),
        Exposed::Host { host, .. } => (
            vec![],
            format!("the primary exposes istiod at hostname {host}"),
        ),
        Exposed::Unknown(why) => (vec![], find_address_note(s, &why)),
    }
}

fn remove_selector(s: &Settings, ns: &str, svc: &str) -> String {
    format!(
        "{} -n {} patch service {svc} --type=json -p='[{{\"op\":\"remove\",\"path\":\"/spec/selector\"}}]'",
        s.kubectl_remote(),
        shell_word(ns)
    )
}

pub fn judge(f: &EndpointFacts, s: &Settings) -> Outcome {
    let mut out = Outcome::new();
    out.ev(
        "gateway_dials",
        json!({"address": f.dial.addr, "from": f.dial.from}),
    );
    let (svc, ns) = (f.svc.as_str(), f.svc_ns.as_str());
    if f.dial.service.is_none() {
        // An IP or a name outside the cluster's DNS: no Service of the
        // remote is on the path; istiod-tls dials it as the agent does.
        out.ev(
            "note",
            format!(
                "the gateway dials {} directly ({}): no Service of the remote is involved",
                f.dial.addr, f.dial.from
            ),
        );
        return out.pass();
    }
    out.ev(
        "service_rule",
        format!(
            "{} resolves to Service {ns}/{svc} (Kubernetes DNS from the gateway's namespace)",
            f.dial.host
        ),
    );
    let service = match &f.service {
        Err(e) => {
            return out.failing(
                Finding::new(&UNREADABLE, format!("cannot read Service {ns}/{svc} in the remote"))
                    .note(format!("the --remote context needs get on services, list on endpointslices and get on endpoints in {ns}")),
                format!("GET Service {ns}/{svc} in the remote: {e}"),
            );
        }
        Ok(None) => {
            let (mut cmds, mut note) = (vec![], String::new());
            match exposed(f, &s.istio_namespace) {
                Exposed::Ip {
                    ip,
                    port,
                    webhook,
                    from,
                } => {
                    cmds.push(apply(
                        s,
                        &[
                            service_yaml(ns, svc, None),
                            slice_yaml(ns, svc, &ip, port, webhook),
                        ],
                    ));
                    note = format!(
                        "creates the selector-less Service and its EndpointSlice with the primary's exposed address {} ({from}), as Istio's remote profile does (istioctl install --set profile=remote)",
                        join_host_port(&ip, port)
                    );
                }
                Exposed::Host { host, from } => {
                    cmds.push(apply(s, &[service_yaml(ns, svc, Some(&host))]));
                    note = format!(
                        "creates Service istiod as an ExternalName for {host} ({from}), as Istio's remote profile does for a hostname remotePilotAddress"
                    );
                }
                Exposed::Unknown(why) => {
                    cmds.push(apply(s, &[service_yaml(ns, svc, None)]));
                    note.push_str(&format!(
                        "creates the selector-less Service; it still needs an EndpointSlice with the primary's address: {}",
                        find_address_note(s, &why)
                    ));
                }
            }
            return out.failing(
                Finding::new(&NO_SERVICE, format!("the remote has no Service {ns}/{svc}"))
                    .commands(cmds)
                    .note(note),
                format!(
                    "no Service {ns}/{svc} in the remote: the gateway's {} ({}) does not resolve",
                    f.dial.addr, f.dial.from
                ),
            );
        }
        Ok(Some(x)) => x,
    };
    let spec = service.spec.clone().unwrap_or_default();
    let ports: Vec<i32> = spec.ports.iter().flatten().map(|p| p.port).collect();
    out.ev(
        "service",
        json!({"name": format!("{ns}/{svc}"), "type": spec.type_, "ports": ports, "selector": spec.selector, "externalName": spec.external_name}),
    );
    let r = route(f, service);
    let mut all = r.addrs.clone();
    all.extend(r.selected.iter().cloned());
    out.ev("endpoint_addresses", &all)
        .ev("endpoint_source", r.from);
    let external = spec.type_.as_deref() == Some("ExternalName");
    let selector = spec
        .selector
        .as_ref()
        .filter(|s| !s.is_empty() && !external)
        .map(|sel| {
            sel.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        });

    if let Some(sel) = &selector {
        let mut cmds = vec![remove_selector(s, ns, svc)];
        if r.controller_slices > 0 {
            cmds.push(format!(
                "{} -n {} delete endpointslices -l kubernetes.io/service-name={svc},{MANAGED_BY}={SLICE_CONTROLLER}",
                s.kubectl_remote(),
                shell_word(ns)
            ));
        }
        let summary = format!("Service {ns}/{svc} in the remote has selector {sel}");
        if r.addrs.is_empty() {
            let (more, note) = point_at_primary(s, f, false);
            cmds.extend(more);
            return out.failing(
                Finding::new(&HAS_SELECTOR, summary).commands(cmds).note(format!(
                    "with a selector Kubernetes fills the Service's endpoints from the remote's pods and stops mirroring its Endpoints; {note}"
                )),
                format!(
                    "Service {ns}/{svc} has selector {sel:?} and no EndpointSlice of its own with the primary's address (expected: no selector, as Istio's remote profile makes it)"
                ),
            );
        }
        if !r.selected.is_empty() {
            return out.failing(
                Finding::new(&HAS_SELECTOR, summary).commands(cmds).note(
                    "removing the selector leaves the EndpointSlice that points at the primary; the slices Kubernetes made from the remote's pods go",
                ),
                format!(
                    "Service {ns}/{svc} has selector {sel:?}, which adds remote pods {} to the primary's {}: some CSRs go to the remote's pods",
                    super::quote_list(&r.selected),
                    super::quote_list(&r.addrs)
                ),
            );
        }
        // Nothing selected yet: the EndpointSlice of its own still routes the
        // gateway to the primary, until a remote pod matches the selector.
        dial_evidence(&mut out, f, &r);
        return out.warning(
            Finding::new(&HAS_SELECTOR, summary).commands(cmds).note(
                "it works today through the EndpointSlice that points at the primary; removing the selector keeps it that way",
            ),
            format!(
                "Service {ns}/{svc} has selector {sel:?}; it selects no remote pod yet, so EndpointSlice {} ({}) still routes the gateway to the primary",
                r.slice_names.join(", "),
                r.addrs.join(", ")
            ),
        );
    }

    if !external && !ports.contains(&CA_PORT) {
        let named = spec
            .ports
            .iter()
            .flatten()
            .position(|p| p.name.as_deref() == Some("tcp-istiod"));
        let patch = match (named, ports.is_empty()) {
            (Some(i), _) => {
                json!([{"op": "replace", "path": format!("/spec/ports/{i}/port"), "value": CA_PORT}])
            }
            (None, true) => {
                json!([{"op": "add", "path": "/spec/ports", "value": [{"name": "tcp-istiod", "port": CA_PORT, "protocol": "TCP"}]}])
            }
            (None, false) => {
                json!([{"op": "add", "path": "/spec/ports/-", "value": {"name": "tcp-istiod", "port": CA_PORT, "protocol": "TCP"}}])
            }
        };
        return out.failing(
            Finding::new(&NO_PORT, format!("Service {ns}/{svc} in the remote has no port 15012"))
                .command(format!(
                    "{} -n {} patch service {svc} --type=json -p={}",
                    s.kubectl_remote(),
                    shell_word(ns),
                    shell_word(&patch.to_string())
                ))
                .note("port 15012 named tcp-istiod is the one CA_ADDR dials; its EndpointSlice needs a port of the same name"),
            format!(
                "Service {ns}/{svc} has ports {ports:?}, not 15012, the port of the gateway's CA_ADDR"
            ),
        );
    }

    if r.addrs.is_empty() {
        let unreadable = match (&f.slices, &f.endpoints) {
            (Err(a), Err(b)) => Some(format!("{a}; {b}")),
            (Err(a), Ok(None)) => Some(a.clone()),
            _ => None,
        };
        if let Some(e) = unreadable {
            return out.failing(
                Finding::new(
                    &UNREADABLE,
                    format!("cannot read the endpoints of Service {ns}/{svc} in the remote"),
                )
                .note(format!(
                    "the --remote context needs list on endpointslices and get on endpoints in {ns}"
                )),
                format!("list EndpointSlices / GET Endpoints {ns}/{svc} in the remote: {e}"),
            );
        }
        let (cmds, note) = point_at_primary(s, f, true);
        return out.failing(
            Finding::new(&NO_ENDPOINTS, format!("Service {ns}/{svc} in the remote has no address for port 15012"))
                .commands(cmds)
                .note(note),
            format!(
                "Service {ns}/{svc} has no EndpointSlice or Endpoints address for port 15012 (tcp-istiod): the gateway's dial to {} ({}) goes nowhere", f.dial.addr, f.dial.from
            ),
        );
    }
    dial_evidence(&mut out, f, &r);
    out.pass()
}

fn dial_evidence(out: &mut Outcome, f: &EndpointFacts, r: &Route) {
    if let Some((a, from)) = dial_target(f) {
        out.ev("address", &a).ev("address_source", &from);
        if from == "--istiod-addr" && !r.addrs.contains(&a) {
            out.ev(
                "note",
                format!(
                    "the gateway dials {} (from the {}); meshtrace dials {a} as told by --istiod-addr",
                    r.addrs.join(", "),
                    r.from
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use k8s_openapi::api::core::v1::{
        EndpointAddress, EndpointPort as CorePort, EndpointSubset, LoadBalancerIngress,
        LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn labels(kv: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn port(name: &str, n: i32) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port: n,
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    /// The remote profile's Service: no selector, 15012 and 443.
    fn service(selector: Option<&[(&str, &str)]>, ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("istiod".into()),
                namespace: Some("istio-system".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: selector.and_then(labels),
                ports: Some(ports),
                cluster_ip: Some("10.96.0.12".into()),
                type_: Some("ClusterIP".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn remote_profile_service() -> Service {
        service(
            None,
            vec![port("tcp-istiod", 15012), port("tcp-webhook", 443)],
        )
    }

    fn slice(name: &str, managed_by: &str, addrs: &[&str], port: i32) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("istio-system".into()),
                labels: labels(&[
                    ("kubernetes.io/service-name", "istiod"),
                    (MANAGED_BY, managed_by),
                ]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(vec![Endpoint {
                addresses: addrs.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some("tcp-istiod".into()),
                port: Some(port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn eastwest(ip: Option<&str>, hostname: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(EASTWEST.into()),
                labels: labels(&[("istio", "eastwestgateway")]),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ports: Some(vec![
                    port("status-port", 15021),
                    port("tls", 15443),
                    port("tls-istiod", 15012),
                    port("tls-webhook", 15017),
                ]),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: ip.map(str::to_string),
                        hostname: hostname.map(str::to_string),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
        }
    }

    fn healthy() -> EndpointFacts {
        EndpointFacts {
            service: Ok(Some(remote_profile_service())),
            slices: Ok(vec![slice("istiod", "Helm", &["203.0.113.10"], 15012)]),
            endpoints: Ok(None),
            eastwest: Ok(Some(eastwest(Some("203.0.113.10"), None))),
            istiod_addr_flag: None,
            dial: crate::engine::steps::dial::of(None),
            svc: "istiod".into(),
            svc_ns: "istio-system".into(),
        }
    }

    struct Row {
        name: &'static str,
        facts: EndpointFacts,
        status: Status,
        code: Option<&'static str>,
        /// Substrings every one of which some command holds.
        commands: &'static [&'static str],
    }

    #[test]
    fn judge_table() {
        let s = Settings::for_tests();
        let rows = vec![
            Row {
                name: "healthy",
                facts: healthy(),
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "older remote: Endpoints only",
                facts: EndpointFacts {
                    slices: Ok(vec![]),
                    endpoints: Ok(Some(Endpoints {
                        subsets: Some(vec![EndpointSubset {
                            addresses: Some(vec![EndpointAddress {
                                ip: "203.0.113.10".into(),
                                ..Default::default()
                            }]),
                            ports: Some(vec![CorePort {
                                name: Some("tcp-istiod".into()),
                                port: 15012,
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    })),
                    ..healthy()
                },
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "ExternalName",
                facts: EndpointFacts {
                    service: Ok(Some(Service {
                        spec: Some(ServiceSpec {
                            type_: Some("ExternalName".into()),
                            external_name: Some("istiod.example.com".into()),
                            ..Default::default()
                        }),
                        ..remote_profile_service()
                    })),
                    slices: Ok(vec![]),
                    ..healthy()
                },
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "read refused",
                facts: EndpointFacts {
                    service: Err("403 Forbidden: services \"istiod\" is forbidden".into()),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("remote-istiod-endpoint/unreadable"),
                commands: &[],
            },
            Row {
                name: "no Service: Service and EndpointSlice from the east-west gateway",
                facts: EndpointFacts {
                    service: Ok(None),
                    slices: Ok(vec![]),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("remote-istiod-endpoint/no-service"),
                commands: &[
                    "kubectl --context ctx-remote apply -f - <<'EOF'\napiVersion: v1\nkind: Service\nmetadata:\n  name: istiod\n  namespace: istio-system\n",
                    "kind: EndpointSlice",
                    "  - 203.0.113.10\nports:\n- name: tcp-istiod\n  port: 15012\n",
                    "- name: tcp-webhook\n  port: 15017\n",
                ],
            },
            Row {
                name: "no Service, hostname LoadBalancer: an ExternalName Service",
                facts: EndpointFacts {
                    service: Ok(None),
                    slices: Ok(vec![]),
                    eastwest: Ok(Some(eastwest(None, Some("a1.elb.amazonaws.com")))),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("remote-istiod-endpoint/no-service"),
                commands: &["  type: ExternalName\n  externalName: a1.elb.amazonaws.com\nEOF"],
            },
            Row {
                name: "selector, no slice of its own",
                facts: EndpointFacts {
                    service: Ok(Some(service(
                        Some(&[("app", "istiod")]),
                        vec![port("tcp-istiod", 15012)],
                    ))),
                    slices: Ok(vec![
                        slice("istiod-x7k2p", SLICE_CONTROLLER, &[], 15012),
                        slice("istiod-mirror", MIRROR_CONTROLLER, &["203.0.113.10"], 15012),
                    ]),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("remote-istiod-endpoint/has-selector"),
                commands: &[
                    "kubectl --context ctx-remote -n istio-system patch service istiod --type=json -p='[{\"op\":\"remove\",\"path\":\"/spec/selector\"}]'",
                    "delete endpointslices -l kubernetes.io/service-name=istiod,endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io",
                    "kind: EndpointSlice",
                ],
            },
            Row {
                name: "selector that picks remote pods",
                facts: EndpointFacts {
                    service: Ok(Some(service(
                        Some(&[("app", "istiod")]),
                        vec![port("tcp-istiod", 15012)],
                    ))),
                    slices: Ok(vec![
                        slice("istiod-x7k2p", SLICE_CONTROLLER, &["10.244.1.7"], 15012),
                        slice("istiod", "Helm", &["203.0.113.10"], 15012),
                    ]),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("remote-istiod-endpoint/has-selector"),
                commands: &["patch service istiod --type=json", "delete endpointslices"],
            },
            Row {
                name: "selector that picks nothing, slice of its own: works today",
                facts: EndpointFacts {
                    service: Ok(Some(service(
                        Some(&[("app", "istiod")]),
                        vec![port("tcp-istiod", 15012)],
                    ))),
                    ..healthy()
                },
                status: Status::Warn,
                code: Some("remote-istiod-endpoint/has-selector"),
                commands: &[
                    "--context ctx-remote -n istio-system patch service istiod --type=json",
                ],
            },
            Row {
                name: "no port 15012",
                facts: EndpointFacts {
                    service: Ok(Some(service(None, vec![port("tcp-webhook", 443)]))),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("remote-istiod-endpoint/no-port-15012"),
                commands: &[
                    "kubectl --context ctx-remote -n istio-system patch service istiod --type=json -p='[{\"op\":\"add\",\"path\":\"/spec/ports/-\",\"value\":{\"name\":\"tcp-istiod\",\"port\":15012,\"protocol\":\"TCP\"}}]'",
                ],
            },
            Row {
                name: "tcp-istiod on another port",
                facts: EndpointFacts {
                    service: Ok(Some(service(
                        None,
                        vec![port("tcp-webhook", 443), port("tcp-istiod", 15013)],
                    ))),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("remote-istiod-endpoint/no-port-15012"),
                commands: &["{\"op\":\"replace\",\"path\":\"/spec/ports/1/port\",\"value\":15012}"],
            },
            Row {
                name: "no endpoints: an EndpointSlice with the east-west gateway's address",
                facts: EndpointFacts {
                    slices: Ok(vec![]),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("remote-istiod-endpoint/no-endpoints"),
                commands: &[
                    "kubectl --context ctx-remote apply -f - <<'EOF'\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: istiod\n  namespace: istio-system\n  labels:\n    kubernetes.io/service-name: istiod\naddressType: IPv4\nendpoints:\n- addresses:\n  - 203.0.113.10\nports:\n- name: tcp-istiod\n  port: 15012\n  protocol: TCP\n- name: tcp-webhook\n  port: 15017\n  protocol: TCP\nEOF",
                ],
            },
            Row {
                name: "no endpoints, address from --istiod-addr (IPv6)",
                facts: EndpointFacts {
                    slices: Ok(vec![{
                        // Only the webhook port: nothing for 15012.
                        let mut sl = slice("istiod", "Helm", &["203.0.113.10"], 15017);
                        sl.ports.as_mut().unwrap()[0].name = Some("tcp-webhook".into());
                        sl
                    }]),
                    eastwest: Ok(None),
                    istiod_addr_flag: Some("[2001:db8::7]:31012".into()),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("remote-istiod-endpoint/no-endpoints"),
                commands: &[
                    "addressType: IPv6\nendpoints:\n- addresses:\n  - 2001:db8::7\nports:\n- name: tcp-istiod\n  port: 31012\n",
                ],
            },
            Row {
                name: "no endpoints, hostname LoadBalancer: ExternalName",
                facts: EndpointFacts {
                    slices: Ok(vec![]),
                    eastwest: Ok(Some(eastwest(None, Some("a1.elb.amazonaws.com")))),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("remote-istiod-endpoint/no-endpoints"),
                commands: &[
                    "kubectl --context ctx-remote -n istio-system patch service istiod --type=merge -p '{\"spec\":{\"type\":\"ExternalName\",\"externalName\":\"a1.elb.amazonaws.com\"}}'",
                ],
            },
            Row {
                name: "no endpoints, address unknown: a note, no command",
                facts: EndpointFacts {
                    slices: Ok(vec![]),
                    eastwest: Ok(Some(eastwest(None, None))),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("remote-istiod-endpoint/no-endpoints"),
                commands: &[],
            },
            Row {
                name: "endpoints unreadable",
                facts: EndpointFacts {
                    slices: Err("403 Forbidden".into()),
                    endpoints: Err("403 Forbidden".into()),
                    ..healthy()
                },
                status: Status::Fail,
                code: Some("remote-istiod-endpoint/unreadable"),
                commands: &[],
            },
        ];
        for row in rows {
            let out = judge(&row.facts, &s);
            let f = super::super::check_row(row.name, &out, row.status, row.code, row.commands);
            if let Some(f) = f {
                assert!(
                    !f.commands
                        .iter()
                        .any(|c| c.contains("<") && !c.contains("<<'EOF'")),
                    "{}: placeholder",
                    row.name
                );
            }
        }
    }

    #[test]
    fn addresses_kubernetes_refuses_in_a_slice_are_never_printed() {
        for (ip, why) in [
            ("127.0.0.1", Some("loopback")),
            ("::1", Some("loopback")),
            ("169.254.1.1", Some("link-local")),
            ("fe80::1", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("224.0.0.5", Some("link-local multicast")),
            ("203.0.113.10", None),
            ("2001:db8::7", None),
            ("not-an-ip", None),
        ] {
            assert_eq!(refused_in_slice(ip), why, "{ip}");
        }
        let mut f = healthy();
        f.eastwest = Ok(None);
        f.istiod_addr_flag = Some("127.0.0.1:47059".into());
        assert!(
            matches!(exposed(&f, "istio-system"), Exposed::Unknown(w) if w.contains("loopback"))
        );
    }

    #[test]
    fn unknown_address_says_how_to_find_it() {
        let s = Settings::for_tests();
        let out = judge(
            &EndpointFacts {
                slices: Ok(vec![]),
                eastwest: Ok(None),
                ..healthy()
            },
            &s,
        );
        let note = out.finding.unwrap().note.unwrap();
        assert!(
            note.contains("the primary has no Service istio-system/istio-eastwestgateway"),
            "{note}"
        );
        assert!(
            note.contains(
                "kubectl --context ctx-primary -n istio-system get service istio-eastwestgateway"
            ),
            "{note}"
        );
        assert!(note.contains("--istiod-addr ADDRESS:15012"), "{note}");
    }

    #[test]
    fn the_address_later_steps_dial() {
        let f = healthy();
        assert_eq!(
            dial_target(&f),
            Some(("203.0.113.10:15012".into(), "EndpointSlice".into()))
        );
        let f = EndpointFacts {
            istiod_addr_flag: Some("127.0.0.1:15012".into()),
            ..healthy()
        };
        assert_eq!(
            dial_target(&f),
            Some(("127.0.0.1:15012".into(), "--istiod-addr".into()))
        );
        let out = judge(&f, &Settings::for_tests());
        assert!(
            out.evidence["note"]
                .as_str()
                .unwrap()
                .contains("the gateway dials 203.0.113.10:15012")
        );
        // A selector's own pods are not where the gateway should go.
        let f = EndpointFacts {
            service: Ok(Some(service(
                Some(&[("app", "istiod")]),
                vec![port("tcp-istiod", 15012)],
            ))),
            ..healthy()
        };
        assert_eq!(dial_target(&f).unwrap().0, "203.0.113.10:15012");
    }
}
