//! `csr`: the gateway's CreateCertificate, sent as istio-agent sends it, and
//! when istiod refuses it, why: istiod tells a client only
//! `Unauthenticated: request authenticate failure` (security/pkg/server/ca/server.go)
//! and logs the reason. Its KubeJWTAuthenticator first looks up a kube client
//! for the `clusterid` the gateway sends (`client claims to be in cluster ...`),
//! then runs a TokenReview with TOKEN_AUDIENCES as the audiences
//! (security/pkg/server/ca/authenticate/kubeauth/kube_jwt.go). Because this
//! step runs only when meshtrace's own TokenReview with the remote secret's
//! credential passed, a refusal means istiod sees something else: its own
//! list of clusters (`/debug/clusterz`) and its Deployment's env tell which.

use super::Settings;
use super::istiod::{
    EnvValue, IstiodDeployment, IstiodDeployments, expected_identity, no_deployment_note, pick,
    read_istiod_deployments, restart_command, set_env_command, with_item,
};
use crate::engine::facts::Sensitive;
use crate::engine::{Ctx, Outcome, Staged};
use crate::findings::{Finding, generic, shell_word};
use crate::inspect::jwt;
use crate::model::StepId;
use crate::probe::ca_client::{self, CsrError, CsrRequest};
use crate::probe::clusterz::{self, Judgement};
use crate::probe::xds_debug;
use serde_json::json;
use std::time::Duration;

crate::causes! { StepId::Csr;
    NOT_LOADED = "istiod-has-not-loaded-cluster", "istiod has not loaded the remote secret of the gateway's cluster";
    CLUSTER_CLOSED = "cluster-closed", "istiod has closed the gateway's cluster and not built it again";
    CLUSTER_NOT_SYNCED = "cluster-not-synced", "istiod has loaded the gateway's cluster but has not synced it";
    TOKEN_AUDIENCE = "token-audience-not-accepted", "istiod's TOKEN_AUDIENCES lack the gateway token's audience";
    CLUSTER_STALE = "istiod-cluster-stale", "istiod holds an earlier credential for the gateway's cluster";
    UNAUTHENTICATED = "unauthenticated", "istiod refuses the gateway's token, and its own view is unknown";
    REFUSED = "refused", "istiod refuses the CSR with another gRPC status";
    CONNECTION_FAILED = "connection-failed", "the gRPC connection to istiod fails";
    NO_ANSWER = "no-answer", "istiod does not answer the CSR in time";
    NOT_SENDABLE = "request-not-sendable", "the gateway's request cannot be sent as it is";
}

/// What istiod answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The chain, leaf first.
    Chain(Vec<String>),
    Rpc {
        code: String,
        message: String,
    },
    Connect(String),
    Timeout(Duration),
    BadInput(String),
    /// meshtrace could not make the CSR (a bug).
    NoCsr(String),
}

/// What gather saw.
#[derive(Debug, Clone)]
pub struct CsrFacts {
    pub addr: String,
    pub server_name: String,
    /// The `clusterid` sent; empty when the gateway has none.
    pub cluster_id: String,
    pub csr_san: String,
    /// `sha256:...` of the gateway token: never the token.
    pub token_fingerprint: String,
    pub ttl_secs: i64,
    pub answer: Answer,
    pub rpc_ms: f64,
    /// istiod's own list of clusters (or why it is unknown).
    pub view: clusterz::View,
    pub view_source: String,
    /// istiod's Deployments in the primary (or why they are unknown).
    pub istiod: IstiodDeployments,
    /// istiod's TOKEN_AUDIENCES as control-plane read them from its
    /// Deployment, and from where; None when istiod's setting is unknown
    /// (then the Deployment's env is read, if csr found it).
    pub istiod_audiences: Option<(Vec<String>, String)>,
    /// When the remote secret last changed, as its metadata tells.
    pub secret_changed: Option<SecretChange>,
    /// The audience of the primary's token istiod refused with
    /// Unauthenticated over xDS: istiod's own TokenReview, in its own
    /// cluster, does not accept that audience.
    pub xds_refused_audience: Option<String>,
    /// The CSR's private key (PEM), kept only when a chain came back: the
    /// xds step presents it with the chain. Debug shows `[REDACTED]`.
    pub key: Option<secrecy::SecretString>,
}

/// When the remote secret was last written: the newest of its
/// creationTimestamp and managedFields times.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretChange {
    /// `namespace/name`.
    pub secret: String,
    /// Unix seconds.
    pub at: i64,
    /// RFC 3339, and what said so (`managedFields (kubectl-client-side-apply, Update)`).
    pub text: String,
    pub resource_version: Option<String>,
}

/// The service account whose token reads istiod's debug types: istioctl's
/// (`tokenServiceAccount`, istioctl/pkg/multixds/gather.go), in istiod's namespace.
pub const DEBUG_SERVICE_ACCOUNT: &str = "default";
/// The debug token's lifetime: the shortest the API allows.
const DEBUG_TOKEN_SECONDS: i64 = 600;

const TTL_SECS: i64 = 3600;

