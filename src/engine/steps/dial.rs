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

/// The dial of gateway `g` (None: the gateway is unknown, Istio's default).
pub fn of(g: Option<&GatewayFacts>) -> Dial {
    let mut from = "Istio's default discoveryAddress".to_string();
    let mut addr = DEFAULT_DISCOVERY.to_string();
    if let Some(g) = g {
        if let Some(a) = g.proxy_config_env.as_deref().and_then(discovery_address) {
            addr = a;
            from = "discoveryAddress of the gateway's env PROXY_CONFIG".into();
        }
        if let Some(a) = g
            .proxy_config_annotation
            .as_deref()
            .and_then(discovery_address)
        {
            addr = a;
            from = "discoveryAddress of the gateway's annotation proxy.istio.io/config".into();
        }
        if let Some(a) = &g.ca_addr {
            addr = a.clone();
            from = "the gateway's env CA_ADDR".into();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
