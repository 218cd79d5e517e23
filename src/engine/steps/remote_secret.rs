//! `remote-secret`: the Secret the primary's istiod reads for the remote.
//!
//! istiod's secret controller (`pkg/kube/multicluster/secretcontroller.go`)
//! watches Secrets labelled `istio/multiCluster=true` in its own namespace
//! only. Each data key is a cluster ID, its value a kubeconfig. A key equal
//! to istiod's own `CLUSTER_ID` is skipped (`ignoring cluster as it would
//! overwrite the config cluster`), and a cluster ID a second Secret holds too
//! is skipped (`cluster has already been registered`). The gateway's
//! `clusterid` picks the cluster its token is reviewed in, directly or
//! through istiod's `--clusterAliases`
//! (`security/pkg/server/ca/authenticate/kubeauth/kube_jwt.go`).

use super::remote::{primary_cluster_id, server_of};
use super::{Settings, api_code, kube_err, quote_list};
use crate::engine::facts::{GatewayFacts, RemoteSecretFacts};
use crate::engine::{Ctx, Outcome};
use crate::findings::{Finding, shell_word};
use crate::model::StepId;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use serde_json::json;
use std::collections::BTreeMap;

crate::causes! { StepId::RemoteSecret;
    NONE_REGISTERED = "none-registered", "the primary has no remote secret: no Secret labelled istio/multiCluster=true in istiod's namespace";
    NOT_LABELLED = "not-labelled", "the Secret holding the cluster's key lacks the label istio/multiCluster=true, so istiod never reads it";
    WRONG_NAMESPACE = "wrong-namespace", "the remote secret is in a namespace istiod does not watch";
    NO_KEY_FOR_CLUSTER_ID = "no-key-for-cluster-id", "no remote secret has a data key equal to the cluster ID the gateway sends";
    KEY_CASE_DIFFERS = "key-case-differs", "a remote secret's key equals the gateway's cluster ID but for case; istiod compares them exactly";
    CLUSTER_ID_IS_PRIMARY = "cluster-id-is-primary", "the remote uses the primary's own cluster ID, so istiod reviews its token in the primary";
    DUPLICATE_KEY = "duplicate-key", "several remote secrets hold the cluster's key; istiod registers one and ignores the others";
    NO_CLUSTER_ID = "no-cluster-id", "no cluster ID to look for: the gateway sends none and no key points at the remote";
    LIST_REFUSED = "list-refused", "the primary refused meshtrace's list of remote secrets";
}

const MC_LABEL: &str = "istio/multiCluster";
const FROM_SERVER: &str = "remote secret key whose server is the --remote context's";

