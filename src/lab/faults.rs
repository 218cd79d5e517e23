//! Named faults the lab can inject, one or more per row of the failure
//! catalogue. Each names the step that must report it first: the lab's
//! integration tests hold meshtrace to that.

use crate::model::{Status, StepId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub name: &'static str,
    /// Row of docs/faults.md / the failure catalogue.
    pub catalog: u8,
    pub summary: &'static str,
    /// The first step that must not pass.
    pub step: StepId,
    /// Fail for a breakage, Warn for something that still works today.
    pub status: Status,
    /// A word the diagnosis must contain (tests check it).
    pub keyword: &'static str,
}

const fn f(
    name: &'static str,
    catalog: u8,
    step: StepId,
    keyword: &'static str,
    summary: &'static str,
) -> Fault {
    Fault {
        name,
        catalog,
        summary,
        step,
        status: Status::Fail,
        keyword,
    }
}
const fn w(
    name: &'static str,
    catalog: u8,
    step: StepId,
    keyword: &'static str,
    summary: &'static str,
) -> Fault {
    Fault {
        name,
        catalog,
        summary,
        step,
        status: Status::Warn,
        keyword,
    }
}

use StepId::*;

pub const FAULTS: &[Fault] = &[
    f(
        "no-remote-secret",
        1,
        RemoteSecret,
        "no remote secret",
        "the primary has no remote secret at all",
    ),
    f(
        "secret-unlabelled",
        1,
        RemoteSecret,
        "not labelled",
        "the remote secret lacks the istio/multiCluster=true label",
    ),
    f(
        "secret-wrong-namespace",
        1,
        RemoteSecret,
        "only watches",
        "the remote secret is in namespace default, not istio-system",
    ),
    f(
        "cluster-id-mismatch",
        2,
        RemoteSecret,
        "data key",
        "the secret's data key is remote-1, the gateway says remote",
    ),
    f(
        "cluster-id-is-primary",
        3,
        RemoteSecret,
        "own cluster ID",
        "the remote is keyed, and calls itself, by the primary's cluster ID",
    ),
    f(
        "kubeconfig-empty",
        4,
        RemoteKubeconfig,
        "empty",
        "the remote secret's kubeconfig is empty",
    ),
    f(
        "kubeconfig-not-yaml",
        4,
        RemoteKubeconfig,
        "cannot be loaded",
        "the remote secret's kubeconfig is not YAML",
    ),
    f(
        "kubeconfig-no-current-context",
        4,
        RemoteKubeconfig,
        "not valid",
        "the kubeconfig has no current-context",
    ),
    f(
        "kubeconfig-exec",
        5,
        RemoteKubeconfig,
        "exec is not allowed",
        "the kubeconfig authenticates with an exec plugin",
    ),
    f(
        "kubeconfig-token-file",
        5,
        RemoteKubeconfig,
        "tokenFile",
        "the kubeconfig reads its token from a file path",
    ),
    f(
        "api-server-unreachable",
        6,
        RemoteApiTls,
        "cannot reach",
        "the kubeconfig's server is a closed port",
    ),
    f(
        "wrong-ca-data",
        7,
        RemoteApiTls,
        "does not verify",
        "certificate-authority-data is some other CA",
    ),
    f(
        "reader-token-expired",
        8,
        RemoteIdentity,
        "expired",
        "the reader token in the remote secret has expired",
    ),
    f(
        "reader-sa-deleted",
        8,
        RemoteIdentity,
        "no longer exists",
        "istio-reader-service-account was deleted in the remote",
    ),
    f(
        "reader-token-other-cluster",
        8,
        RemoteIdentity,
        "another cluster",
        "the reader token was issued by the primary's key",
    ),
    w(
        "reader-token-expiring",
        19,
        RemoteIdentity,
        "expires",
        "the reader token expires in 2 days",
    ),
    f(
        "no-tokenreview-rbac",
        9,
        RemoteRbac,
        "tokenreviews",
        "the reader ClusterRole lacks create tokenreviews",
    ),
    f(
        "istiod-service-missing",
        10,
        RemoteIstiodEndpoint,
        "no Service",
        "the remote has no istiod Service",
    ),
    f(
        "istiod-service-selector",
        10,
        RemoteIstiodEndpoint,
        "selector",
        "the remote istiod Service selects local pods",
    ),
    f(
        "istiod-no-endpoints",
        10,
        RemoteIstiodEndpoint,
        "EndpointSlice",
        "the remote istiod Service has no EndpointSlice",
    ),
    f(
        "istiod-unreachable",
        15,
        IstiodTls,
        "cannot reach",
        "the EndpointSlice points at a closed port",
    ),
    f(
        "gateway-no-cluster-id",
        2,
        GatewayPod,
        "ISTIO_META_CLUSTER_ID",
        "the gateway pod has no ISTIO_META_CLUSTER_ID",
    ),
    f(
        "gateway-audience",
        11,
        GatewayToken,
        "audience",
        "the gateway's istio-token volume has audience kubernetes.default.svc",
    ),
    f(
        "gateway-no-projected-token",
        11,
        GatewayToken,
        "istio-token",
        "the gateway has no projected istio-token volume",
    ),
    f(
        "gateway-sa-deleted",
        12,
        GatewayToken,
        "no longer exists",
        "the gateway's service account was deleted",
    ),
    f(
        "root-configmap-missing",
        13,
        RootOfTrust,
        "missing",
        "the remote has no istio-ca-root-cert",
    ),
    f(
        "stale-root",
        13,
        RootOfTrust,
        "stale",
        "the remote's istio-ca-root-cert holds an old root",
    ),
    f(
        "partial-cacerts",
        18,
        RootOfTrust,
        "incomplete",
        "the primary's cacerts lacks cert-chain.pem",
    ),
    w(
        "root-expiring",
        18,
        RootOfTrust,
        "expires",
        "the primary's root expires in 3 days",
    ),
    f(
        "istiod-cert-wrong-san",
        14,
        IstiodTls,
        "valid for",
        "istiod's serving certificate lacks istiod.istio-system.svc",
    ),
    f(
        "istiod-token-audiences",
        16,
        Csr,
        "Unauthenticated",
        "istiod checks tokens for audience other-ca (TOKEN_AUDIENCES)",
    ),
    f(
        "istiod-stale-clusters",
        16,
        Csr,
        "has not loaded",
        "istiod's remote-secret controller is stuck: it never loaded the valid remote secret",
    ),
    f(
        "chain-single-element",
        17,
        IssuedChain,
        "invalid empty CertChain",
        "istiod returns only the leaf",
    ),
    f(
        "chain-wrong-trust-domain",
        17,
        IssuedChain,
        "trust domain",
        "istiod signs for trust domain other.local",
    ),
    f(
        "chain-clock-skew",
        17,
        IssuedChain,
        "not valid yet",
        "istiod's clock is an hour ahead: the leaf is not yet valid",
    ),
    w(
        "network-mismatch",
        20,
        NetworkLabels,
        "disagree",
        "the gateway Service says network1, the namespace network2",
    ),
];

pub fn find(name: &str) -> Option<&'static Fault> {
    FAULTS.iter().find(|f| f.name == name)
}

pub fn names() -> Vec<&'static str> {
    FAULTS.iter().map(|f| f.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names_unique_and_cover_catalogue() {
        let mut n = names();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), FAULTS.len());
        assert!(FAULTS.len() >= 16);
        let mut rows: Vec<u8> = FAULTS.iter().map(|f| f.catalog).collect();
        rows.sort();
        rows.dedup();
        assert!(rows.len() >= 16, "rows covered: {rows:?}");
    }
}
