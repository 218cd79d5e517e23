//! `control-plane`: istiod as the primary runs it. Reads every istiod
//! Deployment (each revision, `istio.io/rev`), its env as Kubernetes gives it
//! to the process and its args, and the revision's mesh config; picks the
//! revision the gateway belongs to; and publishes istiod's settings, which
//! the later steps judge with instead of guessing Istio's defaults.

use super::istiod::{EnvValue, IstiodDeployment, IstiodDeployments, read_istiod_deployments};
use super::{Settings, kube_err};
use crate::engine::{Ctx, Outcome};
use crate::findings::{Finding, shell_word};
use crate::model::StepId;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::Api;
use serde_json::{Value, json};
use std::collections::BTreeMap;

crate::causes! { StepId::ControlPlane;
    UNREADABLE = "unreadable", "istiod's Deployments in the primary cannot be read, so its settings are unknown";
    UNKNOWN_REVISION = "unknown-revision", "no istiod in the primary runs the revision asked for";
    GATEWAY_REVISION_MISSING = "gateway-revision-missing", "the gateway belongs to a revision no istiod in the primary runs";
    REVISION_AMBIGUOUS = "revision-ambiguous", "several istiod revisions run in the primary and nothing says which is the gateway's";
    MESH_CONFIG_INVALID = "mesh-config-invalid", "istiod's mesh config does not parse";
}

/// A setting of istiod and where its value came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Setting<T> {
    pub value: T,
    pub from: String,
}

fn setting<T>(value: T, from: impl Into<String>) -> Setting<T> {
    Setting {
        value,
        from: from.into(),
    }
}

/// What the mesh config (`mesh` of ConfigMap `istio[-<rev>]`) sets that
/// meshtrace judges with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MeshConfig {
    pub trust_domain: Option<String>,
    pub trust_domain_aliases: Vec<String>,
    /// `caCertificates`: extra roots istiod distributes (pem or SPIFFE bundles).
    pub ca_certificates: usize,
    pub discovery_address: Option<String>,
}

/// Parses a mesh config as istiod does (YAML into MeshConfig; unknown keys
/// are refused by istiod, meshtrace only reads the few it needs).
pub fn parse_mesh(yaml: &str) -> Result<MeshConfig, String> {
    if yaml.trim().is_empty() {
        return Ok(MeshConfig::default());
    }
    let v: Value =
        serde_saphyr::from_str(yaml).map_err(|e| crate::inspect::kubeconfig::yaml_words(&e))?;
    let str_at = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(MeshConfig {
        trust_domain: str_at(&v, "trustDomain").filter(|t| !t.is_empty()),
        trust_domain_aliases: v
            .get("trustDomainAliases")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        ca_certificates: v
            .get("caCertificates")
            .and_then(Value::as_array)
            .map(Vec::len)
            .unwrap_or(0),
        discovery_address: v
            .get("defaultConfig")
            .and_then(|d| str_at(d, "discoveryAddress"))
            .filter(|a| !a.is_empty()),
    })
}

/// istiod's settings that change meshtrace's verdicts, each with its source.
#[derive(Debug, Clone, PartialEq)]
pub struct IstiodSettings {
    pub revision: Setting<String>,
    /// The Deployment these were read from; None when istiod is not a
    /// Deployment in the primary (Istio's defaults are then assumed).
    pub deployment: Option<IstiodDeployment>,
    pub cluster_id: Setting<String>,
    /// `TOKEN_AUDIENCES`, split on commas as istiod does (no trimming).
    pub token_audiences: Setting<Vec<String>>,
    /// `PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS`, split on commas.
    pub insecure_kubeconfig_options: Setting<Vec<String>>,
    pub external_istiod: Setting<bool>,
    /// `ISTIOD_CUSTOM_HOST`, split on commas.
    pub custom_hosts: Setting<Vec<String>>,
    pub trust_domain: Setting<String>,
    pub trust_domain_aliases: Vec<String>,
    pub ca_certificates: usize,
    /// The ConfigMap read as the mesh config, and what it held.
    pub mesh_config: Setting<Option<String>>,
    pub discovery_address: Option<String>,
    /// `PILOT_CERT_PROVIDER`, `EXTERNAL_CA`, `ENABLE_CA_SERVER`: who signs.
    pub cert_provider: Setting<String>,
    pub external_ca: Option<String>,
    pub ca_server: Setting<bool>,
    /// Names that are set in the env but that meshtrace could not resolve.
    pub unresolved: Vec<String>,
}

