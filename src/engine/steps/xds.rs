//! `xds`: the gateway's xDS stream, opened as its istio-agent opens it
//! upstream once it holds its certificate (pkg/istio-agent/xds_proxy.go):
//! to the proxy config's `discoveryAddress` (never CA_ADDR), istiod verified
//! with the agent's xDS roots (FindRootCAForXDS: XDS_ROOT_CA, else
//! istio-ca-root-cert), the same token as `authorization: Bearer` and the
//! cluster ID as `ClusterID` metadata, a client certificate only where the
//! agent presents one (PROV_CERT, FILE_MOUNTED_CERTS: GetKeyCertsForXDS),
//! and the node Envoy sends (pkg/bootstrap: `router~<IP>~<pod>.<ns>~<ns>.svc.cluster.local`,
//! metadata NAMESPACE, SERVICE_ACCOUNT, CLUSTER_ID, NETWORK, LABELS,
//! ISTIO_VERSION). It asks for CDS and needs one answer.
//!
//! istiod's side (pilot/pkg/xds/ads.go, auth.go): Unavailable while it is not
//! ready; Unauthenticated (`authentication failure`) when no authenticator
//! accepts the stream (the client certificate, else the token reviewed in the
//! cluster the `clusterid` names: security/pkg/server/ca/authenticate);
//! PermissionDenied (`authorization failed: no identities (...) matched
//! <ns>/<sa>`) when the identity's namespace is not the node's NAMESPACE (else
//! the node ID's domain) or its service account not SERVICE_ACCOUNT.

use super::Settings;
use super::dial::{self, Dial, Roots};
use crate::engine::{Ctx, Outcome, Staged};
use crate::findings::{Finding, shell_word};
use crate::inspect::jwt;
use crate::model::StepId;
use crate::probe::clusterz::{self, Judgement};
use crate::probe::xds::{self, AdsAnswer, AdsError, AdsRequest, CLUSTER_TYPE, ClientCert};
use serde_json::json;
use std::collections::BTreeMap;

crate::causes! { StepId::Xds;
    DISCOVERY_ADDRESS_MISSING = "discovery-address-missing", "the gateway's discoveryAddress leads to no istiod address in the remote";
    UNREACHABLE = "unreachable", "istiod's xDS address does not answer on TCP";
    ROOT_CA_MISMATCH = "root-ca-mismatch", "the roots the agent verifies xDS with (XDS_ROOT_CA) do not verify istiod";
    TLS_FAILED = "tls-failed", "the TLS handshake of the xDS stream fails";
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted", "istiod refuses the client certificate the agent presents";
    UNAUTHENTICATED = "unauthenticated", "istiod does not authenticate the stream, for a reason meshtrace cannot see";
    UNKNOWN_CLUSTER = "unknown-cluster", "the istiod behind discoveryAddress does not know the gateway's cluster ID";
    TOKEN_AUDIENCE = "token-audience", "istiod's TOKEN_AUDIENCES lack the gateway token's audience";
    PERMISSION_DENIED = "permission-denied", "the stream's identity is not the node's namespace and service account";
    NOT_READY = "not-ready", "istiod is not ready to serve discovery information";
    REFUSED = "refused", "istiod refuses the stream with another gRPC status";
    STREAM_CLOSED = "stream-closed", "istiod closes the stream without an answer";
    NO_RESPONSE = "no-response", "istiod does not answer the request in time";
    NO_RESOURCES = "no-resources", "istiod answers with no cluster at all";
    NOT_SENDABLE = "request-not-sendable", "the gateway's xDS request cannot be sent as it is";
}

/// Where the stream goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `host:port` dialled, and why that one.
    Addr(String, String),
    /// The discoveryAddress names a Service the remote cannot route: why.
    Missing(String),
}

/// The node the agent announces (pkg/bootstrap).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    pub id: String,
    /// Metadata NAMESPACE (POD_NAMESPACE), empty when the agent sends none.
    pub namespace: String,
    /// Metadata SERVICE_ACCOUNT (env SERVICE_ACCOUNT).
    pub service_account: String,
    /// Every string metadata field sent.
    pub metadata: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// What istiod answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Answered(AdsAnswer),
    Failed(AdsError),
    /// Not sent: the address leads nowhere.
    NotSent,
}

#[derive(Debug, Clone)]
pub struct XdsFacts {
    pub dial: Dial,
    /// The CA's address (CA_ADDR, else the same discoveryAddress).
    pub ca_addr: String,
    pub target: Target,
    /// The roots verified with, in words; and whether they are the ones
    /// istiod-tls verified the CA's address with.
    pub roots: String,
    pub roots_are_the_cas: bool,
    /// `XDS_ROOT_CA=<file>`: the agent's roots, which meshtrace cannot read.
    pub roots_file: Option<String>,
    pub node: NodeFacts,
    /// The identity the stream carries: the token's fingerprint, and the
    /// client certificate's SPIFFE ID when one is presented.
    pub token_fingerprint: String,
    pub client_cert: Option<String>,
    /// `clusterid` sent, and from where.
    pub cluster_id: String,
    pub cluster_id_from: String,
    /// The identity istiod authenticates: the gateway pod's namespace and
    /// service account (the token's subject).
    pub identity_namespace: String,
    pub identity_service_account: String,
    pub answer: Answer,
    pub rpc_ms: f64,
    /// istiod's list of clusters, read only after Unauthenticated.
    pub view: clusterz::View,
    pub view_source: String,
    /// The gateway's Deployment, namespace and container, for fixes.
    pub deployment: Option<String>,
    pub container: String,
    pub proxy_config_env: Option<String>,
    pub proxy_config_annotation: Option<String>,
}

/// The DNS domain pilot-agent derives (getDNSDomain, pilot/cmd/pilot-agent/app/cmd.go).
const CLUSTER_DOMAIN: &str = "cluster.local";
/// istioctl's ISTIO_VERSION for an agent whose version is unknown.
const UNKNOWN_VERSION: &str = "65536.65536.65536";

