//! `istiod-tls`: the TLS handshake istio-agent makes with istiod on 15012,
//! trusting only the remote's `istio-ca-root-cert` and verifying the server
//! name it derives from CA_ADDR / ISTIOD_SAN. Go's verifier (the agent's)
//! checks the leaf's validity period, then the name, then the chain: the
//! judge reports the first of those that fails.

use super::Settings;
use super::dial::Roots;
use super::istiod::{
    EnvValue, IstiodDeployments, no_deployment_note, pick, read_istiod_deployments,
    restart_command, set_env_command, with_item, with_side,
};
use crate::engine::{Ctx, Outcome};
use crate::findings::Finding;
use crate::inspect::x509::{self, CertInfo, rfc3339};
use crate::model::{Status, StepId};
use crate::probe::ca_client;
use crate::probe::tls::{TlsProbe, TlsReport, platform_roots_pem, probe};
use std::time::Duration;

crate::causes! { StepId::IstiodTls;
    UNREACHABLE = "unreachable", "istiod's address does not answer on TCP from here";
    NAME_MISMATCH = "name-mismatch", "istiod's certificate is not valid for the name the gateway verifies";
    UNKNOWN_AUTHORITY = "unknown-authority", "istiod's certificate does not chain to the remote's istio-ca-root-cert";
    EXPIRED = "expired", "istiod's serving certificate has expired";
    NOT_YET_VALID = "not-yet-valid", "istiod's serving certificate is not valid yet";
    CERTIFICATE_REJECTED = "certificate-rejected", "istiod's certificate is refused for another reason";
    HANDSHAKE_FAILED = "handshake-failed", "the TLS handshake with istiod does not complete";
}

/// What gather saw.
#[derive(Debug, Clone)]
pub struct TlsFacts {
    pub addr: String,
    /// Where the address came from (EndpointSlice, --istiod-addr, ...).
    pub source: String,
    /// The name istio-agent verifies.
    pub server_name: String,
    pub report: TlsReport,
    /// istiod's Deployments in the primary, read only when the handshake failed.
    pub istiod: IstiodDeployments,
    /// The roots verified with, in words.
    pub roots: String,
    /// Which setting gave the gateway's address.
    pub dial_from: String,
    /// `CA_ROOT_CA=<file>`: the agent's roots, which meshtrace cannot read.
    pub roots_file: Option<String>,
    /// What istiod-exposure found, when it ran: which part of the primary's
    /// exposure is missing, or that it looked right.
    pub exposure: Option<(Status, String)>,
}

