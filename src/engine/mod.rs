//! The trace engine: runs every step of the flow as early as its inputs
//! allow, and reports each start and finish as a [`TraceEvent`].
//!
//! Steps are independent tasks. A step waits for the steps it reads facts
//! from ([`waits_for`]); when a step it *needs* (model `StepInfo::needs`)
//! did not pass, it is reported `skipped` with `blocked_by` naming the failed
//! step at the root of the chain. So the critical path is exactly the chain
//! of truly dependent round trips.

pub mod facts;
pub mod fleet;
pub mod steps;
pub mod target;

use crate::findings::{Finding, generic};
use crate::inspect::sanitize::Secrets;
use crate::model::{
    STEPS, Status, StepId, StepResult, Target, TraceEvent, TraceReport, TraceState, millis,
};
use facts::Facts;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How to trace; the command line maps onto this.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub istio_namespace: String,
    /// The cluster ID the gateway sends; default: its ISTIO_META_CLUSTER_ID.
    pub cluster_id: Option<String>,
    /// The primary's own cluster ID; default: istiod's CLUSTER_ID, else the
    /// remote's `topology.istio.io/controlPlaneClusters` annotation.
    pub primary_cluster_id: Option<String>,
    /// `NS/NAME` of the gateway pod or deployment.
    pub gateway: Option<String>,
    /// istiod's 15012 address; default: the remote istiod EndpointSlice.
    pub istiod_addr: Option<String>,
    /// Where to dial istiod's webhook port (15017) instead of the address
    /// the injection webhook's clientConfig resolves to (its server name
    /// stays the webhook's).
    pub istiod_webhook_addr: Option<String>,
    /// Passive mode: no CSR is sent.
    pub no_csr: bool,
    /// Per-step timeout.
    pub timeout: Duration,
    /// Warn when a token or certificate expires within this.
    pub warn_within: Duration,
    /// The audience the gateway's token must carry; default: istiod's
    /// TOKEN_AUDIENCES as its Deployment sets them (Istio's `istio-ca`).
    pub token_audience: Option<String>,
    /// The istiod revision to judge with; default: the gateway's.
    pub revision: Option<String>,
    /// The platform's roots, for a gateway with `CA_ROOT_CA=SYSTEM`;
    /// default: this machine's (the lab gives its own public CA).
    pub platform_roots_pem: Option<String>,
    /// istiod's monitoring address (HOST:PORT, plain HTTP, port 15014 in a
    /// pod) to read its own view of the remote clusters (`/debug/clusterz`);
    /// default: through the primary API server's proxy to the istiod pod.
    pub istiod_debug_addr: Option<String>,
    /// `--kubeconfig` as given: printed fixes then start by exporting it, so
    /// that their `--context` names resolve as they did for the trace.
    pub kubeconfig: Vec<std::path::PathBuf>,
    /// Steps not run, each with its code and why: a fleet remote without a
    /// kube context skips the steps that need the remote's own rights
    /// (`<step>/no-context`), `--skip STEP` the operator's choice
    /// (`<step>/skipped-by-flag`). Reported `skipped`; what needs them is blocked.
    pub skip: Vec<Skip>,
}

/// A step the trace does not run: which, the finding code's cause, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub step: StepId,
    pub code: &'static str,
    pub why: String,
}

impl Skip {
    /// `--skip STEP`: the operator's choice, said in the step's evidence.
    pub fn by_flag(step: StepId) -> Self {
        Skip {
            step,
            code: crate::findings::generic::SKIPPED_BY_FLAG,
            why: format!(
                "not run: skipped with --skip {}; nothing this step checks was read or sent",
                step.as_str()
            ),
        }
    }
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            istio_namespace: "istio-system".into(),
            cluster_id: None,
            primary_cluster_id: None,
            gateway: None,
            istiod_addr: None,
            istiod_webhook_addr: None,
            no_csr: false,
            timeout: Duration::from_secs(5),
            warn_within: Duration::from_secs(7 * 24 * 3600),
            token_audience: None,
            revision: None,
            platform_roots_pem: None,
            istiod_debug_addr: None,
            kubeconfig: Vec::new(),
            skip: Vec::new(),
        }
    }
}

