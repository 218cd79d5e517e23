//! root-of-trust: the roots that must agree: the primary CA's (plug-in
//! `cacerts`, else istiod's self-signed `istio-ca-secret`, as
//! pilot/pkg/bootstrap/istio_ca.go picks them), the `istio-ca-root-cert` the
//! remote gateway trusts istiod with, and the primary's own copy.

use super::{Settings, kube_err, quote_list};
use crate::engine::{Ctx, Outcome, Staged};
use crate::findings::{Finding, shell_word};
use crate::inspect::x509::{self, CertInfo, rfc3339};
use crate::model::StepId;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::Api;
use serde_json::json;
use std::collections::BTreeMap;

crate::causes! { StepId::RootOfTrust;
    INCOMPLETE_CACERTS = "incomplete-cacerts", "the primary's cacerts lacks files of the plug-in CA, so istiod refuses it";
    NO_ROOT_CONFIGMAP = "no-root-configmap", "the remote has no istio-ca-root-cert to verify istiod with";
    ROOT_MISMATCH = "root-mismatch", "the remote trusts another root than the primary CA's";
    EMPTY_ROOT_CONFIGMAP = "empty-root-configmap", "the remote's istio-ca-root-cert holds no certificate";
    BAD_PRIMARY_ROOT = "bad-primary-root", "the primary CA's root is no PEM certificate";
    READ_REFUSED = "read-refused", "an API server refused to show a CA Secret or ConfigMap";
    ROOT_EXPIRED = "root-expired", "the root of trust has expired";
    SIGNING_CA_EXPIRED = "signing-ca-expired", "the primary's signing CA has expired";
    ROOT_EXPIRING = "root-expiring", "the root of trust expires within --warn-within";
    SIGNING_CA_EXPIRING = "signing-ca-expiring", "the primary's signing CA expires within --warn-within";
    PRIMARY_CONFIGMAP_DIFFERS = "primary-configmap-differs", "the primary's istio-ca-root-cert does not hold the root the remote trusts";
    NO_ROOT_IN_GATEWAY_NAMESPACE = "no-root-in-gateway-namespace", "the gateway's namespace has no istio-ca-root-cert, though the Istio namespace of the remote has one";
}

/// Who signs the gateway's certificates, as istiod and istio-agent decide it
/// (maybeCreateCA in pilot/pkg/bootstrap/server.go; CA_ADDR of the agent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaSettings {
    /// `PILOT_CERT_PROVIDER` of istiod (`istiod` by default).
    pub cert_provider: String,
    /// `EXTERNAL_CA` (`ISTIOD_RA_KUBERNETES_API`: istiod is an RA for a
    /// Kubernetes CSR signer).
    pub external_ca: Option<String>,
    /// `ENABLE_CA_SERVER` (true by default).
    pub ca_server: bool,
    /// The gateway's `CA_ADDR`, when it sets one.
    pub ca_addr: Option<String>,
    /// The mesh config's `caCertificates` entries.
    pub ca_certificates: usize,
    /// istiod's `ISTIOD_CUSTOM_HOST` names (an external istiod's public name).
    pub istiod_hosts: Vec<String>,
}

/// The CA behind the gateway's certificates when it is not istiod's own
/// (None: istiod's CA, from cacerts or istio-ca-secret).
fn external_ca(c: &CaSettings, ns: &str) -> Option<(String, String)> {
    if let Some(addr) = &c.ca_addr {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), ""));
        // istiod's names, its custom hosts, or its CA port 15012: istiod.
        let istiod = host == "istiod"
            || host.starts_with("istiod.")
            || host.starts_with("istiod-")
            || host == format!("istiod.{ns}.svc")
            || c.istiod_hosts.iter().any(|h| h == host)
            || port == "15012";
        if !istiod {
            return Some((
                format!("external CA at the gateway's CA_ADDR {addr:?}"),
                "istio-agent sends its CSR to CA_ADDR (pkg/istio-agent/agent.go), not to istiod: the CA there (e.g. cert-manager's istio-csr) signs, and its root is not in the primary's cacerts".into(),
            ));
        }
    }
    if !c.ca_server {
        return Some((
            "external CA (istiod ENABLE_CA_SERVER=false)".into(),
            "istiod creates no CA when ENABLE_CA_SERVER is false (maybeCreateCA, pilot/pkg/bootstrap/server.go): another CA signs, and cacerts is not read".into(),
        ));
    }
    if let Some(t) = c.external_ca.as_deref().filter(|t| !t.is_empty()) {
        if c.cert_provider.starts_with("k8s.io/") || t == "ISTIOD_RA_KUBERNETES_API" {
            return Some((
                format!("istiod as a registration authority (EXTERNAL_CA={t}, PILOT_CERT_PROVIDER={})", c.cert_provider),
                "istiod forwards CSRs to a Kubernetes signer (createIstioRA, pilot/pkg/bootstrap/istio_ca.go) and distributes the roots of meshConfig caCertificates or its external-ca-cert mount, not cacerts".into(),
            ));
        }
    }
    None
}

const ROOT_CM: &str = "istio-ca-root-cert";
const ANNOTATION: &str = "topology.istio.io/controlPlaneClusters";

/// The entries of a CA Secret that hold certificates; the others (private
/// keys) are kept by name only.
const CERT_KEYS: [&str; 5] = [
    "ca-cert.pem",
    "root-cert.pem",
    "cert-chain.pem",
    "tls.crt",
    "ca.crt",
];

/// A CA Secret without its private key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaSecret {
    /// Every data key.
    pub keys: Vec<String>,
    /// The text of its certificate entries, by key.
    pub certs: BTreeMap<String, String>,
}

impl CaSecret {
    pub fn of(s: &Secret) -> CaSecret {
        let data = s.data.clone().unwrap_or_default();
        CaSecret {
            keys: data.keys().cloned().collect(),
            certs: data
                .iter()
                .filter(|(k, _)| CERT_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                .collect(),
        }
    }
    fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }
}

#[derive(Debug, Clone)]
pub struct RootFacts {
    /// The Istio namespace (of both clusters).
    pub namespace: String,
    pub cacerts: Result<Option<CaSecret>, String>,
    pub istio_ca_secret: Result<Option<CaSecret>, String>,
    /// `root-cert.pem` of the primary's istio-ca-root-cert (`Some("")`: the
    /// ConfigMap has no such key).
    pub primary_configmap: Result<Option<String>, String>,
    /// The same in the remote, in the gateway's namespace (the one the
    /// gateway mounts: a ConfigMap volume is read from the pod's namespace).
    pub remote_configmap: Result<Option<String>, String>,
    /// The gateway's namespace in the remote (the Istio namespace when unknown).
    pub gateway_namespace: String,
    /// When the gateway runs outside the Istio namespace: the remote's
    /// istio-ca-root-cert in the Istio namespace.
    pub remote_istio_ns_configmap: Option<Result<Option<String>, String>>,
    /// Who signs (istiod's settings and the gateway's CA_ADDR).
    pub ca_settings: CaSettings,
    /// The mesh's trust domain and aliases as istiod reads them (the
    /// revision's mesh config), with its source.
    pub trust_domain: Option<(String, String)>,
    pub trust_domain_aliases: Vec<String>,
    /// The primary's mesh config (ConfigMap `istio`, key `mesh`).
    pub mesh: Option<String>,
    /// Read only when the remote ConfigMap is missing: the remote Istio
    /// namespace's controlPlaneClusters annotation,
    pub remote_annotation: Option<Result<Option<String>, String>>,
    /// the primary's cluster ID and its source,
    pub primary_cluster_id: Option<(String, String)>,
    /// and the primary istiod's EXTERNAL_ISTIOD (None: not known).
    pub external_istiod: Option<bool>,
}

fn read<T>(r: Result<Option<T>, kube::Error>, what: &str) -> Result<Option<T>, String> {
    r.map_err(|e| format!("cannot read {what}: {}", kube_err(&e)))
}

fn root_pem_of(cm: ConfigMap) -> String {
    cm.data
        .and_then(|d| d.get("root-cert.pem").cloned())
        .unwrap_or_default()
}

