//! remote-api-tls: can istiod reach the API server the remote secret names,
//! and does its certificate verify with the secret's
//! certificate-authority-data? A DNS + TCP + TLS probe trusting only those
//! roots; then the client that acts as istiod for the next steps.
//!
//! istiod's side: pkg/kube/kubeconfig and pkg/kube/multicluster build a
//! client-go client from the kubeconfig (its CA data, tls-server-name,
//! insecure-skip-tls-verify); when it cannot connect, istiod logs
//! `remote cluster <id> failed to sync after 30s` (pkg/kube/multicluster/cluster.go).

use super::secret_fix::{self, SecretRef, Server};
use super::{Settings, quote_list};
use crate::engine::{Ctx, Outcome};
use crate::findings::Finding;
use crate::inspect::kubeconfig::{self, RemoteKubeconfig};
use crate::inspect::x509;
use crate::model::StepId;
use crate::probe::kube_client;
use crate::probe::tls::{TlsProbe, TlsReport, probe};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

crate::causes! { StepId::RemoteApiTls;
    SERVER_NOT_A_URL = "server-not-a-url", "the kubeconfig's server is not a URL with a host";
    LOOPBACK_SERVER = "loopback-server", "the server is a loopback address, which inside istiod's pod is istiod itself";
    UNREACHABLE = "unreachable", "the remote API server named in the remote secret cannot be reached";
    CA_MISMATCH = "ca-mismatch", "the server's certificate does not verify with the secret's certificate-authority-data";
    SERVER_NAME_MISMATCH = "server-name-mismatch", "the server's certificate is not valid for the name istiod checks";
    CERTIFICATE_EXPIRED = "certificate-expired", "the remote API server's certificate is expired or not yet valid";
    TLS_HANDSHAKE_FAILED = "tls-handshake-failed", "the TLS handshake with the remote API server failed";
    CLIENT_BUILD_FAILED = "client-build-failed", "no client can be built from the remote secret's kubeconfig";
    INSECURE_SKIP_TLS_VERIFY = "insecure-skip-tls-verify", "the remote secret sets insecure-skip-tls-verify: istiod does not verify the remote API server";
    NO_CA_DATA = "no-ca-data", "no certificate-authority-data: istiod trusts the remote API server through its system roots";
}

/// What gather saw.
#[derive(Debug, Clone)]
pub struct ApiTlsFacts {
    pub secret: SecretRef,
    /// The host of the kubeconfig's server (`None`: not a URL with a host).
    pub host: Option<String>,
    pub addr: String,
    pub server_name: String,
    pub ca_data_pem: Option<String>,
    pub insecure_skip_tls_verify: bool,
    /// When the secret's or the `--remote` context's server is loopback: the
    /// primary's `app=istiod` pods (not on the host network, on it), or why
    /// they could not be listed.
    pub istiod_pods: Option<Result<(usize, usize), String>>,
    /// The probe (with a host only).
    pub probe: Option<TlsReport>,
    /// Building the client that acts as istiod.
    pub client: Result<(), String>,
}

pub async fn run(ctx: &Ctx) -> Outcome {
    let kc = ctx.facts().kubeconfig.clone();
    let Some(kc) = kc else {
        return Outcome::new().blocked(StepId::RemoteKubeconfig, "no usable kubeconfig");
    };
    let facts = gather(ctx, &kc).await;
    judge(&facts, &Settings::of(ctx))
}