/// Kube clients for the two clusters, as the trace's operator (admin) sees them.
#[derive(Clone)]
pub struct Clusters {
    pub primary: kube::Client,
    pub remote: kube::Client,
    /// The remote API server URL of the `--remote` context (to match a remote
    /// secret by server when no cluster ID is known).
    pub remote_server: String,
    /// The API server URL of the `--primary` context (to name a remote
    /// secret that points at the primary; empty when unknown).
    pub primary_server: String,
    /// The operator's own inline credentials (both contexts), redacted
    /// wherever a peer echoes them.
    pub secrets: Vec<String>,
}

/// Everything a step can read: options, clients, and facts from earlier steps.
pub struct Ctx {
    pub opts: TraceOptions,
    pub clusters: Clusters,
    pub facts: Mutex<Facts>,
    /// Every exact secret this trace holds; a step that learns one adds it
    /// before it uses it, and every result is sanitized against them.
    pub secrets: Secrets,
    /// The kube contexts traced (primary, remote), for the commands fixes print.
    pub contexts: (String, String),
    /// A fleet remote without a context: the variable fixes name it by
    /// ([`Target::context_var`](crate::model::Target::context_var)) and
    /// its cluster ID.
    pub context_var: Option<(String, String)>,
    /// Each step's result once finished: what a gather that must see a
    /// later step first ([`Ctx::wait_steps`]) waits on.
    pub done: HashMap<StepId, watch::Receiver<Option<StepResult>>>,
}

impl Ctx {
    /// The remote's context as a word of a shell command: the context,
    /// quoted, or `"$CONTEXT_<ID>"` when there is none.
    pub fn remote_word(&self) -> String {
        match &self.context_var {
            Some((v, _)) => format!("\"${v}\""),
            None => crate::findings::shell_word(&self.contexts.1),
        }
    }
}

impl Ctx {
    /// The results of `ids`, once each has finished (a step whose result
    /// channel is gone is left out).
    pub async fn wait_steps(&self, ids: &[StepId]) -> Vec<StepResult> {
        let mut out = Vec::new();
        for id in ids {
            let Some(mut rx) = self.done.get(id).cloned() else {
                continue;
            };
            if let Ok(v) = rx.wait_for(|v| v.is_some()).await
                && let Some(r) = v.clone()
            {
                out.push(r);
            }
        }
        out
    }
    /// `id`'s result if it has finished, without waiting.
    pub fn finished(&self, id: StepId) -> Option<StepResult> {
        self.done.get(&id).and_then(|rx| rx.borrow().clone())
    }
    pub fn facts(&self) -> std::sync::MutexGuard<'_, Facts> {
        // A panic inside a step never happens by design; if one did, the data
        // is still the best we have, so recover it rather than propagate.
        self.facts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which steps a step reads facts from (a superset of what it needs); the
/// table is the model's ([`StepInfo::waits_for`](crate::model::StepInfo)).
pub fn waits_for(id: StepId) -> &'static [StepId] {
    id.info().waits_for
}

/// What a step function returns: its outcome, or, for a step whose gather
/// starts before all it waits for finished ([`StepId::gathers_after`]), the
/// judge of what it gathered, which the engine calls once they all did.
// Done is the common case and lives on the stack for an await: not boxed.
#[allow(clippy::large_enum_variant)]
pub enum Staged {
    Done(Outcome),
    Judge(Box<dyn FnOnce(&Ctx) -> Outcome + Send>),
}

impl From<Outcome> for Staged {
    fn from(o: Outcome) -> Self {
        Staged::Done(o)
    }
}

impl Staged {
    /// A judge to call once every step waited for has finished.
    pub fn judge(f: impl FnOnce(&Ctx) -> Outcome + Send + 'static) -> Self {
        Staged::Judge(Box::new(f))
    }
}

/// The outcome a step function returns; the engine adds id, title and timing.
#[derive(Debug, Default)]
pub struct Outcome {
    pub status: Option<Status>,
    pub evidence: crate::model::Evidence,
    pub finding: Option<Finding>,
    pub diagnosis: Option<String>,
    pub hint: Option<String>,
    pub blocked_by: Vec<StepId>,
}