pub async fn gather(ctx: &Ctx) -> Result<CsrFacts, Outcome> {
    let (addr, tls, gw, token, cid, mesh_td) = {
        let f = ctx.facts();
        (
            f.istiod_addr.clone(),
            f.istiod_tls.clone(),
            f.gateway.clone(),
            f.gateway_token.clone(),
            f.cluster_id.clone(),
            f.trust_domain.clone(),
        )
    };
    // The CSR goes over the TLS istiod-tls verified: its server name and roots.
    let (Some((addr, _)), Some((server_name, root, _))) = (addr, tls) else {
        return Err(Outcome::new().blocked(StepId::IstiodTls, "no verified path to istiod"));
    };
    let Some(token) = token else {
        return Err(Outcome::new().blocked(StepId::GatewayToken, "no gateway token"));
    };
    let gw = gw.unwrap_or_default();
    let cluster_id = cid.map(|c| c.0).unwrap_or_default();
    let (csr_san, _, _) = expected_identity(
        gw.trust_domain.as_deref(),
        mesh_td.as_deref(),
        &gw.namespace,
        &gw.service_account,
    );
    let ns = ctx.opts.istio_namespace.clone();
    let debug_addr = ctx.opts.istiod_debug_addr.as_deref();
    let mut facts = CsrFacts {
        addr: addr.clone(),
        server_name: server_name.clone(),
        cluster_id: cluster_id.clone(),
        csr_san: csr_san.clone(),
        token_fingerprint: jwt::fingerprint(&token.0),
        ttl_secs: TTL_SECS,
        answer: Answer::NoCsr(String::new()),
        rpc_ms: 0.0,
        view: Err("not asked".into()),
        view_source: clusterz::source(debug_addr, &ns),
        istiod: Err("not read".into()),
        istiod_audiences: None,
        secret_changed: None,
        xds_refused_audience: None,
        key: None,
    };
    let (istiod_settings, secret_ref) = {
        let f = ctx.facts();
        (
            f.istiod_settings.clone(),
            f.remote_secret
                .as_ref()
                .map(|r| (r.namespace.clone(), r.name.clone())),
        )
    };
    facts.istiod_audiences = istiod_settings
        .as_ref()
        .filter(|st| {
            st.deployment.is_some() && !st.unresolved.iter().any(|u| u == "TOKEN_AUDIENCES")
        })
        .map(|st| {
            (
                st.token_audiences.value.clone(),
                st.token_audiences.from.clone(),
            )
        });
    // The debug token's audience: the first istiod accepts.
    let debug_audience = istiod_settings
        .as_ref()
        .and_then(|st| st.token_audiences.value.first().cloned())
        .unwrap_or_else(|| "istio-ca".into());
    let (key, csr_pem) = match ca_client::new_csr(&csr_san) {
        Ok(k) => k,
        Err(e) => {
            facts.answer = Answer::NoCsr(e);
            return Ok(facts);
        }
    };
    let csr_call = async {
        let started = std::time::Instant::now();
        let r = ca_client::create_certificate(&CsrRequest {
            addr: &addr,
            server_name: &server_name,
            root_pem: &root,
            token: &token.0,
            cluster_id: &cluster_id,
            csr_pem: &csr_pem,
            ttl_secs: TTL_SECS,
            timeout: ctx.opts.timeout,
        })
        .await;
        (r, started.elapsed())
    };
    // istiod's view and its Deployment are read while the CSR is in flight,
    // so they cost the critical path nothing unless they are the slower.
    let xds_view = async {
        let xds_source = format!(
            "istiod's xDS at {addr} (istio.io/debug clusterz, as istioctl x internal-debug asks it; token of {ns}/{DEBUG_SERVICE_ACCOUNT} for {debug_audience:?})"
        );
        let token = match debug_token(ctx, &ns, &debug_audience).await {
            Ok(t) => t,
            Err(why) => return (Err(why), xds_source, None),
        };
        let (view, err) = clusterz::fetch_xds_with_error(&xds_debug::DebugRequest {
            addr: &addr,
            server_name: &server_name,
            root_pem: &root,
            token: &token.0,
            namespace: &ns,
            service_account: DEBUG_SERVICE_ACCOUNT,
            resource: "clusterz",
            timeout: ctx.opts.timeout,
        })
        .await;
        let refused = matches!(&err, Some(xds_debug::XdsError::Rpc { code, .. }) if code == "Unauthenticated")
            .then(|| debug_audience.clone());
        (view, xds_source, refused)
    };
    // The reads through the primary API server start with the CSR. The xDS
    // view waits for a refusal: istiod admits one new xDS stream per
    // 1/PILOT_MAX_REQUESTS_PER_SECOND (25/s on 2 cores, burst 1), so a debug
    // stream opened beside a passing CSR held up the gateway's own xDS
    // stream (the `xds` step) by up to 40 ms.
    let istiod_side = async {
        tokio::join!(
            clusterz::fetch(debug_addr, &ctx.clusters.primary, &ns, ctx.opts.timeout),
            read_istiod_deployments(&ctx.clusters.primary, &ns, ctx.opts.timeout),
            secret_change(&ctx.clusters.primary, secret_ref.as_ref(), ctx.opts.timeout),
        )
    };
    let refused = |(r, _): &(Result<_, CsrError>, _)| matches!(r, Err(CsrError::Rpc { code, .. }) if code == "Unauthenticated");
    // They only explain a failure, so they are asked after one: an issued
    // certificate costs the API servers and istiod nothing more, and an
    // istiod pod the API server cannot reach does not hold it up.
    let csr_answer = csr_call.await;
    let side = match &csr_answer.0 {
        Ok(_) => None,
        Err(_) => Some(istiod_side.await),
    };
    // A refusal token-review already explains is not asked about: the CSR
    // step is then blocked by it, and its view would go unread.
    let explained = ctx.finished(StepId::TokenReview).is_some_and(|r| {
        matches!(
            r.status,
            crate::model::Status::Fail | crate::model::Status::Skipped
        )
    });
    let xds_side = if refused(&csr_answer) && !explained {
        Some(xds_view.await)
    } else {
        None
    };
    let (result, rpc) = csr_answer;
    // The key stays in memory with the chain it belongs to, else it is dropped.
    if result.is_ok() {
        let pem = key.serialize_pem();
        ctx.secrets.add(&pem);
        facts.key = Some(secrecy::SecretString::from(pem));
    }
    drop(key);
    facts.rpc_ms = crate::model::millis(rpc);
    // istiod's view only explains a refusal: without one it is not asked
    // over xDS, and what the API server's reads brought is not shown as a view.
    const NOT_WAITED: &str =
        "not waited for: istiod answered the CSR first, and its view only explains a refusal";
    match (side, xds_side) {
        (Some((fallback, deps, changed)), Some((xds, xds_source, refused))) => {
            facts.xds_refused_audience = refused;
            let (view, source) = choose(xds, xds_source, fallback, facts.view_source.clone());
            facts.view = view;
            facts.view_source = source;
            facts.istiod = deps;
            facts.secret_changed = changed;
        }
        (Some((_, deps, changed)), None) => {
            facts.view = Err(NOT_WAITED.into());
            facts.istiod = deps;
            facts.secret_changed = changed;
        }
        (None, _) => {
            facts.view = Err(NOT_WAITED.into());
            facts.istiod = Err("not waited for".into());
        }
    }
    facts.answer = match result {
        Ok(chain) => Answer::Chain(chain),
        Err(CsrError::Rpc { code, message }) => Answer::Rpc { code, message },
        Err(CsrError::Connect(e)) => Answer::Connect(e),
        Err(CsrError::Timeout(d)) => Answer::Timeout(d),
        Err(CsrError::BadInput(e)) => Answer::BadInput(e),
    };
    Ok(facts)
}

