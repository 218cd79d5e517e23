//! The trace model: the one vocabulary every front end speaks.
//!
//! Probes produce [`TraceEvent`]s; [`TraceState::apply`] folds them into a
//! [`TraceReport`]. The TUI, the text/JSON/Markdown/Mermaid renderers and the
//! tests all read the same events and the same report, never probe internals.

pub use crate::findings::Finding;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// Version of the JSON document shape (`docs/schema.json`).
pub const SCHEMA_VERSION: &str = "meshtrace.v1";

/// A step of the flow. The kebab-case ids are the JSON contract: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepId {
    GatewayPod,
    ControlPlane,
    RemoteSecret,
    RemoteKubeconfig,
    RemoteApiTls,
    RemoteIdentity,
    RemoteRbac,
    RemoteIstiodEndpoint,
    IstiodExposure,
    GatewayToken,
    TokenReview,
    RootOfTrust,
    IstiodTls,
    InjectionWebhook,
    Csr,
    IssuedChain,
    Xds,
    NetworkLabels,
}

/// Who takes part in the flow: the columns of the sequence diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Actor {
    /// The remote gateway's istio-agent (meshtrace plays it).
    Gateway,
    /// The remote cluster's API server.
    RemoteApi,
    /// The primary istiod (its secret controller, authenticator and CA).
    Istiod,
    /// The primary cluster's API server.
    PrimaryApi,
}

impl Actor {
    pub const ALL: [Actor; 4] = [
        Actor::Gateway,
        Actor::RemoteApi,
        Actor::Istiod,
        Actor::PrimaryApi,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Actor::Gateway => "remote gateway",
            Actor::RemoteApi => "remote API server",
            Actor::Istiod => "primary istiod",
            Actor::PrimaryApi => "primary API server",
        }
    }
    pub fn short(self) -> &'static str {
        match self {
            Actor::Gateway => "Gateway",
            Actor::RemoteApi => "RemoteAPI",
            Actor::Istiod => "istiod",
            Actor::PrimaryApi => "PrimaryAPI",
        }
    }
}

/// Static facts about a step: what it checks, which message of the flow it
/// stands for, and which steps must pass before it can run.
#[derive(Debug, Clone, Serialize)]
pub struct StepInfo {
    pub id: StepId,
    pub title: &'static str,
    /// The hop of the real flow this step reproduces (sequence-diagram arrow).
    pub from: Actor,
    pub to: Actor,
    pub message: &'static str,
    /// What happens at this hop, for teaching mode and docs.
    pub explain: &'static str,
    /// Steps whose failure makes this one impossible (it is then `skipped`).
    pub needs: &'static [StepId],
    /// Steps it reads facts from, waited for before it starts: its `needs`
    /// plus the steps whose facts it uses when they passed. The one place
    /// the engine's schedule is written.
    pub waits_for: &'static [StepId],
    /// The steps its I/O (the gather) waits for, when fewer than
    /// `waits_for`: the gather starts once these finished, and the judge
    /// once all of `waits_for` did, so a request goes out as soon as what it
    /// sends is known, as istio-agent and istiod send theirs, while the
    /// verdict still waits for the steps it explains. None: the gather waits
    /// for all of `waits_for`.
    pub gathers_after: Option<&'static [StepId]>,
}

use StepId::*;