async fn gather(ctx: &Ctx, kc: &RemoteKubeconfig) -> ApiTlsFacts {
    let host = kubeconfig::server_host(&kc.server);
    let mut facts = ApiTlsFacts {
        secret: SecretRef::of(ctx),
        host: host.clone(),
        addr: String::new(),
        server_name: String::new(),
        ca_data_pem: kc.ca_data_pem.clone(),
        insecure_skip_tls_verify: kc.insecure_skip_tls_verify,
        istiod_pods: None,
        probe: None,
        client: Err("not built".into()),
    };
    let Some(host) = host else {
        return facts;
    };
    let port = server_port(&kc.server);
    facts.addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    facts.server_name = kc.tls_server_name.clone().unwrap_or_else(|| host.clone());
    // Whether loopback reaches the remote depends on where istiod runs: asked
    // when the secret's server or the --remote context's (a fix's) is loopback.
    let context_loopback = kubeconfig::server_host(&ctx.clusters.remote_server)
        .is_some_and(|h| kubeconfig::is_loopback_host(&h));
    if kubeconfig::is_loopback_host(&host) || context_loopback {
        let pods: Api<Pod> =
            Api::namespaced(ctx.clusters.primary.clone(), &ctx.opts.istio_namespace);
        facts.istiod_pods = Some(
            pods.list(&ListParams::default().labels("app=istiod"))
                .await
                .map(|l| {
                    let host_net = l
                        .items
                        .iter()
                        .filter(|p| p.spec.as_ref().and_then(|s| s.host_network) == Some(true))
                        .count();
                    (l.items.len() - host_net, host_net)
                })
                .map_err(|e| super::kube_err(&e)),
        );
    }
    let tls = TlsProbe {
        addr: facts.addr.clone(),
        server_name: facts.server_name.clone(),
        roots_pem: kc.ca_data_pem.clone().unwrap_or_default(),
        timeout: ctx.opts.timeout,
    };
    // The client (kubeconfig, TLS config) is being built while the
    // handshake is in flight: remote-kubeconfig started it.
    let pending = ctx.facts().istiod_view.clone();
    let client = async {
        match pending {
            Some(p) => p.get().await.map(|_| ()),
            None => Err("remote-kubeconfig built no client".to_string()),
        }
    };
    let (report, client) = tokio::join!(probe(&tls), client);
    facts.probe = Some(report);
    facts.client = client;
    facts
}

fn server_port(server: &str) -> u16 {
    server
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| {
            u.port_u16().or(match u.scheme_str() {
                Some("http") => Some(80),
                _ => Some(443),
            })
        })
        .unwrap_or(443)
}

/// A client that acts as istiod does in the remote: the secret's credentials.
pub(crate) async fn istiod_view_client(
    kc: &RemoteKubeconfig,
    timeout: std::time::Duration,
) -> Result<kube::Client, String> {
    let opts = kube::config::KubeConfigOptions {
        context: Some(kc.context.clone()),
        ..Default::default()
    };
    let cfg = kube::Config::from_custom_kubeconfig(kc.raw.clone(), &opts)
        .await
        .map_err(|e| e.to_string())?;
    kube_client::build(cfg, kube_client::Limits::new(timeout)).map_err(|e| e.to_string())
}

/// How a certificate failed to verify, from the probe's own words
/// (probe/tls.rs `describe_verify_error`).
#[derive(Debug, PartialEq)]
enum VerifyProblem {
    Name,
    Validity,
    Trust,
}

fn classify(verify_error: &str) -> VerifyProblem {
    if verify_error.starts_with("certificate is not valid for ") {
        VerifyProblem::Name
    } else if verify_error.starts_with("certificate has expired")
        || verify_error.starts_with("certificate is not valid yet")
    {
        VerifyProblem::Validity
    } else {
        VerifyProblem::Trust
    }
}

pub fn judge(f: &ApiTlsFacts, s: &Settings) -> Outcome {
    super::secret_fix::tidy(verdict(f, s))
}