/// A TokenRequest in the primary for istiod's namespace's `default`
/// service account, for `audience`, for the shortest lifetime; registered
/// as a secret of the trace before anything else sees it.
async fn debug_token(ctx: &Ctx, ns: &str, audience: &str) -> Result<Sensitive, String> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_string()]),
            expiration_seconds: Some(DEBUG_TOKEN_SECONDS),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sas: kube::Api<ServiceAccount> = kube::Api::namespaced(ctx.clusters.primary.clone(), ns);
    let pp = kube::api::PostParams::default();
    let call = sas.create_subresource::<TokenRequest, TokenRequest>(
        "token",
        DEBUG_SERVICE_ACCOUNT,
        &pp,
        &tr,
    );
    let resp = tokio::time::timeout(ctx.opts.timeout, call)
        .await
        .map_err(|_| {
            format!(
                "no TokenRequest answer for {ns}/{DEBUG_SERVICE_ACCOUNT} in the primary in time"
            )
        })?
        .map_err(|e| {
            format!(
                "no token for {ns}/{DEBUG_SERVICE_ACCOUNT} in the primary to ask istiod with: {}",
                crate::probe::kube_error::describe(&e)
            )
        })?;
    let token = resp.status.and_then(|s| s.token).unwrap_or_default();
    if token.is_empty() {
        return Err(format!(
            "the TokenRequest for {ns}/{DEBUG_SERVICE_ACCOUNT} returned no token"
        ));
    }
    ctx.secrets.add(&token);
    Ok(Sensitive(token))
}

/// When the remote secret last changed: its metadata, read again (the
/// remote-secret step holds no times). None when unknown.
async fn secret_change(
    primary: &kube::Client,
    secret: Option<&(String, String)>,
    timeout: Duration,
) -> Option<SecretChange> {
    use k8s_openapi::api::core::v1::Secret;
    let (ns, name) = secret?;
    let api: kube::Api<Secret> = kube::Api::namespaced(primary.clone(), ns);
    let meta = tokio::time::timeout(timeout, api.get_metadata(name))
        .await
        .ok()?
        .ok()?
        .metadata;
    change_of(&format!("{ns}/{name}"), &meta)
}