impl IstiodSettings {
    /// Istio's defaults, for an istiod meshtrace cannot read.
    pub fn defaults(why: &str) -> IstiodSettings {
        let d = |what: &str| format!("Istio's default ({why}; {what})");
        IstiodSettings {
            revision: setting("default".into(), d("revision")),
            deployment: None,
            cluster_id: setting("Kubernetes".into(), d("CLUSTER_ID")),
            token_audiences: setting(vec!["istio-ca".into()], d("TOKEN_AUDIENCES")),
            insecure_kubeconfig_options: setting(vec![], d("no insecure kubeconfig options")),
            external_istiod: setting(false, d("EXTERNAL_ISTIOD")),
            custom_hosts: setting(vec![], d("ISTIOD_CUSTOM_HOST")),
            trust_domain: setting("cluster.local".into(), d("trustDomain")),
            trust_domain_aliases: vec![],
            ca_certificates: 0,
            mesh_config: setting(None, why.to_string()),
            discovery_address: None,
            cert_provider: setting("istiod".into(), d("PILOT_CERT_PROVIDER")),
            external_ca: None,
            ca_server: setting(true, d("ENABLE_CA_SERVER")),
            unresolved: vec![],
        }
    }

    /// Is `aud` one of the audiences istiod's TokenReview accepts?
    pub fn accepts_audience(&self, aud: &str) -> bool {
        self.token_audiences.value.iter().any(|a| a == aud)
    }

    /// The DNS names istiod puts in the serving certificate it issues itself:
    /// ISTIOD_CUSTOM_HOST, then istiod, istiod-remote, istio-pilot and
    /// istiod-<rev> in its namespace (getDNSNames, pilot/pkg/bootstrap/server.go).
    pub fn serving_names(&self, ns: &str) -> Vec<String> {
        let mut hosts = vec!["istiod", "istiod-remote", "istio-pilot"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        let rev = &self.revision.value;
        if !rev.is_empty() && rev != "default" {
            hosts.push(format!("istiod-{rev}"));
        }
        let mut names: Vec<String> = self.custom_hosts.value.clone();
        names.extend(hosts.iter().map(|h| format!("{h}.{ns}.svc")));
        names.sort();
        names.dedup();
        names
    }

    pub fn evidence(&self) -> Value {
        json!({
            "revision": self.revision,
            "deployment": self.deployment.as_ref().map(|d| d.name.clone()),
            "pods": self.deployment.as_ref().map(|d| d.pods.clone()).unwrap_or_default(),
            "CLUSTER_ID": self.cluster_id,
            "TOKEN_AUDIENCES": self.token_audiences,
            "PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS": self.insecure_kubeconfig_options,
            "EXTERNAL_ISTIOD": self.external_istiod,
            "ISTIOD_CUSTOM_HOST": self.custom_hosts,
            "PILOT_CERT_PROVIDER": self.cert_provider,
            "EXTERNAL_CA": self.external_ca,
            "ENABLE_CA_SERVER": self.ca_server,
            "trustDomain": self.trust_domain,
            "trustDomainAliases": self.trust_domain_aliases,
            "caCertificates": self.ca_certificates,
            "mesh_config": self.mesh_config.from,
            "discoveryAddress": self.discovery_address,
            "unresolved": self.unresolved,
        })
    }
}

fn env_str<'a>(d: &'a IstiodDeployment, name: &str) -> Option<&'a str> {
    match d.env.get(name) {
        Some(EnvValue::Value(v)) => Some(v.as_str()),
        _ => None,
    }
}

/// `--flag=value` or `--flag value` in istiod's args (Go's flag package
/// takes the last one given).
fn arg<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let mut found = None;
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let a1 = a.strip_prefix("--").or_else(|| a.strip_prefix('-'));
        let Some(a1) = a1 else { continue };
        if let Some(v) = a1.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(v);
        } else if a1 == flag {
            found = it.next().map(String::as_str);
        }
    }
    found
}