/// Every step in flow order: the order of the sequence diagram and of reports.
pub const STEPS: &[StepInfo] = &[
    StepInfo {
        id: GatewayPod,
        title: "Remote gateway pod and its identity settings",
        from: Actor::Gateway,
        to: Actor::RemoteApi,
        message: "read pod env (ISTIO_META_CLUSTER_ID, CA_ADDR) and istio-token volume",
        explain: "The gateway's istio-agent learns its cluster ID, the CA address and its token from the pod spec.",
        needs: &[],
        waits_for: &[],
        gathers_after: None,
    },
    StepInfo {
        id: ControlPlane,
        title: "istiod's revision and settings in the primary",
        from: Actor::Istiod,
        to: Actor::PrimaryApi,
        message: "read istiod Deployment (istio.io/rev, env, args) and mesh config",
        explain: "istiod's own settings decide the verdicts: which audiences its TokenReview asks for, its cluster ID, trust domain and CA. Each revision is its own istiod; the gateway's revision picks one.",
        needs: &[],
        waits_for: &[GatewayPod],
        gathers_after: None,
    },
    StepInfo {
        id: RemoteSecret,
        title: "Remote secret registered in the primary for this cluster ID",
        from: Actor::Istiod,
        to: Actor::PrimaryApi,
        message: "watch Secrets istio/multiCluster=true; data key = cluster ID",
        explain: "istiod registers one remote cluster per data key of each labelled Secret in its namespace.",
        needs: &[],
        waits_for: &[GatewayPod, ControlPlane],
        gathers_after: None,
    },
    StepInfo {
        id: RemoteKubeconfig,
        title: "Remote secret kubeconfig is one istiod accepts",
        from: Actor::Istiod,
        to: Actor::Istiod,
        message: "load kubeconfig (no exec, no file paths)",
        explain: "istiod loads the kubeconfig with its untrusted-config rules: inline data only, no exec plugins.",
        needs: &[RemoteSecret],
        waits_for: &[RemoteSecret],
        gathers_after: None,
    },
    StepInfo {
        id: RemoteApiTls,
        title: "Remote API server reachable and trusted with the secret's CA data",
        from: Actor::Istiod,
        to: Actor::RemoteApi,
        message: "TLS handshake with certificate-authority-data",
        explain: "istiod dials the server in the kubeconfig and verifies it with the inline CA data.",
        needs: &[RemoteKubeconfig],
        waits_for: &[RemoteKubeconfig],
        gathers_after: None,
    },
    StepInfo {
        id: RemoteIdentity,
        title: "Remote secret credential authenticates",
        from: Actor::Istiod,
        to: Actor::RemoteApi,
        message: "SelfSubjectReview as the secret's identity",
        explain: "The token in the kubeconfig must still be valid in the remote cluster.",
        needs: &[RemoteApiTls],
        waits_for: &[RemoteApiTls, RemoteKubeconfig],
        gathers_after: Some(&[RemoteKubeconfig]),
    },
    StepInfo {
        id: RemoteRbac,
        title: "Remote identity may create TokenReviews",
        from: Actor::Istiod,
        to: Actor::RemoteApi,
        message: "SelfSubjectAccessReview create tokenreviews",
        explain: "istiod validates gateway tokens with TokenReview, so its remote identity needs create on tokenreviews.",
        needs: &[RemoteIdentity],
        waits_for: &[RemoteIdentity, RemoteKubeconfig],
        gathers_after: Some(&[RemoteKubeconfig]),
    },
    StepInfo {
        id: RemoteIstiodEndpoint,
        title: "Remote istiod Service points at the primary",
        from: Actor::Gateway,
        to: Actor::RemoteApi,
        message: "resolve CA_ADDR (else discoveryAddress): selector-less Service + EndpointSlice",
        explain: "The agent dials CA_ADDR, else its proxy config's discoveryAddress. In the remote that name resolves to a Service without selector (istiod, istiod-<rev>, istiod-remote) whose endpoints hold the primary's exposed address.",
        needs: &[],
        waits_for: &[GatewayPod],
        gathers_after: None,
    },
    StepInfo {
        id: IstiodExposure,
        title: "The primary exposes istiod at the address the remote uses",
        from: Actor::Istiod,
        to: Actor::PrimaryApi,
        message: "east-west gateway / LoadBalancer Service on 15012+15017, Gateway PASSTHROUGH, VirtualService to istiod",
        explain: "In the primary, an east-west gateway (or a LoadBalancer Service of istiod) exposes 15012 and 15017 at the address the remote's istiod Service holds; a gateway passes TLS through to istiod by a Gateway and a VirtualService (Istio's expose-istiod sample).",
        needs: &[],
        waits_for: &[RemoteIstiodEndpoint, GatewayPod, ControlPlane],
        gathers_after: None,
    },
    StepInfo {
        id: GatewayToken,
        title: "Gateway service-account token for audience istio-ca",
        from: Actor::Gateway,
        to: Actor::RemoteApi,
        message: "TokenRequest (projected istio-token)",
        explain: "The kubelet projects a token with audience istio-ca into the pod; meshtrace asks for the same token with TokenRequest.",
        needs: &[GatewayPod],
        waits_for: &[GatewayPod, ControlPlane],
        gathers_after: Some(&[GatewayPod]),
    },
    StepInfo {
        id: TokenReview,
        title: "TokenReview as istiod runs it",
        from: Actor::Istiod,
        to: Actor::RemoteApi,
        message: "TokenReview audiences=[istio-ca] with the remote secret's credentials",
        explain: "istiod asks the remote API server, as the remote secret's identity, whether the gateway token is a valid service-account token for istio-ca.",
        needs: &[GatewayToken, RemoteRbac],
        waits_for: &[GatewayToken, RemoteRbac, ControlPlane, RemoteKubeconfig],
        gathers_after: Some(&[GatewayToken, ControlPlane, RemoteKubeconfig]),
    },
    StepInfo {
        id: RootOfTrust,
        title: "One root of trust across primary CA and both clusters",
        from: Actor::Gateway,
        to: Actor::RemoteApi,
        message: "read istio-ca-root-cert; compare with primary CA",
        explain: "The gateway trusts the root in istio-ca-root-cert; it must be the root of the CA that signs in the primary.",
        needs: &[],
        waits_for: &[GatewayPod, ControlPlane],
        gathers_after: Some(&[GatewayPod]),
    },
    StepInfo {
        id: IstiodTls,
        title: "istiod on 15012 reachable and verified with the remote's root",
        from: Actor::Gateway,
        to: Actor::Istiod,
        message: "TLS to CA_ADDR, server name from its host, roots istio-ca-root-cert (or CA_ROOT_CA)",
        explain: "The agent verifies istiod's serving certificate against istio-ca-root-cert and the CA_ADDR host name.",
        needs: &[RemoteIstiodEndpoint, RootOfTrust],
        // And istiod-exposure, only when 15012 does not answer (waited for then).
        waits_for: &[RemoteIstiodEndpoint, RootOfTrust, GatewayPod, ControlPlane],
        gathers_after: None,
    },
    StepInfo {
        id: InjectionWebhook,
        title: "The remote's sidecar injector reaches istiod on 15017 and gets a patch",
        from: Actor::RemoteApi,
        to: Actor::Istiod,
        message: "MutatingWebhookConfiguration -> istiod:15017 (caBundle), dry AdmissionReview -> JSONPatch",
        explain: "The remote API server calls the revision's injection webhook for every new pod: it resolves the webhook's Service (or URL) to istiod's exposed 15017, verifies istiod with the caBundle, and applies the JSONPatch istiod returns. Without it no gateway or workload pod is ever created.",
        needs: &[],
        waits_for: &[
            GatewayPod,
            ControlPlane,
            RemoteIstiodEndpoint,
            RootOfTrust,
            IstiodTls,
        ],
        gathers_after: Some(&[GatewayPod, ControlPlane, RemoteIstiodEndpoint]),
    },
    StepInfo {
        id: Csr,
        title: "CreateCertificate accepted by istiod",
        from: Actor::Gateway,
        to: Actor::Istiod,
        message: "CreateCertificate(CSR) authorization: Bearer, clusterid",
        explain: "The agent sends a CSR with its token and cluster ID; istiod authenticates the token with a TokenReview to the remote API server (the next hop), then signs.",
        needs: &[IstiodTls, TokenReview],
        waits_for: &[
            IstiodTls,
            TokenReview,
            GatewayToken,
            RootOfTrust,
            RemoteSecret,
            ControlPlane,
        ],
        gathers_after: Some(&[
            IstiodTls,
            GatewayToken,
            RootOfTrust,
            RemoteSecret,
            ControlPlane,
        ]),
    },
    StepInfo {
        id: IssuedChain,
        title: "Issued chain verifies to the remote's root with the right SPIFFE ID",
        from: Actor::Istiod,
        to: Actor::Gateway,
        message: "cert_chain [leaf, intermediate..., root]",
        explain: "istiod returns leaf, intermediates and root; the leaf carries spiffe://<trust domain>/ns/<ns>/sa/<sa>.",
        needs: &[Csr],
        waits_for: &[Csr, ControlPlane],
        gathers_after: None,
    },
    StepInfo {
        id: Xds,
        title: "istiod accepts the gateway's xDS stream and sends its configuration",
        from: Actor::Gateway,
        to: Actor::Istiod,
        message: "ADS StreamAggregatedResources to discoveryAddress: node router~IP~pod.ns, authorization: Bearer, ClusterID; CDS",
        explain: "With its certificate in hand the agent opens the xDS stream to the proxy config's discoveryAddress (not CA_ADDR) with the same token and cluster ID; istiod authenticates the stream, checks that the identity's namespace and service account are the node's, and answers with the gateway's clusters.",
        needs: &[Csr],
        waits_for: &[
            Csr,
            IssuedChain,
            GatewayPod,
            ControlPlane,
            GatewayToken,
            RemoteIstiodEndpoint,
            RootOfTrust,
            IstiodTls,
        ],
        gathers_after: Some(&[
            GatewayPod,
            ControlPlane,
            GatewayToken,
            RemoteIstiodEndpoint,
            RootOfTrust,
            IstiodTls,
        ]),
    },
    StepInfo {
        id: NetworkLabels,
        title: "Network labels agree",
        from: Actor::Gateway,
        to: Actor::RemoteApi,
        message: "topology.istio.io/network on namespace, gateway and env",
        explain: "Cross-network traffic needs the same network name on the namespace, the gateway Service and ISTIO_META_NETWORK.",
        needs: &[GatewayPod],
        waits_for: &[GatewayPod],
        gathers_after: None,
    },
];

