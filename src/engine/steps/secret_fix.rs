//! The fix that most causes of istiod's identity in the remote share: write
//! the remote secret again with `istioctl create-remote-secret`, run against
//! the remote context, with the names the trace found. Pure: the facts come
//! from [`SecretRef::of`], the commands from [`rewrite`].
//!
//! What istioctl does (istioctl/pkg/multicluster/remote_secret.go): it reads
//! (or creates) the service account `--service-account` (default
//! `istio-reader-service-account`) in `--namespace` of the `--context`
//! cluster, takes the token and `ca.crt` of a Secret of type
//! `kubernetes.io/service-account-token` that references it (creating
//! `<sa>-istio-remote-secret-token` when there is none), and prints Secret
//! `istio-remote-secret-<name>` with key `<name>` and the `--context`'s
//! server (or `--server`). `--namespace` is passed always: without it
//! istioctl takes the namespace of the kubeconfig's *current* context when
//! that context sets one, whatever `--context` says.

use super::Settings;
use crate::engine::Ctx;
use crate::findings::shell_word;
use crate::inspect::jwt;
use crate::inspect::kubeconfig::Credential;

/// istioctl's default reader account (`constants.DefaultServiceAccountName`).
pub const DEFAULT_READER_SA: &str = "istio-reader-service-account";

/// The remote secret istiod uses, as the earlier steps found it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretRef {
    /// The cluster ID: the secret's data key, istioctl's `--name`.
    pub cluster_id: String,
    /// The Istio namespace (the secret's in the primary, the reader's in the remote).
    pub namespace: String,
    /// The Secret that holds the key now.
    pub secret_name: String,
    /// The kubeconfig's `server` and `tls-server-name`.
    pub server: String,
    pub tls_server_name: Option<String>,
    /// The `--remote` context's server: what istioctl writes without `--server`.
    pub remote_context_server: String,
    /// The service account (namespace, name) the secret's token names.
    pub service_account: Option<(String, String)>,
}

impl SecretRef {
    /// From the facts of remote-secret and remote-kubeconfig (read, no I/O).
    pub fn of(ctx: &Ctx) -> SecretRef {
        let f = ctx.facts();
        let mut r = SecretRef {
            namespace: ctx.opts.istio_namespace.clone(),
            remote_context_server: ctx.clusters.remote_server.trim_end_matches('/').to_string(),
            ..Default::default()
        };
        if let Some(sec) = &f.remote_secret {
            r.cluster_id = sec.key.clone();
            r.namespace = sec.namespace.clone();
            r.secret_name = sec.name.clone();
        } else if let Some((id, _)) = &f.cluster_id {
            r.cluster_id = id.clone();
        }
        if let Some(kc) = &f.kubeconfig {
            r.server = kc.server.clone();
            r.tls_server_name = kc.tls_server_name.clone();
            if let Credential::Token(t) = &kc.credential {
                r.service_account = jwt::decode(t.expose()).ok().and_then(|j| j.service_account);
            }
        }
        r
    }

    /// Does the secret name another server than the `--remote` context?
    pub fn server_differs(&self) -> bool {
        !self.server.is_empty() && !same_server(&self.server, &self.remote_context_server)
    }

    /// The name istioctl gives the secret it prints.
    pub fn istioctl_secret_name(&self) -> String {
        format!("istio-remote-secret-{}", self.cluster_id)
    }
}

/// A server URL normalised for comparison: scheme and host lowercase, the
/// scheme's default port made explicit, no trailing slash. `None` when it
/// is not a URL with a host.
pub fn normalized_server(url: &str) -> Option<String> {
    let u: http::Uri = url.trim().parse().ok()?;
    let scheme = u.scheme_str().unwrap_or("https").to_ascii_lowercase();
    let host = u.host()?.to_ascii_lowercase();
    let port = u
        .port_u16()
        .unwrap_or(if scheme == "http" { 80 } else { 443 });
    let path = u.path().trim_end_matches('/');
    Some(format!("{scheme}://{host}:{port}{path}"))
}