impl Outcome {
    pub fn new() -> Self {
        Outcome::default()
    }
    pub fn ev(&mut self, key: &str, value: impl serde::Serialize) -> &mut Self {
        let v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.evidence.insert(key.to_string(), v);
        self
    }
    pub fn pass(mut self) -> Self {
        self.status = Some(Status::Pass);
        self
    }
    /// Fails with a finding; `diagnosis` quotes the value seen and the value expected.
    pub fn failing(mut self, finding: Finding, diagnosis: impl Into<String>) -> Self {
        self.status = Some(Status::Fail);
        self.finding = Some(finding);
        self.diagnosis = Some(diagnosis.into());
        self
    }
    /// Warns with a finding: something that works today but will break.
    pub fn warning(mut self, finding: Finding, diagnosis: impl Into<String>) -> Self {
        self.status = Some(Status::Warn);
        self.finding = Some(finding);
        self.diagnosis = Some(diagnosis.into());
        self
    }
    /// The step cannot run because a fact from `by` is missing.
    pub fn blocked(mut self, by: StepId, why: impl Into<String>) -> Self {
        self.status = Some(Status::Skipped);
        self.blocked_by = vec![by];
        self.diagnosis = Some(why.into());
        self
    }
    pub fn skipped(mut self, why: impl Into<String>) -> Self {
        self.status = Some(Status::Skipped);
        self.diagnosis = Some(why.into());
        self
    }
}