/// Go's strconv.ParseBool, which istiod's env flags use.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The primary's cluster ID and EXTERNAL_ISTIOD from istiod's Deployment.
/// An env that is absent takes istiod's default (CLUSTER_ID `Kubernetes`,
/// EXTERNAL_ISTIOD false), unless the container reads env from elsewhere.
fn istiod_settings(d: &Deployment) -> (Option<(String, String)>, Option<bool>) {
    let Some(spec) = d.spec.template.spec.as_ref() else {
        return (None, None);
    };
    let Some(c) = spec
        .containers
        .iter()
        .find(|c| c.name == "discovery")
        .or(spec.containers.first())
    else {
        return (None, None);
    };
    let env = c.env.clone().unwrap_or_default();
    let from_elsewhere = c.env_from.as_ref().is_some_and(|e| !e.is_empty());
    let var = |name: &str| env.iter().find(|e| e.name == name);
    let id = match var("CLUSTER_ID") {
        Some(e) => e
            .value
            .clone()
            .map(|v| (v, "primary istiod CLUSTER_ID".to_string())),
        None if !from_elsewhere => Some((
            "Kubernetes".into(),
            "istiod's default (its Deployment sets no CLUSTER_ID)".into(),
        )),
        None => None,
    };
    let external = match var("EXTERNAL_ISTIOD") {
        Some(e) => e.value.as_deref().and_then(parse_bool),
        None if !from_elsewhere => Some(false),
        None => None,
    };
    (id, external)
}

pub async fn gather(ctx: &Ctx) -> RootFacts {
    let ns = ctx.opts.istio_namespace.clone();
    let gw = ctx.facts().gateway.clone();
    let gw_ns = gw
        .as_ref()
        .map(|g| g.namespace.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| ns.clone());
    let psec: Api<Secret> = Api::namespaced(ctx.clusters.primary.clone(), &ns);
    let pcm: Api<ConfigMap> = Api::namespaced(ctx.clusters.primary.clone(), &ns);
    let rcm: Api<ConfigMap> = Api::namespaced(ctx.clusters.remote.clone(), &gw_ns);
    let rcm_istio: Api<ConfigMap> = Api::namespaced(ctx.clusters.remote.clone(), &ns);
    let other_ns = gw_ns != ns;
    let (cacerts, selfsigned, primary_cm, remote_cm, mesh_cm, remote_istio_cm) = tokio::join!(
        psec.get_opt("cacerts"),
        psec.get_opt("istio-ca-secret"),
        pcm.get_opt(ROOT_CM),
        rcm.get_opt(ROOT_CM),
        pcm.get_opt("istio"),
        async {
            if other_ns {
                Some(rcm_istio.get_opt(ROOT_CM).await)
            } else {
                None
            }
        },
    );
    let mut f = RootFacts {
        cacerts: read(cacerts, "primary Secret cacerts").map(|s| s.as_ref().map(CaSecret::of)),
        istio_ca_secret: read(selfsigned, "primary Secret istio-ca-secret")
            .map(|s| s.as_ref().map(CaSecret::of)),
        primary_configmap: read(primary_cm, "primary ConfigMap istio-ca-root-cert")
            .map(|c| c.map(root_pem_of)),
        remote_configmap: read(remote_cm, "remote ConfigMap istio-ca-root-cert")
            .map(|c| c.map(root_pem_of)),
        gateway_namespace: gw_ns.clone(),
        remote_istio_ns_configmap: remote_istio_cm
            .map(|r| read(r, "remote ConfigMap istio-ca-root-cert").map(|c| c.map(root_pem_of))),
        // istiod's settings: control-plane's, filled in when judged.
        ca_settings: CaSettings {
            ca_addr: gw.as_ref().and_then(|g| g.ca_addr.clone()),
            ..CaSettings::of(None)
        },
        trust_domain: None,
        trust_domain_aliases: Vec::new(),
        mesh: mesh_cm
            .ok()
            .flatten()
            .and_then(|cm| cm.data?.get("mesh").cloned()),
        remote_annotation: None,
        primary_cluster_id: ctx
            .opts
            .primary_cluster_id
            .clone()
            .map(|id| (id, "--primary-cluster-id".to_string())),
        external_istiod: None,
        namespace: ns.clone(),
    };
    // Why istiod did not write the remote's root: what decides it.
    if matches!(f.remote_configmap, Ok(None)) {
        let rns: Api<Namespace> = Api::all(ctx.clusters.remote.clone());
        let deps: Api<Deployment> = Api::namespaced(ctx.clusters.primary.clone(), &ns);
        // Which istiod: control-plane's pick (only on this path).
        ctx.wait_steps(&[StepId::ControlPlane]).await;
        let name = super::istiod_deployment_name(ctx);
        let (n, d) = tokio::join!(rns.get_opt(&ns), deps.get_opt(&name));
        f.remote_annotation = Some(
            n.map(|n| n.and_then(|n| n.metadata.annotations?.get(ANNOTATION).cloned()))
                .map_err(|e| kube_err(&e)),
        );
        if let Ok(Some(d)) = d {
            let (id, external) = istiod_settings(&d);
            if f.primary_cluster_id.is_none() {
                f.primary_cluster_id = id;
            }
            f.external_istiod = external;
        }
    }
    f
}

/// istiod's settings as control-plane read them, into what the judge reads.
fn with_settings(f: &mut RootFacts, settings: Option<&super::IstiodSettings>) {
    f.ca_settings = CaSettings {
        ca_addr: f.ca_settings.ca_addr.take(),
        ..CaSettings::of(settings)
    };
    f.trust_domain = settings.map(|s| (s.trust_domain.value.clone(), s.trust_domain.from.clone()));
    f.trust_domain_aliases = settings
        .map(|s| s.trust_domain_aliases.clone())
        .unwrap_or_default();
}

impl CaSettings {
    /// Who signs, as istiod's settings say (istiod's defaults when unknown);
    /// the gateway's CA_ADDR left empty.
    fn of(settings: Option<&super::IstiodSettings>) -> CaSettings {
        CaSettings {
            cert_provider: settings.map_or("istiod".into(), |s| s.cert_provider.value.clone()),
            external_ca: settings.and_then(|s| s.external_ca.clone()),
            ca_server: settings.is_none_or(|s| s.ca_server.value),
            ca_addr: None,
            ca_certificates: settings.map_or(0, |s| s.ca_certificates),
            istiod_hosts: settings
                .map(|s| s.custom_hosts.value.clone())
                .unwrap_or_default(),
        }
    }
}

/// The trust domain of the primary's mesh config (`trustDomain`).
pub fn mesh_trust_domain(mesh: &str) -> Option<String> {
    let v = serde_saphyr::from_str::<serde_json::Value>(mesh).ok()?;
    v.get("trustDomain")?.as_str().map(str::to_string)
}

/// Where the primary CA's root is read from, for the commands that copy it.
#[derive(Debug, Clone, PartialEq)]
enum RootSource {
    Secret {
        name: &'static str,
        key: &'static str,
    },
    PrimaryConfigMap,
}

/// The primary CA as istiod loads it.
#[derive(Debug, Clone)]
struct PrimaryCa {
    /// e.g. `primary Secret cacerts root-cert.pem`.
    source: String,
    from: RootSource,
    pem: String,
    roots: Vec<CertInfo>,
    /// The signing CA (`ca-cert.pem` / `tls.crt`) of a plug-in CA.
    signing: Vec<CertInfo>,
    /// Its chain (`cert-chain.pem`).
    chain: Vec<CertInfo>,
    self_signed: bool,
}

impl PrimaryCa {
    /// The root that anchors what istiod signs: the top of its chain, found
    /// among the roots by fingerprint, else by its issuer's name.
    fn anchor(&self) -> Option<&CertInfo> {
        let top = self.chain.last().or(self.signing.last())?;
        self.roots
            .iter()
            .find(|r| r.sha256 == top.sha256)
            .or_else(|| self.roots.iter().find(|r| r.subject == top.issuer))
    }
}

enum Primary {
    Ca(PrimaryCa),
    /// cacerts has some files of a format and lacks others.
    Incomplete {
        missing: Vec<&'static str>,
        cacerts: CaSecret,
        tls: bool,
    },
    BadRoot(String),
    /// No CA Secret: an external CA.
    Unknown,
}

fn certs(pem: Option<&String>) -> Vec<CertInfo> {
    pem.and_then(|p| x509::parse_pem_chain(p).ok())
        .unwrap_or_default()
}

