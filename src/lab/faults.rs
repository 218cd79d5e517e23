//! Named faults the lab can inject, one or more per row of the failure
//! catalogue. Each names the step that must report it first and the finding
//! code that step must give: the lab's integration tests hold meshtrace to
//! both.

use crate::model::{Status, StepId};

/// Declares the fault ids and their names in one place, so a name cannot
/// drift from its variant.
macro_rules! fault_ids {
    ($($variant:ident = $name:literal,)+) => {
        /// A lab fault. Its kebab-case name is what `--fault` takes and what
        /// `--list-faults` prints.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FaultId {
            $($variant,)+
        }

        impl FaultId {
            /// Every fault, in catalogue order.
            pub const ALL: &'static [FaultId] = &[$(FaultId::$variant,)+];

            pub const fn name(self) -> &'static str {
                match self {
                    $(FaultId::$variant => $name,)+
                }
            }
        }
    };
}

fault_ids! {
    NoRemoteSecret = "no-remote-secret",
    SecretUnlabelled = "secret-unlabelled",
    SecretWrongNamespace = "secret-wrong-namespace",
    ClusterIdMismatch = "cluster-id-mismatch",
    ClusterIdIsPrimary = "cluster-id-is-primary",
    KubeconfigEmpty = "kubeconfig-empty",
    KubeconfigNotYaml = "kubeconfig-not-yaml",
    KubeconfigNoCurrentContext = "kubeconfig-no-current-context",
    KubeconfigExec = "kubeconfig-exec",
    KubeconfigTokenFile = "kubeconfig-token-file",
    SecretPointsAtPrimary = "secret-points-at-primary",
    ApiServerUnreachable = "api-server-unreachable",
    WrongCaData = "wrong-ca-data",
    ReaderTokenExpired = "reader-token-expired",
    ReaderSaDeleted = "reader-sa-deleted",
    ReaderTokenOtherCluster = "reader-token-other-cluster",
    ReaderTokenExpiring = "reader-token-expiring",
    NoTokenreviewRbac = "no-tokenreview-rbac",
    IstiodServiceMissing = "istiod-service-missing",
    IstiodServiceSelector = "istiod-service-selector",
    IstiodNoEndpoints = "istiod-no-endpoints",
    IstiodUnreachable = "istiod-unreachable",
    ExposureNoWebhookPort = "exposure-no-webhook-port",
    ExposureAddressMismatch = "exposure-address-mismatch",
    ExposureGatewayMissing = "exposure-gateway-missing",
    ExposureVirtualserviceMissing = "exposure-virtualservice-missing",
    ExposureLbPending = "exposure-lb-pending",
    GatewayNoClusterId = "gateway-no-cluster-id",
    GatewayAudience = "gateway-audience",
    GatewayNoProjectedToken = "gateway-no-projected-token",
    GatewaySaDeleted = "gateway-sa-deleted",
    RootConfigmapMissing = "root-configmap-missing",
    StaleRoot = "stale-root",
    PartialCacerts = "partial-cacerts",
    RootExpiring = "root-expiring",
    IstiodCertWrongSan = "istiod-cert-wrong-san",
    IstiodTokenAudiences = "istiod-token-audiences",
    IstiodStaleClusters = "istiod-stale-clusters",
    ChainSingleElement = "chain-single-element",
    ChainWrongTrustDomain = "chain-wrong-trust-domain",
    ChainClockSkew = "chain-clock-skew",
    NetworkMismatch = "network-mismatch",
    XdsDiscoveryAddressMissing = "xds-discovery-address-missing",
    XdsNodeNamespace = "xds-node-namespace",
    XdsRootCaMismatch = "xds-root-ca-mismatch",
    XdsNotReady = "xds-not-ready",
    WebhookMissing = "webhook-missing",
    WebhookCaBundleMismatch = "webhook-ca-bundle-mismatch",
    WebhookWrongService = "webhook-wrong-service",
    WebhookPortClosed = "webhook-port-closed",
}

impl clap::ValueEnum for FaultId {
    fn value_variants<'a>() -> &'a [Self] {
        FaultId::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(get(*self).summary))
    }
}

