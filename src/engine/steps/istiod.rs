//! What the steps on the gateway's path to istiod share (remote-istiod-endpoint,
//! istiod-tls, csr, issued-chain): istiod's port and server name as istio-agent
//! uses them, and istiod's Deployment in the primary, which the fixes that
//! change istiod (restart, env) must name.

use super::{Settings, kube_err};
use crate::findings::shell_word;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use std::time::Duration;

/// istiod's secure gRPC port (CA and xDS), as CA_ADDR names it.
pub const CA_PORT: i32 = 15012;

pub fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The TLS server name istio-agent verifies for CA_ADDR: ISTIOD_SAN if set,
/// else the host part of CA_ADDR, where `localhost` means istiod.istio-system.svc
/// (the agent hard-codes that namespace; pilot/cmd/pilot-agent/options/security.go).
pub fn agent_server_name(ca_addr: Option<&str>, istiod_san: Option<&str>) -> String {
    let default = "istiod.istio-system.svc".to_string();
    if let Some(san) = istiod_san.filter(|s| !s.is_empty()) {
        return san.to_string();
    }
    let Some(addr) = ca_addr else { return default };
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(addr)
        .trim_matches(['[', ']']);
    if host == "localhost" || host.is_empty() {
        default
    } else {
        host.to_string()
    }
}

/// An env variable of istiod's container as its Deployment sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// `value:` (Kubernetes' default for `value` is the empty string).
    Value(String),
    /// `valueFrom:` a ConfigMap, Secret or field: meshtrace does not resolve it.
    FromRef,
}

/// istiod's Deployment in the primary: what a fix that restarts istiod or
/// changes its env needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IstiodDeployment {
    pub name: String,
    /// istiod's container: `discovery` (Istio's chart), else the first.
    pub container: String,
    /// The pod template has other containers too: `set env` then names it.
    pub several_containers: bool,
    /// The env of istiod's container.
    pub env: BTreeMap<String, EnvValue>,
    /// The pods it owns, through their ReplicaSets.
    pub pods: Vec<String>,
}

impl IstiodDeployment {
    pub fn env_value(&self, name: &str) -> Option<&EnvValue> {
        self.env.get(name)
    }
}

/// istiod's Deployments, or why they could not be read.
pub type IstiodDeployments = Result<Vec<IstiodDeployment>, String>;

/// Is this Deployment istiod's? Istio's chart labels it and its pods
/// `app: istiod`; a Deployment called `istiod` counts too.
fn is_istiod(d: &Deployment) -> bool {
    let app = |l: Option<&BTreeMap<String, String>>| {
        l.and_then(|l| l.get("app")).map(String::as_str) == Some("istiod")
    };
    d.metadata.name.as_deref() == Some("istiod")
        || app(d.metadata.labels.as_ref())
        || app(d
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref()))
}

fn owner<'a>(
    refs: Option<&'a Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
    kind: &str,
) -> Option<&'a str> {
    refs?
        .iter()
        .find(|o| o.kind == kind)
        .map(|o| o.name.as_str())
}