/// istiod's choice (istio_ca.go createIstioCA): a complete plug-in bundle in
/// cacerts (tls.crt/tls.key/ca.crt when tls.crt is there, else the four
/// istiod files); a partial one is refused; none at all means the
/// self-signed CA of istio-ca-secret.
fn primary_ca(f: &RootFacts) -> Primary {
    if let Ok(Some(c)) = &f.cacerts {
        let tls = c.has("tls.crt");
        let (required, root_key, signing_key): (&[&'static str], _, _) = if tls {
            (&["tls.crt", "tls.key", "ca.crt"], "ca.crt", "tls.crt")
        } else {
            (
                &[
                    "ca-cert.pem",
                    "ca-key.pem",
                    "root-cert.pem",
                    "cert-chain.pem",
                ],
                "root-cert.pem",
                "ca-cert.pem",
            )
        };
        let missing: Vec<&'static str> = required.iter().copied().filter(|k| !c.has(k)).collect();
        if missing.len() < required.len() {
            if !missing.is_empty() {
                return Primary::Incomplete {
                    missing,
                    cacerts: c.clone(),
                    tls,
                };
            }
            let source = format!("primary Secret cacerts {root_key}");
            let pem = c.certs.get(root_key).cloned().unwrap_or_default();
            let roots = certs(Some(&pem));
            if roots.is_empty() {
                return Primary::BadRoot(source);
            }
            let signing = certs(c.certs.get(signing_key));
            let chain = if tls {
                signing.clone()
            } else {
                certs(c.certs.get("cert-chain.pem"))
            };
            return Primary::Ca(PrimaryCa {
                source,
                from: RootSource::Secret {
                    name: "cacerts",
                    key: root_key,
                },
                pem,
                roots,
                signing,
                chain,
                self_signed: false,
            });
        }
    }
    if let Ok(Some(c)) = &f.istio_ca_secret {
        let source = "primary Secret istio-ca-secret ca-cert.pem".to_string();
        let pem = c.certs.get("ca-cert.pem").cloned().unwrap_or_default();
        let roots = certs(Some(&pem));
        if roots.is_empty() {
            return Primary::BadRoot(source);
        }
        return Primary::Ca(PrimaryCa {
            source,
            from: RootSource::Secret {
                name: "istio-ca-secret",
                key: "ca-cert.pem",
            },
            pem,
            signing: roots.clone(),
            chain: vec![],
            roots,
            self_signed: true,
        });
    }
    Primary::Unknown
}

fn summary(certs: &[CertInfo]) -> Vec<serde_json::Value> {
    certs
        .iter()
        .map(|c| json!({"subject": c.subject, "sha256": c.sha256, "not_after": rfc3339(c.not_after)}))
        .collect()
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(16)]
}

/// `'{.data.root-cert\.pem}'`: a data key as a quoted kubectl JSONPath.
fn jsonpath_data(key: &str) -> String {
    format!("'{{.data.{}}}'", key.replace('.', "\\."))
}

/// Copies the primary CA's root into `istio-ca-root-cert` of the remote's
/// Istio namespace, through a pipe (no file on disk).
/// `to`: the remote namespace written (the gateway's).
fn copy_root(from: &RootSource, s: &Settings, to: &str) -> String {
    let ns = shell_word(&s.istio_namespace);
    let to = shell_word(to);
    let read = match from {
        RootSource::Secret { name, key } => format!(
            "{} -n {ns} get secret {name} -o jsonpath={} | base64 -d",
            s.kubectl_primary(),
            jsonpath_data(key)
        ),
        RootSource::PrimaryConfigMap => format!(
            "{} -n {ns} get configmap {ROOT_CM} -o jsonpath={}",
            s.kubectl_primary(),
            jsonpath_data("root-cert.pem")
        ),
    };
    format!(
        "{read} | {r} -n {to} create configmap {ROOT_CM} --from-file=root-cert.pem=/dev/stdin --dry-run=client -o yaml | {r} -n {to} apply -f -",
        r = s.kubectl_remote()
    )
}

/// The form of istiod's own CA and the rule that picked it.
fn ca_form(ca: &PrimaryCa) -> (&'static str, &'static str) {
    match &ca.from {
        RootSource::Secret { key: "ca.crt", .. } => (
            "plug-in CA, cacerts in kubernetes.io/tls form (cert-manager)",
            "tls.crt is present, so istiod reads tls.crt (signing CA), tls.key and ca.crt (root) (detectSigningCABundleAndCRL, pilot/pkg/bootstrap/istio_ca.go)",
        ),
        RootSource::Secret {
            name: "cacerts", ..
        } => (
            "plug-in CA, cacerts in istiod's *.pem form",
            "no tls.crt, so istiod reads ca-cert.pem, ca-key.pem, root-cert.pem and cert-chain.pem (detectSigningCABundleAndCRL, pilot/pkg/bootstrap/istio_ca.go)",
        ),
        _ => (
            "istiod's self-signed CA",
            "cacerts holds no plug-in bundle, so istiod signs with Secret istio-ca-secret (ca-cert.pem is its root; createIstioCA, pilot/pkg/bootstrap/istio_ca.go)",
        ),
    }
}

/// Where a copy of the root is read from when the gateway's namespace lacks
/// it: istiod's CA, else the primary's ConfigMap, else (external CA) the
/// remote's own copy in the Istio namespace.
fn from_for_copy(external: &Option<(String, String)>, f: &RootFacts) -> Option<RootSource> {
    if external.is_none()
        && let Primary::Ca(ca) = primary_ca(f)
    {
        return Some(ca.from);
    }
    if !certs(f.primary_configmap.as_ref().ok().and_then(|c| c.as_ref())).is_empty() {
        return Some(RootSource::PrimaryConfigMap);
    }
    None
}

fn restart_istiod(s: &Settings) -> String {
    format!(
        "{} -n {} rollout restart deployment/istiod",
        s.kubectl_primary(),
        shell_word(&s.istio_namespace)
    )
}