/// The settings of istiod Deployment `d`, with its mesh config, read as
/// istiod reads them: each env variable through pkg/env (present wins over
/// the default, even when empty), flags over env where a flag exists.
pub fn settings_of(
    d: &IstiodDeployment,
    mesh: Option<(&str, &Result<Option<String>, String>)>,
    rev_rule: &str,
) -> Result<IstiodSettings, String> {
    let mut s = IstiodSettings::defaults("not set");
    let from_env = |name: &str| format!("env {name} of Deployment {}", d.name);
    let default = |what: &str| format!("Istio's default (Deployment {} sets no {what})", d.name);
    s.revision = setting(d.revision.clone(), rev_rule.to_string());
    s.unresolved = d
        .env
        .iter()
        .filter(|(_, v)| **v == EnvValue::FromRef)
        .map(|(k, _)| k.clone())
        .collect();
    let list = |v: &str| v.split(',').map(str::to_string).collect::<Vec<_>>();
    let list_nonempty = |v: &str| {
        v.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // --clusterID's default is CLUSTER_ID (pilot-discovery's cmd.go).
    s.cluster_id = match (arg(&d.args, "clusterID"), env_str(d, "CLUSTER_ID")) {
        (Some(a), _) => setting(
            a.to_string(),
            format!("flag --clusterID of Deployment {}", d.name),
        ),
        (None, Some(v)) => setting(v.to_string(), from_env("CLUSTER_ID")),
        (None, None) => setting("Kubernetes".into(), default("CLUSTER_ID")),
    };
    s.token_audiences = match env_str(d, "TOKEN_AUDIENCES") {
        Some(v) => setting(list(v), from_env("TOKEN_AUDIENCES")),
        None => setting(vec!["istio-ca".into()], default("TOKEN_AUDIENCES")),
    };
    s.insecure_kubeconfig_options =
        match env_str(d, "PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS") {
            Some(v) => setting(
                list_nonempty(v),
                from_env("PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS"),
            ),
            None => setting(
                vec![],
                default("PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS"),
            ),
        };
    let parse_bool = |v: &str| match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    };
    let bool_env = |name: &str, dflt: bool| match env_str(d, name) {
        // strconv.ParseBool; an invalid value falls back to the default.
        Some(v) => match parse_bool(v) {
            Some(b) => setting(b, from_env(name)),
            None => setting(
                dflt,
                format!(
                    "{} (invalid {v:?}: istiod uses its default)",
                    from_env(name)
                ),
            ),
        },
        None => setting(dflt, default(name)),
    };
    s.external_istiod = bool_env("EXTERNAL_ISTIOD", false);
    s.ca_server = bool_env("ENABLE_CA_SERVER", true);
    s.custom_hosts = match env_str(d, "ISTIOD_CUSTOM_HOST") {
        Some(v) => setting(list_nonempty(v), from_env("ISTIOD_CUSTOM_HOST")),
        None => setting(vec![], default("ISTIOD_CUSTOM_HOST")),
    };
    s.cert_provider = match env_str(d, "PILOT_CERT_PROVIDER") {
        Some(v) if !v.is_empty() => setting(v.to_string(), from_env("PILOT_CERT_PROVIDER")),
        _ => setting("istiod".into(), default("PILOT_CERT_PROVIDER")),
    };
    s.external_ca = env_str(d, "EXTERNAL_CA")
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    if let Some((name, cm)) = mesh {
        match cm {
            Ok(Some(yaml)) => {
                let m = parse_mesh(yaml).map_err(|e| format!("ConfigMap {name} key mesh: {e}"))?;
                let from = format!("meshConfig.trustDomain of ConfigMap {name}");
                s.trust_domain = match m.trust_domain {
                    Some(t) => setting(t, from),
                    None => setting(
                        "cluster.local".into(),
                        format!("Istio's default (ConfigMap {name} sets no trustDomain)"),
                    ),
                };
                s.trust_domain_aliases = m.trust_domain_aliases;
                s.ca_certificates = m.ca_certificates;
                s.discovery_address = m.discovery_address;
                s.mesh_config = setting(Some(name.to_string()), format!("ConfigMap {name}"));
            }
            Ok(None) => {
                s.trust_domain.from = format!("Istio's default (no ConfigMap {name})");
                s.mesh_config = setting(None, format!("no ConfigMap {name}"));
            }
            Err(e) => {
                s.trust_domain.from = format!("Istio's default (ConfigMap {name} unreadable)");
                s.mesh_config = setting(None, format!("ConfigMap {name} unreadable: {e}"));
            }
        }
    }
    s.deployment = Some(d.clone());
    Ok(s)
}