fn verdict(f: &ApiTlsFacts, s: &Settings) -> Outcome {
    let mut out = Outcome::new();
    let server = &f.secret.server;
    let rewrite =
        |server: Server, name: Option<&str>| secret_fix::rewrite(&f.secret, s, server, name);
    let with = |finding: Finding, fix: secret_fix::Rewrite, note: String| {
        let note = std::iter::once(note)
            .chain(fix.note)
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        finding.commands(fix.commands).note(note)
    };
    let context_is_loopback = kubeconfig::server_host(&f.secret.remote_context_server)
        .is_some_and(|h| kubeconfig::is_loopback_host(&h));
    let Some(host) = &f.host else {
        return out.failing(
            with(
                Finding::new(
                    &SERVER_NOT_A_URL,
                    format!("server {server:?} is not a URL with a host"),
                ),
                rewrite(Server::RemoteContext, None),
                "The command writes the secret again with the --remote context's server.".into(),
            ),
            format!("server {server:?} in the kubeconfig; expected https://HOST[:PORT]"),
        );
    };
    out.ev("server", server).ev("server_name", &f.server_name);

    // Loopback works only when istiod runs on a host itself, not in a pod:
    // a pod on the host network shares its node's loopback too.
    let istiod_in_pods = matches!(&f.istiod_pods, Some(Ok((n, _))) if *n > 0);
    let loopback = kubeconfig::is_loopback_host(host);
    match f.istiod_pods.as_ref().filter(|_| loopback) {
        Some(Ok((in_cluster, _))) if *in_cluster > 0 => {
            let finding = Finding::new(
                &LOOPBACK_SERVER,
                format!(
                    "the remote secret's server {server} is loopback, inside istiod's pod that is istiod"
                ),
            );
            let diagnosis = format!(
                "server {server:?} is a loopback address and {in_cluster} istiod pod(s) run in the primary off the host network; expected an address of the remote API server they reach"
            );
            if context_is_loopback {
                return out.failing(
                    finding.note(format!(
                        "The --remote context's server is {} too, so meshtrace knows no address istiod's pods can reach. Find the remote API server's address on the network the primary's pods share (for kind: docker inspect -f '{{{{.NetworkSettings.Networks.kind.IPAddress}}}}' <remote cluster>-control-plane), then: istioctl create-remote-secret --context={} --name={} --namespace={} --server=https://ADDRESS:6443 | {} apply -f -",
                        f.secret.remote_context_server,
                        s.remote_word.clone(),
                        crate::findings::shell_word(&f.secret.cluster_id),
                        crate::findings::shell_word(&f.secret.namespace),
                        s.kubectl_primary()
                    )),
                    diagnosis,
                );
            }
            return out.failing(
                with(finding, rewrite(Server::RemoteContext, None), String::new()),
                diagnosis,
            );
        }
        Some(Ok((_, host_network))) if *host_network > 0 => {
            out.ev("note", "loopback server: the primary's istiod pod(s) use the host network, so loopback is their node's and may reach the remote");
        }
        Some(Ok(_)) => {
            out.ev("note", "loopback server: no istiod pod runs in the primary, so istiod runs on a host where loopback may reach the remote");
        }
        Some(Err(e)) => {
            out.ev("note", format!("loopback server: the primary's istiod pods could not be listed ({e}), so whether loopback reaches the remote is unknown"));
        }
        None => {}
    }
    if f.insecure_skip_tls_verify {
        out.ev("insecure_skip_tls_verify", true);
    }
    let Some(report) = &f.probe else {
        return out.failing(
            Finding::new(
                &TLS_HANDSHAKE_FAILED,
                "the remote API server was not probed",
            )
            .note("a meshtrace bug: report it"),
            format!("no probe of {host}"),
        );
    };
    out.ev(
        "resolved",
        report
            .resolved
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
    )
    .ev("handshake_ms", report.handshake_ms)
    .ev("protocol", &report.protocol)
    .ev("alpn", &report.alpn);
    if let Some(e) = &report.tcp_error {
        let finding = Finding::new(
            &UNREACHABLE,
            format!("cannot reach {} (the remote secret's server)", f.addr),
        );
        let diagnosis = format!(
            "cannot reach the remote API server {} named in the remote secret: {e}; expected a TCP connection",
            f.addr
        );
        // The context's server, unless it is loopback where istiod runs in pods.
        if f.secret.server_differs() && !(context_is_loopback && istiod_in_pods) {
            return out.failing(
                with(
                    finding,
                    rewrite(Server::RemoteContext, None),
                    format!("The secret names {server}, the --remote context {}: the command writes the secret again with the context's server.", f.secret.remote_context_server),
                ),
                diagnosis,
            );
        }
        return out.failing(
            finding.note(format!(
                "meshtrace probes from the machine it runs on. Check that {server} is the remote API server's address and that the primary's network reaches it (firewall, load balancer, private endpoint); istiod logs `remote cluster {} failed to sync`.",
                f.secret.cluster_id
            )),
            diagnosis,
        );
    }
    let presented: Vec<_> = report
        .peer_chain_der
        .iter()
        .filter_map(|d| x509::parse_der(d).ok())
        .collect();
    out.ev(
        "presented_certificate",
        presented.first().map(|c| c.evidence()),
    );
    // Without CA data istiod verifies with its system roots, which meshtrace
    // does not load: a verification failure then says nothing.
    let unverifiable = f.ca_data_pem.is_none() && report.verify_error.is_some();
    if unverifiable {
        out.ev("note", "no certificate-authority-data: istiod verifies with its system roots, which meshtrace does not load");
    } else if let (false, Some(e)) = (f.insecure_skip_tls_verify, &report.verify_error) {
        let leaf = presented.first();
        let issuer = leaf.map(|c| c.issuer.clone()).unwrap_or_default();
        match classify(e) {
            VerifyProblem::Name => {
                // Any name the certificate is valid for verifies it.
                let name = leaf.and_then(|c| c.dns_sans.first().or(c.ip_sans.first()).cloned());
                let finding = Finding::new(
                    &SERVER_NAME_MISMATCH,
                    format!(
                        "the API server's certificate is not valid for {:?}",
                        f.server_name
                    ),
                );
                let diagnosis =
                    format!("{e}; expected a certificate valid for {:?}", f.server_name);
                let Some(name) = name else {
                    return out.failing(
                        finding.note("The certificate names no DNS name or IP: reissue the remote API server's certificate with its address as a SAN."),
                        diagnosis,
                    );
                };
                return out.failing(
                    with(
                        finding,
                        rewrite(Server::Keep, Some(&name)),
                        format!("The command keeps the server and sets tls-server-name {name}, a name the certificate holds."),
                    ),
                    diagnosis,
                );
            }
            VerifyProblem::Validity => {
                let until = leaf.map(|c| x509::rfc3339(c.not_after)).unwrap_or_default();
                return out.failing(
                    Finding::new(&CERTIFICATE_EXPIRED, format!("the remote API server's certificate is not valid now (until {until})"))
                        .note("Renew the remote API server's serving certificate (kubeadm: kubeadm certs renew apiserver, then restart kube-apiserver), or fix the clock of the machine that disagrees; the remote secret is not the problem."),
                    format!("{e}; expected a certificate valid now"),
                );
            }
            VerifyProblem::Trust => {
                let ca_subjects: Vec<String> =
                    x509::parse_pem_chain(f.ca_data_pem.as_deref().unwrap_or_default())
                        .map(|c| c.into_iter().map(|c| c.subject).collect())
                        .unwrap_or_default();
                return out.failing(
                    with(
                        Finding::new(&CA_MISMATCH, "the API server's certificate does not verify with the secret's certificate-authority-data"),
                        rewrite(Server::Keep, None),
                        format!("istioctl writes the CA of the reader account's token Secret (ca.crt, the cluster's CA); if the server's certificate comes from another CA ({issuer}), put that CA into certificate-authority-data instead. istiod logs `x509: certificate signed by unknown authority`."),
                    ),
                    format!(
                        "the server's certificate does not verify with the secret's certificate-authority-data: {e}. Issuer {issuer:?}; CA data {}",
                        quote_list(&ca_subjects)
                    ),
                );
            }
        }
    }
    if let Some(e) = &report.tls_error {
        return out.failing(
            Finding::new(&TLS_HANDSHAKE_FAILED, format!("the TLS handshake with {} failed", f.addr))
                .note(format!("Check that {server} is the remote API server's HTTPS address, not a plain-HTTP port or a proxy that ends TLS elsewhere.")),
            format!("TLS handshake with the remote API server {} failed: {e}", f.addr),
        );
    }
    if let Err(e) = &f.client {
        return out.failing(
            with(
                Finding::new(
                    &CLIENT_BUILD_FAILED,
                    "no client can be built from the remote secret's kubeconfig",
                ),
                rewrite(Server::Keep, None),
                "istiod cannot build one either; the command writes a kubeconfig istioctl makes."
                    .into(),
            ),
            format!("cannot build a client from the remote secret's kubeconfig: {e}"),
        );
    }
    if unverifiable {
        return out.warning(
            with(
                Finding::new(&NO_CA_DATA, "the remote secret has no certificate-authority-data"),
                rewrite(Server::Keep, None),
                "istioctl writes the cluster's CA into the secret. Until then, if the server's certificate is not publicly trusted, istiod logs `x509: certificate signed by unknown authority`.".into(),
            ),
            "no certificate-authority-data: istiod trusts the remote API server through its system roots, which meshtrace cannot check; expected the remote API server's CA",
        );
    }
    if f.insecure_skip_tls_verify {
        return out.warning(
            with(
                Finding::new(&INSECURE_SKIP_TLS_VERIFY, "the remote secret sets insecure-skip-tls-verify"),
                rewrite(Server::Keep, None),
                "istioctl writes certificate-authority-data instead, so istiod verifies the server again.".into(),
            ),
            "insecure-skip-tls-verify: true, so istiod does not verify the remote API server; expected certificate-authority-data",
        );
    }
    out.pass()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::steps::secret_fix::tests::lab_secret;
    use crate::lab::pki::Ca;
    use crate::model::Status;

    /// The remote API server's CA and its serving certificate, as DER.
    fn server(ca: &Ca) -> Vec<u8> {
        let cert = ca.server_cert(
            "kube-apiserver",
            &["kubernetes", "kubernetes.default.svc"],
            &["127.0.0.1".parse().unwrap()],
            365,
        );
        x509::parse_pem_chain(&cert.cert_pem).unwrap()[0]
            .der
            .clone()
    }

    fn report(der: Vec<u8>) -> TlsReport {
        TlsReport {
            resolved: vec!["127.0.0.1:6443".parse().unwrap()],
            connected_to: Some("127.0.0.1:6443".parse().unwrap()),
            peer_chain_der: vec![der],
            protocol: Some("TLSv1_3".into()),
            alpn: Some("h2".into()),
            handshake_ms: 2.0,
            ..Default::default()
        }
    }

    fn facts(ca: &Ca, probe: TlsReport) -> ApiTlsFacts {
        ApiTlsFacts {
            secret: lab_secret(),
            host: Some("127.0.0.1".into()),
            addr: "127.0.0.1:6443".into(),
            server_name: "127.0.0.1".into(),
            ca_data_pem: Some(ca.cert_pem.clone()),
            insecure_skip_tls_verify: false,
            istiod_pods: Some(Ok((0, 1))),
            probe: Some(probe),
            client: Ok(()),
        }
    }

    const ISTIOCTL: &str =
        "istioctl create-remote-secret --context=ctx-remote --name=remote --namespace=istio-system";

    #[test]
    fn judge_table() {
        let ca = Ca::root("lab-remote-apiserver-ca", "meshtrace lab", 365);
        let der = server(&ca);
        let ok = || facts(&ca, report(der.clone()));
        let elsewhere = |f: ApiTlsFacts| ApiTlsFacts {
            secret: SecretRef {
                server: "https://127.0.0.1:1".into(),
                ..f.secret.clone()
            },
            ..f
        };
        type Row = (
            &'static str,
            ApiTlsFacts,
            Status,
            Option<&'static str>,
            Vec<&'static str>,
        );
        let rows: Vec<Row> = vec![
            ("verified, istiod on the host network", ok(), Status::Pass, None, vec![]),
            (
                "no host",
                ApiTlsFacts { host: None, probe: None, ..ok() },
                Status::Fail,
                Some("remote-api-tls/server-not-a-url"),
                vec![ISTIOCTL],
            ),
            (
                "loopback while istiod runs in a pod (the context is loopback too)",
                ApiTlsFacts { istiod_pods: Some(Ok((1, 0))), ..ok() },
                Status::Fail,
                Some("remote-api-tls/loopback-server"),
                vec![],
            ),
            (
                "refused, the --remote context names another server",
                elsewhere(ApiTlsFacts {
                    probe: Some(TlsReport { tcp_error: Some("127.0.0.1:1: connection refused".into()), peer_chain_der: vec![], protocol: None, ..report(vec![]) }),
                    ..ok()
                }),
                Status::Fail,
                Some("remote-api-tls/unreachable"),
                vec![ISTIOCTL],
            ),
            (
                "refused, the context's server is loopback and istiod runs in pods: no command",
                elsewhere(ApiTlsFacts {
                    host: Some("10.0.0.7".into()),
                    istiod_pods: Some(Ok((1, 0))),
                    probe: Some(TlsReport { tcp_error: Some("TCP connect timed out after 5s".into()), peer_chain_der: vec![], ..report(vec![]) }),
                    ..ok()
                }),
                Status::Fail,
                Some("remote-api-tls/unreachable"),
                vec![],
            ),
            (
                "DNS fails at the context's own server: no command",
                ApiTlsFacts {
                    probe: Some(TlsReport { tcp_error: Some("cannot resolve api.remote.example".into()), peer_chain_der: vec![], ..report(vec![]) }),
                    ..ok()
                },
                Status::Fail,
                Some("remote-api-tls/unreachable"),
                vec![],
            ),
            (
                "another CA in the secret",
                ApiTlsFacts {
                    ca_data_pem: Some(Ca::root("some other CA", "meshtrace lab", 365).cert_pem),
                    probe: Some(TlsReport { verify_error: Some("certificate signed by unknown authority (the chain does not lead to any of the given roots)".into()), ..report(der.clone()) }),
                    ..ok()
                },
                Status::Fail,
                Some("remote-api-tls/ca-mismatch"),
                vec![ISTIOCTL],
            ),
            (
                "a name the certificate lacks",
                ApiTlsFacts {
                    server_name: "10.0.0.9".into(),
                    probe: Some(TlsReport { verify_error: Some("certificate is not valid for 10.0.0.9: it is valid for kubernetes, kubernetes.default.svc, 127.0.0.1".into()), ..report(der.clone()) }),
                    ..ok()
                },
                Status::Fail,
                Some("remote-api-tls/server-name-mismatch"),
                vec!["--tls-server-name=kubernetes |"],
            ),
            (
                "expired certificate",
                ApiTlsFacts {
                    probe: Some(TlsReport { verify_error: Some("certificate has expired: it was valid until 2026-01-01T00:00:00Z, now is 2027-01-15T08:00:00Z".into()), ..report(der.clone()) }),
                    ..ok()
                },
                Status::Fail,
                Some("remote-api-tls/certificate-expired"),
                vec![],
            ),
            (
                "not TLS",
                ApiTlsFacts {
                    probe: Some(TlsReport { tls_error: Some("received corrupt message (the peer does not speak TLS)".into()), peer_chain_der: vec![], protocol: None, ..report(vec![]) }),
                    ..ok()
                },
                Status::Fail,
                Some("remote-api-tls/tls-handshake-failed"),
                vec![],
            ),
            (
                "no client",
                ApiTlsFacts { client: Err("invalid kubeconfig".into()), ..ok() },
                Status::Fail,
                Some("remote-api-tls/client-build-failed"),
                vec![ISTIOCTL],
            ),
            (
                "insecure-skip-tls-verify (verification ignored, as istiod ignores it)",
                ApiTlsFacts {
                    insecure_skip_tls_verify: true,
                    probe: Some(TlsReport { verify_error: Some("certificate signed by unknown authority".into()), ..report(der.clone()) }),
                    ..ok()
                },
                Status::Warn,
                Some("remote-api-tls/insecure-skip-tls-verify"),
                vec![ISTIOCTL],
            ),
            (
                "no CA data",
                ApiTlsFacts {
                    ca_data_pem: None,
                    probe: Some(TlsReport { verify_error: Some("trust roots contain no certificate".into()), ..report(der.clone()) }),
                    ..ok()
                },
                Status::Warn,
                Some("remote-api-tls/no-ca-data"),
                vec![ISTIOCTL],
            ),
        ];
        let s = Settings::for_tests();
        for (name, f, status, code, commands) in rows {
            let out = judge(&f, &s);
            assert_eq!(out.status, Some(status), "{name}: {:?}", out.diagnosis);
            let finding = out.finding.as_ref();
            assert_eq!(finding.map(|f| f.code.as_str()), code, "{name}");
            let cmds = finding.map(|f| f.commands.join("\n")).unwrap_or_default();
            if commands.is_empty() {
                assert!(cmds.is_empty(), "{name}: {cmds}");
            }
            for c in commands {
                assert!(cmds.contains(c), "{name}: {c:?} not in {cmds}");
            }
            if let Some(fd) = finding {
                assert!(fd.summary.len() <= 100, "{name}: {}", fd.summary);
                let d = out.diagnosis.as_deref().unwrap_or_default();
                assert!(d.len() <= 300, "{name}: {} chars: {d}", d.len());
                assert!(!cmds.contains('<'), "{name}: {cmds}");
            }
        }
    }

    #[test]
    fn the_lab_faults_read_as_they_should() {
        let s = Settings::for_tests();
        let ca = Ca::root("lab-remote-apiserver-ca", "meshtrace lab", 365);
        let f = ApiTlsFacts {
            ca_data_pem: Some(Ca::root("some other CA", "meshtrace lab", 365).cert_pem),
            probe: Some(TlsReport {
                verify_error: Some("certificate signed by unknown authority (the chain does not lead to any of the given roots)".into()),
                ..report(server(&ca))
            }),
            ..facts(&ca, report(vec![]))
        };
        let out = judge(&f, &s);
        let d = out.diagnosis.unwrap();
        assert!(
            d.contains("does not verify")
                && d.contains("CN=some other CA")
                && d.contains("CN=lab-remote-apiserver-ca"),
            "{d}"
        );
        // The loopback case without a reachable address says how to find one.
        let f = ApiTlsFacts {
            istiod_pods: Some(Ok((1, 0))),
            ..facts(&ca, report(server(&ca)))
        };
        let note = judge(&f, &s).finding.unwrap().note.unwrap();
        assert!(
            note.contains("--server=https://ADDRESS:6443") && note.contains("kind"),
            "{note}"
        );
        // Unlistable istiod pods are no reason to fail.
        let f = ApiTlsFacts {
            istiod_pods: Some(Err("403 Forbidden".into())),
            ..facts(&ca, report(server(&ca)))
        };
        assert_eq!(judge(&f, &s).status, Some(Status::Pass));
    }

    #[test]
    fn verify_errors_are_classified_by_the_probes_words() {
        assert_eq!(
            classify("certificate is not valid for 10.0.0.9"),
            VerifyProblem::Name
        );
        assert_eq!(classify("certificate has expired"), VerifyProblem::Validity);
        assert_eq!(
            classify("certificate is not valid yet (clock skew?)"),
            VerifyProblem::Validity
        );
        assert_eq!(
            classify("certificate signed by unknown authority"),
            VerifyProblem::Trust
        );
    }
}