/// Do two server URLs name the same API server address (see
/// [`normalized_server`]; otherwise compared as text, less a trailing slash)?
pub fn same_server(a: &str, b: &str) -> bool {
    match (normalized_server(a), normalized_server(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a
            .trim_end_matches('/')
            .eq_ignore_ascii_case(b.trim_end_matches('/')),
    }
}

/// Which server the rewritten secret names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The one the secret names now (it was reached; the fix is elsewhere).
    Keep,
    /// The `--remote` context's (the secret's own is the broken part).
    RemoteContext,
}

/// The commands that write the secret again, and what the note must add.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rewrite {
    pub commands: Vec<String>,
    /// Sentences for the note: what the commands do, and their limits.
    pub note: Vec<String>,
}

/// `istioctl create-remote-secret ... | kubectl apply`, preceded by the
/// deletion of the current secret when istioctl would write another name
/// (two Secrets with one key: istiod keeps the first, `cluster has already
/// been registered`, pkg/kube/multicluster/secretcontroller.go). The old one
/// goes first, so istiod's add of the new one is not ignored.
pub fn rewrite(
    r: &SecretRef,
    s: &Settings,
    server: Server,
    tls_server_name: Option<&str>,
) -> Rewrite {
    let mut out = Rewrite::default();
    let id = if r.cluster_id.is_empty() {
        out.note.push("meshtrace does not know the cluster ID: pass the gateway's ISTIO_META_CLUSTER_ID as --name.".into());
        "remote".to_string()
    } else {
        r.cluster_id.clone()
    };
    if !is_dns1123_label(&id) {
        out.note.push(format!(
            "istioctl accepts only a DNS-1123 label as --name, and {id:?} is not one: write the secret by hand with key {id:?}, or rename the cluster (the gateway's ISTIO_META_CLUSTER_ID too)."
        ));
    }
    if !r.secret_name.is_empty() && r.secret_name != r.istioctl_secret_name() {
        out.commands.push(format!(
            "{} -n {} delete secret {}",
            s.kubectl_primary(),
            shell_word(&r.namespace),
            shell_word(&r.secret_name)
        ));
        out.note.push(format!(
            "The first command deletes Secret {}/{}: istioctl writes {}, and istiod ignores a second Secret with the same key.",
            r.namespace,
            r.secret_name,
            r.istioctl_secret_name()
        ));
    }
    let mut cmd = format!(
        "istioctl create-remote-secret --context={} --name={} --namespace={}",
        s.remote_word.clone(),
        shell_word(&id),
        shell_word(&r.namespace)
    );
    if let Some((ns, name)) = &r.service_account {
        if name != DEFAULT_READER_SA {
            cmd.push_str(&format!(" --service-account={}", shell_word(name)));
        }
        if *ns != r.namespace {
            out.note.push(format!(
                "The token's account is {ns}/{name}, outside {}: istioctl looks for the account in --namespace, which is also where it puts the secret, so create the account in {} or write the secret by hand.",
                r.namespace, r.namespace
            ));
        }
    }
    match server {
        Server::Keep if r.server_differs() => {
            cmd.push_str(&format!(" --server={}", shell_word(&r.server)));
        }
        Server::Keep => {}
        Server::RemoteContext => {
            out.note.push(format!(
                "istioctl writes the --remote context's server {}: it must be reachable from istiod's pods in the primary, or add --server=https://HOST:PORT with an address that is.",
                r.remote_context_server
            ));
        }
    }
    let tls_name = match (tls_server_name, server) {
        (Some(n), _) => Some(n.to_string()),
        (None, Server::Keep) => r.tls_server_name.clone(),
        (None, Server::RemoteContext) => None,
    };
    if let Some(n) = tls_name {
        cmd.push_str(&format!(" --tls-server-name={}", shell_word(&n)));
    }
    cmd.push_str(&format!(" | {} apply -f -", s.kubectl_primary()));
    out.commands.push(cmd);
    out
}

