//! The remote secret's kubeconfig, judged the way istiod judges it.
//!
//! istiod builds a remote cluster's client from each data key of a remote
//! secret with its "untrusted kubeconfig" rules, in this order:
//! 1. an empty value: `kubeconfig is empty`;
//! 2. the YAML (and its base64 `*-data` fields) must load:
//!    `kubeconfig cannot be loaded: ...`;
//! 3. client-go validation (contexts name existing clusters and users,
//!    clusters have a server, ...): `kubeconfig is not valid: ...`;
//! 4. the sanitizer refuses anything that runs code or reads istiod's files,
//!    for every user: `kubeconfig is not allowed: ...` wrapping
//!    `auth provider %s is not allowed` (oidc is permitted),
//!    `clientKey is not allowed`, `clientCertificate is not allowed`,
//!    `tokenFile is not allowed`, `exec is not allowed`.
//!
//! Inline data (`token`, `client-certificate-data`, `client-key-data`,
//! `certificate-authority-data`) is fine. Messages keep istiod's phrase and
//! add the offending names and values in quotes; never a token or a key.

use crate::model::Evidence;
use base64::Engine as _;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use kube::config::{AuthInfo, Kubeconfig};
use serde_json::json;
use std::fmt;
use std::net::IpAddr;

/// A secret string whose `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }
    /// The secret itself: only for building a request, never for output.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the current user authenticates to the remote API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `users[].user.token`.
    Token(SecretString),
    /// `client-certificate-data` (decoded PEM); the key is not kept.
    ClientCertData { cert_pem: String },
    /// `auth-provider: {name: oidc}`, the one provider istiod permits.
    OidcAuthProvider,
    /// No credential istiod can use (anonymous, or basic auth).
    None,
}

impl Credential {
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Token(_) => "token",
            Credential::ClientCertData { .. } => "client-certificate-data",
            Credential::OidcAuthProvider => "auth-provider oidc",
            Credential::None => "none",
        }
    }
}

/// The parts of the kubeconfig istiod uses: its current context.
#[derive(Clone)]
pub struct RemoteKubeconfig {
    pub context: String,
    pub cluster_name: String,
    pub user_name: String,
    pub server: String,
    pub tls_server_name: Option<String>,
    /// Decoded `certificate-authority-data` (PEM text).
    pub ca_data_pem: Option<String>,
    pub insecure_skip_tls_verify: bool,
    pub credential: Credential,
    /// The whole parsed kubeconfig (for building a client). Not in `Debug`:
    /// an oidc auth-provider config can hold tokens.
    pub raw: Kubeconfig,
}

impl fmt::Debug for RemoteKubeconfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteKubeconfig")
            .field("context", &self.context)
            .field("cluster_name", &self.cluster_name)
            .field("user_name", &self.user_name)
            .field("server", &self.server)
            .field("tls_server_name", &self.tls_server_name)
            .field(
                "ca_data_pem",
                &self
                    .ca_data_pem
                    .as_ref()
                    .map(|p| format!("<{} bytes>", p.len())),
            )
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl RemoteKubeconfig {
    /// Host part of `server`.
    pub fn server_host(&self) -> Option<String> {
        server_host(&self.server)
    }

    /// Does `server` point at a loopback address (unreachable from istiod)?
    pub fn server_is_loopback(&self) -> bool {
        self.server_host().is_some_and(|h| is_loopback_host(&h))
    }

    /// What istiod will use, as evidence. The token only as a fingerprint.
    pub fn evidence(&self) -> Evidence {
        let mut e = Evidence::new();
        e.insert("current_context".into(), json!(self.context));
        e.insert("cluster".into(), json!(self.cluster_name));
        e.insert("user".into(), json!(self.user_name));
        e.insert("server".into(), json!(self.server));
        if let Some(n) = &self.tls_server_name {
            e.insert("tls_server_name".into(), json!(n));
        }
        e.insert(
            "certificate_authority_data".into(),
            json!(match &self.ca_data_pem {
                Some(p) => format!("present ({} bytes of PEM)", p.len()),
                None => "absent (system roots)".to_string(),
            }),
        );
        if self.insecure_skip_tls_verify {
            e.insert("insecure_skip_tls_verify".into(), json!(true));
        }
        e.insert("credential".into(), json!(self.credential.kind()));
        if let Credential::Token(t) = &self.credential {
            e.insert(
                "token_fingerprint".into(),
                json!(crate::inspect::jwt::fingerprint(t.expose())),
            );
        }
        e
    }
}

/// Why istiod would refuse the kubeconfig, in istiod's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigError {
    #[error("kubeconfig is empty")]
    Empty,
    /// Not YAML, not a kubeconfig shape, bad base64 in a `*-data` field.
    #[error("kubeconfig cannot be loaded: {0}")]
    Load(String),
    /// client-go validation: contexts, clusters, users, servers.
    #[error("kubeconfig is not valid: {0}")]
    Invalid(String),
    /// istiod's sanitizer: exec, file paths, auth providers other than oidc.
    #[error("kubeconfig is not allowed: {0}")]
    NotAllowed(String),
}

/// Go's `encoding/json` decodes `[]byte` with `base64.StdEncoding`: padding
/// required, non-zero trailing bits tolerated, CR and LF skipped.
const GO_STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

fn go_base64(field: &str, owner: &str, value: &str) -> Result<Vec<u8>, KubeconfigError> {
    let cleaned: String = value.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    GO_STD_BASE64
        .decode(cleaned.as_bytes())
        .map_err(|e| KubeconfigError::Load(format!("{owner}: {field} is not valid base64: {e}")))
}

