//! The one true sequence: the messages of the primary-remote flow in the
//! order they really happen, grouped in phases, replies included, with the
//! steps that verify each one. The TUI's diagram, `-o mermaid`,
//! `-o markdown` and the diagram in `docs/flow.md` are all drawn from
//! [`SEQUENCE`]; [`STEPS`](crate::model::STEPS) stays the order in which
//! meshtrace *checks* (its dependencies), which is not the order of the flow:
//! the gateway sends its CSR before istiod reviews its token.
//!
//! What meshtrace itself reads to judge a hop (pods, ConfigMaps, Services)
//! is no message of the flow: it is an [`Kind::Observation`], drawn apart.
//!
//! Each message also carries what teaching mode says about it ([`Teach`]):
//! why it matters, what breaks it, and the log line istiod or the gateway's
//! agent writes then, copied from github.com/istio/istio (commit 86c9f01f,
//! the file named in [`Log::source`]).

use crate::model::{Actor, Status, StepId, TraceState};

/// What an item of the sequence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request from one actor to another (or to itself: work inside it).
    Call,
    /// The answer to the call before it.
    Reply,
    /// meshtrace reading an actor's objects to judge the flow; not a message
    /// any component of the mesh sends. `from` and `to` are the actor read.
    Observation,
}

/// One item of the flow.
#[derive(Debug, Clone, Copy)]
pub struct Message {
    pub from: Actor,
    pub to: Actor,
    pub kind: Kind,
    pub text: &'static str,
    /// The ids of the steps that verify this message. Ids, not [`StepId`]s,
    /// so that a message a step is still being written for can be listed:
    /// see [`UNWIRED`].
    pub steps: &'static [&'static str],
    /// What teaching mode says about this hop.
    pub teach: Teach,
}

/// Teaching mode's content for one hop: why it matters, what breaks it,
/// the line istiod or the gateway's agent logs then, and which parts of the
/// trace's evidence are the hop's real object.
#[derive(Debug, Clone, Copy)]
pub struct Teach {
    pub why: &'static str,
    pub breaks: &'static str,
    pub log: Log,
    /// `(step, evidence key)`: the object as the engine recorded it.
    pub object: &'static [(&'static str, &'static str)],
}

/// A log line as Istio's source writes it (Go format verbs kept), who logs
/// it and the file of github.com/istio/istio it comes from.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    pub who: &'static str,
    pub line: &'static str,
    pub source: &'static str,
}

impl Teach {
    const NONE: Teach = Teach {
        why: "",
        breaks: "",
        log: Log {
            who: "",
            line: "",
            source: "",
        },
        object: &[],
    };
}

/// A phase of the flow: a heading and its messages.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub title: &'static str,
    pub messages: &'static [Message],
}

/// Step ids [`SEQUENCE`] names that are not [`StepId`]s yet. A test fails
/// once one of them parses, so that wiring the step removes it from here.
pub const UNWIRED: &[&str] = &[];

const fn call(
    from: Actor,
    to: Actor,
    text: &'static str,
    steps: &'static [&'static str],
) -> Message {
    Message {
        from,
        to,
        kind: Kind::Call,
        text,
        steps,
        teach: Teach::NONE,
    }
}

const fn reply(
    from: Actor,
    to: Actor,
    text: &'static str,
    steps: &'static [&'static str],
) -> Message {
    Message {
        from,
        to,
        kind: Kind::Reply,
        text,
        steps,
        teach: Teach::NONE,
    }
}

