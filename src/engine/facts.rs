//! Facts that steps hand to later steps. Secrets in here (tokens) are kept in
//! [`Sensitive`], whose Debug never shows them, and never reach evidence.

use crate::inspect::kubeconfig::RemoteKubeconfig;

/// A secret value: usable by the engine, invisible to Debug and output.
#[derive(Clone, Default)]
pub struct Sensitive(pub String);

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Default)]
pub struct GatewayFacts {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: Option<String>,
    pub service_account: String,
    pub cluster_id: Option<String>,
    pub ca_addr: Option<String>,
    pub network: Option<String>,
    pub trust_domain: Option<String>,
    pub istiod_san: Option<String>,
    /// The projected `istio-token` volume: (audience, expirationSeconds).
    pub projected_token: Option<(Option<String>, Option<i64>)>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The container the settings were read from (`istio-proxy`, else the first).
    pub container: String,
    /// The volumes istio's injector added (`sidecar.istio.io/status`): a
    /// Deployment patch cannot change those, the injector's values can.
    pub injected_volumes: Vec<String>,
    /// The gateway's Istio revision and the rule that gave it: label
    /// `istio.io/rev`, else the revision in `sidecar.istio.io/status`.
    pub revision: Option<(String, String)>,
    /// The agent's proxy config overrides: env `PROXY_CONFIG` and annotation
    /// `proxy.istio.io/config` (YAML or JSON), as the pod sets them.
    pub proxy_config_env: Option<String>,
    pub proxy_config_annotation: Option<String>,
    /// `CA_ROOT_CA` / `XDS_ROOT_CA` of the gateway's container.
    pub ca_root_ca: Option<String>,
    /// The Deployment that owns the pod, for the fixes that change it.
    pub deployment: Option<k8s_openapi::api::apps::v1::Deployment>,
    /// The container's env as Kubernetes gives it to the agent: the last
    /// entry of a name, `value` or a `fieldRef` resolved from the pod (other
    /// references left out). Never evidence: only the names the agent reads.
    pub agent_env: std::collections::BTreeMap<String, String>,
    /// The pod's IP (status.podIP), for the node ID.
    pub pod_ip: Option<String>,
    /// `sidecar` or `router`: the agent's `proxy <type>` argument.
    pub proxy_type: String,
    /// The container image (its tag is the agent's ISTIO_VERSION).
    pub image: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RemoteSecretFacts {
    pub namespace: String,
    pub name: String,
    pub key: String,
    pub kubeconfig: Vec<u8>,
    /// Every data key of the Secret (the fix differs when it holds others).
    pub keys: Vec<String>,
    /// istiod's `PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS`, split on
    /// commas: the kubeconfig options its sanitizer lets through.
    pub istiod_insecure_options: Vec<String>,
}

#[derive(Default)]
pub struct Facts {
    pub gateway: Option<GatewayFacts>,
    /// The cluster ID the gateway sends, and where it came from.
    pub cluster_id: Option<(String, &'static str)>,
    pub remote_secret: Option<RemoteSecretFacts>,
    pub kubeconfig: Option<RemoteKubeconfig>,
    /// A client that acts as istiod does in the remote: the secret's
    /// credentials. remote-kubeconfig starts building it; remote-api-tls
    /// judges whether it could be built.
    pub istiod_view: Option<PendingClient>,
    /// istiod's 15012 address as the gateway would dial it, and its source.
    pub istiod_addr: Option<(String, String)>,
    pub gateway_token: Option<Sensitive>,
    /// What istiod-tls verified istiod with: (server name, roots PEM, which
    /// roots): the CSR goes over the same TLS.
    pub istiod_tls: Option<(String, String, String)>,
    /// What the gateway trusts: `istio-ca-root-cert` in the remote (PEM).
    pub remote_root_pem: Option<String>,
    /// The primary CA's root (PEM), when readable.
    pub primary_root_pem: Option<String>,
    /// Trust domain the primary's mesh config sets (default cluster.local).
    pub trust_domain: Option<String>,
    pub chain: Option<Vec<String>>,
    /// The private key the CSR was made with, PEM, for the issued chain:
    /// the xDS step presents both where the agent presents a client
    /// certificate. Never printed, logged, serialized or in evidence.
    pub issued_key: Option<secrecy::SecretString>,
    /// istiod's Deployment in the primary, as csr found it (fixes restart it).
    pub istiod_deployment: Option<String>,
    /// Who the remote secret's credential is in the remote (remote-identity's
    /// SelfSubjectReview), for remote-rbac's fix.
    pub remote_user: Option<String>,
    /// istiod's settings as control-plane read them (the revision picked).
    pub istiod_settings: Option<std::sync::Arc<super::steps::IstiodSettings>>,
    /// Where the remote sends the gateway's dial to istiod (remote-istiod-endpoint).
    pub remote_istiod: Option<RemoteIstiod>,
    /// What istiod-exposure found exposing istiod, in one sentence, and
    /// whether it passed: istiod-tls names it when it cannot connect.
    pub exposure: Option<(crate::model::Status, String)>,
}

/// A kube client being built on its own task, awaited by every step that
/// uses it: built once, while the steps before them still run.
#[derive(Clone)]
pub struct PendingClient(
    futures::future::Shared<futures::future::BoxFuture<'static, Result<kube::Client, String>>>,
);

impl PendingClient {
    pub fn spawn(
        build: impl std::future::Future<Output = Result<kube::Client, String>> + Send + 'static,
    ) -> Self {
        use futures::FutureExt;
        let task = tokio::spawn(build);
        PendingClient(
            async move {
                task.await
                    .unwrap_or_else(|e| Err(format!("building the client failed: {e}")))
            }
            .boxed()
            .shared(),
        )
    }
    /// The client, or why it could not be built.
    pub async fn get(&self) -> Result<kube::Client, String> {
        self.0.clone().await
    }
}

/// The addresses the remote resolves the gateway's istiod address to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RemoteIstiod {
    /// The remote Service the address names (name, namespace); None when the
    /// gateway dials an IP or a name outside the cluster's DNS.
    pub service: Option<(String, String)>,
    /// EndpointSlice, Endpoints, ExternalName, or the setting the gateway dials.
    pub from: String,
    pub targets: Vec<RemoteTarget>,
}

/// One set of addresses with its ports: an EndpointSlice, an Endpoints
/// subset, an ExternalName host or the gateway's own address.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RemoteTarget {
    /// IPs, or one hostname.
    pub hosts: Vec<String>,
    /// The port of 15012 (`tcp-istiod`).
    pub port: i32,
    /// The port of 15017 (`tcp-webhook`), when the remote names one.
    pub webhook_port: Option<i32>,
    /// The EndpointSlice it is, with the index of its tcp-istiod port and of
    /// its tcp-webhook port: what a fix patches.
    pub slice: Option<(String, usize, Option<usize>)>,
}