/// The newest of creationTimestamp and managedFields times.
pub fn change_of(
    secret: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<SecretChange> {
    let mut best: Option<(i64, String)> = meta
        .creation_timestamp
        .as_ref()
        .map(|t| (t.0.as_second(), format!("{} (creationTimestamp)", t.0)));
    for m in meta.managed_fields.iter().flatten() {
        if let Some(t) = &m.time
            && best.as_ref().is_none_or(|(at, _)| t.0.as_second() > *at)
        {
            best = Some((
                t.0.as_second(),
                format!(
                    "{} (managedFields: {}, {})",
                    t.0,
                    m.manager.as_deref().unwrap_or("?"),
                    m.operation.as_deref().unwrap_or("?")
                ),
            ));
        }
    }
    let (at, text) = best?;
    Some(SecretChange {
        secret: secret.to_string(),
        at,
        text,
        resource_version: meta.resource_version.clone(),
    })
}

/// istiod's view: over xDS when it answered, else the other source, and
/// the evidence's `istiod_clusters_source` saying which and why not the other.
pub fn choose(
    xds: clusterz::View,
    xds_source: String,
    fallback: clusterz::View,
    fallback_source: String,
) -> (clusterz::View, String) {
    let why = |v: &clusterz::View| match v {
        Err(w) => w.clone(),
        Ok(a) => a
            .iter()
            .filter_map(|a| a.result.as_ref().err())
            .cloned()
            .collect::<Vec<_>>()
            .join("; "),
    };
    if clusterz::answered(&xds) {
        return (xds, xds_source);
    }
    let xds_why = why(&xds);
    if clusterz::answered(&fallback) {
        return (
            fallback,
            format!("{fallback_source}; not over xDS: {xds_why}"),
        );
    }
    let fb_why = why(&fallback);
    (
        Err(format!(
            "over xDS: {xds_why}; through {fallback_source}: {fb_why}"
        )),
        format!("none answered: {xds_source}, then {fallback_source}"),
    )
}

/// Sent as soon as istiod-tls verified the path and the gateway's token is
/// there, as istio-agent sends it; judged once token-review (which explains
/// a refusal) finished.
pub async fn run(ctx: &Ctx) -> Staged {
    if ctx.opts.no_csr {
        return Outcome::new()
            .skipped("passive mode (--no-csr): no CSR sent")
            .into();
    }
    match gather(ctx).await {
        Ok(facts) => Staged::judge(move |ctx| judged(ctx, facts)),
        Err(blocked) => blocked.into(),
    }
}

/// The verdict, and the chain and key handed to issued-chain and xds.
fn judged(ctx: &Ctx, facts: CsrFacts) -> Outcome {
    let out = judge(&facts, &Settings::of(ctx));
    let mut f = ctx.facts();
    if let Answer::Chain(chain) = &facts.answer {
        f.chain = Some(chain.clone());
        f.issued_key = facts.key.clone();
    }
    // issued-chain names istiod's Deployment in a restart.
    // control-plane's (the revision it picked) first: csr's own read is not
    // waited for once the chain is issued.
    f.istiod_deployment = f
        .istiod_settings
        .as_ref()
        .and_then(|s| s.deployment.as_ref().map(|d| d.name.clone()))
        .or_else(|| {
            pick(&facts.istiod, None, &ctx.opts.istio_namespace)
                .ok()
                .map(|d| d.name.clone())
        });
    out
}

pub fn judge(f: &CsrFacts, s: &Settings) -> Outcome {
    let mut out = Outcome::new();
    out.ev("address", &f.addr)
        .ev("server_name", &f.server_name)
        .ev(
            "metadata",
            json!({"authorization": format!("Bearer <{}>", f.token_fingerprint), "clusterid": f.cluster_id}),
        )
        .ev("csr_san", &f.csr_san)
        .ev("requested_ttl_seconds", f.ttl_secs)
        .ev("key", "fresh ECDSA P-256, in memory only");
    if let Answer::NoCsr(e) = &f.answer {
        return out.failing(
            Finding::generic(
                StepId::Csr,
                generic::INTERNAL_ERROR,
                "meshtrace cannot make a CSR (a bug)",
            )
            .note("report it with the output of -o events"),
            format!("cannot make a CSR for {}: {e}", f.csr_san),
        );
    }
    out.ev("rpc_ms", f.rpc_ms)
        .ev("istiod_clusters", clusterz::evidence(&f.view))
        .ev("istiod_clusters_source", &f.view_source);
    if let Some(c) = &f.secret_changed {
        out.ev("remote_secret_changed", format!("{}: {}", c.secret, c.text));
    }
    match &f.answer {
        Answer::Chain(chain) => {
            out.ev("cert_chain_length", chain.len());
            out.pass()
        }
        Answer::Rpc { code, message } => {
            out.ev("grpc_status", json!({"code": code, "message": message}));
            if code == "Unauthenticated" {
                unauthenticated(out, f, s, message)
            } else {
                let logs = logs_command(f, s, "CSR");
                out.failing(
                    Finding::new(&REFUSED, format!("istiod refuses the CSR with {code}"))
                        .note(format!("istiod logs why (its CA server's `CSR signing error` lines): {logs}")),
                    format!("istiod answered {code}: {message:?}"),
                )
            }
        }
        Answer::Connect(e) => out.failing(
            Finding::new(&CONNECTION_FAILED, format!("cannot open the gRPC connection to istiod at {}", f.addr))
                .note("istiod-tls reached it moments ago: the path or istiod is flapping (an istiod restarting, a load balancer draining); trace again"),
            format!("CreateCertificate to {}: {e}", f.addr),
        ),
        Answer::Timeout(d) => out.failing(
            Finding::new(&NO_ANSWER, format!("istiod does not answer the CSR within {}", humantime::format_duration(*d)))
                .note("istiod signs in milliseconds: it is overloaded or stuck, or a proxy on the path holds the stream; raise --timeout to wait longer"),
            format!("CreateCertificate to {}: no answer within {}", f.addr, humantime::format_duration(*d)),
        ),
        Answer::BadInput(e) => out.failing(
            Finding::new(&NOT_SENDABLE, "the gateway's CSR request cannot be sent")
                .note("istio-agent cannot send it either: the diagnosis names the value (cluster ID, token or root) to fix"),
            format!("CreateCertificate not sent: {e}"),
        ),
        Answer::NoCsr(_) => unreachable!("handled above"),
    }
}

/// `kubectl --context P -n NS logs deployment/NAME | grep -i WORD`, or a note-shaped hint.
fn logs_command(f: &CsrFacts, s: &Settings, word: &str) -> String {
    let name = pick(&f.istiod, None, &s.istio_namespace)
        .map(|d| d.name.clone())
        .unwrap_or_else(|_| "istiod".into());
    format!(
        "`{} -n {} logs deployment/{} | grep -i {}`",
        s.kubectl_primary(),
        shell_word(&s.istio_namespace),
        shell_word(&name),
        shell_word(word)
    )
}

/// istiod's TOKEN_AUDIENCES as its Deployment sets them: (the value, as
/// istiod splits it on commas; whether it holds `aud`). None when unknown.
fn audiences(d: &IstiodDeployment, aud: &str) -> Option<(String, bool)> {
    match d.env_value("TOKEN_AUDIENCES") {
        // istiod's default (pkg/security/security.go).
        None => Some(("istio-ca".into(), aud == "istio-ca")),
        Some(EnvValue::Value(v)) => Some((v.clone(), v.split(',').any(|a| a == aud))),
        Some(EnvValue::FromRef) => None,
    }
}

fn unauthenticated(out: Outcome, f: &CsrFacts, s: &Settings, message: &str) -> Outcome {
    let ns = &s.istio_namespace;
    let cid = &f.cluster_id;
    let aud = &s.token_audience;
    let told = format!("istiod answered Unauthenticated ({message:?})");
    let judgement = if cid.is_empty() {
        Judgement::Unknown(
            "the gateway sends no cluster ID, so istiod reviews its token in the primary".into(),
        )
    } else {
        clusterz::judge(&f.view, cid)
    };
    let answered_by = match &judgement {
        Judgement::Missing { from, .. } | Judgement::NotSynced { from, .. } => {
            from.strip_prefix("pod ")
        }
        _ => None,
    };
    let dep = pick(&f.istiod, answered_by, ns);
    // istiod's own setting: as control-plane resolved it, else the env of
    // the Deployment csr found; None when neither tells.
    let auds = match &f.istiod_audiences {
        Some((list, _)) => Some((list.join(","), list.iter().any(|a| a == aud))),
        None => dep.as_ref().ok().and_then(|d| audiences(d, aud)),
    };
    // Unknown setting, but istiod refused a token of its own cluster for
    // this audience over xDS: its TokenReview does not accept it.
    let refused_over_xds =
        auds.is_none() && f.xds_refused_audience.as_deref() == Some(aud.as_str());
    let restart = |why: String| match &dep {
        Ok(d) => (vec![restart_command(s, d)], why),
        Err(e) => (
            vec![],
            format!(
                "{why} {}",
                no_deployment_note(s, e, "restart it: `rollout restart deployment/<name>`")
            ),
        ),
    };
    match &judgement {
        Judgement::Missing { from, listed } => {
            let ids: Vec<String> = listed.iter().map(|e| e.id.clone()).collect();
            let lists = if ids.is_empty() {
                "no cluster".to_string()
            } else {
                super::quote_list(&ids)
            };
            let local = listed
                .iter()
                .find(|e| e.secret_name.is_empty())
                .map(|e| e.id.as_str())
                .unwrap_or("?");
            let remotes: Vec<&str> = listed
                .iter()
                .filter(|e| !e.secret_name.is_empty())
                .map(|e| e.id.as_str())
                .collect();
            let (mut cmds, mut note) = restart(format!(
                "the remote secret passed every check, so istiod's remote-secret controller has not processed it: it is stuck (a known istiod hang after a remote secret is deleted: it handles no remote-secret event until it restarts), or the secret is seconds old (then trace again first). istiod logs `client claims to be in cluster {cid:?}, but we only know about local cluster {local:?} and remote clusters [{}]`. The restart loads every remote secret again.",
                remotes.join(" ")
            ));
            if let (Ok(d), Some((v, false))) = (&dep, &auds) {
                cmds.push(set_env_command(s, d, "TOKEN_AUDIENCES", &with_item(v, aud)));
                note.push_str(&format!(
                    " istiod's TOKEN_AUDIENCES ({v}) lack {aud:?} too, so it would refuse the token next: the set env adds it"
                ));
            }
            out.failing(
                Finding::new(&NOT_LOADED, format!("istiod has not loaded the remote secret for cluster {cid:?}"))
                    .commands(cmds)
                    .note(note),
                format!("{told}; istiod's /debug/clusterz ({from}) lists {lists}, not {cid:?}, although the remote secret is valid"),
            )
        }
        Judgement::NotSynced { from, entry } => {
            let status = entry.status_text();
            let secret = if entry.secret_name.is_empty() {
                "?"
            } else {
                entry.secret_name.as_str()
            };
            let diag = format!(
                "{told}; istiod's /debug/clusterz ({from}) lists {cid:?} (Secret {secret}) with syncStatus {status:?}, not synced"
            );
            if entry.sync_status.as_deref() == Some("closed") {
                let (cmds, note) = restart(
                    "istiod tears a cluster down when its remote secret is deleted or changed, then builds it again; one that stays closed means its remote-secret controller is stuck. The restart builds every cluster again from the current remote secrets.".to_string(),
                );
                return out.failing(
                    Finding::new(
                        &CLUSTER_CLOSED,
                        format!("istiod has closed cluster {cid:?} and not built it again"),
                    )
                    .commands(cmds)
                    .note(note),
                    diag,
                );
            }
            let wait = if entry.sync_status.as_deref() == Some("syncing") {
                "It is still listing the remote's objects (after 30 s this becomes timeout): trace again in a minute. "
            } else {
                ""
            };
            out.failing(
                Finding::new(&CLUSTER_NOT_SYNCED, format!("istiod has not synced cluster {cid:?} (syncStatus {status})")).note(format!(
                    "{wait}istiod lists the remote's objects from its own pod, and its TokenReview goes the same way: from there the remote API server (the remote secret's server) is unreachable or refuses the credential, though it works from here (network policy, firewall, private endpoint, egress proxy). istiod logs `remote cluster {cid} failed to sync`: {}",
                    logs_command(f, s, "remote cluster")
                )),
                diag,
            )
        }
        Judgement::Synced { entry } => {
            let diag = |v: &str| {
                format!(
                    "{told}; istiod lists {cid:?} synced (Secret {}) and meshtrace's TokenReview passed for {aud:?}; istiod's TOKEN_AUDIENCES: {v}",
                    entry.secret_name
                )
            };
            if let Some((v, false)) = &auds {
                return token_audience(out, s, &dep, v, diag);
            }
            if refused_over_xds {
                return refused_audience(
                    out,
                    s,
                    &dep,
                    format!(
                        "{told}; istiod lists {cid:?} synced (Secret {}) and refused over xDS a token of its own cluster ({ns}/{DEBUG_SERVICE_ACCOUNT}) for {aud:?} too: its TOKEN_AUDIENCES lack {aud:?}",
                        entry.secret_name
                    ),
                );
            }
            let known = auds
                .as_ref()
                .map(|(v, _)| format!("its TOKEN_AUDIENCES ({v}) hold {aud:?}"))
                .unwrap_or_else(|| "its TOKEN_AUDIENCES are unknown".into());
            if let Some((pod, started, change)) = stale_since(f, &dep) {
                let (cmds, note) = restart(format!(
                    "Secret {} changed at {} (resourceVersion {}), after istiod's pod {pod} started ({started}); istiod lists {cid:?} synced, {known}, and the same TokenReview passes from here with the secret's current credential: istiod still uses the client it built from the secret's earlier kubeconfig (its remote-secret controller missed the update). The restart builds every cluster again from the current secrets.",
                    change.secret,
                    change.text,
                    change.resource_version.as_deref().unwrap_or("?"),
                ));
                return out.failing(
                    Finding::new(&CLUSTER_STALE, format!("istiod still holds the earlier kubeconfig for cluster {cid:?}"))
                        .commands(cmds)
                        .note(note),
                    format!(
                        "{told}; istiod lists {cid:?} synced and meshtrace's TokenReview passes, but Secret {} changed at {}, after istiod's pod {pod} started ({started})",
                        change.secret,
                        change.text.split(' ').next().unwrap_or_default(),
                    ),
                );
            }
            let since = match &f.secret_changed {
                Some(c) => format!(
                    " Secret {} last changed at {}, before istiod's pods started, so istiod loaded its current kubeconfig.",
                    c.secret, c.text
                ),
                None => " When the remote secret last changed is unknown.".into(),
            };
            out.failing(
                Finding::new(&UNAUTHENTICATED, format!("istiod refuses the gateway's token for a reason meshtrace cannot see: it has synced {cid:?}"))
                    .note(format!(
                        "istiod lists {cid:?} synced, {known}, and the same TokenReview passes from here with the remote secret's credential.{since} istiod logs the reason: {}",
                        logs_command(f, s, "authenticate")
                    )),
                diag(auds.as_ref().map(|a| a.0.as_str()).unwrap_or("unknown")),
            )
        }
        Judgement::Unknown(why) => match &auds {
            Some((v, false)) => {
                let diag = |v: &str| {
                    format!(
                        "{told}; istiod's TOKEN_AUDIENCES are {v:?}, without the gateway token's audience {aud:?} (istiod's list of clusters is unknown)"
                    )
                };
                token_audience(out, s, &dep, v, diag)
            }
            _ if refused_over_xds => refused_audience(
                out,
                s,
                &dep,
                format!(
                    "{told}; istiod refused over xDS a token of its own cluster ({ns}/{DEBUG_SERVICE_ACCOUNT}) for {aud:?} too: its TOKEN_AUDIENCES lack {aud:?} (its list of clusters is unknown: {why})"
                ),
            ),
            _ => {
                let port_forward = format!(
                    "{} -n {} port-forward deployment/{} 15014",
                    s.kubectl_primary(),
                    shell_word(ns),
                    shell_word(dep.as_ref().map(|d| d.name.as_str()).unwrap_or("istiod"))
                );
                out.failing(
                    Finding::new(&UNAUTHENTICATED, "istiod refuses the gateway's token; its own view of its clusters is unknown").note(format!(
                        "istiod has not loaded cluster {cid:?}, holds an earlier credential for it, or cannot sync it from its pod; its /debug/clusterz tells which. meshtrace asks it over xDS with a token of {ns}/{DEBUG_SERVICE_ACCOUNT} (istioctl's way), else through the API server's pod proxy; when both fail, run `{port_forward}` and trace again with --istiod-debug-addr 127.0.0.1:15014. istiod logs the reason: {}",
                        logs_command(f, s, "authenticate")
                    )),
                    format!("{told}; istiod's view of its clusters is unknown: {why}"),
                )
            }
        },
    }
}

/// The istiod pod that started before the remote secret last changed (the
/// earliest such), with its start time: it may hold the earlier kubeconfig.
fn stale_since<'a>(
    f: &'a CsrFacts,
    dep: &Result<&IstiodDeployment, String>,
) -> Option<(String, String, &'a SecretChange)> {
    let change = f.secret_changed.as_ref()?;
    let d = dep.as_ref().ok()?;
    d.pod_started
        .iter()
        .filter_map(|(pod, t)| {
            let at = t.parse::<k8s_openapi::jiff::Timestamp>().ok()?.as_second();
            (at < change.at).then(|| (at, pod.clone(), t.clone()))
        })
        .min()
        .map(|(_, pod, t)| (pod, t, change))
}