impl std::fmt::Display for FaultId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FaultId {
    type Err = String;
    /// The error is the one `--fault` prints for a name the lab does not know.
    fn from_str(s: &str) -> Result<FaultId, String> {
        <FaultId as clap::ValueEnum>::from_str(s, false).map_err(|_| {
            format!(
                "unknown fault {s:?}; `meshtrace lab --list-faults` lists them ({} in all)",
                FaultId::ALL.len()
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub id: FaultId,
    /// `id.name()`, kept as a field for display.
    pub name: &'static str,
    /// Row of docs/faults.md / the failure catalogue.
    pub catalog: u8,
    pub summary: &'static str,
    /// The first step that must not pass.
    pub step: StepId,
    /// Fail for a breakage, Warn for something that still works today.
    pub status: Status,
    /// The finding code that step must report (`<step>/<cause>`).
    pub code: &'static str,
    /// Later steps the same breakage fails too, each on its own (not
    /// blocked): a wrong address breaks the exposure and the dial to istiod.
    pub also_fails: &'static [StepId],
}

const fn f(
    id: FaultId,
    catalog: u8,
    step: StepId,
    code: &'static str,
    summary: &'static str,
) -> Fault {
    Fault {
        id,
        name: id.name(),
        catalog,
        summary,
        step,
        status: Status::Fail,
        code,
        also_fails: &[],
    }
}

impl Fault {
    /// The fault, with `steps` failing on their own too.
    const fn and_fails(self, steps: &'static [StepId]) -> Fault {
        Fault {
            also_fails: steps,
            ..self
        }
    }
}
const fn w(
    id: FaultId,
    catalog: u8,
    step: StepId,
    code: &'static str,
    summary: &'static str,
) -> Fault {
    Fault {
        status: Status::Warn,
        ..f(id, catalog, step, code, summary)
    }
}

use FaultId::*;
use StepId::*;

/// Every fault, in the order of [`FaultId::ALL`].
pub const FAULTS: &[Fault] = &[
    f(
        NoRemoteSecret,
        1,
        RemoteSecret,
        "remote-secret/none-registered",
        "the primary has no remote secret at all",
    ),
    f(
        SecretUnlabelled,
        1,
        RemoteSecret,
        "remote-secret/not-labelled",
        "the remote secret lacks the istio/multiCluster=true label",
    ),
    f(
        SecretWrongNamespace,
        1,
        RemoteSecret,
        "remote-secret/wrong-namespace",
        "the remote secret is in namespace default, not istio-system",
    ),
    f(
        ClusterIdMismatch,
        2,
        RemoteSecret,
        "remote-secret/no-key-for-cluster-id",
        "the secret's data key is remote-1, the gateway says remote",
    ),
    f(
        ClusterIdIsPrimary,
        3,
        RemoteSecret,
        "remote-secret/cluster-id-is-primary",
        "the remote is keyed, and calls itself, by the primary's cluster ID",
    ),
    f(
        KubeconfigEmpty,
        4,
        RemoteKubeconfig,
        "remote-kubeconfig/empty",
        "the remote secret's kubeconfig is empty",
    ),
    f(
        KubeconfigNotYaml,
        4,
        RemoteKubeconfig,
        "remote-kubeconfig/unparsable",
        "the remote secret's kubeconfig is not YAML",
    ),
    f(
        KubeconfigNoCurrentContext,
        4,
        RemoteKubeconfig,
        "remote-kubeconfig/invalid",
        "the kubeconfig has no current-context",
    ),
    f(
        KubeconfigExec,
        5,
        RemoteKubeconfig,
        "remote-kubeconfig/exec-not-allowed",
        "the kubeconfig authenticates with an exec plugin",
    ),
    f(
        KubeconfigTokenFile,
        5,
        RemoteKubeconfig,
        "remote-kubeconfig/file-not-allowed",
        "the kubeconfig reads its token from a file path",
    ),
    f(
        SecretPointsAtPrimary,
        6,
        RemoteKubeconfig,
        "remote-kubeconfig/server-is-primary",
        "the kubeconfig's server is the primary's API server",
    ),
    f(
        ApiServerUnreachable,
        6,
        RemoteApiTls,
        "remote-api-tls/unreachable",
        "the kubeconfig's server is a closed port",
    ),
    f(
        WrongCaData,
        7,
        RemoteApiTls,
        "remote-api-tls/ca-mismatch",
        "certificate-authority-data is some other CA",
    ),
    f(
        ReaderTokenExpired,
        8,
        RemoteIdentity,
        "remote-identity/token-expired",
        "the reader token in the remote secret has expired",
    ),
    f(
        ReaderSaDeleted,
        8,
        RemoteIdentity,
        "remote-identity/service-account-deleted",
        "istio-reader-service-account was deleted in the remote",
    ),
    f(
        ReaderTokenOtherCluster,
        8,
        RemoteIdentity,
        "remote-identity/token-from-other-cluster",
        "the reader token was issued by the primary's key",
    ),
    w(
        ReaderTokenExpiring,
        19,
        RemoteIdentity,
        "remote-identity/token-expiring",
        "the reader token expires in 2 days",
    ),
    f(
        NoTokenreviewRbac,
        9,
        RemoteRbac,
        "remote-rbac/no-tokenreview-create",
        "the reader ClusterRole lacks create tokenreviews",
    ),
    f(
        IstiodServiceMissing,
        10,
        RemoteIstiodEndpoint,
        "remote-istiod-endpoint/no-service",
        "the remote has no istiod Service",
    ),
    w(
        IstiodServiceSelector,
        10,
        RemoteIstiodEndpoint,
        "remote-istiod-endpoint/has-selector",
        "the remote istiod Service has a selector; its hand-made EndpointSlice still routes to the primary",
    ),
    f(
        IstiodNoEndpoints,
        10,
        RemoteIstiodEndpoint,
        "remote-istiod-endpoint/no-endpoints",
        "the remote istiod Service has no EndpointSlice",
    ),
    f(
        IstiodUnreachable,
        15,
        IstiodTls,
        "istiod-tls/unreachable",
        "the EndpointSlice points at a closed port",
    ),
    f(
        ExposureNoWebhookPort,
        10,
        IstiodExposure,
        "istiod-exposure/missing-port",
        "the primary's east-west gateway Service has no port 15017",
    ),
    f(
        ExposureAddressMismatch,
        10,
        IstiodExposure,
        "istiod-exposure/address-mismatch",
        "the remote's istiod EndpointSlice holds a port the primary does not expose istiod on",
    )
    .and_fails(&[IstiodTls]),
    f(
        ExposureGatewayMissing,
        10,
        IstiodExposure,
        "istiod-exposure/gateway-missing",
        "no Istio Gateway passes 15012/15017 through on the east-west gateway",
    ),
    f(
        ExposureVirtualserviceMissing,
        10,
        IstiodExposure,
        "istiod-exposure/virtualservice-missing",
        "no VirtualService routes the east-west gateway's 15012/15017 to istiod",
    ),
    w(
        ExposureLbPending,
        10,
        IstiodExposure,
        "istiod-exposure/lb-pending",
        "the east-west gateway's LoadBalancer has no address (the remote still reaches istiod another way)",
    ),
    f(
        GatewayNoClusterId,
        2,
        GatewayPod,
        "gateway-pod/no-cluster-id",
        "the gateway pod has no ISTIO_META_CLUSTER_ID",
    ),
    f(
        GatewayAudience,
        11,
        GatewayToken,
        "gateway-token/wrong-audience",
        "the gateway's istio-token volume has audience kubernetes.default.svc",
    ),
    f(
        GatewayNoProjectedToken,
        11,
        GatewayToken,
        "gateway-token/no-projected-token",
        "the gateway has no projected istio-token volume",
    ),
    f(
        GatewaySaDeleted,
        12,
        GatewayToken,
        "gateway-token/service-account-missing",
        "the gateway's service account was deleted",
    ),
    f(
        RootConfigmapMissing,
        13,
        RootOfTrust,
        "root-of-trust/no-root-configmap",
        "the remote has no istio-ca-root-cert",
    ),
    f(
        StaleRoot,
        13,
        RootOfTrust,
        "root-of-trust/root-mismatch",
        "the remote's istio-ca-root-cert holds an old root",
    ),
    f(
        PartialCacerts,
        18,
        RootOfTrust,
        "root-of-trust/incomplete-cacerts",
        "the primary's cacerts lacks cert-chain.pem",
    ),
    w(
        RootExpiring,
        18,
        RootOfTrust,
        "root-of-trust/root-expiring",
        "the primary's root expires in 3 days",
    ),
    f(
        IstiodCertWrongSan,
        14,
        IstiodTls,
        "istiod-tls/name-mismatch",
        "istiod's serving certificate lacks istiod.istio-system.svc",
    ),
    f(
        IstiodTokenAudiences,
        16,
        GatewayToken,
        "gateway-token/audience-not-accepted",
        "istiod checks tokens for audience other-ca (TOKEN_AUDIENCES)",
    ),
    f(
        IstiodStaleClusters,
        16,
        Csr,
        "csr/istiod-has-not-loaded-cluster",
        "istiod's remote-secret controller is stuck: it never loaded the valid remote secret",
    ),
    f(
        ChainSingleElement,
        17,
        IssuedChain,
        "issued-chain/incomplete",
        "istiod returns only the leaf",
    ),
    f(
        ChainWrongTrustDomain,
        17,
        IssuedChain,
        "issued-chain/wrong-trust-domain",
        "istiod signs for trust domain other.local",
    ),
    f(
        ChainClockSkew,
        17,
        IssuedChain,
        "issued-chain/not-yet-valid",
        "istiod's clock is an hour ahead: the leaf is not yet valid",
    ),
    w(
        NetworkMismatch,
        20,
        NetworkLabels,
        "network-labels/mismatch",
        "the gateway Service says network1, the namespace network2",
    ),
    f(
        XdsDiscoveryAddressMissing,
        21,
        Xds,
        "xds/discovery-address-missing",
        "the gateway's discoveryAddress names istiod-remote, a Service the remote does not have",
    ),
    f(
        XdsNodeNamespace,
        21,
        Xds,
        "xds/permission-denied",
        "the gateway's POD_NAMESPACE is a literal istio-gateways: its node claims another namespace",
    ),
    f(
        XdsRootCaMismatch,
        21,
        Xds,
        "xds/root-ca-mismatch",
        "the gateway's XDS_ROOT_CA=SYSTEM, while istiod serves the mesh CA's certificate",
    ),
    f(
        XdsNotReady,
        21,
        Xds,
        "xds/not-ready",
        "istiod refuses xDS as not ready (its caches not synced)",
    ),
    f(
        WebhookMissing,
        22,
        InjectionWebhook,
        "injection-webhook/missing",
        "the remote has no istio-sidecar-injector MutatingWebhookConfiguration",
    ),
    f(
        WebhookCaBundleMismatch,
        22,
        InjectionWebhook,
        "injection-webhook/ca-bundle-mismatch",
        "the injector webhook's caBundle is another CA's root",
    ),
    f(
        WebhookWrongService,
        22,
        InjectionWebhook,
        "injection-webhook/wrong-service",
        "the injector webhook calls Service istiod-canary, a revision the remote does not have",
    ),
    f(
        WebhookPortClosed,
        22,
        InjectionWebhook,
        "injection-webhook/unreachable",
        "the remote's istiod EndpointSlice sends 15017 to a closed port",
    ),
];

/// The fault of an id.
/// Faults whose fix is not a change to either cluster, and why
/// (docs/faults.md lists the same; `tests/integration/fixes.rs` proves a
/// printed fix for every other fault).
pub const NO_COMMAND_FIX: &[(FaultId, &str)] = &[
    (
        IstiodUnreachable,
        "a network path: the EndpointSlice must hold the primary's exposed 15012 address, which only the operator knows (in the lab a closed port stands in for a blocked path; the fix tests show the lab accepts a corrected slice)",
    ),
    (
        ExposureLbPending,
        "a load-balancer controller (the cloud's, MetalLB) assigns the east-west gateway's address; the lab has none, and the remote still reaches istiod, so meshtrace warns and names where to look",
    ),
    (
        RootExpiring,
        "a root rotation: new CA material made outside the cluster and trusted next to the old root until every workload holds it, not a command to paste",
    ),
    (
        ChainSingleElement,
        "a defect of the CA itself: a real istiod always returns the whole chain, so no cluster object causes or fixes it",
    ),
    (
        ChainClockSkew,
        "istiod's clock: the fix is time synchronisation on istiod's node, not a Kubernetes object",
    ),
    (
        XdsNotReady,
        "istiod turns ready by itself once its caches have synced; no object makes it ready (its log says what it waits for)",
    ),
    (
        WebhookPortClosed,
        "a network path: the load balancer (or firewall) in front of istiod must pass 15017, which no object of either cluster says (in the lab a closed port in the slice stands in for it; the fix tests show the lab accepts a corrected slice)",
    ),
];

/// Faults whose fix meshtrace rightly does not print in the lab, and why:
/// the lab's istiod listens on this machine's loopback, and Kubernetes
/// refuses a loopback address in an EndpointSlice, so meshtrace names no
/// address (the test bed's real API server showed the printed slice was
/// refused). EXPECTED still proves the lab side of these fixes.
pub const NOT_PRINTED_IN_LAB: &[(FaultId, &str)] = &[
    (
        IstiodNoEndpoints,
        "the only address of the lab's istiod is loopback, which an EndpointSlice may not hold",
    ),
    (
        IstiodServiceMissing,
        "the Service is printed, but the only address of the lab's istiod is loopback, which an EndpointSlice may not hold",
    ),
];

/// Why the TUI's `f` cannot fix `id` in the lab (None: meshtrace's printed
/// fix does), short, for the fault picker.
pub fn no_fix_from_tui(id: FaultId) -> Option<&'static str> {
    if NO_COMMAND_FIX.iter().any(|(f, _)| *f == id) {
        return Some("no command fixes it (see docs/faults.md)");
    }
    if NOT_PRINTED_IN_LAB.iter().any(|(f, _)| *f == id) {
        return Some("its fix needs an address the lab cannot have");
    }
    None
}

pub fn get(id: FaultId) -> &'static Fault {
    // FAULTS follows FaultId::ALL (a test holds it to that).
    &FAULTS[id as usize]
}

/// A fault by its name, for text input (`--fault`, test tables); code that
/// names a fault uses [`get`] with a [`FaultId`].
pub fn find(name: &str) -> Option<&'static Fault> {
    name.parse().ok().map(get)
}

pub fn names() -> Vec<&'static str> {
    FaultId::ALL.iter().map(|id| id.name()).collect()
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

    #[test]
    fn table_follows_the_ids_and_codes_name_their_step() {
        assert_eq!(FAULTS.len(), FaultId::ALL.len());
        for (i, id) in FaultId::ALL.iter().enumerate() {
            let f = &FAULTS[i];
            assert_eq!(f.id, *id, "FAULTS[{i}]");
            assert_eq!(get(*id).name, id.name());
            assert_eq!(find(id.name()).map(|f| f.id), Some(*id));
            let (step, cause) = f.code.split_once('/').unwrap_or_default();
            assert_eq!(step, f.step.as_str(), "{}: {}", f.name, f.code);
            assert!(
                !cause.is_empty()
                    && cause
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}: {}",
                f.name,
                f.code
            );
        }
        assert_eq!(find("no-such-fault"), None);
        assert_eq!(
            "no-such-fault".parse::<FaultId>().unwrap_err(),
            format!(
                "unknown fault \"no-such-fault\"; `meshtrace lab --list-faults` lists them ({} in all)",
                FAULTS.len()
            )
        );
    }

    #[test]
    fn clap_knows_every_name() {
        use clap::ValueEnum;
        for id in FaultId::ALL {
            assert_eq!(FaultId::from_str(id.name(), false), Ok(*id));
        }
    }
}