/// The name of the mesh config ConfigMap of `d`: the one mounted at
/// /etc/istio/config, else Istio's chart's `istio[-<rev>]`.
pub fn mesh_config_name(d: &IstiodDeployment) -> String {
    d.mesh_config_map.clone().unwrap_or_else(|| {
        if d.revision == "default" {
            "istio".into()
        } else {
            format!("istio-{}", d.revision)
        }
    })
}

/// The gateway's revision and the rule that gave it, from what
/// gateway-pod read: label `istio.io/rev`, else the revision the injector
/// recorded (`sidecar.istio.io/status`), else the namespace's label.
pub type GatewayRevision = Option<(String, String)>;

/// What gather saw.
#[derive(Debug, Clone)]
pub struct ControlPlaneFacts {
    pub deployments: IstiodDeployments,
    /// Mesh config ConfigMaps by name, for every revision found.
    pub mesh: BTreeMap<String, Result<Option<String>, String>>,
    pub flag: Option<String>,
    pub gateway_revision: GatewayRevision,
}

pub async fn gather(ctx: &Ctx) -> ControlPlaneFacts {
    let (deployments, mesh) = primary_reads(
        &ctx.clusters.primary,
        &ctx.opts.istio_namespace,
        ctx.opts.timeout,
    )
    .await;
    let gateway_revision = gateway_revision(ctx).await;
    ControlPlaneFacts {
        deployments,
        mesh,
        flag: ctx.opts.revision.clone(),
        gateway_revision,
    }
}

/// istiod's Deployments and their mesh config ConfigMaps: the reads that
/// need no other step's facts, so `steps::prefetch` starts them with the
/// trace (the gateway is awaited only for its revision).
pub async fn primary_reads(
    primary: &kube::Client,
    ns: &str,
    timeout: std::time::Duration,
) -> (
    IstiodDeployments,
    BTreeMap<String, Result<Option<String>, String>>,
) {
    let deployments = read_istiod_deployments(primary, ns, timeout).await;
    let names: Vec<String> = match &deployments {
        Ok(list) if !list.is_empty() => {
            let mut n: Vec<String> = list.iter().map(mesh_config_name).collect();
            n.sort();
            n.dedup();
            n
        }
        _ => vec!["istio".into()],
    };
    let cms: Api<ConfigMap> = Api::namespaced(primary.clone(), ns);
    let reads = names.iter().map(|n| {
        let cms = cms.clone();
        async move {
            let got = tokio::time::timeout(timeout, cms.get_opt(n)).await;
            let v = match got {
                Err(_) => Err("no answer in time".to_string()),
                Ok(Err(e)) => Err(kube_err(&e)),
                Ok(Ok(cm)) => Ok(cm.map(|c| {
                    c.data
                        .and_then(|d| d.get("mesh").cloned())
                        .unwrap_or_default()
                })),
            };
            (n.clone(), v)
        }
    });
    let mesh = futures::future::join_all(reads).await.into_iter().collect();
    (deployments, mesh)
}