/// istiod's TOKEN_AUDIENCES are not readable (istiod is no Deployment
/// meshtrace can read), but istiod refused a primary token for `aud` over
/// xDS: its own TokenReview says they lack it.
fn refused_audience(
    out: Outcome,
    s: &Settings,
    dep: &Result<&IstiodDeployment, String>,
    diag: String,
) -> Outcome {
    let aud = &s.token_audience;
    let how = match dep {
        Ok(d) => format!(
            "add {aud} to TOKEN_AUDIENCES of Deployment {} (comma-separated, keeping the others; meshtrace cannot read its current value)",
            d.name
        ),
        Err(e) => no_deployment_note(
            s,
            e,
            &format!("add {aud} to its TOKEN_AUDIENCES (comma-separated, keeping the others)"),
        ),
    };
    out.failing(
        Finding::new(
            &TOKEN_AUDIENCE,
            format!("istiod's TOKEN_AUDIENCES lack the gateway token's audience {aud:?}"),
        )
        .note(format!(
            "istiod reviews every token with TOKEN_AUDIENCES as the audiences: it refused the gateway's token and a token its own API server issued for {aud:?} alike, while the remote API server accepts the gateway's. {how}. If the gateways should use istiod's audience instead, trace again with --token-audience set to it: gateway-token then names the gateway's side"
        )),
        diag,
    )
}