pub fn judge(f: &RootFacts, s: &Settings) -> Outcome {
    let ns = &f.namespace;
    let gw_ns = &f.gateway_namespace;
    let mut out = Outcome::new();
    match &f.trust_domain {
        Some((td, from)) => out.ev(
            "trust_domain",
            json!({"value": td, "from": from, "aliases": f.trust_domain_aliases}),
        ),
        None => out.ev(
            "trust_domain",
            f.mesh
                .as_deref()
                .and_then(mesh_trust_domain)
                .unwrap_or_else(|| "cluster.local (default)".into()),
        ),
    };
    let reads = [
        f.cacerts.as_ref().err(),
        f.istio_ca_secret.as_ref().err(),
        f.primary_configmap.as_ref().err(),
        f.remote_configmap.as_ref().err(),
        f.remote_istio_ns_configmap
            .as_ref()
            .and_then(|r| r.as_ref().err()),
    ];
    if let Some(err) = reads.into_iter().flatten().next() {
        let what = err
            .strip_prefix("cannot read ")
            .and_then(|e| e.split(':').next())
            .unwrap_or("a CA object");
        return out.failing(
            Finding::new(&READ_REFUSED, format!("cannot read {what}"))
                .note(format!("the --primary context needs get on secrets and configmaps in {ns}; the --remote context get on configmaps in {ns}")),
            err.clone(),
        );
    }
    if let Ok(Some(c)) = &f.cacerts {
        out.ev("primary_cacerts_keys", &c.keys);
    }

    // 1. The primary CA.
    let external = external_ca(&f.ca_settings, ns);
    if let Some((form, rule)) = &external {
        out.ev(
            "ca_form",
            json!({"form": form, "rule": rule, "mesh_caCertificates": f.ca_settings.ca_certificates,
                   "not_checked": "the external CA's own root: meshtrace compares the remote's istio-ca-root-cert with the primary's instead"}),
        );
    }
    let primary = if external.is_some() {
        Primary::Unknown
    } else {
        primary_ca(f)
    };
    let ca = match primary {
        Primary::Incomplete {
            missing,
            cacerts,
            tls,
        } => return incomplete_cacerts(out, &missing, &cacerts, tls, s),
        Primary::BadRoot(src) => {
            return out.failing(
                Finding::new(&BAD_PRIMARY_ROOT, format!("{src} holds no certificate"))
                    .note("restore the CA's root certificate (PEM) in that Secret from your CA's files, then restart istiod"),
                format!("{src} holds no PEM CERTIFICATE block; expected the CA's root certificate"),
            );
        }
        Primary::Ca(ca) => {
            let (form, rule) = ca_form(&ca);
            out.ev("ca_form", json!({"form": form, "rule": rule}));
            if !ca.self_signed {
                out.ev("primary_signing_ca", summary(&ca.signing));
            }
            out.ev(
                "primary_ca_root",
                json!({"source": ca.source, "certificates": summary(&ca.roots)}),
            );
            Some(ca)
        }
        Primary::Unknown if external.is_some() => None,
        Primary::Unknown => {
            out.ev(
                "primary_ca_root",
                "not readable (no cacerts or istio-ca-secret in the primary: an external CA?)",
            );
            None
        }
    };
    let primary_cm = f.primary_configmap.clone().ok().flatten();
    let primary_cm_certs = certs(primary_cm.as_ref());
    // What a copy reads: the CA's root, else the primary's own ConfigMap.
    let from = match (&ca, primary_cm_certs.is_empty()) {
        (Some(ca), _) => Some(ca.from.clone()),
        (None, false) => Some(RootSource::PrimaryConfigMap),
        (None, true) => None,
    };

    // 2. What the remote gateway trusts: the ConfigMap of its own namespace.
    if let (Ok(None), Some(Ok(Some(istio_pem)))) =
        (&f.remote_configmap, &f.remote_istio_ns_configmap)
    {
        let finding = Finding::new(
            &NO_ROOT_IN_GATEWAY_NAMESPACE,
            format!("ConfigMap {gw_ns}/{ROOT_CM} is missing in the remote"),
        );
        let why = format!(
            "istiod writes {ROOT_CM} into every namespace it manages (namespacecontroller.go), skipping kube-public, kube-node-lease, local-path-storage and namespaces its discoverySelectors or ISTIO_WATCH_NAMESPACE leave out (istio/istio#41389); a copy made by hand into {ns} only does not reach {gw_ns}"
        );
        let _ = istio_pem;
        let finding = match &from_for_copy(&external, f) {
            Some(from) => finding.command(copy_root(from, s, gw_ns)).note(format!(
                "Copies the root into {gw_ns}, where the gateway mounts it from (volume istiod-ca-cert). {why}; the copy is needed again after each root rotation unless istiod manages {gw_ns}."
            )),
            None => finding.note(format!("Write the mesh root into {gw_ns}/{ROOT_CM} (key root-cert.pem). {why}.")),
        };
        return out.failing(
            finding,
            format!(
                "the remote has {ROOT_CM} in {ns} but not in the gateway's namespace {gw_ns}: the gateway's pod cannot mount it (`configmap \"{ROOT_CM}\" not found`) and has no root to verify istiod with"
            ),
        );
    }
    let Ok(Some(remote_pem)) = &f.remote_configmap else {
        return no_root_configmap(out, f, from.as_ref(), s);
    };
    let remote_certs = certs(Some(remote_pem));
    if remote_certs.is_empty() {
        let finding = Finding::new(
            &EMPTY_ROOT_CONFIGMAP,
            format!("the remote's {gw_ns}/{ROOT_CM} holds no certificate"),
        );
        let finding = match &from {
            Some(from) => finding
                .command(copy_root(from, s, gw_ns))
                .note("Writes the primary CA's root into the remote's ConfigMap."),
            None => finding.note("meshtrace found no root in the primary to copy: write your mesh root's PEM under key root-cert.pem"),
        };
        return out.failing(
            finding,
            format!(
                "remote ConfigMap {gw_ns}/{ROOT_CM} has no PEM certificate under key root-cert.pem"
            ),
        );
    }
    out.ev("remote_istio_ca_root_cert", summary(&remote_certs));
    out.ev("primary_istio_ca_root_cert", summary(&primary_cm_certs));
    let trusted = |c: &CertInfo| remote_certs.iter().any(|r| r.sha256 == c.sha256);

    // 3. The remote must trust the root that anchors what istiod signs.
    if let Some(ca) = &ca {
        let anchor = ca.anchor();
        let ok = match anchor {
            Some(a) => trusted(a),
            None => ca.roots.iter().any(trusted),
        };
        if !ok {
            let root = anchor.unwrap_or(&ca.roots[0]);
            return out.failing(
                Finding::new(&ROOT_MISMATCH, format!("the remote's {ROOT_CM} is not the primary CA's root"))
                    .command(copy_root(&ca.from, s, gw_ns))
                    .note(format!("Replaces the remote's {gw_ns}/{ROOT_CM} with the primary CA's root (from {}); the gateway reads it again within a minute or at its restart. A stale root after a CA rotation means istiod does not manage the remote's ConfigMaps: every namespace of the remote has its own {ROOT_CM}, and the copy is needed again after each rotation.", ca.source)),
                format!(
                    "the remote trusts {} (sha256 {}); the primary CA's root is {} (sha256 {}): the gateway will reject istiod (`x509: certificate signed by unknown authority`)",
                    remote_certs[0].subject,
                    short(&remote_certs[0].sha256),
                    root.subject,
                    short(&root.sha256)
                ),
            );
        }
    }

    // 4. Expiry of what the chain rests on.
    let mut checks: Vec<(&CertInfo, &str, bool)> = Vec::new();
    match &ca {
        Some(ca) => {
            // Without a known anchor, the root that lasts longest is the one the mesh can rest on.
            let root = ca
                .anchor()
                .or_else(|| ca.roots.iter().max_by_key(|c| c.not_after));
            checks.extend(root.map(|c| (c, "the primary CA's root", true)));
            if !ca.self_signed {
                checks.extend(
                    ca.signing
                        .iter()
                        .map(|c| (c, "the primary's signing CA", false)),
                );
            }
        }
        None => {
            let root = remote_certs.iter().max_by_key(|c| c.not_after);
            checks.extend(root.map(|c| (c, "the remote's trusted root", true)));
        }
    }
    let self_signed = ca.as_ref().is_some_and(|c| c.self_signed);
    for (c, what, is_root) in &checks {
        let left = c.not_after - s.now;
        if left <= 0 {
            let cause = if *is_root {
                &ROOT_EXPIRED
            } else {
                &SIGNING_CA_EXPIRED
            };
            return out.failing(
                Finding::new(
                    cause,
                    format!("{what} expired {}", x509::expiry_words(left)),
                )
                .note(rotation_note(*is_root, self_signed)),
                format!(
                    "{what} ({}) expired at {}; expected a certificate valid now",
                    c.subject,
                    rfc3339(c.not_after)
                ),
            );
        }
    }
    let within = s.warn_within.as_secs() as i64;
    for (c, what, is_root) in &checks {
        let left = c.not_after - s.now;
        if left < within {
            let cause = if *is_root {
                &ROOT_EXPIRING
            } else {
                &SIGNING_CA_EXPIRING
            };
            return out.warning(
                Finding::new(
                    cause,
                    format!("{what} expires {}", x509::expiry_words(left)),
                )
                .note(rotation_note(*is_root, self_signed)),
                format!(
                    "{what} ({}) expires at {}, within --warn-within {}",
                    c.subject,
                    rfc3339(c.not_after),
                    humantime::format_duration(s.warn_within)
                ),
            );
        }
    }

    // 5. The primary's own copy of the root.
    if !primary_cm_certs.is_empty() {
        let in_primary = |c: &CertInfo| primary_cm_certs.iter().any(|p| p.sha256 == c.sha256);
        let anchor = ca.as_ref().and_then(|c| c.anchor());
        let stale = match anchor {
            Some(a) => !in_primary(a),
            None => !remote_certs.iter().any(in_primary),
        };
        if stale {
            let finding = Finding::new(
                &PRIMARY_CONFIGMAP_DIFFERS,
                format!("the primary's {ROOT_CM} lacks the root the remote trusts"),
            );
            let finding = match anchor {
                Some(_) => finding.command(restart_istiod(s)).note(format!(
                    "istiod writes its CA's root into {ROOT_CM} of every namespace it manages; a stale one in the primary means istiod runs with an older CA: the restart loads the current one and rewrites them."
                )),
                None => finding.note("meshtrace cannot read the primary CA (an external CA?): compare both ConfigMaps with your CA's root and rewrite the stale one"),
            };
            return out.warning(
                finding,
                format!(
                    "the primary's {ROOT_CM} holds sha256 {}; the remote's holds sha256 {}",
                    short(&primary_cm_certs[0].sha256),
                    short(&remote_certs[0].sha256)
                ),
            );
        }
    }
    out.pass()
}

fn rotation_note(is_root: bool, self_signed: bool) -> String {
    match (is_root, self_signed) {
        (true, true) => "istiod rotates its self-signed root when CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE (20%) of its life is left: that it has not means rotation is off or failing; istiod's log says why.".into(),
        (true, false) => "Rotate the root before it expires: put a root-cert.pem holding the old and the new root in cacerts (so every cluster trusts both), then a signing CA from the new root, then drop the old root. Istio's docs on plugging in CA certificates describe the steps; meshtrace cannot make a CA.".into(),
        (false, _) => "Issue a new signing CA from the same root and plug it in: the four files (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem) into cacerts, then restart istiod. meshtrace cannot make a CA.".into(),
    }
}

