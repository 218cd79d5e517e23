//! Where the gateway's istio-agent dials istiod, as the agent decides it:
//! `CA_ADDR`, else the proxy config's `discoveryAddress` (Istio's default,
//! then env `PROXY_CONFIG`, then annotation `proxy.istio.io/config`; the
//! last one that sets it wins: pilot/cmd/pilot-agent/config/config.go), the
//! Service that name resolves to in the remote (Kubernetes DNS from the
//! gateway's namespace), the TLS server name and the roots it verifies with.

use super::istiod::{CA_PORT, agent_server_name};
use crate::engine::facts::GatewayFacts;

/// Istio's default `discoveryAddress` (mesh.DefaultProxyConfig).
pub const DEFAULT_DISCOVERY: &str = "istiod.istio-system.svc:15012";

/// The roots the agent verifies istiod with (FindRootCAForCA in
/// pkg/istio-agent/agent.go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The default: istio-ca-root-cert mounted at /var/run/secrets/istio.
    IstioCaRootCert,
    /// `CA_ROOT_CA=SYSTEM`: the platform's roots.
    System,
    /// `CA_ROOT_CA=<path>`: a file in the gateway's container.
    File(String),
}

impl Roots {
    pub fn describe(&self) -> String {
        match self {
            Roots::IstioCaRootCert => "the remote's istio-ca-root-cert".into(),
            Roots::System => "the platform's roots (CA_ROOT_CA=SYSTEM)".into(),
            Roots::File(p) => format!("the file CA_ROOT_CA={p} in the gateway's container"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// `host:port` as the agent dials it.
    pub addr: String,
    /// Which setting gave it.
    pub from: String,
    pub host: String,
    pub port: i32,
    /// The remote's Service the name resolves to (name, namespace); None for
    /// an IP or a name outside the cluster's DNS.
    pub service: Option<(String, String)>,
    pub server_name: String,
    pub roots: Roots,
}

/// `discoveryAddress` of a proxy config given as YAML or JSON.
fn discovery_address(cfg: &str) -> Option<String> {
    let v: serde_json::Value = serde_saphyr::from_str(cfg).ok()?;
    v.get("discoveryAddress")?
        .as_str()
        .filter(|a| !a.is_empty())
        .map(str::to_string)
}

fn split_host_port(addr: &str) -> (String, i32) {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            return (h.to_string(), p.parse().unwrap_or(CA_PORT));
        }
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(CA_PORT)),
        _ => (addr.to_string(), CA_PORT),
    }
}

/// The Service `host` names for a pod in `pod_ns`, as the cluster's DNS
/// search path (`<ns>.svc.<domain> svc.<domain> <domain>`) resolves it:
/// `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.<domain>`.
pub fn service_of(host: &str, pod_ns: &str) -> Option<(String, String)> {
    if host.parse::<std::net::IpAddr>().is_ok() || host == "localhost" {
        return None;
    }
    let host = host.trim_end_matches('.');
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [svc] => Some((svc.to_string(), pod_ns.to_string())),
        [svc, ns] => Some((svc.to_string(), ns.to_string())),
        [svc, ns, "svc", ..] => Some((svc.to_string(), ns.to_string())),
        _ => None,
    }
}

/// The proxy config's `discoveryAddress` and where it came from: the
/// annotation `proxy.istio.io/config` over env `PROXY_CONFIG`, else Istio's
/// default.
fn discovery(g: Option<&GatewayFacts>) -> (String, String) {
    let mut found = (
        DEFAULT_DISCOVERY.to_string(),
        "Istio's default discoveryAddress".to_string(),
    );
    let Some(g) = g else { return found };
    if let Some(a) = g.proxy_config_env.as_deref().and_then(discovery_address) {
        found = (
            a,
            "discoveryAddress of the gateway's env PROXY_CONFIG".into(),
        );
    }
    if let Some(a) = g
        .proxy_config_annotation
        .as_deref()
        .and_then(discovery_address)
    {
        found = (
            a,
            "discoveryAddress of the gateway's annotation proxy.istio.io/config".into(),
        );
    }
    found
}