impl StepId {
    pub fn info(self) -> &'static StepInfo {
        STEPS
            .iter()
            .find(|s| s.id == self)
            .expect("every StepId is in STEPS")
    }
    /// The steps this step's gather waits for ([`StepInfo::gathers_after`],
    /// else all of `waits_for`).
    pub fn gathers_after(self) -> &'static [StepId] {
        let info = self.info();
        info.gathers_after.unwrap_or(info.waits_for)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayPod => "gateway-pod",
            ControlPlane => "control-plane",
            RemoteSecret => "remote-secret",
            RemoteKubeconfig => "remote-kubeconfig",
            RemoteApiTls => "remote-api-tls",
            RemoteIdentity => "remote-identity",
            RemoteRbac => "remote-rbac",
            RemoteIstiodEndpoint => "remote-istiod-endpoint",
            IstiodExposure => "istiod-exposure",
            GatewayToken => "gateway-token",
            TokenReview => "token-review",
            RootOfTrust => "root-of-trust",
            IstiodTls => "istiod-tls",
            InjectionWebhook => "injection-webhook",
            Csr => "csr",
            IssuedChain => "issued-chain",
            Xds => "xds",
            NetworkLabels => "network-labels",
        }
    }
    pub fn parse(s: &str) -> Option<StepId> {
        STEPS.iter().map(|s| s.id).find(|id| id.as_str() == s)
    }
    /// Position in flow order.
    pub fn index(self) -> usize {
        STEPS.iter().position(|s| s.id == self).expect("in STEPS")
    }
    /// Link to this step's section of the checks documentation, relative to
    /// the repository (`meshtrace.v1`'s `link`).
    pub fn doc_link(self) -> String {
        format!("docs/checks.md#{}", self.as_str())
    }
    /// The absolute URL of this step's documentation.
    pub fn doc_url(self) -> String {
        crate::findings::doc_url(self.as_str())
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        }
    }
    /// A glyph that carries the status without colour.
    pub fn glyph(self) -> &'static str {
        match self {
            Status::Pass => "✔",
            Status::Warn => "▲",
            Status::Fail => "✘",
            Status::Skipped => "○",
        }
    }
    /// ASCII fallback for terminals and logs without Unicode.
    pub fn ascii(self) -> &'static str {
        match self {
            Status::Pass => "[ok]",
            Status::Warn => "[warn]",
            Status::Fail => "[FAIL]",
            Status::Skipped => "[skip]",
        }
    }
}