pub async fn gather(ctx: &Ctx) -> Result<TlsFacts, Outcome> {
    let (addr, root, gw) = {
        let f = ctx.facts();
        (
            f.istiod_addr.clone(),
            f.remote_root_pem.clone(),
            f.gateway.clone(),
        )
    };
    let Some((addr, source)) = addr else {
        return Err(Outcome::new().blocked(StepId::RemoteIstiodEndpoint, "no istiod address"));
    };
    let dial = super::dial::of(gw.as_ref());
    let (roots_pem, roots) = match &dial.roots {
        Roots::System => match ctx
            .opts
            .platform_roots_pem
            .clone()
            .map(Ok)
            .unwrap_or_else(platform_roots_pem)
        {
            Ok(pem) => (pem, dial.roots.describe()),
            Err(e) => {
                return Err(Outcome::new().skipped(format!(
                    "the gateway verifies istiod with the platform's roots (CA_ROOT_CA=SYSTEM), and {e}"
                )));
            }
        },
        // The file lives in the gateway's container: meshtrace verifies with
        // istio-ca-root-cert and says so.
        Roots::IstioCaRootCert | Roots::File(_) => match root {
            Some(r) => (r, Roots::IstioCaRootCert.describe()),
            None => {
                return Err(Outcome::new().blocked(
                    StepId::RootOfTrust,
                    "no root in the remote's istio-ca-root-cert to verify istiod with",
                ));
            }
        },
    };
    let server_name = dial.server_name.clone();
    let target = TlsProbe {
        addr: addr.clone(),
        server_name: server_name.clone(),
        roots_pem: roots_pem.clone(),
        timeout: ctx.opts.timeout,
    };
    let handshake = probe(&target);
    let deployments = read_istiod_deployments(
        &ctx.clusters.primary,
        &ctx.opts.istio_namespace,
        ctx.opts.timeout,
    );
    // The CSR's channel is dialled beside the probe, on the same path: the
    // probe's handshake is the check, the channel's is the CSR's.
    if !ctx.opts.no_csr {
        ca_client::warm(&addr, &server_name, &roots_pem, ctx.opts.timeout);
    }
    let (report, istiod) = with_side(handshake, deployments, |r| !r.ok(), Duration::ZERO).await;
    // What of istiod's exposure is missing explains a path that does not
    // answer; only then is istiod-exposure waited for.
    let exposure = if report.ok() {
        ctx.facts().istiod_tls = Some((server_name.clone(), roots_pem, roots.clone()));
        None
    } else {
        ctx.wait_steps(&[StepId::IstiodExposure]).await;
        ctx.facts().exposure.clone()
    };
    Ok(TlsFacts {
        addr,
        source,
        server_name,
        report,
        istiod: istiod.unwrap_or_else(|| Err("not read: the handshake passed".into())),
        roots,
        dial_from: dial.from.clone(),
        roots_file: match &dial.roots {
            Roots::File(p) => Some(p.clone()),
            _ => None,
        },
        exposure,
    })
}

pub async fn run(ctx: &Ctx) -> Outcome {
    match gather(ctx).await {
        Ok(facts) => judge(&facts, &Settings::of(ctx)),
        Err(blocked) => blocked,
    }
}

/// Is the certificate valid for `name` as Go's VerifyHostname decides: an IP
/// against IP SANs, a DNS name against DNS SANs (case-insensitive, a
/// wildcard standing for exactly one leftmost label); never the CN.
pub fn valid_for(c: &CertInfo, name: &str) -> bool {
    let bare = name.trim_matches(['[', ']']);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return c
            .ip_sans
            .iter()
            .any(|i| i.parse::<std::net::IpAddr>().ok() == Some(ip));
    }
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    c.dns_sans.iter().any(|d| {
        let d = d.trim_end_matches('.').to_ascii_lowercase();
        match d.strip_prefix("*.") {
            Some(rest) => n
                .split_once('.')
                .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
            None => d == n,
        }
    })
}

pub fn judge(f: &TlsFacts, s: &Settings) -> Outcome {
    let r = &f.report;
    let mut out = Outcome::new();
    out.ev("address", &f.addr)
        .ev("address_source", &f.source)
        .ev("server_name", &f.server_name)
        .ev(
            "server_name_from",
            format!(
                "ISTIOD_SAN, else the host of the address the gateway dials ({})",
                f.dial_from
            ),
        )
        .ev("roots", &f.roots)
        .ev("handshake_ms", r.handshake_ms)
        .ev("protocol", &r.protocol)
        .ev("cipher", &r.cipher)
        .ev("alpn", &r.alpn);
    if let Some(e) = &r.tcp_error {
        return out.failing(
            Finding::new(
                &UNREACHABLE,
                format!("cannot reach istiod at {} from here", f.addr),
            )
            .note(unreachable_note(f)),
            format!("TCP to istiod at {} ({}): {e}", f.addr, f.source),
        );
    }
    let leaf = r
        .peer_chain_der
        .first()
        .and_then(|d| x509::parse_der(d).ok());
    if let Some(l) = &leaf {
        out.ev("istiod_certificate", l.evidence());
    }
    if let Some(e) = &r.verify_error {
        return certificate_refused(out, f, s, leaf.as_ref(), e);
    }
    if let Some(e) = &r.tls_error {
        return out.failing(
            Finding::new(&HANDSHAKE_FAILED, format!("the TLS handshake with istiod at {} fails", f.addr)).note(
                match &f.exposure {
                    Some((st, what)) if *st != Status::Pass => format!("15012 must reach istiod's own TLS (the east-west gateway passes it through, PASSTHROUGH), not a proxy that terminates TLS or speaks plain TCP; {what}"),
                    _ => "15012 must reach istiod's own TLS (the east-west gateway passes it through, PASSTHROUGH), not a proxy that terminates TLS or speaks plain TCP".to_string(),
                },
            ),
            format!("TLS with {} ({}): {e}", f.addr, f.source),
        );
    }
    out.pass()
}

