//! The preflight of the operator's own access, before any step runs: each
//! context (`--primary`, `--remote`) is dialled once with a SelfSubjectReview
//! (`POST /apis/authentication.k8s.io/v1/selfsubjectreviews`, what `kubectl
//! auth whoami` sends): that proves the server answers, its TLS verifies and
//! it accepts the credentials (an exec plugin runs here, and its own stderr
//! is quoted when it fails). Then the Istio namespace must exist in at least
//! one of the clusters.
//!
//! Without it, an unreachable or unauthorised context (VPN down, expired
//! login) surfaced as four step failures with RBAC advice. A failure here is
//! one line: the context, its server, the cause, and what to try.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use std::fmt;
use std::time::Duration;

/// One of the operator's contexts, as the command line resolved it.
#[derive(Clone)]
pub struct Access {
    /// `--primary` or `--remote`.
    pub flag: &'static str,
    pub context: String,
    /// The server URL of the context's cluster.
    pub server: String,
    pub client: kube::Client,
}

/// Why a context cannot be used, by kind: each has its own advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// No TCP, DNS failure, no answer in time.
    Unreachable(String),
    /// The TLS handshake failed (CA data, server name, expired certificate).
    Tls(String),
    /// 401: the API server refuses the credentials.
    Unauthorized(String),
    /// 403 for `system:anonymous`: no credentials reached the server.
    Anonymous(String),
    /// The kubeconfig's exec plugin (or another credential source) failed.
    Credentials(String),
    /// Something that is not an API server answered (a proxy, a login page).
    NotApiServer(String),
    /// The API server answered with an error of its own (5xx, 429, ...).
    Refused(String),
}

/// A context that failed the preflight: one line, with what to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub flag: &'static str,
    pub context: String,
    pub server: String,
    pub cause: Cause,
}

impl Failure {
    /// What to try, with the context's own name filled in.
    pub fn advice(&self) -> String {
        let ctx = &self.context;
        let sh = shell_word(ctx);
        match &self.cause {
            Cause::Unreachable(_) => format!(
                "is the VPN or the cluster up? `kubectl --context {sh} get --raw /version` shows the same; pass another --kubeconfig, or try `meshtrace lab`"
            ),
            Cause::Tls(_) => format!(
                "check the certificate-authority-data and server of context {ctx:?} in your kubeconfig (or pass another --kubeconfig)"
            ),
            Cause::Unauthorized(_) => format!(
                "log in again or refresh the credentials of context {ctx:?} (`kubectl --context {sh} auth whoami` shows the same), or pass another --kubeconfig"
            ),
            Cause::Anonymous(_) => format!(
                "give context {ctx:?} a user with credentials in your kubeconfig, or pass another --kubeconfig"
            ),
            Cause::Credentials(_) => format!(
                "run the context's credential plugin by hand (`kubectl --context {sh} auth whoami`) and fix what it says, or pass another --kubeconfig"
            ),
            Cause::NotApiServer(_) => format!(
                "context {ctx:?} must point at the Kubernetes API server itself; pass another --kubeconfig, or try `meshtrace lab`"
            ),
            Cause::Refused(_) => "try again later; the API server itself is in trouble".into(),
        }
    }
}