/// The gateway's revision: its pod's `istio.io/rev` label, else the revision
/// its injector recorded, else its namespace's `istio.io/rev` label (the
/// webhooks' namespace selector), else `istio-injection=enabled` = default.
async fn gateway_revision(ctx: &Ctx) -> GatewayRevision {
    let (ns, from_pod) = {
        let f = ctx.facts();
        let g = f.gateway.as_ref()?;
        (g.namespace.clone(), g.revision.clone())
    };
    if from_pod.is_some() {
        return from_pod;
    }
    let nss: Api<Namespace> = Api::all(ctx.clusters.remote.clone());
    let n = tokio::time::timeout(ctx.opts.timeout, nss.get_opt(&ns))
        .await
        .ok()?
        .ok()??;
    let labels = n.metadata.labels.unwrap_or_default();
    if let Some(r) = labels.get("istio.io/rev").filter(|r| !r.is_empty()) {
        return Some((
            r.clone(),
            format!("label istio.io/rev of the gateway's namespace {ns}"),
        ));
    }
    (labels.get("istio-injection").map(String::as_str) == Some("enabled")).then(|| {
        (
            "default".to_string(),
            format!("istio-injection=enabled on the gateway's namespace {ns}"),
        )
    })
}

/// Which istiod the trace judges with, and the rule that chose it.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick<'a> {
    Chosen(&'a IstiodDeployment, String),
    /// istiod is not a Deployment in the primary.
    NoneInPrimary,
    Unknown {
        wanted: String,
        have: Vec<String>,
    },
    GatewayMissing {
        wanted: String,
        rule: String,
        only: &'a IstiodDeployment,
    },
    Ambiguous(Vec<String>),
}

fn revisions(list: &[IstiodDeployment]) -> Vec<String> {
    let mut r: Vec<String> = list.iter().map(|d| d.revision.clone()).collect();
    r.sort();
    r.dedup();
    r
}

/// The revision picked as `--revision`, else the gateway's, else the only one.
pub fn pick<'a>(
    list: &'a [IstiodDeployment],
    flag: Option<&str>,
    gateway: &GatewayRevision,
) -> Pick<'a> {
    let have = revisions(list);
    let of = |rev: &str| list.iter().find(|d| d.revision == rev);
    if list.is_empty() {
        return Pick::NoneInPrimary;
    }
    if let Some(f) = flag {
        return match of(f) {
            Some(d) => Pick::Chosen(d, "--revision".into()),
            None => Pick::Unknown {
                wanted: f.to_string(),
                have,
            },
        };
    }
    if let Some((rev, rule)) = gateway {
        if let Some(d) = of(rev) {
            return Pick::Chosen(d, rule.clone());
        }
        if let [only] = have.as_slice() {
            return Pick::GatewayMissing {
                wanted: rev.clone(),
                rule: rule.clone(),
                only: of(only).unwrap_or(&list[0]),
            };
        }
        return Pick::Ambiguous(have);
    }
    match have.as_slice() {
        [only] => Pick::Chosen(
            of(only).unwrap_or(&list[0]),
            "the only istiod revision in the primary".into(),
        ),
        _ => Pick::Ambiguous(have),
    }
}