/// Replace long or token-like quoted strings (`"..."` or `` `...` ``) in a
/// parser message, so that a misplaced token or key is never echoed.
fn redact_quoted(msg: &str) -> String {
    let mut out = String::new();
    let mut rest = msg;
    while let Some(start) = rest.find(['"', '`']) {
        let q = rest.as_bytes()[start] as char;
        let after = &rest[start + 1..];
        let Some(end) = after.find(q) else { break };
        let inner = &after[..end];
        out.push_str(&rest[..start]);
        if inner.len() > 48 || inner.starts_with("eyJ") || inner.contains("PRIVATE KEY") {
            out.push_str(&format!(
                "{q}<{} chars, not shown>{q}",
                inner.chars().count()
            ));
        } else {
            out.push(q);
            out.push_str(inner);
            out.push(q);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A YAML parser error in words for a user: serde-saphyr's user formatter
/// (no advice about its own options), no source snippet, quotes redacted.
pub fn yaml_words(err: &serde_saphyr::Error) -> String {
    let formatter = serde_saphyr::UserMessageFormatter;
    let mut opts = serde_saphyr::RenderOptions::default();
    opts.formatter = &formatter;
    opts.snippets = serde_saphyr::SnippetMode::Off;
    redact_quoted(&err.render_with_options(opts))
}

/// serde-saphyr's options as kube parses kubeconfigs with them (its
/// defaults), except that an error does not render the offending source
/// lines: they can hold a token or a key.
fn yaml_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.with_snippet = false;
    o
}

/// A kubeconfig's text parsed exactly as kube parses it
/// (`Kubeconfig::from_yaml`: serde-saphyr, every document, merged), so that
/// meshtrace and kube accept the same files; a refusal is said in words and
/// never echoes a token. istiod's rules come after, in
/// [`parse_remote_kubeconfig`].
pub fn load_kubeconfig(bytes: &[u8]) -> Result<Kubeconfig, KubeconfigError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| KubeconfigError::Load(format!("the value is not UTF-8 text ({e})")))?;
    match serde_saphyr::from_multiple_with_options::<Kubeconfig>(text, yaml_options()) {
        Ok(docs) => docs
            .into_iter()
            .try_fold(Kubeconfig::default(), Kubeconfig::merge)
            .map_err(|e| KubeconfigError::Load(e.to_string())),
        Err(e) => Err(explain_refusal(text, &e)),
    }
}

/// Why the typed parse refused `text`, in words where the documents' shape
/// says more than the parser's message.
fn explain_refusal(text: &str, err: &serde_saphyr::Error) -> KubeconfigError {
    use serde_json::Value;
    let parser_words = || KubeconfigError::Load(yaml_words(err));
    // Not YAML at all: the parser's own words are the best there are.
    let Ok(docs) = serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options()) else {
        return parser_words();
    };
    for doc in &docs {
        match doc {
            Value::Null => {}
            Value::Object(m) => {
                // client-go loads a context without `cluster` and refuses it
                // in validation; kube's model requires the field. Say it as
                // client-go (and so istiod) does.
                let contexts = m.get("contexts").and_then(Value::as_array);
                for c in contexts.into_iter().flatten() {
                    let inner = c.get("context").and_then(Value::as_object);
                    if inner.is_some_and(|i| !i.contains_key("cluster")) {
                        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                        return KubeconfigError::Invalid(format!(
                            "cluster was not specified for context {name:?}"
                        ));
                    }
                }
            }
            Value::String(s) => {
                let looks_encoded = GO_STD_BASE64
                    .decode(s.split_whitespace().collect::<String>())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .is_some_and(|d| d.contains("clusters") || d.contains("apiVersion"));
                return KubeconfigError::Load(if looks_encoded {
                    "the value is a base64 string that decodes to a kubeconfig: it was base64-encoded twice (Secret data is already base64; use stringData or encode once)".into()
                } else {
                    format!(
                        "the value is a single string ({} chars), not a kubeconfig mapping",
                        s.chars().count()
                    )
                });
            }
            other => {
                let kind = match other {
                    Value::Bool(_) => "boolean",
                    Value::Number(_) => "number",
                    _ => "list",
                };
                return KubeconfigError::Load(format!(
                    "the value is a YAML {kind}, not a kubeconfig mapping"
                ));
            }
        }
    }
    parser_words()
}

/// The inline secrets kube's model keeps as `secrecy` strings, read through
/// serde (their only accessor); used to check presence and base64, never printed.
struct AuthSecrets {
    token: Option<String>,
    client_key_data: Option<String>,
    password: Option<String>,
}

/// Every inline secret of a user entry (token, client key, password), for
/// the sanitizer to redact wherever a peer echoes one.
pub fn inline_secrets(a: &AuthInfo) -> Vec<String> {
    let s = auth_secrets(a);
    [s.token, s.client_key_data, s.password]
        .into_iter()
        .flatten()
        .filter(|v| !v.is_empty())
        .collect()
}

fn auth_secrets(a: &AuthInfo) -> AuthSecrets {
    let v = serde_json::to_value(a).unwrap_or_default();
    let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    AuthSecrets {
        token: get("token"),
        client_key_data: get("client-key-data"),
        password: get("password"),
    }
}