/// The facts a step saw, as ordered structured data (names, addresses,
/// claims, fingerprints, validity). Never a token, signature or private key.
pub type Evidence = Map<String, Value>;

/// The outcome of one step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepResult {
    pub id: StepId,
    pub title: String,
    pub status: Status,
    /// Wall time of the step itself, in milliseconds (waiting for the steps it
    /// needs is not counted).
    pub duration_ms: f64,
    /// Milliseconds from trace start to the step's start.
    pub started_ms: f64,
    pub evidence: Evidence,
    /// What did not pass: stable code, one-line summary, commands that fix
    /// it, a note, and the documentation URL (flattened: `code`, `summary`,
    /// `commands`, `note`, `doc`). Every result that is not a pass has one.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<Finding>,
    /// Why the step did not pass, quoting the value seen and the value expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
    /// `meshtrace.v1`'s fix text: the finding's note and commands in one
    /// string. Kept for readers of the first schema; new readers use
    /// `commands` and `note`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// `docs/checks.md#<id>`, relative to the repository (`meshtrace.v1`).
    pub link: String,
    /// For `skipped` steps: the failed steps that blocked this one.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub blocked_by: Vec<StepId>,
}

impl StepResult {
    /// Everything a step reports passes through the one sanitizer before it
    /// enters the model (docs/security.md#redaction): the exact `secrets`
    /// and anything shaped like a credential redacted, control characters and
    /// escape sequences removed, every text and list capped.
    pub fn sanitize(&mut self, secrets: &[String]) {
        use crate::inspect::sanitize as s;
        let text = |t: &str, max| s::cap(&s::clean(t, secrets), max);
        self.title = text(&self.title, 256);
        self.link = text(&self.link, 256);
        self.diagnosis = self.diagnosis.as_deref().map(|d| text(d, s::DIAGNOSIS_MAX));
        self.hint = self.hint.as_deref().map(|h| text(h, s::DIAGNOSIS_MAX));
        if let Some(f) = &mut self.finding {
            f.code = text(&f.code, 128);
            f.summary = text(&f.summary, 256);
            f.doc = text(&f.doc, 512);
            f.note = f.note.as_deref().map(|n| text(n, s::DIAGNOSIS_MAX));
            f.commands.truncate(s::LIST_MAX);
            for c in &mut f.commands {
                *c = text(c, s::DIAGNOSIS_MAX);
            }
        }
        let ev = std::mem::take(&mut self.evidence);
        self.evidence = sanitize_map(ev, secrets, 0);
        self.blocked_by.truncate(STEPS.len());
    }
}

