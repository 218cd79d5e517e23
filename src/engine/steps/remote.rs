//! What the remote-side steps share: the primary's own cluster ID, a remote
//! secret's server, and parsing a kubeconfig off the async workers. (Each
//! step is in its own file: remote_secret.rs, remote_kubeconfig.rs,
//! remote_api_tls.rs, remote_identity.rs, remote_rbac.rs, token_review.rs.)

use crate::engine::Ctx;
use crate::inspect::kubeconfig;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

/// The primary's own cluster ID: flag, else istiod's (control-plane read
/// `--clusterID`, `CLUSTER_ID`, else Istio's default `Kubernetes` from the
/// Deployment it picked), else the remote's controlPlaneClusters annotation.
pub(super) async fn primary_cluster_id(ctx: &Ctx) -> Option<(String, &'static str)> {
    if let Some(id) = &ctx.opts.primary_cluster_id {
        return Some((id.clone(), "--primary-cluster-id"));
    }
    let settings = ctx.facts().istiod_settings.clone();
    if let Some(st) = settings.filter(|s| s.deployment.is_some()) {
        let from =
            if st.cluster_id.from.starts_with("env") || st.cluster_id.from.starts_with("flag") {
                "primary istiod CLUSTER_ID"
            } else {
                "primary istiod CLUSTER_ID (unset: Istio's default)"
            };
        return Some((st.cluster_id.value.clone(), from));
    }
    let ns: Api<Namespace> = Api::all(ctx.clusters.remote.clone());
    if let Ok(Some(n)) = ns.get_opt(&ctx.opts.istio_namespace).await {
        if let Some(v) = n
            .metadata
            .annotations
            .and_then(|a| a.get("topology.istio.io/controlPlaneClusters").cloned())
        {
            if v != "*" && !v.contains(',') {
                return Some((
                    v,
                    "remote namespace annotation topology.istio.io/controlPlaneClusters",
                ));
            }
        }
    }
    None
}

/// The server of a kubeconfig istiod accepts (with istiod's allowed
/// insecure options): its current-context's cluster, as
/// `clientcmd.NewDefaultClientConfig` with no overrides picks it.
pub(super) fn server_of(kc: &[u8], allowed: &[String]) -> Option<String> {
    kubeconfig::parse_remote_kubeconfig_allowing(kc, allowed)
        .ok()
        .map(|k| k.server)
}

/// Parses a remote secret's kubeconfig on a blocking thread: parsing is CPU
/// work a peer controls, and on an async worker the step's deadline could
/// not interrupt it. (It is bounded too: see [`kubeconfig::check_shape`].)
/// `allowed`: istiod's insecure kubeconfig options.
pub(super) async fn parse_off_worker(
    bytes: Vec<u8>,
    allowed: Vec<String>,
) -> Result<kubeconfig::RemoteKubeconfig, kubeconfig::KubeconfigError> {
    tokio::task::spawn_blocking(move || {
        kubeconfig::parse_remote_kubeconfig_allowing(&bytes, &allowed)
    })
    .await
    .unwrap_or_else(|e| {
        Err(kubeconfig::KubeconfigError::Load(format!(
            "the parser stopped: {e}"
        )))
    })
}