/// A context name as one shell word, quoted only when it needs it, so the
/// command in the advice can be pasted as it is.
fn shell_word(c: &str) -> String {
    let plain = !c.is_empty()
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_@%+=:,./-".contains(ch));
    if plain {
        c.to_string()
    } else {
        format!("'{}'", c.replace('\'', r"'\''"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = match &self.cause {
            Cause::Unreachable(w) => format!("cannot reach the API server: {w}"),
            Cause::Tls(w) => format!("TLS with the API server fails: {w}"),
            Cause::Unauthorized(w) => format!("the API server refuses the credentials: {w}"),
            Cause::Anonymous(w) => {
                format!("the API server sees no credentials (system:anonymous): {w}")
            }
            Cause::Credentials(w) => format!("no credentials: {w}"),
            Cause::NotApiServer(w) => format!("not a Kubernetes API server: {w}"),
            Cause::Refused(w) => format!("the API server answers with an error: {w}"),
        };
        write!(
            f,
            "{} context {:?} ({}): {words}; try: {}",
            self.flag,
            self.context,
            self.server.trim_end_matches('/'),
            self.advice()
        )
    }
}

/// Who the API server says the operator is (None: it has no
/// SelfSubjectReview, i.e. Kubernetes before 1.28, yet it authenticated us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whoami {
    pub username: Option<String>,
}

/// Dial one context: a SelfSubjectReview within `timeout`.
pub async fn dial(access: &Access, timeout: Duration) -> Result<Whoami, Failure> {
    let fail = |cause| Failure {
        flag: access.flag,
        context: access.context.clone(),
        server: access.server.clone(),
        cause,
    };
    let api: Api<SelfSubjectReview> = Api::all(access.client.clone());
    let review = tokio::time::timeout(
        timeout,
        api.create(&PostParams::default(), &SelfSubjectReview::default()),
    )
    .await
    .map_err(|_| {
        fail(Cause::Unreachable(format!(
            "no answer within {} (a silent server, or a credential plugin waiting for input)",
            humantime::format_duration(timeout)
        )))
    })?;
    match review {
        Ok(r) => Ok(Whoami {
            username: r.status.and_then(|s| s.user_info).and_then(|u| u.username),
        }),
        Err(e) => match judge(&e) {
            None => Ok(Whoami { username: None }),
            Some(cause) => Err(fail(cause)),
        },
    }
}

/// What a failed SelfSubjectReview says about the access; None when the
/// answer still proves it (authentication runs before routing and
/// authorization in kube-apiserver, so a 404 or a 403 for a real user means
/// the credentials were accepted).
pub fn judge(e: &kube::Error) -> Option<Cause> {
    use super::kube_client::PeerError;
    use super::kube_error::{describe, exec_words, tls_words};
    let words = describe(e);
    if let kube::Error::Api(s) = e {
        return match s.code {
            401 => Some(Cause::Unauthorized(words)),
            403 if s.message.contains("system:anonymous") => Some(Cause::Anonymous(words)),
            403 | 404 => None,
            _ => Some(Cause::Refused(words)),
        };
    }
    if let Some(w) = exec_words(e) {
        return Some(Cause::Credentials(w));
    }
    if matches!(e, kube::Error::Auth(_)) {
        return Some(Cause::Credentials(words));
    }
    if let Some(w) = tls_words(e) {
        return Some(Cause::Tls(w));
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(p) = err.downcast_ref::<PeerError>() {
            return Some(match p {
                PeerError::Timeout { .. } | PeerError::Down { .. } => Cause::Unreachable(words),
                PeerError::Unavailable { .. } => Cause::Refused(words),
                PeerError::TooLarge { .. }
                | PeerError::Redirect { .. }
                | PeerError::Html { .. }
                | PeerError::NotKubernetes { .. } => Cause::NotApiServer(words),
            });
        }
        cur = err.source();
    }
    // A 200 that is not the review asked for: not an API server either.
    if matches!(e, kube::Error::SerdeError(_)) {
        return Some(Cause::NotApiServer(words));
    }
    Some(Cause::Unreachable(words))
}

/// Dial both contexts at once; every failure, primary first.
pub async fn dial_all(accesses: &[Access], timeout: Duration) -> Vec<Failure> {
    let dials = accesses.iter().map(|a| dial(a, timeout));
    futures::future::join_all(dials)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

/// Whether a namespace exists in one cluster: None when the context may
/// not tell (403) or did not answer; the steps will say more.
async fn namespace_exists(client: &kube::Client, ns: &str, timeout: Duration) -> Option<bool> {
    let api: Api<Namespace> = Api::all(client.clone());
    match tokio::time::timeout(timeout, api.get_opt(ns)).await {
        Ok(Ok(found)) => Some(found.is_some()),
        _ => None,
    }
}

/// The namespaces of one cluster that look like Istio's: named `istio*`,
/// or holding a pod labelled `app=istiod`. Best effort: what the context
/// may not list is left out.
async fn istio_namespaces(client: &kube::Client, timeout: Duration) -> Vec<String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let all = ListParams::default();
    let istiod_pods = ListParams::default().labels("app=istiod");
    let (ns, istiod) = tokio::join!(
        tokio::time::timeout(timeout, namespaces.list(&all)),
        tokio::time::timeout(timeout, pods.list(&istiod_pods)),
    );
    let mut out: Vec<String> = Vec::new();
    if let Ok(Ok(list)) = ns {
        out.extend(
            list.items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .filter(|n| n.starts_with("istio")),
        );
    }
    if let Ok(Ok(list)) = istiod {
        out.extend(list.items.into_iter().filter_map(|p| p.metadata.namespace));
    }
    out
}

/// `--istio-namespace` must exist in at least one cluster; when it exists in
/// neither, the error names the closest Istio-looking namespaces.
pub async fn check_namespace(
    accesses: &[Access],
    ns: &str,
    timeout: Duration,
) -> Result<(), String> {
    let found = futures::future::join_all(
        accesses
            .iter()
            .map(|a| namespace_exists(&a.client, ns, timeout)),
    )
    .await;
    // Only a definite "absent" from every cluster is an error.
    if !found.iter().all(|f| *f == Some(false)) {
        return Ok(());
    }
    let mut seen: Vec<String> = futures::future::join_all(
        accesses
            .iter()
            .map(|a| istio_namespaces(&a.client, timeout)),
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    let contexts = accesses
        .iter()
        .map(|a| format!("{} {:?}", a.flag, a.context))
        .collect::<Vec<_>>()
        .join(", ");
    Err(format!(
        "--istio-namespace {ns:?} exists in neither cluster ({contexts}); {}",
        suggestion(ns, &mut seen)
    ))
}

/// "did you mean" over `candidates`, closest first by edit distance.
pub fn suggestion(ns: &str, candidates: &mut Vec<String>) -> String {
    candidates.sort();
    candidates.dedup();
    candidates.sort_by_key(|c| (edit_distance(ns, c), c.clone()));
    match candidates.split_first() {
        None => "neither has a namespace named istio* or running istiod (app=istiod): is Istio installed, and are these the right contexts? (or try `meshtrace lab`)".into(),
        Some((best, [])) => format!("did you mean {best:?}?"),
        Some((best, rest)) => format!(
            "did you mean {best:?}? (also {})",
            rest.iter()
                .take(4)
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Levenshtein distance, by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("istio-system", "istio-system"), 0);
        assert_eq!(edit_distance("istio-sytem", "istio-system"), 1);
        assert_eq!(edit_distance("istio", "istio-system"), 7);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn the_closest_namespace_comes_first() {
        let mut c = vec![
            "istio-gateways".to_string(),
            "istio-system".to_string(),
            "istio-system".to_string(),
        ];
        assert_eq!(
            suggestion("istio-sytem", &mut c),
            "did you mean \"istio-system\"? (also \"istio-gateways\")"
        );
        assert!(suggestion("x", &mut vec![]).contains("is Istio installed"));
    }

    fn status(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn what_an_api_refusal_says_about_the_access() {
        assert!(matches!(
            judge(&status(401, "Unauthorized")),
            Some(Cause::Unauthorized(w)) if w.contains("401")
        ));
        assert!(matches!(
            judge(&status(
                403,
                "selfsubjectreviews.authentication.k8s.io is forbidden: User \"system:anonymous\" cannot create resource"
            )),
            Some(Cause::Anonymous(_))
        ));
        // Authenticated: forbidden for a real user, or a server without the API.
        assert_eq!(judge(&status(403, "User \"alice\" cannot create")), None);
        assert_eq!(
            judge(&status(
                404,
                "the server could not find the requested resource"
            )),
            None
        );
        assert!(matches!(
            judge(&status(500, "etcdserver: request timed out")),
            Some(Cause::Refused(_))
        ));
    }

    #[test]
    fn a_failure_is_one_line_naming_context_server_cause_and_advice() {
        let f = Failure {
            flag: "--remote",
            context: "east".into(),
            server: "https://10.0.0.1:6443".into(),
            cause: Cause::Unreachable("connection refused".into()),
        };
        let line = f.to_string();
        assert_eq!(
            line,
            "--remote context \"east\" (https://10.0.0.1:6443): cannot reach the API server: connection refused; try: is the VPN or the cluster up? `kubectl --context east get --raw /version` shows the same; pass another --kubeconfig, or try `meshtrace lab`"
        );
        assert!(!line.contains('\n'));
        assert_eq!(
            shell_word("arn:aws:eks:eu-west-1:1:cluster/x"),
            "arn:aws:eks:eu-west-1:1:cluster/x"
        );
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