fn sanitize_map(m: Map<String, Value>, secrets: &[String], depth: usize) -> Map<String, Value> {
    use crate::inspect::sanitize as s;
    let total = m.len();
    let mut out = Map::new();
    for (k, v) in m.into_iter().take(s::LIST_MAX * 2) {
        out.insert(
            s::cap(&s::clean(&k, secrets), 128),
            sanitize_value(v, secrets, depth + 1),
        );
    }
    if total > s::LIST_MAX * 2 {
        out.insert(
            "…".into(),
            Value::String(format!("{} more fields", total - s::LIST_MAX * 2)),
        );
    }
    out
}

/// Evidence values: strings cleaned and capped, lists capped at
/// [`LIST_MAX`](crate::inspect::sanitize::LIST_MAX) items, nesting at 8 levels.
fn sanitize_value(v: Value, secrets: &[String], depth: usize) -> Value {
    use crate::inspect::sanitize as s;
    if depth > 8 {
        return Value::String("[nested too deep]".into());
    }
    match v {
        Value::String(t) => Value::String(s::cap(&s::clean(&t, secrets), s::FIELD_MAX)),
        Value::Array(items) => {
            let total = items.len();
            let mut out: Vec<Value> = items
                .into_iter()
                .take(s::LIST_MAX)
                .map(|i| sanitize_value(i, secrets, depth + 1))
                .collect();
            if total > s::LIST_MAX {
                out.push(Value::String(format!("… {} more", total - s::LIST_MAX)));
            }
            Value::Array(out)
        }
        Value::Object(m) => Value::Object(sanitize_map(m, secrets, depth)),
        other => other,
    }
}

impl Target {
    /// A fleet remote no kubeconfig context reaches (traced with its remote
    /// secret's credentials, `remote` empty): the shell variable its fixes
    /// name the remote's context by, `CONTEXT_<ID>` (meshtrace cannot know
    /// the context; the fix's first line requires the variable).
    pub fn context_var(&self) -> Option<String> {
        if !self.remote.is_empty() {
            return None;
        }
        let id = self.cluster_id.as_deref().filter(|id| !id.is_empty())?;
        let word: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        Some(format!("CONTEXT_{word}"))
    }

    /// The remote context as people read it: the context, or that there is
    /// none.
    pub fn remote_label(&self) -> String {
        match (&self.remote, &self.cluster_id) {
            (r, _) if !r.is_empty() => r.clone(),
            (_, Some(id)) => format!("none ({id}: the remote secret's credentials)"),
            _ => "none".into(),
        }
    }