/// The istiod Deployments among `deployments`, each with its container's env
/// and the pods it owns (pod -> ReplicaSet -> Deployment).
pub fn istiod_deployments(
    deployments: &[Deployment],
    replica_sets: &[ReplicaSet],
    pods: &[Pod],
) -> Vec<IstiodDeployment> {
    let mut out: Vec<IstiodDeployment> = deployments
        .iter()
        .filter(|d| is_istiod(d))
        .filter_map(|d| {
            let name = d.metadata.name.clone()?;
            let containers: &[Container] = d
                .spec
                .template
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or(&[]);
            let main = containers
                .iter()
                .find(|c| c.name == "discovery")
                .or(containers.first());
            let env = main
                .and_then(|c| c.env.as_ref())
                .map(|vars| {
                    vars.iter()
                        .map(|v| {
                            let value = match (&v.value, &v.value_from) {
                                (_, Some(_)) => EnvValue::FromRef,
                                (Some(x), None) => EnvValue::Value(x.clone()),
                                (None, None) => EnvValue::Value(String::new()),
                            };
                            (v.name.clone(), value)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut owned: Vec<String> = pods
                .iter()
                .filter(|p| {
                    let rs = owner(p.metadata.owner_references.as_ref(), "ReplicaSet");
                    replica_sets.iter().any(|r| {
                        r.metadata.name.as_deref() == rs
                            && owner(r.metadata.owner_references.as_ref(), "Deployment")
                                == Some(name.as_str())
                    })
                })
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            owned.sort();
            Some(IstiodDeployment {
                container: main.map(|c| c.name.clone()).unwrap_or_default(),
                several_containers: containers.len() > 1,
                env,
                pods: owned,
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Reads istiod's Deployments in the primary (Deployments, and the
/// `app=istiod` ReplicaSets and pods that tie a pod to one), within `timeout`.
/// Only the Deployment list is required; without the others the pods are unknown.
pub async fn read_istiod_deployments(
    primary: &kube::Client,
    ns: &str,
    timeout: Duration,
) -> IstiodDeployments {
    let deps: Api<Deployment> = Api::namespaced(primary.clone(), ns);
    let sets: Api<ReplicaSet> = Api::namespaced(primary.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(primary.clone(), ns);
    let by_app = ListParams::default().labels("app=istiod");
    let all = ListParams::default();
    let read = async { tokio::join!(deps.list(&all), sets.list(&by_app), pods.list(&by_app)) };
    let (d, r, p) = tokio::time::timeout(timeout, read).await.map_err(|_| {
        format!(
            "no answer listing Deployments in {ns} of the primary within {}",
            humantime::format_duration(timeout)
        )
    })?;
    let d = d.map_err(|e| {
        format!(
            "cannot list Deployments in {ns} of the primary: {}",
            kube_err(&e)
        )
    })?;
    let r = r.map(|l| l.items).unwrap_or_default();
    let p = p.map(|l| l.items).unwrap_or_default();
    Ok(istiod_deployments(&d.items, &r, &p))
}

/// The Deployment a fix names: the one that owns `pod` (the istiod that
/// answered), else the only one. Err says why none can be named.
pub fn pick<'a>(
    found: &'a IstiodDeployments,
    pod: Option<&str>,
    ns: &str,
) -> Result<&'a IstiodDeployment, String> {
    let list = found.as_ref().map_err(Clone::clone)?;
    if let Some(p) = pod {
        if let Some(d) = list.iter().find(|d| d.pods.iter().any(|x| x == p)) {
            return Ok(d);
        }
    }
    match list.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no istiod Deployment (app=istiod) in {ns} of the primary"
        )),
        many => Err(format!(
            "{} istiod Deployments in {ns} of the primary ({})",
            many.len(),
            many.iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `kubectl --context P -n NS rollout restart deployment/NAME`.
pub fn restart_command(s: &Settings, d: &IstiodDeployment) -> String {
    format!(
        "{} -n {} rollout restart deployment/{}",
        s.kubectl_primary(),
        shell_word(&s.istio_namespace),
        shell_word(&d.name)
    )
}

/// `kubectl --context P -n NS set env deployment/NAME [-c C] VAR=VALUE`.
pub fn set_env_command(s: &Settings, d: &IstiodDeployment, var: &str, value: &str) -> String {
    let container = if d.several_containers {
        format!(" -c {}", shell_word(&d.container))
    } else {
        String::new()
    };
    format!(
        "{} -n {} set env deployment/{}{container} {}",
        s.kubectl_primary(),
        shell_word(&s.istio_namespace),
        shell_word(&d.name),
        shell_word(&format!("{var}={value}"))
    )
}

/// The note for a fix that needs istiod's Deployment when none could be named.
pub fn no_deployment_note(s: &Settings, why: &str, what: &str) -> String {
    format!(
        "meshtrace cannot name istiod's Deployment ({why}): find it with `{} -n {} get deployments -l app=istiod`, then {what}",
        s.kubectl_primary(),
        shell_word(&s.istio_namespace)
    )
}

/// A comma-separated env list (TOKEN_AUDIENCES, ISTIOD_CUSTOM_HOST) with
/// `item` added at the end, keeping the others and dropping empty entries.
pub fn with_item(list: &str, item: &str) -> String {
    let mut items: Vec<&str> = list.split(',').filter(|i| !i.is_empty()).collect();
    if !items.contains(&item) {
        items.push(item);
    }
    items.join(",")
}

/// Runs `main` and `side` at once. `side` only explains a failure of `main`:
/// when `needed(&main's result)` it is awaited (it bounds itself), otherwise
/// it gets `grace` more and is dropped, so a slow side read never holds up a pass.
pub async fn with_side<M, S>(
    main: impl std::future::Future<Output = M>,
    side: impl std::future::Future<Output = S>,
    needed: impl FnOnce(&M) -> bool,
    grace: Duration,
) -> (M, Option<S>) {
    tokio::pin!(main, side);
    let mut got = None;
    let m = tokio::select! {
        m = &mut main => m,
        s = &mut side => {
            got = Some(s);
            main.await
        }
    };
    if got.is_none() {
        got = if needed(&m) {
            Some(side.await)
        } else {
            tokio::time::timeout(grace, &mut side).await.ok()
        };
    }
    (m, got)
}

// csr and issued-chain, not yet split into gather and judge.
use super::{now_unix, quote_list};
use crate::engine::{Ctx, Outcome};
use crate::inspect::x509::rfc3339;
use crate::inspect::{jwt, x509};
use crate::model::StepId;
use crate::probe::ca_client::{self, CsrError, CsrRequest};
use crate::probe::clusterz::{self, Judgement};
use serde_json::json;

pub async fn csr(ctx: &Ctx) -> Outcome {
    if ctx.opts.no_csr {
        return Outcome::new().skipped("passive mode (--no-csr): no CSR sent");
    }
    let (addr, root, gw, token, cid) = {
        let f = ctx.facts();
        (
            f.istiod_addr.clone(),
            f.remote_root_pem.clone(),
            f.gateway.clone(),
            f.gateway_token.clone(),
            f.cluster_id.clone(),
        )
    };
    let (Some((addr, _)), Some(root)) = (addr, root) else {
        return Outcome::new().blocked(StepId::IstiodTls, "no verified path to istiod");
    };
    let Some(token) = token else {
        return Outcome::new().blocked(StepId::GatewayToken, "no gateway token");
    };
    let gw = gw.unwrap_or_default();
    let cid = cid.map(|c| c.0).unwrap_or_default();
    let td = gw
        .trust_domain
        .clone()
        .or_else(|| ctx.facts().trust_domain.clone())
        .unwrap_or_else(|| "cluster.local".into());
    let spiffe = format!(
        "spiffe://{td}/ns/{}/sa/{}",
        gw.namespace, gw.service_account
    );
    let server_name = agent_server_name(gw.ca_addr.as_deref(), gw.istiod_san.as_deref());
    let mut out = Outcome::new();
    let (key, csr_pem) = match ca_client::new_csr(&spiffe) {
        Ok(k) => k,
        Err(e) => {
            return out.fail(
                format!("cannot make a CSR: {e}"),
                "report this as a meshtrace bug",
            );
        }
    };
    let ttl = 3600;
    out.ev("address", &addr)
        .ev("server_name", &server_name)
        .ev("metadata", json!({"authorization": format!("Bearer <{}>", jwt::fingerprint(&token.0)), "clusterid": cid}))
        .ev("csr_san", &spiffe)
        .ev("requested_ttl_seconds", ttl)
        .ev("key", "fresh ECDSA P-256, in memory only");
    // istiod's own view of its clusters is read while the CSR is in flight,
    // so it costs the critical path nothing unless it is the slower of the two.
    let csr_call = async {
        let started = std::time::Instant::now();
        let r = ca_client::create_certificate(&CsrRequest {
            addr: &addr,
            server_name: &server_name,
            root_pem: &root,
            token: &token.0,
            cluster_id: &cid,
            csr_pem: &csr_pem,
            ttl_secs: ttl,
            timeout: ctx.opts.timeout,
        })
        .await;
        (r, started.elapsed())
    };
    let debug_addr = ctx.opts.istiod_debug_addr.as_deref();
    let ns = &ctx.opts.istio_namespace;
    let view_call = clusterz::fetch(debug_addr, &ctx.clusters.primary, ns, ctx.opts.timeout);
    tokio::pin!(csr_call, view_call);
    let mut view = None;
    let (result, rpc) = tokio::select! {
        r = &mut csr_call => r,
        v = &mut view_call => {
            view = Some(v);
            csr_call.await
        }
    };
    // The view only explains a refusal: wait for it (within its own bound)
    // when istiod said Unauthenticated; otherwise give it a moment and move
    // on, so an istiod pod the API server cannot reach (503, retried) does
    // not hold up a certificate that was issued.
    let view = match view {
        Some(v) => v,
        None if matches!(&result, Err(CsrError::Rpc { code, .. }) if code == "Unauthenticated") => {
            view_call.await
        }
        None => tokio::time::timeout(VIEW_GRACE, &mut view_call)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "not waited for: istiod answered the CSR first, and its view only explains a refusal (it did not come within {} more)",
                    humantime::format_duration(VIEW_GRACE)
                ))
            }),
    };
    drop(key);
    out.ev("rpc_ms", crate::model::millis(rpc))
        .ev("istiod_clusters", clusterz::evidence(&view))
        .ev("istiod_clusters_source", clusterz::source(debug_addr, ns));
    match result {
        Ok(chain) => {
            out.ev("cert_chain_length", chain.len());
            ctx.facts().chain = Some(chain);
            out.pass()
        }
        Err(CsrError::Rpc { code, message }) => {
            out.ev("grpc_status", json!({"code": code, "message": message}));
            let (diag, hint) = if code == "Unauthenticated" && !cid.is_empty() {
                unauthenticated(
                    &code,
                    &message,
                    &cid,
                    &clusterz::judge(&view, &cid),
                    ns,
                    &ctx.opts.token_audience,
                )
            } else if code == "Unauthenticated" {
                unauthenticated(
                    &code,
                    &message,
                    &cid,
                    &Judgement::Unknown("the gateway sends no cluster ID, so istiod checks its token against the primary".into()),
                    ns,
                    &ctx.opts.token_audience,
                )
            } else {
                (
                    format!("istiod answered {code}: {message:?}"),
                    READ_LOG_HINT.to_string(),
                )
            };
            out.fail(diag, hint)
        }
        Err(e) => out.fail(
            format!("CreateCertificate to {addr} failed: {e}"),
            "see istiod-tls; check istiod is serving on 15012",
        ),
    }
}

/// How long a CSR that istiod answered without refusing waits for istiod's
/// view of its clusters (evidence only then).
const VIEW_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

const READ_LOG_HINT: &str = "read istiod's log: kubectl --context <primary> -n istio-system logs deploy/istiod | grep -i 'authenticate'; check istioctl remote-clusters shows the cluster synced";

/// The diagnosis and fix for a CSR refused with `Unauthenticated` when every
/// step before it passed: istiod does not see what meshtrace sees, and its
/// own list of clusters (`/debug/clusterz`) says why.
fn unauthenticated(
    code: &str,
    message: &str,
    cid: &str,
    view: &Judgement,
    ns: &str,
    aud: &str,
) -> (String, String) {
    let told = format!(
        "istiod answered {code}: {message:?}. That is all a gateway is told; istiod logs the reason (`Failed to authenticate client from ...`)."
    );
    let restart = format!(
        "restart istiod so it loads every remote secret again: kubectl --context <primary> -n {ns} rollout restart deployment/istiod (then trace again)"
    );
    let reach_hint = format!(
        "check that istiod's pod reaches the remote API server named in the remote secret (network policy, firewall, private endpoint, egress proxy): kubectl --context <primary> -n {ns} logs deploy/istiod | grep -i 'remote cluster'"
    );
    match view {
        Judgement::Missing { from, listed } => {
            let ids: Vec<String> = listed.iter().map(|e| e.id.clone()).collect();
            let lists = if ids.is_empty() {
                "lists no cluster at all".to_string()
            } else {
                format!("lists only {}", quote_list(&ids))
            };
            // The config cluster is the entry without a secret.
            let locals: Vec<&str> = listed
                .iter()
                .filter(|e| e.secret_name.is_empty())
                .map(|e| e.id.as_str())
                .collect();
            let remotes: Vec<&str> = listed
                .iter()
                .filter(|e| !e.secret_name.is_empty())
                .map(|e| e.id.as_str())
                .collect();
            let log = match locals.as_slice() {
                [local] => format!(
                    " (istiod logs `client claims to be in cluster {cid:?}, but we only know about local cluster {local:?} and remote clusters [{}]`)",
                    remotes.join(" ")
                ),
                _ => String::new(),
            };
            (
                format!(
                    "{told} istiod has not loaded the remote secret for cluster {cid:?}: its /debug/clusterz ({from}) {lists}{log}. The remote secret is valid (remote-secret through token-review passed), so istiod's remote-secret controller has not processed it: the controller is stuck (a known istiod hang after a remote secret is deleted: it then processes no remote-secret event until it restarts), or the secret was created or fixed only seconds ago (a working istiod loads it within seconds, also after refusing an earlier version)"
                ),
                restart,
            )
        }
        Judgement::NotSynced { from, entry } => {
            let status = entry.status_text();
            let loaded = format!(
                "{told} istiod has loaded cluster {cid:?} (Secret {}) but its /debug/clusterz ({from}) says syncStatus {status:?}",
                if entry.secret_name.is_empty() {
                    "unknown"
                } else {
                    &entry.secret_name
                }
            );
            match entry.sync_status.as_deref() {
                Some("closed") => (
                    format!(
                        "{loaded}: istiod is tearing this cluster down (its remote secret was deleted or changed) and has not built it again; if it stays closed, istiod's remote-secret controller is stuck (a known istiod hang after a remote secret is deleted)"
                    ),
                    restart,
                ),
                Some("timeout") => (
                    format!(
                        "{loaded}: istiod gave up waiting for the remote's objects (`remote cluster {cid} failed to sync after 30s`). From where istiod runs, the remote API server is likely unreachable or refuses the secret's credential, and istiod's TokenReview fails the same way, although meshtrace's passes from here"
                    ),
                    reach_hint,
                ),
                Some("syncing") => (
                    format!(
                        "{loaded}: istiod is still listing the remote's objects (after 30 s this becomes timeout); until then its TokenReview for this cluster may fail the same way. Trace again in a minute"
                    ),
                    reach_hint,
                ),
                _ => (format!("{loaded}, not synced"), READ_LOG_HINT.to_string()),
            }
        }
        Judgement::Synced { entry } => (
            format!(
                "{told} istiod lists cluster {cid:?} synced (Secret {}), so it holds a working client for the remote, and meshtrace's TokenReview with the remote secret's credential passed for audience {aud:?}. The remaining cause is istiod's TOKEN_AUDIENCES: it does not contain {aud:?}, the audience of the gateway's token (--token-audience), so the remote API server refuses istiod's TokenReview (istiod logs `token audiences [\"{aud}\"] is invalid for the target audiences [...]`). (Less likely: istiod still runs with an earlier kubeconfig of this secret whose credential no longer works; a restart rules that out.)",
                entry.secret_name
            ),
            format!(
                "make istiod's TOKEN_AUDIENCES include {aud}: kubectl --context <primary> -n {ns} set env deployment/istiod TOKEN_AUDIENCES={aud} (see its value with kubectl --context <primary> -n {ns} get deployment istiod -o yaml | grep -A1 TOKEN_AUDIENCES); or trace again with --token-audience <its value>, and gateway-token names which side to change"
            ),
        ),
        Judgement::Unknown(why) => (
            format!(
                "{told} With cluster ID {cid:?}: if the remote-secret, remote-* and token-review steps passed, istiod does not see what meshtrace sees — its remote secret controller has not loaded the cluster yet, or its TOKEN_AUDIENCES differ from {aud:?}. istiod's own view of its clusters is unknown: {why}"
            ),
            READ_LOG_HINT.to_string(),
        ),
    }
}

/// The longest issued chain meshtrace verifies.
const MAX_CHAIN: usize = 16;

pub async fn issued_chain(ctx: &Ctx) -> Outcome {
    let (chain, root, gw, td) = {
        let f = ctx.facts();
        (
            f.chain.clone(),
            f.remote_root_pem.clone(),
            f.gateway.clone(),
            f.trust_domain.clone(),
        )
    };
    let Some(chain) = chain else {
        return Outcome::new().blocked(StepId::Csr, "no certificate chain");
    };
    let root = root.unwrap_or_default();
    let gw = gw.unwrap_or_default();
    let td = gw
        .trust_domain
        .clone()
        .or(td)
        .unwrap_or_else(|| "cluster.local".into());
    let identity = format!(
        "spiffe://{td}/ns/{}/sa/{}",
        gw.namespace, gw.service_account
    );
    let mut out = Outcome::new();
    if chain.len() > MAX_CHAIN {
        return out.fail(
            format!(
                "istiod returned {} certificates; an Istio chain is a leaf, its intermediates and the root (meshtrace verifies at most {MAX_CHAIN})",
                chain.len()
            ),
            "check what answers on istiod's address: istiod's plug-in CA chain (cacerts cert-chain.pem) should hold a handful of certificates",
        );
    }
    let check = x509::verify_chain(&chain, &root, &td, Some(&identity), now_unix());
    out.ev(
        "chain",
        check.certs.iter().map(|c| c.evidence()).collect::<Vec<_>>(),
    )
    .ev("expected_identity", &identity);
    if let Some(s) = &check.spiffe {
        out.ev(
            "spiffe_id",
            format!(
                "spiffe://{}/ns/{}/sa/{}",
                s.trust_domain, s.namespace, s.service_account
            ),
        );
    }
    if let Some(p) = check.problems.first() {
        let all = check
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let fix = match p {
            x509::ChainProblem::TrustDomain { .. } | x509::ChainProblem::Identity { .. } => {
                "make the primary's meshConfig.trustDomain and the gateway's TRUST_DOMAIN agree"
            }
            x509::ChainProblem::NotYetValid { .. } | x509::ChainProblem::Expired { .. } => {
                "check clocks on the primary istiod's node and here (NTP); istiod backdates certificates by 2 minutes only"
            }
            x509::ChainProblem::TooShort(_) => {
                "istiod must return leaf, intermediates and root: check the plug-in CA's cert-chain.pem"
            }
            x509::ChainProblem::RootMismatch { .. } => {
                "the CA that signed differs from the root the remote trusts: align cacerts/root-cert.pem and istio-ca-root-cert"
            }
            _ => {
                "the primary's CA material is inconsistent: check cacerts (ca-cert.pem, cert-chain.pem, root-cert.pem)"
            }
        };
        return out.fail(format!("the chain istiod issued is wrong: {all}"), fix);
    }
    if let Some(leaf) = check.certs.first() {
        out.ev("leaf_expires", rfc3339(leaf.not_after));
    }
    out.pass()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{
        EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn labels(kv: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn owned_by(kind: &str, name: &str) -> Option<Vec<OwnerReference>> {
        Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(true),
            ..Default::default()
        }])
    }

    /// istiod's Deployment as Istio's chart makes it: container `discovery`, `app: istiod`.
    pub fn deployment(name: &str, env: &[(&str, &str)]) -> Deployment {
        let env: Vec<EnvVar> = env
            .iter()
            .map(|(k, v)| EnvVar {
                name: k.to_string(),
                value: Some(v.to_string()),
                ..Default::default()
            })
            .collect();
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("istio-system".into()),
                labels: labels(&[("app", "istiod"), ("istio.io/rev", "default")]),
                ..Default::default()
            },
            spec: DeploymentSpec {
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: labels(&[("app", "istiod"), ("istio", "pilot")]),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "discovery".into(),
                            image: Some("docker.io/istio/pilot:1.28.0".into()),
                            env: Some(env),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub fn replica_set(name: &str, deployment: &str) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: labels(&[("app", "istiod")]),
                owner_references: owned_by("Deployment", deployment),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub fn pod(name: &str, replica_set: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: labels(&[("app", "istiod")]),
                owner_references: owned_by("ReplicaSet", replica_set),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The one istiod Deployment `istiod`, owning pod `istiod-abc`, with `env`.
    pub fn one_istiod(env: &[(&str, &str)]) -> IstiodDeployments {
        Ok(istiod_deployments(
            &[deployment("istiod", env)],
            &[replica_set("istiod-5d9f", "istiod")],
            &[pod("istiod-abc", "istiod-5d9f")],
        ))
    }

    #[test]
    fn deployments_are_found_with_their_pods_env_and_container() {
        let mut canary = deployment("istiod-canary", &[("TOKEN_AUDIENCES", "istio-ca,other")]);
        // A sidecar next to istiod: set env must then name istiod's container.
        let spec = canary.spec.template.spec.as_mut().unwrap();
        spec.containers.insert(
            0,
            Container {
                name: "log-shipper".into(),
                ..Default::default()
            },
        );
        spec.containers[1].env.as_mut().unwrap().push(EnvVar {
            name: "ISTIOD_CUSTOM_HOST".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut other = deployment("prometheus", &[]);
        other.metadata.labels = labels(&[("app", "prometheus")]);
        other.spec.template.metadata = None;
        let found = istiod_deployments(
            &[other, canary, deployment("istiod", &[])],
            &[
                replica_set("istiod-1", "istiod"),
                replica_set("istiod-canary-2", "istiod-canary"),
            ],
            &[
                pod("istiod-1-a", "istiod-1"),
                pod("istiod-canary-2-b", "istiod-canary-2"),
                pod("stray", "gone"),
            ],
        );
        assert_eq!(
            found.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["istiod", "istiod-canary"]
        );
        assert_eq!(found[0].pods, ["istiod-1-a"]);
        assert!(!found[0].several_containers);
        let c = &found[1];
        assert_eq!(
            (c.container.as_str(), c.several_containers),
            ("discovery", true)
        );
        assert_eq!(
            c.env_value("TOKEN_AUDIENCES"),
            Some(&EnvValue::Value("istio-ca,other".into()))
        );
        assert_eq!(c.env_value("ISTIOD_CUSTOM_HOST"), Some(&EnvValue::FromRef));

        let s = Settings::for_tests();
        let all: IstiodDeployments = Ok(found.clone());
        // The pod that answered decides; else only a single Deployment is named.
        assert_eq!(
            pick(&all, Some("istiod-canary-2-b"), "istio-system")
                .unwrap()
                .name,
            "istiod-canary"
        );
        let err = pick(&all, None, "istio-system").unwrap_err();
        assert_eq!(
            err,
            "2 istiod Deployments in istio-system of the primary (istiod, istiod-canary)"
        );
        assert_eq!(
            set_env_command(&s, c, "TOKEN_AUDIENCES", "istio-ca,other,x"),
            "kubectl --context ctx-primary -n istio-system set env deployment/istiod-canary -c discovery TOKEN_AUDIENCES=istio-ca,other,x"
        );
        assert_eq!(
            restart_command(&s, &found[0]),
            "kubectl --context ctx-primary -n istio-system rollout restart deployment/istiod"
        );
    }

    #[test]
    fn lists_keep_their_items() {
        assert_eq!(with_item("other-ca", "istio-ca"), "other-ca,istio-ca");
        assert_eq!(with_item("", "istio-ca"), "istio-ca");
        assert_eq!(with_item("a,,b", "a"), "a,b");
    }

    #[test]
    fn server_name_follows_the_agent() {
        assert_eq!(agent_server_name(None, None), "istiod.istio-system.svc");
        assert_eq!(
            agent_server_name(Some("localhost:15012"), None),
            "istiod.istio-system.svc"
        );
        assert_eq!(
            agent_server_name(Some("istiod.x.svc:15012"), None),
            "istiod.x.svc"
        );
        assert_eq!(agent_server_name(Some("[::1]:15012"), None), "::1");
        assert_eq!(
            agent_server_name(Some("10.0.0.1:15012"), Some("istiod.y.svc")),
            "istiod.y.svc"
        );
    }
}

#[cfg(test)]
mod csr_tests {
    use super::*;
    use crate::probe::clusterz::ClusterzEntry;

    fn entry(id: &str, secret: &str, status: &str) -> ClusterzEntry {
        ClusterzEntry {
            id: id.into(),
            secret_name: secret.into(),
            sync_status: Some(status.into()),
        }
    }

    const SECRET: &str = "istio-system/istio-remote-secret-remote";

    fn diagnose(view: Judgement) -> (String, String) {
        unauthenticated(
            "Unauthenticated",
            "request authenticate failure",
            "remote",
            &view,
            "istio-system",
            "istio-ca",
        )
    }

    #[test]
    fn missing_cluster_names_what_istiod_lists_and_restarts_it() {
        let (d, h) = diagnose(Judgement::Missing {
            from: "pod istiod-abc".into(),
            listed: vec![
                entry("primary", "", "synced"),
                entry("other", "istio-system/istio-remote-secret-other", "synced"),
            ],
        });
        assert!(
            d.starts_with("istiod answered Unauthenticated: \"request authenticate failure\". That is all a gateway is told;"),
            "{d}"
        );
        assert!(
            d.contains("istiod has not loaded the remote secret for cluster \"remote\": its /debug/clusterz (pod istiod-abc) lists only [\"primary\", \"other\"] (istiod logs `client claims to be in cluster \"remote\", but we only know about local cluster \"primary\" and remote clusters [other]`)"),
            "{d}"
        );
        assert!(d.contains("the controller is stuck"), "{d}");
        assert_eq!(
            h,
            "restart istiod so it loads every remote secret again: kubectl --context <primary> -n istio-system rollout restart deployment/istiod (then trace again)"
        );
        // An empty list is said as such, with no guessed log line.
        let (d, _) = diagnose(Judgement::Missing {
            from: "127.0.0.1:15014".into(),
            listed: vec![],
        });
        assert!(
            d.contains("its /debug/clusterz (127.0.0.1:15014) lists no cluster at all. The remote secret is valid"),
            "{d}"
        );
    }

    #[test]
    fn listed_but_not_synced_quotes_the_status() {
        let (d, h) = diagnose(Judgement::NotSynced {
            from: "pod istiod-abc".into(),
            entry: entry("remote", SECRET, "timeout"),
        });
        assert!(
            d.contains("istiod has loaded cluster \"remote\" (Secret istio-system/istio-remote-secret-remote) but its /debug/clusterz (pod istiod-abc) says syncStatus \"timeout\": istiod gave up waiting"),
            "{d}"
        );
        assert!(
            h.starts_with("check that istiod's pod reaches the remote API server"),
            "{h}"
        );
        let (d, h) = diagnose(Judgement::NotSynced {
            from: "pod istiod-abc".into(),
            entry: entry("remote", SECRET, "closed"),
        });
        assert!(
            d.contains("says syncStatus \"closed\": istiod is tearing this cluster down"),
            "{d}"
        );
        assert!(h.contains("rollout restart deployment/istiod"), "{h}");
        let (d, _) = diagnose(Judgement::NotSynced {
            from: "pod istiod-abc".into(),
            entry: entry("remote", SECRET, "syncing"),
        });
        assert!(
            d.contains("says syncStatus \"syncing\": istiod is still listing"),
            "{d}"
        );
        let (d, h) = diagnose(Judgement::NotSynced {
            from: "pod istiod-abc".into(),
            entry: ClusterzEntry {
                sync_status: None,
                ..entry("remote", SECRET, "")
            },
        });
        assert!(
            d.ends_with("says syncStatus \"no syncStatus\", not synced"),
            "{d}"
        );
        assert_eq!(h, READ_LOG_HINT);
    }

    #[test]
    fn synced_leaves_token_audiences() {
        let (d, h) = diagnose(Judgement::Synced {
            entry: entry("remote", SECRET, "synced"),
        });
        assert!(
            d.contains("istiod lists cluster \"remote\" synced (Secret istio-system/istio-remote-secret-remote)"),
            "{d}"
        );
        assert!(
            d.contains(
                "The remaining cause is istiod's TOKEN_AUDIENCES: it does not contain \"istio-ca\""
            ),
            "{d}"
        );
        assert!(
            h.starts_with("make istiod's TOKEN_AUDIENCES include istio-ca: kubectl --context <primary> -n istio-system set env deployment/istiod TOKEN_AUDIENCES=istio-ca"),
            "{h}"
        );
    }

    #[test]
    fn unknown_view_keeps_the_guess_and_says_why() {
        let (d, h) = diagnose(Judgement::Unknown(
            "no pod labelled app=istiod in istio-system of the primary".into(),
        ));
        assert!(
            d.contains("its remote secret controller has not loaded the cluster yet, or its TOKEN_AUDIENCES differ from \"istio-ca\". istiod's own view of its clusters is unknown: no pod labelled app=istiod in istio-system of the primary"),
            "{d}"
        );
        assert_eq!(h, READ_LOG_HINT);
    }
}
