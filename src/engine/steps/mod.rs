//! The steps. Each step is a *gather* (I/O: reads options, clients and
//! earlier facts from [`Ctx`], talks to a cluster or istiod, returns typed
//! facts) and a *judge* (a pure function of those facts and [`Settings`]
//! that returns the [`Outcome`] with its finding). Judges are table-tested.

mod control_plane;
mod csr;
pub(crate) mod dial;
mod gateway;
mod gateway_pod;
mod gateway_token;
mod injection_webhook;
mod issued_chain;
mod istiod;
mod istiod_exposure;
mod istiod_tls;
mod network_labels;
mod remote;
mod remote_api_tls;
mod remote_identity;
mod remote_istiod_endpoint;
mod remote_kubeconfig;
mod remote_rbac;
mod remote_secret;
mod root_of_trust;
mod secret_fix;
mod token_review;
mod xds;

#[cfg(test)]
use super::Outcome;
use super::{Ctx, Staged};
use crate::findings::{Cause, shell_word};
use crate::model::StepId;
pub use control_plane::IstiodSettings;
// What fleet mode reads as istiod's secret controller does (engine/fleet.rs).
pub(crate) use control_plane::settings_of;
pub(crate) use istiod::read_istiod_deployments;
pub(crate) use remote_api_tls::istiod_view_client;
pub(crate) use secret_fix::same_server;
use std::time::Duration;

/// What a judge may know besides its facts: the options of the trace, the
/// contexts (for the commands it prints) and the time, so that judging is
/// pure and a test can fix every input.
#[derive(Debug, Clone)]
pub struct Settings {
    pub istio_namespace: String,
    /// The audience the gateway's token is checked for: `--token-audience`,
    /// else the first of istiod's TOKEN_AUDIENCES.
    pub token_audience: String,
    /// The audiences istiod's TokenReview asks for (TOKEN_AUDIENCES, or
    /// `--token-audience` alone when given).
    pub token_audiences: Vec<String>,
    /// Where `token_audiences` came from, for diagnoses.
    pub audiences_from: String,
    pub warn_within: Duration,
    /// Now, in Unix seconds.
    pub now: i64,
    /// The kube contexts traced, as given (`--primary`, `--remote`).
    pub primary_context: String,
    pub remote_context: String,
    /// The remote context as a command's word (quoted; or the variable a
    /// fleet remote without a context is named by, [`Ctx::remote_word`]).
    pub remote_word: String,
}

impl Settings {
    pub fn of(ctx: &Ctx) -> Settings {
        let istiod = ctx.facts().istiod_settings.clone();
        let (token_audiences, audiences_from) = match (&ctx.opts.token_audience, &istiod) {
            (Some(a), _) => (vec![a.clone()], "--token-audience".to_string()),
            (None, Some(st)) => (
                st.token_audiences.value.clone(),
                st.token_audiences.from.clone(),
            ),
            (None, None) => (
                vec!["istio-ca".into()],
                "Istio's default TOKEN_AUDIENCES".into(),
            ),
        };
        Settings {
            istio_namespace: ctx.opts.istio_namespace.clone(),
            token_audience: token_audiences.first().cloned().unwrap_or_default(),
            token_audiences,
            audiences_from,
            warn_within: ctx.opts.warn_within,
            now: now_unix(),
            primary_context: ctx.contexts.0.clone(),
            remote_context: ctx.contexts.1.clone(),
            remote_word: ctx.remote_word(),
        }
    }
    /// `kubectl --context <remote>`, quoted for the shell: the start of a
    /// command that changes the remote.
    pub fn kubectl_remote(&self) -> String {
        format!("kubectl --context {}", self.remote_word)
    }
    /// How meshtrace read the remote: "as the --remote context", or, for a
    /// fleet remote without one, "with the remote secret's credentials".
    pub fn remote_reader(&self) -> &'static str {
        if self.remote_context.is_empty() {
            "with the remote secret's credentials"
        } else {
            "as the --remote context"
        }
    }
    /// `kubectl --context <primary>`.
    pub fn kubectl_primary(&self) -> String {
        format!("kubectl --context {}", shell_word(&self.primary_context))
    }
    /// Settings for judge tests: the lab's names, a fixed clock.
    #[cfg(test)]
    pub fn for_tests() -> Settings {
        Settings {
            istio_namespace: "istio-system".into(),
            token_audience: "istio-ca".into(),
            token_audiences: vec!["istio-ca".into()],
            audiences_from: "Istio's default TOKEN_AUDIENCES".into(),
            warn_within: Duration::from_secs(7 * 24 * 3600),
            now: 1_800_000_000,
            primary_context: "ctx-primary".into(),
            remote_context: "ctx-remote".into(),
            remote_word: "ctx-remote".into(),
        }
    }
}

/// The checks every judge-table row gets, in one place: the status, the
/// code, the commands (each wanted piece in some command; none when none
/// are wanted), a summary of at most 100 characters and a diagnosis of at
/// most 300. Returns the finding for a step's own extra checks.
#[cfg(test)]
pub(crate) fn check_row<'a>(
    name: &str,
    out: &'a Outcome,
    status: crate::model::Status,
    code: Option<&str>,
    commands: &[&str],
) -> Option<&'a crate::findings::Finding> {
    assert_eq!(out.status, Some(status), "{name}: {:?}", out.diagnosis);
    let f = out.finding.as_ref();
    assert_eq!(
        f.map(|f| f.code.as_str()),
        code,
        "{name}: {:?}",
        out.diagnosis
    );
    let cmds = f.map(|f| f.commands.clone()).unwrap_or_default();
    for want in commands {
        assert!(
            cmds.iter().any(|c| c.contains(want)),
            "{name}: no command holds {want:?}: {cmds:#?}"
        );
    }
    if commands.is_empty() {
        assert!(cmds.is_empty(), "{name}: {cmds:?}");
    }
    if let Some(f) = f {
        assert!(f.summary.chars().count() <= 100, "{name}: {}", f.summary);
        let d = out.diagnosis.as_deref().unwrap_or_default();
        assert!(
            d.chars().count() <= 300,
            "{name}: {} chars: {d}",
            d.chars().count()
        );
    }
    f
}