    /// A target read from a recording is peer text too.
    pub fn sanitize(&mut self) {
        use crate::inspect::sanitize as s;
        for f in [
            &mut self.primary,
            &mut self.remote,
            &mut self.istio_namespace,
        ] {
            *f = s::cap(&s::clean(f, &[]), 256);
        }
        self.fault = self
            .fault
            .as_deref()
            .map(|f| s::cap(&s::clean(f, &[]), 256));
        self.cluster_id = self
            .cluster_id
            .as_deref()
            .map(|f| s::cap(&s::clean(f, &[]), 256));
    }
}

impl TraceEvent {
    /// Sanitize the text an event carries (for events from outside: replay).
    pub fn sanitize(&mut self) {
        match self {
            TraceEvent::TraceStarted {
                target,
                meshtrace_version,
                at,
            } => {
                target.sanitize();
                for f in [meshtrace_version, at].into_iter().flatten() {
                    *f =
                        crate::inspect::sanitize::cap(&crate::inspect::sanitize::clean(f, &[]), 64);
                }
            }
            TraceEvent::StepFinished { result } => result.sanitize(&[]),
            TraceEvent::TraceFinished { at: Some(a), .. } => {
                *a = crate::inspect::sanitize::cap(&crate::inspect::sanitize::clean(a, &[]), 64);
            }
            TraceEvent::StepStarted { .. } | TraceEvent::TraceFinished { .. } => {}
        }
    }
}

/// What the engine says while it runs: the live stream every front end consumes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum TraceEvent {
    TraceStarted {
        target: Target,
        /// The meshtrace that ran the trace (absent in older recordings).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meshtrace_version: Option<String>,
        /// Wall-clock start, RFC 3339 UTC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<String>,
    },
    StepStarted {
        id: StepId,
        at_ms: f64,
    },
    StepFinished {
        result: StepResult,
    },
    TraceFinished {
        total_ms: f64,
        /// Wall-clock end, RFC 3339 UTC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<String>,
    },
}

impl TraceEvent {
    /// The first event of a run, stamped with this meshtrace and the time.
    pub fn started(target: Target) -> TraceEvent {
        TraceEvent::TraceStarted {
            target,
            meshtrace_version: Some(version().to_string()),
            at: Some(now_rfc3339()),
        }
    }
    pub fn finished(total_ms: f64) -> TraceEvent {
        TraceEvent::TraceFinished {
            total_ms,
            at: Some(now_rfc3339()),
        }
    }
}

/// This meshtrace's version (Cargo.toml).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// How many steps ended in each status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Counts {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub skipped: usize,
}

/// What was traced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Target {
    pub primary: String,
    pub remote: String,
    pub istio_namespace: String,
    pub mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// In a fleet run: the remote's cluster ID, the data key of the remote
    /// secret istiod registered it by. Absent in a trace of one remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

/// What a trace ran against. Serialized as `"clusters"` and `"lab"`, the
/// strings of the JSON contract (and of every recording made before this
/// was an enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Through the operator's kube contexts.
    #[default]
    Clusters,
    /// The built-in lab (`meshtrace lab`).
    Lab,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Clusters => "clusters",
            Mode::Lab => "lab",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

/// The final document: `-o json` prints exactly this.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceReport {
    pub schema: String,
    pub target: Target,
    pub verdict: Verdict,
    /// The earliest step in flow order that failed (else warned), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<StepId>,
    pub total_ms: f64,
    /// The meshtrace that made the report (absent in older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meshtrace_version: Option<String>,
    /// Wall-clock start and end, RFC 3339 UTC (absent in older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Steps per status.
    #[serde(default)]
    pub counts: Counts,
    /// Every step, in flow order.
    pub steps: Vec<StepResult>,
}

/// Version of the fleet document's shape (`docs/schema.json`, `$defs/FleetReport`).
pub const FLEET_SCHEMA_VERSION: &str = "meshtrace.fleet.v1";

/// How a remote of a fleet run was reached: which remote secret key it
/// is, and which kube context (if any) traced it, by which rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FleetRemote {
    /// The cluster ID: the remote secret's data key istiod registers the
    /// remote by. Absent for a `--remote` context no remote secret points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// `namespace/name` of the remote secret istiod registers it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The API server the remote secret's kubeconfig names (istiod's rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The kube context that traced it; absent: traced with the remote
    /// secret's own credentials (istiod's view), and the steps that need
    /// the remote's own rights were skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Why this context (or none), in words.
    pub context_rule: String,
}

