//! `remote-kubeconfig`: the remote secret's kubeconfig, judged by istiod's
//! rules for untrusted kubeconfigs (`NewUntrustedRestConfig` and
//! `sanitizeKubeConfig` in `pkg/kube/util.go`): not empty, loadable, valid
//! for client-go, and no exec plugin, file path or auth provider other than
//! oidc unless istiod's `PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS`
//! allows it. istiod then builds its client (`createRemoteCluster` in
//! `pkg/kube/multicluster/secretcontroller.go`); a kubeconfig it refuses is
//! never registered, and an edited one that it refuses leaves the cluster
//! built from the earlier kubeconfig running until istiod restarts.

use super::Settings;
use super::remote::parse_off_worker;
use super::remote_secret::{caveats, create_command, remove_key_patch, secret_name_for};
use super::secret_fix::same_server;
use crate::engine::facts::{PendingClient, RemoteSecretFacts};
use crate::engine::{Ctx, Outcome};
use crate::findings::{Cause, Finding, shell_word};
use crate::inspect::kubeconfig::{self, Credential, KubeconfigError, RemoteKubeconfig};
use crate::inspect::{jwt, x509};
use crate::model::{Status, StepId};
use serde_json::json;

crate::causes! { StepId::RemoteKubeconfig;
    EMPTY = "empty", "the remote secret's kubeconfig is empty";
    UNPARSABLE = "unparsable", "the kubeconfig cannot be loaded: not YAML, not a kubeconfig, or bad base64";
    INVALID = "invalid", "the kubeconfig fails client-go's validation (current-context, contexts, clusters, users)";
    EXEC_NOT_ALLOWED = "exec-not-allowed", "the kubeconfig authenticates with an exec plugin, which istiod refuses";
    FILE_NOT_ALLOWED = "file-not-allowed", "the kubeconfig reads a token, certificate or key from a file, which istiod refuses";
    AUTH_PROVIDER_NOT_ALLOWED = "auth-provider-not-allowed", "the kubeconfig uses an auth provider other than oidc, which istiod refuses";
    CA_DATA_NOT_PEM = "ca-data-not-pem", "certificate-authority-data is not a PEM certificate, so istiod cannot build its client";
    NO_CREDENTIAL = "no-credential", "the kubeconfig carries no credential: istiod would call the remote API server anonymously";
    SERVER_IS_PRIMARY = "server-is-primary", "the kubeconfig's server is the --primary context's: istiod reviews the remote's tokens in the primary";
    INSECURE_OPTION_ALLOWED = "insecure-option-allowed", "istiod accepts an exec plugin, file or auth provider by PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS; meshtrace does not run it";
}

/// What `remote-kubeconfig` saw. Never printed (the kubeconfig holds a token).
pub struct KubeconfigFacts {
    /// The Secret and key `remote-secret` chose, with istiod's allowlist.
    pub secret: RemoteSecretFacts,
    /// The kubeconfig judged by istiod's rules.
    pub parsed: Result<RemoteKubeconfig, KubeconfigError>,
    /// The `server` and `tls-server-name` of a refused kubeconfig, read
    /// leniently (kube's own parser), so that the fix keeps them.
    pub previous_server: Option<(String, Option<String>)>,
    /// The `--remote` context's API server URL.
    pub remote_server: String,
    /// The `--primary` context's API server URL (empty: unknown).
    pub primary_server: String,
}

pub async fn run(ctx: &Ctx) -> Outcome {
    let Some(facts) = gather(ctx).await else {
        return Outcome::new().blocked(StepId::RemoteSecret, "no remote secret");
    };
    if let Ok(kc) = &facts.parsed {
        // Held before anything dials with them: a server that echoes them back is redacted.
        for a in kc
            .raw
            .auth_infos
            .iter()
            .filter_map(|a| a.auth_info.as_ref())
        {
            for s in kubeconfig::inline_secrets(a) {
                ctx.secrets.add(&s);
            }
        }
        if let Credential::Token(t) = &kc.credential {
            ctx.secrets.add(t.expose());
        }
    }
    let out = judge(&facts, &Settings::of(ctx));
    if out.status == Some(Status::Pass) {
        if let Ok(kc) = facts.parsed {
            // The client istiod's view is read with is built from here on,
            // while remote-api-tls's handshake (which judges it) is in flight.
            let (for_client, timeout) = (kc.clone(), ctx.opts.timeout);
            let client = PendingClient::spawn(async move {
                super::istiod_view_client(&for_client, timeout).await
            });
            let mut f = ctx.facts();
            f.kubeconfig = Some(kc);
            f.istiod_view = Some(client);
        }
    }
    out
}