/// Every cause any step can report, from each step module's `CAUSES`: the
/// catalogue `meshtrace explain` and the docs test read.
pub fn causes() -> Vec<&'static Cause> {
    let lists: &[&[&'static Cause]] = &[
        gateway_pod::CAUSES,
        control_plane::CAUSES,
        remote_secret::CAUSES,
        remote_kubeconfig::CAUSES,
        remote_api_tls::CAUSES,
        remote_identity::CAUSES,
        remote_rbac::CAUSES,
        remote_istiod_endpoint::CAUSES,
        istiod_exposure::CAUSES,
        gateway_token::CAUSES,
        token_review::CAUSES,
        root_of_trust::CAUSES,
        istiod_tls::CAUSES,
        injection_webhook::CAUSES,
        csr::CAUSES,
        issued_chain::CAUSES,
        xds::CAUSES,
        network_labels::CAUSES,
    ];
    lists.iter().flat_map(|l| l.iter().copied()).collect()
}

/// The primary's reads that need no other step's facts, started with the
/// trace so that the steps asking them later (after the gateway and istiod's
/// settings are known) find them in flight or answered: the trace's primary
/// client shares its GETs (`probe::kube_cache`), so each goes out once. The
/// answers are dropped here; the engine aborts what is left when the trace ends.
pub fn prefetch(ctx: &Ctx) -> Vec<tokio::task::JoinHandle<()>> {
    let runs = |id: StepId| !ctx.opts.skip.iter().any(|s| s.step == id);
    let primary = &ctx.clusters.primary;
    let ns = &ctx.opts.istio_namespace;
    let timeout = ctx.opts.timeout;
    let mut warm = Vec::new();
    let (p, n) = (primary.clone(), ns.clone());
    // istiod-exposure's six lists are not started here: they only explain
    // a path that fails, and sent beside the reads every step waits for they
    // slowed those down on API servers sharing a machine's cores.
    if runs(StepId::ControlPlane) {
        warm.push(tokio::spawn(async move {
            // The default mesh config beside the Deployments it is named
            // from: control-plane and root-of-trust read it.
            let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(p.clone(), &n);
            let _ = tokio::join!(
                control_plane::primary_reads(&p, &n, timeout),
                cms.get_opt("istio")
            );
        }));
    }
    if runs(StepId::RemoteSecret) {
        let (p, n) = (primary.clone(), ns.clone());
        warm.push(tokio::spawn(async move {
            let _ = remote_secret::list_labelled(&p, &n).await;
        }));
    }
    warm
}

pub async fn run_step(id: StepId, ctx: &Ctx) -> Staged {
    use StepId::*;
    match id {
        GatewayPod => gateway_pod::run(ctx).await.into(),
        ControlPlane => control_plane::run(ctx).await.into(),
        RemoteSecret => remote_secret::run(ctx).await.into(),
        RemoteKubeconfig => remote_kubeconfig::run(ctx).await.into(),
        RemoteApiTls => remote_api_tls::run(ctx).await.into(),
        RemoteIdentity => remote_identity::run(ctx).await,
        RemoteRbac => remote_rbac::run(ctx).await,
        RemoteIstiodEndpoint => remote_istiod_endpoint::run(ctx).await.into(),
        IstiodExposure => istiod_exposure::run(ctx).await.into(),
        GatewayToken => gateway_token::run(ctx).await,
        TokenReview => token_review::run(ctx).await,
        RootOfTrust => root_of_trust::run(ctx).await,
        IstiodTls => istiod_tls::run(ctx).await.into(),
        InjectionWebhook => injection_webhook::run(ctx).await,
        Csr => csr::run(ctx).await,
        IssuedChain => issued_chain::run(ctx).await.into(),
        Xds => xds::run(ctx).await,
        NetworkLabels => network_labels::run(ctx).await.into(),
    }
}

// The kube-error words live in a probe module (shared with probe::clusterz
// and the preflight); the steps keep their short names.
pub(crate) use crate::probe::kube_error::{api_code, describe as kube_err};

/// The client istiod's view is read with, once remote-kubeconfig's is
/// built; else the outcome of a step that has none: blocked by
/// remote-kubeconfig without a kubeconfig, by `unbuilt` (with `why`) when
/// no client could be built (remote-api-tls fails then, and says why).
pub(crate) async fn istiod_view(
    ctx: &Ctx,
    unbuilt: StepId,
    why: &str,
) -> Result<kube::Client, Staged> {
    let pending = ctx.facts().istiod_view.clone();
    let Some(pending) = pending else {
        return Err(super::Outcome::new()
            .blocked(StepId::RemoteKubeconfig, "no usable kubeconfig")
            .into());
    };
    pending
        .get()
        .await
        .map_err(|_| super::Outcome::new().blocked(unbuilt, why).into())
}

/// The name of the istiod Deployment control-plane picked, else Istio's
/// default `istiod`.
pub(crate) fn istiod_deployment_name(ctx: &Ctx) -> String {
    ctx.facts()
        .istiod_settings
        .as_ref()
        .and_then(|s| s.deployment.as_ref().map(|d| d.name.clone()))
        .unwrap_or_else(|| "istiod".into())
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn quote_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