/// The gateway's token is for `aud`; istiod reviews it for TOKEN_AUDIENCES
/// `current`, which lack it (istiod's own setting, never guessed).
fn token_audience(
    out: Outcome,
    s: &Settings,
    dep: &Result<&IstiodDeployment, String>,
    current: &str,
    diag: impl Fn(&str) -> String,
) -> Outcome {
    let aud = &s.token_audience;
    let v = current;
    let why = format!(
        "istiod sends its TokenReview with TOKEN_AUDIENCES as the audiences, so the remote API server refuses a token for {aud:?} (istiod logs `failed to validate the JWT from cluster ...: ... token audiences [\"{aud}\"] is invalid for the target audiences [...]`)."
    );
    let other = format!(
        " If the gateways should use istiod's audience instead, trace again with --token-audience {}: gateway-token then names the gateway's side",
        shell_word(v.split(',').find(|a| !a.is_empty()).unwrap_or(v))
    );
    let finding = Finding::new(
        &TOKEN_AUDIENCE,
        format!("istiod's TOKEN_AUDIENCES {v:?} lack the gateway token's audience {aud:?}"),
    );
    match dep {
        Ok(d) => out.failing(
            finding
                .command(set_env_command(s, d, "TOKEN_AUDIENCES", &with_item(v, aud)))
                .note(format!("{why} set env keeps istiod's other audiences and rolls it out.{other}")),
            diag(v),
        ),
        Err(e) => out.failing(
            finding.note(format!(
                "{why} {}{other}",
                no_deployment_note(s, e, &format!("add {aud} to its TOKEN_AUDIENCES (comma-separated, keeping the others) with `set env`"))
            )),
            diag(v),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::istiod::tests::one_istiod;
    use super::*;
    use crate::model::Status;
    use crate::probe::clusterz::{Answer as ViewAnswer, ClusterzEntry};

    fn entry(id: &str, secret: &str, status: &str) -> ClusterzEntry {
        ClusterzEntry {
            id: id.into(),
            secret_name: secret.into(),
            sync_status: Some(status.into()),
        }
    }

    const SECRET: &str = "istio-system/istio-remote-secret-remote";

    fn view(entries: Vec<ClusterzEntry>) -> clusterz::View {
        Ok(vec![ViewAnswer {
            from: "pod istiod-abc".into(),
            result: Ok(entries),
        }])
    }

    fn synced() -> clusterz::View {
        view(vec![
            entry("primary", "", "synced"),
            entry("remote", SECRET, "synced"),
        ])
    }

    fn refused(view: clusterz::View, istiod: IstiodDeployments) -> CsrFacts {
        CsrFacts {
            addr: "203.0.113.10:15012".into(),
            server_name: "istiod.istio-system.svc".into(),
            cluster_id: "remote".into(),
            csr_san:
                "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway-service-account"
                    .into(),
            token_fingerprint: "sha256:0123abcd".into(),
            ttl_secs: 3600,
            answer: Answer::Rpc {
                code: "Unauthenticated".into(),
                message: "request authenticate failure".into(),
            },
            rpc_ms: 4.0,
            view,
            view_source: "the primary API server's proxy".into(),
            istiod,
            istiod_audiences: None,
            secret_changed: None,
            xds_refused_audience: None,
            key: None,
        }
    }

    /// istiod's pod istiod-abc started at 10:00; the secret changed at `at`.
    fn changed_at(at: &str) -> CsrFacts {
        let mut deps = one_istiod(&[]);
        deps.as_mut().unwrap()[0]
            .pod_started
            .insert("istiod-abc".into(), "2026-12-02T10:00:00Z".into());
        let t: k8s_openapi::jiff::Timestamp = at.parse().unwrap();
        CsrFacts {
            secret_changed: Some(SecretChange {
                secret: SECRET.into(),
                at: t.as_second(),
                text: format!("{at} (managedFields: kubectl, Update)"),
                resource_version: Some("4711".into()),
            }),
            ..refused(synced(), deps)
        }
    }

    struct Row {
        name: &'static str,
        facts: CsrFacts,
        status: Status,
        code: Option<&'static str>,
        commands: &'static [&'static str],
        summary: Option<&'static str>,
    }

    #[test]
    fn judge_table() {
        let s = Settings::for_tests();
        let only_primary = view(vec![entry("primary", "", "synced")]);
        let rows = vec![
            Row {
                name: "issued",
                facts: CsrFacts { answer: Answer::Chain(vec!["leaf".into(), "root".into()]), ..refused(synced(), one_istiod(&[])) },
                status: Status::Pass,
                code: None,
                commands: &[],
                summary: None,
            },
            Row {
                name: "istiod lists only the primary: restart its Deployment",
                facts: refused(only_primary.clone(), one_istiod(&[])),
                status: Status::Fail,
                code: Some("csr/istiod-has-not-loaded-cluster"),
                commands: &["kubectl --context ctx-primary -n istio-system rollout restart deployment/istiod"],
                summary: Some("istiod has not loaded the remote secret for cluster \"remote\""),
            },
            Row {
                name: "not loaded, and TOKEN_AUDIENCES lack the audience too",
                facts: refused(only_primary.clone(), one_istiod(&[("TOKEN_AUDIENCES", "other-ca")])),
                status: Status::Fail,
                code: Some("csr/istiod-has-not-loaded-cluster"),
                commands: &["rollout restart deployment/istiod", "set env deployment/istiod TOKEN_AUDIENCES=other-ca,istio-ca"],
                summary: None,
            },
            Row {
                name: "not loaded, Deployment unknown: a note",
                facts: refused(only_primary, Err("no istiod Deployment (app=istiod) in istio-system of the primary".into())),
                status: Status::Fail,
                code: Some("csr/istiod-has-not-loaded-cluster"),
                commands: &[],
                summary: None,
            },
            Row {
                name: "closed",
                facts: refused(view(vec![entry("primary", "", "synced"), entry("remote", SECRET, "closed")]), one_istiod(&[])),
                status: Status::Fail,
                code: Some("csr/cluster-closed"),
                commands: &["rollout restart deployment/istiod"],
                summary: None,
            },
            Row {
                name: "timeout: a network path, no command",
                facts: refused(view(vec![entry("primary", "", "synced"), entry("remote", SECRET, "timeout")]), one_istiod(&[])),
                status: Status::Fail,
                code: Some("csr/cluster-not-synced"),
                commands: &[],
                summary: Some("istiod has not synced cluster \"remote\" (syncStatus timeout)"),
            },
            Row {
                name: "syncing",
                facts: refused(view(vec![entry("primary", "", "synced"), entry("remote", SECRET, "syncing")]), one_istiod(&[])),
                status: Status::Fail,
                code: Some("csr/cluster-not-synced"),
                commands: &[],
                summary: None,
            },
            Row {
                name: "synced, TOKEN_AUDIENCES without the audience: set env keeping the others",
                facts: refused(synced(), one_istiod(&[("TOKEN_AUDIENCES", "other-ca")])),
                status: Status::Fail,
                code: Some("csr/token-audience-not-accepted"),
                commands: &["kubectl --context ctx-primary -n istio-system set env deployment/istiod TOKEN_AUDIENCES=other-ca,istio-ca"],
                summary: Some("istiod's TOKEN_AUDIENCES \"other-ca\" lack the gateway token's audience \"istio-ca\""),
            },
            Row {
                name: "synced, control-plane's TOKEN_AUDIENCES without the audience, Deployment unread by csr",
                facts: CsrFacts {
                    istiod_audiences: Some((vec!["other-ca".into()], "env TOKEN_AUDIENCES of Deployment istiod".into())),
                    ..refused(synced(), Err("cannot list Deployments in istio-system of the primary: 403 Forbidden".into()))
                },
                status: Status::Fail,
                code: Some("csr/token-audience-not-accepted"),
                commands: &[],
                summary: Some("istiod's TOKEN_AUDIENCES \"other-ca\" lack the gateway token's audience \"istio-ca\""),
            },
            Row {
                name: "synced, istiod's audiences unknown: never the audience by elimination",
                facts: refused(synced(), Err("cannot list Deployments in istio-system of the primary: 403 Forbidden".into())),
                status: Status::Fail,
                code: Some("csr/unauthenticated"),
                commands: &[],
                summary: None,
            },
            Row {
                name: "synced, audiences unknown, istiod refused a primary token for the audience over xDS",
                facts: CsrFacts {
                    xds_refused_audience: Some("istio-ca".into()),
                    ..refused(synced(), Err("no istiod Deployment (app=istiod) in istio-system of the primary".into()))
                },
                status: Status::Fail,
                code: Some("csr/token-audience-not-accepted"),
                commands: &[],
                summary: Some("istiod's TOKEN_AUDIENCES lack the gateway token's audience \"istio-ca\""),
            },
            Row {
                name: "view unknown, audiences unknown, istiod refused a primary token for the audience over xDS",
                facts: CsrFacts {
                    xds_refused_audience: Some("istio-ca".into()),
                    ..refused(Err("no pod labelled app=istiod".into()), Err("no istiod Deployment (app=istiod) in istio-system of the primary".into()))
                },
                status: Status::Fail,
                code: Some("csr/token-audience-not-accepted"),
                commands: &[],
                summary: None,
            },
            Row {
                name: "synced, xDS refused a token for another audience: not this one",
                facts: CsrFacts {
                    xds_refused_audience: Some("other-ca".into()),
                    ..refused(synced(), Err("no istiod Deployment (app=istiod) in istio-system of the primary".into()))
                },
                status: Status::Fail,
                code: Some("csr/unauthenticated"),
                commands: &[],
                summary: None,
            },
            Row {
                name: "synced, audience accepted, secret unchanged since istiod started: cause unknown",
                facts: changed_at("2026-12-02T09:00:00Z"),
                status: Status::Fail,
                code: Some("csr/unauthenticated"),
                commands: &[],
                summary: Some("istiod refuses the gateway's token for a reason meshtrace cannot see: it has synced \"remote\""),
            },
            Row {
                name: "synced, audience accepted, no secret times: cause unknown",
                facts: refused(synced(), one_istiod(&[])),
                status: Status::Fail,
                code: Some("csr/unauthenticated"),
                commands: &[],
                summary: None,
            },
            Row {
                name: "synced, secret changed after istiod started: istiod holds the earlier kubeconfig",
                facts: changed_at("2026-12-02T11:00:00Z"),
                status: Status::Fail,
                code: Some("csr/istiod-cluster-stale"),
                commands: &["kubectl --context ctx-primary -n istio-system rollout restart deployment/istiod"],
                summary: Some("istiod still holds the earlier kubeconfig for cluster \"remote\""),
            },
            Row {
                name: "secret changed after istiod started, but TOKEN_AUDIENCES lack the audience: the audience",
                facts: CsrFacts {
                    istiod_audiences: Some((vec!["other-ca".into()], "env".into())),
                    ..changed_at("2026-12-02T11:00:00Z")
                },
                status: Status::Fail,
                code: Some("csr/token-audience-not-accepted"),
                commands: &["set env deployment/istiod TOKEN_AUDIENCES=other-ca,istio-ca"],
                summary: None,
            },
            Row {
                name: "view unknown, TOKEN_AUDIENCES without the audience",
                facts: refused(Err("istiod (istiod-abc) answered 401 Unauthorized through the pod proxy".into()), one_istiod(&[("TOKEN_AUDIENCES", "a,b")])),
                status: Status::Fail,
                code: Some("csr/token-audience-not-accepted"),
                commands: &["TOKEN_AUDIENCES=a,b,istio-ca"],
                summary: None,
            },
            Row {
                name: "view unknown, audience accepted",
                facts: refused(Err("istiod (istiod-abc) answered 401 Unauthorized through the pod proxy".into()), one_istiod(&[])),
                status: Status::Fail,
                code: Some("csr/unauthenticated"),
                commands: &[],
                summary: None,
            },
            Row {
                name: "another gRPC status",
                facts: CsrFacts {
                    answer: Answer::Rpc { code: "InvalidArgument".into(), message: "CSR signing error (requested TTL 3600s is greater than the max allowed TTL 1800s)".into() },
                    ..refused(synced(), one_istiod(&[]))
                },
                status: Status::Fail,
                code: Some("csr/refused"),
                commands: &[],
                summary: None,
            },
            Row {
                name: "connection",
                facts: CsrFacts { answer: Answer::Connect("203.0.113.10:15012: connection reset".into()), ..refused(synced(), one_istiod(&[])) },
                status: Status::Fail,
                code: Some("csr/connection-failed"),
                commands: &[],
                summary: None,
            },
            Row {
                name: "timeout",
                facts: CsrFacts { answer: Answer::Timeout(Duration::from_secs(5)), ..refused(synced(), one_istiod(&[])) },
                status: Status::Fail,
                code: Some("csr/no-answer"),
                commands: &[],
                summary: None,
            },
            Row {
                name: "bad input",
                facts: CsrFacts {
                    answer: Answer::BadInput("cluster ID \"a\\nb\" is not a valid header value".into()),
                    ..refused(synced(), one_istiod(&[]))
                },
                status: Status::Fail,
                code: Some("csr/request-not-sendable"),
                commands: &[],
                summary: None,
            },
            Row {
                name: "no CSR: meshtrace's bug",
                facts: CsrFacts { answer: Answer::NoCsr("bad SAN".into()), ..refused(synced(), one_istiod(&[])) },
                status: Status::Fail,
                code: Some("csr/internal-error"),
                commands: &[],
                summary: None,
            },
        ];
        for row in rows {
            let out = judge(&row.facts, &s);
            let f = super::super::check_row(row.name, &out, row.status, row.code, row.commands);
            if let Some(want) = row.summary {
                assert_eq!(f.unwrap().summary, want, "{}", row.name);
            }
            if let Some(f) = f {
                assert!(
                    !f.commands.iter().any(|c| c.contains('<')),
                    "{}: placeholder in {:?}",
                    row.name,
                    f.commands
                );
            }
        }
    }

    #[test]
    fn the_view_over_xds_comes_first_and_the_source_says_why_not() {
        let ok: clusterz::View = synced();
        let failed = |why: &str| -> clusterz::View {
            Ok(vec![ViewAnswer {
                from: "xDS 203.0.113.10:15012".into(),
                result: Err(why.into()),
            }])
        };
        let (v, src) = choose(
            ok.clone(),
            "xds".into(),
            Err("unused".into()),
            "proxy".into(),
        );
        assert_eq!((v, src.as_str()), (ok.clone(), "xds"));
        let (v, src) = choose(
            failed("istiod answered PermissionDenied"),
            "xds".into(),
            ok.clone(),
            "proxy".into(),
        );
        assert_eq!(v, ok);
        assert_eq!(src, "proxy; not over xDS: istiod answered PermissionDenied");
        let (v, src) = choose(
            Err("no token for istio-system/default".into()),
            "xds".into(),
            failed("401 Unauthorized"),
            "proxy".into(),
        );
        assert_eq!(
            v,
            Err(
                "over xDS: no token for istio-system/default; through proxy: 401 Unauthorized"
                    .into()
            )
        );
        assert_eq!(src, "none answered: xds, then proxy");
    }

    #[test]
    fn the_secret_change_is_the_newest_of_its_times() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
            ManagedFieldsEntry, ObjectMeta, Time,
        };
        let t = |s: &str| Time(s.parse().unwrap());
        let meta = ObjectMeta {
            creation_timestamp: Some(t("2026-12-01T08:00:00Z")),
            resource_version: Some("42".into()),
            managed_fields: Some(vec![
                ManagedFieldsEntry {
                    manager: Some("istioctl".into()),
                    operation: Some("Update".into()),
                    time: Some(t("2026-12-01T08:00:00Z")),
                    ..Default::default()
                },
                ManagedFieldsEntry {
                    manager: Some("kubectl-client-side-apply".into()),
                    operation: Some("Update".into()),
                    time: Some(t("2026-12-02T09:30:00Z")),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let c = change_of(SECRET, &meta).unwrap();
        assert_eq!(
            c.text,
            "2026-12-02T09:30:00Z (managedFields: kubectl-client-side-apply, Update)"
        );
        assert_eq!(c.resource_version.as_deref(), Some("42"));
        assert_eq!(change_of(SECRET, &ObjectMeta::default()), None);
    }

    #[test]
    fn the_not_loaded_note_quotes_istiods_log_line() {
        let s = Settings::for_tests();
        let f = refused(
            view(vec![
                entry("primary", "", "synced"),
                entry("other", "istio-system/istio-remote-secret-other", "synced"),
            ]),
            one_istiod(&[]),
        );
        let out = judge(&f, &s);
        let d = out.diagnosis.unwrap();
        assert_eq!(
            d,
            "istiod answered Unauthenticated (\"request authenticate failure\"); istiod's /debug/clusterz (pod istiod-abc) lists [\"primary\", \"other\"], not \"remote\", although the remote secret is valid"
        );
        let note = out.finding.unwrap().note.unwrap();
        assert!(
            note.contains("`client claims to be in cluster \"remote\", but we only know about local cluster \"primary\" and remote clusters [other]`"),
            "{note}"
        );
    }

    #[test]
    fn the_deployment_that_owns_the_answering_pod_is_restarted() {
        use super::super::istiod::{
            istiod_deployments,
            tests::{deployment, pod, replica_set},
        };
        let s = Settings::for_tests();
        let deps = Ok(istiod_deployments(
            &[deployment("istiod", &[]), deployment("istiod-canary", &[])],
            &[
                replica_set("istiod-1", "istiod"),
                replica_set("istiod-canary-1", "istiod-canary"),
            ],
            &[
                pod("istiod-abc", "istiod-canary-1"),
                pod("istiod-xyz", "istiod-1"),
            ],
        ));
        let out = judge(
            &refused(view(vec![entry("primary", "", "synced")]), deps),
            &s,
        );
        assert_eq!(
            out.finding.unwrap().commands,
            [
                "kubectl --context ctx-primary -n istio-system rollout restart deployment/istiod-canary"
            ]
        );
    }
}