/// Run the whole trace, sending events to `events` as it goes, and return the
/// final report. Never panics on cluster data; every step is bounded by
/// `opts.timeout` (the CSR step by twice that: connect plus call).
pub async fn run(
    clusters: Clusters,
    opts: TraceOptions,
    target: Target,
    events: mpsc::UnboundedSender<TraceEvent>,
) -> TraceReport {
    let t0 = Instant::now();
    // The steps' GETs are shared within the trace, so the reads
    // steps::prefetch starts at once are not sent again by the steps, nor
    // the remote's istiod Service and EndpointSlices by each step that
    // resolves them.
    let mut clusters = clusters;
    clusters.primary = crate::probe::kube_cache::shared_reads(clusters.primary).0;
    clusters.remote = crate::probe::kube_cache::shared_reads(clusters.remote).0;
    let secrets = Secrets::new();
    for s in &clusters.secrets {
        secrets.add(s);
    }
    // One watch channel per step carries its result once finished.
    let mut senders = HashMap::new();
    let mut receivers = HashMap::new();
    for s in STEPS {
        let (tx, rx) = watch::channel::<Option<StepResult>>(None);
        senders.insert(s.id, tx);
        receivers.insert(s.id, rx);
    }
    let ctx = Arc::new(Ctx {
        opts,
        clusters,
        facts: Mutex::new(Facts::default()),
        secrets,
        contexts: (target.primary.clone(), target.remote.clone()),
        context_var: target.context_var().zip(target.cluster_id.clone()),
        done: receivers.clone(),
    });
    let warm = steps::prefetch(&ctx);
    let mut state = TraceState::default();
    let emit = |state: &mut TraceState, e: TraceEvent| {
        state.apply(&e);
        let _ = events.send(e);
    };
    // Hints name the kube contexts so that their commands can be pasted as they are.
    let contexts = Arc::new((target.primary.clone(), target.remote.clone()));
    emit(&mut state, TraceEvent::started(target));

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<TraceEvent>();

    // One trace's channels to istiod, shared by its steps (probe::ca_client).
    let trace_channels = crate::probe::ca_client::TraceChannels::default();
    for s in STEPS {
        let id = s.id;
        let ctx = ctx.clone();
        let contexts = contexts.clone();
        let tx = senders.remove(&id).expect("sender per step");
        let deps: Vec<_> = id
            .gathers_after()
            .iter()
            .map(|d| (*d, receivers[d].clone()))
            .collect();
        // What the judge waits for besides what the gather did.
        let later: Vec<StepId> = waits_for(id)
            .iter()
            .filter(|d| !id.gathers_after().contains(d))
            .copied()
            .collect();
        let done_tx = done_tx.clone();
        let channels = trace_channels.clone();
        tokio::spawn(crate::probe::ca_client::TRACE_CHANNELS.scope(channels, async move {
            let mut dep_results = Vec::new();
            for (_, mut rx) in deps {
                let r = match rx.wait_for(|v| v.is_some()).await {
                    Ok(v) => v.clone(),
                    Err(_) => None,
                };
                if let Some(r) = r {
                    dep_results.push(r);
                }
            }
            let started = t0.elapsed();
            let blockers = blockers_of(id, &dep_results);
            let not_run = ctx.opts.skip.iter().find(|s| s.step == id);
            let mut result = if let Some(Skip { code, why, .. }) = not_run {
                StepResult {
                    id,
                    title: id.info().title.to_string(),
                    status: Status::Skipped,
                    duration_ms: 0.0,
                    started_ms: millis(started),
                    evidence: Default::default(),
                    finding: Some(Finding::generic(id, code, why.clone())),
                    diagnosis: Some(why.clone()),
                    hint: None,
                    link: id.doc_link(),
                    blocked_by: vec![],
                }
            } else if !blockers.is_empty() {
                let why = not_run_why(&blockers);
                StepResult {
                    id,
                    title: id.info().title.to_string(),
                    status: Status::Skipped,
                    duration_ms: 0.0,
                    started_ms: millis(started),
                    evidence: Default::default(),
                    finding: Some(Finding::generic(id, generic::BLOCKED, why.clone())),
                    diagnosis: Some(why),
                    hint: None,
                    link: id.doc_link(),
                    blocked_by: blockers,
                }
            } else {
                let _ = done_tx.send(TraceEvent::StepStarted {
                    id,
                    at_ms: millis(started),
                });
                let step_start = Instant::now();
                let limit = step_limit(id, &ctx.opts);
                // A panic in a step is meshtrace's bug: the step fails and says so,
                // and the rest of the trace still ends.
                let step = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
                    steps::run_step(id, &ctx),
                ));
                let staged = match tokio::time::timeout(limit, step).await {
                    Ok(Ok(o)) => o,
                    Ok(Err(panic)) => Staged::Done(panicked(id, &*panic)),
                    Err(_) => Staged::Done(Outcome::new().failing(
                        Finding::generic(id, generic::TIMEOUT, format!("no answer within {}", humantime::format_duration(limit)))
                            .note("raise --timeout, or check the network path to the cluster this step talks to"),
                        format!("{} did not finish within {}", id, humantime::format_duration(limit)),
                    )),
                };
                // A step gathered early is judged once the rest of what it
                // waits for finished, and is blocked as it would have been
                // had it waited for them all: what it gathered is then dropped.
                let blockers = if later.is_empty() {
                    Vec::new()
                } else {
                    let mut all = dep_results.clone();
                    all.extend(ctx.wait_steps(&later).await);
                    blockers_of(id, &all)
                };
                // (blocked_by then names the root of the chain, as above.)
                let engine_blocked = !blockers.is_empty();
                let out = match staged {
                    _ if engine_blocked => blocked_outcome(id, blockers),
                    Staged::Done(o) => o,
                    Staged::Judge(j) => judged(id, &ctx, j),
                };
                debug_assert!(
                    engine_blocked || out.blocked_by.iter().all(|b| waits_for(id).contains(b)),
                    "{id} reports blocked_by {:?}, which it does not wait for",
                    out.blocked_by
                );
                let status = out.status.unwrap_or(Status::Fail);
                let remote_word = ctx.remote_word();
                let fill = |t: &str| fill_contexts(t, &contexts.0, &remote_word);
                let finding = match out.finding {
                    Some(mut f) => {
                        f.commands = f.commands.iter().map(|c| fill(c)).collect();
                        if let Some(guard) = context_guard(&ctx, &f.commands) {
                            f.commands.insert(0, guard);
                        }
                        if !f.commands.is_empty() && !ctx.opts.kubeconfig.is_empty() {
                            f.commands
                                .insert(0, export_kubeconfig(&ctx.opts.kubeconfig));
                        }
                        f.note = f.note.as_deref().map(fill);
                        Some(f)
                    }
                    None if status == Status::Pass => None,
                    // A step that says why but not as a finding (being moved to findings).
                    None => Some(legacy_finding(
                        id,
                        status,
                        out.diagnosis.as_deref(),
                        &out.blocked_by,
                        out.hint.as_deref().map(fill),
                    )),
                };
                let hint = match &finding {
                    Some(f) if status != Status::Skipped => f.legacy_hint(),
                    _ => out.hint.map(|h| fill(&h)),
                };
                StepResult {
                    id,
                    title: id.info().title.to_string(),
                    status,
                    duration_ms: millis(step_start.elapsed()),
                    started_ms: millis(started),
                    evidence: out.evidence,
                    finding,
                    diagnosis: out.diagnosis,
                    hint,
                    link: id.doc_link(),
                    blocked_by: out.blocked_by,
                }
            };
            result.sanitize(&ctx.secrets.snapshot());
            let _ = done_tx.send(TraceEvent::StepFinished {
                result: result.clone(),
            });
            let _ = tx.send(Some(result));
        }));
    }
    drop(done_tx);
    while let Some(e) = done_rx.recv().await {
        emit(&mut state, e);
    }
    for w in warm {
        w.abort();
    }
    emit(&mut state, TraceEvent::finished(millis(t0.elapsed())));
    state.report()
}