/// What `remote-secret` saw. Holds the Secrets as the API returned them
/// (kubeconfigs and their tokens included): never printed, so no `Debug`.
pub struct SecretFacts {
    /// istiod's namespace (`--istio-namespace`).
    pub namespace: String,
    /// The `--remote` context's API server URL.
    pub remote_server: String,
    /// The cluster ID from `gateway-pod` (`--cluster-id` or the gateway's env).
    pub gateway_cluster_id: Option<(String, &'static str)>,
    /// The gateway `gateway-pod` found, if any.
    pub gateway: Option<GatewayFacts>,
    /// The primary's own cluster ID and where it came from.
    pub primary_cluster_id: Option<(String, &'static str)>,
    /// istiod's `--clusterAliases` (alias -> cluster ID).
    pub cluster_aliases: BTreeMap<String, String>,
    /// istiod's `PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS`, for `remote-kubeconfig`.
    pub insecure_options: Vec<String>,
    /// Secrets labelled `istio/multiCluster=true`: in all namespaces, or in
    /// istiod's only when a cluster-wide list was forbidden.
    pub labelled: Result<Vec<Secret>, String>,
    pub all_namespaces: bool,
    /// The `server` of each labelled key whose kubeconfig istiod accepts:
    /// (namespace, secret, key) -> URL.
    pub servers: BTreeMap<(String, String, String), String>,
    /// Every Secret in istiod's namespace, read only when no labelled one
    /// holds the key (to find the near misses).
    pub namespace_secrets: Option<Result<Vec<Secret>, String>>,
}

pub async fn run(ctx: &Ctx) -> Outcome {
    let facts = gather(ctx).await;
    let out = judge(&facts, &Settings::of(ctx));
    if let Some(l) = lookup(&facts) {
        let mut f = ctx.facts();
        if f.cluster_id.is_none() {
            f.cluster_id = Some(l.cluster_id.clone());
        }
        if let (false, Some(chosen)) = (l.is_primary, l.matching.first()) {
            f.remote_secret = Some(RemoteSecretFacts {
                namespace: facts.namespace.clone(),
                name: name_of(chosen).to_string(),
                key: l.key.clone(),
                kubeconfig: data_of(chosen, &l.key).to_vec(),
                keys: keys_of(chosen),
                istiod_insecure_options: facts.insecure_options.clone(),
            });
        }
    }
    out
}

pub async fn gather(ctx: &Ctx) -> SecretFacts {
    let ns = ctx.opts.istio_namespace.clone();
    let primary = ctx.clusters.primary.clone();
    let (gateway_cluster_id, gateway) = {
        let f = ctx.facts();
        (f.cluster_id.clone(), f.gateway.clone())
    };
    // No gateway read (gateway-pod failed, or a fleet remote whose gateway
    // cannot be read): --cluster-id still names the key to look for.
    let gateway_cluster_id =
        gateway_cluster_id.or_else(|| ctx.opts.cluster_id.clone().map(|id| (id, "--cluster-id")));
    let (labelled, all_namespaces) = list_labelled(&primary, &ns).await;
    // istiod's settings as control-plane read them: its args for
    // --clusterAliases, its env for the kubeconfig options it allows.
    let (insecure_options, cluster_aliases) = match ctx.facts().istiod_settings.clone() {
        Some(st) => (
            st.insecure_kubeconfig_options.value.clone(),
            st.deployment
                .as_ref()
                .map(|d| cluster_aliases(&d.args))
                .unwrap_or_default(),
        ),
        None => (vec![], BTreeMap::new()),
    };
    // Parsing is CPU work a peer controls: off the async workers. A key's
    // server is kept only when istiod accepts its kubeconfig.
    let allowed = insecure_options.clone();
    let values: Vec<((String, String, String), Vec<u8>)> = labelled
        .as_ref()
        .map(|l| {
            l.iter()
                .flat_map(|s| {
                    s.data.iter().flatten().map(|(k, v)| {
                        (
                            (ns_of(s).to_string(), name_of(s).to_string(), k.clone()),
                            v.0.clone(),
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let servers = tokio::task::spawn_blocking(move || {
        values
            .into_iter()
            .filter_map(|(at, v)| server_of(&v, &allowed).map(|s| (at, s)))
            .collect()
    })
    .await
    .unwrap_or_default();
    let mut f = SecretFacts {
        namespace: ns.clone(),
        remote_server: ctx.clusters.remote_server.clone(),
        gateway_cluster_id,
        gateway,
        primary_cluster_id: None,
        cluster_aliases,
        insecure_options,
        labelled,
        all_namespaces,
        servers,
        namespace_secrets: None,
    };
    // Without a cluster ID the judge needs nothing more (and the remote,
    // which primary_cluster_id may ask, may be the reason there is none).
    if f.labelled.is_err() || cluster_id_of(&f).is_none() {
        return f;
    }
    f.primary_cluster_id = primary_cluster_id(ctx).await;
    let found = lookup(&f).is_some_and(|l| !l.matching.is_empty());
    if !found {
        // The namespace may hold large Secrets (Helm releases): read only
        // when the near misses are what the judge needs.
        f.namespace_secrets = Some(
            Api::<Secret>::namespaced(primary, &ns)
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .map_err(|e| kube_err(&e)),
        );
    }
    f
}

/// The Secrets labelled `istio/multiCluster=true`, cluster-wide, else in
/// istiod's namespace, and whether the list was cluster-wide. Needs no other
/// step's facts: `steps::prefetch` starts it with the trace.
pub async fn list_labelled(
    primary: &kube::Client,
    ns: &str,
) -> (Result<Vec<Secret>, String>, bool) {
    let selector = ListParams::default().labels(&format!("{MC_LABEL}=true"));
    match Api::<Secret>::all(primary.clone()).list(&selector).await {
        Ok(l) => (Ok(l.items), true),
        // istiod needs only its own namespace: a context that may list
        // Secrets there but not cluster-wide can still be traced.
        Err(e) if api_code(&e) == Some(403) => {
            match Api::<Secret>::namespaced(primary.clone(), ns)
                .list(&selector)
                .await
            {
                Ok(l) => (Ok(l.items), false),
                Err(e) => (Err(kube_err(&e)), false),
            }
        }
        Err(e) => (Err(kube_err(&e)), true),
    }
}

/// pilot-discovery's `--clusterAliases` (pflag StringToString: `a=b,c=d`,
/// repeatable, `--flag=v` or `--flag v`).
pub fn cluster_aliases(args: &[String]) -> BTreeMap<String, String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut out = BTreeMap::new();
    for (i, w) in words.iter().enumerate() {
        let value = match w.strip_prefix("--clusterAliases") {
            Some(v) if v.starts_with('=') => &v[1..],
            Some("") => words.get(i + 1).copied().unwrap_or(""),
            _ => continue,
        };
        for pair in value.split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

fn ns_of(s: &Secret) -> &str {
    s.metadata.namespace.as_deref().unwrap_or("")
}
fn name_of(s: &Secret) -> &str {
    s.metadata.name.as_deref().unwrap_or("")
}
fn keys_of(s: &Secret) -> Vec<String> {
    s.data.iter().flatten().map(|(k, _)| k.clone()).collect()
}
fn holds(s: &Secret, key: &str) -> bool {
    s.data.as_ref().is_some_and(|d| d.contains_key(key))
}
fn data_of<'a>(s: &'a Secret, key: &str) -> &'a [u8] {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
        .unwrap_or_default()
}
fn label_of(s: &Secret) -> Option<&str> {
    s.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MC_LABEL))
        .map(String::as_str)
}
use super::secret_fix::same_server;

/// The cluster ID to look for: the gateway's, else the key (in istiod's
/// namespace) whose kubeconfig points at the `--remote` context's server.
fn cluster_id_of(f: &SecretFacts) -> Option<(String, &'static str)> {
    if let Some(c) = &f.gateway_cluster_id {
        return Some(c.clone());
    }
    f.servers
        .iter()
        .find(|((ns, _, _), server)| *ns == f.namespace && same_server(server, &f.remote_server))
        .map(|((_, _, key), _)| (key.clone(), FROM_SERVER))
}

/// The cluster ID and the Secrets istiod would take it from.
struct Lookup<'a> {
    cluster_id: (String, &'static str),
    /// The data key istiod uses: the cluster ID, or the cluster its alias names.
    key: String,
    /// The cluster ID (or its alias) is istiod's own.
    is_primary: bool,
    /// Labelled Secrets in istiod's namespace holding `key`, the one istiod
    /// registers first (see [`REGISTERS`]), then the others by name.
    matching: Vec<&'a Secret>,
    /// The first by name has a kubeconfig istiod refuses, and a later one
    /// is registered instead.
    refused_first: Option<&'a Secret>,
}

/// Which Secret istiod registers for a cluster ID several hold, as
/// `addRemoteConfig` in pkg/kube/multicluster/secretcontroller.go does it.
pub(super) const REGISTERS: &str = "istiod processes the labelled Secrets in the order its informer lists them (by name) at startup; the first whose kubeconfig it accepts registers the cluster ID, a later one is ignored (`cluster has already been registered`); a key equal to istiod's own CLUSTER_ID is skipped; keys match the clusterid exactly (case-sensitive)";

fn lookup(f: &SecretFacts) -> Option<Lookup<'_>> {
    let labelled = f.labelled.as_ref().ok()?;
    let (cid, src) = cluster_id_of(f)?;
    // By name, as the API server lists them; the first one istiod accepts
    // the kubeconfig of first (a refused one registers nothing).
    let here = |key: &str| -> Vec<&Secret> {
        let mut m: Vec<&Secret> = labelled
            .iter()
            .filter(|s| ns_of(s) == f.namespace && holds(s, key))
            .collect();
        m.sort_by(|a, b| name_of(a).cmp(name_of(b)));
        let ok = |x: &Secret| {
            f.servers.contains_key(&(
                ns_of(x).to_string(),
                name_of(x).to_string(),
                key.to_string(),
            ))
        };
        if let Some(i) = m.iter().position(|x| ok(x)) {
            let first = m.remove(i);
            m.insert(0, first);
        }
        m
    };
    let alias = f.cluster_aliases.get(&cid);
    let pid = f.primary_cluster_id.as_ref().map(|p| &p.0);
    let is_primary = pid.is_some_and(|p| *p == cid || Some(p) == alias);
    // kube_jwt.go: the cluster ID itself first, then its alias.
    let (key, matching) = match (here(&cid), alias) {
        (m, Some(a)) if m.is_empty() => (a.clone(), here(a)),
        (m, _) => (cid.clone(), m),
    };
    let refused_first = matching
        .iter()
        .skip(1)
        .copied()
        .min_by(|a, b| name_of(a).cmp(name_of(b)))
        .filter(|x| matching.first().is_some_and(|c| name_of(x) < name_of(c)));
    Some(Lookup {
        cluster_id: (cid, src),
        key,
        is_primary,
        matching,
        refused_first,
    })
}

pub fn judge(f: &SecretFacts, s: &Settings) -> Outcome {
    let mut out = Outcome::new();
    let ns = f.namespace.as_str();
    let kp = s.kubectl_primary();
    let labelled = match &f.labelled {
        Ok(l) => l,
        Err(e) => {
            return out.failing(
                Finding::new(
                    &LIST_REFUSED,
                    format!("the primary refused to list Secrets labelled {MC_LABEL}=true"),
                )
                .note(format!(
                    "meshtrace reads remote secrets as the --primary context ({}); it needs list on secrets in {ns} (cluster-wide to also find misplaced ones). Check with: {kp} auth can-i list secrets -n {ns}",
                    s.primary_context
                )),
                format!("listing Secrets labelled {MC_LABEL}=true in the primary failed: {e}"),
            );
        }
    };
    let here: Vec<&Secret> = labelled.iter().filter(|x| ns_of(x) == ns).collect();
    out.ev(
        "remote_secrets",
        here.iter()
            .map(|x| json!({"name": name_of(x), "keys": keys_of(x)}))
            .collect::<Vec<_>>(),
    );
    if !f.all_namespaces {
        out.ev(
            "note",
            format!(
                "Secrets listed in {ns} only: the --primary context may not list them cluster-wide"
            ),
        );
    }
    out.ev(
        "primary_cluster_id",
        f.primary_cluster_id
            .as_ref()
            .map(|(v, src)| json!({"value": v, "source": src})),
    );
    let Some(l) = lookup(f) else {
        if f.gateway.is_none() {
            // The gateway's cluster ID is unknown because gateway-pod failed:
            // that is the cause, not a gateway without the setting.
            return out.blocked(
                StepId::GatewayPod,
                format!(
                    "no cluster ID to look for: gateway-pod did not pass, and no remote secret in {ns} points at the --remote server {} (pass --cluster-id to trace without it)",
                    f.remote_server
                ),
            );
        }
        return out.failing(
            Finding::new(&NO_CLUSTER_ID, "no cluster ID: the gateway sends none, and no remote secret points at the remote")
                .note("meshtrace needs the cluster ID the gateway should send: pass --cluster-id ID (the remote's values.global.multiCluster.clusterName, or the data key of its remote secret); gateway-pod has the gateway's own fix"),
            format!(
                "the gateway sets no ISTIO_META_CLUSTER_ID, and no key in {ns} has a kubeconfig whose server is the --remote server {}",
                f.remote_server
            ),
        );
    };
    let (cid, src) = (&l.cluster_id.0, l.cluster_id.1);
    out.ev("cluster_id", json!({"value": cid, "source": src}));
    if l.key != *cid {
        out.ev(
            "cluster_alias",
            json!({"alias": cid, "cluster": l.key, "source": "istiod --clusterAliases"}),
        );
    }
    if l.is_primary {
        return cluster_id_is_primary(out, f, s, cid, src, labelled);
    }
    if let Some(chosen) = l.matching.first() {
        let key = &l.key;
        out.ev("rule", REGISTERS);
        out.ev("secret", format!("{ns}/{}", name_of(chosen)))
            .ev("key", key)
            .ev("kubeconfig_bytes", data_of(chosen, key).len());
        if let Some(a) = chosen
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("networking.istio.io/cluster"))
        {
            out.ev("annotation_networking.istio.io/cluster", a);
        }
        if l.matching.len() > 1 {
            return duplicate_key(out, f, s, key, &l.matching, l.refused_first);
        }
        return out.pass();
    }
    near_miss(out, f, s, cid, src, labelled)
}

/// No labelled Secret in istiod's namespace holds the key: the usual
/// mistakes first (no label, wrong namespace), then none at all, then keys
/// that name other clusters.
fn near_miss(
    out: Outcome,
    f: &SecretFacts,
    s: &Settings,
    cid: &str,
    src: &str,
    labelled: &[Secret],
) -> Outcome {
    let ns = f.namespace.as_str();
    let unlabelled = f
        .namespace_secrets
        .as_ref()
        .and_then(|r| r.as_ref().ok())
        .into_iter()
        .flatten()
        .find(|x| holds(x, cid) && label_of(x) != Some("true"));
    if let Some(x) = unlabelled {
        let name = name_of(x);
        let seen = label_of(x).map_or("absent".to_string(), |v| format!("{v:?}"));
        return out.failing(
            Finding::new(
                &NOT_LABELLED,
                format!("Secret {ns}/{name} has key {cid:?} but no label {MC_LABEL}=true"),
            )
            .command(format!(
                "{} -n {ns} label secret {name} {MC_LABEL}=true --overwrite",
                s.kubectl_primary()
            ))
            .note(format!(
                "istiod watches only Secrets labelled {MC_LABEL}=true; once labelled it registers cluster {cid:?} without a restart"
            )),
            format!(
                "Secret {ns}/{name} has data key {cid:?} but is not labelled {MC_LABEL}=true (label: {seen}), so istiod never reads it"
            ),
        );
    }
    let misplaced = labelled.iter().find(|x| ns_of(x) != ns && holds(x, cid));
    if let Some(x) = misplaced {
        let (other, name) = (ns_of(x), name_of(x));
        let keep = f
            .servers
            .get(&(other.to_string(), name.to_string(), cid.to_string()))
            .filter(|srv| !same_server(srv, &f.remote_server));
        let mut note = format!(
            "This writes {ns}/{}; istiod picks it up without a restart. Then delete the copy it never reads: {} -n {other} delete secret {name}",
            secret_name_for(cid),
            s.kubectl_primary()
        );
        if let Some(srv) = keep {
            note.push_str(&format!(
                ". --server keeps the copy's address {srv} (the --remote context uses {})",
                f.remote_server
            ));
        }
        return out.failing(
            Finding::new(
                &WRONG_NAMESPACE,
                format!("the remote secret for {cid:?} is in namespace {other}; istiod reads only {ns}"),
            )
            .commands(create_commands(s, cid, keep.map(String::as_str)))
            .note(with_caveats(note, f, cid)),
            format!(
                "Secret {other}/{name} is labelled and has data key {cid:?}, but istiod only watches namespace {ns:?}"
            ),
        );
    }
    let here: Vec<&Secret> = labelled.iter().filter(|x| ns_of(x) == ns).collect();
    if here.is_empty() {
        return out.failing(
            Finding::new(
                &NONE_REGISTERED,
                format!("no remote secret in {ns} of the primary: istiod knows no cluster {cid:?}"),
            )
            .commands(create_commands(s, cid, None))
            .note(with_caveats(
                format!(
                    "This writes {ns}/{} for the remote's istio-reader-service-account (created if missing); istiod picks it up without a restart",
                    secret_name_for(cid)
                ),
                f,
                cid,
            )),
            format!(
                "no remote secret in {ns} of the primary (no Secret labelled {MC_LABEL}=true); expected one with data key {cid:?} ({src})"
            ),
        );
    }
    let keys: Vec<String> = here.iter().flat_map(|x| keys_of(x)).collect();
    if let Some(x) = here
        .iter()
        .find(|x| keys_of(x).iter().any(|k| k.eq_ignore_ascii_case(cid)))
    {
        return key_case_differs(out, f, s, cid, src, x);
    }
    // A key that points at this remote under another name: the likely typo.
    let stale: Vec<String> = f
        .servers
        .iter()
        .filter(|((n, _, _), srv)| *n == ns && same_server(srv, &f.remote_server))
        .map(|((_, name, key), _)| format!("{key:?} ({ns}/{name})"))
        .collect();
    let mut note =
        format!("This registers the remote as {cid:?}; istiod picks it up without a restart");
    if !stale.is_empty() {
        note.push_str(&format!(
            ". {} points at the same API server: if the remote's workloads send that ID, set the gateway's ISTIO_META_CLUSTER_ID to it instead; else remove that key once the gateway works",
            stale.join(", ")
        ));
    }
    out.failing(
        Finding::new(
            &NO_KEY_FOR_CLUSTER_ID,
            format!(
                "no remote secret has key {cid:?}; keys found: {}",
                quote_list(&keys)
            ),
        )
        .commands(create_commands(s, cid, None))
        .note(with_caveats(note, f, cid)),
        format!(
            "no remote secret in {ns} has data key {cid:?} ({src}); keys found: {}",
            quote_list(&keys)
        ),
    )
}

/// A key equal to the cluster ID but for case: istiod's lookup
/// (`GetRemoteKubeClient`, kube_jwt.go) compares cluster IDs exactly.
fn key_case_differs(
    out: Outcome,
    f: &SecretFacts,
    s: &Settings,
    cid: &str,
    src: &str,
    x: &Secret,
) -> Outcome {
    let ns = f.namespace.as_str();
    let name = name_of(x);
    let key = keys_of(x)
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(cid))
        .unwrap_or_default();
    let mut finding = Finding::new(
        &KEY_CASE_DIFFERS,
        format!("key {key:?} of {ns}/{name} differs from cluster ID {cid:?} only in case"),
    );
    let deployment = f.gateway.as_ref().and_then(|g| {
        g.deployment
            .as_ref()
            .and_then(|d| d.metadata.name.clone())
            .or_else(|| deployment_of(&g.pod, &g.labels))
            .map(|d| (g.namespace.clone(), d))
    });
    let note;
    if is_dns1123_label(cid) {
        // The gateway's ID is one istioctl can write: the key moves to it.
        let mut commands = create_commands(s, cid, None);
        commands.push(format!(
            "{} -n {ns} patch secret {name} --type=json -p {}",
            s.kubectl_primary(),
            shell_word(&remove_key_patch(&key))
        ));
        finding = finding.commands(commands);
        note = format!(
            "istiod matches the gateway's clusterid against the keys exactly (Go string equality), so it knows no cluster {cid:?}. The commands register the remote as {cid:?} and then remove key {key:?}"
        );
    } else if let Some((gns, d)) = deployment.filter(|_| is_dns1123_label(&key)) {
        finding = finding.command(format!(
            "{} -n {gns} set env deployment/{d} ISTIO_META_CLUSTER_ID={}",
            s.kubectl_remote(),
            shell_word(&key)
        ));
        note = format!(
            "istiod matches the gateway's clusterid against the keys exactly, so it knows no cluster {cid:?}. istioctl accepts only lowercase names, so the gateway sends {key:?} instead; also set values.global.multiCluster.clusterName={key} in the remote's Istio install"
        );
    } else {
        note = format!(
            "istiod matches the gateway's clusterid against the keys exactly, so it knows no cluster {cid:?}: make the key and the gateway's ISTIO_META_CLUSTER_ID the same string"
        );
    }
    out.failing(
        finding.note(with_caveats(note, f, cid)),
        format!(
            "cluster ID {cid:?} ({src}); {ns}/{name} has key {key:?}, which istiod does not match to it: cluster IDs are compared case-sensitively"
        ),
    )
}

fn cluster_id_is_primary(
    out: Outcome,
    f: &SecretFacts,
    s: &Settings,
    cid: &str,
    src: &str,
    labelled: &[Secret],
) -> Outcome {
    let ns = f.namespace.as_str();
    let (pid, psrc) = f
        .primary_cluster_id
        .as_ref()
        .map(|(p, ps)| (p.as_str(), *ps))
        .unwrap_or_default();
    let holder = labelled.iter().find(|x| ns_of(x) == ns && holds(x, pid));
    let (new_id, why, registered) = suggest_cluster_id(f, s, pid, labelled, holder);
    let mut commands = if registered {
        vec![]
    } else {
        create_commands(s, &new_id, None)
    };
    let gateway = f.gateway.as_ref();
    // The owner gateway-pod found, else the name a ReplicaSet gives its pods.
    let deployment = gateway.and_then(|g| {
        g.deployment
            .as_ref()
            .and_then(|d| d.metadata.name.clone())
            .or_else(|| deployment_of(&g.pod, &g.labels))
    });
    let mut note = if registered {
        format!(
            "istiod knows the remote as {new_id:?} already ({why}): the gateway must send that ID. "
        )
    } else {
        format!(
            "{new_id:?} is a suggestion ({why}): any DNS-1123 label no other cluster uses works, the same in every command. "
        )
    };
    match (gateway, &deployment) {
        (Some(g), Some(d)) => commands.push(format!(
            "{} -n {} set env deployment/{d} ISTIO_META_CLUSTER_ID={}",
            s.kubectl_remote(),
            g.namespace,
            shell_word(&new_id)
        )),
        (Some(g), None) => note.push_str(&format!(
            "Set ISTIO_META_CLUSTER_ID={new_id} where the gateway pod {}/{} is defined (no Deployment found). ",
            g.namespace, g.pod
        )),
        (None, _) => {}
    }
    note.push_str(&format!(
        "Also set values.global.multiCluster.clusterName={new_id} in the remote's Istio install, or an upgrade brings {cid:?} back."
    ));
    if let Some(h) = holder {
        note.push_str(&format!(
            " istiod ignores key {pid:?} of {ns}/{}: remove it once the gateway works",
            name_of(h)
        ));
    }
    let via = if cid == pid {
        String::new()
    } else {
        format!(", which istiod's --clusterAliases maps to {pid:?}")
    };
    out.failing(
        Finding::new(
            &CLUSTER_ID_IS_PRIMARY,
            format!("the remote uses cluster ID {cid:?}, the primary's own"),
        )
        .commands(commands)
        .note(with_caveats(note, f, &new_id)),
        format!(
            "cluster ID {cid:?} ({src}){via} is the primary's own cluster ID ({psrc}); istiod skips such a key and reviews the gateway's token in the primary"
        ),
    )
}

fn duplicate_key(
    out: Outcome,
    f: &SecretFacts,
    s: &Settings,
    key: &str,
    matching: &[&Secret],
    refused_first: Option<&Secret>,
) -> Outcome {
    let ns = f.namespace.as_str();
    let kp = s.kubectl_primary();
    let names: Vec<String> = matching.iter().map(|x| name_of(x).to_string()).collect();
    let (kept, others) = (matching[0], &matching[1..]);
    let mut commands: Vec<String> = others
        .iter()
        .map(|x| {
            let name = name_of(x);
            if keys_of(x) == [key] {
                format!("{kp} -n {ns} delete secret {name}")
            } else {
                format!(
                    "{kp} -n {ns} patch secret {name} --type=json -p {}",
                    shell_word(&remove_key_patch(key))
                )
            }
        })
        .collect();
    // istiod does not look at the kept Secret again when the one it had
    // registered loses the key: an update makes it re-read it.
    commands.push(format!(
        "{kp} -n {ns} annotate secret {} --overwrite meshtrace/resync={}",
        name_of(kept),
        s.now
    ));
    out.warning(
        Finding::new(
            &DUPLICATE_KEY,
            format!("{} Secrets in {ns} hold key {key:?}", matching.len()),
        )
        .commands(commands)
        .note(format!(
            "Keeps {ns}/{}, {}: the one istiod registers at startup and the one the next steps check. The annotation makes istiod re-read it, in case it had registered another. If another copy is the current one, keep that instead",
            name_of(kept),
            match refused_first {
                Some(r) => format!("the first by name whose kubeconfig istiod accepts ({ns}/{} sorts before it, but istiod refuses its kubeconfig and registers nothing from it)", name_of(r)),
                None => "the first by name".to_string(),
            }
        )),
        format!(
            "Secrets {} all have data key {key:?}; istiod registers one and logs `cluster has already been registered` for the others",
            quote_list(&names)
        ),
    )
}

/// The Secret `istioctl create-remote-secret --name=ID` writes.
pub(super) fn secret_name_for(cluster_id: &str) -> String {
    format!("istio-remote-secret-{cluster_id}")
}

/// A JSON patch that removes one data key of a Secret.
pub(super) fn remove_key_patch(key: &str) -> String {
    let pointer = key.replace('~', "~0").replace('/', "~1");
    json!([{"op": "remove", "path": format!("/data/{pointer}")}]).to_string()
}

/// `istioctl create-remote-secret` for the remote, applied to the primary:
/// a kubeconfig istiod accepts (the remote's CA, an inline token of
/// istio-reader-service-account, created if missing), in Secret
/// `<ns>/istio-remote-secret-<id>`. `--namespace` is given because istioctl
/// otherwise takes the kube context's namespace. Nothing when istioctl
/// would refuse the name (see [`with_caveats`]).
pub(super) fn create_commands(s: &Settings, cluster_id: &str, server: Option<&str>) -> Vec<String> {
    create_command(s, cluster_id, server, None, None)
        .into_iter()
        .collect()
}

/// See [`create_commands`]. `tls_server_name` goes with `server`; `rename`
/// writes the Secret under that name instead, so that an existing Secret
/// is updated in place.
pub(super) fn create_command(
    s: &Settings,
    cluster_id: &str,
    server: Option<&str>,
    tls_server_name: Option<&str>,
    rename: Option<&str>,
) -> Option<String> {
    if !is_dns1123_label(cluster_id) {
        return None;
    }
    let mut cmd = format!(
        "istioctl create-remote-secret --context={} --name={cluster_id} --namespace={}",
        s.remote_word.clone(),
        shell_word(&s.istio_namespace)
    );
    if let Some(srv) = server {
        cmd.push_str(&format!(" --server={}", shell_word(srv)));
        if let Some(n) = tls_server_name {
            cmd.push_str(&format!(" --tls-server-name={}", shell_word(n)));
        }
    }
    if let Some(name) = rename.filter(|n| *n != secret_name_for(cluster_id)) {
        // The Secret's own name is the only line at this indent with it.
        cmd.push_str(&format!(
            " | sed 's/^  name: {}$/  name: {name}/'",
            secret_name_for(cluster_id)
        ));
    }
    Some(format!("{cmd} | {} apply -f -", s.kubectl_primary()))
}

/// What the istioctl command needs said: a name istioctl refuses, a
/// loopback server istiod's pods may not reach.
pub(super) fn with_caveats(mut note: String, f: &SecretFacts, id: &str) -> String {
    note.push_str(&caveats(&f.remote_server, id));
    note
}

pub(super) fn caveats(remote_server: &str, id: &str) -> String {
    let mut out = String::new();
    if !is_dns1123_label(id) {
        out.push_str(&format!(
            ". istioctl create-remote-secret accepts only a DNS-1123 label as --name, not {id:?}: give the remote such an ID, or write the Secret yourself (label {MC_LABEL}=true, data key {id:?}, a kubeconfig with an inline token of the remote's istio-reader-service-account)"
        ));
    }
    let loopback = crate::inspect::kubeconfig::server_host(remote_server)
        .is_some_and(|h| crate::inspect::kubeconfig::is_loopback_host(&h));
    if loopback {
        out.push_str(&format!(
            ". {remote_server} is loopback: unless istiod runs on that host, add --server=https://ADDRESS:PORT that istiod reaches"
        ));
    }
    out
}

/// RFC 1123 label, as istioctl checks `--name`.
pub(super) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// An ID for a remote that uses the primary's, and whether istiod has it
/// already: a key (not the primary's) whose kubeconfig points at the remote;
/// else the name istioctl recorded on the secret (`networking.istio.io/cluster`);
/// else the `--remote` context's name made a DNS-1123 label; else `remote`.
/// Never an ID another cluster's key or an alias takes.
fn suggest_cluster_id(
    f: &SecretFacts,
    s: &Settings,
    primary: &str,
    labelled: &[Secret],
    holder: Option<&Secret>,
) -> (String, String, bool) {
    let ns = f.namespace.as_str();
    let registered = f
        .servers
        .iter()
        .find(|((n, _, k), srv)| n == ns && k != primary && same_server(srv, &f.remote_server));
    if let Some(((_, name, key), _)) = registered {
        return (
            key.clone(),
            format!("the key of {ns}/{name}, whose server is the remote's"),
            true,
        );
    }
    let taken = |id: &str| labelled.iter().any(|x| ns_of(x) == ns && holds(x, id));
    let ok = |id: &str| {
        is_dns1123_label(id) && id != primary && !f.cluster_aliases.contains_key(id) && !taken(id)
    };
    if let Some(a) = holder
        .and_then(|h| h.metadata.annotations.as_ref())
        .and_then(|a| a.get("networking.istio.io/cluster"))
        .filter(|a| ok(a))
    {
        return (
            a.clone(),
            format!(
                "the networking.istio.io/cluster annotation of {ns}/{}",
                holder.map(name_of).unwrap_or_default()
            ),
            false,
        );
    }
    let mut label = String::new();
    for c in s.remote_context.to_ascii_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && (label.is_empty() || label.ends_with('-'))) {
            label.push(c);
        }
    }
    label.truncate(63);
    let label = label.trim_end_matches('-').to_string();
    if ok(&label) {
        return (label, "the --remote context's name".into(), false);
    }
    let fallback = (1..)
        .map(|i| {
            if i == 1 {
                "remote".to_string()
            } else {
                format!("remote-{i}")
            }
        })
        .find(|id| ok(id))
        .unwrap_or_default();
    (fallback, "no better name known".into(), false)
}

/// The Deployment of a pod it owns through a ReplicaSet: the pod is named
/// `<deployment>-<pod-template-hash>-<suffix>`.
fn deployment_of(pod: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    let hash = labels.get("pod-template-hash")?;
    let (rs, _) = pod.rsplit_once('-')?;
    rs.strip_suffix(&format!("-{hash}"))
        .filter(|d| !d.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::pki::Ca;
    use crate::model::Status;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const REMOTE: &str = "https://10.0.0.2:6443";

    /// A kubeconfig as `istioctl create-remote-secret` writes it.
    fn kubeconfig(server: &str) -> Vec<u8> {
        static CA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let ca = CA.get_or_init(|| Ca::root("remote-apiserver-ca", "test", 30).cert_pem);
        crate::lab::world::kubeconfig(
            "remote",
            server,
            ca,
            "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        )
        .into_bytes()
    }

    fn secret(ns: &str, name: &str, labelled: Option<&str>, keys: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: labelled.map(|v| [(MC_LABEL.to_string(), v.to_string())].into()),
                annotations: Some(
                    [(
                        "networking.istio.io/cluster".to_string(),
                        "remote".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some(
                keys.iter()
                    .map(|(k, server)| (k.to_string(), ByteString(kubeconfig(server))))
                    .collect(),
            ),
            type_: Some("Opaque".into()),
            ..Default::default()
        }
    }

    fn gateway(pod: &str, hash: Option<&str>) -> GatewayFacts {
        GatewayFacts {
            namespace: "istio-system".into(),
            pod: pod.into(),
            service_account: "istio-eastwestgateway-service-account".into(),
            cluster_id: Some("remote".into()),
            labels: hash
                .map(|h| [("pod-template-hash".to_string(), h.to_string())].into())
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    /// Facts as gather builds them, from the Secrets the API returned.
    fn facts(labelled: Vec<Secret>, in_ns: Option<Vec<Secret>>) -> SecretFacts {
        let servers = labelled
            .iter()
            .flat_map(|s| {
                s.data.iter().flatten().filter_map(|(k, v)| {
                    server_of(&v.0, &[])
                        .map(|srv| ((ns_of(s).into(), name_of(s).into(), k.clone()), srv))
                })
            })
            .collect();
        SecretFacts {
            namespace: "istio-system".into(),
            remote_server: REMOTE.into(),
            gateway_cluster_id: Some(("remote".into(), "gateway env ISTIO_META_CLUSTER_ID")),
            gateway: Some(gateway(
                "istio-eastwestgateway-7d4f9c8b6-x2x9q",
                Some("7d4f9c8b6"),
            )),
            primary_cluster_id: Some(("primary".into(), "primary istiod CLUSTER_ID")),
            cluster_aliases: BTreeMap::new(),
            insecure_options: vec![],
            labelled: Ok(labelled),
            all_namespaces: true,
            servers,
            namespace_secrets: in_ns.map(Ok),
        }
    }

    fn good() -> Secret {
        secret(
            "istio-system",
            "istio-remote-secret-remote",
            Some("true"),
            &[("remote", REMOTE)],
        )
    }

    struct Row {
        name: &'static str,
        facts: SecretFacts,
        status: Status,
        code: Option<&'static str>,
        /// Every one must appear in the commands, joined.
        command_parts: &'static [&'static str],
    }

    fn rows() -> Vec<Row> {
        let s = |n, l, k| secret("istio-system", n, l, k);
        vec![
            Row {
                name: "healthy",
                facts: facts(vec![good()], None),
                status: Status::Pass,
                code: None,
                command_parts: &[],
            },
            Row {
                name: "no labelled Secret at all",
                facts: facts(vec![], Some(vec![])),
                status: Status::Fail,
                code: Some("remote-secret/none-registered"),
                command_parts: &[
                    "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system | kubectl --context ctx-primary apply -f -",
                ],
            },
            Row {
                name: "the Secret lacks the label",
                facts: facts(
                    vec![],
                    Some(vec![s(
                        "istio-remote-secret-remote",
                        None,
                        &[("remote", REMOTE)],
                    )]),
                ),
                status: Status::Fail,
                code: Some("remote-secret/not-labelled"),
                command_parts: &[
                    "kubectl --context ctx-primary -n istio-system label secret istio-remote-secret-remote istio/multiCluster=true --overwrite",
                ],
            },
            Row {
                name: "the label says false",
                facts: facts(
                    vec![],
                    Some(vec![s(
                        "istio-remote-secret-remote",
                        Some("false"),
                        &[("remote", REMOTE)],
                    )]),
                ),
                status: Status::Fail,
                code: Some("remote-secret/not-labelled"),
                command_parts: &[
                    "label secret istio-remote-secret-remote istio/multiCluster=true --overwrite",
                ],
            },
            Row {
                name: "labelled, in namespace default",
                facts: facts(
                    vec![secret(
                        "default",
                        "istio-remote-secret-remote",
                        Some("true"),
                        &[("remote", REMOTE)],
                    )],
                    Some(vec![]),
                ),
                status: Status::Fail,
                code: Some("remote-secret/wrong-namespace"),
                command_parts: &["--context=ctx-remote --name=remote --namespace=istio-system |"],
            },
            Row {
                name: "the misplaced copy used another server: kept",
                facts: facts(
                    vec![secret(
                        "default",
                        "r",
                        Some("true"),
                        &[("remote", "https://api.private:6443")],
                    )],
                    Some(vec![]),
                ),
                status: Status::Fail,
                code: Some("remote-secret/wrong-namespace"),
                command_parts: &[
                    "--namespace=istio-system --server=https://api.private:6443 | kubectl",
                ],
            },
            Row {
                name: "the key names another cluster",
                facts: facts(
                    vec![s(
                        "istio-remote-secret-remote",
                        Some("true"),
                        &[("remote-1", REMOTE)],
                    )],
                    Some(vec![]),
                ),
                status: Status::Fail,
                code: Some("remote-secret/no-key-for-cluster-id"),
                command_parts: &[
                    "--name=remote --namespace=istio-system | kubectl --context ctx-primary apply -f -",
                ],
            },
            Row {
                name: "the remote calls itself by the primary's ID",
                facts: {
                    let mut f = facts(
                        vec![s(
                            "istio-remote-secret-remote",
                            Some("true"),
                            &[("primary", REMOTE)],
                        )],
                        None,
                    );
                    f.gateway_cluster_id =
                        Some(("primary".into(), "gateway env ISTIO_META_CLUSTER_ID"));
                    f
                },
                status: Status::Fail,
                code: Some("remote-secret/cluster-id-is-primary"),
                command_parts: &[
                    "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system | kubectl --context ctx-primary apply -f -",
                    "kubectl --context ctx-remote -n istio-system set env deployment/istio-eastwestgateway ISTIO_META_CLUSTER_ID=remote",
                ],
            },
            Row {
                name: "an alias maps the gateway's ID to the primary's",
                facts: {
                    let mut f = facts(vec![good()], None);
                    f.gateway_cluster_id =
                        Some(("Kubernetes".into(), "gateway env ISTIO_META_CLUSTER_ID"));
                    f.cluster_aliases = [("Kubernetes".to_string(), "primary".to_string())].into();
                    f
                },
                status: Status::Fail,
                code: Some("remote-secret/cluster-id-is-primary"),
                command_parts: &[
                    "set env deployment/istio-eastwestgateway ISTIO_META_CLUSTER_ID=remote",
                ],
            },
            Row {
                name: "an alias maps the gateway's ID to the remote's key",
                facts: {
                    let mut f = facts(vec![good()], None);
                    f.gateway_cluster_id =
                        Some(("remote-old".into(), "gateway env ISTIO_META_CLUSTER_ID"));
                    f.cluster_aliases = [("remote-old".to_string(), "remote".to_string())].into();
                    f
                },
                status: Status::Pass,
                code: None,
                command_parts: &[],
            },
            Row {
                name: "two Secrets hold the key",
                facts: facts(
                    vec![
                        good(),
                        s("remote-copy", Some("true"), &[("remote", REMOTE)]),
                        s(
                            "remotes",
                            Some("true"),
                            &[("remote", REMOTE), ("other", "https://10.9.9.9:6443")],
                        ),
                    ],
                    None,
                ),
                status: Status::Warn,
                code: Some("remote-secret/duplicate-key"),
                command_parts: &[
                    "kubectl --context ctx-primary -n istio-system delete secret remote-copy",
                    r#"kubectl --context ctx-primary -n istio-system patch secret remotes --type=json -p '[{"op":"remove","path":"/data/remote"}]'"#,
                    "kubectl --context ctx-primary -n istio-system annotate secret istio-remote-secret-remote --overwrite meshtrace/resync=1800000000",
                ],
            },
            Row {
                name: "two Secrets hold the key, the first by name has a kubeconfig istiod refuses",
                facts: {
                    let mut bad = s("a-broken", Some("true"), &[("remote", REMOTE)]);
                    bad.data.as_mut().unwrap().insert(
                        "remote".into(),
                        ByteString(b"apiVersion: v1\nkind: Config\n".to_vec()),
                    );
                    facts(vec![bad, good()], None)
                },
                status: Status::Warn,
                code: Some("remote-secret/duplicate-key"),
                command_parts: &[
                    "kubectl --context ctx-primary -n istio-system delete secret a-broken",
                    "annotate secret istio-remote-secret-remote --overwrite",
                ],
            },
            Row {
                name: "the key differs from the gateway's cluster ID only in case",
                facts: facts(
                    vec![s(
                        "istio-remote-secret-remote",
                        Some("true"),
                        &[("Remote", REMOTE)],
                    )],
                    Some(vec![]),
                ),
                status: Status::Fail,
                code: Some("remote-secret/key-case-differs"),
                command_parts: &[
                    "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system | kubectl --context ctx-primary apply -f -",
                    r#"patch secret istio-remote-secret-remote --type=json -p '[{"op":"remove","path":"/data/Remote"}]'"#,
                ],
            },
            Row {
                name: "the gateway sends an uppercase ID, the key is lowercase",
                facts: {
                    let mut f = facts(vec![good()], Some(vec![]));
                    f.gateway_cluster_id =
                        Some(("Remote".into(), "gateway env ISTIO_META_CLUSTER_ID"));
                    f
                },
                status: Status::Fail,
                code: Some("remote-secret/key-case-differs"),
                command_parts: &[
                    "kubectl --context ctx-remote -n istio-system set env deployment/istio-eastwestgateway ISTIO_META_CLUSTER_ID=remote",
                ],
            },
            Row {
                name: "no cluster ID, but a key points at the remote",
                facts: {
                    let mut f = facts(vec![good()], None);
                    f.gateway_cluster_id = None;
                    f
                },
                status: Status::Pass,
                code: None,
                command_parts: &[],
            },
            Row {
                name: "no cluster ID, and no key points at the remote",
                facts: {
                    let mut f = facts(
                        vec![s("x", Some("true"), &[("other", "https://10.9.9.9:6443")])],
                        None,
                    );
                    f.gateway_cluster_id = None;
                    f
                },
                status: Status::Fail,
                code: Some("remote-secret/no-cluster-id"),
                command_parts: &[],
            },
            Row {
                name: "no cluster ID, because gateway-pod found no gateway",
                facts: {
                    let mut f = facts(vec![], None);
                    f.gateway_cluster_id = None;
                    f.gateway = None;
                    f
                },
                status: Status::Skipped,
                code: None,
                command_parts: &[],
            },
            Row {
                name: "the list is refused",
                facts: {
                    let mut f = facts(vec![], None);
                    f.labelled = Err("403 Forbidden: secrets is forbidden".into());
                    f
                },
                status: Status::Fail,
                code: Some("remote-secret/list-refused"),
                command_parts: &[],
            },
        ]
    }

    #[test]
    fn judge_table() {
        let s = Settings::for_tests();
        for row in rows() {
            let out = judge(&row.facts, &s);
            assert_eq!(
                out.status,
                Some(row.status),
                "{}: {:?}",
                row.name,
                out.diagnosis
            );
            let f = out.finding.as_ref();
            assert_eq!(f.map(|f| f.code.as_str()), row.code, "{}", row.name);
            let commands = f.map(|f| f.commands.join("\n")).unwrap_or_default();
            for part in row.command_parts {
                assert!(
                    commands.contains(part),
                    "{}: {part:?} not in\n{commands}",
                    row.name
                );
            }
            if let Some(f) = f {
                assert!(
                    f.summary.chars().count() <= 110,
                    "{}: {}",
                    row.name,
                    f.summary
                );
                assert!(
                    !f.commands.iter().any(|c| c.contains('<')),
                    "{}: {commands}",
                    row.name
                );
                assert!(f.note.is_some() || !f.commands.is_empty(), "{}", row.name);
                let d = out.diagnosis.as_deref().unwrap_or_default();
                assert!(d.chars().count() <= 300, "{}: {d}", row.name);
                assert!(
                    !d.contains("eyJ") && !commands.contains("eyJ"),
                    "{}",
                    row.name
                );
            }
        }
    }

    #[test]
    fn every_cause_has_a_row() {
        let coded: Vec<&str> = rows().iter().filter_map(|r| r.code).collect();
        for c in CAUSES {
            assert!(
                coded.contains(&c.code().as_str()),
                "no row for {}",
                c.code()
            );
        }
    }

    #[test]
    fn lookup_registers_the_first_accepted_by_name() {
        let mut bad = secret("istio-system", "a", Some("true"), &[("remote", REMOTE)]);
        bad.data.as_mut().unwrap().insert(
            "remote".into(),
            ByteString(b"apiVersion: v1\nkind: Config\n".to_vec()),
        );
        let z = secret("istio-system", "z", Some("true"), &[("remote", REMOTE)]);
        // Listed out of order: istiod's informer lists them by name.
        let f = facts(vec![z, good(), bad], None);
        let l = lookup(&f).unwrap();
        let names: Vec<&str> = l.matching.iter().map(|x| name_of(x)).collect();
        assert_eq!(names, ["istio-remote-secret-remote", "a", "z"]);
        assert_eq!(l.refused_first.map(name_of), Some("a"));
        let f = facts(
            vec![
                secret("istio-system", "z", Some("true"), &[("remote", REMOTE)]),
                good(),
            ],
            None,
        );
        let l = lookup(&f).unwrap();
        assert_eq!(name_of(l.matching[0]), "istio-remote-secret-remote");
        assert!(l.refused_first.is_none());
    }

    #[test]
    fn lookup_picks_what_later_steps_read() {
        let f = facts(vec![good()], None);
        let l = lookup(&f).unwrap();
        assert_eq!(
            (l.key.as_str(), l.matching.len(), l.is_primary),
            ("remote", 1, false)
        );
        let mut f = facts(vec![good()], None);
        f.gateway_cluster_id = None;
        assert_eq!(
            lookup(&f).unwrap().cluster_id,
            ("remote".to_string(), FROM_SERVER)
        );
    }

    #[test]
    fn istiod_cluster_aliases_from_args() {
        let args = [
            "discovery",
            "--monitoringAddr=:15014",
            "--clusterAliases=a=b,c=d",
            "--clusterAliases",
            "e=f",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            cluster_aliases(&args),
            [("a", "b"), ("c", "d"), ("e", "f")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into()
        );
        assert!(cluster_aliases(&[]).is_empty());
    }

    #[test]
    fn names_and_commands() {
        assert_eq!(
            deployment_of(
                "istio-eastwestgateway-7d4f9c8b6-x2x9q",
                &[("pod-template-hash".into(), "7d4f9c8b6".into())].into()
            ),
            Some("istio-eastwestgateway".into())
        );
        assert_eq!(
            deployment_of("istio-eastwestgateway", &BTreeMap::new()),
            None
        );
        assert_eq!(
            deployment_of("a-b-c", &[("pod-template-hash".into(), "x".into())].into()),
            None
        );
        for (id, ok) in [
            ("remote", true),
            ("remote-1", true),
            ("Kubernetes", false),
            ("a_b", false),
            ("-a", false),
            ("", false),
        ] {
            assert_eq!(is_dns1123_label(id), ok, "{id}");
        }
        let s = Settings::for_tests();
        assert_eq!(
            create_commands(&s, "Kubernetes", None),
            Vec::<String>::new()
        );
        assert_eq!(
            create_command(
                &s,
                "remote",
                Some("https://10.0.0.9:6443"),
                Some("api.internal"),
                Some("my-remote")
            )
            .unwrap(),
            "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system --server=https://10.0.0.9:6443 --tls-server-name=api.internal | sed 's/^  name: istio-remote-secret-remote$/  name: my-remote/' | kubectl --context ctx-primary apply -f -"
        );
        assert_eq!(
            remove_key_patch("a/b"),
            r#"[{"op":"remove","path":"/data/a~1b"}]"#
        );
        let mut s2 = Settings::for_tests();
        s2.remote_context = "arn:aws:eks:eu-west-1:1:cluster/Remote".into();
        let f = facts(vec![], None);
        assert_eq!(
            suggest_cluster_id(&f, &s2, "primary", &[], None).0,
            "arn-aws-eks-eu-west-1-1-cluster-remote"
        );
        s2.remote_context = "primary".into();
        let other = secret(
            "istio-system",
            "o",
            Some("true"),
            &[("remote", "https://10.9.9.9:6443")],
        );
        assert_eq!(
            suggest_cluster_id(&f, &s2, "primary", &[other], None),
            (
                "remote-2".to_string(),
                "no better name known".to_string(),
                false
            )
        );
    }
}