/// The node as pkg/bootstrap builds it from the gateway's env.
pub fn node_of(gw: &crate::engine::facts::GatewayFacts, cluster_id: &str) -> NodeFacts {
    let env = |k: &str| gw.agent_env.get(k).cloned();
    let mut metadata: BTreeMap<String, String> = gw
        .agent_env
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("ISTIO_META_")
                .map(|m| (m.to_string(), v.clone()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect();
    // extractAttributesMetadata: POD_NAMESPACE and SERVICE_ACCOUNT win over ISTIO_META_*.
    if let Some(ns) = env("POD_NAMESPACE") {
        metadata.insert("NAMESPACE".into(), ns);
    }
    if let Some(sa) = env("SERVICE_ACCOUNT") {
        metadata.insert("SERVICE_ACCOUNT".into(), sa);
    }
    if !cluster_id.is_empty() {
        metadata.insert("CLUSTER_ID".into(), cluster_id.to_string());
    }
    if !metadata.contains_key("ISTIO_VERSION") {
        let tag = gw
            .image
            .as_deref()
            .and_then(|i| i.rsplit_once(':'))
            .map(|(_, t)| t.split('-').next().unwrap_or(t).to_string())
            .filter(|t| {
                t.split('.').count() == 3 && t.split('.').all(|p| p.parse::<u32>().is_ok())
            });
        metadata.insert(
            "ISTIO_VERSION".into(),
            tag.unwrap_or_else(|| UNKNOWN_VERSION.into()),
        );
    }
    let pod_ns = env("POD_NAMESPACE").unwrap_or_default();
    let pod = env("POD_NAME").unwrap_or_else(|| gw.pod.clone());
    let ip = env("INSTANCE_IP")
        .filter(|i| !i.is_empty())
        .or_else(|| gw.pod_ip.clone())
        .unwrap_or_else(|| "0.0.0.0".into());
    let labels = gw
        .labels
        .iter()
        .filter(|(k, _)| *k != "pod-template-hash")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    NodeFacts {
        id: format!(
            "{}~{ip}~{pod}.{pod_ns}~{pod_ns}.svc.{CLUSTER_DOMAIN}",
            gw.proxy_type
        ),
        namespace: metadata.get("NAMESPACE").cloned().unwrap_or_default(),
        service_account: metadata.get("SERVICE_ACCOUNT").cloned().unwrap_or_default(),
        metadata,
        labels,
    }
}

/// The namespace istiod authorizes the node for: NAMESPACE, else the
/// first label of the node ID's domain (GetProxyConfigNamespace,
/// pilot/pkg/model/context.go).
pub fn config_namespace(node: &NodeFacts) -> String {
    if !node.namespace.is_empty() {
        return node.namespace.clone();
    }
    let domain = node.id.rsplit('~').next().unwrap_or_default();
    match domain.split_once('.') {
        Some((ns, _)) => ns.to_string(),
        None => String::new(),
    }
}

pub async fn gather(ctx: &Ctx) -> Result<XdsFacts, Outcome> {
    let (gw, token, cid, root, addr) = {
        let f = ctx.facts();
        (
            f.gateway.clone(),
            f.gateway_token.clone(),
            f.cluster_id.clone(),
            f.remote_root_pem.clone(),
            f.istiod_addr.clone(),
        )
    };
    let Some(token) = token else {
        return Err(Outcome::new().blocked(StepId::GatewayToken, "no gateway token"));
    };
    let gw = gw.unwrap_or_default();
    let xds_dial = dial::xds_of(Some(&gw));
    let ca_dial = dial::of(Some(&gw));
    // The same address as the CA's: remote-istiod-endpoint resolved it.
    let target = if xds_dial.addr == ca_dial.addr {
        match addr {
            Some((a, from)) => Target::Addr(a, from),
            None => {
                return Err(
                    Outcome::new().blocked(StepId::RemoteIstiodEndpoint, "no istiod address")
                );
            }
        }
    } else {
        let ef = super::remote_istiod_endpoint::gather_for(ctx, xds_dial.clone()).await;
        match super::remote_istiod_endpoint::dial_target(&ef) {
            Some((a, from)) => Target::Addr(a, from),
            None => Target::Missing(missing_why(&ef, &xds_dial)),
        }
    };
    let (roots_pem, roots, roots_file) = match &xds_dial.roots {
        Roots::System => match ctx
            .opts
            .platform_roots_pem
            .clone()
            .map(Ok)
            .unwrap_or_else(crate::probe::tls::platform_roots_pem)
        {
            Ok(pem) => (
                pem,
                "the platform's roots (XDS_ROOT_CA=SYSTEM)".to_string(),
                None,
            ),
            Err(e) => {
                return Err(Outcome::new().skipped(format!(
                    "the gateway verifies istiod's xDS with the platform's roots (XDS_ROOT_CA=SYSTEM), and {e}"
                )));
            }
        },
        Roots::IstioCaRootCert | Roots::File(_) => match root {
            Some(r) => (
                r,
                Roots::IstioCaRootCert.describe(),
                match &xds_dial.roots {
                    Roots::File(p) => Some(p.clone()),
                    _ => None,
                },
            ),
            None => {
                return Err(Outcome::new().blocked(
                    StepId::RootOfTrust,
                    "no root in the remote's istio-ca-root-cert to verify istiod with",
                ));
            }
        },
    };
    let ca_roots = ctx.facts().istiod_tls.as_ref().map(|t| t.1.clone());
    let (cluster_id, cluster_id_from) =
        cid.map(|(c, from)| (c, from.to_string()))
            .unwrap_or_else(|| {
                (
                    String::new(),
                    "none: the gateway sets no ISTIO_META_CLUSTER_ID".into(),
                )
            });
    let node = node_of(&gw, &cluster_id);
    // GetKeyCertsForXDS: a client certificate only with PROV_CERT or
    // FILE_MOUNTED_CERTS; meshtrace presents the chain it was issued.
    let wants_cert = gw.agent_env.get("PROV_CERT").is_some_and(|v| !v.is_empty())
        || gw
            .agent_env
            .get("FILE_MOUNTED_CERTS")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let (chain, key) = if wants_cert {
        ctx.wait_steps(&[StepId::Csr]).await;
        let f = ctx.facts();
        (f.chain.clone(), f.issued_key.clone())
    } else {
        (None, None)
    };
    let cert = match (wants_cert, &chain, &key) {
        (true, Some(c), Some(k)) => Some((c.concat(), k.clone())),
        _ => None,
    };
    let client_cert = cert.as_ref().and_then(|(c, _)| leaf_spiffe(c));
    let mut facts = XdsFacts {
        ca_addr: ca_dial.addr.clone(),
        target: target.clone(),
        roots,
        roots_are_the_cas: ca_roots.as_deref() == Some(roots_pem.as_str()),
        roots_file,
        node: node.clone(),
        token_fingerprint: jwt::fingerprint(&token.0),
        client_cert,
        cluster_id: cluster_id.clone(),
        cluster_id_from,
        identity_namespace: gw.namespace.clone(),
        identity_service_account: gw.service_account.clone(),
        answer: Answer::NotSent,
        rpc_ms: 0.0,
        view: Err("not asked".into()),
        view_source: clusterz::source(
            ctx.opts.istiod_debug_addr.as_deref(),
            &ctx.opts.istio_namespace,
        ),
        deployment: gw.deployment.as_ref().and_then(|d| d.metadata.name.clone()),
        container: gw.container.clone(),
        proxy_config_env: gw.proxy_config_env.clone(),
        proxy_config_annotation: gw.proxy_config_annotation.clone(),
        dial: xds_dial.clone(),
    };
    let Target::Addr(addr, _) = &target else {
        return Ok(facts);
    };
    let started = std::time::Instant::now();
    let result = xds::discover(&AdsRequest {
        addr,
        server_name: &xds_dial.server_name,
        root_pem: &roots_pem,
        token: Some(&token.0),
        cluster_id: &cluster_id,
        client_cert: cert.as_ref().map(|(c, k)| ClientCert {
            chain_pem: c,
            key_pem: k,
        }),
        node_id: &node.id,
        metadata: &node.metadata,
        labels: &node.labels,
        type_url: CLUSTER_TYPE,
        timeout: ctx.opts.timeout,
    })
    .await;
    facts.rpc_ms = crate::model::millis(started.elapsed());
    // istiod names the reason only in its log: its list of clusters tells
    // whether it knows the cluster ID at all.
    if matches!(&result, Err(AdsError::Rpc { code, .. }) if code == "Unauthenticated") {
        facts.view = clusterz::fetch(
            ctx.opts.istiod_debug_addr.as_deref(),
            &ctx.clusters.primary,
            &ctx.opts.istio_namespace,
            ctx.opts.timeout,
        )
        .await;
    }
    facts.answer = match result {
        Ok(a) => Answer::Answered(a),
        Err(e) => Answer::Failed(e),
    };
    Ok(facts)
}

fn missing_why(ef: &super::remote_istiod_endpoint::EndpointFacts, d: &Dial) -> String {
    let (svc, ns) = d.service.clone().unwrap_or_default();
    match &ef.service {
        Err(e) => format!("the remote's Service {ns}/{svc} cannot be read: {e}"),
        Ok(None) => format!("the remote has no Service {ns}/{svc}"),
        Ok(Some(_)) => format!(
            "the remote's Service {ns}/{svc} has no address for port {}",
            d.port
        ),
    }
}

/// The SPIFFE URI SAN of the chain's leaf.
fn leaf_spiffe(chain_pem: &str) -> Option<String> {
    let certs = crate::inspect::x509::parse_pem_chain(chain_pem).ok()?;
    certs
        .first()?
        .uri_sans
        .iter()
        .find(|u| u.starts_with("spiffe://"))
        .cloned()
}

/// Opened beside the CSR: the agent presents no certificate on it unless
/// PROV_CERT or FILE_MOUNTED_CERTS is set (then the gather waits for the
/// CSR's chain); judged once csr and issued-chain finished.
pub async fn run(ctx: &Ctx) -> Staged {
    if ctx.opts.no_csr {
        return Outcome::new()
            .skipped("passive mode (--no-csr): no xDS stream opened")
            .into();
    }
    match gather(ctx).await {
        Ok(f) => Staged::judge(move |ctx| judge(&f, &Settings::of(ctx))),
        Err(o) => o.into(),
    }
}

pub fn judge(f: &XdsFacts, s: &Settings) -> Outcome {
    let mut out = Outcome::new();
    let md = |k: &str| f.node.metadata.get(k).cloned().unwrap_or_default();
    out.ev("discovery_address", &f.dial.addr)
        .ev("discovery_address_from", &f.dial.from)
        .ev("server_name", &f.dial.server_name)
        .ev("roots", &f.roots)
        .ev("node_id", &f.node.id)
        .ev(
            "node_metadata",
            json!({
                "NAMESPACE": md("NAMESPACE"),
                "SERVICE_ACCOUNT": md("SERVICE_ACCOUNT"),
                "CLUSTER_ID": md("CLUSTER_ID"),
                "NETWORK": md("NETWORK"),
                "ISTIO_VERSION": md("ISTIO_VERSION"),
                "LABELS": f.node.labels.len(),
            }),
        )
        .ev(
            "metadata",
            json!({"authorization": format!("Bearer <{}>", f.token_fingerprint), "clusterid": f.cluster_id}),
        )
        .ev("cluster_id_from", &f.cluster_id_from)
        .ev(
            "identity",
            match &f.client_cert {
                Some(id) => format!("token of {}/{} and client certificate {id}", f.identity_namespace, f.identity_service_account),
                None => format!(
                    "token of {}/{} (no client certificate: the agent presents one only with PROV_CERT or FILE_MOUNTED_CERTS)",
                    f.identity_namespace, f.identity_service_account
                ),
            },
        )
        .ev("type_url", CLUSTER_TYPE);
    if let Some(p) = &f.roots_file {
        out.ev(
            "roots_note",
            format!("the gateway sets XDS_ROOT_CA={p}, a file in its container meshtrace cannot read: verified with istio-ca-root-cert instead"),
        );
    }
    let addr = match &f.target {
        Target::Missing(why) => return discovery_missing(out, f, s, why),
        Target::Addr(a, from) => {
            out.ev("address", a).ev("address_from", from);
            a.clone()
        }
    };
    out.ev("rpc_ms", f.rpc_ms);
    let e = match &f.answer {
        Answer::Answered(a) => {
            out.ev("response_type_url", &a.type_url)
                .ev("resources", a.resources)
                .ev("resource_types", &a.resource_types)
                .ev("version_info", &a.version_info);
            if a.resources == 0 {
                return out.warning(
                    Finding::new(&NO_RESOURCES, "istiod answers CDS with no cluster for the gateway")
                        .note("istiod accepted the stream, but a gateway always gets at least BlackHoleCluster and the clusters of the mesh's Services: istiod has not computed the mesh yet (it syncs its clusters) or serves this node no configuration. Trace again in a minute; istiod's `istioctl proxy-status` lists what it sent"),
                    format!("istiod at {addr} answered {:?} with 0 resources", a.type_url),
                );
            }
            return out.pass();
        }
        Answer::NotSent => unreachable!("a target address is always sent to"),
        Answer::Failed(e) => e,
    };
    match e {
        AdsError::Connect(m) => connect_failed(out, f, s, &addr, m),
        AdsError::Rpc { code, message } => {
            out.ev("grpc_status", json!({"code": code, "message": message}));
            let told = format!("istiod answered {code} ({message:?})");
            match code.as_str() {
                "PermissionDenied" => permission_denied(out, f, s, &told),
                "Unauthenticated" => unauthenticated(out, f, s, &told),
                "Unavailable" if message.contains("not ready") || message.contains("warmup") => out.failing(
                    Finding::new(&NOT_READY, "istiod is not ready to serve discovery information")
                        .note(format!(
                            "istiod refuses every xDS stream until its caches have synced: its own cluster's and each remote cluster's (up to PILOT_REMOTE_CLUSTER_TIMEOUT); it turns ready by itself. It logs what it waits for: {}",
                            logs_command(s, "sync")
                        )),
                    format!("{told} at {addr}"),
                ),
                "Unavailable" => out.failing(
                    Finding::new(&STREAM_CLOSED, "the xDS stream to istiod breaks before istiod answers")
                        .note("the connection closed under the stream: istiod restarting, or a proxy or load balancer on the path that ends long-lived HTTP/2 streams; trace again"),
                    format!("{told} at {addr}"),
                ),
                _ => out.failing(
                    Finding::new(&REFUSED, format!("istiod refuses the xDS stream with {code}"))
                        .note(format!("istiod logs why: {}", logs_command(s, "ADS"))),
                    format!("{told} at {addr} for node {:?}", f.node.id),
                ),
            }
        }
        AdsError::Closed => out.failing(
            Finding::new(&STREAM_CLOSED, "istiod ends the xDS stream without an answer")
                .note(format!("istiod closed the stream cleanly without sending CDS: it ended the connection (a restart, max connection age) or something else answers on the address. istiod logs the stream: {}", logs_command(s, "ADS"))),
            format!("istiod at {addr} ended the stream without a DiscoveryResponse"),
        ),
        AdsError::Timeout(d) => out.failing(
            Finding::new(&NO_RESPONSE, format!("istiod does not answer CDS within {}", humantime::format_duration(*d)))
                .note("istiod answers the first request at once when it is healthy: it is overloaded (its push queue), or a proxy on the path holds the stream; raise --timeout to wait longer"),
            format!("no DiscoveryResponse from {addr} within {}", humantime::format_duration(*d)),
        ),
        AdsError::BadInput(m) => out.failing(
            Finding::new(&NOT_SENDABLE, "the gateway's xDS request cannot be sent")
                .note("the agent cannot send it either: the diagnosis names the value to fix"),
            format!("xDS request not sent: {m}"),
        ),
    }
}

fn logs_command(s: &Settings, word: &str) -> String {
    format!(
        "`{} -n {} logs deployment/istiod | grep -i {}`",
        s.kubectl_primary(),
        shell_word(&s.istio_namespace),
        shell_word(word)
    )
}

/// `kubectl --context R -n NS set env deployment/D -c C ARGS`, when the
/// gateway's Deployment is known.
fn set_env(f: &XdsFacts, s: &Settings, args: &str) -> Option<String> {
    let d = f.deployment.as_ref()?;
    Some(format!(
        "{} -n {} set env deployment/{} -c {} {args}",
        s.kubectl_remote(),
        shell_word(&f.identity_namespace),
        shell_word(d),
        shell_word(&f.container)
    ))
}

fn discovery_missing(out: Outcome, f: &XdsFacts, s: &Settings, why: &str) -> Outcome {
    let diag = format!(
        "the gateway's xDS goes to {} ({}), and {why}; its CA address {} works",
        f.dial.addr, f.dial.from, f.ca_addr
    );
    let finding = Finding::new(
        &DISCOVERY_ADDRESS_MISSING,
        format!(
            "the gateway's discoveryAddress {} leads nowhere",
            f.dial.addr
        ),
    );
    let why_ca = format!(
        "The agent dials the proxy config's discoveryAddress for xDS, CA_ADDR only for certificates: the CSR went to {} and worked. Pointing discoveryAddress there makes xDS take the same path (unless CA_ADDR is a separate CA such as istio-csr: then create the Service {} in the remote with the primary's exposed address instead)",
        f.ca_addr,
        f.dial
            .service
            .as_ref()
            .map(|(n, ns)| format!("{ns}/{n}"))
            .unwrap_or_default()
    );
    let from_annotation = f.dial.from.contains("annotation");
    let cmd = if from_annotation {
        let cfg = dial::with_discovery_address(f.proxy_config_annotation.as_deref(), &f.ca_addr);
        match (&f.deployment, cfg) {
            (Some(d), Some(cfg)) => {
                let patch = json!({"spec": {"template": {"metadata": {"annotations": {"proxy.istio.io/config": cfg}}}}});
                Some(format!(
                    "{} -n {} patch deployment {} --type=merge -p {}",
                    s.kubectl_remote(),
                    shell_word(&f.identity_namespace),
                    shell_word(d),
                    shell_word(&patch.to_string())
                ))
            }
            _ => None,
        }
    } else {
        dial::with_discovery_address(f.proxy_config_env.as_deref(), &f.ca_addr)
            .and_then(|cfg| set_env(f, s, &format!("PROXY_CONFIG={}", shell_word(&cfg))))
    };
    match cmd {
        Some(c) => out.failing(
            finding.command(c).note(format!("{why_ca}. The change rolls the gateway out; the durable fix is the mesh config's defaultConfig.discoveryAddress (or the gateway's proxy.istio.io/config) in the remote's install.")),
            diag,
        ),
        None => out.failing(
            finding.note(format!("{why_ca}. meshtrace has no Deployment of the gateway to change: set discoveryAddress {} in the gateway's proxy config where it is defined.", f.ca_addr)),
            diag,
        ),
    }
}

fn connect_failed(out: Outcome, f: &XdsFacts, s: &Settings, addr: &str, m: &str) -> Outcome {
    let lower = m.to_ascii_lowercase();
    let diag = format!(
        "xDS to {addr} as {:?} with {}: {m}",
        f.dial.server_name, f.roots
    );
    let tcp = lower.contains("tcp connect")
        || lower.contains("connection refused")
        || lower.contains("no route to host")
        || lower.contains("network is unreachable")
        || (lower.contains("timed out") && !lower.contains("handshake"));
    if tcp {
        return out.failing(
            Finding::new(&UNREACHABLE, format!("istiod's xDS address {addr} does not answer on TCP from here"))
                .note(if f.dial.addr == f.ca_addr {
                    "the CSR reached the same address moments ago: istiod or the path is flapping (an istiod restarting, a load balancer draining); trace again".to_string()
                } else {
                    format!("the gateway's xDS goes to {} ({}), not to its CA address {}: the address this name resolves to must be the primary's exposed 15012", f.dial.addr, f.dial.from, f.ca_addr)
                }),
            diag,
        );
    }
    let untrusted_server = lower.contains("unknownissuer")
        || lower.contains("unknown authority")
        || lower.contains("unknown issuer")
        || lower.contains("badsignature");
    if untrusted_server && !f.roots_are_the_cas {
        let unset = set_env(f, s, "XDS_ROOT_CA-");
        let finding = Finding::new(
            &ROOT_CA_MISMATCH,
            format!("{} do not verify istiod's certificate", f.roots),
        );
        let note = format!(
            "istiod-tls verified istiod with the remote's istio-ca-root-cert, and the CSR went through; the agent verifies xDS with {}. Without XDS_ROOT_CA the agent verifies xDS with istio-ca-root-cert too (FindRootCAForXDS, pkg/istio-agent/agent.go). Keep XDS_ROOT_CA only if istiod serves a certificate from those roots (an external istiod behind a public CA)",
            f.roots
        );
        return match unset {
            Some(c) => out.failing(finding.command(c).note(note), diag),
            None => out.failing(finding.note(note), diag),
        };
    }
    if f.client_cert.is_some()
        && (lower.contains("bad certificate")
            || lower.contains("unknown ca")
            || lower.contains("certificate required")
            || lower.contains("badcertificate")
            || lower.contains("unknownca"))
    {
        return out.failing(
            Finding::new(&CERTIFICATE_NOT_TRUSTED, "istiod refuses the client certificate the gateway presents")
                .note("with PROV_CERT or FILE_MOUNTED_CERTS the agent presents that certificate on xDS, and istiod verifies it with the mesh's roots: the provisioned certificate is not from the mesh's CA (or has expired). Renew it from the mesh's CA, or drop PROV_CERT/FILE_MOUNTED_CERTS so that the token alone authenticates"),
            diag,
        );
    }
    out.failing(
        Finding::new(&TLS_FAILED, format!("the TLS handshake for xDS with {addr} fails"))
            .note(if f.dial.addr == f.ca_addr {
                "istiod-tls passed on the same address with the same name: the diagnosis says what differs (a proxy that terminates TLS on long-lived streams, an istiod restarting with a new certificate)".to_string()
            } else {
                format!("the gateway's xDS goes to {} ({}), not to its CA address {} that istiod-tls verified: a server other than istiod, or one whose certificate lacks the name {}", f.dial.addr, f.dial.from, f.ca_addr, f.dial.server_name)
            }),
        diag,
    )
}

fn permission_denied(out: Outcome, f: &XdsFacts, s: &Settings, told: &str) -> Outcome {
    let node_ns = config_namespace(&f.node);
    let (ins, isa) = (&f.identity_namespace, &f.identity_service_account);
    let ns_bad = !node_ns.is_empty() && node_ns != *ins;
    let sa_bad = !f.node.service_account.is_empty() && f.node.service_account != *isa;
    let mut args = Vec::new();
    let mut wrong = Vec::new();
    if ns_bad {
        args.push(format!("POD_NAMESPACE={}", shell_word(ins)));
        wrong.push(format!(
            "namespace {node_ns:?} (POD_NAMESPACE), not the pod's {ins:?}"
        ));
    }
    if sa_bad {
        args.push(format!("SERVICE_ACCOUNT={}", shell_word(isa)));
        wrong.push(format!(
            "service account {:?} (SERVICE_ACCOUNT), not the pod's {isa:?}",
            f.node.service_account
        ));
    }
    let diag = if wrong.is_empty() {
        format!(
            "{told}; the node says namespace {node_ns:?} and service account {:?}, as the token's identity {ins}/{isa}",
            f.node.service_account
        )
    } else {
        // istiod's words are in grpc_status; the diagnosis names the values.
        format!(
            "istiod answered PermissionDenied: the node names {}",
            wrong.join(" and ")
        )
    };
    let finding = Finding::new(
        &PERMISSION_DENIED,
        if wrong.is_empty() {
            "istiod does not authorize the gateway's node for its identity".to_string()
        } else {
            if ns_bad {
                format!("the gateway's node claims namespace {node_ns}, its identity is in {ins}")
            } else {
                format!(
                    "the gateway's node claims service account {}, not its identity's",
                    f.node.service_account
                )
            }
        },
    );
    let why = "istiod lets a stream configure only a node of the identity's own namespace and service account (checkConnectionIdentity, pilot/pkg/xds/auth.go). The agent sends POD_NAMESPACE and SERVICE_ACCOUNT as the node's NAMESPACE and SERVICE_ACCOUNT: the injector sets them from the pod (fieldRef metadata.namespace, spec.serviceAccountName); a value written into the Deployment by hand (a manifest copied from another namespace) overrides that";
    match (wrong.is_empty(), set_env(f, s, &args.join(" "))) {
        (false, Some(c)) => out.failing(
            finding.command(c).note(format!("{why}. set env writes the pod's own values and rolls the gateway out.")),
            diag,
        ),
        (false, None) => out.failing(
            finding.note(format!("{why}. Set {} where the gateway is defined.", args.join(" "))),
            diag,
        ),
        (true, _) => out.failing(
            finding.note(format!("{why}. Here they agree as meshtrace reads the pod: istiod sees another identity (a client certificate of another workload) or another node. istiod logs `Unauthorized XDS`: {}", logs_command(s, "Unauthorized XDS"))),
            diag,
        ),
    }
}

fn unauthenticated(out: Outcome, f: &XdsFacts, s: &Settings, told: &str) -> Outcome {
    let cid = &f.cluster_id;
    let judgement = if cid.is_empty() {
        Judgement::Unknown("the gateway sends no cluster ID".into())
    } else {
        clusterz::judge(&f.view, cid)
    };
    let mut o = out;
    o.ev("istiod_clusters", clusterz::evidence(&f.view))
        .ev("istiod_clusters_source", &f.view_source);
    let same = f.dial.addr == f.ca_addr;
    let other_istiod = if same {
        "the CSR with the same token and cluster ID passed at the same address: ".to_string()
    } else {
        format!(
            "the CSR went to {} and passed; xDS goes to {} ({}), another istiod: ",
            f.ca_addr, f.dial.addr, f.dial.from
        )
    };
    if let Judgement::Missing { from, listed } = &judgement {
        let ids: Vec<String> = listed.iter().map(|e| e.id.clone()).collect();
        return o.failing(
            Finding::new(&UNKNOWN_CLUSTER, format!("istiod does not know cluster {cid:?}"))
                .note(format!(
                    "{other_istiod}istiod reviews the token in the cluster its `clusterid` names and knows only the clusters of its remote secrets (kube_jwt.go: `client claims to be in cluster {cid:?}, but we only know about ...`). Give that istiod the remote secret: `istioctl create-remote-secret --context={} --name={} | kubectl --context={} apply -f -` (or, when the secret is there, restart istiod: its remote-secret controller may be stuck)",
                    s.remote_word.clone(), shell_word(cid), shell_word(&s.primary_context)
                )),
            format!("{told}; istiod's /debug/clusterz ({from}) lists {}, not {cid:?}", super::quote_list(&ids)),
        );
    }
    if !s.token_audiences.contains(&s.token_audience) {
        return o.failing(
            Finding::new(
                &TOKEN_AUDIENCE,
                format!(
                    "istiod's TOKEN_AUDIENCES lack the gateway token's audience {:?}",
                    s.token_audience
                ),
            )
            .note(format!(
                "istiod reviews every token for TOKEN_AUDIENCES ({}); add {:?} to them",
                s.audiences_from, s.token_audience
            )),
            format!(
                "{told}; the token is for {:?}, istiod reviews for {}",
                s.token_audience,
                super::quote_list(&s.token_audiences)
            ),
        );
    }
    o.failing(
        Finding::new(&UNAUTHENTICATED, "istiod does not authenticate the gateway's xDS stream")
            .note(format!(
                "{other_istiod}istiod tells a client only `authentication failure` and logs each authenticator's reason (`Failed to authenticate client from ...: Authenticator ClientCertAuthenticator: ...; Authenticator KubeJWTAuthenticator: ...`): {}",
                logs_command(s, "Failed to authenticate")
            )),
        format!("{told}; istiod's view of cluster {cid:?}: {}", match &judgement {
            Judgement::Synced { .. } => "synced".to_string(),
            Judgement::NotSynced { entry, .. } => format!("not synced ({})", entry.status_text()),
            Judgement::Unknown(w) => format!("unknown ({w})"),
            Judgement::Missing { .. } => unreachable!(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::probe::clusterz::{Answer as ViewAnswer, ClusterzEntry};
    use std::time::Duration;

    fn gw() -> crate::engine::facts::GatewayFacts {
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("POD_NAME", "istio-eastwestgateway-abc"),
            ("POD_NAMESPACE", "istio-system"),
            ("SERVICE_ACCOUNT", "istio-eastwestgateway-service-account"),
            ("INSTANCE_IP", "10.1.0.7"),
            ("ISTIO_META_CLUSTER_ID", "remote"),
            ("ISTIO_META_NETWORK", "network2"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "istio-eastwestgateway".to_string());
        labels.insert("pod-template-hash".to_string(), "abc".to_string());
        crate::engine::facts::GatewayFacts {
            namespace: "istio-system".into(),
            pod: "istio-eastwestgateway-abc".into(),
            service_account: "istio-eastwestgateway-service-account".into(),
            agent_env: env,
            proxy_type: "router".into(),
            image: Some("docker.io/istio/proxyv2:1.28.0".into()),
            labels,
            container: "istio-proxy".into(),
            ..Default::default()
        }
    }

    fn facts(answer: Answer) -> XdsFacts {
        let g = gw();
        let d = dial::xds_of(Some(&g));
        XdsFacts {
            ca_addr: d.addr.clone(),
            target: Target::Addr("203.0.113.10:15012".into(), "EndpointSlice".into()),
            roots: "the remote's istio-ca-root-cert".into(),
            roots_are_the_cas: true,
            roots_file: None,
            node: node_of(&g, "remote"),
            token_fingerprint: "sha256:0123".into(),
            client_cert: None,
            cluster_id: "remote".into(),
            cluster_id_from: "gateway env ISTIO_META_CLUSTER_ID".into(),
            identity_namespace: "istio-system".into(),
            identity_service_account: "istio-eastwestgateway-service-account".into(),
            answer,
            rpc_ms: 3.0,
            view: Err("not asked".into()),
            view_source: "the primary API server's proxy".into(),
            deployment: Some("istio-eastwestgateway".into()),
            container: "istio-proxy".into(),
            proxy_config_env: None,
            proxy_config_annotation: None,
            dial: d,
        }
    }

    fn answered(n: usize) -> Answer {
        Answer::Answered(AdsAnswer {
            type_url: CLUSTER_TYPE.into(),
            version_info: "v1".into(),
            resources: n,
            resource_types: vec![CLUSTER_TYPE.into()],
        })
    }
    fn rpc(code: &str, message: &str) -> Answer {
        Answer::Failed(AdsError::Rpc {
            code: code.into(),
            message: message.into(),
        })
    }

    #[test]
    fn the_node_is_the_agents() {
        let n = node_of(&gw(), "remote");
        assert_eq!(
            n.id,
            "router~10.1.0.7~istio-eastwestgateway-abc.istio-system~istio-system.svc.cluster.local"
        );
        assert_eq!(n.metadata["NAMESPACE"], "istio-system");
        assert_eq!(n.metadata["CLUSTER_ID"], "remote");
        assert_eq!(n.metadata["NETWORK"], "network2");
        assert_eq!(n.metadata["ISTIO_VERSION"], "1.28.0");
        assert_eq!(n.labels.len(), 1, "pod-template-hash is left out");
        assert_eq!(config_namespace(&n), "istio-system");
        // No POD_NAMESPACE: the node's domain names none either.
        let mut g = gw();
        g.agent_env.remove("POD_NAMESPACE");
        let n = node_of(&g, "remote");
        assert_eq!(config_namespace(&n), "");
        let mut n = node_of(&gw(), "remote");
        n.namespace.clear();
        assert_eq!(config_namespace(&n), "istio-system");
    }

    struct Row {
        name: &'static str,
        facts: XdsFacts,
        status: Status,
        code: Option<&'static str>,
        commands: &'static [&'static str],
    }

    #[test]
    fn judge_table() {
        let s = Settings::for_tests();
        let mut wrong_ns = facts(rpc(
            "PermissionDenied",
            "authorization failed: no identities ([spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway-service-account]) matched istio-gateways/istio-eastwestgateway-service-account",
        ));
        wrong_ns.node.namespace = "istio-gateways".into();
        let mut wrong_sa = facts(rpc("PermissionDenied", "authorization failed"));
        wrong_sa.node.service_account = "default".into();
        let mut missing = facts(Answer::NotSent);
        missing.dial.addr = "istiod-remote.istio-system.svc:15012".into();
        missing.dial.from = "discoveryAddress of the gateway's env PROXY_CONFIG".into();
        missing.dial.service = Some(("istiod-remote".into(), "istio-system".into()));
        missing.ca_addr = "istiod.istio-system.svc:15012".into();
        missing.proxy_config_env =
            Some(r#"{"discoveryAddress":"istiod-remote.istio-system.svc:15012"}"#.into());
        missing.target =
            Target::Missing("the remote has no Service istio-system/istiod-remote".into());
        let mut missing_ann = missing.clone();
        missing_ann.dial.from =
            "discoveryAddress of the gateway's annotation proxy.istio.io/config".into();
        missing_ann.proxy_config_annotation =
            Some("discoveryAddress: istiod-remote.istio-system.svc:15012\n".into());
        let mut system_roots = facts(Answer::Failed(AdsError::Connect(
            "203.0.113.10:15012 (server name \"istiod.istio-system.svc\"): transport error: invalid peer certificate: UnknownIssuer".into(),
        )));
        system_roots.roots = "the platform's roots (XDS_ROOT_CA=SYSTEM)".into();
        system_roots.roots_are_the_cas = false;
        let mut same_roots_untrusted = system_roots.clone();
        same_roots_untrusted.roots_are_the_cas = true;
        let unknown_view = {
            let mut f = facts(rpc("Unauthenticated", "authentication failure"));
            f.view = Ok(vec![ViewAnswer {
                from: "pod istiod-abc".into(),
                result: Ok(vec![ClusterzEntry {
                    id: "primary".into(),
                    secret_name: String::new(),
                    sync_status: Some("synced".into()),
                }]),
            }]);
            f
        };
        let mut cert_refused = facts(Answer::Failed(AdsError::Connect(
            "x: transport error: received fatal alert: BadCertificate".into(),
        )));
        cert_refused.client_cert = Some("spiffe://cluster.local/ns/istio-system/sa/gw".into());
        let rows = vec![
            Row {
                name: "answered",
                facts: facts(answered(4)),
                status: Status::Pass,
                code: None,
                commands: &[],
            },
            Row {
                name: "answered empty",
                facts: facts(answered(0)),
                status: Status::Warn,
                code: Some("xds/no-resources"),
                commands: &[],
            },
            Row {
                name: "node namespace is not the identity's",
                facts: wrong_ns,
                status: Status::Fail,
                code: Some("xds/permission-denied"),
                commands: &[
                    "kubectl --context ctx-remote -n istio-system set env deployment/istio-eastwestgateway -c istio-proxy POD_NAMESPACE=istio-system",
                ],
            },
            Row {
                name: "node service account is not the identity's",
                facts: wrong_sa,
                status: Status::Fail,
                code: Some("xds/permission-denied"),
                commands: &["SERVICE_ACCOUNT=istio-eastwestgateway-service-account"],
            },
            Row {
                name: "denied, node agrees",
                facts: facts(rpc("PermissionDenied", "authorization failed")),
                status: Status::Fail,
                code: Some("xds/permission-denied"),
                commands: &[],
            },
            Row {
                name: "discoveryAddress names no Service (env)",
                facts: missing,
                status: Status::Fail,
                code: Some("xds/discovery-address-missing"),
                commands: &[
                    r#"set env deployment/istio-eastwestgateway -c istio-proxy PROXY_CONFIG='{"discoveryAddress":"istiod.istio-system.svc:15012"}'"#,
                ],
            },
            Row {
                name: "discoveryAddress names no Service (annotation)",
                facts: missing_ann,
                status: Status::Fail,
                code: Some("xds/discovery-address-missing"),
                commands: &[
                    "patch deployment istio-eastwestgateway --type=merge -p",
                    "proxy.istio.io/config",
                ],
            },
            Row {
                name: "XDS_ROOT_CA roots do not verify istiod",
                facts: system_roots,
                status: Status::Fail,
                code: Some("xds/root-ca-mismatch"),
                commands: &["set env deployment/istio-eastwestgateway -c istio-proxy XDS_ROOT_CA-"],
            },
            Row {
                name: "untrusted with the CA's roots",
                facts: same_roots_untrusted,
                status: Status::Fail,
                code: Some("xds/tls-failed"),
                commands: &[],
            },
            Row {
                name: "refused",
                facts: facts(Answer::Failed(AdsError::Connect(
                    "203.0.113.10:15012: tcp connect error: Connection refused (os error 111)"
                        .into(),
                ))),
                status: Status::Fail,
                code: Some("xds/unreachable"),
                commands: &[],
            },
            Row {
                name: "client certificate refused",
                facts: cert_refused,
                status: Status::Fail,
                code: Some("xds/certificate-not-trusted"),
                commands: &[],
            },
            Row {
                name: "unknown cluster",
                facts: unknown_view,
                status: Status::Fail,
                code: Some("xds/unknown-cluster"),
                commands: &[],
            },
            Row {
                name: "unauthenticated, view unknown",
                facts: facts(rpc("Unauthenticated", "authentication failure")),
                status: Status::Fail,
                code: Some("xds/unauthenticated"),
                commands: &[],
            },
            Row {
                name: "not ready",
                facts: facts(rpc(
                    "Unavailable",
                    "server is not ready to serve discovery information",
                )),
                status: Status::Fail,
                code: Some("xds/not-ready"),
                commands: &[],
            },
            Row {
                name: "broken",
                facts: facts(rpc("Unavailable", "transport error: connection reset")),
                status: Status::Fail,
                code: Some("xds/stream-closed"),
                commands: &[],
            },
            Row {
                name: "closed",
                facts: facts(Answer::Failed(AdsError::Closed)),
                status: Status::Fail,
                code: Some("xds/stream-closed"),
                commands: &[],
            },
            Row {
                name: "other status",
                facts: facts(rpc("InvalidArgument", "invalid node type")),
                status: Status::Fail,
                code: Some("xds/refused"),
                commands: &[],
            },
            Row {
                name: "timeout",
                facts: facts(Answer::Failed(AdsError::Timeout(Duration::from_secs(5)))),
                status: Status::Fail,
                code: Some("xds/no-response"),
                commands: &[],
            },
            Row {
                name: "not sendable",
                facts: facts(Answer::Failed(AdsError::BadInput(
                    "cluster ID \"a\\nb\" is not a valid header value".into(),
                ))),
                status: Status::Fail,
                code: Some("xds/request-not-sendable"),
                commands: &[],
            },
        ];
        for row in rows {
            let out = judge(&row.facts, &s);
            let f = super::super::check_row(row.name, &out, row.status, row.code, row.commands);
            if let Some(f) = f {
                assert!(
                    !f.commands.iter().any(|c| c.contains('<')),
                    "{}: {:?}",
                    row.name,
                    f.commands
                );
            }
            let ev = serde_json::to_string(&out.evidence).unwrap();
            assert!(
                !ev.contains("sha256:0123\""),
                "the fingerprint is shown as Bearer <..>: {ev}"
            );
        }
        let mut audience = facts(rpc("Unauthenticated", "authentication failure"));
        audience.view = Err("no pod".into());
        let mut s2 = Settings::for_tests();
        s2.token_audiences = vec!["other-ca".into()];
        let out = judge(&audience, &s2);
        super::super::check_row(
            "audience",
            &out,
            Status::Fail,
            Some("xds/token-audience"),
            &[],
        );
    }
}