fn not_run_why(blockers: &[StepId]) -> String {
    format!(
        "not run: {} did not pass",
        blockers
            .iter()
            .map(|b| b.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A step gathered early whose needs did not pass: reported as one that
/// never ran (its gathered facts are not judged).
fn blocked_outcome(id: StepId, blockers: Vec<StepId>) -> Outcome {
    let why = not_run_why(&blockers);
    let mut out = Outcome::new();
    out.status = Some(Status::Skipped);
    out.finding = Some(Finding::generic(id, generic::BLOCKED, why.clone()));
    out.diagnosis = Some(why);
    out.blocked_by = blockers;
    out
}

/// A panic in a step is meshtrace's bug: the step fails and says so.
fn panicked(id: StepId, panic: &(dyn std::any::Any + Send)) -> Outcome {
    Outcome::new().failing(
        Finding::generic(
            id,
            generic::INTERNAL_ERROR,
            "meshtrace failed inside this step (a bug)",
        )
        .note("report it with the output of -o events"),
        format!(
            "meshtrace failed inside this step (a bug): {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into())
        ),
    )
}

/// Calls a step's judge, a panic in it reported as one in the step.
fn judged(id: StepId, ctx: &Ctx, judge: Box<dyn FnOnce(&Ctx) -> Outcome + Send>) -> Outcome {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| judge(ctx)))
        .unwrap_or_else(|p| panicked(id, &*p))
}

/// Replaces the `<primary>` and `<remote>` placeholders of a hint with the
/// kube contexts traced (shell-quoted when they need it); other placeholders
/// (`<primary-id>`, `<network>`) stay for the user to fill in.
pub fn fill_contexts(hint: &str, primary: &str, remote_word: &str) -> String {
    if primary.is_empty() || remote_word.is_empty() || remote_word == "''" {
        return hint.to_string();
    }
    hint.replace("<primary>", &crate::findings::shell_word(primary))
        .replace("<remote>", remote_word)
}

/// For a remote without a context whose fix names it by a variable: the
/// fix's first line, which stops the paste with a clear message while the
/// variable is unset (`: "${VAR:?...}"`) — meshtrace cannot know the context.
fn context_guard(ctx: &Ctx, commands: &[String]) -> Option<String> {
    let (var, id) = ctx.context_var.as_ref()?;
    if !commands.iter().any(|c| c.contains(&ctx.remote_word())) {
        return None;
    }
    Some(guard_line(var, id, &ctx.clusters.remote_server))
}

/// `: "${VAR:?...}"` naming the cluster and its server (characters the
/// shell would expand or that would end the word left out: peer text).
fn guard_line(var: &str, id: &str, server: &str) -> String {
    let keep = |s: &str| -> String {
        s.chars()
            .filter(|c| !"}\"'$`\\".contains(*c) && !c.is_control())
            .collect()
    };
    let (id, server) = (keep(id), keep(server));
    let at = if server.is_empty() {
        String::new()
    } else {
        format!(" (API server {server})")
    };
    format!(": \"${{{var}:?set it to the kubeconfig context of {id}{at}}}\"")
}

/// `export KUBECONFIG=...` for the kubeconfig files the trace used.
pub fn export_kubeconfig(paths: &[std::path::PathBuf]) -> String {
    let joined = std::env::join_paths(paths)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("export KUBECONFIG={}", crate::findings::shell_word(&joined))
}

/// A finding for a step result made without one: a step that is blocked or
/// skipped by its own decision (or, a bug, one that fails without a cause).
fn legacy_finding(
    id: StepId,
    status: Status,
    diagnosis: Option<&str>,
    blocked_by: &[StepId],
    hint: Option<String>,
) -> Finding {
    let first_line = |d: &str| -> String {
        let d = d.split(['\n']).next().unwrap_or(d);
        let mut out: String = d.chars().take(100).collect();
        if out.len() < d.len() {
            out.push('…');
        }
        out
    };
    if status == Status::Skipped {
        let summary = if blocked_by.is_empty() {
            diagnosis
                .map(first_line)
                .unwrap_or_else(|| "not run".into())
        } else {
            not_run_why(blocked_by)
        };
        return Finding::generic(id, generic::BLOCKED, summary);
    }
    // Every fail and warn is made with a finding (Outcome::failing,
    // warning); one without is meshtrace's bug, and says so.
    let mut f = Finding::generic(
        id,
        generic::INTERNAL_ERROR,
        diagnosis
            .map(first_line)
            .unwrap_or_else(|| "the step gave no cause (a bug)".into()),
    );
    f.note = hint;
    f
}

fn step_limit(id: StepId, opts: &TraceOptions) -> Duration {
    match id {
        // Connect, then the call: each bounded by the timeout inside.
        StepId::Csr => opts.timeout * 2 + Duration::from_millis(500),
        // The stream (connect and first answer), then istiod's view when refused.
        StepId::Xds => opts.timeout * 2 + Duration::from_millis(500),
        // The TLS handshake, then the AdmissionReview: each bounded inside.
        StepId::InjectionWebhook => opts.timeout * 2 + Duration::from_millis(500),
        // Several independent access reviews run at once, each bounded.
        _ => opts.timeout + Duration::from_millis(500),
    }
}

/// The failed steps at the root of why `id` cannot run: a needed step that
/// failed, or the blockers of a needed step that was itself skipped.
fn blockers_of(id: StepId, deps: &[StepResult]) -> Vec<StepId> {
    let mut out = Vec::new();
    for need in id.info().needs {
        if let Some(r) = deps.iter().find(|r| r.id == *need) {
            match r.status {
                Status::Fail => out.push(r.id),
                Status::Skipped if !r.blocked_by.is_empty() => {
                    out.extend(r.blocked_by.iter().copied())
                }
                Status::Skipped => out.push(r.id),
                _ => {}
            }
        }
    }
    out.sort_by_key(|s| s.index());
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixes_export_the_kubeconfig_the_trace_used() {
        let p = |s: &str| std::path::PathBuf::from(s);
        assert_eq!(
            super::export_kubeconfig(&[p("/tmp/k")]),
            "export KUBECONFIG=/tmp/k"
        );
        assert_eq!(
            super::export_kubeconfig(&[p("/a b/k"), p("/c")]),
            "export KUBECONFIG='/a b/k:/c'"
        );
    }

    #[test]
    fn hints_name_the_contexts_quoted_for_the_shell() {
        let h = "kubectl --context <remote> label x; kubectl --context=<primary> get y; annotate z=<primary-id>";
        assert_eq!(
            super::fill_contexts(h, "kind-primary", "arn:aws:eks:eu-west-1:1:cluster/remote"),
            "kubectl --context arn:aws:eks:eu-west-1:1:cluster/remote label x; kubectl --context=kind-primary get y; annotate z=<primary-id>"
        );
        let word = crate::findings::shell_word;
        assert_eq!(
            super::fill_contexts("--context <remote>", "p", &word("it's mine")),
            r"--context 'it'\''s mine'"
        );
        assert_eq!(
            super::fill_contexts("--context <remote>", "", ""),
            "--context <remote>"
        );
    }

    /// A fleet remote without a context: fixes name it by a variable, and
    /// the line that asks for it comes only where a command uses it.
    #[test]
    fn a_remote_without_a_context_is_named_by_a_variable_its_fix_asks_for() {
        let t = crate::model::Target {
            cluster_id: Some("eu-west.1".into()),
            ..Default::default()
        };
        assert_eq!(t.context_var().as_deref(), Some("CONTEXT_EU_WEST_1"));
        assert_eq!(
            t.remote_label(),
            "none (eu-west.1: the remote secret's credentials)"
        );
        let with = crate::model::Target {
            remote: "ctx".into(),
            ..t.clone()
        };
        assert_eq!(with.context_var(), None);
        let word = "\"$CONTEXT_EU_WEST_1\"";
        assert_eq!(
            super::fill_contexts("kubectl --context <remote> get x", "p", word),
            "kubectl --context \"$CONTEXT_EU_WEST_1\" get x"
        );
        let guard = super::guard_line(
            "CONTEXT_EU_WEST_1",
            "eu-west.1",
            "https://10.0.0.3:6443/}$`x",
        );
        assert_eq!(
            guard,
            ": \"${CONTEXT_EU_WEST_1:?set it to the kubeconfig context of eu-west.1 (API server https://10.0.0.3:6443/x)}\""
        );
        // The guard stops a shell with its message while the variable is unset, and passes once set.
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("{guard}\necho ran")])
            .env_remove("CONTEXT_EU_WEST_1")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("set it to the kubeconfig context of eu-west.1")
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("ran"));
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("{guard}\necho ran")])
            .env("CONTEXT_EU_WEST_1", "c")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    }
}