/// A remote secret key istiod's secret controller does not register, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IgnoredKey {
    pub secret: String,
    pub key: String,
    pub why: String,
}

/// Remotes per verdict.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct FleetCounts {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
}

/// Fleet mode's document (`-o json` without `--remote`): one report per
/// remote istiod registers, each the single trace's [`TraceReport`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FleetReport {
    pub schema: String,
    pub primary: String,
    pub istio_namespace: String,
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// The worst verdict of the reports (pass when there are none).
    pub verdict: Verdict,
    /// Wall time of the whole run, milliseconds.
    pub total_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meshtrace_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub counts: FleetCounts,
    /// Keys of remote secrets istiod does not register (its own cluster ID,
    /// a cluster ID another Secret registered first).
    #[serde(default)]
    pub ignored: Vec<IgnoredKey>,
    /// How each remote was reached; `remotes[i]` is `reports[i]`'s.
    pub remotes: Vec<FleetRemote>,
    /// One trace report per remote, in cluster ID order.
    pub reports: Vec<TraceReport>,
}

impl FleetRemote {
    /// Everything here comes from the primary's remote secrets (peer text):
    /// cleaned and capped like any evidence.
    pub fn sanitize(&mut self) {
        use crate::inspect::sanitize as s;
        let text = |t: &str| s::cap(&s::clean(t, &[]), 512);
        for f in [
            &mut self.cluster_id,
            &mut self.secret,
            &mut self.server,
            &mut self.context,
        ]
        .into_iter()
        .flatten()
        {
            *f = text(f);
        }
        self.context_rule = text(&self.context_rule);
    }
}

impl IgnoredKey {
    pub fn sanitize(&mut self) {
        use crate::inspect::sanitize as s;
        for f in [&mut self.secret, &mut self.key, &mut self.why] {
            *f = s::cap(&s::clean(f, &[]), 512);
        }
    }
}

impl FleetReport {
    /// The worst verdict of `reports` and the count of each.
    pub fn tally(reports: &[TraceReport]) -> (Verdict, FleetCounts) {
        let mut c = FleetCounts::default();
        for r in reports {
            match r.verdict {
                Verdict::Pass => c.pass += 1,
                Verdict::Warn => c.warn += 1,
                Verdict::Fail => c.fail += 1,
            }
        }
        let v = if c.fail > 0 {
            Verdict::Fail
        } else if c.warn > 0 {
            Verdict::Warn
        } else {
            Verdict::Pass
        };
        (v, c)
    }
}

/// Live state built from events; a pure fold, no I/O.
#[derive(Debug, Clone, Default)]
pub struct TraceState {
    pub target: Target,
    pub running: Vec<(StepId, f64)>,
    pub results: Vec<StepResult>,
    pub finished: Option<f64>,
    pub meshtrace_version: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Grows with every event applied: front ends redo derived work (the
    /// TUI's wrapped text) only when it changed.
    pub generation: u64,
}

impl TraceState {
    pub fn apply(&mut self, event: &TraceEvent) {
        self.generation += 1;
        match event {
            TraceEvent::TraceStarted {
                target,
                meshtrace_version,
                at,
            } => {
                *self = TraceState {
                    target: target.clone(),
                    meshtrace_version: meshtrace_version.clone(),
                    started_at: at.clone(),
                    generation: self.generation,
                    ..Default::default()
                };
            }
            TraceEvent::StepStarted { id, at_ms } => {
                if !self.running.iter().any(|(r, _)| r == id) {
                    self.running.push((*id, *at_ms));
                }
            }
            TraceEvent::StepFinished { result } => {
                self.running.retain(|(r, _)| *r != result.id);
                self.results.retain(|r| r.id != result.id);
                self.results.push(result.clone());
            }
            TraceEvent::TraceFinished { total_ms, at } => {
                self.finished = Some(*total_ms);
                self.finished_at = at.clone();
            }
        }
    }

    pub fn result(&self, id: StepId) -> Option<&StepResult> {
        self.results.iter().find(|r| r.id == id)
    }

    pub fn is_running(&self, id: StepId) -> bool {
        self.running.iter().any(|(r, _)| *r == id)
    }