fn nonempty(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// The largest value meshtrace parses: Kubernetes refuses a Secret whose
/// data exceeds 1 MiB, so no API server serves a larger one.
pub const MAX_KUBECONFIG_BYTES: usize = 1024 * 1024;
/// The deepest nesting meshtrace parses. A kubeconfig is six levels deep;
/// deeper input is refused before the YAML parser sees it (its cost grows
/// with the square of the depth).
pub const MAX_YAML_DEPTH: usize = 64;

/// Refuses input no kubeconfig has, in time linear in its length: larger
/// than [`MAX_KUBECONFIG_BYTES`], or nested deeper than [`MAX_YAML_DEPTH`]
/// (block indentation, `- ` entries and flow `[`/`{` all count).
pub fn check_shape(bytes: &[u8]) -> Result<(), KubeconfigError> {
    if bytes.len() > MAX_KUBECONFIG_BYTES {
        return Err(KubeconfigError::Load(format!(
            "the value is {} bytes; a Secret holds at most {MAX_KUBECONFIG_BYTES} (1 MiB), so no API server serves this one",
            bytes.len()
        )));
    }
    let depth = yaml_depth(bytes);
    if depth > MAX_YAML_DEPTH {
        return Err(KubeconfigError::Load(format!(
            "the value nests deeper than {MAX_YAML_DEPTH} levels (a kubeconfig nests 6): refused before parsing"
        )));
    }
    Ok(())
}

/// The deepest nesting in YAML text, stopping early past the limit. An
/// over-estimate for odd plain scalars is fine: it only refuses earlier.
fn yaml_depth(b: &[u8]) -> usize {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut max = 0usize;
    for line in b.split(|c| *c == b'\n') {
        let indent = line.iter().take_while(|c| **c == b' ').count();
        let rest = &line[indent..];
        let mut block = 0;
        if flow == 0 && !rest.is_empty() && rest[0] != b'#' {
            while indents.last().is_some_and(|top| *top >= indent) {
                indents.pop();
            }
            indents.push(indent);
            block = indents.len();
        }
        // `- - - x` nests one level per dash on a single line.
        let mut i = 0;
        let mut dashes = 0;
        while flow == 0 && i + 1 < rest.len() && rest[i] == b'-' && rest[i + 1] == b' ' {
            dashes += 1;
            i += 2;
            while i < rest.len() && rest[i] == b' ' {
                i += 1;
            }
        }
        let mut quote: Option<u8> = None;
        let mut prev = b' ';
        while i < rest.len() {
            let c = rest[i];
            match quote {
                Some(q) => {
                    if c == b'\\' && q == b'"' {
                        i += 1;
                    } else if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    b'"' | b'\'' if matches!(prev, b' ' | b':' | b'[' | b'{' | b',') => {
                        quote = Some(c)
                    }
                    b'#' if prev == b' ' => break,
                    b'[' | b'{' if flow > 0 || matches!(prev, b' ' | b':' | b'-') => flow += 1,
                    b']' | b'}' if flow > 0 => flow -= 1,
                    _ => {}
                },
            }
            prev = c;
            max = max.max(block + dashes + flow);
            i += 1;
        }
        max = max.max(block + dashes + flow);
        if max > MAX_YAML_DEPTH {
            return max;
        }
    }
    max
}

/// Parse a remote secret's kubeconfig and apply istiod's rules.
pub fn parse_remote_kubeconfig(bytes: &[u8]) -> Result<RemoteKubeconfig, KubeconfigError> {
    parse_remote_kubeconfig_allowing(bytes, &[])
}

/// [`parse_remote_kubeconfig`] with istiod's allowlist of insecure options,
/// its env `PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS` split on commas
/// (auth provider names, `clientKey`, `clientCertificate`, `tokenFile`,
/// `exec`): the sanitizer lets those through, as istiod's does.
pub fn parse_remote_kubeconfig_allowing(
    bytes: &[u8],
    allowed: &[String],
) -> Result<RemoteKubeconfig, KubeconfigError> {
    let allows = |o: &str| allowed.iter().any(|a| a == o);
    if bytes.is_empty() {
        return Err(KubeconfigError::Empty);
    }
    check_shape(bytes)?;
    let raw = load_kubeconfig(bytes)?;

    // --- load: the base64 fields ---
    let mut ca_data = Vec::new();
    for c in &raw.clusters {
        let data = match c
            .cluster
            .as_ref()
            .and_then(|c| c.certificate_authority_data.as_deref())
        {
            Some(d) => Some(go_base64(
                "certificate-authority-data",
                &format!("cluster {:?}", c.name),
                d,
            )?),
            None => None,
        };
        ca_data.push(data);
    }
    let mut cert_data = Vec::new();
    for u in &raw.auth_infos {
        let owner = format!("user {:?}", u.name);
        let mut cert = None;
        if let Some(a) = &u.auth_info {
            if let Some(d) = a.client_certificate_data.as_deref() {
                cert = Some(go_base64("client-certificate-data", &owner, d)?);
            }
            if let Some(k) = auth_secrets(a).client_key_data {
                go_base64("client-key-data", &owner, &k)?;
            }
        }
        cert_data.push(cert);
    }

    // --- validation (client-go) ---
    let invalid = |s: String| Err(KubeconfigError::Invalid(s));
    let config_empty = raw.clusters.is_empty()
        && raw.auth_infos.is_empty()
        && raw.contexts.is_empty()
        && raw.current_context.as_deref().unwrap_or("").is_empty()
        && raw.extensions.as_ref().is_none_or(Vec::is_empty);
    if config_empty {
        return invalid(
            "no configuration has been provided (no clusters, users, contexts or current-context)"
                .into(),
        );
    }
    let current = raw.current_context.clone().unwrap_or_default();
    if current.is_empty() {
        let names: Vec<&str> = raw.contexts.iter().map(|c| c.name.as_str()).collect();
        // client-go then reports the whole config as empty; istiod logs that text.
        return invalid(format!(
            "current-context is not set (contexts: {names:?}); istiod logs `invalid configuration: no configuration has been provided`"
        ));
    }
    let Some(ctx_index) = raw.contexts.iter().position(|c| c.name == current) else {
        let names: Vec<&str> = raw.contexts.iter().map(|c| c.name.as_str()).collect();
        return invalid(format!(
            "context was not found for specified context: {current:?} (contexts: {names:?})"
        ));
    };
    // every context, the current one first
    let order =
        std::iter::once(ctx_index).chain((0..raw.contexts.len()).filter(|i| *i != ctx_index));
    for i in order {
        let nc = &raw.contexts[i];
        let (cluster, user) = match &nc.context {
            Some(c) => (c.cluster.as_str(), c.user.as_deref().unwrap_or("")),
            None => ("", ""),
        };
        if user.is_empty() {
            return invalid(format!("user was not specified for context {:?}", nc.name));
        }
        if !raw.auth_infos.iter().any(|u| u.name == user) {
            let names: Vec<&str> = raw.auth_infos.iter().map(|u| u.name.as_str()).collect();
            return invalid(format!(
                "user {user:?} was not found for context {:?} (users: {names:?})",
                nc.name
            ));
        }
        if cluster.is_empty() {
            return invalid(format!(
                "cluster was not specified for context {:?}",
                nc.name
            ));
        }
        if !raw.clusters.iter().any(|c| c.name == cluster) {
            let names: Vec<&str> = raw.clusters.iter().map(|c| c.name.as_str()).collect();
            return invalid(format!(
                "cluster {cluster:?} was not found for context {:?} (clusters: {names:?})",
                nc.name
            ));
        }
    }
    for c in &raw.clusters {
        let cl = c.cluster.clone().unwrap_or_default();
        if cl.server.as_deref().unwrap_or("").trim().is_empty() {
            return invalid(format!("no server found for cluster {:?}", c.name));
        }
        if let Some(path) = cl
            .certificate_authority
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            return invalid(format!(
                "cluster {:?} names certificate-authority file {path:?}, which istiod would read from its own filesystem; use certificate-authority-data",
                c.name
            ));
        }
    }
    for u in &raw.auth_infos {
        let Some(a) = &u.auth_info else { continue };
        let s = auth_secrets(a);
        let has_cert = nonempty(&a.client_certificate) || nonempty(&a.client_certificate_data);
        let has_key = nonempty(&a.client_key) || nonempty(&s.client_key_data);
        if has_cert && !has_key {
            return invalid(format!(
                "client-key-data or client-key must be specified for {:?} to use the clientCert authentication method",
                u.name
            ));
        }
        let mut methods = Vec::new();
        if nonempty(&s.token) {
            methods.push("token");
        }
        if nonempty(&a.username) || nonempty(&s.password) {
            methods.push("basicAuth");
        }
        if methods.len() > 1 {
            return invalid(format!(
                "more than one authentication method found for {:?}; found {methods:?}, only one is allowed",
                u.name
            ));
        }
    }

    // --- istiod's sanitizer, for every user (the current one first) ---
    let ctx = raw.contexts[ctx_index].context.clone().unwrap_or_default();
    let user_name = ctx.user.clone().unwrap_or_default();
    let cluster_name = ctx.cluster.clone();
    let user_index = raw
        .auth_infos
        .iter()
        .position(|u| u.name == user_name)
        .expect("validated above");
    let order =
        std::iter::once(user_index).chain((0..raw.auth_infos.len()).filter(|i| *i != user_index));
    for i in order {
        let u = &raw.auth_infos[i];
        let Some(a) = &u.auth_info else { continue };
        let not_allowed = |s: String| Err(KubeconfigError::NotAllowed(s));
        if let Some(ap) = &a.auth_provider {
            if ap.name != "oidc" && !allows(&ap.name) {
                return not_allowed(format!(
                    "auth provider {} is not allowed (user {:?}, auth-provider {:?})",
                    ap.name, u.name, ap.name
                ));
            }
        }
        if let Some(p) = a
            .client_key
            .as_deref()
            .filter(|p| !p.is_empty() && !allows("clientKey"))
        {
            return not_allowed(format!(
                "clientKey is not allowed (user {:?}, client-key file {p:?}; use client-key-data)",
                u.name
            ));
        }
        if let Some(p) = a
            .client_certificate
            .as_deref()
            .filter(|p| !p.is_empty() && !allows("clientCertificate"))
        {
            return not_allowed(format!(
                "clientCertificate is not allowed (user {:?}, client-certificate file {p:?}; use client-certificate-data)",
                u.name
            ));
        }
        if let Some(p) = a
            .token_file
            .as_deref()
            .filter(|p| !p.is_empty() && !allows("tokenFile"))
        {
            return not_allowed(format!(
                "tokenFile is not allowed (user {:?}, tokenFile {p:?}; use token)",
                u.name
            ));
        }
        if let Some(x) = a.exec.as_ref().filter(|_| !allows("exec")) {
            let cmd = x.command.clone().unwrap_or_default();
            return not_allowed(format!(
                "exec is not allowed (user {:?}, exec command {cmd:?})",
                u.name
            ));
        }
    }

    // --- what istiod will use ---
    let cluster_index = raw
        .clusters
        .iter()
        .position(|c| c.name == cluster_name)
        .expect("validated above");
    let cluster = raw.clusters[cluster_index]
        .cluster
        .clone()
        .unwrap_or_default();
    let ca_data_pem = ca_data[cluster_index]
        .as_ref()
        .map(|d| String::from_utf8_lossy(d).into_owned());
    let auth = raw.auth_infos[user_index]
        .auth_info
        .clone()
        .unwrap_or_default();
    let secrets = auth_secrets(&auth);
    let credential = if let Some(t) = secrets.token.filter(|t| !t.is_empty()) {
        Credential::Token(SecretString::new(t))
    } else if let Some(cert) = &cert_data[user_index] {
        Credential::ClientCertData {
            cert_pem: String::from_utf8_lossy(cert).into_owned(),
        }
    } else if auth
        .auth_provider
        .as_ref()
        .is_some_and(|p| p.name == "oidc")
    {
        Credential::OidcAuthProvider
    } else {
        Credential::None
    };

    Ok(RemoteKubeconfig {
        context: current,
        cluster_name,
        user_name,
        server: cluster.server.clone().unwrap_or_default(),
        tls_server_name: cluster.tls_server_name.clone().filter(|s| !s.is_empty()),
        ca_data_pem,
        insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
        credential,
        raw,
    })
}