/// A finding's note is built from sentences some of which may be empty:
/// one space between words, none at the ends.
pub fn tidy(mut out: crate::engine::Outcome) -> crate::engine::Outcome {
    if let Some(n) = out.finding.as_mut().and_then(|f| f.note.as_mut()) {
        *n = n.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    out
}

/// Kubernetes' IsDNS1123Label, which istioctl applies to `--name`.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn servers_compare_normalised() {
        for (a, b, same) in [
            ("https://10.0.0.2:6443", "https://10.0.0.2:6443/", true),
            ("https://API.example:443", "https://api.example", true),
            ("HTTPS://api.example/", "https://api.example:443", true),
            ("https://[::1]:6443", "https://[::1]:6443/", true),
            ("https://10.0.0.2:6443", "https://10.0.0.2:6444", false),
            ("http://api.example", "https://api.example", false),
            ("https://api.example/k8s/", "https://api.example/k8s", true),
            ("not a url", "NOT A URL/", true),
        ] {
            assert_eq!(same_server(a, b), same, "{a} vs {b}");
        }
    }

    /// The lab's remote secret, as the earlier steps find it.
    pub(crate) fn lab_secret() -> SecretRef {
        SecretRef {
            cluster_id: "remote".into(),
            namespace: "istio-system".into(),
            secret_name: "istio-remote-secret-remote".into(),
            server: "https://127.0.0.1:6443".into(),
            tls_server_name: None,
            remote_context_server: "https://127.0.0.1:6443".into(),
            service_account: Some(("istio-system".into(), DEFAULT_READER_SA.into())),
        }
    }

    #[test]
    fn rewrites_name_every_value_and_keep_what_works() {
        let s = Settings::for_tests();
        type Case = (
            &'static str,
            SecretRef,
            Server,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "plain",
                lab_secret(),
                Server::Keep,
                vec![
                    "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system | kubectl --context ctx-primary apply -f -",
                ],
                vec![],
            ),
            (
                "kept server, custom account, other secret name",
                SecretRef {
                    secret_name: "remote-kubeconfig".into(),
                    server: "https://10.0.0.5:6443".into(),
                    tls_server_name: Some("kubernetes.default.svc".into()),
                    service_account: Some(("istio-system".into(), "reader".into())),
                    ..lab_secret()
                },
                Server::Keep,
                vec![
                    "kubectl --context ctx-primary -n istio-system delete secret remote-kubeconfig",
                    "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system --service-account=reader --server=https://10.0.0.5:6443 --tls-server-name=kubernetes.default.svc | kubectl --context ctx-primary apply -f -",
                ],
                vec!["deletes Secret istio-system/remote-kubeconfig"],
            ),
            (
                "the context's server",
                SecretRef {
                    server: "https://127.0.0.1:1".into(),
                    tls_server_name: Some("old".into()),
                    ..lab_secret()
                },
                Server::RemoteContext,
                vec![
                    "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system | kubectl --context ctx-primary apply -f -",
                ],
                vec!["reachable from istiod's pods"],
            ),
            (
                "an ID istioctl refuses",
                SecretRef {
                    cluster_id: "Remote_1".into(),
                    secret_name: "istio-remote-secret-Remote_1".into(),
                    ..lab_secret()
                },
                Server::Keep,
                vec![
                    "istioctl create-remote-secret --context=ctx-remote --name=Remote_1 --namespace=istio-system | kubectl --context ctx-primary apply -f -",
                ],
                vec!["DNS-1123"],
            ),
        ];
        for (name, r, server, want, note) in cases {
            let got = rewrite(&r, &s, server, None);
            assert_eq!(got.commands, want, "{name}");
            let text = got.note.join(" ");
            for n in note {
                assert!(text.contains(n), "{name}: {text}");
            }
        }
    }

    #[test]
    fn every_cause_of_these_steps_has_its_anchor_and_title() {
        let doc = include_str!("../../../docs/checks.md");
        let lists = [
            super::super::remote_api_tls::CAUSES,
            super::super::remote_identity::CAUSES,
            super::super::remote_rbac::CAUSES,
            super::super::token_review::CAUSES,
        ];
        for c in lists.iter().flat_map(|l| l.iter()) {
            let code = c.code();
            assert!(
                doc.contains(&format!("<a id=\"{code}\"></a>")),
                "no anchor for {code}"
            );
            assert!(
                doc.contains(&format!("#### `{code}` — ")),
                "no heading for {code}"
            );
            assert!(
                !c.title.is_empty() && c.title.len() <= 120,
                "{code}: {}",
                c.title
            );
        }
    }

    #[test]
    fn dns1123_labels() {
        for ok in ["remote", "cluster-2", "a"] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "Remote", "a_b", "-a", "a-", &"x".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }
}
