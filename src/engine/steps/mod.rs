//! One function per step. Each reads options, clients and earlier facts from
//! [`Ctx`], talks to a cluster or istiod, and returns an [`Outcome`]: facts
//! for the report, and on failure the value seen, the value expected, and the fix.

mod gateway;
mod istiod;
mod remote;
mod trust;

use super::{Ctx, Outcome};
use crate::model::StepId;

pub async fn run_step(id: StepId, ctx: &Ctx) -> Outcome {
    use StepId::*;
    match id {
        GatewayPod => gateway::gateway_pod(ctx).await,
        RemoteSecret => remote::remote_secret(ctx).await,
        RemoteKubeconfig => remote::remote_kubeconfig(ctx).await,
        RemoteApiTls => remote::remote_api_tls(ctx).await,
        RemoteIdentity => remote::remote_identity(ctx).await,
        RemoteRbac => remote::remote_rbac(ctx).await,
        RemoteIstiodEndpoint => istiod::istiod_endpoint(ctx).await,
        GatewayToken => gateway::gateway_token(ctx).await,
        TokenReview => remote::token_review(ctx).await,
        RootOfTrust => trust::root_of_trust(ctx).await,
        IstiodTls => istiod::istiod_tls(ctx).await,
        Csr => istiod::csr(ctx).await,
        IssuedChain => istiod::issued_chain(ctx).await,
        NetworkLabels => gateway::network_labels(ctx).await,
    }
}

// The kube-error words live in a probe module (shared with probe::clusterz
// and the preflight); the steps keep their short names.
pub(crate) use crate::probe::kube_error::{api_code, describe as kube_err};

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