/// The settings the later steps judge with (None only when the pick fails).
pub fn judge(f: &ControlPlaneFacts, s: &Settings) -> (Outcome, Option<IstiodSettings>) {
    let ns = &s.istio_namespace;
    let mut out = Outcome::new();
    let list = match &f.deployments {
        Ok(l) => l,
        Err(e) => {
            let st = IstiodSettings::defaults("istiod's Deployments unreadable");
            out.ev("istiod", st.evidence());
            return (
                out.warning(
                    Finding::new(&UNREADABLE, "istiod's settings are unknown: its Deployments cannot be read")
                        .command(format!("{} auth can-i list deployments -n {}", s.kubectl_primary(), shell_word(ns)))
                        .note("meshtrace judges with Istio's defaults (TOKEN_AUDIENCES istio-ca, trust domain cluster.local) until it can read istiod's Deployment: grant the operator read on Deployments and ConfigMaps in istiod's namespace"),
                    e.clone(),
                ),
                Some(st),
            );
        }
    };
    out.ev(
        "revisions",
        list.iter()
            .map(|d| json!({"revision": d.revision, "deployment": d.name, "pods": d.pods}))
            .collect::<Vec<_>>(),
    );
    if let Some((r, rule)) = &f.gateway_revision {
        out.ev("gateway_revision", json!({"revision": r, "from": rule}));
    }
    let (d, rule) = match pick(list, f.flag.as_deref(), &f.gateway_revision) {
        Pick::NoneInPrimary => {
            let st =
                IstiodSettings::defaults(&format!("no istiod Deployment in {ns} of the primary"));
            out.ev("istiod", st.evidence());
            out.ev("note", format!("istiod is not a Deployment in {ns} of the primary (it runs elsewhere: an external control plane): meshtrace judges with Istio's defaults and the flags given"));
            return (out.pass(), Some(st));
        }
        Pick::Unknown { wanted, have } => {
            return (
                out.failing(
                    Finding::new(
                        &UNKNOWN_REVISION,
                        format!("no istiod of revision {wanted:?} in the primary"),
                    )
                    .note(format!(
                        "--revision must be one the primary runs: {}",
                        have.join(", ")
                    )),
                    format!(
                        "--revision {wanted:?}; the primary's istiod revisions: {}",
                        have.join(", ")
                    ),
                ),
                None,
            );
        }
        Pick::Ambiguous(have) => {
            let asked = match &f.gateway_revision {
                Some((r, rule)) => format!("the gateway's revision {r:?} ({rule}) is none of them"),
                None => "the gateway names no revision (no istio.io/rev label, no injector status)"
                    .into(),
            };
            return (
                out.failing(
                    Finding::new(&REVISION_AMBIGUOUS, format!("which istiod is the gateway's? the primary runs revisions {}", have.join(", ")))
                        .note(format!("trace again with --revision set to the one the gateway uses (one of {}); meshtrace does not guess, because audiences, trust domain and CA differ per revision", have.join(", "))),
                    format!("{} istiod revisions in the primary ({}); {asked}", have.len(), have.join(", ")),
                ),
                None,
            );
        }
        Pick::GatewayMissing { wanted, rule, only } => {
            let st = match settings_of(
                only,
                Some((
                    &mesh_config_name(only),
                    f.mesh.get(&mesh_config_name(only)).unwrap_or(&Ok(None)),
                )),
                "the only istiod revision in the primary",
            ) {
                Ok(st) => st,
                Err(e) => return mesh_invalid(out, e),
            };
            out.ev("istiod", st.evidence());
            return (
                out.warning(
                    Finding::new(&GATEWAY_REVISION_MISSING, format!("the gateway is of revision {wanted:?}, which no istiod in the primary runs"))
                        .note(format!("the primary runs istiod revision {:?} only: the gateway's pods are injected by a revision's webhook, so new ones will not be until the gateway is moved to {:?} (its istio.io/rev label) or that revision is installed", only.revision, only.revision)),
                    format!("the gateway's revision {wanted:?} ({rule}); the primary's istiod: {} (revision {:?})", only.name, only.revision),
                ),
                Some(st),
            );
        }
        Pick::Chosen(d, rule) => (d, rule),
    };
    let name = mesh_config_name(d);
    let cm = f.mesh.get(&name).cloned().unwrap_or(Ok(None));
    match settings_of(d, Some((&name, &cm)), &rule) {
        Ok(st) => {
            out.ev("istiod", st.evidence());
            (out.pass(), Some(st))
        }
        Err(e) => mesh_invalid(out, e),
    }
}

fn mesh_invalid(out: Outcome, e: String) -> (Outcome, Option<IstiodSettings>) {
    (
        out.failing(
            Finding::new(&MESH_CONFIG_INVALID, "istiod's mesh config does not parse")
                .note("istiod refuses to start (or keeps its last good config) with a mesh config it cannot parse: fix the YAML under key mesh"),
            e,
        ),
        None,
    )
}