/// What to check when 15012 does not answer: the part of the primary's
/// exposure istiod-exposure found missing, or, when it found it whole, the
/// path between (load balancer, firewall) or istiod itself.
fn unreachable_note(f: &TlsFacts) -> String {
    let from_here = "If the gateway's pods reach it but this machine does not, run meshtrace from inside the remote's network";
    match &f.exposure {
        Some((st, what)) if *st != Status::Pass => format!(
            "the gateway dials the same address, and the primary's exposure of istiod is broken: {what} (see the istiod-exposure step and its fix). {from_here}"
        ),
        Some((_, what)) => format!(
            "the gateway dials the same address. The primary's exposure looks whole ({what}), so what drops the connection is on the path (the load balancer's listeners or health checks, a firewall, a security group) or istiod itself is not listening. {from_here}"
        ),
        None => format!(
            "the gateway dials the same address: check that the primary's east-west gateway exposes 15012 with TLS passthrough (Istio's expose-istiod Gateway) and that the remote's istiod EndpointSlice holds its address. {from_here}"
        ),
    }
}

fn certificate_refused(
    out: Outcome,
    f: &TlsFacts,
    s: &Settings,
    leaf: Option<&CertInfo>,
    error: &str,
) -> Outcome {
    let ns = &s.istio_namespace;
    let name = &f.server_name;
    let diag = |what: String| {
        format!(
            "verifying istiod at {} as {name:?} with {}: {what}",
            f.addr, f.roots
        )
    };
    let restart = |why: &str| match pick(&f.istiod, None, ns) {
        Ok(d) => (vec![restart_command(s, d)], why.to_string()),
        Err(e) => (
            vec![],
            format!(
                "{why}; {}",
                no_deployment_note(s, &e, "restart it: `rollout restart deployment/<name>`")
            ),
        ),
    };
    let lower = error.to_ascii_lowercase();
    if let Some(l) = leaf.filter(|l| s.now < l.not_before) {
        return out.failing(
            Finding::new(&NOT_YET_VALID, format!("istiod's certificate is valid only from {}", rfc3339(l.not_before))).note(
                "a clock is off: this machine's, the gateway node's or istiod's node's (check NTP); istiod backdates the certificates it issues by 2 minutes only",
            ),
            diag(format!("notBefore {}, now {}", rfc3339(l.not_before), rfc3339(s.now))),
        );
    }
    if let Some(l) = leaf.filter(|l| s.now > l.not_after) {
        let (cmds, note) = restart(
            "istiod renews its own serving certificate; an expired one means it did not, or that it serves one from a file (istiod-tls, cert-manager). A restart issues a fresh one; check the clocks too",
        );
        return out.failing(
            Finding::new(
                &EXPIRED,
                format!("istiod's certificate expired at {}", rfc3339(l.not_after)),
            )
            .commands(cmds)
            .note(note),
            diag(format!(
                "notAfter {}, now {}",
                rfc3339(l.not_after),
                rfc3339(s.now)
            )),
        );
    }
    if let Some(l) = leaf.filter(|l| !valid_for(l, name)) {
        let mut names = l.dns_sans.clone();
        names.extend(l.ip_sans.iter().cloned());
        let (cmds, note) = name_fix(f, s, name);
        return out.failing(
            Finding::new(
                &NAME_MISMATCH,
                format!("istiod's certificate is not valid for {name}"),
            )
            .commands(cmds)
            .note(note),
            diag(format!(
                "the certificate is valid for [{}], not {name:?} (the gateway's {})",
                names.join(", "),
                "ISTIOD_SAN, else CA_ADDR's host"
            )),
        );
    }
    if let (true, Some(file)) = (lower.contains("unknown authority"), &f.roots_file) {
        return out.warning(
            Finding::new(&UNKNOWN_AUTHORITY, "istiod's certificate does not chain to istio-ca-root-cert, and the gateway trusts a file meshtrace cannot read")
                .note(format!("the gateway sets CA_ROOT_CA={file}: the agent verifies istiod with that file in its container, not with istio-ca-root-cert. Check that the file holds the root of the certificate istiod serves")),
            diag(error.to_string()),
        );
    }
    if lower.contains("unknown authority") {
        let (cmds, note) = restart(
            "root-of-trust passed, so the remote trusts the primary CA's root: istiod serves a certificate from another CA, one it issued before its CA changed (a restart reissues it from the current CA) or one from a file (istiod-tls, cert-manager). If it persists after the restart, the address leads to a TLS server other than istiod",
        );
        return out.failing(
            Finding::new(
                &UNKNOWN_AUTHORITY,
                "istiod's certificate is not signed by the remote's istio-ca-root-cert",
            )
            .commands(cmds)
            .note(note),
            diag(error.to_string()),
        );
    }
    if lower.contains("expired") {
        let (cmds, note) = restart(
            "a certificate of the chain istiod serves has expired: a restart reissues istiod's from the current CA; an expired intermediate means the primary's cacerts need renewing",
        );
        return out.failing(
            Finding::new(&EXPIRED, "a certificate istiod presents has expired")
                .commands(cmds)
                .note(note),
            diag(error.to_string()),
        );
    }
    if lower.contains("not valid yet") {
        return out.failing(
            Finding::new(
                &NOT_YET_VALID,
                "a certificate istiod presents is not valid yet",
            )
            .note("a clock is off: this machine's or istiod's node's (check NTP)"),
            diag(error.to_string()),
        );
    }
    out.failing(
        Finding::new(&CERTIFICATE_REJECTED, "istiod's certificate is refused")
            .note("istio-agent refuses it the same way; the diagnosis says why"),
        diag(error.to_string()),
    )
}