const fn observe(of: Actor, text: &'static str, steps: &'static [&'static str]) -> Message {
    Message {
        from: of,
        to: of,
        kind: Kind::Observation,
        text,
        steps,
        teach: Teach::NONE,
    }
}

impl Message {
    const fn teach(
        self,
        why: &'static str,
        breaks: &'static str,
        log: (&'static str, &'static str, &'static str),
        object: &'static [(&'static str, &'static str)],
    ) -> Message {
        Message {
            teach: Teach {
                why,
                breaks,
                log: Log {
                    who: log.0,
                    line: log.1,
                    source: log.2,
                },
                object,
            },
            ..self
        }
    }
}

use Actor::{Gateway, Istiod, PrimaryApi, RemoteApi};

/// The flow, in the order it happens.
pub const SEQUENCE: &[Phase] = &[
    Phase {
        title: "A. istiod and the remote API server: the remote secret, the sync",
        messages: &[
            observe(
                PrimaryApi,
                "istiod's Deployment (istio.io/rev, env, args) and its mesh config",
                &["control-plane"],
            )
            .teach(
                "Every later judgement uses istiod's own settings: which revision serves the gateway, its CLUSTER_ID, TOKEN_AUDIENCES, trust domain and CA. Reading them as Kubernetes gives them to the process is what makes the rest istiod's view, not a guess.",
                "A second revision, a CLUSTER_ID equal to the remote's, or TOKEN_AUDIENCES without istio-ca changes what every later hop accepts.",
                ("istiod", "Successfully created in cluster kubeclient at %s", "pkg/kube/multicluster/secretcontroller.go"),
                &[("control-plane", "istiod"), ("control-plane", "gateway_revision")],
            ),
            call(
                Istiod,
                PrimaryApi,
                "watch Secrets istio/multiCluster=true",
                &["remote-secret"],
            )
            .teach(
                "istiod learns about remote clusters only from Secrets labelled istio/multiCluster=true in its own namespace: no label, no remote cluster.",
                "An unlabelled secret, one in another namespace, or none at all: istiod never dials the remote and its gateway's CSR is refused later for an unknown cluster.",
                ("istiod", "processing remote config event for %s", "pkg/kube/multicluster/secretcontroller.go"),
                &[("remote-secret", "remote_secrets"), ("remote-secret", "primary_cluster_id")],
            ),
            reply(
                PrimaryApi,
                Istiod,
                "remote secret: data key = cluster ID, value = kubeconfig",
                &["remote-secret"],
            )
            .teach(
                "The data key is the cluster ID istiod files the remote under; the gateway's ISTIO_META_CLUSTER_ID must match it, or istiod will not know which cluster's API server to ask about its token.",
                "A key that differs from the gateway's cluster ID, or one equal to the primary's own ID.",
                ("istiod", "client claims to be in cluster %q, but we only know about local cluster %q and remote clusters %v", "security/pkg/server/ca/authenticate/kubeauth/kube_jwt.go"),
                &[("remote-secret", "secret"), ("remote-secret", "key"), ("remote-secret", "cluster_id"), ("remote-secret", "kubeconfig_bytes")],
            ),
            call(
                Istiod,
                Istiod,
                "load the kubeconfig (no exec, no file paths)",
                &["remote-kubeconfig"],
            )
            .teach(
                "istiod builds its client for the remote from this kubeconfig alone: one context, inline CA data and a bearer token; it refuses exec plugins and file paths, which would run or read things on istiod's pod.",
                "An empty or invalid kubeconfig, no current-context, an exec plugin or a tokenFile.",
                ("istiod", "%s cluster: create remote cluster failed: %v", "pkg/kube/multicluster/secretcontroller.go"),
                &[("remote-kubeconfig", "server"), ("remote-kubeconfig", "context"), ("remote-kubeconfig", "credential")],
            ),
            call(
                Istiod,
                RemoteApi,
                "TLS to server, verified with certificate-authority-data",
                &["remote-api-tls"],
            )
            .teach(
                "istiod trusts the remote API server only through the certificate-authority-data of the kubeconfig: the wrong CA, or a server that is not the remote, ends the flow here.",
                "A wrong certificate-authority-data, an unreachable server, or a server URL that is the primary's.",
                ("istiod", "%s cluster: create remote cluster failed: %v", "pkg/kube/multicluster/secretcontroller.go"),
                &[("remote-api-tls", "server"), ("remote-api-tls", "protocol")],
            ),
            reply(
                RemoteApi,
                Istiod,
                "serving certificate",
                &["remote-api-tls"],
            )
            .teach(
                "The remote API server's certificate must chain to the kubeconfig's CA and name the server's host.",
                "A certificate from another CA (x509: certificate signed by unknown authority).",
                ("istiod", "%s cluster: create remote cluster failed: %v", "pkg/kube/multicluster/secretcontroller.go"),
                &[("remote-api-tls", "presented_certificate"), ("remote-kubeconfig", "certificate_authority")],
            ),
            call(
                Istiod,
                RemoteApi,
                "list/watch as the secret's identity (istio-reader-service-account)",
                &["remote-identity", "remote-rbac"],
            )
            .teach(
                "Everything istiod does in the remote it does as the secret's service account (istio-reader-service-account): its token must be valid there and its ClusterRole must allow the reads and create tokenreviews.",
                "An expired token, a deleted reader service account, a token of another cluster, or a ClusterRole without tokenreviews create.",
                ("istiod", "%s cluster: create remote cluster failed: %v", "pkg/kube/multicluster/secretcontroller.go"),
                &[("remote-identity", "username"), ("remote-identity", "token_expires"), ("remote-rbac", "access")],
            ),
            reply(
                RemoteApi,
                Istiod,
                "pods, Services, EndpointSlices: the remote cluster synced",
                &["remote-identity"],
            )
            .teach(
                "Once synced, the remote's workloads are in istiod's registry: this is the moment `Number of remote clusters` goes up.",
                "A 401 or 403 on the lists: the remote never syncs and its endpoints are missing from every proxy's config.",
                ("istiod", "Number of remote clusters: %d", "pkg/kube/multicluster/secretcontroller.go"),
                &[("remote-identity", "token_subject"), ("remote-identity", "groups")],
            ),
            call(
                Istiod,
                RemoteApi,
                "write ConfigMap istio-ca-root-cert (EXTERNAL_ISTIOD)",
                &["root-of-trust"],
            )
            .teach(
                "With an external istiod the primary writes the mesh root into the remote's istio-system as ConfigMap istio-ca-root-cert: the gateway will trust istiod with it.",
                "A missing ConfigMap, or one holding an old root: the gateway cannot verify istiod.",
                ("agent", "failed to find root CA cert for XDS: %v", "pkg/istio-agent/xds_proxy.go"),
                &[("root-of-trust", "remote_istio_ca_root_cert")],
            ),
            observe(
                PrimaryApi,
                "the east-west gateway's Service on 15012/15017, Gateway PASSTHROUGH, VirtualService to istiod",
                &["istiod-exposure"],
            )
            .teach(
                "The remote reaches the primary's istiod through the east-west gateway: 15012 for the CSR and xDS, 15017 for injection, passed through unterminated to istiod.",
                "No 15017 port, an address the remote does not use, no Gateway or VirtualService, or a load balancer with no address.",
                ("agent", "failed to connect to upstream %s: %v", "pkg/istio-agent/xds_proxy.go"),
                &[("istiod-exposure", "exposures"), ("istiod-exposure", "ports")],
            ),
        ],
    },
    Phase {
        title: "B. the gateway starting: its token",
        messages: &[
            call(
                RemoteApi,
                Istiod,
                "AdmissionReview of the gateway pod (injection webhook, 15017)",
                &["injection-webhook"],
            )
            .teach(
                "The remote API server calls istiod's injector (15017, through the east-west gateway) for every new pod: that is how the gateway gets its istio-proxy and its token volume.",
                "No MutatingWebhookConfiguration, a caBundle of another CA, a Service that does not exist, or 15017 closed.",
                ("istiod", "failed to process pod: %v", "pkg/kube/inject/webhook.go"),
                &[("injection-webhook", "client_config"), ("injection-webhook", "resolved"), ("injection-webhook", "ca_bundle")],
            ),
            reply(
                Istiod,
                RemoteApi,
                "JSONPatch: istio-proxy container, istio-token volume",
                &["injection-webhook"],
            )
            .teach(
                "The answer is a JSONPatch: the proxy container, its env (CA_ADDR, ISTIO_META_CLUSTER_ID) and the projected istio-token volume.",
                "No patch: the pod starts without a proxy, or with the wrong revision's settings.",
                ("istiod", "failed to create patch: %v", "pkg/kube/inject/webhook.go"),
                &[("injection-webhook", "answer"), ("injection-webhook", "http_status")],
            ),
            observe(
                RemoteApi,
                "the gateway pod: ISTIO_META_CLUSTER_ID, CA_ADDR, istio-token volume",
                &["gateway-pod"],
            )
            .teach(
                "The gateway pod's env says which cluster it claims to be in and where istiod is; its projected istio-token volume says which audience its token has.",
                "No ISTIO_META_CLUSTER_ID, no projected token volume, or a token audience other than istio-ca.",
                ("agent", "failed to generate workload certificate: %v", "security/pkg/nodeagent/cache/secretcache.go"),
                &[("gateway-pod", "pod"), ("gateway-pod", "ISTIO_META_CLUSTER_ID"), ("gateway-pod", "CA_ADDR"), ("gateway-pod", "istio_token_volume")],
            ),
            call(
                Gateway,
                RemoteApi,
                "TokenRequest (kubelet, projected istio-token)",
                &["gateway-token"],
            )
            .teach(
                "The kubelet asks the remote API server for a token of the gateway's service account, bound to the pod, with the audience istio-ca: the credential of the CSR.",
                "A deleted service account, or no projected token: the agent has no credential to send.",
                ("agent", "failed to generate workload certificate: %v", "security/pkg/nodeagent/cache/secretcache.go"),
                &[("gateway-token", "service_account"), ("gateway-token", "audience"), ("gateway-token", "istiod_audiences")],
            ),
            reply(
                RemoteApi,
                Gateway,
                "service-account token, audience istio-ca, bound to the pod",
                &["gateway-token"],
            )
            .teach(
                "This token is all the gateway proves itself with: signed by the remote cluster's key, audience istio-ca, valid only while the pod lives. meshtrace shows its decoded claims, never its signature.",
                "An audience istiod does not accept (TOKEN_AUDIENCES), or a token bound to a pod that is gone.",
                ("istiod", "Failed to authenticate client from %s: %s", "pkg/security/authentication.go"),
                &[("gateway-token", "token")],
            ),
            observe(
                RemoteApi,
                "ConfigMap istio-ca-root-cert, compared with the primary's CA",
                &["root-of-trust"],
            )
            .teach(
                "The root the gateway trusts must be the root istiod's CA signs under; both clusters and the primary's cacerts must agree.",
                "A stale root after a rotation, a partial cacerts, or a root close to expiry.",
                ("agent", "failed to find root CA cert for XDS: %v", "pkg/istio-agent/xds_proxy.go"),
                &[("root-of-trust", "remote_istio_ca_root_cert"), ("root-of-trust", "primary_ca_root")],
            ),
            observe(
                RemoteApi,
                "Service istiod (CA_ADDR) without selector, its EndpointSlice",
                &["remote-istiod-endpoint"],
            )
            .teach(
                "CA_ADDR names istiod.istio-system.svc in the remote: a Service without selector whose EndpointSlice holds the primary's exposed address.",
                "No Service, a Service with a selector (Kubernetes empties its endpoints), no EndpointSlice, or an address that does not answer.",
                ("agent", "Failed to connect to endpoint %s: %v", "security/pkg/nodeagent/caclient/providers/citadel/client.go"),
                &[("remote-istiod-endpoint", "service"), ("remote-istiod-endpoint", "endpoint_addresses"), ("remote-istiod-endpoint", "gateway_dials")],
            ),
        ],
    },
    Phase {
        title: "C. the CSR",
        messages: &[
            call(
                Gateway,
                Istiod,
                "TLS to 15012, server name from CA_ADDR",
                &["istiod-tls"],
            )
            .teach(
                "The agent dials istiod with the server name from CA_ADDR and trusts only istio-ca-root-cert: no client certificate yet, it has none.",
                "An address that refuses, or a path that drops 15012.",
                ("agent", "Failed to connect to endpoint %s: %v", "security/pkg/nodeagent/caclient/providers/citadel/client.go"),
                &[("istiod-tls", "address"), ("istiod-tls", "server_name"), ("istiod-tls", "roots")],
            ),
            reply(
                Istiod,
                Gateway,
                "serving certificate, verified with istio-ca-root-cert",
                &["istiod-tls"],
            )
            .teach(
                "istiod's serving certificate must chain to the root in istio-ca-root-cert and carry the server name as a DNS SAN (ISTIOD_CUSTOM_HOST adds one).",
                "A certificate without the name the gateway dials, or signed by another root.",
                ("agent", "failed to sign CSR: %v", "security/pkg/nodeagent/caclient/providers/citadel/client.go"),
                &[("istiod-tls", "istiod_certificate")],
            ),
            call(
                Gateway,
                Istiod,
                "CreateCertificate(CSR), authorization: Bearer, clusterid",
                &["csr"],
            )
            .teach(
                "The CSR carries the gateway's SPIFFE ID; the call carries the token as authorization: Bearer and the cluster ID as clusterid: everything istiod decides with.",
                "A cluster ID istiod does not know, or a token it cannot review.",
                ("agent", "failed to sign CSR: %v", "security/pkg/nodeagent/caclient/providers/citadel/client.go"),
                &[("csr", "metadata"), ("csr", "csr_san"), ("csr", "requested_ttl_seconds"), ("csr", "key")],
            ),
            call(
                Istiod,
                RemoteApi,
                "TokenReview audiences=[istio-ca] as the remote secret's identity",
                &["token-review", "remote-rbac"],
            )
            .teach(
                "istiod cannot check a remote cluster's token itself: it asks that cluster's API server, with the remote secret's credentials, the reason the reader needs tokenreviews create.",
                "No tokenreviews permission, or audiences that do not match the token's.",
                ("istiod", "failed to validate the JWT from cluster %q: %v", "security/pkg/server/ca/authenticate/kubeauth/kube_jwt.go"),
                &[("token-review", "audiences"), ("token-review", "as"), ("token-review", "token")],
            ),
            reply(
                RemoteApi,
                Istiod,
                "authenticated: system:serviceaccount:ns:sa",
                &["token-review"],
            )
            .teach(
                "The answer names the service account: istiod will only sign for spiffe://<trust domain>/ns/<ns>/sa/<sa> of exactly that account.",
                "authenticated: false (the token is not authenticated), or a user that is not a service account.",
                ("istiod", "the token is not authenticated", "security/pkg/k8s/tokenreview/k8sauthn.go"),
                &[("token-review", "authenticated"), ("token-review", "username"), ("token-review", "identity")],
            ),
            reply(
                Istiod,
                Gateway,
                "cert_chain [leaf, intermediates, root]",
                &["csr", "issued-chain"],
            )
            .teach(
                "The chain is the gateway's identity from now on: a leaf with its SPIFFE ID, the intermediates and the root, verifiable with istio-ca-root-cert.",
                "A chain without its root, a SPIFFE ID of another trust domain, or a leaf not yet valid (clock skew).",
                ("istiod", "CSR signing error: %v", "security/pkg/server/ca/server.go"),
                &[("issued-chain", "chain"), ("issued-chain", "spiffe_id"), ("issued-chain", "leaf_expires")],
            ),
        ],
    },
    Phase {
        title: "D. the first config (xDS)",
        messages: &[
            call(
                Gateway,
                Istiod,
                "ADS to discoveryAddress (node, Bearer, ClusterID), asking for CDS",
                &["xds"],
            )
            .teach(
                "With its certificate the agent opens ADS to discoveryAddress; istiod authenticates the stream and checks that the identity's namespace is the node's.",
                "A discoveryAddress the remote cannot resolve, XDS_ROOT_CA that does not hold istiod's root, or a node claiming another namespace.",
                ("istiod", "Unauthorized XDS: %v with identity %v: %v", "pilot/pkg/xds/auth.go"),
                &[("xds", "discovery_address"), ("xds", "node_metadata"), ("xds", "metadata")],
            ),
            reply(
                Istiod,
                Gateway,
                "Clusters (identity namespace = node namespace)",
                &["xds"],
            )
            .teach(
                "The first Clusters are the proof the gateway is in the mesh: from here Envoy serves traffic with the issued certificate.",
                "istiod refusing (PermissionDenied) or not ready yet.",
                ("agent", "upstream terminated with unexpected error %v", "pkg/istio-agent/xds_proxy.go"),
                &[("xds", "type_url"), ("xds", "identity")],
            ),
            observe(
                RemoteApi,
                "topology.istio.io/network on namespace, gateway Service and env",
                &["network-labels"],
            )
            .teach(
                "The network label tells istiod which network the remote's endpoints are on, so cross-network traffic goes through the east-west gateway.",
                "Labels that disagree between namespace, gateway Service and ISTIO_META_NETWORK: traffic is sent to unreachable pod IPs.",
                ("istiod", "Found multiple networks CIDRs matching the endpoint IP: %s. Using the first match.", "pilot/pkg/serviceregistry/kube/controller/network.go"),
                &[("network-labels", "namespace_label"), ("network-labels", "gateway_services"), ("network-labels", "gateway_env_ISTIO_META_NETWORK")],
            ),
        ],
    },
];

impl Message {
    /// The steps of this message that exist, in the order listed.
    pub fn step_ids(&self) -> impl Iterator<Item = StepId> + '_ {
        self.steps.iter().filter_map(|s| StepId::parse(s))
    }
    pub fn verifies(&self, id: StepId) -> bool {
        self.steps.contains(&id.as_str())
    }
}

/// One drawable item: a phase heading, or a message with its number, from
/// 1, over messages and observations alike: the TUI, Mermaid and the
/// teaching hops number them the same.
#[derive(Debug, Clone, Copy)]
pub enum Item {
    Phase(&'static Phase),
    Message { n: usize, msg: &'static Message },
}

/// Every item in drawing order.
pub fn items() -> Vec<Item> {
    let mut out = vec![];
    let mut n = 0;
    for p in SEQUENCE {
        out.push(Item::Phase(p));
        for m in p.messages {
            n += 1;
            out.push(Item::Message { n, msg: m });
        }
    }
    out
}

/// Every message in order (no headings).
pub fn messages() -> impl Iterator<Item = &'static Message> {
    SEQUENCE.iter().flat_map(|p| p.messages.iter())
}

/// The steps in the order of the first message each verifies: the order in
/// which the diagram's selection moves.
pub fn step_order() -> Vec<StepId> {
    let mut out: Vec<StepId> = vec![];
    for m in messages() {
        for id in m.step_ids() {
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

/// How a message stands in a trace, from the steps that verify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No step of it has started (or it has none meshtrace checks).
    Pending,
    /// Some step of it is running, or some finished and others have not.
    Running,
    /// Every step finished: the worst of their statuses.
    Done(Status),
}

/// Fail over skipped (blocked) over warn over pass.
fn worse(a: Status, b: Status) -> Status {
    let rank = |s| match s {
        Status::Fail => 3,
        Status::Skipped => 2,
        Status::Warn => 1,
        Status::Pass => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

pub fn state(msg: &Message, st: &TraceState) -> State {
    let ids: Vec<StepId> = msg.step_ids().collect();
    let done: Vec<Status> = ids
        .iter()
        .filter_map(|id| st.result(*id).map(|r| r.status))
        .collect();
    if done.contains(&Status::Fail) {
        return State::Done(Status::Fail);
    }
    if ids.is_empty() || (done.is_empty() && !ids.iter().any(|id| st.is_running(*id))) {
        return State::Pending;
    }
    if done.len() < ids.len() {
        return State::Running;
    }
    State::Done(done.into_iter().fold(Status::Pass, worse))
}

/// The status of a message in a finished report (`None`: not checked).
pub fn status_in(msg: &Message, report: &crate::model::TraceReport) -> Option<Status> {
    let found: Vec<Status> = msg
        .step_ids()
        .filter_map(|id| report.step(id).map(|r| r.status))
        .collect();
    found.into_iter().reduce(worse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::STEPS;

    fn first(pred: impl Fn(&Message) -> bool) -> usize {
        messages()
            .position(pred)
            .expect("the sequence has that message")
    }

    #[test]
    fn every_step_verifies_some_message_and_every_id_is_a_step() {
        for s in STEPS {
            assert!(
                messages().any(|m| m.verifies(s.id)),
                "{} is attached to no message",
                s.id
            );
        }
        for m in messages() {
            assert!(!m.steps.is_empty(), "{:?} is verified by nothing", m.text);
            for id in m.steps {
                assert!(
                    StepId::parse(id).is_some() || UNWIRED.contains(id),
                    "{id:?} is neither a step nor listed as unwired"
                );
            }
        }
        for id in UNWIRED {
            assert!(
                StepId::parse(id).is_none(),
                "{id} is a step now: take it off UNWIRED"
            );
        }
    }

    #[test]
    fn the_csr_precedes_the_token_review_which_precedes_the_chain() {
        let csr = first(|m| m.text.starts_with("CreateCertificate"));
        let review = first(|m| m.verifies(StepId::TokenReview) && m.kind == Kind::Call);
        let answer = first(|m| m.verifies(StepId::TokenReview) && m.kind == Kind::Reply);
        let chain = first(|m| m.verifies(StepId::IssuedChain));
        assert!(
            csr < review,
            "the gateway sends the CSR before istiod reviews"
        );
        assert!(review < answer && answer < chain);
        let m: Vec<_> = messages().collect();
        assert_eq!((m[csr].from, m[csr].to), (Actor::Gateway, Actor::Istiod));
        assert_eq!(
            (m[review].from, m[review].to),
            (Actor::Istiod, Actor::RemoteApi)
        );
        assert_eq!(
            (m[answer].from, m[answer].to),
            (Actor::RemoteApi, Actor::Istiod)
        );
        assert_eq!(
            (m[chain].from, m[chain].to),
            (Actor::Istiod, Actor::Gateway)
        );
        // The order of checks is another: token-review runs before csr.
        assert!(StepId::TokenReview.index() < StepId::Csr.index());
    }

    #[test]
    fn replies_answer_the_call_before_them_and_observations_are_no_messages() {
        let m: Vec<_> = messages().collect();
        let mut replies = 0;
        for (i, r) in m.iter().enumerate().filter(|(_, r)| r.kind == Kind::Reply) {
            replies += 1;
            let call = m[..i]
                .iter()
                .rev()
                .find(|c| c.kind == Kind::Call && (c.from, c.to) == (r.to, r.from))
                .unwrap_or_else(|| panic!("{:?} answers no call", r.text));
            assert!(
                call.steps.iter().any(|s| r.steps.contains(s)),
                "{:?} and its call {:?} share a step",
                r.text,
                call.text
            );
        }
        assert!(replies >= 6, "replies are drawn");
        for o in m.iter().filter(|o| o.kind == Kind::Observation) {
            assert_eq!(o.from, o.to, "an observation reads one actor");
            assert_ne!(o.from, Actor::Gateway, "meshtrace reads API servers");
        }
        // The probes the old diagram drew as gateway messages.
        for id in [
            StepId::GatewayPod,
            StepId::RemoteIstiodEndpoint,
            StepId::NetworkLabels,
        ] {
            assert!(
                m.iter()
                    .filter(|x| x.verifies(id))
                    .all(|x| x.kind == Kind::Observation),
                "{id} reads objects: an observation"
            );
        }
    }

    #[test]
    fn step_order_has_every_step_once() {
        let o = step_order();
        assert_eq!(o.len(), STEPS.len());
        assert!(
            o.iter().position(|s| *s == StepId::Csr)
                < o.iter().position(|s| *s == StepId::TokenReview)
        );
    }

    fn result(id: StepId, status: Status) -> crate::model::StepResult {
        crate::model::StepResult {
            id,
            title: String::new(),
            status,
            duration_ms: 1.0,
            started_ms: 0.0,
            evidence: Default::default(),
            finding: None,
            diagnosis: None,
            hint: None,
            link: String::new(),
            blocked_by: vec![],
        }
    }

    #[test]
    fn a_message_takes_the_worst_state_of_its_steps() {
        use crate::model::TraceEvent;
        let listwatch = messages()
            .find(|m| m.verifies(StepId::RemoteIdentity) && m.kind == Kind::Call)
            .unwrap();
        let mut st = TraceState::default();
        assert_eq!(state(listwatch, &st), State::Pending);
        st.apply(&TraceEvent::StepFinished {
            result: result(StepId::RemoteIdentity, Status::Pass),
        });
        assert_eq!(state(listwatch, &st), State::Running, "rbac still to come");
        st.apply(&TraceEvent::StepFinished {
            result: result(StepId::RemoteRbac, Status::Warn),
        });
        assert_eq!(state(listwatch, &st), State::Done(Status::Warn));
        st.apply(&TraceEvent::StepFinished {
            result: result(StepId::RemoteRbac, Status::Fail),
        });
        assert_eq!(state(listwatch, &st), State::Done(Status::Fail));
        let webhook = messages()
            .find(|m| m.steps == ["injection-webhook"])
            .unwrap();
        assert_eq!(state(webhook, &st), State::Pending, "not checked yet");
    }
}