pub async fn run(ctx: &Ctx) -> Outcome {
    let facts = gather(ctx).await;
    let (out, settings) = judge(&facts, &Settings::of(ctx));
    if let Some(st) = settings {
        ctx.facts().istiod_settings = Some(std::sync::Arc::new(st));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::check_row;
    use super::super::istiod::istiod_deployments;
    use super::super::istiod::tests::{deployment, pod, replica_set};
    use super::*;
    use crate::model::Status;

    fn facts(deps: &[k8s_openapi::api::apps::v1::Deployment]) -> ControlPlaneFacts {
        let rs: Vec<_> = deps
            .iter()
            .map(|d| {
                let n = d.metadata.name.clone().unwrap();
                replica_set(&format!("{n}-rs"), &n)
            })
            .collect();
        let pods: Vec<_> = deps
            .iter()
            .map(|d| {
                let n = d.metadata.name.clone().unwrap();
                pod(&format!("{n}-rs-x"), &format!("{n}-rs"))
            })
            .collect();
        ControlPlaneFacts {
            deployments: Ok(istiod_deployments(deps, &rs, &pods)),
            mesh: BTreeMap::new(),
            flag: None,
            gateway_revision: None,
        }
    }

    fn rev(name: &str, r: &str, env: &[(&str, &str)]) -> k8s_openapi::api::apps::v1::Deployment {
        let mut d = deployment(name, env);
        d.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("istio.io/rev".into(), r.into());
        d
    }

    #[test]
    fn revisions_are_picked_as_the_gateway_and_the_flag_say() {
        let s = Settings::for_tests();
        let two = [
            rev("istiod", "default", &[]),
            rev(
                "istiod-canary",
                "canary",
                &[("TOKEN_AUDIENCES", "istio-ca,mesh.example")],
            ),
        ];
        struct Row {
            name: &'static str,
            deps: Vec<k8s_openapi::api::apps::v1::Deployment>,
            flag: Option<&'static str>,
            gateway: Option<&'static str>,
            status: Status,
            code: Option<&'static str>,
            revision: Option<&'static str>,
        }
        let rows = [
            Row {
                name: "one istiod, no label",
                deps: vec![two[0].clone()],
                flag: None,
                gateway: None,
                status: Status::Pass,
                code: None,
                revision: Some("default"),
            },
            Row {
                name: "the gateway's label",
                deps: two.to_vec(),
                flag: None,
                gateway: Some("canary"),
                status: Status::Pass,
                code: None,
                revision: Some("canary"),
            },
            Row {
                name: "the flag beats the label",
                deps: two.to_vec(),
                flag: Some("default"),
                gateway: Some("canary"),
                status: Status::Pass,
                code: None,
                revision: Some("default"),
            },
            Row {
                name: "unknown flag",
                deps: two.to_vec(),
                flag: Some("stable"),
                gateway: None,
                status: Status::Fail,
                code: Some("control-plane/unknown-revision"),
                revision: None,
            },
            Row {
                name: "two revisions, no label",
                deps: two.to_vec(),
                flag: None,
                gateway: None,
                status: Status::Fail,
                code: Some("control-plane/revision-ambiguous"),
                revision: None,
            },
            Row {
                name: "label of a revision not running, two others",
                deps: two.to_vec(),
                flag: None,
                gateway: Some("stable"),
                status: Status::Fail,
                code: Some("control-plane/revision-ambiguous"),
                revision: None,
            },
            Row {
                name: "label of a revision not running, one other",
                deps: vec![two[0].clone()],
                flag: None,
                gateway: Some("canary"),
                status: Status::Warn,
                code: Some("control-plane/gateway-revision-missing"),
                revision: Some("default"),
            },
            Row {
                name: "no istiod Deployment: external control plane",
                deps: vec![],
                flag: None,
                gateway: Some("canary"),
                status: Status::Pass,
                code: None,
                revision: Some("default"),
            },
        ];
        for r in rows {
            let mut f = facts(&r.deps);
            f.flag = r.flag.map(String::from);
            f.gateway_revision = r.gateway.map(|g| {
                (
                    g.to_string(),
                    "label istio.io/rev of the gateway's pod".to_string(),
                )
            });
            let (out, st) = judge(&f, &s);
            check_row(r.name, &out, r.status, r.code, &[]);
            assert_eq!(
                st.as_ref().map(|s| s.revision.value.as_str()),
                r.revision,
                "{}",
                r.name
            );
            if let Some(st) = st {
                assert!(out.evidence.get("istiod").is_some(), "{}", r.name);
                if st.revision.value == "canary" {
                    assert!(st.accepts_audience("mesh.example"), "{}", r.name);
                    assert_eq!(
                        st.token_audiences.from,
                        "env TOKEN_AUDIENCES of Deployment istiod-canary"
                    );
                }
            }
        }
    }

    #[test]
    fn unreadable_deployments_warn_and_fall_back_to_defaults() {
        let f = ControlPlaneFacts {
            deployments: Err("deployments.apps is forbidden".into()),
            mesh: BTreeMap::new(),
            flag: None,
            gateway_revision: None,
        };
        let (out, st) = judge(&f, &Settings::for_tests());
        check_row(
            "forbidden",
            &out,
            Status::Warn,
            Some("control-plane/unreadable"),
            &["auth can-i list deployments"],
        );
        assert_eq!(st.unwrap().token_audiences.value, ["istio-ca"]);
    }

    #[test]
    fn settings_follow_env_semantics_and_the_mesh_config() {
        use k8s_openapi::api::core::v1::{ConfigMapKeySelector, EnvVar, EnvVarSource};
        let mut d = rev(
            "istiod-canary",
            "canary",
            &[("TOKEN_AUDIENCES", "first"), ("CLUSTER_ID", "")],
        );
        let c = &mut d.spec.template.spec.as_mut().unwrap().containers[0];
        let env = c.env.as_mut().unwrap();
        // The last of two entries wins; valueFrom is resolved.
        env.push(EnvVar {
            name: "TOKEN_AUDIENCES".into(),
            value: Some("istio-ca,mesh.example".into()),
            ..Default::default()
        });
        env.push(EnvVar {
            name: "PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS".into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "istiod-env".into(),
                    key: "opts".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        env.push(EnvVar {
            name: "EXTERNAL_ISTIOD".into(),
            value: Some("yes".into()),
            ..Default::default()
        });
        c.args = Some(vec![
            "discovery".into(),
            "--clusterID".into(),
            "primary-1".into(),
        ]);
        let mut list = istiod_deployments(&[d], &[], &[]);
        let cms = BTreeMap::from([(
            "istiod-env".to_string(),
            BTreeMap::from([("opts".to_string(), "exec,".to_string())]),
        )]);
        super::super::istiod::resolve_env(
            &mut list[0],
            &cms,
            &BTreeMap::new(),
            "istio-system",
            None,
        );
        let mesh: Result<Option<String>, String> = Ok(Some("trustDomain: mesh.example\ntrustDomainAliases: [cluster.local]\ndefaultConfig:\n  discoveryAddress: istiod-canary.istio-system.svc:15012\n".into()));
        let st = settings_of(&list[0], Some(("istio-canary", &mesh)), "--revision").unwrap();
        assert_eq!(st.token_audiences.value, ["istio-ca", "mesh.example"]);
        assert_eq!(list[0].env_sources["TOKEN_AUDIENCES"].entries, 2);
        assert_eq!(st.insecure_kubeconfig_options.value, ["exec"]);
        assert_eq!(
            (st.cluster_id.value.as_str(), st.cluster_id.from.as_str()),
            ("primary-1", "flag --clusterID of Deployment istiod-canary")
        );
        // strconv.ParseBool refuses "yes": istiod keeps its default.
        assert!(!st.external_istiod.value && st.external_istiod.from.contains("invalid"));
        assert_eq!(st.trust_domain.value, "mesh.example");
        assert_eq!(st.trust_domain_aliases, ["cluster.local"]);
        assert_eq!(
            st.discovery_address.as_deref(),
            Some("istiod-canary.istio-system.svc:15012")
        );
        assert!(
            st.serving_names("istio-system")
                .contains(&"istiod-canary.istio-system.svc".to_string())
        );
        assert!(
            st.serving_names("istio-system")
                .contains(&"istiod-remote.istio-system.svc".to_string())
        );
        // An empty CLUSTER_ID is present: the flag wins here, but alone it would be "".
        let alone =
            istiod_deployments(&[rev("istiod", "default", &[("CLUSTER_ID", "")])], &[], &[]);
        assert_eq!(
            settings_of(&alone[0], None, "x").unwrap().cluster_id.value,
            ""
        );
        let bad: Result<Option<String>, String> = Ok(Some("trustDomain: [unclosed".into()));
        assert!(settings_of(&alone[0], Some(("istio", &bad)), "x").is_err());
    }
}