/// istiod adds ISTIOD_CUSTOM_HOST's names (and IPs) to the serving
/// certificate it issues itself when it starts (getDNSNames in
/// pilot/pkg/bootstrap/server.go); `set env` rolls it out with the new value.
fn name_fix(f: &TlsFacts, s: &Settings, name: &str) -> (Vec<String>, String) {
    let ns = &s.istio_namespace;
    let other = "Or set the gateway's ISTIOD_SAN to a name the certificate carries";
    let d = match pick(&f.istiod, None, ns) {
        Ok(d) => d,
        Err(e) => {
            return (
                vec![],
                format!(
                    "{}. {other}",
                    no_deployment_note(
                        s,
                        &e,
                        &format!(
                            "add {name} to its ISTIOD_CUSTOM_HOST (comma-separated) with `set env`"
                        )
                    )
                ),
            );
        }
    };
    match d.env_value("ISTIOD_CUSTOM_HOST") {
        Some(EnvValue::FromRef) => (
            vec![],
            format!(
                "istiod's ISTIOD_CUSTOM_HOST (Deployment {}) comes from a reference meshtrace does not read: add {name} to it (comma-separated). {other}",
                d.name
            ),
        ),
        Some(EnvValue::Value(v)) if v.split(',').any(|h| h == name) => (
            vec![],
            format!(
                "istiod's ISTIOD_CUSTOM_HOST ({v}) already has {name}, yet its certificate lacks it: istiod serves a certificate from a file (/var/run/secrets/istiod/tls: istiod-tls, cert-manager), where the name must be added, or its pods predate the setting. {other}"
            ),
        ),
        current => {
            let now = match current {
                Some(EnvValue::Value(v)) => v.as_str(),
                _ => "",
            };
            (
                vec![set_env_command(
                    s,
                    d,
                    "ISTIOD_CUSTOM_HOST",
                    &with_item(now, name),
                )],
                format!(
                    "istiod adds ISTIOD_CUSTOM_HOST's names to the certificate it issues itself at start; set env keeps the names it has and rolls istiod out. If istiod serves a certificate from a file (istiod-tls, cert-manager), add {name} there instead. {other}"
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::istiod::tests::one_istiod;
    use super::*;
    use crate::lab::pki::Ca;

    fn der(pem: &str) -> Vec<u8> {
        x509::parse_pem_chain(pem).unwrap()[0].der.clone()
    }

    fn report(leaf_pem: &str, verify_error: Option<&str>) -> TlsReport {
        TlsReport {
            peer_chain_der: vec![der(leaf_pem)],
            verify_error: verify_error.map(str::to_string),
            protocol: verify_error.is_none().then(|| "TLSv1.3".to_string()),
            alpn: Some("h2".into()),
            handshake_ms: 3.0,
            ..Default::default()
        }
    }

    fn facts(report: TlsReport, istiod: IstiodDeployments) -> TlsFacts {
        TlsFacts {
            addr: "203.0.113.10:15012".into(),
            source: "EndpointSlice".into(),
            server_name: "istiod.istio-system.svc".into(),
            report,
            istiod,
            roots: "the remote's istio-ca-root-cert".into(),
            dial_from: "the gateway's env CA_ADDR".into(),
            roots_file: None,
            exposure: None,
        }
    }

    struct Row {
        name: &'static str,
        facts: TlsFacts,
        status: Status,
        code: Option<&'static str>,
        commands: &'static [&'static str],
    }

    #[test]
    fn judge_table() {
        let mut s = Settings::for_tests();
        // The lab's CA issues certificates around the real clock.
        s.now = super::super::now_unix();
        let ca = Ca::root("root", "cluster.local", 3650);
        let istiod_names = [
            "istiod.istio-system.svc",
            "istiod-remote.istio-system.svc",
            "istio-pilot.istio-system.svc",
        ];
        let good = ca.server_cert("istiod", &istiod_names, &[], 1).cert_pem;
        let other_ns = ca
            .server_cert(
                "istiod",
                &["istiod.other-system.svc", "istiod-remote.other-system.svc"],
                &[],
                1,
            )
            .cert_pem;
        let foreign = Ca::root("old root", "cluster.local", 3650)
            .server_cert("istiod", &istiod_names, &[], 1)
            .cert_pem;
        let unknown = "certificate signed by unknown authority (the chain does not lead to any of the given roots)";
        let rows = vec![
            Row { name: "healthy", facts: facts(report(&good, None), Err("not read".into())), status: Status::Pass, code: None, commands: &[] },
            Row {
                name: "unreachable",
                facts: facts(
                    TlsReport { tcp_error: Some("203.0.113.10:15012: connection refused".into()), ..Default::default() },
                    Err("not read".into()),
                ),
                status: Status::Fail,
                code: Some("istiod-tls/unreachable"),
                commands: &[],
            },
            Row {
                name: "certificate for another namespace's names",
                facts: facts(
                    report(&other_ns, Some("certificate is not valid for istiod.istio-system.svc: it is valid for istiod.other-system.svc, istiod-remote.other-system.svc")),
                    one_istiod(&[("PILOT_CERT_PROVIDER", "istiod")]),
                ),
                status: Status::Fail,
                code: Some("istiod-tls/name-mismatch"),
                commands: &["kubectl --context ctx-primary -n istio-system set env deployment/istiod ISTIOD_CUSTOM_HOST=istiod.istio-system.svc"],
            },
            Row {
                name: "name mismatch keeps istiod's custom hosts",
                facts: facts(
                    report(&other_ns, Some("certificate is not valid for istiod.istio-system.svc")),
                    one_istiod(&[("ISTIOD_CUSTOM_HOST", "istiod.example.com")]),
                ),
                status: Status::Fail,
                code: Some("istiod-tls/name-mismatch"),
                commands: &["set env deployment/istiod ISTIOD_CUSTOM_HOST=istiod.example.com,istiod.istio-system.svc"],
            },
            Row {
                name: "name mismatch, Deployment unknown: a note",
                facts: facts(
                    report(&other_ns, Some("certificate is not valid for istiod.istio-system.svc")),
                    Err("cannot list Deployments in istio-system of the primary: 403 Forbidden".into()),
                ),
                status: Status::Fail,
                code: Some("istiod-tls/name-mismatch"),
                commands: &[],
            },
            Row {
                name: "signed by another CA",
                facts: facts(report(&foreign, Some(unknown)), one_istiod(&[])),
                status: Status::Fail,
                code: Some("istiod-tls/unknown-authority"),
                commands: &["kubectl --context ctx-primary -n istio-system rollout restart deployment/istiod"],
            },
            Row {
                name: "handshake failure",
                facts: facts(
                    TlsReport {
                        tls_error: Some("TLS handshake timed out after 5s (the server accepted TCP but did not answer the ClientHello)".into()),
                        ..Default::default()
                    },
                    Err("not read".into()),
                ),
                status: Status::Fail,
                code: Some("istiod-tls/handshake-failed"),
                commands: &[],
            },
            Row {
                name: "rejected for another reason",
                facts: facts(report(&good, Some("certificate is not valid for TLS server authentication (extended key usage)")), one_istiod(&[])),
                status: Status::Fail,
                code: Some("istiod-tls/certificate-rejected"),
                commands: &[],
            },
        ];
        for row in rows {
            let out = judge(&row.facts, &s);
            super::super::check_row(row.name, &out, row.status, row.code, row.commands);
        }
    }

    #[test]
    fn validity_is_judged_at_settings_now() {
        let ca = Ca::root("root", "cluster.local", 3650);
        let cert = ca
            .server_cert("istiod", &["istiod.istio-system.svc"], &[], 1)
            .cert_pem;
        let info = &x509::parse_pem_chain(&cert).unwrap()[0];
        let mut s = Settings::for_tests();
        for (now, code) in [
            (info.not_after + 60, "istiod-tls/expired"),
            (info.not_before - 60, "istiod-tls/not-yet-valid"),
        ] {
            s.now = now;
            let out = judge(
                &facts(
                    report(&cert, Some("certificate has expired")),
                    one_istiod(&[]),
                ),
                &s,
            );
            assert_eq!(out.finding.unwrap().code, code);
        }
    }

    #[test]
    fn names_match_as_go_matches_them() {
        let ca = Ca::root("root", "cluster.local", 3650);
        let ip: std::net::IpAddr = "10.0.0.5".parse().unwrap();
        let cert = ca
            .server_cert(
                "istiod",
                &["*.istio-system.svc", "Istiod.Example.com"],
                &[ip],
                1,
            )
            .cert_pem;
        let c = &x509::parse_pem_chain(&cert).unwrap()[0];
        assert!(valid_for(c, "istiod.istio-system.svc"));
        assert!(!valid_for(c, "istio-system.svc"));
        assert!(!valid_for(c, "a.b.istio-system.svc"));
        assert!(valid_for(c, "istiod.example.com."));
        assert!(valid_for(c, "10.0.0.5"));
        assert!(!valid_for(c, "10.0.0.6"));
    }
}