/// The dial of gateway `g` (None: the gateway is unknown, Istio's default).
pub fn of(g: Option<&GatewayFacts>) -> Dial {
    let (mut addr, mut from) = discovery(g);
    if let Some(a) = g.and_then(|g| g.ca_addr.as_ref()) {
        addr = a.clone();
        from = "the gateway's env CA_ADDR".into();
    }
    let (host, port) = split_host_port(&addr);
    let pod_ns = g.map(|g| g.namespace.as_str()).unwrap_or("istio-system");
    let roots = match g.and_then(|g| g.ca_root_ca.as_deref()) {
        Some("SYSTEM") => Roots::System,
        Some(p) => Roots::File(p.to_string()),
        None => Roots::IstioCaRootCert,
    };
    Dial {
        service: service_of(&host, pod_ns),
        server_name: agent_server_name(Some(&addr), g.and_then(|g| g.istiod_san.as_deref())),
        addr,
        from,
        host,
        port,
        roots,
    }
}

/// Where the gateway's agent dials istiod for xDS (pkg/istio-agent/xds_proxy.go):
/// the proxy config's `discoveryAddress` only (CA_ADDR is the CA's), with
/// the server name from ISTIOD_SAN else that host, and the roots of
/// FindRootCAForXDS (pkg/istio-agent/agent.go): `XDS_ROOT_CA` (`SYSTEM`, a
/// file), else the PROV_CERT directory's root-cert.pem, else the mounted
/// istio-ca-root-cert.
pub fn xds_of(g: Option<&GatewayFacts>) -> Dial {
    let (addr, from) = discovery(g);
    let env = |k: &str| {
        g.and_then(|g| g.agent_env.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let (host, port) = split_host_port(&addr);
    let pod_ns = g.map(|g| g.namespace.as_str()).unwrap_or("istio-system");
    let roots = match (env("XDS_ROOT_CA"), env("PROV_CERT")) {
        (Some(s), _) if s == "SYSTEM" => Roots::System,
        (Some(p), _) => Roots::File(p),
        (None, Some(dir)) => Roots::File(format!("{}/root-cert.pem", dir.trim_end_matches('/'))),
        (None, None) => Roots::IstioCaRootCert,
    };
    Dial {
        service: service_of(&host, pod_ns),
        server_name: agent_server_name(Some(&addr), g.and_then(|g| g.istiod_san.as_deref())),
        addr,
        from,
        host,
        port,
        roots,
    }
}

/// The gateway's proxy config with `discoveryAddress` set to `addr`, as
/// JSON: the other fields of `cfg` kept (None when `cfg` does not parse).
pub fn with_discovery_address(cfg: Option<&str>, addr: &str) -> Option<String> {
    let mut v: serde_json::Value = match cfg {
        Some(c) if !c.trim().is_empty() => serde_saphyr::from_str(c).ok()?,
        _ => serde_json::json!({}),
    };
    v.as_object_mut()?.insert(
        "discoveryAddress".into(),
        serde_json::Value::String(addr.into()),
    );
    Some(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xds_dials_the_discovery_address_never_ca_addr() {
        let mut g = gw(
            Some("istiod.istio-system.svc:15012"),
            Some(r#"{"discoveryAddress":"istiod-remote.istio-system.svc:15012"}"#),
            None,
        );
        let d = xds_of(Some(&g));
        assert_eq!(d.addr, "istiod-remote.istio-system.svc:15012");
        assert_eq!(d.from, "discoveryAddress of the gateway's env PROXY_CONFIG");
        assert_eq!(
            d.service,
            Some(("istiod-remote".into(), "istio-system".into()))
        );
        assert_eq!(d.roots, Roots::IstioCaRootCert);
        g.proxy_config_env = None;
        assert_eq!(xds_of(Some(&g)).addr, DEFAULT_DISCOVERY);
        // CA_ROOT_CA is the CA's; XDS_ROOT_CA the xDS's.
        g.ca_root_ca = Some("SYSTEM".into());
        assert_eq!(xds_of(Some(&g)).roots, Roots::IstioCaRootCert);
        g.agent_env.insert("XDS_ROOT_CA".into(), "SYSTEM".into());
        assert_eq!(xds_of(Some(&g)).roots, Roots::System);
        g.agent_env
            .insert("XDS_ROOT_CA".into(), "/etc/x/root.pem".into());
        assert_eq!(
            xds_of(Some(&g)).roots,
            Roots::File("/etc/x/root.pem".into())
        );
        g.agent_env.remove("XDS_ROOT_CA");
        g.agent_env.insert("PROV_CERT".into(), "/etc/certs/".into());
        assert_eq!(
            xds_of(Some(&g)).roots,
            Roots::File("/etc/certs/root-cert.pem".into())
        );
        assert_eq!(
            with_discovery_address(Some("concurrency: 2\n"), "a:15012").as_deref(),
            Some(r#"{"concurrency":2,"discoveryAddress":"a:15012"}"#)
        );
        assert_eq!(
            with_discovery_address(None, "a:15012").as_deref(),
            Some(r#"{"discoveryAddress":"a:15012"}"#)
        );
    }

    fn gw(ca: Option<&str>, env: Option<&str>, ann: Option<&str>) -> GatewayFacts {
        GatewayFacts {
            namespace: "istio-system".into(),
            ca_addr: ca.map(String::from),
            proxy_config_env: env.map(String::from),
            proxy_config_annotation: ann.map(String::from),
            ..Default::default()
        }
    }

    /// (name, gateway, address, from, Service, server name)
    type Row = (
        &'static str,
        GatewayFacts,
        &'static str,
        &'static str,
        Option<(&'static str, &'static str)>,
        &'static str,
    );

    #[test]
    fn the_address_follows_the_agent() {
        let rows: &[Row] = &[
            (
                "CA_ADDR",
                gw(Some("istiod-canary.istio-system.svc:15012"), None, None),
                "istiod-canary.istio-system.svc:15012",
                "the gateway's env CA_ADDR",
                Some(("istiod-canary", "istio-system")),
                "istiod-canary.istio-system.svc",
            ),
            (
                "no CA_ADDR: PROXY_CONFIG",
                gw(
                    None,
                    Some(r#"{"discoveryAddress":"istiod-remote.istio-system.svc:15012"}"#),
                    None,
                ),
                "istiod-remote.istio-system.svc:15012",
                "discoveryAddress of the gateway's env PROXY_CONFIG",
                Some(("istiod-remote", "istio-system")),
                "istiod-remote.istio-system.svc",
            ),
            (
                "annotation over env",
                gw(
                    None,
                    Some("discoveryAddress: a.b.svc:15012"),
                    Some("discoveryAddress: c.d:15012\n"),
                ),
                "c.d:15012",
                "discoveryAddress of the gateway's annotation proxy.istio.io/config",
                Some(("c", "d")),
                "c.d",
            ),
            (
                "nothing: Istio's default",
                gw(None, Some("concurrency: 2"), None),
                DEFAULT_DISCOVERY,
                "Istio's default discoveryAddress",
                Some(("istiod", "istio-system")),
                "istiod.istio-system.svc",
            ),
            (
                "a public name",
                gw(Some("istiod.mesh-external.test:15012"), None, None),
                "istiod.mesh-external.test:15012",
                "the gateway's env CA_ADDR",
                None,
                "istiod.mesh-external.test",
            ),
            (
                "an IP",
                gw(Some("10.1.2.3:15012"), None, None),
                "10.1.2.3:15012",
                "the gateway's env CA_ADDR",
                None,
                "10.1.2.3",
            ),
            (
                "a bare name: the pod's namespace",
                gw(Some("istiod:15012"), None, None),
                "istiod:15012",
                "the gateway's env CA_ADDR",
                Some(("istiod", "istio-system")),
                "istiod",
            ),
            (
                "full cluster domain",
                gw(
                    Some("istiod.istio-system.svc.cluster.local:15012"),
                    None,
                    None,
                ),
                "istiod.istio-system.svc.cluster.local:15012",
                "the gateway's env CA_ADDR",
                Some(("istiod", "istio-system")),
                "istiod.istio-system.svc.cluster.local",
            ),
        ];
        for (name, g, addr, from, svc, sni) in rows {
            let d = of(Some(g));
            assert_eq!(d.addr, *addr, "{name}");
            assert_eq!(d.from, *from, "{name}");
            assert_eq!(
                d.service,
                svc.map(|(a, b)| (a.to_string(), b.to_string())),
                "{name}"
            );
            assert_eq!(d.server_name, *sni, "{name}");
            assert_eq!(d.port, 15012, "{name}");
        }
        let mut g = gw(None, None, None);
        g.ca_root_ca = Some("SYSTEM".into());
        assert_eq!(of(Some(&g)).roots, Roots::System);
        g.ca_root_ca = Some("/etc/certs/root.pem".into());
        assert_eq!(
            of(Some(&g)).roots,
            Roots::File("/etc/certs/root.pem".into())
        );
        assert_eq!(
            split_host_port("[2001:db8::1]:15012"),
            ("2001:db8::1".into(), 15012)
        );
    }
}