fn incomplete_cacerts(
    out: Outcome,
    missing: &[&'static str],
    c: &CaSecret,
    tls: bool,
    s: &Settings,
) -> Outcome {
    let ns = shell_word(&s.istio_namespace);
    // cert-chain.pem is the signing CA followed by its root when the root
    // signed it directly (Istio's tools/certs: `cat ca-cert.pem root-cert.pem`);
    // then it can be rebuilt from the Secret itself.
    let signing = certs(c.certs.get("ca-cert.pem"));
    let roots = certs(c.certs.get("root-cert.pem"));
    let derivable =
        !tls && signing.len() == 1 && roots.iter().any(|r| r.subject == signing[0].issuer);
    let mut from_files = Vec::new();
    let entries: Vec<String> = missing
        .iter()
        .map(|k| {
            let value = if *k == "cert-chain.pem" && derivable {
                format!(
                    "$({} -n {ns} get secret cacerts -o go-template='{{{{index .data \"ca-cert.pem\" | base64decode}}}}{{{{\"\\n\"}}}}{{{{index .data \"root-cert.pem\" | base64decode}}}}' | base64 | tr -d '\\n')",
                    s.kubectl_primary()
                )
            } else {
                from_files.push(*k);
                format!("$(base64 < {k} | tr -d '\\n')")
            };
            format!("\\\"{k}\\\":\\\"{value}\\\"")
        })
        .collect();
    let patch = format!(
        "{} -n {ns} patch secret cacerts --type=merge -p \"{{\\\"data\\\":{{{}}}}}\"",
        s.kubectl_primary(),
        entries.join(",")
    );
    let files = if from_files.is_empty() {
        "cert-chain.pem is rebuilt from the Secret's own ca-cert.pem and root-cert.pem.".to_string()
    } else {
        format!(
            "The patch reads {} from the current directory: the files of your CA, which meshtrace cannot know or make{}.",
            from_files.join(", "),
            if from_files.contains(&"cert-chain.pem") {
                " (cert-chain.pem: ca-cert.pem followed by the intermediates up to the root)"
            } else {
                ""
            }
        )
    };
    let lacks = quote_list(&missing.iter().map(|k| k.to_string()).collect::<Vec<_>>());
    out.failing(
        Finding::new(
            &INCOMPLETE_CACERTS,
            format!("the primary's cacerts lacks {lacks}"),
        )
        .commands([patch, restart_istiod(s)])
        .note(format!(
            "Adds the missing entries to cacerts, keeping the others, then restarts istiod, which reads its CA files at start. {files}"
        )),
        format!(
            "primary Secret {}/cacerts has {}, lacks {lacks}: istiod refuses a partial plug-in CA (`failed to create an istiod CA: incomplete signing CA bundle detected`)",
            s.istio_namespace,
            quote_list(&c.keys)
        ),
    )
}

fn no_root_configmap(
    mut out: Outcome,
    f: &RootFacts,
    from: Option<&RootSource>,
    s: &Settings,
) -> Outcome {
    let ns = &f.namespace;
    let ann = match &f.remote_annotation {
        Some(Ok(a)) => a.clone(),
        _ => None,
    };
    out.ev("remote_namespace_annotation_controlPlaneClusters", &ann);
    out.ev(
        "primary_cluster_id",
        f.primary_cluster_id
            .as_ref()
            .map(|(v, src)| json!({"value": v, "source": src})),
    );
    out.ev("primary_EXTERNAL_ISTIOD", f.external_istiod);
    let pid = f.primary_cluster_id.as_ref().map(|(v, _)| v.as_str());
    // multicluster.go checkShouldLead: a comma-separated list, no spaces, or `*`.
    let selects = match (&ann, pid) {
        (Some(a), Some(id)) => Some(a.split(',').any(|c| c == "*" || c == id)),
        (Some(a), None) => a.split(',').any(|c| c == "*").then_some(true),
        (None, _) => Some(false),
    };
    let diagnosis = format!(
        "the remote has no ConfigMap {}/{ROOT_CM}: the gateway has no root to verify istiod with (`configmap \"{ROOT_CM}\" not found`); {ANNOTATION} = {}, primary cluster ID {}, EXTERNAL_ISTIOD {}",
        f.gateway_namespace,
        ann.as_deref().map_or("unset".into(), |a| format!("{a:?}")),
        pid.map_or("unknown".into(), |p| format!("{p:?}")),
        f.external_istiod
            .map_or("unknown".into(), |e| e.to_string())
    );
    let finding = Finding::new(
        &NO_ROOT_CONFIGMAP,
        format!(
            "ConfigMap {}/{ROOT_CM} is missing in the remote",
            f.gateway_namespace
        ),
    );
    let rbac = "its remote-secret identity may create configmaps in the remote (the remote profile's istio-reader role grants it)";
    let finding = match (pid, selects, f.external_istiod) {
        // istiod would manage the remote, once the annotation names it.
        (Some(id), Some(false), ext) if ext != Some(false) => finding
            .commands([
                format!(
                    "{} annotate namespace {} {ANNOTATION}={} --overwrite",
                    s.kubectl_remote(),
                    shell_word(ns),
                    shell_word(id)
                ),
                restart_istiod(s),
            ])
            .note(format!(
                "The annotation makes the primary istiod ({id:?}) write {ROOT_CM} into every namespace of the remote; istiod reads it only when it adds a cluster, hence the restart. That takes EXTERNAL_ISTIOD=true on the primary istiod ({}) and that {rbac}.",
                match ext {
                    Some(true) => "set",
                    _ => "meshtrace cannot see it",
                }
            )),
        _ => {
            let why = match (pid, selects, f.external_istiod) {
                (_, _, Some(false)) => "the primary istiod runs without EXTERNAL_ISTIOD=true, so it writes no ConfigMaps into remote clusters: the durable fix is values.pilot.env.EXTERNAL_ISTIOD=true in the primary's install".to_string(),
                (_, Some(true), _) => format!(
                    "the annotation names the primary, so check that {rbac}, and istiod's log for its namespace controller"
                ),
                _ => format!(
                    "meshtrace cannot tell the primary's cluster ID (istiod's CLUSTER_ID: `{} -n {} get deployment istiod -o yaml`): the durable fix is `{} annotate namespace {} {ANNOTATION}=<that ID> --overwrite`, then restarting istiod",
                    s.kubectl_primary(),
                    shell_word(ns),
                    s.kubectl_remote(),
                    shell_word(ns)
                ),
            };
            match from {
                Some(from) => finding.command(copy_root(from, s, &f.gateway_namespace)).note(format!(
                    "Copies the primary CA's root into the remote's {ns}/{ROOT_CM} now; the copy is needed again after each root rotation. Why istiod does not write it: {why}."
                )),
                None => finding.note(format!(
                    "meshtrace found no root in the primary to copy: write your mesh root's PEM under key root-cert.pem. Why istiod does not write it: {why}."
                )),
            }
        }
    };
    out.failing(finding, diagnosis)
}

/// The CA's objects are read once the gateway is known; judged (and the
/// roots handed on) once control-plane said who signs.
pub async fn run(ctx: &Ctx) -> Staged {
    let mut facts = gather(ctx).await;
    Staged::judge(move |ctx| {
        let settings = ctx.facts().istiod_settings.clone();
        with_settings(&mut facts, settings.as_deref());
        judged(ctx, facts)
    })
}

fn judged(ctx: &Ctx, facts: RootFacts) -> Outcome {
    let out = judge(&facts, &Settings::of(ctx));
    // What later steps read: the trust domain, and both roots when they parse.
    let td = facts
        .trust_domain
        .as_ref()
        .map(|(t, _)| t.clone())
        .or_else(|| facts.mesh.as_deref().and_then(mesh_trust_domain));
    let primary = match primary_ca(&facts) {
        Primary::Ca(ca) => Some(ca.pem),
        _ => None,
    };
    let remote = facts
        .remote_configmap
        .clone()
        .ok()
        .flatten()
        .filter(|p| !certs(Some(p)).is_empty());
    let mut f = ctx.facts();
    f.trust_domain = td;
    f.primary_root_pem = primary;
    f.remote_root_pem = remote;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::pki::Ca;
    use crate::model::Status;
    use k8s_openapi::ByteString;

    const DAY: i64 = 86400;

    /// The settings at the real clock (rcgen's certificates are made at it),
    /// moved by `shift` seconds.
    fn settings(shift: i64) -> Settings {
        let mut s = Settings::for_tests();
        s.now = super::super::now_unix() + shift;
        s
    }

    /// A Secret as the API server returns it, private key included.
    fn secret(name: &str, data: &[(&str, &str)]) -> CaSecret {
        let s: Secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("istio-system".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        CaSecret::of(&s)
    }

    struct Mesh {
        root: Ca,
        inter: Ca,
    }

    fn mesh(root_days: i64, inter_days: i64) -> Mesh {
        let root = Ca::root("mesh root", "cluster.local", root_days);
        let inter = root.intermediate("mesh intermediate", "cluster.local", inter_days);
        Mesh { root, inter }
    }

    /// Istio's four plug-in files (tools/certs), minus `without`.
    fn cacerts(m: &Mesh, without: &[&str]) -> CaSecret {
        let chain = format!("{}{}", m.inter.cert_pem, m.root.cert_pem);
        let all = [
            ("ca-cert.pem", m.inter.cert_pem.as_str()),
            ("ca-key.pem", m.inter.key_pem_for_lab_secret()),
            ("root-cert.pem", m.root.cert_pem.as_str()),
            ("cert-chain.pem", chain.as_str()),
        ];
        let kept: Vec<(&str, &str)> = all
            .into_iter()
            .filter(|(k, _)| !without.contains(k))
            .collect();
        secret("cacerts", &kept)
    }

    /// A healthy primary-remote pair with a plug-in CA: both ConfigMaps hold the root.
    fn facts(m: &Mesh) -> RootFacts {
        RootFacts {
            namespace: "istio-system".into(),
            cacerts: Ok(Some(cacerts(m, &[]))),
            istio_ca_secret: Ok(None),
            primary_configmap: Ok(Some(m.root.cert_pem.clone())),
            remote_configmap: Ok(Some(m.root.cert_pem.clone())),
            gateway_namespace: "istio-system".into(),
            remote_istio_ns_configmap: None,
            ca_settings: CaSettings {
                cert_provider: "istiod".into(),
                ca_server: true,
                ..Default::default()
            },
            trust_domain: None,
            trust_domain_aliases: vec![],
            mesh: Some("trustDomain: cluster.local\ndefaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n".into()),
            remote_annotation: None,
            primary_cluster_id: None,
            external_istiod: None,
        }
    }

    fn missing_cm(
        f: RootFacts,
        ann: Option<&str>,
        pid: Option<&str>,
        ext: Option<bool>,
    ) -> RootFacts {
        RootFacts {
            remote_configmap: Ok(None),
            remote_annotation: Some(Ok(ann.map(str::to_string))),
            primary_cluster_id: pid
                .map(|p| (p.to_string(), "primary istiod CLUSTER_ID".to_string())),
            external_istiod: ext,
            ..f
        }
    }

    const COPY_FROM_CACERTS: &str = r"kubectl --context ctx-primary -n istio-system get secret cacerts -o jsonpath='{.data.root-cert\.pem}' | base64 -d | kubectl --context ctx-remote -n istio-system create configmap istio-ca-root-cert --from-file=root-cert.pem=/dev/stdin --dry-run=client -o yaml | kubectl --context ctx-remote -n istio-system apply -f -";
    const RESTART: &str =
        "kubectl --context ctx-primary -n istio-system rollout restart deployment/istiod";

    struct Row {
        name: &'static str,
        facts: RootFacts,
        shift: i64,
        status: Status,
        code: Option<&'static str>,
        /// Parts each command must hold, in order.
        commands: Vec<Vec<&'static str>>,
        note: &'static str,
    }

    fn row(
        name: &'static str,
        facts: RootFacts,
        status: Status,
        code: Option<&'static str>,
    ) -> Row {
        Row {
            name,
            facts,
            shift: 0,
            status,
            code,
            commands: vec![],
            note: "",
        }
    }

    #[test]
    fn judge_table() {
        let m = mesh(3650, 365);
        let old = mesh(3650, 365);
        let selfsigned = Ca::root("istio self-signed root", "cluster.local", 3650);
        let self_facts = RootFacts {
            cacerts: Ok(None),
            istio_ca_secret: Ok(Some(secret(
                "istio-ca-secret",
                &[
                    ("ca-cert.pem", &selfsigned.cert_pem),
                    ("ca-key.pem", selfsigned.key_pem_for_lab_secret()),
                    ("cert-chain.pem", ""),
                    ("key.pem", ""),
                    ("root-cert.pem", ""),
                ],
            ))),
            primary_configmap: Ok(Some(selfsigned.cert_pem.clone())),
            remote_configmap: Ok(Some(selfsigned.cert_pem.clone())),
            ..facts(&m)
        };
        let tls = secret(
            "cacerts",
            &[
                ("tls.crt", &m.inter.cert_pem),
                ("tls.key", m.inter.key_pem_for_lab_secret()),
                ("ca.crt", &m.root.cert_pem),
            ],
        );
        // Mid-rotation: cacerts trusts the old and the new root.
        let mut rotating = cacerts(&m, &[]);
        rotating.certs.insert(
            "root-cert.pem".into(),
            format!("{}{}", old.root.cert_pem, m.root.cert_pem),
        );
        let external = RootFacts {
            cacerts: Ok(None),
            ..facts(&m)
        };
        let csr_addr = RootFacts {
            cacerts: Ok(Some(cacerts(&old, &[]))),
            ca_settings: CaSettings {
                ca_addr: Some("cert-manager-istio-csr.cert-manager.svc:443".into()),
                ..facts(&m).ca_settings
            },
            ..facts(&m)
        };
        let no_ca_server = RootFacts {
            cacerts: Ok(Some(cacerts(&m, &["cert-chain.pem"]))),
            ca_settings: CaSettings {
                ca_server: false,
                ..facts(&m).ca_settings
            },
            ..facts(&m)
        };
        let ra = RootFacts {
            ca_settings: CaSettings {
                external_ca: Some("ISTIOD_RA_KUBERNETES_API".into()),
                cert_provider: "k8s.io/example.com/istio".into(),
                ca_certificates: 1,
                ..facts(&m).ca_settings
            },
            ..facts(&m)
        };
        let in_ingress = |f: RootFacts, remote: Result<Option<String>, String>| RootFacts {
            gateway_namespace: "istio-ingress".into(),
            remote_configmap: remote,
            remote_istio_ns_configmap: Some(f.remote_configmap.clone()),
            ..f
        };
        let both_roots = format!("{}{}", old.root.cert_pem, m.root.cert_pem);
        let rows = vec![
            row("plug-in CA, both clusters trust its root", facts(&m), Status::Pass, None),
            row("self-signed CA", self_facts.clone(), Status::Pass, None),
            row("kubernetes.io/tls cacerts", RootFacts { cacerts: Ok(Some(tls.clone())), ..facts(&m) }, Status::Pass, None),
            row("a rotation bundle anchors on the root that signed the CA", RootFacts { cacerts: Ok(Some(rotating)), ..facts(&m) }, Status::Pass, None),
            row("an external CA: nothing to compare", external.clone(), Status::Pass, None),
            row("the remote trusts the old and the new root (rotation): any root that verifies", RootFacts { remote_configmap: Ok(Some(both_roots.clone())), ..facts(&m) }, Status::Pass, None),
            row("istio-csr at CA_ADDR: cacerts is not what signs, no false alarm", csr_addr.clone(), Status::Pass, None),
            Row {
                commands: vec![vec![COPY_FROM_CACERTS]],
                ..row(
                    "an external istiod's public name on 15012 is istiod: its root is compared",
                    RootFacts {
                        remote_configmap: Ok(Some(old.root.cert_pem.clone())),
                        ca_settings: CaSettings { ca_addr: Some("mesh.example.com:15012".into()), ..facts(&m).ca_settings },
                        ..facts(&m)
                    },
                    Status::Fail,
                    Some("root-of-trust/root-mismatch"),
                )
            },
            row("ENABLE_CA_SERVER=false: a partial cacerts is not read", no_ca_server.clone(), Status::Pass, None),
            row("istiod as RA: the remote and the primary ConfigMap agree", ra.clone(), Status::Pass, None),
            Row {
                note: "external CA",
                ..row("istiod as RA: the primary ConfigMap differs", RootFacts { primary_configmap: Ok(Some(old.root.cert_pem.clone())), ..ra.clone() }, Status::Warn, Some("root-of-trust/primary-configmap-differs"))
            },
            row("gateway in its own namespace, which has the root", in_ingress(facts(&m), Ok(Some(m.root.cert_pem.clone()))), Status::Pass, None),
            Row {
                commands: vec![vec![r"get secret cacerts -o jsonpath='{.data.root-cert\.pem}' | base64 -d | kubectl --context ctx-remote -n istio-ingress create configmap istio-ca-root-cert", "kubectl --context ctx-remote -n istio-ingress apply -f -"]],
                note: "discoverySelectors",
                ..row("the gateway's namespace lacks the root, istio-system has it", in_ingress(facts(&m), Ok(None)), Status::Fail, Some("root-of-trust/no-root-in-gateway-namespace"))
            },
            Row {
                commands: vec![vec![r"kubectl --context ctx-primary -n istio-system get configmap istio-ca-root-cert -o jsonpath='{.data.root-cert\.pem}' | kubectl --context ctx-remote -n istio-ingress create configmap"]],
                note: "volume istiod-ca-cert",
                ..row("an external CA, the gateway's namespace lacks the root", in_ingress(csr_addr.clone(), Ok(None)), Status::Fail, Some("root-of-trust/no-root-in-gateway-namespace"))
            },
            Row {
                commands: vec![vec!["kubectl --context ctx-remote -n istio-ingress create configmap istio-ca-root-cert"]],
                note: "every namespace of the remote",
                ..row("the gateway's namespace trusts an old root", in_ingress(facts(&m), Ok(Some(old.root.cert_pem.clone()))), Status::Fail, Some("root-of-trust/root-mismatch"))
            },
            row(
                "cacerts without any plug-in file is no bundle: the self-signed CA",
                RootFacts { cacerts: Ok(Some(secret("cacerts", &[("README", "x")]))), ..self_facts.clone() },
                Status::Pass,
                None,
            ),
            Row {
                commands: vec![
                    vec![
                        r#"kubectl --context ctx-primary -n istio-system patch secret cacerts --type=merge -p "{\"data\":{\"cert-chain.pem\":\"$(kubectl --context ctx-primary -n istio-system get secret cacerts -o go-template='{{index .data "ca-cert.pem" | base64decode}}{{"\n"}}{{index .data "root-cert.pem" | base64decode}}' | base64 | tr -d '\n')\"}}""#,
                    ],
                    vec![RESTART],
                ],
                note: "rebuilt from the Secret's own",
                ..row("cacerts lacks cert-chain.pem (the lab's fault)", RootFacts { cacerts: Ok(Some(cacerts(&m, &["cert-chain.pem"]))), ..facts(&m) }, Status::Fail, Some("root-of-trust/incomplete-cacerts"))
            },
            Row {
                commands: vec![vec![r#"\"ca-key.pem\":\"$(base64 < ca-key.pem | tr -d '\n')\""#, r#"\"cert-chain.pem\":\"$(kubectl"#], vec![RESTART]],
                note: "reads ca-key.pem from the current directory",
                ..row("cacerts lacks the key and the chain", RootFacts { cacerts: Ok(Some(cacerts(&m, &["ca-key.pem", "cert-chain.pem"]))), ..facts(&m) }, Status::Fail, Some("root-of-trust/incomplete-cacerts"))
            },
            Row {
                commands: vec![vec![r#"\"ca.crt\":\"$(base64 < ca.crt | tr -d '\n')\""#], vec![RESTART]],
                note: "",
                ..row(
                    "a tls cacerts lacks ca.crt",
                    RootFacts {
                        cacerts: Ok(Some(secret("cacerts", &[("tls.crt", &m.inter.cert_pem), ("tls.key", m.inter.key_pem_for_lab_secret())]))),
                        ..facts(&m)
                    },
                    Status::Fail,
                    Some("root-of-trust/incomplete-cacerts"),
                )
            },
            Row {
                note: "restore the CA's root",
                ..row(
                    "the root is no certificate",
                    RootFacts { cacerts: Ok(Some({ let mut c = cacerts(&m, &[]); c.certs.insert("root-cert.pem".into(), "not a pem".into()); c })), ..facts(&m) },
                    Status::Fail,
                    Some("root-of-trust/bad-primary-root"),
                )
            },
            Row {
                note: "get on secrets and configmaps",
                ..row(
                    "a read is refused",
                    RootFacts { cacerts: Err("cannot read primary Secret cacerts: 403 Forbidden: secrets \"cacerts\" is forbidden".into()), ..facts(&m) },
                    Status::Fail,
                    Some("root-of-trust/read-refused"),
                )
            },
            Row {
                commands: vec![
                    vec!["kubectl --context ctx-remote annotate namespace istio-system topology.istio.io/controlPlaneClusters=primary --overwrite"],
                    vec![RESTART],
                ],
                note: "only when it adds a cluster",
                ..row("no ConfigMap, no annotation", missing_cm(facts(&m), None, Some("primary"), Some(true)), Status::Fail, Some("root-of-trust/no-root-configmap"))
            },
            Row {
                commands: vec![vec!["topology.istio.io/controlPlaneClusters=cluster1 --overwrite"], vec![RESTART]],
                note: "",
                ..row("no ConfigMap, the annotation names another primary", missing_cm(facts(&m), Some("cluster9"), Some("cluster1"), None), Status::Fail, Some("root-of-trust/no-root-configmap"))
            },
            Row {
                commands: vec![vec![COPY_FROM_CACERTS]],
                note: "annotate namespace istio-system topology.istio.io/controlPlaneClusters=<that ID>",
                ..row("no ConfigMap, primary ID unknown (the lab's fault)", missing_cm(facts(&m), Some("primary"), None, None), Status::Fail, Some("root-of-trust/no-root-configmap"))
            },
            Row {
                commands: vec![vec![COPY_FROM_CACERTS]],
                note: "values.pilot.env.EXTERNAL_ISTIOD=true",
                ..row("no ConfigMap, istiod not external", missing_cm(facts(&m), None, Some("primary"), Some(false)), Status::Fail, Some("root-of-trust/no-root-configmap"))
            },
            Row {
                commands: vec![vec![r"kubectl --context ctx-primary -n istio-system get configmap istio-ca-root-cert -o jsonpath='{.data.root-cert\.pem}' | kubectl --context ctx-remote"]],
                note: "the annotation names the primary",
                ..row("no ConfigMap, external CA: copy the primary's ConfigMap", missing_cm(external.clone(), Some("*"), None, Some(true)), Status::Fail, Some("root-of-trust/no-root-configmap"))
            },
            Row {
                note: "no root in the primary to copy",
                ..row(
                    "no ConfigMap and no root anywhere",
                    missing_cm(RootFacts { primary_configmap: Ok(None), ..external.clone() }, Some("primary"), Some("primary"), Some(true)),
                    Status::Fail,
                    Some("root-of-trust/no-root-configmap"),
                )
            },
            Row {
                commands: vec![vec![COPY_FROM_CACERTS]],
                note: "every namespace of the remote",
                ..row("the remote trusts an old root (the lab's stale-root)", RootFacts { remote_configmap: Ok(Some(old.root.cert_pem.clone())), ..facts(&m) }, Status::Fail, Some("root-of-trust/root-mismatch"))
            },
            Row {
                commands: vec![vec![r"get secret istio-ca-secret -o jsonpath='{.data.ca-cert\.pem}' | base64 -d |"]],
                ..row("the remote trusts another root than the self-signed CA", RootFacts { remote_configmap: Ok(Some(old.root.cert_pem.clone())), ..self_facts.clone() }, Status::Fail, Some("root-of-trust/root-mismatch"))
            },
            Row {
                commands: vec![vec![COPY_FROM_CACERTS]],
                ..row("the remote ConfigMap has no certificate", RootFacts { remote_configmap: Ok(Some(String::new())), ..facts(&m) }, Status::Fail, Some("root-of-trust/empty-root-configmap"))
            },
            Row {
                shift: 2 * DAY,
                note: "Rotate the root",
                ..row("the root expired", facts(&mesh(1, 365)), Status::Fail, Some("root-of-trust/root-expired"))
            },
            Row {
                shift: 2 * DAY,
                note: "new signing CA",
                ..row("the signing CA expired", facts(&mesh(3650, 1)), Status::Fail, Some("root-of-trust/signing-ca-expired"))
            },
            Row { note: "Rotate the root", ..row("the root expires in 3 days (the lab's root-expiring)", facts(&mesh(3, 365)), Status::Warn, Some("root-of-trust/root-expiring")) },
            row("the signing CA expires in 3 days", facts(&mesh(3650, 3)), Status::Warn, Some("root-of-trust/signing-ca-expiring")),
            Row {
                note: "CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE",
                ..row(
                    "the self-signed root expires in 3 days",
                    {
                        let r = Ca::root("istio self-signed root", "cluster.local", 3);
                        RootFacts {
                            istio_ca_secret: Ok(Some(secret("istio-ca-secret", &[("ca-cert.pem", &r.cert_pem)]))),
                            primary_configmap: Ok(Some(r.cert_pem.clone())),
                            remote_configmap: Ok(Some(r.cert_pem.clone())),
                            ..self_facts.clone()
                        }
                    },
                    Status::Warn,
                    Some("root-of-trust/root-expiring"),
                )
            },
            row(
                "an external CA whose remote root expires",
                RootFacts { remote_configmap: Ok(Some(mesh(3, 365).root.cert_pem)), primary_configmap: Ok(None), ..external.clone() },
                Status::Warn,
                Some("root-of-trust/root-expiring"),
            ),
            Row {
                commands: vec![vec![RESTART]],
                note: "older CA",
                ..row("the primary's ConfigMap is stale", RootFacts { primary_configmap: Ok(Some(old.root.cert_pem.clone())), ..facts(&m) }, Status::Warn, Some("root-of-trust/primary-configmap-differs"))
            },
            Row {
                note: "external CA",
                ..row(
                    "an external CA's ConfigMaps differ",
                    RootFacts { primary_configmap: Ok(Some(old.root.cert_pem.clone())), ..external.clone() },
                    Status::Warn,
                    Some("root-of-trust/primary-configmap-differs"),
                )
            },
        ];
        let mut seen = Vec::new();
        for r in rows {
            seen.extend(r.code);
            let s = settings(r.shift);
            let out = judge(&r.facts, &s);
            assert_eq!(
                out.status,
                Some(r.status),
                "{}: {:?}",
                r.name,
                out.diagnosis
            );
            let f = out.finding.as_ref();
            assert_eq!(
                f.map(|f| f.code.as_str()),
                r.code,
                "{}: {:?}",
                r.name,
                out.diagnosis
            );
            let cmds = f.map(|f| f.commands.clone()).unwrap_or_default();
            assert_eq!(cmds.len(), r.commands.len(), "{}: {cmds:#?}", r.name);
            for (c, parts) in cmds.iter().zip(&r.commands) {
                for part in parts {
                    assert!(c.contains(part), "{}:\n{c}\nlacks\n{part}", r.name);
                }
                assert!(
                    !super::super::gateway::has_placeholder(c),
                    "{}: placeholder in {c:?}",
                    r.name
                );
            }
            let note = f.and_then(|f| f.note.clone()).unwrap_or_default();
            assert!(
                note.contains(r.note),
                "{}: {note:?} lacks {:?}",
                r.name,
                r.note
            );
            if let Some(f) = f {
                assert!(
                    f.summary.chars().count() <= 100,
                    "{}: {}",
                    r.name,
                    f.summary
                );
                let d = out.diagnosis.clone().unwrap_or_default();
                assert!(
                    d.chars().count() <= 300,
                    "{}: {} chars: {d}",
                    r.name,
                    d.chars().count()
                );
            }
            // The CA's private key is never in a result.
            assert!(!format!("{out:?}").contains("PRIVATE KEY"), "{}", r.name);
        }
        for c in CAUSES {
            assert!(seen.contains(&c.code().as_str()), "no row for {}", c.code());
        }
    }

    #[test]
    fn facts_keep_no_private_key_and_the_trust_domain_is_read() {
        let m = mesh(3650, 365);
        let f = facts(&m);
        assert!(!format!("{f:?}").contains("PRIVATE KEY"));
        assert_eq!(f.cacerts.as_ref().unwrap().as_ref().unwrap().keys.len(), 4);
        assert_eq!(
            mesh_trust_domain(f.mesh.as_deref().unwrap()).as_deref(),
            Some("cluster.local")
        );
        let out = judge(&f, &settings(0));
        assert_eq!(out.evidence["trust_domain"], "cluster.local");
        assert!(
            out.evidence["ca_form"]["rule"]
                .as_str()
                .unwrap()
                .contains("cert-chain.pem")
        );
        assert_eq!(
            out.evidence["primary_ca_root"]["source"],
            "primary Secret cacerts root-cert.pem"
        );
        let tls = RootFacts {
            cacerts: Ok(Some(secret(
                "cacerts",
                &[
                    ("tls.crt", &m.inter.cert_pem),
                    ("tls.key", m.inter.key_pem_for_lab_secret()),
                    ("ca.crt", &m.root.cert_pem),
                ],
            ))),
            trust_domain: Some(("example.org".into(), "ConfigMap istio trustDomain".into())),
            trust_domain_aliases: vec!["cluster.local".into()],
            ..facts(&m)
        };
        let out = judge(&tls, &settings(0));
        assert!(
            out.evidence["ca_form"]["form"]
                .as_str()
                .unwrap()
                .contains("kubernetes.io/tls"),
            "{:?}",
            out.evidence
        );
        assert!(
            out.evidence["ca_form"]["rule"]
                .as_str()
                .unwrap()
                .contains("tls.crt is present")
        );
        assert_eq!(out.evidence["trust_domain"]["value"], "example.org");
        assert_eq!(out.evidence["trust_domain"]["aliases"][0], "cluster.local");
        let csr = RootFacts {
            ca_settings: CaSettings {
                ca_addr: Some("cert-manager-istio-csr.cert-manager.svc:443".into()),
                ..facts(&m).ca_settings
            },
            ..facts(&m)
        };
        let out = judge(&csr, &settings(0));
        assert!(
            out.evidence["ca_form"]["form"]
                .as_str()
                .unwrap()
                .contains("cert-manager-istio-csr")
        );
        assert!(out.evidence["ca_form"]["not_checked"].is_string());
    }

    #[test]
    fn the_labs_cacerts_forms_are_judged_as_istiod_reads_them() {
        use crate::lab::world::{CaForm, cacerts_secret};
        let m = mesh(3650, 365);
        for (form, source) in [
            (CaForm::Pem, "primary Secret cacerts root-cert.pem"),
            (CaForm::Tls, "primary Secret cacerts ca.crt"),
        ] {
            let f = RootFacts {
                cacerts: Ok(Some(CaSecret::of(&cacerts_secret(
                    form, &m.inter, &m.root, false,
                )))),
                ..facts(&m)
            };
            let out = judge(&f, &settings(0));
            assert_eq!(
                out.status,
                Some(Status::Pass),
                "{form:?}: {:?}",
                out.diagnosis
            );
            assert_eq!(out.evidence["primary_ca_root"]["source"], source);
            let partial = RootFacts {
                cacerts: Ok(Some(CaSecret::of(&cacerts_secret(
                    form, &m.inter, &m.root, true,
                )))),
                ..facts(&m)
            };
            let out = judge(&partial, &settings(0));
            assert_eq!(
                out.finding.map(|f| f.code),
                Some("root-of-trust/incomplete-cacerts".to_string()),
                "{form:?}"
            );
        }
    }

    #[test]
    fn istiod_settings_follow_istiods_defaults() {
        let d = |env: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": "istiod", "namespace": "istio-system"},
                "spec": {"selector": {"matchLabels": {"app": "istiod"}},
                         "template": {"spec": {"containers": [{"name": "discovery", "env": env}]}}}
            }))
            .unwrap()
        };
        let (id, ext) = istiod_settings(&d(
            json!([{"name": "CLUSTER_ID", "value": "cluster1"}, {"name": "EXTERNAL_ISTIOD", "value": "true"}]),
        ));
        assert_eq!(id.map(|i| i.0).as_deref(), Some("cluster1"));
        assert_eq!(ext, Some(true));
        let (id, ext) = istiod_settings(&d(json!([])));
        assert_eq!(id.map(|i| i.0).as_deref(), Some("Kubernetes"));
        assert_eq!(ext, Some(false));
        let (id, _) = istiod_settings(&d(
            json!([{"name": "CLUSTER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
        ));
        assert_eq!(id, None);
    }
}
