//! Fleet mode: every remote the primary's istiod registers, traced at once
//! (`meshtrace --primary CTX` without `--remote`).
//!
//! The remotes are the ones istiod's secret controller registers
//! (`pkg/kube/multicluster/secretcontroller.go`): each data key of each
//! Secret labelled `istio/multiCluster=true` in istiod's namespace, except a
//! key equal to istiod's own `CLUSTER_ID` (`ignoring cluster as it would
//! overwrite the config cluster`) and a cluster ID an earlier Secret (by
//! name, as the informer lists them at startup) registered already (`cluster
//! has already been registered`); a Secret whose kubeconfig istiod refuses
//! registers nothing, so a later one holding the key does. Each remote is
//! then one ordinary trace ([`super::run`]); the primary's client is shared
//! by all of them with its reads made once ([`crate::probe::kube_cache`]).

use super::steps::{istiod_view_client, read_istiod_deployments, same_server, settings_of};
use super::{Clusters, Skip, TraceOptions};
use crate::inspect::kubeconfig;
use crate::model::{
    FleetRemote, FleetReport, IgnoredKey, Mode, StepId, Target, TraceEvent, TraceReport,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// The steps a remote traced with its remote secret's credentials cannot
/// run: the gateway's token needs `create serviceaccounts/token`, which
/// istiod's reader account does not have, and the rest need that token.
pub const NEED_REMOTE_RIGHTS: &[StepId] = &[
    // The remote's MutatingWebhookConfigurations: istiod's reader lists them
    // only where the chart's istiodRemote.enabled gave it the rule
    // (reader-clusterrole.yaml); read with its credentials the step would
    // blame the operator's rights for the install's shape.
    StepId::InjectionWebhook,
    StepId::GatewayToken,
    StepId::TokenReview,
    StepId::Csr,
    StepId::IssuedChain,
    StepId::Xds,
];

/// The steps that read the remote through `Clusters::remote`: without a
/// context and without a client from the remote secret, none can run.
const READ_THE_REMOTE: &[StepId] = &[
    StepId::GatewayPod,
    StepId::RemoteIstiodEndpoint,
    StepId::RootOfTrust,
    StepId::NetworkLabels,
];

/// One remote istiod registers. Holds the kubeconfig (credentials): no Debug.
pub struct Registered {
    pub cluster_id: String,
    /// `namespace/name` of the Secret it is registered from.
    pub secret: String,
    /// The server of its kubeconfig when istiod accepts the kubeconfig.
    pub server: Option<String>,
    pub kubeconfig: Vec<u8>,
}

/// What istiod's secret controller makes of the remote secrets.
pub struct Registry {
    /// By cluster ID.
    pub remotes: Vec<Registered>,
    pub ignored: Vec<IgnoredKey>,
    /// istiod's insecure kubeconfig options (its sanitizer lets them through).
    pub allowed: Vec<String>,
}

const MC_LABEL: &str = "istio/multiCluster";

/// The most remotes one fleet run traces: a primary that answers with more
/// keys is refused in words rather than traced for hours.
pub const MAX_REMOTES: usize = 1000;

/// Reads the remote secrets and istiod's settings from the primary and
/// registers them as istiod does. An error is a reason fleet mode cannot
/// run (exit 2), in words.
pub async fn registry(primary: &kube::Client, opts: &TraceOptions) -> Result<Registry, String> {
    let ns = &opts.istio_namespace;
    let secrets: Api<Secret> = Api::namespaced(primary.clone(), ns);
    let selector = ListParams::default().labels(&format!("{MC_LABEL}=true"));
    let (deployments, listed) = tokio::join!(
        read_istiod_deployments(primary, ns, opts.timeout),
        tokio::time::timeout(opts.timeout, secrets.list(&selector))
    );
    let listed = match listed {
        Err(_) => {
            return Err(format!(
                "no answer listing the remote secrets (label {MC_LABEL}=true) in {ns} of the primary within {}",
                humantime::format_duration(opts.timeout)
            ));
        }
        Ok(Err(e)) => {
            return Err(format!(
                "cannot list the remote secrets (label {MC_LABEL}=true) in {ns} of the primary: {}",
                crate::probe::kube_error::describe(&e)
            ));
        }
        Ok(Ok(l)) => l.items,
    };
    // istiod's own cluster ID (every revision's) and the kubeconfig options
    // it allows; unreadable Deployments leave Istio's defaults.
    let mut own: Vec<String> = Vec::new();
    let mut allowed: Vec<String> = Vec::new();
    if let Some(id) = &opts.primary_cluster_id {
        own.push(id.clone());
    }
    for d in deployments.iter().flatten() {
        if let Ok(st) = settings_of(d, None, "") {
            if opts.primary_cluster_id.is_none() {
                own.push(st.cluster_id.value.clone());
            }
            allowed.extend(st.insecure_kubeconfig_options.value.iter().cloned());
        }
    }
    if deployments.as_ref().is_ok_and(|d| d.is_empty()) && opts.primary_cluster_id.is_none() {
        own.push("Kubernetes".into());
    }
    allowed.sort();
    allowed.dedup();
    let mut items: Vec<(String, BTreeMap<String, Vec<u8>>)> = listed
        .into_iter()
        .map(|s| {
            let name = format!(
                "{}/{}",
                s.metadata.namespace.unwrap_or_default(),
                s.metadata.name.unwrap_or_default()
            );
            let data = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            (name, data)
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    // Parsing is CPU work a peer controls: off the async workers.
    let allowed2 = allowed.clone();
    let keys: usize = items.iter().map(|(_, d)| d.len()).sum();
    if keys > MAX_REMOTES {
        return Err(format!(
            "the remote secrets in {ns} of the primary hold {keys} keys; meshtrace traces at most {MAX_REMOTES} remotes in one run"
        ));
    }
    let (remotes, ignored) = tokio::task::spawn_blocking(move || register(items, &own, &allowed2))
        .await
        .map_err(|e| format!("reading the remote secrets stopped: {e}"))?;
    Ok(Registry {
        remotes,
        ignored,
        allowed,
    })
}

/// istiod's registration of `secrets` (sorted by name), pure.
fn register(
    secrets: Vec<(String, BTreeMap<String, Vec<u8>>)>,
    own: &[String],
    allowed: &[String],
) -> (Vec<Registered>, Vec<IgnoredKey>) {
    let mut by_id: BTreeMap<String, Registered> = BTreeMap::new();
    let mut ignored = Vec::new();
    for (secret, data) in secrets {
        for (key, kc) in data {
            if own.contains(&key) {
                ignored.push(IgnoredKey {
                    secret: secret.clone(),
                    key,
                    why: "istiod's own CLUSTER_ID: istiod skips it (`ignoring cluster as it would overwrite the config cluster`)".into(),
                });
                continue;
            }
            let server = kubeconfig::parse_remote_kubeconfig_allowing(&kc, allowed)
                .ok()
                .map(|k| k.server);
            let this = Registered {
                cluster_id: key.clone(),
                secret: secret.clone(),
                server,
                kubeconfig: kc,
            };
            match by_id.get_mut(&key) {
                None => {
                    by_id.insert(key, this);
                }
                // The earlier one registered nothing (istiod refused its
                // kubeconfig): this one registers the cluster ID.
                Some(first) if first.server.is_none() && this.server.is_some() => {
                    ignored.push(IgnoredKey {
                        secret: first.secret.clone(),
                        key: key.clone(),
                        why: format!(
                            "istiod refuses its kubeconfig, so {} registers the cluster ID",
                            this.secret
                        ),
                    });
                    *first = this;
                }
                Some(first) => ignored.push(IgnoredKey {
                    secret: this.secret,
                    key,
                    why: format!(
                        "{} registered the cluster ID first (`cluster has already been registered`)",
                        first.secret
                    ),
                }),
            }
        }
    }
    (by_id.into_values().collect(), ignored)
}

/// A remote to trace and how it is reached (before clients are built).
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub remote: FleetRemote,
    /// Index into [`Registry::remotes`]; None for a `--remote` context no
    /// remote secret points at.
    pub registered: Option<usize>,
}

/// Which kube context traces each registered remote: `--remote-context
/// ID=CTX` first; else a context whose server is the remote secret's
/// (among the `--remote` contexts when any were given, else every context
/// but the primary's; the first by name when several); else none. A
/// `--remote` context no remote secret points at is traced on its own.
/// `contexts`: (name, server) of every kubeconfig context. Errors name the
/// bad value (exit 2).
pub fn plan(
    reg: &Registry,
    explicit: &[(String, String)],
    given: &[String],
    contexts: &[(String, String)],
    primary_context: &str,
) -> Result<Vec<Planned>, String> {
    for (id, ctx) in explicit {
        if !reg.remotes.iter().any(|r| r.cluster_id == *id) {
            let known: Vec<&str> = reg.remotes.iter().map(|r| r.cluster_id.as_str()).collect();
            return Err(format!(
                "--remote-context {:?}: the primary registers no cluster ID {id:?} (registered: {})",
                format!("{id}={ctx}"),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
    }
    let server_of = |name: &str| {
        contexts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    };
    let mut candidates: Vec<(String, String)> = if given.is_empty() {
        contexts
            .iter()
            .filter(|(n, _)| n != primary_context)
            .cloned()
            .collect()
    } else {
        given
            .iter()
            .filter_map(|n| server_of(n).map(|s| (n.clone(), s)))
            .collect()
    };
    candidates.sort();
    let mut out = Vec::new();
    let mut used: Vec<String> = Vec::new();
    for (i, r) in reg.remotes.iter().enumerate() {
        let (context, rule) = if let Some((_, c)) =
            explicit.iter().find(|(id, _)| *id == r.cluster_id)
        {
            (
                Some(c.clone()),
                format!("--remote-context {}={c}", r.cluster_id),
            )
        } else if let Some(srv) = &r.server {
            let matching: Vec<&(String, String)> = candidates
                .iter()
                .filter(|(_, s)| same_server(s, srv))
                .collect();
            match matching.as_slice() {
                [] => (
                    None,
                    format!(
                        "no kube context has the remote secret's server {srv}: traced with the remote secret's own credentials, as istiod reads the remote"
                    ),
                ),
                [(c, _)] => (
                    Some(c.clone()),
                    format!("context {c}: its server is the remote secret's ({srv})"),
                ),
                [(c, _), ..] => (
                    Some(c.clone()),
                    format!(
                        "context {c}: its server is the remote secret's ({srv}); the first by name of {}",
                        matching
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            }
        } else {
            (
                None,
                "istiod refuses the remote secret's kubeconfig, so no server to match a context with"
                    .to_string(),
            )
        };
        if let Some(c) = &context {
            used.push(c.clone());
        }
        out.push(Planned {
            remote: FleetRemote {
                cluster_id: Some(r.cluster_id.clone()),
                secret: Some(r.secret.clone()),
                server: r.server.clone(),
                context,
                context_rule: rule,
            },
            registered: Some(i),
        });
    }
    for g in given {
        if used.contains(g) {
            continue;
        }
        let srv = server_of(g).unwrap_or_default();
        out.push(Planned {
            remote: FleetRemote {
                cluster_id: None,
                secret: None,
                server: None,
                context: Some(g.clone()),
                context_rule: format!(
                    "--remote {g}: no remote secret istiod registers points at its server {srv}"
                ),
            },
            registered: None,
        });
    }
    Ok(out)
}

/// The skips of [`skips_without_context`] for a remote whose kube context
/// failed its preflight: the reasons name the context and quote the
/// preflight's line (its cause and what to try) instead of the missing context.
pub fn after_failed_preflight(
    skips: Vec<Skip>,
    cluster_id: &str,
    context: &str,
    why: &str,
) -> Vec<Skip> {
    let missing = format!("no kube context for remote {cluster_id}");
    let instead = format!("kube context {context:?} of remote {cluster_id} failed its preflight");
    let fix = format!("; {}", no_context_fix(cluster_id));
    skips
        .into_iter()
        .map(|s| {
            let r = s.why.replacen(&missing, &instead, 1).replacen(&fix, "", 1);
            Skip {
                why: format!("{r}; {why}"),
                ..s
            }
        })
        .collect()
}

fn no_context_fix(cluster_id: &str) -> String {
    format!(
        "add a kube context for the remote to the kubeconfig, or pass --remote-context {cluster_id}=CTX"
    )
}

/// The steps skipped, and why, for a remote traced without a context.
pub fn skips_without_context(cluster_id: &str, client_built: bool) -> Vec<Skip> {
    let fix = no_context_fix(cluster_id);
    let no_context = |step: StepId, why: String| Skip {
        step,
        code: crate::findings::generic::NO_CONTEXT,
        why,
    };
    let mut out: Vec<Skip> = NEED_REMOTE_RIGHTS
        .iter()
        .map(|s| {
            let what = match s {
                StepId::InjectionWebhook => {
                    "the remote's MutatingWebhookConfigurations, which istiod's reader account may list only in some installs"
                }
                _ => "a TokenRequest for the gateway, and what follows from its token",
            };
            no_context(
                *s,
                format!(
                    "not run: no kube context for remote {cluster_id}, and this step needs the remote's own rights ({what}), which the remote secret's credentials do not give; {fix}"
                ),
            )
        })
        .collect();
    if !client_built {
        out.extend(READ_THE_REMOTE.iter().map(|s| {
            no_context(
                *s,
                format!(
                    "not run: no kube context for remote {cluster_id}, and no client from its remote secret (istiod refuses the kubeconfig); {fix}"
                ),
            )
        }));
    }
    out
}

/// A client as istiod has it from a registered remote's kubeconfig, and
/// the kubeconfig's inline secrets (for the sanitizer).
pub async fn istiod_view(
    r: &Registered,
    reg: &Registry,
    opts: &TraceOptions,
) -> (Option<kube::Client>, Vec<String>) {
    let Ok(kc) = kubeconfig::parse_remote_kubeconfig_allowing(&r.kubeconfig, &reg.allowed) else {
        return (None, vec![]);
    };
    let mut secrets = Vec::new();
    for a in &kc.raw.auth_infos {
        if let Some(info) = &a.auth_info {
            secrets.extend(kubeconfig::inline_secrets(info));
        }
    }
    (istiod_view_client(&kc, opts.timeout).await.ok(), secrets)
}

/// A client for a remote meshtrace cannot reach: every request is refused
/// at once (port 9 on loopback is "discard", closed on any sane host), so a
/// step that asks anyway gets an error, never another cluster's answer.
pub fn unreachable_client(timeout: std::time::Duration) -> Option<kube::Client> {
    let url: http::Uri = "https://127.0.0.1:9".parse().ok()?;
    let cfg = kube::Config::new(url);
    crate::probe::kube_client::build(cfg, crate::probe::kube_client::Limits::new(timeout)).ok()
}

/// One remote, ready to trace.
#[derive(Clone)]
pub struct Prepared {
    pub remote: FleetRemote,
    pub clusters: Clusters,
    pub opts: TraceOptions,
    pub target: Target,
}

/// Traces every prepared remote, at most `parallel` at once, forwarding
/// each trace's events with the remote's index; the reports come back in
/// the order given.
pub async fn run(
    prepared: Vec<Prepared>,
    parallel: usize,
    events: mpsc::UnboundedSender<(usize, TraceEvent)>,
) -> Vec<TraceReport> {
    let runs = prepared.into_iter().enumerate().map(|(i, p)| {
        let out = events.clone();
        async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let forward = async {
                while let Some(e) = rx.recv().await {
                    let _ = out.send((i, e));
                }
            };
            let (report, ()) = tokio::join!(super::run(p.clusters, p.opts, p.target, tx), forward);
            (i, report)
        }
    });
    let mut done: Vec<(usize, TraceReport)> = futures::stream::iter(runs)
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// The fleet document of one run.
#[allow(clippy::too_many_arguments)]
pub fn report(
    primary: &str,
    opts: &TraceOptions,
    mode: Mode,
    fault: Option<String>,
    mut remotes: Vec<FleetRemote>,
    mut ignored: Vec<IgnoredKey>,
    mut reports: Vec<TraceReport>,
    total_ms: f64,
    started_at: String,
) -> FleetReport {
    // Keys, servers and names are the primary's remote secrets' words.
    remotes.iter_mut().for_each(FleetRemote::sanitize);
    ignored.iter_mut().for_each(IgnoredKey::sanitize);
    for r in &mut reports {
        r.target.sanitize();
    }
    let (verdict, counts) = FleetReport::tally(&reports);
    FleetReport {
        schema: crate::model::FLEET_SCHEMA_VERSION.to_string(),
        primary: primary.to_string(),
        istio_namespace: opts.istio_namespace.clone(),
        mode,
        fault,
        verdict,
        total_ms,
        meshtrace_version: Some(crate::model::version().to_string()),
        started_at: Some(started_at),
        finished_at: Some(crate::model::now_rfc3339()),
        counts,
        ignored,
        remotes,
        reports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kc(server: &str) -> Vec<u8> {
        crate::lab::world::kubeconfig("x", server, "", "t").into_bytes()
    }

    fn secret(name: &str, keys: &[(&str, &str)]) -> (String, BTreeMap<String, Vec<u8>>) {
        (
            format!("istio-system/{name}"),
            keys.iter().map(|(k, s)| (k.to_string(), kc(s))).collect(),
        )
    }

    #[test]
    fn registers_each_key_as_istiod_does() {
        let (remotes, ignored) = register(
            vec![
                secret("a", &[("r1", "https://10.0.0.1"), ("primary", "https://p")]),
                secret(
                    "b",
                    &[("r1", "https://10.0.0.9"), ("r2", "https://10.0.0.2")],
                ),
            ],
            &["primary".to_string()],
            &[],
        );
        let ids: Vec<_> = remotes.iter().map(|r| r.cluster_id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2"]);
        assert_eq!(remotes[0].secret, "istio-system/a");
        assert_eq!(ignored.len(), 2);
        assert!(
            ignored[0].why.contains("own CLUSTER_ID"),
            "{:?}",
            ignored[0]
        );
        assert_eq!(ignored[1].secret, "istio-system/b");
        assert!(ignored[1].why.contains("already been registered"));
    }

    #[test]
    fn a_refused_kubeconfig_registers_nothing_so_a_later_one_does() {
        let mut bad = secret("a", &[]);
        bad.1.insert("r1".into(), b"not: [yaml".to_vec());
        let (remotes, ignored) = register(
            vec![bad, secret("b", &[("r1", "https://10.0.0.9")])],
            &[],
            &[],
        );
        assert_eq!(remotes[0].secret, "istio-system/b");
        assert_eq!(remotes[0].server.as_deref(), Some("https://10.0.0.9"));
        assert_eq!(ignored[0].secret, "istio-system/a");
    }

    fn reg(ids: &[(&str, &str)]) -> Registry {
        Registry {
            remotes: ids
                .iter()
                .map(|(id, s)| Registered {
                    cluster_id: id.to_string(),
                    secret: format!("istio-system/istio-remote-secret-{id}"),
                    server: Some(s.to_string()),
                    kubeconfig: vec![],
                })
                .collect(),
            ignored: vec![],
            allowed: vec![],
        }
    }

    #[test]
    fn contexts_are_matched_by_server_and_explicit_ones_win() {
        let r = reg(&[
            ("r1", "https://10.0.0.1:6443"),
            ("r2", "https://10.0.0.2"),
            ("r3", "https://10.0.0.3"),
        ]);
        let ctxs = [
            ("p".to_string(), "https://10.0.0.9".to_string()),
            ("z-one".to_string(), "https://10.0.0.1:6443/".to_string()),
            ("a-one".to_string(), "https://10.0.0.1:6443".to_string()),
            ("two".to_string(), "https://10.0.0.2".to_string()),
            ("other".to_string(), "https://10.0.0.7".to_string()),
        ];
        let p = plan(&r, &[("r2".into(), "other".into())], &[], &ctxs, "p").unwrap();
        let got: Vec<_> = p.iter().map(|x| x.remote.context.clone()).collect();
        assert_eq!(got, [Some("a-one".into()), Some("other".into()), None]);
        assert!(
            p[0].remote
                .context_rule
                .contains("first by name of a-one, z-one")
        );
        assert!(
            p[1].remote
                .context_rule
                .starts_with("--remote-context r2=other")
        );
        assert!(
            p[2].remote
                .context_rule
                .contains("remote secret's own credentials")
        );
        // --remote: only those are candidates; one that matches nothing is traced too.
        let p = plan(&r, &[], &["z-one".into(), "other".into()], &ctxs, "p").unwrap();
        assert_eq!(p[0].remote.context.as_deref(), Some("z-one"));
        assert_eq!(p[1].remote.context, None);
        assert_eq!(p.len(), 4);
        assert_eq!(p[3].remote.context.as_deref(), Some("other"));
        assert_eq!(p[3].registered, None);
    }

    #[test]
    fn an_unknown_cluster_id_is_refused_with_the_known_ones() {
        let r = reg(&[("r1", "https://a"), ("r2", "https://b")]);
        let e = plan(&r, &[("r9".into(), "c".into())], &[], &[], "p").unwrap_err();
        assert!(e.contains("\"r9=c\"") && e.contains("r1, r2"), "{e}");
    }
}