pub async fn gather(ctx: &Ctx) -> Option<KubeconfigFacts> {
    let secret = ctx.facts().remote_secret.clone()?;
    let parsed = parse_off_worker(
        secret.kubeconfig.clone(),
        secret.istiod_insecure_options.clone(),
    )
    .await;
    let previous_server = if parsed.is_err() {
        let bytes = secret.kubeconfig.clone();
        tokio::task::spawn_blocking(move || lenient_server(&bytes))
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    Some(KubeconfigFacts {
        secret,
        parsed,
        previous_server,
        remote_server: ctx.clusters.remote_server.clone(),
        primary_server: ctx.clusters.primary_server.clone(),
    })
}

/// The server of a kubeconfig istiod refuses, if kube's parser reads it:
/// the current context's cluster, else the only cluster.
fn lenient_server(bytes: &[u8]) -> Option<(String, Option<String>)> {
    kubeconfig::check_shape(bytes).ok()?;
    let k = kube::config::Kubeconfig::from_yaml(std::str::from_utf8(bytes).ok()?).ok()?;
    let current = k
        .current_context
        .as_ref()
        .and_then(|c| k.contexts.iter().find(|x| x.name == *c))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let named = match current {
        Some(n) => k.clusters.iter().find(|c| c.name == n),
        None if k.clusters.len() == 1 => k.clusters.first(),
        None => None,
    }?;
    let c = named.cluster.as_ref()?;
    Some((
        c.server.clone().filter(|s| !s.is_empty())?,
        c.tls_server_name.clone().filter(|s| !s.is_empty()),
    ))
}

pub fn judge(f: &KubeconfigFacts, s: &Settings) -> Outcome {
    let sec = &f.secret;
    let mut out = Outcome::new();
    out.ev("secret", format!("{}/{}", sec.namespace, sec.name))
        .ev("key", &sec.key);
    if !sec.istiod_insecure_options.is_empty() {
        out.ev(
            "istiod_insecure_kubeconfig_options",
            &sec.istiod_insecure_options,
        );
    }
    let kc = match &f.parsed {
        Ok(k) => k,
        Err(e) => return refused(out, f, s, e),
    };
    out.ev("context", &kc.context)
        .ev("cluster", &kc.cluster_name)
        .ev("user", &kc.user_name)
        .ev("server", &kc.server)
        .ev("tls_server_name", &kc.tls_server_name);
    if kc.raw.contexts.len() > 1 {
        out.ev(
            "contexts",
            kc.raw.contexts.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        )
        .ev("rule", "istiod uses the current-context only (clientcmd.NewDefaultClientConfig with no overrides, pkg/kube/util.go NewUntrustedRestConfig)");
    }
    let matches_remote = same_server(&kc.server, &f.remote_server);
    out.ev("remote_context_server", &f.remote_server)
        .ev("server_matches_remote_context", matches_remote);
    let is_primary = !matches_remote
        && !f.primary_server.is_empty()
        && same_server(&kc.server, &f.primary_server)
        && !same_server(&f.primary_server, &f.remote_server);
    if is_primary {
        return out.failing(
            fix(
                Finding::new(
                    &SERVER_IS_PRIMARY,
                    format!("{}/{} points at the primary's API server {}", sec.namespace, sec.name, kc.server),
                ),
                f,
                s,
                "istiod builds cluster {key}'s client against the primary, so it reviews the remote gateway's token in the primary and syncs the primary's objects as the remote's; the command writes the --remote context's server.",
            ),
            format!(
                "server {} of {}/{} key {:?} is the --primary context's server; expected the --remote context's {}",
                kc.server, sec.namespace, sec.name, sec.key, f.remote_server
            ),
        );
    }
    let ca = kc.ca_data_pem.as_deref().map(x509::parse_pem_chain);
    if let Some(Ok(certs)) = &ca {
        out.ev(
            "certificate_authority",
            certs.iter().map(|c| c.evidence()).collect::<Vec<_>>(),
        );
    }
    out.ev("credential", credential_evidence(&kc.credential));
    let at = format!("{}/{} key {:?}", sec.namespace, sec.name, sec.key);

    let insecure = insecure_auth(kc);
    if !insecure.is_empty() {
        let used = insecure.join(", ");
        return out.warning(
            Finding::new(
                &INSECURE_OPTION_ALLOWED,
                format!("istiod accepts {used} in {}/{}; meshtrace does not run it", sec.namespace, sec.name),
            )
            .note("istiod allows it by PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS. meshtrace runs no plugin and reads no file of istiod's pod, so the steps that connect as istiod (remote-api-tls onwards) are not run; a secret from istioctl create-remote-secret (an inline token) lets meshtrace check them"),
            format!(
                "user {:?} of {at} uses {used}, which istiod allows (PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS={})",
                kc.user_name,
                sec.istiod_insecure_options.join(",")
            ),
        );
    }
    if let Some(Err(e)) = &ca {
        return out.failing(
            fix(
                Finding::new(
                    &CA_DATA_NOT_PEM,
                    format!("certificate-authority-data in {}/{} is not a PEM certificate", sec.namespace, sec.name),
                ),
                f,
                s,
                "istiod's client cannot load it (client-go: unable to load root certificates), so istiod never registers the cluster.",
            ),
            format!("certificate-authority-data of cluster {:?} in {at}: {e}; expected PEM certificates", kc.cluster_name),
        );
    }
    if matches!(kc.credential, Credential::None) {
        return out.failing(
            fix(
                Finding::new(
                    &NO_CREDENTIAL,
                    format!("the kubeconfig in {}/{} carries no token or client certificate", sec.namespace, sec.name),
                ),
                f,
                s,
                "istiod would call the remote API server anonymously, and its syncs and TokenReviews would be refused.",
            ),
            format!(
                "user {:?} of {at} has no token, client-certificate-data or oidc auth-provider",
                kc.user_name
            ),
        );
    }
    out.pass()
}

/// istiod refuses the kubeconfig: the cause from the rule that refused it.
fn refused(out: Outcome, f: &KubeconfigFacts, s: &Settings, e: &KubeconfigError) -> Outcome {
    let sec = &f.secret;
    let at = format!("{}/{}", sec.namespace, sec.name);
    let (cause, summary, why): (&Cause, String, &str) = match e {
        KubeconfigError::Empty => (
            &EMPTY,
            format!("the kubeconfig in {at} key {:?} is empty", sec.key),
            "",
        ),
        KubeconfigError::Load(_) => (
            &UNPARSABLE,
            format!(
                "istiod cannot load the kubeconfig in {at} key {:?}",
                sec.key
            ),
            "",
        ),
        KubeconfigError::Invalid(_) => (
            &INVALID,
            format!("the kubeconfig in {at} key {:?} is not valid", sec.key),
            "",
        ),
        KubeconfigError::NotAllowed(m) => match refusal(m) {
            Refusal::Exec => (
                &EXEC_NOT_ALLOWED,
                format!("the kubeconfig in {at} uses an exec plugin; istiod refuses it"),
                "istiod refuses to run a plugin a Secret names; allowing it (PILOT_INSECURE_MULTICLUSTER_KUBECONFIG_OPTIONS=exec) works only if istiod's image has that plugin.",
            ),
            Refusal::File(what) => (
                &FILE_NOT_ALLOWED,
                format!("the kubeconfig in {at} uses {what}; istiod refuses file paths"),
                "istiod would read that path in its own pod, not in the remote.",
            ),
            Refusal::AuthProvider(p) => (
                &AUTH_PROVIDER_NOT_ALLOWED,
                format!("the kubeconfig in {at} uses auth provider {p}; istiod allows only oidc"),
                "",
            ),
        },
    };
    let d = format!("{at} key {:?}: {e}", sec.key);
    out.failing(fix(Finding::new(cause, summary), f, s, why), d)
}

enum Refusal {
    Exec,
    File(&'static str),
    AuthProvider(String),
}

/// Which of istiod's sanitizer rules a `not allowed` message is (its own
/// phrases, which the parser keeps).
fn refusal(msg: &str) -> Refusal {
    for what in ["tokenFile", "clientKey", "clientCertificate"] {
        if msg.starts_with(&format!("{what} is not allowed")) {
            return Refusal::File(what);
        }
    }
    match msg.strip_prefix("auth provider ") {
        Some(rest) => Refusal::AuthProvider(rest.split(' ').next().unwrap_or("").to_string()),
        None => Refusal::Exec,
    }
}

/// The options istiod's sanitizer would refuse by default that the current
/// user uses: only those reach the remote API server.
fn insecure_auth(kc: &RemoteKubeconfig) -> Vec<String> {
    let Some(a) = kc
        .raw
        .auth_infos
        .iter()
        .find(|u| u.name == kc.user_name)
        .and_then(|u| u.auth_info.as_ref())
    else {
        return vec![];
    };
    let set = |o: &Option<String>| o.as_deref().is_some_and(|v| !v.is_empty());
    let mut out = Vec::new();
    if let Some(p) = a.auth_provider.as_ref().filter(|p| p.name != "oidc") {
        out.push(format!("auth provider {}", p.name));
    }
    for (on, what) in [
        (set(&a.client_key), "clientKey"),
        (set(&a.client_certificate), "clientCertificate"),
        (set(&a.token_file), "tokenFile"),
        (a.exec.is_some(), "exec"),
    ] {
        if on {
            out.push(what.to_string());
        }
    }
    out
}

fn credential_evidence(c: &Credential) -> serde_json::Value {
    match c {
        Credential::Token(t) => match jwt::decode(t.expose()) {
            Ok(j) => json!({"type": "token", "token": j.evidence()}),
            Err(_) => {
                json!({"type": "token", "fingerprint": jwt::fingerprint(t.expose()), "format": "opaque (not a JWT)"})
            }
        },
        Credential::ClientCertData { cert_pem } => {
            let info = x509::parse_pem_chain(cert_pem)
                .ok()
                .and_then(|c| c.into_iter().next())
                .map(|c| c.evidence());
            json!({"type": "client-certificate-data", "certificate": info})
        }
        Credential::OidcAuthProvider => json!({"type": "oidc auth-provider"}),
        Credential::None => json!({"type": "none"}),
    }
}

/// The fix for every cause: the key rewritten by istioctl, which writes a
/// kubeconfig istiod accepts. The Secret is updated in place when the key is
/// its only one (istiod then swaps clusters without a gap); otherwise the key
/// moves to istioctl's own Secret, and the old Secret loses it.
fn fix(finding: Finding, f: &KubeconfigFacts, s: &Settings, why: &str) -> Finding {
    let sec = &f.secret;
    let kp = s.kubectl_primary();
    let (ns, key) = (sec.namespace.as_str(), sec.key.as_str());
    let previous = match &f.parsed {
        Ok(kc) => Some((kc.server.clone(), kc.tls_server_name.clone())),
        Err(_) => f.previous_server.clone(),
    };
    // The address the secret used, when it is not the --remote context's:
    // istiod may reach the remote only there.
    let keep = previous.filter(|(srv, _)| {
        !same_server(srv, &f.remote_server)
            && (f.primary_server.is_empty() || !same_server(srv, &f.primary_server))
    });
    let server = keep.as_ref().map(|(s, _)| s.as_str());
    let tls = keep.as_ref().and_then(|(_, t)| t.as_deref());
    let only_key = sec.keys.iter().all(|k| k == key);
    let mut note = if only_key || sec.name == secret_name_for(key) {
        format!(
            "This rewrites key {key:?} of {ns}/{} with the remote's CA and an inline token of istio-reader-service-account; istiod reloads it without a restart.",
            sec.name
        )
    } else {
        format!(
            "{ns}/{} holds other keys too, so key {key:?} moves to {ns}/{} (the remote's CA, an inline reader token); the annotation makes istiod read it.",
            sec.name,
            secret_name_for(key)
        )
    };
    let mut commands = Vec::new();
    if only_key || sec.name == secret_name_for(key) {
        commands.extend(create_command(s, key, server, tls, Some(&sec.name)));
    } else if let Some(create) = create_command(s, key, server, tls, None) {
        commands = vec![
            create,
            format!(
                "{kp} -n {ns} patch secret {} --type=json -p {}",
                sec.name,
                shell_word(&remove_key_patch(key))
            ),
            format!(
                "{kp} -n {ns} annotate secret {} --overwrite meshtrace/resync={}",
                secret_name_for(key),
                s.now
            ),
        ];
    }
    if !why.is_empty() {
        note.push(' ');
        note.push_str(&why.replace("{key}", &format!("{key:?}")));
    }
    if let Some(srv) = server {
        note.push_str(&format!(
            " --server keeps the secret's address {srv} (the --remote context uses {}).",
            f.remote_server
        ));
    }
    note.push_str(
        " A running istiod keeps the cluster from an earlier valid kubeconfig until it restarts.",
    );
    let extra = caveats(server.unwrap_or(&f.remote_server), key);
    note.push_str(extra.trim_start_matches('.'));
    finding.commands(commands).note(note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::pki::Ca;
    use crate::lab::tokens::{SigningKeys, TokenSpec};

    const REMOTE: &str = "https://10.0.0.2:6443";
    const PRIMARY: &str = "https://10.0.0.1:6443";

    fn ca_pem() -> String {
        static CA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        CA.get_or_init(|| Ca::root("remote-apiserver-ca", "test", 30).cert_pem)
            .clone()
    }

    /// A real reader token, as the remote's API server signs it.
    fn token() -> String {
        static T: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        T.get_or_init(|| {
            SigningKeys::generate("https://remote.invalid").mint(&TokenSpec {
                namespace: "istio-system".into(),
                service_account: "istio-reader-service-account".into(),
                service_account_uid: "7b0f5c1e-2f5d-4a43-9a57-0c3b9b0f1e11".into(),
                audiences: vec!["https://remote.invalid".into()],
                issued_at: 1_790_000_000,
                expires_at: 1_900_000_000,
                pod: None,
            })
        })
        .clone()
    }

    fn good_kc(server: &str) -> String {
        crate::lab::world::kubeconfig("remote", server, &ca_pem(), &token())
    }

    fn with_user(user: &str) -> String {
        good_kc(REMOTE).replace(&format!("    token: {}\n", token()), user)
    }

    /// Facts as gather builds them.
    fn facts_with(kc: &str, name: &str, keys: &[&str], allowed: &[&str]) -> KubeconfigFacts {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        let parsed = kubeconfig::parse_remote_kubeconfig_allowing(kc.as_bytes(), &allowed);
        let previous_server = parsed
            .is_err()
            .then(|| lenient_server(kc.as_bytes()))
            .flatten();
        KubeconfigFacts {
            secret: RemoteSecretFacts {
                namespace: "istio-system".into(),
                name: name.into(),
                key: "remote".into(),
                kubeconfig: kc.as_bytes().to_vec(),
                keys: keys.iter().map(|k| k.to_string()).collect(),
                istiod_insecure_options: allowed,
            },
            parsed,
            previous_server,
            remote_server: REMOTE.into(),
            primary_server: PRIMARY.into(),
        }
    }

    fn facts(kc: &str) -> KubeconfigFacts {
        facts_with(kc, "istio-remote-secret-remote", &["remote"], &[])
    }

    const RECREATE: &str = "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system | kubectl --context ctx-primary apply -f -";

    struct Row {
        name: &'static str,
        facts: KubeconfigFacts,
        status: Status,
        code: Option<&'static str>,
        commands: Vec<&'static str>,
    }

    fn rows() -> Vec<Row> {
        let fail = |name, facts, code| Row {
            name,
            facts,
            status: Status::Fail,
            code: Some(code),
            commands: vec![RECREATE],
        };
        let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n      args: [eks, get-token, --cluster-name, remote]\n";
        vec![
            Row {
                name: "what istioctl writes",
                facts: facts(&good_kc(REMOTE)),
                status: Status::Pass,
                code: None,
                commands: vec![],
            },
            fail("empty", facts(""), "remote-kubeconfig/empty"),
            fail(
                "not YAML",
                facts("this: is: not: yaml: ["),
                "remote-kubeconfig/unparsable",
            ),
            fail(
                "base64 twice",
                facts(&base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    good_kc(REMOTE),
                )),
                "remote-kubeconfig/unparsable",
            ),
            fail(
                "no current-context",
                facts(&good_kc(REMOTE).replace("current-context: remote\n", "")),
                "remote-kubeconfig/invalid",
            ),
            fail(
                "a context names a missing cluster",
                facts(&good_kc(REMOTE).replace("    cluster: remote\n", "    cluster: gone\n")),
                "remote-kubeconfig/invalid",
            ),
            fail(
                "exec plugin",
                facts(&with_user(exec)),
                "remote-kubeconfig/exec-not-allowed",
            ),
            fail(
                "token file",
                facts(&with_user(
                    "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n",
                )),
                "remote-kubeconfig/file-not-allowed",
            ),
            fail(
                "client certificate file",
                facts(&with_user(&format!(
                    "    client-certificate: /etc/certs/client.crt\n    client-key-data: {}\n",
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "k")
                ))),
                "remote-kubeconfig/file-not-allowed",
            ),
            fail(
                "gcp auth provider",
                facts(&with_user(
                    "    auth-provider:\n      name: gcp\n      config: {}\n",
                )),
                "remote-kubeconfig/auth-provider-not-allowed",
            ),
            fail(
                "certificate-authority-data is not PEM",
                facts(&good_kc(REMOTE).replace(
                    &base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca_pem()),
                    &base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        "not a certificate",
                    ),
                )),
                "remote-kubeconfig/ca-data-not-pem",
            ),
            fail(
                "no credential",
                facts(&with_user("    {}\n")),
                "remote-kubeconfig/no-credential",
            ),
            Row {
                name: "istiod allows exec",
                facts: facts_with(
                    &with_user(exec),
                    "istio-remote-secret-remote",
                    &["remote"],
                    &["exec"],
                ),
                status: Status::Warn,
                code: Some("remote-kubeconfig/insecure-option-allowed"),
                commands: vec![],
            },
            Row {
                name: "istiod allows exec for another user only",
                facts: facts_with(
                    &good_kc(REMOTE).replace(
                        "users:\n",
                        &format!("users:\n- name: other\n  user:\n{exec}"),
                    ),
                    "istio-remote-secret-remote",
                    &["remote"],
                    &["exec"],
                ),
                status: Status::Pass,
                code: None,
                commands: vec![],
            },
            Row {
                name: "a Secret of another name is rewritten in place",
                facts: facts_with(&with_user(exec), "remotes", &["remote"], &[]),
                status: Status::Fail,
                code: Some("remote-kubeconfig/exec-not-allowed"),
                commands: vec![
                    "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system | sed 's/^  name: istio-remote-secret-remote$/  name: remotes/' | kubectl --context ctx-primary apply -f -",
                ],
            },
            Row {
                name: "a Secret with other keys loses only this one",
                facts: facts_with(&with_user(exec), "remotes", &["other", "remote"], &[]),
                status: Status::Fail,
                code: Some("remote-kubeconfig/exec-not-allowed"),
                commands: vec![
                    RECREATE,
                    r#"kubectl --context ctx-primary -n istio-system patch secret remotes --type=json -p '[{"op":"remove","path":"/data/remote"}]'"#,
                    "kubectl --context ctx-primary -n istio-system annotate secret istio-remote-secret-remote --overwrite meshtrace/resync=1800000000",
                ],
            },
            Row {
                name: "the server is the primary's (normalised: trailing slash, case)",
                facts: facts(&good_kc("HTTPS://10.0.0.1:6443/")),
                status: Status::Fail,
                code: Some("remote-kubeconfig/server-is-primary"),
                commands: vec![
                    "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system | kubectl --context ctx-primary apply -f -",
                ],
            },
            Row {
                name: "another address than the --remote context's: passes, said in evidence",
                facts: facts(&good_kc("https://api.internal:6443")),
                status: Status::Pass,
                code: None,
                commands: vec![],
            },
            Row {
                name: "the server the secret used is kept",
                facts: facts(
                    &good_kc("https://api.internal:6443")
                        .replace(&format!("    token: {}\n", token()), exec),
                ),
                status: Status::Fail,
                code: Some("remote-kubeconfig/exec-not-allowed"),
                commands: vec![
                    "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system --server=https://api.internal:6443 | kubectl --context ctx-primary apply -f -",
                ],
            },
        ]
    }

    #[test]
    fn judge_table() {
        let s = Settings::for_tests();
        for row in rows() {
            let out = judge(&row.facts, &s);
            assert_eq!(
                out.status,
                Some(row.status),
                "{}: {:?}",
                row.name,
                out.diagnosis
            );
            let f = out.finding.as_ref();
            assert_eq!(f.map(|f| f.code.as_str()), row.code, "{}", row.name);
            let got: Vec<&str> = f
                .map(|f| f.commands.iter().map(String::as_str).collect())
                .unwrap_or_default();
            assert_eq!(got, row.commands, "{}", row.name);
            let printed = format!("{:?} {:?} {:?}", out.diagnosis, out.finding, out.evidence);
            assert!(
                !printed.contains(&token()),
                "{}: the token is printed",
                row.name
            );
            if let Some(f) = f {
                assert!(
                    f.summary.chars().count() <= 110,
                    "{}: {}",
                    row.name,
                    f.summary
                );
                assert!(f.note.is_some(), "{}", row.name);
                let d = out.diagnosis.as_deref().unwrap_or_default();
                assert!(d.chars().count() <= 300, "{}: {d}", row.name);
            }
        }
    }

    #[test]
    fn every_cause_has_a_row() {
        let coded: Vec<&str> = rows().iter().filter_map(|r| r.code).collect();
        for c in CAUSES {
            assert!(
                coded.contains(&c.code().as_str()),
                "no row for {}",
                c.code()
            );
        }
    }

    #[test]
    fn a_refused_kubeconfig_still_says_its_server() {
        let exec = "    exec:\n      apiVersion: v1\n      command: aws\n";
        assert_eq!(
            lenient_server(
                good_kc("https://a:6443")
                    .replace(&format!("    token: {}\n", token()), exec)
                    .as_bytes()
            ),
            Some(("https://a:6443".to_string(), None))
        );
        assert_eq!(lenient_server(b"this: is: not: yaml: ["), None);
        assert_eq!(lenient_server(b""), None);
    }

    #[test]
    fn refusals_are_istiods_phrases() {
        let m = |r: Refusal| match r {
            Refusal::Exec => "exec".to_string(),
            Refusal::File(w) => w.to_string(),
            Refusal::AuthProvider(p) => format!("provider {p}"),
        };
        assert_eq!(m(refusal("exec is not allowed (user \"u\")")), "exec");
        assert_eq!(
            m(refusal("tokenFile is not allowed (user \"u\")")),
            "tokenFile"
        );
        assert_eq!(m(refusal("clientKey is not allowed")), "clientKey");
        assert_eq!(
            m(refusal("clientCertificate is not allowed")),
            "clientCertificate"
        );
        assert_eq!(
            m(refusal("auth provider gcp is not allowed (user \"u\")")),
            "provider gcp"
        );
    }
}