    /// The report as it stands; steps not finished yet are left out.
    pub fn report(&self) -> TraceReport {
        let mut steps = self.results.clone();
        steps.sort_by_key(|r| r.id.index());
        let first_fail = steps
            .iter()
            .find(|r| r.status == Status::Fail)
            .map(|r| r.id);
        let first_warn = steps
            .iter()
            .find(|r| r.status == Status::Warn)
            .map(|r| r.id);
        let verdict = if first_fail.is_some() {
            Verdict::Fail
        } else if first_warn.is_some() {
            Verdict::Warn
        } else {
            Verdict::Pass
        };
        let count = |st: Status| steps.iter().filter(|r| r.status == st).count();
        let counts = Counts {
            pass: count(Status::Pass),
            warn: count(Status::Warn),
            fail: count(Status::Fail),
            skipped: count(Status::Skipped),
        };
        TraceReport {
            schema: SCHEMA_VERSION.to_string(),
            target: self.target.clone(),
            verdict,
            first_failure: first_fail.or(first_warn),
            total_ms: self.finished.unwrap_or(0.0),
            meshtrace_version: self.meshtrace_version.clone(),
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            counts,
            steps,
        }
    }
}

impl TraceReport {
    pub fn step(&self, id: StepId) -> Option<&StepResult> {
        self.steps.iter().find(|s| s.id == id)
    }
    pub fn count(&self, status: Status) -> usize {
        self.steps.iter().filter(|s| s.status == status).count()
    }
}

pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        for s in STEPS {
            assert_eq!(StepId::parse(s.id.as_str()), Some(s.id));
            let json = serde_json::to_string(&s.id).unwrap();
            assert_eq!(json, format!("\"{}\"", s.id.as_str()));
        }
        let mut ids: Vec<_> = STEPS.iter().map(|s| s.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), STEPS.len());
    }

    #[test]
    fn each_dependency_is_declared_once_and_needs_are_waited_for() {
        for s in STEPS {
            for n in s.needs {
                assert!(
                    s.waits_for.contains(n),
                    "{} needs {} but does not wait for it",
                    s.id,
                    n
                );
            }
            let mut w = s.waits_for.to_vec();
            w.sort();
            w.dedup();
            assert_eq!(
                w.len(),
                s.waits_for.len(),
                "{} waits for a step twice",
                s.id
            );
            assert!(!s.waits_for.contains(&s.id), "{} waits for itself", s.id);
            // The judge waits for all of waits_for, so the gather's own
            // waits are among them; a split that waits for everything is none.
            if let Some(g) = s.gathers_after {
                for d in g {
                    assert!(
                        s.waits_for.contains(d),
                        "{} gathers after {d}, not waited for",
                        s.id
                    );
                }
                assert!(
                    g.len() < s.waits_for.len(),
                    "{} gathers after all it waits for",
                    s.id
                );
            }
        }
    }

    #[test]
    fn needs_point_backwards_in_flow_order() {
        for s in STEPS {
            for n in s.needs {
                assert!(n.index() < s.id.index(), "{} needs later step {}", s.id, n);
            }
        }
    }

    fn result(id: StepId, status: Status) -> StepResult {
        StepResult {
            id,
            title: id.info().title.into(),
            status,
            duration_ms: 1.0,
            started_ms: 0.0,
            evidence: Evidence::new(),
            finding: None,
            diagnosis: None,
            hint: None,
            link: id.doc_link(),
            blocked_by: vec![],
        }
    }

    #[test]
    fn report_names_earliest_failure_in_flow_order() {
        let mut st = TraceState::default();
        st.apply(&TraceEvent::StepFinished {
            result: result(Csr, Status::Fail),
        });
        st.apply(&TraceEvent::StepFinished {
            result: result(NetworkLabels, Status::Warn),
        });
        st.apply(&TraceEvent::StepFinished {
            result: result(RemoteRbac, Status::Fail),
        });
        let r = st.report();
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.first_failure, Some(RemoteRbac));
        assert_eq!(r.steps[0].id, RemoteRbac);
    }

    #[test]
    fn warn_only_report() {
        let mut st = TraceState::default();
        st.apply(&TraceEvent::StepStarted {
            id: RootOfTrust,
            at_ms: 0.0,
        });
        assert!(st.is_running(RootOfTrust));
        st.apply(&TraceEvent::StepFinished {
            result: result(RootOfTrust, Status::Warn),
        });
        assert!(!st.is_running(RootOfTrust));
        let r = st.report();
        assert_eq!(r.verdict, Verdict::Warn);
        assert_eq!(r.first_failure, Some(RootOfTrust));
    }
}