/// The host part of a server URL (`https://[::1]:6443/x` -> `::1`), lowercased.
pub fn server_host(server: &str) -> Option<String> {
    let s = server.trim();
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(r) = hostport.strip_prefix('[') {
        r.split_once(']')?.0
    } else if hostport.matches(':').count() > 1 {
        hostport // a bare IPv6 address
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// `localhost`, `*.localhost`, 127.0.0.0/8, `::1` (and `::ffff:127.x.y.z`).
pub fn is_loopback_host(host: &str) -> bool {
    let h = host
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if h == "localhost" || h.ends_with(".localhost") {
        return true;
    }
    match h.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn deep_or_huge_input_is_refused_before_parsing_quickly() {
        let deep = format!("{}1{}", "{\"a\":".repeat(150_000), "}".repeat(150_000));
        let started = std::time::Instant::now();
        let e = parse_remote_kubeconfig(deep.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("nests deeper"), "{e}");
        let huge = format!("a: \"{}\"", "x".repeat(2 << 20));
        let e = parse_remote_kubeconfig(huge.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("1 MiB"), "{e}");
        let deep = format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000));
        let e = parse_remote_kubeconfig(deep.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("nests deeper"), "{e}");
        let dashes = format!("{}x", "- ".repeat(5_000));
        let e = parse_remote_kubeconfig(dashes.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("nests deeper"), "{e}");
        let blocks: String = (0..200)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let e = parse_remote_kubeconfig(blocks.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("nests deeper"), "{e}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn ordinary_kubeconfigs_are_shallow() {
        let kc = "apiVersion: v1\nclusters:\n- cluster:\n    server: https://a:6443\n  name: c\ncontexts:\n- context: {cluster: c, user: u}\n  name: x\nusers:\n- name: u\n  user:\n    token: \"a#b{c\"\n";
        assert!(check_shape(kc.as_bytes()).is_ok());
        assert!(
            yaml_depth(kc.as_bytes()) <= 6,
            "{}",
            yaml_depth(kc.as_bytes())
        );
    }

    use super::*;
    use crate::lab::pki::Ca;

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// One CA for all tests, so a test can find its base64 in the YAML.
    fn ca_pem() -> String {
        static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        PEM.get_or_init(|| Ca::root("remote-apiserver-ca", "lab", 30).cert_pem)
            .clone()
    }

    /// What `istioctl create-remote-secret` writes, with `user` and `cluster`
    /// bodies replaceable.
    fn kc(cluster_extra: &str, user_body: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: https://10.0.0.1:6443
{cluster_extra}  name: remote
contexts:
- context:
    cluster: remote
    user: remote
  name: remote
current-context: remote
preferences: {{}}
users:
- name: remote
  user:
{user_body}",
            ca = b64(&ca_pem())
        )
    }

    fn token_user() -> String {
        format!("    token: {TOKEN}\n")
    }

    fn err(yaml: &str) -> KubeconfigError {
        parse_remote_kubeconfig(yaml.as_bytes()).unwrap_err()
    }

    #[test]
    fn create_remote_secret_shape_is_accepted() {
        let k = parse_remote_kubeconfig(kc("", &token_user()).as_bytes()).unwrap();
        assert_eq!(k.context, "remote");
        assert_eq!(k.cluster_name, "remote");
        assert_eq!(k.user_name, "remote");
        assert_eq!(k.server, "https://10.0.0.1:6443");
        assert_eq!(k.tls_server_name, None);
        assert!(!k.insecure_skip_tls_verify);
        assert!(
            k.ca_data_pem
                .as_deref()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert_eq!(k.credential, Credential::Token(SecretString::new(TOKEN)));
        match &k.credential {
            Credential::Token(t) => assert_eq!(t.expose(), TOKEN),
            c => panic!("{c:?}"),
        }
        assert_eq!(k.raw.clusters.len(), 1);
        assert_eq!(k.server_host().as_deref(), Some("10.0.0.1"));
        assert!(!k.server_is_loopback());
    }

    #[test]
    fn token_never_printed() {
        let k = parse_remote_kubeconfig(kc("", &token_user()).as_bytes()).unwrap();
        let debug = format!("{k:?}");
        let ev = serde_json::to_string(&k.evidence()).unwrap();
        for out in [&debug, &ev, &format!("{}", SecretString::new(TOKEN))] {
            assert!(
                !out.contains(TOKEN) && !out.contains("c2VjcmV0LXNpZ25hdHVyZQ"),
                "{out}"
            );
        }
        assert!(debug.contains("<redacted>"));
        assert_eq!(
            k.evidence()["token_fingerprint"],
            json!(crate::inspect::jwt::fingerprint(TOKEN))
        );
    }

    #[test]
    fn empty() {
        assert_eq!(
            parse_remote_kubeconfig(b"").unwrap_err(),
            KubeconfigError::Empty
        );
        assert_eq!(KubeconfigError::Empty.to_string(), "kubeconfig is empty");
        // whitespace or `{}` loads, then fails validation like client-go's empty config
        for s in ["  \n", "{}", "apiVersion: v1\nkind: Config\n"] {
            let e = err(s);
            assert!(
                matches!(&e, KubeconfigError::Invalid(m) if m.contains("no configuration")),
                "{s:?}: {e}"
            );
        }
    }

    #[test]
    fn not_yaml() {
        let e = err("clusters: [unclosed\n  - : :");
        assert!(matches!(e, KubeconfigError::Load(_)), "{e}");
        assert!(
            e.to_string().starts_with("kubeconfig cannot be loaded: "),
            "{e}"
        );
        let e = err("just some words");
        assert!(e.to_string().contains("single string"), "{e}");
        let e = err("- a\n- b\n");
        assert!(e.to_string().contains("list"), "{e}");
        assert!(matches!(
            parse_remote_kubeconfig(&[0xff, 0xfe, 0x00]),
            Err(KubeconfigError::Load(_))
        ));
    }

    #[test]
    fn double_base64_is_named_and_not_echoed() {
        let encoded = b64(&kc("", &token_user()));
        let e = err(&encoded);
        let text = e.to_string();
        assert!(text.contains("base64-encoded twice"), "{text}");
        assert!(!text.contains(&encoded[..60]));
    }

    #[test]
    fn misplaced_token_is_not_echoed_by_parser_errors() {
        let yaml = kc("", "").replace("  user:\n", &format!("  user: {TOKEN}\n"));
        let e = err(&yaml);
        assert!(matches!(e, KubeconfigError::Load(_)), "{e}");
        assert!(!e.to_string().contains(TOKEN), "{e}");
        // A token pasted as a key, twice: the parser quotes keys in backticks.
        let yaml = kc("", &format!("    {TOKEN}: a\n    {TOKEN}: b\n"));
        let e = err(&yaml);
        assert!(
            matches!(&e, KubeconfigError::Load(m) if m.contains("duplicate mapping key `<")),
            "{e}"
        );
        assert!(!e.to_string().contains(TOKEN), "{e}");
    }

    #[test]
    fn bad_base64_ca_quotes_the_field() {
        let yaml = kc("", &token_user()).replace(&b64(&ca_pem()), "not*base64!");
        let e = err(&yaml);
        assert!(
            matches!(&e, KubeconfigError::Load(m) if m.contains("certificate-authority-data") && m.contains("\"remote\"")),
            "{e}"
        );
        // line-wrapped base64 is fine, as in Go
        let pem = ca_pem();
        let wrapped: String = b64(&pem)
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\\n");
        let yaml = format!(
            "clusters:\n- name: c\n  cluster:\n    server: https://x:6443\n    certificate-authority-data: \"{wrapped}\"\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\nusers:\n- name: u\n  user: {{token: abc}}\n"
        );
        let k = parse_remote_kubeconfig(yaml.as_bytes()).unwrap();
        assert_eq!(k.ca_data_pem.as_deref(), Some(pem.as_str()));
    }

    #[test]
    fn no_current_context() {
        let yaml = kc("", &token_user()).replace("current-context: remote\n", "");
        let e = err(&yaml);
        assert!(
            matches!(&e, KubeconfigError::Invalid(m) if m.contains("current-context is not set")),
            "{e}"
        );
        let yaml =
            kc("", &token_user()).replace("current-context: remote", "current-context: elsewhere");
        let e = err(&yaml);
        assert!(
            matches!(&e, KubeconfigError::Invalid(m) if m.contains("\"elsewhere\"")),
            "{e}"
        );
        assert!(e.to_string().starts_with("kubeconfig is not valid: "));
    }

    #[test]
    fn context_names_missing_cluster_or_user() {
        let yaml = kc("", &token_user()).replace("    cluster: remote\n", "    cluster: gone\n");
        let e = err(&yaml);
        assert_eq!(
            e,
            KubeconfigError::Invalid(
                "cluster \"gone\" was not found for context \"remote\" (clusters: [\"remote\"])"
                    .into()
            )
        );
        let yaml = kc("", &token_user()).replace("    user: remote\n", "    user: nobody\n");
        let e = err(&yaml);
        assert!(
            matches!(&e, KubeconfigError::Invalid(m) if m.starts_with("user \"nobody\" was not found for context \"remote\"")),
            "{e}"
        );
        let yaml = kc("", &token_user()).replace("    cluster: remote\n", "");
        let e = err(&yaml);
        assert!(
            matches!(&e, KubeconfigError::Invalid(m) if m.contains("cluster was not specified")),
            "{e}"
        );
    }

    #[test]
    fn cluster_without_server() {
        let yaml = kc("", &token_user()).replace("    server: https://10.0.0.1:6443\n", "");
        assert_eq!(
            err(&yaml),
            KubeconfigError::Invalid("no server found for cluster \"remote\"".into())
        );
    }

    #[test]
    fn exec_refused() {
        let user = "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: gke-gcloud-auth-plugin\n";
        let e = err(&kc("", user));
        assert!(
            matches!(&e, KubeconfigError::NotAllowed(m) if m.starts_with("exec is not allowed") && m.contains("\"gke-gcloud-auth-plugin\"")),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("kubeconfig is not allowed: exec is not allowed")
        );
    }

    #[test]
    fn istiods_insecure_options_let_exactly_those_through() {
        let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n";
        let allowing = |yaml: &str, allowed: &[&str]| {
            let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
            parse_remote_kubeconfig_allowing(yaml.as_bytes(), &allowed)
        };
        let k = allowing(&kc("", exec), &["exec"]).unwrap();
        assert_eq!(k.credential, Credential::None);
        assert!(matches!(
            allowing(&kc("", exec), &["tokenFile", "gcp"]),
            Err(KubeconfigError::NotAllowed(m)) if m.starts_with("exec is not allowed")
        ));
        let file = "    tokenFile: /var/run/token\n";
        assert!(allowing(&kc("", file), &["tokenFile"]).is_ok());
        let gcp = "    auth-provider:\n      name: gcp\n      config: {}\n";
        assert!(allowing(&kc("", gcp), &["gcp"]).is_ok());
        assert!(allowing(&kc("", gcp), &["azure"]).is_err());
    }

    #[test]
    fn token_file_refused() {
        let e = err(&kc("", "    tokenFile: /var/run/secrets/token\n"));
        assert!(
            matches!(&e, KubeconfigError::NotAllowed(m) if m.starts_with("tokenFile is not allowed") && m.contains("\"/var/run/secrets/token\"")),
            "{e}"
        );
    }

    #[test]
    fn client_certificate_path_refused() {
        let key = b64("-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----\n");
        let e = err(&kc(
            "",
            &format!("    client-certificate: /etc/certs/client.crt\n    client-key-data: {key}\n"),
        ));
        assert!(
            matches!(&e, KubeconfigError::NotAllowed(m) if m.starts_with("clientCertificate is not allowed") && m.contains("\"/etc/certs/client.crt\"")),
            "{e}"
        );
        // a key path is refused first, as istiod checks clientKey before clientCertificate
        let e = err(&kc(
            "",
            "    client-certificate: /etc/certs/client.crt\n    client-key: /etc/certs/client.key\n",
        ));
        assert!(
            matches!(&e, KubeconfigError::NotAllowed(m) if m.starts_with("clientKey is not allowed")),
            "{e}"
        );
        assert!(!e.to_string().contains("MIGHAgEA"));
    }

    #[test]
    fn gcp_auth_provider_refused_oidc_allowed() {
        let e = err(&kc(
            "",
            "    auth-provider:\n      name: gcp\n      config: {}\n",
        ));
        assert_eq!(
            e.to_string(),
            "kubeconfig is not allowed: auth provider gcp is not allowed (user \"remote\", auth-provider \"gcp\")"
        );
        let k = parse_remote_kubeconfig(
            kc("", "    auth-provider:\n      name: oidc\n      config:\n        idp-issuer-url: https://issuer\n        id-token: secret-id-token\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(k.credential, Credential::OidcAuthProvider);
        assert!(!format!("{k:?}").contains("secret-id-token"));
    }

    #[test]
    fn sanitizer_checks_every_user_not_only_the_current_one() {
        let yaml = format!(
            "{}- name: other\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n",
            kc("", &token_user())
        );
        let e = err(&yaml);
        assert!(
            matches!(&e, KubeconfigError::NotAllowed(m) if m.contains("\"other\"")),
            "{e}"
        );
    }

    #[test]
    fn inline_client_certificate_data_accepted() {
        let pem = Ca::root("client", "lab", 1).cert_pem;
        let key = b64("-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----\n");
        let k = parse_remote_kubeconfig(
            kc(
                "",
                &format!(
                    "    client-certificate-data: {}\n    client-key-data: {key}\n",
                    b64(&pem)
                ),
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(k.credential, Credential::ClientCertData { cert_pem: pem });
        assert!(!format!("{k:?}").contains("MIGHAgEA"));
        // without a key client-go refuses it
        let e = err(&kc(
            "",
            &format!("    client-certificate-data: {}\n", b64("x")),
        ));
        assert!(
            matches!(&e, KubeconfigError::Invalid(m) if m.contains("client-key-data or client-key must be specified for \"remote\"")),
            "{e}"
        );
        // bad base64 in the key is a load error that does not echo the key
        let e = err(&kc(
            "",
            &format!(
                "    client-certificate-data: {}\n    client-key-data: SECRETKEY!!\n",
                b64("x")
            ),
        ));
        assert!(
            matches!(&e, KubeconfigError::Load(m) if m.contains("client-key-data")),
            "{e}"
        );
        assert!(!e.to_string().contains("SECRETKEY"));
    }

    #[test]
    fn tls_server_name_and_insecure() {
        let k = parse_remote_kubeconfig(
            kc("    tls-server-name: kubernetes.default.svc\n    insecure-skip-tls-verify: false\n", &token_user())
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(k.tls_server_name.as_deref(), Some("kubernetes.default.svc"));
        assert_eq!(
            k.evidence()["tls_server_name"],
            json!("kubernetes.default.svc")
        );
        let yaml = kc("", &token_user()).replace(
            "    certificate-authority-data: ",
            "    insecure-skip-tls-verify: true\n    x-old-ca: ",
        );
        let k = parse_remote_kubeconfig(yaml.as_bytes()).unwrap();
        assert!(k.insecure_skip_tls_verify);
        assert_eq!(k.ca_data_pem, None);
    }

    #[test]
    fn no_credential_and_basic_auth() {
        let k = parse_remote_kubeconfig(
            kc("", "    {}\n")
                .replace("  user:\n    {}\n", "  user: {}\n")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(k.credential, Credential::None);
        let e = err(&kc(
            "",
            &format!("{}    username: admin\n    password: pw\n", token_user()),
        ));
        assert!(
            matches!(&e, KubeconfigError::Invalid(m) if m.contains("more than one authentication method")),
            "{e}"
        );
    }

    #[test]
    fn picks_the_current_context_among_several() {
        let yaml = String::from(
            "clusters:\n- name: a\n  cluster: {server: https://a:6443}\n- name: b\n  cluster: {server: 'https://127.0.0.1:6443'}\ncontexts:\n- name: ca\n  context: {cluster: a, user: ua}\n- name: cb\n  context: {cluster: b, user: ub}\ncurrent-context: cb\nusers:\n- name: ua\n  user: {token: t1}\n- name: ub\n  user: {token: t2}\n",
        );
        let k = parse_remote_kubeconfig(yaml.as_bytes()).unwrap();
        assert_eq!(
            (
                k.context.as_str(),
                k.cluster_name.as_str(),
                k.user_name.as_str()
            ),
            ("cb", "b", "ub")
        );
        assert_eq!(k.credential, Credential::Token(SecretString::new("t2")));
        assert!(k.server_is_loopback());
    }

    #[test]
    fn ca_file_path_is_invalid() {
        let yaml = kc(
            "    certificate-authority: /etc/kubernetes/pki/ca.crt\n",
            &token_user(),
        );
        let e = err(&yaml);
        assert!(
            matches!(&e, KubeconfigError::Invalid(m) if m.contains("\"/etc/kubernetes/pki/ca.crt\"")),
            "{e}"
        );
    }

    #[test]
    fn server_hosts() {
        assert_eq!(
            server_host("https://10.0.0.1:6443").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            server_host("https://API.Example.com").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            server_host("https://[::1]:6443/path").as_deref(),
            Some("::1")
        );
        assert_eq!(
            server_host("https://user@host.example:443/x?y").as_deref(),
            Some("host.example")
        );
        assert_eq!(
            server_host("host.example:6443").as_deref(),
            Some("host.example")
        );
        assert_eq!(server_host("https://"), None);
        assert_eq!(server_host(""), None);
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST.",
            "api.localhost",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "::2",
            "localhost.example.com",
            "kubernetes.default.svc",
            "0.0.0.0",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn error_wording_matches_istiod() {
        assert_eq!(
            KubeconfigError::Load("x".into()).to_string(),
            "kubeconfig cannot be loaded: x"
        );
        assert_eq!(
            KubeconfigError::Invalid("x".into()).to_string(),
            "kubeconfig is not valid: x"
        );
        assert_eq!(
            KubeconfigError::NotAllowed("x".into()).to_string(),
            "kubeconfig is not allowed: x"
        );
    }

    /// What meshtrace concluded about one kubeconfig.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Verdict {
        Accepted,
        /// Not parsed: the YAML or its kubeconfig shape.
        Load,
        /// Parsed, then refused by istiod's rules (policy, not parsing):
        /// `Empty`, client-go validation, or istiod's sanitizer.
        Empty,
        Invalid,
        NotAllowed,
    }

    fn verdict(r: &Result<RemoteKubeconfig, KubeconfigError>) -> Verdict {
        match r {
            Ok(_) => Verdict::Accepted,
            Err(KubeconfigError::Load(_)) => Verdict::Load,
            Err(KubeconfigError::Empty) => Verdict::Empty,
            Err(KubeconfigError::Invalid(_)) => Verdict::Invalid,
            Err(KubeconfigError::NotAllowed(_)) => Verdict::NotAllowed,
        }
    }

    /// meshtrace's loader and kube's (`Kubeconfig::from_yaml`) accept and
    /// refuse the same kubeconfigs: one parser, serde-saphyr, judges them.
    /// Where kube parses a file, meshtrace parses it too and refuses it only
    /// by one of istiod's rules (never as unparsable); where kube refuses
    /// one, meshtrace refuses it as well.
    #[test]
    fn meshtrace_and_kube_parse_the_same_kubeconfigs() {
        use Verdict::*;
        let good = kc("", &token_user());
        let ca = b64(&ca_pem());
        let json = serde_json::to_string_pretty(&serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "remote", "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority-data": ca}}],
            "contexts": [{"name": "remote", "context": {"cluster": "remote", "user": "remote"}}],
            "current-context": "remote",
            "users": [{"name": "remote", "user": {"token": TOKEN}}]
        }))
        .unwrap();
        let anchors = format!(
            "clusters:\n- name: a\n  cluster: &cl\n    server: https://10.0.0.1:6443\n    certificate-authority-data: {ca}\n- name: b\n  cluster: *cl\ncontexts:\n- name: x\n  context: &ctx {{cluster: a, user: u}}\n- name: y\n  context:\n    <<: *ctx\n    cluster: b\ncurrent-context: x\nusers:\n- name: u\n  user: {{token: {TOKEN}}}\n"
        );
        let two_documents = format!(
            "{}---\nusers:\n- name: extra\n  user: {{token: other-token}}\n",
            good
        );
        let duplicate_key = good.replace(
            "    server: https://10.0.0.1:6443\n",
            "    server: https://10.0.0.1:6443\n    server: https://10.0.0.2:6443\n",
        );
        let tab_indented = good.replace("    cluster: remote\n", "\t\tcluster: remote\n");
        let exec = kc(
            "",
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n",
        );
        let no_cluster_in_context = good.replace("    cluster: remote\n", "");
        let misplaced_token = kc("", "").replace("  user:\n", &format!("  user: {TOKEN}\n"));
        let cases: Vec<(&str, String, bool, Verdict)> = vec![
            (
                "istioctl create-remote-secret",
                good.clone(),
                true,
                Accepted,
            ),
            ("JSON (kubectl config view -o json)", json, true, Accepted),
            ("anchors, aliases and a merge key", anchors, true, Accepted),
            ("two YAML documents (merged)", two_documents, true, Accepted),
            (
                "flow style on one line",
                format!(
                    "{{clusters: [{{name: c, cluster: {{server: 'https://x:6443'}}}}], contexts: [{{name: x, context: {{cluster: c, user: u}}}}], current-context: x, users: [{{name: u, user: {{token: {TOKEN}}}}}]}}"
                ),
                true,
                Accepted,
            ),
            (
                "not YAML",
                "clusters: [unclosed\n  - : :".into(),
                false,
                Load,
            ),
            ("a duplicate key", duplicate_key, false, Load),
            ("tabs as indentation", tab_indented, false, Load),
            ("a list at the top level", "- a\n- b\n".into(), false, Load),
            ("a plain string", "just some words".into(), false, Load),
            ("base64 of a kubeconfig", b64(&good), false, Load),
            ("a boolean", "true\n".into(), false, Load),
            (
                "a token where a user mapping goes",
                misplaced_token,
                false,
                Load,
            ),
            // kube's model requires `cluster`; client-go parses the file and
            // refuses it in validation, in the words meshtrace uses.
            (
                "a context without cluster",
                no_cluster_in_context,
                false,
                Invalid,
            ),
            // Parsed by both; refused by istiod's rules (policy).
            ("empty", String::new(), true, Empty),
            ("only whitespace", "  \n".into(), true, Invalid),
            ("an exec plugin", exec, true, NotAllowed),
            (
                "a token file",
                kc("", "    tokenFile: /var/run/token\n"),
                true,
                NotAllowed,
            ),
        ];
        for (what, text, kube_accepts, want) in cases {
            let kube = kube::config::Kubeconfig::from_yaml(&text);
            assert_eq!(kube.is_ok(), kube_accepts, "{what}: kube says {kube:?}");
            let loaded = load_kubeconfig(text.as_bytes());
            assert_eq!(
                loaded.is_ok(),
                kube.is_ok(),
                "{what}: meshtrace's loader {:?}, kube's {:?}",
                loaded.err(),
                kube.err()
            );
            let got = parse_remote_kubeconfig(text.as_bytes());
            assert_eq!(verdict(&got), want, "{what}: {:?}", got.err());
            if kube_accepts {
                assert_ne!(want, Load, "{what}: kube parses it, so must meshtrace");
            } else {
                assert_ne!(want, Accepted, "{what}: kube refuses it, so must meshtrace");
            }
            // Parser words for a user, not advice about the parser's options.
            if let Err(e) = &got {
                assert!(!e.to_string().contains("Options"), "{what}: {e}");
            }
            // No refusal echoes the token.
            if let Err(e) = &got {
                assert!(
                    !e.to_string().contains("c2VjcmV0LXNpZ25hdHVyZQ"),
                    "{what}: {e}"
                );
            }
        }
    }
}
